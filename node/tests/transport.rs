//! The QUIC transport over real sockets on 127.0.0.1: identity, refusals, frames, timeouts and a
//! large raw transfer. Every wait has a deadline; nothing sleeps in place of a condition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, PeerId};
use tally_node::transport::tls::{self, TlsIdentity};
use tally_node::transport::{
    Connection, Endpoint, ErrorCode, FrameError, FrameWriter, Hello, MAX_FRAME, MAX_HELLO_FRAME,
    PROTOCOL_VERSION, TransportConfig, TransportError,
};

/// Generous, since the suite shares two cores with other builds; a pass takes far less.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no result within {DEADLINE:?}"),
    }
}

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

fn network() -> NetworkId {
    NetworkId::from_name("tally-transport-test")
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn bind_with(seed: u8, network: NetworkId, config: TransportConfig) -> Endpoint {
    Endpoint::bind(localhost(), &identity(seed), network, config).unwrap()
}

fn bind(seed: u8) -> Endpoint {
    bind_with(seed, network(), TransportConfig::default())
}

/// Dials `to` from `from` and accepts on `to`: both ends of one connection.
async fn connect(from: &Endpoint, to: &Endpoint) -> (Connection, Connection) {
    let (dialed, accepted) = within("connect", async {
        tokio::join!(from.dial(to.peer_id(), to.local_addr()), to.accept())
    })
    .await;
    (dialed.unwrap(), accepted.unwrap().unwrap())
}

/// Checks `listener` still accepts a well-behaved peer.
async fn assert_still_serving(listener: &Endpoint, seed: u8) {
    let peer = bind(seed);
    let (dialed, accepted) = connect(&peer, listener).await;
    assert_eq!(dialed.peer_id(), listener.peer_id());
    assert_eq!(accepted.peer_id(), peer.peer_id());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Message {
    Ping(u64),
    Text(String),
}

#[tokio::test]
async fn two_nodes_dial_exchange_frames_and_learn_each_others_peer_id() {
    let a = bind(1);
    let b = bind(2);
    let (a_to_b, b_from_a) = connect(&a, &b).await;
    assert_eq!(a_to_b.peer_id(), identity(2).peer_id());
    assert_eq!(b_from_a.peer_id(), identity(1).peer_id());
    assert_eq!(a_to_b.remote_addr(), b.local_addr());

    // Each side learnt the other's Hello.
    assert_eq!(a_to_b.hello().protocol_version, PROTOCOL_VERSION);
    assert_eq!(a_to_b.hello().network_id, network());
    assert_eq!(a_to_b.hello().listen_port, Some(b.local_addr().port()));
    assert_eq!(b_from_a.hello().listen_port, Some(a.local_addr().port()));
    assert!(b_from_a.hello().agent.starts_with("tally/"));

    within("exchange", async {
        let (mut send, mut recv) = a_to_b.open_bi().await.unwrap();
        send.send(&Message::Ping(7)).await.unwrap();
        let (mut reply, mut request) = b_from_a.accept_bi().await.unwrap();
        assert_eq!(
            request.recv::<Message>().await.unwrap(),
            Some(Message::Ping(7))
        );
        reply.send(&Message::Text("pong".into())).await.unwrap();
        reply.finish().await.unwrap();
        assert_eq!(
            recv.recv::<Message>().await.unwrap(),
            Some(Message::Text("pong".into()))
        );
        assert_eq!(recv.recv::<Message>().await.unwrap(), None, "clean end");
    })
    .await;
}

#[tokio::test]
async fn dialling_with_the_wrong_expected_peer_fails_and_the_listener_keeps_accepting() {
    let listener = bind(1);
    let dialer = bind(2);
    let someone_else = identity(3).peer_id();
    let (dialed, accepted) = within("wrong peer", async {
        tokio::join!(
            dialer.dial(someone_else, listener.local_addr()),
            listener.accept()
        )
    })
    .await;
    match dialed.unwrap_err() {
        TransportError::WrongPeer {
            expected, found, ..
        } => {
            assert_eq!(expected, someone_else);
            assert_eq!(found, listener.peer_id());
        }
        other => panic!("expected WrongPeer, got {other}"),
    }
    // The listener learns that the dialer wanted someone else, not who the dialer is.
    let refused = accepted.unwrap().unwrap_err();
    assert!(
        matches!(&refused, TransportError::TlsRefused { reason, .. } if reason.contains("another PeerId")),
        "{refused}"
    );
    assert_still_serving(&listener, 4).await;
}

#[tokio::test]
async fn a_peer_of_another_network_is_refused_in_the_handshake_and_the_listener_keeps_serving() {
    let listener = bind(1);
    let elsewhere = NetworkId::from_name("some-testnet");
    let stranger = bind_with(2, elsewhere, TransportConfig::default());
    let (dialed, accepted) = within("other network", async {
        tokio::join!(
            stranger.dial(listener.peer_id(), listener.local_addr()),
            listener.accept()
        )
    })
    .await;
    let dial_error = dialed.unwrap_err();
    assert!(
        matches!(&dial_error, TransportError::IncompatibleProtocol { .. }),
        "{dial_error}"
    );
    assert!(
        dial_error.to_string().contains("another network"),
        "{dial_error}"
    );
    match accepted.unwrap().unwrap_err() {
        TransportError::OtherNetwork { ours, theirs, .. } => {
            assert_eq!(ours, network());
            assert_eq!(theirs, elsewhere);
        }
        other => panic!("expected OtherNetwork, got {other}"),
    }
    assert_still_serving(&listener, 3).await;
}

#[tokio::test]
async fn a_dialer_of_another_protocol_version_is_refused_in_the_handshake() {
    let listener = bind(1);
    let tls = TlsIdentity::new(&identity(2)).unwrap();
    let mut config = tls::client_config(&tls, &network(), Some(listener.peer_id())).unwrap();
    config.alpn_protocols = vec![format!("tally/2/{}", network()).into_bytes()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
    let client = quinn::Endpoint::client(localhost()).unwrap();
    let connecting = client
        .connect_with(
            quinn::ClientConfig::new(Arc::new(quic)),
            listener.local_addr(),
            "tally",
        )
        .unwrap();
    let (dialed, accepted) = within("other version", async {
        tokio::join!(connecting, listener.accept())
    })
    .await;
    assert!(dialed.is_err());
    let err = accepted.unwrap().unwrap_err();
    assert!(
        matches!(&err, TransportError::IncompatibleProtocol { detail, .. } if detail.contains("tally/2/")),
        "{err}"
    );
    assert_still_serving(&listener, 3).await;
}

#[tokio::test]
async fn garbage_on_a_stream_is_a_frame_error_and_the_endpoint_lives_on() {
    let a = bind(1);
    let b = bind(2);
    let (a_to_b, b_from_a) = connect(&a, &b).await;
    within("garbage", async {
        let (mut send, _recv) = a_to_b.open_bi().await.unwrap();
        // A 2-byte frame whose body claims a 1-byte string holding invalid UTF-8.
        send.get_mut()
            .write_all(&[0, 0, 0, 2, 1, 0xff])
            .await
            .unwrap();
        let (_reply, mut request) = b_from_a.accept_bi().await.unwrap();
        let err = request.recv::<Message>().await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
        request.stop(err.error_code().unwrap());

        // The connection still carries other streams.
        let (mut send, _recv) = a_to_b.open_bi().await.unwrap();
        send.send(&Message::Ping(1)).await.unwrap();
        let (_reply, mut request) = b_from_a.accept_bi().await.unwrap();
        assert_eq!(
            request.recv::<Message>().await.unwrap(),
            Some(Message::Ping(1))
        );
    })
    .await;
    assert_still_serving(&b, 3).await;
}

#[tokio::test]
async fn an_oversized_length_prefix_is_too_large_before_the_body_arrives() {
    let a = bind(1);
    let b = bind(2);
    let (a_to_b, b_from_a) = connect(&a, &b).await;
    within("oversized", async {
        let (mut send, _recv) = a_to_b.open_bi().await.unwrap();
        // Claims 1 GiB and sends none of it, leaving the stream open: the reader must refuse
        // from the prefix alone, or it would wait here until the deadline.
        send.get_mut()
            .write_all(&(1u32 << 30).to_be_bytes())
            .await
            .unwrap();
        let (_reply, mut request) = b_from_a.accept_bi().await.unwrap();
        match request.recv::<Message>().await.unwrap_err() {
            FrameError::TooLarge { len, max } => {
                assert_eq!(len, 1 << 30);
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("expected TooLarge, got {other}"),
        }
        request.stop(ErrorCode::FrameTooLarge);
        // The sender learns why its stream was stopped.
        let stopped = send.get_mut().stopped().await.unwrap();
        assert_eq!(
            stopped.map(|code| code.into_inner()),
            Some(u64::from(ErrorCode::FrameTooLarge.code()))
        );
    })
    .await;
}

/// A client that completes TLS (with a valid certificate) and then does what the test says
/// instead of the Hello exchange.
async fn raw_tls_client(seed: u8, listener: &Endpoint) -> (quinn::Endpoint, quinn::Connection) {
    let tls = TlsIdentity::new(&identity(seed)).unwrap();
    let config = tls::client_config(&tls, &network(), Some(listener.peer_id())).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
    let endpoint = quinn::Endpoint::client(localhost()).unwrap();
    let connection = within("raw TLS", async {
        endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(quic)),
                listener.local_addr(),
                "tally",
            )
            .unwrap()
            .await
            .unwrap()
    })
    .await;
    (endpoint, connection)
}

#[tokio::test]
async fn a_peer_that_never_says_hello_is_dropped_at_the_handshake_timeout() {
    // Long enough for TLS on a loaded machine, short enough for a test.
    let mut config = TransportConfig::default();
    config.handshake_timeout = Duration::from_secs(2);
    let listener = bind_with(1, network(), config);
    let (_client, silent) = raw_tls_client(2, &listener).await;

    let accepted = within("accept", listener.accept()).await.unwrap();
    assert!(
        matches!(accepted, Err(TransportError::HandshakeTimeout { .. })),
        "{accepted:?}"
    );
    match within("closed", silent.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code.into_inner(),
            u64::from(ErrorCode::HandshakeTimeout.code())
        ),
        other => panic!("expected an application close, got {other}"),
    }
    assert_still_serving(&listener, 3).await;
}

#[tokio::test]
async fn a_garbage_hello_is_refused_and_the_listener_keeps_accepting() {
    let listener = bind(1);
    let (_client, rude) = raw_tls_client(2, &listener).await;
    let (mut send, _recv) = rude.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    let accepted = within("accept", listener.accept()).await.unwrap();
    assert!(
        matches!(&accepted, Err(TransportError::Hello { reason, .. }) if reason.contains("cap")),
        "{accepted:?}"
    );
    match within("closed", rude.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code.into_inner(),
            u64::from(ErrorCode::FrameTooLarge.code())
        ),
        other => panic!("expected an application close, got {other}"),
    }
    assert_still_serving(&listener, 3).await;
}

#[tokio::test]
async fn a_hello_for_another_network_is_refused_with_wrong_network() {
    // TLS on our network (the ALPN matches), then a Hello that claims another: only a broken
    // or hostile peer does this, and the listener must close with the named code.
    let listener = bind(1);
    let (_client, liar) = raw_tls_client(2, &listener).await;
    let (send, _recv) = liar.open_bi().await.unwrap();
    let mut send = FrameWriter::new(send, MAX_HELLO_FRAME);
    let elsewhere = NetworkId::from_name("some-testnet");
    send.send(&Hello::new(elsewhere, None, "liar"))
        .await
        .unwrap();

    let accepted = within("accept", listener.accept()).await.unwrap();
    assert!(
        matches!(&accepted, Err(TransportError::Hello { reason, .. }) if reason.contains("network")),
        "{accepted:?}"
    );
    match within("closed", liar.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code.into_inner(),
                u64::from(ErrorCode::WrongNetwork.code())
            );
            assert!(String::from_utf8_lossy(&close.reason).contains("network"));
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert_still_serving(&listener, 3).await;
}

#[tokio::test]
async fn dialling_a_silent_address_times_out_at_the_handshake_timeout() {
    // A bound UDP socket that never answers.
    let sink = std::net::UdpSocket::bind(localhost()).unwrap();
    let mut config = TransportConfig::default();
    config.handshake_timeout = Duration::from_millis(300);
    let dialer = bind_with(1, network(), config);
    let err = within(
        "dial",
        dialer.dial(identity(2).peer_id(), sink.local_addr().unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::HandshakeTimeout { .. }),
        "{err}"
    );
}

/// The bytes of chunk `index` of the big transfer.
fn chunk(index: usize, len: usize) -> Bytes {
    (0..len)
        .map(|j| (j.wrapping_mul(31) ^ index.wrapping_mul(7)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[derive(Debug, Serialize, Deserialize)]
struct PayloadHeader {
    len: u64,
    hash: [u8; 32],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_raw_payload_arrives_intact() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    let a = bind(1);
    let b = bind(2);
    let (a_to_b, b_from_a) = connect(&a, &b).await;

    let chunks: Vec<Bytes> = (0..TOTAL / CHUNK).map(|i| chunk(i, CHUNK)).collect();
    let mut hasher = blake3::Hasher::new();
    for piece in &chunks {
        hasher.update(piece);
    }
    let header = PayloadHeader {
        len: TOTAL as u64,
        hash: *hasher.finalize().as_bytes(),
    };

    let sender = async {
        let (mut send, _recv) = a_to_b.open_bi().await.unwrap();
        send.send(&header).await.unwrap();
        for piece in chunks {
            send.write_raw_bytes(piece).await.unwrap();
        }
        send.finish().await.unwrap();
        // Keep the stream's receive side alive until the peer has read everything.
        send.get_mut().stopped().await.unwrap();
    };
    let receiver = async {
        let (_reply, mut recv) = b_from_a.accept_bi().await.unwrap();
        let header = recv.recv::<PayloadHeader>().await.unwrap().unwrap();
        let mut hasher = blake3::Hasher::new();
        // The first half into a buffer of ours, the rest as quinn's chunks, uncopied.
        let mut buf = vec![0u8; CHUNK];
        let mut left = header.len as usize;
        while left > header.len as usize / 2 {
            let n = left.min(CHUNK);
            recv.read_raw(&mut buf[..n]).await.unwrap();
            hasher.update(&buf[..n]);
            left -= n;
        }
        while left > 0 {
            let piece = recv.read_raw_chunk(left.min(CHUNK)).await.unwrap().unwrap();
            hasher.update(&piece);
            left -= piece.len();
        }
        assert_eq!(*hasher.finalize().as_bytes(), header.hash);
        assert!(recv.recv::<PayloadHeader>().await.unwrap().is_none());
    };
    within("64 MiB", async { tokio::join!(sender, receiver) }).await;
}

#[tokio::test]
async fn closing_the_endpoint_tells_peers_the_code_and_ends_accept() {
    let a = bind(1);
    let b = bind(2);
    let (a_to_b, _b_from_a) = connect(&a, &b).await;
    b.close(ErrorCode::ShuttingDown, "bye");
    match within("closed", a_to_b.closed()).await {
        TransportError::Closed { code, reason, .. } => {
            assert_eq!(ErrorCode::from_code(code), Some(ErrorCode::ShuttingDown));
            assert_eq!(reason, "bye");
        }
        other => panic!("expected Closed, got {other}"),
    }
    assert!(within("accept", b.accept()).await.is_none());
    within("idle", b.wait_idle()).await;
}

#[tokio::test]
async fn the_peer_id_is_the_identity_key() {
    let tls = TlsIdentity::new(&identity(5)).unwrap();
    let from_cert = tls::peer_id_from_certificate(tls.certificate()).unwrap();
    assert_eq!(from_cert, identity(5).peer_id());
    assert_eq!(
        from_cert,
        PeerId(*identity(5).peer_id().as_bytes()),
        "32 raw bytes of the ed25519 key"
    );
}

#[tokio::test]
async fn a_source_past_its_connection_limit_is_refused_and_a_banned_one_gets_no_answer() {
    let mut config = TransportConfig::default();
    config.max_connections_per_ip = 2;
    let listener = bind_with(1, network(), config);
    let source = localhost().ip();
    let (a, b, c) = (bind(2), bind(3), bind(4));
    let (_a_out, a_in) = connect(&a, &listener).await;
    let (_b_out, _b_in) = connect(&b, &listener).await;
    assert_eq!(listener.admission().connections(source), 2);

    // A third connection from the same address is refused before any handshake.
    let err = within(
        "a dial past the limit",
        c.dial(listener.peer_id(), listener.local_addr()),
    )
    .await
    .unwrap_err();
    assert!(
        !matches!(err, TransportError::HandshakeTimeout { .. }),
        "refused, not ignored: {err}"
    );
    assert_eq!(listener.admission().connections(source), 2);

    // The slot comes back once the connection is gone on the listener's side.
    drop(a_in);
    within("the slot to come back", async {
        while listener.admission().connections(source) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (_c_out, _c_in) = connect(&c, &listener).await;

    // A banned address gets no answer at all: its dial times out.
    let banned = listener.admission().penalize(
        source,
        tally_node::transport::admission::IP_BAN_THRESHOLD,
        "test",
    );
    assert!(banned);
    let mut short = TransportConfig::default();
    short.handshake_timeout = Duration::from_millis(500);
    let d = bind_with(5, network(), short);
    let err = within(
        "a banned dial",
        d.dial(listener.peer_id(), listener.local_addr()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::HandshakeTimeout { .. }),
        "{err}"
    );
}
