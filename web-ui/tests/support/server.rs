//! The router served on a real socket (`127.0.0.1:0`) over a [`FakeNode`], and requests to it
//! with ureq; every response is kept to check what the server ever said.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tally_web::model::ErrorBody;
use tally_web::{ApiAuth, router, serve};

use super::FakeNode;

/// A server on a socket of its own; stops when dropped.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    pub node: Arc<FakeNode>,
    key: String,
    agent: ureq::Agent,
    /// `serve`, until [`Server::join`] takes it.
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Every response's headers and body, in order.
    pub seen: Mutex<String>,
}

/// One response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header `name`, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type`, or "" without one.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }

    /// Asserts this is a JSON error with `status` and `code`, and returns its message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body {:?}", self.body);
        assert_eq!(self.content_type(), "application/json", "{}", self.body);
        let body: ErrorBody = self.json();
        assert_eq!((body.status, body.code.as_str()), (status, code));
        assert!(!body.message.is_empty());
        body.message
    }
}

impl Server {
    /// Serves `node` with the API key `key`.
    pub fn start(node: Arc<FakeNode>, key: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(node.clone(), ApiAuth::new(key, addr));
        let stop = node.clone();
        let task = runtime.spawn(serve(
            listener,
            app,
            async move { stop.stop.notified().await },
        ));
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .build(),
        );
        Self {
            runtime,
            addr,
            node,
            key: key.to_owned(),
            agent,
            task: Some(task),
            seen: Mutex::default(),
        }
    }

    /// Waits for `serve` to return (after a shutdown) and gives what it returned.
    pub fn join(mut self) -> std::io::Result<()> {
        let task = self.task.take().unwrap();
        self.runtime.block_on(task).unwrap()
    }

    /// `Bearer KEY`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// Sends `method path` with exactly `headers` and `body`.
    pub fn send(
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
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let reply = Reply {
            status: response.status().as_u16(),
            headers,
            body: response.body_mut().read_to_string().unwrap(),
        };
        let mut seen = self.seen.lock().unwrap();
        for (name, value) in &reply.headers {
            seen.push_str(&format!("{name}: {value}\n"));
        }
        seen.push_str(&reply.body);
        reply
    }

    /// `GET path` with the key.
    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[("Authorization", &self.bearer())], None)
    }

    /// `method path` with the key and `body` as JSON.
    pub fn with_json(&self, method: &str, path: &str, body: &serde_json::Value) -> Reply {
        self.with_body(method, path, &body.to_string())
    }

    /// `method path` with the key and a JSON `body`.
    pub fn with_body(&self, method: &str, path: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            &[
                ("Authorization", &self.bearer()),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.node.stop.notify_one();
        let _ = &self.runtime;
    }
}
