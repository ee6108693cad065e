//! Downloads: the downloader's side of a transfer. A download finds the manifest, asks every
//! connected peer which chunks it holds, and pulls missing chunks from all providers at once
//! (a few requests in flight per provider). Every chunk is verified before it is stored or
//! counted; a provider that sends a bad one is dropped from the download and penalised. Receipts
//! are proposed every `ack_bytes` per provider and at the end.
//!
//! Verified chunks survive a restart (the content store keeps them), so a download started again
//! resumes where it stopped.
//!
//! A running download can be cancelled ([`DownloadStatus::cancel`], the API's
//! `DELETE /api/v1/downloads/{content_id}`): its phase turns `Cancelled` at once and its tasks —
//! the download's own, each provider's and each lane — stop; [`DownloadStatus::stopped`] waits
//! for the last of them (and for the content store's claim on the download to be released, so
//! it can be started again and resume).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_ledger::{PeerId, Resync};
use tally_web::events::ReceiptRole;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::peers::request;
use super::{Shared, now_ms};
use crate::content::{ContentId, Download, Manifest};
use crate::transport::Connection;
use crate::wire::{self, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, RefusalCode, Request, Response};

/// Chunk requests in flight per provider.
pub const PIPELINE: usize = 4;
/// How long a download waits for a first provider before it fails.
pub const PROVIDER_WAIT: Duration = Duration::from_secs(30);
/// Peers a download asks for the manifest at once, at most.
const MANIFEST_ASKS: usize = 4;
/// An ask for the manifest unanswered this long no longer holds up asking another peer.
const MANIFEST_ASK_WAIT: Duration = Duration::from_secs(2);
/// How often a running download looks for new providers among connected peers.
const REDISCOVER: Duration = Duration::from_millis(500);
/// How long a finished download tries to get its last bytes acknowledged.
const FINAL_RECEIPT_WAIT: Duration = Duration::from_secs(10);
/// Longest a caller of [`propose`] waits for another proposal to the same peer to be answered.
const PROPOSAL_WAIT: Duration = Duration::from_secs(1);
/// Penalty for a chunk whose hash does not match the manifest.
const PENALTY_BAD_CHUNK: u32 = 50;
/// Penalty for a manifest whose hash is not the content id, or an answer of the wrong shape.
const PENALTY_BAD_ANSWER: u32 = 30;

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Looking for providers or fetching.
    Running,
    /// Every chunk verified and the file written to its destination.
    Complete,
    /// Stopped; why.
    Failed(String),
    /// Stopped by [`DownloadStatus::cancel`].
    Cancelled,
}

/// A download's progress, shared with the API.
#[derive(Debug)]
pub struct DownloadStatus {
    /// What is downloaded.
    pub content: ContentId,
    /// Where the file goes.
    pub out: PathBuf,
    /// Content size in bytes, once the manifest is known.
    pub size: AtomicU64,
    /// Chunks in the content, once known.
    pub chunks_total: AtomicU32,
    /// Chunks verified and stored.
    pub chunks_have: AtomicU32,
    /// Bytes verified and stored.
    pub bytes_have: AtomicU64,
    /// Providers currently serving this download.
    pub providers: AtomicU32,
    phase: Mutex<Phase>,
    /// The last local error that held a running download back (a full or read-only disk), and
    /// when; shown while it is recent (see [`DownloadStatus::problem`]).
    problem: Mutex<Option<(Instant, String)>>,
    changed: Notify,
    /// Cancelled by [`DownloadStatus::cancel`]: the download's tasks stop.
    stop: CancellationToken,
    /// The download's tasks still running (and its swarm, while it holds the content store's
    /// claim), each counted by an [`Active`] guard.
    active: AtomicU32,
}

/// Counts one of a download's tasks as running while it lives.
struct Active(Arc<DownloadStatus>);

impl Active {
    fn new(status: &Arc<DownloadStatus>) -> Self {
        status.active.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(status))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl DownloadStatus {
    fn new(content: ContentId, out: PathBuf) -> Self {
        Self {
            content,
            out,
            size: AtomicU64::new(0),
            chunks_total: AtomicU32::new(0),
            chunks_have: AtomicU32::new(0),
            bytes_have: AtomicU64::new(0),
            providers: AtomicU32::new(0),
            phase: Mutex::new(Phase::Running),
            problem: Mutex::new(None),
            changed: Notify::new(),
            stop: CancellationToken::new(),
            active: AtomicU32::new(0),
        }
    }

    /// Where the download stands.
    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What holds the running download back, if a local error did in the last
    /// [`PROBLEM_SHOWN`]: errors recur at every chunk while the cause lasts, so an old one means
    /// it is gone.
    pub fn problem(&self) -> Option<String> {
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        problem
            .as_ref()
            .filter(|(at, _)| at.elapsed() < PROBLEM_SHOWN)
            .map(|(_, why)| why.clone())
    }

    /// Records a local error that holds the download back.
    fn set_problem(&self, why: String) {
        *self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), why));
    }

    /// Ends a running download in `phase`; one cancelled already stays cancelled.
    fn set_phase(&self, phase: Phase) {
        {
            let mut current = self
                .phase
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *current == Phase::Running {
                *current = phase;
            }
        }
        self.changed.notify_waiters();
    }

    /// Cancels the download if it is running: its phase is `Cancelled` from now on and its
    /// tasks stop ([`DownloadStatus::stopped`] waits for them). `Ok` also if it was cancelled
    /// before; `Err` with the phase it ended in if it is complete or failed.
    pub fn cancel(&self) -> Result<(), Phase> {
        {
            let mut current = self
                .phase
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*current {
                Phase::Running => *current = Phase::Cancelled,
                Phase::Cancelled => {}
                ended => return Err(ended.clone()),
            }
        }
        self.stop.cancel();
        self.changed.notify_waiters();
        Ok(())
    }

    /// Waits until none of the download's tasks runs any more.
    pub async fn stopped(&self) {
        loop {
            let changed = self.changed.notified();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Waits until the download is no longer running, and returns how it ended.
    pub async fn finished(&self) -> Phase {
        loop {
            let changed = self.changed.notified();
            let phase = self.phase();
            if phase != Phase::Running {
                return phase;
            }
            changed.await;
        }
    }
}

/// Starts downloading `content` to `out`, or returns the download already under way.
pub fn start(
    shared: &Arc<Shared>,
    content: ContentId,
    out: PathBuf,
) -> anyhow::Result<Arc<DownloadStatus>> {
    let mut downloads = shared.downloads();
    if let Some(existing) = downloads.get(&content)
        && existing.phase() == Phase::Running
    {
        if existing.out != out {
            anyhow::bail!(
                "{content} is already being downloaded to {}; wait for it or cancel it",
                existing.out.display()
            );
        }
        return Ok(Arc::clone(existing));
    }
    let status = Arc::new(DownloadStatus::new(content, out));
    downloads.insert(content, Arc::clone(&status));
    drop(downloads);
    shared.events.download(&status, true);
    let task = {
        let shared = Arc::clone(shared);
        let status = Arc::clone(&status);
        // Counted from now, so `stopped` never sees a task that is spawned but not yet polled
        // as stopped.
        let active = Active::new(&status);
        async move {
            // Dropping `run` drops its providers' join set, which aborts them and their lanes.
            let outcome = tokio::select! {
                biased;
                () = status.stop.cancelled() => None,
                result = run(&shared, &status) => Some(result),
            };
            let phase = match outcome {
                None => {
                    tracing::info!("download cancelled");
                    Phase::Cancelled
                }
                Some(Ok(())) => {
                    tracing::info!(out = %status.out.display(), "download complete");
                    Phase::Complete
                }
                Some(Err(error)) => {
                    tracing::warn!("download failed: {error:#}");
                    Phase::Failed(format!("{error:#}"))
                }
            };
            status.providers.store(0, Ordering::Relaxed);
            status.set_phase(phase);
            shared.events.download(&status, true);
            drop(active);
        }
    };
    let span = tracing::info_span!("get", content = %content.fmt_short());
    shared.tasks.spawn(task.instrument(span));
    Ok(status)
}

/// The chunks still wanted and those being fetched, shared by a download's provider lanes.
struct Swarm {
    content: ContentId,
    manifest: Manifest,
    /// Taken out (write lock) when the download completes. Lanes store chunks under the read
    /// lock: `Download` takes concurrent writes at distinct offsets. (Under one mutex, the four
    /// lanes of a 1 GiB download waited 1.2 ms per chunk on average for each other's hashing,
    /// writing and syncing, 15 ms at p99: see docs/PERFORMANCE.md.)
    download: RwLock<Option<Download>>,
    /// A flush of the download runs (on its own blocking thread, not in a lane).
    flushing: AtomicBool,
    /// Missing and not requested from anyone.
    wanted: Mutex<BTreeSet<u32>>,
    /// Chunks not yet verified, requested or not.
    missing: AtomicU32,
    /// Providers that sent bad data: not asked again by this download.
    excluded: Mutex<HashSet<PeerId>>,
    /// Providers that served at least one chunk: they get a final proposal.
    served_by: Mutex<HashSet<PeerId>>,
    progress: Notify,
    /// Last, so it drops after `download` (and its claim in the content store).
    _active: Active,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Swarm {
    /// The download, for storing chunks (`None` once finished).
    fn download(&self) -> RwLockReadGuard<'_, Option<Download>> {
        // Only `take` writes: a poisoned lock still holds a consistent Option.
        self.download
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Flushes the download on a blocking thread of its own, unless a flush runs already (it
    /// or the next one covers every chunk written so far). The lanes go on fetching meanwhile:
    /// an 8 MiB `fdatasync` took 12–16 ms, during which the lane that ran it inline fetched
    /// nothing.
    fn flush_in_background(self: &Arc<Self>, shared: &Shared) {
        if self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let swarm = Arc::clone(self);
        shared.tasks.spawn_blocking(move || {
            if let Some(download) = &*swarm.download()
                && let Err(error) = download.flush()
            {
                // The chunks stay written but unmarked; the next flush (at the latest the one
                // that finishes the download) tries again.
                tracing::warn!("cannot flush the download: {error}");
            }
            swarm.flushing.store(false, Ordering::Release);
        });
    }

    /// Takes a wanted chunk that `has` says the provider holds: the first from a random place,
    /// so that downloaders of one content hold different chunks and can trade them, rather
    /// than all asking the seeder for the same ones in order.
    fn take(&self, has: impl Fn(u32) -> bool) -> Option<u32> {
        let mut wanted = lock(&self.wanted);
        let from = rand::random_range(0..self.manifest.chunk_count().max(1));
        let index = wanted
            .range(from..)
            .chain(wanted.range(..from))
            .copied()
            .find(|&i| has(i))?;
        wanted.remove(&index);
        Some(index)
    }

    /// Puts back a chunk whose request failed.
    fn put_back(&self, index: u32) {
        lock(&self.wanted).insert(index);
        self.progress.notify_waiters();
    }

    fn complete(&self) -> bool {
        self.missing.load(Ordering::Acquire) == 0
    }
}

async fn run(shared: &Arc<Shared>, status: &Arc<DownloadStatus>) -> anyhow::Result<()> {
    let content = status.content;
    let manifest = find_manifest(shared, content).await?;
    status.size.store(manifest.size(), Ordering::Relaxed);
    status
        .chunks_total
        .store(manifest.chunk_count(), Ordering::Relaxed);
    let name = status
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let for_store = manifest.clone();
    let (download, missing) = shared
        .content_blocking(move |c| {
            let download = c.start_download(for_store, name)?;
            let missing = download.missing();
            Ok((download, missing))
        })
        .await
        .context("cannot prepare the download in the content store")?;
    let have = manifest.chunk_count() - missing.len() as u32;
    status.chunks_have.store(have, Ordering::Relaxed);
    let have_bytes: u64 = (0..manifest.chunk_count())
        .filter(|i| !missing.contains(i))
        .filter_map(|i| manifest.chunk_len(i))
        .map(u64::from)
        .sum();
    status.bytes_have.store(have_bytes, Ordering::Relaxed);
    let swarm = Arc::new(Swarm {
        content,
        missing: AtomicU32::new(missing.len() as u32),
        wanted: Mutex::new(missing.into_iter().collect()),
        manifest,
        download: RwLock::new(Some(download)),
        flushing: AtomicBool::new(false),
        excluded: Mutex::new(HashSet::new()),
        served_by: Mutex::new(HashSet::new()),
        progress: Notify::new(),
        _active: Active::new(status),
    });

    let mut workers: JoinSet<PeerId> = JoinSet::new();
    let mut working: HashSet<PeerId> = HashSet::new();
    let mut last_provider = Instant::now();
    while !swarm.complete() {
        crate::gossip::task::dial_providers(shared, &content);
        for peer in shared.peers.connected() {
            if working.contains(&peer) || lock(&swarm.excluded).contains(&peer) {
                continue;
            }
            let Some(conn) = shared.peers.connection(&peer) else {
                continue;
            };
            working.insert(peer);
            let span = tracing::info_span!("provider", peer = %peer.fmt_short());
            let task = provide(
                Arc::clone(shared),
                Arc::clone(&swarm),
                Arc::clone(status),
                conn,
            );
            workers.spawn(task.instrument(span));
        }
        status
            .providers
            .store(workers.len() as u32, Ordering::Relaxed);
        if !workers.is_empty() {
            last_provider = Instant::now();
        } else if last_provider.elapsed() > PROVIDER_WAIT {
            anyhow::bail!(
                "no connected peer provides {content} (waited {PROVIDER_WAIT:?}); connect to a peer that holds it with `tally connect` and try again"
            );
        }
        let progressed = swarm.progress.notified();
        tokio::select! {
            () = shared.cancel.cancelled() => anyhow::bail!("the node is shutting down; the download resumes at the next start"),
            Some(done) = workers.join_next(), if !workers.is_empty() => {
                match done {
                    // Asked again at the next round if still connected and not excluded.
                    Ok(peer) => { working.remove(&peer); }
                    Err(error) => tracing::warn!("a provider task failed: {error}"),
                }
            }
            () = progressed => {}
            () = tokio::time::sleep(REDISCOVER) => {}
        }
    }
    // Every chunk is in: the providers' lanes are idle; stop them.
    workers.shutdown().await;
    status.providers.store(0, Ordering::Relaxed);
    let out = status.out.clone();
    let finishing = Arc::clone(&swarm);
    shared
        .content_blocking(move |c| {
            // On a blocking thread: the write lock waits for a background flush still running.
            // Only this task takes the download; export fails if it is not complete.
            let download = finishing
                .download
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(download) = download {
                download.finish()?;
            }
            c.export(&content, &out)
        })
        .await
        .with_context(|| format!("cannot write {}", status.out.display()))?;
    // Final receipts: every provider gets a proposal for what it sent.
    let providers: Vec<PeerId> = lock(&swarm.served_by).iter().copied().collect();
    for peer in providers {
        final_receipt(shared, peer).await;
    }
    Ok(())
}

/// Proposes to `peer` until everything received from it is acknowledged (a proposal already in
/// flight may cover only part), for at most [`FINAL_RECEIPT_WAIT`].
async fn final_receipt(shared: &Arc<Shared>, peer: PeerId) {
    let deadline = Instant::now() + FINAL_RECEIPT_WAIT;
    loop {
        match shared.pairs.unacknowledged_from(peer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(peer = %peer.fmt_short(), "cannot read the pair: {error}");
                return;
            }
        }
        if shared.behaviour.never_sign || Instant::now() > deadline {
            tracing::warn!(peer = %peer.fmt_short(), "the last bytes from this peer are not acknowledged yet; the next connection settles them");
            return;
        }
        if let Err(error) = propose(shared, peer).await {
            tracing::warn!(peer = %peer.fmt_short(), "final receipt failed: {error:#}");
            return;
        }
    }
}

/// The manifest of `content`: from the content store, else from the first connected peer that
/// has it (checked against the id before it is decoded). Up to [`MANIFEST_ASKS`] peers are
/// asked at once and the first good answer wins, so a connected peer that never answers (one
/// behind a network split, whose connection has not timed out yet) holds up one ask, not the
/// download; after [`MANIFEST_ASK_WAIT`] its ask no longer counts against the limit (its answer
/// is still taken if it comes).
async fn find_manifest(shared: &Arc<Shared>, content: ContentId) -> anyhow::Result<Manifest> {
    if let Some(manifest) = shared
        .content_blocking(move |c| c.manifest(&content))
        .await?
    {
        return Ok(manifest);
    }
    let deadline = Instant::now() + PROVIDER_WAIT;
    let mut asked: HashSet<PeerId> = HashSet::new();
    let mut asking: JoinSet<(PeerId, anyhow::Result<Response>)> = JoinSet::new();
    // When each unanswered ask started.
    let mut pending: HashMap<PeerId, Instant> = HashMap::new();
    while Instant::now() < deadline {
        crate::gossip::task::dial_providers(shared, &content);
        for peer in shared.peers.connected() {
            let waiting = pending
                .values()
                .filter(|at| at.elapsed() < MANIFEST_ASK_WAIT)
                .count();
            if waiting >= MANIFEST_ASKS {
                break;
            }
            if !asked.insert(peer) {
                continue;
            }
            let Some(conn) = shared.peers.connection(&peer) else {
                continue;
            };
            pending.insert(peer, Instant::now());
            asking
                .spawn(async move { (peer, request(&conn, &Request::Manifest { content }).await) });
        }
        tokio::select! {
            () = shared.cancel.cancelled() => anyhow::bail!("the node is shutting down"),
            Some(answer) = asking.join_next(), if !asking.is_empty() => {
                let Ok((peer, answer)) = answer else { continue };
                pending.remove(&peer);
                if let Some(manifest) = check_manifest(shared, content, peer, answer) {
                    // Dropping `asking` aborts the asks still waiting.
                    return Ok(manifest);
                }
            }
            () = tokio::time::sleep(REDISCOVER) => {}
        }
    }
    anyhow::bail!(
        "no connected peer has the manifest of {content} (asked {} peers for {PROVIDER_WAIT:?}); connect to a peer that shares it with `tally connect`",
        asked.len()
    )
}

/// A peer's answer to a manifest request: the manifest if it is the content's; a wrong one is
/// penalised.
fn check_manifest(
    shared: &Shared,
    content: ContentId,
    peer: PeerId,
    answer: anyhow::Result<Response>,
) -> Option<Manifest> {
    match answer {
        Ok(Response::Manifest { encoded }) => {
            if ContentId(*blake3::hash(&encoded).as_bytes()) != content {
                shared.peers.penalize(
                    peer,
                    PENALTY_BAD_ANSWER,
                    "sent a manifest that does not hash to the content id",
                );
                return None;
            }
            match Manifest::decode(&encoded) {
                Ok(manifest) => Some(manifest),
                Err(error) => {
                    shared.peers.penalize(
                        peer,
                        PENALTY_BAD_ANSWER,
                        &format!("sent an invalid manifest: {error}"),
                    );
                    None
                }
            }
        }
        Ok(Response::Refused { .. }) => None,
        Ok(other) => {
            shared.peers.penalize(
                peer,
                PENALTY_BAD_ANSWER,
                &format!("answered a manifest request with {other:?}"),
            );
            None
        }
        Err(error) => {
            tracing::debug!(peer = %peer.fmt_short(), "manifest request failed: {error:#}");
            None
        }
    }
}

/// One provider's part of a download: learn which chunks it holds, then run [`PIPELINE`]
/// lanes that each request one chunk at a time. Returns the provider when it has nothing more
/// to give, its connection ended, or it was excluded.
async fn provide(
    shared: Arc<Shared>,
    swarm: Arc<Swarm>,
    status: Arc<DownloadStatus>,
    conn: Connection,
) -> PeerId {
    let _active = Active::new(&status);
    let peer = conn.peer_id();
    serve_from(shared, swarm, status, conn).await;
    peer
}

async fn serve_from(
    shared: Arc<Shared>,
    swarm: Arc<Swarm>,
    status: Arc<DownloadStatus>,
    conn: Connection,
) {
    let peer = conn.peer_id();
    loop {
        let bitfield = match request(
            &conn,
            &Request::Have {
                content: swarm.content,
            },
        )
        .await
        {
            Ok(Response::Have { chunks, bitfield })
                if chunks == swarm.manifest.chunk_count()
                    && bitfield.len() == chunks.div_ceil(8) as usize =>
            {
                bitfield
            }
            Ok(Response::Refused { .. }) => return,
            Ok(other) => {
                shared.peers.penalize(
                    peer,
                    PENALTY_BAD_ANSWER,
                    &format!("answered a chunk map request with {other:?}"),
                );
                lock(&swarm.excluded).insert(peer);
                return;
            }
            Err(error) => {
                tracing::debug!("chunk map request failed: {error:#}");
                return;
            }
        };
        let chunks = swarm.manifest.chunk_count();
        let holds_all = (0..chunks).all(|i| wire::bit(&bitfield, i));
        let bitfield = Arc::new(bitfield);
        let mut lanes = JoinSet::new();
        for _ in 0..PIPELINE {
            let lane = lane(
                Arc::clone(&shared),
                Arc::clone(&swarm),
                Arc::clone(&status),
                conn.clone(),
                Arc::clone(&bitfield),
                !holds_all,
            );
            lanes.spawn(lane.in_current_span());
        }
        let mut idle = false;
        while let Some(stopped) = lanes.join_next().await {
            idle |= matches!(stopped, Ok(LaneEnd::Idle));
        }
        // A provider that was still downloading may hold more now: ask it again, after a
        // pause, for as long as the download needs chunks.
        if !idle || swarm.complete() || lock(&swarm.excluded).contains(&peer) {
            return;
        }
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = conn.closed() => return,
            () = tokio::time::sleep(REDISCOVER) => {}
        }
    }
}

/// Why a lane ended.
enum LaneEnd {
    /// The download is complete, the provider excluded or its connection lost.
    Over,
    /// The provider, still downloading itself, holds no chunk this download needs now: its
    /// chunk map is worth asking again.
    Idle,
}

/// Why a lane stopped fetching from its provider.
enum Stop {
    /// The provider does not hold the chunk after all.
    Done,
    /// The connection failed: the provider may be asked again when it reconnects.
    Lost,
    /// The provider sent bad data: not asked again by this download.
    Drop,
}

async fn lane(
    shared: Arc<Shared>,
    swarm: Arc<Swarm>,
    status: Arc<DownloadStatus>,
    conn: Connection,
    bitfield: Arc<Vec<u8>>,
    partial: bool,
) -> LaneEnd {
    let _active = Active::new(&status);
    let peer = conn.peer_id();
    loop {
        if swarm.complete() || lock(&swarm.excluded).contains(&peer) {
            return LaneEnd::Over;
        }
        // Registered before looking, so a chunk put back in between still wakes this lane.
        let progressed = swarm.progress.notified();
        let Some(index) = swarm.take(|i| wire::bit(&bitfield, i)) else {
            if partial {
                return LaneEnd::Idle;
            }
            // Everything this provider holds is being fetched elsewhere; a failed request
            // puts its chunk back.
            tokio::select! {
                () = shared.cancel.cancelled() => return LaneEnd::Over,
                () = progressed => {}
                () = tokio::time::sleep(REDISCOVER) => {}
            }
            continue;
        };
        match fetch_chunk(&shared, &swarm, &status, &conn, index).await {
            Ok(()) => {}
            Err(stop) => {
                swarm.put_back(index);
                match stop {
                    Stop::Done => {}
                    Stop::Lost => return LaneEnd::Over,
                    Stop::Drop => {
                        lock(&swarm.excluded).insert(peer);
                        return LaneEnd::Over;
                    }
                }
            }
        }
    }
}

/// How long a local error stays shown on a running download after it last happened.
const PROBLEM_SHOWN: Duration = Duration::from_secs(10);

/// How long a node that never signs (a test and experiment mode) waits after a credit-window
/// refusal before it asks the provider again.
const UNSIGNED_RETRY: Duration = Duration::from_secs(2);

/// Credit-window refusals in a row for one chunk, each after a receipt proposed, before the
/// provider is left for now (the chunk goes back to the swarm).
const MAX_WINDOW_REFUSALS: u32 = 8;

/// Requests chunk `index`, verifies and stores it, counts it, and proposes when due.
async fn fetch_chunk(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    status: &Arc<DownloadStatus>,
    conn: &Connection,
    index: u32,
) -> Result<(), Stop> {
    let peer = conn.peer_id();
    let Some(expected) = swarm.manifest.chunk_len(index) else {
        return Err(Stop::Done);
    };
    // Refusals for a full credit window in a row: a proposal that frees nothing (the provider
    // counts bytes that never arrived) must not turn into a tight request loop.
    let mut window_refusals = 0u32;
    loop {
        let received: anyhow::Result<Result<Vec<u8>, Response>> = async {
            let (mut writer, mut reader) = conn.open_bi().await?;
            writer.set_max_frame(MAX_REQUEST_FRAME);
            reader.set_max_frame(MAX_RESPONSE_FRAME);
            writer
                .send(&Request::Chunk {
                    content: swarm.content,
                    index,
                })
                .await?;
            writer.finish().await?;
            let header = reader
                .recv::<Response>()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the peer closed the stream without answering"))?;
            match header {
                Response::Chunk { len } if len == expected => {
                    shared.download_limit.acquire(u64::from(len)).await;
                    let mut bytes = vec![0u8; len as usize];
                    reader.read_raw(&mut bytes).await?;
                    Ok(Ok(bytes))
                }
                other => Ok(Err(other)),
            }
        }
        .await;
        let bytes = match received {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(Response::Refused {
                reason: RefusalCode::CreditWindowFull { .. },
                message,
            })) => {
                if shared.behaviour.never_sign {
                    // A node that does not sign waits for the provider to write its debt off
                    // (or for room among strangers) and asks again.
                    tracing::info!("the provider stopped sending until we sign: {message}");
                    tokio::select! {
                        () = shared.cancel.cancelled() => {}
                        () = tokio::time::sleep(UNSIGNED_RETRY) => {}
                    }
                    return Err(Stop::Done);
                }
                if let Err(error) = propose(shared, peer).await {
                    tracing::warn!("proposing a receipt failed: {error:#}");
                    return Err(Stop::Lost);
                }
                window_refusals += 1;
                if window_refusals > MAX_WINDOW_REFUSALS {
                    tracing::info!(
                        "the provider keeps its credit window shut after our receipts: {message}; leaving it for now"
                    );
                    return Err(Stop::Done);
                }
                if window_refusals > 1 {
                    // Backing off: 50 ms, doubling, at most 1.6 s.
                    let wait = 25u64 << window_refusals.min(6);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                continue;
            }
            Ok(Err(Response::Refused { .. })) => return Err(Stop::Done),
            Ok(Err(other)) => {
                shared.peers.penalize(
                    peer,
                    PENALTY_BAD_ANSWER,
                    &format!("answered chunk {index} with {other:?}"),
                );
                return Err(Stop::Drop);
            }
            Err(error) => {
                tracing::debug!("chunk {index} request failed: {error:#}");
                return Err(Stop::Lost);
            }
        };
        let len = bytes.len() as u64;
        let store_swarm = Arc::clone(swarm);
        let written = tokio::task::spawn_blocking(move || match &*store_swarm.download() {
            Some(download) => download.write_chunk_unflushed(index, &bytes).map(Some),
            None => Ok(None),
        })
        .await;
        match written {
            Ok(Ok(Some((_, true)))) => swarm.flush_in_background(shared),
            Ok(Ok(_)) => {}
            Ok(Err(error)) if error.is_peer_fault() => {
                shared.peers.penalize(
                    peer,
                    PENALTY_BAD_CHUNK,
                    &format!(
                        "sent chunk {index} of {} that fails verification: {error}",
                        swarm.content
                    ),
                );
                return Err(Stop::Drop);
            }
            Ok(Err(error)) => {
                tracing::warn!("cannot store chunk {index}: {error}");
                status.set_problem(format!("cannot store chunk {index}: {error}"));
                return Err(Stop::Lost);
            }
            Err(error) => {
                tracing::warn!("storing chunk {index} was cancelled: {error}");
                return Err(Stop::Lost);
            }
        }
        swarm.missing.fetch_sub(1, Ordering::AcqRel);
        status.chunks_have.fetch_add(1, Ordering::Relaxed);
        status.bytes_have.fetch_add(len, Ordering::Relaxed);
        shared.events.download(status, false);
        swarm.progress.notify_waiters();
        shared.count_down(len);
        if let Some((_, received)) = shared.peers.counters(&peer) {
            received.fetch_add(len, Ordering::Relaxed);
        }
        lock(&swarm.served_by).insert(peer);
        // Under an agreed trade the credits owed follow its price.
        let credits = shared.market.buyer_credits(&peer, len, now_ms());
        match shared.pairs.record_received(peer, len, credits) {
            Ok(unacknowledged) if unacknowledged >= shared.settings.ack_bytes => {
                let tasks = shared.tasks.clone();
                let shared = Arc::clone(shared);
                let status = Arc::clone(status);
                let task = async move {
                    if let Err(error) = propose(&shared, peer).await {
                        tracing::warn!("proposing a receipt failed: {error:#}");
                        status.set_problem(format!("cannot propose a receipt: {error:#}"));
                    }
                };
                tasks.spawn(task.in_current_span());
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("cannot count received bytes: {error}"),
        }
        return Ok(());
    }
}

/// Proposes a receipt to `peer` for what was received from it, and stores its countersigned
/// answer. At most one proposal per peer is in flight: a call while one is returns after a short
/// pause, and callers that wait for the window to open retry their request.
pub async fn propose(shared: &Arc<Shared>, peer: PeerId) -> anyhow::Result<()> {
    if shared.behaviour.never_sign {
        return Ok(());
    }
    // Registered before the claim is tried, so an answer arriving in between still wakes us.
    let answered = shared.pairs.proposal_answered();
    if !shared.pairs.start_proposing(peer) {
        // One is on its way: return when it is answered (the caller then asks again), not
        // after a fixed pause. A fixed 20 ms kept lanes refused at a full credit window idle
        // for 20 ms when the answer came in 3–5 ms (35–70 times per GiB: docs/PERFORMANCE.md).
        let _ = tokio::time::timeout(PROPOSAL_WAIT, answered).await;
        return Ok(());
    }
    let result = async {
        let Some(proposal) = shared.pairs.propose(peer, now_ms()).await? else {
            return Ok(());
        };
        let conn = shared.peers.connection(&peer).ok_or_else(|| {
            anyhow::anyhow!("not connected; the proposal is sent again at the next connection")
        })?;
        match request(&conn, &Request::Propose(proposal)).await? {
            Response::Countersigned(receipt) => {
                let resync = shared.pairs.accept_countersigned(peer, receipt).await?;
                if let Resync::TheirsNewer(_) = resync {
                    shared.events.receipt(peer, ReceiptRole::Down, &receipt);
                }
                if let Ok(unacknowledged) = shared.pairs.unacknowledged_from(peer) {
                    let role = tally_market::Party::Buyer;
                    shared
                        .market
                        .acknowledged(&peer, role, unacknowledged, now_ms());
                }
                tracing::debug!(
                    seq = receipt.seq,
                    bytes = receipt.bytes,
                    "receipt countersigned"
                );
                Ok(())
            }
            Response::Refused { reason, message } => {
                anyhow::bail!("the peer refused our proposal ({reason:?}): {message}")
            }
            other => anyhow::bail!("the peer answered our proposal with {other:?}"),
        }
    }
    .await;
    shared.pairs.done_proposing(peer);
    result
}
