#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::order::GIB;

const NOW: u64 = 1_800_000_000_000;
const SILENCE: u64 = 30_000;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn seller() -> Identity {
    Identity::from_secret_bytes([1; 32])
}

fn buyer() -> Identity {
    Identity::from_secret_bytes([2; 32])
}

/// 4 GiB at 10 credits per GiB, due in an hour.
fn terms() -> TradeTerms {
    TradeTerms {
        offer_id: OrderId([1; 32]),
        bid_id: OrderId([2; 32]),
        seller: seller().peer_id(),
        buyer: buyer().peer_id(),
        bytes: 4 * GIB,
        price_per_gib: 10,
        expires_ms: NOW + 3_600_000,
    }
}

fn agreement(terms: TradeTerms) -> VerifiedAgreement {
    terms
        .propose(&buyer(), &net())
        .countersign(&seller(), &net())
        .verify(&net())
        .unwrap()
}

fn agreed() -> Trade {
    let mut trade = Trade::propose(terms(), NOW, SILENCE);
    trade.agree(&agreement(terms()), NOW).unwrap();
    trade
}

#[test]
fn an_agreement_needs_both_signatures() {
    let proposal = terms().propose(&buyer(), &net());
    proposal.verify(&net()).unwrap();
    let agreement = proposal.countersign(&seller(), &net());
    agreement.verify(&net()).unwrap();

    let unsigned_seller = Agreement {
        sig_seller: Signature::UNSIGNED,
        ..agreement
    };
    assert_eq!(
        unsigned_seller.verify(&net()),
        Err(OrderError::MissingSignature { role: "seller" })
    );
    let unsigned_buyer = Agreement {
        sig_buyer: Signature::UNSIGNED,
        ..agreement
    };
    assert_eq!(
        unsigned_buyer.verify(&net()),
        Err(OrderError::MissingSignature { role: "buyer" })
    );
    // The seller signing twice is not the buyer's consent.
    let seller_twice = Agreement {
        sig_buyer: agreement.sig_seller,
        ..agreement
    };
    assert!(matches!(
        seller_twice.verify(&net()),
        Err(OrderError::BadSignature { role: "buyer", .. })
    ));
    // Countersigned by someone other than the seller named.
    let stranger = proposal.countersign(&Identity::from_secret_bytes([3; 32]), &net());
    assert!(matches!(
        stranger.verify(&net()),
        Err(OrderError::BadSignature { role: "seller", .. })
    ));
    // Altered terms or another network.
    let mut altered = agreement;
    altered.terms.price_per_gib = 9;
    assert!(altered.verify(&net()).is_err());
    assert!(agreement.verify(&NetworkId::from_name("other")).is_err());
}

#[test]
fn a_trade_with_oneself_or_of_zero_bytes_is_malformed() {
    let with_self = TradeTerms {
        buyer: seller().peer_id(),
        ..terms()
    };
    let signed = with_self
        .propose(&seller(), &net())
        .countersign(&seller(), &net());
    assert!(matches!(
        signed.verify(&net()),
        Err(OrderError::Malformed(_))
    ));
    let empty = TradeTerms {
        bytes: 0,
        ..terms()
    };
    assert!(matches!(
        empty.propose(&buyer(), &net()).verify(&net()),
        Err(OrderError::Malformed(_))
    ));
}

#[test]
fn a_trade_runs_proposed_agreed_delivering_settled() {
    let mut trade = Trade::propose(terms(), NOW, SILENCE);
    assert_eq!(trade.state(), TradeState::Proposed);
    assert_eq!(trade.deliverable(u64::MAX), 0);
    assert!(matches!(
        trade.deliver(1, u64::MAX, NOW),
        Err(TradeError::WrongState { .. })
    ));
    trade.agree(&agreement(terms()), NOW + 1).unwrap();
    assert_eq!(trade.state(), TradeState::Agreed);
    trade.deliver(2 * GIB, u64::MAX, NOW + 2).unwrap();
    assert_eq!(trade.state(), TradeState::Delivering);
    assert_eq!(trade.owed(), 20);
    trade.settle(20, NOW + 3).unwrap();
    trade.deliver(2 * GIB, u64::MAX, NOW + 4).unwrap();
    assert_eq!(trade.state(), TradeState::Delivering);
    trade.settle(20, NOW + 5).unwrap();
    assert_eq!(trade.state(), TradeState::Settled);
    assert!(trade.state().is_final());
    assert_eq!(trade.settled_credits(), trade.terms().value());
    assert!(matches!(
        trade.deliver(1, u64::MAX, NOW + 6),
        Err(TradeError::WrongState { .. })
    ));
}

#[test]
fn an_agreement_for_other_terms_is_refused() {
    let mut trade = Trade::propose(terms(), NOW, SILENCE);
    let other = TradeTerms {
        bytes: GIB,
        ..terms()
    };
    assert_eq!(
        trade.agree(&agreement(other), NOW),
        Err(TradeError::TermsMismatch)
    );
    assert_eq!(trade.state(), TradeState::Proposed);
}

#[test]
fn the_credit_window_bounds_what_the_buyer_may_owe() {
    let mut trade = agreed();
    // A window of 5 credits at 10 per GiB: up to just under 0.6 GiB before settling (owed is
    // rounded down, so 6 credits are reached only at 0.6 GiB).
    let window = 5;
    let allowed = trade.deliverable(window);
    assert_eq!(allowed, (6 * GIB).div_ceil(10) - 1);
    assert_eq!(credits_for(allowed, 10), 5);
    assert_eq!(credits_for(allowed + 1, 10), 6);
    assert_eq!(
        trade.deliver(allowed + 1, window, NOW + 1),
        Err(TradeError::OverCreditWindow {
            bytes: allowed + 1,
            allowed
        })
    );
    trade.deliver(allowed, window, NOW + 1).unwrap();
    assert_eq!(trade.owed(), 5);
    assert_eq!(trade.deliverable(window), 0);
    assert!(matches!(
        trade.deliver(1, window, NOW + 2),
        Err(TradeError::OverCreditWindow { allowed: 0, .. })
    ));
    // Settling reopens the window.
    assert_eq!(
        trade.settle(6, NOW + 2),
        Err(TradeError::Overpaid {
            credits: 6,
            owed: 5
        })
    );
    trade.settle(5, NOW + 2).unwrap();
    assert!(trade.deliverable(window) > 0);
    // Never beyond the terms, whatever the window.
    assert_eq!(trade.deliverable(u64::MAX), trade.remaining_bytes());
    assert!(matches!(
        trade.deliver(trade.remaining_bytes() + 1, u64::MAX, NOW + 3),
        Err(TradeError::OverDelivery { .. })
    ));
}

#[test]
fn a_free_trade_is_bounded_only_by_its_bytes_and_a_zero_window_by_rounding() {
    let free = TradeTerms {
        price_per_gib: 0,
        ..terms()
    };
    let mut trade = Trade::propose(free, NOW, SILENCE);
    trade.agree(&agreement(free), NOW).unwrap();
    assert_eq!(trade.deliverable(0), 4 * GIB);
    trade.deliver(4 * GIB, 0, NOW).unwrap();
    assert_eq!(trade.state(), TradeState::Settled);

    // At 10 credits per GiB a zero window still allows what rounds down to 0 credits.
    let trade = agreed();
    assert_eq!(trade.deliverable(0), GIB.div_ceil(10) - 1);
}

#[test]
fn huge_amounts_neither_overflow_nor_panic() {
    let huge = TradeTerms {
        bytes: u64::MAX,
        price_per_gib: u64::MAX,
        ..terms()
    };
    let mut trade = Trade::propose(huge, NOW, SILENCE);
    trade.agree(&agreement(huge), NOW).unwrap();
    // Each byte costs about 2^34 credits: a window of u64::MAX credits covers one GiB.
    assert_eq!(trade.deliverable(u64::MAX), GIB);
    trade.deliver(GIB, u64::MAX, NOW).unwrap();
    assert_eq!(trade.owed(), u64::MAX);
    assert_eq!(trade.deliverable(u64::MAX), 0);
    trade.settle(u64::MAX, NOW).unwrap();
    assert_eq!(trade.deliverable(u64::MAX), GIB);
}

#[test]
fn a_proposal_not_countersigned_in_time_expires() {
    let mut trade = Trade::propose(terms(), NOW, SILENCE);
    assert_eq!(trade.tick(NOW + SILENCE - 1), TradeState::Proposed);
    assert_eq!(trade.tick(NOW + SILENCE), TradeState::Expired);
    assert!(matches!(
        trade.agree(&agreement(terms()), NOW + SILENCE),
        Err(TradeError::WrongState { .. })
    ));
}

#[test]
fn a_seller_silent_after_agreeing_defaults_and_nothing_delivered_by_the_deadline_expires() {
    let mut trade = agreed();
    assert_eq!(
        trade.tick(NOW + SILENCE),
        TradeState::Defaulted(Party::Seller)
    );

    let quick = TradeTerms {
        expires_ms: NOW + 1_000,
        ..terms()
    };
    let mut trade = Trade::propose(quick, NOW, SILENCE);
    trade.agree(&agreement(quick), NOW).unwrap();
    assert_eq!(trade.tick(NOW + 1_000), TradeState::Expired);
}

#[test]
fn a_buyer_silent_while_owing_defaults() {
    let mut trade = agreed();
    trade.deliver(GIB, 100, NOW + 1).unwrap();
    assert_eq!(trade.tick(NOW + SILENCE), TradeState::Delivering);
    assert_eq!(
        trade.tick(NOW + 1 + SILENCE),
        TradeState::Defaulted(Party::Buyer)
    );
    assert!(matches!(
        trade.settle(10, NOW + 2 + SILENCE),
        Err(TradeError::WrongState { .. })
    ));
}

#[test]
fn a_seller_silent_with_nothing_owed_defaults() {
    let mut trade = agreed();
    trade.deliver(GIB, 100, NOW + 1).unwrap();
    trade.settle(10, NOW + 2).unwrap();
    assert_eq!(
        trade.tick(NOW + 2 + SILENCE),
        TradeState::Defaulted(Party::Seller)
    );
}

#[test]
fn at_the_deadline_a_paid_partial_delivery_settles_and_delivery_stops() {
    let quick = TradeTerms {
        expires_ms: NOW + 10_000,
        ..terms()
    };
    let mut trade = Trade::propose(quick, NOW, SILENCE);
    trade.agree(&agreement(quick), NOW).unwrap();
    trade.deliver(GIB, 100, NOW + 1).unwrap();
    assert_eq!(
        trade.deliver(1, 100, NOW + 10_000),
        Err(TradeError::PastDeadline {
            expires_ms: NOW + 10_000,
            now_ms: NOW + 10_000
        })
    );
    // Owing, it stays open for settlement until the silence timeout.
    assert_eq!(trade.tick(NOW + 10_000), TradeState::Delivering);
    trade.settle(10, NOW + 10_001).unwrap();
    assert_eq!(trade.tick(NOW + 10_002), TradeState::Settled);
    assert_eq!(trade.delivered_bytes(), GIB);
}

#[test]
fn a_trade_can_be_cancelled_only_before_delivery() {
    let mut trade = Trade::propose(terms(), NOW, SILENCE);
    trade.cancel(NOW).unwrap();
    assert_eq!(trade.state(), TradeState::Cancelled);

    let mut trade = agreed();
    trade.cancel(NOW).unwrap();
    assert_eq!(trade.state(), TradeState::Cancelled);

    let mut trade = agreed();
    trade.deliver(1, 100, NOW).unwrap();
    assert!(matches!(
        trade.cancel(NOW),
        Err(TradeError::WrongState {
            state: TradeState::Delivering,
            ..
        })
    ));
}

#[test]
fn terms_from_a_fill_name_its_orders_parties_and_price() {
    let fill = Fill {
        offer_id: OrderId([1; 32]),
        bid_id: OrderId([2; 32]),
        seller: seller().peer_id(),
        buyer: buyer().peer_id(),
        bytes: 4 * GIB,
        price_per_gib: 10,
        content: None,
    };
    assert_eq!(TradeTerms::from_fill(&fill, NOW + 3_600_000), terms());
    assert_eq!(terms().value(), 40);
}
