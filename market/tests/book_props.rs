//! Properties of the order book under random sequences of inserts, replays, cancellations, clock
//! advances and expiries, on a passed clock:
//!
//! - the book is never crossed after an operation (best live bid < best live offer);
//! - amounts are conserved: for every order, bytes filled + bytes remaining = bytes at arrival,
//!   and the fills' bytes sum the same on the offer side and the bid side;
//! - price-time priority: each fill goes to the best live resting order with bytes left (best
//!   price, then earliest arrival), at the resting order's price, and matching stops at the first
//!   that does not cross;
//! - no fill ever touches an expired or cancelled order;
//! - refusals are exactly the documented ones (replay, self-cross, caps), and an order leaves the
//!   book only by filling, being cancelled by its owner, or expiring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::sample::Index;
use tally_ledger::{Identity, NetworkId, PeerId};
use tally_market::{
    Bid, BidTerms, BookConfig, BookError, Cancel, Offer, OfferTerms, OrderBook, OrderId,
    RestingOrder, Side, VerifiedOrder,
};

const NOW: u64 = 1_800_000_000_000;
const OWNERS: usize = 4;
/// Caps small enough that sequences hit them.
const TIGHT: BookConfig = BookConfig {
    max_orders: 12,
    max_per_owner: 5,
    max_remembered: 100_000,
};
/// Caps no sequence reaches, so every order matches and rests.
const ROOMY: BookConfig = BookConfig {
    max_orders: 1_000,
    max_per_owner: 1_000,
    max_remembered: 100_000,
};

#[derive(Debug, Clone)]
enum Op {
    Order {
        side: Side,
        owner: usize,
        bytes: u64,
        price: u64,
        ttl: u64,
        content: bool,
    },
    Replay(Index),
    Cancel {
        which: Index,
        by_owner: bool,
    },
    Advance(u64),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    let order = (
        prop_oneof![Just(Side::Offer), Just(Side::Bid)],
        0..OWNERS,
        1u64..300,
        1u64..8,
        1u64..150,
        any::<bool>(),
    )
        .prop_map(|(side, owner, bytes, price, ttl, content)| Op::Order {
            side,
            owner,
            bytes,
            price,
            ttl,
            content,
        });
    prop_oneof![
        10 => order,
        1 => any::<Index>().prop_map(Op::Replay),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(which, by_owner)| Op::Cancel { which, by_owner }),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Expire),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Resting,
    Filled,
    Cancelled,
    Expired,
}

/// The test's own record of an order the book accepted.
#[derive(Debug, Clone)]
struct Track {
    order: VerifiedOrder,
    side: Side,
    owner: PeerId,
    price: u64,
    bytes: u64,
    expires_ms: u64,
    filled: u64,
    state: State,
}

impl Track {
    fn live(&self, now: u64) -> bool {
        self.state == State::Resting && now < self.expires_ms
    }
}

/// Whether an order on `side` at `limit` crosses a resting order at `price`.
fn crosses(side: Side, limit: u64, price: u64) -> bool {
    match side {
        Side::Bid => price <= limit,
        Side::Offer => price >= limit,
    }
}

struct World {
    config: BookConfig,
    net: NetworkId,
    ids: Vec<Identity>,
    book: OrderBook,
    now: u64,
    nonce: u64,
    tracks: HashMap<OrderId, Track>,
    /// Accepted ids in arrival order, for picking.
    accepted: Vec<OrderId>,
    filled_offer_side: u64,
    filled_bid_side: u64,
}

impl World {
    fn new(config: BookConfig) -> Self {
        Self {
            config,
            net: NetworkId::from_name("tally-props"),
            ids: (0..OWNERS as u8)
                .map(|i| Identity::from_secret_bytes([i + 1; 32]))
                .collect(),
            book: OrderBook::new(config),
            now: NOW,
            nonce: 0,
            tracks: HashMap::new(),
            accepted: Vec::new(),
            filled_offer_side: 0,
            filled_bid_side: 0,
        }
    }

    fn sign(&mut self, op: &Op) -> VerifiedOrder {
        let Op::Order {
            side,
            owner,
            bytes,
            price,
            ttl,
            content,
        } = *op
        else {
            unreachable!()
        };
        self.nonce += 1;
        let who = &self.ids[owner];
        match side {
            Side::Offer => Offer::sign(
                who,
                &self.net,
                OfferTerms {
                    bytes,
                    max_rate: 1 << 20,
                    price_per_gib: price,
                    issued_ms: self.now,
                    expires_ms: self.now + ttl,
                    nonce: self.nonce,
                },
            )
            .verify(&self.net, self.now)
            .unwrap()
            .into(),
            Side::Bid => Bid::sign(
                who,
                &self.net,
                BidTerms {
                    bytes,
                    content: content.then_some([owner as u8; 32]),
                    max_price_per_gib: price,
                    issued_ms: self.now,
                    expires_ms: self.now + ttl,
                    nonce: self.nonce,
                },
            )
            .verify(&self.net, self.now)
            .unwrap()
            .into(),
        }
    }

    fn describe(order: &VerifiedOrder) -> (Side, PeerId, u64, u64, u64) {
        match order {
            VerifiedOrder::Offer(o) => {
                let t = o.offer().terms;
                (
                    Side::Offer,
                    o.offer().seller,
                    t.price_per_gib,
                    t.bytes,
                    t.expires_ms,
                )
            }
            VerifiedOrder::Bid(b) => {
                let t = b.bid().terms;
                (
                    Side::Bid,
                    b.bid().buyer,
                    t.max_price_per_gib,
                    t.bytes,
                    t.expires_ms,
                )
            }
        }
    }

    /// The live resting orders of `side`, in the priority order the rules demand (computed here,
    /// not taken from the book's iterators).
    fn priority(&self, side: Side) -> Vec<RestingOrder> {
        let mut live: Vec<RestingOrder> = match side {
            Side::Offer => self.book.offers().copied().collect(),
            Side::Bid => self.book.bids().copied().collect(),
        };
        live.retain(|o| o.is_live(self.now));
        live.sort_by_key(|o| match side {
            Side::Offer => (o.price_per_gib, o.arrival),
            Side::Bid => (u64::MAX - o.price_per_gib, o.arrival),
        });
        live
    }

    fn insert_fresh(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let order = self.sign(op);
        let id = order.id();
        let (side, owner, price, bytes, expires_ms) = Self::describe(&order);
        let other = match side {
            Side::Offer => Side::Bid,
            Side::Bid => Side::Offer,
        };
        let before = self.priority(other);

        // What the rules say should happen, from the test's own records.
        let own_witness = |t: &Track| {
            t.owner == owner && t.side == other && t.live(self.now) && crosses(side, price, t.price)
        };
        let live_of = |who: Option<PeerId>| {
            self.tracks
                .values()
                .filter(|t| t.live(self.now) && who.is_none_or(|w| t.owner == w))
                .count()
        };
        let available: u64 = self
            .tracks
            .values()
            .filter(|t| t.side == other && t.live(self.now) && crosses(side, price, t.price))
            .map(|t| t.bytes - t.filled)
            .sum();
        let fills_completely = available >= bytes;
        let self_cross = self.tracks.values().any(own_witness);
        let owner_full = live_of(Some(owner)) >= self.config.max_per_owner && !fills_completely;
        let full = live_of(None) >= self.config.max_orders && !fills_completely;

        match self.book.insert(order, self.now) {
            Err(BookError::SelfCross { own }) => {
                prop_assert!(self.tracks.get(&own).is_some_and(own_witness));
            }
            Err(BookError::OwnerFull { .. }) => prop_assert!(!self_cross && owner_full),
            Err(BookError::Full { .. }) => prop_assert!(!self_cross && !owner_full && full),
            Err(other) => prop_assert!(false, "unexpected refusal {other}"),
            Ok(placed) => {
                prop_assert!(!self_cross && !owner_full && !full);
                prop_assert_eq!(placed.id, id);
                // Walk the priority list as the rules say and compare fill by fill.
                let mut left = bytes;
                let mut queue = before.iter().map(|o| (o, o.remaining)).peekable();
                for fill in &placed.fills {
                    let (maker, rem) = queue
                        .next()
                        .ok_or_else(|| TestCaseError::fail("a fill beyond the live book"))?;
                    let maker_id = match side {
                        Side::Bid => fill.offer_id,
                        Side::Offer => fill.bid_id,
                    };
                    prop_assert_eq!(
                        maker_id,
                        maker.id,
                        "a fill skipped a better or earlier order"
                    );
                    prop_assert!(crosses(side, price, maker.price_per_gib));
                    prop_assert_eq!(fill.price_per_gib, maker.price_per_gib);
                    prop_assert_eq!(fill.bytes, left.min(rem));
                    prop_assert!(fill.bytes > 0);
                    let track = self.tracks.get_mut(&maker.id).unwrap();
                    prop_assert_eq!(track.state, State::Resting, "filled a cancelled order");
                    prop_assert!(self.now < track.expires_ms, "filled an expired order");
                    track.filled += fill.bytes;
                    if track.filled == track.bytes {
                        track.state = State::Filled;
                    }
                    left -= fill.bytes;
                    if fill.bytes < rem {
                        prop_assert_eq!(left, 0);
                    }
                    match side {
                        Side::Bid => {
                            prop_assert_eq!(fill.bid_id, id);
                            prop_assert_eq!(fill.buyer, owner);
                            prop_assert_eq!(fill.seller, maker.owner);
                            prop_assert_eq!(fill.content, order_content(&order));
                        }
                        Side::Offer => {
                            prop_assert_eq!(fill.offer_id, id);
                            prop_assert_eq!(fill.seller, owner);
                            prop_assert_eq!(fill.buyer, maker.owner);
                        }
                    }
                    self.filled_offer_side += fill.bytes;
                    self.filled_bid_side += fill.bytes;
                }
                if left > 0 {
                    // Matching stopped because nothing else crosses.
                    if let Some((next, _)) = queue.next() {
                        prop_assert!(!crosses(side, price, next.price_per_gib));
                    }
                }
                prop_assert_eq!(placed.resting, left);
                self.tracks.insert(
                    id,
                    Track {
                        order,
                        side,
                        owner,
                        price,
                        bytes,
                        expires_ms,
                        filled: bytes - left,
                        state: if left == 0 {
                            State::Filled
                        } else {
                            State::Resting
                        },
                    },
                );
                self.accepted.push(id);
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Order { .. } => self.insert_fresh(op)?,
            Op::Replay(pick) => {
                if !self.accepted.is_empty() {
                    let id = self.accepted[pick.index(self.accepted.len())];
                    let track = &self.tracks[&id];
                    let result = self.book.insert(track.order, self.now);
                    let expired = self.now >= track.expires_ms;
                    prop_assert!(
                        result == Err(BookError::Duplicate(id))
                            || (expired && matches!(result, Err(BookError::Expired { .. }))),
                        "a replay was not refused: {result:?}"
                    );
                }
            }
            Op::Cancel { which, by_owner } => {
                if !self.accepted.is_empty() {
                    let id = self.accepted[which.index(self.accepted.len())];
                    let owner = self.tracks[&id].owner;
                    let signer = self
                        .ids
                        .iter()
                        .find(|i| (i.peer_id() == owner) == *by_owner)
                        .unwrap();
                    let cancel = Cancel::sign(signer, &self.net, id, self.now)
                        .verify(&self.net, self.now)
                        .unwrap();
                    let in_book = self.book.get(&id).is_some();
                    match self.book.cancel(&cancel) {
                        Ok(removed) => {
                            prop_assert!(in_book && *by_owner);
                            let track = self.tracks.get_mut(&id).unwrap();
                            prop_assert_eq!(removed.remaining + track.filled, track.bytes);
                            track.state = State::Cancelled;
                        }
                        Err(BookError::NotOwner { .. }) => prop_assert!(in_book && !*by_owner),
                        Err(BookError::UnknownOrder(_)) => prop_assert!(!in_book),
                        Err(other) => prop_assert!(false, "unexpected refusal {other}"),
                    }
                }
            }
            Op::Advance(ms) => self.now += ms,
            Op::Expire => {
                for dropped in self.book.expire(self.now) {
                    prop_assert!(dropped.expires_ms <= self.now);
                    let track = self.tracks.get_mut(&dropped.id).unwrap();
                    prop_assert_eq!(track.state, State::Resting);
                    prop_assert_eq!(dropped.remaining + track.filled, track.bytes);
                    track.state = State::Expired;
                }
            }
        }
        self.check_invariants()
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        // Never crossed among live orders.
        let best_offer = self.book.best_offer(self.now).map(|o| o.price_per_gib);
        let best_bid = self.book.best_bid(self.now).map(|o| o.price_per_gib);
        if let (Some(ask), Some(bid)) = (best_offer, best_bid) {
            prop_assert!(bid < ask, "crossed book: bid {bid} ≥ offer {ask}");
        }
        // Conservation, and orders leave only by filling, cancellation or expiry.
        let mut resting = 0;
        for (id, track) in &mut self.tracks {
            prop_assert!(track.filled <= track.bytes);
            match self.book.get(id) {
                Some(held) => {
                    prop_assert_eq!(track.state, State::Resting);
                    prop_assert_eq!(held.bytes, track.bytes);
                    prop_assert_eq!(held.remaining + track.filled, track.bytes);
                    prop_assert!(held.remaining > 0);
                    resting += 1;
                }
                None => match track.state {
                    State::Resting => {
                        prop_assert!(
                            self.now >= track.expires_ms,
                            "a live order vanished from the book"
                        );
                        track.state = State::Expired;
                    }
                    State::Filled => prop_assert_eq!(track.filled, track.bytes),
                    State::Cancelled | State::Expired => {}
                },
            }
        }
        prop_assert_eq!(self.book.len(), resting);
        let by_side = |side: Side| -> u64 {
            self.tracks
                .values()
                .filter(|t| t.side == side)
                .map(|t| t.filled)
                .sum()
        };
        prop_assert_eq!(by_side(Side::Offer), self.filled_offer_side);
        prop_assert_eq!(by_side(Side::Bid), self.filled_bid_side);
        prop_assert_eq!(by_side(Side::Offer), by_side(Side::Bid));
        for id in &self.ids {
            let own = self
                .tracks
                .values()
                .filter(|t| t.owner == id.peer_id() && self.book.get(&t.order.id()).is_some())
                .count();
            prop_assert_eq!(self.book.owner_len(&id.peer_id()), own);
        }
        Ok(())
    }
}

fn order_content(order: &VerifiedOrder) -> Option<[u8; 32]> {
    match order {
        VerifiedOrder::Offer(_) => None,
        VerifiedOrder::Bid(b) => b.bid().terms.content,
    }
}

fn run(config: BookConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut world = World::new(config);
    for op in ops {
        world.step(op)?;
    }
    // In the end everything expires and the book empties.
    world.now += 1_000;
    world.step(&Op::Expire)?;
    prop_assert!(world.book.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_book_keeps_its_rules_under_tight_caps(ops in prop::collection::vec(op(), 1..60)) {
        run(TIGHT, &ops)?;
    }

    #[test]
    fn the_book_keeps_its_rules_with_room(ops in prop::collection::vec(op(), 1..60)) {
        run(ROOMY, &ops)?;
    }
}
