//! A local stand-in for Stripe's API: answers the endpoints Tollgate calls from fixtures, checks
//! the secret key on every request, and records what it was sent.

use axum::extract::{Path, State};
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

/// A Checkout Session in subscription mode, as Stripe's API returns it.
pub fn checkout_session(id: &str, status: &str, payment_status: &str, client_reference_id: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "checkout.session",
        "mode": "subscription",
        "status": status,
        "payment_status": payment_status,
        "customer": "cus_Standin123",
        "subscription": "sub_Standin123",
        "client_reference_id": client_reference_id,
        "livemode": false,
        "amount_total": 2900,
        "currency": "usd",
        "created": 1_795_420_000,
    })
}

fn stripe_error(status: StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(json!({"error": {"type": "invalid_request_error", "message": message}}))).into_response()
}

async fn serve_checkout_session(
    State(s): State<StripeStandIn>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut inner = s.inner.lock().unwrap();
    inner.requests.push(Recorded {
        method: "GET".into(),
        path: format!("/v1/checkout/sessions/{id}"),
        authorization: authorization.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {API_KEY}")) {
        return stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    match inner.sessions.get(&id) {
        Some(session) => axum::Json(session.clone()).into_response(),
        None => stripe_error(StatusCode::NOT_FOUND, &format!("No such checkout.session: '{id}'")),
    }
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
