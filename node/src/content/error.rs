//! The content module's errors. Each says what was wrong and, where a person can act, what to do.

use std::io;
use std::path::PathBuf;

use super::hash::ContentId;

/// Why manifest bytes were refused. Never a panic, whatever the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Longer than any valid manifest: refused before reading it.
    #[error("manifest is {len} bytes, more than the {max} a manifest can be")]
    TooLong {
        /// Length of the input.
        len: usize,
        /// [`MAX_MANIFEST_LEN`](super::MAX_MANIFEST_LEN).
        max: usize,
    },
    /// A version this node does not know.
    #[error("manifest version {0} is not supported (this node reads version 1): update tally")]
    UnsupportedVersion(u8),
    /// A chunk size other than [`CHUNK_SIZE`](super::CHUNK_SIZE).
    #[error("manifest chunk size is {found} bytes, the protocol fixes {expected}")]
    WrongChunkSize {
        /// Chunk size in the manifest.
        found: u32,
        /// [`CHUNK_SIZE`](super::CHUNK_SIZE).
        expected: u32,
    },
    /// More chunks than [`MAX_CHUNKS`](super::MAX_CHUNKS): refused before allocating them.
    #[error("manifest lists {count} chunks, more than the {max} this node accepts (64 GiB)")]
    TooManyChunks {
        /// Chunk count announced by the manifest.
        count: u64,
        /// [`MAX_CHUNKS`](super::MAX_CHUNKS).
        max: u32,
    },
    /// The chunk count does not match the size.
    #[error("manifest of {size} bytes lists {found} chunks, it needs {expected}")]
    ChunkCount {
        /// File size in the manifest.
        size: u64,
        /// Chunks listed.
        found: u64,
        /// ceil(size / chunk size).
        expected: u64,
    },
    /// Not postcard of a manifest: truncated, trailing bytes, or a bad varint.
    #[error("manifest bytes are malformed: {0}")]
    Malformed(String),
    /// Decodes, but is not the canonical encoding (an overlong varint): accepting it would let
    /// two byte strings name one manifest.
    #[error("manifest bytes are not canonical postcard (overlong varint)")]
    NotCanonical,
}

/// Why a chunk offered to a [`Download`](super::Download) was refused. Bad bytes never touch
/// the disk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The bytes do not hash to the manifest's chunk hash.
    #[error("chunk {index} does not match its hash in the manifest")]
    BadHash {
        /// The chunk's index.
        index: u32,
    },
    /// The bytes are not as long as the manifest says this chunk is.
    #[error("chunk {index} is {found} bytes, the manifest says {expected}")]
    WrongLength {
        /// The chunk's index.
        index: u32,
        /// Bytes given.
        found: usize,
        /// The chunk's length by the manifest.
        expected: u32,
    },
    /// No such chunk in this content.
    #[error("chunk {index} is out of range: the content has {chunks} chunks")]
    OutOfRange {
        /// The index asked for.
        index: u32,
        /// Chunks in the content.
        chunks: u32,
    },
    /// The chunk was good but this node could not store it (disk full, I/O error).
    #[error(transparent)]
    Store(#[from] ContentError),
}

impl ChunkError {
    /// Whether the peer that sent the chunk is to blame (bad bytes, wrong index), as opposed to
    /// this node's disk.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, ChunkError::Store(_))
    }
}

/// An error of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The store does not hold this content.
    #[error("content {id} is not in the store: import it or download it first")]
    NotFound {
        /// The content asked for.
        id: ContentId,
    },
    /// The content is only partly downloaded.
    #[error(
        "content {id} is not complete ({have} of {chunks} chunks): let its download finish first"
    )]
    Incomplete {
        /// The content.
        id: ContentId,
        /// Chunks held.
        have: u32,
        /// Chunks in the content.
        chunks: u32,
    },
    /// A download was started for content the store already holds whole.
    #[error("content {id} is already complete in the store: export it instead of downloading it")]
    AlreadyComplete {
        /// The content.
        id: ContentId,
    },
    /// Another download or import of the same content is under way in this process.
    #[error("content {id} is busy: {what} of it is in progress on this node; wait for it to end")]
    Busy {
        /// The content.
        id: ContentId,
        /// `a download` or `an import`.
        what: &'static str,
    },
    /// A chunk index past the end of the content.
    #[error("chunk {index} of content {id} is out of range: it has {chunks} chunks")]
    ChunkOutOfRange {
        /// The content.
        id: ContentId,
        /// The index asked for.
        index: u32,
        /// Chunks in the content.
        chunks: u32,
    },
    /// This node does not hold that chunk (yet).
    #[error("this node does not have chunk {index} of content {id}")]
    ChunkMissing {
        /// The content.
        id: ContentId,
        /// The chunk.
        index: u32,
    },
    /// The file to import does not exist.
    #[error("cannot import {}: no such file; check the path", path.display())]
    SourceMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The path to import is a directory.
    #[error(
        "cannot import {}: it is a directory; import the files in it one at a time",
        path.display()
    )]
    SourceIsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The file to import could not be opened or read.
    #[error("cannot read {}: {source}; check that it is a file you may read", path.display())]
    SourceUnreadable {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file to import is larger than the store takes.
    #[error(
        "cannot import {}: it is larger than {max_bytes} bytes (64 GiB), the most one content can hold",
        path.display()
    )]
    TooLarge {
        /// The path given.
        path: PathBuf,
        /// [`MAX_CONTENT_SIZE`](super::MAX_CONTENT_SIZE).
        max_bytes: u64,
    },
    /// The export target is a directory.
    #[error(
        "cannot export to {}: it is a directory; give the path of a file to write (inside it, say)",
        path.display()
    )]
    TargetIsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The export target's directory does not exist.
    #[error(
        "cannot export to {}: directory {} does not exist; create it first",
        path.display(),
        parent.display()
    )]
    TargetParentMissing {
        /// The path given.
        path: PathBuf,
        /// Its parent directory.
        parent: PathBuf,
    },
    /// A file of the store is damaged.
    #[error("{} is damaged: {detail}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        detail: String,
    },
    /// An I/O operation on the store or an export target failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `rename`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl ContentError {
    /// An [`ContentError::Io`] for `action` on `path`.
    pub(super) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ContentError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A [`ContentError::Corrupt`] for a file of the content directory `dir`, telling to delete
    /// that directory and fetch the content again.
    pub(super) fn corrupt_in(
        dir: &std::path::Path,
        path: impl Into<PathBuf>,
        what: impl std::fmt::Display,
    ) -> Self {
        ContentError::Corrupt {
            path: path.into(),
            detail: format!(
                "{what}; delete the directory {} and import or download the content again",
                dir.display()
            ),
        }
    }
}
