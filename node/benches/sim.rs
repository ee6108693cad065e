//! The simulator at scale: a 10,000-peer network for one simulated hour (1% seeders, 69%
//! leechers, 20% freeriders, 5% whitewashers, 5% late joiners; four 64 MiB releases at
//! staggered times), timed on this machine. Prints the peers, the simulated and wall seconds,
//! and the report's summary.
//!
//! ```sh
//! cargo bench -p tally-node --bench sim
//! TALLY_BENCH_PEERS=1000 cargo bench -p tally-node --bench sim   # a smaller network
//! ```

use std::path::Path;
use std::time::Instant;

use tally_node::testnet::scenario::Scenario;
use tally_node::testnet::sim::{SimProgress, simulate};

/// The scenario for `peers` peers (at least 100).
fn scenario(peers: u32) -> String {
    let part = |percent: u32| (peers * percent / 100).max(1);
    let seeders = part(1);
    let freeriders = part(20);
    let whitewashers = part(5);
    let late = part(5);
    let leechers = peers - seeders - freeriders - whitewashers - late;
    let mut text = format!(
        r#"
description = "{peers} peers, one simulated hour: seeders, leechers, freeriders, whitewashers, late joiners"
seed = 7
duration_s = 3600

[defaults]
upload_limit = "2MiB/s"
download_limit = "8MiB/s"

[[group]]
name = "seeders"
behaviour = "seeder"
count = {seeders}

[[group]]
name = "leechers"
behaviour = "leecher"
count = {leechers}

[[group]]
name = "freeriders"
behaviour = "freerider"
count = {freeriders}

[[group]]
name = "whitewashers"
behaviour = "whitewasher"
count = {whitewashers}

[[group]]
name = "newcomers"
behaviour = "late_joiner"
count = {late}
join_at_s = 1200
"#
    );
    for (i, at) in [0, 600, 1200, 1800].into_iter().enumerate() {
        text.push_str(&format!(
            r#"
[[content]]
name = "release{i}"
size = "64MiB"
holders = ["seeders"]
wanted_by = ["leechers", "freeriders", "whitewashers", "newcomers"]
at_s = {at}
spread_s = 300
"#
        ));
    }
    text
}

fn main() {
    let peers: u32 = std::env::var("TALLY_BENCH_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .max(100);
    let text = scenario(peers);
    let scenario = match Scenario::parse(&text, Path::new("bench.toml"), "bench") {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("the bench's scenario is refused: {error}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let mut last = 0u64;
    let report = simulate(&scenario, &mut |p: SimProgress| {
        let percent = (p.simulated_s / p.total_s * 100.0) as u64;
        if percent >= last + 10 {
            last = percent;
            eprintln!(
                "  {percent:>3}% simulated ({:.0} s) after {:.1} s",
                p.simulated_s,
                started.elapsed().as_secs_f64()
            );
        }
    });
    let wall = started.elapsed().as_secs_f64();
    println!(
        "peers {}  simulated {} s  wall {wall:.1} s  ({:.0} simulated s per wall s)",
        scenario.peers(),
        scenario.duration_s,
        scenario.duration_s as f64 / wall
    );
    println!(
        "identities {}  downloads {}  payload {:.1} GiB",
        report.observations.peers.len(),
        report.observations.downloads.len(),
        report.observations.payload_bytes as f64 / f64::from(1 << 30)
    );
    println!("{}", report.summary());
}
