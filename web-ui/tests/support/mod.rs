//! The in-memory node the HTTP tests serve: enough state to check that each route reaches the
//! node with what it parsed and renders what the node answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod server;

use std::sync::Mutex;

use serde_json::{Value, json};
use tally_web::events::{EventKind, EventStream, NodeEvent};
use tally_web::metrics::MetricsSnapshot;
use tally_web::model::{
    BidRequest, ConflictInfo, ConnectRequest, ContentSummary, Direction, DownloadInfo,
    DownloadState, GetRequest, GossipStatus, Identity, MarketInfo, OfferRequest, OrderInfo,
    OrderSide, PeerInfo, PeerReceipts, PeerState, RateLimits, ReceiptFilter, ReceiptInfo,
    ReceiptPage, Settings, ShareRequest, StandingInfo, Status, StoreStatus, TradeInfo,
    TransferTotals,
};
use tally_web::{ApiError, HexId, NodeApi};
use tokio::sync::Notify;

pub const PEER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const CONTENT: &str = "2222222222222222222222222222222222222222222222222222222222222222";
pub const UNKNOWN: &str = "3333333333333333333333333333333333333333333333333333333333333333";
/// An order in the fake book that is someone else's.
pub const FOREIGN: &str = "4444444444444444444444444444444444444444444444444444444444444444";

#[derive(Default)]
pub struct FakeNode {
    pub state: Mutex<FakeState>,
    pub stop: Notify,
}

#[derive(Default)]
pub struct FakeState {
    pub peers: Vec<PeerInfo>,
    pub content: Vec<ContentSummary>,
    pub downloads: Vec<DownloadInfo>,
    pub limits: RateLimits,
    pub orders: Vec<OrderInfo>,
    pub settings: Settings,
    /// The filter of the last receipts request, as the server parsed it.
    pub receipts_filter: Option<ReceiptFilter>,
}

pub fn fake_order(n: usize, side: OrderSide, bytes: u64, price_per_gib: u64) -> OrderInfo {
    OrderInfo {
        order_id: id(&format!("{:064x}", n + 0x100)),
        side,
        owner: id(PEER),
        bytes,
        remaining: bytes,
        price_per_gib,
        max_rate: None,
        content_id: None,
        expires_ms: 1_700_000_000_000,
        mine: true,
        cancelled: false,
    }
}

pub fn id(hex: &str) -> HexId {
    hex.parse().unwrap()
}

impl NodeApi for FakeNode {
    async fn status(&self) -> Result<Status, ApiError> {
        let state = self.state.lock().unwrap();
        Ok(Status {
            peer_id: id(PEER),
            network: "testnet".into(),
            network_id: "ab".repeat(32),
            version: "0.1.0".into(),
            quic_addr: "127.0.0.1:7420".into(),
            api_addr: "127.0.0.1:7421".into(),
            uptime_s: 5,
            peers_connected: state.peers.iter().filter(|p| p.connected).count() as u32,
            store: StoreStatus {
                receipts: 2,
                pairs: 2,
                conflicts: 0,
                dishonest: 0,
                third_party: 0,
                tombstones: 0,
            },
            transfer: TransferTotals {
                bytes_up: 10,
                bytes_down: 20,
            },
            limits: state.limits,
            dishonest_peers: Vec::new(),
            gossip: GossipStatus::default(),
            upload_budget: Default::default(),
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
        Ok(self.state.lock().unwrap().peers.clone())
    }

    async fn connect(&self, request: ConnectRequest) -> Result<PeerInfo, ApiError> {
        // The server has checked the shape already.
        let target = request.parse().unwrap();
        let peer = PeerInfo {
            peer_id: target.peer_id,
            addr: format!("{}:{}", target.host, target.port),
            connected: true,
            direction: Direction::Out,
            since_ms: 1_700_000_000_000,
            bytes_sent: 0,
            bytes_received: 0,
            receipts: PeerReceipts {
                up: None,
                down: Some(3),
            },
            standing: 0.25,
            credits_sent: 0,
            credits_received: 7,
            up_bps: 0,
            down_bps: 1000,
            state: PeerState::Connected,
        };
        self.state.lock().unwrap().peers.push(peer.clone());
        Ok(peer)
    }

    async fn share(&self, request: ShareRequest) -> Result<ContentSummary, ApiError> {
        if request.path.starts_with("/missing") {
            return Err(ApiError::unprocessable(format!(
                "{}: no such file",
                request.path
            )));
        }
        let summary = ContentSummary {
            content_id: id(CONTENT),
            size: 1000,
            chunks: 1,
            name: request.path.rsplit('/').next().unwrap_or_default().into(),
        };
        self.state.lock().unwrap().content.push(summary.clone());
        Ok(summary)
    }

    async fn content(&self) -> Result<Vec<ContentSummary>, ApiError> {
        Ok(self.state.lock().unwrap().content.clone())
    }

    async fn get(&self, request: GetRequest) -> Result<DownloadInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        if state.downloads.iter().any(|d| d.out == request.out) {
            return Err(ApiError::conflict(format!(
                "{} is already being written",
                request.out
            )));
        }
        let info = DownloadInfo {
            content_id: request.content_id,
            out: request.out,
            size: 0,
            bytes_have: 0,
            chunks_total: 0,
            chunks_have: 0,
            providers: 0,
            state: DownloadState::Running,
            error: None,
        };
        state.downloads.push(info.clone());
        Ok(info)
    }

    async fn downloads(&self) -> Result<Vec<DownloadInfo>, ApiError> {
        Ok(self.state.lock().unwrap().downloads.clone())
    }

    async fn download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
        let state = self.state.lock().unwrap();
        state
            .downloads
            .iter()
            .find(|d| d.content_id == content_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no download of {content_id}")))
    }

    async fn standing(&self, peer: HexId) -> Result<StandingInfo, ApiError> {
        Ok(StandingInfo {
            peer_id: peer,
            score: 0.0,
            at_floor: true,
            dishonest: false,
            given: 0,
            taken: 0,
            passed: 0.0,
            transitive: 0.0,
            raw: 0.0,
            paths: Vec::new(),
            weight: 1.0,
            credit_window: 4 << 20,
            queue: None,
        })
    }

    async fn ledger_export(&self) -> Result<Vec<Value>, ApiError> {
        Ok(vec![
            json!({"uploader": PEER, "seq": 1, "bytes": 10}),
            json!({"uploader": CONTENT, "seq": 2, "bytes": 20}),
        ])
    }

    async fn limits(&self) -> Result<RateLimits, ApiError> {
        Ok(self.state.lock().unwrap().limits)
    }

    async fn set_limits(&self, limits: RateLimits) -> Result<RateLimits, ApiError> {
        self.state.lock().unwrap().limits = limits;
        Ok(limits)
    }

    async fn shutdown(&self) -> Result<(), ApiError> {
        self.stop.notify_one();
        Ok(())
    }

    async fn market(&self) -> Result<MarketInfo, ApiError> {
        let orders = self.state.lock().unwrap().orders.clone();
        let side = |s: OrderSide| -> Vec<OrderInfo> {
            orders.iter().filter(|o| o.side == s).cloned().collect()
        };
        Ok(MarketInfo {
            offers_total: side(OrderSide::Offer).len() as u64,
            bids_total: side(OrderSide::Bid).len() as u64,
            offers: side(OrderSide::Offer),
            bids: side(OrderSide::Bid),
            mine: orders.clone(),
            trades: Vec::new(),
        })
    }

    async fn post_offer(&self, request: OfferRequest) -> Result<OrderInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let mut order = fake_order(
            state.orders.len(),
            OrderSide::Offer,
            request.bytes,
            request.price_per_gib,
        );
        order.max_rate = request.max_rate;
        state.orders.push(order.clone());
        Ok(order)
    }

    async fn post_bid(&self, request: BidRequest) -> Result<OrderInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let mut order = fake_order(
            state.orders.len(),
            OrderSide::Bid,
            request.bytes,
            request.max_price_per_gib,
        );
        order.content_id = request.content_id;
        state.orders.push(order.clone());
        Ok(order)
    }

    async fn cancel_order(&self, order_id: HexId) -> Result<(), ApiError> {
        if order_id == id(FOREIGN) {
            return Err(ApiError::conflict(format!(
                "order {order_id} is not this node's"
            )));
        }
        let mut state = self.state.lock().unwrap();
        let before = state.orders.len();
        state.orders.retain(|o| o.order_id != order_id);
        if state.orders.len() == before {
            return Err(ApiError::not_found(format!("no live order {order_id}")));
        }
        Ok(())
    }

    async fn trades(&self) -> Result<Vec<TradeInfo>, ApiError> {
        Ok(vec![TradeInfo {
            trade_id: id(UNKNOWN),
            role: "buyer".into(),
            state: "agreed".into(),
            offer_id: id(FOREIGN),
            bid_id: id(CONTENT),
            seller: id(FOREIGN),
            buyer: id(PEER),
            bytes: 10,
            price_per_gib: 2,
            expires_ms: 1_700_000_000_000,
            delivered_bytes: 0,
            settled_credits: 0,
            owed_credits: 0,
            note: None,
        }])
    }

    async fn identity(&self) -> Result<Identity, ApiError> {
        Ok(Identity {
            peer_id: id(PEER),
            network: "testnet".into(),
            network_id: "ab".repeat(32),
            quic_addr: "127.0.0.1:7420".into(),
            api_addr: "127.0.0.1:7421".into(),
            version: "0.1.0".into(),
        })
    }

    async fn receipts(&self, filter: ReceiptFilter) -> Result<ReceiptPage, ApiError> {
        self.state.lock().unwrap().receipts_filter = Some(filter);
        Ok(ReceiptPage {
            receipts: vec![fake_receipt()],
            next_cursor: None,
        })
    }

    async fn conflicts(&self) -> Result<Vec<ConflictInfo>, ApiError> {
        Ok(vec![ConflictInfo {
            peer: id(PEER),
            proof_id: id(UNKNOWN),
            uploader: id(PEER),
            downloader: id(CONTENT),
            seq: 1,
            receipts: vec![fake_receipt(), fake_receipt()],
        }])
    }

    async fn cancel_download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let download = state
            .downloads
            .iter_mut()
            .find(|d| d.content_id == content_id)
            .ok_or_else(|| ApiError::not_found(format!("no download of {content_id}")))?;
        match download.state {
            DownloadState::Running | DownloadState::Cancelled => {
                download.state = DownloadState::Cancelled;
                Ok(download.clone())
            }
            _ => Err(ApiError::conflict("finished already")),
        }
    }

    async fn settings(&self) -> Result<Settings, ApiError> {
        Ok(self.state.lock().unwrap().settings)
    }

    async fn set_settings(&self, settings: Settings) -> Result<Settings, ApiError> {
        self.state.lock().unwrap().settings = settings;
        Ok(settings)
    }

    async fn offers(&self) -> Result<Vec<OrderInfo>, ApiError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .orders
            .iter()
            .filter(|o| o.side == OrderSide::Offer)
            .cloned()
            .collect())
    }

    async fn bids(&self) -> Result<Vec<OrderInfo>, ApiError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .orders
            .iter()
            .filter(|o| o.side == OrderSide::Bid)
            .cloned()
            .collect())
    }

    async fn events(&self, after: Option<u64>) -> Result<EventStream, ApiError> {
        // Three events, then the stream ends (a node's goes on until it stops).
        let events: Vec<NodeEvent> = [
            (EventKind::Transfer, r#"{"up_bps":1}"#),
            (EventKind::Download, r#"{"state":"running"}"#),
            (EventKind::Reset, "{}"),
        ]
        .into_iter()
        .zip(1u64..)
        .map(|((kind, data), id)| NodeEvent {
            id,
            kind,
            data: data.into(),
        })
        .filter(|e| e.id > after.unwrap_or(0))
        .collect();
        Ok(Box::pin(futures_util::stream::iter(events)))
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
        Ok(MetricsSnapshot {
            bytes_up: 42,
            banned_addresses: 3,
            ..MetricsSnapshot::default()
        })
    }
}

pub fn fake_receipt() -> ReceiptInfo {
    ReceiptInfo {
        uploader: id(PEER),
        downloader: id(CONTENT),
        seq: 1,
        bytes: 10,
        credits: 10,
        time_ms: 1_700_000_000_000,
        sig_downloader: "ab".repeat(64),
        sig_uploader: "cd".repeat(64),
    }
}
