//! Gossip propagation: push-pull anti-entropy among N simulated nodes that run the gossip session
//! as the node will, over the real `sync` logic and real signed receipts, counting every byte of
//! every frame. It prints, in tables:
//!
//! 1. the rounds (and bytes) until one new receipt reaches 99% and 100% of N = 10, 30, 100 and
//!    1,000 nodes, over 20 seeds, in sequential and synchronous rounds (below);
//! 2. the bytes of one session when nothing changed (1,000 and 100,000 pairs), and, frame by
//!    frame, when one receipt differs;
//! 3. the gossip bytes per new receipt per node under steady loads of 1, N/10, N and 4N new
//!    receipts per round (N = 30 and 100);
//! 4. the same two measures with eager push to k = 0, 1, 2 neighbours;
//! 5. the loads of 3 under variants of the exchange that the node does not run: a first message
//!    of one whole-set fingerprint instead of `initiate_with`'s 16, other `SyncParams`.
//!
//! **Topology.** A seeded sparse random graph: each node wants 4 to 8 neighbours (at most
//! N − 1), edges are added between nodes with room, then components are joined, so the graph is
//! connected. Node `i` is identity `i` of the pool.
//!
//! **Rounds.** In each round every node, in a random order, picks one random neighbour and runs
//! one session with it as initiator. Sessions run one after the other, so a receipt a node
//! learned earlier in the round travels on in the same round (*sequential* rounds: what nodes
//! whose timers are not aligned do). *Synchronous* rounds hold what a node receives (or makes)
//! until the round's end, so it only forwards what it held when the round began: the classic
//! round of the epidemic literature, and the pessimistic reading of "rounds".
//!
//! **A session** between initiator I and responder R, on one stream; every frame is a 4-byte
//! length then a postcard `GossipFrame` (1-byte tag):
//! 1. I sends `Request::Gossip` (4 + 1 bytes); then each side sends `Hello { conflicts_digest:
//!    [u8; 32], conflicts: u32 }` (4 + 1 + 32 + varint; no conflicts here, records are not
//!    simulated).
//! 2. I sends `Sync(initiate_with(..))`: 4 + 1 + varint(len) + len.
//! 3. A side that receives `Sync(m)` computes `respond_with(items, m, ..)`, sends the receipts
//!    named by `reply.send` in `Receipts` frames of at most 512 (4 + 1 + varint(count) + their
//!    postcard bytes), then `Sync(reply.message)`, or `End` (4 + 1) if there is none. The other
//!    side applies the receipts as each frame arrives (the node would verify them first; here
//!    they are real receipts but not checked again). The session ends when a side receives `End`.
//!
//! Every message is encoded, decoded (`Message::decode`, with its checks) and answered, as on the
//! wire. Only the latest receipt of a pair is kept: a node's receipt map is its `SyncItems` plus
//! one store of every receipt made in the run, keyed by (pair, seq), which is the same thing
//! since a pair's seq names its receipt.
//!
//! **Eager push** (optional, `fanout` k): a node that learns a receipt new to it sends it at once
//! to up to k random neighbours other than the one it learned it from, each push a
//! `Request::Push` frame (4 + 1) and a `Receipts` frame of one; the pushes ripple on before the
//! next session. k = 0 is plain anti-entropy.
//!
//! **Data.** A pool of 2,000 identities on one network. The shared ledger: 1,000 pairs among the
//! first 200 identities, with histories (seq up to 2,000, cumulative bytes, credits, a time in
//! 2026), signed by both parties; every node starts with all of it, so fingerprints are not
//! trivial. New receipts are made between two nodes (random uploader and downloader among the
//! N): the next seq of the pair if it has one, else seq 1; both parties hold it at once, as after
//! a real countersignature. The propagation test instead puts its one new receipt at one random
//! node only, the worst case (the other party offline).
//!
//! Every run ends by checking that every node holds exactly the union of all receipts (running
//! rounds until it does); the bench panics otherwise, or if a run needs too many rounds.
//!
//! `cargo bench -p tally-ledger --bench gossip` runs it (a couple of minutes on two cores).
//! `TALLY_BENCH_SEEDS=n` sets the seeds of the propagation test (default 20);
//! `TALLY_BENCH_BIG=0` skips N = 1,000. Without `--bench` (as under `cargo test --benches`) it
//! runs a small smoke test in a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use tally_ledger::sync::{
    Bound, Key, Message, Range, SyncItems, SyncParams, initiate_with, respond_with,
};
use tally_ledger::{Identity, NetworkId, Pair, PeerId, Receipt, ReceiptBody};

/// Bytes of a frame's length prefix.
const LENGTH_PREFIX: usize = 4;
/// Bytes of a `Request` or `GossipFrame` tag.
const TAG: usize = 1;
/// Bytes of `Hello::conflicts_digest`.
const DIGEST: usize = 32;
/// Most receipts in one `Receipts` frame.
const RECEIPTS_PER_FRAME: usize = 512;
/// Seconds between a node's sessions, to turn rounds into time (arithmetic only).
const INTERVAL_S: f64 = 1.0;
/// Identities in the pool (part 2's ledger is made among all of them, as in the sync bench).
const POOL: usize = 2_000;
/// Identities among which the shared ledger's pairs are made.
const LEDGER_IDENTITIES: usize = 200;
/// Neighbours each node wants, at least and at most.
const DEGREE: (usize, usize) = (4, 8);
/// Rounds of load before the measurement (the smoke test runs 2).
const WARMUP_ROUNDS: usize = 5;
/// Rounds of load measured (the smoke test runs 5).
const MEASURED_ROUNDS: usize = 20;
/// Start of the receipts' clock: 2026-09-21, Unix milliseconds.
const EPOCH_MS: u64 = 1_790_000_000_000;

/// SplitMix64, so every run simulates the same networks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// `Request::Gossip`, `Request::Push` or `GossipFrame::End`: a tag alone.
fn tag_frame() -> usize {
    LENGTH_PREFIX + TAG
}

/// `GossipFrame::Hello`.
fn hello_frame(conflicts: u32) -> usize {
    LENGTH_PREFIX + TAG + DIGEST + varint_len(u64::from(conflicts))
}

/// `GossipFrame::Sync` carrying an encoded message of `len` bytes.
fn sync_frame(len: usize) -> usize {
    LENGTH_PREFIX + TAG + varint_len(len as u64) + len
}

/// `GossipFrame::Receipts` carrying `count` receipts of `bytes` encoded bytes in all.
fn receipts_frame(count: usize, bytes: usize) -> usize {
    LENGTH_PREFIX + TAG + varint_len(count as u64) + bytes
}

/// The identities receipts are made among, and their network.
struct Pool {
    network: NetworkId,
    identities: Vec<Identity>,
    peers: Vec<PeerId>,
}

impl Pool {
    fn new(size: usize) -> Self {
        let identities: Vec<Identity> = (0..size as u64)
            .map(|i| {
                let seed =
                    blake3::hash(&[b"tally gossip bench".as_slice(), &i.to_le_bytes()].concat());
                Identity::from_secret_bytes(*seed.as_bytes())
            })
            .collect();
        let peers = identities.iter().map(Identity::peer_id).collect();
        Self {
            network: NetworkId::from_name("tally-gossip-bench"),
            identities,
            peers,
        }
    }

    fn key(&self, uploader: usize, downloader: usize) -> Key {
        tally_ledger::sync::pair_key(&Pair {
            uploader: self.peers[uploader],
            downloader: self.peers[downloader],
        })
    }
}

/// Every receipt made in a run, and the union every node must end with.
#[derive(Clone, Default)]
struct Ledger {
    /// Every receipt made, by (pair key, seq), with its postcard size.
    made: HashMap<(Key, u64), (Receipt, usize)>,
    /// The latest body of every pair, which the pair's next receipt builds on.
    latest: HashMap<Key, ReceiptBody>,
    /// The latest seq of every pair: what every node must hold in the end.
    union: SyncItems,
}

impl Ledger {
    /// Signs the next receipt of (`uploader`, `downloader`): the pair's next seq with 1–4 MiB
    /// more, or, for a new pair, seq 1 (or a history up to seq 2,000 if `history`).
    fn make(
        &mut self,
        pool: &Pool,
        uploader: usize,
        downloader: usize,
        history: bool,
        rng: &mut Rng,
    ) -> (Key, u64) {
        let key = pool.key(uploader, downloader);
        let more = (1 << 20) + rng.below(3 << 20) as u64;
        let body = match self.latest.get(&key) {
            Some(before) => ReceiptBody {
                seq: before.seq + 1,
                bytes: before.bytes + more,
                credits: before.credits + more / 1024,
                time_ms: before.time_ms + 1_000 + rng.below(60_000) as u64,
                ..*before
            },
            None => {
                let seq = if history {
                    1 + rng.below(2_000) as u64
                } else {
                    1
                };
                ReceiptBody {
                    uploader: pool.peers[uploader],
                    downloader: pool.peers[downloader],
                    seq,
                    bytes: seq * more,
                    credits: seq * more / 1024,
                    time_ms: EPOCH_MS + rng.below(30 * 86_400_000) as u64,
                }
            }
        };
        let receipt = body
            .propose(&pool.identities[downloader], &pool.network)
            .countersign(&pool.identities[uploader], &pool.network);
        let size = postcard::to_stdvec(&receipt).unwrap().len();
        self.made.insert((key, body.seq), (receipt, size));
        self.latest.insert(key, body);
        self.union.insert(key, body.seq);
        (key, body.seq)
    }

    /// `pairs` distinct pairs with histories among the first `identities` of the pool.
    fn shared(pool: &Pool, pairs: usize, identities: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let mut ledger = Ledger::default();
        while ledger.latest.len() < pairs {
            let (uploader, downloader) = (rng.below(identities), rng.below(identities));
            if uploader != downloader
                && !ledger.latest.contains_key(&pool.key(uploader, downloader))
            {
                ledger.make(pool, uploader, downloader, true, &mut rng);
            }
        }
        ledger
    }
}

/// The sparse random topology: neighbour lists, connected.
fn topology(n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let (low, high) = (DEGREE.0.min(n - 1), DEGREE.1.min(n - 1));
    let mut neighbours = vec![Vec::new(); n];
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    for &i in &order {
        let wanted = low + rng.below(high - low + 1);
        let mut tries = 0;
        while neighbours[i].len() < wanted && tries < 20 * n {
            tries += 1;
            let j = rng.below(n);
            if j != i && !neighbours[i].contains(&j) && neighbours[j].len() < high {
                neighbours[i].push(j);
                neighbours[j].push(i);
            }
        }
    }
    // Join the components: link a random member of each to a random node of the first.
    let mut component = vec![usize::MAX; n];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if component[start] != usize::MAX {
            continue;
        }
        let id = components.len();
        let mut members = vec![start];
        component[start] = id;
        let mut next = 0;
        while let Some(&at) = members.get(next) {
            next += 1;
            for &other in &neighbours[at] {
                if component[other] == usize::MAX {
                    component[other] = id;
                    members.push(other);
                }
            }
        }
        components.push(members);
    }
    for members in components.iter().skip(1) {
        let a = members[rng.below(members.len())];
        let b = components[0][rng.below(components[0].len())];
        neighbours[a].push(b);
        neighbours[b].push(a);
    }
    neighbours
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rounds {
    /// Sessions one after another; what is learned travels on in the same round.
    Sequential,
    /// What is learned in a round is held back until its end.
    Synchronous,
}

impl Rounds {
    fn name(self) -> &'static str {
        match self {
            Rounds::Sequential => "sequential",
            Rounds::Synchronous => "synchronous",
        }
    }
}

/// Bytes and receipts, summed over a period.
#[derive(Clone, Copy, Default, Debug)]
struct Traffic {
    /// Every byte sent (so received), frames, tags and length prefixes included.
    bytes: u64,
    /// Of which the receipts' own postcard bytes.
    receipt_bytes: u64,
    /// Of `bytes`, eager pushes.
    push_bytes: u64,
    /// Receipts sent.
    receipts: u64,
    /// Receipts received that the receiver already held, or held newer.
    redundant: u64,
    /// Sessions run.
    sessions: u64,
    /// Of `bytes`, what the sessions would have cost had nothing differed: the request, both
    /// Hellos, the first `Sync` (which does not depend on the peer) and an `End`.
    fixed: u64,
    /// `Sync` frames sent.
    messages: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;

    fn sub(self, o: Traffic) -> Traffic {
        Traffic {
            bytes: self.bytes - o.bytes,
            receipt_bytes: self.receipt_bytes - o.receipt_bytes,
            push_bytes: self.push_bytes - o.push_bytes,
            receipts: self.receipts - o.receipts,
            redundant: self.redundant - o.redundant,
            sessions: self.sessions - o.sessions,
            fixed: self.fixed - o.fixed,
            messages: self.messages - o.messages,
        }
    }
}

/// How the nodes gossip.
#[derive(Clone, Copy, Debug)]
struct Protocol {
    rounds: Rounds,
    /// Eager push: neighbours a newly learned receipt is pushed to at once (0: none).
    fanout: usize,
    opening: Opening,
    params: SyncParams,
}

impl Protocol {
    /// What the node runs: `initiate_with` and the default parameters, no eager push.
    fn node(rounds: Rounds) -> Self {
        Self {
            rounds,
            fanout: 0,
            opening: Opening::Split,
            params: SyncParams::default(),
        }
    }
}

/// The initiator's first message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Opening {
    /// `initiate_with`: `branching` fingerprints (or the items, if few): what the node sends.
    Split,
    /// A variant the sync module does not offer: one fingerprint of the whole set (or the items,
    /// if few), which the responder splits if it differs. Built here from the public `Message`.
    Whole,
}

struct Node {
    items: SyncItems,
    /// Synchronous rounds: what was received this round, applied at its end.
    pending: Vec<(Key, u64)>,
}

/// N nodes, their topology, and every receipt made.
struct Sim<'p> {
    pool: &'p Pool,
    ledger: Ledger,
    nodes: Vec<Node>,
    neighbours: Vec<Vec<usize>>,
    protocol: Protocol,
    rng: Rng,
    traffic: Traffic,
    /// Receipts learned and not pushed on yet: (node, key, seq, learned from).
    to_push: VecDeque<(usize, Key, u64, Option<usize>)>,
    /// The last session's `Sync` and `Receipts` frames, in order: (is `Receipts`, bytes).
    frames: Vec<(bool, usize)>,
}

impl<'p> Sim<'p> {
    /// `n` nodes that all hold `shared`, on a topology from `seed`.
    fn new(pool: &'p Pool, shared: &Ledger, n: usize, protocol: Protocol, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let neighbours = topology(n, &mut rng);
        Self {
            pool,
            ledger: shared.clone(),
            nodes: (0..n)
                .map(|_| Node {
                    items: shared.union.clone(),
                    pending: Vec::new(),
                })
                .collect(),
            neighbours,
            protocol,
            rng,
            traffic: Traffic::default(),
            to_push: VecDeque::new(),
            frames: Vec::new(),
        }
    }

    /// `node` receives (or makes) `seq` of `key`, from `from`.
    fn learn(&mut self, node: usize, key: Key, seq: u64, from: Option<usize>) {
        match self.protocol.rounds {
            Rounds::Synchronous => self.nodes[node].pending.push((key, seq)),
            Rounds::Sequential => {
                if self.nodes[node].items.insert(key, seq) {
                    if self.protocol.fanout > 0 {
                        self.to_push.push_back((node, key, seq, from));
                    }
                } else {
                    self.traffic.redundant += 1;
                }
            }
        }
    }

    /// Ends a synchronous round: every node applies what it received.
    fn settle(&mut self) {
        for node in &mut self.nodes {
            for (key, seq) in node.pending.drain(..) {
                if !node.items.insert(key, seq) {
                    self.traffic.redundant += 1;
                }
            }
        }
    }

    /// Eager pushes, until none is left.
    fn push_all(&mut self) {
        while let Some((node, key, seq, from)) = self.to_push.pop_front() {
            let mut targets: Vec<usize> = self.neighbours[node]
                .iter()
                .copied()
                .filter(|&peer| Some(peer) != from)
                .collect();
            self.rng.shuffle(&mut targets);
            let size = self.ledger.made[&(key, seq)].1;
            for &target in targets.iter().take(self.protocol.fanout) {
                let bytes = (tag_frame() + receipts_frame(1, size)) as u64;
                self.traffic.bytes += bytes;
                self.traffic.push_bytes += bytes;
                self.traffic.receipt_bytes += size as u64;
                self.traffic.receipts += 1;
                self.learn(target, key, seq, Some(node));
            }
        }
    }

    /// Signs a new receipt between nodes `uploader` and `downloader`, which both hold it.
    fn make_between(&mut self, uploader: usize, downloader: usize) {
        let (key, seq) = self
            .ledger
            .make(self.pool, uploader, downloader, false, &mut self.rng);
        self.learn(uploader, key, seq, Some(downloader));
        self.learn(downloader, key, seq, Some(uploader));
    }

    /// A new receipt between two random nodes.
    fn make_random(&mut self) {
        let n = self.nodes.len();
        let uploader = self.rng.below(n);
        let downloader = (uploader + 1 + self.rng.below(n - 1)) % n;
        self.make_between(uploader, downloader);
    }

    /// One session, `initiator` with `responder`, every frame counted.
    fn session(&mut self, initiator: usize, responder: usize) {
        let sides = [initiator, responder];
        let mut bytes = tag_frame() + 2 * hello_frame(0);
        let params = self.protocol.params;
        let items = &self.nodes[initiator].items;
        let mut message = match self.protocol.opening {
            Opening::Whole if items.len() > params.items_threshold() => {
                let (count, fingerprint) = items.fingerprint(&Bound::START, &Bound::END);
                Message {
                    ranges: vec![Range::Fingerprint {
                        upper: Bound::END,
                        count,
                        fingerprint,
                    }],
                }
            }
            _ => initiate_with(items, &params),
        };
        self.traffic.fixed += (bytes + sync_frame(message.encoded_len()) + tag_frame()) as u64;
        self.frames.clear();
        let mut sender = 0;
        loop {
            let encoded = message.encode();
            debug_assert_eq!(encoded.len(), message.encoded_len());
            bytes += sync_frame(encoded.len());
            self.frames.push((false, sync_frame(encoded.len())));
            self.traffic.messages += 1;
            let receiver = 1 - sender;
            let decoded = Message::decode(&encoded).expect("our own message decodes");
            let reply = respond_with(&self.nodes[sides[receiver]].items, &decoded, &params)
                .expect("our own message is valid");
            for frame in reply.send.chunks(RECEIPTS_PER_FRAME) {
                let mut receipts = Vec::with_capacity(frame.len());
                for key in frame {
                    let seq = self.nodes[sides[receiver]]
                        .items
                        .get(key)
                        .expect("sends what it holds");
                    receipts.push((*key, seq, self.ledger.made[&(*key, seq)].1));
                }
                let receipt_bytes: usize = receipts.iter().map(|r| r.2).sum();
                bytes += receipts_frame(receipts.len(), receipt_bytes);
                self.frames
                    .push((true, receipts_frame(receipts.len(), receipt_bytes)));
                self.traffic.receipt_bytes += receipt_bytes as u64;
                self.traffic.receipts += receipts.len() as u64;
                for (key, seq, _) in receipts {
                    self.learn(sides[sender], key, seq, Some(sides[receiver]));
                }
            }
            match reply.message {
                Some(next) => {
                    message = next;
                    sender = receiver;
                }
                None => {
                    bytes += tag_frame();
                    break;
                }
            }
        }
        self.traffic.bytes += bytes as u64;
        self.traffic.sessions += 1;
    }

    /// One round with `load` new receipts made between random nodes at random moments in it.
    fn round(&mut self, load: usize) {
        let n = self.nodes.len();
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        let mut made = vec![0usize; n];
        for _ in 0..load {
            made[self.rng.below(n)] += 1;
        }
        for (slot, &node) in order.iter().enumerate() {
            for _ in 0..made[slot] {
                self.make_random();
            }
            self.push_all();
            let peers = &self.neighbours[node];
            let peer = peers[self.rng.below(peers.len())];
            self.session(node, peer);
            self.push_all();
        }
        self.settle();
    }

    /// How many nodes hold `seq` of `key` (or newer).
    fn holders(&self, key: &Key, seq: u64) -> usize {
        self.nodes
            .iter()
            .filter(|node| node.items.get(key).is_some_and(|held| held >= seq))
            .count()
    }

    /// Whether every node's count and fingerprint equal the union's.
    fn converged(&self) -> bool {
        let all = self.ledger.union.fingerprint(&Bound::START, &Bound::END);
        self.nodes
            .iter()
            .all(|node| node.items.fingerprint(&Bound::START, &Bound::END) == all)
    }

    /// Runs rounds without load until every node holds the union (at most `limit`), then checks
    /// it item by item. Returns the rounds run.
    fn drain(&mut self, limit: usize) -> usize {
        let mut rounds = 0;
        while !self.converged() {
            assert!(
                rounds < limit,
                "not converged after {limit} rounds without load"
            );
            self.round(0);
            rounds += 1;
        }
        let union: Vec<(Key, u64)> = self.ledger.union.iter().map(|(k, s)| (*k, s)).collect();
        for (i, node) in self.nodes.iter().enumerate() {
            let held: Vec<(Key, u64)> = node.items.iter().map(|(k, s)| (*k, s)).collect();
            assert!(held == union, "node {i} does not hold exactly the union");
            assert!(node.pending.is_empty());
        }
        rounds
    }
}

/// What every run starts from.
struct Setup<'a> {
    pool: &'a Pool,
    /// The ledger every node holds at the start.
    shared: &'a Ledger,
    /// Rounds of load before the measurement, and measured.
    plan: (usize, usize),
}

/// Rounds to spread one new receipt, and the bytes it took.
#[derive(Clone, Copy)]
struct Spread {
    rounds99: usize,
    rounds100: usize,
    bytes99: u64,
    bytes100: u64,
    receipts: u64,
}

/// One new receipt at one random node of `n`; rounds until 99% and 100% hold it.
fn spread(setup: &Setup, n: usize, protocol: Protocol, seed: u64) -> Spread {
    let mut sim = Sim::new(setup.pool, setup.shared, n, protocol, seed);
    let origin = sim.rng.below(n);
    let other = (origin + 1 + sim.rng.below(n - 1)) % n;
    let (uploader, downloader) = if sim.rng.below(2) == 0 {
        (origin, other)
    } else {
        (other, origin)
    };
    let (key, seq) = sim
        .ledger
        .make(setup.pool, uploader, downloader, false, &mut sim.rng);
    sim.learn(origin, key, seq, None);
    sim.settle();
    sim.push_all();
    let target99 = (n * 99).div_ceil(100);
    let limit = 10 * (n as f64).log2().ceil() as usize + 20;
    let mut at99 = None;
    let mut round = 0;
    let (rounds100, bytes100) = loop {
        let holders = sim.holders(&key, seq);
        if holders >= target99 && at99.is_none() {
            at99 = Some((round, sim.traffic.bytes));
        }
        if holders == n {
            break (round, sim.traffic.bytes);
        }
        assert!(round < limit, "N = {n}: not spread after {limit} rounds");
        sim.round(0);
        round += 1;
    };
    let receipts = sim.traffic.receipts;
    sim.drain(5);
    let (rounds99, bytes99) = at99.expect("99% comes before 100%");
    Spread {
        rounds99,
        rounds100,
        bytes99,
        bytes100,
        receipts,
    }
}

/// The bytes of one steady load, over the measured rounds.
#[derive(Clone, Copy, Default)]
struct Load {
    traffic: Traffic,
    /// Receipts made in the measured rounds, and their encoded bytes.
    made: u64,
    made_bytes: u64,
    /// Rounds without load it took to converge afterwards.
    drain: usize,
}

fn load(setup: &Setup, n: usize, per_round: usize, protocol: Protocol, seed: u64) -> Load {
    let mut sim = Sim::new(setup.pool, setup.shared, n, protocol, seed);
    let (warmup, measured) = setup.plan;
    for _ in 0..warmup {
        sim.round(per_round);
    }
    let before = sim.traffic;
    let made_before: (usize, u64) = (sim.ledger.made.len(), made_size(&sim.ledger));
    for _ in 0..measured {
        sim.round(per_round);
    }
    let traffic = sim.traffic - before;
    let made = (sim.ledger.made.len() - made_before.0) as u64;
    let made_bytes = made_size(&sim.ledger) - made_before.1;
    let drain = sim.drain(10 * (n as f64).log2().ceil() as usize + 20);
    Load {
        traffic,
        made,
        made_bytes,
        drain,
    }
}

fn made_size(ledger: &Ledger) -> u64 {
    ledger.made.values().map(|(_, size)| *size as u64).sum()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// A figure with thousands separators.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rounds figure: whole, or with one decimal.
fn rounds_fmt(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a run covers: the full bench or the smoke test.
struct Config {
    /// N of the propagation test (1) and of eager push's rounds (4).
    sizes: Vec<usize>,
    /// Seeds per N in the propagation tests.
    seeds: u64,
    /// Pairs of the idle sessions (2).
    idle_pairs: Vec<usize>,
    /// N of the load tests (3); the last is also that of 4 and 5.
    load_sizes: Vec<usize>,
}

/// The runs of the node's own protocol in sequential rounds, which 4 and 5 show again.
#[derive(Default)]
struct Done {
    spreads: HashMap<usize, Vec<Spread>>,
    loads: HashMap<(usize, usize), Load>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let started = Instant::now();
    let (config, pool, shared) = if benchmarking {
        let mut sizes = vec![10, 30, 100];
        if env("TALLY_BENCH_BIG") != Some(0) {
            sizes.push(1_000);
        }
        let config = Config {
            sizes,
            seeds: env("TALLY_BENCH_SEEDS").unwrap_or(20),
            idle_pairs: vec![1_000, 100_000],
            load_sizes: vec![30, 100],
        };
        let pool = Pool::new(POOL);
        let shared = Ledger::shared(&pool, 1_000, LEDGER_IDENTITIES, 1);
        (config, pool, shared)
    } else {
        let config = Config {
            sizes: vec![10, 30],
            seeds: env("TALLY_BENCH_SEEDS").unwrap_or(3),
            idle_pairs: vec![100, 2_000],
            load_sizes: vec![10],
        };
        let pool = Pool::new(LEDGER_IDENTITIES);
        let shared = Ledger::shared(&pool, 100, LEDGER_IDENTITIES, 1);
        (config, pool, shared)
    };
    let setup = Setup {
        pool: &pool,
        shared: &shared,
        plan: if benchmarking {
            (WARMUP_ROUNDS, MEASURED_ROUNDS)
        } else {
            (2, 5)
        },
    };
    let params = SyncParams::default();
    let sizes: Vec<usize> = shared.made.values().map(|(_, size)| *size).collect();
    println!(
        "gossip bench: SyncParams branching {}, items threshold {}, reply budget {} bytes; shared ledger {} pairs among {} identities (receipts {}–{} bytes); topology {}–{} neighbours; gossip interval {INTERVAL_S} s; load average {}",
        params.branching(),
        params.items_threshold(),
        params.reply_budget(),
        shared.latest.len(),
        LEDGER_IDENTITIES,
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        DEGREE.0,
        DEGREE.1,
        load_average(),
    );
    for &n in &config.sizes {
        let degrees: Vec<usize> = topology(n, &mut Rng(1)).iter().map(Vec::len).collect();
        println!(
            "  topology of seed 1, N = {n}: degree {}–{}, mean {:.1}",
            degrees.iter().min().unwrap(),
            degrees.iter().max().unwrap(),
            degrees.iter().sum::<usize>() as f64 / n as f64
        );
    }
    let mut done = Done::default();
    propagation(&setup, &config, &mut done);
    println!("  ({:.1} s so far)", started.elapsed().as_secs_f64());
    idle(&pool, &config);
    one_difference(&setup);
    steady(&setup, &config, &mut done);
    println!("  ({:.1} s so far)", started.elapsed().as_secs_f64());
    eager(&setup, &config, &done);
    variants(&setup, &config, &done);
    println!();
    println!(
        "done in {:.1} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

/// The header of the tables [`print_spread`] fills, its first column named `label`.
fn spread_header(label: &str) {
    println!(
        "| {label} | N | target 2·log2 N | to 99%: median | max | to 100%: median | max | s to 99% / 100% at 1 s (median) | bytes to 99% | bytes to 100% | per node per round | receipts sent (median) | max ≤ target? |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

/// Part 1: Rounds to spread one new receipt, in both kinds of rounds.
fn propagation(setup: &Setup, config: &Config, done: &mut Done) {
    println!();
    println!(
        "1. One new receipt at one random node; every node holds the shared ledger. Rounds until 99% / 100% of the nodes hold it ({} seeds; median, max). Bytes: all sessions of all nodes until then (median).",
        config.seeds
    );
    println!();
    spread_header("rounds");
    for rounds in [Rounds::Sequential, Rounds::Synchronous] {
        for &n in &config.sizes {
            let runs: Vec<Spread> = (0..config.seeds)
                .map(|seed| spread(setup, n, Protocol::node(rounds), 1_000 + seed))
                .collect();
            print_spread(rounds.name(), n, &runs);
            if rounds == Rounds::Sequential {
                done.spreads.insert(n, runs);
            }
        }
    }
}

/// Part 2: One session between two nodes that agree: its every frame.
fn idle(pool: &Pool, config: &Config) {
    println!();
    println!(
        "2. One session between two nodes that hold the same pairs (among {} identities), both directions, every frame.",
        pool.peers.len()
    );
    println!();
    println!(
        "| pairs | opening | request | 2 × Hello | Sync (first message) | End | total | target | met? |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for &pairs in &config.idle_pairs {
        let mut rng = Rng(7);
        let mut ledger = Ledger::default();
        let n = pool.peers.len();
        while ledger.union.len() < pairs {
            let (up, down) = (rng.below(n), rng.below(n));
            if up != down {
                ledger
                    .union
                    .insert(pool.key(up, down), 1 + rng.below(20) as u64);
            }
        }
        // No receipt is pushed (checked below), so none needs signing.
        for opening in [Opening::Split, Opening::Whole] {
            let protocol = Protocol {
                opening,
                ..Protocol::node(Rounds::Sequential)
            };
            let mut sim = Sim::new(pool, &ledger, 2, protocol, 1);
            sim.session(0, 1);
            let total = sim.traffic.bytes as usize;
            assert_eq!(sim.traffic.receipts, 0);
            assert_eq!(sim.traffic.messages, 1, "nothing changed takes one Sync");
            let first = total - 2 * tag_frame() - 2 * hello_frame(0);
            let split = opening == Opening::Split;
            if split {
                let init = initiate_with(&ledger.union, &protocol.params).encoded_len();
                assert_eq!(first, sync_frame(init));
                assert!(
                    total <= 2048,
                    "nothing changed cost {total} bytes, over 2 KiB"
                );
            }
            println!(
                "| {} | {} | {} | {} | {first} | {} | **{total}** | ≤ 2,048 | {} |",
                thousands(pairs as u64),
                if split {
                    "`initiate_with` (node)"
                } else {
                    "one fingerprint (variant)"
                },
                tag_frame(),
                2 * hello_frame(0),
                tag_frame(),
                if total <= 2048 { "yes" } else { "**no**" }
            );
        }
    }
}

/// Part 2, continued: one session on the shared ledger when one receipt differs.
fn one_difference(setup: &Setup) {
    println!();
    println!(
        "One session on the shared ledger ({} pairs) when nothing differs, or one receipt: frames in order (Sync frames, R: a Receipts frame), request, Hellos and End included in the total.",
        setup.shared.latest.len()
    );
    println!();
    println!(
        "| differs | variant | Sync frames | frames, in order (bytes) | total | above nothing changed |"
    );
    println!("|---|---|---:|---|---:|---:|");
    let budget = SyncParams::default().reply_budget();
    for (label, opening, branching) in [
        ("`initiate_with`, 16 / 16 (node)", Opening::Split, 16),
        ("one fingerprint, 16 / 16", Opening::Whole, 16),
        ("`initiate_with`, 8 / 8", Opening::Split, 8),
        ("one fingerprint, 4 / 4", Opening::Whole, 4),
    ] {
        let protocol = Protocol {
            opening,
            params: SyncParams::new(branching, branching, budget).unwrap(),
            ..Protocol::node(Rounds::Sequential)
        };
        let mut nothing = 0;
        for (case, holders) in [
            ("nothing", &[][..]),
            ("initiator holds one more", &[0][..]),
            ("responder holds one more", &[1][..]),
        ] {
            let mut sim = Sim::new(setup.pool, setup.shared, 2, protocol, 3);
            // A new receipt (the pair's next seq), held by `holders` only.
            for &node in holders {
                let (key, seq) =
                    sim.ledger
                        .make(setup.pool, LEDGER_IDENTITIES - 1, 0, false, &mut sim.rng);
                sim.learn(node, key, seq, None);
            }
            sim.session(0, 1);
            sim.drain(0);
            let total = sim.traffic.bytes as usize;
            if holders.is_empty() {
                nothing = total;
            }
            println!(
                "| {case} | {label} | {} | {} | {total} | {} |",
                sim.traffic.messages,
                sim.frames
                    .iter()
                    .map(|&(receipts, bytes)| if receipts {
                        format!("R {bytes}")
                    } else {
                        bytes.to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                total - nothing
            );
        }
    }
}

/// Part 3: Bytes per receipt under a steady load, in both kinds of rounds.
fn steady(setup: &Setup, config: &Config, done: &mut Done) {
    println!();
    println!(
        "3. Steady load: new receipts made between random nodes at random moments, {} rounds of warm-up then {} measured. Bytes per receipt per node = all bytes sent in the measured rounds / (receipts made in them × N); \"of which fixed\": the part the sessions would have cost had nothing differed. Ideal: each node but the receipt's two parties receives it once, (N − 2)/N × its size: {}.",
        setup.plan.0,
        setup.plan.1,
        config
            .load_sizes
            .iter()
            .map(|&n| format!("{:.2}× the receipt at N = {n}", (n - 2) as f64 / n as f64))
            .collect::<Vec<_>>()
            .join(", "),
    );
    println!();
    load_header("rounds");
    for rounds in [Rounds::Sequential, Rounds::Synchronous] {
        for &n in &config.load_sizes {
            for per_round in loads(n) {
                let run = load(setup, n, per_round, Protocol::node(rounds), 77);
                print_load(rounds.name(), n, per_round, &run);
                if rounds == Rounds::Sequential {
                    done.loads.insert((n, per_round), run);
                }
            }
        }
    }
}

/// Part 4: Eager push to k neighbours beside the sessions.
fn eager(setup: &Setup, config: &Config, done: &Done) {
    let push_n = *config.load_sizes.last().unwrap();
    println!();
    println!(
        "4. Eager push: a node that learns a receipt new to it pushes it at once to up to k random neighbours (not the one it came from); sequential rounds. k = 0 is the node as it is (the rows of 1 and 3 again)."
    );
    println!();
    spread_header("k");
    for fanout in [0, 1, 2] {
        let pushing = Protocol {
            fanout,
            ..Protocol::node(Rounds::Sequential)
        };
        for &n in config.sizes.iter().filter(|&&n| n >= push_n) {
            let runs: Vec<Spread> = match done.spreads.get(&n) {
                Some(runs) if fanout == 0 => runs.clone(),
                _ => (0..config.seeds)
                    .map(|seed| spread(setup, n, pushing, 1_000 + seed))
                    .collect(),
            };
            print_spread(&format!("k = {fanout}"), n, &runs);
        }
    }
    println!();
    load_header("k");
    for fanout in [0, 1, 2] {
        let pushing = Protocol {
            fanout,
            ..Protocol::node(Rounds::Sequential)
        };
        for per_round in loads(push_n) {
            let run = match done.loads.get(&(push_n, per_round)) {
                Some(run) if fanout == 0 => *run,
                _ => load(setup, push_n, per_round, pushing, 77),
            };
            print_load(&format!("k = {fanout}"), push_n, per_round, &run);
        }
    }
}

/// Part 5: variants of the exchange the node does not run, a one-fingerprint opening and
/// other `SyncParams`.
fn variants(setup: &Setup, config: &Config, done: &Done) {
    let n = *config.load_sizes.last().unwrap();
    println!();
    println!(
        "5. Variants of the exchange under the loads of 3 (sequential rounds, no eager push, N = {n}): the first message as one fingerprint of the whole set, other branching / items threshold (B / T), and one with eager push. Not what the node runs, except the first rows."
    );
    println!();
    load_header("variant");
    let budget = SyncParams::default().reply_budget();
    for (label, opening, branching, fanout) in [
        ("`initiate_with`, 16 / 16 (node)", Opening::Split, 16, 0),
        ("one fingerprint, 16 / 16", Opening::Whole, 16, 0),
        ("`initiate_with`, 8 / 8", Opening::Split, 8, 0),
        ("one fingerprint, 8 / 8", Opening::Whole, 8, 0),
        ("one fingerprint, 4 / 4", Opening::Whole, 4, 0),
        (
            "one fingerprint, 16 / 16, push k = 2",
            Opening::Whole,
            16,
            2,
        ),
    ] {
        let protocol = Protocol {
            rounds: Rounds::Sequential,
            fanout,
            opening,
            params: SyncParams::new(branching, branching, budget).unwrap(),
        };
        let node = opening == Opening::Split && branching == 16 && fanout == 0;
        for per_round in loads(n) {
            let run = match done.loads.get(&(n, per_round)) {
                Some(run) if node => *run,
                _ => load(setup, n, per_round, protocol, 77),
            };
            print_load(label, n, per_round, &run);
        }
    }
}

/// The loads of part 3: 1, N/10, N and 4N new receipts per round.
fn loads(n: usize) -> Vec<usize> {
    let mut loads = vec![1, (n / 10).max(1), n, 4 * n];
    loads.dedup();
    loads
}

fn print_spread(label: &str, n: usize, runs: &[Spread]) {
    let column = |f: &dyn Fn(&Spread) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        let max = values.iter().copied().fold(0.0, f64::max);
        (median(&mut values), max)
    };
    let (r99, r99_max) = column(&|s| s.rounds99 as f64);
    let (r100, r100_max) = column(&|s| s.rounds100 as f64);
    let (b99, _) = column(&|s| s.bytes99 as f64);
    let (b100, _) = column(&|s| s.bytes100 as f64);
    let (receipts, _) = column(&|s| s.receipts as f64);
    let per_round: Vec<f64> = runs
        .iter()
        .filter(|s| s.rounds100 > 0)
        .map(|s| s.bytes100 as f64 / (s.rounds100 * n) as f64)
        .collect();
    let per_node_round = per_round.iter().sum::<f64>() / per_round.len().max(1) as f64;
    let target = 2.0 * (n as f64).log2();
    println!(
        "| {label} | {} | {target:.1} | {} | {r99_max:.0} | {} | {r100_max:.0} | {:.0} s / {:.0} s | {} | {} | {:.0} | {} | {} |",
        thousands(n as u64),
        rounds_fmt(r99),
        rounds_fmt(r100),
        r99 * INTERVAL_S,
        r100 * INTERVAL_S,
        thousands(b99 as u64),
        thousands(b100 as u64),
        per_node_round,
        rounds_fmt(receipts),
        match (r99_max <= target, r100_max <= target) {
            (true, true) => "yes (99% and 100%)",
            (true, false) => "99%: yes; 100%: **no**",
            _ => "**no**",
        }
    );
}

/// The header of the tables [`print_load`] fills, its first column named `label`.
fn load_header(label: &str) {
    println!(
        "| {label} | N | new receipts per round | made | receipt bytes (mean) | bytes per receipt per node | × receipt | of which fixed | the rest, × receipt | receipts' share | redundant receipts per made | pushes' share | Sync frames per session | rounds to drain | ≤ 3× receipt? |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

fn print_load(label: &str, n: usize, per_round: usize, run: &Load) {
    let t = &run.traffic;
    let mean_size = run.made_bytes as f64 / run.made as f64;
    let per_node = |bytes: u64| bytes as f64 / (run.made as f64 * n as f64);
    let ratio = per_node(t.bytes) / mean_size;
    let share = |part: u64| format!("{:.0}%", 100.0 * part as f64 / t.bytes as f64);
    println!(
        "| {label} | {n} | {per_round} | {} | {mean_size:.1} | {:.0} | {ratio:.2} | {:.0} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {} |",
        thousands(run.made),
        per_node(t.bytes),
        per_node(t.fixed),
        per_node(t.bytes - t.fixed) / mean_size,
        share(t.receipt_bytes),
        t.redundant as f64 / run.made as f64,
        share(t.push_bytes),
        t.messages as f64 / t.sessions as f64,
        run.drain,
        if ratio <= 3.0 { "yes" } else { "**no**" }
    );
}
