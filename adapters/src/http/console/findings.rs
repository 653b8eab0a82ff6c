//! What Stripe holds for each key awaiting review, as the page shows it:
//! cached per key (while the key is unchanged) so a console refreshing
//! every few seconds does not search Stripe per key per refresh.

use super::*;

/// How long the page shows what Stripe answered for a key before asking
/// again (settling always asks afresh).
pub(super) const FINDINGS_TTL: Duration = Duration::from_secs(30);

/// What Stripe answered for each key awaiting review the page shows: an
/// open console refreshes every few seconds, and must not send Stripe a
/// search per key on each refresh. Kept per key while its `last_run_at`
/// is unchanged, for `FINDINGS_TTL`.
#[derive(Default)]
pub struct FindingsCache(Mutex<HashMap<KeyId, (Instant, KeyFinding)>>);

impl FindingsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, (Instant, KeyFinding)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Console {
    /// The keys awaiting review with Stripe's answer, from the cache where
    /// it is fresh for the key as it is now.
    pub(super) async fn review_findings(&self, now: SystemTime) -> anyhow::Result<Vec<KeyFinding>> {
        let records = self
            .keys
            .keys_for_review(self.review.attempted_before(now), ROWS)
            .await?;
        let mut findings = Vec::with_capacity(records.len());
        for record in records {
            let cached = self
                .findings
                .lock()
                .get(&record.id)
                .and_then(|(at, finding)| {
                    (at.elapsed() < FINDINGS_TTL && finding.record == record)
                        .then(|| finding.clone())
                });
            let finding = match cached {
                Some(finding) => finding,
                None => {
                    let finding = self.reconcile.examine_key(record).await?;
                    let entry = (Instant::now(), finding.clone());
                    self.findings.lock().insert(finding.record.id, entry);
                    finding
                }
            };
            findings.push(finding);
        }
        let shown: std::collections::HashSet<KeyId> =
            findings.iter().map(|f| f.record.id).collect();
        self.findings.lock().retain(|id, _| shown.contains(id));
        Ok(findings)
    }
}
