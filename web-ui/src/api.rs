//! [`NodeApi`]: what a node answers. The server calls it; `tally-node` implements it.

use std::future::Future;

use crate::error::ApiError;
use crate::events::EventStream;
use crate::metrics::MetricsSnapshot;
use crate::model::{
    BidRequest, ConflictInfo, ConnectRequest, ContentSummary, DownloadInfo, GetRequest, HexId,
    Identity, MarketInfo, OfferRequest, OrderInfo, PeerInfo, RateLimits, ReceiptFilter,
    ReceiptPage, Settings, ShareRequest, StandingInfo, Status, TradeInfo,
};

/// The node as the HTTP API sees it. One method per endpoint; the server checks auth and the
/// shape of every input before it calls one (ids are [`HexId`]s, a [`ConnectRequest`]'s `peer`
/// parses with [`ConnectRequest::parse`]), and renders the [`ApiError`] a method returns.
///
/// Methods must not block the async runtime: a method that touches the disk or waits on the
/// network hands the work to the node's own tasks and awaits the answer.
pub trait NodeApi: Send + Sync + 'static {
    /// The node at a glance.
    fn status(&self) -> impl Future<Output = Result<Status, ApiError>> + Send;

    /// Peers the node knows, connected or not.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>, ApiError>> + Send;

    /// Dials a peer and answers once the connection is up (or has failed).
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> impl Future<Output = Result<PeerInfo, ApiError>> + Send;

    /// Shares a file: chunks and hashes it, and announces it.
    fn share(
        &self,
        request: ShareRequest,
    ) -> impl Future<Output = Result<ContentSummary, ApiError>> + Send;

    /// Content this node shares.
    fn content(&self) -> impl Future<Output = Result<Vec<ContentSummary>, ApiError>> + Send;

    /// Starts a download and answers at once, without waiting for any chunk.
    fn get(
        &self,
        request: GetRequest,
    ) -> impl Future<Output = Result<DownloadInfo, ApiError>> + Send;

    /// Every download since the node started: running, complete and failed.
    fn downloads(&self) -> impl Future<Output = Result<Vec<DownloadInfo>, ApiError>> + Send;

    /// One download; [`ApiError::not_found`] if the node has none for `content_id`.
    fn download(
        &self,
        content_id: HexId,
    ) -> impl Future<Output = Result<DownloadInfo, ApiError>> + Send;

    /// Why `peer` has its standing at this node (any key: one never heard of is at the floor).
    fn standing(&self, peer: HexId) -> impl Future<Output = Result<StandingInfo, ApiError>> + Send;

    /// Every receipt in the store, each as the JSON object `tally ledger export --json` writes.
    fn ledger_export(
        &self,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, ApiError>> + Send;

    /// The rate limits in force.
    fn limits(&self) -> impl Future<Output = Result<RateLimits, ApiError>> + Send;

    /// Replaces the rate limits and answers the ones now in force.
    fn set_limits(
        &self,
        limits: RateLimits,
    ) -> impl Future<Output = Result<RateLimits, ApiError>> + Send;

    /// Asks the node to stop gracefully. Answers once the request is taken, before the node
    /// has stopped, so the HTTP response can still be delivered.
    fn shutdown(&self) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The book's best orders, this node's orders and its trades.
    fn market(&self) -> impl Future<Output = Result<MarketInfo, ApiError>> + Send;

    /// Signs and posts an offer (the server has run [`OfferRequest::check`]); floods it.
    fn post_offer(
        &self,
        request: OfferRequest,
    ) -> impl Future<Output = Result<OrderInfo, ApiError>> + Send;

    /// Signs and posts a bid (the server has run [`BidRequest::check`]); floods it and
    /// proposes the trades it makes.
    fn post_bid(
        &self,
        request: BidRequest,
    ) -> impl Future<Output = Result<OrderInfo, ApiError>> + Send;

    /// Cancels this node's order: [`ApiError::not_found`] if no live order has the id,
    /// [`ApiError::conflict`] if it is someone else's.
    fn cancel_order(&self, order_id: HexId) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// This node's trades, oldest first.
    fn trades(&self) -> impl Future<Output = Result<Vec<TradeInfo>, ApiError>> + Send;

    /// Who and where this node is.
    fn identity(&self) -> impl Future<Output = Result<Identity, ApiError>> + Send;

    /// One page of the latest receipt of each pair, in (uploader, downloader) order, after
    /// `filter.after`, at most `filter.limit`, only those `filter.peer` is part of if given
    /// (the server has checked the query's shape).
    fn receipts(
        &self,
        filter: ReceiptFilter,
    ) -> impl Future<Output = Result<ReceiptPage, ApiError>> + Send;

    /// The stored conflict proofs, one entry per key each marks dishonest.
    fn conflicts(&self) -> impl Future<Output = Result<Vec<ConflictInfo>, ApiError>> + Send;

    /// Stops a running download and answers it in state `cancelled` once its tasks have
    /// stopped: [`ApiError::not_found`] if the node has none for `content_id`,
    /// [`ApiError::conflict`] if it is complete or failed already. Cancelling a cancelled
    /// download answers it again.
    fn cancel_download(
        &self,
        content_id: HexId,
    ) -> impl Future<Output = Result<DownloadInfo, ApiError>> + Send;

    /// The runtime settings in force: rate limits and upload budgets.
    fn settings(&self) -> impl Future<Output = Result<Settings, ApiError>> + Send;

    /// Replaces the runtime settings (the server has run [`Settings::check`]) and answers the
    /// ones now in force. What was uploaded in the current day and month still counts against
    /// new budgets.
    fn set_settings(
        &self,
        settings: Settings,
    ) -> impl Future<Output = Result<Settings, ApiError>> + Send;

    /// Every live offer in the book, cheapest (then earliest) first.
    fn offers(&self) -> impl Future<Output = Result<Vec<OrderInfo>, ApiError>> + Send;

    /// Every live bid in the book, highest (then earliest) first.
    fn bids(&self) -> impl Future<Output = Result<Vec<OrderInfo>, ApiError>> + Send;

    /// The live event stream. With `after` (the id of the last event the client saw), first
    /// the events after it if the node still holds them all, else a `reset`; then every new
    /// event, until the node stops. Without `after`, only new events.
    fn events(
        &self,
        after: Option<u64>,
    ) -> impl Future<Output = Result<EventStream, ApiError>> + Send;

    /// The figures `GET /metrics` renders. Must not touch the disk.
    fn metrics(&self) -> impl Future<Output = Result<MetricsSnapshot, ApiError>> + Send;
}
