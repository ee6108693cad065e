//! sled 0.34 writes a snapshot of its page table while opening (whenever its log has grown since
//! the last one), to `snap.<lsn>.generating`, renamed to `snap.<lsn>` once complete. Killed in
//! between, it leaves the `.generating` file behind, and plain sled then fails to open with
//! `Corruption`. `Store::open` removes such files first; these tests pin that: once with a real
//! process killed the moment the file appears, once with a garbage file planted by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tally_ledger::{
    Applied, Identity, Ingested, NetworkId, Pair, Receipt, ReceiptBody, Store, StoreConfig,
};
use tally_tests::child::Spawned;
use tally_tests::test_seed;
use tally_tests::writer::{Plan, WRITER_NETWORK};

/// Receipts (one per pair) in the store the open is killed on: enough that sled's start-up
/// snapshot takes a moment to write.
const BULK_RECEIPTS: usize = 20_000;

/// Opens to try before concluding that sled never leaves a `.generating` file here.
const MAX_ATTEMPTS: usize = 40;

/// The longest any one wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn network() -> NetworkId {
    NetworkId::from_name(WRITER_NETWORK)
}

fn db_dir(store: &Path) -> PathBuf {
    store.join("db")
}

/// The names of the `snap.*.generating` files in sled's directory.
fn generating_snapshots(db: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(db) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap.") && name.ends_with(".generating"))
        .collect()
}

/// The names of sled's snapshot files, complete or not, sorted as sled sorts them.
fn snapshots(db: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(db)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap."))
        .collect();
    names.sort();
    names
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What plain sled (no `Store` in front) makes of a copy of `db`: the control that shows a
/// leftover file is one sled itself chokes on.
fn plain_sled_open(db: &Path) -> Result<(), String> {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("db");
    copy_dir(db, &copy);
    sled::Config::new()
        .path(&copy)
        .open()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `count` receipts, each the first of its own pair, among identities from fixed seeds.
fn bulk_receipts(count: usize) -> Vec<Receipt> {
    let net = network();
    let people = (1..).find(|n| n * (n - 1) >= count).unwrap();
    let ids: Vec<Identity> = (0..people as u32)
        .map(|i| {
            let mut secret = [0x5a; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(secret)
        })
        .collect();
    let mut receipts = Vec::with_capacity(count);
    'all: for up in &ids {
        for down in &ids {
            if up.peer_id() == down.peer_id() {
                continue;
            }
            let n = receipts.len() as u64;
            let body = ReceiptBody {
                uploader: up.peer_id(),
                downloader: down.peer_id(),
                seq: 1,
                bytes: 1000 + n,
                credits: 2000 + n,
                time_ms: 1_700_000_000_000 + n,
            };
            receipts.push(body.propose(down, &net).countersign(up, &net));
            if receipts.len() == count {
                break 'all;
            }
        }
    }
    receipts
}

/// The receipts a test has seen made durable: pair → latest receipt.
#[derive(Default)]
struct Durable(BTreeMap<Pair, Receipt>);

impl Durable {
    /// Applies `receipts` to the closed store at `dir` and flushes: after this they are owed.
    fn write(&mut self, dir: &Path, receipts: &[Receipt]) {
        let store = Store::open(dir, network(), StoreConfig::default()).unwrap();
        for outcome in store.ingest(receipts).unwrap() {
            assert!(
                matches!(outcome, Ingested::Applied(Applied::New { .. })),
                "{outcome:?}"
            );
        }
        store.flush().unwrap();
        self.0.extend(receipts.iter().map(|r| (r.pair(), *r)));
    }

    /// Appends the next receipt of `plan`, so the log grows past the last snapshot.
    fn append(&mut self, dir: &Path, plan: &Plan, index: u64) {
        let pair = plan.pair_at(index);
        let receipt = plan.receipt(index, self.0.get(&pair)).unwrap();
        self.write(dir, &[receipt]);
    }

    /// Asserts that the open `store` holds exactly these receipts, soundly.
    fn assert_held_by(&self, store: &Store) {
        assert_eq!(store.pair_count(), self.0.len(), "pairs held");
        for (pair, receipt) in &self.0 {
            assert_eq!(
                store.latest(pair).unwrap().as_ref(),
                Some(receipt),
                "{pair:?}"
            );
        }
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

enum Attempt {
    /// Killed after a `.generating` file was seen; the files left afterwards, with sizes.
    Killed(Vec<(String, u64)>),
    /// The open completed before a `.generating` file was seen.
    Completed,
}

/// Spawns `ledger_open` on `dir` and SIGKILLs it the moment a `snap.*.generating` file appears.
fn open_and_kill_at_snapshot(dir: &Path) -> Attempt {
    let db = db_dir(dir);
    let deadline = Instant::now() + DEADLINE;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger_open"));
    command.arg(dir);
    let mut child = Spawned::spawn(command).unwrap();
    loop {
        if !generating_snapshots(&db).is_empty() {
            child.kill(deadline).unwrap();
            let left = generating_snapshots(&db)
                .into_iter()
                .map(|name| {
                    let len = fs::metadata(db.join(&name)).map_or(0, |m| m.len());
                    (name, len)
                })
                .collect();
            return Attempt::Killed(left);
        }
        if child.has_exited().unwrap() {
            let finished = child.wait(deadline).unwrap();
            assert!(
                finished.status.success() && finished.lines.len() == 1,
                "ledger_open failed ({}): stdout {:?}, stderr:\n{}",
                finished.status,
                finished.lines,
                finished.stderr
            );
            return Attempt::Completed;
        }
        assert!(
            Instant::now() < deadline,
            "ledger_open neither wrote a snapshot nor finished within {DEADLINE:?}"
        );
        thread::yield_now();
    }
}

#[test]
fn reopen_after_kill_during_startup_snapshot() {
    let seed = test_seed().unwrap();
    eprintln!("ledger_snapshot_kill: seed {seed} (replay with TALLY_TEST_SEED={seed})");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(seed);
    let mut durable = Durable::default();
    durable.write(dir.path(), &bulk_receipts(BULK_RECEIPTS));
    let built = started.elapsed();

    let mut attempts = 0;
    let mut late_kills = 0;
    let left = loop {
        assert!(
            attempts < MAX_ATTEMPTS,
            "sled left no snap.*.generating file on disk in {attempts} attempts ({late_kills} \
             kills came just after the rename): on this machine the start-up snapshot is written \
             too fast to be caught, so this test cannot pin Store::open's clean-up"
        );
        attempts += 1;
        match open_and_kill_at_snapshot(dir.path()) {
            Attempt::Killed(left) if !left.is_empty() => break left,
            Attempt::Killed(_) => late_kills += 1,
            Attempt::Completed => {}
        }
        // The open took its snapshot: grow the log so that the next open takes another.
        durable.append(dir.path(), &plan, attempts as u64);
    };
    // The kill lands before the snapshot's bytes are all written (a cut file: plain sled fails
    // to open) or during the fsync after them (a complete file: plain sled copes). Say which.
    let plain_sled = plain_sled_open(&db_dir(dir.path()));
    eprintln!(
        "ledger_snapshot_kill: {BULK_RECEIPTS} receipts written in {built:.1?}; caught after \
         {attempts} attempt(s) ({late_kills} late kill(s)), left {left:?}; plain sled on a copy: \
         {plain_sled:?}"
    );

    let store = Store::open(dir.path(), network(), StoreConfig::default())
        .expect("the store must open after a kill during sled's start-up snapshot");
    assert_eq!(
        generating_snapshots(&db_dir(dir.path())),
        Vec::<String>::new()
    );
    durable.assert_held_by(&store);
    eprintln!("ledger_snapshot_kill: done in {:.1?}", started.elapsed());
}

#[test]
fn open_removes_a_garbage_generating_snapshot_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(7);
    let mut durable = Durable::default();
    for index in 0..60 {
        durable.append(dir.path(), &plan, index);
    }
    // Each open after the first wrote a snapshot: the newest one names the highest lsn.
    let db = db_dir(dir.path());
    let newest = snapshots(&db).pop().expect("sled wrote a snapshot");
    let lsn = u64::from_str_radix(newest.trim_start_matches("snap."), 16).unwrap();
    // Left by a kill: one with a low lsn, and one sorting after every complete snapshot, which
    // plain sled would read as the newest and reject.
    for name in [
        "snap.0000000000001234.generating".to_owned(),
        format!("snap.{:016X}.generating", lsn + 1),
    ] {
        fs::write(db.join(name), b"half a snapshot, cut short by SIGKILL").unwrap();
    }
    let plain_sled = plain_sled_open(&db);
    assert!(
        plain_sled.as_ref().is_err_and(|e| e.contains("orrupt")),
        "the control failed: plain sled should reject the garbage snapshot, got {plain_sled:?}"
    );

    let store = Store::open(dir.path(), network(), StoreConfig::default())
        .expect("Store::open must discard incomplete snapshots");
    assert_eq!(generating_snapshots(&db), Vec::<String>::new());
    durable.assert_held_by(&store);
}
