//! A function binary run as Lambda runs it: a child process that polls the Lambda Runtime API
//! (2018-06-01), emulated here on loopback, with only the environment Lambda gives it plus what
//! the caller adds, and the Extensions API's registration (2020-01-01: a function that
//! registers an extension gets SIGTERM before its environment is shut down, which
//! [`Process::terminate`] sends). Used by the log and shutdown tests and the cold-start bench.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long the emulator waits for the function before calling the run failed.
const PATIENCE: Duration = Duration::from_secs(20);
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:tollgate";

/// One invocation as the emulator saw it.
pub struct Invoked {
    pub body: Bytes,
    /// From handing the event out (answer to `next`) to receiving its response.
    pub latency: Duration,
}

/// What the Runtime API handlers share with the driver.
struct RuntimeApi {
    first_poll: OnceLock<Instant>,
    events: Mutex<mpsc::Receiver<Bytes>>,
    /// Invocations handed out and not answered yet: id, when handed out.
    in_flight: StdMutex<std::collections::HashMap<String, Instant>>,
    /// The most invocations in flight at once.
    peak: AtomicU64,
    outcomes: mpsc::UnboundedSender<Result<Invoked, String>>,
    sequence: AtomicU64,
    /// Names of the extensions registered.
    extensions: StdMutex<Vec<String>>,
}

/// The Lambda Runtime API (2018-06-01) for one function process: each event queued by
/// [`invoke`](Self::invoke) is handed to the next `GET .../invocation/next`.
pub struct Emulator {
    pub addr: SocketAddr,
    api: Arc<RuntimeApi>,
    events: Option<mpsc::Sender<Bytes>>,
    outcomes: mpsc::UnboundedReceiver<Result<Invoked, String>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Emulator {
    pub async fn start() -> std::io::Result<Self> {
        let (events_tx, events_rx) = mpsc::channel(1);
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let api = Arc::new(RuntimeApi {
            first_poll: OnceLock::new(),
            events: Mutex::new(events_rx),
            in_flight: StdMutex::new(Default::default()),
            peak: AtomicU64::new(0),
            outcomes: outcomes_tx,
            sequence: AtomicU64::new(0),
            extensions: StdMutex::new(vec![]),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(register_extension))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(Self { addr, api, events: Some(events_tx), outcomes: outcomes_rx, shutdown: Some(tx), server: Some(server) })
    }

    /// The extensions the function registered.
    pub fn extensions(&self) -> Vec<String> {
        self.api.extensions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// When the function first asked for an event: the end of its init phase.
    pub fn first_poll(&self) -> Option<Instant> {
        self.api.first_poll.get().copied()
    }

    /// Queues `event` and waits for the function's response to it.
    pub async fn invoke(&mut self, event: Bytes) -> Result<Invoked, String> {
        let events = self.events.as_ref().ok_or("emulator stopped")?;
        events.send(event).await.map_err(|_| "emulator stopped".to_owned())?;
        match tokio::time::timeout(PATIENCE, self.outcomes.recv()).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Err("emulator stopped".into()),
            Err(_) => Err(format!("no response within {PATIENCE:?}")),
        }
    }

    /// Queues every event at once (a function with `AWS_LAMBDA_MAX_CONCURRENCY` polls for
    /// several) and waits for as many responses, in the order they come.
    pub async fn invoke_all(&mut self, events: Vec<Bytes>) -> Vec<Result<Invoked, String>> {
        let n = events.len();
        let Some(sender) = self.events.clone() else { return vec![Err("emulator stopped".into())] };
        let feeder = tokio::spawn(async move {
            for event in events {
                if sender.send(event).await.is_err() {
                    break;
                }
            }
        });
        let mut outcomes = Vec::with_capacity(n);
        for _ in 0..n {
            match tokio::time::timeout(PATIENCE, self.outcomes.recv()).await {
                Ok(Some(outcome)) => outcomes.push(outcome),
                Ok(None) => outcomes.push(Err("emulator stopped".into())),
                Err(_) => outcomes.push(Err(format!("no response within {PATIENCE:?}"))),
            }
        }
        feeder.abort();
        outcomes
    }

    /// The most invocations the function had in flight at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.api.peak.load(Ordering::Relaxed)
    }

    /// Releases a function still waiting in `next` (it gets 410), then stops the server.
    pub async fn stop(mut self) {
        self.events.take();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.first_poll.get_or_init(Instant::now);
    let Some(event) = api.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let id = format!("invocation-{:08}", api.sequence.fetch_add(1, Ordering::Relaxed));
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(3);
    let headers = [
        ("lambda-runtime-aws-request-id", id.clone()),
        ("lambda-runtime-deadline-ms", deadline.as_millis().to_string()),
        ("lambda-runtime-invoked-function-arn", FUNCTION_ARN.to_owned()),
        ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    let mut in_flight = api.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    in_flight.insert(id, Instant::now());
    api.peak.fetch_max(in_flight.len() as u64, Ordering::Relaxed);
    drop(in_flight);
    (headers, event).into_response()
}

async fn response(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let received = Instant::now();
    let outcome = match api.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
        Some(handed_out) => Ok(Invoked { body, latency: received - handed_out }),
        None => Err(format!("response for `{id}`, which is not in flight")),
    };
    let _ = api.outcomes.send(outcome);
    StatusCode::ACCEPTED
}

async fn invocation_error(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let _ = api.outcomes.send(Err(format!("invocation {id} failed: {}", String::from_utf8_lossy(&body))));
    StatusCode::ACCEPTED
}

/// Extensions API: registration during init; answered as Lambda does, with the extension's id.
async fn register_extension(State(api): State<Arc<RuntimeApi>>, headers: axum::http::HeaderMap) -> Response {
    let name = headers.get("lambda-extension-name").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if name.is_empty() {
        return (StatusCode::BAD_REQUEST, "Lambda-Extension-Name is required").into_response();
    }
    let mut extensions = api.extensions.lock().unwrap_or_else(|e| e.into_inner());
    if api.first_poll.get().is_some() || extensions.contains(&name) {
        // After init, or a name taken: Lambda refuses both.
        return (StatusCode::FORBIDDEN, "extension registration refused").into_response();
    }
    extensions.push(name);
    let id = format!("extension-{}", extensions.len());
    let body = serde_json::json!({ "functionName": "tollgate", "functionVersion": "$LATEST", "handler": "bootstrap" });
    ([("lambda-extension-identifier", id)], axum::Json(body)).into_response()
}

/// Extensions API: the next lifecycle event. The emulator sends none (the extensions it hosts
/// subscribe to none); shutdown comes to the process as SIGTERM.
async fn extension_next() -> Response {
    std::future::pending::<()>().await;
    StatusCode::GONE.into_response()
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: Bytes) -> StatusCode {
    let _ = api.outcomes.send(Err(format!("init failed: {}", String::from_utf8_lossy(&body))));
    StatusCode::ACCEPTED
}

/// Where the function runs: its binary, its name, the environment it gets beyond Lambda's own
/// (table, endpoints, secrets, `RUST_LOG`), and a file for its logs.
pub struct Function {
    pub binary: PathBuf,
    pub name: String,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A running function process, killed on drop.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What Lambda does before it shuts an environment down (when an extension is registered):
    /// SIGTERM, then SIGKILL if the process has not exited within `grace` (Lambda allows 500 ms
    /// with internal extensions only). The exit code, `None` when it had to be killed.
    pub fn terminate(mut self, grace: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("read /proc/{}/status: {e}", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("no VmHWM in /proc/<pid>/status")?;
        let kib: u64 = line
            .trim_start_matches("VmHWM:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .map_err(|e| format!("VmHWM `{line}`: {e}"))?;
        Ok(kib * 1024)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Function {
    /// A function with the table and DynamoDB endpoint every Tollgate function needs.
    pub fn new(binary: PathBuf, name: &str, dynamodb_endpoint: &str, table: &str, log: PathBuf) -> Self {
        let env = vec![
            ("TOLLGATE_TABLE".to_owned(), table.to_owned()),
            ("TOLLGATE_DYNAMODB_ENDPOINT".to_owned(), dynamodb_endpoint.to_owned()),
        ];
        Self { binary, name: name.to_owned(), env, log }
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the binary with only the environment Lambda would give it plus `env`, pointed
    /// at `emulator`. Returns when the process exists.
    pub fn spawn(&self, emulator: &Emulator) -> Result<Process, String> {
        let log = std::fs::File::create(&self.log).map_err(|e| format!("create {}: {e}", self.log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", emulator.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", self.name))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]local")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
            .env("AWS_SECRET_ACCESS_KEY", "local-secret")
            .env("AWS_SESSION_TOKEN", "local-session");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        Ok(Process { child })
    }
}
