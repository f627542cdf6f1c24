//! Tollgate-wide statistics for the console's overview: requests per day (allowed, and denied
//! by code), each day's top keys and customers by allowed requests, and the keys near their
//! quota. The usage rollup keeps them (docs/data-model.md, "Statistics"); `GET /v1/stats`
//! reads them.

use super::api_key::KeyId;
use super::customers::CustomerId;
use super::plans::Period;
use super::time::{Day, UnixTime};
use super::usage::DayCount;
use std::collections::BTreeMap;

/// How many keys and customers a day's top lists hold.
pub const TOP_N: usize = 10;
/// A key is near its quota from this share of it (percent) until its period resets.
pub const NEAR_QUOTA_PERCENT: u64 = 80;
/// The most keys the near-quota list holds (the closest to their limit first).
pub const NEAR_QUOTA_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopKey {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    pub allowed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopCustomer {
    pub customer_id: CustomerId,
    pub allowed: u64,
}

/// One UTC day across every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDay {
    pub count: DayCount,
    pub top_keys: Vec<TopKey>,
    pub top_customers: Vec<TopCustomer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearQuota {
    pub key_id: KeyId,
    pub customer_id: CustomerId,
    pub used: u64,
    pub limit: u64,
    pub period: Period,
    pub reset: UnixTime,
}

impl NearQuota {
    /// Whether `used` of `limit` counts as near, for a period that ends at `reset`.
    pub fn is_near(used: u64, limit: u64, reset: UnixTime, now: UnixTime) -> bool {
        limit > 0 && reset > now && u128::from(used) * 100 >= u128::from(limit) * u128::from(NEAR_QUOTA_PERCENT)
    }

    /// Used per limit, in millionths, for ordering.
    fn share(&self) -> u128 {
        u128::from(self.used) * 1_000_000 / u128::from(self.limit.max(1))
    }
}

/// What storage holds: the days asked for (days with no traffic absent) and the near list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub days: BTreeMap<Day, StatsDay>,
    pub near_quota: Vec<NearQuota>,
}

/// `list` with `totals` (each a day's exact total for its key) taken in: a key's entry is
/// replaced by its total, the largest [`TOP_N`] stay, ties by key id. Exact as long as every
/// key whose total grew is among `totals` (the rollup passes each key it rolled).
pub fn merge_top_keys(list: &[TopKey], totals: impl IntoIterator<Item = TopKey>) -> Vec<TopKey> {
    let mut by_key: BTreeMap<KeyId, TopKey> = list.iter().map(|k| (k.key_id.clone(), k.clone())).collect();
    for t in totals {
        by_key.insert(t.key_id.clone(), t);
    }
    let mut out: Vec<TopKey> = by_key.into_values().filter(|k| k.allowed > 0).collect();
    out.sort_by(|a, b| b.allowed.cmp(&a.allowed).then_with(|| a.key_id.cmp(&b.key_id)));
    out.truncate(TOP_N);
    out
}

/// As [`merge_top_keys`], for customers' day totals.
pub fn merge_top_customers(list: &[TopCustomer], totals: impl IntoIterator<Item = TopCustomer>) -> Vec<TopCustomer> {
    let mut by_customer: BTreeMap<CustomerId, u64> = list.iter().map(|c| (c.customer_id.clone(), c.allowed)).collect();
    for t in totals {
        by_customer.insert(t.customer_id, t.allowed);
    }
    let mut out: Vec<TopCustomer> = by_customer
        .into_iter()
        .filter(|(_, allowed)| *allowed > 0)
        .map(|(customer_id, allowed)| TopCustomer { customer_id, allowed })
        .collect();
    out.sort_by(|a, b| b.allowed.cmp(&a.allowed).then_with(|| a.customer_id.cmp(&b.customer_id)));
    out.truncate(TOP_N);
    out
}

/// The near-quota list after the rollup looked at `seen` keys (`Some`: near now, `None`: not
/// near, or no quota): their entries replaced or dropped, entries whose period has reset
/// dropped, the closest to their limit first, at most [`NEAR_QUOTA_MAX`].
pub fn update_near_quota(
    list: &[NearQuota],
    seen: impl IntoIterator<Item = (KeyId, Option<NearQuota>)>,
    now: UnixTime,
) -> Vec<NearQuota> {
    let mut by_key: BTreeMap<KeyId, NearQuota> = list.iter().map(|n| (n.key_id.clone(), n.clone())).collect();
    for (key_id, near) in seen {
        match near {
            Some(n) => by_key.insert(key_id, n),
            None => by_key.remove(&key_id),
        };
    }
    let mut out: Vec<NearQuota> = by_key.into_values().filter(|n| n.reset > now).collect();
    out.sort_by(|a, b| b.share().cmp(&a.share()).then_with(|| a.key_id.cmp(&b.key_id)));
    out.truncate(NEAR_QUOTA_MAX);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32, allowed: u64) -> TopKey {
        TopKey {
            key_id: KeyId::parse(&format!("key_01JD{n:022}")).unwrap(),
            customer_id: CustomerId::parse("acme").unwrap(),
            allowed,
        }
    }

    #[test]
    fn top_keys_take_exact_totals_and_keep_the_largest() {
        let list: Vec<_> = (0..TOP_N as u32).map(|i| key(i, 100 + u64::from(i))).collect();
        // A listed key's total replaces its entry (never added twice); a newcomer above the
        // smallest evicts it; one below does not enter.
        let merged = merge_top_keys(&list, [key(0, 500), key(50, 101), key(51, 150)]);
        assert_eq!(merged.len(), TOP_N);
        assert_eq!(merged[0], key(0, 500));
        assert_eq!(merged[1], key(51, 150));
        assert!(!merged.iter().any(|k| k.key_id == key(50, 0).key_id), "101 is not above the 10th");
        assert!(!merged.iter().any(|k| k.key_id == key(1, 0).key_id), "the smallest (101) was evicted");
        // Ties: by key id, so the order is stable.
        let tied = merge_top_keys(&[], [key(3, 7), key(2, 7)]);
        assert_eq!(tied, vec![key(2, 7), key(3, 7)]);
        assert!(merge_top_keys(&[], [key(1, 0)]).is_empty(), "no traffic, no entry");
    }

    #[test]
    fn top_customers_merge_like_keys() {
        let c = |id: &str, allowed| TopCustomer { customer_id: CustomerId::parse(id).unwrap(), allowed };
        let merged = merge_top_customers(&[c("a", 5), c("b", 9)], [c("a", 12), c("c", 1)]);
        assert_eq!(merged, vec![c("a", 12), c("b", 9), c("c", 1)]);
    }

    #[test]
    fn near_quota_is_replaced_dropped_and_expires() {
        let now = UnixTime(1_800_000_000);
        let near = |n: u32, used, reset| NearQuota {
            key_id: key(n, 0).key_id,
            customer_id: CustomerId::parse("acme").unwrap(),
            used,
            limit: 100,
            period: Period::Day,
            reset,
        };
        assert!(NearQuota::is_near(80, 100, now.plus(1), now));
        assert!(!NearQuota::is_near(79, 100, now.plus(1), now));
        assert!(!NearQuota::is_near(100, 100, now, now), "the period has reset");
        assert!(!NearQuota::is_near(0, 0, now.plus(1), now));
        let list = vec![near(1, 80, now.plus(10)), near(2, 90, now.plus(10)), near(3, 99, now)];
        let out = update_near_quota(
            &list,
            [(key(1, 0).key_id, Some(near(1, 95, now.plus(10)))), (key(2, 0).key_id, None)],
            now,
        );
        // Key 2 no longer near (its quota was raised, say), key 3's period reset.
        assert_eq!(out, vec![near(1, 95, now.plus(10))]);
        let many: Vec<_> =
            (0..150).map(|i| (key(i, 0).key_id, Some(near(i, 80 + u64::from(i % 20), now.plus(5))))).collect();
        let out = update_near_quota(&[], many, now);
        assert_eq!(out.len(), NEAR_QUOTA_MAX);
        assert_eq!(out[0].used, 99, "closest to the limit first");
    }
}
