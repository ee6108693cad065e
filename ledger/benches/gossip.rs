//! Gossip propagation: push-pull anti-entropy among N simulated nodes that run the gossip session
//! as the node will, over the real `sync` logic and real signed receipts, counting every byte of
//! every frame. The node's configuration here is the one recommended for it: the first message
//! `initiate_whole_with` (one fingerprint of the whole set), the default `SyncParams`, no eager
//! push; the one the node ran so far (`initiate_with`, branching and threshold 16: *old*) is
//! reported beside it. It prints, in tables:
//!
//! 1. the rounds (and bytes) until one new receipt reaches 99% and 100% of N = 10, 30, 100 and
//!    1,000 nodes, over 20 seeds, in sequential and synchronous rounds (below);
//! 2. the bytes of one session when nothing changed (1,000 and 100,000 pairs), and, frame by
//!    frame, when one receipt differs, for the node's exchange, the old one and variants;
//! 3. the gossip bytes per new receipt per node under steady loads of 1, N/10, N and 4N new
//!    receipts per round (N = 30 and 100), and the *marginal* bytes per new receipt per node:
//!    (bytes − bytes of the same rounds of the same network with no new receipts) / (receipts ×
//!    N), which leaves out the standing cost of sessions that find nothing;
//! 4. the same measures with eager push: flood to k = 1, 2 neighbours, or push by the receipt's
//!    two parties only, to k = 1, 2 neighbours each;
//! 5. the loads of 3 under variants of the exchange: either first message, other `SyncParams`.
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
//! 2. I sends `Sync(first message)`: 4 + 1 + varint(len) + len.
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
//! **Eager push** (optional, beside the sessions), each push a `Request::Push` frame (4 + 1) and
//! a `Receipts` frame of one receipt: *flood* k: a node that learns a receipt new to it (made,
//! received in a session or pushed) sends it at once to up to k random neighbours other than
//! the one it learned it from, and the pushes ripple on before the next session; *parties* k:
//! when a receipt is made, each of its two parties sends it to up to k random neighbours other
//! than the other party, and nobody forwards it.
//!
//! **Data.** A pool of 2,000 identities on one network. The shared ledger: 1,000 pairs among the
//! first 200 identities, with histories (seq up to 2,000, cumulative bytes, credits, a time in
//! 2026), signed by both parties; every node starts with all of it, so fingerprints are not
//! trivial. New receipts are made between two nodes (random uploader and downloader among the
//! N): the next seq of the pair if it has one, else seq 1; both parties hold it at once, as after
//! a real countersignature. The propagation test instead puts its one new receipt at one random
//! node only, the worst case (the other party offline), except in the rows of 4 that say both.
//!
//! Every run ends by checking that every node holds exactly the union of all receipts (running
//! rounds until it does); the bench panics otherwise, or if a run needs too many rounds.
//!
//! `cargo bench -p tally-ledger --bench gossip` runs it (several minutes on two cores).
//! `TALLY_BENCH_SEEDS=n` sets the seeds of the propagation test (default 20);
//! `TALLY_BENCH_BIG=0` skips N = 1,000. Without `--bench` (as under `cargo test --benches`) it
//! runs a small smoke test in a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use tally_ledger::sync::{
    Bound, Key, Message, ShortId, SyncItems, SyncParams, initiate_whole_with, initiate_with,
    resolve, respond_with, short_id, wanted,
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
/// Most short ids a hello announces, and a `Want` names.
const MAX_ANNOUNCED: usize = 512;
/// Bytes of a short id.
const SHORT_ID: usize = 8;
/// The node's announcement window, in gossip intervals (rounds).
const ANNOUNCE_ROUNDS: usize = 3;
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

/// `GossipFrame::Hello` of an old node, without announcements.
fn hello_frame(conflicts: u32) -> usize {
    LENGTH_PREFIX + TAG + DIGEST + varint_len(u64::from(conflicts))
}

/// `GossipFrame::Hello` under `protocol`, announcing `announced` short ids.
fn hello_bytes(protocol: &Protocol, announced: usize) -> usize {
    if protocol.announce == 0 {
        hello_frame(0)
    } else {
        hello_frame(0) + varint_len(announced as u64) + SHORT_ID * announced
    }
}

/// `GossipFrame::Want` naming `count` short ids.
fn want_frame(count: usize) -> usize {
    LENGTH_PREFIX + TAG + varint_len(count as u64) + SHORT_ID * count
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
            messages: self.messages - o.messages,
        }
    }
}

/// Eager push of new receipts, beside the sessions.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Push {
    /// None: anti-entropy alone.
    None,
    /// Every node that learns a receipt new to it (made, received in a session or pushed)
    /// pushes it at once to up to k random neighbours, not the one it came from.
    Flood(usize),
    /// Only the receipt's parties push it, when it is made, each to up to k random neighbours
    /// (not the other party); a node that receives a push does not forward it.
    Parties(usize),
}

impl Push {
    fn fanout(self) -> usize {
        match self {
            Push::None => 0,
            Push::Flood(k) | Push::Parties(k) => k,
        }
    }
}

/// How the nodes gossip.
#[derive(Clone, Copy, Debug)]
struct Protocol {
    rounds: Rounds,
    push: Push,
    opening: Opening,
    params: SyncParams,
    /// Hellos announce the receipts learned in the last this many rounds (0: no announcements).
    announce: usize,
}

impl Protocol {
    /// What the node should run: the whole-set opening (`initiate_whole`), the default
    /// `SyncParams`, no eager push.
    fn node(rounds: Rounds) -> Self {
        Self {
            rounds,
            push: Push::None,
            opening: Opening::Whole,
            params: SyncParams::default(),
            announce: ANNOUNCE_ROUNDS,
        }
    }

    /// What the node ran so far: `initiate_with`, branching 16 and threshold 16, no eager push.
    fn old(rounds: Rounds) -> Self {
        Self::exchange(rounds, Opening::Split, (16, 16))
    }

    /// An exchange of the given opening and (branching, items threshold), no eager push.
    fn exchange(rounds: Rounds, opening: Opening, (branching, threshold): (usize, usize)) -> Self {
        let budget = SyncParams::default().reply_budget();
        Self {
            rounds,
            push: Push::None,
            opening,
            params: SyncParams::new(branching, threshold, budget).expect("valid parameters"),
            announce: 0,
        }
    }

    /// "whole set, 16 / 16" and the like.
    fn label(&self) -> String {
        let opening = match self.opening {
            Opening::Split => "`initiate_with`",
            Opening::Whole => "whole set",
        };
        let push = match self.push {
            Push::None => String::new(),
            Push::Flood(k) => format!(", flood push k = {k}"),
            Push::Parties(k) => format!(", parties push k = {k}"),
        };
        let announce = match self.announce {
            0 => String::new(),
            w => format!(", announce {w}"),
        };
        format!(
            "{opening}, {} / {}{announce}{push}",
            self.params.branching(),
            self.params.items_threshold()
        )
    }

    fn is(&self, other: &Protocol) -> bool {
        self.rounds == other.rounds
            && self.push == other.push
            && self.opening == other.opening
            && self.params == other.params
            && self.announce == other.announce
    }
}

/// The initiator's first message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Opening {
    /// `initiate_with`: `branching` fingerprints (or the items, if few).
    Split,
    /// `initiate_whole_with`: one fingerprint of the whole set (or the items, if few), which the
    /// responder cuts if it differs.
    Whole,
}

struct Node {
    items: SyncItems,
    /// The items' marks at the start of the last `announce` rounds, oldest first.
    marks: VecDeque<u64>,
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
    /// The two sides of the session running (synchronous rounds).
    in_session: Vec<usize>,
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
                    marks: VecDeque::new(),
                    pending: Vec::new(),
                })
                .collect(),
            neighbours,
            protocol,
            rng,
            traffic: Traffic::default(),
            to_push: VecDeque::new(),
            frames: Vec::new(),
            in_session: Vec::new(),
        }
    }

    /// `node` receives (or makes) `seq` of `key`, from `from`.
    fn learn(&mut self, node: usize, key: Key, seq: u64, from: Option<usize>) {
        match self.protocol.rounds {
            Rounds::Synchronous => {
                // The session that received it knows it for the rest of the session (the node
                // stores a batch before it goes on), so `items` holds it until the session ends
                // (see `session`); other sessions of this round do not.
                if self.in_session.contains(&node) {
                    self.nodes[node].items.insert(key, seq);
                }
                self.nodes[node].pending.push((key, seq));
            }
            Rounds::Sequential => {
                if self.nodes[node].items.insert(key, seq) {
                    if let Push::Flood(_) = self.protocol.push {
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
            for &target in targets.iter().take(self.protocol.push.fanout()) {
                let bytes = (tag_frame() + receipts_frame(1, size)) as u64;
                self.traffic.bytes += bytes;
                self.traffic.push_bytes += bytes;
                self.traffic.receipt_bytes += size as u64;
                self.traffic.receipts += 1;
                self.learn(target, key, seq, Some(node));
            }
        }
    }

    /// Signs a new receipt between nodes `uploader` and `downloader`, which both hold it (and
    /// push it, if the parties push).
    fn make_between(&mut self, uploader: usize, downloader: usize) -> (Key, u64) {
        let (key, seq) = self
            .ledger
            .make(self.pool, uploader, downloader, false, &mut self.rng);
        self.learn(uploader, key, seq, Some(downloader));
        self.learn(downloader, key, seq, Some(uploader));
        if let Push::Parties(_) = self.protocol.push {
            self.to_push
                .push_back((uploader, key, seq, Some(downloader)));
            self.to_push
                .push_back((downloader, key, seq, Some(uploader)));
        }
        (key, seq)
    }

    /// A new receipt between two random nodes.
    fn make_random(&mut self) {
        let n = self.nodes.len();
        let uploader = self.rng.below(n);
        let downloader = (uploader + 1 + self.rng.below(n - 1)) % n;
        self.make_between(uploader, downloader);
    }

    /// What `node` announces in its hello: what it learned in the announcement window.
    fn announcement(&self, node: usize) -> Vec<(ShortId, Key)> {
        let node = &self.nodes[node];
        match node.marks.front() {
            Some(&mark) if self.protocol.announce > 0 => {
                node.items.changed_since(mark, MAX_ANNOUNCED)
            }
            _ => Vec::new(),
        }
    }

    /// Sends `sides[from]` the receipts of `keys`, which `sides[1 - from]` announced and holds,
    /// in `Receipts` frames; returns their bytes.
    fn push_keys(&mut self, sides: [usize; 2], from: usize, keys: &[Key]) -> usize {
        let mut bytes = 0;
        for frame in keys.chunks(RECEIPTS_PER_FRAME) {
            let mut receipts = Vec::with_capacity(frame.len());
            for key in frame {
                let seq = self.nodes[sides[from]]
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
                self.learn(sides[1 - from], key, seq, Some(sides[from]));
            }
        }
        bytes
    }

    /// One session, `initiator` with `responder`, every frame counted. In synchronous rounds,
    /// what a side receives counts for the rest of this session only; it is applied for good at
    /// the round's end.
    fn session(&mut self, initiator: usize, responder: usize) {
        if self.protocol.rounds == Rounds::Synchronous {
            let saved = [
                self.nodes[initiator].items.clone(),
                self.nodes[responder].items.clone(),
            ];
            self.in_session = vec![initiator, responder];
            self.exchange(initiator, responder);
            self.in_session.clear();
            let [a, b] = saved;
            self.nodes[initiator].items = a;
            self.nodes[responder].items = b;
        } else {
            self.exchange(initiator, responder);
        }
    }

    fn exchange(&mut self, initiator: usize, responder: usize) {
        let sides = [initiator, responder];
        self.frames.clear();
        let announced = [self.announcement(initiator), self.announcement(responder)];
        let mut bytes = tag_frame()
            + hello_bytes(&self.protocol, announced[0].len())
            + hello_bytes(&self.protocol, announced[1].len());
        // Each side names the announced items it lacks (a `Want` frame when the other side
        // announced any), both before either side's pushes arrive; then each pushes what was
        // named (a `Receipts` frame when anything was).
        let wants: Vec<Vec<Key>> = (0..2)
            .map(|side| {
                let other = &announced[1 - side];
                if other.is_empty() {
                    return Vec::new();
                }
                // What the side received this round and applies at its end (synchronous rounds)
                // it does not ask for again, as the node does not ask for what another of its
                // sessions is fetching.
                let node = &self.nodes[sides[side]];
                let pending: HashSet<ShortId> =
                    node.pending.iter().map(|(k, s)| short_id(k, *s)).collect();
                let ids: Vec<ShortId> = other
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !pending.contains(id))
                    .collect();
                let want = wanted(&node.items, &ids, MAX_ANNOUNCED);
                bytes += want_frame(want.len());
                resolve(other, &want)
            })
            .collect();
        for (side, keys) in wants.iter().enumerate() {
            bytes += self.push_keys(sides, 1 - side, keys);
        }
        let params = self.protocol.params;
        let items = &self.nodes[initiator].items;
        let mut message = match self.protocol.opening {
            Opening::Whole => initiate_whole_with(items, &params),
            Opening::Split => initiate_with(items, &params),
        };
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
            bytes += self.push_keys(sides, receiver, &reply.send);
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
        let window = self.protocol.announce;
        for node in &mut self.nodes {
            node.marks.push_back(node.items.mark());
            while node.marks.len() > window {
                node.marks.pop_front();
            }
        }
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

/// Who holds the new receipt of the propagation test at first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holders {
    /// One random node, its other party offline: the worst case.
    One,
    /// Both parties, as when a receipt is made between two online nodes.
    Both,
}

/// One new receipt at one random node of `n` (and its other party, if `holders` is `Both`);
/// rounds until 99% and 100% hold it.
fn spread(setup: &Setup, n: usize, protocol: Protocol, holders: Holders, seed: u64) -> Spread {
    let mut sim = Sim::new(setup.pool, setup.shared, n, protocol, seed);
    let origin = sim.rng.below(n);
    let other = (origin + 1 + sim.rng.below(n - 1)) % n;
    let (uploader, downloader) = if sim.rng.below(2) == 0 {
        (origin, other)
    } else {
        (other, origin)
    };
    let (key, seq) = match holders {
        Holders::Both => sim.make_between(uploader, downloader),
        Holders::One => {
            let (key, seq) = sim
                .ledger
                .make(setup.pool, uploader, downloader, false, &mut sim.rng);
            sim.learn(origin, key, seq, None);
            if let Push::Parties(_) = protocol.push {
                sim.to_push.push_back((origin, key, seq, None));
            }
            (key, seq)
        }
    };
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
    /// The same rounds of the same network and protocol with no new receipts: the standing cost.
    idle: Traffic,
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
    let mut quiet = Sim::new(setup.pool, setup.shared, n, protocol, seed);
    for _ in 0..warmup {
        quiet.round(0);
    }
    let before = quiet.traffic;
    for _ in 0..measured {
        quiet.round(0);
    }
    assert_eq!(
        quiet.traffic.receipts, 0,
        "nothing to send without new receipts"
    );
    Load {
        traffic,
        idle: quiet.traffic - before,
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

/// The runs of the node's configuration in sequential rounds, which 4 and 5 show again.
#[derive(Default)]
struct Done {
    spreads: HashMap<usize, Vec<Spread>>,
    /// By (protocol label, N, new receipts per round).
    loads: HashMap<(String, usize, usize), Load>,
}

impl Done {
    /// The load run of `protocol`, from an earlier table if it ran there.
    fn load(&mut self, setup: &Setup, n: usize, per_round: usize, protocol: Protocol) -> Load {
        let key = (
            format!("{}/{:?}", protocol.label(), protocol.rounds),
            n,
            per_round,
        );
        *self
            .loads
            .entry(key)
            .or_insert_with(|| load(setup, n, per_round, protocol, 77))
    }
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
    let node = Protocol::node(Rounds::Sequential);
    let sizes: Vec<usize> = shared.made.values().map(|(_, size)| *size).collect();
    println!(
        "gossip bench: the node runs {} (old: {}); reply budget {} bytes; shared ledger {} pairs among {} identities (receipts {}–{} bytes); topology {}–{} neighbours; gossip interval {INTERVAL_S} s; load average {}",
        node.label(),
        Protocol::old(Rounds::Sequential).label(),
        node.params.reply_budget(),
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
    eager(&setup, &config, &mut done);
    println!("  ({:.1} s so far)", started.elapsed().as_secs_f64());
    variants(&setup, &config, &mut done);
    windows(&setup, &config, &mut done);
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

/// `seeds` spreads of one new receipt among `n` nodes.
fn spreads(
    setup: &Setup,
    n: usize,
    protocol: Protocol,
    holders: Holders,
    seeds: u64,
) -> Vec<Spread> {
    (0..seeds)
        .map(|seed| spread(setup, n, protocol, holders, 1_000 + seed))
        .collect()
}

/// Part 1: Rounds to spread one new receipt, in both kinds of rounds.
fn propagation(setup: &Setup, config: &Config, done: &mut Done) {
    println!();
    println!(
        "1. One new receipt at one random node (its other party offline); every node holds the shared ledger; the node's configuration. Rounds until 99% / 100% of the nodes hold it ({} seeds; median, max). Bytes: all sessions of all nodes until then (median).",
        config.seeds
    );
    println!();
    spread_header("rounds");
    for rounds in [Rounds::Sequential, Rounds::Synchronous] {
        for &n in &config.sizes {
            let runs = spreads(setup, n, Protocol::node(rounds), Holders::One, config.seeds);
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
        "| pairs | configuration | request | 2 × Hello | Sync (first message) | End | total | target | met? |"
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
        for (protocol, who) in [
            (Protocol::node(Rounds::Sequential), "node"),
            (Protocol::old(Rounds::Sequential), "old"),
        ] {
            let mut sim = Sim::new(pool, &ledger, 2, protocol, 1);
            sim.session(0, 1);
            let total = sim.traffic.bytes as usize;
            assert_eq!(sim.traffic.receipts, 0);
            assert_eq!(sim.traffic.messages, 1, "nothing changed takes one Sync");
            let first = total - 2 * tag_frame() - 2 * hello_bytes(&protocol, 0);
            let opening = match protocol.opening {
                Opening::Split => initiate_with(&ledger.union, &protocol.params),
                Opening::Whole => initiate_whole_with(&ledger.union, &protocol.params),
            };
            assert_eq!(first, sync_frame(opening.encoded_len()));
            assert!(
                total <= 2048,
                "nothing changed cost {total} bytes, over 2 KiB"
            );
            println!(
                "| {} | {} ({who}) | {} | {} | {first} | {} | **{total}** | ≤ 2,048 | {} |",
                thousands(pairs as u64),
                protocol.label(),
                tag_frame(),
                2 * hello_bytes(&protocol, 0),
                tag_frame(),
                if total <= 2048 { "yes" } else { "**no**" }
            );
        }
    }
}

/// The exchanges compared in 2 and 5: the node's, the old one, and other openings and
/// (branching, items threshold); each once.
fn exchanges() -> Vec<Protocol> {
    let sequential = Rounds::Sequential;
    let mut out = vec![Protocol::node(sequential), Protocol::old(sequential)];
    for (opening, params) in [
        (Opening::Whole, (16, 16)),
        (Opening::Whole, (8, 8)),
        (Opening::Whole, (8, 16)),
        (Opening::Whole, (4, 4)),
        (Opening::Split, (8, 8)),
    ] {
        let protocol = Protocol::exchange(sequential, opening, params);
        if !out.iter().any(|p| p.is(&protocol)) {
            out.push(protocol);
        }
    }
    out
}

/// " (node)" or " (old)" after the label of those two configurations.
fn role(protocol: &Protocol) -> &'static str {
    if protocol.is(&Protocol::node(protocol.rounds)) {
        " (node)"
    } else if protocol.is(&Protocol::old(protocol.rounds)) {
        " (old)"
    } else {
        ""
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
        "| differs | configuration | Sync frames | frames, in order (bytes) | total | above nothing changed |"
    );
    println!("|---|---|---:|---|---:|---:|");
    for protocol in exchanges() {
        let label = format!("{}{}", protocol.label(), role(&protocol));
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
        "3. Steady load: new receipts made between random nodes at random moments, {} rounds of warm-up then {} measured. Bytes per receipt per node = all bytes sent in the measured rounds / (receipts made in them × N). Idle: the same rounds of the same network with no new receipts, per receipt per node; marginal = (bytes − idle) / (receipts × N): what the receipts cost beyond the standing traffic. Ideal: each node but the receipt's two parties receives it once, (N − 2)/N × its size: {}. The node's configuration in both kinds of rounds, then the old one in sequential rounds.",
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
    for (rounds, protocol) in [
        (Rounds::Sequential, Protocol::node(Rounds::Sequential)),
        (Rounds::Synchronous, Protocol::node(Rounds::Synchronous)),
        (Rounds::Sequential, Protocol::old(Rounds::Sequential)),
    ] {
        let label = format!("{}{}", rounds.name(), role(&protocol));
        for &n in &config.load_sizes {
            for per_round in loads(n) {
                let run = done.load(setup, n, per_round, protocol);
                print_load(&label, n, per_round, &run);
            }
        }
    }
}

/// Part 4: Eager push beside the sessions: every learner pushes (flood), or only the
/// receipt's two parties do.
fn eager(setup: &Setup, config: &Config, done: &mut Done) {
    let push_n = *config.load_sizes.last().unwrap();
    let node = Protocol::node(Rounds::Sequential);
    let with = |push| Protocol { push, ..node };
    println!();
    println!(
        "4. Eager push, beside the node's sessions, sequential rounds: flood (a node that learns a receipt new to it pushes it at once to up to k random neighbours, not the one it came from) or parties (only the receipt's two parties push it when it is made, each to up to k random neighbours other than each other; no forwarding). One holder: the propagation test of 1 (the other party offline: it neither holds nor pushes); both: the receipt made between two online nodes, which both hold it. Each push: `Request::Push` (5 bytes) and a `Receipts` frame of one."
    );
    println!();
    spread_header("push, holders");
    let cases = [
        (Push::None, Holders::One),
        (Push::Flood(1), Holders::One),
        (Push::Flood(2), Holders::One),
        (Push::Parties(1), Holders::One),
        (Push::Parties(2), Holders::One),
        (Push::None, Holders::Both),
        (Push::Parties(1), Holders::Both),
        (Push::Parties(2), Holders::Both),
    ];
    for (push, holders) in cases {
        for &n in config.sizes.iter().filter(|&&n| n >= push_n) {
            let runs = match done.spreads.get(&n) {
                Some(runs) if push == Push::None && holders == Holders::One => runs.clone(),
                _ => spreads(setup, n, with(push), holders, config.seeds),
            };
            print_spread(&format!("{}, {holders:?}", push_label(push)), n, &runs);
        }
    }
    println!();
    load_header("push");
    for push in [
        Push::None,
        Push::Flood(1),
        Push::Flood(2),
        Push::Parties(1),
        Push::Parties(2),
    ] {
        let sizes: &[usize] = match push {
            Push::Parties(_) => &config.load_sizes,
            _ => std::slice::from_ref(&push_n),
        };
        for &n in sizes {
            for per_round in loads(n) {
                let run = done.load(setup, n, per_round, with(push));
                print_load(push_label(push), n, per_round, &run);
            }
        }
    }
}

fn push_label(push: Push) -> &'static str {
    match push {
        Push::None => "none",
        Push::Flood(1) => "flood, k = 1",
        Push::Flood(2) => "flood, k = 2",
        Push::Parties(1) => "parties, k = 1",
        Push::Parties(2) => "parties, k = 2",
        _ => "other",
    }
}

/// Part 5: the node's exchange against the old one and other openings and `SyncParams`.
fn variants(setup: &Setup, config: &Config, done: &mut Done) {
    println!();
    println!(
        "5. Variants of the exchange under the loads of 3 (sequential rounds, no eager push): the first message (`initiate_with`'s B fingerprints, or the whole set's one), branching / items threshold (B / T)."
    );
    println!();
    load_header("exchange");
    for &n in &config.load_sizes {
        for protocol in exchanges() {
            let label = format!("{}{}", protocol.label(), role(&protocol));
            for per_round in loads(n) {
                let run = done.load(setup, n, per_round, protocol);
                print_load(&label, n, per_round, &run);
            }
        }
    }
}

/// Part 6: announcement windows: hellos that name (8-byte short ids) the receipts learned in
/// the last W rounds, and what they cost and save.
fn windows(setup: &Setup, config: &Config, done: &mut Done) {
    let node = Protocol::node(Rounds::Sequential);
    println!();
    println!(
        "6. Announcements (sequential rounds): each hello names, by 8-byte short ids, the receipts its sender learned in the last W rounds (at most {MAX_ANNOUNCED}); each side names in a `Want` frame those it lacks, and receives them before the reconciliation starts. W = 0: no announcements. The node runs W = {ANNOUNCE_ROUNDS}."
    );
    println!();
    load_header("window W");
    for &n in &config.load_sizes {
        for window in [0, 1, 2, 3, 4] {
            let protocol = Protocol {
                announce: window,
                ..node
            };
            for per_round in loads(n) {
                let run = done.load(setup, n, per_round, protocol);
                print_load(
                    &format!("W = {window}{}", role(&protocol)),
                    n,
                    per_round,
                    &run,
                );
            }
        }
    }
    println!();
    spread_header("window W, holders");
    for &n in config.sizes.iter().filter(|&&n| n <= 100) {
        for window in [0, 2, 3, 4] {
            for holders in [Holders::One, Holders::Both] {
                let protocol = Protocol {
                    announce: window,
                    ..node
                };
                let runs = spreads(setup, n, protocol, holders, config.seeds);
                print_spread(&format!("W = {window}, {holders:?}"), n, &runs);
            }
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
        "| {label} | N | new receipts per round | made | receipt bytes (mean) | bytes per receipt per node | × receipt | idle, per receipt per node | marginal per receipt per node | marginal × receipt | receipts' share | redundant receipts per made | pushes' share | Sync frames per session | rounds to drain | ≤ 3× receipt? |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

fn print_load(label: &str, n: usize, per_round: usize, run: &Load) {
    let t = &run.traffic;
    let mean_size = run.made_bytes as f64 / run.made as f64;
    let per_node = |bytes: u64| bytes as f64 / (run.made as f64 * n as f64);
    let ratio = per_node(t.bytes) / mean_size;
    let marginal = per_node(t.bytes.saturating_sub(run.idle.bytes));
    let share = |part: u64| format!("{:.0}%", 100.0 * part as f64 / t.bytes as f64);
    println!(
        "| {label} | {n} | {per_round} | {} | {mean_size:.1} | {:.0} | {ratio:.2} | {:.0} | {marginal:.0} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {} |",
        thousands(run.made),
        per_node(t.bytes),
        per_node(run.idle.bytes),
        marginal / mean_size,
        share(t.receipt_bytes),
        t.redundant as f64 / run.made as f64,
        share(t.push_bytes),
        t.messages as f64 / t.sessions as f64,
        run.drain,
        if ratio <= 3.0 { "yes" } else { "**no**" }
    );
}
