//! Crash safety of the running node, as users run it: real `tally run` processes on 127.0.0.1
//! (port 0) with temporary data dirs.
//!
//! - A busy victim V (sharing content both ways with two peers that stay up, downloading from
//!   both, uploading to both, gossiping, buying on one live trade and selling on another) is
//!   SIGKILLed 100 times at random moments and restarted on the same data dir each time. After
//!   every kill its store must open, and every receipt a peer holds that V signed must be
//!   covered by what V made durable (see [`Durable::check`] for exactly what that means). At the
//!   end every pair of the three nodes holds the same latest receipt on both sides, no conflict
//!   proof exists anywhere, every chain with V moved on after the last restart, and every
//!   download is complete and intact.
//! - A node whose data dir becomes read-only, or whose disk fills up, reports a clear error, keeps
//!   its store sound, and works again once the directory is writable or the space is back. Both
//!   need a private mount namespace (`unshare -m` and `nsenter`, as root); where the machine does
//!   not allow one they are skipped with a message saying why.
//!
//! Randomized: the seed is printed; replay a failure with `TALLY_TEST_SEED=<seed>`.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/process.rs"]
mod process;
use common::payload;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tally_ledger::{NetworkId, Pair, PeerId, Receipt, ReceiptBody, Store, StoreConfig};
use tally_node::client::{ApiClient, ClientError};
use tally_web::HexId;
use tally_web::model::{
    BidRequest, DownloadState, GetRequest, OfferRequest, RateLimits, ShareRequest,
};

/// The longest any one wait may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// SIGKILLs of the victim (`TALLY_CRASH_KILLS` overrides it, to replay a failure quickly).
const KILLS: usize = 100;

fn kills() -> usize {
    std::env::var("TALLY_CRASH_KILLS").map_or(KILLS, |n| n.parse().expect("TALLY_CRASH_KILLS"))
}

/// The victim runs this long (at random, in ms) between its restart and its next kill.
const UPTIME_MS: std::ops::RangeInclusive<u64> = 50..=1500;

/// Payload bytes per receipt: the default, 1 MiB (four chunks), so a downloader nearly always
/// holds bytes that no receipt covers yet when its uploader is killed.
const ACK_BYTES: u64 = 1 << 20;

/// What every node's config.toml says beyond the defaults.
const CONFIG: &str = "[node]\nack_bytes = 1048576\ngossip_interval_ms = 500\n";

fn test_seed() -> u64 {
    match std::env::var("TALLY_TEST_SEED") {
        Ok(text) => text.trim().parse().expect("TALLY_TEST_SEED is not a u64"),
        Err(_) => rand::random(),
    }
}

fn tally(data: &Path) -> Command {
    process::tally(data, "warn")
}

/// Polls `condition` until it holds, failing after [`DEADLINE`] with `what`.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Initialises `data` (identity, API key) and writes the test's config.toml.
fn init(data: &Path) {
    let output = tally(data).arg("init").output().unwrap();
    assert!(
        output.status.success(),
        "tally init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(data.join("config.toml"), CONFIG).unwrap();
}

/// One node's data dir and, while it runs, its `tally run` process.
struct Node {
    name: &'static str,
    dir: PathBuf,
    /// Where this process sees `dir` (inside a mount namespace: through `/proc/PID/root`).
    view: PathBuf,
    logs: PathBuf,
    /// Run before `tally`, e.g. `nsenter` into a mount namespace.
    wrapper: Vec<String>,
    args: Vec<String>,
    child: Option<Child>,
    info: Value,
    starts: u32,
}

impl Node {
    fn new(name: &'static str, dir: PathBuf, logs: &Path, args: &[String]) -> Self {
        Self {
            name,
            view: dir.clone(),
            dir,
            logs: logs.to_owned(),
            wrapper: Vec::new(),
            args: args.to_vec(),
            child: None,
            info: Value::Null,
            starts: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.logs.join(format!("{}-{}.log", self.name, self.starts))
    }

    fn command(&self) -> Command {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(env!("CARGO_BIN_EXE_tally"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_tally")),
        };
        command
            .arg("--data-dir")
            .arg(&self.dir)
            .env_remove("RUST_LOG")
            .env_remove("TALLY_NETWORK")
            .env_remove("TALLY_DATA_DIR")
            .env("TALLY_LOG_LEVEL", "warn");
        command
    }

    /// Starts `tally run` and waits for its startup line; the error says why it did not start,
    /// with its stderr.
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut child = self
            .command()
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--json",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let line = process::first_line(child.stdout.take().unwrap(), DEADLINE);
        match serde_json::from_str::<Value>(&line) {
            Ok(info) => {
                self.info = info;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                Err(format!(
                    "{} (start {}) did not start ({status}); stdout {line:?}; stderr:\n{}",
                    self.name,
                    self.starts,
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                ))
            }
        }
    }

    fn start(&mut self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    /// SIGKILL (`Child::kill` on Unix), then reaped.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn peer_id(&self) -> PeerId {
        self.info["peer_id"].as_str().unwrap().parse().unwrap()
    }

    fn peer(&self) -> String {
        format!(
            "{}@{}",
            self.info["peer_id"].as_str().unwrap(),
            self.info["quic_addr"].as_str().unwrap()
        )
    }

    fn api_key(&self) -> String {
        std::fs::read_to_string(self.view.join("api_key"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn base(&self) -> String {
        format!("http://{}", self.info["api_addr"].as_str().unwrap())
    }

    fn api(&self) -> ApiClient {
        ApiClient::new(&self.base(), self.api_key())
    }

    /// `method path` on the API, without the client's typing: (status, body).
    fn raw(&self, method: &str, path: &str) -> (u16, String) {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let url = format!("{}/api/v1{path}", self.base());
        let auth = format!("Bearer {}", self.api_key());
        let response = match method {
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            other => panic!("no {other}"),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// Every latest receipt the node holds, through `GET /ledger/export`.
    fn receipts(&self) -> Vec<Receipt> {
        let mut lines = Vec::new();
        self.api().ledger_export(&mut lines).unwrap();
        lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }

    fn conflicts(&self) -> Vec<Value> {
        let (status, body) = self.raw("GET", "/conflicts");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn connected(&self) -> u32 {
        self.api()
            .status()
            .map(|s| s.peers_connected)
            .unwrap_or_default()
    }

    /// Starts (again) fetching `content` to `out`; a download already running is left be.
    fn get(&self, content: HexId, out: &Path) {
        let request = GetRequest {
            content_id: content,
            out: out.to_str().unwrap().to_owned(),
        };
        match self.api().get(&request) {
            Ok(_) => {}
            Err(ClientError::Api { status: 409, .. }) => {}
            Err(e) => panic!("{}: get failed: {e}", self.name),
        }
    }

    fn download_state(&self, content: HexId) -> Option<DownloadState> {
        self.api().download(&content).ok().map(|d| d.state)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What V made durable, read from its store while it is down: per pair, its latest receipt and
/// the last body it proposed as downloader.
struct Durable {
    latest: BTreeMap<Pair, Receipt>,
    proposed: BTreeMap<Pair, ReceiptBody>,
}

impl Durable {
    /// Opens V's store as the restarted node will (the same `Store::open`), for the pairs V is in.
    fn read(dir: &Path, v: PeerId, peers: &[PeerId]) -> Result<Self, String> {
        let store = Store::open(
            dir.join("store"),
            NetworkId::from_name("tally"),
            StoreConfig::default(),
        )
        .map_err(|e| format!("the store does not open after the kill: {e}"))?;
        let report = store.check().map_err(|e| e.to_string())?;
        if !report.problems.is_empty() {
            return Err(format!("the store's check found {:?}", report.problems));
        }
        let mut durable = Self {
            latest: BTreeMap::new(),
            proposed: BTreeMap::new(),
        };
        for &peer in peers {
            for pair in [
                Pair {
                    uploader: v,
                    downloader: peer,
                },
                Pair {
                    uploader: peer,
                    downloader: v,
                },
            ] {
                if let Some(receipt) = store.latest(&pair).map_err(|e| e.to_string())? {
                    durable.latest.insert(pair, receipt);
                }
                if let Some(body) = store.last_proposal(&pair).map_err(|e| e.to_string())? {
                    durable.proposed.insert(pair, body);
                }
            }
        }
        Ok(durable)
    }

    /// Whether V's durable state covers `held`, a receipt V signed that another node holds.
    ///
    /// V's signature on a receipt leaves V only after V made it durable (PROTOCOL.md, "the pair
    /// exchange"): as uploader V stores and flushes the receipt before it sends its
    /// countersignature; as downloader V records its proposal before it sends it, and stores the
    /// countersigned receipt when it comes back. So "acknowledged by V" means:
    ///
    /// - V uploader: V's latest receipt of the pair has `seq ≥ held.seq`, identical at equal seq;
    /// - V downloader: V's latest receipt has `seq ≥ held.seq` (identical at equal seq), or V's
    ///   last recorded proposal has `seq ≥ held.seq` (the same body at equal seq): the kill may
    ///   have come between the countersignature's arrival and its storing, and the re-sync on
    ///   reconnect brings the receipt back; what V must never do is sign another body at a seq
    ///   it already signed.
    fn check(&self, v: PeerId, held: &Receipt) -> Result<(), String> {
        let pair = held.pair();
        let latest = self.latest.get(&pair);
        let covered_by_receipt = match latest {
            Some(ours) if ours.seq > held.seq => true,
            Some(ours) if ours.seq == held.seq => {
                if ours != held {
                    return Err(format!(
                        "V holds another receipt at seq {}: {ours:?} vs {held:?}",
                        held.seq
                    ));
                }
                true
            }
            _ => false,
        };
        if covered_by_receipt {
            return Ok(());
        }
        if pair.downloader == v
            && let Some(body) = self.proposed.get(&pair)
        {
            if body.seq > held.seq {
                return Ok(());
            }
            if body.seq == held.seq {
                return if *body == held.body() {
                    Ok(())
                } else {
                    Err(format!(
                        "V proposed another body at seq {}: {body:?} vs {held:?}",
                        held.seq
                    ))
                };
            }
        }
        Err(format!(
            "acknowledged receipt lost: a peer holds seq {} ({} bytes); V holds receipt seq {:?} \
             and proposal seq {:?}",
            held.seq,
            held.bytes,
            latest.map(|r| r.seq),
            self.proposed.get(&pair).map(|b| b.seq)
        ))
    }
}

fn involves(receipt: &Receipt, peer: PeerId) -> bool {
    receipt.uploader == peer || receipt.downloader == peer
}

#[test]
fn a_busy_node_killed_100_times_loses_no_acknowledged_receipt_and_its_pairs_agree() {
    let seed = test_seed();
    eprintln!("crash: seed {seed} (replay with TALLY_TEST_SEED={seed})");
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for name in ["v", "a", "b"] {
        init(&tmp.path().join(name));
    }
    // Upload limits keep the transfers going for the whole run: V fetches X from A and B, and
    // they fetch Y from V (and from each other).
    let limit = |rate: &str| vec!["--upload-limit".to_owned(), rate.to_owned()];
    let mut a = Node::new("a", tmp.path().join("a"), &logs, &limit("256KiB"));
    a.start();
    let mut b_args = limit("256KiB");
    b_args.extend(["--peer".to_owned(), a.peer()]);
    let mut b = Node::new("b", tmp.path().join("b"), &logs, &b_args);
    b.start();
    let mut v_args = limit("512KiB");
    v_args.extend(["--peer".to_owned(), a.peer(), "--peer".to_owned(), b.peer()]);
    let mut v = Node::new("v", tmp.path().join("v"), &logs, &v_args);
    v.start();
    let (v_id, a_id, b_id) = (v.peer_id(), a.peer_id(), b.peer_id());

    let x_bytes = payload(64 << 20, seed);
    let y_bytes = payload(48 << 20, seed ^ 1);
    let (x_file, y_file) = (tmp.path().join("x.bin"), tmp.path().join("y.bin"));
    std::fs::write(&x_file, &x_bytes).unwrap();
    std::fs::write(&y_file, &y_bytes).unwrap();
    let share = |node: &Node, file: &Path| {
        node.api()
            .share(&ShareRequest {
                path: file.to_str().unwrap().to_owned(),
            })
            .unwrap()
            .content_id
    };
    let x = share(&a, &x_file);
    assert_eq!(share(&b, &x_file), x);
    let y = share(&v, &y_file);
    wait_for("V connected to A and B", || v.connected() >= 2);

    // Two live trades, V on both sides: B sells upload to V, which fetches X from B (and A) at
    // the trade's price; V sells upload to A, which fetches Y from V (and B) at its price. V's
    // trades must outlive its restarts (they are kept in its store), or the priced receipts
    // of either stall.
    let trade = |seller: &Node, buyer: &Node, content: HexId, price: u64| {
        let offer = seller
            .api()
            .post_offer(&OfferRequest {
                // All the bid takes, so the next bid cannot match what is left of it.
                bytes: 16 << 20,
                price_per_gib: price,
                max_rate: None,
                ttl_s: Some(3600),
            })
            .unwrap();
        wait_for("the offer in the buyer's book", || {
            buyer
                .api()
                .market()
                .is_ok_and(|m| m.offers.iter().any(|o| o.order_id == offer.order_id))
        });
        buyer
            .api()
            .post_bid(&BidRequest {
                bytes: 16 << 20,
                max_price_per_gib: price + 3,
                content_id: Some(content),
                ttl_s: Some(3600),
            })
            .unwrap();
        let (seller_id, buyer_id) = (seller.peer_id(), buyer.peer_id());
        wait_for("the trade agreed on both sides", || {
            [seller, buyer].iter().all(|node| {
                node.api().trades().is_ok_and(|t| {
                    t.iter().any(|t| {
                        t.seller.as_bytes() == seller_id.as_bytes()
                            && t.buyer.as_bytes() == buyer_id.as_bytes()
                            && (t.state == "agreed" || t.state == "delivering")
                    })
                })
            })
        });
    };
    trade(&b, &v, x, 5);
    trade(&v, &a, y, 6);

    let (v_out, a_out, b_out) = (
        tmp.path().join("v-x.bin"),
        tmp.path().join("a-y.bin"),
        tmp.path().join("b-y.bin"),
    );
    v.get(x, &v_out);
    a.get(y, &a_out);
    b.get(y, &b_out);
    wait_for("receipts in all four of V's chains", || {
        let held: BTreeSet<Pair> = v.receipts().iter().map(Receipt::pair).collect();
        [(v_id, a_id), (v_id, b_id), (a_id, v_id), (b_id, v_id)]
            .iter()
            .all(|&(uploader, downloader)| {
                held.contains(&Pair {
                    uploader,
                    downloader,
                })
            })
    });

    // pair → highest seq any peer has been seen holding, and V's durable seq at the last kill.
    let mut seen: BTreeMap<Pair, u64> = BTreeMap::new();
    let mut durable_seq: BTreeMap<Pair, u64> = BTreeMap::new();
    let mut checked = 0u64;
    let mut downtime = Duration::ZERO;
    let kills = kills();
    for cycle in 0..kills {
        let context = |what: String| format!("seed {seed}, kill {}: {what}", cycle + 1);
        // The random moment: V is connected, fetching, serving and gossiping.
        std::thread::sleep(Duration::from_millis(rng.random_range(UPTIME_MS)));
        v.kill();
        let down = Instant::now();

        // V's disk is frozen until the restart: everything a peer holds that V signed was
        // signed before the kill, so it must be covered by what V made durable.
        let durable = Durable::read(&v.dir, v_id, &[a_id, b_id])
            .unwrap_or_else(|why| panic!("{}", context(why)));
        for (pair, receipt) in &durable.latest {
            let before = durable_seq.insert(*pair, receipt.seq).unwrap_or(0);
            assert!(
                receipt.seq >= before,
                "{}",
                context(format!(
                    "{pair:?} went back from seq {before} to {} at V",
                    receipt.seq
                ))
            );
        }
        for (name, peer) in [("A", &a), ("B", &b)] {
            for held in peer.receipts().iter().filter(|r| involves(r, v_id)) {
                durable
                    .check(v_id, held)
                    .unwrap_or_else(|why| panic!("{}", context(format!("{name}: {why}"))));
                let top = seen.entry(held.pair()).or_default();
                *top = (*top).max(held.seq);
                checked += 1;
            }
        }

        if let Err(why) = v.try_start() {
            panic!("{}", context(why));
        }
        v.get(x, &v_out);
        for (node, out) in [(&a, &a_out), (&b, &b_out)] {
            // A peer's fetch gives up after 30 s without providers; none should, but a failed
            // one is started again so the load stays on.
            if node.download_state(y) == Some(DownloadState::Failed) {
                node.get(y, out);
            }
        }
        wait_for(&context("V to reconnect to A and B".into()), || {
            v.connected() >= 2
        });
        downtime += down.elapsed();
    }
    let kill_phase = started.elapsed();

    // Every chain with V moves on after the last restart: a peer that held bytes V sent before
    // a kill is not refused forever.
    let at_last_kill = durable_seq.clone();
    wait_for("every chain with V to move past the last kill", || {
        let now: BTreeMap<Pair, u64> = v.receipts().iter().map(|r| (r.pair(), r.seq)).collect();
        at_last_kill
            .iter()
            .all(|(pair, seq)| now.get(pair).is_some_and(|now| now > seq))
    });

    // Lift the limits so every download finishes; each ends with its final receipts.
    for node in [&v, &a, &b] {
        node.api()
            .set_limits(&RateLimits {
                upload_bytes_per_s: None,
                download_bytes_per_s: None,
            })
            .unwrap();
    }
    for (node, content) in [(&v, x), (&a, y), (&b, y)] {
        wait_for(&format!("{}'s download to complete", node.name), || {
            node.download_state(content) == Some(DownloadState::Complete)
        });
    }
    assert!(std::fs::read(&v_out).unwrap() == x_bytes, "V's copy of X");
    assert!(std::fs::read(&a_out).unwrap() == y_bytes, "A's copy of Y");
    assert!(std::fs::read(&b_out).unwrap() == y_bytes, "B's copy of Y");

    // Both sides of every pair hold the same latest receipt (same seq, bytes, signatures).
    let nodes = [(&v, v_id), (&a, a_id), (&b, b_id)];
    let mut pairs = 0;
    wait_for("both sides of every pair to agree", || {
        let held: Vec<BTreeMap<Pair, Receipt>> = nodes
            .iter()
            .map(|(node, _)| node.receipts().into_iter().map(|r| (r.pair(), r)).collect())
            .collect();
        let side = |id: PeerId| nodes.iter().position(|(_, n)| *n == id).unwrap();
        pairs = 0;
        for &(_, uploader) in &nodes {
            for &(_, downloader) in &nodes {
                if uploader == downloader {
                    continue;
                }
                let pair = Pair {
                    uploader,
                    downloader,
                };
                let (up, down) = (
                    held[side(uploader)].get(&pair),
                    held[side(downloader)].get(&pair),
                );
                if up != down {
                    return false;
                }
                pairs += usize::from(up.is_some());
            }
        }
        true
    });
    for (node, _) in &nodes {
        assert_eq!(node.conflicts(), Vec::<Value>::new(), "{}", node.name);
    }
    // Both trades were delivered on priced receipts (far below par, one credit a byte), across
    // V's restarts as seller and as buyer.
    for (seller, buyer) in [(b_id, v_id), (v_id, a_id)] {
        let latest = v
            .receipts()
            .into_iter()
            .find(|r| r.uploader == seller && r.downloader == buyer)
            .unwrap();
        assert!(latest.credits < latest.bytes, "{latest:?}");
    }
    // Every seq a peer was seen holding is still at V.
    let final_v: BTreeMap<Pair, u64> = v.receipts().iter().map(|r| (r.pair(), r.seq)).collect();
    for (pair, seq) in &seen {
        assert!(
            final_v.get(pair).is_some_and(|held| held >= seq),
            "{pair:?}"
        );
    }
    let receipts_made: u64 = [(v_id, a_id), (v_id, b_id), (a_id, v_id), (b_id, v_id)]
        .iter()
        .map(|&(uploader, downloader)| {
            final_v
                .get(&Pair {
                    uploader,
                    downloader,
                })
                .copied()
                .unwrap_or(0)
        })
        .sum();
    eprintln!(
        "crash: {kills} kills and restarts, {checked} peer-held receipts checked against V's \
         store, {receipts_made} receipts in V's four chains, {pairs} pairs agreeing at the end; \
         kill phase {kill_phase:.1?} ({downtime:.1?} of it down or reconnecting), total {:.1?} \
         (ack every {ACK_BYTES} bytes)",
        started.elapsed()
    );
}

/// A private mount namespace, kept alive by a `sleep`, with a tmpfs of `size` mounted at `dir`
/// inside it: the mounts are nobody else's and vanish with the namespace's last process, even if
/// this test dies.
struct Namespace {
    holder: Child,
}

impl Namespace {
    /// The namespace, or why this machine cannot make one (not root, no `unshare`, no mounts).
    fn new(dir: &Path, size: &str) -> Result<Self, String> {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o size=\"$1\" tally-test \"$2\" && echo ready && exec sleep 3600")
            .arg("sh")
            .arg(size)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let output = holder.wait_with_output().unwrap();
            return Err(format!(
                "cannot make a mount namespace with a tmpfs (unshare -m, mount -t tmpfs): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { holder })
    }

    /// `path` (absolute) as seen inside the namespace.
    fn view(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(path.strip_prefix("/").unwrap())
    }

    /// What runs a command inside the namespace.
    fn wrapper(&self) -> Vec<String> {
        [
            "nsenter",
            "--target",
            &self.holder.id().to_string(),
            "--mount",
            "--",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `args` inside the namespace; panics if it fails.
    fn run(&self, args: &[&str]) {
        let wrapper = self.wrapper();
        let output = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?} in the namespace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Makes `dir` read-only (a read-only bind mount over itself), or writable again.
    fn read_only(&self, dir: &Path, read_only: bool) {
        let dir = dir.to_str().unwrap();
        if read_only {
            self.run(&["mount", "--bind", dir, dir]);
            self.run(&["mount", "-o", "remount,bind,ro", dir]);
        } else {
            self.run(&["umount", dir]);
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A node on a data dir inside `ns`, initialised there, with `args`.
fn node_in(ns: &Namespace, name: &'static str, dir: &Path, logs: &Path, args: &[String]) -> Node {
    let mut node = Node::new(name, dir.to_owned(), logs, args);
    node.wrapper = ns.wrapper();
    node.view = ns.view(dir);
    let output = node.command().arg("init").output().unwrap();
    assert!(
        output.status.success(),
        "tally init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(node.view.join("config.toml"), CONFIG).unwrap();
    node
}

/// `tally ledger verify --json` on a stopped node's data dir: the store opens and is sound.
fn verify_store(node: &Node) -> Value {
    let output = node
        .command()
        .args(["ledger", "verify", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: ledger verify failed ({}): {}{}",
        node.name,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Whether the latest receipt of `uploader → downloader` is the same at both nodes.
fn same_latest(up: &Node, down: &Node) -> bool {
    let pair = Pair {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
    };
    let find = |node: &Node| node.receipts().into_iter().find(|r| r.pair() == pair);
    let at_up = find(up);
    at_up.is_some() && at_up == find(down)
}

/// The skip message, printed where `cargo test` shows it.
fn skip(test: &str, why: &str) {
    eprintln!("crash: SKIPPED {test}: {why}");
}

/// Writes `path` until the file system is full; the error must say so.
fn fill(path: &Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0x5a_u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => panic!("wrote nothing"),
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                break;
            }
        }
    }
    // What a short write left in the page cache must reach the file system too.
    let _ = file.sync_all();
    written
}

fn wait_download(
    node: &Node,
    content: HexId,
    state: DownloadState,
) -> tally_web::model::DownloadInfo {
    let mut last = None;
    wait_for(&format!("{}'s download to be {state:?}", node.name), || {
        last = node.api().download(&content).ok();
        last.as_ref().is_some_and(|d| d.state == state)
    });
    last.unwrap()
}

/// Waits until the node's log of its current run says `text`, and prints the distinct warnings
/// that say it (what failed, for the record).
fn wait_log(node: &Node, text: &str) {
    wait_for(&format!("{}'s log to say {text:?}", node.name), || {
        std::fs::read_to_string(node.log_path()).is_ok_and(|log| log.contains(text))
    });
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    let kinds: BTreeSet<&str> = log
        .lines()
        .filter(|line| line.contains(text))
        .filter_map(|line| line.split(" WARN ").nth(1))
        .map(|warning| warning.split(':').next().unwrap_or(warning))
        .collect();
    eprintln!("crash: {} warned {text:?} from: {kinds:?}", node.name);
}

/// A node `n` on a tmpfs of `size` in a private mount namespace, connected to a seeder `s` that
/// uploads at 2 MiB/s; `None` (after printing why) where the machine cannot make the namespace.
struct OnTmpfs {
    // Dropped in this order: the nodes, then the namespace, then the directories.
    node: Node,
    seeder: Node,
    ns: Namespace,
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl OnTmpfs {
    fn start(test: &str, size: &str) -> Option<Self> {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let data = tmp.path().join("n");
        std::fs::create_dir(&data).unwrap();
        let ns = match Namespace::new(&data, size) {
            Ok(ns) => ns,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let mut seeder = Node::new(
            "s",
            tmp.path().join("s"),
            &logs,
            &["--upload-limit".to_owned(), "2MiB".to_owned()],
        );
        init(&seeder.dir);
        seeder.start();
        let mut node = node_in(
            &ns,
            "n",
            &data,
            &logs,
            &["--peer".to_owned(), seeder.peer()],
        );
        node.start();
        wait_for("the node connected to the seeder", || node.connected() >= 1);
        Some(Self {
            node,
            seeder,
            ns,
            tmp,
            data,
        })
    }

    /// `len` bytes shared by the seeder: (content id, bytes).
    fn share(&self, len: usize, seed: u64) -> (HexId, Vec<u8>) {
        let bytes = payload(len, seed);
        let file = self.tmp.path().join(format!("c{seed}.bin"));
        std::fs::write(&file, &bytes).unwrap();
        let id = self
            .seeder
            .api()
            .share(&ShareRequest {
                path: file.to_str().unwrap().to_owned(),
            })
            .unwrap()
            .content_id;
        (id, bytes)
    }

    /// Where the node writes `content`, and (in the namespace) where this test reads it.
    fn out(&self, name: &str) -> (PathBuf, PathBuf) {
        let out = self.data.join(name);
        let view = self.ns.view(&out);
        (out, view)
    }

    /// Fetches `content` until `min` bytes are in (the download runs on).
    fn fetch_some(&self, content: HexId, out: &Path, min: u64) {
        self.node.get(content, out);
        wait_for("a few receipts into the download", || {
            self.node
                .api()
                .download(&content)
                .is_ok_and(|d| d.bytes_have >= min)
        });
    }

    /// The download completes (started again if it failed), its bytes are right, both sides
    /// hold the same receipt and there is no conflict.
    fn finish(&self, content: HexId, out: &Path, view: &Path, bytes: &[u8]) {
        self.node.get(content, out);
        wait_download(&self.node, content, DownloadState::Complete);
        assert!(std::fs::read(view).unwrap() == bytes, "the downloaded file");
        wait_for("both sides to hold the same receipt", || {
            same_latest(&self.seeder, &self.node)
        });
        assert!(self.node.conflicts().is_empty());
        assert!(self.seeder.conflicts().is_empty());
    }

    /// SIGKILL, `ledger verify` (the store opens and is sound), restart.
    fn kill_verify_restart(&mut self) {
        self.node.kill();
        let report = verify_store(&self.node);
        assert_eq!(report["problems"], serde_json::json!([]), "{report}");
        assert!(report["pairs"].as_u64().unwrap() >= 1, "{report}");
        self.node.start();
        wait_for("the node reconnected", || self.node.connected() >= 1);
        wait_for("both sides to hold the same receipt", || {
            same_latest(&self.seeder, &self.node)
        });
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_keeps_the_store_sound_and_the_node_recovers() {
    let Some(mut t) = OnTmpfs::start(
        "a_full_disk_gives_a_clear_error_keeps_the_store_sound_and_the_node_recovers",
        "96m",
    ) else {
        return;
    };
    // The node uploads too: the seeder fetches Z from it at 1 MiB/s, so the node countersigns
    // (and writes its store) while the disk is full.
    let z_bytes = payload(8 << 20, 4);
    let z_file = t.tmp.path().join("z.bin");
    std::fs::write(&z_file, &z_bytes).unwrap();
    let z = t
        .node
        .api()
        .share(&ShareRequest {
            path: z_file.to_str().unwrap().to_owned(),
        })
        .unwrap()
        .content_id;
    t.seeder
        .api()
        .set_limits(&RateLimits {
            upload_bytes_per_s: Some(2 << 20),
            download_bytes_per_s: Some(1 << 20),
        })
        .unwrap();
    let z_out = t.tmp.path().join("s-z.bin");
    t.seeder.get(z, &z_out);
    let (first, first_bytes) = t.share(16 << 20, 1);
    let (first_out, first_view) = t.out("first.bin");
    t.fetch_some(first, &first_out, 4 << 20);

    // The disk fills up under running transfers: writes of chunks, of the map of verified
    // chunks and of receipts fail, and the log says why.
    let filler = t.ns.view(&t.data).join("filler");
    fill(&filler);
    wait_log(&t.node, "No space left on device (os error 28)");
    // Let the upload run into the full disk before space returns.
    let z_have = |t: &OnTmpfs| t.seeder.api().download(&z).map_or(0, |d| d.bytes_have);
    let before = z_have(&t);
    wait_for("the seeder to fetch more of Z from the full node", || {
        z_have(&t) >= before + (1 << 20) || z_have(&t) == z_bytes.len() as u64
    });
    wait_log(&t.node, "No space left on device (os error 28)");
    // A download started now fails at once, and the API says why.
    let (second, second_bytes) = t.share(4 << 20, 2);
    let (second_out, second_view) = t.out("second.bin");
    t.node.get(second, &second_out);
    let failed = wait_download(&t.node, second, DownloadState::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(t.node.api().status().is_ok(), "the node stays up");

    // Space returns: both downloads complete, and the receipts agree.
    std::fs::remove_file(&filler).unwrap();
    t.finish(first, &first_out, &first_view, &first_bytes);
    t.finish(second, &second_out, &second_view, &second_bytes);
    wait_download(&t.seeder, z, DownloadState::Complete);
    assert!(
        std::fs::read(&z_out).unwrap() == z_bytes,
        "the seeder's copy of Z"
    );
    wait_for(
        "both sides of the node's upload to hold the same receipt",
        || same_latest(&t.node, &t.seeder),
    );
    t.kill_verify_restart();
}

#[test]
fn a_read_only_data_dir_gives_a_clear_error_keeps_the_store_sound_and_the_node_recovers() {
    let Some(mut t) = OnTmpfs::start(
        "a_read_only_data_dir_gives_a_clear_error_keeps_the_store_sound_and_the_node_recovers",
        "256m",
    ) else {
        return;
    };
    let (content, bytes) = t.share(24 << 20, 3);
    let (out, view) = t.out("c.bin");
    t.fetch_some(content, &out, 4 << 20);

    // The data dir turns read-only under a running download (as `chmod a-w` does for a node not
    // run as root): files already open stay writable, new ones cannot be made, so the store's
    // flush fails before any receipt is acknowledged, and the log says why.
    t.ns.read_only(&t.data, true);
    wait_log(&t.node, "Read-only file system (os error 30)");
    assert!(t.node.api().status().is_ok(), "the node stays up");
    // The download says what holds it back.
    wait_for("the download to show the read-only data dir", || {
        t.node.api().download(&content).is_ok_and(|d| {
            d.state == DownloadState::Running
                && d.error
                    .as_deref()
                    .is_some_and(|e| e.contains("Read-only file system"))
        })
    });

    // Writable again: the download completes and the receipts agree.
    t.ns.read_only(&t.data, false);
    t.finish(content, &out, &view, &bytes);

    // A node started on a read-only data dir refuses with a clear error, and starts once the
    // dir is writable.
    t.node.kill();
    t.ns.read_only(&t.data, true);
    let refused = t.node.try_start().unwrap_err();
    assert!(refused.contains("Read-only file system"), "{refused}");
    t.ns.read_only(&t.data, false);
    t.node.start();
    t.kill_verify_restart();
}
