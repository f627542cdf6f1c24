//! The HTTP surfaces and handlers end to end on real storage: the authorizer's events, the
//! management API, the Checkout claim, the webhook, the local stack, the rollup, the Stripe
//! client, and every answer against docs/openapi.yaml.

mod authorizer;
mod claim;
mod identity;
mod local_stack;
mod management;
mod openapi;
mod rollup;
mod router;
mod stripe_api;
mod webhook;
