//! The market on real nodes (QUIC on 127.0.0.1 port 0, temporary data dirs): an offer floods
//! through a relay to every book; a crossing bid becomes a trade both sides hold as agreed, the
//! buyer dialing the seller it was not connected to; a cancellation empties every book; a forged
//! order is refused and its sender penalised; an expired one is dropped without a word.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestNode, ask, raw_client, wait_for};
use tally_ledger::{Identity, NetworkId};
use tally_market::{Offer, OfferTerms, OrderId, TradeState};
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::{Behaviour, now_ms};
use tally_node::market::PENALTY_BAD_ORDER;
use tally_node::wire::{MAX_ORDERS_PER_MESSAGE, OrderMessage, RefusalCode, Request, Response};
use tally_web::api::NodeApi;
use tally_web::model::{BidRequest, OfferRequest};

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

async fn node() -> TestNode {
    TestNode::start_with(Behaviour::default(), |c| {
        c.node.gossip_interval = Duration::from_millis(200);
        // No peer exchange: a buyer reaches a seller it is not connected to only by dialing it
        // for the trade.
        c.node.target_peers = 0;
    })
    .await
}

fn api(node: &TestNode) -> NodeHandle {
    NodeHandle::new(Arc::clone(node.shared()))
}

fn resting(node: &TestNode, id: OrderId) -> bool {
    node.shared().market.resting(&id, now_ms()).is_some()
}

fn offer_terms(bytes: u64, expires_ms: u64) -> OfferTerms {
    OfferTerms {
        bytes,
        max_rate: 1 << 20,
        price_per_gib: 1,
        issued_ms: expires_ms.saturating_sub(600_000),
        expires_ms,
        nonce: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_floods_a_crossing_bid_trades_and_a_cancellation_empties_every_book() {
    let seller = node().await;
    let relay = node().await;
    let buyer = node().await;
    // A line: the buyer reaches the seller only through the relay.
    relay.connect(&seller).await;
    buyer.connect(&relay).await;
    assert!(buyer.shared().peers.connection(&seller.id()).is_none());

    let offer = api(&seller)
        .post_offer(OfferRequest {
            bytes: 4 << 20,
            price_per_gib: 5,
            max_rate: None,
            ttl_s: Some(600),
        })
        .await
        .unwrap();
    let offer_id = OrderId(offer.order_id.0);
    for node in [&seller, &relay, &buyer] {
        wait_for("the offer in every book", || resting(node, offer_id)).await;
    }

    wait_for("the buyer to learn the seller's address by gossip", || {
        buyer.shared().gossip.peer_addrs(&seller.id()).is_some()
    })
    .await;
    assert!(buyer.shared().peers.connection(&seller.id()).is_none());
    let bid = api(&buyer)
        .post_bid(BidRequest {
            bytes: 1 << 20,
            max_price_per_gib: 8,
            content_id: None,
            ttl_s: Some(600),
        })
        .await
        .unwrap();
    wait_for("the buyer's trade agreed", || {
        let trades = buyer.shared().market.trades(now_ms());
        trades.len() == 1 && trades[0].trade.state() == TradeState::Agreed
    })
    .await;
    wait_for("the seller's trade agreed", || {
        let trades = seller.shared().market.trades(now_ms());
        trades.len() == 1 && trades[0].trade.state() == TradeState::Agreed
    })
    .await;
    let (ours, theirs) = (
        buyer.shared().market.trades(now_ms()),
        seller.shared().market.trades(now_ms()),
    );
    assert_eq!(ours[0].trade.terms(), theirs[0].trade.terms());
    assert_eq!(ours[0].agreement, theirs[0].agreement);
    let terms = *ours[0].trade.terms();
    assert_eq!(
        (
            terms.offer_id,
            terms.bid_id,
            terms.bytes,
            terms.price_per_gib
        ),
        (offer_id, OrderId(bid.order_id.0), 1 << 20, 5),
        "the resting offer's price, for the bid's bytes"
    );
    wait_for("the buyer connected to the seller it dialed", || {
        buyer.shared().peers.connection(&seller.id()).is_some()
    })
    .await;
    // The API shows it on both sides, and the offer's bytes left.
    let trades = api(&seller).trades().await.unwrap();
    assert_eq!(
        (trades[0].role.as_str(), trades[0].state.as_str()),
        ("seller", "agreed")
    );
    let market = api(&seller).market().await.unwrap();
    assert_eq!(market.mine[0].remaining, 3 << 20);

    // The rest of the offer is cancelled: it leaves every book.
    api(&seller).cancel_order(offer.order_id).await.unwrap();
    for node in [&seller, &relay, &buyer] {
        wait_for("the offer gone from every book", || {
            !resting(node, offer_id)
        })
        .await;
    }
    let again = api(&seller).cancel_order(offer.order_id).await.unwrap_err();
    assert_eq!(again.status().as_u16(), 404);

    // Someone else's order cannot be cancelled here: 409.
    let other = api(&relay)
        .post_offer(OfferRequest {
            bytes: 1000,
            price_per_gib: 50,
            max_rate: Some(10),
            ttl_s: None,
        })
        .await
        .unwrap();
    wait_for("the relay's offer at the seller", || {
        resting(&seller, OrderId(other.order_id.0))
    })
    .await;
    let theirs = api(&seller).cancel_order(other.order_id).await.unwrap_err();
    assert_eq!(theirs.status().as_u16(), 409);

    for node in [buyer, relay, seller] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_orders_are_refused_and_penalised_and_expired_ones_dropped() {
    let victim = node().await;
    let neighbour = node().await;
    victim.connect(&neighbour).await;
    let (endpoint, client) = raw_client("tally").await;
    let conn = endpoint
        .dial(victim.id(), victim.node.quic_addr().unwrap())
        .await
        .unwrap();

    // Signed by someone else than the seller it names.
    let seller = Identity::generate(&mut rand::rng());
    let mut forged = Offer::sign(&seller, &net(), offer_terms(100, now_ms() + 600_000));
    forged.signature = Offer::sign(&client, &net(), forged.terms).signature;
    let answer = ask(&conn, &Request::Orders(vec![OrderMessage::Offer(forged)])).await;
    assert!(
        matches!(answer, Response::Refused { reason: RefusalCode::Invalid, ref message } if message.contains("signature")),
        "{answer:?}"
    );
    wait_for("the forger penalised", || {
        victim.shared().peers.penalty(&client.peer_id()) == PENALTY_BAD_ORDER
    })
    .await;
    assert!(!resting(&victim, forged.id(&net())));

    // Made for another network: refused too.
    let foreign = Offer::sign(
        &seller,
        &NetworkId::from_name("elsewhere"),
        offer_terms(100, now_ms() + 600_000),
    );
    let answer = ask(&conn, &Request::Orders(vec![OrderMessage::Offer(foreign)])).await;
    assert!(
        matches!(
            answer,
            Response::Refused {
                reason: RefusalCode::Invalid,
                ..
            }
        ),
        "{answer:?}"
    );
    wait_for("the second penalty", || {
        victim.shared().peers.penalty(&client.peer_id()) == 2 * PENALTY_BAD_ORDER
    })
    .await;

    // Expired: taken without a word, stored nowhere, no penalty.
    let expired = Offer::sign(&seller, &net(), offer_terms(100, now_ms() - 1_000));
    let answer = ask(&conn, &Request::Orders(vec![OrderMessage::Offer(expired)])).await;
    assert_eq!(answer, Response::Received);
    assert!(!resting(&victim, expired.id(&net())));
    assert_eq!(
        victim.shared().peers.penalty(&client.peer_id()),
        2 * PENALTY_BAD_ORDER
    );

    // A valid order from a raw peer is taken and relayed on.
    let valid = Offer::sign(&seller, &net(), offer_terms(100, now_ms() + 600_000));
    let answer = ask(&conn, &Request::Orders(vec![OrderMessage::Offer(valid)])).await;
    assert_eq!(answer, Response::Received);
    wait_for("the valid order relayed to the neighbour", || {
        resting(&neighbour, valid.id(&net()))
    })
    .await;

    // More than a message may carry: refused, and the third penalty.
    let many = vec![OrderMessage::Offer(valid); MAX_ORDERS_PER_MESSAGE + 1];
    let answer = ask(&conn, &Request::Orders(many)).await;
    assert!(
        matches!(
            answer,
            Response::Refused {
                reason: RefusalCode::Invalid,
                ..
            }
        ),
        "{answer:?}"
    );
    wait_for("the third penalty", || {
        victim.shared().peers.penalty(&client.peer_id()) == 3 * PENALTY_BAD_ORDER
    })
    .await;

    endpoint.close(tally_node::transport::ErrorCode::Normal, "done");
    neighbour.stop().await;
    victim.stop().await;
}

fn market_config(c: &mut tally_node::config::Config) {
    c.node.gossip_interval = Duration::from_millis(200);
    c.node.target_peers = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_that_restarts_keeps_its_trade_and_accepts_the_buyers_priced_receipts() {
    let seller = node().await;
    let buyer = node().await;
    buyer.connect(&seller).await;
    let offer = api(&seller)
        .post_offer(OfferRequest {
            bytes: 8 << 20,
            price_per_gib: 5,
            max_rate: None,
            ttl_s: Some(600),
        })
        .await
        .unwrap();
    wait_for("the offer in the buyer's book", || {
        resting(&buyer, OrderId(offer.order_id.0))
    })
    .await;
    api(&buyer)
        .post_bid(BidRequest {
            bytes: 4 << 20,
            max_price_per_gib: 8,
            content_id: None,
            ttl_s: Some(600),
        })
        .await
        .unwrap();
    let agreed = |node: &TestNode| {
        let trades = node.shared().market.trades(now_ms());
        trades.len() == 1 && trades[0].trade.state() == TradeState::Agreed
    };
    wait_for("the trade agreed on both sides", || {
        agreed(&buyer) && agreed(&seller)
    })
    .await;
    let before = seller.shared().market.trades(now_ms())[0].clone();

    // The seller stops and starts again: the trade is still there, as agreed.
    let (dir, secret) = seller.stop().await;
    let seller = TestNode::start_in(dir, secret, Behaviour::default(), market_config).await;
    let after = seller.shared().market.trades(now_ms());
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].id, after[0].role, after[0].agreement),
        (before.id, before.role, before.agreement)
    );
    assert_eq!(after[0].trade.state(), TradeState::Agreed);

    // The buyer fetches from it: its receipts carry the trade's price, and the seller signs
    // them (it would refuse them as too few credits had it forgotten the trade).
    buyer.connect(&seller).await;
    // Past the first SETTLE_MARGIN bytes, which the buyer pays at par.
    let bytes = common::payload(8 << 20, 9);
    let content = seller.share(&bytes);
    let status =
        tally_node::daemon::fetch::start(buyer.shared(), content, buyer.out("t.bin")).unwrap();
    assert_eq!(
        common::finished(&status).await,
        tally_node::daemon::fetch::Phase::Complete
    );
    wait_for("a receipt covering the file", || {
        buyer
            .latest(seller.id(), buyer.id())
            .is_some_and(|r| r.bytes == bytes.len() as u64)
    })
    .await;
    let receipt = buyer.latest(seller.id(), buyer.id()).unwrap();
    assert!(
        receipt.credits < receipt.bytes,
        "priced at the trade's 5 credits per GiB: {receipt:?}"
    );
    assert_eq!(seller.latest(seller.id(), buyer.id()), Some(receipt));
    for node in [buyer, seller] {
        node.stop().await;
    }
}
