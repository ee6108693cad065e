//! # tally-market
//!
//! Owns what turns the ledger into service: each peer's standing (direct balance and a
//! sybil-bounded transitive part), the upload scheduler's weights and credit windows, and signed
//! bandwidth offers, bids and their matching.
//!
//! It must not do I/O: no sockets, no files, no tokio, no clock or randomness it does not take as
//! an argument. The node drives it; the testnet's simulator drives the same code on simulated
//! time. Modules: [`standing`] (who gave what, judged from the receipts held), [`scheduler`] (who
//! is uploaded to next, weighted by standing, with a slice for the floor), [`window`] (credit
//! windows from standing), [`stranger`] (the one allowance all strangers share), [`budget`] (daily and monthly upload caps), [`order`] (signed,
//! expiring offers, bids and cancellations), [`book`] (the order book: price-time matching with
//! partial fills), [`trade`] (agreements signed by both sides, and a trade's life until it is
//! settled).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod book;
pub mod budget;
pub mod order;
pub mod scheduler;
pub mod standing;
pub mod stranger;
pub mod trade;
pub mod window;

pub use book::{BookConfig, BookError, Fill, OrderBook, Placed, RestingOrder, Side, VerifiedOrder};
pub use budget::{BudgetExhausted, BudgetPeriod, BudgetStatus, PeriodStatus, UploadBudget};
pub use order::{
    Bid, BidTerms, Cancel, Offer, OfferTerms, OrderError, OrderId, VerifiedBid, VerifiedCancel,
    VerifiedOffer,
};
pub use scheduler::{
    BudgetTooSmall, Dequeued, EnqueueError, FloorPolicy, PeerClass, PeerShare, QueueDepth,
    QueuePosition, Refused, Scheduler, SchedulerConfig,
};
pub use standing::{PeerStanding, Standing, StandingParams};
pub use stranger::StrangerCredit;
pub use trade::{
    Agreement, Party, Trade, TradeError, TradeProposal, TradeState, TradeTerms, VerifiedAgreement,
};
pub use window::{WindowCurve, WindowParams, credit_window};
