//! Idempotent operations and bounded attempts.

use super::StoreResult;
use crate::domain::time::UnixTime;
use std::future::Future;

/// Whether one more attempt fits a bucket's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Allowed,
    /// The window's attempts are spent; the next window starts in `retry_after` seconds.
    Exhausted {
        retry_after: u64,
    },
}

/// Bounded attempts per bucket and fixed window (the public claim's abuse limits).
pub trait AttemptStore: Send + Sync {
    /// Counts one attempt in `bucket`'s current window of `window_s`, unless `limit` were
    /// already counted there.
    fn attempt(
        &self,
        bucket: &str,
        limit: u64,
        window_s: u64,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Attempt>> + Send;
}

/// What reserving an idempotent operation found: this attempt may do the work, another is
/// doing it, or it was done. ("Reservation", not "claim": the Checkout claim is another thing.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First time: the caller does the work, then `finish`es (or `release`s on failure).
    Fresh,
    /// Someone else is doing the work right now.
    InProgress { fingerprint: String },
    /// Done before; `result` is what was recorded.
    Done { fingerprint: String, result: String },
}

/// A reservation asked for: `scope`/`id` for `lease_s` seconds from `now` on behalf of `owner`
/// (a token unique to this attempt), for the work `fingerprint` describes; the record lives
/// until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve<'a> {
    pub scope: &'a str,
    pub id: &'a str,
    pub owner: &'a str,
    pub fingerprint: &'a str,
    pub lease_s: u64,
    pub expires_at: UnixTime,
    pub now: UnixTime,
}

pub trait IdempotencyStore: Send + Sync {
    /// Takes the reservation if it is free: absent, expired, or pending past its holder's lease.
    fn reserve(&self, req: Reserve<'_>) -> impl Future<Output = StoreResult<Reservation>> + Send;
    /// Records the result. `Conflict` if `owner` no longer holds the reservation (its lease ran out
    /// and another attempt took over).
    fn finish(
        &self,
        scope: &str,
        id: &str,
        owner: &str,
        result: &str,
        expires_at: UnixTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Gives up `owner`'s reservation so a retry can do the work; a no-op if it is not theirs.
    fn release(&self, scope: &str, id: &str, owner: &str) -> impl Future<Output = StoreResult<()>> + Send;
}
