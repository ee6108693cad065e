//! Fixed-size byte arrays that serialize as lowercase hex in human-readable formats (JSON, TOML)
//! and as raw bytes in binary ones (postcard), so one type serves the wire and the API.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Parses `N` bytes from hex (either case). The error says what was wrong, for a person to read.
pub(crate) fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if text.len() != 2 * N {
        return Err(format!(
            "expected {} hex characters, found {}",
            2 * N,
            text.len()
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| format!("not hex: {e}"))?;
    Ok(out)
}

pub(crate) fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&hex::encode(bytes))
    } else {
        // A tuple of N u8 is N raw bytes in postcard: no length prefix, no varints.
        let mut tuple = serializer.serialize_tuple(N)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    struct HexOrBytes<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for HexOrBytes<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{N} bytes as {} hex characters", 2 * N)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_hex(text).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    if deserializer.is_human_readable() {
        deserializer.deserialize_str(HexOrBytes::<N>)
    } else {
        deserializer.deserialize_tuple(N, HexOrBytes::<N>)
    }
}

/// Declares a newtype over `[u8; N]` with hex `Display`/`FromStr` and hex-or-raw serde.
macro_rules! byte_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::ParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $crate::bytes::parse_hex(text)
                    .map(Self)
                    .map_err(|reason| $crate::error::ParseError {
                        what: stringify!($name),
                        reason,
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::bytes::serialize(&self.0, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::bytes::deserialize(d).map(Self)
            }
        }
    };
}

pub(crate) use byte_newtype;
