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
use tally_ledger::{NetworkId, StoreConfig};

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

/// The settings in force, every layer applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network's name; its id is [`Config::network_id`].
    pub network: String,
    /// The tracing filter for stderr (RUST_LOG still wins over it).
    pub log_level: String,
    /// The receipt store.
    pub store: StoreSettings,
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

        if let Some(network) = &flags.network {
            config.network = from(checked_network(network), "--network")?;
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
}
