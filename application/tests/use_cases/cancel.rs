//! Cancelling a ride on the same phase machine as booking: the refund rule,
//! one cancellation and one refund per ride, answers stored and replayed,
//! an unknown refund resumed under the same key by a retry or the
//! completer, and the cancellation receipt through the same worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapters::memory::FakeGateway;
use application::ports::{
    GatewayError, Keys, Outbox, PaymentGateway, ReceiptSender, Receipts, SavedCustomer,
};
use application::{CancelRequest, PhaseError, ReapKeys};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, IdempotencyKey, KeyProgress, PaymentIntentState, RIDE_PRICE,
    ReceiptFor, ReceiptJob, ReceiptKind, RecoveryPoint, RefundOutcome, RefundRequest, RideId,
    RideStatus, TestCard, User,
};
use serde_json::Value;

use crate::support::{Harness, key};

fn cancel_of(user: &User, ride: RideId, key: &str) -> CancelRequest {
    CancelRequest {
        user: user.clone(),
        key: IdempotencyKey::parse(key).expect("test keys are valid"),
        ride_id: ride,
        reason: Some("plans changed".to_owned()),
        request_ip: Some("203.0.113.9".to_owned()),
        request_id: None,
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).expect("json")
}

/// Books a ride for the good user: its id.
async fn booked(h: &Harness, n: usize) -> RideId {
    let answer = h.book(&key(n)).await.expect("booked");
    assert_eq!(answer.response.status, 201);
    RideId(
        json(&answer.response.body)["ride"]["id"]
            .as_i64()
            .expect("id"),
    )
}

async fn ride(h: &Harness, id: RideId) -> domain::Ride {
    h.store.find_ride(id).await.expect("read").expect("ride")
}

fn cancel_keys(h: &Harness) -> Vec<domain::KeyRecord> {
    h.store
        .keys()
        .into_iter()
        .filter(|k| matches!(k.action, domain::KeyAction::CancelRide { .. }))
        .collect()
}

#[tokio::test]
async fn a_booked_ride_cancelled_within_the_window_is_refunded_in_full_once() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    h.advance(Duration::from_secs(300));
    let cancel = cancel_of(&h.good_user, id, &key(100));
    let first = h
        .create_ride
        .cancel(cancel.clone())
        .await
        .expect("cancelled");
    assert_eq!(first.response.status, 200);
    assert!(!first.replayed);
    let body = json(&first.response.body);
    assert_eq!(body["ride"]["status"], "cancelled");
    assert_eq!(body["ride"]["id"], id.0);
    assert_eq!(body["refund"]["amount"], RIDE_PRICE.amount_cents);
    assert_eq!(body["refund"]["status"], "succeeded");
    let refunds = h.gateway.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!(body["refund"]["id"], refunds[0].id.as_str());
    assert_eq!(refunds[0].amount_cents, RIDE_PRICE.amount_cents);
    assert_eq!(ride(&h, id).await.status, RideStatus::Cancelled);

    // A retry replays the stored bytes and refunds nothing more.
    let again = h.create_ride.cancel(cancel).await.expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.response, first.response);
    assert_eq!(h.gateway.refund_calls(), 1);

    // The cancellation's receipt is staged beside the booking's, with the
    // amount refunded; the audit trail records the cancel.
    let jobs = h.store.staged_jobs(100).await.expect("jobs");
    let kinds: Vec<_> = jobs
        .iter()
        .map(|j| (j.job.kind, j.job.amount_cents))
        .collect();
    assert_eq!(
        kinds,
        [
            (ReceiptKind::Ride, RIDE_PRICE.amount_cents),
            (ReceiptKind::Cancellation, RIDE_PRICE.amount_cents)
        ]
    );
    assert!(
        h.store
            .audit_records()
            .iter()
            .any(|r| r.action == "ride.cancelled" && r.resource_id == id)
    );
    // The refund is made under the key's downstream key.
    assert_eq!(
        refunds[0].idempotency_key,
        cancel_keys(&h)[0].downstream_key
    );
}

#[tokio::test]
async fn a_ride_cancelled_after_the_window_is_refunded_less_the_fee() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    h.advance(Duration::from_secs(301));
    let answer = h
        .create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled");
    assert_eq!(answer.response.status, 200);
    let expected = RIDE_PRICE.amount_cents - 500;
    assert_eq!(json(&answer.response.body)["refund"]["amount"], expected);
    assert_eq!(h.gateway.refunds()[0].amount_cents, expected);
}

#[tokio::test]
async fn a_ride_awaiting_authentication_has_its_payment_intent_cancelled_not_refunded() {
    let h = Harness::new().await;
    let answer = h
        .create_ride
        .run(h.request(&h.three_ds_user, &key(1)))
        .await
        .expect("answered");
    assert_eq!(answer.response.status, 402);
    let body = json(&answer.response.body);
    let id = RideId(body["ride"]["id"].as_i64().expect("id"));
    let intent = body["payment_intent"].as_str().expect("intent").to_owned();

    let cancelled = h
        .create_ride
        .cancel(cancel_of(&h.three_ds_user, id, &key(100)))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.response.status, 200);
    let body = json(&cancelled.response.body);
    assert_eq!(body["refund"]["amount"], 0);
    assert_eq!(body["refund"]["id"], Value::Null);
    assert_eq!(body["ride"]["status"], "cancelled");
    assert!(h.gateway.refunds().is_empty());
    assert_eq!(
        h.gateway
            .payment_intent_state(&intent)
            .await
            .expect("known"),
        PaymentIntentState::Failed,
        "the intent is cancelled at the processor"
    );
    assert!(
        !h.gateway.authenticate(&intent),
        "a cancelled intent can no longer be paid"
    );
}

#[tokio::test]
async fn a_second_cancel_under_another_key_is_409_stored_and_refunds_nothing() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled");
    let other = cancel_of(&h.good_user, id, &key(101));
    let refused = h.create_ride.cancel(other.clone()).await.expect("answered");
    assert_eq!(refused.response.status, 409);
    assert!(refused.response.body.contains("ride-already-cancelled"));
    let again = h.create_ride.cancel(other).await.expect("replayed");
    assert!(again.replayed, "the 409 is stored");
    assert_eq!(again.response, refused.response);
    assert_eq!(h.gateway.refunds().len(), 1);
}

#[tokio::test]
async fn a_ride_whose_payment_failed_is_not_cancellable() {
    let h = Harness::new().await;
    let answer = h
        .create_ride
        .run(h.request(&h.declined_user, &key(1)))
        .await
        .expect("answered");
    assert_eq!(answer.response.status, 402);
    let id = h.store.rides()[0].id;
    let refused = h
        .create_ride
        .cancel(cancel_of(&h.declined_user, id, &key(100)))
        .await
        .expect("answered");
    assert_eq!(refused.response.status, 409);
    assert!(refused.response.body.contains("ride-not-cancellable"));
    assert_eq!(ride(&h, id).await.status, RideStatus::PaymentFailed);
    assert_eq!(h.gateway.refund_calls(), 0);
}

#[tokio::test]
async fn another_riders_ride_or_no_ride_is_not_found_and_stores_nothing() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    let keys_before = h.store.keys().len();
    for (user, ride) in [(&h.declined_user, id), (&h.good_user, RideId(999_999))] {
        let error = h
            .create_ride
            .cancel(cancel_of(user, ride, &key(100)))
            .await
            .expect_err("not found");
        assert!(matches!(error, PhaseError::RideNotFound), "{error:?}");
    }
    assert_eq!(h.store.keys().len(), keys_before, "no key written");
    assert_eq!(ride(&h, id).await.status, RideStatus::Booked);
}

#[tokio::test]
async fn a_key_used_to_book_cannot_cancel_nor_one_used_to_cancel_another_ride() {
    let h = Harness::new().await;
    let first = booked(&h, 1).await;
    let second = booked(&h, 2).await;
    let error = h
        .create_ride
        .cancel(cancel_of(&h.good_user, first, &key(1)))
        .await
        .expect_err("reused");
    assert!(matches!(error, PhaseError::KeyReused), "{error:?}");
    h.create_ride
        .cancel(cancel_of(&h.good_user, first, &key(100)))
        .await
        .expect("cancelled");
    let error = h
        .create_ride
        .cancel(cancel_of(&h.good_user, second, &key(100)))
        .await
        .expect_err("reused");
    assert!(matches!(error, PhaseError::KeyReused), "{error:?}");
    let mut other_reason = cancel_of(&h.good_user, first, &key(100));
    other_reason.reason = None;
    let error = h
        .create_ride
        .cancel(other_reason)
        .await
        .expect_err("reused");
    assert!(matches!(error, PhaseError::KeyReused), "{error:?}");
    assert_eq!(ride(&h, second).await.status, RideStatus::Booked);
}

#[tokio::test]
async fn a_ride_still_being_charged_asks_to_retry_and_stores_nothing() {
    let h = Harness::new().await;
    let mut request = h.request(&h.good_user, &key(1));
    request.raise_error = true;
    h.create_ride.run(request).await.expect_err("simulated");
    let id = h.store.rides()[0].id;
    assert_eq!(ride(&h, id).await.status, RideStatus::Charging);
    let cancel = cancel_of(&h.good_user, id, &key(100));
    let error = h
        .create_ride
        .cancel(cancel.clone())
        .await
        .expect_err("in progress");
    assert!(
        matches!(error, PhaseError::PaymentInProgress { .. }),
        "{error:?}"
    );
    let key_record = &cancel_keys(&h)[0];
    assert_eq!(key_record.recovery_point(), RecoveryPoint::Started);
    assert!(key_record.locked_at.is_none(), "released for the retry");

    // Once the booking is paid, the same key cancels it.
    h.book(&key(1)).await.expect("booked");
    let answer = h.create_ride.cancel(cancel).await.expect("cancelled");
    assert_eq!(answer.response.status, 200);
}

/// Charges through the fake; loses the answer of the first `lose` refunds,
/// after the fake made them (or, `before`, without making them). With
/// `pending`, a refund made is answered `pending` and retrieved later in
/// whatever status `pending` then holds.
struct LosingRefunds {
    fake: Arc<FakeGateway>,
    lose: AtomicUsize,
    before: bool,
    pending: Option<std::sync::Mutex<domain::RefundStatus>>,
}

#[async_trait]
impl PaymentGateway for LosingRefunds {
    async fn create_customer(
        &self,
        email: &str,
        card: TestCard,
    ) -> Result<SavedCustomer, GatewayError> {
        self.fake.create_customer(email, card).await
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        self.fake.charge(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let lost = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost && self.before {
            return RefundOutcome::Unknown {
                reason: "connection reset before the refund".to_owned(),
            };
        }
        let outcome = self.fake.refund(request).await;
        if lost {
            return RefundOutcome::Unknown {
                reason: "timed out after the refund".to_owned(),
            };
        }
        match outcome {
            RefundOutcome::Refunded(refund) if self.pending.is_some() => {
                RefundOutcome::Refunded(domain::RefundRecord {
                    status: domain::RefundStatus::Pending,
                    ..refund
                })
            }
            other => other,
        }
    }

    async fn find_refund(&self, request: &RefundRequest) -> domain::ChargeSearch {
        self.fake.find_refund(request).await
    }

    async fn refund_status(&self, refund_id: &str) -> Result<domain::RefundStatus, GatewayError> {
        match &self.pending {
            Some(later) => Ok(*later.lock().expect("lock")),
            None => self.fake.refund_status(refund_id).await,
        }
    }
}

/// A harness whose first `lose` refunds lose their answers, after (or
/// `before`) the refund is made; and its gateway.
async fn losing_refunds(lose: usize, before: bool) -> (Harness, Arc<LosingRefunds>) {
    let fake = Arc::new(FakeGateway::new());
    let gateway = Arc::new(LosingRefunds {
        fake: fake.clone(),
        lose: AtomicUsize::new(lose),
        before,
        pending: None,
    });
    (
        Harness::with_gateway(fake, Some(gateway.clone())).await,
        gateway,
    )
}

async fn losing(lose: usize) -> Harness {
    losing_refunds(lose, false).await.0
}

#[tokio::test]
async fn an_unknown_refund_leaves_the_key_at_cancel_recorded_and_a_retry_refunds_once() {
    let h = losing(1).await;
    let id = booked(&h, 1).await;
    let cancel = cancel_of(&h.good_user, id, &key(100));
    let error = h
        .create_ride
        .cancel(cancel.clone())
        .await
        .expect_err("unknown");
    assert!(
        matches!(error, PhaseError::GatewayUnknown { .. }),
        "{error:?}"
    );
    let record = &cancel_keys(&h)[0];
    assert_eq!(record.recovery_point(), RecoveryPoint::CancelRecorded);
    assert!(record.unrecorded_charge_attempt().is_some());
    assert_eq!(ride(&h, id).await.status, RideStatus::Cancelling);
    assert_eq!(h.gateway.refunds().len(), 1, "the refund was made");

    let answer = h.create_ride.cancel(cancel).await.expect("resumed");
    assert_eq!(answer.response.status, 200);
    assert!(!answer.replayed);
    assert_eq!(
        h.gateway.refunds().len(),
        1,
        "the retry reused the downstream key: one refund"
    );
    assert_eq!(
        json(&answer.response.body)["refund"]["id"],
        h.gateway.refunds()[0].id.as_str()
    );
}

#[tokio::test]
async fn the_completer_finishes_a_stalled_cancel_and_the_reaper_keeps_it_until_then() {
    let h = losing(1).await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect_err("unknown");
    let reaper = ReapKeys::new(
        h.store.clone(),
        h.clock.clone(),
        Duration::from_secs(3600),
        1000,
    );
    h.advance(Duration::from_secs(3601));
    reaper.run_batch().await.expect("reaped");
    assert_eq!(
        cancel_keys(&h).len(),
        1,
        "a cancel whose refund may exist is kept"
    );
    let report = h.completer().run_batch().await.expect("completed");
    assert_eq!(report.finished, 1, "{report:?}");
    let record = &cancel_keys(&h)[0];
    let KeyProgress::Finished { response, .. } = &record.progress else {
        panic!("finished: {:?}", record.progress);
    };
    assert_eq!(response.status, 200);
    assert_eq!(ride(&h, id).await.status, RideStatus::Cancelled);
    assert_eq!(h.gateway.refunds().len(), 1);
}

#[tokio::test]
async fn two_cancels_racing_with_different_keys_make_one_refund() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    let (a, b) = tokio::join!(
        h.create_ride.cancel(cancel_of(&h.good_user, id, &key(100))),
        h.create_ride.cancel(cancel_of(&h.good_user, id, &key(101))),
    );
    let mut statuses = [
        a.expect("answered").response.status,
        b.expect("answered").response.status,
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(h.gateway.refunds().len(), 1);
}

#[derive(Default)]
struct Sent(std::sync::Mutex<Vec<(RideId, ReceiptKind, i64)>>);

#[async_trait]
impl ReceiptSender for Sent {
    async fn send(&self, _job_id: i64, receipt: &ReceiptJob) -> anyhow::Result<()> {
        self.0
            .lock()
            .expect("lock")
            .push((receipt.ride_id, receipt.kind, receipt.amount_cents));
        Ok(())
    }
}

#[tokio::test]
async fn the_worker_sends_the_booking_and_the_cancellation_receipt_once_each() {
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled");
    let enqueuer = h.enqueuer();
    assert_eq!(enqueuer.run_batch().await.expect("drained"), 2);
    let sender = Arc::new(Sent::default());
    let worker = h.worker(sender.clone());
    for _ in 0..2 {
        worker
            .work_next(Duration::from_millis(10))
            .await
            .expect("worked");
    }
    let sent = sender.0.lock().expect("lock").clone();
    assert_eq!(
        sent,
        [
            (id, ReceiptKind::Ride, RIDE_PRICE.amount_cents),
            (id, ReceiptKind::Cancellation, RIDE_PRICE.amount_cents)
        ]
    );
    for kind in ReceiptKind::ALL {
        let receipt = ReceiptFor { ride_id: id, kind };
        assert!(
            h.store.receipt_sent(receipt).await.expect("read"),
            "{receipt}"
        );
    }
    assert_eq!(h.store.staged_jobs(10).await.expect("jobs").len(), 0);
}

#[tokio::test]
async fn a_refund_reported_failed_by_a_signed_event_marks_the_ride_refund_failed_once() {
    use application::ports::{Clock, RidePayments};
    use domain::{PaymentApplied, RefundStatus, RefundUpdate, WebhookSecrets};
    let h = Harness::new().await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled");
    let refund = h.gateway.refunds()[0].id.clone();
    let receiver = application::ReceiveWebhook::new(
        h.store.clone(),
        h.clock.clone(),
        WebhookSecrets::parse("whsec_refunds").expect("secret"),
        domain::webhook::DEFAULT_TOLERANCE,
    );
    let now = h
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let event = |id: &str, refund: &str, status: &str| {
        format!(
            r#"{{"id":"{id}","object":"event","type":"charge.refund.updated","data":{{"object":{{"id":"{refund}","object":"refund","status":"{status}"}}}}}}"#
        )
        .into_bytes()
    };
    let deliver = |body: Vec<u8>| {
        let receiver = &receiver;
        async move {
            let signature = domain::webhook::signature_header("whsec_refunds", now, &body);
            receiver
                .run(Some(&signature), &body)
                .await
                .expect("accepted")
                .applied
        }
    };
    assert_eq!(
        deliver(event("evt_ok", &refund, "succeeded")).await,
        Some(PaymentApplied::Unchanged {
            status: RideStatus::Cancelled
        })
    );
    assert_eq!(
        deliver(event("evt_failed", &refund, "failed")).await,
        Some(PaymentApplied::Moved {
            from: RideStatus::Cancelled,
            to: RideStatus::RefundFailed
        })
    );
    assert_eq!(ride(&h, id).await.status, RideStatus::RefundFailed);
    assert_eq!(
        deliver(event("evt_failed", &refund, "failed")).await,
        Some(PaymentApplied::Duplicate)
    );
    assert_eq!(
        deliver(event("evt_other", "re_nobody", "failed")).await,
        Some(PaymentApplied::UnknownIntent)
    );
    let status = h
        .store
        .find_cancellation(id)
        .await
        .expect("read")
        .and_then(|c| c.refund)
        .map(|r| r.status);
    assert_eq!(status, Some(RefundStatus::Failed));
    // The same rule through the port directly: a late success moves nothing back.
    let late = RefundUpdate {
        event_id: Some("evt_late".into()),
        event_type: "refund.updated".into(),
        refund_id: refund,
        status: RefundStatus::Succeeded,
    };
    assert_eq!(
        h.store
            .apply_refund(&late, h.clock.now())
            .await
            .expect("applied"),
        PaymentApplied::Unchanged {
            status: RideStatus::RefundFailed
        }
    );
}

/// A cancel whose refund answer was lost, left past the review window,
/// settled from the gateway's records: its status and the ride's.
async fn reviewed_cancel(refund_made: bool) -> (u16, RideStatus, usize) {
    use application::{ReconcileKeys, Settlement};
    let (h, gateway) = losing_refunds(usize::MAX, !refund_made).await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect_err("unknown");
    h.advance(crate::support::REVIEW_WINDOW + Duration::from_secs(1));
    let report = h.completer().run_batch().await.expect("completer");
    assert_eq!(
        report.finished, 0,
        "past the window: a person's, not the completer's"
    );
    let reconcile = ReconcileKeys::new(
        h.store.clone(),
        h.store.clone(),
        gateway,
        h.clock.clone(),
        h.create_ride.clone(),
        crate::support::settings().review,
        domain::ReconcilePolicy {
            lock: domain::LockPolicy {
                lock_timeout: crate::support::LOCK_TIMEOUT,
            },
            search_lag: Duration::from_secs(60),
        },
    );
    let settled = reconcile.settle_all(10).await.expect("settled");
    let [(_, Settlement::Settled { status })] = settled.as_slice() else {
        panic!("one cancel settled: {settled:?}");
    };
    (
        *status,
        ride(&h, id).await.status,
        h.gateway.refunds().len(),
    )
}

#[tokio::test]
async fn a_cancel_awaiting_review_is_finished_from_the_refund_the_gateway_holds() {
    assert_eq!(reviewed_cancel(true).await, (200, RideStatus::Cancelled, 1));
}

#[tokio::test]
async fn a_cancel_awaiting_review_with_no_refund_made_ends_refund_failed_for_a_person() {
    assert_eq!(
        reviewed_cancel(false).await,
        (502, RideStatus::RefundFailed, 0)
    );
}

#[tokio::test]
async fn the_sync_pass_marks_a_pending_refund_that_failed_and_rechecks_one_still_pending() {
    use application::SyncPayments;
    let fake = Arc::new(FakeGateway::new());
    let gateway = Arc::new(LosingRefunds {
        fake: fake.clone(),
        lose: AtomicUsize::new(0),
        before: false,
        pending: Some(std::sync::Mutex::new(domain::RefundStatus::Pending)),
    });
    let h = Harness::with_gateway(fake, Some(gateway.clone())).await;
    let id = booked(&h, 1).await;
    let answer = h
        .create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled");
    assert_eq!(json(&answer.response.body)["refund"]["status"], "pending");
    let sync_after = Duration::from_secs(600);
    let sync = SyncPayments::new(
        h.store.clone(),
        gateway.clone(),
        h.clock.clone(),
        sync_after,
    );
    assert_eq!(
        sync.run(100).await.expect("pass").refunds_checked,
        0,
        "too early"
    );
    h.advance(sync_after);
    let still = sync.run(100).await.expect("pass");
    assert_eq!((still.refunds_checked, still.refunds_failed), (1, 0));
    assert_eq!(
        sync.run(100).await.expect("pass").refunds_checked,
        0,
        "checked: not again before another period"
    );
    *gateway
        .pending
        .as_ref()
        .expect("pending")
        .lock()
        .expect("lock") = domain::RefundStatus::Failed;
    h.advance(sync_after);
    let failed = sync.run(100).await.expect("pass");
    assert_eq!((failed.refunds_checked, failed.refunds_failed), (1, 1));
    assert_eq!(ride(&h, id).await.status, RideStatus::RefundFailed);
    h.advance(sync_after);
    assert_eq!(
        sync.run(100).await.expect("pass").refunds_checked,
        0,
        "a failed refund is settled: never checked again"
    );
}

/// Refunds made that Stripe reports failed at once (`failed` in its
/// answer to the create), and a refund status it cannot be asked for.
struct RefundsFailOrGoUnseen {
    fake: Arc<FakeGateway>,
}

#[async_trait]
impl PaymentGateway for RefundsFailOrGoUnseen {
    async fn create_customer(
        &self,
        email: &str,
        card: TestCard,
    ) -> Result<SavedCustomer, GatewayError> {
        self.fake.create_customer(email, card).await
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        self.fake.charge(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        match self.fake.refund(request).await {
            RefundOutcome::Refunded(refund) => RefundOutcome::Refunded(domain::RefundRecord {
                status: domain::RefundStatus::Failed,
                ..refund
            }),
            other => other,
        }
    }

    async fn refund_status(&self, _refund_id: &str) -> Result<domain::RefundStatus, GatewayError> {
        Err(GatewayError::Unknown("Stripe did not answer".to_owned()))
    }
}

#[tokio::test]
async fn a_refund_that_fails_at_once_ends_the_cancel_refund_failed_not_cancelled() {
    let fake = Arc::new(FakeGateway::new());
    let gateway = Arc::new(RefundsFailOrGoUnseen { fake: fake.clone() });
    let h = Harness::with_gateway(fake, Some(gateway)).await;
    let id = booked(&h, 1).await;
    let answer = h
        .create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("answered");
    assert_eq!(answer.response.status, 502, "{}", answer.response.body);
    assert!(
        answer.response.body.contains("refund-refused"),
        "{}",
        answer.response.body
    );
    assert_eq!(ride(&h, id).await.status, RideStatus::RefundFailed);
}

#[tokio::test]
async fn a_pending_refund_whose_status_cannot_be_read_is_counted_unknown_and_asked_again() {
    use application::SyncPayments;
    let fake = Arc::new(FakeGateway::new());
    let pending = Arc::new(LosingRefunds {
        fake: fake.clone(),
        lose: AtomicUsize::new(0),
        before: false,
        pending: Some(std::sync::Mutex::new(domain::RefundStatus::Pending)),
    });
    let h = Harness::with_gateway(fake.clone(), Some(pending)).await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect("cancelled, its refund pending");
    let sync_after = Duration::from_secs(600);
    let blind = Arc::new(RefundsFailOrGoUnseen { fake });
    let sync = SyncPayments::new(h.store.clone(), blind, h.clock.clone(), sync_after);
    h.advance(sync_after);
    for _ in 0..2 {
        let report = sync.run(100).await.expect("pass");
        assert_eq!(
            (report.refunds_unknown, report.refunds_checked),
            (1, 0),
            "{report:?}"
        );
    }
    assert_eq!(ride(&h, id).await.status, RideStatus::Cancelled);
}

#[tokio::test]
async fn a_cancel_key_is_not_settled_as_a_booking_and_stays_for_the_right_resolution() {
    use application::ReviewResolution;
    let (h, _) = losing_refunds(usize::MAX, true).await;
    let id = booked(&h, 1).await;
    h.create_ride
        .cancel(cancel_of(&h.good_user, id, &key(100)))
        .await
        .expect_err("unknown");
    h.advance(crate::support::REVIEW_WINDOW + Duration::from_secs(1));
    let cancel_key = h
        .store
        .keys()
        .into_iter()
        .find(|record| record.key.as_str() == key(100))
        .expect("the cancel's key")
        .id;
    for wrong in [
        ReviewResolution::Charged {
            charge_id: "ch_x".to_owned(),
            payment_intent_id: None,
        },
        ReviewResolution::NotCharged,
    ] {
        let error = h
            .create_ride
            .resolve_review(cancel_key, wrong)
            .await
            .expect_err("a cancel key cannot be settled as a booking");
        crate::support::assert_refused_as_the_other_kind(&error);
    }
    let settled = h
        .create_ride
        .resolve_review(cancel_key, ReviewResolution::NotRefunded)
        .await
        .expect("resolve")
        .expect("still awaiting review");
    assert_eq!(settled.response.status, 502);
    assert_eq!(ride(&h, id).await.status, RideStatus::RefundFailed);
}
