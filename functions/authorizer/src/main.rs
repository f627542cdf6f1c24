//! The authorizer Lambda: configuration, client and cache built once per cold start, then
//! one decision per invocation. Before Lambda shuts the environment down it sends SIGTERM
//! (the runtime registers an extension so that it does): the container then counts and gives
//! back what its hot keys' blocks admitted and left (`shared::domain::lease`).

use authorizer::handler;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::app::authorize::{Authorizer, AuthorizerOptions};
use shared::config::Config;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::from_env()?;
    // Pay for DNS, TCP and TLS during init, not on the first request.
    let store = DynamoStore::connect_warm(&config).await;
    let authorizer: &'static Authorizer<DynamoStore> =
        Box::leak(Box::new(Authorizer::with_options(store, AuthorizerOptions::from_config(&config))));
    // Lambda allows 500 ms after SIGTERM: one write per hot key this container holds a block of.
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        let settled = authorizer.settle_leases(UnixTime::now(), true).await;
        tracing::info!(settled, "shutdown: leases settled");
        shared::metrics::flush_emf(true);
    })
    .await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let result = handler::handle(authorizer, event.payload, UnixTime::now()).await;
        // Decisions counted so far, as EMF lines on stdout, every few seconds at most.
        shared::metrics::flush_emf(false);
        result
    }))
    .await
}
