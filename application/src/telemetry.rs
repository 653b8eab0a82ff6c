//! Every metric the service exports: its name, kind, help text, the label
//! values it takes and which part of a process exports it. Each part calls
//! `export_from_start` as it starts, so a scrape of a process that has
//! counted nothing yet still shows each of its series (at zero, with
//! `# HELP`): `rate()` and `absent()` over them mean the same after a
//! restart as before it.
//!
//! The label values are those the code emits (`phases`, `background`,
//! `settle_payments`, `replay_cache`); a value added there and not here
//! still works, it only appears on first use.

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// The part of a process that exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// The HTTP API (and the webhook endpoint).
    Api,
    Completer,
    Enqueuer,
    Worker,
    Reaper,
    /// Every process whose store is Postgres (its connection pool).
    Postgres,
}

/// One metric and every label set it can take.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Each label's name and values; every combination is a series.
    pub labels: &'static [(&'static str, &'static [&'static str])],
    pub exported_by: &'static [Exporter],
}

const RUNNERS: &[&str] = &["api", "completer"];
const REQUEST_OUTCOMES: &[&str] = &[
    "created",
    "replayed",
    "pending",
    "authentication_required",
    "declined",
    "refused",
    "cancelled",
    "not_cancellable",
    "key_reused",
    "in_flight",
    "ride_not_found",
    "payment_in_progress",
    "gateway_unknown",
    "needs_review",
    "simulated_error",
    "panicked",
    "lost_lock",
    "internal_error",
];
const CHARGE_OUTCOMES: &[&str] = &[
    "charged",
    "requires_authentication",
    "processing",
    "declined",
    "refused",
    "unknown",
];
const REFUND_OUTCOMES: &[&str] = &["refunded", "intent_canceled", "refused", "unknown"];
const GATEWAY_OUTCOMES: &[&str] = &[
    "charged",
    "requires_authentication",
    "processing",
    "declined",
    "refused",
    "unknown",
    "refunded",
    "intent_canceled",
];
const PHASES: &[&str] = &[
    "begin_request",
    "create_ride",
    "charge",
    "finish_booking",
    "record_cancel",
    "refund",
    "finish_cancel",
];
/// What applying news of a payment did (`PaymentApplied::result`), for a
/// webhook's event and a sync pass's retrieval alike.
const APPLIED_RESULTS: &[&str] = &["applied", "unchanged", "duplicate", "unknown_intent"];
const WEBHOOK_TYPES: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refund.updated",
    "refund.updated",
    "refund.failed",
];
const API: &[Exporter] = &[Exporter::Api];
const REQUEST_RUNNERS: &[Exporter] = &[Exporter::Api, Exporter::Completer];

/// The catalogue; `docs/operations.md` lists the same.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "rocket_rides_ride_requests_total",
        kind: MetricKind::Counter,
        help: "Keyed requests (bookings and cancels) by who ran them and how they ended.",
        labels: &[("runner", RUNNERS), ("outcome", REQUEST_OUTCOMES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_ride_request_duration_seconds",
        kind: MetricKind::Histogram,
        help: "How long keyed requests took, by who ran them and how they ended.",
        labels: &[("runner", RUNNERS), ("outcome", REQUEST_OUTCOMES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_charge_attempts_total",
        kind: MetricKind::Counter,
        help: "Charges asked of the payment gateway, by its answer.",
        labels: &[("outcome", CHARGE_OUTCOMES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_refund_attempts_total",
        kind: MetricKind::Counter,
        help: "Refunds (or PaymentIntent cancels) asked of the payment gateway, by its answer.",
        labels: &[("outcome", REFUND_OUTCOMES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_phase_duration_seconds",
        kind: MetricKind::Histogram,
        help: "How long each atomic phase of a keyed request took.",
        labels: &[("phase", PHASES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_gateway_call_duration_seconds",
        kind: MetricKind::Histogram,
        help: "How long payment gateway calls took, by their answer.",
        labels: &[("outcome", GATEWAY_OUTCOMES)],
        exported_by: REQUEST_RUNNERS,
    },
    Metric {
        name: "rocket_rides_webhook_events_total",
        kind: MetricKind::Counter,
        help: "Stripe webhook events received, by type and what applying them did.",
        labels: &[("type", WEBHOOK_TYPES), ("result", APPLIED_RESULTS)],
        exported_by: API,
    },
    Metric {
        name: "rocket_rides_replay_cache_total",
        kind: MetricKind::Counter,
        help: "Replay cache lookups (hit, miss, mismatch) and evictions.",
        labels: &[("result", &["hit", "miss", "mismatch", "eviction"])],
        exported_by: API,
    },
    Metric {
        name: "rocket_rides_replay_cache_entries",
        kind: MetricKind::Gauge,
        help: "Finished answers the replay cache holds.",
        labels: &[],
        exported_by: API,
    },
    Metric {
        name: "rocket_rides_replay_cache_bytes",
        kind: MetricKind::Gauge,
        help: "Bytes of the answers the replay cache holds.",
        labels: &[],
        exported_by: API,
    },
    Metric {
        name: "rocket_rides_completer_keys_total",
        kind: MetricKind::Counter,
        help: "Keys the completer picked or checked, by what became of them.",
        labels: &[(
            "result",
            &[
                "finished",
                "skipped",
                "failed",
                "left",
                "needs_review",
                "checked",
                "reconciled",
            ],
        )],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_completer_last_batch_picked",
        kind: MetricKind::Gauge,
        help: "Keys the completer's last batch picked.",
        labels: &[],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_unfinished_keys",
        kind: MetricKind::Gauge,
        help: "Unfinished keys by recovery point, counted after each completer batch.",
        labels: &[(
            "recovery_point",
            &["started", "ride_created", "charge_created"],
        )],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_keys_awaiting_review",
        kind: MetricKind::Gauge,
        help: "Keys whose charge was attempted beyond the gateway's idempotency window, awaiting review.",
        labels: &[],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_payment_syncs_total",
        kind: MetricKind::Counter,
        help: "Rides waiting on a payment settled by the completer's sync pass, by result.",
        labels: &[("result", APPLIED_RESULTS)],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_refund_syncs_total",
        kind: MetricKind::Counter,
        help: "Pending refunds checked by the completer's sync pass, by result.",
        labels: &[("result", APPLIED_RESULTS)],
        exported_by: &[Exporter::Completer],
    },
    Metric {
        name: "rocket_rides_jobs_enqueued_total",
        kind: MetricKind::Counter,
        help: "Staged jobs moved into the job queue.",
        labels: &[],
        exported_by: &[Exporter::Enqueuer],
    },
    Metric {
        name: "rocket_rides_staged_jobs",
        kind: MetricKind::Gauge,
        help: "Jobs staged in the store, waiting for the enqueuer.",
        labels: &[],
        exported_by: &[Exporter::Enqueuer],
    },
    Metric {
        name: "rocket_rides_oldest_staged_job_age_seconds",
        kind: MetricKind::Gauge,
        help: "Age of the oldest staged job.",
        labels: &[],
        exported_by: &[Exporter::Enqueuer],
    },
    Metric {
        name: "rocket_rides_receipts_sent_total",
        kind: MetricKind::Counter,
        help: "Receipts sent by the worker.",
        labels: &[],
        exported_by: &[Exporter::Worker],
    },
    Metric {
        name: "rocket_rides_dead_letter_jobs",
        kind: MetricKind::Gauge,
        help: "Jobs in the dead-letter stream.",
        labels: &[],
        exported_by: &[Exporter::Worker],
    },
    Metric {
        name: "rocket_rides_keys_reaped_total",
        kind: MetricKind::Counter,
        help: "Idempotency keys deleted by the reaper.",
        labels: &[],
        exported_by: &[Exporter::Reaper],
    },
    Metric {
        name: "rocket_rides_memory_records_forgotten_total",
        kind: MetricKind::Counter,
        help: "Records the reaper had the in-memory adapters forget.",
        labels: &[],
        exported_by: &[Exporter::Reaper],
    },
    Metric {
        name: "rocket_rides_db_connections",
        kind: MetricKind::Gauge,
        help: "The Postgres pool's connections, in use and idle.",
        labels: &[("state", &["in_use", "idle"])],
        exported_by: &[Exporter::Postgres],
    },
];

/// Describes each metric `exporter` exports and creates every series of it
/// at zero (a histogram with no observations). Safe to call more than
/// once: a series already counting keeps its value.
pub fn export_from_start(exporter: Exporter) {
    for metric in METRICS
        .iter()
        .filter(|metric| metric.exported_by.contains(&exporter))
    {
        match metric.kind {
            MetricKind::Counter => metrics::describe_counter!(metric.name, metric.help),
            MetricKind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            MetricKind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
        for labels in label_sets(metric.labels) {
            match metric.kind {
                MetricKind::Counter => {
                    metrics::counter!(metric.name, labels).increment(0);
                }
                MetricKind::Gauge => {
                    metrics::gauge!(metric.name, labels).increment(0.0);
                }
                MetricKind::Histogram => {
                    let _registered = metrics::histogram!(metric.name, labels);
                }
            }
        }
    }
}

/// Every combination of the labels' values (one empty set for none).
fn label_sets(
    labels: &'static [(&'static str, &'static [&'static str])],
) -> Vec<Vec<metrics::Label>> {
    labels
        .iter()
        .fold(vec![Vec::new()], |sets, (name, values)| {
            sets.iter()
                .flat_map(|set| {
                    values.iter().map(move |value| {
                        let mut set = set.clone();
                        set.push(metrics::Label::new(*name, *value));
                        set
                    })
                })
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_of_label_values_is_a_series() {
        let sets = label_sets(&[("a", &["1", "2"]), ("b", &["x", "y", "z"])]);
        assert_eq!(sets.len(), 6);
        assert_eq!(
            sets[5],
            vec![metrics::Label::new("a", "2"), metrics::Label::new("b", "z")]
        );
        assert_eq!(label_sets(&[]), vec![Vec::<metrics::Label>::new()]);
    }

    #[test]
    fn each_metric_is_named_once_and_exported_by_someone() {
        let mut names: Vec<&str> = METRICS.iter().map(|metric| metric.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        assert!(METRICS.iter().all(|metric| !metric.exported_by.is_empty()
            && !metric.help.is_empty()
            && metric.name.starts_with("rocket_rides_")));
    }
}
