//! `tally testnet --simulate`: a scenario run on simulated time and simulated links, driving
//! the node's own ledger and market rules without sockets, disks or a clock.
//!
//! What runs for real: `tally-market`'s [`Standing`](tally_market::Standing) (one per node
//! that uploads, fed the receipts that node would hold), its [`Scheduler`](tally_market::Scheduler)
//! (one per uploader: weighted fair queueing of chunk requests by standing, the floor slice),
//! [`credit_window`](tally_market::credit_window) with the node's floor and growth, and for
//! `[[order]]`s the [`OrderBook`](tally_market::OrderBook) and [`Trade`](tally_market::Trade)
//! with signed orders and agreements. What is modelled: links (a rate per direction, no
//! latency), chunk transfers (discrete events in microseconds), receipts (counted per ordered
//! pair as the ledger's pair logic counts them, not signed), gossip (a delay), connections (a
//! full mesh up to the node's connection cap, a random graph beyond it).
//!
//! The model, its approximations and measured speed are in `docs/SIMULATION.md`; the same
//! scenario and seed always give the same report, byte for byte.
//!
//! - [`engine`]: the event loop: peers, downloads, uploads, receipts, gossip, observations.
//! - [`bits`]: chunk bitmaps.
//! - [`market`]: orders, fills and trades over `tally-market`.

mod bits;
mod engine;
mod market;
#[cfg(test)]
mod tests;

use super::report::Report;
use super::scenario::Scenario;

/// How far a simulation has got, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimProgress {
    /// Simulated seconds done.
    pub simulated_s: f64,
    /// Simulated seconds in all (the scenario's duration).
    pub total_s: f64,
}

/// Which chunk a download asks a provider for next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChunkPick {
    /// The lowest chunk still wanted that the provider holds: the node's rule before it drew
    /// a random starting place (kept for comparison: downloaders that start together then hold
    /// the same chunks and have little to give one another; docs/SIMULATION.md).
    Lowest,
    /// A uniformly drawn chunk among those: close to the node's rule (`crate::daemon::fetch`
    /// takes the first wanted chunk from a random place), and the default.
    #[default]
    Random,
}

/// Choices of the model beyond the scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// Which chunk a download asks for next.
    pub chunk_pick: ChunkPick,
}

/// Runs `scenario` on simulated time with the node's rules and returns its report
/// ([`Mode::Simulated`]). `progress` is called about every 1% of the simulated time, and once at
/// the end.
///
/// [`Mode::Simulated`]: super::report::Mode::Simulated
pub fn simulate(scenario: &Scenario, progress: &mut dyn FnMut(SimProgress)) -> Report {
    simulate_with(scenario, SimOptions::default(), progress)
}

/// [`simulate`] with other [`SimOptions`].
pub fn simulate_with(
    scenario: &Scenario,
    options: SimOptions,
    progress: &mut dyn FnMut(SimProgress),
) -> Report {
    engine::Sim::new(scenario, options).run(progress)
}
