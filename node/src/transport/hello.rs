//! The application handshake: after TLS, the dialer opens the connection's first bidirectional
//! stream and sends its [`Hello`]; the listener checks it, answers with its own and finishes the
//! stream; the dialer checks the answer. TLS (through the ALPN) already keeps other networks and
//! versions out: the Hello checks again, and carries what TLS cannot (features, listen port,
//! agent).

use serde::{Deserialize, Serialize};
use tally_ledger::NetworkId;

use super::ErrorCode;
use super::frame::{FrameError, FrameReader, FrameWriter};

/// The wire protocol version: in the ALPN and in the Hello. Peers must agree on it exactly.
pub const PROTOCOL_VERSION: u16 = 1;

/// Feature bits this node sets in its Hello. None are defined yet; unknown bits are ignored, so
/// a later version can announce optional abilities without a new protocol version.
pub const FEATURES: u64 = 0;

/// Longest agent string, bytes. Longer ones are cut (ours) or refused (a peer's).
pub const MAX_AGENT_LEN: usize = 64;

/// Cap on the Hello frame, far above its largest size (about 120 bytes): a peer cannot make us
/// buffer much before it has said hello.
pub const MAX_HELLO_FRAME: usize = 512;

/// What each side says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u16,
    /// The sender's network.
    pub network_id: NetworkId,
    /// Optional abilities, one bit each (see [`FEATURES`]).
    pub features: u64,
    /// The UDP port the sender accepts connections on, if any: a dialer's source port may be
    /// another.
    pub listen_port: Option<u16>,
    /// The sender's software and version, for logs. At most [`MAX_AGENT_LEN`] bytes.
    pub agent: String,
}

impl Hello {
    /// Our Hello on `network_id`; `agent` is cut to [`MAX_AGENT_LEN`] bytes at a character
    /// boundary.
    pub fn new(network_id: NetworkId, listen_port: Option<u16>, agent: &str) -> Self {
        let mut end = agent.len().min(MAX_AGENT_LEN);
        while !agent.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            protocol_version: PROTOCOL_VERSION,
            network_id,
            features: FEATURES,
            listen_port,
            agent: agent[..end].to_owned(),
        }
    }

    /// Checks a peer's Hello against our network: the code to close with and why, if refused.
    /// Public so that the fuzz targets check decoded Hellos exactly as the handshake does.
    pub fn check(&self, ours: &NetworkId) -> Result<(), Refusal> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(Refusal {
                code: ErrorCode::IncompatibleVersion,
                reason: format!(
                    "protocol version {} (we speak {PROTOCOL_VERSION})",
                    self.protocol_version
                ),
            });
        }
        if self.network_id != *ours {
            return Err(Refusal {
                code: ErrorCode::WrongNetwork,
                reason: format!("network {} (we are on {ours})", self.network_id),
            });
        }
        if self.agent.len() > MAX_AGENT_LEN {
            return Err(Refusal {
                code: ErrorCode::ProtocolViolation,
                reason: format!("agent of {} bytes (cap {MAX_AGENT_LEN})", self.agent.len()),
            });
        }
        Ok(())
    }
}

/// A Hello we refuse: the close code and a reason for the peer and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code the connection is closed with.
    pub code: ErrorCode,
    /// Why, for the peer and the logs.
    pub reason: String,
}

/// How the Hello exchange failed.
#[derive(Debug)]
pub(crate) enum HelloFailure {
    /// The connection failed under us.
    Connection(quinn::ConnectionError),
    /// The stream carried no valid Hello frame.
    Frame(FrameError),
    /// The stream ended before any Hello.
    Missing,
    /// The peer's Hello is refused.
    Refused(Refusal),
}

impl From<FrameError> for HelloFailure {
    fn from(error: FrameError) -> Self {
        HelloFailure::Frame(error)
    }
}

/// Dialer side: sends `ours` on a new stream, returns the listener's checked answer.
pub(crate) async fn dial(
    connection: &quinn::Connection,
    ours: &Hello,
) -> Result<Hello, HelloFailure> {
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(HelloFailure::Connection)?;
    let mut writer = FrameWriter::new(send, MAX_HELLO_FRAME);
    writer.send(ours).await?;
    writer.finish().await?;
    let mut reader = FrameReader::new(recv, MAX_HELLO_FRAME);
    let theirs = reader.recv::<Hello>().await?.ok_or(HelloFailure::Missing)?;
    theirs
        .check(&ours.network_id)
        .map_err(HelloFailure::Refused)?;
    Ok(theirs)
}

/// Listener side: reads the dialer's Hello from the first stream, checks it, answers with
/// `ours`.
pub(crate) async fn listen(
    connection: &quinn::Connection,
    ours: &Hello,
) -> Result<Hello, HelloFailure> {
    let (send, recv) = connection
        .accept_bi()
        .await
        .map_err(HelloFailure::Connection)?;
    let mut reader = FrameReader::new(recv, MAX_HELLO_FRAME);
    let theirs = reader.recv::<Hello>().await?.ok_or(HelloFailure::Missing)?;
    theirs
        .check(&ours.network_id)
        .map_err(HelloFailure::Refused)?;
    let mut writer = FrameWriter::new(send, MAX_HELLO_FRAME);
    writer.send(ours).await?;
    writer.finish().await?;
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn network() -> NetworkId {
        NetworkId::from_name("tally")
    }

    #[test]
    fn agent_is_cut_at_a_character_boundary() {
        let hello = Hello::new(network(), None, &"é".repeat(40));
        assert_eq!(hello.agent.len(), 64);
        let hello = Hello::new(network(), None, &format!("a{}", "é".repeat(40)));
        assert_eq!(hello.agent.len(), 63);
    }

    #[test]
    fn check_refuses_other_versions_networks_and_long_agents() {
        let ours = network();
        assert_eq!(Hello::new(ours, Some(1), "x").check(&ours), Ok(()));
        let mut hello = Hello::new(ours, None, "x");
        hello.protocol_version = 2;
        assert_eq!(
            hello.check(&ours).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        let hello = Hello::new(NetworkId::from_name("testnet"), None, "x");
        assert_eq!(
            hello.check(&ours).unwrap_err().code,
            ErrorCode::WrongNetwork
        );
        let mut hello = Hello::new(ours, None, "x");
        hello.agent = "a".repeat(MAX_AGENT_LEN + 1);
        assert_eq!(
            hello.check(&ours).unwrap_err().code,
            ErrorCode::ProtocolViolation
        );
    }

    #[test]
    fn the_largest_hello_fits_its_frame_cap() {
        let mut hello = Hello::new(network(), Some(u16::MAX), &"a".repeat(MAX_AGENT_LEN));
        hello.features = u64::MAX;
        hello.protocol_version = u16::MAX;
        assert!(postcard::to_stdvec(&hello).unwrap().len() < MAX_HELLO_FRAME / 2);
    }

    proptest! {
        #[test]
        fn hello_round_trips(
            version in any::<u16>(),
            network in any::<[u8; 32]>(),
            features in any::<u64>(),
            listen_port in any::<Option<u16>>(),
            agent in ".{0,64}",
        ) {
            let hello = Hello {
                protocol_version: version,
                network_id: NetworkId(network),
                features,
                listen_port,
                agent,
            };
            let bytes = postcard::to_stdvec(&hello).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Hello>(&bytes).unwrap(), hello);
        }
    }
}
