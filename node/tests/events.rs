//! The event stream and `/metrics` on real nodes: the HTTP API served on 127.0.0.1 port 0,
//! read over real HTTP/1.1 connections while a real transfer runs between two nodes (QUIC on
//! loopback, temporary data dirs).
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{DEADLINE, TestNode, finished, payload, wait_for};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tally_node::content::CHUNK_SIZE;
use tally_node::daemon::Behaviour;
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::events::RING_CAPACITY;
use tally_node::daemon::fetch::{self, Phase};
use tally_web::ApiAuth;
use tally_web::events::EventKind;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Serves `node`'s HTTP API on 127.0.0.1 port 0 until the node stops.
async fn serve_api(node: &TestNode) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::clone(node.shared());
    *shared.api_addr.lock().unwrap() = Some(addr);
    let router = tally_web::router(
        Arc::new(NodeHandle::new(Arc::clone(&shared))),
        ApiAuth::new(KEY, addr),
    );
    let stop = shared.cancel.clone();
    tokio::spawn(tally_web::serve(listener, router, async move {
        stop.cancelled().await
    }));
    addr
}

/// A GET over a fresh HTTP/1.1 connection; the response's body is left to the caller.
async fn get(
    addr: SocketAddr,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {key}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap()
}

async fn body_text(response: hyper::Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// One server-sent event as read off the wire.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: u64,
    kind: String,
    data: Value,
}

/// Reads `text/event-stream` from a response, one event at a time.
struct EventReader {
    body: Incoming,
    buffer: String,
}

impl EventReader {
    async fn open(addr: SocketAddr, headers: &[(&str, &str)], query: &str) -> Self {
        let response = get(addr, &format!("/api/v1/events{query}"), KEY, headers).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), failing the test after [`DEADLINE`].
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("no event before the deadline")
    }

    async fn next_inner(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "data is one line: {block:?}");
                        data = Some(serde_json::from_str(v).unwrap());
                    } else {
                        assert!(
                            line.is_empty() || line.starts_with(':'),
                            "unexpected line {line:?}"
                        );
                    }
                }
                match (id, kind, data) {
                    (Some(id), Some(kind), Some(data)) => return Sse { id, kind, data },
                    (None, None, None) => continue,
                    _ => panic!("an event without id, event and data: {block:?}"),
                }
            }
            let frame = self.body.frame().await.expect("the stream ended").unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// Events until one satisfies `done`, which is returned last.
    async fn until(&mut self, mut done: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let stop = done(&event);
            seen.push(event);
            if stop {
                return seen;
            }
        }
    }
}

fn hex(node: &TestNode) -> String {
    node.id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_streams_download_progress_and_receipts_and_a_reconnect_resumes_exactly() {
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let api = serve_api(&leecher).await;
    let mut events = EventReader::open(api, &[], "").await;

    leecher.connect(&seeder).await;
    let connected = events.until(|e| e.kind == "peer").await;
    let peer = &connected.last().unwrap().data;
    assert_eq!(peer["peer_id"], hex(&seeder));
    assert_eq!(peer["connected"], true);

    let bytes = payload(24 * CHUNK_SIZE as usize + 5, 3);
    let size = bytes.len() as u64;
    let content = seeder.share(&bytes);
    let status = fetch::start(leecher.shared(), content, leecher.out("got.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);

    // Every download event is the download's JSON; the last says complete, every byte in. The
    // receipts the leecher signed for what it received come too, up to every byte.
    let (mut complete, mut acknowledged) = (false, false);
    let mut all = connected.clone();
    all.extend(
        events
            .until(|e| {
                complete |= e.kind == "download" && e.data["state"] == "complete";
                acknowledged |= e.kind == "receipt" && e.data["bytes"].as_u64() == Some(size);
                complete && acknowledged
            })
            .await,
    );
    let progress: Vec<&Sse> = all.iter().filter(|e| e.kind == "download").collect();
    assert_eq!(progress[0].data["state"], "running");
    let done = &progress.last().unwrap().data;
    assert_eq!(done["state"], "complete");
    assert_eq!(done["content_id"], content.to_string());
    assert_eq!(
        (done["bytes_have"].as_u64(), done["size"].as_u64()),
        (Some(size), Some(size))
    );
    let have: Vec<u64> = progress
        .iter()
        .map(|e| e.data["bytes_have"].as_u64().unwrap())
        .collect();
    assert!(have.windows(2).all(|w| w[0] <= w[1]), "{have:?}");
    let receipts: Vec<&Sse> = all.iter().filter(|e| e.kind == "receipt").collect();
    let receipt = &receipts.last().unwrap().data;
    assert_eq!(receipt["peer"], hex(&seeder));
    assert_eq!(receipt["role"], "down");
    assert!(receipt["seq"].as_u64().unwrap() >= 1);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");

    // A reconnect from the first download event gets exactly what followed it.
    let from = progress[0].id;
    let after: Vec<&Sse> = all.iter().filter(|e| e.id > from).collect();
    let last_id = from.to_string();
    let mut resumed = EventReader::open(api, &[("Last-Event-ID", &last_id)], "").await;
    for expected in &after {
        assert_eq!(&&resumed.next().await, expected);
    }
    // The query parameter does the same when no header is sent.
    let mut by_query = EventReader::open(api, &[], &format!("?last_event_id={from}")).await;
    assert_eq!(&&by_query.next().await, &after[0]);

    // An id this run never gave (a previous run's): reset, then what comes next.
    let mut stale = EventReader::open(api, &[("Last-Event-ID", "999999999")], "").await;
    let reset = stale.next().await;
    assert_eq!(
        (reset.kind.as_str(), &reset.data),
        ("reset", &serde_json::json!({}))
    );
    let next = stale.next().await;
    assert!(next.id > reset.id);

    // An id the ring no longer holds (a long run: the ring has moved on): reset.
    for n in 0..RING_CAPACITY as u64 {
        leecher
            .shared()
            .events
            .publish(EventKind::Transfer, &serde_json::json!({ "filler": n }));
    }
    let mut too_old = EventReader::open(api, &[("Last-Event-ID", &last_id)], "").await;
    let reset = too_old.next().await;
    assert_eq!(reset.kind, "reset");
    assert!(reset.id >= from + RING_CAPACITY as u64);
    // The first stream went on receiving everything, in order.
    let newest = leecher.shared().events.published();
    let tail = events.until(|e| e.id == newest).await;
    assert!(tail.windows(2).all(|w| w[0].id + 1 == w[1].id));

    leecher.stop().await;
    seeder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_and_metrics_need_the_api_key_and_bad_ids_are_400() {
    let node = TestNode::start(Behaviour::default()).await;
    let api = serve_api(&node).await;
    for path in ["/api/v1/events", "/metrics"] {
        let response = get(api, path, "wrong", &[]).await;
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(body["code"], "unauthorized");
    }
    let response = get(api, "/api/v1/events", KEY, &[("Last-Event-ID", "soon")]).await;
    assert_eq!(response.status(), 400);
    let response = get(api, "/api/v1/events?last_event_id=-3", KEY, &[]).await;
    assert_eq!(response.status(), 400);
    node.stop().await;
}

/// `name{labels} value` → (`name{labels}`, value); every other line must be a comment.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("tally_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line:?}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{line:?}")),
        };
        out.push((series.to_owned(), value));
    }
    out
}

async fn scrape(api: SocketAddr) -> Vec<(String, f64)> {
    let response = get(api, "/metrics", KEY, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    samples(&body_text(response).await)
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_a_transfer() {
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let (seeder_api, leecher_api) = (serve_api(&seeder).await, serve_api(&leecher).await);
    let before = scrape(seeder_api).await;
    assert_eq!(
        sample(&before, "tally_payload_bytes_total{direction=\"up\"}"),
        0.0
    );
    assert_eq!(sample(&before, "tally_peers_connected"), 0.0);

    leecher.connect(&seeder).await;
    let bytes = payload(6 * CHUNK_SIZE as usize + 1, 5);
    let size = bytes.len() as f64;
    let content = seeder.share(&bytes);
    let status = fetch::start(leecher.shared(), content, leecher.out("got.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);

    let up = scrape(seeder_api).await;
    assert!(sample(&up, "tally_payload_bytes_total{direction=\"up\"}") >= size);
    assert_eq!(sample(&up, "tally_peers_connected"), 1.0);
    let down = scrape(leecher_api).await;
    assert!(sample(&down, "tally_payload_bytes_total{direction=\"down\"}") >= size);
    assert_eq!(sample(&down, "tally_downloads{state=\"complete\"}"), 1.0);
    assert!(sample(&down, "tally_receipts_signed_total{role=\"down\"}") >= 1.0);
    assert!(sample(&down, "tally_events_published_total") >= 1.0);
    // The seeder countersigned, stored, and its standing shows the leecher at the floor.
    let seeder_signed = Arc::clone(seeder.shared());
    wait_for("the seeder's countersignature counted", || {
        seeder_signed.events.receipts_signed().0 >= 1
    })
    .await;
    let up = scrape(seeder_api).await;
    assert!(sample(&up, "tally_receipts_signed_total{role=\"up\"}") >= 1.0);
    assert!(sample(&up, "tally_receipts_stored") >= 1.0);
    // At the leecher the seeder gave: above the floor once standing has taken the receipt.
    let leecher_shared = Arc::clone(leecher.shared());
    let seeder_id = seeder.id();
    wait_for("the seeder's standing at the leecher", || {
        leecher_shared
            .standing
            .with(|s| !s.of(&seeder_id).at_floor())
    })
    .await;
    let down = scrape(leecher_api).await;
    assert_eq!(sample(&down, "tally_standing_peers{class=\"above\"}"), 1.0);
    assert_eq!(sample(&down, "tally_standing_count"), 1.0);
    leecher.stop().await;
    seeder.stop().await;
}
