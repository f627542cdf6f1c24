//! The statistics a run adds after billing: daily totals, top keys and customers, keys near
//! their quota.

use super::Rollup;
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::stats::{NearQuota, TopCustomer, TopKey, merge_top_customers, merge_top_keys, update_near_quota};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::DayCount;
use crate::store::{CustomerStore, IdempotencyStore, KeyUsage, PlanStore, RollupStore, StoreResult, UsageStore};
use crate::stripe::api::MeterEvents;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What a run adds to the statistics, gathered as keys are rolled.
#[derive(Default)]
pub(super) struct RunStats {
    pub(super) days: BTreeMap<Day, DayStats>,
    /// Every key looked at: near its quota now, or not.
    pub(super) near: Vec<(KeyId, Option<NearQuota>)>,
}

#[derive(Default)]
pub(super) struct DayStats {
    /// The differences written to history this run.
    pub(super) delta: DayCount,
    /// The day's exact total of each key rolled.
    pub(super) keys: Vec<TopKey>,
    /// Customers whose day total grew.
    pub(super) customers: BTreeSet<CustomerId>,
}

impl RunStats {
    pub(super) fn key(&mut self, key: &KeyUsage, now: UnixTime) {
        for (&day, live) in &key.live {
            // Live counters of a settled day can come back holding only late-recorded denials
            // (allowed 0): the day's total is then the rolled one.
            let allowed = live.allowed.max(key.rolled.get(&day).map_or(0, |r| r.allowed));
            let d = self.days.entry(day).or_default();
            d.keys.push(TopKey { key_id: key.key_id.clone(), customer_id: key.customer_id.clone(), allowed });
        }
        let near = key.quota.filter(|q| NearQuota::is_near(q.used, q.limit, q.reset, now)).map(|q| NearQuota {
            key_id: key.key_id.clone(),
            customer_id: key.customer_id.clone(),
            used: q.used,
            limit: q.limit,
            period: q.period,
            reset: q.reset,
        });
        self.near.push((key.key_id.clone(), near));
    }

    pub(super) fn rolled(&mut self, key: &KeyUsage, day: Day, delta: DayCount) {
        let d = self.days.entry(day).or_default();
        d.delta.add(delta);
        if delta.allowed > 0 {
            d.customers.insert(key.customer_id.clone());
        }
    }
}

impl<S, M> Rollup<S, M>
where
    S: RollupStore + UsageStore + PlanStore + CustomerStore + IdempotencyStore,
    M: MeterEvents,
{
    /// Adds what the run rolled to the statistics: per day, the totals by the differences, and
    /// the top lists with every rolled key's and grown customer's exact day total; then the
    /// near-quota list. One Query, one write per day that changed, one read per customer
    /// whose day grew. `Ok(false)` when there was nothing to add.
    pub(super) async fn write_stats(&self, run: RunStats, now: UnixTime, deadline: Instant) -> StoreResult<bool> {
        let Some((&from, _)) = run.days.first_key_value() else {
            return Ok(false);
        };
        let to = run.days.last_key_value().map_or(from, |(d, _)| *d);
        let stored = self.store.stats(from, to).await?;
        let mut written = false;
        for (day, d) in run.days {
            let current = stored.days.get(&day).cloned().unwrap_or_default();
            let top_keys = merge_top_keys(&current.top_keys, d.keys);
            let mut totals = Vec::with_capacity(d.customers.len());
            for customer_id in d.customers {
                // Past the deadline, or a failed read: that customer's total waits for its next
                // run (the day's totals are still written).
                if Instant::now() >= deadline {
                    tracing::info!(day = %day, "out of time for the top customers; the next run completes them");
                    break;
                }
                match self.store.customer_usage(&customer_id, day).await {
                    Ok(ledgers) => {
                        let allowed = ledgers.iter().filter(|(m, _)| m.day == day).map(|(_, l)| l.usage.allowed).sum();
                        totals.push(TopCustomer { customer_id, allowed });
                    }
                    Err(e) => {
                        tracing::warn!(customer_id = %customer_id, error = %e, "could not read a customer's day total")
                    }
                }
            }
            let top_customers = merge_top_customers(&current.top_customers, totals);
            if d.delta.is_zero() && top_keys == current.top_keys && top_customers == current.top_customers {
                continue;
            }
            self.store.add_day_stats(day, d.delta, &top_keys, &top_customers).await?;
            written = true;
        }
        let near = update_near_quota(&stored.near_quota, run.near, now);
        if near != stored.near_quota {
            self.store.put_near_quota(&near).await?;
            written = true;
        }
        Ok(written)
    }
}
