//! `/v1/me`: a signed-in customer's own record, keys and usage (role `customer`;
//! docs/api.md, "Self-service"). Another customer's key is answered 404, exactly like a key
//! that does not exist. A customer names, disables, enables, rotates and revokes its own keys
//! and creates new ones within its plan's `max_keys`; plans, limits, scopes and expiry stay the
//! operator's.

use super::keys;
use super::{Api, ManagementStore, Reply, ok, to_json};
use crate::error::ApiError;
use crate::extract::{Id, IdempotencyKey, Json, JsonBytes, JsonOrEmpty, Me, Now, Query};
use crate::json::{
    DEFAULT_PAGE, EmptyInput, HistoryQuery, MeCreateKeyInput, MeKeysQuery, MePatchKeyInput, RotateInput,
};
use crate::views::{KeyView, PlanView, denied_by_code};
use http::StatusCode;
use serde_json::json;
use shared::domain::api_key::KeyId;
use shared::domain::customers::CustomerId;
use shared::domain::key_records::{Actor, KeyRecord, KeyStatus};
use shared::domain::plans::key_limit;
use shared::store::{KeyFilter, KeyPatch};

/// `GET /v1/me`: the customer, its plan and limits, its subscription, and how many of its
/// plan's keys it holds.
pub(super) async fn get<S: ManagementStore>(api: Api<S>, Me(me): Me) -> Reply {
    let customer = known(&api, &me).await?;
    let plan = match &customer.plan_id {
        Some(p) => api.store.get_plan(p).await?,
        None => None,
    };
    let live = live_keys(&api, &me).await?;
    ok(
        StatusCode::OK,
        json!({
            "customer_id": me.as_str(),
            "subscription_status": customer.subscription_status.map(|s| s.as_str()),
            "current_period_end": customer.current_period_end.map(|t| t.to_rfc3339()),
            "plan": plan.as_ref().map(PlanView::from),
            "keys": live,
            "max_keys": key_limit(plan.as_ref()),
        }),
    )
}

/// `GET /v1/me/keys`: its keys, newest last, paged.
pub(super) async fn list<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Now(now): Now,
    Query(q): Query<MeKeysQuery>,
) -> Reply {
    let filter = KeyFilter { customer_id: Some(me), plan_id: None, status: q.status.map(|s| s.0) };
    let page = api.store.list_keys(&filter, q.limit.map_or(DEFAULT_PAGE, |l| l.0), q.cursor.as_deref()).await?;
    let keys = api.store.with_last_used(page.items).await?;
    let items: Vec<_> = keys.iter().map(|k| KeyView::new(k, now)).collect();
    ok(StatusCode::OK, json!({ "items": items, "next_cursor": page.next_cursor }))
}

/// `POST /v1/me/keys`: a new key on the customer's plan, the plaintext shown once; 409
/// `max_keys_reached` when the plan's keys are all in use.
pub(super) async fn create<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Now(now): Now,
    IdempotencyKey(idem): IdempotencyKey,
    JsonBytes(input, body): JsonBytes<MeCreateKeyInput>,
) -> Reply {
    known(&api, &me).await?;
    keys::issue_once(&api, Some(&me), idem, &body, now, || keys::issue_own(&api, me.clone(), input.name, now)).await
}

pub(super) async fn get_key<S: ManagementStore>(api: Api<S>, Me(me): Me, Id(id): Id<KeyId>, Now(now): Now) -> Reply {
    let key = own_key(&api, &me, &id).await?;
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

/// `PATCH /v1/me/keys/{id}`: its name, and `active`/`disabled` (not a key the operator
/// disabled).
pub(super) async fn patch<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Id(id): Id<KeyId>,
    Now(now): Now,
    Json(input): Json<MePatchKeyInput>,
) -> Reply {
    own_key(&api, &me, &id).await?;
    if let Some(name) = &input.name {
        shared::domain::key_records::validate_name(name)?;
    }
    let patch = KeyPatch {
        name: input.name.map(Some),
        status: input.status.map(|s| s.0),
        by: Actor::Customer,
        ..KeyPatch::default()
    };
    let key = api.store.update_key(&id, patch, now).await?;
    tracing::info!(key_id = %key.key_id, status = key.status.as_str(), "key updated by its customer");
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

pub(super) async fn rotate<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Id(id): Id<KeyId>,
    Now(now): Now,
    JsonOrEmpty(input): JsonOrEmpty<RotateInput>,
) -> Reply {
    let key = own_key(&api, &me, &id).await?;
    keys::rotate_record(&api, key, input, now).await
}

pub(super) async fn revoke<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Id(id): Id<KeyId>,
    Now(now): Now,
    JsonOrEmpty(EmptyInput {}): JsonOrEmpty<EmptyInput>,
) -> Reply {
    own_key(&api, &me, &id).await?;
    let key = api.store.revoke_key(&id, now).await?;
    tracing::info!(key_id = %key.key_id, "key revoked by its customer");
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

pub(super) async fn key_usage<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Id(id): Id<KeyId>,
    Now(now): Now,
    Query(query): Query<HistoryQuery>,
) -> Reply {
    own_key(&api, &me, &id).await?;
    keys::usage_reply(&api, &id, now, &query).await
}

/// `GET /v1/me/usage`: its metered usage per day and meter, as of the last rollup.
pub(super) async fn usage<S: ManagementStore>(
    api: Api<S>,
    Me(me): Me,
    Now(now): Now,
    Query(query): Query<HistoryQuery>,
) -> Reply {
    known(&api, &me).await?;
    let ledgers = api.store.customer_usage(&me, now.day().minus(query.days() - 1)).await?;
    let history: Vec<_> = ledgers
        .iter()
        .map(|(m, l)| json!({ "day": m.day.iso(), "meter": m.meter, "allowed": l.usage.allowed, "denied": l.usage.denied, "denied_by_code": denied_by_code(&l.usage) }))
        .collect();
    ok(StatusCode::OK, json!({ "customer_id": me.as_str(), "history": history }))
}

/// The customer, if Tollgate knows it (an operator or Stripe created it). A token for a
/// customer it does not know has nothing to manage: 404, and no key is created for it.
async fn known<S: ManagementStore>(
    api: &super::ManagementApi<S>,
    me: &CustomerId,
) -> Result<shared::domain::customers::Customer, ApiError> {
    api.store.get_customer(me).await?.ok_or(ApiError::NotFound("customer"))
}

/// `id`, if it is `me`'s; anyone else's is "not found", never "forbidden".
async fn own_key<S: ManagementStore>(
    api: &super::ManagementApi<S>,
    me: &CustomerId,
    id: &KeyId,
) -> Result<KeyRecord, ApiError> {
    api.store.get_key(id).await?.filter(|k| k.customer_id == *me).ok_or(ApiError::NotFound("key"))
}

/// How many of `me`'s keys are not revoked.
async fn live_keys<S: ManagementStore>(api: &super::ManagementApi<S>, me: &CustomerId) -> Result<u64, ApiError> {
    let filter = KeyFilter { customer_id: Some(me.clone()), ..KeyFilter::default() };
    let (mut live, mut cursor) = (0, None);
    loop {
        let page = api.store.list_keys(&filter, 100, cursor.as_deref()).await?;
        live += page.items.iter().filter(|k| k.status != KeyStatus::Revoked).count() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(live),
        }
    }
}
