//! Every function binary, run as Lambda runs it (an emulated Runtime API, the environment Lambda
//! gives it) at `RUST_LOG=trace`, through requests that carry every credential Tollgate handles:
//! API keys in both headers, a plaintext key in a response, a bearer token, the Stripe API key
//! and webhook secret (read from a Secrets Manager stand-in). None of them may appear in the
//! output. Also checked here, because only the binaries show it: the secrets come from Secrets
//! Manager by ARN, the caller's IAM principal is logged on mutating requests, and the claim
//! function serves the claim and nothing else.

use bytes::Bytes;
use serde_json::{Value, json};
use shared::domain::api_key::ApiKey;
use shared::domain::customers::CustomerId;
use shared::domain::lease::Take;
use shared::domain::plans::PlanId;
use shared::domain::time::UnixTime;
use shared::store::{AuthorizeStore, KeyStore, NewKey, PlanStore};
use shared::stripe::signature::sign;
use std::path::PathBuf;
use std::sync::OnceLock;
use tollgate_tests::lambda::{Emulator, Function};
use tollgate_tests::secrets::SecretsStandIn;
use tollgate_tests::stripe::{API_KEY, StripeStandIn, checkout_session, subscription};
use tollgate_tests::{TestDb, fresh_db};

/// The fixtures' key (events/README.md).
const FIXTURE_KEY: &str = "tg_test_0Eoh211G4c8wtVWM00my5rsNSFlKgaWqQ4mb8gdEqno1nomcz";
const WEBHOOK_SECRET: &str = "whsec_logs_test_0123456789abcdef";
const BEARER: &str = "tga_never_logged_bearer_token_42";
const CALLER: &str = "arn:aws:iam::123456789012:user/ops-alice";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The four function binaries, built once (debug, like the tests) by the cargo running us.
/// `--workspace --bins` resolves features as `make test-spec` does, so the two share one build
/// (with `-p` per function, cargo rebuilt much of the tree a second time).
pub(crate) fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["build", "--quiet", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the function binaries failed");
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target")).join("debug")
    });
    dir.join(name)
}

/// Runs `events` through a fresh process of `name`, one at a time; returns each response and
/// the whole log.
async fn run(db: &TestDb, name: &str, env: &[(&str, &str)], events: &[Value]) -> (Vec<Value>, String) {
    let (responses, log, _) = run_with(db, name, env, events, 1).await;
    (responses, log)
}

/// As [`run`], with `AWS_LAMBDA_MAX_CONCURRENCY=concurrency` (Lambda Managed Instances) and,
/// above 1, every event handed out at once: the responses in the order they came, the log, and
/// the most invocations the process had in flight at once.
async fn run_with(
    db: &TestDb,
    name: &str,
    env: &[(&str, &str)],
    events: &[Value],
    concurrency: usize,
) -> (Vec<Value>, String, u64) {
    let log = std::env::temp_dir().join(format!("tollgate-logs-{name}-{}.log", uuid::Uuid::new_v4().simple()));
    let mut function = Function::new(binary(name), name, &db.endpoint, &db.table, log.clone())
        .with_env("RUST_LOG", "trace")
        .with_env("AWS_LAMBDA_LOG_FORMAT", "JSON");
    if concurrency > 1 {
        function = function.with_env("AWS_LAMBDA_MAX_CONCURRENCY", &concurrency.to_string());
    }
    for (k, v) in env {
        function = function.with_env(k, v);
    }
    let mut emulator = Emulator::start().await.expect("runtime API emulator");
    let process = function.spawn(&emulator).expect("start the function");
    let mut responses = vec![];
    let outcomes = if concurrency > 1 {
        emulator.invoke_all(events.iter().map(|e| Bytes::from(e.to_string())).collect()).await
    } else {
        let mut outcomes = vec![];
        for event in events {
            outcomes.push(emulator.invoke(Bytes::from(event.to_string())).await);
        }
        outcomes
    };
    for invoked in outcomes {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let invoked = invoked.unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        responses.push(serde_json::from_slice(&invoked.body).expect("a JSON response"));
    }
    let peak = emulator.peak_in_flight();
    drop(process);
    emulator.stop().await;
    let text = std::fs::read_to_string(&log).expect("the function's log");
    let _ = std::fs::remove_file(&log);
    (responses, text, peak)
}

/// Fails naming the secret and the line it leaked on.
fn assert_absent(log: &str, secrets: &[&str]) {
    assert!(log.lines().count() > 5, "the function logged almost nothing: {log}");
    assert!(log.contains("\"level\":\"DEBUG\"") || log.contains("\"level\":\"TRACE\""), "not at trace level: {log}");
    for secret in secrets {
        // The whole secret, and its distinctive middle (a log could cut or quote the ends).
        let middle = &secret[secret.len() / 4..secret.len() * 3 / 4];
        for needle in [*secret, middle] {
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                panic!("`{needle}` is in the log: {line}");
            }
        }
    }
}

/// An API Gateway HTTP API (payload 2.0) request; also the shape of a Function URL request.
fn http_event(method: &str, path: &str, query: &str, headers: Value, body: Option<String>, iam: bool) -> Value {
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "abcdef1234",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "abcdef1234",
        "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "curl/8" },
        "requestId": "req-logs",
        "routeKey": "$default",
        "stage": "$default",
        "time": "23/Nov/2026:10:00:30 +0000",
        "timeEpoch": 1_795_428_030_000u64,
    });
    if iam {
        context["authorizer"] = json!({ "iam": {
            "accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AIDAEXAMPLE",
            "principalOrgId": null, "userArn": CALLER, "userId": "AIDAEXAMPLE"
        }});
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": false,
    })
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

async fn plan(db: &TestDb) {
    let plan = tollgate_tests::plan("pro", Some(1000), &["price_1QProMonthly"], Some("api_requests"), UnixTime::now());
    db.store.create_plan(&plan).await.unwrap();
}

#[tokio::test]
async fn the_authorizer_logs_no_key_at_trace() {
    let db = fresh_db().await;
    plan(&db).await;
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    let new =
        NewKey::new(&key, CustomerId::parse("acme").unwrap(), Some(PlanId::parse("pro").unwrap()), UnixTime::now());
    db.store.create_key(new).await.unwrap();
    let fixture = |name: &str| -> Value {
        let text = std::fs::read_to_string(root().join(format!("events/authorizer-{name}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let events = ["http-api-key", "http-bearer", "rest-token", "rest-request", "http-malformed"].map(fixture);
    let (responses, log) = run(&db, "authorizer", &[], &events).await;
    assert_eq!(responses[0]["isAuthorized"], true, "{log}");
    assert_eq!(responses[1]["isAuthorized"], true);
    assert_eq!(responses[2]["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_absent(&log, &[FIXTURE_KEY]);

    // The same binary as Lambda Managed Instances run it: 8 invocations at once, each fixture
    // eight times, the same answers and still no key in the log.
    let many: Vec<Value> = events.iter().flat_map(|e| std::iter::repeat_n(e.clone(), 8)).collect();
    let (responses, log, peak) = run_with(&db, "authorizer", &[], &many, 8).await;
    assert_eq!(peak, 8, "eight invocations in flight at once");
    let http_allowed = responses.iter().filter(|r| r["isAuthorized"] == true).count();
    let rest_allowed = responses.iter().filter(|r| r["policyDocument"]["Statement"][0]["Effect"] == "Allow").count();
    let http_refused = responses.iter().filter(|r| r["isAuthorized"] == false).count();
    assert_eq!((http_allowed, rest_allowed, http_refused), (16, 16, 8), "{log}");
    assert_absent(&log, &[FIXTURE_KEY]);
}

#[tokio::test]
async fn the_management_api_and_the_claim_log_no_key_token_or_stripe_secret_at_trace() {
    let db = fresh_db().await;
    plan(&db).await;
    let secrets = SecretsStandIn::start().await;
    let arn = secrets.put("tollgate/stripe-api-key", API_KEY);
    let stripe = StripeStandIn::start().await;
    // The binary runs on the real clock: sessions checked out just now.
    let fresh = |n: u32, customer: &str| {
        let (sub, cus) = (format!("sub_Logs{n}"), format!("cus_Logs{n}"));
        stripe.add_subscription(subscription(&sub, &cus, "active", "price_1QProMonthly"));
        let mut session = checkout_session(&format!("cs_test_logs{n}"), "complete", "paid", Some(customer));
        (session["customer"], session["subscription"]) = (cus.into(), sub.into());
        session["created"] = UnixTime::now().secs().into();
        session
    };
    stripe.add_session(fresh(1, "user-logs"));
    let env = [
        ("STRIPE_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.endpoint.as_str()),
        ("STRIPE_API_BASE", stripe.base.as_str()),
        ("TOLLGATE_KEY_ENV", "test"),
    ];
    let headers = json!({ "content-type": "application/json", "authorization": format!("Bearer {BEARER}") });
    let create = json!({ "customer_id": "acme", "plan_id": "pro", "name": "ci" }).to_string();
    // The management function (TOLLGATE_ROUTES unset) never answers a claim, by any spelling:
    // without IAM it is 401, with IAM an unknown path.
    let events = [
        http_event("POST", "/v1/keys", "", headers.clone(), Some(create), true),
        http_event("GET", "/v1/claim/", "session_id=cs_test_logs1", json!({}), None, false),
        http_event("GET", "/v1/claim", "session_id=cs_test_logs1", json!({}), None, true),
    ];
    let (responses, log) = run(&db, "issue-key", &env, &events).await;
    assert_eq!(responses[0]["statusCode"], 201, "{log}");
    let created = body(&responses[0])["key"].as_str().unwrap().to_owned();
    assert!(created.starts_with("tg_test_"), "the deployment's key environment");
    assert_eq!((&responses[1]["statusCode"], &responses[2]["statusCode"]), (&json!(401), &json!(404)), "{log}");
    assert_absent(&log, &[&created, BEARER, API_KEY]);
    // Read from Secrets Manager, signed, by the ARN it was given; never from the environment.
    let reads = secrets.reads();
    assert_eq!(reads.len(), 1, "once per cold start");
    assert!(reads[0].signed && reads[0].secret_id == arn);
    // Who changed what: the IAM principal on the mutating request.
    let line = log.lines().find(|l| l.contains("mutating request")).expect("a mutating-request line");
    assert!(line.contains(CALLER), "{line}");

    // The claim function: the same binary serving the claim and nothing else.
    let claim_env = [env[0], env[1], env[2], ("TOLLGATE_ROUTES", "claim")];
    let events = [
        http_event("GET", "/v1/keys", "", headers.clone(), None, true),
        http_event("POST", "/v1/plans", "", headers, Some("{}".into()), true),
        http_event("GET", "/v1/claim", "session_id=cs_test_logs1", json!({}), None, false),
    ];
    let (responses, log) = run(&db, "issue-key", &claim_env, &events).await;
    assert_eq!(responses[0]["statusCode"], 404, "{log}");
    assert_eq!(responses[1]["statusCode"], 404);
    assert_eq!(responses[2]["statusCode"], 201, "{log}");
    let claimed = body(&responses[2])["key"].as_str().unwrap().to_owned();
    assert_absent(&log, &[&claimed, BEARER, API_KEY]);
}

#[tokio::test]
async fn the_webhook_logs_no_secret_at_trace() {
    let db = fresh_db().await;
    plan(&db).await;
    let secrets = SecretsStandIn::start().await;
    let arn = secrets.put("tollgate/stripe-webhook", WEBHOOK_SECRET);
    let env =
        [("STRIPE_WEBHOOK_SECRET_ARN", arn.as_str()), ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.endpoint.as_str())];
    let event = std::fs::read(root().join("events/stripe-customer-subscription-created.json")).unwrap();
    let now = UnixTime::now().secs();
    let signed = http_event(
        "POST",
        "/",
        "",
        json!({ "content-type": "application/json", "stripe-signature": sign(&event, WEBHOOK_SECRET, now) }),
        Some(String::from_utf8(event.clone()).unwrap()),
        false,
    );
    let forged = http_event(
        "POST",
        "/",
        "",
        json!({ "content-type": "application/json", "stripe-signature": sign(&event, "whsec_forged", now) }),
        Some(String::from_utf8(event).unwrap()),
        false,
    );
    let (responses, log) = run(&db, "stripe-webhook", &env, &[signed, forged]).await;
    assert_eq!(responses[0]["statusCode"], 200, "{log}");
    assert_eq!(responses[1]["statusCode"], 400);
    assert_absent(&log, &[WEBHOOK_SECRET]);
    assert_eq!(secrets.reads().len(), 1);
    // What reading the secret added to init (against the loopback stand-in: the SDK client's
    // set-up and one signed request), for the record; never asserted.
    if let Some(line) = log.lines().find(|l| l.contains("read a secret from Secrets Manager")) {
        eprintln!("{line}");
    }
}

#[tokio::test]
async fn the_rollup_logs_no_stripe_key_at_trace() {
    let db = fresh_db().await;
    plan(&db).await;
    tollgate_tests::bill(
        &db.store,
        "acme",
        "cus_Acme",
        shared::domain::customers::SubscriptionStatus::Active,
        Some("price_1QProMonthly"),
        1,
    )
    .await;
    let key = ApiKey::generate(shared::domain::api_key::KeyEnv::Live).unwrap();
    let now = UnixTime::now();
    let new = NewKey::new(&key, CustomerId::parse("acme").unwrap(), Some(PlanId::parse("pro").unwrap()), now);
    let id = db.store.create_key(new).await.unwrap().key_id;
    for _ in 0..3 {
        assert!(db.store.take(&id, &key.hash(), &[], now, &mut Take::one()).await.unwrap().decision.is_allowed());
    }
    let secrets = SecretsStandIn::start().await;
    let arn = secrets.put("tollgate/stripe-api-key", API_KEY);
    let stripe = StripeStandIn::start().await;
    let env = [
        ("STRIPE_API_KEY_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.endpoint.as_str()),
        ("STRIPE_API_BASE", stripe.base.as_str()),
    ];
    let (responses, log) = run(&db, "usage-rollup", &env, &[json!({ "mode": "scheduled" })]).await;
    assert_eq!(responses[0]["units_reported"], 3, "{log}");
    assert_absent(&log, &[API_KEY, key.expose_secret()]);
    // The run's metrics: one CloudWatch EMF document on stdout, written before the invocation
    // ended (no CloudWatch API call).
    let emf: Vec<Value> =
        log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 1, "{log}");
    let directive = &emf[0]["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(
        (directive["Namespace"].as_str(), directive["Dimensions"][0][0].as_str()),
        (Some("Tollgate"), Some("Status"))
    );
    assert_eq!((emf[0]["Status"].as_str(), emf[0]["UnitsReported"].as_u64()), (Some("completed"), Some(3)));
}

/// A secret that cannot be read stops the cold start with an error naming the variable, and
/// the values read replace nothing but what the ARNs name.
#[tokio::test]
async fn secrets_come_by_arn_and_a_missing_one_is_named() {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    use secrecy::ExposeSecret;
    use shared::config::{Config, ConfigError};
    let secrets = SecretsStandIn::start().await;
    let api = secrets.put("tollgate/api", "sk_test_from_secrets_manager");
    let hook = secrets.put("tollgate/hook", "whsec_old, whsec_new");
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(shared::http_client::sdk_http_client())
            .endpoint_url(&secrets.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDLOCAL", "local-secret", None, None, "test"))
            .build(),
    );
    let lookup = |pairs: Vec<(&'static str, String)>| {
        move |k: &str| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone())
    };
    let mut config = Config::from_lookup(lookup(vec![
        ("TOLLGATE_TABLE", "t".into()),
        ("STRIPE_API_KEY_SECRET_ARN", api.clone()),
        ("STRIPE_WEBHOOK_SECRET_ARN", hook.clone()),
    ]))
    .unwrap();
    shared::secrets::load_with(&mut config, &client).await.unwrap();
    assert_eq!(config.require_stripe_api_key().unwrap().expose_secret(), "sk_test_from_secrets_manager");
    assert_eq!(config.require_webhook_secrets().unwrap().iter().collect::<Vec<_>>(), ["whsec_old", "whsec_new"]);
    assert!(secrets.reads().iter().all(|r| r.signed));

    let missing = api.replace("tollgate/api", "tollgate/gone");
    let mut config =
        Config::from_lookup(lookup(vec![("TOLLGATE_TABLE", "t".into()), ("STRIPE_API_KEY_SECRET_ARN", missing)]))
            .unwrap();
    let err = shared::secrets::load_with(&mut config, &client).await.unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { name: "STRIPE_API_KEY_SECRET_ARN", .. }), "{err}");
    assert!(err.to_string().contains("ResourceNotFoundException"), "{err}");

    // A key/value (JSON) secret, or a value of the wrong kind, stops the cold start by name,
    // without showing the value.
    for (var, value) in [
        ("STRIPE_WEBHOOK_SECRET_ARN", r#"{"webhook":"whsec_inside_json"}"#),
        ("STRIPE_API_KEY_SECRET_ARN", "whsec_the_wrong_secret"),
    ] {
        let arn = secrets.put("tollgate/wrong", value);
        let mut config = Config::from_lookup(lookup(vec![("TOLLGATE_TABLE", "t".into()), (var, arn)])).unwrap();
        let err = shared::secrets::load_with(&mut config, &client).await.unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name, .. } if name == var), "{err}");
        assert!(!err.to_string().contains("inside_json") && !err.to_string().contains("wrong_secret"), "{err}");
    }
}
