//! A typed client for Tollgate's management API ([docs/openapi.yaml](../../docs/openapi.yaml)):
//! the `tollgate` CLI and the tests use it. Each call answers the typed body, or an
//! [`Error`] carrying the API's `code` and `message`.
//!
//! The models accept fields they do not know (a newer server); the tests compare every model
//! with what the local stack answers, field for field, so the client cannot drift from the
//! spec the server is held to.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http::{Method, Request};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::http_client::HttpClient;
use std::time::Duration;

mod models;
pub use models::*;

/// Every operation the client calls, as `(method, path template)`; the tests check each
/// against docs/openapi.yaml.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("GET", "/v1/plans"),
    ("POST", "/v1/plans"),
    ("GET", "/v1/plans/{plan_id}"),
    ("DELETE", "/v1/plans/{plan_id}"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys/{key_id}"),
    ("PATCH", "/v1/keys/{key_id}"),
    ("POST", "/v1/keys/{key_id}/rotate"),
    ("POST", "/v1/keys/{key_id}/revoke"),
    ("GET", "/v1/keys/{key_id}/usage"),
    ("GET", "/v1/customers/{customer_id}"),
    ("GET", "/v1/customers/{customer_id}/usage"),
    ("GET", "/v1/stats"),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error envelope.
    #[error("{code}: {message} (HTTP {status})")]
    Api { status: u16, code: String, message: String, request_id: Option<String> },
    /// No answer: the endpoint could not be reached, or timed out.
    #[error("could not reach {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    /// An answer that is not what the API documents.
    #[error("unexpected answer (HTTP {status}): {reason}")]
    Decode { status: u16, reason: String },
    /// The endpoint is not an http(s) URL with a host.
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// SigV4: no AWS credentials could be found, or the request could not be signed.
    #[error("AWS credentials: {reason}")]
    Credentials { reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How calls authenticate.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`: the local stack's admin token, or a JWT from the
    /// identity provider.
    Bearer(SecretString),
    /// AWS Signature Version 4 (service `execute-api`) for the IAM-authorized management API in
    /// AWS: credentials resolved per call (so refreshed ones are used), the region the API is in.
    SigV4 {
        credentials: SharedCredentialsProvider,
        region: String,
    },
    None,
}

#[derive(Clone)]
pub struct Client {
    http: HttpClient,
    endpoint: String,
    auth: Auth,
}

impl Client {
    /// `endpoint`: the API's base URL, e.g. `http://127.0.0.1:3000`; with `/v1/` at its end as
    /// the stack's outputs print it (ManagementApiUrl, TokenApiUrl) is the same.
    pub fn new(endpoint: &str, auth: Auth) -> Result<Self> {
        let invalid = |reason: &str| Error::Endpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
        let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(invalid("it must start with http:// or https://"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("it must not have a query string"));
        }
        let endpoint = endpoint.trim_end_matches('/');
        let endpoint = endpoint.strip_suffix("/v1").unwrap_or(endpoint).to_owned();
        let http = HttpClient::new(Duration::from_secs(30))
            .map_err(|e| Error::Transport { endpoint: endpoint.clone(), reason: e.to_string() })?;
        Ok(Self { http, endpoint, auth })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One call; the body as JSON (`Value::Null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.send(method, path, query, body).await.map(|(_, value)| value)
    }

    /// [`Client::call`], with the status of the successful answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut url = format!("{}{path}", self.endpoint);
        if !query.is_empty() {
            // RFC 3986 (a space is %20, never `+`): the form SigV4's canonical query string uses,
            // so what is signed is exactly what is sent.
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", seg(k), seg(v))).collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let mut req = Request::builder().method(method).uri(&url).header("accept", "application/json");
        if let Auth::Bearer(token) = &self.auth {
            req = req.header("authorization", format!("Bearer {}", token.expose_secret()));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let mut req = req.body(bytes).map_err(|e| Error::Transport { endpoint: url.clone(), reason: e.to_string() })?;
        if let Auth::SigV4 { credentials, region } = &self.auth {
            sign_v4(&mut req, credentials, region).await?;
        }
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| Error::Transport { endpoint: self.endpoint.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // API Gateway names its own answers apigw-requestid.
        let request_id = header("x-request-id").or_else(|| header("apigw-requestid"));
        let body = resp.into_body();
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| Error::Decode { status, reason: format!("not JSON: {e}") })?
        };
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        let field = |k: &str| value["error"][k].as_str().map(str::to_owned);
        match (field("code"), field("message"), value["message"].as_str()) {
            (Some(code), Some(message), _) => Err(Error::Api { status, code, message, request_id }),
            // API Gateway's own refusals (IAM, throttling, no route): {"message": "..."}.
            (None, None, Some(message)) if (400..600).contains(&status) => Err(Error::Api {
                status,
                code: gateway_code(status).to_owned(),
                message: message.to_owned(),
                request_id,
            }),
            _ => Err(Error::Decode { status, reason: format!("an error without the API's envelope: {value}") }),
        }
    }

    async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T> {
        let (status, value) = self.send(method, path, query, body).await?;
        serde_json::from_value(value).map_err(|e| Error::Decode { status, reason: e.to_string() })
    }

    pub async fn list_plans(&self) -> Result<PlanList> {
        self.typed(Method::GET, "/v1/plans", &[], None).await
    }

    pub async fn get_plan(&self, id: &str) -> Result<Plan> {
        self.typed(Method::GET, &format!("/v1/plans/{}", seg(id)), &[], None).await
    }

    /// `plan`: the request body (docs/openapi.yaml, `PlanCreateInput`).
    pub async fn create_plan(&self, plan: &Value) -> Result<Plan> {
        self.typed(Method::POST, "/v1/plans", &[], Some(plan)).await
    }

    pub async fn delete_plan(&self, id: &str) -> Result<()> {
        self.call(Method::DELETE, &format!("/v1/plans/{}", seg(id)), &[], None).await.map(|_| ())
    }

    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<KeyList> {
        let mut q = vec![];
        for (name, v) in [
            ("customer_id", &filter.customer_id),
            ("plan_id", &filter.plan_id),
            ("status", &filter.status),
            ("cursor", &filter.cursor),
        ] {
            if let Some(v) = v {
                q.push((name, v.clone()));
            }
        }
        if let Some(limit) = filter.limit {
            q.push(("limit", limit.to_string()));
        }
        self.typed(Method::GET, "/v1/keys", &q, None).await
    }

    pub async fn get_key(&self, id: &str) -> Result<Key> {
        self.typed(Method::GET, &format!("/v1/keys/{}", seg(id)), &[], None).await
    }

    /// `new`: the request body (`KeyCreateInput`).
    pub async fn create_key(&self, new: &Value) -> Result<IssuedKey> {
        self.typed(Method::POST, "/v1/keys", &[], Some(new)).await
    }

    /// `patch`: the request body (`KeyPatchInput`), e.g. `{"status": "disabled"}`.
    pub async fn update_key(&self, id: &str, patch: &Value) -> Result<Key> {
        self.typed(Method::PATCH, &format!("/v1/keys/{}", seg(id)), &[], Some(patch)).await
    }

    pub async fn rotate_key(&self, id: &str, grace_s: Option<u64>) -> Result<IssuedKey> {
        let body = match grace_s {
            Some(g) => serde_json::json!({ "grace_s": g }),
            None => serde_json::json!({}),
        };
        self.typed(Method::POST, &format!("/v1/keys/{}/rotate", seg(id)), &[], Some(&body)).await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<Key> {
        self.typed(Method::POST, &format!("/v1/keys/{}/revoke", seg(id)), &[], Some(&serde_json::json!({}))).await
    }

    pub async fn key_usage(&self, id: &str, days: Option<u32>) -> Result<Usage> {
        self.typed(Method::GET, &format!("/v1/keys/{}/usage", seg(id)), &days_query(days), None).await
    }

    pub async fn get_customer(&self, id: &str) -> Result<Customer> {
        self.typed(Method::GET, &format!("/v1/customers/{}", seg(id)), &[], None).await
    }

    pub async fn customer_usage(&self, id: &str, days: Option<u32>) -> Result<CustomerUsage> {
        self.typed(Method::GET, &format!("/v1/customers/{}/usage", seg(id)), &days_query(days), None).await
    }

    pub async fn stats(&self, days: Option<u32>) -> Result<Stats> {
        self.typed(Method::GET, "/v1/stats", &days_query(days), None).await
    }

    /// The local stack's `POST /internal/rollup`: one usage rollup run now (in AWS the
    /// schedule runs the rollup function; it has no HTTP route).
    pub async fn run_rollup(&self) -> Result<Value> {
        self.call(Method::POST, "/internal/rollup", &[], None).await
    }
}

fn days_query(days: Option<u32>) -> Vec<(&'static str, String)> {
    days.map(|d| vec![("days", d.to_string())]).unwrap_or_default()
}

/// Everything but RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A path segment, percent-encoded (customer ids may hold `@`, `+`, `:`).
fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// The code for an API Gateway refusal, which carries only a message.
fn gateway_code(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "payload_too_large",
        429 => "rate_limited",
        503 => "unavailable",
        504 => "timeout",
        _ => "gateway_error",
    }
}

/// Signs `req` in place (Authorization, X-Amz-Date, X-Amz-Security-Token for temporary
/// credentials) for API Gateway's IAM authorization: service `execute-api`, the body hashed.
async fn sign_v4(req: &mut Request<Bytes>, credentials: &SharedCredentialsProvider, region: &str) -> Result<()> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let failed = |reason: String| Error::Credentials { reason };
    let identity = credentials
        .provide_credentials()
        .await
        .map_err(|e| {
            // The chain's reasons are in the sources ("no providers in chain provided credentials").
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            failed(reason)
        })?
        .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(e.to_string()))?
        .into();
    let headers: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))).collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        req.uri().to_string(),
        headers.into_iter(),
        SignableBody::Bytes(req.body()),
    )
    .map_err(|e| failed(format!("cannot sign this request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| failed(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation the client calls is one docs/openapi.yaml describes.
    #[test]
    fn every_operation_is_in_the_spec() {
        let spec: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../docs/openapi.yaml")).expect("docs/openapi.yaml parses");
        for (method, path) in OPERATIONS {
            let op = &spec["paths"][*path][method.to_ascii_lowercase()];
            assert!(op.is_mapping(), "{method} {path} is not in docs/openapi.yaml");
        }
    }

    #[test]
    fn an_endpoint_must_be_an_http_url_with_a_host() {
        for bad in ["not a url", "127.0.0.1:3000", "ftp://example.com", "http://", "https://x.test/?a=1", ""] {
            match Client::new(bad, Auth::None) {
                Err(Error::Endpoint { endpoint, .. }) => assert_eq!(endpoint, bad),
                other => panic!("{bad:?}: {:?}", other.map(|c| c.endpoint().to_owned())),
            }
        }
        for (good, base) in [
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("https://abc.execute-api.eu-west-1.amazonaws.com/v1/", "https://abc.execute-api.eu-west-1.amazonaws.com"),
        ] {
            assert_eq!(Client::new(good, Auth::None).map(|c| c.endpoint().to_owned()).ok().as_deref(), Some(base));
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("a@b.c"), "a%40b.c");
        assert_eq!(seg("key_01"), "key_01");
        assert_eq!(seg("x/../y"), "x%2F..%2Fy");
    }
}
