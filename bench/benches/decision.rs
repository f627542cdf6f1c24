//! `make bench`: what one authorization costs.
//!
//! 1. Handler CPU per decision, storage stubbed out behind the `AuthorizeStore` trait: event
//!    JSON in, response JSON out (parse, key check, SHA-256, cache, decision, serialise).
//! 2. DynamoDB requests per allowed decision in steady state, counted by the SDK interceptor.
//! 3. Decision latency against in-process Dynoxide, side by side with a bare `UpdateItem`
//!    round trip to the same endpoint in the same run: the ratio is the cost of everything
//!    that is not the database.
//!
//! 4. The `authorizer` binary as Lambda runs it (`lambda.rs`): cold start and first invocation
//!    over fresh processes, and warm latency and peak RSS over one long-lived process, against
//!    an emulated Lambda Runtime API.
//! 5. The local stack under wrk on loopback (`load.rs`, `scripts/load.sh`): throughput and tail,
//!    for one key and for 1,000 keys in turn.
//! 6. The arm64 bootstrap and zip sizes `make build` left in `target/lambda/`.
//!
//! Ends with one summary table (criterion's estimates, read back from its output directory).

mod concurrency;
mod fanout;
mod hot;
mod lambda;
mod load;

use authorizer::handler;
use criterion::Criterion;
use serde_json::Value;
use shared::app::authorize::Authorizer;
use shared::config::FailMode;
use shared::domain::api_key::{ApiKey, KeyHash, KeyId};
use shared::domain::customers::{CustomerAccess, CustomerId, SubscriptionStatus};
use shared::domain::decision::{Counters, Decision, KeyState};
use shared::domain::key_records::KeyStatus;
use shared::domain::plans::{Plan, PlanId, Quota, RateLimit};
use shared::domain::time::UnixTime;
use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::metrics::RequestCounter;
use shared::store::{AuthorizeStore, KeyStore, NewKey, PlanStore, StoreResult};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIXTURE_KEY: &str = "tg_test_0Eoh211G4c8wtVWM00my5rsNSFlKgaWqQ4mb8gdEqno1nomcz";
const COUNTED_DECISIONS: u64 = 2_000;
const COLD_STARTS: usize = 20;
const SUSTAINED_INVOCATIONS: usize = 10_000;
const FUNCTIONS: [&str; 4] = ["authorizer", "issue-key", "stripe-webhook", "usage-rollup"];
const ZIP_GOAL_BYTES: u64 = 3_000_000;
const INIT_GOAL: Duration = Duration::from_millis(25);
const RSS_GOAL_BYTES: u64 = 24 * 1024 * 1024;

/// One line of the summary table: measure, result, goal.
type Row = (String, String, String);

/// Storage answered from memory: only the handler's own work is left to measure.
struct StubStore {
    state: KeyState,
}

impl StubStore {
    /// The decision storage would answer: allowed, with a mid-window count.
    async fn decide(
        &self,
        _key_id: &KeyId,
        _hash: &KeyHash,
        _required: &[String],
        now: UnixTime,
    ) -> StoreResult<Decision> {
        let counters = Counters { window_count: 37, ..self.state.counters };
        Ok(Decision::for_key(&self.state, Ok(()), &counters, now))
    }
}

impl AuthorizeStore for StubStore {
    async fn key_id_for_hash(&self, _hash: &KeyHash) -> StoreResult<Option<KeyId>> {
        Ok(Some(self.state.key_id.clone()))
    }

    /// Always the ordinary write (one token): the handler row measures the exact path.
    async fn take(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        _take: &mut shared::domain::lease::Take,
    ) -> StoreResult<shared::store::Taken> {
        let decision = self.decide(key_id, hash, required, now).await?;
        Ok(shared::store::Taken { decision, tokens: 1 })
    }

    async fn settle(
        &self,
        _key_id: &KeyId,
        _used: &[(shared::domain::time::Day, u64)],
        _unspent: Option<shared::domain::lease::Unspent>,
        _now: UnixTime,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn record_denials(
        &self,
        _key_id: &KeyId,
        _day: shared::domain::time::Day,
        _denial: shared::domain::decision::Denial,
        _n: u64,
    ) {
    }
}

/// The request the benches authorize (no scope map: the common case).
const ROUTE: shared::app::authorize::Route<'static> = shared::app::authorize::Route { method: "GET", path: "/pets/1" };

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
        scopes: vec![],
        rate_limit: Some(RateLimit { limit: 100, window_s: 60 }),
        quota: Some(Quota { limit: 1_000_000, period: shared::domain::plans::Period::Month }),
        counters: Counters { window_end: now.plus(60), window_count: 0, period_end: now.plus(86_400), period_count: 0 },
    }
}

fn criterion_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

fn main() {
    // `TOLLGATE_BENCH=fanout cargo bench -p tollgate-bench`: only the fan-out rows (minutes
    // rather than the whole suite's quarter hour).
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("fanout") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        println!("| measure | result | goal |\n|---|---|---|");
        for (measure, result, goal) in rt.block_on(fanout::rows()) {
            println!("| {measure} | {result} | {goal} |");
        }
        return;
    }
    // `TOLLGATE_BENCH=concurrency`: only the concurrent-callers rows (seconds); with
    // TOLLGATE_TEST_DYNAMODB_ENDPOINT set (scripts/with-moto.sh), against that server.
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("concurrency") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        println!("| measure | result | goal |\n|---|---|---|");
        for (measure, result, goal) in rt.block_on(concurrency::rows()) {
            println!("| {measure} | {result} | {goal} |");
        }
        return;
    }
    // `TOLLGATE_BENCH=hot`: only the hot-key rows (the simulator, a few minutes).
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("hot") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        println!("| measure | result | goal |\n|---|---|---|");
        for (measure, result, goal) in rt.block_on(hot::rows()) {
            println!("| {measure} | {result} | {goal} |");
        }
        return;
    }
    // `TOLLGATE_BENCH=load`: only the local stack under wrk (one key, then 1,000 keys in turn).
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("load") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        println!("| measure | result | goal |\n|---|---|---|");
        for (measure, result, goal) in load::rows(&rt) {
            println!("| {measure} | {result} | {goal} |");
        }
        return;
    }
    // `TOLLGATE_BENCH=cold`: only the two functions' cold starts (release binaries built first).
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("cold") {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        println!("| measure | result | goal |\n|---|---|---|");
        let mut rows = rt.block_on(lambda_rows());
        rows.retain(|(measure, _, _)| measure.starts_with("cold start"));
        for (measure, result, goal) in rows {
            println!("| {measure} | {result} | {goal} |");
        }
        return;
    }
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
    // `TOLLGATE_BENCH=cpu`: only the handler's CPU (seconds, for A/B comparisons of a change).
    if std::env::var("TOLLGATE_BENCH").as_deref() == Ok("cpu") {
        println!(
            "| handler CPU per decision (stub store) | {} | <= 10 µs |",
            fmt_ns(mean_ns("handler_cpu/stub_store"))
        );
        return;
    }

    // 2 and 3. The real store on in-process Dynoxide.
    let (db, store, counter) = rt.block_on(setup());
    let authorizer = Authorizer::new(store.clone(), FailMode::Closed);
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    rt.block_on(async {
        // Steady state: the key id is cached and the window is current.
        assert!(authorizer.decide(Some(FIXTURE_KEY), ROUTE, UnixTime::now()).await.is_allowed());
    });
    counter.reset();
    let (allowed, total, by_operation) = rt.block_on(async {
        let mut allowed = 0;
        for _ in 0..COUNTED_DECISIONS {
            allowed +=
                u64::from(authorizer.decide(Some(key.expose_secret()), ROUTE, UnixTime::now()).await.is_allowed());
        }
        (allowed, counter.total(), counter.snapshot())
    });
    assert_eq!(allowed, COUNTED_DECISIONS, "the bench plan never denies");

    let mut group = c.benchmark_group("dynoxide");
    group.bench_function("decision", |b| {
        b.to_async(&rt).iter(|| async { authorizer.decide(Some(FIXTURE_KEY), ROUTE, UnixTime::now()).await })
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

    // 4, 5 and 6.
    let mut rows = rt.block_on(lambda_rows());
    rows.extend(load::rows(&rt));
    rows.extend(size_rows());
    rows.extend(rt.block_on(fanout::rows()));
    rows.extend(rt.block_on(hot::rows()));
    rows.extend(rt.block_on(concurrency::rows()));

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
    for (measure, result, goal) in rows {
        println!("| {measure} | {result} | {goal} |");
    }
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn row(measure: impl Into<String>, result: impl Into<String>, goal: impl Into<String>) -> Row {
    (measure.into(), result.into(), goal.into())
}

/// " (met)" or " (over)" after a result that has a goal.
fn verdict(met: bool) -> &'static str {
    if met { " (met)" } else { " (**over**)" }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_duration(d: Duration) -> String {
    fmt_ns(d.as_nanos() as f64)
}

/// A plan with no rate limit and no quota, and the fixture key on it: every decision allows.
async fn seed_unlimited(store: &DynamoStore) -> Result<(), String> {
    let now = UnixTime::now();
    let plan = Plan {
        id: PlanId::parse("unlimited").unwrap(),
        name: "Unlimited".into(),
        rate_limit: None,
        quota: None,
        stripe_price_ids: vec![],
        meter_event_name: None,
        max_keys: None,
        created_at: now,
        updated_at: now,
    };
    store.create_plan(&plan).await.map_err(|e| format!("create plan: {e}"))?;
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    store
        .create_key(NewKey::new(&key, CustomerId::parse("bench").unwrap(), Some(plan.id), now))
        .await
        .map_err(|e| format!("create key: {e}"))?;
    Ok(())
}

/// The native (x86_64) release `authorizer` binary; `make bench` builds it first.
fn authorizer_binary() -> PathBuf {
    std::env::var_os("TOLLGATE_AUTHORIZER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/authorizer"))
}

/// The native (x86_64) release `issue-key` binary; `make bench` builds it first.
fn management_binary() -> PathBuf {
    std::env::var_os("TOLLGATE_ISSUE_KEY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/issue-key"))
}

const MANAGEMENT_COLD_START_MEASURE: &str = "cold start (init): process start to first `GET /runtime/invocation/next`, native x86_64 release `issue-key` (configuration, DynamoDB client and its warm-up `GetItem`, the router)";

const COLD_START_MEASURE: &str = "cold start (init): process start to first `GET /runtime/invocation/next`, native x86_64 release `authorizer`; includes its warm-up `GetItem` to local Dynoxide";
const FIRST_INVOCATION_MEASURE: &str =
    "first invocation: event handed out to response received (key lookup + counted `UpdateItem`, local Dynoxide)";
const WARM_MEASURE: &str = "warm invocation through the Runtime API, one process";
const RSS_MEASURE: &str = "peak RSS (`VmHWM`) of that process";

async fn lambda_rows() -> Vec<Row> {
    let binary = authorizer_binary();
    if !binary.is_file() {
        let missing = format!("no {}: run `cargo build --release -p authorizer` (make bench does)", binary.display());
        return vec![
            row(COLD_START_MEASURE, missing.clone(), format!("<= {} ms", INIT_GOAL.as_millis())),
            row(FIRST_INVOCATION_MEASURE, missing.clone(), ""),
            row(RSS_MEASURE, missing, "<= 24 MB"),
        ];
    }
    let db = EmbeddedDynamo::start_in_memory().await.unwrap();
    let mut rows = lambda_measure(&binary, db.endpoint()).await.unwrap_or_else(|e| {
        vec![row(format!("{COLD_START_MEASURE}; first invocation; peak RSS"), format!("FAILED: {e}"), "")]
    });
    rows.push(management_cold_start(db.endpoint()).await);
    db.stop().await;
    rows
}

/// The management API's init: the same measure as the authorizer's, over `GET /v1/plans`.
async fn management_cold_start(endpoint: &str) -> Row {
    let goal = format!("<= {} ms", INIT_GOAL.as_millis());
    let binary = management_binary();
    if !binary.is_file() {
        let missing = format!("no {}: run `cargo build --release -p issue-key` (make bench does)", binary.display());
        return row(MANAGEMENT_COLD_START_MEASURE, missing, goal);
    }
    let result = async {
        let table = "tollgate-bench-management";
        let store = DynamoStore::new(build_client(ClientOptions::local(endpoint)).await, table);
        store.create_table_if_missing().await.map_err(|e| format!("create table: {e}"))?;
        let log = target_dir().join("bench-issue-key.log");
        let function = lambda::Function::new(binary, "issue-key", endpoint, table, log);
        let event = std::fs::read(root().join("events/issue-key-http-list-plans.json"))
            .map_err(|e| format!("events/issue-key-http-list-plans.json: {e}"))?;
        let event = axum::body::Bytes::from(event);
        let mut inits = Vec::new();
        for _ in 0..COLD_STARTS {
            inits.push(lambda::cold_start(&function, &event, lambda::check_ok).await?.0);
        }
        inits.sort();
        Ok::<_, String>((percentile(&inits, 50.0), percentile(&inits, 90.0)))
    }
    .await;
    match result {
        Ok((p50, p90)) => row(
            format!("{MANAGEMENT_COLD_START_MEASURE}, median / p90 of {COLD_STARTS}"),
            format!("{} / {}{}", fmt_duration(p50), fmt_duration(p90), verdict(p90 <= INIT_GOAL)),
            goal,
        ),
        Err(e) => row(MANAGEMENT_COLD_START_MEASURE, format!("FAILED: {e}"), goal),
    }
}

async fn lambda_measure(binary: &Path, endpoint: &str) -> Result<Vec<Row>, String> {
    let client = build_client(ClientOptions::local(endpoint)).await;
    let table = "tollgate-bench-lambda";
    let store = DynamoStore::new(client, table);
    store.create_table_if_missing().await.map_err(|e| format!("create table: {e}"))?;
    seed_unlimited(&store).await?;
    let function = lambda::Function::new(
        binary.to_owned(),
        "authorizer",
        endpoint,
        table,
        target_dir().join("bench-authorizer.log"),
    );
    let event = std::fs::read(root().join("events/authorizer-http-api-key.json"))
        .map_err(|e| format!("events/authorizer-http-api-key.json: {e}"))?;
    let event = axum::body::Bytes::from(event);

    let (mut inits, mut firsts) = (Vec::new(), Vec::new());
    for _ in 0..COLD_STARTS {
        let (init, first) = lambda::cold_start(&function, &event, lambda::check_allowed).await?;
        inits.push(init);
        firsts.push(first);
    }
    inits.sort();
    firsts.sort();
    let (mut warm, rss) = lambda::sustained(&function, &event, SUSTAINED_INVOCATIONS).await?;
    warm.sort();

    let init_p50 = percentile(&inits, 50.0);
    let init_p90 = percentile(&inits, 90.0);
    let mib = rss as f64 / (1024.0 * 1024.0);
    Ok(vec![
        row(
            format!("{COLD_START_MEASURE}, median / p90 of {COLD_STARTS}"),
            format!("{} / {}{}", fmt_duration(init_p50), fmt_duration(init_p90), verdict(init_p90 <= INIT_GOAL)),
            format!("<= {} ms", INIT_GOAL.as_millis()),
        ),
        row(
            format!("{FIRST_INVOCATION_MEASURE}, median / p90 of {COLD_STARTS}"),
            format!("{} / {}", fmt_duration(percentile(&firsts, 50.0)), fmt_duration(percentile(&firsts, 90.0))),
            "",
        ),
        row(
            format!("{WARM_MEASURE}, p50 / p99 of {SUSTAINED_INVOCATIONS}"),
            format!("{} / {}", fmt_duration(percentile(&warm, 50.0)), fmt_duration(percentile(&warm, 99.0))),
            "",
        ),
        row(
            format!("{RSS_MEASURE} after {SUSTAINED_INVOCATIONS} invocations"),
            format!("{mib:.1} MiB{}", verdict(rss <= RSS_GOAL_BYTES)),
            "<= 24 MB (MiB, as Lambda counts memory)",
        ),
    ])
}

/// `make build`'s artifacts, if it ran.
fn size_rows() -> Vec<Row> {
    let lambda_dir = target_dir().join("lambda");
    let goal = "zip <= 3 MB (3,000,000 B)";
    FUNCTIONS
        .iter()
        .map(|f| {
            let measure = format!("`{f}` arm64 bootstrap / zip (target/lambda)");
            let dir = lambda_dir.join(f);
            let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).ok();
            match (size("bootstrap"), size("bootstrap.zip")) {
                (Some(bin), Some(zip)) => row(
                    measure,
                    format!("{} / {}{}", fmt_bytes(bin), fmt_bytes(zip), verdict(zip <= ZIP_GOAL_BYTES)),
                    goal,
                ),
                _ => row(measure, "run make build first", goal),
            }
        })
        .collect()
}

fn fmt_bytes(bytes: u64) -> String {
    format!("{:.2} MB ({bytes} B)", bytes as f64 / 1e6)
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
        max_keys: None,
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
