//! Retention: the time of one eviction pass of [`Store::enforce_cap`] at 100,000 third-party
//! receipts, and the cost of the call while under the cap.
//!
//! `cargo bench -p tally-ledger --bench evict` runs it at full size (filling the store signs and
//! verifies every receipt: some seconds). `TALLY_BENCH_PAIRS=N` sets the number of third-party
//! receipts; `TALLY_BENCH_DIR` says where the store goes. Without `--bench` (as under
//! `cargo test --benches`) it runs a small smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_ledger::{
    Applied, Identity, NetworkId, PeerId, ReceiptBody, Store, StoreConfig, VerifiedReceipt,
    verify_batch,
};

/// Receipts per verification batch and between flushes while filling.
const CHUNK: usize = 1_000;
/// Identities: index 0 is the owner, the rest trade among themselves.
const IDENTITIES: usize = 2_000;
/// The owner's own receipts: with the first of these peers, both directions.
const OWN_PEERS: usize = 50;

fn network() -> NetworkId {
    NetworkId::from_name("tally-bench")
}

fn identities(n: usize) -> Vec<Identity> {
    (0..n as u64)
        .map(|i| {
            let mut seed = [0x6bu8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(seed)
        })
        .collect()
}

/// Receipt `i` of the fill: the first `2 * OWN_PEERS` are the owner's, the rest distinct
/// third-party pairs among identities 1.. (each peer trades with about 2·n/k others, so the
/// graph is one well-connected component a few hops across, the owner's peers inside it).
fn body(i: usize, pids: &[PeerId]) -> (usize, usize, ReceiptBody) {
    let (u, d) = if i < 2 * OWN_PEERS {
        let peer = 1 + i / 2;
        if i.is_multiple_of(2) {
            (0, peer)
        } else {
            (peer, 0)
        }
    } else {
        let j = i - 2 * OWN_PEERS;
        let k = pids.len() - 1;
        let up = j % k;
        let down = (up + 1 + (j / k) % (k - 1)) % k;
        (1 + up, 1 + down)
    };
    let seq = 1 + (i % 7) as u64;
    let body = ReceiptBody {
        uploader: pids[u],
        downloader: pids[d],
        seq,
        bytes: (i as u64 * 7_919) % 50_000_000,
        credits: (i as u64 * 7_919) % 50_000_000,
        time_ms: 1_760_000_000_000 + i as u64 * 37,
    };
    (u, d, body)
}

fn make_chunk(
    c: usize,
    total: usize,
    ids: &[Identity],
    pids: &[PeerId],
    net: &NetworkId,
) -> Vec<VerifiedReceipt> {
    let signed: Vec<_> = (c * CHUNK..((c + 1) * CHUNK).min(total))
        .map(|i| {
            let (u, d, body) = body(i, pids);
            body.propose(&ids[d], net).countersign(&ids[u], net)
        })
        .collect();
    let verdict = verify_batch(&signed, net);
    assert!(verdict.rejected.is_empty(), "{:?}", verdict.rejected);
    verdict.verified
}

/// Applies `total` receipts; two threads sign and verify the chunks, this one applies them.
fn fill(store: &Store, total: usize, ids: &[Identity], net: &NetworkId) {
    let pids: Vec<PeerId> = ids.iter().map(Identity::peer_id).collect();
    let chunks = total.div_ceil(CHUNK);
    std::thread::scope(|s| {
        let receivers: Vec<_> = (0..2)
            .map(|t| {
                let (tx, rx) = mpsc::sync_channel(2);
                let pids = &pids;
                s.spawn(move || {
                    for c in (t..chunks).step_by(2) {
                        if tx.send(make_chunk(c, total, ids, pids, net)).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for c in 0..chunks {
            for receipt in &receivers[c % 2].recv().expect("producer thread") {
                let applied = store.apply(receipt).unwrap();
                assert!(matches!(applied, Applied::New { .. }), "{applied:?}");
            }
            store.flush().unwrap();
        }
    });
}

fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in TALLY_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let third_party: usize = match std::env::var("TALLY_BENCH_PAIRS") {
        Ok(n) => n
            .replace('_', "")
            .parse()
            .expect("TALLY_BENCH_PAIRS: a number"),
        Err(_) if benchmarking => 100_000,
        Err(_) => 2_000,
    };
    assert!(third_party >= 100, "TALLY_BENCH_PAIRS must be >= 100");
    let ids = identities(IDENTITIES);
    let owner = ids[0].peer_id();
    let net = network();
    let dir = scratch_dir();
    let store = Store::open(dir.path(), net, StoreConfig::default()).unwrap();
    let start = Instant::now();
    fill(&store, 2 * OWN_PEERS + third_party, &ids, &net);
    let filled = start.elapsed();
    store.set_owner(owner).unwrap();
    assert_eq!(store.third_party_count(), third_party as u64);

    // Under the cap: the call the node makes after every gossip batch.
    let calls = if benchmarking { 1_000_000 } else { 10_000 };
    let start = Instant::now();
    for _ in 0..calls {
        let evicted = store
            .enforce_cap(std::hint::black_box(owner), third_party as u64)
            .unwrap();
        assert_eq!(evicted.receipts, 0);
    }
    let idle = start.elapsed();

    // One pass just over the cap: evicts 5% (plus one), the common case.
    let cap = third_party as u64 - 1;
    let start = Instant::now();
    let first = store.enforce_cap(owner, cap).unwrap();
    let first_time = start.elapsed();
    // A pass to half: the cap lowered in the config; evictions dominate.
    let cap_half = third_party as u64 / 2;
    let start = Instant::now();
    let second = store.enforce_cap(owner, cap_half).unwrap();
    let second_time = start.elapsed();
    store.flush().unwrap();
    assert_eq!(
        store.pair_count() as u64,
        2 * OWN_PEERS as u64 + second.third_party
    );
    drop(store);
    let start = Instant::now();
    let store = Store::open(dir.path(), net, StoreConfig::default()).unwrap();
    let reopen = start.elapsed();
    let dropped = first.tombstones_dropped + second.tombstones_dropped;
    assert_eq!(
        store.tombstone_count(),
        first.receipts + second.receipts - dropped
    );

    println!(
        "evict: {third_party} third-party receipts among {} peers, {} own; filled in {:.1} s",
        IDENTITIES - 1,
        2 * OWN_PEERS,
        filled.as_secs_f64()
    );
    println!();
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>12} |",
        "call", "evicted", "kept", "time"
    );
    println!("|{:-<42}|{:->11}|{:->11}|{:->14}|", "", "", "", "");
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>9.1} ns |",
        "enforce_cap under the cap (mean)",
        0,
        third_party,
        idle.as_secs_f64() * 1e9 / calls as f64
    );
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>9.1} ms |",
        format!("pass, cap {cap} (to 95%)"),
        first.receipts,
        first.third_party,
        ms(first_time)
    );
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>9.1} ms |",
        format!("pass, cap {cap_half} (to 95%)"),
        second.receipts,
        second.third_party,
        ms(second_time)
    );
    println!(
        "| {:<40} | {:>9} | {:>9} | {:>9.1} ms |",
        format!("reopen with {} tombstones", store.tombstone_count()),
        "",
        store.third_party_count(),
        ms(reopen)
    );
}
