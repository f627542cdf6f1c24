//! What the authorizer tells the gateway: the context and the rate-limit headers.

use crate::domain::decision::Decision;
use crate::domain::time::UnixTime;
use serde::{Deserialize, Serialize};

/// What the authorizer tells the gateway, in both API Gateway shapes and the local stack.
/// Flat, primitive values only: API Gateway rejects nested context values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizerContext {
    /// `ok`, or the denial code.
    pub code: String,
    /// The HTTP status the contract assigns to `code`.
    pub status: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The headline limit (rate limit if any, else quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds until the headline limit resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Allowed without checks because storage was unreachable (fail-open).
    #[serde(default)]
    pub degraded: bool,
}

impl AuthorizerContext {
    pub fn from_decision(d: &Decision, now: UnixTime) -> Self {
        let headline = d.headline();
        let (code, status, message) = match d.outcome {
            Ok(()) => ("ok", 200, "Authorized."),
            Err(denial) => (denial.code(), denial.status(), denial.message()),
        };
        Self {
            code: code.to_owned(),
            status,
            message: message.to_owned(),
            key_id: d.key.as_ref().map(|k| k.key_id.as_str().to_owned()),
            customer_id: d.key.as_ref().map(|k| k.customer_id.as_str().to_owned()),
            plan_id: d.key.as_ref().and_then(|k| k.plan_id.as_ref()).map(|p| p.as_str().to_owned()),
            limit: headline.map(|h| h.limit),
            remaining: headline.map(|h| h.remaining()),
            reset: headline.map(|h| now.until(h.reset)),
            window_s: headline.map(|h| h.window_s),
            retry_after: d.retry_after(now),
            degraded: d.degraded,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.code == "ok"
    }

    /// Response headers for a known key: IETF draft-ietf-httpapi-ratelimit-headers-11
    /// (`RateLimit-Policy`, `RateLimit`), the widespread `X-RateLimit-*`, and `Retry-After`
    /// on 429.
    pub fn rate_limit_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![];
        if let (Some(limit), Some(remaining), Some(reset), Some(window)) =
            (self.limit, self.remaining, self.reset, self.window_s)
        {
            headers.push(("RateLimit-Policy", format!("\"default\";q={limit};w={window}")));
            headers.push(("RateLimit", format!("\"default\";r={remaining};t={reset}")));
            headers.push(("X-RateLimit-Limit", limit.to_string()));
            headers.push(("X-RateLimit-Remaining", remaining.to_string()));
            headers.push(("X-RateLimit-Reset", reset.to_string()));
        }
        if let Some(retry) = self.retry_after {
            headers.push(("Retry-After", retry.to_string()));
        }
        headers
    }
}
