//! Two parties trade in both directions while a third listens to gossip. Whatever the order in
//! which proposals, countersignatures, applies and gossip happen (lost, late, replayed), every
//! store's latest receipt per pair never regresses, no conflict ever appears, and once messages
//! settle all three stores hold the same latest receipt per pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_ledger::{
    Applied, DownloaderPair, Identity, Ingested, NetworkId, Pair, Proposal, Receipt, Resync, Store,
    StoreConfig, UploaderPair,
};

#[derive(Debug, Clone)]
enum Step {
    /// Bytes flow on pair 0 (A→B) or 1 (B→A).
    Transfer { pair: usize, bytes: u64 },
    /// The pair's downloader proposes; the proposal goes in flight.
    Propose { pair: usize },
    /// A proposal in flight reaches the uploader (index picks which: out of order, and a copy
    /// stays behind when `replay`).
    DeliverProposal { pick: usize, replay: bool },
    /// A countersigned receipt in flight reaches the downloader.
    DeliverReceipt { pick: usize, replay: bool },
    /// One store pushes what another lacks (0 = A, 1 = B, 2 = the third party C).
    Gossip { from: usize, to: usize },
    /// A party restarts its pair state from its store, as after a crash, then re-syncs.
    Restart { party: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize, 1..5000u64).prop_map(|(pair, bytes)| Step::Transfer { pair, bytes }),
        3 => (0..2usize).prop_map(|pair| Step::Propose { pair }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, replay)| Step::DeliverProposal { pick, replay }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, replay)| Step::DeliverReceipt { pick, replay }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Gossip { from, to }),
        1 => (0..2usize).prop_map(|party| Step::Restart { party }),
    ]
}

struct World {
    net: NetworkId,
    ids: [Identity; 2],
    stores: [Store; 3],
    _dirs: [tempfile::TempDir; 3],
    /// pair 0: A uploads to B; pair 1: B uploads to A. Index = uploader party.
    uploaders: [UploaderPair; 2],
    downloaders: [DownloaderPair; 2],
    proposals: Vec<(usize, Proposal)>,
    receipts: Vec<(usize, Receipt)>,
    /// The highest seq each store has held per pair, to catch a regression.
    high: [BTreeMap<Pair, u64>; 3],
}

impl World {
    fn new() -> Self {
        let net = NetworkId::from_name("tally-proptest");
        let ids = [
            Identity::from_secret_bytes([11; 32]),
            Identity::from_secret_bytes([22; 32]),
        ];
        let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
        let stores =
            [0, 1, 2].map(|i| Store::open(dirs[i].path(), net, StoreConfig::default()).unwrap());
        let (a, b) = (ids[0].peer_id(), ids[1].peer_id());
        Self {
            uploaders: [
                UploaderPair::new(net, a, b, None),
                UploaderPair::new(net, b, a, None),
            ],
            downloaders: [
                DownloaderPair::new(net, b, a, None),
                DownloaderPair::new(net, a, b, None),
            ],
            net,
            ids,
            stores,
            _dirs: dirs,
            proposals: Vec::new(),
            receipts: Vec::new(),
            high: Default::default(),
        }
    }

    fn pair(&self, pair: usize) -> Pair {
        Pair {
            uploader: self.ids[pair].peer_id(),
            downloader: self.ids[1 - pair].peer_id(),
        }
    }

    /// Durable before acknowledged: store and flush, then the caller may send.
    fn keep(&self, party: usize, receipt: &Receipt) {
        let verified = receipt.verify(&self.net).unwrap();
        let applied = self.stores[party].apply(&verified).unwrap();
        assert!(
            !matches!(applied, Applied::Conflict(_)),
            "conflict at party {party}"
        );
        self.stores[party].flush().unwrap();
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Transfer { pair, bytes } => {
                let window = 16_000;
                if self.uploaders[pair].may_send(bytes, window) {
                    self.uploaders[pair].record_sent(bytes, bytes).unwrap();
                    self.downloaders[pair]
                        .record_received(bytes, bytes)
                        .unwrap();
                }
            }
            Step::Propose { pair } => {
                let downloader = 1 - pair;
                if let Some(p) = self.downloaders[pair].propose(&self.ids[downloader], 7) {
                    // Durable before sent.
                    self.stores[downloader].record_proposal(&p.body).unwrap();
                    self.stores[downloader].flush().unwrap();
                    self.proposals.push((pair, p));
                }
            }
            Step::DeliverProposal { pick, replay } => {
                if self.proposals.is_empty() {
                    return;
                }
                let index = pick % self.proposals.len();
                let (pair, proposal) = if replay {
                    self.proposals[index]
                } else {
                    self.proposals.remove(index)
                };
                // A refusal (stale, replayed) is fine; it must never be a conflict.
                if let Ok(receipt) = self.uploaders[pair].countersign(&self.ids[pair], &proposal) {
                    self.keep(pair, &receipt);
                    self.receipts.push((pair, *receipt.receipt()));
                }
            }
            Step::DeliverReceipt { pick, replay } => {
                if self.receipts.is_empty() {
                    return;
                }
                let index = pick % self.receipts.len();
                let (pair, receipt) = if replay {
                    self.receipts[index]
                } else {
                    self.receipts.remove(index)
                };
                match self.downloaders[pair]
                    .accept_countersigned(&receipt)
                    .unwrap()
                {
                    Resync::Conflict(_) => panic!("conflict at the downloader"),
                    Resync::TheirsNewer(r) => self.keep(1 - pair, &r),
                    Resync::Agree | Resync::OursNewer => {}
                }
            }
            Step::Gossip { from, to } => {
                if from == to {
                    return;
                }
                let lacking = self.stores[from]
                    .newer_than(&self.stores[to].summary().unwrap())
                    .unwrap();
                for outcome in self.stores[to].ingest(&lacking).unwrap() {
                    assert!(
                        matches!(outcome, Ingested::Applied(Applied::New { .. })),
                        "gossip sent something not new: {outcome:?}"
                    );
                }
                self.stores[to].flush().unwrap();
            }
            Step::Restart { party } => {
                // The party's pair state is rebuilt from its store alone. The byte counts come
                // from the old state: the content itself is durable, so a node knows what it
                // sent and verified.
                let net = self.net;
                let me = self.ids[party].peer_id();
                let other = self.ids[1 - party].peer_id();
                let (up, down) = (party, 1 - party);
                let store = &self.stores[party];
                let up_latest = store.latest(&self.pair(up)).unwrap();
                let sent = self.uploaders[up].sent_bytes();
                let mut uploader = UploaderPair::new(net, me, other, up_latest);
                let resend = sent - uploader.sent_bytes();
                uploader.record_sent(resend, resend).unwrap();
                let received = self.downloaders[down].received_bytes();
                let mut downloader =
                    DownloaderPair::new(net, me, other, store.latest(&self.pair(down)).unwrap())
                        .with_last_proposal(store.last_proposal(&self.pair(down)).unwrap());
                let more = received - downloader.received_bytes();
                downloader.record_received(more, more).unwrap();
                // Re-sync both pairs with the other side's latest.
                let theirs = self.downloaders[up].latest().copied();
                if let Resync::TheirsNewer(r) = uploader.resync(theirs.as_ref()).unwrap() {
                    self.keep(party, &r);
                }
                let theirs = self.uploaders[down].latest().copied();
                if let Resync::TheirsNewer(r) = downloader.resync(theirs.as_ref()).unwrap() {
                    self.keep(party, &r);
                }
                self.uploaders[up] = uploader;
                self.downloaders[down] = downloader;
            }
        }
        self.check_no_regression();
    }

    fn check_no_regression(&mut self) {
        for (i, store) in self.stores.iter().enumerate() {
            for (pair, seq) in store.summary().unwrap() {
                let high = self.high[i].entry(pair).or_insert(0);
                assert!(
                    seq >= *high,
                    "store {i} regressed on {pair:?}: {seq} < {high}"
                );
                *high = seq;
            }
            assert!(store.conflicts().unwrap().is_empty());
        }
    }

    /// Messages settle: every proposal answered, every receipt delivered, a last round, and
    /// gossip both ways until nothing is left to send.
    fn settle(&mut self) {
        for pair in 0..2 {
            self.run(Step::Propose { pair });
        }
        while !self.proposals.is_empty() {
            self.run(Step::DeliverProposal {
                pick: 0,
                replay: false,
            });
        }
        while !self.receipts.is_empty() {
            self.run(Step::DeliverReceipt {
                pick: 0,
                replay: false,
            });
        }
        for (from, to) in [(0, 1), (1, 0), (0, 2), (1, 2)] {
            self.run(Step::Gossip { from, to });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_interleaving_converges_and_never_regresses(steps in prop::collection::vec(step(), 1..60)) {
        let mut world = World::new();
        for step in steps {
            world.run(step);
        }
        world.settle();
        let summaries: Vec<_> = world.stores.iter().map(|s| s.summary().unwrap()).collect();
        prop_assert_eq!(&summaries[0], &summaries[1]);
        prop_assert_eq!(&summaries[0], &summaries[2]);
        for pair in 0..2 {
            let agreed = world.uploaders[pair].latest().copied();
            prop_assert_eq!(agreed, world.downloaders[pair].latest().copied());
            for store in &world.stores {
                prop_assert_eq!(store.latest(&world.pair(pair)).unwrap(), agreed);
            }
            // After settling, everything sent is acknowledged.
            prop_assert_eq!(world.uploaders[pair].unacknowledged(), 0);
        }
    }
}
