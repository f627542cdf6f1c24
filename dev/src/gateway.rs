//! API Gateway emulation for `ANY /proxy/{path+}`: the HTTP API payload 2.0 authorizer event a
//! real gateway would send, the authorizer handler the Lambda runs, and the response a client
//! would get: the status and JSON error body on denial (docs/api.md, "Status codes"), the
//! upstream's answer (or the built-in echo) on allow, with the rate-limit headers either way.

use authorizer::handler::{self, HandlerError};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use shared::app::authorize::{Authorizer, AuthorizerContext};
use shared::domain::time::UnixTime;
use shared::envelope;
use shared::http_client::HttpClient;
use shared::store::AuthorizeStore;
use std::net::SocketAddr;
use time::OffsetDateTime;
use time::macros::format_description;

/// What the gateway passes on: one incoming request, already read.
pub struct ProxyRequest {
    pub method: Method,
    /// The path after `/proxy` (always starts with `/`).
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub source_ip: SocketAddr,
    pub request_id: String,
}

/// Where allowed requests go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The built-in echo: method, path and authorizer context as JSON.
    Echo,
    /// `TOLLGATE_UPSTREAM`, e.g. `http://127.0.0.1:8080`: the path after `/proxy` is appended.
    Url(String),
}

pub struct Gateway<S> {
    authorizer: Authorizer<S>,
    upstream: Upstream,
    http: HttpClient,
}

const API_ID: &str = "tollgate-local";
const STAGE: &str = "$default";
const ROUTE_KEY: &str = "ANY /proxy/{proxy+}";

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Whether a client's header goes on to the upstream. Never hop-by-hop headers, never the API
/// key (`x-api-key`, or an `Authorization: Bearer` that carried one: like Kong's
/// `hide_credentials`, so keys do not land in the upstream's access logs), and never a
/// client-sent `x-tollgate-*` header: the upstream gets exactly one set of those, the gateway's.
fn forwarded(name: &http::HeaderName, value: &HeaderValue) -> bool {
    let name = name.as_str();
    if HOP_BY_HOP.contains(&name) || name == "x-api-key" || name.starts_with("x-tollgate-") {
        return false;
    }
    if name == header::AUTHORIZATION.as_str() {
        let carries_key =
            value.to_str().ok().and_then(shared::app::authorize::bearer_token).is_some_and(|t| t.starts_with("tg_"));
        return !carries_key;
    }
    true
}

impl<S: AuthorizeStore> Gateway<S> {
    pub fn new(authorizer: Authorizer<S>, upstream: Upstream, http: HttpClient) -> Self {
        Self { authorizer, upstream, http }
    }

    /// The authorizer the gateway runs (its sweep and final settlement are the stack's).
    pub fn authorizer(&self) -> &Authorizer<S> {
        &self.authorizer
    }

    pub async fn handle(&self, req: ProxyRequest, now: UnixTime) -> Response<Bytes> {
        let event = authorizer_event(&req, now);
        let context = match handler::handle(&self.authorizer, event, now).await {
            Ok(response) => match serde_json::from_value::<AuthorizerContext>(response["context"].clone()) {
                Ok(context) => context,
                Err(e) => return error_response(500, "internal_error", &e.to_string(), &req.request_id),
            },
            // API Gateway answers 500 when the authorizer fails; the local gateway says why.
            Err(HandlerError::Unavailable) => {
                return error_response(
                    503,
                    "authorization_unavailable",
                    shared::domain::decision::Denial::AuthorizationUnavailable.message(),
                    &req.request_id,
                );
            }
            Err(e) => return error_response(500, "internal_error", &e.to_string(), &req.request_id),
        };
        let mut resp = if context.is_allowed() {
            match &self.upstream {
                Upstream::Echo => echo(&req, &context),
                Upstream::Url(base) => self.forward(base, &req, &context).await,
            }
        } else {
            error_response(context.status, &context.code, &context.message, &req.request_id)
        };
        for (name, value) in context.rate_limit_headers() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }

    async fn forward(&self, base: &str, req: &ProxyRequest, context: &AuthorizerContext) -> Response<Bytes> {
        let mut uri = format!("{}{}", base.trim_end_matches('/'), req.path);
        if !req.query.is_empty() {
            uri.push('?');
            uri.push_str(&req.query);
        }
        let mut out = http::Request::builder().method(req.method.clone()).uri(&uri);
        for (name, value) in &req.headers {
            if forwarded(name, value) {
                out = out.header(name, value);
            }
        }
        // What an API Gateway integration would map from $context.authorizer.*.
        for (name, value) in [
            ("x-tollgate-key-id", context.key_id.as_deref()),
            ("x-tollgate-customer-id", context.customer_id.as_deref()),
            ("x-tollgate-plan-id", context.plan_id.as_deref()),
        ] {
            if let Some(v) = value {
                out = out.header(name, v);
            }
        }
        let out = match out.body(req.body.clone()) {
            Ok(r) => r,
            Err(e) => return error_response(502, "bad_upstream_request", &e.to_string(), &req.request_id),
        };
        match self.http.send(out).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for name in HOP_BY_HOP {
                    parts.headers.remove(name);
                }
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, body)
            }
            Err(e) => {
                tracing::warn!(error = %e, upstream = %base, "upstream request failed");
                error_response(
                    502,
                    "upstream_unavailable",
                    &format!("The upstream API did not answer: {e}"),
                    &req.request_id,
                )
            }
        }
    }
}

/// The HTTP API (payload format 2.0) REQUEST authorizer event for `req`, as API Gateway builds
/// it: lower-cased headers with repeated values comma-joined, cookies split out, the route ARN.
pub fn authorizer_event(req: &ProxyRequest, now: UnixTime) -> Value {
    let mut headers = Map::new();
    let mut cookies = vec![];
    for (name, value) in &req.headers {
        let Ok(value) = value.to_str() else { continue };
        if name == header::COOKIE {
            cookies.extend(value.split(';').map(|c| Value::from(c.trim())));
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), value.into());
            }
        }
    }
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(req.query.as_bytes()) {
        match query.get_mut(k.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k.into_owned(), v.into_owned().into());
            }
        }
    }
    let raw_path = format!("/proxy{}", req.path);
    let route_arn = format!("arn:aws:execute-api:local:000000000000:{API_ID}/{STAGE}/{}{raw_path}", req.method);
    let user_agent = req.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    // API Gateway leaves out `cookies` and `queryStringParameters` when there are none.
    let mut event = json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": route_arn,
        "routeKey": ROUTE_KEY,
        "rawPath": raw_path,
        "rawQueryString": req.query,
        "headers": headers,
        "pathParameters": { "proxy": req.path.trim_start_matches('/') },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": API_ID,
            "domainName": "127.0.0.1",
            "domainPrefix": API_ID,
            "http": {
                "method": req.method.as_str(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": req.source_ip.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": req.request_id,
            "routeKey": ROUTE_KEY,
            "stage": STAGE,
            "time": gateway_time(now),
            "timeEpoch": now.secs() * 1000,
        },
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    event
}

/// API Gateway's `requestContext.time`: `12/Mar/2020:19:03:58 +0000`.
fn gateway_time(now: UnixTime) -> String {
    let format = format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    OffsetDateTime::from_unix_timestamp(now.secs()).ok().and_then(|t| t.format(&format).ok()).unwrap_or_default()
}

fn echo(req: &ProxyRequest, context: &AuthorizerContext) -> Response<Bytes> {
    let body = json!({
        "method": req.method.as_str(),
        "path": req.path,
        "query": req.query,
        "authorizer": context,
        "request_id": req.request_id,
    });
    json_response(StatusCode::OK, &body, &req.request_id)
}

/// The error body (`shared::envelope`; docs/api.md, "Errors"), as the gateway's response type.
pub fn error_response(status: u16, code: &str, message: &str, request_id: &str) -> Response<Bytes> {
    envelope::error_response(status, code, message, request_id).map(Bytes::from)
}

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response<Bytes> {
    envelope::json_response(status, body, request_id).map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_what_api_gateway_sends() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Api-Key", HeaderValue::from_static("tg_test_x"));
        headers.append("accept", HeaderValue::from_static("text/plain"));
        headers.append("accept", HeaderValue::from_static("application/json"));
        headers.insert("cookie", HeaderValue::from_static("a=1; b=2"));
        let req = ProxyRequest {
            method: Method::POST,
            path: "/pets/7".into(),
            query: "q=1&q=2&x=y".into(),
            headers,
            body: Bytes::new(),
            source_ip: "127.0.0.1:5000".parse().unwrap(),
            request_id: "req-1".into(),
        };
        let event = authorizer_event(&req, UnixTime(1_583_348_638));
        assert_eq!(event["rawPath"], "/proxy/pets/7");
        assert_eq!(event["headers"]["x-api-key"], "tg_test_x");
        assert_eq!(event["headers"]["accept"], "text/plain,application/json");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["queryStringParameters"], json!({"q": "1,2", "x": "y"}));
        assert_eq!(event["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(
            event["routeArn"],
            "arn:aws:execute-api:local:000000000000:tollgate-local/$default/POST/proxy/pets/7"
        );
        // The typed event the Lambda handler parses.
        assert!(matches!(handler::AuthorizerEvent::parse(event), Ok(handler::AuthorizerEvent::HttpApi(_))));
    }
}
