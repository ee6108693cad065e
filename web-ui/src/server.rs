//! The HTTP server: [`router`] maps `/api/v1` onto a [`NodeApi`], and [`serve`] runs it on a
//! listener until a shutdown signal.
//!
//! Every request passes, outermost first: a tracing span (method, path, status — never
//! headers), reading the whole body (at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`],
//! so that a refusal leaves the kept-alive connection usable), the Host check against DNS
//! rebinding ([`ApiAuth::allowed_hosts`]), the body limit ([`MAX_BODY_BYTES`]), then for
//! `/api/v1` the API-key check, then the handler. Every error on that path — including unknown
//! routes, wrong methods and bodies that do not parse — is an [`ApiError`] rendered as JSON.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use crate::api::NodeApi;
use crate::error::{ApiError, ApiJson};
use crate::model::{
    BidRequest, ConflictInfo, ConnectRequest, ContentSummary, DownloadInfo, ErrorBody, GetRequest,
    HexId, Identity, MarketInfo, OfferRequest, OrderInfo, PeerInfo, RateLimits, ReceiptInfo,
    ReceiptPage, ReceiptQuery, Settings, ShareRequest, StandingInfo, Status, TradeInfo,
};
use crate::openapi::CommonResponses;
use crate::routes::{ApiRoute, RouteTable, delete, get, post};
use crate::session::Sessions;

/// Where the versioned API is mounted.
pub const API_PREFIX: &str = "/api/v1";

/// The largest request body the server reads; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a request's body may take to arrive once its headers have; a slower one is
/// answered 408, so a client that trickles a body cannot hold one of the connections for good.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    router_with_routes(node, auth).0
}

/// [`router`], and every route it serves under [`API_PREFIX`], recorded as the router was
/// built (so the check that [`openapi`] documents each one walks the real routes).
pub fn router_with_routes<N: NodeApi>(node: Arc<N>, auth: ApiAuth) -> (Router, Vec<ApiRoute>) {
    let auth = Arc::new(auth);
    let (metrics, metrics_routes) = crate::metrics::routes(Arc::clone(&node), Arc::clone(&auth));
    let (session, session_routes) = crate::session::routes(auth.clone());
    let (api, mut routes) = RouteTable::new(API_PREFIX)
        .route("/status", get(status::<N>))
        .route("/peers", get(peers::<N>).post(connect::<N>))
        .route("/content", get(content::<N>).post(share::<N>))
        .route("/downloads", get(downloads::<N>).post(start_download::<N>))
        .route(
            "/downloads/{content_id}",
            get(download::<N>).delete(cancel_download::<N>),
        )
        .route("/ledger/export", get(ledger_export::<N>))
        .route("/standing/{peer_id}", get(standing::<N>))
        .route("/limits", get(limits::<N>).put(set_limits::<N>))
        .route("/shutdown", post(shutdown::<N>))
        .route("/market", get(market::<N>))
        .route("/offers", get(offers::<N>).post(post_offer::<N>))
        .route("/bids", get(bids::<N>).post(post_bid::<N>))
        .route("/orders/{order_id}", delete(cancel_order::<N>))
        .route("/trades", get(trades::<N>))
        .route("/identity", get(identity::<N>))
        .route("/receipts", get(receipts::<N>))
        .route("/conflicts", get(conflicts::<N>))
        .route("/settings", get(settings::<N>).put(set_settings::<N>))
        .route("/openapi.json", get(openapi_json))
        .route("/events", get(crate::events::stream::<N>))
        .into_parts();
    let api = api
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            auth.clone(),
            require_api_key,
        ))
        // After the key layer: login needs no key; the session routes check the cookie.
        .merge(session)
        .with_state(node);
    let app = Router::new()
        .nest(API_PREFIX, api)
        .merge(crate::dashboard::routes())
        .merge(metrics)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(auth, check_host))
        .layer(middleware::from_fn(read_body_first))
        .layer(middleware::from_fn(trace_request));
    routes.extend(session_routes);
    routes.extend(metrics_routes);
    (app, routes)
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

/// Reads the whole request body (up to [`MAX_BODY_BYTES`]) before anything can refuse the
/// request. A refusal sent while part of the body is still on the wire makes the HTTP layer
/// close the connection, and a client that reuses its kept-alive connection for the next
/// request then finds it gone; with the body read, refusals keep the connection usable.
async fn read_body_first(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    );
    let Ok(read) = read.await else {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )
        .into_response();
    };
    match read {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        Err(error) if too_large(&error) => ApiError::payload_too_large(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ))
        .into_response(),
        Err(error) => {
            ApiError::bad_request(format!("cannot read the request body: {error}")).into_response()
        }
    }
}

/// Whether reading a body failed at the size limit rather than on the connection.
fn too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
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

pub(crate) async fn require_api_key(
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

#[utoipa::path(get, path = "/api/v1/status", tag = "node", operation_id = "status",
    responses((status = 200, description = "The node at a glance.", body = Status)))]
async fn status<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Status> {
    Ok(axum::Json(node.status().await?))
}

#[utoipa::path(get, path = "/api/v1/peers", tag = "peers", operation_id = "peers",
    responses((status = 200, description = "Peers the node knows: connected, disconnected (dialled or seen before) and banned, by peer id.", body = Vec<PeerInfo>)))]
async fn peers<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<PeerInfo>> {
    Ok(axum::Json(node.peers().await?))
}

#[utoipa::path(post, path = "/api/v1/peers", tag = "peers", operation_id = "connect",
    request_body = ConnectRequest,
    responses(
        (status = 200, description = "Connected; the node redials the peer after drops.", body = PeerInfo),
        (status = 400, description = "Malformed body or `peer` (not `PEERID@HOST:PORT`), or the node itself.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "The peer cannot be reached: its host does not resolve, nobody answers, or the node there is not `PEERID`.", body = ErrorBody),
        (status = 503, description = "Connected, but the connection closed at once.", body = ErrorBody),
    ))]
async fn connect<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<ConnectRequest>,
) -> JsonResult<PeerInfo> {
    request
        .parse()
        .map_err(|e| ApiError::bad_request(format!("peer: {e}")))?;
    Ok(axum::Json(node.connect(request).await?))
}

#[utoipa::path(get, path = "/api/v1/content", tag = "content", operation_id = "content",
    responses((status = 200, description = "Content this node shares.", body = Vec<ContentSummary>)))]
async fn content<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<ContentSummary>> {
    Ok(axum::Json(node.content().await?))
}

#[utoipa::path(post, path = "/api/v1/content", tag = "content", operation_id = "share",
    request_body = ShareRequest,
    responses(
        (status = 200, description = "Shared: chunked, hashed and announced.", body = ContentSummary),
        (status = 400, description = "Malformed body, or an empty or relative `path`.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "The file is missing, a directory, unreadable or too large.", body = ErrorBody),
    ))]
async fn share<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<ShareRequest>,
) -> JsonResult<ContentSummary> {
    if request.path.is_empty() {
        return Err(ApiError::bad_request("path: must not be empty"));
    }
    Ok(axum::Json(node.share(request).await?))
}

#[utoipa::path(get, path = "/api/v1/downloads", tag = "downloads", operation_id = "downloads",
    responses((status = 200, description = "Every download since the node started, by content id.", body = Vec<DownloadInfo>)))]
async fn downloads<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<DownloadInfo>> {
    Ok(axum::Json(node.downloads().await?))
}

#[utoipa::path(post, path = "/api/v1/downloads", tag = "downloads", operation_id = "start_download",
    request_body = GetRequest,
    responses(
        (status = 202, description = "Started (or already under way to the same `out`); `Location` names the download.", body = DownloadInfo,
            headers(("Location" = String, description = "`/api/v1/downloads/{content_id}`"))),
        (status = 400, description = "Malformed body, bad `content_id`, or an empty or relative `out`.", body = ErrorBody),
        (status = 409, description = "The content is being downloaded to another path.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`out` is a directory.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/v1/downloads/{content_id}", tag = "downloads", operation_id = "download",
    params(("content_id" = HexId, Path, description = "The content id.")),
    responses(
        (status = 200, description = "The download.", body = DownloadInfo),
        (status = 400, description = "The content id is not 64 lowercase hex characters.", body = ErrorBody),
        (status = 404, description = "No download of that content since the node started.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/v1/standing/{peer_id}", tag = "peers", operation_id = "standing",
    params(("peer_id" = HexId, Path, description = "Any peer id; one never heard of is at the floor.")),
    responses(
        (status = 200, description = "Why the peer has its standing at this node.", body = StandingInfo),
        (status = 400, description = "The peer id is not 64 lowercase hex characters.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/v1/ledger/export", tag = "ledger", operation_id = "ledger_export",
    responses((status = 200, description = "Every receipt in the store, one JSON object per line (NDJSON); each line is a `ReceiptInfo`.",
        content_type = "application/x-ndjson", body = ReceiptInfo)))]
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

#[utoipa::path(get, path = "/api/v1/limits", tag = "settings", operation_id = "limits",
    responses((status = 200, description = "The rate limits in force.", body = RateLimits)))]
async fn limits<N: NodeApi>(State(node): Shared<N>) -> JsonResult<RateLimits> {
    Ok(axum::Json(node.limits().await?))
}

#[utoipa::path(put, path = "/api/v1/limits", tag = "settings", operation_id = "set_limits",
    request_body = RateLimits,
    responses(
        (status = 200, description = "The rate limits now in force (0 is unlimited here).", body = RateLimits),
        (status = 400, description = "Malformed body, unknown field, or a value that is not a u64.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ))]
async fn set_limits<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(limits): ApiJson<RateLimits>,
) -> JsonResult<RateLimits> {
    Ok(axum::Json(node.set_limits(limits).await?))
}

#[utoipa::path(post, path = "/api/v1/shutdown", tag = "node", operation_id = "shutdown",
    responses((status = 202, description = "The node stops gracefully after answering.")))]
async fn shutdown<N: NodeApi>(State(node): Shared<N>) -> Result<StatusCode, ApiError> {
    node.shutdown().await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/api/v1/market", tag = "market", operation_id = "market",
    responses((status = 200, description = "The book's best orders, this node's orders and its trades.", body = MarketInfo)))]
async fn market<N: NodeApi>(State(node): Shared<N>) -> JsonResult<MarketInfo> {
    Ok(axum::Json(node.market().await?))
}

#[utoipa::path(post, path = "/api/v1/offers", tag = "market", operation_id = "post_offer",
    request_body = OfferRequest,
    responses(
        (status = 201, description = "The offer, signed, in the book and flooded.", body = OrderInfo),
        (status = 400, description = "Malformed body, `bytes` 0, `ttl_s` out of 1..=604800, or `max_rate` 0.", body = ErrorBody),
        (status = 409, description = "The book refuses it (full, or too many orders of this node).", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ))]
async fn post_offer<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(request): ApiJson<OfferRequest>,
) -> Result<Response, ApiError> {
    request.check().map_err(ApiError::bad_request)?;
    Ok(created(node.post_offer(request).await?))
}

#[utoipa::path(post, path = "/api/v1/bids", tag = "market", operation_id = "post_bid",
    request_body = BidRequest,
    responses(
        (status = 201, description = "The bid, signed, in the book and flooded; trades it makes are proposed.", body = OrderInfo),
        (status = 400, description = "Malformed body, bad `content_id`, `bytes` 0, or `ttl_s` out of 1..=604800.", body = ErrorBody),
        (status = 409, description = "The book refuses it (full, or too many orders of this node).", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    ))]
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

#[utoipa::path(delete, path = "/api/v1/orders/{order_id}", tag = "market", operation_id = "cancel_order",
    params(("order_id" = HexId, Path, description = "The order id.")),
    responses(
        (status = 204, description = "Cancelled; the cancellation is flooded."),
        (status = 400, description = "The order id is not 64 lowercase hex characters.", body = ErrorBody),
        (status = 404, description = "No live order has that id.", body = ErrorBody),
        (status = 409, description = "The order is someone else's.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/api/v1/trades", tag = "market", operation_id = "trades",
    responses((status = 200, description = "This node's trades, oldest first.", body = Vec<TradeInfo>)))]
async fn trades<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<TradeInfo>> {
    Ok(axum::Json(node.trades().await?))
}

#[utoipa::path(get, path = "/api/v1/identity", tag = "node", operation_id = "identity",
    responses((status = 200, description = "Who and where this node is.", body = Identity)))]
async fn identity<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Identity> {
    Ok(axum::Json(node.identity().await?))
}

#[utoipa::path(get, path = "/api/v1/receipts", tag = "ledger", operation_id = "receipts",
    params(ReceiptQuery),
    responses(
        (status = 200, description = "One page of the latest receipt of each pair, in (uploader, downloader) order.", body = ReceiptPage),
        (status = 400, description = "Bad `peer`, `limit` (not 1 to 500) or `cursor`, or an unknown parameter.", body = ErrorBody),
    ))]
async fn receipts<N: NodeApi>(
    State(node): Shared<N>,
    query: Result<Query<ReceiptQuery>, QueryRejection>,
) -> JsonResult<ReceiptPage> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = query.check().map_err(ApiError::bad_request)?;
    Ok(axum::Json(node.receipts(filter).await?))
}

#[utoipa::path(get, path = "/api/v1/conflicts", tag = "ledger", operation_id = "conflicts",
    responses((status = 200, description = "The stored conflict proofs, one entry per key each marks dishonest.", body = Vec<ConflictInfo>)))]
async fn conflicts<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<ConflictInfo>> {
    Ok(axum::Json(node.conflicts().await?))
}

#[utoipa::path(delete, path = "/api/v1/downloads/{content_id}", tag = "downloads", operation_id = "cancel_download",
    params(("content_id" = HexId, Path, description = "The content id.")),
    responses(
        (status = 200, description = "Cancelled: its tasks have stopped; verified chunks are kept, so a new `POST /api/v1/downloads` resumes. Cancelling a cancelled download answers it again.", body = DownloadInfo),
        (status = 400, description = "The content id is not 64 lowercase hex characters.", body = ErrorBody),
        (status = 404, description = "No download of that content since the node started.", body = ErrorBody),
        (status = 409, description = "The download is complete or failed already.", body = ErrorBody),
    ))]
async fn cancel_download<N: NodeApi>(
    State(node): Shared<N>,
    content_id: Result<Path<String>, PathRejection>,
) -> JsonResult<DownloadInfo> {
    let Path(content_id) = content_id?;
    let content_id: HexId = content_id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("content id: {e}")))?;
    Ok(axum::Json(node.cancel_download(content_id).await?))
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "settings", operation_id = "settings",
    responses((status = 200, description = "The runtime settings in force.", body = Settings)))]
async fn settings<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Settings> {
    Ok(axum::Json(node.settings().await?))
}

#[utoipa::path(put, path = "/api/v1/settings", tag = "settings", operation_id = "set_settings",
    request_body = Settings,
    responses(
        (status = 200, description = "The settings now in force; they apply at once.", body = Settings),
        (status = 400, description = "Malformed body, unknown field, or a value that is not a u64 or null.", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "A rate of 0, or a budget below 16 MiB.", body = ErrorBody),
    ))]
async fn set_settings<N: NodeApi>(
    State(node): Shared<N>,
    ApiJson(settings): ApiJson<Settings>,
) -> JsonResult<Settings> {
    settings.check().map_err(ApiError::unprocessable)?;
    Ok(axum::Json(node.set_settings(settings).await?))
}

#[utoipa::path(get, path = "/api/v1/offers", tag = "market", operation_id = "offers",
    responses((status = 200, description = "Every live offer in the book, cheapest (then earliest) first.", body = Vec<OrderInfo>)))]
async fn offers<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<OrderInfo>> {
    Ok(axum::Json(node.offers().await?))
}

#[utoipa::path(get, path = "/api/v1/bids", tag = "market", operation_id = "bids",
    responses((status = 200, description = "Every live bid in the book, highest (then earliest) first.", body = Vec<OrderInfo>)))]
async fn bids<N: NodeApi>(State(node): Shared<N>) -> JsonResult<Vec<OrderInfo>> {
    Ok(axum::Json(node.bids().await?))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "This document: OpenAPI 3.1, generated from the server's code.", content_type = "application/json")))]
async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

/// The OpenAPI document of every `/api/v1` route; `GET /api/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tally node API",
        description = "The local HTTP API of a tally node. Every route needs `Authorization: Bearer <key>` (`tally api-key` prints the key) and a Host header that names the node. Every error is an `ErrorBody`. docs/API.md has a curl example for each route."
    ),
    paths(
        status, peers, connect, content, share, downloads, start_download, download, standing,
        ledger_export, limits, set_limits, shutdown, market, post_offer, post_bid, cancel_order,
        trades, identity, receipts, conflicts, cancel_download, settings, set_settings, offers,
        bids, openapi_json, crate::events::stream, crate::session::login,
        crate::session::current, crate::session::logout, crate::metrics::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&CommonResponses),
    tags(
        (name = "node", description = "The node itself."),
        (name = "peers", description = "Connections and standing."),
        (name = "content", description = "Sharing files."),
        (name = "downloads", description = "Fetching content from the swarm."),
        (name = "ledger", description = "Receipts and conflict proofs."),
        (name = "settings", description = "Rate limits and upload budgets, changed at runtime."),
        (name = "market", description = "The order book and trades."),
        (name = "session", description = "The dashboard's login: a cookie and a CSRF token in place of the key."),
        (name = "meta", description = "This document."),
    )
)]
struct ApiDoc;

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
