//! The node as the HTTP API sees it: tally-web's [`NodeApi`] implemented over [`Shared`].
//! Bad input from a client is a 4xx with a message that says what to fix; only the node's own
//! failures are 5xx.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tally_ledger::{Pair, PeerId};
use tally_market::{Bid, BidTerms, Offer, OfferTerms, OrderId, Party, Side};
use tally_web::api::NodeApi;
use tally_web::error::ApiError;
use tally_web::model::{
    BidRequest, BudgetPeriod, ConflictInfo, ConnectRequest, ContentSummary,
    Direction as ApiDirection, DownloadInfo, DownloadState, GetRequest, GossipStatus, HexId,
    Identity, MarketInfo, OfferRequest, OrderInfo, OrderSide, PeerInfo, PeerReceipts, PeerState,
    RateLimits, ReceiptCursor, ReceiptFilter, ReceiptInfo, ReceiptPage, Settings, ShareRequest,
    StandingInfo, StandingPath, Status, StoreStatus, TradeInfo, TransferTotals, UploadBudgetStatus,
    UploadQueueInfo,
};

use super::fetch::{DownloadStatus, Phase};
use super::meter::Rates;
use super::peers::{self, Direction};
use super::{Shared, now_ms};
use crate::config::PeerAddr;
use crate::content::{ContentError, ContentId};
use crate::market::{CancelError, LearnError, OrderView, TradeEntry};
use crate::rate::Rate;
use crate::wire::OrderMessage;

/// An order's lifetime when the request names none.
pub const DEFAULT_ORDER_TTL_S: u64 = 3600;

pub(crate) fn order_info(order: &OrderView) -> OrderInfo {
    OrderInfo {
        order_id: HexId(order.id.0),
        side: match order.side {
            Side::Offer => OrderSide::Offer,
            Side::Bid => OrderSide::Bid,
        },
        owner: HexId(*order.owner.as_bytes()),
        bytes: order.bytes,
        remaining: order.remaining,
        price_per_gib: order.price_per_gib,
        max_rate: order.max_rate,
        content_id: order.content.map(HexId),
        expires_ms: order.expires_ms,
        mine: order.mine,
        cancelled: order.cancelled,
    }
}

pub(crate) fn trade_info(entry: &TradeEntry) -> TradeInfo {
    let terms = entry.trade.terms();
    TradeInfo {
        trade_id: HexId(entry.id),
        role: match entry.role {
            Party::Seller => "seller".into(),
            Party::Buyer => "buyer".into(),
        },
        state: crate::market::state_name(entry.trade.state()).into(),
        offer_id: HexId(terms.offer_id.0),
        bid_id: HexId(terms.bid_id.0),
        seller: HexId(*terms.seller.as_bytes()),
        buyer: HexId(*terms.buyer.as_bytes()),
        bytes: terms.bytes,
        price_per_gib: terms.price_per_gib,
        expires_ms: terms.expires_ms,
        delivered_bytes: entry.trade.delivered_bytes(),
        settled_credits: entry.trade.settled_credits(),
        owed_credits: entry.trade.owed(),
        note: entry.note.clone(),
    }
}

fn learn_error(error: LearnError) -> ApiError {
    match error {
        LearnError::Invalid(why) => ApiError::bad_request(why.to_string()),
        LearnError::Expired => ApiError::bad_request("the order would have expired already"),
        LearnError::Refused(why) => ApiError::conflict(why.to_string()),
    }
}

/// A random nonce, so two equal orders get two ids.
fn nonce() -> u64 {
    rand::random()
}

/// The node's side of the HTTP API.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

impl NodeHandle {
    /// The API's view of the running node.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!("API request failed: {error}");
    ApiError::internal(error.to_string())
}

pub(crate) fn download_info(status: &DownloadStatus) -> DownloadInfo {
    let (state, error) = match status.phase() {
        Phase::Running => (DownloadState::Running, status.problem()),
        Phase::Complete => (DownloadState::Complete, None),
        Phase::Failed(why) => (DownloadState::Failed, Some(why)),
        Phase::Cancelled => (DownloadState::Cancelled, None),
    };
    DownloadInfo {
        content_id: HexId(status.content.0),
        out: status.out.display().to_string(),
        size: status.size.load(Ordering::Relaxed),
        bytes_have: status.bytes_have.load(Ordering::Relaxed),
        chunks_total: u64::from(status.chunks_total.load(Ordering::Relaxed)),
        chunks_have: u64::from(status.chunks_have.load(Ordering::Relaxed)),
        providers: status.providers.load(Ordering::Relaxed),
        state,
        error,
    }
}

/// One row of the peer list, before the store and the standing are read.
struct PeerRow {
    peer: PeerId,
    addr: String,
    direction: Direction,
    since_ms: u64,
    sent: u64,
    received: u64,
    state: PeerState,
    rates: Rates,
}

/// What [`super::peers::Peers::snapshot`] lists per live connection.
type LiveEntry = (PeerId, std::net::SocketAddr, Direction, u64, u64, u64);

impl NodeHandle {
    /// `peer`'s `PeerInfo` if it is connected now: its row alone, without building the list.
    pub(crate) fn connected_peer(&self, peer: PeerId) -> Option<Result<PeerInfo, ApiError>> {
        let entry = self
            .shared
            .peers
            .snapshot()
            .into_iter()
            .find(|entry| entry.0 == peer)?;
        Some(self.peer_info(self.live_row(entry, std::time::Instant::now())))
    }

    fn live_row(&self, entry: LiveEntry, now: std::time::Instant) -> PeerRow {
        let (peer, addr, direction, since_ms, sent, received) = entry;
        PeerRow {
            peer,
            addr: addr.to_string(),
            direction,
            since_ms,
            sent,
            received,
            state: PeerState::Connected,
            rates: self
                .shared
                .rates
                .rates(&peer, since_ms, sent, received, now),
        }
    }

    fn peer_info(&self, row: PeerRow) -> Result<PeerInfo, ApiError> {
        let PeerRow {
            peer,
            addr,
            direction,
            since_ms,
            sent,
            received,
            state,
            rates,
        } = row;
        let me = self.shared.me;
        let store = &self.shared.store;
        let up = store
            .latest(&Pair {
                uploader: me,
                downloader: peer,
            })
            .map_err(internal)?;
        let down = store
            .latest(&Pair {
                uploader: peer,
                downloader: me,
            })
            .map_err(internal)?;
        let standing = self.shared.standing.with(|s| s.of(&peer).score);
        Ok(PeerInfo {
            peer_id: HexId(*peer.as_bytes()),
            addr,
            connected: state == PeerState::Connected,
            direction: match direction {
                Direction::Inbound => ApiDirection::In,
                Direction::Outbound => ApiDirection::Out,
            },
            since_ms,
            bytes_sent: sent,
            bytes_received: received,
            receipts: PeerReceipts {
                up: up.map(|r| r.seq),
                down: down.map(|r| r.seq),
            },
            standing,
            credits_sent: up.map_or(0, |r| r.credits),
            credits_received: down.map_or(0, |r| r.credits),
            up_bps: rates.up_bps,
            down_bps: rates.down_bps,
            state,
        })
    }
}

fn receipt_info(receipt: &tally_ledger::Receipt) -> ReceiptInfo {
    ReceiptInfo {
        uploader: HexId(*receipt.uploader.as_bytes()),
        downloader: HexId(*receipt.downloader.as_bytes()),
        seq: receipt.seq,
        bytes: receipt.bytes,
        credits: receipt.credits,
        time_ms: receipt.time_ms,
        sig_downloader: hex::encode(receipt.sig_downloader.0),
        sig_uploader: hex::encode(receipt.sig_uploader.0),
    }
}

/// Longest `DELETE /api/v1/downloads/{id}` waits for the download's tasks to stop before it
/// answers (they stop at their next await; this bounds a stuck disk write).
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Chains of contribution an explanation of standing lists at most.
const STANDING_PATHS: usize = 5;

impl NodeApi for NodeHandle {
    async fn status(&self) -> Result<Status, ApiError> {
        let shared = &self.shared;
        let store = &shared.store;
        let conflicts = store.conflicts().map_err(internal)?.len() as u64;
        let dishonest_keys = store.dishonest().map_err(internal)?;
        let dishonest = dishonest_keys.len() as u64;
        let dishonest_peers = dishonest_keys
            .iter()
            .take(tally_web::model::MAX_DISHONEST_LISTED)
            .map(|peer| HexId(*peer.as_bytes()))
            .collect();
        let stats = &shared.gossip.stats;
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let budget = shared.uploads.budget_status(now_ms());
        let period = |p: Option<tally_market::PeriodStatus>| {
            p.map(|p| BudgetPeriod {
                used: p.used,
                limit: p.limit,
                remaining: p.remaining,
                resets_at_ms: p.resets_at_ms,
            })
            .unwrap_or_default()
        };
        let upload_budget = UploadBudgetStatus {
            day: period(budget.map(|b| b.day)),
            month: period(budget.map(|b| b.month)),
        };
        let gossip = GossipStatus {
            sessions: count(&stats.sessions_started) + count(&stats.sessions_answered),
            sessions_failed: count(&stats.sessions_failed),
            receipts_received: count(&stats.receipts_new),
            receipts_sent: count(&stats.receipts_sent),
            receipts_rejected: count(&stats.receipts_rejected),
            conflicts_learned: count(&stats.conflicts_learned),
            bytes_sent: count(&stats.bytes_sent),
            bytes_received: count(&stats.bytes_received),
            known_peers: shared.gossip.known_peers().len() as u64,
            provider_records: shared.gossip.provider_count() as u64,
        };
        // Not `pair_count`, which walks the database: the sync index holds every stored pair
        // and every tombstone.
        let tombstones = store.tombstone_count();
        let pairs = (store.sync_items().len() as u64).saturating_sub(tombstones);
        let api_addr = shared
            .api_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .map(|a| a.to_string())
            .unwrap_or_default();
        Ok(Status {
            peer_id: HexId(*shared.me.as_bytes()),
            network: shared.network_name.clone(),
            network_id: shared.network.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            quic_addr: shared.endpoint.local_addr().to_string(),
            api_addr,
            uptime_s: shared.started.elapsed().as_secs(),
            peers_connected: shared.peers.connected().len() as u32,
            store: StoreStatus {
                receipts: pairs,
                pairs,
                conflicts,
                dishonest,
                third_party: store.third_party_count(),
                tombstones,
            },
            transfer: TransferTotals {
                bytes_up: shared.bytes_up.load(Ordering::Relaxed),
                bytes_down: shared.bytes_down.load(Ordering::Relaxed),
            },
            limits: self.current_limits(),
            dishonest_peers,
            gossip,
            upload_budget,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        for entry in self.shared.peers.snapshot() {
            out.push(self.peer_info(self.live_row(entry, now))?);
        }
        for offline in self.shared.peers.offline() {
            let last = offline.last;
            let addr = last
                .map(|c| c.addr.to_string())
                .or(offline.dial_addr.clone())
                .unwrap_or_default();
            let direction = last.map_or(
                if offline.dial_addr.is_some() {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                },
                |c| c.direction,
            );
            out.push(self.peer_info(PeerRow {
                peer: offline.peer,
                addr,
                direction,
                since_ms: last.map_or(0, |c| c.since_ms),
                sent: last.map_or(0, |c| c.bytes_sent),
                received: last.map_or(0, |c| c.bytes_received),
                state: if offline.banned {
                    PeerState::Banned
                } else {
                    PeerState::Disconnected
                },
                rates: Rates::default(),
            })?);
        }
        out.sort_by_key(|p| p.peer_id);
        Ok(out)
    }

    async fn connect(&self, request: ConnectRequest) -> Result<PeerInfo, ApiError> {
        let target: PeerAddr = request
            .peer
            .parse()
            .map_err(|e: anyhow::Error| ApiError::bad_request(format!("{e:#}")))?;
        let peer = target.peer_id;
        // The address is the caller's: one that does not resolve, where nobody answers, or whose
        // node is not `PEERID` is input the node cannot act on (422), not a failure of the node.
        peers::connect(&self.shared, target).await.map_err(|e| {
            ApiError::unprocessable(format!(
                "cannot connect: {e:#}; check the address and that the peer is running"
            ))
        })?;
        // The driver registers the connection as it starts; wait for it briefly.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(info) = self.connected_peer(peer) {
                return info;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::unavailable(
                    "connected, but the connection closed at once; see the node's log",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn share(&self, request: ShareRequest) -> Result<ContentSummary, ApiError> {
        let path = PathBuf::from(&request.path);
        if !path.is_absolute() {
            return Err(ApiError::bad_request(format!(
                "{} is not an absolute path: the node may run in another directory than you",
                request.path
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let content = std::sync::Arc::clone(&self.shared.content);
        let imported = tokio::task::spawn_blocking(move || content.import(&path, &mut |_| {}))
            .await
            .map_err(internal)?;
        match imported {
            Ok((id, manifest)) => Ok(ContentSummary {
                content_id: HexId(id.0),
                size: manifest.size(),
                chunks: u64::from(manifest.chunk_count()),
                name,
            }),
            Err(
                error @ (ContentError::SourceMissing { .. }
                | ContentError::SourceIsDirectory { .. }
                | ContentError::SourceUnreadable { .. }
                | ContentError::TooLarge { .. }),
            ) => Err(ApiError::unprocessable(error.to_string())),
            Err(error) => Err(internal(error)),
        }
    }

    async fn content(&self) -> Result<Vec<ContentSummary>, ApiError> {
        let content = std::sync::Arc::clone(&self.shared.content);
        let list = tokio::task::spawn_blocking(move || content.list())
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(list
            .into_iter()
            .map(|info| ContentSummary {
                content_id: HexId(info.id.0),
                size: info.size,
                chunks: u64::from(info.chunks),
                name: info.name.unwrap_or_default(),
            })
            .collect())
    }

    async fn get(&self, request: GetRequest) -> Result<DownloadInfo, ApiError> {
        let out = PathBuf::from(&request.out);
        if !out.is_absolute() {
            return Err(ApiError::bad_request(format!(
                "{} is not an absolute path: the node may run in another directory than you",
                request.out
            )));
        }
        if out.is_dir() {
            return Err(ApiError::unprocessable(format!(
                "{} is a directory; give the path of the file to write",
                request.out
            )));
        }
        let status = super::fetch::start(&self.shared, ContentId(request.content_id.0), out)
            .map_err(|e| ApiError::conflict(format!("{e:#}")))?;
        Ok(download_info(&status))
    }

    async fn downloads(&self) -> Result<Vec<DownloadInfo>, ApiError> {
        let downloads = self.shared.downloads();
        let mut out: Vec<DownloadInfo> = downloads.values().map(|s| download_info(s)).collect();
        out.sort_by_key(|d| d.content_id);
        Ok(out)
    }

    async fn download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
        let downloads = self.shared.downloads();
        downloads
            .get(&ContentId(content_id.0))
            .map(|s| download_info(s))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no download of {content_id}; start one with POST /api/v1/downloads"
                ))
            })
    }

    async fn standing(&self, peer: HexId) -> Result<StandingInfo, ApiError> {
        let peer = PeerId(peer.0);
        let why = self
            .shared
            .standing
            .with(|standing| standing.explain(&peer, STANDING_PATHS));
        let s = why.standing;
        Ok(StandingInfo {
            peer_id: HexId(*peer.as_bytes()),
            score: s.score,
            at_floor: s.at_floor(),
            dishonest: s.dishonest,
            given: s.given,
            taken: s.taken,
            passed: s.passed,
            transitive: s.transitive,
            raw: s.raw,
            paths: why
                .paths
                .into_iter()
                .map(|path| StandingPath {
                    via: path.via.iter().map(|p| HexId(*p.as_bytes())).collect(),
                    credits: path.credits,
                })
                .collect(),
            weight: self.shared.uploads.weight(s.score),
            credit_window: self.shared.credit_window(s.score),
            queue: self
                .shared
                .uploads
                .position(&peer)
                .map(|q| UploadQueueInfo {
                    class: match q.class {
                        tally_market::PeerClass::Floor => "floor",
                        tally_market::PeerClass::Standing => "standing",
                    }
                    .to_owned(),
                    rank: q.rank as u64,
                    waiting_in_class: q.class_waiting as u64,
                    share: q.share,
                    requests: q.requests as u64,
                }),
        })
    }

    async fn ledger_export(&self) -> Result<Vec<serde_json::Value>, ApiError> {
        let store = Arc::clone(&self.shared.store);
        tokio::task::spawn_blocking(move || {
            store
                .iter()
                .map(|receipt| {
                    let receipt = receipt.map_err(internal)?;
                    serde_json::to_value(receipt).map_err(internal)
                })
                .collect()
        })
        .await
        .map_err(internal)?
    }

    async fn limits(&self) -> Result<RateLimits, ApiError> {
        Ok(self.current_limits())
    }

    async fn set_limits(&self, limits: RateLimits) -> Result<RateLimits, ApiError> {
        let rate = |v: Option<u64>| v.filter(|&r| r > 0).map(Rate);
        self.shared
            .upload_limit
            .set_rate(rate(limits.upload_bytes_per_s));
        self.shared
            .download_limit
            .set_rate(rate(limits.download_bytes_per_s));
        tracing::info!(?limits, "rate limits changed");
        Ok(self.current_limits())
    }

    async fn shutdown(&self) -> Result<(), ApiError> {
        tracing::info!("shutdown asked through the API");
        self.shared.stop_requested.cancel();
        Ok(())
    }

    async fn market(&self) -> Result<MarketInfo, ApiError> {
        let view = self.shared.market.view(super::now_ms());
        Ok(MarketInfo {
            offers: view.offers.iter().map(order_info).collect(),
            bids: view.bids.iter().map(order_info).collect(),
            offers_total: view.offers_total as u64,
            bids_total: view.bids_total as u64,
            mine: view.mine.iter().map(order_info).collect(),
            trades: view.trades.iter().map(trade_info).collect(),
        })
    }

    async fn post_offer(&self, request: OfferRequest) -> Result<OrderInfo, ApiError> {
        request.check().map_err(ApiError::bad_request)?;
        let now = super::now_ms();
        let ttl_ms = request
            .ttl_s
            .unwrap_or(DEFAULT_ORDER_TTL_S)
            .saturating_mul(1000);
        let max_rate = request
            .max_rate
            .or(self.shared.upload_limit.rate().map(|r| r.0))
            .unwrap_or(u64::MAX);
        let terms = OfferTerms {
            bytes: request.bytes,
            max_rate,
            price_per_gib: request.price_per_gib,
            issued_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            nonce: nonce(),
        };
        let offer = Offer::sign(&self.shared.identity, &self.shared.network, terms);
        self.posted(OrderMessage::Offer(offer))
    }

    async fn post_bid(&self, request: BidRequest) -> Result<OrderInfo, ApiError> {
        request.check().map_err(ApiError::bad_request)?;
        let now = super::now_ms();
        let ttl_ms = request
            .ttl_s
            .unwrap_or(DEFAULT_ORDER_TTL_S)
            .saturating_mul(1000);
        let terms = BidTerms {
            bytes: request.bytes,
            content: request.content_id.map(|c| c.0),
            max_price_per_gib: request.max_price_per_gib,
            issued_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            nonce: nonce(),
        };
        let bid = Bid::sign(&self.shared.identity, &self.shared.network, terms);
        self.posted(OrderMessage::Bid(bid))
    }

    async fn cancel_order(&self, order_id: HexId) -> Result<(), ApiError> {
        match crate::market::cancel(&self.shared, OrderId(order_id.0)) {
            Ok(_) => Ok(()),
            Err(error @ CancelError::Unknown(_)) => Err(ApiError::not_found(format!(
                "{error}; `GET /api/v1/market` lists the live orders"
            ))),
            Err(error @ CancelError::NotMine { .. }) => Err(ApiError::conflict(error.to_string())),
        }
    }

    async fn trades(&self) -> Result<Vec<TradeInfo>, ApiError> {
        let trades = self.shared.market.trades(super::now_ms());
        Ok(trades.iter().map(trade_info).collect())
    }

    async fn identity(&self) -> Result<Identity, ApiError> {
        let shared = &self.shared;
        let api_addr = shared
            .api_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .map(|a| a.to_string())
            .unwrap_or_default();
        Ok(Identity {
            peer_id: HexId(*shared.me.as_bytes()),
            network: shared.network_name.clone(),
            network_id: shared.network.to_string(),
            quic_addr: shared.endpoint.local_addr().to_string(),
            api_addr,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    async fn receipts(&self, filter: ReceiptFilter) -> Result<ReceiptPage, ApiError> {
        let store = Arc::clone(&self.shared.store);
        let after = filter.after.map(|c| Pair {
            uploader: PeerId(c.uploader.0),
            downloader: PeerId(c.downloader.0),
        });
        // One more than the page, to know whether another page follows.
        let want = filter.limit.saturating_add(1);
        let mut receipts = tokio::task::spawn_blocking(move || match filter.peer {
            None => store.receipts_after(after.as_ref(), want),
            Some(peer) => {
                let mut all = store.receipts_of(&PeerId(peer.0))?;
                all.sort_by_key(|r| (r.uploader, r.downloader));
                Ok(all
                    .into_iter()
                    .filter(|r| {
                        after
                            .is_none_or(|a| (r.uploader, r.downloader) > (a.uploader, a.downloader))
                    })
                    .take(want)
                    .collect())
            }
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let next_cursor = if receipts.len() > filter.limit {
            receipts.truncate(filter.limit);
            receipts.last().map(|r| {
                ReceiptCursor {
                    uploader: HexId(*r.uploader.as_bytes()),
                    downloader: HexId(*r.downloader.as_bytes()),
                }
                .to_string()
            })
        } else {
            None
        };
        Ok(ReceiptPage {
            receipts: receipts.iter().map(receipt_info).collect(),
            next_cursor,
        })
    }

    async fn conflicts(&self) -> Result<Vec<ConflictInfo>, ApiError> {
        let store = Arc::clone(&self.shared.store);
        let proofs = tokio::task::spawn_blocking(move || store.conflicts())
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let mut out = Vec::with_capacity(2 * proofs.len());
        for proof in proofs {
            let pair = proof.pair();
            let receipts: Vec<ReceiptInfo> =
                proof.receipts().into_iter().map(receipt_info).collect();
            let seq = receipts.first().map_or(0, |r| r.seq);
            // Both keys signed both receipts: the proof marks each of them dishonest.
            for peer in [pair.uploader, pair.downloader] {
                out.push(ConflictInfo {
                    peer: HexId(*peer.as_bytes()),
                    proof_id: HexId(proof.id()),
                    uploader: HexId(*pair.uploader.as_bytes()),
                    downloader: HexId(*pair.downloader.as_bytes()),
                    seq,
                    receipts: receipts.clone(),
                });
            }
        }
        Ok(out)
    }

    async fn cancel_download(&self, content_id: HexId) -> Result<DownloadInfo, ApiError> {
        let status = self
            .shared
            .downloads()
            .get(&ContentId(content_id.0))
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no download of {content_id}; `GET /api/v1/downloads` lists them"
                ))
            })?;
        match status.cancel() {
            Ok(()) => {
                if tokio::time::timeout(CANCEL_WAIT, status.stopped())
                    .await
                    .is_err()
                {
                    tracing::warn!(content = %content_id, "a cancelled download's tasks are still stopping");
                }
                Ok(download_info(&status))
            }
            Err(Phase::Complete) => Err(ApiError::conflict(format!(
                "the download of {content_id} is complete already; there is nothing to cancel"
            ))),
            Err(Phase::Failed(why)) => Err(ApiError::conflict(format!(
                "the download of {content_id} failed already ({why}); there is nothing to cancel"
            ))),
            Err(other) => Err(internal(format!(
                "cannot cancel a download that is {other:?}"
            ))),
        }
    }

    async fn settings(&self) -> Result<Settings, ApiError> {
        Ok(self.current_settings())
    }

    async fn set_settings(&self, settings: Settings) -> Result<Settings, ApiError> {
        settings.check().map_err(ApiError::unprocessable)?;
        // The budgets first: if they are refused, nothing has changed.
        self.shared
            .uploads
            .set_budget_limits(settings.upload_budget_daily, settings.upload_budget_monthly)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        self.shared
            .upload_limit
            .set_rate(settings.upload_bytes_per_s.map(Rate));
        self.shared
            .download_limit
            .set_rate(settings.download_bytes_per_s.map(Rate));
        tracing::info!(?settings, "settings changed");
        Ok(self.current_settings())
    }

    async fn offers(&self) -> Result<Vec<OrderInfo>, ApiError> {
        let orders = self.shared.market.orders(Side::Offer, super::now_ms());
        Ok(orders.iter().map(order_info).collect())
    }

    async fn bids(&self) -> Result<Vec<OrderInfo>, ApiError> {
        let orders = self.shared.market.orders(Side::Bid, super::now_ms());
        Ok(orders.iter().map(order_info).collect())
    }

    async fn events(&self, after: Option<u64>) -> Result<tally_web::events::EventStream, ApiError> {
        let stop = self.shared.cancel.clone();
        Ok(super::events::stream(&self.shared.events, stop, after))
    }

    async fn metrics(&self) -> Result<tally_web::metrics::MetricsSnapshot, ApiError> {
        Ok(super::metrics::snapshot(&self.shared))
    }
}

impl NodeHandle {
    fn posted(&self, message: OrderMessage) -> Result<OrderInfo, ApiError> {
        let id = crate::market::post(&self.shared, message).map_err(learn_error)?;
        self.shared
            .market
            .own_view(&id, super::now_ms())
            .map(|view| order_info(&view))
            .ok_or_else(|| internal("the order was posted but is no longer kept"))
    }

    fn current_settings(&self) -> Settings {
        let (daily, monthly) = self.shared.uploads.budget_limits();
        Settings {
            upload_bytes_per_s: self.shared.upload_limit.rate().map(|r| r.0),
            download_bytes_per_s: self.shared.download_limit.rate().map(|r| r.0),
            upload_budget_daily: daily,
            upload_budget_monthly: monthly,
        }
    }

    fn current_limits(&self) -> RateLimits {
        RateLimits {
            upload_bytes_per_s: self.shared.upload_limit.rate().map(|r| r.0),
            download_bytes_per_s: self.shared.download_limit.rate().map(|r| r.0),
        }
    }
}
