//! `tally init`: creates a node's data directory, identity key, API key, config.toml and
//! receipt store, or (with `--force`) gives an existing node a new identity.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use tally_ledger::{Identity, IdentityError, NetworkId, Store, StoreError};

use crate::cli::InitArgs;
use crate::config;
use crate::data_dir::{self, Access};
use crate::id_cmd;
use crate::{Context, Status};

/// What `tally init` did, as printed (`--json` prints this object).
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The new identity's PeerId.
    pub peer_id: String,
    /// The PeerId that `--force` replaced, if the old identity could be read.
    pub replaced_peer_id: Option<String>,
    /// The network's name.
    pub network: String,
    /// The network's id, hex.
    pub network_id: String,
    /// The data directory.
    pub data_dir: String,
    /// Each file or directory created, written, updated, kept or moved, in order.
    pub files: Vec<FileAction>,
}

/// One thing `tally init` did to a path.
#[derive(Debug, Serialize)]
pub struct FileAction {
    /// `created`, `wrote`, `updated`, `kept` or `moved`.
    pub action: &'static str,
    /// The path acted on.
    pub path: String,
    /// Where it was moved to (for `moved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl InitReport {
    fn note(&mut self, action: &'static str, path: &Path) {
        self.files.push(FileAction {
            action,
            path: path.display().to_string(),
            to: None,
        });
    }
}

/// Runs `tally init`.
pub fn run(args: &InitArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let data_dir = &context.data_dir;
    let identity_path = data_dir.identity_file();
    // `symlink_metadata`: a dangling symlink is something in the way too.
    let identity_exists = fs::symlink_metadata(&identity_path).is_ok();
    if identity_exists && !args.force {
        return Err(IdentityError::Exists {
            path: identity_path,
        }
        .into());
    }
    let network_id = context.config.network_id();
    let mut report = InitReport {
        peer_id: String::new(),
        replaced_peer_id: None,
        network: context.config.network.clone(),
        network_id: network_id.to_string(),
        data_dir: data_dir.root().display().to_string(),
        files: Vec::new(),
    };
    if identity_exists {
        report.replaced_peer_id = Identity::load(&identity_path)
            .ok()
            .map(|old| old.peer_id().to_string());
    }

    if data_dir.create()? {
        report.note("created", data_dir.root());
    }

    // The store first: it refuses if a running node holds it, and its network is settled
    // before anything is replaced. It stays open (locked) until init is done.
    let store = open_store(args, context, &mut report)?;

    let identity = Identity::generate(&mut rand::rng());
    identity.save(&identity_path, args.force)?;
    report.peer_id = identity.peer_id().to_string();
    report.note("wrote", &identity_path);

    write_api_key(data_dir, &mut report)?;
    write_config(args, context, &mut report)?;
    drop(store);

    if args.json {
        id_cmd::write_json_line(out, &report)?;
    } else {
        print_report(&report, out)?;
    }
    Ok(Status::Success)
}

fn open_store(
    args: &InitArgs,
    context: &Context,
    report: &mut InitReport,
) -> anyhow::Result<Store> {
    let path = context.data_dir.store_dir();
    let existed = path.exists();
    let open = || {
        Store::open(
            &path,
            context.config.network_id(),
            context.config.store_config(),
        )
    };
    match open() {
        Ok(store) => {
            report.note(if existed { "kept" } else { "created" }, &path);
            Ok(store)
        }
        Err(StoreError::WrongNetwork { found, .. }) if args.force => {
            let aside = aside_path(&path, &found);
            fs::rename(&path, &aside).with_context(|| {
                format!(
                    "cannot move the store of the old network from {} to {}",
                    path.display(),
                    aside.display()
                )
            })?;
            report.files.push(FileAction {
                action: "moved",
                path: path.display().to_string(),
                to: Some(aside.display().to_string()),
            });
            let store = open()?;
            report.note("created", &path);
            Ok(store)
        }
        Err(e @ StoreError::WrongNetwork { .. }) => Err(anyhow::Error::new(e).context(
            "the receipt store belongs to another network: move it aside, or pass --force to \
             have init move it aside (nothing is deleted) and start an empty store",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `store.old-<first 10 hex of the network id>`, numbered if that is taken.
fn aside_path(store: &Path, network: &NetworkId) -> PathBuf {
    let id = network.to_string();
    let base = format!("store.old-{}", id.get(..10).unwrap_or(&id));
    let mut candidate = store.with_file_name(&base);
    let mut n = 1u32;
    while candidate.exists() {
        candidate = store.with_file_name(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

fn write_api_key(data_dir: &data_dir::DataDir, report: &mut InitReport) -> anyhow::Result<()> {
    let path = data_dir.api_key_file();
    let existing = fs::read_to_string(&path).ok();
    if existing.is_some_and(|text| id_cmd::is_api_key(text.trim_end())) {
        #[cfg(unix)]
        {
            // Keep the key, but make sure it is a secret.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
        }
        report.note("kept", &path);
    } else {
        id_cmd::write_new_api_key(data_dir)?;
        report.note("wrote", &path);
    }
    Ok(())
}

fn write_config(args: &InitArgs, context: &Context, report: &mut InitReport) -> anyhow::Result<()> {
    let path = context.data_dir.config_file();
    let network = &context.config.network;
    match fs::read_to_string(&path) {
        Ok(text) if args.network.is_some() => {
            let edited = config::set_network(&text, network)
                .with_context(|| format!("cannot update {}", path.display()))?;
            if edited == text {
                report.note("kept", &path);
            } else {
                data_dir::write_atomic(&path, edited.as_bytes(), Access::Default)?;
                report.note("updated", &path);
            }
        }
        Ok(_) => report.note("kept", &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = config::render_default(network);
            data_dir::write_atomic(&path, text.as_bytes(), Access::Default)?;
            report.note("wrote", &path);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    Ok(())
}

fn print_report(report: &InitReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "initialised tally node in {}", report.data_dir)?;
    writeln!(out, "peer id     {}", report.peer_id)?;
    if let Some(old) = &report.replaced_peer_id {
        writeln!(out, "replaced    {old} (that identity is gone)")?;
    }
    writeln!(out, "network     {}", report.network)?;
    writeln!(out, "network id  {}", report.network_id)?;
    for file in &report.files {
        match &file.to {
            Some(to) => writeln!(out, "{:<8} {} -> {to}", file.action, file.path)?,
            None => writeln!(out, "{:<8} {}", file.action, file.path)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_paths_do_not_clobber() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let net = NetworkId::from_name("old");
        let first = aside_path(&store, &net);
        let hex = net.to_string();
        assert_eq!(first, tmp.path().join(format!("store.old-{}", &hex[..10])));
        fs::create_dir(&first).unwrap();
        let second = aside_path(&store, &net);
        assert_eq!(
            second,
            tmp.path().join(format!("store.old-{}.1", &hex[..10]))
        );
    }
}
