//! Standing: the cost of one new receipt (incremental update) and of a full recompute, on
//! contribution graphs of 10,000, 100,000 and 1,000,000 edges.
//!
//! Graph: `edges / 10` peers; each edge an uploader → downloader pair with random credits, the
//! uploader drawn from a skewed distribution (a few peers upload much), the downloader uniform;
//! this node (peer 0) has about 100 direct contributors and downloaders of its own. Updates: new
//! cumulative receipts on random existing pairs — *anywhere* (most far from this node, as most
//! gossiped receipts are), *near* (the downloader is this node or one of its direct
//! contributors: the updates that move the most mass).
//!
//! `cargo bench -p tally-market --bench standing`; without `--bench` (as under
//! `cargo test --benches`) a smoke run at 10,000 edges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tally_ledger::PeerId;
use tally_market::{Standing, StandingParams};

fn peer(i: u32) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes[31] = 0x55;
    PeerId(bytes)
}

/// Skewed toward small values: the square of a uniform draw.
fn skewed(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let u = rng.random_range(0..n);
    u * u / n.max(1)
}

struct Graph {
    pairs: Vec<(u32, u32, u64)>,
    peers: u32,
}

fn graph(edges: usize, seed: u64) -> Graph {
    let peers = (edges / 10).max(200) as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::with_capacity(edges);
    // This node's own trades.
    for i in 1..=100u32 {
        for (up, down) in [(i, 0), (0, i + 100)] {
            seen.insert((up, down));
            pairs.push((up, down, (1 + rng.random_range(0..1_000)) << 20));
        }
    }
    while pairs.len() < edges {
        let up = 1 + skewed(&mut rng, u64::from(peers - 1)) as u32;
        let down = rng.random_range(0..u64::from(peers)) as u32;
        if up != down && seen.insert((up, down)) {
            pairs.push((up, down, (1 + rng.random_range(0..1_000)) << 20));
        }
    }
    Graph { pairs, peers }
}

fn build(graph: &Graph) -> Standing {
    let mut standing = Standing::new(peer(0), StandingParams::default());
    for (up, down, credits) in &graph.pairs {
        standing.observe(peer(*up), peer(*down), *credits);
    }
    standing
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if benchmarking {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000]
    };
    let updates = if benchmarking { 20_000 } else { 2_000 };
    println!(
        "standing: hops {}, endorse {}; {updates} updates per kind",
        StandingParams::default().hops,
        StandingParams::default().endorse
    );
    println!();
    println!(
        "| edges | peers | build (observe each edge) | full recompute | update, anywhere: mean | max | update, near this node: mean | max | explain (top 5 chains), mean | peers above the floor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &edges in sizes {
        let g = graph(edges, 1);
        let started = Instant::now();
        let mut standing = build(&g);
        let build_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let rounds = if edges >= 1_000_000 { 3 } else { 10 };
        for _ in 0..rounds {
            standing.recompute();
        }
        let recompute_s = started.elapsed().as_secs_f64() / f64::from(rounds);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut credits: std::collections::HashMap<(u32, u32), u64> =
            g.pairs.iter().map(|(u, d, c)| ((*u, *d), *c)).collect();
        let mut time_updates = |near: bool, rng: &mut ChaCha8Rng| {
            let (mut total, mut max) = (0.0f64, 0.0f64);
            for _ in 0..updates {
                let (up, down) = if near {
                    // Into this node, or into one of its direct contributors.
                    let i = 1 + rng.random_range(0..100) as u32;
                    if rng.random_range(0..2) == 0 {
                        (i, 0)
                    } else {
                        let (u, d, _) = g.pairs[rng.random_range(0..g.pairs.len() as u64) as usize];
                        let _ = d;
                        (u, i)
                    }
                } else {
                    let (u, d, _) = g.pairs[rng.random_range(0..g.pairs.len() as u64) as usize];
                    (u, d)
                };
                if up == down {
                    continue;
                }
                let held = credits.entry((up, down)).or_insert(0);
                *held += (1 + rng.random_range(0..16)) << 20;
                let at = Instant::now();
                standing.observe(peer(up), peer(down), *held);
                let took = at.elapsed().as_secs_f64();
                total += took;
                max = max.max(took);
            }
            (total / f64::from(updates), max)
        };
        let (anywhere, anywhere_max) = time_updates(false, &mut rng);
        let (near, near_max) = time_updates(true, &mut rng);
        let started = Instant::now();
        let explained = 200;
        for i in 0..explained {
            let who = peer(1 + (i * 7919) % (g.peers - 1));
            std::hint::black_box(standing.explain(&who, 5));
        }
        let explain_s = started.elapsed().as_secs_f64() / f64::from(explained);
        let above = standing.above_floor().len();
        println!(
            "| {edges} | {} | {:.2} s | {:.1} ms | {:.2} µs | {:.2} ms | {:.1} µs | {:.2} ms | {:.2} ms | {above} |",
            standing.peer_count(),
            build_s,
            recompute_s * 1e3,
            anywhere * 1e6,
            anywhere_max * 1e3,
            near * 1e6,
            near_max * 1e3,
            explain_s * 1e3,
        );
        // The increments agree with a recompute.
        let mut fresh = standing.clone();
        fresh.recompute();
        let mut worst = 0.0f64;
        for i in 0..g.peers {
            let (a, b) = (standing.of(&peer(i)).raw, fresh.of(&peer(i)).raw);
            worst = worst.max((a - b).abs() / (1.0 + b.abs()));
        }
        assert!(worst < 1e-6, "increments drifted from a recompute: {worst}");
    }
}
