//! The node's market: its order book, its own orders and its trades, over `tally-market`'s
//! pure logic. Owns what the node does with offers, bids and cancellations: verifying what
//! peers send, flooding what is new to every other connected peer, pushing the live book to a
//! peer that has just connected, and the trade handshake (the buyer proposes, the seller
//! countersigns).
//!
//! **Books are predictions; signatures bind.** Every node matches every order it learns in its
//! own book, so books fill and drain alike everywhere but need not agree (orders arrive in other
//! orders). A fill binds no one: when a fill in this node's book makes it the buyer, it
//! proposes signed [`TradeTerms`] to the seller ([`Request::Trade`]), and the seller
//! countersigns only while its own ledger of the offer — the offer's bytes minus those it
//! already agreed to sell, [`OwnOrder::committed`] — leaves enough, whatever its book says.
//!
//! **Bounds.** The book is bounded ([`BookConfig`]); own orders at most [`MAX_OWN_ORDERS`],
//! cancellations remembered at most [`MAX_CANCELS_REMEMBERED`], trades kept at most
//! [`MAX_TRADES`] (the oldest ended one goes first). Expired orders are dropped lazily, at each
//! call.
//!
//! **Delivery and settlement follow the transfer.** The seller counts each chunk it sends the
//! buyer under an agreed trade as delivered ([`Market::seller_send`], which also keeps what the
//! buyer owes on the trade within its credit window), the buyer each chunk it receives
//! ([`Market::buyer_credits`]); a receipt both signed settles the trade's bytes it covers
//! ([`Market::acknowledged`]). [`Market::tick`] applies deadlines and silence: a trade ends
//! settled, expired or with one party in default, and bytes it left undelivered go back to the
//! offer and the bid (the bid is matched again in this book).
//!
//! It must not move bytes itself: serving chunks with priority is the upload scheduler's
//! business, pricing them in receipts the pairs'.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tally_ledger::{Identity, NetworkId, PeerId};
use tally_market::order::{GIB, MAX_CLOCK_SKEW_MS, credits_for};
use tally_market::{
    Agreement, BookConfig, BookError, Cancel, Fill, OrderBook, OrderError, OrderId, Party,
    RestingOrder, Side, Trade, TradeProposal, TradeState, TradeTerms, VerifiedOrder,
};

use crate::config::PeerAddr;
use crate::daemon::pairs::Window;
use crate::daemon::peers::{self, Direction};
use crate::daemon::{Shared, now_ms};
use crate::transport::Connection;
use crate::wire::{MAX_ORDERS_PER_MESSAGE, OrderMessage, RefusalCode, Request, Response};

/// Trades kept at most; past it the oldest ended trade is forgotten first, else the oldest.
pub const MAX_TRADES: usize = 1024;
/// This node's own orders kept at most (offers and bids, live or filled, until they expire).
pub const MAX_OWN_ORDERS: usize = 256;
/// Cancellations remembered at most: to refuse their replays, and to hold one that arrives
/// before its order.
pub const MAX_CANCELS_REMEMBERED: usize = 4096;
/// How long after it is proposed a trade must be delivered.
pub const TRADE_DELIVERY_MS: u64 = 60 * 60 * 1000;
/// How long a trade's party may stay silent in its turn before it is in default.
pub const TRADE_SILENCE_MS: u64 = 10 * 60 * 1000;
/// Penalty for an order, cancellation or trade proposal that does not verify (forged, made for
/// another network, malformed) or a message of more than [`MAX_ORDERS_PER_MESSAGE`].
pub const PENALTY_BAD_ORDER: u32 = 25;
/// How long a push of orders or a trade proposal may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Orders of each side of the book a view lists at most, best first.
pub const VIEW_DEPTH: usize = 50;

/// Why an order or a cancellation was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LearnError {
    /// It does not verify: forged, made for another network, malformed, or dated in the future.
    /// The peer that sent it is penalised.
    #[error("{0}")]
    Invalid(OrderError),
    /// It has expired: dropped without a word.
    #[error("it has expired")]
    Expired,
    /// The book refused it (full, the owner at its cap, a self-cross, a cancellation by
    /// someone else). Not the sender's fault: it may only have relayed it.
    #[error("{0}")]
    Refused(BookError),
}

impl From<OrderError> for LearnError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Expired { .. } => Self::Expired,
            other => Self::Invalid(other),
        }
    }
}

/// What learning an order did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// It was new to this node: relay it.
    pub new: bool,
    /// Trades this node proposes, as the buyer, because of it: `(trade id, proposal)`.
    pub proposals: Vec<([u8; 32], TradeProposal)>,
    /// The orders it changed, as they stand after it (for the event stream): the new order
    /// and those its fills touched, or the order a cancellation withdrew.
    pub orders: Vec<OrderView>,
}

/// Why this node cannot cancel an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No live order of this node, nor any resting order, has this id.
    #[error("no live order {0}")]
    Unknown(OrderId),
    /// The order is someone else's.
    #[error("order {id} is not this node's: it is {owner}'s")]
    NotMine {
        /// The order.
        id: OrderId,
        /// Its owner.
        owner: PeerId,
    },
}

/// Why the seller refused a trade proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// It does not verify, or does not come from its buyer, or names another seller. The
    /// peer that sent it is penalised.
    #[error("{0}")]
    Invalid(String),
    /// The offer is not a live offer of this node (unknown, expired or cancelled).
    #[error("offer {0} is not a live offer of this node")]
    NotLive(OrderId),
    /// The offer has fewer bytes left than asked.
    #[error("offer {id} has {left} bytes left, not {asked}")]
    NotEnough {
        /// The offer.
        id: OrderId,
        /// Bytes not yet agreed to others.
        left: u64,
        /// Bytes asked.
        asked: u64,
    },
    /// The terms do not match the offer (price below it, a deadline out of range).
    #[error("the terms do not match the offer: {0}")]
    Terms(&'static str),
}

/// One of this node's own orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnOrder {
    /// The signed order (an offer or a bid).
    pub message: OrderMessage,
    /// Bytes of it in trades proposed (bids) or agreed (offers) and not called off.
    pub committed: u64,
    /// Whether this node cancelled it.
    pub cancelled: bool,
}

impl OwnOrder {
    fn bytes(&self) -> u64 {
        match self.message {
            OrderMessage::Offer(offer) => offer.terms.bytes,
            OrderMessage::Bid(bid) => bid.terms.bytes,
            OrderMessage::Cancel(_) => 0,
        }
    }

    fn expires_ms(&self) -> u64 {
        match self.message {
            OrderMessage::Offer(offer) => offer.terms.expires_ms,
            OrderMessage::Bid(bid) => bid.terms.expires_ms,
            OrderMessage::Cancel(_) => 0,
        }
    }

    /// Bytes not yet committed to trades.
    pub fn left(&self) -> u64 {
        self.bytes().saturating_sub(self.committed)
    }
}

/// An order as a view lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    /// Its id.
    pub id: OrderId,
    /// Offer or bid.
    pub side: Side,
    /// Its owner.
    pub owner: PeerId,
    /// Bytes when made.
    pub bytes: u64,
    /// Bytes left: in the book for others' orders; not committed to trades for this node's.
    pub remaining: u64,
    /// An offer's price, a bid's maximum, credits per GiB.
    pub price_per_gib: u64,
    /// An offer's most bytes per second.
    pub max_rate: Option<u64>,
    /// A bid's content.
    pub content: Option<[u8; 32]>,
    /// When it expires, Unix ms.
    pub expires_ms: u64,
    /// Whether it is this node's.
    pub mine: bool,
    /// Whether this node cancelled it (its own orders only).
    pub cancelled: bool,
}

/// A trade as this node keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeEntry {
    /// BLAKE3 of the terms' signed bytes.
    pub id: [u8; 32],
    /// This node's side.
    pub role: Party,
    /// The state machine.
    pub trade: Trade,
    /// Both signatures, once agreed.
    pub agreement: Option<Agreement>,
    /// Why it was refused or failed, if it was.
    pub note: Option<String>,
    /// Bytes moved between the two parties that count for the trade's delivery: the seller
    /// counts from its countersignature, the buyer from its proposal, so an honest buyer
    /// never counts fewer than the seller sent.
    pub counted: u64,
    /// Of the trade's bytes, those a receipt both signed covers: paid for.
    pub acked: u64,
}

/// The market as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketView {
    /// Live offers, best (cheapest, earliest) first, at most [`VIEW_DEPTH`].
    pub offers: Vec<OrderView>,
    /// Live bids, best (highest, earliest) first, at most [`VIEW_DEPTH`].
    pub bids: Vec<OrderView>,
    /// Resting offers in all.
    pub offers_total: usize,
    /// Resting bids in all.
    pub bids_total: usize,
    /// This node's own unexpired orders.
    pub mine: Vec<OrderView>,
    /// Trades, oldest first.
    pub trades: Vec<TradeEntry>,
}

struct Inner {
    book: OrderBook,
    /// The signed form of every resting order, to push to peers that connect.
    signed: HashMap<OrderId, OrderMessage>,
    mine: HashMap<OrderId, OwnOrder>,
    /// Cancellations seen, by the order they withdraw.
    cancels: HashMap<OrderId, Cancel>,
    trades: VecDeque<TradeEntry>,
    /// Bytes moved under each agreed trade since it was agreed, as this side counts them for
    /// pricing (see [`Market::seller_send`] and [`Market::buyer_credits`]).
    moved: HashMap<[u8; 32], u64>,
}

/// The node's market: book, own orders and trades behind one lock (never held across an
/// `.await`).
pub struct Market {
    identity: Arc<Identity>,
    me: PeerId,
    network: NetworkId,
    inner: Mutex<Inner>,
}

/// Bytes a buyer pays at par after a trade is agreed before it prices bytes at the trade: more
/// than the chunks a seller may have in flight when it countersigns.
pub const SETTLE_MARGIN: u64 = 4 << 20;
/// Bytes beyond a trade's own the seller still accepts at the trade's price, so that bytes it
/// sends while the agreement travels back do not leave an honest buyer short.
pub const SETTLE_SLACK: u64 = 64 << 20;

/// What [`Market::tick`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticked {
    /// Trades that ended since the last tick.
    pub ended: Vec<TradeEntry>,
    /// Trades this node proposes because a bid's freed bytes matched again.
    pub proposals: Vec<([u8; 32], TradeProposal)>,
}

/// How many of `len` bytes moved after `counted` fall within a trade of `bytes`.
fn within(counted: u64, len: u64, bytes: u64) -> u64 {
    counted
        .saturating_add(len)
        .min(bytes)
        .saturating_sub(counted.min(bytes))
}

/// The id of a trade: BLAKE3 of its terms' signed bytes.
pub fn trade_id(terms: &TradeTerms, network: &NetworkId) -> [u8; 32] {
    *blake3::hash(&terms.signed_bytes(network)).as_bytes()
}

impl Market {
    /// An empty market for `identity` on `network`.
    pub fn new(identity: Arc<Identity>, network: NetworkId, config: BookConfig) -> Self {
        Self {
            me: identity.peer_id(),
            identity,
            network,
            inner: Mutex::new(Inner {
                book: OrderBook::new(config),
                signed: HashMap::new(),
                mine: HashMap::new(),
                cancels: HashMap::new(),
                trades: VecDeque::new(),
                moved: HashMap::new(),
            }),
        }
    }

    fn inner(&self, now_ms: u64) -> MutexGuard<'_, Inner> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.expire(now_ms);
        inner
    }

    /// Verifies `message` and applies it to the book at `now_ms`: an order is matched and what
    /// is left rests; a cancellation withdraws its order (or is held until the order arrives).
    /// Fills of the book that make this node the buyer become trade proposals.
    pub fn learn(&self, message: OrderMessage, now_ms: u64) -> Result<Learned, LearnError> {
        let network = &self.network;
        let order: VerifiedOrder = match message {
            OrderMessage::Offer(offer) => offer.verify(network, now_ms)?.into(),
            OrderMessage::Bid(bid) => bid.verify(network, now_ms)?.into(),
            OrderMessage::Cancel(cancel) => {
                let verified = cancel.verify(network, now_ms)?;
                let mut inner = self.inner(now_ms);
                let withdrawn = inner.signed.get(&cancel.order_id).copied();
                let mut learned = inner.cancel(&verified)?;
                if let Some(order) = withdrawn.filter(|_| learned.new) {
                    let view = inner.touched_view(cancel.order_id, order, self.me);
                    learned.orders.push(OrderView {
                        cancelled: true,
                        ..view
                    });
                }
                return Ok(learned);
            }
        };
        let (id, owner) = match message {
            OrderMessage::Offer(offer) => (order.id(), offer.seller),
            OrderMessage::Bid(bid) => (order.id(), bid.buyer),
            OrderMessage::Cancel(_) => return Ok(Learned::default()),
        };
        let mut inner = self.inner(now_ms);
        if inner.cancels.get(&id).is_some_and(|c| c.owner == owner) {
            return Ok(Learned::default());
        }
        let placed = match inner.book.insert(order, now_ms) {
            Ok(placed) => placed,
            Err(BookError::Duplicate(_)) => return Ok(Learned::default()),
            Err(BookError::Expired { .. }) => return Err(LearnError::Expired),
            Err(other) => return Err(LearnError::Refused(other)),
        };
        if placed.resting > 0 {
            inner.signed.insert(id, message);
        }
        let mut proposals = Vec::new();
        let mut orders = vec![inner.touched_view(id, message, self.me)];
        for fill in &placed.fills {
            for filled in [fill.offer_id, fill.bid_id] {
                if let Some(other) = inner.signed.get(&filled).copied().filter(|_| filled != id) {
                    orders.push(inner.touched_view(filled, other, self.me));
                }
                if inner.book.get(&filled).is_none() {
                    inner.signed.remove(&filled);
                }
            }
            if fill.buyer == self.me {
                proposals.push(self.propose(&mut inner, fill, now_ms));
            }
        }
        Ok(Learned {
            new: true,
            proposals,
            orders,
        })
    }

    /// The buyer's side of a fill: signs its terms, keeps the trade as proposed, and commits
    /// the bytes of its bid.
    fn propose(&self, inner: &mut Inner, fill: &Fill, now_ms: u64) -> ([u8; 32], TradeProposal) {
        let terms = TradeTerms::from_fill(fill, now_ms.saturating_add(TRADE_DELIVERY_MS));
        let proposal = terms.propose(&self.identity, &self.network);
        let id = trade_id(&terms, &self.network);
        if let Some(own) = inner.mine.get_mut(&fill.bid_id) {
            own.committed = own.committed.saturating_add(fill.bytes);
        }
        inner.keep_trade(TradeEntry {
            id,
            role: Party::Buyer,
            trade: Trade::propose(terms, now_ms, TRADE_SILENCE_MS),
            agreement: None,
            note: None,
            counted: 0,
            acked: 0,
        });
        (id, proposal)
    }

    /// Signs and learns this node's own order (an offer or a bid) and keeps it as its own.
    pub fn post(
        &self,
        message: OrderMessage,
        now_ms: u64,
    ) -> Result<(OrderId, Learned), LearnError> {
        let id = match message {
            OrderMessage::Offer(offer) => offer.id(&self.network),
            OrderMessage::Bid(bid) => bid.id(&self.network),
            OrderMessage::Cancel(_) => {
                return Err(LearnError::Invalid(OrderError::Malformed(
                    "a cancellation is not an order",
                )));
            }
        };
        {
            let inner = self.inner(now_ms);
            if inner.mine.len() >= MAX_OWN_ORDERS {
                return Err(LearnError::Refused(BookError::OwnerFull {
                    owner: self.me,
                    cap: MAX_OWN_ORDERS,
                }));
            }
        }
        // Kept as this node's before it is matched, so a fill on arrival commits its bytes.
        let own = OwnOrder {
            message,
            committed: 0,
            cancelled: false,
        };
        self.inner(now_ms).mine.insert(id, own);
        match self.learn(message, now_ms) {
            Ok(learned) => Ok((id, learned)),
            Err(error) => {
                self.inner(now_ms).mine.remove(&id);
                Err(error)
            }
        }
    }

    /// Withdraws this node's live order `id`: signs the cancellation (to flood) and applies it.
    pub fn cancel_mine(&self, id: OrderId, now_ms: u64) -> Result<Cancel, CancelError> {
        let mut inner = self.inner(now_ms);
        match inner.mine.get(&id) {
            Some(own) if !own.cancelled => {}
            _ => {
                return Err(match inner.book.get(&id) {
                    Some(order) if order.owner != self.me => CancelError::NotMine {
                        id,
                        owner: order.owner,
                    },
                    _ => CancelError::Unknown(id),
                });
            }
        }
        let cancel = Cancel::sign(&self.identity, &self.network, id, now_ms);
        if let Ok(verified) = cancel.verify(&self.network, now_ms) {
            // Already filled in this book is fine: the cancellation still binds the rest.
            let _ = inner.book.cancel(&verified);
        }
        inner.signed.remove(&id);
        inner.remember_cancel(cancel);
        if let Some(own) = inner.mine.get_mut(&id) {
            own.cancelled = true;
        }
        Ok(cancel)
    }

    /// The seller's side of a trade: checks `proposal` (sent by `from`) against this node's
    /// offer and, if it fits, countersigns it, commits the offer's bytes and keeps the trade as
    /// agreed. The same proposal again gets the same agreement.
    pub fn answer_proposal(
        &self,
        proposal: TradeProposal,
        from: PeerId,
        now_ms: u64,
    ) -> Result<Agreement, ProposalError> {
        proposal
            .verify(&self.network)
            .map_err(|e| ProposalError::Invalid(e.to_string()))?;
        let terms = proposal.terms;
        if terms.buyer != from {
            return Err(ProposalError::Invalid(
                "a trade is proposed by its buyer, not by a relay".into(),
            ));
        }
        if terms.seller != self.me {
            return Err(ProposalError::Invalid(format!(
                "the terms name seller {}, not this node",
                terms.seller
            )));
        }
        let id = trade_id(&terms, &self.network);
        let mut inner = self.inner(now_ms);
        if let Some(agreement) = inner
            .trades
            .iter()
            .find(|t| t.id == id && t.role == Party::Seller)
            .and_then(|t| t.agreement)
        {
            return Ok(agreement);
        }
        let Some(own) = inner.mine.get(&terms.offer_id).copied() else {
            return Err(ProposalError::NotLive(terms.offer_id));
        };
        let OrderMessage::Offer(offer) = own.message else {
            return Err(ProposalError::NotLive(terms.offer_id));
        };
        if own.cancelled || offer.terms.expires_ms <= now_ms {
            return Err(ProposalError::NotLive(terms.offer_id));
        }
        if terms.price_per_gib < offer.terms.price_per_gib {
            return Err(ProposalError::Terms("the price is below the offer's"));
        }
        let latest = now_ms
            .saturating_add(TRADE_DELIVERY_MS)
            .saturating_add(MAX_CLOCK_SKEW_MS);
        if terms.expires_ms <= now_ms || terms.expires_ms > latest {
            return Err(ProposalError::Terms(
                "the delivery deadline is past or more than an hour away",
            ));
        }
        if terms.bytes > own.left() {
            return Err(ProposalError::NotEnough {
                id: terms.offer_id,
                left: own.left(),
                asked: terms.bytes,
            });
        }
        let agreement = proposal.countersign(&self.identity, &self.network);
        let verified = agreement
            .verify(&self.network)
            .map_err(|e| ProposalError::Invalid(e.to_string()))?;
        let mut trade = Trade::propose(terms, now_ms, TRADE_SILENCE_MS);
        trade
            .agree(&verified, now_ms)
            .map_err(|e| ProposalError::Invalid(e.to_string()))?;
        if let Some(own) = inner.mine.get_mut(&terms.offer_id) {
            own.committed = own.committed.saturating_add(terms.bytes);
        }
        inner.keep_trade(TradeEntry {
            id,
            role: Party::Seller,
            trade,
            agreement: Some(agreement),
            note: None,
            counted: 0,
            acked: 0,
        });
        Ok(agreement)
    }

    /// Whether this node, as seller, has an agreed trade with `buyer` still to deliver: its
    /// chunk requests are then served at the top of the upload queue (a trade's priority).
    pub fn delivering_to(&self, buyer: &PeerId, now_ms: u64) -> bool {
        let mut inner = self.inner(now_ms);
        inner.trades.iter_mut().any(|t| {
            t.role == Party::Seller
                && t.trade.terms().buyer == *buyer
                && matches!(
                    t.trade.tick(now_ms),
                    TradeState::Agreed | TradeState::Delivering
                )
                && t.trade.remaining_bytes() > 0
        })
    }

    /// Sends `len` bytes to `buyer` if `reserve` lets them go: `reserve` gets the credits due
    /// for them and counts them in the pair (under the pair's credit window), all under this
    /// market's lock, so what is counted here is exactly what the pair counted.
    ///
    /// The credits due are the lower of the trade's price and par while an agreed trade with
    /// the buyer is within its bytes plus [`SETTLE_SLACK`] and its deadline plus the clock
    /// skew; else par (`len`). Deliberately lenient: the buyer prices a subset of these bytes
    /// (see [`Market::buyer_credits`]), so an honest buyer's receipt never falls short of what
    /// is due, and a dishonest one gains at most [`SETTLE_SLACK`] bytes at the trade's price.
    ///
    /// The chunk's bytes within the trade's count as delivered. What the buyer owes on the
    /// trade — delivered and not covered by a receipt — stays within `window` credits: a chunk
    /// that would pass it is not sent ([`Window::Full`], the buyer settles and asks again),
    /// unless the buyer owes nothing (one chunk always goes).
    pub fn seller_send<E>(
        &self,
        buyer: &PeerId,
        len: u64,
        window: u64,
        now_ms: u64,
        reserve: impl FnOnce(u64) -> Result<Window, E>,
    ) -> Result<Window, E> {
        let mut inner = self.inner(now_ms);
        let Inner { trades, moved, .. } = &mut *inner;
        let live = trades.iter_mut().find(|t| {
            let terms = t.trade.terms();
            t.role == Party::Seller
                && t.agreement.is_some()
                && terms.buyer == *buyer
                && now_ms < terms.expires_ms.saturating_add(MAX_CLOCK_SKEW_MS)
                && moved.get(&t.id).copied().unwrap_or(0) < terms.bytes.saturating_add(SETTLE_SLACK)
        });
        let Some(entry) = live else {
            return reserve(len);
        };
        let terms = *entry.trade.terms();
        let delivering = within(entry.counted, len, terms.bytes);
        if delivering > 0 && entry.trade.owed() > 0 && delivering > entry.trade.deliverable(window)
        {
            return Ok(Window::Full {
                unacknowledged: entry.counted.min(terms.bytes).saturating_sub(entry.acked),
            });
        }
        let sent = reserve(credits_for(len, terms.price_per_gib.min(GIB)))?;
        if sent == Window::Open {
            let counted = moved.entry(entry.id).or_insert(0);
            *counted = counted.saturating_add(len);
            entry.counted = entry.counted.saturating_add(len);
            if delivering > 0
                && let Err(why) = entry.trade.deliver(delivering, u64::MAX, now_ms)
            {
                tracing::debug!("a chunk sent under a trade does not count for it: {why}");
            }
        }
        Ok(sent)
    }

    /// The credits this node, as buyer, owes for `len` verified bytes received from `seller`:
    /// par for the first [`SETTLE_MARGIN`] bytes after the agreement (bytes the seller sent
    /// before it countersigned may still be arriving), then the trade's price for the trade's
    /// bytes, then par; par again from the clock skew before the deadline. Chunks inside the
    /// priced stretch are priced exactly as the seller prices them, so the receipt follows the
    /// trade's price.
    pub fn buyer_credits(&self, seller: &PeerId, len: u64, now_ms: u64) -> u64 {
        let mut inner = self.inner(now_ms);
        let Inner { trades, moved, .. } = &mut *inner;
        // Delivery counts from the proposal on, in every trade with the seller still open.
        for entry in trades.iter_mut() {
            if entry.role != Party::Buyer
                || entry.trade.terms().seller != *seller
                || entry.trade.tick(now_ms).is_final()
            {
                continue;
            }
            let delivering = within(entry.counted, len, entry.trade.terms().bytes);
            entry.counted = entry.counted.saturating_add(len);
            if delivering > 0
                && entry.trade.state() != TradeState::Proposed
                && let Err(why) = entry.trade.deliver(delivering, u64::MAX, now_ms)
            {
                tracing::debug!("a chunk received under a trade does not count for it: {why}");
            }
        }
        let live = trades.iter().find(|t| {
            let terms = t.trade.terms();
            t.role == Party::Buyer
                && t.agreement.is_some()
                && terms.seller == *seller
                && now_ms.saturating_add(MAX_CLOCK_SKEW_MS) < terms.expires_ms
        });
        let Some(trade) = live else {
            return len;
        };
        let terms = trade.trade.terms();
        let seen = moved.entry(trade.id).or_insert(0);
        let (from, to) = (*seen, seen.saturating_add(len));
        *seen = to;
        let priced_from = SETTLE_MARGIN;
        let priced_to = SETTLE_MARGIN.saturating_add(terms.bytes);
        let priced = to.min(priced_to).saturating_sub(from.max(priced_from));
        let price = terms.price_per_gib;
        if priced == len {
            credits_for(len, price)
        } else {
            credits_for(priced, price).saturating_add(len - priced)
        }
    }

    /// Takes back the trades this node agreed before a restart, from their `agreements` (as
    /// the store kept them): each that verifies, names this node as a party and is not past
    /// its deadline is kept again as agreed, its delivery counted from now. Returns the ids of
    /// those that are over (expired, or not this node's), for the store to forget.
    pub fn restore(&self, agreements: Vec<Agreement>, now_ms: u64) -> Vec<[u8; 32]> {
        let mut over = Vec::new();
        let mut inner = self.inner(now_ms);
        for agreement in agreements {
            let terms = agreement.terms;
            let id = trade_id(&terms, &self.network);
            let role = if terms.seller == self.me {
                Party::Seller
            } else if terms.buyer == self.me {
                Party::Buyer
            } else {
                over.push(id);
                continue;
            };
            let Ok(verified) = agreement.verify(&self.network) else {
                over.push(id);
                continue;
            };
            if now_ms >= terms.expires_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
                over.push(id);
                continue;
            }
            if inner.trades.iter().any(|t| t.id == id) {
                continue;
            }
            let mut trade = Trade::propose(terms, now_ms, TRADE_SILENCE_MS);
            if trade.agree(&verified, now_ms).is_err() {
                over.push(id);
                continue;
            }
            inner.keep_trade(TradeEntry {
                id,
                role,
                trade,
                agreement: Some(agreement),
                note: None,
                counted: 0,
                acked: 0,
            });
        }
        over
    }

    /// The buyer's side once the seller countersigned trade `id`.
    pub fn agreed(&self, id: [u8; 32], agreement: Agreement, now_ms: u64) -> Result<(), String> {
        let verified = agreement
            .verify(&self.network)
            .map_err(|e| format!("the seller's agreement does not verify: {e}"))?;
        let mut inner = self.inner(now_ms);
        let entry = inner
            .trades
            .iter_mut()
            .find(|t| t.id == id && t.role == Party::Buyer)
            .ok_or_else(|| "the trade is no longer kept".to_owned())?;
        entry
            .trade
            .agree(&verified, now_ms)
            .map_err(|e| e.to_string())?;
        entry.agreement = Some(agreement);
        // Bytes that arrived while the proposal travelled count for the trade now.
        let early = entry.counted.min(entry.trade.terms().bytes);
        if early > 0
            && let Err(why) = entry.trade.deliver(early, u64::MAX, now_ms)
        {
            tracing::debug!("bytes received before the agreement do not count for it: {why}");
        }
        Ok(())
    }

    /// A receipt with `peer` both signed: in every open trade this node has with it as
    /// `role`, the trade's bytes that receipt covers are paid. `unacknowledged` is what the
    /// pair still counts as moved and not covered — receipts are cumulative, so those are the
    /// latest bytes and everything counted before them is covered.
    pub fn acknowledged(&self, peer: &PeerId, role: Party, unacknowledged: u64, now_ms: u64) {
        let mut inner = self.inner(now_ms);
        for entry in inner.trades.iter_mut() {
            let terms = *entry.trade.terms();
            let counterparty = match role {
                Party::Seller => terms.buyer,
                Party::Buyer => terms.seller,
            };
            if entry.role != role || counterparty != *peer {
                continue;
            }
            if entry.trade.tick(now_ms) != TradeState::Delivering {
                continue;
            }
            let covered = entry
                .counted
                .saturating_sub(unacknowledged)
                .min(entry.trade.delivered_bytes());
            if covered <= entry.acked {
                continue;
            }
            let paid = credits_for(covered, terms.price_per_gib);
            let more = paid.saturating_sub(entry.trade.settled_credits());
            match entry.trade.settle(more, now_ms) {
                Ok(()) => entry.acked = covered,
                Err(why) => tracing::debug!("a receipt does not settle its trade: {why}"),
            }
        }
    }

    /// Applies deadlines and silence to every trade at `now_ms`. Returns the trades that
    /// ended since the last call, as they ended. The bytes a trade left undelivered go back
    /// to this node's offer or bid; a bid's are matched again in this book, and the trades
    /// that makes are returned to propose.
    pub fn tick(&self, now_ms: u64) -> Ticked {
        let mut inner = self.inner(now_ms);
        let mut ended = Vec::new();
        let mut reopen = Vec::new();
        for entry in inner.trades.iter_mut() {
            let before = entry.trade.state();
            let after = entry.trade.tick(now_ms);
            if before == after || !after.is_final() {
                continue;
            }
            let undelivered = entry.trade.remaining_bytes();
            let terms = *entry.trade.terms();
            let order = match entry.role {
                Party::Seller => terms.offer_id,
                Party::Buyer => terms.bid_id,
            };
            reopen.push((order, undelivered));
            ended.push(entry.clone());
        }
        let mut proposals = Vec::new();
        for (order, undelivered) in reopen {
            proposals.extend(self.give_back(&mut inner, order, undelivered, now_ms));
        }
        Ticked { ended, proposals }
    }

    /// Frees `bytes` of this node's order `id` that a trade did not use: they count as not
    /// committed again, and a bid's go back into this book and are matched; returns the
    /// proposals that makes.
    fn give_back(
        &self,
        inner: &mut Inner,
        id: OrderId,
        bytes: u64,
        now_ms: u64,
    ) -> Vec<([u8; 32], TradeProposal)> {
        let Some(own) = inner.mine.get_mut(&id) else {
            return Vec::new();
        };
        own.committed = own.committed.saturating_sub(bytes);
        let (cancelled, message) = (own.cancelled, own.message);
        let OrderMessage::Bid(bid) = message else {
            return Vec::new();
        };
        if cancelled || bytes == 0 {
            return Vec::new();
        }
        let Ok(verified) = bid.verify(&self.network, now_ms) else {
            return Vec::new();
        };
        let placed = match inner.book.reopen(verified, bytes, now_ms) {
            Ok(placed) => placed,
            Err(why) => {
                tracing::debug!("the bid's freed bytes stay out of the book: {why}");
                return Vec::new();
            }
        };
        if placed.resting > 0 {
            inner.signed.insert(id, message);
        }
        let mut proposals = Vec::new();
        for fill in &placed.fills {
            if inner.book.get(&fill.offer_id).is_none() {
                inner.signed.remove(&fill.offer_id);
            }
            if fill.buyer == self.me {
                proposals.push(self.propose(inner, fill, now_ms));
            }
        }
        proposals
    }

    /// The buyer's side when the seller refused trade `id` or could not be asked in time:
    /// the trade is cancelled with the reason kept, the seller's offer leaves this book (its
    /// owner will not sell on it, or cannot be reached), and the bid's bytes are matched again.
    /// Returns the trades that makes, to propose.
    pub fn failed(&self, id: [u8; 32], why: String, now_ms: u64) -> Vec<([u8; 32], TradeProposal)> {
        let mut inner = self.inner(now_ms);
        let Some(entry) = inner
            .trades
            .iter_mut()
            .find(|t| t.id == id && t.role == Party::Buyer)
        else {
            return Vec::new();
        };
        entry.note = Some(why);
        if entry.trade.cancel(now_ms).is_err() {
            return Vec::new();
        }
        let terms = *entry.trade.terms();
        if inner.book.withdraw(&terms.offer_id).is_some() {
            inner.signed.remove(&terms.offer_id);
        }
        self.give_back(&mut inner, terms.bid_id, terms.bytes, now_ms)
    }

    /// The signed form of every live resting order and every cancellation remembered, to
    /// push to a peer that has connected: it may have missed a cancellation's flood and would
    /// otherwise still match the order.
    pub fn live_orders(&self, now_ms: u64) -> Vec<OrderMessage> {
        let inner = self.inner(now_ms);
        let cancels = inner.cancels.values().copied().map(OrderMessage::Cancel);
        inner.signed.values().copied().chain(cancels).collect()
    }

    /// The resting order `id`, if any.
    pub fn resting(&self, id: &OrderId, now_ms: u64) -> Option<RestingOrder> {
        self.inner(now_ms).book.get(id).copied()
    }

    /// This node's own order `id`, if kept.
    pub fn own(&self, id: &OrderId, now_ms: u64) -> Option<OwnOrder> {
        self.inner(now_ms).mine.get(id).copied()
    }

    /// This node's own order `id` as a view lists it.
    pub fn own_view(&self, id: &OrderId, now_ms: u64) -> Option<OrderView> {
        let inner = self.inner(now_ms);
        inner.mine.get(id).map(|own| own_view(*id, own, self.me))
    }

    /// Every trade kept, deadlines applied, oldest first.
    pub fn trades(&self, now_ms: u64) -> Vec<TradeEntry> {
        let mut inner = self.inner(now_ms);
        inner
            .trades
            .iter_mut()
            .map(|t| {
                t.trade.tick(now_ms);
                t.clone()
            })
            .collect()
    }

    /// Every live resting order of `side`, best first (offers cheapest, bids highest, then
    /// earliest).
    pub fn orders(&self, side: Side, now_ms: u64) -> Vec<OrderView> {
        let inner = self.inner(now_ms);
        let view = |order: &RestingOrder| OrderView {
            id: order.id,
            side: order.side,
            owner: order.owner,
            bytes: order.bytes,
            remaining: order.remaining,
            price_per_gib: order.price_per_gib,
            max_rate: match inner.signed.get(&order.id) {
                Some(OrderMessage::Offer(offer)) => Some(offer.terms.max_rate),
                _ => None,
            },
            content: order.content,
            expires_ms: order.expires_ms,
            mine: order.owner == self.me,
            cancelled: false,
        };
        match side {
            Side::Offer => inner
                .book
                .offers()
                .filter(|o| o.is_live(now_ms))
                .map(view)
                .collect(),
            Side::Bid => inner
                .book
                .bids()
                .filter(|o| o.is_live(now_ms))
                .map(view)
                .collect(),
        }
    }

    /// The book's best orders, this node's orders and its trades.
    pub fn view(&self, now_ms: u64) -> MarketView {
        let trades = self.trades(now_ms);
        let inner = self.inner(now_ms);
        let resting = |order: &RestingOrder| {
            let max_rate = match inner.signed.get(&order.id) {
                Some(OrderMessage::Offer(offer)) => Some(offer.terms.max_rate),
                _ => None,
            };
            OrderView {
                id: order.id,
                side: order.side,
                owner: order.owner,
                bytes: order.bytes,
                remaining: order.remaining,
                price_per_gib: order.price_per_gib,
                max_rate,
                content: order.content,
                expires_ms: order.expires_ms,
                mine: order.owner == self.me,
                cancelled: false,
            }
        };
        let offers: Vec<OrderView> = inner
            .book
            .offers()
            .filter(|o| o.is_live(now_ms))
            .take(VIEW_DEPTH)
            .map(resting)
            .collect();
        let bids: Vec<OrderView> = inner
            .book
            .bids()
            .filter(|o| o.is_live(now_ms))
            .take(VIEW_DEPTH)
            .map(resting)
            .collect();
        let offers_total = inner.book.offers().count();
        let bids_total = inner.book.bids().count();
        let mut mine: Vec<OrderView> = inner
            .mine
            .iter()
            .map(|(id, own)| own_view(*id, own, self.me))
            .collect();
        mine.sort_by_key(|o| (o.expires_ms, o.id));
        MarketView {
            offers,
            bids,
            offers_total,
            bids_total,
            mine,
            trades,
        }
    }
}

fn own_view(id: OrderId, own: &OwnOrder, me: PeerId) -> OrderView {
    let (side, price_per_gib, max_rate, content) = match own.message {
        OrderMessage::Offer(offer) => (
            Side::Offer,
            offer.terms.price_per_gib,
            Some(offer.terms.max_rate),
            None,
        ),
        OrderMessage::Bid(bid) => (
            Side::Bid,
            bid.terms.max_price_per_gib,
            None,
            bid.terms.content,
        ),
        OrderMessage::Cancel(_) => (Side::Offer, 0, None, None),
    };
    OrderView {
        id,
        side,
        owner: me,
        bytes: own.bytes(),
        remaining: if own.cancelled { 0 } else { own.left() },
        price_per_gib,
        max_rate,
        content,
        expires_ms: own.expires_ms(),
        mine: true,
        cancelled: own.cancelled,
    }
}

impl Inner {
    /// `message` (order `id`) as this book has it now: its bytes left resting, 0 if filled
    /// or withdrawn.
    fn touched_view(&self, id: OrderId, message: OrderMessage, me: PeerId) -> OrderView {
        let owner = match message {
            OrderMessage::Offer(offer) => offer.seller,
            OrderMessage::Bid(bid) => bid.buyer,
            OrderMessage::Cancel(cancel) => cancel.owner,
        };
        let own = OwnOrder {
            message,
            committed: 0,
            cancelled: false,
        };
        OrderView {
            owner,
            remaining: self.book.get(&id).map_or(0, |order| order.remaining),
            mine: owner == me,
            ..own_view(id, &own, me)
        }
    }

    /// Drops expired orders from the book, the signed forms, own orders and cancellations.
    fn expire(&mut self, now_ms: u64) {
        for dropped in self.book.expire(now_ms) {
            self.signed.remove(&dropped.id);
        }
        self.mine.retain(|_, own| own.expires_ms() > now_ms);
        let horizon = tally_market::order::MAX_ORDER_TTL_MS + MAX_CLOCK_SKEW_MS;
        self.cancels
            .retain(|_, c| c.issued_ms.saturating_add(horizon) > now_ms);
    }

    fn cancel(&mut self, verified: &tally_market::VerifiedCancel) -> Result<Learned, LearnError> {
        let cancel = *verified.cancel();
        if self.cancels.contains_key(&cancel.order_id) {
            return Ok(Learned::default());
        }
        match self.book.cancel(verified) {
            Ok(_) | Err(BookError::UnknownOrder(_)) => {}
            Err(other) => return Err(LearnError::Refused(other)),
        }
        self.signed.remove(&cancel.order_id);
        self.remember_cancel(cancel);
        Ok(Learned {
            new: true,
            proposals: Vec::new(),
            orders: Vec::new(),
        })
    }

    fn remember_cancel(&mut self, cancel: Cancel) {
        if self.cancels.len() >= MAX_CANCELS_REMEMBERED
            && let Some(oldest) = self
                .cancels
                .values()
                .min_by_key(|c| c.issued_ms)
                .map(|c| c.order_id)
        {
            self.cancels.remove(&oldest);
        }
        self.cancels.insert(cancel.order_id, cancel);
    }

    fn keep_trade(&mut self, entry: TradeEntry) {
        if self.trades.len() >= MAX_TRADES {
            let ended = self.trades.iter().position(|t| t.trade.state().is_final());
            match ended {
                Some(index) => {
                    self.trades.remove(index);
                }
                None => {
                    self.trades.pop_front();
                }
            }
        }
        self.trades.push_back(entry);
    }
}

// ---- the node's side: flooding, pushing the book, the trade handshake ----

/// What a node did with a [`Request::Orders`]: the answer, and the penalty for the sender.
pub fn answer_orders(
    shared: &Arc<Shared>,
    from: PeerId,
    messages: Vec<OrderMessage>,
    penalty: &mut Option<(u32, String)>,
) -> Response {
    if messages.len() > MAX_ORDERS_PER_MESSAGE {
        *penalty = Some((
            PENALTY_BAD_ORDER,
            format!(
                "sent {} orders in one message (at most {MAX_ORDERS_PER_MESSAGE})",
                messages.len()
            ),
        ));
        return Response::refused(
            RefusalCode::Invalid,
            format!("at most {MAX_ORDERS_PER_MESSAGE} orders per message"),
        );
    }
    let now = now_ms();
    let mut relay = Vec::new();
    let mut invalid = None;
    for message in messages {
        match shared.market.learn(message, now) {
            Ok(learned) => {
                if learned.new {
                    relay.push(message);
                }
                crate::daemon::events::market_changed(shared, &learned);
                start_proposals(shared, learned.proposals);
            }
            Err(LearnError::Invalid(error)) => {
                invalid.get_or_insert(error);
            }
            Err(LearnError::Expired) => {}
            Err(LearnError::Refused(error)) => {
                tracing::debug!("an order was not taken: {error}");
            }
        }
    }
    spread(shared, relay, Some(from));
    match invalid {
        None => Response::Received,
        Some(error) => {
            *penalty = Some((
                PENALTY_BAD_ORDER,
                format!("pushed an order that does not verify: {error}"),
            ));
            Response::refused(
                RefusalCode::Invalid,
                format!("an order does not verify: {error}"),
            )
        }
    }
}

/// The seller's answer to a [`Request::Trade`] from `from`.
pub async fn answer_trade(
    shared: &Arc<Shared>,
    from: PeerId,
    proposal: TradeProposal,
    penalty: &mut Option<(u32, String)>,
) -> Response {
    match shared.market.answer_proposal(proposal, from, now_ms()) {
        Ok(agreement) => {
            // Durable before the signature leaves, so a restart cannot forget a trade the
            // buyer holds (it would then price the trade's bytes at par and refuse the
            // buyer's receipts as too few credits).
            if let Err(error) = keep_agreement(shared, agreement).await {
                tracing::warn!("cannot record a trade agreement: {error:#}");
                return Response::refused(
                    RefusalCode::Unavailable,
                    "this node cannot record the agreement now; try again later",
                );
            }
            crate::daemon::events::trades_changed(shared);
            tracing::info!(
                buyer = %from.fmt_short(),
                bytes = agreement.terms.bytes,
                price_per_gib = agreement.terms.price_per_gib,
                "trade agreed"
            );
            Response::Agreement(agreement)
        }
        Err(ProposalError::Invalid(why)) => {
            *penalty = Some((PENALTY_BAD_ORDER, format!("bad trade proposal: {why}")));
            Response::refused(RefusalCode::Invalid, why)
        }
        Err(error @ ProposalError::NotLive(_)) => {
            Response::refused(RefusalCode::NotFound, error.to_string())
        }
        Err(error @ ProposalError::NotEnough { .. }) => {
            Response::refused(RefusalCode::Unavailable, error.to_string())
        }
        Err(error @ ProposalError::Terms(_)) => {
            Response::refused(RefusalCode::Invalid, error.to_string())
        }
    }
}

/// Sends `messages` (in batches of [`MAX_ORDERS_PER_MESSAGE`]) to every connected peer but
/// `except`, each peer in a task of its own.
pub fn spread(shared: &Arc<Shared>, messages: Vec<OrderMessage>, except: Option<PeerId>) {
    if messages.is_empty() {
        return;
    }
    for peer in shared.peers.connected() {
        if Some(peer) == except {
            continue;
        }
        if let Some(conn) = shared.peers.connection(&peer) {
            send_orders(shared, conn, messages.clone());
        }
    }
}

/// Pushes the live orders of this node's book to a peer that has just connected.
pub fn push_book(shared: &Arc<Shared>, conn: &Connection) {
    let orders = shared.market.live_orders(now_ms());
    if !orders.is_empty() {
        send_orders(shared, conn.clone(), orders);
    }
}

fn send_orders(shared: &Arc<Shared>, conn: Connection, messages: Vec<OrderMessage>) {
    let task = async move {
        for batch in messages.chunks(MAX_ORDERS_PER_MESSAGE) {
            let request = Request::Orders(batch.to_vec());
            let sent = tokio::time::timeout(REQUEST_TIMEOUT, peers::request(&conn, &request)).await;
            match sent {
                Ok(Ok(Response::Received)) => {}
                Ok(Ok(other)) => {
                    tracing::debug!(?other, "a peer did not take orders");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::debug!("cannot push orders: {error:#}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("pushing orders timed out");
                    return;
                }
            }
        }
    };
    shared.tasks.spawn(task);
}

/// Sends each proposal to its seller, dialing the seller if not connected, in a task each.
pub fn start_proposals(shared: &Arc<Shared>, proposals: Vec<([u8; 32], TradeProposal)>) {
    for (id, proposal) in proposals {
        let shared2 = Arc::clone(shared);
        let task = async move {
            let shared = shared2;
            let seller = proposal.terms.seller;
            let asked = async {
                let conn = connection_to(&shared, seller).await?;
                peers::request(&conn, &Request::Trade(proposal)).await
            };
            let why = match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
                Ok(Ok(Response::Agreement(agreement))) => {
                    match shared.market.agreed(id, agreement, now_ms()) {
                        Ok(()) => {
                            if let Err(error) = keep_agreement(&shared, agreement).await {
                                tracing::warn!(
                                    "cannot record a trade agreement; a restart forgets it: {error:#}"
                                );
                            }
                            tracing::info!(
                                seller = %seller.fmt_short(),
                                bytes = agreement.terms.bytes,
                                "trade agreed"
                            );
                            return;
                        }
                        Err(why) => format!("the seller's agreement was refused: {why}"),
                    }
                }
                Ok(Ok(Response::Refused { message, .. })) => format!("refused: {message}"),
                Ok(Ok(other)) => format!("the seller answered {other:?}"),
                Ok(Err(error)) => format!("cannot reach the seller: {error:#}"),
                Err(_) => "the seller did not answer in time".to_owned(),
            };
            tracing::info!(seller = %seller.fmt_short(), "no trade: {why}; matching the bid again");
            let again = shared.market.failed(id, why, now_ms());
            start_proposals(&shared, again);
            crate::daemon::events::trades_changed(&shared);
        };
        shared.tasks.spawn(task);
    }
}

/// Stores `agreement` (keyed by its trade id) and flushes.
async fn keep_agreement(shared: &Arc<Shared>, agreement: Agreement) -> anyhow::Result<()> {
    let id = trade_id(&agreement.terms, &shared.network);
    let encoded = postcard::to_allocvec(&agreement)?;
    let store = Arc::clone(&shared.store);
    tokio::task::spawn_blocking(move || {
        store.put_agreement(&id, &encoded)?;
        store.flush()
    })
    .await??;
    Ok(())
}

/// Drops the stored agreements of trades that are over.
async fn forget_agreements(shared: &Arc<Shared>, ids: Vec<[u8; 32]>) {
    if ids.is_empty() {
        return;
    }
    let store = Arc::clone(&shared.store);
    let forgotten = tokio::task::spawn_blocking(move || {
        ids.iter().try_for_each(|id| store.remove_agreement(id))
    })
    .await;
    if !matches!(forgotten, Ok(Ok(()))) {
        tracing::warn!("cannot drop the agreements of trades that are over: {forgotten:?}");
    }
}

/// Takes back the trades agreed before this start from the store (see [`Market::restore`]),
/// and forgets those that are over. Agreements that do not decode are dropped with a warning.
pub async fn restore_trades(shared: &Arc<Shared>) -> anyhow::Result<usize> {
    let store = Arc::clone(&shared.store);
    let kept = tokio::task::spawn_blocking(move || store.agreements()).await??;
    let mut agreements = Vec::new();
    let mut over = Vec::new();
    for (id, encoded) in kept {
        match postcard::from_bytes::<Agreement>(&encoded) {
            Ok(agreement) => agreements.push(agreement),
            Err(error) => {
                tracing::warn!(trade = %hex_short(&id), "dropping a stored agreement that does not decode: {error}");
                over.push(id);
            }
        }
    }
    let total = agreements.len();
    over.extend(shared.market.restore(agreements, now_ms()));
    let restored = total.saturating_sub(over.len());
    forget_agreements(shared, over).await;
    Ok(restored)
}

/// How often trades' deadlines and silence are checked.
pub const TICK: Duration = Duration::from_secs(1);

/// Starts the task that applies trades' deadlines and silence every [`TICK`]: it reports the
/// trades that end, and proposes the trades a bid's freed bytes make.
pub fn start(shared: &Arc<Shared>) {
    let shared2 = Arc::clone(shared);
    shared.tasks.spawn(async move {
        let shared = shared2;
        loop {
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let ticked = shared.market.tick(now_ms());
            for entry in &ticked.ended {
                report_end(entry);
            }
            forget_agreements(&shared, ticked.ended.iter().map(|e| e.id).collect()).await;
            start_proposals(&shared, ticked.proposals);
        }
    });
}

/// Logs how a trade ended; a party in default is a warning, since it broke an agreement.
fn report_end(entry: &TradeEntry) {
    let terms = entry.trade.terms();
    let (counterparty, role) = match entry.role {
        Party::Seller => (terms.buyer, "seller"),
        Party::Buyer => (terms.seller, "buyer"),
    };
    let state = state_name(entry.trade.state());
    let delivered = entry.trade.delivered_bytes();
    let owed = entry.trade.owed();
    match entry.trade.state() {
        TradeState::Defaulted(_) => tracing::warn!(
            trade = %hex_short(&entry.id),
            counterparty = %counterparty.fmt_short(),
            role,
            delivered,
            of = terms.bytes,
            owed,
            "trade ended: {state}"
        ),
        _ => tracing::info!(
            trade = %hex_short(&entry.id),
            counterparty = %counterparty.fmt_short(),
            role,
            delivered,
            of = terms.bytes,
            "trade ended: {state}"
        ),
    }
}

fn hex_short(id: &[u8; 32]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The live connection to `peer`, or a new one dialed at an address gossip's peer records give.
async fn connection_to(shared: &Arc<Shared>, peer: PeerId) -> anyhow::Result<Connection> {
    if let Some(conn) = shared.peers.connection(&peer) {
        return Ok(conn);
    }
    if shared.peers.is_banned(&peer) {
        anyhow::bail!("{} is banned", peer.fmt_short());
    }
    let addrs = shared.gossip.peer_addrs(&peer).ok_or_else(|| {
        anyhow::anyhow!(
            "not connected to {} and gossip knows no address of it",
            peer.fmt_short()
        )
    })?;
    let mut last = anyhow::anyhow!("its peer record lists no address");
    for addr in addrs {
        let target = PeerAddr {
            peer_id: peer,
            addr: addr.to_string(),
        };
        match peers::dial(shared, &target).await {
            Ok(conn) => {
                let driven = conn.clone();
                shared.tasks.spawn(peers::drive(
                    Arc::clone(shared),
                    driven,
                    Direction::Outbound,
                ));
                return Ok(conn);
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Signs, learns and floods this node's order; proposes the trades it makes.
pub fn post(shared: &Arc<Shared>, message: OrderMessage) -> Result<OrderId, LearnError> {
    let (id, learned) = shared.market.post(message, now_ms())?;
    crate::daemon::events::market_changed(shared, &learned);
    spread(shared, vec![message], None);
    start_proposals(shared, learned.proposals);
    Ok(id)
}

/// Cancels this node's order `id` and floods the cancellation.
pub fn cancel(shared: &Arc<Shared>, id: OrderId) -> Result<Cancel, CancelError> {
    let cancel = shared.market.cancel_mine(id, now_ms())?;
    crate::daemon::events::order_cancelled(shared, id);
    spread(shared, vec![OrderMessage::Cancel(cancel)], None);
    Ok(cancel)
}

/// A state's name as the API and the command line show it.
pub fn state_name(state: TradeState) -> &'static str {
    match state {
        TradeState::Proposed => "proposed",
        TradeState::Agreed => "agreed",
        TradeState::Delivering => "delivering",
        TradeState::Settled => "settled",
        TradeState::Cancelled => "cancelled",
        TradeState::Expired => "expired",
        TradeState::Defaulted(Party::Seller) => "seller_defaulted",
        TradeState::Defaulted(Party::Buyer) => "buyer_defaulted",
    }
}

#[cfg(test)]
mod tests;
