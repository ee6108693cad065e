//! Standing on real nodes: a transfer's receipts give the uploader standing at the downloader
//! and leave the downloader at the floor at the uploader; gossiped third-party receipts add a
//! transitive part with the chain that carries it; a conflict proof takes everything away; the
//! API explains it (QUIC on 127.0.0.1 port 0, temporary data dirs).
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{TestNode, finished, payload, wait_for};
use tally_ledger::{ConflictProof, Identity, NetworkId, Receipt, ReceiptBody};
use tally_node::content::CHUNK_SIZE;
use tally_node::daemon::Behaviour;
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::fetch::{self, Phase};
use tally_web::HexId;
use tally_web::api::NodeApi;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn receipt(up: &Identity, down: &Identity, seq: u64, credits: u64) -> Receipt {
    ReceiptBody {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
        seq,
        bytes: credits,
        credits,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(down, &net())
    .countersign(up, &net())
}

async fn standing_of(node: &TestNode, peer: &Identity) -> tally_web::model::StandingInfo {
    NodeHandle::new(Arc::clone(node.shared()))
        .standing(HexId(*peer.peer_id().as_bytes()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_gives_the_uploader_standing_and_gossip_adds_what_others_gave() {
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    leecher.connect(&seeder).await;
    let bytes = payload(3 * CHUNK_SIZE as usize + 7, 11);
    let content = seeder.share(&bytes);
    let status = fetch::start(leecher.shared(), content, leecher.out("got.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    let seeder_id = Identity::from_secret_bytes(seeder.secret);
    let leecher_id = Identity::from_secret_bytes(leecher.secret);

    // At the leecher, the seeder gave everything it received.
    let size = bytes.len() as u64;
    wait_for("the seeder's standing at the leecher", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&seeder.id()).given == size)
    })
    .await;
    let at_leecher = standing_of(&leecher, &seeder_id).await;
    assert!(!at_leecher.at_floor && at_leecher.score > 0.0);
    assert_eq!(at_leecher.raw, size as f64);
    // At the seeder, the leecher only took: the floor, with a stranger.
    wait_for("the leecher's debt at the seeder", || {
        seeder
            .shared()
            .standing
            .with(|s| s.of(&leecher.id()).taken == size)
    })
    .await;
    let at_seeder = standing_of(&seeder, &leecher_id).await;
    let stranger = standing_of(&seeder, &Identity::generate(&mut rand::rng())).await;
    assert!(at_seeder.at_floor && stranger.at_floor);
    assert_eq!(at_seeder.score, stranger.score);

    // Someone who gave to the seeder earns a share at the leecher, through the seeder.
    let helper = Identity::generate(&mut rand::rng());
    let gift = receipt(&helper, &seeder_id, 1, 64 << 20);
    leecher
        .shared()
        .store
        .apply(&gift.verify(&net()).unwrap())
        .unwrap();
    wait_for("the helper's transitive standing at the leecher", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&helper.peer_id()).transitive > 0.0)
    })
    .await;
    let why = standing_of(&leecher, &helper).await;
    assert!(!why.at_floor && why.given == 0);
    assert_eq!(why.paths.len(), 1);
    assert_eq!(
        why.paths[0].via,
        vec![
            HexId(*seeder.id().as_bytes()),
            HexId(*helper.peer_id().as_bytes())
        ]
    );

    // Caught signing two receipts for one seq: no standing, and no transitive part through it.
    let mut other = gift.body();
    other.credits += 1;
    let conflict = ConflictProof::new(
        gift,
        other
            .propose(&seeder_id, &net())
            .countersign(&helper, &net()),
    )
    .unwrap();
    leecher.shared().store.add_conflict(&conflict).unwrap();
    wait_for("the helper marked dishonest", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&helper.peer_id()).dishonest)
    })
    .await;
    let why = standing_of(&leecher, &helper).await;
    assert!(why.dishonest && why.at_floor && why.paths.is_empty());
    leecher.stop().await;
    seeder.stop().await;
}
