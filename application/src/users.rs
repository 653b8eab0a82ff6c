//! Users: seeding the demo riders (`up`) and authenticating requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use domain::{ApiKeyHash, TestCard, User};
use tracing::info;

use crate::ports::{Clock, GatewayError, PaymentGateway, SavedCustomer, StoreError, Users};

/// The demo riders and the card source their Stripe customer gets: one whose
/// card charges, one whose card is declined (the seed's two), and one with
/// no card at all, whose charges Stripe refuses for good (a 502 to try).
pub const DEMO_USERS: [(&str, TestCard); 4] = [
    ("user@example.com", TestCard::Visa),
    ("user-bad-source@example.com", TestCard::Declined),
    ("user-3ds@example.com", TestCard::AuthenticationRequired),
    ("user-no-card@example.com", TestCard::None),
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
impl SeedDemoUsers {
    /// The user with this email, created with a Stripe customer paying by
    /// `card` if missing; a user saved before PaymentMethods (no
    /// PaymentMethod, a card to save) gets one saved to its customer.
    async fn seed_user(&self, email: &str, card: TestCard) -> Result<User, SeedError> {
        let gateway_error = |source| SeedError::Gateway {
            email: email.to_owned(),
            source,
        };
        let existing = self.users.find_user_by_email(email).await?;
        if let Some(user) = &existing
            && (user.stripe_payment_method_id.is_some() || card.payment_method().is_none())
        {
            return Ok(user.clone());
        }
        let created = existing.is_none();
        let customer = match existing {
            Some(user) => {
                let Some(payment_method_id) = self
                    .gateway
                    .save_payment_method(&user.stripe_customer_id, card)
                    .await
                    .map_err(gateway_error)?
                else {
                    return Ok(user);
                };
                info!(email, payment_method = %payment_method_id, "demo user's card saved as a PaymentMethod");
                SavedCustomer {
                    customer_id: user.stripe_customer_id,
                    payment_method_id: Some(payment_method_id),
                }
            }
            None => self
                .gateway
                .create_customer(email, card)
                .await
                .map_err(gateway_error)?,
        };
        let user = self.users.upsert_user(email, &customer).await?;
        if created {
            info!(email, customer = %user.stripe_customer_id, "demo user created");
        }
        Ok(user)
    }
}

pub struct SeedDemoUsers {
    users: Arc<dyn Users>,
    gateway: Arc<dyn PaymentGateway>,
}

impl SeedDemoUsers {
    pub fn new(users: Arc<dyn Users>, gateway: Arc<dyn PaymentGateway>) -> Self {
        Self { users, gateway }
    }

    /// `new_api_key`, when given, makes one fresh API key per user (stored
    /// hashed; earlier keys keep working). The plain keys are returned once.
    pub async fn run(
        &self,
        mut new_api_key: Option<&mut (dyn FnMut() -> String + Send)>,
    ) -> Result<Vec<SeededUser>, SeedError> {
        let mut seeded = Vec::new();
        for (email, card) in DEMO_USERS {
            let user = self.seed_user(email, card).await?;
            let api_key = match new_api_key.as_mut() {
                Some(generate) => {
                    let key = generate();
                    self.users
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
    users: Arc<dyn Users>,
    mode: AuthMode,
    cache: Option<UserCache>,
}

/// What a request authenticates with, as looked up: the email, or the API
/// key's hash (the plain key is never kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Credential {
    Email(String),
    ApiKey(ApiKeyHash),
}

/// Users found recently, by credential, so that a client's requests do not
/// each cost a round trip to the store. An entry lives `ttl`: a user whose
/// email or API key is removed is still let in for up to that long.
struct UserCache {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    entries: Mutex<HashMap<Credential, (SystemTime, User)>>,
}

impl UserCache {
    /// Past this many entries, expired ones are dropped, and if none had
    /// expired, all of them: memory stays bounded whoever calls.
    const CAPACITY: usize = 10_000;

    fn get(&self, credential: &Credential) -> Option<User> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (found_at, user) = entries.get(credential)?;
        self.is_fresh(*found_at, self.clock.now())
            .then(|| user.clone())
    }

    fn put(&self, credential: &Credential, user: &User) {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, (found_at, _)| self.is_fresh(*found_at, now));
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
        }
        entries.insert(credential.clone(), (now, user.clone()));
    }

    fn is_fresh(&self, found_at: SystemTime, now: SystemTime) -> bool {
        now.duration_since(found_at).is_ok_and(|age| age < self.ttl)
    }
}

impl Authenticate {
    /// How long the API remembers a user it found, unless told otherwise.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

    pub fn new(users: Arc<dyn Users>, mode: AuthMode) -> Self {
        Self {
            users,
            mode,
            cache: None,
        }
    }

    /// Remembers each user found for `ttl` (zero: never).
    pub fn cached(mut self, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        self.cache = (!ttl.is_zero()).then(|| UserCache {
            clock,
            ttl,
            entries: Mutex::new(HashMap::new()),
        });
        self
    }

    pub async fn user(&self, authorization: Option<&str>) -> Result<User, AuthError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let header = header.ok_or(AuthError::Missing)?;
        let credential = match self.mode {
            AuthMode::Email => Credential::Email(header.to_owned()),
            AuthMode::ApiKey => {
                let Some(token) = header
                    .strip_prefix("Bearer ")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                else {
                    return Err(AuthError::Unknown);
                };
                Credential::ApiKey(ApiKeyHash::of(token))
            }
        };
        if let Some(user) = self.cache.as_ref().and_then(|c| c.get(&credential)) {
            return Ok(user);
        }
        let user = match &credential {
            Credential::Email(email) => self.users.find_user_by_email(email).await?,
            Credential::ApiKey(hash) => self.users.find_user_by_api_key(hash).await?,
        };
        let user = user.ok_or(AuthError::Unknown)?;
        if let Some(cache) = &self.cache {
            cache.put(&credential, &user);
        }
        Ok(user)
    }
}
