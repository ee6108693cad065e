//! Unit tests of the scheduler: caps, removal, positions, classes, budget enforcement.

use super::*;

const KIB: u64 = 1 << 10;
const CHUNK: u64 = 256 * KIB;
/// 2026-03-10T12:00Z.
const NOW: u64 = 1_773_144_000_000;

fn peer(i: u8) -> PeerId {
    PeerId([i; 32])
}

fn sched() -> Scheduler<u32> {
    Scheduler::new(SchedulerConfig::default())
}

/// Serves `n` requests, returning the peers served in order.
fn serve(s: &mut Scheduler<u32>, n: usize) -> Vec<PeerId> {
    (0..n).map(|_| s.next(NOW).unwrap().unwrap().peer).collect()
}

#[test]
fn queue_caps_refuse_with_typed_errors_and_hand_the_request_back() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_requests_per_peer: 2,
        max_requests_total: 3,
        max_request_bytes: CHUNK,
        ..SchedulerConfig::default()
    });
    s.enqueue(peer(1), 1, CHUNK).unwrap();
    s.enqueue(peer(1), 2, CHUNK).unwrap();
    let refused = s.enqueue(peer(1), 3, CHUNK).unwrap_err();
    assert_eq!(refused.request, 3);
    assert_eq!(refused.reason, EnqueueError::PeerQueueFull { cap: 2 });
    s.enqueue(peer(2), 4, CHUNK).unwrap();
    let refused = s.enqueue(peer(3), 5, CHUNK).unwrap_err();
    assert_eq!(refused.reason, EnqueueError::QueueFull { cap: 3 });
    assert_eq!(
        s.enqueue(peer(3), 6, 0).unwrap_err().reason,
        EnqueueError::EmptyRequest
    );
    assert_eq!(
        s.enqueue(peer(3), 7, CHUNK + 1).unwrap_err().reason,
        EnqueueError::RequestTooLarge {
            bytes: CHUNK + 1,
            max: CHUNK
        }
    );
    assert_eq!(
        s.queue_depth(),
        QueueDepth {
            peers: 2,
            requests: 3,
            bytes: 3 * CHUNK
        }
    );
    // Serving one frees a place.
    s.next(NOW).unwrap().unwrap();
    s.enqueue(peer(3), 8, CHUNK).unwrap();
}

#[test]
fn remove_peer_returns_its_requests_oldest_first_and_forgets_it() {
    let mut s = sched();
    s.set_standing(peer(1), 0.5);
    for r in 10..15 {
        s.enqueue(peer(1), r, CHUNK).unwrap();
    }
    s.enqueue(peer(2), 99, CHUNK).unwrap();
    assert_eq!(s.remove_peer(&peer(1)), vec![10, 11, 12, 13, 14]);
    assert_eq!(s.remove_peer(&peer(1)), Vec::<u32>::new());
    assert_eq!(s.standing(&peer(1)), 0.0);
    assert_eq!(s.position(&peer(1)), None);
    assert_eq!(
        s.queue_depth(),
        QueueDepth {
            peers: 1,
            requests: 1,
            bytes: CHUNK
        }
    );
    let served = s.next(NOW).unwrap().unwrap();
    assert_eq!((served.peer, served.request), (peer(2), 99));
    assert_eq!(s.next(NOW).unwrap(), None);
}

#[test]
fn positions_rank_the_peer_owed_most_first() {
    let mut s = sched();
    // Equal tags at entry: higher weight first.
    for (i, standing) in [(1, 0.1), (2, 0.9), (3, 0.5)] {
        s.set_standing(peer(i), standing);
        s.enqueue(peer(i), u32::from(i), CHUNK).unwrap();
        s.enqueue(peer(i), u32::from(i), CHUNK).unwrap();
    }
    s.enqueue(peer(4), 4, CHUNK).unwrap(); // a newcomer at the floor
    let p2 = s.position(&peer(2)).unwrap();
    let p3 = s.position(&peer(3)).unwrap();
    let p1 = s.position(&peer(1)).unwrap();
    assert_eq!((p2.rank, p3.rank, p1.rank), (1, 2, 3));
    assert_eq!(p2.class, PeerClass::Standing);
    assert_eq!(p2.class_waiting, 3);
    assert_eq!(p2.requests, 2);
    assert_eq!(p2.bytes, 2 * CHUNK);
    assert!((p2.weight - 9.1).abs() < 1e-4);
    assert!((p1.weight - 1.9).abs() < 1e-4);
    assert!(p2.share > p3.share && p3.share > p1.share);
    let p4 = s.position(&peer(4)).unwrap();
    assert_eq!((p4.class, p4.rank, p4.weight), (PeerClass::Floor, 1, 1.0));
    // Capped: the newcomer weighs 1 against 9.1 + 5.5 + 1.9.
    let total_weight = 9.1 + 5.5 + 1.9 + 1.0;
    assert!((p4.share - 1.0 / total_weight).abs() < 1e-4);
    assert!((p2.share - 9.1 / total_weight).abs() < 1e-4);
    let shares = s.shares();
    let order: Vec<_> = shares.iter().map(|p| p.peer).collect();
    assert_eq!(order, vec![peer(2), peer(3), peer(1), peer(4)]);
    let sum: f64 = shares.iter().map(|p| p.position.share).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    // After peer 2 is served it falls behind the others.
    assert_eq!(serve(&mut s, 1), vec![peer(2)]);
    assert!(s.position(&peer(2)).unwrap().rank > 1);
}

#[test]
fn only_floor_peers_share_everything_round_robin() {
    let mut s = sched();
    for i in 1..=3 {
        for r in 0..4 {
            s.enqueue(peer(i), r, CHUNK).unwrap();
        }
    }
    assert_eq!(s.floor_share(), 1.0);
    let served = serve(&mut s, 12);
    for round in served.chunks(3) {
        let mut round = round.to_vec();
        round.sort();
        assert_eq!(round, vec![peer(1), peer(2), peer(3)]);
    }
    assert_eq!(s.next(NOW).unwrap(), None);
}

#[test]
fn reserved_slice_goes_to_a_lone_newcomer() {
    let mut s = Scheduler::new(SchedulerConfig {
        floor_policy: FloorPolicy::Reserved,
        ..SchedulerConfig::default()
    });
    let mut capped = sched();
    for sch in [&mut s, &mut capped] {
        for i in 1..=4 {
            sch.set_standing(peer(i), 0.8);
        }
        for i in 0..=4 {
            sch.enqueue(peer(i), 0, CHUNK).unwrap();
        }
    }
    // Serves 500 requests, every peer kept backlogged; counts the newcomer's.
    let newcomer = |sch: &mut Scheduler<u32>| {
        let mut count = 0;
        for _ in 0..500 {
            let d = sch.next(NOW).unwrap().unwrap();
            count += usize::from(d.peer == peer(0));
            sch.enqueue(d.peer, 0, CHUNK).unwrap();
        }
        count
    };
    assert!(newcomer(&mut s).abs_diff(100) <= 1); // 20% of 500
    // Capped: weight 1 against 4 × 8.2.
    let expected = 500.0 / (1.0 + 4.0 * 8.2);
    assert!((newcomer(&mut capped) as f64 - expected).abs() <= 1.0);
}

#[test]
fn zero_slice_serves_floor_peers_only_when_nobody_else_waits() {
    let mut s = Scheduler::new(SchedulerConfig {
        floor_slice: 0.0,
        ..SchedulerConfig::default()
    });
    s.set_standing(peer(1), 0.1);
    for r in 0..3 {
        s.enqueue(peer(1), r, CHUNK).unwrap();
        s.enqueue(peer(2), r, CHUNK).unwrap();
    }
    assert_eq!(
        serve(&mut s, 6),
        vec![peer(1), peer(1), peer(1), peer(2), peer(2), peer(2)]
    );
}

#[test]
fn crossing_the_floor_moves_a_waiting_peer_between_classes() {
    let mut s = sched();
    s.enqueue(peer(1), 1, CHUNK).unwrap();
    s.enqueue(peer(1), 2, CHUNK).unwrap();
    assert_eq!(s.position(&peer(1)).unwrap().class, PeerClass::Floor);
    s.set_standing(peer(1), 0.4);
    let p = s.position(&peer(1)).unwrap();
    assert_eq!(
        (p.class, p.requests, p.standing),
        (PeerClass::Standing, 2, 0.4)
    );
    assert_eq!(s.queue_depth().peers, 1);
    s.set_standing(peer(1), -1.0);
    assert_eq!(s.position(&peer(1)).unwrap().class, PeerClass::Floor);
    assert_eq!(serve(&mut s, 2), vec![peer(1), peer(1)]);
    assert_eq!(s.next(NOW).unwrap(), None);
}

#[test]
fn bogus_standings_and_settings_are_clamped() {
    let mut s: Scheduler<u32> = Scheduler::new(SchedulerConfig {
        floor_slice: f64::NAN,
        standing_gain: f64::INFINITY,
        ..SchedulerConfig::default()
    });
    assert_eq!(s.config().floor_slice, 0.2);
    assert_eq!(s.config().standing_gain, MAX_GAIN);
    for (standing, expect) in [
        (f64::NAN, 0.0),
        (-0.5, 0.0),
        (f64::NEG_INFINITY, 0.0),
        (3.0, 1.0),
        (f64::INFINITY, 1.0),
    ] {
        s.set_standing(peer(1), standing);
        assert_eq!(s.standing(&peer(1)), expect);
    }
    let config = SchedulerConfig::default();
    assert_eq!(config.weight(0.0), 1.0);
    assert_eq!(config.weight(f64::NAN), 1.0);
    assert!((config.weight(0.5) - 5.5).abs() < 1e-4);
    assert!((config.weight(9.0) - 10.0).abs() < 1e-4);
}

#[test]
fn exhausted_budget_holds_the_head_request_until_the_reset() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_request_bytes: CHUNK,
        ..SchedulerConfig::default()
    });
    assert_eq!(
        s.set_budget(Some(UploadBudget::new(Some(CHUNK - 1), None))),
        Err(BudgetTooSmall {
            limit: CHUNK - 1,
            max_request_bytes: CHUNK
        })
    );
    s.set_budget(Some(UploadBudget::new(Some(2 * CHUNK + CHUNK / 2), None)))
        .unwrap();
    for r in 0..4 {
        s.enqueue(peer(1), r, CHUNK).unwrap();
    }
    assert_eq!(s.next(NOW).unwrap().unwrap().request, 0);
    assert_eq!(s.next(NOW).unwrap().unwrap().request, 1);
    let err = s.next(NOW).unwrap_err();
    // 2026-03-11T00:00Z.
    assert_eq!(err.resets_at_ms, 1_773_187_200_000);
    assert_eq!(err.remaining, CHUNK / 2);
    // Held, not lost.
    assert_eq!(s.queue_depth().requests, 2);
    assert_eq!(s.position(&peer(1)).unwrap().rank, 1);
    // A refund of a cut transfer makes room again.
    s.refund(NOW, CHUNK / 2);
    assert_eq!(s.next(NOW).unwrap().unwrap().request, 2);
    assert!(s.next(NOW).is_err());
    assert_eq!(s.next(err.resets_at_ms).unwrap().unwrap().request, 3);
    let status = s.budget().unwrap().status(err.resets_at_ms);
    assert_eq!(status.day.used, CHUNK);
    s.set_budget(None).unwrap();
    assert_eq!(s.next(NOW).unwrap(), None);
}

#[test]
fn a_peer_that_drains_and_refills_gains_no_credit() {
    // Peer 1 keeps one request outstanding at a time; peer 2 is always backlogged with the
    // same weight. Each should get half.
    let mut s = sched();
    s.set_standing(peer(1), 0.5);
    s.set_standing(peer(2), 0.5);
    s.enqueue(peer(1), 0, CHUNK).unwrap();
    for r in 0..4 {
        s.enqueue(peer(2), r, CHUNK).unwrap();
    }
    let mut count = [0usize; 2];
    for _ in 0..1_000 {
        let d = s.next(NOW).unwrap().unwrap();
        if d.peer == peer(1) {
            count[0] += 1;
            s.enqueue(peer(1), 0, CHUNK).unwrap();
        } else {
            count[1] += 1;
            s.enqueue(peer(2), 0, CHUNK).unwrap();
        }
    }
    assert!(count[0].abs_diff(count[1]) <= 2, "{count:?}");
}

#[test]
fn an_idle_peer_does_not_bank_service() {
    let mut s = sched();
    s.set_standing(peer(1), 0.5);
    s.set_standing(peer(2), 0.5);
    for r in 0..60 {
        s.enqueue(peer(1), r, CHUNK).unwrap();
    }
    serve(&mut s, 40);
    // Peer 2 arrives late: it alternates with peer 1 instead of catching up 40 requests.
    for r in 0..10 {
        s.enqueue(peer(2), r, CHUNK).unwrap();
    }
    let served = serve(&mut s, 10);
    let late = served.iter().filter(|p| **p == peer(2)).count();
    assert!((4..=6).contains(&late), "{served:?}");
}

#[test]
fn next_on_the_hot_path_does_not_grow_the_order_arena() {
    let mut s = sched();
    for i in 0..50u8 {
        s.set_standing(peer(i), f64::from(i) / 50.0);
        s.enqueue(peer(i), 0, CHUNK).unwrap();
        s.enqueue(peer(i), 0, CHUNK).unwrap();
    }
    let arena = |s: &Scheduler<u32>| s.floor.order.arena_len() + s.standing.order.arena_len();
    assert_eq!(arena(&s), 50);
    for _ in 0..10_000 {
        let d = s.next(NOW).unwrap().unwrap();
        s.enqueue(d.peer, 0, CHUNK).unwrap();
    }
    assert_eq!(arena(&s), 50);
}
