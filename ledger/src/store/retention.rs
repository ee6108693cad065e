//! Retention: a cap on stored third-party receipts (those the store's owner, this node, is not
//! part of), with eviction that keeps what is closest to the owner in the contribution graph.
//!
//! **Cheap under the cap.** The store counts third-party receipts as it applies them, so
//! [`Store::enforce_cap`] is a shared lock and two atomic loads (about 20 ns) while the count is
//! at most the cap. Over it, one pass evicts down to [`EVICT_TO_PERCENT`] of the cap, so passes
//! are rare: one per 5% of the cap of new pairs, not one per receipt.
//!
//! **Closeness.** A pass reads every stored receipt, builds the graph whose nodes are peers and
//! whose edges are the stored pairs, *undirected and unweighted*, and finds every peer's hop
//! distance from the owner by breadth-first search. A receipt's distance is the smaller of its
//! two parties'; peers the owner cannot reach are infinitely far. The farthest receipts go
//! first; among equals the smaller `bytes`, then the older `time_ms`, then the lower key (so a
//! pass is deterministic). Undirected, because standing flows both ways through a peer: whom the
//! owner's peers served, and who served them, both say how far a peer is from anything this node
//! can judge, and a peer that only ever downloaded is still a hop, not unreachable. Unweighted,
//! because bytes between third parties are what a sybil clique inflates for free; hops from the
//! owner cost it a real trade with someone near this node. Bytes only break ties.
//!
//! **Never evicted:** receipts the owner is part of (they do not count toward the cap at all),
//! and the receipt of any pair a stored conflict proof is about (proofs are never evicted either).
//!
//! **Tombstones.** An evicted pair leaves a tombstone (pair key → the seq it had) in its own sled
//! tree, and stays in gossip's sync index at that seq, so fingerprints still match peers that
//! hold the receipt and reconciliation does not ask for it again. [`Store::apply`] of that pair
//! at the same or a lower seq is `Applied::Stale` and stores nothing; a higher seq is a genuine
//! update: it is stored and clears the tombstone (a later pass may evict it again). Tombstones are
//! bounded too, by the cap (at least [`MIN_TOMBSTONES`]): past it the oldest are dropped, down to
//! the same 95%, and leave the sync index. A dropped tombstone's receipt may be pulled back by
//! gossip once, and is then evicted again by a later pass if it is still among the farthest.
//!
//! A conflict with an evicted receipt goes unnoticed (the store no longer holds it): the peer
//! that still holds it finds the conflict and floods the proof.
//!
//! Crash safety: an eviction writes the tombstone, then removes the receipt, then its
//! `by_downloader` entry. A crash in between leaves a receipt beside its tombstone (open keeps
//! the receipt and drops the tombstone) or an index entry without its receipt (harmless). Nothing
//! here is flushed: a lost eviction only means the next pass does it again.

use std::cmp::{Ordering, Reverse};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::TryLockError;
use std::sync::atomic::Ordering as AtomicOrdering;

use super::{META_OWNER, Store, decode, downloader_key, is_third_party, tombstone_key};
use crate::error::StoreError;
use crate::id::PeerId;
use crate::receipt::{Pair, Receipt};
use crate::sync::{KEY_BYTES, Key, pair_key};

/// A pass evicts down to this percentage of the cap, so the next one waits for 5% of the cap
/// in new pairs.
pub const EVICT_TO_PERCENT: u64 = 95;

/// Tombstones are kept up to the cap, but never bounded below this: with a tiny cap, evicted
/// receipts would otherwise come straight back by gossip.
pub const MIN_TOMBSTONES: u64 = 1024;

/// Evictions per hold of the store's gate: applies wait at most one batch.
const EVICT_BATCH: usize = 256;

/// What one [`Store::enforce_cap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Third-party receipts evicted (each left a tombstone).
    pub receipts: u64,
    /// Tombstones dropped to keep their number within bound.
    pub tombstones_dropped: u64,
    /// Third-party receipts held afterwards.
    pub third_party: u64,
}

/// What an evicted pair leaves: the seq it had, and its place in the order of evictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tombstone {
    pub(super) seq: u64,
    pub(super) order: u64,
}

impl Tombstone {
    const LEN: usize = 16;

    fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.order.to_be_bytes());
        out
    }

    pub(super) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::BadRecord {
            key: hex::encode(key),
            detail: format!("tombstone of {} bytes, expected {}", bytes.len(), Self::LEN),
        };
        let (seq, order) = bytes
            .split_first_chunk::<8>()
            .and_then(|(seq, rest)| Some((*seq, *rest.first_chunk::<8>()?)))
            .filter(|_| bytes.len() == Self::LEN)
            .ok_or_else(bad)?;
        Ok(Self {
            seq: u64::from_be_bytes(seq),
            order: u64::from_be_bytes(order),
        })
    }
}

/// A third-party receipt that may be evicted, as a pass ranks it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    uploader: u32,
    downloader: u32,
    /// Hops from the owner (`u32::MAX`: unreachable).
    distance: u32,
    seq: u64,
    bytes: u64,
    time_ms: u64,
}

/// What a pass learns from one read of the receipts.
struct Graph {
    peers: Vec<PeerId>,
    candidates: Vec<Candidate>,
    /// Third-party receipts seen, protected ones included.
    third_party: u64,
}

impl Store {
    /// The peer this store belongs to, if set ([`Store::set_owner`]); kept across restarts.
    pub fn owner(&self) -> Option<PeerId> {
        *self.gate_read()
    }

    /// Tells the store who this node is: receipts `owner` is part of are its own, never evicted
    /// and not counted as third-party. Persisted. A change recounts the third-party receipts
    /// (one pass over the keys, applies waiting); setting the same owner again costs nothing.
    pub fn set_owner(&self, owner: PeerId) -> Result<(), StoreError> {
        if self.owner() == Some(owner) {
            return Ok(());
        }
        let mut gate = self.gate_write();
        if *gate == Some(owner) {
            return Ok(());
        }
        self.db
            .insert(META_OWNER, owner.as_bytes())
            .map_err(self.backend())?;
        let mut third_party = 0u64;
        for key in self.receipts.iter().keys() {
            let key = key.map_err(self.backend())?;
            let parties = (super::peer_at(&key, 0), super::peer_at(&key, 32));
            if parties.0 != Some(owner) && parties.1 != Some(owner) {
                third_party += 1;
            }
        }
        self.third_party.store(third_party, AtomicOrdering::SeqCst);
        self.retry_above.store(0, AtomicOrdering::SeqCst);
        *gate = Some(owner);
        Ok(())
    }

    /// Stored receipts the owner is not part of (every receipt while there is no owner).
    pub fn third_party_count(&self) -> u64 {
        self.third_party.load(AtomicOrdering::SeqCst)
    }

    /// Tombstones held: evicted pairs that gossip will not bring back at their evicted seq.
    pub fn tombstone_count(&self) -> u64 {
        self.tombstone_count.load(AtomicOrdering::SeqCst)
    }

    /// Receipts evicted since the store was opened.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total.load(AtomicOrdering::SeqCst)
    }

    /// Keeps at most `max_third_party` receipts between other peers, `owner` being this node
    /// (set as by [`Store::set_owner`]). At or under the cap it returns at once; over it, one
    /// pass evicts the receipts farthest from `owner` down to [`EVICT_TO_PERCENT`] of the cap and
    /// bounds the tombstones (see the module docs). The node calls it after ingesting a gossip
    /// batch, on a blocking thread: a pass reads every receipt. If another thread's pass is
    /// running, this returns at once and leaves the work to it. Not flushed.
    pub fn enforce_cap(&self, owner: PeerId, max_third_party: u64) -> Result<Evicted, StoreError> {
        self.set_owner(owner)?;
        let held = self.third_party_count();
        let idle = Evicted {
            third_party: held,
            ..Evicted::default()
        };
        if held <= max_third_party || held <= self.retry_above.load(AtomicOrdering::SeqCst) {
            return Ok(idle);
        }
        let _pass = match self.evicting.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(idle),
        };
        let target = low_water(max_third_party);
        let (receipts, exhausted) = self.evict_down_to(owner, target)?;
        let third_party = self.third_party_count();
        // Out of evictable receipts (the rest are protected): wait for 5% of the cap more
        // before scanning again, rather than rescanning after every batch.
        let retry_above = if exhausted {
            third_party.saturating_add((max_third_party - target).max(1))
        } else {
            0
        };
        self.retry_above.store(retry_above, AtomicOrdering::SeqCst);
        let tombstones_dropped = self.trim_tombstones(max_third_party.max(MIN_TOMBSTONES))?;
        Ok(Evicted {
            receipts,
            tombstones_dropped,
            third_party,
        })
    }

    /// One pass: evicts the farthest third-party receipts until at most `target` are left or
    /// only protected ones remain. Returns how many it evicted and whether it ran out of
    /// candidates.
    fn evict_down_to(&self, owner: PeerId, target: u64) -> Result<(u64, bool), StoreError> {
        let graph = self.read_graph(owner)?;
        let excess =
            usize::try_from(graph.third_party.saturating_sub(target)).unwrap_or(usize::MAX);
        let mut victims = graph.candidates;
        let exhausted = excess > victims.len();
        let count = excess.min(victims.len());
        if count == 0 {
            return Ok((0, exhausted));
        }
        let peers = &graph.peers;
        let rank = |a: &Candidate, b: &Candidate| -> Ordering {
            let key = |c: &Candidate| {
                (
                    Reverse(c.distance),
                    c.bytes,
                    c.time_ms,
                    peers[c.uploader as usize],
                    peers[c.downloader as usize],
                )
            };
            key(a).cmp(&key(b))
        };
        if count < victims.len() {
            victims.select_nth_unstable_by(count - 1, rank);
            victims.truncate(count);
        }
        // Farthest first, so the oldest tombstones (dropped first) are the farthest too.
        victims.sort_unstable_by(rank);
        let mut evicted = 0u64;
        for batch in victims.chunks(EVICT_BATCH) {
            // Exclusive: no apply is between its read and its write of a pair while this runs.
            let owner_now = self.gate_write();
            for victim in batch {
                let pair = Pair {
                    uploader: peers[victim.uploader as usize],
                    downloader: peers[victim.downloader as usize],
                };
                if self.evict(&pair, victim.seq, *owner_now)? {
                    evicted += 1;
                }
            }
        }
        Ok((evicted, exhausted))
    }

    /// Evicts `pair`'s receipt if it is still at `seq`, still third-party and still has no
    /// conflict proof. The caller holds the gate exclusively.
    fn evict(&self, pair: &Pair, seq: u64, owner: Option<PeerId>) -> Result<bool, StoreError> {
        let key = pair_key(pair);
        if !is_third_party(pair, owner) {
            return Ok(false);
        }
        let Some(bytes) = self.receipts.get(key).map_err(self.backend())? else {
            return Ok(false);
        };
        // Updated since the pass read it: fresh news, kept.
        if decode::<Receipt>(&key, &bytes)?.seq != seq {
            return Ok(false);
        }
        if self
            .conflicts
            .scan_prefix(key)
            .next()
            .transpose()
            .map_err(self.backend())?
            .is_some()
        {
            return Ok(false);
        }
        let order = self.next_tombstone.fetch_add(1, AtomicOrdering::SeqCst);
        let tombstone = Tombstone { seq, order };
        // Tombstone first: a crash after it leaves the receipt beside it, which open mends.
        let fresh = self
            .tombstones
            .insert(key, &tombstone.encode())
            .map_err(self.backend())?
            .is_none();
        if fresh {
            self.tombstone_count.fetch_add(1, AtomicOrdering::SeqCst);
        }
        self.receipts.remove(key).map_err(self.backend())?;
        self.by_downloader
            .remove(downloader_key(pair))
            .map_err(self.backend())?;
        self.third_party.fetch_sub(1, AtomicOrdering::SeqCst);
        self.evicted_total.fetch_add(1, AtomicOrdering::SeqCst);
        // The sync index keeps (key, seq) as it was: the tombstone's entry.
        Ok(true)
    }

    /// Reads every stored receipt once: the graph's edges, the owner's hop distances, and the
    /// evictable third-party receipts with theirs.
    fn read_graph(&self, owner: PeerId) -> Result<Graph, StoreError> {
        let mut protected: HashSet<Key> = HashSet::new();
        for key in self.conflicts.iter().keys() {
            let key = key.map_err(self.backend())?;
            if let Some(pair) = key.get(..KEY_BYTES).and_then(|k| Key::try_from(k).ok()) {
                protected.insert(pair);
            }
        }
        let mut index: HashMap<PeerId, u32> = HashMap::new();
        let mut peers: Vec<PeerId> = Vec::new();
        let mut intern = |peer: PeerId| -> u32 {
            *index.entry(peer).or_insert_with(|| {
                peers.push(peer);
                // More than 2^32 peers would need 2^31 receipts: far past any cap.
                u32::try_from(peers.len() - 1).unwrap_or(u32::MAX)
            })
        };
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let mut candidates = Vec::new();
        let mut third_party = 0u64;
        for entry in self.receipts.iter() {
            let (key, value) = entry.map_err(self.backend())?;
            let receipt: Receipt = decode(&key, &value)?;
            let (uploader, downloader) = (intern(receipt.uploader), intern(receipt.downloader));
            edges.push((uploader, downloader));
            if !is_third_party(&receipt.pair(), Some(owner)) {
                continue;
            }
            third_party += 1;
            if protected.contains(&pair_key(&receipt.pair())) {
                continue;
            }
            candidates.push(Candidate {
                uploader,
                downloader,
                distance: u32::MAX,
                seq: receipt.seq,
                bytes: receipt.bytes,
                time_ms: receipt.time_ms,
            });
        }
        let start = index.get(&owner).copied();
        let distance = hop_distances(peers.len(), &edges, start);
        let at = |peer: u32| distance.get(peer as usize).copied().unwrap_or(u32::MAX);
        for candidate in &mut candidates {
            candidate.distance = at(candidate.uploader).min(at(candidate.downloader));
        }
        Ok(Graph {
            peers,
            candidates,
            third_party,
        })
    }

    /// Drops the oldest tombstones, down to 95% of `max`, when there are more than `max`; their
    /// keys leave the sync index. Returns how many it dropped.
    fn trim_tombstones(&self, max: u64) -> Result<u64, StoreError> {
        if self.tombstone_count() <= max {
            return Ok(0);
        }
        let target = low_water(max);
        let mut all: Vec<(u64, Key)> = Vec::new();
        for entry in self.tombstones.iter() {
            let (key, value) = entry.map_err(self.backend())?;
            let key = tombstone_key(&key)?;
            all.push((Tombstone::decode(&key, &value)?.order, key));
        }
        let excess = usize::try_from((all.len() as u64).saturating_sub(target)).unwrap_or(0);
        if excess == 0 {
            return Ok(0);
        }
        if excess < all.len() {
            all.select_nth_unstable(excess - 1);
            all.truncate(excess);
        }
        let mut dropped = 0u64;
        for batch in all.chunks(EVICT_BATCH) {
            let _gate = self.gate_write();
            for (_, key) in batch {
                // An apply may have cleared it with a newer receipt since the read.
                let Some(bytes) = self.tombstones.remove(key).map_err(self.backend())? else {
                    continue;
                };
                self.tombstone_count.fetch_sub(1, AtomicOrdering::SeqCst);
                dropped += 1;
                let tombstone = Tombstone::decode(key, &bytes)?;
                if !self.receipts.contains_key(key).map_err(self.backend())? {
                    let mut items = self.sync_items();
                    if items.get(key) == Some(tombstone.seq) {
                        items.remove(key);
                    }
                }
            }
        }
        Ok(dropped)
    }

    /// Checks every tombstone decodes and none sits above a stored receipt of its pair (one at or
    /// below is an apply or a crash caught in between, mended at open).
    pub(super) fn check_tombstones(
        &self,
        report: &mut super::CheckReport,
    ) -> Result<(), StoreError> {
        for entry in self.tombstones.iter() {
            let (key, value) = entry.map_err(self.backend())?;
            report.tombstones += 1;
            let decoded =
                tombstone_key(&key).and_then(|key| Ok((key, Tombstone::decode(&key, &value)?)));
            let (key, tombstone) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            let held = self.receipts.get(key).map_err(self.backend())?;
            if let Some(held) = held
                && let Ok(held) = decode::<Receipt>(&key, &held)
                && held.seq < tombstone.seq
            {
                report.problems.push(format!(
                    "receipt {} → {} seq {} is stored below its tombstone's seq {}",
                    held.uploader, held.downloader, held.seq, tombstone.seq
                ));
            }
        }
        Ok(())
    }
}

/// [`EVICT_TO_PERCENT`] of `max`, rounded down, without overflow.
fn low_water(max: u64) -> u64 {
    max / 100 * EVICT_TO_PERCENT + max % 100 * EVICT_TO_PERCENT / 100
}

/// Hop distance of every peer from `start` over the undirected `edges` (`u32::MAX`: not
/// reachable, or no start).
fn hop_distances(peers: usize, edges: &[(u32, u32)], start: Option<u32>) -> Vec<u32> {
    let mut distance = vec![u32::MAX; peers];
    let Some(start) = start else {
        return distance;
    };
    // Compressed adjacency: each peer's neighbours in one slice of `neighbours`.
    let mut offsets = vec![0usize; peers + 1];
    for &(a, b) in edges {
        offsets[a as usize + 1] += 1;
        offsets[b as usize + 1] += 1;
    }
    for i in 0..peers {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut neighbours = vec![0u32; offsets[peers]];
    for &(a, b) in edges {
        neighbours[fill[a as usize]] = b;
        fill[a as usize] += 1;
        neighbours[fill[b as usize]] = a;
        fill[b as usize] += 1;
    }
    let mut queue = VecDeque::from([start]);
    distance[start as usize] = 0;
    while let Some(peer) = queue.pop_front() {
        let next = distance[peer as usize].saturating_add(1);
        for &neighbour in &neighbours[offsets[peer as usize]..offsets[peer as usize + 1]] {
            if distance[neighbour as usize] == u32::MAX {
                distance[neighbour as usize] = next;
                queue.push_back(neighbour);
            }
        }
    }
    distance
}
