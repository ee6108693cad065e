//! The live event stream, `GET /api/v1/events`: the types of what a node publishes
//! ([`NodeEvent`], its [`EventKind`] and the payloads that have no other model type), and the
//! handler that serves [`NodeApi::events`] as server-sent events.
//!
//! The node owns ids, the ring kept for resumption and what a slow subscriber gets (a `reset`);
//! this module only reads where the client wants to resume from — the `Last-Event-ID` header,
//! which `EventSource` sends on reconnect, else `?last_event_id=N` — and writes each event as
//! `id:`, `event:` and one line of JSON `data:`, with a `: keep-alive` comment every
//! [`KEEP_ALIVE`] so proxies and clients see the connection alive.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::api::NodeApi;
use crate::error::ApiError;
use crate::model::HexId;

/// How often an idle stream sends a `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The header `EventSource` sends on reconnect with the id of the last event it saw.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// What an event is about: its SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Rates and totals, every second: [`TransferEvent`].
    Transfer,
    /// A download started, progressed, ended: `DownloadInfo`.
    Download,
    /// A receipt with a peer was stored: [`ReceiptEvent`].
    Receipt,
    /// A peer connected or disconnected: `PeerInfo`.
    Peer,
    /// An order entered the book, was cancelled or filled: `OrderInfo`.
    Order,
    /// A trade was created or changed state: `TradeInfo`.
    Trade,
    /// A conflict proof marked a peer dishonest: [`ConflictEvent`].
    Conflict,
    /// The stream cannot resume where the client asked: refetch state. Data `{}`.
    Reset,
}

impl EventKind {
    /// The name on the wire (`event: transfer`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Transfer => "transfer",
            EventKind::Download => "download",
            EventKind::Receipt => "receipt",
            EventKind::Peer => "peer",
            EventKind::Order => "order",
            EventKind::Trade => "trade",
            EventKind::Conflict => "conflict",
            EventKind::Reset => "reset",
        }
    }
}

/// One event of a node's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Increasing within one run of the node; a `reset` carries the id the stream resumes
    /// after.
    pub id: u64,
    /// What it is about.
    pub kind: EventKind,
    /// One line of JSON, shared by every subscriber.
    pub data: Arc<str>,
}

/// What [`NodeApi::events`] answers: events in id order, until the node stops.
pub type EventStream = Pin<Box<dyn Stream<Item = NodeEvent> + Send>>;

/// `transfer` data: rates over the last second, totals since the node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferEvent {
    /// Payload bytes per second sent.
    pub up_bps: u64,
    /// Payload bytes per second received.
    pub down_bps: u64,
    /// Payload bytes sent since start.
    pub bytes_sent: u64,
    /// Payload bytes received since start.
    pub bytes_received: u64,
}

/// Which side of a receipt this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptRole {
    /// This node uploaded: `"up"`.
    Up,
    /// This node downloaded: `"down"`.
    Down,
}

/// `receipt` data: a receipt between this node and `peer` was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEvent {
    /// The other party.
    pub peer: HexId,
    /// This node's side.
    pub role: ReceiptRole,
    /// Its sequence number in the pair's chain.
    pub seq: u64,
    /// Cumulative bytes it acknowledges.
    pub bytes: u64,
    /// Cumulative credits it acknowledges.
    pub credits: u64,
}

/// `conflict` data: a conflict proof marked `peer` dishonest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEvent {
    /// The key now marked dishonest.
    pub peer: HexId,
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Where to resume when no `Last-Event-ID` header is sent.
    last_event_id: Option<String>,
}

/// Where the client wants to resume: the header wins over the query (a reconnecting
/// `EventSource` keeps its original URL but sends the header). An empty value is no value.
fn resume_after(
    headers: &HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Option<u64>, ApiError> {
    let parse = |source: &str, value: &str| -> Result<Option<u64>, ApiError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "{source}: expected the id of an event (a whole number), found {value:?}"
            ))
        })
    };
    if let Some(header) = headers.get(LAST_EVENT_ID) {
        let value = header
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID: not visible ASCII"))?;
        if let Some(after) = parse("Last-Event-ID", value)? {
            return Ok(Some(after));
        }
    }
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match query.last_event_id {
        Some(value) => parse("last_event_id", &value),
        None => Ok(None),
    }
}

/// One server-sent event as the stream frames it: the OpenAPI document's schema of each
/// event of `GET /api/v1/events` (the stream itself is text, not JSON).
#[derive(Debug, Clone, utoipa::ToSchema)]
pub struct EventFrame {
    /// The event's number: increases within one run of the node.
    #[schema(pattern = "^[0-9]+$")]
    pub id: String,
    /// Its kind.
    #[schema(pattern = "^(transfer|download|receipt|peer|order|trade|conflict|reset)$")]
    pub event: String,
    /// One line of JSON; docs/API.md gives its fields for each kind.
    pub data: String,
}

/// The SSE form of an event.
fn sse_event(event: &NodeEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(&*event.data)
}

/// `GET /api/v1/events`.
#[utoipa::path(get, path = "/api/v1/events", tag = "node", operation_id = "events",
    params(
        ("last_event_id" = Option<u64>, Query, description = "Resume after this event id (the `Last-Event-ID` header wins if both are sent)."),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id; a browser's `EventSource` sends it when it reconnects."),
    ),
    responses(
        (status = 200, description = "Server-sent events until the node stops: `transfer`, `download`, `receipt`, `peer`, `order`, `trade`, `conflict`, and `reset` when the stream cannot resume where asked. docs/API.md lists each event's data.", content_type = "text/event-stream", body = EventFrame),
        (status = 400, description = "The event id is not a whole number.", body = crate::model::ErrorBody),
    ))]
pub(crate) async fn stream<N: NodeApi>(
    State(node): State<Arc<N>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let after = resume_after(&headers, query)?;
    let events = node.events(after).await?;
    let events = events.map(|event| Ok::<_, Infallible>(sse_event(&event)));
    let keep_alive = KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive");
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<Query<EventsQuery>, QueryRejection> {
        let uri: axum::http::Uri = format!("http://x/api/v1/events{q}").parse().unwrap();
        Query::try_from_uri(&uri)
    }

    #[test]
    fn the_header_wins_over_the_query_and_bad_ids_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_after(&headers, query("")).unwrap(), None);
        assert_eq!(
            resume_after(&headers, query("?last_event_id=7")).unwrap(),
            Some(7)
        );
        headers.insert(LAST_EVENT_ID, "9".parse().unwrap());
        assert_eq!(
            resume_after(&headers, query("?last_event_id=7")).unwrap(),
            Some(9)
        );
        headers.insert(LAST_EVENT_ID, "".parse().unwrap());
        assert_eq!(
            resume_after(&headers, query("?last_event_id=7")).unwrap(),
            Some(7)
        );
        headers.insert(LAST_EVENT_ID, "-1".parse().unwrap());
        assert_eq!(resume_after(&headers, query("")).unwrap_err().status(), 400);
        let headers = HeaderMap::new();
        assert_eq!(
            resume_after(&headers, query("?last_event_id=x"))
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn kinds_are_spelled_as_the_contract_says() {
        for kind in [
            EventKind::Transfer,
            EventKind::Download,
            EventKind::Receipt,
            EventKind::Peer,
            EventKind::Order,
            EventKind::Trade,
            EventKind::Conflict,
            EventKind::Reset,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let role = serde_json::to_string(&ReceiptRole::Up).unwrap();
        assert_eq!(role, "\"up\"");
    }
}
