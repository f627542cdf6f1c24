//! `make bench`: what one authorization costs.
//!
//! 1. Handler CPU per decision, storage stubbed out behind the `AuthorizeStore` trait: event
//!    JSON in, response JSON out (parse, key check, SHA-256, cache, decision, serialise).
//! 2. DynamoDB requests per allowed decision in steady state, counted by the SDK interceptor.
//! 3. Decision latency against in-process Dynoxide, side by side with a bare `UpdateItem`
//!    round trip to the same endpoint in the same run: the ratio is the cost of everything
//!    that is not the database.
//!
//! Ends with one summary table (criterion's estimates, read back from its output directory).

use authorizer::handler;
use criterion::Criterion;
use serde_json::Value;
use shared::authorize::Authorizer;
use shared::config::FailMode;
use shared::domain::customers::{CustomerAccess, CustomerId, SubscriptionStatus};
use shared::domain::decision::{Counters, Decision, KeyState};
use shared::domain::key_records::KeyStatus;
use shared::domain::keys::{ApiKey, KeyHash, KeyId};
use shared::domain::plans::{Plan, PlanId, Quota, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::metrics::RequestCounter;
use shared::store::{AuthorizeStore, KeyStore, NewKey, PlanStore, StoreResult};
use std::path::PathBuf;
use std::time::Duration;

const FIXTURE_KEY: &str = "tg_test_0Eoh211G4c8wtVWM00my5rsNSFlKgaWqQ4mb8gdEqno1nomcz";
const COUNTED_DECISIONS: u64 = 2_000;

/// Storage answered from memory: only the handler's own work is left to measure.
struct StubStore {
    state: KeyState,
}

impl AuthorizeStore for StubStore {
    async fn key_id_for_hash(&self, _hash: &KeyHash) -> StoreResult<Option<KeyId>> {
        Ok(Some(self.state.key_id.clone()))
    }

    async fn authorize_and_count(&self, _key_id: &KeyId, _hash: &KeyHash, now: UnixTime) -> StoreResult<Decision> {
        let counters = Counters { window_count: 37, ..self.state.counters };
        Ok(Decision::for_key(&self.state, Ok(()), &counters, now))
    }
}

fn stub_state(now: UnixTime) -> KeyState {
    KeyState {
        key_id: KeyId::generate(1_795_428_000_000),
        customer_id: CustomerId::parse("acme").unwrap(),
        plan_id: Some(PlanId::parse("pro").unwrap()),
        status: KeyStatus::Active,
        expires_at: None,
        current_hash: ApiKey::parse(FIXTURE_KEY).unwrap().hash(),
        previous_hash: None,
        access: CustomerAccess { status: Some(SubscriptionStatus::Active), grace_until: None },
        rate_limit: Some(RateLimit { limit: 100, window_s: 60 }),
        quota: Some(Quota { limit: 1_000_000, period: shared::domain::plans::Period::Month }),
        counters: Counters { window_end: now.plus(60), window_count: 0, period_end: now.plus(86_400), period_count: 0 },
    }
}

fn criterion_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // 1. Handler CPU, storage stubbed.
    let event = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/authorizer-http-api-key.json"))
        .expect("events/authorizer-http-api-key.json");
    let now = UnixTime::now();
    let stub = Authorizer::new(StubStore { state: stub_state(now) }, FailMode::Closed);
    let local = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("handler_cpu");
    group.bench_function("stub_store", |b| {
        b.to_async(&local).iter(|| async {
            let value: Value = serde_json::from_str(&event).unwrap();
            let response = handler::handle(&stub, value, now).await.unwrap();
            serde_json::to_vec(&response).unwrap()
        })
    });
    group.finish();

    // 2 and 3. The real store on in-process Dynoxide.
    let (db, store, counter) = rt.block_on(setup());
    let authorizer = Authorizer::new(store.clone(), FailMode::Closed);
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    rt.block_on(async {
        // Steady state: the key id is cached and the window is current.
        assert!(authorizer.decide(Some(FIXTURE_KEY), UnixTime::now()).await.is_allowed());
    });
    counter.reset();
    let (allowed, total, by_operation) = rt.block_on(async {
        let mut allowed = 0;
        for _ in 0..COUNTED_DECISIONS {
            allowed += u64::from(authorizer.decide(Some(key.expose_secret()), UnixTime::now()).await.is_allowed());
        }
        (allowed, counter.total(), counter.snapshot())
    });
    assert_eq!(allowed, COUNTED_DECISIONS, "the bench plan never denies");

    let mut group = c.benchmark_group("dynoxide");
    group.bench_function("decision", |b| {
        b.to_async(&rt).iter(|| async { authorizer.decide(Some(FIXTURE_KEY), UnixTime::now()).await })
    });
    let key_id = rt.block_on(async {
        use shared::store::AuthorizeStore;
        store.key_id_for_hash(&key.hash()).await.unwrap().unwrap()
    });
    let hash = key.hash();
    group.bench_function("decision_write_only", |b| {
        b.to_async(&rt)
            .iter(|| async { store.steady_state_count_request(&key_id, &hash, UnixTime::now()).send().await.unwrap() })
    });
    let client = store.client().clone();
    let table = store.table().to_owned();
    group.bench_function("bare_update_item", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .update_item()
                .table_name(&table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("BENCH#bare".into()))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("BENCH".into()))
                .update_expression("ADD #n :one")
                .expression_attribute_names("#n", "n")
                .expression_attribute_values(":one", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
                .send()
                .await
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();
    rt.block_on(db.stop());

    // The summary.
    let cpu = mean_ns("handler_cpu/stub_store");
    let decision = mean_ns("dynoxide/decision");
    let bare = mean_ns("dynoxide/bare_update_item");
    let write_only = mean_ns("dynoxide/decision_write_only");
    let per_decision = total as f64 / COUNTED_DECISIONS as f64;
    println!();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| handler CPU per decision (stub store, event JSON in, response JSON out) | {} | <= 10 µs |",
        fmt_ns(cpu)
    );
    println!(
        "| DynamoDB requests per allowed decision, steady state ({COUNTED_DECISIONS} decisions) | {per_decision:.3} ({}) | exactly 1 |",
        by_operation.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ")
    );
    println!("| decision latency, in-process Dynoxide | {} | |", fmt_ns(decision));
    println!("| bare UpdateItem round trip, same endpoint | {} | |", fmt_ns(bare));
    println!("| the decision's own conditional UpdateItem, sent alone | {} | |", fmt_ns(write_only));
    println!("| decision / bare round trip | {:.2}x | <= 1.1x |", decision / bare);
    println!(
        "| decision / its own UpdateItem alone (cost of the code around the database) | {:.2}x | |",
        decision / write_only
    );
}

async fn setup() -> (EmbeddedDynamo, DynamoStore, RequestCounter) {
    let db = EmbeddedDynamo::start_in_memory().await.unwrap();
    let counter = RequestCounter::new();
    let client =
        build_client(ClientOptions { counter: Some(counter.clone()), ..ClientOptions::local(db.endpoint()) }).await;
    let store = DynamoStore::new(client, "tollgate-bench");
    store.create_table_if_missing().await.unwrap();
    let now = UnixTime::now();
    let plan = Plan {
        id: PlanId::parse("bench").unwrap(),
        name: "Bench".into(),
        // Never reached during a run, and a day-long window: no rollovers to skew the mean.
        rate_limit: Some(RateLimit { limit: 1_000_000_000_000, window_s: 86_400 }),
        quota: None,
        stripe_price_ids: vec![],
        meter_event_name: None,
        created_at: now,
        updated_at: now,
    };
    store.create_plan(&plan).await.unwrap();
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    store.create_key(NewKey::new(&key, CustomerId::parse("bench").unwrap(), Some(plan.id), now)).await.unwrap();
    (db, store, counter)
}

/// Criterion's mean estimate for `id`, in nanoseconds.
fn mean_ns(id: &str) -> f64 {
    let path = criterion_dir().join(id).join("new/estimates.json");
    let json: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| panic!("no estimates at {}", path.display()));
    json["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
