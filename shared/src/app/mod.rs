//! Use cases over the storage traits: the steps and retries around the pure rules in
//! `domain`, shared by every surface that needs them.

pub mod authorize;
pub mod billing;
pub mod checkout;
pub mod claim;
pub mod idempotent;
pub mod rollup;
