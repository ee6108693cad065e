#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn who(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

fn offer_terms() -> OfferTerms {
    OfferTerms {
        bytes: 10 * GIB,
        max_rate: 1 << 20,
        price_per_gib: 40,
        issued_ms: NOW,
        expires_ms: NOW + 60_000,
        nonce: 1,
    }
}

fn bid_terms() -> BidTerms {
    BidTerms {
        bytes: GIB,
        content: Some([7; 32]),
        max_price_per_gib: 50,
        issued_ms: NOW,
        expires_ms: NOW + 60_000,
        nonce: 1,
    }
}

#[test]
fn an_offer_verifies_and_any_tampered_field_fails() {
    let offer = Offer::sign(&who(1), &net(), offer_terms());
    let verified = offer.verify(&net(), NOW).unwrap();
    assert_eq!(verified.id(), offer.id(&net()));
    assert_eq!(verified.offer(), &offer);

    let tampered = [
        OfferTerms {
            bytes: offer.terms.bytes + 1,
            ..offer.terms
        },
        OfferTerms {
            max_rate: offer.terms.max_rate + 1,
            ..offer.terms
        },
        OfferTerms {
            price_per_gib: offer.terms.price_per_gib - 1,
            ..offer.terms
        },
        OfferTerms {
            issued_ms: offer.terms.issued_ms - 1,
            ..offer.terms
        },
        OfferTerms {
            expires_ms: offer.terms.expires_ms + 1,
            ..offer.terms
        },
        OfferTerms {
            nonce: 2,
            ..offer.terms
        },
    ];
    for terms in tampered {
        let forged = Offer { terms, ..offer };
        assert!(
            matches!(
                forged.verify(&net(), NOW),
                Err(OrderError::BadSignature { role: "seller", .. })
            ),
            "{terms:?}"
        );
    }
    // Announcing for someone else.
    let forged = Offer {
        seller: who(2).peer_id(),
        ..offer
    };
    assert!(matches!(
        forged.verify(&net(), NOW),
        Err(OrderError::BadSignature { .. })
    ));
    let unsigned = Offer {
        signature: Signature::UNSIGNED,
        ..offer
    };
    assert_eq!(
        unsigned.verify(&net(), NOW),
        Err(OrderError::MissingSignature { role: "seller" })
    );
}

#[test]
fn a_bid_verifies_and_any_tampered_field_fails() {
    let bid = Bid::sign(&who(1), &net(), bid_terms());
    let verified = bid.verify(&net(), NOW).unwrap();
    assert_eq!(verified.id(), bid.id(&net()));
    let tampered = [
        BidTerms {
            bytes: 2,
            ..bid.terms
        },
        BidTerms {
            content: None,
            ..bid.terms
        },
        BidTerms {
            content: Some([8; 32]),
            ..bid.terms
        },
        BidTerms {
            max_price_per_gib: 51,
            ..bid.terms
        },
        BidTerms {
            nonce: 9,
            ..bid.terms
        },
    ];
    for terms in tampered {
        let forged = Bid { terms, ..bid };
        assert!(
            matches!(
                forged.verify(&net(), NOW),
                Err(OrderError::BadSignature { role: "buyer", .. })
            ),
            "{terms:?}"
        );
    }
}

#[test]
fn an_order_of_another_network_fails_and_has_another_id() {
    let other = NetworkId::from_name("tally-testnet");
    let offer = Offer::sign(&who(1), &net(), offer_terms());
    assert!(matches!(
        offer.verify(&other, NOW),
        Err(OrderError::BadSignature { .. })
    ));
    assert_ne!(offer.id(&net()), offer.id(&other));
    let bid = Bid::sign(&who(1), &net(), bid_terms());
    assert!(matches!(
        bid.verify(&other, NOW),
        Err(OrderError::BadSignature { .. })
    ));
}

#[test]
fn offers_and_bids_of_equal_fields_have_distinct_ids() {
    // The domains differ, so an offer's signature never passes for a bid's.
    let offer = Offer::sign(&who(1), &net(), offer_terms());
    let bid = Bid::sign(&who(1), &net(), bid_terms());
    assert_ne!(offer.id(&net()), bid.id(&net()));
    let again = Offer::sign(
        &who(1),
        &net(),
        OfferTerms {
            nonce: 2,
            ..offer_terms()
        },
    );
    assert_ne!(offer.id(&net()), again.id(&net()));
}

#[test]
fn orders_expire_and_refuse_dates_from_the_future() {
    let offer = Offer::sign(&who(1), &net(), offer_terms());
    offer.verify(&net(), NOW + 59_999).unwrap();
    assert_eq!(
        offer.verify(&net(), NOW + 60_000),
        Err(OrderError::Expired {
            expires_ms: NOW + 60_000,
            now_ms: NOW + 60_000
        })
    );
    // Dated up to the skew ahead is fine; beyond it is not.
    offer.verify(&net(), NOW - MAX_CLOCK_SKEW_MS).unwrap();
    assert_eq!(
        offer.verify(&net(), NOW - MAX_CLOCK_SKEW_MS - 1),
        Err(OrderError::FromTheFuture {
            issued_ms: NOW,
            now_ms: NOW - MAX_CLOCK_SKEW_MS - 1
        })
    );
    let bid = Bid::sign(&who(1), &net(), bid_terms());
    assert!(matches!(
        bid.verify(&net(), NOW + 60_000),
        Err(OrderError::Expired { .. })
    ));
    assert!(matches!(
        bid.verify(&net(), NOW - MAX_CLOCK_SKEW_MS - 1),
        Err(OrderError::FromTheFuture { .. })
    ));
}

#[test]
fn malformed_orders_are_refused() {
    let cases = [
        OfferTerms {
            bytes: 0,
            ..offer_terms()
        },
        OfferTerms {
            max_rate: 0,
            ..offer_terms()
        },
        OfferTerms {
            expires_ms: NOW,
            ..offer_terms()
        },
        OfferTerms {
            expires_ms: NOW + MAX_ORDER_TTL_MS + 1,
            ..offer_terms()
        },
    ];
    for terms in cases {
        let offer = Offer::sign(&who(1), &net(), terms);
        assert!(
            matches!(offer.verify(&net(), NOW), Err(OrderError::Malformed(_))),
            "{terms:?}"
        );
    }
    let longest = Offer::sign(
        &who(1),
        &net(),
        OfferTerms {
            expires_ms: NOW + MAX_ORDER_TTL_MS,
            ..offer_terms()
        },
    );
    longest.verify(&net(), NOW).unwrap();
    let zero_bid = Bid::sign(
        &who(1),
        &net(),
        BidTerms {
            bytes: 0,
            ..bid_terms()
        },
    );
    assert!(matches!(
        zero_bid.verify(&net(), NOW),
        Err(OrderError::Malformed(_))
    ));
}

#[test]
fn price_zero_is_allowed_on_both_sides() {
    let free = Offer::sign(
        &who(1),
        &net(),
        OfferTerms {
            price_per_gib: 0,
            ..offer_terms()
        },
    );
    free.verify(&net(), NOW).unwrap();
    let only_free = Bid::sign(
        &who(2),
        &net(),
        BidTerms {
            max_price_per_gib: 0,
            ..bid_terms()
        },
    );
    only_free.verify(&net(), NOW).unwrap();
}

#[test]
fn cancellations_verify_only_as_signed() {
    let order = Offer::sign(&who(1), &net(), offer_terms()).id(&net());
    let cancel = Cancel::sign(&who(1), &net(), order, NOW);
    let verified = cancel.verify(&net(), NOW).unwrap();
    assert_eq!(verified.cancel(), &cancel);
    let retargeted = Cancel {
        order_id: OrderId([0; 32]),
        ..cancel
    };
    assert!(matches!(
        retargeted.verify(&net(), NOW),
        Err(OrderError::BadSignature { role: "owner", .. })
    ));
    assert!(matches!(
        cancel.verify(&NetworkId::from_name("other"), NOW),
        Err(OrderError::BadSignature { .. })
    ));
    assert!(matches!(
        cancel.verify(&net(), NOW - MAX_CLOCK_SKEW_MS - 1),
        Err(OrderError::FromTheFuture { .. })
    ));
    assert!(matches!(
        cancel.verify(&net(), NOW + MAX_ORDER_TTL_MS + MAX_CLOCK_SKEW_MS),
        Err(OrderError::Expired { .. })
    ));
}

#[test]
fn credits_for_rounds_down_and_never_overflows() {
    assert_eq!(credits_for(GIB, 40), 40);
    assert_eq!(credits_for(GIB - 1, 1), 0);
    assert_eq!(credits_for(GIB / 2, 3), 1);
    assert_eq!(credits_for(u64::MAX, u64::MAX), u64::MAX);
    assert_eq!(credits_for(u64::MAX, 0), 0);
}

#[test]
fn order_ids_display_as_hex() {
    let id = OrderId([0xab; 32]);
    assert_eq!(id.to_string(), "ab".repeat(32));
    assert_eq!(id.fmt_short(), "ab".repeat(5));
    assert_eq!(format!("{id:?}"), format!("OrderId({})", "ab".repeat(32)));
}

fn arb_offer() -> impl Strategy<Value = Offer> {
    (
        any::<[u8; 32]>(),
        any::<[u64; 6]>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(seller, n, s1, s2)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&s1);
            signature[32..].copy_from_slice(&s2);
            Offer {
                seller: PeerId(seller),
                terms: OfferTerms {
                    bytes: n[0],
                    max_rate: n[1],
                    price_per_gib: n[2],
                    issued_ms: n[3],
                    expires_ms: n[4],
                    nonce: n[5],
                },
                signature: Signature(signature),
            }
        })
}

fn arb_bid() -> impl Strategy<Value = Bid> {
    (
        any::<[u8; 32]>(),
        any::<[u64; 5]>(),
        any::<Option<[u8; 32]>>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(buyer, n, content, s)| Bid {
            buyer: PeerId(buyer),
            terms: BidTerms {
                bytes: n[0],
                content,
                max_price_per_gib: n[1],
                issued_ms: n[2],
                expires_ms: n[3],
                nonce: n[4],
            },
            signature: Signature([s, s].concat().try_into().unwrap()),
        })
}

proptest! {
    #[test]
    fn offers_round_trip_through_postcard(offer in arb_offer()) {
        let wire = postcard::to_stdvec(&offer).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Offer>(&wire).unwrap(), offer);
        // Arbitrary fields never panic the verifier.
        let _ = offer.verify(&net(), NOW);
    }

    #[test]
    fn bids_round_trip_through_postcard(bid in arb_bid()) {
        let wire = postcard::to_stdvec(&bid).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Bid>(&wire).unwrap(), bid);
        let _ = bid.verify(&net(), NOW);
    }

    #[test]
    fn cancels_round_trip_through_postcard(owner in any::<[u8; 32]>(), id in any::<[u8; 32]>(), at in any::<u64>()) {
        let cancel = Cancel { owner: PeerId(owner), order_id: OrderId(id), issued_ms: at, signature: Signature([3; 64]) };
        let wire = postcard::to_stdvec(&cancel).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Cancel>(&wire).unwrap(), cancel);
        let _ = cancel.verify(&net(), NOW);
    }

    #[test]
    fn any_flipped_bit_of_a_signed_offer_fails(bit in 0usize..(8 * 200)) {
        let offer = Offer::sign(&who(1), &net(), offer_terms());
        let mut bytes = postcard::to_stdvec(&offer).unwrap();
        let byte = bit / 8 % bytes.len();
        bytes[byte] ^= 1 << (bit % 8);
        if let Ok(flipped) = postcard::from_bytes::<Offer>(&bytes) {
            prop_assert!(flipped == offer || flipped.verify(&net(), NOW).is_err());
        }
    }
}
