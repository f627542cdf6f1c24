//! Storage: narrow traits for what each function needs, and their one implementation over
//! DynamoDB ([`dynamo::DynamoStore`]). Callers are generic over the traits so handlers can be
//! exercised in unit tests without a database, while every integration and contract test runs
//! the real SDK code path against a DynamoDB-protocol server.

pub mod dynamo;
#[cfg(feature = "embedded")]
pub mod embedded;
mod key_edits;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod metrics;
pub mod schema;

pub use key_edits::{KeyPatch, NewKey, revoke_edit, rotate_edit};

use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::billing::Subscription;
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::decision::{Decision, Denial};
use crate::domain::key_records::{KeyRecord, KeyStatus};
use crate::domain::lease::{Take, Unspent};
use crate::domain::plans::{Period, Plan, PlanId};
use crate::domain::stats::{NearQuota, Stats, TopCustomer, TopKey};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, MeterDay, MeterLedger, PendingReport, UsageDay};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The request is valid but the stored state forbids it (e.g. a plan in use, a revoked key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced item does not exist (e.g. a key naming an unknown plan).
    #[error("unknown {0}")]
    UnknownReference(&'static str),
    /// Could not reach storage, or it throttled us, within the time allowed. Safe to retry.
    #[error("storage unavailable ({})", .0.fault.as_str())]
    Unavailable(#[source] Outage),
    /// Storage answered with an error that retrying will not fix.
    #[error("storage error")]
    Backend(#[source] BoxError),
    /// A stored item does not have the shape this code writes.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    #[error("invalid cursor")]
    InvalidCursor,
    /// A customer creating its own key already holds as many as its plan allows.
    #[error("the plan allows {0} keys and all are in use")]
    KeyLimitReached(u64),
    /// A customer creating its own key has no plan to put it on (a key without one would have
    /// no limits at all).
    #[error("the customer has no plan")]
    NoPlan,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Why storage could not answer, for [`StoreError::Unavailable`]; `None` for answers.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Self::Unavailable(o) => Some(o.fault),
            _ => None,
        }
    }
}

/// Why storage could not answer: the rows of the authorizer's fail-mode matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No answer within the attempt or operation timeout.
    Timeout,
    /// A 5xx (`InternalServerError`, `ServiceUnavailable`, or any other 5xx status).
    Server,
    /// Refused, reset or dropped before an answer arrived.
    Connection,
    /// `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`:
    /// what an attacker hammering one item causes, so never a reason to let anyone in.
    Throttled,
    /// Conflicting writes to the same items (`TransactionConflict`, or a decision that kept
    /// losing its conditional write): also load, not an outage.
    Contention,
}

impl Fault {
    /// Outages that say nothing about the caller: the only ones `open` may allow through.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Timeout | Self::Server | Self::Connection)
    }

    /// A refusal that says the write was not applied (throttled, or a TransactionConflict
    /// with a rollup transaction holding the item): what it carried can be sent again.
    pub fn not_applied(self) -> bool {
        matches!(self, Self::Throttled | Self::Contention)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Server => "server_error",
            Self::Connection => "connection",
            Self::Throttled => "throttled",
            Self::Contention => "contention",
        }
    }
}

/// A storage outage: its class, what happened, and the SDK error behind it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", fault.as_str())]
pub struct Outage {
    pub fault: Fault,
    detail: String,
    #[source]
    source: Option<BoxError>,
}

impl Outage {
    pub fn new(fault: Fault, detail: impl Into<String>) -> Self {
        Self { fault, detail: detail.into(), source: None }
    }

    pub fn caused_by(fault: Fault, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self { fault, detail: source.to_string(), source: Some(source) }
    }
}

/// One page of a listing; `next_cursor` is opaque and absent on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub customer_id: Option<CustomerId>,
    pub plan_id: Option<PlanId>,
    pub status: Option<KeyStatus>,
}

pub trait KeyStore: Send + Sync {
    /// Creates the key and its hash lookup, and the customer if it is new, atomically.
    fn create_key(&self, new: NewKey) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    fn get_key(&self, id: &KeyId) -> impl Future<Output = StoreResult<Option<KeyRecord>>> + Send;
    fn list_keys(
        &self,
        filter: &KeyFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> impl Future<Output = StoreResult<Page<KeyRecord>>> + Send;
    /// Fails with `Conflict` for a revoked key: revocation is permanent.
    fn update_key(
        &self,
        id: &KeyId,
        patch: KeyPatch,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    /// Replaces the secret; the previous one keeps working until `grace_until`.
    fn rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: String,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    fn revoke_key(&self, id: &KeyId, now: UnixTime) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    /// Fills in `last_used_at` of listed keys (the listing indexes do not carry it): one
    /// small read per key, side by side.
    fn with_last_used(&self, keys: Vec<KeyRecord>) -> impl Future<Output = StoreResult<Vec<KeyRecord>>> + Send;
}

pub trait PlanStore: Send + Sync {
    fn create_plan(&self, plan: &Plan) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces an existing plan (its version moves only when the definition changed), then
    /// re-applies its limits to every key it governs until `deadline`. Resumable: the same
    /// update again continues after the last key an earlier attempt finished.
    fn update_plan(
        &self,
        plan: &Plan,
        now: UnixTime,
        deadline: Instant,
    ) -> impl Future<Output = StoreResult<FanOut>> + Send;
    fn get_plan(&self, id: &PlanId) -> impl Future<Output = StoreResult<Option<Plan>>> + Send;
    fn list_plans(&self) -> impl Future<Output = StoreResult<Vec<Plan>>> + Send;
    /// `Conflict` while any non-revoked key is governed by the plan.
    fn delete_plan(&self, id: &PlanId) -> impl Future<Output = StoreResult<()>> + Send;
}

pub trait CustomerStore: Send + Sync {
    fn get_customer(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Option<Customer>>> + Send;
    fn customer_key_ids(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Vec<KeyId>>> + Send;
    /// The customer a Stripe customer id is linked to.
    fn customer_for_stripe(
        &self,
        stripe_customer_id: &str,
    ) -> impl Future<Output = StoreResult<Option<CustomerId>>> + Send;
    /// Brings every key of the customer in line with it (plan limits, subscription access),
    /// until `deadline`. Resumable: a later call for the same customer version continues after
    /// the last key an earlier call finished.
    fn refresh_customer_keys(
        &self,
        id: &CustomerId,
        now: UnixTime,
        deadline: Instant,
    ) -> impl Future<Output = StoreResult<FanOut>> + Send;
}

/// How far a fan-out (a plan's or a customer's change, copied to their keys) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanOut {
    /// Keys this call looked at (after the point an earlier call reached).
    pub visited: usize,
    /// Of those, keys whose item was rewritten.
    pub rewritten: usize,
    /// False when the deadline came first; call again to continue.
    pub complete: bool,
}

/// A Stripe customer as Tollgate knows it: which customer it is linked to, and what was heard
/// of each of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StripeAccount {
    pub linked: Option<CustomerId>,
    /// Moves on every subscription write, so a customer's billing derived from these
    /// subscriptions is written only if none changed meanwhile.
    pub version: u64,
    /// Each with its stored version.
    pub subscriptions: Vec<(Subscription, u64)>,
}

/// Billing identity's storage: the link between a customer and a Stripe customer, the
/// subscriptions, and the customer's billing fields. Every write is conditional on what was
/// read; the rules live in `domain::billing` and `app::billing`.
pub trait BillingStore: Send + Sync {
    fn stripe_account(&self, stripe_customer: &str) -> impl Future<Output = StoreResult<StripeAccount>> + Send;
    /// Writes `sub` if its stored version is still `ver` (`None`: not stored yet).
    fn put_subscription(
        &self,
        sub: &Subscription,
        ver: Option<u64>,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Links `customer` and `stripe_customer` to each other, creating the customer (billed
    /// through Stripe, `incomplete` until a subscription is known) if it is new. `Stale` when
    /// either is linked to something else by the time of the write.
    fn link_customer(
        &self,
        customer: &CustomerId,
        stripe_customer: &str,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// The customer and its stored version.
    fn customer_versioned(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Option<(Customer, u64)>>> + Send;
    /// Writes the customer's billing fields (and the access its keys copy) if the customer is
    /// still at `ver` and its Stripe account (its version and every subscription's) is still as
    /// `derived_from` read it.
    fn put_billing(
        &self,
        customer: &Customer,
        ver: u64,
        derived_from: &StripeAccount,
        past_due_grace_s: u64,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
}

pub trait AuthorizeStore: Send + Sync {
    fn key_id_for_hash(&self, hash: &KeyHash) -> impl Future<Output = StoreResult<Option<KeyId>>> + Send;
    /// Decides one request to a route needing the scopes `required` for the key and, when
    /// allowed, counts it against its limits, in one conditional write in steady state.
    /// Denials are counted separately.
    fn authorize_and_count(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Decision>> + Send;
    /// [`AuthorizeStore::authorize_and_count`] for a hot key ([`crate::domain::lease`]): reserves
    /// up to `take.tokens` requests (what fits) in the same one write, counts the requests
    /// earlier blocks admitted for billing and gives back their unspent tokens. The decision,
    /// and how many tokens it reserved (0 when refused); this decision's request is one of them.
    /// `take.used` and `take.unspent` are emptied once written, or once a write that may have
    /// been applied failed; what is left in them on return (a throttled write, an error) was
    /// certainly not written, and the caller keeps it for its next write.
    fn take(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        take: &mut Take,
    ) -> impl Future<Output = StoreResult<Taken>> + Send;
    /// Counts what ended blocks admitted and gives back their unspent tokens, deciding nothing
    /// (a container settling before it idles or shuts down). Never retried after an ambiguous
    /// failure: what is lost is at most those blocks, never counted twice.
    fn settle(
        &self,
        key_id: &KeyId,
        used: &[(Day, u64)],
        unspent: Option<Unspent>,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Adds `n` denials the authorizer answered from memory to the key's denial counts for
    /// `day`. Best effort: a failure is logged, never a decision.
    fn record_denials(&self, key_id: &KeyId, day: Day, denial: Denial, n: u64) -> impl Future<Output = ()> + Send;
}

/// What a [`AuthorizeStore::take`] write decided and reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub decision: Decision,
    /// Requests reserved, this decision's included; 0 when refused.
    pub tokens: u64,
}

impl Taken {
    pub fn refused(decision: Decision) -> Self {
        Self { decision, tokens: 0 }
    }
}

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

pub trait IdempotencyStore: Send + Sync {
    /// Reserves `scope`/`id` for `lease_s` seconds on behalf of `owner` (a token unique to this
    /// attempt); the record lives until `expires_at`.
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &self,
        scope: &str,
        id: &str,
        owner: &str,
        fingerprint: &str,
        lease_s: u64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Reservation>> + Send;
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

pub trait UsageStore: Send + Sync {
    /// Days from `from` on, oldest first: stored history merged with the live counters on the
    /// key item for days not yet rolled up.
    fn usage_history(&self, key_id: &KeyId, from: Day) -> impl Future<Output = StoreResult<Vec<UsageDay>>> + Send;
    /// The key's counters as they stand (for the usage endpoint).
    fn key_counters(
        &self,
        key_id: &KeyId,
    ) -> impl Future<Output = StoreResult<Option<crate::domain::decision::KeyState>>> + Send;
    /// A customer's rolled-up ledgers from `from` on, by day then meter.
    fn customer_usage(
        &self,
        customer_id: &CustomerId,
        from: Day,
    ) -> impl Future<Output = StoreResult<Vec<(MeterDay, MeterLedger)>>> + Send;
    /// Tollgate-wide daily statistics from `from` to `to` and the keys near their quota, as
    /// the usage rollup last wrote them.
    fn stats(&self, from: Day, to: Day) -> impl Future<Output = StoreResult<Stats>> + Send;
}

/// A key's usage as the rollup reads it: the live per-day counters on the key item, and what
/// has been rolled into usage-day items so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    /// The governing plan (its meter decides where allowed requests are billed).
    pub plan: Option<PlanId>,
    /// Lifetime totals as read (`None`: the attribute is absent), the guard for settling.
    pub n_allowed: Option<u64>,
    pub n_denied: Option<u64>,
    /// When the key last allowed a request (a block's write, for a hot key).
    pub last_used: Option<UnixTime>,
    pub live: BTreeMap<Day, DayCount>,
    pub rolled: BTreeMap<Day, DayCount>,
    /// Its quota as it stood when read, for the keys-near-quota list.
    pub quota: Option<QuotaUse>,
}

impl KeyUsage {
    /// What `day`'s live counters hold beyond what was rolled of it; `None` if they hold less
    /// (never rolled backwards).
    pub fn since_rolled(&self, day: Day) -> Option<DayCount> {
        let live = self.live.get(&day).copied().unwrap_or_default();
        live.since(self.rolled.get(&day).copied().unwrap_or_default())
    }
}

/// A key's use of its quota in the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUse {
    pub used: u64,
    pub limit: u64,
    pub period: Period,
    /// When the period ends.
    pub reset: UnixTime,
}

/// How a conditional rollup write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// What it was conditioned on changed since it was read (a concurrent run, or new usage);
    /// nothing was written.
    Stale,
}

/// Key-days rolled in one transaction: two items each (usage day, ledger) and the key item,
/// within DynamoDB's 100 items a transaction.
pub const ROLL_DAYS_AT_ONCE: usize = 24;

/// Finished days removed from a key item in one write: 9 attributes each, far inside
/// DynamoDB's 4 KB expression limit.
pub const SETTLE_DAYS_AT_ONCE: usize = 14;

/// What a rollup write does to the key item, beside the days it rolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEdit<'a> {
    /// Nothing: the key keeps its activity marker.
    Keep,
    /// Removes the activity marker and these finished days' live counters, if nothing was
    /// counted on the key since it was read (its lifetime totals guard it).
    Settle(&'a [Day]),
    /// Removes these finished days' live counters if they still hold what was read; the marker
    /// stays. Guarded by those days' counters alone, so a busy key's traffic does not fail it.
    RemoveDays(&'a [Day]),
}

/// Items in one rollup transaction: DynamoDB's limit.
pub const ROLL_ITEMS_AT_ONCE: usize = 100;

/// One key's part of a rollup write.
#[derive(Debug, Clone, Copy)]
pub struct KeyRoll<'a> {
    pub key: &'a KeyUsage,
    /// Days to roll, in order, at most [`ROLL_DAYS_AT_ONCE`].
    pub days: &'a [Day],
    /// Where its allowed requests are billed (its plan's meter).
    pub meter: Option<&'a str>,
    pub edit: KeyEdit<'a>,
}

impl<'a> KeyRoll<'a> {
    /// What `day` adds, if anything (never less than was rolled).
    pub fn delta(&self, day: Day) -> Option<DayCount> {
        self.key.since_rolled(day).filter(|d| !d.is_zero())
    }

    /// Transaction items it takes besides the ledgers: a usage-day item per day that adds
    /// something, and the key item when it is edited.
    pub fn items(&self) -> usize {
        let edited = match self.edit {
            KeyEdit::Keep => false,
            KeyEdit::Settle(_) => true,
            KeyEdit::RemoveDays(days) => !days.is_empty(),
        };
        self.days.iter().filter(|d| self.delta(**d).is_some()).count() + usize::from(edited)
    }

    /// The ledgers (day, meter) it adds to.
    pub fn ledgers(&self) -> impl Iterator<Item = (Day, Option<&'a str>)> + '_ {
        self.days.iter().filter(|d| self.delta(**d).is_some()).map(|d| (*d, self.meter))
    }

    /// At most [`ROLL_DAYS_AT_ONCE`] days and [`SETTLE_DAYS_AT_ONCE`] finished days, each once
    /// and in order (a day twice would be two operations on one item, which DynamoDB refuses).
    pub fn check(&self) -> StoreResult<()> {
        let finished = match self.edit {
            KeyEdit::Keep => &[][..],
            KeyEdit::Settle(f) | KeyEdit::RemoveDays(f) => f,
        };
        let ascending = |d: &[Day]| d.windows(2).all(|w| w[0] < w[1]);
        if self.days.len() > ROLL_DAYS_AT_ONCE
            || finished.len() > SETTLE_DAYS_AT_ONCE
            || !ascending(self.days)
            || !ascending(finished)
        {
            return Err(StoreError::Backend(
                format!(
                    "a key roll takes at most {ROLL_DAYS_AT_ONCE} days and {SETTLE_DAYS_AT_ONCE} finished days, each once, in order"
                )
                .into(),
            ));
        }
        Ok(())
    }
}

/// How a rollup write went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rolled {
    Applied,
    /// Nothing was written: these rolls (by index) found their items changed since they were
    /// read; the others can be sent again without them.
    Stale(Vec<usize>),
}

/// The usage rollup's storage (docs/data-model.md, "The usage rollup").
pub trait RollupStore: Send + Sync {
    /// Keys marked active (a counted request since they were last settled).
    fn active_keys(&self) -> impl Future<Output = StoreResult<Vec<KeyId>>> + Send;
    /// The key's live counters and what has been rolled of each of their days (its most recent
    /// usage-day items, in one Query; one more only for a live day older than those).
    fn key_usage(&self, key_id: &KeyId) -> impl Future<Output = StoreResult<Option<KeyUsage>>> + Send;
    /// One request for keys of one customer: rolls each key's `days` (its usage-day items, if
    /// they still hold what was read) and edits each key item as its roll says, with one ADD per
    /// ledger (day and meter) of the differences, all in one transaction; one key with nothing
    /// to roll is its item's edit alone (one conditional UpdateItem, or nothing). If anything it
    /// is conditioned on changed since the keys were read, nothing is written and `Stale` names
    /// the rolls that changed. At most [`ROLL_ITEMS_AT_ONCE`] items (see [`KeyRoll::items`]).
    fn roll_keys(&self, rolls: &[KeyRoll<'_>], now: UnixTime) -> impl Future<Output = StoreResult<Rolled>> + Send;
    /// [`RollupStore::roll_keys`] for one key.
    fn roll_key(
        &self,
        key: &KeyUsage,
        days: &[Day],
        meter: Option<&str>,
        edit: KeyEdit<'_>,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Written>> + Send {
        async move {
            Ok(match self.roll_keys(&[KeyRoll { key, days, meter, edit }], now).await? {
                Rolled::Applied => Written::Applied,
                Rolled::Stale(_) => Written::Stale,
            })
        }
    }
    /// Meter ledgers marked as owing a report.
    fn owed_meters(&self) -> impl Future<Output = StoreResult<Vec<MeterDay>>> + Send;
    fn meter_ledger(&self, meter: &MeterDay) -> impl Future<Output = StoreResult<Option<MeterLedger>>> + Send;
    /// Records `pending` if the ledger is still as read (`settled` = reported + unbilled, no
    /// pending report).
    fn begin_report(
        &self,
        meter: &MeterDay,
        read: &MeterLedger,
        pending: &PendingReport,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Stripe has `pending`: adds it to `reported` and clears it (and the owed marker when that
    /// settles the ledger). `Stale` if this pending report is no longer the ledger's.
    fn commit_report(
        &self,
        meter: &MeterDay,
        pending: &PendingReport,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Gives up a pending report Stripe can no longer take (its timestamp is older than Stripe
    /// accepts): its value moves to `unbilled` and the slot is cleared, if it is still this one.
    fn abandon_report(
        &self,
        meter: &MeterDay,
        pending: &PendingReport,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Settles the unsettled part of a ledger as read without reporting it (`unbilled`), and
    /// clears the owed marker.
    fn write_off(&self, meter: &MeterDay, read: &MeterLedger) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Adds `delta` to `day`'s Tollgate-wide totals and sets its top lists.
    fn add_day_stats(
        &self,
        day: Day,
        delta: DayCount,
        top_keys: &[TopKey],
        top_customers: &[TopCustomer],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces the keys-near-quota list.
    fn put_near_quota(&self, near: &[NearQuota]) -> impl Future<Output = StoreResult<()>> + Send;
}
