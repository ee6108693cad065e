//! Standing on real nodes: a transfer's receipts give the uploader standing at the downloader
//! and leave the downloader at the floor at the uploader; gossiped third-party receipts add a
//! transitive part with the chain that carries it; a conflict proof takes everything away; the
//! API explains it (QUIC on 127.0.0.1 port 0, temporary data dirs).
// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{TestNode, finished, payload, wait_for};
use tally_ledger::{ConflictProof, Identity, NetworkId, Receipt, ReceiptBody};
use tally_node::content::CHUNK_SIZE;
use tally_node::content::ContentId;
use tally_node::daemon::Behaviour;
use tally_node::daemon::api::NodeHandle;
use tally_node::daemon::fetch::{self, DownloadStatus, Phase};
use tally_web::HexId;
use tally_web::api::NodeApi;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

fn receipt(up: &Identity, down: &Identity, seq: u64, credits: u64) -> Receipt {
    ReceiptBody {
        uploader: up.peer_id(),
        downloader: down.peer_id(),
        seq,
        bytes: credits,
        credits,
        time_ms: 1_700_000_000_000 + seq,
    }
    .propose(down, &net())
    .countersign(up, &net())
}

async fn standing_of(node: &TestNode, peer: &Identity) -> tally_web::model::StandingInfo {
    NodeHandle::new(Arc::clone(node.shared()))
        .standing(HexId(*peer.peer_id().as_bytes()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_gives_the_uploader_standing_and_gossip_adds_what_others_gave() {
    let seeder = TestNode::start(Behaviour::default()).await;
    let leecher = TestNode::start(Behaviour::default()).await;
    leecher.connect(&seeder).await;
    let bytes = payload(3 * CHUNK_SIZE as usize + 7, 11);
    let content = seeder.share(&bytes);
    let status = fetch::start(leecher.shared(), content, leecher.out("got.bin")).unwrap();
    assert_eq!(finished(&status).await, Phase::Complete);
    let seeder_id = Identity::from_secret_bytes(seeder.secret);
    let leecher_id = Identity::from_secret_bytes(leecher.secret);

    // At the leecher, the seeder gave everything it received.
    let size = bytes.len() as u64;
    wait_for("the seeder's standing at the leecher", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&seeder.id()).given == size)
    })
    .await;
    let at_leecher = standing_of(&leecher, &seeder_id).await;
    assert!(!at_leecher.at_floor && at_leecher.score > 0.0);
    assert!(at_leecher.weight > 1.0 && at_leecher.credit_window > 4 << 20);
    assert!(at_leecher.queue.is_none(), "nothing waiting at the leecher");
    assert_eq!(at_leecher.raw, size as f64);
    // At the seeder, the leecher only took: the floor, with a stranger.
    wait_for("the leecher's debt at the seeder", || {
        seeder
            .shared()
            .standing
            .with(|s| s.of(&leecher.id()).taken == size)
    })
    .await;
    let at_seeder = standing_of(&seeder, &leecher_id).await;
    let stranger = standing_of(&seeder, &Identity::generate(&mut rand::rng())).await;
    assert!(at_seeder.at_floor && stranger.at_floor);
    assert_eq!((at_seeder.weight, at_seeder.credit_window), (1.0, 4 << 20));
    assert_eq!(at_seeder.score, stranger.score);

    // Someone who gave to the seeder earns a share at the leecher, through the seeder.
    let helper = Identity::generate(&mut rand::rng());
    let gift = receipt(&helper, &seeder_id, 1, 64 << 20);
    leecher
        .shared()
        .store
        .apply(&gift.verify(&net()).unwrap())
        .unwrap();
    wait_for("the helper's transitive standing at the leecher", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&helper.peer_id()).transitive > 0.0)
    })
    .await;
    let why = standing_of(&leecher, &helper).await;
    assert!(!why.at_floor && why.given == 0);
    assert_eq!(why.paths.len(), 1);
    assert_eq!(
        why.paths[0].via,
        vec![
            HexId(*seeder.id().as_bytes()),
            HexId(*helper.peer_id().as_bytes())
        ]
    );

    // Caught signing two receipts for one seq: no standing, and no transitive part through it.
    let mut other = gift.body();
    other.credits += 1;
    let conflict = ConflictProof::new(
        gift,
        other
            .propose(&seeder_id, &net())
            .countersign(&helper, &net()),
    )
    .unwrap();
    leecher.shared().store.add_conflict(&conflict).unwrap();
    wait_for("the helper marked dishonest", || {
        leecher
            .shared()
            .standing
            .with(|s| s.of(&helper.peer_id()).dishonest)
    })
    .await;
    let why = standing_of(&leecher, &helper).await;
    assert!(why.dishonest && why.at_floor && why.paths.is_empty());
    leecher.stop().await;
    seeder.stop().await;
}

/// Starts a download of `content` at each of `nodes`, all at once.
fn fetch_all(nodes: &[&TestNode], content: ContentId) -> Vec<Arc<DownloadStatus>> {
    nodes
        .iter()
        .map(|n| fetch::start(n.shared(), content, n.out("fetched.bin")).unwrap())
        .collect()
}

/// Bytes a download has verified and stored so far.
fn bytes_have(status: &DownloadStatus) -> u64 {
    status.bytes_have.load(std::sync::atomic::Ordering::Relaxed)
}

/// The upload limit of [`limited_seeder`].
const LIMIT: u64 = 8 << 20;

/// No gossip: downloaders must not find and serve each other.
fn quiet(config: &mut tally_node::config::Config) {
    config.node.gossip_interval = std::time::Duration::from_secs(3600);
    config.node.target_peers = 0;
}

/// A quiet node whose upload is limited to [`LIMIT`].
async fn limited_seeder() -> TestNode {
    TestNode::start_with(Behaviour::default(), |config| {
        quiet(config);
        config.node.upload_limit = Some(tally_node::rate::Rate(LIMIT));
    })
    .await
}

/// One seeder whose upload is limited, three leechers of different standing at it and one of
/// none (it never uploaded: a freerider by what it gave, though it signs its receipts), all
/// downloading the same file at once from the seeder alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_seeder_shares_its_upload_by_standing_and_the_freerider_finishes_last() {
    let seeder = limited_seeder().await;
    let mut leechers = Vec::new();
    for _ in 0..4 {
        let leecher = TestNode::start_with(Behaviour::default(), quiet).await;
        leecher.connect(&seeder).await;
        leechers.push(leecher);
    }
    // What the first three gave the seeder earlier: 256 MiB, 1 GiB, 4 GiB; the fourth nothing.
    let seeder_id = Identity::from_secret_bytes(seeder.secret);
    for (leecher, credits) in leechers.iter().zip([256u64 << 20, 1 << 30, 4 << 30]) {
        let given = receipt(
            &Identity::from_secret_bytes(leecher.secret),
            &seeder_id,
            1,
            credits,
        );
        seeder
            .shared()
            .store
            .apply(&given.verify(&net()).unwrap())
            .unwrap();
    }
    let score = |node: &TestNode| seeder.shared().standing.with(|s| s.of(&node.id()).score);
    wait_for("the leechers' standing at the seeder", || {
        leechers[..3].iter().all(|l| score(l) > 0.0)
    })
    .await;
    let scores: Vec<f64> = leechers.iter().map(score).collect();
    assert!(scores[0] < scores[1] && scores[1] < scores[2] && scores[3] == 0.0);

    let size = 32 << 20;
    let bytes = payload(size, 21);
    let content = seeder.share(&bytes);
    let downloads = fetch_all(&leechers.iter().collect::<Vec<_>>(), content);
    let have = |i: usize| bytes_have(&downloads[i]);
    // Measure while all four are downloading: from when each has two chunks until the first
    // has 70% of the file.
    let chunk = u64::from(CHUNK_SIZE);
    wait_for("every download under way", || {
        (0..4).all(|i| have(i) >= 2 * chunk)
    })
    .await;
    let start: Vec<u64> = (0..4).map(have).collect();
    // The queue says where each stands: the freerider in the floor class.
    let uploads = &seeder.shared().uploads;
    wait_for("the freerider waiting in the floor class", || {
        uploads
            .position(&leechers[3].id())
            .is_some_and(|q| q.class == tally_market::PeerClass::Floor && q.weight == 1.0)
    })
    .await;
    wait_for("the best leecher waiting in the standing class", || {
        uploads
            .position(&leechers[2].id())
            .is_some_and(|q| q.class == tally_market::PeerClass::Standing && q.weight > 8.0)
    })
    .await;
    wait_for("the first download at 70%", || {
        (0..4).any(|i| have(i) >= size as u64 * 7 / 10)
    })
    .await;
    let got: Vec<f64> = (0..4).map(|i| (have(i) - start[i]) as f64).collect();
    // When each download has every byte.
    let mut done_at: Vec<Option<std::time::Instant>> = vec![None; 4];
    common::wait_until(
        "every download complete",
        std::time::Duration::from_secs(120),
        || {
            for (i, done) in done_at.iter_mut().enumerate() {
                if done.is_none() && have(i) == size as u64 {
                    *done = Some(std::time::Instant::now());
                }
            }
            done_at.iter().all(Option::is_some)
        },
    )
    .await;
    for (i, status) in downloads.iter().enumerate() {
        assert_eq!(finished(status).await, Phase::Complete, "leecher {i}");
    }
    let done_at: Vec<std::time::Instant> = done_at.into_iter().flatten().collect();
    assert!(
        done_at[..3].iter().all(|t| *t <= done_at[3]),
        "the freerider finished before someone with standing"
    );
    let config = tally_market::SchedulerConfig::default();
    let weights: Vec<f64> = scores[..3].iter().map(|s| config.weight(*s)).collect();
    let total_weight: f64 = weights.iter().sum();
    let total_got: f64 = got[..3].iter().sum();
    for i in 0..3 {
        let expected = weights[i] / total_weight;
        let measured = got[i] / total_got;
        println!(
            "leecher {i}: standing {:.3}, weight {:.2}, expected share {expected:.3}, measured {measured:.3} ({:.1} MiB)",
            scores[i],
            weights[i],
            got[i] / f64::from(1 << 20)
        );
        assert!(
            (measured - expected).abs() <= 0.15 * expected,
            "leecher {i}: measured share {measured:.3}, the scheduler's weight says {expected:.3}"
        );
    }
    println!(
        "freerider: {:.1} MiB while the others took {:.1} MiB",
        got[3] / f64::from(1 << 20),
        total_got / f64::from(1 << 20)
    );
    // Rates order by standing, the freerider slowest.
    assert!(
        got[2] > got[1] && got[1] > got[0] && got[0] > got[3],
        "{got:?}"
    );
    assert!(got[3] > 0.0, "the freerider was served meanwhile");
    for leecher in leechers {
        leecher.stop().await;
    }
    seeder.stop().await;
}

/// A seeder with a daily upload budget of 16 MiB serves that much of a 20 MiB file and no
/// more until the day resets; the status shows what was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_budget_stops_uploads_once_spent_and_the_status_shows_it() {
    const BUDGET: u64 = 16 << 20;
    let seeder = TestNode::start_with(Behaviour::default(), |config| {
        config.node.upload_budget_daily = Some(BUDGET);
    })
    .await;
    let leecher = TestNode::start(Behaviour::default()).await;
    leecher.connect(&seeder).await;
    let size = 20 << 20;
    let content = seeder.share(&payload(size, 3));
    let status = fetch::start(leecher.shared(), content, leecher.out("capped.bin")).unwrap();
    let uploads = &seeder.shared().uploads;
    // Spent: requests queued before are held until the day resets, later ones refused.
    wait_for("the budget spent", || {
        uploads
            .budget_status(tally_node::daemon::now_ms())
            .is_some_and(|b| b.day.remaining == Some(0))
    })
    .await;
    assert!(
        uploads
            .budget_allows(tally_node::daemon::now_ms(), u64::from(CHUNK_SIZE))
            .is_err()
    );
    let got = bytes_have(&status);
    assert!(
        got <= BUDGET,
        "the leecher got {got} bytes past a budget of {BUDGET}"
    );
    let api = NodeHandle::new(Arc::clone(seeder.shared()));
    let shown = api.status().await.unwrap().upload_budget;
    assert_eq!(shown.day.limit, Some(BUDGET));
    assert!(shown.day.used <= BUDGET && shown.day.used >= BUDGET - u64::from(CHUNK_SIZE));
    assert_eq!(shown.month.limit, None);
    assert!(shown.day.resets_at_ms > tally_node::daemon::now_ms());
    leecher.stop().await;
    seeder.stop().await;
}

/// A seller delivering an agreed trade serves its buyer at the top of its upload queue — beside
/// another downloader without standing, the buyer takes most of the limited upload — and the
/// receipts between them settle at the trade's price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_with_an_agreed_trade_is_served_first_and_pays_the_trade_price() {
    use tally_market::{Bid, BidTerms, Offer, OfferTerms};
    use tally_node::wire::OrderMessage;
    let seller = limited_seeder().await;
    let other = TestNode::start_with(Behaviour::default(), quiet).await;
    let buyer = TestNode::start_with(Behaviour::default(), quiet).await;
    for node in [&other, &buyer] {
        node.connect(&seller).await;
    }
    // The seller's offer, and the buyer's proposal for 64 MiB of it, countersigned.
    let now = tally_node::daemon::now_ms();
    let seller_id = Identity::from_secret_bytes(seller.secret);
    let offer = Offer::sign(
        &seller_id,
        &net(),
        OfferTerms {
            bytes: 1 << 30,
            max_rate: LIMIT,
            price_per_gib: 1_000,
            issued_ms: now,
            expires_ms: now + 3_600_000,
            nonce: 1,
        },
    );
    let offer_id = tally_node::market::post(seller.shared(), OrderMessage::Offer(offer)).unwrap();
    // The offer reaches the buyer, whose crossing bid becomes a trade the seller countersigns.
    wait_for("the offer in the buyer's book", || {
        buyer
            .shared()
            .market
            .resting(&offer_id, tally_node::daemon::now_ms())
            .is_some()
    })
    .await;
    let bid = Bid::sign(
        &Identity::from_secret_bytes(buyer.secret),
        &net(),
        BidTerms {
            bytes: 64 << 20,
            content: None,
            max_price_per_gib: 1_000,
            issued_ms: now,
            expires_ms: now + 3_600_000,
            nonce: 2,
        },
    );
    tally_node::market::post(buyer.shared(), OrderMessage::Bid(bid)).unwrap();
    wait_for("the trade agreed on both sides", || {
        let now = tally_node::daemon::now_ms();
        seller.shared().market.delivering_to(&buyer.id(), now)
            && buyer
                .shared()
                .market
                .trades(now)
                .iter()
                .any(|t| t.agreement.is_some())
    })
    .await;
    let now = tally_node::daemon::now_ms();
    assert!(seller.shared().market.delivering_to(&buyer.id(), now));
    assert!(!seller.shared().market.delivering_to(&other.id(), now));

    let size = 24 << 20;
    let content = seller.share(&payload(size, 8));
    let downloads = fetch_all(&[&other, &buyer], content);
    let have = |i: usize| bytes_have(&downloads[i]);
    let chunk = u64::from(CHUNK_SIZE);
    wait_for("both downloads under way", || {
        (0..2).all(|i| have(i) >= chunk)
    })
    .await;
    let start: Vec<u64> = (0..2).map(have).collect();
    wait_for("the first at 70%", || {
        (0..2).any(|i| have(i) >= size as u64 * 7 / 10)
    })
    .await;
    let (to_other, to_buyer) = (have(0) - start[0], have(1) - start[1]);
    println!(
        "buyer {:.1} MiB, the other {:.1} MiB",
        to_buyer as f64 / f64::from(1 << 20),
        to_other as f64 / f64::from(1 << 20)
    );
    // Weight 10 against the floor's capped slice of 1/11: about ten to one.
    assert!(
        to_buyer > 5 * to_other,
        "buyer {to_buyer}, other {to_other}"
    );
    for status in &downloads {
        assert_eq!(finished(status).await, Phase::Complete);
    }
    // Settled at the trade's price: par for the first 4 MiB after the agreement (the margin for
    // bytes in flight), then 1,000 credits per GiB, chunk by chunk, as the seller priced them;
    // the seller countersigned every proposal, so both hold the same receipt.
    let priced_chunks = (size as u64 - tally_node::market::SETTLE_MARGIN) / chunk;
    let per_chunk = tally_market::order::credits_for(chunk, 1_000);
    let expected = tally_node::market::SETTLE_MARGIN + priced_chunks * per_chunk;
    wait_for("the buyer's last receipt countersigned", || {
        seller
            .latest(seller.id(), buyer.id())
            .is_some_and(|r| r.bytes == size as u64)
    })
    .await;
    let at_seller = seller.latest(seller.id(), buyer.id()).unwrap();
    assert_eq!(buyer.latest(seller.id(), buyer.id()), Some(at_seller));
    assert_eq!(
        at_seller.credits, expected,
        "{} bytes settled for {} credits",
        at_seller.bytes, at_seller.credits
    );
    // The other downloader paid par.
    let par = seller.latest(seller.id(), other.id()).unwrap();
    assert_eq!(par.credits, par.bytes);
    // Both sides' trade followed the transfer: every byte counted as delivered and, the last
    // receipt covering them, paid for at the trade's price; nothing owed.
    let paid = tally_market::order::credits_for(size as u64, 1_000);
    for (side, node) in [("seller", &seller), ("buyer", &buyer)] {
        wait_for("the trade settled up to the last receipt", || {
            let trades = node.shared().market.trades(tally_node::daemon::now_ms());
            trades
                .iter()
                .any(|t| t.agreement.is_some() && t.trade.settled_credits() == paid)
        })
        .await;
        let trades = node.shared().market.trades(tally_node::daemon::now_ms());
        let trade = trades.iter().find(|t| t.agreement.is_some()).unwrap();
        assert_eq!(trade.trade.delivered_bytes(), size as u64, "{side}");
        assert_eq!(trade.trade.owed(), 0, "{side}");
        assert_eq!(
            trade.trade.state(),
            tally_market::TradeState::Delivering,
            "{side}"
        );
    }
    for node in [other, buyer, seller] {
        node.stop().await;
    }
}
