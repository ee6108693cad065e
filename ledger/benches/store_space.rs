//! Store space and memory: disk bytes per pair after 1,000,000 overwrites spread over 10,000
//! pairs and after 1,000,000 distinct pairs (after a flush, and after closing and reopening), and
//! the peak RSS of a child process that opens a store of 1,000,000 receipts.
//!
//! `cargo bench -p tally-ledger --bench store_space` runs it at full size (a few minutes: every
//! receipt is signed twice and verified). `TALLY_BENCH_PAIRS=N` scales it down: N receipts per
//! scenario, N/100 pairs for the overwrites. `TALLY_BENCH_DIR` says where the stores go. Without
//! `--bench` (as under `cargo test --benches`) it runs a small smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally_ledger::{
    Applied, Identity, NetworkId, PeerId, ReceiptBody, Store, StoreConfig, VerifiedReceipt,
    verify_batch,
};

/// Receipts applied between flushes, and per verification batch.
const CHUNK: usize = 1_000;
/// Identities the receipts are made among: 2,000 allow 3,998,000 ordered pairs.
const IDENTITIES: usize = 2_000;
/// The overwrite scenario spreads its receipts over `receipts / OVERWRITES_PER_PAIR` pairs.
const OVERWRITES_PER_PAIR: usize = 100;

const CHILD_ENV: &str = "TALLY_BENCH_CHILD";
const STORE_ENV: &str = "TALLY_BENCH_STORE";

fn network() -> NetworkId {
    NetworkId::from_name("tally-bench")
}

fn identities(n: usize) -> Vec<Identity> {
    (0..n as u64)
        .map(|i| {
            let mut seed = [0x5au8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(seed)
        })
        .collect()
}

/// The `j`-th distinct ordered pair of identity indices (distinct for `j < k * (k - 1)`).
fn pair_indices(j: usize, k: usize) -> (usize, usize) {
    let up = j % k;
    let down = (up + 1 + (j / k) % (k - 1)) % k;
    (up, down)
}

/// Receipt `i` of a scenario whose receipts cycle over `pairs` pairs: round `i / pairs + 1` of
/// pair `i % pairs`. With `pairs == receipts`, every receipt is a new pair at seq 1.
fn receipt_body(i: usize, pairs: usize, pids: &[PeerId]) -> (usize, usize, ReceiptBody) {
    let (u, d) = pair_indices(i % pairs, pids.len());
    let seq = (i / pairs + 1) as u64;
    let body = ReceiptBody {
        uploader: pids[u],
        downloader: pids[d],
        seq,
        bytes: seq * 4 * (1 << 20) + (i % 4096) as u64,
        credits: seq * 4_096 + (i % 97) as u64,
        time_ms: 1_760_000_000_000 + i as u64 * 37,
    };
    (u, d, body)
}

/// Signs and verifies chunk `c` of a scenario.
fn make_chunk(
    c: usize,
    receipts: usize,
    pairs: usize,
    ids: &[Identity],
    pids: &[PeerId],
    net: &NetworkId,
) -> Vec<VerifiedReceipt> {
    let signed: Vec<_> = (c * CHUNK..((c + 1) * CHUNK).min(receipts))
        .map(|i| {
            let (u, d, body) = receipt_body(i, pairs, pids);
            body.propose(&ids[d], net).countersign(&ids[u], net)
        })
        .collect();
    let verdict = verify_batch(&signed, net);
    assert!(verdict.rejected.is_empty(), "{:?}", verdict.rejected);
    verdict.verified
}

/// Applies `receipts` receipts cycling over `pairs` pairs to `store`, in order, flushing every
/// chunk. Two threads sign and verify the chunks (alternately); this one applies them.
fn fill(store: &Store, receipts: usize, pairs: usize, ids: &[Identity], net: &NetworkId) {
    let pids: Vec<PeerId> = ids.iter().map(Identity::peer_id).collect();
    let chunks = receipts.div_ceil(CHUNK);
    std::thread::scope(|s| {
        let receivers: Vec<_> = (0..2)
            .map(|t| {
                let (tx, rx) = mpsc::sync_channel(2);
                let pids = &pids;
                s.spawn(move || {
                    for c in (t..chunks).step_by(2) {
                        let chunk = make_chunk(c, receipts, pairs, ids, pids, net);
                        if tx.send(chunk).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for c in 0..chunks {
            let chunk = receivers[c % 2].recv().expect("producer thread");
            for receipt in &chunk {
                let applied = store.apply(receipt).unwrap();
                assert!(matches!(applied, Applied::New { .. }), "{applied:?}");
            }
            store.flush().unwrap();
        }
    });
}

/// (apparent bytes, allocated bytes) of every file under `dir`.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (apparent, allocated) = dir_bytes(&entry.path());
            total.0 += apparent;
            total.1 += allocated;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

struct SpaceRow {
    scenario: String,
    pairs: usize,
    when: &'static str,
    sled_bytes: u64,
    apparent: u64,
    allocated: u64,
}

fn measure(
    store: &Store,
    dir: &Path,
    scenario: &str,
    pairs: usize,
    when: &'static str,
) -> SpaceRow {
    let (apparent, allocated) = dir_bytes(dir);
    SpaceRow {
        scenario: scenario.to_owned(),
        pairs,
        when,
        sled_bytes: store.disk_bytes().unwrap(),
        apparent,
        allocated,
    }
}

/// Builds one scenario's store in `dir` and measures it after the last flush and after a close
/// and reopen. Returns the rows and how long filling took.
fn scenario(
    dir: &Path,
    name: &str,
    receipts: usize,
    pairs: usize,
    ids: &[Identity],
) -> (Vec<SpaceRow>, Duration) {
    let net = network();
    let store = Store::open(dir, net, StoreConfig::default()).unwrap();
    let start = Instant::now();
    fill(&store, receipts, pairs, ids, &net);
    let took = start.elapsed();
    assert_eq!(store.pair_count(), pairs);
    let mut rows = vec![measure(&store, dir, name, pairs, "after flush")];
    drop(store);
    let store = Store::open(dir, net, StoreConfig::default()).unwrap();
    assert_eq!(store.pair_count(), pairs);
    rows.push(measure(&store, dir, name, pairs, "closed + reopened"));
    (rows, took)
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// In the child: do what `TALLY_BENCH_CHILD` says to the store at `TALLY_BENCH_STORE`, then print
/// the peak RSS. `baseline` opens nothing; `open` opens the store; `open+scan` also reads every
/// receipt.
fn child(what: &str) {
    let start = Instant::now();
    let mut pairs = 0;
    if what != "baseline" {
        let dir = std::env::var_os(STORE_ENV).expect("TALLY_BENCH_STORE");
        let store = Store::open(&dir, network(), StoreConfig::default()).unwrap();
        if what == "open+scan" {
            for receipt in store.iter() {
                receipt.unwrap();
                pairs += 1;
            }
        }
    }
    println!(
        "vmhwm_kib={} millis={} pairs={pairs}",
        vm_hwm_kib(),
        start.elapsed().as_millis()
    );
}

struct RssRow {
    what: String,
    vm_hwm_kib: u64,
    millis: u64,
}

fn run_child(what: &str, store: Option<&Path>) -> RssRow {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD_ENV, what);
    if let Some(dir) = store {
        command.env(STORE_ENV, dir);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let field = |name: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in child output {stdout:?}"))
    };
    RssRow {
        what: what.to_owned(),
        vm_hwm_kib: field("vmhwm_kib="),
        millis: field("millis="),
    }
}

fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in TALLY_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if let Ok(what) = std::env::var(CHILD_ENV) {
        child(&what);
        return;
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let receipts: usize = match std::env::var("TALLY_BENCH_PAIRS") {
        Ok(n) => n
            .replace('_', "")
            .parse()
            .expect("TALLY_BENCH_PAIRS: a number"),
        Err(_) if benchmarking => 1_000_000,
        Err(_) => 2_000,
    };
    assert!(
        receipts >= OVERWRITES_PER_PAIR,
        "TALLY_BENCH_PAIRS must be >= 100"
    );
    let overwrite_pairs = receipts / OVERWRITES_PER_PAIR;
    let receipts_overwritten = overwrite_pairs * OVERWRITES_PER_PAIR;
    let ids = identities(IDENTITIES);
    let encoded_len = {
        let pids: Vec<PeerId> = ids.iter().map(Identity::peer_id).collect();
        let (u, d, body) = receipt_body(receipts / 2, receipts, &pids);
        let net = network();
        let receipt = body.propose(&ids[d], &net).countersign(&ids[u], &net);
        postcard::to_stdvec(&receipt).unwrap().len()
    };
    // Logical payload per pair: the receipt (64-byte key + value) and its index entry (64-byte key).
    let payload = 64 + encoded_len + 64;

    let overwrites_dir = scratch_dir();
    let distinct_dir = scratch_dir();
    let (mut rows, overwrite_time) = scenario(
        overwrites_dir.path(),
        &format!("{receipts_overwritten} overwrites"),
        receipts_overwritten,
        overwrite_pairs,
        &ids,
    );
    let (distinct_rows, distinct_time) = scenario(
        distinct_dir.path(),
        &format!("{receipts} distinct pairs"),
        receipts,
        receipts,
        &ids,
    );
    rows.extend(distinct_rows);

    let rss = [
        run_child("baseline", None),
        run_child("open", Some(distinct_dir.path())),
        run_child("open+scan", Some(distinct_dir.path())),
        run_child("open", Some(overwrites_dir.path())),
    ];

    println!(
        "store_space: {receipts} receipts per scenario, {IDENTITIES} identities, flush every {CHUNK}, StoreConfig::default() (sled Mode::LowSpace, 64 MiB cache)"
    );
    println!(
        "payload per pair: {payload} bytes (64-byte key + {encoded_len}-byte postcard receipt + 64-byte index key)"
    );
    println!();
    println!(
        "| {:<28} | {:>9} | {:<17} | {:>9} | {:>11} | {:>12} | {:>16} | {:>9} |",
        "scenario",
        "pairs",
        "measured",
        "sled MiB",
        "sled B/pair",
        "files B/pair",
        "allocated B/pair",
        "x payload"
    );
    println!(
        "|{:-<30}|{:->11}|{:-<19}|{:->11}|{:->13}|{:->14}|{:->18}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    for row in &rows {
        let per = |b: u64| b as f64 / row.pairs as f64;
        println!(
            "| {:<28} | {:>9} | {:<17} | {:>9.1} | {:>11.0} | {:>12.0} | {:>16.0} | {:>9.1} |",
            row.scenario,
            row.pairs,
            row.when,
            mib(row.sled_bytes),
            per(row.sled_bytes),
            per(row.apparent),
            per(row.allocated),
            per(row.sled_bytes) / payload as f64
        );
    }
    println!();
    println!(
        "| {:<44} | {:>12} | {:>9} |",
        "child process (StoreConfig::default())", "VmHWM MiB", "time ms"
    );
    println!("|{:-<46}|{:->14}|{:->11}|", "", "", "");
    let store_of = |i: usize| match i {
        0 => String::new(),
        3 => format!(" ({overwrite_pairs} pairs)"),
        _ => format!(" ({receipts} pairs)"),
    };
    for (i, row) in rss.iter().enumerate() {
        println!(
            "| {:<44} | {:>12.1} | {:>9} |",
            format!("{}{}", row.what, store_of(i)),
            row.vm_hwm_kib as f64 / 1024.0,
            row.millis
        );
    }
    println!();
    println!(
        "filling (sign x2 + batch verify on 2 threads, apply + flush on 1): overwrites {:.1} s ({:.0}/s), distinct {:.1} s ({:.0}/s)",
        overwrite_time.as_secs_f64(),
        receipts_overwritten as f64 / overwrite_time.as_secs_f64(),
        distinct_time.as_secs_f64(),
        receipts as f64 / distinct_time.as_secs_f64()
    );
}
