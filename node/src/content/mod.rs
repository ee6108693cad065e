//! Content: the files a node shares and the bytes peers pay for with receipts.
//!
//! This module owns the content addressing and the content store on disk:
//!
//! - [`Manifest`]: a file cut into [`CHUNK_SIZE`] chunks, each named by its BLAKE3
//!   [`ChunkHash`]; the [`ContentId`] is the BLAKE3 of the manifest's postcard bytes. Its
//!   decoder checks every field and the size caps before it allocates.
//! - [`ContentStore`]: the `content/` directory of a data dir — imports files (streamed, one
//!   chunk in memory), serves verified chunks, exports complete files.
//! - [`Download`]: one content being fetched chunk by chunk, resumable after a crash: a chunk is
//!   verified against the manifest before it touches the disk, and marked as held only once its
//!   bytes are durable.
//!
//! It must not do networking, scheduling or accounting: which peer to ask for which chunk, and
//! what a chunk is worth, belong to the exchange and the market. It is synchronous (`std::fs`)
//! and holds no lock across I/O it does not need to; the async node calls it from
//! `spawn_blocking`. Nothing here panics on what it reads from disk, from a peer or from the
//! user: damage on disk is a [`ContentError::Corrupt`] that says what to do.
//!
//! The exact encodings (manifest bytes, the `have` bitfield, the layout of the directory) are in
//! `docs/PROTOCOL.md`, section "Content".

mod bitfield;
mod download;
mod error;
mod fsutil;
mod hash;
mod manifest;
mod store;

#[cfg(test)]
mod tests;

pub use download::{Download, FLUSH_EVERY_CHUNKS, FLUSH_INTERVAL, WriteOutcome};
pub use error::{ChunkError, ContentError, ManifestError};
pub use hash::{ChunkHash, ContentId, ParseHashError};
pub use manifest::Manifest;
pub use store::{ContentInfo, ContentStore};

/// Size of every chunk but the last, in bytes (256 KiB).
pub const CHUNK_SIZE: u32 = 256 * 1024;

/// Most chunks a manifest may list: 262,144, i.e. files up to 64 GiB. It bounds what a manifest
/// from a peer can make this node allocate.
pub const MAX_CHUNKS: u32 = 262_144;

/// Largest file the store takes, in bytes (64 GiB).
pub const MAX_CONTENT_SIZE: u64 = MAX_CHUNKS as u64 * CHUNK_SIZE as u64;

/// Upper bound on the length of an encoded manifest: the chunk hashes plus the longest
/// possible varints of the header (8 MiB and 26 bytes). A frame carrying a manifest can be
/// capped at this.
pub const MAX_MANIFEST_LEN: usize = 1 + 10 + 5 + 10 + 32 * MAX_CHUNKS as usize;

/// Version of the manifest format this code writes and reads.
pub const MANIFEST_VERSION: u8 = 1;

/// Name of the store's directory inside the data directory.
pub const CONTENT_DIR: &str = "content";
