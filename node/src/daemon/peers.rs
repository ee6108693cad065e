//! Connections: the accept loop, dialing and redialing configured peers with backoff, one
//! driver task per connection (the receipt re-sync, then a task per incoming request), and the
//! penalties that end in a ban.
//!
//! A penalty on a peer that dialed in is also charged to its source IP (the endpoint's
//! [`Admission`]), since a misbehaving client can make a new key for every connection; when the
//! IP is banned, every connection from it is closed and the endpoint refuses it before any
//! handshake.
//!
//! At most one connection per peer is kept. When both sides dial at once, the connection dialed
//! by the lower PeerId wins on both sides, so they agree without talking about it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tally_ledger::PeerId;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::{Shared, now_ms};
use crate::config::PeerAddr;
use crate::transport::{Admission, Connection, ErrorCode};
use crate::wire::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, Request, Response};

/// Requests one connection may have in progress at once; more wait for a slot.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 64;
/// Penalty points at which a peer is disconnected and banned.
pub const BAN_THRESHOLD: u32 = 100;
/// How long a ban lasts.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// First wait before redialing a peer; doubles up to [`MAX_REDIAL`].
pub const FIRST_REDIAL: Duration = Duration::from_millis(500);
/// Longest wait between two dials of a configured peer.
pub const MAX_REDIAL: Duration = Duration::from_secs(60);
/// Ended connections remembered for the API's peer list, at most; the oldest are forgotten.
pub const MAX_PAST_CONNECTIONS: usize = 256;
/// Keys whose penalty points are remembered, at most. Past it, expired bans and the points of
/// keys neither connected nor banned are forgotten (their source addresses keep theirs), so a
/// stream of fresh keys that each misbehave a little does not grow the table for good.
pub const MAX_PENALIZED_KEYS: usize = 65_536;

/// Which side dialed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer dialed this node.
    Inbound,
    /// This node dialed the peer.
    Outbound,
}

/// A live connection and what was counted on it.
pub struct PeerEntry {
    /// The connection.
    pub conn: Connection,
    /// Who dialed.
    pub direction: Direction,
    /// When it was established, Unix ms.
    pub since_ms: u64,
    /// Payload bytes sent to the peer on it.
    pub bytes_sent: Arc<AtomicU64>,
    /// Payload bytes received from the peer on it.
    pub bytes_received: Arc<AtomicU64>,
}

#[derive(Default)]
struct Table {
    live: HashMap<PeerId, PeerEntry>,
    penalties: HashMap<PeerId, u32>,
    banned: HashMap<PeerId, Instant>,
    /// Addresses this node dials and redials (configured, or asked for through the API).
    dialing: HashMap<PeerId, String>,
    /// The last connection of peers not connected now, for the API's peer list.
    past: HashMap<PeerId, PastConnection>,
}

/// A connection that has ended, as the API lists its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastConnection {
    /// The peer's address on it.
    pub addr: std::net::SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// When it was established, Unix ms.
    pub since_ms: u64,
    /// Payload bytes sent on it.
    pub bytes_sent: u64,
    /// Payload bytes received on it.
    pub bytes_received: u64,
}

impl PastConnection {
    fn of(entry: &PeerEntry) -> Self {
        Self {
            addr: entry.conn.remote_addr(),
            direction: entry.direction,
            since_ms: entry.since_ms,
            bytes_sent: entry.bytes_sent.load(Ordering::Relaxed),
            bytes_received: entry.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// A peer known but not connected now: banned, dialed, or connected before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflinePeer {
    /// The peer.
    pub peer: PeerId,
    /// Banned now.
    pub banned: bool,
    /// The address this node dials it at, if it does.
    pub dial_addr: Option<String>,
    /// Its last connection, if remembered.
    pub last: Option<PastConnection>,
}

impl Table {
    /// Forgets expired bans, and the penalty points of keys neither connected nor banned.
    fn prune(&mut self, now: Instant) {
        self.banned.retain(|_, until| *until > now);
        let (live, banned) = (&self.live, &self.banned);
        self.penalties
            .retain(|peer, _| live.contains_key(peer) || banned.contains_key(peer));
    }

    /// Remembers the ended connection `entry` of `peer`, forgetting the oldest past the cap.
    fn remember(&mut self, peer: PeerId, entry: &PeerEntry) {
        self.past.insert(peer, PastConnection::of(entry));
        if self.past.len() > MAX_PAST_CONNECTIONS
            && let Some(oldest) = self
                .past
                .iter()
                .min_by_key(|(_, c)| c.since_ms)
                .map(|(peer, _)| *peer)
        {
            self.past.remove(&oldest);
        }
    }
}

/// The connection table.
pub struct Peers {
    table: Mutex<Table>,
    max_connections: usize,
    admission: Option<Arc<Admission>>,
}

impl Peers {
    /// An empty table that admits at most `max_connections`.
    pub fn new(max_connections: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_connections,
            admission: None,
        }
    }

    /// Charges the penalties of inbound peers to their source IPs in `admission` as well.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Whether the source IP of `addr` is banned now.
    pub fn is_ip_banned(&self, addr: std::net::SocketAddr) -> bool {
        self.admission
            .as_ref()
            .is_some_and(|admission| admission.is_banned(addr.ip()))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live connection to `peer`.
    pub fn connection(&self, peer: &PeerId) -> Option<Connection> {
        self.table()
            .live
            .get(peer)
            .filter(|entry| entry.conn.close_reason().is_none())
            .map(|entry| entry.conn.clone())
    }

    /// Every live connection's peer.
    pub fn connected(&self) -> Vec<PeerId> {
        self.table()
            .live
            .iter()
            .filter(|(_, entry)| entry.conn.close_reason().is_none())
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// A snapshot of every live connection: peer, address, direction, since, bytes each way.
    pub fn snapshot(&self) -> Vec<(PeerId, std::net::SocketAddr, Direction, u64, u64, u64)> {
        self.table()
            .live
            .iter()
            .filter(|(_, entry)| entry.conn.close_reason().is_none())
            .map(|(peer, e)| {
                (
                    *peer,
                    e.conn.remote_addr(),
                    e.direction,
                    e.since_ms,
                    e.bytes_sent.load(Ordering::Relaxed),
                    e.bytes_received.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The byte counters of the live connection to `peer`: (sent, received).
    pub fn counters(&self, peer: &PeerId) -> Option<(Arc<AtomicU64>, Arc<AtomicU64>)> {
        self.table()
            .live
            .get(peer)
            .map(|e| (Arc::clone(&e.bytes_sent), Arc::clone(&e.bytes_received)))
    }

    /// Every peer known but not connected now, with why it is known.
    pub fn offline(&self) -> Vec<OfflinePeer> {
        let table = self.table();
        let now = Instant::now();
        let live = |peer: &PeerId| {
            table
                .live
                .get(peer)
                .is_some_and(|e| e.conn.close_reason().is_none())
        };
        let mut known: Vec<PeerId> = table
            .past
            .keys()
            .chain(table.dialing.keys())
            .chain(table.banned.keys())
            .copied()
            .filter(|peer| !live(peer))
            .collect();
        known.sort();
        known.dedup();
        known
            .into_iter()
            .map(|peer| OfflinePeer {
                peer,
                banned: table.banned.get(&peer).is_some_and(|until| *until > now),
                dial_addr: table.dialing.get(&peer).cloned(),
                last: table.past.get(&peer).copied(),
            })
            .collect()
    }

    /// Keys banned now.
    pub fn banned_keys(&self) -> usize {
        let now = Instant::now();
        self.table()
            .banned
            .values()
            .filter(|until| **until > now)
            .count()
    }

    /// Source addresses banned now, if this table charges penalties to addresses
    /// ([`Peers::with_admission`]).
    pub fn banned_addresses(&self) -> usize {
        self.admission
            .as_ref()
            .map_or(0, |admission| admission.banned().len())
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        let mut table = self.table();
        match table.banned.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                table.banned.remove(peer);
                table.penalties.remove(peer);
                false
            }
            None => false,
        }
    }

    /// The penalty points `peer` has now (0 once a ban has expired).
    pub fn penalty(&self, peer: &PeerId) -> u32 {
        self.table().penalties.get(peer).copied().unwrap_or(0)
    }

    /// Adds penalty points to `peer`; at [`BAN_THRESHOLD`] it is banned and disconnected.
    /// Returns whether it is banned now.
    pub fn penalize(&self, peer: PeerId, points: u32, why: &str) -> bool {
        let mut table = self.table();
        if !table.penalties.contains_key(&peer) && table.penalties.len() >= MAX_PENALIZED_KEYS {
            table.prune(Instant::now());
        }
        let total = table.penalties.entry(peer).or_insert(0);
        *total = total.saturating_add(points);
        let total = *total;
        tracing::warn!(peer = %peer.fmt_short(), points, total, "penalised: {why}");
        self.charge_source(&mut table, peer, points, why);
        if total < BAN_THRESHOLD {
            return false;
        }
        if table.banned.len() >= MAX_PENALIZED_KEYS {
            table.prune(Instant::now());
        }
        table.banned.insert(peer, Instant::now() + BAN_DURATION);
        if let Some(entry) = table.live.remove(&peer) {
            table.remember(peer, &entry);
            entry.conn.close(ErrorCode::Banned, why);
        }
        tracing::warn!(peer = %peer.fmt_short(), "banned for {BAN_DURATION:?}: {why}");
        true
    }

    /// Charges `points` to the source IP of `peer`'s connection if it dialed in; if that bans
    /// the IP, closes every connection from it.
    fn charge_source(&self, table: &mut Table, peer: PeerId, points: u32, why: &str) {
        let Some(admission) = &self.admission else {
            return;
        };
        let Some(entry) = table.live.get(&peer) else {
            return;
        };
        if entry.direction != Direction::Inbound {
            return;
        }
        let ip = entry.conn.remote_addr().ip();
        if !admission.penalize(ip, points, why) {
            return;
        }
        let key = crate::transport::admission::source_key(ip);
        let from_ip: Vec<PeerId> = table
            .live
            .iter()
            .filter(|(_, e)| {
                e.direction == Direction::Inbound
                    && crate::transport::admission::source_key(e.conn.remote_addr().ip()) == key
            })
            .map(|(peer, _)| *peer)
            .collect();
        for other in from_ip {
            if let Some(entry) = table.live.remove(&other) {
                table.remember(other, &entry);
                entry.conn.close(
                    ErrorCode::Banned,
                    "this node has banned your address for a while",
                );
            }
        }
    }

    /// Adds `conn` to the table. Returns false (and closes `conn`) when it loses to an
    /// existing connection to the same peer or the table is full.
    fn register(&self, me: PeerId, conn: &Connection, direction: Direction) -> bool {
        let peer = conn.peer_id();
        let mut table = self.table();
        let live = table
            .live
            .values()
            .filter(|e| e.conn.close_reason().is_none())
            .count();
        if let Some(existing) = table.live.get(&peer)
            && existing.conn.close_reason().is_none()
        {
            let dialer = |d: Direction| if d == Direction::Outbound { me } else { peer };
            let (old, new) = (dialer(existing.direction), dialer(direction));
            // The same dialer again means the old connection is stale; otherwise the lower
            // dialer's connection wins on both sides.
            if old != new && old < new {
                conn.close(
                    ErrorCode::Normal,
                    "a connection to this peer already exists",
                );
                return false;
            }
            existing
                .conn
                .close(ErrorCode::Normal, "replaced by a newer connection");
        } else if live >= self.max_connections {
            conn.close(
                ErrorCode::TooManyConnections,
                "this node is at its connection limit; try later",
            );
            return false;
        }
        table.live.insert(
            peer,
            PeerEntry {
                conn: conn.clone(),
                direction,
                since_ms: now_ms(),
                bytes_sent: Arc::new(AtomicU64::new(0)),
                bytes_received: Arc::new(AtomicU64::new(0)),
            },
        );
        true
    }

    /// Removes `conn` if it is still the table's connection to its peer.
    fn unregister(&self, conn: &Connection) {
        let mut table = self.table();
        let peer = conn.peer_id();
        if table
            .live
            .get(&peer)
            .is_some_and(|e| e.conn.quinn().stable_id() == conn.quinn().stable_id())
            && let Some(entry) = table.live.remove(&peer)
        {
            table.remember(peer, &entry);
        }
    }

    /// Remembers to dial `peer` at `addr` (and redial after drops). Returns false if it was
    /// already being dialed.
    fn start_dialing(&self, peer: PeerId, addr: &str) -> bool {
        self.table().dialing.insert(peer, addr.to_owned()).is_none()
    }
}

/// Accepts connections until the node stops.
pub async fn accept_loop(shared: Arc<Shared>) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            incoming = shared.endpoint.accept() => incoming,
        };
        match incoming {
            None => return,
            Some(Err(error)) => {
                tracing::info!("refused an incoming connection: {error}");
            }
            Some(Ok(conn)) => {
                if shared.peers.is_banned(&conn.peer_id()) {
                    conn.close(ErrorCode::Banned, "this node has banned you for a while");
                    continue;
                }
                // Banned while its handshake ran.
                if shared.peers.is_ip_banned(conn.remote_addr()) {
                    conn.close(
                        ErrorCode::Banned,
                        "this node has banned your address for a while",
                    );
                    continue;
                }
                let task = drive(Arc::clone(&shared), conn, Direction::Inbound);
                shared.tasks.spawn(task);
            }
        }
    }
}

/// Dials `peer` now and whenever its connection drops, with backoff, until the node stops.
pub fn keep_dialing(shared: &Arc<Shared>, peer: PeerAddr) {
    if peer.peer_id == shared.me || !shared.peers.start_dialing(peer.peer_id, &peer.addr) {
        return;
    }
    let tasks = shared.tasks.clone();
    let shared = Arc::clone(shared);
    let span = tracing::info_span!("dial", peer = %peer.peer_id.fmt_short(), addr = %peer.addr);
    let task = async move {
        let mut wait = FIRST_REDIAL;
        loop {
            if let Some(conn) = shared.peers.connection(&peer.peer_id) {
                // Connected (perhaps by the peer): wait for that connection to end.
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    _ = conn.closed() => {}
                }
                wait = FIRST_REDIAL;
                continue;
            }
            match dial(&shared, &peer).await {
                Ok(conn) => {
                    wait = FIRST_REDIAL;
                    let closed = conn.clone();
                    shared
                        .tasks
                        .spawn(drive(Arc::clone(&shared), conn, Direction::Outbound));
                    tokio::select! {
                        () = shared.cancel.cancelled() => return,
                        _ = closed.closed() => {}
                    }
                }
                Err(error) => {
                    tracing::info!("cannot reach the peer, retrying in {wait:?}: {error:#}");
                }
            }
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_REDIAL);
        }
    };
    tasks.spawn(task.instrument(span));
}

/// Dials `peer` once (resolving its host name) and returns the connection, not yet driven.
pub async fn dial(shared: &Shared, peer: &PeerAddr) -> anyhow::Result<Connection> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&peer.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", peer.addr))?
        .collect();
    // Prefer the address family the endpoint is bound to.
    let local_v4 = shared.endpoint.local_addr().is_ipv4();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4() == local_v4)
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", peer.addr))?;
    Ok(shared.endpoint.dial(peer.peer_id, addr).await?)
}

/// Connects to `peer` now (the API's `connect`), keeps redialing it after drops, and returns
/// once connected.
pub async fn connect(shared: &Arc<Shared>, peer: PeerAddr) -> anyhow::Result<()> {
    if peer.peer_id == shared.me {
        anyhow::bail!("{} is this node itself", peer.peer_id);
    }
    if shared.peers.connection(&peer.peer_id).is_none() {
        let conn = dial(shared, &peer).await?;
        shared
            .tasks
            .spawn(drive(Arc::clone(shared), conn, Direction::Outbound));
    }
    keep_dialing(shared, peer);
    Ok(())
}

/// Runs one connection: registers it, re-syncs the receipts of both pairs (the dialer asks),
/// then serves the peer's requests until the connection or the node ends.
pub async fn drive(shared: Arc<Shared>, conn: Connection, direction: Direction) {
    let peer = conn.peer_id();
    let span = tracing::info_span!("conn", me = %shared.me.fmt_short(), peer = %peer.fmt_short());
    async move {
        if !shared.peers.register(shared.me, &conn, direction) {
            return;
        }
        tracing::info!(addr = %conn.remote_addr(), ?direction, "connected");
        super::events::peer_connected(&shared, peer).await;
        crate::market::push_book(&shared, &conn);
        if direction == Direction::Outbound {
            let exchange = exchange_latest(&shared, &conn);
            match exchange.await {
                // Bytes received on an earlier connection and never acknowledged: settle them
                // now that both sides agree on the latest receipt.
                Ok(()) if shared.pairs.unacknowledged_from(peer).is_ok_and(|n| n > 0) => {
                    let settle = Arc::clone(&shared);
                    let task = async move {
                        if let Err(error) = super::fetch::propose(&settle, peer).await {
                            tracing::info!("settling earlier bytes failed: {error:#}");
                        }
                    };
                    shared.tasks.spawn(task.in_current_span());
                }
                Ok(()) => {}
                Err(error) => tracing::warn!("receipt re-sync failed: {error:#}"),
            }
        }
        let slots = Arc::new(Semaphore::new(MAX_REQUESTS_PER_CONNECTION));
        loop {
            let stream = tokio::select! {
                biased;
                () = shared.cancel.cancelled() => break,
                stream = conn.accept_bi() => stream,
            };
            let (writer, reader) = match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::info!("disconnected: {error}");
                    break;
                }
            };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let shared = Arc::clone(&shared);
            let conn = conn.clone();
            shared.tasks.clone().spawn(
                async move {
                    super::serve::handle(&shared, &conn, writer, reader).await;
                    drop(slot);
                }
                .in_current_span(),
            );
        }
        super::events::peer_disconnected(&shared, peer);
        shared.peers.unregister(&conn);
        shared.pairs.forget_idle(peer);
    }
    .instrument(span)
    .await;
}

/// The dialer's side of the re-sync: send this node's latest receipts with the peer, take its
/// own, and let the higher valid one win on each pair.
async fn exchange_latest(shared: &Arc<Shared>, conn: &Connection) -> anyhow::Result<()> {
    let peer = conn.peer_id();
    let mine = shared.pairs.latest_with(peer)?;
    let response = request(conn, &Request::Latest(mine)).await?;
    match response {
        Response::Latest(theirs) => {
            let proofs = shared.pairs.resync(peer, theirs).await?;
            for proof in proofs {
                tracing::warn!(
                    "the peer's receipt contradicts ours: conflict proof {} stored, both keys marked dishonest",
                    hex::encode(proof.id())
                );
                crate::gossip::session::spread_conflict(shared, proof, None);
            }
            Ok(())
        }
        other => anyhow::bail!("the peer answered the re-sync with {other:?}"),
    }
}

/// Sends one request on a new stream and reads its one response frame (for requests whose
/// answer has no raw payload).
pub async fn request(conn: &Connection, request: &Request) -> anyhow::Result<Response> {
    let (mut writer, mut reader) = conn.open_bi().await?;
    writer.set_max_frame(MAX_REQUEST_FRAME);
    reader.set_max_frame(MAX_RESPONSE_FRAME);
    writer.send(request).await?;
    writer.finish().await?;
    reader
        .recv::<Response>()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the peer closed the stream without answering"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> PeerId {
        let mut bytes = [0; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        PeerId(bytes)
    }

    #[test]
    fn fresh_keys_that_each_misbehave_a_little_do_not_grow_the_table_for_good() {
        let peers = Peers::new(8);
        let banned = key(u32::MAX);
        assert!(peers.penalize(banned, BAN_THRESHOLD, "test"));
        let many = u32::try_from(MAX_PENALIZED_KEYS).unwrap() * 2;
        for n in 0..many {
            assert!(!peers.penalize(key(n), 10, "test"));
        }
        let table = peers.table();
        assert!(
            table.penalties.len() <= MAX_PENALIZED_KEYS,
            "{}",
            table.penalties.len()
        );
        // A banned key keeps its ban and its points.
        assert!(table.banned.contains_key(&banned));
        assert_eq!(table.penalties.get(&banned), Some(&BAN_THRESHOLD));
        drop(table);
        assert!(peers.is_banned(&banned));
        // The latest key's points are still counted.
        assert_eq!(peers.penalty(&key(many - 1)), 10);
    }
}
