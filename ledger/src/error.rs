//! The crate's error types. Each says what was wrong in words a user can act on.

use std::path::PathBuf;

use crate::id::PeerId;

/// A hex identifier (peer id, network id, signature) that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    /// Which kind of identifier.
    pub what: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

/// Why a receipt or a proposal fails verification. Never a panic, whatever the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `seq` must start at 1.
    #[error("seq is 0; receipts are numbered from 1")]
    ZeroSeq,
    /// A peer cannot hold a receipt with itself.
    #[error("uploader and downloader are the same key")]
    SelfReceipt,
    /// A key is not a valid ed25519 point, or is of small order.
    #[error("the {role}'s key {key} is not a valid ed25519 public key")]
    BadKey {
        /// `uploader` or `downloader`.
        role: &'static str,
        /// The offending key.
        key: PeerId,
    },
    /// The signature field is all zero: that party has not signed.
    #[error("the {role}'s signature is missing (all zero)")]
    MissingSignature {
        /// `uploader` or `downloader`.
        role: &'static str,
    },
    /// The signature does not verify over this network's signed bytes.
    #[error(
        "the {role}'s signature does not verify on this network (forged, altered, or made for another network)"
    )]
    BadSignature {
        /// `uploader` or `downloader`.
        role: &'static str,
    },
}

/// Why the uploader refuses to countersign a proposal, or a pair refuses a receipt. A refused
/// proposal is never a conflict: nothing was signed twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The proposal does not verify.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The proposal names another pair.
    #[error("proposal is for pair {got_uploader}→{got_downloader}, not this one")]
    WrongPair {
        /// Uploader named in the proposal.
        got_uploader: PeerId,
        /// Downloader named in the proposal.
        got_downloader: PeerId,
    },
    /// Claims more bytes than were sent.
    #[error("proposal acknowledges {claimed} bytes but only {sent} were sent")]
    MoreThanSent {
        /// Bytes in the proposal.
        claimed: u64,
        /// Bytes this side sent.
        sent: u64,
    },
    /// Pays fewer credits than the bytes it acknowledges are due.
    #[error("proposal pays {offered} credits for {bytes} bytes, {due} are due")]
    TooFewCredits {
        /// Credits in the proposal.
        offered: u64,
        /// Credits due for `bytes`.
        due: u64,
        /// Bytes in the proposal.
        bytes: u64,
    },
    /// Not newer than the latest agreed receipt: an old or replayed proposal.
    #[error(
        "stale proposal: seq {seq} (bytes {bytes}, credits {credits}) is not after the latest agreed seq {latest_seq} (bytes {latest_bytes}, credits {latest_credits})"
    )]
    Stale {
        /// Proposal's seq.
        seq: u64,
        /// Proposal's bytes.
        bytes: u64,
        /// Proposal's credits.
        credits: u64,
        /// Latest agreed seq.
        latest_seq: u64,
        /// Latest agreed bytes.
        latest_bytes: u64,
        /// Latest agreed credits.
        latest_credits: u64,
    },
    /// A countersigned receipt differs from what this side proposed.
    #[error("countersigned receipt does not match the proposal it answers")]
    NotOurProposal,
    /// A counter would pass `u64::MAX`.
    #[error("counter overflow: cumulative bytes or credits would exceed 2^64-1")]
    Overflow,
}

/// Errors of the identity file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not hold exactly 32 bytes.
    #[error(
        "identity file {path} holds {len} bytes, expected 32: it is damaged or not a tally identity; restore it from a backup or run `tally init --force` to make a new identity"
    )]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Others than the owner may read the file.
    #[error(
        "identity file {path} has mode {mode:o}; it must be readable by its owner only: run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An identity already exists and overwriting was not asked for.
    #[error(
        "an identity already exists at {path}; pass --force to replace it (the old identity and its standing are lost)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

/// Errors of the receipt store. Opening never panics on a damaged directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error(
        "the store at {path} is in use by another tally process; stop that process (or use another --data-dir) and try again"
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The store's files are damaged beyond what opening repairs.
    #[error(
        "the store at {path} is corrupt ({detail}); move it aside and re-import your receipts with `tally ledger import`"
    )]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What the backend reported.
        detail: String,
    },
    /// The store was made for another network.
    #[error("the store at {path} belongs to network {found}, not {expected}")]
    WrongNetwork {
        /// The store directory.
        path: PathBuf,
        /// The network asked for.
        expected: crate::id::NetworkId,
        /// The network recorded in the store.
        found: crate::id::NetworkId,
    },
    /// A record in the store does not decode.
    #[error("a stored record under key {key} does not decode: {detail}")]
    BadRecord {
        /// The record's key, hex.
        key: String,
        /// The decoder's message.
        detail: String,
    },
    /// The thread that checks signatures for [`crate::Store::ingest_chunks`] stopped early.
    #[error(
        "the signature-checking thread of an ingest stopped unexpectedly; nothing after the last flushed chunk was applied"
    )]
    VerifierStopped,
    /// An I/O error of the backend (disk full, permission denied, ...).
    #[error("store I/O error at {path}: {source}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
