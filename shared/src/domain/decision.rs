//! The authorization decision for one request, as a pure function of a key's stored state.
//!
//! The store tries the common case (everything fine, counters in their current window) as one
//! conditional write. When that condition fails it gets the item back and asks [`next_step`]
//! why: a denial, or a window/period that has ended and must be rolled over first.

use super::admission;
use super::api_key::{KeyHash, KeyId};
use super::customers::{CustomerAccess, CustomerId};
use super::key_records::KeyStatus;
use super::lease::Counter;
use super::limits::{LimitStatus, period_end, window_end};
use super::plans::{PlanId, Quota, RateLimit};
use super::time::UnixTime;

/// The counters kept on a key's item. An `end` in the past means the window or period is
/// over and the count belongs to it, not to the present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub window_end: UnixTime,
    pub window_count: u64,
    pub period_end: UnixTime,
    pub period_count: u64,
}

impl Counters {
    /// When `counter`'s window or period ends.
    pub fn end(&self, counter: Counter) -> UnixTime {
        match counter {
            Counter::Window => self.window_end,
            Counter::Period => self.period_end,
        }
    }
}

/// Everything about a key that a decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    pub plan_id: Option<PlanId>,
    pub status: KeyStatus,
    pub expires_at: Option<UnixTime>,
    pub current_hash: KeyHash,
    pub previous_hash: Option<(KeyHash, UnixTime)>,
    pub access: CustomerAccess,
    /// What the key may call where the operator's scope map asks (`domain::scopes`).
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub counters: Counters,
}

/// Why a request is refused. The order of checks is the contract's: key, subscription,
/// scope, rate limit, quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingKey,
    /// Malformed, bad checksum, unknown, or a rotated-away secret past its grace.
    InvalidKey,
    KeyExpired,
    KeyRevoked,
    KeyDisabled,
    SubscriptionInactive,
    /// The route needs a scope the key does not hold. About this request, not the key: it is
    /// not counted against the key's limits, and a container never answers another route
    /// from it.
    InsufficientScope,
    RateLimited,
    QuotaExceeded,
    /// Storage could not answer and the fail-mode matrix denies (`authorization_unavailable`):
    /// not a verdict on the key, which is why it is the one denial a retry may turn around.
    AuthorizationUnavailable,
}

impl Denial {
    /// The denials counted against a key (by day and code), in the order of
    /// [`DayCount::denied_by`](crate::domain::usage::DayCount): those that name a key the
    /// caller holds. An unknown secret, a missing key or an outage is not the key owner's.
    pub const RECORDED: [Denial; 7] = [
        Denial::KeyExpired,
        Denial::KeyRevoked,
        Denial::KeyDisabled,
        Denial::SubscriptionInactive,
        Denial::InsufficientScope,
        Denial::RateLimited,
        Denial::QuotaExceeded,
    ];

    /// Where this denial is counted in [`Denial::RECORDED`]; `None` for those never counted.
    pub fn recorded_index(self) -> Option<usize> {
        Self::RECORDED.iter().position(|&d| d == self)
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::KeyExpired => "key_expired",
            Self::KeyRevoked => "key_revoked",
            Self::KeyDisabled => "key_disabled",
            Self::SubscriptionInactive => "subscription_inactive",
            Self::InsufficientScope => "insufficient_scope",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::AuthorizationUnavailable => "authorization_unavailable",
        }
    }

    /// The HTTP status a gateway answers with.
    pub fn status(self) -> u16 {
        match self {
            Self::MissingKey | Self::InvalidKey | Self::KeyExpired | Self::KeyRevoked => 401,
            Self::KeyDisabled | Self::InsufficientScope => 403,
            Self::SubscriptionInactive => 402,
            Self::RateLimited | Self::QuotaExceeded => 429,
            Self::AuthorizationUnavailable => 503,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::MissingKey => "No API key: send it in the x-api-key header or as Authorization: Bearer <key>.",
            Self::InvalidKey => "The API key is not valid.",
            Self::KeyExpired => "The API key has expired.",
            Self::KeyRevoked => "The API key has been revoked.",
            Self::KeyDisabled => "The API key is disabled.",
            Self::SubscriptionInactive => "The subscription for this API key is not active.",
            Self::InsufficientScope => "The API key does not have a scope this route requires.",
            Self::RateLimited => "Rate limit exceeded; retry after the window resets.",
            Self::QuotaExceeded => {
                "Quota exhausted for this period; upgrade your plan or wait for the period to reset."
            }
            Self::AuthorizationUnavailable => "Authorization is temporarily unavailable; retry shortly.",
        }
    }

    /// Denials that are about the request volume of a known, valid key: these still report
    /// limit state in headers.
    pub fn is_limit(self) -> bool {
        matches!(self, Self::RateLimited | Self::QuotaExceeded)
    }
}

/// What to do with a request, given the key's state as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Count it. `roll_window` / `roll_period` say which counters start afresh.
    Count {
        roll_window: bool,
        roll_period: bool,
    },
    Deny(Denial),
}

/// The decision for one request to a route that needs the scopes `required`.
/// What admission asks of the key comes first ([`admission::ADMISSION`]), then its limits.
pub fn next_step(state: &KeyState, presented: &KeyHash, required: &[String], now: UnixTime) -> Step {
    if let Some(denial) = admission::refusal(state, presented, required, now) {
        return Step::Deny(denial);
    }
    let c = &state.counters;
    let mut roll_window = false;
    if let Some(rate) = &state.rate_limit {
        roll_window = c.window_end <= now;
        if !roll_window && c.window_count >= rate.limit {
            return Step::Deny(Denial::RateLimited);
        }
    }
    let mut roll_period = false;
    if let Some(quota) = &state.quota {
        roll_period = c.period_end <= now;
        if !roll_period && c.period_count >= quota.limit {
            return Step::Deny(Denial::QuotaExceeded);
        }
    }
    Step::Count { roll_window, roll_period }
}

/// The counters after counting one request under `step`'s rollovers.
pub fn rolled(state: &KeyState, roll_window: bool, roll_period: bool, now: UnixTime) -> Counters {
    let c = state.counters;
    Counters {
        window_end: match (&state.rate_limit, roll_window) {
            (Some(r), true) => window_end(now, r.window_s),
            _ => c.window_end,
        },
        window_count: if roll_window { 1 } else { c.window_count + 1 },
        period_end: match (&state.quota, roll_period) {
            (Some(q), true) => period_end(now, q.period),
            _ => c.period_end,
        },
        period_count: if roll_period { 1 } else { c.period_count + 1 },
    }
}

/// The result of authorizing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Result<(), Denial>,
    /// Present once the key is known.
    pub key: Option<KeyContext>,
    pub rate: Option<LimitStatus>,
    pub quota: Option<LimitStatus>,
    /// Allowed without checking limits because storage was unreachable (fail-open mode).
    pub degraded: bool,
    /// Answered from the container's memory, with no request to storage: a request of a hot
    /// key's block, a spent limit, a key known to be unusable. Logged at debug, not info: a
    /// hot key's log would otherwise cost more than its writes.
    pub from_memory: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyContext {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    pub plan_id: Option<PlanId>,
    /// The key's scopes, so a container can answer a later request only for routes they cover.
    pub scopes: Vec<String>,
}

impl Decision {
    pub fn denied(denial: Denial) -> Self {
        Self { outcome: Err(denial), key: None, rate: None, quota: None, degraded: false, from_memory: false }
    }

    /// A decision about a known key, with its limits as `counters` show them at `now`.
    pub fn for_key(state: &KeyState, outcome: Result<(), Denial>, counters: &Counters, now: UnixTime) -> Self {
        let limits_visible = outcome.is_ok() || outcome.is_err_and(Denial::is_limit);
        Self {
            outcome,
            key: Some(KeyContext {
                key_id: state.key_id.clone(),
                customer_id: state.customer_id.clone(),
                plan_id: state.plan_id.clone(),
                scopes: state.scopes.clone(),
            }),
            rate: state
                .rate_limit
                .filter(|_| limits_visible)
                .map(|r| LimitStatus::for_rate(&r, counters.window_end, counters.window_count, now)),
            quota: state
                .quota
                .filter(|_| limits_visible)
                .map(|q| LimitStatus::for_quota(&q, counters.period_end, counters.period_count, now)),
            degraded: false,
            from_memory: false,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The limit clients see in headers: the rate limit when there is one, else the quota.
    pub fn headline(&self) -> Option<LimitStatus> {
        self.rate.or(self.quota)
    }

    /// Seconds until a 429 can clear: the reset of whichever limit is exhausted.
    pub fn retry_after(&self, now: UnixTime) -> Option<u64> {
        let reset = match self.outcome {
            Err(Denial::RateLimited) => self.rate?.reset,
            Err(Denial::QuotaExceeded) => self.quota?.reset,
            _ => return None,
        };
        Some(super::limits::retry_after(now, reset))
    }
}

/// How a key's counters continue when its limits change shape (another window length,
/// another quota period, or a limit where there was none), so that switching plans never
/// resets what was used. A limit whose shape is unchanged keeps its counter as it is, and its
/// new limit applies from the next request.
///
/// The rule, per counter: the current window (or period) ends at the later of its old end and
/// the end of the new shape's window around now, and its count is the larger of the old count
/// and, for a quota, what the key was allowed so far in the new calendar period. So a monthly
/// quota spent and switched to a daily one stays spent until the month ends; a daily quota
/// switched to a monthly one starts from the month's usage so far; and no sequence of
/// switches admits more in any window or period than the largest limit in force in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CarryOver {
    /// New window end and the change to the window's count.
    pub window: Option<(UnixTime, i64)>,
    /// New period end and the change to the period's count.
    pub period: Option<(UnixTime, i64)>,
}

impl CarryOver {
    pub fn is_empty(&self) -> bool {
        self.window.is_none() && self.period.is_none()
    }
}

/// The quota period whose usage so far [`carry_over`] needs, if the change needs one.
pub fn period_usage_needed(before: Option<&Quota>, after: Option<&Quota>) -> Option<super::plans::Period> {
    match (before, after) {
        (b, Some(a)) if b.map(|q| q.period) != Some(a.period) => Some(a.period),
        _ => None,
    }
}

/// See [`CarryOver`]. `period_used` is the key's allowed requests so far in the calendar
/// period of the new quota around `now` (for the period [`period_usage_needed`] names).
pub fn carry_over(
    before: (Option<&RateLimit>, Option<&Quota>),
    after: (Option<&RateLimit>, Option<&Quota>),
    counters: &Counters,
    period_used: u64,
    now: UnixTime,
) -> CarryOver {
    let window = match (before.0, after.0) {
        (b, Some(a)) if b.map(|r| r.window_s) != Some(a.window_s) => {
            let live = counters.window_end > now;
            let end = window_end(now, a.window_s).max(if live { counters.window_end } else { UnixTime(0) });
            let count = if live { counters.window_count } else { 0 };
            Some((end, count as i64 - counters.window_count as i64))
        }
        _ => None,
    };
    let period = match period_usage_needed(before.1, after.1) {
        Some(p) => {
            let live = counters.period_end > now;
            let end = period_end(now, p).max(if live { counters.period_end } else { UnixTime(0) });
            let count = period_used.max(if live { counters.period_count } else { 0 });
            Some((end, count as i64 - counters.period_count as i64))
        }
        None => None,
    };
    CarryOver { window, period }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::SubscriptionStatus;
    use crate::domain::plans::Period;

    fn hash(b: u8) -> KeyHash {
        KeyHash::from_hex(&format!("{b:02x}").repeat(32)).unwrap()
    }

    fn state() -> KeyState {
        KeyState {
            key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
            customer_id: CustomerId::parse("acme").unwrap(),
            plan_id: Some(PlanId::parse("pro").unwrap()),
            status: KeyStatus::Active,
            expires_at: None,
            current_hash: hash(1),
            previous_hash: None,
            access: CustomerAccess::default(),
            scopes: vec!["pets:read".into()],
            rate_limit: Some(RateLimit { limit: 10, window_s: 60 }),
            quota: Some(Quota { limit: 100, period: Period::Month }),
            counters: Counters {
                window_end: UnixTime(1_020),
                window_count: 3,
                period_end: UnixTime(9_999),
                period_count: 50,
            },
        }
    }

    const NOW: UnixTime = UnixTime(1_000);
    const COUNT: Step = Step::Count { roll_window: false, roll_period: false };

    #[test]
    fn a_healthy_key_counts_in_place() {
        assert_eq!(next_step(&state(), &hash(1), &[], NOW), COUNT);
    }

    #[test]
    fn checks_run_in_contract_order() {
        let mut s = state();
        s.status = KeyStatus::Revoked;
        s.access.status = Some(SubscriptionStatus::Canceled);
        s.counters.window_count = 10;
        assert_eq!(next_step(&s, &hash(2), &[], NOW), Step::Deny(Denial::InvalidKey));
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::KeyRevoked));
        s.status = KeyStatus::Disabled;
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::KeyDisabled));
        s.status = KeyStatus::Active;
        s.expires_at = Some(NOW);
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::KeyExpired));
        s.expires_at = Some(NOW.plus(1));
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::SubscriptionInactive));
        s.access.status = Some(SubscriptionStatus::Active);
        let write = ["pets:write".to_string()];
        assert_eq!(next_step(&s, &hash(1), &write, NOW), Step::Deny(Denial::InsufficientScope));
        assert_eq!(next_step(&s, &hash(1), &["pets:read".into()], NOW), Step::Deny(Denial::RateLimited));
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::RateLimited));
        s.counters.window_count = 0;
        s.counters.period_count = 100;
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Deny(Denial::QuotaExceeded));
    }

    #[test]
    fn previous_secret_works_only_within_grace() {
        let mut s = state();
        s.current_hash = hash(9);
        s.previous_hash = Some((hash(1), NOW.plus(1)));
        assert_eq!(next_step(&s, &hash(1), &[], NOW), COUNT);
        assert_eq!(next_step(&s, &hash(1), &[], NOW.plus(1)), Step::Deny(Denial::InvalidKey));
    }

    #[test]
    fn ended_windows_roll_over_even_when_full() {
        let mut s = state();
        s.counters.window_count = 10;
        s.counters.period_count = 100;
        s.counters.window_end = NOW;
        s.counters.period_end = NOW;
        assert_eq!(next_step(&s, &hash(1), &[], NOW), Step::Count { roll_window: true, roll_period: true });
        let c = rolled(&s, true, true, NOW);
        assert_eq!(
            c,
            Counters { window_end: UnixTime(1_020), window_count: 1, period_end: UnixTime(2_678_400), period_count: 1 }
        );
    }

    #[test]
    fn unlimited_keys_always_count() {
        let mut s = state();
        s.rate_limit = None;
        s.quota = None;
        s.counters = Counters { window_end: UnixTime(0), window_count: u64::MAX - 1, ..Counters::default() };
        assert_eq!(next_step(&s, &hash(1), &[], NOW), COUNT);
    }

    #[test]
    fn decisions_report_limits_only_for_allowed_and_429() {
        let s = state();
        let allowed = Decision::for_key(&s, Ok(()), &rolled(&s, false, false, NOW), NOW);
        assert_eq!(allowed.headline().unwrap().remaining(), 6);
        assert_eq!(allowed.quota.unwrap().remaining(), 49);
        let limited = Decision::for_key(&s, Err(Denial::RateLimited), &s.counters, NOW);
        assert_eq!(limited.retry_after(NOW), Some(20));
        let disabled = Decision::for_key(&s, Err(Denial::KeyDisabled), &s.counters, NOW);
        assert!(disabled.headline().is_none());
        assert_eq!(disabled.retry_after(NOW), None);
    }

    #[test]
    fn status_codes_match_the_contract() {
        let table = [
            (Denial::MissingKey, "missing_api_key", 401),
            (Denial::InvalidKey, "invalid_api_key", 401),
            (Denial::KeyExpired, "key_expired", 401),
            (Denial::KeyRevoked, "key_revoked", 401),
            (Denial::KeyDisabled, "key_disabled", 403),
            (Denial::SubscriptionInactive, "subscription_inactive", 402),
            (Denial::RateLimited, "rate_limited", 429),
            (Denial::QuotaExceeded, "quota_exceeded", 429),
            (Denial::AuthorizationUnavailable, "authorization_unavailable", 503),
        ];
        for (d, code, status) in table {
            assert_eq!((d.code(), d.status()), (code, status));
        }
    }

    #[test]
    fn switching_limits_carries_counts_over_and_never_resets_them() {
        use crate::domain::plans::Period;
        let now = UnixTime::parse_rfc3339("2026-12-10T12:00:30Z").unwrap();
        let month = Quota { limit: 1000, period: Period::Month };
        let day = Quota { limit: 100, period: Period::Day };
        let month_end = UnixTime::parse_rfc3339("2027-01-01T00:00:00Z").unwrap();
        let day_end = UnixTime::parse_rfc3339("2026-12-11T00:00:00Z").unwrap();
        // A spent monthly quota moved to a daily one: spent until the month ends.
        let spent = Counters { period_end: month_end, period_count: 1000, ..Counters::default() };
        let c = carry_over((None, Some(&month)), (None, Some(&day)), &spent, 40, now);
        assert_eq!(c.period, Some((month_end, 0)));
        // Daily to monthly: the month's usage so far counts.
        let daily = Counters { period_end: day_end, period_count: 40, ..Counters::default() };
        let c = carry_over((None, Some(&day)), (None, Some(&month)), &daily, 440, now);
        assert_eq!(c.period, Some((month_end, 400)));
        // A quota where there was none: the period's usage so far, whatever the stale counter.
        let stale = Counters { period_end: UnixTime(0), period_count: 7_000, ..Counters::default() };
        let c = carry_over((None, None), (None, Some(&month)), &stale, 300, now);
        assert_eq!(c.period, Some((month_end, 300 - 7_000)));
        // Same shape, other limit: nothing to carry.
        let bigger = Quota { limit: 5000, period: Period::Month };
        assert!(carry_over((None, Some(&month)), (None, Some(&bigger)), &spent, 0, now).is_empty());
        // Windows: a minute's count carries into the hour; an hour's count stays until the hour ends.
        let minute = RateLimit { limit: 10, window_s: 60 };
        let hour = RateLimit { limit: 100, window_s: 3600 };
        let hour_end = UnixTime::parse_rfc3339("2026-12-10T13:00:00Z").unwrap();
        let in_minute = Counters { window_end: now.plus(30), window_count: 10, ..Counters::default() };
        assert_eq!(
            carry_over((Some(&minute), None), (Some(&hour), None), &in_minute, 0, now).window,
            Some((hour_end, 0))
        );
        let in_hour = Counters { window_end: hour_end, window_count: 100, ..Counters::default() };
        assert_eq!(
            carry_over((Some(&hour), None), (Some(&minute), None), &in_hour, 0, now).window,
            Some((hour_end, 0))
        );
        // A window that already ended starts afresh.
        let ended = Counters { window_end: now.plus(-1), window_count: 10, ..Counters::default() };
        let c = carry_over((Some(&minute), None), (Some(&hour), None), &ended, 0, now);
        assert_eq!(c.window, Some((hour_end, -10)));
    }

    #[test]
    fn no_sequence_of_switches_admits_more_than_the_largest_quota() {
        use crate::domain::plans::Period;
        // Spend as much as each plan allows, switching between a monthly and a daily quota
        // every day of a month, and count what the month admitted.
        let month = Quota { limit: 1000, period: Period::Month };
        let day = Quota { limit: 100, period: Period::Day };
        let start = UnixTime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let mut c = Counters::default();
        let mut per_day = vec![0u64; 31];
        let mut current = &day;
        for d in 0..31 {
            let now = start.plus(d * 86_400 + 3_600);
            let next = if d % 2 == 0 { &month } else { &day };
            let used = match next.period {
                Period::Day => per_day[d as usize],
                Period::Month => per_day.iter().sum(),
            };
            let carry = carry_over((None, Some(current)), (None, Some(next)), &c, used, now);
            if let Some((end, delta)) = carry.period {
                c.period_end = end;
                c.period_count = (c.period_count as i64 + delta) as u64;
            }
            current = next;
            // Spend until denied.
            let state = KeyState { quota: Some(*current), rate_limit: None, counters: c, ..state() };
            let mut st = state;
            while let Step::Count { roll_period, .. } = next_step(&st, &hash(1), &[], now) {
                st.counters = rolled(&st, false, roll_period, now);
                per_day[d as usize] += 1;
            }
            c = st.counters;
        }
        assert!(per_day.iter().sum::<u64>() <= 1000, "{per_day:?}");
    }
}
