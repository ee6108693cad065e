//! Gossip: how receipts, conflict proofs, provider records and peer addresses reach every node.
//! So far it holds the signed records gossip will carry ([`records`]); the sync loop over the
//! ledger's range-based reconciliation comes with the gossip work.

pub mod records;
