#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

fn peer(i: u32) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes[31] = 0xaa;
    PeerId(bytes)
}

const ME: u32 = 0;

fn standing() -> Standing {
    Standing::new(peer(ME), StandingParams::default())
}

/// Standings of peers `0..n` from `s` and from a copy rebuilt from scratch agree.
fn assert_incremental_matches_recompute(s: &Standing, n: u32) {
    let mut fresh = s.clone();
    fresh.recompute();
    for i in 0..n {
        let (a, b) = (s.of(&peer(i)), fresh.of(&peer(i)));
        let tolerance = 1e-9 * (1.0 + a.raw.abs().max(b.raw.abs()));
        assert!(
            (a.raw - b.raw).abs() <= tolerance && (a.transitive - b.transitive).abs() <= tolerance,
            "peer {i}: incremental {a:?}, recomputed {b:?}"
        );
    }
}

#[test]
fn direct_standing_is_given_minus_taken_and_the_floor_is_shared() {
    let mut s = standing();
    s.observe(peer(1), peer(ME), 10 * MIB);
    s.observe(peer(ME), peer(1), 4 * MIB);
    s.observe(peer(ME), peer(2), 8 * MIB); // a freerider: took, gave nothing
    let one = s.of(&peer(1));
    assert_eq!((one.given, one.taken), (10 * MIB, 4 * MIB));
    assert_eq!(one.raw, (6 * MIB) as f64);
    assert!(one.score > 0.0 && one.score < 1.0);
    let freerider = s.of(&peer(2));
    let stranger = s.of(&peer(99));
    assert!(freerider.at_floor() && stranger.at_floor());
    assert_eq!(
        freerider.score, stranger.score,
        "a new identity gains nothing"
    );
    assert!(freerider.raw < 0.0);
}

#[test]
fn stale_and_self_receipts_change_nothing() {
    let mut s = standing();
    assert!(s.observe(peer(1), peer(ME), 10 * MIB));
    assert!(
        !s.observe(peer(1), peer(ME), 9 * MIB),
        "older cumulative figure"
    );
    assert!(!s.observe(peer(1), peer(ME), 10 * MIB), "the same figure");
    assert!(!s.observe(peer(3), peer(3), MIB), "a peer with itself");
    assert_eq!(s.of(&peer(1)).given, 10 * MIB);
}

#[test]
fn contribution_flows_back_to_those_who_gave_to_my_contributors() {
    let params = StandingParams::default();
    let mut s = Standing::new(peer(ME), params);
    // 1 gave me 100; 2 gave 1 60 and 3 gave 1 20; 4 gave 2 10 (three hops from me).
    s.observe(peer(1), peer(ME), 100 * MIB);
    s.observe(peer(2), peer(1), 60 * MIB);
    s.observe(peer(3), peer(1), 20 * MIB);
    s.observe(peer(4), peer(2), 10 * MIB);
    let e = params.endorse;
    let passed = e * (100 * MIB) as f64; // what 1 passes on
    let to_two = passed * 60.0 / 80.0;
    let to_three = passed * 20.0 / 80.0;
    // 2 keeps 1 − e and passes e on to 4, who is at the last stage and keeps it all.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.max(1.0);
    assert!(close(s.of(&peer(2)).transitive, (1.0 - e) * to_two));
    assert!(
        close(s.of(&peer(3)).transitive, to_three),
        "no contributors: keeps all"
    );
    assert!(close(s.of(&peer(4)).transitive, e * to_two));
    assert_eq!(
        s.of(&peer(1)).transitive,
        0.0,
        "a direct contributor keeps none of the walk"
    );
    assert_incremental_matches_recompute(&s, 5);

    // The explanation names the chain 4 → 2 → 1 → me with the credits it carries.
    let why = s.explain(&peer(4), 5);
    assert_eq!(why.paths.len(), 1);
    assert_eq!(why.paths[0].via, vec![peer(1), peer(2), peer(4)]);
    assert!(close(why.paths[0].credits, e * to_two));
}

#[test]
fn one_hop_is_direct_balance_only() {
    let mut s = Standing::new(
        peer(ME),
        StandingParams {
            hops: 1,
            ..StandingParams::default()
        },
    );
    s.observe(peer(1), peer(ME), 100 * MIB);
    s.observe(peer(2), peer(1), 60 * MIB);
    assert_eq!(s.of(&peer(2)).transitive, 0.0);
    assert_eq!(s.of(&peer(1)).raw, (100 * MIB) as f64);
}

#[test]
fn a_dishonest_key_has_no_standing_and_passes_nothing_on() {
    let mut s = standing();
    s.observe(peer(1), peer(ME), 100 * MIB);
    s.observe(peer(2), peer(1), 60 * MIB);
    s.observe(peer(3), peer(2), 60 * MIB);
    assert!(s.of(&peer(3)).transitive > 0.0);
    s.mark_dishonest(peer(2));
    let two = s.of(&peer(2));
    assert!(two.dishonest && two.at_floor() && two.raw == 0.0);
    assert_eq!(
        s.of(&peer(3)).transitive,
        0.0,
        "the walk does not pass through it"
    );
    // Receipts that arrive later keep it out.
    s.observe(peer(2), peer(ME), 500 * MIB);
    assert!(s.of(&peer(2)).at_floor());
    s.observe(peer(4), peer(2), 10 * MIB);
    assert_eq!(s.of(&peer(4)).transitive, 0.0);
    assert_incremental_matches_recompute(&s, 5);
}

#[test]
fn out_of_range_parameters_are_clamped() {
    let s = Standing::new(
        peer(ME),
        StandingParams {
            hops: 200,
            endorse: f64::NAN,
            scale_credits: -1.0,
        },
    );
    let p = s.params();
    assert_eq!(p.hops, MAX_HOPS);
    assert_eq!(p.endorse, 0.0);
    assert_eq!(p.scale_credits, StandingParams::default().scale_credits);
}

/// Honest nodes 1..=10 trade among themselves and with me; the attacker's identity 100 gave
/// honest node 3 `attack` credits. With `clique`, identities 100..150 sign huge receipts among
/// themselves. Returns the sybils' summed raw standing at me.
fn sybil_standing(attack: u64, clique: bool) -> (f64, f64) {
    let mut s = standing();
    let mut rng = 7u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut held: HashMap<(u32, u32), u64> = HashMap::new();
    for _ in 0..60 {
        let up = 1 + (next() % 10) as u32;
        let down = (next() % 11) as u32; // 0 is me
        if up != down {
            let credits = held.entry((up, down)).or_insert(0);
            *credits += (1 + next() % 50) * MIB;
            s.observe(peer(up), peer(down), *credits);
        }
    }
    s.observe(peer(100), peer(3), attack);
    if clique {
        for a in 100..150u32 {
            for b in 100..150u32 {
                if a != b && (a + b) % 3 != 0 {
                    s.observe(peer(a), peer(b), 1 << 50);
                }
            }
        }
    }
    let sybils: f64 = (100..150u32).map(|i| s.of(&peer(i)).raw).sum();
    let others = (1..=10u32).map(|i| s.of(&peer(i)).raw).sum();
    (sybils, others)
}

#[test]
fn a_sybil_clique_gains_no_more_than_its_attack_edge_carries() {
    let attack = 20 * MIB;
    let (alone, honest_before) = sybil_standing(attack, false);
    let (clique, honest_after) = sybil_standing(attack, true);
    assert!(alone > 0.0, "the attack edge earned something: {alone}");
    let gain = clique / alone - 1.0;
    println!(
        "sybil clique of 50 with one attack edge of {} MiB: summed standing {clique:.0} credits against {alone:.0} earned by the edge alone; relative gain {gain:+.6}",
        attack / MIB
    );
    assert!(gain <= 1e-9, "relative gain {gain}");
    assert!(
        (honest_before - honest_after).abs() <= 1e-6 * honest_before.abs().max(1.0),
        "the clique's receipts among themselves move no honest standing"
    );
}

#[derive(Clone, Debug)]
struct Op {
    up: u32,
    down: u32,
    add: u64,
}

fn ops(peers: u32, len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (0..peers, 0..peers, 1u64..1_000).prop_map(|(up, down, add)| Op {
            up,
            down,
            add: add * 1024,
        }),
        1..len,
    )
}

/// Applies `ops` as cumulative receipts (each adds to its pair's credits).
fn apply(s: &mut Standing, ops: &[Op]) {
    let mut held: HashMap<(u32, u32), u64> = HashMap::new();
    for op in ops {
        if op.up == op.down {
            continue;
        }
        let credits = held.entry((op.up, op.down)).or_insert(0);
        *credits += op.add;
        s.observe(peer(op.up), peer(op.down), *credits);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_updates_equal_a_full_recompute(ops in ops(12, 120), hops in 1u8..=4) {
        let mut s = Standing::new(peer(ME), StandingParams { hops, ..StandingParams::default() });
        apply(&mut s, &ops);
        assert_incremental_matches_recompute(&s, 12);
    }

    #[test]
    fn more_given_to_me_never_lowers_standing(ops in ops(10, 80), who in 1u32..10, more in 1u64..10_000) {
        let mut s = standing();
        apply(&mut s, &ops);
        let before = s.of(&peer(who));
        let held = s.of(&peer(who)).given;
        s.observe(peer(who), peer(ME), held + more * 1024);
        let after = s.of(&peer(who));
        prop_assert!(after.raw >= before.raw - 1e-6 * before.raw.abs().max(1.0),
            "before {before:?}, after {after:?}");
        prop_assert!(after.score >= before.score);
    }

    #[test]
    fn transitive_standing_never_exceeds_what_was_passed_on(ops in ops(12, 120)) {
        let mut s = standing();
        apply(&mut s, &ops);
        let received: f64 = (1..12u32).map(|i| s.of(&peer(i)).given as f64).sum();
        let transitive: f64 = (1..12u32).map(|i| s.of(&peer(i)).transitive).sum();
        prop_assert!(transitive <= s.params().endorse * received * (1.0 + 1e-9) + 1e-6);
        for i in 1..12u32 {
            let why = s.explain(&peer(i), 1_000);
            let explained: f64 = why.paths.iter().map(|p| p.credits).sum();
            // Chains without repeated nodes carry at most the peer's transitive standing.
            prop_assert!(explained <= why.standing.transitive * (1.0 + 1e-9) + 1e-6);
        }
    }
}

/// How a clique of identities 100..110 (the gateway is 100) signs receipts among itself.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Claims {
    /// No receipts among the clique: the gateway's standing alone, for comparison.
    None,
    /// Every member to every other, both ways, 1 TiB each.
    Mesh,
    /// Every other member to the gateway, one way, 1 TiB each.
    Star,
}

/// The clique's summed standing above the floor at me and the gateway's own, when the gateway
/// uploads to me directly (40 MiB), downloads from me (10 MiB), uploads to honest node 3
/// (30 MiB) and downloaded from honest seeders 1 and 2 (16 MiB each); the other nine members
/// each downloaded 8 MiB from honest node 4 and, `with_debts`, 8 MiB from me.
fn gateway_case(claims: Claims, with_debts: bool) -> (f64, f64) {
    let mut s = standing();
    let mut rng = 11u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut held: HashMap<(u32, u32), u64> = HashMap::new();
    for _ in 0..40 {
        let up = 1 + (next() % 6) as u32;
        let down = (next() % 7) as u32; // 0 is me
        if up != down {
            let credits = held.entry((up, down)).or_insert(0);
            *credits += (1 + next() % 50) * MIB;
            s.observe(peer(up), peer(down), *credits);
        }
    }
    let gateway = 100;
    s.observe(peer(1), peer(gateway), 16 * MIB);
    s.observe(peer(2), peer(gateway), 16 * MIB);
    s.observe(peer(gateway), peer(ME), 40 * MIB);
    s.observe(peer(ME), peer(gateway), 10 * MIB);
    s.observe(peer(gateway), peer(3), 30 * MIB);
    for sybil in 101..110u32 {
        s.observe(peer(4), peer(sybil), 8 * MIB);
        if with_debts {
            s.observe(peer(ME), peer(sybil), 8 * MIB);
        }
    }
    for a in 100..110u32 {
        for b in 100..110u32 {
            let claimed = match claims {
                Claims::None => false,
                Claims::Mesh => a != b,
                Claims::Star => a != b && b == gateway,
            };
            if claimed {
                s.observe(peer(a), peer(b), 1 << 40);
            }
        }
    }
    assert_incremental_matches_recompute(&s, 7);
    let clique = (100..110u32).map(|i| s.of(&peer(i)).raw.max(0.0)).sum();
    (clique, s.of(&peer(gateway)).raw.max(0.0))
}

/// The case `a_sybil_clique_gains_no_more_than_its_attack_edge_carries` leaves out: the
/// gateway gives to me directly and owes me too. Stage 1 is netted and conserved, so the
/// gateway passes on only half its surplus, and receipts the clique signs both ways weigh
/// nothing in the split: the clique ends where its gateway would alone.
#[test]
fn a_gateway_that_gives_to_me_and_owes_me_draws_nothing_from_a_mesh_clique() {
    for with_debts in [true, false] {
        let (_, alone) = gateway_case(Claims::None, with_debts);
        let (clique, gateway) = gateway_case(Claims::Mesh, with_debts);
        assert!(alone > 0.0, "the attack edge earned something");
        let gain = clique / alone - 1.0;
        println!("mesh clique, debts {with_debts}: {clique:.0} against {alone:.0}: {gain:+.9}");
        assert!(gain.abs() <= 1e-9, "relative gain {gain}");
        assert!((gateway - alone).abs() <= 1e-9 * alone);
    }
    // The gateway keeps half of its surplus of 30 MiB (it passes the rest to the seeders 1
    // and 2, who gave to it), whatever else reaches it later.
    let (_, alone) = gateway_case(Claims::None, true);
    assert!(alone >= (15 * MIB) as f64 * (1.0 - 1e-12));
}

/// One-way claims are not cancelled by netting: the gateway names its sybils as the ones who
/// gave to it and passes them what an honest peer would pass to its real contributors. What
/// reaches them pays their debts to me first; above that, the clique keeps what its gateway
/// passed on, `endorse / (1 − endorse)` of what the gateway alone keeps at most. This is the
/// residual gain of the rule (docs/ARCHITECTURE.md, "standing").
#[test]
fn a_one_way_clique_gains_at_most_what_its_gateway_passes_on() {
    let e = StandingParams::default().endorse;
    let (_, owing_alone) = gateway_case(Claims::None, true);
    let (owing, _) = gateway_case(Claims::Star, true);
    assert!(
        (owing - owing_alone).abs() <= 1e-9 * owing_alone,
        "sybils that owe me more than reaches them gain nothing: {owing} against {owing_alone}"
    );
    let (_, alone) = gateway_case(Claims::None, false);
    let (clique, _) = gateway_case(Claims::Star, false);
    let gain = clique / alone - 1.0;
    println!(
        "star clique without debts: {clique:.0} against {alone:.0}: {gain:+.6} (bound {:.6})",
        e / (1.0 - e)
    );
    assert!(gain > 0.0, "the residual the rule does not remove");
    assert!(gain <= e / (1.0 - e) * (1.0 + 1e-9), "relative gain {gain}");
}
