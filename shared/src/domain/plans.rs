//! Plans: the limits and billing meter a key is sold under.

use super::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A field-level validation failure; the API maps it to 422 naming `field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A [`ValidationError`] shown as its message alone: the error of the ids' `TryFrom<String>`,
/// so that serde (which names the field itself) reports `plan_id: must be ...` once, not twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct InvalidValue(pub ValidationError);

/// Lowercase slug, 1–64 chars of `a-z 0-9 _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanId(String);

impl PlanId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "plan_id",
                "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlanId {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).map_err(InvalidValue)
    }
}

impl From<PlanId> for String {
    fn from(p: PlanId) -> String {
        p.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most `limit` allowed requests per fixed window of `window_s` seconds, aligned to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: u64,
    pub window_s: u64,
}

/// The longest rate-limit window; longer horizons are what quotas are for.
pub const MAX_WINDOW_S: u64 = 86_400;
/// Far above any real plan, and small enough to stay exact as an f64 in JSON clients.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

impl RateLimit {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(ValidationError::new(format!("{field}.limit"), format!("must be 1..={MAX_LIMIT}")));
        }
        if !(1..=MAX_WINDOW_S).contains(&self.window_s) {
            return Err(ValidationError::new(
                format!("{field}.window_s"),
                format!("must be 1..={MAX_WINDOW_S} seconds"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }
}

/// At most `limit` allowed requests per UTC calendar `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
}

impl Quota {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(ValidationError::new(format!("{field}.limit"), format!("must be 1..={MAX_LIMIT}")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub stripe_price_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_event_name: Option<String>,
    /// How many keys (not revoked) a customer on this plan may hold when it creates its own
    /// (`POST /v1/me/keys`); unset: [`DEFAULT_MAX_KEYS`]. Operators are not bound by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u64>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A customer's own keys when its plan names no `max_keys` (or it has no plan).
pub const DEFAULT_MAX_KEYS: u64 = 10;
/// The most a plan may allow.
pub const MAX_MAX_KEYS: u64 = 1_000;

/// How many keys a customer on `plan` may hold when it creates its own.
pub fn key_limit(plan: Option<&Plan>) -> u64 {
    plan.and_then(|p| p.max_keys).unwrap_or(DEFAULT_MAX_KEYS)
}

impl Plan {
    /// Checks everything a plan must satisfy before it is stored.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(ValidationError::new("name", "must be 1-200 characters"));
        }
        if let Some(r) = &self.rate_limit {
            r.validate("rate_limit")?;
        }
        if let Some(q) = &self.quota {
            q.validate("quota")?;
        }
        if self.stripe_price_ids.len() > 20 {
            return Err(ValidationError::new("stripe_price_ids", "at most 20 prices per plan"));
        }
        for p in &self.stripe_price_ids {
            if !is_stripe_id(p, "price_") {
                return Err(ValidationError::new("stripe_price_ids", "each must look like price_..."));
            }
        }
        if self.max_keys.is_some_and(|m| !(1..=MAX_MAX_KEYS).contains(&m)) {
            return Err(ValidationError::new("max_keys", format!("must be 1..={MAX_MAX_KEYS}")));
        }
        if let Some(m) = &self.meter_event_name {
            // Stripe meter event names: up to 100 chars; keep to a safe ASCII subset.
            let ok = (1..=100).contains(&m.len())
                && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !ok {
                return Err(ValidationError::new(
                    "meter_event_name",
                    "must be 1-100 characters of A-Z, a-z, 0-9, '_', '-' or '.'",
                ));
            }
        }
        Ok(())
    }
}

/// Stripe object ids are a type prefix plus an alphanumeric tail.
pub fn is_stripe_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|rest| {
        (1..=250).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            id: PlanId::parse("pro").unwrap(),
            name: "Pro".into(),
            rate_limit: Some(RateLimit { limit: 100, window_s: 60 }),
            quota: Some(Quota { limit: 1_000_000, period: Period::Month }),
            stripe_price_ids: vec!["price_123".into()],
            meter_event_name: Some("api_requests".into()),
            max_keys: None,
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
        }
    }

    #[test]
    fn plan_ids_are_slugs() {
        for ok in ["pro", "a", "free-tier", "v2_pro"] {
            assert!(PlanId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Pro", "-x", "has space", &"x".repeat(65)] {
            assert!(PlanId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(plan().validate().is_ok());
        let mut p = plan();
        p.rate_limit = Some(RateLimit { limit: 0, window_s: 60 });
        assert_eq!(p.validate().unwrap_err().field, "rate_limit.limit");
        let mut p = plan();
        p.rate_limit = Some(RateLimit { limit: 1, window_s: MAX_WINDOW_S + 1 });
        assert_eq!(p.validate().unwrap_err().field, "rate_limit.window_s");
        let mut p = plan();
        p.stripe_price_ids = vec!["prod_1".into()];
        assert_eq!(p.validate().unwrap_err().field, "stripe_price_ids");
        let mut p = plan();
        p.meter_event_name = Some("has space".into());
        assert_eq!(p.validate().unwrap_err().field, "meter_event_name");
    }

    #[test]
    fn plan_json_matches_the_contract() {
        let json = serde_json::json!({
            "id": "pro", "name": "Pro",
            "rate_limit": {"limit": 100, "window_s": 60},
            "quota": {"limit": 1000000, "period": "month"},
            "stripe_price_ids": ["price_123"], "meter_event_name": "api_requests",
            "created_at": 0, "updated_at": 0
        });
        let p: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(p, plan());
    }
}
