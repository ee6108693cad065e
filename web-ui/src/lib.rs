//! # tally-web
//!
//! Owns the node's local HTTP surface: the versioned REST API under `/api/v1`, the live event
//! stream, `/metrics`, the OpenAPI document, API-key authentication, and the dashboard whose
//! static files are compiled into the binary.
//!
//! It defines the trait it serves (what a node answers) and must know nothing of QUIC, the wire
//! protocol or the store: `tally-node` implements that trait. The dashboard work fills this
//! crate; for now it only fixes the boundary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
