//! [`RollupStore`] over the table: the usage rollup's reads and conditional writes
//! (docs/data-model.md, "The usage rollup"). Every write is conditioned on what was read, so
//! a stale or concurrent run writes nothing instead of counting twice.

use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{
    live_days, meter_ledger_from_item, n, plan_id_opt, req_s, s, s_opt, time_opt, u64_opt, usage_day_from_item,
};
use super::tx::TxError;
use super::{DynamoStore, Item};
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::decision::{Denial, KeyState};
use crate::domain::stats::{NearQuota, TopCustomer, TopKey};
use crate::domain::time::{Day, UnixTime};
use crate::domain::usage::{DayCount, HISTORY_DAYS, MeterDay, MeterLedger, PendingReport};
use crate::store::schema::*;
use crate::store::{KeyEdit, KeyRoll, KeyUsage, QuotaUse, ROLL_ITEMS_AT_ONCE, Rolled, RollupStore, Written};
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use std::collections::{BTreeMap, HashMap};

impl RollupStore for DynamoStore {
    async fn active_keys(&self) -> StoreResult<Vec<KeyId>> {
        let mut ids = vec![];
        for shard in 0..ACTIVITY_SHARDS {
            let marker = format!("{KEY_ACTIVITY_PREFIX}{shard}");
            ids.extend(self.query_key_ids(GSI_ACTIVITY, ACTIVITY_PK, &marker).await?);
        }
        Ok(ids)
    }

    async fn key_usage(&self, key_id: &KeyId) -> StoreResult<Option<KeyUsage>> {
        // "DAY#…" sorts before "KEY": one Query, newest first, reads the key item and its most
        // recent usage-day items. A key settled on a day keeps that day's live counters (the
        // day was not over) however long it then rests, and they are rolled against the
        // day's item when it is used again: usually among the most recent, whatever its age.
        let pk = key_pk(key_id.as_str());
        let newest_first = self.range(&pk, &usage_day_sk(""), KEY_SK).scan_index_forward(false);
        let out = newest_first.limit(RECENT_USAGE_DAYS + 1).send().await.map_err(sdk_err)?;
        let every_day_read = out.last_evaluated_key.is_none();
        let items = out.items.unwrap_or_default();
        let Some(key_item) = items.iter().find(|i| s_opt(i, SK) == Some(KEY_SK)) else { return Ok(None) };
        let live = live_days(key_item)?;
        let mut rolled: BTreeMap<Day, DayCount> = items
            .iter()
            .filter(|i| s_opt(i, SK).is_some_and(|sk| sk.starts_with(DAY_SK_PREFIX)))
            .map(usage_day_from_item)
            .collect::<StoreResult<_>>()?;
        // A live day older than the usage days read (the rollup did not run for weeks): one
        // more Query, for the days between.
        if !every_day_read
            && let (Some(&oldest_live), Some(&oldest_read)) = (live.keys().next(), rolled.keys().next())
            && oldest_live < oldest_read
        {
            rolled.extend(self.usage_days(key_id, oldest_live, Some(oldest_read)).await?);
        }
        let state = KeyState::try_from(key_item)?;
        let quota = state.quota.map(|q| QuotaUse {
            used: state.counters.period_count,
            limit: q.limit,
            period: q.period,
            reset: state.counters.period_end,
        });
        Ok(Some(KeyUsage {
            key_id: key_id.clone(),
            customer_id: CustomerId::parse(req_s(key_item, CUSTOMER_ID)?)
                .map_err(|_| StoreError::Corrupt("key customer_id".into()))?,
            plan: plan_id_opt(key_item, GOVERNING_PLAN)?,
            n_allowed: u64_opt(key_item, N_ALLOWED)?,
            n_denied: u64_opt(key_item, N_DENIED)?,
            last_used: time_opt(key_item, LAST_USED)?,
            live,
            rolled,
            quota,
        }))
    }

    async fn roll_keys(&self, rolls: &[KeyRoll<'_>], now: UnixTime) -> StoreResult<Rolled> {
        let Some(first) = rolls.first() else { return Ok(Rolled::Applied) };
        let customer = &first.key.customer_id;
        if rolls.iter().any(|r| &r.key.customer_id != customer) {
            return Err(StoreError::Backend("a rollup write holds the keys of one customer".into()));
        }
        for r in rolls {
            r.check()?;
        }
        let mut ids: Vec<&KeyId> = rolls.iter().map(|r| &r.key.key_id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(StoreError::Backend("a rollup write holds each key once".into()));
        }
        // One key with nothing to roll: its item's edit alone, a plain conditional UpdateItem
        // (never a transaction, which would hold a busy key's item).
        if let [one] = rolls
            && one.days.iter().all(|d| one.delta(*d).is_none())
        {
            let Some((update, cond, e)) = key_edit(one.key, one.edit) else { return Ok(Rolled::Applied) };
            let pk = key_pk(one.key.key_id.as_str());
            let applied = self.conditional_update(&pk, KEY_SK, update, cond, e).await?;
            return Ok(if applied { Rolled::Applied } else { Rolled::Stale(vec![0]) });
        }
        // Each transaction item's roll (None: a ledger, which has no condition).
        let mut owner: Vec<Option<usize>> = vec![];
        let mut items = vec![];
        let mut ledgers: BTreeMap<(Day, Option<&str>), DayCount> = BTreeMap::new();
        for (i, r) in rolls.iter().enumerate() {
            for &day in r.days {
                let Some(delta) = r.delta(day) else { continue };
                items.push(self.usage_day_put(r.key, day)?);
                owner.push(Some(i));
                ledgers.entry((day, r.meter)).or_default().add(delta);
            }
            if let Some((update, cond, e)) = key_edit(r.key, r.edit) {
                items.push(self.tx_update(key_pk(r.key.key_id.as_str()), KEY_SK, update, cond, e)?);
                owner.push(Some(i));
            }
        }
        for ((day, meter), delta) in &ledgers {
            items.push(self.ledger_update(customer, *day, *meter, delta, now)?);
            owner.push(None);
        }
        if items.len() > ROLL_ITEMS_AT_ONCE {
            return Err(StoreError::Backend(format!("a rollup write takes at most {ROLL_ITEMS_AT_ONCE} items").into()));
        }
        if items.is_empty() {
            return Ok(Rolled::Applied);
        }
        match self.transact(items).await {
            Ok(()) => Ok(Rolled::Applied),
            Err(TxError::ConditionFailed(failed)) => {
                let mut stale: Vec<usize> =
                    failed.iter().zip(&owner).filter(|(f, _)| **f).filter_map(|(_, o)| *o).collect();
                stale.dedup();
                Ok(Rolled::Stale(stale))
            }
            Err(TxError::Store(e)) => Err(e),
        }
    }

    async fn owed_meters(&self) -> StoreResult<Vec<MeterDay>> {
        let mut out = vec![];
        for shard in 0..ACTIVITY_SHARDS {
            let marker = format!("{OWED_ACTIVITY_PREFIX}{shard}");
            for entry in self.query_all(GSI_ACTIVITY, ACTIVITY_PK, &marker).await? {
                let customer = req_s(&entry, PK)?
                    .strip_prefix(CUSTOMER_PK_PREFIX)
                    .and_then(|c| CustomerId::parse(c).ok())
                    .ok_or_else(|| StoreError::Corrupt("owed marker".into()))?;
                let (meter_day, _) = meter_ledger_from_item(&customer, &entry)?;
                out.push(meter_day);
            }
        }
        Ok(out)
    }

    async fn meter_ledger(&self, meter: &MeterDay) -> StoreResult<Option<MeterLedger>> {
        let item = self
            .get(customer_pk(meter.customer_id.as_str()), &meter_day_sk(&meter.day.compact(), meter.meter.as_deref()))
            .await?;
        item.map(|i| meter_ledger_from_item(&meter.customer_id, &i).map(|(_, l)| l)).transpose()
    }

    async fn begin_report(
        &self,
        meter: &MeterDay,
        read: &MeterLedger,
        pending: &PendingReport,
    ) -> StoreResult<Written> {
        let mut e = Expr::default();
        let values = [
            n(pending.value),
            n(pending.to),
            s(&pending.identifier),
            n(pending.timestamp),
            s(&pending.stripe_customer_id),
        ];
        let set: Vec<String> =
            PENDING_ATTRS.iter().zip(values).map(|(a, v)| format!("{} = {}", e.name(a), e.value(v))).collect();
        let update = format!("SET {}", set.join(", "));
        let cond = format!("attribute_exists({}) AND {}", e.name(PK), settled_as_read(&mut e, read));
        let (pk, sk) = ledger_key(meter);
        Ok(written(self.conditional_update(&pk, &sk, update, cond, e).await?))
    }

    async fn commit_report(&self, meter: &MeterDay, pending: &PendingReport) -> StoreResult<Written> {
        self.settle_pending(meter, pending, REPORTED).await
    }

    async fn abandon_report(&self, meter: &MeterDay, pending: &PendingReport) -> StoreResult<Written> {
        self.settle_pending(meter, pending, UNBILLED).await
    }

    async fn write_off(&self, meter: &MeterDay, read: &MeterLedger) -> StoreResult<Written> {
        let mut e = Expr::default();
        let unsettled = read.unsettled();
        let mut update = format!("REMOVE {}", e.name(ACTIVITY_PK));
        if unsettled > 0 {
            update = format!("ADD {} {} {update}", e.name(UNBILLED), e.value(n(unsettled)));
        }
        let cond =
            format!("{} = {} AND {}", e.name(ALLOWED), e.value(n(read.usage.allowed)), settled_as_read(&mut e, read));
        let (pk, sk) = ledger_key(meter);
        Ok(written(self.conditional_update(&pk, &sk, update, cond, e).await?))
    }

    async fn add_day_stats(
        &self,
        day: Day,
        delta: DayCount,
        top_keys: &[TopKey],
        top_customers: &[TopCustomer],
    ) -> StoreResult<()> {
        self.write_day_stats(day, delta, top_keys, top_customers).await
    }

    async fn put_near_quota(&self, near: &[NearQuota]) -> StoreResult<()> {
        self.write_near_quota(near).await
    }
}

impl DynamoStore {
    /// A key-day's usage-day item with the day's live totals, written if it still holds what
    /// was read: it is the key-day's watermark, so a difference is never added twice.
    fn usage_day_put(&self, key: &KeyUsage, day: Day) -> StoreResult<TransactWriteItem> {
        let live = key.live.get(&day).copied().unwrap_or_default();
        let mut e = Expr::default();
        let cond = match key.rolled.get(&day) {
            None => format!("attribute_not_exists({})", e.name(PK)),
            Some(r) => format!(
                "{} = {} AND {} = {}",
                e.name(ALLOWED),
                e.value(n(r.allowed)),
                e.name(DENIED),
                e.value(n(r.denied))
            ),
        };
        let mut item: Item = HashMap::from([
            (PK.to_owned(), s(key_pk(key.key_id.as_str()))),
            (SK.to_owned(), s(usage_day_sk(&day.compact()))),
            (DAY.to_owned(), s(day.iso())),
            (ALLOWED.to_owned(), n(live.allowed)),
            (DENIED.to_owned(), n(live.denied)),
            (TTL.to_owned(), history_expiry(day)),
        ]);
        for (code, count) in live.denials_by_code() {
            item.insert(denied_code_attr(code), n(count));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The customer's ledger for the day and meter, by the differences of the keys rolled;
    /// billable allowed requests mark it as owing a report.
    fn ledger_update(
        &self,
        customer: &CustomerId,
        day: Day,
        meter: Option<&str>,
        delta: &DayCount,
        now: UnixTime,
    ) -> StoreResult<TransactWriteItem> {
        let mut e = Expr::default();
        let mut set = vec![
            format!("{} = {}", e.name(DAY), e.value(s(day.iso()))),
            format!("{} = {}", e.name(TTL), e.value(history_expiry(day))),
            format!("{} = {}", e.name(UPDATED_AT), e.value(n(now.secs()))),
        ];
        if let Some(meter) = meter {
            set.push(format!("{} = {}", e.name(METER), e.value(s(meter))));
            if delta.allowed > 0 {
                set.push(format!("{} = {}", e.name(ACTIVITY_PK), e.value(s(owed_shard(customer.as_str())))));
            }
        }
        let update = format!("ADD {} SET {}", add_counts(&mut e, delta), set.join(", "));
        let ledger = Update::builder()
            .table_name(&self.table)
            .key(PK, s(customer_pk(customer.as_str())))
            .key(SK, s(meter_day_sk(&day.compact(), meter)))
            .update_expression(update)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(TransactWriteItem::builder().update(ledger).build())
    }

    /// Adds a pending report's value to `into` (`reported` or `unbilled`) and clears it, if it
    /// is still the ledger's; also clears the owed marker when that settles the ledger.
    async fn settle_pending(&self, meter: &MeterDay, pending: &PendingReport, into: &str) -> StoreResult<Written> {
        let (pk, sk) = ledger_key(meter);
        for settles_all in [true, false] {
            let mut e = Expr::default();
            let mut remove = PENDING_ATTRS.map(|a| e.name(a)).to_vec();
            let mut cond = format!("{} = {}", e.name(PEND_ID), e.value(s(&pending.identifier)));
            if settles_all {
                // Nothing arrived since the report was decided: the ledger no longer owes.
                remove.push(e.name(ACTIVITY_PK));
                cond = format!("{cond} AND {} = {}", e.name(ALLOWED), e.value(n(pending.to)));
            }
            let update = format!("ADD {} {} REMOVE {}", e.name(into), e.value(n(pending.value)), remove.join(", "));
            if self.conditional_update(&pk, &sk, update, cond, e).await? {
                return Ok(Written::Applied);
            }
        }
        Ok(Written::Stale)
    }
}

/// Usage-day items the rollup's read of a key takes, newest first, beside the key item: a key's
/// live days are almost always among them (about 2 KB, one read unit).
const RECENT_USAGE_DAYS: i32 = 15;

/// The key item's part of a roll (update, condition, names and values), or None for
/// [`KeyEdit::Keep`].
fn key_edit(key: &KeyUsage, edit: KeyEdit<'_>) -> Option<(String, String, Expr)> {
    let mut e = Expr::default();
    let (finished, mut remove, cond) = match edit {
        KeyEdit::Keep => return None,
        // Marker and finished days together, if nothing was counted since the read.
        KeyEdit::Settle(finished) => {
            let cond = format!(
                "attribute_exists({}) AND {} AND {}",
                e.name(PK),
                equals_or_absent(&mut e, N_ALLOWED, key.n_allowed),
                equals_or_absent(&mut e, N_DENIED, key.n_denied)
            );
            (finished, vec![e.name(ACTIVITY_PK)], cond)
        }
        // Each day's `ua_`/`ud_` as read (a day's `dc_` counters move only with its `ud_`, so
        // they need no guard).
        KeyEdit::RemoveDays(finished) => {
            let mut cond = vec![format!("attribute_exists({})", e.name(PK))];
            for day in finished {
                let live = key.live.get(day).copied().unwrap_or_default();
                let guarded =
                    [(allowed_day_attr(&day.compact()), live.allowed), (denied_day_attr(&day.compact()), live.denied)];
                for (attr, v) in guarded {
                    cond.push(equals_or_absent(&mut e, &attr, (v > 0).then_some(v)));
                }
            }
            (finished, vec![], cond.join(" AND "))
        }
    };
    for day in finished {
        for attr in live_day_attrs(*day) {
            remove.push(e.name(&attr));
        }
    }
    if remove.is_empty() {
        return None;
    }
    Some((format!("REMOVE {}", remove.join(", ")), cond, e))
}

/// When a day's usage-day item and ledger expire: the history's length after the day.
fn history_expiry(day: Day) -> aws_sdk_dynamodb::types::AttributeValue {
    n(day.next().start().plus((HISTORY_DAYS + 1) * 86_400).secs())
}

fn written(applied: bool) -> Written {
    if applied { Written::Applied } else { Written::Stale }
}

fn ledger_key(meter: &MeterDay) -> (String, String) {
    (customer_pk(meter.customer_id.as_str()), meter_day_sk(&meter.day.compact(), meter.meter.as_deref()))
}

/// `allowed :a, denied :d, dc_<code> :n, ...`: the ADD clause of `delta` (a ledger's or a
/// statistics day's).
pub(super) fn add_counts(e: &mut Expr, delta: &DayCount) -> String {
    let mut add = vec![
        format!("{} {}", e.name(ALLOWED), e.value(n(delta.allowed))),
        format!("{} {}", e.name(DENIED), e.value(n(delta.denied))),
    ];
    for (code, count) in delta.denials_by_code() {
        add.push(format!("{} {}", e.name(&denied_code_attr(code)), e.value(n(count))));
    }
    add.join(", ")
}

/// A finished day's live counters on a key item, in [`DayCount`] order: allowed, denied, then
/// denials by code.
fn live_day_attrs(day: Day) -> Vec<String> {
    let compact = day.compact();
    [allowed_day_attr(&compact), denied_day_attr(&compact)]
        .into_iter()
        .chain(Denial::RECORDED.iter().map(|d| denied_code_day_attr(&compact, d.code())))
        .collect()
}

/// `attr = v`, or for `None` (a count never written) `attribute_not_exists(attr)`.
fn equals_or_absent(e: &mut Expr, attr: &str, v: Option<u64>) -> String {
    match v {
        Some(v) => format!("{} = {}", e.name(attr), e.value(n(v))),
        None => format!("attribute_not_exists({})", e.name(attr)),
    }
}

/// The ledger's settled part and pending slot are as `read` saw them.
fn settled_as_read(e: &mut Expr, read: &MeterLedger) -> String {
    let zero_or = |e: &mut Expr, attr: &str, v: u64| {
        if v == 0 {
            format!("(attribute_not_exists({0}) OR {0} = {1})", e.name(attr), e.value(n(0)))
        } else {
            format!("{} = {}", e.name(attr), e.value(n(v)))
        }
    };
    format!(
        "{} AND {} AND attribute_not_exists({})",
        zero_or(e, REPORTED, read.reported),
        zero_or(e, UNBILLED, read.unbilled),
        e.name(PEND_ID)
    )
}
