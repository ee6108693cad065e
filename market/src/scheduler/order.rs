//! The scheduler's service order: an order-statistic treap of waiting peers keyed by virtual
//! start tag, so the next peer, an insert, a removal and a peer's rank are all O(log n)
//! (expected). Nodes live in an arena with a free list, so once the arena has grown to the
//! largest number of waiting peers, nothing allocates.
//!
//! Treap priorities come from a splitmix64 stream seeded by the scheduler's configuration: they
//! only balance the tree (they never change the order of service), and they do not depend on the
//! keys, so no choice of requests by a peer can unbalance it.

use tally_ledger::PeerId;

/// No node.
const NIL: usize = usize::MAX;

/// A waiting peer's place in the order: smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    /// The virtual start tag of the peer's next request.
    pub tag: u128,
    /// `u64::MAX − weight`: at equal tags the heavier peer (the one owed most) goes first.
    pub inv_weight: u64,
    /// Insertion order, last tie-break: FIFO, and every key unique.
    pub seq: u64,
}

#[derive(Debug, Clone)]
struct Node {
    key: Key,
    peer: PeerId,
    prio: u64,
    left: usize,
    right: usize,
    size: usize,
}

/// An ordered set of `(Key, PeerId)` with ranks.
#[derive(Debug, Clone)]
pub(crate) struct OrderTree {
    nodes: Vec<Node>,
    free: Vec<usize>,
    root: usize,
    rng: u64,
}

impl OrderTree {
    pub fn new(seed: u64) -> Self {
        OrderTree {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            rng: seed,
        }
    }

    pub fn len(&self) -> usize {
        self.size(self.root)
    }

    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    /// The smallest key and its peer.
    pub fn first(&self) -> Option<(Key, PeerId)> {
        let mut t = self.root;
        let mut found = None;
        while let Some(node) = self.nodes.get(t) {
            found = Some((node.key, node.peer));
            t = node.left;
        }
        found
    }

    /// Inserts a key not already present.
    pub fn insert(&mut self, key: Key, peer: PeerId) {
        let prio = self.next_prio();
        let node = Node {
            key,
            peer,
            prio,
            left: NIL,
            right: NIL,
            size: 1,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                if let Some(slot) = self.nodes.get_mut(idx) {
                    *slot = node;
                }
                idx
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        let (left, right) = self.split(self.root, &key);
        let left = self.merge(left, idx);
        self.root = self.merge(left, right);
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &Key) -> bool {
        let before = self.len();
        self.root = self.remove_at(self.root, key);
        self.len() < before
    }

    /// How many keys are smaller than `key`.
    pub fn rank(&self, key: &Key) -> usize {
        let mut t = self.root;
        let mut rank = 0;
        while let Some(node) = self.nodes.get(t) {
            if node.key < *key {
                rank += self.size(node.left) + 1;
                t = node.right;
            } else {
                t = node.left;
            }
        }
        rank
    }

    /// Calls `f` on every peer in key order.
    pub fn for_each(&self, mut f: impl FnMut(Key, PeerId)) {
        let mut stack = Vec::new();
        let mut t = self.root;
        loop {
            while let Some(node) = self.nodes.get(t) {
                stack.push(t);
                t = node.left;
            }
            let Some(top) = stack.pop() else { break };
            let Some(node) = self.nodes.get(top) else {
                break;
            };
            f(node.key, node.peer);
            t = node.right;
        }
    }

    /// Slots in the arena, free ones included.
    #[cfg(test)]
    pub fn arena_len(&self) -> usize {
        self.nodes.len()
    }

    fn next_prio(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn size(&self, t: usize) -> usize {
        self.nodes.get(t).map_or(0, |n| n.size)
    }

    fn update(&mut self, t: usize) {
        let Some(node) = self.nodes.get(t) else {
            return;
        };
        let size = 1 + self.size(node.left) + self.size(node.right);
        if let Some(node) = self.nodes.get_mut(t) {
            node.size = size;
        }
    }

    fn left(&self, t: usize) -> usize {
        self.nodes.get(t).map_or(NIL, |n| n.left)
    }

    fn right(&self, t: usize) -> usize {
        self.nodes.get(t).map_or(NIL, |n| n.right)
    }

    fn set_left(&mut self, t: usize, left: usize) {
        if let Some(node) = self.nodes.get_mut(t) {
            node.left = left;
        }
        self.update(t);
    }

    fn set_right(&mut self, t: usize, right: usize) {
        if let Some(node) = self.nodes.get_mut(t) {
            node.right = right;
        }
        self.update(t);
    }

    /// Splits subtree `t` into keys `< key` and keys `>= key`.
    fn split(&mut self, t: usize, key: &Key) -> (usize, usize) {
        let Some(&Node {
            key: here,
            left,
            right,
            ..
        }) = self.nodes.get(t)
        else {
            return (NIL, NIL);
        };
        if here < *key {
            let (l, r) = self.split(right, key);
            self.set_right(t, l);
            (t, r)
        } else {
            let (l, r) = self.split(left, key);
            self.set_left(t, r);
            (l, t)
        }
    }

    /// Joins subtrees `a` and `b`, every key of `a` smaller than every key of `b`.
    fn merge(&mut self, a: usize, b: usize) -> usize {
        let (Some(na), Some(nb)) = (self.nodes.get(a), self.nodes.get(b)) else {
            return if a == NIL { b } else { a };
        };
        if na.prio > nb.prio {
            let r = self.merge(self.right(a), b);
            self.set_right(a, r);
            a
        } else {
            let l = self.merge(a, self.left(b));
            self.set_left(b, l);
            b
        }
    }

    fn remove_at(&mut self, t: usize, key: &Key) -> usize {
        let Some(&Node {
            key: here,
            left,
            right,
            ..
        }) = self.nodes.get(t)
        else {
            return NIL;
        };
        match key.cmp(&here) {
            std::cmp::Ordering::Less => {
                let l = self.remove_at(left, key);
                self.set_left(t, l);
                t
            }
            std::cmp::Ordering::Greater => {
                let r = self.remove_at(right, key);
                self.set_right(t, r);
                t
            }
            std::cmp::Ordering::Equal => {
                self.free.push(t);
                self.merge(left, right)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn key(tag: u128, seq: u64) -> Key {
        Key {
            tag,
            inv_weight: 0,
            seq,
        }
    }

    #[test]
    fn matches_a_btreeset_under_random_operations() {
        let mut tree = OrderTree::new(7);
        let mut model = BTreeSet::new();
        let mut x: u64 = 12345;
        for seq in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let tag = u128::from((x >> 33) % 500);
            if x.is_multiple_of(3) && !model.is_empty() {
                let first = *model.iter().next().unwrap();
                assert_eq!(tree.first().map(|(k, _)| k), Some(first));
                assert!(tree.remove(&first));
                model.remove(&first);
            } else if x % 3 == 1 {
                // Remove some existing key from the middle.
                if let Some(k) = model.range(key(tag, 0)..).next().copied() {
                    assert!(tree.remove(&k));
                    model.remove(&k);
                }
            } else {
                let k = key(tag, seq);
                tree.insert(k, PeerId([seq as u8; 32]));
                model.insert(k);
            }
            assert_eq!(tree.len(), model.len());
            if seq % 101 == 0 {
                let probe = key(tag, seq / 2);
                assert_eq!(tree.rank(&probe), model.range(..probe).count());
                let mut inorder = Vec::new();
                tree.for_each(|k, _| inorder.push(k));
                assert!(inorder.iter().copied().eq(model.iter().copied()));
            }
        }
        assert!(!tree.remove(&key(1_000, 0)));
        // The arena never grew beyond the largest set held.
        assert!(tree.nodes.len() <= 20_000);
    }
}
