//! Gossip: how receipts, conflict proofs, provider records and peer addresses reach every node.
//!
//! - [`records`]: the signed, expiring records (who provides what, who is reachable where).
//! - [`session`]: one push-pull session with a peer on one stream: hellos, conflict proofs when
//!   the two sides' sets differ, records, then the ledger's range-based set reconciliation with
//!   the receipts each side lacks pushed in batches, verified before they touch the store.
//! - [`task`]: the loop that starts a session with a random connected peer every interval,
//!   keeps this node's own records fresh, dials peers learned by exchange (peer exchange), and
//!   floods new conflict proofs at once.
//!
//! This module holds the tables the three share: provider and peer records (both bounded),
//! which sessions run, and the counters. It must not block: the store is reached on blocking
//! threads by [`session`].

pub mod records;
pub mod session;
pub mod task;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom as _;
use tally_ledger::PeerId;
use tally_ledger::sync::ShortId;

use crate::content::ContentId;
use crate::wire::{MAX_PEER_RECORDS_PER_FRAME, MAX_PROVIDER_RECORDS_PER_FRAME, Records};
use records::{PeerRecord, ProviderRecord};

/// Provider records kept at most, all contents together.
pub const MAX_PROVIDER_RECORDS: usize = 65_536;
/// Providers kept at most per content (the soonest to expire go first).
pub const MAX_PROVIDERS_PER_CONTENT: usize = 64;
/// Peer records kept at most: the peer table's bound.
pub const MAX_KNOWN_PEERS: usize = 1_024;
/// A record learned within this many gossip intervals is "hot": every session sends it, so
/// news spreads like a rumour (a node starts one session per interval and answers about as
/// many, so its neighbours hear it within the window). Older records go only in the first
/// session with each newly connected peer (a random sample up to the frame's caps), so a late
/// joiner learns them without idle sessions repeating them.
pub const RUMOUR_INTERVALS: u32 = 8;
/// A session's hello announces the receipts this node learned within this many gossip
/// intervals (by 8-byte short ids; at most [`crate::wire::MAX_ANNOUNCED`]), so the peer takes
/// them before reconciling: with a few new receipts, each costs 8 bytes a session and a push,
/// not a reconciliation's descent (about 900 bytes). Older news is left to reconciliation.
pub const ANNOUNCE_INTERVALS: u32 = 3;
/// Sessions a peer may start with this node in a burst; refilled one per
/// [`SESSION_REFILL`]. An honest node starts at most one per [`SESSION_REFILL`] with one peer.
pub const SESSION_BURST: u32 = 4;
/// See [`SESSION_BURST`].
pub const SESSION_REFILL: Duration = Duration::from_millis(500);

/// Counters of what gossip did, for status, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Sessions this node started that ended well.
    pub sessions_started: AtomicU64,
    /// Sessions peers started that this node answered.
    pub sessions_answered: AtomicU64,
    /// Sessions refused or broken off (either side).
    pub sessions_failed: AtomicU64,
    /// Receipts received that were new to this node.
    pub receipts_new: AtomicU64,
    /// Receipts received that this node already held or held newer.
    pub receipts_unwanted: AtomicU64,
    /// Receipts received that did not verify.
    pub receipts_rejected: AtomicU64,
    /// Receipts pushed to peers.
    pub receipts_sent: AtomicU64,
    /// Conflict proofs learned from peers.
    pub conflicts_learned: AtomicU64,
    /// Gossip frame bytes sent (length prefixes included).
    pub bytes_sent: AtomicU64,
    /// Gossip frame bytes received (length prefixes included).
    pub bytes_received: AtomicU64,
}

impl GossipStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct Held<T> {
    record: T,
    learned: Instant,
}

/// A peer's allowance of sessions it may start with this node.
struct Allowance {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Tables {
    providers: HashMap<ContentId, HashMap<PeerId, Held<ProviderRecord>>>,
    provider_count: usize,
    peers: HashMap<PeerId, Held<PeerRecord>>,
    /// The address peers last said they see this node at.
    observed: Option<SocketAddr>,
    /// Sessions in progress: the peer, and whether this node started it. One each way at a
    /// time, so a peer that stalls the sessions this node starts cannot block its own.
    in_session: HashSet<(PeerId, bool)>,
    /// When this node last started a session with each peer.
    last_started: HashMap<PeerId, Instant>,
    /// Connected peers already sent a sample of old records.
    introduced: HashSet<PeerId>,
    /// Peers being dialed because gossip told of them.
    dialing: HashSet<PeerId>,
    /// When a dial of a gossiped peer last failed (bounded by the peer table: pruned with it).
    failed_dials: HashMap<PeerId, Instant>,
    allowances: HashMap<PeerId, Allowance>,
    /// The store's sync-index marks taken at each gossip tick within the announcement window,
    /// oldest first.
    marks: VecDeque<(Instant, u64)>,
    /// Announced receipts some session has asked a peer for and not yet taken: another session
    /// does not ask for them again. At most [`crate::wire::MAX_ANNOUNCED`] per session.
    wanting: HashSet<ShortId>,
}

/// Why a peer's session was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// A session with it is already running.
    AlreadyInSession,
    /// It started sessions faster than its allowance.
    TooOften,
}

/// Gossip's shared state.
pub struct Gossip {
    tables: Mutex<Tables>,
    /// How long a learned record stays hot.
    rumour_window: Duration,
    /// How long a learned receipt is announced.
    announce_window: Duration,
    /// What gossip did.
    pub stats: GossipStats,
}

/// A dial of a gossiped peer that failed is not retried for this long after it began.
pub const DIAL_BACKOFF: Duration = Duration::from_secs(60);

/// Holds a peer's session slot; frees it on drop.
pub struct SessionSlot {
    gossip: Arc<Gossip>,
    key: (PeerId, bool),
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.gossip.tables().in_session.remove(&self.key);
    }
}

/// Announced receipts one session is fetching (see [`Gossip::claim`]); released on drop.
pub struct WantClaim {
    gossip: Arc<Gossip>,
    ids: Vec<ShortId>,
}

impl WantClaim {
    /// The ids claimed.
    pub fn ids(&self) -> &[ShortId] {
        &self.ids
    }
}

impl Drop for WantClaim {
    fn drop(&mut self) {
        let mut tables = self.gossip.tables();
        for id in &self.ids {
            tables.wanting.remove(id);
        }
    }
}

/// A dial of a gossiped peer in progress; counted as failed when dropped before
/// [`DialGuard::succeeded`].
pub struct DialGuard {
    gossip: Arc<Gossip>,
    peer: PeerId,
    /// When the dial began: the backoff after a failure counts from here.
    began: Instant,
    succeeded: bool,
}

impl DialGuard {
    /// The dial connected.
    pub fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for DialGuard {
    fn drop(&mut self) {
        let mut tables = self.gossip.tables();
        tables.dialing.remove(&self.peer);
        if self.succeeded {
            tables.failed_dials.remove(&self.peer);
        } else {
            tables.failed_dials.insert(self.peer, self.began);
        }
    }
}

impl Gossip {
    /// Empty tables.
    pub fn new(gossip_interval: Duration) -> Self {
        Self {
            tables: Mutex::default(),
            rumour_window: gossip_interval * RUMOUR_INTERVALS,
            announce_window: gossip_interval * ANNOUNCE_INTERVALS,
            stats: GossipStats::default(),
        }
    }

    /// Notes the store's sync-index mark (`SyncItems::mark`) at a gossip tick.
    pub fn note_mark(&self, now: Instant, mark: u64) {
        let mut tables = self.tables();
        tables.marks.push_back((now, mark));
        let window = self.announce_window;
        while tables
            .marks
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            tables.marks.pop_front();
        }
    }

    /// The mark from which a session announces receipts: the oldest noted within the
    /// announcement window, or `current` (nothing to announce) before the first tick.
    pub fn announce_since(&self, now: Instant, current: u64) -> u64 {
        let window = self.announce_window;
        self.tables()
            .marks
            .iter()
            .find(|(at, _)| now.saturating_duration_since(*at) <= window)
            .map_or(current, |(_, mark)| *mark)
    }

    /// Of `ids` a peer announced, those no other session is fetching; they are this session's
    /// to fetch until the returned claim drops.
    pub fn claim(self: &Arc<Self>, ids: Vec<ShortId>) -> WantClaim {
        let mut tables = self.tables();
        let ids: Vec<ShortId> = ids
            .into_iter()
            .filter(|id| tables.wanting.insert(*id))
            .collect();
        WantClaim {
            gossip: Arc::clone(self),
            ids,
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the session slot of `peer` for a session it started, if it has no other such
    /// session running and is within its allowance.
    pub fn admit(self: Arc<Self>, peer: PeerId, now: Instant) -> Result<SessionSlot, Busy> {
        let mut tables = self.tables();
        let key = (peer, false);
        if tables.in_session.contains(&key) {
            return Err(Busy::AlreadyInSession);
        }
        let allowance = tables.allowances.entry(peer).or_insert(Allowance {
            tokens: f64::from(SESSION_BURST),
            at: now,
        });
        let refilled = now.saturating_duration_since(allowance.at).as_secs_f64()
            / SESSION_REFILL.as_secs_f64();
        allowance.tokens = (allowance.tokens + refilled).min(f64::from(SESSION_BURST));
        allowance.at = now;
        if allowance.tokens < 1.0 {
            return Err(Busy::TooOften);
        }
        allowance.tokens -= 1.0;
        tables.in_session.insert(key);
        drop(tables);
        Ok(SessionSlot { gossip: self, key })
    }

    /// Takes the session slot of `peer` for a session this node starts, if no other such runs and the
    /// last one this node started with it is at least [`SESSION_REFILL`] old (so an honest
    /// node never exceeds the allowance it grants others).
    pub fn start(self: Arc<Self>, peer: PeerId, now: Instant) -> Option<SessionSlot> {
        let mut tables = self.tables();
        let key = (peer, true);
        if tables.in_session.contains(&key)
            || tables
                .last_started
                .get(&peer)
                .is_some_and(|at| now.saturating_duration_since(*at) < SESSION_REFILL * 2)
        {
            return None;
        }
        tables.last_started.insert(peer, now);
        tables.in_session.insert(key);
        drop(tables);
        Some(SessionSlot { gossip: self, key })
    }

    /// Takes the dial slot of a gossiped `peer`, unless it is being dialed or its last dial
    /// failed within [`DIAL_BACKOFF`].
    pub fn begin_dial(self: Arc<Self>, peer: PeerId, now: Instant) -> Option<DialGuard> {
        let mut tables = self.tables();
        let recently_failed = tables
            .failed_dials
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < DIAL_BACKOFF);
        if recently_failed || !tables.dialing.insert(peer) {
            return None;
        }
        drop(tables);
        Some(DialGuard {
            gossip: self,
            peer,
            began: now,
            succeeded: false,
        })
    }

    /// Forgets what is kept per peer for peers no longer connected, so the tables stay
    /// bounded by the connection limit.
    pub fn forget_disconnected(&self, connected: &HashSet<PeerId>) {
        let mut tables = self.tables();
        tables
            .last_started
            .retain(|peer, _| connected.contains(peer));
        tables.allowances.retain(|peer, _| connected.contains(peer));
        tables.introduced.retain(|peer| connected.contains(peer));
    }

    /// Adds a verified provider record. Returns whether it was new or newer than the one held.
    pub fn add_provider(&self, record: ProviderRecord, now: Instant, now_ms: u64) -> bool {
        let mut tables = self.tables();
        let tables = &mut *tables;
        let of_content = tables.providers.entry(record.content).or_default();
        match of_content.get_mut(&record.provider) {
            Some(held) if held.record.issued_ms >= record.issued_ms => return false,
            Some(held) => {
                *held = Held {
                    record,
                    learned: now,
                };
                return true;
            }
            None => {}
        }
        if of_content.len() >= MAX_PROVIDERS_PER_CONTENT {
            // The one that expires first goes, unless the new one expires even sooner.
            let soonest = of_content
                .iter()
                .min_by_key(|(_, held)| held.record.expires_ms)
                .map(|(peer, held)| (*peer, held.record.expires_ms));
            match soonest {
                Some((peer, expires)) if expires < record.expires_ms => {
                    of_content.remove(&peer);
                    tables.provider_count -= 1;
                }
                _ => return false,
            }
        }
        of_content.insert(
            record.provider,
            Held {
                record,
                learned: now,
            },
        );
        tables.provider_count += 1;
        if tables.provider_count > MAX_PROVIDER_RECORDS {
            Self::prune_providers(tables, now_ms);
        }
        true
    }

    /// Drops expired provider records, then, if still over the bound, the soonest to expire.
    fn prune_providers(tables: &mut Tables, now_ms: u64) {
        for of_content in tables.providers.values_mut() {
            of_content.retain(|_, held| held.record.expires_ms > now_ms);
        }
        tables
            .providers
            .retain(|_, of_content| !of_content.is_empty());
        let mut count: usize = tables.providers.values().map(HashMap::len).sum();
        if count > MAX_PROVIDER_RECORDS {
            let mut expiries: Vec<(u64, ContentId, PeerId)> = tables
                .providers
                .iter()
                .flat_map(|(content, of)| {
                    of.iter()
                        .map(|(peer, held)| (held.record.expires_ms, *content, *peer))
                })
                .collect();
            // Down to 7/8 of the bound, so pruning is rare.
            let keep = MAX_PROVIDER_RECORDS / 8 * 7;
            expiries.sort_unstable();
            for (_, content, peer) in expiries.iter().take(count - keep) {
                if let Some(of) = tables.providers.get_mut(content) {
                    of.remove(peer);
                }
            }
            tables
                .providers
                .retain(|_, of_content| !of_content.is_empty());
            count = tables.providers.values().map(HashMap::len).sum();
        }
        tables.provider_count = count;
    }

    /// The unexpired providers of `content` known to this node.
    pub fn providers_of(&self, content: &ContentId, now_ms: u64) -> Vec<ProviderRecord> {
        self.tables()
            .providers
            .get(content)
            .map(|of| {
                of.values()
                    .map(|held| held.record)
                    .filter(|record| record.expires_ms > now_ms)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Provider records held, all contents together.
    pub fn provider_count(&self) -> usize {
        self.tables().provider_count
    }

    /// Adds a verified peer record. Returns whether it was new or newer than the one held.
    pub fn add_peer(&self, record: PeerRecord, now: Instant) -> bool {
        let mut tables = self.tables();
        match tables.peers.get(&record.peer) {
            Some(held) if held.record.issued_ms >= record.issued_ms => return false,
            Some(_) => {}
            None if tables.peers.len() >= MAX_KNOWN_PEERS => {
                // The table is full: the record signed longest ago goes, unless it is newer.
                let oldest = tables
                    .peers
                    .iter()
                    .min_by_key(|(_, held)| held.record.issued_ms)
                    .map(|(peer, held)| (*peer, held.record.issued_ms));
                match oldest {
                    Some((peer, issued)) if issued < record.issued_ms => {
                        tables.peers.remove(&peer);
                        tables.failed_dials.remove(&peer);
                    }
                    _ => return false,
                }
            }
            None => {}
        }
        tables.peers.insert(
            record.peer,
            Held {
                record,
                learned: now,
            },
        );
        true
    }

    /// The addresses `peer` last signed, if known.
    pub fn peer_addrs(&self, peer: &PeerId) -> Option<Vec<SocketAddr>> {
        self.tables()
            .peers
            .get(peer)
            .map(|held| held.record.addrs.clone())
    }

    /// Every peer record held.
    pub fn known_peers(&self) -> Vec<PeerRecord> {
        self.tables()
            .peers
            .values()
            .map(|held| held.record.clone())
            .collect()
    }

    /// Records this node has learned that the address peers see it at is `addr`.
    pub fn observed(&self, addr: SocketAddr) {
        self.tables().observed = Some(addr);
    }

    /// The address peers last said they see this node at.
    pub fn observed_addr(&self) -> Option<SocketAddr> {
        self.tables().observed
    }

    /// What to send `peer` in a session: the hot records (learned within [`RUMOUR_INTERVALS`]),
    /// and, in the first session with it since it connected, a random sample of older ones;
    /// within the frame's caps, unexpired.
    pub fn records_to_send(&self, peer: PeerId, now: Instant, now_ms: u64) -> Records {
        let mut tables = self.tables();
        let old_too = tables.introduced.insert(peer);
        let mut rng = rand::rng();
        let hot = |learned: Instant| now.saturating_duration_since(learned) < self.rumour_window;
        let live = tables
            .providers
            .values()
            .flat_map(HashMap::values)
            .filter(|held| held.record.expires_ms > now_ms);
        let (hot_providers, old_providers): (Vec<_>, Vec<_>) =
            live.partition(|held| hot(held.learned));
        let providers = pick(
            hot_providers,
            old_providers,
            old_too,
            MAX_PROVIDER_RECORDS_PER_FRAME,
            &mut rng,
        );
        let (hot_peers, old_peers): (Vec<_>, Vec<_>) =
            tables.peers.values().partition(|held| hot(held.learned));
        let peers = pick(
            hot_peers,
            old_peers,
            old_too,
            MAX_PEER_RECORDS_PER_FRAME,
            &mut rng,
        );
        Records { providers, peers }
    }
}

/// Up to `cap` records: hot ones first (a random subset if too many), then, if `old_too`, old
/// ones at random.
fn pick<T: Clone>(
    hot: Vec<&Held<T>>,
    old: Vec<&Held<T>>,
    old_too: bool,
    cap: usize,
    rng: &mut impl rand::Rng,
) -> Vec<T> {
    let mut out: Vec<T> = if hot.len() > cap {
        hot.into_iter()
            .sample(rng, cap)
            .into_iter()
            .map(|h| h.record.clone())
            .collect()
    } else {
        hot.into_iter().map(|h| h.record.clone()).collect()
    };
    let room = if old_too {
        cap.saturating_sub(out.len())
    } else {
        0
    };
    out.extend(
        old.into_iter()
            .sample(rng, room)
            .into_iter()
            .map(|h| h.record.clone()),
    );
    out
}

#[cfg(test)]
mod tests;
