//! The transport's errors and the application error codes it puts on the wire.

use std::net::SocketAddr;
use std::time::Duration;

use tally_ledger::{NetworkId, PeerId};

use super::frame::FrameError;
use super::tls::{CertError, TlsError};

/// Application error codes, sent in QUIC `CONNECTION_CLOSE`, `RESET_STREAM` and `STOP_SENDING`
/// frames. The one list of them: every close and reset in tally uses one of these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// Normal shutdown: the closing side is done, nothing went wrong.
    Normal = 0,
    /// The peer broke the protocol: an unexpected message, a malformed frame, a bad Hello.
    ProtocolViolation = 1,
    /// The peer sent a frame larger than the stream's cap.
    FrameTooLarge = 2,
    /// The peer is on another network.
    WrongNetwork = 3,
    /// The peer speaks a protocol version we do not.
    IncompatibleVersion = 4,
    /// The peer did not finish the handshake (TLS and Hello) in time.
    HandshakeTimeout = 5,
    /// We refuse to talk to this peer.
    Banned = 6,
    /// We are at our connection limit; try again later.
    TooManyConnections = 7,
    /// The closing node is shutting down.
    ShuttingDown = 8,
    /// The closing node hit an internal error; the peer did nothing wrong.
    Internal = 9,
    /// The peer is not the one we meant to reach.
    WrongPeer = 10,
}

impl ErrorCode {
    /// Every code, in value order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Normal,
        ErrorCode::ProtocolViolation,
        ErrorCode::FrameTooLarge,
        ErrorCode::WrongNetwork,
        ErrorCode::IncompatibleVersion,
        ErrorCode::HandshakeTimeout,
        ErrorCode::Banned,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::WrongPeer,
    ];

    /// The value on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code with value `code`, if it is one of ours.
    pub fn from_code(code: u64) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// A short name for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Normal => "normal",
            ErrorCode::ProtocolViolation => "protocol violation",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::WrongNetwork => "wrong network",
            ErrorCode::IncompatibleVersion => "incompatible version",
            ErrorCode::HandshakeTimeout => "handshake timeout",
            ErrorCode::Banned => "banned",
            ErrorCode::TooManyConnections => "too many connections",
            ErrorCode::ShuttingDown => "shutting down",
            ErrorCode::Internal => "internal error",
            ErrorCode::WrongPeer => "wrong peer",
        }
    }
}

impl From<ErrorCode> for quinn::VarInt {
    fn from(code: ErrorCode) -> Self {
        quinn::VarInt::from_u32(code.code())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// Names an application error code read off the wire, ours or not.
pub(crate) fn describe_code(code: u64) -> String {
    match ErrorCode::from_code(code) {
        Some(known) => known.to_string(),
        None => format!("unknown code {code}"),
    }
}

/// What went wrong in the transport. Each message says what happened and, where there is
/// something to do, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The settings are unusable.
    #[error("invalid transport settings: {0}")]
    Config(String),

    /// `Endpoint::bind` was called outside a tokio runtime.
    #[error("the QUIC endpoint needs a tokio runtime: bind it from inside one")]
    NoRuntime,

    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}; is another node already using this port?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Building the TLS identity or configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),

    /// quinn refused to start the connection (endpoint closed, unusable address).
    #[error("cannot dial {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: quinn::ConnectError,
    },

    /// The peer's certificate holds another key than the one we dialled for. The handshake is
    /// aborted before we present our own certificate.
    #[error(
        "the peer at {addr} is {found}, not the expected {expected}: the address may now belong \
         to another node; find the peer's current address"
    )]
    WrongPeer {
        /// The address dialled.
        addr: SocketAddr,
        /// The PeerId we dialled for.
        expected: PeerId,
        /// The PeerId the peer's certificate holds.
        found: PeerId,
    },

    /// The peer offered our protocol version on another network (seen by the listener, which
    /// reads the dialer's ALPN).
    #[error(
        "the peer at {addr} is on network {theirs}, we are on {ours}: check the `network` setting"
    )]
    OtherNetwork {
        /// The peer's address.
        addr: SocketAddr,
        /// Our network.
        ours: NetworkId,
        /// The peer's network.
        theirs: NetworkId,
    },

    /// The TLS handshake failed on the application protocol (ALPN): the peer is on another
    /// network or speaks another protocol version. A dialer cannot tell which.
    #[error("the peer at {addr} does not speak our protocol: {detail}")]
    IncompatibleProtocol {
        /// The peer's address.
        addr: SocketAddr,
        /// What we know of the mismatch.
        detail: String,
    },

    /// We refused the peer's certificate (not a self-signed ed25519 certificate, or a bad
    /// handshake signature).
    #[error("refused the certificate of the peer at {addr}: {reason}")]
    BadCertificate {
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        reason: CertError,
    },

    /// The peer aborted the TLS handshake with an alert.
    #[error("the peer at {addr} refused the TLS handshake: {reason}")]
    TlsRefused {
        /// The peer's address.
        addr: SocketAddr,
        /// The alert and what it likely means.
        reason: String,
    },

    /// TLS and Hello did not finish within the handshake timeout.
    #[error(
        "no complete handshake with {addr} within {after:?}: the peer is slow, overloaded or \
         not a tally node"
    )]
    HandshakeTimeout {
        /// The peer's address.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
    },

    /// The Hello exchange failed: the peer sent no Hello, a malformed one, or one we refuse.
    #[error("bad Hello from {addr}: {reason}")]
    Hello {
        /// The peer's address.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },

    /// The peer closed the connection with an application error code.
    #[error("the peer at {addr} closed the connection: {} {reason:?}", describe_code(*code))]
    Closed {
        /// The peer's address.
        addr: SocketAddr,
        /// The code it sent; [`ErrorCode::from_code`] names ours.
        code: u64,
        /// The reason it gave (lossy UTF-8).
        reason: String,
    },

    /// Nothing heard from the peer within the idle timeout.
    #[error("the connection to {addr} timed out: the peer is gone or UDP is blocked")]
    TimedOut {
        /// The peer's address.
        addr: SocketAddr,
    },

    /// We closed the connection or the endpoint.
    #[error("the connection to {addr} was closed by this node")]
    LocallyClosed {
        /// The peer's address.
        addr: SocketAddr,
    },

    /// Any other connection failure.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        /// The peer's address.
        addr: SocketAddr,
        /// quinn's error.
        #[source]
        source: quinn::ConnectionError,
    },

    /// A framed stream failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl TransportError {
    /// The application error code the peer closed with, if it did.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Closed { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.code() as usize, i);
            assert_eq!(ErrorCode::from_code(u64::from(code.code())), Some(code));
        }
        assert_eq!(ErrorCode::from_code(1_000), None);
        assert_eq!(describe_code(2), "frame too large (2)");
        assert_eq!(describe_code(77), "unknown code 77");
    }
}
