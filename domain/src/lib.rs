//! The language of Rocket Rides: idempotency keys, recovery points, rides,
//! charges and the rules that decide what a request may do next.
//!
//! Everything here is plain data and pure functions. Time is passed in as an
//! argument, nothing here touches a clock, a socket or a database, so every
//! rule can be tested with a handful of values.

pub mod api_key;
pub mod cancel;
pub mod charge;
pub mod fingerprint;
pub mod idempotency;
pub mod ids;
pub mod payment;
pub mod reconcile;
pub mod response;
pub mod ride;
pub mod user;
pub mod webhook;

pub use api_key::ApiKeyHash;
pub use cancel::{
    CancelDecision, CancelPolicy, Cancellation, Giveback, MAX_CANCEL_REASON_CHARS, RefundOutcome,
    RefundRecord, RefundRequest, RefundStatus,
};
pub use charge::{
    ChargeOutcome, ChargeRequest, Price, RIDE_PRICE, ReceiptFor, ReceiptJob, ReceiptKind, StagedJob,
};
pub use fingerprint::RequestFingerprint;
pub use idempotency::{
    CompleterCutoffs, CompleterPolicy, IdempotencyKey, IdempotencyKeyError, KeyAction, KeyDecision,
    KeyId, KeyProgress, KeyRecord, LockPolicy, PhaseWrite, RecoveryPoint, ReviewPolicy,
};
pub use payment::{
    PaymentApplied, PaymentIntentState, PaymentUpdate, PaymentsApi, RefundUpdate, RideStatus,
    TestCard,
};
pub use reconcile::{ChargeSearch, FoundCharge, ReconcilePolicy, Reconciliation, ReviewChecks};
pub use response::{
    AuthenticationRequired, Problem, ProblemBody, ProblemKind, RefundView, RideCancelled,
    RideCreated, RideShown, RideView, StoredResponse,
};
pub use ride::{
    Coordinate, Latitude, Longitude, Ride, RideId, RideParams, RideParamsError, RideParamsField,
};
pub use user::{User, UserId};
pub use webhook::{NotAnEvent, SignatureError, StripeEvent, WebhookSecrets};
