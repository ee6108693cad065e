//! Properties of the upload scheduler over long runs with every peer always backlogged: bytes
//! converge to the weights within the fair-queueing bound, the floor slice holds, and raising a
//! standing never lowers a share.
//!
//! The bound used throughout is start-time fair queueing's: for two peers backlogged over a run,
//! `|W_i/w_i − W_j/w_j| ≤ L/w_i + L/w_j` with `W` bytes served, `w` weights and `L` the largest
//! request. Summed over peers it gives `|W_i − T·w_i/Σw| ≤ L·(1 + n·w_i/Σw)` for `T` bytes in
//! all, and between the two classes `|W_floor − φ·T| ≤ L`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tally_ledger::PeerId;
use tally_market::{FloorPolicy, Scheduler, SchedulerConfig};

/// Now, for the (absent) budget.
const NOW: u64 = 1_773_144_000_000;

fn peer(i: usize) -> PeerId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PeerId(id)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One long run: every peer keeps `depth` requests waiting, sizes drawn from its own seeded
/// stream in `1..=max_bytes` (so two runs with the same seed see the same sizes per peer).
struct Run {
    /// Bytes served per peer.
    served: Vec<u64>,
    /// Each peer's share as the scheduler predicted it at the start.
    predicted: Vec<f64>,
    /// Each peer's weight as the scheduler reported it.
    weights: Vec<f64>,
}

impl Run {
    fn total(&self) -> u64 {
        self.served.iter().sum()
    }

    fn share(&self, i: usize) -> f64 {
        self.served[i] as f64 / self.total() as f64
    }
}

fn run(
    config: SchedulerConfig,
    standings: &[f64],
    max_bytes: u64,
    seed: u64,
    serves: usize,
) -> Run {
    let mut s = Scheduler::new(config);
    let mut streams: Vec<u64> = (0..standings.len())
        .map(|i| seed ^ ((i as u64) << 40))
        .collect();
    let mut size = |i: usize| 1 + splitmix(&mut streams[i]) % max_bytes;
    for (i, &standing) in standings.iter().enumerate() {
        s.set_standing(peer(i), standing);
        for _ in 0..3 {
            s.enqueue(peer(i), i, size(i)).unwrap();
        }
    }
    let predicted = (0..standings.len())
        .map(|i| s.position(&peer(i)).unwrap().share)
        .collect();
    let weights = (0..standings.len())
        .map(|i| s.position(&peer(i)).unwrap().weight)
        .collect();
    let mut served = vec![0u64; standings.len()];
    for _ in 0..serves {
        let d = s.next(NOW).unwrap().expect("every peer is backlogged");
        served[d.request] += d.bytes;
        s.enqueue(d.peer, d.request, size(d.request)).unwrap();
    }
    Run {
        served,
        predicted,
        weights,
    }
}

fn config(policy: FloorPolicy, slice: f64, gain: f64) -> SchedulerConfig {
    SchedulerConfig {
        floor_policy: policy,
        floor_slice: slice,
        standing_gain: gain,
        ..SchedulerConfig::default()
    }
}

fn policy() -> impl Strategy<Value = FloorPolicy> {
    prop_oneof![Just(FloorPolicy::Capped), Just(FloorPolicy::Reserved)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn backlogged_peers_converge_to_their_weights(
        standings in prop::collection::vec(0.0001f64..1.0, 2..9),
        gain in 0.0f64..20.0,
        max_bytes in prop_oneof![Just(1u64), 1u64..=4096, Just(256 * 1024)],
        seed in any::<u64>(),
    ) {
        let cfg = config(FloorPolicy::Capped, 0.2, gain);
        let r = run(cfg, &standings, max_bytes, seed, 4_000);
        let n = standings.len() as f64;
        let total_weight: f64 = r.weights.iter().sum();
        let total = r.total() as f64;
        for (i, &standing) in standings.iter().enumerate() {
            // The documented mapping.
            prop_assert!((r.weights[i] - (1.0 + gain * standing)).abs() < 1e-4);
            let expected = r.weights[i] / total_weight;
            prop_assert!((r.predicted[i] - expected).abs() < 1e-9);
            let bound = max_bytes as f64 * (1.0 + n * expected) / total + 1e-6;
            prop_assert!(
                (r.share(i) - expected).abs() <= bound,
                "peer {i}: share {} expected {expected} bound {bound}", r.share(i)
            );
        }
    }

    #[test]
    fn floor_peers_get_the_slice_round_robin(
        floor in 1usize..6,
        standings in prop::collection::vec(0.0001f64..1.0, 1..6),
        slice in 0.05f64..0.6,
        policy in policy(),
        max_bytes in prop_oneof![Just(1u64), 1u64..=4096, Just(256 * 1024)],
        seed in any::<u64>(),
    ) {
        let mut all = vec![0.0; floor];
        all.extend(&standings);
        let r = run(config(policy, slice, 9.0), &all, max_bytes, seed, 4_000);
        let total = r.total() as f64;
        let standing_weight: f64 = r.weights[floor..].iter().sum();
        let phi = match policy {
            FloorPolicy::Reserved => slice,
            FloorPolicy::Capped => slice.min(floor as f64 / (floor as f64 + standing_weight)),
        };
        let floor_total: f64 = (0..floor).map(|i| r.share(i)).sum();
        let l = max_bytes as f64 / total;
        prop_assert!(
            (floor_total - phi).abs() <= l + 1e-6,
            "floor got {floor_total}, slice {phi}"
        );
        prop_assert!(floor_total <= slice + l + 1e-6);
        for i in 0..floor {
            prop_assert!((r.predicted[i] - phi / floor as f64).abs() < 1e-9);
            prop_assert!((r.share(i) - phi / floor as f64).abs() <= 3.0 * l + 1e-6);
        }
    }

    #[test]
    fn only_floor_peers_get_everything(
        floor in 1usize..9,
        slice in 0.0f64..1.0,
        policy in policy(),
        max_bytes in 1u64..=(256 * 1024),
        seed in any::<u64>(),
    ) {
        let r = run(config(policy, slice, 9.0), &vec![0.0; floor], max_bytes, seed, 2_000);
        let l = max_bytes as f64 / r.total() as f64;
        for i in 0..floor {
            prop_assert!((r.predicted[i] - 1.0 / floor as f64).abs() < 1e-9);
            prop_assert!((r.share(i) - 1.0 / floor as f64).abs() <= 2.0 * l + 1e-6);
        }
    }

    #[test]
    fn raising_a_standing_never_lowers_the_share(
        floor in 0usize..4,
        standings in prop::collection::vec(0.0001f64..1.0, 1..7),
        from in prop_oneof![Just(0.0f64), 0.0f64..1.0],
        raise in prop_oneof![0.0001f64..0.05, 0.0001f64..1.0],
        policy in policy(),
        max_bytes in prop_oneof![Just(1u64), 1u64..=(256 * 1024)],
        seed in any::<u64>(),
    ) {
        // Reserved keeps the slice for the floor however few are there, so it is monotone only
        // above the floor; Capped is monotone from the floor up.
        let from = if policy == FloorPolicy::Reserved { from.max(0.0001) } else { from };
        let to = (from + raise).min(1.0);
        let mut before = vec![from];
        before.extend(std::iter::repeat_n(0.0, floor));
        before.extend(&standings);
        let mut after = before.clone();
        after[0] = to;
        let cfg = config(policy, 0.2, 9.0);
        let (a, b) = (run(cfg, &before, max_bytes, seed, 4_000), run(cfg, &after, max_bytes, seed, 4_000));
        prop_assert!(b.predicted[0] >= a.predicted[0] - 1e-12, "{} -> {}", a.predicted[0], b.predicted[0]);
        let n = before.len() as f64;
        let slack = max_bytes as f64 * (3.0 + n) * (1.0 / a.total() as f64 + 1.0 / b.total() as f64);
        prop_assert!(
            b.share(0) >= a.share(0) - slack - 1e-6,
            "standing {from} -> {to}: share {} -> {}", a.share(0), b.share(0)
        );
    }
}

/// Whitewashing: a peer with any standing never does better by coming back as a newcomer.
#[test]
fn a_fresh_identity_never_beats_a_small_standing() {
    for others in 1..6 {
        let mut standings = vec![0.0001];
        standings.extend(std::iter::repeat_n(0.9, others));
        let earned = run(SchedulerConfig::default(), &standings, 1 << 18, 1, 3_000);
        standings[0] = 0.0;
        let fresh = run(SchedulerConfig::default(), &standings, 1 << 18, 1, 3_000);
        assert!(earned.predicted[0] >= fresh.predicted[0]);
        assert!(earned.share(0) + 2e-3 >= fresh.share(0));
    }
}

/// The sharpest case for monotonicity at the floor: a lone newcomer among heavy contributors
/// earns a sliver of standing. Under a reserved slice it would drop from 20% to about 2%.
#[test]
fn a_lone_newcomer_earning_a_little_standing_does_not_lose_share() {
    let mut standings = vec![0.0];
    standings.extend([0.9; 5]);
    let cfg = SchedulerConfig::default();
    let newcomer = run(cfg, &standings, 1 << 18, 3, 3_000);
    standings[0] = 0.001;
    let earned = run(cfg, &standings, 1 << 18, 3, 3_000);
    assert!(earned.predicted[0] >= newcomer.predicted[0]);
    assert!(earned.share(0) + 2e-3 >= newcomer.share(0));
    // The reserved policy trades this away, as documented.
    let reserved = config(FloorPolicy::Reserved, 0.2, 9.0);
    standings[0] = 0.0;
    assert!((run(reserved, &standings, 1 << 18, 3, 3_000).share(0) - 0.2).abs() < 0.01);
}
