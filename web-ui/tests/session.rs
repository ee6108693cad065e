//! The dashboard's session login and CSRF protection, and the dashboard's static files, on a
//! real socket (`127.0.0.1:0`) against a small in-memory node, driven with ureq. Every line the
//! server logs in this test binary goes to one buffer, so a test can check the key is never in it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;
use tally_web::model::SessionInfo;

mod support;
use support::FakeNode;
use support::server::{Reply, Server};

const KEY: &str = "7a6b5c4d7a6b5c4d7a6b5c4d7a6b5c4d7a6b5c4d7a6b5c4d7a6b5c4d7a6b5c4d";

// ---- every log line of this binary, in one buffer ----

#[derive(Clone)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log(Arc::default());
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    })
}

// ---- a server on a real socket ----

fn start() -> Server {
    log();
    Server::start(Arc::new(FakeNode::default()), KEY)
}

/// What the session tests send: JSON bodies are labelled as such.
trait SessionClient {
    fn send_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply;

    /// Logs in and returns (the `Cookie` header value, the CSRF token).
    fn login(&self) -> (String, String);

    fn put_limits(&self, headers: &[(&str, &str)]) -> Reply;
}

impl SessionClient for Server {
    fn send_json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut all = headers.to_vec();
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &all, body.map(str::as_bytes))
    }

    fn login(&self) -> (String, String) {
        let reply = self.send_json(
            "POST",
            "/api/v1/session",
            &[],
            Some(&json!({ "api_key": KEY }).to_string()),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let set_cookie = reply.header("set-cookie").unwrap().to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let session: SessionInfo = reply.json();
        (cookie, session.csrf_token)
    }

    fn put_limits(&self, headers: &[(&str, &str)]) -> Reply {
        self.send_json(
            "PUT",
            "/api/v1/limits",
            headers,
            Some(r#"{"upload_bytes_per_s": 1000}"#),
        )
    }
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

// ---- tests ----

#[test]
fn login_with_a_wrong_key_is_401_and_sets_no_cookie() {
    let server = start();
    for body in [
        json!({ "api_key": "00".repeat(32) }),
        json!({ "api_key": "" }),
        json!({ "api_key": KEY.to_uppercase() }),
    ] {
        let reply = server.send_json("POST", "/api/v1/session", &[], Some(&body.to_string()));
        reply.error(401, "unauthorized");
        assert!(reply.header("set-cookie").is_none());
    }
    server
        .send_json("POST", "/api/v1/session", &[], Some(r#"{"key": "x"}"#))
        .error(400, "bad_request");
    server
        .send_json("POST", "/api/v1/session", &[], None)
        .error(415, "unsupported_media_type");
    // Without a cookie there is no session to read.
    server
        .send_json("GET", "/api/v1/session", &[], None)
        .error(401, "unauthorized");
}

#[test]
fn the_session_cookie_is_http_only_strict_and_works_for_get() {
    let server = start();
    let reply = server.send_json(
        "POST",
        "/api/v1/session",
        &[],
        Some(&json!({ "api_key": KEY }).to_string()),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let set_cookie = reply.header("set-cookie").unwrap();
    let name = format!("tally_session_{}=", server.addr.port());
    assert!(set_cookie.starts_with(&name), "{set_cookie}");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let session: SessionInfo = reply.json();
    assert_eq!(session.csrf_token.len(), 64);
    let cookie = set_cookie.split(';').next().unwrap();
    // Tokens are random: the cookie's token is not the CSRF token.
    assert!(!cookie.contains(&session.csrf_token));

    let status = server.send_json("GET", "/api/v1/status", &[("Cookie", cookie)], None);
    assert_eq!(status.status, 200, "{}", status.body);
    // A reloaded page gets its CSRF token back from the cookie alone.
    let again: SessionInfo = server
        .send_json("GET", "/api/v1/session", &[("Cookie", cookie)], None)
        .json();
    assert_eq!(again, session);
    // A cookie the server never issued is refused.
    let forged = format!("{name}{}", "ab".repeat(32));
    server
        .send_json("GET", "/api/v1/status", &[("Cookie", &forged)], None)
        .error(401, "unauthorized");
    // Each login is its own session.
    let (other, other_csrf) = server.login();
    assert_ne!(other, cookie);
    assert_ne!(other_csrf, session.csrf_token);
}

#[test]
fn unsafe_requests_by_cookie_need_the_csrf_token_and_our_origin() {
    let server = start();
    let (cookie, csrf) = server.login();
    let (_, other_csrf) = server.login();
    server.put_limits(&[("Cookie", &cookie)]).error(403, "csrf");
    server
        .put_limits(&[("Cookie", &cookie), ("X-CSRF-Token", &other_csrf)])
        .error(403, "csrf");
    server
        .put_limits(&[("Cookie", &cookie), ("X-CSRF-Token", "not-hex")])
        .error(403, "csrf");
    assert_eq!(
        server.node.state.lock().unwrap().limits.upload_bytes_per_s,
        None
    );
    // Another local service's page (same site, other port) is another origin.
    server
        .put_limits(&[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "http://127.0.0.1:1"),
        ])
        .error(403, "csrf");
    server
        .put_limits(&[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "null"),
        ])
        .error(403, "csrf");
    let own = format!("http://{}", server.addr);
    let reply = server.put_limits(&[
        ("Cookie", &cookie),
        ("X-CSRF-Token", &csrf),
        ("Origin", &own),
    ]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = server.put_limits(&[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        server.node.state.lock().unwrap().limits.upload_bytes_per_s,
        Some(1000)
    );
    // A login from a foreign origin is refused too.
    server
        .send_json(
            "POST",
            "/api/v1/session",
            &[("Origin", "http://evil.example")],
            Some(&json!({ "api_key": KEY }).to_string()),
        )
        .error(403, "csrf");
}

#[test]
fn bearer_requests_are_unaffected_by_sessions() {
    let server = start();
    let bearer = bearer();
    // No cookie, no CSRF token: the key is enough, as before.
    let reply = server.put_limits(&[("Authorization", &bearer)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (cookie, _) = server.login();
    let reply = server.put_limits(&[("Authorization", &bearer), ("Cookie", &cookie)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A wrong key is not rescued by a valid cookie.
    server
        .send_json(
            "GET",
            "/api/v1/status",
            &[("Authorization", "Bearer nope"), ("Cookie", &cookie)],
            None,
        )
        .error(401, "unauthorized");
    // Neither key nor cookie.
    server
        .send_json("GET", "/api/v1/status", &[], None)
        .error(401, "unauthorized");
}

#[test]
fn logout_ends_the_session() {
    let server = start();
    let (cookie, csrf) = server.login();
    let (kept, _) = server.login();
    server
        .send_json("DELETE", "/api/v1/session", &[("Cookie", &cookie)], None)
        .error(403, "csrf");
    let reply = server.send_json(
        "DELETE",
        "/api/v1/session",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let cleared = reply.header("set-cookie").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    server
        .send_json("GET", "/api/v1/status", &[("Cookie", &cookie)], None)
        .error(401, "unauthorized");
    server
        .send_json("GET", "/api/v1/session", &[("Cookie", &cookie)], None)
        .error(401, "unauthorized");
    server
        .send_json(
            "DELETE",
            "/api/v1/session",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            None,
        )
        .error(401, "unauthorized");
    // Other sessions live on.
    assert_eq!(
        server
            .send_json("GET", "/api/v1/status", &[("Cookie", &kept)], None)
            .status,
        200
    );
    server
        .send_json("PUT", "/api/v1/session", &[("Cookie", &kept)], None)
        .error(405, "method_not_allowed");
}

#[test]
fn the_key_is_never_in_a_response_or_in_the_log() {
    let server = start();
    let (cookie, csrf) = server.login();
    server.send_json(
        "POST",
        "/api/v1/session",
        &[],
        Some(&json!({ "api_key": format!("{KEY}0") }).to_string()),
    );
    server.send_json(
        "POST",
        "/api/v1/session",
        &[],
        Some(&json!({ "api_key": KEY, "extra": KEY }).to_string()),
    );
    server.send_json(
        "POST",
        "/api/v1/session",
        &[],
        Some(&format!(r#"{{"api_key": {KEY}}}"#)),
    );
    server.send_json("GET", "/api/v1/status", &[("Cookie", &cookie)], None);
    server.send_json("GET", "/api/v1/session", &[("Cookie", &cookie)], None);
    server.put_limits(&[("Cookie", &cookie)]);
    server.send_json(
        "GET",
        "/api/v1/status",
        &[("Authorization", &bearer())],
        None,
    );
    server.send_json(
        "DELETE",
        "/api/v1/session",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    server.send_json("GET", "/", &[], None);
    let seen = server.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(!seen.contains(KEY), "the key is in a response: {seen}");
    // The server did log these requests, and not the key.
    let logged = String::from_utf8(log().0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("/api/v1/session"), "{logged}");
    assert!(!logged.contains(KEY), "the key is in the log: {logged}");
    assert!(!logged.contains(&csrf), "a CSRF token is in the log");
}

#[test]
fn the_dashboard_is_served_without_auth_under_a_strict_policy() {
    let server = start();
    for (path, media_type, needle) in [
        ("/", "text/html; charset=utf-8", "/assets/app.js"),
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        (
            "/assets/style.css",
            "text/css; charset=utf-8",
            "focus-visible",
        ),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let reply = server.send_json("GET", path, &[], None);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(media_type), "{path}");
        let csp = reply.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert!(reply.body.contains(needle), "{path}");
    }
    server
        .send_json("GET", "/assets/secret.txt", &[], None)
        .error(404, "not_found");
    server
        .send_json("GET", "/assets/..%2Fsrc%2Flib.rs", &[], None)
        .error(404, "not_found");
    // The Host check still applies.
    server
        .send_json("GET", "/", &[("Host", "evil.example")], None)
        .error(403, "host_not_allowed");
}
