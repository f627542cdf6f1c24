//! Limit arithmetic: fixed windows, calendar periods, remaining counts and Retry-After.
//! Pure functions of "now", so every rule is testable without a clock or a database.

use super::plans::{Period, Quota, RateLimit};
use super::time::{Day, UnixTime};

/// End (exclusive) of the fixed window containing `now`. Windows are aligned to the epoch so
/// every process computes the same boundaries without coordination.
pub fn window_end(now: UnixTime, window_s: u64) -> UnixTime {
    let w = window_s.max(1) as i64;
    UnixTime((now.secs().div_euclid(w) + 1) * w)
}

/// Start of the fixed window containing `now`.
pub fn window_start(now: UnixTime, window_s: u64) -> UnixTime {
    window_end(now, window_s).plus(-(window_s.max(1) as i64))
}

/// End (exclusive) of the UTC calendar period containing `now`.
pub fn period_end(now: UnixTime, period: Period) -> UnixTime {
    match period {
        Period::Day => now.day().next().start(),
        Period::Month => now.day().next_month_start().start(),
    }
}

/// First day of the UTC calendar period containing `now`.
pub fn period_start(now: UnixTime, period: Period) -> Day {
    let day = now.day();
    match period {
        Period::Day => day,
        Period::Month => day.minus(i64::from(day.day_of_month()) - 1),
    }
}

/// Length in seconds of the UTC calendar period containing `now` (a month varies).
pub fn period_length(now: UnixTime, period: Period) -> u64 {
    match period {
        Period::Day => 86_400,
        Period::Month => {
            let day = now.day();
            let start = day.minus(i64::from(day.day_of_month()) - 1);
            start.start().until(day.next_month_start().start())
        }
    }
}

/// Seconds a client should wait before a request can succeed again: at least 1, so that a
/// reset landing in the current second is never advertised as "retry now".
pub fn retry_after(now: UnixTime, reset: UnixTime) -> u64 {
    now.until(reset).max(1)
}

/// The state of one limit after a decision, as headers and the usage endpoint show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    pub limit: u64,
    pub used: u64,
    /// When the current window or period ends.
    pub reset: UnixTime,
    /// The window length, or for a quota the length of the current calendar period.
    pub window_s: u64,
}

impl LimitStatus {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// The state a rate limit shows for `count` requests in the window ending at `end`; a
    /// window that has already ended shows as fresh.
    pub fn for_rate(rate: &RateLimit, end: UnixTime, count: u64, now: UnixTime) -> Self {
        let (used, reset) = if end > now { (count, end) } else { (0, window_end(now, rate.window_s)) };
        Self { limit: rate.limit, used, reset, window_s: rate.window_s }
    }

    /// The state a quota shows for `count` requests in the period ending at `end`.
    pub fn for_quota(quota: &Quota, end: UnixTime, count: u64, now: UnixTime) -> Self {
        let (used, reset) = if end > now { (count, end) } else { (0, period_end(now, quota.period)) };
        Self { limit: quota.limit, used, reset, window_s: period_length(now, quota.period) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> UnixTime {
        UnixTime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn windows_are_aligned_and_half_open() {
        let now = at("2026-11-23T10:00:37Z");
        assert_eq!(window_end(now, 60), at("2026-11-23T10:01:00Z"));
        assert_eq!(window_start(now, 60), at("2026-11-23T10:00:00Z"));
        // The boundary second belongs to the next window.
        assert_eq!(window_end(at("2026-11-23T10:01:00Z"), 60), at("2026-11-23T10:02:00Z"));
        assert_eq!(window_end(now, 1), now.plus(1));
        assert_eq!(window_end(now, 3600), at("2026-11-23T11:00:00Z"));
    }

    #[test]
    fn periods_follow_utc_calendar() {
        let now = at("2026-11-23T23:59:59Z");
        assert_eq!(period_end(now, Period::Day), at("2026-11-24T00:00:00Z"));
        assert_eq!(period_end(now, Period::Month), at("2026-12-01T00:00:00Z"));
        assert_eq!(period_end(at("2026-12-15T00:00:00Z"), Period::Month), at("2027-01-01T00:00:00Z"));
        assert_eq!(period_end(at("2028-02-01T00:00:00Z"), Period::Month), at("2028-03-01T00:00:00Z"));
        assert_eq!(period_start(now, Period::Month).iso(), "2026-11-01");
        assert_eq!(period_start(now, Period::Day).iso(), "2026-11-23");
    }

    #[test]
    fn period_lengths() {
        assert_eq!(period_length(at("2026-11-23T10:00:00Z"), Period::Day), 86_400);
        assert_eq!(period_length(at("2026-11-23T10:00:00Z"), Period::Month), 30 * 86_400);
        assert_eq!(period_length(at("2028-02-10T00:00:00Z"), Period::Month), 29 * 86_400);
        assert_eq!(period_length(at("2026-12-31T23:59:59Z"), Period::Month), 31 * 86_400);
    }

    #[test]
    fn retry_after_is_never_zero() {
        let now = at("2026-11-23T10:00:37Z");
        assert_eq!(retry_after(now, at("2026-11-23T10:01:00Z")), 23);
        assert_eq!(retry_after(now, now), 1);
        assert_eq!(retry_after(now, now.plus(-5)), 1);
    }

    #[test]
    fn status_of_an_expired_window_is_fresh() {
        let now = at("2026-11-23T10:00:37Z");
        let rate = RateLimit { limit: 100, window_s: 60 };
        let live = LimitStatus::for_rate(&rate, at("2026-11-23T10:01:00Z"), 63, now);
        assert_eq!((live.used, live.remaining()), (63, 37));
        let stale = LimitStatus::for_rate(&rate, at("2026-11-23T10:00:00Z"), 100, now);
        assert_eq!((stale.used, stale.remaining(), stale.reset), (0, 100, at("2026-11-23T10:01:00Z")));
        let q = Quota { limit: 10, period: Period::Day };
        assert_eq!(LimitStatus::for_quota(&q, UnixTime(0), 10, now).remaining(), 10);
        assert_eq!(LimitStatus { limit: 5, used: 9, reset: now, window_s: 60 }.remaining(), 0);
    }
}
