//! Provider and peer records from gossip. Mode 0: postcard bytes of a `ProviderRecord`, a
//! `PeerRecord` or a `Records` frame body, verified as the session verifies them. Mode 1:
//! records of arbitrary fields really signed, then verified at an arbitrary clock: a record
//! whose dates are in bounds verifies, and nothing panics on extreme dates.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tally_fuzz::{NOW_MS, assert_postcard_round_trip, identity, network, seeds};
use tally_node::content::ContentId;
use tally_node::gossip::records::{MAX_ADDRS, PeerRecord, ProviderRecord, RecordError};
use tally_node::wire::Records;

fn postcard_mode(bytes: &[u8]) {
    let network = network();
    if let Ok(record) = postcard::from_bytes::<ProviderRecord>(bytes) {
        assert_postcard_round_trip(&record);
        let _ = record.verify(&network, NOW_MS);
    }
    if let Ok(record) = postcard::from_bytes::<PeerRecord>(bytes) {
        assert_postcard_round_trip(&record);
        if record.verify(&network, NOW_MS).is_ok() {
            assert!(!record.addrs.is_empty() && record.addrs.len() <= MAX_ADDRS);
        }
    }
    if let Ok(records) = postcard::from_bytes::<Records>(bytes) {
        assert_postcard_round_trip(&records);
    }
}

fn signed_mode(u: &mut Unstructured<'_>) -> Result<()> {
    let network = network();
    let who = identity(u.arbitrary()?);
    let issued: u64 = u.arbitrary()?;
    let ttl: u64 = u.arbitrary()?;
    let now: u64 = u.arbitrary()?;
    let provider = ProviderRecord::sign(who, &network, ContentId(u.arbitrary()?), issued, ttl);
    match provider.verify(&network, now) {
        Ok(()) => assert!(provider.expires_ms > now),
        Err(RecordError::BadSignature { .. }) => panic!("a record signed here does not verify"),
        Err(_) => {}
    }
    let count = u.int_in_range(0..=MAX_ADDRS + 2)?;
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let ip: [u8; 4] = u.arbitrary()?;
        addrs.push(std::net::SocketAddr::from((ip, u.arbitrary::<u16>()?)));
    }
    let peer = PeerRecord::sign(who, &network, &addrs, issued);
    match peer.verify(&network, now) {
        Ok(()) => assert!(peer.addrs.len() <= MAX_ADDRS),
        Err(RecordError::BadSignature { .. }) => panic!("a record signed here does not verify"),
        Err(_) => {}
    }
    Ok(())
}

fuzz_target!(init: seeds::install(seeds::records_seeds), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        postcard_mode(rest);
    } else {
        let _ = signed_mode(&mut Unstructured::new(rest));
    }
});
