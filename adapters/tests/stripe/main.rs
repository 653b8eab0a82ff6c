//! Stripe, both sides: the HTTP adapter against wiremock (`adapter`), and
//! fake-stripe's own behaviour (`fake`): one test binary.

mod adapter;
mod fake;
