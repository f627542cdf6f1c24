//! Pure domain logic: no I/O, no AWS types.

pub mod admission;
pub mod api_key;
mod base62;
pub mod billing;
pub mod customers;
pub mod decision;
pub mod key_records;
pub mod lease;
pub mod limits;
pub mod plans;
pub mod scopes;
pub mod stats;
pub mod time;
pub mod usage;
