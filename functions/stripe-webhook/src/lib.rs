//! The Stripe webhook's handler, as a library so the local stack and the tests run the very
//! code the Lambda runs.

pub mod handler;
