//! A fault-injecting DynamoDB proxy: a loopback HTTP server in front of Dynoxide or moto that
//! forwards every request and, per rule, answers a throttling error or a 500 instead, adds
//! latency, or drops the connection before or *after* the request was applied. The store under
//! test talks to it through the real SDK, so every fault arrives the way DynamoDB's would.
//!
//! Rules match an operation (the `X-Amz-Target` suffix, e.g. `UpdateItem`) or every operation,
//! fire on every matching request or on a seeded fraction of them, and may be limited to a
//! number of firings.
//!
//! It is also the hot-partition simulator: [`FaultProxy::limit_item_writes`] makes it enforce
//! DynamoDB's per-item write capacity (about 1,000 write units a second for one item, which a
//! write whose condition fails spends too), answering `ProvisionedThroughputExceededException`
//! past it, on a clock the test may drive.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

type Response = http::Response<Full<Bytes>>;

/// What a rule does to a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ProvisionedThroughputExceededException` (not forwarded).
    ProvisionedThroughputExceeded,
    /// 400 `ThrottlingException` (not forwarded).
    Throttling,
    /// 500 `InternalServerError` (not forwarded).
    ServerError,
    /// 400 `TransactionConflictException` (not forwarded): a transaction holds the item.
    TransactionConflict,
    /// 400 `ValidationException` (not forwarded): refused as malformed, never worth a retry.
    Validation,
    /// Waits this long, then forwards: past the client's timeout the request may still be
    /// applied after the client gave up.
    Latency(Duration),
    /// Forwards, lets DynamoDB apply it, then drops the connection without the answer.
    DropAfterApply,
    /// Drops the connection without forwarding (nothing applied).
    DropBeforeApply,
}

impl Fault {
    /// The error DynamoDB would answer, for the faults that answer one (not forwarded).
    fn refusal(self) -> Option<Response> {
        let (status, kind, message) = match self {
            Self::ProvisionedThroughputExceeded => (
                400,
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            ),
            Self::Throttling => (
                400,
                "com.amazon.coral.availability#ThrottlingException",
                "Rate of requests exceeds the allowed throughput.",
            ),
            Self::ServerError => (500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "Internal server error"),
            Self::Validation => {
                (400, "com.amazon.coral.validate#ValidationException", "One or more parameter values were invalid")
            }
            Self::TransactionConflict => (
                400,
                "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                "Transaction is ongoing for the item",
            ),
            Self::Latency(_) | Self::DropAfterApply | Self::DropBeforeApply => return None,
        };
        Some(error(status, kind, message))
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    op: Option<String>,
    fault: Fault,
    /// Fires on this fraction of matching requests (1.0: all).
    rate: f64,
    /// Fires at most this many times.
    times: Option<u64>,
}

impl Rule {
    /// A rule for one operation (`"UpdateItem"`, `"TransactWriteItems"`, ...).
    pub fn on(op: &str, fault: Fault) -> Self {
        Self { op: Some(op.to_owned()), fault, rate: 1.0, times: None }
    }

    /// A rule for every operation.
    pub fn any(fault: Fault) -> Self {
        Self { op: None, fault, rate: 1.0, times: None }
    }

    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    rng: Mutex<u64>,
    forwarded: AtomicU64,
    injected: Mutex<Vec<(String, Fault)>>,
    /// Every request forwarded: (operation, JSON body).
    seen: Mutex<Vec<(String, Bytes)>>,
    capacity: Mutex<Option<ItemCapacity>>,
    transactions: Mutex<Option<Transactions>>,
}

/// DynamoDB's transaction isolation: an item in a TransactWriteItems in flight refuses every
/// other write to it (another transaction is cancelled with `TransactionConflict`, a single
/// write answered `TransactionConflictException`), neither forwarded.
struct Transactions {
    /// How long a transaction holds its items before it is forwarded (real transactions take
    /// milliseconds; the emulators answer in microseconds).
    hold: Duration,
    /// Items held, with how many transactions in flight hold them.
    held: HashMap<String, usize>,
    /// Writes refused for a conflict.
    conflicts: u64,
}

/// Per-item write capacity: writes per second per item, on `clock` (epoch seconds).
struct ItemCapacity {
    per_second: u64,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Per item (table and key): (second, write units spent in it).
    spent: HashMap<String, (i64, u64)>,
    /// Per item: writes forwarded, and writes refused for capacity.
    writes: HashMap<String, (u64, u64)>,
}

/// The items a write request writes: `TableName` + `Key` (or the key attributes of a
/// PutItem's `Item`), one per item of a TransactWriteItems.
fn written_items(op: &str, body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return vec![] };
    let one = |req: &serde_json::Value| -> Option<String> {
        let table = req["TableName"].as_str()?;
        let key = match req.get("Key") {
            Some(k) => k.clone(),
            None => serde_json::json!({ "pk": req["Item"]["pk"], "sk": req["Item"]["sk"] }),
        };
        Some(format!("{table}/{}", key))
    };
    match op {
        "UpdateItem" | "PutItem" | "DeleteItem" => one(&v).into_iter().collect(),
        "TransactWriteItems" => {
            let mut out = vec![];
            for item in v["TransactItems"].as_array().into_iter().flatten() {
                for kind in ["Put", "Update", "Delete", "ConditionCheck"] {
                    if let Some(k) = item.get(kind).and_then(one) {
                        out.push(k);
                    }
                }
            }
            out
        }
        _ => vec![],
    }
}

pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: shared::http_client::HttpClient,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to `upstream` (e.g. `TestDb::endpoint`) on a free loopback port; `seed` makes
    /// the fractional rules repeatable.
    pub async fn start(upstream: &str, seed: u64) -> Self {
        let shared = Arc::new(Shared { rng: Mutex::new(seed | 1), ..Shared::default() });
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: shared::http_client::HttpClient::new(Duration::from_secs(60)).expect("http client"),
            shared: shared.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        // hyper per connection rather than a framework, so that a rule can close the very
        // connection a request came on, with no answer written.
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let cut = Arc::new(Notify::new());
                    let service = {
                        let cut = cut.clone();
                        hyper::service::service_fn(move |req| {
                            let (proxy, cut) = (proxy.clone(), cut.clone());
                            async move { Ok::<_, std::convert::Infallible>(forward(proxy, req, cut).await) }
                        })
                    };
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        // Dropping the connection future closes the socket, answer unwritten.
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { endpoint, shared, server }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of the store's own build that talks through this proxy, with these timeouts.
    pub async fn client(&self, attempt_timeout: Duration, operation_timeout: Duration) -> aws_sdk_dynamodb::Client {
        shared::store::dynamo::build_client(shared::store::dynamo::ClientOptions {
            endpoint: Some(self.endpoint.clone()),
            counter: None,
            attempt_timeout,
            operation_timeout,
        })
        .await
    }

    pub fn inject(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Removes every rule: from now on every request is forwarded as it is.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Every fault injected so far: (operation, fault).
    pub fn injected(&self) -> Vec<(String, Fault)> {
        self.shared.injected.lock().unwrap().clone()
    }

    pub fn injected_count(&self, fault: Fault) -> usize {
        self.injected().iter().filter(|(_, f)| *f == fault).count()
    }

    /// Requests that reached the database.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Every request that reached the database: (operation, JSON body), in order.
    pub fn seen(&self) -> Vec<(String, Bytes)> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The hot-partition simulator: from now on, at most `per_second` write units per item
    /// per second of `clock` (epoch seconds; a test may drive it), each write one unit (the
    /// items are small), a write whose condition fails included; past it,
    /// `ProvisionedThroughputExceededException`, not forwarded.
    pub fn limit_item_writes(&self, per_second: u64, clock: Arc<dyn Fn() -> i64 + Send + Sync>) {
        *self.shared.capacity.lock().unwrap() =
            Some(ItemCapacity { per_second, clock, spent: HashMap::new(), writes: HashMap::new() });
    }

    /// Simulates transaction isolation from now on ([`Transactions`]): each TransactWriteItems
    /// holds its items for `hold` before it is forwarded, and until it is answered.
    pub fn simulate_transactions(&self, hold: Duration) {
        *self.shared.transactions.lock().unwrap() = Some(Transactions { hold, held: HashMap::new(), conflicts: 0 });
    }

    /// Writes refused because a transaction in flight held an item they write.
    pub fn transaction_conflicts(&self) -> u64 {
        self.shared.transactions.lock().unwrap().as_ref().map_or(0, |t| t.conflicts)
    }

    /// Under [`FaultProxy::limit_item_writes`]: per item whose key (as the request's JSON, e.g.
    /// `{"pk":{"S":"KEY#..."},"sk":{"S":"KEY"}}`) contains `needle`: (writes forwarded,
    /// writes refused for capacity).
    pub fn item_writes(&self, needle: &str) -> (u64, u64) {
        let capacity = self.shared.capacity.lock().unwrap();
        let Some(c) = capacity.as_ref() else { return (0, 0) };
        c.writes.iter().filter(|(k, _)| k.contains(needle)).fold((0, 0), |(a, b), (_, (w, t))| (a + w, b + t))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    /// The fault for one request of `op`, if a rule fires.
    fn pick(&self, op: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        for rule in rules.iter_mut() {
            if rule.op.as_deref().is_some_and(|o| o != op) || rule.times == Some(0) {
                continue;
            }
            if rule.rate < 1.0 && self.next_unit() >= rule.rate {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            self.injected.lock().unwrap().push((op.to_owned(), rule.fault));
            return Some(rule.fault);
        }
        None
    }

    /// Under the per-item capacity: whether every item the request writes has a unit left this
    /// second (all spend one, or none does).
    fn admit_writes(&self, op: &str, body: &[u8]) -> bool {
        let mut capacity = self.capacity.lock().unwrap();
        let Some(c) = capacity.as_mut() else { return true };
        let items = written_items(op, body);
        if items.is_empty() {
            return true;
        }
        let now = (c.clock)();
        let full = items.iter().any(|k| matches!(c.spent.get(k), Some((s, n)) if *s == now && *n >= c.per_second));
        for k in &items {
            let w = c.writes.entry(k.clone()).or_default();
            if full {
                w.1 += 1;
            } else {
                w.0 += 1;
                let spent = c.spent.entry(k.clone()).or_insert((now, 0));
                if spent.0 != now {
                    *spent = (now, 0);
                }
                spent.1 += 1;
            }
        }
        !full
    }

    /// Under [`FaultProxy::simulate_transactions`]: `Err` with the answer when a transaction in
    /// flight holds an item the request writes; else, for a transaction, the items it now
    /// holds (released by the guard) and how long to hold them before forwarding.
    fn isolate(self: &Arc<Self>, op: &str, body: &[u8]) -> Result<Option<(Held, Duration)>, Box<Response>> {
        let mut transactions = self.transactions.lock().unwrap();
        let Some(t) = transactions.as_mut() else { return Ok(None) };
        let items = written_items(op, body);
        let conflicting: Vec<bool> = items.iter().map(|k| t.held.get(k).is_some_and(|n| *n > 0)).collect();
        if conflicting.iter().any(|c| *c) {
            t.conflicts += 1;
            if op != "TransactWriteItems" {
                return Err(Box::new(Fault::TransactionConflict.refusal().expect("an error answer")));
            }
            let reasons: Vec<serde_json::Value> = conflicting
                .iter()
                .map(|c| match c {
                    true => serde_json::json!({ "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item" }),
                    false => serde_json::json!({ "Code": "None" }),
                })
                .collect();
            let body = serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
                "CancellationReasons": reasons,
            });
            return Err(Box::new(
                http::Response::builder()
                    .status(400)
                    .header("content-type", "application/x-amz-json-1.0")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("response"),
            ));
        }
        if op != "TransactWriteItems" {
            return Ok(None);
        }
        for k in &items {
            *t.held.entry(k.clone()).or_default() += 1;
        }
        Ok(Some((Held { shared: self.clone(), items }, t.hold)))
    }

    /// xorshift64*: a repeatable fraction in [0, 1).
    fn next_unit(&self) -> f64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A transaction's items, held until it is answered (or its connection dropped).
struct Held {
    shared: Arc<Shared>,
    items: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(t) = self.shared.transactions.lock().unwrap().as_mut() {
            for k in &self.items {
                if let Some(n) = t.held.get_mut(k) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": kind, "message": message }).to_string();
    http::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "fault-proxy")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// Closes the connection the request came on and never answers.
async fn dropped(cut: &Notify) -> Response {
    cut.notify_one();
    std::future::pending().await
}

async fn forward(proxy: Proxy, req: http::Request<Incoming>, cut: Arc<Notify>) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned();
    if !proxy.shared.admit_writes(&op, &body) {
        return Fault::ProvisionedThroughputExceeded.refusal().expect("an error answer");
    }
    let _held = match proxy.shared.isolate(&op, &body) {
        Err(conflict) => return *conflict,
        Ok(Some((held, hold))) => {
            tokio::time::sleep(hold).await;
            Some(held)
        }
        Ok(None) => None,
    };
    let fault = proxy.shared.pick(&op);
    if let Some(answer) = fault.and_then(Fault::refusal) {
        return answer;
    }
    match fault {
        Some(Fault::DropBeforeApply) => return dropped(&cut).await,
        Some(Fault::Latency(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let mut out = http::Request::builder().method(parts.method).uri(format!("{}{}", proxy.upstream, parts.uri));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            out = out.header(name, value);
        }
    }
    proxy.shared.seen.lock().unwrap().push((op.clone(), body.clone()));
    let answer = proxy.http.send(out.body(body).expect("request")).await;
    proxy.shared.forwarded.fetch_add(1, Ordering::SeqCst);
    if fault == Some(Fault::DropAfterApply) {
        return dropped(&cut).await;
    }
    match answer {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut r = http::Response::builder().status(parts.status);
            for (name, value) in &parts.headers {
                if name != http::header::TRANSFER_ENCODING && name != http::header::CONTENT_LENGTH {
                    r = r.header(name, value);
                }
            }
            r.body(Full::new(body)).expect("response")
        }
        Err(e) => error(500, "com.amazonaws.dynamodb.v20120810#InternalServerError", &format!("proxy: {e}")),
    }
}
