//! Riders. A user is identified by email (the demo's `AUTH_MODE=email`) or by
//! an API key, and pays through one Stripe customer.

pub use crate::ids::UserId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    /// The Stripe customer the user's rides are charged to.
    pub stripe_customer_id: String,
    /// The PaymentMethod saved for off-session payments (PaymentIntents);
    /// `None` for a user saved for Charges only.
    pub stripe_payment_method_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::UserId;

    #[test]
    fn a_user_id_displays_as_its_number() {
        assert_eq!(UserId(7).to_string(), "7");
    }
}
