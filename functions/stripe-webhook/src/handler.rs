//! One Stripe webhook delivery: signature first, then exactly-once, order-safe application of
//! the event to the customer it concerns (and through the store, to all their keys).

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::config::Secrets;
use shared::domain::customers::{Customer, CustomerId, EventStamp, SubscriptionStatus};
use shared::domain::plans::PlanId;
use shared::domain::time::UnixTime;
use shared::store::{Claim, CustomerStore, IdempotencyStore, PlanStore, StoreError};
use shared::stripe::events::{Change, StripeEvent, parse_event};
use shared::stripe::signature::{SignatureError, verify};

/// Stripe redelivers for up to three days; remember event ids for thirty.
const EVENT_RECORD_TTL_S: i64 = 30 * 86_400;
/// How long one delivery holds an event before a concurrent redelivery may take over.
const EVENT_LEASE_S: u64 = 60;
/// Stripe's events are far smaller; refuse to buffer more than this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub trait WebhookStore: CustomerStore + PlanStore + IdempotencyStore {}
impl<T: CustomerStore + PlanStore + IdempotencyStore> WebhookStore for T {}

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
            Self::Store(StoreError::Unavailable(_)) => "unavailable",
            Self::Store(_) => "internal_error",
        }
    }
}

/// What a delivery did, for the response and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// An older event than the state already stored: nothing changed.
    Stale,
    Duplicate,
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

pub struct Webhook<S> {
    store: S,
    secrets: Secrets,
    tolerance_s: i64,
    past_due_grace_s: u64,
}

impl<S: WebhookStore> Webhook<S> {
    pub fn new(store: S, secrets: Secrets, tolerance_s: i64, past_due_grace_s: u64) -> Self {
        Self { store, secrets, tolerance_s, past_due_grace_s }
    }

    /// Answers one delivery. `body` is the raw request body (already base64-decoded).
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8], request_id: &str, now: UnixTime) -> Response<String> {
        let span = tracing::info_span!("stripe_webhook", request_id);
        let _guard = span.enter();
        let (status, body) = match self.process(headers, body, now).await {
            Ok((event_id, outcome)) => {
                (StatusCode::OK, json!({ "received": true, "event_id": event_id, "outcome": outcome.as_str() }))
            }
            Err(e) => {
                match &e {
                    WebhookError::Store(s) => tracing::error!(error = %e, source = %s, "webhook failed"),
                    // Never the secret, the signature or the body.
                    _ => tracing::warn!(code = e.code(), error = %e, "webhook rejected"),
                }
                let body = json!({ "error": { "code": e.code(), "message": e.to_string() }, "request_id": request_id });
                (e.status(), body)
            }
        };
        let mut resp = Response::new(body.to_string());
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
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
        let owner = uuid::Uuid::new_v4().to_string();
        let fingerprint = hex::encode(Sha256::digest(body));
        let expires = now.plus(EVENT_RECORD_TTL_S);
        match self.store.claim("stripe-event", &event.id, &owner, &fingerprint, EVENT_LEASE_S, expires, now).await? {
            Claim::Fresh => {}
            Claim::InProgress { .. } => return Err(WebhookError::InProgress),
            Claim::Done { .. } => return Ok((event.id, Outcome::Duplicate)),
        }
        match self.apply(&event, change, now).await {
            Ok(outcome) => {
                self.store.finish("stripe-event", &event.id, &owner, outcome.as_str(), expires).await?;
                tracing::info!(event_id = %event.id, outcome = outcome.as_str(), "event processed");
                Ok((event.id, outcome))
            }
            Err(e) => {
                let _ = self.store.release("stripe-event", &event.id, &owner).await;
                Err(e)
            }
        }
    }

    async fn apply(&self, event: &StripeEvent, change: Change, now: UnixTime) -> Result<Outcome, WebhookError> {
        let mut stamp = EventStamp { created: event.created, event_id: event.id.clone() };
        let bad = |e: shared::domain::plans::ValidationError| WebhookError::BadEvent(e.to_string());
        let mut customer = match &change {
            Change::CheckoutCompleted { client_reference_id, stripe_customer, subscription } => {
                let id = CustomerId::for_checkout(client_reference_id.as_deref(), stripe_customer).map_err(bad)?;
                let mut c = match self.store.get_customer(&id).await? {
                    // Subscription and invoice events carry the same ids, and their state is
                    // what matters: a checkout never overrides them.
                    Some(c) if c.last_event.as_ref().is_some_and(|e| e.created > 0) => return Ok(Outcome::Stale),
                    Some(c) => c,
                    None => Customer::new(id.clone(), now),
                };
                // Subscription events can arrive before the checkout that names the customer;
                // they were recorded under the Stripe customer id. Carry that state over.
                if let Some(prior) = self.store.customer_for_stripe(stripe_customer).await?
                    && prior != id
                    && let Some(p) = self.store.get_customer(&prior).await?
                {
                    c.stripe_subscription_id = p.stripe_subscription_id;
                    c.subscription_status = p.subscription_status;
                    c.plan_id = p.plan_id;
                    c.current_period_end = p.current_period_end;
                    c.past_due_since = p.past_due_since;
                    c.unknown_price_id = p.unknown_price_id;
                    c.last_event = p.last_event;
                }
                c.stripe_customer_id = Some(stripe_customer.clone());
                if subscription.is_some() {
                    c.stripe_subscription_id.clone_from(subscription);
                }
                // A checkout carries no subscription state, so it must not make a subscription
                // event created before it (and delivered after it) look stale: it sorts before
                // every real event, or keeps the stamp of the state it carried over.
                stamp = c.last_event.clone().unwrap_or(EventStamp { created: 0, event_id: event.id.clone() });
                c
            }
            Change::Subscription { stripe_customer, .. } | Change::Invoice { stripe_customer, .. } => {
                let id = match self.store.customer_for_stripe(stripe_customer).await? {
                    Some(id) => id,
                    None => CustomerId::parse(stripe_customer).map_err(bad)?,
                };
                let mut c = self.store.get_customer(&id).await?.unwrap_or_else(|| Customer::new(id, now));
                c.stripe_customer_id = Some(stripe_customer.clone());
                c
            }
            Change::Ignored => return Ok(Outcome::Ignored),
        };
        let previous = customer.subscription_status;
        match change {
            Change::CheckoutCompleted { .. } | Change::Ignored => {}
            Change::Subscription { subscription, status, price_id, current_period_end, .. } => {
                customer.stripe_subscription_id = Some(subscription);
                customer.subscription_status = Some(status);
                if let Some(end) = current_period_end {
                    customer.current_period_end = Some(UnixTime(end));
                }
                if let Some(price) = price_id {
                    match self.plan_for_price(&price).await? {
                        Some(plan) => {
                            customer.plan_id = Some(plan);
                            customer.unknown_price_id = None;
                        }
                        None => {
                            // Recorded for the operator; limits stay as they were.
                            tracing::error!(
                                price_id = %price, customer_id = %customer.customer_id, event_id = %event.id,
                                "no plan lists this Stripe price; add it to a plan's stripe_price_ids"
                            );
                            customer.unknown_price_id = Some(price);
                        }
                    }
                }
            }
            Change::Invoice { paid, .. } => {
                use SubscriptionStatus::*;
                // An invoice never revives a subscription that has ended.
                let ended = matches!(previous, Some(Canceled | IncompleteExpired));
                if !ended {
                    customer.subscription_status = Some(if paid { Active } else { PastDue });
                }
            }
        }
        if customer.subscription_status == Some(SubscriptionStatus::PastDue) {
            if previous != Some(SubscriptionStatus::PastDue) || customer.past_due_since.is_none() {
                customer.past_due_since = Some(UnixTime(event.created));
            }
        } else {
            customer.past_due_since = None;
        }
        customer.last_event = Some(stamp);
        customer.updated_at = now;
        let applied = self.store.apply_customer(&customer, self.past_due_grace_s).await?;
        Ok(if applied { Outcome::Applied } else { Outcome::Stale })
    }

    async fn plan_for_price(&self, price: &str) -> Result<Option<PlanId>, StoreError> {
        // Plans are few: a scan of them beats an index that every plan write must keep.
        let plans = self.store.list_plans().await?;
        Ok(plans.into_iter().find(|p| p.stripe_price_ids.iter().any(|id| id == price)).map(|p| p.id))
    }
}
