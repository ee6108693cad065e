//! Tests of the store and of downloads, on temporary directories (each test its own, so they run
//! in parallel).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tempfile::TempDir;

use super::*;

const CS: usize = CHUNK_SIZE as usize;

fn new_store() -> (TempDir, ContentStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
    (tmp, store)
}

/// `len` pseudo-random bytes, the same for the same `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    path
}

fn content_dir(store: &ContentStore, id: &ContentId) -> PathBuf {
    store.root().join(id.to_string())
}

fn no_progress() -> impl FnMut(u64) {
    |_| {}
}

#[test]
fn import_gives_the_right_manifest_for_sizes_around_chunk_boundaries() {
    let (tmp, store) = new_store();
    for (size, chunks) in [
        (0, 0),
        (1, 1),
        (CS - 1, 1),
        (CS, 1),
        (CS + 1, 2),
        (3 * CS + CS / 2, 4),
    ] {
        let data = bytes(size, size as u8);
        let path = write_file(tmp.path(), &format!("file-{size}"), &data);
        let mut reports = Vec::new();
        let (id, manifest) = store.import(&path, &mut |done| reports.push(done)).unwrap();

        assert_eq!(manifest.size(), size as u64);
        assert_eq!(manifest.chunk_count(), chunks, "size {size}");
        assert_eq!(manifest.chunk_size(), CHUNK_SIZE);
        assert_eq!(manifest.version(), 1);
        let expected: Vec<ChunkHash> = data.chunks(CS).map(ChunkHash::of).collect();
        assert_eq!(manifest.chunks(), &expected[..]);
        let postcard = postcard::to_allocvec(&manifest).unwrap();
        assert_eq!(id.0, *blake3::hash(&postcard).as_bytes());
        assert_eq!(id, manifest.id());
        assert_eq!(Manifest::of_bytes(&data).unwrap(), manifest);

        // One progress report per chunk, ending at the size.
        assert_eq!(reports.len(), chunks as usize);
        assert_eq!(reports.last().copied().unwrap_or(0), size as u64);
        assert!(reports.windows(2).all(|w| w[0] < w[1]));

        for (index, chunk) in (0u32..).zip(data.chunks(CS)) {
            assert!(store.has_chunk(&id, index).unwrap());
            assert_eq!(store.read_chunk(&id, index).unwrap(), chunk);
        }
        assert!(!store.has_chunk(&id, chunks).unwrap());
        assert!(matches!(
            store.read_chunk(&id, chunks),
            Err(ContentError::ChunkOutOfRange { index, .. }) if index == chunks
        ));
        assert_eq!(store.manifest(&id).unwrap(), Some(manifest));
        let dir = content_dir(&store, &id);
        assert_eq!(fs::read(dir.join("data")).unwrap(), data);
    }
    let list = store.list().unwrap();
    assert_eq!(list.len(), 6);
    assert!(
        list.iter()
            .all(|c| c.complete && c.have_chunks == c.chunks && c.name.is_some())
    );
    let empty = list.iter().find(|c| c.size == 0).unwrap();
    assert_eq!(empty.name.as_deref(), Some("file-0"));
    // Nothing temporary is left behind.
    assert!(
        fs::read_dir(store.root()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[test]
fn reimporting_the_same_bytes_gives_the_same_id_and_changes_nothing() {
    let (tmp, store) = new_store();
    let data = bytes(2 * CS + 7, 1);
    let a = write_file(tmp.path(), "a.bin", &data);
    let b = write_file(tmp.path(), "b.bin", &data);
    let (id_a, manifest_a) = store.import(&a, &mut no_progress()).unwrap();
    let (id_b, manifest_b) = store.import(&b, &mut no_progress()).unwrap();
    let (id_c, _) = store.import(&a, &mut no_progress()).unwrap();
    assert_eq!((id_a, &manifest_a), (id_b, &manifest_b));
    assert_eq!(id_a, id_c);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    // The first name is kept: a name is not part of the content.
    assert_eq!(list[0].name.as_deref(), Some("a.bin"));

    let other = write_file(tmp.path(), "c.bin", &bytes(2 * CS + 7, 2));
    let (id_other, _) = store.import(&other, &mut no_progress()).unwrap();
    assert_ne!(id_other, id_a);
}

/// A source of `len` bytes made on the fly, served in uneven pieces, that records where each
/// read lands: the end of the buffer it fills.
struct Recorder {
    len: u64,
    pos: u64,
    buffer_ends: Vec<usize>,
    largest_read: usize,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.buffer_ends.push(buf.as_ptr() as usize + buf.len());
        self.largest_read = self.largest_read.max(buf.len());
        let n = buf.len().min(100_003).min((self.len - self.pos) as usize);
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *byte = (at ^ (at >> 11) ^ (at >> 23)) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn import_streams_64_mib_through_one_chunk_sized_buffer() {
    let (_tmp, store) = new_store();
    let len = 64 * 1024 * 1024;
    let mut source = Recorder {
        len,
        pos: 0,
        buffer_ends: Vec::new(),
        largest_read: 0,
    };
    let (id, manifest) = store
        .import_reader(
            &mut source,
            Path::new("generated"),
            None,
            &mut no_progress(),
        )
        .unwrap();
    // Every read filled the rest of the same buffer, never more than one chunk: the file is
    // never held whole.
    source.buffer_ends.sort_unstable();
    source.buffer_ends.dedup();
    assert_eq!(
        source.buffer_ends.len(),
        1,
        "reads went to more than one buffer"
    );
    assert_eq!(source.largest_read, CS);

    assert_eq!(manifest.size(), len);
    assert_eq!(manifest.chunk_count(), 256);
    let mut again = Recorder {
        len,
        pos: 0,
        buffer_ends: Vec::new(),
        largest_read: 0,
    };
    let mut chunk = vec![0u8; CS];
    for (index, hash) in (0u32..).zip(manifest.chunks()) {
        again.read_exact(&mut chunk).unwrap();
        assert_eq!(ChunkHash::of(&chunk), *hash, "chunk {index}");
    }
    assert_eq!(store.read_chunk(&id, 255).unwrap(), chunk);
}

#[test]
fn a_64_mib_file_imports_and_exports_byte_identical() {
    let (tmp, store) = new_store();
    let path = tmp.path().join("big.bin");
    let mut file = fs::File::create(&path).unwrap();
    let block = bytes(1024 * 1024 + 13, 9);
    let mut written = 0usize;
    let total = 64 * 1024 * 1024 + 5;
    while written < total {
        let n = block.len().min(total - written);
        file.write_all(&block[..n]).unwrap();
        written += n;
    }
    drop(file);
    let mut last = 0;
    let (id, manifest) = store.import(&path, &mut |done| last = done).unwrap();
    assert_eq!(last, total as u64);
    assert_eq!(manifest.chunk_count(), 257);
    let out = tmp.path().join("out.bin");
    store.export(&id, &out).unwrap();
    let hash = |p: &Path| {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(fs::File::open(p).unwrap()).unwrap();
        hasher.finalize()
    };
    assert_eq!(hash(&out), hash(&path));
}

#[test]
fn import_errors_say_what_to_do() {
    let (tmp, store) = new_store();
    let err = store.import(tmp.path(), &mut no_progress()).unwrap_err();
    assert!(
        matches!(err, ContentError::SourceIsDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("one at a time"));

    let missing = tmp.path().join("nope.bin");
    let err = store.import(&missing, &mut no_progress()).unwrap_err();
    assert!(matches!(err, ContentError::SourceMissing { .. }), "{err}");
    assert!(err.to_string().contains("check the path"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let secret = write_file(tmp.path(), "secret.bin", b"secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything: the check means something only for other users.
        if fs::File::open(&secret).is_err() {
            let err = store.import(&secret, &mut no_progress()).unwrap_err();
            assert!(
                matches!(err, ContentError::SourceUnreadable { .. }),
                "{err}"
            );
            assert!(err.to_string().contains("may read"));
        }
    }
    assert!(store.list().unwrap().is_empty());
}

/// A source that fails after its first chunk, like a disk going bad under a read.
struct FailingSource {
    served: bool,
}

impl Read for FailingSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served {
            return Err(io::Error::other("input/output error"));
        }
        self.served = true;
        buf.fill(7);
        Ok(buf.len())
    }
}

#[test]
fn a_read_error_mid_import_is_unreadable_and_leaves_nothing_behind() {
    let (_tmp, store) = new_store();
    let err = store
        .import_reader(
            &mut FailingSource { served: false },
            Path::new("flaky.bin"),
            Some("flaky.bin".into()),
            &mut no_progress(),
        )
        .unwrap_err();
    assert!(
        matches!(err, ContentError::SourceUnreadable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("flaky.bin"));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.root()).unwrap().count(), 0);
}

/// A content of `len` bytes and a second store to download it into.
fn download_fixture(len: usize, seed: u8) -> (TempDir, ContentStore, Vec<u8>, Manifest) {
    let (tmp, store) = new_store();
    let data = bytes(len, seed);
    let manifest = Manifest::of_bytes(&data).unwrap();
    (tmp, store, data, manifest)
}

fn chunk(data: &[u8], index: u32) -> &[u8] {
    data.chunks(CS).nth(index as usize).unwrap()
}

#[test]
fn chunks_downloaded_out_of_order_finish_into_a_byte_identical_export() {
    let (tmp, store, data, manifest) = download_fixture(3 * CS + CS / 2, 3);
    let id = manifest.id();
    let download = store
        .start_download(manifest.clone(), Some("movie.mkv".into()))
        .unwrap();
    assert_eq!(download.missing(), vec![0, 1, 2, 3]);
    assert!(!download.is_complete());

    for index in [3, 0, 2] {
        assert_eq!(
            download.write_chunk(index, chunk(&data, index)).unwrap(),
            WriteOutcome::Stored
        );
    }
    assert_eq!(
        download.write_chunk(0, chunk(&data, 0)).unwrap(),
        WriteOutcome::AlreadyHad
    );
    assert_eq!(download.missing(), vec![1]);
    assert_eq!(download.have_count(), 3);

    // While it downloads, the store serves what it has and lists it as partial.
    assert!(store.has_chunk(&id, 3).unwrap());
    assert!(!store.has_chunk(&id, 1).unwrap());
    assert_eq!(store.read_chunk(&id, 2).unwrap(), chunk(&data, 2));
    assert!(matches!(
        store.read_chunk(&id, 1),
        Err(ContentError::ChunkMissing { index: 1, .. })
    ));
    let info = &store.list().unwrap()[0];
    assert_eq!(
        (info.have_chunks, info.chunks, info.complete),
        (3, 4, false)
    );
    assert_eq!(info.name.as_deref(), Some("movie.mkv"));
    let out = tmp.path().join("movie.mkv");
    assert!(matches!(
        store.export(&id, &out),
        Err(ContentError::Incomplete {
            have: 3,
            chunks: 4,
            ..
        })
    ));

    download.write_chunk(1, chunk(&data, 1)).unwrap();
    assert!(download.is_complete());
    assert!(download.missing().is_empty());
    download.finish().unwrap();

    let dir = content_dir(&store, &id);
    assert!(dir.join("data").is_file());
    assert!(!dir.join("data.partial").exists());
    assert!(!dir.join("have").exists());
    let info = &store.list().unwrap()[0];
    assert!(info.complete);
    assert_eq!(info.have_chunks, 4);

    store.export(&id, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
    // Exporting again replaces the file.
    store.export(&id, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "only the store and the export"
    );
}

#[test]
fn a_bad_chunk_is_refused_and_never_written() {
    let (_tmp, store, data, manifest) = download_fixture(2 * CS + 100, 4);
    let id = manifest.id();
    let download = store.start_download(manifest, None).unwrap();

    let mut bad = chunk(&data, 0).to_vec();
    bad[1000] ^= 1;
    let err = download.write_chunk(0, &bad).unwrap_err();
    assert!(matches!(err, ChunkError::BadHash { index: 0 }), "{err}");
    assert!(err.is_peer_fault());
    // Good bytes in the wrong place are bad bytes there.
    assert!(matches!(
        download.write_chunk(1, chunk(&data, 0)),
        Err(ChunkError::BadHash { index: 1 })
    ));
    assert!(matches!(
        download.write_chunk(2, chunk(&data, 0)),
        Err(ChunkError::WrongLength {
            index: 2,
            found,
            expected: 100
        }) if found == CS
    ));
    assert!(matches!(
        download.write_chunk(3, chunk(&data, 2)),
        Err(ChunkError::OutOfRange {
            index: 3,
            chunks: 3
        })
    ));
    download.flush().unwrap();
    assert_eq!(download.have_count(), 0);
    let partial = fs::read(content_dir(&store, &id).join("data.partial")).unwrap();
    assert_eq!(partial.len(), data.len());
    assert!(
        partial.iter().all(|&b| b == 0),
        "a refused chunk reached the disk"
    );

    // A held chunk sent again with bad bytes is still refused, not waved through.
    download.write_chunk(0, chunk(&data, 0)).unwrap();
    assert!(matches!(
        download.write_chunk(0, &bad),
        Err(ChunkError::BadHash { index: 0 })
    ));
}

#[test]
fn a_killed_download_resumes_with_its_flushed_chunks_only() {
    let (tmp, store, data, manifest) = download_fixture(6 * CS - 1, 5);
    let id = manifest.id();
    let mut download = store.start_download(manifest.clone(), None).unwrap();
    // Flush every 2 chunks and never on time, so what survives is exact.
    download.policy.every_chunks = 2;
    download.policy.interval = Duration::MAX;
    download.write_chunk(5, chunk(&data, 5)).unwrap();
    download.write_chunk(1, chunk(&data, 1)).unwrap(); // second chunk: flushed
    download.write_chunk(3, chunk(&data, 3)).unwrap(); // written, not yet marked
    assert_eq!(download.have_count(), 3);
    download.simulate_kill();
    drop(store);

    // As after a restart: a fresh store over the same directory.
    let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
    let info = &store.list().unwrap()[0];
    assert_eq!((info.have_chunks, info.complete), (2, false));
    assert!(store.has_chunk(&id, 5).unwrap());
    assert!(!store.has_chunk(&id, 3).unwrap());
    let download = store.start_download(manifest, None).unwrap();
    assert_eq!(download.have_count(), 2);
    assert_eq!(download.missing(), vec![0, 2, 3, 4]);
    for index in download.missing() {
        download.write_chunk(index, chunk(&data, index)).unwrap();
    }
    download.finish().unwrap();
    let out = tmp.path().join("out");
    store.export(&id, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn unflushed_writes_say_when_a_flush_is_due_and_are_marked_only_by_it() {
    let (tmp, store, data, manifest) = download_fixture(6 * CS, 8);
    let id = manifest.id();
    let mut download = store.start_download(manifest.clone(), None).unwrap();
    download.policy.every_chunks = 2;
    download.policy.interval = Duration::MAX;
    let write = |d: &Download, index: u32| d.write_chunk_unflushed(index, chunk(&data, index));
    assert_eq!(write(&download, 4).unwrap(), (WriteOutcome::Stored, false));
    assert_eq!(write(&download, 0).unwrap(), (WriteOutcome::Stored, true));
    // Due, but not done: the chunks are held, and nothing is marked on disk yet.
    assert_eq!(
        write(&download, 0).unwrap(),
        (WriteOutcome::AlreadyHad, false)
    );
    assert_eq!(download.have_count(), 2);
    let have = fs::read(content_dir(&store, &id).join("have")).unwrap();
    assert_eq!(have, vec![0x00]);
    // Still verified before anything is written.
    let mut bad = chunk(&data, 1).to_vec();
    bad[7] ^= 1;
    assert!(matches!(
        download.write_chunk_unflushed(1, &bad),
        Err(ChunkError::BadHash { index: 1 })
    ));
    download.flush().unwrap();
    let have = fs::read(content_dir(&store, &id).join("have")).unwrap();
    assert_eq!(have, vec![0x88]);
    assert_eq!(write(&download, 2).unwrap(), (WriteOutcome::Stored, false));
    download.simulate_kill();
    drop(store);

    let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
    let download = store.start_download(manifest, None).unwrap();
    assert_eq!(download.missing(), vec![1, 2, 3, 5]);
}

#[test]
fn dropping_a_download_flushes_it_and_flush_writes_the_bitfield() {
    let (_tmp, store, data, manifest) = download_fixture(10 * CS, 6);
    let id = manifest.id();
    let download = store.start_download(manifest.clone(), None).unwrap();
    download.write_chunk(0, chunk(&data, 0)).unwrap();
    download.write_chunk(9, chunk(&data, 9)).unwrap();
    download.flush().unwrap();
    let have = fs::read(content_dir(&store, &id).join("have")).unwrap();
    assert_eq!(have, vec![0x80, 0x40]);

    download.write_chunk(4, chunk(&data, 4)).unwrap();
    drop(download);
    let download = store.start_download(manifest, None).unwrap();
    assert_eq!(download.missing(), vec![1, 2, 3, 5, 6, 7, 8]);
}

#[test]
fn the_default_policy_flushes_every_32_chunks() {
    let (_tmp, store, data, manifest) = download_fixture(40 * CS, 7);
    let id = manifest.id();
    let mut download = store.start_download(manifest, None).unwrap();
    download.policy.interval = Duration::MAX;
    assert_eq!(download.policy.every_chunks, FLUSH_EVERY_CHUNKS);
    for index in 0..33 {
        download.write_chunk(index, chunk(&data, index)).unwrap();
    }
    let have = fs::read(content_dir(&store, &id).join("have")).unwrap();
    assert_eq!(have, vec![0xff, 0xff, 0xff, 0xff, 0]);
    download.simulate_kill();
}

#[test]
fn threads_write_chunks_of_one_download_at_once() {
    let (tmp, store, data, manifest) = download_fixture(16 * CS + 3, 8);
    let id = manifest.id();
    let download = Arc::new(store.start_download(manifest, None).unwrap());
    let data = Arc::new(data);
    let workers: Vec<_> = (0..4u32)
        .map(|t| {
            let download = Arc::clone(&download);
            let data = Arc::clone(&data);
            std::thread::spawn(move || {
                // Every thread offers every chunk, starting at a different place.
                for k in 0..17u32 {
                    let index = (k + t * 5) % 17;
                    download.write_chunk(index, chunk(&data, index)).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let download = Arc::into_inner(download).unwrap();
    assert!(download.is_complete());
    download.finish().unwrap();
    let out = tmp.path().join("out");
    store.export(&id, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), *data);
}

#[test]
fn an_empty_content_downloads_and_exports() {
    let (tmp, store, data, manifest) = download_fixture(0, 0);
    assert!(data.is_empty());
    let id = manifest.id();
    let download = store.start_download(manifest, None).unwrap();
    assert!(download.is_complete());
    assert!(download.missing().is_empty());
    download.finish().unwrap();
    let out = tmp.path().join("empty");
    store.export(&id, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"");
}

#[test]
fn start_download_refuses_complete_content_and_a_second_download() {
    let (tmp, store, data, manifest) = download_fixture(CS + 1, 10);
    let download = store.start_download(manifest.clone(), None).unwrap();
    assert!(matches!(
        store.start_download(manifest.clone(), None),
        Err(ContentError::Busy {
            what: "a download",
            ..
        })
    ));
    // An import of the same bytes waits for the download rather than pull files from under it.
    let path = write_file(tmp.path(), "same.bin", &data);
    assert!(matches!(
        store.import(&path, &mut no_progress()),
        Err(ContentError::Busy { .. })
    ));
    drop(download);

    // With the download paused, an import completes it.
    store.import(&path, &mut no_progress()).unwrap();
    let dir = content_dir(&store, &manifest.id());
    assert!(!dir.join("data.partial").exists());
    assert!(!dir.join("have").exists());
    assert!(store.list().unwrap()[0].complete);
    assert!(matches!(
        store.start_download(manifest, None),
        Err(ContentError::AlreadyComplete { .. })
    ));
}

#[test]
fn a_corrupt_manifest_gives_corrupt() {
    let (tmp, store) = new_store();
    let path = write_file(tmp.path(), "f", &bytes(CS + 5, 11));
    let (id, manifest) = store.import(&path, &mut no_progress()).unwrap();
    let other = Manifest::of_bytes(b"other").unwrap();
    drop(store);
    let file = tmp
        .path()
        .join(CONTENT_DIR)
        .join(id.to_string())
        .join("manifest");
    let good = manifest.encode();
    for damaged in [
        good[..good.len() - 1].to_vec(),
        b"garbage".to_vec(),
        Vec::new(),
        other.encode(),
    ] {
        fs::write(&file, &damaged).unwrap();
        let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
        let err = store.manifest(&id).unwrap_err();
        assert!(matches!(err, ContentError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("delete the directory"), "{err}");
        assert!(matches!(
            store.read_chunk(&id, 0),
            Err(ContentError::Corrupt { .. })
        ));
        assert!(matches!(
            store.start_download(manifest.clone(), None),
            Err(ContentError::AlreadyComplete { .. })
        ));
        // The damaged content is left out of the list, not the list refused.
        assert!(store.list().unwrap().is_empty());
    }
}

#[test]
fn a_corrupt_have_file_gives_corrupt() {
    let (tmp, store, data, manifest) = download_fixture(10 * CS, 12);
    let id = manifest.id();
    let download = store.start_download(manifest.clone(), None).unwrap();
    download.write_chunk(2, chunk(&data, 2)).unwrap();
    drop(download);
    drop(store);
    let have = tmp
        .path()
        .join(CONTENT_DIR)
        .join(id.to_string())
        .join("have");
    // Wrong length, bits past the last chunk, missing.
    for damaged in [
        Some(vec![0x20]),
        Some(vec![0x20, 0, 0]),
        Some(vec![0, 0x01]),
        None,
    ] {
        match &damaged {
            Some(bytes) => fs::write(&have, bytes).unwrap(),
            None => fs::remove_file(&have).unwrap(),
        }
        let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
        let err = store.start_download(manifest.clone(), None).unwrap_err();
        assert!(matches!(err, ContentError::Corrupt { .. }), "{err}");
        assert!(matches!(
            store.has_chunk(&id, 2),
            Err(ContentError::Corrupt { .. })
        ));
        assert!(store.list().unwrap().is_empty());
    }
    // Repaired, it resumes.
    fs::write(&have, [0x20, 0]).unwrap();
    let store = ContentStore::open(tmp.path().join(CONTENT_DIR)).unwrap();
    assert_eq!(
        store
            .start_download(manifest, None)
            .unwrap()
            .missing()
            .len(),
        9
    );
}

#[test]
fn damaged_data_is_never_served_or_exported() {
    let (tmp, store) = new_store();
    let data = bytes(2 * CS + 9, 13);
    let path = write_file(tmp.path(), "f", &data);
    let (id, _) = store.import(&path, &mut no_progress()).unwrap();
    let stored = content_dir(&store, &id).join("data");

    let mut flipped = data.clone();
    flipped[CS + 3] ^= 0x10;
    fs::write(&stored, &flipped).unwrap();
    assert_eq!(store.read_chunk(&id, 0).unwrap(), chunk(&data, 0));
    assert!(matches!(
        store.read_chunk(&id, 1),
        Err(ContentError::Corrupt { .. })
    ));
    let out = tmp.path().join("out");
    assert!(matches!(
        store.export(&id, &out),
        Err(ContentError::Corrupt { .. })
    ));

    fs::write(&stored, &data[..2 * CS]).unwrap();
    assert!(matches!(
        store.read_chunk(&id, 2),
        Err(ContentError::Corrupt { .. })
    ));
    assert!(matches!(
        store.export(&id, &out),
        Err(ContentError::Corrupt { .. })
    ));

    let mut longer = data.clone();
    longer.push(0);
    fs::write(&stored, &longer).unwrap();
    assert!(matches!(
        store.export(&id, &out),
        Err(ContentError::Corrupt { .. })
    ));
    // No export and no temporary file was left.
    assert!(!out.exists());
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn export_refuses_a_directory_and_reports_a_missing_parent() {
    let (tmp, store) = new_store();
    let path = write_file(tmp.path(), "f", b"hello");
    let (id, _) = store.import(&path, &mut no_progress()).unwrap();

    let err = store.export(&id, tmp.path()).unwrap_err();
    assert!(
        matches!(err, ContentError::TargetIsDirectory { .. }),
        "{err}"
    );
    let err = store
        .export(&id, &tmp.path().join("no/such/dir/f"))
        .unwrap_err();
    assert!(
        matches!(err, ContentError::TargetParentMissing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("create it first"));
    let unknown = ContentId([7; 32]);
    assert!(matches!(
        store.export(&unknown, &tmp.path().join("x")),
        Err(ContentError::NotFound { .. })
    ));
    assert!(matches!(
        store.read_chunk(&unknown, 0),
        Err(ContentError::NotFound { .. })
    ));
    assert!(!store.has_chunk(&unknown, 0).unwrap());
    assert_eq!(store.manifest(&unknown).unwrap(), None);
    store.export(&id, &tmp.path().join("copy")).unwrap();
    assert_eq!(fs::read(tmp.path().join("copy")).unwrap(), b"hello");
}

#[test]
fn open_skips_what_is_not_content_and_finishes_what_a_crash_interrupted() {
    let (tmp, store) = new_store();
    let path = write_file(tmp.path(), "f", &bytes(CS + 1, 14));
    let (id, _) = store.import(&path, &mut no_progress()).unwrap();
    drop(store);
    let root = tmp.path().join(CONTENT_DIR);
    fs::write(root.join("notes.txt"), b"hi").unwrap();
    fs::create_dir(root.join("abc")).unwrap();
    fs::create_dir(root.join(id.to_string().to_uppercase())).unwrap();
    fs::create_dir(root.join(ContentId([1; 32]).to_string())).unwrap();
    fs::write(root.join(ContentId([2; 32]).to_string()), b"a file").unwrap();
    fs::create_dir(root.join(".tmp-import-1-1")).unwrap();
    fs::write(root.join(".tmp-import-1-1").join("data"), b"half").unwrap();
    // Killed while finishing a download: `data` is in place, `have` is not yet removed.
    let dir = root.join(id.to_string());
    fs::write(dir.join("have"), [0xc0]).unwrap();
    fs::write(dir.join(".have.1-1.tmp"), [0xc0]).unwrap();

    let store = ContentStore::open(&root).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert!(list[0].complete);
    assert!(!root.join(".tmp-import-1-1").exists());
    assert!(!dir.join("have").exists());
    assert!(!dir.join(".have.1-1.tmp").exists());
    assert!(
        root.join("notes.txt").exists(),
        "foreign files are left alone"
    );
}

#[test]
fn display_names_are_kept_clean() {
    let (_tmp, store, _data, manifest) = download_fixture(10, 15);
    let download = store
        .start_download(manifest.clone(), Some("evil\u{1b}[2Jname".into()))
        .unwrap();
    drop(download);
    assert_eq!(
        store.list().unwrap()[0].name.as_deref(),
        Some("evil[2Jname")
    );
    let download = store
        .start_download(manifest, Some("é".repeat(200)))
        .unwrap();
    drop(download);
    let name = store.list().unwrap()[0].name.clone().unwrap();
    assert_eq!(name.len(), 254);
}

#[test]
fn any_flipped_bit_makes_write_chunk_refuse_it() {
    let (_tmp, store, data, manifest) = download_fixture(CS + CS / 3, 16);
    let id = manifest.id();
    let download = store.start_download(manifest, None).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(128));
    let strategy = (0u32..2).prop_flat_map(|index| {
        let bits = chunk_len(index) * 8;
        (Just(index), 0..bits)
    });
    fn chunk_len(index: u32) -> usize {
        if index == 0 { CS } else { CS / 3 }
    }
    runner
        .run(&strategy, |(index, bit)| {
            let mut bad = chunk(&data, index).to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            let refused = matches!(
                download.write_chunk(index, &bad),
                Err(ChunkError::BadHash { index: i }) if i == index
            );
            prop_assert!(
                refused,
                "chunk {} with bit {} flipped was taken",
                index,
                bit
            );
            Ok(())
        })
        .unwrap();
    download.flush().unwrap();
    assert_eq!(download.have_count(), 0);
    let partial = fs::read(content_dir(&store, &id).join("data.partial")).unwrap();
    assert!(partial.iter().all(|&b| b == 0));
}
