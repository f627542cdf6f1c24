//! The management router's own behaviour (authentication, routing, the error envelope, bodies
//! and idempotency), on a fresh table. What needs more of DynamoDB's semantics (conditional
//! writes racing, pagination over an index, usage) is in `management.rs`.

use http::{HeaderMap, HeaderValue, Method};
use issue_key::api::{ApiRequest, ManagementApi};
use serde_json::{Value, json};
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{KeyFilter, KeyStore};
use tollgate_tests::{TestDb, fresh_db};

const TOKEN: &str = "unit-admin-token";
const NOW: UnixTime = UnixTime(1_795_428_030);

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// The router on a fresh table; the database lives as long as the first value.
async fn api() -> (TestDb, ManagementApi<DynamoStore>) {
    let db = fresh_db().await;
    let api = ManagementApi::new(db.store.clone(), Some(TOKEN.to_owned().into()));
    (db, api)
}

async fn send(api: &ManagementApi<DynamoStore>, method: Method, path: &str, body: &str, token: Option<&str>) -> Resp {
    let req = ApiRequest::new(method, path).bearer(token.unwrap_or("")).body(body).request_id("req-unit");
    let resp = api.handle(req, NOW).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.into_body();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    if status >= 400 {
        assert_eq!(body["request_id"], "req-unit", "every error carries the request id");
    }
    Resp { status, headers, body }
}

async fn call(api: &ManagementApi<DynamoStore>, method: Method, path: &str, body: Value) -> Resp {
    let body = if body.is_null() { String::new() } else { body.to_string() };
    send(api, method, path, &body, Some(TOKEN)).await
}

#[tokio::test]
async fn the_admin_token_guards_every_route_but_the_claim() {
    let (_db, api) = api().await;
    for token in [None, Some("wrong-token")] {
        let r = send(&api, Method::GET, "/v1/plans", "", token).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"));
        // An unknown path under /v1 does not tell a stranger it is unknown.
        let r = send(&api, Method::GET, "/v1/nothing-here", "", token).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"));
    }
    // The claim is public (the session id is its credential); without Stripe it is not set up.
    let r = send(&api, Method::GET, "/v1/claim?session_id=cs_test_abc", "", None).await;
    assert_eq!((r.status, r.code()), (501, "not_configured"));
    let r = call(&api, Method::GET, "/v1/plans", Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-request-id"], "req-unit");
}

/// Deployed with IAM alone (no admin token, no sign-in), operator status comes only from the
/// IAM caller context API Gateway passes on: a request without it, or with a bearer token
/// nobody issued, is 401 on every guarded route, and changes nothing.
#[tokio::test]
async fn without_the_iam_caller_context_no_request_is_an_operator() {
    let db = fresh_db().await;
    let api = ManagementApi::new(db.store.clone(), None);
    for (method, path, body) in [
        (Method::GET, "/v1/plans", ""),
        (Method::POST, "/v1/plans", r#"{"id":"free","name":"Free"}"#),
        (Method::GET, "/v1/keys", ""),
        (Method::GET, "/v1/stats", ""),
    ] {
        for bearer in ["", "tga_guessed", "a.b.c"] {
            let req = ApiRequest::new(method.clone(), path).bearer(bearer).body(body);
            let resp = api.handle(req, NOW).await;
            assert_eq!(resp.status(), 401, "{method} {path} with {bearer:?}: {}", resp.body());
        }
    }
    let mut req = ApiRequest::new(Method::GET, "/v1/plans/free");
    req.caller = Some("arn:aws:iam::123456789012:user/ops".into());
    assert_eq!(api.handle(req, NOW).await.status(), 404, "nothing was created");
}

#[tokio::test]
async fn methods_paths_and_bodies_are_refused_with_their_reason() {
    let (_db, api) = api().await;
    let r = call(&api, Method::DELETE, "/v1/keys", Value::Null).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert_eq!(r.headers["allow"], "GET, POST");
    let r = call(&api, Method::GET, "/v1/plans/", Value::Null).await;
    assert_eq!(r.status, 200, "a trailing slash names the same resource");
    let r = call(&api, Method::GET, "/v1/nothing-here", Value::Null).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = send(&api, Method::POST, "/v1/plans", r#"{"id":"a","name":"a","name":"b"}"#, Some(TOKEN)).await;
    assert_eq!((r.status, r.code(), &r.body["error"]["field"]), (422, "invalid_field", &json!("name")));
    let r = send(&api, Method::POST, "/v1/plans", "{not json", Some(TOKEN)).await;
    assert_eq!((r.status, r.code()), (400, "invalid_json"));
    let r = call(&api, Method::GET, "/v1/keys?colour=blue", Value::Null).await;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("colour")));
    let r = call(&api, Method::GET, "/v1/customers/%FF", Value::Null).await;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("path")));
}

/// A body that is present must parse, also on the routes whose body is optional or empty:
/// anything but nothing (or JSON whitespace) that is not a JSON object is refused, and the
/// request changes nothing. A form feed is whitespace to Rust's `is_ascii_whitespace`, not to
/// JSON.
#[tokio::test]
async fn a_body_that_is_present_must_parse_on_every_route() {
    let (_db, api) = api().await;
    let r = call(&api, Method::POST, "/v1/plans", json!({"id": "pro", "name": "Pro"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call(&api, Method::POST, "/v1/keys", json!({"customer_id": "acme", "plan_id": "pro"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key_id = r.body["key_id"].as_str().unwrap().to_owned();
    let routes = [
        (Method::POST, format!("/v1/keys/{key_id}/revoke")),
        (Method::POST, format!("/v1/keys/{key_id}/rotate")),
        (Method::DELETE, "/v1/plans/pro".to_owned()),
    ];
    for (method, path) in &routes {
        for (body, status, code) in
            [("\x0c", 400, "invalid_json"), ("{not json", 400, "invalid_json"), ("[]", 422, "invalid_field")]
        {
            let r = send(&api, method.clone(), path, body, Some(TOKEN)).await;
            assert_eq!((r.status, r.code()), (status, code), "{method} {path} {body:?}: {}", r.body);
        }
    }
    let r = call(&api, Method::GET, &format!("/v1/keys/{key_id}"), Value::Null).await;
    assert_eq!((r.body["status"].as_str(), r.body["prev_until"].is_null()), (Some("active"), true), "unchanged");
    // An empty body, or JSON whitespace, is no body.
    let r = send(&api, Method::POST, &format!("/v1/keys/{key_id}/revoke"), " \r\n\t", Some(TOKEN)).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("revoked")), "{}", r.body);
    let r = call(&api, Method::POST, "/v1/plans", json!({"id": "spare", "name": "Spare"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(&api, Method::DELETE, "/v1/plans/spare", "", Some(TOKEN)).await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[tokio::test]
async fn plans_are_created_read_replaced_and_guarded_while_in_use() {
    let (_db, api) = api().await;
    let pro = json!({"id": "pro", "name": "Pro", "rate_limit": {"limit": 100, "window_s": 60}});
    let r = call(&api, Method::POST, "/v1/plans", pro.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["created_at"], NOW.to_rfc3339());
    let r = call(&api, Method::POST, "/v1/plans", pro).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = call(&api, Method::PUT, "/v1/plans/pro", json!({"id": "other", "name": "Pro"})).await;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("id")));
    let r = call(&api, Method::PUT, "/v1/plans/pro", json!({"name": "Pro 2", "quota": {"limit": 5, "period": "day"}}))
        .await;
    assert_eq!((r.status, &r.body["rate_limit"]), (200, &Value::Null), "PUT replaces the whole plan");
    let r = call(&api, Method::POST, "/v1/keys", json!({"customer_id": "acme", "plan_id": "pro"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["limits"]["quota"], json!({"limit": 5, "period": "day"}), "the key copies its plan's limits");
    let key_id = r.body["key_id"].as_str().unwrap().to_owned();
    let r = call(&api, Method::DELETE, "/v1/plans/pro", Value::Null).await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "a plan in use is not deleted");
    assert_eq!(call(&api, Method::POST, &format!("/v1/keys/{key_id}/revoke"), Value::Null).await.status, 200);
    assert_eq!(call(&api, Method::DELETE, "/v1/plans/pro", Value::Null).await.status, 204);
    assert_eq!(call(&api, Method::GET, "/v1/plans/pro", Value::Null).await.status, 404);
}

#[tokio::test]
async fn a_key_shows_its_plaintext_once_and_revocation_is_final() {
    let (_db, api) = api().await;
    let r = call(&api, Method::POST, "/v1/keys", json!({"customer_id": "acme", "env": "test"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let plaintext = r.body["key"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("tg_test_"));
    let key_id = r.body["key_id"].as_str().unwrap().to_owned();
    let r = call(&api, Method::GET, &format!("/v1/keys/{key_id}"), Value::Null).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("key").is_none(), "the plaintext is shown once");
    assert!(!r.body.to_string().contains(&plaintext));
    assert_eq!(r.body["display"], format!("tg_test_...{}", &plaintext[plaintext.len() - 4..]));

    let r = call(&api, Method::POST, &format!("/v1/keys/{key_id}/rotate"), json!({"grace_s": 60})).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.body["key"].as_str().unwrap(), plaintext);
    assert_eq!(r.body["rotation"]["previous_secret_valid_until"], NOW.plus(60).to_rfc3339());

    let r = call(&api, Method::POST, &format!("/v1/keys/{key_id}/revoke"), Value::Null).await;
    assert_eq!((r.status, &r.body["status"], &r.body["rotation"]), (200, &json!("revoked"), &Value::Null));
    let r = call(&api, Method::PATCH, &format!("/v1/keys/{key_id}"), json!({"status": "active"})).await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "revocation is permanent");
    let r = call(&api, Method::POST, &format!("/v1/keys/{key_id}/rotate"), Value::Null).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = call(&api, Method::PATCH, &format!("/v1/keys/{key_id}"), json!({"status": "revoked"})).await;
    assert_eq!(r.status, 422, "a patch cannot revoke");
}

#[tokio::test]
async fn keys_are_listed_by_filter_and_cursor() {
    let (_db, api) = api().await;
    for customer in ["acme", "acme", "acme", "globex"] {
        assert_eq!(call(&api, Method::POST, "/v1/keys", json!({"customer_id": customer})).await.status, 201);
    }
    let mut seen = vec![];
    let mut path = "/v1/keys?customer_id=acme&limit=2".to_owned();
    loop {
        let r = call(&api, Method::GET, &path, Value::Null).await;
        assert_eq!(r.status, 200);
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["customer_id"], "acme");
            seen.push(item["key_id"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/keys?customer_id=acme&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    seen.dedup();
    assert_eq!(seen.len(), 3, "no key twice across pages");
    let r = call(&api, Method::GET, "/v1/keys?status=disabled", Value::Null).await;
    assert_eq!(r.body["items"], json!([]));
    let r = call(&api, Method::GET, "/v1/keys?limit=0", Value::Null).await;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("limit")));
}

#[tokio::test]
async fn customers_are_found_by_id_or_not_at_all() {
    let (_db, api) = api().await;
    let r = call(&api, Method::GET, "/v1/customers/nobody", Value::Null).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = call(&api, Method::POST, "/v1/keys", json!({"customer_id": "a@b"})).await;
    let key_id = r.body["key_id"].clone();
    let r = call(&api, Method::GET, "/v1/customers/a%40b", Value::Null).await;
    assert_eq!((r.status, &r.body["customer_id"], &r.body["keys"]), (200, &json!("a@b"), &json!([key_id])));
    let r = call(&api, Method::POST, "/v1/keys", json!({"customer_id": "acme", "plan_id": "ghost"})).await;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("plan_id")), "a key cannot name a missing plan");
}

#[tokio::test]
async fn an_idempotent_create_issues_one_key() {
    let (_db, api) = api().await;
    let body = json!({"customer_id": "acme"}).to_string();
    let send_with = |key: &'static str, body: String| {
        let api = api.clone();
        async move {
            let mut req = ApiRequest::new(Method::POST, "/v1/keys").bearer(TOKEN).body(body).request_id("req-unit");
            req.headers.insert("idempotency-key", HeaderValue::from_static(key));
            api.handle(req, NOW).await
        }
    };
    let first = send_with("order-17", body.clone()).await;
    assert_eq!(first.status(), 201);
    let again = send_with("order-17", body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(!again.body().contains("\"key\":"), "the plaintext is not shown again");
    let other = send_with("order-17", json!({"customer_id": "globex"}).to_string()).await;
    assert_eq!(other.status(), 422, "the same key with another body");
    let keys = api.store().list_keys(&KeyFilter::default(), 100, None).await.unwrap();
    assert_eq!(keys.items.len(), 1);
}
