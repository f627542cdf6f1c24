//! Every conversion between DynamoDB items and domain types: attribute helpers, then each
//! record's reading (`TryFrom<&Item>`) and writing.

use super::Item;
use crate::domain::api_key::{KeyEnv, KeyHash, KeyId};
use crate::domain::customers::{Customer, CustomerAccess, CustomerId, SubscriptionStatus};
use crate::domain::decision::{Counters, Denial, KeyState};
use crate::domain::key_records::{Actor, EffectiveLimits, KeyRecord, KeyStatus, LimitOverrides, Rotation};
use crate::domain::plans::{Period, Plan, PlanId, Quota, RateLimit};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, MeterDay, MeterLedger, PendingReport};
use crate::store::schema::*;
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn s_opt<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

pub(super) fn req_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    s_opt(item, name).ok_or_else(|| StoreError::Corrupt(format!("missing string attribute {name}")))
}

pub(super) fn parse_u64(v: &AttributeValue, name: &str) -> StoreResult<u64> {
    match v {
        AttributeValue::N(raw) => {
            raw.parse().map_err(|_| StoreError::Corrupt(format!("attribute {name} is not a count")))
        }
        _ => Err(StoreError::Corrupt(format!("attribute {name} is not a number"))),
    }
}

pub(super) fn u64_opt(item: &Item, name: &str) -> StoreResult<Option<u64>> {
    item.get(name).map(|v| parse_u64(v, name)).transpose()
}

pub(super) fn u64_or(item: &Item, name: &str, default: u64) -> StoreResult<u64> {
    Ok(u64_opt(item, name)?.unwrap_or(default))
}

pub(super) fn time_opt(item: &Item, name: &str) -> StoreResult<Option<UnixTime>> {
    match item.get(name) {
        Some(AttributeValue::N(raw)) => raw
            .parse()
            .map(|v| Some(UnixTime(v)))
            .map_err(|_| StoreError::Corrupt(format!("attribute {name} is not a time"))),
        Some(_) => Err(StoreError::Corrupt(format!("attribute {name} is not a number"))),
        None => Ok(None),
    }
}

pub(super) fn parse_key_id(s: &str) -> StoreResult<KeyId> {
    KeyId::parse(s).map_err(|_| StoreError::Corrupt("key id".into()))
}

pub(super) fn parse_hash(s: &str) -> StoreResult<KeyHash> {
    KeyHash::from_hex(s).map_err(|_| StoreError::Corrupt("key hash".into()))
}

pub(super) fn plan_id_opt(item: &Item, name: &str) -> StoreResult<Option<PlanId>> {
    s_opt(item, name).map(|p| PlanId::parse(p).map_err(|_| StoreError::Corrupt("plan id".into()))).transpose()
}

pub(super) fn rate_opt(item: &Item, limit: &str, window: &str) -> StoreResult<Option<RateLimit>> {
    Ok(match (u64_opt(item, limit)?, u64_opt(item, window)?) {
        (Some(limit), Some(window_s)) => Some(RateLimit { limit, window_s }),
        _ => None,
    })
}

pub(super) fn quota_opt(item: &Item, limit: &str, period: &str) -> StoreResult<Option<Quota>> {
    Ok(match (u64_opt(item, limit)?, s_opt(item, period)) {
        (Some(limit), Some(p)) => {
            Some(Quota { limit, period: Period::parse(p).ok_or_else(|| StoreError::Corrupt("quota period".into()))? })
        }
        _ => None,
    })
}

impl TryFrom<&Item> for CustomerAccess {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        Ok(CustomerAccess {
            status: s_opt(item, "sub_status")
                .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| StoreError::Corrupt("subscription status".into())))
                .transpose()?,
            grace_until: time_opt(item, "sub_grace_until")?,
        })
    }
}

/// The attributes that define a key (everything but its counters), each `None` when absent.
/// One list for create (Put) and update (SET/REMOVE), so the two can never disagree.
pub(super) fn key_definition(r: &KeyRecord) -> Vec<(&'static str, Option<AttributeValue>)> {
    let opt_s = |v: Option<&str>| v.map(s);
    let opt_n = |v: Option<i64>| v.map(n);
    vec![
        ("key_id", Some(s(r.key_id.as_str()))),
        ("customer_id", Some(s(r.customer_id.as_str()))),
        ("plan_id", opt_s(r.own_plan_id.as_ref().map(PlanId::as_str))),
        ("name", opt_s(r.name.as_deref())),
        ("env", Some(s(r.env.as_str()))),
        ("status", Some(s(r.status.as_str()))),
        ("hash", Some(s(r.hash.to_hex()))),
        ("display", Some(s(r.display.clone()))),
        ("created_at", Some(n(r.created_at.secs()))),
        ("updated_at", Some(n(r.updated_at.secs()))),
        ("expires_at", opt_n(r.expires_at.map(UnixTime::secs))),
        ("scopes", (!r.scopes.is_empty()).then(|| AttributeValue::L(r.scopes.iter().map(|v| s(v.clone())).collect()))),
        (
            "metadata",
            (!r.metadata.is_empty())
                .then(|| AttributeValue::M(r.metadata.iter().map(|(k, v)| (k.clone(), s(v.clone()))).collect())),
        ),
        ("ovr_rl_limit", r.overrides.rate_limit.map(|x| n(x.limit))),
        ("ovr_rl_window", r.overrides.rate_limit.map(|x| n(x.window_s))),
        ("ovr_q_limit", r.overrides.quota.map(|x| n(x.limit))),
        ("ovr_q_period", r.overrides.quota.map(|x| s(x.period.as_str()))),
        ("prev_hash", r.rotation.map(|x| s(x.previous_hash.to_hex()))),
        ("prev_until", r.rotation.map(|x| n(x.grace_until.secs()))),
        ("plan", opt_s(r.limits.governing_plan_id.as_ref().map(PlanId::as_str))),
        (GSI2_PK, r.limits.governing_plan_id.as_ref().map(|p| s(plan_pk(p.as_str())))),
        (GSI2_SK, r.limits.governing_plan_id.as_ref().map(|_| s(r.key_id.as_str()))),
        ("rl_limit", r.limits.rate_limit.map(|x| n(x.limit))),
        ("rl_window", r.limits.rate_limit.map(|x| n(x.window_s))),
        ("q_limit", r.limits.quota.map(|x| n(x.limit))),
        ("q_period", r.limits.quota.map(|x| s(x.period.as_str()))),
        ("sub_status", r.access.status.map(|x| s(x.as_str()))),
        ("sub_grace_until", r.access.grace_until.map(|x| n(x.secs()))),
    ]
}

/// The attributes of a key that its listings do not show, so the indexes do not project them
/// (a projection cannot change on a live index): read from the key item only, written with
/// its definition.
pub(super) fn key_unlisted(r: &KeyRecord) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![("disabled_by", r.disabled_by.map(|a| s(a.as_str())))]
}

/// A new key's item: its definition, keys and index keys, at version 1.
pub(super) fn key_item(r: &KeyRecord) -> Item {
    let mut item: Item =
        key_definition(r).into_iter().chain(key_unlisted(r)).filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
    item.insert(PK.into(), s(key_pk(r.key_id.as_str())));
    item.insert(SK.into(), s(KEY_SK));
    item.insert("type".into(), s("key"));
    item.insert("ver".into(), n(1));
    item.insert(GSI1_PK.into(), s(customer_pk(r.customer_id.as_str())));
    item.insert(GSI1_SK.into(), s(r.key_id.as_str()));
    item.insert(GSI3_PK.into(), s(TYPE_KEYS));
    item.insert(GSI3_SK.into(), s(r.key_id.as_str()));
    item
}

/// The item that finds a key by the hash of a secret it accepts.
pub(super) fn hash_item(hash: &KeyHash, key_id: &KeyId) -> Item {
    HashMap::from([
        (PK.to_owned(), s(hash_pk(&hash.to_hex()))),
        (SK.to_owned(), s(HASH_SK)),
        ("key_id".to_owned(), s(key_id.as_str())),
    ])
}

impl TryFrom<&Item> for KeyRecord {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key item: {what}"));
        Ok(KeyRecord {
            key_id: parse_key_id(req_s(item, "key_id")?)?,
            customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
            own_plan_id: plan_id_opt(item, "plan_id")?,
            name: s_opt(item, "name").map(str::to_owned),
            env: req_s(item, "env")?.parse::<KeyEnv>().map_err(|_| corrupt("env"))?,
            status: KeyStatus::parse(req_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
            disabled_by: s_opt(item, "disabled_by")
                .map(|a| Actor::parse(a).ok_or_else(|| corrupt("disabled_by")))
                .transpose()?,
            hash: parse_hash(req_s(item, "hash")?)?,
            display: req_s(item, "display")?.to_owned(),
            created_at: time_opt(item, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
            updated_at: time_opt(item, "updated_at")?.ok_or_else(|| corrupt("updated_at"))?,
            expires_at: time_opt(item, "expires_at")?,
            scopes: scopes(item)?,
            metadata: match item.get("metadata") {
                Some(AttributeValue::M(m)) => m
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.as_s().map_err(|_| corrupt("metadata"))?.clone())))
                    .collect::<StoreResult<_>>()?,
                _ => BTreeMap::new(),
            },
            overrides: LimitOverrides {
                rate_limit: rate_opt(item, "ovr_rl_limit", "ovr_rl_window")?,
                quota: quota_opt(item, "ovr_q_limit", "ovr_q_period")?,
            },
            rotation: match (s_opt(item, "prev_hash"), time_opt(item, "prev_until")?) {
                (Some(h), Some(until)) => Some(Rotation { previous_hash: parse_hash(h)?, grace_until: until }),
                _ => None,
            },
            limits: EffectiveLimits {
                governing_plan_id: plan_id_opt(item, "plan")?,
                rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
                quota: quota_opt(item, "q_limit", "q_period")?,
            },
            access: CustomerAccess::try_from(item)?,
            last_used_at: time_opt(item, "last_used")?,
        })
    }
}

/// A key's scopes (a list of strings; absent: none).
fn scopes(item: &Item) -> StoreResult<Vec<String>> {
    match item.get("scopes") {
        Some(AttributeValue::L(l)) => {
            l.iter().map(|v| v.as_s().cloned().map_err(|_| StoreError::Corrupt("key item: scopes".into()))).collect()
        }
        _ => Ok(vec![]),
    }
}

/// The narrow view the authorizer decides from. Reads only what a decision needs, so the
/// hot path does no work on names or metadata.
impl TryFrom<&Item> for KeyState {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key item: {what}"));
        Ok(KeyState {
            key_id: parse_key_id(req_s(item, "key_id")?)?,
            customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
            plan_id: plan_id_opt(item, "plan")?,
            status: KeyStatus::parse(req_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
            expires_at: time_opt(item, "expires_at")?,
            current_hash: parse_hash(req_s(item, "hash")?)?,
            previous_hash: match (s_opt(item, "prev_hash"), time_opt(item, "prev_until")?) {
                (Some(h), Some(until)) => Some((parse_hash(h)?, until)),
                _ => None,
            },
            access: CustomerAccess::try_from(item)?,
            scopes: scopes(item)?,
            rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
            quota: quota_opt(item, "q_limit", "q_period")?,
            counters: Counters {
                window_end: time_opt(item, "win_end")?.unwrap_or(UnixTime(0)),
                window_count: u64_or(item, "win_count", 0)?,
                period_end: time_opt(item, "q_end")?.unwrap_or(UnixTime(0)),
                period_count: u64_or(item, "q_count", 0)?,
            },
        })
    }
}

/// The attributes that define a plan, each `None` when absent (create and update share it).
pub(super) fn plan_definition(p: &Plan) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("plan_id", Some(s(p.id.as_str()))),
        ("name", Some(s(p.name.clone()))),
        ("created_at", Some(n(p.created_at.secs()))),
        ("updated_at", Some(n(p.updated_at.secs()))),
        ("rl_limit", p.rate_limit.map(|r| n(r.limit))),
        ("rl_window", p.rate_limit.map(|r| n(r.window_s))),
        ("q_limit", p.quota.map(|q| n(q.limit))),
        ("q_period", p.quota.map(|q| s(q.period.as_str()))),
        (
            "stripe_price_ids",
            (!p.stripe_price_ids.is_empty())
                .then(|| AttributeValue::L(p.stripe_price_ids.iter().map(|v| s(v.clone())).collect())),
        ),
        ("meter_event_name", p.meter_event_name.clone().map(s)),
        ("max_keys", p.max_keys.map(n)),
    ]
}

pub(super) fn plan_item(p: &Plan) -> Item {
    let mut item: Item = plan_definition(p).into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
    item.insert(PK.to_owned(), s(plan_pk(p.id.as_str())));
    item.insert(SK.to_owned(), s(PLAN_SK));
    item.insert("type".to_owned(), s("plan"));
    item.insert(GSI3_PK.to_owned(), s(TYPE_PLANS));
    item.insert(GSI3_SK.to_owned(), s(p.id.as_str()));
    item
}

impl TryFrom<&Item> for Plan {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        Ok(Plan {
            id: plan_id_opt(item, "plan_id")?.ok_or_else(|| StoreError::Corrupt("plan item: plan_id".into()))?,
            name: req_s(item, "name")?.to_owned(),
            rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
            quota: quota_opt(item, "q_limit", "q_period")?,
            stripe_price_ids: match item.get("stripe_price_ids") {
                Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
                _ => vec![],
            },
            meter_event_name: s_opt(item, "meter_event_name").map(str::to_owned),
            max_keys: u64_opt(item, "max_keys")?,
            created_at: time_opt(item, "created_at")?.unwrap_or(UnixTime(0)),
            updated_at: time_opt(item, "updated_at")?.unwrap_or(UnixTime(0)),
        })
    }
}

pub(super) fn customer_item(c: &Customer, access: Option<CustomerAccess>) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(customer_pk(c.customer_id.as_str()))),
        (SK.to_owned(), s(CUSTOMER_SK)),
        ("type".to_owned(), s("customer")),
        ("customer_id".to_owned(), s(c.customer_id.as_str())),
        ("created_at".to_owned(), n(c.created_at.secs())),
        ("updated_at".to_owned(), n(c.updated_at.secs())),
        ("ver".to_owned(), n(1)),
    ]);
    let mut put = |k: &str, v: Option<AttributeValue>| {
        if let Some(v) = v {
            item.insert(k.to_owned(), v);
        }
    };
    put("stripe_customer_id", c.stripe_customer_id.clone().map(s));
    put("stripe_subscription_id", c.stripe_subscription_id.clone().map(s));
    put("subscription_status", c.subscription_status.map(|v| s(v.as_str())));
    put("plan_id", c.plan_id.as_ref().map(|p| s(p.as_str())));
    put("current_period_end", c.current_period_end.map(|t| n(t.secs())));
    put("past_due_since", c.past_due_since.map(|t| n(t.secs())));
    put("unknown_price_id", c.unknown_price_id.clone().map(s));
    if let Some(a) = access {
        put("sub_status", a.status.map(|v| s(v.as_str())));
        put("sub_grace_until", a.grace_until.map(|t| n(t.secs())));
    }
    item
}

impl TryFrom<&Item> for Customer {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("customer item: {what}"));
        Ok(Customer {
            customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
            stripe_customer_id: s_opt(item, "stripe_customer_id").map(str::to_owned),
            stripe_subscription_id: s_opt(item, "stripe_subscription_id").map(str::to_owned),
            subscription_status: s_opt(item, "subscription_status")
                .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| corrupt("subscription_status")))
                .transpose()?,
            plan_id: plan_id_opt(item, "plan_id")?,
            current_period_end: time_opt(item, "current_period_end")?,
            past_due_since: time_opt(item, "past_due_since")?,
            unknown_price_id: s_opt(item, "unknown_price_id").map(str::to_owned),
            created_at: time_opt(item, "created_at")?.unwrap_or(UnixTime(0)),
            updated_at: time_opt(item, "updated_at")?.unwrap_or(UnixTime(0)),
        })
    }
}

/// A usage-day item (`DAY#YYYYMMDD` in a key's partition).
pub(super) fn usage_day_from_item(item: &Item) -> StoreResult<(Day, DayCount)> {
    let day = req_s(item, SK)?
        .strip_prefix("DAY#")
        .and_then(Day::parse_compact)
        .ok_or_else(|| StoreError::Corrupt("usage day".into()))?;
    Ok((day, day_count(item)?))
}

/// `allowed`, `denied` and `dc_<code>` of a usage-day, stats-day or ledger item.
pub(super) fn day_count(item: &Item) -> StoreResult<DayCount> {
    let mut count = DayCount::new(u64_or(item, "allowed", 0)?, u64_or(item, "denied", 0)?);
    for (i, denial) in Denial::RECORDED.iter().enumerate() {
        count.denied_by[i] = u64_or(item, &denied_code_attr(denial.code()), 0)?;
    }
    Ok(count)
}

/// The live `ua_YYYYMMDD`, `ud_YYYYMMDD` and `dc_YYYYMMDD_<code>` counters of a key item.
pub(super) fn live_days(item: &Item) -> StoreResult<BTreeMap<Day, DayCount>> {
    let mut days: BTreeMap<Day, DayCount> = BTreeMap::new();
    for (name, value) in item {
        let Some((kind, rest)) = name.split_once('_') else { continue };
        let (compact, code) = rest.split_once('_').map_or((rest, None), |(d, c)| (d, Some(c)));
        let Some(day) = Day::parse_compact(compact) else { continue };
        let v = match (kind, code) {
            ("ua" | "ud", None) | ("dc", Some(_)) => parse_u64(value, name)?,
            _ => continue,
        };
        let entry = days.entry(day).or_default();
        match (kind, code) {
            ("ua", None) => entry.allowed = v,
            ("ud", None) => entry.denied = v,
            (_, Some(code)) => {
                if let Some(i) = Denial::RECORDED.iter().position(|d| d.code() == code) {
                    entry.denied_by[i] = v;
                }
            }
            _ => {}
        }
    }
    Ok(days)
}

/// A meter ledger item (`USAGE#YYYYMMDD#<meter>` in a customer's partition).
pub(super) fn meter_ledger_from_item(customer_id: &CustomerId, item: &Item) -> StoreResult<(MeterDay, MeterLedger)> {
    let corrupt = || StoreError::Corrupt("meter ledger".into());
    let rest = req_s(item, SK)?.strip_prefix(METER_DAY_PREFIX).ok_or_else(corrupt)?;
    let (day, meter) = rest.split_once('#').ok_or_else(corrupt)?;
    let day = Day::parse_compact(day).ok_or_else(corrupt)?;
    let pending = match (u64_opt(item, "pend_value")?, s_opt(item, "pend_id")) {
        (Some(value), Some(identifier)) => Some(PendingReport {
            value,
            to: u64_or(item, "pend_to", 0)?,
            identifier: identifier.to_owned(),
            timestamp: u64_or(item, "pend_ts", 0)? as i64,
            stripe_customer_id: req_s(item, "pend_cus")?.to_owned(),
        }),
        _ => None,
    };
    let ledger = MeterLedger {
        usage: day_count(item)?,
        reported: u64_or(item, "reported", 0)?,
        unbilled: u64_or(item, "unbilled", 0)?,
        pending,
    };
    let meter = (!meter.is_empty()).then(|| meter.to_owned());
    Ok((MeterDay { customer_id: customer_id.clone(), day, meter }, ledger))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_indexes_project_every_definition_attribute_and_no_counter() {
        let record = KeyRecord {
            key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
            customer_id: CustomerId::parse("acme").unwrap(),
            own_plan_id: None,
            name: None,
            env: KeyEnv::Live,
            status: KeyStatus::Active,
            disabled_by: Some(Actor::Operator),
            hash: KeyHash::from_hex(&"ab".repeat(32)).unwrap(),
            display: "tg_live_...abcd".into(),
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
            expires_at: None,
            scopes: vec![],
            metadata: BTreeMap::new(),
            overrides: LimitOverrides::default(),
            rotation: None,
            limits: EffectiveLimits::default(),
            access: CustomerAccess::default(),
            last_used_at: None,
        };
        for (name, _) in key_definition(&record) {
            if name == GSI2_PK || name == GSI2_SK {
                continue;
            }
            assert!(KEY_LISTING_ATTRS.contains(&name), "gsi1 must project {name}");
            assert!(listing_attrs().contains(&name), "gsi3 must project {name}");
        }
        let plan = Plan {
            id: PlanId::parse("p").unwrap(),
            name: "P".into(),
            rate_limit: None,
            quota: None,
            stripe_price_ids: vec![],
            meter_event_name: None,
            max_keys: None,
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
        };
        // Plans are listed by id from gsi3 and read whole from the table (`list_plans`), so a
        // plan attribute added later (max_keys) needs no projection; those projected stay.
        for (name, _) in plan_definition(&plan).into_iter().filter(|(n, _)| *n != "max_keys") {
            assert!(listing_attrs().contains(&name), "gsi3 projects {name}");
        }
        for (name, _) in key_unlisted(&record) {
            assert!(!KEY_LISTING_ATTRS.contains(&name), "{name} is read from the key item only");
        }
        for counter in
            ["win_end", "win_count", "q_end", "q_count", "n_allowed", "n_denied", "last_req", "last_used", ACTIVITY_PK]
        {
            assert!(!listing_attrs().contains(&counter) && !KEY_LISTING_ATTRS.contains(&counter), "{counter}");
        }
    }
}
