//! Copying a plan's or a customer's change onto the keys it governs, resumably.
//!
//! Keys are visited in key-id order through the index that groups them (gsi2 for a plan's
//! keys, gsi1 for a customer's), a page at a time with a few refreshes in flight. After every
//! page the position reached is saved in a progress item (`FANOUT#<kind>#<id>`) together with
//! the version of the plan or customer being copied. A later attempt at the same version (a
//! redelivered Stripe event, a retried plan update) starts after that position; a finished
//! fan-out is not walked again. A new version starts from the first key.

use super::DynamoStore;
use super::errors::sdk_err;
use super::expr::Expr;
use super::items::{n, req_s, s, s_opt, u64_opt};
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::plans::PlanId;
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{FanOut, StoreError, StoreResult};
use futures_util::stream::{self, StreamExt};
use std::time::Instant;

/// Keys read per index page, and refreshed concurrently within a page.
const PAGE: i32 = 50;
const IN_FLIGHT: usize = 8;
/// Progress items outlive any redelivery (Stripe retries for three days).
const PROGRESS_TTL_S: i64 = 30 * 86_400;
/// `after` of a finished fan-out.
const DONE: &str = "~done";

/// Whose keys a fan-out visits.
#[derive(Debug, Clone, Copy)]
pub(super) enum Governed<'a> {
    Plan(&'a PlanId),
    Customer(&'a CustomerId),
}

impl Governed<'_> {
    fn progress_pk(&self) -> String {
        match self {
            Self::Plan(p) => fan_out_pk("plan", p.as_str()),
            Self::Customer(c) => fan_out_pk("customer", c.as_str()),
        }
    }

    /// Index, its partition attribute and value, its sort attribute (the key id).
    fn index(&self) -> (&'static str, &'static str, String, &'static str) {
        match self {
            Self::Plan(p) => (GSI2, GSI2_PK, plan_pk(p.as_str()), GSI2_SK),
            Self::Customer(c) => (GSI1, GSI1_PK, customer_pk(c.as_str()), GSI1_SK),
        }
    }
}

impl DynamoStore {
    /// Refreshes every key `whom` governs, copying version `version` of it, until `deadline`
    /// (at least one page per call, so every call makes progress).
    pub(super) async fn fan_out(
        &self,
        whom: Governed<'_>,
        version: u64,
        now: UnixTime,
        deadline: Instant,
    ) -> StoreResult<FanOut> {
        let pk = whom.progress_pk();
        let mut after = match self.get(pk.clone(), FAN_OUT_SK).await? {
            Some(p) if u64_opt(&p, FAN_OUT_VERSION)? == Some(version) => s_opt(&p, FAN_OUT_AFTER).map(str::to_owned),
            _ => None,
        };
        let mut out = FanOut::default();
        if after.as_deref() == Some(DONE) {
            out.complete = true;
            return Ok(out);
        }
        loop {
            let (ids, more) = self.governed_page(&whom, after.as_deref()).await?;
            let results: Vec<(KeyId, StoreResult<bool>)> = stream::iter(ids)
                .map(|id| async move {
                    let r = self.refresh_key(&id, now).await;
                    (id, r)
                })
                .buffered(IN_FLIGHT)
                .collect()
                .await;
            let mut failed = None;
            for (id, result) in results {
                match result {
                    Ok(rewritten) => {
                        out.visited += 1;
                        out.rewritten += usize::from(rewritten);
                        after = Some(id.as_str().to_owned());
                    }
                    // A key deleted meanwhile needs nothing.
                    Err(StoreError::NotFound(_)) => after = Some(id.as_str().to_owned()),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let finished = failed.is_none() && !more;
            if finished {
                after = Some(DONE.to_owned());
            }
            if let Some(a) = &after {
                self.save_progress(&pk, version, a).await?;
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if finished {
                out.complete = true;
                return Ok(out);
            }
            if Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    /// Up to a page of key ids after `after`, in order, and whether there may be more.
    async fn governed_page(&self, whom: &Governed<'_>, after: Option<&str>) -> StoreResult<(Vec<KeyId>, bool)> {
        let (index, pk_attr, pk_value, sk_attr) = whom.index();
        let mut e = Expr::default();
        let mut cond = format!("{} = {}", e.name(pk_attr), e.value(s(pk_value)));
        if let Some(a) = after {
            cond.push_str(&format!(" AND {} > {}", e.name(sk_attr), e.value(s(a))));
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .limit(PAGE)
            .send()
            .await
            .map_err(sdk_err)?;
        let ids = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let pk = req_s(item, PK)?;
                KeyId::parse(pk.strip_prefix(KEY_PK_PREFIX).unwrap_or(pk))
                    .map_err(|_| StoreError::Corrupt("index entry".into()))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((ids, out.last_evaluated_key.is_some()))
    }

    /// Deletes `whom`'s progress item, so its next fan-out starts from the first key.
    pub(super) async fn forget_fan_out(&self, whom: Governed<'_>) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(whom.progress_pk()))
            .key(SK, s(FAN_OUT_SK))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn save_progress(&self, pk: &str, version: u64, after: &str) -> StoreResult<()> {
        // Wall time, not the caller's: TTL is the table's clock.
        let ttl = UnixTime::now().plus(PROGRESS_TTL_S).secs();
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(pk))
            .item(SK, s(FAN_OUT_SK))
            .item(ITEM_TYPE, s(ITEM_FAN_OUT))
            .item(FAN_OUT_VERSION, n(version))
            .item(FAN_OUT_AFTER, s(after))
            .item(TTL, n(ttl))
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }
}
