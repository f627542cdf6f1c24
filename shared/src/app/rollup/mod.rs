//! The usage rollup: rolls the authorizer's live per-day counters into daily history and
//! customer meter ledgers, then reports each ledger's unreported allowed requests to Stripe
//! Billing Meters, exactly once.
//!
//! One run, under a lease (one run at a time; a crashed run's lease expires):
//!
//! 1. **Keys.** For every key marked active (docs/data-model.md, "The usage rollup"), read in
//!    one Query: each day whose live counters moved since the last roll is written to the
//!    key's usage-day item, conditioned on it as read, and added to the customer's meter
//!    ledger for that day; an idle key's marker (and the live counters of days that ended over
//!    an hour ago) is removed if nothing was counted meanwhile. One customer's keys go
//!    together, in transactions of up to 100 items with one ledger update per day and meter.
//! 2. **Reports.** For every ledger marked as owing: the unsettled amount is recorded on the
//!    ledger as a pending report (identifier, value, timestamp, Stripe customer) *before* it is
//!    sent; Stripe's accept (or its "already exists" answer to a resend) then moves `reported`
//!    and clears the pending report. A crash anywhere in between resends the same pending
//!    report, which Stripe recognises by its identifier.
//!
//! Usage of a customer without a Stripe customer id, or older than Stripe accepts, is written
//! off as `unbilled` (and logged) instead of being reported.
//!
//! Then the run adds what it rolled to the overview's statistics ([`crate::domain::stats`]):
//! each day's totals (by the differences it wrote), the day's top keys (each rolled key's exact
//! day total) and top customers (their ledgers' exact day totals), and the keys near their
//! quota. Statistics are not billing, and come after it: a run that stops between rolling and
//! writing them leaves its differences out of the daily totals, and its keys out of the day's
//! top lists until they are rolled again (for a day that has ended, for good).

mod keys;
mod report_steps;
mod reports;
mod run_report;
mod stats;

pub use keys::BUSY_S;
pub use report_steps::{STRIPE_MAX_AGE_S, Step, event_timestamp, identifier, next_step};
pub use run_report::{Backoff, Reporting, RollupOptions, RunReport, RunStatus};

use crate::app::idempotent::{self, Job, Once, Scope};
use crate::domain::customers::CustomerId;
use crate::domain::time::UnixTime;
use crate::store::schema::ROLLUP_LEASE_ID;
use crate::store::{
    CustomerStore, IdempotencyStore, KeyRoll, KeyUsage, PlanStore, RollupStore, StoreError, UsageStore,
};
use crate::stripe::api::{MeterEvents, StripeApi};
use futures_util::StreamExt as _;
use futures_util::stream;
use keys::{KEYS_AT_ONCE, KeyPlan, KeysRun};
use stats::RunStats;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Live counters of a day are removed this long after the day ended (so a request stamped
/// just before midnight on a slightly slow clock is still counted where it is rolled).
pub const FINISHED_AFTER_S: i64 = 3_600;

// A hot key's late count is moved to the day it is written on before this removal can lose it.
const _: () = assert!(crate::domain::lease::LATE_AFTER_S < FINISHED_AFTER_S);

/// Attempts of one rollup write that met an outage (5xx, timeout, throttling, a conflict with a
/// management write); safe to repeat, the usage-day items guard it.
const ROLL_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// The rollup over its store and, where usage is billed, Stripe's meter events (`M`: the
/// Stripe API client, or any [`MeterEvents`]).
pub struct Rollup<S, M = StripeApi> {
    store: S,
    stripe: Option<M>,
    options: RollupOptions,
}

/// Counts shared by concurrent tasks of one run.
#[derive(Default)]
struct Tally(Mutex<RunReport>);

impl Tally {
    fn add(&self, f: impl FnOnce(&mut RunReport)) {
        f(&mut self.0.lock().expect("tally lock"));
    }
}

impl<S> Rollup<S>
where
    S: RollupStore + UsageStore + PlanStore + CustomerStore + IdempotencyStore,
{
    /// Reports through the Stripe API client; without one, usage is only rolled up.
    pub fn new(store: S, stripe: Option<StripeApi>, options: RollupOptions) -> Self {
        Self { store, stripe, options }
    }
}

impl<S, M> Rollup<S, M>
where
    S: RollupStore + UsageStore + PlanStore + CustomerStore + IdempotencyStore,
    M: MeterEvents,
{
    /// Reports through `meter_events`.
    pub fn with_meter_events(store: S, meter_events: M, options: RollupOptions) -> Self {
        Self { store, stripe: Some(meter_events), options }
    }

    /// One run at `now`: takes the lease, rolls the active keys up, reports what is owed,
    /// gives the lease back.
    pub async fn run(&self, now: UnixTime) -> Result<RunReport, RollupError> {
        let started = Instant::now();
        let deadline = started + self.options.budget;
        let lease_s = (self.options.budget + self.options.lease_margin).as_secs().max(1);
        let job = Job { scope: Scope::RollupLease, id: ROLLUP_LEASE_ID, fingerprint: "", lease_s, now };
        let work = || async { Ok::<_, RollupError>((self.run_leased(now, deadline).await?, String::new())) };
        let result = match idempotent::once(&self.store, job, work).await {
            Ok(Once::Ran { value, .. }) => Ok(value),
            Ok(Once::InProgress | Once::Done { .. }) => {
                tracing::info!("another rollup run holds the lease; nothing to do");
                crate::metrics::global().rollup("busy", [0; 6], 0, crate::metrics::now_ms());
                return Ok(RunReport { status: Some(RunStatus::Busy), ..RunReport::default() });
            }
            Err(e) => Err(e),
        };
        let mut report = match result {
            Ok(report) => report,
            Err(e) => {
                crate::metrics::global().rollup(
                    "failed",
                    [0; 6],
                    started.elapsed().as_millis() as u64,
                    crate::metrics::now_ms(),
                );
                return Err(e);
            }
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        let status = report.status.map_or("completed", RunStatus::as_str);
        let counts = [
            report.key_days_rolled,
            report.keys_settled,
            report.keys_deferred,
            report.events_accepted,
            report.units_reported,
            report.units_unbilled,
        ];
        crate::metrics::global().rollup(status, counts, report.duration_ms, crate::metrics::now_ms());
        if report.keys_active == 0 && report.meters_owed == 0 {
            tracing::debug!(report = ?report, "usage rollup finished: nothing to do");
        } else {
            tracing::info!(report = ?report, "usage rollup finished");
        }
        Ok(report)
    }

    async fn run_leased(&self, now: UnixTime, deadline: Instant) -> Result<RunReport, RollupError> {
        let tally = Tally::default();
        let out_of_time = AtomicBool::new(false);

        // 1. Keys: a chunk at a time, read (one Query each, concurrently), then written
        // customer by customer (customers concurrently; one customer's keys together, in as few
        // transactions as fit, so they never contend for their ledger).
        let meters = Mutex::new(
            self.store.list_plans().await?.into_iter().map(|p| (p.id, p.meter_event_name)).collect::<HashMap<_, _>>(),
        );
        let mut keys = self.store.active_keys().await?;
        // Once each: a key twice in one transaction would be two operations on one item.
        keys.sort_unstable();
        keys.dedup();
        tally.add(|r| r.keys_active = keys.len() as u64);
        let stats = Mutex::new(RunStats::default());
        let run = KeysRun { now, deadline, tally: &tally, stats: &stats, meters: &meters, out_of_time: &out_of_time };
        for chunk in keys.chunks(KEYS_AT_ONCE) {
            if Instant::now() >= deadline {
                out_of_time.store(true, Ordering::Relaxed);
                break;
            }
            let read = self.read_keys(chunk, run).await;
            // A key with no day to roll and no settle writes alone: a busy key's finished days,
            // a plain UpdateItem (never a transaction holding its item), or nothing at all.
            let (alone, together): (Vec<_>, Vec<_>) =
                read.into_iter().partition(|(_, plan)| plan.days.is_empty() && !plan.settle);
            // The futures are made first: with a closure in the stream's type, the compiler
            // cannot prove the run's future Send for every lifetime.
            let writes: Vec<_> = alone
                .iter()
                .map(|(key, plan)| {
                    let roll = KeyRoll { key, days: &[], meter: None, edit: plan.edit() };
                    self.send_rolls(vec![roll], run)
                })
                .collect();
            stream::iter(writes).for_each_concurrent(self.options.concurrency, |write| write).await;
            let mut by_customer: BTreeMap<CustomerId, Vec<(KeyUsage, KeyPlan)>> = BTreeMap::new();
            for (key, plan) in together {
                by_customer.entry(key.customer_id.clone()).or_default().push((key, plan));
            }
            let writes: Vec<_> = by_customer.values().map(|keys| self.roll_customer(keys, run)).collect();
            stream::iter(writes).for_each_concurrent(self.options.concurrency, |write| write).await;
        }

        // 2. Reports.
        let reporting = match &self.stripe {
            None => {
                tracing::debug!("STRIPE_API_KEY is not set: usage history only, nothing reported to Stripe");
                Ok(Reporting::NotConfigured)
            }
            Some(stripe) => self.report_owed(stripe, now, deadline, &tally, &out_of_time).await,
        };

        // 3. Statistics: after billing, which comes first; whatever happens here is logged and
        // never the run's failure.
        match self.write_stats(stats.into_inner().expect("stats lock"), now, deadline).await {
            Ok(written) => tally.add(|r| r.stats_written = written),
            Err(e) => {
                tracing::warn!(error = %e, "could not update the overview statistics; usage and billing are unaffected")
            }
        }
        let reporting = reporting?;

        let mut report = tally.0.into_inner().expect("tally lock");
        report.reporting = Some(reporting);
        report.status =
            Some(if out_of_time.load(Ordering::Relaxed) { RunStatus::OutOfTime } else { RunStatus::Completed });
        Ok(report)
    }
}
