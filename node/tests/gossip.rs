//! Gossip between real nodes in one process (QUIC on 127.0.0.1 port 0, temporary data dirs):
//! receipts and conflict proofs reach every node of a sparse network while a peer floods one of
//! them, a node that was offline catches up, a flooding or lying peer is refused and banned,
//! provider records let a download find providers it is not connected to, and peer exchange
//! grows a node's connections from one bootstrap peer within its limit.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestNode, finished, payload, raw_client, wait_until};
use rand::{RngExt as _, SeedableRng as _};
use tally_ledger::sync::{ShortId, pair_key, short_id};
use tally_ledger::{ConflictProof, Identity, NetworkId, Receipt, ReceiptBody, Signature};
use tally_node::config::Config;
use tally_node::content::{CHUNK_SIZE, ContentId};
use tally_node::daemon::Behaviour;
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::fetch::{self, Phase};
use tally_node::gossip::records::ProviderRecord;
use tally_node::gossip::session;
use tally_node::transport::{Connection, FrameReader, FrameWriter};
use tally_node::wire::{
    GossipFrame, GossipHello, MAX_ANNOUNCED, MAX_GOSSIP_FRAME, MAX_RESPONSE_FRAME, Records,
    Request, Response,
};

/// Generous for a loaded two-core machine; convergence itself takes a few seconds.
const CONVERGE: Duration = Duration::from_secs(90);

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn fast_gossip(config: &mut Config) {
    config.node.gossip_interval = Duration::from_millis(200);
    // The topology stays as the test built it.
    config.node.target_peers = 0;
}

fn receipt(up: &Identity, down: &Identity, seq: u64, bytes: u64) -> Receipt {
    ReceiptBody {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
        seq,
        bytes,
        credits: bytes,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(down, &net())
    .countersign(up, &net())
}

fn identity(node: &TestNode) -> Identity {
    Identity::from_secret_bytes(node.secret)
}

/// Whether every node holds exactly `receipt` as its pair's latest.
fn all_hold(nodes: &[TestNode], receipt: &Receipt) -> bool {
    nodes
        .iter()
        .all(|n| n.latest(receipt.uploader, receipt.downloader) == Some(*receipt))
}

/// Starts `n` nodes, each connected to 2 random earlier ones (the first two to each other):
/// connected and sparse.
async fn sparse_network(n: usize, seed: u64) -> Vec<TestNode> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let node = TestNode::start_with(Behaviour::default(), fast_gossip).await;
        let mut targets = HashSet::new();
        while i > 0 && targets.len() < i.min(2) {
            targets.insert(rng.random_range(0..i));
        }
        for t in targets {
            node.connect(&nodes[t]).await;
        }
        nodes.push(node);
    }
    nodes
}

/// Stops every node at once: each waits for its connections' close to be delivered, which on
/// a loaded machine takes a few round-trip timeouts.
async fn stop_all(nodes: Vec<TestNode>) {
    let mut stopping = tokio::task::JoinSet::new();
    for node in nodes {
        stopping.spawn(node.stop());
    }
    while let Some(stopped) = stopping.join_next().await {
        stopped.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_a_conflict_proof_reach_all_30_nodes_despite_a_flood_and_a_returning_node_catches_up()
 {
    let mut nodes = sparse_network(30, 7).await;
    // A peer floods node 0 with sessions all the while.
    let (flooder, _) = raw_client("tally").await;
    let flooding = flooder
        .dial(nodes[0].id(), nodes[0].node.quic_addr().unwrap())
        .await
        .unwrap();
    let flood = tokio::spawn(flood(flooding));
    // Receipts made at three nodes: each with a peer of its own.
    let made: Vec<Receipt> = [(3, 17), (11, 25), (29, 0)]
        .into_iter()
        .map(|(up, down)| {
            let r = receipt(&identity(&nodes[up]), &identity(&nodes[down]), 4, 4 << 20);
            let verified = r.verify(&net()).unwrap();
            nodes[up].shared().store.apply(&verified).unwrap();
            r
        })
        .collect();
    wait_until("every receipt at every node", CONVERGE, || {
        made.iter().all(|r| all_hold(&nodes, r))
    })
    .await;
    let refused = flood.await.unwrap();
    assert!(refused > 0, "the flood was never refused");
    assert!(
        nodes[0].shared().peers.is_banned(&flooder.peer_id()),
        "the flooder was not banned after {refused} refusals"
    );

    // A conflict proof learned at one node is flooded to all.
    let (x, y) = (identity(&nodes[5]), identity(&nodes[6]));
    let proof = ConflictProof::new(receipt(&x, &y, 9, 100), receipt(&x, &y, 9, 200)).unwrap();
    assert!(
        session::learn_conflict(nodes[20].shared(), proof, None)
            .await
            .unwrap()
    );
    wait_until("every node to mark both keys dishonest", CONVERGE, || {
        nodes.iter().all(|n| {
            let store = &n.shared().store;
            store.is_dishonest(&x.peer_id()).unwrap() && store.is_dishonest(&y.peer_id()).unwrap()
        })
    })
    .await;

    // The API's status shows them, at a node far from where the proof started.
    let status = tally_web::api::NodeApi::status(&NodeHandle::new(Arc::clone(nodes[0].shared())))
        .await
        .unwrap();
    assert_eq!(status.store.dishonest, 2);
    let listed: HashSet<[u8; 32]> = status.dishonest_peers.iter().map(|p| p.0).collect();
    assert_eq!(
        listed,
        HashSet::from([*x.peer_id().as_bytes(), *y.peer_id().as_bytes()])
    );
    assert!(status.gossip.sessions > 0);

    // Node 12 goes offline; receipts are made meanwhile; it comes back with one bootstrap peer.
    let away = nodes.remove(12);
    let (dir, secret) = away.stop().await;
    let later: Vec<Receipt> = [(1, 2), (8, 9)]
        .into_iter()
        .map(|(up, down)| {
            let r = receipt(&identity(&nodes[up]), &identity(&nodes[down]), 7, 9 << 20);
            nodes[up]
                .shared()
                .store
                .apply(&r.verify(&net()).unwrap())
                .unwrap();
            r
        })
        .collect();
    let back = TestNode::start_in(dir, secret, Behaviour::default(), fast_gossip).await;
    back.connect(&nodes[0]).await;
    nodes.push(back);
    wait_until("the returning node to catch up", CONVERGE, || {
        later.iter().chain(&made).all(|r| all_hold(&nodes, r))
    })
    .await;
    let returning = nodes.last().unwrap().shared();
    assert!(returning.store.is_dishonest(&x.peer_id()).unwrap());
    assert!(
        returning
            .gossip
            .stats
            .receipts_new
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    stop_all(nodes).await;
}

/// Opens a raw gossip session with `conn`'s node: sends the request and a hello announcing
/// `recent`, reads the verdict and the node's hello. `None` when the node refused.
async fn raw_session_announcing(
    conn: &Connection,
    recent: Vec<ShortId>,
) -> Option<(FrameWriter, FrameReader, GossipHello)> {
    let (mut writer, mut reader) = conn.open_bi().await.ok()?;
    writer.send(&Request::Gossip).await.ok()?;
    writer.set_max_frame(MAX_GOSSIP_FRAME);
    writer
        .send(&GossipFrame::Hello(GossipHello {
            conflicts: 0,
            conflicts_digest: [0; 32],
            observed: conn.remote_addr(),
            recent,
        }))
        .await
        .ok()?;
    reader.set_max_frame(MAX_RESPONSE_FRAME);
    match reader.recv::<Response>().await.ok()?? {
        Response::Received => {}
        _ => return None,
    }
    reader.set_max_frame(MAX_GOSSIP_FRAME);
    match reader.recv::<GossipFrame>().await.ok()?? {
        GossipFrame::Hello(hello) => Some((writer, reader, hello)),
        _ => None,
    }
}

/// A raw session that announces nothing. The frames a client sends next: `Records`, then, if
/// the node's hello announced receipts, a `Want` (see [`records_then_want`]).
async fn raw_session(conn: &Connection) -> Option<(FrameWriter, FrameReader, GossipHello)> {
    raw_session_announcing(conn, Vec::new()).await
}

/// What a client that announced nothing sends after the hellos: records, and an empty want
/// when the node announced something.
fn records_then_want(records: Records, theirs: &GossipHello) -> Vec<GossipFrame> {
    let mut frames = vec![GossipFrame::Records(records)];
    if !theirs.recent.is_empty() {
        frames.push(GossipFrame::Want(Vec::new()));
    }
    frames
}

/// Opens sessions on `conn` as fast as the node answers, until the node bans this client and
/// closes the connection. Returns how many sessions were refused.
async fn flood(conn: Connection) -> usize {
    let mut refused = 0;
    for _ in 0..1_000 {
        if conn.close_reason().is_some() {
            break;
        }
        match raw_session(&conn).await {
            Some((mut writer, _reader, theirs)) => {
                // A well-formed, empty session.
                for frame in records_then_want(Records::default(), &theirs) {
                    let _ = writer.send(&frame).await;
                }
                let _ = writer.send(&GossipFrame::End).await;
            }
            None => refused += 1,
        }
    }
    refused
}

/// Connects a raw client to a fresh node and returns both, and the client's connection.
async fn victim_and_liar() -> (TestNode, tally_node::transport::Endpoint, Connection) {
    let victim = TestNode::start_with(Behaviour::default(), fast_gossip).await;
    let (endpoint, _) = raw_client("tally").await;
    let conn = endpoint
        .dial(victim.id(), victim.node.quic_addr().unwrap())
        .await
        .unwrap();
    (victim, endpoint, conn)
}

/// Opens sessions at an honest pace, announcing `announce` in its hello, and lies in each,
/// until the victim bans the liar.
async fn lie_until_banned(
    victim: &TestNode,
    endpoint: &tally_node::transport::Endpoint,
    conn: &Connection,
    announce: &[ShortId],
    lie: &[GossipFrame],
) {
    let liar = endpoint.peer_id();
    for _ in 0..20 {
        if victim.shared().peers.is_banned(&liar) {
            return;
        }
        if let Some((mut writer, mut reader, theirs)) =
            raw_session_announcing(conn, announce.to_vec()).await
        {
            // A liar ignores the caps.
            writer.set_max_frame(16 << 20);
            let mut frames = lie.to_vec();
            // The lies open with records; an empty want follows them when the node announced.
            if !theirs.recent.is_empty() && matches!(frames.first(), Some(GossipFrame::Records(_)))
            {
                frames.insert(1, GossipFrame::Want(Vec::new()));
            }
            for frame in &frames {
                if writer.send(frame).await.is_err() {
                    break;
                }
            }
            // Read until the victim breaks the session off.
            while let Ok(Some(_)) = reader.recv::<GossipFrame>().await {}
        }
        // Within the allowance of sessions: an honest pace.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(
        victim.shared().peers.is_banned(&liar),
        "the liar was never banned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_receipts_records_and_bad_or_oversized_summaries_are_refused_and_their_sender_banned()
 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let other = NetworkId::from_name("another network");
    let (a, b) = (
        Identity::generate(&mut rand::rng()),
        Identity::generate(&mut rand::rng()),
    );
    let good = receipt(&a, &b, 3, 3 << 20);
    // Half-signed: the uploader's signature is the downloader's.
    let mut half_signed = receipt(&a, &b, 5, 5 << 20);
    half_signed.sig_uploader = half_signed.sig_downloader;
    let wrong_network = ReceiptBody {
        seq: 6,
        ..good.body()
    }
    .propose(&b, &other)
    .countersign(&a, &other);
    let forged_provider = ProviderRecord {
        signature: Signature([9; 64]),
        ..ProviderRecord::sign(&a, &net(), ContentId([4; 32]), now(), 60_000)
    };

    let lies: Vec<(&str, Vec<GossipFrame>)> = vec![
        (
            "half-signed receipts",
            vec![
                GossipFrame::Records(Records::default()),
                GossipFrame::Receipts(vec![good, half_signed]),
            ],
        ),
        (
            "receipts of another network",
            vec![
                GossipFrame::Records(Records::default()),
                GossipFrame::Receipts(vec![wrong_network]),
            ],
        ),
        (
            "forged provider records",
            vec![GossipFrame::Records(Records {
                providers: vec![forged_provider],
                peers: Vec::new(),
            })],
        ),
        (
            "an oversized summary",
            vec![
                GossipFrame::Records(Records::default()),
                GossipFrame::Sync(vec![0; MAX_GOSSIP_FRAME + 1]),
            ],
        ),
        (
            "an undecodable summary",
            vec![
                GossipFrame::Records(Records::default()),
                GossipFrame::Sync(vec![0xff; 64]),
            ],
        ),
    ];
    for (what, lie) in lies {
        let (victim, endpoint, conn) = victim_and_liar().await;
        lie_until_banned(&victim, &endpoint, &conn, &[], &lie).await;
        // Nothing invalid was stored (the valid receipt beside the half-signed one may be).
        let held = victim.latest(a.peer_id(), b.peer_id());
        assert!(
            held.is_none() || held == Some(good),
            "{what}: an invalid receipt was stored: {held:?}"
        );
        assert_eq!(
            victim.shared().gossip.provider_count(),
            0,
            "{what}: a forged record was kept"
        );
        victim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_replaying_receipts_the_node_holds_is_banned() {
    let (victim, endpoint, conn) = victim_and_liar().await;
    // 1,156 pairs the victim already holds.
    let who = |seed: u8| Identity::from_secret_bytes([seed; 32]);
    let held: Vec<Receipt> = (1..=34u8)
        .flat_map(|up| (100..=133u8).map(move |down| (up, down)))
        .map(|(up, down)| receipt(&who(up), &who(down), 1, 1 << 20))
        .collect();
    let store = &victim.shared().store;
    for r in &held {
        store.apply(&r.verify(&net()).unwrap()).unwrap();
    }
    let mut replay = vec![GossipFrame::Records(Records::default())];
    replay.extend(held.chunks(512).map(|c| GossipFrame::Receipts(c.to_vec())));
    replay.push(GossipFrame::End);
    lie_until_banned(&victim, &endpoint, &conn, &[], &replay).await;
    let stats = &victim.shared().gossip.stats;
    assert!(
        stats
            .receipts_unwanted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1_156
    );
    assert_eq!(
        stats
            .receipts_new
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    victim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_receipts_are_asked_for_and_stored_and_an_oversized_announcement_is_banned() {
    let (victim, endpoint, conn) = victim_and_liar().await;
    let id = |r: &Receipt| short_id(&pair_key(&r.pair()), r.seq);
    let who = |seed: u8| Identity::from_secret_bytes([seed; 32]);
    let held = receipt(&who(1), &who(2), 1, 1 << 20);
    victim
        .shared()
        .store
        .apply(&held.verify(&net()).unwrap())
        .unwrap();
    let fresh = receipt(&who(3), &who(4), 4, 4 << 20);

    // Announce one receipt the victim holds and one it lacks: it asks for the one it lacks.
    let (mut writer, mut reader, theirs) =
        raw_session_announcing(&conn, vec![id(&held), id(&fresh)])
            .await
            .expect("the victim takes the session");
    for frame in records_then_want(Records::default(), &theirs) {
        writer.send(&frame).await.unwrap();
    }
    let asked = loop {
        match reader.recv::<GossipFrame>().await.unwrap() {
            Some(GossipFrame::Records(_)) => continue,
            Some(GossipFrame::Want(asked)) => break asked,
            other => panic!("expected the victim's want, got {other:?}"),
        }
    };
    assert_eq!(asked, vec![id(&fresh)], "only what it lacks");
    writer
        .send(&GossipFrame::Receipts(vec![fresh]))
        .await
        .unwrap();
    // Whatever the victim announced and we did not want: nothing more comes before its turn.
    writer.send(&GossipFrame::End).await.unwrap();
    wait_until("the announced receipt is stored", CONVERGE, || {
        victim.latest(fresh.uploader, fresh.downloader) == Some(fresh)
    })
    .await;
    assert!(!victim.shared().peers.is_banned(&endpoint.peer_id()));

    // Announcing more than the cap is a bad frame, and enough of them a ban.
    let oversized = vec![[7u8; 8]; MAX_ANNOUNCED + 1];
    lie_until_banned(
        &victim,
        &endpoint,
        &conn,
        &oversized,
        &[GossipFrame::Records(Records::default())],
    )
    .await;
    victim.stop().await;
}

fn now() -> u64 {
    tally_node::daemon::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_finds_a_provider_it_is_not_connected_to_through_gossip() {
    // seeder — relay — leecher: the leecher knows only the relay.
    let seeder = TestNode::start_with(Behaviour::default(), fast_gossip).await;
    let relay = TestNode::start_with(Behaviour::default(), fast_gossip).await;
    let leecher = TestNode::start_with(Behaviour::default(), fast_gossip).await;
    relay.connect(&seeder).await;
    leecher.connect(&relay).await;
    let bytes = payload(3 * CHUNK_SIZE as usize + 99, 5);
    let content = seeder.share(&bytes);
    wait_until(
        "the seeder's provider record at the leecher",
        CONVERGE,
        || {
            leecher
                .shared()
                .gossip
                .providers_of(&content, now())
                .iter()
                .any(|r| r.provider == seeder.id())
                && leecher.shared().gossip.peer_addrs(&seeder.id()).is_some()
        },
    )
    .await;
    let out = leecher.out("fetched.bin");
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(&out).unwrap() == bytes, "the file differs");
    assert!(leecher.shared().peers.connection(&seeder.id()).is_some());
    for node in [seeder, relay, leecher] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_exchange_grows_connections_from_one_bootstrap_peer_within_the_limit() {
    // A hub with six peers; a newcomer that knows only the hub and may keep four connections.
    let hub = TestNode::start_with(Behaviour::default(), fast_gossip).await;
    let mut others = Vec::new();
    for _ in 0..6 {
        let node = TestNode::start_with(Behaviour::default(), fast_gossip).await;
        node.connect(&hub).await;
        others.push(node);
    }
    let newcomer = TestNode::start_with(Behaviour::default(), |c| {
        c.node.gossip_interval = Duration::from_millis(200);
        c.node.target_peers = 8;
        c.node.max_connections = 4;
    })
    .await;
    newcomer.connect(&hub).await;
    wait_until("the newcomer to fill its connections", CONVERGE, || {
        newcomer.shared().peers.connected().len() >= 4
    })
    .await;
    // It stays within its limit however many it has heard of.
    let heard = newcomer.shared().gossip.known_peers().len();
    assert!(heard >= 4, "heard of only {heard} peers");
    for _ in 0..20 {
        assert!(newcomer.shared().peers.connected().len() <= 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    newcomer.stop().await;
    hub.stop().await;
    stop_all(others).await;
}
