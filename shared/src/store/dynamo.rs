//! The one storage implementation: a single DynamoDB table through aws-sdk-dynamodb.
//!
//! Layout and access patterns: docs/data-model.md. This is the only module that names SDK
//! types; every conversion between DynamoDB items and domain types lives here.

use super::metrics::RequestCounter;
use super::schema::*;
use super::{
    AuthorizeStore, Claim, CustomerStore, FanOut, Fault, IdempotencyStore, KeyFilter, KeyPatch, KeyStore, NewKey,
    Outage, Page, PlanStore, StoreError, StoreResult, UsageStore,
};

mod attempts;
mod billing;
mod fanout;
mod rollup;
use crate::config::Config;
use crate::domain::customers::{Customer, CustomerAccess, CustomerId, SubscriptionStatus};
use crate::domain::decision::{
    CarryOver, Counters, Decision, Denial, KeyState, Step, carry_over, next_step, period_usage_needed, rolled,
};
use crate::domain::key_records::{EffectiveLimits, KeyRecord, KeyStatus, LimitOverrides, Rotation, governing_plan};
use crate::domain::keys::{KeyEnv, KeyHash, KeyId};
use crate::domain::limits::period_start;
use crate::domain::plans::{Period, Plan, PlanId, Quota, RateLimit};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, HISTORY_DAYS, MeterDay, MeterLedger, PendingReport, UsageDay};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

type Item = HashMap<String, AttributeValue>;

/// How long one authorization may keep trying before it reports storage unavailable.
const DECISION_BUDGET: Duration = Duration::from_millis(900);
/// Optimistic-concurrency retries for management writes.
const MANAGEMENT_ATTEMPTS: usize = 4;
/// Sends of one transaction that conflicted with another (see `DynamoStore::transact`).
const TX_CONFLICT_ATTEMPTS: usize = 5;

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
            .key(PK, s("WARMUP"))
            .key(SK, s("WARMUP"))
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_err)
    }

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

    async fn get_plan_versioned(&self, id: &PlanId) -> StoreResult<Option<(Plan, u64)>> {
        match self.get(plan_pk(id.as_str()), PLAN_SK).await? {
            Some(item) => Ok(Some((plan_from_item(&item)?, u64_or(&item, "ver", 0)?))),
            None => Ok(None),
        }
    }

    async fn get_customer_versioned(&self, id: &CustomerId) -> StoreResult<Option<(Customer, CustomerAccess, u64)>> {
        match self.get(customer_pk(id.as_str()), CUSTOMER_SK).await? {
            Some(item) => Ok(Some((customer_from_item(&item)?, access_from_item(&item)?, u64_or(&item, "ver", 0)?))),
            None => Ok(None),
        }
    }

    /// One TransactWriteItems. A transaction cancelled only because another one held an item
    /// (`TransactionConflict`: fan-outs refresh keys of one customer or plan side by side, and
    /// each checks that item) wrote nothing, so it is sent again after a short random pause,
    /// up to [`TX_CONFLICT_ATTEMPTS`] times.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(tc)) = e.as_service_error() else {
                return Err(TxError::Store(sdk_err(e)));
            };
            let code = |r: &aws_sdk_dynamodb::types::CancellationReason| r.code().unwrap_or("").to_owned();
            let reasons: Vec<bool> =
                tc.cancellation_reasons().iter().map(|r| code(r) == "ConditionalCheckFailed").collect();
            if reasons.iter().any(|&failed| failed) {
                return Err(TxError::ConditionFailed(reasons));
            }
            let codes: Vec<String> = tc.cancellation_reasons().iter().map(code).collect();
            let conflict = codes.iter().any(|c| c == "TransactionConflict");
            if !conflict || attempt >= TX_CONFLICT_ATTEMPTS {
                // Conflicts persisted, or cancelled for another reason: throttling and conflicts
                // are load (retry later); a validation or size failure will not pass on retry.
                let fault = if codes.iter().any(|c| c == "ThrottlingError" || c == "ProvisionedThroughputExceeded") {
                    Some(Fault::Throttled)
                } else if conflict {
                    Some(Fault::Contention)
                } else if codes.iter().all(|c| c.is_empty() || c == "None") {
                    Some(Fault::Server)
                } else {
                    None
                };
                return Err(TxError::Store(match fault {
                    Some(fault) => StoreError::Unavailable(Outage::caused_by(fault, e)),
                    None => StoreError::Backend(format!("transaction cancelled: {codes:?}").into()),
                }));
            }
            tokio::time::sleep(Duration::from_millis(5 + rand::random::<u64>() % (20 * attempt as u64))).await;
        }
    }

    /// The one way a key's definition changes: read it, apply `edit`, re-resolve its limits
    /// and customer access from its plan and customer, and write it back in one transaction
    /// guarded by the key's version, moving the plan reference counts if the governing plan
    /// (or whether the key counts at all) changed. `edit` returns false to leave the key as
    /// it is. Retries when anything it read changed underneath.
    async fn write_key(
        &self,
        id: &KeyId,
        now: UnixTime,
        edit: impl Fn(&mut KeyRecord) -> StoreResult<bool> + Send + Sync,
    ) -> StoreResult<KeyRecord> {
        Ok(self.write_key_counted(id, now, edit).await?.0)
    }

    /// [`Self::write_key`], and whether the key item was rewritten.
    async fn write_key_counted(
        &self,
        id: &KeyId,
        now: UnixTime,
        edit: impl Fn(&mut KeyRecord) -> StoreResult<bool> + Send + Sync,
    ) -> StoreResult<(KeyRecord, bool)> {
        for _ in 0..MANAGEMENT_ATTEMPTS {
            let item = self.get_key_item(id).await?.ok_or(StoreError::NotFound("key"))?;
            let record = key_record_from_item(&item)?;
            let ver = u64_or(&item, "ver", 0)?;
            let mut next = record.clone();
            if !edit(&mut next)? {
                return Ok((record, false));
            }
            let customer = self.get_customer_versioned(&next.customer_id).await?;
            let governing =
                governing_plan(next.plan_id.as_ref(), customer.as_ref().and_then(|c| c.0.plan_id.as_ref())).cloned();
            let plan = match &governing {
                Some(p) => self.get_plan_versioned(p).await?,
                None => None,
            };
            if next.plan_id.is_some() && plan.is_none() {
                return Err(StoreError::UnknownReference("plan"));
            }
            next.limits = EffectiveLimits::resolve(plan.as_ref().map(|p| &p.0), &next.overrides);
            next.access = customer.as_ref().map(|c| c.1).unwrap_or_default();
            if next == record {
                return Ok((record, false));
            }
            next.updated_at = now;
            // Another window length or quota period: the counts made so far carry over
            // (domain::decision::carry_over), so a plan switch never resets them.
            let counters = key_state_from_item(&item)?.counters;
            let (lim_before, lim_after) = (&record.limits, &next.limits);
            let period_used = match period_usage_needed(lim_before.quota.as_ref(), lim_after.quota.as_ref()) {
                Some(period) => self.allowed_since(id, period_start(now, period)).await?,
                None => 0,
            };
            let carry = carry_over(
                (lim_before.rate_limit.as_ref(), lim_before.quota.as_ref()),
                (lim_after.rate_limit.as_ref(), lim_after.quota.as_ref()),
                &counters,
                period_used,
                now,
            );
            let mut tx = vec![self.key_definition_update(&next, ver, &carry, &counters)?];
            let counted = |r: &KeyRecord| (r.status != KeyStatus::Revoked).then(|| r.limits.plan_id.clone()).flatten();
            let (before, after) = (counted(&record), counted(&next));
            if before != after {
                if let Some(old) = &before {
                    tx.push(self.plan_refs_update(old, -1, None)?);
                }
                if let (Some(new), Some((_, pver))) = (&after, &plan) {
                    tx.push(self.plan_refs_update(new, 1, Some(*pver))?);
                }
            } else if let (Some(p), Some((_, pver))) = (&after, &plan) {
                // Same plan, but prove the limits just copied from it are current.
                tx.push(self.plan_refs_update(p, 0, Some(*pver))?);
            }
            if let Some((_, _, cver)) = &customer {
                tx.push(self.customer_version_check(&next.customer_id, *cver)?);
            }
            match self.transact(tx).await {
                Ok(()) => return Ok((next, true)),
                Err(TxError::ConditionFailed(_)) => continue,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict("the key changed concurrently; try again".into()))
    }

    /// Requests the key was allowed from the start of `from` on (history and live counters).
    async fn allowed_since(&self, id: &KeyId, from: Day) -> StoreResult<u64> {
        Ok(self.usage_history(id, from).await?.iter().map(|d| d.allowed).sum())
    }

    /// Brings a key's enforced limits and access in line with its plan and customer.
    /// Idempotent; revoked keys are left alone. True when the key item was rewritten.
    async fn refresh_key(&self, id: &KeyId, now: UnixTime) -> StoreResult<bool> {
        Ok(self.write_key_counted(id, now, |k| Ok(k.status != KeyStatus::Revoked)).await?.1)
    }

    /// An update that writes every definition attribute of `record` (not its counters),
    /// guarded by the key's version.
    ///
    /// With a [`CarryOver`], the counters move with it: the new end is set and the count moved
    /// by `ADD` (so requests counted concurrently are kept), guarded by the end that was read
    /// (so a concurrent rollover makes this write fail and retry instead of mixing windows).
    fn key_definition_update(
        &self,
        record: &KeyRecord,
        ver: u64,
        carry: &CarryOver,
        read: &Counters,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let (mut assign, mut cond) = e.versioned(key_definition(record), ver);
        let moves = [
            ("win_end", "win_count", carry.window, read.window_end),
            ("q_end", "q_count", carry.period, read.period_end),
        ];
        for (end_attr, count_attr, change, read_end) in moves {
            let Some((end, delta)) = change else { continue };
            let end_name = e.name(end_attr);
            let guard = if read_end.secs() == 0 {
                format!(" AND (attribute_not_exists({end_name}) OR {end_name} = {})", e.value(n(0)))
            } else {
                format!(" AND {end_name} = {}", e.value(n(read_end.secs())))
            };
            cond.push_str(&guard);
            assign.sets.push(format!("{end_name} = {}", e.value(n(end.secs()))));
            // Always, so that a counter that never existed now does (the steady-state write
            // compares it with the limit).
            assign.adds.push(format!("{} {}", e.name(count_attr), e.value(n(delta))));
        }
        self.tx_update(key_pk(record.key_id.as_str()), KEY_SK, assign.expression(), cond, e)
    }

    /// One conditional UpdateItem as a transaction item.
    fn tx_update(&self, pk: String, sk: &str, update: String, cond: String, e: Expr) -> StoreResult<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// Moves a plan's count of governed keys. With `ver`, also proves the plan (and so the
    /// limits just copied from it) is unchanged.
    fn plan_refs_update(&self, plan: &PlanId, delta: i64, ver: Option<u64>) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let r = e.name("refs");
        let update = format!("SET {r} = if_not_exists({r}, {}) + {}", e.value(n(0)), e.value(n(delta)));
        let pk = e.name(PK);
        let cond = match ver {
            Some(v) => format!("attribute_exists({pk}) AND {} = {}", e.name("ver"), e.value(n(v))),
            None => format!("attribute_exists({pk})"),
        };
        self.tx_update(plan_pk(plan.as_str()), PLAN_SK, update, cond, e)
    }

    /// Counts a denied request for the history. Best effort by design: a lost denial count
    /// never changes a decision or a bill.
    async fn count_denial(&self, key_id: &KeyId, day: Day, count: u64) {
        let mut e = Expr::default();
        let one = e.value(n(count));
        let update = format!(
            "ADD {} {one}, {} {one} SET {} = {}",
            e.name("n_denied"),
            e.name(&denied_day_attr(&day.compact())),
            e.name(ACTIVITY_PK),
            e.value(s(activity_shard(key_id.as_str()))),
        );
        let cond = format!("attribute_exists({})", e.name(PK));
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(key_pk(key_id.as_str())))
            .key(SK, s(KEY_SK))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .send()
            .await;
        if let Err(err) = res {
            tracing::warn!(key_id = %key_id, error = %DisplayErr(&err), "could not count a denied request");
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
                .endpoint_url(endpoint)
                .region(Region::new(region))
                .credentials_provider(credentials)
        }
        None => {
            let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
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

enum TxError {
    /// Per transaction item: did its condition fail?
    ConditionFailed(Vec<bool>),
    Store(StoreError),
}

// ---------------------------------------------------------------------------------------
// Authorization: the hot path.
// ---------------------------------------------------------------------------------------

impl AuthorizeStore for DynamoStore {
    async fn key_id_for_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyId>> {
        // Strongly consistent: a key (or a rotated secret) is used the moment its plaintext is
        // returned. Only cache misses come here; the mapping never changes once written.
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(hash_pk(&hash.to_hex())))
            .key(SK, s(HASH_SK))
            .projection_expression("key_id")
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        match out.item {
            Some(item) => Ok(Some(parse_key_id(req_s(&item, "key_id")?)?)),
            None => Ok(None),
        }
    }

    async fn authorize_and_count(&self, key_id: &KeyId, hash: &KeyHash, now: UnixTime) -> StoreResult<Decision> {
        let started = Instant::now();
        // Marks this decision's write so a retry after an ambiguous failure (timeout, 5xx:
        // applied or not?) recognises its own earlier success instead of counting twice.
        let request_id = format!("{:032x}", rand::random::<u128>());
        let day = now.day();
        let mut observed: Option<KeyState> = None;
        let (mut last_error, mut throttled, mut attempts) = (None, None, 0u64);
        for _ in 0..8 {
            if started.elapsed() > self.decision_budget {
                break;
            }
            let plan = match &observed {
                Some(state) => match next_step(state, hash, now) {
                    Step::Count { roll_window, roll_period } if roll_window || roll_period => {
                        count_update(Some((state, roll_window, roll_period)), hash, now, day, key_id, &request_id)
                    }
                    _ => count_update(None, hash, now, day, key_id, &request_id),
                },
                None => count_update(None, hash, now, day, key_id, &request_id),
            };
            let result = self.count_request(key_id, plan).send().await;
            match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    let state = key_state_from_item(&item)?;
                    return Ok(Decision::for_key(&state, Ok(()), &state.counters, now));
                }
                Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                    // ALL_OLD: the item as it stood when the condition failed (None: no item,
                    // the hash pointed at a key that does not exist).
                    let old = match se.err() {
                        UpdateItemError::ConditionalCheckFailedException(ccf) => ccf.item(),
                        _ => None,
                    };
                    let Some(item) = old else {
                        return Ok(Decision::denied(Denial::InvalidKey));
                    };
                    let state = key_state_from_item(item)?;
                    if s_opt(item, "last_req") == Some(request_id.as_str()) {
                        // An earlier attempt of this very decision was applied.
                        return Ok(Decision::for_key(&state, Ok(()), &state.counters, now));
                    }
                    match next_step(&state, hash, now) {
                        // A secret this key no longer accepts says nothing about the key to
                        // the caller, and is not the key owner's traffic to count.
                        Step::Deny(Denial::InvalidKey) => return Ok(Decision::denied(Denial::InvalidKey)),
                        Step::Deny(denial) => {
                            self.count_denial(key_id, day, 1).await;
                            return Ok(Decision::for_key(&state, Err(denial), &state.counters, now));
                        }
                        // A window ended, or another request rolled it first: go again with
                        // what we now know.
                        Step::Count { .. } => observed = Some(state),
                    }
                }
                Err(e) => {
                    let err = sdk_err(e);
                    match err.fault() {
                        None => return Err(err),
                        // One throttled attempt makes the decision throttled: a later timeout
                        // must not turn an attacker's load into a transient outage.
                        Some(Fault::Throttled) => throttled = Some(err),
                        Some(_) => last_error = Some(err),
                    }
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempts)).await;
                }
            }
        }
        Err(throttled.or(last_error).unwrap_or_else(|| {
            StoreError::Unavailable(Outage::new(Fault::Contention, "authorization contention: gave up"))
        }))
    }

    async fn record_denials(&self, key_id: &KeyId, day: Day, n: u64) {
        self.count_denial(key_id, day, n).await;
    }
}

impl DynamoStore {
    fn count_request(
        &self,
        key_id: &KeyId,
        plan: CountPlan,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.decision_client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(key_pk(key_id.as_str())))
            .key(SK, s(KEY_SK))
            .update_expression(plan.update)
            .condition_expression(plan.condition)
            .set_expression_attribute_names(Some(plan.expr.names))
            .set_expression_attribute_values(Some(plan.expr.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// The steady-state counting write of one decision, built but not sent. Benchmarks time
    /// it alone to split a decision's latency into the database's share and the code's.
    #[doc(hidden)]
    pub fn steady_state_count_request(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        now: UnixTime,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let request_id = format!("{:032x}", rand::random::<u128>());
        self.count_request(key_id, count_update(None, hash, now, now.day(), key_id, &request_id))
    }
}

struct CountPlan {
    expr: Expr,
    update: String,
    condition: String,
}

/// The conditional write that counts one request. Without `rollover` it is the steady-state
/// form (every counter in its current window, below its limit). With it, the counters the
/// decision found ended restart at 1, guarded by the exact end value that was observed, so
/// concurrent rollovers cannot both succeed.
fn count_update(
    rollover: Option<(&KeyState, bool, bool)>,
    hash: &KeyHash,
    now: UnixTime,
    day: Day,
    key_id: &KeyId,
    request_id: &str,
) -> CountPlan {
    let mut e = Expr::default();
    let now_v = e.value(n(now.secs()));
    let one = e.value(n(1));
    let active = e.value(s("active"));
    let h = e.value(s(hash.to_hex()));
    let rid = e.value(s(request_id));
    let (cur, prev, prev_until, status, exp) =
        (e.name("hash"), e.name("prev_hash"), e.name("prev_until"), e.name("status"), e.name("expires_at"));
    let (sub, sub_grace) = (e.name("sub_status"), e.name("sub_grace_until"));
    let (trialing, past_due) = (e.value(s("trialing")), e.value(s("past_due")));
    let last_req = e.name("last_req");
    let mut cond = vec![
        format!("({cur} = {h} OR ({prev} = {h} AND {prev_until} > {now_v}))"),
        format!("{status} = {active}"),
        format!("(attribute_not_exists({exp}) OR {exp} > {now_v})"),
        format!(
            "(attribute_not_exists({sub}) OR {sub} IN ({active}, {trialing}) OR ({sub} = {past_due} AND {sub_grace} > {now_v}))"
        ),
        format!("(attribute_not_exists({last_req}) OR {last_req} <> {rid})"),
    ];
    let mut adds =
        vec![format!("{} {one}", e.name("n_allowed")), format!("{} {one}", e.name(&allowed_day_attr(&day.compact())))];
    let mut sets = vec![
        format!("{last_req} = {rid}"),
        format!("{} = {}", e.name(ACTIVITY_PK), e.value(s(activity_shard(key_id.as_str())))),
    ];
    let counters = [("rl_limit", "win_end", "win_count", 0usize), ("q_limit", "q_end", "q_count", 1)];
    for (limit_attr, end, count, idx) in counters {
        let (end, count) = (e.name(end), e.name(count));
        let roll = rollover.map(|(_, w, p)| if idx == 0 { w } else { p }).unwrap_or(false);
        match rollover {
            Some((state, _, _)) if roll => {
                let next = rolled(state, idx == 0, idx == 1, now);
                let (old_end, new_end) = if idx == 0 {
                    (state.counters.window_end, next.window_end)
                } else {
                    (state.counters.period_end, next.period_end)
                };
                cond.push(format!("(attribute_not_exists({end}) OR {end} = {})", e.value(n(old_end.secs()))));
                sets.push(format!("{end} = {}", e.value(n(new_end.secs()))));
                sets.push(format!("{count} = {one}"));
            }
            _ => {
                let limit = e.name(limit_attr);
                cond.push(format!("(attribute_not_exists({limit}) OR ({end} > {now_v} AND {count} < {limit}))"));
                adds.push(format!("{count} {one}"));
            }
        }
    }
    CountPlan {
        expr: e,
        update: format!("ADD {} SET {}", adds.join(", "), sets.join(", ")),
        condition: cond.join(" AND "),
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

impl KeyStore for DynamoStore {
    async fn create_key(&self, new: NewKey) -> StoreResult<KeyRecord> {
        for _ in 0..MANAGEMENT_ATTEMPTS {
            let customer = self.get_customer_versioned(&new.customer_id).await?;
            let governing =
                governing_plan(new.plan_id.as_ref(), customer.as_ref().and_then(|c| c.0.plan_id.as_ref())).cloned();
            let plan = match &governing {
                Some(p) => self.get_plan_versioned(p).await?,
                None => None,
            };
            if new.plan_id.is_some() && plan.is_none() {
                return Err(StoreError::UnknownReference("plan"));
            }
            let record = KeyRecord {
                key_id: new.key_id.clone(),
                customer_id: new.customer_id.clone(),
                plan_id: new.plan_id.clone(),
                name: new.name.clone(),
                env: new.env,
                status: KeyStatus::Active,
                hash: new.hash,
                display: new.display.clone(),
                created_at: new.now,
                updated_at: new.now,
                expires_at: new.expires_at,
                scopes: new.scopes.clone(),
                metadata: new.metadata.clone(),
                overrides: new.overrides,
                rotation: None,
                limits: EffectiveLimits::resolve(plan.as_ref().map(|p| &p.0), &new.overrides),
                access: customer.as_ref().map(|c| c.1).unwrap_or_default(),
            };
            let mut item: Item =
                key_definition(&record).into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
            item.insert(PK.into(), s(key_pk(record.key_id.as_str())));
            item.insert(SK.into(), s(KEY_SK));
            item.insert("type".into(), s("key"));
            item.insert("ver".into(), n(1));
            item.insert(GSI1_PK.into(), s(customer_pk(record.customer_id.as_str())));
            item.insert(GSI1_SK.into(), s(record.key_id.as_str()));
            item.insert(GSI3_PK.into(), s(TYPE_KEYS));
            item.insert(GSI3_SK.into(), s(record.key_id.as_str()));
            let mut tx = vec![
                self.put_if_absent(item)?,
                self.put_if_absent(HashMap::from([
                    (PK.to_owned(), s(hash_pk(&record.hash.to_hex()))),
                    (SK.to_owned(), s(HASH_SK)),
                    ("key_id".to_owned(), s(record.key_id.as_str())),
                ]))?,
            ];
            match &customer {
                Some((_, _, ver)) => tx.push(self.customer_version_check(&record.customer_id, *ver)?),
                None => tx.push(
                    self.put_if_absent(customer_item(&Customer::new(record.customer_id.clone(), new.now), None))?,
                ),
            }
            if let (Some(p), Some((_, pver))) = (&record.limits.plan_id, &plan) {
                tx.push(self.plan_refs_update(p, 1, Some(*pver))?);
            }
            match self.transact(tx).await {
                Ok(()) => return Ok(record),
                Err(TxError::ConditionFailed(failed)) if failed[0] || failed[1] => {
                    return Err(StoreError::AlreadyExists("key"));
                }
                // The customer or plan changed under us: resolve again.
                Err(TxError::ConditionFailed(_)) => continue,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict("the customer or plan changed concurrently; try again".into()))
    }

    async fn get_key(&self, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        self.get_key_item(id).await?.map(|i| key_record_from_item(&i)).transpose()
    }

    async fn list_keys(&self, filter: &KeyFilter, limit: usize, cursor: Option<&str>) -> StoreResult<Page<KeyRecord>> {
        let limit = limit.clamp(1, 100);
        let (index, pk_attr, sk_attr, pk_value) = match (&filter.customer_id, &filter.plan_id) {
            (Some(c), _) => (GSI1, GSI1_PK, GSI1_SK, customer_pk(c.as_str())),
            (None, Some(p)) => (GSI2, GSI2_PK, GSI2_SK, plan_pk(p.as_str())),
            (None, None) => (GSI3, GSI3_PK, GSI3_SK, TYPE_KEYS.to_owned()),
        };
        let mut start = cursor.map(|c| decode_cursor(c, pk_attr, sk_attr, &pk_value)).transpose()?;
        let mut items = vec![];
        let mut next_cursor = None;
        loop {
            let mut e = Expr::default();
            let key_cond = format!("{} = {}", e.name(pk_attr), e.value(s(pk_value.clone())));
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(key_cond)
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(limit + 1).unwrap_or(101));
            let out = {
                // GSI2 holds keys only: its results are fetched by id below.
                q = q
                    .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
                    .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values));
                q.send().await.map_err(sdk_err)?
            };
            let last_key = out.last_evaluated_key;
            for raw in out.items.unwrap_or_default() {
                let record = if index == GSI2 {
                    match self.get_key(&parse_key_id(req_s(&raw, "key_id").or_else(|_| req_s(&raw, GSI2_SK))?)?).await?
                    {
                        Some(r) => r,
                        None => continue,
                    }
                } else {
                    key_record_from_item(&raw)?
                };
                let keep = filter.customer_id.as_ref().is_none_or(|c| *c == record.customer_id)
                    && filter.plan_id.as_ref().is_none_or(|p| Some(p) == record.limits.plan_id.as_ref())
                    && filter.status.is_none_or(|st| st == record.status);
                if !keep {
                    continue;
                }
                if items.len() == limit {
                    // There is at least one more: resume after the last one returned.
                    next_cursor = Some(encode_cursor(&items_cursor(&items, pk_attr, sk_attr, &pk_value)));
                    return Ok(Page { items, next_cursor });
                }
                items.push(record);
            }
            match last_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        if items.len() > limit {
            next_cursor = Some(encode_cursor(&items_cursor(&items, pk_attr, sk_attr, &pk_value)));
        }
        Ok(Page { items, next_cursor })
    }

    async fn update_key(&self, id: &KeyId, patch: KeyPatch, now: UnixTime) -> StoreResult<KeyRecord> {
        if patch.status == Some(KeyStatus::Revoked) {
            return Err(StoreError::Conflict("revoke a key with its revoke operation".into()));
        }
        self.write_key(id, now, |record| {
            if record.status == KeyStatus::Revoked {
                return Err(StoreError::Conflict("the key is revoked; revocation is permanent".into()));
            }
            let patch = patch.clone();
            if let Some(v) = patch.name {
                record.name = v;
            }
            if let Some(v) = patch.status {
                record.status = v;
            }
            if let Some(v) = patch.expires_at {
                record.expires_at = v;
            }
            if let Some(v) = patch.plan_id {
                record.plan_id = v;
            }
            if let Some(v) = patch.metadata {
                record.metadata = v;
            }
            if let Some(v) = patch.overrides {
                record.overrides = v;
            }
            Ok(true)
        })
        .await
    }

    async fn rotate_key(
        &self,
        id: &KeyId,
        new_hash: KeyHash,
        new_display: String,
        grace_until: UnixTime,
        now: UnixTime,
    ) -> StoreResult<KeyRecord> {
        for _ in 0..MANAGEMENT_ATTEMPTS {
            let item = self.get_key_item(id).await?.ok_or(StoreError::NotFound("key"))?;
            let mut record = key_record_from_item(&item)?;
            let ver = u64_or(&item, "ver", 0)?;
            if record.status == KeyStatus::Revoked {
                return Err(StoreError::Conflict("the key is revoked; revocation is permanent".into()));
            }
            let old_hash = record.hash;
            record.rotation = (grace_until > now).then_some(Rotation { previous_hash: old_hash, grace_until });
            record.hash = new_hash;
            record.display = new_display.clone();
            record.updated_at = now;
            let tx = vec![
                self.key_definition_update(&record, ver, &CarryOver::default(), &Counters::default())?,
                self.put_if_absent(HashMap::from([
                    (PK.to_owned(), s(hash_pk(&new_hash.to_hex()))),
                    (SK.to_owned(), s(HASH_SK)),
                    ("key_id".to_owned(), s(id.as_str())),
                ]))?,
            ];
            match self.transact(tx).await {
                Ok(()) => return Ok(record),
                Err(TxError::ConditionFailed(f)) if f.get(1).copied().unwrap_or(false) => {
                    return Err(StoreError::AlreadyExists("key hash"));
                }
                Err(TxError::ConditionFailed(_)) => continue,
                Err(TxError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::Conflict("the key changed concurrently; try again".into()))
    }

    async fn revoke_key(&self, id: &KeyId, now: UnixTime) -> StoreResult<KeyRecord> {
        self.write_key(id, now, |record| {
            if record.status == KeyStatus::Revoked {
                return Ok(false);
            }
            record.status = KeyStatus::Revoked;
            record.rotation = None;
            Ok(true)
        })
        .await
    }
}

impl DynamoStore {
    fn put_if_absent(&self, item: Item) -> StoreResult<TransactWriteItem> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    fn customer_version_check(&self, id: &CustomerId, ver: u64) -> StoreResult<TransactWriteItem> {
        let c = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, s(customer_pk(id.as_str())))
            .key(SK, s(CUSTOMER_SK))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", "ver")
            .expression_attribute_values(":v", n(ver))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().condition_check(c).build())
    }
}

// ---------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------

impl PlanStore for DynamoStore {
    async fn create_plan(&self, plan: &Plan) -> StoreResult<()> {
        // A plan deleted and made again starts at version 1: its predecessor's fan-out progress
        // (at some version, perhaps finished) must not be taken for this plan's.
        self.forget_fan_out(fanout::Governed::Plan(&plan.id)).await?;
        let mut item = plan_item(plan);
        item.insert("ver".into(), n(1));
        item.insert("refs".into(), n(0));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::AlreadyExists("plan"))
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn update_plan(&self, plan: &Plan, now: UnixTime, deadline: Instant) -> StoreResult<FanOut> {
        let (stored, ver) = self.get_plan_versioned(&plan.id).await?.ok_or(StoreError::NotFound("plan"))?;
        let same = Plan { created_at: stored.created_at, updated_at: stored.updated_at, ..plan.clone() } == stored;
        let ver = if same {
            // A retried update: the version stays, so the fan-out below resumes.
            ver
        } else {
            // Only the definition changes: `created_at` and the reference count `refs` (moved by
            // key transactions at any moment) are never written here.
            let mut e = Expr::default();
            let fields = plan_definition(plan).into_iter().filter(|(name, _)| *name != "created_at");
            let (assign, cond) = e.versioned(fields, ver);
            let update = assign.expression();
            if !self.conditional_update(&plan_pk(plan.id.as_str()), PLAN_SK, update, cond, e).await? {
                return Err(StoreError::Conflict("the plan changed concurrently; try again".into()));
            }
            ver + 1
        };
        self.fan_out(fanout::Governed::Plan(&plan.id), ver, now, deadline).await
    }

    async fn get_plan(&self, id: &PlanId) -> StoreResult<Option<Plan>> {
        Ok(self.get_plan_versioned(id).await?.map(|(p, _)| p))
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        self.query_all(GSI3, GSI3_PK, TYPE_PLANS).await?.iter().map(plan_from_item).collect()
    }

    async fn delete_plan(&self, id: &PlanId) -> StoreResult<()> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(plan_pk(id.as_str())))
            .key(SK, s(PLAN_SK))
            .condition_expression("attribute_exists(#pk) AND (attribute_not_exists(#r) OR #r = :zero)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#r", "refs")
            .expression_attribute_values(":zero", n(0))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                let existed = match se.err() {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                        c.item().is_some()
                    }
                    _ => false,
                };
                if existed {
                    Err(StoreError::Conflict("the plan is in use by one or more keys".into()))
                } else {
                    Err(StoreError::NotFound("plan"))
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }
}

impl DynamoStore {
    /// One conditional UpdateItem; false when its condition failed.
    async fn conditional_update(&self, pk: &str, sk: &str, update: String, cond: String, e: Expr) -> StoreResult<bool> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .update_expression(update)
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(err) => Err(sdk_err(err)),
        }
    }

    /// Every item a Query returns, all pages.
    async fn query_pages(&self, query: QueryFluentBuilder) -> StoreResult<Vec<Item>> {
        let mut items = vec![];
        let mut start = None;
        loop {
            let out = query.clone().set_exclusive_start_key(start).send().await.map_err(sdk_err)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(items),
            }
        }
    }

    /// Every item of table partition `pk` with `lo <= sk <= hi`, strongly consistent.
    async fn query_range(&self, pk: &str, lo: &str, hi: &str) -> StoreResult<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .consistent_read(true);
        self.query_pages(query).await
    }

    /// A key's usage-day items from `from` on (before `until` if given).
    async fn usage_days(&self, key_id: &KeyId, from: Day, until: Option<Day>) -> StoreResult<BTreeMap<Day, DayCount>> {
        let hi = match until {
            Some(d) => usage_day_sk(&d.minus(1).compact()),
            None => usage_day_sk("99999999"),
        };
        let items = self.query_range(&key_pk(key_id.as_str()), &usage_day_sk(&from.compact()), &hi).await?;
        items
            .iter()
            .filter(|i| s_opt(i, SK).is_some_and(|sk| sk.starts_with("DAY#")))
            .map(usage_day_from_item)
            .collect()
    }

    /// Every item of one index partition.
    async fn query_all(&self, index: &str, pk_attr: &str, pk_value: &str) -> StoreResult<Vec<Item>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", pk_attr)
            .expression_attribute_values(":p", s(pk_value));
        self.query_pages(query).await
    }

    async fn query_key_ids(&self, index: &str, pk_attr: &str, pk_value: &str) -> StoreResult<Vec<KeyId>> {
        self.query_all(index, pk_attr, pk_value)
            .await?
            .iter()
            .map(|item| {
                parse_key_id(
                    req_s(item, PK)?.strip_prefix("KEY#").ok_or_else(|| StoreError::Corrupt("index entry".into()))?,
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------

impl CustomerStore for DynamoStore {
    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>> {
        Ok(self.get_customer_versioned(id).await?.map(|(c, _, _)| c))
    }

    async fn customer_for_stripe(&self, stripe_customer_id: &str) -> StoreResult<Option<CustomerId>> {
        match self.get(stripe_customer_pk(stripe_customer_id), STRIPE_CUSTOMER_SK).await? {
            Some(item) => billing::linked_customer(&item),
            None => Ok(None),
        }
    }

    async fn refresh_customer_keys(&self, id: &CustomerId, now: UnixTime, deadline: Instant) -> StoreResult<FanOut> {
        let Some((_, _, ver)) = self.get_customer_versioned(id).await? else {
            return Ok(FanOut { complete: true, ..Default::default() });
        };
        self.fan_out(fanout::Governed::Customer(id), ver, now, deadline).await
    }

    async fn customer_key_ids(&self, id: &CustomerId) -> StoreResult<Vec<KeyId>> {
        self.query_key_ids(GSI1, GSI1_PK, &customer_pk(id.as_str())).await
    }
}

// ---------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------

impl IdempotencyStore for DynamoStore {
    async fn claim(
        &self,
        scope: &str,
        id: &str,
        owner: &str,
        fingerprint: &str,
        lease_s: u64,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> StoreResult<Claim> {
        let item = HashMap::from([
            (PK.to_owned(), s(idempotency_pk(scope, id))),
            (SK.to_owned(), s(IDEMPOTENCY_SK)),
            ("state".to_owned(), s("pending")),
            ("owner".to_owned(), s(owner)),
            ("fingerprint".to_owned(), s(fingerprint)),
            ("lease_until".to_owned(), n(now.plus(lease_s as i64).secs())),
            ("expires_at".to_owned(), n(expires_at.secs())),
            (TTL.to_owned(), n(expires_at.secs())),
        ]);
        // Free when absent, expired (TTL deletion can lag by days), or a pending claim whose
        // holder's lease ran out (it crashed).
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now OR (#st = :pending AND #lease <= :now)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":now", n(now.secs()))
            .expression_attribute_values(":pending", s("pending"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Claim::Fresh),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                let old = match se.err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        c.item().cloned()
                    }
                    _ => None,
                };
                let old = match old {
                    Some(o) => o,
                    None => self.get(idempotency_pk(scope, id), IDEMPOTENCY_SK).await?.unwrap_or_default(),
                };
                let fingerprint = s_opt(&old, "fingerprint").unwrap_or_default().to_owned();
                match s_opt(&old, "state") {
                    Some("done") => {
                        Ok(Claim::Done { fingerprint, result: s_opt(&old, "result").unwrap_or_default().to_owned() })
                    }
                    // Our own put, applied by an attempt whose answer was lost (a timeout the
                    // SDK retried): the claim is ours.
                    Some("pending") if s_opt(&old, "owner") == Some(owner) => Ok(Claim::Fresh),
                    _ => Ok(Claim::InProgress { fingerprint }),
                }
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn finish(&self, scope: &str, id: &str, owner: &str, result: &str, expires_at: UnixTime) -> StoreResult<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(scope, id)))
            .key(SK, s(IDEMPOTENCY_SK))
            .update_expression("SET #st = :done, #res = :res, #exp = :exp, #ttl = :exp REMOVE #lease")
            .condition_expression("#st = :pending AND #owner = :owner")
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#res", "result")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":res", s(result))
            .expression_attribute_values(":exp", n(expires_at.secs()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict("the idempotency claim was lost to another attempt".into()))
            }
            Err(e) => Err(sdk_err(e)),
        }
    }

    async fn release(&self, scope: &str, id: &str, owner: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(idempotency_pk(scope, id)))
            .key(SK, s(IDEMPOTENCY_SK))
            .condition_expression("#st = :pending AND #owner = :owner")
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) {
                    Ok(())
                } else {
                    Err(sdk_err(e))
                }
            })
    }
}

// ---------------------------------------------------------------------------------------
// Usage history
// ---------------------------------------------------------------------------------------

impl UsageStore for DynamoStore {
    async fn usage_history(&self, key_id: &KeyId, from: Day) -> StoreResult<Vec<UsageDay>> {
        let mut days = self.usage_days(key_id, from, None).await?;
        // Live counters on the key item are exact and newer than any rolled-up copy.
        if let Some(item) = self.get_key_item(key_id).await? {
            for (day, live) in live_days(&item)?.range(from..) {
                let entry = days.entry(*day).or_default();
                entry.allowed = entry.allowed.max(live.allowed);
                entry.denied = entry.denied.max(live.denied);
            }
        }
        Ok(days.into_iter().map(|(day, c)| UsageDay { day, allowed: c.allowed, denied: c.denied }).collect())
    }

    async fn customer_usage(&self, customer_id: &CustomerId, from: Day) -> StoreResult<Vec<(MeterDay, MeterLedger)>> {
        let pk = customer_pk(customer_id.as_str());
        let lo = meter_day_sk(&from.compact(), None);
        let hi = format!("{METER_DAY_PREFIX}99999999$");
        let mut out = vec![];
        for item in self.query_range(&pk, &lo, &hi).await? {
            out.push(meter_ledger_from_item(customer_id, &item)?);
        }
        Ok(out)
    }

    async fn key_counters(&self, key_id: &KeyId) -> StoreResult<Option<KeyState>> {
        self.get_key_item(key_id).await?.map(|i| key_state_from_item(&i)).transpose()
    }
}

// ---------------------------------------------------------------------------------------
// Item <-> domain conversions
// ---------------------------------------------------------------------------------------

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s_opt<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn req_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    s_opt(item, name).ok_or_else(|| StoreError::Corrupt(format!("missing string attribute {name}")))
}

fn parse_u64(v: &AttributeValue, name: &str) -> StoreResult<u64> {
    match v {
        AttributeValue::N(raw) => {
            raw.parse().map_err(|_| StoreError::Corrupt(format!("attribute {name} is not a count")))
        }
        _ => Err(StoreError::Corrupt(format!("attribute {name} is not a number"))),
    }
}

fn u64_opt(item: &Item, name: &str) -> StoreResult<Option<u64>> {
    item.get(name).map(|v| parse_u64(v, name)).transpose()
}

fn u64_or(item: &Item, name: &str, default: u64) -> StoreResult<u64> {
    Ok(u64_opt(item, name)?.unwrap_or(default))
}

fn time_opt(item: &Item, name: &str) -> StoreResult<Option<UnixTime>> {
    match item.get(name) {
        Some(AttributeValue::N(raw)) => raw
            .parse()
            .map(|v| Some(UnixTime(v)))
            .map_err(|_| StoreError::Corrupt(format!("attribute {name} is not a time"))),
        Some(_) => Err(StoreError::Corrupt(format!("attribute {name} is not a number"))),
        None => Ok(None),
    }
}

fn parse_key_id(s: &str) -> StoreResult<KeyId> {
    KeyId::parse(s).map_err(|_| StoreError::Corrupt("key id".into()))
}

fn parse_hash(s: &str) -> StoreResult<KeyHash> {
    KeyHash::from_hex(s).map_err(|_| StoreError::Corrupt("key hash".into()))
}

fn plan_id_opt(item: &Item, name: &str) -> StoreResult<Option<PlanId>> {
    s_opt(item, name).map(|p| PlanId::parse(p).map_err(|_| StoreError::Corrupt("plan id".into()))).transpose()
}

fn rate_opt(item: &Item, limit: &str, window: &str) -> StoreResult<Option<RateLimit>> {
    Ok(match (u64_opt(item, limit)?, u64_opt(item, window)?) {
        (Some(limit), Some(window_s)) => Some(RateLimit { limit, window_s }),
        _ => None,
    })
}

fn quota_opt(item: &Item, limit: &str, period: &str) -> StoreResult<Option<Quota>> {
    Ok(match (u64_opt(item, limit)?, s_opt(item, period)) {
        (Some(limit), Some(p)) => {
            Some(Quota { limit, period: Period::parse(p).ok_or_else(|| StoreError::Corrupt("quota period".into()))? })
        }
        _ => None,
    })
}

fn access_from_item(item: &Item) -> StoreResult<CustomerAccess> {
    Ok(CustomerAccess {
        status: s_opt(item, "sub_status")
            .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| StoreError::Corrupt("subscription status".into())))
            .transpose()?,
        grace_until: time_opt(item, "sub_grace_until")?,
    })
}

/// The attributes that define a key (everything but its counters), each `None` when absent.
/// One list for create (Put) and update (SET/REMOVE), so the two can never disagree.
fn key_definition(r: &KeyRecord) -> Vec<(&'static str, Option<AttributeValue>)> {
    let opt_s = |v: Option<&str>| v.map(s);
    let opt_n = |v: Option<i64>| v.map(n);
    vec![
        ("key_id", Some(s(r.key_id.as_str()))),
        ("customer_id", Some(s(r.customer_id.as_str()))),
        ("plan_id", opt_s(r.plan_id.as_ref().map(PlanId::as_str))),
        ("name", opt_s(r.name.as_deref())),
        ("env", Some(s(r.env.as_str()))),
        ("status", Some(s(r.status.as_str()))),
        ("hash", Some(s(r.hash.to_hex()))),
        ("display", Some(s(r.display.clone()))),
        ("created_at", Some(n(r.created_at.secs()))),
        ("updated_at", Some(n(r.updated_at.secs()))),
        ("expires_at", opt_n(r.expires_at.map(UnixTime::secs))),
        ("scopes", (!r.scopes.is_empty()).then(|| AttributeValue::L(r.scopes.iter().map(|v| s(v.clone())).collect()))),
        (
            "metadata",
            (!r.metadata.is_empty())
                .then(|| AttributeValue::M(r.metadata.iter().map(|(k, v)| (k.clone(), s(v.clone()))).collect())),
        ),
        ("ovr_rl_limit", r.overrides.rate_limit.map(|x| n(x.limit))),
        ("ovr_rl_window", r.overrides.rate_limit.map(|x| n(x.window_s))),
        ("ovr_q_limit", r.overrides.quota.map(|x| n(x.limit))),
        ("ovr_q_period", r.overrides.quota.map(|x| s(x.period.as_str()))),
        ("prev_hash", r.rotation.map(|x| s(x.previous_hash.to_hex()))),
        ("prev_until", r.rotation.map(|x| n(x.grace_until.secs()))),
        ("plan", opt_s(r.limits.plan_id.as_ref().map(PlanId::as_str))),
        (GSI2_PK, r.limits.plan_id.as_ref().map(|p| s(plan_pk(p.as_str())))),
        (GSI2_SK, r.limits.plan_id.as_ref().map(|_| s(r.key_id.as_str()))),
        ("rl_limit", r.limits.rate_limit.map(|x| n(x.limit))),
        ("rl_window", r.limits.rate_limit.map(|x| n(x.window_s))),
        ("q_limit", r.limits.quota.map(|x| n(x.limit))),
        ("q_period", r.limits.quota.map(|x| s(x.period.as_str()))),
        ("sub_status", r.access.status.map(|x| s(x.as_str()))),
        ("sub_grace_until", r.access.grace_until.map(|x| n(x.secs()))),
    ]
}

fn key_record_from_item(item: &Item) -> StoreResult<KeyRecord> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("key item: {what}"));
    Ok(KeyRecord {
        key_id: parse_key_id(req_s(item, "key_id")?)?,
        customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
        plan_id: plan_id_opt(item, "plan_id")?,
        name: s_opt(item, "name").map(str::to_owned),
        env: req_s(item, "env")?.parse::<KeyEnv>().map_err(|_| corrupt("env"))?,
        status: KeyStatus::parse(req_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        hash: parse_hash(req_s(item, "hash")?)?,
        display: req_s(item, "display")?.to_owned(),
        created_at: time_opt(item, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
        updated_at: time_opt(item, "updated_at")?.ok_or_else(|| corrupt("updated_at"))?,
        expires_at: time_opt(item, "expires_at")?,
        scopes: match item.get("scopes") {
            Some(AttributeValue::L(l)) => {
                l.iter().map(|v| v.as_s().cloned().map_err(|_| corrupt("scopes"))).collect::<StoreResult<_>>()?
            }
            _ => vec![],
        },
        metadata: match item.get("metadata") {
            Some(AttributeValue::M(m)) => m
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.as_s().map_err(|_| corrupt("metadata"))?.clone())))
                .collect::<StoreResult<_>>()?,
            _ => BTreeMap::new(),
        },
        overrides: LimitOverrides {
            rate_limit: rate_opt(item, "ovr_rl_limit", "ovr_rl_window")?,
            quota: quota_opt(item, "ovr_q_limit", "ovr_q_period")?,
        },
        rotation: match (s_opt(item, "prev_hash"), time_opt(item, "prev_until")?) {
            (Some(h), Some(until)) => Some(Rotation { previous_hash: parse_hash(h)?, grace_until: until }),
            _ => None,
        },
        limits: EffectiveLimits {
            plan_id: plan_id_opt(item, "plan")?,
            rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
            quota: quota_opt(item, "q_limit", "q_period")?,
        },
        access: access_from_item(item)?,
    })
}

/// The narrow view the authorizer decides from. Reads only what a decision needs, so the
/// hot path does no work on names, metadata or scopes.
fn key_state_from_item(item: &Item) -> StoreResult<KeyState> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("key item: {what}"));
    Ok(KeyState {
        key_id: parse_key_id(req_s(item, "key_id")?)?,
        customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
        plan_id: plan_id_opt(item, "plan")?,
        status: KeyStatus::parse(req_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        expires_at: time_opt(item, "expires_at")?,
        current_hash: parse_hash(req_s(item, "hash")?)?,
        previous_hash: match (s_opt(item, "prev_hash"), time_opt(item, "prev_until")?) {
            (Some(h), Some(until)) => Some((parse_hash(h)?, until)),
            _ => None,
        },
        access: access_from_item(item)?,
        rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
        quota: quota_opt(item, "q_limit", "q_period")?,
        counters: Counters {
            window_end: time_opt(item, "win_end")?.unwrap_or(UnixTime(0)),
            window_count: u64_or(item, "win_count", 0)?,
            period_end: time_opt(item, "q_end")?.unwrap_or(UnixTime(0)),
            period_count: u64_or(item, "q_count", 0)?,
        },
    })
}

/// The attributes that define a plan, each `None` when absent (create and update share it).
fn plan_definition(p: &Plan) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("plan_id", Some(s(p.id.as_str()))),
        ("name", Some(s(p.name.clone()))),
        ("created_at", Some(n(p.created_at.secs()))),
        ("updated_at", Some(n(p.updated_at.secs()))),
        ("rl_limit", p.rate_limit.map(|r| n(r.limit))),
        ("rl_window", p.rate_limit.map(|r| n(r.window_s))),
        ("q_limit", p.quota.map(|q| n(q.limit))),
        ("q_period", p.quota.map(|q| s(q.period.as_str()))),
        (
            "stripe_price_ids",
            (!p.stripe_price_ids.is_empty())
                .then(|| AttributeValue::L(p.stripe_price_ids.iter().map(|v| s(v.clone())).collect())),
        ),
        ("meter_event_name", p.meter_event_name.clone().map(s)),
    ]
}

fn plan_item(p: &Plan) -> Item {
    let mut item: Item = plan_definition(p).into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect();
    item.insert(PK.to_owned(), s(plan_pk(p.id.as_str())));
    item.insert(SK.to_owned(), s(PLAN_SK));
    item.insert("type".to_owned(), s("plan"));
    item.insert(GSI3_PK.to_owned(), s(TYPE_PLANS));
    item.insert(GSI3_SK.to_owned(), s(p.id.as_str()));
    item
}

fn plan_from_item(item: &Item) -> StoreResult<Plan> {
    Ok(Plan {
        id: plan_id_opt(item, "plan_id")?.ok_or_else(|| StoreError::Corrupt("plan item: plan_id".into()))?,
        name: req_s(item, "name")?.to_owned(),
        rate_limit: rate_opt(item, "rl_limit", "rl_window")?,
        quota: quota_opt(item, "q_limit", "q_period")?,
        stripe_price_ids: match item.get("stripe_price_ids") {
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            _ => vec![],
        },
        meter_event_name: s_opt(item, "meter_event_name").map(str::to_owned),
        created_at: time_opt(item, "created_at")?.unwrap_or(UnixTime(0)),
        updated_at: time_opt(item, "updated_at")?.unwrap_or(UnixTime(0)),
    })
}

fn customer_item(c: &Customer, access: Option<CustomerAccess>) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(customer_pk(c.customer_id.as_str()))),
        (SK.to_owned(), s(CUSTOMER_SK)),
        ("type".to_owned(), s("customer")),
        ("customer_id".to_owned(), s(c.customer_id.as_str())),
        ("created_at".to_owned(), n(c.created_at.secs())),
        ("updated_at".to_owned(), n(c.updated_at.secs())),
        ("ver".to_owned(), n(1)),
    ]);
    let mut put = |k: &str, v: Option<AttributeValue>| {
        if let Some(v) = v {
            item.insert(k.to_owned(), v);
        }
    };
    put("stripe_customer_id", c.stripe_customer_id.clone().map(s));
    put("stripe_subscription_id", c.stripe_subscription_id.clone().map(s));
    put("subscription_status", c.subscription_status.map(|v| s(v.as_str())));
    put("plan_id", c.plan_id.as_ref().map(|p| s(p.as_str())));
    put("current_period_end", c.current_period_end.map(|t| n(t.secs())));
    put("past_due_since", c.past_due_since.map(|t| n(t.secs())));
    put("unknown_price_id", c.unknown_price_id.clone().map(s));
    if let Some(a) = access {
        put("sub_status", a.status.map(|v| s(v.as_str())));
        put("sub_grace_until", a.grace_until.map(|t| n(t.secs())));
    }
    item
}

fn customer_from_item(item: &Item) -> StoreResult<Customer> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("customer item: {what}"));
    Ok(Customer {
        customer_id: CustomerId::parse(req_s(item, "customer_id")?).map_err(|_| corrupt("customer_id"))?,
        stripe_customer_id: s_opt(item, "stripe_customer_id").map(str::to_owned),
        stripe_subscription_id: s_opt(item, "stripe_subscription_id").map(str::to_owned),
        subscription_status: s_opt(item, "subscription_status")
            .map(|v| SubscriptionStatus::parse(v).ok_or_else(|| corrupt("subscription_status")))
            .transpose()?,
        plan_id: plan_id_opt(item, "plan_id")?,
        current_period_end: time_opt(item, "current_period_end")?,
        past_due_since: time_opt(item, "past_due_since")?,
        unknown_price_id: s_opt(item, "unknown_price_id").map(str::to_owned),
        created_at: time_opt(item, "created_at")?.unwrap_or(UnixTime(0)),
        updated_at: time_opt(item, "updated_at")?.unwrap_or(UnixTime(0)),
    })
}

// ---------------------------------------------------------------------------------------
// Cursors, expressions, errors
// ---------------------------------------------------------------------------------------

/// The index position after the last item returned: the table key plus the index key.
/// A usage-day item (`DAY#YYYYMMDD` in a key's partition).
fn usage_day_from_item(item: &Item) -> StoreResult<(Day, DayCount)> {
    let day = req_s(item, SK)?
        .strip_prefix("DAY#")
        .and_then(Day::parse_compact)
        .ok_or_else(|| StoreError::Corrupt("usage day".into()))?;
    Ok((day, DayCount { allowed: u64_or(item, "allowed", 0)?, denied: u64_or(item, "denied", 0)? }))
}

/// The live `ua_YYYYMMDD` / `ud_YYYYMMDD` counters of a key item.
fn live_days(item: &Item) -> StoreResult<BTreeMap<Day, DayCount>> {
    let mut days: BTreeMap<Day, DayCount> = BTreeMap::new();
    for (name, value) in item {
        let (allowed, compact) = match (name.strip_prefix("ua_"), name.strip_prefix("ud_")) {
            (Some(d), _) => (true, d),
            (_, Some(d)) => (false, d),
            _ => continue,
        };
        let Some(day) = Day::parse_compact(compact) else { continue };
        let v = parse_u64(value, name)?;
        let entry = days.entry(day).or_default();
        if allowed {
            entry.allowed = v;
        } else {
            entry.denied = v;
        }
    }
    Ok(days)
}

/// A meter ledger item (`USAGE#YYYYMMDD#<meter>` in a customer's partition).
fn meter_ledger_from_item(customer_id: &CustomerId, item: &Item) -> StoreResult<(MeterDay, MeterLedger)> {
    let corrupt = || StoreError::Corrupt("meter ledger".into());
    let rest = req_s(item, SK)?.strip_prefix(METER_DAY_PREFIX).ok_or_else(corrupt)?;
    let (day, meter) = rest.split_once('#').ok_or_else(corrupt)?;
    let day = Day::parse_compact(day).ok_or_else(corrupt)?;
    let pending = match (u64_opt(item, "pend_value")?, s_opt(item, "pend_id")) {
        (Some(value), Some(identifier)) => Some(PendingReport {
            value,
            to: u64_or(item, "pend_to", 0)?,
            identifier: identifier.to_owned(),
            timestamp: u64_or(item, "pend_ts", 0)? as i64,
            stripe_customer_id: req_s(item, "pend_cus")?.to_owned(),
        }),
        _ => None,
    };
    let ledger = MeterLedger {
        usage: DayCount { allowed: u64_or(item, "allowed", 0)?, denied: u64_or(item, "denied", 0)? },
        reported: u64_or(item, "reported", 0)?,
        unbilled: u64_or(item, "unbilled", 0)?,
        pending,
    };
    let meter = (!meter.is_empty()).then(|| meter.to_owned());
    Ok((MeterDay { customer_id: customer_id.clone(), day, meter }, ledger))
}

fn items_cursor(items: &[KeyRecord], pk_attr: &str, sk_attr: &str, pk_value: &str) -> BTreeMap<String, String> {
    let last = items.last().map(|r| r.key_id.as_str().to_owned()).unwrap_or_default();
    BTreeMap::from([
        (PK.to_owned(), key_pk(&last)),
        (SK.to_owned(), KEY_SK.to_owned()),
        (pk_attr.to_owned(), pk_value.to_owned()),
        (sk_attr.to_owned(), last),
    ])
}

fn encode_cursor(key: &BTreeMap<String, String>) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A cursor is only valid for the listing that issued it: same index, same partition.
fn decode_cursor(raw: &str, pk_attr: &str, sk_attr: &str, pk_value: &str) -> StoreResult<Item> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| StoreError::InvalidCursor)?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    let expected = [PK, SK, pk_attr, sk_attr];
    let valid = map.len() == expected.len()
        && expected.iter().all(|k| map.contains_key(*k))
        && map.get(pk_attr).is_some_and(|v| v == pk_value)
        && map.get(SK).is_some_and(|v| v == KEY_SK)
        && map
            .get(sk_attr)
            .and_then(|v| KeyId::parse(v).ok())
            .is_some_and(|id| map.get(PK) == Some(&key_pk(id.as_str())));
    if !valid {
        return Err(StoreError::InvalidCursor);
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

/// Collects placeholder names and values for an expression, so attribute names never clash
/// with DynamoDB's reserved words and values are never spliced into expression text.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), attr.to_owned());
        k
    }

    fn value(&mut self, v: AttributeValue) -> String {
        if let Some((k, _)) = self.values.iter().find(|(_, existing)| **existing == v) {
            return k.clone();
        }
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), v);
        k
    }

    /// `SET` each field that has a value and `REMOVE` each that has none, and move the item's
    /// `ver` from `ver` to `ver + 1`. Returns the assignments and the condition on `ver`.
    fn versioned<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a str, Option<AttributeValue>)>,
        ver: u64,
    ) -> (Assignments, String) {
        let mut a = Assignments::default();
        for (name, value) in fields {
            let attr = self.name(name);
            match value {
                Some(v) => a.sets.push(format!("{attr} = {}", self.value(v))),
                None => a.removes.push(attr),
            }
        }
        let vn = self.name("ver");
        a.sets.push(format!("{vn} = {}", self.value(n(ver + 1))));
        let cond = format!("{vn} = {}", self.value(n(ver)));
        (a, cond)
    }
}

/// The clauses of an update expression.
#[derive(Default)]
struct Assignments {
    sets: Vec<String>,
    removes: Vec<String>,
    adds: Vec<String>,
}

impl Assignments {
    fn expression(&self) -> String {
        let mut out = vec![];
        for (verb, parts) in [("SET", &self.sets), ("REMOVE", &self.removes), ("ADD", &self.adds)] {
            if !parts.is_empty() {
                out.push(format!("{verb} {}", parts.join(", ")));
            }
        }
        out.join(" ")
    }
}

/// Maps an SDK failure to what callers act on: an outage of a known class (the fail-mode
/// matrix's rows; safe to retry) or a hard error. The SDK error stays the source.
fn sdk_err<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let fault = match &err {
        SdkError::TimeoutError(_) => Some(Fault::Timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Some(Fault::Timeout),
        // Refused, reset, or dropped before or while the answer came back.
        SdkError::DispatchFailure(d)
            if d.is_io() || d.as_other() == Some(aws_smithy_types::retry::ErrorKind::TransientError) =>
        {
            Some(Fault::Connection)
        }
        SdkError::ResponseError(_) => Some(Fault::Connection),
        // Failed before anything was sent (credentials, signing, endpoint): not an outage.
        SdkError::DispatchFailure(_) => None,
        SdkError::ServiceError(se) => match se.err().code() {
            Some("ProvisionedThroughputExceededException" | "RequestLimitExceeded" | "ThrottlingException") => {
                Some(Fault::Throttled)
            }
            Some("TransactionConflictException") => Some(Fault::Contention),
            Some("InternalServerError" | "ServiceUnavailable") => Some(Fault::Server),
            _ if se.raw().status().is_server_error() => Some(Fault::Server),
            _ => None,
        },
        _ => None,
    };
    let described = format!("{}", DisplayErr(&err));
    match fault {
        Some(fault) => StoreError::Unavailable(Outage { detail: described, ..Outage::caused_by(fault, err) }),
        None => StoreError::Backend(Box::new(Described { described, source: Box::new(err) })),
    }
}

/// An SDK error described with its service code and message, keeping the error as source.
#[derive(Debug)]
struct Described {
    described: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// An SDK error with its service code and message, for logs.
struct DisplayErr<'a, E, R>(&'a SdkError<E, R>);

impl<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static> std::fmt::Display
    for DisplayErr<'_, E, R>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            SdkError::ServiceError(se) => write!(
                f,
                "{}: {}",
                se.err().code().unwrap_or("ServiceError"),
                se.err().message().unwrap_or("no message")
            ),
            other => {
                write!(f, "{other}")?;
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customers::CustomerId;

    #[test]
    fn listing_indexes_project_every_definition_attribute_and_no_counter() {
        let record = KeyRecord {
            key_id: KeyId::parse("key_01JD0000000000000000000000").unwrap(),
            customer_id: CustomerId::parse("acme").unwrap(),
            plan_id: None,
            name: None,
            env: KeyEnv::Live,
            status: KeyStatus::Active,
            hash: KeyHash::from_hex(&"ab".repeat(32)).unwrap(),
            display: "tg_live_...abcd".into(),
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
            expires_at: None,
            scopes: vec![],
            metadata: BTreeMap::new(),
            overrides: LimitOverrides::default(),
            rotation: None,
            limits: EffectiveLimits::default(),
            access: CustomerAccess::default(),
        };
        for (name, _) in key_definition(&record) {
            if name == GSI2_PK || name == GSI2_SK {
                continue;
            }
            assert!(KEY_LISTING_ATTRS.contains(&name), "gsi1 must project {name}");
            assert!(listing_attrs().contains(&name), "gsi3 must project {name}");
        }
        let plan = Plan {
            id: PlanId::parse("p").unwrap(),
            name: "P".into(),
            rate_limit: None,
            quota: None,
            stripe_price_ids: vec![],
            meter_event_name: None,
            created_at: UnixTime(0),
            updated_at: UnixTime(0),
        };
        for (name, _) in plan_definition(&plan) {
            assert!(listing_attrs().contains(&name), "gsi3 must project {name}");
        }
        for counter in ["win_end", "win_count", "q_end", "q_count", "n_allowed", "n_denied", "last_req", ACTIVITY_PK] {
            assert!(!listing_attrs().contains(&counter) && !KEY_LISTING_ATTRS.contains(&counter), "{counter}");
        }
    }

    #[test]
    fn cursors_only_resume_their_own_listing() {
        let id = "key_01JD0000000000000000000000";
        let key = BTreeMap::from([
            (PK.to_owned(), key_pk(id)),
            (SK.to_owned(), KEY_SK.to_owned()),
            (GSI1_PK.to_owned(), "CUST#acme".to_owned()),
            (GSI1_SK.to_owned(), id.to_owned()),
        ]);
        let c = encode_cursor(&key);
        assert!(decode_cursor(&c, GSI1_PK, GSI1_SK, "CUST#acme").is_ok());
        assert!(matches!(decode_cursor(&c, GSI1_PK, GSI1_SK, "CUST#other"), Err(StoreError::InvalidCursor)));
        assert!(matches!(decode_cursor(&c, GSI3_PK, GSI3_SK, TYPE_KEYS), Err(StoreError::InvalidCursor)));
        assert!(matches!(decode_cursor("%%%", GSI1_PK, GSI1_SK, "CUST#acme"), Err(StoreError::InvalidCursor)));
    }
}
