//! Faults of the network between real `tally run` processes, each on a host of its own: a Linux
//! network namespace with its own interfaces, addresses and routes, wired to the others by veth
//! pairs and bridges that the test creates.
//!
//! - Ten nodes on two switches (bridges) joined by one cable (a veth pair). The cable is cut
//!   (`ip link set … down`) while each half transfers and makes receipts, then joined again:
//!   every node must end with the same receipts, every pair agreeing on both sides, and no
//!   conflict proof anywhere.
//! - A transfer between two hosts that reach each other only through a userspace UDP relay
//!   (`support/relay.rs`) that drops, delays, duplicates and reorders datagrams with a seeded
//!   fault model (this kernel has no `netem`), the uploader's link also rate-limited by `tbf`:
//!   the download completes and verifies and both sides hold the same receipt.
//!
//! Making namespaces needs `unshare` with user namespaces (or root) and `ip`: each test runs
//! itself again under `unshare --user --map-root-user --net --pid --fork --mount --mount-proc`,
//! so it holds the whole network, and everything it started dies with it. Where the machine does
//! not permit that, the tests print `faults: SKIPPED <test>: <why>` and pass.
//!
//! Randomized: the seed is printed; replay with `TALLY_TEST_SEED=<seed>`.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/process.rs"]
mod process;
use common::payload;

#[path = "support/relay.rs"]
mod relay;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_ledger::{Pair, PeerId, Receipt};
use tally_node::client::{ApiClient, ClientError};
use tally_web::HexId;
use tally_web::model::{ConnectRequest, DownloadState, GetRequest, RateLimits, ShareRequest};

use relay::{FaultModel, Relay};

/// The longest any one wait may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// Set in the environment of the copy of the test that runs inside the namespaces.
const INSIDE: &str = "TALLY_FAULTS_INSIDE";

/// Receipts every 256 KiB (one per chunk), gossip every 500 ms.
const CONFIG: &str = "[node]\nack_bytes = 262144\ngossip_interval_ms = 500\n";

fn test_seed() -> u64 {
    match std::env::var("TALLY_TEST_SEED") {
        Ok(text) => text.trim().parse().expect("TALLY_TEST_SEED is not a u64"),
        Err(_) => rand::random(),
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("faults: SKIPPED {test}: {why}");
}

/// Polls `condition` until it holds, failing after [`DEADLINE`] with `what`.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

const UNSHARE: [&str; 8] = [
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--mount",
    "--mount-proc",
    "--",
];

/// Whether this process is the copy inside the namespaces and should run the test's body. The
/// copy outside runs the test again inside them (failing if it fails there, with its output), or
/// prints why it cannot and returns false.
fn inside(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    // What the test needs: a user and network namespace, a bridge and a veth pair in it, and a
    // namespace nested in it.
    let probe = Command::new("unshare")
        .args(UNSHARE)
        .args(["sh", "-c"])
        .arg(
            "ip link add probe0 type bridge && ip link add probe1 type veth peer name probe2 \
             && unshare --net true",
        )
        .output();
    match probe {
        Err(e) => {
            skip(test, &format!("cannot run unshare: {e}"));
            return false;
        }
        Ok(output) if !output.status.success() => {
            skip(
                test,
                &format!(
                    "this machine does not permit a user and network namespace with veth pairs \
                     and bridges (unshare --user --map-root-user --net, ip link add): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            );
            return false;
        }
        Ok(_) => {}
    }
    let output = Command::new("unshare")
        .args(UNSHARE)
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The copy's report, where `cargo test` shows this test's output.
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} failed inside its namespaces ({}):\n{stdout}",
        output.status
    );
    false
}

/// Runs `program args` in this test's namespace; panics with its stderr if it fails.
fn sh(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ip ARGS` (split at spaces) in this test's namespace: the switch every host hangs off.
fn ip(args: &str) {
    sh("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// A host: a network namespace of its own, held open by a `sleep`.
struct Host {
    holder: Child,
}

impl Host {
    fn new() -> Self {
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "echo ready && exec sleep 3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the host's namespace");
        let host = Self { holder };
        host.ip("link set lo up");
        host
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// What runs a command on this host.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "nsenter".to_owned(),
            format!("--net={}", self.netns()),
            "--".to_owned(),
        ]
    }

    /// `ip ARGS` on this host.
    fn ip(&self, args: &str) {
        let netns = format!("--net={}", self.netns());
        let mut all = vec![netns.as_str(), "--", "ip"];
        all.extend(args.split_whitespace());
        sh("nsenter", &all);
    }

    /// A cable from this host's `inside` interface (with `addr`, a CIDR) to `outside` on the
    /// switch.
    fn plug(&self, inside: &str, addr: &str, outside: &str) {
        ip(&format!(
            "link add {outside} type veth peer name {inside} netns {}",
            self.holder.id()
        ));
        ip(&format!("link set {outside} up"));
        self.ip(&format!("addr add {addr} dev {inside}"));
        self.ip(&format!("link set {inside} up"));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn bridge(name: &str) {
    ip(&format!("link add {name} type bridge"));
    ip(&format!("link set {name} up"));
}

// ---------------------------------------------------------------------------------------------
// Nodes

fn tally(data: &Path) -> Command {
    process::tally(data, "warn")
}

/// A `tally run` process on a host, SIGKILLed when dropped (the pid namespace reaps the rest).
struct Node {
    name: String,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
    info: Value,
    api: ApiClient,
}

impl Node {
    /// Initialises `dir` and starts a node in it on `host`, QUIC on `listen`, the API on
    /// `api_listen` (both port 0), with `args`.
    fn start(host: &Host, name: &str, dir: &Path, listen: IpAddr, api_listen: IpAddr) -> Self {
        Self::start_with(host, name, dir, listen, api_listen, &[])
    }

    fn start_with(
        host: &Host,
        name: &str,
        dir: &Path,
        listen: IpAddr,
        api_listen: IpAddr,
        args: &[&str],
    ) -> Self {
        let output = tally(dir).arg("init").output().unwrap();
        assert!(output.status.success(), "tally init: {output:?}");
        std::fs::write(dir.join("config.toml"), CONFIG).unwrap();
        let log = dir.with_extension("log");
        let wrapper = host.wrapper();
        let mut child = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_tally"))
            .arg("--data-dir")
            .arg(dir)
            .args(["run", "--json", "--listen"])
            .arg(SocketAddr::new(listen, 0).to_string())
            .arg("--api-listen")
            .arg(SocketAddr::new(api_listen, 0).to_string())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("TALLY_NETWORK")
            .env_remove("TALLY_DATA_DIR")
            .env("TALLY_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let line = process::first_line(child.stdout.take().unwrap(), DEADLINE);
        let Ok(info) = serde_json::from_str::<Value>(&line) else {
            let _ = child.kill();
            panic!(
                "{name} did not start: {line:?}; stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let key = std::fs::read_to_string(dir.join("api_key")).unwrap();
        let api = ApiClient::new(
            &format!("http://{}", info["api_addr"].as_str().unwrap()),
            key.trim().to_owned(),
        );
        Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            log,
            child,
            info,
            api,
        }
    }

    fn peer_id(&self) -> PeerId {
        self.info["peer_id"].as_str().unwrap().parse().unwrap()
    }

    fn quic_addr(&self) -> SocketAddr {
        self.info["quic_addr"].as_str().unwrap().parse().unwrap()
    }

    /// Connects to `peer_id` at `addr`, and redials it after drops.
    fn connect(&self, peer_id: PeerId, addr: SocketAddr) {
        let request = ConnectRequest {
            peer: format!("{peer_id}@{addr}"),
        };
        if let Err(e) = self.api.connect(&request) {
            panic!("{} cannot connect to {addr}: {e}", self.name);
        }
    }

    fn share(&self, path: &Path) -> HexId {
        self.api
            .share(&ShareRequest {
                path: path.to_str().unwrap().to_owned(),
            })
            .unwrap()
            .content_id
    }

    /// Starts (again) fetching `content` to `out`; one running already is left be.
    fn get(&self, content: HexId, out: &Path) {
        let request = GetRequest {
            content_id: content,
            out: out.to_str().unwrap().to_owned(),
        };
        match self.api.get(&request) {
            Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
            Err(e) => panic!("{}: get failed: {e}", self.name),
        }
    }

    /// Whether the download of `content` is complete; one that failed is started again (a
    /// fetch may give up on providers it cannot reach).
    fn complete(&self, content: HexId, out: &Path, restarts: &mut u32) -> bool {
        match self.api.download(&content).map(|d| d.state) {
            Ok(DownloadState::Complete) => true,
            Ok(DownloadState::Failed) => {
                *restarts += 1;
                self.get(content, out);
                false
            }
            _ => false,
        }
    }

    /// Every latest receipt the node holds (its own and third parties'), by pair.
    fn receipts(&self) -> BTreeMap<Pair, Receipt> {
        let mut lines = Vec::new();
        self.api.ledger_export(&mut lines).unwrap();
        lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice::<Receipt>(line).unwrap())
            .map(|r| (r.pair(), r))
            .collect()
    }

    /// `GET /api/v1/conflicts`: the conflict proofs the node holds.
    fn conflicts(&self) -> Vec<Value> {
        let url = format!(
            "http://{}/api/v1/conflicts",
            self.info["api_addr"].as_str().unwrap()
        );
        let key = std::fs::read_to_string(self.dir.join("api_key")).unwrap();
        let mut response = ureq::get(&url)
            .header("Authorization", &format!("Bearer {}", key.trim()))
            .call()
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Stops the node (SIGKILL) and checks its store with `tally ledger verify`.
    fn stop_and_verify(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let output = tally(&self.dir)
            .args(["ledger", "verify", "--json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: ledger verify failed: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what each node logged (warnings and up).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- {} (last lines of its log)", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The sum of the bytes of `downloader`'s latest receipts, over its uploaders.
fn acknowledged(receipts: &BTreeMap<Pair, Receipt>, downloader: PeerId) -> u64 {
    receipts
        .values()
        .filter(|r| r.downloader == downloader)
        .map(|r| r.bytes)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// A ten-node network split in two and healed

const SPLIT: &str = "a_ten_node_network_split_in_two_and_healed_reconverges_without_conflicts";

/// Extra seconds the cable stays cut once both halves have done their work
/// (`TALLY_FAULTS_SPLIT_S`; 0 by default). Above QUIC's 30 s idle timeout, the connections
/// across the cut drop and must be dialed again.
fn split_hold() -> Duration {
    Duration::from_secs(std::env::var("TALLY_FAULTS_SPLIT_S").map_or(0, |s| {
        s.parse().expect("TALLY_FAULTS_SPLIT_S is not a number")
    }))
}

#[test]
fn a_ten_node_network_split_in_two_and_healed_reconverges_without_conflicts() {
    if !inside(SPLIT) {
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    // Two switches, A and B, joined by a cable; a management switch M on which the test
    // reaches each node's API (ports isolated: hosts cannot talk to each other over it).
    ip("link set lo up");
    bridge("sw-a");
    bridge("sw-b");
    bridge("sw-m");
    ip("addr add 10.2.0.254/24 dev sw-m");
    ip("link add cable-a type veth peer name cable-b");
    ip("link set cable-a master sw-a");
    ip("link set cable-b master sw-b");
    ip("link set cable-a up");
    ip("link set cable-b up");

    let hosts: Vec<Host> = (0..10).map(|_| Host::new()).collect();
    for (i, host) in hosts.iter().enumerate() {
        let n = i + 1;
        host.plug("eth0", &format!("10.1.0.{n}/24"), &format!("data{i}"));
        let switch = if i < 5 { "sw-a" } else { "sw-b" };
        ip(&format!("link set data{i} master {switch}"));
        host.plug("mgmt0", &format!("10.2.0.{n}/24"), &format!("mgmt{i}"));
        ip(&format!("link set mgmt{i} master sw-m"));
        sh(
            "bridge",
            &["link", "set", "dev", &format!("mgmt{i}"), "isolated", "on"],
        );
    }
    // Node 9 serves Z slowly, so its download by node 4 (on the other switch) is under way when
    // the cable is cut.
    let nodes: Vec<Node> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let data: IpAddr = format!("10.1.0.{}", i + 1).parse().unwrap();
            let mgmt: IpAddr = format!("10.2.0.{}", i + 1).parse().unwrap();
            let dir = tmp.path().join(format!("n{i}"));
            let args: &[&str] = if i == 9 {
                &["--upload-limit", "256KiB"]
            } else {
                &[]
            };
            Node::start_with(host, &format!("n{i}"), &dir, data, mgmt, args)
        })
        .collect();
    let ids: Vec<PeerId> = nodes.iter().map(Node::peer_id).collect();
    // A ring with chords: each node dials the next two; six links cross the cable.
    for (i, node) in nodes.iter().enumerate() {
        for j in [(i + 1) % 10, (i + 2) % 10] {
            node.connect(ids[j], nodes[j].quic_addr());
        }
    }
    wait_for("every node to have at least four connections", || {
        nodes
            .iter()
            .all(|n| n.api.status().is_ok_and(|s| s.peers_connected >= 4))
    });

    let content = |name: &str, len: usize, seed: u64| {
        let bytes = payload(len, seed);
        let path = tmp.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    };
    let (x_path, x_bytes) = content("x.bin", 3 << 20, 1);
    let (y_path, y_bytes) = content("y.bin", 3 << 20, 2);
    let (z_path, z_bytes) = content("z.bin", 2 << 20, 3);
    let x = nodes[0].share(&x_path);
    let y = nodes[5].share(&y_path);
    let z = nodes[9].share(&z_path);
    let out = |i: usize, name: &str| tmp.path().join(format!("n{i}-{name}"));
    let mut restarts = 0;

    // Node 4 (switch A) fetches Z from node 9 (switch B) until a few receipts are in.
    nodes[4].get(z, &out(4, "z"));
    wait_for("node 4's download of Z to be under way", || {
        nodes[4]
            .api
            .download(&z)
            .is_ok_and(|d| d.bytes_have >= 512 << 10)
    });

    // Cut. Each half transfers on its own: X to nodes 1 and 2, Y to nodes 6 and 7.
    ip("link set cable-a down");
    let cut = Instant::now();
    let half_a = [0, 1, 2, 3, 4];
    let half_b = [5, 6, 7, 8, 9];
    for (i, c) in [(1, x), (2, x), (6, y), (7, y)] {
        nodes[i].get(c, &out(i, "in-half"));
    }
    wait_for("the downloads within each half to complete", || {
        [(1, x), (2, x), (6, y), (7, y)]
            .iter()
            .all(|&(i, c)| nodes[i].complete(c, &out(i, "in-half"), &mut restarts))
    });
    let halves_fetched = cut.elapsed();
    // Gossip works within each half: all of a half holds the receipts of the half's new pairs,
    // and none of them reached the other half.
    let made_in = |half: &[usize], downloaders: &[usize]| {
        let mut made = BTreeMap::new();
        for &i in half {
            for (pair, receipt) in nodes[i].receipts() {
                if downloaders.iter().any(|&d| ids[d] == pair.downloader) {
                    made.insert(pair, receipt);
                }
            }
        }
        made
    };
    for (half, other, downloaders) in [(&half_a, &half_b, [1, 2]), (&half_b, &half_a, [6, 7])] {
        let want = || made_in(half, &downloaders);
        wait_for("each half's receipts to reach the whole half", || {
            let want = want();
            !want.is_empty()
                && half.iter().all(|&i| {
                    let held = nodes[i].receipts();
                    want.iter().all(|(pair, r)| held.get(pair) == Some(r))
                })
        });
        let leaked = made_in(other, &downloaders);
        assert!(
            leaked.is_empty(),
            "receipts made on one side of the cut reached the other: {leaked:?}"
        );
    }
    let halves_gossiped = cut.elapsed();
    let in_half = made_in(&half_a, &[1, 2]).len() + made_in(&half_b, &[6, 7]).len();
    let hold = split_hold().saturating_sub(cut.elapsed());
    std::thread::sleep(hold);
    let split_for = cut.elapsed();

    // Heal. Transfers across the cable again: Y to node 3, X to node 8; Z to node 4 goes on.
    ip("link set cable-a up");
    nodes[9]
        .api
        .set_limits(&RateLimits {
            upload_bytes_per_s: None,
            download_bytes_per_s: None,
        })
        .unwrap();
    nodes[3].get(y, &out(3, "across"));
    nodes[8].get(x, &out(8, "across"));
    let all = [
        (1, x, "in-half"),
        (2, x, "in-half"),
        (6, y, "in-half"),
        (7, y, "in-half"),
        (3, y, "across"),
        (8, x, "across"),
        (4, z, "z"),
    ];
    let healed = Instant::now();
    wait_for("every download to complete after the heal", || {
        all.iter()
            .all(|&(i, c, name)| nodes[i].complete(c, &out(i, name), &mut restarts))
    });
    let fetched_after = healed.elapsed();
    for &(i, c, name) in &all {
        let want = if c == x {
            &x_bytes
        } else if c == y {
            &y_bytes
        } else {
            &z_bytes
        };
        assert!(
            std::fs::read(out(i, name)).unwrap() == *want,
            "node {i}'s copy of {name}"
        );
    }

    // Reconverged: every node holds the same receipts, every downloader's receipts cover what
    // it fetched, and nobody holds a conflict proof.
    let mut last = BTreeMap::new();
    wait_for("every node to hold the same receipts", || {
        let first = nodes[0].receipts();
        let covered = all.iter().all(|&(i, c, _)| {
            let len = if c == z { z_bytes.len() } else { x_bytes.len() };
            acknowledged(&first, ids[i]) >= len as u64
        });
        let same = nodes[1..].iter().all(|n| n.receipts() == first);
        last = first;
        covered && same
    });
    for (i, node) in nodes.iter().enumerate() {
        let conflicts = node.conflicts();
        assert!(
            conflicts.is_empty(),
            "node {i} holds conflict proofs: {conflicts:?}"
        );
    }
    let converged_after = healed.elapsed();
    let pairs = last.len();
    for node in nodes {
        node.stop_and_verify();
    }
    eprintln!(
        "faults: 10 nodes, cable cut for {split_for:.1?} (halves fetched at {halves_fetched:.1?}, \
         their receipts all over each half at {halves_gossiped:.1?}); {in_half} pairs made \
         receipts within the halves meanwhile; after the heal every download complete in \
         {fetched_after:.1?}, {pairs} pairs held identically by all 10 in {converged_after:.1?}; \
         {restarts} failed downloads started again; no conflicts; total {:.1?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// A transfer over a lossy, slow path

const LOSSY: &str =
    "a_transfer_through_a_lossy_reordering_slow_relay_completes_and_both_sides_agree";

/// The fault model of both directions: 5% loss, 2–20 ms of delay each way (its spread reorders
/// datagrams too), 2% duplicated, 3% held back 30 ms more.
const LOSSY_MODEL: FaultModel = FaultModel {
    drop: 0.05,
    duplicate: 0.02,
    reorder: 0.03,
    delay_min: Duration::from_millis(2),
    delay_max: Duration::from_millis(20),
    reorder_delay: Duration::from_millis(30),
};

#[test]
fn a_transfer_through_a_lossy_reordering_slow_relay_completes_and_both_sides_agree() {
    if !inside(LOSSY) {
        return;
    }
    let started = Instant::now();
    let seed = test_seed();
    eprintln!("faults: seed {seed} (replay with TALLY_TEST_SEED={seed})");
    let tmp = tempfile::tempdir().unwrap();
    // Two hosts, each cabled to this namespace only, which does not route between them: the
    // relay here is their one path.
    ip("link set lo up");
    let (up_host, down_host) = (Host::new(), Host::new());
    up_host.plug("eth0", "10.3.1.1/24", "to-up");
    ip("addr add 10.3.1.254/24 dev to-up");
    down_host.plug("eth0", "10.3.2.1/24", "to-down");
    ip("addr add 10.3.2.254/24 dev to-down");
    // The uploader's link is slow: 16 Mbit/s through a token bucket.
    let tbf = Command::new("nsenter")
        .arg(format!("--net={}", up_host.netns()))
        .args(["--", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf"])
        .args(["rate", "16mbit", "burst", "32kb", "latency", "50ms"])
        .output()
        .unwrap();
    let slow = if tbf.status.success() {
        "tbf 16 Mbit/s on the uploader's link"
    } else {
        eprintln!(
            "faults: no tbf rate limit ({}); the link runs at full speed",
            String::from_utf8_lossy(&tbf.stderr).trim()
        );
        "no tbf"
    };

    let a: IpAddr = "10.3.1.1".parse().unwrap();
    let b: IpAddr = "10.3.2.1".parse().unwrap();
    let up = Node::start(&up_host, "up", &tmp.path().join("up"), a, a);
    let down = Node::start(&down_host, "down", &tmp.path().join("down"), b, b);
    let relay = Relay::start(
        "10.3.2.254:0".parse().unwrap(),
        up.quic_addr(),
        "10.3.1.254".parse().unwrap(),
        LOSSY_MODEL,
        seed,
    )
    .unwrap();
    down.connect(up.peer_id(), relay.addr);

    let bytes = payload(2 << 20, seed);
    let file = tmp.path().join("file.bin");
    std::fs::write(&file, &bytes).unwrap();
    let content = up.share(&file);
    let out = tmp.path().join("got.bin");
    down.get(content, &out);
    let mut restarts = 0;
    let fetching = Instant::now();
    wait_for("the download through the relay to complete", || {
        down.complete(content, &out, &mut restarts)
    });
    let fetched_in = fetching.elapsed();
    assert!(std::fs::read(&out).unwrap() == bytes, "the downloaded file");
    let pair = Pair {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
    };
    let mut agreed = None;
    wait_for("both sides to hold the same final receipt", || {
        let at_up = up.receipts().get(&pair).copied();
        let same = at_up.is_some_and(|r| r.bytes >= bytes.len() as u64)
            && at_up == down.receipts().get(&pair).copied();
        agreed = at_up;
        same
    });
    assert!(up.conflicts().is_empty(), "{:?}", up.conflicts());
    assert!(down.conflicts().is_empty(), "{:?}", down.conflicts());
    // The faults happened.
    let stats = &relay.stats;
    for (way, s) in [("forward", &stats.forward), ("back", &stats.back)] {
        let (datagrams, dropped, duplicated, reordered) = s.get();
        assert!(
            datagrams > 0 && dropped > 0 && duplicated > 0 && reordered > 0,
            "{way}: {s}"
        );
    }
    let receipt = agreed.unwrap();
    eprintln!(
        "faults: {} MiB through the relay ({slow}) in {fetched_in:.1?}, seq {} agreed on both \
         sides, {restarts} failed downloads started again; to the uploader: {}; back: {}; total \
         {:.1?}",
        bytes.len() >> 20,
        receipt.seq,
        stats.forward,
        stats.back,
        started.elapsed()
    );
    drop(relay);
    up.stop_and_verify();
    down.stop_and_verify();
}
