//! Read-only use cases: a rider's own rides.

use std::sync::Arc;

use domain::{Ride, RideId, User};

use crate::ports::{Keys, StoreError};

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
