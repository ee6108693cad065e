//! `tally testnet`: whole networks for economic experiments, from a scenario file.
//!
//! - [`scenario`]: the scenario file, parsed and checked before anything starts.
//! - [`report`]: what a run saw ([`report::Observations`]) turned into `report.json`,
//!   `report.html` and a summary table; the same for real and simulated runs.
//!
//! It must not reach into the daemon's internals beyond what a node's owner could see: the
//! real runner drives nodes through their public parts, the simulator drives the pure ledger and
//! market code on simulated time.

pub mod report;
pub mod scenario;
