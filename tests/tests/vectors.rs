//! The receipt test vectors for other implementations, `tests/vectors/receipt_v1.json`: the
//! committed file is exactly what the generator makes (`TALLY_BLESS=1` rewrites it), and each
//! vector is checked against the design's definition without the ledger's encoder: the signed
//! bytes are built here by hand (prefix, BLAKE3 of the network name, two raw keys, four LEB128
//! varints), and both signatures are ed25519 signatures over exactly those bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use serde_json::Value;
use tally_ledger::{Identity, NetworkId, PeerId, Receipt};
use tally_tests::{RFC8032_TEST1_SECRET, RFC8032_TEST2_SECRET, receipt_vectors_json};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/receipt_v1.json");

const BLESS: &str = "TALLY_BLESS=1 cargo test -p tally-tests --test vectors";

fn committed() -> String {
    fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read {VECTORS} ({e}); write it with `{BLESS}`"))
}

#[test]
fn committed_vectors_equal_the_generator_output() {
    let generated = receipt_vectors_json();
    if std::env::var("TALLY_BLESS").as_deref() == Ok("1") {
        // Atomically, so the other test never reads half a file.
        let tmp = format!("{VECTORS}.tmp");
        fs::write(&tmp, &generated).unwrap();
        fs::rename(&tmp, VECTORS).unwrap();
        eprintln!("TALLY_BLESS=1: rewrote {VECTORS}");
        return;
    }
    let committed = committed();
    if committed == generated {
        return;
    }
    let (line, ours, theirs) = committed
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a, b))
        .unwrap_or((0, None, None));
    panic!(
        "{VECTORS} is not what receipt_vectors_json() generates (first difference at line \
         {line}: committed {ours:?}, generated {theirs:?}). Other implementations test against \
         this file, so change it only on purpose; then rewrite it with `{BLESS}`."
    );
}

/// Unsigned LEB128, as postcard encodes a `u64`: seven bits at a time, low first, the high bit
/// set on every byte but the last.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

#[test]
fn varint_encoder_matches_known_encodings() {
    let cases: [(u64, &[u8]); 6] = [
        (0, &[0x00]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (
            1 << 63,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        (
            u64::MAX,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ];
    for (value, expected) in cases {
        let mut out = Vec::new();
        varint(value, &mut out);
        assert_eq!(out, expected, "{value}");
    }
}

fn text<'a>(object: &'a Value, key: &str) -> &'a str {
    object[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {object}"))
}

fn number(object: &Value, key: &str) -> u64 {
    object[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64 in {object}"))
}

fn bytes32(object: &Value, key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text(object, key), &mut out)
        .unwrap_or_else(|e| panic!("{key} is not 32 bytes of hex ({e}) in {object}"));
    out
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn each_vector_signs_the_hand_encoded_bytes_with_both_keys() {
    let vectors: Vec<Value> = serde_json::from_str(&committed()).unwrap();
    assert!(vectors.len() >= 4, "only {} vectors", vectors.len());
    for (i, vector) in vectors.iter().enumerate() {
        let at = |what: &str| format!("vector {i}: {what}");
        assert_eq!(
            keys(vector),
            [
                "downloader_secret",
                "network",
                "network_id",
                "receipt",
                "signed_bytes",
                "uploader_secret"
            ],
            "{}",
            at("keys")
        );
        let exported = &vector["receipt"];
        assert_eq!(
            keys(exported),
            [
                "bytes",
                "credits",
                "downloader",
                "seq",
                "sig_downloader",
                "sig_uploader",
                "time_ms",
                "uploader"
            ],
            "{}",
            at("receipt keys")
        );

        let network_id = *blake3::hash(text(vector, "network").as_bytes()).as_bytes();
        assert_eq!(bytes32(vector, "network_id"), network_id, "{}", at("id"));
        let uploader = bytes32(exported, "uploader");
        let downloader = bytes32(exported, "downloader");
        let up = Identity::from_secret_bytes(bytes32(vector, "uploader_secret"));
        let down = Identity::from_secret_bytes(bytes32(vector, "downloader_secret"));
        assert_eq!(up.peer_id(), PeerId(uploader), "{}", at("uploader key"));
        assert_eq!(
            down.peer_id(),
            PeerId(downloader),
            "{}",
            at("downloader key")
        );

        let mut signed = b"tally/receipt/v1".to_vec();
        signed.extend_from_slice(&network_id);
        signed.extend_from_slice(&uploader);
        signed.extend_from_slice(&downloader);
        for field in ["seq", "bytes", "credits", "time_ms"] {
            varint(number(exported, field), &mut signed);
        }
        assert_eq!(
            hex::encode(&signed),
            text(vector, "signed_bytes"),
            "{}",
            at("signed bytes")
        );

        // The export object is the ledger's JSON form of a receipt, and both signatures verify
        // (ed25519, strict) on the vector's network and on no other.
        let receipt: Receipt = serde_json::from_value(exported.clone()).unwrap();
        assert_eq!(
            &serde_json::to_value(receipt).unwrap(),
            exported,
            "{}",
            at("round trip")
        );
        receipt
            .verify(&NetworkId(network_id))
            .unwrap_or_else(|e| panic!("{}", at(&format!("does not verify: {e}"))));
        assert!(
            receipt
                .verify(&NetworkId::from_name("tally-elsewhere"))
                .is_err(),
            "{}",
            at("verifies on another network")
        );
        // ed25519 signs deterministically: the seeds re-sign the hand-made bytes identically.
        assert_eq!(
            up.sign(&signed),
            receipt.sig_uploader,
            "{}",
            at("sig_uploader")
        );
        assert_eq!(
            down.sign(&signed),
            receipt.sig_downloader,
            "{}",
            at("sig_downloader")
        );
    }
}

#[test]
fn vectors_cover_the_cases_other_implementations_get_wrong() {
    let vectors: Vec<Value> = serde_json::from_str(&committed()).unwrap();
    let receipts = || vectors.iter().map(|v| &v["receipt"]);
    let counters = |r: &Value| ["seq", "bytes", "credits", "time_ms"].map(|k| number(r, k));
    assert!(
        vectors.iter().any(|v| text(v, "network") == "tally"
            && counters(&v["receipt"])[..3].iter().all(|&n| n < 1 << 16)),
        "no vector with small numbers on network \"tally\""
    );
    assert!(
        receipts().any(|r| counters(r).iter().any(|&n| n >= 1 << 63)),
        "no vector with a counter of 2^63 or more"
    );
    assert!(
        vectors
            .iter()
            .any(|v| text(v, "network").contains("testnet")),
        "no vector on a testnet"
    );
    assert!(
        receipts().any(|r| number(r, "credits") != number(r, "bytes")),
        "no vector with credits other than bytes"
    );
}

#[test]
fn first_vector_uses_the_rfc8032_test_keys() {
    // RFC 8032 section 7.1, TESTs 1 and 2: these seeds' public keys, as published.
    let vectors: Vec<Value> = serde_json::from_str(&committed()).unwrap();
    assert_eq!(text(&vectors[0], "uploader_secret"), RFC8032_TEST1_SECRET);
    assert_eq!(
        text(&vectors[0]["receipt"], "uploader"),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(text(&vectors[0], "downloader_secret"), RFC8032_TEST2_SECRET);
    assert_eq!(
        text(&vectors[0]["receipt"], "downloader"),
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    );
}
