//! The HTTP API against an in-memory fake node: real sockets on `127.0.0.1:0` driven with ureq,
//! and `oneshot` calls of the router where no socket is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use serde_json::{Value, json};
use tally_web::model::{
    ConflictInfo, ContentSummary, DownloadInfo, DownloadState, ErrorBody, Identity, MarketInfo,
    OrderInfo, OrderSide, PeerInfo, RateLimits, ReceiptPage, Settings, StandingInfo, Status,
    TradeInfo,
};
use tally_web::server::MAX_BODY_BYTES;
use tally_web::{ApiAuth, router};
use tower::ServiceExt as _;

mod support;
use support::server::{Reply, Server};
use support::*;

const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

// ---- a server on a real socket ----

fn start() -> Server {
    start_with(Arc::new(FakeNode::default()))
}

fn start_with(node: Arc<FakeNode>) -> Server {
    Server::start(node, KEY)
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
    assert_eq!(reply.content_type(), "application/json");
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
        reply.header("location"),
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
    assert_eq!(reply.content_type(), "application/x-ndjson");
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
    let addr = server.addr;
    server.join().unwrap();
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
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
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
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
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

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`: (status, body).
fn read_response(stream: &mut std::io::BufReader<std::net::TcpStream>) -> (u16, String) {
    use std::io::{BufRead as _, Read as _};
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        line.clear();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// A plain TCP connection to `server`: a writer, and a buffered reader whose reads give up
/// after 60 s (well past the server's 10 s body timeout) rather than hang a test.
fn raw_connection(
    server: &Server,
) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    (stream.try_clone().unwrap(), std::io::BufReader::new(stream))
}

#[test]
fn a_refused_request_whose_body_comes_late_keeps_the_connection_usable() {
    use std::io::Write as _;
    let server = start();
    let (mut writer, mut reader) = raw_connection(&server);
    let body = r#"{"upload_bytes_per_s": 1000}"#;
    // The refusal is known from the headers alone; the body follows a moment later, as it may
    // from any client that writes headers and body separately.
    write!(
        writer,
        "PUT /api/v1/limits HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .unwrap();
    writer.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    writer.write_all(body.as_bytes()).unwrap();
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, 401);
    // The same connection carries the next request.
    write!(
        writer,
        "GET /api/v1/status HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        server.addr,
        bearer()
    )
    .unwrap();
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.node.state.lock().unwrap().limits.upload_bytes_per_s,
        None
    );
}

#[test]
fn a_body_that_never_arrives_is_408_and_frees_the_connection() {
    use std::io::Write as _;
    let server = start();
    let (mut writer, mut reader) = raw_connection(&server);
    write!(
        writer,
        "POST /api/v1/session HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"api_key\"",
        server.addr
    )
    .unwrap();
    writer.flush().unwrap();
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 408, "{body}");
    let error: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.code, "request_timeout");
    // And the server lets the connection go (end of stream, not the read timeout).
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
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
    assert_eq!(reply.header("allow"), Some("GET,HEAD"));
    let reply = server.with_json("PUT", "/api/v1/peers", &json!({}));
    reply.error(405, "method_not_allowed");
    let reply = server.get("/api/v1/shutdown");
    reply.error(405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));
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

// ---- identity, receipts, conflicts, cancelling downloads, settings, offers and bids ----

fn delete(server: &Server, path: &str) -> Reply {
    server.send("DELETE", path, &[("Authorization", &bearer())], None)
}

#[test]
fn identity_and_conflicts_are_json() {
    let server = start();
    let identity: Identity = server.get("/api/v1/identity").json();
    assert_eq!(identity.peer_id, id(PEER));
    let conflicts: Vec<ConflictInfo> = server.get("/api/v1/conflicts").json();
    assert_eq!(conflicts.len(), 1);
    let raw: Value = server.get("/api/v1/conflicts").json();
    assert_eq!(raw[0]["peer"], PEER);
    assert_eq!(raw[0]["receipts"][1]["sig_uploader"], "cd".repeat(64));
}

#[test]
fn the_receipts_query_reaches_the_node_parsed() {
    let node = Arc::new(FakeNode::default());
    let server = start_with(node.clone());
    let filter = |node: &FakeNode| node.state.lock().unwrap().receipts_filter.take().unwrap();

    let page: ReceiptPage = server.get("/api/v1/receipts").json();
    assert_eq!(page.receipts, vec![fake_receipt()]);
    let raw: Value = server.get("/api/v1/receipts").json();
    assert_eq!(raw["next_cursor"], Value::Null);
    let f = filter(&node);
    assert_eq!((f.peer, f.limit, f.after), (None, 50, None));

    let cursor = format!("{PEER}{CONTENT}");
    let reply = server.get(&format!(
        "/api/v1/receipts?peer={PEER}&limit=500&cursor={cursor}"
    ));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let f = filter(&node);
    assert_eq!(f.peer, Some(id(PEER)));
    assert_eq!(f.limit, 500);
    let after = f.after.unwrap();
    assert_eq!((after.uploader, after.downloader), (id(PEER), id(CONTENT)));
    assert_eq!(after.to_string(), cursor);
}

#[test]
fn bad_receipts_queries_are_400_and_never_reach_the_node() {
    let node = Arc::new(FakeNode::default());
    let server = start_with(node.clone());
    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=100000000000000000000000", "limit"),
        ("limit=-1", "limit"),
        ("limit=%2B5", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("peer=abc", "peer"),
        (&format!("peer={}", "AB".repeat(32)), "peer"),
        ("cursor=abc", "cursor"),
        (&format!("cursor={PEER}"), "cursor"),
        (&format!("cursor={PEER}{}", "zz".repeat(32)), "cursor"),
        ("cursor=%C3%A9%C3%A9", "cursor"),
        ("colour=blue", "colour"),
        ("limit=5&limit=6", "limit"),
    ] {
        let reply = server.get(&format!("/api/v1/receipts?{query}"));
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        let message = reply.error(400, "bad_request");
        assert!(message.contains(says), "{query}: {message}");
    }
    assert!(node.state.lock().unwrap().receipts_filter.is_none());
}

#[test]
fn a_running_download_is_cancelled_and_a_finished_one_is_409() {
    let node = Arc::new(FakeNode::default());
    let server = start_with(node.clone());
    let reply = server.with_json(
        "POST",
        "/api/v1/downloads",
        &json!({"content_id": CONTENT, "out": "/tmp/out.bin"}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let path = format!("/api/v1/downloads/{CONTENT}");
    let reply = delete(&server, &path);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json::<DownloadInfo>().state, DownloadState::Cancelled);
    assert_eq!(reply.json::<Value>()["state"], "cancelled");
    // Again: still cancelled.
    assert_eq!(delete(&server, &path).status, 200);
    assert_eq!(
        server.get(&path).json::<DownloadInfo>().state,
        DownloadState::Cancelled
    );

    node.state.lock().unwrap().downloads[0].state = DownloadState::Complete;
    delete(&server, &path).error(409, "conflict");
    delete(&server, &format!("/api/v1/downloads/{UNKNOWN}")).error(404, "not_found");
    let message = delete(&server, "/api/v1/downloads/nope").error(400, "bad_request");
    assert!(message.contains("content id"), "{message}");
}

#[test]
fn settings_are_read_and_replaced_and_bad_ones_refused() {
    let server = start();
    assert_eq!(
        server.get("/api/v1/settings").json::<Settings>(),
        Settings::default()
    );
    let all = json!({
        "upload_bytes_per_s": 1000,
        "download_bytes_per_s": null,
        "upload_budget_daily": 16 << 20,
        "upload_budget_monthly": 1u64 << 40,
    });
    let reply = server.with_json("PUT", "/api/v1/settings", &all);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json::<Value>(), all);
    assert_eq!(server.get("/api/v1/settings").json::<Value>(), all);
    // PUT replaces all: absent fields are null.
    let reply = server.with_json("PUT", "/api/v1/settings", &json!({"upload_bytes_per_s": 5}));
    assert_eq!(
        reply.json::<Settings>(),
        Settings {
            upload_bytes_per_s: Some(5),
            ..Settings::default()
        }
    );

    for (body, says) in [
        (
            json!({"upload_budget_daily": (16 << 20) - 1}),
            "upload_budget_daily",
        ),
        (json!({"upload_budget_monthly": 0}), "upload_budget_monthly"),
        (json!({"upload_bytes_per_s": 0}), "upload_bytes_per_s"),
        (json!({"download_bytes_per_s": 0}), "download_bytes_per_s"),
    ] {
        let message = server
            .with_json("PUT", "/api/v1/settings", &body)
            .error(422, "unprocessable");
        assert!(message.contains(says), "{body}: {message}");
    }
    for (body, says) in [
        (json!({"upload_budget": 1}), "upload_budget"),
        (json!({"upload_bytes_per_s": -1}), "upload_bytes_per_s"),
        (json!({"upload_bytes_per_s": "fast"}), "upload_bytes_per_s"),
    ] {
        let message = server
            .with_json("PUT", "/api/v1/settings", &body)
            .error(400, "bad_request");
        assert!(message.contains(says), "{body}: {message}");
    }
    // Nothing refused was applied.
    assert_eq!(
        server
            .get("/api/v1/settings")
            .json::<Settings>()
            .upload_bytes_per_s,
        Some(5)
    );
}

#[test]
fn offers_and_bids_are_listed_by_side() {
    let server = start();
    let offer: OrderInfo = server
        .with_json(
            "POST",
            "/api/v1/offers",
            &json!({"bytes": 1, "price_per_gib": 5}),
        )
        .json();
    let bid: OrderInfo = server
        .with_json(
            "POST",
            "/api/v1/bids",
            &json!({"bytes": 1, "max_price_per_gib": 5}),
        )
        .json();
    assert_eq!(
        server.get("/api/v1/offers").json::<Vec<OrderInfo>>(),
        vec![offer]
    );
    assert_eq!(
        server.get("/api/v1/bids").json::<Vec<OrderInfo>>(),
        vec![bid]
    );
}

// ---- every route: auth, and the OpenAPI document ----

/// A request path for `route`, with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{content_id}", CONTENT)
        .replace("{peer_id}", PEER)
        .replace("{order_id}", FOREIGN)
}

#[test]
fn every_route_needs_the_key() {
    let (_, routes) = tally_web::server::router_with_routes(
        Arc::new(FakeNode::default()),
        ApiAuth::new(KEY, "127.0.0.1:1".parse().unwrap()),
    );
    assert!(routes.len() >= 27, "{routes:?}");
    let server = start();
    for route in &routes {
        let path = concrete(&route.path);
        let method = route.method.as_str();
        if (method, path.as_str()) == ("POST", "/api/v1/session") {
            // The login takes the key in its body (tests/session.rs).
            continue;
        }
        server
            .send(method, &path, &[], None)
            .error(401, "unauthorized");
        server
            .send(method, &path, &[("Authorization", "Bearer wrong")], None)
            .error(401, "unauthorized");
    }
    // The shutdown route did not run.
    assert_eq!(server.get("/api/v1/status").status, 200);
}

#[test]
fn the_openapi_document_describes_every_route_and_nothing_else() {
    let (_, routes) = tally_web::server::router_with_routes(
        Arc::new(FakeNode::default()),
        ApiAuth::new(KEY, "127.0.0.1:1".parse().unwrap()),
    );
    let document = tally_web::server::openapi();
    let (missing, extra) = tally_web::openapi::undocumented(&routes, &document);
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    for route in &routes {
        let path = route.path.clone();
        let operation = tally_web::openapi::operation(&document, &route.method, &path).unwrap();
        let responses = &operation.responses.responses;
        let has = |status: &str| responses.contains_key(status);
        let what = format!("{} {path}", route.method);
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success"
        );
        for status in ["401", "403", "408", "413", "500"] {
            assert!(has(status), "{what}: no {status}");
        }
        if path.contains('{') {
            assert!(has("400"), "{what}: a path parameter, but no 400");
        }
        if operation.request_body.is_some() {
            for status in ["400", "413", "415"] {
                assert!(has(status), "{what}: a body, but no {status}");
            }
        }
        // Every error response is an ErrorBody.
        for (status, response) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
            let json = serde_json::to_value(response).unwrap();
            assert_eq!(
                json["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{what} {status}"
            );
        }
    }
    let receipts =
        tally_web::openapi::operation(&document, &axum::http::Method::GET, "/api/v1/receipts")
            .unwrap();
    let params: Vec<String> = receipts
        .parameters
        .iter()
        .flatten()
        .map(|p| {
            serde_json::to_value(p).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(params, ["peer", "limit", "cursor"]);
}

#[test]
fn the_openapi_document_is_served_behind_the_key() {
    let server = start();
    server
        .send("GET", "/api/v1/openapi.json", &[], None)
        .error(401, "unauthorized");
    let reply = server.get("/api/v1/openapi.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type(), "application/json");
    let document: Value = reply.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["paths"]["/api/v1/receipts"]["get"].is_object());
    assert!(document["components"]["schemas"]["PeerInfo"].is_object());
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}

#[test]
fn the_fake_answers_match_the_document_schemas() {
    let node = Arc::new(FakeNode::default());
    let server = start_with(node.clone());
    // Some state, so lists are not empty.
    server.with_json(
        "POST",
        "/api/v1/peers",
        &json!({"peer": format!("{PEER}@127.0.0.1:1")}),
    );
    server.with_json("POST", "/api/v1/content", &json!({"path": "/data/a.bin"}));
    server.with_json(
        "POST",
        "/api/v1/downloads",
        &json!({"content_id": CONTENT, "out": "/tmp/o"}),
    );
    server.with_json(
        "POST",
        "/api/v1/offers",
        &json!({"bytes": 1, "price_per_gib": 5}),
    );
    let document = tally_web::server::openapi();
    let (_, routes) = tally_web::server::router_with_routes(
        node,
        ApiAuth::new(KEY, "127.0.0.1:1".parse().unwrap()),
    );
    let mut checked = 0;
    for route in routes
        .iter()
        .filter(|r| r.method == axum::http::Method::GET)
    {
        let path = concrete(&route.path);
        let reply = server.get(&path);
        let Some(schema) = tally_web::openapi::response_schema(
            &document,
            &route.method,
            &route.path,
            reply.status,
        ) else {
            continue;
        };
        let validator = jsonschema::validator_for(&schema).unwrap();
        let body: Value = reply.json();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "GET {path}: {errors:?}\n{body}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} answers checked");
    // An error answer matches ErrorBody.
    let reply = server.get(&format!("/api/v1/downloads/{UNKNOWN}"));
    let schema = tally_web::openapi::response_schema(
        &document,
        &axum::http::Method::GET,
        "/api/v1/downloads/{content_id}",
        404,
    )
    .unwrap();
    assert!(jsonschema::is_valid(&schema, &reply.json::<Value>()));
    // And a wrong shape does not.
    assert!(!jsonschema::is_valid(&schema, &json!({"status": "404"})));
}

#[test]
fn no_bad_input_to_the_new_routes_yields_5xx() {
    let server = start();
    for body in [
        "",
        "null",
        "[]",
        "{{",
        "{\"upload_budget_daily\": 1e400}",
        "{\"upload_budget_daily\": 18446744073709551616}",
        "{\"upload_bytes_per_s\": true}",
        "\u{0}",
    ] {
        let reply = server.with_body("PUT", "/api/v1/settings", body);
        assert!(
            (400..500).contains(&reply.status),
            "{body:?}: {} {}",
            reply.status,
            reply.body
        );
        let _: ErrorBody = reply.json();
    }
    for path in [
        "/api/v1/receipts?%FF",
        "/api/v1/receipts?limit=%FF",
        "/api/v1/receipts?peer=%00",
        "/api/v1/receipts?cursor=..%2F",
        "/api/v1/downloads/%FF",
        "/api/v1/identity/x",
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
    let reply = delete(&server, "/api/v1/downloads/%FF%FE");
    assert!((400..500).contains(&reply.status), "{}", reply.body);
}

// ---- the event stream and /metrics ----

#[test]
fn events_are_server_sent_events_resumed_after_the_last_event_id() {
    let server = start();
    let reply = server.get("/api/v1/events");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type(), "text/event-stream");
    assert_eq!(
        reply.body,
        "id: 1\nevent: transfer\ndata: {\"up_bps\":1}\n\n\
         id: 2\nevent: download\ndata: {\"state\":\"running\"}\n\n\
         id: 3\nevent: reset\ndata: {}\n\n"
    );
    let resumed = server.send(
        "GET",
        "/api/v1/events?last_event_id=1",
        &[("Authorization", &bearer()), ("Last-Event-ID", "2")],
        None,
    );
    assert_eq!(resumed.body, "id: 3\nevent: reset\ndata: {}\n\n");
    let by_query = server.get("/api/v1/events?last_event_id=2");
    assert_eq!(by_query.body, "id: 3\nevent: reset\ndata: {}\n\n");
    server
        .get("/api/v1/events?last_event_id=two")
        .error(400, "bad_request");
    server
        .send(
            "GET",
            "/api/v1/events",
            &[("Authorization", "Bearer nope")],
            None,
        )
        .error(401, "unauthorized");
}

#[test]
fn metrics_are_prometheus_text_behind_the_api_key() {
    let server = start();
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        reply
            .body
            .lines()
            .any(|l| l == "tally_payload_bytes_total{direction=\"up\"} 42"),
        "{}",
        reply.body
    );
    for line in [
        "tally_banned{kind=\"address\"} 3",
        "tally_banned{kind=\"key\"} 0",
    ] {
        assert!(
            reply.body.lines().any(|l| l == line),
            "{line}: {}",
            reply.body
        );
    }
    let refused = server.send("GET", "/metrics", &[], None);
    refused.error(401, "unauthorized");
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    server
        .send("GET", "/metrics", &[("Authorization", "Bearer nope")], None)
        .error(401, "unauthorized");
    server
        .send(
            "POST",
            "/metrics",
            &[("Authorization", &bearer())],
            Some(&b"{}"[..]),
        )
        .error(405, "method_not_allowed");
}
