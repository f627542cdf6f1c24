//! Test harness: a DynamoDB-protocol server and a fresh table per test.
//!
//! By default each test starts Dynoxide in-process (plain `cargo test` needs nothing else).
//! With `TOLLGATE_TEST_DYNAMODB_ENDPOINT` set (as `make test` does for moto), tests use that
//! server instead; if it is unreachable the test fails, it is never skipped.

use shared::store::dynamo::{ClientOptions, DynamoStore, build_client};
use shared::store::embedded::EmbeddedDynamo;
use shared::store::metrics::RequestCounter;

pub const ENDPOINT_VAR: &str = "TOLLGATE_TEST_DYNAMODB_ENDPOINT";

pub struct TestDb {
    pub store: DynamoStore,
    /// Every request the store sends, per operation.
    pub requests: RequestCounter,
    pub endpoint: String,
    pub table: String,
    _embedded: Option<EmbeddedDynamo>,
}

impl TestDb {
    /// Which server the test runs against, for messages.
    pub fn backend(&self) -> &'static str {
        if self._embedded.is_some() { "dynoxide" } else { "external" }
    }
}

/// A DynamoDB-protocol server and a new, empty table with Tollgate's schema.
pub async fn fresh_db() -> TestDb {
    let (endpoint, embedded) = match std::env::var(ENDPOINT_VAR).ok().filter(|v| !v.is_empty()) {
        Some(endpoint) => (endpoint, None),
        None => {
            let db = EmbeddedDynamo::start_in_memory().await.expect("start in-process Dynoxide");
            (db.endpoint().to_owned(), Some(db))
        }
    };
    let requests = RequestCounter::new();
    let client =
        build_client(ClientOptions { counter: Some(requests.clone()), ..ClientOptions::local(&endpoint) }).await;
    let table = format!("tollgate-test-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(client, table.clone()).with_decision_budget(std::time::Duration::from_secs(60));
    store.create_table_if_missing().await.unwrap_or_else(|e| panic!("create test table at {endpoint}: {e:?}"));
    requests.reset();
    TestDb { store, requests, endpoint, table, _embedded: embedded }
}
