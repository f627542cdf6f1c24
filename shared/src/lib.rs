//! Tollgate's shared library: the domain (keys, plans, customers, limits, usage), the storage
//! traits and their one DynamoDB implementation, configuration and telemetry.
//!
//! The domain modules know nothing of AWS; only `store::dynamo` names SDK types.

pub mod app;
pub mod config;
pub mod domain;
pub mod envelope;
pub mod http_client;
pub mod identity;
pub mod metrics;
pub mod secrets;
pub mod store;
pub mod stripe;
pub mod telemetry;
