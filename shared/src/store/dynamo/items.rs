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
            status: s_opt(item, SUB_STATUS)
                .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| StoreError::Corrupt("subscription status".into())))
                .transpose()?,
            grace_until: time_opt(item, SUB_GRACE_UNTIL)?,
        })
    }
}

/// The attributes that define a key (everything but its counters), each `None` when absent.
/// One list for create (Put) and update (SET/REMOVE), so the two can never disagree.
pub(super) fn key_definition(r: &KeyRecord) -> Vec<(&'static str, Option<AttributeValue>)> {
    let opt_s = |v: Option<&str>| v.map(s);
    let opt_n = |v: Option<i64>| v.map(n);
    vec![
        (KEY_ID, Some(s(r.key_id.as_str()))),
        (CUSTOMER_ID, Some(s(r.customer_id.as_str()))),
        (PLAN_ID, opt_s(r.own_plan_id.as_ref().map(PlanId::as_str))),
        (NAME, opt_s(r.name.as_deref())),
        (ENV, Some(s(r.env.as_str()))),
        (STATUS, Some(s(r.status.as_str()))),
        (HASH, Some(s(r.hash.to_hex()))),
        (DISPLAY, Some(s(r.display.clone()))),
        (CREATED_AT, Some(n(r.created_at.secs()))),
        (UPDATED_AT, Some(n(r.updated_at.secs()))),
        (EXPIRES_AT, opt_n(r.expires_at.map(UnixTime::secs))),
        (SCOPES, (!r.scopes.is_empty()).then(|| AttributeValue::L(r.scopes.iter().map(|v| s(v.clone())).collect()))),
        (
            METADATA,
            (!r.metadata.is_empty())
                .then(|| AttributeValue::M(r.metadata.iter().map(|(k, v)| (k.clone(), s(v.clone()))).collect())),
        ),
        (OVR_RL_LIMIT, r.overrides.rate_limit.map(|x| n(x.limit))),
        (OVR_RL_WINDOW, r.overrides.rate_limit.map(|x| n(x.window_s))),
        (OVR_Q_LIMIT, r.overrides.quota.map(|x| n(x.limit))),
        (OVR_Q_PERIOD, r.overrides.quota.map(|x| s(x.period.as_str()))),
        (PREV_HASH, r.rotation.map(|x| s(x.previous_hash.to_hex()))),
        (PREV_UNTIL, r.rotation.map(|x| n(x.grace_until.secs()))),
        (GOVERNING_PLAN, opt_s(r.limits.governing_plan_id.as_ref().map(PlanId::as_str))),
        (GSI2_PK, r.limits.governing_plan_id.as_ref().map(|p| s(plan_pk(p.as_str())))),
        (GSI2_SK, r.limits.governing_plan_id.as_ref().map(|_| s(r.key_id.as_str()))),
        (RL_LIMIT, r.limits.rate_limit.map(|x| n(x.limit))),
        (RL_WINDOW, r.limits.rate_limit.map(|x| n(x.window_s))),
        (Q_LIMIT, r.limits.quota.map(|x| n(x.limit))),
        (Q_PERIOD, r.limits.quota.map(|x| s(x.period.as_str()))),
        (SUB_STATUS, r.access.status.map(|x| s(x.as_str()))),
        (SUB_GRACE_UNTIL, r.access.grace_until.map(|x| n(x.secs()))),
    ]
}

/// The attributes of a key that its listings do not show, so the indexes do not project them
/// (a projection cannot change on a live index): read from the key item only, written with
/// its definition.
pub(super) fn key_unlisted(r: &KeyRecord) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![(DISABLED_BY, r.disabled_by.map(|a| s(a.as_str())))]
}

/// A new key's item: its definition, keys and index keys, at version 1.
pub(super) fn key_item(r: &KeyRecord) -> Item {
    let mut item: Item =
        key_definition(r).into_iter().chain(key_unlisted(r)).filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
    item.insert(PK.into(), s(key_pk(r.key_id.as_str())));
    item.insert(SK.into(), s(KEY_SK));
    item.insert(ITEM_TYPE.into(), s(ITEM_KEY));
    item.insert(VER.into(), n(1));
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
        (KEY_ID.to_owned(), s(key_id.as_str())),
    ])
}

impl TryFrom<&Item> for KeyRecord {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("key item: {what}"));
        Ok(KeyRecord {
            key_id: parse_key_id(req_s(item, KEY_ID)?)?,
            customer_id: CustomerId::parse(req_s(item, CUSTOMER_ID)?).map_err(|_| corrupt(CUSTOMER_ID))?,
            own_plan_id: plan_id_opt(item, PLAN_ID)?,
            name: s_opt(item, NAME).map(str::to_owned),
            env: req_s(item, ENV)?.parse::<KeyEnv>().map_err(|_| corrupt(ENV))?,
            status: KeyStatus::parse(req_s(item, STATUS)?).ok_or_else(|| corrupt(STATUS))?,
            disabled_by: s_opt(item, DISABLED_BY)
                .map(|a| Actor::parse(a).ok_or_else(|| corrupt(DISABLED_BY)))
                .transpose()?,
            hash: parse_hash(req_s(item, HASH)?)?,
            display: req_s(item, DISPLAY)?.to_owned(),
            created_at: time_opt(item, CREATED_AT)?.ok_or_else(|| corrupt(CREATED_AT))?,
            updated_at: time_opt(item, UPDATED_AT)?.ok_or_else(|| corrupt(UPDATED_AT))?,
            expires_at: time_opt(item, EXPIRES_AT)?,
            scopes: scopes(item)?,
            metadata: match item.get(METADATA) {
                Some(AttributeValue::M(m)) => m
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.as_s().map_err(|_| corrupt(METADATA))?.clone())))
                    .collect::<StoreResult<_>>()?,
                _ => BTreeMap::new(),
            },
            overrides: LimitOverrides {
                rate_limit: rate_opt(item, OVR_RL_LIMIT, OVR_RL_WINDOW)?,
                quota: quota_opt(item, OVR_Q_LIMIT, OVR_Q_PERIOD)?,
            },
            rotation: match (s_opt(item, PREV_HASH), time_opt(item, PREV_UNTIL)?) {
                (Some(h), Some(until)) => Some(Rotation { previous_hash: parse_hash(h)?, grace_until: until }),
                _ => None,
            },
            limits: EffectiveLimits {
                governing_plan_id: plan_id_opt(item, GOVERNING_PLAN)?,
                rate_limit: rate_opt(item, RL_LIMIT, RL_WINDOW)?,
                quota: quota_opt(item, Q_LIMIT, Q_PERIOD)?,
            },
            access: CustomerAccess::try_from(item)?,
            last_used_at: time_opt(item, LAST_USED)?,
        })
    }
}

/// A key's scopes (a list of strings; absent: none).
fn scopes(item: &Item) -> StoreResult<Vec<String>> {
    match item.get(SCOPES) {
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
            key_id: parse_key_id(req_s(item, KEY_ID)?)?,
            customer_id: CustomerId::parse(req_s(item, CUSTOMER_ID)?).map_err(|_| corrupt(CUSTOMER_ID))?,
            plan_id: plan_id_opt(item, GOVERNING_PLAN)?,
            status: KeyStatus::parse(req_s(item, STATUS)?).ok_or_else(|| corrupt(STATUS))?,
            expires_at: time_opt(item, EXPIRES_AT)?,
            current_hash: parse_hash(req_s(item, HASH)?)?,
            previous_hash: match (s_opt(item, PREV_HASH), time_opt(item, PREV_UNTIL)?) {
                (Some(h), Some(until)) => Some((parse_hash(h)?, until)),
                _ => None,
            },
            access: CustomerAccess::try_from(item)?,
            scopes: scopes(item)?,
            rate_limit: rate_opt(item, RL_LIMIT, RL_WINDOW)?,
            quota: quota_opt(item, Q_LIMIT, Q_PERIOD)?,
            counters: Counters {
                window_end: time_opt(item, WIN_END)?.unwrap_or(UnixTime(0)),
                window_count: u64_or(item, WIN_COUNT, 0)?,
                period_end: time_opt(item, Q_END)?.unwrap_or(UnixTime(0)),
                period_count: u64_or(item, Q_COUNT, 0)?,
            },
        })
    }
}

/// The attributes that define a plan, each `None` when absent (create and update share it).
pub(super) fn plan_definition(p: &Plan) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        (PLAN_ID, Some(s(p.id.as_str()))),
        (NAME, Some(s(p.name.clone()))),
        (CREATED_AT, Some(n(p.created_at.secs()))),
        (UPDATED_AT, Some(n(p.updated_at.secs()))),
        (RL_LIMIT, p.rate_limit.map(|r| n(r.limit))),
        (RL_WINDOW, p.rate_limit.map(|r| n(r.window_s))),
        (Q_LIMIT, p.quota.map(|q| n(q.limit))),
        (Q_PERIOD, p.quota.map(|q| s(q.period.as_str()))),
        (
            STRIPE_PRICE_IDS,
            (!p.stripe_price_ids.is_empty())
                .then(|| AttributeValue::L(p.stripe_price_ids.iter().map(|v| s(v.clone())).collect())),
        ),
        (METER_EVENT_NAME, p.meter_event_name.clone().map(s)),
        (MAX_KEYS, p.max_keys.map(n)),
    ]
}

pub(super) fn plan_item(p: &Plan) -> Item {
    let mut item: Item = plan_definition(p).into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
    item.insert(PK.to_owned(), s(plan_pk(p.id.as_str())));
    item.insert(SK.to_owned(), s(PLAN_SK));
    item.insert(ITEM_TYPE.to_owned(), s(ITEM_PLAN));
    item.insert(GSI3_PK.to_owned(), s(TYPE_PLANS));
    item.insert(GSI3_SK.to_owned(), s(p.id.as_str()));
    item
}

impl TryFrom<&Item> for Plan {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        Ok(Plan {
            id: plan_id_opt(item, PLAN_ID)?.ok_or_else(|| StoreError::Corrupt("plan item: plan_id".into()))?,
            name: req_s(item, NAME)?.to_owned(),
            rate_limit: rate_opt(item, RL_LIMIT, RL_WINDOW)?,
            quota: quota_opt(item, Q_LIMIT, Q_PERIOD)?,
            stripe_price_ids: match item.get(STRIPE_PRICE_IDS) {
                Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
                _ => vec![],
            },
            meter_event_name: s_opt(item, METER_EVENT_NAME).map(str::to_owned),
            max_keys: u64_opt(item, MAX_KEYS)?,
            created_at: time_opt(item, CREATED_AT)?.unwrap_or(UnixTime(0)),
            updated_at: time_opt(item, UPDATED_AT)?.unwrap_or(UnixTime(0)),
        })
    }
}

/// A new customer's item, at version 1, holding `access` (what its keys copy).
pub(super) fn customer_item(c: &Customer, access: CustomerAccess) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(customer_pk(c.customer_id.as_str()))),
        (SK.to_owned(), s(CUSTOMER_SK)),
        (ITEM_TYPE.to_owned(), s(ITEM_CUSTOMER)),
        (CUSTOMER_ID.to_owned(), s(c.customer_id.as_str())),
        (CREATED_AT.to_owned(), n(c.created_at.secs())),
        (VER.to_owned(), n(1)),
    ]);
    item.extend(customer_billing(c, access).into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
    item
}

/// A customer's billing and the access its keys copy (`Customer::access`), each `None` when
/// absent: what a new customer item holds, and what a billing write sets or removes.
pub(super) fn customer_billing(c: &Customer, access: CustomerAccess) -> [(&'static str, Option<AttributeValue>); 10] {
    [
        (STRIPE_CUSTOMER_ID, c.stripe_customer_id.clone().map(s)),
        (STRIPE_SUBSCRIPTION_ID, c.stripe_subscription_id.clone().map(s)),
        (SUBSCRIPTION_STATUS, c.subscription_status.map(|v| s(v.as_str()))),
        (PLAN_ID, c.plan_id.as_ref().map(|p| s(p.as_str()))),
        (CURRENT_PERIOD_END, c.current_period_end.map(|t| n(t.secs()))),
        (PAST_DUE_SINCE, c.past_due_since.map(|t| n(t.secs()))),
        (UNKNOWN_PRICE_ID, c.unknown_price_id.clone().map(s)),
        (UPDATED_AT, Some(n(c.updated_at.secs()))),
        (SUB_STATUS, access.status.map(|v| s(v.as_str()))),
        (SUB_GRACE_UNTIL, access.grace_until.map(|t| n(t.secs()))),
    ]
}

impl TryFrom<&Item> for Customer {
    type Error = StoreError;

    fn try_from(item: &Item) -> StoreResult<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("customer item: {what}"));
        Ok(Customer {
            customer_id: CustomerId::parse(req_s(item, CUSTOMER_ID)?).map_err(|_| corrupt(CUSTOMER_ID))?,
            stripe_customer_id: s_opt(item, STRIPE_CUSTOMER_ID).map(str::to_owned),
            stripe_subscription_id: s_opt(item, STRIPE_SUBSCRIPTION_ID).map(str::to_owned),
            subscription_status: s_opt(item, SUBSCRIPTION_STATUS)
                .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| corrupt(SUBSCRIPTION_STATUS)))
                .transpose()?,
            plan_id: plan_id_opt(item, PLAN_ID)?,
            current_period_end: time_opt(item, CURRENT_PERIOD_END)?,
            past_due_since: time_opt(item, PAST_DUE_SINCE)?,
            unknown_price_id: s_opt(item, UNKNOWN_PRICE_ID).map(str::to_owned),
            created_at: time_opt(item, CREATED_AT)?.unwrap_or(UnixTime(0)),
            updated_at: time_opt(item, UPDATED_AT)?.unwrap_or(UnixTime(0)),
        })
    }
}

/// A usage-day item (`DAY#YYYYMMDD` in a key's partition).
pub(super) fn usage_day_from_item(item: &Item) -> StoreResult<(Day, DayCount)> {
    let day = req_s(item, SK)?
        .strip_prefix(DAY_SK_PREFIX)
        .and_then(Day::parse_compact)
        .ok_or_else(|| StoreError::Corrupt("usage day".into()))?;
    Ok((day, day_count(item)?))
}

/// `allowed`, `denied` and `dc_<code>` of a usage-day, stats-day or ledger item.
pub(super) fn day_count(item: &Item) -> StoreResult<DayCount> {
    let mut count = DayCount::new(u64_or(item, ALLOWED, 0)?, u64_or(item, DENIED, 0)?);
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
            (LIVE_ALLOWED_PREFIX | LIVE_DENIED_PREFIX, None) | (DENIED_CODE_PREFIX, Some(_)) => parse_u64(value, name)?,
            _ => continue,
        };
        let entry = days.entry(day).or_default();
        match (kind, code) {
            (LIVE_ALLOWED_PREFIX, None) => entry.allowed = v,
            (LIVE_DENIED_PREFIX, None) => entry.denied = v,
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
    let pending = match (u64_opt(item, PEND_VALUE)?, s_opt(item, PEND_ID)) {
        (Some(value), Some(identifier)) => Some(PendingReport {
            value,
            to: u64_or(item, PEND_TO, 0)?,
            identifier: identifier.to_owned(),
            timestamp: u64_or(item, PEND_TS, 0)? as i64,
            stripe_customer_id: req_s(item, PEND_CUS)?.to_owned(),
        }),
        _ => None,
    };
    let ledger = MeterLedger {
        usage: day_count(item)?,
        reported: u64_or(item, REPORTED, 0)?,
        unbilled: u64_or(item, UNBILLED, 0)?,
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
