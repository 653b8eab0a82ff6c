//! Riders. A user is identified by email (the demo's `AUTH_MODE=email`) or by
//! an API key, and pays through one Stripe customer.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    /// The Stripe customer the user's rides are charged to.
    pub stripe_customer_id: String,
}

#[cfg(test)]
mod tests {
    use super::UserId;

    #[test]
    fn a_user_id_displays_as_its_number() {
        assert_eq!(UserId(7).to_string(), "7");
    }
}
