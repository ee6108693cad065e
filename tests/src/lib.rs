//! # tally-tests
//!
//! tally's end-to-end tests and their helpers. The tests live in `tests/tests/`; this library
//! holds what they share, and the helper binaries in `src/bin/` the test processes spawn:
//!
//! - [`receipt_vectors_json`]: the receipt test vectors for other implementations, committed as
//!   `tests/vectors/receipt_v1.json` (regenerate with `TALLY_BLESS=1 cargo test -p tally-tests
//!   --test vectors`).
//! - [`writer`]: the deterministic stream of receipts `ledger_writer` writes, so a test can
//!   predict and check what a killed writer left behind.
//! - [`child`]: a spawned helper process whose stdout lines arrive on a channel, with deadlines
//!   on every wait, killed when dropped.

use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, Receipt, ReceiptBody};

pub mod child;
pub mod writer;

/// One receipt test vector: the inputs (network name, the two ed25519 seeds) and what any
/// implementation must derive from them (network id, the export object, the signed bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptVector {
    /// The network's name.
    pub network: String,
    /// BLAKE3 of the name, hex.
    pub network_id: String,
    /// The uploader's 32-byte ed25519 seed (RFC 8032 private key), hex.
    pub uploader_secret: String,
    /// The downloader's 32-byte ed25519 seed, hex.
    pub downloader_secret: String,
    /// The receipt as exported: keys and signatures as lowercase hex, counters as integers.
    pub receipt: Receipt,
    /// The bytes both parties signed, hex.
    pub signed_bytes: String,
}

/// RFC 8032 section 7.1, TEST 1: its secret key (seed). Its public key is
/// `d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a`.
pub const RFC8032_TEST1_SECRET: &str =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
/// RFC 8032 section 7.1, TEST 2: its secret key (seed). Its public key is
/// `3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c`.
pub const RFC8032_TEST2_SECRET: &str =
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

/// A seed whose bytes run `start, start + 1, …` (wrapping): fixed, and easy to type elsewhere.
fn counting_seed(start: u8) -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = start.wrapping_add(i as u8);
    }
    seed
}

fn hex_seed(text: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    // The two constants above are 64 hex digits; a typo there fails the vectors test, which
    // checks their public keys against RFC 8032.
    if hex::decode_to_slice(text, &mut seed).is_err() {
        seed = [0u8; 32];
    }
    seed
}

/// The vectors, in file order:
///
/// 1. network `tally`, small numbers at par (RFC 8032 TEST 1 uploads to TEST 2);
/// 2. network `tally`, the widest counters: `bytes` = 2^64 − 1, `credits` = 2^63, `seq` = 2^32,
///    `time_ms` = 2^64 − 2 (ten-byte varints);
/// 3. network `tally-testnet`, at par;
/// 4. network `tally`, credits below bytes (a market discount), varints of two and three bytes;
/// 5. network `tally-testnet`, credits above bytes (a premium), zero bytes and time, `seq` 128
///    (the first two-byte varint).
pub fn receipt_vectors() -> Vec<ReceiptVector> {
    struct Case {
        network: &'static str,
        uploader: [u8; 32],
        downloader: [u8; 32],
        seq: u64,
        bytes: u64,
        credits: u64,
        time_ms: u64,
    }
    let cases = [
        Case {
            network: "tally",
            uploader: hex_seed(RFC8032_TEST1_SECRET),
            downloader: hex_seed(RFC8032_TEST2_SECRET),
            seq: 1,
            bytes: 1024,
            credits: 1024,
            time_ms: 1_700_000_000_000,
        },
        Case {
            network: "tally",
            uploader: hex_seed(RFC8032_TEST2_SECRET),
            downloader: hex_seed(RFC8032_TEST1_SECRET),
            seq: 1 << 32,
            bytes: u64::MAX,
            credits: 1 << 63,
            time_ms: u64::MAX - 1,
        },
        Case {
            network: "tally-testnet",
            uploader: counting_seed(0x00),
            downloader: counting_seed(0x20),
            seq: 7,
            bytes: 1_000_000,
            credits: 1_000_000,
            time_ms: 1_717_171_717_171,
        },
        Case {
            network: "tally",
            uploader: counting_seed(0x40),
            downloader: counting_seed(0x60),
            seq: 300,
            bytes: 65_536,
            credits: 40_000,
            time_ms: 1_735_689_600_000,
        },
        Case {
            network: "tally-testnet",
            uploader: counting_seed(0x80),
            downloader: counting_seed(0xa0),
            seq: 128,
            bytes: 0,
            credits: 16_384,
            time_ms: 0,
        },
    ];
    cases
        .iter()
        .map(|case| {
            let net = NetworkId::from_name(case.network);
            let up = Identity::from_secret_bytes(case.uploader);
            let down = Identity::from_secret_bytes(case.downloader);
            let body = ReceiptBody {
                uploader: up.peer_id(),
                downloader: down.peer_id(),
                seq: case.seq,
                bytes: case.bytes,
                credits: case.credits,
                time_ms: case.time_ms,
            };
            let receipt = body.propose(&down, &net).countersign(&up, &net);
            ReceiptVector {
                network: case.network.to_owned(),
                network_id: net.to_string(),
                uploader_secret: hex::encode(case.uploader),
                downloader_secret: hex::encode(case.downloader),
                receipt,
                signed_bytes: hex::encode(body.signed_bytes(&net).as_slice()),
            }
        })
        .collect()
}

/// The committed content of `tests/vectors/receipt_v1.json`: [`receipt_vectors`] as a
/// pretty-printed JSON array, with a final newline.
pub fn receipt_vectors_json() -> String {
    #[allow(clippy::expect_used)]
    let mut json = serde_json::to_string_pretty(&receipt_vectors())
        // Plain structs of strings and integers, with string keys: serializing cannot fail.
        .expect("the vectors serialize");
    json.push('\n');
    json
}

/// The seed of a randomized test: `TALLY_TEST_SEED` if set (to replay a failure), else a fresh
/// random one. Tests print it, so a failing run can be replayed.
pub fn test_seed() -> anyhow::Result<u64> {
    use anyhow::Context;
    use rand::RngExt;
    match std::env::var("TALLY_TEST_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("TALLY_TEST_SEED={text:?} is not a u64")),
        Err(_) => Ok(rand::rng().random()),
    }
}
