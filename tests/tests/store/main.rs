//! The stores: the contract both run, Postgres's connection handling,
//! plans and row locking, and crash recovery after each commit. One test
//! binary, one shared Postgres container.

mod crash_recovery;
mod postgres_connect;
mod postgres_plans;
mod postgres_skip_locked;
mod store_contract;
