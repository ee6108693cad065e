//! The misbehaving clients of the flood test (`tests/flood.rs`) and bench (`benches/flood.rs`):
//! each binds its own loopback source address (all of 127/8 reaches `lo` on Linux), so the
//! node's per-IP accounting sees distinct hosts, and some share one to meet the per-IP limit.
//! Every client makes a new key for every connection, as a real attacker would.
// Shared by a test and a bench; each uses part of it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tally_ledger::{Identity, NetworkId, PeerId, ReceiptBody, Signature};
use tally_node::content::ContentId;
use tally_node::gossip::records::ProviderRecord;
use tally_node::transport::tls::{self, TlsIdentity};
use tally_node::transport::{
    Connection, Endpoint, FrameWriter, Hello, MAX_HELLO_FRAME, TransportConfig,
};
use tally_node::wire::{GossipFrame, GossipHello, MAX_GOSSIP_FRAME, Records, Request};
use tokio_util::sync::CancellationToken;

/// Clients in a flood.
pub const CLIENTS: usize = 200;
/// Of them, the last this many share [`SHARED_IPS`] source addresses.
pub const SHARING: usize = 60;
/// Source addresses the sharing clients use.
pub const SHARED_IPS: usize = 3;
/// Connections (each with a new key) a client tries at most.
pub const ROUNDS: usize = 3;
/// How long a client waits for a handshake; a banned source is ignored, so this is how long
/// it takes to learn of its ban.
pub const CLIENT_HANDSHAKE: Duration = Duration::from_secs(3);
/// How long a client waits for the node to close a connection it misbehaves on.
pub const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Undecodable bytes as a request, stream after stream.
    Garbage,
    /// TLS, then never a Hello.
    HalfOpen,
    /// Asks for many chunks at once and never reads them.
    SlowReader,
    /// A request frame announcing 4 GiB.
    Oversized,
    /// TLS, then a Hello of another network, garbage, or an oversized Hello frame.
    ForgedHello,
    /// Receipt proposals signed by another key.
    ForgedProposal,
    /// Gossip sessions carrying provider records: many valid ones of its own and a forged one.
    RecordSpam,
}

/// Every kind, in the order clients are given them.
pub const KINDS: [Kind; 7] = [
    Kind::Garbage,
    Kind::HalfOpen,
    Kind::SlowReader,
    Kind::Oversized,
    Kind::ForgedHello,
    Kind::ForgedProposal,
    Kind::RecordSpam,
];

impl Kind {
    /// Whether the node can pin this on a key: the misbehaviour comes after the handshake.
    pub fn after_handshake(self) -> bool {
        !matches!(self, Kind::HalfOpen | Kind::ForgedHello | Kind::SlowReader)
    }
}

/// What client `index` does.
pub fn kind_of(index: usize) -> Kind {
    KINDS[index % KINDS.len()]
}

/// The source address of client `index`: its own for the first `CLIENTS - SHARING`, one of
/// [`SHARED_IPS`] for the rest.
pub fn source_of(index: usize) -> IpAddr {
    let distinct = CLIENTS - SHARING;
    if index < distinct {
        IpAddr::V4(Ipv4Addr::from(0x7f02_0001 + index as u32))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            0x7f09_0001 + ((index - distinct) % SHARED_IPS) as u32,
        ))
    }
}

/// The shared source addresses.
pub fn shared_ips() -> Vec<IpAddr> {
    (CLIENTS - SHARING..CLIENTS - SHARING + SHARED_IPS)
        .map(source_of)
        .collect()
}

/// The node under attack.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its key.
    pub peer: PeerId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its network.
    pub network: NetworkId,
    /// A content it serves, for the slow readers.
    pub content: ContentId,
    /// Chunks in that content.
    pub chunks: u32,
}

/// How a client's dial went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// The handshake (TLS for the raw kinds, TLS and Hello for the others) completed.
    Connected,
    /// The node answered with a refusal or a close (a limit, or a ban met in the handshake).
    Refused,
    /// No answer in time: the node ignores this source (banned).
    NoAnswer,
}

/// One connection a client tried.
#[derive(Debug, Clone)]
pub struct Round {
    /// The key it used.
    pub key: PeerId,
    /// How the dial went.
    pub dial: Dial,
    /// The application code the node closed the connection with, if it did.
    pub closed_with: Option<u64>,
    /// The connection was still open when the client gave up waiting (or was told to stop).
    pub still_open: bool,
}

/// What one client did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its index.
    pub index: usize,
    /// What it did.
    pub kind: Kind,
    /// Its source address.
    pub ip: IpAddr,
    /// Its connections.
    pub rounds: Vec<Round>,
}

fn client_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.handshake_timeout = CLIENT_HANDSHAKE;
    config.udp_recv_buffer = 256 * 1024;
    config.udp_send_buffer = 256 * 1024;
    config
}

/// Starts every client; each stops misbehaving once its rounds are done or `stop` fires
/// (slow readers hold on until then).
pub fn launch(target: Target, stop: CancellationToken) -> tokio::task::JoinSet<Outcome> {
    let mut set = tokio::task::JoinSet::new();
    for index in 0..CLIENTS {
        let stop = stop.clone();
        set.spawn(run(index, target, stop));
    }
    set
}

/// Runs client `index`.
pub async fn run(index: usize, target: Target, stop: CancellationToken) -> Outcome {
    let kind = kind_of(index);
    let ip = source_of(index);
    let mut rounds = Vec::new();
    // The bench can leave kinds out (`TALLY_FLOOD_SKIP=SlowReader,HalfOpen`) to see what each
    // costs.
    let skipped = std::env::var("TALLY_FLOOD_SKIP")
        .is_ok_and(|skip| skip.split(',').any(|k| k.trim() == format!("{kind:?}")));
    let rounds_to_run = if skipped { 0 } else { ROUNDS };
    for round in 0..rounds_to_run {
        if stop.is_cancelled() {
            break;
        }
        let identity = Identity::generate(&mut rand::rng());
        let key = identity.peer_id();
        let result = match kind {
            Kind::HalfOpen | Kind::ForgedHello => {
                raw_round(kind, index + round, ip, &identity, &target, &stop).await
            }
            _ => tally_round(kind, ip, &identity, &target, &stop).await,
        };
        let (dial, closed_with, still_open) = result;
        rounds.push(Round {
            key,
            dial,
            closed_with,
            still_open,
        });
        // Ignored means banned: no point in trying again.
        if dial == Dial::NoAnswer {
            break;
        }
    }
    Outcome {
        index,
        kind,
        ip,
        rounds,
    }
}

/// A client round through a real tally endpoint (TLS and Hello done right), then `kind`.
async fn tally_round(
    kind: Kind,
    ip: IpAddr,
    identity: &Identity,
    target: &Target,
    stop: &CancellationToken,
) -> (Dial, Option<u64>, bool) {
    let endpoint = Endpoint::bind(
        SocketAddr::new(ip, 0),
        identity,
        target.network,
        client_config(),
    )
    .expect("bind a client source address (Linux: all of 127/8 is local)");
    let conn = match endpoint.dial(target.peer, target.addr).await {
        Ok(conn) => conn,
        Err(tally_node::transport::TransportError::HandshakeTimeout { .. }) => {
            return (Dial::NoAnswer, None, false);
        }
        Err(_) => return (Dial::Refused, None, false),
    };
    let misbehave = misbehave(kind, &conn, identity, target);
    // Misbehave until the node closes the connection, the client is done, or told to stop.
    tokio::select! {
        () = misbehave => {}
        _ = conn.closed() => {}
        () = stop.cancelled() => {}
    }
    let outcome = wait_closed(conn.quinn(), stop).await;
    endpoint.close(tally_node::transport::ErrorCode::Normal, "done");
    (Dial::Connected, outcome.0, outcome.1)
}

/// Waits (up to [`CLOSE_WAIT`]) for the node to close `conn`: (its code, still open).
async fn wait_closed(conn: &quinn::Connection, stop: &CancellationToken) -> (Option<u64>, bool) {
    let closed = tokio::select! {
        closed = tokio::time::timeout(CLOSE_WAIT, conn.closed()) => closed.ok(),
        () = stop.cancelled() => conn.close_reason(),
    };
    match closed {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            (Some(close.error_code.into_inner()), false)
        }
        Some(quinn::ConnectionError::ConnectionClosed(close)) => {
            (Some(u64::from(close.error_code)), false)
        }
        Some(other) => {
            eprintln!("flood client: closed by {other}");
            (None, false)
        }
        None => {
            conn.close(0u32.into(), b"done");
            (None, true)
        }
    }
}

async fn misbehave(kind: Kind, conn: &Connection, identity: &Identity, target: &Target) {
    match kind {
        Kind::Garbage => {
            for _ in 0..20 {
                let Ok((mut writer, _reader)) = conn.open_bi().await else {
                    return;
                };
                // A small length, then bytes no request decodes from.
                let mut bytes = 60u32.to_be_bytes().to_vec();
                bytes.extend([0xff; 60]);
                if writer.get_mut().write_all(&bytes).await.is_err() {
                    return;
                }
                let _ = writer.get_mut().finish();
                let _ = writer.get_mut().stopped().await;
            }
        }
        Kind::Oversized => {
            for _ in 0..20 {
                let Ok((mut writer, _reader)) = conn.open_bi().await else {
                    return;
                };
                let mut bytes = u32::MAX.to_be_bytes().to_vec();
                bytes.extend([0; 64]);
                if writer.get_mut().write_all(&bytes).await.is_err() {
                    return;
                }
                let _ = writer.get_mut().stopped().await;
            }
        }
        Kind::SlowReader => {
            // Many chunk requests, none read: the node's sends stall on flow control.
            let mut held = Vec::new();
            for index in 0..32u32.min(target.chunks) {
                let Ok((mut writer, reader)) = conn.open_bi().await else {
                    return;
                };
                let request = Request::Chunk {
                    content: target.content,
                    index,
                };
                if writer.send(&request).await.is_err() {
                    return;
                }
                let _ = writer.finish().await;
                held.push(reader);
            }
            // Hold them, unread, until the connection ends or the client is stopped.
            conn.closed().await;
            drop(held);
        }
        Kind::ForgedProposal => {
            let net = target.network;
            let stranger = Identity::generate(&mut rand::rng());
            for seq in 1..=20u64 {
                let body = ReceiptBody {
                    uploader: target.peer,
                    downloader: identity.peer_id(),
                    seq,
                    bytes: seq << 20,
                    credits: seq << 20,
                    time_ms: tally_node::daemon::now_ms(),
                };
                let Ok((mut writer, _reader)) = conn.open_bi().await else {
                    return;
                };
                let forged = body.propose(&stranger, &net);
                if writer.send(&Request::Propose(forged)).await.is_err() {
                    return;
                }
                let _ = writer.finish().await;
                let _ = writer.get_mut().stopped().await;
            }
        }
        Kind::RecordSpam => {
            let net = target.network;
            for _ in 0..20 {
                let Ok((mut writer, _reader)) = conn.open_bi().await else {
                    return;
                };
                let now = tally_node::daemon::now_ms();
                let mut providers: Vec<ProviderRecord> = (0..16u8)
                    .map(|n| {
                        let mut content = [n; 32];
                        content[..8].copy_from_slice(&rand::random::<[u8; 8]>());
                        ProviderRecord::sign(identity, &net, ContentId(content), now, 600_000)
                    })
                    .collect();
                providers.push(ProviderRecord {
                    signature: Signature([7; 64]),
                    ..ProviderRecord::sign(identity, &net, ContentId([1; 32]), now, 600_000)
                });
                let frames = [
                    GossipFrame::Hello(GossipHello {
                        conflicts: 0,
                        conflicts_digest: [0; 32],
                        observed: conn.remote_addr(),
                        recent: Vec::new(),
                    }),
                    GossipFrame::Records(Records {
                        providers,
                        peers: Vec::new(),
                    }),
                ];
                if writer.send(&Request::Gossip).await.is_err() {
                    return;
                }
                writer.set_max_frame(MAX_GOSSIP_FRAME);
                for frame in &frames {
                    if writer.send(frame).await.is_err() {
                        return;
                    }
                }
                let _ = writer.get_mut().stopped().await;
            }
        }
        Kind::HalfOpen | Kind::ForgedHello => unreachable!("raw clients"),
    }
}

/// A raw QUIC client with a valid certificate: TLS completes, then `kind` instead of a proper
/// Hello. Returns (TLS done, the node's close code, still open).
async fn raw_round(
    kind: Kind,
    variant: usize,
    ip: IpAddr,
    identity: &Identity,
    target: &Target,
    stop: &CancellationToken,
) -> (Dial, Option<u64>, bool) {
    let tls = TlsIdentity::new(identity).unwrap();
    let config = tls::client_config(&tls, &target.network, Some(target.peer)).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
    let endpoint = quinn::Endpoint::client(SocketAddr::new(ip, 0))
        .expect("bind a client source address (Linux: all of 127/8 is local)");
    let connecting = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(quic)),
            target.addr,
            "tally",
        )
        .unwrap();
    let conn = match tokio::time::timeout(CLIENT_HANDSHAKE, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(_)) => return (Dial::Refused, None, false),
        Err(_) => return (Dial::NoAnswer, None, false),
    };
    if kind == Kind::ForgedHello
        && let Ok((send, _recv)) = conn.open_bi().await
    {
        let mut writer = FrameWriter::new(send, MAX_HELLO_FRAME);
        match variant % 3 {
            0 => {
                let elsewhere = NetworkId::from_name("a network of forgers");
                let _ = writer.send(&Hello::new(elsewhere, Some(1), "forger")).await;
            }
            1 => {
                let mut bytes = 40u32.to_be_bytes().to_vec();
                bytes.extend([0xff; 40]);
                let _ = writer.get_mut().write_all(&bytes).await;
            }
            _ => {
                let mut bytes = (16u32 << 20).to_be_bytes().to_vec();
                bytes.extend([0; 64]);
                let _ = writer.get_mut().write_all(&bytes).await;
            }
        }
        let (code, open) = wait_closed(&conn, stop).await;
        endpoint.close(0u32.into(), b"done");
        return (Dial::Connected, code, open);
    }
    // Half-open: nothing more, until the node gives up on the Hello.
    let (code, open) = wait_closed(&conn, stop).await;
    endpoint.close(0u32.into(), b"done");
    (Dial::Connected, code, open)
}

/// The resident set of this process, bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}
