//! An in-process stand-in for Stripe, for the embedded default and tests.
//! It behaves like Stripe where the service relies on it: a customer created
//! with `tok_visa` is charged, one with `tok_chargeCustomerFail` is declined,
//! one with no card is refused, and a repeated idempotency key with the same
//! parameters gets the first answer again (other parameters: refused).
//! Optional faults make answers unknown, before or after the charge exists.
//!
//! A customer's card is written into its id (`cus_visa_…`), so customers
//! created by `rocket-rides up` in one process are charged correctly by the
//! API in another. Charges and idempotency keys live in this process only.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use application::ports::{GatewayError, PaymentGateway};
use async_trait::async_trait;
use domain::{ChargeOutcome, ChargeRequest, ChargeSearch, FoundCharge};

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

/// Customer id prefixes, by card.
const CUSTOMER_CHARGES: &str = "cus_visa_";
const CUSTOMER_DECLINED: &str = "cus_declined_";
const CUSTOMER_NO_CARD: &str = "cus_nocard_";

#[derive(Debug, Default)]
struct State {
    charges: Vec<FakeCharge>,
    answers: HashMap<String, (ChargeRequest, ChargeOutcome)>,
    calls: usize,
}

#[derive(Debug)]
pub struct FakeGateway {
    state: Mutex<State>,
    faults: FakeGatewayFaults,
    /// Every charge of the deployment went through this instance (one
    /// process, `start` or a test), so what it does not hold was not made.
    /// Otherwise its search answers unknown: another process's charges
    /// are not here.
    sees_every_charge: bool,
}

impl Default for FakeGateway {
    fn default() -> Self {
        Self::with_faults(FakeGatewayFaults::default())
    }
}

impl FakeGateway {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: FakeGatewayFaults) -> Self {
        Self {
            state: Mutex::default(),
            faults,
            sees_every_charge: true,
        }
    }

    /// One of several processes' fakes: it cannot tell that a charge does
    /// not exist, since another process may have made it.
    pub fn one_of_several(mut self) -> Self {
        self.sees_every_charge = false;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let customer = request.customer_id.as_str();
        if customer.starts_with(CUSTOMER_NO_CARD) {
            return ChargeOutcome::Refused {
                message: "Cannot charge a customer that has no active card".to_owned(),
            };
        }
        if customer.starts_with(CUSTOMER_DECLINED) {
            return ChargeOutcome::Declined {
                message: DECLINE_MESSAGE.to_owned(),
            };
        }
        match customer.starts_with(CUSTOMER_CHARGES) {
            false => ChargeOutcome::Refused {
                message: format!("No such customer: '{customer}'"),
            },
            true => {
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
        let prefix = match source {
            "" => CUSTOMER_NO_CARD,
            SOURCE_CHARGES => CUSTOMER_CHARGES,
            SOURCE_DECLINED => CUSTOMER_DECLINED,
            other => {
                return Err(GatewayError::Refused(format!("No such token: '{other}'")));
            }
        };
        Ok(format!("{prefix}{}", uuid::Uuid::new_v4().simple()))
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
            // Stripe's `idempotency_error`: says nothing about the first
            // request's charge, so it is no proof that none was made.
            Some(_) => ChargeOutcome::Unknown {
                reason: "Keys for idempotent requests can only be used with the same parameters they were first used with.".to_owned(),
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

    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        if !self.sees_every_charge {
            return ChargeSearch::Unknown {
                reason: "the in-process fake gateway holds only this process's charges; run `start`, or use fake-stripe or Stripe (STRIPE_API_KEY)".to_owned(),
            };
        }
        let found = self
            .state()
            .charges
            .iter()
            .filter(|charge| charge.idempotency_key == downstream_key)
            .map(|charge| FoundCharge {
                id: charge.id.clone(),
                amount_cents: charge.amount_cents,
                currency: charge.currency.clone(),
                customer_id: charge.customer_id.clone(),
                status: FoundCharge::SUCCEEDED.to_owned(),
            })
            .collect();
        ChargeSearch::Found(found)
    }
}
