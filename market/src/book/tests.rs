#![allow(clippy::unwrap_used, clippy::expect_used)]

use tally_ledger::{Identity, NetworkId};

use super::*;
use crate::order::{Bid, BidTerms, Cancel, Offer, OfferTerms};

const NOW: u64 = 1_800_000_000_000;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn who(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

/// A verified offer by `seller` of `bytes` at `price`, live for `ttl` ms from NOW.
fn offer(seller: u8, bytes: u64, price: u64, ttl: u64, nonce: u64) -> VerifiedOffer {
    Offer::sign(
        &who(seller),
        &net(),
        OfferTerms {
            bytes,
            max_rate: 1 << 20,
            price_per_gib: price,
            issued_ms: NOW,
            expires_ms: NOW + ttl,
            nonce,
        },
    )
    .verify(&net(), NOW)
    .unwrap()
}

fn bid(buyer: u8, bytes: u64, price: u64, ttl: u64, nonce: u64) -> VerifiedBid {
    Bid::sign(
        &who(buyer),
        &net(),
        BidTerms {
            bytes,
            content: None,
            max_price_per_gib: price,
            issued_ms: NOW,
            expires_ms: NOW + ttl,
            nonce,
        },
    )
    .verify(&net(), NOW)
    .unwrap()
}

fn cancel(owner: u8, id: OrderId) -> VerifiedCancel {
    Cancel::sign(&who(owner), &net(), id, NOW)
        .verify(&net(), NOW)
        .unwrap()
}

/// `(offer, bid, bytes, price)` of each fill.
fn summary(placed: &Placed) -> Vec<(OrderId, OrderId, u64, u64)> {
    placed
        .fills
        .iter()
        .map(|f| (f.offer_id, f.bid_id, f.bytes, f.price_per_gib))
        .collect()
}

#[test]
fn a_bid_takes_the_cheapest_offers_first_then_the_earliest() {
    let mut book = OrderBook::default();
    let a = offer(1, 100, 10, 60_000, 1);
    let b = offer(2, 100, 10, 60_000, 1);
    let c = offer(3, 100, 9, 60_000, 1);
    let dear = offer(4, 100, 11, 60_000, 1);
    for o in [a, b, c, dear] {
        assert!(book.insert(o, NOW).unwrap().fills.is_empty());
    }
    let taker = bid(9, 250, 10, 60_000, 1);
    let placed = book.insert(taker, NOW).unwrap();
    assert_eq!(
        summary(&placed),
        vec![
            (c.id(), taker.id(), 100, 9),
            (a.id(), taker.id(), 100, 10),
            (b.id(), taker.id(), 50, 10),
        ]
    );
    assert_eq!(placed.resting, 0);
    assert_eq!(book.get(&b.id()).unwrap().remaining, 50);
    assert!(book.get(&a.id()).is_none());
    assert_eq!(book.best_offer(NOW).unwrap().id, b.id());
    assert!(book.best_bid(NOW).is_none());
    let fill = placed.fills[0];
    assert_eq!(fill.seller, who(3).peer_id());
    assert_eq!(fill.buyer, who(9).peer_id());
}

#[test]
fn the_fill_price_is_the_resting_orders_price() {
    let mut book = OrderBook::default();
    book.insert(offer(1, 100, 40, 60_000, 1), NOW).unwrap();
    let placed = book.insert(bid(2, 10, 50, 60_000, 1), NOW).unwrap();
    assert_eq!(placed.fills[0].price_per_gib, 40);

    let mut book = OrderBook::default();
    book.insert(bid(2, 100, 50, 60_000, 1), NOW).unwrap();
    let placed = book.insert(offer(1, 10, 30, 60_000, 1), NOW).unwrap();
    assert_eq!(placed.fills[0].price_per_gib, 50);
}

#[test]
fn an_unfilled_remainder_rests_and_prices_that_do_not_cross_never_fill() {
    let mut book = OrderBook::default();
    book.insert(offer(1, 100, 40, 60_000, 1), NOW).unwrap();
    let low = bid(2, 300, 39, 60_000, 1);
    let placed = book.insert(low, NOW).unwrap();
    assert!(placed.fills.is_empty());
    assert_eq!(placed.resting, 300);
    let taker = bid(3, 300, 40, 60_000, 1);
    let placed = book.insert(taker, NOW).unwrap();
    assert_eq!(placed.fills.len(), 1);
    assert_eq!(placed.resting, 200);
    let rest = book.get(&taker.id()).unwrap();
    assert_eq!((rest.bytes, rest.remaining), (300, 200));
    // The higher bid now leads, whatever arrived first.
    assert_eq!(book.best_bid(NOW).unwrap().id, taker.id());
    assert_eq!(book.len(), 2);
}

#[test]
fn a_backdated_order_does_not_jump_the_queue() {
    let mut book = OrderBook::default();
    let first = offer(1, 100, 10, 60_000, 1);
    let backdated = Offer::sign(
        &who(2),
        &net(),
        OfferTerms {
            bytes: 100,
            max_rate: 1,
            price_per_gib: 10,
            issued_ms: NOW - 3_600_000,
            expires_ms: NOW + 60_000,
            nonce: 1,
        },
    )
    .verify(&net(), NOW)
    .unwrap();
    book.insert(first, NOW).unwrap();
    book.insert(backdated, NOW + 1).unwrap();
    let placed = book.insert(bid(3, 100, 10, 60_000, 1), NOW + 2).unwrap();
    assert_eq!(placed.fills[0].offer_id, first.id());
}

#[test]
fn a_bid_for_content_matches_any_offer_and_carries_its_content() {
    let mut book = OrderBook::default();
    book.insert(offer(1, 100, 10, 60_000, 1), NOW).unwrap();
    let wanted = Bid::sign(
        &who(2),
        &net(),
        BidTerms {
            bytes: 10,
            content: Some([5; 32]),
            max_price_per_gib: 10,
            issued_ms: NOW,
            expires_ms: NOW + 60_000,
            nonce: 1,
        },
    )
    .verify(&net(), NOW)
    .unwrap();
    let placed = book.insert(wanted, NOW).unwrap();
    assert_eq!(placed.fills[0].content, Some([5; 32]));
}

#[test]
fn expired_orders_are_never_filled() {
    let mut book = OrderBook::default();
    let short = offer(1, 100, 5, 1_000, 1);
    let long = offer(2, 100, 10, 60_000, 1);
    book.insert(short, NOW).unwrap();
    book.insert(long, NOW).unwrap();
    // At its expiry the cheaper offer is dead: the bid passes it for the live one.
    let placed = book.insert(bid(3, 50, 10, 60_000, 1), NOW + 1_000).unwrap();
    assert_eq!(summary(&placed)[0].0, long.id());
    assert!(book.get(&short.id()).is_none());
    // An order that arrives expired is refused.
    let late = offer(4, 100, 10, 1_000, 1);
    assert!(matches!(
        book.insert(late, NOW + 1_000),
        Err(BookError::Expired { .. })
    ));
}

#[test]
fn expire_drops_the_expired_soonest_first() {
    let mut book = OrderBook::default();
    let a = offer(1, 100, 10, 2_000, 1);
    let b = bid(2, 100, 5, 1_000, 1);
    let c = offer(3, 100, 10, 60_000, 1);
    for o in [VerifiedOrder::from(a), b.into(), c.into()] {
        book.insert(o, NOW).unwrap();
    }
    assert!(book.expire(NOW + 999).is_empty());
    let dropped: Vec<_> = book.expire(NOW + 2_000).iter().map(|o| o.id).collect();
    assert_eq!(dropped, vec![b.id(), a.id()]);
    assert_eq!(book.len(), 1);
    assert_eq!(book.owner_len(&who(1).peer_id()), 0);
}

#[test]
fn only_the_owner_can_cancel_and_a_cancelled_order_never_fills() {
    let mut book = OrderBook::default();
    let o = offer(1, 100, 10, 60_000, 1);
    book.insert(o, NOW).unwrap();
    assert_eq!(
        book.cancel(&cancel(2, o.id())),
        Err(BookError::NotOwner {
            id: o.id(),
            signer: who(2).peer_id()
        })
    );
    assert!(book.get(&o.id()).is_some());
    let removed = book.cancel(&cancel(1, o.id())).unwrap();
    assert_eq!(removed.remaining, 100);
    assert!(book.is_empty());
    assert!(
        book.insert(bid(3, 100, 10, 60_000, 1), NOW)
            .unwrap()
            .fills
            .is_empty()
    );
    assert_eq!(
        book.cancel(&cancel(1, o.id())),
        Err(BookError::UnknownOrder(o.id()))
    );
    // Gossip re-delivers the cancelled order: refused.
    assert_eq!(book.insert(o, NOW), Err(BookError::Duplicate(o.id())));
}

#[test]
fn a_replayed_order_is_refused_resting_or_filled() {
    let mut book = OrderBook::default();
    let o = offer(1, 100, 10, 60_000, 1);
    book.insert(o, NOW).unwrap();
    assert_eq!(book.insert(o, NOW), Err(BookError::Duplicate(o.id())));
    let b = bid(2, 100, 10, 60_000, 1);
    assert_eq!(book.insert(b, NOW).unwrap().fills.len(), 1);
    assert_eq!(book.insert(o, NOW), Err(BookError::Duplicate(o.id())));
    assert_eq!(book.insert(b, NOW), Err(BookError::Duplicate(b.id())));
    // Once expired, the ids are forgotten; the orders are refused as expired anyway.
    book.expire(NOW + 60_000);
    assert!(matches!(
        book.insert(o, NOW + 60_000),
        Err(BookError::Expired { .. })
    ));
}

#[test]
fn an_order_that_would_cross_its_owners_own_is_refused() {
    let mut book = OrderBook::default();
    let mine = offer(1, 100, 10, 60_000, 1);
    book.insert(mine, NOW).unwrap();
    assert_eq!(
        book.insert(bid(1, 100, 10, 60_000, 2), NOW),
        Err(BookError::SelfCross { own: mine.id() })
    );
    // Below my own offer is fine: it does not cross.
    book.insert(bid(1, 100, 9, 60_000, 3), NOW).unwrap();
    // Once my offer has expired it no longer blocks.
    let placed = book
        .insert(bid(1, 100, 10, 120_000, 4), NOW + 60_000)
        .unwrap();
    assert!(placed.fills.is_empty());
}

#[test]
fn a_full_book_refuses_after_dropping_expired_orders() {
    let mut book = OrderBook::new(BookConfig {
        max_orders: 3,
        max_per_owner: 10,
        max_remembered: 10,
    });
    book.insert(bid(1, 100, 5, 1_000, 1), NOW).unwrap();
    book.insert(offer(2, 100, 10, 60_000, 1), NOW).unwrap();
    book.insert(offer(3, 100, 10, 60_000, 1), NOW).unwrap();
    let next = offer(4, 100, 10, 60_000, 1);
    assert_eq!(book.insert(next, NOW), Err(BookError::Full { cap: 3 }));
    assert_eq!(book.len(), 3);
    // An order that fills completely needs no room: a full book still takes it.
    let taker = bid(5, 100, 10, 60_000, 1);
    assert_eq!(book.insert(taker, NOW).unwrap().fills.len(), 1);
    assert_eq!(book.len(), 2);
    book.insert(offer(6, 100, 10, 60_000, 1), NOW).unwrap();
    // One that would rest is refused, unless expired orders make room.
    let partial = bid(7, 201, 10, 60_000, 1);
    assert_eq!(book.insert(partial, NOW), Err(BookError::Full { cap: 3 }));
    assert_eq!(book.len(), 3);
    book.insert(next, NOW + 1_000).unwrap();
    assert_eq!(book.len(), 3);
    assert!(book.bids().next().is_none());
}

#[test]
fn one_owner_cannot_hold_more_than_its_cap() {
    let mut book = OrderBook::new(BookConfig {
        max_orders: 100,
        max_per_owner: 2,
        max_remembered: 10,
    });
    book.insert(offer(1, 100, 10, 60_000, 1), NOW).unwrap();
    book.insert(bid(1, 100, 5, 60_000, 2), NOW).unwrap();
    assert_eq!(
        book.insert(offer(1, 100, 10, 60_000, 3), NOW),
        Err(BookError::OwnerFull {
            owner: who(1).peer_id(),
            cap: 2
        })
    );
    book.insert(offer(2, 100, 10, 60_000, 3), NOW).unwrap();
    assert_eq!(book.owner_len(&who(1).peer_id()), 2);
    // At its cap, an owner may still take what fills at once, and nothing that would rest.
    assert!(matches!(
        book.insert(offer(1, 150, 10, 60_000, 4), NOW),
        Err(BookError::OwnerFull { .. })
    ));
    book.insert(bid(3, 100, 7, 60_000, 1), NOW).unwrap();
    let placed = book.insert(offer(1, 50, 7, 60_000, 5), NOW).unwrap();
    assert_eq!((placed.fills.len(), placed.resting), (1, 0));
    assert_eq!(book.owner_len(&who(1).peer_id()), 2);
}

#[test]
fn filled_ids_are_forgotten_beyond_the_cap_soonest_expiring_first() {
    let mut book = OrderBook::new(BookConfig {
        max_orders: 10,
        max_per_owner: 10,
        max_remembered: 1,
    });
    let early = offer(1, 1, 10, 1_000, 1);
    let late = offer(1, 1, 10, 2_000, 2);
    book.insert(early, NOW).unwrap();
    book.insert(bid(2, 1, 10, 500, 1), NOW).unwrap();
    book.insert(late, NOW).unwrap();
    book.insert(bid(2, 1, 10, 500, 2), NOW).unwrap();
    assert!(book.is_empty());
    assert_eq!(book.insert(late, NOW), Err(BookError::Duplicate(late.id())));
    // `early` was forgotten to keep one id; this is the documented limit of the guard.
    assert!(book.insert(early, NOW).is_ok());
}

#[test]
fn a_refused_fill_reopens_the_bid_against_the_next_offer() {
    let mut book = OrderBook::default();
    let cheap = offer(1, 100, 10, 60_000, 1);
    let dear = offer(2, 100, 20, 60_000, 2);
    let (cheap_id, dear_id) = (cheap.id(), dear.id());
    book.insert(cheap, NOW).unwrap();
    book.insert(dear, NOW).unwrap();
    let wanted = bid(3, 60, 30, 60_000, 3);
    let placed = book.insert(wanted, NOW).unwrap();
    assert_eq!(summary(&placed), vec![(cheap_id, wanted.id(), 60, 10)]);
    assert!(book.get(&wanted.id()).is_none(), "filled completely");

    // The cheap offer's seller refuses: its offer leaves this book and the bid's 60 bytes
    // meet the next offer.
    let withdrawn = book.withdraw(&cheap_id).unwrap();
    assert_eq!(withdrawn.remaining, 40);
    assert!(book.get(&cheap_id).is_none());
    let again = book.reopen(wanted, 60, NOW + 1).unwrap();
    assert_eq!(summary(&again), vec![(dear_id, wanted.id(), 60, 20)]);
    assert_eq!(again.resting, 0);
    assert_eq!(book.get(&dear_id).unwrap().remaining, 40);

    // A withdrawn order cannot come back as a replay.
    assert!(matches!(
        book.insert(offer(1, 100, 10, 60_000, 1), NOW + 2),
        Err(BookError::Duplicate(_))
    ));
}

#[test]
fn reopening_adds_to_what_still_rests_and_never_beyond_the_order() {
    let mut book = OrderBook::default();
    let wanted = bid(3, 100, 30, 60_000, 3);
    book.insert(wanted, NOW).unwrap();
    book.insert(offer(1, 30, 10, 60_000, 1), NOW).unwrap();
    assert_eq!(book.get(&wanted.id()).unwrap().remaining, 70);
    let placed = book.reopen(wanted, 500, NOW).unwrap();
    assert_eq!(placed.resting, 100, "capped at the bid's own bytes");
    assert_eq!(book.len(), 1);

    // Expired: refused, and the book keeps the order as it was.
    let late = NOW + 60_000;
    assert!(matches!(
        book.reopen(wanted, 10, late),
        Err(BookError::Expired { .. })
    ));
}
