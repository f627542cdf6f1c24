//! Customers and the subscription state that decides whether their keys authorize.

use super::admission;
use super::plans::{PlanId, ValidationError};
use super::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The operator's (or Stripe Checkout's `client_reference_id`) name for a customer:
/// 1–200 chars of `A-Z a-z 0-9 _ - . : @`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "customer_id",
                "must be 1-200 characters of A-Z, a-z, 0-9, '_', '-', '.', ':' or '@'",
            ))
        }
    }

    /// The customer a completed Checkout session pays for: the session's
    /// `client_reference_id` when the seller's server set it (creating the session through
    /// the API, for its own signed-in user), else the Stripe customer id. A session made from
    /// a Payment Link (`from_payment_link`) takes `client_reference_id` from its URL, which
    /// anyone can write: naming an existing customer there would link that customer to the
    /// payer's Stripe customer (for good: links never move) and give the payer its keys, so
    /// such a session is always the Stripe customer's own.
    pub fn for_checkout(
        client_reference_id: Option<&str>,
        from_payment_link: bool,
        stripe_customer_id: &str,
    ) -> Result<Self, ValidationError> {
        match client_reference_id.filter(|s| !s.is_empty() && !from_payment_link) {
            Some(r) => Self::parse(r),
            None => Self::parse(stripe_customer_id),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CustomerId {
    type Error = crate::domain::plans::InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).map_err(crate::domain::plans::InvalidValue)
    }
}

impl From<CustomerId> for String {
    fn from(c: CustomerId) -> String {
        c.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stripe's subscription statuses, as Stripe spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Paused,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 8] = [
        Self::Active,
        Self::Trialing,
        Self::PastDue,
        Self::Unpaid,
        Self::Canceled,
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a key's authorization needs to know of its customer, copied onto every key item so
/// the authorizer decides from one item. `status: None` means the customer is not billed
/// through Stripe (keys issued by the operator directly), which never blocks access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomerAccess {
    pub status: Option<SubscriptionStatus>,
    /// For `past_due`: access continues until this instant.
    pub grace_until: Option<UnixTime>,
}

impl CustomerAccess {
    /// Whether this access admits a request at `now`: the rule [`admission`] lists (no status,
    /// an open one, or one in grace before its grace instant), which the store's counting write
    /// states as its condition too.
    pub fn allows(&self, now: UnixTime) -> bool {
        match self.status {
            None => true,
            Some(status) if admission::OPEN_SUBSCRIPTIONS.contains(&status) => true,
            Some(status) if admission::GRACE_SUBSCRIPTIONS.contains(&status) => {
                self.grace_until.is_some_and(|g| now < g)
            }
            Some(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub plan_id: Option<PlanId>,
    pub current_period_end: Option<UnixTime>,
    /// When the subscription went `past_due`; grace is measured from here.
    pub past_due_since: Option<UnixTime>,
    /// The governing subscription's price when no plan lists it, so an operator sees why the
    /// customer has no plan limits.
    pub unknown_price_id: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl Customer {
    pub fn new(customer_id: CustomerId, now: UnixTime) -> Self {
        Self {
            customer_id,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            subscription_status: None,
            plan_id: None,
            current_period_end: None,
            past_due_since: None,
            unknown_price_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// This customer linked to the Stripe customer `stripe_customer_id`: billed through Stripe
    /// from now on, and `incomplete` (so without access) until a subscription is known, unless
    /// it has a status already.
    pub fn linked_to_stripe(mut self, stripe_customer_id: &str) -> Self {
        self.stripe_customer_id = Some(stripe_customer_id.to_owned());
        self.subscription_status.get_or_insert(SubscriptionStatus::Incomplete);
        self
    }

    /// The access this customer's keys get, given the operator's past-due grace. A customer
    /// billed through Stripe whose subscription buys no plan Tollgate knows (a price no plan
    /// lists) gets none: Tollgate cannot know its limits or its meter, so it fails closed.
    pub fn access(&self, past_due_grace_s: u64) -> CustomerAccess {
        if self.stripe_customer_id.is_some() && self.plan_id.is_none() {
            return CustomerAccess { status: Some(SubscriptionStatus::Incomplete), grace_until: None };
        }
        CustomerAccess {
            status: self.subscription_status,
            grace_until: match self.subscription_status {
                Some(SubscriptionStatus::PastDue) => {
                    Some(self.past_due_since.unwrap_or(self.updated_at).plus(past_due_grace_s as i64))
                }
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_by_status() {
        let now = UnixTime(1_000);
        for (status, allowed) in [
            (None, true),
            (Some(SubscriptionStatus::Active), true),
            (Some(SubscriptionStatus::Trialing), true),
            (Some(SubscriptionStatus::Unpaid), false),
            (Some(SubscriptionStatus::Canceled), false),
            (Some(SubscriptionStatus::Incomplete), false),
            (Some(SubscriptionStatus::IncompleteExpired), false),
            (Some(SubscriptionStatus::Paused), false),
        ] {
            assert_eq!(CustomerAccess { status, grace_until: None }.allows(now), allowed, "{status:?}");
        }
        let pd = |g| CustomerAccess { status: Some(SubscriptionStatus::PastDue), grace_until: g };
        assert!(pd(Some(UnixTime(1_001))).allows(now));
        assert!(!pd(Some(UnixTime(1_000))).allows(now));
        assert!(!pd(None).allows(now));
    }

    #[test]
    fn past_due_grace_counts_from_when_it_started() {
        let mut c = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(0));
        c.subscription_status = Some(SubscriptionStatus::PastDue);
        c.past_due_since = Some(UnixTime(100));
        assert_eq!(c.access(50).grace_until, Some(UnixTime(150)));
        c.subscription_status = Some(SubscriptionStatus::Active);
        assert_eq!(c.access(50).grace_until, None);
    }

    #[test]
    fn a_stripe_billed_customer_without_a_known_plan_gets_no_access() {
        let mut c = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(0));
        c.subscription_status = Some(SubscriptionStatus::Active);
        assert!(c.access(0).allows(UnixTime(1)), "not billed through Stripe: the operator's call");
        c.stripe_customer_id = Some("cus_1".into());
        assert!(!c.access(0).allows(UnixTime(1)), "an unknown price buys nothing");
        c.plan_id = Some(PlanId::parse("pro").unwrap());
        assert!(c.access(0).allows(UnixTime(1)));
    }

    #[test]
    fn a_customer_just_linked_to_stripe_has_no_access_until_a_subscription_is_known() {
        let linked = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(0)).linked_to_stripe("cus_1");
        assert_eq!(linked.stripe_customer_id.as_deref(), Some("cus_1"));
        assert_eq!(linked.subscription_status, Some(SubscriptionStatus::Incomplete));
        assert_eq!(
            linked.access(0),
            CustomerAccess { status: Some(SubscriptionStatus::Incomplete), grace_until: None }
        );
        assert!(!linked.access(0).allows(UnixTime(1)));
        // A status the customer has is its own: linking does not reset it.
        let mut known = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(0));
        known.subscription_status = Some(SubscriptionStatus::Active);
        assert_eq!(known.linked_to_stripe("cus_1").subscription_status, Some(SubscriptionStatus::Active));
    }

    #[test]
    fn checkout_customer_id_prefers_client_reference() {
        assert_eq!(CustomerId::for_checkout(Some("user_42"), false, "cus_1").unwrap().as_str(), "user_42");
        assert_eq!(CustomerId::for_checkout(None, false, "cus_1").unwrap().as_str(), "cus_1");
        assert_eq!(CustomerId::for_checkout(Some(""), false, "cus_1").unwrap().as_str(), "cus_1");
        assert!(CustomerId::for_checkout(Some("bad id"), false, "cus_1").is_err());
        // A Payment Link's reference came from its URL: anyone's to write, so never a name.
        assert_eq!(CustomerId::for_checkout(Some("victim"), true, "cus_1").unwrap().as_str(), "cus_1");
        assert_eq!(CustomerId::for_checkout(Some("bad id"), true, "cus_1").unwrap().as_str(), "cus_1");
    }

    #[test]
    fn statuses_round_trip() {
        for s in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
