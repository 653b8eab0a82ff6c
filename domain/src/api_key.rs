//! API keys for `AUTH_MODE=api-key`. Only a key's SHA-256 is ever stored, so
//! a leaked database does not leak working credentials.

use sha2::{Digest, Sha256};

/// The stored form of an API key: lowercase hex SHA-256 of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    pub fn of(api_key: &str) -> Self {
        let digest = Sha256::digest(api_key.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        Self(hex)
    }

    /// Rebuilds a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_hex_and_does_not_contain_the_key() {
        let hash = ApiKeyHash::of("rr_live_secret");
        assert_eq!(hash.as_str().len(), 64);
        assert!(!hash.as_str().contains("secret"));
        assert_eq!(hash, ApiKeyHash::of("rr_live_secret"));
        assert_ne!(hash, ApiKeyHash::of("rr_live_secres"));
        assert_eq!(
            ApiKeyHash::of("").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
