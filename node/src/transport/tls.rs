//! TLS 1.3 with the node's identity: a self-signed certificate whose key is the node's ed25519
//! key, and verifiers that accept exactly such certificates from peers.
//!
//! There is no certificate authority. A peer is its key: the verifiers accept any well-formed
//! X.509 v3 certificate that stands alone (no intermediates), holds an ed25519 key that is not
//! weak, and is signed by that same key; then they check the TLS 1.3 handshake signature with
//! it (ed25519 only). Names and validity dates carry nothing and are not checked: the
//! certificate is made afresh at every start.
//!
//! A dialer that expects a given PeerId checks it **in the verifier**: a certificate with another
//! key fails the handshake before the dialer sends its own certificate, so a node that took over
//! an address does not even learn who was calling. Session resumption is off on both sides, so
//! every handshake runs the verifiers.
//!
//! The ALPN `tally/<protocol version>/<network id hex>` makes a node of another network or
//! protocol version fail the handshake itself.

use std::sync::{Arc, OnceLock};

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tally_ledger::{Identity, NetworkId, PeerId};

use super::hello::PROTOCOL_VERSION;

/// What every ALPN of ours starts with.
pub const ALPN_PREFIX: &str = "tally/";

/// The server name a dialer puts in its handshake. Not sent (SNI is off) and not checked: the
/// PeerId is the name.
pub(crate) const SERVER_NAME: &str = "tally";

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER AlgorithmIdentifier of ed25519 signatures: SEQUENCE { OID 1.3.101.112 }, no
/// parameters.
const ED25519_ALGORITHM: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why the TLS identity or configuration could not be built. These are local failures, not
/// the peer's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The identity key could not be written as PKCS#8.
    #[error("cannot encode the identity key as PKCS#8: {0}")]
    Pkcs8(String),
    /// rcgen could not make the certificate.
    #[error("cannot make the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider cannot do QUIC.
    #[error("the TLS provider cannot do QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Why a peer's certificate or handshake signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The peer sent a chain; a tally certificate stands alone.
    #[error("the peer sent {0} intermediate certificates; a tally certificate stands alone")]
    Intermediates(usize),
    /// Not a well-formed X.509 v3 certificate.
    #[error("not a well-formed X.509 v3 certificate ({0})")]
    Malformed(String),
    /// The certificate's key or signature algorithm is not ed25519.
    #[error("the certificate's key or signature is not ed25519")]
    NotEd25519,
    /// The ed25519 key is not a valid point, or is of small order.
    #[error("the certificate's ed25519 key is invalid or weak")]
    WeakKey,
    /// The certificate is not signed by its own key.
    #[error("the certificate is not signed by its own key")]
    NotSelfSigned,
    /// The handshake was signed with a scheme other than ed25519.
    #[error("handshake signed with {0}; only ed25519 is accepted")]
    Scheme(String),
    /// The handshake signature does not verify with the certificate's key.
    #[error("the handshake signature does not verify with the certificate's key")]
    BadSignature,
    /// A TLS 1.2 handshake; tally speaks TLS 1.3 only.
    #[error("TLS 1.2 handshake; only TLS 1.3 is accepted")]
    Tls12,
}

impl From<CertError> for rustls::Error {
    fn from(error: CertError) -> Self {
        // The variant picks the TLS alert the peer sees.
        let kind = match error {
            CertError::Intermediates(_) | CertError::Malformed(_) | CertError::WeakKey => {
                CertificateError::BadEncoding
            }
            CertError::NotEd25519 | CertError::Scheme(_) | CertError::Tls12 => {
                #[allow(deprecated)] // The plain variant is what the alert mapping knows.
                CertificateError::UnsupportedSignatureAlgorithm
            }
            CertError::NotSelfSigned | CertError::BadSignature =>
            {
                #[allow(deprecated)]
                CertificateError::BadSignature
            }
        };
        rustls::Error::InvalidCertificate(kind)
    }
}

/// The ALPN protocol id of `network` at our protocol version: `tally/1/<64 hex>`.
pub fn alpn(network: &NetworkId) -> Vec<u8> {
    format!("{ALPN_PREFIX}{PROTOCOL_VERSION}/{network}").into_bytes()
}

/// What an ALPN id of ours holds: the protocol version, and the network if it parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlpnParts {
    /// The version text parsed as a number, if it does.
    pub version: Option<u16>,
    /// The network id, if the rest is 64 hex characters.
    pub network: Option<NetworkId>,
}

/// Splits an ALPN id `tally/<version>/<network>`; `None` if it is not ours at all.
pub(crate) fn parse_alpn(alpn: &[u8]) -> Option<AlpnParts> {
    let text = std::str::from_utf8(alpn).ok()?;
    let rest = text.strip_prefix(ALPN_PREFIX)?;
    let (version, network) = rest.split_once('/').unwrap_or((rest, ""));
    Some(AlpnParts {
        version: version.parse().ok(),
        network: network.parse().ok(),
    })
}

/// The crypto provider: *ring*, as pinned for the workspace.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's certificate and key, ready for TLS.
#[derive(Clone)]
pub struct TlsIdentity {
    peer_id: PeerId,
    certificate: CertificateDer<'static>,
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "TlsIdentity({})", self.peer_id.fmt_short())
    }
}

impl TlsIdentity {
    /// Makes the self-signed certificate of `identity`: its key is the identity's ed25519 key.
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&identity.secret_bytes());
        let pkcs8 = signing
            .to_pkcs8_der()
            .map_err(|e| TlsError::Pkcs8(e.to_string()))?;
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
        let key_pair =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tally");
        let certificate = params.self_signed(&key_pair)?.der().clone();
        let certified = CertifiedKey::from_der(
            vec![certificate.clone()],
            PrivateKeyDer::Pkcs8(key_der),
            &provider(),
        )?;
        Ok(Self {
            peer_id: identity.peer_id(),
            certificate,
            certified: Arc::new(certified),
        })
    }

    /// The PeerId the certificate presents.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }
}

/// The PeerId a certificate presents, after checking that it is a well-formed, self-signed
/// X.509 v3 certificate with an ed25519 key.
pub fn peer_id_from_certificate(der: &CertificateDer<'_>) -> Result<PeerId, CertError> {
    check_certificate(der).map(|(peer, _)| peer)
}

fn check_certificate(der: &CertificateDer<'_>) -> Result<(PeerId, VerifyingKey), CertError> {
    let cert =
        webpki::EndEntityCert::try_from(der).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = cert.subject_public_key_info();
    let key_bytes = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or(CertError::NotEd25519)?;
    let peer = PeerId(key_bytes);
    let key = peer.verifying_key().ok_or(CertError::WeakKey)?;
    // webpki checked the outer structure; split it again to check the self-signature.
    let (tbs, algorithm, signature) =
        split_certificate(der.as_ref()).ok_or_else(|| CertError::Malformed("layout".into()))?;
    if algorithm != ED25519_ALGORITHM {
        return Err(CertError::NotEd25519);
    }
    let signature = signature
        .strip_prefix(&[0u8][..])
        .and_then(|sig| ed25519_dalek::Signature::from_slice(sig).ok())
        .ok_or(CertError::NotSelfSigned)?;
    key.verify_strict(tbs, &signature)
        .map_err(|_| CertError::NotSelfSigned)?;
    Ok((peer, key))
}

/// Splits a DER certificate into its TBSCertificate (whole TLV), its signature
/// AlgorithmIdentifier (whole TLV) and the contents of its signature BIT STRING.
fn split_certificate(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let certificate = Tlv::parse(der)?;
    if certificate.tag != 0x30 || !certificate.rest.is_empty() {
        return None;
    }
    let tbs = Tlv::parse(certificate.contents)?;
    let algorithm = Tlv::parse(tbs.rest)?;
    let signature = Tlv::parse(algorithm.rest)?;
    (tbs.tag == 0x30 && algorithm.tag == 0x30 && signature.tag == 0x03 && signature.rest.is_empty())
        .then_some((tbs.whole, algorithm.whole, signature.contents))
}

/// One DER tag-length-value.
struct Tlv<'a> {
    tag: u8,
    /// The whole TLV, header included.
    whole: &'a [u8],
    /// The value.
    contents: &'a [u8],
    /// What follows the TLV.
    rest: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads the TLV at the start of `input`. Lengths up to two bytes, which is all a
    /// certificate webpki accepts can use.
    fn parse(input: &'a [u8]) -> Option<Self> {
        let (&tag, after_tag) = input.split_first()?;
        let (&first, after_len) = after_tag.split_first()?;
        let (len, header, after_len) = match first {
            0..=0x7f => (usize::from(first), 2, after_len),
            0x81 => {
                let (&b, rest) = after_len.split_first()?;
                (usize::from(b), 3, rest)
            }
            0x82 => {
                let (bytes, rest) = after_len.split_first_chunk::<2>()?;
                (usize::from(u16::from_be_bytes(*bytes)), 4, rest)
            }
            _ => return None,
        };
        if after_len.len() < len {
            return None;
        }
        Some(Self {
            tag,
            whole: input.get(..header + len)?,
            contents: after_len.get(..len)?,
            rest: after_len.get(len..)?,
        })
    }
}

/// What one handshake's verifier and certificate resolver saw, read back by the endpoint to
/// turn a failed handshake into a precise error.
#[derive(Debug, Default)]
pub(crate) struct HandshakeProbe {
    /// The PeerId the dialer expects; `None` on the listening side.
    pub expected: Option<PeerId>,
    /// The key the peer's certificate held.
    pub peer: OnceLock<PeerId>,
    /// Why we refused the peer's certificate or signature.
    pub refused: OnceLock<CertError>,
    /// The ALPN ids the dialer offered (listening side only), at most [`MAX_OFFERED_ALPN`].
    pub offered_alpn: OnceLock<Vec<Vec<u8>>>,
}

/// ALPN ids of a ClientHello kept for diagnostics.
const MAX_OFFERED_ALPN: usize = 8;

impl HandshakeProbe {
    pub(crate) fn new(expected: Option<PeerId>) -> Self {
        Self {
            expected,
            ..Self::default()
        }
    }

    fn refuse(&self, error: CertError) -> rustls::Error {
        // A handshake verifies one certificate; a second refusal adds nothing.
        let _ = self.refused.set(error.clone());
        error.into()
    }
}

/// The verifier of both sides: any self-signed ed25519 certificate, ed25519 signatures only,
/// and the expected PeerId when dialling.
#[derive(Debug)]
struct PeerVerifier {
    probe: Arc<HandshakeProbe>,
}

impl PeerVerifier {
    fn verify_certificate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(self
                .probe
                .refuse(CertError::Intermediates(intermediates.len())));
        }
        let (peer, _) = check_certificate(end_entity).map_err(|e| self.probe.refuse(e))?;
        let _ = self.probe.peer.set(peer);
        match self.probe.expected {
            Some(expected) if expected != peer => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(()),
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(self
                .probe
                .refuse(CertError::Scheme(format!("{:?}", dss.scheme))));
        }
        let (_, key) = check_certificate(cert).map_err(|e| self.probe.refuse(e))?;
        let signature = ed25519_dalek::Signature::from_slice(dss.signature())
            .map_err(|_| self.probe.refuse(CertError::BadSignature))?;
        key.verify_strict(message, &signature)
            .map_err(|_| self.probe.refuse(CertError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(self.probe.refuse(CertError::Tls12))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(self.probe.refuse(CertError::Tls12))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Presents our certificate, and notes the ALPN ids the dialer offered.
#[derive(Debug)]
struct OurCertificate {
    certified: Arc<CertifiedKey>,
    probe: Arc<HandshakeProbe>,
}

impl rustls::server::ResolvesServerCert for OurCertificate {
    fn resolve(&self, client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls resolves the certificate before it matches ALPN, so a dialer of another
        // network is on record by the time the handshake fails.
        if let Some(offered) = client_hello.alpn() {
            let offered = offered.take(MAX_OFFERED_ALPN).map(<[u8]>::to_vec).collect();
            let _ = self.probe.offered_alpn.set(offered);
        }
        Some(Arc::clone(&self.certified))
    }
}

impl rustls::client::ResolvesClientCert for OurCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS configuration of a dialer on `network`: TLS 1.3 only, our certificate, our ALPN, no
/// SNI, no resumption, and the peer verifier that fails the handshake unless the peer's key is
/// `expected` (when given). For tools and tests that drive quinn themselves; [`super::Endpoint`]
/// builds its own.
pub fn client_config(
    identity: &TlsIdentity,
    network: &NetworkId,
    expected: Option<PeerId>,
) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with(
        identity,
        alpn(network),
        Arc::new(HandshakeProbe::new(expected)),
    )
}

/// The TLS configuration of a listener on `network`: TLS 1.3 only, client certificates
/// required, our ALPN only, no resumption, no 0-RTT.
pub fn server_config(
    identity: &TlsIdentity,
    network: &NetworkId,
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with(identity, alpn(network), Arc::new(HandshakeProbe::default()))
}

pub(crate) fn client_config_with(
    identity: &TlsIdentity,
    alpn: Vec<u8>,
    probe: Arc<HandshakeProbe>,
) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(PeerVerifier {
        probe: Arc::clone(&probe),
    });
    let resolver = Arc::new(OurCertificate {
        certified: Arc::clone(&identity.certified),
        probe,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn];
    config.enable_sni = false;
    // Resumption would skip the verifier, and with it the expected-PeerId check.
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

pub(crate) fn server_config_with(
    identity: &TlsIdentity,
    alpn: Vec<u8>,
    probe: Arc<HandshakeProbe>,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = Arc::new(PeerVerifier {
        probe: Arc::clone(&probe),
    });
    let resolver = Arc::new(OurCertificate {
        certified: Arc::clone(&identity.certified),
        probe,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(seed: u8) -> Identity {
        Identity::from_secret_bytes([seed; 32])
    }

    #[test]
    fn certificate_presents_the_identity_key() {
        let id = identity(1);
        let tls = TlsIdentity::new(&id).unwrap();
        assert_eq!(tls.peer_id(), id.peer_id());
        assert_eq!(
            peer_id_from_certificate(tls.certificate()),
            Ok(id.peer_id())
        );
    }

    #[test]
    fn a_certificate_signed_by_another_key_is_refused() {
        // Subject key of identity 1, signed by identity 2's key: not self-signed.
        let tls1 = TlsIdentity::new(&identity(1)).unwrap();
        let tls2 = TlsIdentity::new(&identity(2)).unwrap();
        let der1 = tls1.certificate().as_ref();
        let der2 = tls2.certificate().as_ref();
        let (_, _, sig2) = split_certificate(der2).unwrap();
        let (_, _, sig1) = split_certificate(der1).unwrap();
        let at = der1.windows(sig1.len()).position(|w| w == sig1).unwrap();
        let mut forged = der1.to_vec();
        forged[at..at + sig2.len()].copy_from_slice(sig2);
        let forged = CertificateDer::from(forged);
        assert_eq!(
            peer_id_from_certificate(&forged),
            Err(CertError::NotSelfSigned)
        );
    }

    #[test]
    fn garbage_and_non_ed25519_certificates_are_refused() {
        assert!(matches!(
            peer_id_from_certificate(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            Err(CertError::Malformed(_))
        ));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            peer_id_from_certificate(cert.der()),
            Err(CertError::NotEd25519)
        );
    }

    #[test]
    fn every_truncation_of_a_certificate_is_refused_without_panic() {
        let tls = TlsIdentity::new(&identity(3)).unwrap();
        let der = tls.certificate().as_ref();
        for cut in 0..der.len() {
            let short = CertificateDer::from(der[..cut].to_vec());
            assert!(peer_id_from_certificate(&short).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn alpn_names_version_and_network() {
        let network = NetworkId::from_name("tally");
        let id = alpn(&network);
        assert_eq!(id, format!("tally/1/{network}").into_bytes());
        assert_eq!(
            parse_alpn(&id),
            Some(AlpnParts {
                version: Some(1),
                network: Some(network)
            })
        );
        assert_eq!(
            parse_alpn(b"tally/9"),
            Some(AlpnParts {
                version: Some(9),
                network: None
            })
        );
        assert_eq!(parse_alpn(b"h3"), None);
    }
}
