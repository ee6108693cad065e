//! A gossip session's frames from a peer: `wire::GossipFrame`s read under the gossip cap, then
//! handled as `gossip::session` handles them: announced ids matched (`sync::wanted`), sync
//! messages decoded (`sync::Message::decode`) and answered (`sync::respond`), receipts
//! batch-verified, conflict proofs and provider/peer records verified.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_fuzz::{NOW_MS, assert_frame_round_trip, network, read_frames, seeds};
use tally_ledger::sync::{self, Message, SyncItems};
use tally_node::wire::{GossipFrame, MAX_ANNOUNCED, MAX_GOSSIP_FRAME};

fn items() -> &'static SyncItems {
    static ITEMS: OnceLock<SyncItems> = OnceLock::new();
    ITEMS.get_or_init(seeds::sync_items)
}

fuzz_target!(init: seeds::install(seeds::gossip), |data: &[u8]| {
    let network = network();
    let (frames, _) = read_frames::<GossipFrame>(data, MAX_GOSSIP_FRAME);
    for frame in &frames {
        assert_frame_round_trip(frame, MAX_GOSSIP_FRAME);
        match frame {
            GossipFrame::Hello(hello) => {
                let want = sync::wanted(items(), &hello.recent, MAX_ANNOUNCED);
                assert!(want.len() <= MAX_ANNOUNCED);
            }
            GossipFrame::Conflicts(proofs) => {
                for proof in proofs {
                    let _ = proof.verify(&network);
                }
            }
            GossipFrame::Records(records) => {
                for record in &records.providers {
                    let _ = record.verify(&network, NOW_MS);
                }
                for record in &records.peers {
                    let _ = record.verify(&network, NOW_MS);
                }
            }
            GossipFrame::Sync(bytes) => {
                if let Ok(message) = Message::decode(bytes) {
                    assert_eq!(Message::decode(&message.encode()).as_ref(), Ok(&message));
                    let _ = sync::respond(items(), &message);
                }
            }
            GossipFrame::Receipts(batch) => {
                let verdict = tally_ledger::verify_batch(batch, &network);
                assert_eq!(verdict.verified.len() + verdict.rejected.len(), batch.len());
            }
            GossipFrame::Want(ids) => {
                let announced = items().changed_since(0, MAX_ANNOUNCED);
                let keys = sync::resolve(&announced, ids);
                assert!(keys.len() <= ids.len());
            }
            GossipFrame::End => {}
        }
    }
});
