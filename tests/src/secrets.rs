//! A local stand-in for AWS Secrets Manager's `GetSecretValue` (JSON 1.1 protocol, as the SDK
//! speaks it), holding secrets by ARN and recording every request, so tests see that functions
//! read their Stripe secrets from it, signed, by the ARN they were given.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Read {
    pub secret_id: String,
    /// The request carried a SigV4 `Authorization` header.
    pub signed: bool,
}

#[derive(Default)]
struct Shared {
    secrets: Mutex<HashMap<String, String>>,
    reads: Mutex<Vec<Read>>,
}

pub struct SecretsStandIn {
    pub endpoint: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl SecretsStandIn {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Secrets Manager stand-in");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("Secrets Manager stand-in");
        });
        Self { endpoint, shared, server }
    }

    /// Stores `value` as the `SecretString` of a secret named `name`; returns its ARN.
    pub fn put(&self, name: &str, value: &str) -> String {
        let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf");
        self.shared.secrets.lock().unwrap().insert(arn.clone(), value.to_owned());
        arn
    }

    pub fn reads(&self) -> Vec<Read> {
        self.shared.reads.lock().unwrap().clone()
    }
}

impl Drop for SecretsStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": kind, "message": message }).to_string();
    (status, [("content-type", "application/x-amz-json-1.1")], body).into_response()
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if target != "secretsmanager.GetSecretValue" {
        return error(StatusCode::BAD_REQUEST, "InvalidAction", &format!("unsupported action {target}"));
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "SerializationException", "body is not JSON");
    };
    let secret_id = request["SecretId"].as_str().unwrap_or_default().to_owned();
    let signed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 ") && v.contains("/secretsmanager/aws4_request"));
    shared.reads.lock().unwrap().push(Read { secret_id: secret_id.clone(), signed });
    let Some(value) = shared.secrets.lock().unwrap().get(&secret_id).cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            "Secrets Manager can't find the specified secret.",
        );
    };
    let name = secret_id.rsplit(':').next().unwrap_or_default();
    let body = serde_json::json!({
        "ARN": secret_id,
        "Name": name,
        "SecretString": value,
        "VersionId": "00000000-0000-0000-0000-000000000001",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": 1_795_428_000.0,
    });
    (StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], body.to_string()).into_response()
}
