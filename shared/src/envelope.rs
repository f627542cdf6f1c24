//! The one JSON envelope of every HTTP surface Tollgate serves (the management API, the
//! webhook, the local gateway): a JSON body (or none), `x-request-id`, and for errors
//! `{"error":{"code","message",...},"request_id"}` (docs/api.md, "Errors").

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

/// An error's `error` object: `code` and `message`, then any fields the error adds
/// (`field`, `retry_after`, ...).
pub fn error_object(code: &str, message: &str, extra: Map<String, Value>) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    error.extend(extra);
    Value::Object(error)
}

/// The whole error body: the error object and the request id that finds it in the logs.
pub fn error_body(error: Value, request_id: &str) -> Value {
    json!({ "error": error, "request_id": request_id })
}

/// A response with `body` as JSON (no body, and no content type, for `Value::Null`) and the
/// request id header.
pub fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response<String> {
    let mut resp = Response::new(if body.is_null() { String::new() } else { body.to_string() });
    *resp.status_mut() = status;
    if !body.is_null() {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    set_request_id(&mut resp, request_id);
    resp
}

/// An error response: `status` and the error body for `code` and `message`.
pub fn error_response(status: u16, code: &str, message: &str, request_id: &str) -> Response<String> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error_body(error_object(code, message, Map::new()), request_id), request_id)
}

/// Names the request in its response (a request id that is not a header value is left out).
pub fn set_request_id<B>(resp: &mut Response<B>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_code_message_extras_and_the_request_id() {
        let resp = error_response(429, "too_many_attempts", "slow down", "req-1");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["x-request-id"], "req-1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_str(resp.body()).unwrap();
        assert_eq!(
            body,
            json!({ "error": { "code": "too_many_attempts", "message": "slow down" }, "request_id": "req-1" })
        );
        let extra = Map::from_iter([("retry_after".to_owned(), Value::from(60))]);
        assert_eq!(error_object("c", "m", extra)["retry_after"], 60);
    }

    #[test]
    fn no_body_is_no_body_and_a_bad_request_id_is_left_out() {
        let resp = json_response(StatusCode::NO_CONTENT, &Value::Null, "bad\nid");
        assert!(resp.body().is_empty());
        assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        assert!(resp.headers().get("x-request-id").is_none());
    }
}
