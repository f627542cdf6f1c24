//! An in-memory store for unit tests above the store (feature `memory`): the management API's
//! and the Checkout claim's traits over maps behind one mutex, each operation atomic. The
//! rules are the domain's (`KeyRecord::resolve`, `Customer::access`, `KeyRecord::counted_plan`),
//! the same the DynamoDB adapter calls; what it cannot show (conditional writes racing across
//! processes, pagination over a GSI, usage counted by the authorizer) is the contract suite's.
//!
//! It keeps no usage: the authorizer's hot path and the rollup are not here, so usage
//! histories are empty and counters zero.

use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::billing::Subscription;
use crate::domain::customers::{Customer, CustomerAccess, CustomerId, SubscriptionStatus};
use crate::domain::decision::{Counters, KeyState};
use crate::domain::key_records::{Actor, KeyRecord, KeyStatus};
use crate::domain::limits::window_end;
use crate::domain::plans::{Plan, PlanId, key_limit};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{MeterDay, MeterLedger, UsageDay};
use crate::store::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Cheap to clone: clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

#[derive(Default)]
struct Data {
    plans: BTreeMap<PlanId, Plan>,
    keys: BTreeMap<KeyId, KeyRecord>,
    hashes: HashMap<KeyHash, KeyId>,
    customers: BTreeMap<CustomerId, StoredCustomer>,
    stripe: HashMap<String, Account>,
    reservations: HashMap<(String, String), Reserved>,
    attempts: HashMap<(String, i64), u64>,
}

#[derive(Clone)]
struct StoredCustomer {
    customer: Customer,
    ver: u64,
    /// What its keys copy (`put_billing` derives it with the operator's grace).
    access: CustomerAccess,
}

#[derive(Default)]
struct Account {
    linked: Option<CustomerId>,
    version: u64,
    subscriptions: BTreeMap<String, (Subscription, u64)>,
}

struct Reserved {
    owner: String,
    fingerprint: String,
    lease_until: UnixTime,
    expires_at: UnixTime,
    result: Option<String>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Data> {
        // A test that panicked while holding the lock has failed already; its data is whole.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys the store holds (for tests' assertions).
    pub fn key_count(&self) -> usize {
        self.lock().keys.len()
    }
}

impl Data {
    /// `key` with its limits and access resolved from its governing plan and its customer,
    /// as they are now; a plan the key names itself must exist.
    fn resolve(&self, key: &mut KeyRecord) -> StoreResult<()> {
        let customer = self.customers.get(&key.customer_id);
        let governing = key.governing_plan(customer.and_then(|c| c.customer.plan_id.as_ref())).cloned();
        let plan = governing.as_ref().and_then(|p| self.plans.get(p));
        if key.own_plan_id.is_some() && plan.is_none() {
            return Err(StoreError::UnknownReference("plan"));
        }
        key.resolve(plan, customer.map(|c| c.access).unwrap_or_default());
        Ok(())
    }

    /// Re-resolves every key `affected` selects; the fan-out's outcome.
    fn refresh(&mut self, now: UnixTime, affected: impl Fn(&KeyRecord, &Data) -> bool) -> StoreResult<FanOut> {
        let ids: Vec<KeyId> = self.keys.values().filter(|k| affected(k, self)).map(|k| k.key_id.clone()).collect();
        let mut out = FanOut { complete: true, ..FanOut::default() };
        for id in ids {
            let Some(before) = self.keys.get(&id).cloned() else { continue };
            let mut next = before.clone();
            // A key whose own plan went missing keeps what it had; the adapter does the same.
            if self.resolve(&mut next).is_err() {
                continue;
            }
            out.visited += 1;
            if next != before {
                next.updated_at = now;
                self.keys.insert(id, next);
                out.rewritten += 1;
            }
        }
        Ok(out)
    }

    fn edit_key(
        &mut self,
        id: &KeyId,
        now: UnixTime,
        edit: impl FnOnce(&mut KeyRecord) -> StoreResult<bool>,
    ) -> StoreResult<KeyRecord> {
        let before = self.keys.get(id).cloned().ok_or(StoreError::NotFound("key"))?;
        let mut next = before.clone();
        if !edit(&mut next)? {
            return Ok(before);
        }
        self.resolve(&mut next)?;
        if next == before {
            return Ok(before);
        }
        next.updated_at = now;
        self.keys.insert(id.clone(), next.clone());
        Ok(next)
    }
}

impl KeyStore for MemoryStore {
    async fn with_last_used(&self, keys: Vec<KeyRecord>) -> StoreResult<Vec<KeyRecord>> {
        Ok(keys)
    }

    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        let mut data = self.lock();
        if data.keys.contains_key(&new.key_id) || data.hashes.contains_key(&new.hash) {
            return Err(StoreError::AlreadyExists("key"));
        }
        let mut record = new.record();
        data.resolve(&mut record)?;
        if new.by == Actor::Customer {
            // Only a customer Tollgate knows acts, within its plan's keys (`key_limit`).
            if !data.customers.contains_key(&record.customer_id) {
                return Err(StoreError::NotFound("customer"));
            }
            let plan = record.limits.governing_plan_id.as_ref().and_then(|p| data.plans.get(p));
            let max = key_limit(Some(plan.ok_or(StoreError::NoPlan)?));
            let live = data
                .keys
                .values()
                .filter(|k| k.customer_id == record.customer_id && k.status != KeyStatus::Revoked)
                .count() as u64;
            if live >= max {
                return Err(StoreError::KeyLimitReached(max));
            }
        }
        data.customers.entry(record.customer_id.clone()).or_insert_with(|| StoredCustomer {
            customer: Customer::new(record.customer_id.clone(), new.now),
            ver: 1,
            access: CustomerAccess::default(),
        });
        data.hashes.insert(record.hash, record.key_id.clone());
        data.keys.insert(record.key_id.clone(), record.clone());
        Ok(record)
    }

    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self.lock().keys.get(id).cloned())
    }

    async fn list_keys(&self, filter: &KeyFilter, limit: usize, cursor: Option<&str>) -> StoreResult<Page<KeyRecord>> {
        let after = cursor.map(|c| KeyId::parse(c).map_err(|_| StoreError::InvalidCursor)).transpose()?;
        let limit = limit.clamp(1, 100);
        let data = self.lock();
        let mut matching = data
            .keys
            .values()
            .filter(|k| after.as_ref().is_none_or(|a| k.key_id > *a))
            .filter(|k| filter.customer_id.as_ref().is_none_or(|c| *c == k.customer_id))
            .filter(|k| filter.plan_id.as_ref().is_none_or(|p| Some(p) == k.limits.governing_plan_id.as_ref()))
            .filter(|k| filter.status.is_none_or(|s| s == k.status));
        let items: Vec<KeyRecord> = matching.by_ref().take(limit).cloned().collect();
        let next_cursor = matching.next().and(items.last()).map(|k| k.key_id.as_str().to_owned());
        Ok(Page { items, next_cursor })
    }

    async fn update_key(&self, id: &KeyId, patch: KeyPatch, now: UnixTime) -> StoreResult<KeyRecord> {
        self.lock().edit_key(id, now, |record| patch.apply(record))
    }

    async fn rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: String,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> StoreResult<KeyRecord> {
        let mut data = self.lock();
        let mut record = data.keys.get(id).cloned().ok_or(StoreError::NotFound("key"))?;
        rotate_edit(&mut record, new_hash, &new_display, grace_until, now)?;
        if data.hashes.contains_key(&new_hash) {
            return Err(StoreError::AlreadyExists("key hash"));
        }
        data.hashes.insert(new_hash, id.clone());
        data.keys.insert(id.clone(), record.clone());
        Ok(record)
    }

    async fn revoke_key(&self, id: &KeyId, now: UnixTime) -> StoreResult<KeyRecord> {
        self.lock().edit_key(id, now, revoke_edit)
    }
}

impl PlanStore for MemoryStore {
    async fn create_plan(&self, plan: &Plan) -> StoreResult<()> {
        let mut data = self.lock();
        if data.plans.contains_key(&plan.id) {
            return Err(StoreError::AlreadyExists("plan"));
        }
        data.plans.insert(plan.id.clone(), plan.clone());
        Ok(())
    }

    async fn update_plan(&self, plan: &Plan, now: UnixTime, _deadline: Instant) -> StoreResult<FanOut> {
        let mut data = self.lock();
        let stored = data.plans.get_mut(&plan.id).ok_or(StoreError::NotFound("plan"))?;
        let same = Plan { created_at: stored.created_at, updated_at: stored.updated_at, ..plan.clone() } == *stored;
        if !same {
            *stored = Plan { created_at: stored.created_at, ..plan.clone() };
        }
        let id = plan.id.clone();
        data.refresh(now, |key, data| {
            let customer_plan = data.customers.get(&key.customer_id).and_then(|c| c.customer.plan_id.as_ref());
            key.governing_plan(customer_plan) == Some(&id)
        })
    }

    async fn get_plan(&self, id: &PlanId) -> StoreResult<Option<Plan>> {
        Ok(self.lock().plans.get(id).cloned())
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        Ok(self.lock().plans.values().cloned().collect())
    }

    async fn delete_plan(&self, id: &PlanId) -> StoreResult<()> {
        let mut data = self.lock();
        if !data.plans.contains_key(id) {
            return Err(StoreError::NotFound("plan"));
        }
        if data.keys.values().any(|k| k.counted_plan() == Some(id)) {
            return Err(StoreError::Conflict("the plan is in use by one or more keys".into()));
        }
        data.plans.remove(id);
        Ok(())
    }
}

impl CustomerStore for MemoryStore {
    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>> {
        Ok(self.lock().customers.get(id).map(|c| c.customer.clone()))
    }

    async fn customer_key_ids(&self, id: &CustomerId) -> StoreResult<Vec<KeyId>> {
        Ok(self.lock().keys.values().filter(|k| k.customer_id == *id).map(|k| k.key_id.clone()).collect())
    }

    async fn customer_for_stripe(&self, stripe_customer_id: &str) -> StoreResult<Option<CustomerId>> {
        Ok(self.lock().stripe.get(stripe_customer_id).and_then(|a| a.linked.clone()))
    }

    async fn refresh_customer_keys(&self, id: &CustomerId, now: UnixTime, _deadline: Instant) -> StoreResult<FanOut> {
        self.lock().refresh(now, |key, _| key.customer_id == *id)
    }
}

impl BillingStore for MemoryStore {
    async fn stripe_account(&self, stripe_customer: &str) -> StoreResult<StripeAccount> {
        let data = self.lock();
        Ok(match data.stripe.get(stripe_customer) {
            Some(a) => StripeAccount {
                linked: a.linked.clone(),
                version: a.version,
                subscriptions: a.subscriptions.values().cloned().collect(),
            },
            None => StripeAccount::default(),
        })
    }

    async fn put_subscription(&self, sub: &Subscription, ver: Option<u64>) -> StoreResult<Written> {
        let mut data = self.lock();
        let account = data.stripe.entry(sub.stripe_customer.clone()).or_default();
        if account.subscriptions.get(&sub.id).map(|(_, v)| *v) != ver {
            return Ok(Written::Stale);
        }
        account.subscriptions.insert(sub.id.clone(), (sub.clone(), ver.unwrap_or(0) + 1));
        account.version += 1;
        Ok(Written::Applied)
    }

    async fn link_customer(&self, customer: &CustomerId, stripe_customer: &str, now: UnixTime) -> StoreResult<Written> {
        let mut data = self.lock();
        let linked_elsewhere =
            data.stripe.get(stripe_customer).and_then(|a| a.linked.as_ref()).is_some_and(|c| c != customer);
        let customer_elsewhere = data
            .customers
            .get(customer)
            .and_then(|c| c.customer.stripe_customer_id.as_deref())
            .is_some_and(|s| s != stripe_customer);
        if linked_elsewhere || customer_elsewhere {
            return Ok(Written::Stale);
        }
        data.stripe.entry(stripe_customer.to_owned()).or_default().linked = Some(customer.clone());
        let incomplete = CustomerAccess { status: Some(SubscriptionStatus::Incomplete), grace_until: None };
        let stored = data.customers.entry(customer.clone()).or_insert_with(|| StoredCustomer {
            customer: Customer::new(customer.clone(), now),
            ver: 0,
            access: incomplete,
        });
        stored.customer.stripe_customer_id = Some(stripe_customer.to_owned());
        stored.customer.subscription_status.get_or_insert(SubscriptionStatus::Incomplete);
        if stored.access.status.is_none() {
            stored.access = incomplete;
        }
        stored.customer.updated_at = now;
        stored.ver += 1;
        Ok(Written::Applied)
    }

    async fn customer_versioned(&self, id: &CustomerId) -> StoreResult<Option<(Customer, u64)>> {
        Ok(self.lock().customers.get(id).map(|c| (c.customer.clone(), c.ver)))
    }

    async fn put_billing(
        &self,
        customer: &Customer,
        ver: u64,
        derived_from: &StripeAccount,
        past_due_grace_s: u64,
    ) -> StoreResult<Written> {
        let stripe_customer = customer
            .stripe_customer_id
            .as_deref()
            .ok_or_else(|| StoreError::Conflict("billing needs a linked Stripe customer".into()))?;
        let mut data = self.lock();
        let account_unchanged = data.stripe.get(stripe_customer).is_some_and(|a| {
            a.version == derived_from.version
                && derived_from
                    .subscriptions
                    .iter()
                    .all(|(s, v)| a.subscriptions.get(&s.id).map(|(_, sv)| sv) == Some(v))
        });
        let Some(stored) = data.customers.get_mut(&customer.customer_id).filter(|c| c.ver == ver) else {
            return Ok(Written::Stale);
        };
        if !account_unchanged {
            return Ok(Written::Stale);
        }
        stored.customer = Customer { created_at: stored.customer.created_at, ..customer.clone() };
        stored.access = customer.access(past_due_grace_s);
        stored.ver += 1;
        Ok(Written::Applied)
    }
}

impl AttemptStore for MemoryStore {
    async fn attempt(&self, bucket: &str, limit: u64, window_s: u64, now: UnixTime) -> StoreResult<Attempt> {
        let end = window_end(now, window_s);
        let mut data = self.lock();
        let count = data.attempts.entry((bucket.to_owned(), end.secs())).or_default();
        if *count >= limit {
            return Ok(Attempt::Exhausted { retry_after: now.until(end) });
        }
        *count += 1;
        Ok(Attempt::Allowed)
    }
}

impl IdempotencyStore for MemoryStore {
    async fn reserve(
        &self,
        scope: &str,
        id: &str,
        owner: &str,
        fingerprint: &str,
        lease_s: u64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<Reservation> {
        let mut data = self.lock();
        let key = (scope.to_owned(), id.to_owned());
        if let Some(r) = data.reservations.get(&key).filter(|r| r.expires_at > now) {
            match &r.result {
                Some(result) => {
                    return Ok(Reservation::Done { fingerprint: r.fingerprint.clone(), result: result.clone() });
                }
                None if r.owner == owner => return Ok(Reservation::Fresh),
                None if r.lease_until > now => {
                    return Ok(Reservation::InProgress { fingerprint: r.fingerprint.clone() });
                }
                None => {}
            }
        }
        let reserved = Reserved {
            owner: owner.to_owned(),
            fingerprint: fingerprint.to_owned(),
            lease_until: now.plus(lease_s as i64),
            expires_at,
            result: None,
        };
        data.reservations.insert(key, reserved);
        Ok(Reservation::Fresh)
    }

    async fn finish(&self, scope: &str, id: &str, owner: &str, result: &str, expires_at: UnixTime) -> StoreResult<()> {
        let mut data = self.lock();
        match data.reservations.get_mut(&(scope.to_owned(), id.to_owned())) {
            Some(r) if r.owner == owner && r.result.is_none() => {
                r.result = Some(result.to_owned());
                r.expires_at = expires_at;
                Ok(())
            }
            _ => Err(StoreError::Conflict("the idempotency reservation was lost to another attempt".into())),
        }
    }

    async fn release(&self, scope: &str, id: &str, owner: &str) -> StoreResult<()> {
        let mut data = self.lock();
        let key = (scope.to_owned(), id.to_owned());
        if data.reservations.get(&key).is_some_and(|r| r.owner == owner && r.result.is_none()) {
            data.reservations.remove(&key);
        }
        Ok(())
    }
}

impl UsageStore for MemoryStore {
    async fn usage_history(&self, _key_id: &KeyId, _from: Day) -> StoreResult<Vec<UsageDay>> {
        Ok(vec![])
    }

    async fn key_counters(&self, key_id: &KeyId) -> StoreResult<Option<KeyState>> {
        Ok(self.lock().keys.get(key_id).map(|k| KeyState {
            key_id: k.key_id.clone(),
            customer_id: k.customer_id.clone(),
            plan_id: k.limits.governing_plan_id.clone(),
            status: k.status,
            expires_at: k.expires_at,
            current_hash: k.hash,
            previous_hash: k.rotation.map(|r| (r.previous_hash, r.grace_until)),
            access: k.access,
            scopes: k.scopes.clone(),
            rate_limit: k.limits.rate_limit,
            quota: k.limits.quota,
            counters: Counters::default(),
        }))
    }

    async fn customer_usage(&self, _customer_id: &CustomerId, _from: Day) -> StoreResult<Vec<(MeterDay, MeterLedger)>> {
        Ok(vec![])
    }

    async fn stats(&self, _from: Day, _to: Day) -> StoreResult<crate::domain::stats::Stats> {
        Ok(crate::domain::stats::Stats::default())
    }
}
