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

mod plan;
mod report;

pub use plan::{STRIPE_MAX_AGE_S, Step, event_timestamp, identifier, next_step};
pub use report::{Backoff, Reporting, RollupOptions, RunReport, RunStatus};

use crate::app::idempotent::{self, Job, Once, Scope};
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::plans::PlanId;
use crate::domain::stats::{NearQuota, TopCustomer, TopKey, merge_top_customers, merge_top_keys, update_near_quota};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, MeterDay, PendingReport};
use crate::store::schema::ROLLUP_LEASE_ID;
use crate::store::{
    CustomerStore, IdempotencyStore, KeyEdit, KeyRoll, KeyUsage, PlanStore, ROLL_DAYS_AT_ONCE, ROLL_ITEMS_AT_ONCE,
    Rolled, RollupStore, SETTLE_DAYS_AT_ONCE, StoreError, StoreResult, UsageStore, Written,
};
use crate::stripe::api::{MeterEvent, MeterEventOutcome, MeterEvents, StripeApi, StripeError};
use futures_util::StreamExt as _;
use futures_util::stream;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// What a run adds to the statistics, gathered as keys are rolled.
#[derive(Default)]
struct RunStats {
    days: BTreeMap<Day, DayStats>,
    /// Every key looked at: near its quota now, or not.
    near: Vec<(KeyId, Option<NearQuota>)>,
}

#[derive(Default)]
struct DayStats {
    /// The differences written to history this run.
    delta: DayCount,
    /// The day's exact total of each key rolled.
    keys: Vec<TopKey>,
    /// Customers whose day total grew.
    customers: BTreeSet<CustomerId>,
}

impl RunStats {
    fn key(&mut self, key: &KeyUsage, now: UnixTime) {
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

    fn rolled(&mut self, key: &KeyUsage, day: Day, delta: DayCount) {
        let d = self.days.entry(day).or_default();
        d.delta.add(delta);
        if delta.allowed > 0 {
            d.customers.insert(key.customer_id.clone());
        }
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

    /// Reads a chunk of active keys, one Query each, concurrently, and decides each one's
    /// write ([`plan_key`]). A key that cannot be read stays marked for the next run.
    async fn read_keys(&self, chunk: &[KeyId], run: KeysRun<'_>) -> Vec<(KeyUsage, KeyPlan)> {
        let KeysRun { now, stats, .. } = run;
        let reads: Vec<_> = chunk.iter().map(|key_id| self.read_key(key_id, run)).collect();
        let reads = stream::iter(reads)
            .buffer_unordered(self.options.concurrency)
            .filter_map(std::future::ready)
            .collect::<Vec<KeyUsage>>()
            .await;
        let mut stats = stats.lock().expect("stats lock");
        reads
            .into_iter()
            .map(|key| {
                stats.key(&key, now);
                let plan = plan_key(&key, now);
                (key, plan)
            })
            .collect()
    }

    async fn read_key(&self, key_id: &KeyId, run: KeysRun<'_>) -> Option<KeyUsage> {
        if Instant::now() >= run.deadline {
            run.out_of_time.store(true, Ordering::Relaxed);
            return None;
        }
        match self.store.key_usage(key_id).await {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(key_id = %key_id, error = %e, "could not read a key's usage; it stays marked");
                run.tally.add(|r| r.keys_deferred += 1);
                None
            }
        }
    }

    /// One customer's keys, as read, together: their days and settles in transactions of at
    /// most [`ROLL_ITEMS_AT_ONCE`] items with one ledger update per day and meter, one after
    /// the other, so that they never contend for the customer's ledger.
    async fn roll_customer(&self, keys: &[(KeyUsage, KeyPlan)], run: KeysRun<'_>) {
        let KeysRun { tally, meters, .. } = run;
        let mut key_meters = Vec::with_capacity(keys.len());
        for (key, _) in keys {
            let meter = match &key.plan {
                Some(plan) => self.meter_of(plan, meters).await,
                None => Ok(None),
            };
            key_meters.push(meter);
        }
        let mut batches: Vec<Vec<KeyRoll<'_>>> = vec![vec![]];
        let mut size = (0, BTreeSet::new());
        for ((key, plan), meter) in keys.iter().zip(&key_meters) {
            let meter = match meter {
                Ok(m) => m.as_deref(),
                Err(e) => {
                    tracing::warn!(key_id = %key.key_id, error = %e, "could not read the key's plan; it stays marked");
                    tally.add(|r| r.keys_deferred += 1);
                    continue;
                }
            };
            let roll = KeyRoll { key, days: &plan.days, meter, edit: plan.edit() };
            // Its items, and the ledgers the batch does not update yet.
            let cost = |ledgers: &BTreeSet<_>| roll.items() + roll.ledgers().filter(|l| !ledgers.contains(l)).count();
            if batches.last().is_some_and(|b| !b.is_empty()) && size.0 + cost(&size.1) > ROLL_ITEMS_AT_ONCE {
                batches.push(vec![]);
                size = (0, BTreeSet::new());
            }
            size.0 += cost(&size.1);
            size.1.extend(roll.ledgers());
            batches.last_mut().expect("a batch").push(roll);
        }
        for batch in batches {
            if !batch.is_empty() {
                self.send_rolls(batch, run).await;
            }
        }
    }

    /// Sends one write of `rolls` (one customer's) and counts what each came to. A write that
    /// fails outright (not a cancellation) is tried again one key at a time, so that one bad
    /// key does not hold its customer's others back run after run.
    async fn send_rolls(&self, rolls: Vec<KeyRoll<'_>>, run: KeysRun<'_>) {
        if Instant::now() >= run.deadline {
            tracing::info!(keys = rolls.len(), "out of time; the next run rolls the rest");
            run.tally.add(|r| r.keys_deferred += rolls.len() as u64);
            run.out_of_time.store(true, Ordering::Relaxed);
            return;
        }
        let results = match self.write_batch(&rolls, run).await {
            Err(e) if rolls.len() > 1 => {
                tracing::warn!(keys = rolls.len(), error = %e, "a rollup write failed; its keys go one at a time");
                let mut each = Vec::with_capacity(rolls.len());
                for roll in &rolls {
                    each.push(self.write_batch(std::slice::from_ref(roll), run).await.map(|o| o[0]));
                }
                each
            }
            Err(e) => vec![Err(e)],
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        };
        for (roll, result) in rolls.iter().zip(results) {
            match result {
                Ok(outcome) => count_roll(roll, outcome, run),
                Err(e) => {
                    tracing::warn!(key_id = %roll.key.key_id, error = %e, "could not roll a key up; it stays marked");
                    run.tally.add(|r| r.keys_deferred += 1);
                }
            }
        }
    }

    /// One rollup write, sent again: without the rolls whose items changed since they were
    /// read (a key that settled finds itself counted meanwhile: again without the settle), and
    /// after a cancellation by conflict or throttling. Safe to repeat: the usage-day items
    /// guard it. What each roll came to.
    async fn write_batch(&self, rolls: &[KeyRoll<'_>], run: KeysRun<'_>) -> StoreResult<Vec<RollOutcome>> {
        let mut out = vec![RollOutcome::Written; rolls.len()];
        let mut current: Vec<KeyRoll<'_>> = rolls.to_vec();
        let mut index: Vec<usize> = (0..rolls.len()).collect();
        let mut attempt = 1;
        let mut first = true;
        while !current.is_empty() {
            if !std::mem::take(&mut first) && Instant::now() >= run.deadline {
                // Not written: the next run rolls them.
                index.iter().for_each(|&i| out[i] = RollOutcome::Stale);
                run.out_of_time.store(true, Ordering::Relaxed);
                break;
            }
            match self.store.roll_keys(&current, run.now).await {
                Ok(Rolled::Applied) => break,
                Ok(Rolled::Stale(failed)) if failed.is_empty() => {
                    index.iter().for_each(|&i| out[i] = RollOutcome::Stale);
                    break;
                }
                Ok(Rolled::Stale(failed)) => {
                    let mut keep = vec![];
                    for (j, (roll, i)) in current.iter().zip(&index).enumerate() {
                        if !failed.contains(&j) {
                            keep.push((*roll, *i));
                        } else if matches!(roll.edit, KeyEdit::Settle(_)) && !roll.days.is_empty() {
                            // Counted since the read: its days are still to roll, its marker stays.
                            out[*i] = RollOutcome::Busy;
                            keep.push((KeyRoll { edit: KeyEdit::Keep, ..*roll }, *i));
                        } else {
                            out[*i] = RollOutcome::Stale;
                        }
                    }
                    (current, index) = keep.into_iter().unzip();
                }
                Err(StoreError::Unavailable(e)) if attempt < ROLL_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, keys = current.len(), "rollup write cancelled; retrying");
                    let jitter = u64::from(rand::random::<u8>() % 50);
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt) + jitter)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Adds what the run rolled to the statistics: per day, the totals by the differences, and
    /// the top lists with every rolled key's and grown customer's exact day total; then the
    /// near-quota list. One Query, one write per day that changed, one read per customer
    /// whose day grew. `Ok(false)` when there was nothing to add.
    async fn write_stats(&self, run: RunStats, now: UnixTime, deadline: Instant) -> StoreResult<bool> {
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

    /// The plan's Billing Meter. The listing read at the start of the run comes from an
    /// eventually consistent index; a plan it does not show (created moments ago) is read
    /// directly, so its usage is never booked as unmetered by mistake.
    async fn meter_of(
        &self,
        plan: &PlanId,
        meters: &Mutex<HashMap<PlanId, Option<String>>>,
    ) -> StoreResult<Option<String>> {
        if let Some(m) = meters.lock().expect("meters lock").get(plan) {
            return Ok(m.clone());
        }
        let meter = self.store.get_plan(plan).await?.and_then(|p| p.meter_event_name);
        meters.lock().expect("meters lock").insert(plan.clone(), meter.clone());
        Ok(meter)
    }

    async fn report_owed(
        &self,
        stripe: &M,
        now: UnixTime,
        deadline: Instant,
        tally: &Tally,
        out_of_time: &AtomicBool,
    ) -> Result<Reporting, RollupError> {
        let mut by_customer: BTreeMap<CustomerId, Vec<MeterDay>> = BTreeMap::new();
        let owed = self.store.owed_meters().await?;
        tally.add(|r| r.meters_owed = owed.len() as u64);
        for m in owed {
            by_customer.entry(m.customer_id.clone()).or_default().push(m);
        }
        let unavailable = AtomicBool::new(false);
        stream::iter(by_customer)
            .for_each_concurrent(self.options.concurrency, |(customer_id, mut days)| {
                let unavailable = &unavailable;
                async move {
                    days.sort();
                    let outcome = self.report_customer(stripe, &customer_id, &days, now, deadline, tally).await;
                    match outcome {
                        Ok(CustomerOutcome::Done) => {}
                        Ok(CustomerOutcome::OutOfTime) => out_of_time.store(true, Ordering::Relaxed),
                        Ok(CustomerOutcome::StripeUnavailable) => unavailable.store(true, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(customer_id = %customer_id, error = %e, "could not report usage; retried next run")
                        }
                    }
                }
            })
            .await;
        Ok(if unavailable.load(Ordering::Relaxed) { Reporting::Unavailable } else { Reporting::Ok })
    }

    /// One customer's owed ledgers, oldest first. Stops at the first rejection (the customer
    /// is skipped until the next run) or when Stripe stays unavailable.
    async fn report_customer(
        &self,
        stripe: &M,
        customer_id: &CustomerId,
        days: &[MeterDay],
        now: UnixTime,
        deadline: Instant,
        tally: &Tally,
    ) -> StoreResult<CustomerOutcome> {
        let stripe_customer_id = self.store.get_customer(customer_id).await?.and_then(|c| c.stripe_customer_id);
        let namespace = &self.options.identifier_namespace;
        for meter_day in days {
            let meter = meter_day.meter.as_deref().unwrap_or_default();
            // At most two reports per ledger and run: a pending one resent, then what
            // arrived after it was decided.
            for _ in 0..2 {
                if Instant::now() >= deadline {
                    return Ok(CustomerOutcome::OutOfTime);
                }
                let Some(ledger) = self.store.meter_ledger(meter_day).await? else { break };
                let (pending, resend) = match next_step(
                    namespace,
                    meter_day,
                    &ledger,
                    stripe_customer_id.as_deref(),
                    now,
                ) {
                    Step::ClearMarker => {
                        self.store.write_off(meter_day, &ledger).await?;
                        break;
                    }
                    Step::Abandon(pending) => {
                        if self.store.abandon_report(meter_day, &pending).await? == Written::Applied {
                            tracing::error!(
                                customer_id = %customer_id, meter, day = %meter_day.day, units = pending.value,
                                identifier = %pending.identifier,
                                "a pending meter event is older than Stripe accepts (35 days): written off as unbilled"
                            );
                            tally.add(|r| r.units_unbilled += pending.value);
                        }
                        continue;
                    }
                    Step::Resend(pending) => (pending, true),
                    Step::WriteOff { units, reason } => {
                        if self.store.write_off(meter_day, &ledger).await? == Written::Applied && units > 0 {
                            tracing::warn!(
                                customer_id = %meter_day.customer_id, meter, day = %meter_day.day, units,
                                reason = reason.unwrap_or_default(), "usage not reported to Stripe: written off as unbilled"
                            );
                            tally.add(|r| r.units_unbilled += units);
                        }
                        break;
                    }
                    Step::Report(pending) => match self.store.begin_report(meter_day, &ledger, &pending).await? {
                        Written::Applied => (pending, false),
                        Written::Stale => break,
                    },
                };
                match self.send(stripe, meter, &pending, deadline).await {
                    Ok(outcome) => {
                        if self.store.commit_report(meter_day, &pending).await? == Written::Applied {
                            tally.add(|r| {
                                r.units_reported += pending.value;
                                match outcome {
                                    MeterEventOutcome::Accepted => r.events_accepted += 1,
                                    MeterEventOutcome::AlreadyDelivered => r.events_already_delivered += 1,
                                }
                            });
                        } else {
                            // Only a concurrent run could have; it committed this same report.
                            tracing::warn!(customer_id = %customer_id, day = %meter_day.day, "report already committed");
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "Stripe unavailable after retries; the rest is reported next run");
                        return Ok(CustomerOutcome::StripeUnavailable);
                    }
                    Err(e) => {
                        tracing::error!(
                            customer_id = %customer_id, meter, day = %meter_day.day, identifier = %pending.identifier,
                            error = %e, "Stripe rejected a meter event; this customer is skipped until the next run"
                        );
                        tally.add(|r| r.customers_skipped += 1);
                        return Ok(CustomerOutcome::Done);
                    }
                }
                if !resend {
                    break;
                }
            }
        }
        Ok(CustomerOutcome::Done)
    }

    /// Sends one meter event, backing off on 429 and retrying 5xx and timeouts, never waiting
    /// past the run's deadline.
    async fn send(
        &self,
        stripe: &M,
        meter: &str,
        pending: &PendingReport,
        deadline: Instant,
    ) -> Result<MeterEventOutcome, StripeError> {
        let event = MeterEvent {
            event_name: meter,
            stripe_customer_id: &pending.stripe_customer_id,
            value: pending.value,
            timestamp: pending.timestamp,
            identifier: &pending.identifier,
        };
        let b = self.options.backoff;
        let mut attempt = 0;
        loop {
            let err = match stripe.send_meter_event(&event).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if e.is_retryable() && attempt + 1 < b.attempts => e,
                Err(e) => return Err(e),
            };
            let first = if matches!(err, StripeError::RateLimited) { b.rate_limited } else { b.base };
            let wait = first * 2u32.saturating_pow(attempt);
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            tracing::info!(error = %err, wait_ms = wait.as_millis() as u64, "retrying a meter event");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Keys read before they are written: enough that a customer's keys mostly meet in one
/// transaction, few enough that a run holds little and the reads stay fresh.
const KEYS_AT_ONCE: usize = 5_000;

/// What the keys' part of a run shares.
#[derive(Clone, Copy)]
struct KeysRun<'r> {
    now: UnixTime,
    deadline: Instant,
    tally: &'r Tally,
    stats: &'r Mutex<RunStats>,
    meters: &'r Mutex<HashMap<PlanId, Option<String>>>,
    out_of_time: &'r AtomicBool,
}

/// Counts a key's roll in the run's report and statistics.
fn count_roll(roll: &KeyRoll<'_>, outcome: RollOutcome, run: KeysRun<'_>) {
    let KeysRun { tally, stats, .. } = run;
    if outcome != RollOutcome::Stale {
        let mut stats = stats.lock().expect("stats lock");
        let mut rolled = 0;
        for &day in roll.days {
            if let Some(delta) = roll.delta(day) {
                stats.rolled(roll.key, day, delta);
                rolled += 1;
            }
        }
        tally.add(|r| r.key_days_rolled += rolled);
    }
    if outcome == RollOutcome::Written && matches!(roll.edit, KeyEdit::Settle(_)) {
        tally.add(|r| r.keys_settled += 1);
    } else {
        // Busy, or changed since it was read: the marker stays and the next run looks again.
        tally.add(|r| r.keys_deferred += 1);
    }
}

/// What a key's roll came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollOutcome {
    /// As planned.
    Written,
    /// Its days rolled, its settle left out: counted since it was read.
    Busy,
    /// Nothing: its usage days changed since they were read (another run), or its guard failed
    /// with nothing to roll. The next run looks again.
    Stale,
}

/// A key is busy while it allowed a request this recently: settling it in the same write as
/// its roll would most likely fail the settle's guard (its lifetime totals) and so the roll.
pub const BUSY_S: i64 = 60;

/// What one run writes for a key (see [`plan_key`] and `Rollup::roll_customer`).
#[derive(Debug, PartialEq, Eq)]
struct KeyPlan {
    /// Days to roll, oldest first.
    days: Vec<Day>,
    /// Finished days to remove from the key item.
    finished: Vec<Day>,
    /// The activity marker goes too.
    settle: bool,
}

impl KeyPlan {
    fn edit(&self) -> KeyEdit<'_> {
        match (self.settle, self.finished.is_empty()) {
            (true, _) => KeyEdit::Settle(&self.finished),
            (false, false) => KeyEdit::RemoveDays(&self.finished),
            (false, true) => KeyEdit::Keep,
        }
    }
}

fn plan_key(key: &KeyUsage, now: UnixTime) -> KeyPlan {
    let mut changed = vec![];
    // Finished days (ended over FINISHED_AFTER_S ago): rolled already, or rolled by this write.
    let mut rolled_finished = vec![];
    let mut new_denials = false;
    for &day in key.live.keys() {
        let delta = key.since_rolled(day).unwrap_or_else(|| {
            // Cannot happen while live counters outlive their day by FINISHED_AFTER_S (a hot
            // key's count written later goes to the day it is written on).
            tracing::warn!(key_id = %key.key_id, day = %day, "live counters below the rolled history; left as is");
            DayCount::default()
        });
        let finished = day.next().start().plus(FINISHED_AFTER_S) <= now;
        if delta.is_zero() {
            if finished {
                rolled_finished.push((day, true));
            }
        } else {
            new_denials |= delta.denied > 0;
            if finished {
                rolled_finished.push((day, false));
            }
            changed.push(day);
        }
    }
    let busy = new_denials || key.last_used.is_some_and(|t| t.plus(BUSY_S) > now);
    if busy {
        let ready: Vec<Day> = rolled_finished
            .iter()
            .filter(|(_, was_rolled)| *was_rolled)
            .map(|(d, _)| *d)
            .take(SETTLE_DAYS_AT_ONCE)
            .collect();
        if !ready.is_empty() {
            return KeyPlan { days: vec![], finished: ready, settle: false };
        }
        changed.truncate(ROLL_DAYS_AT_ONCE);
        return KeyPlan { days: changed, finished: vec![], settle: false };
    }
    let all_rolled = changed.len() <= ROLL_DAYS_AT_ONCE;
    changed.truncate(ROLL_DAYS_AT_ONCE);
    let days = changed;
    // Removable now: finished days rolled before, or in this write.
    let removable: Vec<Day> =
        rolled_finished.iter().filter(|(d, was_rolled)| *was_rolled || days.contains(d)).map(|(d, _)| *d).collect();
    let settle = all_rolled && removable.len() <= SETTLE_DAYS_AT_ONCE && removable.len() == rolled_finished.len();
    let finished = removable.into_iter().take(SETTLE_DAYS_AT_ONCE).collect();
    KeyPlan { days, finished, settle }
}

enum CustomerOutcome {
    Done,
    OutOfTime,
    StripeUnavailable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::Denial;

    fn day(iso: &str) -> Day {
        Day::parse_iso(iso).unwrap()
    }

    fn at(t: &str) -> UnixTime {
        UnixTime::parse_rfc3339(t).unwrap()
    }

    /// A key with `live` counters, `rolled` history, last used at `last_used`.
    fn key(live: &[(&str, DayCount)], rolled: &[(&str, DayCount)], last_used: Option<&str>) -> KeyUsage {
        KeyUsage {
            key_id: KeyId::generate(1),
            customer_id: CustomerId::parse("acme").unwrap(),
            plan: None,
            n_allowed: Some(1),
            n_denied: None,
            last_used: last_used.map(at),
            live: live.iter().map(|(d, c)| (day(d), *c)).collect(),
            rolled: rolled.iter().map(|(d, c)| (day(d), *c)).collect(),
            quota: None,
        }
    }

    const NOW: &str = "2026-12-06T12:00:00Z";

    /// What each day the plan rolls adds.
    fn deltas(key: &KeyUsage, plan: &KeyPlan) -> Vec<DayCount> {
        let roll = KeyRoll { key, days: &plan.days, meter: None, edit: plan.edit() };
        plan.days.iter().filter_map(|d| roll.delta(*d)).collect()
    }

    #[test]
    fn an_idle_key_is_rolled_and_settled_in_one_write() {
        let k = key(
            &[("2026-12-05", DayCount::new(5, 0)), ("2026-12-06", DayCount::new(3, 0))],
            &[("2026-12-05", DayCount::new(4, 0))],
            Some("2026-12-06T11:58:59Z"),
        );
        let plan = plan_key(&k, at(NOW));
        assert_eq!(plan.days, vec![day("2026-12-05"), day("2026-12-06")]);
        assert_eq!(deltas(&k, &plan), vec![DayCount::new(1, 0), DayCount::new(3, 0)]);
        // Yesterday ended over an hour ago and is rolled by this same write: it goes with it.
        assert_eq!(plan.edit(), KeyEdit::Settle(&[day("2026-12-05")]));
        // Never used, nothing new: the marker alone.
        let quiet = key(&[("2026-12-06", DayCount::new(3, 0))], &[("2026-12-06", DayCount::new(3, 0))], None);
        let plan = plan_key(&quiet, at(NOW));
        assert!(plan.days.is_empty());
        assert_eq!(plan.edit(), KeyEdit::Settle(&[]));
    }

    #[test]
    fn a_key_used_this_minute_or_denied_since_the_last_run_keeps_its_marker() {
        let used = key(&[("2026-12-06", DayCount::new(3, 0))], &[], Some("2026-12-06T11:59:30Z"));
        let plan = plan_key(&used, at(NOW));
        assert_eq!((plan.days.clone(), plan.edit()), (vec![day("2026-12-06")], KeyEdit::Keep));
        // Denied since the last run, though its last allowed request was long ago: its
        // denial counts would most likely fail the settle's guard, and with it the roll.
        let denied = DayCount::new(3, 2).with(Denial::RateLimited, 2);
        let hammered =
            key(&[("2026-12-06", denied)], &[("2026-12-06", DayCount::new(3, 0))], Some("2026-12-01T00:00:00Z"));
        let plan = plan_key(&hammered, at(NOW));
        assert_eq!(deltas(&hammered, &plan), vec![DayCount::new(0, 2).with(Denial::RateLimited, 2)]);
        assert_eq!(plan.edit(), KeyEdit::Keep);
    }

    #[test]
    fn a_busy_keys_finished_days_go_in_a_run_of_their_own() {
        let busy = key(
            &[("2026-12-05", DayCount::new(5, 0)), ("2026-12-06", DayCount::new(9, 0))],
            &[("2026-12-05", DayCount::new(5, 0)), ("2026-12-06", DayCount::new(3, 0))],
            Some("2026-12-06T11:59:59Z"),
        );
        let plan = plan_key(&busy, at(NOW));
        assert!(plan.days.is_empty(), "today's 6 wait for the next run");
        assert_eq!(plan.edit(), KeyEdit::RemoveDays(&[day("2026-12-05")]));
        // Before the day has been over an hour, it is not finished: today's counts roll.
        let plan = plan_key(&busy, at("2026-12-06T00:59:59Z"));
        assert_eq!((plan.days.clone(), plan.edit()), (vec![day("2026-12-06")], KeyEdit::Keep));
        // A finished day with counts not yet rolled is rolled first, removed the run after.
        let late = key(
            &[("2026-12-05", DayCount::new(6, 0)), ("2026-12-06", DayCount::new(9, 0))],
            &[("2026-12-05", DayCount::new(5, 0))],
            Some("2026-12-06T11:59:59Z"),
        );
        let plan = plan_key(&late, at(NOW));
        assert_eq!((plan.days.clone(), plan.edit()), (vec![day("2026-12-05"), day("2026-12-06")], KeyEdit::Keep));
    }

    #[test]
    fn a_long_outage_is_caught_up_a_bounded_number_of_days_a_run() {
        let start = day("2026-10-01");
        let live: Vec<(String, DayCount)> = (0..40).map(|i| (start.minus(-i).iso(), DayCount::new(1, 0))).collect();
        let live: Vec<(&str, DayCount)> = live.iter().map(|(d, c)| (d.as_str(), *c)).collect();
        let k = key(&live, &[], None);
        let plan = plan_key(&k, at(NOW));
        assert_eq!(plan.days.len(), ROLL_DAYS_AT_ONCE);
        assert_eq!(plan.days[0], start);
        // Not all rolled: the marker stays; the rolled finished days go, a write's worth.
        assert_eq!(plan.edit(), KeyEdit::RemoveDays(&plan.days[..SETTLE_DAYS_AT_ONCE]));
        // Everything rolled but more finished days than one write removes.
        let rolled: Vec<(&str, DayCount)> = live.clone();
        let k = key(&live, &rolled, None);
        let plan = plan_key(&k, at(NOW));
        assert!(plan.days.is_empty());
        assert_eq!(plan.finished.len(), SETTLE_DAYS_AT_ONCE);
        assert!(matches!(plan.edit(), KeyEdit::RemoveDays(_)));
        let few = key(&live[26..], &rolled[26..], None);
        assert!(matches!(plan_key(&few, at(NOW)).edit(), KeyEdit::Settle(d) if d.len() == 14));
    }
}
