//! The API's answers: plans, keys and customers as the API shows them (timestamps as RFC 3339;
//! never a secret or a hash).

use serde::Serialize;
use shared::domain::api_key::{KeyEnv, KeyId};
use shared::domain::customers::Customer;
use shared::domain::key_records::KeyRecord;
use shared::domain::plans::{Plan, Quota, RateLimit};
use shared::domain::time::UnixTime;
use shared::domain::usage::DayCount;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct PlanView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub stripe_price_ids: &'a [String],
    pub meter_event_name: Option<&'a str>,
    /// A customer's own keys at most (`null`: the default, [`shared::domain::plans::DEFAULT_MAX_KEYS`]).
    pub max_keys: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
}

impl<'a> From<&'a Plan> for PlanView<'a> {
    fn from(p: &'a Plan) -> Self {
        Self {
            id: p.id.as_str(),
            name: &p.name,
            rate_limit: p.rate_limit,
            quota: p.quota,
            stripe_price_ids: &p.stripe_price_ids,
            meter_event_name: p.meter_event_name.as_deref(),
            max_keys: p.max_keys,
            created_at: p.created_at.to_rfc3339(),
            updated_at: p.updated_at.to_rfc3339(),
        }
    }
}

/// The limits the authorizer enforces for a key, and the plan they come from.
#[derive(Debug, Serialize)]
pub struct EffectiveLimitsView<'a> {
    pub plan_id: Option<&'a str>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

#[derive(Debug, Serialize)]
pub struct RotationView {
    pub previous_secret_valid_until: String,
}

/// A key as the API shows it: no secret, no hash.
#[derive(Debug, Serialize)]
pub struct KeyView<'a> {
    pub key_id: &'a str,
    pub display: &'a str,
    pub customer_id: &'a str,
    /// The key's own plan; `null` means it follows its customer's plan.
    pub plan_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub env: KeyEnv,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub scopes: &'a [String],
    pub metadata: &'a BTreeMap<String, String>,
    /// Per-key overrides of the plan's limits.
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub limits: EffectiveLimitsView<'a>,
    pub rotation: Option<RotationView>,
    /// When the authorizer last allowed a request with the key (`null`: never).
    pub last_used_at: Option<String>,
}

impl<'a> KeyView<'a> {
    pub fn new(k: &'a KeyRecord, now: UnixTime) -> Self {
        Self {
            key_id: k.key_id.as_str(),
            display: &k.display,
            customer_id: k.customer_id.as_str(),
            plan_id: k.own_plan_id.as_ref().map(|p| p.as_str()),
            name: k.name.as_deref(),
            env: k.env,
            status: k.status.as_str(),
            created_at: k.created_at.to_rfc3339(),
            updated_at: k.updated_at.to_rfc3339(),
            expires_at: k.expires_at.map(UnixTime::to_rfc3339),
            scopes: &k.scopes,
            metadata: &k.metadata,
            rate_limit: k.overrides.rate_limit,
            quota: k.overrides.quota,
            limits: EffectiveLimitsView {
                plan_id: k.limits.governing_plan_id.as_ref().map(|p| p.as_str()),
                rate_limit: k.limits.rate_limit,
                quota: k.limits.quota,
            },
            rotation: k
                .rotation
                .filter(|r| r.grace_until > now)
                .map(|r| RotationView { previous_secret_valid_until: r.grace_until.to_rfc3339() }),
            last_used_at: k.last_used_at.map(UnixTime::to_rfc3339),
        }
    }
}

/// A key together with its plaintext: only in the answer to create, rotate and claim.
#[derive(Debug, Serialize)]
pub struct IssuedKeyView<'a> {
    pub key: &'a str,
    #[serde(flatten)]
    pub record: KeyView<'a>,
}

#[derive(Debug, Serialize)]
pub struct CustomerView<'a> {
    pub customer_id: &'a str,
    pub stripe_customer_id: Option<&'a str>,
    pub stripe_subscription_id: Option<&'a str>,
    pub subscription_status: Option<&'static str>,
    pub plan_id: Option<&'a str>,
    pub current_period_end: Option<String>,
    /// A Stripe price no plan claims: the operator should map it to a plan.
    pub unknown_price_id: Option<&'a str>,
    pub created_at: String,
    pub updated_at: String,
    pub keys: Vec<&'a str>,
}

impl<'a> CustomerView<'a> {
    pub fn new(c: &'a Customer, keys: &'a [KeyId]) -> Self {
        Self {
            customer_id: c.customer_id.as_str(),
            stripe_customer_id: c.stripe_customer_id.as_deref(),
            stripe_subscription_id: c.stripe_subscription_id.as_deref(),
            subscription_status: c.subscription_status.map(|s| s.as_str()),
            plan_id: c.plan_id.as_ref().map(|p| p.as_str()),
            current_period_end: c.current_period_end.map(UnixTime::to_rfc3339),
            unknown_price_id: c.unknown_price_id.as_deref(),
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
            keys: keys.iter().map(KeyId::as_str).collect(),
        }
    }
}

/// `{"rate_limited": 4, ...}`: a day's denials by code (codes with none left out).
pub fn denied_by_code(count: &DayCount) -> serde_json::Value {
    count.denials_by_code().map(|(code, n)| (code.to_owned(), serde_json::Value::from(n))).collect()
}
