//! The HTTP API over real HTTP, on memory and on Postgres: the SPEC's rows,
//! concurrency, resilience (disconnects, panics, load shedding, stalled
//! clients, the shutdown deadline), the OpenAPI document, the console's
//! pages. One test binary, one shared Postgres container.

mod cancel_http;
mod console_http;
mod http_api;
mod http_concurrency;
mod http_resilience;
mod openapi;
mod webhooks;
