//! The receipt: what one peer received from another, cumulative, signed by both. Its signed
//! bytes, verification (one at a time and in batches), its order and the conflict proof.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::VerifyError;
use crate::id::{Identity, NetworkId, PeerId, Signature};

/// Domain separator at the head of every receipt's signed bytes.
pub const SIGNED_BYTES_PREFIX: &[u8; 16] = b"tally/receipt/v1";

/// Longest possible signed bytes: prefix, network id, two keys, four varint u64 of ≤ 10 bytes.
pub const MAX_SIGNED_BYTES: usize = 16 + 32 + 32 + 32 + 4 * 10;

/// The ordered pair a receipt chain belongs to: bytes flow from `uploader` to `downloader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pair {
    /// Who sent the bytes.
    pub uploader: PeerId,
    /// Who received them.
    pub downloader: PeerId,
}

/// The six signed fields of a receipt, in signing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// U's public key.
    pub uploader: PeerId,
    /// D's public key.
    pub downloader: PeerId,
    /// 1, 2, 3, … per (U, D); strictly increasing.
    pub seq: u64,
    /// Cumulative payload bytes D has received from U, all time.
    pub bytes: u64,
    /// Cumulative credits D owes U for them.
    pub credits: u64,
    /// D's clock at signing, Unix milliseconds.
    pub time_ms: u64,
}

/// The exact bytes both parties sign: at most [`MAX_SIGNED_BYTES`], kept on the stack.
#[derive(Clone, Copy)]
pub struct SignedBytes {
    buf: [u8; MAX_SIGNED_BYTES],
    len: usize,
}

impl SignedBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for SignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedBytes({})", hex::encode(self.as_slice()))
    }
}

/// How an incoming receipt relates to the one already held for its pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The same six fields (signatures may differ; the statement is the same).
    Same,
    /// The incoming one supersedes the held one.
    Newer,
    /// The held one supersedes the incoming one.
    Older,
    /// Neither supersedes the other: both keys signed contradictory statements.
    Conflict,
}

impl ReceiptBody {
    /// The pair this receipt belongs to.
    pub fn pair(&self) -> Pair {
        Pair {
            uploader: self.uploader,
            downloader: self.downloader,
        }
    }

    /// `tally/receipt/v1` ‖ network id ‖ postcard(the six fields).
    pub fn signed_bytes(&self, network: &NetworkId) -> SignedBytes {
        let mut buf = [0u8; MAX_SIGNED_BYTES];
        buf[..16].copy_from_slice(SIGNED_BYTES_PREFIX);
        buf[16..48].copy_from_slice(network.as_bytes());
        let body_len = match postcard::to_slice(self, &mut buf[48..]) {
            Ok(written) => written.len(),
            // Unreachable: the body's encoding is at most 64 + 4 * 10 bytes, which the buffer
            // holds; the arm keeps this path free of panics all the same.
            Err(_) => 0,
        };
        SignedBytes {
            buf,
            len: 48 + body_len,
        }
    }

    /// The checks that need no signature: seq from 1, two distinct valid keys.
    pub fn check_shape(&self) -> Result<(), VerifyError> {
        if self.seq == 0 {
            return Err(VerifyError::ZeroSeq);
        }
        if self.uploader == self.downloader {
            return Err(VerifyError::SelfReceipt);
        }
        Ok(())
    }

    /// How `incoming` relates to `self` (the held receipt of the same pair). A successor has a
    /// larger seq and no smaller counters; anything else that differs is a conflict.
    pub fn order(&self, incoming: &ReceiptBody) -> Order {
        let counters_grow = |old: &ReceiptBody, new: &ReceiptBody| {
            new.bytes >= old.bytes && new.credits >= old.credits
        };
        match incoming.seq.cmp(&self.seq) {
            std::cmp::Ordering::Equal if incoming == self => Order::Same,
            std::cmp::Ordering::Equal => Order::Conflict,
            std::cmp::Ordering::Greater if counters_grow(self, incoming) => Order::Newer,
            std::cmp::Ordering::Less if counters_grow(incoming, self) => Order::Older,
            _ => Order::Conflict,
        }
    }

    /// The downloader's half: this body with D's signature, to send to U.
    pub fn propose(self, downloader: &Identity, network: &NetworkId) -> Proposal {
        let sig_downloader = downloader.sign(self.signed_bytes(network).as_slice());
        Proposal {
            body: self,
            sig_downloader,
        }
    }
}

/// A half-signed receipt: the downloader's proposal. Never stored as a third party's record,
/// never gossiped, never counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// What is proposed.
    pub body: ReceiptBody,
    /// D's signature over the body's signed bytes.
    pub sig_downloader: Signature,
}

impl Proposal {
    /// Checks the shape and D's signature.
    pub fn verify(&self, network: &NetworkId) -> Result<(), VerifyError> {
        self.body.check_shape()?;
        let key = key_of("downloader", &self.body.downloader)?;
        let signed = self.body.signed_bytes(network);
        verify_one("downloader", &key, &self.sig_downloader, signed.as_slice())
    }

    /// U's countersignature, making the proposal a receipt. Checks nothing: the caller has
    /// decided (see [`crate::pair::UploaderPair::countersign`]).
    pub fn countersign(self, uploader: &Identity, network: &NetworkId) -> Receipt {
        let sig_uploader = uploader.sign(self.body.signed_bytes(network).as_slice());
        Receipt::from_parts(self.body, self.sig_downloader, sig_uploader)
    }
}

/// A receipt as stored, gossiped and exported. Valid only with both signatures; see
/// [`Receipt::verify`] and [`VerifiedReceipt`].
///
/// In JSON it is exactly the export object: keys and signatures as lowercase hex, numbers as
/// integers. In postcard it is the six fields then the two signatures, raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// U's public key.
    pub uploader: PeerId,
    /// D's public key.
    pub downloader: PeerId,
    /// 1, 2, 3, … per (U, D).
    pub seq: u64,
    /// Cumulative payload bytes D received from U.
    pub bytes: u64,
    /// Cumulative credits D owes U.
    pub credits: u64,
    /// D's clock at signing, Unix milliseconds.
    pub time_ms: u64,
    /// D's signature over the signed bytes.
    pub sig_downloader: Signature,
    /// U's signature over the same bytes.
    pub sig_uploader: Signature,
}

impl Receipt {
    /// Assembles a receipt from a body and two signatures (unchecked).
    pub fn from_parts(
        body: ReceiptBody,
        sig_downloader: Signature,
        sig_uploader: Signature,
    ) -> Self {
        Self {
            uploader: body.uploader,
            downloader: body.downloader,
            seq: body.seq,
            bytes: body.bytes,
            credits: body.credits,
            time_ms: body.time_ms,
            sig_downloader,
            sig_uploader,
        }
    }

    /// The six signed fields.
    pub fn body(&self) -> ReceiptBody {
        ReceiptBody {
            uploader: self.uploader,
            downloader: self.downloader,
            seq: self.seq,
            bytes: self.bytes,
            credits: self.credits,
            time_ms: self.time_ms,
        }
    }

    /// The pair this receipt belongs to.
    pub fn pair(&self) -> Pair {
        self.body().pair()
    }

    /// Checks the shape and both signatures on `network`.
    pub fn verify(&self, network: &NetworkId) -> Result<VerifiedReceipt, VerifyError> {
        let body = self.body();
        body.check_shape()?;
        let down = key_of("downloader", &self.downloader)?;
        let up = key_of("uploader", &self.uploader)?;
        let signed = body.signed_bytes(network);
        verify_one("downloader", &down, &self.sig_downloader, signed.as_slice())?;
        verify_one("uploader", &up, &self.sig_uploader, signed.as_slice())?;
        Ok(VerifiedReceipt(*self))
    }
}

/// A receipt whose shape and both signatures have been checked on the store's network. Only
/// [`Receipt::verify`] and [`verify_batch`] make one, so the store cannot be handed an unchecked
/// record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerifiedReceipt(Receipt);

impl VerifiedReceipt {
    /// The receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.0
    }
}

impl std::ops::Deref for VerifiedReceipt {
    type Target = Receipt;
    fn deref(&self) -> &Receipt {
        &self.0
    }
}

fn key_of(role: &'static str, key: &PeerId) -> Result<VerifyingKey, VerifyError> {
    key.verifying_key()
        .ok_or(VerifyError::BadKey { role, key: *key })
}

fn verify_one(
    role: &'static str,
    verifying_key: &VerifyingKey,
    signature: &Signature,
    message: &[u8],
) -> Result<(), VerifyError> {
    if signature.is_unsigned() {
        return Err(VerifyError::MissingSignature { role });
    }
    let sig = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
    verifying_key
        .verify_strict(message, &sig)
        .map_err(|_| VerifyError::BadSignature { role })
}

/// The outcome of [`verify_batch`]: the receipts that verified, and the index and reason of each
/// one that did not.
#[derive(Debug, Default)]
pub struct BatchVerdict {
    /// Receipts with both signatures valid, in input order.
    pub verified: Vec<VerifiedReceipt>,
    /// `(index in the input, why)` for each rejected receipt.
    pub rejected: Vec<(usize, VerifyError)>,
}

/// Verifies many receipts at once with ed25519 batch verification (both signatures of every
/// receipt in one multiscalar check). If the batch fails, each receipt is checked alone to name
/// the bad ones, so one forgery costs its sender, not the honest receipts beside it.
pub fn verify_batch(receipts: &[Receipt], network: &NetworkId) -> BatchVerdict {
    let mut verdict = BatchVerdict::default();
    // Keys repeat across a ledger: decompress each once per batch.
    let mut keys: HashMap<PeerId, Option<VerifyingKey>> = HashMap::new();
    let mut key_of = |id: &PeerId| *keys.entry(*id).or_insert_with(|| id.verifying_key());

    let mut candidates: Vec<(usize, SignedBytes)> = Vec::with_capacity(receipts.len());
    let mut vkeys = Vec::with_capacity(receipts.len() * 2);
    let mut sigs = Vec::with_capacity(receipts.len() * 2);
    for (index, receipt) in receipts.iter().enumerate() {
        let precheck = (|| {
            let body = receipt.body();
            body.check_shape()?;
            let down = key_of(&receipt.downloader).ok_or(VerifyError::BadKey {
                role: "downloader",
                key: receipt.downloader,
            })?;
            let up = key_of(&receipt.uploader).ok_or(VerifyError::BadKey {
                role: "uploader",
                key: receipt.uploader,
            })?;
            for (role, sig) in [
                ("downloader", &receipt.sig_downloader),
                ("uploader", &receipt.sig_uploader),
            ] {
                if sig.is_unsigned() {
                    return Err(VerifyError::MissingSignature { role });
                }
            }
            Ok((body.signed_bytes(network), down, up))
        })();
        match precheck {
            Ok((signed, down, up)) => {
                candidates.push((index, signed));
                vkeys.extend([down, up]);
                sigs.extend([
                    ed25519_dalek::Signature::from_bytes(receipt.sig_downloader.as_bytes()),
                    ed25519_dalek::Signature::from_bytes(receipt.sig_uploader.as_bytes()),
                ]);
            }
            Err(why) => verdict.rejected.push((index, why)),
        }
    }

    let messages: Vec<&[u8]> = candidates
        .iter()
        .flat_map(|(_, signed)| [signed.as_slice(), signed.as_slice()])
        .collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &vkeys).is_ok() {
        verdict.verified.extend(
            candidates
                .iter()
                .map(|(i, _)| VerifiedReceipt(receipts[*i])),
        );
    } else {
        for (index, _) in &candidates {
            match receipts[*index].verify(network) {
                Ok(good) => verdict.verified.push(good),
                Err(why) => verdict.rejected.push((*index, why)),
            }
        }
        verdict.rejected.sort_by_key(|(i, _)| *i);
    }
    verdict
}

/// Two valid receipts of one pair that neither supersedes: proof that both keys signed
/// contradictory statements. Stored, gossiped, and marks both keys dishonest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConflictProof {
    first: Receipt,
    second: Receipt,
}

/// Why two receipts are not a conflict proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAConflict {
    /// One of them does not verify.
    #[error("a receipt in the proof is invalid: {0}")]
    Invalid(#[from] VerifyError),
    /// They belong to different pairs.
    #[error("the receipts belong to different pairs")]
    DifferentPairs,
    /// One supersedes the other, or they say the same.
    #[error("the receipts are ordered ({0:?}), not in conflict")]
    Ordered(Order),
}

impl ConflictProof {
    /// A proof from two receipts of one pair, if they conflict. Does not check signatures; see
    /// [`ConflictProof::verify`]. The two are kept in a canonical order so a proof has one form.
    pub fn new(a: Receipt, b: Receipt) -> Result<Self, NotAConflict> {
        if a.pair() != b.pair() {
            return Err(NotAConflict::DifferentPairs);
        }
        match a.body().order(&b.body()) {
            Order::Conflict => {}
            ordered => return Err(NotAConflict::Ordered(ordered)),
        }
        let key = |r: &Receipt| {
            (
                r.seq,
                r.bytes,
                r.credits,
                r.time_ms,
                r.sig_downloader,
                r.sig_uploader,
            )
        };
        let (first, second) = if key(&a) <= key(&b) { (a, b) } else { (b, a) };
        Ok(Self { first, second })
    }

    /// Checks both receipts' signatures and that they conflict (a decoded proof is untrusted).
    /// Store proofs in their canonical form: `ConflictProof::new(first, second)`.
    pub fn verify(&self, network: &NetworkId) -> Result<(), NotAConflict> {
        self.first.verify(network)?;
        self.second.verify(network)?;
        Self::new(self.first, self.second).map(|_| ())
    }

    /// The pair both receipts belong to.
    pub fn pair(&self) -> Pair {
        self.first.pair()
    }

    /// The two receipts, in canonical order.
    pub fn receipts(&self) -> [&Receipt; 2] {
        [&self.first, &self.second]
    }

    /// A content id for the proof: BLAKE3 of its postcard encoding.
    pub fn id(&self) -> [u8; 32] {
        let encoded = postcard::to_stdvec(self).unwrap_or_default();
        *blake3::hash(&encoded).as_bytes()
    }
}

#[cfg(test)]
mod tests;
