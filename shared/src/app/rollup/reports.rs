//! Step 2 of a run: every owed meter ledger reported to Stripe Billing Meters, exactly once.

use super::{Reporting, Rollup, RollupError, Step, Tally, next_step};
use crate::domain::customers::CustomerId;
use crate::domain::plans::PlanId;
use crate::domain::time::UnixTime;
use crate::domain::usage::{MeterDay, PendingReport};
use crate::store::{CustomerStore, IdempotencyStore, PlanStore, RollupStore, StoreResult, UsageStore, Written};
use crate::stripe::api::{MeterEvent, MeterEventOutcome, MeterEvents, StripeError};
use futures_util::StreamExt as _;
use futures_util::stream;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

impl<S, M> Rollup<S, M>
where
    S: RollupStore + UsageStore + PlanStore + CustomerStore + IdempotencyStore,
    M: MeterEvents,
{
    /// The plan's Billing Meter. The listing read at the start of the run comes from an
    /// eventually consistent index; a plan it does not show (created moments ago) is read
    /// directly, so its usage is never booked as unmetered by mistake.
    pub(super) async fn meter_of(
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

    pub(super) async fn report_owed(
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
    pub(super) async fn report_customer(
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
    pub(super) async fn send(
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

pub(super) enum CustomerOutcome {
    Done,
    OutOfTime,
    StripeUnavailable,
}
