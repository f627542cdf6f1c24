//! Holds every management API response the suite receives to `docs/openapi.yaml`: the status
//! must be one the operation declares, and the body must match its schema.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

static SPEC: LazyLock<Value> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
});

type Validators = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;
static VALIDATORS: LazyLock<Validators> = LazyLock::new(Default::default);

/// The spec's path template for a concrete path (`/v1/keys/key_01…` → `/v1/keys/{key_id}`).
fn template(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let paths = SPEC["paths"].as_object()?;
    let matches = |t: &str| {
        let ts: Vec<&str> = t.split('/').collect();
        ts.len() == segments.len() && ts.iter().zip(&segments).all(|(t, s)| t == s || t.starts_with('{'))
    };
    // Literal segments win over parameters.
    paths.keys().filter(|t| matches(t)).min_by_key(|t| t.matches('{').count()).cloned()
}

fn resolve(mut v: &Value) -> &Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = SPEC.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// Panics, naming the mismatch, unless `body` is what the spec says `method path` answers
/// with `status`.
pub fn check(method: &str, path: &str, status: u16, body: &Value) {
    let Some(t) = template(path) else { panic!("{method} {path}: no such path in docs/openapi.yaml") };
    let op = &SPEC["paths"][&t][method.to_ascii_lowercase()];
    if op.is_null() {
        assert_eq!(status, 405, "{method} {t}: not in docs/openapi.yaml, so it must answer 405");
        return;
    }
    let response = op["responses"]
        .get(status.to_string())
        .or_else(|| op["responses"].get("default"))
        .unwrap_or_else(|| panic!("{method} {t}: status {status} is not declared in docs/openapi.yaml ({body})"));
    let response = resolve(response);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(body.is_null(), "{method} {t} {status}: the spec declares no body, got {body}");
        return;
    };
    let id = format!("{method} {t} {status}");
    let validator = {
        let mut cache = VALIDATORS.lock().unwrap();
        cache
            .entry(id.clone())
            .or_insert_with(|| {
                // The operation's schema, with the spec's components beside it so `$ref`s resolve.
                let root = json!({ "allOf": [schema], "components": SPEC["components"] });
                Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .should_validate_formats(true)
                        .build(&root)
                        .unwrap_or_else(|e| panic!("{id}: bad schema in docs/openapi.yaml: {e}")),
                )
            })
            .clone()
    };
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{id}: the response does not match docs/openapi.yaml:\n{}\n{body}", errors.join("\n"));
}
