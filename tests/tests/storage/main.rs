//! Storage: the contract every store operation keeps, and the authorizer, webhook and rollup
//! through injected DynamoDB faults. Runs on Dynoxide, and on moto under `make test`.

mod concurrency;
mod contract;
mod faults;
mod hot_key;
mod idempotent;
