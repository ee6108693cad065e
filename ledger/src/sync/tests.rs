use std::collections::{BTreeMap, HashSet};

use super::*;

/// SplitMix64: seeded, so every failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn key(&mut self) -> Key {
        let mut key = [0u8; KEY_BYTES];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        key
    }
}

/// A 32-byte stand-in for peer `i`'s public key.
fn peer(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// The key of the pair (`up`, `down`) among stand-in peers: keys of one uploader share 32 bytes,
/// as in a real ledger.
fn pair(up: u64, down: u64) -> Key {
    let mut key = [0u8; KEY_BYTES];
    key[..32].copy_from_slice(&peer(up));
    key[32..].copy_from_slice(&peer(down));
    key
}

/// `n` distinct pairs among `peers` peers, seq 1..=5.
fn ledger(n: usize, peers: u64, seed: u64) -> BTreeMap<Key, u64> {
    let mut rng = Rng(seed);
    let mut out = BTreeMap::new();
    while out.len() < n {
        let up = rng.below(peers);
        let down = rng.below(peers);
        if up != down {
            out.insert(pair(up, down), 1 + rng.below(5));
        }
    }
    out
}

fn index(map: &BTreeMap<Key, u64>) -> SyncItems {
    map.iter().map(|(k, s)| (*k, *s)).collect()
}

fn snapshot(items: &SyncItems) -> BTreeMap<Key, u64> {
    items.iter().map(|(k, s)| (*k, s)).collect()
}

fn union(a: &BTreeMap<Key, u64>, b: &BTreeMap<Key, u64>) -> BTreeMap<Key, u64> {
    let mut out = a.clone();
    for (key, seq) in b {
        let held = out.entry(*key).or_insert(*seq);
        *held = (*held).max(*seq);
    }
    out
}

/// Keys `from` must push to `to`: it holds them newer, or `to` lacks them.
fn needed(from: &BTreeMap<Key, u64>, to: &BTreeMap<Key, u64>) -> Vec<Key> {
    from.iter()
        .filter(|(key, seq)| to.get(*key).is_none_or(|held| held < seq))
        .map(|(key, _)| *key)
        .collect()
}

/// What one complete exchange did.
#[derive(Debug, Default)]
struct Run {
    /// Messages sent, the first included.
    messages: usize,
    /// Encoded bytes of all messages.
    bytes: usize,
    /// Largest message.
    largest: usize,
    /// What each side (0 = initiator) pushed, and wanted.
    send: [Vec<Key>; 2],
    want: [Vec<Key>; 2],
}

/// How the initiator makes its first message: [`initiate_with`] or [`initiate_whole_with`].
type Opening = fn(&SyncItems, &SyncParams) -> Message;

/// Runs an exchange between `a` (initiator, opening with `opening`) and `b` over encoded
/// messages, without changing the sets, and returns what each side was told to push.
fn run_from(opening: Opening, a: &SyncItems, b: &SyncItems, params: &SyncParams) -> Run {
    let sides = [a, b];
    let mut out = Run::default();
    let mut message = opening(a, params);
    let mut turn = 1;
    loop {
        let bytes = message.encode();
        assert_eq!(bytes.len(), message.encoded_len());
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        out.messages += 1;
        out.bytes += bytes.len();
        out.largest = out.largest.max(bytes.len());
        let decoded = Message::decode(&bytes).unwrap();
        assert_eq!(decoded, message);
        let reply = respond_with(sides[turn], &decoded, params).unwrap();
        out.send[turn].extend(reply.send);
        out.want[turn].extend(reply.want);
        match reply.message {
            None => return out,
            Some(next) => message = next,
        }
        turn = 1 - turn;
        assert!(out.messages < 1000, "the exchange does not end");
    }
}

/// Runs an exchange and applies the pushes; checks that both end with the union and that each
/// side pushed exactly what the other needed.
fn reconcile(a: &BTreeMap<Key, u64>, b: &BTreeMap<Key, u64>, params: &SyncParams) -> Run {
    reconcile_from(initiate_with, a, b, params)
}

/// As [`reconcile`], the initiator opening with `opening`.
fn reconcile_from(
    opening: Opening,
    a: &BTreeMap<Key, u64>,
    b: &BTreeMap<Key, u64>,
    params: &SyncParams,
) -> Run {
    let (mut ia, mut ib) = (index(a), index(b));
    let run = run_from(opening, &ia, &ib, params);
    let mut sorted = run.send.clone();
    for list in &mut sorted {
        list.sort();
        list.dedup();
    }
    assert_eq!(sorted[0], needed(a, b), "the initiator's pushes");
    assert_eq!(sorted[1], needed(b, a), "the responder's pushes");
    assert_eq!(sorted[0].len(), run.send[0].len(), "a key pushed twice");
    assert_eq!(sorted[1].len(), run.send[1].len(), "a key pushed twice");
    for (side, other) in [(0, 1), (1, 0)] {
        for key in &run.want[side] {
            assert!(
                sorted[other].binary_search(key).is_ok(),
                "a want nobody pushes"
            );
        }
    }
    for key in &run.send[0] {
        ib.insert(*key, a[key]);
    }
    for key in &run.send[1] {
        ia.insert(*key, b[key]);
    }
    let expected = union(a, b);
    assert_eq!(snapshot(&ia), expected);
    assert_eq!(snapshot(&ib), expected);
    assert_eq!(
        ia.fingerprint(&Bound::START, &Bound::END),
        ib.fingerprint(&Bound::START, &Bound::END)
    );
    run
}

/// The bound on messages: the levels of cuts until a range holds at most the threshold, each
/// possibly taken twice when the two sides' items are spread unevenly, plus the first message,
/// items, want and the last.
fn message_bound(n: usize, params: &SyncParams) -> usize {
    2 * levels(n, params) + 4
}

/// Levels of cuts until a part holds at most the threshold: a part holds its share plus at most
/// twice the window each of its two cuts may move (`split`'s window), and always fewer than the
/// range.
fn levels(n: usize, params: &SyncParams) -> usize {
    let mut levels = 0;
    let mut size = n.max(1);
    while size > params.items_threshold() {
        let parts = params.branching().min(size);
        let window = (size / (8 * parts)).max(((size + parts) / (2 * parts)).min(MIN_CUT_WINDOW));
        size = (size.div_ceil(parts) + 2 * window).min(size - 1);
        levels += 1;
    }
    levels
}

// --- bounds and the index --------------------------------------------------------------------

#[test]
fn bounds_order_prefixes_below_longer_keys_and_end_above_all() {
    let a = Bound::prefix(&[1]).unwrap();
    let ab = Bound::prefix(&[1, 0]).unwrap();
    let b = Bound::prefix(&[2]).unwrap();
    assert!(Bound::START < a && a < ab && ab < b && b < Bound::END);
    assert!(Bound::prefix(&[0u8; 65]).is_none());
    let mut key = [0u8; KEY_BYTES];
    key[0] = 1;
    assert!(
        !a.is_above(&key),
        "a key that starts with the prefix is not below it"
    );
    assert!(
        !ab.is_above(&key),
        "key 01 00 .. is not below the prefix 01 00"
    );
    assert!(b.is_above(&key) && Bound::END.is_above(&key) && !Bound::START.is_above(&key));
    assert_eq!(format!("{a:?}"), "Prefix(01)");
    assert_eq!(format!("{:?}", Bound::END), "End");
}

#[test]
fn the_successor_of_a_prefix_is_above_every_key_that_starts_with_it() {
    assert_eq!(successor(&[1, 2]), Bound::prefix(&[1, 3]).unwrap());
    assert_eq!(successor(&[1, 0xff, 0xff]), Bound::prefix(&[2]).unwrap());
    assert_eq!(successor(&[0xff, 0xff]), Bound::END);
    assert_eq!(successor(&[]), Bound::END);
    let mut key = [0xffu8; KEY_BYTES];
    key[0] = 1;
    assert!(successor(&[1]).is_above(&key));
}

#[test]
fn item_hash_is_pinned() {
    // The vector of docs/PROTOCOL.md: key 0x00 ×32 ‖ 0x01 ×32, seq 7.
    let mut key = [0u8; KEY_BYTES];
    key[32..].fill(1);
    let hash = Fingerprint::of_item(&key, 7);
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tally/sync/v1/item");
    hasher.update(&key);
    hasher.update(&7u64.to_le_bytes());
    assert_eq!(hash.to_bytes(), hasher.finalize().as_bytes()[..16]);
    assert_eq!(
        hex::encode(hash.to_bytes()),
        "c823f009ea2c0fcee3ca51c27585a5cd",
        "the item hash changed: every deployed node would disagree"
    );
    // Additive: a set's fingerprint does not depend on order.
    let other = Fingerprint::of_item(&[9; KEY_BYTES], 1);
    assert_eq!(hash + other, other + hash);
    assert_eq!(hash + other - other, hash);
}

#[test]
fn pair_keys_round_trip() {
    let both = Pair {
        uploader: PeerId(peer(1)),
        downloader: PeerId(peer(2)),
    };
    let key = pair_key(&both);
    assert_eq!(key, pair(1, 2));
    assert_eq!(key_pair(&key), both);
}

/// Checks every query of `items` against `model`, with bounds drawn from `rng`.
fn check_index(items: &SyncItems, model: &BTreeMap<Key, u64>, rng: &mut Rng) {
    assert_eq!(items.len(), model.len());
    assert_eq!(snapshot(items), *model);
    let total = model.iter().fold(Fingerprint::EMPTY, |f, (k, s)| {
        f + Fingerprint::of_item(k, *s)
    });
    assert_eq!(
        items.fingerprint(&Bound::START, &Bound::END),
        (model.len() as u64, total)
    );
    let ids: HashSet<ShortId> = model.iter().map(|(k, s)| short_id(k, *s)).collect();
    assert_eq!(items.ids, ids, "the short ids are those of the items held");
    for chunk in &items.chunks {
        assert!(!chunk.entries.is_empty() && chunk.entries.len() <= CHUNK_MAX);
        assert_eq!(chunk.prefix.len(), chunk.entries.len() + 1);
        assert_eq!(chunk.prefix[0], 0);
        for (i, entry) in chunk.entries.iter().enumerate() {
            assert_eq!(chunk.sum_between(i, i + 1), entry.hash());
        }
        assert_eq!(chunk.last, chunk.entries.last().unwrap().key);
    }
    for _ in 0..20 {
        let mut bounds = [Bound::START, Bound::END];
        for bound in &mut bounds {
            *bound = match rng.below(4) {
                0 => Bound::START,
                1 => Bound::END,
                _ => {
                    let key = rng.key();
                    Bound::prefix(&key[..1 + rng.below(3) as usize]).unwrap()
                }
            };
        }
        bounds.sort();
        let [lower, upper] = bounds;
        let in_range: Vec<_> = model
            .iter()
            .filter(|(k, _)| !lower.is_above(k) && upper.is_above(k))
            .collect();
        let sum = in_range.iter().fold(Fingerprint::EMPTY, |f, (k, s)| {
            f + Fingerprint::of_item(k, **s)
        });
        assert_eq!(
            items.fingerprint(&lower, &upper),
            (in_range.len() as u64, sum)
        );
        let listed: Vec<_> = items
            .entries(items.seek(&lower), items.seek(&upper))
            .map(|e| (&e.key, &e.seq))
            .collect();
        assert_eq!(listed, in_range);
    }
}

#[test]
fn the_index_answers_like_a_sorted_map_through_splits_and_merges() {
    let mut rng = Rng(7);
    let mut items = SyncItems::new();
    let mut model = BTreeMap::new();
    // Few distinct first bytes, so prefixes collide and chunks split and merge often.
    let key = |rng: &mut Rng| {
        let mut key = rng.key();
        key[0] %= 4;
        key[1] %= 4;
        key
    };
    let mut keys = Vec::new();
    for round in 0..6 {
        for _ in 0..1500 {
            let k = if keys.is_empty() || rng.below(3) == 0 {
                let k = key(&mut rng);
                keys.push(k);
                k
            } else {
                keys[rng.below(keys.len() as u64) as usize]
            };
            let seq = 1 + rng.below(10);
            let changed = items.insert(k, seq);
            let held = model.get(&k).copied();
            assert_eq!(changed, held.is_none_or(|h| h < seq));
            if changed {
                model.insert(k, seq);
            }
            assert_eq!(items.get(&k), model.get(&k).copied());
        }
        check_index(&items, &model, &mut rng);
        // Remove most of them on even rounds, so chunks empty and merge.
        let removals = if round % 2 == 0 { 1300 } else { 200 };
        for _ in 0..removals {
            let k = keys[rng.below(keys.len() as u64) as usize];
            assert_eq!(items.remove(&k), model.remove(&k));
        }
        check_index(&items, &model, &mut rng);
    }
    // Building from a list agrees with inserting one by one, repeated keys keeping the highest.
    let mut listed: Vec<(Key, u64)> = model.iter().map(|(k, s)| (*k, *s)).collect();
    listed.extend(model.iter().map(|(k, s)| (*k, s - 1)));
    let built: SyncItems = listed.into_iter().collect();
    check_index(&built, &model, &mut rng);
}

#[test]
fn the_journal_lists_what_changed_since_a_mark_newest_first_and_only_current_seqs() {
    let mut items = index(&ledger(100, 30, 3));
    assert!(
        items.changed_since(0, 100).is_empty(),
        "building is no change"
    );
    let before = items.mark();
    let (a, b, c) = (pair(100, 101), pair(100, 102), pair(100, 103));
    assert!(items.insert(a, 1));
    let middle = items.mark();
    assert!(items.insert(b, 4));
    assert!(items.insert(a, 2));
    assert!(!items.insert(b, 3), "an older seq is no change");
    assert!(items.insert(c, 1));
    assert_eq!(items.remove(&c), Some(1));
    let listed = items.changed_since(before, 100);
    assert_eq!(
        listed,
        vec![(short_id(&a, 2), a), (short_id(&b, 4), b)],
        "newest first; a's older seq and the removed c are not announced"
    );
    assert_eq!(items.changed_since(middle, 1), vec![(short_id(&a, 2), a)]);
    assert!(items.changed_since(items.mark(), 100).is_empty());
    assert!(items.holds(short_id(&a, 2)) && items.holds(short_id(&b, 4)));
    assert!(!items.holds(short_id(&a, 1)) && !items.holds(short_id(&c, 1)));

    // The journal keeps the latest JOURNAL_CAPACITY changes.
    let start = items.mark();
    for i in 0..JOURNAL_CAPACITY as u64 + 10 {
        items.insert(pair(200, 300 + i), 1);
    }
    let listed = items.changed_since(start, usize::MAX);
    assert_eq!(listed.len(), JOURNAL_CAPACITY);
    assert!(
        !items.journal_covers(start),
        "the first 10 changes were dropped"
    );
    assert!(items.journal_covers(start + 10));
    assert!(items.journal_covers(items.mark()));
    assert_eq!(listed[0].1, pair(200, 300 + JOURNAL_CAPACITY as u64 + 9));
}

#[test]
fn announced_ids_resolve_to_what_the_other_side_lacks() {
    let mine = index(&ledger(200, 40, 5));
    let mut theirs = mine.clone();
    let start = theirs.mark();
    let new: Vec<Key> = (0..5).map(|i| pair(500, 600 + i)).collect();
    for key in &new {
        theirs.insert(*key, 1);
    }
    // They announce their five new items and one we hold too.
    let mut announced = theirs.changed_since(start, 100);
    let (held_key, held_seq) = mine.iter().map(|(k, s)| (*k, s)).next().unwrap();
    announced.push((short_id(&held_key, held_seq), held_key));
    let ids: Vec<ShortId> = announced.iter().map(|(id, _)| *id).collect();
    let asked = wanted(&mine, &ids, 100);
    assert_eq!(asked.len(), 5);
    assert_eq!(wanted(&mine, &ids, 2).len(), 2, "at most max");
    let mut keys = resolve(&announced, &asked);
    keys.sort();
    let mut expected = new.clone();
    expected.sort();
    assert_eq!(keys, expected);
    assert!(
        resolve(&announced, &[[1; 8]]).is_empty(),
        "unknown ids are skipped"
    );
}

#[test]
fn splits_cover_the_range_with_increasing_short_bounds() {
    let model = ledger(10_000, 300, 3);
    let items = index(&model);
    let parts = items.split(
        items.start_pos(),
        items.end_pos(),
        items.len(),
        Bound::END,
        16,
    );
    assert_eq!(parts.len(), 16);
    let mut lower = Bound::START;
    let mut total = 0;
    for (upper, count, sum) in &parts {
        assert!(*upper > lower);
        let (c, f) = items.fingerprint(&lower, upper);
        assert_eq!((c as usize, f.0), (*count, *sum));
        // About equal: within an eighth of a part either way.
        assert!(
            count.abs_diff(10_000 / 16) <= 10_000 / 16 / 8 + 1,
            "{count}"
        );
        total += count;
        lower = *upper;
    }
    assert_eq!(total, 10_000);
    // ~33 keys per uploader: a cut between two uploaders needs a prefix of a few bytes, not 33.
    for (upper, _, _) in &parts[..15] {
        assert!(upper.as_prefix().unwrap().len() <= 4, "{upper:?}");
    }
}

#[test]
fn small_ranges_are_cut_between_uploaders_not_inside_them() {
    // 1,000 pairs among 200 peers, about 5 per uploader; each sixteenth of them (~62) cut in 16
    // parts of ~4. With an eighth of a part as the only window (0 here) 206 of the 256 bounds
    // fell inside an uploader (33-byte prefixes: the uploader and one byte); moving each cut up
    // to 2 ranks reaches a change of uploader unless the uploader has many pairs: 74.
    let items = index(&ledger(1_000, 200, 3));
    let ranges = items.split(
        items.start_pos(),
        items.end_pos(),
        items.len(),
        Bound::END,
        16,
    );
    let mut long = 0;
    let mut parts = 0;
    let mut lower = Bound::START;
    for (upper, count, _) in &ranges {
        let from = items.seek(&lower);
        let to = items.seek(upper);
        for (upper, count, sum) in items.split(from, to, *count, *upper, 16) {
            assert!(upper > lower);
            let (c, f) = items.fingerprint(&lower, &upper);
            assert_eq!((c as usize, f.0), (count, sum));
            // Each part holds its share (~4) and at most twice the window more.
            assert!((1..=4 + 1 + 2 * MIN_CUT_WINDOW).contains(&count), "{count}");
            if upper.as_prefix().is_some_and(|p| p.len() > 32) {
                long += 1;
            }
            parts += 1;
            lower = upper;
        }
        assert_eq!(lower, *upper);
    }
    assert!(parts >= 15 * 16, "{parts} parts");
    assert!(
        long * 3 < parts,
        "{long} of {parts} bounds are inside an uploader"
    );
}

#[test]
fn both_ways_of_finding_a_cut_agree() {
    let mut rng = Rng(17);
    for (n, peers) in [(5_000, 200), (5_000, 4_000), (3_000, 80)] {
        let items = index(&ledger(n, peers, n as u64 + peers));
        for _ in 0..200 {
            let lowest = 1 + rng.below(n as u64 - 300) as usize;
            let highest = lowest + rng.below(250) as usize;
            let target = lowest + rng.below((highest - lowest + 1) as u64) as usize;
            let start = items.start_pos();
            assert_eq!(
                items.cut_by_scan(start, 0, lowest, highest, target),
                items.cut_by_runs(start, 0, lowest, highest, target),
                "window {lowest}..={highest}, target {target}"
            );
        }
    }
}

// --- reconciliation --------------------------------------------------------------------------

#[test]
fn nothing_changed_at_100_000_pairs_costs_one_round_trip_under_2_kib() {
    let model = ledger(100_000, 2_000, 1);
    let a = index(&model);
    let b = a.clone();
    let first = initiate(&a);
    let reply = respond(&b, &first).unwrap();
    assert_eq!(
        reply,
        Reply::default(),
        "in sync: nothing to say, nothing to push"
    );
    let bytes = first.encoded_len();
    assert!(bytes <= 2048, "{bytes} bytes");
    // Independent of the size: 1,000 pairs cost about the same.
    let small = index(&ledger(1_000, 100, 1));
    let small_bytes = initiate(&small).encoded_len();
    assert!(bytes <= small_bytes + 200, "{bytes} vs {small_bytes}");
}

#[test]
fn the_whole_set_opening_costs_one_fingerprint_when_nothing_changed() {
    let model = ledger(100_000, 2_000, 1);
    let a = index(&model);
    let first = initiate_whole(&a);
    assert_eq!(
        first.ranges,
        vec![Range::Fingerprint {
            upper: Bound::END,
            count: 100_000,
            fingerprint: a.fingerprint(&Bound::START, &Bound::END).1,
        }]
    );
    assert_eq!(respond(&a.clone(), &first).unwrap(), Reply::default());
    // Version, count, tag, End, a 3-byte count and 16 bytes: under 30 at any size.
    assert!(first.encoded_len() < 30, "{}", first.encoded_len());
    // A set of at most the threshold is listed, as by `initiate`.
    let few = index(&ledger(SyncParams::default().items_threshold(), 10, 2));
    assert_eq!(initiate_whole(&few), initiate(&few));
    assert_eq!(
        initiate_whole(&SyncItems::new()),
        initiate(&SyncItems::new())
    );
}

#[test]
fn the_whole_set_opening_is_answered_like_the_split_one_a_message_later() {
    // The responder cuts the one range as `initiate` would cut its own set; the rest follows.
    let params = SyncParams::default();
    let a = ledger(20_000, 1_000, 5);
    let mut b = a.clone();
    let keys: Vec<Key> = a.keys().copied().collect();
    *b.get_mut(&keys[7_777]).unwrap() += 1;
    let (ia, ib) = (index(&a), index(&b));
    let reply = respond(&ib, &initiate_whole(&ia)).unwrap();
    assert_eq!(reply.message, Some(initiate(&ib)));
    assert!(reply.send.is_empty() && reply.want.is_empty());
    let split = reconcile(&a, &b, &params);
    let whole = reconcile_from(initiate_whole_with, &a, &b, &params);
    assert_eq!(whole.send[1], vec![keys[7_777]]);
    // One message more for the whole set's fingerprint; and whoever lists the items at the
    // bottom now is the other side, which costs a `Want` more or less: at most two more.
    assert!(whole.messages <= split.messages + 2);
    assert!(whole.messages <= message_bound(20_000, &params) + 1);
}

#[test]
fn edge_cases_reconcile() {
    let params = SyncParams::default();
    let empty = BTreeMap::new();
    let one = ledger(1, 10, 1);
    let some = ledger(2_000, 200, 2);
    let other = ledger(2_000, 200, 3);
    // Same keys, other seqs.
    let mut bumped = some.clone();
    for (i, seq) in bumped.values_mut().enumerate() {
        if i % 3 == 0 {
            *seq += 1;
        } else if i % 3 == 1 && *seq > 1 {
            *seq -= 1;
        }
    }
    let subset: BTreeMap<Key, u64> = some.iter().step_by(3).map(|(k, s)| (*k, *s)).collect();
    type Case<'a> = (&'a str, &'a BTreeMap<Key, u64>, &'a BTreeMap<Key, u64>);
    let cases: [Case; 11] = [
        ("both empty", &empty, &empty),
        ("initiator empty", &empty, &some),
        ("responder empty", &some, &empty),
        ("one item", &one, &empty),
        ("one item each way", &empty, &one),
        ("identical", &some, &some),
        ("disjoint", &some, &other),
        ("subset", &subset, &some),
        ("superset", &some, &subset),
        ("other seqs", &some, &bumped),
        ("other seqs, reversed", &bumped, &some),
    ];
    // The whole-set opening is one message ahead of the split one.
    for (opening, extra) in [(initiate_with as Opening, 0), (initiate_whole_with, 1)] {
        for (name, a, b) in cases {
            let run = reconcile_from(opening, a, b, &params);
            let bound = message_bound(a.len().max(b.len()), &params) + extra;
            assert!(
                run.messages <= bound,
                "{name}: {} messages > {bound}",
                run.messages
            );
        }
        // Both empty: the initiator's empty list, then nothing.
        assert_eq!(reconcile_from(opening, &empty, &empty, &params).messages, 1);
        // A newcomer is sent everything at once.
        assert!(reconcile_from(opening, &empty, &some, &params).messages <= 2);
        // A newcomer is asked for nothing: the whole-set opening takes one more message.
        assert!(reconcile_from(opening, &some, &empty, &params).messages <= 2 + extra);
    }
}

#[test]
fn a_few_changes_cost_little_more_than_the_changed_items() {
    let params = SyncParams::default();
    let a = ledger(20_000, 1_000, 5);
    let mut b = a.clone();
    let keys: Vec<Key> = a.keys().copied().collect();
    for i in 0..3 {
        *b.get_mut(&keys[i * 5_000]).unwrap() += 1;
    }
    let run = reconcile(&a, &b, &params);
    assert_eq!(run.send[1].len(), 3);
    assert!(run.send[0].is_empty());
    assert!(run.messages <= message_bound(20_000, &params));
    // Per change: a path of fingerprints down the levels and one short list at the bottom.
    assert!(run.bytes < 3 * 2_500, "{} bytes", run.bytes);
}

#[test]
fn small_budgets_defer_but_still_converge() {
    let params = SyncParams::new(4, 8, MIN_REPLY_BUDGET).unwrap();
    let a = ledger(3_000, 300, 11);
    let b = ledger(3_000, 300, 12);
    let run = reconcile(&a, &b, &params);
    assert!(
        run.largest <= MIN_REPLY_BUDGET + 80 * 1024,
        "{}",
        run.largest
    );
    // Deferral costs messages, but every round moves on: all but a few messages are at least
    // half full.
    let budget = params.reply_budget();
    assert!(
        run.messages <= run.bytes / (budget / 2) + message_bound(3_000, &params),
        "{} messages, {} bytes",
        run.messages,
        run.bytes
    );
}

#[test]
fn other_parameters_converge_within_their_bound() {
    for (branching, threshold) in [(2, 1), (4, 4), (16, 32), (64, 64)] {
        let params = SyncParams::new(branching, threshold, MAX_REPLY_BUDGET).unwrap();
        let a = ledger(2_000, 100, 21);
        let mut b = ledger(1_500, 100, 22);
        b.extend(a.iter().take(700).map(|(k, s)| (*k, s + 1)));
        let run = reconcile(&a, &b, &params);
        let bound = message_bound(a.len().max(b.len()), &params);
        assert!(
            run.messages <= bound,
            "B={branching} T={threshold}: {} > {bound}",
            run.messages
        );
    }
}

#[test]
fn pushes_applied_during_the_exchange_still_converge() {
    // The node applies pushed receipts while the exchange goes on; sets change under it.
    let a0 = ledger(2_500, 200, 31);
    let b0 = ledger(2_500, 200, 32);
    let (mut a, mut b) = (index(&a0), index(&b0));
    let mut message = initiate(&a);
    let mut turn = 1;
    for _ in 0..100 {
        let (me, other) = if turn == 1 {
            (&mut b, &mut a)
        } else {
            (&mut a, &mut b)
        };
        let reply = respond(me, &message).unwrap();
        for key in &reply.send {
            let seq = me.get(key).unwrap();
            other.insert(*key, seq);
        }
        match reply.message {
            None => break,
            Some(next) => message = next,
        }
        turn = 1 - turn;
    }
    let expected = union(&a0, &b0);
    assert_eq!(snapshot(&a), expected);
    assert_eq!(snapshot(&b), expected);
}

#[test]
fn replies_stay_within_the_caps_under_a_flood_of_ranges() {
    // A peer sends the most ranges allowed, each claiming many items that differ from ours:
    // each would be split in 16, but the reply stops at its budget and stays valid.
    let items = index(&ledger(100_000, 2_000, 41));
    let mut rng = Rng(42);
    let mut bounds: Vec<Key> = (0..MAX_RANGES - 1).map(|_| rng.key()).collect();
    bounds.sort();
    bounds.dedup();
    let mut ranges: Vec<Range> = bounds
        .iter()
        .map(|key| Range::Fingerprint {
            upper: Bound::prefix(&key[..8]).unwrap(),
            count: 1_000,
            fingerprint: Fingerprint::from_bytes([7; 16]),
        })
        .collect();
    ranges.push(Range::Fingerprint {
        upper: Bound::END,
        count: 1_000,
        fingerprint: Fingerprint::EMPTY,
    });
    let message = Message { ranges };
    message.validate().unwrap();
    let reply = respond(&items, &message).unwrap();
    let answer = reply.message.unwrap();
    answer.validate().unwrap();
    assert!(answer.encoded_len() <= MAX_MESSAGE_BYTES);
    assert!(
        matches!(answer.ranges.last(), Some(Range::Fingerprint { upper, .. }) if upper.is_end())
    );

    // Items we lack, the most one range may list: the Want that names them all fits too.
    let theirs: Vec<(Key, u64)> = {
        let mut keys: Vec<Key> = (0..MAX_ITEMS_PER_RANGE).map(|_| rng.key()).collect();
        keys.sort();
        keys.into_iter().map(|k| (k, u64::MAX)).collect()
    };
    let message = Message {
        ranges: vec![Range::Items {
            upper: Bound::END,
            items: theirs.clone(),
        }],
    };
    let reply = respond(&items, &message).unwrap();
    assert_eq!(reply.want.len(), MAX_ITEMS_PER_RANGE);
    assert_eq!(reply.send.len(), 100_000, "we push all ours");
    reply.message.unwrap().validate().unwrap();
}

// --- the wire --------------------------------------------------------------------------------

fn key_with(first: u8) -> Key {
    let mut key = [0u8; KEY_BYTES];
    key[0] = first;
    key
}

fn sample() -> Message {
    Message {
        ranges: vec![
            Range::Skip {
                upper: Bound::prefix(&[1]).unwrap(),
            },
            Range::Items {
                upper: Bound::prefix(&[3, 9]).unwrap(),
                items: vec![(key_with(1), 1), (key_with(2), u64::MAX)],
            },
            Range::Want {
                upper: Bound::prefix(&[5]).unwrap(),
                keys: vec![key_with(4)],
            },
            Range::Fingerprint {
                upper: Bound::END,
                count: 300,
                fingerprint: Fingerprint::from_bytes([0xab; 16]),
            },
        ],
    }
}

#[test]
fn messages_round_trip_and_their_length_is_known_before_encoding() {
    let message = sample();
    message.validate().unwrap();
    let bytes = message.encode();
    assert_eq!(bytes.len(), message.encoded_len());
    assert_eq!(Message::decode(&bytes).unwrap(), message);
    assert_eq!(bytes[0], PROTOCOL_VERSION);
    // The done-nothing message: one skip to the end, 4 bytes.
    let skip = Message {
        ranges: vec![Range::Skip { upper: Bound::END }],
    };
    assert_eq!(skip.encode(), [1, 1, 0, 0]);
}

#[test]
fn keys_of_one_uploader_share_their_first_32_bytes_on_the_wire() {
    let keys: Vec<(Key, u64)> = (0..10).map(|d| (pair(1, 100 + d), 1)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    let message = Message {
        ranges: vec![Range::Items {
            upper: Bound::END,
            items: sorted,
        }],
    };
    // Each key after the first: shared length, suffix length, 32 or 33 bytes, seq.
    assert!(
        message.encoded_len() < 64 + 10 * 36,
        "{}",
        message.encoded_len()
    );
}

fn refused(bytes: &[u8]) -> SyncError {
    Message::decode(bytes).unwrap_err()
}

#[test]
fn malformed_and_oversized_messages_are_refused() {
    let good = sample().encode();
    // Too many bytes: refused before parsing.
    let mut big = good.clone();
    big.resize(MAX_MESSAGE_BYTES + 1, 0);
    assert!(matches!(refused(&big), SyncError::TooLarge { .. }));
    // Version.
    assert!(matches!(
        refused(&[]),
        SyncError::Version { found: None, .. }
    ));
    assert!(matches!(
        refused(&[2, 1, 0, 0]),
        SyncError::Version { found: Some(2), .. }
    ));
    // Not postcard, cut short, trailing bytes.
    assert!(matches!(
        refused(&good[..good.len() - 1]),
        SyncError::Malformed { .. }
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        refused(&trailing),
        SyncError::TrailingBytes { bytes: 1 }
    ));
    assert!(
        matches!(refused(&[1, 1, 9, 0]), SyncError::Malformed { .. }),
        "variant 9"
    );
    // No ranges.
    assert_eq!(refused(&[1, 0]), SyncError::NoRanges);
    // Too many ranges: 4097 skips.
    let mut many = vec![1];
    many.extend([0x81, 0x20]); // varint 4097
    for _ in 0..MAX_RANGES + 1 {
        many.extend([0, 0]);
    }
    assert_eq!(
        refused(&many),
        SyncError::TooManyRanges {
            count: MAX_RANGES + 1,
            max: MAX_RANGES
        }
    );
    // A declared length far past the input: the decoder runs out of input, allocating nothing.
    assert!(matches!(
        refused(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]),
        SyncError::Malformed { .. }
    ));
    // Too many items in one range: 1025 keys of 3 bytes each (shared 63, 1 byte of suffix).
    let mut items = vec![1, 1, 3, 0]; // version, 1 range, Want, End
    items.extend([0x81, 0x08]); // varint 1025
    items.extend([0, 64]);
    items.extend([0u8; 64]);
    for i in 1..=MAX_ITEMS_PER_RANGE {
        items.extend([63, 1, (i % 256) as u8]);
    }
    assert!(matches!(
        refused(&items),
        SyncError::TooManyItemsInRange {
            range: 0,
            count: 1025,
            ..
        }
    ));
}

#[test]
fn badly_structured_messages_are_refused_by_decode_and_respond() {
    let items = index(&ledger(100, 20, 1));
    let check = |message: Message, expected: SyncError| {
        assert_eq!(message.validate(), Err(expected.clone()));
        assert_eq!(respond(&items, &message), Err(expected.clone()));
        assert_eq!(Message::decode(&message.encode()), Err(expected));
    };
    let at = |b: u8| Bound::prefix(&[b]).unwrap();
    let skip = |upper| Range::Skip { upper };
    check(
        Message {
            ranges: vec![skip(at(5)), skip(at(3)), skip(Bound::END)],
        },
        SyncError::UnsortedBounds { range: 1 },
    );
    check(
        Message {
            ranges: vec![skip(at(5)), skip(at(5)), skip(Bound::END)],
        },
        SyncError::UnsortedBounds { range: 1 },
    );
    check(
        Message {
            ranges: vec![skip(Bound::END), skip(Bound::END)],
        },
        SyncError::UnsortedBounds { range: 1 },
    );
    check(
        Message {
            ranges: vec![skip(at(5))],
        },
        SyncError::OpenEnded,
    );
    // Unsorted items, a repeated key, a key outside its range.
    for listed in [
        vec![(key_with(2), 1), (key_with(1), 1)],
        vec![(key_with(1), 1), (key_with(1), 2)],
        vec![(key_with(7), 1)],
    ] {
        check(
            Message {
                ranges: vec![
                    Range::Items {
                        upper: at(5),
                        items: listed,
                    },
                    skip(Bound::END),
                ],
            },
            SyncError::KeyOutOfPlace { range: 0 },
        );
    }
    check(
        Message {
            ranges: vec![
                skip(at(5)),
                Range::Want {
                    upper: Bound::END,
                    keys: vec![key_with(4)],
                },
            ],
        },
        SyncError::KeyOutOfPlace { range: 1 },
    );
}

#[test]
fn bad_prefixes_are_refused() {
    // A bound that shares a byte with nothing before it.
    assert_eq!(
        refused(&[1, 1, 0, 1, 1, 1, 7]),
        SyncError::BadPrefix {
            range: 0,
            reason: "it shares more bytes than the one before it has"
        }
    );
    // A bound of 65 bytes.
    let mut long = vec![1, 1, 0, 1, 0, 65];
    long.extend([1u8; 65]);
    assert!(matches!(
        refused(&long),
        SyncError::BadPrefix { range: 0, .. }
    ));
    // A key of 63 bytes.
    let mut short = vec![1, 1, 3, 0, 1, 0, 63];
    short.extend([1u8; 63]);
    assert_eq!(
        refused(&short),
        SyncError::BadPrefix {
            range: 0,
            reason: "a key must be 64 bytes"
        }
    );
}

#[test]
fn parameters_out_of_range_are_refused() {
    assert!(SyncParams::new(1, 16, MAX_REPLY_BUDGET).is_err());
    assert!(SyncParams::new(MAX_BRANCHING + 1, 16, MAX_REPLY_BUDGET).is_err());
    assert!(SyncParams::new(16, 0, MAX_REPLY_BUDGET).is_err());
    assert!(SyncParams::new(16, MAX_ITEMS_PER_RANGE + 1, MAX_REPLY_BUDGET).is_err());
    assert!(SyncParams::new(16, 16, MIN_REPLY_BUDGET - 1).is_err());
    assert!(SyncParams::new(16, 16, MAX_REPLY_BUDGET + 1).is_err());
    let params = SyncParams::new(8, 8, MAX_REPLY_BUDGET).unwrap();
    assert_eq!(params, SyncParams::default());
    let message = SyncParams::new(1, 16, 4096).unwrap_err().to_string();
    assert!(message.contains("branching is 1"), "{message}");
}
