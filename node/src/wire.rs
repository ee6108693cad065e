//! The messages two peers exchange once connected: requests for manifests, chunk maps and
//! chunks, and the receipt protocol (the latest receipts on connect, proposals and
//! countersignatures). Postcard-encoded frames over the transport's streams; see
//! `docs/PROTOCOL.md` for the layout and the caps.
//!
//! One request per bidirectional stream, opened by the requester: it sends one [`Request`]
//! frame and finishes its side; the responder answers with one [`Response`] frame (a
//! [`Response::Chunk`] header is followed by exactly `len` raw payload bytes) and finishes. A
//! stream per request needs no request ids, lets QUIC interleave chunks of several requests, and
//! a slow or refused request never blocks the others.
//!
//! These types are postcard only: no `skip_serializing_if`, no untagged or flattened enums.
//! Appending variants at the end keeps old peers decoding old messages.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tally_ledger::sync::ShortId;
use tally_ledger::{ConflictProof, Proposal, Receipt};
use tally_market::{Agreement, Bid, Cancel, Offer, TradeProposal};

use crate::content::ContentId;
use crate::gossip::records::{PeerRecord, ProviderRecord};

/// Largest request frame: requests are small and fixed in shape, but for a
/// [`Request::Orders`] of [`MAX_ORDERS_PER_MESSAGE`] bids (about 180 bytes each).
pub const MAX_REQUEST_FRAME: usize = 16 * 1024;

/// Orders and cancellations in one [`Request::Orders`] at most.
pub const MAX_ORDERS_PER_MESSAGE: usize = 64;

/// Largest response frame: a manifest of the largest content the content store accepts.
pub const MAX_RESPONSE_FRAME: usize = crate::content::MAX_MANIFEST_LEN + 1024;

/// Longest human-readable reason a peer sends back; longer ones are cut.
pub const MAX_REASON: usize = 512;

/// What one peer asks another, one per stream.
// One per stream, decoded and consumed at once, never stored in bulk: boxing the receipts
// would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sent once by the dialer after the handshake: the latest receipts it holds for the two
    /// pairs of this connection. The answer is [`Response::Latest`] with the responder's; each
    /// side then re-syncs (the higher valid receipt wins; a contradiction is a conflict proof).
    Latest(LatestReceipts),
    /// The manifest of a content.
    Manifest {
        /// Which content.
        content: ContentId,
    },
    /// Which chunks of a content the responder can serve.
    Have {
        /// Which content.
        content: ContentId,
    },
    /// One chunk of a content.
    Chunk {
        /// Which content.
        content: ContentId,
        /// The chunk's index in the manifest.
        index: u32,
    },
    /// The requester (downloader) proposes a receipt for what it received from the responder
    /// (uploader). The answer is the countersigned receipt or a refusal.
    Propose(Proposal),
    /// Opens a gossip session: from here on both sides send [`GossipFrame`]s on this stream
    /// (cap [`MAX_GOSSIP_FRAME`]) as `docs/PROTOCOL.md` ("Gossip sessions") describes. The
    /// responder may instead answer one [`Response::Refused`] (busy, or asked too often).
    Gossip,
    /// A conflict proof the requester has just learned, pushed at once to every connected peer
    /// so it overtakes the periodic sync. The answer is [`Response::Received`].
    Conflict(ConflictProof),
    /// Offers, bids and cancellations (at most [`MAX_ORDERS_PER_MESSAGE`]) the requester has
    /// just made or learned, flooded at once to every connected peer, and the live orders of
    /// its book pushed to a peer that has just connected. The answer is [`Response::Received`],
    /// or a refusal ([`RefusalCode::Invalid`], with a penalty) if any does not verify.
    Orders(Vec<OrderMessage>),
    /// The buyer's signed trade terms for a fill of its bid against the responder's offer. The
    /// answer is [`Response::Agreement`] (the responder countersigned) or a refusal.
    Trade(TradeProposal),
}

/// One signed order or cancellation, as [`Request::Orders`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderMessage {
    /// An offer to sell upload.
    Offer(Offer),
    /// A bid to buy upload.
    Bid(Bid),
    /// The owner's withdrawal of an offer or a bid.
    Cancel(Cancel),
}

/// The two pairs between two peers, from the sender's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestReceipts {
    /// The latest receipt in which the sender uploaded to the receiver.
    pub sender_uploaded: Option<Receipt>,
    /// The latest receipt in which the sender downloaded from the receiver.
    pub sender_downloaded: Option<Receipt>,
}

/// The one answer to a [`Request`].
#[allow(clippy::large_enum_variant)] // as for Request
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The responder's latest receipts of the two pairs.
    Latest(LatestReceipts),
    /// The manifest, encoded as the content store encodes it (its id is the BLAKE3 of these
    /// bytes, so the requester checks it before decoding).
    Manifest {
        /// postcard(Manifest).
        encoded: Vec<u8>,
    },
    /// The chunks the responder holds: one bit per chunk, chunk 0 in the most significant bit
    /// of byte 0 (as BitTorrent's bitfield and the content store's `have` file).
    Have {
        /// The content's chunk count, so the bitfield's length can be checked.
        chunks: u32,
        /// `ceil(chunks / 8)` bytes.
        bitfield: Vec<u8>,
    },
    /// The chunk follows as exactly `len` raw bytes on this stream.
    Chunk {
        /// Payload bytes that follow.
        len: u32,
    },
    /// The countersigned receipt: the uploader stored and flushed it before sending it.
    Countersigned(Receipt),
    /// The request was not served.
    Refused {
        /// Why, for programs.
        reason: RefusalCode,
        /// Why, for people (at most [`MAX_REASON`] bytes).
        message: String,
    },
    /// The request was taken (the answer to [`Request::Conflict`] and [`Request::Orders`]).
    Received,
    /// The seller's countersignature of a [`Request::Trade`]: the trade is agreed.
    Agreement(Agreement),
}

/// Largest gossip frame: a set-reconciliation message at its cap, with room for framing.
pub const MAX_GOSSIP_FRAME: usize = tally_ledger::sync::MAX_MESSAGE_BYTES + 1024;
/// Receipts in one [`GossipFrame::Receipts`] at most (about 110 KB).
pub const MAX_RECEIPTS_PER_FRAME: usize = 512;
/// Conflict proofs in one [`GossipFrame::Conflicts`] at most.
pub const MAX_CONFLICTS_PER_FRAME: usize = 64;
/// Provider records in one [`GossipFrame::Records`] at most.
pub const MAX_PROVIDER_RECORDS_PER_FRAME: usize = 256;
/// Peer records in one [`GossipFrame::Records`] at most.
pub const MAX_PEER_RECORDS_PER_FRAME: usize = 64;
/// Short ids in [`GossipHello::recent`] and in one [`GossipFrame::Want`] at most, so the
/// receipts named fit one [`GossipFrame::Receipts`].
pub const MAX_ANNOUNCED: usize = MAX_RECEIPTS_PER_FRAME;

/// What travels on a gossip stream after [`Request::Gossip`], both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipFrame {
    /// The first frame each side sends.
    Hello(GossipHello),
    /// Conflict proofs (at most [`MAX_CONFLICTS_PER_FRAME`]).
    Conflicts(Vec<ConflictProof>),
    /// Signed provider and peer records.
    Records(Records),
    /// A set-reconciliation message, encoded by `tally_ledger::sync::Message::encode`. Ends
    /// the sender's turn.
    Sync(Vec<u8>),
    /// Fully signed receipts the other side lacks (at most [`MAX_RECEIPTS_PER_FRAME`]).
    Receipts(Vec<Receipt>),
    /// The sender has nothing more to say: ends its turn and the session.
    End,
    /// The short ids of [`GossipHello::recent`] the sender lacks (at most [`MAX_ANNOUNCED`]),
    /// sent only when the other side announced any; the other side answers with one
    /// [`GossipFrame::Receipts`] when this is not empty.
    Want(Vec<ShortId>),
}

/// The opening of a gossip session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipHello {
    /// Conflict proofs the sender holds.
    pub conflicts: u32,
    /// BLAKE3 over the sorted ids of those proofs: when both sides' digests differ, each sends
    /// all of its proofs (they are few) right after the hellos.
    pub conflicts_digest: [u8; 32],
    /// The address the sender sees the receiver's connection come from, so a node bound to an
    /// unspecified address learns how others reach it (for its peer record).
    pub observed: SocketAddr,
    /// Short ids (`tally_ledger::sync::short_id`) of the receipts the sender learned in its
    /// last [`crate::gossip::ANNOUNCE_INTERVALS`] gossip intervals, newest first, at most
    /// [`MAX_ANNOUNCED`]: the receiver asks for those it lacks before reconciling, so a receipt
    /// or two costs 8 bytes a session, not a reconciliation's descent to them.
    pub recent: Vec<ShortId>,
}

/// Provider and peer records, sent once per session each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// At most [`MAX_PROVIDER_RECORDS_PER_FRAME`].
    pub providers: Vec<ProviderRecord>,
    /// At most [`MAX_PEER_RECORDS_PER_FRAME`].
    pub peers: Vec<PeerRecord>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The responder does not hold that content or chunk.
    NotFound,
    /// The requester's unacknowledged bytes fill its credit window: it must propose a receipt
    /// before more is sent.
    CreditWindowFull {
        /// Bytes sent to the requester that no receipt covers yet.
        unacknowledged: u64,
        /// The requester's window.
        window: u64,
    },
    /// The proposal was refused (bad signature, more bytes than sent, stale, too few credits).
    BadProposal,
    /// The responder is shutting down or overloaded; try another provider or later.
    Unavailable,
    /// The request broke the protocol (an index beyond the content, say).
    Invalid,
}

impl Response {
    /// A refusal with a message cut to [`MAX_REASON`] bytes (at a character boundary).
    pub fn refused(reason: RefusalCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Response::Refused { reason, message }
    }
}

/// Whether chunk `index` is set in a [`Response::Have`] bitfield.
pub fn bit(bitfield: &[u8], index: u32) -> bool {
    let byte = (index / 8) as usize;
    bitfield
        .get(byte)
        .is_some_and(|b| b & (0x80 >> (index % 8)) != 0)
}

/// A bitfield of `chunks` bits with those of `have` set.
pub fn bitfield(chunks: u32, have: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut out = vec![0u8; chunks.div_ceil(8) as usize];
    for index in have {
        if let Some(byte) = out.get_mut((index / 8) as usize) {
            *byte |= 0x80 >> (index % 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tally_ledger::{Identity, NetworkId, ReceiptBody};

    fn receipt(seq: u64) -> Receipt {
        let net = NetworkId::from_name("tally");
        let (up, down) = (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
        );
        ReceiptBody {
            uploader: up.peer_id(),
            downloader: down.peer_id(),
            seq,
            bytes: seq * 10,
            credits: seq * 10,
            time_ms: seq,
        }
        .propose(&down, &net)
        .countersign(&up, &net)
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: &T,
    ) {
        let bytes = postcard::to_stdvec(value).unwrap();
        assert_eq!(&postcard::from_bytes::<T>(&bytes).unwrap(), value);
    }

    #[test]
    fn every_message_round_trips_and_requests_fit_their_cap() {
        let content = ContentId([7; 32]);
        let r = receipt(3);
        let proposal = r.body().propose(
            &Identity::from_secret_bytes([2; 32]),
            &NetworkId::from_name("tally"),
        );
        let latest = LatestReceipts {
            sender_uploaded: Some(r),
            sender_downloaded: None,
        };
        let requests = [
            Request::Latest(latest),
            Request::Manifest { content },
            Request::Have { content },
            Request::Chunk {
                content,
                index: u32::MAX,
            },
            Request::Propose(proposal),
        ];
        for request in &requests {
            round_trip(request);
            assert!(postcard::to_stdvec(request).unwrap().len() <= MAX_REQUEST_FRAME);
        }
        for response in [
            Response::Latest(latest),
            Response::Manifest {
                encoded: vec![1, 2, 3],
            },
            Response::Have {
                chunks: 9,
                bitfield: bitfield(9, [0, 8]),
            },
            Response::Chunk { len: 262_144 },
            Response::Countersigned(r),
            Response::refused(
                RefusalCode::CreditWindowFull {
                    unacknowledged: 5,
                    window: 4,
                },
                "full",
            ),
        ] {
            round_trip(&response);
        }
    }

    #[test]
    fn a_full_message_of_the_largest_orders_fits_the_request_cap() {
        let net = NetworkId::from_name("tally");
        let owner = Identity::from_secret_bytes([3; 32]);
        let bid = tally_market::Bid::sign(
            &owner,
            &net,
            tally_market::BidTerms {
                bytes: u64::MAX,
                content: Some([9; 32]),
                max_price_per_gib: u64::MAX,
                issued_ms: u64::MAX,
                expires_ms: u64::MAX,
                nonce: u64::MAX,
            },
        );
        let offer = tally_market::Offer::sign(
            &owner,
            &net,
            tally_market::OfferTerms {
                bytes: u64::MAX,
                max_rate: u64::MAX,
                price_per_gib: u64::MAX,
                issued_ms: u64::MAX,
                expires_ms: u64::MAX,
                nonce: u64::MAX,
            },
        );
        let cancel = tally_market::Cancel::sign(&owner, &net, bid.id(&net), u64::MAX);
        let full = Request::Orders(vec![OrderMessage::Bid(bid); MAX_ORDERS_PER_MESSAGE]);
        assert!(postcard::to_stdvec(&full).unwrap().len() <= MAX_REQUEST_FRAME);
        round_trip(&Request::Orders(vec![
            OrderMessage::Offer(offer),
            OrderMessage::Bid(bid),
            OrderMessage::Cancel(cancel),
        ]));
        let fill = tally_market::Fill {
            offer_id: offer.id(&net),
            bid_id: bid.id(&net),
            seller: owner.peer_id(),
            buyer: Identity::from_secret_bytes([4; 32]).peer_id(),
            bytes: 5,
            price_per_gib: 7,
            content: None,
        };
        let proposal = tally_market::TradeTerms::from_fill(&fill, 9)
            .propose(&Identity::from_secret_bytes([4; 32]), &net);
        let trade = Request::Trade(proposal);
        round_trip(&trade);
        assert!(postcard::to_stdvec(&trade).unwrap().len() <= MAX_REQUEST_FRAME);
        round_trip(&Response::Agreement(proposal.countersign(&owner, &net)));
    }

    #[test]
    fn refusal_messages_are_cut_at_a_character_boundary() {
        let Response::Refused { message, .. } =
            Response::refused(RefusalCode::Invalid, "é".repeat(MAX_REASON))
        else {
            unreachable!()
        };
        assert!(message.len() <= MAX_REASON);
        assert!(message.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn bitfields_hold_exactly_the_chunks_set(chunks in 0u32..2000, have in prop::collection::btree_set(0u32..2000, 0..100)) {
            let have: Vec<u32> = have.into_iter().filter(|&i| i < chunks).collect();
            let field = bitfield(chunks, have.iter().copied());
            prop_assert_eq!(field.len(), chunks.div_ceil(8) as usize);
            for i in 0..chunks + 8 {
                prop_assert_eq!(bit(&field, i), have.contains(&i));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = postcard::from_bytes::<Request>(&bytes);
            let _ = postcard::from_bytes::<Response>(&bytes);
        }
    }
}
