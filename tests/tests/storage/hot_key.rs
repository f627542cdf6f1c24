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
