//! Callers at once on one key in one container (the local stack, Lambda Managed Instances):
//! DynamoDB write requests per decision with 1 and with 8 concurrent callers, and how long a
//! decision that queued behind another's write takes (p99) against the storage round trip. On
//! in-process Dynoxide, or the server `TOLLGATE_TEST_DYNAMODB_ENDPOINT` names (moto, started
//! single-threaded by `scripts/with-moto.sh` for `make bench`).

use crate::{Row, fmt_duration, percentile, row};
use shared::app::authorize::Authorizer;
use shared::config::FailMode;
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::customers::CustomerId;
use shared::domain::plans::{PlanId, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::{KeyStore, NewKey, PlanStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_tests::{ANY_ROUTE, fresh_db};

/// Decisions each caller makes.
const EACH: usize = 1_500;

/// (writes per decision, every decision's latency) for `callers` callers on one fresh key.
async fn measure(callers: usize) -> (f64, Vec<Duration>, &'static str) {
    let db = fresh_db().await;
    let now = UnixTime::now();
    let plan = shared::domain::plans::Plan {
        rate_limit: Some(RateLimit { limit: 100_000_000, window_s: 60 }),
        ..tollgate_tests::plan("bench-concurrency", None, &[], None, now)
    };
    db.store.create_plan(&plan).await.unwrap();
    let secret = ApiKey::generate(KeyEnv::Live).unwrap();
    let new = NewKey::new(
        &secret,
        CustomerId::parse("bench").unwrap(),
        Some(PlanId::parse("bench-concurrency").unwrap()),
        now,
    );
    db.store.create_key(new).await.unwrap();
    let authorizer = Arc::new(Authorizer::new(db.store.clone(), FailMode::Closed));
    let key = secret.expose_secret().to_owned();
    // The key id cached, as in steady state.
    assert!(authorizer.decide(Some(&key), ANY_ROUTE, UnixTime::now()).await.is_allowed());
    db.requests.reset();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (a, key) = (authorizer.clone(), key.clone());
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    let started = Instant::now();
                    assert!(a.decide(Some(&key), ANY_ROUTE, UnixTime::now()).await.is_allowed());
                    took.push(started.elapsed());
                }
                took
            })
        })
        .collect();
    let mut latencies = vec![];
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let writes = db.requests.get("UpdateItem") as f64 / latencies.len() as f64;
    authorizer.settle_leases(UnixTime::now(), true).await;
    latencies.sort();
    (writes, latencies, backend(&db))
}

/// Which emulator: in-process Dynoxide, or the server TOLLGATE_TEST_DYNAMODB_ENDPOINT names.
fn backend(db: &tollgate_tests::TestDb) -> &'static str {
    match db.backend() {
        "dynoxide" => "dynoxide",
        _ => "TOLLGATE_TEST_DYNAMODB_ENDPOINT (make bench: single-threaded moto)",
    }
}

/// The median round trip of one decision's write alone (one caller, a cold key each time:
/// every decision goes to storage).
async fn round_trip() -> Duration {
    let (_, latencies, _) = measure_single_writes().await;
    percentile(&latencies, 50.0)
}

async fn measure_single_writes() -> (f64, Vec<Duration>, &'static str) {
    let db = fresh_db().await;
    let now = UnixTime::now();
    db.store.create_plan(&tollgate_tests::plan("bench-rtt", Some(100_000_000), &[], None, now)).await.unwrap();
    let mut latencies = vec![];
    for _ in 0..200 {
        let secret = ApiKey::generate(KeyEnv::Live).unwrap();
        let new =
            NewKey::new(&secret, CustomerId::parse("bench").unwrap(), Some(PlanId::parse("bench-rtt").unwrap()), now);
        db.store.create_key(new).await.unwrap();
        // A fresh authorizer each time: the key is never hot, every decision one write.
        let a = Authorizer::new(db.store.clone(), FailMode::Closed);
        a.decide(Some(secret.expose_secret()), ANY_ROUTE, UnixTime::now()).await;
        let started = Instant::now();
        a.decide(Some(secret.expose_secret()), ANY_ROUTE, UnixTime::now()).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (0.0, latencies, backend(&db))
}

pub async fn rows() -> Vec<Row> {
    let rtt = round_trip().await;
    let mut rows = vec![];
    for callers in [1, 8] {
        let (writes, latencies, backend) = measure(callers).await;
        let p99 = percentile(&latencies, 99.0);
        rows.push(row(
            format!("{callers} concurrent caller(s) on one key, one container, {backend}: write requests per decision ({} decisions)", latencies.len()),
            format!("{writes:.4}{}", crate::verdict(callers == 1 || writes <= 0.05)),
            if callers == 8 { "<= 0.05" } else { "" },
        ));
        rows.push(row(
            format!(
                "{callers} concurrent caller(s) on one key, {backend}: decision p99 (storage round trip alone: {})",
                fmt_duration(rtt)
            ),
            format!(
                "{} ({:.2}x the round trip; p50 {}, p90 {}, max {})",
                fmt_duration(p99),
                p99.as_secs_f64() / rtt.as_secs_f64().max(1e-9),
                fmt_duration(percentile(&latencies, 50.0)),
                fmt_duration(percentile(&latencies, 90.0)),
                fmt_duration(*latencies.last().unwrap()),
            ),
            if callers == 8 { "<= 2x the round trip" } else { "" },
        ));
    }
    rows
}
