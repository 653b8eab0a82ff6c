//! Reaching a dependency at start-up: a failure either passes (the server
//! is down or restarting, the schema is not there yet) or never will (a
//! malformed URL, wrong credentials). The caller waits out the first kind
//! with backoff and stops at once on the second, saying which.

/// Why a dependency could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Worth waiting for: try again later.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// No wait can fix it: the settings are wrong.
    #[error("{0:#}")]
    Configuration(anyhow::Error),
}

impl ConnectError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Transient(_))
    }
}

/// Query parameters that can carry a credential (libpq's `password`,
/// `sslpassword`, and the usual names of tokens).
const SECRET_PARAMETERS: [&str; 6] = [
    "password",
    "sslpassword",
    "pass",
    "token",
    "secret",
    "auth_token",
];

/// A URL for log lines and error messages, with every credential in it
/// replaced by `***`: the password, a user name that stands alone (as a
/// NATS token does: `nats://TOKEN@host`), and query parameters such as
/// `?password=`. A text that does not parse as a URL is not shown at all,
/// since where its secret is cannot be told.
pub fn redact_url(text: &str) -> String {
    // No host, no URL of ours: `u:secret@host` reads as scheme `u` and a
    // path holding the secret.
    let Some(mut url) = url::Url::parse(text).ok().filter(url::Url::has_host) else {
        return "<a URL that does not parse>".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    } else if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| {
            let secret = SECRET_PARAMETERS.contains(&name.to_ascii_lowercase().as_str());
            let value = if secret { "***".into() } else { value };
            (name.into_owned(), value.into_owned())
        })
        .collect();
    if !pairs.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_url_loses_every_credential_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/rides?sslmode=require"),
            "postgres://app:***@db:5432/rides?sslmode=require"
        );
        let token = redact_url("nats://s3cret-token@nats:4222");
        assert_eq!(token, "nats://***@nats:4222");
        let query = redact_url("postgres://db/rides?user=app&password=s3cret&sslpassword=k3y");
        assert!(
            !query.contains("s3cret") && !query.contains("k3y"),
            "{query}"
        );
        assert!(query.contains("user=app"), "{query}");
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        let garbled = redact_url("postgres://u:s3cret@[::1:5432/db");
        assert!(!garbled.contains("s3cret"), "{garbled}");
        assert!(!redact_url("u:s3cret@host").contains("s3cret"));
    }
}
