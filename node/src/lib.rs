//! # tally-node
//!
//! The `tally` binary's library: the command line ([`cli`]), settings ([`config`]), the data
//! directory ([`data_dir`]), and the commands — [`init`] (identity, API key, config, store),
//! [`id_cmd`] (`tally id`, `tally api-key`) and [`ledger_cmd`] (`tally ledger export`, `import`,
//! `verify`). Later it also owns the node's runtime: QUIC transport, content, gossip, the daemon
//! and the testnet.
//!
//! It must not re-implement what [`tally_ledger`] owns: receipts are signed, verified and stored
//! only through that crate, and identities are loaded and saved only through it. Commands write
//! results to the `out` writer and diagnostics to the `err` writer they are given, never with
//! `println!`, so a closed pipe is an error to handle, not a panic; nothing here panics on
//! anything read from disk or from the user.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write;

use anyhow::Context as _;

pub mod cli;
pub mod client;
pub mod client_cmd;
pub mod config;
pub mod content;
pub mod daemon;
pub mod data_dir;
pub mod gossip;
pub mod id_cmd;
pub mod init;
pub mod ledger_cmd;
pub mod market;
pub mod rate;
pub mod run_cmd;
pub mod testnet;
pub mod transport;
pub mod wire;

use cli::{Cli, Command, LedgerCommand};
use config::{Config, Overrides};
use data_dir::DataDir;

/// How a command that ran to its end went. Errors are `Err` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything went as asked: exit status 0.
    Success,
    /// The command ran but found bad input or problems (rejected lines, a failing check): exit
    /// status 1.
    Problems,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::Problems => 1,
        }
    }
}

/// Exit code of a command that failed with an error (as clap does for bad usage).
pub const EXIT_ERROR: u8 = 2;

/// What every command needs: the data directory and the settings in force.
#[derive(Debug, Clone)]
pub struct Context {
    /// The data directory.
    pub data_dir: DataDir,
    /// The settings, every layer applied.
    pub config: Config,
}

impl Context {
    /// Resolves the data directory and loads the config for `cli`, with the process
    /// environment.
    pub fn load(cli: &Cli) -> anyhow::Result<Self> {
        Self::load_with_env(cli, &config::process_env)
    }

    /// As [`Context::load`], with `env` as the environment.
    pub fn load_with_env(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let data_dir = DataDir::resolve(cli.data_dir.clone())?;
        let flags = Overrides {
            network: cli.command.network_flag().map(str::to_owned),
            log_level: cli.log_level.clone(),
            cache_mib: None,
            listen: cli.command.run_flags().and_then(|a| a.listen.clone()),
            api_listen: cli.command.run_flags().and_then(|a| a.api_listen.clone()),
            peers: cli
                .command
                .run_flags()
                .map(|a| a.peers.clone())
                .unwrap_or_default(),
            upload_limit: cli.command.run_flags().and_then(|a| a.upload_limit.clone()),
            upload_budget_daily: cli
                .command
                .run_flags()
                .and_then(|a| a.upload_budget_daily.clone()),
            upload_budget_monthly: cli
                .command
                .run_flags()
                .and_then(|a| a.upload_budget_monthly.clone()),
            download_limit: cli
                .command
                .run_flags()
                .and_then(|a| a.download_limit.clone()),
            max_connections_per_ip: cli
                .command
                .run_flags()
                .and_then(|a| a.max_connections_per_ip.clone()),
        };
        let config = Config::load(&data_dir.config_file(), env, &flags)?;
        Ok(Self { data_dir, config })
    }
}

/// Runs `command`, writing results to `out` and diagnostics to `err`.
pub fn run(
    command: &Command,
    context: &Context,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Status> {
    let status = match command {
        Command::Init(args) => init::run(args, context, out)?,
        Command::Id(args) => id_cmd::id(args, context, out)?,
        Command::ApiKey(args) => id_cmd::api_key(args, context, out)?,
        Command::Run(args) => run_cmd::run(args, context, out, err)?,
        Command::Status(args) => client_cmd::status(args, context, out)?,
        Command::Peers(args) => client_cmd::peers(args, context, out)?,
        Command::Standing(args) => client_cmd::standing(args, context, out)?,
        Command::Connect(args) => client_cmd::connect(args, context, out)?,
        Command::Share(args) => client_cmd::share(args, context, out)?,
        Command::Get(args) => client_cmd::get(args, context, out)?,
        Command::Offer(args) => client_cmd::offer(args, context, out)?,
        Command::Bid(args) => client_cmd::bid(args, context, out)?,
        Command::Market(args) => client_cmd::market(args, context, out)?,
        Command::Cancel(args) => client_cmd::cancel(args, context, out)?,
        Command::Testnet(args) => testnet::command(args, out, err)?,
        Command::Dashboard(args) => client_cmd::dashboard(args, context, out, err)?,
        Command::Ledger { command } => match command {
            LedgerCommand::Export { json } => ledger_cmd::export(context, *json, out)?,
            LedgerCommand::Import { file, json } => {
                ledger_cmd::import(context, file, *json, out, err)?
            }
            LedgerCommand::Verify { json } => ledger_cmd::verify(context, *json, out)?,
        },
    };
    out.flush().context("cannot write to stdout")?;
    Ok(status)
}

/// Whether `error` comes from writing to a closed pipe (`tally ... | head`): the reader is gone,
/// so the command should stop quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
