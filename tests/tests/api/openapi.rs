//! `docs/openapi.yaml` itself: every declared response schema compiles, and the checker the
//! other tests use rejects what the spec forbids (it is not a rubber stamp).

use serde_json::json;
use tollgate_tests::openapi::check;

fn rejects(method: &str, path: &str, status: u16, body: serde_json::Value) -> bool {
    std::panic::catch_unwind(|| check(method, path, status, &body)).is_err()
}

fn key() -> serde_json::Value {
    json!({
        "key_id": "key_01JD0000000000000000000000", "display": "tg_live_...abcd", "customer_id": "acme",
        "plan_id": null, "name": null, "env": "live", "status": "active",
        "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z", "expires_at": null,
        "scopes": [], "metadata": {}, "rate_limit": null, "quota": null,
        "limits": {"plan_id": null, "rate_limit": null, "quota": null}, "rotation": null,
        "last_used_at": null
    })
}

#[test]
fn the_checker_accepts_the_contract_and_rejects_the_rest() {
    check("GET", "/v1/keys/key_01JD0000000000000000000000", 200, &key());
    // A listed or read key never carries a secret or a hash.
    let mut leaky = key();
    leaky["key"] = json!("tg_live_x");
    assert!(rejects("GET", "/v1/keys/key_01JD0000000000000000000000", 200, leaky));
    let mut hashed = key();
    hashed["hash"] = json!("ab");
    assert!(rejects("GET", "/v1/keys?limit=1", 200, json!({"items": [hashed], "next_cursor": null})));
    // Undeclared statuses, malformed timestamps and unknown paths fail.
    assert!(rejects("GET", "/v1/keys/key_01JD0000000000000000000000", 418, key()));
    let mut bad_time = key();
    bad_time["created_at"] = json!("yesterday");
    assert!(rejects("GET", "/v1/keys/key_01JD0000000000000000000000", 200, bad_time));
    assert!(rejects("GET", "/v2/nothing", 200, json!({})));
    // Errors have one shape.
    check(
        "POST",
        "/v1/plans",
        422,
        &json!({"error": {"code": "invalid_field", "message": "m", "field": "name"}, "request_id": "r"}),
    );
    assert!(rejects("POST", "/v1/plans", 422, json!({"error": "bad"})));
}

#[test]
fn every_declared_response_schema_compiles() {
    let spec: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{plan_id}", "pro")
            .replace("{key_id}", "key_01JD0000000000000000000000")
            .replace("{customer_id}", "acme");
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                // Any body: only that the schema builds and its $refs resolve (a bad one panics
                // with "bad schema"; a mismatch is expected and fine here).
                let result = std::panic::catch_unwind(|| {
                    check(&method.to_uppercase(), &concrete, status.parse().unwrap(), &json!(null))
                });
                if let Err(e) = result {
                    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                    assert!(
                        !msg.contains("bad schema") && !msg.contains("dangling"),
                        "{method} {path} {status}: {msg}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "{checked}");
}
