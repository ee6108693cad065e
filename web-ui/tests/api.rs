//! The HTTP API against an in-memory fake node: real sockets on `127.0.0.1:0` driven with ureq,
//! and `oneshot` calls of the router where no socket is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use serde_json::{Value, json};
use tally_web::model::{
    BidRequest, ConnectRequest, ContentSummary, Direction, DownloadInfo, DownloadState, ErrorBody,
    GetRequest, GossipStatus, MarketInfo, OfferRequest, OrderInfo, OrderSide, PeerInfo,
    PeerReceipts, RateLimits, ShareRequest, StandingInfo, Status, StoreStatus, TradeInfo,
    TransferTotals,
};
use tally_web::server::MAX_BODY_BYTES;
use tally_web::{ApiAuth, ApiError, HexId, NodeApi, router, serve};
use tokio::sync::Notify;
use tower::ServiceExt as _;

const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const PEER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const CONTENT: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const UNKNOWN: &str = "3333333333333333333333333333333333333333333333333333333333333333";
/// An order in the fake book that is someone else's.
const FOREIGN: &str = "4444444444444444444444444444444444444444444444444444444444444444";

// ---- the fake node ----

#[derive(Default)]
struct FakeNode {
    state: Mutex<FakeState>,
    stop: Notify,
}

#[derive(Default)]
struct FakeState {
    peers: Vec<PeerInfo>,
    content: Vec<ContentSummary>,
    downloads: Vec<DownloadInfo>,
    limits: RateLimits,
    orders: Vec<OrderInfo>,
}

fn fake_order(n: usize, side: OrderSide, bytes: u64, price_per_gib: u64) -> OrderInfo {
    OrderInfo {
        order_id: id(&format!("{:064x}", n + 0x100)),
        side,
        owner: id(PEER),
        bytes,
        remaining: bytes,
        price_per_gib,
        max_rate: None,
        content_id: None,
        expires_ms: 1_700_000_000_000,
        mine: true,
        cancelled: false,
    }
}

fn id(hex: &str) -> HexId {
    hex.parse().unwrap()
}

impl NodeApi for FakeNode {
    async fn status(&self) -> Result<Status, ApiError> {
        let state = self.state.lock().unwrap();
        Ok(Status {
            peer_id: id(PEER),
            network: "testnet".into(),
            network_id: "ab".repeat(32),
            version: "0.1.0".into(),
            quic_addr: "127.0.0.1:7420".into(),
            api_addr: "127.0.0.1:7421".into(),
            uptime_s: 5,
            peers_connected: state.peers.iter().filter(|p| p.connected).count() as u32,
            store: StoreStatus {
                receipts: 2,
                pairs: 2,
                conflicts: 0,
                dishonest: 0,
                third_party: 0,
                tombstones: 0,
            },
            transfer: TransferTotals {
                bytes_up: 10,
                bytes_down: 20,
            },
            limits: state.limits,
            dishonest_peers: Vec::new(),
            gossip: GossipStatus::default(),
            upload_budget: Default::default(),
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
        Ok(self.state.lock().unwrap().peers.clone())
    }

    async fn connect(&self, request: ConnectRequest) -> Result<PeerInfo, ApiError> {
        // The server has checked the shape already.
        let target = request.parse().unwrap();
        let peer = PeerInfo {
            peer_id: target.peer_id,
            addr: format!("{}:{}", target.host, target.port),
            connected: true,
            direction: Direction::Out,
            since_ms: 1_700_000_000_000,
            bytes_sent: 0,
            bytes_received: 0,
            receipts: PeerReceipts {
                up: None,
                down: Some(3),
            },
        };
        self.state.lock().unwrap().peers.push(peer.clone());
        Ok(peer)
    }

    async fn share(&self, request: ShareRequest) -> Result<ContentSummary, ApiError> {
        if request.path.starts_with("/missing") {
            return Err(ApiError::unprocessable(format!(
                "{}: no such file",
                request.path
            )));
        }
        let summary = ContentSummary {
            content_id: id(CONTENT),
            size: 1000,
            chunks: 1,
            name: request.path.rsplit('/').next().unwrap_or_default().into(),
        };
        self.state.lock().unwrap().content.push(summary.clone());
        Ok(summary)
    }

    async fn content(&self) -> Result<Vec<ContentSummary>, ApiError> {
        Ok(self.state.lock().unwrap().content.clone())
    }

    async fn get(&self, request: GetRequest) -> Result<DownloadInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        if state.downloads.iter().any(|d| d.out == request.out) {
            return Err(ApiError::conflict(format!(
                "{} is already being written",
                request.out
            )));
        }
        let info = DownloadInfo {
            content_id: request.content_id,
            out: request.out,
            size: 0,
            bytes_have: 0,
            chunks_total: 0,
            chunks_have: 0,
            providers: 0,
            state: DownloadState::Running,
            error: None,
        };
        state.downloads.push(info.clone());
        Ok(info)
    }

    async fn downloads(&self) -> Result<Vec<DownloadInfo>, ApiError> {
        Ok(self.state.lock().unwrap().downloads.clone())
    }

    async fn download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
        let state = self.state.lock().unwrap();
        state
            .downloads
            .iter()
            .find(|d| d.content_id == content_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no download of {content_id}")))
    }

    async fn standing(&self, peer: HexId) -> Result<StandingInfo, ApiError> {
        Ok(StandingInfo {
            peer_id: peer,
            score: 0.0,
            at_floor: true,
            dishonest: false,
            given: 0,
            taken: 0,
            transitive: 0.0,
            raw: 0.0,
            paths: Vec::new(),
            weight: 1.0,
            credit_window: 4 << 20,
            queue: None,
        })
    }

    async fn ledger_export(&self) -> Result<Vec<Value>, ApiError> {
        Ok(vec![
            json!({"uploader": PEER, "seq": 1, "bytes": 10}),
            json!({"uploader": CONTENT, "seq": 2, "bytes": 20}),
        ])
    }

    async fn limits(&self) -> Result<RateLimits, ApiError> {
        Ok(self.state.lock().unwrap().limits)
    }

    async fn set_limits(&self, limits: RateLimits) -> Result<RateLimits, ApiError> {
        self.state.lock().unwrap().limits = limits;
        Ok(limits)
    }

    async fn shutdown(&self) -> Result<(), ApiError> {
        self.stop.notify_one();
        Ok(())
    }

    async fn market(&self) -> Result<MarketInfo, ApiError> {
        let orders = self.state.lock().unwrap().orders.clone();
        let side = |s: OrderSide| -> Vec<OrderInfo> {
            orders.iter().filter(|o| o.side == s).cloned().collect()
        };
        Ok(MarketInfo {
            offers_total: side(OrderSide::Offer).len() as u64,
            bids_total: side(OrderSide::Bid).len() as u64,
            offers: side(OrderSide::Offer),
            bids: side(OrderSide::Bid),
            mine: orders.clone(),
            trades: Vec::new(),
        })
    }

    async fn post_offer(&self, request: OfferRequest) -> Result<OrderInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let mut order = fake_order(
            state.orders.len(),
            OrderSide::Offer,
            request.bytes,
            request.price_per_gib,
        );
        order.max_rate = request.max_rate;
        state.orders.push(order.clone());
        Ok(order)
    }

    async fn post_bid(&self, request: BidRequest) -> Result<OrderInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let mut order = fake_order(
            state.orders.len(),
            OrderSide::Bid,
            request.bytes,
            request.max_price_per_gib,
        );
        order.content_id = request.content_id;
        state.orders.push(order.clone());
        Ok(order)
    }

    async fn cancel_order(&self, order_id: HexId) -> Result<(), ApiError> {
        if order_id == id(FOREIGN) {
            return Err(ApiError::conflict(format!(
                "order {order_id} is not this node's"
            )));
        }
        let mut state = self.state.lock().unwrap();
        let before = state.orders.len();
        state.orders.retain(|o| o.order_id != order_id);
        if state.orders.len() == before {
            return Err(ApiError::not_found(format!("no live order {order_id}")));
        }
        Ok(())
    }

    async fn trades(&self) -> Result<Vec<TradeInfo>, ApiError> {
        Ok(vec![TradeInfo {
            trade_id: id(UNKNOWN),
            role: "buyer".into(),
            state: "agreed".into(),
            offer_id: id(FOREIGN),
            bid_id: id(CONTENT),
            seller: id(FOREIGN),
            buyer: id(PEER),
            bytes: 10,
            price_per_gib: 2,
            expires_ms: 1_700_000_000_000,
            delivered_bytes: 0,
            settled_credits: 0,
            owed_credits: 0,
            note: None,
        }])
    }
}

// ---- a server on a real socket ----

struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    agent: ureq::Agent,
}

struct Reply {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    allow: Option<String>,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }

    /// Asserts this is a JSON error with `status` and `code`, and returns its message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body {:?}", self.body);
        assert_eq!(self.content_type, "application/json", "{}", self.body);
        let body: ErrorBody = self.json();
        assert_eq!((body.status, body.code.as_str()), (status, code));
        assert!(!body.message.is_empty());
        body.message
    }
}

fn start() -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Arc::new(FakeNode::default());
    let app = router(node.clone(), ApiAuth::new(KEY, addr));
    let task = runtime.spawn(serve(
        listener,
        app,
        async move { node.stop.notified().await },
    ));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build(),
    );
    Server {
        runtime,
        addr,
        task,
        agent,
    }
}

impl Server {
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => self.agent.run(request.body(body.to_vec()).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = response.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let allow = header("allow");
        let location = header("location");
        Reply {
            status: response.status().as_u16(),
            content_type,
            www_authenticate,
            allow,
            location,
            body: response.body_mut().read_to_string().unwrap(),
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[("Authorization", &bearer())], None)
    }

    fn with_json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.with_body(method, path, &body.to_string())
    }

    fn with_body(&self, method: &str, path: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            &[
                ("Authorization", &bearer()),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    }
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

// ---- happy paths ----

#[test]
fn status_answers_the_node_at_a_glance() {
    let server = start();
    let reply = server.get("/api/v1/status");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let status: Status = reply.json();
    assert_eq!(status.peer_id, id(PEER));
    assert_eq!(status.transfer.bytes_down, 20);
    let raw: Value = reply.json();
    assert_eq!(raw["peer_id"], PEER, "ids are hex strings in JSON");
    assert_eq!(raw["limits"]["upload_bytes_per_s"], Value::Null);
}

#[test]
fn connect_then_list_peers() {
    let server = start();
    assert_eq!(server.get("/api/v1/peers").json::<Vec<PeerInfo>>(), vec![]);
    let reply = server.with_json(
        "POST",
        "/api/v1/peers",
        &json!({"peer": format!("{PEER}@[::1]:7420")}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let peer: PeerInfo = reply.json();
    assert_eq!(peer.addr, "::1:7420");
    let raw: Value = reply.json();
    assert_eq!(raw["direction"], "out");
    assert_eq!(raw["receipts"], json!({"up": null, "down": 3}));
    assert_eq!(
        server.get("/api/v1/peers").json::<Vec<PeerInfo>>(),
        vec![peer]
    );
    assert_eq!(
        server
            .get("/api/v1/status")
            .json::<Status>()
            .peers_connected,
        1
    );
}

#[test]
fn share_then_list_content() {
    let server = start();
    let reply = server.with_json("POST", "/api/v1/content", &json!({"path": "/data/a.bin"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let summary: ContentSummary = reply.json();
    assert_eq!(summary.name, "a.bin");
    assert_eq!(
        server.get("/api/v1/content").json::<Vec<ContentSummary>>(),
        vec![summary]
    );
}

#[test]
fn get_starts_a_download_that_can_be_listed_and_looked_up() {
    let server = start();
    let reply = server.with_json(
        "POST",
        "/api/v1/downloads",
        &json!({"content_id": CONTENT, "out": "/tmp/out.bin"}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(
        reply.location.as_deref(),
        Some(format!("/api/v1/downloads/{CONTENT}").as_str())
    );
    let info: DownloadInfo = reply.json();
    assert_eq!(info.state, DownloadState::Running);
    let raw: Value = reply.json();
    assert_eq!(
        (raw["state"].clone(), raw["error"].clone()),
        (json!("running"), Value::Null)
    );

    assert_eq!(
        server.get("/api/v1/downloads").json::<Vec<DownloadInfo>>(),
        vec![info.clone()]
    );
    let one = server.get(&format!("/api/v1/downloads/{CONTENT}"));
    assert_eq!(one.status, 200);
    assert_eq!(one.json::<DownloadInfo>(), info);
}

#[test]
fn standing_of_a_peer_is_json() {
    let server = start();
    let reply = server.get(&format!("/api/v1/standing/{PEER}"));
    assert_eq!(reply.status, 200);
    let standing: StandingInfo = reply.json();
    assert_eq!(standing.peer_id.to_string(), PEER);
    assert!(standing.at_floor);
}

#[test]
fn ledger_export_is_ndjson() {
    let server = start();
    let reply = server.get("/api/v1/ledger/export");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/x-ndjson");
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["seq"], 2);
    assert!(reply.body.ends_with('\n'));
}

#[test]
fn limits_are_read_and_replaced() {
    let server = start();
    assert_eq!(
        server.get("/api/v1/limits").json::<RateLimits>(),
        RateLimits::default()
    );
    let reply = server.with_json(
        "PUT",
        "/api/v1/limits",
        &json!({"upload_bytes_per_s": 1000, "download_bytes_per_s": null}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let expected = RateLimits {
        upload_bytes_per_s: Some(1000),
        download_bytes_per_s: None,
    };
    assert_eq!(reply.json::<RateLimits>(), expected);
    assert_eq!(server.get("/api/v1/limits").json::<RateLimits>(), expected);
    assert_eq!(
        server.get("/api/v1/status").json::<Status>().limits,
        expected
    );
}

#[test]
fn shutdown_stops_the_server_gracefully() {
    let server = start();
    let reply = server.send(
        "POST",
        "/api/v1/shutdown",
        &[("Authorization", &bearer())],
        None,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    // `serve` returns once the shutdown signal fired and the connections are done.
    let Server {
        runtime,
        task,
        addr,
        ..
    } = server;
    runtime.block_on(task).unwrap().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn the_node_errors_are_passed_through_as_json() {
    let server = start();
    server
        .with_json("POST", "/api/v1/content", &json!({"path": "/missing/x"}))
        .error(422, "unprocessable");
    let get = json!({"content_id": CONTENT, "out": "/tmp/o"});
    assert_eq!(
        server.with_json("POST", "/api/v1/downloads", &get).status,
        202
    );
    server
        .with_json("POST", "/api/v1/downloads", &get)
        .error(409, "conflict");
}

// ---- the market ----

#[test]
fn offers_and_bids_are_posted_listed_and_cancelled() {
    let server = start();
    let reply = server.with_json(
        "POST",
        "/api/v1/offers",
        &json!({"bytes": 1024, "price_per_gib": 5, "max_rate": 100, "ttl_s": 60}),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let offer: OrderInfo = reply.json();
    assert_eq!((offer.bytes, offer.max_rate), (1024, Some(100)));
    let raw: Value = reply.json();
    assert_eq!(raw["side"], "offer");
    assert_eq!(raw["content_id"], Value::Null);

    let reply = server.with_json(
        "POST",
        "/api/v1/bids",
        &json!({"bytes": 10, "max_price_per_gib": 7, "content_id": CONTENT}),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let bid: OrderInfo = reply.json();
    assert_eq!(bid.side, OrderSide::Bid);
    assert_eq!(bid.content_id, Some(id(CONTENT)));

    let market: MarketInfo = server.get("/api/v1/market").json();
    assert_eq!(market.offers, vec![offer.clone()]);
    assert_eq!(market.bids, vec![bid.clone()]);
    assert_eq!(market.mine.len(), 2);

    let path = format!("/api/v1/orders/{}", offer.order_id);
    let reply = server.send("DELETE", &path, &[("Authorization", &bearer())], None);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(reply.body.is_empty());
    let market: MarketInfo = server.get("/api/v1/market").json();
    assert_eq!(market.mine, vec![bid]);
    // Again: it is gone.
    server
        .send("DELETE", &path, &[("Authorization", &bearer())], None)
        .error(404, "not_found");
    server
        .send(
            "DELETE",
            &format!("/api/v1/orders/{FOREIGN}"),
            &[("Authorization", &bearer())],
            None,
        )
        .error(409, "conflict");
    server
        .send(
            "DELETE",
            "/api/v1/orders/nope",
            &[("Authorization", &bearer())],
            None,
        )
        .error(400, "bad_request");

    let trades: Vec<TradeInfo> = server.get("/api/v1/trades").json();
    assert_eq!(trades.len(), 1);
    let raw: Value = server.get("/api/v1/trades").json();
    assert_eq!(raw[0]["state"], "agreed");
    assert_eq!(raw[0]["note"], Value::Null);
}

#[test]
fn bad_orders_are_400_before_they_reach_the_node() {
    let server = start();
    for (path, body, says) in [
        (
            "/api/v1/offers",
            json!({"bytes": 0, "price_per_gib": 1}),
            "bytes",
        ),
        (
            "/api/v1/offers",
            json!({"bytes": 1, "price_per_gib": 1, "ttl_s": 0}),
            "ttl_s",
        ),
        (
            "/api/v1/offers",
            json!({"bytes": 1, "price_per_gib": 1, "max_rate": 0}),
            "max_rate",
        ),
        (
            "/api/v1/bids",
            json!({"bytes": 1, "max_price_per_gib": 1, "ttl_s": 8 * 86_400}),
            "ttl_s",
        ),
        (
            "/api/v1/bids",
            json!({"bytes": 1, "max_price": 1}),
            "max_price",
        ),
        (
            "/api/v1/bids",
            json!({"bytes": 1, "max_price_per_gib": 1, "content_id": "zz"}),
            "content_id",
        ),
        (
            "/api/v1/offers",
            json!({"bytes": -1, "price_per_gib": 1}),
            "bytes",
        ),
    ] {
        let message = server
            .with_json("POST", path, &body)
            .error(400, "bad_request");
        assert!(message.contains(says), "{body}: {message}");
    }
    assert!(
        server
            .get("/api/v1/market")
            .json::<MarketInfo>()
            .mine
            .is_empty()
    );
    let reply = server.get("/api/v1/orders/abc");
    assert_eq!(reply.status, 405, "only DELETE is routed on an order");
}

// ---- auth and Host ----

#[test]
fn no_key_is_401_with_a_bearer_challenge() {
    let server = start();
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/ledger/export"),
        ("GET", "/api/v1/standing/00"),
        ("POST", "/api/v1/shutdown"),
        ("GET", "/api/v1/no-such-route"),
    ] {
        let reply = server.send(method, path, &[], None);
        let message = reply.error(401, "unauthorized");
        assert!(message.contains("Bearer"), "{message}");
        assert_eq!(reply.www_authenticate.as_deref(), Some("Bearer"));
    }
}

#[test]
fn a_wrong_key_is_401() {
    let server = start();
    let mut wrong = KEY.to_owned();
    wrong.replace_range(63..64, "f");
    for header in [
        format!("Bearer {wrong}"),
        format!("Bearer {}", &KEY[..63]),
        format!("Bearer {KEY}0"),
        "Bearer x".to_owned(),
        format!("Basic {KEY}"),
        KEY.to_owned(),
    ] {
        let reply = server.send("GET", "/api/v1/status", &[("Authorization", &header)], None);
        reply.error(401, "unauthorized");
        assert!(reply.www_authenticate.unwrap().starts_with("Bearer"));
        assert!(!reply.body.contains(KEY));
    }
    // The shutdown route did not run.
    let reply = server.send(
        "POST",
        "/api/v1/shutdown",
        &[("Authorization", "Bearer x")],
        None,
    );
    reply.error(401, "unauthorized");
    assert_eq!(server.get("/api/v1/status").status, 200);
}

#[test]
fn a_foreign_host_is_403_even_with_the_key() {
    let server = start();
    let port = server.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        let reply = server.send(
            "GET",
            "/api/v1/status",
            &[("Authorization", &bearer()), ("Host", &host)],
            None,
        );
        reply.error(403, "host_not_allowed");
    }
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let reply = server.send(
            "GET",
            "/api/v1/status",
            &[("Authorization", &bearer()), ("Host", &host)],
            None,
        );
        assert_eq!(reply.status, 200, "{host}");
    }
}

// ---- bad input ----

#[test]
fn malformed_json_unknown_fields_and_bad_ids_are_400() {
    let server = start();
    let message = server
        .with_body("POST", "/api/v1/peers", "{\"peer\": ")
        .error(400, "bad_request");
    assert!(
        message.contains("EOF") || message.contains("parse"),
        "{message}"
    );
    let message = server
        .with_json(
            "POST",
            "/api/v1/content",
            &json!({"path": "/a", "pth": "/b"}),
        )
        .error(400, "bad_request");
    assert!(message.contains("unknown field `pth`"), "{message}");
    let message = server
        .with_json(
            "POST",
            "/api/v1/downloads",
            &json!({"content_id": "ABCD", "out": "/tmp/x"}),
        )
        .error(400, "bad_request");
    assert!(message.contains("64 lowercase hex"), "{message}");
    let message = server
        .get("/api/v1/downloads/not-hex")
        .error(400, "bad_request");
    assert!(message.contains("content id"), "{message}");
    let message = server
        .get("/api/v1/standing/not-hex")
        .error(400, "bad_request");
    assert!(message.contains("peer id"), "{message}");
    let message = server
        .with_json(
            "POST",
            "/api/v1/peers",
            &json!({"peer": format!("{PEER}@host")}),
        )
        .error(400, "bad_request");
    assert!(message.contains("port"), "{message}");
    server
        .with_json("PUT", "/api/v1/limits", &json!({"upload_bytes_per_s": -1}))
        .error(400, "bad_request");
}

#[test]
fn a_missing_body_or_content_type_is_4xx_json() {
    let server = start();
    let auth = ("Authorization", bearer());
    let json_type = ("Content-Type", "application/json");
    let reply = server.send(
        "POST",
        "/api/v1/content",
        &[(auth.0, &auth.1), json_type],
        None,
    );
    reply.error(400, "bad_request");
    let reply = server.send("POST", "/api/v1/content", &[(auth.0, &auth.1)], None);
    reply.error(415, "unsupported_media_type");
    let reply = server.send(
        "PUT",
        "/api/v1/limits",
        &[(auth.0, &auth.1), ("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    reply.error(415, "unsupported_media_type");
}

#[test]
fn unknown_downloads_and_routes_are_404_json() {
    let server = start();
    let message = server
        .get(&format!("/api/v1/downloads/{UNKNOWN}"))
        .error(404, "not_found");
    assert!(message.contains(UNKNOWN));
    server.get("/api/v1/nope").error(404, "not_found");
    server.get("/api/v1").error(404, "not_found");
    server.get("/api/v2/status").error(404, "not_found");
    // `/` is the dashboard (tests/session.rs); other paths outside the API are still 404 JSON.
    server.get("/nope").error(404, "not_found");
    server.get("/assets/nope.js").error(404, "not_found");
}

#[test]
fn an_oversized_body_is_413_json() {
    let server = start();
    let path = "a".repeat(MAX_BODY_BYTES);
    let reply = server.with_json("POST", "/api/v1/content", &json!({ "path": path }));
    reply.error(413, "payload_too_large");
}

#[test]
fn a_wrong_method_is_405_json_with_allow() {
    let server = start();
    let reply = server.send(
        "DELETE",
        "/api/v1/status",
        &[("Authorization", &bearer())],
        None,
    );
    reply.error(405, "method_not_allowed");
    assert_eq!(reply.allow.as_deref(), Some("GET,HEAD"));
    let reply = server.with_json("PUT", "/api/v1/peers", &json!({}));
    reply.error(405, "method_not_allowed");
    let reply = server.get("/api/v1/shutdown");
    reply.error(405, "method_not_allowed");
    assert_eq!(reply.allow.as_deref(), Some("POST"));
}

#[test]
fn no_bad_input_yields_5xx() {
    let server = start();
    let bodies = [
        "",
        "null",
        "[]",
        "\"x\"",
        "{}",
        "{{",
        "{\"path\": 5}",
        "{\"path\": null}",
        "{\"peer\": \"\"}",
        "{\"peer\": \"@:\"}",
        "{\"content_id\": 7, \"out\": \"/x\"}",
        "{\"content_id\": \"é\", \"out\": \"/x\"}",
        "{\"upload_bytes_per_s\": 1e400}",
        "{\"upload_bytes_per_s\": 18446744073709551616}",
        "\u{0}\u{1}\u{2}",
        "{\"path\": \"\"}",
        "{\"out\": \"\", \"content_id\": \"2222222222222222222222222222222222222222222222222222222222222222\"}",
    ];
    let routes = [
        ("POST", "/api/v1/peers"),
        ("POST", "/api/v1/content"),
        ("POST", "/api/v1/downloads"),
        ("PUT", "/api/v1/limits"),
    ];
    for (method, path) in routes {
        for body in bodies {
            if (path, body) == ("/api/v1/limits", "{}") {
                continue; // valid: both limits absent, so both unlimited
            }
            let reply = server.with_body(method, path, body);
            assert!(
                (400..500).contains(&reply.status),
                "{method} {path} {body:?} answered {} {}",
                reply.status,
                reply.body
            );
            let error: ErrorBody = reply.json();
            assert_eq!(error.status, reply.status);
        }
    }
    for path in [
        "/api/v1/downloads/%FF%FE",
        "/api/v1/downloads/..%2F..%2Fetc",
        "/api/v1/downloads/2222",
        "/api/v1//status",
        "/api/v1/downloads/2222222222222222222222222222222222222222222222222222222222222222/x",
    ] {
        let reply = server.get(path);
        assert!(
            (400..500).contains(&reply.status),
            "{path}: {} {}",
            reply.status,
            reply.body
        );
        let _: ErrorBody = reply.json();
    }
}

// ---- the router without a socket ----

fn app() -> axum::Router {
    router(
        Arc::new(FakeNode::default()),
        ApiAuth::new(KEY, "127.0.0.1:7421".parse().unwrap()),
    )
}

fn request(method: &str, path: &str, host: &str) -> axum::http::request::Builder {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("authorization", bearer())
}

async fn body_json(response: axum::response::Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn oneshot_status() {
    let response = app()
        .oneshot(
            request("GET", "/api/v1/status", "localhost:7421")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await["network"], "testnet");
}

#[tokio::test]
async fn oneshot_a_request_without_host_is_403() {
    let response = app()
        .oneshot(
            axum::http::Request::builder()
                .uri("/api/v1/status")
                .header("authorization", bearer())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(body_json(response).await["code"], "host_not_allowed");
}

#[tokio::test]
async fn oneshot_put_limits_rejects_an_unknown_field() {
    let response = app()
        .oneshot(
            request("PUT", "/api/v1/limits", "127.0.0.1:7421")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"upload_bytes_per_sec": 5}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = body_json(response).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("upload_bytes_per_sec")
    );
}
