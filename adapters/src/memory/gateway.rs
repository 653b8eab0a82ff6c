//! An in-process stand-in for Stripe, for the embedded default and tests.
//! It behaves like Stripe where the service relies on it: on PaymentIntents
//! (the default) a customer's saved PaymentMethod is charged off-session
//! (`pm_card_visa` succeeds, `pm_card_chargeDeclined` is declined,
//! `pm_card_authenticationRequired` leaves the intent `requires_action`
//! until `authenticate` completes it as the rider would); on Charges a
//! customer created with `tok_visa` is charged and one with
//! `tok_chargeCustomerFail` declined. A customer with no card is refused,
//! and a repeated idempotency key with the same parameters gets the first
//! answer again (other parameters: refused). Optional faults make answers
//! unknown, before or after the charge exists. Refunds, in full or in
//! part, never more than a charge has left, and PaymentIntents cancelled
//! while they wait, under the same idempotency and fault rules.
//!
//! A customer's and a PaymentMethod's card is written into its id
//! (`cus_visa_…`, `pm_3ds_…`), so customers created by `rocket-rides up` in
//! one process are charged correctly by the API in another. Charges,
//! intents and idempotency keys live in this process only.
//!
//! Every lookup goes through an ordered index (by id, by PaymentIntent, by
//! idempotency key), so no call holds the mutex for longer as charges pile
//! up, and no index is ever rehashed whole; and it forgets, oldest first,
//! what was made before the reaper's horizon (`Retention`), so a long run's
//! memory stays flat.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::pop_expired;
use crate::clock::SystemClock;
use application::ports::SavedCustomer;
use application::ports::{Clock, GatewayError, PaymentGateway, Retention};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, ChargeSearch, FoundCharge, PaymentIntentState, PaymentsApi,
    RefundOutcome, RefundRecord, RefundRequest, RefundStatus, TestCard,
};

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
    pub payment_intent_id: Option<String>,
}

/// The card a customer or PaymentMethod id names (its prefix).
fn card_of(id: &str) -> Option<TestCard> {
    let (_, rest) = id.split_once('_')?;
    let (name, _) = rest.split_once('_')?;
    Some(match name {
        "visa" => TestCard::Visa,
        "declined" => TestCard::Declined,
        "3ds" => TestCard::AuthenticationRequired,
        "nocard" => TestCard::None,
        _ => return None,
    })
}

fn id_for(prefix: &str, card: TestCard) -> String {
    let name = match card {
        TestCard::Visa => "visa",
        TestCard::Declined => "declined",
        TestCard::AuthenticationRequired => "3ds",
        TestCard::None => "nocard",
    };
    format!("{prefix}_{name}_{}", uuid::Uuid::new_v4().simple())
}

/// One refund the fake made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRefund {
    pub id: String,
    pub charge_id: String,
    pub amount_cents: i64,
    pub idempotency_key: String,
}

/// What the fake made, in the order it made it: what it forgets first.
#[derive(Debug)]
enum Made {
    Charge(String),
    Refund(String),
    /// A charge idempotency key's first request and answer.
    Answer(String),
    /// A refund or cancel idempotency key's first request and answer.
    RefundAnswer(String),
    /// A PaymentIntent that waited on the rider.
    Intent(String),
}

#[derive(Debug, Default)]
struct State {
    /// Successful charges by id.
    charges: BTreeMap<String, FakeCharge>,
    /// A PaymentIntent's charge id.
    charge_of_intent: BTreeMap<String, String>,
    /// The charge id an idempotency key made (one at most: the key's
    /// answer is kept).
    charge_of_key: BTreeMap<String, String>,
    /// Refunds by id.
    refunds: BTreeMap<String, FakeRefund>,
    /// What has been refunded of each charge (by charge id).
    refunded: BTreeMap<String, i64>,
    /// The refund id an idempotency key made.
    refund_of_key: BTreeMap<String, String>,
    /// Each refund or cancel key's first request and answer.
    refund_answers: BTreeMap<String, (RefundRequest, RefundOutcome)>,
    refund_calls: usize,
    answers: BTreeMap<String, (ChargeRequest, ChargeOutcome)>,
    /// PaymentIntents waiting on the rider, and what became of them.
    intents: BTreeMap<String, PaymentIntentState>,
    /// The charge request each waiting intent was made for.
    intent_requests: BTreeMap<String, ChargeRequest>,
    /// Everything above, by when it was made, oldest first.
    made: VecDeque<(SystemTime, Made)>,
    calls: usize,
}

impl State {
    fn note(&mut self, made: Made, now: SystemTime) {
        self.made.push_back((now, made));
    }

    /// Forgets, oldest first, what was made before `before`, looking at
    /// `limit` records at most; how many it forgot.
    fn expire(&mut self, before: SystemTime, limit: usize, now: SystemTime) -> usize {
        let mut forgotten = 0;
        for _ in 0..limit {
            let Some((_, made)) = pop_expired(&mut self.made, |(at, _)| *at < before) else {
                break;
            };
            forgotten += usize::from(self.forget(made, now));
        }
        forgotten
    }

    /// Forgets one thing it made; `false` for an intent still waiting on
    /// the rider, which stays (noted again as made now).
    fn forget(&mut self, made: Made, now: SystemTime) -> bool {
        match made {
            Made::Charge(id) => {
                if let Some(charge) = self.charges.remove(&id) {
                    if let Some(intent) = &charge.payment_intent_id {
                        self.charge_of_intent.remove(intent);
                    }
                    if self.charge_of_key.get(&charge.idempotency_key) == Some(&id) {
                        self.charge_of_key.remove(&charge.idempotency_key);
                    }
                }
                self.refunded.remove(&id);
            }
            Made::Refund(id) => {
                if let Some(refund) = self.refunds.remove(&id)
                    && self.refund_of_key.get(&refund.idempotency_key) == Some(&id)
                {
                    self.refund_of_key.remove(&refund.idempotency_key);
                }
            }
            Made::Answer(key) => {
                self.answers.remove(&key);
            }
            Made::RefundAnswer(key) => {
                self.refund_answers.remove(&key);
            }
            Made::Intent(id) => {
                if matches!(
                    self.intents.get(&id),
                    Some(PaymentIntentState::RequiresAction | PaymentIntentState::Processing)
                ) {
                    self.note(Made::Intent(id), now);
                    return false;
                }
                self.intents.remove(&id);
                self.intent_requests.remove(&id);
            }
        }
        true
    }
}

pub struct FakeGateway {
    state: Mutex<State>,
    faults: FakeGatewayFaults,
    /// Every charge of the deployment went through this instance (one
    /// process, `start` or a test), so what it does not hold was not made.
    /// Otherwise its search answers unknown: another process's charges
    /// are not here.
    sees_every_charge: bool,
    payments: PaymentsApi,
    /// When things are made, for `Retention`.
    clock: Arc<dyn Clock>,
    /// Forgets by itself what is older than this, a little at each charge
    /// or refund (a process whose reaper does not prune it).
    forgets_after: Option<Duration>,
}

impl std::fmt::Debug for FakeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGateway")
            .field("faults", &self.faults)
            .field("sees_every_charge", &self.sees_every_charge)
            .field("payments", &self.payments)
            .finish_non_exhaustive()
    }
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
            payments: PaymentsApi::default(),
            clock: Arc::new(SystemClock),
            forgets_after: None,
        }
    }

    /// Forgets by itself, two records at each charge or refund, what was
    /// made longer ago than `window`, as Stripe forgets an idempotency key
    /// (`GATEWAY_IDEMPOTENCY_WINDOW`): for a process whose reaper does not
    /// prune it (`api`, the completer on Postgres), whose memory would
    /// otherwise grow with every charge it ever made.
    pub fn forgetting_after(mut self, window: Duration) -> Self {
        self.forgets_after = Some(window);
        self
    }

    /// Two records past `forgets_after`, if it is set.
    fn expire_some(&self, state: &mut State) {
        if let Some(window) = self.forgets_after {
            let now = self.clock.now();
            let before = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
            state.expire(before, 2, now);
        }
    }

    /// Notes when things are made by `clock` (the system's by default), as
    /// the reaper's horizon is read from it.
    pub fn timed_by(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Charges through `payments` (PaymentIntents by default).
    pub fn on(mut self, payments: PaymentsApi) -> Self {
        self.payments = payments;
        self
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

    /// Every successful charge it still remembers, in order.
    pub fn charges(&self) -> Vec<FakeCharge> {
        let state = self.state();
        state
            .made
            .iter()
            .filter_map(|(_, made)| match made {
                Made::Charge(id) => state.charges.get(id).cloned(),
                _ => None,
            })
            .collect()
    }

    /// Every refund it still remembers, in order.
    pub fn refunds(&self) -> Vec<FakeRefund> {
        let state = self.state();
        state
            .made
            .iter()
            .filter_map(|(_, made)| match made {
                Made::Refund(id) => state.refunds.get(id).cloned(),
                _ => None,
            })
            .collect()
    }

    /// How many refund and cancel calls arrived, retries included.
    pub fn refund_calls(&self) -> usize {
        self.state().refund_calls
    }

    /// How many charge calls arrived, retries included.
    pub fn charge_calls(&self) -> usize {
        self.state().calls
    }

    /// Completes a PaymentIntent's authentication as the rider would
    /// on-session: it succeeds, charged. `false` for an intent that does
    /// not wait on the rider.
    pub fn authenticate(&self, payment_intent_id: &str) -> bool {
        let mut state = self.state();
        if state.intents.get(payment_intent_id) != Some(&PaymentIntentState::RequiresAction) {
            return false;
        }
        let Some(request) = state.intent_requests.get(payment_intent_id).cloned() else {
            return false;
        };
        let charge_id = self.make_charge(&mut state, &request, Some(payment_intent_id));
        state.intents.insert(
            payment_intent_id.to_owned(),
            PaymentIntentState::Succeeded {
                charge_id: Some(charge_id),
            },
        );
        true
    }

    fn make_charge(
        &self,
        state: &mut State,
        request: &ChargeRequest,
        intent: Option<&str>,
    ) -> String {
        let charge = FakeCharge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            customer_id: request.customer_id.clone(),
            amount_cents: request.amount_cents,
            currency: request.currency.clone(),
            idempotency_key: request.idempotency_key.clone(),
            payment_intent_id: intent.map(str::to_owned),
        };
        let id = charge.id.clone();
        if let Some(intent) = intent {
            state.charge_of_intent.insert(intent.to_owned(), id.clone());
        }
        state
            .charge_of_key
            .insert(charge.idempotency_key.clone(), id.clone());
        state.charges.insert(id.clone(), charge);
        state.note(Made::Charge(id.clone()), self.clock.now());
        id
    }

    /// A refund or cancel asked for the first time, as Stripe answers it.
    fn decide_refund(&self, state: &mut State, request: &RefundRequest) -> RefundOutcome {
        let unknown_here = |what: String| {
            if self.sees_every_charge {
                RefundOutcome::Refused { message: what }
            } else {
                RefundOutcome::Unknown {
                    reason: format!("{what}: made by another process's in-process fake"),
                }
            }
        };
        match request {
            RefundRequest::Refund {
                payment_intent_id,
                charge_id,
                amount_cents,
                idempotency_key,
            } => {
                let by_intent = payment_intent_id
                    .as_ref()
                    .and_then(|intent| state.charge_of_intent.get(intent));
                let Some(charge) = charge_id
                    .as_ref()
                    .and_then(|id| state.charges.get(id))
                    .or_else(|| by_intent.and_then(|id| state.charges.get(id)))
                    .cloned()
                else {
                    return unknown_here(format!(
                        "No such charge: '{}'",
                        charge_id
                            .as_deref()
                            .or(payment_intent_id.as_deref())
                            .unwrap_or("")
                    ));
                };
                let refunded = state.refunded.get(&charge.id).copied().unwrap_or(0);
                if refunded >= charge.amount_cents {
                    return RefundOutcome::Refused {
                        message: format!("Charge {} has already been refunded.", charge.id),
                    };
                }
                if *amount_cents <= 0 || refunded + amount_cents > charge.amount_cents {
                    return RefundOutcome::Refused {
                        message: format!(
                            "Refund amount ({amount_cents}) is greater than unrefunded amount on charge ({})",
                            charge.amount_cents - refunded
                        ),
                    };
                }
                let refund = FakeRefund {
                    id: format!("re_{}", uuid::Uuid::new_v4().simple()),
                    charge_id: charge.id,
                    amount_cents: *amount_cents,
                    idempotency_key: idempotency_key.clone(),
                };
                let id = refund.id.clone();
                *state.refunded.entry(refund.charge_id.clone()).or_default() += amount_cents;
                state
                    .refund_of_key
                    .insert(refund.idempotency_key.clone(), id.clone());
                state.refunds.insert(id.clone(), refund);
                state.note(Made::Refund(id.clone()), self.clock.now());
                RefundOutcome::Refunded(RefundRecord {
                    refund_id: id,
                    status: RefundStatus::Succeeded,
                })
            }
            RefundRequest::CancelPaymentIntent {
                payment_intent_id, ..
            } => match state.intents.get(payment_intent_id) {
                Some(PaymentIntentState::RequiresAction | PaymentIntentState::Processing) => {
                    state
                        .intents
                        .insert(payment_intent_id.clone(), PaymentIntentState::Failed);
                    RefundOutcome::IntentCanceled
                }
                Some(PaymentIntentState::Failed) => RefundOutcome::IntentCanceled,
                Some(PaymentIntentState::Succeeded { .. }) => RefundOutcome::Refused {
                    message:
                        "You cannot cancel this PaymentIntent because it has a status of succeeded."
                            .to_owned(),
                },
                None => unknown_here(format!("No such payment_intent: '{payment_intent_id}'")),
            },
        }
    }

    fn decide(&self, state: &mut State, request: &ChargeRequest) -> ChargeOutcome {
        let customer = request.customer_id.as_str();
        if !customer.starts_with("cus_") || card_of(customer).is_none() {
            return ChargeOutcome::Refused {
                message: format!("No such customer: '{customer}'"),
            };
        }
        match self.payments {
            PaymentsApi::Charges => match card_of(customer) {
                Some(TestCard::Visa) => ChargeOutcome::Charged {
                    charge_id: self.make_charge(state, request, None),
                    payment_intent_id: None,
                },
                Some(TestCard::Declined | TestCard::AuthenticationRequired) => {
                    ChargeOutcome::Declined {
                        message: DECLINE_MESSAGE.to_owned(),
                    }
                }
                _ => ChargeOutcome::Refused {
                    message: "Cannot charge a customer that has no active card".to_owned(),
                },
            },
            PaymentsApi::PaymentIntents => {
                let card = request.payment_method_id.as_deref().and_then(card_of);
                let intent = format!("pi_{}", uuid::Uuid::new_v4().simple());
                match card {
                    Some(TestCard::Visa) => ChargeOutcome::Charged {
                        charge_id: self.make_charge(state, request, Some(&intent)),
                        payment_intent_id: Some(intent),
                    },
                    Some(TestCard::Declined) => ChargeOutcome::Declined {
                        message: DECLINE_MESSAGE.to_owned(),
                    },
                    Some(TestCard::AuthenticationRequired) => {
                        state
                            .intents
                            .insert(intent.clone(), PaymentIntentState::RequiresAction);
                        state
                            .intent_requests
                            .insert(intent.clone(), request.clone());
                        state.note(Made::Intent(intent.clone()), self.clock.now());
                        ChargeOutcome::RequiresAuthentication {
                            client_secret: format!("{intent}_secret_{}", fastrand::u32(..)),
                            payment_intent_id: intent,
                        }
                    }
                    _ => ChargeOutcome::Refused {
                        message: "You must provide a PaymentMethod to confirm off-session"
                            .to_owned(),
                    },
                }
            }
        }
    }
}

#[async_trait]
impl PaymentGateway for FakeGateway {
    async fn create_customer(
        &self,
        _email: &str,
        card: TestCard,
    ) -> Result<SavedCustomer, GatewayError> {
        let customer_id = id_for("cus", card);
        let payment_method_id = self.save_payment_method(&customer_id, card).await?;
        Ok(SavedCustomer {
            customer_id,
            payment_method_id,
        })
    }

    async fn save_payment_method(
        &self,
        _customer_id: &str,
        card: TestCard,
    ) -> Result<Option<String>, GatewayError> {
        Ok(match (self.payments, card) {
            (PaymentsApi::Charges, _) | (_, TestCard::None) => None,
            (PaymentsApi::PaymentIntents, card) => Some(id_for("pm", card)),
        })
    }

    async fn payment_intent_state(&self, id: &str) -> Result<PaymentIntentState, GatewayError> {
        let state = self.state();
        if let Some(waiting) = state.intents.get(id) {
            return Ok(waiting.clone());
        }
        match state.charge_of_intent.get(id) {
            Some(charge_id) => Ok(PaymentIntentState::Succeeded {
                charge_id: Some(charge_id.clone()),
            }),
            None if self.sees_every_charge => Err(GatewayError::Refused(format!(
                "No such payment_intent: '{id}'"
            ))),
            None => Err(GatewayError::Unknown(format!(
                "PaymentIntent {id} was made by another process's in-process fake"
            ))),
        }
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        let fault = self.faults.unknown_rate > 0.0 && fastrand::f64() < self.faults.unknown_rate;
        let lose_after_charging = fastrand::bool();
        let mut state = self.state();
        self.expire_some(&mut state);
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
                let outcome = self.decide(&mut state, request);
                state
                    .answers
                    .insert(request.idempotency_key.clone(), (request.clone(), outcome.clone()));
                state.note(Made::Answer(request.idempotency_key.clone()), self.clock.now());
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

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        let fault = self.faults.unknown_rate > 0.0 && fastrand::f64() < self.faults.unknown_rate;
        let lose_after = fastrand::bool();
        let mut state = self.state();
        self.expire_some(&mut state);
        state.refund_calls += 1;
        if fault && !lose_after {
            return RefundOutcome::Unknown {
                reason: "fake gateway: connection reset before the refund".to_owned(),
            };
        }
        let key = match request {
            RefundRequest::Refund {
                idempotency_key, ..
            }
            | RefundRequest::CancelPaymentIntent {
                idempotency_key, ..
            } => idempotency_key.clone(),
        };
        let outcome = match state.refund_answers.get(&key) {
            Some((first, outcome)) if first == request => outcome.clone(),
            Some(_) => RefundOutcome::Unknown {
                reason: "Keys for idempotent requests can only be used with the same parameters they were first used with.".to_owned(),
            },
            None => {
                let outcome = self.decide_refund(&mut state, request);
                state
                    .refund_answers
                    .insert(key.clone(), (request.clone(), outcome.clone()));
                state.note(Made::RefundAnswer(key), self.clock.now());
                outcome
            }
        };
        if fault {
            return RefundOutcome::Unknown {
                reason: "fake gateway: timed out after the refund".to_owned(),
            };
        }
        outcome
    }

    async fn refund_status(&self, refund_id: &str) -> Result<RefundStatus, GatewayError> {
        let known = self.state().refunds.contains_key(refund_id);
        match known {
            true => Ok(RefundStatus::Succeeded),
            false if self.sees_every_charge => Err(GatewayError::Refused(format!(
                "No such refund: '{refund_id}'"
            ))),
            false => Err(GatewayError::Unknown(format!(
                "refund {refund_id} was made by another process's in-process fake"
            ))),
        }
    }

    async fn find_refund(&self, request: &RefundRequest) -> ChargeSearch {
        if !self.sees_every_charge {
            return ChargeSearch::Unknown {
                reason: "the in-process fake gateway holds only this process's refunds".to_owned(),
            };
        }
        let state = self.state();
        match request {
            RefundRequest::Refund {
                idempotency_key, ..
            } => ChargeSearch::Refunds(
                state
                    .refund_of_key
                    .get(idempotency_key)
                    .map(|id| RefundRecord {
                        refund_id: id.clone(),
                        status: RefundStatus::Succeeded,
                    })
                    .into_iter()
                    .collect(),
            ),
            RefundRequest::CancelPaymentIntent {
                payment_intent_id, ..
            } => match state.intents.get(payment_intent_id) {
                Some(intent) => ChargeSearch::Intent(intent.clone()),
                None => ChargeSearch::Unknown {
                    reason: format!("No such payment_intent: '{payment_intent_id}'"),
                },
            },
        }
    }

    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        if !self.sees_every_charge {
            return ChargeSearch::Unknown {
                reason: "the in-process fake gateway holds only this process's charges; run `start`, or use fake-stripe or Stripe (STRIPE_API_KEY)".to_owned(),
            };
        }
        let state = self.state();
        let found = state
            .charge_of_key
            .get(downstream_key)
            .and_then(|id| state.charges.get(id))
            .map(|charge| FoundCharge {
                id: charge.id.clone(),
                amount_cents: charge.amount_cents,
                currency: charge.currency.clone(),
                customer_id: charge.customer_id.clone(),
                status: FoundCharge::SUCCEEDED.to_owned(),
                payment_intent_id: charge.payment_intent_id.clone(),
            })
            .into_iter()
            .collect();
        ChargeSearch::Found(found)
    }
}

impl Retention for FakeGateway {
    /// Forgets, oldest first, charges, refunds, intents and idempotency
    /// answers made before `before`; an intent still waiting on the rider
    /// stays. At most `limit` looked at per call.
    fn forget_before(&self, before: SystemTime, limit: usize) -> usize {
        let now = self.clock.now();
        self.state().expire(before, limit, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn charge(key: &str, customer: &SavedCustomer) -> ChargeRequest {
        ChargeRequest {
            customer_id: customer.customer_id.clone(),
            payment_method_id: customer.payment_method_id.clone(),
            amount_cents: 2000,
            currency: "usd".to_owned(),
            description: "a ride".to_owned(),
            idempotency_key: key.to_owned(),
        }
    }

    /// A fake no reaper prunes forgets what is older than its window by
    /// itself, a little at each charge: a long run's memory stays flat,
    /// and a key inside the window still gets its first answer.
    #[tokio::test]
    async fn a_fake_forgets_what_is_older_than_its_window_by_itself() {
        let clock = Arc::new(ManualClock::at_epoch_plus(0));
        let fake = FakeGateway::new()
            .one_of_several()
            .forgetting_after(Duration::from_secs(3600))
            .timed_by(clock.clone());
        let customer = fake
            .create_customer("rider@example.com", TestCard::Visa)
            .await
            .expect("a customer");
        let first = fake.charge(&charge("key-1", &customer)).await;
        clock.advance(Duration::from_secs(1800));
        let second = fake.charge(&charge("key-2", &customer)).await;
        assert_eq!(
            fake.charge(&charge("key-1", &customer)).await,
            first,
            "inside the window"
        );
        assert_eq!(fake.charges().len(), 2);

        clock.advance(Duration::from_secs(1801));
        fake.charge(&charge("key-3", &customer)).await;
        let kept: Vec<String> = fake
            .charges()
            .into_iter()
            .map(|charge| charge.idempotency_key)
            .collect();
        assert_eq!(
            kept,
            ["key-2", "key-3"],
            "key-1's charge is past the window"
        );
        assert_eq!(fake.charge(&charge("key-2", &customer)).await, second);
    }
}
