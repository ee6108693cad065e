//! The transport's settings and their translation into quinn's.

use std::time::Duration;

use super::TransportError;
use super::frame::MAX_FRAME;
use super::hello::MAX_HELLO_FRAME;

const MIB: u64 = 1024 * 1024;

/// Incoming connections per source IP, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 8;

/// Settings of an [`super::Endpoint`]. Start from [`TransportConfig::default`] and change
/// fields; [`super::Endpoint::bind`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Cap on a frame on the streams of [`super::Connection::open_bi`] and `accept_bi`.
    pub max_frame: usize,
    /// A connection with nothing heard for this long is dropped.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets on a quiet connection (below `idle_timeout`); `None` to
    /// send none.
    pub keep_alive: Option<Duration>,
    /// Time allowed for TLS and the Hello exchange together, each way.
    pub handshake_timeout: Duration,
    /// Bytes a peer may send on one stream before we read them. Sized so one stream fills a
    /// fast link: throughput is at most window / RTT.
    pub stream_receive_window: u64,
    /// Bytes a peer may send on all streams of one connection before we read them.
    pub receive_window: u64,
    /// Bytes we buffer for sending on one connection.
    pub send_window: u64,
    /// Bidirectional streams a peer may have open at once.
    pub max_bi_streams: u32,
    /// Unidirectional streams a peer may have open at once (the transport itself uses none).
    pub max_uni_streams: u32,
    /// UDP send buffer to ask the OS for, bytes. The OS may give less (Linux caps it at
    /// `net.core.wmem_max`); the endpoint logs what it got.
    pub udp_send_buffer: usize,
    /// UDP receive buffer to ask the OS for, bytes (Linux: `net.core.rmem_max`). The usual
    /// 208 KiB default drops thousands of datagrams per GiB received.
    pub udp_recv_buffer: usize,
    /// Incoming handshakes in progress at once; more are refused until some finish.
    pub max_pending_handshakes: usize,
    /// Incoming connections one source IP (IPv6: one /64) may hold at once, handshakes in
    /// progress and established together; more are refused before any handshake work.
    pub max_connections_per_ip: usize,
    /// The port announced in our Hello; `None` announces the bound port.
    pub listen_port: Option<u16>,
    /// Our software and version, announced in the Hello (cut to 64 bytes).
    pub agent: String,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame: MAX_FRAME,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            handshake_timeout: Duration::from_secs(10),
            stream_receive_window: 8 * MIB,
            receive_window: 16 * MIB,
            send_window: 16 * MIB,
            max_bi_streams: 128,
            max_uni_streams: 0,
            udp_send_buffer: 4 * MIB as usize,
            udp_recv_buffer: 4 * MIB as usize,
            max_pending_handshakes: 64,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            listen_port: None,
            agent: concat!("tally/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl TransportConfig {
    /// Checks the settings and builds quinn's transport configuration from them.
    pub(crate) fn quinn_transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        let invalid = |what: String| TransportError::Config(what);
        if self.max_frame < MAX_HELLO_FRAME || u32::try_from(self.max_frame).is_err() {
            return Err(invalid(format!(
                "max_frame is {} bytes; it must be between {MAX_HELLO_FRAME} and {}",
                self.max_frame,
                u32::MAX
            )));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid("handshake_timeout must be above zero".into()));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("idle_timeout must be above zero".into()));
        }
        if self
            .keep_alive
            .is_some_and(|k| k.is_zero() || k >= self.idle_timeout)
        {
            return Err(invalid(format!(
                "keep_alive ({:?}) must be above zero and below idle_timeout ({:?})",
                self.keep_alive, self.idle_timeout
            )));
        }
        if self.max_pending_handshakes == 0 {
            return Err(invalid("max_pending_handshakes must be at least 1".into()));
        }
        if self.max_connections_per_ip == 0 {
            return Err(invalid("max_connections_per_ip must be at least 1".into()));
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| invalid(format!("idle_timeout {:?} is too long", self.idle_timeout)))?;
        let varint = |name: &str, value: u64| {
            quinn::VarInt::from_u64(value)
                .map_err(|_| invalid(format!("{name} {value} is above 2^62")))
        };
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint("receive_window", self.receive_window)?)
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_bi_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(self.max_uni_streams));
        Ok(transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TransportConfig::default().quinn_transport().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = TransportConfig {
            handshake_timeout: Duration::ZERO,
            ..TransportConfig::default()
        };
        let err = config.quinn_transport().unwrap_err().to_string();
        assert!(err.contains("handshake_timeout"), "{err}");

        config = TransportConfig {
            keep_alive: Some(Duration::from_secs(60)),
            ..TransportConfig::default()
        };
        let err = config.quinn_transport().unwrap_err().to_string();
        assert!(err.contains("keep_alive"), "{err}");

        config = TransportConfig {
            max_frame: 10,
            ..TransportConfig::default()
        };
        let err = config.quinn_transport().unwrap_err().to_string();
        assert!(err.contains("max_frame"), "{err}");

        config = TransportConfig {
            receive_window: u64::MAX,
            ..TransportConfig::default()
        };
        let err = config.quinn_transport().unwrap_err().to_string();
        assert!(err.contains("receive_window"), "{err}");
    }
}
