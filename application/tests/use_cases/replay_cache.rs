//! The replay cache: a finished key's answer replayed from the API
//! process's memory, the mismatch check still applied, nothing unfinished
//! ever kept, and the cache bounded in time, entries and bytes.

use std::sync::Arc;
use std::time::Duration;

use application::ports::{KeyPhase, MockKeys, MockUsers};
use application::{Cached, PhaseError, PhaseMachine, ReplayCache, ReplayCacheLimits};
use domain::{IdempotencyKey, RequestFingerprint, RideParams, StoredResponse, UserId};

use crate::support::{Harness, key, settings};

fn cache(h: &Harness, limits: ReplayCacheLimits) -> Arc<ReplayCache> {
    Arc::new(ReplayCache::new(limits, h.clock.clone()))
}

fn cached_rides(h: &Harness, cache: &Arc<ReplayCache>) -> PhaseMachine {
    PhaseMachine::new(
        h.store.clone(),
        h.store.clone(),
        h.gateway.clone(),
        h.clock.clone(),
        settings(),
    )
    .with_replay_cache(cache.clone())
}

#[tokio::test]
async fn a_finished_key_is_answered_from_memory_without_the_store() {
    let h = Harness::new().await;
    let stored = StoredResponse {
        status: 201,
        body: "{\"ride\":1}".into(),
    };
    let mut keys = MockKeys::new();
    let answer = stored.clone();
    // The store is asked once; every later replay comes from the cache.
    keys.expect_begin_request()
        .times(1)
        .returning(move |_, _, _| Ok(KeyPhase::Replay(answer.clone())));
    let cache = cache(&h, ReplayCacheLimits::DEFAULT);
    let rides = PhaseMachine::new(
        Arc::new(keys),
        Arc::new(MockUsers::new()),
        h.gateway.clone(),
        h.clock.clone(),
        settings(),
    )
    .with_replay_cache(cache.clone());
    for _ in 0..3 {
        let replay = rides
            .run(h.request(&h.good_user, &key(1)))
            .await
            .expect("replayed");
        assert_eq!(replay.response, stored);
        assert!(replay.replayed);
    }
    // The same key with another body: refused as the store would.
    let mut other = h.request(&h.good_user, &key(1));
    other.params = RideParams::from_numbers([9.0, 9.0, 9.0, 9.0]).expect("valid");
    assert!(matches!(rides.run(other).await, Err(PhaseError::KeyReused)));
    // Keys are per user: another rider's same key is not this answer.
    assert_eq!(
        cache.get(
            h.declined_user.id,
            &IdempotencyKey::parse(&key(1)).expect("key"),
            &h.request(&h.declined_user, &key(1)).fingerprint(),
        ),
        None
    );
}

#[tokio::test]
async fn a_booking_answered_now_is_kept_and_replayed_byte_for_byte() {
    let h = Harness::new().await;
    let cache = cache(&h, ReplayCacheLimits::DEFAULT);
    let rides = cached_rides(&h, &cache);
    let first = rides
        .run(h.request(&h.good_user, &key(1)))
        .await
        .expect("booked");
    assert_eq!((first.response.status, first.replayed), (201, false));
    assert_eq!(cache.usage().0, 1);
    let again = rides
        .run(h.request(&h.good_user, &key(1)))
        .await
        .expect("replayed");
    assert_eq!(again.response, first.response);
    assert!(again.replayed);
    assert_eq!(h.gateway.charge_calls(), 1);
}

#[tokio::test]
async fn an_unfinished_key_is_never_kept() {
    let h = Harness::losing_every_answer().await;
    let cache = cache(&h, ReplayCacheLimits::DEFAULT);
    let rides = PhaseMachine::new(
        h.store.clone(),
        h.store.clone(),
        Arc::new(adapters::memory::FakeGateway::with_faults(
            adapters::memory::FakeGatewayFaults {
                unknown_rate: 1.0,
                latency: Duration::ZERO,
            },
        )),
        h.clock.clone(),
        settings(),
    )
    .with_replay_cache(cache.clone());
    let unknown = rides.run(h.request(&h.good_user, &key(1))).await;
    assert!(
        matches!(unknown, Err(PhaseError::GatewayUnknown { .. })),
        "{unknown:?}"
    );
    let mut failing = h.request(&h.good_user, &key(2));
    failing.raise_error = true;
    assert!(rides.run(failing).await.is_err());
    assert_eq!(cache.usage(), (0, 0), "nothing unfinished is kept");
}

#[tokio::test]
async fn answers_are_kept_no_longer_than_the_ttl() {
    let h = Harness::new().await;
    let cache = cache(
        &h,
        ReplayCacheLimits {
            ttl: Duration::from_secs(60),
            ..ReplayCacheLimits::DEFAULT
        },
    );
    let slot = IdempotencyKey::parse(&key(1)).expect("key");
    let fingerprint = h.request(&h.good_user, &key(1)).fingerprint();
    let answer = StoredResponse {
        status: 402,
        body: "{}".into(),
    };
    cache.put(h.good_user.id, &slot, &fingerprint, &answer);
    h.advance(Duration::from_secs(59));
    assert_eq!(
        cache.get(h.good_user.id, &slot, &fingerprint),
        Some(Cached::Replay(answer))
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(cache.get(h.good_user.id, &slot, &fingerprint), None);
    assert_eq!(cache.usage(), (0, 0), "the stale answer is gone");
    // A TTL longer than the most allowed is cut to it.
    let long = ReplayCache::new(
        ReplayCacheLimits {
            ttl: Duration::from_secs(10 * 3600),
            ..ReplayCacheLimits::DEFAULT
        },
        h.clock.clone(),
    );
    long.put(
        h.good_user.id,
        &slot,
        &fingerprint,
        &StoredResponse {
            status: 201,
            body: "{}".into(),
        },
    );
    h.advance(ReplayCacheLimits::MAX_TTL);
    assert_eq!(long.get(h.good_user.id, &slot, &fingerprint), None);
}

fn entry(n: usize) -> (UserId, IdempotencyKey, RequestFingerprint, StoredResponse) {
    let params = RideParams::from_numbers([0.0; 4]).expect("valid");
    (
        UserId(1),
        IdempotencyKey::parse(&key(n)).expect("key"),
        RequestFingerprint::for_ride("POST", "/rides", &params),
        StoredResponse {
            status: 201,
            body: "x".repeat(100),
        },
    )
}

#[tokio::test]
async fn the_oldest_answers_go_first_past_the_entry_or_byte_limit() {
    let h = Harness::new().await;
    let by_entries = cache(
        &h,
        ReplayCacheLimits {
            max_entries: 2,
            ..ReplayCacheLimits::DEFAULT
        },
    );
    for n in 1..=3 {
        let (user, slot, fingerprint, answer) = entry(n);
        by_entries.put(user, &slot, &fingerprint, &answer);
    }
    assert_eq!(by_entries.usage().0, 2);
    let (user, first, fingerprint, _) = entry(1);
    assert_eq!(
        by_entries.get(user, &first, &fingerprint),
        None,
        "the oldest went"
    );
    let (_, third, _, answer) = entry(3);
    assert_eq!(
        by_entries.get(user, &third, &fingerprint),
        Some(Cached::Replay(answer))
    );
    // One entry costs its key, fingerprint, body and a fixed overhead.
    let (_, one_bytes) = {
        let single = cache(&h, ReplayCacheLimits::DEFAULT);
        let (user, slot, fingerprint, answer) = entry(1);
        single.put(user, &slot, &fingerprint, &answer);
        single.usage()
    };
    let by_bytes = cache(
        &h,
        ReplayCacheLimits {
            max_bytes: one_bytes * 2,
            ..ReplayCacheLimits::DEFAULT
        },
    );
    for n in 1..=5 {
        let (user, slot, fingerprint, answer) = entry(n);
        by_bytes.put(user, &slot, &fingerprint, &answer);
    }
    assert_eq!(by_bytes.usage(), (2, one_bytes * 2));
    // Nothing is kept when the cache is off.
    let off = cache(
        &h,
        ReplayCacheLimits {
            max_entries: 0,
            ..ReplayCacheLimits::DEFAULT
        },
    );
    let (user, slot, fingerprint, answer) = entry(1);
    off.put(user, &slot, &fingerprint, &answer);
    assert_eq!(off.usage(), (0, 0));
}
