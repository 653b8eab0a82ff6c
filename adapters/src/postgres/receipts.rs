//! One receipt of each kind per ride: claims taken before sending, marked
//! after.

use super::*;

#[async_trait]
impl Receipts for PostgresStore {
    async fn claim_receipts(
        &self,
        claims: &[(i64, ReceiptFor)],
        now: SystemTime,
        stale_after: Duration,
    ) -> Result<Vec<ReceiptClaim>, StoreError> {
        // Each receipt once (an upsert may not touch one row twice), in
        // receipt order, so two workers claiming overlapping batches take
        // the rows' locks in the same order.
        let mut unique: Vec<(i64, ReceiptFor)> = Vec::with_capacity(claims.len());
        let mut seen = std::collections::HashSet::new();
        for &(job_id, receipt) in claims {
            if seen.insert(receipt) {
                unique.push((job_id, receipt));
            }
        }
        unique.sort_by_key(|(_, receipt)| *receipt);
        let stale_before = now
            .checked_sub(stale_after)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let rows: Vec<(i64, String, Option<i64>, bool, bool)> =
            sqlx::query_as(queries::CLAIM_RECEIPTS)
                .bind(unique.iter().map(|(_, r)| r.ride_id.0).collect::<Vec<_>>())
                .bind(
                    unique
                        .iter()
                        .map(|(_, r)| r.kind.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(unique.iter().map(|(job, _)| *job).collect::<Vec<_>>())
                .bind(timestamp(now))
                .bind(timestamp(stale_before))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        let answers: std::collections::HashMap<(i64, String), ReceiptClaim> = rows
            .into_iter()
            .map(|(ride, kind, token, sent, known)| {
                let answer = match (token, sent, known) {
                    (_, _, false) => ReceiptClaim::NoSuchRide,
                    (Some(token), _, true) => ReceiptClaim::Claimed(ClaimToken(token)),
                    (None, true, true) => ReceiptClaim::AlreadySent,
                    (None, false, true) => ReceiptClaim::InProgress,
                };
                ((ride, kind), answer)
            })
            .collect();
        let mut answered = std::collections::HashSet::new();
        claims
            .iter()
            .map(|(_, receipt)| {
                let answer = answers
                    .get(&(receipt.ride_id.0, receipt.kind.as_str().to_owned()))
                    .copied()
                    .ok_or_else(|| {
                        StoreError::Inconsistent(format!("no claim answer for the {receipt}"))
                    })?;
                // A receipt listed again: its first entry holds the claim.
                Ok(
                    if answered.insert(*receipt) || answer == ReceiptClaim::NoSuchRide {
                        answer
                    } else {
                        ReceiptClaim::InProgress
                    },
                )
            })
            .collect()
    }

    async fn extend_receipt_claims(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let (rides, tokens) = columns(claims);
        sqlx::query(queries::EXTEND_RECEIPT_CLAIMS)
            .bind(&rides)
            .bind(&tokens)
            .bind(timestamp(now))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Tried again for about fifteen seconds: the receipts have gone out,
    /// and giving up would let another delivery send them a second time
    /// once the claims go stale. A restarting Postgres is back well within
    /// that.
    async fn mark_receipts_sent(
        &self,
        claims: &[(ReceiptFor, ClaimToken)],
        now: SystemTime,
    ) -> Result<Vec<ReceiptFor>, StoreError> {
        let (rides, tokens) = columns(claims);
        let marked: Vec<(i64, String)> = persist(Duration::from_secs(15), || {
            sqlx::query_as(queries::MARK_RECEIPTS_SENT)
                .bind(&rides)
                .bind(&tokens)
                .bind(timestamp(now))
                .fetch_all(&self.pool)
        })
        .await
        .map_err(unavailable)?;
        marked
            .into_iter()
            .map(|(ride, kind)| {
                Ok(ReceiptFor {
                    ride_id: RideId(ride),
                    kind: ReceiptKind::parse(&kind).ok_or_else(|| {
                        StoreError::Inconsistent(format!("ride {ride}: receipt kind {kind:?}"))
                    })?,
                })
            })
            .collect()
    }

    async fn release_receipt(
        &self,
        receipt: ReceiptFor,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM sent_receipts WHERE ride_id = $1 AND kind = $2 AND claim_token = $3 \
             AND sent_at IS NULL",
        )
        .bind(receipt.ride_id.0)
        .bind(receipt.kind.as_str())
        .bind(token.0)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn receipt_sent(&self, receipt: ReceiptFor) -> Result<bool, StoreError> {
        let (sent,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM sent_receipts WHERE ride_id = $1 AND kind = $2 \
             AND sent_at IS NOT NULL)",
        )
        .bind(receipt.ride_id.0)
        .bind(receipt.kind.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(sent)
    }
}

/// Claims as the two arrays the statements unnest: rides, tokens (a
/// token names one claim of one receipt: never reused).
fn columns(claims: &[(ReceiptFor, ClaimToken)]) -> (Vec<i64>, Vec<i64>) {
    claims
        .iter()
        .map(|(receipt, token)| (receipt.ride_id.0, token.0))
        .unzip()
}
