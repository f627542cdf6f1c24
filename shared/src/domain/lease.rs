//! Token leases for hot keys: a container that decides many requests a second for one key
//! reserves a block of them from the key's window and quota in one conditional write, and
//! spends the block from memory. Ordinary keys keep the exact write per request.
//!
//! The rules, each held by the store's conditional write or by the container:
//! - **Never over-admit.** A block is reserved only where the whole of it fits under every
//!   limit (the write's condition), and is spent only in the window, period and day it was
//!   reserved in (a lease ends at the first of them, or after [`LEASE_S`]).
//! - **Billing never over-counts.** A request is counted for billing (`ua_<day>`) once: the
//!   request that takes a block is counted by that write, the others when the container next
//!   writes for the key (its next block, or a settlement). A retry after an ambiguous failure
//!   never carries them again, so what a crashed container leaves uncounted is at most one
//!   block's requests.
//! - **Unspent tokens go back** to the window and period they came from, when that window and
//!   period are still current; otherwise they ended with them.
//! - **Blocks shrink as the limit nears:** at most 1/[`SHARE_OF_REMAINING`] of what was left,
//!   so near a limit a hot key is back to one exact write per request.

use super::decision::Counters;
use super::limits::LimitStatus;
use super::time::{Day, UnixTime};

/// The longest a block is spent from memory: revocation, disabling, a subscription ending and
/// plan changes reach a container holding one within this (plus the write in flight).
pub const LEASE_S: i64 = 1;
/// Decisions for one key in one second of one container above which the key runs hot there.
pub const HOT_DECISIONS_PER_S: u64 = 10;
/// The largest block.
pub const MAX_BLOCK: u64 = 1_000;
/// A block takes at most this fraction of what the key had left.
pub const SHARE_OF_REMAINING: u64 = 16;

/// Requests admitted on a day whose count is written this long after the day ended are counted
/// under the day of the write instead: the rollup removes a day's live counters an hour after
/// it ends (`rollup::FINISHED_AFTER_S`), and a count written after that would be lost. Billed
/// late rather than never.
pub const LATE_AFTER_S: i64 = 3_000;

/// The day requests admitted on `day` are counted under when their count is written at `now`.
pub fn billing_day(day: Day, now: UnixTime) -> Day {
    if day.next().start().plus(LATE_AFTER_S) <= now { now.day() } else { day }
}

/// What one conditional write on a key's item takes and settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// Requests reserved against the window and quota: this decision's, and a block's others.
    pub tokens: u64,
    /// Requests admitted from earlier blocks that no write has counted yet, by day.
    pub used: Vec<(Day, u64)>,
    /// An earlier block's tokens that were not spent.
    pub unspent: Option<Unspent>,
    /// The key's rate limit and quota as the container last saw them (limit, count, end): a
    /// block is sized and conditioned on them, and a changed plan or window refuses it.
    pub rate: Option<LimitStatus>,
    pub quota: Option<LimitStatus>,
}

impl Take {
    /// The ordinary write: one request, nothing to settle.
    pub fn one() -> Self {
        Self { tokens: 1, used: vec![], unspent: None, rate: None, quota: None }
    }

    pub fn is_one(&self) -> bool {
        self.tokens == 1 && self.used.is_empty() && self.unspent.is_none()
    }

    /// Requests this write adds to the billing counters.
    pub fn used_total(&self) -> u64 {
        self.used.iter().map(|(_, n)| n).sum()
    }
}

/// Unspent tokens of a block, and the window and period they were reserved in: they go back
/// only to those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unspent {
    pub tokens: u64,
    /// The end of the window they were reserved in; `None`: the key had no rate limit.
    pub window_end: Option<UnixTime>,
    /// The end of the quota period they were reserved in; `None`: no quota.
    pub period_end: Option<UnixTime>,
}

impl Unspent {
    /// What goes back to the window and to the period whose ends are `counters`' (0 where the
    /// window or period the tokens came from is over, or the key has no such limit).
    pub fn returnable(&self, counters: &Counters) -> (u64, u64) {
        (
            if self.window_end == Some(counters.window_end) { self.tokens } else { 0 },
            if self.period_end == Some(counters.period_end) { self.tokens } else { 0 },
        )
    }
}

/// Requests admitted locally, counted per day (a block never spans a day, but uncounted
/// requests of two blocks can).
pub fn add_used(used: &mut Vec<(Day, u64)>, day: Day, n: u64) {
    if n == 0 {
        return;
    }
    match used.iter_mut().find(|(d, _)| *d == day) {
        Some((_, m)) => *m += n,
        None => used.push((day, n)),
    }
}

/// How many requests a key's next write reserves, from how many this container decided for it
/// in the last second (`pace`) and what the key had left at its last write (`remaining`, the
/// smaller of window and quota; `None`: no limit).
pub fn block_size(pace: u64, remaining: Option<u64>) -> u64 {
    if pace < HOT_DECISIONS_PER_S {
        return 1;
    }
    let want = pace.saturating_mul(LEASE_S as u64).min(MAX_BLOCK);
    let cap = remaining.map_or(u64::MAX, |r| r / SHARE_OF_REMAINING);
    want.min(cap).max(1)
}

/// Until when (exclusive) a block reserved at `now` may be spent: [`LEASE_S`], and never past
/// the window or period it was reserved in (`counters` after the write; `None` for a limit the
/// key does not have) or the day its requests are counted in.
pub fn lease_until(now: UnixTime, window_end: Option<UnixTime>, period_end: Option<UnixTime>) -> UnixTime {
    let mut until = now.plus(LEASE_S).min(now.day().next().start());
    for end in [window_end, period_end].into_iter().flatten() {
        until = until.min(end);
    }
    until
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_for_hot_keys_and_shrink_near_the_limit() {
        assert_eq!(block_size(0, None), 1);
        assert_eq!(block_size(HOT_DECISIONS_PER_S - 1, Some(1_000_000)), 1);
        assert_eq!(block_size(200, None), 200);
        assert_eq!(block_size(200, Some(1_000_000)), 200);
        assert_eq!(block_size(50_000, None), MAX_BLOCK);
        // Near the limit: a sixteenth of what is left, then single requests.
        assert_eq!(block_size(200, Some(1_600)), 100);
        assert_eq!(block_size(200, Some(160)), 10);
        assert_eq!(block_size(200, Some(31)), 1);
        assert_eq!(block_size(HOT_DECISIONS_PER_S, None), HOT_DECISIONS_PER_S);
        assert_eq!(block_size(200, Some(0)), 1);
    }

    #[test]
    fn a_lease_never_outlives_its_window_period_or_day() {
        let now = UnixTime(1_796_601_599); // 23:59:59 UTC
        assert_eq!(lease_until(now, None, None), UnixTime(1_796_601_600));
        let now = UnixTime(1_796_590_000);
        assert_eq!(lease_until(now, None, None), now.plus(LEASE_S));
        assert_eq!(lease_until(now, Some(now), None), now);
        assert_eq!(lease_until(now, Some(now.plus(60)), Some(now)), now);
    }

    #[test]
    fn a_count_written_after_the_rollup_may_have_settled_its_day_goes_to_today() {
        let day = UnixTime(1_796_990_400).day();
        let end = day.next().start();
        assert_eq!(billing_day(day, end.plus(-1)), day);
        assert_eq!(billing_day(day, end.plus(LATE_AFTER_S - 1)), day);
        assert_eq!(billing_day(day, end.plus(LATE_AFTER_S)), day.next());
    }

    #[test]
    fn unspent_tokens_go_back_only_where_they_came_from() {
        let u = Unspent { tokens: 7, window_end: Some(UnixTime(60)), period_end: Some(UnixTime(86_400)) };
        let c = |w, p| Counters { window_end: UnixTime(w), window_count: 0, period_end: UnixTime(p), period_count: 0 };
        assert_eq!(u.returnable(&c(60, 86_400)), (7, 7));
        assert_eq!(u.returnable(&c(120, 86_400)), (0, 7));
        assert_eq!(u.returnable(&c(120, 172_800)), (0, 0));
        assert_eq!(Unspent { period_end: None, ..u }.returnable(&c(60, 86_400)), (7, 0));
        let mut used = vec![];
        add_used(&mut used, UnixTime(0).day(), 3);
        add_used(&mut used, UnixTime(0).day(), 2);
        add_used(&mut used, UnixTime(86_400).day(), 0);
        assert_eq!(used, vec![(UnixTime(0).day(), 5)]);
    }
}
