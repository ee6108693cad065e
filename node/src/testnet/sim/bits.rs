//! Chunk bitmaps: which chunks of a content a peer holds, or a download still wants.

/// A fixed-size bitmap of chunk indexes.
#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: u32,
}

impl Bits {
    /// `len` bits, all clear.
    pub fn empty(len: u32) -> Self {
        Self {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
        }
    }

    /// Whether it has no bits at all (not allocated yet).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: u32) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`.
    pub fn set(&mut self, i: u32) {
        if let Some(w) = self.words.get_mut((i / 64) as usize) {
            *w |= 1 << (i % 64);
        }
    }

    /// Clears bit `i`.
    pub fn clear(&mut self, i: u32) {
        if let Some(w) = self.words.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }

    /// The lowest set bit, if any.
    pub fn first(&self) -> Option<u32> {
        self.words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u32 * 64 + w.trailing_zeros())
            .filter(|&i| i < self.len)
    }

    /// The lowest bit set in both `self` and `other`, if any.
    pub fn first_common(&self, other: &Bits) -> Option<u32> {
        self.words
            .iter()
            .zip(&other.words)
            .enumerate()
            .find(|(_, (a, b))| **a & **b != 0)
            .map(|(i, (a, b))| i as u32 * 64 + (a & b).trailing_zeros())
            .filter(|&i| i < self.len)
    }
}

impl Bits {
    /// The `k`-th (from 0) bit set in `self` and in `other` (every bit, if `other` is `None`),
    /// and how many there are: `None` if `k` is not below that count.
    pub fn nth_common(&self, other: Option<&Bits>, k: u32) -> Option<u32> {
        let mut k = k;
        for (i, w) in self.words.iter().enumerate() {
            let mut w = *w & other.map_or(u64::MAX, |o| o.words.get(i).copied().unwrap_or(0));
            let ones = w.count_ones();
            if k >= ones {
                k -= ones;
                continue;
            }
            for _ in 0..k {
                w &= w - 1;
            }
            let bit = i as u32 * 64 + w.trailing_zeros();
            return (bit < self.len).then_some(bit);
        }
        None
    }

    /// How many bits are set in `self` and in `other` (every bit, if `other` is `None`).
    pub fn count_common(&self, other: Option<&Bits>) -> u32 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (w & other.map_or(u64::MAX, |o| o.words.get(i).copied().unwrap_or(0))).count_ones()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Bits;

    #[test]
    fn first_and_common() {
        let mut a = Bits::empty(130);
        let mut b = Bits::empty(130);
        assert_eq!(a.first(), None);
        a.set(129);
        a.set(70);
        b.set(129);
        assert_eq!(a.first(), Some(70));
        assert_eq!(a.first_common(&b), Some(129));
        a.clear(129);
        assert_eq!(a.first_common(&b), None);
        assert!(!a.get(130));
        a.set(3);
        a.set(129);
        assert_eq!(a.count_common(None), 3);
        assert_eq!(a.nth_common(None, 0), Some(3));
        assert_eq!(a.nth_common(None, 1), Some(70));
        assert_eq!(a.nth_common(None, 2), Some(129));
        assert_eq!(a.nth_common(None, 3), None);
        assert_eq!(a.count_common(Some(&b)), 1);
        assert_eq!(a.nth_common(Some(&b), 0), Some(129));
    }
}
