//! Stripe in memory, for unit tests above the API client (feature `memory`): Checkout
//! sessions as Stripe would return them (session JSON in Stripe's shape, subscription
//! expanded), and meter events taken once per identifier, as Stripe takes them. Both count
//! what they were asked, so a test can show what never reached Stripe.

use super::api::{CheckoutSession, CheckoutSessions, MeterEvent, MeterEventOutcome, MeterEvents, StripeError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Cheap to clone: clones share the same sessions and events.
#[derive(Clone, Default)]
pub struct MemoryStripe {
    sessions: Arc<Mutex<Vec<serde_json::Value>>>,
    asked: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<DeliveredEvent>>>,
}

/// A meter event Stripe accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredEvent {
    pub identifier: String,
    pub stripe_customer_id: String,
    pub value: u64,
}

impl MemoryStripe {
    /// Stripe with these Checkout session objects (matched by their `id`).
    pub fn with_sessions(sessions: Vec<serde_json::Value>) -> Self {
        Self { sessions: Arc::new(Mutex::new(sessions)), ..Self::default() }
    }

    /// How many times a Checkout session was asked for.
    pub fn sessions_asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// The meter events accepted, in order.
    pub fn delivered(&self) -> Vec<DeliveredEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CheckoutSessions for MemoryStripe {
    async fn checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let found = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.iter().find(|s| s["id"] == id).cloned().ok_or(StripeError::NotFound)?
        };
        serde_json::from_value(found).map_err(|e| StripeError::BadResponse(e.to_string()))
    }
}

impl MeterEvents for MemoryStripe {
    async fn send_meter_event(&self, event: &MeterEvent<'_>) -> Result<MeterEventOutcome, StripeError> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.iter().any(|e| e.identifier == event.identifier) {
            return Ok(MeterEventOutcome::AlreadyDelivered);
        }
        events.push(DeliveredEvent {
            identifier: event.identifier.to_owned(),
            stripe_customer_id: event.stripe_customer_id.to_owned(),
            value: event.value,
        });
        Ok(MeterEventOutcome::Accepted)
    }
}
