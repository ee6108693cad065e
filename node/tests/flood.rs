//! A flood on real sockets: two honest in-process nodes (real QUIC on loopback, real sled)
//! transfer a file while 200 misbehaving clients (`common/flood.rs`), each from its own
//! loopback address or sharing one of three, attack the uploader: garbage requests, half-open
//! and forged handshakes, slow readers, oversized frames, forged proposals and provider-record
//! spam over gossip. What is asserted is behaviour only: the transfer completes and verifies,
//! the misbehaving connections are closed and their keys or addresses banned, no source holds
//! more than its limit, memory stays bounded and every stored receipt verifies. How much the
//! flood slows the transfer is measured by `benches/flood.rs`, not here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/flood.rs"]
mod flood;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use common::{DEADLINE, TestNode, finished, payload};
use flood::{Dial, Kind, Outcome, Target};
use tally_node::content::CHUNK_SIZE;
use tally_node::daemon::Behaviour;
use tally_node::daemon::fetch::{self, Phase};
use tally_node::transport::ErrorCode;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;
/// The generous bound on how much the process may grow under the flood.
const RSS_GROWTH: u64 = 256 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_transfer_completes_through_a_flood_of_misbehaving_clients() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let bytes = payload(64 * CHUNK_SIZE as usize + 4_321, 7);
    let content = seeder.share(&bytes);
    leecher.connect(&seeder).await;
    let rss_start = flood::rss_bytes();

    let admission = std::sync::Arc::clone(seeder.shared().endpoint.admission());
    let per_ip = admission.max_per_ip();
    let target = Target {
        peer: seeder.id(),
        addr: seeder.node.quic_addr().unwrap(),
        network: seeder.shared().network,
        content,
        chunks: bytes.len().div_ceil(CHUNK_SIZE as usize) as u32,
    };
    let stop = CancellationToken::new();
    let mut clients = flood::launch(target, stop.clone());

    // The honest download, while the flood runs.
    let out = leecher.out("through-the-flood.bin");
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();

    // Watch the node while the clients run: per-source counts and memory.
    let mut rss_peak = rss_start;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut download_done = false;
    loop {
        for ip in flood::shared_ips() {
            let held = admission.connections(ip);
            assert!(
                held <= per_ip,
                "{ip} holds {held} connections (limit {per_ip})"
            );
        }
        rss_peak = rss_peak.max(flood::rss_bytes());
        if !download_done && status.phase() != Phase::Running {
            download_done = true;
        }
        // Everyone but the slow readers finishes on their own; those are stopped once the
        // others are done and the download is through.
        if download_done && !stop.is_cancelled() && outcomes_without_slow(&outcomes) {
            stop.cancel();
        }
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(outcome) => outcomes.push(outcome.unwrap()),
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not end within {DEADLINE:?}: {} clients left, download {:?}",
            clients.len(),
            status.phase()
        );
    }

    // The honest transfer went through, byte for byte.
    assert_eq!(finished(&status).await, Phase::Complete);
    assert!(std::fs::read(&out).unwrap() == bytes, "the file differs");
    assert!(
        seeder.shared().peers.connection(&leecher.id()).is_some(),
        "the honest peer was disconnected"
    );

    check_outcomes(&seeder, &outcomes);

    // Memory stayed bounded and every receipt stored is intact.
    assert!(
        rss_peak < rss_start + RSS_GROWTH,
        "the process grew from {} MiB to {} MiB",
        rss_start / MIB,
        rss_peak / MIB
    );
    for node in [&seeder, &leecher] {
        let report = node.shared().store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
    let receipt = leecher
        .latest(seeder.id(), leecher.id())
        .expect("the transfer was acknowledged");
    assert_eq!(seeder.latest(seeder.id(), leecher.id()), Some(receipt));

    leecher.stop().await;
    seeder.stop().await;
}

/// Whether every client but the slow readers has reported.
fn outcomes_without_slow(outcomes: &[Outcome]) -> bool {
    let others = (0..flood::CLIENTS)
        .filter(|&i| flood::kind_of(i) != Kind::SlowReader)
        .count();
    outcomes
        .iter()
        .filter(|o| o.kind != Kind::SlowReader)
        .count()
        == others
}

/// What the node did to each client.
fn check_outcomes(seeder: &TestNode, outcomes: &[Outcome]) {
    assert_eq!(outcomes.len(), flood::CLIENTS);
    let peers = &seeder.shared().peers;
    let admission = seeder.shared().endpoint.admission();
    let banned_code = u64::from(ErrorCode::Banned.code());
    let full_code = u64::from(ErrorCode::TooManyConnections.code());

    for ip in flood::shared_ips() {
        let rounds: Vec<String> = outcomes
            .iter()
            .filter(|o| o.ip == ip)
            .flat_map(|o| {
                o.rounds
                    .iter()
                    .map(move |r| format!("{:?}/{:?}/{:?}", o.kind, r.dial, r.closed_with))
            })
            .collect();
        eprintln!(
            "flood: {ip}: banned {}, {} points; rounds {rounds:?}",
            admission.is_banned(ip),
            admission.penalty(ip)
        );
    }
    // Every source shared by many misbehaving clients ends up banned.
    for ip in flood::shared_ips() {
        assert!(admission.is_banned(ip), "shared source {ip} is not banned");
    }

    let mut banned_keys = 0;
    let mut by_kind: HashMap<&'static str, (usize, usize)> = HashMap::new();
    for outcome in outcomes {
        assert!(
            !outcome.rounds.is_empty(),
            "client {} never tried",
            outcome.index
        );
        let ip_banned = admission.is_banned(outcome.ip);
        for round in &outcome.rounds {
            let entry = by_kind.entry(kind_name(outcome.kind)).or_default();
            entry.0 += 1;
            if round.dial != Dial::Connected {
                // Refused or ignored at the door: nothing more to check.
                continue;
            }
            entry.1 += 1;
            if outcome.kind == Kind::SlowReader {
                // Slow reading breaks no rule; it is held to the credit window and flow
                // control. Its connection ends with its source's ban, or the test's stop.
                continue;
            }
            // Everything else was closed by the node, not left open.
            assert!(
                !round.still_open,
                "client {} ({:?}) from {} was never disconnected",
                outcome.index, outcome.kind, outcome.ip
            );
            if outcome.kind.after_handshake() {
                // No code: a stateless reset, when the node's close was lost among the
                // flood's datagrams and it had already forgotten the connection.
                let code = round.closed_with;
                assert!(
                    code.is_none() || code == Some(banned_code) || code == Some(full_code),
                    "client {} ({:?}): closed with {code:?}",
                    outcome.index,
                    outcome.kind
                );
                if code == Some(banned_code) {
                    let key_banned = peers.is_banned(&round.key);
                    assert!(
                        key_banned || ip_banned,
                        "client {} ({:?}) was closed as banned but neither its key nor {} is",
                        outcome.index,
                        outcome.kind,
                        outcome.ip
                    );
                    banned_keys += usize::from(key_banned);
                }
            }
            // No misbehaving key is a live peer.
            assert!(peers.connection(&round.key).is_none());
        }
    }
    eprintln!("flood: rounds (tried, connected) by kind: {by_kind:?}; keys banned: {banned_keys}");
    eprintln!(
        "flood: sources banned: {:?}",
        admission
            .banned()
            .into_iter()
            .map(|(ip, _)| ip)
            .collect::<Vec<IpAddr>>()
    );
    // Clients on their own address, one key each round: each key that misbehaved after its
    // handshake was banned.
    assert!(banned_keys > 0, "no key was banned");
    // An operator sees the bans in the metrics.
    let figures = tally_node::daemon::metrics::snapshot(seeder.shared());
    assert!(figures.banned_keys >= banned_keys as u64, "{figures:?}");
    assert!(
        figures.banned_addresses >= flood::shared_ips().len() as u64,
        "{figures:?}"
    );
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Garbage => "garbage",
        Kind::HalfOpen => "half-open",
        Kind::SlowReader => "slow reader",
        Kind::Oversized => "oversized",
        Kind::ForgedHello => "forged hello",
        Kind::ForgedProposal => "forged proposal",
        Kind::RecordSpam => "record spam",
    }
}
