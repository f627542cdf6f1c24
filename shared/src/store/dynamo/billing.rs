//! [`BillingStore`] over the table. A Stripe customer's partition (`STRIPECUS#<id>`) holds
//! its account item (the link to a customer and a version that every subscription write
//! moves) and one item per subscription (`SUB#<id>`, the observations as JSON), so one
//! strongly consistent Query reads everything a customer's billing is derived from.

use super::expr::Expr;
use super::items::{n, req_s, s, s_opt, u64_or};
use super::tx::TxError;
use super::{DynamoStore, Item};
use crate::domain::billing::Subscription;
use crate::domain::customers::{Customer, CustomerId};
use crate::domain::time::UnixTime;
use crate::store::schema::*;
use crate::store::{BillingStore, StoreError, StoreResult, StripeAccount, Written};
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};

const SUBSCRIPTION_SK_PREFIX: &str = "SUB#";
/// The account item's version attribute (moved by every subscription write).
const ACCOUNT_VER: &str = "subs_ver";

impl BillingStore for DynamoStore {
    async fn stripe_account(&self, stripe_customer: &str) -> StoreResult<StripeAccount> {
        let pk = stripe_customer_pk(stripe_customer);
        let mut account = StripeAccount::default();
        for item in self.query_range(&pk, STRIPE_CUSTOMER_SK, "SUB$").await? {
            match s_opt(&item, SK) {
                Some(STRIPE_CUSTOMER_SK) => {
                    account.linked = linked_customer(&item)?;
                    account.version = u64_or(&item, ACCOUNT_VER, 0)?;
                }
                Some(sk) if sk.starts_with(SUBSCRIPTION_SK_PREFIX) => {
                    let sub: Subscription = serde_json::from_str(req_s(&item, "state")?)
                        .map_err(|e| StoreError::Corrupt(format!("subscription item: {e}")))?;
                    account.subscriptions.push((sub, u64_or(&item, "ver", 0)?));
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
            Some(v) => format!("{} = {}", e.name("ver"), e.value(n(v))),
            None => format!("attribute_not_exists({})", e.name(PK)),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .item(PK, s(pk.clone()))
            .item(SK, s(format!("{SUBSCRIPTION_SK_PREFIX}{}", sub.id)))
            .item("type", s("subscription"))
            .item("subscription_id", s(sub.id.clone()))
            .item("stripe_customer_id", s(sub.stripe_customer.clone()))
            .item("state", s(state))
            .item("ver", n(ver.unwrap_or(0) + 1))
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
            .expression_attribute_names("#c", "customer_id")
            .expression_attribute_values(":c", s(customer.as_str()))
            .build()
            .map_err(|e| StoreError::Backend(e.into()))?;
        // The customer: created if new, linked to no Stripe customer or to this one. A customer
        // becoming Stripe-billed starts `incomplete`: no access until a subscription is known.
        let mut e = Expr::default();
        let (sc, status, access) = (e.name("stripe_customer_id"), e.name("subscription_status"), e.name("sub_status"));
        let incomplete = e.value(s("incomplete"));
        let sets = [
            format!("{sc} = {}", e.value(s(stripe_customer))),
            format!("{} = {}", e.name("customer_id"), e.value(s(customer.as_str()))),
            format!("{} = {}", e.name("type"), e.value(s("customer"))),
            format!("{} = if_not_exists({0}, {})", e.name("created_at"), e.value(n(now.secs()))),
            format!("{} = {}", e.name("updated_at"), e.value(n(now.secs()))),
            format!("{status} = if_not_exists({status}, {incomplete})"),
            format!("{access} = if_not_exists({access}, {incomplete})"),
            format!("{} = if_not_exists({0}, {}) + {}", e.name("ver"), e.value(n(0)), e.value(n(1))),
        ];
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
        let access = customer.access(past_due_grace_s);
        let fields: [(&str, Option<aws_sdk_dynamodb::types::AttributeValue>); 10] = [
            ("stripe_customer_id", Some(s(stripe_customer))),
            ("stripe_subscription_id", customer.stripe_subscription_id.clone().map(s)),
            ("subscription_status", customer.subscription_status.map(|v| s(v.as_str()))),
            ("plan_id", customer.plan_id.as_ref().map(|p| s(p.as_str()))),
            ("current_period_end", customer.current_period_end.map(|t| n(t.secs()))),
            ("past_due_since", customer.past_due_since.map(|t| n(t.secs()))),
            ("unknown_price_id", customer.unknown_price_id.clone().map(s)),
            ("updated_at", Some(n(customer.updated_at.secs()))),
            ("sub_status", access.status.map(|v| s(v.as_str()))),
            ("sub_grace_until", access.grace_until.map(|t| n(t.secs()))),
        ];
        let mut e = Expr::default();
        let (assign, cond) = e.versioned(fields, ver);
        let cust =
            self.tx_update(customer_pk(customer.customer_id.as_str()), CUSTOMER_SK, assign.expression(), cond, e)?;
        // The subscriptions it was derived from are still the stored ones.
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, s(stripe_customer_pk(stripe_customer)))
            .key(SK, s(STRIPE_CUSTOMER_SK))
            .expression_attribute_names("#v", ACCOUNT_VER);
        let check = if account_version == 0 {
            check.condition_expression("attribute_not_exists(#v)")
        } else {
            check.condition_expression("#v = :v").expression_attribute_values(":v", n(account_version))
        };
        let check = check.build().map_err(|e| StoreError::Backend(e.into()))?;
        let mut tx = vec![cust, TransactWriteItem::builder().condition_check(check).build()];
        // A Query is read-committed per item, not a snapshot: it may have seen the account's
        // new version beside a subscription's old item. Each subscription as read, too.
        for (sub, sub_ver) in &derived_from.subscriptions {
            let c = ConditionCheck::builder()
                .table_name(&self.table)
                .key(PK, s(stripe_customer_pk(stripe_customer)))
                .key(SK, s(format!("{SUBSCRIPTION_SK_PREFIX}{}", sub.id)))
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "ver")
                .expression_attribute_values(":v", n(*sub_ver))
                .build()
                .map_err(|e| StoreError::Backend(e.into()))?;
            tx.push(TransactWriteItem::builder().condition_check(c).build());
        }
        written(self.transact(tx).await)
    }
}

/// The account item's `customer_id`, when it is linked (an account item made by a
/// subscription write alone has none).
pub(super) fn linked_customer(item: &Item) -> StoreResult<Option<CustomerId>> {
    s_opt(item, "customer_id").map(|c| CustomerId::parse(c).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
}

fn written(result: Result<(), TxError>) -> StoreResult<Written> {
    match result {
        Ok(()) => Ok(Written::Applied),
        Err(TxError::ConditionFailed(_)) => Ok(Written::Stale),
        Err(TxError::Store(e)) => Err(e),
    }
}
