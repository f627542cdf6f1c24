//! The management API, as a library so the local stack and the tests run the very router the
//! Lambda runs.

pub mod api;
pub mod error;
pub mod extract;
pub mod json;
pub mod views;
