//! # tally-ledger
//!
//! Owns who signs and what they sign: a node's ed25519 [`Identity`] and [`PeerId`], the
//! [`NetworkId`], the double-signed cumulative [`Receipt`] with its signed bytes, single and batch
//! verification, the sans-I/O logic of one pair's receipt chain ([`pair`]), the sled-backed
//! [`Store`] of the latest receipt of every known pair, with its conflict proofs and a cap on
//! receipts between other peers ([`store::retention`]), and the sans-I/O
//! set reconciliation that gossip uses to find which receipts two nodes must push ([`sync`]).
//!
//! It must not do network I/O, start async runtimes or long-lived threads, or read a clock: time
//! and randomness come in as arguments, so the node and the testnet's simulator drive the same
//! code. Its only disk I/O is the store and the identity file. The one thread it starts is
//! scoped: [`Store::ingest_chunks`] checks the next chunk's signatures beside the writes of the
//! one before, and joins that thread before it returns.
//!
//! The layout: [`id`] (keys), [`receipt`] (the record and its rules), [`pair`] (the two sides of
//! one chain), [`store`] (persistence), [`sync`] (gossip's reconciliation), [`error`] (what can go
//! wrong, in words a user can act on).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
pub mod error;
pub mod id;
pub mod pair;
pub mod receipt;
pub mod store;
pub mod sync;

pub use error::{IdentityError, ParseError, Refusal, StoreError, VerifyError};
pub use id::{Identity, NetworkId, PeerId, Signature};
pub use pair::{DownloaderPair, Resync, UploaderPair};
pub use receipt::{
    BatchVerdict, ConflictProof, Order, Pair, Proposal, Receipt, ReceiptBody, VerifiedReceipt,
    verify_batch,
};
pub use store::{Applied, CheckReport, Evicted, Ingested, Store, StoreConfig, Totals};
pub use sync::{Message, Reply, SyncError, SyncItems, SyncParams};
