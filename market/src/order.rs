//! Signed orders: an [`Offer`] to sell upload, a [`Bid`] to buy it, and the owner's signed
//! [`Cancel`] of either. Owns their signed bytes, their ids and their verification.
//!
//! Each is signed by its owner over domain-separated bytes, as gossip's records are: the domain
//! (`tally/offer/v1`, `tally/bid/v1`, `tally/cancel/v1`), the [`NetworkId`], then the postcard
//! encoding of the fields above the signature. An order's [`OrderId`] is BLAKE3 of those signed
//! bytes: it names the statement, not the signature, so it is the same whoever relays the order,
//! and the same order made for another network has another id.
//!
//! An order lives at most [`MAX_ORDER_TTL_MS`] and may be dated at most [`MAX_CLOCK_SKEW_MS`]
//! ahead of the verifier's clock. Prices are credits per GiB ([`GIB`] bytes); a price of 0 is
//! allowed on both sides: an offer at 0 is free seeding (the seller still earns the receipts'
//! standing), a bid at 0 takes only free offers. Zero bytes, or an offer with a zero rate, is
//! malformed.
//!
//! Only [`Offer::verify`], [`Bid::verify`] and [`Cancel::verify`] make the `Verified*` types
//! that the [`crate::book::OrderBook`] takes, so the book is never handed an unchecked order.

use std::fmt;

use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, PeerId, Signature};

/// Domain separator of an offer's signed bytes.
pub const OFFER_DOMAIN: &[u8; 14] = b"tally/offer/v1";
/// Domain separator of a bid's signed bytes.
pub const BID_DOMAIN: &[u8; 12] = b"tally/bid/v1";
/// Domain separator of a cancellation's signed bytes.
pub const CANCEL_DOMAIN: &[u8; 15] = b"tally/cancel/v1";

/// Longest an order may live: `expires_ms - issued_ms` at most 7 days.
pub const MAX_ORDER_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// How far ahead of the verifier's clock an order or a cancellation may be dated.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// The byte count prices are quoted per: one GiB.
pub const GIB: u64 = 1 << 30;

/// The credits `bytes` cost at `price_per_gib`, rounded down; saturates at `u64::MAX`.
pub fn credits_for(bytes: u64, price_per_gib: u64) -> u64 {
    let credits = u128::from(bytes) * u128::from(price_per_gib) / u128::from(GIB);
    u64::try_from(credits).unwrap_or(u64::MAX)
}

/// An order's id: BLAKE3 of its signed bytes. Displays as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub [u8; 32]);

impl OrderId {
    /// The id of an order whose signed bytes are `signed`.
    pub fn of_signed_bytes(signed: &[u8]) -> Self {
        Self(*blake3::hash(signed).as_bytes())
    }

    /// The first 10 hex characters, for logs and people. Not unique: never use it as a key.
    pub fn fmt_short(&self) -> String {
        self.0[..5].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrderId({self})")
    }
}

/// Why an order, a cancellation or a trade agreement was refused. Never a panic, whatever the
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The signature field is all zero: that party has not signed.
    #[error("the {role}'s signature is missing (all zero)")]
    MissingSignature {
        /// `seller`, `buyer` or `owner`.
        role: &'static str,
    },
    /// The signature is not the named peer's over these bytes on this network.
    #[error(
        "the {role}'s signature ({signer}) does not verify on this network (forged, altered, or made for another network)"
    )]
    BadSignature {
        /// `seller`, `buyer` or `owner`.
        role: &'static str,
        /// Who it names.
        signer: PeerId,
    },
    /// It has expired.
    #[error("it expired at {expires_ms} (now {now_ms})")]
    Expired {
        /// When it expired, Unix ms.
        expires_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// It is dated too far in the future.
    #[error("it is dated {issued_ms}, more than the allowed skew after now ({now_ms})")]
    FromTheFuture {
        /// Its date, Unix ms.
        issued_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// Its shape is out of bounds.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// `domain ‖ network ‖ postcard(body)`.
pub(crate) fn signed_bytes<T: Serialize + ?Sized>(
    domain: &[u8],
    network: &NetworkId,
    body: &T,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(domain.len() + 32 + 128);
    bytes.extend_from_slice(domain);
    bytes.extend_from_slice(network.as_bytes());
    // Fixed-shape fields of integers and byte arrays: encoding into a Vec cannot fail.
    if let Ok(body) = postcard::to_stdvec(body) {
        bytes.extend_from_slice(&body);
    }
    bytes
}

/// Checks `signature` is `signer`'s over `message`.
pub(crate) fn check_signature(
    role: &'static str,
    signer: &PeerId,
    message: &[u8],
    signature: &Signature,
) -> Result<(), OrderError> {
    if signature.is_unsigned() {
        return Err(OrderError::MissingSignature { role });
    }
    if !signer.verifies(message, signature) {
        return Err(OrderError::BadSignature {
            role,
            signer: *signer,
        });
    }
    Ok(())
}

/// The checks of an order's dates: a lifetime of at most [`MAX_ORDER_TTL_MS`], not dated beyond
/// the skew, not expired at `now_ms` (an order is live while `now_ms < expires_ms`).
fn check_dates(issued_ms: u64, expires_ms: u64, now_ms: u64) -> Result<(), OrderError> {
    if expires_ms <= issued_ms {
        return Err(OrderError::Malformed("it expires before it is issued"));
    }
    if expires_ms - issued_ms > MAX_ORDER_TTL_MS {
        return Err(OrderError::Malformed("its lifetime exceeds 7 days"));
    }
    if issued_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(OrderError::FromTheFuture { issued_ms, now_ms });
    }
    if expires_ms <= now_ms {
        return Err(OrderError::Expired { expires_ms, now_ms });
    }
    Ok(())
}

/// What an offer says, besides who says it: "I will upload up to `bytes` at up to `max_rate`
/// bytes/s for `price_per_gib` credits per GiB, from `issued_ms` until `expires_ms`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfferTerms {
    /// Bytes for sale; at least 1.
    pub bytes: u64,
    /// Most bytes per second the seller will upload; at least 1.
    pub max_rate: u64,
    /// Credits per GiB asked.
    pub price_per_gib: u64,
    /// When it was signed, Unix ms.
    pub issued_ms: u64,
    /// When it stops being valid, Unix ms.
    pub expires_ms: u64,
    /// Distinguishes otherwise equal offers (and so their ids).
    pub nonce: u64,
}

/// A seller's signed offer of upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    /// Who sells.
    pub seller: PeerId,
    /// What is offered.
    pub terms: OfferTerms,
    /// The seller's signature over [`Offer::signed_bytes`].
    pub signature: Signature,
}

impl Offer {
    /// `tally/offer/v1 ‖ network ‖ postcard(seller, terms)`.
    pub fn signed_bytes(network: &NetworkId, seller: &PeerId, terms: &OfferTerms) -> Vec<u8> {
        signed_bytes(OFFER_DOMAIN, network, &(seller, terms))
    }

    /// The offer `terms`, signed by `seller`. Checks nothing; see [`Offer::verify`].
    pub fn sign(seller: &Identity, network: &NetworkId, terms: OfferTerms) -> Self {
        let id = seller.peer_id();
        let signature = seller.sign(&Self::signed_bytes(network, &id, &terms));
        Self {
            seller: id,
            terms,
            signature,
        }
    }

    /// This offer's id on `network`.
    pub fn id(&self, network: &NetworkId) -> OrderId {
        OrderId::of_signed_bytes(&Self::signed_bytes(network, &self.seller, &self.terms))
    }

    /// Checks the shape, the dates against `now_ms` and the seller's signature on `network`.
    pub fn verify(&self, network: &NetworkId, now_ms: u64) -> Result<VerifiedOffer, OrderError> {
        let t = &self.terms;
        if t.bytes == 0 {
            return Err(OrderError::Malformed("it offers zero bytes"));
        }
        if t.max_rate == 0 {
            return Err(OrderError::Malformed("its rate is zero"));
        }
        check_dates(t.issued_ms, t.expires_ms, now_ms)?;
        let signed = Self::signed_bytes(network, &self.seller, t);
        check_signature("seller", &self.seller, &signed, &self.signature)?;
        Ok(VerifiedOffer {
            offer: *self,
            id: OrderId::of_signed_bytes(&signed),
        })
    }
}

/// What a bid says, besides who says it: "I will buy up to `bytes` (of `content`, if named) at
/// up to `max_price_per_gib` credits per GiB, from `issued_ms` until `expires_ms`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BidTerms {
    /// Bytes wanted; at least 1.
    pub bytes: u64,
    /// The content wanted, if any. It matters for delivery, not for matching: a bid with a
    /// content id matches any offer.
    pub content: Option<[u8; 32]>,
    /// Most credits per GiB the buyer will pay.
    pub max_price_per_gib: u64,
    /// When it was signed, Unix ms.
    pub issued_ms: u64,
    /// When it stops being valid, Unix ms.
    pub expires_ms: u64,
    /// Distinguishes otherwise equal bids (and so their ids).
    pub nonce: u64,
}

/// A buyer's signed bid for upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// Who buys.
    pub buyer: PeerId,
    /// What is wanted.
    pub terms: BidTerms,
    /// The buyer's signature over [`Bid::signed_bytes`].
    pub signature: Signature,
}

impl Bid {
    /// `tally/bid/v1 ‖ network ‖ postcard(buyer, terms)`.
    pub fn signed_bytes(network: &NetworkId, buyer: &PeerId, terms: &BidTerms) -> Vec<u8> {
        signed_bytes(BID_DOMAIN, network, &(buyer, terms))
    }

    /// The bid `terms`, signed by `buyer`. Checks nothing; see [`Bid::verify`].
    pub fn sign(buyer: &Identity, network: &NetworkId, terms: BidTerms) -> Self {
        let id = buyer.peer_id();
        let signature = buyer.sign(&Self::signed_bytes(network, &id, &terms));
        Self {
            buyer: id,
            terms,
            signature,
        }
    }

    /// This bid's id on `network`.
    pub fn id(&self, network: &NetworkId) -> OrderId {
        OrderId::of_signed_bytes(&Self::signed_bytes(network, &self.buyer, &self.terms))
    }

    /// Checks the shape, the dates against `now_ms` and the buyer's signature on `network`.
    pub fn verify(&self, network: &NetworkId, now_ms: u64) -> Result<VerifiedBid, OrderError> {
        let t = &self.terms;
        if t.bytes == 0 {
            return Err(OrderError::Malformed("it bids for zero bytes"));
        }
        check_dates(t.issued_ms, t.expires_ms, now_ms)?;
        let signed = Self::signed_bytes(network, &self.buyer, t);
        check_signature("buyer", &self.buyer, &signed, &self.signature)?;
        Ok(VerifiedBid {
            bid: *self,
            id: OrderId::of_signed_bytes(&signed),
        })
    }
}

/// An offer whose shape, dates and signature have been checked, with its id. Only
/// [`Offer::verify`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifiedOffer {
    offer: Offer,
    id: OrderId,
}

impl VerifiedOffer {
    /// The offer.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Its id on the network it was verified on.
    pub fn id(&self) -> OrderId {
        self.id
    }
}

/// A bid whose shape, dates and signature have been checked, with its id. Only [`Bid::verify`]
/// makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifiedBid {
    bid: Bid,
    id: OrderId,
}

impl VerifiedBid {
    /// The bid.
    pub fn bid(&self) -> &Bid {
        &self.bid
    }

    /// Its id on the network it was verified on.
    pub fn id(&self) -> OrderId {
        self.id
    }
}

/// "`owner` withdraws order `order_id`", signed by the owner, so it can be gossiped like the
/// order itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cancel {
    /// Who cancels: must be the order's owner for the book to apply it.
    pub owner: PeerId,
    /// The order withdrawn.
    pub order_id: OrderId,
    /// When it was signed, Unix ms.
    pub issued_ms: u64,
    /// The owner's signature over [`Cancel::signed_bytes`].
    pub signature: Signature,
}

impl Cancel {
    /// `tally/cancel/v1 ‖ network ‖ postcard(owner, order_id, issued_ms)`.
    pub fn signed_bytes(
        network: &NetworkId,
        owner: &PeerId,
        order_id: &OrderId,
        issued_ms: u64,
    ) -> Vec<u8> {
        signed_bytes(CANCEL_DOMAIN, network, &(owner, order_id, issued_ms))
    }

    /// `owner`'s cancellation of `order_id`, dated `now_ms`.
    pub fn sign(owner: &Identity, network: &NetworkId, order_id: OrderId, now_ms: u64) -> Self {
        let id = owner.peer_id();
        let signature = owner.sign(&Self::signed_bytes(network, &id, &order_id, now_ms));
        Self {
            owner: id,
            order_id,
            issued_ms: now_ms,
            signature,
        }
    }

    /// Checks the date against `now_ms` and the owner's signature on `network`. A cancellation
    /// older than [`MAX_ORDER_TTL_MS`] (plus the skew) has expired: any order it could withdraw
    /// has expired too. Whether the signer owns the order is the book's check.
    pub fn verify(&self, network: &NetworkId, now_ms: u64) -> Result<VerifiedCancel, OrderError> {
        if self.issued_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(OrderError::FromTheFuture {
                issued_ms: self.issued_ms,
                now_ms,
            });
        }
        let expires_ms = self
            .issued_ms
            .saturating_add(MAX_ORDER_TTL_MS + MAX_CLOCK_SKEW_MS);
        if expires_ms <= now_ms {
            return Err(OrderError::Expired { expires_ms, now_ms });
        }
        let signed = Self::signed_bytes(network, &self.owner, &self.order_id, self.issued_ms);
        check_signature("owner", &self.owner, &signed, &self.signature)?;
        Ok(VerifiedCancel(*self))
    }
}

/// A cancellation whose date and signature have been checked. Only [`Cancel::verify`] makes
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifiedCancel(Cancel);

impl VerifiedCancel {
    /// The cancellation.
    pub fn cancel(&self) -> &Cancel {
        &self.0
    }
}

#[cfg(test)]
mod tests;
