//! Reconcile: keys awaiting review settled from what the payment gateway
//! holds, on the in-memory adapters with a manual clock.

use crate::support;

use application::ports::KeyViews;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapters::memory::FakeGateway;
use application::ports::{GatewayError, Keys, PaymentGateway};
use application::{PhaseError, ReconcileKeys, Settlement};
use async_trait::async_trait;
use domain::{
    ChargeOutcome, ChargeRequest, ChargeSearch, KeyId, LockPolicy, ReconcilePolicy, Reconciliation,
    RecoveryPoint,
};
use support::{Harness, LOCK_TIMEOUT, REVIEW_WINDOW, key};

const SEARCH_LAG: Duration = Duration::from_secs(60);

/// Loses every answer: the first charge is made before its answer is lost,
/// every later one is lost before the charge. Searches go to the fake.
struct LosesAnswers {
    fake: Arc<FakeGateway>,
    calls: AtomicUsize,
}

#[async_trait]
impl PaymentGateway for LosesAnswers {
    async fn create_customer(
        &self,
        email: &str,
        card: domain::TestCard,
    ) -> Result<application::ports::SavedCustomer, GatewayError> {
        self.fake.create_customer(email, card).await
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            let made = self.fake.charge(request).await;
            assert!(matches!(made, ChargeOutcome::Charged { .. }), "{made:?}");
        }
        ChargeOutcome::Unknown {
            reason: "answer lost".into(),
        }
    }

    async fn find_charges(&self, downstream_key: &str) -> ChargeSearch {
        self.fake.find_charges(downstream_key).await
    }
}

struct Reconciling {
    h: Harness,
    fake: Arc<FakeGateway>,
    reconcile: ReconcileKeys,
}

async fn reconciling(searching: Option<Arc<dyn PaymentGateway>>) -> Reconciling {
    let fake = Arc::new(FakeGateway::new());
    let losing: Arc<dyn PaymentGateway> = Arc::new(LosesAnswers {
        fake: fake.clone(),
        calls: AtomicUsize::new(0),
    });
    let h = Harness::with_gateway(fake.clone(), Some(losing.clone())).await;
    let reconcile = ReconcileKeys::new(
        h.store.clone(),
        h.store.clone(),
        searching.unwrap_or(losing),
        h.clock.clone(),
        h.create_ride.clone(),
        support::settings().review,
        ReconcilePolicy {
            lock: LockPolicy {
                lock_timeout: LOCK_TIMEOUT,
            },
            search_lag: SEARCH_LAG,
        },
    );
    Reconciling { h, fake, reconcile }
}

impl Reconciling {
    /// Two requests whose answers were lost: the first charged, the second not.
    async fn two_lost_answers(&self) -> (KeyId, KeyId) {
        for n in [1, 2] {
            let error = self.h.book(&key(n)).await.unwrap_err();
            assert!(
                matches!(error, PhaseError::GatewayUnknown { .. }),
                "{error:?}"
            );
        }
        let keys = self.h.store.keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(self.fake.charges().len(), 1);
        let id = |n: usize| {
            keys.iter()
                .find(|k| k.key.as_str() == key(n))
                .expect("stored")
                .id
        };
        (id(1), id(2))
    }
}

#[tokio::test]
async fn keys_past_the_window_are_settled_with_the_charge_found_or_ended_once_none_can_be_missed() {
    let r = reconciling(None).await;
    let (charged, uncharged) = r.two_lost_answers().await;
    assert!(
        r.reconcile.examine(10).await.expect("examined").is_empty(),
        "inside the gateway's window the completer retries them"
    );

    r.h.advance(REVIEW_WINDOW + Duration::from_secs(1));
    // The client retries the uncharged key: told to wait for review, and
    // the key was run a moment ago, so a charge it made could still be
    // missing from the search.
    let retry = r.h.book(&key(2)).await.unwrap_err();
    assert!(matches!(retry, PhaseError::NeedsReview), "{retry:?}");

    let findings = r.reconcile.examine(10).await.expect("examined");
    assert_eq!(findings.len(), 2);
    let verdict = |id: KeyId| {
        findings
            .iter()
            .find(|f| f.record.id == id)
            .map(|f| f.verdict.clone())
            .expect("listed")
    };
    let charge_id = r.fake.charges()[0].id.clone();
    let payment_intent_id = r.fake.charges()[0].payment_intent_id.clone();
    assert!(payment_intent_id.is_some(), "paid through a PaymentIntent");
    assert_eq!(
        verdict(charged),
        Reconciliation::Charged {
            charge_id: charge_id.clone(),
            payment_intent_id,
        }
    );
    assert!(
        matches!(verdict(uncharged), Reconciliation::Undecided { reason } if reason.contains("searchable")),
        "nothing found is no proof yet"
    );

    let settled = r.reconcile.settle_all(10).await.expect("settled");
    let outcome = |id: KeyId| {
        settled
            .iter()
            .find(|(f, _)| f.record.id == id)
            .map(|(_, s)| s.clone())
            .expect("listed")
    };
    assert_eq!(outcome(charged), Settlement::Settled { status: 201 });
    assert!(matches!(outcome(uncharged), Settlement::Left { .. }));
    let replay = r.h.book(&key(1)).await.expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.response.status, 201);
    assert!(
        replay.response.body.contains(&charge_id),
        "{}",
        replay.response.body
    );
    assert_eq!(r.h.staged_job_count().await, 1, "its receipt is staged");

    // Once every charge the key could have made is searchable: none.
    r.h.advance(LOCK_TIMEOUT + SEARCH_LAG);
    assert_eq!(
        r.reconcile.settle(uncharged).await.expect("settled"),
        Settlement::Settled { status: 502 }
    );
    let replay = r.h.book(&key(2)).await.expect("replayed");
    assert_eq!((replay.response.status, replay.replayed), (502, true));
    assert_eq!(
        r.reconcile.settle(uncharged).await.expect("settled"),
        Settlement::Skipped,
        "a finished key does not await review"
    );
    assert!(r.reconcile.examine(10).await.expect("examined").is_empty());
    assert_eq!(r.fake.charges().len(), 1, "reconciling charges nothing");
    assert_eq!(r.fake.charge_calls(), 1);
}

#[tokio::test]
async fn a_gateway_that_cannot_search_leaves_every_key_for_a_person_untouched() {
    let blind: Arc<dyn PaymentGateway> = Arc::new(FakeGateway::new().one_of_several());
    let r = reconciling(Some(blind)).await;
    let (charged, uncharged) = r.two_lost_answers().await;
    r.h.advance(REVIEW_WINDOW + LOCK_TIMEOUT + SEARCH_LAG);
    let settled = r.reconcile.settle_all(10).await.expect("settled");
    assert_eq!(settled.len(), 2);
    for (finding, settlement) in &settled {
        assert!(matches!(finding.search, ChargeSearch::Unknown { .. }));
        assert!(
            matches!(settlement, Settlement::Left { reason } if reason.contains("could not be asked")),
            "{settlement:?}"
        );
    }
    for id in [charged, uncharged] {
        let record = r.h.store.find_key(id).await.expect("read").expect("kept");
        assert_eq!(record.recovery_point(), RecoveryPoint::RideCreated);
    }
}

#[tokio::test]
async fn a_key_held_by_a_request_is_skipped_and_an_unknown_key_too() {
    let r = reconciling(None).await;
    let (charged, _) = r.two_lost_answers().await;
    r.h.advance(REVIEW_WINDOW + Duration::from_secs(1));
    let lease =
        r.h.store
            .lock_for_completion(
                charged,
                application::ports::Clock::now(r.h.clock.as_ref()),
                domain::CompleterPolicy {
                    min_age: Duration::ZERO,
                    min_idle: Duration::ZERO,
                    lock: LockPolicy {
                        lock_timeout: LOCK_TIMEOUT,
                    },
                    review: domain::ReviewPolicy {
                        review_after: Duration::from_secs(u64::from(u32::MAX)),
                    },
                },
            )
            .await
            .expect("locked");
    assert!(lease.is_some(), "a request holds the key now");
    assert_eq!(
        r.reconcile.settle(charged).await.expect("settle"),
        Settlement::Skipped
    );
    assert_eq!(
        r.reconcile.settle(KeyId(999)).await.expect("settle"),
        Settlement::Skipped
    );
}

#[tokio::test]
async fn a_reconciling_completer_settles_the_keys_it_reports_for_review_once() {
    let r = reconciling(None).await;
    let (charged, uncharged) = r.two_lost_answers().await;
    r.h.advance(REVIEW_WINDOW + Duration::from_secs(1));
    let completer = r.h.completer().reconciling(r.reconcile.clone());
    let report = completer.run_batch().await.expect("batch");
    assert_eq!(
        (report.needs_review, report.reconciled, report.picked),
        (2, 2, 0)
    );
    for (id, status) in [(charged, 201), (uncharged, 502)] {
        let record = r.h.store.find_key(id).await.expect("read").expect("kept");
        assert_eq!(record.progress.response().map(|r| r.status), Some(status));
    }
    assert_eq!(r.fake.charge_calls(), 1, "reconciling charges nothing");
    let again = completer.run_batch().await.expect("batch");
    assert_eq!((again.needs_review, again.reconciled), (0, 0));
}

#[tokio::test]
async fn a_key_retried_just_before_its_report_is_settled_without_a_charge_on_a_later_check() {
    let r = reconciling(None).await;
    let (charged, uncharged) = r.two_lost_answers().await;
    // The completer retries the uncharged key shortly before the review
    // window closes: its last call is then too recent for "nothing found"
    // to prove "no charge" when the key is reported.
    r.h.advance(REVIEW_WINDOW - Duration::from_secs(10));
    let completer = r.h.completer().reconciling(r.reconcile.clone());
    let retried = completer.run_batch().await.expect("batch");
    assert_eq!((retried.picked, retried.failed), (2, 2), "{retried:?}");
    r.h.advance(Duration::from_secs(11));
    let reported = completer.run_batch().await.expect("batch");
    assert_eq!(
        (reported.needs_review, reported.checked, reported.reconciled),
        (2, 2, 1),
        "the charged key settled at once, the other too recent"
    );
    let status = |record: Option<domain::KeyRecord>| {
        record
            .expect("kept")
            .progress
            .response()
            .map(|response| response.status)
    };
    assert_eq!(
        status(r.h.store.find_key(charged).await.expect("read")),
        Some(201)
    );
    assert_eq!(
        status(r.h.store.find_key(uncharged).await.expect("read")),
        None
    );
    // Not due yet: nothing checked.
    r.h.advance(LOCK_TIMEOUT + SEARCH_LAG - Duration::from_secs(1));
    let early = completer.run_batch().await.expect("batch");
    assert_eq!((early.checked, early.reconciled), (0, 0), "{early:?}");
    // Once a lock timeout and the search lag have passed since the report,
    // the search's "nothing" is proof: ended without a charge.
    r.h.advance(Duration::from_secs(1));
    let later = completer.run_batch().await.expect("batch");
    assert_eq!(
        (later.needs_review, later.checked, later.reconciled),
        (0, 1, 1),
        "{later:?}"
    );
    assert_eq!(
        status(r.h.store.find_key(uncharged).await.expect("read")),
        Some(502)
    );
    assert_eq!(r.fake.charges().len(), 1, "reconciling charges nothing");
}

#[tokio::test]
async fn a_key_the_gateway_never_answers_for_is_checked_a_bounded_number_of_times_backing_off() {
    let blind: Arc<dyn PaymentGateway> = Arc::new(FakeGateway::new().one_of_several());
    let r = reconciling(Some(blind)).await;
    r.two_lost_answers().await;
    r.h.advance(REVIEW_WINDOW + Duration::from_secs(1));
    let completer = r.h.completer().reconciling(r.reconcile.clone());
    let checks = r.reconcile.checks();
    let mut checked_at = Vec::new();
    // Six hours in steps of a minute: each check comes when due, no sooner.
    for minute in 0..360u64 {
        let report = completer.run_batch().await.expect("batch");
        assert_eq!(report.reconciled, 0);
        if report.checked > 0 {
            assert_eq!(report.checked, 2, "both keys, on one schedule");
            checked_at.push(minute);
        }
        r.h.advance(Duration::from_secs(60));
    }
    // Each check's gap counts from the minute it was made at.
    let expected: Vec<u64> = (0..checks.max_checks)
        .scan(0, |at, done| {
            *at = (*at * 60 + checks.gap_after(done).as_secs()).div_ceil(60);
            Some(*at)
        })
        .collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(checked_at, expected, "at the report, then backing off");
    assert_eq!(
        r.reconcile.examine(10).await.expect("listed").len(),
        2,
        "a person's now"
    );
}

#[tokio::test]
async fn a_key_the_gateway_cannot_answer_for_stays_for_a_person_after_the_report() {
    let blind: Arc<dyn PaymentGateway> = Arc::new(FakeGateway::new().one_of_several());
    let r = reconciling(Some(blind)).await;
    let (charged, _) = r.two_lost_answers().await;
    r.h.advance(REVIEW_WINDOW + Duration::from_secs(1));
    let report =
        r.h.completer()
            .reconciling(r.reconcile.clone())
            .run_batch()
            .await
            .expect("batch");
    assert_eq!((report.needs_review, report.reconciled), (2, 0));
    let record =
        r.h.store
            .find_key(charged)
            .await
            .expect("read")
            .expect("kept");
    assert_eq!(record.recovery_point(), RecoveryPoint::RideCreated);
    assert_eq!(r.reconcile.examine(10).await.expect("listed").len(), 2);
}
