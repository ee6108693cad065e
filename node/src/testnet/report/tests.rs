#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

const SCENARIO: &str = r#"
seed = 1
duration_s = 100
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
[[content]]
name = "a"
size = "4MiB"
holders = ["seeders"]
wanted_by = ["leechers", "freeriders"]
"#;

fn scenario() -> Scenario {
    Scenario::parse(SCENARIO, Path::new("t.toml"), "t").unwrap()
}

fn download(peer: usize, completed: Option<f64>) -> DownloadObs {
    DownloadObs {
        peer,
        content: 0,
        started_s: 0.0,
        first_mib_s: Some(1.0),
        completed_s: completed,
        bytes: if completed.is_some() {
            4 << 20
        } else {
            1 << 20
        },
        newcomer: true,
    }
}

fn observations(freerider_done: [Option<f64>; 2]) -> Observations {
    let mut peers = vec![PeerObs {
        group: 0,
        bytes_up: 24 << 20,
        bytes_down: 0,
    }];
    peers.extend((0..4).map(|_| PeerObs {
        group: 1,
        bytes_up: 4 << 20,
        bytes_down: 4 << 20,
    }));
    peers.extend((0..2).map(|_| PeerObs {
        group: 2,
        bytes_up: 0,
        bytes_down: 4 << 20,
    }));
    let mut downloads: Vec<DownloadObs> = [10.0, 10.0, 20.0, 40.0]
        .iter()
        .enumerate()
        .map(|(i, t)| download(1 + i, Some(*t)))
        .collect();
    downloads.push(download(5, freerider_done[0]));
    downloads.push(download(6, freerider_done[1]));
    Observations {
        peers,
        downloads,
        payload_bytes: 25_000_000,
        control_bytes: Some(250_000),
        ..Observations::default()
    }
}

#[test]
fn medians_and_slowdown_follow_the_definitions() {
    let report = Report::new(
        &scenario(),
        Mode::Simulated,
        observations([Some(60.0), Some(90.0)]),
        100.0,
    );
    let leechers = &report.groups[1].1;
    assert_eq!(
        leechers.median_completion_s,
        Some(10.0),
        "nearest rank 2 of 4"
    );
    assert_eq!(leechers.p90_completion_s, Some(40.0));
    assert_eq!(leechers.share_ratio, Some(1.0));
    assert_eq!(
        report.groups[0].1.share_ratio, None,
        "seeders download nothing"
    );
    assert_eq!(report.freerider_slowdown, Some(6.0));
    assert_eq!(report.freerider_slowdown_at_least, None);
    assert_eq!(report.overhead_ratio, Some(0.01));
    assert_eq!(
        report.sybil_relative_gain, None,
        "no clique in this scenario"
    );
    assert_eq!(report.whitewash_gain, None);
    assert_eq!(report.gossip_convergence_s, None);
    assert_eq!(report.newcomer_first_mib_s, Some(1.0));
    let jain = report.jain_fairness.unwrap();
    assert!(jain > 0.5 && jain < 1.0, "{jain}");
}

#[test]
fn an_unknown_median_is_null_and_the_slowdown_a_bound() {
    let report = Report::new(&scenario(), Mode::Real, observations([None, None]), 100.0);
    let freeriders = &report.groups[2].1;
    assert_eq!(freeriders.completed, 0);
    assert_eq!(freeriders.median_completion_s, None);
    assert_eq!(report.freerider_slowdown, None);
    assert_eq!(report.freerider_slowdown_at_least, Some(10.0));
    // One of two finished: the median (rank 1) is known.
    let report = Report::new(
        &scenario(),
        Mode::Real,
        observations([Some(30.0), None]),
        100.0,
    );
    assert_eq!(report.freerider_slowdown, Some(3.0));
}

#[test]
fn jain_is_one_for_equal_rates_and_falls_with_spread() {
    assert_eq!(jain(&[5.0, 5.0, 5.0]), Some(1.0));
    assert_eq!(jain(&[1.0, 0.0]), Some(0.5));
    assert_eq!(jain(&[3.0]), None);
}

#[test]
fn the_report_writes_json_that_reads_back_and_html_with_charts() {
    let report = Report::new(
        &scenario(),
        Mode::Simulated,
        observations([Some(60.0), Some(90.0)]),
        100.0,
    );
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "jain_fairness",
        "freerider_slowdown",
        "sybil_relative_gain",
        "whitewash_gain",
        "newcomer_first_mib_s",
        "gossip_convergence_s",
        "overhead_ratio",
    ] {
        assert!(value.get(key).is_some(), "{key} missing");
    }
    assert!(value["sybil_relative_gain"].is_null());
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("freeriders"));
    assert!(!html.contains("http://") || html.contains("http://www.w3.org/2000/svg"));
    assert!(report.summary().contains("freerider_slowdown"));
}
