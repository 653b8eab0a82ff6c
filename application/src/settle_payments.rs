//! Settling rides whose payment ends after the request answered: a ride
//! awaiting the rider's authentication or pending at Stripe moves on when
//! Stripe says so, by a signed webhook (`ReceiveWebhook`) or, when no
//! webhook came, by the completer retrieving the PaymentIntent
//! (`SyncPayments`). Both apply the same `PaymentUpdate` through the same
//! port, so the rule is one: `RideStatus::after`, forward only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::{
    NotAnEvent, PaymentApplied, PaymentUpdate, RefundUpdate, SignatureError, StripeEvent,
    WebhookSecrets,
};
use tracing::{info, warn};

use crate::ports::{Clock, PaymentGateway, RidePayments, StoreError};

/// Why a webhook was refused: each a 400 that stores nothing, except a
/// store that could not answer (503: Stripe retries).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    NotAnEvent(#[from] NotAnEvent),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a webhook did, for the answer and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReceipt {
    pub event_id: String,
    pub event_type: String,
    /// `None` for an event type this service does not act on.
    pub applied: Option<PaymentApplied>,
}

impl WebhookReceipt {
    /// One word for logs and metrics (`ignored` for a type we do not act on).
    pub fn result(&self) -> &'static str {
        self.applied
            .as_ref()
            .map_or("ignored", PaymentApplied::result)
    }
}

/// `POST /webhooks/stripe`: the signature checked against the raw body,
/// the event read, and a PaymentIntent or refund event applied once. Never calls
/// Stripe: the event's own object says what happened.
pub struct ReceiveWebhook {
    payments: Arc<dyn RidePayments>,
    clock: Arc<dyn Clock>,
    secrets: WebhookSecrets,
    tolerance: Duration,
}

impl ReceiveWebhook {
    pub fn new(
        payments: Arc<dyn RidePayments>,
        clock: Arc<dyn Clock>,
        secrets: WebhookSecrets,
        tolerance: Duration,
    ) -> Self {
        Self {
            payments,
            clock,
            secrets,
            tolerance,
        }
    }

    pub async fn run(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookReceipt, WebhookError> {
        let now = self.clock.now();
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let result = self.receive(signature, body, now, seconds).await;
        let label = match &result {
            Ok(receipt) => receipt.result(),
            Err(WebhookError::Signature(_)) => "bad_signature",
            Err(WebhookError::NotAnEvent(_)) => "not_an_event",
            Err(WebhookError::Store(_)) => "store_unavailable",
        };
        let event_type = match &result {
            Ok(receipt) => receipt.event_type.clone(),
            Err(_) => "unread".to_owned(),
        };
        metrics::counter!("rocket_rides_webhook_events_total", "type" => event_type, "result" => label)
            .increment(1);
        result
    }

    async fn receive(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: SystemTime,
        seconds: u64,
    ) -> Result<WebhookReceipt, WebhookError> {
        self.secrets
            .verify(signature, body, seconds, self.tolerance)
            .inspect_err(|error| warn!(%error, "webhook refused"))?;
        let event =
            StripeEvent::parse(body).inspect_err(|error| warn!(%error, "webhook refused"))?;
        let applied = match (&event.update, &event.refund) {
            (Some(update), _) => Some(self.payments.apply_payment(update, now).await?),
            (None, Some(refund)) => Some(self.payments.apply_refund(refund, now).await?),
            (None, None) => None,
        };
        let receipt = WebhookReceipt {
            event_id: event.id,
            event_type: event.event_type,
            applied,
        };
        info!(event = %receipt.event_id, r#type = %receipt.event_type, result = receipt.result(), "webhook received");
        Ok(receipt)
    }
}

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Rides whose PaymentIntent was retrieved.
    pub checked: usize,
    /// Of those, rides that moved on.
    pub settled: usize,
    /// Rides whose PaymentIntent could not be retrieved (tried next pass).
    pub unknown: usize,
    /// Pending refunds retrieved; of those, refunds that ended failed
    /// (their rides now `refund_failed`); refunds that could not be.
    pub refunds_checked: usize,
    pub refunds_failed: usize,
    pub refunds_unknown: usize,
}

/// The completer's sync pass: no ride waits on a lost webhook. A ride
/// awaiting authentication or pending for longer than `sync_after` has its
/// PaymentIntent retrieved and the same rule applied as for a webhook; a
/// ride still waiting is checked again `sync_after` later. So has a
/// cancellation's refund still pending: one Stripe reports failed marks
/// its ride `refund_failed`, as the refund's webhook would.
pub struct SyncPayments {
    payments: Arc<dyn RidePayments>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    sync_after: Duration,
}

impl SyncPayments {
    /// `PAYMENT_SYNC_AFTER`'s default.
    pub const DEFAULT_SYNC_AFTER: Duration = Duration::from_secs(600);

    pub fn new(
        payments: Arc<dyn RidePayments>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        sync_after: Duration,
    ) -> Self {
        Self {
            payments,
            gateway,
            clock,
            sync_after,
        }
    }

    /// One pass over up to `limit` rides.
    ///
    /// # Errors
    ///
    /// `StoreError` when the store cannot answer; a PaymentIntent that
    /// cannot be retrieved is counted `unknown` and tried next pass.
    pub async fn run(&self, limit: usize) -> Result<SyncReport, StoreError> {
        let now = self.clock.now();
        let stale_before = now.checked_sub(self.sync_after).unwrap_or(UNIX_EPOCH);
        let waiting = self
            .payments
            .rides_awaiting_payment(stale_before, limit)
            .await?;
        let mut report = SyncReport::default();
        for ride in waiting {
            let state = match self
                .gateway
                .payment_intent_state(&ride.payment_intent_id)
                .await
            {
                Ok(state) => state,
                Err(error) => {
                    warn!(ride_id = %ride.ride_id, payment_intent = %ride.payment_intent_id, %error, "could not retrieve the PaymentIntent; tried next pass");
                    report.unknown += 1;
                    continue;
                }
            };
            let update = PaymentUpdate {
                event_id: None,
                event_type: "sync".to_owned(),
                payment_intent_id: ride.payment_intent_id.clone(),
                state,
            };
            let applied = self
                .payments
                .apply_payment(&update, self.clock.now())
                .await?;
            report.checked += 1;
            if let PaymentApplied::Moved { from, to } = applied {
                info!(ride_id = %ride.ride_id, %from, %to, "ride settled by the sync pass");
                report.settled += 1;
            }
            metrics::counter!("rocket_rides_payment_syncs_total", "result" => applied.result())
                .increment(1);
        }
        self.sync_refunds(stale_before, limit, &mut report).await?;
        Ok(report)
    }

    async fn sync_refunds(
        &self,
        stale_before: std::time::SystemTime,
        limit: usize,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        for pending in self.payments.refunds_pending(stale_before, limit).await? {
            let status = match self.gateway.refund_status(&pending.refund_id).await {
                Ok(status) => status,
                Err(error) => {
                    warn!(ride_id = %pending.ride_id, refund = %pending.refund_id, %error, "could not retrieve the refund; tried next pass");
                    report.refunds_unknown += 1;
                    continue;
                }
            };
            let update = RefundUpdate {
                event_id: None,
                event_type: "sync".to_owned(),
                refund_id: pending.refund_id.clone(),
                status,
            };
            let applied = self
                .payments
                .apply_refund(&update, self.clock.now())
                .await?;
            report.refunds_checked += 1;
            if let PaymentApplied::Moved { to, .. } = applied {
                warn!(ride_id = %pending.ride_id, refund = %pending.refund_id, %to, "the refund failed at Stripe; the ride is listed for a person");
                report.refunds_failed += 1;
            }
            metrics::counter!("rocket_rides_refund_syncs_total", "result" => applied.result())
                .increment(1);
        }
        Ok(())
    }
}
