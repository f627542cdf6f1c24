//! The local stack (`tollgate_dev`, the handlers behind one HTTP server on in-process Dynoxide)
//! under an HTTP load generator on loopback: `scripts/load.sh` runs wrk (installing it when
//! absent) against `GET /proxy/hello` with a valid key whose plan has no limits, so every
//! request is authorized, counted and proxied to the built-in echo.

use std::path::Path;
use std::process::Command;

pub struct LoadResult {
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors and timeouts, plus responses other than 2xx/3xx.
    pub errors: u64,
}

/// Runs `scripts/load.sh` against `url` and parses its `TOLLGATE_LOAD` line.
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
