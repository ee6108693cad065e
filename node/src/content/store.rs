//! The content store: one directory per content id under `DATA_DIR/content/`.
//!
//! ```text
//! content/<id>/manifest        the manifest's canonical bytes
//! content/<id>/data            the whole file, once complete
//! content/<id>/data.partial    while downloading: the file, full size, chunks written as verified
//! content/<id>/have            while downloading: the bitfield of durable verified chunks
//! content/<id>/meta.json       {"name": "..."}: a display name, if known
//! content/.tmp-*               imports and new downloads being assembled; removed on open
//! ```
//!
//! A content directory appears whole, by renaming a temporary directory into place, so a crash
//! never leaves one without its manifest. One process owns the directory: the store keeps an
//! index of it, built by [`ContentStore::open`], and does not watch for outside changes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::bitfield::Bitfield;
use super::download::{Download, Progress};
use super::error::ContentError;
use super::fsutil::{
    TMP_PREFIX, TempPath, lock, read_full, sync_dir, unique_suffix, write_atomic, write_synced,
};
use super::hash::{ChunkHash, ContentId};
use super::manifest::Manifest;
use super::{CHUNK_SIZE, MAX_CHUNKS, MAX_CONTENT_SIZE, MAX_MANIFEST_LEN};

/// File of a content directory holding the manifest.
pub(super) const MANIFEST_FILE: &str = "manifest";
/// File of a content directory holding the complete content.
pub(super) const DATA_FILE: &str = "data";
/// File of a content directory holding a download in progress.
pub(super) const PARTIAL_FILE: &str = "data.partial";
/// File of a content directory holding the download's bitfield.
pub(super) const HAVE_FILE: &str = "have";
/// File of a content directory holding its display name.
pub(super) const META_FILE: &str = "meta.json";

/// An export asks its helper thread to sync the copy every this many bytes (32 MiB).
const EXPORT_SYNC_EVERY: u64 = 32 * 1024 * 1024;

/// Longest display name kept, in bytes: names are for people, never paths.
const MAX_NAME_LEN: usize = 255;

/// One content as [`ContentStore::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    /// The content's id.
    pub id: ContentId,
    /// Its size in bytes.
    pub size: u64,
    /// How many chunks it has.
    pub chunks: u32,
    /// How many of them this node holds, verified.
    pub have_chunks: u32,
    /// Whether this node holds all of it.
    pub complete: bool,
    /// A display name, if one is known (the imported file's name, or the one a download was
    /// started with). Not part of the content's identity.
    pub name: Option<String>,
}

/// The `meta.json` of a content directory.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    name: Option<String>,
}

/// Who is changing a content directory in this process.
pub(super) enum Claim {
    /// A [`Download`], with the progress it shares with the store.
    Download(Arc<Progress>),
    /// An import placing its result.
    Import,
}

/// The store's shared state.
pub(super) struct Inner {
    root: PathBuf,
    /// Every content directory the store knows, with its manifest once read (contents never
    /// change under an id, so a read manifest stays valid).
    entries: Mutex<BTreeMap<ContentId, Option<Arc<Manifest>>>>,
    /// Contents that a download or an import is changing. Only the claim holder renames or
    /// removes files of that content.
    claims: Mutex<HashMap<ContentId, Claim>>,
}

/// A claim on a content id, released when dropped.
pub(super) struct ClaimGuard {
    inner: Arc<Inner>,
    id: ContentId,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        lock(&self.inner.claims).remove(&self.id);
    }
}

/// What the store holds of one content.
enum Holding {
    Complete,
    Partial(Bitfield),
}

/// The content store. Cheap to clone (all clones share one store) and safe to use from several
/// threads: every method takes `&self`, and locks are held only around in-memory maps.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl ContentStore {
    /// Opens the store in `dir` (normally `DATA_DIR/`[`CONTENT_DIR`](super::CONTENT_DIR)),
    /// creating it if needed. Removes what a crash left half done (temporary directories, a
    /// download's files next to its completed data); skips, with a warning in the log, entries
    /// that are not content directories.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ContentError> {
        let root = dir.into();
        fs::create_dir_all(&root).map_err(|e| ContentError::io("create directory", &root, e))?;
        let mut entries = BTreeMap::new();
        let listing = fs::read_dir(&root).map_err(|e| ContentError::io("read", &root, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| ContentError::io("read", &root, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(path = %path.display(), "skipping a file of the content store whose name is not UTF-8");
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                // An import or a download that was being assembled when the process died.
                tracing::debug!(path = %path.display(), "removing a leftover temporary entry");
                remove_any(&path);
                continue;
            }
            let id = match name.parse::<ContentId>() {
                Ok(id) if id.to_string() == name => id,
                _ => {
                    tracing::warn!(path = %path.display(), "skipping an entry of the content store that is not a content directory");
                    continue;
                }
            };
            if !path.is_dir() || !path.join(MANIFEST_FILE).is_file() {
                tracing::warn!(path = %path.display(), "skipping a content directory without a manifest");
                continue;
            }
            tidy_content_dir(&path);
            entries.insert(id, None);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                entries: Mutex::new(entries),
                claims: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Imports the file at `path`: streams it through one chunk-sized buffer, hashing each
    /// chunk and copying it into the store, then makes the copy durable and moves it into
    /// place. `progress` is called after each chunk with the bytes done so far. Importing the
    /// same bytes again changes nothing and returns the same id.
    pub fn import(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(ContentId, Manifest), ContentError> {
        let source_error = |e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::SourceMissing {
                    path: path.to_owned(),
                }
            } else {
                ContentError::SourceUnreadable {
                    path: path.to_owned(),
                    source: e,
                }
            }
        };
        let metadata = fs::metadata(path).map_err(source_error)?;
        if metadata.is_dir() {
            return Err(ContentError::SourceIsDirectory {
                path: path.to_owned(),
            });
        }
        if metadata.is_file() && metadata.len() > MAX_CONTENT_SIZE {
            return Err(ContentError::TooLarge {
                path: path.to_owned(),
                max_bytes: MAX_CONTENT_SIZE,
            });
        }
        let mut file = File::open(path).map_err(source_error)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.import_reader(&mut file, path, name, progress)
    }

    /// [`ContentStore::import`] from any reader; `source` names it in errors.
    pub(super) fn import_reader(
        &self,
        reader: &mut dyn Read,
        source: &Path,
        name: Option<String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(ContentId, Manifest), ContentError> {
        let root = &self.inner.root;
        let tmp = TempPath::new(root.join(format!("{TMP_PREFIX}import-{}", unique_suffix())));
        fs::create_dir(tmp.path()).map_err(|e| ContentError::io("create", tmp.path(), e))?;
        let data_path = tmp.path().join(DATA_FILE);
        let mut data =
            File::create(&data_path).map_err(|e| ContentError::io("create", &data_path, e))?;

        // The only buffer: one chunk, reused for every chunk of the file.
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let n = read_full(reader, &mut buf).map_err(|e| ContentError::SourceUnreadable {
                path: source.to_owned(),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            if chunks.len() >= MAX_CHUNKS as usize {
                return Err(ContentError::TooLarge {
                    path: source.to_owned(),
                    max_bytes: MAX_CONTENT_SIZE,
                });
            }
            let chunk = &buf[..n];
            chunks.push(ChunkHash::of(chunk));
            data.write_all(chunk)
                .map_err(|e| ContentError::io("write", &data_path, e))?;
            size += n as u64;
            progress(size);
            if n < buf.len() {
                break; // read_full only comes back short at the end of the input
            }
        }
        data.sync_all()
            .map_err(|e| ContentError::io("sync", &data_path, e))?;
        drop(data);

        // Cannot fail: the loop made one hash per chunk and stopped at MAX_CHUNKS.
        let manifest = Manifest::new(size, chunks).map_err(|e| ContentError::Corrupt {
            path: source.to_owned(),
            detail: format!("internal error building its manifest: {e}"),
        })?;
        let id = manifest.id();
        write_synced(&tmp.path().join(MANIFEST_FILE), &manifest.encode())?;
        if let Some(name) = name.and_then(clean_name) {
            write_meta(&tmp.path().join(META_FILE), name)?;
        }
        sync_dir(tmp.path())?;

        let _claim = self.inner.claim(id, Claim::Import)?;
        let dir = self.inner.dir(&id);
        if dir.join(DATA_FILE).exists() {
            // Already complete: the same bytes were imported or downloaded before.
        } else if dir.exists() {
            // A paused download of the same content: the import completes it.
            let final_data = dir.join(DATA_FILE);
            fs::rename(&data_path, &final_data)
                .map_err(|e| ContentError::io("rename into", &final_data, e))?;
            write_atomic(&dir.join(MANIFEST_FILE), &manifest.encode())?;
            remove_if_present(&dir.join(PARTIAL_FILE))?;
            remove_if_present(&dir.join(HAVE_FILE))?;
            if !dir.join(META_FILE).exists()
                && let Ok(meta) = fs::read(tmp.path().join(META_FILE))
            {
                write_atomic(&dir.join(META_FILE), &meta)?;
            }
            sync_dir(&dir)?;
        } else {
            fs::rename(tmp.path(), &dir).map_err(|e| ContentError::io("rename into", &dir, e))?;
            tmp.keep();
            sync_dir(root)?;
        }
        let shared = Arc::new(manifest.clone());
        lock(&self.inner.entries).insert(id, Some(shared));
        Ok((id, manifest))
    }

    /// The manifest of `id`, if the store holds (some of) that content.
    pub fn manifest(&self, id: &ContentId) -> Result<Option<Manifest>, ContentError> {
        Ok(self.inner.manifest(id)?.map(|m| Manifest::clone(&m)))
    }

    /// Every content in the store, complete or not, ordered by id. A content whose files are
    /// damaged is left out and logged, so one bad entry does not hide the others.
    pub fn list(&self) -> Result<Vec<ContentInfo>, ContentError> {
        let ids: Vec<ContentId> = lock(&self.inner.entries).keys().copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.info(&id) {
                Ok(Some(info)) => out.push(info),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(content = %id.fmt_short(), error = %e, "leaving a damaged content out of the list")
                }
            }
        }
        Ok(out)
    }

    fn info(&self, id: &ContentId) -> Result<Option<ContentInfo>, ContentError> {
        let Some(manifest) = self.inner.manifest(id)? else {
            return Ok(None);
        };
        let (have_chunks, complete) = match self.inner.holding(id, &manifest)? {
            Holding::Complete => (manifest.chunk_count(), true),
            Holding::Partial(have) => (have.count(), false),
        };
        Ok(Some(ContentInfo {
            id: *id,
            size: manifest.size(),
            chunks: manifest.chunk_count(),
            have_chunks,
            complete,
            name: read_meta(&self.inner.dir(id)),
        }))
    }

    /// Whether this node holds chunk `index` of `id`, verified. False for unknown content or an
    /// index past the end.
    pub fn has_chunk(&self, id: &ContentId, index: u32) -> Result<bool, ContentError> {
        let Some(manifest) = self.inner.manifest(id)? else {
            return Ok(false);
        };
        if index >= manifest.chunk_count() {
            return Ok(false);
        }
        if let Some(progress) = self.inner.active_download(id) {
            return Ok(progress.has(index));
        }
        Ok(match self.inner.holding(id, &manifest)? {
            Holding::Complete => true,
            Holding::Partial(have) => have.get(index),
        })
    }

    /// The bytes of chunk `index` of `id`, from the complete file or, for a chunk already
    /// verified, from a download in progress. The chunk is hashed again as it is read: BLAKE3
    /// runs at several GB/s, far faster than the disk, and it keeps a damaged file from being
    /// served to a peer (who would refuse it and count it against this node).
    pub fn read_chunk(&self, id: &ContentId, index: u32) -> Result<Vec<u8>, ContentError> {
        let manifest = self.inner.require_manifest(id)?;
        let chunks = manifest.chunk_count();
        let (Some(len), Some(hash)) = (manifest.chunk_len(index), manifest.chunk_hash(index))
        else {
            return Err(ContentError::ChunkOutOfRange {
                id: *id,
                index,
                chunks,
            });
        };
        let dir = self.inner.dir(id);
        let offset = manifest.chunk_offset(index);
        let mut buf = vec![0u8; len as usize];
        // Two rounds: a download may finish (rename data.partial to data) between the tries.
        for _ in 0..2 {
            for (file, partial) in [(DATA_FILE, false), (PARTIAL_FILE, true)] {
                if partial && !self.has_chunk(id, index)? {
                    return Err(ContentError::ChunkMissing { id: *id, index });
                }
                let path = dir.join(file);
                match File::open(&path) {
                    Ok(mut file) => {
                        read_at(&mut file, &path, &dir, offset, &mut buf)?;
                        if ChunkHash::of(&buf) != *hash {
                            return Err(ContentError::corrupt_in(
                                &dir,
                                path,
                                format!("chunk {index} does not match its hash in the manifest"),
                            ));
                        }
                        return Ok(buf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ContentError::io("open", path, e)),
                }
            }
        }
        Err(ContentError::ChunkMissing { id: *id, index })
    }

    /// Starts downloading the content `manifest` describes, or resumes its download: a
    /// download interrupted (even by SIGKILL) keeps every chunk it had flushed. `name` is a
    /// display name to remember. Fails with [`ContentError::AlreadyComplete`] if the store
    /// holds it whole, and [`ContentError::Busy`] if it is being downloaded already.
    pub fn start_download(
        &self,
        manifest: Manifest,
        name: Option<String>,
    ) -> Result<Download, ContentError> {
        let id = manifest.id();
        let count = manifest.chunk_count();
        let progress = Arc::new(Progress::new(Bitfield::new(count)));
        let claim = self
            .inner
            .claim(id, Claim::Download(Arc::clone(&progress)))?;
        let root = &self.inner.root;
        let dir = self.inner.dir(&id);
        let name = name.and_then(clean_name);
        if dir.join(DATA_FILE).exists() {
            return Err(ContentError::AlreadyComplete { id });
        }
        let partial_path = dir.join(PARTIAL_FILE);
        let have = if dir.exists() {
            // Hashes to `id`, so it is `manifest`: only its damage is left to find.
            read_manifest_file(&dir, &id)?;
            let have = read_have(&dir, count)?;
            if let Some(name) = name
                && read_meta(&dir).as_ref() != Some(&name)
            {
                write_meta(&dir.join(META_FILE), name)?;
            }
            have
        } else {
            let tmp = TempPath::new(root.join(format!("{TMP_PREFIX}download-{}", unique_suffix())));
            fs::create_dir(tmp.path()).map_err(|e| ContentError::io("create", tmp.path(), e))?;
            write_synced(&tmp.path().join(MANIFEST_FILE), &manifest.encode())?;
            let tmp_partial = tmp.path().join(PARTIAL_FILE);
            let create = || -> io::Result<()> {
                let file = File::create(&tmp_partial)?;
                // Full size from the start: every chunk has its place, written in any order.
                file.set_len(manifest.size())?;
                file.sync_all()
            };
            create().map_err(|e| ContentError::io("create", &tmp_partial, e))?;
            let have = Bitfield::new(count);
            write_synced(&tmp.path().join(HAVE_FILE), have.as_bytes())?;
            if let Some(name) = name {
                write_meta(&tmp.path().join(META_FILE), name)?;
            }
            sync_dir(tmp.path())?;
            fs::rename(tmp.path(), &dir).map_err(|e| ContentError::io("rename into", &dir, e))?;
            tmp.keep();
            sync_dir(root)?;
            have
        };
        let partial = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&partial_path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ContentError::corrupt_in(&dir, &partial_path, "the partial file is missing")
                } else {
                    ContentError::io("open", &partial_path, e)
                }
            })?;
        let len = partial
            .metadata()
            .map_err(|e| ContentError::io("read", &partial_path, e))?
            .len();
        if len != manifest.size() {
            return Err(ContentError::corrupt_in(
                &dir,
                &partial_path,
                format!("it is {len} bytes, the content is {}", manifest.size()),
            ));
        }
        progress.reset(have);
        let manifest = Arc::new(manifest);
        lock(&self.inner.entries).insert(id, Some(Arc::clone(&manifest)));
        Ok(Download::new(id, manifest, dir, partial, progress, claim))
    }

    /// Writes the complete content `id` to the file `out`, through a temporary file next to it
    /// renamed into place, so `out` is never seen half written. Replaces an existing file;
    /// refuses a directory. Each chunk is checked against the manifest on the way.
    pub fn export(&self, id: &ContentId, out: &Path) -> Result<(), ContentError> {
        let manifest = self.inner.require_manifest(id)?;
        let Some(file_name) = out.file_name().filter(|_| !out.is_dir()) else {
            return Err(ContentError::TargetIsDirectory {
                path: out.to_owned(),
            });
        };
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(ContentError::TargetParentMissing {
                path: out.to_owned(),
                parent,
            });
        }
        let dir = self.inner.dir(id);
        let data_path = dir.join(DATA_FILE);
        let mut data = match File::open(&data_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let have = match self.inner.holding(id, &manifest)? {
                    Holding::Complete => manifest.chunk_count(),
                    Holding::Partial(have) => have.count(),
                };
                return Err(ContentError::Incomplete {
                    id: *id,
                    have,
                    chunks: manifest.chunk_count(),
                });
            }
            Err(e) => return Err(ContentError::io("open", &data_path, e)),
        };
        let tmp = TempPath::new(parent.join(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            unique_suffix()
        )));
        let target = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .map_err(|e| ContentError::io("create", tmp.path(), e))?;
        // The copy is synced as it is written, by a helper thread, so the disk writes the first
        // chunks while the next are read, checked and copied. One sync at the end left the disk
        // idle during the copy and the copy idle during the sync: a 1 GiB download spent
        // 3.1–3.5 s between its last chunk and completion, 1.9–2.4 s with this
        // (docs/PERFORMANCE.md, "Transfer between nodes").
        std::thread::scope(|scope| {
            let (sync_due, syncs) = std::sync::mpsc::sync_channel::<()>(1);
            let file = &target;
            let syncer = std::thread::Builder::new()
                .name("tally-export-sync".into())
                .spawn_scoped(scope, move || -> io::Result<()> {
                    for () in syncs {
                        file.sync_data()?;
                    }
                    Ok(())
                });
            // Without the helper (no thread to be had), the final sync does it all.
            let copied = copy_checked(
                &manifest,
                &mut data,
                &data_path,
                &dir,
                file,
                tmp.path(),
                &sync_due,
            );
            drop(sync_due);
            let synced = match syncer {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked"))),
                Err(_) => Ok(()),
            };
            copied?;
            // A failed sync must fail the export: a later sync may not report it again.
            synced.map_err(|e| ContentError::io("sync", tmp.path(), e))
        })?;
        target
            .sync_all()
            .map_err(|e| ContentError::io("sync", tmp.path(), e))?;
        drop(target);
        fs::rename(tmp.path(), out).map_err(|e| ContentError::io("rename into", out, e))?;
        tmp.keep();
        sync_dir(&parent)
    }
}

impl Inner {
    fn dir(&self, id: &ContentId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Claims `id` for a download or an import, or says who holds it.
    fn claim(self: &Arc<Self>, id: ContentId, claim: Claim) -> Result<ClaimGuard, ContentError> {
        let mut claims = lock(&self.claims);
        if let Some(held) = claims.get(&id) {
            let what = match held {
                Claim::Download(_) => "a download",
                Claim::Import => "an import",
            };
            return Err(ContentError::Busy { id, what });
        }
        claims.insert(id, claim);
        Ok(ClaimGuard {
            inner: Arc::clone(self),
            id,
        })
    }

    /// The progress of the download of `id` running in this process, if any.
    fn active_download(&self, id: &ContentId) -> Option<Arc<Progress>> {
        match lock(&self.claims).get(id) {
            Some(Claim::Download(progress)) => Some(Arc::clone(progress)),
            _ => None,
        }
    }

    /// The manifest of a known content, read from disk the first time.
    fn manifest(&self, id: &ContentId) -> Result<Option<Arc<Manifest>>, ContentError> {
        match lock(&self.entries).get(id) {
            None => return Ok(None),
            Some(Some(manifest)) => return Ok(Some(Arc::clone(manifest))),
            Some(None) => {}
        }
        // Read outside the lock; two threads may both read it, and both get the same manifest.
        let manifest = Arc::new(read_manifest_file(&self.dir(id), id)?);
        lock(&self.entries).insert(*id, Some(Arc::clone(&manifest)));
        Ok(Some(manifest))
    }

    fn require_manifest(&self, id: &ContentId) -> Result<Arc<Manifest>, ContentError> {
        self.manifest(id)?.ok_or(ContentError::NotFound { id: *id })
    }

    /// What the store holds of `id`: an active download's progress, else what is on disk.
    fn holding(&self, id: &ContentId, manifest: &Manifest) -> Result<Holding, ContentError> {
        if let Some(progress) = self.active_download(id) {
            // Even when every chunk is there, it is not `data` until the download finishes.
            return Ok(Holding::Partial(progress.snapshot()));
        }
        let dir = self.dir(id);
        if dir.join(DATA_FILE).exists() {
            return Ok(Holding::Complete);
        }
        match read_have(&dir, manifest.chunk_count()) {
            Ok(have) => Ok(Holding::Partial(have)),
            // A download finished, or an import completed it, since `data` was looked for.
            Err(_) if dir.join(DATA_FILE).exists() => Ok(Holding::Complete),
            Err(e) => Err(e),
        }
    }
}

/// [`ContentStore::export`]'s copy: every chunk of `data` checked against `manifest` and
/// written to `target`, asking for a sync (`sync_due`) every [`EXPORT_SYNC_EVERY`] bytes;
/// then `data` must end.
fn copy_checked(
    manifest: &Manifest,
    data: &mut File,
    data_path: &Path,
    dir: &Path,
    mut target: &File,
    target_path: &Path,
    sync_due: &std::sync::mpsc::SyncSender<()>,
) -> Result<(), ContentError> {
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut unsynced = 0u64;
    for (index, hash) in (0u32..).zip(manifest.chunks()) {
        let len = manifest.chunk_len(index).unwrap_or(0) as usize;
        let chunk = &mut buf[..len];
        read_exact_or_corrupt(data, data_path, dir, chunk)?;
        if ChunkHash::of(chunk) != *hash {
            return Err(ContentError::corrupt_in(
                dir,
                data_path,
                format!("chunk {index} does not match its hash in the manifest"),
            ));
        }
        target
            .write_all(chunk)
            .map_err(|e| ContentError::io("write", target_path, e))?;
        unsynced += len as u64;
        if unsynced >= EXPORT_SYNC_EVERY {
            // Full: a sync is under way and another queued; they cover these bytes too.
            // Gone: the helper stopped on an error, which the export reports.
            let _ = sync_due.try_send(());
            unsynced = 0;
        }
    }
    let mut probe = [0u8; 1];
    if read_full(data, &mut probe).map_err(|e| ContentError::io("read", data_path, e))? != 0 {
        return Err(ContentError::corrupt_in(
            dir,
            data_path,
            format!(
                "it is longer than the {} bytes of the content",
                manifest.size()
            ),
        ));
    }
    Ok(())
}

/// Reads and checks `dir/manifest`: it must decode and hash to `id`.
fn read_manifest_file(dir: &Path, id: &ContentId) -> Result<Manifest, ContentError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = read_capped(&path, MAX_MANIFEST_LEN as u64 + 1).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ContentError::corrupt_in(dir, &path, "the manifest is missing")
        } else {
            ContentError::io("read", &path, e)
        }
    })?;
    let manifest = Manifest::decode(&bytes)
        .map_err(|e| ContentError::corrupt_in(dir, &path, format!("bad manifest: {e}")))?;
    if manifest.id() != *id {
        return Err(ContentError::corrupt_in(
            dir,
            &path,
            "the manifest does not hash to its directory's id",
        ));
    }
    Ok(manifest)
}

/// Reads `dir/have` as a bitfield over `count` chunks.
fn read_have(dir: &Path, count: u32) -> Result<Bitfield, ContentError> {
    let path = dir.join(HAVE_FILE);
    let bytes = read_capped(&path, u64::from(MAX_CHUNKS / 8) + 1).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ContentError::corrupt_in(
                dir,
                &path,
                "neither the data nor the download's bitfield is there",
            )
        } else {
            ContentError::io("read", &path, e)
        }
    })?;
    Bitfield::from_bytes(count, &bytes)
        .map_err(|e| ContentError::corrupt_in(dir, &path, format!("bad bitfield: {e}")))
}

/// Reads at most `cap` bytes of `path`, so a huge file in the store's place cannot exhaust
/// memory; a longer file comes back cut at `cap` and fails its own length check.
fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `buf.len()` bytes at `offset` of a store file; a short file is damage.
fn read_at(
    file: &mut File,
    path: &Path,
    dir: &Path,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ContentError> {
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| ContentError::io("read", path, e))?;
    read_exact_or_corrupt(file, path, dir, buf)
}

fn read_exact_or_corrupt(
    file: &mut File,
    path: &Path,
    dir: &Path,
    buf: &mut [u8],
) -> Result<(), ContentError> {
    match read_full(file, buf) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(_) => Err(ContentError::corrupt_in(
            dir,
            path,
            "it is shorter than its manifest says",
        )),
        Err(e) => Err(ContentError::io("read", path, e)),
    }
}

/// The display name in `dir/meta.json`, if any. Names are cosmetic: a bad file is logged and
/// treated as no name.
fn read_meta(dir: &Path) -> Option<String> {
    let path = dir.join(META_FILE);
    let bytes = match read_capped(&path, 64 * 1024) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a content's name");
            return None;
        }
    };
    match serde_json::from_slice::<Meta>(&bytes) {
        Ok(meta) => meta.name.and_then(clean_name),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged content name file");
            None
        }
    }
}

fn write_meta(path: &Path, name: String) -> Result<(), ContentError> {
    let meta = Meta { name: Some(name) };
    let json = serde_json::to_vec(&meta).map_err(|e| ContentError::io("write", path, e.into()))?;
    write_atomic(path, &json)
}

/// A display name fit to keep: no control characters (it may be printed on a terminal), at
/// most [`MAX_NAME_LEN`] bytes, not empty.
fn clean_name(name: String) -> Option<String> {
    let mut clean: String = name.chars().filter(|c| !c.is_control()).collect();
    if clean.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    (!clean.trim().is_empty()).then_some(clean)
}

fn remove_if_present(path: &Path) -> Result<(), ContentError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ContentError::io("remove", path, e)),
    }
}

/// Removes a file or directory, logging (not failing) if it cannot.
fn remove_any(path: &Path) {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary entry");
    }
}

/// Finishes what a crash interrupted in one content directory: a download's files left next to
/// the complete data (the process died while finishing), and temporary files of atomic writes.
fn tidy_content_dir(dir: &Path) {
    if dir.join(DATA_FILE).exists() {
        for stale in [PARTIAL_FILE, HAVE_FILE] {
            let path = dir.join(stale);
            if path.exists() {
                tracing::info!(path = %path.display(), "removing a finished download's leftover file");
                remove_any(&path);
            }
        }
    }
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            remove_any(&entry.path());
        }
    }
}
