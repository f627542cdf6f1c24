//! `GET /v1/stats`: the overview. Requests per day across every key (allowed, and denied by
//! code), the latest day's top keys and customers, and the keys near their quota, as of the
//! last rollup run: one Query however many keys there are.

use super::{Api, ManagementStore, Reply, ok};
use crate::extract::{Now, Query, Reader};
use crate::json::HistoryQuery;
use crate::views::denied_by_code;
use http::StatusCode;
use serde_json::json;
use shared::domain::stats::StatsDay;

pub(super) async fn get<S: ManagementStore>(
    api: Api<S>,
    _: Reader,
    Now(now): Now,
    Query(query): Query<HistoryQuery>,
) -> Reply {
    let (from, to) = (now.day().minus(query.days() - 1), now.day());
    let stats = api.store.stats(from, to).await?;
    // Every day of the range, those without traffic as zeros, so a chart needs no gaps filled.
    let mut days = Vec::with_capacity(query.days() as usize);
    let mut day = from;
    while day <= to {
        let count = stats.days.get(&day).map(|d| d.count).unwrap_or_default();
        days.push(json!({
            "day": day.iso(), "allowed": count.allowed, "denied": count.denied,
            "denied_by_code": denied_by_code(&count),
        }));
        day = day.next();
    }
    // The top lists of the latest day that has them (early in a UTC day, yesterday's).
    let latest = stats.days.iter().rev().find(|(_, s)| !s.top_keys.is_empty() || !s.top_customers.is_empty());
    let (top_day, top) = latest.map_or((to, None), |(d, s)| (*d, Some(s)));
    let empty = StatsDay::default();
    let top = top.unwrap_or(&empty);
    let top_keys: Vec<_> = top
        .top_keys
        .iter()
        .map(|k| json!({ "key_id": k.key_id.as_str(), "customer_id": k.customer_id.as_str(), "allowed": k.allowed }))
        .collect();
    let top_customers: Vec<_> = top
        .top_customers
        .iter()
        .map(|c| json!({ "customer_id": c.customer_id.as_str(), "allowed": c.allowed }))
        .collect();
    let near_quota: Vec<_> = stats
        .near_quota
        .iter()
        .filter(|n| n.reset > now)
        .map(|n| {
            json!({
                "key_id": n.key_id.as_str(), "customer_id": n.customer_id.as_str(), "used": n.used,
                "limit": n.limit, "period": n.period.as_str(), "reset": n.reset.to_rfc3339(),
            })
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({
            "from": from.iso(), "to": to.iso(), "day": top_day.iso(), "days": days,
            "top_keys": top_keys, "top_customers": top_customers, "near_quota": near_quota,
        }),
    )
}
