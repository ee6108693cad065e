//! The node's event bus: what `GET /api/v1/events` streams. Owns event ids, the ring of recent
//! events kept for resumption, the fan-out to subscribers, and the hooks the daemon calls where
//! things happen (one call per site).
//!
//! **Bounds.** Every event gets the next id (from 1, increasing within a run). The last
//! [`RING_CAPACITY`] events are kept so a client that reconnects with `Last-Event-ID` gets
//! exactly what it missed; one asking for an id older than the ring (or from another run) gets
//! a `reset` and must refetch its state. Subscribers share one broadcast channel of
//! [`SUBSCRIBER_BUFFER`] slots: a subscriber that falls that far behind does not hold memory
//! for itself, it resumes from the ring where it stopped, or gets a `reset` if the ring has
//! moved past it. Download progress is published at most every [`DOWNLOAD_PROGRESS_EVERY`]
//! per download (and at every change of state); rates every [`TICK`].
//!
//! Publishing takes one short lock (id, ring, broadcast under it, so a subscriber's backlog
//! and its live events neither overlap nor leave a gap) and never waits for a subscriber.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_ledger::{PeerId, Receipt};
use tally_market::OrderId;
use tally_web::events::{
    ConflictEvent, EventKind, EventStream, NodeEvent, ReceiptEvent, ReceiptRole, TransferEvent,
};
use tally_web::model::HexId;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::api::{NodeHandle, download_info, order_info, trade_info};
use super::fetch::{DownloadStatus, Phase};
use super::{Shared, now_ms};
use crate::content::ContentId;
use crate::market::Learned;

/// Events kept for clients that reconnect.
pub const RING_CAPACITY: usize = 4096;
/// Events a subscriber may fall behind before it must resume from the ring.
pub const SUBSCRIBER_BUFFER: usize = 1024;
/// How often the transfer rates are published (and trades checked for deadlines passed).
pub const TICK: Duration = Duration::from_secs(1);
/// Shortest time between two progress events of one download.
pub const DOWNLOAD_PROGRESS_EVERY: Duration = Duration::from_millis(250);

struct Ring {
    events: VecDeque<NodeEvent>,
    /// The id the next event gets.
    next_id: u64,
}

/// The bus. Lives in [`Shared`]; the hooks below publish on it.
pub struct Events {
    ring: Mutex<Ring>,
    sender: broadcast::Sender<NodeEvent>,
    /// When each running download last published progress.
    progress: Mutex<HashMap<ContentId, Instant>>,
    /// The state each kept trade was last published in.
    trades: Mutex<HashMap<[u8; 32], &'static str>>,
    /// What was published when each connected peer connected, to say it again at disconnect.
    peers: Mutex<HashMap<PeerId, serde_json::Value>>,
    receipts_up: AtomicU64,
    receipts_down: AtomicU64,
}

/// What [`Events::resume`] gives a subscriber: live events, the backlog, the newest id before.
type Resumed = (broadcast::Receiver<NodeEvent>, VecDeque<NodeEvent>, u64);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its map whole; a panic elsewhere does not corrupt it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty bus.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(RING_CAPACITY),
                next_id: 1,
            }),
            sender,
            progress: Mutex::new(HashMap::new()),
            trades: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            receipts_up: AtomicU64::new(0),
            receipts_down: AtomicU64::new(0),
        }
    }

    /// Publishes `data` (as one line of JSON) as an event of `kind`; returns its id.
    pub fn publish(&self, kind: EventKind, data: &impl Serialize) -> u64 {
        let data: Arc<str> = match serde_json::to_string(data) {
            Ok(json) => json.into(),
            Err(error) => {
                tracing::warn!("cannot encode a {} event: {error}", kind.as_str());
                return 0;
            }
        };
        let mut ring = lock(&self.ring);
        let event = NodeEvent {
            id: ring.next_id,
            kind,
            data,
        };
        ring.next_id += 1;
        if ring.events.len() == RING_CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // No subscriber is not an error: the ring keeps it.
        let _ = self.sender.send(event.clone());
        event.id
    }

    /// Events published since the node started.
    pub fn published(&self) -> u64 {
        lock(&self.ring).next_id - 1
    }

    /// Clients subscribed now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Receipts signed since start: (this node uploaded, this node downloaded).
    pub fn receipts_signed(&self) -> (u64, u64) {
        (
            self.receipts_up.load(Ordering::Relaxed),
            self.receipts_down.load(Ordering::Relaxed),
        )
    }

    /// A receiver of every event published from now on, and what to send before them: the
    /// events after `after` if the ring holds them all, else a `reset` (nothing for `None`).
    /// Also the id of the newest event published before the receiver.
    fn resume(&self, after: Option<u64>) -> Resumed {
        let ring = lock(&self.ring);
        let receiver = self.sender.subscribe();
        let newest = ring.next_id - 1;
        let Some(after) = after else {
            return (receiver, VecDeque::new(), newest);
        };
        let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
        if after > newest || after.saturating_add(1) < oldest {
            let reset = NodeEvent {
                id: newest,
                kind: EventKind::Reset,
                data: Arc::from("{}"),
            };
            return (receiver, VecDeque::from([reset]), newest);
        }
        let skip = usize::try_from(after.saturating_add(1) - oldest).unwrap_or(usize::MAX);
        let backlog = ring.events.iter().skip(skip).cloned().collect();
        (receiver, backlog, newest)
    }

    /// A download started, progressed or ended. `changed` is a change of state (always
    /// published); progress is published at most every [`DOWNLOAD_PROGRESS_EVERY`].
    pub fn download(&self, status: &DownloadStatus, changed: bool) {
        let now = Instant::now();
        {
            let mut progress = lock(&self.progress);
            if changed {
                if status.phase() == Phase::Running {
                    progress.insert(status.content, now);
                } else {
                    progress.remove(&status.content);
                }
            } else {
                match progress.get(&status.content) {
                    Some(last) if now.duration_since(*last) < DOWNLOAD_PROGRESS_EVERY => return,
                    _ => {
                        progress.insert(status.content, now);
                    }
                }
            }
        }
        self.publish(EventKind::Download, &download_info(status));
    }

    /// A receipt between this node and `peer` was stored (`Up`: this node uploaded).
    pub fn receipt(&self, peer: PeerId, role: ReceiptRole, receipt: &Receipt) {
        let count = match role {
            ReceiptRole::Up => &self.receipts_up,
            ReceiptRole::Down => &self.receipts_down,
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.publish(
            EventKind::Receipt,
            &ReceiptEvent {
                peer: HexId(*peer.as_bytes()),
                role,
                seq: receipt.seq,
                bytes: receipt.bytes,
                credits: receipt.credits,
            },
        );
    }

    /// A conflict proof marked `peer` dishonest.
    pub fn conflict(&self, peer: PeerId) {
        self.publish(
            EventKind::Conflict,
            &ConflictEvent {
                peer: HexId(*peer.as_bytes()),
            },
        );
    }
}

/// The stream `GET /api/v1/events` serves (see [`Events::resume`]); it ends at `stop`.
pub fn stream(events: &Arc<Events>, stop: CancellationToken, after: Option<u64>) -> EventStream {
    struct Subscriber {
        events: Arc<Events>,
        stop: CancellationToken,
        receiver: broadcast::Receiver<NodeEvent>,
        backlog: VecDeque<NodeEvent>,
        /// The id of the last event sent: live events up to it came in the backlog.
        last: u64,
    }
    let (receiver, backlog, newest) = events.resume(after);
    // Live events up to `last` are skipped: they came in the backlog, or before the client.
    let last = after.unwrap_or(newest).min(newest);
    let subscriber = Subscriber {
        events: Arc::clone(events),
        stop,
        receiver,
        backlog,
        last,
    };
    Box::pin(futures_util::stream::unfold(
        subscriber,
        |mut sub| async move {
            loop {
                if let Some(event) = sub.backlog.pop_front() {
                    // A reset carries the newest id, so what follows it is what comes next.
                    sub.last = event.id;
                    return Some((event, sub));
                }
                let received = tokio::select! {
                    biased;
                    () = sub.stop.cancelled() => return None,
                    received = sub.receiver.recv() => received,
                };
                match received {
                    Ok(event) if event.id <= sub.last => {}
                    Ok(event) => {
                        sub.last = event.id;
                        return Some((event, sub));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            missed,
                            "an event subscriber fell behind; resuming from the ring"
                        );
                        let (receiver, backlog, _) = sub.events.resume(Some(sub.last));
                        sub.receiver = receiver;
                        sub.backlog = backlog;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    ))
}

/// `peer`'s connection is registered: publishes its `PeerInfo`.
pub async fn peer_connected(shared: &Arc<Shared>, peer: PeerId) {
    let Some(Ok(info)) = NodeHandle::new(Arc::clone(shared)).connected_peer(peer) else {
        return;
    };
    let Ok(value) = serde_json::to_value(&info) else {
        return;
    };
    lock(&shared.events.peers).insert(peer, value.clone());
    shared.events.publish(EventKind::Peer, &value);
}

/// `peer`'s connection ended (call before it leaves the table, so its byte counts are still
/// there): publishes what was published at connect, marked disconnected, with the final byte
/// counts. Nothing if a newer connection to the peer replaced this one.
pub fn peer_disconnected(shared: &Shared, peer: PeerId) {
    if shared.peers.connection(&peer).is_some() {
        return;
    }
    let Some(mut value) = lock(&shared.events.peers).remove(&peer) else {
        return;
    };
    if let Some(info) = value.as_object_mut() {
        info.insert("connected".into(), false.into());
        if info.contains_key("state") {
            info.insert("state".into(), "disconnected".into());
        }
        if let Some((sent, received)) = shared.peers.counters(&peer) {
            info.insert("bytes_sent".into(), sent.load(Ordering::Relaxed).into());
            info.insert(
                "bytes_received".into(),
                received.load(Ordering::Relaxed).into(),
            );
        }
    }
    shared.events.publish(EventKind::Peer, &value);
}

/// The market learned or posted an order: publishes every order it changed and, if it made
/// trades, the new trades.
pub fn market_changed(shared: &Shared, learned: &Learned) {
    for order in &learned.orders {
        shared.events.publish(EventKind::Order, &order_info(order));
    }
    if !learned.proposals.is_empty() {
        trades_changed(shared);
    }
}

/// This node cancelled its order `id`.
pub fn order_cancelled(shared: &Shared, id: OrderId) {
    if let Some(order) = shared.market.own_view(&id, now_ms()) {
        shared.events.publish(EventKind::Order, &order_info(&order));
    }
}

/// Publishes every trade that is new or whose state changed since the last call. Called where
/// trades are made or answered, and every [`TICK`] for deadlines that passed.
pub fn trades_changed(shared: &Shared) {
    let mut seen = lock(&shared.events.trades);
    let trades = shared.market.trades(now_ms());
    for entry in &trades {
        let state = crate::market::state_name(entry.trade.state());
        if seen.insert(entry.id, state) != Some(state) {
            shared.events.publish(EventKind::Trade, &trade_info(entry));
        }
    }
    if seen.len() > trades.len() {
        let kept: HashSet<[u8; 32]> = trades.iter().map(|t| t.id).collect();
        seen.retain(|id, _| kept.contains(id));
    }
}

/// Starts the task that publishes the transfer rates every [`TICK`].
pub fn start(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let totals = |shared: &Shared| {
            (
                shared.bytes_up.load(Ordering::Relaxed),
                shared.bytes_down.load(Ordering::Relaxed),
            )
        };
        let mut before = (totals(&shared), Instant::now());
        // The first tick is immediate; rates start one tick later.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = ((totals(&shared)), Instant::now());
            let ms = now.1.duration_since(before.1).as_millis().max(1);
            let rate = |now: u64, then: u64| {
                u64::try_from(u128::from(now.saturating_sub(then)) * 1000 / ms).unwrap_or(u64::MAX)
            };
            shared.events.publish(
                EventKind::Transfer,
                &TransferEvent {
                    up_bps: rate(now.0.0, before.0.0),
                    down_bps: rate(now.0.1, before.0.1),
                    bytes_sent: now.0.0,
                    bytes_received: now.0.1,
                },
            );
            before = now;
            trades_changed(&shared);
        }
    });
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn ids(events: &VecDeque<NodeEvent>) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn resumption_sends_exactly_what_was_missed_or_a_reset() {
        let events = Events::new();
        for n in 0..5u64 {
            assert_eq!(events.publish(EventKind::Transfer, &n), n + 1);
        }
        assert_eq!(ids(&events.resume(Some(2)).1), vec![3, 4, 5]);
        assert_eq!(events.resume(None).2, 5);
        assert_eq!(ids(&events.resume(Some(0)).1), vec![1, 2, 3, 4, 5]);
        assert!(events.resume(Some(5)).1.is_empty());
        assert!(events.resume(None).1.is_empty());
        // An id this run never gave (a previous run's): reset, resuming after the newest.
        let (_, reset, _) = events.resume(Some(9));
        assert_eq!((reset[0].kind, reset[0].id), (EventKind::Reset, 5));
        assert_eq!(&*reset[0].data, "{}");

        // Past the ring: the oldest events are gone, so an id before them gets a reset.
        for n in 0..RING_CAPACITY as u64 {
            events.publish(EventKind::Transfer, &n);
        }
        let newest = 5 + RING_CAPACITY as u64;
        let (_, reset, _) = events.resume(Some(4));
        assert_eq!((reset[0].kind, reset[0].id), (EventKind::Reset, newest));
        let (_, backlog, _) = events.resume(Some(5));
        assert_eq!(backlog.len(), RING_CAPACITY);
        assert_eq!(backlog.front().map(|e| e.id), Some(6));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_resumes_from_the_ring_without_a_gap() {
        let events = Arc::new(Events::new());
        let stop = CancellationToken::new();
        let mut live = stream(&events, stop.clone(), None);
        let total = SUBSCRIBER_BUFFER as u64 * 2;
        for n in 0..total {
            events.publish(EventKind::Transfer, &n);
        }
        // It lagged the channel by SUBSCRIBER_BUFFER events; the ring still holds them.
        let mut got = Vec::new();
        while got.len() < total as usize {
            got.push(live.next().await.unwrap().id);
        }
        assert_eq!(got, (1..=total).collect::<Vec<_>>());

        // Behind by more than the ring: a reset, then what comes next.
        let mut slow = stream(&events, stop.clone(), Some(total));
        for n in 0..(RING_CAPACITY as u64 + 1) {
            events.publish(EventKind::Transfer, &n);
        }
        let newest = total + RING_CAPACITY as u64 + 1;
        let reset = slow.next().await.unwrap();
        assert_eq!((reset.kind, reset.id), (EventKind::Reset, newest));
        let next = events.publish(EventKind::Conflict, &0);
        assert_eq!(slow.next().await.unwrap().id, next);

        // The stream ends when the node stops.
        stop.cancel();
        assert!(live.next().await.is_none());
    }
}
