//! Transfer between nodes: how fast tally moves content between two in-process nodes on
//! loopback, against a plain QUIC stream with the same transport settings, and a download from
//! four seeders against one.
//!
//! - **A**: a real swarm download (`fetch::start` to completion) from one seeder: every chunk
//!   verified, written to the content store, receipts proposed, countersigned and flushed on
//!   both sides, the file exported.
//! - **B**: the baseline: two bare tally `Endpoint`s (the same QUIC, TLS and transport settings:
//!   `TransportConfig::default()`), one bidirectional stream carrying the same bytes from memory
//!   to memory, no tally protocol and no disk.
//! - **C**: the same download from 1 seeder and from 4 seeders at once (5 nodes in the process).
//! - **D**: the floor: B plus the least any node that verifies and stores must do (read each
//!   chunk from the file, BLAKE3-check it, write it at its offset, sync at the end), no protocol.
//!   D against B bounds what A can reach on this machine; A against D is tally's own overhead.
//!
//! `cargo bench -p tally-node --bench transfer` runs it at 1 GiB. Knobs (docs/PERFORMANCE.md):
//! `TALLY_BENCH_BYTES` (content size; a number with an optional K/M/G binary suffix, e.g.
//! `256M`), `TALLY_BENCH_ROUNDS` (A and B alternate this many times, default 1; the A/B ratio
//! is taken between medians), `TALLY_BENCH_ONLY` (a subset of `abcd`, e.g. `abd`),
//! `TALLY_BENCH_WINDOW` (every node's `credit_window`, same syntax, to see what the default
//! costs), `TALLY_BENCH_DIR` (where the temporary data dirs go). Without `--bench` (as under
//! `cargo test --benches`) it runs a small smoke test. Every figure is printed with the load
//! average before and after it: the machine may be shared.
// A bench panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/load.rs"]
mod load;
use load::load;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tally_ledger::{Identity, NetworkId, Pair, PeerId};
use tally_node::config::{Config, PeerAddr};
use tally_node::content::{CHUNK_SIZE, ContentId};
use tally_node::daemon::fetch::{self, Phase};
use tally_node::daemon::{Behaviour, Node, NodeParts, Shared, peers};
use tally_node::transport::{Connection, Endpoint, TransportConfig};

const GIB: u64 = 1 << 30;
/// How often the watcher looks at a download's progress to time its transfer phase.
const POLL: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(600);

fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in TALLY_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn parse_size(text: &str) -> u64 {
    let text = text.trim().replace('_', "");
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits
        .parse()
        .expect("TALLY_BENCH_BYTES / _WINDOW: a number");
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        other => panic!("TALLY_BENCH_BYTES / _WINDOW: unknown unit {other:?}"),
    };
    n << shift
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux if that fails).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) the whole process has used, every thread, from /proc/self/stat.
fn cpu_seconds(ticks: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / ticks
}

/// Writes `len` deterministic bytes (different at every position, so a misplaced chunk shows).
fn write_payload(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// Whether the two files hold the same bytes.
fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).unwrap() {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

struct BenchNode {
    node: Node,
    dir: tempfile::TempDir,
}

impl BenchNode {
    async fn start() -> Self {
        let dir = scratch_dir();
        let mut config = Config::default();
        config.node.listen = "127.0.0.1:0".parse().unwrap();
        if let Ok(window) = std::env::var("TALLY_BENCH_WINDOW") {
            config.node.credit_window = parse_size(&window);
        }
        let identity = Identity::generate(&mut rand::rng());
        let parts = NodeParts::open(dir.path(), identity, config, Behaviour::default()).unwrap();
        let node = Node::start(parts).await.unwrap();
        Self { node, dir }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.node.shared()
    }

    fn id(&self) -> PeerId {
        self.node.peer_id()
    }

    fn addr(&self) -> PeerAddr {
        PeerAddr {
            peer_id: self.id(),
            addr: self.node.quic_addr().unwrap().to_string(),
        }
    }

    async fn connect(&self, other: &BenchNode) {
        peers::connect(self.shared(), other.addr()).await.unwrap();
        let start = Instant::now();
        while self.shared().peers.connection(&other.id()).is_none()
            || other.shared().peers.connection(&self.id()).is_none()
        {
            assert!(start.elapsed() < Duration::from_secs(30), "no connection");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn share(&self, path: &Path) -> ContentId {
        self.shared().content.import(path, &mut |_| {}).unwrap().0
    }

    fn latest(&self, uploader: PeerId, downloader: PeerId) -> Option<tally_ledger::Receipt> {
        self.shared()
            .store
            .latest(&Pair {
                uploader,
                downloader,
            })
            .unwrap()
    }

    async fn stop(self) {
        self.node.shutdown(Duration::from_secs(10)).await.unwrap();
        drop(self.dir);
    }
}

/// One measured run.
struct Figures {
    label: String,
    bytes: u64,
    /// Until every byte was verified and stored (tally) or received (plain QUIC).
    transfer: Duration,
    transfer_cpu: f64,
    /// Until the download reported complete: also the final flush, the export of the file
    /// (re-read, re-hashed, written, synced) and the final receipts. Same as `transfer` for B.
    total: Duration,
    total_cpu: f64,
    load_before: String,
    load_after: String,
    checks: String,
}

impl Figures {
    /// A run with no phase after the transfer (B and D).
    fn single_phase(
        label: &str,
        bytes: u64,
        transfer: Duration,
        cpu: f64,
        (load_before, load_after): (String, String),
        checks: &str,
    ) -> Self {
        Self {
            label: label.to_owned(),
            bytes,
            transfer,
            transfer_cpu: cpu,
            total: transfer,
            total_cpu: cpu,
            load_before,
            load_after,
            checks: checks.to_owned(),
        }
    }

    fn mbps(&self, d: Duration) -> f64 {
        self.bytes as f64 / d.as_secs_f64() / 1e6
    }

    fn cpu_per_gib(&self, cpu: f64) -> f64 {
        cpu / (self.bytes as f64 / GIB as f64)
    }
}

fn print_table(rows: &[&Figures]) {
    println!(
        "| {:<44} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:<17} | {:<17} |",
        "run",
        "xfer s",
        "xfer MB/s",
        "CPU s/GiB",
        "total s",
        "tot. MB/s",
        "CPU s/GiB",
        "load before",
        "load after"
    );
    println!(
        "|{:-<46}|{:->11}|{:->11}|{:->11}|{:->11}|{:->11}|{:->11}|{:-<19}|{:-<19}|",
        "", "", "", "", "", "", "", "", ""
    );
    for f in rows {
        println!(
            "| {:<44} | {:>9.2} | {:>9.0} | {:>9.2} | {:>9.2} | {:>9.0} | {:>9.2} | {:<17} | {:<17} |",
            f.label,
            f.transfer.as_secs_f64(),
            f.mbps(f.transfer),
            f.cpu_per_gib(f.transfer_cpu),
            f.total.as_secs_f64(),
            f.mbps(f.total),
            f.cpu_per_gib(f.total_cpu),
            f.load_before,
            f.load_after
        );
    }
    for f in rows {
        println!("  {}: {}", f.label, f.checks);
    }
}

/// Downloads `content` to `leecher` from the seeders it is connected to, and checks the file
/// and the receipts.
async fn download(
    label: String,
    leecher: &BenchNode,
    seeders: &[&BenchNode],
    content: ContentId,
    source: &Path,
    size: u64,
    ticks: f64,
) -> Figures {
    let out: PathBuf = leecher.dir.path().join("fetched.bin");
    let load_before = load();
    let cpu0 = cpu_seconds(ticks);
    let t0 = Instant::now();
    let status = fetch::start(leecher.shared(), content, out.clone()).unwrap();
    // Time the transfer phase: until every byte is verified and stored.
    let watcher = {
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            loop {
                if status.bytes_have.load(Ordering::Relaxed) >= size
                    || status.phase() != Phase::Running
                {
                    return (t0.elapsed(), cpu_seconds(ticks));
                }
                tokio::time::sleep(POLL).await;
            }
        })
    };
    let phase = tokio::time::timeout(DEADLINE, status.finished())
        .await
        .expect("the download did not finish in time");
    let total = t0.elapsed();
    let total_cpu = cpu_seconds(ticks) - cpu0;
    let load_after = load();
    assert_eq!(phase, Phase::Complete, "{label}");
    let (transfer, transfer_cpu) = watcher.await.unwrap();

    assert!(same_file(&out, source), "{label}: the file differs");
    let mut acknowledged = 0;
    let mut parts = Vec::new();
    for seeder in seeders {
        let at_leecher = leecher.latest(seeder.id(), leecher.id());
        let at_seeder = seeder.latest(seeder.id(), leecher.id());
        assert_eq!(
            at_leecher, at_seeder,
            "{label}: both sides hold the same receipt"
        );
        if let Some(receipt) = at_leecher {
            receipt.verify(&NetworkId::from_name("tally")).unwrap();
            acknowledged += receipt.bytes;
            parts.push(format!(
                "{:.1} MiB (seq {})",
                receipt.bytes as f64 / f64::from(1 << 20),
                receipt.seq
            ));
        }
    }
    assert_eq!(
        acknowledged, size,
        "{label}: the final receipts cover every byte"
    );
    std::fs::remove_file(&out).unwrap();
    Figures {
        label,
        bytes: size,
        transfer,
        transfer_cpu: transfer_cpu - cpu0,
        total,
        total_cpu,
        load_before,
        load_after,
        checks: format!(
            "file byte-identical; final receipts cover all {size} bytes: {}",
            parts.join(" + ")
        ),
    }
}

/// Two bare endpoints with tally's transport settings, connected: (sender, receiver, the
/// sender's connection, the receiver's).
async fn bare_connection() -> (Endpoint, Endpoint, Connection, Connection) {
    let network = NetworkId::from_name("tally-bench");
    let bind = |identity: &Identity| {
        Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            network,
            TransportConfig::default(),
        )
        .unwrap()
    };
    let (sender_id, receiver_id) = (
        Identity::generate(&mut rand::rng()),
        Identity::generate(&mut rand::rng()),
    );
    let (sender, receiver) = (bind(&sender_id), bind(&receiver_id));
    let receiver_addr = receiver.local_addr();
    let (conn, accepted) = tokio::join!(
        sender.dial(receiver_id.peer_id(), receiver_addr),
        receiver.accept()
    );
    let (conn, accepted) = (conn.unwrap(), accepted.unwrap().unwrap());
    (sender, receiver, conn, accepted)
}

/// B: the same bytes over one stream between two bare endpoints with tally's transport settings.
async fn plain_quic(payload: Bytes, ticks: f64) -> Figures {
    let (sender, receiver, conn, accepted) = bare_connection().await;
    let size = payload.len() as u64;
    let expected = payload.clone();

    let load_before = load();
    let cpu0 = cpu_seconds(ticks);
    let t0 = Instant::now();
    let receiving = tokio::spawn(async move {
        let (_writer, mut reader) = accepted.accept_bi().await.unwrap();
        let mut at = 0usize;
        let mut identical = true;
        while let Some(chunk) = reader.read_raw_chunk(usize::MAX).await.unwrap() {
            identical &= expected.get(at..at + chunk.len()) == Some(&chunk[..]);
            at += chunk.len();
        }
        (at as u64, identical, accepted)
    });
    let (mut writer, _reader) = conn.open_bi().await.unwrap();
    let chunk = CHUNK_SIZE as usize;
    let mut at = 0;
    while at < payload.len() {
        let end = (at + chunk).min(payload.len());
        writer
            .write_raw_bytes(payload.slice(at..end))
            .await
            .unwrap();
        at = end;
    }
    writer.finish().await.unwrap();
    let (received, identical, _accepted) = receiving.await.unwrap();
    let transfer = t0.elapsed();
    let cpu = cpu_seconds(ticks) - cpu0;
    let load_after = load();
    assert_eq!(received, size, "plain QUIC: bytes received");
    assert!(identical, "plain QUIC: the bytes differ");
    for endpoint in [&sender, &receiver] {
        endpoint.close(tally_node::transport::ErrorCode::Normal, "done");
    }
    Figures::single_phase(
        "B plain QUIC, same transport settings",
        size,
        transfer,
        cpu,
        (load_before, load_after),
        "bytes identical (memory to memory, no disk)",
    )
}

/// D: B plus the least a node that verifies and stores what it receives must do, with no
/// protocol: the sender reads each 256 KiB chunk from the file; the receiver hashes each chunk
/// with BLAKE3, checks it against the chunk's known hash, writes it at its offset into a file, and
/// syncs the file at the end. What D loses against B bounds what any such node can reach here.
async fn floor_quic(source: &Path, ticks: f64) -> Figures {
    use std::os::unix::fs::FileExt as _;
    let (sender, receiver, conn, accepted) = bare_connection().await;
    let input = std::fs::File::open(source).unwrap();
    let size = input.metadata().unwrap().len();
    let chunk = CHUNK_SIZE as usize;
    // The manifest's chunk hashes, known to the receiver before the transfer.
    let hashes: Vec<blake3::Hash> = {
        let mut buf = vec![0u8; chunk];
        let mut out = Vec::new();
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(chunk as u64) as usize;
            input.read_exact_at(&mut buf[..n], at).unwrap();
            out.push(blake3::hash(&buf[..n]));
            at += n as u64;
        }
        out
    };
    let out_dir = scratch_dir();
    let out_path = out_dir.path().join("floor.bin");
    let output = std::fs::File::create(&out_path).unwrap();

    let load_before = load();
    let cpu0 = cpu_seconds(ticks);
    let t0 = Instant::now();
    let receiving = tokio::spawn(async move {
        let (_writer, mut reader) = accepted.accept_bi().await.unwrap();
        let mut buf = vec![0u8; chunk];
        let (mut filled, mut index, mut at) = (0usize, 0usize, 0u64);
        let mut verified = true;
        while let Some(bytes) = reader.read_raw_chunk(chunk - filled).await.unwrap() {
            buf[filled..filled + bytes.len()].copy_from_slice(&bytes);
            filled += bytes.len();
            if filled == chunk || at + filled as u64 == size {
                verified &= blake3::hash(&buf[..filled]) == hashes[index];
                output.write_all_at(&buf[..filled], at).unwrap();
                at += filled as u64;
                index += 1;
                filled = 0;
            }
        }
        output.sync_data().unwrap();
        (at, verified, accepted)
    });
    let (mut writer, _reader) = conn.open_bi().await.unwrap();
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(chunk as u64) as usize;
        let mut buf = vec![0u8; n];
        input.read_exact_at(&mut buf, at).unwrap();
        writer.write_raw_bytes(Bytes::from(buf)).await.unwrap();
        at += n as u64;
    }
    writer.finish().await.unwrap();
    let (received, verified, _accepted) = receiving.await.unwrap();
    let transfer = t0.elapsed();
    let cpu = cpu_seconds(ticks) - cpu0;
    let load_after = load();
    assert_eq!(received, size, "floor: bytes received");
    assert!(verified, "floor: a chunk failed its hash");
    assert!(same_file(source, &out_path), "floor: the file differs");
    for endpoint in [&sender, &receiver] {
        endpoint.close(tally_node::transport::ErrorCode::Normal, "done");
    }
    Figures::single_phase(
        "D plain QUIC + read, hash-check, write, sync",
        size,
        transfer,
        cpu,
        (load_before, load_after),
        "every chunk's BLAKE3 checked; the file identical",
    )
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let size = match std::env::var("TALLY_BENCH_BYTES") {
        Ok(text) => parse_size(&text),
        Err(_) if benchmarking => GIB,
        // A short last chunk, several receipts per seeder: every path, in a second or two.
        Err(_) => 8 * (1 << 20) + 12_345,
    };
    assert!(size > 0, "TALLY_BENCH_BYTES must be above 0");
    let only = std::env::var("TALLY_BENCH_ONLY").unwrap_or_else(|_| "abcd".to_owned());
    let rounds: usize = std::env::var("TALLY_BENCH_ROUNDS")
        .map_or(1, |r| r.parse().expect("TALLY_BENCH_ROUNDS: a number"));
    assert!(rounds > 0, "TALLY_BENCH_ROUNDS must be above 0");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(size, &only, rounds, ticks));
}

async fn run(size: u64, only: &str, rounds: usize, ticks: f64) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let defaults = Config::default().node;
    let window =
        std::env::var("TALLY_BENCH_WINDOW").map_or(defaults.credit_window, |w| parse_size(&w));
    println!(
        "transfer: {size} bytes ({:.2} GiB), {} chunks of {} KiB, pipeline {} per provider, ack_bytes {} KiB, credit_window {} KiB; tokio multi-thread runtime, {cpus} CPUs; load {}",
        size as f64 / GIB as f64,
        size.div_ceil(u64::from(CHUNK_SIZE)),
        CHUNK_SIZE / 1024,
        fetch::PIPELINE,
        defaults.ack_bytes / 1024,
        window / 1024,
        load()
    );
    let work = scratch_dir();
    let source = work.path().join("source.bin");
    let prepared = Instant::now();
    write_payload(&source, size);
    let mut seeders = vec![BenchNode::start().await];
    let content = seeders[0].share(&source);
    println!(
        "prepared the content in {:.1} s (written, imported by the first seeder)",
        prepared.elapsed().as_secs_f64()
    );

    // A and B alternate, so a machine shared with other work affects both alike; the ratio is
    // taken between the medians.
    let mut a_rows = Vec::new();
    let mut b_rows = Vec::new();
    let mut d_rows = Vec::new();
    let payload = only
        .contains('b')
        .then(|| Bytes::from(std::fs::read(&source).unwrap()));
    for round in 1..=rounds {
        let suffix = if rounds > 1 {
            format!(" #{round}")
        } else {
            String::new()
        };
        if only.contains('a') {
            let leecher = BenchNode::start().await;
            leecher.connect(&seeders[0]).await;
            let a = download(
                format!("A tally download, 1 seeder{suffix}"),
                &leecher,
                &[&seeders[0]],
                content,
                &source,
                size,
                ticks,
            )
            .await;
            leecher.stop().await;
            a_rows.push(a);
        }
        if let Some(payload) = &payload {
            let mut b = plain_quic(payload.clone(), ticks).await;
            b.label.push_str(&suffix);
            b_rows.push(b);
        }
        if only.contains('d') {
            let mut d = floor_quic(&source, ticks).await;
            d.label.push_str(&suffix);
            d_rows.push(d);
        }
    }
    let rows: Vec<&Figures> = a_rows.iter().chain(&b_rows).chain(&d_rows).collect();
    if !rows.is_empty() {
        println!();
        print_table(&rows);
    }
    if !a_rows.is_empty() && !b_rows.is_empty() {
        let median = |rows: &[Figures], f: &dyn Fn(&Figures) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let a_transfer = median(&a_rows, &|f| f.mbps(f.transfer));
        let a_total = median(&a_rows, &|f| f.mbps(f.total));
        let b_rate = median(&b_rows, &|f| f.mbps(f.transfer));
        let (transfer, total) = (a_transfer / b_rate, a_total / b_rate);
        let met = |r: f64| if r >= 0.9 { "met" } else { "NOT met" };
        let of = if rounds > 1 { "medians: " } else { "" };
        println!();
        println!(
            "A/B throughput ({of}A {a_total:.0} MB/s to complete, {a_transfer:.0} MB/s transfer phase; B {b_rate:.0} MB/s): {:.0}% to complete (target >= 90%: {}); {:.0}% for the transfer phase alone ({})",
            total * 100.0,
            met(total),
            transfer * 100.0,
            met(transfer)
        );
        println!(
            "CPU per GiB{}: A {:.2} s (transfer phase {:.2} s), B {:.2} s",
            if rounds > 1 { " (medians)" } else { "" },
            median(&a_rows, &|f| f.cpu_per_gib(f.total_cpu)),
            median(&a_rows, &|f| f.cpu_per_gib(f.transfer_cpu)),
            median(&b_rows, &|f| f.cpu_per_gib(f.total_cpu))
        );
        if !d_rows.is_empty() {
            let d_rate = median(&d_rows, &|f| f.mbps(f.transfer));
            let d_cpu = median(&d_rows, &|f| f.cpu_per_gib(f.total_cpu));
            // However well it overlapped its work, a node that needs D's CPU per GiB moves at
            // most this much with the machine's cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let ceiling = cores / d_cpu * GIB as f64 / 1e6;
            println!(
                "D/B ({d_rate:.0} MB/s against {b_rate:.0}): {:.0}%, doing that work inline; CPU per GiB of D {d_cpu:.2} s, so with {cores} cores no node that checks and stores every chunk exceeds {ceiling:.0} MB/s = {:.0}% of B. A/D: {:.0}% for the transfer phase, {:.0}% to complete",
                d_rate / b_rate * 100.0,
                ceiling / b_rate * 100.0,
                a_transfer / d_rate * 100.0,
                a_total / d_rate * 100.0,
            );
        }
    }

    if only.contains('c') {
        let prepared = Instant::now();
        for _ in 1..4 {
            let seeder = BenchNode::start().await;
            assert_eq!(seeder.share(&source), content);
            seeders.push(seeder);
        }
        println!();
        println!(
            "C: 3 more seeders imported the content in {:.1} s",
            prepared.elapsed().as_secs_f64()
        );
        let one = {
            let leecher = BenchNode::start().await;
            leecher.connect(&seeders[0]).await;
            let figures = download(
                "C from 1 seeder".to_owned(),
                &leecher,
                &[&seeders[0]],
                content,
                &source,
                size,
                ticks,
            )
            .await;
            leecher.stop().await;
            figures
        };
        let four = {
            let leecher = BenchNode::start().await;
            for seeder in &seeders {
                leecher.connect(seeder).await;
            }
            let all: Vec<&BenchNode> = seeders.iter().collect();
            let figures = download(
                "C from 4 seeders at once".to_owned(),
                &leecher,
                &all,
                content,
                &source,
                size,
                ticks,
            )
            .await;
            leecher.stop().await;
            figures
        };
        println!();
        print_table(&[&one, &four]);
        println!();
        println!(
            "4 seeders / 1 seeder: {:.2}x the throughput to complete, {:.2}x for the transfer phase",
            four.mbps(four.total) / one.mbps(one.total),
            four.mbps(four.transfer) / one.mbps(one.transfer)
        );
    }
    for seeder in seeders {
        seeder.stop().await;
    }
}
