//! What a rollup run is given (options, Stripe backoff) and what it answers (its report).

use serde::Serialize;
use std::time::Duration;

/// How hard to try Stripe before leaving the rest for the next run.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    /// The first wait after a 5xx or timeout; doubles per attempt.
    pub base: Duration,
    /// The first wait after a 429; doubles per attempt.
    pub rate_limited: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { attempts: 5, base: Duration::from_millis(500), rate_limited: Duration::from_secs(2) }
    }
}

#[derive(Debug, Clone)]
pub struct RollupOptions {
    /// The run stops taking new work when this is spent; the rest waits for the next run.
    pub budget: Duration,
    /// The lease outlives the budget by this much (the last item in flight, a Stripe timeout).
    pub lease_margin: Duration,
    /// Keys (and customers) worked on at once.
    pub concurrency: usize,
    pub backoff: Backoff,
    /// Part of every meter event identifier, so two deployments (tables) that share a Stripe
    /// account never produce the same identifier for their own increments. The table name.
    pub identifier_namespace: String,
}

impl Default for RollupOptions {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(240),
            lease_margin: Duration::from_secs(60),
            concurrency: 16,
            backoff: Backoff::default(),
            identifier_namespace: "tollgate".into(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything marked was processed (some items may still have been skipped: see counts).
    Completed,
    /// The budget ran out; markers left in place are picked up by the next run.
    OutOfTime,
    /// Another run holds the lease; this one did nothing.
    Busy,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::OutOfTime => "out_of_time",
            Self::Busy => "busy",
        }
    }
}

/// Whether reports reached Stripe in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporting {
    Ok,
    /// No `STRIPE_API_KEY`: history only; owed ledgers stay marked.
    NotConfigured,
    /// Stripe kept failing (429/5xx/timeouts) after the backoff; the rest waits.
    Unavailable,
}

/// What a run did, for logs and for `POST /internal/rollup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub status: Option<RunStatus>,
    pub reporting: Option<Reporting>,
    /// Keys marked active when the run started.
    pub keys_active: u64,
    /// Key-days written to history and ledgers.
    pub key_days_rolled: u64,
    /// Keys whose marker was removed (idle, and nothing counted while they were rolled).
    pub keys_settled: u64,
    /// Keys left marked for the next run: busy ones (used in the last minute, or denied since
    /// the last run), rolled but kept; and ones a write found changed, or that failed.
    pub keys_deferred: u64,
    /// Ledgers marked as owing when the reporting started.
    pub meters_owed: u64,
    /// Meter events Stripe accepted.
    pub events_accepted: u64,
    /// Resent events Stripe already had (a previous run's accept that was not recorded).
    pub events_already_delivered: u64,
    /// Allowed requests now reported (accepted or already delivered).
    pub units_reported: u64,
    /// Allowed requests written off (no Stripe customer id, or too old for Stripe).
    pub units_unbilled: u64,
    /// Customers skipped because Stripe rejected one of their events (4xx).
    pub customers_skipped: u64,
    /// Whether the overview's statistics took this run's usage in (`false`: nothing to add, or
    /// the write failed and was logged; usage and billing are unaffected either way).
    pub stats_written: bool,
    pub duration_ms: u64,
}
