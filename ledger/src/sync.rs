//! Gossip's set reconciliation, sans I/O: which latest receipts two nodes must push to each other
//! so that both end with, for every pair, the receipt of the higher `seq`.
//!
//! Each side indexes what it holds as items `(key, seq)` — key = uploader ‖ downloader (64 bytes,
//! [`pair_key`]), seq = the latest receipt's seq — in a [`SyncItems`] it keeps up to date as its
//! store changes. The exchange is range-based set reconciliation (Meyer, "Range-Based Set
//! Reconciliation", 2023; the scheme of negentropy), made push-pull:
//!
//! 1. The initiator sends its first [`Message`]: [`initiate_whole`]'s one range over the whole key
//!    space with the count and [`Fingerprint`] of all its items (the cheap opening: when nothing
//!    differs it is the whole exchange), or [`initiate`]'s key space already cut into `B` ranges
//!    of about equal count, each with its count and fingerprint (one message further on when
//!    something differs, `B` times the bytes when nothing does). For a small set (at most the
//!    threshold), either sends the items.
//! 2. Each side answers the other's message with [`respond`]. Per range: the same fingerprint →
//!    `Skip`; the other side holds nothing there → push everything we hold there; we hold few
//!    items (≤ the threshold) → send them (`Items`); the other side holds few → send our
//!    fingerprint back, so it sends its items; else cut the range into `B` sub-ranges of about
//!    equal count and send their fingerprints.
//! 3. A side that receives `Items` compares them with its own: it pushes what the other lacks or
//!    holds older ([`Reply::send`]), and names what it lacks or holds older in a `Want` range
//!    ([`Reply::want`]); the other side pushes those ([`Reply::send`] again). After the exchange
//!    each side knows exactly which of its receipts the other needs.
//! 4. The exchange ends when a reply has nothing to say: [`Reply::message`] is `None`.
//!
//! Each cut divides a side's items in a range by about `B`, so with `n` items a side and
//! threshold `T`, an exchange takes at most about `2·log_B(n/T) + 4` messages, one more after
//! [`initiate_whole`] (the factor 2 only when the two sides' items are spread very unevenly;
//! `log_B(n/T) + 2` or `+ 3` is typical: with the defaults `B` = `T` = 8, 6 to 8 messages at
//! 100,000 pairs), plus, when the differences are too many for one reply's byte budget, about
//! one more message per budget's worth. Nothing changed costs one message and no reply: 23 bytes
//! from [`initiate_whole`] at any size, `B` fingerprints (about 180 bytes) from [`initiate`].
//!
//! A range's fingerprint is the sum mod 2^128 of a 16-byte BLAKE3 of each item's `key ‖ seq`,
//! sent with the item count. A sum (not XOR) because XOR lets anyone who can choose items cancel
//! others by Gaussian elimination over GF(2) — about 129 chosen items reach any target — and
//! cancels any item that appears twice; for a sum, finding a cancelling subset is a
//! generalised-birthday (k-sum) problem far harder at 128 bits. Sums are additive, so
//! [`SyncItems`] keeps prefix sums per chunk of items plus a running total: a range's
//! fingerprint costs two binary searches and one addition per chunk it covers, not a pass over
//! its items.
//!
//! Range bounds are key prefixes: the shortest prefix that separates two neighbouring keys, with
//! each cut moved by up to an eighth of a part, and at least two ranks (at most half a part), to
//! where that prefix is shortest (between two uploaders, 1 to 3 bytes instead of 33). On the wire
//! every key and bound is written as the length it shares with the previous one written, then
//! the rest; keys of one uploader share 32 bytes, so that halves them. The format is in
//! docs/PROTOCOL.md ("Gossip: set reconciliation").
//!
//! Every message is bounded ([`MAX_MESSAGE_BYTES`], [`MAX_RANGES`], [`MAX_ITEMS_PER_RANGE`],
//! [`MAX_ITEMS`]); [`Message::decode`] checks the byte length before it parses and the list
//! lengths before it allocates, and [`respond`] checks a message (sorted bounds that cover the key
//! space, items sorted and inside their range) before it acts on it. A reply is cut at a byte
//! budget: past it, ranges are answered by plain fingerprints, to be taken up next round, and
//! past twice the budget the rest of the key space by one. The work of one [`respond`] is
//! O(ranges · log n + chunks covered + items listed + own items in the ranges it must push or
//! compare), and its message always fits the caps. What it cannot bound is how many receipts a
//! peer may legitimately lack: a newcomer lacks everything, and [`Reply::send`] then lists every
//! key — a 5-byte message asks for the whole ledger. The caller paces those pushes.
//!
//! No I/O, no clock, no threads: the node drives the messages over its streams, looks the keys of
//! [`Reply::send`] up in its store and pushes those receipts, and verifies what it receives before
//! it applies it and inserts it here.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::PeerId;
use crate::receipt::Pair;

/// Bytes of an item's key: uploader ‖ downloader.
pub const KEY_BYTES: usize = 64;

/// An item's key: the pair's uploader key then its downloader key, the order of the store.
pub type Key = [u8; KEY_BYTES];

/// The version byte that opens every encoded [`Message`].
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest encoded [`Message`] accepted or produced.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The most ranges in one [`Message`].
pub const MAX_RANGES: usize = 4096;

/// The most items (or wanted keys) in one range of a [`Message`].
pub const MAX_ITEMS_PER_RANGE: usize = 1024;

/// The most items and wanted keys in one [`Message`], over all its ranges.
pub const MAX_ITEMS: usize = 16_384;

/// The largest branching factor [`SyncParams`] accepts.
pub const MAX_BRANCHING: usize = 64;

/// The largest reply budget [`SyncParams`] accepts: with the largest answer to one range
/// (a `Want` of [`MAX_ITEMS_PER_RANGE`] keys) on top, a reply stays under [`MAX_MESSAGE_BYTES`].
pub const MAX_REPLY_BUDGET: usize = 128 * 1024;

/// The smallest reply budget [`SyncParams`] accepts.
pub const MIN_REPLY_BUDGET: usize = 1024;

/// Changes [`SyncItems`] remembers for [`SyncItems::changed_since`].
pub const JOURNAL_CAPACITY: usize = 4096;

/// The short id of an item: the first 8 bytes of its [`Fingerprint::of_item`] hash. What a
/// gossip session announces of a receipt it learned lately.
pub type ShortId = [u8; 8];

/// The [`ShortId`] of `seq` of `key`.
pub fn short_id(key: &Key, seq: u64) -> ShortId {
    short(Fingerprint::of_item(key, seq).0)
}

/// The [`ShortId`] of an item's hash.
fn short(hash: u128) -> ShortId {
    (hash as u64).to_le_bytes()
}

/// Of `announced` ids, those not held: what to ask the announcer for. At most `max`, in order.
pub fn wanted(items: &SyncItems, announced: &[ShortId], max: usize) -> Vec<ShortId> {
    let mut out: Vec<ShortId> = Vec::new();
    for id in announced {
        if out.len() >= max {
            break;
        }
        if !items.holds(*id) && !out.contains(id) {
            out.push(*id);
        }
    }
    out
}

/// The keys of the `wanted` ids among `announced` (what this side announced), in `wanted`'s
/// order; ids it never announced are skipped.
pub fn resolve(announced: &[(ShortId, Key)], wanted: &[ShortId]) -> Vec<Key> {
    wanted
        .iter()
        .filter_map(|id| announced.iter().find(|(a, _)| a == id).map(|(_, key)| *key))
        .collect()
}

/// Domain separator of an item's hash.
const ITEM_DOMAIN: &[u8] = b"tally/sync/v1/item";

/// The key of `pair`: uploader ‖ downloader.
pub fn pair_key(pair: &Pair) -> Key {
    let mut key = [0u8; KEY_BYTES];
    key[..32].copy_from_slice(pair.uploader.as_bytes());
    key[32..].copy_from_slice(pair.downloader.as_bytes());
    key
}

/// The pair of `key`, to look its receipt up with [`crate::Store::latest`].
pub fn key_pair(key: &Key) -> Pair {
    let mut uploader = [0u8; 32];
    let mut downloader = [0u8; 32];
    uploader.copy_from_slice(&key[..32]);
    downloader.copy_from_slice(&key[32..]);
    Pair {
        uploader: PeerId(uploader),
        downloader: PeerId(downloader),
    }
}

/// Why a sync message or a parameter set is refused. Never a panic, whatever the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The encoded message is over [`MAX_MESSAGE_BYTES`].
    #[error("sync message of {bytes} bytes is over the cap of {max} bytes")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// The message is empty or opens with another version byte.
    #[error(
        "sync message has version {found:?}; this node speaks version {supported} (empty input has none)"
    )]
    Version {
        /// The version byte found, if any.
        found: Option<u8>,
        /// The version this node speaks.
        supported: u8,
    },
    /// The bytes are not a postcard-encoded message.
    #[error("sync message does not decode: {detail}")]
    Malformed {
        /// The decoder's message.
        detail: String,
    },
    /// Bytes follow the encoded message.
    #[error("sync message is followed by {bytes} stray bytes")]
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
    /// More ranges than [`MAX_RANGES`].
    #[error("sync message has {count} ranges; at most {max} are allowed")]
    TooManyRanges {
        /// Ranges in the message.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// One range lists more than [`MAX_ITEMS_PER_RANGE`] items or keys.
    #[error("range {range} of the sync message lists {count} items; at most {max} are allowed")]
    TooManyItemsInRange {
        /// Index of the range.
        range: usize,
        /// Items it lists.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// The ranges list more than [`MAX_ITEMS`] items and keys in all.
    #[error("sync message lists {count} items in all; at most {max} are allowed")]
    TooManyItems {
        /// Items listed.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A message must have at least one range.
    #[error("sync message has no ranges; it must cover the whole key space")]
    NoRanges,
    /// Upper bounds must strictly increase.
    #[error("range {range} of the sync message does not end above the range before it")]
    UnsortedBounds {
        /// Index of the range.
        range: usize,
    },
    /// The last range must end at the end of the key space.
    #[error("the last range of the sync message stops short of the end of the key space")]
    OpenEnded,
    /// A listed key is outside its range, or not above the key listed before it.
    #[error("range {range} of the sync message lists a key out of order or outside the range")]
    KeyOutOfPlace {
        /// Index of the range.
        range: usize,
    },
    /// A prefix-compressed key or bound does not expand to a valid one.
    #[error("range {range} of the sync message has an invalid key or bound: {reason}")]
    BadPrefix {
        /// Index of the range.
        range: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// [`SyncParams::new`] was given values out of range.
    #[error("invalid sync parameters: {0}")]
    BadParams(String),
}

/// The additive fingerprint of a set of items: the sum mod 2^128 of each item's 16-byte hash.
/// On the wire, 16 bytes little-endian.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint(u128);

impl Fingerprint {
    /// The fingerprint of no items.
    pub const EMPTY: Fingerprint = Fingerprint(0);

    /// The hash of one item: the first 16 bytes of BLAKE3(`tally/sync/v1/item` ‖ key ‖ seq as 8
    /// bytes little-endian), read as a little-endian integer.
    pub fn of_item(key: &Key, seq: u64) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(ITEM_DOMAIN);
        hasher.update(key);
        hasher.update(&seq.to_le_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        Self(u128::from_le_bytes(first))
    }

    /// From its 16 wire bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_le_bytes(bytes))
    }

    /// Its 16 wire bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }
}

/// The fingerprint of the union of two disjoint sets.
impl std::ops::Add for Fingerprint {
    type Output = Fingerprint;

    fn add(self, other: Fingerprint) -> Fingerprint {
        Fingerprint(self.0.wrapping_add(other.0))
    }
}

/// The fingerprint of a set without a subset whose fingerprint is `other`.
impl std::ops::Sub for Fingerprint {
    type Output = Fingerprint;

    fn sub(self, other: Fingerprint) -> Fingerprint {
        Fingerprint(self.0.wrapping_sub(other.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(self.to_bytes()))
    }
}

/// The upper end of a range: a key prefix of at most [`KEY_BYTES`] bytes, or the end of the key
/// space. A range holds the keys `k` with `lower ≤ k < upper`, comparing bytes in order, a prefix
/// below every longer string it starts; the first range's lower end is [`Bound::START`] (the
/// empty prefix), each next one's is the upper end of the one before.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bound {
    /// Bytes of the prefix, or [`END_LEN`] for the end.
    len: u8,
    /// The prefix, zero past `len`.
    bytes: Key,
}

/// `Bound::len` of the end of the key space.
const END_LEN: u8 = u8::MAX;

impl Bound {
    /// The empty prefix: below every key.
    pub const START: Bound = Bound {
        len: 0,
        bytes: [0u8; KEY_BYTES],
    };

    /// The end of the key space: above every key.
    pub const END: Bound = Bound {
        len: END_LEN,
        bytes: [0u8; KEY_BYTES],
    };

    /// The bound at `prefix`; `None` if it is longer than [`KEY_BYTES`].
    pub fn prefix(prefix: &[u8]) -> Option<Bound> {
        if prefix.len() > KEY_BYTES {
            return None;
        }
        let mut bytes = [0u8; KEY_BYTES];
        bytes[..prefix.len()].copy_from_slice(prefix);
        Some(Bound {
            len: prefix.len() as u8,
            bytes,
        })
    }

    /// The prefix, or `None` for [`Bound::END`].
    pub fn as_prefix(&self) -> Option<&[u8]> {
        if self.len == END_LEN {
            None
        } else {
            self.bytes.get(..usize::from(self.len))
        }
    }

    /// Whether this is [`Bound::END`].
    pub fn is_end(&self) -> bool {
        self.len == END_LEN
    }

    /// Whether `key` lies below this bound.
    pub fn is_above(&self, key: &Key) -> bool {
        match self.as_prefix() {
            None => true,
            Some(prefix) => key.as_slice() < prefix,
        }
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self.as_prefix(), other.as_prefix()) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_prefix() {
            None => f.write_str("End"),
            Some(prefix) => write!(f, "Prefix({})", hex::encode(prefix)),
        }
    }
}

/// One range of a [`Message`]: what the sender says about the keys from the previous range's
/// upper bound up to this one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    /// Nothing to do here: in sync, or handled.
    Skip {
        /// Upper end of the range.
        upper: Bound,
    },
    /// The sender's count and fingerprint of its items in the range.
    Fingerprint {
        /// Upper end of the range.
        upper: Bound,
        /// How many items the sender holds in the range.
        count: u64,
        /// Their fingerprint.
        fingerprint: Fingerprint,
    },
    /// Every item the sender holds in the range, sorted by key.
    Items {
        /// Upper end of the range.
        upper: Bound,
        /// `(key, seq)`, keys strictly increasing.
        items: Vec<(Key, u64)>,
    },
    /// The keys, in the range, of the items the sender listed as `Items` that the receiver
    /// lacks or holds older: push their receipts.
    Want {
        /// Upper end of the range.
        upper: Bound,
        /// Keys, strictly increasing.
        keys: Vec<Key>,
    },
}

impl Range {
    /// Upper end of the range.
    pub fn upper(&self) -> &Bound {
        match self {
            Range::Skip { upper }
            | Range::Fingerprint { upper, .. }
            | Range::Items { upper, .. }
            | Range::Want { upper, .. } => upper,
        }
    }
}

/// One message of the exchange: ranges that together cover the whole key space, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The ranges; each starts where the one before ends, the last ends at [`Bound::END`].
    pub ranges: Vec<Range>,
}

impl Message {
    /// Checks every cap and the structure: at least one range, no more than [`MAX_RANGES`],
    /// bounds strictly increasing up to [`Bound::END`], listed keys strictly increasing and
    /// inside their range, at most [`MAX_ITEMS_PER_RANGE`] per range and [`MAX_ITEMS`] in all,
    /// and at most [`MAX_MESSAGE_BYTES`] encoded.
    pub fn validate(&self) -> Result<(), SyncError> {
        if self.ranges.is_empty() {
            return Err(SyncError::NoRanges);
        }
        if self.ranges.len() > MAX_RANGES {
            return Err(SyncError::TooManyRanges {
                count: self.ranges.len(),
                max: MAX_RANGES,
            });
        }
        let mut lower = Bound::START;
        let mut total = 0usize;
        for (index, range) in self.ranges.iter().enumerate() {
            let upper = *range.upper();
            if upper <= lower {
                return Err(SyncError::UnsortedBounds { range: index });
            }
            let keys: Box<dyn Iterator<Item = &Key>> = match range {
                Range::Items { items, .. } => Box::new(items.iter().map(|(key, _)| key)),
                Range::Want { keys, .. } => Box::new(keys.iter()),
                Range::Skip { .. } | Range::Fingerprint { .. } => Box::new(std::iter::empty()),
            };
            let mut listed = 0usize;
            let mut previous: Option<&Key> = None;
            for key in keys {
                listed += 1;
                if listed > MAX_ITEMS_PER_RANGE {
                    return Err(SyncError::TooManyItemsInRange {
                        range: index,
                        count: range_len(range),
                        max: MAX_ITEMS_PER_RANGE,
                    });
                }
                let ordered = previous.is_none_or(|previous| previous < key);
                if !ordered || lower.is_above(key) || !upper.is_above(key) {
                    return Err(SyncError::KeyOutOfPlace { range: index });
                }
                previous = Some(key);
            }
            total += listed;
            lower = upper;
        }
        if !lower.is_end() {
            return Err(SyncError::OpenEnded);
        }
        if total > MAX_ITEMS {
            return Err(SyncError::TooManyItems {
                count: total,
                max: MAX_ITEMS,
            });
        }
        let bytes = self.encoded_len();
        if bytes > MAX_MESSAGE_BYTES {
            return Err(SyncError::TooLarge {
                bytes,
                max: MAX_MESSAGE_BYTES,
            });
        }
        Ok(())
    }

    /// The length of [`Message::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        let mut previous = Previous::new();
        let ranges: usize = self
            .ranges
            .iter()
            .map(|range| range_cost(&mut previous, range))
            .sum();
        1 + varint_len(self.ranges.len() as u64) + ranges
    }

    /// The postcard encoding, keys and bounds prefix-compressed (see docs/PROTOCOL.md ("Gossip: set reconciliation")).
    pub fn encode(&self) -> Vec<u8> {
        let mut previous = Previous::new();
        let ranges = self
            .ranges
            .iter()
            .map(|range| {
                let upper = wire_bound(&mut previous, range.upper());
                match range {
                    Range::Skip { .. } => WireRange::Skip { upper },
                    Range::Fingerprint {
                        count, fingerprint, ..
                    } => WireRange::Fingerprint {
                        upper,
                        count: *count,
                        fingerprint: fingerprint.to_bytes(),
                    },
                    Range::Items { items, .. } => WireRange::Items {
                        upper,
                        items: Capped::new(
                            items
                                .iter()
                                .map(|(key, seq)| (previous.compress(key), *seq))
                                .collect(),
                        ),
                    },
                    Range::Want { keys, .. } => WireRange::Want {
                        upper,
                        keys: Capped::new(keys.iter().map(|key| previous.compress(key)).collect()),
                    },
                }
            })
            .collect();
        let wire = WireMessage {
            version: PROTOCOL_VERSION,
            ranges: Capped::new(ranges),
        };
        // Encoding into a Vec does not fail for these types; the arm keeps the path panic-free.
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes and validates a message. The byte length is checked before parsing and every
    /// list's length before it is allocated, so no input makes this allocate more than a small
    /// multiple of [`MAX_MESSAGE_BYTES`]; nothing here panics.
    pub fn decode(bytes: &[u8]) -> Result<Message, SyncError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(SyncError::TooLarge {
                bytes: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        match bytes.first() {
            Some(&PROTOCOL_VERSION) => {}
            found => {
                return Err(SyncError::Version {
                    found: found.copied(),
                    supported: PROTOCOL_VERSION,
                });
            }
        }
        let (wire, rest) = postcard::take_from_bytes::<WireMessage<'_>>(bytes).map_err(|e| {
            SyncError::Malformed {
                detail: e.to_string(),
            }
        })?;
        if !rest.is_empty() {
            return Err(SyncError::TrailingBytes { bytes: rest.len() });
        }
        let message = from_wire(wire)?;
        message.validate()?;
        Ok(message)
    }
}

fn range_len(range: &Range) -> usize {
    match range {
        Range::Items { items, .. } => items.len(),
        Range::Want { keys, .. } => keys.len(),
        Range::Skip { .. } | Range::Fingerprint { .. } => 0,
    }
}

/// What one side does after a message: the message to answer with, and the receipts to push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// The answer to send, or `None` when there is nothing left to say: the exchange is over
    /// (the caller tells the peer so, e.g. by finishing its stream).
    pub message: Option<Message>,
    /// Keys of the receipts the other side lacks or holds older: push them. Sorted, no repeats.
    pub send: Vec<Key>,
    /// Keys this side lacks or holds older, which the other side holds newer and will push.
    /// Sorted, no repeats. For the caller's accounting; nothing needs to be sent for them.
    pub want: Vec<Key>,
}

/// Tuning of the exchange. Both sides may use different values; every value here keeps replies
/// within the caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncParams {
    branching: usize,
    items_threshold: usize,
    reply_budget: usize,
}

impl Default for SyncParams {
    /// Branching 8, items threshold 8, reply budget 128 KiB. Against 16 and 16 (the defaults
    /// until 2026-12), locating a few differences among 100,000 pairs costs about a quarter fewer
    /// bytes, and gossip 6–15% fewer bytes per receipt, for about one more message; a peer that
    /// lacks half the ledger costs 30% more (docs/PERFORMANCE.md, "Gossip: set reconciliation").
    fn default() -> Self {
        Self {
            branching: 8,
            items_threshold: 8,
            reply_budget: MAX_REPLY_BUDGET,
        }
    }
}

impl SyncParams {
    /// `branching`: sub-ranges a differing range is cut into (2 to [`MAX_BRANCHING`]);
    /// `items_threshold`: at most this many items in a differing range are sent as a list
    /// instead (1 to [`MAX_ITEMS_PER_RANGE`]); `reply_budget`: bytes after which a reply defers
    /// the ranges left (see [`respond_with`]; [`MIN_REPLY_BUDGET`] to [`MAX_REPLY_BUDGET`]).
    pub fn new(
        branching: usize,
        items_threshold: usize,
        reply_budget: usize,
    ) -> Result<Self, SyncError> {
        if !(2..=MAX_BRANCHING).contains(&branching) {
            return Err(SyncError::BadParams(format!(
                "branching is {branching}; it must be from 2 to {MAX_BRANCHING}"
            )));
        }
        if !(1..=MAX_ITEMS_PER_RANGE).contains(&items_threshold) {
            return Err(SyncError::BadParams(format!(
                "items threshold is {items_threshold}; it must be from 1 to {MAX_ITEMS_PER_RANGE}"
            )));
        }
        if !(MIN_REPLY_BUDGET..=MAX_REPLY_BUDGET).contains(&reply_budget) {
            return Err(SyncError::BadParams(format!(
                "reply budget is {reply_budget} bytes; it must be from {MIN_REPLY_BUDGET} to {MAX_REPLY_BUDGET}"
            )));
        }
        Ok(Self {
            branching,
            items_threshold,
            reply_budget,
        })
    }

    /// Sub-ranges a differing range is cut into.
    pub fn branching(&self) -> usize {
        self.branching
    }

    /// Largest differing range sent as a list of items.
    pub fn items_threshold(&self) -> usize {
        self.items_threshold
    }

    /// Bytes of a reply after which the rest is deferred.
    pub fn reply_budget(&self) -> usize {
        self.reply_budget
    }
}

/// The first message of an exchange, with the default [`SyncParams`].
pub fn initiate(items: &SyncItems) -> Message {
    initiate_with(items, &SyncParams::default())
}

/// The first message of an exchange: every item if there are at most the threshold, else the
/// key space cut into `branching` ranges of about equal count, with their fingerprints.
pub fn initiate_with(items: &SyncItems, params: &SyncParams) -> Message {
    let all = (items.start_pos(), items.end_pos());
    let ranges = if items.len() <= params.items_threshold {
        vec![Range::Items {
            upper: Bound::END,
            items: items
                .entries(all.0, all.1)
                .map(|e| (e.key, e.seq))
                .collect(),
        }]
    } else {
        items
            .split(all.0, all.1, items.len(), Bound::END, params.branching)
            .into_iter()
            .map(|(upper, count, sum)| Range::Fingerprint {
                upper,
                count: count as u64,
                fingerprint: Fingerprint(sum),
            })
            .collect()
    };
    Message { ranges }
}

/// The cheap first message of an exchange, with the default [`SyncParams`]: see
/// [`initiate_whole_with`]. What gossip sessions should open with.
pub fn initiate_whole(items: &SyncItems) -> Message {
    initiate_whole_with(items, &SyncParams::default())
}

/// The cheap first message of an exchange: every item if there are at most the threshold (as
/// [`initiate_with`]), else one `Fingerprint` range over the whole key space, from the running
/// total. When nothing differs that is the whole exchange, 23 bytes at 100,000 pairs instead of
/// `branching` fingerprints (~180 bytes at 8, ~370 at 16); when something differs the responder
/// cuts the range as it would any other (into what [`initiate_with`] would have sent), so the
/// exchange takes one message more.
pub fn initiate_whole_with(items: &SyncItems, params: &SyncParams) -> Message {
    if items.len() <= params.items_threshold {
        return initiate_with(items, params);
    }
    let (count, fingerprint) = items.fingerprint(&Bound::START, &Bound::END);
    Message {
        ranges: vec![Range::Fingerprint {
            upper: Bound::END,
            count,
            fingerprint,
        }],
    }
}

/// Answers the other side's message, with the default [`SyncParams`].
pub fn respond(items: &SyncItems, message: &Message) -> Result<Reply, SyncError> {
    respond_with(items, message, &SyncParams::default())
}

/// Answers the other side's message: checks it ([`Message::validate`]), then answers each range
/// as the module docs say. Once the reply passes its budget, the remaining ranges are deferred:
/// each answered by our plain fingerprint (so the other side takes it up next round at the same
/// level), and past twice the budget all the rest by one fingerprint to the end of the key space.
/// A deferred range has no effect here, except that a `Want` is always honoured (it costs no
/// reply). The reply's message, if any, is valid and within the caps.
pub fn respond_with(
    items: &SyncItems,
    message: &Message,
    params: &SyncParams,
) -> Result<Reply, SyncError> {
    message.validate()?;
    let mut out = Builder::new();
    let mut send = Vec::new();
    let mut want = Vec::new();
    let mut lower = Bound::START;
    let mut state = State::Answering { answered: false };
    let mut cursor: Option<(Bound, Pos)> = None;
    for range in &message.ranges {
        let upper = *range.upper();
        // Ranges follow each other: the last range's end is often this one's start.
        let mut span = || {
            let from = match cursor {
                Some((bound, pos)) if bound == lower => pos,
                _ => items.seek(&lower),
            };
            let to = items.seek_from(from, &upper);
            cursor = Some((upper, to));
            (from, to)
        };
        if let State::Answering { answered: true } = state
            && !matches!(range, Range::Skip { .. } | Range::Want { .. })
            && out.full(params)
        {
            state = State::Echoing;
        }
        if state == State::Echoing
            && !matches!(range, Range::Skip { .. } | Range::Want { .. })
            && !out.can_echo(params)
        {
            let (count, sum) = items.span(items.seek(&lower), items.end_pos());
            out.push(Range::Fingerprint {
                upper: Bound::END,
                count: count as u64,
                fingerprint: Fingerprint(sum),
            });
            state = State::Collapsed;
        }
        match range {
            Range::Skip { .. } => {
                if state != State::Collapsed {
                    out.skip(upper);
                }
            }
            Range::Want { keys, .. } => {
                send.extend(keys.iter().filter(|key| items.get(key).is_some()));
                if state != State::Collapsed {
                    out.skip(upper);
                }
            }
            _ if state == State::Collapsed => {}
            _ if state == State::Echoing => {
                let (from, to) = span();
                let (count, sum) = items.span(from, to);
                let same = matches!(range, Range::Fingerprint { count: c, fingerprint: f, .. }
                    if *c == count as u64 && f.0 == sum);
                if same {
                    out.skip(upper);
                } else {
                    out.push(Range::Fingerprint {
                        upper,
                        count: count as u64,
                        fingerprint: Fingerprint(sum),
                    });
                }
            }
            Range::Items { items: theirs, .. } => {
                state = State::Answering { answered: true };
                let (from, to) = span();
                let wanted = compare(items.entries(from, to), theirs, &mut send);
                if wanted.is_empty() {
                    out.skip(upper);
                } else {
                    want.extend_from_slice(&wanted);
                    out.push(Range::Want {
                        upper,
                        keys: wanted,
                    });
                }
            }
            Range::Fingerprint {
                count: their_count,
                fingerprint,
                ..
            } => {
                state = State::Answering { answered: true };
                let (from, to) = span();
                let (count, sum) = items.span(from, to);
                if count as u64 == *their_count && sum == fingerprint.0 {
                    out.skip(upper);
                } else if *their_count == 0 {
                    send.extend(items.entries(from, to).map(|e| e.key));
                    out.skip(upper);
                } else if count <= params.items_threshold {
                    out.push(Range::Items {
                        upper,
                        items: items.entries(from, to).map(|e| (e.key, e.seq)).collect(),
                    });
                } else if *their_count <= params.items_threshold as u64 {
                    // They hold few: our fingerprint back makes them list theirs.
                    out.push(Range::Fingerprint {
                        upper,
                        count: count as u64,
                        fingerprint: Fingerprint(sum),
                    });
                } else {
                    for (upper, count, sum) in items.split(from, to, count, upper, params.branching)
                    {
                        out.push(Range::Fingerprint {
                            upper,
                            count: count as u64,
                            fingerprint: Fingerprint(sum),
                        });
                    }
                }
            }
        }
        lower = upper;
    }
    Ok(Reply {
        message: out.finish(),
        send,
        want,
    })
}

/// Where [`respond_with`] is in its reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Answering ranges in full; `answered` once one has been (a reply always answers one).
    Answering { answered: bool },
    /// Over the budget: answering each range with a plain fingerprint.
    Echoing,
    /// Over twice the budget: the rest is one fingerprint, already written.
    Collapsed,
}

/// Walks our entries and theirs of one range together: pushes to `send` the keys we hold newer
/// or they lack, and returns the keys they hold newer or we lack.
fn compare<'a>(
    ours: impl Iterator<Item = &'a Entry>,
    theirs: &[(Key, u64)],
    send: &mut Vec<Key>,
) -> Vec<Key> {
    let mut wanted = Vec::new();
    let mut theirs = theirs.iter().peekable();
    for entry in ours {
        while let Some((key, _)) = theirs.next_if(|(key, _)| *key < entry.key) {
            wanted.push(*key);
        }
        match theirs.next_if(|(key, _)| *key == entry.key) {
            Some((_, seq)) if *seq > entry.seq => wanted.push(entry.key),
            Some((_, seq)) if *seq < entry.seq => send.push(entry.key),
            Some(_) => {}
            None => send.push(entry.key),
        }
    }
    wanted.extend(theirs.map(|(key, _)| *key));
    wanted
}

/// Bytes kept free by [`Builder::can_echo`]: two plain fingerprints with their pending skips
/// (at most 165 bytes each) and a final skip.
const ECHO_RESERVE: usize = 512;

/// Collects a reply's ranges, merging neighbouring skips and counting encoded bytes.
struct Builder {
    ranges: Vec<Range>,
    pending_skip: Option<Bound>,
    previous: Previous,
    /// Encoded bytes of `ranges`, plus the header (version and a two-byte range count).
    bytes: usize,
    /// Items and keys listed in `ranges`.
    listed: usize,
}

impl Builder {
    fn new() -> Self {
        Self {
            ranges: Vec::new(),
            pending_skip: None,
            previous: Previous::new(),
            bytes: 3,
            listed: 0,
        }
    }

    fn skip(&mut self, upper: Bound) {
        self.pending_skip = Some(upper);
    }

    fn push(&mut self, range: Range) {
        if let Some(upper) = self.pending_skip.take() {
            self.append(Range::Skip { upper });
        }
        self.append(range);
    }

    fn append(&mut self, range: Range) {
        self.bytes += range_cost(&mut self.previous, &range);
        self.listed += range_len(&range);
        self.ranges.push(range);
    }

    /// Whether answering one more range could break a cap: the largest answer to one range is
    /// a pending skip plus `branching` fingerprints, or a list of [`MAX_ITEMS_PER_RANGE`] keys;
    /// one more fingerprint for the deferred rest must still fit.
    fn full(&self, params: &SyncParams) -> bool {
        self.bytes > params.reply_budget
            || self.ranges.len() + params.branching + 3 > MAX_RANGES
            || self.listed + MAX_ITEMS_PER_RANGE > MAX_ITEMS
    }

    /// Whether one more plain fingerprint still leaves room for the final one to the end, within
    /// twice the budget and the caps.
    fn can_echo(&self, params: &SyncParams) -> bool {
        let limit = (2 * params.reply_budget).min(MAX_MESSAGE_BYTES);
        self.bytes + ECHO_RESERVE <= limit && self.ranges.len() + 4 <= MAX_RANGES
    }

    fn finish(mut self) -> Option<Message> {
        if self.ranges.is_empty() {
            return None;
        }
        if let Some(upper) = self.pending_skip.take() {
            self.ranges.push(Range::Skip { upper });
        }
        Some(Message {
            ranges: self.ranges,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The index.

/// Most entries in one chunk of [`SyncItems`]; a fuller chunk is cut in two.
const CHUNK_MAX: usize = 256;
/// Entries per chunk when built from a list, leaving room to insert.
const CHUNK_FILL: usize = 192;
/// A chunk left with fewer entries after a removal is merged into a neighbour if they fit.
const CHUNK_MIN: usize = 48;
/// Cut windows up to this many ranks wide are searched key by key, wider ones by runs.
const SCAN_WINDOW: usize = 64;
/// Ranks a cut may always move to a shorter separator (unless that is over half a part, rounded).
/// With an eighth of a part alone, a part of under 8 items could not move at all, and most cuts
/// of a range with a handful of pairs per uploader fell between two keys of one uploader: 33-byte
/// bounds where 1–3 bytes do.
const MIN_CUT_WINDOW: usize = 2;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    seq: u64,
}

impl Entry {
    fn hash(&self) -> u128 {
        Fingerprint::of_item(&self.key, self.seq).0
    }
}

/// A run of consecutive entries with their prefix sums.
#[derive(Clone, Debug)]
struct Chunk {
    /// The chunk's last key, kept here so that searches over chunks read one array.
    last: Key,
    /// Sorted by key, never empty.
    entries: Vec<Entry>,
    /// `prefix[i]` = wrapping sum of the hashes of `entries[..i]`; one longer than `entries`.
    prefix: Vec<u128>,
}

impl Chunk {
    fn new(entries: Vec<Entry>) -> Self {
        let mut prefix = Vec::with_capacity(entries.len() + 1);
        let mut sum = 0u128;
        prefix.push(sum);
        for entry in &entries {
            sum = sum.wrapping_add(entry.hash());
            prefix.push(sum);
        }
        Self {
            last: entries.last().map(|e| e.key).unwrap_or([0u8; KEY_BYTES]),
            entries,
            prefix,
        }
    }

    /// Wrapping sum of all the entries' hashes.
    fn sum(&self) -> u128 {
        self.prefix.last().copied().unwrap_or(0)
    }

    /// Wrapping sum of the hashes of `entries[from..to]`.
    fn sum_between(&self, from: usize, to: usize) -> u128 {
        match (self.prefix.get(from), self.prefix.get(to)) {
            (Some(a), Some(b)) => b.wrapping_sub(*a),
            _ => 0,
        }
    }

    /// Adds `delta` (wrapping) to the prefix sums from index `from` on.
    fn shift(&mut self, from: usize, delta: u128) {
        for sum in self.prefix.iter_mut().skip(from) {
            *sum = sum.wrapping_add(delta);
        }
    }
}

/// A position in [`SyncItems`]: entry `off` of chunk `chunk`; the end is `(chunks.len(), 0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    chunk: usize,
    off: usize,
}

/// The items one side reconciles: `(key, seq)` sorted by key, one per pair, with cached sums of
/// their hashes and a running total. Kept in step with the store by the caller:
/// [`SyncItems::insert`] when a receipt is applied, [`SyncItems::remove`] when one is evicted.
///
/// Sorted chunks of up to 256 entries, each with the prefix sums of its hashes: lookups are two
/// binary searches; inserts and removals add a move and a prefix update of at most 256 entries;
/// a range's fingerprint is two lookups plus one addition per chunk it covers; the whole set's is
/// the running total. 88 bytes per item (key, seq, prefix sum) when built from a list, up to about
/// twice that in chunks that inserts have grown, plus 9–18 bytes per item for the set of their
/// [`ShortId`]s and about 330 KB for the journal of the latest [`JOURNAL_CAPACITY`] changes,
/// which gossip announces ([`SyncItems::changed_since`], [`wanted`], [`resolve`]).
#[derive(Clone, Debug, Default)]
pub struct SyncItems {
    /// Sorted, disjoint, each non-empty.
    chunks: Vec<Chunk>,
    len: usize,
    total: u128,
    /// The [`ShortId`] of every item, so an announced item is known held without its key.
    ids: HashSet<ShortId>,
    /// The latest changes, oldest first, at most [`JOURNAL_CAPACITY`]: what gossip announces.
    journal: VecDeque<Change>,
    /// Changes made since the index was built: the mark of the next change.
    changes: u64,
}

/// One change of [`SyncItems`]: `key` went to `seq`.
#[derive(Clone, Copy, Debug)]
struct Change {
    mark: u64,
    key: Key,
    seq: u64,
}

impl FromIterator<(Key, u64)> for SyncItems {
    /// Builds the index in one pass after a sort; of repeated keys the highest seq is kept.
    fn from_iter<I: IntoIterator<Item = (Key, u64)>>(iter: I) -> Self {
        let mut all: Vec<(Key, u64)> = iter.into_iter().collect();
        all.sort_unstable();
        // Sorted by key then seq: keep the last (highest seq) of each key.
        let mut entries: Vec<Entry> = Vec::with_capacity(all.len());
        for (index, (key, seq)) in all.iter().enumerate() {
            if all.get(index + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            entries.push(Entry {
                key: *key,
                seq: *seq,
            });
        }
        let chunks: Vec<Chunk> = entries
            .chunks(CHUNK_FILL)
            .map(|part| Chunk::new(part.to_vec()))
            .collect();
        let total = chunks.iter().fold(0u128, |t, c| t.wrapping_add(c.sum()));
        // Each item's hash is the difference of two neighbouring prefix sums: no second hashing.
        let ids = chunks
            .iter()
            .flat_map(|c| c.prefix.windows(2).map(|w| short(w[1].wrapping_sub(w[0]))))
            .collect();
        Self {
            len: entries.len(),
            chunks,
            total,
            ids,
            journal: VecDeque::new(),
            changes: 0,
        }
    }
}

impl Extend<(Key, u64)> for SyncItems {
    fn extend<I: IntoIterator<Item = (Key, u64)>>(&mut self, iter: I) {
        for (key, seq) in iter {
            self.insert(key, seq);
        }
    }
}

impl SyncItems {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` or would: the first whose last key is at least `key`, else the
    /// last chunk.
    fn chunk_for(&self, key: &Key) -> usize {
        self.chunks
            .partition_point(|c| c.last < *key)
            .min(self.chunks.len().saturating_sub(1))
    }

    /// The seq held for `key`.
    pub fn get(&self, key: &Key) -> Option<u64> {
        let chunk = self.chunks.get(self.chunk_for(key))?;
        let at = chunk.entries.binary_search_by(|e| e.key.cmp(key)).ok()?;
        chunk.entries.get(at).map(|e| e.seq)
    }

    /// Records `seq` for `key` unless a seq at least as high is held. Returns whether it changed.
    pub fn insert(&mut self, key: Key, seq: u64) -> bool {
        let entry = Entry { key, seq };
        let index = self.chunk_for(&key);
        let Some(chunk) = self.chunks.get_mut(index) else {
            self.total = entry.hash();
            self.len = 1;
            self.chunks.push(Chunk::new(vec![entry]));
            self.ids.insert(short(self.total));
            self.note(key, seq);
            return true;
        };
        match chunk.entries.binary_search_by(|e| e.key.cmp(&key)) {
            Ok(at) => {
                let Some(held) = chunk.entries.get_mut(at) else {
                    return false;
                };
                if held.seq >= seq {
                    return false;
                }
                let (old, new) = (held.hash(), entry.hash());
                *held = entry;
                let delta = new.wrapping_sub(old);
                chunk.shift(at + 1, delta);
                self.total = self.total.wrapping_add(delta);
                self.ids.remove(&short(old));
                self.ids.insert(short(new));
                self.note(key, seq);
                true
            }
            Err(at) => {
                let hash = entry.hash();
                if chunk.entries.len() == chunk.entries.capacity() {
                    // Grow once to the most a chunk holds, not by doubling past it.
                    let room = (CHUNK_MAX + 1).saturating_sub(chunk.entries.len()).max(1);
                    chunk.entries.reserve_exact(room);
                    chunk.prefix.reserve_exact(room);
                }
                chunk.entries.insert(at, entry);
                let before = chunk.prefix.get(at).copied().unwrap_or(0);
                chunk.prefix.insert(at + 1, before.wrapping_add(hash));
                chunk.shift(at + 2, hash);
                if at + 1 == chunk.entries.len() {
                    chunk.last = key;
                }
                self.total = self.total.wrapping_add(hash);
                self.len += 1;
                if chunk.entries.len() > CHUNK_MAX {
                    let tail = Chunk::new(chunk.entries.split_off(CHUNK_MAX / 2));
                    chunk.prefix.truncate(CHUNK_MAX / 2 + 1);
                    if let Some(last) = chunk.entries.last() {
                        chunk.last = last.key;
                    }
                    self.chunks.insert(index + 1, tail);
                }
                self.ids.insert(short(hash));
                self.note(key, seq);
                true
            }
        }
    }

    /// Journals a change, dropping the oldest past [`JOURNAL_CAPACITY`].
    fn note(&mut self, key: Key, seq: u64) {
        if self.journal.len() == JOURNAL_CAPACITY {
            self.journal.pop_front();
        }
        self.journal.push_back(Change {
            mark: self.changes,
            key,
            seq,
        });
        self.changes += 1;
    }

    /// The mark of the next change: [`SyncItems::changed_since`] a mark taken now lists the
    /// changes made after now.
    pub fn mark(&self) -> u64 {
        self.changes
    }

    /// Whether the journal still holds every change made at or after `mark`, so
    /// [`SyncItems::changed_since`] lists them all (else some were dropped: rebuild from the
    /// store).
    pub fn journal_covers(&self, mark: u64) -> bool {
        mark >= self.changes
            || self.journal.len() < JOURNAL_CAPACITY
            || self.journal.front().is_some_and(|c| c.mark <= mark)
    }

    /// Whether an item of this [`ShortId`] is held (up to collisions of 64-bit ids, which cost
    /// one receipt pushed in vain, never a receipt missed: reconciliation follows).
    pub fn holds(&self, id: ShortId) -> bool {
        self.ids.contains(&id)
    }

    /// Items changed at or after `mark` and still held at that seq, newest first, at most `max`
    /// (and at most the [`JOURNAL_CAPACITY`] latest changes): what gossip announces.
    pub fn changed_since(&self, mark: u64, max: usize) -> Vec<(ShortId, Key)> {
        let mut out = Vec::new();
        for change in self.journal.iter().rev() {
            if change.mark < mark || out.len() >= max {
                break;
            }
            // A key changed twice appears twice; only its current seq is announced.
            if self.get(&change.key) == Some(change.seq) {
                out.push((short_id(&change.key, change.seq), change.key));
            }
        }
        out
    }

    /// Forgets `key` (its receipt was evicted). Returns the seq that was held.
    pub fn remove(&mut self, key: &Key) -> Option<u64> {
        let index = self.chunk_for(key);
        let chunk = self.chunks.get_mut(index)?;
        let at = chunk.entries.binary_search_by(|e| e.key.cmp(key)).ok()?;
        let entry = chunk.entries.remove(at);
        let hash = chunk.sum_between(at, at + 1);
        self.ids.remove(&short(hash));
        chunk.prefix.remove(at + 1);
        chunk.shift(at + 1, hash.wrapping_neg());
        if let Some(last) = chunk.entries.last() {
            chunk.last = last.key;
        }
        self.total = self.total.wrapping_sub(hash);
        self.len -= 1;
        let remaining = chunk.entries.len();
        if remaining == 0 {
            self.chunks.remove(index);
        } else if remaining < CHUNK_MIN {
            self.merge_small(index);
        }
        Some(entry.seq)
    }

    /// Merges chunk `index` into a neighbour when both fit in one.
    fn merge_small(&mut self, index: usize) {
        let fits = |a: usize, b: usize, chunks: &[Chunk]| match (chunks.get(a), chunks.get(b)) {
            (Some(a), Some(b)) => a.entries.len() + b.entries.len() <= CHUNK_MAX,
            _ => false,
        };
        let (left, right) = if fits(index, index + 1, &self.chunks) {
            (index, index + 1)
        } else if index > 0 && fits(index - 1, index, &self.chunks) {
            (index - 1, index)
        } else {
            return;
        };
        let absorbed = self.chunks.remove(right);
        if let Some(chunk) = self.chunks.get_mut(left) {
            let base = chunk.sum();
            chunk.entries.extend_from_slice(&absorbed.entries);
            chunk
                .prefix
                .extend(absorbed.prefix.iter().skip(1).map(|s| s.wrapping_add(base)));
            chunk.last = absorbed.last;
        }
    }

    /// Every item, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, u64)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.entries.iter().map(|e| (&e.key, e.seq)))
    }

    /// The count and fingerprint of the items with `lower ≤ key < upper`. The whole set's comes
    /// from the running total; any other range's from the chunk sums.
    pub fn fingerprint(&self, lower: &Bound, upper: &Bound) -> (u64, Fingerprint) {
        if *lower == Bound::START && upper.is_end() {
            return (self.len as u64, Fingerprint(self.total));
        }
        if upper <= lower {
            return (0, Fingerprint::EMPTY);
        }
        let from = self.seek(lower);
        let (count, sum) = self.span(from, self.seek_from(from, upper));
        (count as u64, Fingerprint(sum))
    }

    fn start_pos(&self) -> Pos {
        Pos { chunk: 0, off: 0 }
    }

    fn end_pos(&self) -> Pos {
        Pos {
            chunk: self.chunks.len(),
            off: 0,
        }
    }

    /// The position of the first item not below `bound`.
    fn seek(&self, bound: &Bound) -> Pos {
        self.seek_from(self.start_pos(), bound)
    }

    /// The position of the first item at or after `from` not below `bound`.
    fn seek_from(&self, from: Pos, bound: &Bound) -> Pos {
        let Some(prefix) = bound.as_prefix() else {
            return self.end_pos();
        };
        let skipped = from.chunk.min(self.chunks.len());
        let rest = self.chunks.get(skipped..).unwrap_or(&[]);
        let chunk = skipped + rest.partition_point(|c| below(&c.last, prefix));
        match self.chunks.get(chunk) {
            None => self.end_pos(),
            Some(c) => {
                let skip = if chunk == from.chunk { from.off } else { 0 };
                let entries = c.entries.get(skip..).unwrap_or(&[]);
                Pos {
                    chunk,
                    off: skip + entries.partition_point(|e| below(&e.key, prefix)),
                }
            }
        }
    }

    fn entry(&self, pos: Pos) -> Option<&Entry> {
        self.chunks.get(pos.chunk)?.entries.get(pos.off)
    }

    /// The position `by` items after `pos` (at most the end).
    fn advance(&self, mut pos: Pos, mut by: usize) -> Pos {
        while let Some(chunk) = self.chunks.get(pos.chunk) {
            let left = chunk.entries.len().saturating_sub(pos.off);
            if by < left {
                pos.off += by;
                return pos;
            }
            by -= left;
            pos = Pos {
                chunk: pos.chunk + 1,
                off: 0,
            };
        }
        self.end_pos()
    }

    /// Count and sum of the entries of chunk `chunk` from `from` to `to`.
    fn part(&self, chunk: usize, from: usize, to: usize) -> (usize, u128) {
        let Some(chunk) = self.chunks.get(chunk) else {
            return (0, 0);
        };
        let to = to.min(chunk.entries.len());
        let from = from.min(to);
        (to - from, chunk.sum_between(from, to))
    }

    /// Count and sum of the entries from `from` up to `to`.
    fn span(&self, from: Pos, to: Pos) -> (usize, u128) {
        if from >= to {
            return (0, 0);
        }
        if from.chunk == to.chunk {
            return self.part(from.chunk, from.off, to.off);
        }
        let (mut count, mut sum) = self.part(from.chunk, from.off, CHUNK_MAX + 1);
        for chunk in self.chunks.iter().take(to.chunk).skip(from.chunk + 1) {
            count += chunk.entries.len();
            sum = sum.wrapping_add(chunk.sum());
        }
        let (n, s) = self.part(to.chunk, 0, to.off);
        (count + n, sum.wrapping_add(s))
    }

    /// The entries from `from` up to `to`.
    fn entries(&self, from: Pos, to: Pos) -> impl Iterator<Item = &Entry> + '_ {
        let chunks = if from < to {
            self.chunks
                .get(from.chunk..=to.chunk.min(self.chunks.len().saturating_sub(1)))
                .unwrap_or(&[])
        } else {
            &[]
        };
        chunks.iter().enumerate().flat_map(move |(i, chunk)| {
            let index = from.chunk + i;
            let start = if index == from.chunk { from.off } else { 0 };
            let stop = if index == to.chunk {
                to.off
            } else {
                chunk.entries.len()
            };
            chunk.entries.get(start..stop).unwrap_or(&[]).iter()
        })
    }

    /// Cuts the `count` entries from `from` to `to` into up to `parts` ranges of about equal
    /// count, the last ending at `upper`. Each cut may move from its ideal rank by up to an
    /// eighth of a part, or [`MIN_CUT_WINDOW`] ranks if that is more (but no more than half a
    /// part, rounded), to where the separating prefix is shortest (the nearest such place).
    /// Returns each range's upper bound, count and sum.
    fn split(
        &self,
        from: Pos,
        to: Pos,
        count: usize,
        upper: Bound,
        parts: usize,
    ) -> Vec<(Bound, usize, u128)> {
        let parts = parts.min(count).max(1);
        // An eighth of a part; in small ranges at least two ranks (at most half a part), so that
        // a cut between two keys of one uploader can still move to the nearest change of uploader.
        let window = (count / (8 * parts)).max(((count + parts) / (2 * parts)).min(MIN_CUT_WINDOW));
        let mut out = Vec::with_capacity(parts);
        let mut start = from;
        let mut start_rank = 0usize;
        for part in 1..parts {
            let target = count * part / parts;
            let lowest = target.saturating_sub(window).max(start_rank + 1);
            let highest = (target + window).min(count - 1);
            if lowest > highest {
                continue;
            }
            let target = target.clamp(lowest, highest);
            let found = if highest - lowest <= SCAN_WINDOW {
                self.cut_by_scan(start, start_rank, lowest, highest, target)
            } else {
                self.cut_by_runs(start, start_rank, lowest, highest, target)
            };
            let Some((rank, cut, bound)) = found else {
                break;
            };
            let (n, sum) = self.span(start, cut);
            out.push((bound, n, sum));
            start = cut;
            start_rank = rank;
        }
        let (n, sum) = self.span(start, to);
        out.push((upper, n, sum));
        out
    }

    /// The cut at rank `lowest..=highest` (ranks counted from `start`, at `start_rank`) whose
    /// separating prefix is shortest, nearest `target` among those, by looking at each.
    fn cut_by_scan(
        &self,
        start: Pos,
        start_rank: usize,
        lowest: usize,
        highest: usize,
        target: usize,
    ) -> Option<(usize, Pos, Bound)> {
        let mut pos = self.advance(start, lowest - 1 - start_rank);
        let mut before = self.entry(pos)?.key;
        let mut best: Option<(usize, usize, usize, Pos)> = None; // (len, distance, rank, pos)
        for rank in lowest..=highest {
            pos = self.advance(pos, 1);
            let key = self.entry(pos)?.key;
            let len = separator_len(&before, &key);
            if best.is_none_or(|(l, d, _, _)| (len, rank.abs_diff(target)) < (l, d)) {
                best = Some((len, rank.abs_diff(target), rank, pos));
            }
            before = key;
        }
        let (len, _, rank, pos) = best?;
        let key = self.entry(pos)?.key;
        Some((rank, pos, Bound::prefix(key.get(..len)?)?))
    }

    /// As [`SyncItems::cut_by_scan`], for wide windows, with a few searches: every key in the
    /// window shares the first `l` bytes of its two ends, so the shortest separators are `l + 1`
    /// bytes, where byte `l` changes; the ones nearest `target` are the two ends of the run of
    /// keys that share the first `l + 1` bytes of the key at `target`.
    fn cut_by_runs(
        &self,
        start: Pos,
        start_rank: usize,
        lowest: usize,
        highest: usize,
        target: usize,
    ) -> Option<(usize, Pos, Bound)> {
        let at = |rank: usize| self.advance(start, rank - start_rank);
        let first = self.entry(at(lowest - 1))?.key;
        let last = self.entry(at(highest))?.key;
        let ideal = self.entry(at(target))?.key;
        let len = separator_len(&first, &last);
        let prefix = ideal.get(..len)?;
        let run_start = self.seek_from(start, &Bound::prefix(prefix)?);
        let run_end = self.seek_from(run_start, &successor(prefix));
        let (rank, pos) = [run_start, run_end]
            .into_iter()
            .map(|pos| (start_rank + self.span(start, pos).0, pos))
            .filter(|(rank, _)| (lowest..=highest).contains(rank))
            .min_by_key(|(rank, _)| rank.abs_diff(target))?;
        let before = self.entry(at(rank - 1))?.key;
        let after = self.entry(pos)?.key;
        let len = separator_len(&before, &after);
        Some((rank, pos, Bound::prefix(after.get(..len)?)?))
    }
}

/// The least bound above every key that starts with `prefix`: the prefix without its trailing
/// 0xff bytes, last byte plus one; the end if nothing is left.
fn successor(prefix: &[u8]) -> Bound {
    let kept = prefix.len() - prefix.iter().rev().take_while(|b| **b == 0xff).count();
    match prefix.get(..kept) {
        Some([head @ .., last]) => {
            let mut next = head.to_vec();
            next.push(last + 1);
            Bound::prefix(&next).unwrap_or(Bound::END)
        }
        _ => Bound::END,
    }
}

/// Whether `key` sorts below `prefix`; the first eight bytes compared as one integer, since keys
/// of different uploaders differ there.
fn below(key: &Key, prefix: &[u8]) -> bool {
    if let (Some(head), Some(other)) = (key.first_chunk::<8>(), prefix.first_chunk::<8>()) {
        let (a, b) = (u64::from_be_bytes(*head), u64::from_be_bytes(*other));
        if a != b {
            return a < b;
        }
    }
    key.as_slice() < prefix
}

/// Length of the shortest prefix of `next` that is above `before` (`before < next`).
fn separator_len(before: &Key, next: &Key) -> usize {
    let shared = before.iter().zip(next).take_while(|(a, b)| a == b).count();
    (shared + 1).min(KEY_BYTES)
}

// ---------------------------------------------------------------------------------------------
// The wire format.

/// The last key or bound prefix written (or read) in a message, to which the next is relative.
struct Previous {
    bytes: Key,
    len: usize,
}

impl Previous {
    fn new() -> Self {
        Self {
            bytes: [0u8; KEY_BYTES],
            len: 0,
        }
    }

    fn shared_with(&self, next: &[u8]) -> usize {
        self.bytes[..self.len]
            .iter()
            .zip(next)
            .take_while(|(a, b)| a == b)
            .count()
    }

    fn set(&mut self, next: &[u8]) {
        let len = next.len().min(KEY_BYTES);
        self.bytes[..len].copy_from_slice(&next[..len]);
        self.len = len;
    }

    /// Encoded size of `next` after this, and makes it the previous.
    fn cost(&mut self, next: &[u8]) -> usize {
        let shared = self.shared_with(next);
        let suffix = next.len() - shared;
        self.set(next);
        1 + varint_len(suffix as u64) + suffix
    }

    /// `next` as (shared length, suffix), and makes it the previous.
    fn compress<'a>(&mut self, next: &'a [u8]) -> WirePrefix<'a> {
        let shared = self.shared_with(next);
        self.set(next);
        WirePrefix {
            shared: shared as u8,
            suffix: next.get(shared..).unwrap_or(&[]),
        }
    }

    /// Expands a compressed prefix of at most [`KEY_BYTES`] bytes, and makes it the previous.
    fn expand(&mut self, wire: &WirePrefix<'_>) -> Result<(Key, usize), &'static str> {
        let shared = usize::from(wire.shared);
        if shared > self.len {
            return Err("it shares more bytes than the one before it has");
        }
        let len = shared + wire.suffix.len();
        if len > KEY_BYTES {
            return Err("it is longer than 64 bytes");
        }
        let mut out = [0u8; KEY_BYTES];
        out[..shared].copy_from_slice(&self.bytes[..shared]);
        out[shared..len].copy_from_slice(wire.suffix);
        self.set(&out[..len]);
        Ok((out, len))
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

fn bound_cost(previous: &mut Previous, bound: &Bound) -> usize {
    match bound.as_prefix() {
        None => 1,
        Some(prefix) => 1 + previous.cost(prefix),
    }
}

/// Encoded size of one range, advancing `previous` as the encoder does.
fn range_cost(previous: &mut Previous, range: &Range) -> usize {
    let head = 1 + bound_cost(previous, range.upper());
    head + match range {
        Range::Skip { .. } => 0,
        Range::Fingerprint { count, .. } => varint_len(*count) + 16,
        Range::Items { items, .. } => {
            varint_len(items.len() as u64)
                + items
                    .iter()
                    .map(|(key, seq)| previous.cost(key) + varint_len(*seq))
                    .sum::<usize>()
        }
        Range::Want { keys, .. } => {
            varint_len(keys.len() as u64) + keys.iter().map(|key| previous.cost(key)).sum::<usize>()
        }
    }
}

fn wire_bound<'a>(previous: &mut Previous, bound: &'a Bound) -> WireBound<'a> {
    match bound.as_prefix() {
        None => WireBound::End,
        Some(prefix) => WireBound::Prefix(previous.compress(prefix)),
    }
}

fn from_wire(wire: WireMessage<'_>) -> Result<Message, SyncError> {
    if wire.ranges.declared > MAX_RANGES {
        return Err(SyncError::TooManyRanges {
            count: wire.ranges.declared,
            max: MAX_RANGES,
        });
    }
    let mut total = 0usize;
    for (index, range) in wire.ranges.items.iter().enumerate() {
        let declared = match range {
            WireRange::Items { items, .. } => items.declared,
            WireRange::Want { keys, .. } => keys.declared,
            WireRange::Skip { .. } | WireRange::Fingerprint { .. } => 0,
        };
        if declared > MAX_ITEMS_PER_RANGE {
            return Err(SyncError::TooManyItemsInRange {
                range: index,
                count: declared,
                max: MAX_ITEMS_PER_RANGE,
            });
        }
        total += declared;
    }
    if total > MAX_ITEMS {
        return Err(SyncError::TooManyItems {
            count: total,
            max: MAX_ITEMS,
        });
    }
    let mut previous = Previous::new();
    let mut ranges = Vec::with_capacity(wire.ranges.items.len());
    for (index, range) in wire.ranges.items.iter().enumerate() {
        let bad = |reason| SyncError::BadPrefix {
            range: index,
            reason,
        };
        let upper = match range {
            WireRange::Skip { upper }
            | WireRange::Fingerprint { upper, .. }
            | WireRange::Items { upper, .. }
            | WireRange::Want { upper, .. } => match upper {
                WireBound::End => Bound::END,
                WireBound::Prefix(prefix) => {
                    let (bytes, len) = previous.expand(prefix).map_err(bad)?;
                    Bound::prefix(&bytes[..len]).ok_or(bad("it is longer than 64 bytes"))?
                }
            },
        };
        let mut key = |wire: &WirePrefix<'_>| -> Result<Key, SyncError> {
            match previous.expand(wire).map_err(bad)? {
                (key, KEY_BYTES) => Ok(key),
                _ => Err(bad("a key must be 64 bytes")),
            }
        };
        ranges.push(match range {
            WireRange::Skip { .. } => Range::Skip { upper },
            WireRange::Fingerprint {
                count, fingerprint, ..
            } => Range::Fingerprint {
                upper,
                count: *count,
                fingerprint: Fingerprint::from_bytes(*fingerprint),
            },
            WireRange::Items { items, .. } => Range::Items {
                upper,
                items: items
                    .items
                    .iter()
                    .map(|(wire, seq)| Ok((key(wire)?, *seq)))
                    .collect::<Result<_, SyncError>>()?,
            },
            WireRange::Want { keys, .. } => Range::Want {
                upper,
                keys: keys.items.iter().map(&mut key).collect::<Result<_, _>>()?,
            },
        });
    }
    Ok(Message { ranges })
}

#[derive(Serialize, Deserialize)]
struct WireMessage<'a> {
    version: u8,
    #[serde(borrow)]
    ranges: Capped<WireRange<'a>, MAX_RANGES>,
}

#[derive(Serialize, Deserialize)]
enum WireRange<'a> {
    Skip {
        #[serde(borrow)]
        upper: WireBound<'a>,
    },
    Fingerprint {
        #[serde(borrow)]
        upper: WireBound<'a>,
        count: u64,
        fingerprint: [u8; 16],
    },
    Items {
        #[serde(borrow)]
        upper: WireBound<'a>,
        #[serde(borrow)]
        items: Capped<(WirePrefix<'a>, u64), MAX_ITEMS_PER_RANGE>,
    },
    Want {
        #[serde(borrow)]
        upper: WireBound<'a>,
        #[serde(borrow)]
        keys: Capped<WirePrefix<'a>, MAX_ITEMS_PER_RANGE>,
    },
}

#[derive(Serialize, Deserialize)]
enum WireBound<'a> {
    End,
    Prefix(#[serde(borrow)] WirePrefix<'a>),
}

/// A key or bound prefix: the first `shared` bytes of the previous one written, then `suffix`.
#[derive(Serialize, Deserialize)]
struct WirePrefix<'a> {
    shared: u8,
    #[serde(borrow)]
    suffix: &'a [u8],
}

/// A list that keeps at most `N` elements when decoded: the declared length is read before any
/// allocation, and elements past `N` are decoded (each consumes input) and dropped, so the
/// caller can refuse the list with its true length.
struct Capped<T, const N: usize> {
    items: Vec<T>,
    declared: usize,
}

impl<T, const N: usize> Capped<T, N> {
    fn new(items: Vec<T>) -> Self {
        Self {
            declared: items.len(),
            items,
        }
    }
}

impl<T: Serialize, const N: usize> Serialize for Capped<T, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.items)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T, const N: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for CappedVisitor<T, N> {
            type Value = Capped<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {N} elements")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                let mut items = Vec::with_capacity(hint.min(N));
                let mut seen = 0usize;
                while let Some(item) = seq.next_element::<T>()? {
                    seen += 1;
                    if items.len() < N {
                        items.push(item);
                    }
                }
                Ok(Capped {
                    items,
                    declared: seen.max(hint),
                })
            }
        }

        deserializer.deserialize_seq(CappedVisitor::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod tests;
