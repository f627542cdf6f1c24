//! `/v1/keys`: issue (optionally idempotent), list, read, change, rotate with grace, revoke,
//! and a key's live limits and usage history.

use super::{Answer, Api, ManagementStore, Reply, issued_json, ok, to_json};
use crate::error::ApiError;
use crate::extract::{Admin, Id, IdempotencyKey, Json, JsonBytes, JsonOrEmpty, Now, Query, Reader};
use crate::json::{
    CreateKeyInput, DEFAULT_PAGE, EmptyInput, HistoryQuery, ListKeysQuery, PatchKeyInput, RotateInput, Timestamp,
    overrides,
};
use crate::views::{KeyView, denied_by_code};
use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::app::idempotent::{self, Job, Once, Scope};
use shared::domain::api_key::{ApiKey, KeyEnv, KeyId};
use shared::domain::customers::CustomerId;
use shared::domain::decision::KeyState;
use shared::domain::key_records::{
    Actor, KeyRecord, MAX_GRACE_S, validate_metadata, validate_name, validate_overrides, validate_scopes,
};
use shared::domain::limits::{period_end, window_end};
use shared::domain::time::UnixTime;
use shared::store::{KeyFilter, KeyPatch, NewKey};

pub const DEFAULT_GRACE_S: u64 = 86_400;
/// How long one attempt holds an idempotency reservation before a retry may take over.
const IDEMPOTENCY_LEASE_S: u64 = 30;

/// `POST /v1/keys`. With an `Idempotency-Key`, the same request again answers the same key
/// (without its plaintext, which is shown once) and never issues a second one.
pub(super) async fn create<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Now(now): Now,
    IdempotencyKey(idem): IdempotencyKey,
    JsonBytes(input, body): JsonBytes<CreateKeyInput>,
) -> Reply {
    issue_once(&api, None, idem, &body, now, || issue(&api, input, now)).await
}

/// Runs `issue` at most once per `Idempotency-Key` (when one is sent), for the operator
/// (`owner` `None`) or for a customer's own keys, whose idempotency keys are theirs alone.
pub(super) async fn issue_once<S: ManagementStore, F: Future<Output = Reply>>(
    api: &super::ManagementApi<S>,
    owner: Option<&CustomerId>,
    idem: Option<String>,
    body: &[u8],
    now: UnixTime,
    issue: impl FnOnce() -> F,
) -> Reply {
    let Some(idem) = idem else {
        return issue().await;
    };
    let id = match owner {
        Some(customer) => format!("me/{}/{idem}", customer.as_str()),
        None => idem,
    };
    let fingerprint = hex::encode(Sha256::digest(body));
    let job = Job { scope: Scope::CreateKey, id: &id, fingerprint: &fingerprint, lease_s: IDEMPOTENCY_LEASE_S, now };
    let work = || async {
        let answer = issue().await?;
        let key_id = answer.body["key_id"].as_str().unwrap_or_default().to_owned();
        Ok::<_, ApiError>((answer, key_id))
    };
    match idempotent::once(&api.store, job, work).await? {
        // Not recorded: the key exists, and a retry after the lease would issue another; logged.
        Once::Ran { value, .. } => Ok(value),
        Once::InProgress => Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress".into())),
        Once::Done { fingerprint: stored, result } => {
            if stored != fingerprint {
                return Err(ApiError::invalid("Idempotency-Key", "was already used with a different request body"));
            }
            // The plaintext was shown once and is not kept: answer with the key as it is now.
            let key_id = KeyId::parse(&result).map_err(|e| ApiError::Internal(Box::new(e)))?;
            let key = api.store.get_key(&key_id).await?;
            let key = key.filter(|k| owner.is_none_or(|c| k.customer_id == *c)).ok_or(ApiError::NotFound("key"))?;
            Ok(Answer::new(StatusCode::OK, to_json(&KeyView::new(&key, now)))
                .with_header("idempotent-replayed", "true"))
        }
    }
}

/// A customer's own key: on its plan (it follows the customer's), in the deployment's key
/// environment, within the plan's `max_keys` (the store checks it with the write).
pub(super) async fn issue_own<S: ManagementStore>(
    api: &super::ManagementApi<S>,
    me: CustomerId,
    name: Option<String>,
    now: UnixTime,
) -> Reply {
    if let Some(name) = &name {
        validate_name(name)?;
    }
    let key = ApiKey::generate(api.key_env.unwrap_or(KeyEnv::Live)).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let record = api.store.create_key(NewKey { name, by: Actor::Customer, ..NewKey::new(&key, me, None, now) }).await?;
    tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, "key created by its customer");
    ok(StatusCode::CREATED, issued_json(&key, &record, now))
}

async fn issue<S: ManagementStore>(api: &super::ManagementApi<S>, input: CreateKeyInput, now: UnixTime) -> Reply {
    if let Some(name) = &input.name {
        validate_name(name)?;
    }
    let expires_at = input.expires_at.map(|t| future(t, "expires_at", now)).transpose()?;
    validate_scopes(&input.scopes)?;
    validate_metadata(&input.metadata)?;
    let limit_overrides = overrides(input.rate_limit, input.quota);
    validate_overrides(&limit_overrides)?;
    let env = input.env.or(api.key_env).unwrap_or(KeyEnv::Live);
    if let Some(deployment) = api.key_env.filter(|d| *d != env) {
        return Err(ApiError::invalid("env", format!("this deployment issues {} keys only", deployment.as_str())));
    }
    let key = ApiKey::generate(env).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let record = api
        .store
        .create_key(NewKey {
            name: input.name,
            expires_at,
            scopes: input.scopes,
            metadata: input.metadata,
            overrides: limit_overrides,
            ..NewKey::new(&key, input.customer_id, input.plan_id, now)
        })
        .await?;
    tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, "key created");
    ok(StatusCode::CREATED, issued_json(&key, &record, now))
}

pub(super) async fn list<S: ManagementStore>(
    api: Api<S>,
    _: Reader,
    Now(now): Now,
    Query(q): Query<ListKeysQuery>,
) -> Reply {
    let filter = KeyFilter { customer_id: q.customer_id, plan_id: q.plan_id, status: q.status.map(|s| s.0) };
    let limit = q.limit.map_or(DEFAULT_PAGE, |l| l.0);
    let page = api.store.list_keys(&filter, limit, q.cursor.as_deref()).await?;
    let keys = api.store.with_last_used(page.items).await?;
    let items: Vec<_> = keys.iter().map(|k| KeyView::new(k, now)).collect();
    ok(StatusCode::OK, json!({ "items": items, "next_cursor": page.next_cursor }))
}

pub(super) async fn get<S: ManagementStore>(api: Api<S>, _: Reader, Id(id): Id<KeyId>, Now(now): Now) -> Reply {
    let key = api.store.get_key(&id).await?.ok_or(ApiError::NotFound("key"))?;
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

pub(super) async fn patch<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Id(key_id): Id<KeyId>,
    Now(now): Now,
    Json(input): Json<PatchKeyInput>,
) -> Reply {
    if let Some(Some(name)) = &input.name {
        validate_name(name)?;
    }
    let expires_at = match input.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => Some(Some(future(t, "expires_at", now)?)),
    };
    if let Some(m) = &input.metadata {
        validate_metadata(m)?;
    }
    // Overrides are stored together; a PATCH naming one keeps the other.
    let limit_overrides = if input.rate_limit.is_some() || input.quota.is_some() {
        let current = api.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?.overrides;
        let merged = overrides(input.rate_limit.unwrap_or(current.rate_limit), input.quota.unwrap_or(current.quota));
        validate_overrides(&merged)?;
        Some(merged)
    } else {
        None
    };
    let patch = KeyPatch {
        name: input.name,
        status: input.status.map(|s| s.0),
        expires_at,
        plan_id: input.plan_id,
        metadata: input.metadata,
        overrides: limit_overrides,
        by: Actor::Operator,
    };
    let key = api.store.update_key(&key_id, patch, now).await?;
    tracing::info!(key_id = %key.key_id, status = key.status.as_str(), "key updated");
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

/// A new secret; the old one keeps working for `grace_s` (default a day).
pub(super) async fn rotate<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Id(key_id): Id<KeyId>,
    Now(now): Now,
    JsonOrEmpty(input): JsonOrEmpty<RotateInput>,
) -> Reply {
    let current = api.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?;
    rotate_record(&api, current, input, now).await
}

/// Rotates `current` (read by the caller, who may see it): the new plaintext, once.
pub(super) async fn rotate_record<S: ManagementStore>(
    api: &super::ManagementApi<S>,
    current: KeyRecord,
    input: RotateInput,
    now: UnixTime,
) -> Reply {
    let grace_s = input.grace_s.unwrap_or(DEFAULT_GRACE_S);
    if grace_s > MAX_GRACE_S {
        return Err(ApiError::invalid("grace_s", format!("must be 0..={MAX_GRACE_S} seconds")));
    }
    if let Some(deployment) = api.key_env.filter(|d| *d != current.env) {
        return Err(ApiError::Conflict(format!(
            "this is a {} key; this deployment accepts {} keys only, so a new secret for it would never work",
            current.env.as_str(),
            deployment.as_str()
        )));
    }
    let key = ApiKey::generate(current.env).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let record =
        api.store.rotate_key(&current.key_id, key.hash(), key.display(), now.plus(grace_s as i64), now).await?;
    tracing::info!(key_id = %record.key_id, grace_s, "key rotated");
    ok(StatusCode::OK, issued_json(&key, &record, now))
}

pub(super) async fn revoke<S: ManagementStore>(
    api: Api<S>,
    _: Admin,
    Id(key_id): Id<KeyId>,
    Now(now): Now,
    JsonOrEmpty(EmptyInput {}): JsonOrEmpty<EmptyInput>,
) -> Reply {
    let key = api.store.revoke_key(&key_id, now).await?;
    tracing::info!(key_id = %key.key_id, "key revoked");
    ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
}

pub(super) async fn usage<S: ManagementStore>(
    api: Api<S>,
    _: Reader,
    Id(key_id): Id<KeyId>,
    Now(now): Now,
    Query(query): Query<HistoryQuery>,
) -> Reply {
    usage_reply(&api, &key_id, now, &query).await
}

/// A key's live limits and its history per day.
pub(super) async fn usage_reply<S: ManagementStore>(
    api: &super::ManagementApi<S>,
    key_id: &KeyId,
    now: UnixTime,
    query: &HistoryQuery,
) -> Reply {
    let state = api.store.key_counters(key_id).await?.ok_or(ApiError::NotFound("key"))?;
    let history = api.store.usage_history(key_id, now.day().minus(query.days() - 1)).await?;
    let mut body = usage_json(&state, now);
    body["key_id"] = key_id.as_str().into();
    body["history"] =
        history.iter().map(|d| json!({ "day": d.day.iso(), "allowed": d.count.allowed, "denied": d.count.denied, "denied_by_code": denied_by_code(&d.count) })).collect();
    ok(StatusCode::OK, body)
}

/// The live limit state of a key: the window and period counters read as of `now`.
pub fn usage_json(state: &KeyState, now: UnixTime) -> serde_json::Value {
    let c = &state.counters;
    let rate = state.rate_limit.map(|r| {
        let (used, end) = if c.window_end > now { (c.window_count, c.window_end) } else { (0, window_end(now, r.window_s)) };
        json!({ "limit": r.limit, "window_s": r.window_s, "used": used, "remaining": r.limit.saturating_sub(used), "reset": end.to_rfc3339() })
    });
    let quota = state.quota.map(|q| {
        let (used, end) =
            if c.period_end > now { (c.period_count, c.period_end) } else { (0, period_end(now, q.period)) };
        json!({ "limit": q.limit, "period": q.period.as_str(), "used": used, "remaining": q.limit.saturating_sub(used), "reset": end.to_rfc3339() })
    });
    json!({ "rate_limit": rate, "quota": quota })
}

/// A timestamp that must be in the future (a key's expiry).
fn future(t: Timestamp, field: &str, now: UnixTime) -> Result<UnixTime, ApiError> {
    if t.0 <= now {
        return Err(ApiError::invalid(field, "must be in the future"));
    }
    Ok(t.0)
}
