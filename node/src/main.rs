//! The `tally` binary: parses the command line, sets up logging, runs the command, and turns
//! its outcome into an exit status. Everything else is in the `tally_node` library.
#![forbid(unsafe_code)]

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tally_node::cli::Cli;
use tally_node::config::DEFAULT_LOG_LEVEL;
use tally_node::{Context, EXIT_ERROR};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let context = Context::load(&cli);
    let level = match &context {
        Ok(context) => context.config.log_level.as_str(),
        Err(_) => cli.log_level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL),
    };
    init_tracing(level);

    let result = context.and_then(|context| {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let status = tally_node::run(&cli.command, &context, &mut out, &mut std::io::stderr())?;
        out.flush()?;
        Ok(status)
    });
    match result {
        Ok(status) => ExitCode::from(status.code()),
        // The reader of our stdout has gone (`tally ledger export | head`): nothing to say.
        Err(error) if tally_node::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Logs to stderr. RUST_LOG, when set, wins; else `level` (from --log-level, TALLY_LOG_LEVEL or
/// config.toml, already checked); else warnings only.
fn init_tracing(level: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let mut bad_rust_log = None;
    let filter = match from_env.map(|value| EnvFilter::try_new(&value).map_err(|e| (value, e))) {
        Some(Ok(filter)) => filter,
        Some(Err((value, e))) => {
            bad_rust_log = Some(format!("ignoring RUST_LOG={value:?}: {e}"));
            EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVEL))
        }
        None => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVEL)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    if let Some(message) = bad_rust_log {
        tracing::warn!("{message}");
    }
}

/// Prints an error and the chain of its causes to stderr.
fn report(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error}");
    for cause in error.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}
