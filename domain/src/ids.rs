//! The ids of rides, idempotency keys and users: the database's numbers,
//! typed so one cannot stand for another. They live apart from the types
//! they name, so `ride` and `idempotency` can each use the other's id
//! without depending on each other.

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A ride, booked once per idempotency key.
    RideId
);
id!(
    /// An idempotency key's row (not the client's key string).
    KeyId
);
id!(
    /// A rider.
    UserId
);
