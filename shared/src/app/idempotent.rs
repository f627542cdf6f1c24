//! Work done at most once per id: reserve, work, then record the result (or give the
//! reservation back on failure so a retry can do the work). One sequence for the four flows
//! that need it; their differences are data in [`Scope`].

use crate::domain::time::UnixTime;
use crate::store::{IdempotencyStore, Reservation, Reserve, StoreError};
use std::future::Future;

/// What is done once, and how long its record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /v1/keys` with an `Idempotency-Key`: remembered a day.
    CreateKey,
    /// A Checkout session's first key: remembered ten years (a session is claimed once, ever).
    CheckoutClaim,
    /// A Stripe event by id: remembered 30 days (Stripe retries for three).
    StripeEvent,
    /// One usage rollup run at a time: a lease, given back when the run ends.
    RollupLease,
}

impl Scope {
    /// The scope's name in storage (part of the record's key; never change one).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateKey => "create-key",
            Self::CheckoutClaim => "checkout-claim",
            Self::StripeEvent => "stripe-event",
            Self::RollupLease => crate::store::schema::ROLLUP_LEASE_SCOPE,
        }
    }

    /// How long a finished piece of work's record is kept; `None` for a lease, which is
    /// released whether the work succeeded or not.
    pub fn record_ttl_s(self) -> Option<i64> {
        match self {
            Self::CreateKey => Some(86_400),
            Self::CheckoutClaim => Some(10 * 365 * 86_400),
            Self::StripeEvent => Some(30 * 86_400),
            Self::RollupLease => None,
        }
    }
}

/// One piece of work to do once.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub scope: Scope,
    pub id: &'a str,
    /// What the request was (a digest of its body): a retry with another body is not a retry.
    pub fingerprint: &'a str,
    /// How long this attempt holds the reservation before another may take over: longer than
    /// the work takes.
    pub lease_s: u64,
    pub now: UnixTime,
}

/// How [`once`] went.
#[derive(Debug)]
pub enum Once<T> {
    /// This attempt did the work. `unrecorded` is set when its result could not be recorded
    /// (the work stands; the caller decides whether that is an error).
    Ran { value: T, unrecorded: Option<StoreError> },
    /// Another attempt is doing the work right now.
    InProgress,
    /// Done before: the fingerprint it was done for and the result it recorded.
    Done { fingerprint: String, result: String },
}

/// Does `work` once for `job`. `work` answers its value and the result to record (an id, an
/// outcome); on an error the reservation is given back, and the error returned.
pub async fn once<S, T, E, Fut>(store: &S, job: Job<'_>, work: impl FnOnce() -> Fut) -> Result<Once<T>, E>
where
    S: IdempotencyStore,
    E: From<StoreError>,
    Fut: Future<Output = Result<(T, String), E>>,
{
    let Job { scope, id, fingerprint, lease_s, now } = job;
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let expires = now.plus(scope.record_ttl_s().unwrap_or(lease_s as i64));
    let reserve = Reserve { scope: scope.as_str(), id, owner: &owner, fingerprint, lease_s, expires_at: expires, now };
    match store.reserve(reserve).await? {
        Reservation::Fresh => {}
        Reservation::InProgress { .. } => return Ok(Once::InProgress),
        Reservation::Done { fingerprint, result } => return Ok(Once::Done { fingerprint, result }),
    }
    let outcome = work().await;
    let settled = match (&outcome, scope.record_ttl_s()) {
        (Ok((_, result)), Some(_)) => store.finish(scope.as_str(), id, &owner, result, expires).await,
        _ => store.release(scope.as_str(), id, &owner).await,
    };
    match outcome {
        Ok((value, _)) => {
            let unrecorded = settled.err();
            match (&unrecorded, scope.record_ttl_s()) {
                (Some(e), Some(_)) => {
                    tracing::error!(scope = scope.as_str(), error = %e, "could not record the work done once")
                }
                // A lease not given back expires by itself; the next run waits for that.
                (Some(e), None) => tracing::warn!(scope = scope.as_str(), error = %e, "could not release the lease"),
                (None, _) => {}
            }
            Ok(Once::Ran { value, unrecorded })
        }
        Err(e) => {
            if let Err(release) = settled {
                // It expires with its lease; a retry waits for that.
                tracing::warn!(scope = scope.as_str(), error = %release, "could not release the reservation");
            }
            Err(e)
        }
    }
}
