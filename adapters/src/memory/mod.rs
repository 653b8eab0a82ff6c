//! In-memory adapters: real implementations of the ports, kept in this
//! process. The embedded default (`rocket-rides start` with nothing set) and
//! the store every use-case test runs on.

pub mod gateway;
pub mod queue;
pub mod store;

pub use gateway::{FakeCharge, FakeGateway, FakeGatewayFaults, FakeRefund};
pub use queue::MemoryQueue;
pub use store::{AuditRecord, MemoryStore};

use std::collections::VecDeque;

/// The front of `queue`, taken if `expired` says it is past: how the
/// in-memory adapters forget, oldest first, one record at a time (the
/// store's audit records and event ids, the gateway's payments, the
/// queue's dedup ids).
pub(crate) fn pop_expired<T>(
    queue: &mut VecDeque<T>,
    expired: impl FnOnce(&T) -> bool,
) -> Option<T> {
    if queue.front().is_some_and(expired) {
        queue.pop_front()
    } else {
        None
    }
}
