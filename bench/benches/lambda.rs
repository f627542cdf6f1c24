//! The real `authorizer` binary run as Lambda runs it (tests/src/lambda.rs: a child process
//! polling an emulated Lambda Runtime API), with storage on in-process Dynoxide.
//!
//! - cold start: process start to the first `GET .../invocation/next` (Lambda's init phase,
//!   which includes the binary's warm-up `GetItem`), and the first invocation (event handed out
//!   to response received), over fresh processes;
//! - one process through many invocations: warm latency, and peak RSS (`VmHWM`) at the end.

use axum::body::Bytes;
use std::time::{Duration, Instant};
pub use tollgate_tests::lambda::{Emulator, Function};

/// What a bench invocation must answer; anything else means the setup is wrong.
pub type Check = fn(&Bytes) -> Result<(), String>;

/// Cold start of one fresh process: (process start to first `next`, first invocation).
pub async fn cold_start(function: &Function, event: &Bytes, check: Check) -> Result<(Duration, Duration), String> {
    let mut emulator = Emulator::start().await.map_err(|e| format!("runtime API emulator: {e}"))?;
    let result = async {
        let started = Instant::now();
        let process = function.spawn(&emulator)?;
        let invoked = emulator.invoke(event.clone()).await;
        drop(process);
        let invoked = invoked.map_err(|e| format!("{e} (function log: {})", function.log.display()))?;
        check(&invoked.body)?;
        let init = emulator.first_poll().ok_or("the function never polled")? - started;
        Ok((init, invoked.latency))
    }
    .await;
    emulator.stop().await;
    result
}

/// One process through `n` invocations: every invocation's latency, then its peak RSS.
pub async fn sustained(function: &Function, event: &Bytes, n: usize) -> Result<(Vec<Duration>, u64), String> {
    let mut emulator = Emulator::start().await.map_err(|e| format!("runtime API emulator: {e}"))?;
    let result = async {
        let process = function.spawn(&emulator)?;
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let invoked = emulator.invoke(event.clone()).await.map_err(|e| {
                format!("invocation {i} of process {}: {e} (log: {})", process.id(), function.log.display())
            })?;
            if i == 0 || i + 1 == n {
                check_allowed(&invoked.body)?;
            }
            latencies.push(invoked.latency);
        }
        let rss = process.peak_rss()?;
        Ok((latencies, rss))
    }
    .await;
    emulator.stop().await;
    result
}

/// The bench's key is valid and unlimited: anything but an allow means the setup is wrong.
pub fn check_allowed(body: &Bytes) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON ({e}): {body:?}"))?;
    if value["isAuthorized"] == serde_json::Value::Bool(true) {
        Ok(())
    } else {
        Err(format!("expected isAuthorized: true, got {value}"))
    }
}

/// The management API answered 200 (the bench lists plans as an IAM caller).
pub fn check_ok(body: &Bytes) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON ({e}): {body:?}"))?;
    if value["statusCode"] == 200 { Ok(()) } else { Err(format!("expected statusCode 200, got {value}")) }
}
