//! [`PlanStore`]: plans, their versions, and the fan-out that brings their keys in line.

use super::errors::sdk_err;
use super::expr::Expr;
use super::fanout;
use super::items::{n, plan_definition, plan_id_opt, plan_item, s};
use super::{DynamoStore, Versioned};
use crate::domain::plans::{Plan, PlanId};
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{FanOut, PlanStore, StoreError, StoreResult};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use std::time::Instant;

impl PlanStore for DynamoStore {
    async fn create_plan(&self, plan: &Plan) -> StoreResult<()> {
        // A plan deleted and made again starts at version 1: its predecessor's fan-out progress
        // (at some version, perhaps finished) must not be taken for this plan's.
        self.forget_fan_out(fanout::Governed::Plan(&plan.id)).await?;
        let mut item = plan_item(plan);
        item.insert(VER.into(), n(1));
        item.insert(REFS.into(), n(0));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::AlreadyExists("plan"))
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn update_plan(&self, plan: &Plan, now: UnixTime, deadline: Instant) -> StoreResult<FanOut> {
        let Versioned { value: stored, ver } =
            self.get_plan_versioned(&plan.id).await?.ok_or(StoreError::NotFound("plan"))?;
        let same = Plan { created_at: stored.created_at, updated_at: stored.updated_at, ..plan.clone() } == stored;
        let ver = if same {
            // A retried update: the version stays, so the fan-out below resumes.
            ver
        } else {
            // Only the definition changes: `created_at` and the reference count `refs` (moved by
            // key transactions at any moment) are never written here.
            let mut e = Expr::default();
            let fields = plan_definition(plan).into_iter().filter(|(name, _)| *name != CREATED_AT);
            let (assign, cond) = e.versioned(fields, ver);
            let update = assign.expression();
            if !self.conditional_update(&plan_pk(plan.id.as_str()), PLAN_SK, update, cond, e).await? {
                return Err(StoreError::Conflict("the plan changed concurrently; try again".into()));
            }
            ver + 1
        };
        self.fan_out(fanout::Governed::Plan(&plan.id), ver, now, deadline).await
    }

    async fn get_plan(&self, id: &PlanId) -> StoreResult<Option<Plan>> {
        Ok(self.get_plan_versioned(id).await?.map(|p| p.value))
    }

    /// The plan index names them; each is then read whole from the table, strongly consistent
    /// (the index projects only what key listings need, and a plan just made is listed at once).
    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        let indexed = self.query_all(GSI3, GSI3_PK, TYPE_PLANS).await?;
        let ids = indexed.iter().map(|item| plan_id_opt(item, PLAN_ID)).collect::<StoreResult<Vec<_>>>()?;
        let reads = ids.iter().flatten().map(|id| self.get_plan_versioned(id));
        let plans = futures_util::future::try_join_all(reads).await?;
        // A plan deleted between the two reads is simply not listed.
        Ok(plans.into_iter().flatten().map(|p| p.value).collect())
    }

    async fn delete_plan(&self, id: &PlanId) -> StoreResult<()> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(plan_pk(id.as_str())))
            .key(SK, s(PLAN_SK))
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#r) OR #r = :zero)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#r", REFS)
            .expression_attribute_values(":zero", n(0))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                let existed = match se.err() {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                        c.item().is_some()
                    }
                    _ => false,
                };
                if existed {
                    Err(StoreError::Conflict("the plan is in use by one or more keys".into()))
                } else {
                    Err(StoreError::NotFound("plan"))
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }
}
