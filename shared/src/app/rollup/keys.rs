//! Step 1 of a run: the active keys read, planned (idle or busy) and rolled, one customer's
//! keys together in transactions of up to 100 items.

use super::stats::RunStats;
use super::{FINISHED_AFTER_S, ROLL_ATTEMPTS, Rollup, Tally};
use crate::domain::api_key::KeyId;
use crate::domain::plans::PlanId;
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::DayCount;
use crate::store::{
    CustomerStore, IdempotencyStore, KeyEdit, KeyRoll, KeyUsage, PlanStore, ROLL_DAYS_AT_ONCE, ROLL_ITEMS_AT_ONCE,
    Rolled, RollupStore, SETTLE_DAYS_AT_ONCE, StoreError, StoreResult, UsageStore,
};
use crate::stripe::api::MeterEvents;
use futures_util::StreamExt as _;
use futures_util::stream;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

impl<S, M> Rollup<S, M>
where
    S: RollupStore + UsageStore + PlanStore + CustomerStore + IdempotencyStore,
    M: MeterEvents,
{
    /// Reads a chunk of active keys, one Query each, concurrently, and decides each one's
    /// write ([`plan_key`]). A key that cannot be read stays marked for the next run.
    pub(super) async fn read_keys(&self, chunk: &[KeyId], run: KeysRun<'_>) -> Vec<(KeyUsage, KeyPlan)> {
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

    pub(super) async fn read_key(&self, key_id: &KeyId, run: KeysRun<'_>) -> Option<KeyUsage> {
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
    pub(super) async fn roll_customer(&self, keys: &[(KeyUsage, KeyPlan)], run: KeysRun<'_>) {
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
    pub(super) async fn send_rolls(&self, rolls: Vec<KeyRoll<'_>>, run: KeysRun<'_>) {
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
    pub(super) async fn write_batch(&self, rolls: &[KeyRoll<'_>], run: KeysRun<'_>) -> StoreResult<Vec<RollOutcome>> {
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
}

/// transaction, few enough that a run holds little and the reads stay fresh.
pub(super) const KEYS_AT_ONCE: usize = 5_000;

/// What the keys' part of a run shares.
#[derive(Clone, Copy)]
pub(super) struct KeysRun<'r> {
    pub(super) now: UnixTime,
    pub(super) deadline: Instant,
    pub(super) tally: &'r Tally,
    pub(super) stats: &'r Mutex<RunStats>,
    pub(super) meters: &'r Mutex<HashMap<PlanId, Option<String>>>,
    pub(super) out_of_time: &'r AtomicBool,
}

/// Counts a key's roll in the run's report and statistics.
pub(super) fn count_roll(roll: &KeyRoll<'_>, outcome: RollOutcome, run: KeysRun<'_>) {
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
pub(super) enum RollOutcome {
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
pub(super) struct KeyPlan {
    /// Days to roll, oldest first.
    pub(super) days: Vec<Day>,
    /// Finished days to remove from the key item.
    pub(super) finished: Vec<Day>,
    /// The activity marker goes too.
    pub(super) settle: bool,
}

impl KeyPlan {
    pub(super) fn edit(&self) -> KeyEdit<'_> {
        match (self.settle, self.finished.is_empty()) {
            (true, _) => KeyEdit::Settle(&self.finished),
            (false, false) => KeyEdit::RemoveDays(&self.finished),
            (false, true) => KeyEdit::Keep,
        }
    }
}

pub(super) fn plan_key(key: &KeyUsage, now: UnixTime) -> KeyPlan {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::CustomerId;
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
