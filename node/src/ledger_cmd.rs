//! `tally ledger export | import | verify`: receipts out of the store as JSON lines or a table,
//! into it from JSON lines (verified in batches, flushed per batch), and a full re-check.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use tally_ledger::{Applied, Ingested, Receipt, Store};

use crate::id_cmd::write_json_line;
use crate::{Context, Status};

/// Receipts verified, applied and flushed together by `import`.
pub const IMPORT_BATCH: usize = 1024;

/// Longest line `import` reads; an exported receipt takes under 500 bytes. Longer lines are
/// rejected without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Opens the node's store, for a command that needs an initialised data directory.
pub fn open_store(context: &Context) -> anyhow::Result<Store> {
    context.data_dir.require_exists()?;
    Ok(Store::open(
        context.data_dir.store_dir(),
        context.config.network_id(),
        context.config.store_config(),
    )?)
}

/// `tally ledger export`: every stored receipt, as JSON lines or a table. While a node runs it
/// holds the store, so the receipts come from it through the API.
pub fn export(context: &Context, json: bool, out: &mut dyn Write) -> anyhow::Result<Status> {
    if crate::client_cmd::node_is_running(context) {
        if json {
            return crate::client_cmd::export(context, out);
        }
        let mut lines = Vec::new();
        crate::client_cmd::export(context, &mut lines)?;
        let receipts = lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(serde_json::from_slice::<Receipt>)
            .collect::<Result<Vec<_>, _>>()
            .context("the node sent a receipt this command cannot read")?;
        return write_table(receipts.into_iter().map(Ok), out);
    }
    let store = open_store(context)?;
    if json {
        let mut line = Vec::with_capacity(512);
        for receipt in store.iter() {
            let receipt = receipt?;
            line.clear();
            serde_json::to_writer(&mut line, &receipt)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(Status::Success)
    } else {
        write_table(store.iter().map(|r| r.map_err(anyhow::Error::from)), out)
    }
}

fn write_table(
    receipts: impl Iterator<Item = anyhow::Result<Receipt>>,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    writeln!(
        out,
        "{:<10}  {:<10}  {:>8}  {:>16}  {:>16}  TIME (UTC)",
        "UPLOADER", "DOWNLOADER", "SEQ", "BYTES", "CREDITS"
    )?;
    let mut count = 0u64;
    for receipt in receipts {
        let r = receipt?;
        writeln!(
            out,
            "{:<10}  {:<10}  {:>8}  {:>16}  {:>16}  {}",
            r.uploader.fmt_short(),
            r.downloader.fmt_short(),
            r.seq,
            r.bytes,
            r.credits,
            format_time_ms(r.time_ms)
        )?;
        count += 1;
    }
    writeln!(
        out,
        "{count} receipt{} (the latest of each pair)",
        if count == 1 { "" } else { "s" }
    )?;
    Ok(Status::Success)
}

/// What `import` did, as summarised (`--json` prints this object).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Receipts stored as their pair's latest.
    pub new: u64,
    /// Receipts the store already held.
    pub duplicate: u64,
    /// Receipts older than the one the store holds.
    pub stale: u64,
    /// Receipts contradicting the held one: proofs stored, both keys marked dishonest.
    pub conflicts: u64,
    /// Lines that did not parse or verify, not applied.
    pub rejected: u64,
}

/// `tally ledger import FILE`: verifies and applies receipts from JSON lines (`-` is stdin).
/// Rejected lines and conflicts are reported on `err`; the summary goes to `out`.
pub fn import(
    context: &Context,
    file: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Status> {
    let store = open_store(context)?;
    let summary = if file == Path::new("-") {
        import_from(&store, std::io::stdin().lock(), err).context("cannot import from stdin")?
    } else {
        let reader = File::open(file)
            .map(BufReader::new)
            .with_context(|| format!("cannot open {}", file.display()))?;
        import_from(&store, reader, err)
            .with_context(|| format!("cannot import {}", file.display()))?
    };
    if json {
        write_json_line(out, &summary)?;
    } else {
        let ImportSummary {
            new,
            duplicate,
            stale,
            conflicts,
            rejected,
            ..
        } = summary;
        let source = if file == Path::new("-") {
            "stdin".to_owned()
        } else {
            file.display().to_string()
        };
        writeln!(
            out,
            "imported {source}: {new} new, {duplicate} duplicate, {stale} stale, {conflicts} \
             conflicts, {rejected} rejected"
        )?;
        if rejected > 0 {
            writeln!(
                out,
                "{rejected} line{} rejected (listed on stderr); the others were applied",
                if rejected == 1 { " was" } else { "s were" }
            )?;
        }
    }
    Ok(if summary.rejected == 0 {
        Status::Success
    } else {
        Status::Problems
    })
}

/// A receipt's line number, and the receipt for reporting a conflict.
type LineTag = (u64, Receipt);

/// Reads JSON lines from `reader` into `store` in chunks of [`IMPORT_BATCH`], flushed one by
/// one; each chunk's signatures are checked while the one before is written. Reports, in line
/// order, each rejected line and each conflict on `err`.
pub fn import_from(
    store: &Store,
    mut reader: impl BufRead,
    err: &mut dyn Write,
) -> anyhow::Result<ImportSummary> {
    // Both closures below count and report; lines that fail to parse wait in `unreported` until
    // the chunk they fall in is reported, so `err` stays in line order.
    let summary = RefCell::new(ImportSummary::default());
    let unreported: RefCell<Vec<(u64, String)>> = RefCell::new(Vec::new());
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;
    let mut end_of_input = false;
    let mut next_chunk = || -> anyhow::Result<Option<Vec<(LineTag, Receipt)>>> {
        let mut chunk = Vec::with_capacity(IMPORT_BATCH);
        while !end_of_input && chunk.len() < IMPORT_BATCH {
            let Some(fits) = read_line_capped(&mut reader, &mut buf, MAX_LINE_BYTES)? else {
                end_of_input = true;
                break;
            };
            line_no += 1;
            let text = match std::str::from_utf8(&buf) {
                Ok(text) => text.trim(),
                Err(_) if !fits => "",
                Err(e) => {
                    summary.borrow_mut().lines += 1;
                    let why = format!("not UTF-8 text ({e})");
                    unreported.borrow_mut().push((line_no, why));
                    continue;
                }
            };
            if fits && text.is_empty() {
                continue;
            }
            summary.borrow_mut().lines += 1;
            if !fits {
                let why =
                    format!("longer than {MAX_LINE_BYTES} bytes; a receipt is one short line");
                unreported.borrow_mut().push((line_no, why));
                continue;
            }
            match serde_json::from_str::<Receipt>(text) {
                Ok(receipt) => chunk.push(((line_no, receipt), receipt)),
                Err(e) => unreported
                    .borrow_mut()
                    .push((line_no, describe_json_error(&e))),
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    };
    let mut report = |outcomes: Vec<(LineTag, Ingested)>| -> anyhow::Result<()> {
        let last_line = outcomes.last().map_or(u64::MAX, |((line, _), _)| *line);
        let mut summary = summary.borrow_mut();
        let mut messages: Vec<(u64, String)> = Vec::new();
        unreported.borrow_mut().retain(|(line, why)| {
            let due = *line <= last_line;
            if due {
                summary.rejected += 1;
                messages.push((*line, format!("rejected: {why}")));
            }
            !due
        });
        for ((line, receipt), outcome) in outcomes {
            match outcome {
                Ingested::Applied(Applied::New { .. }) => summary.new += 1,
                Ingested::Applied(Applied::Duplicate) => summary.duplicate += 1,
                Ingested::Applied(Applied::Stale) => summary.stale += 1,
                Ingested::Applied(Applied::Conflict(_)) => {
                    summary.conflicts += 1;
                    messages.push((
                        line,
                        format!(
                            "conflict: receipt {} -> {} seq {} contradicts the one the store \
                             holds; the proof is stored and both keys are marked dishonest",
                            receipt.uploader.fmt_short(),
                            receipt.downloader.fmt_short(),
                            receipt.seq
                        ),
                    ));
                }
                Ingested::Rejected(why) => {
                    summary.rejected += 1;
                    messages.push((line, format!("rejected: {why}")));
                }
            }
        }
        messages.sort_by_key(|(line, _)| *line);
        for (line, message) in messages {
            writeln!(err, "line {line}: {message}")?;
        }
        tracing::info!(
            up_to_line = last_line,
            new = summary.new,
            "imported a chunk and flushed the store"
        );
        Ok(())
    };
    store.ingest_chunks(&mut next_chunk, &mut report)?;
    // Lines after the last receipt, or a file with none.
    report(Vec::new())?;
    Ok(summary.into_inner())
}

/// serde_json's message without its position: the line is already named, and its column
/// within the line is what helps.
fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

/// Reads one line (without its `\n`) into `buf`, keeping at most `limit` bytes of it and
/// discarding the rest without holding it. `None` at the end of input; `Some(false)` if the line
/// was longer than `limit`.
pub fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut fits = true;
    let mut read_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(fits));
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], end + 1, true),
            None => (available, available.len(), false),
        };
        let room = limit.saturating_sub(buf.len());
        if chunk.len() > room {
            fits = false;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok(Some(fits));
        }
    }
}

/// `tally ledger verify --json`.
#[derive(Debug, Serialize)]
struct VerifyReport<'a> {
    receipts: u64,
    pairs: u64,
    conflicts: u64,
    dishonest: u64,
    problems: &'a [String],
}

/// `tally ledger verify`: re-checks the whole store; [`Status::Problems`] if anything is wrong.
pub fn verify(context: &Context, json: bool, out: &mut dyn Write) -> anyhow::Result<Status> {
    let store = open_store(context)?;
    let report = store.check()?;
    if json {
        write_json_line(
            out,
            &VerifyReport {
                receipts: report.receipts,
                pairs: report.pairs,
                conflicts: report.conflicts,
                dishonest: report.dishonest,
                problems: &report.problems,
            },
        )?;
    } else {
        writeln!(out, "receipts        {}", report.receipts)?;
        writeln!(out, "pairs           {}", report.pairs)?;
        writeln!(out, "conflicts       {}", report.conflicts)?;
        writeln!(out, "dishonest keys  {}", report.dishonest)?;
        writeln!(out, "problems        {}", report.problems.len())?;
        for problem in &report.problems {
            writeln!(out, "  {problem}")?;
        }
        if report.problems.is_empty() {
            writeln!(out, "the store is sound")?;
        }
    }
    Ok(if report.problems.is_empty() {
        Status::Success
    } else {
        Status::Problems
    })
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC, proleptic Gregorian calendar).
pub fn format_time_ms(time_ms: u64) -> String {
    let millis = time_ms % 1000;
    let secs = time_ms / 1000;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`). u64 seconds
    // give at most ~2.1e14 days, well inside i64.
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{millis:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(format_time_ms(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(format_time_ms(4_102_444_799_999), "2099-12-31 23:59:59.999");
        // Never panics, however far away.
        assert!(!format_time_ms(u64::MAX).is_empty());
    }

    #[test]
    fn lines_are_read_with_a_cap() {
        let input = b"one\n\ntoo long here\nlast";
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut reader, &mut buf, 8).unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"one");
        assert_eq!(
            read_line_capped(&mut reader, &mut buf, 8).unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"");
        assert_eq!(
            read_line_capped(&mut reader, &mut buf, 8).unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"too long");
        assert_eq!(
            read_line_capped(&mut reader, &mut buf, 8).unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"last");
        assert_eq!(read_line_capped(&mut reader, &mut buf, 8).unwrap(), None);
    }

    #[test]
    fn json_errors_name_the_column_not_line_1() {
        let err = serde_json::from_str::<Receipt>("{\"uploader\": 3}").unwrap_err();
        let text = describe_json_error(&err);
        assert!(!text.contains("line 1"), "{text}");
        assert!(text.contains("column"), "{text}");
    }

    #[test]
    fn import_reports_across_chunks_in_line_order() {
        use tally_ledger::{Identity, NetworkId, ReceiptBody, StoreConfig};
        let net = NetworkId::from_name("tally");
        let uploader = Identity::from_secret_bytes([1; 32]);
        let receipt = |i: u64| {
            let downloader = Identity::from_secret_bytes([2; 32]);
            ReceiptBody {
                uploader: uploader.peer_id(),
                downloader: downloader.peer_id(),
                seq: i,
                bytes: i,
                credits: i,
                time_ms: i,
            }
            .propose(&downloader, &net)
            .countersign(&uploader, &net)
        };
        // A chunk holds IMPORT_BATCH receipts; the forged one falls in the first, and the
        // unparsable line after it is read while the first chunk is still being written.
        let forged_line = IMPORT_BATCH as u64 - 4;
        let garbage_line = IMPORT_BATCH as u64 + 30;
        let mut input = String::new();
        for line in 1..=IMPORT_BATCH as u64 + 100 {
            let text = if line == 5 || line == garbage_line {
                "{".to_owned()
            } else {
                let mut r = receipt(line);
                if line == forged_line {
                    r.bytes += 1;
                }
                serde_json::to_string(&r).unwrap()
            };
            input.push_str(&text);
            input.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), net, StoreConfig::default()).unwrap();
        let mut err = Vec::new();
        let summary = import_from(&store, input.as_bytes(), &mut err).unwrap();
        let err = String::from_utf8(err).unwrap();
        let lines: Vec<u64> = err
            .lines()
            .map(|l| {
                l.split(':').next().unwrap()["line ".len()..]
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(lines, vec![5, forged_line, garbage_line], "{err}");
        assert_eq!(summary.rejected, 3);
        assert_eq!(summary.lines, IMPORT_BATCH as u64 + 100);
        // Each later receipt of the one pair replaces the one before.
        assert_eq!(summary.new, IMPORT_BATCH as u64 + 97);
        assert_eq!(
            store.latest(&receipt(1).pair()).unwrap(),
            Some(receipt(IMPORT_BATCH as u64 + 100))
        );
    }
}
