//! The console Lambda (behind the token API's `GET /console` routes): the embedded SPA and its
//! `config.json`, built from `TOLLGATE_CONSOLE_CONFIG` once per cold start. It holds no
//! credentials and calls nothing: the page signs in at the identity provider and calls `/v1/`
//! on the same API with the token it gets.

use console::Console;
use lambda_http::{Request, service_fn};
use std::convert::Infallible;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let console: &'static Console =
        Box::leak(Box::new(Console::from_config(std::env::var("TOLLGATE_CONSOLE_CONFIG").ok().as_deref())?));
    if !console::is_built() {
        tracing::error!("console/dist was not built into this binary: every page answers 503 (run `make build`)");
    }
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(console::lambda_response(console, &req))
    }))
    .await
}
