//! The upload scheduler: which waiting chunk request this node serves next.
//!
//! Owns the queues of requests from downloaders, the weights derived from their standing, the
//! newcomers' slice, the queue caps and the enforcement of the [`UploadBudget`]. It keeps no
//! clock: [`Scheduler::next`] takes the time only to charge the budget.
//!
//! # How service is shared
//!
//! Waiting peers fall in two classes. **Floor** peers have standing 0 (freeriders and brand-new
//! identities alike); **standing** peers have standing above 0.
//!
//! - Inside the standing class, service follows **weighted fair queueing** (start-time fair
//!   queueing, the virtual-time form of deficit round robin): each waiting peer carries a virtual
//!   start tag; the peer with the smallest tag is served next, and serving `b` bytes advances its
//!   tag by `b / weight`. A peer whose queue was empty re-enters at the current virtual time, so
//!   idling earns no credit. The weight is **`1 + K · standing`** (`K` =
//!   [`SchedulerConfig::standing_gain`], default 9, so weights run from 1 up to 10, the range of
//!   eMule's credit modifier). Backlogged peers receive bytes in proportion to their weights
//!   within one request's size per peer (the DRR/SFQ fairness bound), and at equal tags the peer
//!   with the higher weight, the one this node owes most, goes first (FairTorrent's rule).
//! - Inside the floor class, service is byte-fair **round robin**: the same queueing with equal
//!   weights.
//! - Between the classes, the same start-tag rule shares service with the floor class's share
//!   `φ`, the **floor slice**. With [`FloorPolicy::Capped`] (the default) `φ = min(slice,
//!   n·1 / (n·1 + W))` for `n` waiting floor peers and `W` the total weight of waiting standing
//!   peers: a floor peer weighs like a standing peer of weight 1 (standing just above 0) and the
//!   floor peers together never take more than the slice (default 20%). Raising a peer's standing,
//!   from the floor too, then never lowers its share, and leaving one's identity for a fresh one
//!   (whitewashing) never raises it. With [`FloorPolicy::Reserved`] the floor peers together get
//!   exactly the slice whenever both classes wait, however few they are (BitTorrent's optimistic
//!   unchoke, Swarm's free allowance), at the price of those two properties near the floor.
//! - The scheduler is work-conserving: when only one class waits, it gets all the service.
//!
//! # Budget
//!
//! With an [`UploadBudget`] set, [`Scheduler::next`] charges each request it hands out against
//! it at `now_ms`. When the next request in fair order does not fit, nothing is handed out: the
//! request stays at the head and `next` returns [`BudgetExhausted`] with the time the budget
//! resets, for the node to sleep until. A budget whose limit is smaller than
//! [`SchedulerConfig::max_request_bytes`] is refused, so no request can wait forever.
//!
//! # Peers' lifetime
//!
//! A peer is known from its first [`set_standing`](Scheduler::set_standing) or
//! [`enqueue`](Scheduler::enqueue) until [`remove_peer`](Scheduler::remove_peer), which the node
//! calls when the peer disconnects. In between the scheduler keeps its standing and its virtual
//! tag even while its queue is empty: forgetting the tag would let a peer that keeps a single
//! request outstanding re-enter at the front every time. Requests are bounded by the caps in
//! [`SchedulerConfig`]; known peers are bounded by the node's connections.
//!
//! # Costs
//!
//! `enqueue`, `next`, `set_standing`, `position` are O(log n) in the number of known peers;
//! `next` allocates nothing once the structures have grown to their working size;
//! `remove_peer` is O(log n) plus its requests; `shares` is O(n).

mod order;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tally_ledger::PeerId;

use crate::budget::{BudgetExhausted, UploadBudget};
use crate::window::clamp_unit;
use order::{Key, OrderTree};

/// A weight of 1 in the scheduler's fixed point.
const WEIGHT_ONE: u64 = 1 << 16;
/// The largest `standing_gain` accepted; larger values are clamped.
const MAX_GAIN: f64 = 1.0e6;
/// Fixed-point scale of class tags: a byte served by a class of share 1 advances its tag by
/// this much.
const CLASS_SCALE: f64 = 65_536.0;

/// How the floor slice is applied when floor peers and standing peers both wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorPolicy {
    /// Floor peers weigh like standing peers of weight 1, and together take at most the slice.
    /// Monotone in standing and whitewashing-proof.
    #[default]
    Capped,
    /// Floor peers together get exactly the slice whenever both classes wait.
    Reserved,
}

/// The scheduler's settings. Out-of-range values are clamped by [`Scheduler::new`] (see each
/// field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// The floor peers' slice of service when standing peers also wait, in `[0, 1]` (default
    /// 0.2). NaN counts as the default.
    pub floor_slice: f64,
    /// How the slice is applied (default [`FloorPolicy::Capped`]).
    pub floor_policy: FloorPolicy,
    /// `K` in `weight = 1 + K · standing` (default 9). NaN and negatives count as 0 (every
    /// standing peer weighs 1), values above 10^6 as 10^6.
    pub standing_gain: f64,
    /// Most requests waiting per peer (default 64).
    pub max_requests_per_peer: usize,
    /// Most requests waiting in all (default 65,536).
    pub max_requests_total: usize,
    /// Largest request accepted, in bytes (default 16 MiB).
    pub max_request_bytes: u64,
    /// Seeds the balancing of the internal order tree (never the order of service).
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            floor_slice: 0.2,
            floor_policy: FloorPolicy::Capped,
            standing_gain: 9.0,
            max_requests_per_peer: 64,
            max_requests_total: 65_536,
            max_request_bytes: 16 << 20,
            seed: 0x7a11_7a11_7a11_7a11,
        }
    }
}

impl SchedulerConfig {
    fn sanitized(mut self) -> Self {
        let default = Self::default();
        self.floor_slice = if self.floor_slice.is_nan() {
            default.floor_slice
        } else {
            self.floor_slice.clamp(0.0, 1.0)
        };
        self.standing_gain = if self.standing_gain.is_nan() {
            0.0
        } else {
            self.standing_gain.clamp(0.0, MAX_GAIN)
        };
        self
    }

    /// The scheduling weight of a peer of `standing` (clamped to `[0, 1]`, NaN as 0): 1 at the
    /// floor, `1 + K · standing` above it. Floor peers are served in their own class; there,
    /// and against standing peers under [`FloorPolicy::Capped`], they weigh 1.
    pub fn weight(&self, standing: f64) -> f64 {
        weight_fixed(self.sanitized().standing_gain, clamp_unit(standing)) as f64
            / WEIGHT_ONE as f64
    }
}

/// Which class a peer is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerClass {
    /// Standing 0: freeriders and newcomers, served round robin within the floor slice.
    Floor,
    /// Standing above 0: served by weight.
    Standing,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// Requests must ask for at least one byte.
    #[error("empty request")]
    EmptyRequest,
    /// The request is larger than [`SchedulerConfig::max_request_bytes`].
    #[error("request of {bytes} bytes is larger than the {max} bytes allowed")]
    RequestTooLarge {
        /// The request's size.
        bytes: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// The peer already has [`SchedulerConfig::max_requests_per_peer`] requests waiting.
    #[error("peer has {cap} requests waiting already")]
    PeerQueueFull {
        /// The per-peer cap.
        cap: usize,
    },
    /// [`SchedulerConfig::max_requests_total`] requests are waiting already.
    #[error("upload queue full at {cap} requests")]
    QueueFull {
        /// The total cap.
        cap: usize,
    },
}

/// A refused request, handed back with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request refused: {reason}")]
pub struct Refused<R> {
    /// The request, returned to the caller.
    pub request: R,
    /// Why it was refused.
    pub reason: EnqueueError,
}

/// A budget the scheduler cannot enforce without stalling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("budget limit of {limit} bytes is below the largest request of {max_request_bytes} bytes")]
pub struct BudgetTooSmall {
    /// The budget's smallest limit.
    pub limit: u64,
    /// [`SchedulerConfig::max_request_bytes`].
    pub max_request_bytes: u64,
}

/// The request to serve now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dequeued<R> {
    /// The downloader.
    pub peer: PeerId,
    /// The caller's handle of the request.
    pub request: R,
    /// Its size in bytes (already charged to the budget).
    pub bytes: u64,
}

/// Where a peer stands in this node's upload queue, for status pages and "explain my standing".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuePosition {
    /// The class it is served in.
    pub class: PeerClass,
    /// Its place among the waiting peers of its class in the order of service, 1 = next.
    pub rank: usize,
    /// Waiting peers in its class.
    pub class_waiting: usize,
    /// Its standing, as clamped by the scheduler.
    pub standing: f64,
    /// Its scheduling weight (1 in the floor class).
    pub weight: f64,
    /// The fraction of this node's upload it receives while everyone now waiting stays
    /// waiting.
    pub share: f64,
    /// Its requests waiting.
    pub requests: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One waiting peer's position, as listed by [`Scheduler::shares`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeerShare {
    /// The downloader.
    pub peer: PeerId,
    /// Where it stands.
    pub position: QueuePosition,
}

/// How much is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Peers with requests waiting.
    pub peers: usize,
    /// Requests waiting.
    pub requests: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What the scheduler knows of one peer.
#[derive(Debug)]
struct PeerState<R> {
    standing: f64,
    class: PeerClass,
    /// Fixed-point weight (`WEIGHT_ONE` = 1); `WEIGHT_ONE` in the floor class.
    weight: u64,
    queue: VecDeque<(R, u64)>,
    bytes: u64,
    /// Virtual start tag of its next request, in its class's virtual time.
    tag: u128,
    /// Its key in its class's order while it has requests waiting.
    key: Option<Key>,
}

/// One class's fair queue.
#[derive(Debug, Clone)]
struct ClassQueue {
    order: OrderTree,
    /// The start tag of the request this class served last.
    vtime: u128,
    /// The class's start tag in the service shared between classes.
    tag: u128,
    /// Total fixed-point weight of its waiting peers.
    weight_sum: u128,
}

impl ClassQueue {
    fn new(seed: u64) -> Self {
        ClassQueue {
            order: OrderTree::new(seed),
            vtime: 0,
            tag: 0,
            weight_sum: 0,
        }
    }
}

/// Shares this node's upload among waiting downloaders by standing; see the module docs.
///
/// `R` is the caller's handle of a request (a stream, a chunk id, a reply channel...).
#[derive(Debug)]
pub struct Scheduler<R> {
    config: SchedulerConfig,
    peers: BTreeMap<PeerId, PeerState<R>>,
    floor: ClassQueue,
    standing: ClassQueue,
    /// The class start tag of the request served last.
    class_vtime: u128,
    requests: usize,
    bytes: u64,
    seq: u64,
    budget: Option<UploadBudget>,
}

impl<R> Scheduler<R> {
    /// An empty scheduler; out-of-range settings are clamped (see [`SchedulerConfig`]).
    pub fn new(config: SchedulerConfig) -> Self {
        let config = config.sanitized();
        Scheduler {
            config,
            peers: BTreeMap::new(),
            floor: ClassQueue::new(config.seed),
            standing: ClassQueue::new(config.seed ^ 0x5555_5555_5555_5555),
            class_vtime: 0,
            requests: 0,
            bytes: 0,
            seq: 0,
            budget: None,
        }
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Sets or clears the upload budget that [`next`](Self::next) enforces. Refused if a limit
    /// is below [`SchedulerConfig::max_request_bytes`], since such a request could never be
    /// served.
    pub fn set_budget(&mut self, budget: Option<UploadBudget>) -> Result<(), BudgetTooSmall> {
        if let Some(limit) = budget.as_ref().and_then(UploadBudget::smallest_limit)
            && limit < self.config.max_request_bytes
        {
            return Err(BudgetTooSmall {
                limit,
                max_request_bytes: self.config.max_request_bytes,
            });
        }
        self.budget = budget;
        Ok(())
    }

    /// The budget in force, if any (for its [`status`](UploadBudget::status)).
    pub fn budget(&self) -> Option<&UploadBudget> {
        self.budget.as_ref()
    }

    /// Gives back to the budget `bytes` of a handed-out request that were not uploaded after
    /// all (the transfer was cut short).
    pub fn refund(&mut self, now_ms: u64, bytes: u64) {
        if let Some(budget) = &mut self.budget {
            budget.refund(now_ms, bytes);
        }
    }

    /// Sets a peer's standing (clamped to `[0, 1]`: NaN and negatives count as 0, the floor;
    /// above 1 as 1). Takes effect for its next request; a peer crossing 0 changes class and
    /// starts at its new class's current virtual time. Unknown peers are added, and kept until
    /// [`remove_peer`](Self::remove_peer).
    pub fn set_standing(&mut self, peer: PeerId, standing: f64) {
        let standing = clamp_unit(standing);
        let class = class_of(standing);
        let weight = match class {
            PeerClass::Floor => WEIGHT_ONE,
            PeerClass::Standing => weight_fixed(self.config.standing_gain, standing),
        };
        let state = self.peers.entry(peer).or_insert_with(|| new_peer(standing));
        let waiting = state.key.is_some();
        if waiting {
            detach(&mut self.floor, &mut self.standing, state);
        }
        if state.class != class {
            state.tag = 0;
        }
        state.standing = standing;
        state.weight = weight;
        state.class = class;
        if waiting {
            attach(
                &mut self.floor,
                &mut self.standing,
                self.class_vtime,
                &mut self.seq,
                peer,
                state,
            );
        }
    }

    /// The standing the scheduler holds for `peer` (0 if unknown).
    pub fn standing(&self, peer: &PeerId) -> f64 {
        self.peers.get(peer).map_or(0.0, |s| s.standing)
    }

    /// Queues a request of `bytes` from `peer` (unknown peers start at the floor). Refused,
    /// with the request handed back, if it is empty or too large or a queue cap is reached.
    pub fn enqueue(&mut self, peer: PeerId, request: R, bytes: u64) -> Result<(), Refused<R>> {
        let refuse = |request, reason| Err(Refused { request, reason });
        if bytes == 0 {
            return refuse(request, EnqueueError::EmptyRequest);
        }
        if bytes > self.config.max_request_bytes {
            let max = self.config.max_request_bytes;
            return refuse(request, EnqueueError::RequestTooLarge { bytes, max });
        }
        let waiting = self.peers.get(&peer).map_or(0, |s| s.queue.len());
        if waiting >= self.config.max_requests_per_peer {
            let cap = self.config.max_requests_per_peer;
            return refuse(request, EnqueueError::PeerQueueFull { cap });
        }
        if self.requests >= self.config.max_requests_total {
            let cap = self.config.max_requests_total;
            return refuse(request, EnqueueError::QueueFull { cap });
        }
        let state = self.peers.entry(peer).or_insert_with(|| new_peer(0.0));
        state.queue.push_back((request, bytes));
        state.bytes = state.bytes.saturating_add(bytes);
        self.requests += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if state.key.is_none() {
            attach(
                &mut self.floor,
                &mut self.standing,
                self.class_vtime,
                &mut self.seq,
                peer,
                state,
            );
        }
        Ok(())
    }

    /// The request to serve now, charged to the budget at `now_ms`; `Ok(None)` when nothing
    /// waits. When the budget cannot take the next request, nothing changes and the error says
    /// when the budget resets.
    pub fn next(&mut self, now_ms: u64) -> Result<Option<Dequeued<R>>, BudgetExhausted> {
        let Some(class) = self.pick_class() else {
            return Ok(None);
        };
        let floor_share = self.floor_share();
        let class_share = match class {
            PeerClass::Floor => floor_share,
            PeerClass::Standing => 1.0 - floor_share,
        };
        let cq = match class {
            PeerClass::Floor => &mut self.floor,
            PeerClass::Standing => &mut self.standing,
        };
        let Some((key, peer)) = cq.order.first() else {
            return Ok(None);
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            // Never: every key in an order belongs to a known peer. Drop the stray key.
            cq.order.remove(&key);
            return Ok(None);
        };
        let Some(&(_, bytes)) = state.queue.front() else {
            cq.order.remove(&key);
            state.key = None;
            return Ok(None);
        };
        if let Some(budget) = &mut self.budget {
            budget.try_spend(now_ms, bytes)?;
        }
        let Some((request, bytes)) = state.queue.pop_front() else {
            return Ok(None);
        };
        state.bytes = state.bytes.saturating_sub(bytes);
        self.requests = self.requests.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);

        // The peer's tag: this request started at `state.tag`; the next one starts after it.
        detach_from(cq, state);
        cq.vtime = state.tag;
        state.tag = state
            .tag
            .saturating_add((u128::from(bytes) << 32) / u128::from(state.weight.max(1)));
        if !state.queue.is_empty() {
            let vtime = cq.vtime;
            attach_to(cq, vtime, &mut self.seq, peer, state);
        }
        // The class's tag, likewise, at its current share.
        self.class_vtime = cq.tag;
        let advance = bytes as f64 * CLASS_SCALE / class_share.max(1.0e-9);
        cq.tag = cq.tag.saturating_add(advance as u128);
        Ok(Some(Dequeued {
            peer,
            request,
            bytes,
        }))
    }

    /// Drops a peer (it disconnected): its queue and what the scheduler knew of it. Returns its
    /// waiting requests, oldest first.
    pub fn remove_peer(&mut self, peer: &PeerId) -> Vec<R> {
        let Some(mut state) = self.peers.remove(peer) else {
            return Vec::new();
        };
        if state.key.is_some() {
            detach(&mut self.floor, &mut self.standing, &mut state);
        }
        self.requests = self.requests.saturating_sub(state.queue.len());
        self.bytes = self.bytes.saturating_sub(state.bytes);
        state
            .queue
            .into_iter()
            .map(|(request, _)| request)
            .collect()
    }

    /// Peers, requests and bytes waiting.
    pub fn queue_depth(&self) -> QueueDepth {
        QueueDepth {
            peers: self.floor.order.len() + self.standing.order.len(),
            requests: self.requests,
            bytes: self.bytes,
        }
    }

    /// The floor class's current share of service: what it gets while both classes keep
    /// waiting (1 when only floor peers wait, 0 when none do).
    pub fn floor_share(&self) -> f64 {
        let n = self.floor.order.len();
        if n == 0 {
            return 0.0;
        }
        if self.standing.order.is_empty() {
            return 1.0;
        }
        let slice = self.config.floor_slice;
        match self.config.floor_policy {
            FloorPolicy::Reserved => slice,
            FloorPolicy::Capped => {
                let floor_weight = n as f64 * WEIGHT_ONE as f64;
                let fair = floor_weight / (floor_weight + self.standing.weight_sum as f64);
                slice.min(fair)
            }
        }
    }

    /// Where `peer` stands in the upload queue; `None` unless it has requests waiting.
    pub fn position(&self, peer: &PeerId) -> Option<QueuePosition> {
        let state = self.peers.get(peer)?;
        let key = state.key?;
        let cq = self.class_queue(state.class);
        Some(self.position_of(state, cq.order.rank(&key) + 1))
    }

    /// Every waiting peer's position: the standing class in order of service, then the floor
    /// class in order of service.
    pub fn shares(&self) -> Vec<PeerShare> {
        let mut out = Vec::with_capacity(self.queue_depth().peers);
        for class in [PeerClass::Standing, PeerClass::Floor] {
            let mut rank = 0;
            self.class_queue(class).order.for_each(|_, peer| {
                rank += 1;
                if let Some(state) = self.peers.get(&peer) {
                    let position = self.position_of(state, rank);
                    out.push(PeerShare { peer, position });
                }
            });
        }
        out
    }

    fn class_queue(&self, class: PeerClass) -> &ClassQueue {
        match class {
            PeerClass::Floor => &self.floor,
            PeerClass::Standing => &self.standing,
        }
    }

    fn position_of(&self, state: &PeerState<R>, rank: usize) -> QueuePosition {
        let cq = self.class_queue(state.class);
        let floor_share = self.floor_share();
        let share = match state.class {
            PeerClass::Floor => floor_share / cq.order.len().max(1) as f64,
            PeerClass::Standing => {
                (1.0 - floor_share) * state.weight as f64 / (cq.weight_sum.max(1) as f64)
            }
        };
        QueuePosition {
            class: state.class,
            rank,
            class_waiting: cq.order.len(),
            standing: state.standing,
            weight: state.weight as f64 / WEIGHT_ONE as f64,
            share,
            requests: state.queue.len(),
            bytes: state.bytes,
        }
    }

    /// The class to serve next, if any waits.
    fn pick_class(&self) -> Option<PeerClass> {
        match (self.floor.order.is_empty(), self.standing.order.is_empty()) {
            (true, true) => None,
            (false, true) => Some(PeerClass::Floor),
            (true, false) => Some(PeerClass::Standing),
            (false, false) => {
                let share = self.floor_share();
                Some(if share <= 0.0 {
                    PeerClass::Standing
                } else if share >= 1.0 || self.floor.tag < self.standing.tag {
                    PeerClass::Floor
                } else {
                    PeerClass::Standing
                })
            }
        }
    }
}

fn class_of(standing: f64) -> PeerClass {
    if standing > 0.0 {
        PeerClass::Standing
    } else {
        PeerClass::Floor
    }
}

/// `1 + gain · standing` in fixed point, at least `WEIGHT_ONE`.
fn weight_fixed(gain: f64, standing: f64) -> u64 {
    let w = ((1.0 + gain * standing) * WEIGHT_ONE as f64).round();
    (w as u64).max(WEIGHT_ONE)
}

fn new_peer<R>(standing: f64) -> PeerState<R> {
    PeerState {
        standing,
        class: class_of(standing),
        weight: WEIGHT_ONE,
        queue: VecDeque::new(),
        bytes: 0,
        tag: 0,
        key: None,
    }
}

/// Takes a waiting peer out of its class's order (its tag is kept).
fn detach<R>(floor: &mut ClassQueue, standing: &mut ClassQueue, state: &mut PeerState<R>) {
    match state.class {
        PeerClass::Floor => detach_from(floor, state),
        PeerClass::Standing => detach_from(standing, state),
    }
}

fn detach_from<R>(cq: &mut ClassQueue, state: &mut PeerState<R>) {
    if let Some(key) = state.key.take() {
        cq.order.remove(&key);
        cq.weight_sum = cq.weight_sum.saturating_sub(u128::from(state.weight));
    }
}

/// Puts a peer with requests waiting into its class's order.
fn attach<R>(
    floor: &mut ClassQueue,
    standing: &mut ClassQueue,
    class_vtime: u128,
    seq: &mut u64,
    peer: PeerId,
    state: &mut PeerState<R>,
) {
    let cq = match state.class {
        PeerClass::Floor => floor,
        PeerClass::Standing => standing,
    };
    if cq.order.is_empty() {
        // A class that was idle re-enters at the current virtual time: idling earns nothing.
        cq.tag = cq.tag.max(class_vtime);
    }
    let vtime = cq.vtime;
    attach_to(cq, vtime, seq, peer, state);
}

fn attach_to<R>(
    cq: &mut ClassQueue,
    vtime: u128,
    seq: &mut u64,
    peer: PeerId,
    state: &mut PeerState<R>,
) {
    state.tag = state.tag.max(vtime);
    *seq = seq.wrapping_add(1);
    let key = Key {
        tag: state.tag,
        inv_weight: u64::MAX - state.weight,
        seq: *seq,
    };
    cq.order.insert(key, peer);
    cq.weight_sum = cq.weight_sum.saturating_add(u128::from(state.weight));
    state.key = Some(key);
}
