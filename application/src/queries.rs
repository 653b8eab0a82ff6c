//! Read-only use cases: a rider's own rides, keys waiting for review.

use std::sync::Arc;

use domain::{KeyRecord, ReviewPolicy, Ride, RideId, User};

use crate::ports::{Clock, Store, StoreError};

pub struct ShowRide {
    store: Arc<dyn Store>,
}

impl ShowRide {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The ride, if it exists and belongs to `user`; someone else's ride is
    /// indistinguishable from a missing one.
    pub async fn run(&self, user: &User, id: RideId) -> Result<Option<Ride>, StoreError> {
        Ok(self
            .store
            .find_ride(id)
            .await?
            .filter(|ride| ride.user_id == user.id))
    }
}

/// Keys whose charge was first attempted longer ago than the gateway keeps
/// idempotency keys: the completer leaves them to a person.
pub struct ListKeysForReview {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: ReviewPolicy,
}

impl ListKeysForReview {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policy: ReviewPolicy) -> Self {
        Self {
            store,
            clock,
            policy,
        }
    }

    pub async fn run(&self, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let cutoff = self.policy.attempted_before(self.clock.now());
        self.store.keys_for_review(cutoff, limit).await
    }
}
