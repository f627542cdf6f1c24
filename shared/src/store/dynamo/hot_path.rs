//! [`AuthorizeStore`]: the authorizer's hot path. One conditional UpdateItem checks and counts
//! a request; a condition failure returns the item as it stood, from which the decision (or a
//! rollover attempt) follows.

use super::DynamoStore;
use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{n, parse_key_id, req_s, s, s_opt};
use crate::domain::admission::{ADMISSION, ADMITTED_KEY_STATUS, GRACE_SUBSCRIPTIONS, OPEN_SUBSCRIPTIONS, Requirement};
use crate::domain::api_key::{KeyHash, KeyId};
use crate::domain::customers::SubscriptionStatus;
use crate::domain::decision::{Decision, Denial, KeyState, Step, next_step, rolled};
use crate::domain::lease::{Counter, Take, Unspent, add_used, billed_days, fit};
use crate::domain::time::{Day, UnixTime};
use crate::store::schema::*;
use crate::store::{AuthorizeStore, Fault, Outage, StoreError, StoreResult, Taken};
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
            .projection_expression(KEY_ID)
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        match out.item {
            Some(item) => Ok(Some(parse_key_id(req_s(&item, KEY_ID)?)?)),
            None => Ok(None),
        }
    }

    async fn take(
        &self,
        key_id: &KeyId,
        hash: &KeyHash,
        required: &[String],
        now: UnixTime,
        take: &mut Take,
    ) -> StoreResult<Taken> {
        let started = Instant::now();
        // Marks this decision's write so a retry after an ambiguous failure (timeout, 5xx:
        // applied or not?) recognises its own earlier success instead of counting twice.
        let request_id = format!("{:032x}", rand::random::<u128>());
        let day = now.day();
        let mut observed: Option<KeyState> = None;
        let (mut last_error, mut throttled, mut attempts) = (None, None, 0u64);
        // The tokens of the attempt being sent (an applied earlier attempt, found by its marker,
        // reserved at least as many: a retry only ever asks for fewer).
        let mut sent: u64;
        for _ in 0..8 {
            if started.elapsed() > self.decision_budget {
                break;
            }
            let fitted = fit(take, observed.as_ref(), now);
            let write = Write { hash, required, now, day, key_id, request_id: &request_id, take: &fitted };
            let plan = match &observed {
                Some(state) => match next_step(state, hash, required, now) {
                    Step::Count { roll_window, roll_period } if roll_window || roll_period => {
                        count_update(Some((state, roll_window, roll_period)), &write)
                    }
                    _ => count_update(None, &write),
                },
                None => count_update(None, &write),
            };
            sent = fitted.tokens;
            let result = self.count_request(key_id, plan).send().await;
            match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    let state = KeyState::try_from(&item)?;
                    let decision = Decision::for_key(&state, Ok(()), &state.counters, now);
                    take.used.clear();
                    take.unspent = None;
                    return Ok(Taken { decision, tokens: fitted.tokens });
                }
                Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                    // ALL_OLD: the item as it stood when the condition failed (None: no item,
                    // the hash pointed at a key that does not exist).
                    let old = match se.err() {
                        UpdateItemError::ConditionalCheckFailedException(ccf) => ccf.item(),
                        _ => None,
                    };
                    let Some(item) = old else {
                        // No item: nothing to count earlier blocks on.
                        take.used.clear();
                        take.unspent = None;
                        return Ok(Taken::refused(Decision::denied(Denial::InvalidKey)));
                    };
                    let state = KeyState::try_from(item)?;
                    if s_opt(item, LAST_REQ) == Some(request_id.as_str()) {
                        // An earlier attempt of this very decision was applied.
                        let decision = Decision::for_key(&state, Ok(()), &state.counters, now);
                        return Ok(Taken { decision, tokens: sent });
                    }
                    match next_step(&state, hash, required, now) {
                        // Refused: the key's earlier blocks are still counted and given back
                        // (their requests were admitted while it accepted them). A secret this
                        // key no longer accepts says nothing about the key to the caller, and
                        // this request is not the key owner's traffic to count.
                        Step::Deny(denial) => {
                            if !take.used.is_empty() || take.unspent.is_some() {
                                if let Err(e) = self.settle(key_id, &take.used, take.unspent, now).await {
                                    tracing::warn!(key_id = %key_id, error = %e, "could not settle a lease");
                                }
                                take.used.clear();
                                take.unspent = None;
                            }
                            if denial == Denial::InvalidKey {
                                return Ok(Taken::refused(Decision::denied(Denial::InvalidKey)));
                            }
                            self.count_denial(key_id, day, denial, 1).await;
                            return Ok(Taken::refused(Decision::for_key(&state, Err(denial), &state.counters, now)));
                        }
                        // A window ended, another request rolled it first, or the block did not
                        // fit: go again with what we now know.
                        Step::Count { .. } => observed = Some(state),
                    }
                }
                Err(e) => {
                    let err = sdk_err(e);
                    let fault = err.fault();
                    match fault {
                        None => return Err(err),
                        // One throttled attempt makes the decision throttled: a later timeout
                        // must not turn an attacker's load into a transient outage.
                        Some(Fault::Throttled) => throttled = Some(err),
                        Some(_) => last_error = Some(err),
                    }
                    // Applied or not, unknown (a throttled write, or one refused for a
                    // transaction holding the item, was not): what earlier blocks used and left
                    // is not sent again (counted twice would bill twice; returned twice would
                    // admit more).
                    if !fault.is_some_and(Fault::not_applied) {
                        take.used.clear();
                        take.unspent = None;
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

    async fn settle(
        &self,
        key_id: &KeyId,
        used: &[(Day, u64)],
        unspent: Option<Unspent>,
        now: UnixTime,
    ) -> StoreResult<()> {
        // Given back to each counter only where the tokens came from (its end unchanged and
        // still ahead); a failed condition returns the item, and the next try gives back what
        // still can (possibly nothing) and counts the used requests.
        let mut give_back = unspent.and_then(Unspent::worth_returning);
        let (mut attempt, mut refused) = (0, 0);
        while attempt < 3 {
            if attempt == 2 {
                // The ends keep moving: count the used requests, give nothing back.
                give_back = None;
            }
            let mut e = Expr::default();
            let mut adds = vec![];
            let total: u64 = used.iter().map(|(_, n)| n).sum();
            if total > 0 {
                adds.push(format!("{} {}", e.name(N_ALLOWED), e.value(n(total))));
            }
            for (d, count) in billed_days(used, now) {
                adds.push(format!("{} {}", e.name(&allowed_day_attr(&d.compact())), e.value(n(count))));
            }
            let mut cond = vec![format!("attribute_exists({})", e.name(PK))];
            if let Some(u) = give_back {
                for (counter, _, end_attr, count_attr) in COUNTERS {
                    if let Some(at) = u.end(counter) {
                        let end = e.name(end_attr);
                        adds.push(format!("{} {}", e.name(count_attr), e.value(n(-(u.tokens as i64)))));
                        cond.push(format!("{end} = {} AND {end} > {}", e.value(n(at.secs())), e.value(n(now.secs()))));
                    }
                }
            }
            if adds.is_empty() {
                return Ok(());
            }
            let update = format!(
                "ADD {} SET {} = {}",
                adds.join(", "),
                e.name(ACTIVITY_PK),
                e.value(s(activity_shard(key_id.as_str())))
            );
            // Never retried after an ambiguous failure (the SDK's retries are off on this client
            // too): counted twice would bill twice.
            let sent = self
                .decision_client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(key_pk(key_id.as_str())))
                .key(SK, s(KEY_SK))
                .update_expression(update)
                .condition_expression(cond.join(" AND "))
                .set_expression_attribute_names(Some(e.names))
                .set_expression_attribute_values(Some(e.values))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                    let old = match se.err() {
                        UpdateItemError::ConditionalCheckFailedException(ccf) => ccf.item(),
                        _ => None,
                    };
                    // The key is gone: nothing to count on.
                    let Some(item) = old else { return Ok(()) };
                    let c = KeyState::try_from(item)?.counters;
                    give_back = give_back.and_then(|u| u.still_returnable(&c, now));
                    attempt += 1;
                }
                Err(err) => {
                    let err = sdk_err(err);
                    // Refused, so not applied (throttled, or the rollup's transaction settling
                    // the key held the item): sent again after a pause, as it was; the caller
                    // keeps it if every try is refused.
                    if refused < SETTLE_REFUSALS && err.fault().is_some_and(Fault::not_applied) {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20 * refused)).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    async fn record_denials(&self, key_id: &KeyId, day: Day, denial: Denial, n: u64) {
        self.count_denial(key_id, day, denial, n).await;
    }
}

/// Refusals (throttled, or a transaction holding the key item) a settlement is sent again after.
const SETTLE_REFUSALS: u64 = 4;

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
        let one = Take::one();
        let write = Write { hash, required: &[], now, day: now.day(), key_id, request_id: &request_id, take: &one };
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
            e.name(N_DENIED),
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
    /// How many requests it reserves, and what earlier blocks used and left ([`fit`] to what is
    /// known of the item).
    take: &'a Take,
}

/// The conditional write that counts one request (or, for a hot key, reserves a block). Without
/// `rollover` it is the steady-state form (every counter in its current window, below its
/// limit). With it, the counters the decision found ended restart at the block's size, guarded
/// by the exact end value that was observed, so concurrent rollovers cannot both succeed. The
/// route's scopes are part of the condition: a key without one fails it, and the item it
/// returns says why (no second read).
///
/// A block of `n` in a current window is conditioned on the limit and window it was sized for
/// (`limit = L AND end = E AND count <= L - n + r`, `r` the earlier block's unspent tokens it
/// gives back there): a changed plan or a window another container rolled fails it, and the
/// item returned sizes the next attempt.
fn count_update(rollover: Option<(&KeyState, bool, bool)>, w: &Write<'_>) -> CountPlan {
    let Write { hash, required, now, day, key_id, request_id, take } = *w;
    let mut e = Expr::default();
    let now_v = e.value(n(now.secs()));
    // Values are made where they are used (Expr shares equal ones): DynamoDB refuses an unused
    // value, and a block's write may not use `1`.
    let mut cond = admission_condition(&mut e, hash, required, &now_v);
    let (last_req, rid) = (e.name(LAST_REQ), e.value(s(request_id)));
    cond.push(format!("(attribute_not_exists({last_req}) OR {last_req} <> {rid})"));
    // Billing: this request, and what earlier blocks admitted that no write has counted.
    let mut per_day: Vec<(Day, u64)> = vec![(day, 1)];
    for (d, count) in billed_days(&take.used, now) {
        add_used(&mut per_day, d, count);
    }
    let mut adds = vec![format!("{} {}", e.name(N_ALLOWED), e.value(n(1 + take.used_total())))];
    for (d, count) in &per_day {
        let v = e.value(n(*count));
        adds.push(format!("{} {v}", e.name(&allowed_day_attr(&d.compact()))));
    }
    // `last_used`: on the key item only (no index projects it), so a decision writes no index.
    let mut sets = vec![
        format!("{last_req} = {rid}"),
        format!("{} = {now_v}", e.name(LAST_USED)),
        format!("{} = {}", e.name(ACTIVITY_PK), e.value(s(activity_shard(key_id.as_str())))),
    ];
    let tokens = take.tokens.max(1);
    for (counter, limit_attr, end_attr, count_attr) in COUNTERS {
        // Names are made where they are used (Expr shares equal ones): DynamoDB refuses an
        // unused one, and a block for a key without this limit needs no end.
        let count = e.name(count_attr);
        let window = counter == Counter::Window;
        let roll = rollover.is_some_and(|(_, w, p)| if window { w } else { p });
        match rollover {
            Some((state, _, _)) if roll => {
                let end = e.name(end_attr);
                let next = rolled(state, window, !window, now);
                let old_end = e.value(n(state.counters.end(counter).secs()));
                cond.push(format!("(attribute_not_exists({end}) OR {end} = {old_end})"));
                if tokens > 1 {
                    // A block restarts the counter at its size: only where all of it fits the
                    // limit as it is now (a plan change since the read shrinks the next try).
                    cond.push(format!("{} >= {}", e.name(limit_attr), e.value(n(tokens))));
                }
                sets.push(format!("{end} = {}", e.value(n(next.end(counter).secs()))));
                let v = e.value(n(tokens));
                sets.push(format!("{count} = {v}"));
            }
            _ if take.is_one() => {
                let (limit, end) = (e.name(limit_attr), e.name(end_attr));
                cond.push(format!("(attribute_not_exists({limit}) OR ({end} > {now_v} AND {count} < {limit}))"));
                adds.push(format!("{count} {}", e.value(n(1))));
            }
            _ => {
                let limit = e.name(limit_attr);
                match take.known(counter) {
                    Some(k) => {
                        let end = e.name(end_attr);
                        let back = take.given_back(counter, k.reset);
                        // fit() sized the block to fit: L - n + r >= count >= 0.
                        let max = (k.limit + back).saturating_sub(tokens);
                        cond.push(format!(
                            "({limit} = {} AND {end} = {} AND {end} > {now_v} AND {count} <= {})",
                            e.value(n(k.limit)),
                            e.value(n(k.reset.secs())),
                            e.value(n(max))
                        ));
                        adds.push(format!("{count} {}", e.value(n(tokens as i64 - back as i64))));
                    }
                    None => {
                        cond.push(format!("attribute_not_exists({limit})"));
                        adds.push(format!("{count} {}", e.value(n(tokens))));
                    }
                }
            }
        }
    }
    CountPlan {
        expr: e,
        update: format!("ADD {} SET {}", adds.join(", "), sets.join(", ")),
        condition: cond.join(" AND "),
    }
}

/// What admission asks of the key ([`ADMISSION`]), as condition terms on its item: the domain
/// decides the rule, this only says it in DynamoDB's words.
fn admission_condition(e: &mut Expr, hash: &KeyHash, required: &[String], now_v: &str) -> Vec<String> {
    let mut cond = vec![];
    for requirement in ADMISSION {
        match requirement {
            Requirement::Secret => {
                let h = e.value(s(hash.to_hex()));
                let (cur, prev, until) = (e.name(HASH), e.name(PREV_HASH), e.name(PREV_UNTIL));
                cond.push(format!("({cur} = {h} OR ({prev} = {h} AND {until} > {now_v}))"));
            }
            Requirement::Status => {
                cond.push(format!("{} = {}", e.name(STATUS), e.value(s(ADMITTED_KEY_STATUS.as_str()))));
            }
            Requirement::NotExpired => {
                let exp = e.name(EXPIRES_AT);
                cond.push(format!("(attribute_not_exists({exp}) OR {exp} > {now_v})"));
            }
            // No status (not billed through Stripe), an open one, or one in grace until its end.
            Requirement::Subscription => {
                let sub = e.name(SUB_STATUS);
                let mut any = vec![format!("attribute_not_exists({sub})")];
                any.extend(is_one_of(e, &sub, OPEN_SUBSCRIPTIONS));
                if let Some(in_grace) = is_one_of(e, &sub, GRACE_SUBSCRIPTIONS) {
                    any.push(format!("({in_grace} AND {} > {now_v})", e.name(SUB_GRACE_UNTIL)));
                }
                cond.push(format!("({})", any.join(" OR ")));
            }
            Requirement::Scopes => {
                if !required.is_empty() {
                    let scopes = e.name(SCOPES);
                    for scope in required {
                        cond.push(format!("contains({scopes}, {})", e.value(s(scope.clone()))));
                    }
                }
            }
        }
    }
    cond
}

/// `attr = v` or `attr IN (v, ...)` for `statuses`; `None` for none (DynamoDB has no empty IN).
fn is_one_of(e: &mut Expr, attr: &str, statuses: &[SubscriptionStatus]) -> Option<String> {
    let values: Vec<String> = statuses.iter().map(|status| e.value(s(status.as_str()))).collect();
    match values.as_slice() {
        [] => None,
        [one] => Some(format!("{attr} = {one}")),
        _ => Some(format!("{attr} IN ({})", values.join(", "))),
    }
}
