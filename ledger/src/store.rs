//! The receipt store: the latest receipt of every pair this node knows, the conflict proofs and
//! the keys they mark dishonest, on disk.
//!
//! sled is the backend, and stays behind this module: callers see [`Store`] and [`StoreError`]
//! only, so the backend can change without touching them. Writes become durable at
//! [`Store::flush`]; flush before sending your own signature on a receipt.
//!
//! Two weaknesses of sled 0.34 are handled here. A kill while sled writes its start-up snapshot
//! leaves an incomplete `snap.*.generating` file that makes the next open fail with
//! `Corruption`; such a file is never complete (sled renames it when done), so [`Store::open`]
//! removes it, under the store's own lock, before opening. sled's default cache is 1 GiB;
//! [`StoreConfig::cache_capacity`] bounds it. And sled recovers the longest intact prefix of its
//! log, so damage in the middle of a file silently drops every record after it; the store keeps a
//! witness outside sled (the `FLUSHED` file: the sum of all latest seqs at the last flush, which
//! only grows) and refuses to open a database that holds less than its witness says was durable.
//!
//! Receipts between other peers ("third-party" receipts) are capped; the farthest from this node
//! in the contribution graph are evicted and leave tombstones behind ([`retention`]).

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};

use crate::error::StoreError;
use crate::id::{NetworkId, PeerId};
use crate::receipt::{ConflictProof, Order, Pair, Receipt, ReceiptBody, VerifiedReceipt};
use crate::sync::{Key, SyncItems, pair_key};

pub use retention::Evicted;
use retention::Tombstone;

pub mod retention;

const LOCK_FILE: &str = "LOCK";
const WITNESS_FILE: &str = "FLUSHED";
const META_SEQ_SUM: &[u8] = b"seq_sum";
const DB_DIR: &str = "db";
const META_NETWORK: &[u8] = b"network_id";
const META_FORMAT: &[u8] = b"format";
/// The peer this store belongs to (see [`Store::set_owner`]): its receipts are never evicted.
const META_OWNER: &[u8] = b"owner";
const FORMAT_VERSION: &[u8] = b"1";

/// How the store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of page cache the backend may keep in memory.
    pub cache_capacity: u64,
    /// How long opening waits for the store's lock before it reports the store as in use. A
    /// process that has just exited, or a sibling forked by a multi-threaded program that has
    /// not reached `exec` yet, can hold the lock for a moment; a running node holds it for good.
    pub lock_wait: std::time::Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 64 * 1024 * 1024,
            lock_wait: std::time::Duration::from_millis(500),
        }
    }
}

/// A trade agreement as [`Store::put_agreement`] kept it: (trade id, encoding).
pub type StoredAgreement = ([u8; 32], Vec<u8>);

/// What [`Store::apply`] did with a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored as the pair's latest; `replaced` is the seq it superseded, if any.
    New {
        /// Seq of the superseded receipt.
        replaced: Option<u64>,
    },
    /// The store already held this statement.
    Duplicate,
    /// The store holds a newer receipt of this pair; nothing changed.
    Stale,
    /// Contradicts the held receipt: the proof is stored and both keys are now dishonest. The
    /// held receipt stays the pair's latest.
    Conflict(Box<ConflictProof>),
}

/// What [`Store::ingest`] did with one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// It verified and was applied with this outcome.
    Applied(Applied),
    /// It did not verify, and was not applied.
    Rejected(crate::error::VerifyError),
}

/// A peer's totals over the receipts it is part of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes the peer uploaded to others.
    pub bytes_given: u64,
    /// Credits others owe the peer for them.
    pub credits_earned: u64,
    /// Bytes the peer downloaded from others.
    pub bytes_received: u64,
    /// Credits the peer owes others for them.
    pub credits_spent: u64,
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Latest receipts held, one per pair.
    pub pairs: u64,
    /// Receipts checked: the latest ones plus the two in each conflict proof.
    pub receipts: u64,
    /// Conflict proofs held.
    pub conflicts: u64,
    /// Keys marked dishonest.
    pub dishonest: u64,
    /// Of `pairs`, those this store's owner is not part of (all of them while it has no owner).
    pub third_party: u64,
    /// Tombstones of evicted receipts held.
    pub tombstones: u64,
    /// Problems found, each described; empty for a sound store.
    pub problems: Vec<String>,
}

/// The receipt store. Cheap to share between threads by reference; all methods take `&self`.
pub struct Store {
    path: PathBuf,
    network: NetworkId,
    db: sled::Db,
    /// uploader ‖ downloader → postcard(Receipt)
    receipts: sled::Tree,
    /// downloader ‖ uploader → () : finds the pairs a peer downloads in.
    by_downloader: sled::Tree,
    /// uploader ‖ downloader ‖ proof id → postcard(ConflictProof)
    conflicts: sled::Tree,
    /// key → id of a proof against it
    dishonest: sled::Tree,
    /// uploader ‖ downloader → postcard(ReceiptBody): the last body this node proposed as
    /// downloader, so a restart never reuses its seq.
    proposals: sled::Tree,
    /// uploader ‖ downloader → seq ‖ eviction order (big-endian u64s): the tombstones of evicted
    /// receipts, so gossip does not bring them straight back.
    tombstones: sled::Tree,
    /// trade id → the encoding of a trade agreement this node signed, opaque here: the node's
    /// market keeps its agreed trades across restarts with it.
    agreements: sled::Tree,
    /// uploader ‖ downloader → () : pairs in which this node sent bytes before their first
    /// receipt, marked durably before those bytes left, so that after a restart the uploader
    /// still accepts a claim for them. Removed once the pair has a receipt or the bytes are
    /// written off.
    unreceipted: sled::Tree,
    /// The owner (this node), if known. Every apply holds it shared; an eviction step and an
    /// owner change hold it exclusively, so neither interleaves with an apply's read-then-write.
    gate: RwLock<Option<PeerId>>,
    /// Stored receipts the owner is not part of; kept by apply, eviction and owner changes.
    third_party: AtomicU64,
    /// Tombstones held.
    tombstone_count: AtomicU64,
    /// The eviction order the next tombstone gets: oldest tombstones are dropped first.
    next_tombstone: AtomicU64,
    /// Receipts evicted since open.
    evicted_total: AtomicU64,
    /// Enforcement skips its pass while the count is at most this: set when the last pass ran
    /// out of evictable receipts (the rest are protected), so it does not rescan every batch.
    retry_above: AtomicU64,
    /// Held by the one eviction pass that runs at a time.
    evicting: Mutex<()>,
    /// Sum of the seqs of all latest receipts; grows with every new receipt. Written to the
    /// database and then to the witness file at each flush.
    seq_sum: AtomicU64,
    /// The sum the witness file holds. Held while the file is replaced: concurrent flushes
    /// would otherwise race on the temporary file (one's rename finding it gone), and a slower
    /// one could put back a smaller sum.
    witnessed: Mutex<u64>,
    /// Gossip's index of the latest receipts (pair key → seq), built at open and kept in step
    /// by every apply, so a sync never walks the database.
    sync_items: Mutex<SyncItems>,
    /// Held for the store's lifetime: one process per store.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn peer_at(key: &[u8], offset: usize) -> Option<PeerId> {
    key.get(offset..offset + 32)
        .and_then(|slice| slice.try_into().ok())
        .map(PeerId)
}

impl Store {
    /// Opens (or creates) the store in directory `path` for `network`. Fails with a clear error
    /// if another process holds it, if it belongs to another network, or if it is damaged.
    pub fn open(
        path: impl AsRef<Path>,
        network: NetworkId,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&path).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(io)?;
        let mut waited = std::time::Duration::ZERO;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if waited < config.lock_wait => {
                    // Polling: std offers no lock with a timeout.
                    let step = std::time::Duration::from_millis(20);
                    std::thread::sleep(step);
                    waited += step;
                }
                Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path }),
                Err(TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        let db_path = path.join(DB_DIR);
        remove_incomplete_snapshots(&db_path).map_err(io)?;
        let witness = read_witness(&path)?;
        let db = open_backend(&path, &db_path, config)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| backend_error(&path, e));
        let seq_sum = match db.get(META_SEQ_SUM).map_err(|e| backend_error(&path, e))? {
            Some(bytes) => u64_from(&bytes, "seq_sum")?,
            None => 0,
        };
        if seq_sum < witness {
            return Err(StoreError::Corrupt {
                path,
                detail: format!(
                    "it holds less than it had made durable (seq sum {seq_sum}, {witness} at the last flush): a damaged file cut records off"
                ),
            });
        }
        let owner = match db.get(META_OWNER).map_err(|e| backend_error(&path, e))? {
            Some(bytes) => Some(
                peer_at(&bytes, 0)
                    .filter(|_| bytes.len() == 32)
                    .ok_or_else(|| StoreError::BadRecord {
                        key: "owner".into(),
                        detail: format!("{} bytes, expected 32", bytes.len()),
                    })?,
            ),
            None => None,
        };
        let store = Self {
            seq_sum: AtomicU64::new(seq_sum),
            witnessed: Mutex::new(0),
            sync_items: Mutex::new(SyncItems::new()),
            receipts: tree("receipts")?,
            by_downloader: tree("by_downloader")?,
            conflicts: tree("conflicts")?,
            dishonest: tree("dishonest")?,
            proposals: tree("proposals")?,
            tombstones: tree("tombstones")?,
            agreements: tree("agreements")?,
            unreceipted: tree("unreceipted")?,
            gate: RwLock::new(owner),
            third_party: AtomicU64::new(0),
            tombstone_count: AtomicU64::new(0),
            next_tombstone: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
            retry_above: AtomicU64::new(0),
            evicting: Mutex::new(()),
            path: path.clone(),
            network,
            db,
            _lock: lock,
        };
        store.check_meta()?;
        store.repair_dishonest()?;
        store.index_at_open()?;
        Ok(store)
    }

    fn check_meta(&self) -> Result<(), StoreError> {
        let err = |e| backend_error(&self.path, e);
        match self.db.get(META_NETWORK).map_err(err)? {
            Some(found) if found.as_ref() != self.network.as_bytes() => {
                let found: [u8; 32] =
                    found
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::BadRecord {
                            key: "network_id".into(),
                            detail: format!("{} bytes, expected 32", found.len()),
                        })?;
                Err(StoreError::WrongNetwork {
                    path: self.path.clone(),
                    expected: self.network,
                    found: NetworkId(found),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.db
                    .insert(META_NETWORK, self.network.as_bytes())
                    .map_err(err)?;
                self.db.insert(META_FORMAT, FORMAT_VERSION).map_err(err)?;
                self.flush()
            }
        }
    }

    /// A proof is written before the flags it implies; a crash between the two is mended here.
    fn repair_dishonest(&self) -> Result<(), StoreError> {
        for proof in self.conflicts()? {
            self.flag_dishonest(&proof)?;
        }
        Ok(())
    }

    /// Builds gossip's index from the receipts and the tombstones, and counts both. A tombstone
    /// beside a stored receipt of its pair (a crash between writing one and removing the other)
    /// is dropped: the receipt wins, and a later pass may evict it again.
    fn index_at_open(&self) -> Result<(), StoreError> {
        let owner = self.owner();
        let mut items: Vec<(Key, u64)> = Vec::new();
        let mut third_party = 0u64;
        for receipt in self.iter() {
            let receipt = receipt?;
            if is_third_party(&receipt.pair(), owner) {
                third_party += 1;
            }
            items.push((pair_key(&receipt.pair()), receipt.seq));
        }
        // Already in key order unless a record sits under another pair's key (check reports it).
        items.sort_unstable();
        let stored = items.len();
        let mut tombstones = 0u64;
        let mut next_order = 0u64;
        for entry in self.tombstones.iter() {
            let (key, value) = entry.map_err(self.backend())?;
            let key = tombstone_key(&key)?;
            let tombstone = Tombstone::decode(&key, &value)?;
            let has_receipt = items[..stored]
                .binary_search_by(|(held, _)| held.cmp(&key))
                .is_ok();
            if has_receipt {
                self.tombstones.remove(key).map_err(self.backend())?;
                continue;
            }
            tombstones += 1;
            next_order = next_order.max(tombstone.order.saturating_add(1));
            items.push((key, tombstone.seq));
        }
        self.third_party.store(third_party, AtomicOrdering::SeqCst);
        self.tombstone_count
            .store(tombstones, AtomicOrdering::SeqCst);
        self.next_tombstone
            .store(next_order, AtomicOrdering::SeqCst);
        *self.sync_items() = items.into_iter().collect();
        Ok(())
    }

    /// Gossip's index of what this store holds: for every pair, the seq of its latest receipt,
    /// and for every evicted pair that still has a tombstone, the seq it had (see
    /// [`crate::sync`] and [`retention`]). Kept up to date by [`Store::apply`] and eviction; hold
    /// the guard briefly, as applies wait for it.
    pub fn sync_items(&self) -> MutexGuard<'_, SyncItems> {
        self.sync_items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn gate_read(&self) -> RwLockReadGuard<'_, Option<PeerId>> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn gate_write(&self) -> RwLockWriteGuard<'_, Option<PeerId>> {
        self.gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn backend(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        |e| backend_error(&self.path, e)
    }

    /// The network this store holds receipts of.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies a verified receipt. Returns whether it was new, a duplicate, stale, or a conflict
    /// (then the proof is stored and both keys flagged). Durable only after [`Store::flush`].
    ///
    /// A third-party receipt whose pair was evicted at a seq at least as high is [`Applied::Stale`]
    /// and not stored; a higher seq is a genuine update, stored, and clears the tombstone.
    pub fn apply(&self, receipt: &VerifiedReceipt) -> Result<Applied, StoreError> {
        // Shared: evictions wait until this apply is done, so it never reads a receipt that is
        // removed before its compare-and-swap lands, nor writes an index entry eviction misses.
        let owner = self.gate_read();
        let pair = receipt.pair();
        let key = pair_key(&pair);
        let encoded = encode(receipt.receipt());
        let third_party = is_third_party(&pair, *owner);
        // Index first: an index entry without its receipt (after a crash) is harmless.
        let index_key = downloader_key(&pair);
        loop {
            let held = self.receipts.get(key).map_err(self.backend())?;
            let mut tombstone = None;
            let replaced = match &held {
                None => {
                    tombstone = self.tombstone(&key)?;
                    // Own receipts are never held back: a tombstone of an own pair is left from
                    // before the owner was set, and this node's chains must go on.
                    if third_party && tombstone.is_some_and(|t| t.seq >= receipt.seq) {
                        return Ok(Applied::Stale);
                    }
                    self.by_downloader
                        .insert(index_key, &[])
                        .map_err(self.backend())?;
                    None
                }
                Some(bytes) => {
                    let held = decode::<Receipt>(&key, bytes)?;
                    match held.body().order(&receipt.body()) {
                        Order::Same => return Ok(Applied::Duplicate),
                        Order::Older => return Ok(Applied::Stale),
                        Order::Newer => Some(held.seq),
                        Order::Conflict => {
                            return self.record_conflict(held, *receipt.receipt());
                        }
                    }
                }
            };
            let was_empty = held.is_none();
            let swapped = self
                .receipts
                .compare_and_swap(key, held, Some(encoded.as_slice()))
                .map_err(self.backend())?;
            if swapped.is_ok() {
                let before = replaced.or(tombstone.map(|t| t.seq)).unwrap_or(0);
                let grown = receipt.seq.saturating_sub(before);
                self.seq_sum.fetch_add(grown, AtomicOrdering::SeqCst);
                if was_empty && third_party {
                    self.third_party.fetch_add(1, AtomicOrdering::SeqCst);
                }
                if tombstone.is_some()
                    && self
                        .tombstones
                        .remove(key)
                        .map_err(self.backend())?
                        .is_some()
                {
                    self.tombstone_count.fetch_sub(1, AtomicOrdering::SeqCst);
                }
                let mut items = self.sync_items();
                if tombstone.is_some_and(|t| t.seq >= receipt.seq) {
                    // Only an own pair gets here: the index must not claim the evicted seq.
                    items.remove(&key);
                }
                // Keeps the higher seq if two applies of one pair race here.
                items.insert(key, receipt.seq);
                return Ok(Applied::New { replaced });
            }
            // Another thread changed the pair in between: classify again.
        }
    }

    /// The tombstone of `key`'s pair, if it was evicted.
    fn tombstone(&self, key: &Key) -> Result<Option<Tombstone>, StoreError> {
        if self.tombstone_count.load(AtomicOrdering::SeqCst) == 0 {
            return Ok(None);
        }
        self.tombstones
            .get(key)
            .map_err(self.backend())?
            .map(|bytes| Tombstone::decode(key, &bytes))
            .transpose()
    }

    /// Verifies `receipts` in one batch and applies those that verify, in order: the path for
    /// small gossip batches. Returns, per input receipt, what became of it. Not flushed.
    pub fn ingest(&self, receipts: &[Receipt]) -> Result<Vec<Ingested>, StoreError> {
        let verdict = crate::receipt::verify_batch(receipts, &self.network);
        self.apply_verdict(receipts.len(), verdict)
    }

    /// Ingests a stream of chunks, the path for imports and large gossip batches: each chunk is
    /// batch-verified on a second thread while this thread applies and flushes the chunk before,
    /// so signature checking, not the store, bounds the rate. `next_chunk` is called on this
    /// thread until it returns `None`; `on_chunk` gets each chunk's outcomes in order, tagged as
    /// they came, after that chunk was flushed (so it may acknowledge them).
    ///
    /// The helper thread is scoped: it has ended when this returns, error or not.
    pub fn ingest_chunks<T: Send, E: From<StoreError>>(
        &self,
        mut next_chunk: impl FnMut() -> Result<Option<Vec<(T, Receipt)>>, E>,
        mut on_chunk: impl FnMut(Vec<(T, Ingested)>) -> Result<(), E>,
    ) -> Result<(), E> {
        let network = self.network;
        std::thread::scope(|scope| {
            // Bounded both ways: at most one chunk waits for, and one leaves, the verifier.
            let (jobs, job_queue) = mpsc::sync_channel::<Vec<(T, Receipt)>>(1);
            let (verdicts, verdict_queue) = mpsc::sync_channel(1);
            scope.spawn(move || {
                for chunk in job_queue {
                    let receipts: Vec<Receipt> = chunk.iter().map(|(_, r)| *r).collect();
                    let verdict = crate::receipt::verify_batch(&receipts, &network);
                    if verdicts.send((chunk, verdict)).is_err() {
                        return;
                    }
                }
            });
            let mut in_flight = 0usize;
            loop {
                let next = next_chunk()?;
                let more = next.is_some();
                if let Some(chunk) = next {
                    jobs.send(chunk).map_err(|_| StoreError::VerifierStopped)?;
                    in_flight += 1;
                }
                // Leave one chunk with the verifier while the one before is written; at the end,
                // drain.
                while in_flight > usize::from(more) {
                    let (chunk, verdict) = verdict_queue
                        .recv()
                        .map_err(|_| StoreError::VerifierStopped)?;
                    in_flight -= 1;
                    let outcomes = self.apply_verdict(chunk.len(), verdict)?;
                    self.flush()?;
                    let tags = chunk.into_iter().map(|(tag, _)| tag);
                    on_chunk(tags.zip(outcomes).collect())?;
                }
                if !more {
                    return Ok(());
                }
            }
        })
    }

    /// Applies what `verdict` verified out of `len` receipts, and says per receipt, in input
    /// order, what became of it.
    fn apply_verdict(
        &self,
        len: usize,
        verdict: crate::receipt::BatchVerdict,
    ) -> Result<Vec<Ingested>, StoreError> {
        let mut out: Vec<Option<Ingested>> = vec![None; len];
        for (index, why) in verdict.rejected {
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(Ingested::Rejected(why));
            }
        }
        let mut verified = verdict.verified.iter();
        for slot in out.iter_mut().filter(|slot| slot.is_none()) {
            if let Some(receipt) = verified.next() {
                *slot = Some(Ingested::Applied(self.apply(receipt)?));
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn record_conflict(&self, held: Receipt, incoming: Receipt) -> Result<Applied, StoreError> {
        let proof = match ConflictProof::new(held, incoming) {
            Ok(proof) => proof,
            // `order` said Conflict, so `new` agrees; stay total all the same.
            Err(_) => return Ok(Applied::Stale),
        };
        self.store_conflict(&proof)?;
        Ok(Applied::Conflict(Box::new(proof)))
    }

    /// Stores a verified conflict proof (one received by gossip, say) and flags both keys.
    /// Returns false if it was already held. The caller verifies it first
    /// ([`ConflictProof::verify`]). The receipt held for the proof's pair is never evicted.
    pub fn add_conflict(&self, proof: &ConflictProof) -> Result<bool, StoreError> {
        // Shared, so an eviction step that checks for proofs sees this one or runs after it.
        let _gate = self.gate_read();
        self.store_conflict(proof)
    }

    /// [`Store::add_conflict`] for callers that hold the gate already (apply).
    fn store_conflict(&self, proof: &ConflictProof) -> Result<bool, StoreError> {
        let mut key = Vec::with_capacity(96);
        key.extend_from_slice(&pair_key(&proof.pair()));
        key.extend_from_slice(&proof.id());
        let fresh = self
            .conflicts
            .insert(key, encode(proof))
            .map_err(self.backend())?
            .is_none();
        self.flag_dishonest(proof)?;
        Ok(fresh)
    }

    fn flag_dishonest(&self, proof: &ConflictProof) -> Result<(), StoreError> {
        let pair = proof.pair();
        for peer in [pair.uploader, pair.downloader] {
            self.dishonest
                .compare_and_swap(
                    peer.as_bytes(),
                    None as Option<&[u8]>,
                    Some(&proof.id()[..]),
                )
                .map_err(self.backend())?
                .ok();
        }
        Ok(())
    }

    /// Records a body this node is about to propose as downloader (flush before sending it).
    /// Keeps the one with the highest seq.
    pub fn record_proposal(&self, body: &ReceiptBody) -> Result<(), StoreError> {
        let key = pair_key(&body.pair());
        let encoded = encode(body);
        self.proposals
            .fetch_and_update(key, |held| {
                let newer = held
                    .and_then(|bytes| postcard::from_bytes::<ReceiptBody>(bytes).ok())
                    .is_none_or(|held| held.seq < body.seq);
                if newer {
                    Some(encoded.clone())
                } else {
                    held.map(<[u8]>::to_vec)
                }
            })
            .map_err(self.backend())?;
        Ok(())
    }

    /// The last body this node proposed for `pair`, to resume a
    /// [`crate::pair::DownloaderPair`] after a restart.
    pub fn last_proposal(&self, pair: &Pair) -> Result<Option<ReceiptBody>, StoreError> {
        let key = pair_key(pair);
        self.proposals
            .get(key)
            .map_err(self.backend())?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    /// Keeps `encoded`, a trade agreement this node signed, under its trade `id` (flush before
    /// the signature leaves). The ledger does not read it.
    pub fn put_agreement(&self, id: &[u8; 32], encoded: &[u8]) -> Result<(), StoreError> {
        self.agreements
            .insert(id, encoded)
            .map_err(self.backend())?;
        Ok(())
    }

    /// Every agreement kept.
    pub fn agreements(&self) -> Result<Vec<StoredAgreement>, StoreError> {
        self.agreements
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(self.backend())?;
                let id = <[u8; 32]>::try_from(key.as_ref()).map_err(|_| StoreError::BadRecord {
                    key: "agreement".into(),
                    detail: format!("a key of {} bytes, expected 32", key.len()),
                })?;
                Ok((id, value.to_vec()))
            })
            .collect()
    }

    /// Forgets agreement `id` (its trade is over).
    pub fn remove_agreement(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        self.agreements.remove(id).map_err(self.backend())?;
        Ok(())
    }

    /// Marks that this node, the uploader of `pair`, is about to send bytes the pair has no
    /// receipt for yet (flush before sending them). After a restart the uploader has lost its
    /// count of them; the mark tells it the downloader may claim some
    /// ([`crate::pair::UploaderPair::with_uncounted`]), where a pair never sent anything must
    /// refuse every claim.
    pub fn mark_unreceipted(&self, pair: &Pair) -> Result<(), StoreError> {
        self.unreceipted
            .insert(pair_key(pair), &[])
            .map_err(self.backend())?;
        Ok(())
    }

    /// Whether [`Store::mark_unreceipted`] marked `pair` and nothing has unmarked it.
    pub fn is_unreceipted(&self, pair: &Pair) -> Result<bool, StoreError> {
        self.unreceipted
            .contains_key(pair_key(pair))
            .map_err(self.backend())
    }

    /// Removes `pair`'s mark: it has a receipt now, or what was sent unreceipted was written
    /// off. Needs no flush: a mark a crash leaves behind only allows claims for bytes that were
    /// sent.
    pub fn unmark_unreceipted(&self, pair: &Pair) -> Result<(), StoreError> {
        self.unreceipted
            .remove(pair_key(pair))
            .map_err(self.backend())?;
        Ok(())
    }

    /// Pairs marked by [`Store::mark_unreceipted`].
    pub fn unreceipted_count(&self) -> usize {
        self.unreceipted.len()
    }

    /// Makes every write so far durable. Call before acknowledging a receipt to anyone.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Every apply counted here wrote its receipt before counting it, so the sum written
        // now never exceeds what this flush makes durable.
        let seq_sum = self.seq_sum.load(AtomicOrdering::SeqCst);
        self.db
            .insert(META_SEQ_SUM, &seq_sum.to_be_bytes())
            .map_err(self.backend())?;
        self.db.flush().map_err(self.backend())?;
        let mut witnessed = self
            .witnessed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seq_sum <= *witnessed && seq_sum != 0 {
            // A flush no older than this one already wrote it.
            return Ok(());
        }
        write_witness(&self.path, seq_sum).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        *witnessed = seq_sum;
        Ok(())
    }

    /// The latest receipt of `pair`.
    pub fn latest(&self, pair: &Pair) -> Result<Option<Receipt>, StoreError> {
        let key = pair_key(pair);
        self.receipts
            .get(key)
            .map_err(self.backend())?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    /// Number of pairs held (one latest receipt each); evicted pairs are not counted.
    pub fn pair_count(&self) -> usize {
        self.receipts.len()
    }

    /// Every latest receipt, in (uploader, downloader) order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Receipt, StoreError>> + '_ {
        self.receipts.iter().map(move |entry| {
            let (key, value) = entry.map_err(self.backend())?;
            decode(&key, &value)
        })
    }

    /// Up to `limit` latest receipts in (uploader, downloader) order, starting after `after`
    /// (exclusive) or at the first: one page of [`Store::iter`] without walking what comes
    /// before it.
    pub fn receipts_after(
        &self,
        after: Option<&Pair>,
        limit: usize,
    ) -> Result<Vec<Receipt>, StoreError> {
        let range = match after {
            Some(pair) => self.receipts.range((
                std::ops::Bound::Excluded(pair_key(pair).to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => self.receipts.range::<Vec<u8>, _>(..),
        };
        range
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(self.backend())?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Every latest receipt `peer` is part of, as uploader or downloader.
    pub fn receipts_of(&self, peer: &PeerId) -> Result<Vec<Receipt>, StoreError> {
        let mut out = Vec::new();
        for entry in self.receipts.scan_prefix(peer.as_bytes()) {
            let (key, value) = entry.map_err(self.backend())?;
            out.push(decode(&key, &value)?);
        }
        for entry in self.by_downloader.scan_prefix(peer.as_bytes()) {
            let (key, _) = entry.map_err(self.backend())?;
            if let Some(uploader) = peer_at(&key, 32) {
                let pair = Pair {
                    uploader,
                    downloader: *peer,
                };
                out.extend(self.latest(&pair)?);
            }
        }
        Ok(out)
    }

    /// `peer`'s totals over the latest receipts it is part of.
    pub fn totals(&self, peer: &PeerId) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        for receipt in self.receipts_of(peer)? {
            if receipt.uploader == *peer {
                totals.bytes_given = totals.bytes_given.saturating_add(receipt.bytes);
                totals.credits_earned = totals.credits_earned.saturating_add(receipt.credits);
            } else {
                totals.bytes_received = totals.bytes_received.saturating_add(receipt.bytes);
                totals.credits_spent = totals.credits_spent.saturating_add(receipt.credits);
            }
        }
        Ok(totals)
    }

    /// Every conflict proof held.
    pub fn conflicts(&self) -> Result<Vec<ConflictProof>, StoreError> {
        self.conflicts
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(self.backend())?;
                decode(&key, &value)
            })
            .collect()
    }

    /// Whether a conflict proof marks `peer` dishonest.
    pub fn is_dishonest(&self, peer: &PeerId) -> Result<bool, StoreError> {
        self.dishonest
            .contains_key(peer.as_bytes())
            .map_err(self.backend())
    }

    /// Every key a conflict proof marks dishonest.
    pub fn dishonest(&self) -> Result<Vec<PeerId>, StoreError> {
        self.dishonest
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(self.backend())?;
                peer_at(&key, 0).ok_or_else(|| StoreError::BadRecord {
                    key: hex::encode(&key),
                    detail: "dishonest key is not 32 bytes".into(),
                })
            })
            .collect()
    }

    /// For gossip: pair → seq of the latest receipt held.
    pub fn summary(&self) -> Result<BTreeMap<Pair, u64>, StoreError> {
        self.iter()
            .map(|receipt| receipt.map(|r| (r.pair(), r.seq)))
            .collect()
    }

    /// For gossip: the receipts newer than what `summary` says the other side holds.
    pub fn newer_than(&self, summary: &BTreeMap<Pair, u64>) -> Result<Vec<Receipt>, StoreError> {
        let mut out = Vec::new();
        for receipt in self.iter() {
            let receipt = receipt?;
            if summary
                .get(&receipt.pair())
                .is_none_or(|&seq| seq < receipt.seq)
            {
                out.push(receipt);
            }
        }
        Ok(out)
    }

    /// Re-verifies every record: each latest receipt's signatures, its key, each proof, each
    /// flag. A sound store reports no problems.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut batch = Vec::with_capacity(CHECK_BATCH);
        let check_batch = |batch: &mut Vec<(Vec<u8>, Receipt)>, report: &mut CheckReport| {
            let receipts: Vec<Receipt> = batch.iter().map(|(_, r)| *r).collect();
            let verdict = crate::receipt::verify_batch(&receipts, &self.network);
            for (index, why) in verdict.rejected {
                report.problems.push(format!(
                    "receipt {} → {} seq {}: {why}",
                    receipts[index].uploader, receipts[index].downloader, receipts[index].seq
                ));
            }
            for (key, receipt) in batch.iter() {
                if key.as_slice() != pair_key(&receipt.pair()) {
                    report.problems.push(format!(
                        "receipt {} → {} is stored under another pair's key",
                        receipt.uploader, receipt.downloader
                    ));
                }
            }
            batch.clear();
        };
        let owner = self.owner();
        for entry in self.receipts.iter() {
            let (key, value) = entry.map_err(self.backend())?;
            report.pairs += 1;
            report.receipts += 1;
            match decode::<Receipt>(&key, &value) {
                Ok(receipt) => {
                    if is_third_party(&receipt.pair(), owner) {
                        report.third_party += 1;
                    }
                    batch.push((key.to_vec(), receipt));
                }
                Err(e) => report.problems.push(e.to_string()),
            }
            if batch.len() == CHECK_BATCH {
                check_batch(&mut batch, &mut report);
            }
        }
        check_batch(&mut batch, &mut report);
        for proof in self.conflicts()? {
            report.conflicts += 1;
            report.receipts += 2;
            if let Err(why) = proof.verify(&self.network) {
                report
                    .problems
                    .push(format!("conflict proof on {:?}: {why}", proof.pair()));
            }
            let pair = proof.pair();
            for peer in [pair.uploader, pair.downloader] {
                if !self.is_dishonest(&peer)? {
                    report
                        .problems
                        .push(format!("{peer} is in a conflict proof but not flagged"));
                }
            }
        }
        report.dishonest = self.dishonest.len() as u64;
        self.check_tombstones(&mut report)?;
        Ok(report)
    }

    /// Bytes the backend's files take on disk.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(self.backend())
    }
}

const CHECK_BATCH: usize = 1024;

/// Whether `owner` is not part of `pair`. Without an owner every receipt is third-party.
fn is_third_party(pair: &Pair, owner: Option<PeerId>) -> bool {
    owner.is_none_or(|owner| pair.uploader != owner && pair.downloader != owner)
}

/// The `by_downloader` key of `pair`: downloader ‖ uploader.
fn downloader_key(pair: &Pair) -> Key {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(pair.downloader.as_bytes());
    key[32..].copy_from_slice(pair.uploader.as_bytes());
    key
}

/// A tombstone's key as read from disk: a pair key, or a typed error.
fn tombstone_key(bytes: &[u8]) -> Result<Key, StoreError> {
    bytes.try_into().map_err(|_| StoreError::BadRecord {
        key: hex::encode(bytes),
        detail: format!("tombstone key of {} bytes, expected 64", bytes.len()),
    })
}

fn u64_from(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::BadRecord {
        key: what.into(),
        detail: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// The witness: what the last flush made durable, as decimal text. Missing means nothing yet;
/// unreadable text (a crash can leave the unsynced file empty) counts as nothing too, since the
/// witness only ever serves as a lower bound.
fn read_witness(store: &Path) -> Result<u64, StoreError> {
    let path = store.join(WITNESS_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StoreError::Io {
            path: store.to_owned(),
            source,
        }),
    }
}

/// Replaces the witness with a rename, without fsync: sled's flush has already made `seq_sum`
/// durable, so a crash can only leave an older, smaller, empty or missing witness, and each of
/// those is still a lower bound on what the database holds. Syncing it cost two fsyncs per flush,
/// five times sled's own flush.
fn write_witness(store: &Path, seq_sum: u64) -> std::io::Result<()> {
    let tmp = store.join(format!("{WITNESS_FILE}.tmp"));
    fs::write(&tmp, format!("{seq_sum}\n"))?;
    fs::rename(&tmp, store.join(WITNESS_FILE))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding a fixed-shape struct into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::BadRecord {
        key: hex::encode(key),
        detail: e.to_string(),
    })
}

fn backend_error(path: &Path, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(source) => StoreError::Io {
            path: path.to_owned(),
            source,
        },
        other => StoreError::Corrupt {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// sled writes `snap.N.generating` and renames it to `snap.N` when complete, so one that is still
/// `.generating` at open was cut short by a crash. Safe only under the store's lock.
fn remove_incomplete_snapshots(db_path: &Path) -> std::io::Result<()> {
    let entries = match fs::read_dir(db_path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn open_backend(path: &Path, db_path: &Path, config: StoreConfig) -> Result<sled::Db, StoreError> {
    let sled_config = sled::Config::new()
        .path(db_path)
        .cache_capacity(config.cache_capacity)
        .mode(sled::Mode::LowSpace);
    // sled 0.34 can panic on some damaged files instead of returning an error; a damaged store
    // must give the user an error, never take the node down.
    let mut waited = std::time::Duration::ZERO;
    let opened = loop {
        let attempt = sled_config.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || attempt.open())) {
            // sled's own file lock can outlive a dropped handle for a moment (its flusher
            // thread, or a forked sibling before exec); our LOCK already excludes other stores.
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock")
                    && waited < config.lock_wait =>
            {
                let step = std::time::Duration::from_millis(20);
                std::thread::sleep(step);
                waited += step;
            }
            other => break other,
        }
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(backend_error(path, e)),
        Err(panic) => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend panicked while opening".into()),
        }),
    }
}

#[cfg(test)]
mod tests;
