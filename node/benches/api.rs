//! The HTTP API under load while the node transfers: requests per second of
//! `GET /api/v1/status` over 64 keep-alive HTTP/1.1 connections, against a trivial axum handler
//! (`GET /` answering `ok`, no middleware) driven by the same load generator in the same run,
//! while the node uploads at full speed. Target: status at least 50% of the trivial rate.
//!
//! The measured node is a seeder: a task downloads one piece of content from it at full speed,
//! again and again, each time with a fresh leecher (so every round moves the whole content
//! and the seeder's store and standing keep growing, as a busy node's do). Both HTTP servers
//! run on the nodes' runtime; the load generator has a runtime of its own. Status and trivial
//! phases alternate `TALLY_BENCH_ROUNDS` times (default 2) and each rate is the median.
//!
//! `cargo bench -p tally-node --bench api`. Knobs: `TALLY_BENCH_SECS` (each phase, default
//! 10), `TALLY_BENCH_ROUNDS`, `TALLY_BENCH_BYTES` (content size, default 256M), `TALLY_BENCH_DIR`
//! (where the temporary data dirs go). Without `--bench` (as under `cargo test --benches`) it
//! runs a short smoke test. The load average is printed: the machine may be shared.
// A bench panics on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/load.rs"]
mod load;
use load::load;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tally_ledger::Identity;
use tally_node::config::{Config, PeerAddr};
use tally_node::content::ContentId;
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::fetch::{self, Phase};
use tally_node::daemon::{Behaviour, Node, NodeParts, Shared, peers};
use tokio_util::sync::CancellationToken;

/// Connections the load generator keeps open, each sending one request after another.
const CONNECTIONS: usize = 64;
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn scratch_dir() -> tempfile::TempDir {
    match std::env::var_os("TALLY_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir in TALLY_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn parse_size(text: &str) -> u64 {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().expect("TALLY_BENCH_BYTES: a number");
    n << match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        other => panic!("TALLY_BENCH_BYTES: unknown unit {other:?}"),
    }
}

fn write_payload(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    let mut block = vec![0u8; 1 << 20];
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

async fn start_node(dir: &Path) -> Node {
    let mut config = Config::default();
    config.node.listen = "127.0.0.1:0".parse().unwrap();
    // No gossip: leechers must fetch from the seeder, not from each other.
    config.node.gossip_interval = Duration::from_secs(3600);
    config.node.target_peers = 0;
    let identity = Identity::generate(&mut rand::rng());
    let parts = NodeParts::open(dir, identity, config, Behaviour::default()).unwrap();
    Node::start(parts).await.unwrap()
}

/// Downloads `content` from `seeder` with a fresh leecher after another until `stop`.
async fn keep_transferring(seeder: PeerAddr, content: ContentId, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let dir = scratch_dir();
        let leecher = start_node(dir.path()).await;
        peers::connect(leecher.shared(), seeder.clone())
            .await
            .unwrap();
        let status = fetch::start(leecher.shared(), content, dir.path().join("out.bin")).unwrap();
        tokio::select! {
            phase = status.finished() => assert_eq!(phase, Phase::Complete),
            () = stop.cancelled() => {}
        }
        leecher.shutdown(Duration::from_secs(10)).await.unwrap();
    }
}

/// What one phase of load measured.
struct Measured {
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// The seeder's upload rate meanwhile, bytes per second.
    upload_bps: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let at = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[at]) / 1000.0
    }
}

/// One connection: requests `path` one after another until `deadline`.
async fn connection(addr: SocketAddr, path: &'static str, deadline: Instant) -> Vec<u32> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let host = addr.to_string();
    let bearer = format!("Bearer {KEY}");
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let request = hyper::Request::get(path)
            .header("host", &host)
            .header("authorization", &bearer)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let sent = Instant::now();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies
}

/// [`CONNECTIONS`] connections requesting `path` for `secs`.
async fn drive(addr: SocketAddr, path: &'static str, secs: Duration, seeder: &Shared) -> Measured {
    let up0 = seeder.bytes_up.load(Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + secs;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        tasks.spawn(connection(addr, path, deadline));
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies_us.extend(done.unwrap());
    }
    let elapsed = start.elapsed();
    let up = seeder.bytes_up.load(Ordering::Relaxed) - up0;
    latencies_us.sort_unstable();
    Measured {
        requests: latencies_us.len() as u64,
        elapsed,
        latencies_us,
        upload_bps: up as f64 / elapsed.as_secs_f64(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(name: &str, phase: &Measured) {
    println!(
        "  {name:<22} {:>9.0} req/s  ({} requests in {:.2} s; latency p50 {:.2} ms, p99 {:.2} ms; seeder uploading {:.0} MiB/s; load {})",
        phase.rate(),
        phase.requests,
        phase.elapsed.as_secs_f64(),
        phase.percentile(0.5),
        phase.percentile(0.99),
        phase.upload_bps / f64::from(1 << 20),
        load()
    );
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("TALLY_BENCH_SECS").map_or(
        Duration::from_secs(if benchmarking { 10 } else { 1 }),
        |s| Duration::from_secs(s.parse().expect("TALLY_BENCH_SECS: a number")),
    );
    let rounds: usize = std::env::var("TALLY_BENCH_ROUNDS")
        .map_or(if benchmarking { 2 } else { 1 }, |r| {
            r.parse().expect("TALLY_BENCH_ROUNDS: a number")
        });
    assert!(rounds > 0, "TALLY_BENCH_ROUNDS must be above 0");
    let size = std::env::var("TALLY_BENCH_BYTES")
        .map_or(if benchmarking { 256 << 20 } else { 8 << 20 }, |s| {
            parse_size(&s)
        });
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nodes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let generator = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let dir = scratch_dir();
    let source = dir.path().join("source.bin");
    write_payload(&source, size);
    let seeder = nodes.block_on(start_node(&dir.path().join("seeder")));
    let content = seeder
        .shared()
        .content
        .import(&source, &mut |_| {})
        .unwrap()
        .0;
    let shared = Arc::clone(seeder.shared());

    // The node's API, as `tally run` serves it, and the trivial baseline beside it.
    let (api, trivial) = nodes.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        *shared.api_addr.lock().unwrap() = Some(api);
        let router = tally_web::router(
            Arc::new(NodeHandle::new(Arc::clone(&shared))),
            tally_web::ApiAuth::new(KEY, api),
        );
        let stop = shared.cancel.clone();
        tokio::spawn(tally_web::serve(listener, router, async move {
            stop.cancelled().await
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trivial = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, trivial)
    });

    let seeder_addr = PeerAddr {
        peer_id: seeder.peer_id(),
        addr: seeder.quic_addr().unwrap().to_string(),
    };
    let stop = CancellationToken::new();
    let transfer = nodes.spawn(keep_transferring(seeder_addr, content, stop.clone()));
    let started = Instant::now();
    while shared.bytes_up.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no transfer");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "api: GET /api/v1/status vs a trivial axum handler, {CONNECTIONS} keep-alive HTTP/1.1 connections, {} s per phase, {rounds} round(s), while a {} MiB download from the node repeats; {cpus} CPUs; load {}",
        secs.as_secs(),
        size >> 20,
        load()
    );
    // The handler alone, in process: what one status costs the node without HTTP.
    let handle = NodeHandle::new(Arc::clone(&shared));
    let calls = 20_000u32;
    let t0 = Instant::now();
    for _ in 0..calls {
        let status = nodes.block_on(tally_web::NodeApi::status(&handle)).unwrap();
        std::hint::black_box(serde_json::to_vec(&status).unwrap());
    }
    println!(
        "  status handler + JSON in process: {:.1} us per call",
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
    );
    // The routers alone, in process (no sockets): what the middleware costs per request.
    let in_process = |router: axum::Router, path: &'static str, host: String| {
        let t0 = Instant::now();
        for _ in 0..calls {
            let request = hyper::Request::get(path)
                .header("host", &host)
                .header("authorization", format!("Bearer {KEY}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let response = nodes.block_on(async {
                let response = tower::ServiceExt::oneshot(router.clone(), request)
                    .await
                    .unwrap();
                axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap()
            });
            std::hint::black_box(response);
        }
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
    };
    let node_router = tally_web::router(
        Arc::new(NodeHandle::new(Arc::clone(&shared))),
        tally_web::ApiAuth::new(KEY, api),
    );
    let plain = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    println!(
        "  in process: node router /api/v1/limits {:.1} us, /api/v1/status {:.1} us; trivial router {:.1} us per request",
        in_process(node_router.clone(), "/api/v1/limits", api.to_string()),
        in_process(node_router, "/api/v1/status", api.to_string()),
        in_process(plain, "/", trivial.to_string()),
    );
    let (mut status_rates, mut trivial_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("round {round}:");
        let status = generator.block_on(drive(api, "/api/v1/status", secs, &shared));
        report("GET /api/v1/status", &status);
        let limits = generator.block_on(drive(api, "/api/v1/limits", secs, &shared));
        report("GET /api/v1/limits", &limits);
        let baseline = generator.block_on(drive(trivial, "/", secs, &shared));
        report("trivial axum handler", &baseline);
        assert!(
            status.upload_bps > 0.0 && baseline.upload_bps > 0.0,
            "the transfer stalled"
        );
        status_rates.push(status.rate());
        trivial_rates.push(baseline.rate());
    }
    let (status, baseline) = (median(status_rates), median(trivial_rates));
    println!(
        "status {status:.0} req/s, trivial {baseline:.0} req/s (medians): ratio {:.1}% (target >= 50%)",
        100.0 * status / baseline
    );

    stop.cancel();
    nodes.block_on(async {
        transfer.await.unwrap();
        seeder.shutdown(Duration::from_secs(10)).await.unwrap();
    });
}
