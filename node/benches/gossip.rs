//! Gossip between real nodes: N nodes in this process, each with its own QUIC endpoint on
//! 127.0.0.1, sled store and gossip loop, in a sparse random topology (each node dials 2 random
//! earlier ones). Measures:
//!
//! - **spread**: seconds (and gossip intervals) until 99% and 100% of nodes hold a receipt made
//!   at one node, for N = 10 and 30 (several trials each);
//! - **conflict**: seconds until every one of N = 100 nodes holds a conflict proof learned at
//!   one node (flooded at once, not left to the periodic sync);
//! - **idle**: gossip bytes per node per second when nothing changes;
//! - **steady**: gossip bytes per new receipt per node while receipts are made between random
//!   nodes at 1 and at N/10 per interval (N = 30), from the first until every node holds every
//!   one, against the receipt's encoded size (target ≤ 3×).
//!
//! The sans-I/O propagation model for rounds at larger N is `ledger/benches/gossip.rs`.
//!
//! `cargo bench -p tally-node --bench gossip` (about a minute). `TALLY_BENCH_INTERVAL_MS`
//! sets every node's `gossip_interval_ms` (default 1000), `TALLY_BENCH_TRIALS` the spread
//! trials per size (default 5). Without `--bench` (as under `cargo test --benches`) a smoke run
//! with 5 nodes.
// A bench panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/load.rs"]
mod load;
use load::load;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use tally_ledger::{ConflictProof, Identity, NetworkId, Receipt, ReceiptBody};
use tally_node::config::{Config, PeerAddr};
use tally_node::daemon::{Behaviour, Node, NodeParts, Shared, peers};
use tally_node::gossip::session;

const DEADLINE: Duration = Duration::from_secs(120);

struct BenchNode {
    node: Node,
    identity: Identity,
    _dir: tempfile::TempDir,
}

impl BenchNode {
    async fn start(interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.node.listen = "127.0.0.1:0".parse().unwrap();
        config.node.gossip_interval = interval;
        // The topology stays as built.
        config.node.target_peers = 0;
        let identity = Identity::generate(&mut rand::rng());
        let secret = identity.secret_bytes();
        let parts = NodeParts::open(dir.path(), identity, config, Behaviour::default()).unwrap();
        let node = Node::start(parts).await.unwrap();
        Self {
            node,
            identity: Identity::from_secret_bytes(secret),
            _dir: dir,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.node.shared()
    }

    async fn connect(&self, other: &BenchNode) {
        let addr = PeerAddr {
            peer_id: other.node.peer_id(),
            addr: other.node.quic_addr().unwrap().to_string(),
        };
        peers::connect(self.shared(), addr).await.unwrap();
        let start = Instant::now();
        while self
            .shared()
            .peers
            .connection(&other.node.peer_id())
            .is_none()
            || other
                .shared()
                .peers
                .connection(&self.node.peer_id())
                .is_none()
        {
            assert!(start.elapsed() < DEADLINE, "no connection");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn bytes_received(&self) -> u64 {
        self.shared()
            .gossip
            .stats
            .bytes_received
            .load(Ordering::Relaxed)
    }
}

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn receipt(up: &Identity, down: &Identity, seq: u64) -> Receipt {
    ReceiptBody {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
        seq,
        bytes: seq << 20,
        credits: seq << 20,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(down, &net())
    .countersign(up, &net())
}

async fn network(n: usize, interval: Duration, seed: u64) -> Vec<BenchNode> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut nodes: Vec<BenchNode> = Vec::new();
    for i in 0..n {
        let node = BenchNode::start(interval).await;
        let mut targets = Vec::new();
        while i > 0 && targets.len() < i.min(2) {
            let t = rng.random_range(0..i);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        for t in targets {
            node.connect(&nodes[t]).await;
        }
        nodes.push(node);
    }
    nodes
}

async fn stop(nodes: Vec<BenchNode>) {
    let mut stopping = tokio::task::JoinSet::new();
    for bench in nodes {
        let BenchNode {
            node, _dir: dir, ..
        } = bench;
        stopping.spawn(async move {
            let stopped = node.shutdown(Duration::from_secs(5)).await;
            // The data dir goes only once the node has flushed into it.
            drop(dir);
            stopped
        });
    }
    while let Some(done) = stopping.join_next().await {
        done.unwrap().unwrap();
    }
}

/// Polls until `count()` reaches `target`; returns the seconds it took.
async fn until(start: Instant, target: usize, mut count: impl FnMut() -> usize) -> f64 {
    while count() < target {
        assert!(start.elapsed() < DEADLINE, "gossip did not converge");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds until 99% and all of the nodes hold a receipt made at one random node.
async fn spread(n: usize, interval: Duration, trials: usize) {
    let nodes = network(n, interval, n as u64).await;
    // Let the records of the start spread (a few intervals) and stop being news (a node keeps
    // a record hot for RUMOUR_INTERVALS after it learns it), so the idle figure is idle.
    tokio::time::sleep(interval * (tally_node::gossip::RUMOUR_INTERVALS + 12)).await;
    let idle_from = (
        Instant::now(),
        nodes.iter().map(BenchNode::bytes_received).sum::<u64>(),
    );
    tokio::time::sleep(interval * 5).await;
    let idle_bytes = nodes.iter().map(BenchNode::bytes_received).sum::<u64>() - idle_from.1;
    let idle_rate = idle_bytes as f64 / idle_from.0.elapsed().as_secs_f64() / n as f64;
    let (mut at99, mut at100, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for trial in 0..trials {
        let up = rng.random_range(0..n);
        let down = (up + rng.random_range(1..n)) % n;
        let made = receipt(&nodes[up].identity, &nodes[down].identity, trial as u64 + 1);
        let before: u64 = nodes.iter().map(BenchNode::bytes_received).sum();
        let start = Instant::now();
        nodes[up]
            .shared()
            .store
            .apply(&made.verify(&net()).unwrap())
            .unwrap();
        let holding = || {
            nodes
                .iter()
                .filter(|b| b.shared().store.latest(&made.pair()).unwrap().as_ref() == Some(&made))
                .count()
        };
        at99.push(until(start, (n * 99).div_ceil(100), holding).await);
        at100.push(until(start, n, holding).await);
        let after: u64 = nodes.iter().map(BenchNode::bytes_received).sum();
        bytes.push((after - before) as f64);
    }
    let interval_s = interval.as_secs_f64();
    let (m99, m100) = (median(&mut at99.clone()), median(&mut at100.clone()));
    let max99 = at99.iter().copied().fold(0.0, f64::max);
    println!(
        "| {n} | {:.1} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} | {:.1} | {:.0} | {:.0} | {} |",
        2.0 * (n as f64).log2(),
        m99,
        max99,
        m99 / interval_s,
        max99 / interval_s,
        m100,
        m100 / interval_s,
        median(&mut bytes) / n as f64,
        idle_rate,
        load()
    );
    stop(nodes).await;
}

/// Gossip bytes per new receipt per node while `per_interval` receipts are made each interval
/// for `intervals` intervals between random nodes (both parties hold each at once).
async fn steady(n: usize, interval: Duration, per_interval: usize, intervals: usize) {
    let nodes = network(n, interval, 3).await;
    // As in `spread`: the start's records stop being news first.
    tokio::time::sleep(interval * (tally_node::gossip::RUMOUR_INTERVALS + 12)).await;
    let idle_from = (
        Instant::now(),
        nodes.iter().map(BenchNode::bytes_received).sum::<u64>(),
    );
    tokio::time::sleep(interval * 5).await;
    let idle_bytes = nodes.iter().map(BenchNode::bytes_received).sum::<u64>() - idle_from.1;
    let idle_rate = idle_bytes as f64 / idle_from.0.elapsed().as_secs_f64();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut made: Vec<Receipt> = Vec::new();
    let mut seqs = std::collections::HashMap::new();
    let before: u64 = nodes.iter().map(BenchNode::bytes_received).sum();
    let start = Instant::now();
    for _ in 0..intervals {
        for _ in 0..per_interval {
            let up = rng.random_range(0..n);
            let down = (up + rng.random_range(1..n)) % n;
            let seq = seqs.entry((up, down)).or_insert(0u64);
            *seq += 1;
            let receipt = receipt(&nodes[up].identity, &nodes[down].identity, *seq);
            let verified = receipt.verify(&net()).unwrap();
            nodes[up].shared().store.apply(&verified).unwrap();
            nodes[down].shared().store.apply(&verified).unwrap();
            made.push(receipt);
        }
        tokio::time::sleep(interval).await;
    }
    let latest: std::collections::HashMap<_, Receipt> =
        made.iter().map(|r| (r.pair(), *r)).collect();
    let all_hold = || {
        nodes
            .iter()
            .filter(|b| {
                latest
                    .values()
                    .all(|r| b.shared().store.latest(&r.pair()).unwrap().as_ref() == Some(r))
            })
            .count()
    };
    let spread_s = until(start, n, all_hold).await;
    let bytes = nodes.iter().map(BenchNode::bytes_received).sum::<u64>() - before;
    let mean_size = made
        .iter()
        .map(|r| postcard::to_allocvec(r).unwrap().len())
        .sum::<usize>() as f64
        / made.len() as f64;
    let per = |b: f64| b / (made.len() * n) as f64;
    let idle = idle_rate * spread_s;
    println!(
        "| {n} | {per_interval} | {} | {mean_size:.1} | {:.1} | {:.0} | {:.2} | {:.0} | {:.2} | {} |",
        made.len(),
        spread_s,
        per(bytes as f64),
        per(bytes as f64) / mean_size,
        per(bytes as f64 - idle),
        per(bytes as f64 - idle) / mean_size,
        load()
    );
    stop(nodes).await;
}

/// Seconds until all `n` nodes mark both keys of a conflict proof dishonest.
async fn conflict(n: usize, interval: Duration) {
    let started = Instant::now();
    let nodes = network(n, interval, 7).await;
    let setup = started.elapsed().as_secs_f64();
    tokio::time::sleep(interval * 2).await;
    let (x, y) = (&nodes[1].identity, &nodes[2].identity);
    let proof = ConflictProof::new(receipt(x, y, 5), {
        let mut body = receipt(x, y, 5).body();
        body.bytes += 1;
        body.propose(y, &net()).countersign(x, &net())
    })
    .unwrap();
    let start = Instant::now();
    session::learn_conflict(nodes[n - 1].shared(), proof, None)
        .await
        .unwrap();
    let marked = || {
        nodes
            .iter()
            .filter(|b| b.shared().store.is_dishonest(&x.peer_id()).unwrap())
            .count()
    };
    let half = until(start, n / 2, marked).await;
    let all = until(start, n, marked).await;
    println!(
        "| {n} | {:.3} | {:.3} | {:.1} | {} |",
        half,
        all,
        setup,
        load()
    );
    stop(nodes).await;
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let interval = Duration::from_millis(
        std::env::var("TALLY_BENCH_INTERVAL_MS")
            .map_or(1000, |v| v.parse().expect("TALLY_BENCH_INTERVAL_MS: ms")),
    );
    let trials: usize = std::env::var("TALLY_BENCH_TRIALS")
        .map_or(if benchmarking { 5 } else { 1 }, |v| {
            v.parse().expect("TALLY_BENCH_TRIALS: a number")
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "gossip between real nodes on 127.0.0.1: gossip_interval {} ms, {cpus} CPUs, load {}",
        interval.as_millis(),
        load()
    );
    let (sizes, conflict_n): (&[usize], usize) = if benchmarking {
        (&[10, 30], 100)
    } else {
        (&[5], 5)
    };
    println!();
    println!("spread of one new receipt ({trials} trials; rounds = seconds ÷ interval)");
    println!();
    println!(
        "| N | target rounds 2·log2 N | 99%: s median / max | 99%: rounds median / max | 100%: s | 100%: rounds | gossip bytes per node for it | idle bytes per node per s | load |"
    );
    println!("|---:|---:|---|---|---:|---:|---:|---:|---|");
    for &n in sizes {
        runtime.block_on(spread(n, interval, trials));
    }
    let (steady_n, steady_intervals) = if benchmarking { (30, 20) } else { (5, 3) };
    println!();
    println!(
        "steady load: receipts made between random nodes each interval for {steady_intervals} intervals; bytes from the first until every node holds all, per receipt per node; marginal: less the idle rate over that time"
    );
    println!();
    println!(
        "| N | new receipts per interval | made | receipt bytes | until all hold all, s | bytes per receipt per node | × receipt | marginal | marginal × receipt | load |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for per_interval in [1, (steady_n / 10).max(1), steady_n] {
        runtime.block_on(steady(steady_n, interval, per_interval, steady_intervals));
    }
    println!();
    println!("a conflict proof learned at one node (flooded at once)");
    println!();
    println!("| N | half the nodes, s | every node, s | network set-up, s | load |");
    println!("|---:|---:|---:|---:|---|");
    runtime.block_on(conflict(conflict_n, interval));
}
