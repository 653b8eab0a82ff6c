//! Read-only use cases: a rider's own rides.

use std::sync::Arc;

use domain::{RefundView, RideId, RideShown, RideView, User};

use crate::ports::{Keys, StoreError};

pub struct ShowRide {
    keys: Arc<dyn Keys>,
}

impl ShowRide {
    pub fn new(keys: Arc<dyn Keys>) -> Self {
        Self { keys }
    }

    /// The ride, if it exists and belongs to `user` (someone else's ride
    /// is indistinguishable from a missing one), with its refund once it
    /// was cancelled.
    pub async fn run(&self, user: &User, id: RideId) -> Result<Option<RideShown>, StoreError> {
        let Some(ride) = self
            .keys
            .find_ride(id)
            .await?
            .filter(|ride| ride.user_id == user.id)
        else {
            return Ok(None);
        };
        let refund = match ride.status.has_cancellation() {
            true => self
                .keys
                .find_cancellation(ride.id)
                .await?
                .map(|cancellation| RefundView::of(&cancellation)),
            false => None,
        };
        Ok(Some(RideShown {
            ride: RideView::from(&ride),
            refund,
        }))
    }
}
