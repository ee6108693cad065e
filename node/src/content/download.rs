//! One content being downloaded: chunks arrive in any order from any peer, are verified against
//! the manifest, written in place in `data.partial`, and marked in the `have` bitfield once they
//! are durable.
//!
//! Crash safety: a chunk is marked in `have` only after an `fdatasync` of the partial file, and
//! `have` is replaced atomically (temporary file, fsync, rename), so after a SIGKILL or a power
//! cut every chunk `have` names is on disk. Marking is batched ([`FLUSH_EVERY_CHUNKS`] chunks or
//! [`FLUSH_INTERVAL`]); chunks written but not yet marked are simply fetched again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use super::bitfield::Bitfield;
use super::error::{ChunkError, ContentError};
use super::fsutil::{lock, sync_dir, write_all_at, write_atomic};
use super::hash::{ChunkHash, ContentId};
use super::manifest::Manifest;
use super::store::{ClaimGuard, DATA_FILE, HAVE_FILE, PARTIAL_FILE};

/// A download marks its new chunks durable after at most this many chunks (8 MiB)...
pub const FLUSH_EVERY_CHUNKS: u32 = 32;
/// ...or when a chunk arrives this long after the last flush.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What [`Download::write_chunk`] did with a good chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The chunk was new and is now written: count it.
    Stored,
    /// The chunk was held already: nothing was written, count nothing.
    AlreadyHad,
}

/// A download's progress, shared with the store so it can serve the chunks already written.
pub(super) struct Progress {
    state: Mutex<State>,
}

struct State {
    /// Chunks verified and written to the partial file (durable or not yet).
    written: Bitfield,
    /// How many of them the `have` file on disk names.
    durable: u32,
    last_flush: Instant,
}

impl Progress {
    pub(super) fn new(have: Bitfield) -> Self {
        let durable = have.count();
        Self {
            state: Mutex::new(State {
                written: have,
                durable,
                last_flush: Instant::now(),
            }),
        }
    }

    /// Starts over from `have`, the bitfield read from disk.
    pub(super) fn reset(&self, have: Bitfield) {
        *lock(&self.state) = State {
            durable: have.count(),
            written: have,
            last_flush: Instant::now(),
        };
    }

    /// Whether chunk `index` is written.
    pub(super) fn has(&self, index: u32) -> bool {
        lock(&self.state).written.get(index)
    }

    /// A copy of the written chunks.
    pub(super) fn snapshot(&self) -> Bitfield {
        lock(&self.state).written.clone()
    }
}

/// When a download marks new chunks durable.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlushPolicy {
    pub(super) every_chunks: u32,
    pub(super) interval: Duration,
}

/// A download in progress, from [`ContentStore::start_download`](super::ContentStore::start_download).
///
/// All methods take `&self`, so several threads may write chunks at once (share it in an
/// `Arc`): hashing and writing run without a lock, at distinct offsets of the file. Only one
/// `Download` per content exists at a time. Dropping it flushes what was written; the download
/// resumes with [`ContentStore::start_download`](super::ContentStore::start_download).
pub struct Download {
    id: ContentId,
    manifest: Arc<Manifest>,
    dir: PathBuf,
    partial: File,
    progress: Arc<Progress>,
    /// Serialises flushes, so an older bitfield never replaces a newer one.
    flushing: Mutex<()>,
    pub(super) policy: FlushPolicy,
    /// Finished (or abandoned by a test): dropping must not write `have` again.
    done: bool,
    /// Declared last: released after `drop` has flushed.
    _claim: ClaimGuard,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("id", &self.id)
            .field("have", &self.have_count())
            .field("chunks", &self.manifest.chunk_count())
            .finish_non_exhaustive()
    }
}

impl Download {
    pub(super) fn new(
        id: ContentId,
        manifest: Arc<Manifest>,
        dir: PathBuf,
        partial: File,
        progress: Arc<Progress>,
        claim: ClaimGuard,
    ) -> Self {
        Self {
            id,
            manifest,
            dir,
            partial,
            progress,
            flushing: Mutex::new(()),
            policy: FlushPolicy {
                every_chunks: FLUSH_EVERY_CHUNKS,
                interval: FLUSH_INTERVAL,
            },
            done: false,
            _claim: claim,
        }
    }

    /// The content's id.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// The content's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The chunks still to fetch, in order.
    pub fn missing(&self) -> Vec<u32> {
        lock(&self.progress.state).written.missing()
    }

    /// How many chunks are held (written and verified, flushed or not).
    pub fn have_count(&self) -> u32 {
        lock(&self.progress.state).written.count()
    }

    /// Whether chunk `index` is held.
    pub fn has_chunk(&self, index: u32) -> bool {
        self.progress.has(index)
    }

    /// Whether every chunk is held: time to [`Download::finish`].
    pub fn is_complete(&self) -> bool {
        lock(&self.progress.state).written.is_full()
    }

    /// Verifies chunk `index` against the manifest and, if it is good and new, writes it. Bytes
    /// that fail the check are never written. A chunk held already is not an error: it returns
    /// [`WriteOutcome::AlreadyHad`] and writes nothing. Flushes when one is due (see
    /// [`Download::flush`]), on the calling thread.
    pub fn write_chunk(&self, index: u32, bytes: &[u8]) -> Result<WriteOutcome, ChunkError> {
        let (outcome, flush_due) = self.write_chunk_unflushed(index, bytes)?;
        if flush_due {
            // Leave it to a flush already running; its successor picks this chunk up.
            match self.flushing.try_lock() {
                Ok(_guard) => self.flush_locked()?,
                Err(TryLockError::Poisoned(poisoned)) => {
                    let _guard = poisoned.into_inner();
                    self.flush_locked()?;
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        Ok(outcome)
    }

    /// [`Download::write_chunk`] without the flush: also returns whether one is due
    /// ([`FLUSH_EVERY_CHUNKS`] chunks or [`FLUSH_INTERVAL`] since the last), for the caller to
    /// run [`Download::flush`] where it likes. Until it does, the new chunks are written but not
    /// marked in `have`, so a crash only makes them fetched again.
    ///
    /// A swarm download flushes on a thread of its own: an 8 MiB `fdatasync` takes 12–16 ms on
    /// the disk of docs/PERFORMANCE.md, long enough to stall the request lane that ran it.
    pub fn write_chunk_unflushed(
        &self,
        index: u32,
        bytes: &[u8],
    ) -> Result<(WriteOutcome, bool), ChunkError> {
        let chunks = self.manifest.chunk_count();
        let (Some(expected), Some(hash)) = (
            self.manifest.chunk_len(index),
            self.manifest.chunk_hash(index),
        ) else {
            return Err(ChunkError::OutOfRange { index, chunks });
        };
        if bytes.len() != expected as usize {
            return Err(ChunkError::WrongLength {
                index,
                found: bytes.len(),
                expected,
            });
        }
        // Checked even for a chunk held already, so a peer sending bad bytes is always caught.
        if ChunkHash::of(bytes) != *hash {
            return Err(ChunkError::BadHash { index });
        }
        if self.progress.has(index) {
            return Ok((WriteOutcome::AlreadyHad, false));
        }
        let offset = self.manifest.chunk_offset(index);
        write_all_at(&self.partial, bytes, offset)
            .map_err(|e| ContentError::io("write", self.dir.join(PARTIAL_FILE), e))?;
        let flush_due = {
            let mut state = lock(&self.progress.state);
            if !state.written.set(index) {
                // Another thread wrote the same good bytes meanwhile.
                return Ok((WriteOutcome::AlreadyHad, false));
            }
            state.written.count() - state.durable >= self.policy.every_chunks
                || state.last_flush.elapsed() >= self.policy.interval
        };
        Ok((WriteOutcome::Stored, flush_due))
    }

    /// Makes every chunk written so far durable and marks it in `have`. Called on its own every
    /// [`FLUSH_EVERY_CHUNKS`] chunks or [`FLUSH_INTERVAL`] as chunks arrive; call it when the
    /// download pauses, so an idle download loses nothing to a crash.
    pub fn flush(&self) -> Result<(), ContentError> {
        let _guard = lock(&self.flushing);
        self.flush_locked()
    }

    /// [`Download::flush`], with `flushing` held by the caller.
    fn flush_locked(&self) -> Result<(), ContentError> {
        let snapshot = {
            let mut state = lock(&self.progress.state);
            if state.written.count() == state.durable {
                state.last_flush = Instant::now();
                return Ok(());
            }
            state.written.clone()
        };
        // Every chunk in the snapshot was written before it was marked, so this sync covers it.
        self.partial
            .sync_data()
            .map_err(|e| ContentError::io("sync", self.dir.join(PARTIAL_FILE), e))?;
        write_atomic(&self.dir.join(HAVE_FILE), snapshot.as_bytes())?;
        let mut state = lock(&self.progress.state);
        state.durable = snapshot.count();
        state.last_flush = Instant::now();
        Ok(())
    }

    /// Completes the download: syncs the file, renames `data.partial` to `data` and removes
    /// `have`. Fails with [`ContentError::Incomplete`] if chunks are missing (what was written
    /// is flushed, and the download can be resumed).
    pub fn finish(mut self) -> Result<(), ContentError> {
        let (have, chunks) = {
            let state = lock(&self.progress.state);
            (state.written.count(), self.manifest.chunk_count())
        };
        if have != chunks {
            return Err(ContentError::Incomplete {
                id: self.id,
                have,
                chunks,
            });
        }
        // First make `have` whole, so a failure below leaves a download that resumes complete.
        self.flush()?;
        let partial = self.dir.join(PARTIAL_FILE);
        self.partial
            .sync_all()
            .map_err(|e| ContentError::io("sync", &partial, e))?;
        let data = self.dir.join(DATA_FILE);
        std::fs::rename(&partial, &data).map_err(|e| ContentError::io("rename into", &data, e))?;
        // From here on the content is complete, whatever happens to `have`.
        self.done = true;
        sync_dir(&self.dir)?;
        let have_path = self.dir.join(HAVE_FILE);
        match std::fs::remove_file(&have_path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                // Harmless: the store removes it on its next open.
                tracing::warn!(path = %have_path.display(), error = %e, "cannot remove a finished download's bitfield");
                Ok(())
            }
        }
    }

    /// Drops the download without flushing, as if the process had been killed.
    #[cfg(test)]
    pub(super) fn simulate_kill(mut self) {
        self.done = true;
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::warn!(content = %self.id.fmt_short(), error = %e, "cannot flush a download as it stops; unflushed chunks will be fetched again");
        }
    }
}
