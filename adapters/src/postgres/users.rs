//! Riders and their API keys.

use super::*;

#[async_trait]
impl Users for PostgresStore {
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, email, stripe_customer_id, stripe_payment_method_id FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn find_user_by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT u.id, u.email, u.stripe_customer_id, u.stripe_payment_method_id FROM users u \
             JOIN api_keys a ON a.user_id = u.id WHERE a.key_hash = $1",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> =
            sqlx::query_as("SELECT id, email, stripe_customer_id, stripe_payment_method_id FROM users WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(User::from))
    }

    async fn upsert_user(&self, email: &str, customer: &SavedCustomer) -> Result<User, StoreError> {
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (email, stripe_customer_id, stripe_payment_method_id) \
             VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE SET \
             stripe_customer_id = EXCLUDED.stripe_customer_id, \
             stripe_payment_method_id = EXCLUDED.stripe_payment_method_id \
             RETURNING id, email, stripe_customer_id, stripe_payment_method_id",
        )
        .bind(email)
        .bind(&customer.customer_id)
        .bind(&customer.payment_method_id)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(User::from(row))
    }

    async fn add_api_key(&self, user_id: UserId, hash: &ApiKeyHash) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (user_id, key_hash) VALUES ($1, $2) \
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(user_id.0)
        .bind(hash.as_str())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
