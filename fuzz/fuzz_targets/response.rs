//! Responses from a peer: frames of `wire::Response` read under the response cap; a manifest's
//! bytes decoded by `Manifest::decode` (which must be canonical: what decodes re-encodes to the
//! same bytes), bitfields probed, receipts and agreements verified. The whole input is also
//! tried as a bare manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_fuzz::{assert_frame_round_trip, network, read_frames, seeds};
use tally_node::content::Manifest;
use tally_node::wire::{self, MAX_REASON, MAX_RESPONSE_FRAME, Response};

fn manifest(bytes: &[u8]) {
    if let Ok(manifest) = Manifest::decode(bytes) {
        assert_eq!(
            manifest.encode(),
            bytes,
            "a manifest decoded from non-canonical bytes"
        );
        let count = manifest.chunk_count();
        assert_eq!(manifest.chunks().len(), count as usize);
        let mut total = 0u64;
        for index in 0..count {
            let len = manifest
                .chunk_len(index)
                .unwrap_or_else(|| panic!("chunk {index} of {count} has no length"));
            assert_eq!(manifest.chunk_offset(index), total);
            total += u64::from(len);
        }
        assert_eq!(total, manifest.size());
        assert!(manifest.chunk_len(count).is_none());
    }
}

fuzz_target!(init: seeds::install(seeds::response), |data: &[u8]| {
    let network = network();
    manifest(data);
    let (responses, _) = read_frames::<Response>(data, MAX_RESPONSE_FRAME);
    for response in &responses {
        assert_frame_round_trip(response, MAX_RESPONSE_FRAME);
        match response {
            Response::Latest(latest) => {
                for receipt in [latest.sender_uploaded, latest.sender_downloaded].into_iter().flatten() {
                    let _ = receipt.verify(&network);
                }
            }
            Response::Manifest { encoded } => manifest(encoded),
            Response::Have { chunks, bitfield } => {
                for index in [0, 1, chunks / 2, chunks.saturating_sub(1), *chunks, u32::MAX] {
                    let _ = wire::bit(bitfield, index);
                }
            }
            Response::Countersigned(receipt) => {
                let _ = receipt.verify(&network);
            }
            Response::Agreement(agreement) => {
                let _ = agreement.verify(&network);
            }
            Response::Refused { reason, message } => {
                // What the node would log and show: cut as it cuts its own.
                let Response::Refused { message: cut, .. } = Response::refused(*reason, message.clone()) else {
                    unreachable!()
                };
                assert!(cut.len() <= MAX_REASON);
                assert!(message.starts_with(&cut));
            }
            Response::Chunk { .. } | Response::Received => {}
        }
    }
});
