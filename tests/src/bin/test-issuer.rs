//! The identity provider stand-in (`tollgate_tests::oidc`) as a process, for runs outside the
//! test binaries (scripts/schemathesis.sh): serves its OpenID configuration and JWKS on a free
//! loopback port, prints `issuer <url>`, `audience <aud>` and `token <jwt>` (role `customer`,
//! the customer named by the first argument, valid for two hours), then serves until stdin
//! closes or the process is stopped.

use shared::domain::time::UnixTime;
use std::io::Read;
use tollgate_tests::oidc::{AUDIENCE, TestIssuer};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let customer = std::env::args().nth(1).unwrap_or_else(|| "schemathesis-customer".to_owned());
    let idp = TestIssuer::start().await;
    let now = UnixTime::now();
    let mut claims = idp.claims("customer", Some(&customer), now);
    claims["exp"] = (now.secs() + 7200).into();
    println!("issuer {}", idp.issuer);
    println!("audience {AUDIENCE}");
    println!("token {}", idp.ec.sign(&claims));
    // Serve until whoever started us closes our stdin (or stops us).
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    })
    .await
    .ok();
}
