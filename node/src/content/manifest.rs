//! The manifest: a file's size and the BLAKE3 hash of each of its chunks. Its canonical postcard
//! bytes are the content's identity, so encoding is hand-written (infallible, pinned by tests to
//! equal postcard's) and decoding refuses anything but the one canonical form.

use serde::{Deserialize, Serialize};

use super::error::ManifestError;
use super::hash::{ChunkHash, ContentId};
use super::{CHUNK_SIZE, MANIFEST_VERSION, MAX_CHUNKS, MAX_MANIFEST_LEN};

/// What a content is: its size and its chunks' hashes. No file name, so the same bytes always
/// make the same manifest and the same [`ContentId`].
///
/// A `Manifest` value is always valid (version 1, chunk size [`CHUNK_SIZE`], as many chunks as
/// the size needs, at most [`MAX_CHUNKS`]): the constructors and the deserializer check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    version: u8,
    size: u64,
    chunk_size: u32,
    chunks: Vec<ChunkHash>,
}

/// The fields as they come off the wire, before they are checked.
#[derive(Deserialize)]
struct RawManifest {
    version: u8,
    size: u64,
    chunk_size: u32,
    chunks: Vec<ChunkHash>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = ManifestError;

    fn try_from(raw: RawManifest) -> Result<Self, Self::Error> {
        check_header(
            raw.version,
            raw.size,
            raw.chunk_size,
            raw.chunks.len() as u64,
        )?;
        Ok(Manifest {
            version: raw.version,
            size: raw.size,
            chunk_size: raw.chunk_size,
            chunks: raw.chunks,
        })
    }
}

/// Checks everything but the hashes themselves. Cheap, and done before the hashes are read.
fn check_header(version: u8, size: u64, chunk_size: u32, count: u64) -> Result<(), ManifestError> {
    if version != MANIFEST_VERSION {
        return Err(ManifestError::UnsupportedVersion(version));
    }
    if chunk_size != CHUNK_SIZE {
        return Err(ManifestError::WrongChunkSize {
            found: chunk_size,
            expected: CHUNK_SIZE,
        });
    }
    if count > u64::from(MAX_CHUNKS) {
        return Err(ManifestError::TooManyChunks {
            count,
            max: MAX_CHUNKS,
        });
    }
    let expected = size.div_ceil(u64::from(CHUNK_SIZE));
    if count != expected {
        return Err(ManifestError::ChunkCount {
            size,
            found: count,
            expected,
        });
    }
    Ok(())
}

/// Appends `value` as an unsigned LEB128 varint, as postcard writes integers.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl Manifest {
    /// The manifest of a file of `size` bytes whose chunks hash to `chunks`, in order.
    pub fn new(size: u64, chunks: Vec<ChunkHash>) -> Result<Self, ManifestError> {
        check_header(MANIFEST_VERSION, size, CHUNK_SIZE, chunks.len() as u64)?;
        Ok(Manifest {
            version: MANIFEST_VERSION,
            size,
            chunk_size: CHUNK_SIZE,
            chunks,
        })
    }

    /// The manifest of `bytes`, cut into chunks. For tests and small contents; files are
    /// imported by [`ContentStore::import`](super::ContentStore::import), which streams them.
    pub fn of_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let chunks = bytes
            .chunks(CHUNK_SIZE as usize)
            .map(ChunkHash::of)
            .collect();
        Self::new(bytes.len() as u64, chunks)
    }

    /// The format version (1).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size in bytes ([`CHUNK_SIZE`]).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The chunks' hashes, in file order.
    pub fn chunks(&self) -> &[ChunkHash] {
        &self.chunks
    }

    /// How many chunks the file has (0 for an empty file).
    pub fn chunk_count(&self) -> u32 {
        // At most MAX_CHUNKS, checked on construction.
        self.chunks.len() as u32
    }

    /// The hash of chunk `index`, if there is such a chunk.
    pub fn chunk_hash(&self, index: u32) -> Option<&ChunkHash> {
        self.chunks.get(index as usize)
    }

    /// Where chunk `index` starts in the file.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// The length of chunk `index`: the chunk size, less for the last chunk; `None` past the
    /// end.
    pub fn chunk_len(&self, index: u32) -> Option<u32> {
        if index >= self.chunk_count() {
            return None;
        }
        let rest = self.size - self.chunk_offset(index);
        Some(rest.min(u64::from(self.chunk_size)) as u32)
    }

    /// The canonical bytes: postcard of `(version: u8, size: u64, chunk_size: u32, chunks:
    /// Vec<[u8; 32]>)`, i.e. the version byte, two varints, a varint count, then the raw hashes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 10 + 5 + 10 + 32 * self.chunks.len());
        out.push(self.version);
        put_varint(&mut out, self.size);
        put_varint(&mut out, u64::from(self.chunk_size));
        put_varint(&mut out, self.chunks.len() as u64);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk.as_bytes());
        }
        out
    }

    /// This content's id: BLAKE3 of [`Manifest::encode`].
    pub fn id(&self) -> ContentId {
        ContentId(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Decodes and checks manifest bytes from disk or from a peer. The length and the chunk
    /// count are checked before anything is allocated, so a forged length prefix costs nothing;
    /// only the canonical encoding is accepted, so `decode(b)` succeeding means
    /// `decode(b).id()` is BLAKE3 of `b`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLong {
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        // The header, up to and including the Vec's length prefix, is postcard of this tuple.
        let ((version, size, chunk_size, count), hashes): ((u8, u64, u32, u64), &[u8]) =
            postcard::take_from_bytes(bytes)
                .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        check_header(version, size, chunk_size, count)?;
        // count <= MAX_CHUNKS now, so this cannot overflow.
        let expected_len = count as usize * 32;
        if hashes.len() != expected_len {
            return Err(ManifestError::Malformed(format!(
                "{count} chunk hashes take {expected_len} bytes, found {}",
                hashes.len()
            )));
        }
        let chunks = hashes
            .chunks_exact(32)
            .map(|raw| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(raw);
                ChunkHash(hash)
            })
            .collect();
        let manifest = Manifest {
            version,
            size,
            chunk_size,
            chunks,
        };
        // Only the header can be non-canonical (overlong varints); compare its bytes.
        let header_len = bytes.len() - expected_len;
        let mut header = Vec::with_capacity(header_len);
        header.push(version);
        put_varint(&mut header, size);
        put_varint(&mut header, u64::from(chunk_size));
        put_varint(&mut header, count);
        if header != bytes[..header_len] {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hashes(n: usize, seed: u8) -> Vec<ChunkHash> {
        (0..n)
            .map(|i| ChunkHash::of(&[seed, i as u8, (i >> 8) as u8]))
            .collect()
    }

    #[test]
    fn chunk_lengths_and_counts() {
        let cs = u64::from(CHUNK_SIZE);
        for (size, count, last) in [
            (0u64, 0u32, None),
            (1, 1, Some(1)),
            (cs - 1, 1, Some(CHUNK_SIZE - 1)),
            (cs, 1, Some(CHUNK_SIZE)),
            (cs + 1, 2, Some(1)),
            (3 * cs + cs / 2, 4, Some(CHUNK_SIZE / 2)),
        ] {
            let m = Manifest::new(size, hashes(count as usize, 1)).unwrap();
            assert_eq!(m.chunk_count(), count);
            assert_eq!(m.chunk_len(count.wrapping_sub(1)), last, "size {size}");
            assert_eq!(m.chunk_len(count), None);
            if count > 1 {
                assert_eq!(m.chunk_len(0), Some(CHUNK_SIZE));
            }
        }
    }

    /// The vectors of docs/PROTOCOL.md ("Content"): pinned, so the encoding never drifts.
    #[test]
    fn manifest_bytes_and_ids_match_the_protocol_vectors() {
        let empty = Manifest::of_bytes(b"").unwrap();
        assert_eq!(hex::encode(empty.encode()), "010080801000");
        assert_eq!(
            empty.id().to_string(),
            "7a9e547a4f0a42ea812f0128c77d0e09956d41ad27b95ce1d0143db153a275d9"
        );
        let abc = Manifest::of_bytes(b"abc").unwrap();
        assert_eq!(
            hex::encode(abc.encode()),
            "0103808010016437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            abc.id().to_string(),
            "f871db97ed0dee7da786ce1fc74f7b98619be76de0d327e79df8d343e0ffd83b"
        );
    }

    #[test]
    fn new_refuses_a_wrong_chunk_count() {
        assert_eq!(
            Manifest::new(1, vec![]),
            Err(ManifestError::ChunkCount {
                size: 1,
                found: 0,
                expected: 1
            })
        );
        assert!(Manifest::new(0, hashes(1, 0)).is_err());
    }

    /// A header with a forged chunk count: a few bytes that claim far more hashes than the cap.
    fn forged_header(size: u64, count: u64) -> Vec<u8> {
        let mut bytes = vec![MANIFEST_VERSION];
        put_varint(&mut bytes, size);
        put_varint(&mut bytes, u64::from(CHUNK_SIZE));
        put_varint(&mut bytes, count);
        bytes
    }

    #[test]
    fn decode_refuses_a_chunk_count_over_the_cap_before_allocating() {
        let over = u64::from(MAX_CHUNKS) + 1;
        // The size agrees with the count, so only the cap can refuse it; the input is 13 bytes,
        // so any attempt to read (or reserve) the hashes first would fail differently.
        let bytes = forged_header(over * u64::from(CHUNK_SIZE), over);
        assert!(bytes.len() < 16);
        assert_eq!(
            Manifest::decode(&bytes),
            Err(ManifestError::TooManyChunks {
                count: over,
                max: MAX_CHUNKS
            })
        );
        // The largest length prefix postcard can carry.
        let bytes = forged_header(0, u64::MAX);
        assert_eq!(
            Manifest::decode(&bytes),
            Err(ManifestError::TooManyChunks {
                count: u64::MAX,
                max: MAX_CHUNKS
            })
        );
        // Postcard's own decoder sees the same forged prefix as a huge Vec.
        assert!(postcard::from_bytes::<Manifest>(&bytes).is_err());
    }

    #[test]
    fn decode_refuses_oversized_input_before_parsing() {
        let bytes = vec![0u8; MAX_MANIFEST_LEN + 1];
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::TooLong { .. })
        ));
    }

    #[test]
    fn decode_refuses_bad_headers_and_lengths() {
        let m = Manifest::new(10, hashes(1, 2)).unwrap();
        let good = m.encode();
        assert_eq!(Manifest::decode(&good).unwrap(), m);

        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(
            Manifest::decode(&bad),
            Err(ManifestError::UnsupportedVersion(2))
        );
        assert!(matches!(
            Manifest::decode(&good[..good.len() - 1]),
            Err(ManifestError::Malformed(_))
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Manifest::decode(&long),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            Manifest::decode(&[]),
            Err(ManifestError::Malformed(_))
        ));

        let mut other_size = vec![MANIFEST_VERSION, 10];
        put_varint(&mut other_size, 1024);
        other_size.push(1);
        other_size.extend_from_slice(&[0; 32]);
        assert_eq!(
            Manifest::decode(&other_size),
            Err(ManifestError::WrongChunkSize {
                found: 1024,
                expected: CHUNK_SIZE
            })
        );

        // Size 10 written as an overlong varint (0x8a 0x00): postcard accepts it, we do not.
        let mut overlong = vec![MANIFEST_VERSION, 0x8a, 0x00];
        overlong.extend_from_slice(&good[2..]);
        assert_eq!(postcard::from_bytes::<Manifest>(&overlong).unwrap(), m);
        assert_eq!(
            Manifest::decode(&overlong),
            Err(ManifestError::NotCanonical)
        );
    }

    #[test]
    fn deserializing_checks_the_manifest_too() {
        let json = r#"{"version":1,"size":5,"chunk_size":262144,"chunks":[]}"#;
        assert!(serde_json::from_str::<Manifest>(json).is_err());
    }

    fn manifest_strategy() -> impl Strategy<Value = Manifest> {
        // Sizes around chunk boundaries and up to 40 chunks, with arbitrary hashes.
        (0u64..40, 0u64..=u64::from(CHUNK_SIZE), any::<u64>())
            .prop_flat_map(|(whole, extra, seed)| {
                let size = (whole * u64::from(CHUNK_SIZE) + extra).saturating_sub(seed % 2);
                let count = size.div_ceil(u64::from(CHUNK_SIZE)) as usize;
                (
                    Just(size),
                    proptest::collection::vec(any::<[u8; 32]>(), count),
                )
            })
            .prop_map(|(size, raw)| {
                Manifest::new(size, raw.into_iter().map(ChunkHash).collect()).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn manifest_round_trips_and_encode_is_postcard(m in manifest_strategy()) {
            let bytes = m.encode();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&m).unwrap());
            prop_assert_eq!(&Manifest::decode(&bytes).unwrap(), &m);
            prop_assert_eq!(&postcard::from_bytes::<Manifest>(&bytes).unwrap(), &m);
            prop_assert_eq!(m.id().0, *blake3::hash(&bytes).as_bytes());
            let json = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Manifest>(&json).unwrap(), &m);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = Manifest::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        #[test]
        fn decode_of_a_damaged_manifest_never_panics(
            m in manifest_strategy(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = m.encode();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(decoded) = Manifest::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
