//! Requests from a peer: frames of `wire::Request` read under the request cap, then each handled
//! by the pure code the daemon hands it to: receipts re-synced and proposals checked against a
//! pair (`tally_ledger::pair`), conflict proofs verified, orders learned and trade proposals
//! answered by a real `Market`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_fuzz::{
    NOW_MS, assert_frame_round_trip, identity, identity_arc, network, read_frames, seeds,
    signed_receipt,
};
use tally_ledger::{Resync, UploaderPair};
use tally_market::BookConfig;
use tally_node::market::Market;
use tally_node::wire::{MAX_REQUEST_FRAME, Request};

fuzz_target!(init: seeds::install(seeds::request), |data: &[u8]| {
    static ME: OnceLock<std::sync::Arc<tally_ledger::Identity>> = OnceLock::new();
    let me = ME.get_or_init(|| identity_arc(0)).clone();
    let network = network();
    let market = Market::new(me, network, BookConfig::default());
    let (requests, _) = read_frames::<Request>(data, MAX_REQUEST_FRAME);
    for request in &requests {
        assert_frame_round_trip(request, MAX_REQUEST_FRAME);
        match request.clone() {
            Request::Latest(theirs) => {
                // This node (0) uploaded to the peer (1) up to seq 2.
                let held = signed_receipt(0, 1, 2, 200, 200);
                let mut pair = UploaderPair::new(
                    network,
                    identity(0).peer_id(),
                    identity(1).peer_id(),
                    Some(held),
                );
                let their_downloaded = theirs.sender_downloaded;
                if let Ok(Resync::TheirsNewer(verified)) = pair.resync(their_downloaded.as_ref()) {
                    assert!(verified.verify(&network).is_ok());
                    assert_eq!(pair.latest(), Some(verified.receipt()));
                }
                if let Some(receipt) = theirs.sender_uploaded {
                    let _ = receipt.verify(&network);
                }
            }
            Request::Propose(proposal) => {
                let mut pair =
                    UploaderPair::new(network, identity(0).peer_id(), identity(1).peer_id(), None);
                let _ = pair.record_sent(1000, 1000);
                let verified = proposal.verify(&network).is_ok();
                if let Ok(receipt) = pair.countersign(identity(0), &proposal) {
                    assert!(verified, "countersigned a proposal that does not verify");
                    assert_eq!(receipt.body(), proposal.body);
                    assert!(receipt.verify(&network).is_ok());
                }
            }
            Request::Conflict(proof) => {
                if proof.verify(&network).is_ok() {
                    let [a, b] = proof.receipts();
                    let canonical = tally_ledger::ConflictProof::new(*a, *b)
                        .unwrap_or_else(|e| panic!("a verified proof is not a conflict: {e}"));
                    assert_eq!(canonical.id(), tally_ledger::ConflictProof::new(*b, *a).map(|p| p.id()).unwrap_or_default());
                }
            }
            Request::Orders(messages) => {
                for message in messages {
                    let _ = market.learn(message, NOW_MS);
                }
            }
            Request::Trade(proposal) => {
                if let Ok(agreement) = market.answer_proposal(proposal, proposal.terms.buyer, NOW_MS) {
                    assert!(agreement.verify(&network).is_ok());
                }
            }
            Request::Manifest { .. } | Request::Have { .. } | Request::Chunk { .. } | Request::Gossip => {}
        }
    }
});
