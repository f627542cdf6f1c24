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

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Value>,
    requests: Vec<Recorded>,
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
            .with_state(standin.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        standin
    }

    /// Serves `session` (a Checkout Session object as Stripe shapes it) under its `id`.
    pub fn add_session(&self, session: Value) {
        let id = session["id"].as_str().expect("session id").to_owned();
        self.inner.lock().unwrap().sessions.insert(id, session);
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
