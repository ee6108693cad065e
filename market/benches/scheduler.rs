//! The upload scheduler's hot path: one `next()` plus the `enqueue()` that refills the served
//! peer, with 1,000 and 10,000 peers waiting (standings spread over `[0, 1)`, a quarter at the
//! floor, requests of 16–256 KiB).
//!
//! `cargo bench -p tally-market --bench scheduler` runs it at full length and prints operations
//! per second. Without `--bench` (as under `cargo test --benches`) it runs a short smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use tally_ledger::PeerId;
use tally_market::{Scheduler, SchedulerConfig};

const NOW: u64 = 1_773_144_000_000;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn peer(i: usize) -> PeerId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[8..16].copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    PeerId(id)
}

/// Returns (next+enqueue pairs per second, position() calls per second).
fn measure(peers: usize, ops: usize) -> (f64, f64) {
    let mut rng = 42u64;
    let mut s: Scheduler<u32> = Scheduler::new(SchedulerConfig {
        max_requests_total: peers * 4,
        ..SchedulerConfig::default()
    });
    let mut size = || 16_384 + splitmix(&mut rng) % (240 * 1024);
    for i in 0..peers {
        let standing = if i % 4 == 0 {
            0.0
        } else {
            (i % 1000) as f64 / 1000.0
        };
        s.set_standing(peer(i), standing);
        for r in 0..2 {
            s.enqueue(peer(i), r, size()).unwrap();
        }
    }
    let start = Instant::now();
    for _ in 0..ops {
        let d = s.next(NOW).unwrap().unwrap();
        s.enqueue(d.peer, d.request, size()).unwrap();
        black_box(&d.peer);
    }
    let hot = ops as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let probes = ops / 10;
    for i in 0..probes {
        black_box(s.position(&peer(i % peers)));
    }
    let explain = probes as f64 / start.elapsed().as_secs_f64();
    (hot, explain)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let ops = if full { 2_000_000 } else { 10_000 };
    for peers in [1_000, 10_000] {
        let (hot, explain) = measure(peers, ops);
        println!(
            "scheduler: {peers:>6} peers waiting: {:>6.2} M next()+enqueue()/s, {:>6.2} M position()/s",
            hot / 1e6,
            explain / 1e6
        );
    }
}
