#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const GOOD: &str = r#"
description = "two seeders, leechers and freeriders"
seed = 7
duration_s = 60

[defaults]
upload_limit = "2MiB/s"
download_limit = "unlimited"

[[group]]
name = "seeders"
behaviour = "seeder"
count = 2
upload_limit = "4MiB/s"

[[group]]
name = "leechers"
behaviour = "leecher"
count = 5

[[group]]
name = "late"
behaviour = "late_joiner"
count = 1
join_at_s = 20

[[group]]
name = "churn"
behaviour = "churner"
count = 1
online_s = 10
offline_s = 5

[[group]]
name = "clique"
behaviour = "sybil"
count = 3
claim = "10GiB"

[[content]]
name = "movie"
size = "32MiB"
holders = ["seeders"]
wanted_by = ["leechers", "late", "churn", "clique"]
spread_s = 5

[[order]]
group = "seeders"
side = "offer"
bytes = "64MiB"
price_per_gib = 500
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, Path::new("scenarios/x.toml"), "x")
}

fn error(text: &str) -> ScenarioError {
    parse(text).expect_err("the scenario should be refused")
}

#[test]
fn a_good_scenario_resolves_names_units_and_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.name, "x");
    assert_eq!(s.network, "testnet-x");
    assert_eq!(s.peers(), 12);
    assert_eq!(s.groups[0].upload_limit, Some(4 << 20));
    assert_eq!(s.groups[1].upload_limit, Some(2 << 20), "from [defaults]");
    assert_eq!(s.groups[1].download_limit, None, "unlimited");
    assert_eq!(s.groups[2].join_at_s, 20);
    assert_eq!(
        s.groups[3].churn,
        Some(Churn {
            online_s: 10,
            offline_s: 5
        })
    );
    assert_eq!(s.groups[4].sybil_claim, Some(10 << 30));
    assert_eq!(s.content[0].size, 32 << 20);
    assert_eq!(s.content[0].holders, vec![0]);
    assert_eq!(s.content[0].wanted_by, vec![1, 2, 3, 4]);
    assert_eq!(s.orders[0].bytes, 64 << 20);
    assert_eq!(s.orders[0].ttl_s, 3600);
}

#[test]
fn a_misspelt_key_is_named_with_its_line() {
    let text = GOOD.replace("count = 5", "cuont = 5");
    let e = error(&text);
    let line = text.lines().position(|l| l.contains("cuont")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.message.contains("cuont"), "{e}");
    assert!(e.to_string().starts_with("scenarios/x.toml:"), "{e}");
}

#[test]
fn a_bad_value_is_refused_with_its_line() {
    let text = GOOD.replace("size = \"32MiB\"", "size = \"32 parsecs\"");
    let e = error(&text);
    let line = text.lines().position(|l| l.contains("parsecs")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.message.contains("is not a size"), "{e}");
    let e = error(&GOOD.replace("behaviour = \"leecher\"", "behaviour = \"lurker\""));
    assert!(e.message.contains("lurker"), "{e}");
}

#[test]
fn an_unknown_group_is_named_with_its_key_and_line() {
    let text = GOOD.replace("\"late\", \"churn\"", "\"late\", \"churners\"");
    let e = error(&text);
    assert_eq!(e.key, "content[0].wanted_by[2]");
    assert!(e.message.contains("`churners`"), "{e}");
    let line = text.lines().position(|l| l.contains("churners")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
}

#[test]
fn senseless_settings_are_refused_before_anything_starts() {
    let cases = [
        ("duration_s = 60", "duration_s = 0", "duration_s"),
        ("count = 5", "count = 0", "group[1].count"),
        ("join_at_s = 20", "join_at_s = 600", "group[2].join_at_s"),
        ("online_s = 10\n", "", "group[3]"),
        ("count = 3\n", "count = 1\n", "group[4].count"),
        ("name = \"late\"", "name = \"leechers\"", "group[2].name"),
        (
            "wanted_by = [\"leechers\"",
            "wanted_by = [\"seeders\", \"leechers\"",
            "content[0].wanted_by[0]",
        ),
        (
            "group = \"seeders\"",
            "group = \"nobody\"",
            "order[0].group",
        ),
        (
            "seed = 7",
            "seed = 7\ncredit_window = \"64KiB\"",
            "credit_window",
        ),
        (
            "upload_limit = \"4MiB/s\"",
            "upload_limit = \"4MiB/s\"\njoin_at_s = 3",
            "group[0].join_at_s",
        ),
    ];
    for (from, to, key) in cases {
        assert!(GOOD.contains(from), "{from}");
        let e = error(&GOOD.replacen(from, to, 1));
        assert_eq!(e.key, key, "{from} → {to}: {e}");
        assert!(e.line.is_some() || key.is_empty(), "{e}");
    }
    let e = error("seed = 1\nduration_s = 10\n");
    assert!(e.message.contains("[[group]]"), "{e}");
}

#[test]
fn a_missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let e = Scenario::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn the_shipped_scenarios_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 6, "{seen} scenarios in {}", dir.display());
}
