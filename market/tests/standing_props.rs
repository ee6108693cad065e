//! Sybil resistance of [`Standing`] under arbitrary receipts.
//!
//! The graph: this node (`ME`), honest peers `1..HONEST`, and a clique `CLIQUE` whose members
//! sign whatever receipts they like among themselves (both ways or one way, any credits). The
//! clique's *attack edges* are the receipts it shares with the honest side: clique → honest
//! (it gave; an honest peer, or this node, signed as downloader) and honest → clique (it took,
//! which is a debt when the honest end is this node).
//!
//! *What the attack edges earned*, `U`: the clique's summed standing in the graph of the honest
//! receipts and the clique → honest receipts only, that is without any receipt in which a
//! clique member is the downloader. There the clique's members have no contributors and owe
//! nothing, so each keeps in full all the walk carries to it across the attack edges, and
//! nothing it could sign among itself changes what reaches it. The properties:
//!
//! - the clique's standing above the floor, summed over its identities, is at most `U`, for
//!   any receipts among the clique (mass is conserved and netted: the walk only divides what
//!   came in, and what reaches a member pays its debt before anything is passed on);
//! - receipts the clique signs both ways for the same credits change no one's standing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use proptest::prelude::*;
use tally_ledger::PeerId;
use tally_market::{Standing, StandingParams};

const ME: u32 = 0;
const HONEST: u32 = 8;
const CLIQUE: std::ops::Range<u32> = 100..106;

fn peer(i: u32) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes[31] = 0x5b;
    PeerId(bytes)
}

/// A receipt increment: `up` gave `down` `add` credits more.
#[derive(Clone, Debug)]
struct Op {
    up: u32,
    down: u32,
    add: u64,
}

/// Applies `ops` as cumulative receipts (each adds to its pair's credits).
fn apply(s: &mut Standing, held: &mut HashMap<(u32, u32), u64>, ops: &[Op]) {
    for op in ops {
        if op.up == op.down {
            continue;
        }
        let credits = held.entry((op.up, op.down)).or_insert(0);
        *credits += op.add;
        s.observe(peer(op.up), peer(op.down), *credits);
    }
}

fn honest_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (0..HONEST, 0..HONEST, 1u64..1_000).prop_map(|(up, down, add)| Op {
            up,
            down,
            add: add << 10,
        }),
        0..80,
    )
}

/// Receipts between the clique and the honest side, either way (this node included).
fn attack_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (CLIQUE, 0..HONEST, any::<bool>(), 1u64..1_000).prop_map(|(c, h, gave, add)| {
            let (up, down) = if gave { (c, h) } else { (h, c) };
            Op {
                up,
                down,
                add: add << 10,
            }
        }),
        1..30,
    )
}

/// Receipts among the clique, from a few KiB to 1 TiB; `both_ways` mirrors each.
fn clique_ops(both_ways: bool) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (
            CLIQUE,
            CLIQUE,
            prop_oneof![1u64..1_000_000, Just(1u64 << 30)],
        )
            .prop_map(|(up, down, add)| Op {
                up,
                down,
                add: add << 10,
            }),
        0..40,
    )
    .prop_map(move |ops| {
        if !both_ways {
            return ops;
        }
        ops.into_iter()
            .flat_map(|op| {
                let back = Op {
                    up: op.down,
                    down: op.up,
                    add: op.add,
                };
                [op, back]
            })
            .collect()
    })
}

fn clique_above_floor(s: &Standing) -> f64 {
    CLIQUE.map(|i| s.of(&peer(i)).raw.max(0.0)).sum()
}

fn build(hops: u8, parts: &[&[Op]]) -> Standing {
    let params = StandingParams {
        hops,
        ..StandingParams::default()
    };
    let mut s = Standing::new(peer(ME), params);
    let mut held = HashMap::new();
    for ops in parts {
        apply(&mut s, &mut held, ops);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_clique_draws_at_most_what_its_attack_edges_earned(
        honest in honest_ops(),
        attack in attack_ops(),
        both_ways in any::<bool>(),
        clique in clique_ops(false),
        hops in 1u8..=4,
    ) {
        let clique = if both_ways {
            clique.iter().flat_map(|op| [op.clone(), Op { up: op.down, down: op.up, add: op.add }]).collect()
        } else {
            clique
        };
        let gave: Vec<Op> = attack.iter().filter(|op| op.up >= CLIQUE.start).cloned().collect();
        let earned = clique_above_floor(&build(hops, &[&honest, &gave]));
        // Receipts interleaved with the honest ones and in the other order: the same bound.
        let drawn = clique_above_floor(&build(hops, &[&honest, &attack, &clique]));
        let drawn_first = clique_above_floor(&build(hops, &[&clique, &attack, &honest]));
        for drawn in [drawn, drawn_first] {
            prop_assert!(
                drawn <= earned * (1.0 + 1e-9) + 1e-6,
                "the clique drew {drawn}, its attack edges earned {earned}"
            );
        }
    }

    #[test]
    fn receipts_a_clique_signs_both_ways_change_no_standing(
        honest in honest_ops(),
        attack in attack_ops(),
        clique in clique_ops(true),
    ) {
        let without = build(3, &[&honest, &attack]);
        let with = build(3, &[&honest, &attack, &clique]);
        for i in (0..HONEST).chain(CLIQUE) {
            let (a, b) = (without.of(&peer(i)), with.of(&peer(i)));
            let tolerance = 1e-9 * (1.0 + a.raw.abs().max(b.raw.abs()));
            prop_assert!((a.raw - b.raw).abs() <= tolerance, "peer {}: {:?} against {:?}", i, a, b);
        }
    }
}
