//! The SDK client (timeouts, retries, local endpoints) and the table's definition for the
//! local stack and tests.

use super::DynamoStore;
use super::errors::sdk_err;
use crate::store::metrics::RequestCounter;
use crate::store::schema::*;
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::time::Duration;

/// How the SDK client is built: per-attempt and per-operation timeouts keep a decision
/// within about a second even when DynamoDB is unreachable.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub endpoint: Option<String>,
    pub counter: Option<RequestCounter>,
    /// Per attempt. Tight in Lambda so an unreachable DynamoDB costs well under a second;
    /// emulators serving many clients one at a time need longer.
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            counter: None,
            attempt_timeout: Duration::from_millis(400),
            operation_timeout: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    /// For emulators (tests, the local stack): same code path, patient timeouts.
    pub fn local(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            attempt_timeout: Duration::from_secs(15),
            operation_timeout: Duration::from_secs(30),
            ..Self::default()
        }
    }
}

pub async fn build_client(options: ClientOptions) -> Client {
    let mut b = match &options.endpoint {
        // A local or compatible endpoint: no AWS credential chain (it would probe instance
        // metadata and stall), just the environment's keys if set, else placeholders.
        Some(endpoint) => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment"),
                _ => Credentials::new("tollgate-local", "tollgate-local", None, None, "tollgate"),
            };
            let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
            aws_sdk_dynamodb::config::Builder::new()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .http_client(crate::http_client::sdk_http_client())
                .endpoint_url(endpoint)
                .region(Region::new(region))
                .credentials_provider(credentials)
        }
        None => {
            let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(crate::http_client::sdk_http_client())
                .load()
                .await;
            aws_sdk_dynamodb::config::Builder::from(&shared)
        }
    }
    .timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(500))
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(options.operation_timeout)
            .build(),
    )
    .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(counter) = options.counter {
        b = b.interceptor(counter);
    }
    Client::from_conf(b.build())
}

impl DynamoStore {
    /// Creates the table with its indexes and TTL if it does not exist yet (local stack,
    /// tests). In AWS the SAM template owns the table.
    pub async fn create_table_if_missing(&self) -> StoreResult<()> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(sdk_err(e)),
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Backend(e.into()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StoreError::Backend(e.into()))
        };
        let gsi = |name: &str, pk: &str, sk: &str, include: Option<&[&str]>| -> StoreResult<GlobalSecondaryIndex> {
            let projection = match include {
                // Definition attributes only: counter updates on the hot path then never
                // write to the index (it would triple their write cost).
                Some(attrs) => Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(attrs.iter().map(|a| (*a).to_owned()).collect()))
                    .build(),
                None => Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
            };
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(projection)
                .build()
                .map_err(|e| StoreError::Backend(e.into()))
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .set_attribute_definitions(Some(
                [PK, SK, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK, GSI3_PK, GSI3_SK, ACTIVITY_PK]
                    .into_iter()
                    .map(attr)
                    .collect::<StoreResult<Vec<_>>>()?,
            ))
            .global_secondary_indexes(gsi(GSI1, GSI1_PK, GSI1_SK, Some(KEY_LISTING_ATTRS))?)
            .global_secondary_indexes(gsi(GSI2, GSI2_PK, GSI2_SK, None)?)
            .global_secondary_indexes(gsi(GSI3, GSI3_PK, GSI3_SK, Some(&listing_attrs()))?)
            .global_secondary_indexes(gsi(GSI_ACTIVITY, ACTIVITY_PK, ACTIVITY_SK, None)?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another process won the race to create it.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => return Ok(()),
            Err(e) => return Err(sdk_err(e)),
        }
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(TTL)
            .enabled(true)
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }
}
