//! The management API as one axum [`Router`]: the Lambda serves it through `lambda_http`, the
//! local stack mounts it, and the tests call it in process. One module per resource; the
//! handlers take their input already parsed into domain types (`crate::extract`) and answer
//! with an [`Answer`] or an [`ApiError`], which the outer layer writes in the one envelope.

mod claim;
mod customers;
mod keys;
mod me;
mod plans;
mod stats;

use crate::error::{ApiError, Failure};
use crate::extract::RequestContext;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use shared::app::authorize::bearer_token;
use shared::app::billing::Billing;
use shared::app::claim::CheckoutClaim;
use shared::domain::api_key::KeyEnv;
use shared::domain::time::UnixTime;
use shared::envelope;
use shared::identity::Caller;
use shared::identity::jwt::JwtVerifier;
use shared::store::{AttemptStore, BillingStore, CustomerStore, IdempotencyStore, KeyStore, PlanStore, UsageStore};
use shared::stripe::api::StripeApi;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tracing::Instrument;

pub use keys::{DEFAULT_GRACE_S, usage_json};

/// Everything the management API's storage must do.
pub trait ManagementStore:
    KeyStore + PlanStore + CustomerStore + UsageStore + IdempotencyStore + BillingStore + AttemptStore + Clone + 'static
{
}
impl<
    T: KeyStore
        + PlanStore
        + CustomerStore
        + UsageStore
        + IdempotencyStore
        + BillingStore
        + AttemptStore
        + Clone
        + 'static,
> ManagementStore for T
{
}

/// How long one request may spend copying a change onto keys (a plan's, a customer's) before
/// it answers 503 `unfinished` and the same request again continues; inside API Gateway's
/// 30 s integration timeout.
pub const FANOUT_BUDGET: Duration = Duration::from_secs(20);

/// The management API's configuration and collaborators; [`router`](Self::router) serves it.
#[derive(Clone)]
pub struct ManagementApi<S> {
    store: S,
    /// The Checkout claim; without Stripe `GET /v1/claim` answers 501.
    claims: Option<CheckoutClaim<S, StripeApi>>,
    /// When set, every route but the public claim needs `Authorization: Bearer <token>`. In AWS
    /// it is unset and API Gateway's IAM authorization guards the routes instead.
    admin_token: Option<SecretString>,
    routes: Routes,
    /// The deployment's key environment: keys are issued in it only.
    key_env: Option<KeyEnv>,
    /// Sign-in with the seller's identity provider (`TOLLGATE_JWT_*`): one verifier, and its
    /// cached keys, per container.
    jwt: Option<Arc<JwtVerifier>>,
    /// The service [`handle`](Self::handle) answers with, built on first use. Emptied in the
    /// copy the service itself holds, so the two never point at each other.
    in_process: OnceLock<Router>,
}

/// Which routes a deployment of this handler serves (`TOLLGATE_ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routes {
    /// The management API and the public claim, in one process (the local stack, tests).
    #[default]
    All,
    /// The management API without the claim: the management function, so the claim is never
    /// answered with its role, throttle and concurrency (`/v1/claim/` included).
    Management,
    /// Only the public `GET /v1/claim`: the claim function, with a role that can do no more.
    Claim,
}

impl Routes {
    /// `TOLLGATE_ROUTES` for the Lambda: unset is `management` (the claim runs in its own
    /// function); `all` serves both from one.
    pub fn parse(value: Option<&str>) -> Result<Self, shared::config::ConfigError> {
        match value.map(str::trim) {
            None | Some("" | "management") => Ok(Self::Management),
            Some("all") => Ok(Self::All),
            Some("claim") => Ok(Self::Claim),
            Some(other) => Err(shared::config::ConfigError::Invalid {
                name: "TOLLGATE_ROUTES",
                reason: format!("expected `management`, `claim` or `all`, got `{other}`"),
            }),
        }
    }
}

/// A successful answer: status, JSON body (`Null` for none) and any extra headers.
pub struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    headers: Vec<(&'static str, &'static str)>,
}

impl Answer {
    pub fn new(status: StatusCode, body: serde_json::Value) -> Self {
        Self { status, body, headers: vec![] }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut resp = envelope::json_response(self.status, &self.body, "").map(Body::from);
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

pub type Reply = Result<Answer, ApiError>;

fn ok(status: StatusCode, body: serde_json::Value) -> Reply {
    Ok(Answer::new(status, body))
}

/// The handlers' state.
type Api<S> = State<Arc<ManagementApi<S>>>;

impl<S: ManagementStore> ManagementApi<S> {
    pub fn new(store: S, admin_token: Option<SecretString>) -> Self {
        Self {
            store,
            admin_token,
            claims: None,
            routes: Routes::All,
            key_env: None,
            jwt: None,
            in_process: OnceLock::new(),
        }
    }

    /// Serves only `routes`.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self.in_process = OnceLock::new();
        self
    }

    /// Issues keys in `env` only (`TOLLGATE_KEY_ENV`).
    pub fn with_key_env(mut self, env: Option<KeyEnv>) -> Self {
        self.key_env = env;
        self.claims = self.claims.map(|c| c.with_key_env(env));
        self.in_process = OnceLock::new();
        self
    }

    /// Accepts JWTs from the seller's identity provider beside the operator's credentials.
    pub fn with_jwt(mut self, verifier: Arc<JwtVerifier>) -> Self {
        self.jwt = Some(verifier);
        self.in_process = OnceLock::new();
        self
    }

    /// Enables the Checkout claim.
    pub fn with_stripe(mut self, stripe: StripeApi, past_due_grace_s: u64) -> Self {
        // The claim's writer of billing state is the webhook's.
        let billing = Billing::new(self.store.clone(), past_due_grace_s, FANOUT_BUDGET);
        self.claims = Some(CheckoutClaim::new(self.store.clone(), stripe, billing).with_key_env(self.key_env));
        self.in_process = OnceLock::new();
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The whole API as one service: trailing slashes ignored, every answer in the envelope,
    /// every path without a route (outside `/v1` too) a 404. The Lambda serves it; the local
    /// stack answers with it whatever its own routes do not.
    pub fn service(self) -> Router {
        let router = self.routes().fallback(no_route).layer(middleware::from_fn(envelope_layer));
        Router::new().fallback_service(router.map_request(canonical_path))
    }

    /// The routes under `/v1`.
    fn routes(mut self) -> Router {
        let routes = self.routes;
        self.in_process = OnceLock::new();
        let api = Arc::new(self);
        let claim = Router::new().route("/v1/claim", allow("GET", get(claim::claim::<S>)));
        let app = match routes {
            // The claim function answers nothing else, before any authentication.
            Routes::Claim => claim.route("/v1", any(no_route)).route("/v1/{*rest}", any(no_route)),
            Routes::All | Routes::Management => {
                let guarded = Router::new()
                    .route("/v1/plans", allow("GET, POST", get(plans::list::<S>).post(plans::create::<S>)))
                    .route(
                        "/v1/plans/{plan_id}",
                        allow("GET, PUT, DELETE", get(plans::get::<S>).put(plans::put::<S>).delete(plans::delete::<S>)),
                    )
                    .route("/v1/keys", allow("GET, POST", get(keys::list::<S>).post(keys::create::<S>)))
                    .route("/v1/keys/{key_id}", allow("GET, PATCH", get(keys::get::<S>).patch(keys::patch::<S>)))
                    .route("/v1/keys/{key_id}/rotate", allow("POST", axum::routing::post(keys::rotate::<S>)))
                    .route("/v1/keys/{key_id}/revoke", allow("POST", axum::routing::post(keys::revoke::<S>)))
                    .route("/v1/keys/{key_id}/usage", allow("GET", get(keys::usage::<S>)))
                    .route("/v1/customers/{customer_id}", allow("GET", get(customers::get::<S>)))
                    .route("/v1/customers/{customer_id}/usage", allow("GET", get(customers::usage::<S>)))
                    .route("/v1/stats", allow("GET", get(stats::get::<S>)))
                    .route("/v1/me", allow("GET", get(me::get::<S>)))
                    .route("/v1/me/keys", allow("GET, POST", get(me::list::<S>).post(me::create::<S>)))
                    .route("/v1/me/keys/{key_id}", allow("GET, PATCH", get(me::get_key::<S>).patch(me::patch::<S>)))
                    .route("/v1/me/keys/{key_id}/rotate", allow("POST", axum::routing::post(me::rotate::<S>)))
                    .route("/v1/me/keys/{key_id}/revoke", allow("POST", axum::routing::post(me::revoke::<S>)))
                    .route("/v1/me/keys/{key_id}/usage", allow("GET", get(me::key_usage::<S>)))
                    .route("/v1/me/usage", allow("GET", get(me::usage::<S>)))
                    // Unknown paths under /v1 are answered after authentication, as the others.
                    .route("/v1", any(no_route))
                    .route("/v1/{*rest}", any(no_route))
                    .layer(middleware::from_fn_with_state(api.clone(), authenticate::<S>));
                // The management function never answers a claim: there `/v1/claim` is a
                // guarded path like any other unknown one.
                if routes == Routes::All { claim.merge(guarded) } else { guarded }
            }
        };
        app.with_state(api)
    }

    /// Answers one request in process (the tests' and the fuzzer's entry) at `now`, through
    /// the same service the Lambda runs.
    pub async fn handle(&self, req: ApiRequest, now: UnixTime) -> http::Response<String> {
        // Any text may arrive here (the fuzzer's): what a URI cannot hold is percent-encoded,
        // as a client would have sent it.
        const URI_UNSAFE: &percent_encoding::AsciiSet =
            &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}');
        let path = percent_encoding::utf8_percent_encode(&req.path, URI_UNSAFE).to_string();
        let query = percent_encoding::utf8_percent_encode(&req.query, URI_UNSAFE).to_string();
        let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
        let mut request = http::Request::new(Body::from(req.body));
        *request.method_mut() = req.method;
        *request.headers_mut() = req.headers;
        match uri.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => *request.uri_mut() = http::Uri::from_static("/v1/%00"),
        }
        let ctx = RequestContext { request_id: req.request_id, caller: req.caller, source: req.source, now: Some(now) };
        request.extensions_mut().insert(ctx);
        let service = self.in_process.get_or_init(|| self.clone().service()).clone();
        let resp = match service.oneshot(request).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        http::Response::from_parts(parts, String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One management request described in process (tests, the fuzzer).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The path, as a client would write it (`/v1/customers/a%40b`).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub request_id: String,
    /// Who is calling, as the gateway authenticated them.
    pub caller: Option<String>,
    /// The client's address as the gateway saw it.
    pub source: Option<String>,
}

impl ApiRequest {
    /// `method` on `target` (a path, with `?query` if any), with no headers, body or caller.
    pub fn new(method: Method, target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers: HeaderMap::new(),
            body: vec![],
            request_id: "req-in-process".to_owned(),
            caller: None,
            source: None,
        }
    }

    /// With `Authorization: Bearer <token>` (an empty token sends none).
    pub fn bearer(mut self, token: &str) -> Self {
        if !token.is_empty()
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            self.headers.insert(header::AUTHORIZATION, v);
        }
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = id.to_owned();
        self
    }
}

/// `method_router`, with every other method answered 405 naming the allowed ones.
fn allow<S: Clone + Send + Sync + 'static>(allowed: &'static str, method_router: MethodRouter<S>) -> MethodRouter<S> {
    method_router.fallback(move || async move { ApiError::MethodNotAllowed(allowed) })
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// `/v1/plans/` is `/v1/plans`: one spelling per resource.
pub fn canonical_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed }.to_owned();
        with_path(&mut req, &trimmed);
    }
    req
}

/// Replaces the request's path, keeping its query; a path that cannot be a URI leaves it as it was.
pub fn with_path<B>(req: &mut http::Request<B>, path: &str) {
    let rebuilt = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    if let Ok(uri) = rebuilt.parse() {
        *req.uri_mut() = uri;
    }
}

/// Who is calling (docs/api.md, "Roles and sign-in"): the operator by the admin token or by
/// IAM (API Gateway authenticated the principal), else a JWT from the identity provider. A
/// deployment with neither an admin token nor JWTs sits behind IAM on every route: its callers
/// are the operator. The caller goes on to the handlers, whose extractors say what each role may do.
async fn authenticate<S: ManagementStore>(State(api): Api<S>, mut req: Request, next: Next) -> Response {
    let ctx = req.extensions().get::<RequestContext>().cloned().unwrap_or_default();
    let caller = match api.identify(req.headers(), &ctx).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        // Who changed what: every mutating request names its authenticated caller.
        tracing::info!(
            caller = %caller.subject,
            role = caller.role.as_str(),
            source = ctx.source.as_deref().unwrap_or("-"),
            "mutating request"
        );
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

impl<S: ManagementStore> ManagementApi<S> {
    async fn identify(&self, headers: &HeaderMap, ctx: &RequestContext) -> Result<Caller, ApiError> {
        if let Some(expected) = &self.admin_token
            && bearer_matches(headers, expected)
        {
            return Ok(Caller::operator("admin-token"));
        }
        if let Some(principal) = ctx.caller.as_deref() {
            return Ok(Caller::operator(principal));
        }
        let bearer =
            headers.get_all(header::AUTHORIZATION).iter().filter_map(|v| v.to_str().ok()).find_map(bearer_token);
        match (&self.jwt, bearer) {
            (Some(jwt), Some(token)) if token.matches('.').count() == 2 => Ok(jwt.verify(token, ctx.now()).await?),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The outer layer of every answer: the request's span and its log lines (the caller of every
/// mutating request), the error body with the request id, `x-request-id` and `no-store`.
async fn envelope_layer(mut req: Request, next: Next) -> Response {
    let ctx = req.extensions_mut().get_or_insert_default::<RequestContext>();
    if ctx.request_id.is_empty() {
        ctx.request_id = uuid::Uuid::new_v4().to_string();
    }
    let ctx = ctx.clone();
    let span = tracing::info_span!("management", request_id = %ctx.request_id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Some(Failure(error)) = resp.extensions_mut().remove::<Failure>() {
        let body = envelope::error_body(error, &ctx.request_id).to_string();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        *resp.body_mut() = Body::from(body);
    } else {
        span.in_scope(|| tracing::info!(status = resp.status().as_u16(), "request served"));
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    envelope::set_request_id(&mut resp, &ctx.request_id);
    resp
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

/// The plaintext and the key: only in the answer to create, rotate and claim.
fn issued_json(
    key: &shared::domain::api_key::ApiKey,
    record: &shared::domain::key_records::KeyRecord,
    now: UnixTime,
) -> serde_json::Value {
    to_json(&crate::views::IssuedKeyView { key: key.expose_secret(), record: crate::views::KeyView::new(record, now) })
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    // Views are plain data (strings, numbers, maps with string keys): serialising cannot fail.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
