//! [`AttemptStore`] over the table: one counter item per (bucket, fixed window), counted with
//! a conditional `ADD` that refuses past the limit, and removed by DynamoDB's TTL after its
//! window. Used to bound the public Checkout claim per session id and per source address.

use super::DynamoStore;
use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{n, s};
use crate::domain::limits::window_end;
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{Attempt, AttemptStore, StoreResult};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

impl AttemptStore for DynamoStore {
    async fn attempt(&self, bucket: &str, limit: u64, window_s: u64, now: UnixTime) -> StoreResult<Attempt> {
        let end = window_end(now, window_s);
        let mut e = Expr::default();
        let count = e.name(ATTEMPT_COUNT);
        let (one, max, ttl) = (e.value(n(1)), e.value(n(limit)), e.value(n(end.plus(3_600).secs())));
        let update = format!("ADD {count} {one} SET {} = {ttl}", e.name(TTL));
        let condition = format!("attribute_not_exists({count}) OR {count} < {max}");
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(PK, s(attempt_pk(bucket, end.secs())))
            .key(SK, s(ATTEMPT_SK))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Attempt::Allowed),
            Err(err) if err.as_service_error().is_some_and(UpdateItemError::is_conditional_check_failed_exception) => {
                Ok(Attempt::Exhausted { retry_after: now.until(end) })
            }
            Err(err) => Err(sdk_err(err)),
        }
    }
}
