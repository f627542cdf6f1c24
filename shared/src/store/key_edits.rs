//! What a key write is made of, the same for every store: [`NewKey`] (a key to create) and
//! the edits a key may undergo ([`KeyPatch::apply`], [`revoke_edit`], [`rotate_edit`]), each the
//! one rule both the DynamoDB adapter and the in-memory store apply.

use super::{StoreError, StoreResult};
use crate::domain::api_key::{KeyEnv, KeyHash, KeyId};
use crate::domain::customers::{CustomerAccess, CustomerId};
use crate::domain::key_records::{Actor, EffectiveLimits, KeyRecord, KeyStatus, LimitOverrides, Rotation};
use crate::domain::plans::PlanId;
use crate::domain::time::UnixTime;
use std::collections::BTreeMap;

/// Everything needed to create a key; the store resolves its limits and customer access.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    pub plan_id: Option<PlanId>,
    pub name: Option<String>,
    pub env: KeyEnv,
    pub hash: KeyHash,
    pub display: String,
    pub expires_at: Option<UnixTime>,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub overrides: LimitOverrides,
    pub now: UnixTime,
    /// Who creates it: a customer's own key must fit its plan's `max_keys` (operators are not
    /// bound by it), checked atomically with the write.
    pub by: Actor,
}

impl NewKey {
    /// A key for `key`'s secret with no name, expiry, scopes, metadata or overrides; a fresh
    /// id. Set the other fields with struct update syntax.
    pub fn new(
        key: &crate::domain::api_key::ApiKey,
        customer_id: CustomerId,
        plan_id: Option<PlanId>,
        now: UnixTime,
    ) -> Self {
        Self {
            key_id: KeyId::generate(now.secs().max(0) as u64 * 1000),
            customer_id,
            plan_id,
            name: None,
            env: key.env(),
            hash: key.hash(),
            display: key.display(),
            expires_at: None,
            scopes: vec![],
            metadata: BTreeMap::new(),
            overrides: LimitOverrides::default(),
            now,
            by: Actor::Operator,
        }
    }

    /// The record this key starts as: active, no rotation, and no limits or access yet
    /// ([`KeyRecord::resolve`] copies them from its plan and customer).
    pub fn record(&self) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id.clone(),
            customer_id: self.customer_id.clone(),
            own_plan_id: self.plan_id.clone(),
            name: self.name.clone(),
            env: self.env,
            status: KeyStatus::Active,
            disabled_by: None,
            hash: self.hash,
            display: self.display.clone(),
            created_at: self.now,
            updated_at: self.now,
            expires_at: self.expires_at,
            scopes: self.scopes.clone(),
            metadata: self.metadata.clone(),
            overrides: self.overrides,
            rotation: None,
            limits: EffectiveLimits::default(),
            access: CustomerAccess::default(),
            last_used_at: None,
        }
    }
}

/// A partial update; `None` leaves a field unchanged, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<Option<String>>,
    /// Only `Active` or `Disabled`; revocation has its own operation.
    pub status: Option<KeyStatus>,
    pub expires_at: Option<Option<UnixTime>>,
    pub plan_id: Option<Option<PlanId>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub overrides: Option<LimitOverrides>,
    /// Who asks: a customer cannot enable a key the operator disabled.
    pub by: Actor,
}

impl KeyPatch {
    /// The patch's edit of `record`, the one rule every store applies: a revoked key cannot
    /// change, and a patch cannot revoke (revocation has its own operation). True: apply it.
    pub fn apply(&self, record: &mut KeyRecord) -> StoreResult<bool> {
        if self.status == Some(KeyStatus::Revoked) {
            return Err(StoreError::Conflict("revoke a key with its revoke operation".into()));
        }
        if record.status == KeyStatus::Revoked {
            return Err(revoked());
        }
        let patch = self.clone();
        if let Some(v) = patch.name {
            record.name = v;
        }
        if let Some(v) = patch.status {
            set_status(record, v, self.by)?;
        }
        if let Some(v) = patch.expires_at {
            record.expires_at = v;
        }
        if let Some(v) = patch.plan_id {
            record.own_plan_id = v;
        }
        if let Some(v) = patch.metadata {
            record.metadata = v;
        }
        if let Some(v) = patch.overrides {
            record.overrides = v;
        }
        Ok(true)
    }
}

/// `active` or `disabled`, remembering who disabled it. The operator disabling a key makes
/// the disable the operator's even if its customer had disabled it first; enabling a key the
/// operator disabled is the operator's alone.
fn set_status(record: &mut KeyRecord, status: KeyStatus, by: Actor) -> StoreResult<()> {
    match (record.status, status) {
        (KeyStatus::Disabled, KeyStatus::Disabled) if by == Actor::Customer => {}
        (_, KeyStatus::Disabled) => record.disabled_by = Some(by),
        (KeyStatus::Disabled, _) if by == Actor::Customer && record.disabled_by != Some(Actor::Customer) => {
            return Err(StoreError::Conflict(
                "the operator disabled this key; only the operator can enable it again".into(),
            ));
        }
        _ => record.disabled_by = None,
    }
    record.status = status;
    Ok(())
}

/// Revocation's edit: permanent, and the previous secret's grace ends with it. False: it was
/// revoked already.
pub fn revoke_edit(record: &mut KeyRecord) -> StoreResult<bool> {
    if record.status == KeyStatus::Revoked {
        return Ok(false);
    }
    record.status = KeyStatus::Revoked;
    record.disabled_by = None;
    record.rotation = None;
    Ok(true)
}

/// Rotation's edit: the new secret replaces the old, which keeps working until `grace_until`
/// (none if that is not in the future). A revoked key is not rotated.
pub fn rotate_edit(
    record: &mut KeyRecord,
    new_hash: KeyHash,
    new_display: &str,
    grace_until: UnixTime,
    now: UnixTime,
) -> StoreResult<()> {
    if record.status == KeyStatus::Revoked {
        return Err(revoked());
    }
    record.rotation = (grace_until > now).then_some(Rotation { previous_hash: record.hash, grace_until });
    record.hash = new_hash;
    record.display = new_display.to_owned();
    record.updated_at = now;
    Ok(())
}

fn revoked() -> StoreError {
    StoreError::Conflict("the key is revoked; revocation is permanent".into())
}
