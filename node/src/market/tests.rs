//! The node's market without a network: two markets exchange what the node would send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use tally_market::{Bid, BidTerms, Offer, OfferTerms};

const NOW: u64 = 1_700_000_000_000;
/// How long the orders of these tests live: longer than a trade may stay silent.
const ORDER_TTL: u64 = 2 * TRADE_SILENCE_MS;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn market(seed: u8) -> (Market, Arc<Identity>) {
    let identity = Arc::new(Identity::from_secret_bytes([seed; 32]));
    let market = Market::new(Arc::clone(&identity), net(), BookConfig::default());
    (market, identity)
}

fn offer(seller: &Identity, bytes: u64, price: u64) -> OrderMessage {
    OrderMessage::Offer(Offer::sign(
        seller,
        &net(),
        OfferTerms {
            bytes,
            max_rate: 1 << 20,
            price_per_gib: price,
            issued_ms: NOW,
            expires_ms: NOW + ORDER_TTL,
            nonce: 1,
        },
    ))
}

fn bid(buyer: &Identity, bytes: u64, max_price: u64) -> OrderMessage {
    OrderMessage::Bid(Bid::sign(
        buyer,
        &net(),
        BidTerms {
            bytes,
            content: None,
            max_price_per_gib: max_price,
            issued_ms: NOW,
            expires_ms: NOW + ORDER_TTL,
            nonce: 2,
        },
    ))
}

#[test]
fn a_crossing_bid_becomes_a_trade_both_sides_hold_as_agreed() {
    let (seller, seller_id) = market(1);
    let (buyer, buyer_id) = market(2);
    let offer = offer(&seller_id, 1000, 10);
    let (offer_id, _) = seller.post(offer, NOW).unwrap();
    assert!(buyer.learn(offer, NOW).unwrap().new);
    assert!(!buyer.learn(offer, NOW).unwrap().new, "a replay is not new");

    let (_, learned) = buyer.post(bid(&buyer_id, 600, 12), NOW).unwrap();
    let [(id, proposal)] = learned.proposals.as_slice() else {
        panic!("expected one proposal, got {:?}", learned.proposals)
    };
    assert_eq!(
        proposal.terms.price_per_gib, 10,
        "the resting offer's price"
    );
    let agreement = seller
        .answer_proposal(*proposal, buyer_id.peer_id(), NOW + 1)
        .unwrap();
    buyer.agreed(*id, agreement, NOW + 2).unwrap();
    let (ours, theirs) = (buyer.trades(NOW + 3), seller.trades(NOW + 3));
    assert_eq!(ours.len(), 1);
    assert_eq!(theirs.len(), 1);
    assert_eq!(ours[0].trade.state(), TradeState::Agreed);
    assert_eq!(theirs[0].trade.state(), TradeState::Agreed);
    assert_eq!(ours[0].trade.terms(), theirs[0].trade.terms());
    assert_eq!(seller.own(&offer_id, NOW + 3).unwrap().left(), 400);
    // The same proposal again gets the same agreement, and commits nothing more.
    assert_eq!(
        seller
            .answer_proposal(*proposal, buyer_id.peer_id(), NOW + 4)
            .unwrap(),
        agreement
    );
    assert_eq!(seller.own(&offer_id, NOW + 4).unwrap().left(), 400);
}

#[test]
fn the_seller_refuses_what_its_offer_cannot_cover() {
    let (seller, seller_id) = market(1);
    let (buyer, buyer_id) = market(2);
    let (third, third_id) = market(3);
    let offer = offer(&seller_id, 1000, 10);
    seller.post(offer, NOW).unwrap();
    buyer.learn(offer, NOW).unwrap();
    third.learn(offer, NOW).unwrap();
    let (_, first) = buyer.post(bid(&buyer_id, 800, 10), NOW).unwrap();
    let (_, second) = third.post(bid(&third_id, 800, 10), NOW).unwrap();
    let first = first.proposals[0].1;
    let second = second.proposals[0].1;
    seller
        .answer_proposal(first, buyer_id.peer_id(), NOW)
        .unwrap();
    assert!(matches!(
        seller.answer_proposal(second, third_id.peer_id(), NOW),
        Err(ProposalError::NotEnough {
            left: 200,
            asked: 800,
            ..
        })
    ));
    // Relayed by someone else than its buyer: refused as invalid.
    assert!(matches!(
        seller.answer_proposal(second, buyer_id.peer_id(), NOW),
        Err(ProposalError::Invalid(_))
    ));
    // The buyer's refused trade is cancelled and frees its bid's bytes.
    let id = trade_id(&second.terms, &net());
    third.failed(id, "refused".into(), NOW);
    let trades = third.trades(NOW);
    assert_eq!(trades[0].trade.state(), TradeState::Cancelled);
    assert_eq!(third.view(NOW).mine[0].remaining, 800);
}

#[test]
fn forged_expired_and_foreign_orders_are_told_apart() {
    let (node, _) = market(1);
    let seller = Identity::from_secret_bytes([5; 32]);
    let other = Identity::from_secret_bytes([6; 32]);
    let OrderMessage::Offer(mut forged) = offer(&seller, 100, 1) else {
        unreachable!()
    };
    forged.signature = other.sign(b"something else");
    assert!(matches!(
        node.learn(OrderMessage::Offer(forged), NOW),
        Err(LearnError::Invalid(OrderError::BadSignature { .. }))
    ));
    let foreign = OrderMessage::Offer(Offer::sign(
        &seller,
        &NetworkId::from_name("elsewhere"),
        OfferTerms {
            bytes: 1,
            max_rate: 1,
            price_per_gib: 1,
            issued_ms: NOW,
            expires_ms: NOW + 1,
            nonce: 0,
        },
    ));
    assert!(matches!(
        node.learn(foreign, NOW),
        Err(LearnError::Invalid(_))
    ));
    assert_eq!(
        node.learn(offer(&seller, 100, 1), NOW + ORDER_TTL),
        Err(LearnError::Expired)
    );
    assert!(node.live_orders(NOW).is_empty());
}

#[test]
fn a_cancellation_withdraws_the_order_everywhere_even_before_it_arrives() {
    let (owner, owner_id) = market(1);
    let (early, _) = market(2);
    let (late, _) = market(3);
    let offer = offer(&owner_id, 100, 1);
    let (id, _) = owner.post(offer, NOW).unwrap();
    early.learn(offer, NOW).unwrap();
    assert!(matches!(
        early.cancel_mine(id, NOW),
        Err(CancelError::NotMine { .. })
    ));
    assert_eq!(
        early.cancel_mine(OrderId([9; 32]), NOW),
        Err(CancelError::Unknown(OrderId([9; 32])))
    );
    let cancel = OrderMessage::Cancel(owner.cancel_mine(id, NOW).unwrap());
    assert!(owner.resting(&id, NOW).is_none());
    assert!(early.learn(cancel, NOW).unwrap().new);
    assert!(
        !early.learn(cancel, NOW).unwrap().new,
        "a replay is not new"
    );
    assert!(early.resting(&id, NOW).is_none());
    // The cancellation first, then the order: it never rests.
    assert!(late.learn(cancel, NOW).unwrap().new);
    assert!(!late.learn(offer, NOW).unwrap().new);
    assert!(late.resting(&id, NOW).is_none());
    assert_eq!(owner.cancel_mine(id, NOW), Err(CancelError::Unknown(id)));
}

#[test]
fn trades_kept_are_bounded() {
    let buyer_id = Arc::new(Identity::from_secret_bytes([2; 32]));
    let config = BookConfig {
        max_per_owner: 2 * MAX_TRADES,
        ..BookConfig::default()
    };
    let buyer = Market::new(Arc::clone(&buyer_id), net(), config);
    let seller = Identity::from_secret_bytes([1; 32]);
    for nonce in 0..(MAX_TRADES as u64 + 10) {
        let offer = OrderMessage::Offer(Offer::sign(
            &seller,
            &net(),
            OfferTerms {
                bytes: 1,
                max_rate: 1,
                price_per_gib: 0,
                issued_ms: NOW,
                expires_ms: NOW + 60_000,
                nonce,
            },
        ));
        buyer.learn(offer, NOW).unwrap();
    }
    for nonce in 0..(MAX_TRADES as u64 + 10) / 100 + 1 {
        let OrderMessage::Bid(mut b) = bid(&buyer_id, 100, 0) else {
            unreachable!()
        };
        b.terms.nonce = nonce;
        let signed = Bid::sign(&buyer_id, &net(), b.terms);
        // Posting is capped at MAX_OWN_ORDERS; learn is not.
        buyer.learn(OrderMessage::Bid(signed), NOW).unwrap();
    }
    assert!(buyer.trades(NOW).len() <= MAX_TRADES);
    assert_eq!(buyer.trades(NOW).len(), MAX_TRADES);
}

/// A seller and a buyer holding the same agreed trade of `bytes` at `price` per GiB.
fn agreed_pair(bytes: u64, price: u64) -> (Market, Market, PeerId, PeerId) {
    let (seller, seller_id) = market(1);
    let (buyer, buyer_id) = market(2);
    let offer = offer(&seller_id, bytes, price);
    seller.post(offer, NOW).unwrap();
    buyer.learn(offer, NOW).unwrap();
    let (_, learned) = buyer.post(bid(&buyer_id, bytes, price), NOW).unwrap();
    let [(id, proposal)] = learned.proposals.as_slice() else {
        panic!("expected one proposal, got {:?}", learned.proposals)
    };
    let agreement = seller
        .answer_proposal(*proposal, buyer_id.peer_id(), NOW)
        .unwrap();
    buyer.agreed(*id, agreement, NOW).unwrap();
    (seller, buyer, seller_id.peer_id(), buyer_id.peer_id())
}

/// Sends `len` bytes from `seller` to `buyer` under a credit `window`, with a pair that
/// always has room: the credits the seller counts due, or `None` if the trade's window held the
/// chunk back.
fn try_send(seller: &Market, buyer: &PeerId, len: u64, window: u64, now: u64) -> Option<u64> {
    let mut due = None;
    let sent = seller.seller_send(buyer, len, window, now, |credits| {
        due = Some(credits);
        Ok::<_, std::convert::Infallible>(Window::Open)
    });
    match sent {
        Ok(Window::Open) => due,
        Ok(Window::Full { .. } | Window::StrangersFull { .. }) => None,
        Err(never) => match never {},
    }
}

fn send(seller: &Market, buyer: &PeerId, len: u64, window: u64, now: u64) -> u64 {
    try_send(seller, buyer, len, window, now).expect("the chunk goes")
}

fn state_of(market: &Market, now: u64) -> TradeState {
    let trades = market.trades(now);
    let [entry] = trades.as_slice() else {
        panic!("expected one trade, got {}", trades.len())
    };
    entry.trade.state()
}

#[test]
fn delivery_and_receipts_carry_a_trade_to_settled_on_both_sides() {
    const MIB: u64 = 1 << 20;
    let (seller, buyer, seller_id, buyer_id) = agreed_pair(8 * MIB, GIB / 2);
    for i in 0..12 {
        let now = NOW + i;
        send(&seller, &buyer_id, MIB, 64 * MIB, now);
        buyer.buyer_credits(&seller_id, MIB, now);
        // A receipt covering everything but the latest chunk.
        seller.acknowledged(&buyer_id, Party::Seller, MIB, now);
        buyer.acknowledged(&seller_id, Party::Buyer, MIB, now);
        // Settled once a receipt covers the trade's 8 MiB: after the ninth chunk.
        let expected = if i < 8 {
            TradeState::Delivering
        } else {
            TradeState::Settled
        };
        assert_eq!(state_of(&seller, now), expected, "after chunk {i}");
        assert_eq!(state_of(&buyer, now), expected, "after chunk {i}");
    }
    for market in [&seller, &buyer] {
        let entry = &market.trades(NOW + 20)[0];
        assert_eq!(entry.trade.delivered_bytes(), 8 * MIB);
        assert_eq!(entry.trade.owed(), 0, "8 MiB delivered, 11 MiB covered");
        assert_eq!(entry.trade.settled_credits(), 4 * MIB);
        assert_eq!(entry.trade.state(), TradeState::Settled);
    }
    assert!(
        !seller.delivering_to(&buyer_id, NOW + 20),
        "no priority once delivered"
    );
}

/// Found by the `market` fuzz target (a 300 s run): the seller's count of the bytes moved
/// under a trade added without a bound, and a trade as large as a u64 with two chunks of
/// half that overflowed it (a panic with overflow checks on).
#[test]
fn bytes_moved_under_a_trade_as_large_as_a_u64_do_not_overflow() {
    let (seller, _buyer, _seller_id, buyer_id) = agreed_pair(u64::MAX, GIB);
    let half = u64::MAX / 2 + 1;
    for now in [NOW, NOW + 1, NOW + 2] {
        let _ = try_send(&seller, &buyer_id, half, u64::MAX, now);
    }
    assert_eq!(seller.trades(NOW + 2).len(), 1);
}

#[test]
fn a_buyer_never_owes_a_trade_more_than_its_credit_window() {
    const MIB: u64 = 1 << 20;
    let (seller, _buyer, _seller_id, buyer_id) = agreed_pair(100 * MIB, GIB);
    let window = 4 * MIB;
    let mut sent = 0;
    while try_send(&seller, &buyer_id, MIB, window, NOW).is_some() {
        sent += MIB;
        assert!(sent <= window, "sent {sent} with nothing paid");
    }
    assert_eq!(sent, window);
    let entry = &seller.trades(NOW)[0];
    assert_eq!(entry.trade.owed(), window);
    // A receipt covering all of it opens the window again.
    seller.acknowledged(&buyer_id, Party::Seller, 0, NOW + 1);
    assert_eq!(seller.trades(NOW + 1)[0].trade.owed(), 0);
    assert!(try_send(&seller, &buyer_id, MIB, window, NOW + 1).is_some());
}

#[test]
fn a_silent_buyer_that_owes_is_in_default_and_a_silent_seller_frees_the_bid() {
    const MIB: u64 = 1 << 20;
    let (seller, buyer, _seller_id, buyer_id) = agreed_pair(8 * MIB, GIB);
    send(&seller, &buyer_id, MIB, 64 * MIB, NOW);
    let later = NOW + TRADE_SILENCE_MS;
    let ticked = seller.tick(later);
    assert_eq!(ticked.ended.len(), 1);
    assert_eq!(
        ticked.ended[0].trade.state(),
        TradeState::Defaulted(Party::Buyer)
    );
    assert!(seller.tick(later + 1).ended.is_empty(), "reported once");
    // The offer's undelivered 7 MiB can be sold again.
    let offer_id = ticked.ended[0].trade.terms().offer_id;
    assert_eq!(seller.own(&offer_id, later).unwrap().left(), 7 * MIB);

    // The buyer received nothing: the seller is silent in its turn, and the bid's bytes go
    // back into the buyer's book, where another offer now matches them.
    let (_other, other_id) = market(3);
    buyer.learn(offer(&other_id, 8 * MIB, GIB), NOW).unwrap();
    let ticked = buyer.tick(later);
    assert_eq!(
        ticked.ended[0].trade.state(),
        TradeState::Defaulted(Party::Seller)
    );
    let [(_, proposal)] = ticked.proposals.as_slice() else {
        panic!("expected one new proposal, got {:?}", ticked.proposals)
    };
    assert_eq!(proposal.terms.seller, other_id.peer_id());
    assert_eq!(proposal.terms.bytes, 8 * MIB);
}

#[test]
fn a_refused_proposal_drops_the_offer_and_matches_the_bid_with_the_next() {
    let (buyer, buyer_id) = market(2);
    let (_a, a_id) = market(3);
    let (_b, b_id) = market(4);
    let cheap = offer(&a_id, 1000, 10);
    buyer.learn(cheap, NOW).unwrap();
    buyer.learn(offer(&b_id, 1000, 11), NOW).unwrap();
    let (_, learned) = buyer.post(bid(&buyer_id, 600, 12), NOW).unwrap();
    let [(id, proposal)] = learned.proposals.as_slice() else {
        panic!("expected one proposal, got {:?}", learned.proposals)
    };
    assert_eq!(proposal.terms.seller, a_id.peer_id());
    let again = buyer.failed(*id, "refused: not live".into(), NOW + 1);
    let [(_, next)] = again.as_slice() else {
        panic!("expected one new proposal, got {again:?}")
    };
    assert_eq!(next.terms.seller, b_id.peer_id());
    assert_eq!((next.terms.bytes, next.terms.price_per_gib), (600, 11));
    let OrderMessage::Offer(cheap) = cheap else {
        unreachable!()
    };
    assert!(buyer.resting(&cheap.id(&net()), NOW + 1).is_none());
    assert_eq!(state_of_first(&buyer, NOW + 1), TradeState::Cancelled);
}

fn state_of_first(market: &Market, now: u64) -> TradeState {
    market.trades(now)[0].trade.state()
}

#[test]
fn a_peer_that_connects_is_sent_the_cancellations_too() {
    let (seller, seller_id) = market(1);
    let (offer_id, _) = seller.post(offer(&seller_id, 1000, 10), NOW).unwrap();
    seller.cancel_mine(offer_id, NOW).unwrap();
    let pushed = seller.live_orders(NOW);
    assert!(
        pushed
            .iter()
            .any(|m| matches!(m, OrderMessage::Cancel(c) if c.order_id == offer_id))
    );
    // A peer that still held the offer drops it.
    let (peer, _) = market(2);
    peer.learn(offer(&seller_id, 1000, 10), NOW).unwrap();
    for message in pushed {
        peer.learn(message, NOW).unwrap();
    }
    assert!(peer.resting(&offer_id, NOW).is_none());
}

/// Credits due for the first `bytes` sent, by a schedule of cumulative (bytes, credits)
/// points, as `UploaderPair::credits_due` computes them.
fn due(schedule: &[(u64, u64)], bytes: u64) -> u64 {
    for w in schedule.windows(2) {
        let ((b0, c0), (b1, c1)) = (w[0], w[1]);
        if bytes <= b1 && b1 > b0 && bytes >= b0 {
            return c0
                + ((u128::from(bytes - b0) * u128::from(c1 - c0)) / u128::from(b1 - b0)) as u64;
        }
    }
    schedule.last().map_or(0, |p| p.1)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the chunk sizes, the chunks in flight when the agreement is made (sent at par
    /// before it, received after it) and the chunks lost on the way, what an honest buyer owes
    /// for what it received is never below what the seller counts as due for that many bytes,
    /// at a price below or above par.
    #[test]
    fn a_buyer_pricing_a_trade_never_owes_less_than_the_seller_counts_due(
        trade_mib in 1u64..40,
        price in proptest::prop_oneof![1u64..2_000_000, (1u64 << 30)..(1u64 << 32)],
        chunks in proptest::collection::vec((1u64..=(256 << 10), proptest::bool::weighted(0.05)), 1..200),
        in_flight in 0usize..4,
    ) {
        let (seller, buyer, seller_id, buyer_id) = agreed_pair(trade_mib << 20, price);
        // Chunks sent before the seller countersigned: the first `in_flight`, at par; the
        // buyer receives them after it learned of the agreement.
        let mut schedule = vec![(0u64, 0u64)];
        let (mut owed, mut received) = (0u64, 0u64);
        for (i, (len, lost)) in chunks.iter().copied().enumerate() {
            let credits = if i < in_flight { len } else { send(&seller, &buyer_id, len, u64::MAX, NOW) };
            let &(b, c) = schedule.last().unwrap();
            schedule.push((b + len, c + credits));
            if lost {
                continue;
            }
            owed += buyer.buyer_credits(&seller_id, len, NOW);
            received += len;
            let due_now = due(&schedule, received);
            proptest::prop_assert!(owed >= due_now, "received {received}: owes {owed}, due {due_now}");
        }
    }
}

#[test]
fn learning_reports_the_orders_it_changed_as_the_book_has_them_after() {
    let (market, me) = market(3);
    let seller = Identity::from_secret_bytes([4; 32]);
    let offer = offer(&seller, 1000, 10);
    let offer_id = offer_id_of(&offer);
    let learned = market.learn(offer, NOW).unwrap();
    let [view] = learned.orders.as_slice() else {
        panic!("{:?}", learned.orders)
    };
    assert_eq!(
        (view.id, view.remaining, view.mine),
        (offer_id, 1000, false)
    );
    assert_eq!(view.owner, seller.peer_id());

    // A bid that fills part of the offer: the bid (filled, 0 left) and the offer (400 left).
    let (bid_id, learned) = market.post(bid(&me, 600, 12), NOW).unwrap();
    let changed: Vec<(OrderId, u64, bool)> = learned
        .orders
        .iter()
        .map(|o| (o.id, o.remaining, o.mine))
        .collect();
    assert_eq!(changed, vec![(bid_id, 0, true), (offer_id, 400, false)]);

    // The seller withdraws the rest: the offer, cancelled, nothing left.
    let cancel = Cancel::sign(&seller, &net(), offer_id, NOW + 1);
    let learned = market.learn(OrderMessage::Cancel(cancel), NOW + 1).unwrap();
    let [view] = learned.orders.as_slice() else {
        panic!("{:?}", learned.orders)
    };
    assert_eq!(
        (view.id, view.remaining, view.cancelled),
        (offer_id, 0, true)
    );
}

fn offer_id_of(message: &OrderMessage) -> OrderId {
    match message {
        OrderMessage::Offer(offer) => offer.id(&net()),
        _ => panic!("not an offer"),
    }
}
