//! Standing: what each peer gave, as this node judges it from the receipts it holds.
//!
//! A bounded, personalised walk over the contribution graph (edges uploader → downloader),
//! MeritRank's family computed exactly rather than sampled, that conserves mass at every stage:
//!
//! - **Stage 1**: each direct contributor `j` receives what it gave this node.
//! - **Debts first**: what reaches a node pays what this node gave it (its debt here) before
//!   anything else, earliest stages first. Only the surplus above the debt moves on.
//! - **Passing on**: of its surplus, a node passes the fraction [`StandingParams::endorse`] to
//!   its own contributors and keeps the rest; at the last stage ([`StandingParams::hops`]), or
//!   with no contributors to pass to, it keeps all.
//! - **Split by net edge**: a contributor `c` of `v` weighs `(credits(c → v) − credits(v → c))⁺`,
//!   so receipts a pair signs both ways for the same credits weigh nothing.
//!
//! A peer's raw standing is what reached it less what it passed on less its debt:
//! `given − taken − passed + transitive` ([`PeerStanding`]), where `passed` is what it passed
//! on of its direct balance and `transitive` what it kept of the walk's later stages.
//!
//! Why it bounds a sybil clique: nothing is created, so the clique's members, summed, hold at
//! most what the walk carries into the clique across its attack edges (receipts with an honest
//! end), in proportion to what those edges weigh at the honest end — receipts among the clique
//! move no mass into it. Debts are netted before anything is passed on, so a member cannot keep
//! a debt (clamped to the floor) while passing the credit that should pay it to a member that
//! owes nothing. The clique's summed standing above the floor is at most what its attack edges
//! earn when its members keep everything that reaches them (market/tests/standing_props.rs
//! checks this for arbitrary receipts). A max-flow (BarterCast) bounds each identity, not their
//! sum. What the rule does not remove: a member decides, by the receipts it countersigns as
//! downloader, who its contributors are. One-way claims (every sybil "gave" the gateway 1 TiB)
//! survive netting and draw the gateway's pass-on into the clique instead of to the honest
//! peers that really uploaded to it: the clique then keeps all of the gateway's surplus where
//! the gateway alone keeps `1 − endorse` of it, a relative gain of at most
//! `endorse / (1 − endorse)` (1 at the default ½) above what the gateway alone would have.
//! Sybils that owe this node absorb that mass in debt first. Receipts both ways (a mesh) gain
//! nothing.
//!
//! Keys marked dishonest (a conflict proof) are out of the graph: no standing, and the walk
//! neither reaches nor passes through them. A peer this node never heard of and a peer that only
//! took have the same standing: zero, the floor ([`PeerStanding::score`] is 0 for any raw
//! standing at or below zero), so a fresh identity gains nothing over a freerider.
//!
//! Updates are incremental: a receipt changes one edge, and only the walk's mass that passed
//! through that edge's two ends is recomputed, as deltas pushed forward stage by stage: work in
//! proportion to the contributors within the remaining hops, nothing at all for a receipt
//! between peers the walk does not reach. [`Standing::recompute`] rebuilds everything (after
//! marking a key dishonest, and in tests to check the increments).
//!
//! No I/O, no clock: the node feeds it the receipts it stores.

use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, DefaultHasher};

use tally_ledger::PeerId;

/// Tuning of [`Standing`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StandingParams {
    /// Longest chain of contributions the walk follows from this node (stage count), 1 to
    /// [`MAX_HOPS`]. 1: direct balances only.
    pub hops: u8,
    /// Fraction of a node's surplus (what reaches it above its debt to this node) that it
    /// passes on to its own contributors, in [0, 1). Also the bound of the residual sybil
    /// gain: `endorse / (1 − endorse)` (see the module doc).
    pub endorse: f64,
    /// Raw standing (credits) at which [`PeerStanding::score`] is one half.
    pub scale_credits: f64,
}

/// The largest [`StandingParams::hops`].
pub const MAX_HOPS: u8 = 6;

impl Default for StandingParams {
    /// Three hops, half passed on at each, score one half at 1 GiB of credits.
    fn default() -> Self {
        Self {
            hops: 3,
            endorse: 0.5,
            scale_credits: (1u64 << 30) as f64,
        }
    }
}

impl StandingParams {
    /// Brought into range: hops 1 to [`MAX_HOPS`], endorse in [0, 0.99] (NaN: 0), a positive
    /// finite scale (else the default).
    fn clamped(self) -> Self {
        let endorse = if self.endorse.is_nan() {
            0.0
        } else {
            self.endorse.clamp(0.0, 0.99)
        };
        let scale_credits = if self.scale_credits.is_finite() && self.scale_credits > 0.0 {
            self.scale_credits
        } else {
            Self::default().scale_credits
        };
        Self {
            hops: self.hops.clamp(1, MAX_HOPS),
            endorse,
            scale_credits,
        }
    }
}

/// One peer's standing at this node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeerStanding {
    /// Credits the peer gave this node (its latest receipts as uploader to this node).
    pub given: u64,
    /// Credits this node gave the peer.
    pub taken: u64,
    /// Credits of its direct balance the peer passed on to those who gave to it (the walk's
    /// first stage): [`StandingParams::endorse`] of `given − taken` when that is positive, the
    /// peer has contributors to pass to and the walk has more than one stage, else 0.
    pub passed: f64,
    /// Transitive standing, in credits: what reached the peer at the walk's later stages, less
    /// what it passed on of that (what pays its debt counts as kept).
    pub transitive: f64,
    /// `given − taken − passed + transitive`.
    pub raw: f64,
    /// `raw` mapped to [0, 1): 0 at or below zero (the floor), `2/π · atan(raw / scale)` above.
    pub score: f64,
    /// Marked dishonest by a conflict proof: everything above is zero.
    pub dishonest: bool,
}

impl PeerStanding {
    /// Whether the peer is at the floor (no standing): freeriders, newcomers, dishonest keys.
    pub fn at_floor(&self) -> bool {
        self.score <= 0.0
    }
}

/// A chain of contributions that carries transitive standing to a peer, for explanations.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// From this node's direct contributor to the peer: `via[0]` gave to this node, `via[i+1]`
    /// gave to `via[i]`, the last is the peer.
    pub via: Vec<PeerId>,
    /// Credits of the peer's transitive standing that came along this chain.
    pub credits: f64,
}

/// Why a peer has its standing.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The figures.
    pub standing: PeerStanding,
    /// The strongest chains that carry its transitive part, strongest first.
    pub paths: Vec<Path>,
    /// Steps of the search that found them (it is bounded by [`MAX_PATHS_EXAMINED`]).
    pub paths_examined: usize,
}

/// Most search steps [`Standing::explain`] takes.
pub const MAX_PATHS_EXAMINED: usize = 100_000;

/// A peer's index in the graph.
type Node = u32;

/// A map keyed by graph index with a fixed hasher: the walk sums floating-point mass in the
/// maps' iteration order, so the same receipts in the same order must iterate alike in every
/// process for the standing to come out bit-identical (the testnet simulator's reports are
/// reproducible from their seed). Indexes are assigned in arrival order, not chosen by peers.
type NodeMap<V> = HashMap<Node, V, BuildHasherDefault<DefaultHasher>>;

/// What a node passes on at each stage (index `k`: stage `k + 1`); stages past the walk's
/// last are zero.
type Outputs = [f64; MAX_HOPS as usize];

/// How a node splits what it passes on: (contributor, fraction).
type Shares = Vec<(Node, f64)>;

/// One contribution edge, as its downloader holds it.
#[derive(Clone, Copy, Debug, Default)]
struct Edge {
    /// Credits the uploader gave the downloader (its latest receipt).
    credits: u64,
    /// Its net weight: these credits less those the downloader gave the uploader, at least 0
    /// (kept here so splitting a node's mass needs no look-up of the reverse edge).
    weight: u64,
}

/// Standing of every peer, kept up to date receipt by receipt.
#[derive(Clone, Debug)]
pub struct Standing {
    params: StandingParams,
    me: Node,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, Node>,
    /// For each node, the credits each contributor gave it (the uploader's latest receipt) and
    /// their net weight.
    contributors: Vec<NodeMap<Edge>>,
    /// For each node, what this node gave it: the debt the walk's mass pays first.
    debts: Vec<u64>,
    /// For each node, whom it gave to (for explanations).
    gave_to: Vec<Vec<Node>>,
    /// For each node, the sum of its eligible contributors' net weights (see
    /// [`Standing::weight`]; contributors neither this node nor dishonest).
    eligible_total: Vec<u128>,
    dishonest: HashSet<Node>,
    /// `arrived[k][n]`: walk mass (credits) that reached node `n` at stage `k + 1`.
    arrived: Vec<Vec<f64>>,
    edges: usize,
}

impl Standing {
    /// The standing of peers at `me`, with no receipts yet.
    pub fn new(me: PeerId, params: StandingParams) -> Self {
        let params = params.clamped();
        let mut standing = Self {
            params,
            me: 0,
            ids: Vec::new(),
            index: HashMap::new(),
            contributors: Vec::new(),
            debts: Vec::new(),
            gave_to: Vec::new(),
            eligible_total: Vec::new(),
            dishonest: HashSet::new(),
            arrived: vec![Vec::new(); usize::from(params.hops)],
            edges: 0,
        };
        standing.me = standing.node(me);
        standing
    }

    /// The peer whose standing this is: this node.
    pub fn me(&self) -> PeerId {
        self.ids[self.me as usize]
    }

    /// The parameters in force (after clamping).
    pub fn params(&self) -> StandingParams {
        self.params
    }

    /// Peers in the graph, this node included.
    pub fn peer_count(&self) -> usize {
        self.ids.len()
    }

    /// Contribution edges (pairs with credits) in the graph.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    fn node(&mut self, peer: PeerId) -> Node {
        if let Some(&node) = self.index.get(&peer) {
            return node;
        }
        let node = self.ids.len() as Node;
        self.ids.push(peer);
        self.index.insert(peer, node);
        self.contributors.push(NodeMap::default());
        self.debts.push(0);
        self.gave_to.push(Vec::new());
        self.eligible_total.push(0);
        for stage in &mut self.arrived {
            stage.push(0.0);
        }
        node
    }

    /// Whether `node` may take part in the walk as a contributor.
    fn eligible(&self, node: Node) -> bool {
        node != self.me && (self.dishonest.is_empty() || !self.dishonest.contains(&node))
    }

    /// Credits `from` gave `to` (its latest receipt), 0 if none.
    fn credits(&self, from: Node, to: Node) -> u64 {
        self.contributors[to as usize]
            .get(&from)
            .map_or(0, |e| e.credits)
    }

    /// The weight of `from` among the contributors of `to`: the net of the pair,
    /// `(credits(from → to) − credits(to → from))⁺`. Receipts two peers sign both ways for the
    /// same credits weigh nothing, so a clique that claims to have given each of its members
    /// as much as it took cannot draw the walk to itself with them.
    fn weight(&self, from: Node, to: Node) -> u64 {
        self.contributors[to as usize]
            .get(&from)
            .map_or(0, |e| e.weight)
    }

    /// Records that `from` gave `to` `credits` in all, with the net weights of both directions.
    fn set_credits(&mut self, from: Node, to: Node, credits: u64) {
        let back = match self.contributors[from as usize].get_mut(&to) {
            Some(edge) => {
                edge.weight = edge.credits.saturating_sub(credits);
                edge.credits
            }
            None => 0,
        };
        let edge = Edge {
            credits,
            weight: credits.saturating_sub(back),
        };
        self.contributors[to as usize].insert(from, edge);
        if from == self.me {
            self.debts[to as usize] = credits;
        }
    }

    /// What this node gave `node`: the debt the walk's mass pays off before `node` passes any on.
    fn debt(&self, node: Node) -> u64 {
        self.debts[node as usize]
    }

    /// Whether any of the walk's mass reached `node`.
    fn has_mass(&self, node: Node) -> bool {
        self.arrived.iter().any(|stage| stage[node as usize] != 0.0)
    }

    /// Takes a receipt: `uploader` has given `downloader` `credits` in all (the receipt's
    /// cumulative credits). A figure no higher than the one held changes nothing (receipts are
    /// cumulative; an older one arriving late is stale). Returns whether anything changed.
    pub fn observe(&mut self, uploader: PeerId, downloader: PeerId, credits: u64) -> bool {
        if uploader == downloader {
            return false;
        }
        let (u, d) = (self.node(uploader), self.node(downloader));
        let old = self.contributors[d as usize].get(&u).map(|e| e.credits);
        if old.is_some_and(|held| held >= credits) || (old.is_none() && credits == 0) {
            return false;
        }
        let old = old.unwrap_or(0);
        if old == 0 {
            self.edges += 1;
            self.gave_to[u as usize].push(d);
        }
        if d == self.me {
            self.set_credits(u, d, credits);
            if self.eligible(u) {
                // Stage 1: the direct contributor's mass grows by what it gave more.
                let mut delta = vec![NodeMap::default(); usize::from(self.params.hops)];
                delta[0].insert(u, (credits - old) as f64);
                self.propagate(delta, 0);
            }
            return true;
        }
        // The edge changes the net weight of u among d's contributors and of d among u's (or,
        // from this node, d's debt): what either passes on may change.
        let touched: Vec<(Node, Shares, Outputs)> = [d, u]
            .into_iter()
            .filter(|n| *n != self.me && self.has_mass(*n))
            .map(|n| (n, self.outflow_shares(n), self.outputs(n)))
            .collect();
        let (ud_before, du_before) = (self.weight(u, d), self.weight(d, u));
        self.set_credits(u, d, credits);
        if self.eligible(u) {
            let after = self.weight(u, d);
            let total = &mut self.eligible_total[d as usize];
            *total = *total - u128::from(ud_before) + u128::from(after);
        }
        if self.eligible(d) && u != self.me {
            let after = self.weight(d, u);
            let total = &mut self.eligible_total[u as usize];
            *total = *total - u128::from(du_before) + u128::from(after);
        }
        if touched.is_empty() {
            return true;
        }
        let hops = usize::from(self.params.hops);
        let mut delta: Vec<NodeMap<f64>> = vec![NodeMap::default(); hops];
        for (n, before, out_before) in touched {
            let after = self.outflow_shares(n);
            let out_after = self.outputs(n);
            for stage in 0..hops.saturating_sub(1) {
                for (c, share) in &before {
                    *delta[stage + 1].entry(*c).or_insert(0.0) -= out_before[stage] * share;
                }
                for (c, share) in &after {
                    *delta[stage + 1].entry(*c).or_insert(0.0) += out_after[stage] * share;
                }
            }
        }
        self.propagate(delta, 1);
        true
    }

    /// How node `v` splits what it passes on: (contributor, fraction) over eligible
    /// contributors with a positive net weight; empty when it has none (then it keeps all).
    fn outflow_shares(&self, v: Node) -> Shares {
        let total = self.eligible_total[v as usize];
        if total == 0 || v == self.me {
            return Vec::new();
        }
        self.contributors[v as usize]
            .iter()
            .filter(|(u, e)| e.weight > 0 && self.eligible(**u))
            .map(|(u, e)| (*u, e.weight as f64 / total as f64))
            .collect()
    }

    /// What `v` passes on at each stage. The mass that reaches it pays its debt to this node
    /// first (earliest stages first); of the surplus, it passes [`StandingParams::endorse`] on
    /// to its contributors, unless it has none or the stage is the last.
    fn outputs(&self, v: Node) -> Outputs {
        let mut out = [0.0; MAX_HOPS as usize];
        if v == self.me || self.eligible_total[v as usize] == 0 {
            return out;
        }
        // Stage by stage rather than from running sums: once the debt is paid, a stage passes
        // on exactly `endorse` times what reached it, so a change at one stage moves nothing
        // at the later ones (no rounding residue for the increments to chase).
        let mut debt = self.debt(v) as f64;
        let endorse = self.params.endorse;
        for (stage, out) in out
            .iter_mut()
            .enumerate()
            .take(usize::from(self.params.hops) - 1)
        {
            let arrived = self.arrived[stage][v as usize];
            let paid = if debt > 0.0 {
                arrived.clamp(0.0, debt)
            } else {
                0.0
            };
            debt -= paid;
            *out = endorse * (arrived - paid);
        }
        out
    }

    /// Applies mass changes `delta[k]` (stage `k + 1`) from stage index `from` on: each
    /// changes what its node passes on at that stage and, through its debt, at later ones.
    fn propagate(&mut self, mut delta: Vec<NodeMap<f64>>, from: usize) {
        let hops = usize::from(self.params.hops);
        for stage in from..hops {
            let changes = std::mem::take(&mut delta[stage]);
            for (node, change) in changes {
                if change == 0.0 {
                    continue;
                }
                let before = self.outputs(node);
                self.arrived[stage][node as usize] += change;
                let after = self.outputs(node);
                let mut shares: Option<Shares> = None;
                for later in stage..hops.saturating_sub(1) {
                    let passed = after[later] - before[later];
                    if passed == 0.0 {
                        continue;
                    }
                    let shares = shares.get_or_insert_with(|| self.outflow_shares(node));
                    for (u, share) in shares.iter() {
                        *delta[later + 1].entry(*u).or_insert(0.0) += passed * share;
                    }
                }
            }
        }
    }

    /// Marks `peer` dishonest: it loses all standing and the walk no longer passes through it.
    /// Rebuilds the walk (rare: a conflict proof).
    pub fn mark_dishonest(&mut self, peer: PeerId) {
        let node = self.node(peer);
        if node == self.me || !self.dishonest.insert(node) {
            return;
        }
        self.recompute();
    }

    /// Rebuilds the walk from the graph, from scratch.
    pub fn recompute(&mut self) {
        let hops = usize::from(self.params.hops);
        let n = self.ids.len();
        for v in 0..n {
            self.eligible_total[v] = self.contributors[v]
                .iter()
                .filter(|(u, _)| self.eligible(**u))
                .map(|(_, e)| u128::from(e.weight))
                .sum();
        }
        for stage in &mut self.arrived {
            stage.clear();
            stage.resize(n, 0.0);
        }
        let mut start: Vec<NodeMap<f64>> = vec![NodeMap::default(); hops];
        for (u, e) in &self.contributors[self.me as usize] {
            if e.credits > 0 && self.eligible(*u) {
                start[0].insert(*u, e.credits as f64);
            }
        }
        self.propagate(start, 0);
    }

    /// The standing of `peer` at this node.
    pub fn of(&self, peer: &PeerId) -> PeerStanding {
        let Some(&node) = self.index.get(peer) else {
            return PeerStanding::default();
        };
        if node == self.me {
            return PeerStanding::default();
        }
        if self.dishonest.contains(&node) {
            return PeerStanding {
                dishonest: true,
                ..PeerStanding::default()
            };
        }
        let given = self.credits(node, self.me);
        let taken = self.debt(node);
        let out = self.outputs(node);
        let passed = out[0];
        let reached: f64 = self.arrived[1..].iter().map(|s| s[node as usize]).sum();
        let passed_later: f64 = out[1..].iter().sum();
        let transitive = (reached - passed_later).max(0.0);
        let raw = given as f64 - taken as f64 - passed + transitive;
        let score = if raw > 0.0 {
            std::f64::consts::FRAC_2_PI * (raw / self.params.scale_credits).atan()
        } else {
            0.0
        };
        PeerStanding {
            given,
            taken,
            passed,
            transitive,
            raw,
            score,
            dishonest: false,
        }
    }

    /// Every peer with a standing above the floor, with it.
    pub fn above_floor(&self) -> Vec<(PeerId, PeerStanding)> {
        self.ids
            .iter()
            .map(|peer| (*peer, self.of(peer)))
            .filter(|(_, s)| !s.at_floor())
            .collect()
    }

    /// Why `peer` has its standing: the figures and up to `max_paths` of the strongest chains
    /// that carry its transitive part (searched depth-first from the peer toward this node,
    /// along whom each gave to, at most [`MAX_PATHS_EXAMINED`] chains).
    pub fn explain(&self, peer: &PeerId, max_paths: usize) -> Explanation {
        let standing = self.of(peer);
        let mut explanation = Explanation {
            standing,
            paths: Vec::new(),
            paths_examined: 0,
        };
        let Some(&target) = self.index.get(peer) else {
            return explanation;
        };
        if standing.dishonest || target == self.me {
            return explanation;
        }
        // Chains target = x_k → … → x_1 → me, k ≥ 2; the mass along one is what x_1 passed on,
        // times the share and the fraction passed on at each step, times what the target keeps.
        let hops = usize::from(self.params.hops);
        let mut found: Vec<Path> = Vec::new();
        let mut chain = vec![target];
        self.chains(
            &mut chain,
            hops,
            &mut found,
            &mut explanation.paths_examined,
        );
        found.sort_by(|a, b| b.credits.total_cmp(&a.credits));
        found.truncate(max_paths);
        explanation.paths = found;
        explanation
    }

    /// Extends `chain` (target first) by whom its last node gave to, recording every chain
    /// that reaches this node in 2 to `hops` steps.
    fn chains(
        &self,
        chain: &mut Vec<Node>,
        hops: usize,
        found: &mut Vec<Path>,
        examined: &mut usize,
    ) {
        let Some(&last) = chain.last() else {
            return;
        };
        for &next in &self.gave_to[last as usize] {
            if *examined >= MAX_PATHS_EXAMINED {
                return;
            }
            *examined += 1;
            if next == self.me {
                if chain.len() >= 2
                    && let Some(path) = self.path_mass(chain)
                {
                    found.push(path);
                }
                continue;
            }
            if chain.len() >= hops || chain.contains(&next) || self.dishonest.contains(&next) {
                continue;
            }
            chain.push(next);
            self.chains(chain, hops, found, examined);
            chain.pop();
        }
    }

    /// The mass the walk carries along `chain` (target first, its last node a direct
    /// contributor of this node) and the target keeps; `None` if it carries none.
    fn path_mass(&self, chain: &[Node]) -> Option<Path> {
        let first = *chain.last()?;
        let mut mass = self.outputs(first)[0];
        // Walk from the direct contributor back to the target: at each step the receiver
        // passes on the fraction of what reached it that its outputs say, split by weight.
        for (stage, pair) in chain.windows(2).rev().enumerate() {
            let (giver, receiver) = (pair[0], pair[1]);
            if stage > 0 {
                let reached = self.arrived[stage][receiver as usize];
                if reached <= 0.0 {
                    return None;
                }
                mass *= self.outputs(receiver)[stage] / reached;
            }
            let total = self.eligible_total[receiver as usize];
            if total == 0 {
                return None;
            }
            mass *= self.weight(giver, receiver) as f64 / total as f64;
        }
        let target = chain[0];
        let stage = chain.len() - 1;
        let reached = self.arrived.get(stage)?[target as usize];
        if reached <= 0.0 || mass <= 0.0 {
            return None;
        }
        mass *= (reached - self.outputs(target)[stage]) / reached;
        Some(Path {
            via: chain.iter().rev().map(|n| self.ids[*n as usize]).collect(),
            credits: mass,
        })
    }
}

#[cfg(test)]
mod tests;
