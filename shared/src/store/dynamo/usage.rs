//! [`UsageStore`]: a key's usage history (rolled-up days and live counters) and a customer's
//! meter ledgers.

use super::DynamoStore;
use super::items::{live_days, meter_ledger_from_item};
use crate::domain::api_key::KeyId;
use crate::domain::customers::CustomerId;
use crate::domain::decision::KeyState;
use crate::domain::stats::Stats;
use crate::domain::time::Day;
use crate::domain::usage::{MeterDay, MeterLedger, UsageDay};
use crate::store::schema::*;
use crate::store::{StoreResult, UsageStore};

impl UsageStore for DynamoStore {
    async fn usage_history(&self, key_id: &KeyId, from: Day) -> StoreResult<Vec<UsageDay>> {
        let mut days = self.usage_days(key_id, from, None).await?;
        // Live counters on the key item are exact and newer than any rolled-up copy.
        if let Some(item) = self.get_key_item(key_id).await? {
            for (day, live) in live_days(&item)?.range(from..) {
                let entry = days.entry(*day).or_default();
                entry.allowed = entry.allowed.max(live.allowed);
                entry.denied = entry.denied.max(live.denied);
                for (mine, live) in entry.denied_by.iter_mut().zip(live.denied_by) {
                    *mine = (*mine).max(live);
                }
            }
        }
        Ok(days.into_iter().map(|(day, count)| UsageDay { day, count }).collect())
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
        self.get_key_item(key_id).await?.map(|i| KeyState::try_from(&i)).transpose()
    }

    async fn stats(&self, from: Day, to: Day) -> StoreResult<Stats> {
        self.read_stats(from, to).await
    }
}
