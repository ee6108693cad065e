//! The HTTP API against real nodes: in-process nodes on 127.0.0.1 port 0 (real QUIC, real sled,
//! real content stores) behind the real router on a real socket, driven with a blocking HTTP
//! client from the test thread while the nodes run on their own runtime. Every answer checked
//! here is also validated against the OpenAPI document's schema for its route and status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::{DEADLINE, TestNode, payload};
use serde_json::{Value, json};
use tally_ledger::{Identity, NetworkId, PeerId, Receipt, ReceiptBody};
use tally_node::daemon::Behaviour;
use tally_node::daemon::api::NodeHandle;
use tally_web::ApiAuth;

const KEY: &str = "6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a";

/// A running node with its API served on a real socket.
struct ApiNode {
    node: TestNode,
    addr: SocketAddr,
}

/// Blocking HTTP against the nodes; checks every JSON answer against the document.
struct Client {
    agent: ureq::Agent,
    document: utoipa::openapi::OpenApi,
}

struct Reply {
    status: u16,
    body: Value,
}

impl Client {
    fn new() -> Self {
        Self {
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .proxy(None)
                    .build(),
            ),
            document: tally_web::server::openapi(),
        }
    }

    /// Sends `method` `path` to `node` (the route template is `route`, for the schema) and
    /// validates the JSON answer against the document.
    fn call(
        &self,
        node: &ApiNode,
        method: Method,
        route: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(format!("http://{}{path}", node.addr))
            .header("Authorization", format!("Bearer {KEY}"));
        let response = match body {
            Some(body) => {
                request = request.header("Content-Type", "application/json");
                self.agent
                    .run(request.body(body.to_string().into_bytes()).unwrap())
            }
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        assert!(status < 500, "{method} {path} answered {status}: {text}");
        if let Some(schema) = tally_web::openapi::response_schema(
            &self.document,
            &method,
            &format!("/api/v1{route}"),
            status,
        ) {
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} ({status}) does not match the document: {errors:?}\n{text}"
            );
        } else {
            assert!(
                tally_web::openapi::operation(&self.document, &method, &format!("/api/v1{route}"))
                    .is_some_and(|op| op.responses.responses.contains_key(&status.to_string())),
                "{method} {route} answered {status}, which the document does not list"
            );
        }
        Reply { status, body }
    }

    fn get(&self, node: &ApiNode, route: &str, path: &str) -> Value {
        let reply = self.call(node, Method::GET, route, path, None);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.body
    }

    /// Asserts an error answer with `status` and `code`; returns its message.
    fn error(&self, reply: Reply, status: u16, code: &str) -> String {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.body["code"], code, "{}", reply.body);
        reply.body["message"].as_str().unwrap().to_owned()
    }
}

/// Starts a node and serves its API on 127.0.0.1 port 0.
async fn start_node(adjust: impl FnOnce(&mut tally_node::config::Config)) -> ApiNode {
    let node = TestNode::start_with(Behaviour::default(), adjust).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    *node.shared().api_addr.lock().unwrap() = Some(addr);
    let router = tally_web::router(
        Arc::new(NodeHandle::new(Arc::clone(node.shared()))),
        ApiAuth::new(KEY, addr),
    );
    let stop = node.shared().cancel.clone();
    tokio::spawn(tally_web::serve(listener, router, async move {
        stop.cancelled().await
    }));
    ApiNode { node, addr }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `condition` from the test thread until it holds, failing after [`DEADLINE`].
fn poll(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hex(peer: PeerId) -> String {
    peer.to_string()
}

fn signed(up: &Identity, down: &Identity, network: &NetworkId, seq: u64, bytes: u64) -> Receipt {
    ReceiptBody {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
        seq,
        bytes,
        credits: bytes,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(down, network)
    .countersign(up, network)
}

#[test]
fn two_real_nodes_answer_every_route_as_the_document_says() {
    let rt = runtime();
    let client = Client::new();
    let (seeder, leecher) = rt.block_on(async {
        let seeder = start_node(|_| {}).await;
        let leecher = start_node(|_| {}).await;
        leecher.node.connect(&seeder.node).await;
        (seeder, leecher)
    });
    let data = payload(600_000, 1);
    let content = seeder.node.share(&data);
    let out = leecher.node.out("got.bin");

    // A download through the API, to completion.
    let reply = client.call(
        &leecher,
        Method::POST,
        "/downloads",
        "/api/v1/downloads",
        Some(json!({"content_id": content.to_string(), "out": out.display().to_string()})),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let path = format!("/api/v1/downloads/{content}");
    poll("the download to complete", || {
        client.get(&leecher, "/downloads/{content_id}", &path)["state"] == "complete"
    });
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Complete: cancelling it is a conflict.
    let message = client.error(
        client.call(
            &leecher,
            Method::DELETE,
            "/downloads/{content_id}",
            &path,
            None,
        ),
        409,
        "conflict",
    );
    assert!(message.contains("complete"), "{message}");
    // The receipt settles the bytes both ways.
    let (s, l) = (seeder.node.id(), leecher.node.id());
    poll("the final receipt", || {
        seeder
            .node
            .latest(s, l)
            .is_some_and(|r| r.bytes == data.len() as u64)
    });

    // Identity agrees with status.
    let identity = client.get(&leecher, "/identity", "/api/v1/identity");
    let status = client.get(&leecher, "/status", "/api/v1/status");
    for field in [
        "peer_id",
        "network",
        "network_id",
        "quic_addr",
        "api_addr",
        "version",
    ] {
        assert_eq!(identity[field], status[field], "{field}");
    }
    assert_eq!(identity["api_addr"], leecher.addr.to_string());

    // Peers: connected, with credits each way and standing.
    let peers = client.get(&leecher, "/peers", "/api/v1/peers");
    let seen = &peers.as_array().unwrap()[0];
    assert_eq!(seen["peer_id"], hex(s));
    assert_eq!(seen["state"], "connected");
    assert_eq!(seen["credits_received"], data.len() as u64);
    assert_eq!(seen["credits_sent"], 0);
    let peers = client.get(&seeder, "/peers", "/api/v1/peers");
    assert_eq!(peers[0]["credits_sent"], data.len() as u64);
    assert_eq!(peers[0]["bytes_sent"], data.len() as u64);
    poll("the seeder's standing at the leecher", || {
        client.get(&leecher, "/peers", "/api/v1/peers")[0]["standing"]
            .as_f64()
            .unwrap()
            > 0.0
    });

    // Receipts: the one pair, from both sides, filtered by either peer.
    for node in [&seeder, &leecher] {
        let page = client.get(node, "/receipts", "/api/v1/receipts");
        assert_eq!(page["next_cursor"], Value::Null);
        let receipt = &page["receipts"][0];
        assert_eq!(
            (receipt["uploader"].clone(), receipt["downloader"].clone()),
            (json!(hex(s)), json!(hex(l)))
        );
        assert_eq!(receipt["bytes"], data.len() as u64);
        let by_peer = client.get(
            node,
            "/receipts",
            &format!("/api/v1/receipts?peer={}", hex(l)),
        );
        assert_eq!(by_peer["receipts"], page["receipts"]);
        let stranger = hex(Identity::generate(&mut rand::rng()).peer_id());
        let none = client.get(
            node,
            "/receipts",
            &format!("/api/v1/receipts?peer={stranger}"),
        );
        assert_eq!(none["receipts"], json!([]));
    }

    // The market's sides.
    let offer = client.call(
        &seeder,
        Method::POST,
        "/offers",
        "/api/v1/offers",
        Some(json!({"bytes": 1 << 30, "price_per_gib": 7})),
    );
    assert_eq!(offer.status, 201, "{}", offer.body);
    let bid = client.call(
        &seeder,
        Method::POST,
        "/bids",
        "/api/v1/bids",
        Some(json!({"bytes": 1 << 20, "max_price_per_gib": 3})),
    );
    assert_eq!(bid.status, 201, "{}", bid.body);
    assert_eq!(
        client.get(&seeder, "/offers", "/api/v1/offers"),
        json!([offer.body])
    );
    assert_eq!(
        client.get(&seeder, "/bids", "/api/v1/bids"),
        json!([bid.body])
    );
    poll("the orders to reach the leecher", || {
        client
            .get(&leecher, "/offers", "/api/v1/offers")
            .as_array()
            .unwrap()
            .len()
            == 1
            && client
                .get(&leecher, "/bids", "/api/v1/bids")
                .as_array()
                .unwrap()
                .len()
                == 1
    });

    // Every other GET route answers as documented.
    for (route, path) in [
        ("/content", "/api/v1/content".to_owned()),
        ("/downloads", "/api/v1/downloads".to_owned()),
        (
            "/standing/{peer_id}",
            format!("/api/v1/standing/{}", hex(s)),
        ),
        ("/limits", "/api/v1/limits".to_owned()),
        ("/settings", "/api/v1/settings".to_owned()),
        ("/market", "/api/v1/market".to_owned()),
        ("/trades", "/api/v1/trades".to_owned()),
        ("/conflicts", "/api/v1/conflicts".to_owned()),
    ] {
        client.get(&leecher, route, &path);
    }

    // Settings change the budgets at runtime and keep what was uploaded today.
    let before = client.get(&seeder, "/status", "/api/v1/status")["upload_budget"]["day"]["used"]
        .as_u64()
        .unwrap();
    assert!(before >= data.len() as u64);
    let settings = json!({
        "upload_bytes_per_s": 1 << 20,
        "download_bytes_per_s": null,
        "upload_budget_daily": 1u64 << 30,
        "upload_budget_monthly": null,
    });
    let reply = client.call(
        &seeder,
        Method::PUT,
        "/settings",
        "/api/v1/settings",
        Some(settings.clone()),
    );
    assert_eq!((reply.status, reply.body), (200, settings.clone()));
    let status = client.get(&seeder, "/status", "/api/v1/status");
    assert_eq!(status["upload_budget"]["day"]["limit"], 1u64 << 30);
    assert_eq!(status["upload_budget"]["day"]["used"], before);
    assert_eq!(status["limits"]["upload_bytes_per_s"], 1 << 20);
    let message = client.error(
        client.call(
            &seeder,
            Method::PUT,
            "/settings",
            "/api/v1/settings",
            Some(json!({"upload_budget_daily": 1000})),
        ),
        422,
        "unprocessable",
    );
    assert!(message.contains("upload_budget_daily"), "{message}");
    assert_eq!(
        client.get(&seeder, "/settings", "/api/v1/settings"),
        settings
    );

    // A ban shows on both sides: banned at the seeder, disconnected at the leecher.
    assert!(seeder.node.shared().peers.penalize(l, 100, "a test ban"));
    poll("the ban to show", || {
        let at_seeder = client.get(&seeder, "/peers", "/api/v1/peers");
        let at_leecher = client.get(&leecher, "/peers", "/api/v1/peers");
        at_seeder[0]["state"] == "banned"
            && at_seeder[0]["connected"] == false
            && at_leecher[0]["state"] == "disconnected"
    });
    let at_seeder = client.get(&seeder, "/peers", "/api/v1/peers");
    // What was counted on the ended connection is still shown.
    assert_eq!(at_seeder[0]["bytes_sent"], data.len() as u64);
    assert_eq!(at_seeder[0]["up_bps"], 0);

    rt.block_on(async {
        leecher.node.stop().await;
        seeder.node.stop().await;
    });
}

#[test]
fn receipts_pages_walk_the_whole_store_in_a_stable_order() {
    let rt = runtime();
    let client = Client::new();
    let node = rt.block_on(start_node(|_| {}));
    let shared = Arc::clone(node.node.shared());
    let network = shared.network;
    let people: Vec<Identity> = (0..5)
        .map(|_| Identity::generate(&mut rand::rng()))
        .collect();
    let mut receipts = Vec::new();
    for (i, up) in people.iter().enumerate() {
        for (j, down) in people.iter().enumerate() {
            if i != j && (i + j) % 3 != 0 {
                receipts.push(signed(up, down, &network, 1, 1000 + (i * 10 + j) as u64));
            }
        }
    }
    let ingested = shared.store.ingest(&receipts).unwrap();
    assert!(
        ingested
            .iter()
            .all(|i| matches!(i, tally_ledger::Ingested::Applied(_)))
    );
    let mut expected: Vec<(String, String)> = receipts
        .iter()
        .map(|r| (hex(r.uploader), hex(r.downloader)))
        .collect();
    expected.sort();

    // Pages of 3, following next_cursor.
    let walk = |query: &str, limit: usize| -> Vec<(String, String)> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/receipts?limit={limit}{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = client.get(&node, "/receipts", &path);
            let items = page["receipts"].as_array().unwrap();
            assert!(items.len() <= limit);
            seen.extend(items.iter().map(|r| {
                (
                    r["uploader"].as_str().unwrap().to_owned(),
                    r["downloader"].as_str().unwrap().to_owned(),
                )
            }));
            match page["next_cursor"].as_str() {
                Some(next) => {
                    assert_eq!(items.len(), limit, "only a full page has a next page");
                    cursor = Some(next.to_owned());
                }
                None => return seen,
            }
        }
    };
    assert_eq!(walk("", 3), expected);
    assert_eq!(walk("", 500), expected);
    // Exactly a page's worth: the last full page still says there is no more.
    assert_eq!(walk("", expected.len()), expected);
    // The same page twice is the same.
    assert_eq!(
        client.get(&node, "/receipts", "/api/v1/receipts?limit=4"),
        client.get(&node, "/receipts", "/api/v1/receipts?limit=4")
    );

    // Filtered by a peer: only its receipts, still in order, still paged.
    let who = hex(people[2].peer_id());
    let mine: Vec<(String, String)> = expected
        .iter()
        .filter(|(u, d)| *u == who || *d == who)
        .cloned()
        .collect();
    assert!(mine.len() >= 3);
    assert_eq!(walk(&format!("&peer={who}"), 2), mine);

    // A cursor goes on exactly after the page it came with.
    let page = client.get(&node, "/receipts", "/api/v1/receipts?limit=2");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest_before = client.get(
        &node,
        "/receipts",
        &format!("/api/v1/receipts?limit=500&cursor={cursor}"),
    );
    assert_eq!(
        rest_before["receipts"].as_array().unwrap().len(),
        expected.len() - 2
    );

    // Bad queries are 400 and name what is wrong.
    for (query, says) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("cursor=xyz", "cursor"),
        ("peer=ABC", "peer"),
        ("sort=desc", "sort"),
    ] {
        let message = client.error(
            client.call(
                &node,
                Method::GET,
                "/receipts",
                &format!("/api/v1/receipts?{query}"),
                None,
            ),
            400,
            "bad_request",
        );
        assert!(message.contains(says), "{query}: {message}");
    }

    // Two receipts of one pair with the same seq: a conflict proof, listed once per key.
    let (a, b) = (&people[0], &people[1]);
    let first = signed(a, b, &network, 9, 5000);
    let second = signed(a, b, &network, 9, 6000);
    shared.store.ingest(&[first, second]).unwrap();
    let conflicts = client.get(&node, "/conflicts", "/api/v1/conflicts");
    let conflicts = conflicts.as_array().unwrap();
    assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    let marked: Vec<&str> = conflicts
        .iter()
        .map(|c| c["peer"].as_str().unwrap())
        .collect();
    assert_eq!(marked, [hex(a.peer_id()), hex(b.peer_id())]);
    assert_eq!(conflicts[0]["proof_id"], conflicts[1]["proof_id"]);
    assert_eq!(conflicts[0]["seq"], 9);
    let bytes: Vec<u64> = conflicts[0]["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(bytes, [5000, 6000]);

    rt.block_on(async { node.node.stop().await });
}

#[test]
fn cancelling_a_download_stops_its_tasks_and_a_new_start_resumes_it() {
    let rt = runtime();
    let client = Client::new();
    let (seeder, leecher) = rt.block_on(async {
        let seeder = start_node(|_| {}).await;
        let leecher = start_node(|_| {}).await;
        leecher.node.connect(&seeder.node).await;
        (seeder, leecher)
    });
    let data = payload(6 << 20, 2);
    let content = seeder.node.share(&data);
    let out = leecher.node.out("slow.bin");
    let path = format!("/api/v1/downloads/{content}");

    // Slow enough (6 s for the file) that it is still running when cancelled.
    let reply = client.call(
        &leecher,
        Method::PUT,
        "/settings",
        "/api/v1/settings",
        Some(json!({"download_bytes_per_s": 1 << 20})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let get = json!({"content_id": content.to_string(), "out": out.display().to_string()});
    let reply = client.call(
        &leecher,
        Method::POST,
        "/downloads",
        "/api/v1/downloads",
        Some(get.clone()),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    // A third of the file first, so that what is kept outweighs the chunks in flight that
    // the cancellation throws away.
    poll("the first 2 MiB", || {
        client.get(&leecher, "/downloads/{content_id}", &path)["bytes_have"]
            .as_u64()
            .unwrap()
            >= 2 << 20
    });

    let reply = client.call(
        &leecher,
        Method::DELETE,
        "/downloads/{content_id}",
        &path,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["state"], "cancelled");
    assert_eq!(reply.body["providers"], 0);
    let have = reply.body["bytes_have"].as_u64().unwrap();
    assert!(have < data.len() as u64);
    // The answer came after the tasks stopped: nothing of the download runs any more.
    let status = leecher
        .node
        .shared()
        .downloads()
        .get(&content)
        .cloned()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::ZERO, status.stopped())
            .await
            .expect("the download's tasks still run after DELETE answered");
    });
    assert!(!out.exists(), "a cancelled download wrote its file");
    assert_eq!(
        client.get(&leecher, "/downloads/{content_id}", &path)["state"],
        "cancelled"
    );
    // Cancelling again answers the same; the peer stays connected.
    let again = client.call(
        &leecher,
        Method::DELETE,
        "/downloads/{content_id}",
        &path,
        None,
    );
    assert_eq!(
        (again.status, again.body["state"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(
        client.get(&leecher, "/peers", "/api/v1/peers")[0]["state"],
        "connected"
    );

    // Unknown and malformed ids.
    let unknown = format!("/api/v1/downloads/{}", "7".repeat(64));
    client.error(
        client.call(
            &leecher,
            Method::DELETE,
            "/downloads/{content_id}",
            &unknown,
            None,
        ),
        404,
        "not_found",
    );
    client.error(
        client.call(
            &leecher,
            Method::DELETE,
            "/downloads/{content_id}",
            "/api/v1/downloads/xyz",
            None,
        ),
        400,
        "bad_request",
    );

    // Unlimited again, and started again: it resumes from the chunks it kept.
    let reply = client.call(
        &leecher,
        Method::PUT,
        "/settings",
        "/api/v1/settings",
        Some(json!({})),
    );
    assert_eq!(reply.body["download_bytes_per_s"], Value::Null);
    let reply = client.call(
        &leecher,
        Method::POST,
        "/downloads",
        "/api/v1/downloads",
        Some(get),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    poll("the resumed download to complete", || {
        let info = client.get(&leecher, "/downloads/{content_id}", &path);
        assert_ne!(info["state"], "failed", "{info}");
        info["state"] == "complete"
    });
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // The seeder sent less than twice the file: the kept chunks were not fetched again.
    let sent = client.get(&seeder, "/status", "/api/v1/status")["transfer"]["bytes_up"]
        .as_u64()
        .unwrap();
    assert!(sent >= data.len() as u64);
    assert!(sent < data.len() as u64 + have, "sent {sent}, had {have}");

    rt.block_on(async {
        leecher.node.stop().await;
        seeder.node.stop().await;
    });
}

#[test]
fn a_peer_that_cannot_be_reached_is_422_not_a_server_error() {
    let rt = runtime();
    let client = Client::new();
    let node = rt.block_on(start_node(|_| {}));
    let stranger = Identity::generate(&mut rand::rng()).peer_id();
    // `.invalid` never resolves (RFC 6761): the caller's address is at fault, not the node.
    let reply = client.call(
        &node,
        Method::POST,
        "/peers",
        "/api/v1/peers",
        Some(json!({"peer": format!("{}@no-such-host.invalid:7420", hex(stranger))})),
    );
    let message = client.error(reply, 422, "unprocessable");
    assert!(message.contains("cannot connect"), "{message}");
    assert!(message.contains("check the address"), "{message}");
    // The node is still up.
    client.get(&node, "/status", "/api/v1/status");
}
