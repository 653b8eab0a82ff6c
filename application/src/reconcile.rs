//! Reconcile: ask the payment gateway what it holds for each key awaiting
//! review, and settle the keys it answers definitively.
//!
//! The decision is the domain's (`ReconcilePolicy::judge`); settling goes
//! through `PhaseMachine::resolve_review`, under the key's lock, exactly as a
//! person's `resolve` does. A key the gateway cannot answer for stays
//! listed, with the reason.

use std::sync::Arc;

use domain::{
    ChargeSearch, KeyAction, KeyId, KeyRecord, ReconcilePolicy, Reconciliation, ReviewPolicy,
};
use tracing::{info, warn};

use crate::phases::{PhaseError, PhaseMachine, ReviewResolution};
use crate::ports::{Clock, KeyViews, PaymentGateway, StoreError, Users};

/// One key awaiting review with the gateway's answer and what it allows.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFinding {
    pub record: KeyRecord,
    pub search: ChargeSearch,
    pub verdict: Reconciliation,
}

/// What settling one key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Finished with this status (201 booked, 502 ended without a charge;
    /// for a cancel, 200 refunded, 502 no refund made);
    /// the client's retries replay it.
    Settled { status: u16 },
    /// Left awaiting review: no definitive answer.
    Left { reason: String },
    /// Not settled now: a request holds the key, or it no longer awaits
    /// review (finished meanwhile).
    Skipped,
}

#[derive(Clone)]
pub struct ReconcileKeys {
    keys: Arc<dyn KeyViews>,
    users: Arc<dyn Users>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    create_ride: Arc<PhaseMachine>,
    review: ReviewPolicy,
    policy: ReconcilePolicy,
}

impl ReconcileKeys {
    pub fn new(
        keys: Arc<dyn KeyViews>,
        users: Arc<dyn Users>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        create_ride: Arc<PhaseMachine>,
        review: ReviewPolicy,
        policy: ReconcilePolicy,
    ) -> Self {
        Self {
            keys,
            users,
            gateway,
            clock,
            create_ride,
            review,
            policy,
        }
    }

    /// When a completer checks a key awaiting review again (the reconcile
    /// policy's schedule).
    pub fn checks(&self) -> domain::ReviewChecks {
        self.policy.review_checks()
    }

    /// Up to `limit` keys awaiting review, each with what the gateway holds
    /// for it. Reads only.
    pub async fn examine(&self, limit: usize) -> Result<Vec<KeyFinding>, StoreError> {
        let cutoff = self.review.attempted_before(self.clock.now());
        let records = self.keys.keys_for_review(cutoff, limit).await?;
        let mut findings = Vec::with_capacity(records.len());
        for record in records {
            findings.push(self.examine_key(record).await?);
        }
        Ok(findings)
    }

    /// What the gateway holds for one key awaiting review, and what it allows.
    pub async fn examine_key(&self, record: KeyRecord) -> Result<KeyFinding, StoreError> {
        if let KeyAction::CancelRide { .. } = record.action {
            return self.examine_cancel(record).await;
        }
        let search = self.gateway.find_charges(&record.downstream_key).await;
        let verdict = match self.users.find_user(record.user_id).await? {
            Some(user) => {
                self.policy
                    .judge(&record, &user.stripe_customer_id, &search, self.clock.now())
            }
            None => Reconciliation::Undecided {
                reason: format!("the key's user {} does not exist", record.user_id),
            },
        };
        Ok(KeyFinding {
            record,
            search,
            verdict,
        })
    }

    /// A cancel key: what became of the refund (or the intent's cancel)
    /// its cancellation asked for.
    async fn examine_cancel(&self, record: KeyRecord) -> Result<KeyFinding, StoreError> {
        let (cancellation, _, request) = match self.create_ride.refund_request(&record).await {
            Ok(found) => found,
            Err(PhaseError::Store(error)) => return Err(error),
            Err(other) => return Err(StoreError::Inconsistent(other.to_string())),
        };
        let search = match &request {
            Some(request) => self.gateway.find_refund(request).await,
            None => ChargeSearch::Refunds(Vec::new()),
        };
        let verdict = match request {
            Some(_) => {
                self.policy
                    .judge_cancel(&record, cancellation.giveback, &search, self.clock.now())
            }
            // Nothing was due: no call was ever made.
            None => Reconciliation::Refunded { refund: None },
        };
        Ok(KeyFinding {
            record,
            search,
            verdict,
        })
    }

    /// Settles every listed key (up to `limit`) the gateway answers for.
    pub async fn settle_all(
        &self,
        limit: usize,
    ) -> Result<Vec<(KeyFinding, Settlement)>, PhaseError> {
        let mut settled = Vec::new();
        for finding in self.examine(limit).await? {
            let settlement = self.settle_finding(&finding).await?;
            settled.push((finding, settlement));
        }
        Ok(settled)
    }

    /// Settles one key, if it awaits review and the gateway answers for it.
    pub async fn settle(&self, key_id: KeyId) -> Result<Settlement, PhaseError> {
        let Some(record) = self.keys.find_key(key_id).await? else {
            return Ok(Settlement::Skipped);
        };
        if !self.review.needs_review(&record, self.clock.now()) {
            return Ok(Settlement::Skipped);
        }
        let finding = self.examine_key(record).await?;
        self.settle_finding(&finding).await
    }

    async fn settle_finding(&self, finding: &KeyFinding) -> Result<Settlement, PhaseError> {
        let key_id = finding.record.id;
        let resolution = match &finding.verdict {
            Reconciliation::Charged {
                charge_id,
                payment_intent_id,
            } => ReviewResolution::Charged {
                charge_id: charge_id.clone(),
                payment_intent_id: payment_intent_id.clone(),
            },
            Reconciliation::NotCharged => ReviewResolution::NotCharged,
            Reconciliation::Refunded { refund } => ReviewResolution::Refunded {
                refund: refund.clone(),
            },
            Reconciliation::NotRefunded => ReviewResolution::NotRefunded,
            Reconciliation::Undecided { reason } => {
                warn!(%key_id, %reason, "key left awaiting review");
                return Ok(Settlement::Left {
                    reason: reason.clone(),
                });
            }
        };
        // Judged on the record read before the lock: nobody charges a key
        // awaiting review, so what the gateway answered still holds.
        match self.create_ride.resolve_review(key_id, resolution).await? {
            Some(answer) => {
                info!(%key_id, status = answer.response.status, "key settled from the payment processor's records");
                Ok(Settlement::Settled {
                    status: answer.response.status,
                })
            }
            None => Ok(Settlement::Skipped),
        }
    }
}
