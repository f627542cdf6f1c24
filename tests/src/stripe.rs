//! A local stand-in for Stripe's API: answers the endpoints Tollgate calls from fixtures, checks
//! the secret key on every request, and records what it was sent.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const API_KEY: &str = "sk_test_tollgate_standin";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub authorization: Option<String>,
}

/// An answer the stand-in gives instead of its normal one, for fault tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    /// No answer for this long (longer than the client's timeout).
    Delay(std::time::Duration),
    /// Accept the event, then answer 500 as if it failed: a crash after Stripe's accept.
    AcceptThen500,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    requests: Vec<Recorded>,
    /// Meter events accepted, by identifier (Stripe keeps one per identifier).
    meter_events: Vec<HashMap<String, String>>,
    /// "An event already exists with identifier" answers given.
    duplicates: usize,
    faults: std::collections::VecDeque<Fault>,
}

#[derive(Clone, Default)]
pub struct StripeStandIn {
    inner: Arc<Mutex<Inner>>,
    pub base: String,
}

impl StripeStandIn {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Stripe stand-in");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let standin = Self { inner: Arc::default(), base };
        let app = axum::Router::new()
            .route("/v1/checkout/sessions/{id}", get(serve_checkout_session))
            .route("/v1/billing/meter_events", axum::routing::post(serve_meter_event))
            .with_state(standin.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        standin
    }

    /// Serves `session` (a Checkout Session object as Stripe shapes it) under its `id`.
    pub fn add_session(&self, session: Value) {
        let id = session["id"].as_str().expect("session id").to_owned();
        self.inner.lock().unwrap().sessions.insert(id, session);
    }

    /// Serves `subscription` (a Subscription object) under its `id`: a session naming it by id
    /// returns it expanded when the request asks for `expand[]=subscription`, as Stripe does.
    pub fn add_subscription(&self, subscription: Value) {
        let id = subscription["id"].as_str().expect("subscription id").to_owned();
        self.inner.lock().unwrap().subscriptions.insert(id, subscription);
    }

    /// The next requests to the meter events endpoint get these answers, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults.iter().copied());
    }

    /// Every meter event Stripe accepted (each identifier once), with its form fields.
    pub fn meter_events(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().meter_events.clone()
    }

    /// How many resends were answered "An event already exists with identifier …".
    pub fn duplicates(&self) -> usize {
        self.inner.lock().unwrap().duplicates
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/stripe-{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A Checkout Session in subscription mode, in the full shape Stripe's API returns it
/// (events/stripe-checkout-session-object.json), for Stripe customer `cus_Standin123` and
/// subscription `sub_Standin123` (by id; the stand-in expands it on request).
pub fn checkout_session(id: &str, status: &str, payment_status: &str, client_reference_id: Option<&str>) -> Value {
    let mut s = fixture("checkout-session-object");
    s["id"] = id.into();
    s["status"] = status.into();
    s["payment_status"] = payment_status.into();
    s["client_reference_id"] = client_reference_id.into();
    s["customer"] = "cus_Standin123".into();
    s["subscription"] = "sub_Standin123".into();
    s
}

/// A Subscription object in the full shape Stripe's API returns it, on one price.
pub fn subscription(id: &str, customer: &str, status: &str, price: &str) -> Value {
    let mut s = fixture("checkout-session-object")["subscription"].clone();
    s["id"] = id.into();
    s["customer"] = customer.into();
    s["status"] = status.into();
    let item = &mut s["items"]["data"][0];
    item["subscription"] = id.into();
    item["price"]["id"] = price.into();
    item["plan"]["id"] = price.into();
    s
}

fn stripe_error(status: StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(json!({"error": {"type": "invalid_request_error", "message": message}}))).into_response()
}

async fn serve_checkout_session(
    State(s): State<StripeStandIn>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut inner = s.inner.lock().unwrap();
    inner.requests.push(Recorded {
        method: "GET".into(),
        path: format!("/v1/checkout/sessions/{id}"),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {API_KEY}")) {
        return stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    let mut expand = vec![];
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "expand[]" => expand.push(v.into_owned()),
            other => return stripe_error(StatusCode::BAD_REQUEST, &format!("Received unknown parameter: {other}")),
        }
    }
    let Some(mut session) = inner.sessions.get(&id).cloned() else {
        return stripe_error(StatusCode::NOT_FOUND, &format!("No such checkout.session: '{id}'"));
    };
    for field in expand {
        if field != "subscription" {
            return stripe_error(StatusCode::BAD_REQUEST, &format!("This property cannot be expanded ({field})."));
        }
        if let Some(sub) = session["subscription"].as_str().and_then(|id| inner.subscriptions.get(id)) {
            session["subscription"] = sub.clone();
        }
    }
    axum::Json(session).into_response()
}

async fn serve_meter_event(
    State(s): State<StripeStandIn>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let fault = {
        let mut inner = s.inner.lock().unwrap();
        inner.requests.push(Recorded {
            method: "POST".into(),
            path: "/v1/billing/meter_events".into(),
            query: None,
            authorization: authorization.clone(),
        });
        inner.faults.pop_front()
    };
    match fault {
        Some(Fault::Status(code)) => {
            return stripe_error(StatusCode::from_u16(code).unwrap(), "injected failure");
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    if authorization.as_deref() != Some(&format!("Bearer {API_KEY}")) {
        return stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    if !headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded")) {
        return stripe_error(StatusCode::BAD_REQUEST, "expected a form-encoded body");
    }
    for field in ["event_name", "payload[stripe_customer_id]", "payload[value]", "timestamp", "identifier"] {
        if form.get(field).is_none_or(|v| v.is_empty()) {
            return stripe_error(StatusCode::BAD_REQUEST, &format!("Missing required param: {field}."));
        }
    }
    let mut inner = s.inner.lock().unwrap();
    let identifier = form["identifier"].clone();
    if inner.meter_events.iter().any(|e| e["identifier"] == identifier) {
        inner.duplicates += 1;
        let msg = format!("An event already exists with identifier {identifier}.");
        return stripe_error(StatusCode::BAD_REQUEST, &msg);
    }
    inner.meter_events.push(form.clone());
    if fault == Some(Fault::AcceptThen500) {
        return stripe_error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure after accept");
    }
    axum::Json(json!({
        "object": "billing.meter_event", "event_name": form["event_name"], "identifier": identifier,
        "payload": {"stripe_customer_id": form["payload[stripe_customer_id]"], "value": form["payload[value]"]},
        "timestamp": form["timestamp"].parse::<i64>().unwrap_or(0), "livemode": false, "created": 1_795_428_000
    }))
    .into_response()
}
