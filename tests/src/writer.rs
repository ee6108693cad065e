//! The receipts `ledger_writer` writes: a deterministic function of a seed and an index, so the
//! writer can be killed and restarted at any moment and a test can check what it left behind.
//!
//! A handful of identities derived from the seed; every ordered pair of them in turn (receipt
//! `index` belongs to pair `index % pairs`); each new receipt of a pair takes the pair's latest
//! one (from the store, after a restart) and adds one to `seq` and a seeded amount to `bytes` and
//! `credits`. The writer applies each receipt, flushes, and only then prints its [`Ack`].

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tally_ledger::{Identity, NetworkId, Pair, PeerId, Receipt, ReceiptBody};

/// The network the writer's receipts belong to.
pub const WRITER_NETWORK: &str = "tally-crashtest";

/// Identities the writer trades between: 4 of them make 12 ordered pairs.
pub const WRITER_IDENTITIES: usize = 4;

/// `time_ms` of receipt index 0; each index adds a millisecond.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// The writer's deterministic plan for one seed.
pub struct Plan {
    seed: u64,
    net: NetworkId,
    ids: HashMap<PeerId, Identity>,
    pairs: Vec<Pair>,
}

impl Plan {
    /// The plan of `seed`: [`WRITER_IDENTITIES`] identities drawn from ChaCha20 seeded with it.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<Identity> = (0..WRITER_IDENTITIES)
            .map(|_| {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                Identity::from_secret_bytes(secret)
            })
            .collect();
        let mut pairs = Vec::new();
        for up in &ids {
            for down in &ids {
                if up.peer_id() != down.peer_id() {
                    pairs.push(Pair {
                        uploader: up.peer_id(),
                        downloader: down.peer_id(),
                    });
                }
            }
        }
        Self {
            seed,
            net: NetworkId::from_name(WRITER_NETWORK),
            ids: ids.into_iter().map(|id| (id.peer_id(), id)).collect(),
            pairs,
        }
    }

    /// The network of the plan's receipts.
    pub fn network(&self) -> NetworkId {
        self.net
    }

    /// Every pair the plan writes to, in rotation order.
    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// The pair receipt `index` belongs to.
    pub fn pair_at(&self, index: u64) -> Pair {
        self.pairs[(index % self.pairs.len() as u64) as usize]
    }

    /// Receipt `index`: the successor of `held` (the pair's latest receipt, if any), signed by
    /// both sides.
    pub fn receipt(&self, index: u64, held: Option<&Receipt>) -> anyhow::Result<Receipt> {
        let pair = self.pair_at(index);
        if let Some(held) = held
            && held.pair() != pair
        {
            bail!(
                "receipt {index} belongs to {pair:?}, not to {:?}",
                held.pair()
            );
        }
        let step = splitmix64(self.seed ^ splitmix64(index));
        let bytes_step = 1 + step % 1_000_000;
        // At par for a third of the receipts, at half price or at one and a half for the rest.
        let credits_step = match (step >> 32) % 3 {
            0 => bytes_step,
            1 => bytes_step - bytes_step / 2,
            _ => bytes_step + bytes_step / 2,
        };
        let (seq, bytes, credits) = held.map_or((0, 0, 0), |r| (r.seq, r.bytes, r.credits));
        let body = ReceiptBody {
            uploader: pair.uploader,
            downloader: pair.downloader,
            seq: seq.checked_add(1).context("seq overflow")?,
            bytes: bytes.checked_add(bytes_step).context("bytes overflow")?,
            credits: credits
                .checked_add(credits_step)
                .context("credits overflow")?,
            time_ms: EPOCH_MS.saturating_add(index),
        };
        let up = self.identity(&pair.uploader)?;
        let down = self.identity(&pair.downloader)?;
        Ok(body.propose(down, &self.net).countersign(up, &self.net))
    }

    fn identity(&self, peer: &PeerId) -> anyhow::Result<&Identity> {
        self.ids
            .get(peer)
            .with_context(|| format!("{peer} is not one of the plan's identities"))
    }
}

/// SplitMix64's output function: a cheap, well-mixed hash of a u64.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `ACK <uploader hex> <downloader hex> <seq>`: the writer's word that this receipt is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The receipt's pair.
    pub pair: Pair,
    /// The receipt's seq.
    pub seq: u64,
}

impl Ack {
    /// The line the writer prints, with its newline.
    pub fn line(&self) -> String {
        format!(
            "ACK {} {} {}\n",
            self.pair.uploader, self.pair.downloader, self.seq
        )
    }
}

impl FromStr for Ack {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> anyhow::Result<Self> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let ["ACK", uploader, downloader, seq] = words.as_slice() else {
            bail!("not an ACK line: {line:?}");
        };
        Ok(Self {
            pair: Pair {
                uploader: uploader.parse().context("uploader")?,
                downloader: downloader.parse().context("downloader")?,
            },
            seq: seq.parse().context("seq")?,
        })
    }
}
