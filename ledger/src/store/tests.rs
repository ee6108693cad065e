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
fn agreements_survive_a_reopen_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.put_agreement(&[1; 32], b"first").unwrap();
        store.put_agreement(&[2; 32], b"second").unwrap();
        store.put_agreement(&[1; 32], b"first, again").unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.agreements().unwrap(),
        vec![
            ([1; 32], b"first, again".to_vec()),
            ([2; 32], b"second".to_vec())
        ]
    );
    store.remove_agreement(&[1; 32]).unwrap();
    assert_eq!(
        store.agreements().unwrap(),
        vec![([2; 32], b"second".to_vec())]
    );
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn unreceipted_marks_survive_a_reopen_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pair = |down: u8| Pair {
        uploader: who(1).peer_id(),
        downloader: who(down).peer_id(),
    };
    {
        let store = open(dir.path());
        store.mark_unreceipted(&pair(2)).unwrap();
        store.mark_unreceipted(&pair(3)).unwrap();
        store.mark_unreceipted(&pair(2)).unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert!(store.is_unreceipted(&pair(2)).unwrap());
    assert!(store.is_unreceipted(&pair(3)).unwrap());
    assert!(!store.is_unreceipted(&pair(4)).unwrap());
    // The reverse pair is another pair.
    let reverse = Pair {
        uploader: who(2).peer_id(),
        downloader: who(1).peer_id(),
    };
    assert!(!store.is_unreceipted(&reverse).unwrap());
    assert_eq!(store.unreceipted_count(), 2);
    store.unmark_unreceipted(&pair(2)).unwrap();
    store.unmark_unreceipted(&pair(4)).unwrap();
    assert!(!store.is_unreceipted(&pair(2)).unwrap());
    assert_eq!(store.unreceipted_count(), 1);
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

// Retention: the cap on third-party receipts, eviction by distance from the owner, tombstones.

fn stored_pairs(store: &Store) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = store.iter().map(|r| r.unwrap().pair()).collect();
    pairs.sort();
    pairs
}

fn pair(up: u8, down: u8) -> Pair {
    Pair {
        uploader: who(up).peer_id(),
        downloader: who(down).peer_id(),
    }
}

/// Every stored receipt has its `by_downloader` entry, the third-party count matches a recount,
/// and the sync index holds every stored pair and every tombstone at their seqs.
fn assert_consistent(store: &Store) {
    let owner = store.owner();
    let mut third_party = 0;
    let items = store.sync_items().clone();
    for receipt in store.iter() {
        let receipt = receipt.unwrap();
        let pair = receipt.pair();
        if owner.is_none_or(|o| pair.uploader != o && pair.downloader != o) {
            third_party += 1;
        }
        assert!(
            store
                .by_downloader
                .contains_key(downloader_key(&pair))
                .unwrap(),
            "{pair:?} lost its by_downloader entry"
        );
        assert_eq!(items.get(&pair_key(&pair)), Some(receipt.seq));
    }
    assert_eq!(store.third_party_count(), third_party);
    let mut tombstones = 0;
    for entry in store.tombstones.iter() {
        let (key, value) = entry.unwrap();
        let key = tombstone_key(&key).unwrap();
        let tombstone = Tombstone::decode(&key, &value).unwrap();
        assert!(!store.receipts.contains_key(key).unwrap());
        assert_eq!(items.get(&key), Some(tombstone.seq));
        tombstones += 1;
    }
    assert_eq!(store.tombstone_count(), tombstones);
    assert_eq!(
        items.len() as u64,
        store.pair_count() as u64 + tombstones,
        "the sync index holds stored pairs and tombstones, nothing else"
    );
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.third_party, third_party);
    assert_eq!(report.tombstones, tombstones);
}

#[test]
fn own_receipts_are_never_evicted_even_when_they_alone_exceed_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    let mut own = Vec::new();
    for other in 2..12u8 {
        own.push(receipt(1, other, 1, 10));
        own.push(receipt(other, 1, 2, 20));
    }
    for r in &own {
        store.apply(&verified(*r)).unwrap();
    }
    for (up, down) in [(2, 3), (3, 4), (20, 21)] {
        store.apply(&verified(receipt(up, down, 1, 5))).unwrap();
    }
    let evicted = store.enforce_cap(owner, 0).unwrap();
    assert_eq!(
        evicted,
        Evicted {
            receipts: 3,
            tombstones_dropped: 0,
            third_party: 0
        }
    );
    let mut expected: Vec<Pair> = own.iter().map(Receipt::pair).collect();
    expected.sort();
    assert_eq!(stored_pairs(&store), expected);
    // Own receipts still apply, and the cap leaves them alone.
    store.apply(&verified(receipt(1, 2, 3, 30))).unwrap();
    assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 0);
    assert_eq!(store.pair_count(), own.len());
    assert_eq!(store.evicted_total(), 3);
    assert_consistent(&store);
}

#[test]
fn the_farthest_receipts_are_evicted_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    // The owner (1) – A (2) – B (3) – C (4) – D (5), directions mixed; 10 – 11 – 12 far off.
    for r in [
        receipt(1, 2, 1, 10),
        receipt(3, 2, 1, 10), // distance 1
        receipt(3, 4, 1, 10), // 2
        receipt(5, 4, 1, 10), // 3
        receipt(10, 11, 1, 1_000_000),
        receipt(12, 11, 1, 1_000_000), // unreachable
    ] {
        store.apply(&verified(r)).unwrap();
    }
    assert_eq!(store.third_party_count(), 6, "no owner yet: all count");
    store.set_owner(owner).unwrap();
    assert_eq!(store.third_party_count(), 5);
    // Under the cap: nothing to do.
    assert_eq!(store.enforce_cap(owner, 5).unwrap().receipts, 0);
    // Cap 3 evicts down to 95% of it, 2 receipts: the unreachable two, then the farthest.
    let evicted = store.enforce_cap(owner, 3).unwrap();
    assert_eq!((evicted.receipts, evicted.third_party), (3, 2));
    assert_eq!(stored_pairs(&store), {
        let mut kept = vec![pair(1, 2), pair(3, 2), pair(3, 4)];
        kept.sort();
        kept
    });
    let evicted = store.enforce_cap(owner, 1).unwrap();
    assert_eq!((evicted.receipts, evicted.third_party), (2, 0));
    assert_eq!(stored_pairs(&store), vec![pair(1, 2)]);
    assert_consistent(&store);
}

#[test]
fn among_equally_far_receipts_the_smaller_then_the_older_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    // All at distance 1 (through 2); `receipt` dates each at seq * 1000 ms.
    for r in [
        receipt(1, 2, 1, 10),
        receipt(2, 3, 1, 50),
        receipt(2, 4, 2, 50),
        receipt(2, 5, 5, 10),
        receipt(2, 6, 1, 200),
    ] {
        store.apply(&verified(r)).unwrap();
    }
    assert_eq!(store.enforce_cap(owner, 3).unwrap().receipts, 2);
    let mut kept = vec![pair(1, 2), pair(2, 4), pair(2, 6)];
    kept.sort();
    assert_eq!(stored_pairs(&store), kept);
}

#[test]
fn an_evicted_receipt_comes_back_only_with_a_newer_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    let far = receipt(7, 8, 4, 40);
    store.apply(&verified(receipt(1, 2, 1, 1))).unwrap();
    store.apply(&verified(far)).unwrap();
    assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 1);
    let key = pair_key(&far.pair());
    assert_eq!(store.latest(&far.pair()).unwrap(), None);
    assert_eq!(store.sync_items().get(&key), Some(4), "kept as a tombstone");
    assert_eq!(store.tombstone_count(), 1);
    // The same seq, or an older one, is not stored again.
    assert_eq!(store.apply(&verified(far)).unwrap(), Applied::Stale);
    assert_eq!(
        store.apply(&verified(receipt(7, 8, 3, 30))).unwrap(),
        Applied::Stale
    );
    assert_eq!(store.latest(&far.pair()).unwrap(), None);
    assert_eq!(store.third_party_count(), 0);
    // Gossip's filter drops it before verifying: the index says it is held at that seq.
    assert!(
        store
            .sync_items()
            .get(&key)
            .is_some_and(|held| held >= far.seq)
    );
    assert_consistent(&store);
    // A newer seq is news: stored, and the tombstone is gone.
    let newer = receipt(7, 8, 5, 50);
    assert_eq!(
        store.apply(&verified(newer)).unwrap(),
        Applied::New { replaced: None }
    );
    assert_eq!(store.latest(&far.pair()).unwrap(), Some(newer));
    assert_eq!(store.sync_items().get(&key), Some(5));
    assert_eq!(store.tombstone_count(), 0);
    assert_eq!(store.third_party_count(), 1);
    assert_consistent(&store);
    // And the next pass may evict it again.
    assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 1);
    assert_eq!(store.sync_items().get(&key), Some(5));
    assert_consistent(&store);
}

#[test]
fn tombstones_owner_and_counts_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let owner = who(1).peer_id();
    let far = receipt(7, 8, 4, 40);
    {
        let store = open(dir.path());
        for r in [
            receipt(1, 2, 1, 1),
            receipt(2, 3, 1, 1),
            receipt(3, 4, 1, 1),
            receipt(4, 5, 1, 1),
            far,
        ] {
            store.apply(&verified(r)).unwrap();
        }
        // Down to 95% of 3: the unreachable one, then 4 → 5, three hops out.
        assert_eq!(store.enforce_cap(owner, 3).unwrap().receipts, 2);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.owner(), Some(owner));
    assert_eq!(store.third_party_count(), 2);
    assert_eq!(store.tombstone_count(), 2);
    assert_eq!(store.pair_count(), 3);
    assert_eq!(store.latest(&pair(4, 5)).unwrap(), None);
    assert_eq!(store.sync_items().get(&pair_key(&far.pair())), Some(4));
    assert_eq!(store.apply(&verified(far)).unwrap(), Applied::Stale);
    assert_consistent(&store);
    // The next eviction's order follows the reopened ones: the oldest tombstone stays oldest.
    assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 2);
    let orders: Vec<(u64, Key)> = store
        .tombstones
        .iter()
        .map(|e| {
            let (key, value) = e.unwrap();
            (
                Tombstone::decode(&key, &value).unwrap().order,
                tombstone_key(&key).unwrap(),
            )
        })
        .collect();
    let oldest = orders.iter().min().unwrap();
    assert_eq!(oldest.1, pair_key(&far.pair()));
}

#[test]
fn receipts_a_conflict_proof_is_about_are_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    // Both far from the owner: a conflict found by apply, and one learned by gossip.
    let held = receipt(20, 21, 3, 30);
    store.apply(&verified(held)).unwrap();
    assert!(matches!(
        store.apply(&verified(receipt(20, 21, 3, 31))).unwrap(),
        Applied::Conflict(_)
    ));
    let gossiped = receipt(22, 23, 1, 10);
    store.apply(&verified(gossiped)).unwrap();
    let proof = ConflictProof::new(gossiped, receipt(22, 23, 1, 11)).unwrap();
    assert!(store.add_conflict(&proof).unwrap());
    store.apply(&verified(receipt(24, 25, 1, 1))).unwrap();
    let evicted = store.enforce_cap(owner, 0).unwrap();
    assert_eq!((evicted.receipts, evicted.third_party), (1, 2));
    let mut kept = vec![held.pair(), gossiped.pair()];
    kept.sort();
    assert_eq!(stored_pairs(&store), kept);
    assert_eq!(store.conflicts().unwrap().len(), 2);
    // Only protected receipts are over the cap: the next batches do not rescan for nothing.
    store.apply(&verified(receipt(26, 27, 1, 1))).unwrap();
    assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 0);
    assert_eq!(store.third_party_count(), 3);
    assert_consistent(&store);
}

#[test]
fn a_tombstone_left_beside_its_receipt_by_a_crash_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let owner = who(1).peer_id();
    let far = receipt(7, 8, 4, 40);
    {
        let store = open(dir.path());
        store.apply(&verified(far)).unwrap();
        assert_eq!(store.enforce_cap(owner, 0).unwrap().receipts, 1);
        // As if the process died after writing the tombstone, before removing the receipt (and
        // so before its index entry).
        store
            .receipts
            .insert(pair_key(&far.pair()), encode(&far))
            .unwrap();
        store
            .by_downloader
            .insert(downloader_key(&far.pair()), &[])
            .unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.latest(&far.pair()).unwrap(), Some(far));
    assert_eq!(store.tombstone_count(), 0);
    assert_eq!(store.third_party_count(), 1);
    assert_consistent(&store);
}

#[test]
fn tombstones_past_their_bound_are_dropped_oldest_first_and_leave_the_index() {
    use crate::store::retention::MIN_TOMBSTONES;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    let count = MIN_TOMBSTONES as usize + 76;
    // Unreachable from the owner, so ranked by bytes: the smallest are evicted, and so
    // tombstoned, first.
    let ids: Vec<Identity> = (0..count as u64 + 1)
        .map(|i| {
            let mut seed = [0x33u8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(seed)
        })
        .collect();
    let receipts: Vec<Receipt> = (0..count)
        .map(|i| {
            ReceiptBody {
                uploader: ids[i].peer_id(),
                downloader: ids[i + 1].peer_id(),
                seq: 1,
                bytes: i as u64 + 1,
                credits: i as u64 + 1,
                time_ms: 1,
            }
            .propose(&ids[i + 1], &net())
            .countersign(&ids[i], &net())
        })
        .collect();
    for outcome in store.ingest(&receipts).unwrap() {
        assert_eq!(outcome, Ingested::Applied(Applied::New { replaced: None }));
    }
    let evicted = store.enforce_cap(owner, 0).unwrap();
    assert_eq!(evicted.receipts, count as u64);
    let kept = MIN_TOMBSTONES * 95 / 100;
    assert_eq!(evicted.tombstones_dropped, count as u64 - kept);
    assert_eq!(store.tombstone_count(), kept);
    let dropped = count - kept as usize;
    let items = store.sync_items().clone();
    for (i, r) in receipts.iter().enumerate() {
        let key = pair_key(&r.pair());
        assert_eq!(items.get(&key).is_none(), i < dropped, "receipt {i}");
    }
    // A dropped tombstone's receipt comes back once, to be evicted again later.
    assert_eq!(
        store.apply(&verified(receipts[0])).unwrap(),
        Applied::New { replaced: None }
    );
    assert_eq!(
        store.apply(&verified(receipts[dropped])).unwrap(),
        Applied::Stale
    );
    assert_consistent(&store);
}

#[test]
fn a_new_owner_s_receipts_are_not_held_back_by_old_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = receipt(7, 8, 4, 40);
    store.apply(&verified(r)).unwrap();
    assert_eq!(store.enforce_cap(who(1).peer_id(), 0).unwrap().receipts, 1);
    // The identity changed (`tally init --force`): the pair is this node's own now.
    store.set_owner(who(7).peer_id()).unwrap();
    assert_eq!(
        store.apply(&verified(r)).unwrap(),
        Applied::New { replaced: None }
    );
    assert_eq!(store.third_party_count(), 0);
    assert_eq!(store.tombstone_count(), 0);
    assert_consistent(&store);
}

#[test]
fn evictions_racing_applies_keep_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = who(1).peer_id();
    let mut batch = Vec::new();
    for up in 2..14u8 {
        for down in 2..14u8 {
            if up != down {
                for seq in 1..=2 {
                    batch.push(verified(receipt(up, down, seq, seq * 10)));
                }
            }
        }
    }
    batch.push(verified(receipt(1, 2, 1, 1)));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for r in &batch {
                store.apply(r).unwrap();
            }
        });
        scope.spawn(|| {
            for r in batch.iter().rev() {
                store.apply(r).unwrap();
            }
        });
        scope.spawn(|| {
            // Applies go on during a pass, so only the end state is bounded.
            for _ in 0..200 {
                store.enforce_cap(owner, 20).unwrap();
            }
        });
    });
    store.enforce_cap(owner, 20).unwrap();
    assert!(store.third_party_count() <= 20);
    assert!(store.latest(&pair(1, 2)).unwrap().is_some());
    assert_consistent(&store);
}

mod retention_properties {
    use std::collections::{BTreeMap, HashMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    /// Hop distances from `owner` over the pairs as undirected edges: the test's own oracle.
    fn distances(pairs: &[(u8, u8)], owner: u8) -> HashMap<u8, u32> {
        let mut out = HashMap::from([(owner, 0)]);
        let mut queue = VecDeque::from([owner]);
        while let Some(peer) = queue.pop_front() {
            let next = out[&peer] + 1;
            for &(a, b) in pairs {
                let other = if a == peer {
                    b
                } else if b == peer {
                    a
                } else {
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(other) {
                    slot.insert(next);
                    queue.push_back(other);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn enforce_cap_keeps_every_own_receipt_and_evicts_the_farthest(
            edges in proptest::collection::vec((0u8..10, 0u8..10, 1u64..1000), 0..40),
            cap in 0u64..20,
        ) {
            const OWNER: u8 = 0;
            let mut receipts: BTreeMap<(u8, u8), Receipt> = BTreeMap::new();
            for (up, down, bytes) in edges {
                if up != down {
                    receipts.entry((up, down)).or_insert_with(|| receipt(up, down, 1, bytes));
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            for r in receipts.values() {
                store.apply(&verified(*r)).unwrap();
            }
            let owner = who(OWNER).peer_id();
            store.enforce_cap(owner, cap).unwrap();
            prop_assert!(store.third_party_count() <= cap);
            let pairs: Vec<(u8, u8)> = receipts.keys().copied().collect();
            let far = distances(&pairs, OWNER);
            let distance = |(a, b): (u8, u8)| {
                let at = |p| far.get(&p).copied().unwrap_or(u32::MAX);
                at(a).min(at(b))
            };
            let mut kept_third = Vec::new();
            let mut evicted = Vec::new();
            for (&(up, down), r) in &receipts {
                let own = up == OWNER || down == OWNER;
                let held = store.latest(&r.pair()).unwrap();
                match (own, held) {
                    (true, held) => prop_assert_eq!(held, Some(*r)),
                    (false, Some(_)) => kept_third.push((up, down)),
                    (false, None) => {
                        evicted.push((up, down));
                        prop_assert_eq!(store.sync_items().get(&pair_key(&r.pair())), Some(1));
                        prop_assert_eq!(store.apply(&verified(*r)).unwrap(), Applied::Stale);
                    }
                }
            }
            for &gone in &evicted {
                for &kept in &kept_third {
                    prop_assert!(
                        distance(gone) >= distance(kept),
                        "evicted {:?} at {} but kept {:?} at {}",
                        gone, distance(gone), kept, distance(kept)
                    );
                }
            }
            assert_consistent(&store);
        }
    }
}

#[test]
fn concurrent_flushes_never_fail_and_leave_the_newest_witness() {
    // Nodes flush from several tasks at once (a countersigned receipt, a gossip batch, an
    // import): before the witness was written under a lock, two flushes raced on its temporary
    // file and one failed with "No such file or directory".
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::thread::scope(|scope| {
        for thread in 0..8u8 {
            let store = &store;
            scope.spawn(move || {
                for seq in 1..=40 {
                    store
                        .apply(&verified(receipt(thread + 1, thread + 100, seq, seq)))
                        .unwrap();
                    store.flush().unwrap();
                }
            });
        }
    });
    store.flush().unwrap();
    let expected = 8 * 40;
    assert_eq!(read_witness(dir.path()).unwrap(), expected);
}
