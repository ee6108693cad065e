//! `ledger_open <store dir>`: opens the receipt store of the `ledger_writer` network, prints
//! `OPENED <pairs>`, and exits, closing it. sled writes its start-up snapshot while opening; the
//! snapshot-kill test kills this process in the middle of that.

use std::io::Write;

use anyhow::{Context, bail};
use tally_ledger::{NetworkId, Store, StoreConfig};
use tally_tests::writer::WRITER_NETWORK;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        bail!("usage: ledger_open <store dir>");
    };
    let store = Store::open(
        dir,
        NetworkId::from_name(WRITER_NETWORK),
        StoreConfig::default(),
    )
    .with_context(|| format!("opening the store at {dir}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "OPENED {}", store.pair_count())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(())
}
