//! The usage rollup Lambda, run by EventBridge Scheduler: configuration and clients built once
//! per cold start, then one rollup run per invocation, bounded by the invocation's deadline.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::app::rollup::{Rollup, RollupOptions, RunReport};
use shared::config::Config;
use shared::domain::time::UnixTime;
use shared::store::dynamo::DynamoStore;
use shared::stripe::api::StripeApi;
use std::time::{Duration, SystemTime};

/// Kept back from the invocation's time for the last item in flight (a Stripe call has a
/// 10 s timeout) and for releasing the lease.
const RESERVE: Duration = Duration::from_secs(20);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let config = Config::load().await?;
    let store = DynamoStore::connect_warm(&config).await;
    let stripe = StripeApi::configured(&config.stripe_api_base, config.stripe_api_key.as_ref())?;
    if stripe.is_none() {
        tracing::warn!("STRIPE_API_KEY is not set: the rollup keeps usage history but reports nothing to Stripe");
    }
    let (store, stripe, table) = (&store, &stripe, &config.table);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        usage_rollup::parse_input(event.payload)?;
        let remaining = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
        let options = RollupOptions {
            budget: usage_rollup::budget(remaining, RESERVE),
            lease_margin: RESERVE,
            identifier_namespace: table.clone(),
            ..RollupOptions::default()
        };
        let report = Rollup::new(store.clone(), stripe.clone(), options).run(UnixTime::now()).await;
        // The run's counts as an EMF line, before the invocation ends (and the container may freeze).
        shared::metrics::flush_emf(true);
        let report: RunReport = report?;
        Ok::<_, lambda_runtime::Error>(report)
    }))
    .await
}
