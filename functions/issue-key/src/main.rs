//! The management API Lambda (behind API Gateway with IAM authorization): configuration and
//! clients built once per cold start, then the one router serves every invocation
//! (lambda_http hands it each request as an `http::Request`).

use issue_key::api::{ManagementApi, Routes, with_path};
use issue_key::extract::RequestContext;
use lambda_http::request::RequestContext as GatewayContext;
use lambda_http::{Request, RequestExt};
use shared::config::Config;
use shared::identity::jwt::JwtVerifier;
use shared::store::dynamo::DynamoStore;
use shared::stripe::api::StripeApi;
use tower::ServiceExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = Config::load().await?;
    let store = DynamoStore::connect_warm(&config).await;
    let routes = Routes::parse(std::env::var("TOLLGATE_ROUTES").ok().as_deref())?;
    let mut api =
        ManagementApi::new(store, config.admin_token.clone()).with_routes(routes).with_key_env(config.key_env);
    // Optional: without a Stripe key the management API works and the claim answers 501.
    if let Some(stripe) = StripeApi::configured(&config.stripe_api_base, config.stripe_api_key.as_ref())? {
        api = api.with_stripe(stripe, config.past_due_grace_s);
    }
    // Optional: sign-in with the seller's identity provider (role-based;
    // docs/api.md, "Roles and sign-in").
    if let Some(jwt) = &config.jwt {
        api = api.with_jwt(std::sync::Arc::new(JwtVerifier::new(jwt.clone())?));
    }
    lambda_http::run(api.service().map_request(from_gateway)).await
}

/// What API Gateway knows of the request, for the router: Lambda's request id, the IAM
/// principal it authenticated, the client's address; and the path from `/v1` on (a named
/// stage prefixes it).
fn from_gateway(mut req: Request) -> Request {
    let request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    let (caller, source) = match req.request_context_ref() {
        Some(GatewayContext::ApiGatewayV2(c)) => (
            // An IAM-authorized route: the principal's ARN (or id); the token API has none.
            c.authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .map(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()).unwrap_or_else(|| "iam".to_owned())),
            c.http.source_ip.clone(),
        ),
        _ => (None, None),
    };
    req.extensions_mut().insert(RequestContext { request_id, caller, source, now: None });
    if let Some(i) = req.uri().path().find("/v1").filter(|i| *i > 0) {
        let rest = req.uri().path()[i..].to_owned();
        with_path(&mut req, &rest);
    }
    req
}
