//! Conditional writes: TransactWriteItems sent again on a transaction conflict, the items
//! transactions are made of, and the one loop that re-reads and retries a write whose
//! version guard failed.

use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{n, s};
use super::{DynamoStore, Item};
use crate::domain::customers::CustomerId;
use crate::store::schema::*;
use crate::store::{Fault, Outage, StoreError, StoreResult};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use std::time::Duration;

/// Optimistic-concurrency retries for management writes.
pub(super) const MANAGEMENT_ATTEMPTS: usize = 4;
/// Sends of one transaction that conflicted with another (see `DynamoStore::transact`).
pub(super) const TX_CONFLICT_ATTEMPTS: usize = 5;

pub(super) enum TxError {
    /// Per transaction item: did its condition fail?
    ConditionFailed(Vec<bool>),
    Store(StoreError),
}

/// Runs one optimistic attempt (read, decide, write guarded by what was read) until it
/// answers, at most [`MANAGEMENT_ATTEMPTS`] times. An attempt answers `Ok(None)` when a guard
/// failed because something it read changed, and is then made again from a fresh read.
/// `what` names what changed, for the error when every attempt lost.
pub(super) async fn retry_on_conflict<T, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> StoreResult<T>
where
    Fut: Future<Output = StoreResult<Option<T>>>,
{
    for _ in 0..MANAGEMENT_ATTEMPTS {
        if let Some(done) = attempt().await? {
            return Ok(done);
        }
    }
    Err(StoreError::Conflict(format!("{what} changed concurrently; try again")))
}

impl DynamoStore {
    /// One TransactWriteItems. A transaction cancelled only because another one held an item
    /// (`TransactionConflict`: fan-outs refresh keys of one customer or plan side by side, and
    /// each checks that item) wrote nothing, so it is sent again after a short random pause,
    /// up to [`TX_CONFLICT_ATTEMPTS`] times.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(tc)) = e.as_service_error() else {
                return Err(TxError::Store(sdk_err(e)));
            };
            let code = |r: &aws_sdk_dynamodb::types::CancellationReason| r.code().unwrap_or("").to_owned();
            let reasons: Vec<bool> =
                tc.cancellation_reasons().iter().map(|r| code(r) == "ConditionalCheckFailed").collect();
            if reasons.iter().any(|&failed| failed) {
                return Err(TxError::ConditionFailed(reasons));
            }
            let codes: Vec<String> = tc.cancellation_reasons().iter().map(code).collect();
            let conflict = codes.iter().any(|c| c == "TransactionConflict");
            if !conflict || attempt >= TX_CONFLICT_ATTEMPTS {
                // Conflicts persisted, or cancelled for another reason: throttling and conflicts
                // are load (retry later); a validation or size failure will not pass on retry.
                let fault = if codes.iter().any(|c| c == "ThrottlingError" || c == "ProvisionedThroughputExceeded") {
                    Some(Fault::Throttled)
                } else if conflict {
                    Some(Fault::Contention)
                } else if codes.iter().all(|c| c.is_empty() || c == "None") {
                    Some(Fault::Server)
                } else {
                    None
                };
                return Err(TxError::Store(match fault {
                    Some(fault) => StoreError::Unavailable(Outage::caused_by(fault, e)),
                    None => StoreError::Backend(format!("transaction cancelled: {codes:?}").into()),
                }));
            }
            tokio::time::sleep(Duration::from_millis(5 + rand::random::<u64>() % (20 * attempt as u64))).await;
        }
    }

    /// One conditional UpdateItem as a transaction item.
    pub(super) fn tx_update(
        &self,
        pk: String,
        sk: &str,
        update: String,
        cond: String,
        e: Expr,
    ) -> StoreResult<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    pub(super) fn put_if_absent(&self, item: Item) -> StoreResult<TransactWriteItem> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    /// A transaction item that writes nothing and holds only while the item's `attr` is `ver`
    /// (`None`: while it has no `attr`).
    pub(super) fn version_check(
        &self,
        pk: String,
        sk: &str,
        attr: &str,
        ver: Option<u64>,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let v = e.name(attr);
        let cond = match ver {
            Some(ver) => format!("{v} = {}", e.value(n(ver))),
            None => format!("attribute_not_exists({v})"),
        };
        let c = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .condition_expression(cond)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().condition_check(c).build())
    }

    /// Holds only while the customer is at version `ver` (what a key copied from it).
    pub(super) fn customer_version_check(&self, id: &CustomerId, ver: u64) -> StoreResult<TransactWriteItem> {
        self.version_check(customer_pk(id.as_str()), CUSTOMER_SK, VER, Some(ver))
    }

    /// One conditional UpdateItem; false when its condition failed.
    pub(super) async fn conditional_update(
        &self,
        pk: &str,
        sk: &str,
        update: String,
        cond: String,
        e: Expr,
    ) -> StoreResult<bool> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(err) => Err(sdk_err(err)),
        }
    }
}
