//! End to end, as a user meets Tollgate: the local stack on a free port, plans and keys made
//! through the management API, requests through `/proxy`. Runs on in-process Dynoxide, and
//! on moto under `make test`.

use serde_json::json;
use shared::domain::customers::SubscriptionStatus;
use shared::domain::time::UnixTime;
use tollgate_tests::{ADMIN_TOKEN, Client, local_stack, local_stack_with};

async fn create_plan(c: &Client, id: &str, rate: Option<(u64, u64)>, quota_per_day: Option<u64>) {
    let mut plan = json!({ "id": id, "name": id });
    if let Some((limit, window_s)) = rate {
        plan["rate_limit"] = json!({ "limit": limit, "window_s": window_s });
    }
    if let Some(limit) = quota_per_day {
        plan["quota"] = json!({ "limit": limit, "period": "day" });
    }
    let r = c.admin("POST", "/v1/plans", Some(plan)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Creates a key and returns (key_id, plaintext).
async fn create_key(c: &Client, customer: &str, plan: &str) -> (String, String) {
    let r = c.admin("POST", "/v1/keys", Some(json!({ "customer_id": customer, "plan_id": plan, "env": "test" }))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (r.body["key_id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_requests_carry_the_rate_limit_headers_and_reach_the_echo() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    create_plan(&c, "pro", Some((3, 3600)), Some(1000)).await;
    let (key_id, key) = create_key(&c, "acme", "pro").await;

    let r = c.proxy("/pets/7?colour=red", &key).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["path"], "/pets/7");
    assert_eq!(r.body["query"], "colour=red");
    assert_eq!(r.body["authorizer"]["key_id"], key_id.as_str());
    assert_eq!(r.body["authorizer"]["customer_id"], "acme");
    assert_eq!(r.body["authorizer"]["plan_id"], "pro");
    assert_eq!(r.header("ratelimit-policy"), Some("\"default\";q=3;w=3600"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&reset));
    assert_eq!(r.header("ratelimit"), Some(format!("\"default\";r=2;t={reset}").as_str()));
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    assert!(r.header("retry-after").is_none());
    assert!(r.header("x-request-id").is_some());

    // Bearer works as well as x-api-key.
    let bearer = format!("Bearer {key}");
    let r = c.send("POST", "/proxy/orders", &[("Authorization", &bearer)], Some("{}")).await;
    assert_eq!((r.status, r.header("x-ratelimit-remaining")), (200, Some("1")));
    assert_eq!(r.body["method"], "POST");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    create_plan(&c, "tiny", Some((2, 3600)), None).await;
    let (_, key) = create_key(&c, "acme", "tiny").await;
    for _ in 0..2 {
        assert_eq!(c.proxy("/x", &key).await.status, 200);
    }
    let r = c.proxy("/x", &key).await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{:?}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit"), Some(format!("\"default\";r=0;t={retry}").as_str()));
    assert!(r.body["request_id"].is_string());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_quota_is_429_until_the_end_of_the_utc_day() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    create_plan(&c, "daily", None, Some(2)).await;
    let (_, key) = create_key(&c, "acme", "daily").await;
    for _ in 0..2 {
        assert_eq!(c.proxy("/x", &key).await.status, 200);
    }
    let r = c.proxy("/x", &key).await;
    assert_eq!((r.status, r.code()), (429, "quota_exceeded"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("upgrade"), "the body names the upgrade path");
    let now = UnixTime::now();
    let to_midnight = now.until(now.day().next().start());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry.abs_diff(to_midnight) <= 2, "Retry-After {retry} vs {to_midnight} s to midnight UTC");
    assert_eq!(r.header("ratelimit-policy"), Some("\"default\";q=2;w=86400"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_denial_has_its_status_and_body() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    create_plan(&c, "pro", Some((100, 60)), None).await;

    let r = c.send("GET", "/proxy/x", &[], None).await;
    assert_eq!((r.status, r.code()), (401, "missing_api_key"));
    assert!(r.header("ratelimit").is_none(), "no limit headers for an unknown caller");
    let r = c.proxy("/x", "tg_test_garbage").await;
    assert_eq!((r.status, r.code()), (401, "invalid_api_key"));
    // Well-formed and correctly checksummed, but never issued.
    let unknown = shared::domain::api_key::ApiKey::generate(shared::domain::api_key::KeyEnv::Test).unwrap();
    let r = c.proxy("/x", unknown.expose_secret()).await;
    assert_eq!((r.status, r.code()), (401, "invalid_api_key"));

    let (revoked_id, revoked) = create_key(&c, "acme", "pro").await;
    assert_eq!(c.admin("POST", &format!("/v1/keys/{revoked_id}/revoke"), None).await.status, 200);
    let r = c.proxy("/x", &revoked).await;
    assert_eq!((r.status, r.code()), (401, "key_revoked"));

    let (disabled_id, disabled) = create_key(&c, "acme", "pro").await;
    let r = c.admin("PATCH", &format!("/v1/keys/{disabled_id}"), Some(json!({"status": "disabled"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = c.proxy("/x", &disabled).await;
    assert_eq!((r.status, r.code()), (403, "key_disabled"));
    // And back.
    c.admin("PATCH", &format!("/v1/keys/{disabled_id}"), Some(json!({"status": "active"}))).await;
    assert_eq!(c.proxy("/x", &disabled).await.status, 200);

    let expires = UnixTime::now().plus(2).to_rfc3339();
    let r = c
        .admin("POST", "/v1/keys", Some(json!({"customer_id": "acme", "plan_id": "pro", "expires_at": expires})))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let expiring = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(c.proxy("/x", &expiring).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    let r = c.proxy("/x", &expiring).await;
    assert_eq!((r.status, r.code()), (401, "key_expired"));

    // A cancelled subscription (as the Stripe webhook records it) stops the customer's keys.
    let (_, lapsed) = create_key(&c, "lapsed-co", "pro").await;
    assert_eq!(c.proxy("/x", &lapsed).await.status, 200);
    let now = UnixTime::now();
    tollgate_tests::bill(stack.store(), "lapsed-co", "cus_lapsed", SubscriptionStatus::Canceled, None, now.secs())
        .await;
    let r = c.proxy("/x", &lapsed).await;
    assert_eq!((r.status, r.code()), (402, "subscription_inactive"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_exactly_the_limit() {
    let stack = local_stack(None).await;
    let c = std::sync::Arc::new(Client::new(stack.url()));
    create_plan(&c, "fifty", Some((50, 3600)), None).await;
    let (_, over) = create_key(&c, "acme", "fifty").await;
    let (_, under) = create_key(&c, "acme", "fifty").await;
    for (key, n, expected) in [(over, 120, 50), (under, 30, 30)] {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (c, key) = (c.clone(), key.clone());
                tokio::spawn(async move { c.proxy("/x", &key).await.status })
            })
            .collect();
        let mut allowed = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => allowed += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!((allowed, limited), (expected, n - expected), "N={n}, L=50: exactly min(N, L) allowed");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_requests_are_forwarded_to_the_upstream() {
    // A stand-in upstream that reports what it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (
            http::StatusCode::CREATED,
            [("x-upstream", "yes")],
            axum::Json(json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "body": String::from_utf8_lossy(&body),
                "key_id": header("x-tollgate-key-id"),
                "customer_id": header("x-tollgate-customer-id"),
                "customer_ids": parts.headers.get_all("x-tollgate-customer-id").iter().count(),
                "authorization": header("authorization"),
                "headers": parts.headers.iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or(""))).collect::<Vec<_>>(),
            })),
        )
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = local_stack(Some(upstream)).await;
    let c = Client::new(stack.url());
    create_plan(&c, "pro", Some((10, 60)), None).await;
    let (key_id, key) = create_key(&c, "acme", "pro").await;
    let r = c.send("PUT", "/proxy/v2/things/1?x=1", &[("x-api-key", &key)], Some(r#"{"a":1}"#)).await;
    assert_eq!(r.status, 201, "the upstream's status: {:?}", r.body);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(r.body["method"], "PUT");
    assert_eq!(r.body["uri"], "/v2/things/1?x=1");
    assert_eq!(r.body["body"], r#"{"a":1}"#);
    assert_eq!(r.body["key_id"], key_id.as_str());
    assert_eq!(r.body["customer_id"], "acme");
    // The upstream never sees the key, and sees exactly one set of identity headers: the
    // gateway's, whatever the client sent. Its own Authorization scheme passes through.
    let forged = [
        ("x-api-key", key.as_str()),
        ("x-tollgate-customer-id", "victim"),
        ("X-Tollgate-Plan-Id", "enterprise"),
        ("authorization", "Basic dXNlcjpwYXNz"),
    ];
    let r = c.send("GET", "/proxy/v2/me", &forged, None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!((r.body["customer_id"].as_str(), r.body["customer_ids"].as_u64()), (Some("acme"), Some(1)));
    assert_eq!(r.body["authorization"], "Basic dXNlcjpwYXNz");
    let seen = r.body["headers"].to_string();
    assert!(!seen.contains(&key) && !seen.contains("victim") && !seen.contains("enterprise"), "{seen}");
    let bearer = format!("Bearer {key}");
    let r = c.send("GET", "/proxy/v2/me", &[("authorization", &bearer)], None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["authorization"], serde_json::Value::Null, "a bearer key is not forwarded");
    assert!(!r.body["headers"].to_string().contains(&key));
    // Denied requests never reach it.
    let r = c.send("PUT", "/proxy/v2/things/1", &[], None).await;
    assert_eq!(r.status, 401);
    stack.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_management_api_needs_the_admin_token() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    let r = c.send("POST", "/v1/plans", &[], Some(r#"{"id":"x","name":"X"}"#)).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = c.send("GET", "/v1/plans", &[("authorization", "Bearer wrong")], None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Nothing was created.
    let r = c.admin("GET", "/v1/plans", None).await;
    assert_eq!((r.status, r.body["items"].as_array().map(Vec::len)), (200, Some(0)));
    let r = c.send("GET", "/nowhere", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_stripe_event_reaches_the_next_request() {
    let stack = local_stack(None).await;
    let c = Client::new(stack.url());
    create_plan(&c, "pro", Some((100, 60)), None).await;
    let (_, key) = create_key(&c, "cus_RTollgateDemo", "pro").await;
    assert_eq!(c.proxy("/x", &key).await.status, 200);

    let path = format!("{}/../events/stripe-customer-subscription-deleted.json", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(path).unwrap();
    let secret = stack.webhook_secret().to_owned();
    let sig = shared::stripe::signature::sign(&body, &secret, UnixTime::now().secs());
    let body = String::from_utf8(body).unwrap();
    let r = c.send("POST", "/stripe/webhook", &[("stripe-signature", &sig)], Some(&body)).await;
    assert_eq!((r.status, &r.body["outcome"]), (200, &json!("applied")), "{:?}", r.body);
    let r = c.proxy("/x", &key).await;
    assert_eq!((r.status, r.code()), (402, "subscription_inactive"));

    let r = c.send("POST", "/stripe/webhook", &[("stripe-signature", "t=1,v1=00")], Some(&body)).await;
    assert_eq!(r.status, 400);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rollup_runs_on_demand_and_on_its_timer_and_fills_the_usage_history() {
    let stack = local_stack_with(None, &[("TOLLGATE_ROLLUP_INTERVAL_S", "1")]).await;
    let c = Client::new(stack.url());
    let plan = json!({ "id": "metered", "name": "Metered", "meter_event_name": "api_requests" });
    assert_eq!(c.admin("POST", "/v1/plans", Some(plan)).await.status, 201);
    let (key_id, key) = create_key(&c, "acme", "metered").await;
    for _ in 0..3 {
        assert_eq!(c.proxy("/", &key).await.status, 200);
    }

    let r = c.send("POST", "/internal/rollup", &[], None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    // The timer may hold the lease at this moment (409); then ask again.
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        let r = c.send("POST", "/internal/rollup", &[("authorization", &auth)], None).await;
        if r.status == 409 {
            assert_eq!(r.code(), "rollup_in_progress");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(r.status, 200, "{:?}", r.body);
        report = r.body;
        break;
    }
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["reporting"], "not_configured", "no STRIPE_API_KEY: history only");
    let history = c.admin("GET", "/v1/customers/acme/usage", None).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    assert_eq!(history.body["history"][0]["allowed"], 3, "{:?}", history.body);

    // More traffic: the timer rolls it up without being asked.
    for _ in 0..2 {
        assert_eq!(c.proxy("/", &key).await.status, 200);
    }
    let mut rolled = 0;
    for _ in 0..100 {
        let h = c.admin("GET", "/v1/customers/acme/usage", None).await;
        rolled = h.body["history"][0]["allowed"].as_u64().unwrap_or(0);
        if rolled == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rolled, 5, "the timer rolled the new requests up");
    let usage = c.admin("GET", &format!("/v1/keys/{key_id}/usage"), None).await;
    assert_eq!(usage.body["history"][0]["allowed"], 5, "{:?}", usage.body);
    stack.stop().await;
}

/// Identity and scopes as a user meets them: the local stack trusting an identity provider
/// (the loopback stand-in) and a scope map; a customer signs in with its token and manages
/// its own keys, and the gateway holds each key to the routes its scopes cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_signed_in_with_a_jwt_manages_its_keys_and_scopes_guard_routes() {
    let idp = tollgate_tests::oidc::TestIssuer::start().await;
    let mut env = idp.env();
    env.push(("TOLLGATE_SCOPES", r#"{"POST /pets": "pets:write", "GET /pets/**": "pets:read"}"#.into()));
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = local_stack_with(None, &extra).await;
    let c = Client::new(stack.url());
    let pro = json!({"id": "pro", "name": "pro", "rate_limit": {"limit": 100, "window_s": 60}, "stripe_price_ids": ["price_pro"]});
    assert_eq!(c.admin("POST", "/v1/plans", Some(pro)).await.status, 201);
    let now = UnixTime::now().secs();
    tollgate_tests::bill(stack.store(), "acme", "cus_acme", SubscriptionStatus::Active, Some("price_pro"), now).await;
    let r = c
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({"customer_id": "acme", "plan_id": "pro", "env": "test", "scopes": ["pets:read"]})),
        )
        .await;
    let reader = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(c.proxy("/pets/1", &reader).await.status, 200);
    let r = c.send("POST", "/proxy/pets", &[("x-api-key", &reader)], Some("{}")).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"));
    assert_eq!(c.proxy("/health", &reader).await.status, 200, "a route the map does not name needs no scope");
    let (other_id, _) = create_key(&c, "globex", "pro").await;

    let me = |token: &str| format!("Bearer {token}");
    let acme = me(&idp.token("customer", Some("acme"), UnixTime::now()));
    let call = |method: &'static str, path: String, body: Option<serde_json::Value>| {
        let (c, acme) = (&c, acme.clone());
        async move {
            let body = body.map(|b| b.to_string());
            let r = c.send(method, &path, &[("authorization", &acme)], body.as_deref()).await;
            tollgate_tests::openapi::check(method, path.split('?').next().unwrap(), r.status, &r.body);
            r
        }
    };
    let r = call("GET", "/v1/me".into(), None).await;
    assert_eq!((r.status, &r.body["keys"], &r.body["max_keys"]), (200, &json!(1), &json!(10)), "{:?}", r.body);
    let r = call("POST", "/v1/me/keys".into(), Some(json!({"name": "laptop"}))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (mine_id, mine) = (r.body["key_id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned());
    assert_eq!(c.proxy("/orders", &mine).await.status, 200, "the customer's own key works");
    let r = c.send("POST", "/proxy/pets", &[("x-api-key", &mine)], Some("{}")).await;
    assert_eq!((r.status, r.code()), (403, "insufficient_scope"), "scopes are the operator's to grant");
    let r = call("GET", "/v1/me/keys".into(), None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = call("GET", format!("/v1/me/keys/{other_id}"), None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "another customer's key does not exist for acme");
    let r = call("GET", "/v1/keys".into(), None).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "the operator's routes are not a customer's");
    let r = call("POST", format!("/v1/me/keys/{mine_id}/revoke"), None).await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("revoked")));
    let r = c.proxy("/orders", &mine).await;
    assert_eq!((r.status, r.code()), (401, "key_revoked"));
    // A token for this audience from another issuer's key is no sign-in at all.
    let stranger = tollgate_tests::oidc::SigningKey::ec("stranger").sign(&idp.claims("admin", None, UnixTime::now()));
    let r = c.send("GET", "/v1/plans", &[("authorization", &me(&stranger))], None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    stack.stop().await;
}

/// `GET /metrics` as Prometheus scrapes it: sample name with labels → value.
async fn scrape(c: &Client) -> std::collections::HashMap<String, f64> {
    let r = c.send("GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.body.as_str().expect("text").to_owned();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("sample value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_decisions_by_outcome_and_plan_and_rollup_runs() {
    let stack = local_stack_with(None, &[("TOLLGATE_ROLLUP_INTERVAL_S", "0")]).await;
    let c = Client::new(stack.url());
    create_plan(&c, "metrics-plan", Some((2, 3600)), None).await;
    let (_, key) = create_key(&c, "acme", "metrics-plan").await;
    // Counters are the process's: compare before and after.
    let before = scrape(&c).await;
    for status in [200, 200, 429] {
        assert_eq!(c.proxy("/", &key).await.status, status);
    }
    assert_eq!(c.send("GET", "/proxy/", &[], None).await.status, 401);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(c.send("POST", "/internal/rollup", &[("authorization", &auth)], None).await.status, 200);
    let after = scrape(&c).await;
    let grew = |name: &str| after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
    assert_eq!(grew(r#"tollgate_decisions_total{outcome="ok",plan="metrics-plan"}"#), 2.0, "{after:?}");
    assert_eq!(grew(r#"tollgate_decisions_total{outcome="rate_limited",plan="metrics-plan"}"#), 1.0);
    assert_eq!(grew(r#"tollgate_decisions_total{outcome="missing_api_key",plan="none"}"#), 1.0);
    assert_eq!(grew("tollgate_decision_duration_seconds_count"), 4.0);
    assert_eq!(grew(r#"tollgate_decision_duration_seconds_bucket{le="+Inf"}"#), 4.0);
    assert!(grew("tollgate_decision_duration_seconds_sum") > 0.0);
    assert_eq!(grew(r#"tollgate_rollup_runs_total{status="completed"}"#), 1.0);
    assert_eq!(grew("tollgate_rollup_key_days_rolled_total"), 1.0);
    stack.stop().await;
}

/// The local stack on `table` (and, on the embedded store, the data directory `dir`), so a
/// second one can be started on the same data.
async fn stack_on(table: &str, dir: &std::path::Path) -> tollgate_dev::LocalStack {
    let endpoint = std::env::var(tollgate_tests::ENDPOINT_VAR).ok().filter(|v| !v.is_empty());
    let settings = tollgate_dev::Settings::from_lookup(|k| match k {
        "TOLLGATE_ADDR" => Some("127.0.0.1:0".into()),
        "TOLLGATE_TABLE" => Some(table.to_owned()),
        "TOLLGATE_DYNAMODB_ENDPOINT" => endpoint.clone(),
        "TOLLGATE_DATA_DIR" => Some(dir.display().to_string()),
        "TOLLGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "TOLLGATE_ROLLUP_INTERVAL_S" => Some("0".into()),
        _ => None,
    })
    .expect("local stack settings");
    tollgate_dev::LocalStack::start(settings).await.expect("start the local stack")
}

/// `callers` clients at once, `each` requests apiece through the gateway with `key`:
/// (admitted, refused with 429).
async fn burst(c: &std::sync::Arc<Client>, key: &str, callers: usize, each: usize) -> (u64, u64) {
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (c, key) = (c.clone(), key.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut limited) = (0, 0);
                for _ in 0..each {
                    match c.proxy("/", &key).await.status {
                        200 => ok += 1,
                        429 => limited += 1,
                        other => panic!("unexpected status {other}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let mut total = (0, 0);
    for t in tasks {
        let (ok, limited) = t.await.unwrap();
        total = (total.0 + ok, total.1 + limited);
    }
    total
}

/// A key's (allowed, denied) as the usage API shows them, summed over its days.
async fn key_usage(c: &Client, key_id: &str) -> (u64, u64) {
    let usage = c.admin("GET", &format!("/v1/keys/{key_id}/usage"), None).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    let days = usage.body["history"].as_array().cloned().unwrap_or_default();
    days.iter()
        .fold((0, 0), |(a, d), day| (a + day["allowed"].as_u64().unwrap_or(0), d + day["denied"].as_u64().unwrap_or(0)))
}

/// What the rollup has rolled into the customer's history: allowed requests.
async fn rolled_history(c: &Client, customer: &str) -> u64 {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = c.send("POST", "/internal/rollup", &[("authorization", &auth)], None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let history = c.admin("GET", &format!("/v1/customers/{customer}/usage"), None).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    let days = history.body["history"].as_array().cloned().unwrap_or_default();
    days.iter().map(|d| d["allowed"].as_u64().unwrap_or(0)).sum()
}

/// Concurrent clients on a few hot keys, then nothing: within 2 s the local stack's sweep has
/// counted what its blocks admitted, so the usage API, the rollup's history and what clients
/// saw agree exactly; and again after a stop (what SIGTERM and Ctrl-C run) and a restart on
/// the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_concurrent_traffic_stops_usage_history_and_clients_agree() {
    let dir = std::env::temp_dir().join(format!("tollgate-settle-{}", uuid::Uuid::new_v4().simple()));
    let table = format!("tollgate-settle-{}", uuid::Uuid::new_v4().simple());
    let stack = stack_on(&table, &dir).await;
    let c = std::sync::Arc::new(Client::new(stack.url()));
    create_plan(&c, "hot", Some((1_000_000, 60)), None).await;
    let mut keys = vec![];
    for _ in 0..3 {
        keys.push(create_key(&c, "acme", "hot").await);
    }
    let mut seen = std::collections::HashMap::new();
    for (id, key) in &keys {
        seen.insert(id.clone(), burst(&c, key, 8, 40).await);
    }

    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut admitted = 0;
    for (id, clients) in &seen {
        assert_eq!(key_usage(&c, id).await, *clients, "key {id}: usage API = what its clients saw");
        admitted += clients.0;
    }
    assert_eq!(admitted, 3 * 8 * 40, "nothing refused under a limit that is never reached");
    assert_eq!(rolled_history(&c, "acme").await, admitted, "rollup history = admitted");

    // More traffic, then a stop right after it (no time for the sweep), and a restart.
    for (id, key) in &keys {
        let (ok, limited) = burst(&c, key, 8, 40).await;
        let s = seen.get_mut(id).unwrap();
        *s = (s.0 + ok, s.1 + limited);
        admitted += ok;
    }
    stack.stop().await;
    let stack = stack_on(&table, &dir).await;
    let c = Client::new(stack.url());
    for (id, clients) in &seen {
        assert_eq!(key_usage(&c, id).await, *clients, "after the restart, key {id}");
    }
    assert_eq!(rolled_history(&c, "acme").await, admitted, "after the restart, rollup history = admitted");
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spent key refused by 8 clients at once, most of the 429s answered from the container's
/// memory: within 2 s the sweep has counted them by code, so the Denied count the usage API
/// and the console show is what the clients saw, with no further request for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denials_answered_from_memory_reach_the_denied_count_without_more_traffic() {
    let dir = std::env::temp_dir().join(format!("tollgate-denied-{}", uuid::Uuid::new_v4().simple()));
    let table = format!("tollgate-denied-{}", uuid::Uuid::new_v4().simple());
    let stack = stack_on(&table, &dir).await;
    let c = std::sync::Arc::new(Client::new(stack.url()));
    create_plan(&c, "tiny", Some((40, 3_600)), None).await;
    let (id, key) = create_key(&c, "acme", "tiny").await;
    let seen = burst(&c, &key, 8, 40).await;
    assert_eq!(seen, (40, 280), "exactly the limit admitted, the rest refused");

    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(key_usage(&c, &id).await, seen, "usage API (allowed, denied) = what the clients saw");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = c.send("POST", "/internal/rollup", &[("authorization", &auth)], None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let history = c.admin("GET", "/v1/customers/acme/usage", None).await;
    let days = history.body["history"].as_array().cloned().unwrap_or_default();
    let denied: u64 = days.iter().map(|d| d["denied"].as_u64().unwrap_or(0)).sum();
    assert_eq!(denied, seen.1, "the rollup's history counts every 429 too: {:?}", history.body);
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
