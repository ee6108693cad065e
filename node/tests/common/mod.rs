//! What the in-process node tests share: a node on loopback port 0 with a temporary data dir,
//! payloads, and waiting for a condition with a deadline.
//!
//! Each node binds its own loopback address (127.1.x.y; on Linux all of 127/8 reaches `lo`), as
//! separate hosts would, so the per-IP connection limit and IP bans see one source per node.
// Test helpers panic on failure by design; not every test file uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tally_ledger::{Identity, NetworkId, Pair, PeerId};
use tally_node::config::{Config, PeerAddr};
use tally_node::content::ContentId;
use tally_node::daemon::fetch::{self, Phase};
use tally_node::daemon::{Behaviour, Node, NodeParts, Shared, peers};
use tally_node::transport::{Endpoint, TransportConfig};
use tally_node::wire::{Request, Response};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
    pub secret: [u8; 32],
}

impl TestNode {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_with(behaviour, |_| {}).await
    }

    pub async fn start_with(behaviour: Behaviour, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = Identity::generate(&mut rand::rng()).secret_bytes();
        Self::start_in(dir, secret, behaviour, adjust).await
    }

    /// Starts a node in `dir` with the identity `secret` (again, after a stop).
    pub async fn start_in(
        dir: tempfile::TempDir,
        secret: [u8; 32],
        behaviour: Behaviour,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::default();
        config.node.listen = std::net::SocketAddr::new(next_loopback(), 0);
        if !cfg!(target_os = "linux") {
            // Every node shares 127.0.0.1 there: the per-IP limit must not bite.
            config.node.max_connections_per_ip = config.node.max_connections;
        }
        adjust(&mut config);
        let identity = Identity::from_secret_bytes(secret);
        let parts = NodeParts::open(dir.path(), identity, config, behaviour).unwrap();
        let node = Node::start(parts).await.unwrap();
        Self { node, dir, secret }
    }

    /// Stops the node and gives back its directory and identity.
    pub async fn stop(self) -> (tempfile::TempDir, [u8; 32]) {
        self.node.shutdown(Duration::from_secs(5)).await.unwrap();
        (self.dir, self.secret)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        self.node.shared()
    }

    pub fn id(&self) -> PeerId {
        self.node.peer_id()
    }

    pub fn addr(&self) -> PeerAddr {
        PeerAddr {
            peer_id: self.id(),
            addr: self.node.quic_addr().unwrap().to_string(),
        }
    }

    pub async fn connect(&self, other: &TestNode) {
        peers::connect(self.shared(), other.addr()).await.unwrap();
        let (a, b) = (self.id(), other.id());
        wait_for("both sides to see the connection", || {
            self.shared().peers.connection(&b).is_some()
                && other.shared().peers.connection(&a).is_some()
        })
        .await;
    }

    pub fn share(&self, bytes: &[u8]) -> ContentId {
        let path = self.dir.path().join("shared.bin");
        std::fs::write(&path, bytes).unwrap();
        self.shared().content.import(&path, &mut |_| {}).unwrap().0
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn latest(&self, uploader: PeerId, downloader: PeerId) -> Option<tally_ledger::Receipt> {
        self.shared()
            .store
            .latest(&Pair {
                uploader,
                downloader,
            })
            .unwrap()
    }
}

/// A loopback address no other node of this process has had: 127.1.0.1 on (Linux), or
/// 127.0.0.1 where only that one is sure to exist.
pub fn next_loopback() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if !cfg!(target_os = "linux") {
        return std::net::Ipv4Addr::LOCALHOST.into();
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 0xfffe;
    std::net::Ipv4Addr::from(0x7f01_0001 + n).into()
}

/// Deterministic bytes that differ at every position, so a misplaced chunk is caught.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    wait_until(what, DEADLINE, condition).await;
}

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn finished(status: &fetch::DownloadStatus) -> Phase {
    tokio::time::timeout(DEADLINE, status.finished())
        .await
        .expect("the download did not finish in time")
}

/// A bare endpoint that speaks the protocol by hand, to send what a real node never would.
pub async fn raw_client(network: &str) -> (Endpoint, Identity) {
    let identity = Identity::generate(&mut rand::rng());
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        NetworkId::from_name(network),
        TransportConfig::default(),
    )
    .unwrap();
    (endpoint, identity)
}

pub async fn ask(conn: &tally_node::transport::Connection, request: &Request) -> Response {
    peers::request(conn, request).await.unwrap()
}
