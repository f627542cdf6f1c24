//! The management API Lambda (behind API Gateway with IAM authorization): configuration and
//! client built once per cold start, then one request per invocation.

use issue_key::handler::{ApiRequest, ManagementApi, Routes};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, service_fn};
use shared::config::Config;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::stripe::api::StripeApi;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = Config::load().await?;
    let store = DynamoStore::connect_warm(&config).await;
    let routes = Routes::parse(std::env::var("TOLLGATE_ROUTES").ok().as_deref())?;
    let mut api =
        ManagementApi::new(store, config.admin_token.clone()).with_routes(routes).with_key_env(config.key_env);
    // Optional: without a Stripe key the management API works and the claim answers 501.
    if let Some(key) = &config.stripe_api_key {
        let stripe = StripeApi::new(&config.stripe_api_base, key.clone(), Duration::from_secs(10))?;
        api = api.with_stripe(stripe, config.past_due_grace_s);
    }
    let api = &api;
    lambda_http::run(service_fn(move |req: Request| async move {
        let request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
        let (caller, source) = identity(req.request_context_ref());
        let query = req.uri().query().unwrap_or_default().to_owned();
        let (parts, body) = req.into_parts();
        let req = ApiRequest {
            method: parts.method,
            path: management_path(parts.uri.path()),
            query,
            headers: parts.headers,
            body: body.to_vec(),
            request_id,
            caller,
            source,
        };
        let resp = api.handle(req, UnixTime::now()).await;
        Ok::<_, lambda_http::Error>(resp.map(Body::from))
    }))
    .await
}

/// The path from `/v1` on: a REST API may prefix it with its stage.
fn management_path(path: &str) -> String {
    match path.find("/v1") {
        Some(i) => path[i..].to_owned(),
        None => path.to_owned(),
    }
}

/// The IAM principal API Gateway authenticated (HTTP API with IAM authorization), and the
/// client's address as API Gateway saw it.
fn identity(context: Option<&RequestContext>) -> (Option<String>, Option<String>) {
    match context {
        Some(RequestContext::ApiGatewayV2(c)) => (
            c.authorizer.as_ref().and_then(|a| a.iam.as_ref()).and_then(|iam| iam.user_arn.clone()),
            c.http.source_ip.clone(),
        ),
        _ => (None, None),
    }
}
