//! The seed inputs of each target, made by code from real values (signed receipts, orders,
//! records, an encoded manifest, a sync message, the default config, a scenario file), so the
//! fuzzer starts past the outer layers and no binary corpus is committed.
//!
//! A target writes its seeds at start-up into the directory named by `TALLY_FUZZ_SEEDS`, when
//! it is set; `scripts/fuzz.sh` sets it and passes that directory to libFuzzer as a corpus.

use std::path::Path;

use tally_ledger::sync::{self, SyncItems};
use tally_ledger::{Proposal, ReceiptBody};
use tally_market::{Bid, BidTerms, Cancel, Offer, OfferTerms, TradeTerms};
use tally_node::content::{ChunkHash, ContentId, Manifest};
use tally_node::gossip::records::{PeerRecord, ProviderRecord};
use tally_node::transport::Hello;
use tally_node::wire::{
    GossipFrame, GossipHello, LatestReceipts, OrderMessage, Records, RefusalCode, Request, Response,
};

use crate::{NOW_MS, addr, conflict_proof, frame, identity, network, signed_receipt};

/// Environment variable naming the directory a target writes its seeds into.
pub const SEEDS_ENV: &str = "TALLY_FUZZ_SEEDS";

/// Writes `seeds` into `$TALLY_FUZZ_SEEDS`, if set. Called from a target's `init`.
pub fn install(seeds: fn() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os(SEEDS_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    if let Err(error) = std::fs::create_dir_all(dir) {
        panic!(
            "cannot create the seed directory {}: {error}",
            dir.display()
        );
    }
    for (index, seed) in seeds().iter().enumerate() {
        let path = dir.join(format!("seed-{index:03}"));
        if let Err(error) = std::fs::write(&path, seed) {
            panic!("cannot write {}: {error}", path.display());
        }
    }
}

fn proposal() -> Proposal {
    ReceiptBody {
        uploader: identity(0).peer_id(),
        downloader: identity(1).peer_id(),
        seq: 1,
        bytes: 500,
        credits: 500,
        time_ms: NOW_MS,
    }
    .propose(identity(1), &network())
}

/// An offer by identity `seller` and a bid by identity `buyer` that cross.
pub fn orders(seller: u8, buyer: u8) -> (Offer, Bid) {
    let network = network();
    let offer = Offer::sign(
        identity(seller),
        &network,
        OfferTerms {
            bytes: 1 << 30,
            max_rate: 1 << 20,
            price_per_gib: 10,
            issued_ms: NOW_MS,
            expires_ms: NOW_MS + 3_600_000,
            nonce: 1,
        },
    );
    let bid = Bid::sign(
        identity(buyer),
        &network,
        BidTerms {
            bytes: 1 << 29,
            content: Some([3; 32]),
            max_price_per_gib: 20,
            issued_ms: NOW_MS,
            expires_ms: NOW_MS + 3_600_000,
            nonce: 2,
        },
    );
    (offer, bid)
}

fn order_messages() -> Vec<OrderMessage> {
    let (offer, bid) = orders(0, 1);
    let cancel = Cancel::sign(identity(1), &network(), bid.id(&network()), NOW_MS);
    vec![
        OrderMessage::Offer(offer),
        OrderMessage::Bid(bid),
        OrderMessage::Cancel(cancel),
    ]
}

fn trade() -> tally_market::TradeProposal {
    let network = network();
    let (offer, bid) = orders(0, 1);
    TradeTerms {
        offer_id: offer.id(&network),
        bid_id: bid.id(&network),
        seller: identity(0).peer_id(),
        buyer: identity(1).peer_id(),
        bytes: 1 << 20,
        price_per_gib: 10,
        expires_ms: NOW_MS + 3_600_000,
    }
    .propose(identity(1), &network)
}

fn records() -> Records {
    let network = network();
    Records {
        providers: vec![ProviderRecord::sign(
            identity(2),
            &network,
            ContentId([9; 32]),
            NOW_MS,
            60_000,
        )],
        peers: vec![PeerRecord::sign(identity(3), &network, &[addr()], NOW_MS)],
    }
}

/// The sync items the gossip targets hold: a few pairs.
pub fn sync_items() -> SyncItems {
    let mut items = SyncItems::new();
    for (up, down) in [(0u8, 1u8), (1, 2), (2, 3), (3, 0)] {
        let receipt = signed_receipt(up, down, 3, 300, 300);
        items.insert(sync::pair_key(&receipt.pair()), receipt.seq);
    }
    items
}

/// `hello`'s seeds: our Hello, one with a long agent and no port, an empty frame.
pub fn hello() -> Vec<Vec<u8>> {
    let mut ours = Hello::new(network(), Some(7420), "tally/0.1.0");
    let one = frame(&ours);
    ours.listen_port = None;
    ours.agent = "é".repeat(32);
    vec![one, frame(&ours), vec![0, 0, 0, 0]]
}

/// `request`'s seeds: one stream of every request.
pub fn request() -> Vec<Vec<u8>> {
    let latest = LatestReceipts {
        sender_uploaded: Some(signed_receipt(1, 0, 2, 200, 200)),
        sender_downloaded: Some(signed_receipt(0, 1, 2, 200, 200)),
    };
    let content = ContentId([7; 32]);
    let requests = [
        Request::Latest(latest),
        Request::Manifest { content },
        Request::Have { content },
        Request::Chunk { content, index: 3 },
        Request::Propose(proposal()),
        Request::Gossip,
        Request::Conflict(conflict_proof()),
        Request::Orders(order_messages()),
        Request::Trade(trade()),
    ];
    let mut seeds: Vec<Vec<u8>> = requests.iter().map(frame).collect();
    seeds.push(requests.iter().flat_map(frame).collect());
    seeds
}

fn manifest() -> Manifest {
    let chunks = vec![ChunkHash([1; 32]), ChunkHash([2; 32])];
    match Manifest::new(300_000, chunks) {
        Ok(manifest) => manifest,
        Err(error) => panic!("seed manifest: {error}"),
    }
}

/// `response`'s seeds: every response, and a bare encoded manifest.
pub fn response() -> Vec<Vec<u8>> {
    let network = network();
    let responses = [
        Response::Latest(LatestReceipts {
            sender_uploaded: Some(signed_receipt(0, 1, 2, 200, 200)),
            sender_downloaded: None,
        }),
        Response::Manifest {
            encoded: manifest().encode(),
        },
        Response::Have {
            chunks: 11,
            bitfield: tally_node::wire::bitfield(11, [0, 3, 10]),
        },
        Response::Chunk { len: 262_144 },
        Response::Countersigned(signed_receipt(0, 1, 1, 500, 500)),
        Response::refused(
            RefusalCode::CreditWindowFull {
                unacknowledged: 5,
                window: 4,
            },
            "full",
        ),
        Response::Received,
        Response::Agreement(trade().countersign(identity(0), &network)),
    ];
    let mut seeds: Vec<Vec<u8>> = responses.iter().map(frame).collect();
    seeds.push(manifest().encode());
    seeds
}

/// `gossip`'s seeds: a whole session's frames from one side.
pub fn gossip() -> Vec<Vec<u8>> {
    let items = sync_items();
    let hello = GossipHello {
        conflicts: 1,
        conflicts_digest: [4; 32],
        observed: addr(),
        recent: items
            .changed_since(0, 8)
            .iter()
            .map(|(id, _)| *id)
            .collect(),
    };
    let frames = [
        GossipFrame::Hello(hello),
        GossipFrame::Conflicts(vec![conflict_proof()]),
        GossipFrame::Records(records()),
        GossipFrame::Want(vec![[1; 8], [2; 8]]),
        GossipFrame::Receipts(vec![signed_receipt(1, 2, 4, 400, 400)]),
        GossipFrame::Sync(sync::initiate(&items).encode()),
        GossipFrame::End,
    ];
    let mut seeds: Vec<Vec<u8>> = frames.iter().map(frame).collect();
    seeds.push(frames.iter().flat_map(frame).collect());
    seeds
}

/// `sync_message`'s seeds: the first message of an exchange, and a reply to it.
pub fn sync_message() -> Vec<Vec<u8>> {
    let items = sync_items();
    let first = sync::initiate(&items);
    let mut other = SyncItems::new();
    let receipt = signed_receipt(2, 1, 9, 900, 900);
    other.insert(sync::pair_key(&receipt.pair()), receipt.seq);
    let mut seeds = vec![first.encode(), sync::initiate_whole(&items).encode()];
    if let Ok(reply) = sync::respond(&other, &first)
        && let Some(message) = reply.message
    {
        seeds.push(message.encode());
    }
    seeds
}

/// `receipts`' seeds: mode byte, then postcard or JSON receipts, or pair operations.
pub fn receipts() -> Vec<Vec<u8>> {
    let receipt = signed_receipt(0, 1, 3, 300, 300);
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    let postcard = |value: &dyn erased::Encode| value.encode();
    vec![
        with_mode(0, postcard(&receipt)),
        with_mode(0, postcard(&proposal())),
        with_mode(0, postcard(&conflict_proof())),
        with_mode(1, serde_json::to_vec(&receipt).unwrap_or_default()),
        with_mode(2, (0u8..64).collect()),
    ]
}

/// `records`' seeds: mode byte, then postcard records, or fields to sign.
pub fn records_seeds() -> Vec<Vec<u8>> {
    let records = records();
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    vec![
        with_mode(0, records.providers[0].encode()),
        with_mode(0, records.peers[0].encode()),
        with_mode(0, records.encode()),
        with_mode(1, (0u8..64).collect()),
    ]
}

/// `market`'s seeds: mode byte, then postcard orders and trades, or market operations.
pub fn market() -> Vec<Vec<u8>> {
    let with_mode = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    let network = network();
    vec![
        with_mode(0, order_messages().encode()),
        with_mode(0, trade().encode()),
        with_mode(0, trade().countersign(identity(0), &network).encode()),
        with_mode(1, (0u8..128).collect()),
        with_mode(1, [0u8, 1, 2, 3].repeat(40)),
    ]
}

/// `config`'s seeds: the file `tally init` writes, and a few small ones.
pub fn config() -> Vec<Vec<u8>> {
    [
        tally_node::config::render_default("tally"),
        "network = \"testnet\"\n[node]\nupload_limit = \"10MiB/s\"\npeers = [\"127.0.0.1:7420\"]\n"
            .to_owned(),
        "[store]\ncache_mib = 64\n".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// `scenario`'s seeds: the scenario files of the repository are the real ones; these are small.
pub fn scenario() -> Vec<Vec<u8>> {
    [
        "duration_s = 60\nseed = 1\n\n[[group]]\nname = \"seeds\"\nbehaviour = \"seeder\"\ncount = 1\n\n[[group]]\nname = \"leech\"\nbehaviour = \"leecher\"\ncount = 3\n",
        "duration_s = 10\n[[group]]\nname = \"s\"\nbehaviour = \"sybil\"\ncount = 2\n",
    ]
    .into_iter()
    .map(|text| text.as_bytes().to_vec())
    .collect()
}

/// postcard encoding of any seed value.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            postcard::to_stdvec(self).unwrap_or_default()
        }
    }
}

use erased::Encode as _;
