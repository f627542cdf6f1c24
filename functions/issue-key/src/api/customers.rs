//! `/v1/customers/{id}`: a customer's billing state and keys, and its metered usage per day.

use super::{Api, ManagementStore, Reply, ok, to_json};
use crate::error::ApiError;
use crate::extract::{Id, Now, Query, Reader};
use crate::json::HistoryQuery;
use crate::views::{CustomerView, denied_by_code};
use http::StatusCode;
use serde_json::json;
use shared::domain::customers::CustomerId;

pub(super) async fn get<S: ManagementStore>(api: Api<S>, _: Reader, Id(id): Id<CustomerId>) -> Reply {
    let customer = api.store.get_customer(&id).await?.ok_or(ApiError::NotFound("customer"))?;
    let keys = api.store.customer_key_ids(&id).await?;
    ok(StatusCode::OK, to_json(&CustomerView::new(&customer, &keys)))
}

/// The customer's meter ledgers per day, as of the last rollup run.
pub(super) async fn usage<S: ManagementStore>(
    api: Api<S>,
    _: Reader,
    Id(id): Id<CustomerId>,
    Now(now): Now,
    Query(query): Query<HistoryQuery>,
) -> Reply {
    if api.store.get_customer(&id).await?.is_none() {
        return Err(ApiError::NotFound("customer"));
    }
    let ledgers = api.store.customer_usage(&id, now.day().minus(query.days() - 1)).await?;
    let history: Vec<_> = ledgers
        .iter()
        .map(|(m, l)| {
            json!({
                "day": m.day.iso(), "meter": m.meter, "allowed": l.usage.allowed, "denied": l.usage.denied,
                "denied_by_code": denied_by_code(&l.usage),
                "reported": l.reported, "unbilled": l.unbilled, "pending": l.pending.as_ref().map_or(0, |p| p.value),
            })
        })
        .collect();
    ok(StatusCode::OK, json!({ "customer_id": id.as_str(), "history": history }))
}
