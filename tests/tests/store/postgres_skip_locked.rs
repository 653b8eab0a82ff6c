//! Several instances of each background process on one Postgres database:
//! a row another transaction holds is skipped at once by every background
//! query (the completer's lock, the reaper, the review report, the
//! enqueuer's claim), never waited for; and two instances running side by
//! side take disjoint work, checked directly rather than through the
//! queue's dedup or the worker's receipt claim downstream.
//!
//! "At once" is checked against a holder that never lets go during the
//! call: a query that waited would wait for the whole test (the statement
//! timeout is raised far past the bound), so the bound is generous and no
//! timing luck is involved.

use application::ports::KeyScans;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use adapters::postgres::{self, PoolSettings, PostgresStore};
use application::ports::{Finish, KeyPhase, KeyRequest, Keys, Lease, Outbox, Users};
use domain::charge::ReceiptJob;
use domain::{
    IdempotencyKey, KeyId, KeyRecord, RequestFingerprint, RideParams, StoredResponse, User,
};
use sqlx::{Connection, PgConnection};

use integration_tests::{COMPLETER, LOCK};
/// A background query that waited for a held row would still be waiting.
const AT_ONCE: Duration = Duration::from_secs(20);

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

struct Db {
    store: Arc<PostgresStore>,
    url: String,
    rider: User,
}

async fn db() -> Db {
    let url = integration_tests::postgres::fresh_database_url().await;
    let pool = postgres::connect(
        &url,
        &PoolSettings {
            statement_timeout: Duration::from_secs(600),
            ..PoolSettings::default()
        },
    )
    .expect("a valid URL");
    postgres::migrate(&pool).await.expect("migrated");
    let store = Arc::new(PostgresStore::new(pool));
    let rider = store
        .upsert_user(
            "a@example.com",
            &application::ports::SavedCustomer::without_payment_method("cus_a"),
        )
        .await
        .expect("user");
    Db { store, url, rider }
}

impl Db {
    fn request(&self, n: usize) -> KeyRequest {
        let params = RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid");
        KeyRequest {
            user_id: self.rider.id,
            key: IdempotencyKey::parse(&format!("skip-locked-key-{n:08}")).expect("valid"),
            fingerprint: RequestFingerprint::for_ride("POST", "/rides", &params),
            action: domain::KeyAction::BookRide(params),
            request_ip: None,
            request_id: None,
            charges_now: false,
        }
    }

    async fn locked(&self, n: usize, now: SystemTime) -> KeyRecord {
        match self
            .store
            .begin_request(&self.request(n), now, LOCK)
            .await
            .expect("key phase")
        {
            KeyPhase::Locked(record) => record,
            other => panic!("{other:?}"),
        }
    }

    /// A key left at `ride_created` by a request that died: stalled.
    async fn stalled(&self, n: usize) -> KeyId {
        let record = self.locked(n, at(0)).await;
        record.id
    }

    /// A key whose charge was attempted at `attempt` and never recorded.
    async fn attempted(&self, n: usize, attempt: SystemTime) -> KeyId {
        let record = self.locked(n, at(0)).await;
        let lease = Lease::of(&record);
        self.store
            .note_charge_attempt(lease, attempt)
            .await
            .expect("noted");
        self.store.unlock(lease).await.expect("unlocked");
        record.id
    }

    /// A key booked at `now` (its receipt job staged).
    async fn booked(&self, n: usize, now: SystemTime) -> KeyId {
        let record = self.locked(n, now).await;
        let lease = Lease::of(&record);
        let ride = record.progress.ride_id().expect("ride");
        self.store
            .finish(
                lease,
                Finish::Booked {
                    charge_id: format!("ch_{n}"),
                    payment_intent_id: None,
                    response: StoredResponse {
                        status: 201,
                        body: "{}".into(),
                    },
                    job: ReceiptJob::for_ride(ride, self.rider.id),
                },
                now,
            )
            .await
            .expect("booked");
        record.id
    }

    /// A second connection holding `table`'s row `id` locked until dropped.
    async fn hold(&self, table: &str, id: i64) -> Holder {
        let mut conn = PgConnection::connect(&self.url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin");
        let sql = format!("SELECT id FROM {table} WHERE id = $1 FOR UPDATE");
        let held: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut conn)
            .await
            .expect("locked");
        assert!(held.is_some(), "{table} {id} exists");
        Holder(conn)
    }
}

/// A row lock held by another transaction; released with a rollback.
struct Holder(PgConnection);

impl Holder {
    async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("rollback");
    }
}

async fn at_once<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(AT_ONCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for a row another transaction holds"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completer_skips_a_key_whose_row_is_held() {
    let db = db().await;
    let (held, free) = (db.stalled(1).await, db.stalled(2).await);
    let holder = db.hold("idempotency_keys", held.0).await;
    let now = at(1000);
    let found = db
        .store
        .find_completable(now, COMPLETER, 10)
        .await
        .expect("found");
    assert_eq!(found, vec![held, free], "the read sees both");
    let skipped = at_once(
        "lock_for_completion",
        db.store.lock_for_completion(held, now, COMPLETER),
    )
    .await
    .expect("no error");
    assert_eq!(skipped, None);
    let taken = db
        .store
        .lock_for_completion(free, now, COMPLETER)
        .await
        .expect("no error");
    assert_eq!(taken.map(|r| r.id), Some(free));
    holder.release().await;
    let taken = db
        .store
        .lock_for_completion(held, now, COMPLETER)
        .await
        .expect("no error");
    assert_eq!(taken.map(|r| r.id), Some(held), "taken once let go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_skips_a_key_whose_row_is_held() {
    let db = db().await;
    let held = db.booked(1, at(0)).await;
    db.booked(2, at(1)).await;
    db.booked(3, at(2)).await;
    let holder = db.hold("idempotency_keys", held.0).await;
    let reaped = at_once("reap_keys", db.store.reap_keys(at(100), 10))
        .await
        .expect("reaped");
    assert_eq!(reaped, 2, "the two free keys");
    holder.release().await;
    assert_eq!(db.store.reap_keys(at(100), 10).await.expect("reaped"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_report_skips_a_key_whose_row_is_held() {
    let db = db().await;
    let held = db.attempted(1, at(0)).await;
    let free = db.attempted(2, at(1)).await;
    let holder = db.hold("idempotency_keys", held.0).await;
    let now = at(30 * 3600);
    let before = COMPLETER.review.attempted_before(now);
    let reported = at_once(
        "report_keys_for_review",
        db.store.report_keys_for_review(before, now, 10),
    )
    .await
    .expect("reported");
    assert_eq!(
        reported.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![free]
    );
    holder.release().await;
    let reported = db
        .store
        .report_keys_for_review(before, now, 10)
        .await
        .expect("reported");
    assert_eq!(
        reported.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![held]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_check_skips_a_key_whose_row_is_held() {
    let db = db().await;
    let held = db.attempted(1, at(0)).await;
    let free = db.attempted(2, at(1)).await;
    let now = at(30 * 3600);
    let before = COMPLETER.review.attempted_before(now);
    db.store
        .report_keys_for_review(before, now, 10)
        .await
        .expect("reported");
    let checks = domain::ReviewChecks {
        first_gap: Duration::from_secs(150),
        max_checks: 6,
    };
    let holder = db.hold("idempotency_keys", held.0).await;
    let claimed = at_once(
        "claim_review_checks",
        db.store.claim_review_checks(now, checks, 10),
    )
    .await
    .expect("claimed");
    assert_eq!(claimed, vec![free]);
    holder.release().await;
    let claimed = db
        .store
        .claim_review_checks(now, checks, 10)
        .await
        .expect("claimed");
    assert_eq!(claimed, vec![held]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueuer_skips_a_staged_job_whose_row_is_held() {
    let db = db().await;
    db.booked(1, at(0)).await;
    db.booked(2, at(0)).await;
    let jobs = db.store.staged_jobs(10).await.expect("jobs");
    assert_eq!(jobs.len(), 2);
    let holder = db.hold("staged_jobs", jobs[0].id).await;
    let claimed = at_once(
        "claim_staged_jobs",
        db.store
            .claim_staged_jobs(10, at(10), Duration::from_secs(60)),
    )
    .await
    .expect("claimed");
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![jobs[1].id]
    );
    holder.release().await;
    let claimed = db
        .store
        .claim_staged_jobs(10, at(10), Duration::from_secs(60))
        .await
        .expect("claimed");
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![jobs[0].id]
    );
}

/// Two of each, racing on one database, many rounds: what one takes the
/// other never takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_enqueuers_two_completers_and_two_reapers_take_disjoint_work() {
    let db = db().await;
    for n in 0..200 {
        db.booked(n, at(0)).await;
    }
    let store = db.store.clone();
    let claim = |store: Arc<PostgresStore>| async move {
        let mut all = Vec::new();
        loop {
            let batch = store
                .claim_staged_jobs(7, at(10), Duration::from_secs(600))
                .await
                .expect("claimed");
            if batch.is_empty() {
                return all;
            }
            all.extend(batch.into_iter().map(|j| j.id));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim(store.clone())),
        tokio::spawn(claim(store.clone()))
    );
    let (a, b) = (a.expect("task"), b.expect("task"));
    let (a_set, b_set): (HashSet<i64>, HashSet<i64>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    assert!(
        a_set.is_disjoint(&b_set),
        "an enqueuer claimed a job the other held"
    );
    assert_eq!(a.len() + b.len(), 200, "every job claimed once");
    assert!(!a.is_empty() && !b.is_empty(), "both enqueuers worked");

    let mut stalled = Vec::new();
    for n in 1000..1100 {
        stalled.push(db.stalled(n).await);
    }
    let complete = |store: Arc<PostgresStore>, keys: Vec<KeyId>| async move {
        let mut taken = Vec::new();
        for key in keys {
            if let Some(record) = store
                .lock_for_completion(key, at(1000), COMPLETER)
                .await
                .expect("no error")
            {
                taken.push(record.id);
            }
        }
        taken
    };
    let mut reversed = stalled.clone();
    reversed.reverse();
    let (a, b) = tokio::join!(
        tokio::spawn(complete(store.clone(), stalled.clone())),
        tokio::spawn(complete(store.clone(), reversed))
    );
    let (a, b) = (a.expect("task"), b.expect("task"));
    let a_set: HashSet<KeyId> = a.iter().copied().collect();
    assert!(
        b.iter().all(|k| !a_set.contains(k)),
        "two completers took one key"
    );
    assert_eq!(
        a.len() + b.len(),
        stalled.len(),
        "every stalled key taken once"
    );

    let reap = |store: Arc<PostgresStore>| async move {
        let mut total = 0;
        loop {
            let n = store.reap_keys(at(5000), 9).await.expect("reaped");
            if n == 0 {
                return total;
            }
            total += n;
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(reap(store.clone())),
        tokio::spawn(reap(store.clone()))
    );
    assert_eq!(
        a.expect("task") + b.expect("task"),
        200,
        "each finished key reaped once"
    );
}
