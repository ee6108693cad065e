//! The real runner: a scenario on real nodes on this machine, each with its own data directory,
//! QUIC endpoint, receipt store and HTTP API — in this process by default, or as separate
//! `tally run` processes. The runner drives every node through its HTTP API only (sharing,
//! fetching, posting orders, reading status, standing and receipts), as a user's script would,
//! so the two launchers differ only in how a node starts and stops.
//!
//! Each run's directory (`--out`) holds `nodes/` (one data directory per identity), `content/`
//! (the scenario's files), and at the end `report.json` and `report.html`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::{Rng as _, RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tally_ledger::{Identity, PeerId, Receipt, ReceiptBody};
use tally_web::model::{
    BidRequest, DownloadState, GetRequest, HexId, OfferRequest, RateLimits, ShareRequest,
};

use super::report::{
    DownloadObs, Mode, Observations, PeerObs, Report, SeriesPoint, StandingObs, SybilObs,
};
use super::scenario::{OrderSide, Role, Scenario};
use crate::client::ApiClient;
use crate::config::{Config, PeerAddr};
use crate::daemon::{Behaviour, Node, NodeFile, NodeParts};
use crate::data_dir::DataDir;

/// The most peers the real runner starts; larger scenarios are for `--simulate`.
pub const MAX_REAL_PEERS: u64 = 256;
/// How often the runner acts on its timeline and polls downloads.
const TICK: Duration = Duration::from_millis(200);
/// How often it samples every node's totals for the charts.
const SAMPLE: Duration = Duration::from_secs(1);
/// Running nodes a new node is told to dial.
const BOOTSTRAP_PEERS: usize = 4;
/// How long the runner waits, after the run, for gossip to bring every node the same receipts.
const CONVERGENCE_GRACE: Duration = Duration::from_secs(60);
/// How long a node may take to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A download's "first MiB".
const FIRST_MIB: u64 = 1 << 20;

/// How to run.
#[derive(Debug, Clone)]
pub struct RealOptions {
    /// Where the nodes' data and the report go.
    pub out: PathBuf,
    /// Separate `tally` processes (the binary at this path) instead of nodes in this process.
    pub processes: Option<PathBuf>,
}

/// What the runner is doing, for a progress line and the overview page.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// `starting`, `running`, `converging`, `measuring` or `done`.
    pub phase: &'static str,
    /// Seconds into the run.
    pub elapsed_s: f64,
    /// The scenario's duration.
    pub duration_s: u64,
    /// Downloads completed.
    pub completed: usize,
    /// Downloads started.
    pub downloads: usize,
    /// Nodes running.
    pub running: usize,
}

/// One node of the overview page.
#[derive(Debug, Clone)]
pub struct OverviewRow {
    /// Its group.
    pub group: String,
    /// Its behaviour.
    pub role: Role,
    /// Its peer id.
    pub peer_id: String,
    /// Its dashboard, with its API key in the fragment (never sent to a server).
    pub dashboard: Option<String>,
}

/// What the overview page shows; the runner updates it as it goes.
#[derive(Debug, Default)]
pub struct Overview {
    /// The latest progress.
    pub progress: Progress,
    /// Every identity so far.
    pub nodes: Vec<OverviewRow>,
}

/// A node running, by either launcher.
struct Running {
    client: ApiClient,
    api_addr: SocketAddr,
    api_key: String,
    quic_addr: SocketAddr,
    kind: Kind,
}

enum Kind {
    InProcess {
        node: Node,
        api: tokio::task::JoinHandle<std::io::Result<()>>,
    },
    Process(Child),
}

/// Payload and gossip totals a node reported.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    up: u64,
    down: u64,
    gossip: u64,
}

/// One download a slot wants.
struct Want {
    content: usize,
    start_s: f64,
    /// Index into the observations' downloads, once started.
    obs: Option<usize>,
    done: bool,
    retry_at_s: f64,
}

/// One node of the scenario (an identity; a whitewasher's next identity reuses its slot).
struct Slot {
    group: usize,
    role: Role,
    gateway: bool,
    dir: PathBuf,
    peer_id: PeerId,
    obs: usize,
    running: Option<Running>,
    wants: Vec<Want>,
    base: Totals,
    last: Totals,
    orders_posted: BTreeSet<usize>,
    generation: u32,
    /// When its node last started, on the run's clock.
    running_since_s: f64,
}

impl Slot {
    fn behaviour(&self) -> Behaviour {
        let freeriding = match self.role {
            Role::Freerider | Role::Whitewasher => true,
            Role::Sybil => !self.gateway,
            _ => false,
        };
        Behaviour {
            never_sign: freeriding,
            never_upload: freeriding,
            ..Behaviour::default()
        }
    }
}

/// Runs `scenario` on real nodes. `progress` is called about once a second; `overview` is kept
/// up to date for the overview page.
pub fn run(
    scenario: &Scenario,
    options: &RealOptions,
    overview: &Arc<Mutex<Overview>>,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<Report> {
    if scenario.peers() > MAX_REAL_PEERS {
        anyhow::bail!(
            "{} has {} peers; real runs start at most {MAX_REAL_PEERS} on one machine: use --simulate for larger networks, or --emit-configs to spread it over machines",
            scenario.name,
            scenario.peers()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tally-testnet")
        .build()
        .context("cannot start the async runtime")?;
    let mut run = Run::new(scenario, options, &runtime, Arc::clone(overview))?;
    let result = run.go(progress);
    run.stop_all();
    result
}

struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a RealOptions,
    runtime: &'a tokio::runtime::Runtime,
    overview: Arc<Mutex<Overview>>,
    rng: ChaCha8Rng,
    slots: Vec<Slot>,
    content_files: Vec<PathBuf>,
    content_ids: Vec<Option<HexId>>,
    obs: Observations,
    started: Instant,
    /// Unix ms when the clock started, to place receipts' times on the run's clock.
    started_ms: u64,
    /// What every running node held, sampled: for gossip convergence.
    holdings: Vec<Holding>,
    next_holding_s: f64,
}

/// The receipts the running nodes held at one moment.
struct Holding {
    t_s: f64,
    /// Whether every running node held the same receipts.
    agreed: bool,
    /// Each running node's slot, when it started, and BLAKE3 over the receipts it held.
    held: Vec<(usize, f64, [u8; 32])>,
}

/// The receipts a node holds, each as (uploader, downloader, seq).
type ReceiptSet = BTreeSet<(PeerId, PeerId, u64)>;

/// BLAKE3 over a set of receipts, each as (uploader, downloader, seq).
fn set_hash<'r>(set: impl IntoIterator<Item = &'r (PeerId, PeerId, u64)>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for (up, down, seq) in set {
        hasher.update(up.as_bytes());
        hasher.update(down.as_bytes());
        hasher.update(&seq.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// Gossip convergence from `holdings`: for every node running at the last sample, the moment
/// from which it held the final set for good, less the later of the newest receipt's time and
/// the node's start (a node that starts after the newest receipt cannot hold it sooner); the
/// most of these. `None` unless every node held the same set at the last sample.
fn convergence_s(holdings: &[Holding], newest_s: f64) -> Option<f64> {
    let last = holdings.last().filter(|h| h.agreed)?;
    let mut worst: f64 = 0.0;
    for &(slot, since_s, final_hash) in &last.held {
        let settled_from = holdings
            .iter()
            .rposition(|h| {
                !h.held
                    .iter()
                    .any(|&(s, since, hash)| s == slot && since == since_s && hash == final_hash)
            })
            .map_or(0, |i| i + 1);
        let from_s = holdings[settled_from].t_s;
        worst = worst.max(from_s - newest_s.max(since_s));
    }
    Some(worst.max(0.0))
}

impl<'a> Run<'a> {
    fn new(
        scenario: &'a Scenario,
        options: &'a RealOptions,
        runtime: &'a tokio::runtime::Runtime,
        overview: Arc<Mutex<Overview>>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(options.out.join("nodes"))
            .with_context(|| format!("cannot create {}", options.out.display()))?;
        Ok(Self {
            scenario,
            options,
            runtime,
            overview,
            rng: ChaCha8Rng::seed_from_u64(scenario.seed),
            slots: Vec::new(),
            content_files: Vec::new(),
            content_ids: vec![None; scenario.content.len()],
            obs: Observations::default(),
            started: Instant::now(),
            started_ms: crate::daemon::now_ms(),
            holdings: Vec::new(),
            next_holding_s: 0.0,
        })
    }

    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn go(&mut self, progress: &mut dyn FnMut(&Progress)) -> anyhow::Result<Report> {
        self.content_files = write_content(self.scenario, &self.options.out.join("content"))?;
        self.plan()?;
        self.report_progress("starting", progress);
        // Every node that starts at 0 is up before the clock starts.
        for index in 0..self.slots.len() {
            if self.scenario.groups[self.slots[index].group].join_at_s == 0 {
                self.launch(index)?;
            }
        }
        self.started = Instant::now();
        self.started_ms = crate::daemon::now_ms();
        let duration = self.scenario.duration_s as f64;
        let mut next_sample = 0.0;
        let mut next_progress = 0.0;
        loop {
            let now = self.elapsed_s();
            if now >= duration {
                break;
            }
            self.step(now)?;
            if now >= next_sample {
                self.sample(now);
                next_sample = now + SAMPLE.as_secs_f64();
            }
            if now >= next_progress {
                self.report_progress("running", progress);
                next_progress = now + 1.0;
            }
            std::thread::sleep(TICK);
        }
        let end_s = self.elapsed_s();
        self.sample(end_s);
        self.report_progress("converging", progress);
        let exports = self.converge()?;
        self.report_progress("measuring", progress);
        self.measure(&exports)?;
        self.stop_all();
        self.report_progress("done", progress);
        let observations = std::mem::take(&mut self.obs);
        let report = Report::new(self.scenario, Mode::Real, observations, end_s);
        report.write(&self.options.out).with_context(|| {
            format!(
                "cannot write the report into {}",
                self.options.out.display()
            )
        })?;
        Ok(report)
    }

    fn report_progress(&self, phase: &'static str, progress: &mut dyn FnMut(&Progress)) {
        let p = Progress {
            phase,
            elapsed_s: if phase == "starting" {
                0.0
            } else {
                self.elapsed_s()
            },
            duration_s: self.scenario.duration_s,
            completed: self
                .obs
                .downloads
                .iter()
                .filter(|d| d.completed_s.is_some())
                .count(),
            downloads: self.obs.downloads.len(),
            running: self.slots.iter().filter(|s| s.running.is_some()).count(),
        };
        lock(&self.overview).progress = p.clone();
        progress(&p);
    }

    /// Creates every identity's data directory and draws the timeline: when each wanted
    /// download starts.
    fn plan(&mut self) -> anyhow::Result<()> {
        for (g, group) in self.scenario.groups.iter().enumerate() {
            for ordinal in 0..group.count {
                let index = self.slots.len();
                let dir = self
                    .options
                    .out
                    .join("nodes")
                    .join(format!("{}-{ordinal}", group.name));
                let peer_id = init_dir(self.scenario, &dir)?;
                let mut wants = Vec::new();
                for (c, item) in self.scenario.content.iter().enumerate() {
                    if item.wanted_by.contains(&g) {
                        let jitter = if item.spread_s > 0 {
                            self.rng.random_range(0.0..item.spread_s as f64)
                        } else {
                            0.0
                        };
                        let start_s = (item.at_s as f64 + jitter).max(group.join_at_s as f64);
                        wants.push(Want {
                            content: c,
                            start_s,
                            obs: None,
                            done: false,
                            retry_at_s: 0.0,
                        });
                    }
                }
                wants.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
                self.obs.peers.push(PeerObs {
                    group: g,
                    ..PeerObs::default()
                });
                self.slots.push(Slot {
                    group: g,
                    role: group.role,
                    gateway: group.role == Role::Sybil && ordinal == 0,
                    dir,
                    peer_id,
                    obs: index,
                    running: None,
                    wants,
                    base: Totals::default(),
                    last: Totals::default(),
                    orders_posted: BTreeSet::new(),
                    generation: 0,
                    running_since_s: 0.0,
                });
                lock(&self.overview).nodes.push(OverviewRow {
                    group: group.name.clone(),
                    role: group.role,
                    peer_id: peer_id.to_string(),
                    dashboard: None,
                });
            }
        }
        let members: Vec<(usize, u32, PathBuf)> = self
            .slots
            .iter()
            .map(|s| (s.group, u32::from(s.gateway), s.dir.clone()))
            .collect();
        seed_sybil_receipts(self.scenario, &members)
    }

    /// Starts slot `index`'s node, dialing a few running nodes, and shares what it holds.
    fn launch(&mut self, index: usize) -> anyhow::Result<()> {
        let running: Vec<PeerAddr> = self
            .slots
            .iter()
            .filter_map(|s| {
                s.running.as_ref().map(|r| PeerAddr {
                    peer_id: s.peer_id,
                    addr: r.quic_addr.to_string(),
                })
            })
            .collect();
        let mut peers = Vec::new();
        let mut candidates = running;
        while peers.len() < BOOTSTRAP_PEERS && !candidates.is_empty() {
            let pick = self.rng.random_range(0..candidates.len());
            peers.push(candidates.swap_remove(pick));
        }
        let slot = &self.slots[index];
        let group = &self.scenario.groups[slot.group];
        let behaviour = slot.behaviour();
        let dir = slot.dir.clone();
        let limits = (group.upload_limit, group.download_limit);
        let quic_ip = node_loopback(index);
        let running = match &self.options.processes {
            None => self.launch_in_process(&dir, quic_ip, peers, limits, behaviour)?,
            Some(bin) => launch_process(bin, &dir, quic_ip, &peers, limits, behaviour)?,
        };
        let dashboard = format!("http://{}/#key={}", running.api_addr, running.api_key);
        if let Some(row) = lock(&self.overview)
            .nodes
            .iter_mut()
            .find(|r| r.peer_id == self.slots[index].peer_id.to_string())
        {
            row.dashboard = Some(dashboard);
        }
        let client = running.client.clone();
        self.slots[index].running = Some(running);
        self.slots[index].running_since_s = self.elapsed_s();
        self.slots[index].last = Totals::default();
        // Holders share their content.
        for (c, item) in self.scenario.content.iter().enumerate() {
            if item.holders.contains(&self.slots[index].group) {
                let path = absolute(&self.content_files[c])?;
                let shared = client
                    .share(&ShareRequest {
                        path: path.display().to_string(),
                    })
                    .with_context(|| format!("cannot share {}", path.display()))?;
                self.content_ids[c] = Some(shared.content_id);
            }
        }
        Ok(())
    }

    fn launch_in_process(
        &self,
        dir: &Path,
        quic_ip: std::net::IpAddr,
        peers: Vec<PeerAddr>,
        (upload, download): (Option<u64>, Option<u64>),
        behaviour: Behaviour,
    ) -> anyhow::Result<Running> {
        let data_dir = DataDir::new(dir);
        let identity = crate::id_cmd::load_identity(&data_dir)?;
        let api_key = crate::id_cmd::read_api_key(&data_dir)?;
        let mut config = Config {
            network: self.scenario.network.clone(),
            ..Config::default()
        };
        config.node.listen = SocketAddr::new(quic_ip, 0);
        if quic_ip == std::net::Ipv4Addr::LOCALHOST {
            // Every node shares one source address: the per-IP limit must not bite.
            config.node.max_connections_per_ip = config.node.max_connections;
        }
        config.node.api_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.node.peers = peers;
        if let Some(window) = self.scenario.credit_window {
            config.node.credit_window = window;
        }
        config.node.upload_limit = upload.map(crate::rate::Rate);
        config.node.download_limit = download.map(crate::rate::Rate);
        let (node, api_addr, api) = self.runtime.block_on(async {
            let parts = NodeParts::open(dir, identity, config, behaviour)?;
            let node = Node::start(parts).await?;
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let (api_addr, api) =
                crate::run_cmd::start_api(node.shared(), listen, api_key.clone()).await?;
            anyhow::Ok((node, api_addr, api))
        })?;
        let quic_addr = node.quic_addr()?;
        Ok(Running {
            client: ApiClient::new(&format!("http://{api_addr}"), api_key.clone()),
            api_addr,
            api_key,
            quic_addr,
            kind: Kind::InProcess { node, api },
        })
    }

    /// Stops slot `index`'s node, keeping its totals.
    fn halt(&mut self, index: usize) {
        self.sample_slot(index);
        let slot = &mut self.slots[index];
        slot.base.up += slot.last.up;
        slot.base.down += slot.last.down;
        slot.base.gossip += slot.last.gossip;
        slot.last = Totals::default();
        if let Some(running) = slot.running.take() {
            stop(self.runtime, running);
        }
    }

    fn stop_all(&mut self) {
        for index in 0..self.slots.len() {
            if self.slots[index].running.is_some() {
                self.halt(index);
            }
        }
    }

    /// One tick of the timeline at `now` seconds.
    fn step(&mut self, now: f64) -> anyhow::Result<()> {
        for index in 0..self.slots.len() {
            let group = &self.scenario.groups[self.slots[index].group];
            let (join, churn) = (group.join_at_s as f64, group.churn);
            // Joining and churning.
            let should_run = match churn {
                _ if now < join => false,
                None => true,
                Some(c) => {
                    let cycle = (c.online_s + c.offline_s) as f64;
                    (now - join) % cycle < c.online_s as f64
                }
            };
            let is_running = self.slots[index].running.is_some();
            if should_run && !is_running {
                self.launch(index)?;
                // Restarted: its unfinished downloads start again.
                for want in &mut self.slots[index].wants {
                    if want.obs.is_some() && !want.done {
                        want.retry_at_s = now;
                    }
                }
            } else if !should_run && is_running {
                self.halt(index);
                continue;
            }
            if self.slots[index].running.is_none() {
                continue;
            }
            self.post_orders(index, now);
            self.drive_downloads(index, now)?;
        }
        Ok(())
    }

    fn post_orders(&mut self, index: usize, now: f64) {
        let Some(client) = self.slots[index].running.as_ref().map(|r| r.client.clone()) else {
            return;
        };
        for (o, order) in self.scenario.orders.iter().enumerate() {
            if order.group != self.slots[index].group
                || order.at_s as f64 > now
                || self.slots[index].orders_posted.contains(&o)
            {
                continue;
            }
            let posted = match order.side {
                OrderSide::Offer => client
                    .post_offer(&OfferRequest {
                        bytes: order.bytes,
                        price_per_gib: order.price_per_gib,
                        max_rate: self.scenario.groups[order.group].upload_limit,
                        ttl_s: Some(order.ttl_s),
                    })
                    .map(drop),
                OrderSide::Bid => client
                    .post_bid(&BidRequest {
                        bytes: order.bytes,
                        max_price_per_gib: order.price_per_gib,
                        content_id: None,
                        ttl_s: Some(order.ttl_s),
                    })
                    .map(drop),
            };
            if let Err(error) = posted {
                tracing::warn!("cannot post a scenario order: {error}");
            }
            self.slots[index].orders_posted.insert(o);
        }
    }

    /// Starts due downloads and reads the progress of running ones.
    fn drive_downloads(&mut self, index: usize, now: f64) -> anyhow::Result<()> {
        let Some(client) = self.slots[index].running.as_ref().map(|r| r.client.clone()) else {
            return Ok(());
        };
        let out_dir = self.slots[index].dir.join("downloads");
        let newcomer = self.slots[index].base.down == 0 && self.slots[index].last.down == 0;
        let mut pending = false;
        for w in 0..self.slots[index].wants.len() {
            let want = &self.slots[index].wants[w];
            if want.done || want.start_s > now {
                continue;
            }
            let needs_request = want.obs.is_none() || want.retry_at_s > 0.0;
            if !needs_request || want.retry_at_s > now {
                pending |= want.obs.is_some();
                continue;
            }
            let content = want.content;
            let Some(content_id) = self.content_ids[content] else {
                continue;
            };
            std::fs::create_dir_all(&out_dir)?;
            let out = absolute(&out_dir)?.join(format!(
                "{}-{}.bin",
                self.scenario.content[content].name, self.slots[index].generation
            ));
            let _ = std::fs::remove_file(&out);
            match client.get(&GetRequest {
                content_id,
                out: out.display().to_string(),
            }) {
                Ok(_) => {
                    let obs = match self.slots[index].wants[w].obs {
                        Some(obs) => obs,
                        None => {
                            self.obs.downloads.push(DownloadObs {
                                peer: self.slots[index].obs,
                                content,
                                started_s: now,
                                first_mib_s: None,
                                completed_s: None,
                                bytes: 0,
                                newcomer,
                            });
                            self.obs.downloads.len() - 1
                        }
                    };
                    let want = &mut self.slots[index].wants[w];
                    want.obs = Some(obs);
                    want.retry_at_s = 0.0;
                    pending = true;
                }
                Err(error) => {
                    tracing::debug!("cannot start a download yet: {error}");
                    self.slots[index].wants[w].retry_at_s = now + 1.0;
                }
            }
        }
        if !pending {
            return Ok(());
        }
        let downloads = match client.downloads() {
            Ok(downloads) => downloads,
            Err(error) => {
                tracing::debug!("cannot read downloads: {error}");
                return Ok(());
            }
        };
        let mut finished = false;
        for w in 0..self.slots[index].wants.len() {
            let want = &self.slots[index].wants[w];
            let (Some(obs), false) = (want.obs, want.done) else {
                continue;
            };
            if want.retry_at_s > 0.0 {
                continue;
            }
            let Some(content_id) = self.content_ids[want.content] else {
                continue;
            };
            let Some(info) = downloads.iter().find(|d| d.content_id == content_id) else {
                continue;
            };
            let size = self.scenario.content[want.content].size;
            let d = &mut self.obs.downloads[obs];
            d.bytes = info.bytes_have;
            if d.first_mib_s.is_none() && info.bytes_have >= FIRST_MIB.min(size) {
                d.first_mib_s = Some(now);
            }
            match info.state {
                DownloadState::Complete => {
                    d.completed_s = Some(now);
                    d.bytes = size;
                    self.slots[index].wants[w].done = true;
                    finished = true;
                }
                DownloadState::Failed => {
                    // No provider yet, or all refused: ask again shortly.
                    self.slots[index].wants[w].retry_at_s = now + 1.0;
                }
                _ => {}
            }
        }
        if finished && self.slots[index].role == Role::Whitewasher {
            self.whitewash(index, now)?;
        }
        Ok(())
    }

    /// A whitewasher's fresh identity: the old node stops for good, a new one with a new key
    /// and an empty store takes its place (and its unfinished downloads).
    fn whitewash(&mut self, index: usize, now: f64) -> anyhow::Result<()> {
        self.halt(index);
        let slot = &self.slots[index];
        let generation = slot.generation + 1;
        let group = &self.scenario.groups[slot.group];
        let ordinal = slot
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = self
            .options
            .out
            .join("nodes")
            .join(format!("{ordinal}.{generation}"));
        let peer_id = init_dir(self.scenario, &dir)?;
        self.obs.peers.push(PeerObs {
            group: slot.group,
            ..PeerObs::default()
        });
        lock(&self.overview).nodes.push(OverviewRow {
            group: group.name.clone(),
            role: group.role,
            peer_id: peer_id.to_string(),
            dashboard: None,
        });
        let slot = &mut self.slots[index];
        slot.generation = generation;
        slot.dir = dir;
        slot.peer_id = peer_id;
        slot.obs = self.obs.peers.len() - 1;
        slot.base = Totals::default();
        // Downloads under way move to the new identity and count as a newcomer's.
        for want in &mut slot.wants {
            if let (Some(obs), false) = (want.obs, want.done) {
                want.retry_at_s = now;
                self.obs.downloads[obs].newcomer = true;
            }
        }
        self.launch(index)
    }

    fn sample_slot(&mut self, index: usize) {
        let Some(client) = self.slots[index].running.as_ref().map(|r| r.client.clone()) else {
            return;
        };
        if let Ok(status) = client.status() {
            self.slots[index].last = Totals {
                up: status.transfer.bytes_up,
                down: status.transfer.bytes_down,
                gossip: status.gossip.bytes_sent,
            };
        }
        let slot = &self.slots[index];
        if let Some(peer) = self.obs.peers.get_mut(slot.obs) {
            peer.bytes_up = slot.base.up + slot.last.up;
            peer.bytes_down = slot.base.down + slot.last.down;
        }
    }

    /// Reads every running node's totals and adds a point to the series.
    fn sample(&mut self, now: f64) {
        for index in 0..self.slots.len() {
            self.sample_slot(index);
        }
        let mut per_group = vec![0u64; self.scenario.groups.len()];
        for peer in &self.obs.peers {
            per_group[peer.group] += peer.bytes_down;
        }
        self.obs.series.push(SeriesPoint {
            t_s: now,
            bytes_down: per_group,
        });
        // Who holds which receipts, every second on small networks, less often on large ones.
        if now >= self.next_holding_s {
            let every = if self.slots.len() <= 64 { 1.0 } else { 5.0 };
            self.next_holding_s = now + every;
            if let Err(error) = self.hold(now) {
                tracing::warn!("cannot read the nodes' receipts: {error:#}");
            }
        }
    }

    /// Reads every running node's receipts and notes whether they agree.
    fn hold(&mut self, now: f64) -> anyhow::Result<BTreeMap<usize, Vec<Receipt>>> {
        let exports = self.exports()?;
        let sets: Vec<(usize, ReceiptSet)> = exports
            .iter()
            .map(|(&slot, receipts)| {
                let set = receipts
                    .iter()
                    .map(|r| (r.uploader, r.downloader, r.seq))
                    .collect();
                (slot, set)
            })
            .collect();
        self.holdings.push(Holding {
            t_s: now,
            agreed: sets.windows(2).all(|w| w[0].1 == w[1].1),
            held: sets
                .iter()
                .map(|(slot, set)| (*slot, self.slots[*slot].running_since_s, set_hash(set)))
                .collect(),
        });
        Ok(exports)
    }

    /// Stops transfers, then waits until every running node holds the same receipts; returns
    /// each running node's receipts.
    fn converge(&mut self) -> anyhow::Result<BTreeMap<usize, Vec<Receipt>>> {
        let crawl = RateLimits {
            upload_bytes_per_s: Some(1),
            download_bytes_per_s: Some(1),
        };
        for slot in &self.slots {
            if let Some(running) = &slot.running
                && let Err(error) = running.client.set_limits(&crawl)
            {
                tracing::warn!("cannot stop a node's transfers: {error}");
            }
        }
        let deadline = Instant::now() + CONVERGENCE_GRACE;
        let exports = loop {
            let exports = self.hold(self.elapsed_s())?;
            let agreed = self.holdings.last().is_some_and(|h| h.agreed);
            if agreed || Instant::now() >= deadline {
                break exports;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        // From the newest receipt (or a node's later start) to the first moment from which
        // each node held the final set, as sampled (every second on small networks).
        if let Some(newest_ms) = exports.values().flatten().map(|r| r.time_ms).max() {
            let newest_s = newest_ms.saturating_sub(self.started_ms) as f64 / 1000.0;
            self.obs.gossip_convergence_s = convergence_s(&self.holdings, newest_s);
        }
        Ok(exports)
    }

    fn exports(&self) -> anyhow::Result<BTreeMap<usize, Vec<Receipt>>> {
        let mut exports = BTreeMap::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(running) = &slot.running else {
                continue;
            };
            let mut lines = Vec::new();
            running
                .client
                .ledger_export(&mut lines)
                .context("cannot read a node's receipts")?;
            let receipts = lines
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(serde_json::from_slice::<Receipt>)
                .collect::<Result<Vec<_>, _>>()
                .context("a node exported a receipt that does not parse")?;
            exports.insert(index, receipts);
        }
        Ok(exports)
    }

    /// Standing as each honest node computes it from its receipts, what a sybil clique drew,
    /// and the bytes spent on gossip and receipts.
    fn measure(&mut self, exports: &BTreeMap<usize, Vec<Receipt>>) -> anyhow::Result<()> {
        let mut identities: Vec<(usize, PeerId)> = Vec::new();
        for slot in &self.slots {
            identities.push((slot.obs, slot.peer_id));
        }
        // Earlier identities of whitewashers are observed too.
        for (o, row) in lock(&self.overview).nodes.iter().enumerate() {
            if let Ok(id) = row.peer_id.parse::<PeerId>()
                && !identities.iter().any(|(_, p)| *p == id)
            {
                identities.push((o, id));
            }
        }
        let clique: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].role == Role::Sybil)
            .collect();
        let clique_ids: BTreeSet<PeerId> = clique.iter().map(|&i| self.slots[i].peer_id).collect();
        let gateway = clique
            .iter()
            .find(|&&i| self.slots[i].gateway)
            .map(|&i| self.slots[i].peer_id);
        for (&index, receipts) in exports {
            let slot = &self.slots[index];
            if !(slot.role == Role::Seeder || slot.role.contributes()) {
                continue;
            }
            let params = tally_market::StandingParams::default();
            let mut standing = tally_market::Standing::new(slot.peer_id, params);
            for r in receipts {
                standing.observe(r.uploader, r.downloader, r.credits);
            }
            for &(obs, id) in &identities {
                if id == slot.peer_id {
                    continue;
                }
                self.obs.standing.push(StandingObs {
                    observer: slot.obs,
                    subject: obs,
                    score: standing.of(&id).score,
                });
            }
            if let Some(gateway) = gateway {
                let clique_raw: f64 = clique_ids
                    .iter()
                    .map(|id| standing.of(id).raw.max(0.0))
                    .sum();
                let mut edge = tally_market::Standing::new(slot.peer_id, params);
                for r in receipts {
                    if !(clique_ids.contains(&r.uploader) && clique_ids.contains(&r.downloader)) {
                        edge.observe(r.uploader, r.downloader, r.credits);
                    }
                }
                self.obs.sybil.push(SybilObs {
                    observer: slot.obs,
                    clique_raw,
                    edge_raw: edge.of(&gateway).raw.max(0.0),
                });
            }
        }
        // Receipt traffic: every receipt in a chain was one proposal and one answer.
        let mut union: BTreeMap<(PeerId, PeerId), &Receipt> = BTreeMap::new();
        for receipt in exports.values().flatten() {
            let entry = union
                .entry((receipt.uploader, receipt.downloader))
                .or_insert(receipt);
            if receipt.seq > entry.seq {
                *entry = receipt;
            }
        }
        let mut receipt_bytes = 0u64;
        for receipt in union.values() {
            if clique_ids.contains(&receipt.uploader) && clique_ids.contains(&receipt.downloader) {
                continue;
            }
            receipt_bytes += receipt.seq * exchange_bytes(receipt)?;
        }
        let gossip: u64 = self
            .slots
            .iter()
            .map(|s| s.base.gossip + s.last.gossip)
            .sum();
        self.obs.control_bytes = Some(gossip + receipt_bytes);
        self.obs.payload_bytes = self.obs.peers.iter().map(|p| p.bytes_up).sum();
        Ok(())
    }
}

/// Writes each content item's bytes (drawn from the seed) into `dir`; returns their paths.
pub fn write_content(scenario: &Scenario, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::new();
    for (i, item) in scenario.content.iter().enumerate() {
        let path = dir.join(format!("{}.bin", item.name));
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ ((i as u64 + 1) << 32));
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        let mut block = vec![0u8; 1 << 20];
        let mut left = item.size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            rng.fill_bytes(&mut block[..n]);
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        paths.push(path);
    }
    Ok(paths)
}

/// `tally init` for a node of `scenario` in `dir`: identity, API key, config, store. Returns
/// its id.
pub fn init_dir(scenario: &Scenario, dir: &Path) -> anyhow::Result<PeerId> {
    let data_dir = DataDir::new(dir);
    let config = Config {
        network: scenario.network.clone(),
        ..Config::default()
    };
    let context = crate::Context {
        data_dir: data_dir.clone(),
        config,
    };
    let args = crate::cli::InitArgs {
        network: Some(scenario.network.clone()),
        force: false,
        json: true,
    };
    crate::init::run(&args, &context, &mut std::io::sink())
        .with_context(|| format!("cannot initialise {}", dir.display()))?;
    // Settings of the scenario that have no flag go into the node's config.toml.
    if let Some(window) = scenario.credit_window {
        let path = data_dir.config_file();
        let text = std::fs::read_to_string(&path)?;
        let mut doc: toml_edit::DocumentMut = text.parse().context("config.toml does not parse")?;
        doc["node"]["credit_window"] = toml_edit::value(i64::try_from(window)?);
        std::fs::write(&path, doc.to_string())?;
    }
    Ok(crate::id_cmd::load_identity(&data_dir)?.peer_id())
}

/// Seeds a sybil clique: every member of a sybil group (`nodes` lists each node's group,
/// ordinal and data directory) holds receipts, signed by both sides, claiming the group's
/// `claim` in each direction between every two members (`claim_shape = "star"`: from every
/// other member to the gateway only); gossip spreads them.
pub fn seed_sybil_receipts(
    scenario: &Scenario,
    nodes: &[(usize, u32, PathBuf)],
) -> anyhow::Result<()> {
    let network = tally_ledger::NetworkId::from_name(&scenario.network);
    for (g, group) in scenario.groups.iter().enumerate() {
        let Some(claim) = group.sybil_claim else {
            continue;
        };
        let members: Vec<&PathBuf> = nodes
            .iter()
            .filter(|(group, _, _)| *group == g)
            .map(|(_, _, dir)| dir)
            .collect();
        let identities: Vec<Identity> = members
            .iter()
            .map(|dir| crate::id_cmd::load_identity(&DataDir::new(dir)))
            .collect::<Result<_, _>>()?;
        let mut lines = Vec::new();
        for (oa, up) in identities.iter().enumerate() {
            for (ob, down) in identities.iter().enumerate() {
                if !group.claim_shape.claims(oa as u32, ob as u32) {
                    continue;
                }
                let receipt: Receipt = ReceiptBody {
                    uploader: up.peer_id(),
                    downloader: down.peer_id(),
                    seq: 1,
                    bytes: claim,
                    credits: claim,
                    time_ms: crate::daemon::now_ms(),
                }
                .propose(down, &network)
                .countersign(up, &network);
                serde_json::to_writer(&mut lines, &receipt)?;
                lines.push(b'\n');
            }
        }
        for dir in members {
            let store = open_store(dir, &scenario.network)?;
            crate::ledger_cmd::import_from(&store, &lines[..], &mut std::io::sink())
                .with_context(|| format!("cannot seed {}", dir.display()))?;
            store.flush()?;
        }
    }
    Ok(())
}

/// Bytes of one receipt exchange on the wire: the proposal and the countersigned answer, each a
/// length-prefixed frame (QUIC's own overhead not counted).
fn exchange_bytes(receipt: &Receipt) -> anyhow::Result<u64> {
    let proposal = crate::wire::Request::Propose(tally_ledger::Proposal {
        body: receipt.body(),
        sig_downloader: receipt.sig_downloader,
    });
    let answer = crate::wire::Response::Countersigned(*receipt);
    let len = postcard::to_allocvec(&proposal)?.len() + postcard::to_allocvec(&answer)?.len();
    Ok(len as u64 + 8)
}

fn open_store(dir: &Path, network: &str) -> anyhow::Result<tally_ledger::Store> {
    let config = Config::default();
    Ok(tally_ledger::Store::open(
        dir.join(crate::data_dir::STORE_DIR),
        tally_ledger::NetworkId::from_name(network),
        config.store_config(),
    )?)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts `tally run` for `dir` and reads the address it prints.
/// The loopback address node `index` of a testnet binds its QUIC endpoint to. On Linux every
/// address of 127/8 reaches the loopback interface, so each node gets its own (127.0.0.2 on) and
/// the per-IP limits and IP bans see distinct hosts, as on a real network. Elsewhere only
/// 127.0.0.1 is sure to exist; the nodes share it and their per-IP limit is raised.
pub fn node_loopback(index: usize) -> std::net::IpAddr {
    if cfg!(target_os = "linux") {
        let offset = u32::try_from(index).unwrap_or(u32::MAX).min(0x00ff_fffd);
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0002 + offset))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    }
}

fn launch_process(
    bin: &Path,
    dir: &Path,
    quic_ip: std::net::IpAddr,
    peers: &[PeerAddr],
    (upload, download): (Option<u64>, Option<u64>),
    behaviour: Behaviour,
) -> anyhow::Result<Running> {
    let log = std::fs::File::create(dir.join("node.log"))?;
    let mut command = Command::new(bin);
    command
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--log-level",
            "info",
            "run",
            "--json",
            "--listen",
            &SocketAddr::new(quic_ip, 0).to_string(),
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let limit = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    command.args(["--upload-limit", &limit(upload)]);
    command.args(["--download-limit", &limit(download)]);
    if quic_ip == std::net::Ipv4Addr::LOCALHOST {
        // Every node shares one source address: the per-IP limit must not bite.
        command.args(["--max-connections-per-ip", "65536"]);
    }
    for peer in peers {
        command.arg("--peer").arg(peer.to_string());
    }
    if behaviour.never_sign {
        command.arg("--never-sign");
    }
    if behaviour.never_upload {
        command.arg("--never-upload");
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("the node's standard output is not piped")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("cannot read the node's start-up line")?;
    let info: NodeFile = match serde_json::from_str(&line) {
        Ok(info) => info,
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "the node in {} did not start ({error}); see {}",
                dir.display(),
                dir.join("node.log").display()
            );
        }
    };
    let api_key = crate::id_cmd::read_api_key(&DataDir::new(dir))?;
    Ok(Running {
        client: ApiClient::new(&format!("http://{}", info.api_addr), api_key.clone()),
        api_addr: info.api_addr,
        api_key,
        quic_addr: info.quic_addr,
        kind: Kind::Process(child),
    })
}

fn stop(runtime: &tokio::runtime::Runtime, running: Running) {
    match running.kind {
        Kind::InProcess { node, api } => {
            runtime.block_on(async {
                if let Err(error) = node.shutdown(STOP_GRACE).await {
                    tracing::warn!("a node did not stop cleanly: {error:#}");
                }
                let _ = tokio::time::timeout(STOP_GRACE, api).await;
            });
        }
        Kind::Process(mut child) => {
            // A graceful stop through the API, then a kill if it lingers.
            let _ = running.client.shutdown();
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, held: &[(usize, f64, u8)]) -> Holding {
        Holding {
            t_s,
            agreed: held.windows(2).all(|w| w[0].2 == w[1].2),
            held: held
                .iter()
                .map(|&(slot, since, set)| (slot, since, [set; 32]))
                .collect(),
        }
    }

    #[test]
    fn convergence_runs_from_the_newest_receipt_to_the_last_node_holding_it() {
        // Node 1 holds the final set (1) from t = 12; node 0 from t = 11.
        let holdings = [
            sample(10.0, &[(0, 0.0, 0), (1, 0.0, 0)]),
            sample(11.0, &[(0, 0.0, 1), (1, 0.0, 0)]),
            sample(12.0, &[(0, 0.0, 1), (1, 0.0, 1)]),
            sample(13.0, &[(0, 0.0, 1), (1, 0.0, 1)]),
        ];
        assert_eq!(convergence_s(&holdings, 10.5), Some(1.5));
    }

    #[test]
    fn a_node_that_starts_after_the_newest_receipt_is_timed_from_its_start() {
        // Everyone holds the final set from t = 12; a new node (slot 2) starts at 20.5 with
        // nothing and holds it at 22.
        let holdings = [
            sample(11.0, &[(0, 0.0, 0), (1, 0.0, 0)]),
            sample(12.0, &[(0, 0.0, 1), (1, 0.0, 1)]),
            sample(21.0, &[(0, 0.0, 1), (1, 0.0, 1), (2, 20.5, 0)]),
            sample(22.0, &[(0, 0.0, 1), (1, 0.0, 1), (2, 20.5, 1)]),
            sample(23.0, &[(0, 0.0, 1), (1, 0.0, 1), (2, 20.5, 1)]),
        ];
        assert_eq!(convergence_s(&holdings, 10.0), Some(2.0));
        // A node restarted in the same slot is timed from its new start.
        let restarted = [
            sample(12.0, &[(0, 0.0, 1), (1, 0.0, 1)]),
            sample(30.0, &[(0, 0.0, 1), (1, 29.0, 0)]),
            sample(31.0, &[(0, 0.0, 1), (1, 29.0, 1)]),
        ];
        assert_eq!(convergence_s(&restarted, 10.0), Some(2.0));
    }

    #[test]
    fn no_convergence_is_reported_while_the_nodes_disagree() {
        let holdings = [
            sample(12.0, &[(0, 0.0, 1), (1, 0.0, 1)]),
            sample(13.0, &[(0, 0.0, 1), (1, 0.0, 2)]),
        ];
        assert_eq!(convergence_s(&holdings, 10.0), None);
        assert_eq!(convergence_s(&[], 10.0), None);
    }
}
