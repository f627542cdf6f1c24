//! Billing identity: which Stripe subscription a customer's keys answer to, and in what state,
//! derived from what Stripe said about each subscription, in whatever order it said it.
//!
//! Three pieces of state, each with its own order-independent rule:
//!
//! - a **subscription** is the set of observations Stripe's events (and Checkout snapshots)
//!   made of it; its state is a function of that set, never of arrival order
//!   ([`Subscription::state`]);
//! - the **link** between a Tollgate customer and a Stripe customer is written once, by the
//!   checkout event or the claim, and never moved ([`check_link`]);
//! - a **customer's billing** is a function of the linked Stripe customer's subscriptions and
//!   the plans' price ids ([`govern`]), recomputed after every change to either input.
//!
//! Both writers of billing state (the webhook and the Checkout claim) reach the store only
//! through these functions, so either may come first.

use super::customers::{Customer, CustomerId, SubscriptionStatus};
use super::plans::PlanId;
use super::time::UnixTime;
use serde::{Deserialize, Serialize};

/// What an observation came from. At the same second a later source wins: the subscription
/// object is Stripe's own statement of status, an invoice only implies one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Invoice,
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionDeleted,
}

/// The position of an observation in a subscription's history. Ordered by Stripe's event
/// `created`, then (for events of the same second) by source, by how far along the
/// subscription's lifecycle the reported status is, by the billing period reported, and last
/// by the event id, so that any two deliveries sort the same way on every machine.
///
/// A snapshot read from Stripe's API (the claim) has no event time and sorts before every
/// event: it fills in until events arrive and never overrides one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub created: Option<i64>,
    pub source: Source,
    pub progress: u8,
    pub period_end: i64,
    pub event_id: String,
}

/// How far along its lifecycle a status is; the same-second tie-break.
pub fn progress(status: SubscriptionStatus) -> u8 {
    use SubscriptionStatus::*;
    match status {
        Incomplete => 0,
        Trialing => 1,
        Active => 2,
        PastDue => 3,
        Unpaid | Paused => 4,
        Canceled | IncompleteExpired => 5,
    }
}

/// Statuses a subscription never leaves.
pub fn is_terminal(status: SubscriptionStatus) -> bool {
    matches!(status, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired)
}

/// What the subscription object itself said (subscription events and snapshots only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionFacts {
    /// Every item's price, in Stripe's order.
    pub price_ids: Vec<String>,
    pub current_period_end: Option<i64>,
    /// The subscription's own `created`: the newer of two subscriptions wins a tie.
    pub created: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub stamp: Stamp,
    pub status: SubscriptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<SubscriptionFacts>,
}

impl Observation {
    /// A `customer.subscription.*` event.
    pub fn subscription_event(
        event_id: &str,
        created: i64,
        source: Source,
        status: SubscriptionStatus,
        facts: SubscriptionFacts,
    ) -> Self {
        let stamp = Stamp {
            created: Some(created),
            source,
            progress: progress(status),
            period_end: facts.current_period_end.unwrap_or(0),
            event_id: event_id.to_owned(),
        };
        Self { stamp, status, facts: Some(facts) }
    }

    /// The subscription object as Stripe's API returned it when the claim read the session.
    pub fn snapshot(session_id: &str, status: SubscriptionStatus, facts: SubscriptionFacts) -> Self {
        let stamp = Stamp {
            created: None,
            source: Source::SubscriptionCreated,
            progress: progress(status),
            period_end: facts.current_period_end.unwrap_or(0),
            event_id: format!("snapshot:{session_id}"),
        };
        Self { stamp, status, facts: Some(facts) }
    }

    /// `invoice.paid` or `invoice.payment_failed` of one of a subscription's invoices, as Stripe
    /// moves the subscription: past due when its latest invoice fails, active when it is paid,
    /// whatever the invoice's `billing_reason` (a renewal, a proration, a threshold, a manual
    /// one). One exception: a failed first invoice (`subscription_create`) leaves the
    /// subscription `incomplete`, which grants nothing, so it says nothing (`None`). Which
    /// invoice is the latest is the event's time, as for every observation.
    pub fn invoice(event_id: &str, created: i64, paid: bool, billing_reason: Option<&str>) -> Option<Self> {
        let status = match (paid, billing_reason) {
            (true, _) => SubscriptionStatus::Active,
            (false, Some("subscription_create")) => return None,
            (false, _) => SubscriptionStatus::PastDue,
        };
        let stamp = Stamp {
            created: Some(created),
            source: Source::Invoice,
            progress: progress(status),
            period_end: 0,
            event_id: event_id.to_owned(),
        };
        Some(Self { stamp, status, facts: None })
    }
}

/// What a customer item written before subscriptions were tracked one by one (Tollgate 0.1
/// kept the state on the customer) says of its subscription, as a snapshot, so an upgrade
/// loses nothing: it sorts before every event and is superseded by the first one that
/// carries the subscription object. `None` when the customer says nothing of a subscription.
pub fn carried_over(customer: &Customer, plan_price: Option<&str>) -> Option<Subscription> {
    let (sub_id, status, stripe) = (
        customer.stripe_subscription_id.as_deref()?,
        customer.subscription_status?,
        customer.stripe_customer_id.as_deref()?,
    );
    let facts = SubscriptionFacts {
        price_ids: plan_price.map(str::to_owned).into_iter().collect(),
        current_period_end: customer.current_period_end.map(UnixTime::secs),
        created: None,
    };
    let mut sub = Subscription::new(sub_id, stripe);
    let mut obs = Observation::snapshot("carried-over", status, facts);
    obs.stamp.event_id = format!("carried-over:{sub_id}");
    sub.observe(obs);
    Some(sub)
}

/// Observations kept per subscription beyond the ones that decide its state (the newest
/// facts and the first terminal status). Enough for months of renewals and a full dunning
/// run; the oldest go first.
pub const MAX_OBSERVATIONS: usize = 24;

/// One Stripe subscription, as Tollgate has heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub stripe_customer: String,
    /// Sorted by stamp, one per event id.
    pub observations: Vec<Observation>,
}

/// What a subscription's observations add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub status: SubscriptionStatus,
    pub price_ids: Vec<String>,
    pub current_period_end: Option<UnixTime>,
    pub created: Option<i64>,
    /// For `past_due`: when this run of past-due observations began.
    pub past_due_since: Option<UnixTime>,
}

impl Subscription {
    pub fn new(id: &str, stripe_customer: &str) -> Self {
        Self { id: id.to_owned(), stripe_customer: stripe_customer.to_owned(), observations: vec![] }
    }

    /// Adds an observation. False when it changes nothing: the same event again, or one so old
    /// that it is pruned at once.
    pub fn observe(&mut self, obs: Observation) -> bool {
        if self.observations.iter().any(|o| o.stamp.event_id == obs.stamp.event_id) {
            return false;
        }
        let before = self.observations.clone();
        let at = self.observations.partition_point(|o| o.stamp < obs.stamp);
        self.observations.insert(at, obs);
        self.prune();
        self.observations != before
    }

    /// Keeps the newest [`MAX_OBSERVATIONS`], plus the newest facts and the first terminal
    /// status wherever they are. A function of the set alone, so pruning commutes with
    /// arrival order.
    fn prune(&mut self) {
        let n = self.observations.len();
        if n <= MAX_OBSERVATIONS {
            return;
        }
        let newest_facts = self.observations.iter().rposition(|o| o.facts.is_some());
        let first_terminal = self.observations.iter().position(|o| is_terminal(o.status));
        let mut i = 0;
        self.observations.retain(|_| {
            let keep = i >= n - MAX_OBSERVATIONS || Some(i) == newest_facts || Some(i) == first_terminal;
            i += 1;
            keep
        });
    }

    /// The subscription's state, or `None` while no subscription object has been seen (an
    /// invoice alone does not say what was bought).
    pub fn state(&self) -> Option<SubscriptionState> {
        let facts = self.observations.iter().rev().find_map(|o| o.facts.as_ref())?;
        // A subscription that ended stays ended, whatever is delivered after.
        let status = match self.observations.iter().find(|o| is_terminal(o.status)) {
            Some(end) => end.status,
            None => self.observations.last()?.status,
        };
        let past_due_since = if status == SubscriptionStatus::PastDue {
            let run_start = self.observations.iter().rposition(|o| o.status != SubscriptionStatus::PastDue);
            let first = run_start.map_or(0, |i| i + 1);
            self.observations[first..].iter().find_map(|o| o.stamp.created).map(UnixTime)
        } else {
            None
        };
        Some(SubscriptionState {
            status,
            price_ids: facts.price_ids.clone(),
            current_period_end: facts.current_period_end.map(UnixTime),
            created: facts.created,
            past_due_since,
        })
    }
}

/// How much access a status grants, for choosing between subscriptions.
fn access_rank(status: SubscriptionStatus) -> u8 {
    use SubscriptionStatus::*;
    match status {
        Active | Trialing => 3,
        PastDue => 2,
        Incomplete | Unpaid | Paused => 1,
        Canceled | IncompleteExpired => 0,
    }
}

/// A linked customer's billing, as the governing subscription decides it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Billing {
    pub subscription_id: Option<String>,
    pub status: Option<SubscriptionStatus>,
    pub plan_id: Option<PlanId>,
    pub current_period_end: Option<UnixTime>,
    pub past_due_since: Option<UnixTime>,
    /// The governing subscription's price when no plan lists it.
    pub unknown_price_id: Option<String>,
}

/// Which of a Stripe customer's subscriptions governs the linked customer's plan and access:
///
/// 1. only subscriptions whose subscription object has been seen take part;
/// 2. one whose price a plan lists beats one whose price no plan lists (another product);
/// 3. then the one granting the most access: active or trialing, then past due, then
///    incomplete, unpaid or paused, then ended;
/// 4. then the newest (the subscription's own `created`), then the greatest id.
///
/// With none taking part, the customer is `incomplete`: a Stripe-billed customer is never
/// granted access before Tollgate knows what they bought.
pub fn govern(subscriptions: &[Subscription], plan_for_price: impl Fn(&str) -> Option<PlanId>) -> Billing {
    let candidates = subscriptions.iter().filter_map(|s| {
        let state = s.state()?;
        let plan = state.price_ids.iter().find_map(|p| plan_for_price(p));
        Some((s, state, plan))
    });
    let best = candidates.max_by(|(a, sa, pa), (b, sb, pb)| {
        let key = |s: &Subscription, st: &SubscriptionState, p: &Option<PlanId>| {
            (p.is_some(), access_rank(st.status), st.created, s.id.clone())
        };
        key(a, sa, pa).cmp(&key(b, sb, pb))
    });
    match best {
        None => Billing { status: Some(SubscriptionStatus::Incomplete), ..Billing::default() },
        Some((sub, state, plan)) => Billing {
            subscription_id: Some(sub.id.clone()),
            status: Some(state.status),
            unknown_price_id: if plan.is_none() { state.price_ids.first().cloned() } else { None },
            plan_id: plan,
            current_period_end: state.current_period_end,
            past_due_since: state.past_due_since,
        },
    }
}

impl Customer {
    /// This customer as linked to `stripe_customer` and billed as `billing` says. Pure: the
    /// store persists what it returns.
    pub fn billed(&self, stripe_customer: &str, billing: Billing, now: UnixTime) -> Customer {
        let next = Customer {
            stripe_customer_id: Some(stripe_customer.to_owned()),
            stripe_subscription_id: billing.subscription_id,
            subscription_status: billing.status,
            plan_id: billing.plan_id,
            current_period_end: billing.current_period_end,
            past_due_since: billing.past_due_since,
            unknown_price_id: billing.unknown_price_id,
            ..self.clone()
        };
        if next == *self { next } else { Customer { updated_at: now, ..next } }
    }
}

/// Why a customer and a Stripe customer cannot be linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkConflict {
    #[error("customer {customer} is linked to another Stripe customer")]
    CustomerLinkedElsewhere { customer: CustomerId },
    #[error("the Stripe customer is linked to another customer ({other})")]
    StripeCustomerLinkedElsewhere { other: CustomerId },
}

/// Whether `customer` may be linked to `stripe_customer`, given what each is linked to now.
/// `Ok(false)`: already linked to each other. A link is never moved: not by a checkout
/// naming another customer (`client_reference_id` may be chosen by whoever pays), not by a
/// second checkout of the same Stripe customer for another name.
pub fn check_link(
    customer: &CustomerId,
    customer_linked_to: Option<&str>,
    stripe_customer: &str,
    stripe_linked_to: Option<&CustomerId>,
) -> Result<bool, LinkConflict> {
    if let Some(s) = customer_linked_to
        && s != stripe_customer
    {
        return Err(LinkConflict::CustomerLinkedElsewhere { customer: customer.clone() });
    }
    if let Some(c) = stripe_linked_to
        && c != customer
    {
        return Err(LinkConflict::StripeCustomerLinkedElsewhere { other: c.clone() });
    }
    Ok(!(customer_linked_to.is_some() && stripe_linked_to.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionStatus::*;

    fn facts(price: &str, end: i64) -> SubscriptionFacts {
        SubscriptionFacts { price_ids: vec![price.into()], current_period_end: Some(end), created: Some(1) }
    }

    fn sub_event(id: &str, at: i64, source: Source, status: SubscriptionStatus, price: &str) -> Observation {
        Observation::subscription_event(id, at, source, status, facts(price, 1_000))
    }

    fn plans(price: &str) -> Option<PlanId> {
        match price {
            "price_pro" => Some(PlanId::parse("pro").unwrap()),
            "price_basic" => Some(PlanId::parse("basic").unwrap()),
            _ => None,
        }
    }

    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = vec![];
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_subscriptions_state_does_not_depend_on_arrival_order() {
        let events = vec![
            sub_event("evt_created", 10, Source::SubscriptionCreated, Active, "price_pro"),
            Observation::invoice("evt_paid", 10, true, Some("subscription_create")).unwrap(),
            sub_event("evt_updated", 100, Source::SubscriptionUpdated, Active, "price_basic"),
            Observation::invoice("evt_failed", 200, false, Some("subscription_cycle")).unwrap(),
            Observation::invoice("evt_failed_again", 250, false, Some("subscription_cycle")).unwrap(),
            Observation::snapshot("cs_1", Active, facts("price_pro", 900)),
        ];
        let mut reference = Subscription::new("sub_1", "cus_1");
        for e in &events {
            reference.observe(e.clone());
        }
        let want = reference.state().unwrap();
        assert_eq!(want.status, PastDue);
        assert_eq!(want.price_ids, vec!["price_basic".to_owned()]);
        assert_eq!(want.past_due_since, Some(UnixTime(200)), "grace counts from the first failure");
        for order in permutations(&events) {
            let mut s = Subscription::new("sub_1", "cus_1");
            for e in order.iter().chain(order.iter().take(2)) {
                s.observe(e.clone());
            }
            assert_eq!(s, reference, "the stored set is the same");
            assert_eq!(s.state().unwrap(), want);
        }
    }

    #[test]
    fn same_second_events_order_by_source_then_lifecycle_not_by_event_id() {
        // Created (incomplete) and updated (active) in one second, with ids that sort the
        // wrong way round: the lifecycle decides.
        let a = sub_event("evt_zzz", 10, Source::SubscriptionCreated, Incomplete, "price_pro");
        let b = sub_event("evt_aaa", 10, Source::SubscriptionUpdated, Active, "price_pro");
        for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let mut s = Subscription::new("sub_1", "cus_1");
            order.into_iter().for_each(|o| {
                s.observe(o);
            });
            assert_eq!(s.state().unwrap().status, Active);
        }
        // A trial's $0 first invoice is paid in the same second the trial starts: still trialing.
        let trial = sub_event("evt_t", 10, Source::SubscriptionCreated, Trialing, "price_pro");
        let paid = Observation::invoice("evt_p", 10, true, Some("subscription_create")).unwrap();
        let mut s = Subscription::new("sub_1", "cus_1");
        s.observe(paid);
        s.observe(trial);
        assert_eq!(s.state().unwrap().status, Trialing);
        // Two updates in one second with the same status: the later period wins.
        let p1 = Observation::subscription_event(
            "evt_b",
            10,
            Source::SubscriptionUpdated,
            Active,
            facts("price_basic", 100),
        );
        let p2 =
            Observation::subscription_event("evt_a", 10, Source::SubscriptionUpdated, Active, facts("price_pro", 200));
        let mut s = Subscription::new("sub_1", "cus_1");
        s.observe(p2);
        s.observe(p1);
        assert_eq!(s.state().unwrap().price_ids, vec!["price_pro".to_owned()]);
    }

    #[test]
    fn an_ended_subscription_stays_ended_and_invoices_alone_say_nothing() {
        let mut s = Subscription::new("sub_1", "cus_1");
        assert!(s.observe(Observation::invoice("evt_paid", 500, true, None).unwrap()));
        assert_eq!(s.state(), None, "an invoice alone does not say what was bought");
        s.observe(sub_event("evt_del", 100, Source::SubscriptionDeleted, Canceled, "price_pro"));
        s.observe(sub_event("evt_up", 300, Source::SubscriptionUpdated, Active, "price_pro"));
        assert_eq!(s.state().unwrap().status, Canceled, "a later paid invoice does not revive it");
        assert!(!s.observe(Observation::invoice("evt_paid", 500, true, None).unwrap()), "a redelivery");
    }

    #[test]
    fn a_failed_first_invoice_grants_no_grace() {
        assert_eq!(Observation::invoice("evt_1", 10, false, Some("subscription_create")), None);
        let mut s = Subscription::new("sub_1", "cus_1");
        s.observe(sub_event("evt_c", 10, Source::SubscriptionCreated, Incomplete, "price_pro"));
        assert_eq!(s.state().unwrap().status, Incomplete);
        assert_eq!(Observation::invoice("evt_2", 10, false, Some("subscription_cycle")).unwrap().status, PastDue);
        assert_eq!(Observation::invoice("evt_4", 10, true, Some("subscription_cycle")).unwrap().status, Active);
    }

    /// One rule for both directions: every reason a failed invoice sets past due for, a paid
    /// one sets active for, so a customer paid up by a proration, threshold or manual invoice
    /// is not left past due until the next renewal.
    #[test]
    fn an_invoice_moves_its_subscription_the_same_way_paid_or_failed() {
        for reason in [
            None,
            Some("subscription_cycle"),
            Some("subscription"),
            Some("subscription_update"),
            Some("subscription_threshold"),
            Some("manual"),
            Some("upcoming"),
        ] {
            assert_eq!(Observation::invoice("f", 10, false, reason).map(|o| o.status), Some(PastDue), "{reason:?}");
            assert_eq!(Observation::invoice("p", 10, true, reason).map(|o| o.status), Some(Active), "{reason:?}");
        }
        assert_eq!(Observation::invoice("p", 10, true, Some("subscription_create")).map(|o| o.status), Some(Active));
        let mut s = Subscription::new("sub_1", "cus_1");
        s.observe(sub_event("evt_c", 10, Source::SubscriptionCreated, Active, "price_pro"));
        s.observe(Observation::invoice("evt_renewal_failed", 100, false, Some("subscription_cycle")).unwrap());
        assert_eq!(s.state().unwrap().status, PastDue);
        s.observe(Observation::invoice("evt_manual_paid", 200, true, Some("manual")).unwrap());
        assert_eq!(s.state().unwrap().status, Active, "paid up by its latest invoice");
    }

    #[test]
    fn pruning_keeps_what_decides_the_state_whatever_the_order() {
        let mut events = vec![sub_event("evt_first", 1, Source::SubscriptionCreated, Active, "price_pro")];
        for i in 0..40 {
            events.push(Observation::invoice(&format!("evt_{i:02}"), 10 + i, true, None).unwrap());
        }
        let forward = events.iter().fold(Subscription::new("s", "c"), |mut s, e| {
            s.observe(e.clone());
            s
        });
        let backward = events.iter().rev().fold(Subscription::new("s", "c"), |mut s, e| {
            s.observe(e.clone());
            s
        });
        assert_eq!(forward, backward);
        assert_eq!(forward.observations.len(), MAX_OBSERVATIONS + 1, "the newest facts are kept");
        assert_eq!(forward.state().unwrap().price_ids, vec!["price_pro".to_owned()]);
    }

    fn sub(id: &str, created: i64, status: SubscriptionStatus, price: &str) -> Subscription {
        let mut s = Subscription::new(id, "cus_1");
        let f =
            SubscriptionFacts { price_ids: vec![price.into()], current_period_end: Some(9), created: Some(created) };
        s.observe(Observation::subscription_event(&format!("evt_{id}"), 50, Source::SubscriptionUpdated, status, f));
        s
    }

    #[test]
    fn the_governing_subscription() {
        // Another product's active subscription does not govern the API plan.
        let b = govern(&[sub("sub_a", 1, PastDue, "price_pro"), sub("sub_b", 2, Active, "price_other")], plans);
        assert_eq!((b.subscription_id.as_deref(), b.status), (Some("sub_a"), Some(PastDue)));
        // Of two plan subscriptions, the one granting access, then the newest.
        let b = govern(&[sub("sub_a", 5, Canceled, "price_pro"), sub("sub_b", 2, Active, "price_basic")], plans);
        assert_eq!((b.plan_id.as_ref().map(PlanId::as_str), b.status), (Some("basic"), Some(Active)));
        let b = govern(&[sub("sub_a", 1, Active, "price_pro"), sub("sub_b", 2, Active, "price_basic")], plans);
        assert_eq!(b.subscription_id.as_deref(), Some("sub_b"));
        // An unknown price still governs alone, and is named for the operator.
        let b = govern(&[sub("sub_a", 1, Active, "price_new")], plans);
        assert_eq!((b.plan_id, b.unknown_price_id.as_deref()), (None, Some("price_new")));
        // Nothing seen yet: pending, no access.
        let mut invoice_only = Subscription::new("sub_c", "cus_1");
        invoice_only.observe(Observation::invoice("evt_i", 5, true, None).unwrap());
        assert_eq!(govern(&[invoice_only], plans).status, Some(Incomplete));
        assert_eq!(govern(&[], plans).status, Some(Incomplete));
    }

    #[test]
    fn state_kept_on_the_customer_before_upgrading_carries_over() {
        let mut c = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(5));
        assert_eq!(carried_over(&c, Some("price_pro")), None);
        c.stripe_customer_id = Some("cus_1".into());
        c.stripe_subscription_id = Some("sub_1".into());
        c.subscription_status = Some(PastDue);
        let sub = carried_over(&c, Some("price_pro")).unwrap();
        let b = govern(std::slice::from_ref(&sub), plans);
        assert_eq!((b.status, b.plan_id.as_ref().map(PlanId::as_str)), (Some(PastDue), Some("pro")));
        // The first real event wins over it.
        let mut sub = sub;
        sub.observe(sub_event("evt_1", 1, Source::SubscriptionUpdated, Active, "price_basic"));
        assert_eq!(sub.state().unwrap().status, Active);
    }

    #[test]
    fn links_are_never_moved() {
        let acme = CustomerId::parse("acme").unwrap();
        let other = CustomerId::parse("other").unwrap();
        assert_eq!(check_link(&acme, None, "cus_1", None), Ok(true));
        assert_eq!(check_link(&acme, Some("cus_1"), "cus_1", Some(&acme)), Ok(false));
        assert_eq!(check_link(&acme, Some("cus_1"), "cus_1", None), Ok(true), "repairs a half-written link");
        assert!(matches!(
            check_link(&acme, Some("cus_victim"), "cus_1", None),
            Err(LinkConflict::CustomerLinkedElsewhere { .. })
        ));
        assert!(matches!(
            check_link(&acme, None, "cus_1", Some(&other)),
            Err(LinkConflict::StripeCustomerLinkedElsewhere { .. })
        ));
    }

    #[test]
    fn billing_a_customer_touches_only_billing_fields() {
        let c = Customer::new(CustomerId::parse("acme").unwrap(), UnixTime(5));
        let b = govern(&[sub("sub_a", 1, Active, "price_pro")], plans);
        let billed = c.billed("cus_1", b.clone(), UnixTime(9));
        assert_eq!((billed.created_at, billed.updated_at), (UnixTime(5), UnixTime(9)));
        assert_eq!(billed.plan_id.as_ref().map(PlanId::as_str), Some("pro"));
        assert_eq!(billed.billed("cus_1", b, UnixTime(20)).updated_at, UnixTime(9), "unchanged: not touched");
    }
}
