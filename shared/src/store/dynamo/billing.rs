//! [`BillingStore`] over the table. A Stripe customer's partition (`STRIPECUS#<id>`) holds
//! its account item (the link to a customer and a version that every subscription write
//! moves) and one item per subscription (`SUB#<id>`, the observations as JSON), so one
//! strongly consistent Query reads everything a customer's billing is derived from.

use super::expr::Expr;
use super::items::{customer_billing, n, req_s, s, s_opt, u64_or};
use super::tx::TxError;
use super::{DynamoStore, Item};
use crate::domain::billing::Subscription;
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{BillingStore, StoreError, StoreResult, StripeAccount, Written};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

impl BillingStore for DynamoStore {
    async fn stripe_account(&self, stripe_customer: &str) -> StoreResult<StripeAccount> {
        let pk = stripe_customer_pk(stripe_customer);
        let mut account = StripeAccount::default();
        for item in self.query_range(&pk, STRIPE_CUSTOMER_SK, SUBSCRIPTION_SK_END).await? {
            match s_opt(&item, SK) {
                Some(STRIPE_CUSTOMER_SK) => {
                    account.linked = linked_customer(&item)?;
                    account.version = u64_or(&item, ACCOUNT_VER, 0)?;
                }
                Some(sk) if sk.starts_with(SUBSCRIPTION_SK_PREFIX) => {
                    let sub: Subscription = serde_json::from_str(req_s(&item, SUBSCRIPTION_STATE)?)
                        .map_err(|e| StoreError::Corrupt(format!("subscription item: {e}")))?;
                    account.subscriptions.push((sub, u64_or(&item, VER, 0)?));
                }
                _ => {}
            }
        }
        Ok(account)
    }

    async fn put_subscription(&self, sub: &Subscription, ver: Option<u64>) -> StoreResult<Written> {
        let state = serde_json::to_string(sub).map_err(|e| StoreError::Backend(e.into()))?;
        let pk = stripe_customer_pk(&sub.stripe_customer);
        let mut e = Expr::default();
        let cond = match ver {
            Some(v) => format!("{} = {}", e.name(VER), e.value(n(v))),
            None => format!("attribute_not_exists({})", e.name(PK)),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .item(PK, s(pk.clone()))
            .item(SK, s(subscription_sk(&sub.id)))
            .item(ITEM_TYPE, s(ITEM_SUBSCRIPTION))
            .item(SUBSCRIPTION_ID, s(sub.id.clone()))
            .item(STRIPE_CUSTOMER_ID, s(sub.stripe_customer.clone()))
            .item(SUBSCRIPTION_STATE, s(state))
            .item(VER, n(ver.unwrap_or(0) + 1))
            .condition_expression(cond)
            .set_expression_attribute_names((!e.names.is_empty()).then_some(e.names))
            .set_expression_attribute_values((!e.values.is_empty()).then_some(e.values))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        let bump = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(STRIPE_CUSTOMER_SK))
            .update_expression("ADD #v :one")
            .expression_attribute_names("#v", ACCOUNT_VER)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        let tx = vec![TransactWriteItem::builder().put(put).build(), TransactWriteItem::builder().update(bump).build()];
        written(self.transact(tx).await)
    }

    async fn link_customer(&self, customer: &CustomerId, stripe_customer: &str, now: UnixTime) -> StoreResult<Written> {
        // The account item: linked to nobody yet, or to this customer already.
        let account = Update::builder()
            .table_name(&self.table)
            .key(PK, s(stripe_customer_pk(stripe_customer)))
            .key(SK, s(STRIPE_CUSTOMER_SK))
            .update_expression("SET #c = :c")
            .condition_expression("attribute_not_exists(#c) OR #c = :c")
            .expression_attribute_names("#c", CUSTOMER_ID)
            .expression_attribute_values(":c", s(customer.as_str()))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        // The customer: created if new, linked to no Stripe customer or to this one. Its status
        // and access are the domain's for a customer just linked, where it has none yet.
        let linked = Customer::new(customer.clone(), now).linked_to_stripe(stripe_customer);
        // A new link is never past due: there is no grace to give.
        let access = linked.access(0);
        let mut e = Expr::default();
        let sc = e.name(STRIPE_CUSTOMER_ID);
        let mut sets = vec![
            format!("{sc} = {}", e.value(s(stripe_customer))),
            format!("{} = {}", e.name(CUSTOMER_ID), e.value(s(customer.as_str()))),
            format!("{} = {}", e.name(ITEM_TYPE), e.value(s(ITEM_CUSTOMER))),
            format!("{} = if_not_exists({0}, {})", e.name(CREATED_AT), e.value(n(now.secs()))),
            format!("{} = {}", e.name(UPDATED_AT), e.value(n(now.secs()))),
            format!("{} = if_not_exists({0}, {}) + {}", e.name(VER), e.value(n(0)), e.value(n(1))),
        ];
        for (attr, status) in [(SUBSCRIPTION_STATUS, linked.subscription_status), (SUB_STATUS, access.status)] {
            if let Some(status) = status {
                sets.push(format!("{} = if_not_exists({0}, {})", e.name(attr), e.value(s(status.as_str()))));
            }
        }
        let cond = format!("attribute_not_exists({sc}) OR {sc} = {}", e.value(s(stripe_customer)));
        let cust =
            self.tx_update(customer_pk(customer.as_str()), CUSTOMER_SK, format!("SET {}", sets.join(", ")), cond, e)?;
        let tx = vec![TransactWriteItem::builder().update(account).build(), cust];
        written(self.transact(tx).await)
    }

    async fn customer_versioned(&self, id: &CustomerId) -> StoreResult<Option<(Customer, u64)>> {
        Ok(self.get_customer_versioned(id).await?.map(|c| (c.customer, c.ver)))
    }

    async fn put_billing(
        &self,
        customer: &Customer,
        ver: u64,
        derived_from: &StripeAccount,
        past_due_grace_s: u64,
    ) -> StoreResult<Written> {
        let account_version = derived_from.version;
        let stripe_customer = customer
            .stripe_customer_id
            .as_deref()
            .ok_or_else(|| StoreError::Conflict("billing needs a linked Stripe customer".into()))?;
        let mut e = Expr::default();
        let (assign, cond) = e.versioned(customer_billing(customer, customer.access(past_due_grace_s)), ver);
        let cust =
            self.tx_update(customer_pk(customer.customer_id.as_str()), CUSTOMER_SK, assign.expression(), cond, e)?;
        // The subscriptions it was derived from are still the stored ones.
        let pk = stripe_customer_pk(stripe_customer);
        // Version 0: no subscription was written, so the account item has no version yet.
        let account_ver = (account_version != 0).then_some(account_version);
        let mut tx = vec![cust, self.version_check(pk.clone(), STRIPE_CUSTOMER_SK, ACCOUNT_VER, account_ver)?];
        // A Query is read-committed per item, not a snapshot: it may have seen the account's
        // new version beside a subscription's old item. Each subscription as read, too.
        for (sub, sub_ver) in &derived_from.subscriptions {
            tx.push(self.version_check(pk.clone(), &subscription_sk(&sub.id), VER, Some(*sub_ver))?);
        }
        written(self.transact(tx).await)
    }
}

/// The account item's `customer_id`, when it is linked (an account item made by a
/// subscription write alone has none).
pub(super) fn linked_customer(item: &Item) -> StoreResult<Option<CustomerId>> {
    s_opt(item, CUSTOMER_ID).map(|c| CustomerId::parse(c).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
}

fn written(result: Result<(), TxError>) -> StoreResult<Written> {
    match result {
        Ok(()) => Ok(Written::Applied),
        Err(TxError::ConditionFailed(_)) => Ok(Written::Stale),
        Err(TxError::Store(e)) => Err(e),
    }
}
