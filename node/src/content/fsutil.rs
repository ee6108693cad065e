//! Small file-system helpers of the store: durable atomic writes, positional writes, unique
//! temporary names and a guard that removes a temporary file or directory unless kept.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::error::ContentError;

/// Locks `mutex`, ignoring poisoning: every critical section of this module only flips bits or
/// edits a map in ways that leave the data consistent even if a panic interrupted it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prefix of the store's temporary entries; `ContentStore::open` removes leftovers.
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// A name part unique within this machine: the process id and a per-process counter.
pub(super) fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes a rename or a creation inside `dir` durable. Directories cannot be opened for syncing
/// on every platform; there the rename is as durable as the OS makes it.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ContentError::io("sync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates (or truncates) `path`, writes `bytes` and syncs it.
pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ContentError> {
    let write = || -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| ContentError::io("write", path, e))
}

/// Replaces `path` with `bytes` through a synced temporary file renamed over it, then syncs the
/// directory: after a crash the file holds the old bytes or the new ones, never a mix.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ContentError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = TempPath::new(path.with_file_name(format!(".{name}.{}.tmp", unique_suffix())));
    write_synced(tmp.path(), bytes)?;
    fs::rename(tmp.path(), path).map_err(|e| ContentError::io("rename into", path, e))?;
    tmp.keep();
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Writes all of `buf` at `offset` without moving a shared cursor, so several threads can write
/// different chunks of one file at once.
pub(super) fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match file.seek_write(&buf[done..], offset + done as u64) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (file, buf, offset);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "positional writes are not supported on this platform",
        ))
    }
}

/// Reads into `buf` until it is full or the reader ends; returns how many bytes it read.
pub(super) fn read_full(reader: &mut dyn io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A temporary file or directory, removed when dropped unless [`TempPath::keep`] was called.
pub(super) struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// Guards `path` (which need not exist yet).
    pub(super) fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    /// The guarded path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the path: it was renamed into place.
    pub(super) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let result = if self.path.is_dir() {
            fs::remove_dir_all(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
        if let Err(e) = result
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a temporary file");
        }
    }
}
