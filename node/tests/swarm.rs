//! Nodes in one process over real QUIC on 127.0.0.1 (port 0) with temporary data dirs: a swarm
//! download with receipts, peers that never sign held to one shared allowance, and peers that
//! misbehave.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DEADLINE, TestNode, ask, finished, payload, raw_client, wait_for};

use std::time::Duration;

use tally_ledger::{Identity, NetworkId, ReceiptBody};
use tally_node::config::Config;
use tally_node::content::CHUNK_SIZE;
use tally_node::daemon::Behaviour;
use tally_node::daemon::fetch::{self, Phase};
use tally_node::transport::ErrorCode;
use tally_node::wire::{LatestReceipts, RefusalCode, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seeders_one_leecher_get_the_file_and_matching_receipts() {
    let seeders = [
        TestNode::start(Behaviour::default()).await,
        TestNode::start(Behaviour::default()).await,
    ];
    let leecher = TestNode::start(Behaviour::default()).await;
    // 6.5 MiB and a bit: several receipts per seeder at the default 1 MiB ack_bytes.
    let bytes = payload(26 * CHUNK_SIZE as usize + 12_345, 1);
    let content = seeders[0].share(&bytes);
    assert_eq!(seeders[1].share(&bytes), content);
    for seeder in &seeders {
        leecher.connect(seeder).await;
    }
    let out = leecher.out("fetched.bin");
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(&out).unwrap() == bytes, "the file differs");

    let net = NetworkId::from_name("tally");
    let mut total = 0;
    for seeder in &seeders {
        let sent = seeder
            .shared()
            .bytes_up
            .load(std::sync::atomic::Ordering::Relaxed);
        let at_leecher = leecher.latest(seeder.id(), leecher.id());
        let at_seeder = seeder.latest(seeder.id(), leecher.id());
        if sent == 0 {
            assert_eq!(at_leecher, None);
            continue;
        }
        let receipt = at_leecher.expect("the leecher holds a receipt from each seeder that sent");
        assert_eq!(
            at_seeder,
            Some(receipt),
            "both sides hold the same latest receipt"
        );
        assert_eq!(
            receipt.bytes, sent,
            "the receipt covers exactly what the seeder sent"
        );
        assert_eq!(receipt.credits, sent);
        receipt.verify(&net).unwrap();
        total += receipt.bytes;
    }
    assert_eq!(total, bytes.len() as u64, "every byte is acknowledged once");
    for node in seeders.into_iter().chain([leecher]) {
        node.node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

fn freerider() -> Behaviour {
    Behaviour {
        never_sign: true,
        ..Behaviour::default()
    }
}

/// Bytes the seeder's strangers' allowance has out, in all and for `peer`.
fn strangers_out(seeder: &TestNode, peer: &TestNode) -> (u64, u64) {
    let pool = seeder.shared().strangers.lock().unwrap();
    (pool.outstanding(), pool.drawn_by(&peer.id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaders_that_never_sign_share_one_allowance_whatever_their_keys() {
    // A 1 MiB allowance: a stranger holds at most half of it; one with nothing out may draw a
    // first chunk beyond it (what a newcomer signs for).
    let window = 1 << 20;
    let share = window / 2;
    let chunk = u64::from(CHUNK_SIZE);
    let seeder =
        TestNode::start_with(Behaviour::default(), |c| c.node.credit_window = window).await;
    let bytes = payload(16 * CHUNK_SIZE as usize, 2);
    let content = seeder.share(&bytes);
    // Three keys that never sign (as a whitewasher's would be), one after another: two take
    // their shares, the third only a first chunk beyond the spent allowance.
    let mut keys = Vec::new();
    let mut downloads = Vec::new();
    for (n, (out, drawn)) in [(share, share), (window, share), (window + chunk, chunk)]
        .into_iter()
        .enumerate()
    {
        let key = TestNode::start(freerider()).await;
        key.connect(&seeder).await;
        let name = format!("x{n}.bin");
        downloads.push(fetch::start(key.shared(), content, key.out(&name)).unwrap());
        wait_for(
            "the seeder to send this key what the allowance gives it",
            || strangers_out(&seeder, &key) == (out, drawn),
        )
        .await;
        assert_eq!(
            seeder.shared().pairs.unacknowledged_to(key.id()).unwrap(),
            drawn
        );
        keys.push(key);
    }
    // Nobody gets more, old key or new, until the write-off.
    {
        let pool = seeder.shared().strangers.lock().unwrap();
        for key in &keys {
            assert!(!pool.may_draw(&key.id(), chunk));
        }
        assert!(pool.outstanding() <= pool.limit());
    }
    for key in &keys {
        assert_eq!(key.latest(seeder.id(), key.id()), None);
    }
    for status in &downloads {
        assert_eq!(status.phase(), Phase::Running, "a download cannot complete");
    }
    drop(downloads);
    seeder.node.shutdown(Duration::from_secs(5)).await.unwrap();
    for key in keys {
        key.node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloader_that_never_signs_is_served_again_once_its_debt_is_written_off() {
    let window = 1 << 20;
    let seeder = TestNode::start_with(Behaviour::default(), |c| {
        c.node.credit_window = window;
        c.node.stranger_write_off = Duration::from_secs(1);
    })
    .await;
    let freerider = TestNode::start(freerider()).await;
    // Four shares: it must wait for write-offs three times.
    let bytes = payload(8 * CHUNK_SIZE as usize, 3);
    let content = seeder.share(&bytes);
    freerider.connect(&seeder).await;
    let status = fetch::start(freerider.shared(), content, freerider.out("x.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    assert_eq!(std::fs::read(freerider.out("x.bin")).unwrap(), bytes);
    // Every byte went out unsigned: written off, not acknowledged.
    assert_eq!(freerider.latest(seeder.id(), freerider.id()), None);
    assert_eq!(
        seeder
            .shared()
            .pairs
            .unacknowledged_to(freerider.id())
            .unwrap(),
        bytes.len() as u64
    );
    seeder.node.shutdown(Duration::from_secs(5)).await.unwrap();
    freerider
        .node
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_served_while_non_signers_hold_the_strangers_allowance() {
    let window = 1 << 20;
    let share = window / 2;
    let seeder =
        TestNode::start_with(Behaviour::default(), |c| c.node.credit_window = window).await;
    let bytes = payload(16 * CHUNK_SIZE as usize, 4);
    let content = seeder.share(&bytes);
    let mut freeriders = Vec::new();
    let mut downloads = Vec::new();
    for (n, out) in [share, 2 * share].into_iter().enumerate() {
        let key = TestNode::start(freerider()).await;
        key.connect(&seeder).await;
        let name = format!("x{n}.bin");
        downloads.push(fetch::start(key.shared(), content, key.out(&name)).unwrap());
        wait_for("a non-signer to hold its share", || {
            strangers_out(&seeder, &key) == (out, share)
        })
        .await;
        freeriders.push(key);
    }
    // The allowance is held by non-signers; a newcomer draws beyond it, signs, and is served
    // on its own window from then on.
    let newcomer = TestNode::start(Behaviour::default()).await;
    newcomer.connect(&seeder).await;
    let status = fetch::start(newcomer.shared(), content, newcomer.out("x.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    assert_eq!(std::fs::read(newcomer.out("x.bin")).unwrap(), bytes);
    wait_for("the newcomer's receipt to cover the file", || {
        newcomer
            .latest(seeder.id(), newcomer.id())
            .is_some_and(|r| r.bytes == bytes.len() as u64)
    })
    .await;
    assert_eq!(strangers_out(&seeder, &newcomer).1, 0, "it left the pool");
    drop(downloads);
    for node in freeriders.into_iter().chain([seeder, newcomer]) {
        node.node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_of_bad_chunks_is_dropped_and_the_download_completes_from_the_others() {
    let honest = TestNode::start(Behaviour::default()).await;
    let liar = TestNode::start(Behaviour {
        corrupt_uploads: true,
        ..Behaviour::default()
    })
    .await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let bytes = payload(12 * CHUNK_SIZE as usize, 3);
    let content = honest.share(&bytes);
    liar.share(&bytes);
    leecher.connect(&liar).await;
    leecher.connect(&honest).await;
    let out = leecher.out("f.bin");
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(&out).unwrap() == bytes);
    // No receipt acknowledges the bad bytes.
    let from_liar = leecher.latest(liar.id(), leecher.id());
    assert_eq!(from_liar, None, "nothing the liar sent was acknowledged");
    for node in [honest, liar, leecher] {
        node.node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_proposals_are_refused_and_the_node_keeps_serving() {
    let node = TestNode::start(Behaviour::default()).await;
    let bytes = payload(3 * CHUNK_SIZE as usize, 4);
    let content = node.share(&bytes);
    let (endpoint, me) = raw_client("tally").await;
    let conn = endpoint
        .dial(node.id(), node.node.quic_addr().unwrap())
        .await
        .unwrap();
    let net = NetworkId::from_name("tally");
    // Take one chunk, so there is something to acknowledge.
    let response = {
        let (mut w, mut r) = conn.open_bi().await.unwrap();
        w.send(&Request::Chunk { content, index: 0 }).await.unwrap();
        w.finish().await.unwrap();
        let header: Response = r.recv().await.unwrap().unwrap();
        let mut chunk = vec![0; CHUNK_SIZE as usize];
        r.read_raw(&mut chunk).await.unwrap();
        assert_eq!(chunk, bytes[..CHUNK_SIZE as usize]);
        header
    };
    assert_eq!(response, Response::Chunk { len: CHUNK_SIZE });
    let body = ReceiptBody {
        uploader: node.id(),
        downloader: me.peer_id(),
        seq: 1,
        bytes: u64::from(CHUNK_SIZE),
        credits: u64::from(CHUNK_SIZE),
        time_ms: 1,
    };
    let forgeries = [
        // Signed by someone else.
        body.propose(&Identity::generate(&mut rand::rng()), &net),
        // More bytes than were sent.
        ReceiptBody {
            bytes: 10 * u64::from(CHUNK_SIZE),
            credits: 10 * u64::from(CHUNK_SIZE),
            ..body
        }
        .propose(&me, &net),
        // Signed for another network.
        body.propose(&me, &NetworkId::from_name("elsewhere")),
    ];
    for forged in forgeries {
        match ask(&conn, &Request::Propose(forged)).await {
            Response::Refused { reason, .. } => assert_eq!(reason, RefusalCode::BadProposal),
            other => panic!("a forged proposal was answered with {other:?}"),
        }
    }
    // The honest proposal is countersigned; replaying an older seq afterwards is refused.
    let honest = body.propose(&me, &net);
    let Response::Countersigned(receipt) = ask(&conn, &Request::Propose(honest)).await else {
        panic!("the honest proposal was refused");
    };
    receipt.verify(&net).unwrap();
    assert_eq!(node.latest(node.id(), me.peer_id()), Some(receipt));
    let newer = ReceiptBody { seq: 5, ..body }.propose(&me, &net);
    let Response::Countersigned(_) = ask(&conn, &Request::Propose(newer)).await else {
        panic!("a newer proposal was refused");
    };
    let regressing = ReceiptBody { seq: 3, ..body }.propose(&me, &net);
    assert!(matches!(
        ask(&conn, &Request::Propose(regressing)).await,
        Response::Refused {
            reason: RefusalCode::BadProposal,
            ..
        }
    ));
    // Four bad proposals reach the ban threshold: the forger is disconnected and refused.
    let closed = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(closed.to_string().contains("refused proposal"), "{closed}");
    assert!(node.shared().peers.is_banned(&me.peer_id()));
    // The node still serves an honest peer.
    let peer = TestNode::start(Behaviour::default()).await;
    peer.connect(&node).await;
    let status = fetch::start(peer.shared(), content, peer.out("ok.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    node.node.shutdown(Duration::from_secs(5)).await.unwrap();
    peer.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Takes chunk `index` of `content` over `conn` and checks it against `bytes`.
async fn take_chunk(
    conn: &tally_node::transport::Connection,
    content: tally_node::content::ContentId,
    index: u32,
    bytes: &[u8],
) {
    let (mut w, mut r) = conn.open_bi().await.unwrap();
    w.send(&Request::Chunk { content, index }).await.unwrap();
    w.finish().await.unwrap();
    let header: Response = r.recv().await.unwrap().unwrap();
    assert_eq!(header, Response::Chunk { len: CHUNK_SIZE });
    let mut chunk = vec![0; CHUNK_SIZE as usize];
    r.read_raw(&mut chunk).await.unwrap();
    let start = index as usize * CHUNK_SIZE as usize;
    assert!(chunk == bytes[start..start + CHUNK_SIZE as usize]);
}

/// An uploader that restarts before a pair's first receipt has lost its count of what it sent;
/// it marked the pair in its store before the first bytes left, so it still countersigns the
/// downloader's claim for them. A key it never sent anything is refused the same claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_uploader_countersigns_what_it_sent_before_the_pairs_first_receipt() {
    let node = TestNode::start(Behaviour::default()).await;
    let bytes = payload(3 * CHUNK_SIZE as usize, 9);
    let content = node.share(&bytes);
    let uploader = node.id();
    let (endpoint, me) = raw_client("tally").await;
    let conn = endpoint
        .dial(uploader, node.node.quic_addr().unwrap())
        .await
        .unwrap();
    take_chunk(&conn, content, 0, &bytes).await;
    take_chunk(&conn, content, 1, &bytes).await;
    let pair = tally_ledger::Pair {
        uploader,
        downloader: me.peer_id(),
    };
    assert!(node.shared().store.is_unreceipted(&pair).unwrap());
    assert_eq!(node.latest(uploader, me.peer_id()), None);
    drop(conn);
    let (dir, secret) = node.stop().await;
    let node = TestNode::start_in(dir, secret, Behaviour::default(), |_| {}).await;
    let net = NetworkId::from_name("tally");
    let claim = |downloader: &Identity| {
        ReceiptBody {
            uploader,
            downloader: downloader.peer_id(),
            seq: 1,
            bytes: 2 * u64::from(CHUNK_SIZE),
            credits: 2 * u64::from(CHUNK_SIZE),
            time_ms: 1,
        }
        .propose(downloader, &net)
    };
    let (other_endpoint, other) = raw_client("tally").await;
    let other_conn = other_endpoint
        .dial(uploader, node.node.quic_addr().unwrap())
        .await
        .unwrap();
    match ask(&other_conn, &Request::Propose(claim(&other))).await {
        Response::Refused { reason, .. } => assert_eq!(reason, RefusalCode::BadProposal),
        answer => panic!("a claim from a key never sent anything was answered {answer:?}"),
    }
    let conn = endpoint
        .dial(uploader, node.node.quic_addr().unwrap())
        .await
        .unwrap();
    let answer = ask(&conn, &Request::Propose(claim(&me))).await;
    let Response::Countersigned(receipt) = answer else {
        panic!("the claim for what was sent before the restart was answered {answer:?}");
    };
    receipt.verify(&net).unwrap();
    assert_eq!(node.latest(uploader, me.peer_id()), Some(receipt));
    // The receipt stands in for the mark now.
    assert!(!node.shared().store.is_unreceipted(&pair).unwrap());
    // And the pair goes on: the last chunk, then a claim for all three.
    take_chunk(&conn, content, 2, &bytes).await;
    let all = ReceiptBody {
        seq: 2,
        bytes: 3 * u64::from(CHUNK_SIZE),
        credits: 3 * u64::from(CHUNK_SIZE),
        ..claim(&me).body
    }
    .propose(&me, &net);
    let answer = ask(&conn, &Request::Propose(all)).await;
    assert!(
        matches!(answer, Response::Countersigned(_)),
        "the next claim was answered {answer:?}"
    );
    node.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Keys that connect, exchange latest receipts and go without a transfer leave nothing behind
/// in the node's pair tables, however many come; a key that took a chunk is still held (the
/// bytes it was sent count against it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_come_and_go_without_a_transfer_leave_no_pair_state_behind() {
    let node = TestNode::start(Behaviour::default()).await;
    let bytes = payload(CHUNK_SIZE as usize, 10);
    let content = node.share(&bytes);
    let addr = node.node.quic_addr().unwrap();
    let (taker_endpoint, taker) = raw_client("tally").await;
    let taker_conn = taker_endpoint.dial(node.id(), addr).await.unwrap();
    take_chunk(&taker_conn, content, 0, &bytes).await;
    for _ in 0..20 {
        let (endpoint, key) = raw_client("tally").await;
        let conn = endpoint.dial(node.id(), addr).await.unwrap();
        let answer = ask(&conn, &Request::Latest(LatestReceipts::default())).await;
        assert!(matches!(answer, Response::Latest(_)), "{answer:?}");
        // Both of its pairs exist at the node while it is connected.
        assert_eq!(node.shared().pairs.held(), (2, 1));
        conn.close(ErrorCode::Normal, "done");
        let key = key.peer_id();
        wait_for("the node to see the key go", || {
            node.shared().peers.connection(&key).is_none()
        })
        .await;
        wait_for("the key's idle pairs to be dropped", || {
            node.shared().pairs.held() == (1, 0)
        })
        .await;
    }
    taker_conn.close(ErrorCode::Normal, "done");
    let taker = taker.peer_id();
    wait_for("the node to see the taker go", || {
        node.shared().peers.connection(&taker).is_none()
    })
    .await;
    assert_eq!(node.shared().pairs.held(), (1, 0));
    node.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_are_refused_and_the_node_keeps_serving() {
    let node = TestNode::start(Behaviour::default()).await;
    let content = node.share(&payload(CHUNK_SIZE as usize, 5));
    let (endpoint, _) = raw_client("tally").await;
    let conn = endpoint
        .dial(node.id(), node.node.quic_addr().unwrap())
        .await
        .unwrap();
    // Garbage where a request frame belongs.
    {
        let (mut w, mut r) = conn.open_bi().await.unwrap();
        w.write_raw(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).await.unwrap();
        w.finish().await.unwrap();
        assert!(r.recv::<Response>().await.is_err(), "garbage got an answer");
    }
    // A length prefix far beyond the request cap.
    {
        let (mut w, mut r) = conn.open_bi().await.unwrap();
        w.write_raw(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(
            r.recv::<Response>().await.is_err(),
            "an oversized frame got an answer"
        );
    }
    // The same connection still gets honest answers, and so does a new one.
    let Response::Have { chunks, .. } = ask(&conn, &Request::Have { content }).await else {
        panic!("no chunk map after bad frames");
    };
    assert_eq!(chunks, 1);
    let (other, _) = raw_client("tally").await;
    let conn = other
        .dial(node.id(), node.node.quic_addr().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        ask(&conn, &Request::Manifest { content }).await,
        Response::Manifest { .. }
    ));
    node.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_peer_id_or_network_is_refused_at_the_handshake() {
    let node = TestNode::start(Behaviour::default()).await;
    let addr = node.node.quic_addr().unwrap();
    let (endpoint, _) = raw_client("tally").await;
    let impostor = Identity::generate(&mut rand::rng()).peer_id();
    let error = endpoint.dial(impostor, addr).await.unwrap_err();
    assert!(
        error.to_string().contains(&impostor.fmt_short()) || error.to_string().contains("key"),
        "{error}"
    );
    let (elsewhere, _) = raw_client("another-network").await;
    let error = elsewhere.dial(node.id(), addr).await.unwrap_err();
    assert!(error.to_string().contains("network"), "{error}");
    // And it still takes honest connections.
    let conn = endpoint.dial(node.id(), addr).await.unwrap();
    assert_eq!(conn.peer_id(), node.id());
    node.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_restart_mid_download_is_redialed_and_the_download_completes() {
    // The seeder is slow, so the download is under way when it stops.
    let limit = |c: &mut Config| c.node.upload_limit = Some(tally_node::rate::Rate(2 << 20));
    let seeder = TestNode::start_with(Behaviour::default(), limit).await;
    let bytes = payload(24 * CHUNK_SIZE as usize, 6);
    let content = seeder.share(&bytes);
    let seeder_addr = seeder.addr();
    let leecher = TestNode::start_with(Behaviour::default(), |c| {
        c.node.peers = vec![seeder_addr.clone()];
    })
    .await;
    let seeder_id = seeder.id();
    wait_for("the leecher to dial the configured seeder", || {
        leecher.shared().peers.connection(&seeder_id).is_some()
    })
    .await;
    let out = leecher.out("resumed.bin");
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    wait_for("a first part to arrive", || {
        status.bytes_have.load(std::sync::atomic::Ordering::Relaxed) >= 2 << 20
    })
    .await;
    let (dir, secret) = seeder.stop().await;
    // Back on the same address, as a restarted node would be.
    let port = seeder_addr.addr.clone();
    let seeder = TestNode::start_in(dir, secret, Behaviour::default(), move |c| {
        c.node.listen = port.parse().unwrap();
    })
    .await;
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(&out).unwrap() == bytes);
    // Receipts from before and after the restart form one chain both sides agree on.
    let at_leecher = leecher.latest(seeder_id, leecher.id()).unwrap();
    assert_eq!(seeder.latest(seeder_id, leecher.id()), Some(at_leecher));
    leecher.node.shutdown(Duration::from_secs(5)).await.unwrap();
    seeder.node.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A connected peer that takes requests and never answers (one behind a network split, whose
/// connection has not timed out yet) does not hold up a download another peer can serve. Found
/// by `node/tests/faults.rs`: the manifest was asked of one connected peer at a time, each until
/// it answered, so a download waited for the split peer's connection to time out (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_does_not_hold_up_a_download_another_peer_serves() {
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let bytes = payload(3 * CHUNK_SIZE as usize, 8);
    let content = seeder.share(&bytes);
    let (endpoint, silent) = raw_client("tally").await;
    let conn = endpoint
        .dial(leecher.id(), leecher.node.quic_addr().unwrap())
        .await
        .unwrap();
    wait_for("the leecher to register the silent peer", || {
        leecher
            .shared()
            .peers
            .connection(&silent.peer_id())
            .is_some()
    })
    .await;
    // Every stream the leecher opens is taken and kept, unanswered; a manifest request is
    // reported.
    // Room for one report per stream the leecher could open; more are dropped (one is enough).
    let (asked, mut manifest_asked) = tokio::sync::mpsc::channel(16);
    let keeper = tokio::spawn(async move {
        while let Ok((writer, mut reader)) = conn.accept_bi().await {
            let asked = asked.clone();
            tokio::spawn(async move {
                if let Ok(Some(Request::Manifest { .. })) = reader.recv::<Request>().await {
                    let _ = asked.try_send(());
                }
                std::future::pending::<()>().await;
                drop((writer, reader));
            });
        }
    });
    let status = fetch::start(leecher.shared(), content, leecher.out("got.bin")).unwrap();
    tokio::time::timeout(DEADLINE, manifest_asked.recv())
        .await
        .expect("the leecher asked the silent peer for the manifest")
        .unwrap();
    // Only now does a peer that holds the content connect; the silent one stays connected.
    leecher.connect(&seeder).await;
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(leecher.out("got.bin")).unwrap() == bytes);
    assert!(
        leecher
            .shared()
            .peers
            .connection(&silent.peer_id())
            .is_some(),
        "the silent peer's connection ended, so this test proved nothing"
    );
    keeper.abort();
    leecher.node.shutdown(Duration::from_secs(5)).await.unwrap();
    seeder.node.shutdown(Duration::from_secs(5)).await.unwrap();
}
