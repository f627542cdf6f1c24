//! Test harness: a DynamoDB-protocol server and a fresh table per test.
//!
//! By default each test starts Dynoxide in-process (plain `cargo test` needs nothing else).
//! With `TOLLGATE_TEST_DYNAMODB_ENDPOINT` set (as `make test` does for moto), tests use that
//! server instead; if it is unreachable the test fails, it is never skipped.

use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::metrics::RequestCounter;

/// The instant the tests run at (2026-11-23T10:00:30Z): one clock for every test binary.
pub const NOW: shared::domain::time::UnixTime = shared::domain::time::UnixTime(1_795_428_030);

/// A request to a route no scope map names.
pub const ANY_ROUTE: shared::app::authorize::Route<'static> =
    shared::app::authorize::Route { method: "GET", path: "/" };

pub const ENDPOINT_VAR: &str = "TOLLGATE_TEST_DYNAMODB_ENDPOINT";

pub struct TestDb {
    pub store: DynamoStore,
    /// Every request the store sends, per operation.
    pub requests: RequestCounter,
    pub endpoint: String,
    pub table: String,
    _embedded: Option<EmbeddedDynamo>,
}

impl TestDb {
    /// Which server the test runs against, for messages.
    pub fn backend(&self) -> &'static str {
        if self._embedded.is_some() { "dynoxide" } else { "external" }
    }
}

/// A DynamoDB-protocol server and a new, empty table with Tollgate's schema.
pub async fn fresh_db() -> TestDb {
    let (endpoint, embedded) = match std::env::var(ENDPOINT_VAR).ok().filter(|v| !v.is_empty()) {
        Some(endpoint) => (endpoint, None),
        None => {
            let db = EmbeddedDynamo::start_in_memory().await.expect("start in-process Dynoxide");
            (db.endpoint().to_owned(), Some(db))
        }
    };
    let requests = RequestCounter::new();
    let client =
        build_client(ClientOptions { counter: Some(requests.clone()), ..ClientOptions::local(&endpoint) }).await;
    let table = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(client, table.clone()).with_decision_budget(std::time::Duration::from_secs(60));
    store.create_table_if_missing().await.unwrap_or_else(|e| panic!("create test table at {endpoint}: {e:?}"));
    requests.reset();
    TestDb { store, requests, endpoint, table, _embedded: embedded }
}

/// The local stack on a free loopback port, on the test server (Dynoxide in-process, or
/// `TOLLGATE_TEST_DYNAMODB_ENDPOINT`) with a fresh table.
pub async fn local_stack(upstream: Option<String>) -> tollgate_dev::LocalStack {
    local_stack_with(upstream, &[]).await
}

/// [`local_stack`] with more settings (environment variable name, value).
pub async fn local_stack_with(upstream: Option<String>, extra: &[(&str, &str)]) -> tollgate_dev::LocalStack {
    let endpoint = std::env::var(ENDPOINT_VAR).ok().filter(|v| !v.is_empty());
    let table = format!("tollgate-e2e-{}", uuid::Uuid::new_v4().simple());
    let settings = tollgate_dev::Settings::from_lookup(|k| match k {
        "TOLLGATE_ADDR" => Some("127.0.0.1:0".into()),
        "TOLLGATE_TABLE" => Some(table.clone()),
        "TOLLGATE_DYNAMODB_ENDPOINT" => endpoint.clone(),
        "TOLLGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        "TOLLGATE_UPSTREAM" => upstream.clone(),
        other => extra.iter().find(|(k, _)| *k == other).map(|(_, v)| (*v).to_owned()),
    })
    .expect("local stack settings");
    tollgate_dev::LocalStack::start(settings).await.expect("start the local stack")
}

pub const ADMIN_TOKEN: &str = "tga_test_admin_token";

/// A plain HTTP client for talking to the local stack as a user would.
pub struct Client {
    http: shared::http_client::HttpClient,
    base: String,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            http: shared::http_client::HttpClient::new(std::time::Duration::from_secs(60)).expect("http client"),
            base: base.into(),
        }
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(bytes::Bytes::from(body.unwrap_or("").to_owned())).expect("request");
        let resp = self.http.send(req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (parts, body) = resp.into_parts();
        let body = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into())
        };
        Reply { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// A management call with the admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string());
        let reply = self.send(method, path, &[("authorization", &auth)], body.as_deref()).await;
        openapi::check(method, path.split('?').next().unwrap_or(path), reply.status, &reply.body);
        reply
    }

    /// A call through the gateway with `key` in `x-api-key`.
    pub async fn proxy(&self, path: &str, key: &str) -> Reply {
        self.send("GET", &format!("/proxy{path}"), &[("x-api-key", key)], None).await
    }
}

pub mod faults;

pub mod fuzz;
pub mod hot;
pub mod lambda;
pub mod oidc;
pub mod openapi;
pub mod secrets;
pub mod stripe;

/// Bills `customer` through Stripe as `stripe_customer` with one subscription in `status` on
/// `price`, the way the webhook would: through the billing service, link first, then what a
/// `customer.subscription.updated` event created at `at` says.
pub async fn bill(
    store: &shared::store::dynamo::DynamoStore,
    customer: &str,
    stripe_customer: &str,
    status: shared::domain::customers::SubscriptionStatus,
    price: Option<&str>,
    at: i64,
) {
    use shared::app::billing::{Applied, Billing, StripeInput};
    use shared::domain::billing::{Observation, Source, SubscriptionFacts};
    let billing = Billing::new(store.clone(), 3600, std::time::Duration::from_secs(60));
    let facts = SubscriptionFacts {
        price_ids: price.map(str::to_owned).into_iter().collect(),
        current_period_end: Some(at + 30 * 86_400),
        created: Some(1),
    };
    let event_id = format!("evt_{stripe_customer}_{at}_{}", status.as_str());
    let observation = Observation::subscription_event(&event_id, at, Source::SubscriptionUpdated, status, facts);
    let input = StripeInput {
        stripe_customer: stripe_customer.to_owned(),
        link: Some(shared::domain::customers::CustomerId::parse(customer).expect("customer id")),
        observed: Some((format!("sub_{stripe_customer}"), observation)),
    };
    let applied = billing.apply(&input, shared::domain::time::UnixTime::now()).await.expect("bill the customer");
    assert!(matches!(applied, Applied::Synced { customer: Some(_), .. }), "{applied:?}");
}

/// A plan `id` with an optional per-minute rate limit, Stripe prices and meter, created now.
pub fn plan(
    id: &str,
    per_minute: Option<u64>,
    prices: &[&str],
    meter: Option<&str>,
    now: shared::domain::time::UnixTime,
) -> shared::domain::plans::Plan {
    use shared::domain::plans::{Plan, PlanId, RateLimit};
    Plan {
        id: PlanId::parse(id).expect("plan id"),
        name: id.to_owned(),
        rate_limit: per_minute.map(|limit| RateLimit { limit, window_s: 60 }),
        quota: None,
        stripe_price_ids: prices.iter().map(|p| (*p).to_owned()).collect(),
        meter_event_name: meter.map(str::to_owned),
        max_keys: None,
        created_at: now,
        updated_at: now,
    }
}
