//! The authorizer Lambda: configuration, client and cache built once per cold start, then
//! decisions. On classic Lambda one at a time; on Lambda Managed Instances
//! (`AWS_LAMBDA_MAX_CONCURRENCY` > 1) many at once, on a multi-threaded runtime, with a
//! background sweep settling hot keys' blocks within 2 s of their last decision. Before Lambda
//! shuts the environment down it sends SIGTERM (the runtime registers an extension so that it
//! does): the container then counts and gives back what its hot keys' blocks admitted and left
//! (`shared::domain::lease`).

use authorizer::handler;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::app::authorize::{Authorizer, AuthorizerOptions};
use shared::config::Config;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;

fn main() -> Result<(), lambda_runtime::Error> {
    let concurrent = authorizer::max_concurrency(std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").ok().as_deref()) > 1;
    let runtime = if concurrent {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    };
    runtime.block_on(serve(concurrent))
}

async fn serve(concurrent: bool) -> Result<(), lambda_runtime::Error> {
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
    if concurrent {
        // The environment keeps running between requests here: blocks settle on their own.
        tokio::spawn(authorizer.sweep_forever());
    }
    // Sequential unless Lambda allows more than one invocation at a time.
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| async move {
        let result = handler::handle(authorizer, event.payload, UnixTime::now()).await;
        // Decisions counted so far, as EMF lines on stdout, every few seconds at most.
        shared::metrics::flush_emf(false);
        result
    }))
    .await
}
