//! Users: seeding the demo riders (`up`) and authenticating requests.

use std::sync::Arc;

use domain::{ApiKeyHash, User};
use tracing::{info, warn};

use crate::ports::{GatewayError, PaymentGateway, Store, StoreError};

/// The demo riders and the card source their Stripe customer gets: one whose
/// card charges, one whose card is declined (the seed's two), and one with
/// no card at all, whose charges Stripe refuses for good (a 502 to try).
pub const DEMO_USERS: [(&str, &str); 3] = [
    ("user@example.com", "tok_visa"),
    ("user-bad-source@example.com", "tok_chargeCustomerFail"),
    ("user-no-card@example.com", ""),
];

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("creating the Stripe customer for {email}: {source}")]
    Gateway {
        email: String,
        #[source]
        source: GatewayError,
    },
}

/// A demo user as seeded, with the API key issued this run, if any.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub user: User,
    pub api_key: Option<String>,
}

/// Creates (or keeps) the demo users and their Stripe customers. Safe to run
/// again: an existing user keeps its customer.
pub struct SeedDemoUsers {
    store: Arc<dyn Store>,
    gateway: Arc<dyn PaymentGateway>,
}

impl SeedDemoUsers {
    pub fn new(store: Arc<dyn Store>, gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { store, gateway }
    }

    /// `new_api_key`, when given, makes one fresh API key per user (stored
    /// hashed; earlier keys keep working). The plain keys are returned once.
    pub async fn run(
        &self,
        mut new_api_key: Option<&mut (dyn FnMut() -> String + Send)>,
    ) -> Result<Vec<SeededUser>, SeedError> {
        let mut seeded = Vec::new();
        for (email, source) in DEMO_USERS {
            let user =
                match self.store.find_user_by_email(email).await? {
                    Some(user) => user,
                    None => {
                        let customer = self.gateway.create_customer(email, source).await.map_err(
                            |source| SeedError::Gateway {
                                email: email.to_owned(),
                                source,
                            },
                        )?;
                        let user = self.store.upsert_user(email, &customer).await?;
                        info!(email, customer = %user.stripe_customer_id, "demo user created");
                        user
                    }
                };
            let api_key = match new_api_key.as_mut() {
                Some(generate) => {
                    let key = generate();
                    self.store
                        .add_api_key(user.id, &ApiKeyHash::of(&key))
                        .await?;
                    Some(key)
                }
                None => None,
            };
            seeded.push(SeededUser { user, api_key });
        }
        Ok(seeded)
    }
}

/// How `Authorization` names the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The seed's demo mode: the header is the user's email, trusted as is.
    Email,
    /// `Authorization: Bearer <key>`, keys issued by `up`, stored hashed.
    ApiKey,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is required")]
    Missing,
    #[error("the Authorization header does not name a known user")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Authenticate {
    store: Arc<dyn Store>,
    mode: AuthMode,
}

impl Authenticate {
    pub fn new(store: Arc<dyn Store>, mode: AuthMode) -> Self {
        if mode == AuthMode::Email {
            warn!(
                "AUTH_MODE=email trusts the Authorization header as the user's email: for demos only"
            );
        }
        Self { store, mode }
    }

    pub async fn user(&self, authorization: Option<&str>) -> Result<User, AuthError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let header = header.ok_or(AuthError::Missing)?;
        let user = match self.mode {
            AuthMode::Email => self.store.find_user_by_email(header).await?,
            AuthMode::ApiKey => {
                let Some(token) = header
                    .strip_prefix("Bearer ")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                else {
                    return Err(AuthError::Unknown);
                };
                self.store
                    .find_user_by_api_key(&ApiKeyHash::of(token))
                    .await?
            }
        };
        user.ok_or(AuthError::Unknown)
    }
}
