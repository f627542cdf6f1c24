//! [`KeyStore`]: keys created, edited, rotated and revoked, each in one transaction that also
//! moves the plan reference counts and proves the plan and customer it copied from unchanged.

use super::cursor::{decode_cursor, encode_cursor, items_cursor};
use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{
    customer_item, hash_item, key_definition, key_item, key_unlisted, n, parse_key_id, req_s, s, s_opt, time_opt,
    u64_or,
};
use super::tx::{TxError, retry_on_conflict};
use super::{DynamoStore, StoredCustomer, Versioned};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::decision::{CarryOver, Counters, KeyState, carry_over, period_usage_needed};
use crate::domain::key_records::{Actor, KeyRecord, KeyStatus};
use crate::domain::limits::period_start;
use crate::domain::plans::{Plan, PlanId, key_limit};
use crate::domain::time::{Day, UnixTime};
use crate::store::schema::*;
use crate::store::{
    KeyFilter, KeyPatch, KeyStore, NewKey, Page, StoreError, StoreResult, UsageStore, revoke_edit, rotate_edit,
};
use aws_sdk_dynamodb::types::TransactWriteItem;

impl KeyStore for DynamoStore {
    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        retry_on_conflict("the customer or plan", || self.try_create_key(&new)).await
    }

    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        self.get_key_item(id).await?.map(|i| KeyRecord::try_from(&i)).transpose()
    }

    async fn with_last_used(&self, mut keys: Vec<KeyRecord>) -> StoreResult<Vec<KeyRecord>> {
        // At most 16 reads in flight: a page of 100 keys is not a burst of 100 requests.
        use futures_util::{StreamExt as _, TryStreamExt as _};
        let ids: Vec<String> = keys.iter().map(|k| key_pk(k.key_id.as_str())).collect();
        let used: Vec<Option<UnixTime>> =
            futures_util::stream::iter(ids).map(|pk| self.last_used(pk)).buffered(16).try_collect().await?;
        for (k, used) in keys.iter_mut().zip(used) {
            k.last_used_at = used.or(k.last_used_at);
        }
        Ok(keys)
    }

    async fn list_keys(&self, filter: &KeyFilter, limit: usize, cursor: Option<&str>) -> StoreResult<Page<KeyRecord>> {
        let limit = limit.clamp(1, 100);
        let (index, pk_attr, sk_attr, pk_value) = match (&filter.customer_id, &filter.plan_id) {
            (Some(c), _) => (GSI1, GSI1_PK, GSI1_SK, customer_pk(c.as_str())),
            (None, Some(p)) => (GSI2, GSI2_PK, GSI2_SK, plan_pk(p.as_str())),
            (None, None) => (GSI3, GSI3_PK, GSI3_SK, TYPE_KEYS.to_owned()),
        };
        let mut start = cursor.map(|c| decode_cursor(c, pk_attr, sk_attr, &pk_value)).transpose()?;
        let mut items = vec![];
        let mut next_cursor = None;
        loop {
            let mut e = Expr::default();
            let key_cond = format!("{} = {}", e.name(pk_attr), e.value(s(pk_value.clone())));
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(key_cond)
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(limit + 1).unwrap_or(101));
            let out = {
                // GSI2 holds keys only: its results are fetched by id below.
                q = q
                    .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
                    .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values));
                q.send().await.map_err(sdk_err)?
            };
            let last_key = out.last_evaluated_key;
            for raw in out.items.unwrap_or_default() {
                let record = if index == GSI2 {
                    match self.get_key(&parse_key_id(req_s(&raw, KEY_ID).or_else(|_| req_s(&raw, GSI2_SK))?)?).await? {
                        Some(r) => r,
                        None => continue,
                    }
                } else {
                    KeyRecord::try_from(&raw)?
                };
                let keep = filter.customer_id.as_ref().is_none_or(|c| *c == record.customer_id)
                    && filter.plan_id.as_ref().is_none_or(|p| Some(p) == record.limits.governing_plan_id.as_ref())
                    && filter.status.is_none_or(|st| st == record.status);
                if !keep {
                    continue;
                }
                if items.len() == limit {
                    // There is at least one more: resume after the last one returned.
                    next_cursor = Some(encode_cursor(&items_cursor(&items, pk_attr, sk_attr, &pk_value)));
                    return Ok(Page { items, next_cursor });
                }
                items.push(record);
            }
            match last_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        if items.len() > limit {
            next_cursor = Some(encode_cursor(&items_cursor(&items, pk_attr, sk_attr, &pk_value)));
        }
        Ok(Page { items, next_cursor })
    }

    async fn update_key(&self, id: &KeyId, patch: KeyPatch, now: UnixTime) -> StoreResult<KeyRecord> {
        self.write_key(id, now, |record| patch.apply(record)).await
    }

    async fn rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: String,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> StoreResult<KeyRecord> {
        retry_on_conflict("the key", || self.try_rotate_key(id, new_hash, &new_display, grace_until, now)).await
    }

    async fn revoke_key(&self, id: &KeyId, now: UnixTime) -> StoreResult<KeyRecord> {
        self.write_key(id, now, revoke_edit).await
    }
}

impl DynamoStore {
    /// A key item's `last_used` alone (a listing's `last_used_at`).
    async fn last_used(&self, pk: String) -> StoreResult<Option<UnixTime>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(KEY_SK))
            .projection_expression(LAST_USED)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item.map(|i| time_opt(&i, LAST_USED)).transpose()?.flatten())
    }

    /// The one way a key's definition changes: read it, apply `edit`, re-resolve its limits
    /// and customer access from its plan and customer, and write it back in one transaction
    /// guarded by the key's version, moving the plan reference counts if the governing plan
    /// (or whether the key counts at all) changed. `edit` returns false to leave the key as
    /// it is. Retries when anything it read changed underneath.
    pub(super) async fn write_key(
        &self,
        id: &KeyId,
        now: UnixTime,
        edit: impl Fn(&mut KeyRecord) -> StoreResult<bool> + Send + Sync,
    ) -> StoreResult<KeyRecord> {
        Ok(self.write_key_counted(id, now, edit).await?.0)
    }

    /// [`Self::write_key`], and whether the key item was rewritten.
    pub(super) async fn write_key_counted(
        &self,
        id: &KeyId,
        now: UnixTime,
        edit: impl Fn(&mut KeyRecord) -> StoreResult<bool> + Send + Sync,
    ) -> StoreResult<(KeyRecord, bool)> {
        retry_on_conflict("the key", || self.try_write_key(id, now, &edit)).await
    }

    /// One attempt of [`Self::write_key_counted`]; `None` when something it read changed.
    async fn try_write_key(
        &self,
        id: &KeyId,
        now: UnixTime,
        edit: &(impl Fn(&mut KeyRecord) -> StoreResult<bool> + Send + Sync),
    ) -> StoreResult<Option<(KeyRecord, bool)>> {
        let item = self.get_key_item(id).await?.ok_or(StoreError::NotFound("key"))?;
        let record = KeyRecord::try_from(&item)?;
        let ver = u64_or(&item, VER, 0)?;
        let mut next = record.clone();
        if !edit(&mut next)? {
            return Ok(Some((record, false)));
        }
        let governing = self.governing(&next).await?;
        governing.resolve(&mut next);
        if next == record {
            return Ok(Some((record, false)));
        }
        next.updated_at = now;
        // Another window length or quota period: the counts made so far carry over
        // (domain::decision::carry_over), so a plan switch never resets them.
        let counters = KeyState::try_from(&item)?.counters;
        let (lim_before, lim_after) = (&record.limits, &next.limits);
        let period_used = match period_usage_needed(lim_before.quota.as_ref(), lim_after.quota.as_ref()) {
            Some(period) => self.allowed_since(id, period_start(now, period)).await?,
            None => 0,
        };
        let carry = carry_over(
            (lim_before.rate_limit.as_ref(), lim_before.quota.as_ref()),
            (lim_after.rate_limit.as_ref(), lim_after.quota.as_ref()),
            &counters,
            period_used,
            now,
        );
        let mut tx = vec![self.key_definition_update(&next, ver, &carry, &counters)?];
        tx.extend(self.plan_ref_items(record.counted_plan(), &next, governing.plan.as_ref())?);
        if let Some(customer) = &governing.customer {
            // Revoking frees one of the customer's keys (when it is counted yet).
            let revoked = record.status != KeyStatus::Revoked && next.status == KeyStatus::Revoked;
            tx.push(match (revoked, customer.live_keys) {
                // Never below zero (a key the count missed, made by code from before it).
                (true, Some(live)) if live > 0 => {
                    self.live_keys_update(&next.customer_id, customer, LiveKeys::Add(-1))?
                }
                _ => self.customer_version_check(&next.customer_id, customer.ver)?,
            });
        }
        match self.transact(tx).await {
            Ok(()) => Ok(Some((next, true))),
            Err(TxError::ConditionFailed(_)) => Ok(None),
            Err(TxError::Store(e)) => Err(e),
        }
    }

    /// One attempt of [`KeyStore::create_key`]; `None` when the customer or plan changed.
    async fn try_create_key(&self, new: &NewKey) -> StoreResult<Option<KeyRecord>> {
        let mut record = new.record();
        let governing = self.governing(&record).await?;
        governing.resolve(&mut record);
        let mut tx =
            vec![self.put_if_absent(key_item(&record))?, self.put_if_absent(hash_item(&record.hash, &record.key_id))?];
        tx.push(match &governing.customer {
            Some(customer) => {
                let live = match customer.live_keys {
                    Some(live) => live,
                    None => self.count_live_keys(&record.customer_id).await?,
                };
                let count = match (new.by, customer.live_keys) {
                    // A customer's own key: within its plan's limit, checked by the write itself.
                    (Actor::Customer, _) => {
                        // On its plan only: a key with no plan would have no limits at all.
                        let plan = governing.plan.as_ref().ok_or(StoreError::NoPlan)?;
                        let max = key_limit(Some(&plan.value));
                        if live >= max {
                            return Err(StoreError::KeyLimitReached(max));
                        }
                        match customer.live_keys {
                            Some(_) => LiveKeys::AddBelow(max),
                            None => LiveKeys::Start(live + 1),
                        }
                    }
                    (Actor::Operator, Some(_)) => LiveKeys::Add(1),
                    (Actor::Operator, None) => LiveKeys::Start(live + 1),
                };
                self.live_keys_update(&record.customer_id, customer, count)?
            }
            // Only an operator's key creates a customer; a customer acts only as one Tollgate knows.
            None if new.by == Actor::Customer => return Err(StoreError::NotFound("customer")),
            // A customer's first key creates the customer.
            None => {
                let mut item = customer_item(&Customer::new(record.customer_id.clone(), new.now), record.access);
                item.insert(LIVE_KEYS.into(), n(1));
                self.put_if_absent(item)?
            }
        });
        tx.extend(self.plan_ref_items(None, &record, governing.plan.as_ref())?);
        match self.transact(tx).await {
            Ok(()) => Ok(Some(record)),
            Err(TxError::ConditionFailed(failed)) if failed[0] || failed[1] => Err(StoreError::AlreadyExists("key")),
            // The customer or plan changed under us: resolve again.
            Err(TxError::ConditionFailed(_)) => Ok(None),
            Err(TxError::Store(e)) => Err(e),
        }
    }

    /// One attempt of [`KeyStore::rotate_key`]; `None` when the key changed.
    async fn try_rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: &str,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> StoreResult<Option<KeyRecord>> {
        let item = self.get_key_item(id).await?.ok_or(StoreError::NotFound("key"))?;
        let mut record = KeyRecord::try_from(&item)?;
        let ver = u64_or(&item, VER, 0)?;
        rotate_edit(&mut record, new_hash, new_display, grace_until, now)?;
        let tx = vec![
            self.key_definition_update(&record, ver, &CarryOver::default(), &Counters::default())?,
            self.put_if_absent(hash_item(&new_hash, id))?,
        ];
        match self.transact(tx).await {
            Ok(()) => Ok(Some(record)),
            Err(TxError::ConditionFailed(f)) if f.get(1).copied().unwrap_or(false) => {
                Err(StoreError::AlreadyExists("key hash"))
            }
            Err(TxError::ConditionFailed(_)) => Ok(None),
            Err(TxError::Store(e)) => Err(e),
        }
    }

    /// The plan and customer a key copies its limits and access from, as they are now (their
    /// versions then guard the write). A plan the key names that does not exist is refused.
    async fn governing(&self, key: &KeyRecord) -> StoreResult<Governing> {
        let customer = self.get_customer_versioned(&key.customer_id).await?;
        let plan = match key.governing_plan(customer.as_ref().and_then(|c| c.customer.plan_id.as_ref())) {
            Some(p) => self.get_plan_versioned(p).await?,
            None => None,
        };
        if key.own_plan_id.is_some() && plan.is_none() {
            return Err(StoreError::UnknownReference("plan"));
        }
        Ok(Governing { customer, plan })
    }

    /// The transaction items that move plan reference counts from `before` (the plan that
    /// counted the key as stored; `None` for a new key) to the plan that counts `after`, and
    /// prove that `plan` (what `after`'s limits were copied from) is unchanged.
    fn plan_ref_items(
        &self,
        before: Option<&PlanId>,
        after: &KeyRecord,
        plan: Option<&Versioned<Plan>>,
    ) -> StoreResult<Vec<TransactWriteItem>> {
        let counted = after.counted_plan();
        let mut tx = vec![];
        if before != counted {
            if let Some(old) = before {
                tx.push(self.plan_refs_update(old, -1, None)?);
            }
            if let (Some(new), Some(plan)) = (counted, plan) {
                tx.push(self.plan_refs_update(new, 1, Some(plan.ver))?);
            }
        } else if let (Some(same), Some(plan)) = (counted, plan) {
            // Same plan, but prove the limits just copied from it are current.
            tx.push(self.plan_refs_update(same, 0, Some(plan.ver))?);
        }
        Ok(tx)
    }

    pub(super) async fn allowed_since(&self, id: &KeyId, from: Day) -> StoreResult<u64> {
        Ok(self.usage_history(id, from).await?.iter().map(|d| d.count.allowed).sum())
    }

    /// Brings a key's enforced limits and access in line with its plan and customer.
    /// Idempotent; revoked keys are left alone. True when the key item was rewritten.
    pub(super) async fn refresh_key(&self, id: &KeyId, now: UnixTime) -> StoreResult<bool> {
        Ok(self.write_key_counted(id, now, |k| Ok(k.status != KeyStatus::Revoked)).await?.1)
    }

    /// An update that writes every definition attribute of `record` (not its counters),
    /// guarded by the key's version.
    ///
    /// With a [`CarryOver`], the counters move with it: the new end is set and the count moved
    /// by `ADD` (so requests counted concurrently are kept), guarded by the end that was read
    /// (so a concurrent rollover makes this write fail and retry instead of mixing windows).
    pub(super) fn key_definition_update(
        &self,
        record: &KeyRecord,
        ver: u64,
        carry: &CarryOver,
        read: &Counters,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let (mut assign, mut cond) = e.versioned(key_definition(record).into_iter().chain(key_unlisted(record)), ver);
        let moves =
            [(WIN_END, WIN_COUNT, carry.window, read.window_end), (Q_END, Q_COUNT, carry.period, read.period_end)];
        for (end_attr, count_attr, change, read_end) in moves {
            let Some((end, delta)) = change else { continue };
            let end_name = e.name(end_attr);
            let guard = if read_end.secs() == 0 {
                format!(" AND (attribute_not_exists({end_name}) OR {end_name} = {})", e.value(n(0)))
            } else {
                format!(" AND {end_name} = {}", e.value(n(read_end.secs())))
            };
            cond.push_str(&guard);
            assign.sets.push(format!("{end_name} = {}", e.value(n(end.secs()))));
            // Always, so that a counter that never existed now does (the steady-state write
            // compares it with the limit).
            assign.adds.push(format!("{} {}", e.name(count_attr), e.value(n(delta))));
        }
        self.tx_update(key_pk(record.key_id.as_str()), KEY_SK, assign.expression(), cond, e)
    }

    /// Moves a plan's count of governed keys. With `ver`, also proves the plan (and so the
    /// limits just copied from it) is unchanged.
    pub(super) fn plan_refs_update(
        &self,
        plan: &PlanId,
        delta: i64,
        ver: Option<u64>,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let r = e.name(REFS);
        let update = format!("SET {r} = if_not_exists({r}, {}) + {}", e.value(n(0)), e.value(n(delta)));
        let pk = e.name(PK);
        let cond = match ver {
            Some(v) => format!("attribute_exists({pk}) AND {} = {}", e.name(VER), e.value(n(v))),
            None => format!("attribute_exists({pk})"),
        };
        self.tx_update(plan_pk(plan.as_str()), PLAN_SK, update, cond, e)
    }
}

/// How a key write moves its customer's count of keys that are not revoked.
enum LiveKeys {
    /// By this much; the count exists.
    Add(i64),
    /// By one, if that stays within this (a customer's own key).
    AddBelow(u64),
    /// The first count on an item written before keys were counted: this many, counted now.
    Start(u64),
}

impl DynamoStore {
    /// The customer item's update for `count`, guarded by the version that was read (what the
    /// key copied from it). Concurrent creates do not conflict: each adds, and only a
    /// customer's own key is conditioned on the count.
    fn live_keys_update(
        &self,
        id: &CustomerId,
        customer: &StoredCustomer,
        count: LiveKeys,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let (lk, v) = (e.name(LIVE_KEYS), e.name(VER));
        let ver = e.value(n(customer.ver));
        let (update, cond) = match count {
            LiveKeys::Add(delta) => {
                let floor = if delta < 0 { format!(" AND {lk} >= {}", e.value(n(-delta))) } else { String::new() };
                (format!("ADD {lk} {}", e.value(n(delta))), format!("{v} = {ver} AND attribute_exists({lk}){floor}"))
            }
            LiveKeys::AddBelow(max) => (
                format!("ADD {lk} {}", e.value(n(1))),
                format!("{v} = {ver} AND attribute_exists({lk}) AND {lk} < {}", e.value(n(max))),
            ),
            LiveKeys::Start(live) => {
                (format!("SET {lk} = {}", e.value(n(live))), format!("{v} = {ver} AND attribute_not_exists({lk})"))
            }
        };
        self.tx_update(customer_pk(id.as_str()), CUSTOMER_SK, update, cond, e)
    }

    /// A customer's keys that are not revoked, counted from the customer index: only for a
    /// customer item written before the count was kept, whose keys are long indexed.
    async fn count_live_keys(&self, id: &CustomerId) -> StoreResult<u64> {
        let items = self.query_all(GSI1, GSI1_PK, &customer_pk(id.as_str())).await?;
        Ok(items.iter().filter(|i| s_opt(i, STATUS) != Some(KeyStatus::Revoked.as_str())).count() as u64)
    }
}

/// What a key's limits and access are copied from, with the versions that guard the copy.
struct Governing {
    customer: Option<StoredCustomer>,
    plan: Option<Versioned<Plan>>,
}

impl Governing {
    fn resolve(&self, key: &mut KeyRecord) {
        key.resolve(self.plan.as_ref().map(|p| &p.value), self.customer.as_ref().map(|c| c.access).unwrap_or_default());
    }
}
