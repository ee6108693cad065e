//! The node's settings: built-in defaults, then `config.toml`, then `TALLY_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! The file is strict: an unknown key is an error naming it, and a malformed file reports the
//! TOML error with its line and column. [`render_default`] writes the commented file `tally init`
//! creates; [`set_network`] edits one in place, keeping the user's comments and layout.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tally_ledger::{NetworkId, PeerId, StoreConfig};

use crate::rate::{Rate, parse_limit};

/// The network a node joins unless told otherwise.
pub const DEFAULT_NETWORK: &str = "tally";
/// Log level of the short commands unless told otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "warn";
/// Store page cache, MiB, unless told otherwise.
pub const DEFAULT_CACHE_MIB: u64 = 64;
/// Largest accepted `[store] cache_mib`: 1 TiB.
pub const MAX_CACHE_MIB: u64 = 1024 * 1024;
/// Longest accepted network name, bytes.
pub const MAX_NETWORK_NAME: usize = 256;

/// Environment variable overriding `network`.
pub const ENV_NETWORK: &str = "TALLY_NETWORK";
/// Environment variable overriding `[store] cache_mib`.
pub const ENV_CACHE_MIB: &str = "TALLY_STORE_CACHE_MIB";
/// Environment variable overriding `log_level`.
pub const ENV_LOG_LEVEL: &str = "TALLY_LOG_LEVEL";
/// Environment variable overriding `[node] listen`.
pub const ENV_LISTEN: &str = "TALLY_LISTEN";
/// Environment variable overriding `[node] api_listen`.
pub const ENV_API_LISTEN: &str = "TALLY_API_LISTEN";
/// Environment variable overriding `[node] peers` (comma-separated).
pub const ENV_PEERS: &str = "TALLY_PEERS";
/// Environment variable overriding `[node] upload_budget_daily`.
pub const ENV_UPLOAD_BUDGET_DAILY: &str = "TALLY_UPLOAD_BUDGET_DAILY";
/// Environment variable overriding `[node] upload_budget_monthly`.
pub const ENV_UPLOAD_BUDGET_MONTHLY: &str = "TALLY_UPLOAD_BUDGET_MONTHLY";
/// The smallest upload budget: one request of the largest size the upload queue takes.
pub const MIN_UPLOAD_BUDGET: u64 = 16 << 20;
/// Environment variable overriding `[node] upload_limit`.
pub const ENV_UPLOAD_LIMIT: &str = "TALLY_UPLOAD_LIMIT";
/// Environment variable overriding `[node] download_limit`.
pub const ENV_DOWNLOAD_LIMIT: &str = "TALLY_DOWNLOAD_LIMIT";
/// Environment variable overriding `[node] max_connections_per_ip`.
pub const ENV_MAX_CONNECTIONS_PER_IP: &str = "TALLY_MAX_CONNECTIONS_PER_IP";
/// Incoming connections per source IP, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = crate::transport::DEFAULT_MAX_CONNECTIONS_PER_IP;

/// Where the node listens for peers unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7420";
/// Where the HTTP API listens unless told otherwise.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7421";
/// Payload bytes between two proposals of a downloader, unless told otherwise.
pub const DEFAULT_ACK_BYTES: u64 = 1 << 20;
/// Bytes an uploader sends ahead of receipts, unless told otherwise.
pub const DEFAULT_CREDIT_WINDOW: u64 = 4 << 20;
/// Seconds after which bytes sent to a stranger and never signed for are written off, unless
/// told otherwise.
pub const DEFAULT_STRANGER_WRITE_OFF_S: u64 = 30;
/// Connections the node keeps at most, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Milliseconds between two gossip syncs this node starts, unless told otherwise.
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 2_000;
/// Third parties' receipts kept at most, unless told otherwise.
pub const DEFAULT_MAX_THIRD_PARTY_RECEIPTS: u64 = 1_000_000;
/// Connections peer exchange keeps open by dialing known peers, unless told otherwise.
pub const DEFAULT_TARGET_PEERS: usize = 8;

/// The settings in force, every layer applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network's name; its id is [`Config::network_id`].
    pub network: String,
    /// The tracing filter for stderr (RUST_LOG still wins over it).
    pub log_level: String,
    /// The receipt store.
    pub store: StoreSettings,
    /// The running node.
    pub node: NodeSettings,
}

/// The `[node]` section: what `tally run` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The QUIC endpoint's address (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
    /// The HTTP API's address.
    pub api_listen: std::net::SocketAddr,
    /// Peers to dial at start and redial after a drop.
    pub peers: Vec<PeerAddr>,
    /// Payload bytes between two proposals of this node as a downloader.
    pub ack_bytes: u64,
    /// Bytes this node sends a peer ahead of its receipts.
    pub credit_window: u64,
    /// Bytes this node sends ahead of receipts to all strangers together (peers at the floor
    /// that never signed for it); `None` is `credit_window`.
    pub stranger_credit: Option<u64>,
    /// How long bytes sent to a stranger stay unsigned before they are written off.
    pub stranger_write_off: std::time::Duration,
    /// Upload limit, bytes per second; `None` is unlimited.
    pub upload_limit: Option<Rate>,
    /// Download limit, bytes per second; `None` is unlimited.
    pub download_limit: Option<Rate>,
    /// Bytes this node uploads at most per UTC day; `None` is unlimited.
    pub upload_budget_daily: Option<u64>,
    /// Bytes this node uploads at most per UTC calendar month; `None` is unlimited.
    pub upload_budget_monthly: Option<u64>,
    /// Connections kept at most, in and out together.
    pub max_connections: usize,
    /// Incoming connections (handshakes in progress and established) one source IP may hold.
    pub max_connections_per_ip: usize,
    /// Time between two gossip syncs this node starts.
    pub gossip_interval: std::time::Duration,
    /// Receipts between other peers kept at most (this node's own are never dropped).
    pub max_third_party_receipts: u64,
    /// Connections peer exchange tries to keep by dialing peers it has heard of.
    pub target_peers: usize,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 7420)),
            api_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7421)),
            peers: Vec::new(),
            ack_bytes: DEFAULT_ACK_BYTES,
            credit_window: DEFAULT_CREDIT_WINDOW,
            stranger_credit: None,
            stranger_write_off: std::time::Duration::from_secs(DEFAULT_STRANGER_WRITE_OFF_S),
            upload_limit: None,
            download_limit: None,
            upload_budget_daily: None,
            upload_budget_monthly: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            gossip_interval: std::time::Duration::from_millis(DEFAULT_GOSSIP_INTERVAL_MS),
            max_third_party_receipts: DEFAULT_MAX_THIRD_PARTY_RECEIPTS,
            target_peers: DEFAULT_TARGET_PEERS,
        }
    }
}

/// A peer to dial: `PEERID@HOST:PORT` (the host may be a name, resolved at each dial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The key the peer must present.
    pub peer_id: PeerId,
    /// `HOST:PORT`.
    pub addr: String,
}

impl std::str::FromStr for PeerAddr {
    type Err = anyhow::Error;

    /// One grammar for peer addresses: the HTTP API's ([`tally_web::model::ConnectRequest`]),
    /// so a peer the config accepts is one `tally connect` accepts, and the reverse.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let target = tally_web::model::ConnectRequest {
            peer: text.to_owned(),
        }
        .parse()
        .map_err(|e| {
            anyhow::anyhow!(
                "`{text}` is not a peer address ({e}): write PEERID@HOST:PORT (PEERID is what `tally id` prints on that node)"
            )
        })?;
        let peer_id = PeerId(target.peer_id.0);
        if peer_id.verifying_key().is_none() {
            bail!("`{text}`: the peer id is not a usable ed25519 key");
        }
        let addr = if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        Ok(Self { peer_id, addr })
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.peer_id, self.addr)
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Page cache the store may keep in memory, MiB.
    pub cache_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: DEFAULT_NETWORK.to_owned(),
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            store: StoreSettings {
                cache_mib: DEFAULT_CACHE_MIB,
            },
            node: NodeSettings::default(),
        }
    }
}

/// `config.toml` as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `network = "..."`
    pub network: Option<String>,
    /// `log_level = "..."`
    pub log_level: Option<String>,
    /// `[store]`
    pub store: Option<FileStore>,
    /// `[node]`
    pub node: Option<FileNode>,
}

/// The `[node]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    /// `listen = "ADDR:PORT"`
    pub listen: Option<String>,
    /// `api_listen = "ADDR:PORT"`
    pub api_listen: Option<String>,
    /// `peers = ["PEERID@HOST:PORT", ...]`
    pub peers: Option<Vec<String>>,
    /// `ack_bytes = N`
    pub ack_bytes: Option<u64>,
    /// `credit_window = N`
    pub credit_window: Option<u64>,
    /// `stranger_credit = N`
    pub stranger_credit: Option<u64>,
    /// `stranger_write_off_s = N`
    pub stranger_write_off_s: Option<u64>,
    /// `upload_limit = "2MiB"` or `"unlimited"`
    pub upload_limit: Option<String>,
    /// `download_limit = "2MiB"` or `"unlimited"`
    pub download_limit: Option<String>,
    /// `upload_budget_daily = "10GiB"` or `"unlimited"`
    pub upload_budget_daily: Option<String>,
    /// `upload_budget_monthly = "200GiB"` or `"unlimited"`
    pub upload_budget_monthly: Option<String>,
    /// `max_connections = N`
    pub max_connections: Option<u64>,
    /// `max_connections_per_ip = N`
    pub max_connections_per_ip: Option<u64>,
    /// `gossip_interval_ms = N`
    pub gossip_interval_ms: Option<u64>,
    /// `max_third_party_receipts = N`
    pub max_third_party_receipts: Option<u64>,
    /// `target_peers = N`
    pub target_peers: Option<u64>,
}

/// The `[store]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// `cache_mib = N`
    pub cache_mib: Option<u64>,
}

/// The top layer: values given as command-line flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--network` (of `tally init`).
    pub network: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// No flag sets it yet; here so every key has all four layers.
    pub cache_mib: Option<u64>,
    /// `--listen` (of `tally run`).
    pub listen: Option<String>,
    /// `--api-listen`.
    pub api_listen: Option<String>,
    /// `--peer`, repeatable: replaces the configured peers when given.
    pub peers: Vec<String>,
    /// `--upload-limit`.
    pub upload_limit: Option<String>,
    /// `--download-limit`.
    pub download_limit: Option<String>,
    /// `--upload-budget-daily`.
    pub upload_budget_daily: Option<String>,
    /// `--upload-budget-monthly`.
    pub upload_budget_monthly: Option<String>,
    /// `--max-connections-per-ip`.
    pub max_connections_per_ip: Option<String>,
}

impl FileConfig {
    /// Parses the text of a config file. The error carries the TOML line and column.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `path`; a missing file is an empty config (every key at its default).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read config file {}", path.display()));
            }
        };
        Self::parse(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }
}

impl Config {
    /// Loads `path` (missing is fine), then applies `env` (a lookup such as
    /// [`process_env`]) and `flags`, and checks the result.
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> anyhow::Result<Self> {
        let file = FileConfig::read(path)?;
        Self::layered(&file, &path.display().to_string(), env, flags)
    }

    /// Defaults < `file` < `env` < `flags`, checked. `file_name` names the file in errors.
    pub fn layered(
        file: &FileConfig,
        file_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> anyhow::Result<Self> {
        let in_file = |key: &str| format!("`{key}` in {file_name}");
        let mut config = Config::default();
        if let Some(network) = &file.network {
            config.network = from(checked_network(network), &in_file("network"))?;
        }
        if let Some(level) = &file.log_level {
            config.log_level = from(checked_log_level(level), &in_file("log_level"))?;
        }
        if let Some(mib) = file.store.as_ref().and_then(|s| s.cache_mib) {
            config.store.cache_mib = from(checked_cache_mib(mib), &in_file("[store] cache_mib"))?;
        }
        if let Some(node) = &file.node {
            let n = &mut config.node;
            if let Some(v) = &node.listen {
                n.listen = from(checked_addr(v), &in_file("[node] listen"))?;
            }
            if let Some(v) = &node.api_listen {
                n.api_listen = from(checked_addr(v), &in_file("[node] api_listen"))?;
            }
            if let Some(v) = &node.peers {
                n.peers = from(checked_peers(v.iter()), &in_file("[node] peers"))?;
            }
            if let Some(v) = node.ack_bytes {
                n.ack_bytes = from(checked_bytes(v, "ack_bytes"), &in_file("[node] ack_bytes"))?;
            }
            if let Some(v) = node.credit_window {
                n.credit_window = from(
                    checked_bytes(v, "credit_window"),
                    &in_file("[node] credit_window"),
                )?;
            }
            if let Some(v) = node.stranger_credit {
                n.stranger_credit = Some(from(
                    checked_bytes(v, "stranger_credit"),
                    &in_file("[node] stranger_credit"),
                )?);
            }
            if let Some(v) = node.stranger_write_off_s {
                n.stranger_write_off = from(
                    checked_write_off(v),
                    &in_file("[node] stranger_write_off_s"),
                )?;
            }
            if let Some(v) = &node.upload_limit {
                n.upload_limit = from(limit(v), &in_file("[node] upload_limit"))?;
            }
            if let Some(v) = &node.download_limit {
                n.download_limit = from(limit(v), &in_file("[node] download_limit"))?;
            }
            if let Some(v) = &node.upload_budget_daily {
                n.upload_budget_daily = from(budget(v), &in_file("[node] upload_budget_daily"))?;
            }
            if let Some(v) = &node.upload_budget_monthly {
                n.upload_budget_monthly =
                    from(budget(v), &in_file("[node] upload_budget_monthly"))?;
            }
            if let Some(v) = node.max_connections {
                n.max_connections = from(
                    checked_max_connections(v),
                    &in_file("[node] max_connections"),
                )?;
            }
            if let Some(v) = node.max_connections_per_ip {
                n.max_connections_per_ip =
                    from(checked_per_ip(v), &in_file("[node] max_connections_per_ip"))?;
            }
            if let Some(v) = node.gossip_interval_ms {
                n.gossip_interval = from(
                    checked_gossip_interval(v),
                    &in_file("[node] gossip_interval_ms"),
                )?;
            }
            if let Some(v) = node.max_third_party_receipts {
                n.max_third_party_receipts = from(
                    checked_third_party(v),
                    &in_file("[node] max_third_party_receipts"),
                )?;
            }
            if let Some(v) = node.target_peers {
                n.target_peers = from(checked_target_peers(v), &in_file("[node] target_peers"))?;
            }
        }

        if let Some(network) = env(ENV_NETWORK) {
            config.network = from(checked_network(&network), ENV_NETWORK)?;
        }
        if let Some(level) = env(ENV_LOG_LEVEL) {
            config.log_level = from(checked_log_level(&level), ENV_LOG_LEVEL)?;
        }
        if let Some(mib) = env(ENV_CACHE_MIB) {
            let parsed = mib.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!("invalid cache size {mib:?}: expected a whole number of MiB")
            });
            config.store.cache_mib = from(parsed.and_then(checked_cache_mib), ENV_CACHE_MIB)?;
        }

        if let Some(v) = env(ENV_LISTEN) {
            config.node.listen = from(checked_addr(&v), ENV_LISTEN)?;
        }
        if let Some(v) = env(ENV_API_LISTEN) {
            config.node.api_listen = from(checked_addr(&v), ENV_API_LISTEN)?;
        }
        if let Some(v) = env(ENV_PEERS) {
            let peers = v.split(',').filter(|p| !p.trim().is_empty());
            config.node.peers = from(checked_peers(peers), ENV_PEERS)?;
        }
        if let Some(v) = env(ENV_UPLOAD_LIMIT) {
            config.node.upload_limit = from(limit(&v), ENV_UPLOAD_LIMIT)?;
        }
        if let Some(v) = env(ENV_DOWNLOAD_LIMIT) {
            config.node.download_limit = from(limit(&v), ENV_DOWNLOAD_LIMIT)?;
        }
        if let Some(v) = env(ENV_UPLOAD_BUDGET_DAILY) {
            config.node.upload_budget_daily = from(budget(&v), ENV_UPLOAD_BUDGET_DAILY)?;
        }
        if let Some(v) = env(ENV_UPLOAD_BUDGET_MONTHLY) {
            config.node.upload_budget_monthly = from(budget(&v), ENV_UPLOAD_BUDGET_MONTHLY)?;
        }
        if let Some(v) = env(ENV_MAX_CONNECTIONS_PER_IP) {
            config.node.max_connections_per_ip =
                from(parsed_per_ip(&v), ENV_MAX_CONNECTIONS_PER_IP)?;
        }

        if let Some(network) = &flags.network {
            config.network = from(checked_network(network), "--network")?;
        }
        if let Some(v) = &flags.listen {
            config.node.listen = from(checked_addr(v), "--listen")?;
        }
        if let Some(v) = &flags.api_listen {
            config.node.api_listen = from(checked_addr(v), "--api-listen")?;
        }
        if !flags.peers.is_empty() {
            config.node.peers = from(checked_peers(flags.peers.iter()), "--peer")?;
        }
        if let Some(v) = &flags.upload_limit {
            config.node.upload_limit = from(limit(v), "--upload-limit")?;
        }
        if let Some(v) = &flags.download_limit {
            config.node.download_limit = from(limit(v), "--download-limit")?;
        }
        if let Some(v) = &flags.upload_budget_daily {
            config.node.upload_budget_daily = from(budget(v), "--upload-budget-daily")?;
        }
        if let Some(v) = &flags.upload_budget_monthly {
            config.node.upload_budget_monthly = from(budget(v), "--upload-budget-monthly")?;
        }
        if let Some(v) = &flags.max_connections_per_ip {
            config.node.max_connections_per_ip =
                from(parsed_per_ip(v), "--max-connections-per-ip")?;
        }
        if let Some(level) = &flags.log_level {
            config.log_level = from(checked_log_level(level), "--log-level")?;
        }
        if let Some(mib) = flags.cache_mib {
            config.store.cache_mib = from(checked_cache_mib(mib), "the cache size flag")?;
        }
        Ok(config)
    }

    /// The network's id: BLAKE3 of its name.
    pub fn network_id(&self) -> NetworkId {
        NetworkId::from_name(&self.network)
    }

    /// How to open the store.
    pub fn store_config(&self) -> StoreConfig {
        // `checked_cache_mib` bounds cache_mib, so this does not overflow; saturate anyway.
        StoreConfig {
            cache_capacity: self.store.cache_mib.saturating_mul(1024 * 1024),
            ..StoreConfig::default()
        }
    }
}

/// Reads a variable from the process environment. Empty counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name)
        .map(|value| value.to_string_lossy().into_owned())
        .filter(|value| !value.is_empty())
}

/// `result`, its error saying which layer gave the bad value.
fn from<T>(result: anyhow::Result<T>, source: &str) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e} (from {source})"))
}

fn checked_network(name: &str) -> anyhow::Result<String> {
    if name.trim().is_empty() {
        bail!("the network name is empty");
    }
    if name.len() > MAX_NETWORK_NAME {
        bail!(
            "the network name is {} bytes long; at most {MAX_NETWORK_NAME} are allowed",
            name.len()
        );
    }
    if name.chars().any(char::is_control) {
        bail!("the network name {name:?} contains control characters");
    }
    Ok(name.to_owned())
}

fn checked_log_level(level: &str) -> anyhow::Result<String> {
    let level = level.trim();
    let hint = "use error, warn, info, debug, trace, off or a tracing filter such as \
                \"warn,tally_node=debug\"";
    // EnvFilter reads a bare word as a target to log at every level, so a misspelt level
    // ("debgu") would pass silently: a bare directive must be a level.
    for directive in level.split(',').map(str::trim) {
        let bare = !directive.is_empty() && !directive.contains(['=', '[', ':']);
        if bare
            && directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
        {
            bail!("invalid log level {directive:?}: {hint}");
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid log level {level:?} ({e}): {hint}"))?;
    Ok(level.to_owned())
}

fn checked_addr(text: &str) -> anyhow::Result<std::net::SocketAddr> {
    text.trim().parse().map_err(|_| {
        anyhow::anyhow!("`{text}` is not an address: write IP:PORT such as 0.0.0.0:7420 (port 0 picks a free port)")
    })
}

fn checked_peers<'a>(
    peers: impl Iterator<Item = &'a (impl AsRef<str> + 'a + ?Sized)>,
) -> anyhow::Result<Vec<PeerAddr>> {
    peers.map(|p| p.as_ref().parse()).collect()
}

fn checked_bytes(value: u64, what: &str) -> anyhow::Result<u64> {
    const MIN: u64 = 64 * 1024;
    const MAX: u64 = 1 << 40;
    if !(MIN..=MAX).contains(&value) {
        bail!(
            "{what} = {value} is out of range: it must be between {MIN} (64 KiB) and {MAX} bytes"
        );
    }
    Ok(value)
}

fn checked_write_off(seconds: u64) -> anyhow::Result<std::time::Duration> {
    if !(1..=86_400).contains(&seconds) {
        bail!(
            "stranger_write_off_s = {seconds} is out of range: it must be between 1 and 86400 seconds (a day)"
        );
    }
    Ok(std::time::Duration::from_secs(seconds))
}

fn checked_max_connections(value: u64) -> anyhow::Result<usize> {
    if !(1..=65_536).contains(&value) {
        bail!("max_connections = {value} is out of range: it must be between 1 and 65536");
    }
    usize::try_from(value).map_err(|_| anyhow::anyhow!("max_connections = {value} is too large"))
}

fn checked_per_ip(value: u64) -> anyhow::Result<usize> {
    if !(1..=65_536).contains(&value) {
        bail!("max_connections_per_ip = {value} is out of range: it must be between 1 and 65536");
    }
    usize::try_from(value)
        .map_err(|_| anyhow::anyhow!("max_connections_per_ip = {value} is too large"))
}

fn parsed_per_ip(text: &str) -> anyhow::Result<usize> {
    let value = text.trim().parse::<u64>().map_err(|_| {
        anyhow::anyhow!("invalid max_connections_per_ip {text:?}: expected a whole number")
    })?;
    checked_per_ip(value)
}

fn checked_gossip_interval(ms: u64) -> anyhow::Result<std::time::Duration> {
    if !(50..=3_600_000).contains(&ms) {
        bail!(
            "gossip_interval_ms = {ms} is out of range: it must be between 50 and 3600000 (an hour)"
        );
    }
    Ok(std::time::Duration::from_millis(ms))
}

fn checked_third_party(value: u64) -> anyhow::Result<u64> {
    const MAX: u64 = 1_000_000_000;
    if value > MAX {
        bail!("max_third_party_receipts = {value} is out of range: it must be at most {MAX}");
    }
    Ok(value)
}

fn checked_target_peers(value: u64) -> anyhow::Result<usize> {
    if value > 65_536 {
        bail!("target_peers = {value} is out of range: it must be between 0 and 65536");
    }
    usize::try_from(value).map_err(|_| anyhow::anyhow!("target_peers = {value} is too large"))
}

fn limit(text: &str) -> anyhow::Result<Option<Rate>> {
    Ok(parse_limit(text)?)
}

/// An upload budget: a size with units ("10GiB") or "unlimited", at least [`MIN_UPLOAD_BUDGET`].
fn budget(text: &str) -> anyhow::Result<Option<u64>> {
    let Some(Rate(bytes)) = parse_limit(text)? else {
        return Ok(None);
    };
    if bytes < MIN_UPLOAD_BUDGET {
        bail!(
            "upload budget {text:?} is too small: at least 16MiB (one upload request), or \"unlimited\""
        );
    }
    Ok(Some(bytes))
}

fn checked_cache_mib(mib: u64) -> anyhow::Result<u64> {
    if !(1..=MAX_CACHE_MIB).contains(&mib) {
        bail!("invalid cache size {mib} MiB: it must be between 1 and {MAX_CACHE_MIB}");
    }
    Ok(mib)
}

/// The `config.toml` that `tally init` writes: every key with its default value (and `network`
/// set to `network`), each explained.
pub fn render_default(network: &str) -> String {
    let network = toml_edit::Value::from(network).to_string();
    format!(
        r#"# tally node configuration.
#
# Every setting is listed here, at its default value unless `tally init` was told otherwise.
# Settings are layered: built-in defaults, then this file, then environment variables, then
# command-line flags. A key this version does not know is an error, so a typo never goes
# unnoticed.

# The network this node belongs to. Its id, the BLAKE3 hash of this name, is part of every
# receipt's signed bytes, so receipts made on one network never verify on another. The receipt
# store belongs to one network: after changing this, move the old DATA_DIR/store aside (or run
# `tally init --force --network NAME`, which does). Environment: TALLY_NETWORK.
network = {network}

# How much the node logs to stderr: error, warn, info, debug, trace or off, or a tracing filter
# such as "warn,tally_node=debug". Environment: TALLY_LOG_LEVEL; flag: --log-level. RUST_LOG, when
# set, wins over all of them.
log_level = "{DEFAULT_LOG_LEVEL}"

# The receipt store in DATA_DIR/store: the latest receipt of every known pair of peers.
[store]
# Memory the store may use as page cache, in MiB (1 to {MAX_CACHE_MIB}). More speeds up large
# ledgers; the store works with less. Environment: TALLY_STORE_CACHE_MIB.
cache_mib = {DEFAULT_CACHE_MIB}

# The running node (`tally run`).
[node]
# Where the node listens for peers, over QUIC (UDP). Port 0 picks a free port. Environment:
# TALLY_LISTEN; flag: --listen.
listen = "{DEFAULT_LISTEN}"
# Where the local HTTP API and dashboard listen. Keep it on 127.0.0.1 unless you mean to reach
# it from elsewhere (it still needs the API key). Environment: TALLY_API_LISTEN; flag: --api-listen.
api_listen = "{DEFAULT_API_LISTEN}"
# Peers to dial at start and redial after a drop, as "PEERID@HOST:PORT". Environment:
# TALLY_PEERS (comma-separated); flag: --peer (repeatable).
peers = []
# Payload bytes this node receives from a peer between two receipts it proposes.
ack_bytes = {DEFAULT_ACK_BYTES}
# Bytes this node sends a peer without standing ahead of that peer's receipts: a peer that
# never signs gets at most this much from this node. Peers with standing get more, up to 16
# times this.
credit_window = {DEFAULT_CREDIT_WINDOW}
# Strangers (peers without standing that never signed a receipt for this node) share one
# allowance instead of a credit window each, so a new key buys nothing: bytes sent to them
# ahead of receipts, all together, stay under `stranger_credit` (unset: `credit_window`), and
# are written off after `stranger_write_off_s` seconds unsigned. A stranger that signs leaves the
# pool and gets its own window.
# stranger_credit = {DEFAULT_CREDIT_WINDOW}
stranger_write_off_s = {DEFAULT_STRANGER_WRITE_OFF_S}
# Global upload and download limits in bytes per second, with units ("2MiB", "500KiB", "1.5MB")
# or "unlimited". Changeable at runtime through the API. Environment: TALLY_UPLOAD_LIMIT,
# TALLY_DOWNLOAD_LIMIT; flags: --upload-limit, --download-limit.
upload_limit = "unlimited"
download_limit = "unlimited"
# Upload budgets (data caps): bytes uploaded at most per UTC day and per UTC calendar month,
# with units ("10GiB", "200GiB") or "unlimited"; at least 16MiB. Past one, uploads wait until it
# resets; `tally status` shows what is used. Environment: TALLY_UPLOAD_BUDGET_DAILY,
# TALLY_UPLOAD_BUDGET_MONTHLY; flags: --upload-budget-daily, --upload-budget-monthly.
upload_budget_daily = "unlimited"
upload_budget_monthly = "unlimited"
# Connections kept at most, incoming and outgoing together.
max_connections = {DEFAULT_MAX_CONNECTIONS}
# Incoming connections one source IP (IPv6: one /64) may hold at once, handshakes in progress
# included; more are refused before any handshake work. Loopback testnets give each node its own
# 127.x address. Environment: TALLY_MAX_CONNECTIONS_PER_IP; flag: --max-connections-per-ip.
max_connections_per_ip = {DEFAULT_MAX_CONNECTIONS_PER_IP}
# Gossip: every this many milliseconds the node syncs receipts, conflict proofs, provider and
# peer records with one random connected peer.
gossip_interval_ms = {DEFAULT_GOSSIP_INTERVAL_MS}
# Receipts between other peers kept at most; past it, those farthest from this node in the
# graph of who uploaded to whom are dropped first. This node's own receipts are always kept.
max_third_party_receipts = {DEFAULT_MAX_THIRD_PARTY_RECEIPTS}
# Peer exchange dials peers it hears of until this many connections are open (0: only the
# configured peers and those that dial in).
target_peers = {DEFAULT_TARGET_PEERS}
"#
    )
}

/// `text` (a valid config file) with `network` set to `name`, comments and layout kept.
pub fn set_network(text: &str, name: &str) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("config.toml is not valid TOML")?;
    match doc
        .get_mut("network")
        .and_then(toml_edit::Item::as_value_mut)
    {
        Some(value) => {
            let decor = value.decor().clone();
            *value = toml_edit::Value::from(name);
            *value.decor_mut() = decor;
        }
        None => {
            doc["network"] = toml_edit::value(name);
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_default_file_parses_and_names_every_key() {
        let file = FileConfig::parse(&render_default("tally")).unwrap();
        assert_eq!(
            file,
            FileConfig {
                network: Some("tally".into()),
                log_level: Some("warn".into()),
                store: Some(FileStore {
                    cache_mib: Some(64)
                }),
                node: Some(FileNode {
                    listen: Some(DEFAULT_LISTEN.into()),
                    api_listen: Some(DEFAULT_API_LISTEN.into()),
                    peers: Some(Vec::new()),
                    ack_bytes: Some(DEFAULT_ACK_BYTES),
                    credit_window: Some(DEFAULT_CREDIT_WINDOW),
                    stranger_credit: None,
                    stranger_write_off_s: Some(DEFAULT_STRANGER_WRITE_OFF_S),
                    upload_limit: Some("unlimited".into()),
                    download_limit: Some("unlimited".into()),
                    upload_budget_daily: Some("unlimited".into()),
                    upload_budget_monthly: Some("unlimited".into()),
                    max_connections: Some(DEFAULT_MAX_CONNECTIONS as u64),
                    max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP as u64),
                    gossip_interval_ms: Some(DEFAULT_GOSSIP_INTERVAL_MS),
                    max_third_party_receipts: Some(DEFAULT_MAX_THIRD_PARTY_RECEIPTS),
                    target_peers: Some(DEFAULT_TARGET_PEERS as u64),
                }),
            }
        );
        let config = Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_default_file_quotes_odd_network_names() {
        let name = "my \"quoted\" net\\work";
        let file = FileConfig::parse(&render_default(name)).unwrap();
        assert_eq!(file.network.as_deref(), Some(name));
    }

    #[test]
    fn layers_override_in_order() {
        let file = FileConfig::parse("network = \"file\"\n[store]\ncache_mib = 8\n").unwrap();
        let config = Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap();
        assert_eq!(config.network, "file");
        assert_eq!(config.store.cache_mib, 8);
        assert_eq!(config.log_level, "warn");

        let env = |name: &str| match name {
            ENV_NETWORK => Some("env".to_owned()),
            ENV_CACHE_MIB => Some("16".to_owned()),
            ENV_LOG_LEVEL => Some("info".to_owned()),
            _ => None,
        };
        let config = Config::layered(&file, "config.toml", &env, &Overrides::default()).unwrap();
        assert_eq!(config.network, "env");
        assert_eq!(config.store.cache_mib, 16);
        assert_eq!(config.log_level, "info");

        let flags = Overrides {
            network: Some("flag".into()),
            log_level: Some("debug".into()),
            cache_mib: Some(32),
            ..Overrides::default()
        };
        let config = Config::layered(&file, "config.toml", &env, &flags).unwrap();
        assert_eq!(config.network, "flag");
        assert_eq!(config.store.cache_mib, 32);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.network_id(), NetworkId::from_name("flag"));
        assert_eq!(config.store_config().cache_capacity, 32 * 1024 * 1024);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = FileConfig::parse("network = \"x\"\nnetwrok = \"y\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("netwrok"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        let err = FileConfig::parse("[store]\ncache = 3\n").unwrap_err();
        assert!(err.to_string().contains("cache"), "{err}");
        let err = FileConfig::parse("[stor]\n").unwrap_err();
        assert!(err.to_string().contains("stor"), "{err}");
    }

    #[test]
    fn malformed_files_report_line_and_column() {
        let err = FileConfig::parse("network = \"x\"\nlog_level = \n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2, column"), "{text}");
        let err = FileConfig::parse("[store]\ncache_mib = \"big\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_source() {
        let file = FileConfig::parse("[store]\ncache_mib = 0\n").unwrap();
        let err =
            Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("cache_mib"), "{err:#}");

        let env = |name: &str| (name == ENV_CACHE_MIB).then(|| "lots".to_owned());
        let err = Config::layered(
            &FileConfig::default(),
            "config.toml",
            &env,
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains(ENV_CACHE_MIB), "{err:#}");

        let flags = Overrides {
            network: Some("  ".into()),
            ..Overrides::default()
        };
        let err =
            Config::layered(&FileConfig::default(), "config.toml", &no_env, &flags).unwrap_err();
        assert!(format!("{err:#}").contains("empty"), "{err:#}");

        for bad in ["loud", "warn,debgu", "tally_node=loud"] {
            let flags = Overrides {
                log_level: Some(bad.into()),
                ..Overrides::default()
            };
            let err = Config::layered(&FileConfig::default(), "config.toml", &no_env, &flags)
                .unwrap_err();
            assert!(format!("{err:#}").contains("--log-level"), "{err:#}");
        }
        for good in [
            "warn",
            "INFO",
            "off",
            "warn,tally_node=debug",
            "tally_ledger::store=trace",
        ] {
            let flags = Overrides {
                log_level: Some(good.into()),
                ..Overrides::default()
            };
            Config::layered(&FileConfig::default(), "config.toml", &no_env, &flags).unwrap();
        }
    }

    #[test]
    fn upload_budgets_layer_and_refuse_sizes_below_one_request() {
        let no_env = |_: &str| None;
        let file = FileConfig::parse(
            "[node]\nupload_budget_daily = \"10GiB\"\nupload_budget_monthly = \"unlimited\"\n",
        )
        .unwrap();
        let config = Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap();
        assert_eq!(config.node.upload_budget_daily, Some(10 << 30));
        assert_eq!(config.node.upload_budget_monthly, None);
        let env = |name: &str| (name == ENV_UPLOAD_BUDGET_MONTHLY).then(|| "200GiB".to_owned());
        let flags = Overrides {
            upload_budget_daily: Some("unlimited".into()),
            ..Overrides::default()
        };
        let config = Config::layered(&file, "config.toml", &env, &flags).unwrap();
        assert_eq!(config.node.upload_budget_daily, None);
        assert_eq!(config.node.upload_budget_monthly, Some(200 << 30));
        let flags = Overrides {
            upload_budget_daily: Some("1MiB".into()),
            ..Overrides::default()
        };
        let err = Config::layered(&file, "config.toml", &no_env, &flags).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("--upload-budget-daily") && message.contains("too small"),
            "{message}"
        );
        let bad = FileConfig::parse("[node]\nupload_budget_daily = \"lots\"\n").unwrap();
        let err = Config::layered(&bad, "config.toml", &no_env, &Overrides::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("upload_budget_daily"),
            "{err:#}"
        );
    }

    #[test]
    fn set_network_keeps_comments_and_other_keys() {
        let text = "# mine\nnetwork = \"old\" # trailing\n\n[store]\n# cache\ncache_mib = 8\n";
        let edited = set_network(text, "new").unwrap();
        assert_eq!(
            edited,
            "# mine\nnetwork = \"new\" # trailing\n\n[store]\n# cache\ncache_mib = 8\n"
        );
        let edited = set_network("[store]\ncache_mib = 8\n", "new").unwrap();
        let file = FileConfig::parse(&edited).unwrap();
        assert_eq!(file.network.as_deref(), Some("new"));
        assert_eq!(file.store.and_then(|s| s.cache_mib), Some(8));
    }

    #[test]
    fn node_settings_layer_and_parse_peers_rates_and_addresses() {
        let id = tally_ledger::Identity::from_secret_bytes([3; 32]).peer_id();
        let file = FileConfig::parse(&format!(
            "[node]\nlisten = \"127.0.0.1:0\"\npeers = [\"{id}@localhost:7420\"]\nupload_limit = \"2MiB\"\n"
        ))
        .unwrap();
        let config = Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap();
        assert_eq!(config.node.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.node.peers[0].peer_id, id);
        assert_eq!(config.node.peers[0].addr, "localhost:7420");
        assert_eq!(config.node.upload_limit, Some(Rate(2 << 20)));
        assert_eq!(config.node.download_limit, None);

        let env = |name: &str| match name {
            ENV_UPLOAD_LIMIT => Some("unlimited".to_owned()),
            ENV_DOWNLOAD_LIMIT => Some("500KiB".to_owned()),
            _ => None,
        };
        let config = Config::layered(&file, "config.toml", &env, &Overrides::default()).unwrap();
        assert_eq!(config.node.upload_limit, None);
        assert_eq!(config.node.download_limit, Some(Rate(500 << 10)));

        let flags = Overrides {
            peers: vec![format!("{id}@10.0.0.1:1")],
            listen: Some("0.0.0.0:9000".into()),
            ..Overrides::default()
        };
        let config = Config::layered(&file, "config.toml", &env, &flags).unwrap();
        assert_eq!(config.node.peers.len(), 1);
        assert_eq!(config.node.peers[0].to_string(), format!("{id}@10.0.0.1:1"));
        assert_eq!(config.node.listen.port(), 9000);

        for (bad, key) in [
            ("[node]\nlisten = \"nowhere\"\n", "listen"),
            ("[node]\npeers = [\"abc@host:1\"]\n", "peers"),
            (
                &format!("[node]\npeers = [\"{id}@host\"]\n") as &str,
                "peers",
            ),
            ("[node]\nupload_limit = \"fast\"\n", "upload_limit"),
            ("[node]\nack_bytes = 1\n", "ack_bytes"),
            ("[node]\nmax_connections = 0\n", "max_connections"),
            (
                "[node]\nmax_connections_per_ip = 0\n",
                "max_connections_per_ip",
            ),
            ("[node]\ngossip_interval_ms = 1\n", "gossip_interval_ms"),
            (
                "[node]\nmax_third_party_receipts = 10000000000\n",
                "max_third_party_receipts",
            ),
            ("[node]\ntarget_peers = 100000\n", "target_peers"),
        ] {
            let file = FileConfig::parse(bad).unwrap();
            let err =
                Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{bad}: {err:#}");
        }
    }

    #[test]
    fn max_connections_per_ip_layers_file_env_flag() {
        let file = FileConfig::parse("[node]\nmax_connections_per_ip = 3\n").unwrap();
        let config = Config::layered(&file, "config.toml", &no_env, &Overrides::default()).unwrap();
        assert_eq!(config.node.max_connections_per_ip, 3);
        let env = |name: &str| (name == ENV_MAX_CONNECTIONS_PER_IP).then(|| "5".to_owned());
        let config = Config::layered(&file, "config.toml", &env, &Overrides::default()).unwrap();
        assert_eq!(config.node.max_connections_per_ip, 5);
        let flags = Overrides {
            max_connections_per_ip: Some("7".into()),
            ..Overrides::default()
        };
        let config = Config::layered(&file, "config.toml", &env, &flags).unwrap();
        assert_eq!(config.node.max_connections_per_ip, 7);
        let bad = |name: &str| (name == ENV_MAX_CONNECTIONS_PER_IP).then(|| "many".to_owned());
        let err = Config::layered(&file, "config.toml", &bad, &Overrides::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains(ENV_MAX_CONNECTIONS_PER_IP),
            "{err:#}"
        );
    }
}
