//! The statements of a request and of the background processes, public so
//! the plan test can EXPLAIN and the benchmark replay exactly what runs.

/// The key phase of a request, one statement. $1 now, $2 the key, $3
/// the fingerprint, $4..$7 origin lat/lon, target lat/lon, $8 the
/// client's IP, $9 the user, $10 whether the request charges now, $11
/// the request's id.
///
/// An existing key is read (no lock; the caller decides, and takes the
/// lock in a transaction only to resume). Otherwise the key is inserted
/// locked at `ride_created`, its charge attempt noted when $10, with its
/// ride and `ride.created` audit record: the key phase and the `started`
/// phase in one commit. A first request racing another with the same
/// key inserts nothing and gets no row; the caller then reads the
/// winner's key under its row lock.
pub const BEGIN_REQUEST: &str = concat!(
    "WITH existing AS (",
    select_key!("WHERE k.user_id = $9::bigint AND k.idempotency_key = $2::text"),
    "), new_key AS (INSERT INTO idempotency_keys (created_at, idempotency_key, last_run_at, \
     locked_at, request_fingerprint, origin_lat, origin_lon, target_lat, target_lon, \
     request_ip, request_id, recovery_point, charge_attempted_at, last_call_at, user_id) \
     SELECT $1::timestamptz, $2::text, $1::timestamptz, $1::timestamptz, $3::text, \
     $4::float8, $5::float8, $6::float8, $7::float8, $8::text, $11::text, 'ride_created', \
     CASE WHEN $10::bool THEN $1::timestamptz END, \
     CASE WHEN $10::bool THEN clock_timestamp() END, $9::bigint \
     WHERE NOT EXISTS (SELECT 1 FROM existing) \
     ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *), \
     new_ride AS (INSERT INTO rides (created_at, idempotency_key_id, origin_lat, origin_lon, \
     target_lat, target_lon, user_id) \
     SELECT $1::timestamptz, id, $4::float8, $5::float8, $6::float8, $7::float8, $9::bigint \
     FROM new_key RETURNING id, idempotency_key_id), \
     audit AS (INSERT INTO audit_records (action, created_at, data, origin_ip, resource_id, \
     resource_type, user_id) SELECT 'ride.created', $1::timestamptz, \
     jsonb_build_object('origin_lat', $4::float8, 'origin_lon', $5::float8, \
     'target_lat', $6::float8, 'target_lon', $7::float8), $8::text, id, 'ride', $9::bigint \
     FROM new_ride) \
     SELECT true AS inserted, ",
    key_columns!("n"),
    ", r.id AS ride_id FROM new_key n JOIN new_ride r ON r.idempotency_key_id = n.id \
     UNION ALL SELECT false AS inserted, * FROM existing"
);

/// The key phase of a cancel, one statement: $1 now, $2 the key, $3 the
/// fingerprint, $4 the client's IP, $5 the request's id, $6 the user, $7
/// the ride it cancels, $8 the reason. As `BEGIN_REQUEST`, but a new key
/// is written locked at `started`: the cancellation is recorded by the
/// next phase, under the ride's lock.
pub const BEGIN_CANCEL: &str = concat!(
    "WITH existing AS (",
    select_key!("WHERE k.user_id = $6::bigint AND k.idempotency_key = $2::text"),
    "), new_key AS (INSERT INTO idempotency_keys (created_at, idempotency_key, last_run_at, \
     locked_at, request_fingerprint, request_ip, request_id, recovery_point, user_id, action, \
     cancels_ride_id, cancel_reason) \
     SELECT $1::timestamptz, $2::text, $1::timestamptz, $1::timestamptz, $3::text, $4::text, \
     $5::text, 'started', $6::bigint, 'cancel_ride', $7::bigint, $8::text \
     WHERE NOT EXISTS (SELECT 1 FROM existing) \
     ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *) \
     SELECT true AS inserted, ",
    key_columns!("n"),
    ", n.cancels_ride_id AS ride_id FROM new_key n \
     UNION ALL SELECT false AS inserted, * FROM existing"
);

/// A cancel key's refund, one statement: $1 key, $2 generation, $3
/// expected recovery points, $4 Stripe's refund id (NULL: a cancelled
/// PaymentIntent), $5 its status, $6 now. Under the lease, on this key's
/// cancellation, which has no refund yet; then the key moves to
/// `refund_created`. Whether the lease held and whether it moved.
pub const RECORD_REFUND: &str = concat!(
    "WITH leased AS (SELECT id, cancels_ride_id FROM idempotency_keys WHERE ",
    leased!(),
    " FOR UPDATE), refunded AS (UPDATE ride_cancellations SET stripe_refund_id = $4::text, \
     refund_status = $5::text, refund_checked_at = $6::timestamptz \
     WHERE ride_id = (SELECT cancels_ride_id FROM leased) \
     AND idempotency_key_id = $1::bigint AND stripe_refund_id IS NULL RETURNING ride_id), \
     moved AS (UPDATE idempotency_keys SET recovery_point = 'refund_created' \
     WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM refunded) RETURNING id) \
     SELECT EXISTS (SELECT 1 FROM leased), EXISTS (SELECT 1 FROM moved)"
);

/// Finishes a cancel key whose refund Stripe refused for good: $1 key,
/// $2 generation, $3 expected recovery points, $4 status, $5 body, $6
/// now. Its ride `refund_failed`. Whether the lease held.
pub const FAIL_REFUND: &str = concat!(
    "WITH finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
     response_code = $4::int, response_body = $5::text, locked_at = NULL WHERE ",
    leased!(),
    " RETURNING cancels_ride_id), failed AS (UPDATE rides SET status = 'refund_failed', \
     status_changed_at = $6::timestamptz WHERE id = (SELECT cancels_ride_id FROM finished) \
     AND status IN ('cancelling', 'cancelled')) \
     SELECT EXISTS (SELECT 1 FROM finished)"
);

/// Finishes a cancel, one statement: $1 key, $2 generation, $3 expected
/// recovery points, $4 the 200's status, $5 its body, $6 now, $7 the
/// job's name, $8 the amount refunded, $9 currency. Under the lease, the
/// ride goes `cancelled` (one whose refund was already reported failed
/// stays `refund_failed`), the key is finished and the cancellation
/// receipt staged. Whether the lease held and whether it finished.
pub const FINISH_CANCEL: &str = concat!(
    "WITH leased AS (SELECT id, cancels_ride_id FROM idempotency_keys WHERE ",
    leased!(),
    " FOR UPDATE), cancelled AS (UPDATE rides SET \
     status = CASE WHEN status = 'cancelling' THEN 'cancelled' ELSE status END, \
     status_changed_at = $6::timestamptz \
     WHERE id = (SELECT cancels_ride_id FROM leased) \
     AND status IN ('cancelling', 'refund_failed') RETURNING id, user_id), \
     finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
     response_code = $4::int, response_body = $5::text, locked_at = NULL \
     WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM cancelled) RETURNING id), \
     job AS (INSERT INTO staged_jobs (job_name, job_args, created_at) SELECT $7::text, \
     jsonb_build_object('amount', $8::bigint, 'currency', $9::text, \
     'user_id', user_id, 'ride_id', id), $6::timestamptz FROM cancelled) \
     SELECT EXISTS (SELECT 1 FROM leased), EXISTS (SELECT 1 FROM finished)"
);

/// Books a charged key, one statement: $1 key, $2 generation, $3 the
/// recovery points booking expects, $4 the charge id, $5 the ride, $6
/// the 201's status, $7 its body, $8 the job's name, $9 amount, $10
/// currency, $11 user, $12 now (when the job is staged), $13 the
/// PaymentIntent (or NULL). Under the lease (the key's row locked), the
/// charge goes on the ride (unless it carries another), and only then
/// is the key finished and the receipt job staged. Returns whether the
/// lease held and whether the key was booked.
pub const BOOK: &str = concat!(
    "WITH leased AS (SELECT id FROM idempotency_keys WHERE ",
    leased!(),
    " FOR UPDATE), charged AS (UPDATE rides SET stripe_charge_id = $4::text, \
     stripe_payment_intent_id = coalesce($13::text, stripe_payment_intent_id), \
     status = 'booked', status_changed_at = $12::timestamptz \
     WHERE id = $5::bigint AND idempotency_key_id = (SELECT id FROM leased) \
     AND (stripe_charge_id IS NULL OR stripe_charge_id = $4::text) RETURNING id), \
     finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
     response_code = $6::int, response_body = $7::text, locked_at = NULL \
     WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM charged) RETURNING id), \
     job AS (INSERT INTO staged_jobs (job_name, job_args, created_at) SELECT $8::text, \
     jsonb_build_object('amount', $9::bigint, 'currency', $10::text, \
     'user_id', $11::bigint, 'ride_id', id), $12::timestamptz FROM charged) \
     SELECT EXISTS (SELECT 1 FROM leased) AS leased, \
     EXISTS (SELECT 1 FROM finished) AS booked"
);

/// Finishes a key with a refusal, nothing charged, its ride
/// `payment_failed`: $1 key, $2 generation, $3 expected recovery points,
/// $4 status, $5 body, $6 now. Whether the lease held.
pub const REFUSE: &str = concat!(
    "WITH finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
     response_code = $4::int, response_body = $5::text, locked_at = NULL WHERE ",
    leased!(),
    " RETURNING id), failed AS (UPDATE rides SET status = 'payment_failed', \
     status_changed_at = $6::timestamptz \
     WHERE idempotency_key_id = (SELECT id FROM finished) AND status = 'charging') \
     SELECT EXISTS (SELECT 1 FROM finished)"
);

/// Finishes a key whose ride waits on its PaymentIntent: $1 key, $2
/// generation, $3 expected recovery points, $4 status, $5 body, $6 now,
/// $7 the PaymentIntent, $8 the ride's status. Whether the lease held.
pub const AWAIT_PAYMENT: &str = concat!(
    "WITH finished AS (UPDATE idempotency_keys SET recovery_point = 'finished', \
     response_code = $4::int, response_body = $5::text, locked_at = NULL WHERE ",
    leased!(),
    " RETURNING id), waiting AS (UPDATE rides SET status = $8::text, \
     stripe_payment_intent_id = $7::text, status_changed_at = $6::timestamptz \
     WHERE idempotency_key_id = (SELECT id FROM finished) AND status = 'charging') \
     SELECT EXISTS (SELECT 1 FROM finished)"
);

/// Refunds still pending at Stripe, recorded or last checked at or
/// before $1, oldest first, $2 at most.
pub const REFUNDS_PENDING: &str = "SELECT ride_id, stripe_refund_id FROM ride_cancellations \
     WHERE refund_status IN ('pending', 'requires_action') AND refund_checked_at <= $1 \
     AND stripe_refund_id IS NOT NULL ORDER BY refund_checked_at LIMIT $2";

/// Rides waiting on their payment since before $1, oldest first, $2 at
/// most.
pub const RIDES_AWAITING_PAYMENT: &str = "SELECT id, stripe_payment_intent_id, status FROM rides \
     WHERE status IN ('awaiting_authentication', 'payment_pending') \
     AND status_changed_at <= $1 AND stripe_payment_intent_id IS NOT NULL \
     ORDER BY status_changed_at LIMIT $2";

/// Claims receipts, one statement: $1 rides, $2 the receipts' kinds, $3
/// their jobs (each receipt once), $4 now, $5 claims older than this are
/// stale. A receipt is claimed if nobody holds it, or its holder's claim
/// went stale unsent; otherwise it was sent, or another worker holds it
/// now. One row per receipt: ride, kind, claimed, sent, the ride known.
pub const CLAIM_RECEIPTS: &str = "WITH wanted AS (SELECT * FROM unnest($1::bigint[], $2::text[], \
     $3::bigint[]) AS w(ride_id, kind, job_id)), \
     known AS (SELECT w.ride_id, w.kind, w.job_id FROM wanted w JOIN rides r ON r.id = w.ride_id), \
     claimed AS (INSERT INTO sent_receipts (ride_id, kind, job_id, claimed_at) \
     SELECT ride_id, kind, job_id, $4 FROM known ORDER BY ride_id, kind \
     ON CONFLICT (ride_id, kind) DO UPDATE SET job_id = EXCLUDED.job_id, \
     claimed_at = EXCLUDED.claimed_at, claim_token = nextval('receipt_claim_tokens') \
     WHERE sent_receipts.sent_at IS NULL AND sent_receipts.claimed_at <= $5 \
     RETURNING ride_id, kind, claim_token) \
     SELECT w.ride_id, w.kind, c.claim_token, s.sent_at IS NOT NULL AS sent, \
     EXISTS (SELECT 1 FROM known k WHERE k.ride_id = w.ride_id) AS known \
     FROM wanted w LEFT JOIN claimed c ON c.ride_id = w.ride_id AND c.kind = w.kind \
     LEFT JOIN sent_receipts s ON s.ride_id = w.ride_id AND s.kind = w.kind";

/// Receipt claims still held by their tokens: $1 rides, $2 tokens.
macro_rules! held_claims {
    ($action:literal) => {
        concat!(
            $action,
            " FROM unnest($1::bigint[], $2::bigint[]) AS h(ride_id, token) \
             WHERE sent_receipts.ride_id = h.ride_id AND sent_receipts.claim_token = h.token \
             AND sent_receipts.sent_at IS NULL"
        )
    };
}

/// Marks sent the receipts whose claims the tokens still hold ($3 now).
pub const MARK_RECEIPTS_SENT: &str = concat!(
    held_claims!("UPDATE sent_receipts SET sent_at = $3"),
    " RETURNING sent_receipts.ride_id, sent_receipts.kind"
);

/// Restarts the age of the claims the tokens still hold ($3 now).
pub const EXTEND_RECEIPT_CLAIMS: &str = held_claims!("UPDATE sent_receipts SET claimed_at = $3");

/// Unfinished keys by recovery point, and those at `ride_created`
/// whose charge was attempted before $1 (review's): the partial index of
/// unfinished keys, whose size follows the backlog.
pub const UNFINISHED_COUNTS: &str = "SELECT recovery_point, count(*), \
     count(*) FILTER (WHERE recovery_point IN ('ride_created', 'cancel_recorded') \
     AND charge_attempted_at < $1) \
     FROM idempotency_keys WHERE recovery_point <> 'finished' GROUP BY recovery_point";

/// How many jobs are staged, and when the oldest (lowest id) was.
pub const BACKLOG: &str = "SELECT (SELECT count(*) FROM staged_jobs), \
     (SELECT created_at FROM staged_jobs ORDER BY id LIMIT 1)";

/// A gateway call about to start: $1 key, $2 generation, $3 expected
/// recovery points, $4 now (the first attempt's time, for the review
/// window). The call's start is the database's clock at the write, under
/// the lease.
pub const NOTE_CHARGE_ATTEMPT: &str = concat!(
    "UPDATE idempotency_keys SET charge_attempted_at = COALESCE(charge_attempted_at, $4), \
     last_call_at = clock_timestamp() WHERE ",
    leased!()
);

/// $1 created before, $2 last run before, $3 locked before, $4 limit,
/// $5 charge attempted not before (older attempts are review's).
pub const FIND_COMPLETABLE: &str = "SELECT id FROM idempotency_keys \
     WHERE recovery_point <> 'finished' AND created_at < $1 AND last_run_at < $2 \
     AND (locked_at IS NULL OR locked_at < $3) \
     AND NOT (recovery_point IN ('ride_created', 'cancel_recorded') \
          AND charge_attempted_at IS NOT NULL \
          AND charge_attempted_at < $5) \
     ORDER BY created_at, id LIMIT $4";

/// $1 created before, $2 limit, oldest first. Only keys
/// `KeyRecord::may_be_reaped` allows: finished, or unfinished with no
/// lock on them and no charge that may exist. A row a phase has locked
/// this instant is skipped, not waited for.
pub const REAP_KEYS: &str = "DELETE FROM idempotency_keys WHERE id = ANY(ARRAY(SELECT id FROM idempotency_keys \
     WHERE created_at < $1 \
     AND (recovery_point = 'finished' OR (locked_at IS NULL AND (recovery_point = 'started' \
          OR (recovery_point = 'ride_created' AND charge_attempted_at IS NULL)))) \
     ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// $1 limit.
pub const STAGED_JOBS: &str = "SELECT id, job_name, (job_args->>'amount')::bigint AS amount, \
     job_args->>'currency' AS currency, (job_args->>'user_id')::bigint AS user_id, \
     (job_args->>'ride_id')::bigint AS ride_id FROM staged_jobs ORDER BY id LIMIT $1";

/// $1 now, $2 claimed until, $3 limit. Rows another enqueuer is
/// claiming this instant are skipped, not waited for.
/// (`= ANY(ARRAY(..))` keeps the outer update an index scan by id; an
/// `IN (subquery)` lets the planner hash-join over the whole table.)
pub const CLAIM_STAGED_JOBS: &str = "UPDATE staged_jobs SET claimed_until = $2 WHERE id = ANY(ARRAY(\
     SELECT id FROM staged_jobs WHERE claimed_until IS NULL OR claimed_until <= $1 \
     ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)) \
     RETURNING id, job_name, (job_args->>'amount')::bigint AS amount, \
     job_args->>'currency' AS currency, (job_args->>'user_id')::bigint AS user_id, \
     (job_args->>'ride_id')::bigint AS ride_id";

/// $1 the key's id.
pub const FIND_KEY: &str = select_key!("WHERE k.id = $1");

/// $1 limit. Newest rides first, with their key's request id.
pub const RECENT_RIDES: &str = "SELECT r.id, r.idempotency_key_id, r.origin_lat, r.origin_lon, \
     r.target_lat, r.target_lon, r.stripe_charge_id, r.stripe_payment_intent_id, r.status, \
     r.user_id, k.request_id, \
     k.response_code, k.created_at AS requested_at \
     FROM rides r LEFT JOIN idempotency_keys k ON k.id = r.idempotency_key_id \
     ORDER BY r.id DESC LIMIT $1";

/// $1 limit. Rides whose refund failed, most recent first (the partial
/// index `rides_refund_failed`).
pub const FAILED_REFUNDS: &str = "SELECT r.id, r.user_id, c.refund_amount_cents, c.stripe_refund_id \
     FROM rides r JOIN ride_cancellations c ON c.ride_id = r.id \
     WHERE r.status = 'refund_failed' ORDER BY r.status_changed_at DESC LIMIT $1";

/// $1 since. Keys created since, by stored status (NULL: unfinished).
pub const ANSWERS_SINCE: &str = "SELECT response_code, count(*) FROM idempotency_keys \
     WHERE created_at >= $1 GROUP BY response_code ORDER BY response_code NULLS FIRST";

/// $1 now, $2 the gap in seconds after each check (`ReviewChecks::gaps`:
/// the `n`th element follows the `n`th check; as many as checks are made),
/// $3 limit. Counts due review checks made and schedules the next; another
/// completer claiming the same keys this instant is skipped.
pub const CLAIM_REVIEW_CHECKS: &str = "WITH claimed AS (UPDATE idempotency_keys \
     SET review_checks = review_checks + 1, \
     review_check_at = $1 + make_interval(secs => ($2::float8[])[review_checks + 1]) \
     WHERE id = ANY(ARRAY(SELECT id FROM idempotency_keys \
     WHERE review_check_at <= $1 AND review_checks < cardinality($2::float8[]) \
     AND recovery_point IN ('ride_created', 'cancel_recorded') \
     ORDER BY review_check_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)) RETURNING id) \
     SELECT id FROM claimed ORDER BY id";

/// $1 attempted before, $2 limit.
pub const KEYS_FOR_REVIEW: &str = select_key!(
    "WHERE k.recovery_point IN ('ride_created', 'cancel_recorded') \
     AND k.charge_attempted_at < $1 \
     ORDER BY k.charge_attempted_at LIMIT $2"
);

/// $1 attempted before, $2 now, $3 limit. Marks keys for review not yet
/// reported and returns them; another completer marking the same keys
/// this instant is skipped, so each key is reported once.
pub const REPORT_KEYS_FOR_REVIEW: &str = concat!(
    "WITH reported AS (UPDATE idempotency_keys \
     SET review_reported_at = $2, review_check_at = $2, review_checks = 0 \
     WHERE id = ANY(ARRAY(SELECT id FROM idempotency_keys \
     WHERE recovery_point IN ('ride_created', 'cancel_recorded') AND charge_attempted_at < $1 \
     AND review_reported_at IS NULL \
     ORDER BY charge_attempted_at LIMIT $3 FOR UPDATE SKIP LOCKED)) RETURNING id) ",
    select_key!("WHERE k.id IN (SELECT id FROM reported) ORDER BY k.charge_attempted_at")
);
