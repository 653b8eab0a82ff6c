//! Reconciling a key awaiting review with what the payment processor holds.
//!
//! A key goes to review when its charge was attempted, the answer was lost,
//! and the processor no longer remembers the downstream idempotency key, so
//! asking again could charge twice. The processor can still be asked what
//! exists: every charge carries the downstream key in its metadata. Its
//! search is eventually consistent, though: a charge made a moment ago may
//! not be found yet, so "nothing found" proves "no charge" only once every
//! charge the key could have made is old enough to be searchable.

use std::time::{Duration, SystemTime};

use crate::cancel::{Giveback, RefundRecord};
use crate::charge::RIDE_PRICE;
use crate::idempotency::{KeyRecord, LockPolicy};
use crate::payment::PaymentIntentState;

/// A charge the processor holds, as it describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCharge {
    pub id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub customer_id: String,
    /// `succeeded` (the money moved), `pending` or `failed`.
    pub status: String,
    /// The PaymentIntent the charge was made for (PaymentIntents only).
    pub payment_intent_id: Option<String>,
}

impl FoundCharge {
    pub const SUCCEEDED: &'static str = "succeeded";
    pub const FAILED: &'static str = "failed";
}

/// What the processor answered when asked for the charges made under one
/// downstream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeSearch {
    /// The charges its search finds (none, normally one).
    Found(Vec<FoundCharge>),
    /// For a cancel key: the refunds of the ride's payment made under the
    /// key (its metadata), as the processor lists them (none, normally
    /// one).
    Refunds(Vec<RefundRecord>),
    /// For a cancel key whose PaymentIntent was to be cancelled: the
    /// intent as it is now.
    Intent(PaymentIntentState),
    /// It could not be asked, or its answer could not be read.
    Unknown { reason: String },
}

/// In one word or a list, for a log line, the CLI or the console:
/// `no-charge-found`, `ch_1:succeeded:2000usd,ch_2:failed:2000usd`, or
/// `unknown` (the reason is the verdict's).
impl std::fmt::Display for ChargeSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChargeSearch::Found(charges) if charges.is_empty() => f.write_str("no-charge-found"),
            ChargeSearch::Found(charges) => {
                for (n, c) in charges.iter().enumerate() {
                    let separator = if n == 0 { "" } else { "," };
                    write!(
                        f,
                        "{separator}{}:{}:{}{}",
                        c.id, c.status, c.amount_cents, c.currency
                    )?;
                }
                Ok(())
            }
            ChargeSearch::Refunds(refunds) if refunds.is_empty() => f.write_str("no-refund-found"),
            ChargeSearch::Refunds(refunds) => {
                for (n, r) in refunds.iter().enumerate() {
                    let separator = if n == 0 { "" } else { "," };
                    write!(f, "{separator}{}:{}", r.refund_id, r.status)?;
                }
                Ok(())
            }
            ChargeSearch::Intent(state) => write!(f, "intent:{}", state.ride_status()),
            ChargeSearch::Unknown { .. } => f.write_str("unknown"),
        }
    }
}

/// The reconciling completer's schedule for a key awaiting review: checked
/// when reported, then again `first_gap` later, each gap after twice the
/// one before, `max_checks` times in all; then the key is a person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewChecks {
    pub first_gap: Duration,
    pub max_checks: u32,
}

impl ReviewChecks {
    /// With the defaults (a 90 s lock timeout, a 1 min search lag) the
    /// sixth and last check comes about 1 h 20 min after the report.
    pub const MAX_CHECKS: u32 = 6;

    /// The gap after the check that made `done` checks (1 for the first):
    /// none before the first, then `first_gap`, doubled each time after.
    pub fn gap_after(&self, done: u32) -> Duration {
        match done {
            0 => Duration::ZERO,
            n => self.first_gap.saturating_mul(1 << (n - 1).min(16)),
        }
    }

    /// Whether a key checked `done` times is checked again.
    pub fn another(&self, done: u32) -> bool {
        done < self.max_checks
    }

    /// The gap after each check, in order (`gap_after(1)` to
    /// `gap_after(max_checks)`): the whole schedule, for a store that
    /// keeps it.
    pub fn gaps(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..=self.max_checks).map(|done| self.gap_after(done))
    }
}

/// What may be done with a key awaiting review, given the processor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciliation {
    /// The charge exists: record it and book the ride.
    Charged {
        charge_id: String,
        payment_intent_id: Option<String>,
    },
    /// The processor confirms no money moved: end the request without a charge.
    NotCharged,
    /// A cancel's refund exists (or its PaymentIntent is cancelled:
    /// `None`): record it and finish the cancel (200).
    Refunded { refund: Option<RefundRecord> },
    /// No refund was made under the key (or the intent was not
    /// cancelled): finish the cancel with a 502, its ride
    /// `refund_failed` for a person to refund by hand.
    NotRefunded,
    /// No definitive answer; the key stays for a person, with the reason.
    Undecided { reason: String },
}

/// How long after a charge is made the processor's search may still miss
/// it, and the lock rule that bounds when the key's last charge could have
/// been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePolicy {
    pub lock: LockPolicy,
    pub search_lag: Duration,
}

impl ReconcilePolicy {
    /// From this instant a search shows every charge the key can have made.
    /// Every gateway call is noted on the key just before it is made, by
    /// the store's clock and under the lease (a holder whose lease was
    /// taken over cannot note, so cannot call), and ends within the lock
    /// timeout (the settings check that one call with its retries fits), so
    /// no charge for the key is younger than its last noted call plus the
    /// lock timeout; the search catches up `search_lag` later. A key from
    /// before calls were noted counts from `last_run_at`, the process's
    /// clock when it took the lock.
    pub fn searchable_from(&self, record: &KeyRecord) -> SystemTime {
        let last_call = record
            .progress
            .last_call_at()
            .map_or(record.last_run_at, |call| call.max(record.last_run_at));
        last_call + self.lock.lock_timeout + self.search_lag
    }

    /// When a reconciling completer asks again about a key it could not
    /// settle, and how often at most (`ReviewChecks`). The first check
    /// comes as the key is reported; the second once a lock timeout and
    /// the search lag have passed since, by which time "nothing found" is
    /// proof (a key awaiting review makes no new call, so its last call
    /// is older than its report); later ones back off, for a processor
    /// that could not be asked.
    pub fn review_checks(&self) -> ReviewChecks {
        ReviewChecks {
            first_gap: self.lock.lock_timeout + self.search_lag,
            max_checks: ReviewChecks::MAX_CHECKS,
        }
    }

    /// Decides from the processor's answer for `record`, whose rider pays
    /// through `customer_id`.
    pub fn judge(
        &self,
        record: &KeyRecord,
        customer_id: &str,
        search: &ChargeSearch,
        now: SystemTime,
    ) -> Reconciliation {
        let undecided = |reason: String| Reconciliation::Undecided { reason };
        let charges = match search {
            ChargeSearch::Unknown { reason } => {
                return undecided(format!(
                    "the payment processor could not be asked: {reason}"
                ));
            }
            ChargeSearch::Found(charges) => charges,
            other @ (ChargeSearch::Refunds(_) | ChargeSearch::Intent(_)) => {
                return undecided(format!(
                    "the processor's answer ({other}) is not about a charge"
                ));
            }
        };
        let succeeded: Vec<&FoundCharge> = charges
            .iter()
            .filter(|c| c.status == FoundCharge::SUCCEEDED)
            .collect();
        match succeeded.as_slice() {
            [charge] => {
                if charge.amount_cents != RIDE_PRICE.amount_cents
                    || charge.currency != RIDE_PRICE.currency
                    || charge.customer_id != customer_id
                {
                    return undecided(format!(
                        "charge {} is {} {} to {}, not {} {} to {customer_id}",
                        charge.id,
                        charge.amount_cents,
                        charge.currency,
                        charge.customer_id,
                        RIDE_PRICE.amount_cents,
                        RIDE_PRICE.currency
                    ));
                }
                return Reconciliation::Charged {
                    charge_id: charge.id.clone(),
                    payment_intent_id: charge.payment_intent_id.clone(),
                };
            }
            [] => {}
            several => {
                let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
                return undecided(format!(
                    "{} charges carry this key: {}",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        if let Some(other) = charges.iter().find(|c| c.status != FoundCharge::FAILED) {
            return undecided(format!("charge {} is {}", other.id, other.status));
        }
        let searchable = self.searchable_from(record);
        if now < searchable {
            let wait = searchable.duration_since(now).unwrap_or_default();
            return undecided(format!(
                "nothing found yet, but a charge made under this key may not be searchable for another {}s",
                wait.as_secs().max(1)
            ));
        }
        Reconciliation::NotCharged
    }
}

impl ReconcilePolicy {
    /// Decides a cancel key awaiting review from what the processor holds
    /// for its `giveback`: the refunds made under the key (listing them is
    /// read-after-write consistent, but a call may still be in flight
    /// until the last one noted plus the lock timeout, so "none" counts
    /// only from `searchable_from`), or its PaymentIntent's state.
    pub fn judge_cancel(
        &self,
        record: &KeyRecord,
        giveback: Giveback,
        search: &ChargeSearch,
        now: SystemTime,
    ) -> Reconciliation {
        let undecided = |reason: String| Reconciliation::Undecided { reason };
        match (giveback, search) {
            (_, ChargeSearch::Unknown { reason }) => undecided(format!(
                "the payment processor could not be asked: {reason}"
            )),
            (Giveback::Refund { .. }, ChargeSearch::Refunds(refunds)) => match refunds.as_slice() {
                [refund] => Reconciliation::Refunded {
                    refund: Some(refund.clone()),
                },
                [] if now < self.searchable_from(record) => undecided(
                    "nothing found yet, but a refund under this key may still be in flight"
                        .to_owned(),
                ),
                [] => Reconciliation::NotRefunded,
                several => undecided(format!(
                    "{} refunds carry this key: {}",
                    several.len(),
                    several
                        .iter()
                        .map(|r| r.refund_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            (Giveback::CancelPaymentIntent, ChargeSearch::Intent(state)) => match state {
                PaymentIntentState::Failed => Reconciliation::Refunded { refund: None },
                _ if now < self.searchable_from(record) => undecided(
                    "the PaymentIntent is not cancelled yet, but a cancel may still be in flight"
                        .to_owned(),
                ),
                _ => Reconciliation::NotRefunded,
            },
            (giveback, search) => undecided(format!(
                "the processor's answer ({search}) does not fit this cancel ({giveback:?})"
            )),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn review_checks_come_at_the_report_then_after_the_gap_doubling_a_bounded_number_of_times() {
        let checks = ReviewChecks {
            first_gap: Duration::from_secs(150),
            max_checks: 4,
        };
        let gaps: Vec<u64> = (0..5)
            .map(|done| checks.gap_after(done).as_secs())
            .collect();
        assert_eq!(gaps, [0, 150, 300, 600, 1200]);
        assert!(checks.another(3));
        assert!(!checks.another(4));
        let schedule: Vec<u64> = checks.gaps().map(|gap| gap.as_secs()).collect();
        assert_eq!(schedule, [150, 300, 600, 1200], "one gap after each check");
        assert_eq!(
            ReviewChecks {
                first_gap: Duration::MAX,
                max_checks: 40
            }
            .gap_after(40),
            Duration::MAX,
            "saturates, never panics"
        );
        let policy = ReconcilePolicy {
            lock: LockPolicy {
                lock_timeout: Duration::from_secs(90),
            },
            search_lag: Duration::from_secs(60),
        };
        assert_eq!(
            policy.review_checks(),
            ReviewChecks {
                first_gap: Duration::from_secs(150),
                max_checks: ReviewChecks::MAX_CHECKS
            }
        );
    }

    use super::*;
    use crate::cancel::RefundStatus;
    use crate::fingerprint::RequestFingerprint;
    use crate::idempotency::{IdempotencyKey, KeyId, KeyProgress};
    use crate::ride::{RideId, RideParams};
    use crate::user::UserId;

    const CUSTOMER: &str = "cus_rider";

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn policy() -> ReconcilePolicy {
        ReconcilePolicy {
            lock: LockPolicy {
                lock_timeout: Duration::from_secs(90),
            },
            search_lag: Duration::from_secs(60),
        }
    }

    fn record(last_run: u64) -> KeyRecord {
        let params = RideParams::from_numbers([0.0; 4]).expect("valid");
        KeyRecord {
            id: KeyId(7),
            user_id: UserId(1),
            key: IdempotencyKey::parse("k-0123456789abcdef0123").expect("valid"),
            fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
            action: crate::idempotency::KeyAction::BookRide(params),
            request_ip: None,
            request_id: None,
            progress: KeyProgress::RideCreated {
                ride_id: RideId(3),
                charge_attempted_at: Some(at(0)),
                last_call_at: None,
            },
            locked_at: None,
            lock_generation: 2,
            created_at: at(0),
            last_run_at: at(last_run),
            downstream_key: "rr-7".into(),
        }
    }

    fn charge(id: &str, status: &str) -> FoundCharge {
        FoundCharge {
            id: id.into(),
            amount_cents: RIDE_PRICE.amount_cents,
            currency: RIDE_PRICE.currency.into(),
            customer_id: CUSTOMER.into(),
            status: status.into(),
            payment_intent_id: None,
        }
    }

    fn judge(search: ChargeSearch, now: u64) -> Reconciliation {
        policy().judge(&record(100), CUSTOMER, &search, at(now))
    }

    fn is_undecided(verdict: &Reconciliation, words: &str) -> bool {
        matches!(verdict, Reconciliation::Undecided { reason } if reason.contains(words))
    }

    #[test]
    fn a_cancel_with_no_refund_found_is_ended_without_one_only_once_none_can_be_in_flight() {
        let giveback = Giveback::Refund { amount_cents: 1500 };
        let none = ChargeSearch::Refunds(Vec::new());
        // record(100): its last call counts from 100; a lock timeout (90 s)
        // and the search lag (60 s) later, "none" is proof.
        let early = policy().judge_cancel(&record(100), giveback, &none, at(249));
        assert!(is_undecided(&early, "may still be in flight"), "{early:?}");
        assert_eq!(
            policy().judge_cancel(&record(100), giveback, &none, at(250)),
            Reconciliation::NotRefunded
        );
    }

    #[test]
    fn an_intent_not_cancelled_is_proof_of_no_cancel_only_once_none_can_be_in_flight() {
        let giveback = Giveback::CancelPaymentIntent;
        let waiting = ChargeSearch::Intent(PaymentIntentState::RequiresAction);
        let early = policy().judge_cancel(&record(100), giveback, &waiting, at(249));
        assert!(is_undecided(&early, "may still be in flight"), "{early:?}");
        assert_eq!(
            policy().judge_cancel(&record(100), giveback, &waiting, at(250)),
            Reconciliation::NotRefunded
        );
        let cancelled = ChargeSearch::Intent(PaymentIntentState::Failed);
        assert_eq!(
            policy().judge_cancel(&record(100), giveback, &cancelled, at(0)),
            Reconciliation::Refunded { refund: None },
            "a cancelled intent is proof at any time"
        );
    }

    #[test]
    fn refunds_found_are_shown_in_one_word_or_a_list() {
        let refund = |id: &str, status| RefundRecord {
            refund_id: id.into(),
            status,
        };
        assert_eq!(
            ChargeSearch::Refunds(Vec::new()).to_string(),
            "no-refund-found"
        );
        assert_eq!(
            ChargeSearch::Refunds(vec![refund("re_1", RefundStatus::Succeeded)]).to_string(),
            "re_1:succeeded"
        );
        assert_eq!(
            ChargeSearch::Refunds(vec![
                refund("re_1", RefundStatus::Succeeded),
                refund("re_2", RefundStatus::Failed)
            ])
            .to_string(),
            "re_1:succeeded,re_2:failed"
        );
    }

    #[test]
    fn a_succeeded_charge_for_the_ride_is_recorded_whenever_it_is_found() {
        let found = ChargeSearch::Found(vec![charge("ch_1", "succeeded")]);
        let verdict = Reconciliation::Charged {
            charge_id: "ch_1".into(),
            payment_intent_id: None,
        };
        assert_eq!(judge(found.clone(), 100), verdict);
        assert_eq!(judge(found, 10_000), verdict);
    }

    #[test]
    fn a_charge_made_for_a_payment_intent_books_the_ride_with_its_intent() {
        let mut found = charge("ch_1", "succeeded");
        found.payment_intent_id = Some("pi_1".into());
        assert_eq!(
            judge(ChargeSearch::Found(vec![found]), 100),
            Reconciliation::Charged {
                charge_id: "ch_1".into(),
                payment_intent_id: Some("pi_1".into()),
            }
        );
    }

    #[test]
    fn the_window_counts_from_the_last_noted_call_not_from_the_lock() {
        // Locked at 100 by the process's clock; the call noted (by the
        // database's clock, under the lease) at 180: a charge may reach
        // Stripe until 180 + 90 and show up in search until 330.
        let mut late = record(100);
        if let KeyProgress::RideCreated { last_call_at, .. } = &mut late.progress {
            *last_call_at = Some(at(180));
        }
        assert_eq!(policy().searchable_from(&late), at(330));
        let none = ChargeSearch::Found(vec![]);
        let early = policy().judge(&late, CUSTOMER, &none, at(300));
        assert!(is_undecided(&early, "for another 30s"), "{early:?}");
        assert_eq!(
            policy().judge(&late, CUSTOMER, &none, at(330)),
            Reconciliation::NotCharged
        );
        // A noted call older than the lock (an earlier attempt) counts from
        // the lock.
        if let KeyProgress::RideCreated { last_call_at, .. } = &mut late.progress {
            *last_call_at = Some(at(50));
        }
        assert_eq!(policy().searchable_from(&late), at(250));
    }

    #[test]
    fn nothing_found_proves_no_charge_only_once_every_charge_is_searchable() {
        // last run 100 s, lock timeout 90 s, search lag 60 s: 250 s.
        assert_eq!(policy().searchable_from(&record(100)), at(250));
        let none = ChargeSearch::Found(vec![]);
        let early = judge(none.clone(), 249);
        assert!(is_undecided(&early, "for another 1s"), "{early:?}");
        assert!(is_undecided(&judge(none.clone(), 100), "for another 150s"));
        assert_eq!(judge(none.clone(), 250), Reconciliation::NotCharged);
        assert_eq!(judge(none, 5_000), Reconciliation::NotCharged);
    }

    #[test]
    fn a_failed_charge_counts_as_no_money_once_searchable_and_a_pending_one_never_does() {
        let failed = ChargeSearch::Found(vec![charge("ch_f", "failed")]);
        assert!(is_undecided(&judge(failed.clone(), 200), "searchable"));
        assert_eq!(judge(failed, 300), Reconciliation::NotCharged);
        let pending = ChargeSearch::Found(vec![charge("ch_p", "pending")]);
        assert!(is_undecided(&judge(pending, 300), "ch_p is pending"));
        let both = ChargeSearch::Found(vec![charge("ch_f", "failed"), charge("ch_s", "succeeded")]);
        assert_eq!(
            judge(both, 300),
            Reconciliation::Charged {
                charge_id: "ch_s".into(),
                payment_intent_id: None,
            }
        );
    }

    #[test]
    fn two_succeeded_charges_or_one_that_does_not_match_the_ride_go_to_a_person() {
        let two = ChargeSearch::Found(vec![
            charge("ch_1", "succeeded"),
            charge("ch_2", "succeeded"),
        ]);
        assert!(is_undecided(
            &judge(two, 300),
            "2 charges carry this key: ch_1, ch_2"
        ));
        for change in [
            |c: &mut FoundCharge| c.amount_cents += 1,
            |c: &mut FoundCharge| c.currency = "eur".into(),
            |c: &mut FoundCharge| c.customer_id = "cus_other".into(),
        ] {
            let mut odd = charge("ch_odd", "succeeded");
            change(&mut odd);
            let verdict = judge(ChargeSearch::Found(vec![odd]), 300);
            assert!(is_undecided(&verdict, "charge ch_odd is"), "{verdict:?}");
        }
    }

    #[test]
    fn a_search_reads_as_one_word_or_a_list() {
        assert_eq!(ChargeSearch::Found(vec![]).to_string(), "no-charge-found");
        let two = ChargeSearch::Found(vec![charge("ch_1", "succeeded"), charge("ch_2", "failed")]);
        assert_eq!(
            two.to_string(),
            "ch_1:succeeded:2000usd,ch_2:failed:2000usd"
        );
        let unknown = ChargeSearch::Unknown {
            reason: "timed out".into(),
        };
        assert_eq!(unknown.to_string(), "unknown");
    }

    #[test]
    fn an_unanswered_search_decides_nothing() {
        let verdict = judge(
            ChargeSearch::Unknown {
                reason: "timed out".into(),
            },
            10_000,
        );
        assert!(is_undecided(&verdict, "could not be asked: timed out"));
    }

    #[test]
    fn a_cancel_is_settled_by_its_one_refund_or_after_the_lag_by_none() {
        use crate::cancel::RefundStatus;
        let refund = Giveback::Refund { amount_cents: 2000 };
        let key = record(0);
        let found = RefundRecord {
            refund_id: "re_1".into(),
            status: RefundStatus::Succeeded,
        };
        let judge = |giveback, search: ChargeSearch, now| {
            policy().judge_cancel(&key, giveback, &search, now)
        };
        assert_eq!(
            judge(refund, ChargeSearch::Refunds(vec![found.clone()]), at(1)),
            Reconciliation::Refunded {
                refund: Some(found.clone())
            }
        );
        let searchable = policy().searchable_from(&key);
        let just_before = searchable - Duration::from_secs(1);
        assert!(matches!(
            judge(refund, ChargeSearch::Refunds(vec![]), just_before),
            Reconciliation::Undecided { .. }
        ));
        assert_eq!(
            judge(refund, ChargeSearch::Refunds(vec![]), searchable),
            Reconciliation::NotRefunded
        );
        assert!(matches!(
            judge(
                refund,
                ChargeSearch::Refunds(vec![found.clone(), found]),
                searchable
            ),
            Reconciliation::Undecided { .. }
        ));
        let intent = Giveback::CancelPaymentIntent;
        assert_eq!(
            judge(
                intent,
                ChargeSearch::Intent(PaymentIntentState::Failed),
                at(1)
            ),
            Reconciliation::Refunded { refund: None }
        );
        assert_eq!(
            judge(
                intent,
                ChargeSearch::Intent(PaymentIntentState::RequiresAction),
                searchable
            ),
            Reconciliation::NotRefunded
        );
        assert!(matches!(
            judge(
                intent,
                ChargeSearch::Unknown {
                    reason: "down".into()
                },
                searchable
            ),
            Reconciliation::Undecided { .. }
        ));
        assert!(matches!(
            judge(refund, ChargeSearch::Found(vec![]), searchable),
            Reconciliation::Undecided { .. }
        ));
    }
}
