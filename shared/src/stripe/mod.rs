//! Stripe: the API client (Checkout sessions for the claim flow; meter events arrive with the
//! rollup). Webhook signatures and event shapes arrive with the webhook.

pub mod api;
pub mod events;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod signature;
