//! The usage rollup's storage: key usage as read, the writes that roll it, meter reports.

use super::{StoreError, StoreResult, Written};
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::plans::{Period, PlanId};
use crate::domain::stats::{NearQuota, TopCustomer, TopKey};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, MeterDay, MeterLedger, PendingReport};
use std::collections::BTreeMap;
use std::future::Future;

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
