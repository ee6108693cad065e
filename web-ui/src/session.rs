//! Dashboard sessions: the login that lets a browser use the API without a Bearer header.
//!
//! A browser cannot put `Authorization` on an `EventSource`, and a page should not keep the API
//! key around, so the dashboard trades the key once for a session (`POST /api/v1/session`): an
//! HttpOnly, SameSite=Strict cookie holding a random session token, and a random CSRF token the
//! page keeps in memory. This module owns the session store ([`Sessions`]) and its three routes,
//! and the check the auth middleware runs for cookie-authenticated requests
//! ([`Sessions::authenticate`]).
//!
//! Why each part: the cookie is HttpOnly so script injected into the page cannot read it;
//! SameSite=Strict keeps it off cross-site requests. "Same site" ignores the port, so a page of
//! another local service (`http://localhost:8080`) *would* send it — hence unsafe methods must
//! also carry `X-CSRF-Token`, which only a page of this origin can read, and must not come from
//! a foreign `Origin`. Tokens are 32 bytes from the thread-local CSPRNG, compared in constant
//! time; the store is bounded ([`MAX_SESSIONS`], the oldest is dropped) and sessions expire
//! ([`SESSION_TTL`]). The cookie's name carries the port: cookies are not isolated by port, so
//! two nodes on one host would otherwise overwrite each other's session.
//!
//! It never logs or echoes the API key or a token other than the one it just created.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::error::{ApiError, ApiJson};
use crate::model::{LoginRequest, SessionInfo, parse_hex32};
use crate::routes::{ApiRoute, RouteTable, post};
use crate::server::{API_PREFIX, ApiAuth};

/// How long a session lives after login; the page logs in again after that.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions held at most; a login beyond that drops the oldest.
pub const MAX_SESSIONS: usize = 32;

/// The header that carries the CSRF token on unsafe cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Bytes of randomness in a session or CSRF token.
const TOKEN_BYTES: usize = 32;

/// One logged-in browser.
struct Session {
    token: [u8; TOKEN_BYTES],
    csrf: [u8; TOKEN_BYTES],
    expires: Instant,
}

/// The sessions of one server. Its `Debug` output shows only how many there are.
pub struct Sessions {
    cookie_name: String,
    ttl: Duration,
    max: usize,
    sessions: Mutex<Vec<Session>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("cookie_name", &self.cookie_name)
            .field("live", &self.len())
            .finish()
    }
}

/// Why a cookie-authenticated request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// No live session has the cookie's token (never was, logged out, expired, or dropped).
    Unknown,
    /// An unsafe method without the session's `X-CSRF-Token`.
    Csrf,
    /// An `Origin` header that is not this node's.
    Origin,
}

impl IntoResponse for SessionRefusal {
    fn into_response(self) -> Response {
        let error = match self {
            SessionRefusal::Unknown => ApiError::unauthorized(
                "the session is unknown or has expired: log in again (POST /api/v1/session)",
            ),
            SessionRefusal::Csrf => ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a request authenticated by the session cookie must send the session's X-CSRF-Token",
            ),
            SessionRefusal::Origin => ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "the request comes from another origin than this node's",
            ),
        };
        error.into_response()
    }
}

impl Sessions {
    /// An empty store for a server on `port`, with [`SESSION_TTL`] and [`MAX_SESSIONS`].
    pub fn new(port: u16) -> Self {
        Self::with_limits(port, SESSION_TTL, MAX_SESSIONS)
    }

    /// An empty store with its own lifetime and bound (at least one session).
    pub fn with_limits(port: u16, ttl: Duration, max: usize) -> Self {
        Self {
            cookie_name: format!("tally_session_{port}"),
            ttl,
            max: max.max(1),
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// The cookie's name: `tally_session_<port>`.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Live sessions (expired ones are counted until the next login or check drops them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        // A panic while holding the lock cannot leave the Vec half-updated.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a session and returns its (token, CSRF token).
    fn create(&self) -> ([u8; TOKEN_BYTES], [u8; TOKEN_BYTES]) {
        let token: [u8; TOKEN_BYTES] = rand::random();
        let csrf: [u8; TOKEN_BYTES] = rand::random();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|s| s.expires > now);
        // Oldest first: every session has the same lifetime, so the first expires first.
        while sessions.len() >= self.max {
            sessions.remove(0);
        }
        sessions.push(Session {
            token,
            csrf,
            expires: now + self.ttl,
        });
        (token, csrf)
    }

    /// The CSRF token of the live session with `token`. Compares against every session in
    /// constant time per session and without stopping at a match.
    fn csrf_of(&self, token: &[u8; TOKEN_BYTES]) -> Option<[u8; TOKEN_BYTES]> {
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|s| s.expires > now);
        let mut found = None;
        for session in sessions.iter() {
            if bool::from(session.token.ct_eq(token)) {
                found = Some(session.csrf);
            }
        }
        found
    }

    /// Ends the session with `token`; whether there was one.
    fn remove(&self, token: &[u8; TOKEN_BYTES]) -> bool {
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|s| !bool::from(s.token.ct_eq(token)));
        sessions.len() != before
    }

    /// Whether the request carries this server's session cookie (valid or not).
    pub fn has_cookie(&self, headers: &HeaderMap) -> bool {
        self.cookie_value(headers).is_some()
    }

    /// The value of this server's cookie in the `Cookie` headers, if any.
    fn cookie_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value.trim())
    }

    /// The session token the cookie holds, if it has the shape of one.
    fn cookie_token(&self, headers: &HeaderMap) -> Option<[u8; TOKEN_BYTES]> {
        self.cookie_value(headers)
            .and_then(|value| parse_hex32(value).ok())
    }

    /// Checks a request that presents the session cookie: a live session, and for unsafe methods
    /// the session's CSRF token and no foreign `Origin`.
    pub fn authenticate(&self, method: &Method, headers: &HeaderMap) -> Result<(), SessionRefusal> {
        let csrf = self
            .cookie_token(headers)
            .and_then(|token| self.csrf_of(&token))
            .ok_or(SessionRefusal::Unknown)?;
        if is_safe(method) {
            return Ok(());
        }
        check_origin(headers)?;
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_hex32(v.trim()).ok())
            .ok_or(SessionRefusal::Csrf)?;
        if bool::from(presented.ct_eq(&csrf)) {
            Ok(())
        } else {
            Err(SessionRefusal::Csrf)
        }
    }

    fn set_cookie(&self, token: &[u8; TOKEN_BYTES]) -> Option<HeaderValue> {
        let value = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.cookie_name,
            hex(token),
            self.ttl.as_secs()
        );
        HeaderValue::from_str(&value).ok()
    }

    fn clear_cookie(&self) -> Option<HeaderValue> {
        let value = format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie_name
        );
        HeaderValue::from_str(&value).ok()
    }
}

/// GET, HEAD and OPTIONS change nothing, so they need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An `Origin`, when sent, must be this node's own: `http://` and the Host (which the Host
/// check has already matched against the node's names).
fn check_origin(headers: &HeaderMap) -> Result<(), SessionRefusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host)),
        _ => false,
    };
    if own {
        Ok(())
    } else {
        Err(SessionRefusal::Origin)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `/session` for the `/api/v1` router, to be merged *outside* the API-key layer: login
/// must work without a key header, and the other two methods check the cookie themselves.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(
    auth: Arc<ApiAuth>,
) -> (Router<S>, Vec<ApiRoute>) {
    let (router, routes) = RouteTable::new(API_PREFIX)
        .route("/session", post(login).get(current).delete(logout))
        .into_parts();
    let router = router
        .method_not_allowed_fallback(crate::server::method_not_allowed)
        .with_state(auth);
    (router, routes)
}

/// Session answers must not be cached: they carry a fresh token.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session", operation_id = "login",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: a `tally_session_<port>` cookie (HttpOnly, SameSite=Strict, 12 hours) and the session's CSRF token.", body = SessionInfo),
        (status = 400, description = "Malformed body.", body = crate::model::ErrorBody),
        (status = 401, description = "Wrong API key; no cookie is set.", body = crate::model::ErrorBody),
        (status = 403, description = "An `Origin` header that is not the node's own.", body = crate::model::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = crate::model::ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = crate::model::ErrorBody),
    ))]
pub(crate) async fn login(
    State(auth): State<Arc<ApiAuth>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Response {
    if let Err(refusal) = check_origin(&headers) {
        return refusal.into_response();
    }
    if !auth.key_matches(&request.api_key) {
        return ApiError::unauthorized("wrong API key; `tally api-key` prints this node's key")
            .into_response();
    }
    let sessions = auth.sessions();
    let (token, csrf) = sessions.create();
    let mut response = axum::Json(SessionInfo {
        csrf_token: hex(&csrf),
    })
    .into_response();
    if let Some(cookie) = sessions.set_cookie(&token) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    no_store(response)
}

/// The CSRF token of the cookie's session, so a reloaded page carries on without the key.
/// Safe to answer: only a page of this origin can read the response.
#[utoipa::path(get, path = "/api/v1/session", tag = "session", operation_id = "session",
    responses(
        (status = 200, description = "The CSRF token of the cookie's session.", body = SessionInfo),
        (status = 401, description = "No session cookie, or an ended or expired one.", body = crate::model::ErrorBody),
    ))]
pub(crate) async fn current(State(auth): State<Arc<ApiAuth>>, headers: HeaderMap) -> Response {
    let sessions = auth.sessions();
    match sessions
        .cookie_token(&headers)
        .and_then(|token| sessions.csrf_of(&token))
    {
        Some(csrf) => no_store(
            axum::Json(SessionInfo {
                csrf_token: hex(&csrf),
            })
            .into_response(),
        ),
        None => SessionRefusal::Unknown.into_response(),
    }
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "session", operation_id = "logout",
    responses(
        (status = 204, description = "Logged out: the session ends and its cookie is cleared."),
        (status = 401, description = "No session cookie, or an ended or expired one.", body = crate::model::ErrorBody),
        (status = 403, description = "The `X-CSRF-Token` header is missing or wrong, or the `Origin` is foreign.", body = crate::model::ErrorBody),
    ))]
pub(crate) async fn logout(State(auth): State<Arc<ApiAuth>>, headers: HeaderMap) -> Response {
    let sessions = auth.sessions();
    if let Err(refusal) = sessions.authenticate(&Method::DELETE, &headers) {
        return refusal.into_response();
    }
    if let Some(token) = sessions.cookie_token(&headers) {
        sessions.remove(&token);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = sessions.clear_cookie() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    no_store(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(sessions: &Sessions, token: &[u8; 32]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; {}={}", sessions.cookie_name(), hex(token));
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7421"));
        headers
    }

    #[test]
    fn tokens_are_random_and_sessions_are_bounded() {
        let sessions = Sessions::with_limits(7421, SESSION_TTL, 2);
        let (t1, c1) = sessions.create();
        let (t2, c2) = sessions.create();
        assert_ne!(t1, t2);
        assert_ne!(c1, c2);
        assert_ne!(t1, c1);
        let (t3, _) = sessions.create();
        assert_eq!(sessions.len(), 2);
        // The oldest went.
        assert_eq!(sessions.csrf_of(&t1), None);
        assert_eq!(sessions.csrf_of(&t2), Some(c2));
        assert!(sessions.csrf_of(&t3).is_some());
    }

    #[test]
    fn sessions_expire() {
        let sessions = Sessions::with_limits(7421, Duration::ZERO, 4);
        let (token, _) = sessions.create();
        assert_eq!(sessions.csrf_of(&token), None);
        assert!(sessions.is_empty());
    }

    #[test]
    fn unsafe_methods_need_the_csrf_token_and_no_foreign_origin() {
        let sessions = Sessions::new(7421);
        let (token, csrf) = sessions.create();
        let mut headers = with_cookie(&sessions, &token);
        assert_eq!(sessions.authenticate(&Method::GET, &headers), Ok(()));
        assert_eq!(
            sessions.authenticate(&Method::POST, &headers),
            Err(SessionRefusal::Csrf)
        );
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&hex(&token)).unwrap());
        assert_eq!(
            sessions.authenticate(&Method::POST, &headers),
            Err(SessionRefusal::Csrf)
        );
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&hex(&csrf)).unwrap());
        assert_eq!(sessions.authenticate(&Method::PUT, &headers), Ok(()));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:8080"),
        );
        assert_eq!(
            sessions.authenticate(&Method::DELETE, &headers),
            Err(SessionRefusal::Origin)
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7421"),
        );
        assert_eq!(sessions.authenticate(&Method::DELETE, &headers), Ok(()));
        assert!(sessions.remove(&token));
        assert_eq!(
            sessions.authenticate(&Method::GET, &headers),
            Err(SessionRefusal::Unknown)
        );
    }

    #[test]
    fn another_ports_cookie_is_not_this_servers() {
        let a = Sessions::new(1000);
        let b = Sessions::new(2000);
        let (token, _) = a.create();
        let headers = with_cookie(&a, &token);
        assert!(a.has_cookie(&headers));
        assert!(!b.has_cookie(&headers));
    }
}
