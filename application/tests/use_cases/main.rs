//! The use cases on the in-memory adapters with a manual clock (no sleeps),
//! and mockall where a fake cannot stage the failure: one test binary.

mod background;
mod cancel;
mod create_ride;
mod gateway_mocks;
mod payments;
mod reconcile;
mod replay_cache;
mod support;
