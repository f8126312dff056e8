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
//!   an expiry ([`SESSION_TTL`]), the token's name and the sha256 of the token. Sessions are
//!   kept in the state store (hashes only), so they survive a restart and every server on one
//!   store knows them. The role is read again at every request; a session ends when its token
//!   is revoked or replaced (`ferry api-token --rotate`, a token re-created under its name):
//!   rotation logs out everywhere. The cookie never holds the token, so a stolen cookie
//!   expires and does not open the API. It is `Secure` when the server's public address is
//!   HTTPS (`--public-url https://…`) or a proxy says the request came over HTTPS
//!   (`X-Forwarded-Proto: https`).
//! - **Wrong tokens are throttled per client address** ([`crate::throttle`]): 10 per 5
//!   minutes, then 429 until the window ends; each failure and each block is audited.
//! - **CSRF on dashboard forms**: besides `SameSite=Strict`, every state-changing dashboard
//!   request authenticated by the cookie (and the login form itself) must carry an `Origin`
//!   — or, when a browser sends none, a `Referer` — whose host and port equal the `Host`
//!   header. A request with neither is refused (403). A reverse proxy in front must pass the
//!   `Host` header through unchanged.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
use crate::throttle::Failure;

/// The name of the server's own token (`FERRY_API_TOKEN` or the generated one): an admin.
/// No stored token may take this name.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// How often, at most, a token's last use is written to the store.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "ferry_session";
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

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

/// Starts a dashboard session for the token `name` (whose sha256 is `token_hash`), stored
/// hashed in the state store; returns the id for the cookie.
pub async fn start_session(
    state: &AppState,
    name: &str,
    token_hash: &[u8; 32],
) -> Result<String, ApiError> {
    let id = generate_token();
    let ttl = chrono::Duration::from_std(SESSION_TTL).unwrap_or(chrono::Duration::hours(12));
    state
        .store()
        .start_session(&ferry_store::NewSession {
            hash: hex::encode(sha256(id.as_bytes())),
            token_name: name.to_string(),
            token_hash: hex::encode(token_hash),
            expires_at: chrono::Utc::now() + ttl,
        })
        .await?;
    Ok(id)
}

/// Ends the session `id` (logout).
pub async fn end_session(state: &AppState, id: &str) -> Result<(), ApiError> {
    state
        .store()
        .end_session(&hex::encode(sha256(id.as_bytes())))
        .await?;
    Ok(())
}

/// The principal of the live session `id`: `None` when there is none, it expired, or its
/// token was revoked or replaced since it started (then the session is ended too).
async fn session_principal(state: &AppState, id: &str) -> Result<Option<Principal>, ApiError> {
    let hash = hex::encode(sha256(id.as_bytes()));
    let Some(session) = state.store().session(&hash).await? else {
        return Ok(None);
    };
    match current_token(state, &session.token_name).await? {
        Some((role, token_hash)) if token_hash == session.token_hash => Ok(Some(Principal {
            name: session.token_name,
            role,
            credential: Credential::Session,
        })),
        _ => {
            state.store().end_session(&hash).await?;
            Ok(None)
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

/// The `Set-Cookie` value that starts a session; `secure` adds `Secure` (HTTPS only).
pub fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached this server over HTTPS: its public address is HTTPS
/// (`--public-url`), or the proxy in front says so (`X-Forwarded-Proto: https`).
pub fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.public_https()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
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

/// The role and sha256 (hex) of the token named `name` now: the server's own for
/// [`ADMIN_TOKEN_NAME`], the stored one otherwise; `None` once it was revoked.
async fn current_token(state: &AppState, name: &str) -> Result<Option<(Role, String)>, ApiError> {
    if name == ADMIN_TOKEN_NAME {
        return Ok(Some((Role::Admin, hex::encode(state.token().hash()))));
    }
    Ok(state
        .store()
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| (t.role, t.hash)))
}

/// The principal a request's credential names, if it is valid. `cookie_ok` says whether a
/// session cookie counts (dashboard) or not (API). A bearer token from an address that
/// presented too many wrong ones is not checked: 429 ([`crate::throttle`]).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    cookie_ok: bool,
    client: IpAddr,
) -> Result<Option<Principal>, ApiError> {
    if let Some(t) = bearer(headers) {
        return Ok(checked_token(state, t, client, "bearer")
            .await?
            .map(|(name, role)| Principal {
                name,
                role,
                credential: Credential::Bearer,
            }));
    }
    if cookie_ok && let Some(id) = cookie(headers, SESSION_COOKIE) {
        return session_principal(state, id).await;
    }
    Ok(None)
}

/// [`token_owner`] behind the throttle: refused with 429 while `client` is blocked; a wrong
/// token is counted and audited (`auth_failed`, and `auth_blocked` when it reaches the limit).
/// `via` says where the token came from (`bearer`, `login`).
pub async fn checked_token(
    state: &AppState,
    presented: &str,
    client: IpAddr,
    via: &str,
) -> Result<Option<(String, Role)>, ApiError> {
    if let Some(wait) = state.throttle().blocked(client) {
        return Err(ApiError::too_many_attempts(wait));
    }
    let owner = token_owner(state, presented).await?;
    if owner.is_none() {
        let failure = state.throttle().failed(client);
        let (action, detail) = match failure {
            Failure::Counted(n) => (
                "auth_failed",
                json!({"address": client.to_string(), "via": via, "failures": n}),
            ),
            Failure::Blocked(wait) => (
                "auth_blocked",
                json!({"address": client.to_string(), "via": via, "failures": crate::throttle::MAX_FAILURES, "blocked_seconds": wait.as_secs()}),
            ),
        };
        tracing::warn!(address = %client, via, action, "Wrong API token");
        let entry = ferry_store::NewAudit {
            actor: format!("anonymous@{client}"),
            action: action.into(),
            flow: None,
            env: None,
            revision: None,
            detail,
        };
        if let Err(e) = state.store().record_audit(&entry).await {
            tracing::warn!(error = %e, "Cannot record a wrong token in the audit log");
        }
    }
    Ok(owner)
}

/// The client address of a request: its TCP peer, or the unspecified address when the server
/// was not given one (requests made in-process).
pub fn client_addr(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
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
    let client = client_addr(req.extensions());
    let who = match authenticate(&state, &headers, false, client).await {
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
    let client = client_addr(req.extensions());
    let who = match authenticate(&state, &headers, true, client).await {
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
