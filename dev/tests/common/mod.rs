//! What the CLI tests share: a local stack on a free port with a known admin token.

use tollgate_dev::{LocalStack, Settings};

/// A local stack on 127.0.0.1 with `token` as its admin token and no rollup timer.
pub async fn stack(token: &str) -> LocalStack {
    let settings = Settings::from_lookup(|k| match k {
        "TOLLGATE_ADDR" => Some("127.0.0.1:0".into()),
        "TOLLGATE_ADMIN_TOKEN" => Some(token.into()),
        "TOLLGATE_ROLLUP_INTERVAL_S" => Some("0".into()),
        _ => None,
    })
    .expect("settings");
    LocalStack::start(settings).await.expect("the local stack starts")
}
