//! `/v1/plans`: create, list, read, replace (its keys follow) and delete (refused while keys use it).

use super::{Api, ManagementStore, Reply, ok, to_json};
use crate::error::ApiError;
use crate::extract::{Admin, Id, Json, JsonOrEmpty, Now, Reader};
use crate::json::{EmptyInput, PlanInput};
use crate::views::PlanView;
use http::StatusCode;
use serde_json::json;
use shared::domain::plans::{Plan, PlanId};
use shared::domain::time::UnixTime;
use shared::store::StoreError;
use std::time::Instant;

pub(super) async fn list<S: ManagementStore>(api: Api<S>, _: Reader) -> Reply {
    let plans = api.store.list_plans().await?;
    ok(StatusCode::OK, json!({ "items": plans.iter().map(PlanView::from).collect::<Vec<_>>() }))
}

pub(super) async fn create<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Now(now): Now,
    Json(input): Json<PlanInput>,
) -> Reply {
    let id = input.id.clone().ok_or_else(|| ApiError::invalid("id", "missing field `id`"))?;
    let plan = plan_from(id, input, now, now)?;
    api.store.create_plan(&plan).await.map_err(|e| match e {
        StoreError::AlreadyExists(_) => ApiError::Conflict(format!("plan {} already exists", plan.id)),
        e => e.into(),
    })?;
    ok(StatusCode::CREATED, to_json(&PlanView::from(&plan)))
}

pub(super) async fn get<S: ManagementStore>(api: Api<S>, _: Reader, Id(id): Id<PlanId>) -> Reply {
    let plan = api.store.get_plan(&id).await?.ok_or(ApiError::NotFound("plan"))?;
    ok(StatusCode::OK, to_json(&PlanView::from(&plan)))
}

/// Replaces a plan's definition; its keys follow, within the request's fan-out budget.
pub(super) async fn put<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Id(id): Id<PlanId>,
    Now(now): Now,
    Json(input): Json<PlanInput>,
) -> Reply {
    if input.id.as_ref().is_some_and(|body_id| *body_id != id) {
        return Err(ApiError::invalid("id", "must match the plan id in the path (plan ids cannot change)"));
    }
    let existing = api.store.get_plan(&id).await?.ok_or(ApiError::NotFound("plan"))?;
    let plan = plan_from(id, input, existing.created_at, now)?;
    let fanout = api.store.update_plan(&plan, now, Instant::now() + super::FANOUT_BUDGET).await?;
    if !fanout.complete {
        return Err(ApiError::Unfinished(format!(
            "The plan is saved and {} of its keys were updated; send the same request again to update the rest.",
            fanout.visited
        )));
    }
    ok(StatusCode::OK, to_json(&PlanView::from(&plan)))
}

pub(super) async fn delete<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Id(id): Id<PlanId>,
    JsonOrEmpty(EmptyInput {}): JsonOrEmpty<EmptyInput>,
) -> Reply {
    api.store.delete_plan(&id).await?;
    ok(StatusCode::NO_CONTENT, serde_json::Value::Null)
}

fn plan_from(id: PlanId, input: PlanInput, created_at: UnixTime, now: UnixTime) -> Result<Plan, ApiError> {
    let plan = Plan {
        id,
        name: input.name,
        rate_limit: input.rate_limit,
        quota: input.quota,
        stripe_price_ids: input.stripe_price_ids,
        meter_event_name: input.meter_event_name,
        max_keys: input.max_keys,
        created_at,
        updated_at: now,
    };
    plan.validate()?;
    Ok(plan)
}
