//! In-memory adapters: real implementations of the ports, kept in this
//! process. The embedded default (`rocket-rides start` with nothing set) and
//! the store every use-case test runs on.

pub mod gateway;
pub mod queue;
pub mod store;

pub use gateway::{FakeCharge, FakeGateway, FakeGatewayFaults, FakeRefund};
pub use queue::MemoryQueue;
pub use store::{AuditRecord, MemoryStore};
