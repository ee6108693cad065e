//! The simulator on the shipped scenarios: reproducible, complete, and with the orderings the
//! issue asks for where tally's rules give them (see docs/SIMULATION.md for those they miss).

use std::path::PathBuf;

use super::engine::gossip_rounds;
use super::{ChunkPick, SimOptions, simulate, simulate_with};
use crate::testnet::report::Report;
use crate::testnet::scenario::{Role, Scenario};

const SHIPPED: [&str; 7] = [
    "baseline",
    "freeriders",
    "sybil",
    "sybil-star",
    "whitewash",
    "churn",
    "market",
];

const RANDOM: SimOptions = SimOptions {
    chunk_pick: ChunkPick::Random,
};

fn shipped(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap()
}

fn run(scenario: &Scenario, options: SimOptions) -> Report {
    simulate_with(scenario, options, &mut |_| {})
}

fn group<'a>(report: &'a Report, name: &str) -> &'a crate::testnet::report::GroupReport {
    &report.groups.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn the_same_scenario_gives_the_same_report() {
    for name in SHIPPED {
        let scenario = shipped(name);
        for options in [SimOptions::default(), RANDOM] {
            let a = serde_json::to_string(&run(&scenario, options)).unwrap();
            let b = serde_json::to_string(&run(&scenario, options)).unwrap();
            assert_eq!(a, b, "{name} {options:?}");
        }
    }
}

#[test]
fn another_seed_gives_another_run() {
    let mut scenario = shipped("freeriders");
    let a = run(&scenario, RANDOM);
    scenario.seed += 1;
    let b = run(&scenario, RANDOM);
    assert_ne!(a.observations.downloads, b.observations.downloads);
}

#[test]
fn progress_reaches_the_end() {
    let scenario = shipped("baseline");
    let mut seen = Vec::new();
    simulate(&scenario, &mut |p| seen.push(p));
    assert!(seen.len() >= 50, "{} progress calls", seen.len());
    assert!(
        seen.windows(2)
            .all(|w| w[0].simulated_s <= w[1].simulated_s)
    );
    let last = seen.last().unwrap();
    assert_eq!(last.simulated_s, last.total_s);
    assert_eq!(last.total_s, 60.0);
}

#[test]
fn every_shipped_scenario_runs_and_accounts_for_its_bytes() {
    for name in SHIPPED {
        let scenario = shipped(name);
        for options in [SimOptions::default(), RANDOM] {
            let report = run(&scenario, options);
            let obs = &report.observations;
            assert_eq!(report.peers, scenario.peers(), "{name}");
            assert!(obs.payload_bytes > 0, "{name}: nothing moved");
            let up: u64 = obs.peers.iter().map(|p| p.bytes_up).sum();
            let down: u64 = obs.peers.iter().map(|p| p.bytes_down).sum();
            // Sent counts a chunk when it leaves; the last ones may still be on their way.
            assert_eq!(up, obs.payload_bytes, "{name}");
            assert!(
                down <= up && up - down <= 64 << 20,
                "{name}: {down} of {up}"
            );
            for d in &obs.downloads {
                let size = scenario.content[d.content].size;
                assert!(d.bytes <= size, "{name}");
                assert!(d.started_s <= scenario.duration_s as f64);
                if let Some(done) = d.completed_s {
                    assert_eq!(d.bytes, size, "{name}");
                    assert!(done >= d.started_s && done <= scenario.duration_s as f64);
                    assert!(d.first_mib_s.is_some_and(|t| t <= done));
                }
            }
            // Peers that never upload uploaded nothing.
            for p in &obs.peers {
                let role = scenario.groups[p.group].role;
                if matches!(role, Role::Freerider | Role::Whitewasher) {
                    assert_eq!(p.bytes_up, 0, "{name}: a {role:?} uploaded");
                }
            }
            assert!(report.gossip_convergence_s.is_some(), "{name}");
            assert!(report.overhead_ratio.is_some_and(|r| r > 0.0 && r < 0.05));
        }
    }
}

#[test]
fn freeriders_take_at_most_the_strangers_allowance_of_each_uploader() {
    // Peers that never sign share one allowance at each uploader: its capacity (the scenario's
    // window floor) and one share beyond, per write-off delay, all of them together.
    let scenario = shipped("freeriders");
    let floor = scenario.credit_window.unwrap();
    let limit = floor + crate::daemon::stranger_share(floor);
    let periods = scenario.duration_s / crate::config::DEFAULT_STRANGER_WRITE_OFF_S + 1;
    for options in [SimOptions::default(), RANDOM] {
        let report = run(&scenario, options);
        let uploaders = scenario
            .groups
            .iter()
            .filter(|g| g.role.uploads())
            .map(|g| u64::from(g.count))
            .sum::<u64>();
        let freeriders = group(&report, "freeriders");
        assert!(freeriders.bytes_down > 0);
        assert!(freeriders.bytes_down <= uploaders * limit * periods);
        assert_eq!(freeriders.share_ratio, Some(0.0));
    }
}

#[test]
fn whitewashers_take_a_new_identity_per_download() {
    let scenario = shipped("whitewash");
    let report = run(&scenario, RANDOM);
    let whitewashers = group(&report, "whitewashers");
    // Two machines, a first identity each and one more per completed download.
    assert_eq!(whitewashers.peers, 2 + whitewashers.completed);
    let obs = &report.observations;
    let mut by_peer = std::collections::BTreeMap::new();
    for d in &obs.downloads {
        if obs.peers[d.peer].group == scenario.group("whitewashers").unwrap() {
            *by_peer.entry(d.peer).or_insert(0) += 1;
            assert!(
                d.newcomer,
                "a whitewasher's download starts as a newcomer's"
            );
        }
    }
    assert!(by_peer.len() >= 3, "{by_peer:?}");
}

#[test]
fn late_joiners_start_when_they_join() {
    let scenario = shipped("baseline");
    let report = run(&scenario, RANDOM);
    let obs = &report.observations;
    let late = scenario.group("newcomers").unwrap();
    let theirs: Vec<_> = obs
        .downloads
        .iter()
        .filter(|d| obs.peers[d.peer].group == late)
        .collect();
    assert_eq!(theirs.len(), 2);
    for d in theirs {
        assert!(d.started_s >= 20.0);
        assert!(
            d.completed_s.is_some(),
            "a late joiner did not finish: {d:?}"
        );
    }
}

#[test]
fn gossip_rounds_follow_the_propagation_bench() {
    // docs/PERFORMANCE.md: rounds to 100%, median to max: 3–4 at N = 10, 4–5 at 30, 6–7 at
    // 100, 8–9 at 1,000.
    assert_eq!(gossip_rounds(10), 4);
    assert_eq!(gossip_rounds(30), 5);
    assert_eq!(gossip_rounds(100), 6);
    assert_eq!(gossip_rounds(1000), 8);
}

/// The targets that tally's rules meet in the model: newcomers get a first MiB within
/// 10 s, and equal leechers are served fairly. With the node's chunk pick and with a random one.
#[test]
fn newcomers_are_served_fast_and_equal_leechers_fairly() {
    for name in SHIPPED {
        let scenario = shipped(name);
        for options in [SimOptions::default(), RANDOM] {
            let report = run(&scenario, options);
            if let Some(first) = report.newcomer_first_mib_s {
                assert!(first <= 10.0, "{name} {options:?}: first MiB in {first} s");
            }
            if let Some(jain) = report.jain_fairness {
                assert!(jain >= 0.9, "{name} {options:?}: Jain {jain}");
            }
        }
    }
}

/// Whitewashing does not pay when downloaders exchange chunks (random pick).
#[test]
fn whitewashing_does_not_pay_with_chunk_exchange() {
    let report = run(&shipped("whitewash"), RANDOM);
    let gain = report.whitewash_gain.unwrap();
    assert!(gain <= 1.0, "whitewash gain {gain}");
}

// The targets on the shipped scenarios. One the model still misses is `#[ignore]`d,
// with why in docs/SIMULATION.md ("Findings"); `--ignored` shows where it stands.

#[test]
fn target_freeriders_are_three_times_slower() {
    for options in [SimOptions::default(), RANDOM] {
        let report = run(&shipped("freeriders"), options);
        let slowdown = report
            .freerider_slowdown
            .or(report.freerider_slowdown_at_least);
        assert!(
            slowdown.is_some_and(|s| s >= 3.0),
            "{options:?}: {slowdown:?}"
        );
    }
}

#[test]
fn target_sybil_gain_is_at_most_five_percent() {
    for options in [SimOptions::default(), RANDOM] {
        let report = run(&shipped("sybil"), options);
        let gain = report.sybil_relative_gain;
        assert!(gain.is_some_and(|g| g <= 0.05), "{options:?}: {gain:?}");
    }
}

/// The same target against one-way claims, which netting does not cancel: the residual
/// `endorse / (1 − endorse)` of the standing walk.
#[test]
#[ignore = "real nodes miss it (0.998, the rule's bound); the simulator passes for a reason of its own: docs/SIMULATION.md, Findings, item 3"]
fn target_one_way_sybil_gain_is_at_most_five_percent() {
    for options in [SimOptions::default(), RANDOM] {
        let report = run(&shipped("sybil-star"), options);
        let gain = report.sybil_relative_gain;
        assert!(gain.is_some_and(|g| g <= 0.05), "{options:?}: {gain:?}");
    }
}

#[test]
fn target_whitewashing_does_not_pay_with_the_nodes_chunk_pick() {
    let report = run(&shipped("whitewash"), SimOptions::default());
    let gain = report.whitewash_gain;
    assert!(gain.is_some_and(|g| g <= 1.0), "{gain:?}");
}

/// Prints every shipped scenario's summary with both chunk picks (for docs/SIMULATION.md).
#[test]
#[ignore = "prints the tables of docs/SIMULATION.md"]
fn print_summaries() {
    for name in SHIPPED {
        for options in [SimOptions::default(), RANDOM] {
            let report = run(&shipped(name), options);
            println!("== {name} {options:?}\n{}", report.summary());
        }
    }
}
