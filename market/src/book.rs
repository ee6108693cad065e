//! The order book: verified offers (asks) and bids resting until they are filled, cancelled or
//! expire, and the matching of each incoming order against them. Owns price-time priority,
//! partial fills, the caps that bound the book, and the replay guard.
//!
//! **Matching.** An incoming bid crosses a resting offer when `bid.max_price_per_gib ≥
//! offer.price_per_gib` (an incoming offer crosses a resting bid alike). It takes the best
//! resting orders first: the best price (lowest offer, highest bid), then the earliest
//! *arrival in this book*, never the order's own `issued_ms`, so a peer cannot jump the queue by
//! backdating. Each fill is for as many bytes as both sides still have, so orders fill
//! partially; what is left of the incoming order rests. **The price of a fill is the resting
//! order's price**: the order that waited set the price, and the incoming one gets at least the
//! price it asked for (a bid pays at most its maximum, an offer earns at least its price). A
//! bid's content id plays no part in matching: it matters for delivery.
//!
//! **Time.** Every call takes `now_ms`; an order is live while `now_ms < expires_ms`. Matching
//! checks each resting order's expiry as it meets it and drops an expired one instead of
//! filling it; [`OrderBook::expire`] drops them all. Cancelled and filled orders leave the book at
//! once. The clock should not go backwards; if it does, nothing panics, but an expired order not
//! yet dropped could be matched again.
//!
//! **Bounds.** At most [`BookConfig::max_orders`] resting orders (default
//! [`DEFAULT_MAX_ORDERS`]) and [`BookConfig::max_per_owner`] per owner (default
//! [`DEFAULT_MAX_PER_OWNER`]). A full book refuses the incoming order with a typed error, after
//! first dropping expired orders to make room; it never evicts a live order, because evicting by
//! any rule (say, the soonest to expire) would let whoever posts the longest-lived orders push
//! everyone else's out. The caps bound resting orders only: an order that fills completely on
//! arrival is taken even by a full book, or from an owner at its cap. They are checked before
//! matching, so a refusal changes nothing but the dropping of expired orders.
//!
//! **Self-trade.** An order that would cross a live resting order of its own owner is refused
//! ([`BookError::SelfCross`]): a peer cannot trade with itself (its receipts would be refused
//! too), and skipping its own orders instead would leave the book crossed.
//!
//! **Replays.** Gossip delivers the same order many times. The book remembers the ids of the
//! orders it filled or cancelled until they expire (at most [`BookConfig::max_remembered`] of
//! them; beyond that it forgets those that expire soonest), and refuses them as duplicates, so a
//! filled offer is not matched twice. The guard is bounded, so it is best effort: what binds is
//! the trade agreement, which the owner signs only for bytes its order still has. A
//! cancellation that arrives before its order is refused as unknown: the node should hold it and
//! retry.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use tally_ledger::PeerId;

use crate::order::{OrderId, VerifiedBid, VerifiedCancel, VerifiedOffer};

/// Default most resting orders in a book: the size the matching bench holds. Each resting order
/// costs a few hundred bytes across the indexes, so a full book is tens of MB.
pub const DEFAULT_MAX_ORDERS: usize = 100_000;
/// Default most resting orders of one owner, offers and bids together.
pub const DEFAULT_MAX_PER_OWNER: usize = 100;
/// Default most filled or cancelled ids remembered (about 100 bytes each).
pub const DEFAULT_MAX_REMEMBERED: usize = 2 * DEFAULT_MAX_ORDERS;

/// A book's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookConfig {
    /// Most resting orders.
    pub max_orders: usize,
    /// Most resting orders of one owner.
    pub max_per_owner: usize,
    /// Most ids of filled or cancelled, unexpired orders remembered to refuse their replays.
    pub max_remembered: usize,
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            max_orders: DEFAULT_MAX_ORDERS,
            max_per_owner: DEFAULT_MAX_PER_OWNER,
            max_remembered: DEFAULT_MAX_REMEMBERED,
        }
    }
}

/// Which side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// An offer to sell upload (an ask).
    Offer,
    /// A bid to buy it.
    Bid,
}

/// A verified offer or bid, as the book takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifiedOrder {
    /// An offer.
    Offer(VerifiedOffer),
    /// A bid.
    Bid(VerifiedBid),
}

impl From<VerifiedOffer> for VerifiedOrder {
    fn from(offer: VerifiedOffer) -> Self {
        Self::Offer(offer)
    }
}

impl From<VerifiedBid> for VerifiedOrder {
    fn from(bid: VerifiedBid) -> Self {
        Self::Bid(bid)
    }
}

impl VerifiedOrder {
    /// The order's id.
    pub fn id(&self) -> OrderId {
        match self {
            Self::Offer(offer) => offer.id(),
            Self::Bid(bid) => bid.id(),
        }
    }

    fn to_resting(self, arrival: u64) -> RestingOrder {
        match self {
            Self::Offer(verified) => {
                let offer = verified.offer();
                RestingOrder {
                    id: verified.id(),
                    side: Side::Offer,
                    owner: offer.seller,
                    price_per_gib: offer.terms.price_per_gib,
                    bytes: offer.terms.bytes,
                    remaining: offer.terms.bytes,
                    expires_ms: offer.terms.expires_ms,
                    arrival,
                    content: None,
                }
            }
            Self::Bid(verified) => {
                let bid = verified.bid();
                RestingOrder {
                    id: verified.id(),
                    side: Side::Bid,
                    owner: bid.buyer,
                    price_per_gib: bid.terms.max_price_per_gib,
                    bytes: bid.terms.bytes,
                    remaining: bid.terms.bytes,
                    expires_ms: bid.terms.expires_ms,
                    arrival,
                    content: bid.terms.content,
                }
            }
        }
    }
}

/// An order as the book holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestingOrder {
    /// Its id.
    pub id: OrderId,
    /// Offer or bid.
    pub side: Side,
    /// The seller of an offer, the buyer of a bid.
    pub owner: PeerId,
    /// An offer's price, a bid's maximum price: credits per GiB.
    pub price_per_gib: u64,
    /// Bytes when it arrived.
    pub bytes: u64,
    /// Bytes not yet filled.
    pub remaining: u64,
    /// When it expires, Unix ms.
    pub expires_ms: u64,
    /// Its arrival number in this book: the time in price-time priority.
    pub arrival: u64,
    /// A bid's content id.
    pub content: Option<[u8; 32]>,
}

impl RestingOrder {
    /// Whether it is live at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// A match of an offer and a bid: the seller owes the buyer `bytes` at `price_per_gib`, once
/// both sign the trade (see [`crate::trade::TradeTerms::from_fill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fill {
    /// The offer filled.
    pub offer_id: OrderId,
    /// The bid filled.
    pub bid_id: OrderId,
    /// The offer's owner.
    pub seller: PeerId,
    /// The bid's owner.
    pub buyer: PeerId,
    /// Bytes matched; at least 1.
    pub bytes: u64,
    /// The resting order's price, credits per GiB.
    pub price_per_gib: u64,
    /// The bid's content id, for delivery.
    pub content: Option<[u8; 32]>,
}

impl Fill {
    fn between(taker: &RestingOrder, maker: &RestingOrder, bytes: u64) -> Self {
        let (offer, bid) = match taker.side {
            Side::Offer => (taker, maker),
            Side::Bid => (maker, taker),
        };
        Self {
            offer_id: offer.id,
            bid_id: bid.id,
            seller: offer.owner,
            buyer: bid.owner,
            bytes,
            price_per_gib: maker.price_per_gib,
            content: bid.content,
        }
    }
}

/// What inserting an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The order's id.
    pub id: OrderId,
    /// The fills it made, best first.
    pub fills: Vec<Fill>,
    /// Its bytes left resting on the book; 0 if it filled completely.
    pub resting: u64,
}

/// Why the book refused an order or a cancellation. A refusal leaves the live orders as they
/// were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// The order is resting, or was filled or cancelled: a replay.
    #[error("order {0} is already in the book, or was filled or cancelled")]
    Duplicate(OrderId),
    /// The order expired before it arrived.
    #[error("order {id} expired at {expires_ms} (now {now_ms})")]
    Expired {
        /// The order.
        id: OrderId,
        /// When it expired, Unix ms.
        expires_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// The order would cross a live order of the same owner.
    #[error("the order would trade with its owner's own order {own}")]
    SelfCross {
        /// The owner's resting order it would cross.
        own: OrderId,
    },
    /// The owner has as many resting orders as allowed.
    #[error("{owner} already has {cap} resting orders, the most allowed")]
    OwnerFull {
        /// The owner.
        owner: PeerId,
        /// The cap.
        cap: usize,
    },
    /// The book holds as many live orders as allowed.
    #[error("the book is full ({cap} orders)")]
    Full {
        /// The cap.
        cap: usize,
    },
    /// No resting order has this id (it may have filled, expired, or not arrived yet).
    #[error("no resting order {0}")]
    UnknownOrder(OrderId),
    /// The cancellation is signed by someone other than the order's owner.
    #[error("{signer} cannot cancel order {id}: it is not theirs")]
    NotOwner {
        /// The order.
        id: OrderId,
        /// Who signed the cancellation.
        signer: PeerId,
    },
}

/// One owner's resting orders, keyed as in the book's queues.
#[derive(Debug, Default)]
struct OwnOrders {
    offers: BTreeSet<(u64, u64)>,
    bids: BTreeSet<(Reverse<u64>, u64)>,
}

impl OwnOrders {
    fn len(&self) -> usize {
        self.offers.len() + self.bids.len()
    }
}

/// Resting offers and bids with price-time matching. Pure: every call takes the time. See the
/// module docs for the rules.
#[derive(Debug)]
pub struct OrderBook {
    config: BookConfig,
    next_arrival: u64,
    /// Resting orders by arrival number.
    orders: HashMap<u64, RestingOrder>,
    by_id: HashMap<OrderId, u64>,
    /// `(price, arrival)`: the lowest price, then the earliest, first.
    offers: BTreeSet<(u64, u64)>,
    /// `(Reverse(price), arrival)`: the highest price, then the earliest, first.
    bids: BTreeSet<(Reverse<u64>, u64)>,
    /// `(expires_ms, arrival)`.
    expiry: BTreeSet<(u64, u64)>,
    owners: HashMap<PeerId, OwnOrders>,
    /// Ids of filled or cancelled orders, with their expiry: the replay guard.
    done: HashMap<OrderId, u64>,
    done_expiry: BTreeSet<(u64, OrderId)>,
}

impl Default for OrderBook {
    fn default() -> Self {
        Self::new(BookConfig::default())
    }
}

impl OrderBook {
    /// An empty book with these bounds.
    pub fn new(config: BookConfig) -> Self {
        Self {
            config,
            next_arrival: 0,
            orders: HashMap::new(),
            by_id: HashMap::new(),
            offers: BTreeSet::new(),
            bids: BTreeSet::new(),
            expiry: BTreeSet::new(),
            owners: HashMap::new(),
            done: HashMap::new(),
            done_expiry: BTreeSet::new(),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &BookConfig {
        &self.config
    }

    /// Resting orders, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Whether no order rests.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Resting orders of `owner`.
    pub fn owner_len(&self, owner: &PeerId) -> usize {
        self.owners.get(owner).map_or(0, OwnOrders::len)
    }

    /// The resting order `id`.
    pub fn get(&self, id: &OrderId) -> Option<&RestingOrder> {
        self.by_id.get(id).and_then(|a| self.orders.get(a))
    }

    /// Resting offers in priority order (lowest price, then earliest arrival), expired ones not
    /// yet dropped included.
    pub fn offers(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.offers.iter().filter_map(|(_, a)| self.orders.get(a))
    }

    /// Resting bids in priority order (highest price, then earliest arrival), expired ones not
    /// yet dropped included.
    pub fn bids(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.bids.iter().filter_map(|(_, a)| self.orders.get(a))
    }

    /// The live offer an incoming bid would meet first at `now_ms`.
    pub fn best_offer(&self, now_ms: u64) -> Option<&RestingOrder> {
        self.offers().find(|o| o.is_live(now_ms))
    }

    /// The live bid an incoming offer would meet first at `now_ms`.
    pub fn best_bid(&self, now_ms: u64) -> Option<&RestingOrder> {
        self.bids().find(|o| o.is_live(now_ms))
    }

    /// Matches `order` against the book at `now_ms` and rests what is left of it. Refused, with
    /// nothing changed but expired orders dropped, if it is a replay, has expired, would cross
    /// its owner's own live order, or would have to rest while a cap is reached.
    pub fn insert(
        &mut self,
        order: impl Into<VerifiedOrder>,
        now_ms: u64,
    ) -> Result<Placed, BookError> {
        let taker = order.into().to_resting(self.next_arrival);
        let id = taker.id;
        if self.by_id.contains_key(&id) || self.done.contains_key(&id) {
            return Err(BookError::Duplicate(id));
        }
        self.place(taker, now_ms)
    }

    /// Puts `bytes` of `order` back in play after a trade on them fell through (its other
    /// party refused or could not be reached): adds them to what of the order still rests, at
    /// most up to its original bytes, matches it against the book again and rests what is
    /// left. The order takes a new arrival, so it loses its place in time among equal prices.
    /// Refused, with the book as it was, as [`OrderBook::insert`] refuses an order.
    pub fn reopen(
        &mut self,
        order: impl Into<VerifiedOrder>,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Placed, BookError> {
        let mut taker = order.into().to_resting(self.next_arrival);
        let id = taker.id;
        let resting = self.get(&id).map_or(0, |o| o.remaining);
        taker.remaining = resting.saturating_add(bytes).min(taker.bytes);
        if taker.remaining == 0 {
            return Ok(Placed {
                id,
                fills: Vec::new(),
                resting: 0,
            });
        }
        // Out of the book while it is placed again, back as it was if that is refused.
        let previous = self.by_id.get(&id).copied().and_then(|a| self.remove(a));
        let was_done = self.done.remove(&id);
        let placed = self.place(taker, now_ms);
        if placed.is_err() {
            if let Some(expires_ms) = was_done {
                self.done.insert(id, expires_ms);
            }
            if let Some(order) = previous {
                self.rest(order);
            }
        }
        placed
    }

    /// Takes the order `id` out of this book without a signed cancellation, when this node
    /// learned from its owner that it no longer stands (the owner refused a trade on it).
    /// Only this book changes; other nodes' books keep it until they learn the same.
    pub fn withdraw(&mut self, id: &OrderId) -> Option<RestingOrder> {
        let arrival = *self.by_id.get(id)?;
        let removed = self.remove(arrival)?;
        self.remember_done(removed.id, removed.expires_ms);
        Some(removed)
    }

    /// Matches `taker` (not in the book) at `now_ms` and rests what is left: the checks and
    /// steps [`OrderBook::insert`] and [`OrderBook::reopen`] share.
    fn place(&mut self, mut taker: RestingOrder, now_ms: u64) -> Result<Placed, BookError> {
        let id = taker.id;
        if !taker.is_live(now_ms) {
            return Err(BookError::Expired {
                id,
                expires_ms: taker.expires_ms,
                now_ms,
            });
        }
        if let Some(own) = self.own_crossing(&taker, now_ms) {
            return Err(BookError::SelfCross { own });
        }
        let cap = self.config.max_per_owner;
        let owner_full = |book: &Self| book.owner_len(&taker.owner) >= cap;
        let full = |book: &Self| book.orders.len() >= book.config.max_orders;
        if (owner_full(self) || full(self)) && !self.fills_completely(&taker, now_ms) {
            self.expire(now_ms);
            if owner_full(self) {
                return Err(BookError::OwnerFull {
                    owner: taker.owner,
                    cap,
                });
            }
            if full(self) {
                return Err(BookError::Full {
                    cap: self.config.max_orders,
                });
            }
        }

        let mut fills = Vec::new();
        self.match_against_book(&mut taker, now_ms, &mut fills);
        if taker.remaining == 0 {
            self.remember_done(id, taker.expires_ms);
        } else {
            self.rest(taker);
        }
        Ok(Placed {
            id,
            fills,
            resting: taker.remaining,
        })
    }

    /// Withdraws the order a verified cancellation names, if its signer owns it. Returns the
    /// order as it was, with its unfilled bytes.
    pub fn cancel(&mut self, cancel: &VerifiedCancel) -> Result<RestingOrder, BookError> {
        let cancel = cancel.cancel();
        let id = cancel.order_id;
        let order = self.get(&id).ok_or(BookError::UnknownOrder(id))?;
        if order.owner != cancel.owner {
            return Err(BookError::NotOwner {
                id,
                signer: cancel.owner,
            });
        }
        let arrival = order.arrival;
        let removed = self.remove(arrival).ok_or(BookError::UnknownOrder(id))?;
        self.remember_done(id, removed.expires_ms);
        Ok(removed)
    }

    /// Drops every order expired at `now_ms` (and forgets the filled or cancelled ids that
    /// expired, which would be refused as expired anyway). Returns the dropped orders, soonest
    /// expired first.
    pub fn expire(&mut self, now_ms: u64) -> Vec<RestingOrder> {
        let mut dropped = Vec::new();
        while let Some(&(expires_ms, arrival)) = self.expiry.first()
            && expires_ms <= now_ms
        {
            match self.remove(arrival) {
                Some(order) => dropped.push(order),
                None => {
                    self.expiry.pop_first();
                }
            }
        }
        while let Some(&(expires_ms, id)) = self.done_expiry.first()
            && expires_ms <= now_ms
        {
            self.done_expiry.pop_first();
            self.done.remove(&id);
        }
        dropped
    }

    /// The first live resting order of the taker's owner, on the other side, that the taker
    /// would cross.
    fn own_crossing(&self, taker: &RestingOrder, now_ms: u64) -> Option<OrderId> {
        let own = self.owners.get(&taker.owner)?;
        let limit = taker.price_per_gib;
        let live = |arrival: &u64| {
            self.orders
                .get(arrival)
                .filter(|o| o.is_live(now_ms))
                .map(|o| o.id)
        };
        match taker.side {
            Side::Bid => own
                .offers
                .iter()
                .take_while(|(price, _)| *price <= limit)
                .find_map(|(_, a)| live(a)),
            Side::Offer => own
                .bids
                .iter()
                .take_while(|(Reverse(price), _)| *price >= limit)
                .find_map(|(_, a)| live(a)),
        }
    }

    /// Whether `taker` would fill completely at `now_ms`, leaving nothing to rest.
    fn fills_completely(&self, taker: &RestingOrder, now_ms: u64) -> bool {
        let limit = taker.price_per_gib;
        let crossing = |o: &&RestingOrder| match taker.side {
            Side::Bid => o.price_per_gib <= limit,
            Side::Offer => o.price_per_gib >= limit,
        };
        let mut wanted = taker.remaining;
        let others: Box<dyn Iterator<Item = &RestingOrder>> = match taker.side {
            Side::Bid => Box::new(self.offers()),
            Side::Offer => Box::new(self.bids()),
        };
        for maker in others.take_while(crossing).filter(|o| o.is_live(now_ms)) {
            wanted = wanted.saturating_sub(maker.remaining);
            if wanted == 0 {
                return true;
            }
        }
        false
    }

    /// Fills `taker` against the best resting orders of the other side while they cross,
    /// dropping expired ones it meets.
    fn match_against_book(&mut self, taker: &mut RestingOrder, now_ms: u64, fills: &mut Vec<Fill>) {
        while taker.remaining > 0 {
            let head = match taker.side {
                Side::Bid => self.offers.first().map(|&(price, a)| (price, a)),
                Side::Offer => self.bids.first().map(|&(Reverse(price), a)| (price, a)),
            };
            let Some((price, arrival)) = head else { break };
            let crosses = match taker.side {
                Side::Bid => price <= taker.price_per_gib,
                Side::Offer => price >= taker.price_per_gib,
            };
            if !crosses {
                break;
            }
            let Some(maker) = self.orders.get_mut(&arrival) else {
                // The indexes always agree; should they not, drop the stray key and go on.
                match taker.side {
                    Side::Bid => self.offers.remove(&(price, arrival)),
                    Side::Offer => self.bids.remove(&(Reverse(price), arrival)),
                };
                continue;
            };
            if !maker.is_live(now_ms) {
                self.remove(arrival);
                continue;
            }
            let bytes = taker.remaining.min(maker.remaining);
            maker.remaining -= bytes;
            taker.remaining -= bytes;
            let maker = *maker;
            fills.push(Fill::between(taker, &maker, bytes));
            if maker.remaining == 0 {
                self.remove(arrival);
                self.remember_done(maker.id, maker.expires_ms);
            }
        }
    }

    fn rest(&mut self, order: RestingOrder) {
        let arrival = order.arrival;
        self.next_arrival += 1;
        let own = self.owners.entry(order.owner).or_default();
        match order.side {
            Side::Offer => {
                self.offers.insert((order.price_per_gib, arrival));
                own.offers.insert((order.price_per_gib, arrival));
            }
            Side::Bid => {
                self.bids.insert((Reverse(order.price_per_gib), arrival));
                own.bids.insert((Reverse(order.price_per_gib), arrival));
            }
        }
        self.expiry.insert((order.expires_ms, arrival));
        self.by_id.insert(order.id, arrival);
        self.orders.insert(arrival, order);
    }

    fn remove(&mut self, arrival: u64) -> Option<RestingOrder> {
        let order = self.orders.remove(&arrival)?;
        self.by_id.remove(&order.id);
        self.expiry.remove(&(order.expires_ms, arrival));
        let price = order.price_per_gib;
        match order.side {
            Side::Offer => self.offers.remove(&(price, arrival)),
            Side::Bid => self.bids.remove(&(Reverse(price), arrival)),
        };
        if let Some(own) = self.owners.get_mut(&order.owner) {
            match order.side {
                Side::Offer => own.offers.remove(&(price, arrival)),
                Side::Bid => own.bids.remove(&(Reverse(price), arrival)),
            };
            if own.len() == 0 {
                self.owners.remove(&order.owner);
            }
        }
        Some(order)
    }

    /// Remembers a filled or cancelled id until it expires, forgetting the soonest to expire
    /// beyond `max_remembered` of them.
    fn remember_done(&mut self, id: OrderId, expires_ms: u64) {
        if self.done.insert(id, expires_ms).is_none() {
            self.done_expiry.insert((expires_ms, id));
        }
        while self.done.len() > self.config.max_remembered {
            match self.done_expiry.pop_first() {
                Some((_, old)) => {
                    self.done.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
