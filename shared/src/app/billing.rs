//! Billing identity as one service: the Stripe webhook and the Checkout claim both hand it
//! what they learned, and it links, records and derives through `domain::billing`, so the
//! result does not depend on which of them (or which event) comes first.

use crate::domain::billing::{LinkConflict, Observation, Subscription, carried_over, check_link, govern};
use crate::domain::customers::CustomerId;
use crate::domain::plans::{Plan, PlanId};
use crate::domain::time::UnixTime;
use crate::store::{BillingStore, CustomerStore, FanOut, PlanStore, StoreError, Written};
use std::time::{Duration, Instant};

/// Conditional writes retried this often when a concurrent writer got there first.
const ATTEMPTS: usize = 8;

/// What one Stripe event, or one claim, says about billing identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInput {
    pub stripe_customer: String,
    /// Link this customer to the Stripe customer (a checkout: the event or the claim).
    pub link: Option<CustomerId>,
    /// What was observed of one subscription (its id, the observation).
    pub observed: Option<(String, Observation)>,
}

/// What applying an input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded, and the linked customer (if any yet) and its keys are in line with it.
    /// `changed`: the customer's billing moved.
    Synced { customer: Option<CustomerId>, changed: bool },
    /// Nothing was written: the link asked for would move an existing one.
    Conflict(LinkConflict),
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The customer's keys are not all updated yet; the same input again continues.
    #[error("{} of the customer's keys updated so far; the rest continue when this is retried", .0.visited)]
    Incomplete(FanOut),
    #[error("billing state changed concurrently too often; retry")]
    Contention,
}

#[derive(Clone)]
pub struct Billing<S> {
    store: S,
    past_due_grace_s: u64,
    fanout_budget: Duration,
}

impl<S: BillingStore + CustomerStore + PlanStore> Billing<S> {
    /// `fanout_budget`: how long one call may spend bringing a customer's keys in line before
    /// it reports [`BillingError::Incomplete`] (and a retry continues).
    pub fn new(store: S, past_due_grace_s: u64, fanout_budget: Duration) -> Self {
        Self { store, past_due_grace_s, fanout_budget }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn apply(&self, input: &StripeInput, now: UnixTime) -> Result<Applied, BillingError> {
        let s = input.stripe_customer.as_str();
        let mut linked = false;
        if let Some(customer) = &input.link {
            match self.link(customer, s, now).await? {
                Ok(wrote) => linked = wrote,
                Err(conflict) => {
                    tracing::warn!(customer_id = %customer, stripe_customer = s, error = %conflict, "link refused");
                    return Ok(Applied::Conflict(conflict));
                }
            }
        }
        if let Some((subscription, observation)) = &input.observed {
            self.observe(s, subscription, observation).await?;
        }
        match self.sync(s, now).await? {
            Applied::Synced { customer, changed } => Ok(Applied::Synced { customer, changed: changed || linked }),
            conflict => Ok(conflict),
        }
    }

    /// Links both ways unless either side is linked elsewhere (`domain::billing::check_link`).
    /// `Ok(true)` when this call wrote the link.
    async fn link(
        &self,
        customer: &CustomerId,
        stripe_customer: &str,
        now: UnixTime,
    ) -> Result<Result<bool, LinkConflict>, BillingError> {
        for _ in 0..ATTEMPTS {
            let linked = self.store.customer_for_stripe(stripe_customer).await?;
            let stored = self.store.customer_versioned(customer).await?;
            let customer_link = stored.as_ref().and_then(|(c, _)| c.stripe_customer_id.as_deref());
            match check_link(customer, customer_link, stripe_customer, linked.as_ref()) {
                Err(conflict) => return Ok(Err(conflict)),
                Ok(false) => return Ok(Ok(false)),
                Ok(true) => match self.store.link_customer(customer, stripe_customer, now).await? {
                    Written::Applied => return Ok(Ok(true)),
                    // Someone linked one side meanwhile: check again.
                    Written::Stale => continue,
                },
            }
        }
        Err(BillingError::Contention)
    }

    async fn observe(&self, stripe_customer: &str, id: &str, observation: &Observation) -> Result<(), BillingError> {
        for _ in 0..ATTEMPTS {
            let account = self.store.stripe_account(stripe_customer).await?;
            let (mut sub, ver) = match account.subscriptions.into_iter().find(|(s, _)| s.id == id) {
                Some((s, v)) => (s, Some(v)),
                None => (Subscription::new(id, stripe_customer), None),
            };
            if !sub.observe(observation.clone()) {
                return Ok(());
            }
            if self.store.put_subscription(&sub, ver).await? == Written::Applied {
                return Ok(());
            }
        }
        Err(BillingError::Contention)
    }

    /// Derives the linked customer's billing from the Stripe customer's subscriptions, writes
    /// it if it moved, and brings the customer's keys in line. A Stripe customer linked to no
    /// customer governs the customer named by its own id, if the operator made one.
    pub async fn sync(&self, stripe_customer: &str, now: UnixTime) -> Result<Applied, BillingError> {
        let plans = self.store.list_plans().await?;
        let mut changed = false;
        let mut target = None;
        for _ in 0..ATTEMPTS {
            let account = self.store.stripe_account(stripe_customer).await?;
            let customer = match account.linked.clone() {
                Some(c) => c,
                None => match self.implicit_customer(stripe_customer).await? {
                    Some(c) => {
                        if let Err(conflict) = self.link(&c, stripe_customer, now).await? {
                            return Ok(Applied::Conflict(conflict));
                        }
                        continue;
                    }
                    None => return Ok(Applied::Synced { customer: None, changed: false }),
                },
            };
            let Some((stored, ver)) = self.store.customer_versioned(&customer).await? else {
                // Linked, but the customer item is gone: link again, which recreates it.
                self.store.link_customer(&customer, stripe_customer, now).await?;
                continue;
            };
            let mut subscriptions: Vec<Subscription> = account.subscriptions.iter().map(|(s, _)| s.clone()).collect();
            // A customer whose subscription state predates per-subscription tracking.
            let known = |id: &str| subscriptions.iter().any(|s| s.id == id && s.state().is_some());
            if stored.stripe_subscription_id.as_deref().is_some_and(|id| !known(id)) {
                let price = stored
                    .plan_id
                    .as_ref()
                    .and_then(|p| plans.iter().find(|plan| plan.id == *p))
                    .and_then(|plan| plan.stripe_price_ids.first().map(String::as_str));
                subscriptions.extend(carried_over(&stored, price));
            }
            let billing = govern(&subscriptions, |price| plan_for_price(&plans, price));
            if let Some(price) = &billing.unknown_price_id {
                tracing::error!(
                    price_id = %price, customer_id = %customer,
                    "no plan lists this Stripe price; add it to a plan's stripe_price_ids"
                );
            }
            let next = stored.billed(stripe_customer, billing, now);
            if next != stored {
                match self.store.put_billing(&next, ver, &account, self.past_due_grace_s).await? {
                    Written::Applied => changed = true,
                    Written::Stale => continue,
                }
            }
            target = Some(customer);
            break;
        }
        let Some(customer) = target else { return Err(BillingError::Contention) };
        let fanout = self.store.refresh_customer_keys(&customer, now, Instant::now() + self.fanout_budget).await?;
        if !fanout.complete {
            return Err(BillingError::Incomplete(fanout));
        }
        Ok(Applied::Synced { customer: Some(customer), changed })
    }

    /// The customer an unlinked Stripe customer governs: the one named by the Stripe id,
    /// when the operator made it and linked it to nothing else.
    async fn implicit_customer(&self, stripe_customer: &str) -> Result<Option<CustomerId>, BillingError> {
        let Ok(id) = CustomerId::parse(stripe_customer) else { return Ok(None) };
        Ok(match self.store.customer_versioned(&id).await? {
            Some((c, _)) if c.stripe_customer_id.as_deref().is_none_or(|s| s == stripe_customer) => Some(id),
            _ => None,
        })
    }
}

/// The plan whose `stripe_price_ids` list `price`.
pub fn plan_for_price(plans: &[Plan], price: &str) -> Option<PlanId> {
    plans.iter().find(|p| p.stripe_price_ids.iter().any(|id| id == price)).map(|p| p.id.clone())
}
