//! Adapters: one module per technology behind the application's ports.
//! Only here is there SQL, HTTP or a queue client; `bins` picks which ones
//! run.

pub mod clock;
pub mod connect;
pub mod fake_stripe;
pub mod http;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod receipts;
pub mod stripe;
