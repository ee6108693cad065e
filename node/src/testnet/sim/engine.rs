//! The simulation's event loop and state: nodes (machines) and their identities, downloads and
//! their provider lanes, uploaders' schedulers, pairs' byte and credit counters, receipts and
//! their gossip, and what the run saw. Times are whole microseconds; events at the same time
//! run in the order they were scheduled, so a run is a pure function of the scenario.
//!
//! The node's rules mirrored here (see `crate::daemon::fetch` and `crate::daemon::serve`):
//! a download runs [`PIPELINE`] requests per provider, each for the lowest chunk it still wants
//! that the provider holds; the uploader refuses a request that would pass the requester's
//! credit window (checked when it is queued and again when its turn comes), queues the others
//! in its [`Scheduler`] at the requester's standing (a buyer it is delivering a trade to at the
//! trade's priority), and serves them in the scheduler's order at its upload rate; the
//! downloader proposes a receipt every [`ACK_BYTES`] from a provider and at the end. A
//! requester below the stranger standing that never signed for the uploader draws on the
//! uploader's one strangers' allowance as well ([`StrangerCredit`], the node's defaults); what a
//! stranger leaves unsigned for the write-off delay is written off and forgiven; a downloader
//! that never signs asks a provider that refused it again later, as the node does.

use std::collections::{BinaryHeap, HashMap, VecDeque};

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tally_ledger::{Identity, PeerId};
use tally_market::{
    Scheduler, SchedulerConfig, Standing, StandingParams, StrangerCredit, WindowParams,
    credit_window,
};

use super::bits::Bits;
use super::market::SimMarket;
use super::{ChunkPick, SimOptions, SimProgress};
use crate::testnet::report::{
    DownloadObs, Mode, Observations, PeerObs, Report, SeriesPoint, StandingObs, SybilObs,
};
use crate::testnet::scenario::{Role, Scenario};

/// Microseconds in a second.
const US: u64 = 1_000_000;
const MIB: u64 = 1 << 20;
/// The node's chunk size.
const CHUNK: u64 = crate::content::CHUNK_SIZE as u64;
/// Requests in flight per provider, as the node's download lanes.
const PIPELINE: u32 = crate::daemon::fetch::PIPELINE as u32;
/// Bytes between two receipts a downloader proposes (the node's default).
const ACK_BYTES: u64 = crate::config::DEFAULT_ACK_BYTES;
/// The credit window at standing 0 (the node's default) and its growth with standing.
const WINDOW_FLOOR: u64 = crate::config::DEFAULT_CREDIT_WINDOW;
const WINDOW_GROWTH: u64 = crate::daemon::CREDIT_WINDOW_GROWTH;
/// When bytes a stranger left unsigned are written off (the node's default).
const STRANGER_WRITE_OFF_MS: u64 = crate::config::DEFAULT_STRANGER_WRITE_OFF_S * 1000;
/// The node's gossip interval.
const GOSSIP_INTERVAL_US: u64 = crate::config::DEFAULT_GOSSIP_INTERVAL_MS * 1000;
/// Connections a node keeps at most, and those it dials itself.
const MAX_CONNECTIONS: usize = crate::config::DEFAULT_MAX_CONNECTIONS;
const TARGET_PEERS: usize = crate::config::DEFAULT_TARGET_PEERS;
/// Providers a stalled download dials at a time.
const PROVIDER_DIALS: usize = crate::gossip::task::PROVIDER_DIALS;
/// How long a download waits without any provider before it fails.
const PROVIDER_WAIT_US: u64 = crate::daemon::fetch::PROVIDER_WAIT.as_micros() as u64;
/// A stalled download looks for providers again after this, doubling up to [`MAX_BACKOFF_US`]
/// (the node looks every 500 ms; the back-off bounds the events of hopeless downloads).
const REDISCOVER_US: u64 = 500_000;
const MAX_BACKOFF_US: u64 = 4 * US;
/// An unlimited link: 10 Gbit/s.
const UNLIMITED_BYTES_PER_S: f64 = 1.25e9;
/// Up to this many nodes, every node's standing takes every receipt (after the gossip delay);
/// beyond it, only the receipts into its direct contributors (see docs/SIMULATION.md).
pub const FULL_VIEW_MAX_NODES: usize = 200;
/// Observers, and subjects per group, sampled for the standing observations.
const OBS_SAMPLE: usize = 64;
/// Points of the bytes-per-group series.
const SERIES_POINTS: u64 = 120;
/// Control-traffic model (docs/PERFORMANCE.md): a receipt's encoded size; a proposal and its
/// countersigned answer; gossip bytes per receipt per node as a multiple of the receipt; idle
/// gossip bytes per online node per second at the default 2 s interval (130 B/s measured at 1 s).
const RECEIPT_BYTES: f64 = 205.0;
const PROPOSAL_EXCHANGE_BYTES: u64 = 430;
const GOSSIP_BYTES_FACTOR: f64 = 1.3;
const IDLE_GOSSIP_BYTES_PER_NODE_S: f64 = 65.0;

/// A chunk request waiting in an uploader's scheduler.
#[derive(Debug, Clone, Copy)]
struct Req {
    dl: u32,
    chunk: u32,
    /// The requesting node's generation when it asked: a request from before it went offline
    /// or took a new identity is dropped when its turn comes.
    epoch: u32,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A download starts.
    Start(u32),
    /// A late joiner comes online.
    Join(u32),
    /// A churner goes offline or back online.
    Churn(u32),
    /// An uploader's link is free for its next chunk.
    Ready(u32),
    /// A chunk arrives.
    Arrive(Arrival),
    /// A stalled download looks for providers again.
    Rediscover(u32),
    /// The receipts made since the last batch leave for gossip.
    GossipBatch,
    /// The oldest batch in flight reaches the other nodes.
    Deliver,
    /// A scenario order is posted by every peer of its group.
    Order(u32),
    /// A point of the series.
    Sample,
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    dl: u32,
    provider: u32,
    from: u32,
    to: u32,
    chunk: u32,
    epoch: u32,
    len: u64,
    credits: u64,
    trade_bytes: u64,
}

struct Entry {
    time: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap pops the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// One identity (a whitewasher has several).
struct Ident {
    pid: PeerId,
    node: u32,
    /// Whether a receipt names it as uploader: it may have standing somewhere.
    gave: bool,
}

/// What a node holds of one content.
#[derive(Default)]
struct Holding {
    bits: Bits,
    count: u32,
    full: bool,
}

/// One machine.
struct Node {
    group: u32,
    role: Role,
    ident: u32,
    signs: bool,
    online: bool,
    online_since: u64,
    online_total: u64,
    /// Link rates, bytes per microsecond.
    up: f64,
    down: f64,
    /// When its download link is free.
    down_free: u64,
    neighbours: Vec<u32>,
    sched: Option<Scheduler<Req>>,
    /// A `Ready` event is pending.
    busy: bool,
    standing: Option<Standing>,
    /// The same without the sybil clique's receipts among itself (sybil scenarios only).
    shadow: Option<Standing>,
    holds: Vec<Holding>,
    downloads: Vec<u32>,
    epoch: u32,
    /// Nodes it uploaded to and got a receipt from, sorted: those whose standing weighs the
    /// receipts into it (bounded view).
    customers: Vec<u32>,
    /// The allowance strangers share at this uploader, by identity.
    strangers: StrangerCredit<u32>,
}

/// A provider of a download: a connection with up to [`PIPELINE`] requests in flight.
#[derive(Clone, Copy)]
struct Lane {
    provider: u32,
    inflight: u32,
}

struct Download {
    node: u32,
    content: u32,
    start_at: u64,
    obs: usize,
    started: bool,
    done: bool,
    failed: bool,
    /// Missing and not requested.
    wanted: Bits,
    lanes: Vec<Lane>,
    /// Neighbours already made lanes.
    known: usize,
    inflight: u32,
    bytes: u64,
    stalled_since: Option<u64>,
    backoff: u64,
    rediscover: bool,
}

#[derive(Default, Clone, Copy)]
struct PairState {
    sent: u64,
    received: u64,
    received_credits: u64,
    acked: u64,
    acked_credits: u64,
    /// Bytes sent unsigned and written off by the strangers' allowance.
    forgiven: u64,
    dirty: bool,
}

struct ContentInfo {
    size: u64,
    chunks: u32,
    /// Nodes that hold some of it (provider records).
    holders: Vec<u32>,
}

struct Clique {
    members: Vec<u32>,
    gateway: u32,
}

/// A simulation in progress.
pub struct Sim<'a> {
    sc: &'a Scenario,
    options: SimOptions,
    rng: ChaCha8Rng,
    /// Draws of the random chunk pick, apart from the rest so the network is the same.
    pick_rng: ChaCha8Rng,
    key_seed: u64,
    now: u64,
    end: u64,
    seq: u64,
    heap: BinaryHeap<Entry>,
    nodes: Vec<Node>,
    idents: Vec<Ident>,
    dls: Vec<Download>,
    contents: Vec<ContentInfo>,
    pairs: HashMap<(u32, u32), PairState>,
    dirty: Vec<(u32, u32)>,
    deliveries: VecDeque<Vec<(u32, u32, u64)>>,
    full_mesh: bool,
    full_view: bool,
    gossip_delay: u64,
    batch_period: u64,
    observers: Vec<u32>,
    cliques: Vec<Clique>,
    market: SimMarket,
    obs: Observations,
    group_down: Vec<u64>,
    sample_period: u64,
    receipts: u64,
    gossip_copies: u64,
    last_receipt: Option<u64>,
}

fn rate(limit: Option<u64>) -> f64 {
    limit.map_or(UNLIMITED_BYTES_PER_S, |r| r.max(1) as f64) / US as f64
}

/// Microseconds to move `len` bytes at `rate` bytes per microsecond (at least 1).
fn duration(len: u64, rate: f64) -> u64 {
    ((len as f64 / rate).ceil() as u64).max(1)
}

/// The window a provider gives a peer of `score`, from `floor` (the scenario's
/// `credit_window`, else the node's default) as the node computes it.
fn window_for(floor: u64, score: f64) -> u64 {
    credit_window(
        score,
        WindowParams {
            floor_bytes: floor,
            ceiling_bytes: floor.saturating_mul(WINDOW_GROWTH),
            ..WindowParams::default()
        },
    )
}

/// Whether a requester of `score` with `pair` at an uploader is a stranger there: below the
/// node's stranger standing and never signed for it.
fn is_stranger(score: f64, pair: &PairState) -> bool {
    score < crate::daemon::STRANGER_STANDING && pair.acked == 0
}

/// Whether `len` bytes to stranger `to` fit the allowance of uploader `from` now, after writing
/// off (and forgiving in their pairs) what strangers left unsigned too long.
fn stranger_room(
    strangers: &mut StrangerCredit<u32>,
    pairs: &mut HashMap<(u32, u32), PairState>,
    from: u32,
    to: u32,
    len: u64,
    now_ms: u64,
) -> bool {
    for (peer, bytes) in strangers.expire(now_ms) {
        pairs.entry((from, peer)).or_default().forgiven += bytes;
    }
    strangers.may_draw(&to, len)
}

/// Gossip rounds until a receipt made at one node has reached all `n`: ⌈log₃ n⌉ + 1 — a node
/// starts one session per interval and answers about one, so news about triples each round;
/// this matches the propagation bench's median-to-max rounds to 100% at N = 10–1,000
/// (docs/PERFORMANCE.md, "Gossip: propagation").
pub fn gossip_rounds(n: usize) -> u64 {
    let n = n.max(2) as f64;
    (n.ln() / 3f64.ln()).ceil() as u64 + 1
}

/// The key of simulated identity `i`: derived from the seed, so orders and trades are signed
/// by the same keys in every run.
fn identity(seed: u64, i: u32) -> Identity {
    let mut input = b"tally-sim-identity".to_vec();
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&i.to_le_bytes());
    Identity::from_secret_bytes(*blake3::hash(&input).as_bytes())
}

/// Up to `k` of `items`, evenly spaced.
fn sample<T: Copy>(items: &[T], k: usize) -> Vec<T> {
    if items.len() <= k {
        return items.to_vec();
    }
    (0..k).map(|i| items[i * items.len() / k]).collect()
}

impl<'a> Sim<'a> {
    /// Builds the network of `sc` and schedules its events.
    /// Every node's credit window at the floor: the scenario's, as the real runner configures it.
    fn window_floor(&self) -> u64 {
        self.sc.credit_window.unwrap_or(WINDOW_FLOOR)
    }

    pub fn new(sc: &'a Scenario, options: SimOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(sc.seed);
        let floor = sc.credit_window.unwrap_or(WINDOW_FLOOR);
        let n = sc.peers() as usize;
        let full_mesh = n <= MAX_CONNECTIONS + 1;
        let full_view = n <= FULL_VIEW_MAX_NODES;
        let gossip_delay = gossip_rounds(n) * GOSSIP_INTERVAL_US;
        let batch_period = if full_view {
            GOSSIP_INTERVAL_US
        } else {
            (gossip_delay / 2).max(GOSSIP_INTERVAL_US)
        };
        let has_sybils = sc.groups.iter().any(|g| g.role == Role::Sybil);
        let contents: Vec<ContentInfo> = sc
            .content
            .iter()
            .map(|c| ContentInfo {
                size: c.size,
                chunks: c.size.div_ceil(CHUNK) as u32,
                holders: Vec::new(),
            })
            .collect();
        let mut sim = Sim {
            sc,
            options,
            rng: ChaCha8Rng::seed_from_u64(0),
            pick_rng: ChaCha8Rng::seed_from_u64(sc.seed ^ 0x5eed_0fc4_u64),
            key_seed: sc.seed,
            now: 0,
            end: sc.duration_s * US,
            seq: 0,
            heap: BinaryHeap::new(),
            nodes: Vec::with_capacity(n),
            idents: Vec::with_capacity(n),
            dls: Vec::new(),
            contents,
            pairs: HashMap::new(),
            dirty: Vec::new(),
            deliveries: VecDeque::new(),
            full_mesh,
            full_view,
            gossip_delay,
            batch_period,
            observers: Vec::new(),
            cliques: Vec::new(),
            market: SimMarket::new(&sc.network),
            obs: Observations::default(),
            group_down: vec![0; sc.groups.len()],
            sample_period: (sc.duration_s * US / SERIES_POINTS).max(US),
            receipts: 0,
            gossip_copies: 0,
            last_receipt: None,
        };

        // Nodes and their first identities, group by group.
        for (g, group) in sc.groups.iter().enumerate() {
            let first = sim.nodes.len() as u32;
            for k in 0..group.count {
                let node = sim.nodes.len() as u32;
                let gateway = group.role == Role::Sybil && k == 0;
                let uploads = group.role.uploads() || gateway;
                let signs = if group.role == Role::Sybil {
                    gateway
                } else {
                    group.role.signs()
                };
                let honest = group.role.uploads();
                let online = group.role != Role::LateJoiner;
                let holds = sc
                    .content
                    .iter()
                    .enumerate()
                    .map(|(c, item)| {
                        if item.holders.contains(&g) {
                            Holding {
                                bits: Bits::default(),
                                count: sim.contents[c].chunks,
                                full: true,
                            }
                        } else {
                            Holding::default()
                        }
                    })
                    .collect();
                let config = SchedulerConfig {
                    seed: sc.seed ^ u64::from(node).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    ..SchedulerConfig::default()
                };
                let ident = sim.idents.len() as u32;
                let pid = identity(sc.seed, ident).peer_id();
                sim.idents.push(Ident {
                    pid,
                    node,
                    gave: false,
                });
                sim.obs.peers.push(PeerObs {
                    group: g,
                    bytes_up: 0,
                    bytes_down: 0,
                });
                sim.nodes.push(Node {
                    group: g as u32,
                    role: group.role,
                    ident,
                    signs,
                    online,
                    online_since: 0,
                    online_total: 0,
                    up: rate(group.upload_limit),
                    down: rate(group.download_limit),
                    down_free: 0,
                    neighbours: Vec::new(),
                    sched: uploads.then(|| Scheduler::new(config)),
                    busy: false,
                    standing: uploads.then(|| Standing::new(pid, StandingParams::default())),
                    shadow: (has_sybils && honest)
                        .then(|| Standing::new(pid, StandingParams::default())),
                    holds,
                    downloads: Vec::new(),
                    epoch: 0,
                    customers: Vec::new(),
                    strangers: StrangerCredit::new(
                        floor,
                        crate::daemon::stranger_share(floor),
                        STRANGER_WRITE_OFF_MS,
                    ),
                });
                if honest {
                    sim.observers.push(node);
                }
            }
            if group.role == Role::Sybil {
                sim.cliques.push(Clique {
                    members: (first..first + group.count).collect(),
                    gateway: first,
                });
            }
        }
        for (c, item) in sc.content.iter().enumerate() {
            for (node, st) in sim.nodes.iter().enumerate() {
                if item.holders.contains(&(st.group as usize)) {
                    sim.contents[c].holders.push(node as u32);
                }
            }
        }

        // Connections.
        if full_mesh {
            for a in 0..n as u32 {
                sim.nodes[a as usize].neighbours = (0..n as u32).filter(|&b| b != a).collect();
            }
        } else {
            for a in 0..n as u32 {
                let mut tries = 0;
                let mut dialed = 0;
                while dialed < TARGET_PEERS && tries < 4 * TARGET_PEERS {
                    tries += 1;
                    let b = rng.random_range(0..n as u32);
                    if sim.connect(a, b) {
                        dialed += 1;
                    }
                }
            }
        }

        // Downloads: each wanting peer starts at a uniform moment of its content's spread.
        let mut starts = Vec::new();
        for (c, item) in sc.content.iter().enumerate() {
            for &g in &item.wanted_by {
                let join = sc.groups[g].join_at_s * US;
                for node in 0..n {
                    if sim.nodes[node].group as usize != g {
                        continue;
                    }
                    let spread = rng.random_range(0..=item.spread_s * US);
                    let at = (item.at_s * US + spread).max(join);
                    if at >= sim.end {
                        continue;
                    }
                    let dl = sim.dls.len() as u32;
                    sim.dls.push(Download {
                        node: node as u32,
                        content: c as u32,
                        start_at: at,
                        obs: 0,
                        started: false,
                        done: false,
                        failed: false,
                        wanted: Bits::default(),
                        lanes: Vec::new(),
                        known: 0,
                        inflight: 0,
                        bytes: 0,
                        stalled_since: None,
                        backoff: REDISCOVER_US,
                        rediscover: false,
                    });
                    sim.nodes[node].downloads.push(dl);
                    starts.push((at, dl));
                }
            }
        }
        for (at, dl) in starts {
            sim.push(at, Ev::Start(dl));
        }
        for node in 0..n {
            let role = sim.nodes[node].role;
            let group = &sc.groups[sim.nodes[node].group as usize];
            if role == Role::LateJoiner {
                sim.push(group.join_at_s * US, Ev::Join(node as u32));
            }
            if let Some(churn) = group.churn {
                sim.push(churn.online_s * US, Ev::Churn(node as u32));
            }
        }
        for (i, order) in sc.orders.iter().enumerate() {
            sim.push(order.at_s * US, Ev::Order(i as u32));
        }
        sim.push(sim.batch_period, Ev::GossipBatch);
        sim.push(0, Ev::Sample);

        // The cliques' receipts among themselves, known everywhere from the start.
        for ci in 0..sim.cliques.len() {
            let members = sim.cliques[ci].members.clone();
            let group = &sc.groups[sim.nodes[members[0] as usize].group as usize];
            let (claim, shape) = (group.sybil_claim.unwrap_or(0), group.claim_shape);
            for (oa, &a) in members.iter().enumerate() {
                for (ob, &b) in members.iter().enumerate() {
                    if !shape.claims(oa as u32, ob as u32) {
                        continue;
                    }
                    let (ia, ib) = (sim.nodes[a as usize].ident, sim.nodes[b as usize].ident);
                    sim.idents[ia as usize].gave = true;
                    let (pa, pb) = (sim.idents[ia as usize].pid, sim.idents[ib as usize].pid);
                    for node in &mut sim.nodes {
                        if let Some(standing) = &mut node.standing {
                            standing.observe(pa, pb, claim);
                        }
                    }
                }
            }
        }
        sim.rng = rng;
        sim
    }

    fn push(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            time,
            seq: self.seq,
            ev,
        });
    }

    fn now_ms(&self) -> u64 {
        self.now / 1000
    }

    fn secs(t: u64) -> f64 {
        t as f64 / US as f64
    }

    /// Connects `a` and `b` unless they are one, connected, or either is at its cap.
    fn connect(&mut self, a: u32, b: u32) -> bool {
        if a == b
            || self.nodes[a as usize].neighbours.len() >= MAX_CONNECTIONS
            || self.nodes[b as usize].neighbours.len() >= MAX_CONNECTIONS
            || self.nodes[a as usize].neighbours.contains(&b)
        {
            return false;
        }
        self.nodes[a as usize].neighbours.push(b);
        self.nodes[b as usize].neighbours.push(a);
        true
    }

    /// Runs to the end and reports.
    pub fn run(mut self, progress: &mut dyn FnMut(SimProgress)) -> Report {
        let total_s = Self::secs(self.end);
        let step = (self.end / 100).max(1);
        let mut next_progress = step;
        while let Some(entry) = self.heap.pop() {
            if entry.time > self.end {
                break;
            }
            self.now = entry.time;
            if self.now >= next_progress {
                progress(SimProgress {
                    simulated_s: Self::secs(self.now),
                    total_s,
                });
                next_progress = (self.now / step + 1) * step;
            }
            match entry.ev {
                Ev::Start(dl) => self.start(dl),
                Ev::Join(node) => self.join(node),
                Ev::Churn(node) => self.churn(node),
                Ev::Ready(node) => self.serve(node),
                Ev::Arrive(a) => self.arrive(a),
                Ev::Rediscover(dl) => self.rediscover(dl),
                Ev::GossipBatch => self.gossip_batch(),
                Ev::Deliver => self.deliver(),
                Ev::Order(i) => self.post_order(i),
                Ev::Sample => self.sample(),
            }
        }
        self.now = self.end;
        progress(SimProgress {
            simulated_s: total_s,
            total_s,
        });
        self.finish()
    }

    // ---- downloads ----

    fn start(&mut self, dl: u32) {
        let d = &self.dls[dl as usize];
        let (node, c) = (d.node as usize, d.content as usize);
        let ident = self.nodes[node].ident;
        let chunks = self.contents[c].chunks;
        self.obs.downloads.push(DownloadObs {
            peer: ident as usize,
            content: c,
            started_s: Self::secs(self.dls[dl as usize].start_at),
            first_mib_s: None,
            completed_s: None,
            bytes: 0,
            newcomer: !self.idents[ident as usize].gave,
        });
        let hold = &mut self.nodes[node].holds[c];
        if !hold.full && hold.bits.is_empty() {
            hold.bits = Bits::empty(chunks);
        }
        let d = &mut self.dls[dl as usize];
        d.obs = self.obs.downloads.len() - 1;
        d.started = true;
        self.reset_wanted(dl);
        if !self.full_mesh {
            self.dial(dl);
        }
        self.refill(dl);
    }

    /// Every chunk not held is wanted again; nothing is in flight.
    fn reset_wanted(&mut self, dl: u32) {
        let d = &mut self.dls[dl as usize];
        let hold = &self.nodes[d.node as usize].holds[d.content as usize];
        let chunks = self.contents[d.content as usize].chunks;
        d.wanted = Bits::empty(chunks);
        if !hold.full {
            for i in 0..chunks {
                if !hold.bits.get(i) {
                    d.wanted.set(i);
                }
            }
        }
        d.inflight = 0;
        for lane in &mut d.lanes {
            lane.inflight = 0;
        }
    }

    /// The standing score of identity `subject` at node `observer`.
    fn score(&self, observer: usize, subject: u32) -> f64 {
        self.nodes[observer]
            .standing
            .as_ref()
            .map_or(0.0, |s| s.of(&self.idents[subject as usize].pid).score)
    }

    /// Dials up to [`PROVIDER_DIALS`] nodes that hold some of the content (gossip's provider
    /// records), when the download has fewer providers holding it than that.
    fn dial(&mut self, dl: u32) {
        let d = &self.dls[dl as usize];
        let (node, c) = (d.node, d.content as usize);
        let holding = self.nodes[node as usize]
            .neighbours
            .iter()
            .filter(|&&p| self.nodes[p as usize].holds[c].count > 0)
            .count();
        if holding >= PROVIDER_DIALS {
            return;
        }
        let holders = self.contents[c].holders.len();
        if holders == 0 {
            return;
        }
        let mut dialed = 0;
        for _ in 0..4 * PROVIDER_DIALS {
            if dialed == PROVIDER_DIALS - holding {
                break;
            }
            let p = self.contents[c].holders[self.rng.random_range(0..holders)];
            if self.nodes[p as usize].online && self.connect(node, p) {
                dialed += 1;
            }
        }
    }

    /// Fills every lane of download `dl` up to [`PIPELINE`] requests.
    fn refill(&mut self, dl: u32) {
        let now_ms = self.now_ms();
        let window_floor = self.window_floor();
        let Sim {
            nodes,
            dls,
            idents,
            pairs,
            market,
            heap,
            seq,
            contents,
            now,
            options,
            pick_rng,
            ..
        } = self;
        let d = &mut dls[dl as usize];
        if !d.started || d.done || d.failed {
            return;
        }
        let node = d.node as usize;
        if !nodes[node].online {
            return;
        }
        while d.known < nodes[node].neighbours.len() {
            d.lanes.push(Lane {
                provider: nodes[node].neighbours[d.known],
                inflight: 0,
            });
            d.known += 1;
        }
        let c = d.content as usize;
        let me = nodes[node].ident;
        let signs = nodes[node].signs;
        let mut propose = Vec::new();
        let epoch = nodes[node].epoch;
        let pid = idents[me as usize].pid;
        let size = contents[c].size;
        for lane in &mut d.lanes {
            let p = lane.provider as usize;
            if !nodes[p].online || nodes[p].sched.is_none() {
                continue;
            }
            let from = nodes[p].ident;
            while lane.inflight < PIPELINE {
                let hold = &nodes[p].holds[c];
                let has = (!hold.full).then_some(&hold.bits);
                let chunk = if hold.count == 0 {
                    None
                } else {
                    match (options.chunk_pick, has) {
                        (ChunkPick::Lowest, None) => d.wanted.first(),
                        (ChunkPick::Lowest, Some(has)) => d.wanted.first_common(has),
                        (ChunkPick::Random, has) => match d.wanted.count_common(has) {
                            0 => None,
                            n => d.wanted.nth_common(has, pick_rng.random_range(0..n)),
                        },
                    }
                };
                let Some(chunk) = chunk else { break };
                let len = (size - u64::from(chunk) * CHUNK).min(CHUNK);
                let score = nodes[p].standing.as_ref().map_or(0.0, |s| s.of(&pid).score);
                let trade = if market.active() {
                    market.priority(from, me, now_ms)
                } else {
                    None
                };
                // A request that cannot fit the window, or the strangers' allowance, is refused
                // at once; the requester asks again when it stalls (a signer proposes first).
                let pair = pairs.get(&(from, me)).copied().unwrap_or_default();
                let stranger = trade.is_none() && is_stranger(score, &pair);
                let room = !stranger
                    || stranger_room(&mut nodes[p].strangers, pairs, from, me, len, now_ms);
                let pair = pairs.get(&(from, me)).copied().unwrap_or_default();
                if !room
                    || (pair.sent - pair.acked).saturating_add(len)
                        > window_for(window_floor, score).saturating_add(pair.forgiven)
                {
                    if signs && pair.received > pair.acked {
                        propose.push((from, me));
                    }
                    break;
                }
                let priority = trade.unwrap_or(score);
                let Some(sched) = nodes[p].sched.as_mut() else {
                    break;
                };
                sched.set_standing(pid, priority);
                if sched.enqueue(pid, Req { dl, chunk, epoch }, len).is_err() {
                    break;
                }
                d.wanted.clear(chunk);
                lane.inflight += 1;
                d.inflight += 1;
                if !nodes[p].busy {
                    nodes[p].busy = true;
                    *seq += 1;
                    heap.push(Entry {
                        time: *now,
                        seq: *seq,
                        ev: Ev::Ready(p as u32),
                    });
                }
            }
        }
        if d.inflight > 0 {
            d.stalled_since = None;
            d.backoff = REDISCOVER_US;
        } else {
            d.stalled_since.get_or_insert(*now);
            if !d.rediscover {
                d.rediscover = true;
                let at = *now + d.backoff;
                d.backoff = (d.backoff * 2).min(MAX_BACKOFF_US);
                *seq += 1;
                heap.push(Entry {
                    time: at,
                    seq: *seq,
                    ev: Ev::Rediscover(dl),
                });
            }
        }
        // A signer refused by a full window proposes for what it holds unsigned.
        for (from, to) in propose {
            self.receipt(from, to);
        }
    }

    fn rediscover(&mut self, dl: u32) {
        let d = &mut self.dls[dl as usize];
        d.rediscover = false;
        if !d.started || d.done || d.failed || !self.nodes[d.node as usize].online {
            return;
        }
        if !self.full_mesh {
            self.dial(dl);
        }
        self.refill(dl);
        let d = &self.dls[dl as usize];
        if d.inflight > 0 {
            return;
        }
        // The node gives a download up when no connected peer is left to ask for 30 s.
        let usable = d
            .lanes
            .iter()
            .any(|l| self.nodes[l.provider as usize].online);
        if !usable
            && d.stalled_since
                .is_some_and(|s| self.now - s > PROVIDER_WAIT_US)
        {
            self.dls[dl as usize].failed = true;
        }
    }

    fn lane(&mut self, dl: u32, provider: u32) -> Option<&mut Lane> {
        self.dls[dl as usize]
            .lanes
            .iter_mut()
            .find(|l| l.provider == provider)
    }

    // ---- uploads ----

    /// The uploader's link is free: serves the next request in its scheduler's order.
    fn serve(&mut self, p: u32) {
        let now_ms = self.now_ms();
        loop {
            let node = &mut self.nodes[p as usize];
            let next = match node.sched.as_mut() {
                Some(sched) if node.online => sched.next(now_ms),
                _ => Ok(None),
            };
            let Ok(Some(next)) = next else {
                node.busy = false;
                return;
            };
            let Req { dl, chunk, epoch } = next.request;
            let len = next.bytes;
            let d = &self.dls[dl as usize];
            let dn = d.node as usize;
            if d.done || d.failed || self.nodes[dn].epoch != epoch || !self.nodes[dn].online {
                // Its requester is gone or finished: the turn is skipped.
                continue;
            }
            let from = self.nodes[p as usize].ident;
            let to = self.nodes[dn].ident;
            let score = self.score(p as usize, to);
            let window = window_for(self.window_floor(), score);
            let trade = self.market.active() && self.market.priority(from, to, now_ms).is_some();
            let pair = self.pairs.get(&(from, to)).copied().unwrap_or_default();
            let stranger = !trade && is_stranger(score, &pair);
            let room = !stranger
                || stranger_room(
                    &mut self.nodes[p as usize].strangers,
                    &mut self.pairs,
                    from,
                    to,
                    len,
                    now_ms,
                );
            let pair = self.pairs.entry((from, to)).or_default();
            if !room || (pair.sent - pair.acked).saturating_add(len) > window + pair.forgiven {
                self.refused(dl, p, chunk);
                continue;
            }
            if stranger {
                self.nodes[p as usize].strangers.draw(to, len, now_ms);
            }
            let (credits, trade_bytes) = if self.market.active() {
                self.market.send(from, to, len, now_ms)
            } else {
                (len, 0)
            };
            let pair = self.pairs.entry((from, to)).or_default();
            pair.sent += len;
            self.obs.peers[from as usize].bytes_up += len;
            self.obs.payload_bytes += len;
            let up_done = self.now + duration(len, self.nodes[p as usize].up);
            let receiver = &mut self.nodes[dn];
            let arrive =
                up_done.max(receiver.down_free.max(self.now) + duration(len, receiver.down));
            receiver.down_free = arrive;
            self.push(
                arrive,
                Ev::Arrive(Arrival {
                    dl,
                    provider: p,
                    from,
                    to,
                    chunk,
                    epoch,
                    len,
                    credits,
                    trade_bytes,
                }),
            );
            self.push(up_done, Ev::Ready(p));
            return;
        }
    }

    /// The provider refused a request at its turn (the window or the strangers' allowance is
    /// full); the requester asks again when it stalls.
    fn refused(&mut self, dl: u32, provider: u32, chunk: u32) {
        self.dls[dl as usize].wanted.set(chunk);
        self.dls[dl as usize].inflight -= 1;
        if let Some(lane) = self.lane(dl, provider) {
            lane.inflight = lane.inflight.saturating_sub(1);
        }
        self.refill(dl);
    }

    fn arrive(&mut self, a: Arrival) {
        let d = &self.dls[a.dl as usize];
        let node = d.node as usize;
        if self.nodes[node].epoch != a.epoch || d.done || d.failed {
            return;
        }
        let c = d.content as usize;
        let obs = d.obs;
        if let Some(lane) = self.lane(a.dl, a.provider) {
            lane.inflight = lane.inflight.saturating_sub(1);
        }
        let d = &mut self.dls[a.dl as usize];
        d.inflight = d.inflight.saturating_sub(1);
        let hold = &mut self.nodes[node].holds[c];
        if hold.full || hold.bits.get(a.chunk) {
            return;
        }
        hold.bits.set(a.chunk);
        hold.count += 1;
        let count = hold.count;
        if count == 1 {
            self.contents[c].holders.push(node as u32);
        }
        d.bytes += a.len;
        let size = self.contents[c].size;
        let o = &mut self.obs.downloads[obs];
        o.bytes = d.bytes;
        if o.first_mib_s.is_none() && d.bytes >= MIB.min(size) {
            o.first_mib_s = Some(Self::secs(self.now));
        }
        self.obs.peers[a.to as usize].bytes_down += a.len;
        self.group_down[self.nodes[node].group as usize] += a.len;
        let pair = self.pairs.entry((a.from, a.to)).or_default();
        pair.received += a.len;
        pair.received_credits += a.credits;
        let unacknowledged = pair.received - pair.acked;
        if a.trade_bytes > 0 {
            self.market.received(a.from, a.to, a.trade_bytes);
        }
        if self.nodes[node].signs && unacknowledged >= ACK_BYTES {
            self.receipt(a.from, a.to);
        }
        if count == self.contents[c].chunks {
            self.complete(a.dl);
        } else {
            self.refill(a.dl);
        }
    }

    fn complete(&mut self, dl: u32) {
        let d = &mut self.dls[dl as usize];
        d.done = true;
        let node = d.node as usize;
        let c = d.content as usize;
        self.obs.downloads[d.obs].completed_s = Some(Self::secs(self.now));
        let hold = &mut self.nodes[node].holds[c];
        hold.full = true;
        hold.bits = Bits::default();
        let me = self.nodes[node].ident;
        if self.nodes[node].signs {
            let providers: Vec<u32> = self.dls[dl as usize]
                .lanes
                .iter()
                .map(|l| self.nodes[l.provider as usize].ident)
                .collect();
            for from in providers {
                let pair = self.pairs.get(&(from, me)).copied().unwrap_or_default();
                if pair.received > pair.acked {
                    self.receipt(from, me);
                }
            }
        }
        if self.nodes[node].role == Role::Whitewasher {
            self.new_identity(node);
        }
    }

    /// A whitewasher leaves its identity for a fresh one; its other downloads go on under it.
    fn new_identity(&mut self, node: usize) {
        let ident = self.idents.len() as u32;
        let pid = identity(self.key_seed, ident).peer_id();
        self.idents.push(Ident {
            pid,
            node: node as u32,
            gave: false,
        });
        self.obs.peers.push(PeerObs {
            group: self.nodes[node].group as usize,
            bytes_up: 0,
            bytes_down: 0,
        });
        self.nodes[node].ident = ident;
        self.nodes[node].epoch += 1;
        let downloads = self.nodes[node].downloads.clone();
        for dl in downloads {
            let d = &self.dls[dl as usize];
            if !d.started || d.done || d.failed {
                continue;
            }
            self.reset_wanted(dl);
            self.refill(dl);
        }
    }

    // ---- receipts and gossip ----

    /// The downloader `to` proposes a receipt for everything received from `from`, and `from`
    /// countersigns it: both hold it at once, and it leaves for gossip with the next batch.
    fn receipt(&mut self, from: u32, to: u32) {
        let pair = self.pairs.entry((from, to)).or_default();
        if pair.received <= pair.acked {
            return;
        }
        pair.acked = pair.received;
        pair.acked_credits = pair.received_credits;
        // It signed: counted from what it signed for, and out of the strangers' allowance.
        pair.forgiven = 0;
        let credits = pair.acked_credits;
        let uploader = self.idents[from as usize].node as usize;
        self.nodes[uploader].strangers.graduate(&to);
        if !pair.dirty {
            pair.dirty = true;
            self.dirty.push((from, to));
        }
        self.receipts += 1;
        self.last_receipt = Some(self.now);
        if credits > 0 {
            self.idents[from as usize].gave = true;
        }
        let (un, dn) = (
            self.idents[from as usize].node as usize,
            self.idents[to as usize].node as usize,
        );
        self.observe(un, from, to, credits);
        self.observe(dn, from, to, credits);
        let customers = &mut self.nodes[un].customers;
        if let Err(at) = customers.binary_search(&(dn as u32)) {
            customers.insert(at, dn as u32);
        }
        if self.market.active() {
            self.market.acknowledged(from, to, self.now_ms());
        }
    }

    /// Node `at` takes the receipt `from` → `to` for `credits` in all.
    fn observe(&mut self, at: usize, from: u32, to: u32, credits: u64) {
        let (pf, pt) = (self.idents[from as usize].pid, self.idents[to as usize].pid);
        let node = &mut self.nodes[at];
        if let Some(standing) = &mut node.standing {
            standing.observe(pf, pt, credits);
        }
        if let Some(shadow) = &mut node.shadow {
            shadow.observe(pf, pt, credits);
        }
    }

    fn gossip_batch(&mut self) {
        let batch: Vec<(u32, u32, u64)> = self
            .dirty
            .drain(..)
            .map(|key| {
                let pair = self.pairs.entry(key).or_default();
                pair.dirty = false;
                (key.0, key.1, pair.acked_credits)
            })
            .collect();
        if !batch.is_empty() {
            self.deliveries.push_back(batch);
            self.push(self.now + self.gossip_delay, Ev::Deliver);
        }
        if self.now + self.batch_period <= self.end {
            self.push(self.now + self.batch_period, Ev::GossipBatch);
        }
    }

    /// A batch reaches the nodes that weigh it: every node (full view), or the direct
    /// customers of the receipt's downloader (bounded view).
    fn deliver(&mut self) {
        let Some(batch) = self.deliveries.pop_front() else {
            return;
        };
        let others = self.nodes.len().saturating_sub(2) as u64;
        for (from, to, credits) in batch {
            self.gossip_copies += others;
            let un = self.idents[from as usize].node;
            let dn = self.idents[to as usize].node;
            if self.full_view {
                for o in 0..self.nodes.len() {
                    if o as u32 != un && o as u32 != dn {
                        self.observe(o, from, to, credits);
                    }
                }
            } else {
                let customers = std::mem::take(&mut self.nodes[dn as usize].customers);
                for &o in &customers {
                    if o != un {
                        self.observe(o as usize, from, to, credits);
                    }
                }
                self.nodes[dn as usize].customers = customers;
            }
        }
    }

    // ---- churn, joins, orders, samples ----

    fn join(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        n.online = true;
        n.online_since = self.now;
        // Downloads due at the join started while it was still offline.
        for dl in n.downloads.clone() {
            self.refill(dl);
        }
    }

    fn churn(&mut self, node: u32) {
        let Some(churn) = self.sc.groups[self.nodes[node as usize].group as usize].churn else {
            return;
        };
        let n = &mut self.nodes[node as usize];
        let downloads = n.downloads.clone();
        if n.online {
            n.online = false;
            n.online_total += self.now - n.online_since;
            n.epoch += 1;
            // Its connections close: requests queued at it and by it are gone.
            if n.sched.is_some() {
                let config = SchedulerConfig {
                    seed: self.sc.seed ^ u64::from(node),
                    ..SchedulerConfig::default()
                };
                n.sched = Some(Scheduler::new(config));
            }
            for dl in downloads {
                if self.dls[dl as usize].started && !self.dls[dl as usize].done {
                    self.reset_wanted(dl);
                }
            }
            // Requests other nodes had queued at it are gone too: they ask again elsewhere.
            let waiting: Vec<u32> = (0..self.dls.len() as u32)
                .filter(|&dl| {
                    let d = &self.dls[dl as usize];
                    d.started
                        && !d.done
                        && !d.failed
                        && d.lanes.iter().any(|l| l.provider == node && l.inflight > 0)
                })
                .collect();
            for dl in waiting {
                self.reset_wanted(dl);
                self.refill(dl);
            }
            self.push(self.now + churn.offline_s * US, Ev::Churn(node));
        } else {
            n.online = true;
            n.online_since = self.now;
            for dl in downloads {
                self.refill(dl);
            }
            self.push(self.now + churn.online_s * US, Ev::Churn(node));
        }
    }

    fn post_order(&mut self, i: u32) {
        let order = &self.sc.orders[i as usize];
        let now_ms = self.now_ms();
        let seed = self.key_seed;
        for node in 0..self.nodes.len() {
            if self.nodes[node].group as usize != order.group || !self.nodes[node].online {
                continue;
            }
            let ident = self.nodes[node].ident;
            self.market
                .post(ident, &identity(seed, ident), order, now_ms);
        }
        self.market.agree_all(now_ms, &|i| identity(seed, i));
    }

    fn sample(&mut self) {
        self.obs.series.push(SeriesPoint {
            t_s: Self::secs(self.now),
            bytes_down: self.group_down.clone(),
        });
        if self.now + self.sample_period < self.end {
            self.push(self.now + self.sample_period, Ev::Sample);
        }
    }

    // ---- the end ----

    fn finish(mut self) -> Report {
        let end_s = Self::secs(self.end);
        if self.obs.series.last().is_none_or(|p| p.t_s < end_s) {
            self.obs.series.push(SeriesPoint {
                t_s: end_s,
                bytes_down: self.group_down.clone(),
            });
        }
        // Standing as the honest peers see the others, sampled beyond OBS_SAMPLE.
        let observers = sample(&self.observers, OBS_SAMPLE);
        let mut subjects = Vec::new();
        for g in 0..self.sc.groups.len() {
            let of_group: Vec<u32> = (0..self.idents.len() as u32)
                .filter(|&i| self.nodes[self.idents[i as usize].node as usize].group as usize == g)
                .collect();
            subjects.extend(sample(&of_group, OBS_SAMPLE));
        }
        for &o in &observers {
            let Some(standing) = &self.nodes[o as usize].standing else {
                continue;
            };
            let me = self.nodes[o as usize].ident;
            for &s in &subjects {
                if s == me {
                    continue;
                }
                self.obs.standing.push(StandingObs {
                    observer: me as usize,
                    subject: s as usize,
                    score: standing.of(&self.idents[s as usize].pid).score,
                });
            }
            for clique in &self.cliques {
                let clique_raw = clique
                    .members
                    .iter()
                    .map(|&m| {
                        let pid = self.idents[self.nodes[m as usize].ident as usize].pid;
                        standing.of(&pid).raw.max(0.0)
                    })
                    .sum();
                let gateway = self.idents[self.nodes[clique.gateway as usize].ident as usize].pid;
                let edge_raw = self.nodes[o as usize]
                    .shadow
                    .as_ref()
                    .map_or(0.0, |s| s.of(&gateway).raw);
                self.obs.sybil.push(SybilObs {
                    observer: me as usize,
                    clique_raw,
                    edge_raw,
                });
            }
        }
        // The gossip model: the last receipt leaves with the batch after it and reaches every
        // node one gossip delay later.
        self.obs.gossip_convergence_s = self.last_receipt.map(|t| {
            let batch_at = t.div_ceil(self.batch_period) * self.batch_period;
            Self::secs(batch_at + self.gossip_delay - t)
        });
        let online_s: f64 = self
            .nodes
            .iter()
            .map(|n| {
                let open = if n.online {
                    self.end - n.online_since
                } else {
                    0
                };
                Self::secs(n.online_total + open)
            })
            .sum();
        let control = self.receipts * PROPOSAL_EXCHANGE_BYTES
            + (self.gossip_copies as f64 * RECEIPT_BYTES * GOSSIP_BYTES_FACTOR) as u64
            + (online_s * IDLE_GOSSIP_BYTES_PER_NODE_S) as u64;
        self.obs.control_bytes = Some(control);
        Report::new(self.sc, Mode::Simulated, self.obs, end_s)
    }
}
