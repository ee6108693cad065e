//! # tally-market
//!
//! Owns what turns the ledger into service: each peer's standing (direct balance and a
//! sybil-bounded transitive part), the upload scheduler's weights and credit windows, and signed
//! bandwidth offers, bids and their matching.
//!
//! It must not do I/O: no sockets, no files, no tokio, no clock or randomness it does not take as
//! an argument. The node drives it; the testnet's simulator drives the same code on simulated
//! time. Modules: [`standing`] (who gave what, judged from the receipts held).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod standing;

pub use standing::{PeerStanding, Standing, StandingParams};
