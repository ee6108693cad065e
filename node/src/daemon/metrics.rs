//! The node's figures for `GET /metrics`: one [`MetricsSnapshot`] read from the counters and
//! in-memory tables the daemon keeps anyway (tally-web renders it). Nothing here reads the
//! disk or waits, so a scrape costs a few short locks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_web::metrics::MetricsSnapshot;

use super::api::download_info;
use super::{Shared, now_ms};

/// The node's figures now.
pub fn snapshot(shared: &Shared) -> MetricsSnapshot {
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let stats = &shared.gossip.stats;
    let (receipts_signed_up, receipts_signed_down) = shared.events.receipts_signed();
    let store = &shared.store;
    let tombstones = store.tombstone_count();
    let receipts_stored = (store.sync_items().len() as u64).saturating_sub(tombstones);
    let depth = shared.uploads.queue_depth();
    let mut downloads: BTreeMap<String, u64> = BTreeMap::new();
    for status in shared.downloads().values() {
        // The state as the API spells it, so a new state needs no change here.
        let state = serde_json::to_value(download_info(status).state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *downloads.entry(state).or_insert(0) += 1;
    }
    let (peers_in_graph, standing_above) = shared.standing.with(|standing| {
        let above: Vec<f64> = standing
            .above_floor()
            .into_iter()
            .map(|(_, s)| s.score)
            .collect();
        (standing.peer_count() as u64, above)
    });
    // The graph counts this node itself; it has no standing at itself.
    let standing_floor = peers_in_graph
        .saturating_sub(1)
        .saturating_sub(standing_above.len() as u64);
    let now = now_ms();
    let view = shared.market.view(now);
    let mut trades: BTreeMap<String, u64> = BTreeMap::new();
    for trade in &view.trades {
        let state = crate::market::state_name(trade.trade.state());
        *trades.entry(state.to_owned()).or_insert(0) += 1;
    }
    let (pairs_up, pairs_down) = shared.pairs.held();
    MetricsSnapshot {
        uptime_s: shared.started.elapsed().as_secs(),
        bytes_up: count(&shared.bytes_up),
        bytes_down: count(&shared.bytes_down),
        receipts_signed_up,
        receipts_signed_down,
        receipts_stored,
        receipts_third_party: store.third_party_count(),
        gossip_sessions: count(&stats.sessions_started) + count(&stats.sessions_answered),
        gossip_sessions_failed: count(&stats.sessions_failed),
        gossip_bytes_sent: count(&stats.bytes_sent),
        gossip_bytes_received: count(&stats.bytes_received),
        peers_connected: shared.peers.connected().len() as u64,
        peers_known: shared.gossip.known_peers().len() as u64,
        upload_queue_requests: depth.requests as u64,
        upload_queue_peers: depth.peers as u64,
        uploads_in_flight: shared.uploads.in_flight() as u64,
        downloads: downloads.into_iter().collect(),
        standing_floor,
        standing_above,
        dishonest: shared.standing.dishonest_count() as u64,
        book_offers: view.offers_total as u64,
        book_bids: view.bids_total as u64,
        trades: trades.into_iter().collect(),
        events_published: shared.events.published(),
        event_subscribers: shared.events.subscribers() as u64,
        banned_keys: shared.peers.banned_keys() as u64,
        banned_addresses: shared.peers.banned_addresses() as u64,
        pairs_up: pairs_up as u64,
        pairs_down: pairs_down as u64,
    }
}
