//! What Tollgate stores about a key (never the key itself), and how its effective limits are
//! resolved from the key, its plan and its customer's plan.

use super::api_key::{KeyEnv, KeyHash, KeyId};
use super::customers::{CustomerAccess, CustomerId};
use super::plans::{Plan, PlanId, Quota, RateLimit, ValidationError};
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

/// Who changed a key: the operator (admin API, IAM, admin token) or its customer
/// (self-service). A key the operator disabled stays disabled until the operator enables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Actor {
    #[default]
    Operator,
    Customer,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Self::Operator),
            "customer" => Some(Self::Customer),
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
    /// The plan in force (the governing plan): the key's own, else its customer's.
    pub governing_plan_id: Option<PlanId>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

impl EffectiveLimits {
    /// `plan` must be the plan named by the key, or (when the key names none) its customer's.
    pub fn resolve(plan: Option<&Plan>, overrides: &LimitOverrides) -> Self {
        Self {
            governing_plan_id: plan.map(|p| p.id.clone()),
            rate_limit: overrides.rate_limit.or(plan.and_then(|p| p.rate_limit)),
            quota: overrides.quota.or(plan.and_then(|p| p.quota)),
        }
    }
}

/// A stored key. The secret is represented only by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    /// The plan the key was given explicitly (its own); `None` follows the customer's plan.
    /// Which plan governs it is `limits.governing_plan_id`.
    pub own_plan_id: Option<PlanId>,
    pub name: Option<String>,
    pub env: KeyEnv,
    pub status: KeyStatus,
    /// Who disabled it, while it is disabled (`None` for keys disabled before this was kept:
    /// taken as the operator).
    pub disabled_by: Option<Actor>,
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
    /// When the authorizer last allowed a request with it (kept on the key item by the
    /// counting write; listings, read from indexes that do not carry it, have `None`).
    pub last_used_at: Option<UnixTime>,
}

impl KeyRecord {
    /// Which plan governs the key: its own if set, else its customer's (`customer_plan`).
    pub fn governing_plan<'a>(&'a self, customer_plan: Option<&'a PlanId>) -> Option<&'a PlanId> {
        self.own_plan_id.as_ref().or(customer_plan)
    }

    /// Copies what the authorizer enforces from the governing `plan` (see
    /// [`governing_plan`](Self::governing_plan); `None`: no plan governs it) and from the
    /// customer's subscription `access`. The one place a key's limits are decided; called on
    /// every change to the key, its plan or its customer.
    pub fn resolve(&mut self, plan: Option<&Plan>, access: CustomerAccess) {
        self.limits = EffectiveLimits::resolve(plan, &self.overrides);
        self.access = access;
    }

    /// The plan whose count of governed keys includes this key: the governing plan, unless
    /// the key is revoked (a plan in use cannot be deleted; a revoked key does not use it).
    pub fn counted_plan(&self) -> Option<&PlanId> {
        (self.status != KeyStatus::Revoked).then_some(self.limits.governing_plan_id.as_ref()).flatten()
    }
}

/// Limits on free-form key fields, in UTF-8 bytes (what DynamoDB bills), so a key item's
/// free-form part stays under 1,124 bytes whatever a caller puts in these fields: with every
/// other field at its maximum the item is about 2.6 KB (3 write units per decision), typically
/// about 600 bytes (1).
pub const MAX_NAME_BYTES: usize = 100;
pub const MAX_SCOPES: usize = 20;
pub const MAX_SCOPE_LEN: usize = 64;
/// All scopes together (each one's bytes).
pub const MAX_SCOPES_BYTES: usize = 512;
pub const MAX_METADATA_ENTRIES: usize = 10;
pub const MAX_METADATA_KEY_BYTES: usize = 40;
pub const MAX_METADATA_VALUE_BYTES: usize = 200;
/// All metadata keys and values together.
pub const MAX_METADATA_BYTES: usize = 512;
pub const MAX_GRACE_S: u64 = 30 * 86_400;
// The largest free-form part any key can have.
const _: () = assert!(MAX_NAME_BYTES + MAX_SCOPES_BYTES + MAX_METADATA_BYTES <= 1_124);

/// A key's display name: 1–100 bytes of UTF-8, no control characters.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    if !(1..=MAX_NAME_BYTES).contains(&name.len()) || name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            format!("must be 1-{MAX_NAME_BYTES} bytes of UTF-8, no control characters"),
        ));
    }
    Ok(())
}

/// Scopes: at most 20, each 1–64 characters of `A-Z a-z 0-9 _ - . : /`, 512 bytes in all.
pub fn validate_scopes(scopes: &[String]) -> Result<(), ValidationError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ValidationError::new("scopes", format!("at most {MAX_SCOPES} scopes")));
    }
    for s in scopes {
        let ok = (1..=MAX_SCOPE_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
        if !ok {
            return Err(ValidationError::new(
                "scopes",
                format!("each scope must be 1-{MAX_SCOPE_LEN} characters of A-Z, a-z, 0-9, '_', '-', '.', ':' or '/'"),
            ));
        }
    }
    if scopes.iter().map(String::len).sum::<usize>() > MAX_SCOPES_BYTES {
        return Err(ValidationError::new("scopes", format!("at most {MAX_SCOPES_BYTES} bytes in all")));
    }
    Ok(())
}

/// Metadata: at most 10 string entries; keys 1–40 bytes, values up to 200 bytes, 512 bytes in
/// all; no control characters.
pub fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ValidationError::new("metadata", format!("at most {MAX_METADATA_ENTRIES} entries")));
    }
    for (k, v) in metadata {
        if !(1..=MAX_METADATA_KEY_BYTES).contains(&k.len()) || k.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "metadata",
                format!("keys must be 1-{MAX_METADATA_KEY_BYTES} bytes, no control characters"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES || v.chars().any(char::is_control) {
            return Err(ValidationError::new(
                format!("metadata.{k}"),
                format!("values must be at most {MAX_METADATA_VALUE_BYTES} bytes, no control characters"),
            ));
        }
    }
    if metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA_BYTES {
        return Err(ValidationError::new("metadata", format!("at most {MAX_METADATA_BYTES} bytes in all")));
    }
    Ok(())
}

/// Per-key overrides obey the same bounds as a plan's limits.
pub fn validate_overrides(overrides: &LimitOverrides) -> Result<(), ValidationError> {
    if let Some(r) = &overrides.rate_limit {
        r.validate("rate_limit")?;
    }
    if let Some(q) = &overrides.quota {
        q.validate("quota")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_form_fields_are_bounded() {
        assert!(validate_name("Production server").is_ok());
        assert_eq!(validate_name("").unwrap_err().field, "name");
        assert_eq!(validate_name(&"x".repeat(MAX_NAME_BYTES + 1)).unwrap_err().field, "name");
        assert!(validate_name("tab\there").is_err());
        assert!(validate_scopes(&["read:pets".into(), "write/v2".into()]).is_ok());
        assert!(validate_scopes(&["has space".into()]).is_err());
        assert!(validate_scopes(&vec!["a".to_string(); MAX_SCOPES + 1]).is_err());
        let mut m = BTreeMap::new();
        m.insert("team".to_string(), "billing".to_string());
        assert!(validate_metadata(&m).is_ok());
        m.insert("big".to_string(), "v".repeat(MAX_METADATA_VALUE_BYTES + 1));
        assert_eq!(validate_metadata(&m).unwrap_err().field, "metadata.big");
        let too_many: BTreeMap<_, _> = (0..=MAX_METADATA_ENTRIES).map(|i| (i.to_string(), String::new())).collect();
        assert_eq!(validate_metadata(&too_many).unwrap_err().field, "metadata");
    }

    /// Bytes, not characters: what DynamoDB bills. 25 four-byte characters are 100 bytes.
    #[test]
    fn caps_count_bytes_and_bound_the_whole_item() {
        assert!(validate_name(&"🦀".repeat(25)).is_ok());
        assert!(validate_name(&"🦀".repeat(26)).is_err(), "26 characters, 104 bytes");
        let wide: BTreeMap<_, _> = [("k".to_string(), "é".repeat(101))].into();
        assert_eq!(validate_metadata(&wide).unwrap_err().field, "metadata.k", "101 characters, 202 bytes");
        // Each entry within its own caps, together over the total.
        let full: BTreeMap<_, _> = (0..3).map(|i| (format!("k{i}"), "v".repeat(190))).collect();
        assert_eq!(validate_metadata(&full).unwrap_err().field, "metadata");
        let scopes: Vec<String> = (0..9).map(|i| format!("{i}{}", "s".repeat(63))).collect();
        assert_eq!(validate_scopes(&scopes).unwrap_err().field, "scopes", "9 x 64 = 576 bytes");
    }
}
