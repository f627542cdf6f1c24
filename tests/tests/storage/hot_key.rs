//! Hot keys on the hot-partition simulator (tests/src/hot.rs): one key at 10,000 requests a
//! second from 50 containers beside ordinary keys, through the fault proxy enforcing DynamoDB's
//! 1,000 write units a second per item. What must hold (shared/src/domain/lease.rs): never more
//! than the limit in any window; every allowed request billed exactly once, except what a
//! crashed container had not counted yet (at most its blocks); a fraction of a write per hot
//! decision; exactly one write per ordinary allowed decision; a revocation within a lease.

use shared::domain::lease::{LEASE_S, MAX_BLOCK};
use tollgate_tests::fresh_db;
use tollgate_tests::hot::{HotConfig, run};

fn config() -> HotConfig {
    HotConfig::ten_thousand_a_second(6, 300, 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_sustains_ten_thousand_a_second_at_a_fraction_of_a_write_each() {
    let db = fresh_db().await;
    let c = config().for_backend(&db);
    let r = run(&db, &c).await;
    eprintln!("{r:?}");
    // Under its limit, every request is allowed: no throttle, no 503.
    assert_eq!(r.hot_allowed, c.rps * c.seconds as u64, "{r:?}");
    assert_eq!(r.hot_throttled, 0);
    assert!(r.hot_writes_per_decision() <= 0.1, "{} writes per decision", r.hot_writes_per_decision());
    // Billing: each allowed request counted once, after the containers settled.
    assert_eq!(r.billed, r.hot_allowed);
    // Ordinary keys keep the exact path: one write per allowed decision, nothing refused.
    assert_eq!(r.ordinary_denied, 0);
    assert_eq!(r.ordinary_allowed, (c.ordinary_keys as i64 * c.seconds / c.ordinary_every_s) as u64);
    // Exactly one write per allowed decision, plus one per key for the first request of its
    // first window (its condition fails on the new key's empty counters, then the rollover):
    // the steady state is one.
    assert_eq!(
        r.ordinary_writes,
        r.ordinary_allowed + c.ordinary_keys as u64,
        "ordinary keys: one write per allowed decision"
    );
    assert_eq!(r.ordinary_throttled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_never_gets_more_than_its_limit() {
    let db = fresh_db().await;
    // 30,000 per 10-second window against 100,000 asked: the limit binds in every window.
    let c = HotConfig { limit: (30_000, 10), seconds: 20, ..config() }.for_backend(&db);
    let r = run(&db, &c).await;
    eprintln!("{r:?}");
    let limit = c.limit.0;
    assert_eq!(r.allowed_per_window.len(), 2);
    for (&end, &allowed) in &r.allowed_per_window {
        assert!(allowed <= limit, "window ending {end}: {allowed} allowed, over the limit of {limit}");
        // Under-admission is bounded by the blocks outstanding when the window ran out.
        assert!(allowed >= limit - limit / 30, "window ending {end}: only {allowed} of {limit} allowed");
    }
    assert_eq!(r.billed, r.hot_allowed, "{r:?}");
    // Denials of a spent key are answered from memory: still a fraction of a write each.
    assert!(r.hot_writes_per_decision() <= 0.1, "{} writes per decision", r.hot_writes_per_decision());
    assert_eq!(r.hot_throttled, 0);
}

/// The operator lowers the plan's limit twice while every container holds blocks: in the
/// middle of a window (40,000 of 50,000 per 10 s, with about 30,000 admitted), and a second
/// before the next window starts (to 30,000), so that window's first blocks start it under the
/// new limit. No window admits more than the limit in force when it filled up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lowering_a_hot_keys_limit_with_blocks_outstanding_never_over_admits() {
    let db = fresh_db().await;
    let c = HotConfig { limit: (50_000, 10), seconds: 20, limit_changes: vec![(3, 40_000), (9, 30_000)], ..config() }
        .for_backend(&db);
    let r = run(&db, &c).await;
    eprintln!("{:?} {:?}", r.allowed_per_window, r.allowed_per_second);
    let windows: Vec<u64> = r.allowed_per_window.values().copied().collect();
    let (mid, next) = (c.limit_changes[0].1, c.limit_changes[1].1);
    assert_eq!(windows.len(), 2);
    assert!(windows[0] <= mid, "first window: {} allowed, over the lowered limit of {mid}", windows[0]);
    assert!(windows[0] >= mid - mid / 30, "first window: only {} of {mid}", windows[0]);
    assert!(windows[1] <= next, "second window: {} allowed, over the lowered limit of {next}", windows[1]);
    assert!(windows[1] >= next - next / 30, "second window: only {} of {next}", windows[1]);
    assert_eq!(r.billed, r.hot_allowed, "{r:?}");
    assert_eq!(r.hot_throttled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_container_leaves_at_most_its_block_unbilled_and_nothing_is_billed_twice() {
    let db = fresh_db().await;
    // 10 of the 50 containers stop mid-traffic without settling (no SIGTERM).
    let c = HotConfig { seconds: 3, crashed: 10, ordinary_keys: 0, ..config() }.for_backend(&db);
    let r = run(&db, &c).await;
    eprintln!("{r:?}");
    assert_eq!(r.hot_allowed, c.rps * 3);
    // Billing never over-counts: what the crashed containers had not counted is exactly the
    // drift, and at most one block each.
    assert_eq!(r.billed + r.unsettled_by_crashed, r.hot_allowed, "{r:?}");
    assert!(r.unsettled_by_crashed > 0, "the crash must leave something to measure");
    assert!(r.unsettled_by_crashed <= c.crashed as u64 * MAX_BLOCK, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_hot_key_is_refused_within_a_lease() {
    let db = fresh_db().await;
    let c = HotConfig { containers: 10, rps: 2_000, seconds: 5, ordinary_keys: 0, revoke_at: Some(3), ..config() };
    let r = run(&db, &c).await;
    eprintln!("{:?}", r.allowed_per_second);
    assert_eq!(&r.allowed_per_second[..3], &[2_000, 2_000, 2_000]);
    // A block lives at most LEASE_S seconds: from the revocation's second + LEASE_S - 1 on, nothing.
    let from = (3 + LEASE_S - 1) as usize;
    assert!(r.allowed_per_second[from..].iter().all(|&n| n == 0), "{:?}", r.allowed_per_second);
    assert_eq!(r.billed, r.hot_allowed);
}

/// A key with no limit at all runs hot too (blocks batch its billing): every request billed once,
/// the idle blocks settled with no counter to give back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unlimited_hot_key_is_billed_exactly() {
    let db = fresh_db().await;
    let c = HotConfig { containers: 5, rps: 500, seconds: 3, ordinary_keys: 0, quota: 0, limit: (0, 60), ..config() };
    let r = run(&db, &c).await;
    assert_eq!((r.hot_allowed, r.billed), (1_500, 1_500), "{r:?}");
    assert!(r.hot_writes_per_decision() <= 0.1, "{r:?}");
}

/// One container alone, a key with a rate limit and no quota: every request of every block is
/// billed, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_container_bills_every_request_of_its_blocks() {
    let db = fresh_db().await;
    let c = HotConfig { containers: 1, rps: 100, seconds: 3, ordinary_keys: 0, quota: 0, ..config() };
    let r = run(&db, &c).await;
    assert_eq!((r.hot_allowed, r.billed), (300, 300), "{r:?}");
    assert!(r.hot_writes < 40, "{r:?}");
}

/// A rollup transaction settling an idle key holds its item for a moment; a write arriving then
/// is refused (TransactionConflict), so it was not applied: a block's write and a settlement
/// refused that way keep what they carried and send it again, and billing stays exact.
#[tokio::test]
async fn writes_refused_by_a_transaction_holding_the_key_keep_what_they_carried() {
    use shared::app::authorize::Authorizer;
    use shared::config::FailMode;
    use shared::domain::api_key::{ApiKey, KeyEnv};
    use shared::store::PlanStore;
    use shared::store::dynamo::DynamoStore;
    use std::time::Duration;
    use tollgate_tests::faults::{Fault, FaultProxy, Rule};

    let db = fresh_db().await;
    let t = config().start;
    let plan = tollgate_tests::plan("hot", Some(1_000_000), &[], None, t);
    db.store.create_plan(&plan).await.unwrap();
    let key = ApiKey::generate(KeyEnv::Live).unwrap();
    let id = tollgate_tests::hot::make_key(&db, &key, "acme", &plan.id, t).await;
    let proxy = FaultProxy::start(&db.endpoint, 11).await;
    let client = proxy.client(Duration::from_secs(5), Duration::from_secs(10)).await;
    let a = Authorizer::new(DynamoStore::new(client, db.table.clone()), FailMode::Closed);
    let decide = |at| a.decide(Some(key.expose_secret()), tollgate_tests::ANY_ROUTE, at);
    for _ in 0..100 {
        assert!(decide(t).await.is_allowed());
    }
    assert!(a.unsettled() > 0, "hot: a block spent from memory");
    // The next second's first write carries the block's requests and is refused once.
    proxy.inject(Rule::on("UpdateItem", Fault::TransactionConflict).times(1));
    for _ in 0..100 {
        assert!(decide(t.plus(1)).await.is_allowed());
    }
    // The settlement on stop is refused twice, then applied.
    proxy.inject(Rule::on("UpdateItem", Fault::TransactionConflict).times(2));
    a.settle_leases(t.plus(2), true).await;
    assert_eq!(proxy.injected_count(Fault::TransactionConflict), 3);
    assert_eq!(a.unsettled(), 0);
    assert_eq!(tollgate_tests::hot::key_counts(&db, &id).await.0, 200, "billed exactly");
}
