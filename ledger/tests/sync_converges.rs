//! Gossip's set reconciliation, property-tested through its public API: any two item sets
//! (empty, identical, disjoint, nested, the same keys at other seqs, keys that share long
//! prefixes; up to a few thousand items) reconcile to the union with the higher seq per key, each
//! side pushing exactly what the other needs, within a bounded number of messages, whether the
//! initiator opens with its split set or with one whole-set fingerprint; and no bytes,
//! however malformed, make the decoder or the responder panic or answer outside the caps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_ledger::sync::{
    Bound, Fingerprint, KEY_BYTES, Key, MAX_MESSAGE_BYTES, MAX_REPLY_BUDGET, Message, Range,
    SyncItems, SyncParams, initiate_whole_with, initiate_with, respond_with,
};

/// SplitMix64, so a failing case replays from its seed.
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
        self.next() % n.max(1)
    }
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// Uniform 64-byte keys.
    Random,
    /// Pairs among a few peers: keys of one uploader share 32 bytes.
    Peers(u64),
    /// Keys that differ only in their last two bytes: bounds and keys at their longest.
    LongPrefix,
}

fn draw_key(rng: &mut Rng, keys: Keys) -> Key {
    let mut key = [0u8; KEY_BYTES];
    match keys {
        Keys::Random => {
            for chunk in key.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
        }
        Keys::Peers(peers) => {
            let up = rng.below(peers);
            let down = rng.below(peers);
            key[..32].copy_from_slice(blake3::hash(&up.to_le_bytes()).as_bytes());
            key[32..].copy_from_slice(blake3::hash(&down.to_le_bytes()).as_bytes());
        }
        Keys::LongPrefix => {
            key.fill(0xa5);
            key[62..].copy_from_slice(&(rng.below(1 << 16) as u16).to_be_bytes());
        }
    }
    key
}

/// Two sides drawn from one base set: each base key goes to both at one seq, to both at other
/// seqs, or to one side only, in the given proportions (per 100).
#[derive(Debug, Clone)]
struct Shape {
    base: usize,
    keys: Keys,
    same: u64,
    other_seq: u64,
    only_a: u64,
    seed: u64,
}

fn shape() -> impl Strategy<Value = Shape> {
    let keys = prop_oneof![
        Just(Keys::Random),
        (2u64..80).prop_map(Keys::Peers),
        Just(Keys::LongPrefix),
    ];
    (
        0usize..3_000,
        keys,
        0u64..=100,
        0u64..=100,
        0u64..=100,
        any::<u64>(),
    )
        .prop_map(|(base, keys, same, other_seq, only_a, seed)| Shape {
            base,
            keys,
            same,
            other_seq,
            only_a,
            seed,
        })
}

type Set = BTreeMap<Key, u64>;

fn sides(shape: &Shape) -> (Set, Set) {
    let mut rng = Rng(shape.seed);
    let (mut a, mut b) = (Set::new(), Set::new());
    for _ in 0..shape.base {
        let key = draw_key(&mut rng, shape.keys);
        let seq = 1 + rng.below(1_000);
        if rng.below(100) < shape.same {
            a.insert(key, seq);
            b.insert(key, seq);
        } else if rng.below(100) < shape.other_seq {
            a.insert(key, seq);
            b.insert(key, 1 + rng.below(1_000));
        } else if rng.below(100) < shape.only_a {
            a.insert(key, seq);
        } else {
            b.insert(key, seq);
        }
    }
    (a, b)
}

fn index(set: &Set) -> SyncItems {
    set.iter().map(|(k, s)| (*k, *s)).collect()
}

fn needed(from: &Set, to: &Set) -> Vec<Key> {
    from.iter()
        .filter(|(key, seq)| to.get(*key).is_none_or(|held| held < seq))
        .map(|(key, _)| *key)
        .collect()
}

/// Ranks a cut may move at least (at most half a part, rounded), as in `sync`'s `split`.
const MIN_CUT_WINDOW: usize = 2;

/// Messages an exchange may take: per level of cuts two messages at worst, plus the first, the
/// items, the want and the last. A part holds its share plus at most twice the window each of its
/// two cuts may move (an eighth of a part, at least `MIN_CUT_WINDOW`), and fewer than the range.
fn message_bound(n: usize, params: &SyncParams) -> usize {
    let mut levels = 0;
    let mut size = n.max(1);
    while size > params.items_threshold() {
        let parts = params.branching().min(size);
        let window = (size / (8 * parts)).max(((size + parts) / (2 * parts)).min(MIN_CUT_WINDOW));
        size = (size.div_ceil(parts) + 2 * window).min(size - 1);
        levels += 1;
    }
    2 * levels + 4
}

/// How the initiator makes its first message.
type Opening = fn(&SyncItems, &SyncParams) -> Message;

struct Outcome {
    messages: usize,
    bytes: usize,
}

/// Runs an exchange over encoded messages, applies the pushes after it, and checks the result.
fn reconcile(a: &Set, b: &Set, params: &SyncParams) -> Result<Outcome, TestCaseError> {
    reconcile_from(initiate_with, a, b, params)
}

/// As [`reconcile`], the initiator opening with `opening`.
fn reconcile_from(
    opening: Opening,
    a: &Set,
    b: &Set,
    params: &SyncParams,
) -> Result<Outcome, TestCaseError> {
    let sides = [index(a), index(b)];
    let mut send: [Vec<Key>; 2] = Default::default();
    let mut message = opening(&sides[0], params);
    let (mut turn, mut messages, mut bytes) = (1, 0, 0);
    loop {
        let encoded = message.encode();
        prop_assert!(encoded.len() <= MAX_MESSAGE_BYTES);
        messages += 1;
        bytes += encoded.len();
        let decoded = Message::decode(&encoded).unwrap();
        prop_assert_eq!(&decoded, &message);
        let reply = respond_with(&sides[turn], &decoded, params).unwrap();
        send[turn].extend(reply.send);
        match reply.message {
            None => break,
            Some(next) => message = next,
        }
        turn = 1 - turn;
        prop_assert!(messages < 2_000, "the exchange does not end");
    }
    // Exactly what the other side needs, each once.
    for (side, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
        let mut pushed = send[side].clone();
        pushed.sort();
        prop_assert_eq!(
            pushed.len(),
            send[side].len(),
            "side {} pushed a key twice",
            side
        );
        pushed.dedup();
        let needed = needed(from, to);
        prop_assert!(
            pushed == needed,
            "side {} pushed {} keys; the other needed {}",
            side,
            pushed.len(),
            needed.len()
        );
    }
    let [mut ia, mut ib] = sides;
    for key in &send[0] {
        ib.insert(*key, a[key]);
    }
    for key in &send[1] {
        ia.insert(*key, b[key]);
    }
    let mut union = a.clone();
    for (key, seq) in b {
        let held = union.entry(*key).or_insert(*seq);
        *held = (*held).max(*seq);
    }
    let got_a: Set = ia.iter().map(|(k, s)| (*k, s)).collect();
    let got_b: Set = ib.iter().map(|(k, s)| (*k, s)).collect();
    prop_assert_eq!(&got_a, &union);
    prop_assert_eq!(&got_b, &union);
    Ok(Outcome { messages, bytes })
}

fn params() -> impl Strategy<Value = SyncParams> {
    (2usize..=64, 1usize..=64).prop_map(|(b, t)| SyncParams::new(b, t, MAX_REPLY_BUDGET).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_two_sets_reconcile_within_the_bound(shape in shape()) {
        let (a, b) = sides(&shape);
        let params = SyncParams::default();
        let run = reconcile(&a, &b, &params)?;
        let bound = message_bound(a.len().max(b.len()), &params);
        prop_assert!(run.messages <= bound, "{} messages > {}", run.messages, bound);
    }

    #[test]
    fn any_parameters_reconcile_within_their_bound(shape in shape(), params in params()) {
        let (a, b) = sides(&shape);
        let run = reconcile(&a, &b, &params)?;
        let bound = message_bound(a.len().max(b.len()), &params);
        prop_assert!(run.messages <= bound, "{} messages > {}", run.messages, bound);
    }

    #[test]
    fn any_two_sets_reconcile_from_the_whole_set_opening(shape in shape(), params in params()) {
        // One fingerprint of the whole set first: the responder cuts it, one message later
        // than the split opening would have.
        let (a, b) = sides(&shape);
        let first = initiate_whole_with(&index(&a), &params);
        if a.len() > params.items_threshold() {
            let whole = matches!(&first.ranges[..], [Range::Fingerprint { upper, count, .. }]
                if upper.is_end() && *count == a.len() as u64);
            prop_assert!(whole, "the first message is one fingerprint to the end");
        }
        let run = reconcile_from(initiate_whole_with, &a, &b, &params)?;
        let bound = message_bound(a.len().max(b.len()), &params) + 1;
        prop_assert!(run.messages <= bound, "{} messages > {}", run.messages, bound);
        if a == b && a.len() > params.items_threshold() {
            prop_assert_eq!(run.messages, 1, "in sync: the first message is the last");
            prop_assert!(run.bytes < 30, "{} bytes", run.bytes);
        }
    }

    #[test]
    fn small_budgets_reconcile_with_mostly_full_messages(
        shape in shape(),
        budget in 1024usize..16_384,
    ) {
        let (a, b) = sides(&shape);
        let params = SyncParams::new(16, 16, budget).unwrap();
        let run = reconcile(&a, &b, &params)?;
        let bound = run.bytes / (budget / 2) + message_bound(a.len().max(b.len()), &params);
        prop_assert!(run.messages <= bound, "{} messages > {}", run.messages, bound);
    }
}

/// A small set to answer strange messages with.
fn small_set() -> SyncItems {
    let mut rng = Rng(5);
    (0..500)
        .map(|_| (draw_key(&mut rng, Keys::Peers(30)), 1 + rng.below(9)))
        .collect()
}

/// Answers `message` if it decodes: the answer must be valid and within the caps.
fn answer(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = Message::decode(bytes) {
        let again = Message::decode(&message.encode());
        prop_assert_eq!(again.as_ref(), Ok(&message));
        let reply = respond_with(&small_set(), &message, &SyncParams::default()).unwrap();
        if let Some(next) = reply.message {
            prop_assert!(next.validate().is_ok());
            prop_assert!(next.encode().len() <= MAX_MESSAGE_BYTES);
        }
    }
    Ok(())
}

/// A message built from arbitrary parts: valid or not, `validate` decides without panicking.
fn arbitrary_message() -> impl Strategy<Value = Message> {
    let bound = prop_oneof![
        1 => Just(Bound::END),
        4 => prop::collection::vec(any::<u8>(), 0..4).prop_map(|p| Bound::prefix(&p).unwrap()),
    ];
    let key = prop::collection::vec(0u8..4, KEY_BYTES).prop_map(|v| {
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&v);
        key
    });
    let range = prop_oneof![
        bound.clone().prop_map(|upper| Range::Skip { upper }),
        (bound.clone(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(upper, count, f)| {
            Range::Fingerprint {
                upper,
                count,
                fingerprint: Fingerprint::from_bytes(f),
            }
        }),
        (
            bound.clone(),
            prop::collection::vec((key.clone(), any::<u64>()), 0..6)
        )
            .prop_map(|(upper, items)| Range::Items { upper, items }),
        (bound, prop::collection::vec(key, 0..6))
            .prop_map(|(upper, keys)| Range::Want { upper, keys }),
    ];
    prop::collection::vec(range, 0..8).prop_map(|mut ranges| {
        // Sort the bounds often enough that some messages are valid.
        ranges.sort_by(|a, b| a.upper().cmp(b.upper()));
        Message { ranges }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        answer(&bytes)?;
        let mut versioned = bytes.clone();
        versioned.insert(0, 1);
        answer(&versioned)?;
    }

    #[test]
    fn damaged_messages_never_panic(
        shape in shape(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let (a, _) = sides(&shape);
        let mut bytes = initiate_with(&index(&a), &SyncParams::default()).encode();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        answer(&bytes)?;
    }

    #[test]
    fn built_messages_validate_or_are_refused_and_round_trip(message in arbitrary_message()) {
        let checked = message.validate();
        let decoded = Message::decode(&message.encode());
        match checked {
            Ok(()) => {
                prop_assert_eq!(decoded.as_ref(), Ok(&message));
                answer(&message.encode())?;
            }
            Err(why) => {
                prop_assert!(decoded.is_err());
                prop_assert!(respond_with(&small_set(), &message, &SyncParams::default()).is_err());
                prop_assert!(!why.to_string().is_empty());
            }
        }
    }
}
