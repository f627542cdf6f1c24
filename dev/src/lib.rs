//! The local stack: the handlers the Lambdas run, behind one HTTP server, on in-process
//! Dynoxide (or any DynamoDB endpoint). `make dev` runs it; the end-to-end tests start it on a
//! free port.

pub mod cli;
pub mod gateway;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use console::Console;
use gateway::{Gateway, ProxyRequest, Upstream};
use issue_key::api::{ManagementApi, bearer_matches};
use issue_key::error::ApiError;
use issue_key::extract::RequestContext;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use shared::app::authorize::{Authorizer, AuthorizerOptions};
use shared::app::rollup::{Rollup, RollupOptions, RunStatus};
use shared::config::{Config, ConfigError, Secrets};
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::customers::CustomerId;
use shared::domain::plans::{Period, Plan, PlanId, Quota, RateLimit};
use shared::domain::time::UnixTime;
use shared::http_client::HttpClient;
use shared::identity::jwt::{JwtSettings, JwtVerifier};
use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::{KeyStore, NewKey, PlanStore, StoreError};
use shared::stripe::api::StripeApi;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stripe_webhook::handler::Webhook;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";
pub const DEFAULT_TABLE: &str = "tollgate";
pub const DEFAULT_ROLLUP_INTERVAL_S: u64 = 60;
/// Largest request body the local gateway accepts (API Gateway HTTP APIs allow 10 MB).
const MAX_PROXY_BODY: usize = 10 * 1024 * 1024;
/// Emulators serve many clients one request at a time: give a decision longer than Lambda's
/// 0.9 s before it counts as unavailable.
const LOCAL_DECISION_BUDGET: Duration = Duration::from_secs(10);

/// Where the local stack keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In-process Dynoxide: in memory, or in a SQLite file under the directory.
    Embedded { data_dir: Option<PathBuf> },
    /// `TOLLGATE_DYNAMODB_ENDPOINT` (moto, DynamoDB Local, another Dynoxide).
    Endpoint(String),
    /// Real DynamoDB, from the usual AWS environment (`TOLLGATE_STORAGE=aws`).
    Aws,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub storage: Storage,
    pub table: String,
    pub admin_token: SecretString,
    /// Generated for this run when not configured.
    pub admin_token_generated: bool,
    /// Every configured webhook secret (rotation); the generated one when none is.
    pub webhook_secrets: Secrets,
    pub webhook_tolerance_s: i64,
    pub upstream: Upstream,
    /// Fail mode, fail-open window and key environment (`TOLLGATE_FAIL_MODE`, ...).
    pub authorizer: AuthorizerOptions,
    pub past_due_grace_s: u64,
    /// `TOLLGATE_JWT_*`: sign-in with an identity provider beside the admin token.
    pub jwt: Option<JwtSettings>,
    /// `STRIPE_API_KEY` and `STRIPE_API_BASE`, for the Checkout claim and the rollup's reports.
    pub stripe: Option<(String, SecretString)>,
    /// `TOLLGATE_ROLLUP_INTERVAL_S`: the usage rollup runs this often (0: only on
    /// `POST /internal/rollup`).
    pub rollup_interval_s: u64,
    /// `TOLLGATE_CONSOLE_CONFIG`: how the console at `/console/` signs in.
    pub console: Console,
    pub seed: bool,
}

impl Settings {
    /// From the environment, with local defaults: `TOLLGATE_ADDR`, `TOLLGATE_DATA_DIR`,
    /// `TOLLGATE_DYNAMODB_ENDPOINT`, `TOLLGATE_TABLE`, `TOLLGATE_ADMIN_TOKEN`,
    /// `STRIPE_WEBHOOK_SECRET`, `TOLLGATE_UPSTREAM`, and the shared variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let config = Config::from_lookup(|k| match k {
            "TOLLGATE_TABLE" => Some(get(k).unwrap_or_else(|| DEFAULT_TABLE.into())),
            _ => get(k),
        })?;
        let addr = get("TOLLGATE_ADDR").unwrap_or_else(|| DEFAULT_ADDR.into());
        let addr = addr.parse().map_err(|_| ConfigError::Invalid {
            name: "TOLLGATE_ADDR",
            reason: format!("`{addr}` is not an address like {DEFAULT_ADDR}"),
        })?;
        let storage = match (config.dynamodb_endpoint.clone(), get("TOLLGATE_STORAGE").as_deref()) {
            (Some(endpoint), _) => Storage::Endpoint(endpoint),
            (None, Some("aws")) => Storage::Aws,
            (None, None | Some("embedded")) => {
                Storage::Embedded { data_dir: get("TOLLGATE_DATA_DIR").map(PathBuf::from) }
            }
            (None, Some(other)) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_STORAGE",
                    reason: format!("expected `embedded` or `aws`, got `{other}`"),
                });
            }
        };
        let upstream = match get("TOLLGATE_UPSTREAM") {
            None => Upstream::Echo,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Upstream::Url(u),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_UPSTREAM",
                    reason: "must be an http:// or https:// URL".into(),
                });
            }
        };
        let authorizer = AuthorizerOptions::from_config(&config);
        let (admin_token, admin_token_generated) = match config.admin_token {
            Some(t) => (t, false),
            None => (SecretString::from(format!("tga_{}", random_token())), true),
        };
        let rollup_interval_s = match get("TOLLGATE_ROLLUP_INTERVAL_S") {
            None => DEFAULT_ROLLUP_INTERVAL_S,
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                name: "TOLLGATE_ROLLUP_INTERVAL_S",
                reason: format!("`{v}` is not a whole number of seconds (0 turns the timer off)"),
            })?,
        };
        let webhook_secrets = if config.stripe_webhook_secrets.is_empty() {
            Secrets::parse(&format!("whsec_{}", random_token()))
        } else {
            config.stripe_webhook_secrets.clone()
        };
        Ok(Self {
            addr,
            storage,
            webhook_secrets,
            webhook_tolerance_s: config.stripe_webhook_tolerance_s,
            table: config.table,
            admin_token,
            admin_token_generated,
            upstream,
            authorizer,
            past_due_grace_s: config.past_due_grace_s,
            jwt: config.jwt,
            stripe: config.stripe_api_key.map(|k| (config.stripe_api_base, k)),
            rollup_interval_s,
            console: Console::from_config(get("TOLLGATE_CONSOLE_CONFIG").as_deref())?,
            seed: false,
        })
    }
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..32).map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rng.random_range(0..36)])).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Embedded(#[from] shared::store::embedded::EmbeddedError),
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("storage is not usable: {0}")]
    Storage(#[from] StoreError),
    #[error("could not set up the HTTP client: {0}")]
    Http(#[from] shared::http_client::HttpError),
}

/// The demo plan and key `--seed` creates.
pub struct Demo {
    pub plan_id: String,
    pub key_id: String,
    pub key: String,
}

pub struct LocalStack {
    pub addr: SocketAddr,
    pub settings: Settings,
    pub demo: Option<Demo>,
    pub storage_description: String,
    store: DynamoStore,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    rollup_timer: Option<JoinHandle<()>>,
    /// The authorizer's sweep: hot keys' blocks settled within 2 s of their last decision,
    /// denials answered from memory counted (docs/authorizer.md, "Concurrency").
    sweeper: JoinHandle<()>,
    app: Arc<App>,
    embedded: Option<EmbeddedDynamo>,
}

struct App {
    gateway: Gateway<DynamoStore>,
    webhook: Webhook<DynamoStore>,
    rollup: Rollup<DynamoStore>,
    admin_token: SecretString,
    console: Console,
}

impl LocalStack {
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        let (endpoint, embedded, storage_description) = match &settings.storage {
            Storage::Embedded { data_dir: None } => {
                let db = EmbeddedDynamo::start_in_memory().await?;
                (Some(db.endpoint().to_owned()), Some(db), "embedded Dynoxide, in memory".to_owned())
            }
            Storage::Embedded { data_dir: Some(dir) } => {
                let file = dir.join("tollgate.sqlite3");
                let db = EmbeddedDynamo::start_persistent(&file).await?;
                let description = format!("embedded Dynoxide, persisted in {}", file.display());
                (Some(db.endpoint().to_owned()), Some(db), description)
            }
            Storage::Endpoint(e) => (Some(e.clone()), None, format!("DynamoDB endpoint {e}")),
            Storage::Aws => (None, None, "DynamoDB in the configured AWS account".to_owned()),
        };
        let client = match &endpoint {
            Some(e) => build_client(ClientOptions::local(e.clone())).await,
            None => build_client(ClientOptions::default()).await,
        };
        let store = DynamoStore::new(client, settings.table.clone()).with_decision_budget(LOCAL_DECISION_BUDGET);
        store.create_table_if_missing().await?;
        let demo = if settings.seed { Some(seed(&store).await?) } else { None };

        let http = HttpClient::new(Duration::from_secs(30))?;
        let mut api = ManagementApi::new(store.clone(), Some(settings.admin_token.clone()))
            .with_key_env(settings.authorizer.key_env);
        let stripe = match &settings.stripe {
            Some((base, key)) => StripeApi::configured(base, Some(key))?,
            None => None,
        };
        if let Some(stripe) = &stripe {
            api = api.with_stripe(stripe.clone(), settings.past_due_grace_s);
        }
        if let Some(jwt) = &settings.jwt {
            api = api.with_jwt(Arc::new(JwtVerifier::new(jwt.clone())?));
        }
        let app = Arc::new(App {
            gateway: Gateway::new(
                Authorizer::with_options(store.clone(), settings.authorizer.clone()),
                settings.upstream.clone(),
                http,
            ),
            webhook: Webhook::new(
                store.clone(),
                settings.webhook_secrets.clone(),
                settings.webhook_tolerance_s,
                settings.past_due_grace_s,
            ),
            rollup: Rollup::new(
                store.clone(),
                stripe,
                RollupOptions { identifier_namespace: settings.table.clone(), ..RollupOptions::default() },
            ),
            admin_token: settings.admin_token.clone(),
            console: settings.console.clone(),
        });
        let sweeper = tokio::spawn({
            let app = app.clone();
            async move { app.gateway.authorizer().sweep_forever().await }
        });
        let rollup_timer = (settings.rollup_interval_s > 0)
            .then(|| tokio::spawn(rollup_timer(app.clone(), Duration::from_secs(settings.rollup_interval_s))));
        // The management API's own router answers /v1/... and every path the local stack has
        // no route for; it authenticates the caller itself (admin token or JWT): no gateway
        // stands in front of it here.
        let management = api.service().map_request(|mut req: Request| {
            let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
            let ctx = RequestContext { request_id: request_id(), caller: None, source, now: None };
            req.extensions_mut().insert(ctx);
            req
        });
        let router = Router::new()
            .route("/proxy", any(proxy))
            .route("/proxy/", any(proxy))
            .route("/proxy/{*path}", any(proxy))
            .route("/stripe/webhook", post(stripe_webhook))
            .route("/internal/rollup", post(run_rollup))
            .route("/health", get(|| async { "ok" }))
            .route("/metrics", get(metrics))
            .route("/console", any(console))
            .route("/console/", any(console))
            .route("/console/{*path}", any(console))
            .with_state(app.clone())
            .fallback_service(management);
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .map_err(|source| StartError::Bind { addr: settings.addr, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: settings.addr, source })?;
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(Self {
            addr,
            settings,
            demo,
            storage_description,
            store,
            shutdown: Some(tx),
            server: Some(server),
            rollup_timer,
            sweeper,
            app,
            embedded,
        })
    }

    /// The webhook secret to sign with (the first configured, or the one generated).
    pub fn webhook_secret(&self) -> &str {
        self.settings.webhook_secrets.iter().next().unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store the handlers use (tests arrange state through it).
    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    pub fn admin_token(&self) -> &str {
        self.settings.admin_token.expose_secret()
    }

    /// Stops accepting requests, lets those in flight finish, settles what the authorizer
    /// holds (every block and the denials it answered from memory), then stops the database.
    pub async fn stop(mut self) {
        if let Some(timer) = self.rollup_timer.take() {
            // A run cut short leaves its lease to expire; nothing it did is lost (docs/data-model.md).
            timer.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Err(e)) => tracing::error!(error = %e, "server error"),
                Err(e) => tracing::error!(error = %e, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.sweeper.abort();
        let settled = self.app.gateway.authorizer().settle_leases(UnixTime::now(), true).await;
        tracing::info!(settled, "stopping: the authorizer's blocks settled");
        if let Some(db) = self.embedded.take() {
            db.stop().await;
        }
    }
}

/// The demo plan (5 requests a minute, so the walk-through reaches 429 quickly; 1,000 a day)
/// and a fresh demo key. Re-seeding a persisted store keeps the plan and issues another key.
async fn seed(store: &DynamoStore) -> Result<Demo, StoreError> {
    let now = UnixTime::now();
    let plan_id = PlanId::parse("demo").map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let plan = Plan {
        id: plan_id.clone(),
        name: "Demo".into(),
        rate_limit: Some(RateLimit { limit: 5, window_s: 60 }),
        quota: Some(Quota { limit: 1_000, period: Period::Day }),
        stripe_price_ids: vec![],
        meter_event_name: Some("api_requests".into()),
        max_keys: None,
        created_at: now,
        updated_at: now,
    };
    match store.create_plan(&plan).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    let key = ApiKey::generate(KeyEnv::Test).map_err(|e| StoreError::Backend(Box::new(e)))?;
    let record = store
        .create_key(NewKey {
            name: Some("Demo key".into()),
            ..NewKey::new(
                &key,
                CustomerId::parse("demo-customer").map_err(|e| StoreError::Corrupt(e.to_string()))?,
                Some(plan_id),
                now,
            )
        })
        .await?;
    Ok(Demo { plan_id: "demo".into(), key_id: record.key_id.as_str().to_owned(), key: key.expose_secret().to_owned() })
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn proxy(State(app): State<Arc<App>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_PROXY_BODY).await else {
        let msg = format!("The request body is larger than {MAX_PROXY_BODY} bytes.");
        return into_axum(gateway::error_response(413, "body_too_large", &msg, &request_id));
    };
    let path = parts.uri.path().strip_prefix("/proxy").unwrap_or("").to_owned();
    let req = ProxyRequest {
        method: parts.method,
        path: if path.is_empty() { "/".into() } else { path },
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
        source_ip: peer,
        request_id,
    };
    into_axum(app.gateway.handle(req, UnixTime::now()).await)
}

async fn stripe_webhook(State(app): State<Arc<App>>, req: Request) -> Response {
    let request_id = request_id();
    let (parts, body) = req.into_parts();
    // One byte over the handler's limit, so it answers 413 itself.
    let Ok(body) = axum::body::to_bytes(body, stripe_webhook::handler::MAX_BODY_BYTES + 1).await else {
        let msg = "The request body is too large.";
        return into_axum(gateway::error_response(413, "body_too_large", msg, &request_id));
    };
    app.webhook.handle(&parts.headers, &body, &request_id, UnixTime::now()).await.map(Body::from).into_response()
}

/// `GET /metrics`: what this process counted (decisions, rollup runs, webhook deliveries), in
/// the Prometheus text format.
async fn metrics() -> Response {
    let body = shared::metrics::global().prometheus();
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn console(State(app): State<Arc<App>>, req: Request) -> Response {
    into_axum(app.console.respond(req.method(), req.uri().path(), req.headers()))
}

/// The usage rollup every `every`, as EventBridge Scheduler runs it in AWS.
async fn rollup_timer(app: Arc<App>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = app.rollup.run(UnixTime::now()).await {
            tracing::warn!(error = %e, "scheduled usage rollup failed; the next run retries");
        }
    }
}

/// `POST /internal/rollup` (admin token): one rollup run now; answers with what it did.
async fn run_rollup(State(app): State<Arc<App>>, req: Request) -> Response {
    let request_id = request_id();
    if !bearer_matches(req.headers(), &app.admin_token) {
        let e = ApiError::Unauthorized;
        return into_axum(gateway::error_response(e.status(), e.code(), &e.to_string(), &request_id));
    }
    match app.rollup.run(UnixTime::now()).await {
        Ok(report) if report.status == Some(RunStatus::Busy) => {
            let msg = "Another rollup run holds the lease; try again when it has finished.";
            into_axum(gateway::error_response(409, "rollup_in_progress", msg, &request_id))
        }
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "usage rollup failed");
            let msg = "The rollup could not read or write storage; nothing was lost, run it again.";
            into_axum(gateway::error_response(503, "storage_unavailable", msg, &request_id))
        }
    }
}

fn into_axum(resp: http::Response<Bytes>) -> Response {
    resp.map(Body::from).into_response()
}
