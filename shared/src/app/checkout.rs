//! The Checkout claim's rules: which sessions yield a key, for which customer. The caller
//! may hold any session id of the seller's Stripe account (they leak through browser
//! history, Referer headers and analytics) and may have chosen its `client_reference_id`
//! (Payment Links take it from the URL), so only what Stripe confirms counts.

use super::billing::StripeInput;
use crate::domain::api_key::KeyEnv;
use crate::domain::billing::Observation;
use crate::domain::customers::{CustomerId, SubscriptionStatus};
use crate::stripe::api::CheckoutSession;
use crate::stripe::events::subscription_facts;

/// A session that may be claimed, and what the claim records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimable {
    pub customer_id: CustomerId,
    pub env: KeyEnv,
    /// The link and the subscription snapshot, for [`super::billing::Billing::apply`].
    pub input: StripeInput,
}

/// Why a session yields no key. Nothing is written for any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    #[error("Only subscription Checkout sessions yield API keys (this one is mode {0}).")]
    NotSubscription(String),
    #[error("The Checkout session is not complete and paid (status {status}, payment {payment}).")]
    NotPaid { status: String, payment: String },
    #[error("The Checkout session has no Stripe customer.")]
    NoCustomer,
    #[error("The Checkout session has no subscription.")]
    NoSubscription,
    #[error("The session's subscription is {0}; it grants no access.")]
    SubscriptionInactive(&'static str),
    #[error("client_reference_id: {0}")]
    InvalidReference(String),
    #[error("The session's subscription is for a price no plan lists; it buys no API access.")]
    UnknownPrice,
    #[error("The Checkout session is more than {} days old; ask the seller for a key.", CLAIM_WINDOW_S / 86_400)]
    TooOld,
}

/// How long after checkout a session can be claimed. The success page claims it at once; a
/// session id that leaks later (browser history, logs, analytics) is worth nothing to
/// whoever finds it.
pub const CLAIM_WINDOW_S: i64 = 7 * 86_400;

impl ClaimRefusal {
    /// Status and code: 409 for a session whose state refuses a key, 422 for one that can
    /// never yield one.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::NotSubscription(_) => (422, "not_a_subscription"),
            Self::NotPaid { .. } => (409, "checkout_incomplete"),
            Self::NoCustomer => (422, "no_customer"),
            Self::NoSubscription => (409, "no_subscription"),
            Self::SubscriptionInactive(_) => (409, "subscription_inactive"),
            Self::InvalidReference(_) => (422, "invalid_field"),
            Self::UnknownPrice => (409, "unknown_price"),
            Self::TooOld => (409, "session_expired"),
        }
    }
}

/// Whether `session` (retrieved with its subscription expanded) may be claimed: a complete,
/// paid (or free-trial) `mode: subscription` session whose subscription exists, grants access
/// now, and is for a price one of the plans lists (`plan_for_price`): a subscription to
/// another product of the seller's buys no key.
pub fn claimable(
    session: &CheckoutSession,
    plan_for_price: impl Fn(&str) -> Option<crate::domain::plans::PlanId>,
    now: crate::domain::time::UnixTime,
) -> Result<Claimable, ClaimRefusal> {
    let mode = session.mode.as_deref().unwrap_or("unknown");
    if mode != "subscription" {
        return Err(ClaimRefusal::NotSubscription(mode.to_owned()));
    }
    if !session.is_paid() {
        return Err(ClaimRefusal::NotPaid {
            status: session.status.clone().unwrap_or_else(|| "unknown".into()),
            payment: session.payment_status.clone().unwrap_or_else(|| "unknown".into()),
        });
    }
    if session.created.is_none_or(|c| now.secs() - c > CLAIM_WINDOW_S) {
        return Err(ClaimRefusal::TooOld);
    }
    let stripe_customer = session.customer.as_ref().map(|c| c.id().to_owned()).ok_or(ClaimRefusal::NoCustomer)?;
    let subscription = session.subscription_object().ok_or(ClaimRefusal::NoSubscription)?;
    let id = subscription["id"].as_str().ok_or(ClaimRefusal::NoSubscription)?;
    let (status, facts) = subscription_facts(subscription).map_err(|_| ClaimRefusal::NoSubscription)?;
    use SubscriptionStatus::*;
    if !matches!(status, Active | Trialing | PastDue) {
        return Err(ClaimRefusal::SubscriptionInactive(status.as_str()));
    }
    if !facts.price_ids.iter().any(|p| plan_for_price(p).is_some()) {
        return Err(ClaimRefusal::UnknownPrice);
    }
    let from_payment_link = session.payment_link.as_ref().is_some_and(|l| !l.is_null());
    let customer_id =
        CustomerId::for_checkout(session.client_reference_id.as_deref(), from_payment_link, &stripe_customer)
            .map_err(|e| ClaimRefusal::InvalidReference(e.message))?;
    let env =
        if session.id.starts_with("cs_live_") || session.livemode == Some(true) { KeyEnv::Live } else { KeyEnv::Test };
    let observation = Observation::snapshot(&session.id, status, facts);
    Ok(Claimable {
        input: StripeInput {
            stripe_customer,
            link: Some(customer_id.clone()),
            observed: Some((id.to_owned(), observation)),
        },
        customer_id,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(patch: serde_json::Value) -> CheckoutSession {
        let mut s = json!({
            "id": "cs_test_1", "object": "checkout.session", "mode": "subscription", "status": "complete",
            "payment_status": "paid", "customer": "cus_1", "client_reference_id": "user-42", "livemode": false,
            "created": 900,
            "subscription": {"id": "sub_1", "object": "subscription", "status": "active", "customer": "cus_1",
                "created": 5, "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": 99}]}},
        });
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(s).unwrap()
    }

    fn plans(price: &str) -> Option<crate::domain::plans::PlanId> {
        (price == "price_pro").then(|| crate::domain::plans::PlanId::parse("pro").unwrap())
    }

    #[test]
    fn only_paid_subscription_sessions_with_a_live_subscription_are_claimable() {
        let claimable = |s: &CheckoutSession| claimable(s, plans, crate::domain::time::UnixTime(1_000));
        let ok = claimable(&session(json!({}))).unwrap();
        assert_eq!((ok.customer_id.as_str(), ok.env), ("user-42", KeyEnv::Test));
        let (sub, obs) = ok.input.observed.unwrap();
        assert_eq!((sub.as_str(), obs.stamp.created), ("sub_1", None), "a snapshot never beats an event");
        let code = |patch| claimable(&session(patch)).unwrap_err().status_and_code();
        assert_eq!(code(json!({"mode": "payment", "subscription": null})), (422, "not_a_subscription"));
        assert_eq!(code(json!({"mode": "setup"})), (422, "not_a_subscription"));
        assert_eq!(code(json!({"status": "open", "payment_status": "unpaid"})), (409, "checkout_incomplete"));
        assert_eq!(code(json!({"status": "complete", "payment_status": "unpaid"})), (409, "checkout_incomplete"));
        assert_eq!(code(json!({"subscription": null})), (409, "no_subscription"));
        assert_eq!(code(json!({"subscription": "sub_1"})), (409, "no_subscription"), "not expanded: not confirmed");
        let canceled = json!({"subscription": {"id": "sub_1", "status": "canceled", "items": {"data": []}}});
        assert_eq!(code(canceled), (409, "subscription_inactive"));
        assert_eq!(code(json!({"customer": null})), (422, "no_customer"));
        assert_eq!(code(json!({"client_reference_id": "no spaces"})), (422, "invalid_field"));
        let trial = json!({"payment_status": "no_payment_required",
            "subscription": {"id": "sub_1", "status": "trialing", "items": {"data": [{"price": {"id": "price_pro"}}]}}});
        assert!(claimable(&session(trial)).is_ok());
        let other_product = json!({"subscription": {"id": "sub_1", "status": "active",
            "items": {"data": [{"price": {"id": "price_newsletter"}}]}}});
        assert_eq!(code(other_product), (409, "unknown_price"));
        assert_eq!(code(json!({"created": 1_000 - CLAIM_WINDOW_S - 1})), (409, "session_expired"));
    }
}
