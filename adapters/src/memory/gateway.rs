//! An in-process stand-in for Stripe, for the embedded default and tests.
//! It behaves like Stripe where the service relies on it: a customer created
//! with `tok_visa` is charged, one with `tok_chargeCustomerFail` is declined,
//! one with no card is refused, and a repeated idempotency key with the same
//! parameters gets the first answer again (other parameters: refused).
//! Optional faults make answers unknown, before or after the charge exists.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use application::ports::{GatewayError, PaymentGateway};
use async_trait::async_trait;
use domain::{ChargeOutcome, ChargeRequest};

/// Card tokens the fake understands, as Stripe's test mode names them.
pub const SOURCE_CHARGES: &str = "tok_visa";
pub const SOURCE_DECLINED: &str = "tok_chargeCustomerFail";

pub const DECLINE_MESSAGE: &str = "Your card was declined.";

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FakeGatewayFaults {
    /// Probability that a charge's answer is lost (half of those after the
    /// charge was made, half before).
    pub unknown_rate: f64,
    /// Added to every charge, to make requests overlap in demos.
    pub latency: Duration,
}

/// One charge the fake made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCharge {
    pub id: String,
    pub customer_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub idempotency_key: String,
}

#[derive(Debug, Default)]
struct State {
    customers: HashMap<String, Option<String>>,
    charges: Vec<FakeCharge>,
    answers: HashMap<String, (ChargeRequest, ChargeOutcome)>,
    calls: usize,
}

#[derive(Debug, Default)]
pub struct FakeGateway {
    state: Mutex<State>,
    faults: FakeGatewayFaults,
}

impl FakeGateway {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: FakeGatewayFaults) -> Self {
        Self {
            state: Mutex::default(),
            faults,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every successful charge, in order.
    pub fn charges(&self) -> Vec<FakeCharge> {
        self.state().charges.clone()
    }

    /// How many charge calls arrived, retries included.
    pub fn charge_calls(&self) -> usize {
        self.state().calls
    }

    fn decide(state: &mut State, request: &ChargeRequest) -> ChargeOutcome {
        match state.customers.get(&request.customer_id) {
            None => ChargeOutcome::Refused {
                message: format!("No such customer: '{}'", request.customer_id),
            },
            Some(None) => ChargeOutcome::Refused {
                message: "Cannot charge a customer that has no active card".to_owned(),
            },
            Some(Some(source)) if source == SOURCE_DECLINED => ChargeOutcome::Declined {
                message: DECLINE_MESSAGE.to_owned(),
            },
            Some(Some(_)) => {
                let charge = FakeCharge {
                    id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
                    customer_id: request.customer_id.clone(),
                    amount_cents: request.amount_cents,
                    currency: request.currency.clone(),
                    idempotency_key: request.idempotency_key.clone(),
                };
                let id = charge.id.clone();
                state.charges.push(charge);
                ChargeOutcome::Charged { charge_id: id }
            }
        }
    }
}

#[async_trait]
impl PaymentGateway for FakeGateway {
    async fn create_customer(&self, _email: &str, source: &str) -> Result<String, GatewayError> {
        let source = match source {
            "" => None,
            SOURCE_CHARGES | SOURCE_DECLINED => Some(source.to_owned()),
            other => {
                return Err(GatewayError::Refused(format!("No such token: '{other}'")));
            }
        };
        let id = format!("cus_{}", uuid::Uuid::new_v4().simple());
        self.state().customers.insert(id.clone(), source);
        Ok(id)
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        let fault = self.faults.unknown_rate > 0.0 && fastrand::f64() < self.faults.unknown_rate;
        let lose_after_charging = fastrand::bool();
        let mut state = self.state();
        state.calls += 1;
        if fault && !lose_after_charging {
            return ChargeOutcome::Unknown {
                reason: "fake gateway: connection reset before the charge".to_owned(),
            };
        }
        let outcome = match state.answers.get(&request.idempotency_key) {
            Some((first, outcome)) if first == request => outcome.clone(),
            Some(_) => ChargeOutcome::Refused {
                message: "Keys for idempotent requests can only be used with the same parameters they were first used with.".to_owned(),
            },
            None => {
                let outcome = Self::decide(&mut state, request);
                state
                    .answers
                    .insert(request.idempotency_key.clone(), (request.clone(), outcome.clone()));
                outcome
            }
        };
        if fault {
            return ChargeOutcome::Unknown {
                reason: "fake gateway: timed out after the charge".to_owned(),
            };
        }
        outcome
    }
}
