//! Receipt throughput: signing, single and batch verification (with raw `ed25519_dalek` as the
//! baseline, all per signature), and `Store::ingest` of third-party receipts against batch
//! verification of the same receipts alone and against raw sled inserts of the same bytes.
//!
//! `cargo bench -p tally-ledger --bench receipts` runs it; after criterion's output it prints a
//! summary of the ingest figures timed on the same data, with the ingest / verify ratio.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use tally_ledger::{
    Applied, Identity, Ingested, NetworkId, PeerId, Receipt, ReceiptBody, Store, StoreConfig,
    VerifiedReceipt, verify_batch,
};

/// Receipts are made among this many identities, so keys repeat as in a real ledger.
const IDENTITIES: usize = 1_000;
/// Receipts ingested per iteration, each of a distinct pair, into a fresh store.
const INGEST_RECEIPTS: usize = 10_000;
/// Receipts per `ingest` call; the store is flushed after each.
const FLUSH_EVERY: usize = 1_000;
/// Rounds of the summary's own timing; the median is reported.
const SUMMARY_ROUNDS: usize = 5;

/// A small deterministic generator (SplitMix64), so every run measures the same receipts.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn network() -> NetworkId {
    NetworkId::from_name("tally-bench")
}

fn identities(n: usize) -> Vec<Identity> {
    let mut rng = SplitMix(0x7a11_7a11);
    (0..n)
        .map(|_| {
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            Identity::from_secret_bytes(seed)
        })
        .collect()
}

/// `n` bodies of distinct (uploader, downloader) pairs among `ids`, with realistic counters.
fn bodies(ids: &[PeerId], n: usize, seed: u64) -> Vec<(usize, usize, ReceiptBody)> {
    let mut rng = SplitMix(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (u, d) = (rng.below(ids.len()), rng.below(ids.len()));
        if u == d || !seen.insert((u, d)) {
            continue;
        }
        let seq = 1 + rng.below(5_000) as u64;
        let body = ReceiptBody {
            uploader: ids[u],
            downloader: ids[d],
            seq,
            bytes: seq * (1 << 20) + rng.below(1 << 20) as u64,
            credits: seq * 1_000 + rng.below(1_000) as u64,
            time_ms: 1_760_000_000_000 + rng.below(1_000_000_000) as u64,
        };
        out.push((u, d, body));
    }
    out
}

/// Signs every body with both parties' keys, on two threads.
fn sign_all(
    ids: &[Identity],
    bodies: &[(usize, usize, ReceiptBody)],
    net: &NetworkId,
) -> Vec<Receipt> {
    let sign = |part: &[(usize, usize, ReceiptBody)]| -> Vec<Receipt> {
        part.iter()
            .map(|(u, d, body)| body.propose(&ids[*d], net).countersign(&ids[*u], net))
            .collect()
    };
    let (first, second) = bodies.split_at(bodies.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| sign(second));
        let mut out = sign(first);
        out.extend(other.join().expect("signing thread"));
        out
    })
}

struct Fixture {
    ids: Vec<Identity>,
    net: NetworkId,
    /// 1,024 receipts for the signature benchmarks.
    small: Vec<Receipt>,
    /// `INGEST_RECEIPTS` receipts of distinct pairs for the ingest benchmarks.
    ingest: Vec<Receipt>,
}

fn fixture() -> Fixture {
    let net = network();
    let ids = identities(IDENTITIES);
    let pids: Vec<PeerId> = ids.iter().map(Identity::peer_id).collect();
    let small = sign_all(&ids, &bodies(&pids, 1_024, 1), &net);
    let ingest = sign_all(&ids, &bodies(&pids, INGEST_RECEIPTS, 2), &net);
    Fixture {
        ids,
        net,
        small,
        ingest,
    }
}

fn raw_message(receipt: &Receipt, net: &NetworkId) -> Vec<u8> {
    receipt.body().signed_bytes(net).as_slice().to_vec()
}

fn dalek_key(id: &PeerId) -> ed25519_dalek::VerifyingKey {
    id.verifying_key().expect("valid key")
}

fn dalek_sig(sig: &tally_ledger::Signature) -> ed25519_dalek::Signature {
    ed25519_dalek::Signature::from_bytes(sig.as_bytes())
}

fn bench_signatures(c: &mut Criterion, fx: &Fixture) {
    let net = fx.net;
    let mut group = c.benchmark_group("signatures");

    // Signing: the downloader's half of a receipt (signed bytes + one signature).
    group.throughput(Throughput::Elements(1));
    let body = fx.small[0].body();
    let signer = &fx.ids[0];
    group.bench_function("sign (ReceiptBody::propose)", |b| {
        b.iter(|| black_box(black_box(body).propose(signer, &net)))
    });

    // Raw ed25519-dalek single verification: key already decompressed, message already built.
    let raw: Vec<_> = fx
        .small
        .iter()
        .map(|r| {
            (
                dalek_key(&r.downloader),
                dalek_sig(&r.sig_downloader),
                raw_message(r, &net),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("ed25519_dalek verify_strict (1 sig)", |b| {
        b.iter(|| {
            let (key, sig, msg) = &raw[i % raw.len()];
            i += 1;
            black_box(key.verify_strict(msg, sig)).unwrap();
        })
    });

    // The same without the strict checks (small-order R and A), for reference.
    let mut i = 0;
    group.bench_function("ed25519_dalek verify (1 sig, not strict)", |b| {
        b.iter(|| {
            let (key, sig, msg) = &raw[i % raw.len()];
            i += 1;
            black_box(ed25519_dalek::Verifier::verify(key, msg, sig)).unwrap();
        })
    });

    // tally's single verification: shape, signed bytes, two key decompressions, two signatures.
    group.throughput(Throughput::Elements(2));
    let mut i = 0;
    group.bench_function("Receipt::verify (2 sigs)", |b| {
        b.iter(|| {
            let receipt = &fx.small[i % fx.small.len()];
            i += 1;
            black_box(receipt.verify(&net)).unwrap();
        })
    });

    for n in [64usize, 256, 1_024] {
        group.throughput(Throughput::Elements(2 * n as u64));
        let batch = &fx.small[..n];
        group.bench_with_input(
            BenchmarkId::new("verify_batch", format!("{n} receipts, {} sigs", 2 * n)),
            batch,
            |b, batch| {
                b.iter(|| {
                    let verdict = verify_batch(black_box(batch), &net);
                    assert_eq!(verdict.verified.len(), batch.len());
                    verdict
                })
            },
        );
    }

    // Raw ed25519-dalek batch of the same 2,048 signatures, keys already decompressed.
    let messages: Vec<Vec<u8>> = fx.small.iter().map(|r| raw_message(r, &net)).collect();
    let msgs: Vec<&[u8]> = messages
        .iter()
        .flat_map(|m| [m.as_slice(), m.as_slice()])
        .collect();
    let sigs: Vec<_> = fx
        .small
        .iter()
        .flat_map(|r| [dalek_sig(&r.sig_downloader), dalek_sig(&r.sig_uploader)])
        .collect();
    let keys: Vec<_> = fx
        .small
        .iter()
        .flat_map(|r| [dalek_key(&r.downloader), dalek_key(&r.uploader)])
        .collect();
    group.throughput(Throughput::Elements(sigs.len() as u64));
    group.bench_function(
        BenchmarkId::new("ed25519_dalek verify_batch", "2048 sigs"),
        |b| b.iter(|| ed25519_dalek::verify_batch(black_box(&msgs), &sigs, &keys).unwrap()),
    );
    group.finish();
}

/// Where the benchmark's stores go: `TALLY_BENCH_DIR`, or the system temp dir.
fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in TALLY_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn pair_key(r: &Receipt) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(r.uploader.as_bytes());
    key[32..].copy_from_slice(r.downloader.as_bytes());
    key
}

/// Batch verification alone, in the ingest's chunks.
fn time_verify_only(receipts: &[Receipt], net: &NetworkId) -> Duration {
    let start = Instant::now();
    for chunk in receipts.chunks(FLUSH_EVERY) {
        let verdict = verify_batch(black_box(chunk), net);
        assert_eq!(verdict.verified.len(), chunk.len());
        black_box(verdict);
    }
    start.elapsed()
}

/// A fresh store in a fresh directory (kept alive by the returned guard).
fn fresh_store(net: &NetworkId) -> (tempfile::TempDir, Store) {
    let dir = scratch_dir();
    let store = Store::open(dir.path(), *net, StoreConfig::default()).unwrap();
    (dir, store)
}

/// Wall time of a run, and the part of it spent in `Store::flush`.
#[derive(Clone, Copy)]
struct Timed {
    total: Duration,
    flush: Duration,
}

fn timed_flush(store: &Store, flush: &mut Duration) {
    let start = Instant::now();
    store.flush().unwrap();
    *flush += start.elapsed();
}

/// `Store::ingest` of every chunk into a fresh store, flushing after each chunk.
fn time_ingest(receipts: &[Receipt], net: &NetworkId) -> Timed {
    let (_dir, store) = fresh_store(net);
    let mut flush = Duration::ZERO;
    let start = Instant::now();
    for chunk in receipts.chunks(FLUSH_EVERY) {
        let outcome = store.ingest(black_box(chunk)).unwrap();
        assert!(
            outcome
                .iter()
                .all(|o| matches!(o, Ingested::Applied(Applied::New { .. })))
        );
        timed_flush(&store, &mut flush);
    }
    let total = start.elapsed();
    assert_eq!(store.pair_count(), receipts.len());
    Timed { total, flush }
}

/// `Store::apply` of already verified receipts into a fresh store, flushing every chunk: the
/// store's share of the ingest.
fn time_apply_only(verified: &[VerifiedReceipt], net: &NetworkId) -> Timed {
    let (_dir, store) = fresh_store(net);
    let mut flush = Duration::ZERO;
    let start = Instant::now();
    for chunk in verified.chunks(FLUSH_EVERY) {
        for receipt in chunk {
            black_box(store.apply(receipt).unwrap());
        }
        timed_flush(&store, &mut flush);
    }
    Timed {
        total: start.elapsed(),
        flush,
    }
}

/// `Store::ingest_chunks`: chunk k+1 is batch-verified on the store's helper thread while this
/// thread applies and flushes chunk k.
fn time_ingest_chunks(receipts: &[Receipt], net: &NetworkId) -> Timed {
    let (_dir, store) = fresh_store(net);
    let mut chunks = receipts.chunks(FLUSH_EVERY);
    let start = Instant::now();
    store
        .ingest_chunks(
            || {
                Ok::<_, tally_ledger::StoreError>(
                    chunks.next().map(|c| c.iter().map(|r| ((), *r)).collect()),
                )
            },
            |outcomes| {
                assert!(
                    outcomes
                        .iter()
                        .all(|(_, o)| matches!(o, Ingested::Applied(Applied::New { .. })))
                );
                Ok(())
            },
        )
        .unwrap();
    let total = start.elapsed();
    assert_eq!(store.pair_count(), receipts.len());
    // The flushes run inside the pipeline, overlapped with verification; not split out.
    Timed {
        total,
        flush: Duration::ZERO,
    }
}

/// Raw sled: insert pair key → postcard(receipt), the bytes the store writes, one insert per
/// receipt into a sled opened as the store opens it, flushing every chunk.
fn time_sled_raw(receipts: &[Receipt]) -> Timed {
    let dir = scratch_dir();
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .cache_capacity(StoreConfig::default().cache_capacity)
        .mode(sled::Mode::LowSpace)
        .open()
        .unwrap();
    let tree = db.open_tree("receipts").unwrap();
    let encoded: Vec<([u8; 64], Vec<u8>)> = receipts
        .iter()
        .map(|r| (pair_key(r), postcard::to_stdvec(r).unwrap()))
        .collect();
    let mut flush = Duration::ZERO;
    let start = Instant::now();
    for chunk in encoded.chunks(FLUSH_EVERY) {
        for (key, value) in chunk {
            tree.insert(key, value.as_slice()).unwrap();
        }
        let flush_start = Instant::now();
        db.flush().unwrap();
        flush += flush_start.elapsed();
    }
    Timed {
        total: start.elapsed(),
        flush,
    }
}

fn bench_ingest(c: &mut Criterion, fx: &Fixture) {
    let net = fx.net;
    let receipts = &fx.ingest;
    let verified = verify_batch(receipts, &net).verified;
    let mut group = c.benchmark_group("ingest");
    group
        .throughput(Throughput::Elements(receipts.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let id = |what: &str| BenchmarkId::new(what, format!("{} receipts", receipts.len()));
    let total = |runs: &mut dyn FnMut() -> Timed, iters: u64| -> Duration {
        (0..iters).map(|_| runs().total).sum()
    };
    group.bench_function(id("verify_batch only"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_verify_only(receipts, &net)).sum())
    });
    group.bench_function(id("Store::ingest_chunks (flushes each chunk)"), |b| {
        b.iter_custom(|iters| total(&mut || time_ingest_chunks(receipts, &net), iters))
    });
    group.bench_function(id("Store::ingest + flush (one thread)"), |b| {
        b.iter_custom(|iters| total(&mut || time_ingest(receipts, &net), iters))
    });
    group.bench_function(id("Store::apply + flush (pre-verified)"), |b| {
        b.iter_custom(|iters| total(&mut || time_apply_only(&verified, &net), iters))
    });
    group.bench_function(id("sled insert + flush (raw)"), |b| {
        b.iter_custom(|iters| total(&mut || time_sled_raw(receipts), iters))
    });
    group.finish();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The ingest figures timed here on the same receipts, rounds interleaved so a busy machine
/// weighs on all of them alike, with the ratio the target is about.
fn summary(fx: &Fixture) {
    let net = fx.net;
    let receipts = &fx.ingest;
    let verified = verify_batch(receipts, &net).verified;
    let mut verify = Vec::new();
    let mut runs: [Vec<Timed>; 4] = Default::default();
    for _ in 0..SUMMARY_ROUNDS {
        verify.push(time_verify_only(receipts, &net));
        runs[0].push(time_ingest_chunks(receipts, &net));
        runs[1].push(time_ingest(receipts, &net));
        runs[2].push(time_apply_only(&verified, &net));
        runs[3].push(time_sled_raw(receipts));
    }
    let n = receipts.len() as f64;
    let verify = median(verify);
    let micros = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!();
    println!(
        "ingest summary: {} receipts of distinct pairs among {IDENTITIES} identities into a fresh \
         store, flush every {FLUSH_EVERY}; median of {SUMMARY_ROUNDS} interleaved rounds",
        receipts.len()
    );
    println!(
        "  {:<52} {:>11} {:>13} {:>12} {:>15}",
        "", "receipts/s", "µs/receipt", "of which flush", "vs verify only"
    );
    println!(
        "  {:<52} {:>11.0} {:>13.1} {:>12} {:>14.1}%",
        "verify_batch only (chunks of 1,000)",
        n / verify.as_secs_f64(),
        micros(verify),
        "-",
        100.0
    );
    let names = [
        "Store::ingest_chunks (verify || apply + flush)",
        "Store::ingest + flush (one thread)",
        "Store::apply + flush (pre-verified)",
        "raw sled insert + flush",
    ];
    let mut ingest_ratio = 0.0;
    for (i, (name, times)) in names.iter().zip(runs).enumerate() {
        let flush = median(times.iter().map(|t| t.flush).collect());
        let total = median(times.iter().map(|t| t.total).collect());
        let ratio = 100.0 * verify.as_secs_f64() / total.as_secs_f64();
        let flush = if flush.is_zero() {
            "(overlapped)".to_owned()
        } else {
            format!("{:.1}", micros(flush))
        };
        if i == 0 {
            ingest_ratio = ratio;
        }
        println!(
            "  {name:<52} {:>11.0} {:>13.1} {:>12} {:>14.1}%",
            n / total.as_secs_f64(),
            micros(total),
            flush,
            ratio
        );
    }
    println!(
        "  Store::ingest_chunks rate / verify_batch-only rate: {ingest_ratio:.1}% (target >= 80%: {})",
        if ingest_ratio >= 80.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benchmarking =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let fx = fixture();
    let mut c = Criterion::default().configure_from_args();
    bench_signatures(&mut c, &fx);
    bench_ingest(&mut c, &fx);
    c.final_summary();
    let summary_wanted = std::env::var("TALLY_BENCH_SUMMARY").map_or(true, |v| v != "0");
    if benchmarking && summary_wanted {
        summary(&fx);
    }
}
