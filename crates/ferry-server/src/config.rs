//! [`ServerConfig`]: where the control server listens, how it authenticates, which environment
//! it serves by default, and how large a request body may be.
//!
//! The config is built in code by `ferry serve` (from flags and `FERRY_API_TOKEN`), not read
//! from a file. [`ServerConfig::validate`] is the one place its rules are checked, before
//! anything is bound or written: most importantly, a listen address other than loopback is
//! refused unless the operator gave the token explicitly, so a server reachable from the
//! network never runs with a token nobody chose.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ferry_spec::Project;

use crate::error::ServerError;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);
/// Default port of `ferry serve`.
pub const DEFAULT_PORT: u16 = 8787;
/// Default largest request body, in bytes: a deploy of several flow files (each at most
/// 1 MiB) fits.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// Smallest `max_body` accepted: a promotion or replay request must fit.
pub const MIN_MAX_BODY: usize = 1024;
/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "FERRY_API_TOKEN";
/// Shortest token accepted from the operator, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest token accepted from the operator, in characters.
pub const MAX_TOKEN_CHARS: usize = 512;
/// Name of the file, in the state directory, holding the sha256 of a generated token.
pub const TOKEN_HASH_FILE: &str = "api-token.sha256";

/// Where the bearer token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A token chosen by the operator (`FERRY_API_TOKEN`). Only its sha256 is kept in memory;
    /// nothing is written.
    Given(String),
    /// No token given: use the token whose sha256 is stored in
    /// `<state dir>/api-token.sha256`; at the first start, when there is none, generate one
    /// (32 random bytes, hex), print it once to stderr and store only its hash (mode 0600).
    Stored,
}

impl TokenSource {
    /// `Given` when `FERRY_API_TOKEN` is set and not empty, else `Stored`.
    pub fn from_env() -> TokenSource {
        match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => TokenSource::Given(t.trim().to_string()),
            _ => TokenSource::Stored,
        }
    }
}

// The token never reaches logs.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Given(_) => f.write_str("Given(<redacted>)"),
            TokenSource::Stored => f.write_str("Stored"),
        }
    }
}

/// How the control server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on. Default [`DEFAULT_LISTEN`] (127.0.0.1:8787). Any address that is
    /// not loopback needs [`TokenSource::Given`].
    pub listen: SocketAddr,
    /// Where the bearer token comes from.
    pub token: TokenSource,
    /// The state directory (`--state`): where the hash of a generated token is kept.
    pub state_dir: PathBuf,
    /// The environment requests act on when they name none (`--env`).
    pub env: String,
    /// The project file (`ferry.yaml`): its environments are listed on the dashboard, and
    /// promotions follow its topology. Without one, promotions cannot be requested (pending
    /// ones can still be approved or rejected).
    pub project: Option<Project>,
    /// Largest request body, in bytes; larger bodies get 413. Default [`DEFAULT_MAX_BODY`].
    pub max_body: usize,
    /// The address browsers use to reach the server (`--public-url`), when it differs from
    /// `listen` (a reverse proxy, TLS in front): an `https` one makes session cookies `Secure`.
    pub public_url: Option<url::Url>,
}

impl ServerConfig {
    /// A config with the defaults: loopback, token from `FERRY_API_TOKEN` or stored, 4 MiB
    /// bodies, no project.
    pub fn new(state_dir: impl Into<PathBuf>, env: impl Into<String>) -> ServerConfig {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            token: TokenSource::from_env(),
            state_dir: state_dir.into(),
            env: env.into(),
            project: None,
            max_body: DEFAULT_MAX_BODY,
            public_url: None,
        }
    }

    /// Checks every rule; the error says what to change.
    pub fn validate(&self) -> Result<(), ServerError> {
        if !self.listen.ip().is_loopback() && self.token == TokenSource::Stored {
            return Err(ServerError::PublicBindWithoutToken { addr: self.listen });
        }
        if let TokenSource::Given(t) = &self.token {
            check_token_text(t)?;
        }
        if self.env.trim().is_empty() {
            return Err(ServerError::Config(
                "the default environment is empty; pass --env NAME".into(),
            ));
        }
        if let Some(p) = &self.project
            && !p.environments.is_empty()
            && p.environment(&self.env).is_none()
        {
            return Err(ServerError::Config(format!(
                "environment `{}` is not defined in the project file; it defines {}",
                self.env,
                p.environments
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(u) = &self.public_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ServerError::Config(format!(
                "--public-url {u} is not an http:// or https:// address"
            )));
        }
        if self.max_body < MIN_MAX_BODY {
            return Err(ServerError::Config(format!(
                "the request body limit is {} bytes; use at least {MIN_MAX_BODY}",
                self.max_body
            )));
        }
        Ok(())
    }
}

/// A token the operator chose must be long enough to resist guessing and travel unchanged in
/// an `Authorization` header.
pub(crate) fn check_token_text(token: &str) -> Result<(), ServerError> {
    let n = token.chars().count();
    if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&n)
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ServerError::BadToken(format!(
            "{TOKEN_ENV} must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} visible ASCII characters without spaces (it has {n} characters); `openssl rand -hex 32` makes a good one"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            token: TokenSource::Stored,
            ..ServerConfig::new("/tmp/ferry-test", "dev")
        }
    }

    #[test]
    fn loopback_is_the_default_and_needs_no_token() {
        let c = config();
        assert!(c.listen.ip().is_loopback());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_public_bind_needs_a_given_token() {
        let mut c = config();
        c.listen = "0.0.0.0:8787".parse().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("FERRY_API_TOKEN"), "{e}");
        assert!(e.contains("0.0.0.0:8787"), "{e}");
        c.token = TokenSource::Given("a-long-enough-token-123".into());
        assert!(c.validate().is_ok());
        c.listen = "[::1]:8787".parse().unwrap();
        c.token = TokenSource::Stored;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn weak_or_unprintable_tokens_are_refused() {
        for bad in [
            "short",
            "has a space in it here",
            "tab\tinside-the-token-xx",
        ] {
            let mut c = config();
            c.token = TokenSource::Given(bad.into());
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("visible ASCII"), "{bad}: {e}");
            assert!(!e.contains(bad), "the token must not be echoed: {e}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = TokenSource::Given("secret-token-value-1234".into());
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn tiny_body_limits_are_refused() {
        let mut c = config();
        c.max_body = 10;
        assert!(c.validate().is_err());
    }
}
