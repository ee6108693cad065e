//! `tally testnet`: whole networks for economic experiments, from a scenario file.
//!
//! - [`scenario`]: the scenario file, parsed and checked before anything starts.
//! - [`report`]: what a run saw ([`report::Observations`]) turned into `report.json`,
//!   `report.html` and a summary table; the same for real and simulated runs.
//! - [`real`]: the scenario on real nodes, in this process or as `tally` processes, driven
//!   through their HTTP APIs.
//! - [`emit`]: each node's data directory and start script, for a testnet across machines.
//! - [`overview`]: the page that links every node's dashboard while a run goes.
//! - [`sim`]: `--simulate`: the scenario on simulated time and links, over the market's and the
//!   ledger's pure code.
//!
//! It must not reach into the daemon's internals beyond what a node's owner could see: the
//! real runner drives nodes through their APIs, the simulator drives the pure ledger and market
//! code on simulated time.

pub mod emit;
pub mod overview;
pub mod real;
pub mod report;
pub mod scenario;
pub mod sim;

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::Status;
use crate::cli::TestnetArgs;

/// Runs `tally testnet`.
pub fn command(
    args: &TestnetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Status> {
    let scenario = scenario::Scenario::load(&args.scenario)?;
    if let Some(dir) = &args.emit_configs {
        let written = emit::emit(&scenario, dir)?;
        writeln!(
            out,
            "wrote {} nodes into {}; {} says how to start them",
            written,
            dir.display(),
            dir.join("README.txt").display()
        )?;
        return Ok(Status::Success);
    }
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("testnet-runs").join(&scenario.name));
    if out_dir.join("nodes").exists() {
        std::fs::remove_dir_all(out_dir.join("nodes"))
            .with_context(|| format!("cannot clear the earlier run in {}", out_dir.display()))?;
    }
    if args.simulate {
        let mut shown = 0.0f64;
        let report = sim::simulate(&scenario, &mut |p: sim::SimProgress| {
            if p.simulated_s - shown >= p.total_s / 10.0 || p.simulated_s >= p.total_s {
                let _ = writeln!(err, "[simulating] {:.0}/{:.0} s", p.simulated_s, p.total_s);
                shown = p.simulated_s;
            }
        });
        report
            .write(&out_dir)
            .with_context(|| format!("cannot write the report into {}", out_dir.display()))?;
        return print_report(&report, &out_dir, args.json, out);
    }
    let processes = if args.processes {
        Some(std::env::current_exe().context("cannot find the tally binary to start nodes")?)
    } else {
        None
    };
    let options = real::RealOptions {
        out: out_dir.clone(),
        processes,
    };
    let overview = Arc::new(Mutex::new(real::Overview::default()));
    let page = overview::serve(Arc::clone(&overview), &scenario.name)
        .context("cannot serve the overview page")?;
    writeln!(
        err,
        "{}: {} peers for {} s; overview at http://{}/",
        scenario.name,
        scenario.peers(),
        scenario.duration_s,
        page.addr()
    )?;
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = 0.0f64;
    let mut progress = |p: &real::Progress| {
        let line = format!(
            "[{}] {:>4.0}/{} s, {}/{} downloads done, {} nodes running",
            p.phase, p.elapsed_s, p.duration_s, p.completed, p.downloads, p.running
        );
        // A terminal gets one line redrawn; a log gets a line every 10 s and at each phase.
        if terminal {
            let _ = write!(err, "\r{line:<78}");
            let _ = err.flush();
        } else if p.elapsed_s - last_line >= 10.0 || p.phase != "running" {
            let _ = writeln!(err, "{line}");
            last_line = p.elapsed_s;
        }
    };
    let report = real::run(&scenario, &options, &overview, &mut progress);
    if terminal {
        writeln!(err)?;
    }
    page.stop();
    print_report(&report?, &out_dir, args.json, out)
}

fn print_report(
    report: &report::Report,
    out_dir: &std::path::Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.summary())?;
        writeln!(
            out,
            "report: {} and {}",
            out_dir.join("report.json").display(),
            out_dir.join("report.html").display()
        )?;
    }
    Ok(Status::Success)
}
