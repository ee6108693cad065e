//! A writer process that is SIGKILLed at a random moment never loses a receipt it acknowledged:
//! the store reopens after every kill and holds, for each pair, at least the seq last ACKed.
//!
//! The writer (`src/bin/ledger_writer.rs`) applies, flushes, then prints `ACK`; the test kills it
//! 0–50 ms after its first new ACK, reopens the store in this process, and checks every ACK so
//! far. Randomized: the seed is printed; replay a failure with `TALLY_TEST_SEED=<seed>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tally_ledger::{Pair, Store, StoreConfig};
use tally_tests::child::Spawned;
use tally_tests::test_seed;
use tally_tests::writer::{Ack, Plan};

/// Kill-and-reopen cycles.
const CYCLES: usize = 40;

/// The longest any one wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn acked_receipts_survive_sigkill_at_random_moments() {
    let seed = test_seed().unwrap();
    eprintln!("ledger_crash: seed {seed} (replay with TALLY_TEST_SEED={seed})");
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let writer_seed: u64 = rng.random();
    let plan = Plan::new(writer_seed);
    let dir = tempfile::tempdir().unwrap();

    // pair → highest seq ACKed so far.
    let mut acked: BTreeMap<Pair, u64> = BTreeMap::new();
    let mut total_acks = 0u64;
    for cycle in 0..CYCLES {
        let deadline = Instant::now() + DEADLINE;
        let mut command = Command::new(env!("CARGO_BIN_EXE_ledger_writer"));
        command
            .arg(dir.path())
            .arg(writer_seed.to_string())
            .arg(total_acks.to_string());
        let writer = Spawned::spawn(command).unwrap();
        let first = match writer.next_line(deadline) {
            Ok(Some(line)) => line,
            outcome => {
                let finished = writer.kill(deadline).unwrap();
                panic!(
                    "seed {seed}, cycle {cycle}: the writer printed no ACK ({outcome:?}); it ended \
                     with {}, stderr:\n{}",
                    finished.status, finished.stderr
                );
            }
        };
        // The random moment: somewhere in the writer's apply–flush–ACK loop.
        thread::sleep(Duration::from_millis(rng.random_range(0..=50)));
        let finished = writer.kill(deadline).unwrap();
        assert!(
            finished.status.code().is_none(),
            "seed {seed}, cycle {cycle}: the writer exited by itself ({}) before the kill; \
             stderr:\n{}",
            finished.status,
            finished.stderr
        );

        let mut new_acks = 0;
        for line in std::iter::once(first).chain(finished.lines) {
            let ack: Ack = line
                .parse()
                .unwrap_or_else(|e| panic!("seed {seed}, cycle {cycle}: {e:#}"));
            if let Some(&before) = acked.get(&ack.pair) {
                assert!(
                    ack.seq > before,
                    "seed {seed}, cycle {cycle}: ACK of seq {} for {:?} after seq {before}: the \
                     writer did not resume from the store",
                    ack.seq,
                    ack.pair
                );
            }
            acked.insert(ack.pair, ack.seq);
            new_acks += 1;
        }
        total_acks += new_acks;

        let store =
            Store::open(dir.path(), plan.network(), StoreConfig::default()).unwrap_or_else(|e| {
                panic!("seed {seed}, cycle {cycle}: the store does not open after a kill: {e}")
            });
        for (pair, &seq) in &acked {
            let held = store.latest(pair).unwrap().map(|r| r.seq);
            assert!(
                held.is_some_and(|held| held >= seq),
                "seed {seed}, cycle {cycle}: {pair:?} was ACKed at seq {seq}, the store holds \
                 {held:?} after the kill"
            );
        }
        drop(store);
    }

    let store = Store::open(dir.path(), plan.network(), StoreConfig::default()).unwrap();
    let report = store.check().unwrap();
    assert!(
        report.problems.is_empty(),
        "seed {seed}: check found {:?}",
        report.problems
    );
    assert_eq!(
        report.conflicts, 0,
        "seed {seed}: the writer made conflicts"
    );
    // A receipt flushed but not yet ACKed at the kill may open one more pair: never fewer.
    assert!(
        (acked.len() as u64..=plan.pairs().len() as u64).contains(&report.pairs),
        "seed {seed}: {} pairs held, {} ACKed",
        report.pairs,
        acked.len()
    );
    eprintln!(
        "ledger_crash: {CYCLES} kills, {total_acks} ACKs over {} pairs, {:.1?}",
        acked.len(),
        started.elapsed()
    );
}
