//! Keeps the market's [`Standing`] in step with the receipt store.
//!
//! Every receipt the store takes — countersigned in a transfer, pulled by gossip, imported —
//! changes the sync index, whose journal lists what changed ([`SyncItems::changed_since`]). A
//! task of the node reads the journal every [`REFRESH`] and feeds each changed pair's latest
//! receipt to [`Standing::observe`], one incremental update each; newly dishonest keys are
//! marked. Only if more changed than the journal holds between two reads is the standing
//! rebuilt from the store.
//!
//! [`SyncItems::changed_since`]: tally_ledger::sync::SyncItems::changed_since

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tally_ledger::sync::key_pair;
use tally_ledger::{PeerId, Store, StoreError};
use tally_market::{Standing, StandingParams};

use super::Shared;

/// How often the standing takes the store's new receipts.
pub const REFRESH: Duration = Duration::from_millis(250);

/// The standing and how far into the store's changes it has read.
pub struct StandingKeeper {
    state: Mutex<State>,
}

struct State {
    standing: Standing,
    /// The sync index's mark up to which changes were taken.
    mark: u64,
    dishonest: HashSet<PeerId>,
    /// Keys marked dishonest since the last [`StandingKeeper::take_newly_dishonest`].
    newly_dishonest: Vec<PeerId>,
}

impl StandingKeeper {
    /// Builds the standing of every peer at `me` from everything `store` holds.
    pub fn build(store: &Store, me: PeerId, params: StandingParams) -> Result<Self, StoreError> {
        Ok(Self {
            state: Mutex::new(State::build(store, me, params)?),
        })
    }

    /// Reads the standing, as of the last refresh.
    pub fn with<R>(&self, read: impl FnOnce(&Standing) -> R) -> R {
        read(&self.lock().standing)
    }

    /// Keys marked dishonest so far.
    pub fn dishonest_count(&self) -> usize {
        self.lock().dishonest.len()
    }

    /// The keys that refreshes marked dishonest since the last call (the event stream's
    /// `conflict` events).
    pub fn take_newly_dishonest(&self) -> Vec<PeerId> {
        std::mem::take(&mut self.lock().newly_dishonest)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only means a panic elsewhere; the state is whole after every call.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the receipts the store took since the last call. Returns how many pairs changed
    /// (or `None` when it had to rebuild).
    pub fn refresh(&self, store: &Store) -> Result<Option<usize>, StoreError> {
        // Only the refresh task moves the mark: the store is read without the lock and the
        // result applied under it, so serving a chunk (which reads standing) never waits on
        // the disk.
        let (since, me, params) = {
            let state = self.lock();
            (state.mark, state.standing.me(), state.standing.params())
        };
        let (covered, changed, mark) = {
            let items = store.sync_items();
            let mark = items.mark();
            if items.journal_covers(since) {
                (true, items.changed_since(since, usize::MAX), mark)
            } else {
                (false, Vec::new(), mark)
            }
        };
        if !covered {
            let rebuilt = State::build(store, me, params)?;
            *self.lock() = rebuilt;
            return Ok(None);
        }
        let mut receipts = Vec::with_capacity(changed.len());
        for (_, key) in &changed {
            receipts.extend(store.latest(&key_pair(key))?);
        }
        let dishonest = store.dishonest()?;
        let mut state = self.lock();
        for receipt in &receipts {
            state
                .standing
                .observe(receipt.uploader, receipt.downloader, receipt.credits);
        }
        state.mark = mark;
        for peer in dishonest {
            if state.dishonest.insert(peer) {
                state.standing.mark_dishonest(peer);
                state.newly_dishonest.push(peer);
            }
        }
        Ok(Some(changed.len()))
    }
}

impl State {
    fn build(store: &Store, me: PeerId, params: StandingParams) -> Result<Self, StoreError> {
        // The mark first: a receipt stored during the walk below is taken again next refresh.
        let mark = store.sync_items().mark();
        let mut standing = Standing::new(me, params);
        for receipt in store.iter() {
            let receipt = receipt?;
            standing.observe(receipt.uploader, receipt.downloader, receipt.credits);
        }
        let dishonest: HashSet<PeerId> = store.dishonest()?.into_iter().collect();
        for peer in &dishonest {
            standing.mark_dishonest(*peer);
        }
        Ok(Self {
            standing,
            mark,
            dishonest,
            newly_dishonest: Vec::new(),
        })
    }
}

/// Starts the task that keeps the standing in step with the store.
pub fn start(shared: &Arc<Shared>) {
    let shared2 = Arc::clone(shared);
    shared.tasks.spawn(async move {
        loop {
            tokio::select! {
                () = shared2.cancel.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
            let shared3 = Arc::clone(&shared2);
            let refreshed =
                tokio::task::spawn_blocking(move || shared3.standing.refresh(&shared3.store)).await;
            for peer in shared2.standing.take_newly_dishonest() {
                shared2.events.conflict(peer);
            }
            match refreshed {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => tracing::info!(
                    "more receipts arrived than the change journal holds: standing rebuilt from the store"
                ),
                Ok(Err(error)) => tracing::warn!("cannot update standing from the store: {error}"),
                Err(error) => tracing::warn!("the standing task failed: {error}"),
            }
        }
    });
}
