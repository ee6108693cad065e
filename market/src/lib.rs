//! # tally-market
//!
//! Owns what turns the ledger into service: each peer's standing (direct balance and a
//! sybil-bounded transitive part), the upload scheduler's weights and credit windows, and signed
//! bandwidth offers, bids and their matching.
//!
//! It must not do I/O: no sockets, no files, no tokio, no clock or randomness it does not take as
//! an argument. The node drives it; the testnet's simulator drives the same code on simulated
//! time. The market work fills this crate; for now it only fixes the boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
