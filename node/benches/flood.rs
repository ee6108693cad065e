//! A transfer through a flood: how fast one honest download goes between two in-process nodes
//! on loopback, alone and while 200 misbehaving clients (`tests/common/flood.rs`: garbage,
//! half-open and forged handshakes, slow readers, oversized frames, forged proposals,
//! provider-record spam; each from its own 127.x address or sharing one of three) attack the
//! uploader. Both runs are in the same process, side by side, each with a fresh pair of nodes
//! (so standing and bans from one run do not help the other). The clients run in a child
//! process (this binary again, `TALLY_FLOOD_CHILD` set), so their memory and their tokio
//! threads are not the nodes'; on one machine they still share its cores, which a real
//! attacker's would not.
//!
//! `cargo bench -p tally-node --bench flood` runs it with 64 MiB. Knobs: `TALLY_BENCH_BYTES`
//! (content size in MiB), `TALLY_BENCH_ROUNDS` (unloaded and loaded alternate this many times;
//! the ratio is taken between medians), `TALLY_BENCH_LINK_MIB` (the seeder's upload limit in
//! MiB/s, its link; unlimited by default). Without `--bench` (as under `cargo test --benches`) it
//! runs a small smoke test. The load average is printed with each figure: the machine may be
//! shared. Linux only (the clients bind 127.0.0.2 and up).
// A bench panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/load.rs"]
mod load;
use load::load;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/flood.rs"]
mod flood;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, finished, payload};
use tally_node::content::CHUNK_SIZE;
use tally_node::daemon::Behaviour;
use tally_node::daemon::fetch::{self, Phase};
use tokio_util::sync::CancellationToken;

const MIB: f64 = 1024.0 * 1024.0;
/// Sources the seeder must be tracking before the loaded download starts.
const FLOOD_UNDER_WAY: usize = 40;

/// One download of `len` bytes from a fresh seeder to a fresh leecher, flooded or not.
/// Returns MiB/s of the download (start to complete, verified).
async fn run(len: usize, seed: u64, flooded: bool, link: Option<u64>) -> f64 {
    let seeder = TestNode::start_with(Behaviour::default(), |c| {
        c.node.upload_limit = link.map(tally_node::rate::Rate);
    })
    .await;
    let leecher = TestNode::start(Behaviour::default()).await;
    let bytes = payload(len, seed);
    let content = seeder.share(&bytes);
    leecher.connect(&seeder).await;
    let child = flooded.then(|| {
        let target = format!(
            "{}|{}|{}|{content}|{}",
            seeder.id(),
            seeder.node.quic_addr().unwrap(),
            seeder.shared().network_name,
            len.div_ceil(CHUNK_SIZE as usize)
        );
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD, target)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    });
    if child.is_some() {
        // Time the download under the flood, not before it: wait for the clients to arrive.
        let admission = seeder.shared().endpoint.admission();
        let waiting = Instant::now();
        while admission.tracked() < FLOOD_UNDER_WAY && waiting.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "  (flood: {} sources at the seeder when the download starts)",
            admission.tracked()
        );
    }
    let out = leecher.out("bench.bin");
    let started = Instant::now();
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    let took = started.elapsed();
    assert!(std::fs::read(&out).unwrap() == bytes, "the file differs");
    if let Some(mut child) = child {
        let cpu = cpu_seconds(child.id());
        eprintln!(
            "  (flood: the clients' process used {cpu:.1} s of CPU by the end of the download, \
             which took {:.1} s)",
            took.as_secs_f64()
        );
        // Closing its stdin stops the clients.
        drop(child.stdin.take());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "the flood's process failed: {status}");
        let banned = seeder.shared().endpoint.admission().banned().len();
        eprintln!("  (flood: {banned} sources banned at the seeder by the end)");
    }
    leecher.stop().await;
    seeder.stop().await;
    len as f64 / MIB / took.as_secs_f64().max(1e-9)
}

/// The environment variable that makes this binary the flood's client process: the target as
/// `PEERID|ADDR|NETWORK|CONTENT|CHUNKS`.
const CHILD: &str = "TALLY_FLOOD_CHILD";

/// The client process: runs every client at the target until stdin closes.
fn clients(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let target = flood::Target {
        peer: parts[0].parse().unwrap(),
        addr: parts[1].parse().unwrap(),
        network: tally_ledger::NetworkId::from_name(parts[2]),
        content: parts[3].parse().unwrap(),
        chunks: parts[4].parse().unwrap(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stopper.cancel();
        });
        let mut set = flood::launch(target, stop);
        while let Some(outcome) = set.join_next().await {
            outcome.unwrap();
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

/// CPU time (user + system) process `pid` has used, seconds (Linux, 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        clients(&spec);
        return;
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mib: usize = std::env::var("TALLY_BENCH_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if benchmarking { 64 } else { 4 });
    // The seeder's upload link in MiB/s (unset: unlimited, and then the honest transfer is
    // bound by the CPU the clients share with it).
    let link: Option<u64> = std::env::var("TALLY_BENCH_LINK_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|mib| mib << 20);
    let rounds: usize = std::env::var("TALLY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
        .max(1);
    let len = mib * (1 << 20) + 12_345;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "flood bench: {mib} MiB download, {} misbehaving clients, {rounds} round(s), seeder's link {}",
        flood::CLIENTS,
        link.map_or("unlimited".to_owned(), |l| format!("{} MiB/s", l >> 20))
    );
    let (mut unloaded, mut loaded) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let seed = 100 + round as u64 * 2;
        let before = load();
        let alone = runtime.block_on(run(len, seed, false, link));
        println!(
            "  unloaded: {alone:8.1} MiB/s  (load {before} -> {})",
            load()
        );
        let before = load();
        let flooded = runtime.block_on(run(len, seed + 1, true, link));
        println!(
            "  loaded:   {flooded:8.1} MiB/s  (load {before} -> {})",
            load()
        );
        unloaded.push(alone);
        loaded.push(flooded);
    }
    let (u, l) = (median(unloaded), median(loaded));
    println!(
        "flood: unloaded {u:.1} MiB/s, loaded {l:.1} MiB/s, ratio {:.2} (target >= 0.70)",
        l / u
    );
    // Give the clients' endpoints a moment to drain before the runtime goes.
    runtime.shutdown_timeout(Duration::from_secs(2));
}
