//! Who may use the server: bearer tokens and their roles, dashboard sessions, and the CSRF
//! check.
//!
//! # Decisions
//! - **Named tokens with roles, stored hashed.** Tokens made with `ferry token create NAME
//!   --role R` live in the state store as name, role and sha256 ([`crate::tokens`]). The
//!   server's own token (`FERRY_API_TOKEN`, or the one generated at the first start, whose
//!   sha256 is kept in `<state dir>/api-token.sha256`, mode 0600) is the admin token named
//!   [`ADMIN_TOKEN_NAME`]. A presented token is hashed and compared with every known digest
//!   using `subtle`'s constant-time equality (no early exit), so neither the comparison's time
//!   nor a leaked hash gives a token away. Store tokens are read at every request, so a
//!   revocation takes effect at once.
//! - **The token's name is the actor**: `api:<name>` in the audit log for the API,
//!   `dashboard:<name>` for a session opened with it. No request header can change it.
//! - **Roles gate routes.** Each route in [`crate::routes::ROUTES`] names the least role it
//!   needs ([`Role`]: viewer < operator < approver < admin); a token without it gets 403 with
//!   the role needed, and the refusal is written to the audit log.
//! - **The API takes the token only in the `Authorization` header**, never from a cookie: a
//!   browser never adds that header to a cross-site request on its own, so the JSON API needs
//!   no CSRF defence.
//! - **The dashboard logs in once.** `POST /login` with a token starts a session: a random
//!   256-bit id in an `HttpOnly; SameSite=Strict` cookie, kept server-side as its sha256 with
//!   an expiry ([`SESSION_TTL`]) and the token's name; the role is read again at every request,
//!   and a session of a revoked token ends. Sessions live in memory: a restart logs everyone out, and
//!   several `ferry serve` processes behind one address each need their own login. The cookie
//!   never holds the token, so a stolen cookie expires and does not open the API.
//! - **CSRF on dashboard forms**: besides `SameSite=Strict`, every state-changing dashboard
//!   request authenticated by the cookie (and the login form itself) must carry an `Origin`
//!   — or, when a browser sends none, a `Referer` — whose host and port equal the `Host`
//!   header. A request with neither is refused (403). A reverse proxy in front must pass the
//!   `Host` header through unchanged.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ferry_engine::governance::{Actor, REFUSED, Role};
use rand::RngCore as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{TOKEN_HASH_FILE, TokenSource, check_token_text};
use crate::error::{ApiError, ServerError};
use crate::state::AppState;

/// The name of the server's own token (`FERRY_API_TOKEN` or the generated one): an admin.
/// No stored token may take this name.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// How often, at most, a token's last use is written to the store.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "ferry_session";
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest is dropped beyond it.
pub const MAX_SESSIONS: usize = 1024;

/// The sha256 of the API token: all the server knows of it.
#[derive(Clone)]
pub struct ApiToken {
    hash: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<sha256>)")
    }
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiToken {
    /// The token with this text.
    pub fn from_token(token: &str) -> ApiToken {
        ApiToken {
            hash: sha256(token.as_bytes()),
        }
    }

    /// Whether `presented` is the token, in time independent of where the two differ.
    pub fn verify(&self, presented: &str) -> bool {
        bool::from(sha256(presented.as_bytes()).ct_eq(&self.hash))
    }

    /// The sha256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The token the config names. With [`TokenSource::Stored`] and no hash file yet, a token
    /// is generated, its hash written, and the token returned as the second value — the only
    /// time it exists in clear; the caller shows it to the operator once.
    pub fn resolve(
        source: &TokenSource,
        state_dir: &Path,
    ) -> Result<(ApiToken, Option<String>), ServerError> {
        match source {
            TokenSource::Given(t) => {
                check_token_text(t)?;
                Ok((ApiToken::from_token(t), None))
            }
            TokenSource::Stored => {
                let path = state_dir.join(TOKEN_HASH_FILE);
                if let Some(hash) = read_hash_file(&path)? {
                    return Ok((ApiToken { hash }, None));
                }
                let token = generate_token();
                let hash = sha256(token.as_bytes());
                match write_hash_file(state_dir, &path, &hash)? {
                    true => Ok((ApiToken { hash }, Some(token))),
                    // Another process wrote one first: use that one.
                    false => match read_hash_file(&path)? {
                        Some(hash) => Ok((ApiToken { hash }, None)),
                        None => Err(token_file(&path, "vanished right after it was written")),
                    },
                }
            }
        }
    }
}

/// A new token: 32 random bytes from the thread's CSPRNG (seeded by the OS), as hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_file(path: &Path, reason: impl Into<String>) -> ServerError {
    ServerError::TokenFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The stored hash, or `None` when there is no file.
fn read_hash_file(path: &Path) -> Result<Option<[u8; 32]>, ServerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(token_file(path, format!("cannot read it: {e}"))),
    };
    let bad = || {
        token_file(
            path,
            "does not hold a sha256 in hex; delete it and restart to get a new token, or set FERRY_API_TOKEN",
        )
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
    let hash: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    Ok(Some(hash))
}

/// Writes the hash file (0600) unless one exists; false when one existed.
fn write_hash_file(dir: &Path, path: &Path, hash: &[u8; 32]) -> Result<bool, ServerError> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        dirs.mode(0o700);
    }
    dirs.create(dir)
        .map_err(|e| token_file(path, format!("cannot create its directory: {e}")))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(token_file(path, format!("cannot create it: {e}"))),
    };
    file.write_all(format!("{}\n", hex::encode(hash)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| token_file(path, format!("cannot write it: {e}")))?;
    Ok(true)
}

/// Where a generated token's hash is kept.
pub fn token_hash_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_HASH_FILE)
}

/// Replaces the stored token with a new one (`ferry api-token --rotate`) and returns it: the
/// only time it exists in clear. The hash file is replaced atomically (a new file, mode 0600,
/// renamed over the old one); a running server keeps the old token until it restarts.
pub fn rotate_token(state_dir: &Path) -> Result<String, ServerError> {
    let path = token_hash_path(state_dir);
    let tmp = state_dir.join(format!("{TOKEN_HASH_FILE}.new"));
    let _ = std::fs::remove_file(&tmp);
    let token = generate_token();
    if !write_hash_file(state_dir, &tmp, &sha256(token.as_bytes()))? {
        return Err(token_file(&tmp, "is in the way; delete it and try again"));
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| token_file(&path, format!("cannot replace it: {e}")))?;
    Ok(token)
}

/// Dashboard sessions: sha256 of the session id → expiry and the name of the token that
/// opened it.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], (Instant, String)>>,
}

impl Sessions {
    /// Starts a session for the token `name`; returns the id for the cookie.
    pub fn create(&self, name: &str) -> String {
        let id = generate_token();
        let now = Instant::now();
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, (exp, _)| *exp > now);
            if live.len() >= MAX_SESSIONS
                && let Some(oldest) = live.iter().min_by_key(|(_, e)| e.0).map(|(k, _)| *k)
            {
                live.remove(&oldest);
            }
            live.insert(sha256(id.as_bytes()), (now + SESSION_TTL, name.to_string()));
        }
        id
    }

    /// The token name of the live session `id`, if it is one.
    pub fn name(&self, id: &str) -> Option<String> {
        let key = sha256(id.as_bytes());
        let now = Instant::now();
        self.live
            .lock()
            .ok()?
            .get(&key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, name)| name.clone())
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str) -> bool {
        self.name(id).is_some()
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&sha256(id.as_bytes()));
        }
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The bearer token in the `Authorization` header.
    Bearer,
    /// A dashboard session cookie.
    Session,
}

/// Who a valid credential belongs to: a token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name ([`ADMIN_TOKEN_NAME`] for the server's own token).
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    /// The actor of this principal's requests: `api:<name>`, or `dashboard:<name>` for a
    /// session.
    pub fn actor(&self) -> Actor {
        match self.credential {
            Credential::Bearer => Actor::api(&self.name, self.role),
            Credential::Session => Actor::dashboard(&self.name, self.role),
        }
    }
}

/// The token `presented` is: the server's own (admin) or a stored one, by constant-time
/// comparison with every digest; `None` when it is none of them. The stored token's last use
/// is recorded (at most every [`LAST_USED_EVERY`]).
pub async fn token_owner(
    state: &AppState,
    presented: &str,
) -> Result<Option<(String, Role)>, ApiError> {
    let digest = sha256(presented.as_bytes());
    let mut found = None;
    if bool::from(digest.ct_eq(&state.token().hash())) {
        found = Some((ADMIN_TOKEN_NAME.to_string(), Role::Admin));
    }
    for t in state.store().tokens().await? {
        let Ok(stored) = <[u8; 32]>::try_from(hex::decode(&t.hash).unwrap_or_default()) else {
            continue;
        };
        if bool::from(digest.ct_eq(&stored)) && found.is_none() {
            found = Some((t.name, t.role));
        }
    }
    if let Some((name, _)) = &found
        && name != ADMIN_TOKEN_NAME
        && state.due_for_last_used(name)
        && let Err(e) = state.store().mark_token_used(name).await
    {
        tracing::warn!(token = %name, error = %e, "Cannot record the token's last use");
    }
    Ok(found)
}

/// The role of the token named `name` now: admin for the server's own, the stored role for a
/// stored one, `None` once it was revoked.
async fn role_of(state: &AppState, name: &str) -> Result<Option<Role>, ApiError> {
    if name == ADMIN_TOKEN_NAME {
        return Ok(Some(Role::Admin));
    }
    Ok(state
        .store()
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.role))
}

/// The principal a request's credential names, if it is valid. `cookie_ok` says whether a
/// session cookie counts (dashboard) or not (API).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    cookie_ok: bool,
) -> Result<Option<Principal>, ApiError> {
    if let Some(t) = bearer(headers) {
        return Ok(token_owner(state, t).await?.map(|(name, role)| Principal {
            name,
            role,
            credential: Credential::Bearer,
        }));
    }
    if cookie_ok
        && let Some(id) = cookie(headers, SESSION_COOKIE)
        && let Some(name) = state.sessions().name(id)
    {
        return Ok(match role_of(state, &name).await? {
            Some(role) => Some(Principal {
                name,
                role,
                credential: Credential::Session,
            }),
            None => {
                // The token was revoked: so is its session.
                state.sessions().end(id);
                None
            }
        });
    }
    Ok(None)
}

/// A refusal for a missing role: audited (action `refused`), then the caller's answer.
async fn audit_role_refusal(
    state: &AppState,
    who: &Principal,
    needed: Role,
    operation: String,
) -> String {
    let actor = who.actor();
    let reason = format!(
        "{operation} needs the {needed} role; token `{}` has the {} role",
        who.name, who.role
    );
    let entry = ferry_store::NewAudit {
        actor: actor.label,
        action: REFUSED.into(),
        flow: None,
        env: None,
        revision: None,
        detail: json!({"operation": operation, "role": who.role, "needed": needed, "reason": reason}),
    };
    if let Err(e) = state.store().record_audit(&entry).await {
        tracing::warn!(error = %e, "Cannot record a refused request in the audit log");
    }
    reason
}

/// Middleware of the JSON API (and `/openapi.json`): a bearer token (else 401) with at least
/// the route's role (else 403, audited). The request carries the caller's [`Actor`] on.
pub async fn require_token(
    State((state, needed)): State<(AppState, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers().clone();
    let who = match authenticate(&state, &headers, false).await {
        Ok(Some(p)) => p,
        Ok(None) => return unauthorized_json(),
        Err(e) => return e.into_response(),
    };
    if !who.role.allows(needed) {
        let operation = format!("{} {}", req.method(), req.uri().path());
        let reason = audit_role_refusal(&state, &who, needed, operation).await;
        return ApiError::forbidden(reason)
            .with_details(json!({"needed_role": needed, "role": who.role}))
            .into_response();
    }
    req.extensions_mut().insert(who.actor());
    next.run(req).await
}

fn unauthorized_json() -> Response {
    let mut res = ApiError::unauthorized().into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"ferry\""),
    );
    res
}

/// Middleware of the dashboard: a session (or a bearer token) with at least the route's role;
/// a page without a session redirects to the login form, a form post gets 401, a missing role
/// gets the 403 page (audited). Posts authenticated by the cookie must pass the same-origin
/// check (403 otherwise). The request carries the caller's [`Actor`] on.
pub async fn require_session(
    State((state, needed)): State<(AppState, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers().clone();
    let who = match authenticate(&state, &headers, true).await {
        Ok(w) => w,
        Err(e) => return crate::dashboard::error_page(e),
    };
    match who {
        Some(p)
            if p.credential == Credential::Session
                && req.method() != Method::GET
                && !same_origin(req.headers()) =>
        {
            crate::dashboard::forbidden_cross_site()
        }
        Some(p) if !p.role.allows(needed) => {
            let operation = format!("{} {}", req.method(), req.uri().path());
            let reason = audit_role_refusal(&state, &p, needed, operation).await;
            crate::dashboard::forbidden_role(&reason)
        }
        Some(p) => {
            req.extensions_mut().insert(p.actor());
            next.run(req).await
        }
        None if req.method() == Method::GET || req.method() == Method::HEAD => {
            Redirect::to("/login").into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            crate::dashboard::login_page(Some("Your session has ended: log in again.")),
        )
            .into_response(),
    }
}

/// Whether a browser request comes from a page of this server: its `Origin` (or, without
/// one, its `Referer`) names the same host and port as its `Host` header.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = |url: &str| -> Option<String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))?;
        Some(rest.split(['/', '?', '#']).next()?.to_ascii_lowercase())
    };
    let host = host.trim().to_ascii_lowercase();
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin
            .to_str()
            .ok()
            .and_then(authority)
            .is_some_and(|a| a == host);
    }
    headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(authority)
        .is_some_and(|a| a == host)
}

/// Middleware of the login form's post: the same-origin check only.
pub async fn require_same_origin(req: Request, next: Next) -> Response {
    if req.method() != Method::GET && !same_origin(req.headers()) {
        return crate::dashboard::forbidden_cross_site();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn verify_accepts_only_the_token() {
        let t = ApiToken::from_token("the-right-token-0123");
        assert!(t.verify("the-right-token-0123"));
        assert!(!t.verify("the-right-token-0124"));
        assert!(!t.verify(""));
        assert!(!t.verify("the-right-token-0123 "));
    }

    #[test]
    fn a_generated_token_is_stored_hashed_and_printed_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (t1, shown) = ApiToken::resolve(&TokenSource::Stored, &state).unwrap();
        let token = shown.expect("first start shows the token");
        assert_eq!(token.len(), 64);
        assert!(t1.verify(&token));
        let path = token_hash_path(&state);
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&token), "only the hash is stored");
        assert_eq!(stored.trim(), hex::encode(sha256(token.as_bytes())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, shown) = ApiToken::resolve(&TokenSource::Stored, &state).unwrap();
        assert!(shown.is_none(), "a later start does not show it again");
        assert!(t2.verify(&token));
    }

    #[test]
    fn rotation_replaces_the_stored_token() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = ApiToken::resolve(&TokenSource::Stored, dir.path()).unwrap();
        let first = first.unwrap();
        let second = rotate_token(dir.path()).unwrap();
        assert_ne!(first, second);
        let (t, shown) = ApiToken::resolve(&TokenSource::Stored, dir.path()).unwrap();
        assert!(shown.is_none());
        assert!(t.verify(&second));
        assert!(!t.verify(&first));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(token_hash_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_broken_hash_file_is_an_error_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(token_hash_path(dir.path()), "not hex").unwrap();
        let e = ApiToken::resolve(&TokenSource::Stored, dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("delete it"), "{e}");
    }

    #[test]
    fn a_given_token_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (t, shown) = ApiToken::resolve(
            &TokenSource::Given("operator-chosen-token-1".into()),
            dir.path(),
        )
        .unwrap();
        assert!(shown.is_none());
        assert!(t.verify("operator-chosen-token-1"));
        assert!(!token_hash_path(dir.path()).exists());
    }

    #[test]
    fn sessions_start_check_and_end() {
        let s = Sessions::default();
        let id = s.create("alice");
        assert!(s.valid(&id));
        assert_eq!(s.name(&id).as_deref(), Some("alice"));
        assert!(!s.valid("forged"));
        s.end(&id);
        assert!(!s.valid(&id));
    }

    #[test]
    fn headers_are_read_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferry_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let h = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), HeaderValue::from_static(v));
            }
            m
        };
        let host = (header::HOST, "127.0.0.1:8787");
        assert!(same_origin(&h(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8787")
        ])));
        assert!(!same_origin(&h(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:9999")
        ])));
        assert!(!same_origin(&h(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[host.clone(), (header::ORIGIN, "null")])));
        assert!(same_origin(&h(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:8787/dlq?x=1")
        ])));
        assert!(!same_origin(&h(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:8787.evil.example/")
        ])));
        assert!(!same_origin(&h(&[host])));
    }
}
