//! The receipt chains of this node with each connected peer, driven by the transfers: what was
//! sent and received, when to propose, what to countersign, and the re-sync on connect.
//!
//! The pair logic is [`tally_ledger::pair`]'s; this module adds the node's duties around it:
//! load a pair's state from the store the first time it is needed, and make every receipt or
//! proposal durable before this node's signature on it leaves (the store is flushed on a
//! blocking thread). State sits behind one short-held mutex; no lock is held across an `.await`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tally_ledger::{
    Applied, ConflictProof, DownloaderPair, Identity, NetworkId, Pair, PeerId, Proposal, Receipt,
    Refusal, Resync, Store, StoreError, UploaderPair, VerifiedReceipt,
};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::wire::LatestReceipts;

/// What went wrong with a receipt step.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The pair logic refused (a bad or stale proposal, a receipt that is not ours).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed; nothing was signed or acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that writes the store did not finish (the runtime is shutting down).
    #[error("the store write was cancelled: {0}")]
    Cancelled(String),
}

#[derive(Default)]
struct State {
    /// Pairs in which this node uploads to the key.
    uploads: HashMap<PeerId, UploaderPair>,
    /// Pairs in which this node downloads from the key.
    downloads: HashMap<PeerId, DownloaderPair>,
    /// Uploaders to which a proposal is on its way, so at most one is in flight per pair.
    proposing: HashSet<PeerId>,
    /// Bytes sent to strangers that were written off unsigned (see [`Pairs::forgive`]): they
    /// no longer count against the stranger's window. Cleared when it signs.
    forgiven: HashMap<PeerId, u64>,
    /// Upload pairs with no receipt whose mark is in the store ([`Store::mark_unreceipted`]):
    /// bytes may be sent to them now.
    marked: HashSet<PeerId>,
}

/// This node's receipt chains with its peers.
pub struct Pairs {
    identity: Arc<Identity>,
    me: PeerId,
    network: NetworkId,
    store: Arc<Store>,
    /// What a downloader may claim beyond what this process counts as sent to it: the bytes it
    /// may have sent, unacknowledged, before a restart (see [`Pairs::with_uncounted`]).
    uncounted: u64,
    state: Mutex<State>,
    /// Woken whenever a proposal stops being in flight.
    answered: Notify,
}

/// What a chunk request may do under the requester's credit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Send it.
    Open,
    /// Stop: this many bytes are unacknowledged, and the next chunk would exceed the window.
    Full {
        /// Bytes sent that no receipt covers.
        unacknowledged: u64,
    },
    /// Stop: the requester is a stranger and the allowance all strangers share is spent
    /// ([`tally_market::StrangerCredit`]); it refills as strangers sign or their debts are
    /// written off.
    StrangersFull {
        /// Bytes sent to strangers that no receipt covers and that are not written off.
        outstanding: u64,
        /// The allowance.
        capacity: u64,
    },
}

impl Pairs {
    /// The chains of the node with `identity`, stored in `store`.
    pub fn new(identity: Arc<Identity>, network: NetworkId, store: Arc<Store>) -> Self {
        Self {
            me: identity.peer_id(),
            identity,
            network,
            store,
            uncounted: 0,
            state: Mutex::new(State::default()),
            answered: Notify::new(),
        }
    }

    /// Lets every upload pair that this process loads from the store with a receipt
    /// countersign up to `bytes` more than it counts as sent: the largest credit window this
    /// node grants, which bounds what it may have sent unacknowledged before a restart or a
    /// crash. Without it a downloader that received those bytes is refused ever after
    /// ([`tally_ledger::UploaderPair::with_uncounted`]). A pair without a receipt gets it only
    /// if the store marks it as sent to ([`Pairs::mark_sending`]); one never sent anything
    /// gets none, so a claim against it is still refused.
    pub fn with_uncounted(mut self, bytes: u64) -> Self {
        self.uncounted = bytes;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a set of counters each updated in one step; a panic elsewhere cannot
        // leave one half-written, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn upload_pair<'a>(
        &self,
        state: &'a mut State,
        peer: PeerId,
    ) -> Result<&'a mut UploaderPair, StoreError> {
        Ok(match state.uploads.entry(peer) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let pair = Pair {
                    uploader: self.me,
                    downloader: peer,
                };
                let latest = self.store.latest(&pair)?;
                // Only a pair with a receipt, or marked as sent to before its first one, can
                // have been sent bytes before this process; any other gets no allowance, so a
                // claim past what was sent is still refused.
                let marked = latest.is_none() && self.store.is_unreceipted(&pair)?;
                if marked {
                    state.marked.insert(peer);
                }
                let uncounted = if latest.is_some() || marked {
                    self.uncounted
                } else {
                    0
                };
                entry.insert(
                    UploaderPair::new(self.network, self.me, peer, latest)
                        .with_uncounted(uncounted),
                )
            }
        })
    }

    fn download_pair<'a>(
        &self,
        state: &'a mut State,
        peer: PeerId,
    ) -> Result<&'a mut DownloaderPair, StoreError> {
        Ok(match state.downloads.entry(peer) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let pair = Pair {
                    uploader: peer,
                    downloader: self.me,
                };
                let latest = self.store.latest(&pair)?;
                let last = self.store.last_proposal(&pair)?;
                entry.insert(
                    DownloaderPair::new(self.network, self.me, peer, latest)
                        .with_last_proposal(last),
                )
            }
        })
    }

    /// Reserves `len` bytes to send to `peer` under its credit `window`: counted as sent, with
    /// `credits` due for them (`len` at par, less or more under a trade), if they fit, in the
    /// same step as the check, so concurrent requests cannot overshoot the window together.
    pub fn reserve(
        &self,
        peer: PeerId,
        len: u64,
        credits: u64,
        window: u64,
    ) -> Result<Window, PairError> {
        let mut state = self.state();
        let window = window.saturating_add(state.forgiven.get(&peer).copied().unwrap_or(0));
        let pair = self.upload_pair(&mut state, peer)?;
        if !pair.may_send(len, window) {
            return Ok(Window::Full {
                unacknowledged: pair.unacknowledged(),
            });
        }
        pair.record_sent(len, credits)?;
        Ok(Window::Open)
    }

    /// Whether `len` more bytes to `peer` would fit its credit `window` now, without counting
    /// them (a request checks before it waits for its turn, and reserves after).
    pub fn check(&self, peer: PeerId, len: u64, window: u64) -> Result<Window, PairError> {
        let mut state = self.state();
        let window = window.saturating_add(state.forgiven.get(&peer).copied().unwrap_or(0));
        let pair = self.upload_pair(&mut state, peer)?;
        if pair.may_send(len, window) {
            Ok(Window::Open)
        } else {
            Ok(Window::Full {
                unacknowledged: pair.unacknowledged(),
            })
        }
    }

    /// Whether `peer` has never signed a receipt for what this node sent it.
    pub fn is_stranger(&self, peer: PeerId) -> Result<bool, StoreError> {
        let mut state = self.state();
        Ok(self.upload_pair(&mut state, peer)?.latest().is_none())
    }

    /// Writes off `bytes` sent to `peer` and never signed for: they stop counting against its
    /// credit window (the strangers' allowance wrote them off, [`tally_market::StrangerCredit`]),
    /// so a peer that does not sign is served again later, no sooner than under a new key.
    pub fn forgive(&self, peer: PeerId, bytes: u64) {
        let mut state = self.state();
        let forgiven = state.forgiven.entry(peer).or_insert(0);
        *forgiven = forgiven.saturating_add(bytes);
        // Written off, the bytes are no longer claimed after a restart either; and the marks
        // of keys that never sign stay as few as the strangers being served.
        if state.marked.remove(&peer) {
            let pair = Pair {
                uploader: self.me,
                downloader: peer,
            };
            if let Err(error) = self.store.unmark_unreceipted(&pair) {
                tracing::warn!(peer = %peer.fmt_short(), "cannot unmark a written-off pair: {error}");
            }
        }
    }

    /// Makes sure bytes may leave for `peer` now: a pair with no receipt is marked durably as
    /// sent to before its first bytes leave ([`Store::mark_unreceipted`]), so that after a
    /// restart this node still countersigns what it sent before that receipt. Nothing to do
    /// for a pair with a receipt, or one already marked; a store error means nothing may be
    /// sent.
    pub async fn mark_sending(&self, peer: PeerId) -> Result<(), PairError> {
        {
            let mut state = self.state();
            if state.marked.contains(&peer)
                || self.upload_pair(&mut state, peer)?.latest().is_some()
            {
                return Ok(());
            }
        }
        let pair = Pair {
            uploader: self.me,
            downloader: peer,
        };
        self.blocking(move |store| {
            store.mark_unreceipted(&pair)?;
            store.flush()
        })
        .await?;
        self.state().marked.insert(peer);
        Ok(())
    }

    /// Counts `len` payload bytes sent to `peer`, due at par.
    pub fn record_sent(&self, peer: PeerId, len: u64) -> Result<(), PairError> {
        let mut state = self.state();
        self.upload_pair(&mut state, peer)?.record_sent(len, len)?;
        Ok(())
    }

    /// Counts `len` verified payload bytes received from `peer`, for which `credits` are owed
    /// (`len` at par). Returns the bytes received from it that no receipt covers yet.
    pub fn record_received(&self, peer: PeerId, len: u64, credits: u64) -> Result<u64, PairError> {
        let mut state = self.state();
        let pair = self.download_pair(&mut state, peer)?;
        pair.record_received(len, credits)?;
        Ok(pair.unacknowledged())
    }

    /// Bytes received from `peer` that no receipt covers yet.
    pub fn unacknowledged_from(&self, peer: PeerId) -> Result<u64, StoreError> {
        let mut state = self.state();
        Ok(self.download_pair(&mut state, peer)?.unacknowledged())
    }

    /// Bytes sent to `peer` that no receipt covers yet.
    pub fn unacknowledged_to(&self, peer: PeerId) -> Result<u64, StoreError> {
        let mut state = self.state();
        Ok(self.upload_pair(&mut state, peer)?.unacknowledged())
    }

    /// Drops what this node holds in memory of its pairs with `peer` when nothing has happened
    /// in them: no receipt, nothing sent or received, no proposal made, no mark, nothing
    /// written off. Loading such a pair again gives the same state, so this is safe at any
    /// time; called when a peer disconnects, it keeps keys that connect and go without doing
    /// anything (a flood of fresh keys) from growing the tables for good. Returns how many of
    /// the two pairs were dropped.
    pub fn forget_idle(&self, peer: PeerId) -> usize {
        let mut state = self.state();
        let busy = state.proposing.contains(&peer)
            || state.marked.contains(&peer)
            || state.forgiven.contains_key(&peer);
        if busy {
            return 0;
        }
        let mut dropped = 0;
        if state
            .uploads
            .get(&peer)
            .is_some_and(|pair| pair.latest().is_none() && pair.sent_bytes() == 0)
        {
            state.uploads.remove(&peer);
            dropped += 1;
        }
        if state.downloads.get(&peer).is_some_and(|pair| {
            pair.latest().is_none() && pair.received_bytes() == 0 && pair.last_proposal().is_none()
        }) {
            state.downloads.remove(&peer);
            dropped += 1;
        }
        dropped
    }

    /// The pairs held in memory: (this node uploading, this node downloading).
    pub fn held(&self) -> (usize, usize) {
        let state = self.state();
        (state.uploads.len(), state.downloads.len())
    }

    /// Claims the right to propose to `peer` (one proposal in flight per pair). Returns false
    /// if one is already on its way; call [`Pairs::done_proposing`] when it is answered.
    pub fn start_proposing(&self, peer: PeerId) -> bool {
        self.state().proposing.insert(peer)
    }

    /// Releases what [`Pairs::start_proposing`] claimed.
    pub fn done_proposing(&self, peer: PeerId) {
        self.state().proposing.remove(&peer);
        self.answered.notify_waiters();
    }

    /// Completes at the next [`Pairs::done_proposing`] (for any peer) after this call, even if
    /// not polled until then: call it before [`Pairs::start_proposing`] to wait for a proposal
    /// in flight.
    pub fn proposal_answered(&self) -> Notified<'_> {
        self.answered.notified()
    }

    /// The next proposal to `peer` for what was received from it, made durable before it is
    /// returned (so it may be sent), or `None` when everything received is acknowledged.
    pub async fn propose(&self, peer: PeerId, now_ms: u64) -> Result<Option<Proposal>, PairError> {
        let proposal = {
            let mut state = self.state();
            let pair = self.download_pair(&mut state, peer)?;
            pair.propose(&self.identity, now_ms)
        };
        let Some(proposal) = proposal else {
            return Ok(None);
        };
        let body = proposal.body;
        self.blocking(move |store| {
            store.record_proposal(&body)?;
            store.flush()
        })
        .await?;
        Ok(Some(proposal))
    }

    /// Takes `peer`'s countersignature on this node's proposal: stored and flushed when it is
    /// new. Returns what the pair made of it.
    pub async fn accept_countersigned(
        &self,
        peer: PeerId,
        receipt: Receipt,
    ) -> Result<Resync, PairError> {
        let verified = receipt
            .verify(&self.network)
            .map_err(|e| PairError::Refused(e.into()))?;
        if verified.pair()
            != (Pair {
                uploader: peer,
                downloader: self.me,
            })
        {
            return Err(Refusal::NotOurProposal.into());
        }
        let outcome = {
            let mut state = self.state();
            self.download_pair(&mut state, peer)?
                .accept_countersigned(&receipt)?
        };
        self.persist(&outcome).await?;
        Ok(outcome)
    }

    /// Checks and countersigns `peer`'s proposal, stores and flushes the receipt, and returns
    /// it to be sent back. A proposal identical to the latest receipt (its answer was lost)
    /// gets that receipt again.
    pub async fn countersign(
        &self,
        peer: PeerId,
        proposal: Proposal,
    ) -> Result<Receipt, PairError> {
        let verified = {
            let mut state = self.state();
            let pair = self.upload_pair(&mut state, peer)?;
            match pair.latest() {
                Some(latest)
                    if latest.body() == proposal.body
                        && latest.sig_downloader == proposal.sig_downloader =>
                {
                    latest.verify(&self.network).map_err(Refusal::from)?
                }
                _ => pair.countersign(&self.identity, &proposal)?,
            }
        };
        // It signs: its debt is counted again from what it signed for, and its receipt stands
        // in for the mark.
        let marked = {
            let mut state = self.state();
            state.forgiven.remove(&peer);
            state.marked.remove(&peer)
        };
        let receipt = *verified.receipt();
        self.blocking(move |store| {
            store.apply(&verified)?;
            if marked {
                store.unmark_unreceipted(&verified.pair())?;
            }
            store.flush()
        })
        .await?;
        Ok(receipt)
    }

    /// The latest receipts of the two pairs with `peer`, from this node's side.
    pub fn latest_with(&self, peer: PeerId) -> Result<LatestReceipts, StoreError> {
        let mut state = self.state();
        let sender_uploaded = self.upload_pair(&mut state, peer)?.latest().copied();
        let sender_downloaded = self.download_pair(&mut state, peer)?.latest().copied();
        Ok(LatestReceipts {
            sender_uploaded,
            sender_downloaded,
        })
    }

    /// Re-syncs both pairs with `peer` from its latest receipts (on connect): the higher valid
    /// receipt wins and is stored; a contradiction is stored as a conflict proof. Returns the
    /// proofs found.
    pub async fn resync(
        &self,
        peer: PeerId,
        theirs: LatestReceipts,
    ) -> Result<Vec<ConflictProof>, PairError> {
        // What the peer uploaded to us is our download pair with it, and the reverse.
        let outcomes = {
            let mut state = self.state();
            let down = self
                .download_pair(&mut state, peer)?
                .resync(theirs.sender_uploaded.as_ref())?;
            let up = self
                .upload_pair(&mut state, peer)?
                .resync(theirs.sender_downloaded.as_ref())?;
            [down, up]
        };
        let mut proofs = Vec::new();
        for outcome in &outcomes {
            self.persist(outcome).await?;
            if let Resync::Conflict(proof) = outcome {
                proofs.push(**proof);
            }
        }
        Ok(proofs)
    }

    /// Stores what a re-sync or countersignature taught this node.
    async fn persist(&self, outcome: &Resync) -> Result<(), PairError> {
        match outcome {
            Resync::TheirsNewer(verified) => {
                let verified: VerifiedReceipt = *verified;
                self.blocking(move |store| {
                    let applied = store.apply(&verified)?;
                    store.flush()?;
                    Ok(applied)
                })
                .await
                .map(|_: Applied| ())
            }
            Resync::Conflict(proof) => {
                let proof = **proof;
                self.blocking(move |store| {
                    store.add_conflict(&proof)?;
                    store.flush()
                })
                .await
            }
            Resync::Agree | Resync::OursNewer => Ok(()),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PairError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| PairError::Cancelled(e.to_string()))?
            .map_err(PairError::from)
    }
}
