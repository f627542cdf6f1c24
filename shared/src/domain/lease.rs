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

use super::decision::{Counters, KeyState};
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

    /// What the container last saw of `counter`'s limit.
    pub fn known(&self, counter: Counter) -> Option<LimitStatus> {
        match counter {
            Counter::Window => self.rate,
            Counter::Period => self.quota,
        }
    }

    /// The earlier block's unspent tokens this write gives back to `counter`, if that counter
    /// still ends at `reset` (the window or period they were reserved in).
    pub fn given_back(&self, counter: Counter, reset: UnixTime) -> u64 {
        self.unspent.filter(|u| u.end(counter) == Some(reset)).map_or(0, |u| u.tokens)
    }
}

/// One of a key's two counters: its rate limit's window, or its quota's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// The rate limit's fixed window.
    Window,
    /// The quota's calendar period.
    Period,
}

/// `take` sized to what is known of the key: `observed`, the item a failed condition returned,
/// else what the container knew. Each limit's current window or period leaves room for
/// `limit - count` requests plus what the earlier block gives back there; an ended one, for
/// `limit`. At least 1: a block that cannot fit is the ordinary request, which the store's
/// condition then refuses.
pub fn fit(take: &Take, observed: Option<&KeyState>, now: UnixTime) -> Take {
    if take.is_one() {
        return take.clone();
    }
    let mut fitted = take.clone();
    if let Some(state) = observed {
        let c = &state.counters;
        // Only a current window or period is conditioned on; an ended one is rolled over.
        fitted.rate = state
            .rate_limit
            .filter(|_| c.window_end > now)
            .map(|r| LimitStatus::for_rate(&r, c.window_end, c.window_count, now));
        fitted.quota = state
            .quota
            .filter(|_| c.period_end > now)
            .map(|q| LimitStatus::for_quota(&q, c.period_end, c.period_count, now));
        let rolled_room = [
            state.rate_limit.filter(|_| c.window_end <= now).map(|r| r.limit),
            state.quota.filter(|_| c.period_end <= now).map(|q| q.limit),
        ];
        for room in rolled_room.into_iter().flatten() {
            fitted.tokens = fitted.tokens.min((room / SHARE_OF_REMAINING).max(1));
        }
    }
    // At most a share of the room, as the container sized it: near a limit, single requests.
    for counter in [Counter::Window, Counter::Period] {
        if let Some(k) = fitted.known(counter) {
            let room = (k.limit + fitted.given_back(counter, k.reset)).saturating_sub(k.used);
            fitted.tokens = fitted.tokens.min((room / SHARE_OF_REMAINING).max(1));
        }
    }
    fitted.tokens = fitted.tokens.max(1);
    fitted
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
    /// The end of the window or period these tokens were reserved in (`None`: the key had no
    /// such limit).
    pub fn end(&self, counter: Counter) -> Option<UnixTime> {
        match counter {
            Counter::Window => self.window_end,
            Counter::Period => self.period_end,
        }
    }

    /// These tokens, if there are any to give back and somewhere they could go.
    pub fn worth_returning(self) -> Option<Self> {
        (self.tokens > 0 && (self.window_end.is_some() || self.period_end.is_some())).then_some(self)
    }

    /// What of these tokens still goes back once the key's counters are `c` at `now`: only to
    /// the window and period they came from, while that one is current; `None`: nowhere.
    pub fn still_returnable(self, c: &Counters, now: UnixTime) -> Option<Self> {
        let current = |end: Option<UnixTime>, now_end: UnixTime| end.filter(|e| *e == now_end && *e > now);
        let u = Self {
            tokens: self.tokens,
            window_end: current(self.window_end, c.window_end),
            period_end: current(self.period_end, c.period_end),
        };
        (u.window_end.is_some() || u.period_end.is_some()).then_some(u)
    }
}

/// `used`, by the day each is counted under when written at `now` ([`billing_day`]).
pub fn billed_days(used: &[(Day, u64)], now: UnixTime) -> Vec<(Day, u64)> {
    let mut per_day = vec![];
    for &(day, n) in used {
        add_used(&mut per_day, billing_day(day, now), n);
    }
    per_day
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

/// The block a write takes for the decision and the `queued` others that waited on the last
/// write for the key in this container (callers asking at once): at least enough for all of
/// them, when that fits the share of what is left; else what [`block_size`] gives for `pace`.
pub fn queued_block_size(pace: u64, queued: u64, remaining: Option<u64>) -> u64 {
    let cap = remaining.map_or(u64::MAX, |r| r / SHARE_OF_REMAINING).min(MAX_BLOCK);
    block_size(pace, remaining).max(queued.saturating_add(1).min(cap)).max(1)
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
        // Callers that queued on the last write are covered, within the share of what is left.
        assert_eq!(queued_block_size(0, 7, None), 8);
        assert_eq!(queued_block_size(0, 7, Some(1_600)), 8);
        assert_eq!(queued_block_size(0, 7, Some(64)), 4);
        assert_eq!(queued_block_size(0, 7, Some(10)), 1);
        assert_eq!(queued_block_size(500, 7, None), 500);
        assert_eq!(queued_block_size(0, 0, None), 1);
        assert_eq!(queued_block_size(0, u64::MAX, None), MAX_BLOCK);
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
        let now = UnixTime(30);
        let u = Unspent { tokens: 7, window_end: Some(UnixTime(60)), period_end: Some(UnixTime(86_400)) };
        let c = |w, p| Counters { window_end: UnixTime(w), window_count: 0, period_end: UnixTime(p), period_count: 0 };
        assert_eq!(u.worth_returning(), Some(u));
        assert_eq!(Unspent { tokens: 0, ..u }.worth_returning(), None);
        assert_eq!(Unspent { window_end: None, period_end: None, ..u }.worth_returning(), None);
        assert_eq!(u.still_returnable(&c(60, 86_400), now), Some(u));
        assert_eq!(u.still_returnable(&c(120, 86_400), now), Some(Unspent { window_end: None, ..u }));
        assert_eq!(u.still_returnable(&c(120, 172_800), now), None);
        let no_quota = Unspent { period_end: None, ..u };
        assert_eq!(no_quota.still_returnable(&c(60, 86_400), now), Some(no_quota));
        // A window that has ended since takes nothing back, even if no request rolled it.
        assert_eq!(u.still_returnable(&c(60, 86_400), UnixTime(60)), Some(Unspent { window_end: None, ..u }));
        let mut used = vec![];
        add_used(&mut used, UnixTime(0).day(), 3);
        add_used(&mut used, UnixTime(0).day(), 2);
        add_used(&mut used, UnixTime(86_400).day(), 0);
        assert_eq!(used, vec![(UnixTime(0).day(), 5)]);
    }

    #[test]
    fn uncounted_requests_are_billed_under_the_day_they_are_written_for() {
        let day = UnixTime(1_796_990_400).day();
        let late = day.next().start().plus(LATE_AFTER_S);
        let used = [(day, 3), (day.next(), 2)];
        assert_eq!(billed_days(&used, day.start()), vec![(day, 3), (day.next(), 2)]);
        // Written after the rollup may have settled the first day: both under the second.
        assert_eq!(billed_days(&used, late), vec![(day.next(), 5)]);
    }

    mod fit {
        use super::super::*;
        use crate::domain::api_key::{KeyHash, KeyId};
        use crate::domain::customers::{CustomerAccess, CustomerId};
        use crate::domain::key_records::KeyStatus;
        use crate::domain::plans::{Period, Quota, RateLimit};

        const NOW: UnixTime = UnixTime(1_796_590_030);

        fn key(rate: u64, window_end: UnixTime, window_count: u64) -> KeyState {
            KeyState {
                key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
                customer_id: CustomerId::parse("acme").unwrap(),
                plan_id: None,
                status: KeyStatus::Active,
                expires_at: None,
                current_hash: KeyHash::from_hex(&"ab".repeat(32)).unwrap(),
                previous_hash: None,
                access: CustomerAccess::default(),
                scopes: vec![],
                rate_limit: Some(RateLimit { limit: rate, window_s: 60 }),
                quota: None,
                counters: Counters { window_end, window_count, ..Counters::default() },
            }
        }

        fn block(tokens: u64) -> Take {
            Take { tokens, ..Take::one() }
        }

        #[test]
        fn the_ordinary_write_is_left_as_it_is() {
            let full = key(10, NOW.plus(30), 10);
            assert_eq!(fit(&Take::one(), Some(&full), NOW), Take::one());
        }

        #[test]
        fn a_block_near_the_limit_shrinks_to_one() {
            let near = key(100, NOW.plus(30), 95);
            let fitted = fit(&block(50), Some(&near), NOW);
            assert_eq!(fitted.tokens, 1);
            // Conditioned on the window as it was read.
            assert_eq!(fitted.rate, Some(LimitStatus { limit: 100, used: 95, reset: NOW.plus(30), window_s: 60 }));
            // Far from it: a sixteenth of what is left.
            assert_eq!(fit(&block(500), Some(&key(1_700, NOW.plus(30), 100)), NOW).tokens, 100);
        }

        #[test]
        fn an_ended_windows_room_is_the_whole_limit() {
            let ended = key(1_600, NOW, 1_600);
            let fitted = fit(&block(500), Some(&ended), NOW);
            assert_eq!(fitted.tokens, 100);
            // An ended window is rolled over, not conditioned on.
            assert_eq!(fitted.rate, None);
            // A quota period that ended likewise.
            let mut period = key(0, NOW, 0);
            period.rate_limit = None;
            period.quota = Some(Quota { limit: 320, period: Period::Day });
            assert_eq!(fit(&block(500), Some(&period), NOW).tokens, 20);
        }

        #[test]
        fn unspent_tokens_given_back_in_the_same_window_count_as_room() {
            let full = LimitStatus { limit: 160, used: 160, reset: NOW.plus(30), window_s: 60 };
            let back = |window_end| Some(Unspent { tokens: 160, window_end: Some(window_end), period_end: None });
            let take = |unspent| Take { tokens: 500, unspent, rate: Some(full), ..Take::one() };
            assert_eq!(fit(&take(back(NOW.plus(30))), None, NOW).tokens, 10);
            // Reserved in another window: they go back nowhere, so no room.
            assert_eq!(fit(&take(back(NOW.plus(-30))), None, NOW).tokens, 1);
            assert_eq!(fit(&take(None), None, NOW).tokens, 1);
        }
    }
}
