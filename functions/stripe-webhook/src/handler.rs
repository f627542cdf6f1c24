//! One Stripe webhook delivery: signature first, then exactly-once, order-safe application of
//! the event to the customer it concerns (and through the store, to all their keys).

use http::{HeaderMap, Response, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::app::billing::{Applied, Billing, BillingError, StripeInput};
use shared::app::idempotent::{self, Job, Once, Scope};
use shared::config::Secrets;
use shared::domain::customers::CustomerId;
use shared::domain::time::UnixTime;
use shared::envelope;
use shared::store::{BillingStore, CustomerStore, IdempotencyStore, PlanStore, StoreError};
use shared::stripe::events::{Change, StripeEvent, parse_event};
use shared::stripe::signature::{SignatureError, verify};
use std::time::Duration;

/// How long one delivery holds an event before a concurrent redelivery may take over.
pub const EVENT_LEASE_S: u64 = 60;
/// Stripe's events are far smaller; refuse to buffer more than this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one delivery may spend bringing a customer's keys in line before it answers 503
/// (and Stripe's retry continues where it stopped), well inside Stripe's delivery timeout.
pub const FANOUT_BUDGET: Duration = Duration::from_secs(8);

pub trait WebhookStore: CustomerStore + PlanStore + IdempotencyStore + BillingStore {}
impl<T: CustomerStore + PlanStore + IdempotencyStore + BillingStore> WebhookStore for T {}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    BadEvent(String),
    #[error("this event is being processed by another delivery")]
    InProgress,
    /// Recorded, but not everything it implies is written yet; Stripe's retry continues.
    #[error("{0}")]
    Unfinished(String),
    #[error("storage failed")]
    Store(#[from] StoreError),
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Signature(_) | Self::BadEvent(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // Stripe retries non-2xx answers: exactly what these need.
            Self::InProgress => StatusCode::CONFLICT,
            Self::Unfinished(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.code(),
            Self::TooLarge => "body_too_large",
            Self::BadEvent(_) => "invalid_event",
            Self::InProgress => "in_progress",
            Self::Unfinished(_) => "unfinished",
            Self::Store(StoreError::Unavailable(_)) => "unavailable",
            Self::Store(_) => "internal_error",
        }
    }
}

/// What a delivery did, for the response and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The customer's billing moved.
    Applied,
    /// Recorded; the customer's billing did not move (an older event, a subscription that does
    /// not govern, or a Stripe customer not linked to a customer yet).
    Recorded,
    Duplicate,
    Ignored,
    /// A checkout naming a customer linked to another Stripe customer: nothing written.
    Conflict,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Recorded => "recorded",
            Self::Conflict => "conflict",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

pub struct Webhook<S> {
    billing: Billing<S>,
    secrets: Secrets,
    tolerance_s: i64,
}

impl<S: WebhookStore> Webhook<S> {
    pub fn new(store: S, secrets: Secrets, tolerance_s: i64, past_due_grace_s: u64) -> Self {
        Self { billing: Billing::new(store, past_due_grace_s, FANOUT_BUDGET), secrets, tolerance_s }
    }

    /// Answers one delivery. `body` is the raw request body (already base64-decoded).
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8], request_id: &str, now: UnixTime) -> Response<String> {
        let span = tracing::info_span!("stripe_webhook", request_id);
        let _guard = span.enter();
        let result = self.process(headers, body, now).await;
        shared::metrics::global().webhook(match &result {
            Ok((_, outcome)) => outcome.as_str(),
            Err(e) => e.code(),
        });
        match result {
            Ok((event_id, outcome)) => {
                let body = json!({ "received": true, "event_id": event_id, "outcome": outcome.as_str() });
                envelope::json_response(StatusCode::OK, &body, request_id)
            }
            Err(e) => {
                match &e {
                    WebhookError::Store(s) => tracing::error!(error = %e, source = %s, "webhook failed"),
                    // Never the secret, the signature or the body.
                    _ => tracing::warn!(code = e.code(), error = %e, "webhook rejected"),
                }
                envelope::error_response(e.status().as_u16(), e.code(), &e.to_string(), request_id)
            }
        }
    }

    async fn process(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: UnixTime,
    ) -> Result<(String, Outcome), WebhookError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WebhookError::TooLarge);
        }
        let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
        verify(header, body, self.secrets.iter(), now.secs(), self.tolerance_s)?;
        let event = parse_event(body).map_err(|e| WebhookError::BadEvent(e.to_string()))?;
        let change = event.change().map_err(|e| WebhookError::BadEvent(e.to_string()))?;
        tracing::info!(event_id = %event.id, event_type = %event.kind, "event received");
        if change == Change::Ignored {
            return Ok((event.id, Outcome::Ignored));
        }
        let fingerprint = hex::encode(Sha256::digest(body));
        let job =
            Job { scope: Scope::StripeEvent, id: &event.id, fingerprint: &fingerprint, lease_s: EVENT_LEASE_S, now };
        let work = || async {
            let outcome = self.apply(&event, change.clone(), now).await?;
            Ok::<_, WebhookError>((outcome, outcome.as_str().to_owned()))
        };
        match idempotent::once(self.billing.store(), job, work).await? {
            // Unrecorded: Stripe is told to retry, and the retry applies the same observation again.
            Once::Ran { unrecorded: Some(e), .. } => Err(WebhookError::Store(e)),
            Once::Ran { value: outcome, unrecorded: None } => {
                tracing::info!(event_id = %event.id, outcome = outcome.as_str(), "event processed");
                Ok((event.id, outcome))
            }
            Once::InProgress => Err(WebhookError::InProgress),
            Once::Done { .. } => {
                // Nothing is recorded twice, but the customer's billing is derived again: after
                // an operator adds a missing price to a plan, resending the event from Stripe's
                // dashboard brings the customer in line (and repairs a fan-out cut short).
                let stripe_customer = match &change {
                    Change::CheckoutCompleted { stripe_customer, .. } | Change::Observed { stripe_customer, .. } => {
                        stripe_customer
                    }
                    Change::Ignored => return Ok((event.id, Outcome::Duplicate)),
                };
                match self.billing.sync(stripe_customer, now).await {
                    Ok(Applied::Synced { changed: true, .. }) => Ok((event.id, Outcome::Applied)),
                    Ok(_) => Ok((event.id, Outcome::Duplicate)),
                    Err(BillingError::Store(e)) => Err(WebhookError::Store(e)),
                    Err(e) => Err(WebhookError::Unfinished(e.to_string())),
                }
            }
        }
    }

    /// Hands the event to the billing service, the one writer of billing state the claim
    /// shares, so neither order of arrival matters.
    async fn apply(&self, event: &StripeEvent, change: Change, now: UnixTime) -> Result<Outcome, WebhookError> {
        let input = match change {
            Change::CheckoutCompleted { client_reference_id, from_payment_link, stripe_customer } => {
                let customer =
                    CustomerId::for_checkout(client_reference_id.as_deref(), from_payment_link, &stripe_customer)
                        .map_err(|e| WebhookError::BadEvent(e.to_string()))?;
                StripeInput { stripe_customer, link: Some(customer), observed: None }
            }
            Change::Observed { stripe_customer, subscription, observation } => {
                StripeInput { stripe_customer, link: None, observed: Some((subscription, observation)) }
            }
            Change::Ignored => return Ok(Outcome::Ignored),
        };
        match self.billing.apply(&input, now).await {
            Ok(Applied::Synced { changed: true, .. }) => Ok(Outcome::Applied),
            Ok(Applied::Synced { changed: false, .. }) => Ok(Outcome::Recorded),
            Ok(Applied::Conflict(conflict)) => {
                // Retrying cannot help, so Stripe gets a 200; the operator gets the log line.
                tracing::error!(event_id = %event.id, error = %conflict, "checkout names a customer linked elsewhere; nothing written");
                Ok(Outcome::Conflict)
            }
            Err(BillingError::Store(e)) => Err(WebhookError::Store(e)),
            Err(e @ (BillingError::Incomplete(_) | BillingError::Contention)) => {
                Err(WebhookError::Unfinished(e.to_string()))
            }
        }
    }
}
