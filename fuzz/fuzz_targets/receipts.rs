//! Receipts and proposals from outside. Mode 0: postcard bytes as the wire carries them
//! (`Receipt`, `Proposal`, `ConflictProof`, `LatestReceipts`), verified. Mode 1: JSON receipts
//! as `tally ledger import` reads them. Mode 2: a downloader and an uploader pair
//! (`tally_ledger::pair`) driven through arbitrary sends, proposals, countersignatures and
//! re-syncs with really signed receipts, checking what the pairs promise.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tally_fuzz::{NOW_MS, assert_postcard_round_trip, identity, network, seeds, signed_receipt};
use tally_ledger::{ConflictProof, DownloaderPair, Proposal, Receipt, UploaderPair};
use tally_node::wire::LatestReceipts;

fn postcard_mode(bytes: &[u8]) {
    let network = network();
    if let Ok(receipt) = postcard::from_bytes::<Receipt>(bytes) {
        assert_postcard_round_trip(&receipt);
        if let Ok(verified) = receipt.verify(&network) {
            // What was verified is what re-encodes: the signed bytes come from the fields.
            assert_eq!(
                verified.body().signed_bytes(&network).as_slice(),
                receipt.body().signed_bytes(&network).as_slice()
            );
        }
        let _ = tally_ledger::verify_batch(&[receipt, receipt], &network);
    }
    if let Ok(proposal) = postcard::from_bytes::<Proposal>(bytes) {
        assert_postcard_round_trip(&proposal);
        let _ = proposal.verify(&network);
    }
    if let Ok(proof) = postcard::from_bytes::<ConflictProof>(bytes) {
        assert_postcard_round_trip(&proof);
        let _ = proof.verify(&network);
        let _ = proof.id();
    }
    if let Ok(latest) = postcard::from_bytes::<LatestReceipts>(bytes) {
        assert_postcard_round_trip(&latest);
    }
}

fn json_mode(bytes: &[u8]) {
    if let Ok(receipt) = serde_json::from_slice::<Receipt>(bytes) {
        let text = serde_json::to_string(&receipt).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::from_str::<Receipt>(&text).ok(), Some(receipt));
        let _ = receipt.verify(&network());
    }
}

/// Identity 0 uploads to identity 1.
fn pairs_mode(u: &mut Unstructured<'_>) -> Result<()> {
    let network = network();
    let (up, down) = (identity(0), identity(1));
    let start = if u.arbitrary()? {
        Some(signed_receipt(
            0,
            1,
            u.int_in_range(1..=5)?,
            u.arbitrary()?,
            u.arbitrary()?,
        ))
    } else {
        None
    };
    let mut uploader = UploaderPair::new(network, up.peer_id(), down.peer_id(), start);
    let mut downloader = DownloaderPair::new(network, down.peer_id(), up.peer_id(), start);
    let mut now = NOW_MS;
    // Until a re-sync with an arbitrary receipt, the two sides have counted the same bytes.
    let mut resynced = false;
    for _ in 0..u.int_in_range(0..=24)? {
        now += u64::from(u.arbitrary::<u16>()?);
        match u.int_in_range(0..=5)? {
            0 => {
                let (bytes, credits): (u64, u64) = (u.arbitrary()?, u.arbitrary()?);
                let sent = uploader.record_sent(bytes, credits);
                let received = downloader.record_received(bytes, credits);
                if !resynced {
                    assert_eq!(sent.is_ok(), received.is_ok(), "the two sides count alike");
                    assert_eq!(uploader.sent_bytes(), downloader.received_bytes());
                }
            }
            1 => {
                if let Some(proposal) = downloader.propose(down, now) {
                    assert!(proposal.verify(&network).is_ok(), "own proposal invalid");
                    if let Ok(receipt) = uploader.countersign(up, &proposal) {
                        assert_eq!(receipt.body(), proposal.body);
                        assert!(receipt.bytes <= uploader.sent_bytes());
                        let _ = downloader.accept_countersigned(&receipt);
                    }
                }
            }
            2 => {
                // A proposal of arbitrary fields, really signed by the downloader.
                let body = tally_ledger::ReceiptBody {
                    uploader: up.peer_id(),
                    downloader: down.peer_id(),
                    seq: u.arbitrary()?,
                    bytes: u.arbitrary()?,
                    credits: u.arbitrary()?,
                    time_ms: now,
                };
                let proposal = body.propose(down, &network);
                let before = uploader.latest().copied();
                if let Ok(receipt) = uploader.countersign(up, &proposal) {
                    assert!(
                        receipt.bytes <= uploader.sent_bytes(),
                        "countersigned more than sent"
                    );
                    if let Some(before) = before {
                        assert_eq!(
                            before.body().order(&receipt.body()),
                            tally_ledger::Order::Newer
                        );
                    }
                }
            }
            3 => {
                let theirs = signed_receipt(0, 1, u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
                let _ = uploader.resync(Some(&theirs));
                let _ = downloader.resync(Some(&theirs));
                resynced = true;
            }
            4 => {
                let _ = uploader.resync(None);
                let _ = downloader.resync(None);
            }
            _ => {
                let window: u64 = u.arbitrary()?;
                let next: u64 = u.arbitrary()?;
                let _ = uploader.may_send(next, window);
                let _ = uploader.credits_due(u.arbitrary()?);
                let _ = downloader.unacknowledged();
            }
        }
    }
    Ok(())
}

fuzz_target!(init: seeds::install(seeds::receipts), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => postcard_mode(rest),
        1 => json_mode(rest),
        _ => {
            let _ = pairs_mode(&mut Unstructured::new(rest));
        }
    }
});
