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

/// A URL with its password replaced, for log lines and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_url_loses_its_password_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/rides?sslmode=require"),
            "postgres://app:***@db:5432/rides?sslmode=require"
        );
        assert_eq!(
            redact_url("nats://token@nats:4222"),
            "nats://token:***@nats:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
