//! The one storage implementation: a single DynamoDB table through aws-sdk-dynamodb.
//!
//! Layout and access patterns: docs/data-model.md. This is the only module that names SDK
//! types; every conversion between DynamoDB items and domain types lives here.
//!
//! One module per concern: [`client`] (SDK client, table), `hot_path` (the authorizer's
//! counting write), `keys`, `plans`, `customers`, `billing`, `fanout`, `idempotency`,
//! `attempts`, `usage`, `rollup`, `stats`; beneath them `items` (item <-> domain conversions), `expr`
//! (expressions), `tx` (transactions, retries), `query`, `cursor` and `errors`.

mod attempts;
mod billing;
mod client;
mod cursor;
mod customers;
mod errors;
mod expr;
mod fanout;
mod hot_path;
mod idempotency;
mod items;
mod keys;
mod plans;
mod query;
mod rollup;
mod stats;
mod tx;
mod usage;

pub use client::{ClientOptions, build_client};

use crate::config::Config;
use crate::domain::api_key::KeyId;
use crate::domain::customers::{Customer, CustomerAccess, CustomerId};
use crate::domain::plans::{Plan, PlanId};
use crate::store::StoreResult;
use crate::store::metrics::RequestCounter;
use crate::store::schema::*;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::retry::RetryConfig;
use errors::sdk_err;
use items::{s, u64_opt, u64_or};
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// How long one authorization may keep trying before it reports storage unavailable.
const DECISION_BUDGET: Duration = Duration::from_millis(900);

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    /// The same client with the SDK's retries off: decisions retry themselves, guarded by a
    /// request id, because a blind retry of a counted write could count twice. Built once:
    /// a per-request config override rebuilds the client's runtime plugins on every call.
    decision_client: Client,
    table: String,
    decision_budget: Duration,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let decision_client =
            Client::from_conf(client.config().to_builder().retry_config(RetryConfig::disabled()).build());
        Self { client, decision_client, table: table.into(), decision_budget: DECISION_BUDGET }
    }

    /// How long one authorization may keep retrying (default 0.9 s).
    pub fn with_decision_budget(mut self, budget: Duration) -> Self {
        self.decision_budget = budget;
        self
    }

    /// Builds the client once (at cold start) from the environment and `config`.
    pub async fn connect(config: &Config, counter: Option<RequestCounter>) -> Self {
        let client =
            build_client(ClientOptions { endpoint: config.dynamodb_endpoint.clone(), counter, ..Default::default() })
                .await;
        Self::new(client, config.table.clone())
    }

    /// [`connect`](Self::connect), then [`warm`](Self::warm): what every Lambda does at cold
    /// start. A failed warm-up is logged, not fatal: the first request will connect instead.
    pub async fn connect_warm(config: &Config) -> Self {
        let store = Self::connect(config, None).await;
        if let Err(e) = store.warm().await {
            tracing::warn!(error = %e, "could not warm the DynamoDB connection");
        }
        store
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Opens the connection (DNS, TCP, TLS) during init so the first request does not pay
    /// for it. A read of an item that never exists: cheap, and harmless if the table is empty.
    pub async fn warm(&self) -> StoreResult<()> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(WARMUP))
            .key(SK, s(WARMUP))
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_err)
    }

    async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item)
    }

    async fn get_key_item(&self, id: &KeyId) -> StoreResult<Option<Item>> {
        self.get(key_pk(id.as_str()), KEY_SK).await
    }

    async fn get_plan_versioned(&self, id: &PlanId) -> StoreResult<Option<Versioned<Plan>>> {
        match self.get(plan_pk(id.as_str()), PLAN_SK).await? {
            Some(item) => Ok(Some(Versioned { value: Plan::try_from(&item)?, ver: u64_or(&item, VER, 0)? })),
            None => Ok(None),
        }
    }

    async fn get_customer_versioned(&self, id: &CustomerId) -> StoreResult<Option<StoredCustomer>> {
        match self.get(customer_pk(id.as_str()), CUSTOMER_SK).await? {
            Some(item) => Ok(Some(StoredCustomer {
                customer: Customer::try_from(&item)?,
                access: CustomerAccess::try_from(&item)?,
                ver: u64_or(&item, VER, 0)?,
                live_keys: u64_opt(&item, LIVE_KEYS)?,
            })),
            None => Ok(None),
        }
    }
}

/// A record and the version its item had when read: the guard of a later conditional write.
struct Versioned<T> {
    value: T,
    ver: u64,
}

/// A customer item as read: the customer, the access its keys copy, its version, and how many
/// of its keys are not revoked (`None` on items written before that was counted).
struct StoredCustomer {
    customer: Customer,
    access: CustomerAccess,
    ver: u64,
    live_keys: Option<u64>,
}
