//! The command line's shape: clap types only. What each command does lives in its own module
//! ([`crate::init`], [`crate::id_cmd`], [`crate::ledger_cmd`]); the doc comments here are the
//! `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit statuses shared by every command, shown at the end of `tally --help`.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  the command ran but found bad input or problems (`ledger import` rejected some lines,
     `ledger verify` found problems)
  2  error: bad usage, no identity, unreadable config, store in use by another process, ...

Environment:
  TALLY_DATA_DIR         same as --data-dir
  TALLY_LOG_LEVEL        same as --log-level
  TALLY_NETWORK          overrides `network` in config.toml
  TALLY_STORE_CACHE_MIB  overrides `[store] cache_mib` in config.toml
  RUST_LOG               a tracing filter; when set it wins over every other log setting

Settings are layered: built-in defaults, then DATA_DIR/config.toml, then TALLY_* variables,
then flags.";

/// tally: a peer-to-peer node in which uploading earns download priority.
///
/// Peers that exchange bytes keep double-signed, cumulative receipts of what each received from
/// the other; each node serves first the peers that gave the most. These commands run a node,
/// share and fetch content, show standing and the market, and inspect, move and check the
/// receipts.
///
/// Start with `tally run` (it initialises the node on first use); `tally status` then asks it
/// how it is doing, and `tally id` shows who it is.
#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    subcommand_required = true,
    arg_required_else_help = true,
    after_long_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// The node's data directory: identity key, API key, config.toml and the receipt store.
    ///
    /// Defaults to the platform's data directory (`~/.local/share/tally` on Linux).
    #[arg(long, global = true, env = "TALLY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How much to log to stderr: error, warn, info, debug, trace or off, or a tracing filter
    /// such as `warn,tally_node=debug`.
    ///
    /// Defaults to `log_level` in config.toml, itself "warn" by default. RUST_LOG, when set,
    /// wins over this flag.
    #[arg(long, global = true, env = "TALLY_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this node: data directory, identity key, API key, config.toml and receipt store
    ///
    /// Writes DATA_DIR/identity.key (the ed25519 secret, mode 0600), DATA_DIR/api_key (the key
    /// for the HTTP API, mode 0600), DATA_DIR/config.toml (every setting, commented) and creates
    /// the receipt store in DATA_DIR/store. Refuses to replace an existing identity unless
    /// --force is given.
    ///
    /// Examples:
    ///   tally init
    ///   tally --data-dir /tmp/node2 init --network my-testnet
    ///   tally init --force        # new identity; the old one and its standing are lost
    #[command(verbatim_doc_comment)]
    Init(InitArgs),

    /// Print this node's PeerId: its public key as 64 lowercase hex characters
    ///
    /// Examples:
    ///   tally id
    ///   tally id --json     # {"peer_id": ..., "network": ..., "network_id": ...}
    #[command(verbatim_doc_comment)]
    Id(IdArgs),

    /// Print the HTTP API key (64 lowercase hex characters) that scripts send to the node
    ///
    /// It is read from DATA_DIR/api_key, which `tally init` creates with mode 0600.
    ///
    /// Examples:
    ///   tally api-key
    ///   tally api-key --rotate    # replace it with a new random key, and print that
    #[command(verbatim_doc_comment)]
    ApiKey(ApiKeyArgs),

    /// Run the node in the foreground until Ctrl-C or SIGTERM
    ///
    /// Listens for peers over QUIC (--listen) and serves the HTTP API (--api-listen), dials
    /// the configured peers and redials them after a drop. Once listening it prints its
    /// peer_id, network_id, quic_addr and api_addr, and writes them to DATA_DIR/node.json, which
    /// the other commands read to find it. A missing data directory is initialised first, as
    /// `tally init` would.
    ///
    /// Examples:
    ///   tally run
    ///   tally run --listen 0.0.0.0:0 --api-listen 127.0.0.1:0 --json
    ///   tally run --peer 3b6a27bc...@192.0.2.7:7420 --upload-limit 2MiB
    #[command(verbatim_doc_comment)]
    Run(RunArgs),

    /// Run a whole network from a scenario file and report what each behaviour got
    ///
    /// Starts real nodes on this machine (each with its own QUIC endpoint, store and API; in
    /// this process, or as separate processes with --processes), plays the scenario — who
    /// holds and wants which content when, freeriders, sybils, whitewashers, late joiners,
    /// churners, market orders — and writes report.json and report.html into --out, then
    /// prints a summary table. While it runs, an overview page links every node's dashboard.
    /// The scenario is checked before anything starts; a fault names the file, line and key.
    ///
    /// Examples:
    ///   tally testnet scenarios/freeriders.toml
    ///   tally testnet scenarios/sybil.toml --out /tmp/sybil --json
    ///   tally testnet scenarios/baseline.toml --processes
    ///   tally testnet scenarios/freeriders.toml --simulate
    ///   tally testnet scenarios/churn.toml --emit-configs /tmp/churn-nodes
    #[command(verbatim_doc_comment)]
    Testnet(TestnetArgs),

    /// Show the running node: identity, addresses, peers, store and transfer totals
    #[command(verbatim_doc_comment)]
    Status(JsonArgs),

    /// List the connected peers with the bytes and receipts exchanged with each
    #[command(verbatim_doc_comment)]
    Peers(JsonArgs),

    /// Show a peer's standing at the running node, and why it has it
    ///
    /// Standing is what the peer gave, as this node judges it from the receipts it holds: the
    /// credits it gave this node minus those it took, plus a share of what this node received
    /// passed back along chains of contributions (transitive). The score is in [0, 1); 0 is the
    /// floor, where freeriders, brand-new identities and keys caught signing two different
    /// receipts for one seq all stand. The strongest chains behind the transitive part are
    /// listed.
    ///
    /// Examples:
    ///   tally standing 3b6a27bc0f...            # the full 64-hex-character peer id
    ///   tally standing 3b6a27bc0f... --json
    #[command(verbatim_doc_comment)]
    Standing(StandingArgs),

    /// Connect the running node to a peer now, and redial it after a drop
    ///
    /// Examples:
    ///   tally connect 3b6a27bc...@192.0.2.7:7420
    #[command(verbatim_doc_comment)]
    Connect(ConnectArgs),

    /// Add a file to the running node's content store and print its content id
    ///
    /// The file is copied into DATA_DIR/content in chunks of 256 KiB, each hashed with BLAKE3;
    /// the content id is the BLAKE3 hash of the list of chunk hashes (the manifest). Peers fetch
    /// it with `tally get CONTENT_ID`.
    ///
    /// Examples:
    ///   tally share ./video.mkv
    #[command(verbatim_doc_comment)]
    Share(ShareArgs),

    /// Download a content from the running node's peers into a file
    ///
    /// Chunks come from every connected peer that holds them, in parallel, and each is verified
    /// before it is stored. Shows progress on a terminal. Exits 0 only when the file is complete
    /// and verified. An interrupted download resumes where it stopped.
    ///
    /// Examples:
    ///   tally get 9f86d081...e2 --out ./video.mkv
    #[command(verbatim_doc_comment)]
    Get(GetArgs),

    /// Offer upload for sale: post a signed offer to the market and flood it to peers
    ///
    /// The offer says: this node will upload up to --bytes, at up to --rate, for --price
    /// credits per GiB, until --ttl from now. A bid that crosses it (a maximum price at or above
    /// it) becomes a trade once this node countersigns the buyer's proposal. Prints the order id.
    ///
    /// Examples:
    ///   tally offer --bytes 10GiB --price 5
    ///   tally offer --bytes 500MiB --price 0 --rate 2MiB/s --ttl 6h --json
    #[command(verbatim_doc_comment)]
    Offer(OfferArgs),

    /// Bid for upload: post a signed bid to the market and flood it to peers
    ///
    /// The bid says: this node will buy up to --bytes (of --content, if given) at up to
    /// --max-price credits per GiB, until --ttl from now. Each offer it crosses, in this node's
    /// book, is proposed to its seller as a trade. Prints the order id.
    ///
    /// Examples:
    ///   tally bid --bytes 1GiB --max-price 8
    ///   tally bid --bytes 200MiB --max-price 3 --content 9f86d081...e2 --ttl 30m --json
    #[command(verbatim_doc_comment)]
    Bid(BidArgs),

    /// Show the market: the book's best offers and bids, this node's orders and its trades
    ///
    /// Examples:
    ///   tally market
    ///   tally market --json
    #[command(verbatim_doc_comment)]
    Market(JsonArgs),

    /// Cancel one of this node's orders and flood the signed cancellation to peers
    ///
    /// Examples:
    ///   tally cancel 5c1f0e3a...      # the full 64-hex-character order id
    #[command(verbatim_doc_comment)]
    Cancel(CancelArgs),

    /// Print the URL of the running node's dashboard, with the API key in its fragment
    ///
    /// The key is after `#`, so the browser never sends it to the node: the page reads it,
    /// logs in for a session cookie and removes it from the address bar. Anyone who sees the
    /// URL can use the node, as with the key itself.
    ///
    /// Examples:
    ///   tally dashboard
    ///   tally dashboard --open     # also open it with xdg-open (or open on macOS)
    #[command(verbatim_doc_comment)]
    Dashboard(DashboardArgs),

    /// Inspect, move and check the receipts in the store.
    ///
    /// The store holds the latest receipt of every (uploader, downloader) pair this node knows,
    /// and the conflict proofs it has seen. `export` asks the running node when there is one;
    /// `import` and `verify` need the store to themselves: stop the node first.
    Ledger {
        /// The ledger command.
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

/// Arguments of `tally init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The network to join; its id (BLAKE3 of the name) is in every receipt's signed bytes, so
    /// receipts of one network never verify on another.
    ///
    /// Defaults to TALLY_NETWORK, else `network` in an existing config.toml, else "tally".
    /// Given explicitly, it is written to config.toml (an existing file is updated in place,
    /// keeping its comments).
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,

    /// Replace an existing identity with a new one. The old identity, and the standing other
    /// peers credit it with, are lost. An existing config.toml and API key are kept (config.toml
    /// is updated if --network is given); a store of another network is moved aside, never
    /// deleted.
    #[arg(long)]
    pub force: bool,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where to listen for peers (UDP), as IP:PORT; port 0 picks a free port.
    ///
    /// Defaults to `[node] listen` in config.toml, itself 0.0.0.0:7420.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Where the HTTP API listens, as IP:PORT; port 0 picks a free port.
    ///
    /// Defaults to `[node] api_listen` in config.toml, itself 127.0.0.1:7421.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,

    /// A peer to dial at start and redial after a drop, as PEERID@HOST:PORT. Repeatable; when
    /// given, replaces `[node] peers` of config.toml.
    #[arg(long = "peer", value_name = "PEERID@HOST:PORT")]
    pub peers: Vec<String>,

    /// Global upload limit in bytes per second, with units (2MiB, 500KiB, 1.5MB) or
    /// "unlimited". Changeable at runtime through the API.
    #[arg(long, value_name = "RATE")]
    pub upload_limit: Option<String>,

    /// Global download limit, as --upload-limit.
    #[arg(long, value_name = "RATE")]
    pub download_limit: Option<String>,

    /// Bytes uploaded at most per UTC day, with units (10GiB) or "unlimited"; past it,
    /// uploads wait for the next day.
    #[arg(long, value_name = "SIZE")]
    pub upload_budget_daily: Option<String>,

    /// Bytes uploaded at most per UTC calendar month, as --upload-budget-daily.
    #[arg(long, value_name = "SIZE")]
    pub upload_budget_monthly: Option<String>,

    /// Incoming connections one source IP may hold at once (handshakes in progress included).
    ///
    /// Defaults to `[node] max_connections_per_ip` in config.toml, itself 8.
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<String>,

    /// Test mode: never propose a receipt (a freerider). Peers stop serving this node after
    /// one credit window each.
    #[arg(long, hide = true)]
    pub never_sign: bool,

    /// Test mode: serve no chunk and announce no content (with --never-sign, a freerider).
    #[arg(long, hide = true)]
    pub never_upload: bool,

    /// Print the startup line as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Open the URL in the default browser (xdg-open, or open on macOS), if there is one.
    #[arg(long)]
    pub open: bool,
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally standing`.
#[derive(Debug, Args)]
pub struct StandingArgs {
    /// The peer's id: 64 hex characters, as `tally id` prints it on that node.
    #[arg(value_name = "PEERID")]
    pub peer: String,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The peer, as PEERID@HOST:PORT (PEERID is what `tally id` prints on that node).
    #[arg(value_name = "PEERID@HOST:PORT")]
    pub peer: String,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally share`.
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// The file to share.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The content id, 64 lowercase hex characters (what `tally share` printed).
    #[arg(value_name = "CONTENT_ID")]
    pub content_id: String,

    /// Where to write the file.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,

    /// Print the final state as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally testnet`.
#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// The scenario: a TOML file of groups of peers, content, orders, duration and seed (see
    /// docs/EXPERIMENTS.md; examples in scenarios/).
    #[arg(value_name = "SCENARIO.toml")]
    pub scenario: PathBuf,

    /// Where the nodes' data, report.json and report.html go. Defaults to
    /// testnet-runs/NAME in the current directory; an earlier run there is replaced.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Run each node as a separate `tally` process instead of all in this one.
    #[arg(long, conflicts_with = "emit_configs")]
    pub processes: bool,

    /// Run on simulated time and simulated links instead of real nodes: the same ledger and
    /// market code, deterministic for a seed, and fast enough for 10,000 peers
    /// (docs/SIMULATION.md).
    #[arg(long, conflicts_with_all = ["processes", "emit_configs"])]
    pub simulate: bool,

    /// Write each node's data directory and a script that starts it, to run the testnet on
    /// several machines, and start nothing.
    #[arg(long, value_name = "DIR")]
    pub emit_configs: Option<PathBuf>,

    /// Print report.json instead of the summary table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally offer`.
#[derive(Debug, Args)]
pub struct OfferArgs {
    /// Bytes for sale, with units: 10GiB, 500MiB, 1.5GB, 4096.
    #[arg(long, value_name = "SIZE")]
    pub bytes: String,

    /// Credits asked per GiB (0 is free seeding).
    #[arg(long, value_name = "CREDITS_PER_GIB")]
    pub price: u64,

    /// Most bytes per second uploaded for it, with units (2MiB/s). Defaults to the node's
    /// upload limit, or unlimited.
    #[arg(long, value_name = "SIZE/s")]
    pub rate: Option<String>,

    /// How long the offer lives: 90s, 30m, 6h, 2d (at most 7d). Defaults to 1h.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Print the order as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally bid`.
#[derive(Debug, Args)]
pub struct BidArgs {
    /// Bytes wanted, with units: 1GiB, 200MiB, 4096.
    #[arg(long, value_name = "SIZE")]
    pub bytes: String,

    /// Most credits paid per GiB.
    #[arg(long, value_name = "N")]
    pub max_price: u64,

    /// The content wanted (64 hex characters, as `tally share` printed it).
    #[arg(long, value_name = "CONTENT_ID")]
    pub content: Option<String>,

    /// How long the bid lives: 90s, 30m, 6h, 2d (at most 7d). Defaults to 1h.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Print the order as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The order's id: 64 hex characters, as `tally offer`, `tally bid` or `tally market`
    /// printed it.
    #[arg(value_name = "ORDER_ID")]
    pub order_id: String,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Print a JSON object with the PeerId, the network name and the network id.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tally api-key`.
#[derive(Debug, Args)]
pub struct ApiKeyArgs {
    /// Write a new random key (the old one stops working once the node reads the new one) and
    /// print it. Also repairs a missing or damaged key file.
    #[arg(long)]
    pub rotate: bool,
}

/// `tally ledger` commands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Write every stored receipt to stdout: a table, or JSON lines with --json
    ///
    /// With --json, each line is one receipt object with the keys uploader, downloader, seq,
    /// bytes, credits, time_ms, sig_downloader and sig_uploader (keys and signatures as
    /// lowercase hex, the rest as integers): the format `tally ledger import` reads. Only the
    /// latest receipt of each pair is stored, so only those are exported; conflict proofs are
    /// not exported.
    ///
    /// Examples:
    ///   tally ledger export
    ///   tally ledger export --json > receipts.jsonl
    ///   tally ledger export --json | head -n 5
    #[command(verbatim_doc_comment)]
    Export {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Verify receipts from a JSON lines file and apply the valid ones to the store
    ///
    /// FILE holds one receipt per line in the format of `tally ledger export --json`; blank
    /// lines are skipped. The file is read line by line, verified and applied in batches of
    /// 1024, and the store is flushed after each batch. Each line that is rejected (bad JSON,
    /// seq 0, a bad signature, a receipt signed for another network, ...) is reported on stderr
    /// as `line N: rejected: <why>`, and each receipt that contradicts the stored one as
    /// `line N: conflict: ...` (the proof is stored and both keys are marked dishonest). A
    /// summary follows on stdout: new, duplicate, stale, conflicts, rejected.
    ///
    /// Exit status: 0 when no line was rejected; 1 when some were (the valid ones are still
    /// applied and flushed); 2 on an error that stopped the import (unreadable file, store in
    /// use, ...).
    ///
    /// Examples:
    ///   tally ledger import receipts.jsonl
    ///   tally --data-dir /tmp/a ledger export --json | tally --data-dir /tmp/b ledger import -
    #[command(verbatim_doc_comment)]
    Import {
        /// The file to read, or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,

        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },

    /// Re-check the whole store: every receipt's signatures, every conflict proof, every flag.
    ///
    /// Prints the number of receipts, pairs, conflict proofs and keys marked dishonest, then
    /// each problem found. Exit status 1 if there are problems (a damaged or tampered store),
    /// 0 if it is sound. Conflict proofs are not problems: they are evidence the store keeps.
    Verify {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The network named by a flag of this command, if any: the top layer of the config.
    pub fn network_flag(&self) -> Option<&str> {
        match self {
            Command::Init(args) => args.network.as_deref(),
            _ => None,
        }
    }

    /// The `[node]` settings given as flags of `tally run`, if this is it.
    pub fn run_flags(&self) -> Option<&RunArgs> {
        match self {
            Command::Run(args) => Some(args),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
