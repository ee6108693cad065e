use super::*;
use tally_ledger::{Identity, NetworkId};

const INTERVAL: Duration = Duration::from_secs(2);

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn who(seed: u32) -> Identity {
    let mut secret = [7u8; 32];
    secret[..4].copy_from_slice(&seed.to_le_bytes());
    Identity::from_secret_bytes(secret)
}

fn provider(seed: u32, content: u8, now_ms: u64, ttl_ms: u64) -> ProviderRecord {
    ProviderRecord::sign(&who(seed), &net(), ContentId([content; 32]), now_ms, ttl_ms)
}

fn provider_of_own(seed: u32, now_ms: u64) -> ProviderRecord {
    let mut content = [3u8; 32];
    content[..4].copy_from_slice(&seed.to_le_bytes());
    ProviderRecord::sign(&who(seed), &net(), ContentId(content), now_ms, 600_000)
}

#[test]
fn a_peer_gets_a_burst_of_sessions_then_one_per_refill() {
    let gossip = Arc::new(Gossip::new(INTERVAL));
    let peer = who(1).peer_id();
    let t0 = Instant::now();
    for _ in 0..SESSION_BURST {
        let slot = Arc::clone(&gossip).admit(peer, t0).unwrap();
        drop(slot);
    }
    assert_eq!(
        Arc::clone(&gossip).admit(peer, t0).err(),
        Some(Busy::TooOften)
    );
    let later = t0 + SESSION_REFILL;
    let theirs = Arc::clone(&gossip).admit(peer, later).unwrap();
    // One session at a time each way.
    assert_eq!(
        Arc::clone(&gossip)
            .admit(peer, later + SESSION_REFILL * 10)
            .err(),
        Some(Busy::AlreadyInSession)
    );
    let ours = Arc::clone(&gossip).start(peer, later).unwrap();
    drop(theirs);
    assert!(
        Arc::clone(&gossip)
            .admit(peer, later + SESSION_REFILL * 10)
            .is_ok()
    );
    drop(ours);
}

#[test]
fn this_node_spaces_the_sessions_it_starts_with_one_peer() {
    let gossip = Arc::new(Gossip::new(INTERVAL));
    let peer = who(1).peer_id();
    let t0 = Instant::now();
    drop(Arc::clone(&gossip).start(peer, t0).unwrap());
    assert!(
        Arc::clone(&gossip)
            .start(peer, t0 + SESSION_REFILL)
            .is_none()
    );
    assert!(
        Arc::clone(&gossip)
            .start(peer, t0 + SESSION_REFILL * 2)
            .is_some()
    );
}

#[test]
fn provider_records_keep_the_newest_per_provider_and_are_bounded_per_content() {
    let gossip = Gossip::new(INTERVAL);
    let (now, ms) = (Instant::now(), 1_000_000);
    assert!(gossip.add_provider(provider(1, 9, ms, 60_000), now, ms));
    assert!(!gossip.add_provider(provider(1, 9, ms - 1, 60_000), now, ms));
    assert!(gossip.add_provider(provider(1, 9, ms + 1, 60_000), now, ms));
    assert_eq!(gossip.providers_of(&ContentId([9; 32]), ms).len(), 1);
    for seed in 2..=(MAX_PROVIDERS_PER_CONTENT as u32 + 10) {
        gossip.add_provider(provider(seed, 9, ms, 60_000 + u64::from(seed)), now, ms);
    }
    let held = gossip.providers_of(&ContentId([9; 32]), ms);
    assert_eq!(held.len(), MAX_PROVIDERS_PER_CONTENT);
    assert_eq!(gossip.provider_count(), MAX_PROVIDERS_PER_CONTENT);
    // The ones that expire first were dropped.
    let soonest = held.iter().map(|r| r.expires_ms).min().unwrap();
    assert!(soonest > ms + 60_000 + 10);
    // Expired records are not offered.
    assert!(
        gossip
            .providers_of(&ContentId([9; 32]), ms + 10_000_000)
            .is_empty()
    );
}

#[test]
fn the_peer_table_is_bounded_and_keeps_the_freshest_records() {
    let gossip = Gossip::new(INTERVAL);
    let now = Instant::now();
    let addr: SocketAddr = "127.0.0.1:7420".parse().unwrap();
    for seed in 0..(MAX_KNOWN_PEERS as u32 + 5) {
        let record = PeerRecord::sign(&who(seed), &net(), &[addr], 1_000 + u64::from(seed));
        gossip.add_peer(record, now);
    }
    let known = gossip.known_peers();
    assert_eq!(known.len(), MAX_KNOWN_PEERS);
    assert!(known.iter().all(|r| r.issued_ms >= 1_005));
    // An older record of a known peer does not replace a newer one.
    let stale = PeerRecord::sign(&who(10), &net(), &[addr], 1);
    assert!(!gossip.add_peer(stale, now));
}

#[test]
fn a_new_peer_gets_old_records_once_and_then_only_hot_ones() {
    let gossip = Gossip::new(INTERVAL);
    let ms = 1_000_000;
    let long_ago = Instant::now();
    let now = long_ago + INTERVAL * RUMOUR_INTERVALS * 2;
    for seed in 0..40 {
        gossip.add_provider(provider(seed, 1, ms, 600_000), long_ago, ms);
    }
    for seed in 100..103 {
        gossip.add_provider(provider(seed, 2, ms, 600_000), now, ms);
    }
    let peer = who(999).peer_id();
    let first = gossip.records_to_send(peer, now, ms);
    assert_eq!(first.providers.len(), 43);
    let next = gossip.records_to_send(peer, now, ms);
    assert_eq!(next.providers.len(), 3);
    assert!(
        next.providers
            .iter()
            .all(|r| r.content == ContentId([2; 32]))
    );
    // Reconnected: introduced again.
    gossip.forget_disconnected(&HashSet::new());
    assert_eq!(gossip.records_to_send(peer, now, ms).providers.len(), 43);
    // Never more than a frame holds.
    for seed in 200..(200 + 2 * MAX_PROVIDER_RECORDS_PER_FRAME as u32) {
        gossip.add_provider(provider_of_own(seed, ms), now, ms);
    }
    let records = gossip.records_to_send(peer, now, ms);
    assert_eq!(records.providers.len(), MAX_PROVIDER_RECORDS_PER_FRAME);
}

#[test]
fn a_failed_dial_of_a_gossiped_peer_backs_off() {
    let gossip = Arc::new(Gossip::new(INTERVAL));
    let peer = who(3).peer_id();
    let now = Instant::now();
    let guard = Arc::clone(&gossip).begin_dial(peer, now).unwrap();
    assert!(Arc::clone(&gossip).begin_dial(peer, now).is_none());
    drop(guard);
    assert!(Arc::clone(&gossip).begin_dial(peer, now).is_none());
    assert!(
        Arc::clone(&gossip)
            .begin_dial(peer, now + DIAL_BACKOFF)
            .is_some()
    );
}

#[test]
fn an_announced_receipt_is_fetched_by_one_session_at_a_time() {
    let gossip = Arc::new(Gossip::new(INTERVAL));
    let first = gossip.claim(vec![[1; 8], [2; 8]]);
    assert_eq!(first.ids(), &[[1; 8], [2; 8]]);
    let second = gossip.claim(vec![[2; 8], [3; 8]]);
    assert_eq!(
        second.ids(),
        &[[3; 8]],
        "[2; 8] is the first session's to fetch"
    );
    drop(first);
    let third = gossip.claim(vec![[1; 8], [2; 8], [3; 8]]);
    assert_eq!(third.ids(), &[[1; 8], [2; 8]]);
}

#[test]
fn announcements_cover_the_receipts_learned_within_the_window() {
    let gossip = Gossip::new(INTERVAL);
    let t0 = Instant::now();
    assert_eq!(
        gossip.announce_since(t0, 5),
        5,
        "before the first tick: nothing"
    );
    gossip.note_mark(t0, 10);
    gossip.note_mark(t0 + INTERVAL, 20);
    assert_eq!(gossip.announce_since(t0 + INTERVAL, 25), 10);
    let window = INTERVAL * ANNOUNCE_INTERVALS;
    // Past the window, the first tick's mark no longer counts.
    gossip.note_mark(t0 + window + INTERVAL / 2, 30);
    assert_eq!(gossip.announce_since(t0 + window + INTERVAL / 2, 35), 20);
}
