//! The two 32-byte BLAKE3 names of content: [`ChunkHash`] and [`ContentId`]. Both display as 64
//! lowercase hex characters and serialize as hex in human-readable formats (JSON) and as 32 raw
//! bytes in binary ones (postcard), so one type serves the wire and the API.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// A hash that did not parse from hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseHashError {
    /// Which kind of hash (`ChunkHash`, `ContentId`).
    pub what: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

/// Parses 32 bytes from 64 hex characters (either case).
fn parse_hex(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 64 {
        return Err(format!("expected 64 hex characters, found {}", text.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| format!("not hex: {e}"))?;
    Ok(out)
}

fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        // A tuple of 32 u8 is 32 raw bytes in postcard: no length prefix, no varints.
        let mut tuple = serializer.serialize_tuple(32)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
    struct HexOrBytes;

    impl<'de> Visitor<'de> for HexOrBytes {
        type Value = [u8; 32];

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("32 bytes as 64 hex characters")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_hex(text).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; 32];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    if deserializer.is_human_readable() {
        deserializer.deserialize_str(HexOrBytes)
    } else {
        deserializer.deserialize_tuple(32, HexOrBytes)
    }
}

/// Declares a 32-byte hash newtype with hex `Display`/`FromStr` and hex-or-raw serde.
macro_rules! hash_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 10 hex characters, for logs and people. Not unique: never a key.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..5])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseHashError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex(text).map(Self).map_err(|reason| ParseHashError {
                    what: stringify!($name),
                    reason,
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize(&self.0, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize(d).map(Self)
            }
        }
    };
}

hash_newtype!(
    /// The BLAKE3 hash of one chunk's bytes.
    ChunkHash
);

hash_newtype!(
    /// A content's id: the BLAKE3 hash of its manifest's postcard bytes. Same bytes, same id.
    ContentId
);

impl ChunkHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_display_parse_and_serde_forms() {
        let id = ContentId([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(text.parse::<ContentId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<ContentId>().unwrap(), id);
        assert!("abc".parse::<ContentId>().is_err());
        assert!("zz".repeat(32).parse::<ChunkHash>().is_err());

        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<ContentId>(&json).unwrap(), id);

        let raw = postcard::to_allocvec(&id).unwrap();
        assert_eq!(raw, vec![0xab; 32]);
        assert_eq!(postcard::from_bytes::<ContentId>(&raw).unwrap(), id);
        assert!(postcard::from_bytes::<ContentId>(&raw[..31]).is_err());
    }
}
