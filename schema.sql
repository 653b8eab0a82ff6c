-- Rocket Rides: the Postgres schema.
--
-- The single source the Postgres adapter applies (`rocket-rides migrate`).
-- Every statement is idempotent, so running it again changes nothing.
-- Tables follow the original rocket-rides-atomic schema, with our changes
-- noted where they are.

-- Riders. `stripe_customer_id` is the Stripe customer their rides are charged to.
CREATE TABLE IF NOT EXISTS users (
    id                 BIGSERIAL   PRIMARY KEY,
    email              TEXT        NOT NULL,
    stripe_customer_id TEXT        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_email_unique UNIQUE (email)
);

-- Ours: API keys for AUTH_MODE=api-key, stored only as SHA-256 hex, so a
-- leaked table leaks no working credential. A user may hold several.
CREATE TABLE IF NOT EXISTS api_keys (
    id         BIGSERIAL   PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash)
);

-- One row per (user, Idempotency-Key): the request, how far it got
-- (recovery_point), who holds it (locked_at, lock_generation), and once
-- finished the response replayed to every retry.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id                  BIGSERIAL        PRIMARY KEY,
    created_at          TIMESTAMPTZ      NOT NULL,
    -- Ours: up to 255 characters (the original: 100, past which a 500).
    idempotency_key     TEXT             NOT NULL
        CHECK (char_length(idempotency_key) BETWEEN 20 AND 255),
    last_run_at         TIMESTAMPTZ      NOT NULL,
    locked_at           TIMESTAMPTZ,
    -- Ours: bumped on every lock taken; a phase commits only for the
    -- current generation, so a request whose lock timed out and was taken
    -- over cannot write behind its successor's back.
    lock_generation     BIGINT           NOT NULL DEFAULT 1,
    -- The request: method, path and canonical parameters (the fingerprint
    -- compared on every retry), and the parameters themselves so the
    -- completer can finish it without the client. The original kept
    -- request_method, request_path and request_params (JSONB).
    request_fingerprint TEXT             NOT NULL,
    origin_lat          DOUBLE PRECISION NOT NULL,
    origin_lon          DOUBLE PRECISION NOT NULL,
    target_lat          DOUBLE PRECISION NOT NULL,
    target_lon          DOUBLE PRECISION NOT NULL,
    request_ip          TEXT,
    -- The stored response, set together with recovery_point = 'finished'.
    response_code       INT,
    response_body       TEXT,
    -- The points a key may be at: idempotency_keys_recovery_point_known,
    -- below, as more were added.
    recovery_point      TEXT             NOT NULL,
    -- Ours: the Idempotency-Key sent to Stripe with every charge attempt,
    -- unique to this row forever.
    downstream_key      TEXT             NOT NULL DEFAULT 'rocket-rides-' || gen_random_uuid(),
    -- Ours: when a charge was first attempted (the review rule).
    charge_attempted_at TIMESTAMPTZ,
    user_id             BIGINT           NOT NULL REFERENCES users (id),
    CONSTRAINT idempotency_keys_user_key_unique UNIQUE (user_id, idempotency_key),
    CONSTRAINT idempotency_keys_downstream_key_unique UNIQUE (downstream_key),
    CONSTRAINT idempotency_keys_finished_has_response
        CHECK ((recovery_point = 'finished') = (response_code IS NOT NULL AND response_body IS NOT NULL))
);

-- The completer: unfinished keys, oldest first. A partial index holds only
-- unfinished keys, so its size follows the backlog, not the table.
CREATE INDEX IF NOT EXISTS idempotency_keys_unfinished_created_at
    ON idempotency_keys (created_at)
    WHERE recovery_point <> 'finished';

-- The reaper: keys by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at
    ON idempotency_keys (created_at);

-- Ours: when a completer logged the key as needing review, so each such key
-- is reported once however many completers run. (Added after the first
-- release of this schema; `migrate` adds it to older databases.)
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS review_reported_at TIMESTAMPTZ;

-- Ours: the reconciling completer's checks of a key awaiting review: how
-- many it made and when the next is due (the first as it is reported;
-- `ReviewChecks`). NULL: never reported, or reported by a version that
-- did not schedule checks (such a key stays for a person, as it did).
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS review_checks INT NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS review_check_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS idempotency_keys_review_checks
    ON idempotency_keys (review_check_at)
    WHERE review_check_at IS NOT NULL AND recovery_point <> 'finished';

-- The X-Request-Id of the request that last took the key's lock through
-- the API (created or resumed it): the request that produced a stored
-- response, or NULL when the completer or `resolve` took the key last.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS request_id TEXT;

-- Ours: when the latest gateway call for the key started, by this
-- database's clock, written under the lease just before the call; the
-- reconcile rule counts from it (not from a process's clock).
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS last_call_at TIMESTAMPTZ;

-- The review list: charges attempted but not recorded, by attempt time.
CREATE INDEX IF NOT EXISTS idempotency_keys_review
    ON idempotency_keys (charge_attempted_at)
    WHERE recovery_point = 'ride_created';

-- Booked rides. A ride outlives its key: the reaper's delete sets
-- idempotency_key_id to NULL.
CREATE TABLE IF NOT EXISTS rides (
    id                 BIGSERIAL        PRIMARY KEY,
    created_at         TIMESTAMPTZ      NOT NULL DEFAULT now(),
    idempotency_key_id BIGINT           REFERENCES idempotency_keys (id) ON DELETE SET NULL,
    origin_lat         DOUBLE PRECISION NOT NULL,
    origin_lon         DOUBLE PRECISION NOT NULL,
    target_lat         DOUBLE PRECISION NOT NULL,
    target_lon         DOUBLE PRECISION NOT NULL,
    stripe_charge_id   TEXT,
    user_id            BIGINT           NOT NULL REFERENCES users (id),
    -- One ride per key, one ride per charge.
    CONSTRAINT rides_idempotency_key_unique UNIQUE (idempotency_key_id),
    CONSTRAINT rides_stripe_charge_id_unique UNIQUE (stripe_charge_id)
);

-- What happened, to what, from where (the original's audit trail).
CREATE TABLE IF NOT EXISTS audit_records (
    id            BIGSERIAL   PRIMARY KEY,
    action        TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    data          JSONB       NOT NULL,
    origin_ip     TEXT,
    resource_id   BIGINT      NOT NULL,
    resource_type TEXT        NOT NULL,
    user_id       BIGINT      NOT NULL REFERENCES users (id)
);

-- Jobs written in the same transaction as the 201 that caused them; the
-- enqueuer moves them to the job queue in id order and deletes them.
CREATE TABLE IF NOT EXISTS staged_jobs (
    id       BIGSERIAL PRIMARY KEY,
    job_name TEXT      NOT NULL,
    job_args JSONB     NOT NULL
);

-- Ours: an enqueuer claims a batch until claimed_until, so two enqueuers
-- never publish one job at once; a crashed enqueuer's claim runs out.
ALTER TABLE staged_jobs ADD COLUMN IF NOT EXISTS claimed_until TIMESTAMPTZ;

-- Ours: when a job was staged, for the age of the oldest in the backlog
-- (a metric). Rows staged before this column existed read as migrated.
ALTER TABLE staged_jobs ADD COLUMN IF NOT EXISTS created_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Ours: one receipt per ride. A worker claims the ride's row before
-- sending (claimed_at) and marks it sent after (sent_at), so a job delivered
-- twice, or to two workers, sends once.
CREATE TABLE IF NOT EXISTS sent_receipts (
    ride_id    BIGINT      PRIMARY KEY REFERENCES rides (id),
    job_id     BIGINT      NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    sent_at    TIMESTAMPTZ
);

-- Ours: each claim's token, new with every claim and never reused, so a
-- worker whose claim went stale and was taken over can neither mark the
-- receipt sent nor release the new holder's claim (as a key's lock
-- generation fences its phases). The holder extends claimed_at while its
-- send lasts.
CREATE SEQUENCE IF NOT EXISTS receipt_claim_tokens;
ALTER TABLE sent_receipts ADD COLUMN IF NOT EXISTS claim_token BIGINT NOT NULL
    DEFAULT nextval('receipt_claim_tokens');

-- Ours: this database's identity, one row, made once by the first migrate.
-- Staged job ids restart with a new database, so the job queue's streams
-- are named after this id: a reset database, or a second environment on the
-- same NATS server, never has its jobs dropped as repeats of another's.
CREATE TABLE IF NOT EXISTS deployment (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    id        TEXT    NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
);
INSERT INTO deployment DEFAULT VALUES ON CONFLICT DO NOTHING;

-- PaymentIntents (issue 23). A user's saved PaymentMethod, charged
-- off-session; `up` fills it in for users saved before.
ALTER TABLE users ADD COLUMN IF NOT EXISTS stripe_payment_method_id TEXT;

-- A ride's payment status (domain::RideStatus), moved only forward, and
-- the PaymentIntent paying for it. Rides from before take the status
-- their key's answer says: charged is booked, a finished key without a
-- charge failed, an unfinished one is still charging.
ALTER TABLE rides ADD COLUMN IF NOT EXISTS stripe_payment_intent_id TEXT;
ALTER TABLE rides ADD COLUMN IF NOT EXISTS status TEXT;
ALTER TABLE rides ADD COLUMN IF NOT EXISTS status_changed_at TIMESTAMPTZ;
UPDATE rides SET status = CASE
        WHEN stripe_charge_id IS NOT NULL THEN 'booked'
        WHEN EXISTS (SELECT 1 FROM idempotency_keys k
                     WHERE k.id = rides.idempotency_key_id AND k.recovery_point <> 'finished')
            THEN 'charging'
        ELSE 'payment_failed' END
    WHERE status IS NULL;
ALTER TABLE rides ALTER COLUMN status SET DEFAULT 'charging';
ALTER TABLE rides ALTER COLUMN status SET NOT NULL;
-- (Cancelling, issue 24, added three statuses: an older database's
-- constraint without them is replaced.)
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'rides_status_known'
               AND pg_get_constraintdef(oid) NOT LIKE '%refund_failed%') THEN
        ALTER TABLE rides DROP CONSTRAINT rides_status_known;
    END IF;
    ALTER TABLE rides ADD CONSTRAINT rides_status_known CHECK (status IN
        ('charging', 'awaiting_authentication', 'payment_pending', 'booked', 'payment_failed',
         'cancelling', 'cancelled', 'refund_failed'));
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    ALTER TABLE rides ADD CONSTRAINT rides_stripe_payment_intent_id_unique
        UNIQUE (stripe_payment_intent_id);
EXCEPTION WHEN duplicate_table OR duplicate_object THEN NULL; END $$;
-- The sync pass's order: rides waiting on their payment, by when they
-- last changed or were last checked.
CREATE INDEX IF NOT EXISTS rides_awaiting_payment
    ON rides (status_changed_at)
    WHERE status IN ('awaiting_authentication', 'payment_pending');

-- Stripe events applied, each once: recorded in the transaction that
-- applies it.
CREATE TABLE IF NOT EXISTS stripe_events (
    id          TEXT        PRIMARY KEY,
    type        TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);

-- Cancelling a ride (issue 24). A key is one of two actions: booking
-- (`POST /rides`, its coordinates) or cancelling (`POST /rides/{id}/cancel`,
-- the ride it names and the reason given). Keys from before are bookings.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS action TEXT NOT NULL DEFAULT 'book_ride';
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS cancels_ride_id BIGINT REFERENCES rides (id);
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS cancel_reason TEXT;
ALTER TABLE idempotency_keys ALTER COLUMN origin_lat DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN origin_lon DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN target_lat DROP NOT NULL;
ALTER TABLE idempotency_keys ALTER COLUMN target_lon DROP NOT NULL;
DO $$ BEGIN
    ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_action_request CHECK (
        CASE action
            WHEN 'book_ride' THEN origin_lat IS NOT NULL AND origin_lon IS NOT NULL
                AND target_lat IS NOT NULL AND target_lon IS NOT NULL
                AND cancels_ride_id IS NULL AND cancel_reason IS NULL
            WHEN 'cancel_ride' THEN cancels_ride_id IS NOT NULL AND origin_lat IS NULL
            ELSE false
        END);
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
-- The recovery points, a cancel's two among them (domain::RecoveryPoint).
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_recovery_point_check;
DO $$ BEGIN
    ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_recovery_point_known CHECK (
        recovery_point IN ('started', 'ride_created', 'charge_created', 'cancel_recorded',
                           'refund_created', 'finished'));
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
-- The review list now holds refunds attempted and not recorded too.
DROP INDEX IF EXISTS idempotency_keys_review;
CREATE INDEX IF NOT EXISTS idempotency_keys_review_calls
    ON idempotency_keys (charge_attempted_at)
    WHERE recovery_point IN ('ride_created', 'cancel_recorded');

-- A ride's cancellation: one per ride (the primary key), written with
-- the key's `cancel_recorded` point, the amount fixed then by the refund
-- rule; Stripe's refund once made, one refund per ride and each refund
-- on one ride. It outlives its key, as the ride does.
CREATE TABLE IF NOT EXISTS ride_cancellations (
    ride_id             BIGINT      PRIMARY KEY REFERENCES rides (id),
    idempotency_key_id  BIGINT      REFERENCES idempotency_keys (id) ON DELETE SET NULL,
    reason              TEXT,
    -- domain::Giveback: a refund of the amount, the PaymentIntent
    -- cancelled, or nothing due.
    giveback            TEXT        NOT NULL
        CHECK (giveback IN ('refund', 'cancel_payment_intent', 'nothing')),
    refund_amount_cents BIGINT      NOT NULL CHECK (refund_amount_cents >= 0),
    stripe_refund_id    TEXT,
    refund_status       TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    CONSTRAINT ride_cancellations_key_unique UNIQUE (idempotency_key_id),
    CONSTRAINT ride_cancellations_refund_unique UNIQUE (stripe_refund_id),
    CONSTRAINT ride_cancellations_amount_is_a_refund
        CHECK ((giveback = 'refund') = (refund_amount_cents > 0)),
    CONSTRAINT ride_cancellations_refund_only_for_refunds
        CHECK (stripe_refund_id IS NULL OR giveback = 'refund')
);

-- A ride's receipts, one of each kind (domain::ReceiptKind): the booking's
-- and the cancellation's. Rows from before are booking receipts.
ALTER TABLE sent_receipts ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'ride'
    CHECK (kind IN ('ride', 'cancellation'));
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'sent_receipts_pkey'
               AND cardinality(conkey) = 1) THEN
        ALTER TABLE sent_receipts DROP CONSTRAINT sent_receipts_pkey;
        ALTER TABLE sent_receipts ADD CONSTRAINT sent_receipts_pkey PRIMARY KEY (ride_id, kind);
    END IF;
END $$;

-- The sync pass's list of refunds still pending at Stripe, by when each
-- was recorded or last checked.
ALTER TABLE ride_cancellations ADD COLUMN IF NOT EXISTS refund_checked_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS ride_cancellations_refund_pending
    ON ride_cancellations (refund_checked_at)
    WHERE refund_status IN ('pending', 'requires_action');

-- The console's list of rides whose refund failed, most recent first.
CREATE INDEX IF NOT EXISTS rides_refund_failed
    ON rides (status_changed_at)
    WHERE status = 'refund_failed';
