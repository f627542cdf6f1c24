//! Authorizing one request, from the credentials a client sent to a [`Decision`] and the
//! context and headers a gateway returns. Shared by the Lambda authorizer and the local stack;
//! it knows nothing of API Gateway's event shapes.

use crate::config::FailMode;
use crate::domain::decision::{Decision, Denial};
use crate::domain::keys::{ApiKey, KeyHash, KeyId};
use crate::domain::time::UnixTime;
use crate::store::{AuthorizeStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key a client presented: `x-api-key`, else `Authorization: Bearer <key>`. Header names
/// are matched case-insensitively, as HTTP requires.
pub fn presented_key<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    let mut bearer = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-api-key") {
            let v = value.trim();
            if !v.is_empty() {
                return Some(v);
            }
        } else if name.eq_ignore_ascii_case("authorization") && bearer.is_none() {
            bearer = bearer_token(value);
        }
    }
    bearer
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Remembers which key id a key hash belongs to. The mapping never changes once written, so
/// positive entries never go stale; negative ones expire quickly. This is what makes the
/// steady state one DynamoDB request per decision.
struct KeyIdCache {
    entries: Mutex<HashMap<KeyHash, Entry>>,
    capacity: usize,
    negative_ttl: Duration,
}

enum Entry {
    Known(KeyId),
    Unknown(Instant),
}

impl KeyIdCache {
    fn get(&self, hash: &KeyHash) -> Option<Option<KeyId>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(hash)? {
            Entry::Known(id) => Some(Some(id.clone())),
            Entry::Unknown(at) if at.elapsed() < self.negative_ttl => Some(None),
            Entry::Unknown(_) => None,
        }
    }

    fn put(&self, hash: KeyHash, id: Option<KeyId>) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            // Simple and bounded: a full cache starts over; the cost is one lookup per key.
            entries.clear();
        }
        entries.insert(hash, id.map_or_else(|| Entry::Unknown(Instant::now()), Entry::Known));
    }
}

pub struct Authorizer<S> {
    store: S,
    fail_mode: FailMode,
    cache: KeyIdCache,
}

impl<S: AuthorizeStore> Authorizer<S> {
    pub fn new(store: S, fail_mode: FailMode) -> Self {
        Self {
            store,
            fail_mode,
            cache: KeyIdCache {
                entries: Mutex::new(HashMap::new()),
                capacity: 50_000,
                negative_ttl: Duration::from_secs(10),
            },
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Decides one request. Never fails: storage trouble becomes a decision per the fail mode.
    pub async fn decide(&self, presented: Option<&str>, now: UnixTime) -> Decision {
        let Some(raw) = presented.map(str::trim).filter(|s| !s.is_empty()) else {
            return Decision::denied(Denial::MissingKey);
        };
        // Format and checksum first: garbage never reaches storage.
        let Ok(key) = ApiKey::parse(raw) else {
            return Decision::denied(Denial::InvalidKey);
        };
        let hash = key.hash();
        let key_id = match self.cache.get(&hash) {
            Some(Some(id)) => id,
            Some(None) => return Decision::denied(Denial::InvalidKey),
            None => match self.store.key_id_for_hash(&hash).await {
                Ok(found) => {
                    self.cache.put(hash, found.clone());
                    match found {
                        Some(id) => id,
                        None => return Decision::denied(Denial::InvalidKey),
                    }
                }
                Err(e) => return self.unavailable(&e),
            },
        };
        let span = tracing::info_span!("authorize", key_id = %key_id);
        let _guard = span.enter();
        match self.store.authorize_and_count(&key_id, &hash, now).await {
            Ok(decision) => decision,
            Err(e) => self.unavailable(&e),
        }
    }

    fn unavailable(&self, err: &StoreError) -> Decision {
        tracing::error!(error = %err, source = ?std::error::Error::source(err), fail_mode = ?self.fail_mode, "storage unavailable during authorization");
        match self.fail_mode {
            FailMode::Closed => Decision::denied(Denial::Unavailable),
            FailMode::Open => Decision { outcome: Ok(()), key: None, rate: None, quota: None, degraded: true },
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::CustomerId;
    use crate::domain::decision::KeyContext;
    use crate::domain::limits::LimitStatus;

    #[test]
    fn keys_come_from_x_api_key_then_bearer() {
        assert_eq!(presented_key([("X-Api-Key", "tg_a"), ("authorization", "Bearer tg_b")]), Some("tg_a"));
        assert_eq!(presented_key([("AUTHORIZATION", "bearer  tg_b "), ("x-api-key", " ")]), Some("tg_b"));
        assert_eq!(presented_key([("authorization", "Basic dXNlcg==")]), None);
        assert_eq!(presented_key([("authorization", "Bearer")]), None);
        assert_eq!(presented_key([("accept", "*/*")]), None);
        assert_eq!(bearer_token("Bearer tg_x"), Some("tg_x"));
    }

    #[test]
    fn context_and_headers_for_a_rate_limited_key() {
        let now = UnixTime(1_000);
        let d = Decision {
            outcome: Err(Denial::RateLimited),
            key: Some(KeyContext {
                key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
                customer_id: CustomerId::parse("acme").unwrap(),
                plan_id: None,
            }),
            rate: Some(LimitStatus { limit: 100, used: 100, reset: UnixTime(1_022), window_s: 60 }),
            quota: None,
            degraded: false,
        };
        let ctx = AuthorizerContext::from_decision(&d, now);
        assert_eq!((ctx.code.as_str(), ctx.status, ctx.retry_after), ("rate_limited", 429, Some(22)));
        let headers = ctx.rate_limit_headers();
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("RateLimit-Policy"), Some("\"default\";q=100;w=60"));
        assert_eq!(get("RateLimit"), Some("\"default\";r=0;t=22"));
        assert_eq!(get("X-RateLimit-Remaining"), Some("0"));
        assert_eq!(get("Retry-After"), Some("22"));
        // Flat JSON with no nulls: API Gateway accepts only primitive context values.
        let json = serde_json::to_value(&ctx).unwrap();
        assert!(json.as_object().unwrap().values().all(|v| !v.is_null() && !v.is_object() && !v.is_array()));
    }
}
