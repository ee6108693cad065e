//! One gossip session on one stream, either side (`docs/PROTOCOL.md`, "Gossip sessions"):
//!
//! 1. The initiator sends [`Request::Gossip`] and its [`GossipHello`] at once; the responder
//!    answers [`Response::Received`] (or a refusal) and its hello.
//! 2. When the hellos' conflict digests differ, each side sends all its conflict proofs (it
//!    announced how many); each proof is verified before it is stored, and a new one is flooded
//!    on to every other connected peer.
//! 3. Each side sends one [`Records`] frame: hot provider and peer records and a sample of old
//!    ones. Each is verified; a forged one is a penalty.
//! 4. Announcements: each hello named (short ids) the receipts its sender learned lately. A
//!    side sends [`GossipFrame::Want`] with those it lacks when the other announced any, and
//!    answers a non-empty want with one [`GossipFrame::Receipts`] frame of what it names. So a
//!    few new receipts reach a peer without the reconciliation's descent to them; after them the
//!    whole-set fingerprints usually agree at once.
//! 5. The ledger's set reconciliation ([`tally_ledger::sync`]): the initiator sends the first
//!    message; then turns alternate, each turn being the receipts the other side lacks (in
//!    [`GossipFrame::Receipts`] batches) followed by the next message, or [`GossipFrame::End`]
//!    when there is nothing left to say. Received receipts this node already holds at that seq
//!    or newer are counted and dropped unverified; the rest are batch-verified before they
//!    touch the store ([`tally_ledger::Store::ingest`]). After each batch the store keeps its cap
//!    on third-party receipts ([`tally_ledger::Store::enforce_cap`]); evicted pairs stay in the
//!    sync index as tombstones, so peers do not push them again.
//!
//! Everything a peer can make this node do is bounded: frames by [`MAX_GOSSIP_FRAME`] and the
//! per-frame counts, a session by [`MAX_TURNS`], [`MAX_PUSH_PER_SESSION`] receipts each way and
//! [`SESSION_TIMEOUT`], and sessions per peer by the allowance in [`super::Gossip::admit`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally_ledger::sync::{self, Key, Message, ShortId, key_pair};
use tally_ledger::{Applied, ConflictProof, Ingested, PeerId, Receipt};

use super::{Busy, GossipStats};
use crate::daemon::{Shared, now_ms};
use crate::transport::{Connection, ErrorCode, FrameReader, FrameWriter};
use crate::wire::{
    GossipFrame, GossipHello, MAX_ANNOUNCED, MAX_CONFLICTS_PER_FRAME, MAX_GOSSIP_FRAME,
    MAX_PEER_RECORDS_PER_FRAME, MAX_PROVIDER_RECORDS_PER_FRAME, MAX_RECEIPTS_PER_FRAME,
    MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, Records, RefusalCode, Request, Response,
};

/// Reconciliation turns a session takes at most (each side's message counts one); a sync
/// needs about 8 at 100,000 pairs, so this only stops a peer that never converges.
pub const MAX_TURNS: usize = 64;
/// Receipts one side pushes in one session at most; a newcomer that lacks more gets the rest
/// in later sessions.
pub const MAX_PUSH_PER_SESSION: usize = 20_000;
/// Conflict proofs exchanged in one session at most, each way.
pub const MAX_CONFLICTS_EXCHANGED: usize = 4_096;
/// A session that takes longer is broken off.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Receipts a peer may push that this node already holds (gossip races make a few) before
/// such pushes count as a replay flood.
pub const UNWANTED_TOLERANCE: usize = 1_024;

/// Penalty for a frame that is undecodable, oversized, over its count or out of order.
pub const PENALTY_BAD_FRAME: u32 = 20;
/// Penalty for a batch holding receipts that do not verify (forged, half-signed, another
/// network's).
pub const PENALTY_BAD_RECEIPT: u32 = 25;
/// Penalty for a provider or peer record whose signature or shape is wrong.
pub const PENALTY_FORGED_RECORD: u32 = 25;
/// Penalty for a conflict proof that does not verify.
pub const PENALTY_BAD_PROOF: u32 = 25;
/// Penalty for pushing mostly receipts this node already holds.
pub const PENALTY_REPLAY: u32 = 10;
/// Penalty for starting sessions faster than the allowance.
pub const PENALTY_TOO_OFTEN: u32 = 5;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol: the caller penalises it.
    #[error("the peer broke the gossip protocol: {why}")]
    Misbehaved {
        /// Penalty points.
        points: u32,
        /// What it did.
        why: String,
    },
    /// The peer refused the session.
    #[error("the peer refused the session: {0}")]
    Refused(String),
    /// The connection, the stream or this node's store failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl SessionError {
    fn misbehaved(points: u32, why: impl Into<String>) -> Self {
        Self::Misbehaved {
            points,
            why: why.into(),
        }
    }
}

/// What one session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Receipts received that were new to this node.
    pub receipts_new: u64,
    /// Receipts received that this node already held, at that seq or newer.
    pub receipts_unwanted: u64,
    /// Receipts pushed to the peer.
    pub receipts_sent: u64,
    /// Conflict proofs learned.
    pub conflicts_learned: u64,
    /// Reconciliation turns taken, both sides.
    pub turns: u64,
    /// Gossip frame bytes sent (length prefixes included).
    pub bytes_sent: u64,
    /// Gossip frame bytes received (length prefixes included).
    pub bytes_received: u64,
}

/// Starts a session with `conn`'s peer. The caller holds the peer's session slot.
pub async fn initiate(shared: &Arc<Shared>, conn: &Connection) -> Result<Outcome, SessionError> {
    let (mut writer, mut reader) = conn.open_bi().await.map_err(anyhow::Error::from)?;
    writer.set_max_frame(MAX_REQUEST_FRAME);
    reader.set_max_frame(MAX_RESPONSE_FRAME);
    writer
        .send(&Request::Gossip)
        .await
        .map_err(anyhow::Error::from)?;
    let mut session = Session::new(shared, conn, writer, reader);
    let result = tokio::time::timeout(SESSION_TIMEOUT, session.run(true)).await;
    session.finish(result).await
}

/// Answers a session `conn`'s peer opened with [`Request::Gossip`] (already read).
pub async fn answer(
    shared: &Arc<Shared>,
    conn: &Connection,
    mut writer: FrameWriter,
    reader: FrameReader,
) {
    let peer = conn.peer_id();
    writer.set_max_frame(MAX_RESPONSE_FRAME);
    let _slot = match Arc::clone(&shared.gossip).admit(peer, Instant::now()) {
        Ok(slot) => slot,
        Err(busy) => {
            let why = match busy {
                Busy::AlreadyInSession => "a gossip session with you is already running",
                Busy::TooOften => "you start gossip sessions too often",
            };
            let refusal = Response::refused(RefusalCode::Unavailable, why);
            let _ = writer.send(&refusal).await;
            let _ = writer.finish().await;
            shared
                .gossip
                .stats
                .sessions_failed
                .fetch_add(1, Ordering::Relaxed);
            if busy == Busy::TooOften {
                shared.peers.penalize(peer, PENALTY_TOO_OFTEN, why);
            }
            return;
        }
    };
    if let Err(error) = writer.send(&Response::Received).await {
        tracing::debug!("cannot answer a gossip session: {error}");
        return;
    }
    let mut session = Session::new(shared, conn, writer, reader);
    let result = tokio::time::timeout(SESSION_TIMEOUT, session.run(false)).await;
    match session.finish(result).await {
        Ok(outcome) => {
            shared
                .gossip
                .stats
                .sessions_answered
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?outcome, "answered a gossip session");
        }
        Err(error) => tracing::info!("a gossip session the peer started failed: {error}"),
    }
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a Connection,
    peer: PeerId,
    writer: FrameWriter,
    reader: FrameReader,
    outcome: Outcome,
    received: usize,
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Arc<Shared>,
        conn: &'a Connection,
        writer: FrameWriter,
        reader: FrameReader,
    ) -> Self {
        Self {
            shared,
            conn,
            peer: conn.peer_id(),
            writer,
            reader,
            outcome: Outcome::default(),
            received: 0,
        }
    }

    fn stats(&self) -> &GossipStats {
        &self.shared.gossip.stats
    }

    /// Counts the session, penalises a peer that misbehaved, and ends the stream.
    async fn finish(
        mut self,
        result: Result<Result<(), SessionError>, tokio::time::error::Elapsed>,
    ) -> Result<Outcome, SessionError> {
        let stats = &self.shared.gossip.stats;
        self.outcome.bytes_sent = self.writer.frame_bytes();
        self.outcome.bytes_received = self.reader.frame_bytes();
        stats
            .bytes_sent
            .fetch_add(self.outcome.bytes_sent, Ordering::Relaxed);
        stats
            .bytes_received
            .fetch_add(self.outcome.bytes_received, Ordering::Relaxed);
        let result = result.unwrap_or_else(|_| {
            Err(SessionError::Failed(anyhow::anyhow!(
                "the session took longer than {SESSION_TIMEOUT:?}"
            )))
        });
        let unwanted = self.outcome.receipts_unwanted as usize;
        let result = match result {
            Ok(()) if unwanted > UNWANTED_TOLERANCE && unwanted > self.received / 2 => {
                Err(SessionError::misbehaved(
                    PENALTY_REPLAY,
                    format!(
                        "pushed {unwanted} receipts this node already held, of {} pushed",
                        self.received
                    ),
                ))
            }
            other => other,
        };
        match &result {
            Ok(()) => {
                let _ = self.writer.finish().await;
            }
            Err(error) => {
                stats.sessions_failed.fetch_add(1, Ordering::Relaxed);
                let code = match error {
                    SessionError::Misbehaved { .. } => ErrorCode::ProtocolViolation,
                    _ => ErrorCode::Normal,
                };
                self.reader.stop(code);
                self.writer.reset(code);
                if let SessionError::Misbehaved { points, why } = error {
                    self.shared
                        .peers
                        .penalize(self.peer, *points, &format!("gossip: {why}"));
                }
            }
        }
        result.map(|()| self.outcome)
    }

    async fn send(&mut self, frame: &GossipFrame) -> Result<(), SessionError> {
        self.writer
            .send(frame)
            .await
            .map_err(|e| SessionError::Failed(e.into()))
    }

    async fn recv(&mut self) -> Result<GossipFrame, SessionError> {
        next_frame(&mut self.reader, "mid-session").await
    }

    async fn run(&mut self, initiator: bool) -> Result<(), SessionError> {
        let mine = self.own_conflicts().await?;
        let announced = {
            let items = self.shared.store.sync_items();
            let since = self
                .shared
                .gossip
                .announce_since(Instant::now(), items.mark());
            items.changed_since(since, MAX_ANNOUNCED)
        };
        let hello = GossipHello {
            conflicts: mine.len() as u32,
            conflicts_digest: digest(&mine),
            observed: self.conn.remote_addr(),
            recent: announced.iter().map(|(id, _)| *id).collect(),
        };
        self.send(&GossipFrame::Hello(hello.clone())).await?;
        if initiator {
            // The responder's verdict on the session comes before its hello.
            self.reader.set_max_frame(MAX_RESPONSE_FRAME);
            match self.reader.recv::<Response>().await {
                Ok(Some(Response::Received)) => {}
                Ok(Some(Response::Refused { message, .. })) => {
                    return Err(SessionError::Refused(message));
                }
                Ok(Some(other)) => {
                    return Err(SessionError::misbehaved(
                        PENALTY_BAD_FRAME,
                        format!("answered a gossip request with {other:?}"),
                    ));
                }
                Ok(None) => {
                    return Err(SessionError::Failed(anyhow::anyhow!(
                        "the peer closed the gossip stream without answering"
                    )));
                }
                Err(error) => return Err(SessionError::Failed(error.into())),
            }
        }
        self.reader.set_max_frame(MAX_GOSSIP_FRAME);
        self.writer.set_max_frame(MAX_GOSSIP_FRAME);
        let theirs = match self.recv().await? {
            GossipFrame::Hello(hello) => hello,
            other => return Err(unexpected(&other, "where its hello belongs")),
        };
        if theirs.observed.port() == self.shared.endpoint.local_addr().port() {
            self.shared.gossip.observed(theirs.observed);
        }
        if theirs.conflicts_digest != hello.conflicts_digest {
            self.exchange_conflicts(&mine, theirs.conflicts as usize)
                .await?;
        }
        self.exchange_records().await?;
        self.exchange_announced(&announced, &theirs.recent).await?;
        if initiator {
            let first = sync::initiate_whole(&self.shared.store.sync_items());
            self.send(&GossipFrame::Sync(first.encode())).await?;
            self.outcome.turns += 1;
        }
        while self.turn().await? {}
        Ok(())
    }

    async fn own_conflicts(&self) -> Result<Vec<ConflictProof>, SessionError> {
        let store = Arc::clone(&self.shared.store);
        let mut proofs = tokio::task::spawn_blocking(move || store.conflicts())
            .await
            .map_err(|e| anyhow::anyhow!("a store task was cancelled: {e}"))?
            .map_err(anyhow::Error::from)?;
        proofs.sort_by_key(ConflictProof::id);
        proofs.truncate(MAX_CONFLICTS_EXCHANGED);
        Ok(proofs)
    }

    /// Sends every proof of `mine` while reading the `announced` proofs of the peer.
    async fn exchange_conflicts(
        &mut self,
        mine: &[ConflictProof],
        announced: usize,
    ) -> Result<(), SessionError> {
        if announced > MAX_CONFLICTS_EXCHANGED {
            return Err(SessionError::misbehaved(
                PENALTY_BAD_FRAME,
                format!(
                    "announced {announced} conflict proofs; at most {MAX_CONFLICTS_EXCHANGED} are exchanged"
                ),
            ));
        }
        let writer = &mut self.writer;
        let send = async move {
            for batch in mine.chunks(MAX_CONFLICTS_PER_FRAME) {
                writer
                    .send(&GossipFrame::Conflicts(batch.to_vec()))
                    .await
                    .map_err(|e| SessionError::Failed(e.into()))?;
            }
            Ok::<(), SessionError>(())
        };
        let shared = self.shared;
        let peer = self.peer;
        let reader = &mut self.reader;
        let outcome = &mut self.outcome;
        let receive = async move {
            let mut got = 0usize;
            while got < announced {
                const DURING: &str = "among its conflict proofs";
                let batch = match next_frame(reader, DURING).await? {
                    GossipFrame::Conflicts(batch) => batch,
                    other => return Err(unexpected(&other, DURING)),
                };
                got += batch.len();
                if batch.len() > MAX_CONFLICTS_PER_FRAME || got > announced || batch.is_empty() {
                    return Err(SessionError::misbehaved(
                        PENALTY_BAD_FRAME,
                        "sent more conflict proofs than it announced, or a batch over the cap",
                    ));
                }
                for proof in batch {
                    if let Err(error) = proof.verify(&shared.network) {
                        return Err(SessionError::misbehaved(
                            PENALTY_BAD_PROOF,
                            format!("sent a conflict proof that does not verify: {error}"),
                        ));
                    }
                    if learn_conflict(shared, proof, Some(peer)).await? {
                        outcome.conflicts_learned += 1;
                    }
                }
            }
            Ok(())
        };
        let (sent, received) = tokio::join!(send, receive);
        received.and(sent)
    }

    /// Asks for the receipts the peer announced that this node lacks while answering its asks
    /// for those this node `announced`; takes what arrives.
    async fn exchange_announced(
        &mut self,
        announced: &[(ShortId, Key)],
        theirs: &[ShortId],
    ) -> Result<(), SessionError> {
        if theirs.len() > MAX_ANNOUNCED {
            return Err(SessionError::misbehaved(
                PENALTY_BAD_FRAME,
                format!(
                    "announced {} receipts; at most {MAX_ANNOUNCED}",
                    theirs.len()
                ),
            ));
        }
        // What this node lacks and no other session of its is fetching; the claim lasts until
        // the receipts are taken (or the session ends).
        let mine_wanted = (!theirs.is_empty()).then(|| {
            let lacking = sync::wanted(&self.shared.store.sync_items(), theirs, MAX_ANNOUNCED);
            self.shared.gossip.claim(lacking)
        });
        // Both sides send their want first, then read the other's: no side waits on the other.
        if let Some(claim) = &mine_wanted {
            self.send(&GossipFrame::Want(claim.ids().to_vec())).await?;
        }
        if !announced.is_empty() {
            const DURING: &str = "where its want belongs";
            let asked = match self.recv().await? {
                GossipFrame::Want(asked) => asked,
                other => return Err(unexpected(&other, DURING)),
            };
            if asked.len() > announced.len() {
                return Err(SessionError::misbehaved(
                    PENALTY_BAD_FRAME,
                    format!(
                        "wanted {} receipts of the {} announced",
                        asked.len(),
                        announced.len()
                    ),
                ));
            }
            if !asked.is_empty() {
                let keys = sync::resolve(announced, &asked);
                let receipts = self.look_up(keys).await?;
                // Exactly one frame, even empty (a receipt evicted meanwhile), as the peer
                // waits for one.
                self.outcome.receipts_sent += receipts.len() as u64;
                GossipStats::add(&self.stats().receipts_sent, receipts.len() as u64);
                self.send(&GossipFrame::Receipts(receipts)).await?;
            }
        }
        if mine_wanted
            .as_ref()
            .is_some_and(|claim| !claim.ids().is_empty())
        {
            const DURING: &str = "where the receipts this node wanted belong";
            match self.recv().await? {
                GossipFrame::Receipts(batch) => self.take_receipts(batch).await?,
                other => return Err(unexpected(&other, DURING)),
            }
        }
        // Taken (and stored): other sessions may ask for what is still missing.
        drop(mine_wanted);
        Ok(())
    }

    /// Sends this node's records while reading the peer's; keeps those that verify.
    async fn exchange_records(&mut self) -> Result<(), SessionError> {
        let records = self
            .shared
            .gossip
            .records_to_send(self.peer, Instant::now(), now_ms());
        let writer = &mut self.writer;
        let send = async move {
            writer
                .send(&GossipFrame::Records(records))
                .await
                .map_err(|e| SessionError::Failed(e.into()))
        };
        let reader = &mut self.reader;
        const DURING: &str = "where its records belong";
        let receive = async move { next_frame(reader, DURING).await };
        let (sent, received) = tokio::join!(send, receive);
        sent?;
        let theirs = match received? {
            GossipFrame::Records(records) => records,
            other => return Err(unexpected(&other, DURING)),
        };
        self.learn_records(theirs)
    }

    fn learn_records(&mut self, records: Records) -> Result<(), SessionError> {
        if records.providers.len() > MAX_PROVIDER_RECORDS_PER_FRAME
            || records.peers.len() > MAX_PEER_RECORDS_PER_FRAME
        {
            return Err(SessionError::misbehaved(
                PENALTY_BAD_FRAME,
                "sent more records than a frame may hold",
            ));
        }
        let (now, ms) = (Instant::now(), now_ms());
        let network = self.shared.network;
        let gossip = &self.shared.gossip;
        for record in records.providers {
            match record.verify(&network, ms) {
                Ok(()) => {
                    gossip.add_provider(record, now, ms);
                }
                // Honest clocks drift and records age in transit: dropped, not punished.
                Err(
                    super::records::RecordError::Expired { .. }
                    | super::records::RecordError::FromTheFuture { .. },
                ) => {}
                Err(error) => {
                    return Err(SessionError::misbehaved(
                        PENALTY_FORGED_RECORD,
                        format!("relayed a bad provider record: {error}"),
                    ));
                }
            }
        }
        for record in records.peers {
            match record.verify(&network, ms) {
                Ok(()) if record.peer == self.shared.me => {}
                Ok(()) => {
                    gossip.add_peer(record, now);
                }
                Err(
                    super::records::RecordError::Expired { .. }
                    | super::records::RecordError::FromTheFuture { .. },
                ) => {}
                Err(error) => {
                    return Err(SessionError::misbehaved(
                        PENALTY_FORGED_RECORD,
                        format!("relayed a bad peer record: {error}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Takes the peer's turn (receipts, then its message or the end) and answers it. Returns
    /// whether the session goes on.
    async fn turn(&mut self) -> Result<bool, SessionError> {
        loop {
            match self.recv().await? {
                GossipFrame::Receipts(batch) => self.take_receipts(batch).await?,
                GossipFrame::Sync(bytes) => {
                    let message = Message::decode(&bytes).map_err(|e| {
                        SessionError::misbehaved(
                            PENALTY_BAD_FRAME,
                            format!("sent a bad sync message: {e}"),
                        )
                    })?;
                    self.outcome.turns += 1;
                    let reply =
                        sync::respond(&self.shared.store.sync_items(), &message).map_err(|e| {
                            SessionError::misbehaved(
                                PENALTY_BAD_FRAME,
                                format!("sent an invalid sync message: {e}"),
                            )
                        })?;
                    self.push(reply.send).await?;
                    return match reply.message {
                        Some(next) if (self.outcome.turns as usize) < MAX_TURNS => {
                            self.outcome.turns += 1;
                            self.send(&GossipFrame::Sync(next.encode())).await?;
                            Ok(true)
                        }
                        _ => {
                            self.send(&GossipFrame::End).await?;
                            Ok(false)
                        }
                    };
                }
                GossipFrame::End => return Ok(false),
                other => return Err(unexpected(&other, "during reconciliation")),
            }
        }
    }

    /// Verifies and stores pushed receipts; those already held at that seq or newer are
    /// counted and dropped without the cost of verifying them.
    async fn take_receipts(&mut self, batch: Vec<Receipt>) -> Result<(), SessionError> {
        self.received += batch.len();
        if batch.len() > MAX_RECEIPTS_PER_FRAME
            || self.received > MAX_PUSH_PER_SESSION + MAX_RECEIPTS_PER_FRAME
        {
            return Err(SessionError::misbehaved(
                PENALTY_BAD_FRAME,
                format!(
                    "pushed {} receipts in one session, or a batch over {MAX_RECEIPTS_PER_FRAME}",
                    self.received
                ),
            ));
        }
        let pushed = batch.len();
        let fresh: Vec<Receipt> = {
            let items = self.shared.store.sync_items();
            batch
                .into_iter()
                .filter(|r| {
                    items
                        .get(&sync::pair_key(&r.pair()))
                        .is_none_or(|held| held < r.seq)
                })
                .collect()
        };
        let held_already = (pushed - fresh.len()) as u64;
        let store = Arc::clone(&self.shared.store);
        let (me, cap) = (
            self.shared.me,
            self.shared.settings.max_third_party_receipts,
        );
        let (fresh, outcomes, evicted) = tokio::task::spawn_blocking(move || {
            let outcomes = store.ingest(&fresh);
            // Under the cap this is a few atomic loads; over it, one pass that evicts 5%.
            let evicted = outcomes.is_ok().then(|| store.enforce_cap(me, cap));
            (fresh, outcomes, evicted)
        })
        .await
        .map_err(|e| anyhow::anyhow!("a store task was cancelled: {e}"))?;
        let outcomes = outcomes.map_err(anyhow::Error::from)?;
        match evicted {
            Some(Ok(evicted)) if evicted.receipts > 0 => tracing::info!(
                evicted = evicted.receipts,
                kept = evicted.third_party,
                cap,
                tombstones_dropped = evicted.tombstones_dropped,
                "over the cap on third-party receipts: evicted those farthest from this node"
            ),
            // The receipts are stored either way; the next batch tries the cap again.
            Some(Err(e)) => tracing::warn!("enforcing the cap on third-party receipts failed: {e}"),
            _ => {}
        }
        let mut rejected = Vec::new();
        let mut new = 0u64;
        let mut unwanted = held_already;
        for (receipt, outcome) in fresh.iter().zip(outcomes) {
            match outcome {
                Ingested::Applied(Applied::New { .. }) => new += 1,
                Ingested::Applied(Applied::Duplicate | Applied::Stale) => unwanted += 1,
                Ingested::Applied(Applied::Conflict(proof)) => {
                    tracing::warn!(
                        uploader = %receipt.uploader.fmt_short(),
                        downloader = %receipt.downloader.fmt_short(),
                        "gossip brought a receipt that contradicts one held: conflict proof stored, both keys marked dishonest"
                    );
                    spread_conflict(self.shared, *proof, Some(self.peer));
                    self.outcome.conflicts_learned += 1;
                }
                Ingested::Rejected(why) => rejected.push(why),
            }
        }
        self.outcome.receipts_new += new;
        self.outcome.receipts_unwanted += unwanted;
        let stats = self.stats();
        GossipStats::add(&stats.receipts_new, new);
        GossipStats::add(&stats.receipts_unwanted, unwanted);
        GossipStats::add(&stats.receipts_rejected, rejected.len() as u64);
        if let Some(first) = rejected.first() {
            return Err(SessionError::misbehaved(
                PENALTY_BAD_RECEIPT,
                format!(
                    "pushed {} receipts that do not verify (the first: {first})",
                    rejected.len()
                ),
            ));
        }
        Ok(())
    }

    /// Pushes the receipts of `keys`, within the session's budget, in batches.
    async fn push(&mut self, keys: Vec<Key>) -> Result<(), SessionError> {
        let room = MAX_PUSH_PER_SESSION.saturating_sub(self.outcome.receipts_sent as usize);
        if keys.is_empty() || room == 0 {
            return Ok(());
        }
        let mut keys = keys;
        keys.truncate(room);
        let receipts = self.look_up(keys).await?;
        for batch in receipts.chunks(MAX_RECEIPTS_PER_FRAME) {
            self.send(&GossipFrame::Receipts(batch.to_vec())).await?;
            self.outcome.receipts_sent += batch.len() as u64;
        }
        GossipStats::add(&self.stats().receipts_sent, receipts.len() as u64);
        Ok(())
    }

    /// The latest receipts of `keys`; a key held a moment ago may be gone (evicted): skipped.
    async fn look_up(&self, keys: Vec<Key>) -> Result<Vec<Receipt>, SessionError> {
        let store = Arc::clone(&self.shared.store);
        let receipts = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(keys.len());
            for key in &keys {
                if let Some(receipt) = store.latest(&key_pair(key))? {
                    out.push(receipt);
                }
            }
            Ok::<_, tally_ledger::StoreError>(out)
        })
        .await
        .map_err(|e| anyhow::anyhow!("a store task was cancelled: {e}"))?
        .map_err(anyhow::Error::from)?;
        Ok(receipts)
    }
}

/// Stores a verified conflict proof and, if it is new, floods it on. Returns whether it was
/// new.
pub async fn learn_conflict(
    shared: &Arc<Shared>,
    proof: ConflictProof,
    from: Option<PeerId>,
) -> Result<bool, SessionError> {
    let store = Arc::clone(&shared.store);
    let fresh = tokio::task::spawn_blocking(move || {
        let fresh = store.add_conflict(&proof)?;
        store.flush()?;
        Ok::<_, tally_ledger::StoreError>(fresh)
    })
    .await
    .map_err(|e| anyhow::anyhow!("a store task was cancelled: {e}"))?
    .map_err(anyhow::Error::from)?;
    if fresh {
        let pair = proof.pair();
        tracing::warn!(
            uploader = %pair.uploader.fmt_short(),
            downloader = %pair.downloader.fmt_short(),
            "learned a conflict proof: both keys are now marked dishonest"
        );
        GossipStats::add(&shared.gossip.stats.conflicts_learned, 1);
        spread_conflict(shared, proof, from);
    }
    Ok(fresh)
}

/// Pushes `proof` to every connected peer but `except`, each on a task of its own.
pub fn spread_conflict(shared: &Arc<Shared>, proof: ConflictProof, except: Option<PeerId>) {
    for peer in shared.peers.connected() {
        if Some(peer) == except {
            continue;
        }
        let Some(conn) = shared.peers.connection(&peer) else {
            continue;
        };
        let task = async move {
            let sent = tokio::time::timeout(
                SESSION_TIMEOUT,
                crate::daemon::peers::request(&conn, &Request::Conflict(proof)),
            )
            .await;
            match sent {
                Ok(Ok(Response::Received)) => {}
                Ok(Ok(other)) => tracing::debug!(?other, "a peer did not take a conflict proof"),
                Ok(Err(error)) => tracing::debug!("cannot push a conflict proof: {error:#}"),
                Err(_) => tracing::debug!("pushing a conflict proof timed out"),
            }
        };
        shared.tasks.spawn(task);
    }
}

/// The next frame. The end of the stream is a failure and a bad frame a penalty; `during`
/// says where, for the message.
async fn next_frame(reader: &mut FrameReader, during: &str) -> Result<GossipFrame, SessionError> {
    match reader.recv::<GossipFrame>().await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(SessionError::Failed(anyhow::anyhow!(
            "the peer ended the gossip stream {during}"
        ))),
        Err(error) => Err(frame_error(error)),
    }
}

/// A frame of the wrong kind for this point of the session.
fn unexpected(frame: &GossipFrame, during: &str) -> SessionError {
    SessionError::misbehaved(PENALTY_BAD_FRAME, format!("sent {} {during}", name(frame)))
}

/// A frame that could not be read: the peer's fault (undecodable, oversized, cut short) is a
/// penalty; a failed stream or connection is not.
fn frame_error(error: crate::transport::FrameError) -> SessionError {
    if error.error_code().is_some() {
        SessionError::misbehaved(PENALTY_BAD_FRAME, format!("bad frame: {error}"))
    } else {
        SessionError::Failed(error.into())
    }
}

/// BLAKE3 over the ids of `proofs` (sorted by id).
fn digest(proofs: &[ConflictProof]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tally/gossip/v1/conflicts");
    for proof in proofs {
        hasher.update(&proof.id());
    }
    *hasher.finalize().as_bytes()
}

/// A frame's kind, for messages.
fn name(frame: &GossipFrame) -> &'static str {
    match frame {
        GossipFrame::Hello(_) => "a hello",
        GossipFrame::Conflicts(_) => "conflict proofs",
        GossipFrame::Records(_) => "records",
        GossipFrame::Sync(_) => "a sync message",
        GossipFrame::Receipts(_) => "receipts",
        GossipFrame::End => "an end",
        GossipFrame::Want(_) => "a want",
    }
}
