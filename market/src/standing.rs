//! Standing: what each peer gave, as this node judges it from the receipts it holds.
//!
//! Two parts, both in credits:
//!
//! - **Direct**: credits the peer gave this node (its receipts as uploader to this node) minus
//!   credits this node gave it.
//! - **Transitive**: a share of what this node received, passed back along the contribution
//!   graph to those who gave to the peers that gave to this node, at most [`StandingParams::hops`]
//!   edges away. It is a bounded, personalised walk (MeritRank's family, computed exactly rather
//!   than sampled): stage 1 puts on each direct contributor `j` the credits `j` gave this node;
//!   a node reached at stage `k` passes the fraction [`StandingParams::endorse`] of what reached
//!   it to its own contributors, in proportion to what each gave it, and keeps the rest (at the
//!   last stage, or with no contributors to pass to, it keeps all). What a node keeps at stages
//!   2 and later is its transitive standing; stage-1 nodes keep nothing of the walk (their direct
//!   part already counts what they gave).
//!
//! Why this and not a max-flow (BarterCast): a max-flow bounds what each identity of a sybil
//! clique can draw through the clique's attack edges, but every one of the clique's identities
//! can draw that much again. The walk conserves mass: everything that enters a region of the
//! graph enters through edges into it, in proportion to what those edges carry at the honest
//! end, and is then only divided inside the region. So the clique's standing, summed over all its
//! identities, is at most what its attack edges earned — whatever receipts its members sign
//! among themselves. Receipts among third parties cost a clique nothing to make; here they only
//! decide how the clique shares what it earned.
//!
//! Keys marked dishonest (a conflict proof) are out of the graph: no standing, and the walk
//! neither reaches nor passes through them. A peer this node never heard of and a peer that only
//! took have the same standing: zero, the floor ([`PeerStanding::score`] is 0 for any raw
//! standing at or below zero), so a fresh identity gains nothing over a freerider.
//!
//! Updates are incremental: a receipt changes one edge, and only the walk's mass that passed
//! through that edge's downloader is recomputed, as deltas pushed forward stage by stage: work in
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
    /// Fraction of what reaches a node that it passes on to its own contributors, in [0, 1).
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
    /// Transitive standing, in credits.
    pub transitive: f64,
    /// `given − taken + transitive`.
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

/// Standing of every peer, kept up to date receipt by receipt.
#[derive(Clone, Debug)]
pub struct Standing {
    params: StandingParams,
    me: Node,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, Node>,
    /// For each node, the credits each contributor gave it (the uploader's latest receipt).
    contributors: Vec<NodeMap<u64>>,
    /// For each node, whom it gave to (for explanations).
    gave_to: Vec<Vec<Node>>,
    /// For each node, the sum of its eligible contributors' credits (neither this node nor
    /// dishonest).
    eligible_total: Vec<u128>,
    dishonest: HashSet<Node>,
    /// `arrived[k][n]`: walk mass (credits) that reached node `n` at stage `k + 1`.
    arrived: Vec<Vec<f64>>,
    /// Transitive standing (mass kept at stages 2 and later), per node.
    kept: Vec<f64>,
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
            gave_to: Vec::new(),
            eligible_total: Vec::new(),
            dishonest: HashSet::new(),
            arrived: vec![Vec::new(); usize::from(params.hops)],
            kept: Vec::new(),
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
        self.gave_to.push(Vec::new());
        self.eligible_total.push(0);
        for stage in &mut self.arrived {
            stage.push(0.0);
        }
        self.kept.push(0.0);
        node
    }

    /// Whether `node` may take part in the walk as a contributor.
    fn eligible(&self, node: Node) -> bool {
        node != self.me && !self.dishonest.contains(&node)
    }

    /// Takes a receipt: `uploader` has given `downloader` `credits` in all (the receipt's
    /// cumulative credits). A figure no higher than the one held changes nothing (receipts are
    /// cumulative; an older one arriving late is stale). Returns whether anything changed.
    pub fn observe(&mut self, uploader: PeerId, downloader: PeerId, credits: u64) -> bool {
        if uploader == downloader {
            return false;
        }
        let (u, d) = (self.node(uploader), self.node(downloader));
        let old = self.contributors[d as usize].get(&u).copied();
        if old.is_some_and(|held| held >= credits) || (old.is_none() && credits == 0) {
            return false;
        }
        let old = old.unwrap_or(0);
        if old == 0 {
            self.edges += 1;
            self.gave_to[u as usize].push(d);
        }
        let shares_before = self.eligible(u).then(|| self.outflow_shares(d));
        self.contributors[d as usize].insert(u, credits);
        if self.eligible(u) {
            self.eligible_total[d as usize] += u128::from(credits - old);
        }
        if d == self.me {
            if self.eligible(u) {
                // Stage 1: the direct contributor's mass grows by what it gave more.
                let mut delta = vec![NodeMap::default(); usize::from(self.params.hops)];
                delta[0].insert(u, (credits - old) as f64);
                self.propagate(delta, 0);
            }
            return true;
        }
        if let Some(before) = shares_before {
            self.reshare(d, &before);
        }
        true
    }

    /// How node `v` splits what it passes on: (contributor, fraction) over eligible
    /// contributors; empty when it has none (then it keeps all from stage 2 on).
    fn outflow_shares(&self, v: Node) -> Vec<(Node, f64)> {
        let total = self.eligible_total[v as usize];
        if total == 0 || v == self.me {
            return Vec::new();
        }
        self.contributors[v as usize]
            .iter()
            .filter(|(u, c)| **c > 0 && self.eligible(**u))
            .map(|(u, c)| (*u, *c as f64 / total as f64))
            .collect()
    }

    /// After the contributors of `v` changed (they were split `before`), moves the mass `v`
    /// passed on at every stage from the old split to the new, and what `v` kept.
    fn reshare(&mut self, v: Node, before: &[(Node, f64)]) {
        let hops = usize::from(self.params.hops);
        let after = self.outflow_shares(v);
        let old: NodeMap<f64> = before.iter().copied().collect();
        let new: NodeMap<f64> = after.iter().copied().collect();
        let endorse = self.params.endorse;
        let mut delta: Vec<NodeMap<f64>> = vec![NodeMap::default(); hops];
        let mut any = false;
        for stage in 0..hops {
            let mass = self.arrived[stage][v as usize];
            if mass == 0.0 {
                continue;
            }
            let last = stage + 1 == hops;
            if last {
                continue;
            }
            any = true;
            // What v kept at this stage (stages 2+), before and after.
            if stage > 0 {
                let kept_before = if before.is_empty() {
                    mass
                } else {
                    (1.0 - endorse) * mass
                };
                let kept_after = if after.is_empty() {
                    mass
                } else {
                    (1.0 - endorse) * mass
                };
                self.kept[v as usize] += kept_after - kept_before;
            }
            let passed = endorse * mass;
            for (u, share) in &old {
                *delta[stage + 1].entry(*u).or_insert(0.0) -= passed * share;
            }
            for (u, share) in &new {
                *delta[stage + 1].entry(*u).or_insert(0.0) += passed * share;
            }
        }
        if any {
            self.propagate(delta, 1);
        }
    }

    /// Applies mass changes `delta[k]` (stage `k + 1`) from stage index `from` on: each changes
    /// what its node keeps and, before the last stage, what it passes on.
    fn propagate(&mut self, mut delta: Vec<NodeMap<f64>>, from: usize) {
        let hops = usize::from(self.params.hops);
        let endorse = self.params.endorse;
        for stage in from..hops {
            let changes = std::mem::take(&mut delta[stage]);
            for (node, change) in changes {
                if change == 0.0 {
                    continue;
                }
                self.arrived[stage][node as usize] += change;
                let shares = if stage + 1 < hops {
                    self.outflow_shares(node)
                } else {
                    Vec::new()
                };
                if stage > 0 {
                    self.kept[node as usize] += if shares.is_empty() {
                        change
                    } else {
                        (1.0 - endorse) * change
                    };
                }
                if stage + 1 < hops {
                    for (u, share) in shares {
                        *delta[stage + 1].entry(u).or_insert(0.0) += endorse * change * share;
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
        for (v, total) in self.eligible_total.iter_mut().enumerate() {
            *total = self.contributors[v]
                .iter()
                .filter(|(u, _)| **u != self.me && !self.dishonest.contains(u))
                .map(|(_, c)| u128::from(*c))
                .sum();
        }
        for stage in &mut self.arrived {
            stage.clear();
            stage.resize(n, 0.0);
        }
        self.kept.clear();
        self.kept.resize(n, 0.0);
        let mut start: Vec<NodeMap<f64>> = vec![NodeMap::default(); hops];
        for (u, c) in &self.contributors[self.me as usize] {
            if *c > 0 && self.eligible(*u) {
                start[0].insert(*u, *c as f64);
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
        let given = self.contributors[self.me as usize]
            .get(&node)
            .copied()
            .unwrap_or(0);
        let taken = self.contributors[node as usize]
            .get(&self.me)
            .copied()
            .unwrap_or(0);
        let transitive = self.kept[node as usize].max(0.0);
        let raw = given as f64 - taken as f64 + transitive;
        let score = if raw > 0.0 {
            std::f64::consts::FRAC_2_PI * (raw / self.params.scale_credits).atan()
        } else {
            0.0
        };
        PeerStanding {
            given,
            taken,
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
        // Chains target = x_k → … → x_1 → me, k ≥ 2; the mass along one is what x_1 gave me,
        // times endorse · share at each step, times what the target keeps of it.
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
    /// contributor of this node) and the target keeps.
    fn path_mass(&self, chain: &[Node]) -> Option<Path> {
        let first = *chain.last()?;
        let mut mass = *self.contributors[self.me as usize].get(&first)? as f64;
        let endorse = self.params.endorse;
        // Walk from the direct contributor back to the target.
        for pair in chain.windows(2).rev() {
            let (giver, receiver) = (pair[0], pair[1]);
            let total = self.eligible_total[receiver as usize];
            let credits = *self.contributors[receiver as usize].get(&giver)?;
            if total == 0 {
                return None;
            }
            mass *= endorse * credits as f64 / total as f64;
        }
        let target = chain[0];
        let stage = chain.len();
        let keeps_all =
            stage >= usize::from(self.params.hops) || self.outflow_shares(target).is_empty();
        if !keeps_all {
            mass *= 1.0 - endorse;
        }
        Some(Path {
            via: chain.iter().rev().map(|n| self.ids[*n as usize]).collect(),
            credits: mass,
        })
    }
}

#[cfg(test)]
mod tests;
