//! `ledger_writer <store dir> <seed> <start index>`: opens the receipt store, then writes the
//! receipts of [`tally_tests::writer::Plan`] from `start index` on, forever. Each one is applied,
//! flushed, and only then acknowledged on stdout as `ACK <uploader> <downloader> <seq>`, so every
//! ACK names a receipt that must survive a kill at any later moment.
//!
//! It resumes: each pair continues from the store's latest receipt of it, so seqs stay monotone
//! across restarts whatever the start index. It stops with an error if the store refuses a
//! receipt or stdout is closed (the test that read it is gone).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, bail};
use tally_ledger::{Applied, Store, StoreConfig};
use tally_tests::writer::{Ack, Plan};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, seed, start] = args.as_slice() else {
        bail!("usage: ledger_writer <store dir> <seed> <start index>");
    };
    let seed: u64 = seed.parse().with_context(|| format!("seed {seed:?}"))?;
    let start: u64 = start
        .parse()
        .with_context(|| format!("start index {start:?}"))?;
    let plan = Plan::new(seed);
    let net = plan.network();
    let store = Store::open(dir, net, StoreConfig::default())
        .with_context(|| format!("opening the store at {dir}"))?;
    let mut latest = HashMap::new();
    for pair in plan.pairs() {
        if let Some(held) = store.latest(pair)? {
            latest.insert(*pair, held);
        }
    }
    let mut stdout = std::io::stdout().lock();
    for index in start.. {
        let pair = plan.pair_at(index);
        let receipt = plan.receipt(index, latest.get(&pair))?;
        let verified = receipt
            .verify(&net)
            .with_context(|| format!("receipt {index} does not verify"))?;
        match store.apply(&verified)? {
            Applied::New { .. } => {}
            other => bail!("the store did not take receipt {index} as new: {other:?}"),
        }
        store.flush()?;
        let ack = Ack {
            pair,
            seq: receipt.seq,
        };
        // One write of one short line: atomic on a pipe, so a kill never leaves half an ACK.
        stdout
            .write_all(ack.line().as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        latest.insert(pair, receipt);
    }
    Ok(())
}
