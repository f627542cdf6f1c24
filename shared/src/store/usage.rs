//! Reading usage: a key's history and counters, a customer's ledgers, statistics.

use super::StoreResult;
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::stats::Stats;
use crate::domain::time::Day;
use crate::domain::usage::{MeterDay, MeterLedger, UsageDay};
use std::future::Future;

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
