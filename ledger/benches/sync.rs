//! Gossip's set reconciliation at ledger scale: the bytes and round trips one sync between two
//! nodes costs when they hold 100,000 pairs and nothing changed, or 1, 10, 100 or 1,000 pairs
//! differ, the time each side spends per round, and the same against the naive summary (pair →
//! seq for every pair, as `Store::summary` would send: 72 bytes a pair), for both first messages
//! (`initiate_with`'s fingerprints and `initiate_whole_with`'s one). When one pair differs, the
//! size of each message and the mean length of its bounds, at 100,000 pairs and on the gossip
//! bench's ledger (1,000 pairs among 200 identities). Also the index's own costs (build, insert,
//! fingerprint queries) and other parameter choices.
//!
//! `cargo bench -p tally-ledger --bench sync` runs it (well under a minute). `TALLY_BENCH_PAIRS=N`
//! changes the ledger size. Without `--bench` (as under `cargo test --benches`) it runs a small
//! smoke test at 2,000 pairs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tally_ledger::sync::{
    Bound, Key, Message, SyncItems, SyncParams, initiate_whole_with, initiate_with, respond_with,
};

/// The ledger's pairs are made among this many identities (about 50 downloaders per uploader at
/// 100,000 pairs), so keys share their uploader half as in a real ledger.
const IDENTITIES: u64 = 2_000;
/// Bytes of one entry of the naive summary: a 64-byte pair and a u64 seq.
const NAIVE_ENTRY: usize = 72;
/// Runs of each timed step; the median is reported.
const RUNS: usize = 5;

/// SplitMix64, so every run measures the same ledgers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn peer(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn random_pair(rng: &mut Rng, identities: u64) -> Key {
    loop {
        let (up, down) = (rng.below(identities), rng.below(identities));
        if up != down {
            let mut key = [0u8; 64];
            key[..32].copy_from_slice(&peer(up));
            key[32..].copy_from_slice(&peer(down));
            return key;
        }
    }
}

/// `n` distinct pairs among `identities` with seqs 1..=20.
fn ledger(n: usize, identities: u64, seed: u64) -> Vec<(Key, u64)> {
    let mut rng = Rng(seed);
    let mut keys = std::collections::BTreeMap::new();
    while keys.len() < n {
        keys.insert(random_pair(&mut rng, identities), 1 + rng.below(20));
    }
    keys.into_iter().collect()
}

/// Applies `changes` differences between `a` and `b` (each on a distinct pair), half on each
/// side: half a newer receipt of a pair both hold, half a pair only one side holds.
fn diverge(
    a: &mut SyncItems,
    b: &mut SyncItems,
    base: &[(Key, u64)],
    identities: u64,
    changes: usize,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut changed = std::collections::HashSet::new();
    for i in 0..changes {
        let side = if i % 2 == 0 { &mut *a } else { &mut *b };
        loop {
            if i % 4 < 2 {
                let (key, seq) = base[rng.below(base.len() as u64) as usize];
                if changed.insert(key) {
                    side.insert(key, seq + 1 + rng.below(3));
                    break;
                }
            } else {
                let key = random_pair(&mut rng, identities);
                if side.get(&key).is_none() && changed.insert(key) {
                    side.insert(key, 1);
                    break;
                }
            }
        }
    }
}

/// One sync, measured.
#[derive(Default, Clone)]
struct Sync {
    messages: usize,
    bytes: [usize; 2],
    pushed: usize,
    /// Time spent in `initiate` and each `respond`, decoding included.
    compute: Duration,
    slowest: Duration,
    /// Each message's encoded bytes, in order.
    sizes: Vec<usize>,
    /// Each message's mean bound length: bytes of its prefixes (End not counted) per range.
    bounds: Vec<f64>,
}

/// The initiator's first message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// `initiate_with`: `branching` fingerprints.
    Split,
    /// `initiate_whole_with`: one fingerprint of the whole set.
    Whole,
}

impl Opening {
    fn name(self) -> &'static str {
        match self {
            Opening::Split => "`initiate_with`",
            Opening::Whole => "`initiate_whole_with`",
        }
    }

    fn message(self, items: &SyncItems, params: &SyncParams) -> Message {
        match self {
            Opening::Split => initiate_with(items, params),
            Opening::Whole => initiate_whole_with(items, params),
        }
    }
}

fn sync_opening(a: &SyncItems, b: &SyncItems, params: &SyncParams, opening: Opening) -> Sync {
    let sides = [a, b];
    let mut out = Sync::default();
    let started = Instant::now();
    let mut message = opening.message(a, params);
    out.compute += started.elapsed();
    out.slowest = out.compute;
    let mut turn = 1;
    loop {
        let encoded = message.encode();
        out.messages += 1;
        out.bytes[1 - turn] += encoded.len();
        out.sizes.push(encoded.len());
        let prefixes: usize = message
            .ranges
            .iter()
            .filter_map(|r| r.upper().as_prefix().map(<[u8]>::len))
            .sum();
        out.bounds
            .push(prefixes as f64 / message.ranges.len() as f64);
        let started = Instant::now();
        let decoded = Message::decode(&encoded).unwrap();
        let reply = respond_with(sides[turn], &decoded, params).unwrap();
        let took = started.elapsed();
        out.compute += took;
        out.slowest = out.slowest.max(took);
        out.pushed += reply.send.len();
        match reply.message {
            None => return out,
            Some(next) => message = next,
        }
        turn = 1 - turn;
    }
}

/// The run with the median compute time of `RUNS`.
fn median_sync(a: &SyncItems, b: &SyncItems, params: &SyncParams, opening: Opening) -> Sync {
    let mut runs: Vec<Sync> = (0..RUNS)
        .map(|_| sync_opening(a, b, params, opening))
        .collect();
    runs.sort_by_key(|r| r.compute);
    runs[RUNS / 2].clone()
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    times.sort();
    times[RUNS / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let pairs: usize = std::env::var("TALLY_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 100_000 } else { 2_000 });
    let default = SyncParams::default();
    println!(
        "sync bench: {pairs} pairs among {IDENTITIES} identities; branching {}, items threshold {}, reply budget {} bytes",
        default.branching(),
        default.items_threshold(),
        default.reply_budget()
    );

    // The index itself.
    let base = ledger(pairs, IDENTITIES, 1);
    let mut built = SyncItems::new();
    let build = median(|| {
        let started = Instant::now();
        built = base.iter().copied().collect();
        started.elapsed()
    });
    let extra = ledger(1_000, IDENTITIES, 99);
    let insert = median(|| {
        let mut items = built.clone();
        let started = Instant::now();
        for (key, seq) in &extra {
            items.insert(*key, seq + 100);
        }
        started.elapsed() / extra.len() as u32
    });
    let full = median(|| {
        let started = Instant::now();
        for _ in 0..1_000 {
            std::hint::black_box(built.fingerprint(&Bound::START, &Bound::END));
        }
        started.elapsed() / 1_000
    });
    let mut rng = Rng(5);
    let bounds: Vec<(Bound, Bound)> = (0..1_000)
        .map(|_| {
            let (x, y) = (rng.next().to_be_bytes(), rng.next().to_be_bytes());
            let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
            (
                Bound::prefix(&lo[..3]).unwrap(),
                Bound::prefix(&hi[..3]).unwrap(),
            )
        })
        .collect();
    let ranged = median(|| {
        let started = Instant::now();
        for (lo, hi) in &bounds {
            std::hint::black_box(built.fingerprint(lo, hi));
        }
        started.elapsed() / bounds.len() as u32
    });
    let initiate = median(|| {
        let started = Instant::now();
        std::hint::black_box(initiate_with(&built, &default));
        started.elapsed()
    });
    let initiate_whole = median(|| {
        let started = Instant::now();
        std::hint::black_box(initiate_whole_with(&built, &default));
        started.elapsed()
    });
    println!();
    println!("| index at {pairs} pairs | time |");
    println!("|---|---:|");
    println!(
        "| build from a sorted list | {:.1} ms |",
        build.as_secs_f64() * 1e3
    );
    println!("| insert (new pair or newer seq) | {} µs |", us(insert));
    println!(
        "| fingerprint of the whole set (running total) | {} ns |",
        full.as_nanos()
    );
    println!("| fingerprint of a random range | {} µs |", us(ranged));
    println!(
        "| initiate ({} fingerprints) | {} µs |",
        default.branching(),
        us(initiate)
    );
    println!(
        "| initiate_whole (one fingerprint) | {} µs |",
        us(initiate_whole)
    );

    // The exchange the node ran so far (16 fingerprints first, branching and threshold 16), and
    // the one recommended for it (the whole-set fingerprint first, the default parameters).
    let old = SyncParams::new(16, 16, default.reply_budget()).unwrap();
    let configurations = [
        ("old", Opening::Split, old),
        ("node", Opening::Whole, default),
    ];

    // One sync, against the naive summary.
    println!();
    println!(
        "| first message | B / T | changes | messages | round trips | bytes A→B | bytes B→A | total bytes | receipts pushed | bytes per change | naive bytes (both summaries) | compute per round (median) | slowest step |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let naive = 2 * NAIVE_ENTRY * pairs;
    for (role, opening, params) in configurations {
        for changes in [0usize, 1, 10, 100, 1_000] {
            let (mut a, mut b) = (built.clone(), built.clone());
            diverge(
                &mut a,
                &mut b,
                &base,
                IDENTITIES,
                changes,
                7 + changes as u64,
            );
            let run = median_sync(&a, &b, &params, opening);
            let total = run.bytes[0] + run.bytes[1];
            let rounds = run.messages.div_ceil(2);
            println!(
                "| {} ({role}) | {} / {} | {changes} | {} | {rounds} | {} | {} | {total} | {} | {} | {naive} | {} µs | {} µs |",
                opening.name(),
                params.branching(),
                params.items_threshold(),
                run.messages,
                run.bytes[0],
                run.bytes[1],
                run.pushed,
                total
                    .checked_div(changes)
                    .map_or("–".to_string(), |b| b.to_string()),
                us(run.compute / rounds as u32),
                us(run.slowest),
            );
            if changes == 0 {
                assert!(
                    total <= 2048,
                    "nothing changed cost {total} bytes, over 2 KiB"
                );
                assert_eq!(rounds, 1);
            }
        }
    }

    // One pair differs, message by message.
    println!();
    println!(
        "One pair differs (a newer seq of one pair on one side): each message in order, its bytes and its bounds' mean length (bytes of prefix per range, End counted as 0)."
    );
    println!();
    println!(
        "| ledger | first message | B / T | newer at | messages | bytes of each message | mean bound length of each | total bytes |"
    );
    println!("|---|---|---|---|---:|---|---|---:|");
    let small = (1_000usize, 200u64);
    for (n, identities) in [(pairs, IDENTITIES), small] {
        let listed = if n == pairs {
            base.clone()
        } else {
            ledger(n, identities, 1)
        };
        let items: SyncItems = listed.iter().copied().collect();
        let (key, seq) = listed[n / 3];
        for (branching, threshold) in [(16, 16), (8, 8), (4, 4)] {
            let params = SyncParams::new(branching, threshold, default.reply_budget()).unwrap();
            for opening in [Opening::Split, Opening::Whole] {
                for (side, name) in [(0, "initiator"), (1, "responder")] {
                    let (mut a, mut b) = (items.clone(), items.clone());
                    [&mut a, &mut b][side].insert(key, seq + 1);
                    let run = sync_opening(&a, &b, &params, opening);
                    assert_eq!(run.pushed, 1);
                    let list = |v: &[String]| v.join(", ");
                    println!(
                        "| {} pairs / {identities} ids | {} | {branching} / {threshold} | {name} | {} | {} | {} | {} |",
                        n,
                        opening.name(),
                        run.messages,
                        list(&run.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                        list(
                            &run.bounds
                                .iter()
                                .map(|b| format!("{b:.1}"))
                                .collect::<Vec<_>>()
                        ),
                        run.bytes[0] + run.bytes[1],
                    );
                }
            }
        }
    }

    // A newcomer and a half-synced peer.
    println!();
    println!(
        "| case | first message | B / T | messages | total bytes | receipts pushed | naive bytes | compute (all rounds) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    let empty = SyncItems::new();
    let half: SyncItems = base.iter().step_by(2).copied().collect();
    for (name, a, b) in [
        ("newcomer (empty) initiates", &empty, &built),
        ("newcomer (empty) responds", &built, &empty),
        ("peer holds every second pair", &half, &built),
    ] {
        for (role, opening, params) in configurations {
            let run = median_sync(a, b, &params, opening);
            let naive = NAIVE_ENTRY * (a.len() + b.len());
            println!(
                "| {name} | {} ({role}) | {} / {} | {} | {} | {} | {naive} | {:.1} ms |",
                opening.name(),
                params.branching(),
                params.items_threshold(),
                run.messages,
                run.bytes[0] + run.bytes[1],
                run.pushed,
                run.compute.as_secs_f64() * 1e3
            );
        }
    }

    // Other parameters, at 1 and 100 changes.
    println!();
    println!(
        "| first message | branching | items threshold | changes | messages | total bytes | bytes per change |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for opening in [Opening::Split, Opening::Whole] {
        for (branching, threshold) in [
            (16, 16),
            (16, 8),
            (16, 32),
            (8, 8),
            (8, 16),
            (8, 4),
            (4, 4),
            (32, 32),
        ] {
            let params = SyncParams::new(branching, threshold, default.reply_budget()).unwrap();
            for changes in [1usize, 100] {
                let (mut a, mut b) = (built.clone(), built.clone());
                diverge(
                    &mut a,
                    &mut b,
                    &base,
                    IDENTITIES,
                    changes,
                    7 + changes as u64,
                );
                let run = sync_opening(&a, &b, &params, opening);
                let total = run.bytes[0] + run.bytes[1];
                println!(
                    "| {} | {branching} | {threshold} | {changes} | {} | {total} | {} |",
                    opening.name(),
                    run.messages,
                    total / changes
                );
            }
        }
    }
}
