//! [`IdempotencyStore`]: a record per operation, taken with a lease, finished with its result
//! or released.

use super::DynamoStore;
use super::errors::sdk_err;
use super::items::{n, s, s_opt};
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{IdempotencyStore, Reservation, Reserve, StoreError, StoreResult};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use std::collections::HashMap;

impl IdempotencyStore for DynamoStore {
    async fn reserve(&self, req: Reserve<'_>) -> StoreResult<Reservation> {
        let Reserve { scope, id, owner, fingerprint, lease_s, expires_at, now } = req;
        let item = HashMap::from([
            (PK.to_owned(), s(idempotency_pk(scope, id))),
            (SK.to_owned(), s(IDEMPOTENCY_SK)),
            (IDEMPOTENCY_STATE.to_owned(), s(IDEMPOTENCY_PENDING)),
            (OWNER.to_owned(), s(owner)),
            (FINGERPRINT.to_owned(), s(fingerprint)),
            (LEASE_UNTIL.to_owned(), n(now.plus(lease_s as i64).secs())),
            (EXPIRES_AT.to_owned(), n(expires_at.secs())),
            (TTL.to_owned(), n(expires_at.secs())),
        ]);
        // Free when absent, expired (TTL deletion can lag by days), or a pending reservation whose
        // holder's lease ran out (it crashed).
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now OR (#st = :pending AND #lease <= :now)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_names("#st", IDEMPOTENCY_STATE)
            .expression_attribute_names("#lease", LEASE_UNTIL)
            .expression_attribute_values(":now", n(now.secs()))
            .expression_attribute_values(":pending", s(IDEMPOTENCY_PENDING))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Reservation::Fresh),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                let old = match se.err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        c.item().cloned()
                    }
                    _ => None,
                };
                let old = match old {
                    Some(o) => o,
                    None => self.get(idempotency_pk(scope, id), IDEMPOTENCY_SK).await?.unwrap_or_default(),
                };
                let fingerprint = s_opt(&old, FINGERPRINT).unwrap_or_default().to_owned();
                match s_opt(&old, IDEMPOTENCY_STATE) {
                    Some(IDEMPOTENCY_DONE) => Ok(Reservation::Done {
                        fingerprint,
                        result: s_opt(&old, RESULT).unwrap_or_default().to_owned(),
                    }),
                    // Our own put, applied by an attempt whose answer was lost (a timeout the
                    // SDK retried): the reservation is ours.
                    Some(IDEMPOTENCY_PENDING) if s_opt(&old, OWNER) == Some(owner) => Ok(Reservation::Fresh),
                    _ => Ok(Reservation::InProgress { fingerprint }),
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn finish(&self, scope: &str, id: &str, owner: &str, result: &str, expires_at: UnixTime) -> StoreResult<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(scope, id)))
            .key(SK, s(IDEMPOTENCY_SK))
            .update_expression("SET #st = :done, #res = :res, #exp = :exp, #ttl = :exp REMOVE #lease")
            .condition_expression("#st = :pending AND #owner = :owner")
            .expression_attribute_names("#st", IDEMPOTENCY_STATE)
            .expression_attribute_names("#res", RESULT)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#lease", LEASE_UNTIL)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":done", s(IDEMPOTENCY_DONE))
            .expression_attribute_values(":pending", s(IDEMPOTENCY_PENDING))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":res", s(result))
            .expression_attribute_values(":exp", n(expires_at.secs()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict("the idempotency reservation was lost to another attempt".into()))
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn release(&self, scope: &str, id: &str, owner: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(scope, id)))
            .key(SK, s(IDEMPOTENCY_SK))
            .condition_expression("#st = :pending AND #owner = :owner")
            .expression_attribute_names("#st", IDEMPOTENCY_STATE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":pending", s(IDEMPOTENCY_PENDING))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) {
                    Ok(())
                } else {
                    Err(sdk_err(e))
                }
            })
    }
}
