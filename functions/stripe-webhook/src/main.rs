//! The Stripe webhook Lambda, behind a Function URL (payload 2.0; lambda_http decodes a
//! base64 body to its raw bytes, which is what the signature covers).

use lambda_http::{Body, Request, RequestExt, service_fn};
use shared::config::Config;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use stripe_webhook::handler::Webhook;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let config = Config::load().await?;
    let secrets = config.require_webhook_secrets()?.clone();
    let store = DynamoStore::connect_warm(&config).await;
    let webhook = Webhook::new(store, secrets, config.stripe_webhook_tolerance_s, config.past_due_grace_s);
    let webhook = &webhook;
    lambda_http::run(service_fn(move |req: Request| async move {
        let request_id = req.lambda_context_ref().map(|c| c.request_id.clone()).unwrap_or_default();
        let resp = webhook.handle(req.headers(), req.body().as_ref(), &request_id, UnixTime::now()).await;
        // Deliveries are few: each one's line is written before the invocation ends.
        shared::metrics::flush_emf(true);
        Ok::<_, lambda_http::Error>(resp.map(Body::from))
    }))
    .await
}
