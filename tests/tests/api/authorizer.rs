//! The authorizer handler on every fixture in events/, against the real store on a
//! DynamoDB-protocol server: the same code path the Lambda runs.

use authorizer::handler::{HandlerError, handle};
use serde_json::Value;
use shared::app::authorize::{Authorizer, AuthorizerOptions, SPENT_RECHECK_S};
use shared::config::FailMode;
use shared::domain::api_key::{ApiKey, KeyId};
use shared::domain::key_records::KeyStatus;
use shared::domain::plans::{Plan, PlanId, RateLimit};
use shared::domain::scopes::ScopeMap;
use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::{KeyPatch, KeyStore, NewKey, PlanStore, UsageStore};
use std::collections::BTreeMap;
use tollgate_tests::{TestDb, fresh_db};

/// The test-only key the fixtures carry (see events/README.md).
const FIXTURE_KEY: &str = "tg_test_0Eoh211G4c8wtVWM00my5rsNSFlKgaWqQ4mb8gdEqno1nomcz";
use tollgate_tests::NOW;

fn fixture(name: &str) -> Value {
    // HTTP API fixtures are named by how the key is sent; REST ones by authorizer type.
    let name = if name.starts_with("rest-") { name.to_owned() } else { format!("http-{name}") };
    let path = format!("{}/../events/authorizer-{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A store holding the fixture key on a plan allowing `limit` requests a minute.
async fn setup(limit: u64) -> (TestDb, Authorizer<DynamoStore>, KeyId) {
    setup_scoped(limit, &[], "{}").await
}

/// [`setup`] with the key holding `scopes`, and the authorizer the scope map `map`.
async fn setup_scoped(limit: u64, scopes: &[&str], map: &str) -> (TestDb, Authorizer<DynamoStore>, KeyId) {
    let db = fresh_db().await;
    let plan = Plan {
        id: PlanId::parse("pro").unwrap(),
        name: "Pro".into(),
        rate_limit: Some(RateLimit { limit, window_s: 60 }),
        quota: None,
        stripe_price_ids: vec![],
        meter_event_name: None,
        max_keys: None,
        created_at: NOW,
        updated_at: NOW,
    };
    db.store.create_plan(&plan).await.unwrap();
    let key = ApiKey::parse(FIXTURE_KEY).unwrap();
    let record = db
        .store
        .create_key(NewKey {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..NewKey::new(
                &key,
                shared::domain::customers::CustomerId::parse("acme").unwrap(),
                Some(plan.id.clone()),
                NOW,
            )
        })
        .await
        .unwrap();
    let options = AuthorizerOptions { scopes: ScopeMap::parse(map).unwrap(), ..AuthorizerOptions::default() };
    let auth = Authorizer::with_options(db.store.clone(), options);
    db.requests.reset();
    (db, auth, record.key_id)
}

/// The fixtures ask for `GET /pets`. With the map requiring a scope there, a key without it is
/// refused 403 `insufficient_scope` on every event shape, within the one conditional write,
/// and not counted against its limits; a key with it is allowed with one request.
#[tokio::test]
async fn scopes_are_enforced_inside_the_one_write_on_every_event_shape() {
    const MAP: &str = r#"{"GET /pets": "pets:read", "POST /pets": "pets:write", "* /admin/**": "admin"}"#;
    let (db, auth, key_id) = setup_scoped(5, &["pets:write"], MAP).await;
    for name in ["api-key", "rest-token", "rest-request"] {
        let r = handle(&auth, fixture(name), NOW).await.unwrap();
        let ctx = &r["context"];
        assert_eq!(
            (ctx["code"].as_str(), ctx["status"].as_u64()),
            (Some("insufficient_scope"), Some(403)),
            "{name}: {r}"
        );
        if name == "api-key" {
            assert_eq!(r["isAuthorized"], false);
        } else {
            assert_eq!(r["policyDocument"]["Statement"][0]["Effect"], "Deny", "{name}");
        }
    }
    let counters = db.store.key_counters(&key_id).await.unwrap().unwrap().counters;
    assert_eq!(counters.window_count, 0, "refused for scope: not counted against the limit");
    let history = db.store.usage_history(&key_id, NOW.day()).await.unwrap();
    // The first refusal came from storage and is counted as denied; the two after it were
    // answered from this container's memory (recorded at the key's next storage decision).
    assert_eq!((history[0].count.allowed, history[0].count.denied), (0, 1), "counted as denied for the history");

    let (db, auth, _) = setup_scoped(5, &["pets:read"], MAP).await;
    assert_eq!(handle(&auth, fixture("api-key"), NOW).await.unwrap()["isAuthorized"], true);
    db.requests.reset();
    let r = handle(&auth, fixture("api-key"), NOW).await.unwrap();
    assert_eq!(r["isAuthorized"], true, "{r}");
    assert_eq!(
        db.requests.snapshot(),
        BTreeMap::from([("UpdateItem".to_owned(), 1)]),
        "with scopes in force, still one DynamoDB request per allowed decision"
    );
    // A path the map does not name needs nothing; one it names under another prefix does.
    let mut admin = fixture("api-key");
    admin["rawPath"] = "/admin/users".into();
    admin["requestContext"]["http"]["path"] = "/admin/users".into();
    let r = handle(&auth, admin, NOW).await.unwrap();
    assert_eq!(r["context"]["code"], "insufficient_scope");
    let mut other = fixture("api-key");
    other["rawPath"] = "/health".into();
    assert_eq!(handle(&auth, other, NOW).await.unwrap()["isAuthorized"], true);
}

#[tokio::test]
async fn http_api_allows_with_context_and_counts_one_request_when_warm() {
    let (db, auth, key_id) = setup(100).await;
    for name in ["api-key", "bearer"] {
        let r = handle(&auth, fixture(name), NOW).await.unwrap();
        assert_eq!(r["isAuthorized"], true, "{name}: {r}");
        let ctx = &r["context"];
        assert_eq!(ctx["code"], "ok");
        assert_eq!(ctx["key_id"], key_id.as_str());
        assert_eq!(ctx["customer_id"], "acme");
        assert_eq!(ctx["plan_id"], "pro");
        assert_eq!(ctx["limit"], 100);
        assert_eq!(ctx["reset"], 30);
        assert!(ctx.as_object().unwrap().values().all(|v| !v.is_null() && !v.is_object()));
    }
    // Warm: the hash -> key id mapping is cached, so one DynamoDB request per decision.
    db.requests.reset();
    let r = handle(&auth, fixture("api-key"), NOW).await.unwrap();
    assert_eq!(r["context"]["remaining"], 100 - 3);
    assert_eq!(db.requests.snapshot(), BTreeMap::from([("UpdateItem".to_owned(), 1)]));
}

#[tokio::test]
async fn missing_and_malformed_keys_never_touch_storage() {
    let (db, auth, _) = setup(100).await;
    let r = handle(&auth, fixture("missing"), NOW).await.unwrap();
    assert_eq!((r["isAuthorized"].as_bool(), r["context"]["code"].as_str()), (Some(false), Some("missing_api_key")));
    let r = handle(&auth, fixture("malformed"), NOW).await.unwrap();
    assert_eq!((r["isAuthorized"].as_bool(), r["context"]["code"].as_str()), (Some(false), Some("invalid_api_key")));
    assert_eq!(r["context"]["status"], 401);
    assert_eq!(db.requests.total(), 0);
}

#[tokio::test]
async fn http_api_denials_carry_their_code_status_and_retry_after() {
    let (db, auth, key_id) = setup(2).await;
    for _ in 0..2 {
        assert_eq!(handle(&auth, fixture("api-key"), NOW).await.unwrap()["isAuthorized"], true);
    }
    let r = handle(&auth, fixture("api-key"), NOW).await.unwrap();
    assert_eq!(r["isAuthorized"], false);
    let ctx = &r["context"];
    assert_eq!((ctx["code"].as_str(), ctx["status"].as_u64()), (Some("rate_limited"), Some(429)));
    assert_eq!((ctx["retry_after"].as_u64(), ctx["remaining"].as_u64()), (Some(30), Some(0)));

    // Spent: the same answer from memory until the recheck. Storage hears of it only from the
    // decisions' own sweep (every 2 s), which counts the denials answered from memory since the
    // last one: one UpdateItem each, at s = 2, 4, 6, 8, and no decision asked storage.
    db.requests.reset();
    for s in 0..SPENT_RECHECK_S {
        let r = handle(&auth, fixture("bearer"), NOW.plus(s)).await.unwrap();
        assert_eq!(r["context"]["code"], "rate_limited");
        assert_eq!(r["context"]["retry_after"].as_i64(), Some(30 - s));
    }
    let sweeps = (SPENT_RECHECK_S as u64 - 1) / 2;
    assert_eq!(db.requests.snapshot(), [("UpdateItem".to_owned(), sweeps)].into());

    db.store
        .update_key(&key_id, KeyPatch { status: Some(KeyStatus::Disabled), ..Default::default() }, NOW)
        .await
        .unwrap();
    let later = NOW.plus(SPENT_RECHECK_S);
    let r = handle(&auth, fixture("api-key"), later).await.unwrap();
    assert_eq!((r["context"]["code"].as_str(), r["context"]["status"].as_u64()), (Some("key_disabled"), Some(403)));
    assert!(r["context"].get("limit").is_none(), "limits are shown only for allowed and 429");

    db.store.revoke_key(&key_id, later).await.unwrap();
    let r = handle(&auth, fixture("bearer"), later).await.unwrap();
    assert_eq!((r["context"]["code"].as_str(), r["context"]["status"].as_u64()), (Some("key_revoked"), Some(401)));
    // Revoked is for good: known from memory from now on, at no request.
    db.requests.reset();
    let r = handle(&auth, fixture("bearer"), later.plus(3_600)).await.unwrap();
    assert_eq!(r["context"]["code"], "key_revoked");
    assert_eq!(db.requests.total(), 0);
}

#[tokio::test]
async fn rest_api_gets_a_stage_wide_policy_with_the_same_context() {
    let (db, auth, key_id) = setup(1).await;
    for name in ["rest-token", "rest-request"] {
        let r = handle(&auth, fixture(name), NOW.plus(if name == "rest-token" { 0 } else { 60 })).await.unwrap();
        assert_eq!(r["principalId"], "acme", "{name}: {r}");
        let statement = &r["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(statement["Action"][0], "execute-api:Invoke");
        assert_eq!(statement["Resource"][0], "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/*");
        assert_eq!(r["usageIdentifierKey"], key_id.as_str());
        assert_eq!(r["context"]["code"], "ok");
    }
    // Over the limit: an explicit Deny carrying the code for the gateway response mapping.
    let r = handle(&auth, fixture("rest-token"), NOW.plus(60)).await.unwrap();
    assert_eq!(r["policyDocument"]["Statement"][0]["Effect"], "Deny");
    assert_eq!(r["context"]["code"], "rate_limited");
    assert_eq!(r["context"]["retry_after"], 30);
    // 401-class denials fail the invocation with exactly "Unauthorized".
    let later = NOW.plus(60 + SPENT_RECHECK_S);
    db.store.revoke_key(&key_id, later).await.unwrap();
    let err = handle(&auth, fixture("rest-request"), later).await.unwrap_err();
    assert!(matches!(err, HandlerError::Unauthorized));
    assert_eq!(lambda_runtime::Diagnostic::from(err).error_message, "Unauthorized");
}

#[tokio::test]
async fn unreachable_storage_fails_closed_and_open_refuses_a_key_it_never_saw() {
    // Nothing listens on port 9 of loopback: connections are refused at once. (Open mode
    // letting a recently active key through is tested through the fault proxy, faults.rs.)
    let client =
        build_client(ClientOptions { endpoint: Some("http://127.0.0.1:9".into()), ..Default::default() }).await;
    let store = DynamoStore::new(client, "unreachable");
    for mode in [FailMode::Closed, FailMode::Open] {
        let auth = Authorizer::new(store.clone(), mode);
        let err = handle(&auth, fixture("api-key"), NOW).await.unwrap_err();
        assert!(matches!(err, HandlerError::Unavailable), "{mode:?}");
        assert_eq!(lambda_runtime::Diagnostic::from(err).error_type, "Unavailable");
    }
}
