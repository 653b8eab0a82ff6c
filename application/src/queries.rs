//! Read-only use cases: a rider's own rides, keys waiting for review.

use std::sync::Arc;

use domain::{KeyRecord, ReviewPolicy, Ride, RideId, User};

use crate::ports::{Clock, Keys, StoreError};

pub struct ShowRide {
    keys: Arc<dyn Keys>,
}

impl ShowRide {
    pub fn new(keys: Arc<dyn Keys>) -> Self {
        Self { keys }
    }

    /// The ride, if it exists and belongs to `user`; someone else's ride is
    /// indistinguishable from a missing one.
    pub async fn run(&self, user: &User, id: RideId) -> Result<Option<Ride>, StoreError> {
        Ok(self
            .keys
            .find_ride(id)
            .await?
            .filter(|ride| ride.user_id == user.id))
    }
}

/// Keys whose charge was first attempted longer ago than the gateway keeps
/// idempotency keys: the completer leaves them to a person.
pub struct ListKeysForReview {
    keys: Arc<dyn Keys>,
    clock: Arc<dyn Clock>,
    policy: ReviewPolicy,
}

impl ListKeysForReview {
    pub fn new(keys: Arc<dyn Keys>, clock: Arc<dyn Clock>, policy: ReviewPolicy) -> Self {
        Self {
            keys,
            clock,
            policy,
        }
    }

    pub async fn run(&self, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let cutoff = self.policy.attempted_before(self.clock.now());
        self.keys.keys_for_review(cutoff, limit).await
    }
}
