//! `tally testnet` on real nodes: an 8-node network of about 30 seconds runs to the end and its
//! report holds every metric, computed from what the nodes did; and the simulator, run on the
//! same scenario, ranks its behaviours the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use tally_node::testnet::real::{self, Overview, RealOptions};
use tally_node::testnet::report::{GroupReport, Report};
use tally_node::testnet::scenario::Scenario;

const SMALL: &str = r#"
description = "8 nodes for 30 s: a seeder, leechers, freeriders and a late joiner"
seed = 11
duration_s = 30

[defaults]
upload_limit = "2MiB/s"
download_limit = "8MiB/s"

[[group]]
name = "seeders"
behaviour = "seeder"
count = 1

[[group]]
name = "leechers"
behaviour = "leecher"
count = 4

[[group]]
name = "freeriders"
behaviour = "freerider"
count = 2

[[group]]
name = "late"
behaviour = "late_joiner"
count = 1
join_at_s = 10

[[content]]
name = "file"
size = "8MiB"
holders = ["seeders"]
wanted_by = ["leechers", "freeriders", "late"]
spread_s = 1
"#;

#[test]
fn an_eight_node_testnet_runs_and_reports_every_metric() {
    let scenario = Scenario::parse(SMALL, Path::new("small.toml"), "small").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = RealOptions {
        out: dir.path().to_path_buf(),
        processes: None,
    };
    let overview = Arc::new(Mutex::new(Overview::default()));
    let mut phases = Vec::new();
    let report = real::run(&scenario, &options, &overview, &mut |p| {
        if phases.last() != Some(&p.phase) {
            phases.push(p.phase);
        }
    })
    .unwrap();
    println!("{}", report.summary());
    assert_eq!(
        phases,
        ["starting", "running", "converging", "measuring", "done"]
    );

    // Every metric is in the JSON, as a number or as null.
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "jain_fairness",
        "freerider_slowdown",
        "sybil_relative_gain",
        "whitewash_gain",
        "newcomer_first_mib_s",
        "gossip_convergence_s",
        "overhead_ratio",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from report.json");
    }
    for (name, group) in json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (&g[0], &g[1]))
    {
        for key in [
            "median_completion_s",
            "p90_completion_s",
            "mean_download_rate",
            "share_ratio",
            "mean_standing",
        ] {
            assert!(group.get(key).is_some(), "{name}: {key} missing");
        }
    }
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.peers, 8);
    assert!(dir.path().join("report.html").exists());

    // What the nodes did: the contributors finished and uploaded, the freeriders uploaded
    // nothing, the seeder gave its file, the newcomer got its first MiB.
    let group = |name: &str| &report.groups.iter().find(|(n, _)| n == name).unwrap().1;
    let leechers = group("leechers");
    assert_eq!(leechers.completed, 4, "{}", report.summary());
    assert!(leechers.median_completion_s.is_some());
    assert!(
        leechers.bytes_up > 0,
        "leechers trade chunks among themselves"
    );
    assert_eq!(group("freeriders").bytes_up, 0);
    assert!(group("seeders").bytes_up >= 8 << 20);
    assert_eq!(group("late").downloads, 1);
    assert!(report.newcomer_first_mib_s.is_some());
    assert!(report.jain_fairness.is_some_and(|j| j > 0.0 && j <= 1.0));
    assert!(report.overhead_ratio.is_some_and(|o| o > 0.0 && o < 1.0));
    assert!(
        report.gossip_convergence_s.is_some(),
        "gossip converged within the grace period"
    );
    // No sybil clique or whitewasher here: those metrics cannot be produced, so they are null.
    assert!(json["sybil_relative_gain"].is_null());
    assert!(json["whitewash_gain"].is_null());
    // The seeder's standing at the contributors is above the freeriders'.
    let seeders = group("seeders").mean_standing.unwrap();
    let freeriders = group("freeriders").mean_standing.unwrap();
    assert!(seeders > freeriders, "{seeders} vs {freeriders}");
    // The overview listed every node with its dashboard.
    let overview = overview.lock().unwrap();
    assert_eq!(overview.nodes.len(), 8);
    assert!(overview.nodes.iter().all(|n| n.dashboard.is_some()));

    // The simulator ranks the behaviours as the real nodes did.
    let simulated = tally_node::testnet::sim::simulate(&scenario, &mut |_| {});
    println!("simulated:\n{}", simulated.summary());
    let rate = |g: &GroupReport| g.mean_download_rate;
    let standing = |g: &GroupReport| g.mean_standing;
    // Here the newcomer, arriving when many hold the file, is clearly the fastest; leechers and
    // freeriders are close (upload is not scarce in this small network, so the scheduler's
    // floor slice never binds: scenarios/freeriders.toml is where it does).
    let compared = same_ranking(&report, &simulated, "mean_download_rate", rate);
    assert!(
        !compared.is_empty(),
        "the simulation separates no two groups"
    );
    let compared = same_ranking(&report, &simulated, "mean_standing", standing);
    assert!(
        compared.contains(&("seeders".to_owned(), "freeriders".to_owned())),
        "{compared:?}"
    );
}

/// Checks that `real` orders every two groups as `simulated` does by `metric`, for the pairs the
/// simulation separates clearly (one at least 25% above the other: closer pairs are within a
/// run's noise and may come out either way), and returns those pairs, higher first.
fn same_ranking(
    real: &Report,
    simulated: &Report,
    name: &str,
    metric: impl Fn(&GroupReport) -> Option<f64>,
) -> Vec<(String, String)> {
    let mut compared = Vec::new();
    for (a, sim_a) in &simulated.groups {
        for (b, sim_b) in &simulated.groups {
            let (Some(x), Some(y)) = (metric(sim_a), metric(sim_b)) else {
                continue;
            };
            if !(x > 0.0 && x >= 1.25 * y) {
                continue;
            }
            let real_of = |n: &str| {
                let group = &real.groups.iter().find(|(g, _)| g == n).unwrap().1;
                metric(group).unwrap_or(0.0)
            };
            assert!(
                real_of(a) > real_of(b),
                "{name}: the simulation ranks {a} ({x:.3}) above {b} ({y:.3}), the real run does not ({:.3} vs {:.3})",
                real_of(a),
                real_of(b)
            );
            compared.push((a.clone(), b.clone()));
        }
    }
    compared
}
