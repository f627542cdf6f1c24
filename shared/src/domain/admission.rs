//! What a request needs of its key to be admitted, before its limits are counted: one list,
//! which [`next_step`](super::decision::next_step) checks in Rust and the store's counting
//! write states as its condition, so a rule changed here changes both.

use super::api_key::KeyHash;
use super::customers::SubscriptionStatus;
use super::decision::{Denial, KeyState};
use super::key_records::KeyStatus;
use super::time::UnixTime;

/// The one key status that admits; any other is its own denial.
pub const ADMITTED_KEY_STATUS: KeyStatus = KeyStatus::Active;
/// Subscription statuses that admit outright (no status at all, a customer not billed through
/// Stripe, admits too).
pub const OPEN_SUBSCRIPTIONS: &[SubscriptionStatus] = &[SubscriptionStatus::Active, SubscriptionStatus::Trialing];
/// Subscription statuses that admit only before the access's grace instant.
pub const GRACE_SUBSCRIPTIONS: &[SubscriptionStatus] = &[SubscriptionStatus::PastDue];

/// One thing admission asks of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The secret presented is the key's current one, or its previous one before that one's
    /// grace ends.
    Secret,
    /// The key's status is [`ADMITTED_KEY_STATUS`].
    Status,
    /// The key has no expiry, or it is still ahead.
    NotExpired,
    /// The customer's access allows ([`CustomerAccess::allows`](super::customers::CustomerAccess::allows)):
    /// no status, one of [`OPEN_SUBSCRIPTIONS`], or one of [`GRACE_SUBSCRIPTIONS`] before its
    /// grace instant.
    Subscription,
    /// The key holds every scope the route needs.
    Scopes,
}

/// Everything admission asks, in the contract's order of checks: the first one unmet is the
/// denial.
pub const ADMISSION: [Requirement; 5] =
    [Requirement::Secret, Requirement::Status, Requirement::NotExpired, Requirement::Subscription, Requirement::Scopes];

impl Requirement {
    /// Why `state` fails this for a request presenting `presented` to a route that needs the
    /// scopes `required`; `None` when it holds.
    pub fn denial(self, state: &KeyState, presented: &KeyHash, required: &[String], now: UnixTime) -> Option<Denial> {
        match self {
            Self::Secret => {
                let current = state.current_hash == *presented;
                let in_grace = state.previous_hash.is_some_and(|(h, until)| h == *presented && now < until);
                (!current && !in_grace).then_some(Denial::InvalidKey)
            }
            Self::Status => (state.status != ADMITTED_KEY_STATUS).then_some(match state.status {
                KeyStatus::Revoked => Denial::KeyRevoked,
                _ => Denial::KeyDisabled,
            }),
            Self::NotExpired => state.expires_at.is_some_and(|e| now >= e).then_some(Denial::KeyExpired),
            Self::Subscription => (!state.access.allows(now)).then_some(Denial::SubscriptionInactive),
            Self::Scopes => {
                required.iter().any(|scope| !state.scopes.contains(scope)).then_some(Denial::InsufficientScope)
            }
        }
    }
}

/// The first requirement `state` fails, as its denial (see [`Requirement::denial`]).
pub fn refusal(state: &KeyState, presented: &KeyHash, required: &[String], now: UnixTime) -> Option<Denial> {
    ADMISSION.iter().find_map(|r| r.denial(state, presented, required, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_status_is_both_open_and_in_grace() {
        // The store's condition admits an open status outright: one in both would skip its grace.
        for status in SubscriptionStatus::ALL {
            let open = OPEN_SUBSCRIPTIONS.contains(&status);
            let grace = GRACE_SUBSCRIPTIONS.contains(&status);
            assert!(!(open && grace), "{status:?}");
        }
        assert_ne!(ADMITTED_KEY_STATUS, KeyStatus::Revoked);
        assert_ne!(ADMITTED_KEY_STATUS, KeyStatus::Disabled);
    }
}
