//! [`CustomerStore`]: customers, their Stripe link, and the fan-out to their keys.

use super::{DynamoStore, StoredCustomer};
use super::{billing, fanout};
use crate::domain::api_key::KeyId;
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{CustomerStore, FanOut, StoreResult};
use std::time::Instant;

impl CustomerStore for DynamoStore {
    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>> {
        Ok(self.get_customer_versioned(id).await?.map(|c| c.customer))
    }

    async fn customer_for_stripe(&self, stripe_customer_id: &str) -> StoreResult<Option<CustomerId>> {
        match self.get(stripe_customer_pk(stripe_customer_id), STRIPE_CUSTOMER_SK).await? {
            Some(item) => billing::linked_customer(&item),
            None => Ok(None),
        }
    }

    async fn refresh_customer_keys(&self, id: &CustomerId, now: UnixTime, deadline: Instant) -> StoreResult<FanOut> {
        let Some(StoredCustomer { ver, .. }) = self.get_customer_versioned(id).await? else {
            return Ok(FanOut { complete: true, ..Default::default() });
        };
        self.fan_out(fanout::Governed::Customer(id), ver, now, deadline).await
    }

    async fn customer_key_ids(&self, id: &CustomerId) -> StoreResult<Vec<KeyId>> {
        self.query_key_ids(GSI1, GSI1_PK, &customer_pk(id.as_str())).await
    }
}
