//! `tally testnet --emit-configs DIR`: a testnet to run across machines. Every node is an
//! ordinary `tally` data directory (identity, API key, config, store; content imported where
//! the scenario puts it; a sybil clique's receipts seeded) with a `start.sh` that runs it with
//! the scenario's limits and behaviour and fetches what it wants when the scenario says.
//! Nothing is started here.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::scenario::{Role, Scenario};

/// The QUIC port of node `i` (the API listens on the next one), so that scripts on one machine
/// do not clash.
pub const BASE_PORT: u16 = 7400;

/// Writes every node of `scenario` under `dir`; returns how many.
pub fn emit(scenario: &Scenario, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if scenario.peers() > u64::from((u16::MAX - BASE_PORT) / 2) {
        anyhow::bail!("{} peers do not fit the port plan", scenario.peers());
    }
    let content_dir = dir.join("content");
    std::fs::create_dir_all(&content_dir)?;
    let files = super::real::write_content(scenario, &content_dir)?;
    // The nodes' directories and identities first: the bootstrap node's id goes in every script.
    let mut nodes = Vec::new();
    for (g, group) in scenario.groups.iter().enumerate() {
        for ordinal in 0..group.count {
            let name = format!("{}-{ordinal}", group.name);
            let node_dir = dir.join(&name);
            let peer_id = super::real::init_dir(scenario, &node_dir)?;
            nodes.push((g, ordinal, name, node_dir, peer_id));
        }
    }
    super::real::seed_sybil_receipts(
        scenario,
        &nodes
            .iter()
            .map(|(g, ordinal, _, d, _)| (*g, *ordinal, d.clone()))
            .collect::<Vec<_>>(),
    )?;
    // Content: imported into its holders' stores; its id is what the others fetch.
    let mut content_ids = Vec::new();
    for (c, item) in scenario.content.iter().enumerate() {
        let mut id = None;
        for (g, _, _, node_dir, _) in &nodes {
            if item.holders.contains(g) {
                let store =
                    crate::content::ContentStore::open(node_dir.join(crate::content::CONTENT_DIR))?;
                let (content_id, _) = store
                    .import(&files[c], &mut |_| {})
                    .with_context(|| format!("cannot import {}", files[c].display()))?;
                id = Some(content_id);
            }
        }
        content_ids.push(id.context("content without a holder")?);
    }
    let bootstrap = &nodes[0];
    let mut readme = String::new();
    let _ = writeln!(
        readme,
        "tally testnet `{name}`: {peers} nodes, seed {seed}, {duration} s.\n\n\
         Each directory is one node's data directory. Copy it to the machine that will run it and\n\
         start it there with `sh start.sh`; set BOOTSTRAP_HOST to the address of the machine that\n\
         runs {boot} (the bootstrap node, which listens on UDP port {port}), and TALLY to the\n\
         tally binary if it is not on PATH. Start {boot} first. Every node listens for peers on\n\
         its own UDP port and serves its API on 127.0.0.1 on the next TCP port.\n\n\
         Start all scripts at about the same moment: the downloads each one makes are timed from\n\
         its own start, as the scenario says. Collect each node's `tally ledger export` and\n\
         `tally status --json` at the end.\n\nnode  peer id  QUIC port  behaviour\n",
        name = scenario.name,
        peers = nodes.len(),
        seed = scenario.seed,
        duration = scenario.duration_s,
        boot = bootstrap.2,
        port = BASE_PORT,
    );
    for (i, (g, ordinal, name, node_dir, peer_id)) in nodes.iter().enumerate() {
        let group = &scenario.groups[*g];
        let quic = BASE_PORT + 2 * i as u16;
        let api = quic + 1;
        let freeriding = match group.role {
            Role::Freerider | Role::Whitewasher => true,
            Role::Sybil => *ordinal != 0,
            _ => false,
        };
        let limit = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
        let mut script = String::new();
        let _ = writeln!(
            script,
            "#!/bin/sh\n# {name}: a {role} of testnet `{scenario}`.\nset -eu\n\
             here=$(cd \"$(dirname \"$0\")\" && pwd)\nTALLY=${{TALLY:-tally}}\n",
            role = group.role.name(),
            scenario = scenario.name,
        );
        if group.join_at_s > 0 {
            let _ = writeln!(script, "sleep {}  # joins late", group.join_at_s);
        }
        let mut run = format!(
            "\"$TALLY\" --data-dir \"$here\" run --listen 0.0.0.0:{quic} --api-listen 127.0.0.1:{api} --upload-limit {} --download-limit {}",
            limit(group.upload_limit),
            limit(group.download_limit),
        );
        if i != 0 {
            let _ = write!(
                run,
                " --peer {}@${{BOOTSTRAP_HOST:?set BOOTSTRAP_HOST to the bootstrap machine}}:{BASE_PORT}",
                bootstrap.4
            );
        }
        if freeriding {
            run.push_str(" --never-sign --never-upload");
        }
        let _ = writeln!(script, "{run} &\nnode=$!\nsleep 2");
        let mut wants: Vec<(u64, usize)> = scenario
            .content
            .iter()
            .enumerate()
            .filter(|(_, item)| item.wanted_by.contains(g))
            .map(|(c, item)| (item.at_s.max(group.join_at_s) - group.join_at_s, c))
            .collect();
        wants.sort();
        let mut clock = 0;
        for (at, c) in wants {
            if at > clock {
                let _ = writeln!(script, "sleep {}", at - clock);
                clock = at;
            }
            let _ = writeln!(
                script,
                "\"$TALLY\" --data-dir \"$here\" get {} --out \"$here/{}.bin\" --json &",
                content_ids[c], scenario.content[c].name
            );
        }
        if group.churn.is_some() || group.role == Role::Whitewasher {
            let _ = writeln!(
                script,
                "# {} behaviour (leaving and rejoining, or new identities) is played by the \
                 real runner only; run it by hand with `tally init --force` and restarts.",
                group.role.name()
            );
        }
        let _ = writeln!(
            script,
            "sleep {}\n\"$TALLY\" --data-dir \"$here\" status --json > \"$here/status.json\"\n\
             \"$TALLY\" --data-dir \"$here\" ledger export --json > \"$here/receipts.ndjson\" || true\n\
             kill \"$node\"; wait \"$node\" || true",
            scenario.duration_s.saturating_sub(clock)
        );
        std::fs::write(node_dir.join("start.sh"), script)?;
        let _ = writeln!(readme, "{name}  {peer_id}  {quic}  {}", group.role.name());
    }
    std::fs::write(dir.join("README.txt"), readme)?;
    Ok(nodes.len())
}
