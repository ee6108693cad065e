use super::*;
use crate::error::VerifyError;
use crate::id::Identity;
use crate::receipt::ReceiptBody;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn who(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

fn receipt(up: u8, down: u8, seq: u64, bytes: u64) -> Receipt {
    ReceiptBody {
        uploader: who(up).peer_id(),
        downloader: who(down).peer_id(),
        seq,
        bytes,
        credits: bytes,
        time_ms: seq * 1000,
    }
    .propose(&who(down), &net())
    .countersign(&who(up), &net())
}

fn verified(r: Receipt) -> VerifiedReceipt {
    r.verify(&net()).unwrap()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, net(), StoreConfig::default()).unwrap()
}

#[test]
fn apply_tells_new_duplicate_stale_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r1 = receipt(1, 2, 1, 100);
    let r2 = receipt(1, 2, 2, 200);
    assert_eq!(
        store.apply(&verified(r1)).unwrap(),
        Applied::New { replaced: None }
    );
    assert_eq!(store.apply(&verified(r1)).unwrap(), Applied::Duplicate);
    assert_eq!(
        store.apply(&verified(r2)).unwrap(),
        Applied::New { replaced: Some(1) }
    );
    assert_eq!(store.apply(&verified(r1)).unwrap(), Applied::Stale);
    assert_eq!(store.latest(&r1.pair()).unwrap(), Some(r2));
    assert_eq!(store.pair_count(), 1);
    assert!(store.conflicts().unwrap().is_empty());
}

#[test]
fn a_conflict_is_stored_and_flags_both_keys_and_keeps_the_held_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let held = receipt(1, 2, 5, 500);
    store.apply(&verified(held)).unwrap();
    let double = receipt(1, 2, 5, 400);
    let Applied::Conflict(proof) = store.apply(&verified(double)).unwrap() else {
        panic!("expected a conflict");
    };
    proof.verify(&net()).unwrap();
    assert_eq!(store.latest(&held.pair()).unwrap(), Some(held));
    assert_eq!(store.conflicts().unwrap(), vec![*proof]);
    assert!(store.is_dishonest(&who(1).peer_id()).unwrap());
    assert!(store.is_dishonest(&who(2).peer_id()).unwrap());
    assert!(!store.is_dishonest(&who(3).peer_id()).unwrap());
    let mut flagged = store.dishonest().unwrap();
    flagged.sort();
    let mut expected = vec![who(1).peer_id(), who(2).peer_id()];
    expected.sort();
    assert_eq!(flagged, expected);
    // A larger seq with a smaller counter is a conflict too.
    assert!(matches!(
        store.apply(&verified(receipt(1, 2, 6, 450))).unwrap(),
        Applied::Conflict(_)
    ));
    assert_eq!(store.conflicts().unwrap().len(), 2);
    // The same proof from gossip is already known.
    assert!(!store.add_conflict(&proof).unwrap());
}

#[test]
fn receipts_survive_a_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let stored: Vec<Receipt> = (2..12)
        .map(|down| receipt(1, down, 3, 10 * down as u64))
        .collect();
    {
        let store = open(dir.path());
        for r in &stored {
            store.apply(&verified(*r)).unwrap();
        }
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let mut back: Vec<Receipt> = store.iter().collect::<Result<_, _>>().unwrap();
    back.sort_by_key(|r| r.downloader);
    let mut expected = stored.clone();
    expected.sort_by_key(|r| r.downloader);
    assert_eq!(back, expected);
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn a_second_open_of_a_held_store_says_it_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open(dir.path());
    let err = Store::open(dir.path(), net(), StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"));
}

#[test]
fn a_store_of_another_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.apply(&verified(receipt(1, 2, 1, 1))).unwrap();
        store.flush().unwrap();
    }
    let other = NetworkId::from_name("tally-testnet");
    let err = Store::open(dir.path(), other, StoreConfig::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::WrongNetwork { expected, found, .. } if expected == other && found == net()),
        "{err}"
    );
    // Still intact for its own network.
    assert_eq!(open(dir.path()).pair_count(), 1);
}

#[test]
fn receipts_of_and_totals_cover_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for r in [
        receipt(1, 2, 1, 100),
        receipt(1, 3, 1, 50),
        receipt(2, 1, 4, 70),
        receipt(3, 2, 1, 9),
    ] {
        store.apply(&verified(r)).unwrap();
    }
    assert_eq!(store.receipts_of(&who(1).peer_id()).unwrap().len(), 3);
    assert_eq!(
        store.totals(&who(1).peer_id()).unwrap(),
        Totals {
            bytes_given: 150,
            credits_earned: 150,
            bytes_received: 70,
            credits_spent: 70
        }
    );
    assert_eq!(
        store.totals(&who(2).peer_id()).unwrap(),
        Totals {
            bytes_given: 70,
            credits_earned: 70,
            bytes_received: 109,
            credits_spent: 109
        }
    );
    assert_eq!(store.totals(&who(9).peer_id()).unwrap(), Totals::default());
}

#[test]
fn newer_than_sends_only_what_the_summary_lacks() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = open(dir_a.path());
    let b = open(dir_b.path());
    for r in [
        receipt(1, 2, 3, 30),
        receipt(2, 1, 1, 10),
        receipt(3, 4, 7, 70),
    ] {
        a.apply(&verified(r)).unwrap();
    }
    for r in [
        receipt(1, 2, 2, 20),
        receipt(2, 1, 1, 10),
        receipt(5, 6, 1, 1),
    ] {
        b.apply(&verified(r)).unwrap();
    }
    let for_b = a.newer_than(&b.summary().unwrap()).unwrap();
    let mut seqs: Vec<u64> = for_b.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [3, 7]);
    let outcomes = b.ingest(&for_b).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ingested::Applied(Applied::New { .. })))
    );
    let for_a = b.newer_than(&a.summary().unwrap()).unwrap();
    a.ingest(&for_a).unwrap();
    assert_eq!(a.summary().unwrap(), b.summary().unwrap());
    assert!(a.newer_than(&b.summary().unwrap()).unwrap().is_empty());
}

#[test]
fn ingest_applies_the_valid_and_names_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = receipt(1, 2, 1, 10);
    let mut forged = receipt(1, 3, 1, 10);
    forged.bytes = 1 << 30;
    let other_net = ReceiptBody {
        seq: 1,
        ..receipt(1, 4, 1, 5).body()
    }
    .propose(&who(4), &NetworkId::from_name("x"))
    .countersign(&who(1), &NetworkId::from_name("x"));
    let outcomes = store.ingest(&[good, forged, other_net, good]).unwrap();
    assert_eq!(
        outcomes,
        vec![
            Ingested::Applied(Applied::New { replaced: None }),
            Ingested::Rejected(VerifyError::BadSignature { role: "downloader" }),
            Ingested::Rejected(VerifyError::BadSignature { role: "downloader" }),
            Ingested::Applied(Applied::Duplicate),
        ]
    );
    assert_eq!(store.pair_count(), 1);
}

#[test]
fn check_finds_a_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = receipt(1, 2, 1, 10);
    store.apply(&verified(r)).unwrap();
    assert!(store.check().unwrap().problems.is_empty());
    let mut tampered = r;
    tampered.bytes = 11;
    store
        .receipts
        .insert(pair_key(&r.pair()), encode(&tampered))
        .unwrap();
    store
        .receipts
        .insert([7u8; 64], &b"not a receipt"[..])
        .unwrap();
    let report = store.check().unwrap();
    assert_eq!(report.pairs, 2);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("does not verify"))
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("does not decode"))
    );
}

#[test]
fn a_lost_dishonest_flag_is_restored_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.apply(&verified(receipt(1, 2, 1, 10))).unwrap();
        store.apply(&verified(receipt(1, 2, 1, 11))).unwrap();
        // As if the process died between writing the proof and the flags.
        store.dishonest.clear().unwrap();
        store.flush().unwrap();
        assert!(!store.check().unwrap().problems.is_empty());
    }
    let store = open(dir.path());
    assert!(store.is_dishonest(&who(1).peer_id()).unwrap());
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn an_incomplete_startup_snapshot_is_removed_before_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = receipt(1, 2, 1, 10);
    {
        let store = open(dir.path());
        store.apply(&verified(r)).unwrap();
        store.flush().unwrap();
    }
    let leftover = dir
        .path()
        .join(DB_DIR)
        .join("snap.00000000000FFFFF.generating");
    std::fs::write(&leftover, b"half a snapshot").unwrap();
    let store = open(dir.path());
    assert!(!leftover.exists());
    assert_eq!(store.latest(&r.pair()).unwrap(), Some(r));
}

/// Damage every file of the backend in turn: opening gives a clear error, or a store that holds
/// every flushed receipt. Never a panic, never a silently shorter store.
#[test]
fn damaged_backend_files_give_an_error_not_a_panic() {
    let template = tempfile::tempdir().unwrap();
    {
        let store = open(template.path());
        for down in 2..200u8 {
            store
                .apply(&verified(receipt(1, down, 1, u64::from(down))))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let files: Vec<PathBuf> = walk(&template.path().join(DB_DIR));
    assert!(!files.is_empty());
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        for damage in [Damage::Truncate, Damage::Garbage] {
            let dir = tempfile::tempdir().unwrap();
            copy_tree(template.path(), dir.path());
            let target = dir.path().join(file.strip_prefix(template.path()).unwrap());
            match damage {
                Damage::Truncate => {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&target)
                        .unwrap()
                        .set_len(len / 2)
                        .unwrap();
                }
                Damage::Garbage => {
                    let mut bytes = std::fs::read(&target).unwrap();
                    let start = bytes.len() / 3;
                    let end = (start + 64).min(bytes.len());
                    for b in &mut bytes[start..end] {
                        *b ^= 0x5a;
                    }
                    std::fs::write(&target, bytes).unwrap();
                }
            }
            match Store::open(dir.path(), net(), StoreConfig::default()) {
                Err(err) => assert!(
                    matches!(
                        err,
                        StoreError::Corrupt { .. } | StoreError::BadRecord { .. }
                    ),
                    "{}: {err}",
                    file.display()
                ),
                // What opens holds everything that was flushed, and all of it verifies.
                Ok(store) => {
                    let report = store.check().unwrap();
                    assert_eq!(report.pairs, 198, "{}", file.display());
                    assert!(report.problems.is_empty(), "{:?}", report.problems);
                }
            }
        }
    }
}

enum Damage {
    Truncate,
    Garbage,
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

#[test]
fn concurrent_applies_of_one_pair_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let chain: Vec<VerifiedReceipt> = (1..=60)
        .map(|seq| verified(receipt(1, 2, seq, seq * 10)))
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| chain.iter().for_each(|r| drop(store.apply(r).unwrap())));
        scope.spawn(|| {
            chain
                .iter()
                .rev()
                .for_each(|r| drop(store.apply(r).unwrap()))
        });
    });
    assert_eq!(
        store.latest(&chain[0].pair()).unwrap().map(|r| r.seq),
        Some(60)
    );
    assert!(store.conflicts().unwrap().is_empty());
    store.flush().unwrap();
    drop(store);
    // The witness written from concurrent counting never exceeds what is on disk.
    let store = open(dir.path());
    assert_eq!(store.pair_count(), 1);
}

#[test]
fn ingest_chunks_reports_every_receipt_in_order_after_its_chunk_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut forged = receipt(1, 3, 1, 10);
    forged.credits += 1;
    // Chunk 2 repeats and supersedes chunk 1, so the order of application shows in the outcomes.
    let chunks = vec![
        vec![
            ("a", receipt(1, 2, 1, 10)),
            ("b", forged),
            ("c", receipt(4, 5, 3, 30)),
        ],
        vec![("d", receipt(1, 2, 1, 10)), ("e", receipt(1, 2, 2, 20))],
        vec![("f", receipt(1, 2, 1, 10))],
    ];
    let mut feed = chunks.into_iter();
    let mut seen = Vec::new();
    store
        .ingest_chunks(
            || Ok::<_, StoreError>(feed.next()),
            |outcomes| {
                // The witness is written by flush: what it says now was made durable.
                let witness = read_witness(dir.path())?;
                seen.push((outcomes, witness));
                Ok(())
            },
        )
        .unwrap();
    let new = |replaced| Ingested::Applied(Applied::New { replaced });
    let bad = Ingested::Rejected(VerifyError::BadSignature { role: "downloader" });
    assert_eq!(
        seen,
        vec![
            (vec![("a", new(None)), ("b", bad), ("c", new(None))], 1 + 3),
            (
                vec![
                    ("d", Ingested::Applied(Applied::Duplicate)),
                    ("e", new(Some(1)))
                ],
                2 + 3
            ),
            (vec![("f", Ingested::Applied(Applied::Stale))], 2 + 3),
        ]
    );
    assert_eq!(store.pair_count(), 2);
}

#[test]
fn ingest_chunks_stops_at_the_first_error_and_keeps_what_it_flushed() {
    #[derive(Debug, PartialEq)]
    enum Failure {
        Store,
        Source(u32),
    }
    impl From<StoreError> for Failure {
        fn from(_: StoreError) -> Self {
            Failure::Store
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut calls = 0u32;
    let mut acknowledged = Vec::new();
    let result = store.ingest_chunks(
        || {
            calls += 1;
            match calls {
                1 => Ok(Some(vec![(1, receipt(1, 2, 1, 10))])),
                2 => Ok(Some(vec![(2, receipt(1, 3, 1, 10))])),
                n => Err(Failure::Source(n)),
            }
        },
        |outcomes| {
            acknowledged.extend(outcomes.into_iter().map(|(tag, _)| tag));
            Ok(())
        },
    );
    assert_eq!(result, Err(Failure::Source(3)));
    assert_eq!(calls, 3, "nothing is pulled after the failure");
    // Chunk 1 was written while chunk 2 was verified; chunk 2 was never written.
    assert_eq!(acknowledged, vec![1]);
    assert_eq!(store.pair_count(), 1);

    let mut offered = 0;
    let result = store.ingest_chunks(
        || {
            offered += 1;
            Ok(Some(vec![((), receipt(1, 4, offered, 10))]))
        },
        |_| Err(Failure::Source(0)),
    );
    assert_eq!(result, Err(Failure::Source(0)));
    assert!(offered <= 3, "a refused acknowledgement stops the feed");
    drop(store);
    let reopened = open(dir.path());
    assert!(
        reopened
            .latest(&receipt(1, 2, 1, 10).pair())
            .unwrap()
            .is_some()
    );
}

#[test]
fn flush_writes_the_witness_and_a_damaged_witness_does_not_block_opening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.apply(&verified(receipt(1, 2, 7, 70))).unwrap();
        store.flush().unwrap();
        assert_eq!(read_witness(dir.path()).unwrap(), 7);
    }
    // What a crash can leave of an unsynced witness: an empty file.
    std::fs::write(dir.path().join(WITNESS_FILE), b"").unwrap();
    let store = open(dir.path());
    assert_eq!(store.pair_count(), 1);
    store.flush().unwrap();
    assert_eq!(read_witness(dir.path()).unwrap(), 7);
    drop(store);
    // A witness above what the database holds still refuses to open: records were cut off.
    std::fs::write(dir.path().join(WITNESS_FILE), b"8\n").unwrap();
    assert!(matches!(
        Store::open(dir.path(), net(), StoreConfig::default()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn the_sync_index_follows_applies_and_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        receipt(1, 2, 1, 10),
        receipt(1, 2, 3, 30),
        receipt(3, 1, 2, 5),
    );
    {
        let store = open(dir.path());
        store.apply(&verified(a)).unwrap();
        store.apply(&verified(c)).unwrap();
        store.apply(&verified(b)).unwrap();
        // A stale receipt does not lower the index.
        store.apply(&verified(a)).unwrap();
        let items = store.sync_items();
        assert_eq!(items.len(), 2);
        assert_eq!(items.get(&pair_key(&a.pair())), Some(3));
        assert_eq!(items.get(&pair_key(&c.pair())), Some(2));
        drop(items);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let items = store.sync_items();
    let held: Vec<(Vec<u8>, u64)> = items.iter().map(|(k, s)| (k.to_vec(), s)).collect();
    let mut expected = vec![
        (pair_key(&a.pair()).to_vec(), 3),
        (pair_key(&c.pair()).to_vec(), 2),
    ];
    expected.sort();
    assert_eq!(held, expected);
}
