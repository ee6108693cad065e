//! Orders and trade agreements. Mode 0: postcard bytes of orders, a trade proposal or an
//! agreement as peers send them, verified and applied to a real `Market` (`learn`,
//! `answer_proposal`, `agreed`). Mode 1: a seller's and a buyer's `Market` driven through
//! arbitrary, really signed orders and cancellations (of four identities), the trade handshake
//! between them, deliveries, receipts and deadlines, so the book and trade arithmetic sees
//! extreme terms and clocks.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tally_fuzz::{NOW_MS, assert_postcard_round_trip, identity, identity_arc, network, seeds};
use tally_ledger::Identity;
use tally_market::{
    Agreement, Bid, BidTerms, BookConfig, Cancel, Offer, OfferTerms, OrderId, Party, TradeProposal,
};
use tally_node::daemon::pairs::Window;
use tally_node::market::Market;
use tally_node::wire::OrderMessage;

fn me(index: u8) -> Arc<Identity> {
    static IDS: OnceLock<[Arc<Identity>; 2]> = OnceLock::new();
    IDS.get_or_init(|| [identity_arc(0), identity_arc(1)])[usize::from(index % 2)].clone()
}

fn small_book() -> BookConfig {
    BookConfig {
        max_orders: 32,
        max_per_owner: 8,
        max_remembered: 64,
    }
}

fn postcard_mode(bytes: &[u8]) {
    let network = network();
    let market = Market::new(me(0), network, small_book());
    if let Ok(messages) = postcard::from_bytes::<Vec<OrderMessage>>(bytes) {
        assert_postcard_round_trip(&messages);
        for message in messages {
            let _ = market.learn(message, NOW_MS);
        }
    }
    if let Ok(proposal) = postcard::from_bytes::<TradeProposal>(bytes) {
        assert_postcard_round_trip(&proposal);
        if let Ok(agreement) = market.answer_proposal(proposal, proposal.terms.buyer, NOW_MS) {
            assert!(agreement.verify(&network).is_ok());
        }
    }
    if let Ok(agreement) = postcard::from_bytes::<Agreement>(bytes) {
        assert_postcard_round_trip(&agreement);
        let id = tally_node::market::trade_id(&agreement.terms, &network);
        let _ = market.agreed(id, agreement, NOW_MS);
    }
    let _ = market.view(NOW_MS);
}

/// Dates near `now`, or anywhere.
fn date(u: &mut Unstructured<'_>, now: u64) -> Result<u64> {
    Ok(if u.arbitrary()? {
        now.wrapping_add(u64::from(u.arbitrary::<u32>()?))
            .wrapping_sub(1 << 31)
    } else {
        u.arbitrary()?
    })
}

fn amount(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary::<u64>()?,
        1 => u64::from(u.arbitrary::<u32>()?),
        2 => u64::from(u.arbitrary::<u8>()?) << 20,
        _ => u64::MAX - u64::from(u.arbitrary::<u8>()?),
    })
}

fn ops_mode(u: &mut Unstructured<'_>) -> Result<()> {
    let network = network();
    let seller = Market::new(me(0), network, small_book());
    let buyer = Market::new(me(1), network, small_book());
    let markets = [&seller, &buyer];
    let mut now = NOW_MS;
    let mut ids: Vec<(u8, OrderId)> = Vec::new();
    let mut proposals: Vec<([u8; 32], TradeProposal)> = Vec::new();
    for _ in 0..u.int_in_range(0..=32)? {
        match u.int_in_range(0..=7)? {
            0 | 1 => {
                let owner: u8 = u.int_in_range(0..=3)?;
                let issued_ms = date(u, now)?;
                let expires_ms = if u.arbitrary()? {
                    issued_ms.saturating_add(amount(u)?)
                } else {
                    date(u, now)?
                };
                let message = if u.arbitrary()? {
                    let terms = OfferTerms {
                        bytes: amount(u)?,
                        max_rate: amount(u)?,
                        price_per_gib: amount(u)?,
                        issued_ms,
                        expires_ms,
                        nonce: u.arbitrary()?,
                    };
                    let offer = Offer::sign(identity(owner), &network, terms);
                    ids.push((owner, offer.id(&network)));
                    OrderMessage::Offer(offer)
                } else {
                    let terms = BidTerms {
                        bytes: amount(u)?,
                        content: if u.arbitrary()? {
                            Some(u.arbitrary()?)
                        } else {
                            None
                        },
                        max_price_per_gib: amount(u)?,
                        issued_ms,
                        expires_ms,
                        nonce: u.arbitrary()?,
                    };
                    let bid = Bid::sign(identity(owner), &network, terms);
                    ids.push((owner, bid.id(&network)));
                    OrderMessage::Bid(bid)
                };
                for (index, market) in markets.iter().enumerate() {
                    let learned = if usize::from(owner) == index {
                        market.post(message, now).map(|(_, learned)| learned)
                    } else {
                        market.learn(message, now)
                    };
                    if let (1, Ok(learned)) = (index, learned) {
                        proposals.extend(learned.proposals);
                    }
                }
            }
            2 => {
                if ids.is_empty() {
                    continue;
                }
                let (owner, id) = ids[u.choose_index(ids.len())?];
                let by = if u.arbitrary()? {
                    owner
                } else {
                    u.int_in_range(0..=3)?
                };
                let cancel = Cancel::sign(identity(by), &network, id, date(u, now)?);
                for market in markets {
                    let _ = market.learn(OrderMessage::Cancel(cancel), now);
                }
                if by < 2 {
                    let _ = markets[usize::from(by)].cancel_mine(id, now);
                }
            }
            3 => {
                // The buyer's proposals reach the seller; its agreements come back.
                for (id, proposal) in std::mem::take(&mut proposals) {
                    if proposal.terms.seller != seller_id() {
                        let _ = buyer.failed(id, "not this seller".into(), now);
                        continue;
                    }
                    match seller.answer_proposal(proposal, proposal.terms.buyer, now) {
                        Ok(agreement) => {
                            assert!(agreement.verify(&network).is_ok());
                            let _ = buyer.agreed(id, agreement, now);
                        }
                        Err(why) => {
                            proposals.extend(buyer.failed(id, why.to_string(), now));
                        }
                    }
                }
            }
            4 => {
                let len = amount(u)?;
                let window = amount(u)?;
                let _ = seller
                    .seller_send(&buyer_id(), len, window, now, |_| Ok::<_, ()>(Window::Open));
                let _ = buyer.buyer_credits(&seller_id(), len, now);
            }
            5 => {
                let unacknowledged = amount(u)?;
                seller.acknowledged(&buyer_id(), Party::Seller, unacknowledged, now);
                buyer.acknowledged(&seller_id(), Party::Buyer, unacknowledged, now);
            }
            6 => {
                let _ = seller.tick(now);
                proposals.extend(buyer.tick(now).proposals);
            }
            _ => {
                now = now.saturating_add(u64::from(u.arbitrary::<u32>()?));
                let _ = seller.view(now);
                let _ = buyer.trades(now);
                let _ = seller.live_orders(now);
            }
        }
    }
    Ok(())
}

fn seller_id() -> tally_ledger::PeerId {
    identity(0).peer_id()
}

fn buyer_id() -> tally_ledger::PeerId {
    identity(1).peer_id()
}

fuzz_target!(init: seeds::install(seeds::market), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        postcard_mode(rest);
    } else {
        let _ = ops_mode(&mut Unstructured::new(rest));
    }
});
