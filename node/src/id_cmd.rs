//! `tally id` and `tally api-key`: show who this node is and the key of its API.

use std::fs;
use std::io::Write;

use anyhow::{Context as _, bail};
use rand::Rng as _;
use serde::Serialize;
use tally_ledger::Identity;

use crate::cli::{ApiKeyArgs, IdArgs};
use crate::data_dir::{self, Access, DataDir};
use crate::{Context, Status};

/// `tally id --json`.
#[derive(Debug, Serialize)]
struct IdReport {
    peer_id: String,
    network: String,
    network_id: String,
}

/// Prints the PeerId (64 lowercase hex characters), or a JSON object with the network too.
pub fn id(args: &IdArgs, context: &Context, out: &mut dyn Write) -> anyhow::Result<Status> {
    let identity = load_identity(&context.data_dir)?;
    let peer_id = identity.peer_id().to_string();
    if args.json {
        let report = IdReport {
            peer_id,
            network: context.config.network.clone(),
            network_id: context.config.network_id().to_string(),
        };
        write_json_line(out, &report)?;
    } else {
        writeln!(out, "{peer_id}")?;
    }
    Ok(Status::Success)
}

/// Prints the API key; with `--rotate`, writes a new one first.
pub fn api_key(
    args: &ApiKeyArgs,
    context: &Context,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    let key = if args.rotate {
        // Only an initialised node has an API key to rotate.
        load_identity(&context.data_dir)?;
        write_new_api_key(&context.data_dir)?
    } else {
        read_api_key(&context.data_dir)?
    };
    writeln!(out, "{key}")?;
    Ok(Status::Success)
}

/// Writes a new random API key (32 bytes as 64 lowercase hex characters and a newline, mode
/// 0600) and returns it.
pub fn write_new_api_key(data_dir: &DataDir) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    data_dir::write_atomic(
        &data_dir.api_key_file(),
        format!("{key}\n").as_bytes(),
        Access::OwnerOnly,
    )?;
    Ok(key)
}

/// Loads the node's identity, with a message telling to run `tally init` if there is none.
/// Other failures (wrong length, readable by others) keep the ledger's message, which says
/// what to do.
pub fn load_identity(data_dir: &DataDir) -> anyhow::Result<Identity> {
    let path = data_dir.identity_file();
    if !path.exists() {
        bail!(
            "no identity in {}: run `tally init` first (or pass --data-dir)",
            data_dir.root().display()
        );
    }
    Ok(Identity::load(&path)?)
}

/// Whether `text` is an API key as `tally init` writes it: 64 lowercase hex characters.
pub fn is_api_key(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads and checks `api_key`: owner-only, 64 lowercase hex characters.
pub fn read_api_key(data_dir: &DataDir) -> anyhow::Result<String> {
    let path = data_dir.api_key_file();
    if !path.exists() {
        bail!(
            "no API key in {}: run `tally init` first, or `tally api-key --rotate` to make one",
            data_dir.root().display()
        );
    }
    data_dir::check_owner_only(&path)?;
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read the API key file {}", path.display()))?;
    let key = text.trim_end();
    if !is_api_key(key) {
        bail!(
            "the API key file {} does not hold 64 lowercase hex characters: it is damaged; \
             run `tally api-key --rotate` to make a new one",
            path.display()
        );
    }
    Ok(key.to_owned())
}

/// Writes `value` as one line of JSON.
pub(crate) fn write_json_line<T: Serialize>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    // Serialize first, then write: an I/O error (a closed pipe) then stays a plain io::Error.
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    out.write_all(&line)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_64_lowercase_hex() {
        assert!(is_api_key(&"0a".repeat(32)));
        assert!(!is_api_key(&"0A".repeat(32)));
        assert!(!is_api_key(&"0a".repeat(31)));
        assert!(!is_api_key(&"zz".repeat(32)));
    }
}
