//! Unit tests of the authorizer over a scripted store.

use super::*;
use crate::config::DEFAULT_FAIL_OPEN_WINDOW_S;
use crate::domain::api_key::{KeyEnv, KeyHash, KeyId};
use crate::domain::customers::CustomerId;
use crate::domain::decision::KeyContext;
use crate::domain::lease::Unspent;
use crate::domain::limits::LimitStatus;
use crate::domain::scopes::ScopeMap;
use crate::domain::time::Day;
use crate::store::StoreError;
use crate::store::{Fault, Outage, StoreResult, Taken};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the fake store answers next, per call.
enum Answer {
    Decide(Result<(), Denial>, Option<LimitStatus>),
    Fail(Fault),
    Corrupt,
}

/// A scripted fake of the narrow trait: lookups know `known`, decisions pop `answers`.
#[derive(Default)]
struct Scripted {
    known: Mutex<HashMap<KeyHash, KeyId>>,
    lookup_fault: Mutex<Option<Fault>>,
    answers: Mutex<VecDeque<Answer>>,
    lookups: AtomicU64,
    decisions: AtomicU64,
    recorded: AtomicU64,
    /// `record_denials` calls: (code, count).
    recorded_codes: Mutex<Vec<(Denial, u64)>>,
    /// Grant the blocks asked for (else every allowed write reserves one request).
    grant_blocks: std::sync::atomic::AtomicBool,
    /// Every `take` asked of storage, and every `settle`.
    takes: Mutex<Vec<Take>>,
    settled: Mutex<Vec<Settled>>,
    /// How long each `take` is in flight, in order (milliseconds; none: at once).
    delays: Mutex<VecDeque<u64>>,
}

/// One `settle` call: the requests it counts, by day, and the tokens it gives back.
type Settled = (Vec<(Day, u64)>, Option<Unspent>);

fn outage(f: Fault) -> StoreError {
    StoreError::Unavailable(Outage::new(f, "injected"))
}

impl Scripted {
    /// The scripted answer to one decision.
    async fn decide(
        &self,
        key_id: &KeyId,
        _hash: &KeyHash,
        required: &[String],
        _now: UnixTime,
    ) -> StoreResult<Decision> {
        self.decisions.fetch_add(1, Ordering::SeqCst);
        match self.answers.lock().unwrap().pop_front().expect("an answer was scripted") {
            Answer::Decide(outcome, rate) => Ok(Decision {
                // The scripted key holds `read` only.
                outcome: if required.iter().any(|s| s != "read") { Err(Denial::InsufficientScope) } else { outcome },
                key: Some(KeyContext {
                    key_id: key_id.clone(),
                    customer_id: CustomerId::parse("acme").unwrap(),
                    plan_id: None,
                    scopes: vec!["read".into()],
                }),
                rate,
                quota: None,
                degraded: false,
                from_memory: false,
            }),
            Answer::Fail(f) => Err(outage(f)),
            Answer::Corrupt => Err(StoreError::Corrupt("key item without a status".into())),
        }
    }
}

impl AuthorizeStore for Scripted {
    async fn key_id_for_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyId>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if let Some(f) = *self.lookup_fault.lock().unwrap() {
            return Err(outage(f));
        }
        Ok(self.known.lock().unwrap().get(hash).cloned())
    }

    async fn take(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        take: &mut Take,
    ) -> StoreResult<Taken> {
        let asked = take.tokens;
        self.takes.lock().unwrap().push(take.clone());
        let delay = self.delays.lock().unwrap().pop_front();
        if let Some(ms) = delay {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let decision = self.decide(key_id, hash, required, now).await?;
        take.used.clear();
        take.unspent = None;
        let tokens = match decision.is_allowed() {
            false => 0,
            true if self.grant_blocks.load(Ordering::SeqCst) => asked,
            true => 1,
        };
        Ok(Taken { decision, tokens })
    }

    async fn settle(
        &self,
        _key_id: &KeyId,
        used: &[(Day, u64)],
        unspent: Option<Unspent>,
        _now: UnixTime,
    ) -> StoreResult<()> {
        self.settled.lock().unwrap().push((used.to_vec(), unspent));
        Ok(())
    }

    async fn record_denials(&self, _key_id: &KeyId, _day: Day, denial: Denial, n: u64) {
        self.recorded.fetch_add(n, Ordering::SeqCst);
        self.recorded_codes.lock().unwrap().push((denial, n));
    }
}

const T0: UnixTime = UnixTime(1_800_000_000);
/// A route no scope map names.
const ANY: Route<'static> = Route { method: "GET", path: "/" };

/// A refusal for want of a scope is about its route: the key's other routes are answered
/// as before, storage is asked again for that route, and `open` never lets a route
/// through that the key lacks the scope for.
#[tokio::test]
async fn scopes_are_decided_per_route() {
    let scopes = ScopeMap::parse(r#"{"POST /pets": "write", "GET /pets/**": "read"}"#).unwrap();
    let options = AuthorizerOptions { scopes, fail_mode: FailMode::Open, ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    let k = key(a.store());
    let (write, read) = (Route { method: "POST", path: "/pets" }, Route { method: "GET", path: "/pets/1" });
    script(&a, [ok(), ok(), ok()]);
    assert_eq!(code(&a.decide(Some(&k), write, T0).await), "insufficient_scope");
    assert_eq!(code(&a.decide(Some(&k), read, T0).await), "ok", "a refusal for one route is not the key's");
    for _ in 0..5 {
        assert_eq!(code(&a.decide(Some(&k), write, T0.plus(1)).await), "insufficient_scope");
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 2, "refused from memory until the recheck");
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0);
    // At the recheck storage is asked again, and the refusals answered here are recorded.
    assert_eq!(code(&a.decide(Some(&k), write, T0.plus(SPENT_RECHECK_S)).await), "insufficient_scope");
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 5);
    assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::InsufficientScope, 5)]);
    // A path upstreams read differently is refused before storage.
    let odd = Route { method: "POST", path: "/pets%2F..%2Fadmin" };
    assert_eq!(code(&a.decide(Some(&k), odd, T0.plus(11)).await), "insufficient_scope");
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 3);
    script(&a, [Answer::Fail(Fault::Timeout), Answer::Fail(Fault::Timeout)]);
    let later = T0.plus(SPENT_RECHECK_S * 3);
    assert_eq!(code(&a.decide(Some(&k), read, later).await), "degraded");
    assert_eq!(
        code(&a.decide(Some(&k), write, later).await),
        "insufficient_scope",
        "open never passes a route the key lacks"
    );
}

/// A key decided 10 times a second here runs hot: its next write reserves a block, the
/// block's requests are answered without storage, the next write counts them and gives
/// back what the block left, and what is still held is settled on demand (SIGTERM).
#[tokio::test]
async fn a_hot_key_is_decided_from_blocks_which_are_counted_and_given_back() {
    use crate::domain::lease::HOT_DECISIONS_PER_S;
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let k = key(a.store());
    let roomy = || Answer::Decide(Ok(()), rate(1_000_000, 1, T0.plus(60)));
    script(&a, (0..4).map(|_| roomy()).chain((0..HOT_DECISIONS_PER_S).map(|_| roomy())));
    let takes = |a: &Authorizer<Scripted>| a.store().takes.lock().unwrap().clone();
    for _ in 1..HOT_DECISIONS_PER_S {
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
    }
    assert!(takes(&a).iter().all(Take::is_one), "not hot yet: the exact write");
    // The tenth in this second: a block of ten, this request its first.
    let d = a.decide(Some(&k), ANY, T0).await;
    assert!(d.is_allowed() && !d.from_memory);
    assert_eq!(takes(&a).last().unwrap().tokens, HOT_DECISIONS_PER_S);
    let writes = a.store().decisions.load(Ordering::SeqCst);
    // The block's other nine: from memory, no write; held uncounted.
    for _ in 1..HOT_DECISIONS_PER_S {
        let d = a.decide(Some(&k), ANY, T0).await;
        assert!(d.is_allowed() && d.from_memory);
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), writes);
    assert_eq!(a.unsettled(), HOT_DECISIONS_PER_S - 1);
    // Spent: the next write is throttled, so certainly not applied: the nine stay held.
    a.store().answers.lock().unwrap().push_front(Answer::Fail(Fault::Throttled));
    assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "authorization_unavailable");
    assert_eq!(takes(&a).last().unwrap().used, vec![(T0.day(), 9)]);
    assert_eq!(a.unsettled(), HOT_DECISIONS_PER_S - 1, "a write that was not applied keeps what it carried");
    // The one after takes a bigger block (the pace is 21) and counts the nine.
    assert!(!a.decide(Some(&k), ANY, T0).await.from_memory);
    let last = takes(&a).last().unwrap().clone();
    assert_eq!((last.tokens, last.used.clone(), last.unspent), (21, vec![(T0.day(), 9)], None));
    assert_eq!(a.unsettled(), 0);
    // Two of its requests, then the second ends: the next write gives back the other 18
    // to the window they came from, and counts the two.
    for _ in 0..2 {
        assert!(a.decide(Some(&k), ANY, T0).await.from_memory);
    }
    assert!(!a.decide(Some(&k), ANY, T0.plus(1)).await.from_memory);
    let last = takes(&a).last().unwrap().clone();
    assert_eq!(last.used, vec![(T0.day(), 2)]);
    assert_eq!(last.unspent, Some(Unspent { tokens: 18, window_end: Some(T0.plus(60)), period_end: None }));
    // One request of the new block, then the container is told to stop: one settlement
    // with that request and the rest of the block.
    assert!(a.decide(Some(&k), ANY, T0.plus(1)).await.from_memory);
    assert_eq!(a.settle_leases(T0.plus(1), true).await, 1);
    let settled = a.store().settled.lock().unwrap().clone();
    let (used, unspent) = settled.last().unwrap().clone();
    assert_eq!(used, vec![(T0.day(), 1)]);
    assert_eq!(unspent.map(|u| u.tokens), Some(last.tokens - 2));
    assert_eq!(a.unsettled(), 0);
}

/// A hot key pushed out of a full memory by other keys: what its block admitted is counted
/// and what it left given back by the next sweep, not lost with its entry.
#[tokio::test]
async fn an_evicted_hot_keys_block_is_still_settled() {
    use crate::domain::lease::HOT_DECISIONS_PER_S;
    let options = AuthorizerOptions { capacity: 2, ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let hot = key(a.store());
    let roomy = || Answer::Decide(Ok(()), rate(1_000_000, 1, T0.plus(60)));
    script(&a, (0..HOT_DECISIONS_PER_S + 2).map(|_| roomy()));
    for _ in 0..HOT_DECISIONS_PER_S {
        assert!(!a.decide(Some(&hot), ANY, T0).await.from_memory);
    }
    // The tenth took a block of ten: three more spent from memory.
    let block = a.store().takes.lock().unwrap().last().unwrap().tokens;
    assert_eq!(block, HOT_DECISIONS_PER_S);
    for _ in 0..3 {
        assert!(a.decide(Some(&hot), ANY, T0).await.from_memory);
    }
    assert_eq!(a.unsettled(), 3);
    // Two other keys fill the memory of two: the hot key's entry goes.
    let (b, c) = (key(a.store()), key(a.store()));
    assert!(a.decide(Some(&b), ANY, T0).await.is_allowed());
    assert!(a.decide(Some(&c), ANY, T0).await.is_allowed());
    assert_eq!(a.unsettled(), 3, "still held, for the sweep");
    assert_eq!(a.settle_leases(T0, false).await, 1, "settled at once, though its lease has not ended");
    let (used, unspent) = a.store().settled.lock().unwrap().last().unwrap().clone();
    assert_eq!(used, vec![(T0.day(), 3)]);
    assert_eq!(unspent, Some(Unspent { tokens: block - 1 - 3, window_end: Some(T0.plus(60)), period_end: None }));
    assert_eq!(a.unsettled(), 0);
}

fn key(store: &Scripted) -> String {
    let k = ApiKey::generate(KeyEnv::Live).unwrap();
    store.known.lock().unwrap().insert(k.hash(), KeyId::generate(1_800_000_000_000));
    k.expose_secret().to_owned()
}

fn script(a: &Authorizer<Scripted>, answers: impl IntoIterator<Item = Answer>) {
    a.store().answers.lock().unwrap().extend(answers);
}

fn rate(limit: u64, used: u64, reset: UnixTime) -> Option<LimitStatus> {
    Some(LimitStatus { limit, used, reset, window_s: 60 })
}

fn ok() -> Answer {
    Answer::Decide(Ok(()), rate(100, 1, T0.plus(60)))
}

fn code(d: &Decision) -> &'static str {
    match d.outcome {
        Ok(()) if d.degraded => "degraded",
        Ok(()) => "ok",
        Err(denial) => denial.code(),
    }
}

/// The fail-mode matrix, cell by cell: error class x what this container knows of the
/// key x fail mode.
#[tokio::test]
async fn the_fail_mode_matrix() {
    type Inject = fn() -> Answer;
    let faults: [(&str, Inject); 6] = [
        ("timeout", || Answer::Fail(Fault::Timeout)),
        ("server_error", || Answer::Fail(Fault::Server)),
        ("connection", || Answer::Fail(Fault::Connection)),
        ("throttled", || Answer::Fail(Fault::Throttled)),
        ("contention", || Answer::Fail(Fault::Contention)),
        ("corrupt", || Answer::Corrupt),
    ];
    // (knowledge, fault) -> (closed, open)
    let expected = |knowledge: &str, fault: &str| -> (&str, &str) {
        let transient = matches!(fault, "timeout" | "server_error" | "connection");
        match knowledge {
            "active_recently" if transient => ("authorization_unavailable", "degraded"),
            _ => ("authorization_unavailable", "authorization_unavailable"),
        }
    };
    for (fault, answer) in faults {
        for knowledge in ["active_recently", "active_long_ago", "denied_last", "unknown"] {
            for mode in [FailMode::Closed, FailMode::Open] {
                let a = Authorizer::new(Scripted::default(), mode);
                let k = key(a.store());
                let now = match knowledge {
                    "active_recently" => {
                        script(&a, [ok()]);
                        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
                        T0.plus(DEFAULT_FAIL_OPEN_WINDOW_S as i64)
                    }
                    "active_long_ago" => {
                        script(&a, [ok()]);
                        a.decide(Some(&k), ANY, T0).await;
                        T0.plus(DEFAULT_FAIL_OPEN_WINDOW_S as i64 + 1)
                    }
                    "denied_last" => {
                        script(&a, [ok(), Answer::Decide(Err(Denial::KeyDisabled), None)]);
                        a.decide(Some(&k), ANY, T0).await;
                        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "key_disabled");
                        T0.plus(1)
                    }
                    _ => T0,
                };
                script(&a, [answer()]);
                let got = code(&a.decide(Some(&k), ANY, now).await);
                let (closed, open) = expected(knowledge, fault);
                let want = if mode == FailMode::Open { open } else { closed };
                assert_eq!(got, want, "{fault} x {knowledge} x {mode:?}");
            }
        }
    }
    // An unknown hash whose lookup fails never passes, in either mode, whatever the fault.
    for fault in [Fault::Timeout, Fault::Server, Fault::Connection, Fault::Throttled] {
        let a = Authorizer::new(Scripted::default(), FailMode::Open);
        *a.store().lookup_fault.lock().unwrap() = Some(fault);
        let random = ApiKey::generate(KeyEnv::Live).unwrap();
        assert_eq!(code(&a.decide(Some(random.expose_secret()), ANY, T0).await), "authorization_unavailable");
    }
}

#[tokio::test]
async fn fail_open_keeps_to_what_the_key_had_left() {
    let a = Authorizer::new(Scripted::default(), FailMode::Open);
    let k = key(a.store());
    // Storage allowed the 98th of 100 in this window: two are left.
    script(&a, [Answer::Decide(Ok(()), rate(100, 98, T0.plus(30)))]);
    a.decide(Some(&k), ANY, T0).await;
    script(&a, (0..4).map(|_| Answer::Fail(Fault::Timeout)));
    let mut codes = vec![];
    for _ in 0..3 {
        codes.push(code(&a.decide(Some(&k), ANY, T0.plus(1)).await));
    }
    assert_eq!(codes, ["degraded", "degraded", "rate_limited"]);
    // The next window starts afresh, as storage would have it.
    let d = a.decide(Some(&k), ANY, T0.plus(31)).await;
    assert_eq!(code(&d), "degraded");
    assert_eq!(d.rate.map(|r| (r.used, r.reset)), Some((1, T0.plus(90))));
    assert!(d.key.is_some(), "a degraded decision still names the key for the upstream");
}

#[tokio::test]
async fn unusable_hashes_cost_storage_once() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    // Unknown: one lookup, then memory, until the backstop expires.
    let random = ApiKey::generate(KeyEnv::Live).unwrap();
    for _ in 0..5 {
        assert_eq!(code(&a.decide(Some(random.expose_secret()), ANY, T0).await), "invalid_api_key");
    }
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 1);
    a.decide(Some(random.expose_secret()), ANY, T0.plus(UNKNOWN_HASH_TTL_S)).await;
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 2);

    // Revoked and rotated-away: one decision each, then never again.
    for denial in [Denial::KeyRevoked, Denial::InvalidKey] {
        let k = key(a.store());
        script(&a, [ok(), Answer::Decide(Err(denial), None)]);
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
        let before = a.store().decisions.load(Ordering::SeqCst);
        for i in 0..5 {
            assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(i * 86_400)).await), denial.code());
        }
        assert_eq!(a.store().decisions.load(Ordering::SeqCst), before + 1, "{denial:?}");
    }
}

#[tokio::test]
async fn disabled_and_inactive_keys_are_asked_every_time() {
    // They can change back at any moment (enable, a paid invoice): nothing from memory.
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    script(
        &a,
        [
            Answer::Decide(Err(Denial::KeyDisabled), None),
            Answer::Decide(Err(Denial::SubscriptionInactive), None),
            Answer::Decide(Err(Denial::KeyExpired), None),
            ok(),
        ],
    );
    let mut codes = vec![];
    for _ in 0..4 {
        codes.push(code(&a.decide(Some(&k), ANY, T0).await));
    }
    assert_eq!(codes, ["key_disabled", "subscription_inactive", "key_expired", "ok"]);
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_spent_window_is_answered_from_memory_until_a_recheck_and_its_denials_are_recorded() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    // Spent until T0+45: answered here until T0+10 (the recheck), then asked again.
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(45)))]);
    let d = a.decide(Some(&k), ANY, T0).await;
    assert_eq!((code(&d), d.retry_after(T0)), ("rate_limited", Some(45)));
    for s in 0..SPENT_RECHECK_S {
        let d = a.decide(Some(&k), ANY, T0.plus(s)).await;
        assert_eq!((code(&d), d.retry_after(T0.plus(s))), ("rate_limited", Some(45 - s as u64)));
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 1);
    // The sweep every two seconds records those answered here so far; never more.
    let swept = a.store().recorded.load(Ordering::SeqCst);
    assert!(swept > 0 && swept < SPENT_RECHECK_S as u64, "{swept} recorded by the sweep");
    // The recheck: storage now allows (a raised limit); the ten answered here are recorded,
    // each once, between the sweep and the recheck.
    script(&a, [ok()]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "ok");
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 2);
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), SPENT_RECHECK_S as u64);
    // A window that resets sooner than the recheck is asked at its reset.
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(12))), ok()]);
    a.decide(Some(&k), ANY, T0.plus(11)).await;
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(12)).await), "ok");
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_hammering_refused_key_is_answered_from_memory_until_the_recheck() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    let disabled = || Answer::Decide(Err(Denial::KeyDisabled), None);
    script(&a, (0..HOT_REFUSALS_PER_S).map(|_| disabled()));
    for _ in 0..HOT_REFUSALS_PER_S + 20 {
        assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "key_disabled");
    }
    assert_eq!(a.store().decisions.load(Ordering::SeqCst), u64::from(HOT_REFUSALS_PER_S));
    // Enabled meanwhile: the recheck sees it, and the 20 answered here are recorded.
    script(&a, [ok()]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "ok");
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 20);
    assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::KeyDisabled, 20)], "counted under their code");
}

#[tokio::test]
async fn open_never_lets_a_key_through_that_storage_refused_last() {
    let a = Authorizer::new(Scripted::default(), FailMode::Open);
    let k = key(a.store());
    script(&a, [ok(), Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(30)))]);
    a.decide(Some(&k), ANY, T0).await;
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(1)).await), "rate_limited");
    // The outage begins after the recheck but inside the window storage called spent.
    script(&a, [Answer::Fail(Fault::Timeout)]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(1 + SPENT_RECHECK_S)).await), "authorization_unavailable");
}

#[tokio::test]
async fn denials_answered_from_memory_survive_a_failed_recheck() {
    let a = Authorizer::new(Scripted::default(), FailMode::Closed);
    let k = key(a.store());
    script(&a, [Answer::Decide(Err(Denial::RateLimited), rate(100, 100, T0.plus(3_600)))]);
    for _ in 0..4 {
        a.decide(Some(&k), ANY, T0).await;
    }
    script(&a, [Answer::Fail(Fault::Server), Answer::Decide(Err(Denial::RateLimited), None)]);
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 0, "not recorded before the sweep is due");
    assert_eq!(code(&a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S)).await), "authorization_unavailable");
    // The failed recheck put them back, and the sweep after it recorded them: once.
    a.decide(Some(&k), ANY, T0.plus(SPENT_RECHECK_S + 1)).await;
    assert_eq!(a.store().recorded.load(Ordering::SeqCst), 3, "recorded once, after the failed recheck");
    assert_eq!(*a.store().recorded_codes.lock().unwrap(), [(Denial::RateLimited, 3)]);
}

#[tokio::test]
async fn a_flood_of_random_keys_evicts_no_key_in_use() {
    let options = AuthorizerOptions { capacity: 8, ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    let keys: Vec<String> = (0..8).map(|_| key(a.store())).collect();
    script(&a, keys.iter().map(|_| ok()));
    for k in &keys {
        a.decide(Some(k), ANY, T0).await;
    }
    for _ in 0..1_000 {
        let random = ApiKey::generate(KeyEnv::Live).unwrap();
        a.decide(Some(random.expose_secret()), ANY, T0).await;
    }
    let lookups = a.store().lookups.load(Ordering::SeqCst);
    script(&a, keys.iter().map(|_| ok()));
    for k in &keys {
        assert_eq!(code(&a.decide(Some(k), ANY, T0).await), "ok");
    }
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), lookups, "every key in use was still known");
}

#[tokio::test]
async fn the_other_environment_never_reaches_storage() {
    let options = AuthorizerOptions { key_env: Some(KeyEnv::Live), ..AuthorizerOptions::default() };
    let a = Authorizer::with_options(Scripted::default(), options);
    let test_key = ApiKey::generate(KeyEnv::Test).unwrap();
    assert_eq!(code(&a.decide(Some(test_key.expose_secret()), ANY, T0).await), "invalid_api_key");
    assert_eq!(a.store().lookups.load(Ordering::SeqCst), 0);
}

#[test]
fn keys_come_from_x_api_key_then_bearer() {
    assert_eq!(presented_key([("X-Api-Key", "tg_a"), ("authorization", "Bearer tg_b")]), Some("tg_a"));
    assert_eq!(presented_key([("AUTHORIZATION", "bearer  tg_b "), ("x-api-key", " ")]), Some("tg_b"));
    assert_eq!(presented_key([("authorization", "Basic dXNlcg==")]), None);
    assert_eq!(presented_key([("authorization", "Bearer")]), None);
    assert_eq!(presented_key([("accept", "*/*")]), None);
    assert_eq!(bearer_token("Bearer tg_x"), Some("tg_x"));
}

#[test]
fn context_and_headers_for_a_rate_limited_key() {
    let now = UnixTime(1_000);
    let d = Decision {
        outcome: Err(Denial::RateLimited),
        key: Some(KeyContext {
            key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
            customer_id: CustomerId::parse("acme").unwrap(),
            plan_id: None,
            scopes: vec![],
        }),
        rate: Some(LimitStatus { limit: 100, used: 100, reset: UnixTime(1_022), window_s: 60 }),
        quota: None,
        degraded: false,
        from_memory: false,
    };
    let ctx = AuthorizerContext::from_decision(&d, now);
    assert_eq!((ctx.code.as_str(), ctx.status, ctx.retry_after), ("rate_limited", 429, Some(22)));
    let headers = ctx.rate_limit_headers();
    let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("RateLimit-Policy"), Some("\"default\";q=100;w=60"));
    assert_eq!(get("RateLimit"), Some("\"default\";r=0;t=22"));
    assert_eq!(get("X-RateLimit-Remaining"), Some("0"));
    assert_eq!(get("Retry-After"), Some("22"));
    // Flat JSON with no nulls: API Gateway accepts only primitive context values.
    let json = serde_json::to_value(&ctx).unwrap();
    assert!(json.as_object().unwrap().values().all(|v| !v.is_null() && !v.is_object() && !v.is_array()));
}

/// `n` decisions for `k` at once, each its own task: the decisions, in the order they end.
async fn at_once(
    a: &std::sync::Arc<Authorizer<Scripted>>,
    k: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Decision>> {
    (0..n)
        .map(|_| {
            let (a, k) = (a.clone(), k.to_owned());
            tokio::spawn(async move { a.decide(Some(&k), ANY, T0).await })
        })
        .collect()
}

/// A container serving many requests at once: one decision per key goes to storage, the
/// others wait for it (twice the median round trip here: 40 ms) and are served from the block
/// the next one brings back, sized for the callers that queued.
#[tokio::test(start_paused = true)]
async fn concurrent_decisions_for_a_key_share_one_write() {
    let a = std::sync::Arc::new(Authorizer::new(Scripted::default(), FailMode::Closed));
    let k = key(a.store());
    a.store().grant_blocks.store(true, Ordering::SeqCst);
    let room = rate(1_000_000, 0, T0.plus(60));
    script(&a, (0..3).map(|_| Answer::Decide(Ok(()), room)));
    // One alone: storage takes 20 ms.
    a.store().delays.lock().unwrap().extend([20; 3]);
    assert_eq!(code(&a.decide(Some(&k), ANY, T0).await), "ok");
    // Eight at once: the first takes off alone (one request: not hot by pace, nine this
    // second), seven wait; one of those takes a block for the eight that asked at once, and
    // the other six are served from it without storage.
    let mut from_memory = 0;
    for t in at_once(&a, &k, 8).await {
        let d = t.await.unwrap();
        assert_eq!(code(&d), "ok");
        from_memory += usize::from(d.from_memory);
    }
    let takes = a.store().takes.lock().unwrap().iter().map(|t| t.tokens).collect::<Vec<_>>();
    assert_eq!(takes, [1, 1, 8], "two writes for eight decisions at once");
    assert_eq!(from_memory, 6);
    // What the block admitted is counted once it is settled, and its last token given back.
    a.settle_leases(T0, true).await;
    let settled = a.store().settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].0, [(T0.day(), 6)]);
    assert_eq!(settled[0].1.map(|u| u.tokens), Some(1));
}

/// A write that stalls holds the others no longer than their bound: then each takes its own
/// write, of one request, beside it.
#[tokio::test(start_paused = true)]
async fn a_stalled_write_holds_the_others_only_their_bound() {
    let a = std::sync::Arc::new(Authorizer::new(Scripted::default(), FailMode::Closed));
    let k = key(a.store());
    script(&a, (0..11).map(|_| ok()));
    a.store().delays.lock().unwrap().extend([20, 20, 20, 10_000, 20, 20, 20, 20, 20, 20, 20]);
    for _ in 0..3 {
        a.decide(Some(&k), ANY, T0).await;
    }
    let started = tokio::time::Instant::now();
    let mut tasks = at_once(&a, &k, 8).await;
    let stalled = tasks.remove(0);
    for t in tasks {
        assert_eq!(code(&t.await.unwrap()), "ok");
    }
    // 40 ms waiting, then their own 20 ms write: long before the stalled one answers.
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(60));
    assert!(!stalled.is_finished());
    let takes = a.store().takes.lock().unwrap().iter().map(|t| t.tokens).collect::<Vec<_>>();
    assert_eq!(takes, [1; 11], "writes beside one in flight take one request each");
    assert_eq!(code(&stalled.await.unwrap()), "ok");
}
