//! The management API's bodies as the client reads and sends them; unknown fields are kept
//! out of the way (a newer server), never refused.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub customer_id: Option<String>,
    pub plan_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u64,
    pub window_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub limit: u64,
    pub period: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub stripe_price_ids: Vec<String>,
    pub meter_event_name: Option<String>,
    pub max_keys: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanList {
    pub items: Vec<Plan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveLimits {
    pub plan_id: Option<String>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub previous_secret_valid_until: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub key_id: String,
    pub display: String,
    pub customer_id: String,
    pub plan_id: Option<String>,
    pub name: Option<String>,
    pub env: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    pub limits: EffectiveLimits,
    pub rotation: Option<Rotation>,
    pub last_used_at: Option<String>,
}

/// A key with its plaintext: the answer to create and rotate, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    pub key: String,
    #[serde(flatten)]
    pub record: Key,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub items: Vec<Key>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: String,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<String>,
    pub plan_id: Option<String>,
    pub current_period_end: Option<String>,
    pub unknown_price_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerUsageDay {
    pub day: String,
    pub meter: Option<String>,
    pub allowed: u64,
    pub denied: u64,
    pub denied_by_code: BTreeMap<String, u64>,
    pub reported: u64,
    pub unbilled: u64,
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerUsage {
    pub customer_id: String,
    pub history: Vec<CustomerUsageDay>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUse {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    pub used: u64,
    pub remaining: u64,
    pub reset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    pub day: String,
    pub allowed: u64,
    pub denied: u64,
    pub denied_by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub key_id: String,
    pub rate_limit: Option<LimitUse>,
    pub quota: Option<LimitUse>,
    pub history: Vec<UsageDay>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopKey {
    pub key_id: String,
    pub customer_id: String,
    pub allowed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopCustomer {
    pub customer_id: String,
    pub allowed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearQuota {
    pub key_id: String,
    pub customer_id: String,
    pub used: u64,
    pub limit: u64,
    pub period: String,
    pub reset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub from: String,
    pub to: String,
    pub day: String,
    pub days: Vec<UsageDay>,
    pub top_keys: Vec<TopKey>,
    pub top_customers: Vec<TopCustomer>,
    pub near_quota: Vec<NearQuota>,
}
