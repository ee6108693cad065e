//! [`ApiClient`]: the command line's blocking client of a running node's HTTP API.
//!
//! One method per endpoint of `/api/v1`, returning [`tally_web::model`] types. Errors are a
//! [`ClientError`] that tells apart "no node is running", an error the node answered (its status,
//! code and message), and anything else. The client talks only to the address it is given,
//! follows no redirects and uses no proxy, so the API key goes nowhere else.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_web::HexId;
use tally_web::model::{
    BidRequest, ConnectRequest, ContentSummary, DownloadInfo, ErrorBody, GetRequest, MarketInfo,
    OfferRequest, OrderInfo, PeerInfo, RateLimits, ShareRequest, StandingInfo, Status, TradeInfo,
};
use tally_web::server::{API_PREFIX, NDJSON};
use ureq::http::Response;

/// How long to wait for the node to accept the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one read may wait: the node answers `connect` only once the peer is dialled.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest JSON response read (lists of peers, content, downloads).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest error body read.
const MAX_ERROR_BYTES: u64 = 64 * 1024;

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the node's API address: the daemon is not running.
    #[error("no tally node is running for this data dir; start one with `tally run`")]
    NoDaemon {
        /// The URL that was refused.
        url: String,
    },
    /// The node answered with an error.
    #[error("the node answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's machine-readable code, e.g. `not_found`.
        code: String,
        /// The node's explanation.
        message: String,
    },
    /// The connection failed other than by refusal, timed out, or broke off.
    #[error("cannot talk to the tally node at {url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// What ureq reported.
        #[source]
        source: ureq::Error,
    },
    /// Something answered that is not a tally node of this version.
    #[error("unexpected answer from {url}: {detail}")]
    BadResponse {
        /// The URL called.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
    /// Writing the export to the caller's writer failed.
    #[error("cannot write the export")]
    Write(#[source] io::Error),
}

impl ClientError {
    /// Whether this is [`ClientError::NoDaemon`].
    pub fn is_no_daemon(&self) -> bool {
        matches!(self, ClientError::NoDaemon { .. })
    }
}

/// A blocking client of one node's API. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct ApiClient {
    agent: ureq::Agent,
    base_url: String,
    authorization: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl ApiClient {
    /// A client of the node whose API is at `base_url` (e.g. `http://127.0.0.1:7421`, no path),
    /// authenticating with `api_key`.
    pub fn new(base_url: &str, api_key: String) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            base_url: base_url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {api_key}"),
        }
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.get_json("/status")
    }

    /// `GET /peers`.
    pub fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.get_json("/peers")
    }

    /// `POST /peers`: dials a peer; answers once connected.
    pub fn connect(&self, request: &ConnectRequest) -> Result<PeerInfo, ClientError> {
        self.send_json(Method::Post, "/peers", request)
    }

    /// `POST /content`: shares a file (a path as the node sees it).
    pub fn share(&self, request: &ShareRequest) -> Result<ContentSummary, ClientError> {
        self.send_json(Method::Post, "/content", request)
    }

    /// `GET /content`.
    pub fn content(&self) -> Result<Vec<ContentSummary>, ClientError> {
        self.get_json("/content")
    }

    /// `POST /downloads`: starts a download and returns at once.
    pub fn get(&self, request: &GetRequest) -> Result<DownloadInfo, ClientError> {
        self.send_json(Method::Post, "/downloads", request)
    }

    /// `GET /downloads`.
    pub fn downloads(&self) -> Result<Vec<DownloadInfo>, ClientError> {
        self.get_json("/downloads")
    }

    /// `GET /downloads/{content_id}`; [`ClientError::Api`] with status 404 if there is none.
    pub fn download(&self, content_id: &HexId) -> Result<DownloadInfo, ClientError> {
        self.get_json(&format!("/downloads/{content_id}"))
    }

    /// `GET /standing/{peer_id}`: why the peer has its standing at the node.
    pub fn standing(&self, peer_id: &HexId) -> Result<StandingInfo, ClientError> {
        self.get_json(&format!("/standing/{peer_id}"))
    }

    /// `GET /ledger/export`: copies the receipts, one JSON object per line, to `out` as they
    /// arrive, and returns how many lines were written.
    pub fn ledger_export(&self, out: &mut dyn Write) -> Result<u64, ClientError> {
        let url = self.url("/ledger/export");
        let response = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .call();
        let response = check(&url, response)?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with(NDJSON) {
            return Err(ClientError::BadResponse {
                url,
                detail: format!("expected {NDJSON}, got {content_type:?}"),
            });
        }
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = 0u64;
        let mut last = b'\n';
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(transport(&url, ureq::Error::Io(e))),
            };
            let chunk = &buf[..n];
            out.write_all(chunk).map_err(ClientError::Write)?;
            lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            last = chunk[n - 1];
        }
        if last != b'\n' {
            return Err(ClientError::BadResponse {
                url,
                detail: "the export ended in the middle of a line".into(),
            });
        }
        out.flush().map_err(ClientError::Write)?;
        Ok(lines)
    }

    /// `GET /limits`.
    pub fn limits(&self) -> Result<RateLimits, ClientError> {
        self.get_json("/limits")
    }

    /// `PUT /limits`: replaces both limits; returns the ones now in force.
    pub fn set_limits(&self, limits: &RateLimits) -> Result<RateLimits, ClientError> {
        self.send_json(Method::Put, "/limits", limits)
    }

    /// `POST /shutdown`: asks the node to stop; returns once the node has taken the request.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        let url = self.url("/shutdown");
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &self.authorization)
            .send_empty();
        check(&url, response).map(drop)
    }

    /// `GET /market`: the book's best orders, this node's orders and trades.
    pub fn market(&self) -> Result<MarketInfo, ClientError> {
        self.get_json("/market")
    }

    /// `POST /offers`: signs, posts and floods an offer.
    pub fn post_offer(&self, request: &OfferRequest) -> Result<OrderInfo, ClientError> {
        self.send_json(Method::Post, "/offers", request)
    }

    /// `POST /bids`: signs, posts and floods a bid.
    pub fn post_bid(&self, request: &BidRequest) -> Result<OrderInfo, ClientError> {
        self.send_json(Method::Post, "/bids", request)
    }

    /// `DELETE /orders/{order_id}`: cancels one of the node's orders.
    pub fn cancel_order(&self, order_id: &HexId) -> Result<(), ClientError> {
        let url = self.url(&format!("/orders/{order_id}"));
        let response = self
            .agent
            .delete(&url)
            .header("Authorization", &self.authorization)
            .call();
        check(&url, response).map(drop)
    }

    /// `GET /trades`.
    pub fn trades(&self) -> Result<Vec<TradeInfo>, ClientError> {
        self.get_json("/trades")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base_url)
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .call();
        read_json(&url, check(&url, response)?)
    }

    fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let builder = match method {
            Method::Post => self.agent.post(&url),
            Method::Put => self.agent.put(&url),
        };
        let response = builder
            .header("Authorization", &self.authorization)
            .send_json(body);
        read_json(&url, check(&url, response)?)
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Post,
    Put,
}

fn transport(url: &str, source: ureq::Error) -> ClientError {
    match &source {
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            ClientError::NoDaemon { url: url.into() }
        }
        _ => ClientError::Transport {
            url: url.into(),
            source,
        },
    }
}

/// Passes a 2xx response on; turns anything else into a [`ClientError`].
fn check(
    url: &str,
    response: Result<Response<ureq::Body>, ureq::Error>,
) -> Result<Response<ureq::Body>, ClientError> {
    let mut response = response.map_err(|e| transport(url, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BYTES)
        .read_to_vec()
        .unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => Err(ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        }),
        Err(_) => Err(ClientError::BadResponse {
            url: url.into(),
            detail: format!("HTTP {status} without the API's error JSON"),
        }),
    }
}

fn read_json<T: DeserializeOwned>(
    url: &str,
    mut response: Response<ureq::Body>,
) -> Result<T, ClientError> {
    let result = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_json::<T>();
    result.map_err(|e| match e {
        ureq::Error::Json(e) => ClientError::BadResponse {
            url: url.into(),
            detail: format!("the body is not the JSON the API defines: {e}"),
        },
        ureq::Error::BodyExceedsLimit(limit) => ClientError::BadResponse {
            url: url.into(),
            detail: format!("the body is larger than {limit} bytes"),
        },
        e => transport(url, e),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tally_web::model::{
        Direction, DownloadState, GossipStatus, PeerReceipts, StoreStatus, TransferTotals,
    };
    use tally_web::{ApiAuth, ApiError, NodeApi};
    use tokio::sync::Notify;

    use super::*;

    const KEY: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";
    const ID: &str = "abababababababababababababababababababababababababababababababab";

    /// Just enough of a node to answer every endpoint.
    #[derive(Default)]
    struct Fake {
        limits: Mutex<RateLimits>,
        downloads: Mutex<Vec<DownloadInfo>>,
        stop: Notify,
    }

    fn peer(id: HexId) -> PeerInfo {
        PeerInfo {
            peer_id: id,
            addr: "127.0.0.1:7420".into(),
            connected: true,
            direction: Direction::In,
            since_ms: 1,
            bytes_sent: 2,
            bytes_received: 3,
            receipts: PeerReceipts::default(),
            standing: 0.0,
            credits_sent: 0,
            credits_received: 0,
            up_bps: 0,
            down_bps: 0,
            state: tally_web::model::PeerState::Connected,
        }
    }

    fn summary(name: &str) -> ContentSummary {
        ContentSummary {
            content_id: ID.parse().unwrap(),
            size: 9,
            chunks: 1,
            name: name.into(),
        }
    }

    impl NodeApi for Fake {
        async fn status(&self) -> Result<Status, ApiError> {
            Ok(Status {
                peer_id: ID.parse().unwrap(),
                network: "main".into(),
                network_id: "00".repeat(32),
                version: "0.1.0".into(),
                quic_addr: "0.0.0.0:7420".into(),
                api_addr: "127.0.0.1:7421".into(),
                uptime_s: 1,
                peers_connected: 0,
                store: StoreStatus {
                    receipts: 0,
                    pairs: 0,
                    conflicts: 0,
                    dishonest: 0,
                    third_party: 0,
                    tombstones: 0,
                },
                transfer: TransferTotals {
                    bytes_up: 0,
                    bytes_down: 0,
                },
                limits: *self.limits.lock().unwrap(),
                dishonest_peers: Vec::new(),
                gossip: GossipStatus::default(),
                upload_budget: Default::default(),
            })
        }
        async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
            Ok(vec![peer(ID.parse().unwrap())])
        }
        async fn connect(&self, request: ConnectRequest) -> Result<PeerInfo, ApiError> {
            Ok(peer(request.parse().unwrap().peer_id))
        }
        async fn share(&self, request: ShareRequest) -> Result<ContentSummary, ApiError> {
            Ok(summary(&request.path))
        }
        async fn content(&self) -> Result<Vec<ContentSummary>, ApiError> {
            Ok(vec![summary("a")])
        }
        async fn get(&self, request: GetRequest) -> Result<DownloadInfo, ApiError> {
            let info = DownloadInfo {
                content_id: request.content_id,
                out: request.out,
                size: 9,
                bytes_have: 9,
                chunks_total: 1,
                chunks_have: 1,
                providers: 1,
                state: DownloadState::Complete,
                error: None,
            };
            self.downloads.lock().unwrap().push(info.clone());
            Ok(info)
        }
        async fn downloads(&self) -> Result<Vec<DownloadInfo>, ApiError> {
            Ok(self.downloads.lock().unwrap().clone())
        }
        async fn download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
            self.downloads
                .lock()
                .unwrap()
                .iter()
                .find(|d| d.content_id == content_id)
                .cloned()
                .ok_or_else(|| ApiError::not_found("no such download"))
        }
        async fn standing(&self, _peer: HexId) -> Result<StandingInfo, ApiError> {
            Err(ApiError::not_found("no standing here"))
        }
        async fn ledger_export(&self) -> Result<Vec<serde_json::Value>, ApiError> {
            Ok((1..=3).map(|seq| json!({ "seq": seq })).collect())
        }
        async fn limits(&self) -> Result<RateLimits, ApiError> {
            Ok(*self.limits.lock().unwrap())
        }
        async fn set_limits(&self, limits: RateLimits) -> Result<RateLimits, ApiError> {
            *self.limits.lock().unwrap() = limits;
            Ok(limits)
        }
        async fn shutdown(&self) -> Result<(), ApiError> {
            self.stop.notify_one();
            Ok(())
        }
        async fn market(&self) -> Result<MarketInfo, ApiError> {
            Ok(MarketInfo {
                offers: vec![order(true)],
                bids: Vec::new(),
                offers_total: 1,
                bids_total: 0,
                mine: vec![order(true)],
                trades: Vec::new(),
            })
        }
        async fn post_offer(&self, request: OfferRequest) -> Result<OrderInfo, ApiError> {
            Ok(OrderInfo {
                bytes: request.bytes,
                ..order(true)
            })
        }
        async fn post_bid(&self, request: BidRequest) -> Result<OrderInfo, ApiError> {
            Ok(OrderInfo {
                bytes: request.bytes,
                side: tally_web::model::OrderSide::Bid,
                ..order(true)
            })
        }
        async fn cancel_order(&self, order_id: HexId) -> Result<(), ApiError> {
            if order_id == ID.parse::<HexId>().unwrap() {
                Ok(())
            } else {
                Err(ApiError::not_found("no such order"))
            }
        }
        async fn trades(&self) -> Result<Vec<TradeInfo>, ApiError> {
            Ok(Vec::new())
        }
        async fn identity(&self) -> Result<tally_web::model::Identity, ApiError> {
            Err(ApiError::not_found("no identity here"))
        }
        async fn receipts(
            &self,
            _filter: tally_web::model::ReceiptFilter,
        ) -> Result<tally_web::model::ReceiptPage, ApiError> {
            Ok(tally_web::model::ReceiptPage {
                receipts: Vec::new(),
                next_cursor: None,
            })
        }
        async fn conflicts(&self) -> Result<Vec<tally_web::model::ConflictInfo>, ApiError> {
            Ok(Vec::new())
        }
        async fn cancel_download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
            self.download(content_id).await
        }
        async fn settings(&self) -> Result<tally_web::model::Settings, ApiError> {
            Ok(tally_web::model::Settings::default())
        }
        async fn set_settings(
            &self,
            settings: tally_web::model::Settings,
        ) -> Result<tally_web::model::Settings, ApiError> {
            Ok(settings)
        }
        async fn offers(&self) -> Result<Vec<OrderInfo>, ApiError> {
            Ok(Vec::new())
        }
        async fn bids(&self) -> Result<Vec<OrderInfo>, ApiError> {
            Ok(Vec::new())
        }
        async fn events(
            &self,
            _after: Option<u64>,
        ) -> Result<tally_web::events::EventStream, ApiError> {
            Ok(Box::pin(futures_util::stream::empty()))
        }
        async fn metrics(&self) -> Result<tally_web::metrics::MetricsSnapshot, ApiError> {
            Ok(tally_web::metrics::MetricsSnapshot::default())
        }
    }

    fn order(mine: bool) -> OrderInfo {
        OrderInfo {
            order_id: ID.parse().unwrap(),
            side: tally_web::model::OrderSide::Offer,
            owner: ID.parse().unwrap(),
            bytes: 10,
            remaining: 10,
            price_per_gib: 1,
            max_rate: Some(1),
            content_id: None,
            expires_ms: 1,
            mine,
            cancelled: false,
        }
    }

    struct Node {
        runtime: tokio::runtime::Runtime,
        task: tokio::task::JoinHandle<io::Result<()>>,
        addr: SocketAddr,
    }

    fn start() -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Fake::default());
        let app = tally_web::router(fake.clone(), ApiAuth::new(KEY, addr));
        let task = runtime.spawn(tally_web::serve(listener, app, async move {
            fake.stop.notified().await
        }));
        Node {
            runtime,
            task,
            addr,
        }
    }

    fn client(node: &Node) -> ApiClient {
        ApiClient::new(&format!("http://{}/", node.addr), KEY.into())
    }

    #[test]
    fn every_endpoint_round_trips_through_a_real_server() {
        let node = start();
        let client = client(&node);
        let id: HexId = ID.parse().unwrap();
        assert_eq!(client.status().unwrap().peer_id, id);
        assert_eq!(client.peers().unwrap().len(), 1);
        let connected = client
            .connect(&ConnectRequest {
                peer: format!("{ID}@127.0.0.1:7420"),
            })
            .unwrap();
        assert_eq!(connected.peer_id, id);
        let shared = client
            .share(&ShareRequest {
                path: "/data/x".into(),
            })
            .unwrap();
        assert_eq!(shared.name, "/data/x");
        assert_eq!(client.content().unwrap(), vec![summary("a")]);
        let started = client
            .get(&GetRequest {
                content_id: id,
                out: "/tmp/x".into(),
            })
            .unwrap();
        assert_eq!(client.downloads().unwrap(), vec![started.clone()]);
        assert_eq!(client.download(&id).unwrap(), started);
        let limits = RateLimits {
            upload_bytes_per_s: None,
            download_bytes_per_s: Some(5),
        };
        assert_eq!(client.set_limits(&limits).unwrap(), limits);
        assert_eq!(client.limits().unwrap(), limits);

        let mut out = Vec::new();
        assert_eq!(client.ledger_export(&mut out).unwrap(), 3);
        let seqs: Vec<u64> = BufReader::new(&out[..])
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);

        assert_eq!(client.market().unwrap().mine, vec![order(true)]);
        let offer = OfferRequest {
            bytes: 5,
            price_per_gib: 1,
            max_rate: None,
            ttl_s: None,
        };
        assert_eq!(client.post_offer(&offer).unwrap().bytes, 5);
        let bid = BidRequest {
            bytes: 6,
            max_price_per_gib: 1,
            content_id: None,
            ttl_s: Some(60),
        };
        assert_eq!(client.post_bid(&bid).unwrap().bytes, 6);
        client.cancel_order(&id).unwrap();
        let unknown: HexId = "cd".repeat(32).parse().unwrap();
        assert!(matches!(
            client.cancel_order(&unknown),
            Err(ClientError::Api { status: 404, .. })
        ));
        assert_eq!(client.trades().unwrap(), Vec::new());

        client.shutdown().unwrap();
        let Node { runtime, task, .. } = node;
        runtime.block_on(task).unwrap().unwrap();
        assert!(client.status().unwrap_err().is_no_daemon());
    }

    #[test]
    fn api_errors_carry_status_code_and_message() {
        let node = start();
        let unknown: HexId = "cd".repeat(32).parse().unwrap();
        match client(&node).download(&unknown) {
            Err(ClientError::Api {
                status: 404,
                code,
                message,
            }) => {
                assert_eq!(code, "not_found");
                assert_eq!(message, "no such download");
            }
            other => panic!("{other:?}"),
        }
        let wrong = ApiClient::new(&format!("http://{}", node.addr), "nope".into());
        match wrong.status() {
            Err(ClientError::Api {
                status: 401, code, ..
            }) => assert_eq!(code, "unauthorized"),
            other => panic!("{other:?}"),
        }
        let bad_peer = client(&node).connect(&ConnectRequest { peer: "x".into() });
        match bad_peer {
            Err(e @ ClientError::Api { status: 400, .. }) => {
                assert!(e.to_string().contains("PEERID@HOST:PORT"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_listening_is_no_daemon() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = ApiClient::new(&format!("http://127.0.0.1:{port}"), KEY.into());
        let error = client.status().unwrap_err();
        assert!(error.is_no_daemon(), "{error:?}");
        assert_eq!(
            error.to_string(),
            "no tally node is running for this data dir; start one with `tally run`"
        );
        let mut out = Vec::new();
        assert!(client.ledger_export(&mut out).unwrap_err().is_no_daemon());
        assert!(out.is_empty());
    }

    #[test]
    fn a_server_that_is_not_tally_is_a_bad_response() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for reply in [
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
            ] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while request.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                stream.write_all(reply.as_bytes()).unwrap();
            }
        });
        let client = ApiClient::new(&format!("http://{addr}"), KEY.into());
        for _ in 0..2 {
            match client.status() {
                Err(ClientError::BadResponse { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        server.join().unwrap();
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!("{:?}", ApiClient::new("http://127.0.0.1:1", KEY.into()));
        assert!(!shown.contains(KEY), "{shown}");
    }
}
