//! The hot-key load simulation: one key at `rps` requests a second spread over `containers`
//! authorizers (each its own memory, as Lambda's execution environments are), ordinary keys
//! beside it, all through the fault proxy enforcing DynamoDB's per-item write capacity on a
//! simulated clock. Time is simulated by the second: every container decides its share of a
//! second's requests, the containers concurrently, before the clock moves on, so a run of
//! 60 simulated seconds takes what its decisions take, not a minute.
//!
//! Used by `tests/tests/storage/hot_key.rs` (short runs, every invariant asserted) and by
//! `make bench` (the full run, reported).

use crate::TestDb;
use crate::faults::FaultProxy;
use futures_util::future::join_all;
use shared::app::authorize::{Authorizer, Route};
use shared::config::FailMode;
use shared::domain::api_key::{ApiKey, KeyEnv, KeyId};
use shared::domain::customers::CustomerId;
use shared::domain::limits::window_end;
use shared::domain::plans::{Period, PlanId, Quota, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::schema::{KEY_SK, PK, SK, key_pk};
use shared::store::{KeyStore, NewKey, PlanStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// DynamoDB's write capacity for one item, per second.
pub const ITEM_WRITES_PER_S: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct HotConfig {
    /// The hot key's requests per second, all containers together.
    pub rps: u64,
    pub containers: usize,
    pub seconds: i64,
    /// The hot key's rate limit: (limit, window seconds); a limit of 0: none.
    pub limit: (u64, u64),
    /// Its monthly quota (0: none).
    pub quota: u64,
    /// Ordinary keys, each sent one request every `ordinary_every_s` seconds.
    pub ordinary_keys: usize,
    pub ordinary_every_s: i64,
    /// Containers that stop at the end without settling (a crash, or a reclaimed environment
    /// that got no SIGTERM): what they admitted and did not count is the billing drift.
    pub crashed: usize,
    /// The first simulated second (aligned to the window).
    pub start: UnixTime,
    /// The operator revokes the hot key at the start of this second of the run.
    pub revoke_at: Option<i64>,
    /// The operator changes the hot plan's rate limit at the start of these seconds of the run
    /// (second, new limit), blocks outstanding.
    pub limit_changes: Vec<(i64, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct HotReport {
    pub hot_allowed: u64,
    pub hot_denied: u64,
    /// The hot key's allowed requests per rate-limit window (by the window's end).
    pub allowed_per_window: BTreeMap<i64, u64>,
    /// Write requests the simulator let through to the hot key's item, and refused for capacity.
    pub hot_writes: u64,
    pub hot_throttled: u64,
    pub ordinary_allowed: u64,
    pub ordinary_denied: u64,
    pub ordinary_writes: u64,
    pub ordinary_throttled: u64,
    /// What the hot key's item counts for billing (`ua_<day>`), after the surviving
    /// containers settled.
    pub billed: u64,
    /// What the crashed containers had admitted and not yet counted when they stopped.
    pub unsettled_by_crashed: u64,
    /// The hot key's allowed requests per second of the run.
    pub allowed_per_second: Vec<u64>,
    pub wall: Duration,
}

impl HotConfig {
    /// The load: one key at 10,000 requests a second from 50 containers, for
    /// `seconds`, under a limit that does not bind (1,000,000 a minute, 1,000,000,000 a month),
    /// beside `ordinary_keys` ordinary keys sent a request every `ordinary_every_s` seconds.
    pub fn ten_thousand_a_second(seconds: i64, ordinary_keys: usize, ordinary_every_s: i64) -> Self {
        Self {
            rps: 10_000,
            containers: 50,
            seconds,
            limit: (1_000_000, 60),
            quota: 1_000_000_000,
            ordinary_keys,
            ordinary_every_s,
            crashed: 0,
            // 2026-12-06T12:00:00Z: mid-day, aligned to every window the runs use.
            start: UnixTime(1_796_990_400),
            revoke_at: None,
            limit_changes: vec![],
        }
    }

    /// A fifth of the load (requests, containers, ordinary keys, crashes) against a server
    /// other than in-process Dynoxide: moto answers one request at a time. The invariants are
    /// the same at any scale.
    pub fn for_backend(self, db: &TestDb) -> Self {
        if db.backend() == "dynoxide" {
            return self;
        }
        Self {
            rps: self.rps / 5,
            containers: (self.containers / 5).max(1),
            ordinary_keys: self.ordinary_keys / 5,
            crashed: self.crashed / 5,
            limit: (self.limit.0 / 5, self.limit.1),
            limit_changes: self.limit_changes.iter().map(|&(at, limit)| (at, limit / 5)).collect(),
            ..self
        }
    }
}

impl HotReport {
    /// The most any window admitted.
    pub fn max_per_window(&self) -> u64 {
        self.allowed_per_window.values().copied().max().unwrap_or(0)
    }

    pub fn hot_writes_per_decision(&self) -> f64 {
        self.hot_writes as f64 / (self.hot_allowed + self.hot_denied).max(1) as f64
    }
}

/// Runs the simulation against `db`'s table (keys and plans are created fresh).
pub async fn run(db: &TestDb, config: &HotConfig) -> HotReport {
    let now = config.start;
    let (limit, window_s) = config.limit;
    let mut hot_plan = crate::plan("hot", None, &[], None, now);
    assert!(limit > 0 || config.limit_changes.is_empty(), "a limit to change");
    hot_plan.rate_limit = (limit > 0).then_some(RateLimit { limit, window_s });
    hot_plan.quota = (config.quota > 0).then_some(Quota { limit: config.quota, period: Period::Month });
    db.store.create_plan(&hot_plan).await.unwrap();
    let ordinary_plan = crate::plan("ordinary", Some(600), &[], None, now);
    db.store.create_plan(&ordinary_plan).await.unwrap();

    let hot_key = ApiKey::generate(KeyEnv::Live).unwrap();
    let hot_id = make_key(db, &hot_key, "hot-customer", &hot_plan.id, now).await;
    let mut ordinary = Vec::with_capacity(config.ordinary_keys);
    for i in 0..config.ordinary_keys {
        let k = ApiKey::generate(KeyEnv::Live).unwrap();
        make_key(db, &k, &format!("cust-{}", i % 100), &ordinary_plan.id, now).await;
        ordinary.push(k.expose_secret().to_owned());
    }

    let clock = Arc::new(AtomicI64::new(now.secs()));
    let proxy = FaultProxy::start(&db.endpoint, 7).await;
    let c = clock.clone();
    proxy.limit_item_writes(ITEM_WRITES_PER_S, Arc::new(move || c.load(Ordering::SeqCst)));
    // Patient: a slow server (moto, single-threaded, behind 50 containers) must not turn into
    // timeouts, whose ambiguous retries would blur what is measured.
    let client = proxy.client(Duration::from_secs(30), Duration::from_secs(60)).await;
    let store = DynamoStore::new(client, db.table.clone()).with_decision_budget(Duration::from_secs(60));
    let containers: Vec<Authorizer<DynamoStore>> =
        (0..config.containers).map(|_| Authorizer::new(store.clone(), FailMode::Closed)).collect();

    let hot_secret = hot_key.expose_secret().to_owned();
    let route = Route { method: "GET", path: "/v1/thing" };
    let started = Instant::now();
    let mut report = HotReport::default();
    for second in 0..config.seconds {
        let t = now.plus(second);
        clock.store(t.secs(), Ordering::SeqCst);
        if config.revoke_at == Some(second) {
            db.store.revoke_key(&hot_id, t).await.unwrap();
        }
        for &(_, new_limit) in config.limit_changes.iter().filter(|(at, _)| *at == second) {
            hot_plan.rate_limit = Some(RateLimit { limit: new_limit, window_s });
            hot_plan.updated_at = t;
            let deadline = Instant::now() + Duration::from_secs(30);
            let fan_out = db.store.update_plan(&hot_plan, t, deadline).await.unwrap();
            assert!(fan_out.complete && fan_out.rewritten == 1, "{fan_out:?}");
        }
        let per_container = config.rps / config.containers as u64;
        let extra = (config.rps % config.containers as u64) as usize;
        let due: Vec<&String> = ordinary
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as i64) % config.ordinary_every_s == second % config.ordinary_every_s)
            .map(|(_, k)| k)
            .collect();
        let outcomes = join_all(containers.iter().enumerate().map(|(ci, a)| {
            let hot_n = per_container + u64::from(ci < extra);
            let mine: Vec<&String> =
                due.iter().enumerate().filter(|(i, _)| i % config.containers == ci).map(|(_, k)| *k).collect();
            let hot_secret = hot_secret.as_str();
            async move {
                let (mut hot, mut ord) = ((0u64, 0u64), (0u64, 0u64));
                // The ordinary keys' requests interleaved with the hot key's.
                let every = if mine.is_empty() { u64::MAX } else { (hot_n / mine.len() as u64).max(1) };
                let mut next = mine.iter();
                for i in 0..hot_n {
                    if i % every == 0
                        && let Some(k) = next.next()
                    {
                        let d = a.decide(Some(k), route, t).await;
                        if d.is_allowed() { ord.0 += 1 } else { ord.1 += 1 }
                    }
                    let d = a.decide(Some(hot_secret), route, t).await;
                    if d.is_allowed() {
                        hot.0 += 1
                    } else {
                        hot.1 += 1;
                        if std::env::var("HOT_DEBUG").is_ok() {
                            eprintln!("hot denied at {t:?}: {:?}", d.outcome);
                        }
                    }
                }
                for k in next {
                    let d = a.decide(Some(k), route, t).await;
                    if d.is_allowed() { ord.0 += 1 } else { ord.1 += 1 }
                }
                (hot, ord)
            }
        }))
        .await;
        report.allowed_per_second.push(outcomes.iter().map(|((ha, _), _)| ha).sum());
        for ((ha, hd), (oa, od)) in outcomes {
            report.hot_allowed += ha;
            report.hot_denied += hd;
            report.ordinary_allowed += oa;
            report.ordinary_denied += od;
            *report.allowed_per_window.entry(window_end(t, window_s).secs()).or_default() += ha;
        }
    }
    let end = now.plus(config.seconds);
    clock.store(end.secs(), Ordering::SeqCst);
    let survivors = config.containers - config.crashed.min(config.containers);
    for (i, a) in containers.iter().enumerate() {
        if i < survivors {
            a.settle_leases(end, true).await;
        } else {
            report.unsettled_by_crashed += a.unsettled();
        }
    }
    report.wall = started.elapsed();

    let needle = hot_id.as_str();
    (report.hot_writes, report.hot_throttled) = proxy.item_writes(needle);
    let (all_writes, all_throttled) = proxy.item_writes("KEY#");
    report.ordinary_writes = all_writes - report.hot_writes;
    report.ordinary_throttled = all_throttled - report.hot_throttled;
    report.billed = key_counts(db, &hot_id).await.0;
    report
}

pub async fn make_key(db: &TestDb, key: &ApiKey, customer: &str, plan: &PlanId, now: UnixTime) -> KeyId {
    let new = NewKey::new(key, CustomerId::parse(customer).unwrap(), Some(plan.clone()), now);
    db.store.create_key(new).await.unwrap().key_id
}

/// What the key's item counts: (for billing, the sum of its `ua_<day>`; against its quota,
/// `q_count`, which includes requests reserved by blocks and not yet spent).
pub async fn key_counts(db: &TestDb, key_id: &KeyId) -> (u64, u64) {
    let item = db
        .store
        .client()
        .get_item()
        .table_name(&db.table)
        .key(PK, aws_sdk_dynamodb::types::AttributeValue::S(key_pk(key_id.as_str())))
        .key(SK, aws_sdk_dynamodb::types::AttributeValue::S(KEY_SK.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_default();
    let n =
        |v: &aws_sdk_dynamodb::types::AttributeValue| v.as_n().ok().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let billed = item.iter().filter(|(k, _)| k.starts_with("ua_")).map(|(_, v)| n(v)).sum();
    (billed, item.get("q_count").map(n).unwrap_or(0))
}
