//! What Tollgate stores about a key (never the key itself), and how its effective limits are
//! resolved from the key, its plan and its customer's plan.

use super::customers::{CustomerAccess, CustomerId};
use super::keys::{KeyEnv, KeyHash, KeyId};
use super::plans::{Plan, PlanId, Quota, RateLimit};
use super::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
    /// Permanent: nothing moves a key out of this state.
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// The secret a rotation replaced, and until when it still authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub previous_hash: KeyHash,
    pub grace_until: UnixTime,
}

/// Per-key limits that take precedence over the plan's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// The limits the authorizer enforces for a key, resolved when the key, its plan or its
/// customer changes (not per request).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EffectiveLimits {
    /// The plan in force: the key's own, else its customer's.
    pub plan_id: Option<PlanId>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

impl EffectiveLimits {
    /// `plan` must be the plan named by the key, or (when the key names none) its customer's.
    pub fn resolve(plan: Option<&Plan>, overrides: &LimitOverrides) -> Self {
        Self {
            plan_id: plan.map(|p| p.id.clone()),
            rate_limit: overrides.rate_limit.or(plan.and_then(|p| p.rate_limit)),
            quota: overrides.quota.or(plan.and_then(|p| p.quota)),
        }
    }
}

/// Which plan governs a key: its own if set, else its customer's.
pub fn governing_plan<'a>(key_plan: Option<&'a PlanId>, customer_plan: Option<&'a PlanId>) -> Option<&'a PlanId> {
    key_plan.or(customer_plan)
}

/// A stored key. The secret is represented only by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    /// The plan the key was given explicitly; `None` follows the customer's plan.
    pub plan_id: Option<PlanId>,
    pub name: Option<String>,
    pub env: KeyEnv,
    pub status: KeyStatus,
    pub hash: KeyHash,
    pub display: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub overrides: LimitOverrides,
    pub rotation: Option<Rotation>,
    pub limits: EffectiveLimits,
    pub access: CustomerAccess,
}

/// Limits on free-form key fields, so one key item stays well under 1 KB and every
/// authorization stays one write unit.
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_SCOPES: usize = 20;
pub const MAX_SCOPE_LEN: usize = 64;
pub const MAX_METADATA_ENTRIES: usize = 10;
pub const MAX_METADATA_KEY_LEN: usize = 40;
pub const MAX_METADATA_VALUE_LEN: usize = 200;
pub const MAX_GRACE_S: u64 = 30 * 86_400;
