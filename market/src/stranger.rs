//! Strangers' credit: one allowance per uploader shared by every peer that has no standing and
//! has never signed a receipt for it, instead of a fresh credit window for every identity.
//!
//! A credit window alone is a gift to each new key: a peer that never signs takes a window's
//! worth from every uploader, then makes a new key and takes another (whitewashing). Here the
//! bytes an uploader sends to such strangers, and that no receipt covers, are drawn from one
//! allowance of `capacity` bytes. They come back in two ways:
//! - when the stranger signs a receipt it stops being a stranger ([`StrangerCredit::graduate`]):
//!   everything it drew is returned, so an honest newcomer holds pool room only until its first
//!   receipt;
//! - after `write_off_ms` unsigned, bytes are written off ([`StrangerCredit::expire`]): the
//!   allowance is refilled and the caller forgives that much of the stranger's debt, so a peer
//!   that never signs is neither served faster by taking a new key nor shut out for good by
//!   keeping its old one.
//!
//! No stranger holds more than a `share` of it, so one peer that never signs cannot hold it
//! all; and a stranger with nothing out may make its first draw beyond the capacity (up to one
//! share beyond it, in all), so that an honest newcomer gets its first chunk, signs for it and
//! leaves the pool even while non-signers hold the rest. A peer whose draws were all written off counts as having nothing
//! out again, whether it kept its key or took a new one.
//!
//! So non-signers, with one key or a thousand, get at most `capacity + share` per
//! `write_off_ms` from an uploader, all together. (Before, each new key was worth a window at
//! every uploader, without bound.) Within that bound, many keys at once can take more of the
//! allowance than one: up to `(capacity + share) / share` times what a single non-signing key
//! gets while it is alone. Pure state: the caller passes the clock; no I/O.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// One uploader's allowance for strangers. `K` names a peer (a `PeerId` in the node, an index
/// in the simulator).
#[derive(Debug, Clone)]
pub struct StrangerCredit<K> {
    capacity: u64,
    share: u64,
    write_off_ms: u64,
    /// Bytes drawn and not yet returned or written off, oldest first.
    draws: VecDeque<Draw<K>>,
    /// The sum of `draws`, per peer and in all.
    by_peer: HashMap<K, u64>,
    outstanding: u64,
}

#[derive(Debug, Clone, Copy)]
struct Draw<K> {
    peer: K,
    at_ms: u64,
    bytes: u64,
}

impl<K: Copy + Eq + Hash> StrangerCredit<K> {
    /// An allowance of `capacity` bytes, of which a stranger holds at most `share` (and one
    /// with nothing out may draw beyond the capacity, up to one share beyond it in all), each
    /// draw written off after `write_off_ms`.
    pub fn new(capacity: u64, share: u64, write_off_ms: u64) -> Self {
        Self {
            capacity,
            share,
            write_off_ms,
            draws: VecDeque::new(),
            by_peer: HashMap::new(),
            outstanding: 0,
        }
    }

    /// The allowance, without what strangers with nothing out may draw beyond it.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The most one stranger holds at a time.
    pub fn share(&self) -> u64 {
        self.share
    }

    /// The most strangers can have out at once: the allowance and one share beyond it.
    pub fn limit(&self) -> u64 {
        self.capacity.saturating_add(self.share)
    }

    /// Bytes drawn by strangers that are neither signed for nor written off.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Bytes `peer` has drawn that are neither signed for nor written off.
    pub fn drawn_by(&self, peer: &K) -> u64 {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }

    /// Writes off every draw made `write_off_ms` or more before `now_ms` and returns, per
    /// peer, the bytes written off: the caller forgives that much of each peer's debt.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(K, u64)> {
        let mut written_off: Vec<(K, u64)> = Vec::new();
        while let Some(draw) = self.draws.front().copied() {
            if now_ms.saturating_sub(draw.at_ms) < self.write_off_ms {
                break;
            }
            self.draws.pop_front();
            self.release(draw.peer, draw.bytes);
            match written_off.iter_mut().find(|(p, _)| *p == draw.peer) {
                Some((_, bytes)) => *bytes += draw.bytes,
                None => written_off.push((draw.peer, draw.bytes)),
            }
        }
        written_off
    }

    /// Whether `bytes` more for `peer` fit now (after [`StrangerCredit::expire`]): within its
    /// share, and within the allowance (or up to one share beyond it, if `peer` has nothing
    /// out).
    pub fn may_draw(&self, peer: &K, bytes: u64) -> bool {
        let held = self.drawn_by(peer);
        let limit = if held == 0 {
            self.limit()
        } else {
            self.capacity
        };
        held.saturating_add(bytes) <= self.share && self.outstanding.saturating_add(bytes) <= limit
    }

    /// Draws `bytes` for `peer` at `now_ms` if they fit; returns whether they did.
    pub fn draw(&mut self, peer: K, bytes: u64, now_ms: u64) -> bool {
        if !self.may_draw(&peer, bytes) {
            return false;
        }
        self.outstanding += bytes;
        *self.by_peer.entry(peer).or_insert(0) += bytes;
        match self.draws.back_mut() {
            // Consecutive draws by one peer in the same millisecond are one entry.
            Some(last) if last.peer == peer && last.at_ms == now_ms => last.bytes += bytes,
            _ => self.draws.push_back(Draw {
                peer,
                at_ms: now_ms,
                bytes,
            }),
        }
        true
    }

    /// `peer` signed a receipt: it is no longer a stranger, and what it drew returns to the
    /// allowance. Returns the bytes returned.
    pub fn graduate(&mut self, peer: &K) -> u64 {
        let Some(bytes) = self.by_peer.remove(peer) else {
            return 0;
        };
        self.outstanding -= bytes;
        self.draws.retain(|d| d.peer != *peer);
        bytes
    }

    fn release(&mut self, peer: K, bytes: u64) {
        self.outstanding -= bytes;
        if let Some(held) = self.by_peer.get_mut(&peer) {
            *held -= bytes;
            if *held == 0 {
                self.by_peer.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const CHUNK: u64 = 256 * 1024;

    #[test]
    fn strangers_share_one_allowance() {
        let mut pool = StrangerCredit::new(4 * MIB, 2 * MIB, 30_000);
        assert!(pool.draw(1u32, 2 * MIB, 0));
        // No stranger holds more than its share.
        assert!(!pool.draw(1, 1, 1));
        assert!(pool.draw(2, MIB, 10));
        assert!(pool.draw(3, MIB, 10));
        // The allowance is spent: a stranger with something out gets nothing more, one with
        // nothing out gets its share beyond it, and then nobody gets anything.
        assert!(!pool.may_draw(&2, 1));
        assert!(pool.draw(4, 2 * MIB, 20));
        assert!(!pool.may_draw(&5, 1));
        assert_eq!(pool.outstanding(), pool.limit());
        assert_eq!(pool.drawn_by(&1), 2 * MIB);
        assert_eq!(pool.drawn_by(&4), 2 * MIB);
    }

    #[test]
    fn a_newcomer_gets_its_first_chunk_while_non_signers_hold_the_rest() {
        let mut pool = StrangerCredit::new(MIB, CHUNK, 30_000);
        // Four non-signers hold the allowance, a chunk each.
        for peer in 0..4u32 {
            assert!(pool.draw(peer, CHUNK, 0));
        }
        assert!(!pool.may_draw(&0, CHUNK));
        // A newcomer gets a chunk beyond it, signs, and the next newcomer gets one.
        assert!(pool.draw(10, CHUNK, 1));
        assert!(!pool.draw(11, CHUNK, 2));
        assert_eq!(pool.graduate(&10), CHUNK);
        assert!(pool.draw(11, CHUNK, 3));
    }

    #[test]
    fn unsigned_draws_are_written_off_after_the_delay_in_order() {
        let mut pool = StrangerCredit::new(4 * MIB, 4 * MIB, 30_000);
        assert!(pool.draw(1u32, MIB, 0));
        assert!(pool.draw(2, MIB, 5_000));
        assert!(pool.draw(1, MIB, 6_000));
        assert!(pool.expire(29_999).is_empty());
        assert_eq!(pool.expire(30_000), vec![(1, MIB)]);
        assert_eq!(pool.outstanding(), 2 * MIB);
        assert_eq!(pool.expire(40_000), vec![(2, MIB), (1, MIB)]);
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(pool.drawn_by(&1), 0);
        assert!(pool.draw(3, 4 * MIB, 40_000));
    }

    #[test]
    fn a_signer_returns_what_it_drew_at_once() {
        let mut pool = StrangerCredit::new(4 * MIB, 2 * MIB, 30_000);
        assert!(pool.draw(1u32, 2 * MIB, 0));
        assert!(pool.draw(2, 2 * MIB, 1));
        assert!(pool.draw(1, 0, 2));
        assert_eq!(pool.graduate(&1), 2 * MIB);
        assert_eq!(pool.graduate(&1), 0);
        assert_eq!(pool.outstanding(), 2 * MIB);
        // Nothing of the graduate's is written off later.
        assert_eq!(pool.expire(100_000), vec![(2, 2 * MIB)]);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn non_signers_get_the_allowance_per_write_off_however_many_keys_they_use() {
        // Over ten minutes, a non-signer asking for a chunk every 100 ms gets about one share
        // per write-off delay with one key, and at most the allowance and one share per delay
        // with a new key for every chunk.
        let periods = 600_000 / 30_000 + 1;
        for new_key_every_chunk in [false, true] {
            let mut pool = StrangerCredit::new(4 * MIB, 2 * MIB, 30_000);
            let mut got = 0;
            let mut key = 1u32;
            for step in 0..6_000u64 {
                let now = step * 100;
                pool.expire(now);
                if new_key_every_chunk {
                    key += 1;
                }
                if pool.draw(key, CHUNK, now) {
                    got += CHUNK;
                }
            }
            assert!(got <= pool.limit() * periods, "{got}");
            if new_key_every_chunk {
                assert!(got >= pool.limit() * (periods - 1), "{got}");
            } else {
                assert!(got >= pool.share() * (periods - 1), "{got}");
                assert!(got <= pool.share() * periods, "{got}");
            }
        }
    }
}
