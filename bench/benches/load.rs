//! The local stack (`tollgate_dev`, the handlers behind one HTTP server on in-process Dynoxide)
//! under an HTTP load generator on loopback: `scripts/load.sh` runs wrk (installing it when
//! absent) against `GET /proxy/hello` with valid keys whose plan has no limits, so every
//! request is authorized, counted and proxied to the built-in echo. Two runs: one key (its
//! decisions share blocks once it runs hot), and 1,000 keys in turn (each request a different
//! key: one counting write per request, what a stack with many quiet customers does).

use super::{Row, fmt_ns, root, row, seed_unlimited, target_dir, verdict};
use shared::domain::api_key::{ApiKey, KeyEnv};
use shared::domain::customers::CustomerId;
use shared::domain::plans::PlanId;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::store::{KeyStore, NewKey};
use std::path::Path;
use std::process::Command;

const SECONDS: u32 = 10;
const CONNECTIONS: u32 = 8;
const MANY_KEYS: usize = 1_000;
const MANY_KEYS_GOAL_RPS: f64 = 5_000.0;
const MEASURE: &str =
    "local stack under wrk on loopback: `GET /proxy/hello`, valid key without limits, built-in echo upstream";

pub struct LoadResult {
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors and timeouts, plus responses other than 2xx/3xx.
    pub errors: u64,
}

/// The one-key row and the 1,000-key row, each on a fresh local stack.
pub fn rows(rt: &tokio::runtime::Runtime) -> Vec<Row> {
    let one = format!("{MEASURE}, {CONNECTIONS} connections, {SECONDS} s");
    let mut rows = vec![match on_local_stack(rt, None, |_| Ok(super::FIXTURE_KEY.to_owned())) {
        Ok(r) => row(format!("{one} ({} requests)", r.requests), summary(&r, ""), "0 errors"),
        Err(e) => row(one, format!("FAILED: {e}"), "0 errors"),
    }];
    let data_dir = target_dir().join("bench-load-data");
    for (storage, data_dir) in [("in memory", None), ("TOLLGATE_DATA_DIR (a file)", Some(data_dir.as_path()))] {
        let many =
            format!("{MEASURE}, {MANY_KEYS} keys in turn, storage {storage}, {CONNECTIONS} connections, {SECONDS} s");
        let goal = ">= 5,000 requests/s, 0 errors";
        rows.push(match on_local_stack(rt, data_dir, |store| rt.block_on(many_keys(store))) {
            Ok(r) => {
                let met = verdict(r.requests as f64 / r.seconds >= MANY_KEYS_GOAL_RPS && r.errors == 0);
                row(format!("{many} ({} requests)", r.requests), summary(&r, met), goal)
            }
            Err(e) => row(many, format!("FAILED: {e}"), goal),
        });
    }
    rows
}

fn summary(r: &LoadResult, verdict: &str) -> String {
    format!(
        "{:.0} requests/s{verdict}, p50 {}, p99 {}, {} errors",
        r.requests as f64 / r.seconds,
        fmt_ns(r.p50_us * 1e3),
        fmt_ns(r.p99_us * 1e3),
        r.errors
    )
}

/// A fresh local stack (in memory, or in a fresh `data_dir`) with the unlimited plan and the
/// fixture key, `keys` seeding what wrk sends (a key, or `@FILE`), then wrk, then the stack
/// stopped.
fn on_local_stack(
    rt: &tokio::runtime::Runtime,
    data_dir: Option<&Path>,
    keys: impl FnOnce(&DynamoStore) -> Result<String, String>,
) -> Result<LoadResult, String> {
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let settings = tollgate_dev::Settings::from_lookup(|k| match k {
        "TOLLGATE_ADDR" => Some("127.0.0.1:0".into()),
        "TOLLGATE_TABLE" => Some("tollgate-bench-load".into()),
        "TOLLGATE_ADMIN_TOKEN" => Some("tga_bench_admin_token".into()),
        "TOLLGATE_DATA_DIR" => data_dir.map(|d| d.display().to_string()),
        _ => None,
    })
    .map_err(|e| format!("settings: {e}"))?;
    let stack = rt.block_on(tollgate_dev::LocalStack::start(settings)).map_err(|e| format!("start: {e}"))?;
    let result = rt
        .block_on(seed_unlimited(stack.store()))
        .and_then(|()| keys(stack.store()))
        .and_then(|key| run(&root(), &format!("{}/proxy/hello", stack.url()), &key, SECONDS, CONNECTIONS));
    rt.block_on(stack.stop());
    result
}

/// `MANY_KEYS` fresh keys on the unlimited plan, one customer each, written one a line to a
/// file under target/: `@` and its path, for scripts/load.sh.
async fn many_keys(store: &DynamoStore) -> Result<String, String> {
    let now = UnixTime::now();
    let plan = PlanId::parse("unlimited").unwrap();
    let mut lines = String::new();
    for i in 0..MANY_KEYS {
        let key = ApiKey::generate(KeyEnv::Test).map_err(|e| format!("generate a key: {e}"))?;
        let customer = CustomerId::parse(&format!("bench-{i}")).unwrap();
        store
            .create_key(NewKey::new(&key, customer, Some(plan.clone()), now))
            .await
            .map_err(|e| format!("create key {i}: {e}"))?;
        lines.push_str(key.expose_secret());
        lines.push('\n');
    }
    let path = target_dir().join("bench-load-keys.txt");
    std::fs::write(&path, lines).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(format!("@{}", path.display()))
}

/// Runs `scripts/load.sh` against `url` (`key`: a key, or `@FILE` of keys) and parses its
/// `TOLLGATE_LOAD` line.
pub fn run(root: &Path, url: &str, key: &str, seconds: u32, connections: u32) -> Result<LoadResult, String> {
    let script = root.join("scripts/load.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args([url, key, &seconds.to_string(), &connections.to_string()])
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "scripts/load.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("TOLLGATE_LOAD "))
        .ok_or_else(|| format!("no TOLLGATE_LOAD line in scripts/load.sh output: {stdout}"))?;
    let field = |name: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| format!("no `{name}` in `{line}`"))?
            .parse::<f64>()
            .map_err(|e| format!("`{name}` in `{line}`: {e}"))
    };
    let errors =
        ["connect", "read", "write", "timeout", "status"].iter().map(|n| field(n)).sum::<Result<f64, String>>()?;
    Ok(LoadResult {
        requests: field("requests")? as u64,
        seconds: field("duration_us")? / 1e6,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        errors: errors as u64,
    })
}
