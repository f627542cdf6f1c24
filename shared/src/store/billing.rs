//! Billing identity's storage: Stripe customers, subscriptions and a customer's billing.

use super::{StoreResult, Written};
use crate::domain::billing::Subscription;
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::time::UnixTime;
use std::future::Future;

/// A Stripe customer as Tollgate knows it: which customer it is linked to, and what was heard
/// of each of its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StripeAccount {
    pub linked: Option<CustomerId>,
    /// Moves on every subscription write, so a customer's billing derived from these
    /// subscriptions is written only if none changed meanwhile.
    pub version: u64,
    /// Each with its stored version.
    pub subscriptions: Vec<(Subscription, u64)>,
}

/// Billing identity's storage: the link between a customer and a Stripe customer, the
/// subscriptions, and the customer's billing fields. Every write is conditional on what was
/// read; the rules live in `domain::billing` and `app::billing`.
pub trait BillingStore: Send + Sync {
    fn stripe_account(&self, stripe_customer: &str) -> impl Future<Output = StoreResult<StripeAccount>> + Send;
    /// Writes `sub` if its stored version is still `ver` (`None`: not stored yet).
    fn put_subscription(
        &self,
        sub: &Subscription,
        ver: Option<u64>,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// Links `customer` and `stripe_customer` to each other, creating the customer (billed
    /// through Stripe, `incomplete` until a subscription is known) if it is new. `Stale` when
    /// either is linked to something else by the time of the write.
    fn link_customer(
        &self,
        customer: &CustomerId,
        stripe_customer: &str,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
    /// The customer and its stored version.
    fn customer_versioned(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Option<(Customer, u64)>>> + Send;
    /// Writes the customer's billing fields (and the access its keys copy) if the customer is
    /// still at `ver` and its Stripe account (its version and every subscription's) is still as
    /// `derived_from` read it.
    fn put_billing(
        &self,
        customer: &Customer,
        ver: u64,
        derived_from: &StripeAccount,
        past_due_grace_s: u64,
    ) -> impl Future<Output = StoreResult<Written>> + Send;
}
