//! Stripe webhook events, reduced to the changes Tollgate makes. Objects are read as Stripe's
//! current API shapes them (period dates on subscription items; an invoice's subscription under
//! `parent.subscription_details`), with the older top-level fields accepted too.

use crate::domain::billing::{Observation, Source, SubscriptionFacts};
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
    /// `checkout.session.completed` in subscription mode: links the customer it names (by
    /// `client_reference_id`, else the Stripe customer id) to the Stripe customer.
    CheckoutCompleted { client_reference_id: Option<String>, from_payment_link: bool, stripe_customer: String },
    /// `customer.subscription.created|updated|deleted`, or an invoice of a subscription: what
    /// it says about that one subscription.
    Observed { stripe_customer: String, subscription: String, observation: Observation },
    /// Any other type, a checkout that is not for a subscription, an invoice of no
    /// subscription, or a failed first invoice (the subscription stays `incomplete`).
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

/// A subscription object's status and the facts Tollgate keeps (every item's price, the
/// period end, its own `created`), from the current shape (period on the items) or the older
/// one (`plan` and `current_period_end` at the top level).
pub fn subscription_facts(o: &Value) -> Result<(SubscriptionStatus, SubscriptionFacts), &'static str> {
    let status = o["status"].as_str().and_then(SubscriptionStatus::parse).ok_or("missing or unknown status")?;
    let items = o["items"]["data"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut price_ids: Vec<String> = items
        .iter()
        .filter_map(|i| i["price"]["id"].as_str().or_else(|| i["plan"]["id"].as_str()))
        .map(str::to_owned)
        .collect();
    if price_ids.is_empty()
        && let Some(p) = o["plan"]["id"].as_str()
    {
        price_ids.push(p.to_owned());
    }
    let facts = SubscriptionFacts {
        price_ids,
        current_period_end: items
            .first()
            .and_then(|i| i["current_period_end"].as_i64())
            .or_else(|| o["current_period_end"].as_i64()),
        created: o["created"].as_i64(),
    };
    Ok((status, facts))
}

impl StripeEvent {
    pub fn change(&self) -> Result<Change, EventError> {
        let o = &self.data.object;
        let err = |reason: &str| EventError { kind: self.kind.clone(), reason: reason.to_owned() };
        match self.kind.as_str() {
            "checkout.session.completed" => {
                // Only a paid (or free-trial) subscription checkout links a customer: an unpaid
                // one (an asynchronous payment still pending) proves nothing yet.
                let paid = matches!(o["payment_status"].as_str(), Some("paid" | "no_payment_required"));
                if o["mode"].as_str() != Some("subscription") || !paid {
                    return Ok(Change::Ignored);
                }
                Ok(Change::CheckoutCompleted {
                    client_reference_id: o["client_reference_id"].as_str().map(str::to_owned),
                    from_payment_link: !o["payment_link"].is_null(),
                    stripe_customer: id_of(&o["customer"]).ok_or_else(|| err("no customer"))?,
                })
            }
            "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
                let (status, facts) = subscription_facts(o).map_err(err)?;
                let source = match self.kind.as_str() {
                    "customer.subscription.created" => Source::SubscriptionCreated,
                    "customer.subscription.updated" => Source::SubscriptionUpdated,
                    _ => Source::SubscriptionDeleted,
                };
                // A deleted subscription is over whatever status it last had.
                let status = if source == Source::SubscriptionDeleted { SubscriptionStatus::Canceled } else { status };
                Ok(Change::Observed {
                    stripe_customer: id_of(&o["customer"]).ok_or_else(|| err("no customer"))?,
                    subscription: o["id"].as_str().ok_or_else(|| err("no id"))?.to_owned(),
                    observation: Observation::subscription_event(&self.id, self.created, source, status, facts),
                })
            }
            "invoice.paid" | "invoice.payment_failed" => {
                let stripe_customer = id_of(&o["customer"]).ok_or_else(|| err("no customer"))?;
                let subscription =
                    id_of(&o["parent"]["subscription_details"]["subscription"]).or_else(|| id_of(&o["subscription"]));
                let observation = Observation::invoice(
                    &self.id,
                    self.created,
                    self.kind == "invoice.paid",
                    o["billing_reason"].as_str(),
                );
                match (subscription, observation) {
                    (Some(subscription), Some(observation)) => {
                        Ok(Change::Observed { stripe_customer, subscription, observation })
                    }
                    _ => Ok(Change::Ignored),
                }
            }
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
        let Change::Observed { stripe_customer, subscription, observation } = inv_old.change().unwrap() else {
            panic!("an invoice of a subscription is an observation of it")
        };
        assert_eq!((stripe_customer.as_str(), subscription.as_str()), ("cus_1", "sub_1"));
        assert_eq!(observation.status, SubscriptionStatus::Active);
        // One-off invoices (no subscription) and failed first invoices say nothing.
        assert_eq!(
            event("invoice.paid", json!({"customer": "cus_1", "subscription": null})).change(),
            Ok(Change::Ignored)
        );
        let first = json!({"customer": "cus_1", "subscription": "sub_1", "billing_reason": "subscription_create"});
        assert_eq!(event("invoice.payment_failed", first).change(), Ok(Change::Ignored));
    }

    /// Stripe's own shapes (events/), for every reason an invoice is billed: failed is past
    /// due and paid is active, the same both ways.
    #[test]
    fn fixture_invoices_move_their_subscription_both_ways_for_every_reason() {
        for (fixture, status) in [
            (&include_bytes!("../../../events/stripe-invoice-paid.json")[..], SubscriptionStatus::Active),
            (&include_bytes!("../../../events/stripe-invoice-payment-failed.json")[..], SubscriptionStatus::PastDue),
        ] {
            for reason in ["subscription_cycle", "subscription_update", "subscription_threshold", "manual"] {
                let mut v: Value = serde_json::from_slice(fixture).unwrap();
                v["data"]["object"]["billing_reason"] = reason.into();
                let e = parse_event(v.to_string().as_bytes()).unwrap();
                let Ok(Change::Observed { observation, .. }) = e.change() else { panic!("{reason}: {:?}", e.change()) };
                assert_eq!(observation.status, status, "{} {reason}", e.kind);
            }
        }
    }

    #[test]
    fn other_types_and_modes_are_ignored_and_broken_ones_named() {
        assert_eq!(event("charge.succeeded", json!({})).change(), Ok(Change::Ignored));
        assert_eq!(event("checkout.session.completed", json!({"mode": "payment"})).change(), Ok(Change::Ignored));
        let e = event("customer.subscription.updated", json!({"id": "sub_1", "customer": "cus_1", "status": "weird"}));
        assert_eq!(e.change().unwrap_err().kind, "customer.subscription.updated");
    }
}
