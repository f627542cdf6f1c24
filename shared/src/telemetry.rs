//! Logging set-up: JSON in Lambda (so CloudWatch Logs Insights can query fields), readable
//! text on a terminal. Level from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info.

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with `default` as the filter when neither variable is set.
pub fn init_with_default(default: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_lowercase()))
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = match std::env::var("AWS_LAMBDA_LOG_FORMAT").ok().as_deref() {
        Some(f) => f.eq_ignore_ascii_case("json"),
        None => in_lambda,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // try_init: a second call (tests, the local stack hosting several handlers) is harmless.
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).without_time().try_init()
    } else {
        builder.with_ansi(!in_lambda).try_init()
    };
}
