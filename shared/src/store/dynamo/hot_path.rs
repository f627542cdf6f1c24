//! [`AuthorizeStore`]: the authorizer's hot path. One conditional UpdateItem checks and counts
//! a request; a condition failure returns the item as it stood, from which the decision (or a
//! rollover attempt) follows.

use super::DynamoStore;
use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{n, parse_key_id, req_s, s, s_opt};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::decision::{Decision, Denial, KeyState, Step, next_step, rolled};
use crate::domain::time::{Day, UnixTime};
use crate::store::schema::*;
use crate::store::{AuthorizeStore, Fault, Outage, StoreError, StoreResult};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::time::{Duration, Instant};

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

    async fn authorize_and_count(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
    ) -> StoreResult<Decision> {
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
            let write = Write { hash, required, now, day, key_id, request_id: &request_id };
            let plan = match &observed {
                Some(state) => match next_step(state, hash, required, now) {
                    Step::Count { roll_window, roll_period } if roll_window || roll_period => {
                        count_update(Some((state, roll_window, roll_period)), &write)
                    }
                    _ => count_update(None, &write),
                },
                None => count_update(None, &write),
            };
            let result = self.count_request(key_id, plan).send().await;
            match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    let state = KeyState::try_from(&item)?;
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
                    let state = KeyState::try_from(item)?;
                    if s_opt(item, "last_req") == Some(request_id.as_str()) {
                        // An earlier attempt of this very decision was applied.
                        return Ok(Decision::for_key(&state, Ok(()), &state.counters, now));
                    }
                    match next_step(&state, hash, required, now) {
                        // A secret this key no longer accepts says nothing about the key to
                        // the caller, and is not the key owner's traffic to count.
                        Step::Deny(Denial::InvalidKey) => return Ok(Decision::denied(Denial::InvalidKey)),
                        Step::Deny(denial) => {
                            self.count_denial(key_id, day, denial, 1).await;
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

    async fn record_denials(&self, key_id: &KeyId, day: Day, denial: Denial, n: u64) {
        self.count_denial(key_id, day, denial, n).await;
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
        let write = Write { hash, required: &[], now, day: now.day(), key_id, request_id: &request_id };
        self.count_request(key_id, count_update(None, &write))
    }

    /// Counts denied requests for the history, by day and code. Best effort by design: a lost
    /// denial count never changes a decision or a bill.
    async fn count_denial(&self, key_id: &KeyId, day: Day, denial: Denial, count: u64) {
        if denial.recorded_index().is_none() {
            return;
        }
        let mut e = Expr::default();
        let one = e.value(n(count));
        let update = format!(
            "ADD {} {one}, {} {one}, {} {one} SET {} = {}",
            e.name("n_denied"),
            e.name(&denied_day_attr(&day.compact())),
            e.name(&denied_code_day_attr(&day.compact(), denial.code())),
            e.name(ACTIVITY_PK),
            e.value(s(activity_shard(key_id.as_str()))),
        );
        let cond = format!("attribute_exists({})", e.name(PK));
        // A key deleted meanwhile has nothing to count (the condition fails: Ok(false)).
        if let Err(err) = self.conditional_update(&key_pk(key_id.as_str()), KEY_SK, update, cond, e).await {
            tracing::warn!(key_id = %key_id, error = %err, "could not count a denied request");
        }
    }
}

struct CountPlan {
    expr: Expr,
    update: String,
    condition: String,
}

/// One decision's write: the secret presented, the scopes the route needs, when, and the
/// request id that marks it.
struct Write<'a> {
    hash: &'a KeyHash,
    required: &'a [String],
    now: UnixTime,
    day: Day,
    key_id: &'a KeyId,
    request_id: &'a str,
}

/// The conditional write that counts one request. Without `rollover` it is the steady-state
/// form (every counter in its current window, below its limit). With it, the counters the
/// decision found ended restart at 1, guarded by the exact end value that was observed, so
/// concurrent rollovers cannot both succeed. The route's scopes are part of the condition:
/// a key without one fails it, and the item it returns says why (no second read).
fn count_update(rollover: Option<(&KeyState, bool, bool)>, w: &Write<'_>) -> CountPlan {
    let Write { hash, required, now, day, key_id, request_id } = *w;
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
    if !required.is_empty() {
        let scopes = e.name("scopes");
        for scope in required {
            cond.push(format!("contains({scopes}, {})", e.value(s(scope.clone()))));
        }
    }
    let mut adds =
        vec![format!("{} {one}", e.name("n_allowed")), format!("{} {one}", e.name(&allowed_day_attr(&day.compact())))];
    // `last_used`: on the key item only (no index projects it), so a decision writes no index.
    let mut sets = vec![
        format!("{last_req} = {rid}"),
        format!("{} = {now_v}", e.name("last_used")),
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
