//! From an API Gateway authorizer event to its response, for both API types:
//!
//! - HTTP API, payload format 2.0, simple responses: `{isAuthorized, context}`.
//! - REST API, TOKEN and REQUEST authorizers: an IAM policy with the same context. 401-class
//!   denials fail the invocation with `Unauthorized`, which API Gateway turns into 401.
//!
//! Storage trouble in fail-closed mode fails the invocation, so the gateway answers 500 rather
//! than a misleading 401/403.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse, ApiGatewayV2CustomAuthorizerSimpleResponse,
    ApiGatewayV2CustomAuthorizerV2Request,
};
use aws_lambda_events::http::HeaderMap;
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use serde_json::Value;
use shared::app::authorize::{Authorizer, AuthorizerContext, Route, bearer_token, presented_key};
use shared::domain::decision::Denial;
use shared::domain::time::UnixTime;
use shared::store::AuthorizeStore;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The exact message API Gateway's REST authorizers map to 401.
    #[error("Unauthorized")]
    Unauthorized,
    #[error("authorization is temporarily unavailable")]
    Unavailable,
    #[error("unrecognised authorizer event: {0}")]
    BadEvent(String),
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        let error_type = match e {
            HandlerError::Unauthorized => "Unauthorized",
            HandlerError::Unavailable => "Unavailable",
            HandlerError::BadEvent(_) => "BadEvent",
        };
        lambda_runtime::Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
    }
}

/// The three event shapes API Gateway sends a Lambda authorizer.
#[derive(Debug)]
pub enum AuthorizerEvent {
    HttpApi(Box<ApiGatewayV2CustomAuthorizerV2Request>),
    Token(Box<ApiGatewayCustomAuthorizerRequest>),
    Request(Box<ApiGatewayCustomAuthorizerRequestTypeRequest>),
}

impl AuthorizerEvent {
    pub fn parse(event: Value) -> Result<Self, HandlerError> {
        let version = event.get("version").and_then(Value::as_str);
        let kind = event.get("type").and_then(Value::as_str);
        let bad = |e: serde_json::Error| HandlerError::BadEvent(e.to_string());
        match (version, kind) {
            (Some("2.0"), _) => Ok(Self::HttpApi(Box::new(serde_json::from_value(event).map_err(bad)?))),
            (_, Some("TOKEN")) => Ok(Self::Token(Box::new(serde_json::from_value(event).map_err(bad)?))),
            (_, Some("REQUEST")) => Ok(Self::Request(Box::new(serde_json::from_value(event).map_err(bad)?))),
            _ => Err(HandlerError::BadEvent("expected an HTTP API 2.0, TOKEN or REQUEST authorizer event".into())),
        }
    }

    /// The API key the client presented, if any.
    fn presented(&self) -> Option<&str> {
        match self {
            Self::HttpApi(e) => key_from_headers(&e.headers),
            Self::Request(e) => key_from_headers(&e.headers).or_else(|| key_from_headers(&e.multi_value_headers)),
            // A TOKEN authorizer gets only the identity source's value: the key itself, or a
            // full `Bearer <key>` when the identity source is the Authorization header.
            Self::Token(e) => e.authorization_token.as_deref().map(|t| bearer_token(t).unwrap_or(t.trim())),
        }
    }

    /// The method and the path the upstream is asked for, for the scope map: on the HTTP
    /// API the `{proxy+}` path parameter when the route has one (the whole path under the
    /// proxy route), else the raw path less a named stage; on the REST API, the method ARN's
    /// method and path.
    fn route(&self) -> (String, String) {
        match self {
            Self::HttpApi(e) => {
                let method = e.request_context.http.method.as_str().to_owned();
                let path = match e.path_parameters.get("proxy") {
                    Some(proxy) => format!("/{}", proxy.trim_start_matches('/')),
                    None => {
                        let raw = e.raw_path.as_deref().unwrap_or("/");
                        let stage = e.request_context.stage.as_deref().filter(|s| *s != "$default");
                        match stage.and_then(|st| raw.strip_prefix(&format!("/{st}"))) {
                            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
                            _ => raw.to_owned(),
                        }
                    }
                };
                (method, path)
            }
            Self::Token(_) | Self::Request(_) => route_from_arn(self.method_arn().unwrap_or_default()),
        }
    }

    fn method_arn(&self) -> Option<&str> {
        match self {
            Self::HttpApi(e) => e.route_arn.as_deref(),
            Self::Token(e) => e.method_arn.as_deref(),
            Self::Request(e) => e.method_arn.as_deref(),
        }
    }
}

fn key_from_headers(headers: &HeaderMap) -> Option<&str> {
    presented_key(headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))))
}

/// The method and path of `arn:aws:execute-api:region:account:api/stage/METHOD/path`.
pub fn route_from_arn(method_arn: &str) -> (String, String) {
    let mut parts = method_arn.splitn(4, '/');
    let (_, _, method, path) = (parts.next(), parts.next(), parts.next(), parts.next());
    (method.unwrap_or_default().to_owned(), format!("/{}", path.unwrap_or_default()))
}

/// Widens `arn:aws:execute-api:region:account:api/stage/METHOD/path` to every method and path
/// of the stage, so a cached Allow for one route does not deny the API's others.
pub fn stage_wide_resource(method_arn: &str) -> String {
    let mut parts = method_arn.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) => format!("{api}/{stage}/*"),
        _ => method_arn.to_owned(),
    }
}

pub async fn handle<S: AuthorizeStore>(
    authorizer: &Authorizer<S>,
    event: Value,
    now: UnixTime,
) -> Result<Value, HandlerError> {
    let event = AuthorizerEvent::parse(event)?;
    let (method, path) = event.route();
    let decision = authorizer.decide(event.presented(), Route { method: &method, path: &path }, now).await;
    let mut context = AuthorizerContext::from_decision(&decision, now);
    if decision.is_allowed() {
        // The SAM template maps these onto headers for the upstream; a mapping from a context
        // key that is absent could fail the request, so they are always there ("" when there
        // is no plan, or no key at all under fail-open).
        for field in [&mut context.key_id, &mut context.customer_id, &mut context.plan_id] {
            field.get_or_insert_with(String::new);
        }
    }
    if decision.outcome == Err(Denial::AuthorizationUnavailable) {
        return Err(HandlerError::Unavailable);
    }
    let key_id = context.key_id.as_deref().unwrap_or_default();
    let customer_id = context.customer_id.as_deref().unwrap_or_default();
    // What storage decided at info; what memory answered (a hot key's block, a spent limit) at
    // debug: at 10,000 requests a second a line per decision would cost more than the writes.
    match (&decision.outcome, decision.from_memory) {
        (Ok(()), false) => tracing::info!(key_id, customer_id, degraded = decision.degraded, "allowed"),
        (Err(d), false) => tracing::info!(key_id, customer_id, code = d.code(), "denied"),
        (Ok(()), true) => tracing::debug!(key_id, customer_id, "allowed from memory"),
        (Err(d), true) => tracing::debug!(key_id, customer_id, code = d.code(), "denied from memory"),
    }
    let response = match &event {
        AuthorizerEvent::HttpApi(_) => {
            let mut r = ApiGatewayV2CustomAuthorizerSimpleResponse::<AuthorizerContext>::default();
            r.is_authorized = decision.is_allowed();
            r.context = context;
            serde_json::to_value(r)
        }
        AuthorizerEvent::Token(_) | AuthorizerEvent::Request(_) => {
            if decision.outcome.is_err_and(|d| d.status() == 401) {
                return Err(HandlerError::Unauthorized);
            }
            let mut statement = IamPolicyStatement::default();
            statement.action = vec!["execute-api:Invoke".into()];
            statement.effect = if decision.is_allowed() { IamPolicyEffect::Allow } else { IamPolicyEffect::Deny };
            statement.resource = vec![event.method_arn().map(stage_wide_resource).unwrap_or_else(|| "*".into())];
            let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
            policy.version = Some("2012-10-17".into());
            policy.statement = vec![statement];
            let mut r = ApiGatewayCustomAuthorizerResponse::<AuthorizerContext>::default();
            r.principal_id = Some(context.customer_id.clone().unwrap_or_else(|| "anonymous".into()));
            r.policy_document = policy;
            // Lets API Gateway usage plans (API key source AUTHORIZER) attribute the call.
            r.usage_identifier_key = context.key_id.clone().filter(|_| decision.is_allowed());
            r.context = context;
            serde_json::to_value(r)
        }
    };
    response.map_err(|e| HandlerError::BadEvent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_cover_the_whole_stage() {
        assert_eq!(
            stage_wide_resource("arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/GET/pets/1"),
            "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/*"
        );
        assert_eq!(stage_wide_resource("not-an-arn"), "not-an-arn");
    }

    #[test]
    fn the_route_comes_from_the_method_arn() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/POST/pets/1/toys";
        assert_eq!(route_from_arn(arn), ("POST".to_owned(), "/pets/1/toys".to_owned()));
        assert_eq!(route_from_arn("arn:aws:execute-api:r:1:api/prod/GET/"), ("GET".to_owned(), "/".to_owned()));
        assert_eq!(route_from_arn("garbage"), (String::new(), "/".to_owned()));
    }

    #[test]
    fn unknown_events_are_rejected() {
        assert!(matches!(AuthorizerEvent::parse(serde_json::json!({"hello": 1})), Err(HandlerError::BadEvent(_))));
        assert!(matches!(
            AuthorizerEvent::parse(serde_json::json!({"type": "TOKEN", "authorizationToken": 7})),
            Err(HandlerError::BadEvent(_))
        ));
    }
}
