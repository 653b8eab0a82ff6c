//! The service against its real neighbours: Postgres, the Stripe adapter
//! and fake-stripe with faults (`stripe_end_to_end`), and NATS JetStream
//! (`nats_queue`). One test binary.

mod nats_cluster;
mod nats_queue;
mod payment_intents_end_to_end;
mod stripe_end_to_end;
