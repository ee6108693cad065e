//! The `tally` binary as users run it: real processes, real QUIC on 127.0.0.1 (port 0), temporary
//! data dirs. Three nodes through init, run, connect, share, get, status and ledger export; and
//! a leecher killed with SIGKILL mid-download that resumes after a restart.
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/process.rs"]
mod process;
use common::payload;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

fn tally(data: &Path) -> Command {
    process::tally(data, "info")
}

fn run_ok(data: &Path, args: &[&str]) -> String {
    let output = tally(data).args(args).output().unwrap();
    assert_ok(&output, args);
    String::from_utf8(output.stdout).unwrap()
}

fn assert_ok(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "tally {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `tally run` process, stopped (SIGTERM, then waited for) when dropped.
struct Daemon {
    child: Child,
    info: Value,
}

impl Daemon {
    fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = tally(data)
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "tally run printed nothing and exited");
        let info: Value = serde_json::from_str(&line).unwrap();
        Self { child, info }
    }

    fn peer(&self) -> String {
        format!(
            "{}@{}",
            self.info["peer_id"].as_str().unwrap(),
            self.info["quic_addr"].as_str().unwrap()
        )
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = wait_exit(&mut self.child);
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap()
}

fn receipts(data: &Path) -> Vec<Value> {
    run_ok(data, &["ledger", "export", "--json"])
        .lines()
        .map(json)
        .collect()
}

fn pair_receipt(data: &Path, uploader: &str, downloader: &str) -> Option<Value> {
    receipts(data)
        .into_iter()
        .find(|r| r["uploader"] == uploader && r["downloader"] == downloader)
}

#[test]
fn three_nodes_through_init_run_connect_share_get_status_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    for dir in &dirs {
        run_ok(dir, &["init"]);
    }
    let a = Daemon::start(&dirs[0], &[]);
    let b = Daemon::start(&dirs[1], &[]);
    let c = Daemon::start(&dirs[2], &[]);

    let file = tmp.path().join("movie.bin");
    let bytes = payload(3 << 20, 7);
    std::fs::write(&file, &bytes).unwrap();
    let shared = run_ok(&dirs[0], &["share", file.to_str().unwrap()]);
    let content = shared.trim();
    assert_eq!(content.len(), 64, "{shared}");
    // B learns it from A, then C from A and B.
    run_ok(&dirs[1], &["connect", &a.peer()]);
    let out_b = tmp.path().join("b.bin");
    run_ok(
        &dirs[1],
        &["get", content, "--out", out_b.to_str().unwrap()],
    );
    assert!(std::fs::read(&out_b).unwrap() == bytes);
    run_ok(&dirs[2], &["connect", &a.peer()]);
    run_ok(&dirs[2], &["connect", &b.peer()]);
    let out_c = tmp.path().join("c.bin");
    let got = json(&run_ok(
        &dirs[2],
        &["get", content, "--out", out_c.to_str().unwrap(), "--json"],
    ));
    assert_eq!(got["state"], "complete");
    assert!(std::fs::read(&out_c).unwrap() == bytes);

    let status = json(&run_ok(&dirs[2], &["status", "--json"]));
    assert_eq!(status["peer_id"], c.info["peer_id"]);
    assert_eq!(status["peers_connected"], 2);
    assert_eq!(status["transfer"]["bytes_down"], bytes.len() as u64);
    let peers = json(&run_ok(&dirs[2], &["peers", "--json"]));
    assert_eq!(peers.as_array().unwrap().len(), 2);

    // Every receipt C holds is also held, identical, by its uploader; all of C's downloads are
    // acknowledged.
    let c_id = c.info["peer_id"].as_str().unwrap();
    let mut acknowledged = 0;
    for (daemon, dir) in [(&a, &dirs[0]), (&b, &dirs[1])] {
        let up = daemon.info["peer_id"].as_str().unwrap();
        let at_c = pair_receipt(&dirs[2], up, c_id);
        let at_up = pair_receipt(dir, up, c_id);
        assert_eq!(at_c, at_up);
        acknowledged += at_c.map_or(0, |r| r["bytes"].as_u64().unwrap());
    }
    assert_eq!(acknowledged, bytes.len() as u64);

    for daemon in [a, b, c] {
        assert!(daemon.stop().success());
    }
    // With the nodes stopped, export reads the store itself and finds the same receipts.
    assert!(!receipts(&dirs[2]).is_empty());
    assert!(
        !dirs[2].join("node.json").exists(),
        "node.json outlived its node"
    );
}

#[test]
fn a_leecher_killed_mid_download_resumes_and_both_sides_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let seeder_dir = tmp.path().join("seeder");
    let leecher_dir = tmp.path().join("leecher");
    let seeder = Daemon::start(&seeder_dir, &["--upload-limit", "4MiB"]);
    let file = tmp.path().join("big.bin");
    let bytes = payload(16 << 20, 9);
    std::fs::write(&file, &bytes).unwrap();
    let content = run_ok(&seeder_dir, &["share", file.to_str().unwrap()])
        .trim()
        .to_owned();
    let out = tmp.path().join("got.bin");

    let leecher = Daemon::start(&leecher_dir, &["--peer", &seeder.peer()]);
    let mut get = tally(&leecher_dir)
        .args(["get", &content, "--out", out.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the leecher once half has arrived: at 4 MiB/s the content store has flushed its map
    // of verified chunks (each second) at least once by then.
    let start = Instant::now();
    loop {
        let status = json(&run_ok(&leecher_dir, &["status", "--json"]));
        if status["transfer"]["bytes_down"].as_u64().unwrap() >= 8 << 20 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the download made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    leecher.kill9();
    let _ = wait_exit(&mut get);

    // Restarted, it reconnects to the seeder from --peer and the download resumes.
    let leecher = Daemon::start(&leecher_dir, &["--peer", &seeder.peer()]);
    let got = json(&run_ok(
        &leecher_dir,
        &["get", &content, "--out", out.to_str().unwrap(), "--json"],
    ));
    assert_eq!(got["state"], "complete");
    assert!(std::fs::read(&out).unwrap() == bytes);
    let down = json(&run_ok(&leecher_dir, &["status", "--json"]))["transfer"]["bytes_down"]
        .as_u64()
        .unwrap();
    assert!(
        down < bytes.len() as u64,
        "the restarted leecher fetched {down} bytes: the verified chunks were not kept"
    );

    let up = seeder.info["peer_id"].as_str().unwrap().to_owned();
    let down_id = leecher.info["peer_id"].as_str().unwrap().to_owned();
    assert!(seeder.stop().success());
    assert!(leecher.stop().success());
    let at_seeder = pair_receipt(&seeder_dir, &up, &down_id).expect("the seeder holds a receipt");
    let at_leecher =
        pair_receipt(&leecher_dir, &up, &down_id).expect("the leecher holds a receipt");
    assert_eq!(
        at_seeder, at_leecher,
        "both sides hold the same latest receipt"
    );
    // What the killed leecher received after its last durable proposal is lost from its count;
    // the seeder's credit window (4 MiB by default) bounds it.
    assert!(at_seeder["bytes"].as_u64().unwrap() >= bytes.len() as u64 - (4 << 20));
}

#[test]
fn commands_without_a_running_node_say_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n");
    run_ok(&data, &["init"]);
    for args in [
        &["status"][..],
        &["peers"],
        &["share", "/etc/hostname"],
        &["connect", "x@y:1"],
    ] {
        let output = tally(&data).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no tally node is running"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("tally") && stderr.contains(" run"),
            "{args:?}: {stderr}"
        );
    }
    // A node that was killed leaves node.json behind; the commands still say so.
    let daemon = Daemon::start(&data, &[]);
    daemon.kill9();
    let output = tally(&data).args(["status"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no tally node is running"), "{stderr}");
}

#[test]
fn rate_limits_change_at_runtime_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n");
    let daemon = Daemon::start(&data, &["--upload-limit", "2MiB"]);
    let status = json(&run_ok(&data, &["status", "--json"]));
    assert_eq!(status["limits"]["upload_bytes_per_s"], 2 << 20);
    assert_eq!(status["limits"]["download_bytes_per_s"], Value::Null);
    let key = run_ok(&data, &["api-key"]).trim().to_owned();
    let api = format!("http://{}", daemon.info["api_addr"].as_str().unwrap());
    let client = tally_node::client::ApiClient::new(&api, key);
    let set = client
        .set_limits(&tally_web::model::RateLimits {
            upload_bytes_per_s: None,
            download_bytes_per_s: Some(500 << 10),
        })
        .unwrap();
    assert_eq!(set.download_bytes_per_s, Some(500 << 10));
    let status = json(&run_ok(&data, &["status", "--json"]));
    assert_eq!(status["limits"]["upload_bytes_per_s"], Value::Null);
    assert_eq!(status["limits"]["download_bytes_per_s"], 500 << 10);
    assert!(daemon.stop().success());
}

#[test]
fn standing_of_a_peer_is_explained_by_the_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n");
    let daemon = Daemon::start(&data, &[]);
    let stranger = "ab".repeat(32);
    let text = run_ok(&data, &["standing", &stranger]);
    assert!(text.contains("at the floor"), "{text}");
    assert!(text.contains(&stranger), "{text}");
    let standing = json(&run_ok(&data, &["standing", &stranger, "--json"]));
    assert_eq!(standing["peer_id"], stranger.as_str());
    assert_eq!(standing["at_floor"], true);
    assert_eq!(standing["score"], 0.0);
    // Not a peer id: a readable error, exit 2, before any request.
    let output = tally(&data)
        .args(["standing", "not-a-peer"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a peer id"), "{stderr}");
    assert!(daemon.stop().success());
}

#[test]
fn an_offer_is_posted_listed_and_cancelled_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n");
    let daemon = Daemon::start(&data, &[]);
    let offer = json(&run_ok(
        &data,
        &[
            "offer", "--bytes", "10MiB", "--price", "5", "--rate", "2MiB/s", "--ttl", "30m",
            "--json",
        ],
    ));
    let id = offer["order_id"].as_str().unwrap().to_owned();
    assert_eq!(offer["side"], "offer");
    assert_eq!(offer["bytes"], 10 << 20);
    assert_eq!(offer["max_rate"], 2 << 20);
    assert_eq!(offer["price_per_gib"], 5);
    let market = json(&run_ok(&data, &["market", "--json"]));
    assert_eq!(market["offers"][0]["order_id"], id.as_str());
    assert_eq!(market["mine"][0]["order_id"], id.as_str());
    assert_eq!(market["offers_total"], 1);
    let text = run_ok(&data, &["market"]);
    assert!(text.contains(&id[..16]), "{text}");

    let cancelled = json(&run_ok(&data, &["cancel", &id, "--json"]));
    assert_eq!(cancelled["cancelled"], true);
    let market = json(&run_ok(&data, &["market", "--json"]));
    assert_eq!(market["offers_total"], 0);
    assert_eq!(market["mine"][0]["cancelled"], true);

    // Cancelled already: the node says so (404), exit 2.
    let output = tally(&data).args(["cancel", &id]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    // Bad input: a readable error before any request.
    for (args, says) in [
        (
            &["offer", "--bytes", "ten", "--price", "1"][..],
            "is not a size",
        ),
        (
            &["bid", "--bytes", "1MiB", "--max-price", "1", "--ttl", "9d"][..],
            "is not a duration",
        ),
        (
            &[
                "bid",
                "--bytes",
                "1MiB",
                "--max-price",
                "1",
                "--content",
                "x",
            ][..],
            "is not a content id",
        ),
        (&["cancel", "not-an-id"][..], "is not an order id"),
    ] {
        let output = tally(&data).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(daemon.stop().success());
}
