//! The QUIC transport: how two tally nodes find out who they talk to, and how they exchange
//! messages.
//!
//! - [`tls`]: each node presents a self-signed certificate whose key is its ed25519 identity key;
//!   both sides verify (mutual TLS 1.3, no certificate authority), so a connection's
//!   [`PeerId`](tally_ledger::PeerId) is proven. The ALPN `tally/<version>/<network id>` keeps
//!   other networks and versions out during the handshake.
//! - [`Hello`]: the first stream of every connection carries one Hello each way (version,
//!   network, features, listen port, agent).
//! - [`frame`]: every message is a length-prefixed postcard frame with a hard cap; chunk payloads
//!   travel as raw bytes after a header frame.
//! - [`admission`]: incoming connections per source IP, and IP penalties and bans, checked
//!   before a handshake starts.
//! - [`Endpoint`] and [`Connection`]: bind, dial, accept, framed streams, close with an
//!   [`ErrorCode`].
//!
//! This module knows nothing of what the messages mean: chunks, receipts and gossip build on
//! [`Connection::open_bi`] and [`Connection::accept_bi`]. The wire format is in
//! `docs/PROTOCOL.md`.

pub mod admission;
mod config;
mod endpoint;
mod error;
pub mod frame;
mod hello;
pub mod tls;

pub use admission::{Admission, IpSlot};
pub use config::{DEFAULT_MAX_CONNECTIONS_PER_IP, TransportConfig};
pub use endpoint::{Connection, Endpoint, UdpBuffers};
pub use error::{ErrorCode, TransportError};
pub use frame::{FrameError, FrameReader, FrameWriter, MAX_FRAME};
pub use hello::{
    FEATURES, Hello, MAX_AGENT_LEN, MAX_HELLO_FRAME, PROTOCOL_VERSION, Refusal as HelloRefusal,
};
