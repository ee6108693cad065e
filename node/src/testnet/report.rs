//! What a testnet reports: [`Observations`] (what a run saw, gathered the same way by the real
//! runner and the simulator) turned into a [`Report`] — per-group download times, rates, share
//! ratios and standing, and the network-wide metrics — written as `report.json`, a
//! self-contained `report.html` with SVG charts, and a summary table.
//!
//! A metric the run cannot produce is `null`, never estimated. Medians and percentiles count a
//! download that did not finish as slower than every one that did: the median is known when at
//! least half finished, the 90th percentile when nine in ten did; else `null`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::scenario::{Role, Scenario};

/// How the run was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Real nodes on this machine.
    Real,
    /// Simulated time and links.
    Simulated,
}

/// One peer as the run saw it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PeerObs {
    /// Its group (index into the scenario's groups).
    pub group: usize,
    /// Payload bytes it uploaded.
    pub bytes_up: u64,
    /// Payload bytes it downloaded.
    pub bytes_down: u64,
}

/// One download.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DownloadObs {
    /// The downloading peer (index into [`Observations::peers`]).
    pub peer: usize,
    /// The content (index into the scenario's content).
    pub content: usize,
    /// When it started, seconds into the run.
    pub started_s: f64,
    /// When its first MiB (or all of it, if smaller) had arrived, if it did.
    pub first_mib_s: Option<f64>,
    /// When it completed, if it did.
    pub completed_s: Option<f64>,
    /// Bytes it had at the end (or at completion).
    pub bytes: u64,
    /// Whether the peer had no standing anywhere when it started (a new identity).
    pub newcomer: bool,
}

/// At the end of the run, how one honest peer saw another.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StandingObs {
    /// The observing peer.
    pub observer: usize,
    /// The peer observed.
    pub subject: usize,
    /// Its standing score in [0, 1).
    pub score: f64,
}

/// At the end of the run, what a sybil clique drew at one honest peer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SybilObs {
    /// The observing peer.
    pub observer: usize,
    /// The clique's summed standing there, in credits (each identity's raw standing, when
    /// positive).
    pub clique_raw: f64,
    /// The standing, in credits, the clique's gateway would have there from its real uploads
    /// alone: the same graph without the receipts the clique signed among itself.
    pub edge_raw: f64,
}

/// Cumulative bytes downloaded by each group at one moment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds into the run.
    pub t_s: f64,
    /// Per group, bytes downloaded so far.
    pub bytes_down: Vec<u64>,
}

/// Everything a run saw that the report is computed from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observations {
    /// Peers, in the order the run numbered them (every identity of a whitewasher is one peer).
    pub peers: Vec<PeerObs>,
    /// Downloads.
    pub downloads: Vec<DownloadObs>,
    /// Standing, as honest peers saw the others at the end.
    pub standing: Vec<StandingObs>,
    /// What the sybil clique drew, per honest observer.
    pub sybil: Vec<SybilObs>,
    /// Seconds from the last new receipt until every online node held the same receipts.
    pub gossip_convergence_s: Option<f64>,
    /// Gossip and receipt bytes sent, all nodes together.
    pub control_bytes: Option<u64>,
    /// Payload bytes sent, all nodes together.
    pub payload_bytes: u64,
    /// Bytes downloaded per group over time.
    pub series: Vec<SeriesPoint>,
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Its behaviour.
    pub behaviour: Role,
    /// Peers (identities, for whitewashers).
    pub peers: usize,
    /// Downloads started.
    pub downloads: usize,
    /// Downloads completed.
    pub completed: usize,
    /// Median seconds from start to completion; `null` unless half completed.
    pub median_completion_s: Option<f64>,
    /// 90th percentile of the same; `null` unless nine in ten completed.
    pub p90_completion_s: Option<f64>,
    /// Mean over its downloads of bytes received ÷ seconds spent (to completion or the end),
    /// bytes per second; `null` without downloads.
    pub mean_download_rate: Option<f64>,
    /// Bytes uploaded ÷ bytes downloaded; `null` if it downloaded nothing.
    pub share_ratio: Option<f64>,
    /// Mean standing of its peers at the honest peers at the end; `null` if none was observed.
    pub mean_standing: Option<f64>,
    /// Payload bytes it uploaded.
    pub bytes_up: u64,
    /// Payload bytes it downloaded.
    pub bytes_down: u64,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Real or simulated.
    pub mode: Mode,
    /// The seed.
    pub seed: u64,
    /// The scenario's duration, seconds.
    pub duration_s: u64,
    /// Peers at the start.
    pub peers: u64,
    /// Per group, in the scenario's order.
    pub groups: Vec<(String, GroupReport)>,
    /// Jain's fairness index of download rates among the largest set of leechers sharing one
    /// upload limit (at least two); `null` if there is none.
    pub jain_fairness: Option<f64>,
    /// Freeriders' median completion ÷ leechers'; `null` unless both medians are known.
    pub freerider_slowdown: Option<f64>,
    /// When freeriders' median is unknown (fewer than half finished): the least the slowdown
    /// can be, from the time their unfinished downloads had at the end.
    pub freerider_slowdown_at_least: Option<f64>,
    /// Σ over honest peers of the clique's standing ÷ Σ of what its gateway's real uploads
    /// earn, minus 1: 0 means the clique gained nothing by its fake receipts.
    pub sybil_relative_gain: Option<f64>,
    /// Freeriders' median completion ÷ whitewashers': above 1, whitewashing paid.
    pub whitewash_gain: Option<f64>,
    /// Median seconds for a new identity's download to get its first MiB.
    pub newcomer_first_mib_s: Option<f64>,
    /// Seconds from the last new receipt until every online node held the same receipts.
    pub gossip_convergence_s: Option<f64>,
    /// Gossip and receipt bytes per payload byte.
    pub overhead_ratio: Option<f64>,
    /// What the run saw, for charts and further analysis.
    pub observations: Observations,
}

/// The `q`-quantile (0 < q ≤ 1, nearest rank) of `n` values of which `known` are given
/// (sorted ascending) and the rest are larger than all of them; `None` if it falls among the
/// unknown ones.
fn quantile(known: &[f64], n: usize, q: f64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    known.get(rank - 1).copied()
}

fn median_of(mut known: Vec<f64>, n: usize) -> Option<f64> {
    known.sort_by(f64::total_cmp);
    quantile(&known, n, 0.5)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Jain's fairness index (Σx)² / (n·Σx²).
pub fn jain(values: &[f64]) -> Option<f64> {
    let n = values.len();
    let sum: f64 = values.iter().sum();
    let squares: f64 = values.iter().map(|v| v * v).sum();
    (n >= 2 && squares > 0.0).then(|| sum * sum / (n as f64 * squares))
}

impl Report {
    /// Computes the report of `scenario` from what a run saw, `end_s` seconds into it.
    pub fn new(scenario: &Scenario, mode: Mode, observations: Observations, end_s: f64) -> Self {
        let obs = &observations;
        let groups_of = |role: Role| -> Vec<usize> {
            (0..scenario.groups.len())
                .filter(|&g| scenario.groups[g].role == role)
                .collect()
        };
        let downloads_of = |groups: &[usize]| -> Vec<&DownloadObs> {
            obs.downloads
                .iter()
                .filter(|d| {
                    obs.peers
                        .get(d.peer)
                        .is_some_and(|p| groups.contains(&p.group))
                })
                .collect()
        };
        let completion = |downloads: &[&DownloadObs]| {
            let known: Vec<f64> = downloads
                .iter()
                .filter_map(|d| d.completed_s.map(|c| c - d.started_s))
                .collect();
            (known, downloads.len())
        };
        let median_completion = |groups: &[usize]| {
            let downloads = downloads_of(groups);
            let (known, n) = completion(&downloads);
            median_of(known, n)
        };
        let honest: Vec<bool> = obs
            .peers
            .iter()
            .map(|p| {
                scenario
                    .groups
                    .get(p.group)
                    .is_some_and(|g| matches!(g.role, Role::Seeder) || g.role.contributes())
            })
            .collect();
        let mut groups = Vec::new();
        for (g, group) in scenario.groups.iter().enumerate() {
            let downloads = downloads_of(&[g]);
            let (mut known, n) = completion(&downloads);
            known.sort_by(f64::total_cmp);
            let members: Vec<&PeerObs> = obs.peers.iter().filter(|p| p.group == g).collect();
            let bytes_up: u64 = members.iter().map(|p| p.bytes_up).sum();
            let bytes_down: u64 = members.iter().map(|p| p.bytes_down).sum();
            let rate = mean(downloads.iter().map(|d| {
                let until = d.completed_s.unwrap_or(end_s);
                d.bytes as f64 / (until - d.started_s).max(1e-3)
            }));
            let standing = mean(
                obs.standing
                    .iter()
                    .filter(|s| {
                        obs.peers.get(s.subject).is_some_and(|p| p.group == g)
                            && s.observer != s.subject
                            && honest.get(s.observer).copied().unwrap_or(false)
                    })
                    .map(|s| s.score),
            );
            groups.push((
                group.name.clone(),
                GroupReport {
                    behaviour: group.role,
                    peers: members.len(),
                    downloads: n,
                    completed: known.len(),
                    median_completion_s: quantile(&known, n, 0.5),
                    p90_completion_s: quantile(&known, n, 0.9),
                    mean_download_rate: rate,
                    share_ratio: (bytes_down > 0).then(|| bytes_up as f64 / bytes_down as f64),
                    mean_standing: standing,
                    bytes_up,
                    bytes_down,
                },
            ));
        }

        let leechers = groups_of(Role::Leecher);
        let freeriders = groups_of(Role::Freerider);
        let whitewashers = groups_of(Role::Whitewasher);
        let contributors_median = (!leechers.is_empty())
            .then(|| median_completion(&leechers))
            .flatten();
        let freerider_median = (!freeriders.is_empty())
            .then(|| median_completion(&freeriders))
            .flatten();
        let freerider_slowdown = contributors_median
            .zip(freerider_median)
            .map(|(c, f)| f / c.max(1e-3));
        let freerider_slowdown_at_least = match (freerider_slowdown, contributors_median) {
            (None, Some(c)) if !freeriders.is_empty() => {
                // Each unfinished download takes longer than the time it had by the end, so
                // the median of those lower bounds (and the finished times) bounds the
                // freeriders' median from below.
                let bounds: Vec<f64> = downloads_of(&freeriders)
                    .iter()
                    .map(|d| d.completed_s.unwrap_or(end_s) - d.started_s)
                    .collect();
                let n = bounds.len();
                median_of(bounds, n).map(|bound| bound / c.max(1e-3))
            }
            _ => None,
        };
        let whitewash_gain = (!whitewashers.is_empty())
            .then(|| {
                freerider_median
                    .zip(median_completion(&whitewashers))
                    .map(|(f, w)| f / w.max(1e-3))
            })
            .flatten();

        // Jain among leechers of one upload limit: the largest such set.
        let mut classes: Vec<(Option<u64>, Vec<usize>)> = Vec::new();
        for &g in &leechers {
            let limit = scenario.groups[g].upload_limit;
            match classes.iter_mut().find(|(l, _)| *l == limit) {
                Some((_, members)) => members.push(g),
                None => classes.push((limit, vec![g])),
            }
        }
        let jain_fairness = classes
            .iter()
            .map(|(_, class)| {
                let rates: Vec<f64> = obs
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| class.contains(&p.group))
                    .filter_map(|(i, _)| {
                        mean(obs.downloads.iter().filter(|d| d.peer == i).map(|d| {
                            let until = d.completed_s.unwrap_or(end_s);
                            d.bytes as f64 / (until - d.started_s).max(1e-3)
                        }))
                    })
                    .collect();
                rates
            })
            .filter(|rates| rates.len() >= 2)
            .max_by_key(Vec::len)
            .and_then(|rates| jain(&rates));

        let sybil_relative_gain = if obs.sybil.is_empty() {
            None
        } else {
            let clique: f64 = obs.sybil.iter().map(|s| s.clique_raw.max(0.0)).sum();
            let edge: f64 = obs.sybil.iter().map(|s| s.edge_raw.max(0.0)).sum();
            if edge > 0.0 {
                Some(clique / edge - 1.0)
            } else if clique <= 0.0 {
                Some(0.0)
            } else {
                None
            }
        };
        let newcomer_first_mib_s = {
            let newcomers: Vec<&DownloadObs> =
                obs.downloads.iter().filter(|d| d.newcomer).collect();
            let known: Vec<f64> = newcomers
                .iter()
                .filter_map(|d| d.first_mib_s.map(|t| t - d.started_s))
                .collect();
            median_of(known, newcomers.len())
        };
        let overhead_ratio = obs
            .control_bytes
            .filter(|_| obs.payload_bytes > 0)
            .map(|c| c as f64 / obs.payload_bytes as f64);
        Report {
            scenario: scenario.name.clone(),
            mode,
            seed: scenario.seed,
            duration_s: scenario.duration_s,
            peers: scenario.peers(),
            groups,
            jain_fairness,
            freerider_slowdown,
            freerider_slowdown_at_least,
            sybil_relative_gain,
            whitewash_gain,
            newcomer_first_mib_s,
            gossip_convergence_s: obs.gossip_convergence_s,
            overhead_ratio,
            observations,
        }
    }

    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "—".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:>5} {:>9} {:>9} {:>9} {:>11} {:>7} {:>8}",
            "group",
            "behaviour",
            "peers",
            "done",
            "median s",
            "p90 s",
            "rate MiB/s",
            "share",
            "standing"
        );
        for (name, g) in &self.groups {
            let _ = writeln!(
                out,
                "{:<14} {:<12} {:>5} {:>9} {:>9} {:>9} {:>11} {:>7} {:>8}",
                name,
                g.behaviour.name(),
                g.peers,
                format!("{}/{}", g.completed, g.downloads),
                opt(g.median_completion_s, 1),
                opt(g.p90_completion_s, 1),
                opt(g.mean_download_rate.map(|r| r / f64::from(1 << 20)), 2),
                opt(g.share_ratio, 2),
                opt(g.mean_standing, 4),
            );
        }
        let mut metric = |name: &str, v: Option<f64>| {
            let _ = writeln!(out, "{name:<24} {}", opt(v, 3));
        };
        metric("jain_fairness", self.jain_fairness);
        metric("freerider_slowdown", self.freerider_slowdown);
        if self.freerider_slowdown_at_least.is_some() {
            metric("  (at least)", self.freerider_slowdown_at_least);
        }
        metric("sybil_relative_gain", self.sybil_relative_gain);
        metric("whitewash_gain", self.whitewash_gain);
        metric("newcomer_first_mib_s", self.newcomer_first_mib_s);
        metric("gossip_convergence_s", self.gossip_convergence_s);
        metric("overhead_ratio", self.overhead_ratio);
        out
    }

    /// Writes `report.json` and `report.html` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("report.html"), self.html())?;
        Ok(())
    }

    /// `report.html`: the metrics, the groups' table and two SVG charts, in one file.
    pub fn html(&self) -> String {
        let mut page = String::new();
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "null".to_owned(),
        };
        let _ = write!(
            page,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>tally testnet: {name}</title><style>\
             body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}}\
             table{{border-collapse:collapse;margin:1rem 0}}td,th{{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:right}}\
             th:first-child,td:first-child{{text-align:left}}svg{{max-width:100%;height:auto}}\
             </style></head><body><h1>tally testnet: {name}</h1>\
             <p>{mode} run, seed {seed}, {peers} peers, {duration} s.</p>",
            name = esc(&self.scenario),
            mode = match self.mode {
                Mode::Real => "Real",
                Mode::Simulated => "Simulated",
            },
            seed = self.seed,
            peers = self.peers,
            duration = self.duration_s,
        );
        page.push_str("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>");
        for (name, value, digits) in [
            ("jain_fairness", self.jain_fairness, 3),
            ("freerider_slowdown", self.freerider_slowdown, 2),
            (
                "freerider_slowdown_at_least",
                self.freerider_slowdown_at_least,
                2,
            ),
            ("sybil_relative_gain", self.sybil_relative_gain, 4),
            ("whitewash_gain", self.whitewash_gain, 2),
            ("newcomer_first_mib_s", self.newcomer_first_mib_s, 2),
            ("gossip_convergence_s", self.gossip_convergence_s, 2),
            ("overhead_ratio", self.overhead_ratio, 4),
        ] {
            let _ = write!(
                page,
                "<tr><td>{name}</td><td>{}</td></tr>",
                opt(value, digits)
            );
        }
        page.push_str(
            "</table><h2>Groups</h2><table><tr><th>group</th><th>behaviour</th><th>peers</th>\
             <th>completed</th><th>median s</th><th>p90 s</th><th>rate MiB/s</th>\
             <th>share ratio</th><th>standing</th></tr>",
        );
        for (name, g) in &self.groups {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                g.behaviour.name(),
                g.peers,
                g.completed,
                g.downloads,
                opt(g.median_completion_s, 1),
                opt(g.p90_completion_s, 1),
                opt(g.mean_download_rate.map(|r| r / f64::from(1 << 20)), 2),
                opt(g.share_ratio, 2),
                opt(g.mean_standing, 3),
            );
        }
        page.push_str("</table><h2>Downloads completed over time</h2>");
        page.push_str(&self.completion_chart());
        page.push_str("<h2>Bytes downloaded per group</h2>");
        page.push_str(&self.bytes_chart());
        page.push_str("</body></html>\n");
        page
    }

    /// Per group, the fraction of its downloads completed against seconds since each started.
    fn completion_chart(&self) -> String {
        let obs = &self.observations;
        let lines: Vec<(String, Vec<(f64, f64)>)> = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, (_, g))| g.downloads > 0)
            .map(|(index, (name, g))| {
                let mut times: Vec<f64> = obs
                    .downloads
                    .iter()
                    .filter(|d| obs.peers.get(d.peer).is_some_and(|p| p.group == index))
                    .filter_map(|d| d.completed_s.map(|c| c - d.started_s))
                    .collect();
                times.sort_by(f64::total_cmp);
                let n = g.downloads as f64;
                let mut points = vec![(0.0, 0.0)];
                for (i, t) in times.iter().enumerate() {
                    points.push((*t, i as f64 / n));
                    points.push((*t, (i + 1) as f64 / n));
                }
                (name.clone(), points)
            })
            .collect();
        let x_max = self.duration_s as f64;
        chart(
            &lines,
            x_max,
            1.0,
            "seconds since the download started",
            "completed",
        )
    }

    /// Per group, MiB downloaded against seconds into the run.
    fn bytes_chart(&self) -> String {
        let series = &self.observations.series;
        let lines: Vec<(String, Vec<(f64, f64)>)> = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, (name, _))| {
                let points = series
                    .iter()
                    .map(|p| {
                        let bytes = p.bytes_down.get(g).copied().unwrap_or(0);
                        (p.t_s, bytes as f64 / f64::from(1 << 20))
                    })
                    .collect();
                (name.clone(), points)
            })
            .collect();
        let x_max = series
            .last()
            .map_or(self.duration_s as f64, |p| p.t_s)
            .max(1.0);
        let y_max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(1.0, f64::max);
        chart(&lines, x_max, y_max * 1.05, "seconds into the run", "MiB")
    }
}

/// A line chart as an SVG element.
fn chart(lines: &[(String, Vec<(f64, f64)>)], x_max: f64, y_max: f64, x: &str, y: &str) -> String {
    use plotters::prelude::*;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (760, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max.max(1e-9), 0f64..y_max.max(1e-9))?;
        chart.configure_mesh().x_desc(x).y_desc(y).draw()?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(error) => format!("<p>The chart could not be drawn: {error}</p>"),
    }
}

#[cfg(test)]
mod tests;
