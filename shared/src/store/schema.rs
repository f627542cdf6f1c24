//! The single-table layout: key formats, index names and attribute names shared by the DynamoDB
//! adapter, the SAM template (infra/template.yaml) and docs/data-model.md. Change them together.
//! Grouped by item type; an attribute several item types carry is under "Every item".

use crate::domain::lease::Counter;

// ----- table and indexes -------------------------------------------------------------------

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
/// gsi3's partition of every key.
pub const TYPE_KEYS: &str = "KEYS";
/// gsi3's partition of every plan.
pub const TYPE_PLANS: &str = "PLANS";
/// Sparse: the usage rollup's work list. Key items with usage not yet rolled up (`A#n`) and
/// meter ledgers owing a report to Stripe (`R#n`), sharded to spread writes. Sorted by the
/// table's `pk`, so an entry names its item's partition (and, KEYS_ONLY, its `sk`).
pub const GSI_ACTIVITY: &str = "activity";
pub const ACTIVITY_PK: &str = "act";
pub const ACTIVITY_SK: &str = PK;
pub const ACTIVITY_SHARDS: u32 = 8;
/// The key attributes listings read (gsi1 projects these). Counters are deliberately absent.
pub const KEY_LISTING_ATTRS: &[&str] = &[
    KEY_ID,
    CUSTOMER_ID,
    PLAN_ID,
    NAME,
    ENV,
    STATUS,
    HASH,
    DISPLAY,
    CREATED_AT,
    UPDATED_AT,
    EXPIRES_AT,
    SCOPES,
    METADATA,
    OVR_RL_LIMIT,
    OVR_RL_WINDOW,
    OVR_Q_LIMIT,
    OVR_Q_PERIOD,
    PREV_HASH,
    PREV_UNTIL,
    GOVERNING_PLAN,
    RL_LIMIT,
    RL_WINDOW,
    Q_LIMIT,
    Q_PERIOD,
    SUB_STATUS,
    SUB_GRACE_UNTIL,
];
/// Plan attributes keys do not have; gsi3 lists keys and plans, so it projects both.
pub const PLAN_ONLY_LISTING_ATTRS: &[&str] = &[STRIPE_PRICE_IDS, METER_EVENT_NAME];

pub fn listing_attrs() -> Vec<&'static str> {
    KEY_LISTING_ATTRS.iter().chain(PLAN_ONLY_LISTING_ATTRS).copied().collect()
}
/// DynamoDB's TTL attribute (epoch seconds).
pub const TTL: &str = "expires_ttl";
/// The partition and sort key of an item that never exists, read to open the connection.
pub const WARMUP: &str = "WARMUP";

// ----- every item --------------------------------------------------------------------------

/// What an item is (`key`, `plan`, `customer`, `subscription`, `fanout`), for whoever reads
/// the table by hand.
pub const ITEM_TYPE: &str = "type";
/// `type` of a key item.
pub const ITEM_KEY: &str = "key";
/// `type` of a plan item.
pub const ITEM_PLAN: &str = "plan";
/// `type` of a customer item.
pub const ITEM_CUSTOMER: &str = "customer";
/// `type` of a subscription item.
pub const ITEM_SUBSCRIPTION: &str = "subscription";
/// `type` of a fan-out progress item.
pub const ITEM_FAN_OUT: &str = "fanout";
/// The version a conditional write of a key, plan, customer or subscription is guarded by.
pub const VER: &str = "ver";
/// Epoch seconds the record was made (keys, plans, customers).
pub const CREATED_AT: &str = "created_at";
/// Epoch seconds the record last changed (keys, plans, customers, ledgers).
pub const UPDATED_AT: &str = "updated_at";
/// Epoch seconds a key stops working, or an idempotency record stops answering.
pub const EXPIRES_AT: &str = "expires_at";
/// The key id (key items, hash items).
pub const KEY_ID: &str = "key_id";
/// The customer id (key items, customer items, a Stripe account's link).
pub const CUSTOMER_ID: &str = "customer_id";
/// A plan id: a key's own plan, a customer's plan, a plan item's id.
pub const PLAN_ID: &str = "plan_id";
/// A key's or a plan's display name.
pub const NAME: &str = "name";
/// The Stripe customer id (customer items, subscription items).
pub const STRIPE_CUSTOMER_ID: &str = "stripe_customer_id";

// ----- key item: `KEY#<id>` / `KEY` --------------------------------------------------------

/// How a key item's partition key starts.
pub const KEY_PK_PREFIX: &str = "KEY#";
pub fn key_pk(key_id: &str) -> String {
    format!("{KEY_PK_PREFIX}{key_id}")
}
pub const KEY_SK: &str = "KEY";
/// `live` or `test`.
pub const ENV: &str = "env";
/// `active`, `disabled` or `revoked` (`KeyStatus::as_str`).
pub const STATUS: &str = "status";
/// Who disabled the key, while it is disabled.
pub const DISABLED_BY: &str = "disabled_by";
/// The hex hash of the secret the key accepts.
pub const HASH: &str = "hash";
/// The secret's redacted form.
pub const DISPLAY: &str = "display";
/// The scopes the key holds (a list of strings).
pub const SCOPES: &str = "scopes";
/// The operator's free-form key-value pairs (a map of strings).
pub const METADATA: &str = "metadata";
/// The key's own rate limit (requests per window), overriding its plan's.
pub const OVR_RL_LIMIT: &str = "ovr_rl_limit";
/// The key's own rate-limit window, in seconds.
pub const OVR_RL_WINDOW: &str = "ovr_rl_window";
/// The key's own quota, in requests per period.
pub const OVR_Q_LIMIT: &str = "ovr_q_limit";
/// The key's own quota period (`day`, `month`).
pub const OVR_Q_PERIOD: &str = "ovr_q_period";
/// The rotated-away secret's hash.
pub const PREV_HASH: &str = "prev_hash";
/// Until when (epoch seconds) the rotated-away secret still works.
pub const PREV_UNTIL: &str = "prev_until";
/// The governing plan's id (the key's own, else its customer's).
pub const GOVERNING_PLAN: &str = "plan";
/// The enforced rate limit in requests per window (on a plan item: the plan's own).
pub const RL_LIMIT: &str = "rl_limit";
/// The enforced rate-limit window, in seconds.
pub const RL_WINDOW: &str = "rl_window";
/// The enforced quota, in requests per period.
pub const Q_LIMIT: &str = "q_limit";
/// The enforced quota period (`day`, `month`).
pub const Q_PERIOD: &str = "q_period";
/// The customer's access, on the customer item and copied onto each of its keys: the status.
pub const SUB_STATUS: &str = "sub_status";
/// For `past_due`: until when (epoch seconds) the subscription still admits.
pub const SUB_GRACE_UNTIL: &str = "sub_grace_until";
/// Epoch seconds the current rate-limit window ends.
pub const WIN_END: &str = "win_end";
/// Requests counted in the current rate-limit window.
pub const WIN_COUNT: &str = "win_count";
/// Epoch seconds the current quota period ends.
pub const Q_END: &str = "q_end";
/// Requests counted in the current quota period.
pub const Q_COUNT: &str = "q_count";
/// Allowed requests counted since the last rollup (the rollup's guard).
pub const N_ALLOWED: &str = "n_allowed";
/// Denied requests counted since the last rollup.
pub const N_DENIED: &str = "n_denied";
/// The request id of the last counting write, so a retry recognises its own success.
pub const LAST_REQ: &str = "last_req";
/// Epoch seconds of the last allowed request.
pub const LAST_USED: &str = "last_used";

/// Each of a key item's counters: its limit's attribute, its window's or period's end, its count.
pub const COUNTERS: [(Counter, &str, &str, &str); 2] =
    [(Counter::Window, RL_LIMIT, WIN_END, WIN_COUNT), (Counter::Period, Q_LIMIT, Q_END, Q_COUNT)];

/// How a key item's live count of a day's allowed requests is named: `ua_YYYYMMDD`.
pub const LIVE_ALLOWED_PREFIX: &str = "ua";
/// How a key item's live count of a day's denied requests is named: `ud_YYYYMMDD`.
pub const LIVE_DENIED_PREFIX: &str = "ud";
/// How denials by code are named: `dc_YYYYMMDD_<code>` live on a key item, `dc_<code>` on a
/// usage-day item and a stats day.
pub const DENIED_CODE_PREFIX: &str = "dc";
/// A key item's live count of a day's allowed requests.
pub fn allowed_day_attr(day_compact: &str) -> String {
    format!("{LIVE_ALLOWED_PREFIX}_{day_compact}")
}
/// A key item's live count of a day's denied requests.
pub fn denied_day_attr(day_compact: &str) -> String {
    format!("{LIVE_DENIED_PREFIX}_{day_compact}")
}
/// Live denials by code on a key item (e.g. `dc_20261206_rate_limited`), added by the same
/// write as `ud_YYYYMMDD`.
pub fn denied_code_day_attr(day_compact: &str, code: &str) -> String {
    format!("{DENIED_CODE_PREFIX}_{day_compact}_{code}")
}
/// Denials by code on a usage-day item and a stats day: `dc_<code>`.
pub fn denied_code_attr(code: &str) -> String {
    format!("{DENIED_CODE_PREFIX}_{code}")
}

// ----- hash item: `HASH#<hex>` / `HASH` (-> KEY_ID) ------------------------------------------

pub fn hash_pk(hash_hex: &str) -> String {
    format!("HASH#{hash_hex}")
}
pub const HASH_SK: &str = "HASH";

// ----- plan item: `PLAN#<id>` / `PLAN` -----------------------------------------------------

pub fn plan_pk(plan_id: &str) -> String {
    format!("PLAN#{plan_id}")
}
pub const PLAN_SK: &str = "PLAN";
/// The Stripe prices that buy the plan (a list of strings).
pub const STRIPE_PRICE_IDS: &str = "stripe_price_ids";
/// The Stripe meter the plan's usage is reported to.
pub const METER_EVENT_NAME: &str = "meter_event_name";
/// How many keys a customer may make for itself on the plan.
pub const MAX_KEYS: &str = "max_keys";
/// How many keys the plan governs (a plan in use cannot be deleted).
pub const REFS: &str = "refs";

// ----- customer item: `CUST#<id>` / `CUST` -------------------------------------------------

/// How a customer item's partition key starts.
pub const CUSTOMER_PK_PREFIX: &str = "CUST#";
pub fn customer_pk(customer_id: &str) -> String {
    format!("{CUSTOMER_PK_PREFIX}{customer_id}")
}
pub const CUSTOMER_SK: &str = "CUST";
/// The governing subscription's id (the customer's billing, `domain::billing::govern`).
pub const STRIPE_SUBSCRIPTION_ID: &str = "stripe_subscription_id";
/// The governing subscription's status, as Stripe spells it.
pub const SUBSCRIPTION_STATUS: &str = "subscription_status";
/// Epoch seconds the governing subscription's billing period ends.
pub const CURRENT_PERIOD_END: &str = "current_period_end";
/// Epoch seconds the governing subscription went `past_due`.
pub const PAST_DUE_SINCE: &str = "past_due_since";
/// The governing subscription's price when no plan lists it.
pub const UNKNOWN_PRICE_ID: &str = "unknown_price_id";
/// How many of the customer's keys are not revoked.
pub const LIVE_KEYS: &str = "live_keys";

// ----- Stripe customer: `STRIPECUS#<id>` / `STRIPECUS` and `SUB#<id>` ----------------------

/// Which customer a Stripe customer id belongs to (webhook events name only Stripe's id).
pub fn stripe_customer_pk(stripe_customer_id: &str) -> String {
    format!("STRIPECUS#{stripe_customer_id}")
}
pub const STRIPE_CUSTOMER_SK: &str = "STRIPECUS";
/// The account item's version, moved by every subscription write.
pub const ACCOUNT_VER: &str = "subs_ver";
/// How a subscription item's sort key starts.
pub const SUBSCRIPTION_SK_PREFIX: &str = "SUB#";
/// Sorts after every subscription's `sk`: the end of the partition's range.
pub const SUBSCRIPTION_SK_END: &str = "SUB$";
/// A subscription item's sort key.
pub fn subscription_sk(subscription_id: &str) -> String {
    format!("{SUBSCRIPTION_SK_PREFIX}{subscription_id}")
}
/// The Stripe subscription id.
pub const SUBSCRIPTION_ID: &str = "subscription_id";
/// The subscription's observations, as JSON.
pub const SUBSCRIPTION_STATE: &str = "state";

// ----- usage-day item (`DAY#YYYYMMDD` in a key's partition), meter ledger, statistics -------

/// How a usage-day (or stats-day) item's sort key starts.
pub const DAY_SK_PREFIX: &str = "DAY#";
pub fn usage_day_sk(day_compact: &str) -> String {
    format!("{DAY_SK_PREFIX}{day_compact}")
}
/// The day, ISO-8601, for whoever reads the table by hand.
pub const DAY: &str = "day";
/// A day's allowed requests (usage days, ledgers, statistics days).
pub const ALLOWED: &str = "allowed";
/// A day's denied requests (usage days, ledgers, statistics days).
pub const DENIED: &str = "denied";

/// A customer's meter ledger for one day: `sk = USAGE#YYYYMMDD#<meter event name>` (empty
/// meter: history only), in the customer's partition, so a day range is one Query.
pub fn meter_day_sk(day_compact: &str, meter: Option<&str>) -> String {
    format!("{METER_DAY_PREFIX}{day_compact}#{}", meter.unwrap_or_default())
}
pub const METER_DAY_PREFIX: &str = "USAGE#";
/// The ledger's meter event name.
pub const METER: &str = "meter";
/// Allowed requests reported to Stripe.
pub const REPORTED: &str = "reported";
/// Allowed requests written off: never to be billed.
pub const UNBILLED: &str = "unbilled";
/// The report in flight (read back by `meter_ledger_from_item`): the value it reports.
pub const PEND_VALUE: &str = "pend_value";
/// The pending report: the ledger's `allowed` it brings `reported` up to.
pub const PEND_TO: &str = "pend_to";
/// The pending report: its idempotency identifier at Stripe.
pub const PEND_ID: &str = "pend_id";
/// The pending report: the meter event's timestamp.
pub const PEND_TS: &str = "pend_ts";
/// The pending report: the Stripe customer it is for.
pub const PEND_CUS: &str = "pend_cus";
/// The pending report's attributes, in `PendingReport` field order.
pub const PENDING_ATTRS: [&str; 5] = [PEND_VALUE, PEND_TO, PEND_ID, PEND_TS, PEND_CUS];

/// Tollgate-wide daily totals (`sk = DAY#YYYYMMDD`) and the keys near their quota
/// (`sk = NEAR`), written by the usage rollup, read by `GET /v1/stats`.
pub const STATS_PK: &str = "STATS";
pub const STATS_NEAR_SK: &str = "NEAR";
/// A stats day's keys with the most allowed requests (a list of maps).
pub const TOP_KEYS: &str = "top_keys";
/// A stats day's customers with the most allowed requests (a list of maps).
pub const TOP_CUSTOMERS: &str = "top_customers";
/// The near list's keys (a list of maps).
pub const NEAR_KEYS: &str = "keys";
/// A stats entry's key id (entry fields are one letter: a list of 100 stays small).
pub const ENTRY_KEY_ID: &str = "k";
/// A stats entry's customer id.
pub const ENTRY_CUSTOMER_ID: &str = "c";
/// A stats entry's allowed requests.
pub const ENTRY_ALLOWED: &str = "n";
/// A near-quota entry's requests used in the period.
pub const ENTRY_USED: &str = "u";
/// A near-quota entry's quota.
pub const ENTRY_LIMIT: &str = "l";
/// A near-quota entry's quota period.
pub const ENTRY_PERIOD: &str = "p";
/// A near-quota entry's period end (epoch seconds).
pub const ENTRY_RESET: &str = "r";

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

// ----- idempotency record: `IDEM#<scope>#<id>` / `IDEM` ------------------------------------

pub fn idempotency_pk(scope: &str, id: &str) -> String {
    format!("IDEM#{scope}#{id}")
}
pub const IDEMPOTENCY_SK: &str = "IDEM";
/// Where the operation is: `pending` or `done`.
pub const IDEMPOTENCY_STATE: &str = "state";
/// `state` while an attempt holds the record.
pub const IDEMPOTENCY_PENDING: &str = "pending";
/// `state` once the operation finished and its result is recorded.
pub const IDEMPOTENCY_DONE: &str = "done";
/// The attempt holding the record.
pub const OWNER: &str = "owner";
/// Until when (epoch seconds) the holding attempt's lease holds.
pub const LEASE_UNTIL: &str = "lease_until";
/// What the request was, so the same id with another request is refused.
pub const FINGERPRINT: &str = "fingerprint";
/// The finished operation's answer.
pub const RESULT: &str = "result";

/// The usage rollup's lease (one run at a time): an idempotency record in this scope.
pub const ROLLUP_LEASE_SCOPE: &str = "lease";
pub const ROLLUP_LEASE_ID: &str = "usage-rollup";

// ----- fan-out progress: `FANOUT#<kind>#<id>` / `FANOUT` -----------------------------------

/// Where a fan-out of a plan's or a customer's change (`kind`: `plan`, `customer`) got to.
pub fn fan_out_pk(kind: &str, id: &str) -> String {
    format!("FANOUT#{kind}#{id}")
}
/// The sort key of a fan-out progress item.
pub const FAN_OUT_SK: &str = "FANOUT";
/// The version of the plan or customer a fan-out copies.
pub const FAN_OUT_VERSION: &str = "version";
/// The last key id a fan-out finished (`~done`: all of them).
pub const FAN_OUT_AFTER: &str = "after";

// ----- bounded attempts: `LIMIT#<bucket>#<window end>` / `LIMIT` ---------------------------

/// A bounded-attempts counter: `LIMIT#<bucket>#<window end>` (e.g. `claim#session#cs_...`).
pub fn attempt_pk(bucket: &str, window_end: i64) -> String {
    format!("LIMIT#{bucket}#{window_end}")
}
pub const ATTEMPT_SK: &str = "LIMIT";
/// Attempts counted in the window.
pub const ATTEMPT_COUNT: &str = "n";
