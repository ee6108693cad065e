//! The QUIC endpoint: binds the UDP socket, dials peers, and accepts them, each connection
//! authenticated (mutual TLS with the identity keys) and introduced (the Hello exchange) before
//! the caller sees it.
//!
//! Incoming connections are handshaken by a background accept loop, concurrently and within
//! [`TransportConfig::handshake_timeout`], so one slow peer does not hold up the others. Finished
//! handshakes (good or failed) wait in a bounded queue for [`Endpoint::accept`]; while it is full
//! they keep their place, and with [`TransportConfig::max_pending_handshakes`] in progress or
//! waiting, new connections are refused outright: local work first, new remote work after.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tally_ledger::{Identity, NetworkId, PeerId};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use super::admission::{Admission, IpSlot, Refusal};
use super::config::TransportConfig;
use super::error::{ErrorCode, TransportError};
use super::frame::{FrameReader, FrameWriter};
use super::hello::{self, Hello, HelloFailure, PROTOCOL_VERSION};
use super::tls::{self, AlpnParts, HandshakeProbe, TlsIdentity, parse_alpn};

/// Finished incoming handshakes waiting for [`Endpoint::accept`].
const ACCEPT_QUEUE: usize = 16;

/// Longest close reason we send, bytes (QUIC puts it in one packet).
const MAX_REASON: usize = 128;

/// TLS alert `no_application_protocol` (RFC 8446): the ALPN ids did not match.
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

/// The UDP socket buffers the OS granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpBuffers {
    /// Send buffer, bytes, as the OS reports it (Linux reports twice the usable size).
    pub send: usize,
    /// Receive buffer, bytes, as the OS reports it.
    pub recv: usize,
}

/// What the accept loop, the handshakes and the dialer share.
#[derive(Debug)]
struct Shared {
    me: PeerId,
    network: NetworkId,
    alpn: Vec<u8>,
    tls: TlsIdentity,
    transport: Arc<quinn::TransportConfig>,
    /// The server configuration quinn accepts with; each incoming connection gets a copy with
    /// its own TLS configuration, so its verifier reports on that connection alone.
    server_base: quinn::ServerConfig,
    config: TransportConfig,
    hello: Hello,
    admission: Arc<Admission>,
}

impl Shared {
    fn client_config(
        &self,
        probe: Arc<HandshakeProbe>,
    ) -> Result<quinn::ClientConfig, TransportError> {
        let tls = tls::client_config_with(&self.tls, self.alpn.clone(), probe)?;
        let quic = QuicClientConfig::try_from(tls).map_err(tls::TlsError::from)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::clone(&self.transport));
        Ok(config)
    }

    fn server_config(
        &self,
        probe: Arc<HandshakeProbe>,
    ) -> Result<Arc<quinn::ServerConfig>, TransportError> {
        let tls = tls::server_config_with(&self.tls, self.alpn.clone(), probe)?;
        let quic = QuicServerConfig::try_from(tls).map_err(tls::TlsError::from)?;
        let mut config = self.server_base.clone();
        config.crypto = Arc::new(quic);
        Ok(Arc::new(config))
    }

    /// Turns a failed handshake into the most precise error we can: our verifier's verdict
    /// first, then the ALPN the dialer offered, then what quinn says.
    fn handshake_error(
        &self,
        error: quinn::ConnectionError,
        addr: SocketAddr,
        probe: &HandshakeProbe,
    ) -> TransportError {
        if let (Some(expected), Some(&found)) = (probe.expected, probe.peer.get())
            && expected != found
        {
            return TransportError::WrongPeer {
                addr,
                expected,
                found,
            };
        }
        if let Some(reason) = probe.refused.get() {
            return TransportError::BadCertificate {
                addr,
                reason: reason.clone(),
            };
        }
        let no_alpn = quinn::TransportErrorCode::crypto(ALERT_NO_APPLICATION_PROTOCOL);
        match error {
            // We (listening) found no common ALPN: the dialer's offer tells what it speaks.
            quinn::ConnectionError::TransportError(ref e) if e.code == no_alpn => {
                self.alpn_mismatch(addr, probe.offered_alpn.get().map(Vec::as_slice))
            }
            // The listener found no common ALPN with our offer.
            quinn::ConnectionError::ConnectionClosed(ref close) if close.error_code == no_alpn => {
                TransportError::IncompatibleProtocol {
                    addr,
                    detail: format!(
                        "it refused `{}`: it is on another network or runs an incompatible tally \
                         version; check the `network` setting of both nodes and upgrade the older",
                        String::from_utf8_lossy(&self.alpn)
                    ),
                }
            }
            quinn::ConnectionError::ConnectionClosed(ref close) => {
                match tls_alert(u64::from(close.error_code)) {
                    Some(alert) => TransportError::TlsRefused {
                        addr,
                        reason: alert_meaning(alert),
                    },
                    None => connection_error(error, addr),
                }
            }
            other => connection_error(other, addr),
        }
    }

    fn alpn_mismatch(&self, addr: SocketAddr, offered: Option<&[Vec<u8>]>) -> TransportError {
        let offered = offered.unwrap_or_default();
        for id in offered {
            match parse_alpn(id) {
                Some(AlpnParts {
                    version: Some(PROTOCOL_VERSION),
                    network: Some(theirs),
                }) => {
                    return TransportError::OtherNetwork {
                        addr,
                        ours: self.network,
                        theirs,
                    };
                }
                Some(_) => {
                    return TransportError::IncompatibleProtocol {
                        addr,
                        detail: format!(
                            "it speaks `{}`, we speak `{}`: upgrade the older node",
                            String::from_utf8_lossy(id),
                            String::from_utf8_lossy(&self.alpn)
                        ),
                    };
                }
                None => {}
            }
        }
        let offered: Vec<_> = offered
            .iter()
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .collect();
        TransportError::IncompatibleProtocol {
            addr,
            detail: format!(
                "it offered no tally protocol (ALPN {offered:?}); it is not a tally node"
            ),
        }
    }

    /// The last step of either side's handshake: the Hello exchange `exchange` (dialer's or
    /// listener's) within `deadline`, then the connection.
    async fn finish_handshake(
        &self,
        connection: &quinn::Connection,
        peer: PeerId,
        exchange: impl std::future::Future<Output = Result<Hello, HelloFailure>>,
        deadline: Instant,
        probe: &HandshakeProbe,
    ) -> Result<Connection, TransportError> {
        let hello = match timeout_at(deadline, exchange).await {
            Err(_) => {
                close(connection, ErrorCode::HandshakeTimeout, "no Hello in time");
                return Err(TransportError::HandshakeTimeout {
                    addr: connection.remote_address(),
                    after: self.config.handshake_timeout,
                });
            }
            Ok(result) => result.map_err(|f| self.hello_error(connection, f, probe))?,
        };
        Ok(Connection::new(
            connection.clone(),
            peer,
            hello,
            self.config.max_frame,
        ))
    }

    /// Turns a failed Hello exchange into an error, closing the connection with the fitting
    /// code if the peer has not closed it already.
    fn hello_error(
        &self,
        connection: &quinn::Connection,
        failure: HelloFailure,
        probe: &HandshakeProbe,
    ) -> TransportError {
        let addr = connection.remote_address();
        // A stream error is often the shadow of a closed connection: report the close.
        if let Some(reason) = connection.close_reason() {
            return self.handshake_error(reason, addr, probe);
        }
        let (code, reason) = match failure {
            HelloFailure::Connection(e) => return self.handshake_error(e, addr, probe),
            HelloFailure::Frame(e) => (
                e.error_code().unwrap_or(ErrorCode::ProtocolViolation),
                e.to_string(),
            ),
            HelloFailure::Missing => (
                ErrorCode::ProtocolViolation,
                "the stream ended before a Hello".to_owned(),
            ),
            HelloFailure::Refused(refusal) => (refusal.code, refusal.reason),
        };
        close(connection, code, &format!("bad Hello: {reason}"));
        TransportError::Hello { addr, reason }
    }
}

/// A QUIC endpoint with the node's identity, on one network.
///
/// Dropping it stops accepting; open connections live on until closed. [`Endpoint::close`]
/// closes them all.
#[derive(Debug)]
pub struct Endpoint {
    quinn: quinn::Endpoint,
    shared: Arc<Shared>,
    /// A Mutex because `accept` takes `&self`; only one caller waits at a time, and holding it
    /// across the wait is the point.
    incoming: Mutex<mpsc::Receiver<Result<Connection, TransportError>>>,
    cancel: CancellationToken,
    local_addr: SocketAddr,
    udp: UdpBuffers,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Endpoint {
    /// Binds UDP `addr` (port 0 picks a free port) and starts accepting connections from peers
    /// of `network`. Must be called within a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        network: NetworkId,
        config: TransportConfig,
    ) -> Result<Self, TransportError> {
        let transport = Arc::new(config.quinn_transport()?);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::NoRuntime);
        }
        let tls = TlsIdentity::new(identity)?;
        let alpn = tls::alpn(&network);
        let base_tls =
            tls::server_config_with(&tls, alpn.clone(), Arc::new(HandshakeProbe::default()))?;
        let base_quic = QuicServerConfig::try_from(base_tls).map_err(tls::TlsError::from)?;
        let mut server_base = quinn::ServerConfig::with_crypto(Arc::new(base_quic));
        server_base.transport_config(Arc::clone(&transport));

        let bind_error = |source| TransportError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
        let udp = size_udp_buffers(&socket, &config);
        let quinn = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_base.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = quinn.local_addr().map_err(bind_error)?;

        let me = identity.peer_id();
        let listen_port = config.listen_port.or(Some(local_addr.port()));
        let hello = Hello::new(network, listen_port, &config.agent);
        let admission = Admission::new(config.max_connections_per_ip);
        let shared = Arc::new(Shared {
            me,
            network,
            alpn,
            tls,
            transport,
            server_base,
            config,
            hello,
            admission,
        });
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("transport", me = %me.fmt_short(), addr = %local_addr);
        tokio::spawn(
            accept_loop(quinn.clone(), Arc::clone(&shared), tx, cancel.clone()).instrument(span),
        );
        Ok(Self {
            quinn,
            shared,
            incoming: Mutex::new(rx),
            cancel,
            local_addr,
            udp,
        })
    }

    /// The bound address (with the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.me
    }

    /// Our network.
    pub fn network(&self) -> NetworkId {
        self.shared.network
    }

    /// The Hello we send.
    pub fn hello(&self) -> &Hello {
        &self.shared.hello
    }

    /// The UDP buffers the OS granted (see [`TransportConfig::udp_recv_buffer`]).
    pub fn udp_buffers(&self) -> UdpBuffers {
        self.udp
    }

    /// Connects to the peer `expected` at `addr`: TLS (failing with
    /// [`TransportError::WrongPeer`] if the peer's key is another), then the Hello exchange,
    /// all within the handshake timeout.
    pub async fn dial(
        &self,
        expected: PeerId,
        addr: SocketAddr,
    ) -> Result<Connection, TransportError> {
        let span = tracing::debug_span!("dial", me = %self.shared.me.fmt_short(), peer = %expected.fmt_short(), remote = %addr);
        async {
            let result = self.dial_inner(expected, addr).await;
            match &result {
                Ok(_) => debug!("connected"),
                Err(e) => debug!("dial failed: {e}"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn dial_inner(
        &self,
        expected: PeerId,
        addr: SocketAddr,
    ) -> Result<Connection, TransportError> {
        let shared = &self.shared;
        let after = shared.config.handshake_timeout;
        let deadline = Instant::now() + after;
        let probe = Arc::new(HandshakeProbe::new(Some(expected)));
        let connecting = self
            .quinn
            .connect_with(
                shared.client_config(Arc::clone(&probe))?,
                addr,
                tls::SERVER_NAME,
            )
            .map_err(|source| TransportError::Connect { addr, source })?;
        let connection = match timeout_at(deadline, connecting).await {
            Err(_) => return Err(TransportError::HandshakeTimeout { addr, after }),
            Ok(result) => result.map_err(|e| shared.handshake_error(e, addr, &probe))?,
        };
        let found = remote_peer_id(&connection)?;
        if found != expected {
            // The verifier refuses this already; a second look costs nothing.
            close(&connection, ErrorCode::WrongPeer, "unexpected peer");
            return Err(TransportError::WrongPeer {
                addr,
                expected,
                found,
            });
        }
        let exchange = hello::dial(&connection, &shared.hello);
        shared
            .finish_handshake(&connection, found, exchange, deadline, &probe)
            .await
    }

    /// The next incoming connection, authenticated and introduced. A connection that failed
    /// its handshake comes out as `Err` and the endpoint goes on accepting; `None` once the
    /// endpoint is closed.
    pub async fn accept(&self) -> Option<Result<Connection, TransportError>> {
        self.incoming.lock().await.recv().await
    }

    /// Closes every connection with `code` and `reason`, and stops accepting.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        self.cancel.cancel();
        self.quinn.close(code.into(), truncate(reason).as_bytes());
    }

    /// Waits until every connection is closed and its close acknowledged or timed out, so that
    /// peers learn of a shutdown before the process exits.
    pub async fn wait_idle(&self) {
        self.quinn.wait_idle().await;
    }

    /// The quinn endpoint, for what this type does not wrap.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.quinn
    }

    /// The per-IP accounting of incoming connections: limits, penalties, bans.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.shared.admission
    }
}

/// Takes incoming connections and handshakes each in its own task, until cancelled or the
/// endpoint closes. Dropping the JoinSet at the end aborts handshakes still running.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Connection, TransportError>>,
    cancel: CancellationToken,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(joined) = handshakes.join_next(), if !handshakes.is_empty() => {
                if let Err(e) = joined {
                    warn!("handshake task failed: {e}");
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                // The source first: a banned or full address costs a lookup and no crypto.
                let slot = match shared.admission.admit(remote.ip()) {
                    Ok(slot) => slot,
                    Err(Refusal::Banned) => {
                        // Not even a refusal packet: a banned flood gets nothing back.
                        debug!(%remote, "source banned; ignoring");
                        incoming.ignore();
                        continue;
                    }
                    Err(Refusal::TooMany) => {
                        debug!(%remote, "source at its connection limit; refusing");
                        incoming.refuse();
                        continue;
                    }
                };
                // Finish the handshakes we have before taking more remote work.
                if handshakes.len() >= shared.config.max_pending_handshakes {
                    debug!(%remote, "too many handshakes in progress; refusing");
                    incoming.refuse();
                    continue;
                }
                let span = tracing::debug_span!("incoming", %remote, peer = tracing::field::Empty);
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                handshakes.spawn(
                    async move {
                        let (result, proven) = accept_one(incoming, &shared).await;
                        let result = match result {
                            Ok(mut connection) => {
                                tracing::Span::current()
                                    .record("peer", connection.peer_id().fmt_short());
                                debug!("accepted");
                                // The slot lives as long as the connection's handles.
                                connection.slot = Some(Arc::new(slot));
                                Ok(connection)
                            }
                            Err(e) => {
                                debug!("incoming handshake failed: {e}");
                                let points = handshake_penalty(&e, proven);
                                shared.admission.penalize(remote.ip(), points, &e.to_string());
                                drop(slot);
                                Err(e)
                            }
                        };
                        if let Err(mpsc::error::SendError(Ok(connection))) = tx.send(result).await {
                            connection.close(ErrorCode::ShuttingDown, "not accepting");
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
    debug!("accept loop stopped");
}

/// Penalty points on the source of an incoming handshake that failed with `error`. Only what
/// an address proven by finishing TLS did is charged (`proven`), or a certificate, which comes
/// after the client has answered our handshake packets: a spoofed source address cannot get
/// that far, so nobody can have another's address banned with forged packets. Mismatches an
/// honest node can make (another network or version) cost little.
pub(crate) fn handshake_penalty(error: &TransportError, proven: bool) -> u32 {
    match error {
        TransportError::BadCertificate { .. } => 50,
        _ if !proven => 0,
        // Garbage, an oversized frame, or a forged Hello on the Hello stream.
        TransportError::Hello { .. } => 50,
        // TLS done, then no Hello: half-open on purpose.
        TransportError::HandshakeTimeout { .. } => 30,
        TransportError::OtherNetwork { .. }
        | TransportError::IncompatibleProtocol { .. }
        | TransportError::TlsRefused { .. }
        | TransportError::WrongPeer { .. } => 5,
        // Gone during the Hello: closed, reset, timed out.
        _ => 10,
    }
}

/// TLS, then the Hello exchange, for one incoming connection; and whether TLS finished (the
/// source address is then proven: it answered our packets).
async fn accept_one(
    incoming: quinn::Incoming,
    shared: &Shared,
) -> (Result<Connection, TransportError>, bool) {
    let mut proven = false;
    let result = accept_inner(incoming, shared, &mut proven).await;
    (result, proven)
}

async fn accept_inner(
    incoming: quinn::Incoming,
    shared: &Shared,
    proven: &mut bool,
) -> Result<Connection, TransportError> {
    let addr = incoming.remote_address();
    let after = shared.config.handshake_timeout;
    let deadline = Instant::now() + after;
    let probe = Arc::new(HandshakeProbe::new(None));
    let config = shared.server_config(Arc::clone(&probe))?;
    let connecting = incoming
        .accept_with(config)
        .map_err(|e| shared.handshake_error(e, addr, &probe))?;
    let connection = match timeout_at(deadline, connecting).await {
        // Dropping the half-open connection closes it.
        Err(_) => return Err(TransportError::HandshakeTimeout { addr, after }),
        Ok(result) => result.map_err(|e| shared.handshake_error(e, addr, &probe))?,
    };
    *proven = true;
    let peer = remote_peer_id(&connection)?;
    let exchange = hello::listen(&connection, &shared.hello);
    shared
        .finish_handshake(&connection, peer, exchange, deadline, &probe)
        .await
}

/// The PeerId of an established connection's certificate.
fn remote_peer_id(connection: &quinn::Connection) -> Result<PeerId, TransportError> {
    let addr = connection.remote_address();
    let certificate = connection
        .peer_identity()
        .and_then(|identity| {
            identity
                .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.into_iter().next());
    let result = match certificate {
        Some(certificate) => tls::peer_id_from_certificate(&certificate),
        None => Err(tls::CertError::Malformed("no certificate".to_owned())),
    };
    result.map_err(|reason| {
        close(connection, ErrorCode::ProtocolViolation, "bad certificate");
        TransportError::BadCertificate { addr, reason }
    })
}

/// Maps a connection error after the handshake.
fn connection_error(error: quinn::ConnectionError, addr: SocketAddr) -> TransportError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => TransportError::Closed {
            addr,
            code: close.error_code.into_inner(),
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        },
        quinn::ConnectionError::TimedOut => TransportError::TimedOut { addr },
        quinn::ConnectionError::LocallyClosed => TransportError::LocallyClosed { addr },
        source => TransportError::Connection { addr, source },
    }
}

/// The TLS alert in a QUIC `CRYPTO_ERROR` code (0x100 + alert), if it is one.
fn tls_alert(code: u64) -> Option<u8> {
    (0x100..=0x1ff)
        .contains(&code)
        .then_some((code & 0xff) as u8)
}

fn alert_meaning(alert: u8) -> String {
    let meaning = match alert {
        49 => "it expected another PeerId at this address (access_denied)",
        42 | 43 | 46 | 51 => "it refused our certificate or signature",
        116 => "it wants a client certificate",
        40 => "no common cipher suite or signature scheme",
        70 => "it does not speak TLS 1.3",
        _ => "TLS alert",
    };
    format!("{meaning} (alert {alert})")
}

fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn close(connection: &quinn::Connection, code: ErrorCode, reason: &str) {
    connection.close(code.into(), truncate(reason).as_bytes());
}

/// Asks the OS for the configured UDP buffers and reports what it granted. Failing to get
/// them is not an error: the node works, only slower under load.
fn size_udp_buffers(socket: &std::net::UdpSocket, config: &TransportConfig) -> UdpBuffers {
    let granted = match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(state) => {
            if let Err(e) = state.set_send_buffer_size(socket.into(), config.udp_send_buffer) {
                debug!("cannot set the UDP send buffer: {e}");
            }
            if let Err(e) = state.set_recv_buffer_size(socket.into(), config.udp_recv_buffer) {
                debug!("cannot set the UDP receive buffer: {e}");
            }
            UdpBuffers {
                send: state.send_buffer_size(socket.into()).unwrap_or(0),
                recv: state.recv_buffer_size(socket.into()).unwrap_or(0),
            }
        }
        Err(e) => {
            debug!("cannot inspect the UDP socket: {e}");
            UdpBuffers { send: 0, recv: 0 }
        }
    };
    if granted.recv < config.udp_recv_buffer || granted.send < config.udp_send_buffer {
        info!(
            asked_send = config.udp_send_buffer,
            got_send = granted.send,
            asked_recv = config.udp_recv_buffer,
            got_recv = granted.recv,
            "the OS granted smaller UDP buffers than asked; under load datagrams will drop \
             (on Linux raise net.core.rmem_max and net.core.wmem_max)"
        );
    }
    granted
}

/// An authenticated connection to a peer that said hello.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    peer: PeerId,
    hello: Arc<Hello>,
    max_frame: usize,
    /// The incoming connection's place in its source's count (see [`Admission`]).
    slot: Option<Arc<IpSlot>>,
}

impl Connection {
    fn new(inner: quinn::Connection, peer: PeerId, hello: Hello, max_frame: usize) -> Self {
        Self {
            inner,
            peer,
            hello: Arc::new(hello),
            max_frame,
            slot: None,
        }
    }

    /// The peer's identity: the key of its certificate.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// The Hello the peer sent.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Opens a bidirectional stream, framed with the endpoint's frame cap. The peer sees it
    /// when the first frame arrives.
    pub async fn open_bi(&self) -> Result<(FrameWriter, FrameReader), TransportError> {
        let (send, recv) = self
            .inner
            .open_bi()
            .await
            .map_err(|e| connection_error(e, self.remote_addr()))?;
        Ok(self.framed(send, recv))
    }

    /// Waits for the peer to open a bidirectional stream. Fails with
    /// [`TransportError::Closed`] once the peer closes the connection.
    pub async fn accept_bi(&self) -> Result<(FrameWriter, FrameReader), TransportError> {
        let (send, recv) = self
            .inner
            .accept_bi()
            .await
            .map_err(|e| connection_error(e, self.remote_addr()))?;
        Ok(self.framed(send, recv))
    }

    /// Closes the connection with `code` and `reason` (cut to 128 bytes). Streams fail at once;
    /// the peer gets the code.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        close(&self.inner, code, reason);
    }

    /// Waits until the connection is closed, by either side, and says why.
    pub async fn closed(&self) -> TransportError {
        connection_error(self.inner.closed().await, self.remote_addr())
    }

    /// Why the connection is closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<TransportError> {
        self.inner
            .close_reason()
            .map(|e| connection_error(e, self.remote_addr()))
    }

    /// The quinn connection, for what this type does not wrap (datagrams, stats, ...).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    fn framed(
        &self,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> (FrameWriter, FrameReader) {
        (
            FrameWriter::new(send, self.max_frame),
            FrameReader::new(recv, self.max_frame),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_codes_carry_alerts() {
        assert_eq!(tls_alert(0x178), Some(120));
        assert_eq!(tls_alert(0x131), Some(49));
        assert_eq!(tls_alert(0x0a), None);
        assert_eq!(tls_alert(0x200), None);
        assert!(alert_meaning(49).contains("another PeerId"));
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_REASON && cut.len() >= MAX_REASON - 1);
    }

    #[test]
    fn bind_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &Identity::from_secret_bytes([1; 32]),
            NetworkId::from_name("tally"),
            TransportConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, TransportError::NoRuntime), "{err}");
    }
}
