use proptest::prelude::*;

use super::*;

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn body(seq: u64, bytes: u64, credits: u64) -> ReceiptBody {
    ReceiptBody {
        uploader: identity(1).peer_id(),
        downloader: identity(2).peer_id(),
        seq,
        bytes,
        credits,
        time_ms: 1_700_000_000_000,
    }
}

fn signed(body: ReceiptBody) -> Receipt {
    body.propose(&identity(2), &net())
        .countersign(&identity(1), &net())
}

#[test]
fn signed_bytes_are_prefix_network_and_postcard_body() {
    let b = body(300, 1, u64::MAX);
    let bytes = b.signed_bytes(&net());
    let mut expected = b"tally/receipt/v1".to_vec();
    expected.extend_from_slice(net().as_bytes());
    expected.extend_from_slice(b.uploader.as_bytes());
    expected.extend_from_slice(b.downloader.as_bytes());
    expected.extend_from_slice(&[0xac, 0x02]); // 300 as a varint
    expected.push(1);
    expected.extend_from_slice(&[0xff; 9]);
    expected.push(0x01); // u64::MAX takes ten varint bytes
    expected.extend_from_slice(&[0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]); // time_ms
    assert_eq!(bytes.as_slice(), expected.as_slice());
    assert_eq!(
        &bytes.as_slice()[48..],
        postcard::to_stdvec(&b).unwrap().as_slice()
    );
}

#[test]
fn largest_body_fits_the_signed_bytes_buffer() {
    let b = ReceiptBody {
        seq: u64::MAX,
        bytes: u64::MAX,
        credits: u64::MAX,
        time_ms: u64::MAX,
        ..body(1, 1, 1)
    };
    assert_eq!(b.signed_bytes(&net()).as_slice().len(), MAX_SIGNED_BYTES);
    signed(b).verify(&net()).unwrap();
}

#[test]
fn a_fully_signed_receipt_verifies() {
    let receipt = signed(body(1, 10, 10));
    assert_eq!(*receipt.verify(&net()).unwrap(), receipt);
}

#[test]
fn a_proposal_is_not_a_receipt() {
    let proposal = body(1, 10, 10).propose(&identity(2), &net());
    proposal.verify(&net()).unwrap();
    let half = Receipt::from_parts(proposal.body, proposal.sig_downloader, Signature::UNSIGNED);
    assert_eq!(
        half.verify(&net()),
        Err(VerifyError::MissingSignature { role: "uploader" })
    );
}

#[test]
fn missing_downloader_signature_is_named() {
    let mut receipt = signed(body(1, 10, 10));
    receipt.sig_downloader = Signature::UNSIGNED;
    assert_eq!(
        receipt.verify(&net()),
        Err(VerifyError::MissingSignature { role: "downloader" })
    );
}

#[test]
fn wrong_network_fails() {
    let receipt = signed(body(1, 10, 10));
    let err = receipt
        .verify(&NetworkId::from_name("tally-testnet"))
        .unwrap_err();
    assert_eq!(err, VerifyError::BadSignature { role: "downloader" });
    assert!(err.to_string().contains("another network"));
}

#[test]
fn seq_zero_fails_even_when_signed() {
    let receipt = signed(body(0, 10, 10));
    assert_eq!(receipt.verify(&net()), Err(VerifyError::ZeroSeq));
}

#[test]
fn a_receipt_with_oneself_fails() {
    let mut b = body(1, 10, 10);
    b.downloader = b.uploader;
    let receipt = b
        .propose(&identity(1), &net())
        .countersign(&identity(1), &net());
    assert_eq!(receipt.verify(&net()), Err(VerifyError::SelfReceipt));
}

#[test]
fn a_key_that_is_not_a_point_fails() {
    let mut receipt = signed(body(1, 10, 10));
    // The first small y whose encoding is not a curve point.
    let bad = (2u8..)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
        .unwrap();
    receipt.uploader = PeerId(bad);
    assert!(matches!(
        receipt.verify(&net()),
        Err(VerifyError::BadKey {
            role: "uploader",
            ..
        })
    ));
}

#[test]
fn a_small_order_key_fails() {
    let mut receipt = signed(body(1, 10, 10));
    // The identity point (y = 1) has order 1.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    receipt.downloader = PeerId(weak);
    assert!(matches!(
        receipt.verify(&net()),
        Err(VerifyError::BadKey {
            role: "downloader",
            ..
        })
    ));
}

#[test]
fn json_has_exactly_the_export_keys() {
    let receipt = signed(body(2, 1 << 63, 5));
    let value = serde_json::to_value(receipt).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "bytes",
            "credits",
            "downloader",
            "seq",
            "sig_downloader",
            "sig_uploader",
            "time_ms",
            "uploader"
        ]
    );
    assert_eq!(value["bytes"], serde_json::json!(1u64 << 63));
    assert_eq!(
        value["uploader"],
        serde_json::json!(receipt.uploader.to_string())
    );
    let sig = value["sig_uploader"].as_str().unwrap();
    assert_eq!(sig.len(), 128);
    assert!(
        sig.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    let back: Receipt = serde_json::from_value(value).unwrap();
    assert_eq!(back, receipt);
}

#[test]
fn json_with_an_unknown_key_is_refused() {
    let receipt = signed(body(2, 3, 5));
    let mut value = serde_json::to_value(receipt).unwrap();
    value["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<Receipt>(value).is_err());
}

#[test]
fn batch_verify_names_exactly_the_bad_receipts() {
    let mut receipts: Vec<Receipt> = (1..=40).map(|i| signed(body(i, i * 10, i * 10))).collect();
    receipts[3].bytes += 1;
    receipts[17].sig_uploader.0[5] ^= 1;
    receipts[30].sig_downloader = Signature::UNSIGNED;
    receipts[31].seq = 0;
    let verdict = verify_batch(&receipts, &net());
    let rejected: Vec<usize> = verdict.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, [3, 17, 30, 31]);
    assert_eq!(verdict.verified.len(), 36);
    assert!(verdict.verified.iter().all(|r| r.verify(&net()).is_ok()));
    assert_eq!(
        verdict.rejected[2].1,
        VerifyError::MissingSignature { role: "downloader" }
    );
}

#[test]
fn batch_verify_of_good_receipts_keeps_input_order() {
    let receipts: Vec<Receipt> = (1..=64).map(|i| signed(body(i, i, i))).collect();
    let verdict = verify_batch(&receipts, &net());
    assert!(verdict.rejected.is_empty());
    let seqs: Vec<u64> = verdict.verified.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=64).collect::<Vec<_>>());
    assert!(
        verify_batch(&receipts, &NetworkId::from_name("x"))
            .verified
            .is_empty()
    );
}

#[test]
fn order_follows_the_monotonic_rules() {
    let held = body(5, 100, 100);
    assert_eq!(held.order(&held), Order::Same);
    assert_eq!(held.order(&body(6, 100, 100)), Order::Newer);
    assert_eq!(held.order(&body(6, 150, 100)), Order::Newer);
    assert_eq!(held.order(&body(4, 90, 100)), Order::Older);
    assert_eq!(held.order(&body(5, 101, 100)), Order::Conflict);
    assert_eq!(
        held.order(&ReceiptBody { time_ms: 1, ..held }),
        Order::Conflict
    );
    assert_eq!(held.order(&body(6, 99, 100)), Order::Conflict);
    assert_eq!(held.order(&body(6, 100, 99)), Order::Conflict);
    assert_eq!(held.order(&body(4, 101, 100)), Order::Conflict);
}

#[test]
fn conflict_proof_is_canonical_and_verifies() {
    let a = signed(body(3, 30, 30));
    let b = signed(body(3, 31, 31));
    let ab = ConflictProof::new(a, b).unwrap();
    let ba = ConflictProof::new(b, a).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab.id(), ba.id());
    ab.verify(&net()).unwrap();
    assert_eq!(
        ConflictProof::new(a, signed(body(4, 40, 40))),
        Err(NotAConflict::Ordered(Order::Newer))
    );
    let mut other_pair = b;
    other_pair.downloader = identity(9).peer_id();
    assert_eq!(
        ConflictProof::new(a, other_pair),
        Err(NotAConflict::DifferentPairs)
    );
}

#[test]
fn a_forged_conflict_proof_does_not_verify() {
    let a = signed(body(3, 30, 30));
    let mut b = signed(body(3, 31, 31));
    b.sig_uploader = a.sig_uploader;
    let proof = ConflictProof::new(a, b).unwrap();
    assert!(matches!(
        proof.verify(&net()),
        Err(NotAConflict::Invalid(_))
    ));
}

#[test]
fn postcard_round_trips_and_rejects_truncation() {
    let receipt = signed(body(7, 1 << 40, 3));
    let wire = postcard::to_stdvec(&receipt).unwrap();
    assert_eq!(postcard::from_bytes::<Receipt>(&wire).unwrap(), receipt);
    for cut in 0..wire.len() {
        assert!(postcard::from_bytes::<Receipt>(&wire[..cut]).is_err());
    }
}

fn arb_body() -> impl Strategy<Value = ReceiptBody> {
    (1..u64::MAX, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(seq, bytes, credits, time_ms)| ReceiptBody {
            seq,
            bytes,
            credits,
            time_ms,
            ..body(1, 0, 0)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn flipping_any_bit_of_a_receipt_fails_verification(b in arb_body(), bit in 0usize..(8 * (32 + 32 + 8 * 4 + 64 + 64))) {
        let receipt = signed(b);
        // Flip one bit of the receipt's fields, seen as one long bit string.
        let mut raw = Vec::new();
        raw.extend_from_slice(receipt.uploader.as_bytes());
        raw.extend_from_slice(receipt.downloader.as_bytes());
        for n in [receipt.seq, receipt.bytes, receipt.credits, receipt.time_ms] {
            raw.extend_from_slice(&n.to_le_bytes());
        }
        raw.extend_from_slice(receipt.sig_downloader.as_bytes());
        raw.extend_from_slice(receipt.sig_uploader.as_bytes());
        raw[bit / 8] ^= 1 << (bit % 8);
        let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        let flipped = Receipt {
            uploader: PeerId(raw[0..32].try_into().unwrap()),
            downloader: PeerId(raw[32..64].try_into().unwrap()),
            seq: u64_at(64),
            bytes: u64_at(72),
            credits: u64_at(80),
            time_ms: u64_at(88),
            sig_downloader: Signature(raw[96..160].try_into().unwrap()),
            sig_uploader: Signature(raw[160..224].try_into().unwrap()),
        };
        prop_assert!(flipped.verify(&net()).is_err());
        prop_assert!(verify_batch(&[flipped], &net()).verified.is_empty());
    }

    #[test]
    fn flipping_any_bit_of_the_signed_bytes_breaks_both_signatures(b in arb_body(), bit in 0usize..(8 * MAX_SIGNED_BYTES)) {
        let receipt = signed(b);
        let signed_bytes = b.signed_bytes(&net());
        let mut message = signed_bytes.as_slice().to_vec();
        let bit = bit % (8 * message.len());
        message[bit / 8] ^= 1 << (bit % 8);
        for (key, sig) in [(receipt.downloader, receipt.sig_downloader), (receipt.uploader, receipt.sig_uploader)] {
            let key = key.verifying_key().unwrap();
            let sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
            prop_assert!(key.verify_strict(&message, &sig).is_err());
            prop_assert!(key.verify_strict(signed_bytes.as_slice(), &sig).is_ok());
        }
    }

    #[test]
    fn every_unordered_pair_of_valid_receipts_is_a_conflict(a in arb_body(), b in arb_body()) {
        let (ra, rb) = (signed(a), signed(b));
        let ordered = a == b
            || (a.seq < b.seq && a.bytes <= b.bytes && a.credits <= b.credits)
            || (b.seq < a.seq && b.bytes <= a.bytes && b.credits <= a.credits);
        let proof = ConflictProof::new(ra, rb);
        prop_assert_eq!(proof.is_ok(), !ordered);
        if let Ok(proof) = proof {
            prop_assert!(proof.verify(&net()).is_ok());
        }
    }
}
