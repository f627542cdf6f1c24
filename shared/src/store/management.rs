//! The management API's storage: keys, plans and customers.

use super::StoreResult;
use super::{KeyPatch, NewKey};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::key_records::{KeyRecord, KeyStatus};
use crate::domain::plans::{Plan, PlanId};
use crate::domain::time::UnixTime;
use std::future::Future;
use std::time::Instant;

/// One page of a listing; `next_cursor` is opaque and absent on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub customer_id: Option<CustomerId>,
    pub plan_id: Option<PlanId>,
    pub status: Option<KeyStatus>,
}

pub trait KeyStore: Send + Sync {
    /// Creates the key and its hash lookup, and the customer if it is new, atomically.
    fn create_key(&self, new: NewKey) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    fn get_key(&self, id: &KeyId) -> impl Future<Output = StoreResult<Option<KeyRecord>>> + Send;
    fn list_keys(
        &self,
        filter: &KeyFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> impl Future<Output = StoreResult<Page<KeyRecord>>> + Send;
    /// Fails with `Conflict` for a revoked key: revocation is permanent.
    fn update_key(
        &self,
        id: &KeyId,
        patch: KeyPatch,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    /// Replaces the secret; the previous one keeps working until `grace_until`.
    fn rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: String,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    fn revoke_key(&self, id: &KeyId, now: UnixTime) -> impl Future<Output = StoreResult<KeyRecord>> + Send;
    /// Fills in `last_used_at` of listed keys (the listing indexes do not carry it): one
    /// small read per key, side by side.
    fn with_last_used(&self, keys: Vec<KeyRecord>) -> impl Future<Output = StoreResult<Vec<KeyRecord>>> + Send;
}

pub trait PlanStore: Send + Sync {
    fn create_plan(&self, plan: &Plan) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces an existing plan (its version moves only when the definition changed), then
    /// re-applies its limits to every key it governs until `deadline`. Resumable: the same
    /// update again continues after the last key an earlier attempt finished.
    fn update_plan(
        &self,
        plan: &Plan,
        now: UnixTime,
        deadline: Instant,
    ) -> impl Future<Output = StoreResult<FanOut>> + Send;
    fn get_plan(&self, id: &PlanId) -> impl Future<Output = StoreResult<Option<Plan>>> + Send;
    fn list_plans(&self) -> impl Future<Output = StoreResult<Vec<Plan>>> + Send;
    /// `Conflict` while any non-revoked key is governed by the plan.
    fn delete_plan(&self, id: &PlanId) -> impl Future<Output = StoreResult<()>> + Send;
}

pub trait CustomerStore: Send + Sync {
    fn get_customer(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Option<Customer>>> + Send;
    fn customer_key_ids(&self, id: &CustomerId) -> impl Future<Output = StoreResult<Vec<KeyId>>> + Send;
    /// The customer a Stripe customer id is linked to.
    fn customer_for_stripe(
        &self,
        stripe_customer_id: &str,
    ) -> impl Future<Output = StoreResult<Option<CustomerId>>> + Send;
    /// Brings every key of the customer in line with it (plan limits, subscription access),
    /// until `deadline`. Resumable: a later call for the same customer version continues after
    /// the last key an earlier call finished.
    fn refresh_customer_keys(
        &self,
        id: &CustomerId,
        now: UnixTime,
        deadline: Instant,
    ) -> impl Future<Output = StoreResult<FanOut>> + Send;
}

/// How far a fan-out (a plan's or a customer's change, copied to their keys) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanOut {
    /// Keys this call looked at (after the point an earlier call reached).
    pub visited: usize,
    /// Of those, keys whose item was rewritten.
    pub rewritten: usize,
    /// False when the deadline came first; call again to continue.
    pub complete: bool,
}
