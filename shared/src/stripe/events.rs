//! Stripe webhook events, reduced to the changes Tollgate makes. Objects are read as Stripe's
//! current API shapes them (period dates on subscription items; an invoice's subscription under
//! `parent.subscription_details`), with the older top-level fields accepted too.

use crate::domain::customers::SubscriptionStatus;
use serde::Deserialize;
use serde_json::Value;

/// The envelope every event shares.
#[derive(Debug, Clone, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `checkout.session.completed` in subscription mode.
    CheckoutCompleted { client_reference_id: Option<String>, stripe_customer: String, subscription: Option<String> },
    /// `customer.subscription.created|updated|deleted`.
    Subscription {
        stripe_customer: String,
        subscription: String,
        status: SubscriptionStatus,
        price_id: Option<String>,
        current_period_end: Option<i64>,
    },
    /// `invoice.paid` (true) or `invoice.payment_failed` (false).
    Invoice { stripe_customer: String, subscription: Option<String>, paid: bool },
    /// Any other type, or a checkout that is not for a subscription.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} event: {reason}")]
pub struct EventError {
    pub kind: String,
    pub reason: String,
}

pub fn parse_event(body: &[u8]) -> Result<StripeEvent, EventError> {
    serde_json::from_slice(body).map_err(|e| EventError { kind: "Stripe".into(), reason: e.to_string() })
}

impl StripeEvent {
    pub fn change(&self) -> Result<Change, EventError> {
        let o = &self.data.object;
        let err = |reason: &str| EventError { kind: self.kind.clone(), reason: reason.to_owned() };
        match self.kind.as_str() {
            "checkout.session.completed" => {
                if o["mode"].as_str() != Some("subscription") {
                    return Ok(Change::Ignored);
                }
                Ok(Change::CheckoutCompleted {
                    client_reference_id: o["client_reference_id"].as_str().map(str::to_owned),
                    stripe_customer: id_of(&o["customer"]).ok_or_else(|| err("no customer"))?,
                    subscription: id_of(&o["subscription"]),
                })
            }
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                let status = o["status"]
                    .as_str()
                    .and_then(SubscriptionStatus::parse)
                    .ok_or_else(|| err("missing or unknown status"))?;
                let item = &o["items"]["data"][0];
                Ok(Change::Subscription {
                    stripe_customer: id_of(&o["customer"]).ok_or_else(|| err("no customer"))?,
                    subscription: o["id"].as_str().ok_or_else(|| err("no id"))?.to_owned(),
                    // A deleted subscription is over whatever status it last had.
                    status: if self.kind.ends_with("deleted") { SubscriptionStatus::Canceled } else { status },
                    price_id: item["price"]["id"].as_str().or_else(|| o["plan"]["id"].as_str()).map(str::to_owned),
                    current_period_end: item["current_period_end"]
                        .as_i64()
                        .or_else(|| o["current_period_end"].as_i64()),
                })
            }
            "invoice.paid" | "invoice.payment_failed" => Ok(Change::Invoice {
                stripe_customer: id_of(&o["customer"]).ok_or_else(|| err("no customer"))?,
                subscription: id_of(&o["parent"]["subscription_details"]["subscription"])
                    .or_else(|| id_of(&o["subscription"])),
                paid: self.kind == "invoice.paid",
            }),
            _ => Ok(Change::Ignored),
        }
    }
}

/// An id, or the id of an expanded object.
fn id_of(v: &Value) -> Option<String> {
    v.as_str().or_else(|| v["id"].as_str()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, object: Value) -> StripeEvent {
        serde_json::from_value(json!({"id": "evt_1", "type": kind, "created": 10, "data": {"object": object}})).unwrap()
    }

    #[test]
    fn current_and_older_shapes() {
        let new = event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "customer": "cus_1", "status": "active",
                   "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": 99}]}}),
        );
        let old = event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "customer": {"id": "cus_1"}, "status": "active", "current_period_end": 99,
                   "plan": {"id": "price_pro"}, "items": {"data": []}}),
        );
        assert_eq!(new.change(), old.change());
        let inv_new = event(
            "invoice.paid",
            json!({"customer": "cus_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}),
        );
        let inv_old = event("invoice.paid", json!({"customer": "cus_1", "subscription": "sub_1"}));
        assert_eq!(inv_new.change(), inv_old.change());
        assert_eq!(
            inv_old.change().unwrap(),
            Change::Invoice { stripe_customer: "cus_1".into(), subscription: Some("sub_1".into()), paid: true }
        );
    }

    #[test]
    fn other_types_and_modes_are_ignored_and_broken_ones_named() {
        assert_eq!(event("charge.succeeded", json!({})).change(), Ok(Change::Ignored));
        assert_eq!(event("checkout.session.completed", json!({"mode": "payment"})).change(), Ok(Change::Ignored));
        let e = event("customer.subscription.updated", json!({"id": "sub_1", "customer": "cus_1", "status": "weird"}));
        assert_eq!(e.change().unwrap_err().kind, "customer.subscription.updated");
    }
}
