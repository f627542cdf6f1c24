//! `tollgate`: `tollgate dev` runs the local stack (`make dev` runs `tollgate dev --seed`); the
//! other commands call the management API (dev/src/cli.rs).

use clap::Parser;
use shared::config::FailMode;
use tollgate_dev::cli::{Cli, Command};
use tollgate_dev::{LocalStack, Settings, Storage};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev { seed } => dev(seed).await,
        _ => tollgate_dev::cli::run(cli).await,
    }
}

/// Environment: TOLLGATE_ADDR (127.0.0.1:3000), TOLLGATE_DATA_DIR (persist data),
/// TOLLGATE_DYNAMODB_ENDPOINT and TOLLGATE_TABLE (another DynamoDB), TOLLGATE_ADMIN_TOKEN,
/// STRIPE_WEBHOOK_SECRET, TOLLGATE_UPSTREAM, TOLLGATE_FAIL_MODE, ...
/// (docs/configuration.md, "Configuration").
async fn dev(seed: bool) -> std::process::ExitCode {
    // The embedded emulator logs every failed condition check (each denial) as a warning.
    shared::telemetry::init_with_default("info,dynoxide=error");
    let mut settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    settings.seed = seed;
    let stack = match LocalStack::start(settings).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tollgate: could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    print_banner(&stack);
    shutdown_signal().await;
    eprintln!("\ntollgate: shutting down");
    stack.stop().await;
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn print_banner(stack: &LocalStack) {
    let url = stack.url();
    let s = &stack.settings;
    let token = stack.admin_token();
    println!("Tollgate local stack listening on {url}");
    println!("  storage         {}", stack.storage_description);
    println!(
        "  upstream        {}",
        match &s.upstream {
            tollgate_dev::gateway::Upstream::Echo => "built-in echo".to_owned(),
            tollgate_dev::gateway::Upstream::Url(u) => u.clone(),
        }
    );
    println!("  fail mode       {}", if s.authorizer.fail_mode == FailMode::Open { "open" } else { "closed" });
    println!(
        "  admin token     {token}{}",
        if s.admin_token_generated { "   (generated; set TOLLGATE_ADMIN_TOKEN to fix it)" } else { "" }
    );
    println!("  webhook secret  {}", stack.webhook_secret());
    println!("  console         {url}/console/   (sign in with the admin token)");
    println!("  metrics         {url}/metrics    (Prometheus text)");
    match &s.jwt {
        Some(jwt) => println!("  sign-in (JWT)   issuer {}, audience {}", jwt.issuer, jwt.audience),
        None => println!("  sign-in (JWT)   off (set TOLLGATE_JWT_ISSUER and TOLLGATE_JWT_AUDIENCE)"),
    }
    if !s.authorizer.scopes.is_empty() {
        println!("  scopes          TOLLGATE_SCOPES names the routes that need them");
    }
    match s.rollup_interval_s {
        0 => println!("  usage rollup    on POST /internal/rollup only"),
        n => println!("  usage rollup    every {n} s, and on POST /internal/rollup"),
    }
    if s.stripe.is_none() {
        println!("                  (no STRIPE_API_KEY: usage history only, nothing reported to Stripe)");
    }
    if matches!(s.storage, Storage::Embedded { data_dir: None }) {
        println!("  (in memory: set TOLLGATE_DATA_DIR to keep keys across restarts)");
    }
    println!();
    let key = match &stack.demo {
        Some(demo) => {
            println!("Demo plan `{}` (5 requests/minute, 1,000/day) and key {}:", demo.plan_id, demo.key_id);
            println!("  {}", demo.key);
            println!("  (shown once: Tollgate stores only its SHA-256)");
            println!();
            demo.key.clone()
        }
        None => "<key>".to_owned(),
    };
    println!("Try it:");
    println!("  export TOLLGATE_KEY={key}");
    println!("  curl -i {url}/proxy/hello -H \"x-api-key: $TOLLGATE_KEY\"          # 200 + RateLimit headers");
    println!(
        "  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}}\\n' {url}/proxy/hello -H \"x-api-key: $TOLLGATE_KEY\"; done   # ... 429"
    );
    println!("  curl -i {url}/proxy/hello -H 'x-api-key: tg_test_garbage'           # 401");
    println!("  curl -s {url}/v1/keys -H 'authorization: Bearer {token}'            # list keys");
    println!("  curl -s -X POST {url}/internal/rollup -H 'authorization: Bearer {token}'   # roll usage up now");
    println!("  curl -s {url}/v1/customers/demo-customer/usage -H 'authorization: Bearer {token}'   # daily usage");
    println!();
    println!("Or with the CLI (TOLLGATE_TOKEN={token}):");
    println!("  tollgate keys list; tollgate usage <key id>; tollgate rollup; tollgate stats");
    println!();
    println!("Press Ctrl-C to stop.");
}
