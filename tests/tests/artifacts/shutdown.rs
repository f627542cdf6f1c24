//! The authorizer binary as Lambda runs it, through a hot key's traffic and then the end of its
//! execution environment: the runtime registers an extension (so Lambda sends SIGTERM before
//! shutting the environment down), and on SIGTERM the container counts what its blocks admitted
//! and gives back what they left, within Lambda's 500 ms, and exits.

use bytes::Bytes;
use shared::domain::api_key::ApiKey;
use shared::domain::customers::CustomerId;
use shared::domain::plans::{Period, PlanId, Quota};
use shared::domain::time::UnixTime;
use shared::store::{KeyStore, NewKey, PlanStore};
use std::time::Duration;
use tollgate_tests::fresh_db;
use tollgate_tests::hot::key_counts;
use tollgate_tests::lambda::{Emulator, Function};

const FIXTURE_KEY: &str = "tg_test_0Eoh211G4c8wtVWM00my5rsNSFlKgaWqQ4mb8gdEqno1nomcz";
const REQUESTS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_authorizer_settles_its_blocks_and_exits() {
    settles_on_sigterm(None).await;
}

/// The same on Lambda Managed Instances: 8 invocations at once in one environment (the
/// runtime's concurrent workers), the key's blocks shared by them, the same exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_eight_invocations_at_once_the_counts_are_the_same() {
    settles_on_sigterm(Some(8)).await;
}

async fn settles_on_sigterm(concurrency: Option<u64>) {
    let db = fresh_db().await;
    let now = UnixTime::now();
    let mut plan = tollgate_tests::plan("metered", None, &[], Some("api_requests"), now);
    plan.quota = Some(Quota { limit: 1_000_000, period: Period::Month });
    db.store.create_plan(&plan).await.unwrap();
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    let new = NewKey::new(&key, CustomerId::parse("acme").unwrap(), Some(PlanId::parse("metered").unwrap()), now);
    let key_id = db.store.create_key(new).await.unwrap().key_id;

    let log = std::env::temp_dir().join(format!("tollgate-shutdown-{}.log", uuid::Uuid::new_v4().simple()));
    let mut function =
        Function::new(super::logs::binary("authorizer"), "authorizer", &db.endpoint, &db.table, log.clone());
    if let Some(n) = concurrency {
        function = function.with_env("AWS_LAMBDA_MAX_CONCURRENCY", &n.to_string());
    }
    let mut emulator = Emulator::start().await.expect("runtime API emulator");
    let process = function.spawn(&emulator).expect("start the authorizer");
    let event = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/authorizer-http-api-key.json"))
        .unwrap();
    let invoked = match concurrency {
        None => {
            let mut each = vec![];
            for _ in 0..REQUESTS {
                each.push(emulator.invoke(Bytes::from(event.clone())).await);
            }
            each
        }
        Some(_) => emulator.invoke_all((0..REQUESTS).map(|_| Bytes::from(event.clone())).collect()).await,
    };
    for outcome in invoked {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let body: serde_json::Value =
            serde_json::from_slice(&outcome.unwrap_or_else(|e| panic!("{e}\n{text}")).body).unwrap();
        assert_eq!(body["isAuthorized"], true, "{body}");
    }
    let peak = emulator.peak_in_flight();
    match concurrency {
        None => assert_eq!(peak, 1, "one invocation at a time"),
        Some(n) => assert_eq!(peak, n, "{n} invocations in flight at once"),
    }
    assert_eq!(emulator.extensions().len(), 1, "an extension registered, so Lambda would send SIGTERM");

    // A block is outstanding: requests admitted and not yet counted, or tokens reserved and
    // not yet spent (the key ran hot, so its last write reserved more than one).
    // (With concurrency the background sweep may have settled it already: what is asserted
    // there is the end state.)
    let (billed, reserved) = key_counts(&db, &key_id).await;
    if concurrency.is_none() {
        assert!(billed < REQUESTS || reserved > REQUESTS, "nothing outstanding: billed {billed}, reserved {reserved}");
    }

    let code = tokio::task::spawn_blocking(move || process.terminate(Duration::from_millis(500))).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "exits within 500 ms of SIGTERM\n{text}");
    assert!(text.contains("shutdown: leases settled"), "{text}");
    // Every allowed request billed once, every unspent token back.
    assert_eq!(key_counts(&db, &key_id).await, (REQUESTS, REQUESTS), "{text}");
    emulator.stop().await;
    let _ = std::fs::remove_file(&log);
}
