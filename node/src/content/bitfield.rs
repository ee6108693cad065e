//! The set of chunks a node holds, as stored in a download's `have` file: one bit per chunk,
//! chunk 0 in the most significant bit of byte 0 (as BitTorrent's bitfield), `ceil(n / 8)`
//! bytes, spare bits zero.

/// A fixed-length set of chunk indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set over `len` chunks.
    pub(super) fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// Reads a bitfield over `len` chunks from its file bytes. The error says what is wrong.
    pub(super) fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, String> {
        let expected = len.div_ceil(8) as usize;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes where {len} chunks need {expected}",
                bytes.len()
            ));
        }
        if !len.is_multiple_of(8) {
            let spare = 0xffu8 >> (len % 8);
            if bytes.last().is_some_and(|last| last & spare != 0) {
                return Err("bits set past the last chunk".to_owned());
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Self {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// The file bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn mask(index: u32) -> u8 {
        0x80 >> (index % 8)
    }

    /// Whether `index` is in the set (false past the end).
    pub(super) fn get(&self, index: u32) -> bool {
        index < self.len && self.bytes[(index / 8) as usize] & Self::mask(index) != 0
    }

    /// Adds `index`; returns whether it was new. Indices past the end are ignored.
    pub(super) fn set(&mut self, index: u32) -> bool {
        if index >= self.len || self.get(index) {
            return false;
        }
        self.bytes[(index / 8) as usize] |= Self::mask(index);
        self.ones += 1;
        true
    }

    /// How many indices are in the set.
    pub(super) fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every index is in the set.
    pub(super) fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// The indices not in the set, in order.
    pub(super) fn missing(&self) -> Vec<u32> {
        (0..self.len).filter(|&i| !self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_msb_first_and_round_trip() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes(), &[0, 0]);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(b.missing(), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Bitfield::from_bytes(10, b.as_bytes()).unwrap(), b);
    }

    #[test]
    fn from_bytes_refuses_wrong_length_and_spare_bits() {
        assert!(Bitfield::from_bytes(10, &[0]).is_err());
        assert!(Bitfield::from_bytes(10, &[0, 0, 0]).is_err());
        assert!(Bitfield::from_bytes(10, &[0, 0x20]).is_err());
        assert!(Bitfield::from_bytes(0, &[]).unwrap().is_full());
        assert!(Bitfield::from_bytes(16, &[0xff, 0xff]).unwrap().is_full());
    }
}
