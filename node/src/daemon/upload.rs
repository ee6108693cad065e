//! Who is uploaded to next: every chunk this node serves waits here for its turn.
//!
//! A chunk request that passed its credit window is queued in the market's [`Scheduler`] under
//! its peer, weighted by the peer's standing at this node. One dispatcher task hands out turns
//! in the scheduler's order: a turn needs one of [`MAX_UPLOADS_IN_FLIGHT`] slots (so, when the
//! network is the limit, the order of service follows standing too) and the upload rate limit's
//! tokens. A slot is released when its chunk has been written. Requests beyond the scheduler's
//! caps are refused with "try later" rather than queued without bound.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tally_ledger::PeerId;
use tally_market::{
    BudgetStatus, BudgetTooSmall, Dequeued, QueuePosition, Refused, Scheduler, SchedulerConfig,
    UploadBudget,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::{Shared, now_ms};

/// Chunks written to peers at once, at most.
pub const MAX_UPLOADS_IN_FLIGHT: usize = 8;

/// A turn to upload one chunk; the slot is free again when it drops.
pub struct UploadTurn {
    _slot: OwnedSemaphorePermit,
}

/// The queue of chunk requests waiting for their turn.
pub struct UploadQueue {
    config: SchedulerConfig,
    scheduler: Mutex<Scheduler<oneshot::Sender<UploadTurn>>>,
    slots: Arc<Semaphore>,
    wake: Notify,
}

impl UploadQueue {
    /// An empty queue.
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            scheduler: Mutex::new(Scheduler::new(config)),
            config,
            slots: Arc::new(Semaphore::new(MAX_UPLOADS_IN_FLIGHT)),
            wake: Notify::new(),
        }
    }

    fn scheduler(&self) -> MutexGuard<'_, Scheduler<oneshot::Sender<UploadTurn>>> {
        self.scheduler
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives back to the upload budget `bytes` a granted turn did not send.
    pub fn refund(&self, now_ms: u64, bytes: u64) {
        self.scheduler().refund(now_ms, bytes);
    }

    /// Waits for `peer`'s turn to be sent `bytes`, its standing being `standing`. `Err` with
    /// why when the queue refuses it (full) or the node is stopping.
    pub async fn turn(
        &self,
        peer: PeerId,
        standing: f64,
        bytes: u64,
    ) -> Result<UploadTurn, String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut scheduler = self.scheduler();
            scheduler.set_standing(peer, standing);
            if let Err(Refused { reason, .. }) = scheduler.enqueue(peer, tx, bytes) {
                return Err(format!(
                    "the upload queue is full ({reason}); ask again later"
                ));
            }
        }
        self.wake.notify_one();
        rx.await
            .map_err(|_| "the node is stopping or dropped the request".to_owned())
    }

    /// Drops every waiting request (their waiters see an error): the node is stopping.
    fn close(&self) {
        let empty = Scheduler::new(self.config);
        drop(std::mem::replace(&mut *self.scheduler(), empty));
    }

    /// Where `peer` stands in the queue, if it has requests waiting.
    pub fn position(&self, peer: &PeerId) -> Option<QueuePosition> {
        self.scheduler().position(peer)
    }

    /// Sets the upload budgets (data caps); unlimited ones still count what is used.
    pub fn set_budget(&self, budget: UploadBudget) -> Result<(), BudgetTooSmall> {
        self.scheduler().set_budget(Some(budget))
    }

    /// Changes the budgets' limits at runtime (`None`: no limit), keeping what was uploaded in
    /// the current day and month. Refused, leaving the budgets as they were, if a limit is
    /// smaller than one upload request.
    pub fn set_budget_limits(
        &self,
        daily: Option<u64>,
        monthly: Option<u64>,
    ) -> Result<(), BudgetTooSmall> {
        let mut scheduler = self.scheduler();
        let mut budget = scheduler.budget().cloned().unwrap_or_default();
        budget.set_limits(daily, monthly);
        scheduler.set_budget(Some(budget))
    }

    /// The budgets' limits in force: (daily, monthly), `None` for no limit.
    pub fn budget_limits(&self) -> (Option<u64>, Option<u64>) {
        self.scheduler()
            .budget()
            .map_or((None, None), |b| (b.daily_limit(), b.monthly_limit()))
    }

    /// What the budgets allow now.
    pub fn budget_status(&self, now_ms: u64) -> Option<BudgetStatus> {
        self.scheduler().budget().map(|b| b.status(now_ms))
    }

    /// Whether the budgets allow `bytes` more now; if not, when they reset (Unix ms).
    pub fn budget_allows(&self, now_ms: u64, bytes: u64) -> Result<(), u64> {
        match self.scheduler().budget() {
            Some(budget) => budget.check(now_ms, bytes).map_err(|e| e.resets_at_ms),
            None => Ok(()),
        }
    }

    /// The scheduling weight of a peer of `standing`.
    pub fn weight(&self, standing: f64) -> f64 {
        self.config.weight(standing)
    }

    /// Peers, requests and bytes waiting.
    pub fn queue_depth(&self) -> tally_market::QueueDepth {
        self.scheduler().queue_depth()
    }

    /// Upload slots taken: chunks being written, and the one the dispatcher holds while it
    /// waits for the next request.
    pub fn in_flight(&self) -> usize {
        MAX_UPLOADS_IN_FLIGHT.saturating_sub(self.slots.available_permits())
    }
}

/// Starts the dispatcher that hands out turns.
pub fn start(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        dispatch(&shared).await;
        // No turn will come: release every waiter, so no request task outlives the node.
        shared.uploads.close();
    });
}

async fn dispatch(shared: &Arc<Shared>) {
    loop {
        // A slot first, so the next request is chosen when it can be served.
        let slot = tokio::select! {
            () = shared.cancel.cancelled() => return,
            slot = Arc::clone(&shared.uploads.slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let next = loop {
            let wake = shared.uploads.wake.notified();
            let next = shared.uploads.scheduler().next(now_ms());
            match next {
                Ok(Some(next)) => break next,
                Ok(None) => {
                    tokio::select! {
                        () = shared.cancel.cancelled() => return,
                        () = wake => {}
                    }
                }
                Err(exhausted) => {
                    // The day's or month's budget is spent: nothing is sent until it resets.
                    let wait = exhausted.resets_at_ms.saturating_sub(now_ms()).max(1_000);
                    tracing::info!(
                        resets_at_ms = exhausted.resets_at_ms,
                        "the upload budget is spent; uploads wait until it resets"
                    );
                    tokio::select! {
                        () = shared.cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    }
                }
            }
        };
        let Dequeued { request, bytes, .. } = next;
        if request.is_closed() {
            // Its requester gave up (its stream or connection closed): the turn costs no
            // tokens and no budget, and the slot goes to the next.
            shared.uploads.scheduler().refund(now_ms(), bytes);
            continue;
        }
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = shared.upload_limit.acquire(bytes) => {}
        }
        // A requester that gave up (its stream closed) frees the slot at once.
        let _ = request.send(UploadTurn { _slot: slot });
    }
}
