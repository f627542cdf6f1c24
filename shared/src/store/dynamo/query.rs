//! Queries: all pages of a partition or an index partition, and the reads built on them.

use super::errors::sdk_err;
use super::items::{parse_key_id, req_s, s, s_opt, usage_day_from_item};
use super::{DynamoStore, Item};
use crate::domain::api_key::KeyId;
use crate::domain::time::Day;
use crate::domain::usage::DayCount;
use crate::store::schema::*;
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use std::collections::BTreeMap;

impl DynamoStore {
    /// Every item a Query returns, all pages.
    pub(super) async fn query_pages(&self, query: QueryFluentBuilder) -> StoreResult<Vec<Item>> {
        let mut items = vec![];
        let mut start = None;
        loop {
            let out = query.clone().set_exclusive_start_key(start).send().await.map_err(sdk_err)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(items),
            }
        }
    }

    /// A strongly consistent Query of table partition `pk` with `lo <= sk <= hi`.
    pub(super) fn range(&self, pk: &str, lo: &str, hi: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .consistent_read(true)
    }

    /// Every item of table partition `pk` with `lo <= sk <= hi`, strongly consistent.
    pub(super) async fn query_range(&self, pk: &str, lo: &str, hi: &str) -> StoreResult<Vec<Item>> {
        self.query_pages(self.range(pk, lo, hi)).await
    }

    /// A key's usage-day items from `from` on (before `until` if given).
    pub(super) async fn usage_days(
        &self,
        key_id: &KeyId,
        from: Day,
        until: Option<Day>,
    ) -> StoreResult<BTreeMap<Day, DayCount>> {
        let hi = match until {
            Some(d) => usage_day_sk(&d.minus(1).compact()),
            None => usage_day_sk("99999999"),
        };
        let items = self.query_range(&key_pk(key_id.as_str()), &usage_day_sk(&from.compact()), &hi).await?;
        items
            .iter()
            .filter(|i| s_opt(i, SK).is_some_and(|sk| sk.starts_with(DAY_SK_PREFIX)))
            .map(usage_day_from_item)
            .collect()
    }

    /// Every item of one index partition.
    pub(super) async fn query_all(&self, index: &str, pk_attr: &str, pk_value: &str) -> StoreResult<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", pk_attr)
            .expression_attribute_values(":p", s(pk_value));
        self.query_pages(query).await
    }

    pub(super) async fn query_key_ids(&self, index: &str, pk_attr: &str, pk_value: &str) -> StoreResult<Vec<KeyId>> {
        self.query_all(index, pk_attr, pk_value)
            .await?
            .iter()
            .map(|item| {
                parse_key_id(
                    req_s(item, PK)?
                        .strip_prefix(KEY_PK_PREFIX)
                        .ok_or_else(|| StoreError::Corrupt("index entry".into()))?,
                )
            })
            .collect()
    }
}
