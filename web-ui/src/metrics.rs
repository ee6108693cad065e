//! `GET /metrics`: the node's figures in the Prometheus text exposition format (version 0.0.4),
//! behind the API key like `/api/v1` (Prometheus scrapes send it with `authorization:
//! {credentials: KEY}` or `bearer_token_file`).
//!
//! The node fills a plain [`MetricsSnapshot`] (it keeps its own atomic counters and knows
//! nothing of Prometheus); this module registers it, one fresh registry per scrape, with
//! `prometheus-client`, which writes names, `# HELP`/`# TYPE` lines, labels and escaping.
//! A scrape is cheap: the snapshot reads counters and in-memory tables, never the disk.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::NodeApi;
use crate::error::ApiError;
use crate::routes::{ApiRoute, RouteTable, get};
use crate::server::ApiAuth;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Upper bounds of the buckets of the standing histogram (peers above the floor; standing is
/// in (0, 1)).
pub const STANDING_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99];

/// The node's figures at one moment, as [`NodeApi::metrics`] answers them. Counters count
/// since the node started; the rest are the values now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Payload bytes sent to peers.
    pub bytes_up: u64,
    /// Payload bytes received from peers and verified.
    pub bytes_down: u64,
    /// Receipts signed since start in which this node uploaded (it countersigned).
    pub receipts_signed_up: u64,
    /// Receipts signed since start in which this node downloaded (it proposed, the peer
    /// countersigned).
    pub receipts_signed_down: u64,
    /// Receipts held in the store (one latest per pair).
    pub receipts_stored: u64,
    /// Of those, receipts between other peers.
    pub receipts_third_party: u64,
    /// Gossip sessions completed (started or answered).
    pub gossip_sessions: u64,
    /// Gossip sessions refused or broken off.
    pub gossip_sessions_failed: u64,
    /// Gossip bytes sent.
    pub gossip_bytes_sent: u64,
    /// Gossip bytes received.
    pub gossip_bytes_received: u64,
    /// Peers with an open connection.
    pub peers_connected: u64,
    /// Peers known from peer records.
    pub peers_known: u64,
    /// Chunk requests waiting in the upload queue.
    pub upload_queue_requests: u64,
    /// Peers with requests waiting in the upload queue.
    pub upload_queue_peers: u64,
    /// Upload slots in use (chunks being written to peers).
    pub uploads_in_flight: u64,
    /// Downloads by state (`running`, `complete`, `failed`, …).
    pub downloads: Vec<(String, u64)>,
    /// Peers in the standing graph at the floor (newcomers, freeriders, dishonest keys).
    pub standing_floor: u64,
    /// The standing of every peer above the floor.
    pub standing_above: Vec<f64>,
    /// Keys marked dishonest.
    pub dishonest: u64,
    /// Offers resting in the book.
    pub book_offers: u64,
    /// Bids resting in the book.
    pub book_bids: u64,
    /// This node's trades by state (`proposed`, `agreed`, …).
    pub trades: Vec<(String, u64)>,
    /// Events published on the event stream.
    pub events_published: u64,
    /// Clients subscribed to the event stream now.
    pub event_subscribers: u64,
    /// Peer keys banned now for misbehaving.
    pub banned_keys: u64,
    /// Source addresses banned now (their packets are ignored).
    pub banned_addresses: u64,
    /// Receipt chains held in memory in which this node uploads.
    pub pairs_up: u64,
    /// Receipt chains held in memory in which this node downloads.
    pub pairs_down: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter: Counter = Counter::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn by_label<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    for (label, value) in values {
        family
            .get_or_create(&label)
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

fn counter_by_label<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for (label, value) in values {
        family.get_or_create(&label).inc_by(value);
    }
    registry.register(name, help, family);
}

/// Renders `snapshot` in the Prometheus text format; every name starts with `tally_`.
pub fn render(snapshot: &MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let s = snapshot;
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("tally");
    gauge(
        r,
        "uptime_seconds",
        "Seconds since the node started",
        s.uptime_s,
    );
    counter_by_label(
        r,
        "payload_bytes",
        "Payload bytes moved since start, by direction (up: sent to peers)",
        [
            (DirectionLabel { direction: "up" }, s.bytes_up),
            (DirectionLabel { direction: "down" }, s.bytes_down),
        ],
    );
    counter_by_label(
        r,
        "receipts_signed",
        "Receipts with a peer signed since start, by this node's role (up: it uploaded)",
        [
            (RoleLabel { role: "up" }, s.receipts_signed_up),
            (RoleLabel { role: "down" }, s.receipts_signed_down),
        ],
    );
    gauge(
        r,
        "receipts_stored",
        "Receipts held in the store (the latest of each pair)",
        s.receipts_stored,
    );
    gauge(
        r,
        "receipts_third_party",
        "Receipts held between other peers",
        s.receipts_third_party,
    );
    counter(
        r,
        "gossip_sessions",
        "Gossip sessions completed since start",
        s.gossip_sessions,
    );
    counter(
        r,
        "gossip_sessions_failed",
        "Gossip sessions refused or broken off since start",
        s.gossip_sessions_failed,
    );
    counter_by_label(
        r,
        "gossip_bytes",
        "Gossip bytes since start, by direction",
        [
            (DirectionLabel { direction: "up" }, s.gossip_bytes_sent),
            (
                DirectionLabel { direction: "down" },
                s.gossip_bytes_received,
            ),
        ],
    );
    gauge(
        r,
        "peers_connected",
        "Peers with an open connection",
        s.peers_connected,
    );
    gauge(
        r,
        "peers_known",
        "Peers known from peer records",
        s.peers_known,
    );
    gauge(
        r,
        "upload_queue_requests",
        "Chunk requests waiting for their turn to be uploaded",
        s.upload_queue_requests,
    );
    gauge(
        r,
        "upload_queue_peers",
        "Peers with chunk requests waiting",
        s.upload_queue_peers,
    );
    gauge(
        r,
        "uploads_in_flight",
        "Upload slots in use: chunks being written to peers",
        s.uploads_in_flight,
    );
    by_label(
        r,
        "downloads",
        "Downloads since start, by state",
        s.downloads.iter().map(|(state, n)| {
            (
                StateLabel {
                    state: state.clone(),
                },
                *n,
            )
        }),
    );
    by_label(
        r,
        "standing_peers",
        "Peers in the standing graph, at the floor or above it",
        [
            (ClassLabel { class: "floor" }, s.standing_floor),
            (ClassLabel { class: "above" }, s.standing_above.len() as u64),
        ],
    );
    let histogram = Histogram::new(STANDING_BUCKETS);
    for standing in &s.standing_above {
        histogram.observe(*standing);
    }
    r.register(
        "standing",
        "Standing of the peers above the floor, in (0, 1)",
        histogram,
    );
    gauge(
        r,
        "dishonest_peers",
        "Keys marked dishonest by a conflict proof",
        s.dishonest,
    );
    by_label(
        r,
        "banned",
        "Peer keys and source addresses banned now for misbehaving",
        [
            (KindLabel { kind: "key" }, s.banned_keys),
            (KindLabel { kind: "address" }, s.banned_addresses),
        ],
    );
    by_label(
        r,
        "pairs_held",
        "Receipt chains with peers held in memory, by this node's role (up: it uploads)",
        [
            (RoleLabel { role: "up" }, s.pairs_up),
            (RoleLabel { role: "down" }, s.pairs_down),
        ],
    );
    by_label(
        r,
        "book_orders",
        "Orders resting in the book, by side",
        [
            (SideLabel { side: "offer" }, s.book_offers),
            (SideLabel { side: "bid" }, s.book_bids),
        ],
    );
    by_label(
        r,
        "trades",
        "This node's trades kept, by state",
        s.trades.iter().map(|(state, n)| {
            (
                StateLabel {
                    state: state.clone(),
                },
                *n,
            )
        }),
    );
    counter(
        r,
        "events_published",
        "Events published on the event stream since start",
        s.events_published,
    );
    gauge(
        r,
        "event_subscribers",
        "Clients subscribed to the event stream",
        s.event_subscribers,
    );
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &root)?;
    Ok(out)
}

/// `GET /metrics` for `node`, behind the API key.
pub(crate) fn routes<N: NodeApi>(node: Arc<N>, auth: Arc<ApiAuth>) -> (Router, Vec<ApiRoute>) {
    let (router, routes) = RouteTable::new("")
        .route(METRICS_PATH, get(metrics::<N>))
        .into_parts();
    let router = router
        .method_not_allowed_fallback(crate::server::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            auth,
            crate::server::require_api_key,
        ))
        .with_state(node);
    (router, routes)
}

#[utoipa::path(get, path = "/metrics", tag = "node", operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4: bytes, receipts, gossip, peers, queues, standing, book and trades. docs/API.md lists every metric.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
    ))]
pub(crate) async fn metrics<N: NodeApi>(State(node): State<Arc<N>>) -> Result<Response, ApiError> {
    let snapshot = node.metrics().await?;
    let text = render(&snapshot)
        .map_err(|e| ApiError::internal(format!("cannot render the metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_rendered_with_its_type() {
        let snapshot = MetricsSnapshot {
            bytes_up: 5,
            bytes_down: 7,
            standing_floor: 3,
            standing_above: vec![0.2, 0.6],
            downloads: vec![("complete".into(), 2)],
            trades: vec![("agreed".into(), 1)],
            banned_keys: 4,
            pairs_up: 6,
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot).unwrap();
        for line in [
            "# TYPE tally_payload_bytes_total counter",
            "tally_payload_bytes_total{direction=\"up\"} 5",
            "tally_payload_bytes_total{direction=\"down\"} 7",
            "tally_standing_peers{class=\"floor\"} 3",
            "tally_standing_peers{class=\"above\"} 2",
            "# TYPE tally_standing histogram",
            "tally_standing_bucket{le=\"0.25\"} 1",
            "tally_standing_bucket{le=\"+Inf\"} 2",
            "tally_standing_count 2",
            "tally_downloads{state=\"complete\"} 2",
            "tally_trades{state=\"agreed\"} 1",
            "tally_banned{kind=\"key\"} 4",
            "tally_banned{kind=\"address\"} 0",
            "tally_pairs_held{role=\"up\"} 6",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        // The exposition format: comments, or `name{labels} value`.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.split_whitespace().count() == 2,
                "{line:?}"
            );
        }
    }
}
