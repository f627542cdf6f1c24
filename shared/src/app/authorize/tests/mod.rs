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

mod fail_modes;
mod leases;
