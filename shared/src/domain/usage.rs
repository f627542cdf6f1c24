//! Usage: what a key did each UTC day, and what a customer owes each Billing Meter.

use super::customers::CustomerId;
use super::decision::Denial;
use super::time::Day;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDay {
    pub day: Day,
    pub count: DayCount,
}

/// How long daily history is kept.
pub const HISTORY_DAYS: i64 = 90;

pub const RECORDED_DENIALS: usize = Denial::RECORDED.len();

/// Allowed and denied requests in one day, and the denials by code ([`Denial::RECORDED`]
/// order; days counted before codes were recorded have `denied` above their sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCount {
    pub allowed: u64,
    pub denied: u64,
    pub denied_by: [u64; RECORDED_DENIALS],
}

impl DayCount {
    pub fn new(allowed: u64, denied: u64) -> Self {
        Self { allowed, denied, denied_by: [0; RECORDED_DENIALS] }
    }

    /// What `self` (newer) adds to `earlier`, or `None` if any count went down (the two were
    /// not read from the same history).
    pub fn since(self, earlier: DayCount) -> Option<DayCount> {
        let mut denied_by = [0; RECORDED_DENIALS];
        for (i, d) in denied_by.iter_mut().enumerate() {
            *d = self.denied_by[i].checked_sub(earlier.denied_by[i])?;
        }
        Some(DayCount {
            allowed: self.allowed.checked_sub(earlier.allowed)?,
            denied: self.denied.checked_sub(earlier.denied)?,
            denied_by,
        })
    }

    /// With `n` denials of `denial` (which must be one of [`Denial::RECORDED`]).
    pub fn with(mut self, denial: Denial, n: u64) -> Self {
        if let Some(i) = denial.recorded_index() {
            self.denied_by[i] += n;
        }
        self
    }

    pub fn add(&mut self, other: DayCount) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        for (mine, theirs) in self.denied_by.iter_mut().zip(other.denied_by) {
            *mine += theirs;
        }
    }

    pub fn is_zero(self) -> bool {
        self.allowed == 0 && self.denied == 0 && self.denied_by.iter().all(|&d| d == 0)
    }

    /// `(code, count)` for the codes with denials.
    pub fn denials_by_code(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Denial::RECORDED.iter().zip(self.denied_by).filter(|(_, n)| *n > 0).map(|(d, n)| (d.code(), n))
    }
}

/// One customer's usage of one meter on one day: the unit of the rollup's ledger. `meter` is
/// the plan's Billing Meter event name, `None` for keys whose plan has none (history only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeterDay {
    pub customer_id: CustomerId,
    pub day: Day,
    pub meter: Option<String>,
}

/// A report to Stripe that was decided but not yet confirmed: written before the request, so a
/// crashed run resends exactly this (same identifier, value, timestamp and Stripe customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReport {
    /// The units sent: the ledger's unsettled part when the report was decided.
    pub value: u64,
    /// The settled total (`reported + unbilled`) once Stripe has it.
    pub to: u64,
    pub identifier: String,
    pub timestamp: i64,
    pub stripe_customer_id: String,
}

/// The ledger of a [`MeterDay`]: totals rolled up from the keys, and how much of `allowed` has
/// been reported to Stripe (or written off as not billable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterLedger {
    pub usage: DayCount,
    /// Allowed requests Stripe has accepted.
    pub reported: u64,
    /// Allowed requests that will never be reported (no Stripe customer, or too old for
    /// Stripe); counted so `reported + unbilled` is the settled part of `allowed`.
    pub unbilled: u64,
    pub pending: Option<PendingReport>,
}

impl MeterLedger {
    /// Allowed requests neither reported nor written off.
    pub fn unsettled(&self) -> u64 {
        self.usage.allowed.saturating_sub(self.reported + self.unbilled)
    }
}
