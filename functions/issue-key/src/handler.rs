//! The management API: one request in, one JSON response out, generic over the storage
//! traits so the Lambda (lambda_http) and the local stack (axum) run the same code.

use crate::error::ApiError;
use crate::json::{
    CreateKeyInput, CustomerView, EmptyInput, IssuedKeyView, KeyView, PatchKeyInput, PlanInput, PlanView, RotateInput,
    overrides, parse_body,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::app::billing::{Applied, Billing, BillingError, plan_for_price};
use shared::app::checkout;
use shared::authorize::bearer_token;
use shared::domain::customers::CustomerId;
use shared::domain::decision::KeyState;
use shared::domain::key_records::{
    KeyRecord, KeyStatus, MAX_GRACE_S, validate_metadata, validate_name, validate_overrides, validate_scopes,
};
use shared::domain::keys::{ApiKey, KeyEnv, KeyId};
use shared::domain::limits::{period_end, window_end};
use shared::domain::plans::{Plan, PlanId, ValidationError, is_stripe_id};
use shared::domain::time::UnixTime;
use shared::domain::usage::HISTORY_DAYS;
use shared::store::{
    Attempt, AttemptStore, BillingStore, CustomerStore, IdempotencyStore, KeyFilter, KeyPatch, KeyStore, NewKey,
    PlanStore, Reservation, UsageStore,
};
use shared::stripe::api::{StripeApi, StripeError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Everything the management API's storage must do.
pub trait ManagementStore:
    KeyStore + PlanStore + CustomerStore + UsageStore + IdempotencyStore + BillingStore + AttemptStore + Clone
{
}
impl<T: KeyStore + PlanStore + CustomerStore + UsageStore + IdempotencyStore + BillingStore + AttemptStore + Clone>
    ManagementStore for T
{
}

/// One HTTP request, independent of where it came from.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The path from `/v1` on (a REST API stage prefix is ignored).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub request_id: String,
    /// Who is calling, as the gateway authenticated them (the IAM principal's ARN in AWS).
    pub caller: Option<String>,
    /// The client's address as the gateway saw it (never a client-sent header).
    pub source: Option<String>,
}

pub const DEFAULT_GRACE_S: u64 = 86_400;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;
/// How long a create with an `Idempotency-Key` is remembered.
const IDEMPOTENCY_TTL_S: i64 = 86_400;
/// Checkout claims are remembered for ten years: a session can be claimed once, ever.
const CLAIM_RECORD_TTL_S: i64 = 10 * 365 * 86_400;
/// How long one request may spend copying a change onto keys (a plan's, a customer's) before
/// it answers 503 `unfinished` and the same request again continues; inside API Gateway's
/// 30 s integration timeout.
pub const FANOUT_BUDGET: Duration = Duration::from_secs(20);
/// How long a Checkout claim holds its session: longer than everything it does (Stripe's
/// answer, the billing fan-out's budget, the key), so no second claimant can take over while
/// the first is still issuing a key.
const CLAIM_LEASE_S: u64 = 120;
/// How long one attempt holds an idempotency reservation before a retry may take over.
const IDEMPOTENCY_LEASE_S: u64 = 30;

pub struct ManagementApi<S> {
    store: S,
    /// For the Checkout claim; without it `GET /v1/claim` answers 501.
    stripe: Option<StripeApi>,
    /// The claim's writer of billing state (the webhook's too).
    billing: Billing<S>,
    /// When set, every route but the public claim needs `Authorization: Bearer <token>`. In AWS
    /// it is unset and API Gateway's IAM authorization guards the routes instead.
    admin_token: Option<SecretString>,
    routes: Routes,
    /// The deployment's key environment: keys are issued in it only.
    key_env: Option<KeyEnv>,
}

/// Which routes a deployment of this handler serves (`TOLLGATE_ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routes {
    /// The whole management API.
    #[default]
    All,
    /// Only the public `GET /v1/claim`: the claim function, with a role that can do no more.
    Claim,
}

impl Routes {
    pub fn parse(value: Option<&str>) -> Result<Self, shared::config::ConfigError> {
        match value.map(str::trim) {
            None | Some("" | "all") => Ok(Self::All),
            Some("claim") => Ok(Self::Claim),
            Some(other) => Err(shared::config::ConfigError::Invalid {
                name: "TOLLGATE_ROUTES",
                reason: format!("expected `all` or `claim`, got `{other}`"),
            }),
        }
    }
}

/// A source address's bucket: the address itself for IPv4, its /64 for IPv6 (one host holds a
/// whole /64), anything else as given.
fn source_bucket(source: &str) -> String {
    match source.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(ip) => ip.to_string(),
        Err(_) => source.chars().filter(|c| c.is_ascii_alphanumeric() || ".:-".contains(*c)).take(64).collect(),
    }
}

/// The public claim's bounds: attempts per Checkout session id, and per source address, in a
/// fixed window. Past either, 429 before Stripe is asked anything.
pub const CLAIM_ATTEMPTS_PER_SESSION: u64 = 10;
pub const CLAIM_ATTEMPTS_PER_SOURCE: u64 = 30;
pub const CLAIM_ATTEMPT_WINDOW_S: u64 = 600;

/// A successful answer: status, JSON body (`Null` for none) and any extra headers.
struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    headers: Vec<(&'static str, &'static str)>,
}

type Reply = Result<Answer, ApiError>;

fn ok(status: StatusCode, body: serde_json::Value) -> Reply {
    Ok(Answer { status, body, headers: vec![] })
}

impl<S: ManagementStore> ManagementApi<S> {
    pub fn new(store: S, admin_token: Option<SecretString>) -> Self {
        let billing = Billing::new(store.clone(), shared::config::DEFAULT_PAST_DUE_GRACE_S, FANOUT_BUDGET);
        Self { store, admin_token, stripe: None, billing, routes: Routes::All, key_env: None }
    }

    /// Serves only `routes`.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Issues keys in `env` only (`TOLLGATE_KEY_ENV`).
    pub fn with_key_env(mut self, env: Option<KeyEnv>) -> Self {
        self.key_env = env;
        self
    }

    /// Enables the Checkout claim.
    pub fn with_stripe(mut self, stripe: StripeApi, past_due_grace_s: u64) -> Self {
        self.stripe = Some(stripe);
        self.billing = Billing::new(self.store.clone(), past_due_grace_s, FANOUT_BUDGET);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Answers one request. Never fails: every error becomes its status and JSON body.
    pub async fn handle(&self, req: ApiRequest, now: UnixTime) -> Response<String> {
        let caller = req.caller.as_deref().unwrap_or("-");
        let span = tracing::info_span!("management", request_id = %req.request_id, method = %req.method, path = %req.path, caller);
        let _guard = span.enter();
        if !matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            // Who changed what: every mutating request names its authenticated caller.
            tracing::info!(caller, source = req.source.as_deref().unwrap_or("-"), "mutating request");
        }
        let answer = match self.route(&req, now).await {
            Ok(answer) => answer,
            Err(e) => {
                match &e {
                    ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::Upstream(_) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "request failed")
                    }
                    _ => tracing::info!(code = e.code(), error = %e, "request rejected"),
                }
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut resp = respond(status, &e.body(&req.request_id), &req.request_id);
                match e {
                    ApiError::MethodNotAllowed(allow) => {
                        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                    }
                    ApiError::TooManyAttempts { retry_after, .. } => {
                        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                    }
                    _ => {}
                }
                return resp;
            }
        };
        tracing::info!(status = answer.status.as_u16(), "request served");
        let mut resp = respond(answer.status, &answer.body, &req.request_id);
        for (name, value) in answer.headers {
            resp.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        resp
    }

    async fn route(&self, req: &ApiRequest, now: UnixTime) -> Reply {
        let path = req.path.trim_end_matches('/');
        // Path segments arrive percent-encoded (`/v1/customers/a%40b` names customer `a@b`).
        let decoded = path
            .split('/')
            .skip(1)
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApiError::invalid("path", "must be UTF-8 once percent-decoded"))?;
        let segments: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
        let public = segments == ["v1", "claim"];
        if self.routes == Routes::Claim && !public {
            return Err(ApiError::NoRoute);
        }
        if !public {
            self.check_admin(&req.headers)?;
        }
        let m = &req.method;
        match segments.as_slice() {
            ["v1", "plans"] => match *m {
                Method::GET => self.list_plans().await,
                Method::POST => self.create_plan(req, now).await,
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            },
            ["v1", "plans", id] => match *m {
                Method::GET => self.get_plan(id).await,
                Method::PUT => self.put_plan(id, req, now).await,
                Method::DELETE => self.delete_plan(id).await,
                _ => Err(ApiError::MethodNotAllowed("GET, PUT, DELETE")),
            },
            ["v1", "keys"] => match *m {
                Method::GET => self.list_keys(&req.query, now).await,
                Method::POST => self.create_key_idempotently(req, now).await,
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            },
            ["v1", "keys", id] => match *m {
                Method::GET => self.get_key(id, now).await,
                Method::PATCH => self.patch_key(id, req, now).await,
                _ => Err(ApiError::MethodNotAllowed("GET, PATCH")),
            },
            ["v1", "keys", id, "rotate"] => match *m {
                Method::POST => self.rotate_key(id, req, now).await,
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            ["v1", "keys", id, "revoke"] => match *m {
                Method::POST => self.revoke_key(id, req, now).await,
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            ["v1", "keys", id, "usage"] => match *m {
                Method::GET => self.key_usage(id, &req.query, now).await,
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["v1", "claim"] => match *m {
                Method::GET => self.claim(&req.query, req.source.as_deref(), now).await,
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["v1", "customers", id] => match *m {
                Method::GET => self.get_customer(id).await,
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["v1", "customers", id, "usage"] => match *m {
                Method::GET => self.customer_usage(id, &req.query, now).await,
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            _ => Err(ApiError::NoRoute),
        }
    }

    fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.admin_token {
            Some(expected) if !bearer_matches(headers, expected) => Err(ApiError::Unauthorized),
            _ => Ok(()),
        }
    }

    // ---- plans ----

    async fn list_plans(&self) -> Reply {
        let plans = self.store.list_plans().await?;
        ok(StatusCode::OK, json!({ "items": plans.iter().map(PlanView::from).collect::<Vec<_>>() }))
    }

    async fn create_plan(&self, req: &ApiRequest, now: UnixTime) -> Reply {
        let input: PlanInput = parse_body(&req.body, false)?;
        let id = input.id.as_deref().ok_or_else(|| ApiError::invalid("id", "missing field `id`"))?;
        let plan = plan_from(parse_plan_id(id, "id")?, input, now, now)?;
        self.store.create_plan(&plan).await.map_err(|e| match e {
            shared::store::StoreError::AlreadyExists(_) => {
                ApiError::Conflict(format!("plan {} already exists", plan.id))
            }
            e => e.into(),
        })?;
        ok(StatusCode::CREATED, to_json(&PlanView::from(&plan)))
    }

    async fn get_plan(&self, id: &str) -> Reply {
        let plan = self.store.get_plan(&parse_plan_id(id, "plan_id")?).await?.ok_or(ApiError::NotFound("plan"))?;
        ok(StatusCode::OK, to_json(&PlanView::from(&plan)))
    }

    async fn put_plan(&self, id: &str, req: &ApiRequest, now: UnixTime) -> Reply {
        let id = parse_plan_id(id, "plan_id")?;
        let input: PlanInput = parse_body(&req.body, false)?;
        if input.id.as_deref().is_some_and(|body_id| body_id != id.as_str()) {
            return Err(ApiError::invalid("id", "must match the plan id in the path (plan ids cannot change)"));
        }
        let existing = self.store.get_plan(&id).await?.ok_or(ApiError::NotFound("plan"))?;
        let plan = plan_from(id, input, existing.created_at, now)?;
        let fanout = self.store.update_plan(&plan, now, Instant::now() + FANOUT_BUDGET).await?;
        if !fanout.complete {
            return Err(ApiError::Unfinished(format!(
                "The plan is saved and {} of its keys were updated; send the same request again to update the rest.",
                fanout.visited
            )));
        }
        ok(StatusCode::OK, to_json(&PlanView::from(&plan)))
    }

    async fn delete_plan(&self, id: &str) -> Reply {
        self.store.delete_plan(&parse_plan_id(id, "plan_id")?).await?;
        ok(StatusCode::NO_CONTENT, serde_json::Value::Null)
    }

    // ---- keys ----

    async fn create_key_idempotently(&self, req: &ApiRequest, now: UnixTime) -> Reply {
        let Some(idem) = req.headers.get("idempotency-key") else {
            return self.create_key(req, now).await;
        };
        let idem = idem
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ApiError::invalid("Idempotency-Key", "must be 1-255 visible ASCII characters"))?;
        // Validate before claiming, so a bad request does not hold the key.
        let _: CreateKeyInput = parse_body(&req.body, false)?;
        let fingerprint = hex::encode(Sha256::digest(&req.body));
        let owner = uuid::Uuid::new_v4().to_string();
        let expires = now.plus(IDEMPOTENCY_TTL_S);
        match self.store.reserve("create-key", idem, &owner, &fingerprint, IDEMPOTENCY_LEASE_S, expires, now).await? {
            Reservation::Fresh => {}
            Reservation::InProgress { .. } => {
                return Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress".into()));
            }
            Reservation::Done { fingerprint: stored, result } => {
                if stored != fingerprint {
                    return Err(ApiError::invalid("Idempotency-Key", "was already used with a different request body"));
                }
                // The plaintext was shown once and is not kept: answer with the key as it is now.
                let key_id = KeyId::parse(&result).map_err(|e| ApiError::Internal(Box::new(e)))?;
                let key = self.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?;
                return Ok(Answer {
                    status: StatusCode::OK,
                    body: to_json(&KeyView::new(&key, now)),
                    headers: vec![("idempotent-replayed", "true")],
                });
            }
        }
        match self.create_key(req, now).await {
            Ok(answer) => {
                let key_id = answer.body["key_id"].as_str().unwrap_or_default().to_owned();
                if let Err(e) = self.store.finish("create-key", idem, &owner, &key_id, expires).await {
                    // The key exists; a retry would find the claim expired and create another.
                    tracing::error!(error = %e, key_id, "could not record the idempotent create");
                }
                Ok(answer)
            }
            Err(e) => {
                if let Err(release) = self.store.release("create-key", idem, &owner).await {
                    tracing::warn!(error = %release, "could not release the idempotency reservation");
                }
                Err(e)
            }
        }
    }

    async fn create_key(&self, req: &ApiRequest, now: UnixTime) -> Reply {
        let input: CreateKeyInput = parse_body(&req.body, false)?;
        let customer_id = CustomerId::parse(&input.customer_id)?;
        let plan_id = input.plan_id.as_deref().map(|p| parse_plan_id(p, "plan_id")).transpose()?;
        if let Some(name) = &input.name {
            validate_name(name)?;
        }
        let expires_at = input.expires_at.as_deref().map(|t| parse_future_time(t, "expires_at", now)).transpose()?;
        validate_scopes(&input.scopes)?;
        validate_metadata(&input.metadata)?;
        let limit_overrides = overrides(input.rate_limit, input.quota);
        validate_overrides(&limit_overrides)?;
        let env = input.env.or(self.key_env).unwrap_or(KeyEnv::Live);
        if let Some(deployment) = self.key_env.filter(|d| *d != env) {
            return Err(ApiError::invalid("env", format!("this deployment issues {} keys only", deployment.as_str())));
        }
        let key = ApiKey::generate(env).map_err(|e| ApiError::Internal(Box::new(e)))?;
        let record = self
            .store
            .create_key(NewKey {
                name: input.name,
                expires_at,
                scopes: input.scopes,
                metadata: input.metadata,
                overrides: limit_overrides,
                ..NewKey::new(&key, customer_id, plan_id, now)
            })
            .await?;
        tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, "key created");
        ok(StatusCode::CREATED, issued_json(&key, &record, now))
    }

    async fn list_keys(&self, query: &str, now: UnixTime) -> Reply {
        let mut filter = KeyFilter::default();
        let mut limit = DEFAULT_PAGE;
        let mut cursor = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "customer_id" => filter.customer_id = Some(CustomerId::parse(&value)?),
                "plan_id" => filter.plan_id = Some(parse_plan_id(&value, "plan_id")?),
                "status" => {
                    filter.status = Some(
                        KeyStatus::parse(&value)
                            .ok_or_else(|| ApiError::invalid("status", "must be active, disabled or revoked"))?,
                    )
                }
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| ApiError::invalid("limit", format!("must be an integer 1..={MAX_PAGE}")))?
                }
                "cursor" => cursor = Some(value.into_owned()),
                other => return Err(ApiError::invalid(other, "unknown query parameter")),
            }
        }
        let page = self.store.list_keys(&filter, limit, cursor.as_deref()).await?;
        let items: Vec<_> = page.items.iter().map(|k| KeyView::new(k, now)).collect();
        ok(StatusCode::OK, json!({ "items": items, "next_cursor": page.next_cursor }))
    }

    async fn load_key(&self, id: &str) -> Result<KeyRecord, ApiError> {
        let id = parse_key_id(id)?;
        self.store.get_key(&id).await?.ok_or(ApiError::NotFound("key"))
    }

    async fn get_key(&self, id: &str, now: UnixTime) -> Reply {
        let key = self.load_key(id).await?;
        ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
    }

    async fn patch_key(&self, id: &str, req: &ApiRequest, now: UnixTime) -> Reply {
        let key_id = parse_key_id(id)?;
        let input: PatchKeyInput = parse_body(&req.body, false)?;
        let status = match input.status.as_deref() {
            None => None,
            Some("active") => Some(KeyStatus::Active),
            Some("disabled") => Some(KeyStatus::Disabled),
            Some("revoked") => {
                return Err(ApiError::invalid("status", "revoke a key with POST /v1/keys/{id}/revoke"));
            }
            Some(_) => return Err(ApiError::invalid("status", "must be active or disabled")),
        };
        if let Some(Some(name)) = &input.name {
            validate_name(name)?;
        }
        let expires_at = match &input.expires_at {
            None => None,
            Some(None) => Some(None),
            Some(Some(t)) => Some(Some(parse_future_time(t, "expires_at", now)?)),
        };
        let plan_id = match &input.plan_id {
            None => None,
            Some(None) => Some(None),
            Some(Some(p)) => Some(Some(parse_plan_id(p, "plan_id")?)),
        };
        if let Some(m) = &input.metadata {
            validate_metadata(m)?;
        }
        // Overrides are stored together; a PATCH naming one keeps the other.
        let limit_overrides = if input.rate_limit.is_some() || input.quota.is_some() {
            let current = self.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?.overrides;
            let merged =
                overrides(input.rate_limit.unwrap_or(current.rate_limit), input.quota.unwrap_or(current.quota));
            validate_overrides(&merged)?;
            Some(merged)
        } else {
            None
        };
        let patch = KeyPatch {
            name: input.name,
            status,
            expires_at,
            plan_id,
            metadata: input.metadata,
            overrides: limit_overrides,
        };
        let key = self.store.update_key(&key_id, patch, now).await?;
        tracing::info!(key_id = %key.key_id, status = key.status.as_str(), "key updated");
        ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
    }

    async fn rotate_key(&self, id: &str, req: &ApiRequest, now: UnixTime) -> Reply {
        let input: RotateInput = parse_body(&req.body, true)?;
        let grace_s = input.grace_s.unwrap_or(DEFAULT_GRACE_S);
        if grace_s > MAX_GRACE_S {
            return Err(ApiError::invalid("grace_s", format!("must be 0..={MAX_GRACE_S} seconds")));
        }
        let current = self.load_key(id).await?;
        if let Some(deployment) = self.key_env.filter(|d| *d != current.env) {
            return Err(ApiError::Conflict(format!(
                "this is a {} key; this deployment accepts {} keys only, so a new secret for it would never work",
                current.env.as_str(),
                deployment.as_str()
            )));
        }
        let key = ApiKey::generate(current.env).map_err(|e| ApiError::Internal(Box::new(e)))?;
        let record =
            self.store.rotate_key(&current.key_id, key.hash(), key.display(), now.plus(grace_s as i64), now).await?;
        tracing::info!(key_id = %record.key_id, grace_s, "key rotated");
        ok(StatusCode::OK, issued_json(&key, &record, now))
    }

    async fn revoke_key(&self, id: &str, req: &ApiRequest, now: UnixTime) -> Reply {
        let _: EmptyInput = parse_body(&req.body, true)?;
        let key = self.store.revoke_key(&parse_key_id(id)?, now).await?;
        tracing::info!(key_id = %key.key_id, "key revoked");
        ok(StatusCode::OK, to_json(&KeyView::new(&key, now)))
    }

    async fn key_usage(&self, id: &str, query: &str, now: UnixTime) -> Reply {
        let days = parse_history_days(query)?;
        let key_id = parse_key_id(id)?;
        let state = self.store.key_counters(&key_id).await?.ok_or(ApiError::NotFound("key"))?;
        let history = self.store.usage_history(&key_id, now.day().minus(days - 1)).await?;
        let mut body = usage_json(&state, now);
        body["key_id"] = key_id.as_str().into();
        body["history"] =
            history.iter().map(|d| json!({ "day": d.day.iso(), "allowed": d.allowed, "denied": d.denied })).collect();
        ok(StatusCode::OK, body)
    }

    // ---- the Checkout claim ----

    /// Hands a paying customer their first key, exactly once per Checkout session. Public: the
    /// session id (from Stripe's success URL) is the credential, and Stripe confirms it. The
    /// rules of which sessions qualify are `shared::app::checkout`'s; the customer's billing is
    /// written by the same service the webhook uses, so either may come first.
    async fn claim(&self, query: &str, source: Option<&str>, now: UnixTime) -> Reply {
        let mut session_id = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "session_id" => session_id = Some(value.into_owned()),
                other => return Err(ApiError::invalid(other, "unknown query parameter")),
            }
        }
        let session_id = session_id.ok_or_else(|| ApiError::invalid("session_id", "required"))?;
        if !is_stripe_id(&session_id, "cs_") {
            return Err(ApiError::invalid("session_id", "must be a Checkout session id (cs_...)"));
        }
        let stripe = self
            .stripe
            .as_ref()
            .ok_or(ApiError::NotConfigured("The claim flow needs STRIPE_API_KEY; this deployment has none."))?;
        // Bounded before Stripe is asked: guessing session ids costs the guesser, not the
        // Stripe API quota. The session's bucket holds whoever tries it; the source's holds
        // one address however many sessions it tries.
        // The source first: an exhausted source spends nothing of the session's attempts.
        let mut buckets = vec![];
        if let Some(source) = source {
            buckets.push((format!("claim#source#{}", source_bucket(source)), CLAIM_ATTEMPTS_PER_SOURCE));
        }
        buckets.push((format!("claim#session#{session_id}"), CLAIM_ATTEMPTS_PER_SESSION));
        for (bucket, limit) in buckets {
            if let Attempt::Exhausted { retry_after } =
                self.store.attempt(&bucket, limit, CLAIM_ATTEMPT_WINDOW_S, now).await?
            {
                let kind = bucket.split('#').nth(1);
                tracing::warn!(bucket = kind, source = source.unwrap_or("-"), "claim attempts exhausted");
                return Err(ApiError::TooManyAttempts {
                    message: "Too many claim attempts; retry later.",
                    retry_after,
                });
            }
        }
        let session = stripe.checkout_session(&session_id).await.map_err(|e| match e {
            StripeError::NotFound => ApiError::NotFound("checkout session"),
            // Stripe's own words stay in the log: the caller is the public.
            e => {
                tracing::error!(error = %e, "Stripe could not be asked about a Checkout session");
                ApiError::Upstream("Stripe could not confirm the session; retry shortly.".into())
            }
        })?;
        let plans = self.store.list_plans().await?;
        let claimable =
            checkout::claimable(&session, |price| plan_for_price(&plans, price), now).map_err(|refusal| {
                let (status, code) = refusal.status_and_code();
                ApiError::Refused { status, code, message: refusal.to_string() }
            })?;
        if let Some(deployment) = self.key_env.filter(|d| *d != claimable.env) {
            let mode = if deployment == KeyEnv::Live { "live" } else { "test" };
            return Err(ApiError::invalid("session_id", format!("this deployment claims {mode}-mode sessions only")));
        }

        let owner = uuid::Uuid::new_v4().to_string();
        let expires = now.plus(CLAIM_RECORD_TTL_S);
        match self
            .store
            .reserve("checkout-claim", &session_id, &owner, &session_id, CLAIM_LEASE_S, expires, now)
            .await?
        {
            Reservation::Fresh => {}
            Reservation::InProgress { .. } => {
                return Err(ApiError::Conflict("This session is being claimed right now; retry in a moment.".into()));
            }
            Reservation::Done { result, .. } => {
                let key_id = KeyId::parse(&result).map_err(|e| ApiError::Internal(Box::new(e)))?;
                let key = self.store.get_key(&key_id).await?.ok_or(ApiError::NotFound("key"))?;
                return Err(ApiError::AlreadyClaimed {
                    message: "This Checkout session's key was already issued; it is shown only once.".into(),
                    key_id: key.key_id.as_str().to_owned(),
                    display: key.display,
                });
            }
        }
        let issued = self.issue_claimed_key(claimable, &session_id, now).await;
        match issued {
            Ok((key, record)) => {
                if let Err(e) =
                    self.store.finish("checkout-claim", &session_id, &owner, record.key_id.as_str(), expires).await
                {
                    tracing::error!(error = %e, key_id = %record.key_id, "could not record the claim");
                }
                tracing::info!(key_id = %record.key_id, customer_id = %record.customer_id, source = source.unwrap_or("-"), "checkout claimed");
                ok(StatusCode::CREATED, issued_json(&key, &record, now))
            }
            Err(e) => {
                if let Err(release) = self.store.release("checkout-claim", &session_id, &owner).await {
                    tracing::warn!(error = %release, "could not release the claim");
                }
                Err(e)
            }
        }
    }

    async fn issue_claimed_key(
        &self,
        claimable: checkout::Claimable,
        session_id: &str,
        now: UnixTime,
    ) -> Result<(ApiKey, KeyRecord), ApiError> {
        match self.billing.apply(&claimable.input, now).await {
            Ok(Applied::Synced { .. }) => {}
            Ok(Applied::Conflict(conflict)) => {
                tracing::warn!(session_id, error = %conflict, "claim refused: the customer is linked elsewhere");
                return Err(ApiError::Refused {
                    status: 409,
                    code: "customer_conflict",
                    message: "This session's customer is already linked to another Stripe customer.".into(),
                });
            }
            Err(BillingError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(ApiError::Unfinished(e.to_string())),
        }
        let key = ApiKey::generate(claimable.env).map_err(|e| ApiError::Internal(Box::new(e)))?;
        let record = self
            .store
            .create_key(NewKey {
                name: Some("Stripe Checkout".into()),
                metadata: [("checkout_session".to_owned(), session_id.to_owned())].into_iter().collect(),
                // No plan of its own: it follows the customer's, which the subscription's price decides.
                ..NewKey::new(&key, claimable.customer_id, None, now)
            })
            .await?;
        Ok((key, record))
    }

    // ---- customers ----

    async fn get_customer(&self, id: &str) -> Reply {
        let id = CustomerId::parse(id)?;
        let customer = self.store.get_customer(&id).await?.ok_or(ApiError::NotFound("customer"))?;
        let keys = self.store.customer_key_ids(&id).await?;
        ok(StatusCode::OK, to_json(&CustomerView::new(&customer, &keys)))
    }

    /// The customer's meter ledgers per day, as of the last rollup run.
    async fn customer_usage(&self, id: &str, query: &str, now: UnixTime) -> Reply {
        let days = parse_history_days(query)?;
        let id = CustomerId::parse(id)?;
        if self.store.get_customer(&id).await?.is_none() {
            return Err(ApiError::NotFound("customer"));
        }
        let ledgers = self.store.customer_usage(&id, now.day().minus(days - 1)).await?;
        let history: Vec<_> = ledgers
            .iter()
            .map(|(m, l)| {
                json!({
                    "day": m.day.iso(), "meter": m.meter, "allowed": l.usage.allowed, "denied": l.usage.denied,
                    "reported": l.reported, "unbilled": l.unbilled, "pending": l.pending.as_ref().map_or(0, |p| p.value),
                })
            })
            .collect();
        ok(StatusCode::OK, json!({ "customer_id": id.as_str(), "history": history }))
    }
}

/// Whether `Authorization: Bearer <token>` presents `expected`, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, expected: &SecretString) -> bool {
    let presented = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(bearer_token)
        .unwrap_or("");
    // Compare digests so neither the content nor the length leaks through timing.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    bool::from(a.ct_eq(&b))
}

/// `?days=N` (default 30) of a usage history.
fn parse_history_days(query: &str) -> Result<i64, ApiError> {
    let mut days = 30;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "days" => {
                days = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=HISTORY_DAYS).contains(n))
                    .ok_or_else(|| ApiError::invalid("days", format!("must be an integer 1..={HISTORY_DAYS}")))?
            }
            other => return Err(ApiError::invalid(other, "unknown query parameter")),
        }
    }
    Ok(days)
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

fn plan_from(id: PlanId, input: PlanInput, created_at: UnixTime, now: UnixTime) -> Result<Plan, ApiError> {
    let plan = Plan {
        id,
        name: input.name,
        rate_limit: input.rate_limit,
        quota: input.quota,
        stripe_price_ids: input.stripe_price_ids,
        meter_event_name: input.meter_event_name,
        created_at,
        updated_at: now,
    };
    plan.validate()?;
    Ok(plan)
}

fn parse_plan_id(s: &str, field: &str) -> Result<PlanId, ApiError> {
    PlanId::parse(s).map_err(|e| ApiError::Invalid(ValidationError::new(field, e.message)))
}

fn parse_key_id(s: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(s).map_err(|e| ApiError::invalid("key_id", e.to_string()))
}

fn parse_future_time(s: &str, field: &str, now: UnixTime) -> Result<UnixTime, ApiError> {
    let t = UnixTime::parse_rfc3339(s)
        .map_err(|_| ApiError::invalid(field, "must be an RFC 3339 timestamp, e.g. 2027-01-31T00:00:00Z"))?;
    if t <= now {
        return Err(ApiError::invalid(field, "must be in the future"));
    }
    Ok(t)
}

fn issued_json(key: &ApiKey, record: &KeyRecord, now: UnixTime) -> serde_json::Value {
    to_json(&IssuedKeyView { key: key.expose_secret(), record: KeyView::new(record, now) })
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // Views are plain data (strings, numbers, maps with string keys): serialising cannot fail.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn respond(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<String> {
    let mut resp = Response::new(if body.is_null() { String::new() } else { body.to_string() });
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if !body.is_null() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    resp
}
