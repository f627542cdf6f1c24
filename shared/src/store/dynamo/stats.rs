//! Tollgate-wide statistics (docs/data-model.md, "Statistics"): one item per UTC day
//! (`STATS` / `DAY#YYYYMMDD`: totals by ADD, top lists by SET) and one near-quota list
//! (`STATS` / `NEAR`), so the overview is one Query however many keys there are.

use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{day_count, n, parse_key_id, req_s, s, u64_or};
use super::rollup::add_counts;
use super::{DynamoStore, Item};
use crate::domain::customers::CustomerId;
use crate::domain::plans::Period;
use crate::domain::stats::{NearQuota, Stats, StatsDay, TopCustomer, TopKey};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, HISTORY_DAYS};
use crate::store::schema::*;
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

impl DynamoStore {
    pub(super) async fn read_stats(&self, from: Day, to: Day) -> StoreResult<Stats> {
        // "DAY#…" sorts before "NEAR": the days and the near list in one Query.
        let items = self.query_range(STATS_PK, &usage_day_sk(&from.compact()), STATS_NEAR_SK).await?;
        let mut stats = Stats::default();
        for item in &items {
            let sk = req_s(item, SK)?;
            if sk == STATS_NEAR_SK {
                stats.near_quota = list(item, NEAR_KEYS, near_from)?;
                continue;
            }
            let day = sk
                .strip_prefix(DAY_SK_PREFIX)
                .and_then(Day::parse_compact)
                .ok_or_else(|| StoreError::Corrupt(format!("stats item {sk}")))?;
            if day > to {
                continue;
            }
            let top_keys = list(item, TOP_KEYS, top_key_from)?;
            let top_customers = list(item, TOP_CUSTOMERS, top_customer_from)?;
            stats.days.insert(day, StatsDay { count: day_count(item)?, top_keys, top_customers });
        }
        Ok(stats)
    }

    pub(super) async fn write_day_stats(
        &self,
        day: Day,
        delta: DayCount,
        top_keys: &[TopKey],
        top_customers: &[TopCustomer],
    ) -> StoreResult<()> {
        let mut e = Expr::default();
        let keys = AttributeValue::L(top_keys.iter().map(top_key_item).collect());
        let customers = AttributeValue::L(top_customers.iter().map(top_customer_item).collect());
        let expires = day.next().start().plus((HISTORY_DAYS + 1) * 86_400).secs();
        let set = [
            format!("{} = {}", e.name(TOP_KEYS), e.value(keys)),
            format!("{} = {}", e.name(TOP_CUSTOMERS), e.value(customers)),
            format!("{} = {}", e.name(DAY), e.value(s(day.iso()))),
            format!("{} = {}", e.name(TTL), e.value(n(expires))),
        ];
        let update = format!("ADD {} SET {}", add_counts(&mut e, &delta), set.join(", "));
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(STATS_PK))
            .key(SK, s(usage_day_sk(&day.compact())))
            .update_expression(update)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    pub(super) async fn write_near_quota(&self, near: &[NearQuota]) -> StoreResult<()> {
        let item: Item = HashMap::from([
            (PK.to_owned(), s(STATS_PK)),
            (SK.to_owned(), s(STATS_NEAR_SK)),
            (NEAR_KEYS.to_owned(), AttributeValue::L(near.iter().map(near_item).collect())),
        ]);
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(sdk_err)?;
        Ok(())
    }
}

/// A list attribute of maps, each converted by `from` (absent: empty).
fn list<T>(item: &Item, name: &str, from: fn(&Item) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    match item.get(name) {
        None => Ok(vec![]),
        Some(AttributeValue::L(entries)) => entries
            .iter()
            .map(|v| match v {
                AttributeValue::M(m) => from(m),
                _ => Err(StoreError::Corrupt(format!("stats {name} entry"))),
            })
            .collect(),
        Some(_) => Err(StoreError::Corrupt(format!("stats {name}"))),
    }
}

fn customer(m: &Item) -> StoreResult<CustomerId> {
    CustomerId::parse(req_s(m, ENTRY_CUSTOMER_ID)?).map_err(|_| StoreError::Corrupt("stats customer id".into()))
}

fn top_key_item(k: &TopKey) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        (ENTRY_KEY_ID.to_owned(), s(k.key_id.as_str())),
        (ENTRY_CUSTOMER_ID.to_owned(), s(k.customer_id.as_str())),
        (ENTRY_ALLOWED.to_owned(), n(k.allowed)),
    ]))
}

fn top_key_from(m: &Item) -> StoreResult<TopKey> {
    Ok(TopKey {
        key_id: parse_key_id(req_s(m, ENTRY_KEY_ID)?)?,
        customer_id: customer(m)?,
        allowed: u64_or(m, ENTRY_ALLOWED, 0)?,
    })
}

fn top_customer_item(c: &TopCustomer) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        (ENTRY_CUSTOMER_ID.to_owned(), s(c.customer_id.as_str())),
        (ENTRY_ALLOWED.to_owned(), n(c.allowed)),
    ]))
}

fn top_customer_from(m: &Item) -> StoreResult<TopCustomer> {
    Ok(TopCustomer { customer_id: customer(m)?, allowed: u64_or(m, ENTRY_ALLOWED, 0)? })
}

fn near_item(q: &NearQuota) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        (ENTRY_KEY_ID.to_owned(), s(q.key_id.as_str())),
        (ENTRY_CUSTOMER_ID.to_owned(), s(q.customer_id.as_str())),
        (ENTRY_USED.to_owned(), n(q.used)),
        (ENTRY_LIMIT.to_owned(), n(q.limit)),
        (ENTRY_PERIOD.to_owned(), s(q.period.as_str())),
        (ENTRY_RESET.to_owned(), n(q.reset.secs())),
    ]))
}

fn near_from(m: &Item) -> StoreResult<NearQuota> {
    Ok(NearQuota {
        key_id: parse_key_id(req_s(m, ENTRY_KEY_ID)?)?,
        customer_id: customer(m)?,
        used: u64_or(m, ENTRY_USED, 0)?,
        limit: u64_or(m, ENTRY_LIMIT, 0)?,
        period: Period::parse(req_s(m, ENTRY_PERIOD)?)
            .ok_or_else(|| StoreError::Corrupt("stats near period".into()))?,
        reset: UnixTime(u64_or(m, ENTRY_RESET, 0)? as i64),
    })
}
