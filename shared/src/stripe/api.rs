//! A minimal client for the Stripe API endpoints Tollgate calls, over [`HttpClient`].
//! `STRIPE_API_BASE` points it at Stripe, or at a local stand-in in tests.

use crate::http_client::{HttpClient, HttpError};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// The fields of a Checkout Session the claim flow reads.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required` (e.g. a trial).
    pub payment_status: Option<String>,
    /// `payment`, `setup` or `subscription`.
    pub mode: Option<String>,
    pub customer: Option<Expandable>,
    /// The subscription object ([`StripeApi::checkout_session`] expands it), or its id.
    pub subscription: Option<serde_json::Value>,
    pub client_reference_id: Option<String>,
    /// The Payment Link the session was made from (its id), if any: its `client_reference_id`
    /// came from a URL.
    #[serde(default)]
    pub payment_link: Option<serde_json::Value>,
    pub livemode: Option<bool>,
    /// Epoch seconds.
    pub created: Option<i64>,
}

/// An id, or the object itself when the request expanded it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

impl CheckoutSession {
    pub fn subscription_id(&self) -> Option<&str> {
        let s = self.subscription.as_ref()?;
        s.as_str().or_else(|| s["id"].as_str())
    }

    /// The expanded subscription object, when Stripe returned one.
    pub fn subscription_object(&self) -> Option<&serde_json::Value> {
        self.subscription.as_ref().filter(|s| s.is_object())
    }

    /// Complete, and paid (or needing no payment, as with a trial).
    pub fn is_paid(&self) -> bool {
        self.status.as_deref() == Some("complete")
            && matches!(self.payment_status.as_deref(), Some("paid" | "no_payment_required"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe has no such object")]
    NotFound,
    /// 429: too many requests; back off before the next.
    #[error("Stripe is rate limiting us")]
    RateLimited,
    /// 5xx or no answer: worth retrying later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Any other 4xx: our request or credentials are wrong; retrying will not help.
    #[error("Stripe rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("unexpected answer from Stripe: {0}")]
    BadResponse(String),
}

impl StripeError {
    /// Whether the same request may succeed later (429, 5xx, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited | Self::Unavailable(_))
    }
}

impl From<HttpError> for StripeError {
    fn from(e: HttpError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// How long one call to Stripe's API may take, retries included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct StripeApi {
    http: HttpClient,
    base: String,
    api_key: SecretString,
}

/// Stripe Checkout's sessions, as the claim confirms one.
pub trait CheckoutSessions: Send + Sync {
    /// The session with its subscription expanded; `NotFound` when Stripe has no such session.
    fn checkout_session(&self, id: &str) -> impl Future<Output = Result<CheckoutSession, StripeError>> + Send;
}

/// Stripe Billing's meter events, as the rollup reports usage.
pub trait MeterEvents: Send + Sync {
    /// Reports one event; a resend with the same identifier answers `AlreadyDelivered`.
    fn send_meter_event(
        &self,
        event: &MeterEvent<'_>,
    ) -> impl Future<Output = Result<MeterEventOutcome, StripeError>> + Send;
}

impl CheckoutSessions for StripeApi {
    async fn checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        StripeApi::checkout_session(self, id).await
    }
}

impl MeterEvents for StripeApi {
    async fn send_meter_event(&self, event: &MeterEvent<'_>) -> Result<MeterEventOutcome, StripeError> {
        StripeApi::send_meter_event(self, event).await
    }
}

impl StripeApi {
    pub fn new(base: &str, api_key: SecretString, timeout: Duration) -> Result<Self, HttpError> {
        Ok(Self { http: HttpClient::new(timeout)?, base: base.trim_end_matches('/').to_owned(), api_key })
    }

    /// The client every function builds: at `base` with the configured API key and
    /// [`TIMEOUT`]; `None` when no key is configured (Stripe is optional).
    pub fn configured(base: &str, api_key: Option<&SecretString>) -> Result<Option<Self>, HttpError> {
        api_key.map(|key| Self::new(base, key.clone(), TIMEOUT)).transpose()
    }

    /// `GET /v1/checkout/sessions/{id}?expand[]=subscription`: the session and, in the same
    /// request, its subscription as it stands. `id` must already be validated (`cs_...`): it
    /// goes into the path as is.
    pub async fn checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        let req = http::Request::get(format!("{}/v1/checkout/sessions/{id}?expand%5B%5D=subscription", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.api_key.expose_secret()))
            .body(Bytes::new())
            .map_err(|e| StripeError::BadResponse(e.to_string()))?;
        let resp = self.http.send(req).await?;
        let status = resp.status().as_u16();
        match status {
            200 => serde_json::from_slice(resp.body()).map_err(|e| StripeError::BadResponse(e.to_string())),
            404 => Err(StripeError::NotFound),
            429 | 500..=599 => Err(StripeError::Unavailable(format!("HTTP {status}"))),
            _ => Err(StripeError::Rejected { status, message: error_message(resp.body()) }),
        }
    }
}

/// One usage report for a Billing Meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent<'a> {
    pub event_name: &'a str,
    pub stripe_customer_id: &'a str,
    pub value: u64,
    pub timestamp: i64,
    /// Deterministic for the increment reported, so a resend is recognised as a duplicate.
    pub identifier: &'a str,
}

/// How Stripe answered a meter event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterEventOutcome {
    Accepted,
    /// 400 "An event already exists with identifier …": an earlier attempt got through.
    AlreadyDelivered,
}

impl StripeApi {
    /// `POST /v1/billing/meter_events`, form-encoded. `RateLimited` (429) and `Unavailable`
    /// (5xx, no answer) are worth retrying with backoff; `Rejected` is not.
    pub async fn send_meter_event(&self, event: &MeterEvent<'_>) -> Result<MeterEventOutcome, StripeError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("event_name", event.event_name)
            .append_pair("payload[stripe_customer_id]", event.stripe_customer_id)
            .append_pair("payload[value]", &event.value.to_string())
            .append_pair("timestamp", &event.timestamp.to_string())
            .append_pair("identifier", event.identifier)
            .finish();
        let req = http::Request::post(format!("{}/v1/billing/meter_events", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.api_key.expose_secret()))
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(body))
            .map_err(|e| StripeError::BadResponse(e.to_string()))?;
        let resp = self.http.send(req).await?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(MeterEventOutcome::Accepted),
            400 if error_message(resp.body()).starts_with("An event already exists with identifier") => {
                Ok(MeterEventOutcome::AlreadyDelivered)
            }
            429 => Err(StripeError::RateLimited),
            500..=599 => Err(StripeError::Unavailable(format!("HTTP {status}"))),
            _ => Err(StripeError::Rejected { status, message: error_message(resp.body()) }),
        }
    }
}

/// Stripe's `{"error": {"message": ...}}`, or a placeholder.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no error message".to_owned())
}
