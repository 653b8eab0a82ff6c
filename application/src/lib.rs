//! The use cases of Rocket Rides and the ports they drive.
//!
//! A use case takes its ports as `Arc<dyn Port>` and knows nothing of the
//! technology behind them. The phase machine lives in `phases` (the driver,
//! and one file per endpoint's phases: `book`, `cancel`); the
//! background processes in `background`; riders in `users`.

pub mod background;
pub mod phases;
pub mod ports;
pub mod reconcile;
pub mod replay_cache;
pub mod settle_payments;
pub mod show_ride;
pub mod telemetry;
pub mod users;

pub use background::{
    CompleteStalledKeys, CompleterReport, DrainError, DrainStagedJobs, ReapKeys, WorkError,
    WorkJobs, WorkOutcome,
};
pub use phases::{
    Answer, CancelRequest, PhaseError, PhaseMachine, PhaseSettings, ReviewResolution, RideRequest,
};
pub use reconcile::{KeyFinding, ReconcileKeys, Settlement};
pub use replay_cache::{Cached, ReplayCache, ReplayCacheLimits};
pub use settle_payments::{ReceiveWebhook, SyncPayments, SyncReport, WebhookError, WebhookReceipt};
pub use show_ride::ShowRide;
pub use users::{
    AuthError, AuthMode, Authenticate, DEMO_USERS, SeedDemoUsers, SeedError, SeededUser,
};
