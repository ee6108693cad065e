//! What the fuzz targets share: reading frames from bytes exactly as the node reads them from a
//! stream (the same [`FrameReader`], driven without a runtime), fixed identities and a fixed
//! clock so a crash replays, the frame round-trip check, and the seed inputs each target starts
//! from (generated here, so no binary corpus is committed), and an allocator that turns any
//! oversized allocation into a crash ([`alloc_guard`]).
// The allocator wrapper is the one place that needs `unsafe`: an allocator cannot be written
// without it. Everything else is safe code.
#![deny(unsafe_code)]

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_ledger::{ConflictProof, Identity, NetworkId, Receipt, ReceiptBody};
use tally_node::transport::{FrameError, FrameReader, FrameWriter};

#[allow(unsafe_code)]
pub mod alloc_guard;
pub mod seeds;

/// The clock of every target: records and orders are checked against it.
pub const NOW_MS: u64 = 1_800_000_000_000;

/// Frames read from one input at most: past it the input is cut, so one input stays fast.
pub const MAX_FRAMES: usize = 64;

/// The network every target is on.
pub fn network() -> NetworkId {
    NetworkId::from_name("tally")
}

/// One of four fixed identities (`index % 4`); identity 0 is "this node" where one is needed.
pub fn identity(index: u8) -> &'static Identity {
    static IDS: OnceLock<Vec<Identity>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        (1..=4u8)
            .map(|seed| Identity::from_secret_bytes([seed; 32]))
            .collect()
    });
    &ids[usize::from(index % 4)]
}

/// The same identity, shared (the market takes an `Arc`).
pub fn identity_arc(index: u8) -> Arc<Identity> {
    Arc::new(Identity::from_secret_bytes(identity(index).secret_bytes()))
}

/// Runs a future that never waits: reading from an in-memory slice is always ready. A `Pending`
/// would mean the reader waits for bytes that cannot come: a harness bug, reported as such.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("an in-memory frame read waited"),
    }
}

/// Reads `T` frames from `bytes` with the node's [`FrameReader`] and cap `max_frame`, as a
/// stream would deliver them: the values read, and the error that stopped the reader, if any.
pub fn read_frames<T: DeserializeOwned>(
    bytes: &[u8],
    max_frame: usize,
) -> (Vec<T>, Option<FrameError>) {
    block_on(async {
        let mut reader = FrameReader::new(bytes, max_frame);
        let mut values = Vec::new();
        while values.len() < MAX_FRAMES {
            match reader.recv::<T>().await {
                Ok(Some(value)) => values.push(value),
                Ok(None) => return (values, None),
                Err(error) => {
                    // Every error a peer can cause maps to a close code.
                    assert!(error.error_code().is_some(), "untyped frame error: {error}");
                    return (values, Some(error));
                }
            }
        }
        (values, None)
    })
}

/// One frame holding `value` (the node's [`FrameWriter`], no cap beyond `u32`).
pub fn frame<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    block_on(async {
        let mut writer = FrameWriter::new(Vec::new(), u32::MAX as usize);
        match writer.send(value).await {
            Ok(()) => writer.into_inner(),
            Err(error) => panic!("cannot frame a seed: {error}"),
        }
    })
}

/// A decoded value re-sent and read back under the same cap is the same value: it fits the cap
/// (the canonical encoding is never longer than an accepted one) and decodes to itself.
pub fn assert_frame_round_trip<T>(value: &T, max_frame: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = block_on(async {
        let mut writer = FrameWriter::new(Vec::new(), max_frame);
        if let Err(error) = writer.send(value).await {
            panic!("a decoded value does not re-encode under its cap: {error}: {value:?}");
        }
        writer.into_inner()
    });
    let (again, error) = read_frames::<T>(&bytes, max_frame);
    assert!(
        error.is_none(),
        "re-encoded frame does not decode: {error:?}"
    );
    assert_eq!(again.as_slice(), std::slice::from_ref(value));
}

/// `postcard` bytes of `value` decode back to it.
pub fn assert_postcard_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = match postcard::to_stdvec(value) {
        Ok(bytes) => bytes,
        Err(error) => panic!("a decoded value does not re-encode: {error}: {value:?}"),
    };
    match postcard::from_bytes::<T>(&bytes) {
        Ok(again) => assert_eq!(&again, value),
        Err(error) => panic!("a re-encoded value does not decode: {error}: {value:?}"),
    }
}

/// A receipt of `body` signed by both parties `down` (downloader) and `up` (uploader).
pub fn signed_receipt(up: u8, down: u8, seq: u64, bytes: u64, credits: u64) -> Receipt {
    let network = network();
    ReceiptBody {
        uploader: identity(up).peer_id(),
        downloader: identity(down).peer_id(),
        seq,
        bytes,
        credits,
        time_ms: NOW_MS,
    }
    .propose(identity(down), &network)
    .countersign(identity(up), &network)
}

/// A valid conflict proof: two receipts of one pair at the same seq that differ.
pub fn conflict_proof() -> ConflictProof {
    match ConflictProof::new(
        signed_receipt(0, 1, 5, 100, 100),
        signed_receipt(0, 1, 5, 90, 90),
    ) {
        Ok(proof) => proof,
        Err(error) => panic!("seed proof: {error}"),
    }
}

/// An address for records and hellos.
pub fn addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 7420))
}
