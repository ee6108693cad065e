//! Signed records that gossip carries besides receipts: a provider record says "this peer
//! serves this content until then", a peer record says "this peer is reachable here". Each is
//! signed by the peer it speaks for, over domain-separated bytes that include the network id, so
//! no one can announce for another, and a record of one network never verifies on another.
//!
//! Records expire: a provider record lives at most [`MAX_PROVIDER_TTL_MS`], a peer record is
//! dropped after [`MAX_PEER_RECORD_AGE_MS`]; a record dated in the future beyond
//! [`MAX_CLOCK_SKEW_MS`] is refused.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, PeerId, Signature};

use crate::content::ContentId;

/// Longest a provider record may claim to be valid.
pub const MAX_PROVIDER_TTL_MS: u64 = 24 * 3600 * 1000;
/// Oldest a peer record may be and still be passed on.
pub const MAX_PEER_RECORD_AGE_MS: u64 = 24 * 3600 * 1000;
/// How far in the future a record's date may be (clocks differ).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Addresses one peer record may list.
pub const MAX_ADDRS: usize = 8;

const PROVIDER_DOMAIN: &[u8; 17] = b"tally/provider/v1";
const PEER_DOMAIN: &[u8; 13] = b"tally/peer/v1";

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The signature is not the named peer's over this record on this network.
    #[error("the signature is not {peer}'s over this record on this network")]
    BadSignature {
        /// Who the record names.
        peer: String,
    },
    /// The record has expired, or is too old to pass on.
    #[error("the record expired at {expired_ms} (now {now_ms})")]
    Expired {
        /// When it expired, Unix ms.
        expired_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// The record is dated too far in the future.
    #[error("the record is dated {issued_ms}, more than the allowed skew after now ({now_ms})")]
    FromTheFuture {
        /// Its date, Unix ms.
        issued_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// The record's shape is out of bounds.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// "`provider` serves `content` from `issued_ms` until `expires_ms`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// Who serves it.
    pub provider: PeerId,
    /// What it serves.
    pub content: ContentId,
    /// When it was signed, Unix ms.
    pub issued_ms: u64,
    /// When it stops being valid, Unix ms.
    pub expires_ms: u64,
    /// The provider's signature.
    pub signature: Signature,
}

impl ProviderRecord {
    /// The bytes signed: the domain, the network id, then the postcard encoding of the fields
    /// above the signature.
    pub fn signed_bytes(
        network: &NetworkId,
        provider: &PeerId,
        content: &ContentId,
        issued_ms: u64,
        expires_ms: u64,
    ) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(17 + 32 + 32 + 32 + 20);
        bytes.extend_from_slice(PROVIDER_DOMAIN);
        bytes.extend_from_slice(network.as_bytes());
        // Fixed-shape fields: encoding cannot fail.
        if let Ok(body) = postcard::to_stdvec(&(provider, content, issued_ms, expires_ms)) {
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    /// A record signed by `provider` for `content`, valid for `ttl_ms` from `now_ms`.
    pub fn sign(
        provider: &Identity,
        network: &NetworkId,
        content: ContentId,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Self {
        let id = provider.peer_id();
        let expires_ms = now_ms.saturating_add(ttl_ms.min(MAX_PROVIDER_TTL_MS));
        let bytes = Self::signed_bytes(network, &id, &content, now_ms, expires_ms);
        Self {
            provider: id,
            content,
            issued_ms: now_ms,
            expires_ms,
            signature: provider.sign(&bytes),
        }
    }

    /// Checks the signature, the lifetime and the dates against `now_ms`.
    pub fn verify(&self, network: &NetworkId, now_ms: u64) -> Result<(), RecordError> {
        if self.expires_ms < self.issued_ms
            || self.expires_ms - self.issued_ms > MAX_PROVIDER_TTL_MS
        {
            return Err(RecordError::Malformed("its lifetime exceeds a day"));
        }
        if self.issued_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(RecordError::FromTheFuture {
                issued_ms: self.issued_ms,
                now_ms,
            });
        }
        if self.expires_ms <= now_ms {
            return Err(RecordError::Expired {
                expired_ms: self.expires_ms,
                now_ms,
            });
        }
        let bytes = Self::signed_bytes(
            network,
            &self.provider,
            &self.content,
            self.issued_ms,
            self.expires_ms,
        );
        if !self.provider.verifies(&bytes, &self.signature) {
            return Err(RecordError::BadSignature {
                peer: self.provider.to_string(),
            });
        }
        Ok(())
    }
}

/// "`peer` is reachable at `addrs`", as of `issued_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Who.
    pub peer: PeerId,
    /// Where (at most [`MAX_ADDRS`]).
    pub addrs: Vec<SocketAddr>,
    /// When it was signed, Unix ms.
    pub issued_ms: u64,
    /// The peer's signature.
    pub signature: Signature,
}

impl PeerRecord {
    /// The bytes signed: the domain, the network id, then postcard(peer, addrs, issued_ms).
    pub fn signed_bytes(
        network: &NetworkId,
        peer: &PeerId,
        addrs: &[SocketAddr],
        issued_ms: u64,
    ) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(13 + 32 + 32 + 20 * addrs.len() + 10);
        bytes.extend_from_slice(PEER_DOMAIN);
        bytes.extend_from_slice(network.as_bytes());
        if let Ok(body) = postcard::to_stdvec(&(peer, addrs, issued_ms)) {
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    /// This node's record: reachable at `addrs` (the first [`MAX_ADDRS`]) as of `now_ms`.
    pub fn sign(me: &Identity, network: &NetworkId, addrs: &[SocketAddr], now_ms: u64) -> Self {
        let addrs: Vec<SocketAddr> = addrs.iter().copied().take(MAX_ADDRS).collect();
        let peer = me.peer_id();
        let bytes = Self::signed_bytes(network, &peer, &addrs, now_ms);
        Self {
            peer,
            addrs,
            issued_ms: now_ms,
            signature: me.sign(&bytes),
        }
    }

    /// Checks the signature, the address count and the date against `now_ms`.
    pub fn verify(&self, network: &NetworkId, now_ms: u64) -> Result<(), RecordError> {
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS {
            return Err(RecordError::Malformed("it must list 1 to 8 addresses"));
        }
        if self.issued_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(RecordError::FromTheFuture {
                issued_ms: self.issued_ms,
                now_ms,
            });
        }
        let expired_ms = self.issued_ms.saturating_add(MAX_PEER_RECORD_AGE_MS);
        if expired_ms <= now_ms {
            return Err(RecordError::Expired { expired_ms, now_ms });
        }
        let bytes = Self::signed_bytes(network, &self.peer, &self.addrs, self.issued_ms);
        if !self.peer.verifies(&bytes, &self.signature) {
            return Err(RecordError::BadSignature {
                peer: self.peer.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn net() -> NetworkId {
        NetworkId::from_name("tally")
    }

    fn who(seed: u8) -> Identity {
        Identity::from_secret_bytes([seed; 32])
    }

    #[test]
    fn provider_records_verify_until_they_expire() {
        let record = ProviderRecord::sign(&who(1), &net(), ContentId([9; 32]), NOW, 60_000);
        record.verify(&net(), NOW).unwrap();
        record.verify(&net(), NOW + 59_999).unwrap();
        assert!(matches!(
            record.verify(&net(), NOW + 60_000),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            record.verify(&NetworkId::from_name("other"), NOW),
            Err(RecordError::BadSignature { .. })
        ));
        // Announcing for someone else: the signature is not theirs.
        let forged = ProviderRecord {
            provider: who(2).peer_id(),
            ..record
        };
        assert!(matches!(
            forged.verify(&net(), NOW),
            Err(RecordError::BadSignature { .. })
        ));
        // A lifetime stretched after signing, or longer than a day, is refused.
        let stretched = ProviderRecord {
            expires_ms: record.expires_ms + 1,
            ..record
        };
        assert!(stretched.verify(&net(), NOW).is_err());
        let long = ProviderRecord::sign(&who(1), &net(), ContentId([9; 32]), NOW, u64::MAX);
        assert_eq!(long.expires_ms - long.issued_ms, MAX_PROVIDER_TTL_MS);
        long.verify(&net(), NOW).unwrap();
        let future = ProviderRecord::sign(
            &who(1),
            &net(),
            ContentId([9; 32]),
            NOW + MAX_CLOCK_SKEW_MS + 1,
            1000,
        );
        assert!(matches!(
            future.verify(&net(), NOW),
            Err(RecordError::FromTheFuture { .. })
        ));
    }

    #[test]
    fn peer_records_verify_and_refuse_forgery_and_bad_shapes() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:7420".parse().unwrap(),
            "[2001:db8::1]:7420".parse().unwrap(),
        ];
        let record = PeerRecord::sign(&who(3), &net(), &addrs, NOW);
        record.verify(&net(), NOW).unwrap();
        let mut moved = record.clone();
        moved.addrs[0] = "198.51.100.9:7420".parse().unwrap();
        assert!(matches!(
            moved.verify(&net(), NOW),
            Err(RecordError::BadSignature { .. })
        ));
        assert!(matches!(
            record.verify(&net(), NOW + MAX_PEER_RECORD_AGE_MS),
            Err(RecordError::Expired { .. })
        ));
        let empty = PeerRecord::sign(&who(3), &net(), &[], NOW);
        assert!(matches!(
            empty.verify(&net(), NOW),
            Err(RecordError::Malformed(_))
        ));
        let many: Vec<SocketAddr> = (0..20)
            .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
            .collect();
        assert_eq!(
            PeerRecord::sign(&who(3), &net(), &many, NOW).addrs.len(),
            MAX_ADDRS
        );
        let mut stuffed = record.clone();
        stuffed.addrs = many;
        assert!(stuffed.verify(&net(), NOW).is_err());
    }

    proptest! {
        #[test]
        fn any_flipped_bit_of_a_provider_record_fails(bit in 0usize..(8 * (32 + 32 + 8 + 8 + 64))) {
            let record = ProviderRecord::sign(&who(1), &net(), ContentId([9; 32]), NOW, 60_000);
            let mut bytes = postcard::to_stdvec(&record).unwrap();
            let byte = bit / 8 % bytes.len();
            bytes[byte] ^= 1 << (bit % 8);
            if let Ok(flipped) = postcard::from_bytes::<ProviderRecord>(&bytes) {
                prop_assert!(flipped == record || flipped.verify(&net(), NOW).is_err());
            }
        }
    }
}
