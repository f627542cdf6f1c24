//! The rollup's reporting rules, pure: what to do next with one owed meter ledger, the meter
//! event's timestamp and its identifier. The run (`super`) reads the ledger, asks
//! [`next_step`], and carries the step out against the store and Stripe.

use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{MeterDay, MeterLedger, PendingReport};
use sha2::{Digest, Sha256};

/// Stripe accepts meter events from the past 35 days; older usage is written off, with this
/// margin.
pub const STRIPE_MAX_AGE_S: i64 = 35 * 86_400 - 3_600;

/// What to do next with one owed ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Only metered ledgers are ever marked as owing: clear a stray marker.
    ClearMarker,
    /// A pending report older than Stripe accepts (the rollup was down, or a rejection was
    /// fixed too late): it can never be delivered; written off so the ledger moves on.
    Abandon(PendingReport),
    /// Decided earlier and not confirmed (a crash, or Stripe unavailable): resent exactly as
    /// it was decided.
    Resend(PendingReport),
    /// Settled without a report: `units` written off as unbilled for `reason` (none when
    /// nothing is unsettled).
    WriteOff { units: u64, reason: Option<&'static str> },
    /// Record this report on the ledger, then send it.
    Report(PendingReport),
}

/// The next step for `ledger` at `now`, reporting as `stripe_customer_id` (if the customer has
/// one) under the deployment's identifier `namespace`.
pub fn next_step(
    namespace: &str,
    meter_day: &MeterDay,
    ledger: &MeterLedger,
    stripe_customer_id: Option<&str>,
    now: UnixTime,
) -> Step {
    let Some(meter) = meter_day.meter.as_deref() else { return Step::ClearMarker };
    match &ledger.pending {
        Some(pending) if pending.timestamp < now.secs() - STRIPE_MAX_AGE_S => return Step::Abandon(pending.clone()),
        Some(pending) => return Step::Resend(pending.clone()),
        None => {}
    }
    let unsettled = ledger.unsettled();
    let timestamp = event_timestamp(meter_day.day, now);
    let reason = match stripe_customer_id {
        _ if unsettled == 0 => return Step::WriteOff { units: 0, reason: None },
        None => Some("the customer has no Stripe customer id"),
        Some(_) if timestamp < now.secs() - STRIPE_MAX_AGE_S => {
            Some("older than Stripe accepts meter events (35 days)")
        }
        Some(_) => None,
    };
    if reason.is_some() {
        return Step::WriteOff { units: unsettled, reason };
    }
    let settled = ledger.reported + ledger.unbilled;
    Step::Report(PendingReport {
        value: unsettled,
        to: settled + unsettled,
        identifier: identifier(namespace, meter_day, meter, settled, settled + unsettled),
        timestamp,
        stripe_customer_id: stripe_customer_id.unwrap_or_default().to_owned(),
    })
}

/// When a day's usage happened, for Stripe: `now` for today, the day's last second for an
/// earlier day (so late-reported usage stays in its day; a billing period that starts at an
/// anchor time other than midnight UTC may still split a day's usage across two periods).
pub fn event_timestamp(day: Day, now: UnixTime) -> i64 {
    now.secs().min(day.next().start().secs() - 1)
}

/// The meter event identifier for moving a ledger's settled total from `from` to `to`:
/// deterministic, so a resend of the same increment is recognised, and distinct for every
/// increment and deployment (`namespace`). At most 100 characters, as Stripe requires.
pub fn identifier(namespace: &str, meter_day: &MeterDay, meter: &str, from: u64, to: u64) -> String {
    let mut h = Sha256::new();
    let (day, from, to) = (meter_day.day.compact(), from.to_string(), to.to_string());
    for part in [namespace, meter_day.customer_id.as_str(), meter, &day, &from, &to] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("tg_{}", &hex::encode(h.finalize())[..48])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::CustomerId;
    use crate::domain::usage::DayCount;

    fn meter_day(customer: &str) -> MeterDay {
        MeterDay {
            customer_id: CustomerId::parse(customer).unwrap(),
            day: Day::parse_iso("2026-11-20").unwrap(),
            meter: Some("api_requests".into()),
        }
    }

    fn at(t: &str) -> UnixTime {
        UnixTime::parse_rfc3339(t).unwrap()
    }

    fn ledger(allowed: u64, reported: u64, unbilled: u64) -> MeterLedger {
        MeterLedger { usage: DayCount::new(allowed, 0), reported, unbilled, pending: None }
    }

    #[test]
    fn identifiers_are_deterministic_per_increment_and_short() {
        let a = identifier("t", &meter_day("cus_a"), "api_requests", 0, 10);
        assert_eq!(a, identifier("t", &meter_day("cus_a"), "api_requests", 0, 10));
        assert_ne!(a, identifier("t", &meter_day("cus_a"), "api_requests", 0, 11));
        assert_ne!(a, identifier("t", &meter_day("cus_a"), "api_requests", 10, 20));
        assert_ne!(a, identifier("t", &meter_day("cus_b"), "api_requests", 0, 10));
        assert_ne!(a, identifier("t", &meter_day("cus_a"), "other", 0, 10));
        assert_ne!(a, identifier("other-table", &meter_day("cus_a"), "api_requests", 0, 10));
        assert!(a.len() <= 100 && a.starts_with("tg_"));
    }

    #[test]
    fn past_days_are_stamped_with_their_last_second() {
        let day = Day::parse_iso("2026-11-20").unwrap();
        let now = at("2026-11-20T12:00:00Z");
        assert_eq!(event_timestamp(day, now), now.secs());
        assert_eq!(event_timestamp(day, at("2026-11-22T01:00:00Z")), at("2026-11-20T23:59:59Z").secs());
    }

    #[test]
    fn the_unsettled_part_is_reported_from_the_settled_total_on() {
        let day = meter_day("acme");
        let now = at("2026-11-21T10:00:00Z");
        let Step::Report(p) = next_step("t", &day, &ledger(10, 4, 2), Some("cus_A"), now) else { panic!() };
        assert_eq!((p.value, p.to, p.stripe_customer_id.as_str()), (4, 10, "cus_A"));
        assert_eq!(p.identifier, identifier("t", &day, "api_requests", 6, 10));
        assert_eq!(p.timestamp, at("2026-11-20T23:59:59Z").secs());
    }

    #[test]
    fn usage_that_cannot_be_billed_is_written_off_with_its_reason() {
        let day = meter_day("acme");
        let now = at("2026-11-21T10:00:00Z");
        assert_eq!(
            next_step("t", &day, &ledger(5, 5, 0), Some("cus_A"), now),
            Step::WriteOff { units: 0, reason: None }
        );
        let no_customer = next_step("t", &day, &ledger(5, 0, 0), None, now);
        assert_eq!(no_customer, Step::WriteOff { units: 5, reason: Some("the customer has no Stripe customer id") });
        let too_old = next_step("t", &day, &ledger(5, 0, 0), Some("cus_A"), at("2026-12-30T00:00:00Z"));
        assert!(matches!(too_old, Step::WriteOff { units: 5, reason: Some(r) } if r.contains("35 days")));
    }

    #[test]
    fn a_pending_report_is_resent_as_decided_until_stripe_would_refuse_it() {
        let day = meter_day("acme");
        let pending = PendingReport {
            value: 3,
            to: 3,
            identifier: "tg_x".into(),
            timestamp: at("2026-11-20T23:59:59Z").secs(),
            stripe_customer_id: "cus_A".into(),
        };
        let owed = MeterLedger { pending: Some(pending.clone()), ..ledger(9, 0, 0) };
        assert_eq!(
            next_step("t", &day, &owed, Some("cus_A"), at("2026-11-21T10:00:00Z")),
            Step::Resend(pending.clone())
        );
        assert_eq!(next_step("t", &day, &owed, Some("cus_A"), at("2026-12-30T00:00:00Z")), Step::Abandon(pending));
        let unmetered = MeterDay { meter: None, ..day };
        assert_eq!(next_step("t", &unmetered, &owed, Some("cus_A"), at("2026-11-21T10:00:00Z")), Step::ClearMarker);
    }
}
