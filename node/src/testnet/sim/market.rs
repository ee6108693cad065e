//! The simulated market: the scenario's `[[order]]`s signed by the posting peers, matched in one
//! [`OrderBook`], each fill turned into a [`Trade`] both sides sign at once, and the trade's
//! life driven by the transfers — the node's rules (`crate::market`): the seller serves a buyer
//! it is delivering to at [`TRADE_PRIORITY`], prices the chunks within the trade at the lower of
//! the trade's price and par, counts them as delivered, and a receipt both signed settles what
//! it covers.
//!
//! Simplified against the node: every node's book is this one book (gossip of orders is taken
//! as instant), the trade handshake takes no time, and a trade that ends undelivered does not
//! reopen its orders.

use std::collections::BTreeMap;

use tally_ledger::{Identity, NetworkId, PeerId};
use tally_market::order::{GIB, credits_for};
use tally_market::{
    Bid, BidTerms, Offer, OfferTerms, OrderBook, Trade, TradeState, TradeTerms, VerifiedOrder,
};

use crate::daemon::serve::TRADE_PRIORITY;
use crate::market::{TRADE_DELIVERY_MS, TRADE_SILENCE_MS};
use crate::testnet::scenario::{Order, OrderSide};

/// Simulated milliseconds are offset by this to look like Unix time to the order checks.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// One trade, as both sides see it (they agree in the simulation).
struct SimTrade {
    trade: Trade,
    seller: u32,
    buyer: u32,
    /// Trade bytes the buyer has received (priced at the trade's price).
    received: u64,
}

/// Orders, book and trades.
pub struct SimMarket {
    network: NetworkId,
    book: OrderBook,
    trades: Vec<SimTrade>,
    /// Posters' identities by key.
    owners: BTreeMap<PeerId, u32>,
    /// Orders refused by the book or that failed to verify (kept for the record).
    pub refused: u64,
}

impl SimMarket {
    /// An empty market on `network`.
    pub fn new(network: &str) -> Self {
        Self {
            network: NetworkId::from_name(network),
            book: OrderBook::default(),
            trades: Vec::new(),
            owners: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Whether any trade exists (the transfer path skips the market otherwise).
    pub fn active(&self) -> bool {
        !self.trades.is_empty()
    }

    /// Peer `ident` (key `identity`) posts `order` at simulated `now_ms`; fills become agreed
    /// trades.
    pub fn post(&mut self, ident: u32, identity: &Identity, order: &Order, now_ms: u64) {
        let now = EPOCH_MS + now_ms;
        self.owners.insert(identity.peer_id(), ident);
        let expires_ms = now + order.ttl_s.saturating_mul(1000);
        let verified: Result<VerifiedOrder, _> = match order.side {
            OrderSide::Offer => Offer::sign(
                identity,
                &self.network,
                OfferTerms {
                    bytes: order.bytes,
                    max_rate: u64::MAX,
                    price_per_gib: order.price_per_gib,
                    issued_ms: now,
                    expires_ms,
                    nonce: u64::from(ident),
                },
            )
            .verify(&self.network, now)
            .map(VerifiedOrder::from),
            OrderSide::Bid => Bid::sign(
                identity,
                &self.network,
                BidTerms {
                    bytes: order.bytes,
                    content: None,
                    max_price_per_gib: order.price_per_gib,
                    issued_ms: now,
                    expires_ms,
                    nonce: u64::from(ident),
                },
            )
            .verify(&self.network, now)
            .map(VerifiedOrder::from),
        };
        let Ok(verified) = verified else {
            self.refused += 1;
            return;
        };
        let placed = match self.book.insert(verified, now) {
            Ok(placed) => placed,
            Err(_) => {
                self.refused += 1;
                return;
            }
        };
        for fill in placed.fills {
            let (Some(&seller), Some(&buyer)) =
                (self.owners.get(&fill.seller), self.owners.get(&fill.buyer))
            else {
                continue;
            };
            let terms = TradeTerms::from_fill(&fill, now + TRADE_DELIVERY_MS);
            // Proposed here; [`SimMarket::agree_all`] has both sides sign it.
            let trade = Trade::propose(terms, now, TRADE_SILENCE_MS);
            self.trades.push(SimTrade {
                trade,
                seller,
                buyer,
                received: 0,
            });
        }
    }

    /// Marks every proposed trade agreed: `keys` gives each party's identity to sign with.
    pub fn agree_all(&mut self, now_ms: u64, keys: &dyn Fn(u32) -> Identity) {
        let now = EPOCH_MS + now_ms;
        for t in &mut self.trades {
            if t.trade.state() != TradeState::Proposed {
                continue;
            }
            let proposal = t.trade.terms().propose(&keys(t.buyer), &self.network);
            let agreement = proposal.countersign(&keys(t.seller), &self.network);
            if let Ok(verified) = agreement.verify(&self.network) {
                let _ = t.trade.agree(&verified, now);
            }
        }
    }

    fn live(&mut self, seller: u32, buyer: u32, now: u64) -> Option<&mut SimTrade> {
        let i = (0..self.trades.len()).find(|&i| {
            let t = &mut self.trades[i];
            t.seller == seller
                && t.buyer == buyer
                && matches!(
                    t.trade.tick(now),
                    TradeState::Agreed | TradeState::Delivering
                )
                && t.trade.remaining_bytes() > 0
        })?;
        self.trades.get_mut(i)
    }

    /// The standing the seller's queue gives `buyer`: [`TRADE_PRIORITY`] while a trade with it
    /// is being delivered.
    pub fn priority(&mut self, seller: u32, buyer: u32, now_ms: u64) -> Option<f64> {
        self.live(seller, buyer, EPOCH_MS + now_ms)
            .map(|_| TRADE_PRIORITY)
    }

    /// The seller sends `len` bytes to `buyer`: the credits due (the trade's price, capped at
    /// par, for the bytes within a live trade; par for the rest) and the trade bytes among them.
    pub fn send(&mut self, seller: u32, buyer: u32, len: u64, now_ms: u64) -> (u64, u64) {
        let now = EPOCH_MS + now_ms;
        let Some(t) = self.live(seller, buyer, now) else {
            return (len, 0);
        };
        let within = len.min(t.trade.remaining_bytes());
        let price = t.trade.terms().price_per_gib.min(GIB);
        if t.trade.deliver(within, u64::MAX, now).is_err() {
            return (len, 0);
        }
        (credits_for(within, price) + (len - within), within)
    }

    /// The buyer received `trade_bytes` of a trade's bytes from `seller`.
    pub fn received(&mut self, seller: u32, buyer: u32, trade_bytes: u64) {
        if trade_bytes == 0 {
            return;
        }
        if let Some(t) = self
            .trades
            .iter_mut()
            .find(|t| t.seller == seller && t.buyer == buyer && t.trade.delivered_bytes() > 0)
        {
            t.received += trade_bytes;
        }
    }

    /// A receipt both signed between `seller` and `buyer`: it pays the trade bytes received.
    pub fn acknowledged(&mut self, seller: u32, buyer: u32, now_ms: u64) {
        let now = EPOCH_MS + now_ms;
        for t in &mut self.trades {
            if t.seller != seller || t.buyer != buyer {
                continue;
            }
            if t.trade.tick(now) != TradeState::Delivering {
                continue;
            }
            let paid = credits_for(t.received, t.trade.terms().price_per_gib);
            let more = paid
                .saturating_sub(t.trade.settled_credits())
                .min(t.trade.owed());
            let _ = t.trade.settle(more, now);
        }
    }
}
