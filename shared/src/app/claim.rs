//! The Checkout claim as a use case: a paying customer's first key, exactly once per Stripe
//! Checkout session. The session id (from Stripe's success URL) is the only credential, so
//! attempts are bounded before Stripe is asked, only what Stripe confirms counts
//! ([`super::checkout::claimable`]), the customer's billing is written by the service the
//! webhook uses ([`super::billing::Billing`]), and the key is issued [`once`](super::idempotent::once).

use super::billing::{Applied, Billing, BillingError, plan_for_price};
use super::checkout::{self, ClaimRefusal, Claimable};
use super::idempotent::{self, Job, Once, Scope};
use crate::domain::api_key::{ApiKey, KeyEnv, KeyId, RandomnessError};
use crate::domain::customers::CustomerId;
use crate::domain::key_records::KeyRecord;
use crate::domain::time::UnixTime;
use crate::store::{
    Attempt, AttemptStore, BillingStore, CustomerStore, IdempotencyStore, KeyFilter, KeyStore, NewKey, PlanStore,
    StoreError,
};
use crate::stripe::api::{CheckoutSessions, StripeError};

/// Attempts per Checkout session id, and per source address, in a fixed window. Past either,
/// the claim is refused before Stripe is asked anything.
pub const CLAIM_ATTEMPTS_PER_SESSION: u64 = 10;
pub const CLAIM_ATTEMPTS_PER_SOURCE: u64 = 30;
pub const CLAIM_ATTEMPT_WINDOW_S: u64 = 600;
/// How long a claim holds its session: longer than everything it does (Stripe's answer, the
/// billing fan-out's budget, the key), so no second claimant can take over while the first is
/// still issuing a key.
const CLAIM_LEASE_S: u64 = 120;

/// Why a claim issued no key. Nothing is written for any of them but the attempt counts.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("too many claim attempts; retry in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    #[error("Stripe has no such Checkout session")]
    UnknownSession,
    /// Stripe could not be asked; its own words are logged, never returned to the public.
    #[error("Stripe could not confirm the session")]
    StripeUnavailable(#[source] StripeError),
    #[error(transparent)]
    Refused(ClaimRefusal),
    #[error("this deployment claims {} sessions only", if *.0 == KeyEnv::Live { "live-mode" } else { "test-mode" })]
    WrongMode(KeyEnv),
    #[error("this session is being claimed right now")]
    InProgress,
    /// The session's key was issued before; it is shown once, so only its id and display.
    #[error("this session's key was already issued")]
    AlreadyClaimed(Box<KeyRecord>),
    #[error("this session's customer is already linked to another Stripe customer")]
    CustomerConflict,
    /// Billed in part (a fan-out ran out of time); the same claim again continues.
    #[error("{0}")]
    Unfinished(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    #[error("corrupt claim record: {0}")]
    CorruptRecord(String),
}

/// What the claim needs of storage.
pub trait ClaimStore:
    KeyStore + PlanStore + CustomerStore + BillingStore + IdempotencyStore + AttemptStore + Clone
{
}
impl<T: KeyStore + PlanStore + CustomerStore + BillingStore + IdempotencyStore + AttemptStore + Clone> ClaimStore
    for T
{
}

/// The claim over its store, Stripe's sessions (`C`), and the billing writer.
#[derive(Clone)]
pub struct CheckoutClaim<S, C> {
    store: S,
    sessions: C,
    billing: Billing<S>,
    /// The deployment's key environment: sessions of the other Stripe mode are refused.
    key_env: Option<KeyEnv>,
}

impl<S: ClaimStore, C: CheckoutSessions> CheckoutClaim<S, C> {
    pub fn new(store: S, sessions: C, billing: Billing<S>) -> Self {
        Self { store, sessions, billing, key_env: None }
    }

    /// Claims sessions of `env`'s Stripe mode only (`TOLLGATE_KEY_ENV`).
    pub fn with_key_env(mut self, env: Option<KeyEnv>) -> Self {
        self.key_env = env;
        self
    }

    /// Claims `session_id` for whoever asks from `source` (the client's address as the
    /// gateway saw it): the key and its plaintext, once.
    pub async fn claim(
        &self,
        session_id: &str,
        source: Option<&str>,
        now: UnixTime,
    ) -> Result<(ApiKey, KeyRecord), ClaimError> {
        self.bound_attempts(session_id, source, now).await?;
        let session = self.sessions.checkout_session(session_id).await.map_err(|e| match e {
            StripeError::NotFound => ClaimError::UnknownSession,
            e => ClaimError::StripeUnavailable(e),
        })?;
        let plans = self.store.list_plans().await?;
        let claimable =
            checkout::claimable(&session, |price| plan_for_price(&plans, price), now).map_err(ClaimError::Refused)?;
        if let Some(deployment) = self.key_env.filter(|d| *d != claimable.env) {
            return Err(ClaimError::WrongMode(deployment));
        }
        let job =
            Job { scope: Scope::CheckoutClaim, id: session_id, fingerprint: session_id, lease_s: CLAIM_LEASE_S, now };
        let work = || async {
            let (key, record) = self.issue(claimable, session_id, now).await?;
            let key_id = record.key_id.as_str().to_owned();
            Ok::<_, ClaimError>(((key, record), key_id))
        };
        match idempotent::once(&self.store, job, work).await? {
            Once::Ran { value, .. } => Ok(value),
            Once::InProgress => Err(ClaimError::InProgress),
            Once::Done { result, .. } => {
                let key_id = KeyId::parse(&result).map_err(|e| ClaimError::CorruptRecord(e.to_string()))?;
                let key = self.store.get_key(&key_id).await?.ok_or(StoreError::NotFound("key"))?;
                Err(ClaimError::AlreadyClaimed(Box::new(key)))
            }
        }
    }

    /// Guessing session ids costs the guesser, not the Stripe API quota. The session's bucket
    /// holds whoever tries it; the source's holds one address however many sessions it tries.
    /// The source first: an exhausted source spends nothing of the session's attempts.
    async fn bound_attempts(&self, session_id: &str, source: Option<&str>, now: UnixTime) -> Result<(), ClaimError> {
        let mut buckets = vec![];
        if let Some(source) = source {
            buckets.push((format!("claim#source#{}", source_bucket(source)), CLAIM_ATTEMPTS_PER_SOURCE));
        }
        buckets.push((format!("claim#session#{session_id}"), CLAIM_ATTEMPTS_PER_SESSION));
        for (bucket, limit) in buckets {
            if let Attempt::Exhausted { retry_after } =
                self.store.attempt(&bucket, limit, CLAIM_ATTEMPT_WINDOW_S, now).await?
            {
                let kind = bucket.split('#').nth(1);
                tracing::warn!(bucket = kind, source = source.unwrap_or("-"), "claim attempts exhausted");
                return Err(ClaimError::TooManyAttempts { retry_after });
            }
        }
        Ok(())
    }

    /// Links and bills the customer (as the webhook would), then issues their key.
    async fn issue(
        &self,
        claimable: Claimable,
        session_id: &str,
        now: UnixTime,
    ) -> Result<(ApiKey, KeyRecord), ClaimError> {
        match self.billing.apply(&claimable.input, now).await {
            Ok(Applied::Synced { .. }) => {}
            Ok(Applied::Conflict(conflict)) => {
                tracing::warn!(session_id, error = %conflict, "claim refused: the customer is linked elsewhere");
                return Err(ClaimError::CustomerConflict);
            }
            Err(BillingError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(ClaimError::Unfinished(e.to_string())),
        }
        // The claim's record is the first guard; this is the second: a record that could not
        // be written (its reservation then lapses after `CLAIM_LEASE_S`) never lets the same
        // session issue a second key.
        if let Some(existing) = self.key_of_session(&claimable.customer_id, session_id).await? {
            tracing::warn!(session_id, key_id = %existing.key_id, "claim refused: the session's key exists, its record did not");
            return Err(ClaimError::AlreadyClaimed(Box::new(existing)));
        }
        let key = ApiKey::generate(claimable.env)?;
        let record = self
            .store
            .create_key(NewKey {
                name: Some("Stripe Checkout".into()),
                metadata: [("checkout_session".to_owned(), session_id.to_owned())].into_iter().collect(),
                // No plan of its own: it follows the customer's, which the subscription's price decides.
                ..NewKey::new(&key, claimable.customer_id, None, now)
            })
            .await?;
        Ok((key, record))
    }

    /// The customer's key that `session_id` issued, if any (its `checkout_session` metadata).
    async fn key_of_session(&self, customer: &CustomerId, session_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let filter = KeyFilter { customer_id: Some(customer.clone()), ..KeyFilter::default() };
        let mut cursor = None;
        loop {
            let page = self.store.list_keys(&filter, 100, cursor.as_deref()).await?;
            if let Some(key) = page
                .items
                .into_iter()
                .find(|k| k.metadata.get("checkout_session").map(String::as_str) == Some(session_id))
            {
                return Ok(Some(key));
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(None),
            }
        }
    }
}

/// A source address's bucket: the address itself for IPv4, its /64 for IPv6 (one host holds a
/// whole /64), anything else as given.
fn source_bucket(source: &str) -> String {
    match source.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(ip) => ip.to_string(),
        Err(_) => source.chars().filter(|c| c.is_ascii_alphanumeric() || ".:-".contains(*c)).take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_one_bucket() {
        assert_eq!(source_bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(source_bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(source_bucket("2001:db8:1:2:bbbb::9"), source_bucket("2001:db8:1:2:aaaa::1"));
        assert_eq!(source_bucket("x'; drop"), "xdrop");
    }
}
