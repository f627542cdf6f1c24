//! The management API handler (the code `functions/issue-key` and the local stack's `/v1`
//! run) against the real store, with the clock in the test's hands.

use http::{HeaderMap, HeaderValue, Method};
use issue_key::api::{ApiRequest, ManagementApi};
use serde_json::{Value, json};
use shared::app::authorize::Authorizer;
use shared::config::FailMode;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use tollgate_tests::{TestDb, fresh_db};

use tollgate_tests::NOW;
const TOKEN: &str = "admin-secret";

struct Api {
    api: ManagementApi<DynamoStore>,
    db: TestDb,
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
}

async fn api() -> Api {
    let db = fresh_db().await;
    Api { api: ManagementApi::new(db.store.clone(), Some(TOKEN.to_owned().into())), db }
}

impl Api {
    async fn call_at(&self, method: Method, path: &str, body: &str, extra: &[(&str, &str)], now: UnixTime) -> Resp {
        let method_name = method.to_string();
        let mut req = ApiRequest::new(method, path).bearer(TOKEN).body(body).request_id("req-test");
        for (k, v) in extra {
            req.headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        req.caller = Some("arn:aws:iam::123456789012:user/ops".into());
        req.source = Some("203.0.113.7".into());
        let path = path.split('?').next().unwrap_or(path);
        let resp = self.api.handle(req, now).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.into_body();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        tollgate_tests::openapi::check(&method_name, path, status, &body);
        if status >= 400 {
            assert_eq!(body["request_id"], "req-test", "every error carries the request id");
            assert!(body["error"]["message"].is_string());
        }
        Resp { status, headers, body }
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Resp {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        self.call_at(method, path, &body, &[], NOW).await
    }

    async fn plan(&self, id: &str, limit: u64) {
        let r = self
            .call(
                Method::POST,
                "/v1/plans",
                json!({"id": id, "name": id, "rate_limit": {"limit": limit, "window_s": 60}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    async fn key(&self, customer: &str, plan: Option<&str>) -> Value {
        let r = self.call(Method::POST, "/v1/keys", json!({"customer_id": customer, "plan_id": plan})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    async fn key_count(&self) -> usize {
        self.call(Method::GET, "/v1/keys?limit=100", Value::Null).await.body["items"].as_array().unwrap().len()
    }
}

#[tokio::test]
async fn plans_crud_and_in_use_protection() {
    let a = api().await;
    let body = json!({
        "id": "pro", "name": "Pro",
        "rate_limit": {"limit": 100, "window_s": 60},
        "quota": {"limit": 1000000, "period": "month"},
        "stripe_price_ids": ["price_123"], "meter_event_name": "api_requests"
    });
    let r = a.call(Method::POST, "/v1/plans", body.clone()).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["quota"], json!({"limit": 1000000, "period": "month"}));
    assert_eq!(r.body["created_at"], NOW.to_rfc3339());
    let r = a.call(Method::POST, "/v1/plans", body).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));

    let r = a
        .call(Method::PUT, "/v1/plans/pro", json!({"name": "Pro 2", "rate_limit": {"limit": 200, "window_s": 60}}))
        .await;
    assert_eq!((r.status, &r.body["rate_limit"]["limit"]), (200, &json!(200)));
    assert_eq!(r.body["quota"], Value::Null, "PUT replaces the plan");
    let r = a.call(Method::PUT, "/v1/plans/pro", json!({"id": "other", "name": "x"})).await;
    assert_eq!((r.status, r.field()), (422, "id"));
    let r = a.call(Method::PUT, "/v1/plans/nope", json!({"name": "x"})).await;
    assert_eq!(r.status, 404);

    assert_eq!(a.call(Method::GET, "/v1/plans/pro", Value::Null).await.body["name"], "Pro 2");
    assert_eq!(a.call(Method::GET, "/v1/plans", Value::Null).await.body["items"].as_array().unwrap().len(), 1);

    let key = a.key("acme", Some("pro")).await;
    let r = a.call(Method::DELETE, "/v1/plans/pro", Value::Null).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    a.call(Method::POST, &format!("/v1/keys/{}/revoke", key["key_id"].as_str().unwrap()), Value::Null).await;
    let r = a.call(Method::DELETE, "/v1/plans/pro", Value::Null).await;
    assert_eq!((r.status, &r.body), (204, &Value::Null));
    assert_eq!(a.call(Method::GET, "/v1/plans/pro", Value::Null).await.status, 404);
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let a = api().await;
    a.plan("pro", 10).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/v1/plans", json!({"id": "x", "name": "X", "colour": "red"}), 422, "colour"),
        (
            "/v1/plans",
            json!({"id": "x", "name": "X", "rate_limit": {"limit": "ten", "window_s": 60}}),
            422,
            "rate_limit.limit",
        ),
        (
            "/v1/plans",
            json!({"id": "x", "name": "X", "rate_limit": {"limit": 0, "window_s": 60}}),
            422,
            "rate_limit.limit",
        ),
        ("/v1/plans", json!({"id": "x", "name": "X", "quota": {"limit": 5, "period": "week"}}), 422, "quota.period"),
        ("/v1/plans", json!({"id": "Has Space", "name": "X"}), 422, "id"),
        ("/v1/keys", json!({"plan_id": "pro"}), 422, "customer_id"),
        ("/v1/keys", json!({"customer_id": "a b"}), 422, "customer_id"),
        ("/v1/keys", json!({"customer_id": "acme", "plan_id": "missing"}), 422, "plan_id"),
        ("/v1/keys", json!({"customer_id": "acme", "env": "prod"}), 422, "env"),
        ("/v1/keys", json!({"customer_id": "acme", "expires_at": "tomorrow"}), 422, "expires_at"),
        ("/v1/keys", json!({"customer_id": "acme", "expires_at": "2001-01-01T00:00:00Z"}), 422, "expires_at"),
        ("/v1/keys", json!({"customer_id": "acme", "scopes": ["ok", "not ok"]}), 422, "scopes"),
        ("/v1/keys", json!({"customer_id": "acme", "metadata": {"k": 1}}), 422, "metadata.k"),
        (
            "/v1/keys",
            json!({"customer_id": "acme", "rate_limit": {"limit": 10, "window_s": 0}}),
            422,
            "rate_limit.window_s",
        ),
        ("/v1/keys", json!({"customer_id": "acme", "key": "tg_live_choose_my_own"}), 422, "key"),
    ];
    for (path, body, status, field) in cases {
        let r = a.call(Method::POST, path, body.clone()).await;
        assert_eq!((r.status, r.field()), (status, field), "{body} -> {}", r.body);
    }
    for (body, code) in [("{\"customer_id\": ", "invalid_json"), ("", "invalid_json"), ("[1,2]", "invalid_field")] {
        let r = a.call_at(Method::POST, "/v1/keys", body, &[], NOW).await;
        assert_eq!(r.code(), code, "{body:?}");
    }
    let huge = json!({"customer_id": "acme", "name": "x".repeat(20_000)}).to_string();
    let r = a.call_at(Method::POST, "/v1/keys", &huge, &[], NOW).await;
    assert_eq!((r.status, r.code()), (400, "body_too_large"));
    let r = a.call(Method::GET, "/v1/keys/not-a-key-id", Value::Null).await;
    assert_eq!((r.status, r.field()), (422, "key_id"));
    let r = a.call(Method::GET, "/v1/keys?colour=red", Value::Null).await;
    assert_eq!((r.status, r.field()), (422, "colour"));
    let r = a.call(Method::GET, "/v1/keys?limit=0", Value::Null).await;
    assert_eq!((r.status, r.field()), (422, "limit"));
    let r = a.call(Method::GET, "/v1/keys?cursor=garbage", Value::Null).await;
    assert_eq!((r.status, r.field()), (422, "cursor"));
    let r = a.call(Method::DELETE, "/v1/keys", Value::Null).await;
    assert_eq!((r.status, r.headers.get("allow").unwrap().to_str().unwrap()), (405, "GET, POST"));

    assert_eq!(a.key_count().await, 0, "no failed request wrote a key");
    assert_eq!(a.call(Method::GET, "/v1/plans", Value::Null).await.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(a.call(Method::GET, "/v1/customers/acme", Value::Null).await.status, 404);
}

#[tokio::test]
async fn keys_are_listed_by_filter_and_cursor_without_secrets() {
    let a = api().await;
    a.plan("pro", 10).await;
    a.plan("free", 10).await;
    for i in 0..5 {
        a.key(if i < 3 { "acme" } else { "globex" }, Some(if i % 2 == 0 { "pro" } else { "free" })).await;
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?customer_id=acme&limit=2&cursor={}", urlencode(c)),
            None => "/v1/keys?customer_id=acme&limit=2".into(),
        };
        let r = a.call(Method::GET, &path, Value::Null).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["customer_id"], "acme");
            let text = item.to_string();
            assert!(item.get("key").is_none() && !text.contains("hash"), "{text}");
            seen.push(item["key_id"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    let r = a.call(Method::GET, "/v1/keys?plan_id=pro", Value::Null).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let r = a.call(Method::GET, "/v1/keys?status=revoked", Value::Null).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);

    let r = a.call(Method::GET, "/v1/customers/acme", Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["keys"].as_array().unwrap().len(), 3);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn patch_changes_only_what_it_names() {
    let a = api().await;
    a.plan("pro", 10).await;
    let key = a.key("acme", Some("pro")).await;
    let path = format!("/v1/keys/{}", key["key_id"].as_str().unwrap());
    let r = a
        .call(
            Method::PATCH,
            &path,
            json!({"name": "Server", "metadata": {"team": "api"}, "quota": {"limit": 50, "period": "day"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((&r.body["name"], &r.body["metadata"]["team"]), (&json!("Server"), &json!("api")));
    assert_eq!(r.body["limits"]["quota"], json!({"limit": 50, "period": "day"}));
    let r = a.call(Method::PATCH, &path, json!({"rate_limit": {"limit": 7, "window_s": 1}})).await;
    assert_eq!(r.body["quota"], json!({"limit": 50, "period": "day"}), "the other override is kept");
    assert_eq!(r.body["limits"]["rate_limit"], json!({"limit": 7, "window_s": 1}));
    let r = a.call(Method::PATCH, &path, json!({"name": null, "quota": null})).await;
    assert_eq!((&r.body["name"], &r.body["quota"]), (&Value::Null, &Value::Null));
    assert_eq!(r.body["metadata"]["team"], "api");
    let r = a.call(Method::PATCH, &path, json!({"status": "revoked"})).await;
    assert_eq!((r.status, r.field()), (422, "status"));
    let r = a.call(Method::PATCH, "/v1/keys/key_01JD0000000000000000000000", json!({"name": "x"})).await;
    assert_eq!(r.status, 404);

    let r = a.call(Method::POST, &format!("{path}/revoke"), Value::Null).await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("revoked")));
    assert_eq!(a.call(Method::GET, &path, Value::Null).await.body["status"], "revoked");
    let r = a.call(Method::PATCH, &path, json!({"status": "active"})).await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "revocation is permanent");
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
    let a = api().await;
    a.plan("pro", 1000).await;
    let key = a.key("acme", Some("pro")).await;
    let old = key["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{}/rotate", key["key_id"].as_str().unwrap());
    let r = a.call(Method::POST, &path, json!({"grace_s": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.body["key"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(r.body["key_id"], key["key_id"]);
    assert_eq!(r.body["rotation"]["previous_secret_valid_until"], NOW.plus(3600).to_rfc3339());

    let authorizer = Authorizer::new(a.db.store.clone(), FailMode::Closed);
    assert!(authorizer.decide(Some(&old), tollgate_tests::ANY_ROUTE, NOW.plus(10)).await.is_allowed());
    assert!(authorizer.decide(Some(&new), tollgate_tests::ANY_ROUTE, NOW.plus(10)).await.is_allowed());
    let late = authorizer.decide(Some(&old), tollgate_tests::ANY_ROUTE, NOW.plus(3601)).await;
    assert_eq!(late.outcome.unwrap_err().code(), "invalid_api_key");
    assert!(authorizer.decide(Some(&new), tollgate_tests::ANY_ROUTE, NOW.plus(3601)).await.is_allowed());

    let r = a.call(Method::POST, &path, json!({"grace_s": 99_999_999})).await;
    assert_eq!((r.status, r.field()), (422, "grace_s"));
}

#[tokio::test]
async fn idempotent_create_returns_the_same_key_and_never_a_second() {
    let a = api().await;
    let body = json!({"customer_id": "acme", "name": "once"}).to_string();
    let idem = [("idempotency-key", "create-acme-1")];
    let first = a.call_at(Method::POST, "/v1/keys", &body, &idem, NOW).await;
    assert_eq!(first.status, 201);
    assert!(first.body["key"].is_string());
    let again = a.call_at(Method::POST, "/v1/keys", &body, &idem, NOW.plus(5)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["key_id"], first.body["key_id"]);
    assert!(again.body.get("key").is_none(), "the plaintext is shown once, never replayed");
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let other = json!({"customer_id": "acme", "name": "different"}).to_string();
    let r = a.call_at(Method::POST, "/v1/keys", &other, &idem, NOW).await;
    assert_eq!((r.status, r.field()), (422, "Idempotency-Key"));
    assert_eq!(a.key_count().await, 1);
    // A failed create does not burn the idempotency key.
    let bad = json!({"customer_id": "acme", "plan_id": "missing"}).to_string();
    let idem2 = [("idempotency-key", "create-acme-2")];
    assert_eq!(a.call_at(Method::POST, "/v1/keys", &bad, &idem2, NOW).await.status, 422);
    let good = json!({"customer_id": "acme"}).to_string();
    assert_eq!(a.call_at(Method::POST, "/v1/keys", &good, &idem2, NOW).await.status, 201);
}

#[tokio::test]
async fn usage_shows_the_window_the_quota_and_the_history() {
    let a = api().await;
    let r = a
        .call(
            Method::POST,
            "/v1/plans",
            json!({"id": "pro", "name": "Pro", "rate_limit": {"limit": 2, "window_s": 60}, "quota": {"limit": 100, "period": "day"}}),
        )
        .await;
    assert_eq!(r.status, 201);
    let key = a.key("acme", Some("pro")).await;
    let authorizer = Authorizer::new(a.db.store.clone(), FailMode::Closed);
    let secret = key["key"].as_str().unwrap();
    for _ in 0..3 {
        authorizer.decide(Some(secret), tollgate_tests::ANY_ROUTE, NOW).await;
    }
    let r = a.call(Method::GET, &format!("/v1/keys/{}/usage", key["key_id"].as_str().unwrap()), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((&r.body["rate_limit"]["used"], &r.body["rate_limit"]["remaining"]), (&json!(2), &json!(0)));
    assert_eq!((&r.body["quota"]["used"], &r.body["quota"]["remaining"]), (&json!(2), &json!(98)));
    assert_eq!(r.body["quota"]["reset"], NOW.day().next().start().to_rfc3339());
    assert_eq!(
        r.body["history"],
        json!([{"day": NOW.day().iso(), "allowed": 2, "denied": 1, "denied_by_code": {"rate_limited": 1}}])
    );
}

#[tokio::test]
async fn every_route_needs_the_admin_token() {
    let a = api().await;
    for (method, path) in [(Method::GET, "/v1/plans"), (Method::POST, "/v1/keys"), (Method::GET, "/v1/customers/acme")]
    {
        let req = ApiRequest {
            method,
            path: path.into(),
            query: String::new(),
            headers: HeaderMap::new(),
            body: br#"{"customer_id":"acme"}"#.to_vec(),
            request_id: "r".into(),
            caller: None,
            source: None,
        };
        let resp = a.api.handle(req, NOW).await;
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(a.key_count().await, 0);
}
