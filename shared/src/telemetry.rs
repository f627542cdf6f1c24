//! Logging set-up: JSON in Lambda (so CloudWatch Logs Insights can query fields), readable
//! text on a terminal. Level from `RUST_LOG`, else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else info.
//!
//! Whatever the filter says, other crates never log below a ceiling: the Lambda runtime logs
//! every raw event at TRACE (an authorizer event carries the API key, a management request
//! the bearer token, a create-key response the plaintext), and HTTP stacks log at DEBUG and
//! TRACE what they carry. Tollgate's own crates log at any level and never log a key or secret.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Tollgate's crates: these may log at any level.
const OURS: &[&str] = &["shared", "authorizer", "issue_key", "stripe_webhook", "usage_rollup", "tollgate"];

/// The most verbose level a target may log at, whatever `RUST_LOG` says.
pub fn ceiling(target: &str) -> Level {
    let root = target.split("::").next().unwrap_or(target);
    if OURS.contains(&root) || root.starts_with("tollgate_") {
        Level::TRACE
    } else if root.starts_with("aws_sdk_") || root.starts_with("aws_smithy_") || root == "aws_config" {
        // The SDK's retry and connection decisions; requests carry no key or Stripe secret,
        // and its wire-level TRACE output is cut off.
        Level::DEBUG
    } else {
        Level::INFO
    }
}

fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= ceiling(meta.target())
}

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
    let layer = if json {
        fmt::layer().json().flatten_event(true).with_current_span(true).without_time().with_target(false).boxed()
    } else {
        fmt::layer().with_ansi(!in_lambda).with_target(false).boxed()
    };
    // try_init: a second call (tests, the local stack hosting several handlers) is harmless.
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter).with_filter(filter_fn(allowed))).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_are_capped_and_ours_are_not() {
        assert_eq!(ceiling("lambda_runtime::layers::api_response"), Level::INFO);
        assert_eq!(ceiling("lambda_http"), Level::INFO);
        assert_eq!(ceiling("hyper_util::client"), Level::INFO);
        assert_eq!(ceiling("aws_smithy_runtime::client::orchestrator"), Level::DEBUG);
        assert_eq!(ceiling("shared::app::authorize"), Level::TRACE);
        assert_eq!(ceiling("tollgate_dev::gateway"), Level::TRACE);
    }
}
