//! Matching throughput: orders per second inserted and matched on a book holding 100,000 resting
//! orders, and, apart from it, what verifying an order's signature costs.
//!
//! The book is pre-filled with 50,000 offers and 50,000 bids at prices that do not cross (offers
//! 1,000–1,499 credits per GiB, bids 500–999), then 100,000 incoming orders, alternately bids and
//! offers priced 900–1,099, are timed one by one: about half cross and fill against one or more
//! resting orders, partially or fully, and what is left rests. Sellers post only offers and
//! buyers only bids, so no order is refused as a self-cross. Matching is timed on orders verified
//! beforehand; signing and verifying are timed on their own.
//!
//! `cargo bench -p tally-market --bench matching` runs it at full size (signing and verifying the
//! 200,000 orders takes some seconds). `TALLY_BENCH_ORDERS=N` sets the resting count (and the
//! incoming count). Without `--bench` (as under `cargo test --benches`) it runs a small smoke
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tally_ledger::{Identity, NetworkId};
use tally_market::{
    Bid, BidTerms, BookConfig, Offer, OfferTerms, OrderBook, VerifiedOrder, order::GIB,
};

const NOW: u64 = 1_800_000_000_000;
const HOUR_MS: u64 = 3_600_000;

#[derive(Clone, Copy)]
enum Kind {
    Offer { price: u64 },
    Bid { price: u64 },
}

struct Spec {
    kind: Kind,
    owner: usize,
    bytes: u64,
    ttl: u64,
}

fn identities(n: usize, tag: u8) -> Vec<Identity> {
    (0..n as u64)
        .map(|i| {
            let mut seed = [tag; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(seed)
        })
        .collect()
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let resting: usize = std::env::var("TALLY_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 100_000 } else { 2_000 });
    let incoming = resting;
    let owners = (resting / 100).max(4);
    let net = NetworkId::from_name("tally-bench");
    let sellers = identities(owners, 0x5e);
    let buyers = identities(owners, 0xb0);
    // Seeded, so runs are comparable.
    let mut mix = ChaCha8Rng::seed_from_u64(42);

    let mut specs = Vec::with_capacity(resting + incoming);
    for i in 0..resting {
        let kind = if i % 2 == 0 {
            Kind::Offer {
                price: mix.random_range(1_000..1_500),
            }
        } else {
            Kind::Bid {
                price: mix.random_range(500..1_000),
            }
        };
        specs.push(Spec {
            kind,
            owner: mix.random_range(0..owners as u64) as usize,
            bytes: mix.random_range(1 << 20..64 << 20),
            ttl: mix.random_range(HOUR_MS..7 * 24 * HOUR_MS),
        });
    }
    for i in 0..incoming {
        let price = mix.random_range(900..1_100);
        let kind = if i % 2 == 0 {
            Kind::Bid { price }
        } else {
            Kind::Offer { price }
        };
        specs.push(Spec {
            kind,
            owner: mix.random_range(0..owners as u64) as usize,
            bytes: mix.random_range(1 << 20..128 << 20),
            ttl: mix.random_range(HOUR_MS..7 * 24 * HOUR_MS),
        });
    }

    // Sign, then verify, each timed on its own.
    let started = Instant::now();
    let signed: Vec<(Option<Offer>, Option<Bid>)> = specs
        .iter()
        .enumerate()
        .map(|(nonce, spec)| match spec.kind {
            Kind::Offer { price } => (
                Some(Offer::sign(
                    &sellers[spec.owner],
                    &net,
                    OfferTerms {
                        bytes: spec.bytes,
                        max_rate: 10 << 20,
                        price_per_gib: price,
                        issued_ms: NOW,
                        expires_ms: NOW + spec.ttl,
                        nonce: nonce as u64,
                    },
                )),
                None,
            ),
            Kind::Bid { price } => (
                None,
                Some(Bid::sign(
                    &buyers[spec.owner],
                    &net,
                    BidTerms {
                        bytes: spec.bytes,
                        content: (nonce % 3 == 0).then_some([7; 32]),
                        max_price_per_gib: price,
                        issued_ms: NOW,
                        expires_ms: NOW + spec.ttl,
                        nonce: nonce as u64,
                    },
                )),
            ),
        })
        .collect();
    let sign_time = started.elapsed();
    let started = Instant::now();
    let verified: Vec<VerifiedOrder> = signed
        .iter()
        .map(|pair| match pair {
            (Some(offer), _) => offer.verify(&net, NOW).unwrap().into(),
            (_, Some(bid)) => bid.verify(&net, NOW).unwrap().into(),
            (None, None) => unreachable!(),
        })
        .collect();
    let verify_time = started.elapsed();
    let (prefill, stream) = verified.split_at(resting);

    let mut book = OrderBook::new(BookConfig {
        max_orders: 4 * (resting + incoming),
        max_per_owner: resting + incoming,
        max_remembered: 4 * (resting + incoming),
    });
    let started = Instant::now();
    for order in prefill {
        let placed = book.insert(*order, NOW).unwrap();
        assert!(placed.fills.is_empty(), "the pre-fill must not cross");
    }
    let prefill_time = started.elapsed();
    assert_eq!(book.len(), resting);

    let mut latencies = Vec::with_capacity(incoming);
    let (mut fills, mut filled_bytes, mut credits, mut crossing) = (0usize, 0u128, 0u128, 0usize);
    let started = Instant::now();
    for order in stream {
        let t = Instant::now();
        let placed = book.insert(*order, NOW).unwrap();
        latencies.push(t.elapsed());
        crossing += usize::from(!placed.fills.is_empty());
        fills += placed.fills.len();
        for fill in &placed.fills {
            filled_bytes += u128::from(fill.bytes);
            credits += u128::from(fill.bytes) * u128::from(fill.price_per_gib) / u128::from(GIB);
        }
    }
    let stream_time = started.elapsed();
    let after = book.len();

    let started = Instant::now();
    let expired = book.expire(NOW + 8 * 24 * HOUR_MS).len();
    let expire_time = started.elapsed();
    assert_eq!(expired, after);
    assert!(book.is_empty());

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    let total = resting + incoming;

    println!(
        "matching bench: {resting} resting orders ({} offers, {} bids), {incoming} incoming, {owners} sellers and {owners} buyers{}",
        resting.div_ceil(2),
        resting / 2,
        if benchmarking { "" } else { " (smoke)" }
    );
    println!("{:<44} {:>14} {:>14}", "", "per second", "µs per order");
    println!(
        "{:<44} {:>14.0} {:>14.2}",
        "sign (ed25519, one core)",
        rate(total, sign_time),
        per(sign_time, total)
    );
    println!(
        "{:<44} {:>14.0} {:>14.2}",
        "verify (shape, dates, signature, id)",
        rate(total, verify_time),
        per(verify_time, total)
    );
    println!(
        "{:<44} {:>14.0} {:>14.2}",
        "pre-fill: insert to rest, no cross",
        rate(resting, prefill_time),
        per(prefill_time, resting)
    );
    println!(
        "{:<44} {:>14.0} {:>14.2}",
        format!("incoming: match + rest on a {resting}-order book"),
        rate(incoming, stream_time),
        per(stream_time, incoming)
    );
    println!(
        "{:<44} {:>14.0} {:>14.2}",
        format!("expire: drop all {after} resting"),
        rate(after, expire_time),
        per(expire_time, after.max(1))
    );
    println!(
        "incoming latency: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        pct(1.0).as_secs_f64() * 1e6
    );
    println!(
        "incoming that crossed: {crossing} ({:.1}%), fills: {fills} ({:.2} per crossing order), matched {:.1} GiB for {credits} credits; book after: {after} orders",
        100.0 * crossing as f64 / incoming as f64,
        fills as f64 / crossing.max(1) as f64,
        filled_bytes as f64 / GIB as f64,
    );
}
