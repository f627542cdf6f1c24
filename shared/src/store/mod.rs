//! Storage: narrow traits for what each function needs, and their one implementation over
//! DynamoDB ([`dynamo::DynamoStore`]). Callers are generic over the traits; a handler's unit
//! test may fake one narrow trait, while everything that needs storage runs the real SDK code
//! path against a DynamoDB-protocol server (Dynoxide in-process, or moto).

pub mod dynamo;
#[cfg(feature = "embedded")]
pub mod embedded;
mod key_edits;
pub mod metrics;
pub mod schema;

pub use key_edits::{KeyPatch, NewKey, revoke_edit, rotate_edit};

mod authorize;
mod billing;
mod error;
mod idempotency;
mod management;
mod rollup;
mod usage;

pub use authorize::{AuthorizeStore, Taken};
pub use billing::{BillingStore, StripeAccount};
pub use error::{Fault, Outage, StoreError, StoreResult};
pub use idempotency::{Attempt, AttemptStore, IdempotencyStore, Reservation, Reserve};
pub use management::{CustomerStore, FanOut, KeyFilter, KeyStore, Page, PlanStore};
pub use rollup::{
    KeyEdit, KeyRoll, KeyUsage, QuotaUse, ROLL_DAYS_AT_ONCE, ROLL_ITEMS_AT_ONCE, Rolled, RollupStore,
    SETTLE_DAYS_AT_ONCE,
};
pub use usage::UsageStore;

/// How a conditional rollup write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// What it was conditioned on changed since it was read (a concurrent run, or new usage);
    /// nothing was written.
    Stale,
}
