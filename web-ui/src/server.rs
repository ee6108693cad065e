//! The HTTP server: [`router`] maps `/api/v1` onto a [`NodeApi`], and [`serve`] runs it on a
//! listener until a shutdown signal.
//!
//! Every request passes, outermost first: a tracing span (method, path, status — never
//! headers), the Host check against DNS rebinding ([`ApiAuth::allowed_hosts`]), the body limit
//! ([`MAX_BODY_BYTES`]), then for `/api/v1` the API-key check, then the handler. Every error on
//! that path — including unknown routes, wrong methods and bodies that do not parse — is an
//! [`ApiError`] rendered as JSON.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use crate::api::NodeApi;
use crate::error::{ApiError, ApiJson};
use crate::model::{
    BidRequest, ConnectRequest, ContentSummary, DownloadInfo, GetRequest, HexId, MarketInfo,
    OfferRequest, OrderInfo, PeerInfo, RateLimits, ShareRequest, StandingInfo, Status, TradeInfo,
};
use crate::session::Sessions;

/// Where the versioned API is mounted.
pub const API_PREFIX: &str = "/api/v1";

/// The largest request body the server reads; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Media type of `GET /api/v1/ledger/export`: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Who may call the API: the API key every `/api/v1` request must present as
/// `Authorization: Bearer <key>`, and the Host header values the server accepts (the defence
/// against DNS rebinding: a page on `evil.example` that rebinds its name to 127.0.0.1 still
/// sends `Host: evil.example`).
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ApiAuth {
    api_key: String,
    allowed_hosts: Vec<String>,
    /// The dashboard's login sessions, shared by every clone.
    sessions: Arc<Sessions>,
}

impl ApiAuth {
    /// Accepts `api_key`, and the Host values that name `bound` (the address the server
    /// listens on) and its port on loopback: `127.0.0.1:PORT`, `localhost:PORT`,
    /// `[::1]:PORT` (and the same without `:PORT` when PORT is 80).
    pub fn new(api_key: impl Into<String>, bound: SocketAddr) -> Self {
        let port = bound.port();
        let mut hosts = vec![
            bound.to_string(),
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if port == 80 {
            let bare = match bound.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            };
            hosts.extend([bare, "127.0.0.1".into(), "localhost".into(), "[::1]".into()]);
        }
        let mut auth = Self {
            api_key: api_key.into(),
            allowed_hosts: Vec::new(),
            sessions: Arc::new(Sessions::new(port)),
        };
        for host in hosts {
            auth = auth.allow_host(host);
        }
        auth
    }

    /// Also accepts `host` (`NAME:PORT`, compared without regard to ASCII case), e.g. a name
    /// the user configured for a node bound to a LAN address.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        let host = host.into().to_ascii_lowercase();
        if !self.allowed_hosts.contains(&host) {
            self.allowed_hosts.push(host);
        }
        self
    }

    /// The Host header values accepted, lowercase.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// Whether a request with this Host header may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks the `Authorization` header. The key is compared in constant time (only its length
    /// can leak, and every key `tally init` makes has the same length).
    pub fn check_key(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Unauthorized::Missing);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(Unauthorized::Malformed)?;
        if !self.key_matches(token) {
            return Err(Unauthorized::WrongKey);
        }
        Ok(())
    }

    /// Whether `key` is this node's API key, compared in constant time; an empty key never is.
    pub fn key_matches(&self, key: &str) -> bool {
        let matches: bool = key.as_bytes().ct_eq(self.api_key.as_bytes()).into();
        !key.is_empty() && matches
    }

    /// The dashboard's login sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }
}

impl fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiAuth")
            .field("api_key", &"<redacted>")
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Why [`ApiAuth::check_key`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <key>`.
    Malformed,
    /// A key that is not this node's.
    WrongKey,
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let (challenge, message) = match self {
            Unauthorized::Missing => (
                "Bearer",
                "missing API key: send `Authorization: Bearer <key>`; `tally api-key` prints the key",
            ),
            Unauthorized::Malformed => (
                "Bearer error=\"invalid_request\"",
                "the Authorization header must be `Bearer <key>`",
            ),
            Unauthorized::WrongKey => (
                "Bearer error=\"invalid_token\"",
                "wrong API key; `tally api-key` prints this node's key",
            ),
        };
        let mut response = ApiError::unauthorized(message).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// The whole HTTP surface for `node`: `/api/v1` and the middleware in front of it.
pub fn router<N: NodeApi>(node: Arc<N>, auth: ApiAuth) -> Router {
    let auth = Arc::new(auth);
    let api = Router::new()
        .route("/status", get(status::<N>))
        .route("/peers", get(peers::<N>).post(connect::<N>))
        .route("/content", get(content::<N>).post(share::<N>))
        .route("/downloads", get(downloads::<N>).post(start_download::<N>))
        .route("/downloads/{content_id}", get(download::<N>))
        .route("/ledger/export", get(ledger_export::<N>))
        .route("/standing/{peer_id}", get(standing::<N>))
        .route("/limits", get(limits::<N>).put(set_limits::<N>))
        .route("/shutdown", post(shutdown::<N>))
        .route("/market", get(market::<N>))
        .route("/offers", post(post_offer::<N>))
        .route("/bids", post(post_bid::<N>))
        .route("/orders/{order_id}", delete(cancel_order::<N>))
        .route("/trades", get(trades::<N>))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            auth.clone(),
            require_api_key,
        ))
        // After the key layer: login needs no key; the session routes check the cookie.
        .merge(crate::session::routes(auth.clone()))
        .with_state(node);
    Router::new()
        .nest(API_PREFIX, api)
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(auth, check_host))
        .layer(middleware::from_fn(trace_request))
}

/// Serves `router` on `listener` (at most [`MAX_CONNECTIONS`] at once) until `shutdown`
/// completes, then stops accepting and waits for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = CappedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

// ---- middleware ----

async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| tracing::debug!("answered"));
    response
}

async fn check_host(State(auth): State<Arc<ApiAuth>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(host) if auth.host_allowed(host) => next.run(request).await,
        _ => ApiError::host_not_allowed(format!(
            "the Host header must name this node ({}); add other names to the API's allowed hosts",
            auth.allowed_hosts().join(", ")
        ))
        .into_response(),
    }
}

async fn require_api_key(
    State(auth): State<Arc<ApiAuth>>,
    request: Request,
    next: Next,
) -> Response {
    // The dashboard's session cookie stands in for the key, unless a key is presented too.
    let headers = request.headers();
    if !headers.contains_key(header::AUTHORIZATION) && auth.sessions().has_cookie(headers) {
        return match auth.sessions().authenticate(request.method(), headers) {
            Ok(()) => next.run(request).await,
            Err(refusal) => refusal.into_response(),
        };
    }
    match auth.check_key(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; docs/API.md lists the API's routes")
}

pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{method} is not allowed on this route; the Allow header lists the methods that are"
    ))
}

// ---- handlers ----

type Shared<N> = State<Arc<N>>;
type JsonResult<T> = Result<axum::Json<T>, ApiError>;

async fn status<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Status> {
    Ok(axum::Json(node.status().await?))
}

async fn peers<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<PeerInfo>> {
    Ok(axum::Json(node.peers().await?))
}

async fn connect<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<ConnectRequest>,
) -> JsonResult<PeerInfo> {
    request
        .parse()
        .map_err(|e| ApiError::bad_request(format!("peer: {e}")))?;
    Ok(axum::Json(node.connect(request).await?))
}

async fn content<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<ContentSummary>> {
    Ok(axum::Json(node.content().await?))
}

async fn share<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<ShareRequest>,
) -> JsonResult<ContentSummary> {
    if request.path.is_empty() {
        return Err(ApiError::bad_request("path: must not be empty"));
    }
    Ok(axum::Json(node.share(request).await?))
}

async fn downloads<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<DownloadInfo>> {
    Ok(axum::Json(node.downloads().await?))
}

async fn start_download<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<GetRequest>,
) -> Result<Response, ApiError> {
    if request.out.is_empty() {
        return Err(ApiError::bad_request("out: must not be empty"));
    }
    let info = node.get(request).await?;
    let location = format!("{API_PREFIX}/downloads/{}", info.content_id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(info)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn download<N: NodeApi>(
    State(node): Shared<N>,
    content_id: Result<Path<String>, PathRejection>,
) -> JsonResult<DownloadInfo> {
    let Path(content_id) = content_id?;
    let content_id: HexId = content_id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("content id: {e}")))?;
    Ok(axum::Json(node.download(content_id).await?))
}

async fn standing<N: NodeApi>(
    State(node): Shared<N>,
    peer_id: Result<Path<String>, PathRejection>,
) -> JsonResult<StandingInfo> {
    let Path(peer_id) = peer_id?;
    let peer_id: HexId = peer_id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("peer id: {e}")))?;
    Ok(axum::Json(node.standing(peer_id).await?))
}

async fn ledger_export<N: NodeApi>(State(node): Shared<N>) -> Result<Response, ApiError> {
    let receipts = node.ledger_export().await?;
    let mut body = Vec::with_capacity(receipts.len() * 512);
    for receipt in &receipts {
        serde_json::to_writer(&mut body, receipt)
            .map_err(|e| ApiError::internal(format!("cannot encode a receipt: {e}")))?;
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

async fn limits<N: NodeApi>(State(node): Shared<N>) -> JsonResult<RateLimits> {
    Ok(axum::Json(node.limits().await?))
}

async fn set_limits<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(limits): ApiJson<RateLimits>,
) -> JsonResult<RateLimits> {
    Ok(axum::Json(node.set_limits(limits).await?))
}

async fn shutdown<N: NodeApi>(State(node): Shared<N>) -> Result<StatusCode, ApiError> {
    node.shutdown().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn market<N: NodeApi>(State(node): Shared<N>) -> JsonResult<MarketInfo> {
    Ok(axum::Json(node.market().await?))
}

async fn post_offer<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<OfferRequest>,
) -> Result<Response, ApiError> {
    request.check().map_err(ApiError::bad_request)?;
    Ok(created(node.post_offer(request).await?))
}

async fn post_bid<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<BidRequest>,
) -> Result<Response, ApiError> {
    request.check().map_err(ApiError::bad_request)?;
    Ok(created(node.post_bid(request).await?))
}

/// 201 with the order.
fn created(order: OrderInfo) -> Response {
    (StatusCode::CREATED, axum::Json(order)).into_response()
}

async fn cancel_order<N: NodeApi>(
    State(node): Shared<N>,
    order_id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(order_id) = order_id?;
    let order_id: HexId = order_id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("order id: {e}")))?;
    node.cancel_order(order_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn trades<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<TradeInfo>> {
    Ok(axum::Json(node.trades().await?))
}

// ---- connection cap ----

/// A listener that holds a semaphore permit per open connection.
struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so `ok()` always holds a permit.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = CappedStream {
            stream,
            _permit: permit,
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that gives its permit back when dropped.
struct CappedStream {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> ApiAuth {
        ApiAuth::new("k".repeat(64), "127.0.0.1:7421".parse().unwrap())
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_key_must_be_presented_as_a_bearer_token() {
        let auth = auth();
        let key = "k".repeat(64);
        assert_eq!(auth.check_key(&bearer(&format!("Bearer {key}"))), Ok(()));
        assert_eq!(auth.check_key(&bearer(&format!("bearer  {key} "))), Ok(()));
        assert_eq!(
            auth.check_key(&HeaderMap::new()),
            Err(Unauthorized::Missing)
        );
        assert_eq!(
            auth.check_key(&bearer(&format!("Basic {key}"))),
            Err(Unauthorized::Malformed)
        );
        assert_eq!(auth.check_key(&bearer(&key)), Err(Unauthorized::Malformed));
        assert_eq!(
            auth.check_key(&bearer("Bearer kk")),
            Err(Unauthorized::WrongKey)
        );
        assert_eq!(
            auth.check_key(&bearer("Bearer ")),
            Err(Unauthorized::WrongKey)
        );
    }

    #[test]
    fn an_empty_key_admits_no_one() {
        let auth = ApiAuth::new("", "127.0.0.1:7421".parse().unwrap());
        assert_eq!(
            auth.check_key(&bearer("Bearer ")),
            Err(Unauthorized::WrongKey)
        );
        assert_eq!(
            auth.check_key(&bearer("Bearer  ")),
            Err(Unauthorized::WrongKey)
        );
    }

    #[test]
    fn hosts_are_the_bound_address_and_loopback_names_on_its_port() {
        let auth = auth().allow_host("Tally.LAN:7421");
        for ok in [
            "127.0.0.1:7421",
            "localhost:7421",
            "LOCALHOST:7421",
            "[::1]:7421",
            "tally.lan:7421",
        ] {
            assert!(auth.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:7421",
            "localhost",
            "localhost:7422",
            "127.0.0.1",
            "",
        ] {
            assert!(!auth.host_allowed(bad), "{bad}");
        }
        let on_80 = ApiAuth::new("k", "127.0.0.1:80".parse().unwrap());
        assert!(on_80.host_allowed("localhost"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!(
            "{:?}",
            ApiAuth::new("secret-key", "127.0.0.1:1".parse().unwrap())
        );
        assert!(!shown.contains("secret-key"), "{shown}");
    }
}
