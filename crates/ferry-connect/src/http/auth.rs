//! Authentication of HTTP requests: bearer, basic, API key and OAuth2 client credentials.
//!
//! OAuth2 tokens are fetched on first use, cached until shortly before they expire, and fetched
//! again when the server answers 401 (a token may be revoked before its stated expiry). One
//! fetch at a time: concurrent requests wait for the same token instead of each asking for one.

use std::sync::Arc;
use std::time::Duration;

use ferry_spec::template::{Encoding, Root};
use ferry_spec::{Auth, Template};
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::ConnectError;
use crate::http::client::{describe, excerpt, read_capped, redact_url};
use ferry_env::{RunEnv, SecretValue};

/// Tokens are renewed this long before their stated expiry.
const EXPIRY_SKEW: Duration = Duration::from_secs(30);
/// Assumed lifetime of a token whose response has no `expires_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Largest token response read.
const MAX_TOKEN_RESPONSE: u64 = 64 * 1024;

/// Authentication with its secrets resolved.
#[derive(Debug, Clone)]
pub enum ResolvedAuth {
    None,
    Bearer(SecretValue),
    Basic {
        user: String,
        pass: SecretValue,
    },
    ApiKey {
        header: HeaderName,
        key: SecretValue,
    },
    OAuth2(Arc<OAuth2>),
}

/// An OAuth2 client-credentials token source.
#[derive(Debug)]
pub struct OAuth2 {
    token_url: String,
    client_id: String,
    secret: SecretValue,
    scopes: Vec<String>,
    client: reqwest::Client,
    cache: Mutex<Option<(SecretValue, Instant)>>,
}

pub(crate) fn render_env(
    text: &str,
    env: &RunEnv,
    field: &'static str,
) -> Result<String, ConnectError> {
    let t = Template::parse(text).map_err(|source| ConnectError::Template { field, source })?;
    t.render(Encoding::Raw, |v| match v.root {
        Root::Env => env.var(&v.path.join(".")).map(Into::into),
        _ => None,
    })
    .map_err(|source| ConnectError::Template { field, source })
}

impl ResolvedAuth {
    /// Resolves secrets and variables of an `auth:` block.
    pub fn resolve(
        spec: Option<&Auth>,
        env: &RunEnv,
        client: &reqwest::Client,
    ) -> Result<Self, ConnectError> {
        Ok(match spec {
            None => ResolvedAuth::None,
            Some(Auth::Bearer(s)) => ResolvedAuth::Bearer(env.secrets.resolve(s)?),
            Some(Auth::Basic(b)) => ResolvedAuth::Basic {
                user: render_env(&b.username, env, "auth.basic.username")?,
                pass: env.secrets.resolve(&b.password)?,
            },
            Some(Auth::ApiKey(k)) => ResolvedAuth::ApiKey {
                header: HeaderName::from_bytes(k.header.as_bytes())
                    .map_err(|e| ConnectError::Client(format!("auth.api_key.header: {e}")))?,
                key: env.secrets.resolve(&k.key)?,
            },
            Some(Auth::Oauth2(o)) => ResolvedAuth::OAuth2(Arc::new(OAuth2 {
                token_url: render_env(&o.token_url, env, "auth.oauth2.token_url")?,
                client_id: render_env(&o.client_id, env, "auth.oauth2.client_id")?,
                secret: env.secrets.resolve(&o.client_secret)?,
                scopes: o.scopes.clone(),
                client: client.clone(),
                cache: Mutex::new(None),
            })),
        })
    }

    /// Adds credentials to a request.
    pub async fn apply(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ConnectError> {
        Ok(match self {
            ResolvedAuth::None => req,
            ResolvedAuth::Bearer(t) => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(&format!("Bearer {}", t.expose()))?,
            ),
            ResolvedAuth::Basic { user, pass } => req.basic_auth(user, Some(pass.expose())),
            ResolvedAuth::ApiKey { header, key } => {
                req.header(header.clone(), sensitive(key.expose())?)
            }
            ResolvedAuth::OAuth2(o) => {
                let token = o.token().await?;
                req.header(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose()))?,
                )
            }
        })
    }

    /// True when a 401 may be cured by fetching a new token.
    pub fn refreshable(&self) -> bool {
        matches!(self, ResolvedAuth::OAuth2(_))
    }

    /// Forgets a cached token after a 401.
    pub async fn invalidate(&self) {
        if let ResolvedAuth::OAuth2(o) = self {
            *o.cache.lock().await = None;
        }
    }
}

fn sensitive(v: &str) -> Result<HeaderValue, ConnectError> {
    let mut h = HeaderValue::from_str(v).map_err(|_| {
        ConnectError::Client(
            "a credential contains characters not allowed in an HTTP header".into(),
        )
    })?;
    h.set_sensitive(true);
    Ok(h)
}

impl OAuth2 {
    /// A valid token, fetched when none is cached or the cached one is about to expire.
    pub async fn token(&self) -> Result<SecretValue, ConnectError> {
        let mut cache = self.cache.lock().await;
        if let Some((tok, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(tok.clone());
        }
        let (tok, ttl) = self.fetch().await?;
        let until = Instant::now() + ttl.saturating_sub(EXPIRY_SKEW).max(Duration::from_secs(1));
        *cache = Some((tok.clone(), until));
        Ok(tok)
    }

    async fn fetch(&self) -> Result<(SecretValue, Duration), ConnectError> {
        let url = redact_url(&self.token_url);
        let err = |reason: String| ConnectError::OAuth {
            url: url.clone(),
            reason,
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", self.secret.expose()),
        ];
        let scope = self.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        let mut resp = self
            .client
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| err(describe(&e)))?;
        let status = resp.status();
        let body = read_capped(&mut resp, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|_| err("token response too large or unreadable".into()))?;
        if !status.is_success() {
            return Err(err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                excerpt(&body, 200)
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("token response is not JSON: {e}")))?;
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("token response has no access_token".into()))?;
        let ttl = v
            .get("expires_in")
            .and_then(|e| {
                e.as_u64()
                    .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|s| Duration::from_secs(s.min(86_400 * 365)))
            .unwrap_or(DEFAULT_TOKEN_TTL);
        Ok((SecretValue::new(token), ttl))
    }
}
