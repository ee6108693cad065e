//! The `tally` command line, run as a real process against a fresh temporary data directory per
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tally_ledger::{Identity, Ingested, NetworkId, Receipt, ReceiptBody, Store, StoreConfig};

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// A `tally` command with none of the caller's settings leaking in.
fn command() -> Command {
    let mut cmd = Command::new(TALLY);
    for var in [
        "TALLY_DATA_DIR",
        "TALLY_NETWORK",
        "TALLY_LOG_LEVEL",
        "TALLY_STORE_CACHE_MIB",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.arg("--data-dir").arg(data).args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

fn run(data: &Path, args: &[&str]) -> Output {
    run_env(data, args, &[])
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Runs and expects exit status 0.
fn ok(data: &Path, args: &[&str]) -> String {
    let output = run(data, args);
    assert!(
        output.status.success(),
        "tally {args:?} failed ({:?}): {}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap()
}

fn data_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("data")
}

fn peer_id(data: &Path) -> String {
    ok(data, &["id"]).trim_end().to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

/// A receipt from `up` to `down`, signed by both on `network`.
fn receipt_on(network: &str, up: u8, down: u8, seq: u64, bytes: u64) -> Receipt {
    let net = NetworkId::from_name(network);
    let (uploader, downloader) = (identity(up), identity(down));
    ReceiptBody {
        uploader: uploader.peer_id(),
        downloader: downloader.peer_id(),
        seq,
        bytes,
        credits: bytes * 2,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(&downloader, &net)
    .countersign(&uploader, &net)
}

fn receipt(up: u8, down: u8, seq: u64, bytes: u64) -> Receipt {
    receipt_on("tally", up, down, seq, bytes)
}

/// Writes receipts into the store of `data` (network "tally"), then closes it.
fn fill_store(data: &Path, receipts: &[Receipt]) {
    let store = Store::open(
        data.join("store"),
        NetworkId::from_name("tally"),
        StoreConfig::default(),
    )
    .unwrap();
    for outcome in store.ingest(receipts).unwrap() {
        assert!(matches!(outcome, Ingested::Applied(_)), "{outcome:?}");
    }
    store.flush().unwrap();
}

fn json_line(receipt: &Receipt) -> String {
    serde_json::to_string(receipt).unwrap()
}

#[test]
fn init_creates_private_files_and_a_config_with_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let printed = ok(&data, &["init"]);

    let key = fs::read(data.join("identity.key")).unwrap();
    assert_eq!(key.len(), 32);
    let api_key = fs::read_to_string(data.join("api_key")).unwrap();
    assert_eq!(api_key.len(), 65, "{api_key:?}");
    assert!(api_key.ends_with('\n'));
    assert!(
        api_key
            .trim_end()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(data.join("store").is_dir());
    #[cfg(unix)]
    {
        assert_eq!(mode(&data.join("identity.key")), 0o600);
        assert_eq!(mode(&data.join("api_key")), 0o600);
        assert_eq!(mode(&data), 0o700);
    }

    let text = fs::read_to_string(data.join("config.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let keys: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["network", "log_level", "store", "node"])
    );
    assert_eq!(table["network"].as_str(), Some("tally"));
    assert_eq!(table["log_level"].as_str(), Some("warn"));
    let store = table["store"].as_table().unwrap();
    assert_eq!(store.keys().collect::<Vec<_>>(), ["cache_mib"]);
    assert_eq!(store["cache_mib"].as_integer(), Some(64));
    let node = table["node"].as_table().unwrap();
    let node_keys: BTreeSet<&str> = node.keys().map(String::as_str).collect();
    assert_eq!(
        node_keys,
        BTreeSet::from([
            "listen",
            "api_listen",
            "peers",
            "ack_bytes",
            "credit_window",
            // `stranger_credit` is there too, commented out: unset, it follows `credit_window`.
            "stranger_write_off_s",
            "upload_limit",
            "download_limit",
            "upload_budget_daily",
            "upload_budget_monthly",
            "max_connections",
            "max_connections_per_ip",
            "gossip_interval_ms",
            "max_third_party_receipts",
            "target_peers",
        ])
    );
    assert!(text.contains("\n# stranger_credit = "), "{text}");
    // Every key is explained.
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 10,
        "{text}"
    );
    let file = tally_node::config::FileConfig::parse(&text).unwrap();
    assert!(file.network.is_some() && file.log_level.is_some());
    assert!(file.store.and_then(|s| s.cache_mib).is_some());

    // What init printed: the PeerId, the network and its id, the files.
    let id = peer_id(&data);
    assert!(printed.contains(&id), "{printed}");
    assert!(printed.contains(&NetworkId::from_name("tally").to_string()));
    for file in ["identity.key", "api_key", "config.toml"] {
        assert!(
            printed.contains(&format!("{}", data.join(file).display())),
            "{printed}"
        );
    }
    assert_eq!(ok(&data, &["api-key"]), api_key);
}

#[test]
fn id_prints_64_lowercase_hex_on_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    let out = ok(&data, &["id"]);
    assert_eq!(out.len(), 65, "{out:?}");
    let id = out.strip_suffix('\n').unwrap();
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    let key: [u8; 32] = fs::read(data.join("identity.key"))
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(id, Identity::from_secret_bytes(key).peer_id().to_string());

    let report = json(&ok(&data, &["id", "--json"]));
    assert_eq!(report["peer_id"], id);
    assert_eq!(report["network"], "tally");
    assert_eq!(
        report["network_id"],
        NetworkId::from_name("tally").to_string()
    );
}

#[test]
fn a_second_init_refuses_and_force_makes_a_new_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    let first = peer_id(&data);
    let api_key = ok(&data, &["api-key"]);

    let again = run(&data, &["init"]);
    assert_eq!(again.status.code(), Some(2));
    let message = stderr(&again);
    assert!(message.contains("already exists"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert_eq!(peer_id(&data), first);

    let forced = json(&ok(&data, &["init", "--force", "--json"]));
    let second = peer_id(&data);
    assert_ne!(second, first);
    assert_eq!(forced["peer_id"], second);
    assert_eq!(forced["replaced_peer_id"], first);
    assert_eq!(forced["network"], "tally");
    // The API key and the config are kept.
    assert_eq!(ok(&data, &["api-key"]), api_key);
    let actions: Vec<(String, String)> = forced["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = PathBuf::from(f["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (f["action"].as_str().unwrap().to_owned(), name)
        })
        .collect();
    for expected in [
        ("wrote", "identity.key"),
        ("kept", "api_key"),
        ("kept", "config.toml"),
        ("kept", "store"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{actions:?}"
        );
    }
}

#[test]
fn the_network_flag_sets_the_network_id() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("fresh");
    let report = json(&ok(&fresh, &["init", "--network", "lab-net", "--json"]));
    let lab = NetworkId::from_name("lab-net").to_string();
    assert_eq!(report["network"], "lab-net");
    assert_eq!(report["network_id"], lab);
    assert_ne!(lab, NetworkId::from_name("tally").to_string());
    let id = json(&ok(&fresh, &["id", "--json"]));
    assert_eq!(id["network_id"], lab);
    assert_eq!(id["peer_id"], report["peer_id"]);
    let config = fs::read_to_string(fresh.join("config.toml")).unwrap();
    assert!(config.contains("network = \"lab-net\""), "{config}");

    // An initialised node moves to another network with --force: its config is updated in
    // place, and the old network's store is moved aside, not deleted.
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    fill_store(&data, &[receipt(1, 2, 1, 10)]);
    let before = json(&ok(&data, &["id", "--json"]));
    assert_eq!(before["network"], "tally");
    let moved = json(&ok(
        &data,
        &["init", "--force", "--network", "other", "--json"],
    ));
    assert_eq!(
        moved["network_id"],
        NetworkId::from_name("other").to_string()
    );
    let after = json(&ok(&data, &["id", "--json"]));
    assert_eq!(after["network"], "other");
    assert_eq!(
        after["network_id"],
        NetworkId::from_name("other").to_string()
    );
    let config = fs::read_to_string(data.join("config.toml")).unwrap();
    assert!(config.contains("network = \"other\""), "{config}");
    assert!(
        config.contains("# The network this node belongs to."),
        "comments kept"
    );
    let aside = moved["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["action"] == "moved")
        .expect("the old store was moved aside");
    assert!(Path::new(aside["to"].as_str().unwrap()).is_dir());
    assert_eq!(ok(&data, &["ledger", "export", "--json"]), "");

    // TALLY_NETWORK overrides the config file.
    let env = run_env(&data, &["id", "--json"], &[("TALLY_NETWORK", "env-net")]);
    assert!(env.status.success(), "{}", stderr(&env));
    assert_eq!(json(&stdout(&env))["network"], "env-net");
}

#[test]
fn export_then_import_into_another_node_round_trips_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    for dir in [&a, &b, &c] {
        ok(dir, &["init"]);
    }
    let mut receipts = vec![receipt(1, 2, 1, 100), receipt(1, 2, 2, 250)];
    for up in 3..12u8 {
        receipts.push(receipt(up, up + 1, u64::from(up), u64::from(up) * 1000));
        receipts.push(receipt(up + 1, up, 1, 7));
    }
    fill_store(&a, &receipts);

    let exported = ok(&a, &["ledger", "export", "--json"]);
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(
        lines.len(),
        19,
        "the latest receipt of each pair: {exported}"
    );
    let first = json(lines[0]);
    let keys: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "uploader",
            "downloader",
            "seq",
            "bytes",
            "credits",
            "time_ms",
            "sig_downloader",
            "sig_uploader"
        ])
    );
    for line in &lines {
        let parsed: Receipt = serde_json::from_str(line).unwrap();
        assert!(receipts.contains(&parsed));
        assert_eq!(
            &json_line(&parsed),
            line,
            "exactly serde_json of the receipt"
        );
    }
    assert!(
        exported.contains(&json_line(&receipts[1])),
        "seq 2 supersedes seq 1"
    );
    assert!(!exported.contains(&json_line(&receipts[0])));

    let file = tmp.path().join("receipts.jsonl");
    fs::write(&file, &exported).unwrap();
    let summary = json(&ok(
        &b,
        &["ledger", "import", file.to_str().unwrap(), "--json"],
    ));
    assert_eq!(summary["new"], 19);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(ok(&b, &["ledger", "export", "--json"]), exported);

    // From stdin.
    let mut child = command()
        .arg("--data-dir")
        .arg(&c)
        .args(["ledger", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exported.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("19 new"), "{}", stdout(&output));
    assert_eq!(ok(&c, &["ledger", "export", "--json"]), exported);

    // The table: short ids, seq, bytes, credits, time.
    let table = ok(&a, &["ledger", "export"]);
    let r = &receipts[1];
    let row = table
        .lines()
        .find(|l| l.starts_with(&r.uploader.fmt_short()))
        .unwrap();
    assert!(row.contains(&r.downloader.fmt_short()), "{row}");
    assert!(row.contains(" 250 ") && row.contains(" 500 "), "{row}");
    assert!(row.contains("2023-11-14 22:13:20.002"), "{row}");
    assert!(table.contains("19 receipts"), "{table}");
}

#[test]
fn import_names_each_bad_line_applies_the_good_ones_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);

    let good = [
        receipt(1, 2, 1, 10),
        receipt(2, 3, 4, 20),
        receipt(3, 1, 2, 30),
    ];
    let mut flipped = receipt(4, 5, 1, 40);
    flipped.sig_uploader.0[7] ^= 0x01;
    let seq_zero = receipt(5, 6, 0, 50);
    let elsewhere = receipt_on("elsewhere", 6, 7, 1, 60);
    let lines = [
        json_line(&good[0]),          // 1
        "{\"uploader\": ".to_owned(), // 2: malformed
        json_line(&good[1]),          // 3
        json_line(&flipped),          // 4
        String::new(),                // 5: blank, skipped
        json_line(&seq_zero),         // 6
        json_line(&elsewhere),        // 7
        "   ".to_owned(),             // 8: blank, skipped
        json_line(&good[2]),          // 9
    ];
    let file = tmp.path().join("mixed.jsonl");
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let path = file.to_str().unwrap();

    let output = run(&data, &["ledger", "import", path]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = stderr(&output);
    let reported: Vec<&str> = errors.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(reported.len(), 4, "{errors}");
    assert!(reported[0].starts_with("line 2: rejected: "), "{errors}");
    assert!(reported[0].contains("EOF"), "{errors}");
    assert!(reported[1].starts_with("line 4: rejected: "), "{errors}");
    assert!(reported[1].contains("uploader's signature"), "{errors}");
    assert!(
        reported[2].starts_with("line 6: rejected: seq is 0"),
        "{errors}"
    );
    assert!(reported[3].starts_with("line 7: rejected: "), "{errors}");
    assert!(reported[3].contains("another network"), "{errors}");
    let summary = stdout(&output);
    assert!(summary.contains("3 new"), "{summary}");
    assert!(summary.contains("4 rejected"), "{summary}");

    let exported = ok(&data, &["ledger", "export", "--json"]);
    let mut expected: Vec<String> = good.iter().map(json_line).collect();
    expected.sort();
    let mut held: Vec<String> = exported.lines().map(str::to_owned).collect();
    held.sort();
    assert_eq!(held, expected);

    // Again: the good ones are duplicates now; the bad ones are still rejected.
    let again = run(&data, &["ledger", "import", path, "--json"]);
    assert_eq!(again.status.code(), Some(1));
    let summary = json(&stdout(&again));
    assert_eq!(summary["new"], 0);
    assert_eq!(summary["duplicate"], 3);
    assert_eq!(summary["rejected"], 4);
    assert_eq!(summary["conflicts"], 0);
    assert_eq!(summary["lines"], 7);

    // An older receipt is stale; a contradicting one is a conflict, not a rejection.
    let stale = receipt(2, 3, 3, 15);
    let contradiction = receipt(1, 2, 1, 11);
    let file = tmp.path().join("conflict.jsonl");
    fs::write(
        &file,
        format!("{}\n{}\n", json_line(&stale), json_line(&contradiction)),
    )
    .unwrap();
    let output = run(
        &data,
        &["ledger", "import", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = json(&stdout(&output));
    assert_eq!(summary["stale"], 1);
    assert_eq!(summary["conflicts"], 1);
    assert!(
        stderr(&output).contains("line 2: conflict"),
        "{}",
        stderr(&output)
    );

    // verify: three pairs, one proof (two more receipts), its two keys dishonest.
    let report = json(&ok(&data, &["ledger", "verify", "--json"]));
    assert_eq!(report["pairs"], 3);
    assert_eq!(report["receipts"], 5);
    assert_eq!(report["conflicts"], 1);
    assert_eq!(report["dishonest"], 2);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    let text = ok(&data, &["ledger", "verify"]);
    for line in [
        "receipts        5",
        "pairs           3",
        "conflicts       1",
    ] {
        assert!(text.contains(line), "{text}");
    }
    assert!(text.contains("dishonest keys  2"), "{text}");
    assert!(text.contains("problems        0"), "{text}");
}

#[test]
fn an_identity_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("identity.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let output = run(&data, &["id"]);
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
        assert!(stdout(&output).is_empty());
    }
    // A damaged key says so too.
    fs::write(data.join("identity.key"), b"short").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join("identity.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let output = run(&data, &["id"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected 32"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_store_held_by_another_process_is_reported_as_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    let held = Store::open(
        data.join("store"),
        NetworkId::from_name("tally"),
        StoreConfig::default(),
    )
    .unwrap();
    for args in [
        &["ledger", "export", "--json"][..],
        &["ledger", "verify"],
        &["ledger", "import", "-"],
    ] {
        let output = run(&data, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("in use"), "{}", stderr(&output));
    }
    drop(held);
    ok(&data, &["ledger", "export", "--json"]);
}

#[test]
fn config_errors_name_the_key_or_the_position() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    let config = data.join("config.toml");
    let original = fs::read_to_string(&config).unwrap();

    fs::write(&config, format!("netwrok = \"typo\"\n{original}")).unwrap();
    let output = run(&data, &["id"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("netwrok"), "{message}");
    assert!(message.contains(&config.display().to_string()), "{message}");
    assert!(message.contains("line 1"), "{message}");

    fs::write(
        &config,
        original.replace("cache_mib = 64", "cache_mib = 64\ncolour = 1"),
    )
    .unwrap();
    let message = stderr(&run(&data, &["ledger", "export"]));
    assert!(message.contains("colour"), "{message}");

    fs::write(&config, "network = \n").unwrap();
    let message = stderr(&run(&data, &["id"]));
    assert!(message.contains("line 1, column"), "{message}");

    fs::write(&config, &original).unwrap();
    let output = run_env(
        &data,
        &["ledger", "export"],
        &[("TALLY_STORE_CACHE_MIB", "lots")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("TALLY_STORE_CACHE_MIB"),
        "{}",
        stderr(&output)
    );
    ok(&data, &["ledger", "export"]);
}

#[test]
fn commands_on_a_missing_data_dir_say_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nowhere");
    for args in [
        &["id"][..],
        &["api-key"],
        &["ledger", "export"],
        &["ledger", "verify"],
    ] {
        let output = run(&data, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        assert!(message.contains("run `tally init`"), "{args:?}: {message}");
        assert!(message.contains(&data.display().to_string()), "{message}");
    }
    let message = stderr(&run(&data, &["id"]));
    assert!(message.contains("no identity in"), "{message}");
    assert!(!data.exists(), "only init creates the data dir");
}

#[test]
fn help_lists_and_explains_the_commands() {
    let output = command().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = stdout(&output);
    for name in [
        "init",
        "id",
        "api-key",
        "ledger",
        "--data-dir",
        "--log-level",
        "Exit status",
    ] {
        assert!(help.contains(name), "{name} missing from: {help}");
    }
    let ledger = stdout(&command().args(["ledger", "--help"]).output().unwrap());
    for name in ["export", "import", "verify"] {
        assert!(ledger.contains(name), "{ledger}");
    }
    let import = stdout(
        &command()
            .args(["ledger", "import", "--help"])
            .output()
            .unwrap(),
    );
    assert!(
        import.contains("Exit status: 0 when no line was rejected"),
        "{import}"
    );
    let bare = command().output().unwrap();
    assert_eq!(bare.status.code(), Some(2), "no command is a usage error");
}

#[test]
fn export_into_a_closed_pipe_stops_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    ok(&data, &["init"]);
    // About 300 KB of JSON: more than a pipe and the output buffer hold.
    let receipts: Vec<Receipt> = (1..=60u8)
        .flat_map(|up| (61..=70u8).map(move |down| receipt(up, down, 1, 1)))
        .collect();
    fill_store(&data, &receipts);

    let mut child = command()
        .arg("--data-dir")
        .arg(&data)
        .args(["ledger", "export", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(stderr(&output), "");
}

#[cfg(target_os = "linux")]
#[test]
fn the_default_data_dir_is_the_platform_one() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg");
    let output = command()
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", &xdg)
        .args(["init", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(xdg.join("tally/identity.key").is_file());
    let report = json(&stdout(&output));
    assert_eq!(report["data_dir"], xdg.join("tally").display().to_string());

    // TALLY_DATA_DIR wins over it.
    let elsewhere = tmp.path().join("elsewhere");
    let output = command()
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", &xdg)
        .env("TALLY_DATA_DIR", &elsewhere)
        .arg("init")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(elsewhere.join("identity.key").is_file());
}

#[test]
fn testnet_refuses_a_bad_scenario_naming_file_line_and_key_before_starting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let scenario = tmp.path().join("broken.toml");
    std::fs::write(
        &scenario,
        "seed = 1\nduration_s = 30\n\n[[group]]\nname = \"a\"\nbehaviour = \"leecher\"\ncount = 2\n\n\
         [[content]]\nname = \"f\"\nsize = \"1MiB\"\nholders = [\"a\"]\nwanted_by = [\"b\"]\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let output = run(
        &data,
        &[
            "testnet",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("broken.toml:13: `content[0].wanted_by[0]`: no group is named `b`"),
        "{message}"
    );
    assert!(!out.exists(), "nothing started");

    // A missing file and an unknown behaviour are as clear.
    let output = run(&data, &["testnet", "/nonexistent/scenario.toml"]);
    assert!(
        stderr(&output).contains("cannot read it"),
        "{}",
        stderr(&output)
    );
    std::fs::write(
        &scenario,
        "seed = 1\nduration_s = 30\n[[group]]\nname = \"a\"\nbehaviour = \"lurker\"\ncount = 1\n",
    )
    .unwrap();
    let output = run(&data, &["testnet", scenario.to_str().unwrap()]);
    let message = stderr(&output);
    assert!(
        message.contains("broken.toml:5") && message.contains("lurker"),
        "{message}"
    );
}

#[test]
fn testnet_emit_configs_writes_a_data_dir_and_start_script_per_node() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let dir = tmp.path().join("nodes");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/sybil.toml");
    let text = ok(
        &data,
        &["testnet", scenario, "--emit-configs", dir.to_str().unwrap()],
    );
    assert!(text.contains("wrote 20 nodes"), "{text}");
    let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
    for node in ["seeders-0", "leechers-7", "clique-9"] {
        assert!(dir.join(node).join("identity.key").exists(), "{node}");
        assert!(readme.contains(node), "{node}");
        let script = std::fs::read_to_string(dir.join(node).join("start.sh")).unwrap();
        assert!(script.contains("run --listen 0.0.0.0:"), "{script}");
    }
    let gateway = std::fs::read_to_string(dir.join("clique-0/start.sh")).unwrap();
    assert!(
        !gateway.contains("--never-sign"),
        "the gateway uploads for real"
    );
    let member = std::fs::read_to_string(dir.join("clique-1/start.sh")).unwrap();
    assert!(member.contains("--never-sign --never-upload"));
    assert!(member.contains(" get "), "it fetches the release");
    // The clique's receipts are in its members' stores: 10 × 9 of them.
    let export = ok(&dir.join("clique-3"), &["ledger", "export", "--json"]);
    assert_eq!(export.lines().count(), 90);
}
