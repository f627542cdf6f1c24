//! The single-table layout: key formats and index names shared by the DynamoDB adapter, the
//! SAM template (infra/template.yaml) and docs/data-model.md. Change them together.

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// Customer -> keys.
pub const GSI1: &str = "gsi1";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";
/// Governing plan -> keys.
pub const GSI2: &str = "gsi2";
pub const GSI2_PK: &str = "gsi2pk";
pub const GSI2_SK: &str = "gsi2sk";
/// Item type -> items (all keys, all plans), for unfiltered listings.
pub const GSI3: &str = "gsi3";
pub const GSI3_PK: &str = "gsi3pk";
pub const GSI3_SK: &str = "gsi3sk";
/// Sparse: the usage rollup's work list. Key items with usage not yet rolled up (`A#n`) and
/// meter ledgers owing a report to Stripe (`R#n`), sharded to spread writes. Sorted by the
/// table's `pk`, so an entry names its item's partition (and, KEYS_ONLY, its `sk`).
pub const GSI_ACTIVITY: &str = "activity";
pub const ACTIVITY_PK: &str = "act";
pub const ACTIVITY_SK: &str = PK;
pub const ACTIVITY_SHARDS: u32 = 8;
/// The key attributes listings read (gsi1 projects these). Counters are deliberately absent.
pub const KEY_LISTING_ATTRS: &[&str] = &[
    "key_id",
    "customer_id",
    "plan_id",
    "name",
    "env",
    "status",
    "hash",
    "display",
    "created_at",
    "updated_at",
    "expires_at",
    "scopes",
    "metadata",
    "ovr_rl_limit",
    "ovr_rl_window",
    "ovr_q_limit",
    "ovr_q_period",
    "prev_hash",
    "prev_until",
    "plan",
    "rl_limit",
    "rl_window",
    "q_limit",
    "q_period",
    "sub_status",
    "sub_grace_until",
];
/// Plan attributes keys do not have; gsi3 lists keys and plans, so it projects both.
pub const PLAN_ONLY_LISTING_ATTRS: &[&str] = &["stripe_price_ids", "meter_event_name"];

pub fn listing_attrs() -> Vec<&'static str> {
    KEY_LISTING_ATTRS.iter().chain(PLAN_ONLY_LISTING_ATTRS).copied().collect()
}
/// DynamoDB's TTL attribute (epoch seconds).
pub const TTL: &str = "expires_ttl";

pub fn key_pk(key_id: &str) -> String {
    format!("KEY#{key_id}")
}
pub const KEY_SK: &str = "KEY";
pub fn hash_pk(hash_hex: &str) -> String {
    format!("HASH#{hash_hex}")
}
pub const HASH_SK: &str = "HASH";
pub fn plan_pk(plan_id: &str) -> String {
    format!("PLAN#{plan_id}")
}
pub const PLAN_SK: &str = "PLAN";
pub fn customer_pk(customer_id: &str) -> String {
    format!("CUST#{customer_id}")
}
pub const CUSTOMER_SK: &str = "CUST";

/// Which customer a Stripe customer id belongs to (webhook events name only Stripe's id).
pub fn stripe_customer_pk(stripe_customer_id: &str) -> String {
    format!("STRIPECUS#{stripe_customer_id}")
}
pub const STRIPE_CUSTOMER_SK: &str = "STRIPECUS";
pub fn idempotency_pk(scope: &str, id: &str) -> String {
    format!("IDEM#{scope}#{id}")
}
pub const IDEMPOTENCY_SK: &str = "IDEM";
pub fn usage_day_sk(day_compact: &str) -> String {
    format!("DAY#{day_compact}")
}
/// Live per-day counters on a key item: `ua_YYYYMMDD` (allowed), `ud_YYYYMMDD` (denied).
pub fn allowed_day_attr(day_compact: &str) -> String {
    format!("ua_{day_compact}")
}
pub fn denied_day_attr(day_compact: &str) -> String {
    format!("ud_{day_compact}")
}
/// Live denials by code on a key item: `dc_YYYYMMDD_<code>` (e.g. `dc_20261206_rate_limited`),
/// added by the same write as `ud_YYYYMMDD`.
pub fn denied_code_day_attr(day_compact: &str, code: &str) -> String {
    format!("dc_{day_compact}_{code}")
}
/// Denials by code on a usage-day item and a stats day: `dc_<code>`.
pub fn denied_code_attr(code: &str) -> String {
    format!("dc_{code}")
}
/// Tollgate-wide daily totals (`sk = DAY#YYYYMMDD`) and the keys near their quota
/// (`sk = NEAR`), written by the usage rollup, read by `GET /v1/stats`.
pub const STATS_PK: &str = "STATS";
pub const STATS_NEAR_SK: &str = "NEAR";
pub const TYPE_KEYS: &str = "KEYS";
pub const TYPE_PLANS: &str = "PLANS";

fn shard_of(id: &str) -> u32 {
    id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % ACTIVITY_SHARDS
}

/// Which activity shard a key's usage marker goes to.
pub fn activity_shard(key_id: &str) -> String {
    format!("{}{}", KEY_ACTIVITY_PREFIX, shard_of(key_id))
}
pub const KEY_ACTIVITY_PREFIX: &str = "A#";

/// Which activity shard a customer's owed-report markers go to.
pub fn owed_shard(customer_id: &str) -> String {
    format!("{}{}", OWED_ACTIVITY_PREFIX, shard_of(customer_id))
}
pub const OWED_ACTIVITY_PREFIX: &str = "R#";

/// A customer's meter ledger for one day: `sk = USAGE#YYYYMMDD#<meter event name>` (empty
/// meter: history only), in the customer's partition, so a day range is one Query.
pub fn meter_day_sk(day_compact: &str, meter: Option<&str>) -> String {
    format!("USAGE#{day_compact}#{}", meter.unwrap_or_default())
}
pub const METER_DAY_PREFIX: &str = "USAGE#";

/// The usage rollup's lease (one run at a time): an idempotency record in this scope.
pub const ROLLUP_LEASE_SCOPE: &str = "lease";
pub const ROLLUP_LEASE_ID: &str = "usage-rollup";

/// A bounded-attempts counter: `LIMIT#<bucket>#<window end>` (e.g. `claim#session#cs_...`).
pub fn attempt_pk(bucket: &str, window_end: i64) -> String {
    format!("LIMIT#{bucket}#{window_end}")
}
pub const ATTEMPT_SK: &str = "LIMIT";
