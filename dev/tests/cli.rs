//! The `tollgate` binary as a user runs it, against a local stack on a free port: plans and
//! keys made, traffic sent, a rollup, usage and statistics read, in tables and in JSON; the
//! exit codes scripts rely on. And the typed client against the same stack, model by model.

use bytes::Bytes;
use serde_json::{Value, json};
use std::process::Output;
use tollgate_client::{Auth, Client, KeyFilter};
use tollgate_dev::LocalStack;

mod common;

const TOKEN: &str = "tga_cli_test_token_0123456789abcdef";

async fn stack() -> LocalStack {
    common::stack(TOKEN).await
}

/// `tollgate <args>` against `url` with the admin token; (exit code, stdout, stderr).
async fn tollgate(url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args).env("TOLLGATE_ENDPOINT", url).env_remove("TOLLGATE_ADMIN_TOKEN").env_remove("TOLLGATE_TOKEN");
    if let Some(t) = token {
        cmd.env("TOLLGATE_TOKEN", t);
    }
    let Output { status, stdout, stderr } =
        tokio::task::spawn_blocking(move || cmd.output().expect("run tollgate")).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (status.code().expect("an exit code"), text(stdout), text(stderr))
}

async fn ok(url: &str, args: &[&str]) -> String {
    let (code, out, err) = tollgate(url, Some(TOKEN), args).await;
    assert_eq!(code, 0, "tollgate {args:?}: {err}");
    out
}

async fn ok_json(url: &str, args: &[&str]) -> Value {
    let mut with = args.to_vec();
    with.push("--json");
    let out = ok(url, &with).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("tollgate {args:?} --json: {e}: {out}"))
}

async fn proxy(url: &str, key: &str) -> u16 {
    let http = shared::http_client::HttpClient::new(std::time::Duration::from_secs(10)).unwrap();
    let req = http::Request::get(format!("{url}/proxy/hello")).header("x-api-key", key).body(Bytes::new()).unwrap();
    http.send(req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_manages_plans_and_keys_and_reads_usage_and_statistics() {
    let stack = stack().await;
    let url = stack.url();
    let u = url.as_str();

    let out = ok(
        u,
        &[
            "plans",
            "create",
            "--id",
            "cli",
            "--name",
            "CLI",
            "--rate",
            "2/60",
            "--quota",
            "100/day",
            "--meter",
            "api_requests",
        ],
    )
    .await;
    assert!(
        out.contains("cli") && out.contains("2/60s") && out.contains("100/day") && out.contains("api_requests"),
        "{out}"
    );
    let plans = ok_json(u, &["plans", "list"]).await;
    assert_eq!(plans[0]["id"], "cli");

    // The plaintext is printed once, with the warning.
    let out = ok(u, &["keys", "create", "--customer", "acme", "--plan", "cli", "--env", "test", "--name", "ci"]).await;
    let key = out.split_whitespace().find(|w| w.starts_with("tg_test_")).expect("the plaintext").to_owned();
    assert!(out.contains("shown this once"), "{out}");
    let listed = ok_json(u, &["keys", "list", "--customer", "acme"]).await;
    let key_id = listed["items"][0]["key_id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["last_used_at"], Value::Null);
    assert!(!listed.to_string().contains(&key), "a listing never shows the secret");

    assert_eq!([proxy(u, &key).await, proxy(u, &key).await, proxy(u, &key).await], [200, 200, 429]);
    let out = ok(u, &["rollup"]).await;
    assert!(out.starts_with("rollup completed: 1 keys active, 1 key-days rolled"), "{out}");

    let usage = ok_json(u, &["usage", &key_id]).await;
    assert_eq!(usage["history"][0]["allowed"], 2);
    assert_eq!(usage["history"][0]["denied_by_code"], json!({ "rate_limited": 1 }));
    let table = ok(u, &["usage", &key_id]).await;
    assert!(table.contains("rate limit: 2 of 2 used, 0 left"), "{table}");
    assert!(table.contains("rate_limited=1"), "{table}");
    let table = ok(u, &["keys", "list"]).await;
    let row = table.lines().find(|l| l.contains(&key_id)).expect("the key's row");
    assert!(!row.contains("never") && row.contains("active") && row.contains("ci"), "{row}");

    let customer = ok(u, &["customers", "get", "acme"]).await;
    assert!(customer.contains(&key_id), "{customer}");
    let cu = ok_json(u, &["customers", "usage", "acme", "--days", "7"]).await;
    assert_eq!(
        (cu["history"][0]["allowed"].as_u64(), cu["history"][0]["meter"].as_str()),
        (Some(2), Some("api_requests"))
    );
    let stats = ok_json(u, &["stats", "--days", "7"]).await;
    assert_eq!(stats["days"].as_array().unwrap().len(), 7);
    assert_eq!(stats["days"][6]["allowed"], 2);
    assert_eq!(stats["top_customers"][0], json!({ "customer_id": "acme", "allowed": 2 }));
    let text = ok(u, &["stats"]).await;
    assert!(text.contains("TOP KEYS") && text.contains(&key_id), "{text}");

    // Status changes, each shown as the key now is.
    assert!(ok(u, &["keys", "disable", &key_id]).await.contains("disabled"));
    assert!(ok(u, &["keys", "enable", &key_id]).await.contains("active"));
    let rotated = ok(u, &["keys", "rotate", &key_id, "--grace-s", "0"]).await;
    let new_secret = rotated.split_whitespace().find(|w| w.starts_with("tg_test_")).unwrap().to_owned();
    assert_ne!(new_secret, key);

    // Refusals: printed as code and message on stderr, exit 1. The plan is in use...
    let (code, out, err) = tollgate(u, Some(TOKEN), &["plans", "delete", "cli"]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("error: conflict: ") && err.contains("(HTTP 409, request "), "{err}");
    // ...until its last key is revoked.
    assert_eq!(ok_json(u, &["keys", "revoke", &key_id]).await["status"], "revoked");
    assert_eq!(ok(u, &["plans", "delete", "cli"]).await, "deleted plan cli\n");
    let (code, _, err) = tollgate(u, Some(TOKEN), &["keys", "get", "key_01JD0000000000000000000000"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not_found") && err.contains("HTTP 404"), "{err}");
    let (code, _, err) = tollgate(u, None, &["plans", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unauthorized"), "{err}");
    // Bad arguments are clap's: exit 2, with what was wrong.
    let (code, _, err) =
        tollgate(u, Some(TOKEN), &["plans", "create", "--id", "x", "--name", "X", "--quota", "5/week"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("day or month"), "{err}");
    // So is an endpoint that is not a URL: exit 2, not "unreachable".
    let (code, _, err) = tollgate(u, Some(TOKEN), &["--endpoint", "localhost:3000", "plans", "list"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid endpoint `localhost:3000`"), "{err}");
    stack.stop().await;

    // Nothing listening there any more: exit 4.
    let (code, _, err) = tollgate(u, Some(TOKEN), &["plans", "list"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.starts_with("error: could not reach "), "{err}");
}

/// Every model the client has is exactly what the stack answers: deserialized and serialized
/// again, it gives back the same JSON, so a field the server (held to docs/openapi.yaml) adds,
/// drops or renames fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_models_match_the_api_field_for_field() {
    let stack = stack().await;
    let c = Client::new(&stack.url(), Auth::Bearer(TOKEN.to_owned().into())).unwrap();
    let plan = json!({ "id": "drift", "name": "Drift", "rate_limit": { "limit": 5, "window_s": 60 },
        "quota": { "limit": 9, "period": "month" }, "meter_event_name": "api_requests", "stripe_price_ids": ["price_x"] });
    let issued = c.create_key(&json!({ "customer_id": "acme" })).await.unwrap();
    c.create_plan(&plan).await.unwrap();
    let key = c.create_key(&json!({ "customer_id": "acme", "plan_id": "drift", "env": "test" })).await.unwrap();
    assert_eq!(proxy(&stack.url(), &key.key).await, 200);
    c.run_rollup().await.unwrap();
    let id = key.record.key_id.clone();

    async fn same<T: serde::Serialize + serde::de::DeserializeOwned>(c: &Client, path: &str, query: &[(&str, String)]) {
        let raw = c.call(http::Method::GET, path, query, None).await.unwrap();
        let typed: T = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{path}: {e}\n{raw}"));
        assert_eq!(
            serde_json::to_value(typed).unwrap(),
            raw,
            "{path}: the client's model differs from the API's answer"
        );
    }
    same::<tollgate_client::PlanList>(&c, "/v1/plans", &[]).await;
    same::<tollgate_client::Plan>(&c, "/v1/plans/drift", &[]).await;
    same::<tollgate_client::KeyList>(&c, "/v1/keys", &[]).await;
    same::<tollgate_client::Key>(&c, &format!("/v1/keys/{id}"), &[]).await;
    same::<tollgate_client::Usage>(&c, &format!("/v1/keys/{id}/usage"), &[]).await;
    same::<tollgate_client::Customer>(&c, "/v1/customers/acme", &[]).await;
    same::<tollgate_client::CustomerUsage>(&c, "/v1/customers/acme/usage", &[]).await;
    same::<tollgate_client::Stats>(&c, "/v1/stats", &[("days", "3".into())]).await;
    // The answers to writes, too (the plaintext included, once).
    let raw_issued = serde_json::to_value(&issued).unwrap();
    assert!(raw_issued["key"].as_str().unwrap().starts_with("tg_"));
    let rotated = c.rotate_key(&id, Some(60)).await.unwrap();
    assert!(rotated.record.rotation.is_some());
    let page = c
        .list_keys(&KeyFilter { customer_id: Some("acme".into()), limit: Some(1), ..KeyFilter::default() })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.next_cursor.is_some());
    stack.stop().await;
}
