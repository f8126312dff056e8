//! [`SandboxConfig`]: what a sandbox serves (how many records, from which seed) and how its
//! source is protected (static bearer token, OAuth2 client credentials).
//!
//! The config is built in code (by tests, benches and the CLI), not read from files, so it has
//! no serde derive; [`SandboxConfig::validate`] is the one place its limits are checked.

use std::fmt;
use std::time::Duration;

use crate::error::SandboxError;

/// Default number of source records.
pub const DEFAULT_RECORDS: u64 = 1000;
/// Default generation seed.
pub const DEFAULT_SEED: u64 = 42;
/// Default lifetime of an OAuth2 access token.
pub const DEFAULT_OAUTH_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default largest `page_size` the source accepts.
pub const DEFAULT_MAX_PAGE_SIZE: usize = 1000;
/// Largest number of source records a sandbox can hold. The index costs a few bytes per record
/// (see [`crate::source`]), so this keeps a typo from allocating gigabytes.
pub const MAX_RECORDS: u64 = 50_000_000;
/// Largest `max_page_size` allowed.
pub const MAX_PAGE_SIZE_LIMIT: usize = 100_000;

/// What a [`crate::Sandbox`] serves.
#[derive(Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Number of source records, ids `1..=records`. Default 1000, at most [`MAX_RECORDS`].
    pub records: u64,
    /// Seed of the deterministic record generator. Default 42.
    pub seed: u64,
    /// When `Some`, `GET /api/orders` requires `Authorization: Bearer <this token>` or a token
    /// issued by `POST /oauth/token`; anything else gets 401.
    pub source_token: Option<String>,
    /// `(client_id, client_secret)` accepted by `POST /oauth/token`. When `Some`, the source
    /// also requires a bearer token (an OAuth token or `source_token`).
    pub oauth_client: Option<(String, String)>,
    /// Lifetime of issued OAuth access tokens. Default one hour.
    pub oauth_token_ttl: Duration,
    /// Largest `page_size` (or `limit`) the source accepts; above it answers 400. Default 1000.
    pub max_page_size: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            records: DEFAULT_RECORDS,
            seed: DEFAULT_SEED,
            source_token: None,
            oauth_client: None,
            oauth_token_ttl: DEFAULT_OAUTH_TOKEN_TTL,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
        }
    }
}

// Secrets never reach logs: Debug shows whether they are set, not their value.
impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("records", &self.records)
            .field("seed", &self.seed)
            .field(
                "source_token",
                &self.source_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "oauth_client",
                &self
                    .oauth_client
                    .as_ref()
                    .map(|(id, _)| (id.as_str(), "<redacted>")),
            )
            .field("oauth_token_ttl", &self.oauth_token_ttl)
            .field("max_page_size", &self.max_page_size)
            .finish()
    }
}

impl SandboxConfig {
    /// Checks every limit; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.records > MAX_RECORDS {
            return Err(SandboxError::InvalidConfig {
                field: "records",
                problem: format!(
                    "is {}; the sandbox holds at most {MAX_RECORDS} records",
                    self.records
                ),
            });
        }
        if self.max_page_size == 0 || self.max_page_size > MAX_PAGE_SIZE_LIMIT {
            return Err(SandboxError::InvalidConfig {
                field: "max_page_size",
                problem: format!(
                    "is {}; use a value from 1 to {MAX_PAGE_SIZE_LIMIT}",
                    self.max_page_size
                ),
            });
        }
        if let Some(token) = &self.source_token
            && !is_token_text(token)
        {
            return Err(SandboxError::InvalidConfig {
                field: "source_token",
                problem: "must be 1 to 4096 visible ASCII characters without spaces".into(),
            });
        }
        if let Some((id, secret)) = &self.oauth_client
            && (id.is_empty() || secret.is_empty())
        {
            return Err(SandboxError::InvalidConfig {
                field: "oauth_client",
                problem: "needs a non-empty client id and client secret".into(),
            });
        }
        Ok(())
    }

    /// Whether `GET /api/orders` requires a bearer token.
    pub(crate) fn source_requires_auth(&self) -> bool {
        self.source_token.is_some() || self.oauth_client.is_some()
    }
}

/// A token that can travel in an `Authorization: Bearer` header unchanged.
fn is_token_text(token: &str) -> bool {
    !token.is_empty() && token.len() <= 4096 && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_documented_values() {
        let config = SandboxConfig::default();
        assert_eq!(config.records, 1000);
        assert_eq!(config.seed, 42);
        assert_eq!(config.oauth_token_ttl, Duration::from_secs(3600));
        assert_eq!(config.max_page_size, 1000);
        assert!(config.validate().is_ok());
        assert!(!config.source_requires_auth());
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            (
                SandboxConfig {
                    max_page_size: 0,
                    ..SandboxConfig::default()
                },
                "max_page_size",
            ),
            (
                SandboxConfig {
                    records: MAX_RECORDS + 1,
                    ..SandboxConfig::default()
                },
                "records",
            ),
            (
                SandboxConfig {
                    source_token: Some("has space".into()),
                    ..SandboxConfig::default()
                },
                "source_token",
            ),
            (
                SandboxConfig {
                    oauth_client: Some(("id".into(), String::new())),
                    ..SandboxConfig::default()
                },
                "oauth_client",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let config = SandboxConfig {
            source_token: Some("tok-SECRET".into()),
            oauth_client: Some(("client".into(), "pw-SECRET".into())),
            ..SandboxConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("client"));
        assert!(config.source_requires_auth());
    }
}
