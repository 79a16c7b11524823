//! DTLS-SRTP (RFC 5764): the handshake that keys SRTP, sans-IO.
//!
//! The worker owns one [`DtlsSession`] per leg (two without rtcp-mux: RFC 5764 4.1 keys RTCP on
//! its own port with its own handshake) and drives it with `handle_timeout(now)`,
//! `handle_packet(datagram)` and [`DtlsSession::poll_output`] until a [`DtlsOutput::Timeout`]
//! comes out, like every sans-IO protocol here. What the worker needs from a session is the
//! small [`DtlsSession`] trait; [`DtlsContext::session`] builds the one implementation, on the
//! dimpl crate (DTLS 1.2, aws-lc-rs crypto).
//!
//! The session checks the peer's certificate against the fingerprint from SDP (RFC 8122 5;
//! RFC 5763 5: "the certificate presented during the DTLS handshake MUST match the fingerprint
//! exchanged via the signaling path"), and on success hands out the two SRTP master keys from
//! the exported keying material (RFC 5764 4.2), already split by role.
//!
//! Known limits of the implementation (dimpl 0.9): ECDSA certificates only; no
//! `SRTP_AES128_CM_HMAC_SHA1_32` or `SRTP_NULL_*` profiles; as a client it offers all three of
//! `SRTP_AEAD_AES_256_GCM`, `SRTP_AEAD_AES_128_GCM`, `SRTP_AES128_CM_HMAC_SHA1_80`, and as a
//! server it picks among the client's offer in that order.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::digest;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::srtp::{MasterKey, Suite};

/// The suites a handshake can negotiate, in the order a server picks them (the
/// implementation's limit: no `AES_CM_128_HMAC_SHA1_32` profile).
pub const PROFILES: [Suite; 3] = [
    Suite::AeadAes256Gcm,
    Suite::AeadAes128Gcm,
    Suite::AesCm128HmacSha1_80,
];

/// Which side of the handshake we are (SDP `a=setup`, RFC 4145 4 and RFC 5763 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtlsRole {
    /// Sends the ClientHello (`a=setup:active`).
    Client,
    /// Waits for it (`a=setup:passive`).
    Server,
}

impl DtlsRole {
    /// `client` or `server`.
    pub fn name(self) -> &'static str {
        match self {
            DtlsRole::Client => "client",
            DtlsRole::Server => "server",
        }
    }
}

/// A hash function of a certificate fingerprint (RFC 8122 5, the IANA "Hash Function Textual
/// Names" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// `sha-1` (still seen in older SDP).
    Sha1,
    /// `sha-256` (what WebRTC and most SBCs send).
    Sha256,
    /// `sha-384`.
    Sha384,
    /// `sha-512`.
    Sha512,
}

impl HashAlg {
    /// Every supported hash, in SDP preference order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sha1,
    ];

    /// The SDP token (`sha-256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha-1",
            HashAlg::Sha256 => "sha-256",
            HashAlg::Sha384 => "sha-384",
            HashAlg::Sha512 => "sha-512",
        }
    }

    /// Looks a hash up by its SDP token, in any case.
    pub fn from_name(s: &str) -> Option<HashAlg> {
        HashAlg::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(s))
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        self.algorithm().output_len()
    }
}

/// Why a fingerprint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Not `<hash> <hex pairs>`.
    #[error("expected \"<hash> <AB:CD:...>\", e.g. \"sha-256 AB:CD:...\"")]
    Shape,
    /// The hash is not one of sha-1, sha-256, sha-384, sha-512.
    #[error("unsupported hash (sha-1, sha-256, sha-384 or sha-512)")]
    UnknownHash,
    /// A byte is not two hex digits, or the pairs are not colon-separated.
    #[error("the value must be colon-separated pairs of hex digits")]
    BadHex,
    /// The value has the wrong length for its hash.
    #[error("{alg} needs {expected} bytes, got {actual}")]
    Length {
        /// The hash named.
        alg: &'static str,
        /// Its digest length.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
}

/// A certificate fingerprint as SDP carries it (`a=fingerprint:sha-256 AB:CD:...`).
#[derive(Clone, PartialEq, Eq)]
pub struct Fingerprint {
    alg: HashAlg,
    value: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(alg: HashAlg, der: &[u8]) -> Fingerprint {
        Fingerprint {
            alg,
            value: digest::digest(alg.algorithm(), der).as_ref().to_vec(),
        }
    }

    /// Parses `sha-256 AB:CD:...` (hash token in any case, hex in any case).
    pub fn parse(s: &str) -> Result<Fingerprint, FingerprintError> {
        let mut parts = s.split_ascii_whitespace();
        let (Some(alg), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(FingerprintError::Shape);
        };
        let alg = HashAlg::from_name(alg).ok_or(FingerprintError::UnknownHash)?;
        let mut value = Vec::with_capacity(alg.digest_len());
        for pair in hex.split(':') {
            let b = pair.as_bytes();
            if b.len() != 2 {
                return Err(FingerprintError::BadHex);
            }
            let digit = |c: u8| (c as char).to_digit(16).ok_or(FingerprintError::BadHex);
            value.push((digit(b[0])? * 16 + digit(b[1])?) as u8);
        }
        if value.len() != alg.digest_len() {
            return Err(FingerprintError::Length {
                alg: alg.name(),
                expected: alg.digest_len(),
                actual: value.len(),
            });
        }
        Ok(Fingerprint { alg, value })
    }

    /// The hash it uses.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// Whether `der` is the certificate this fingerprint names (constant time in the value).
    pub fn matches(&self, der: &[u8]) -> bool {
        let d = digest::digest(self.alg.algorithm(), der);
        bool::from(d.as_ref().ct_eq(&self.value))
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:...`, as in SDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alg.name())?;
        for (i, b) in self.value.iter().enumerate() {
            write!(f, "{}{b:02X}", if i == 0 { ' ' } else { ':' })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why the engine's certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Generating the ECDSA P-256 key or certificate failed.
    #[error("generating the DTLS certificate failed")]
    Generate,
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM CERTIFICATE block")]
    NoCertificate(String),
    /// The key is not an ECDSA P-256 or P-384 key in PKCS#8 or SEC1 PEM, or does not belong to
    /// the certificate. (The key's bytes never appear in this message.)
    #[error("{0}: not an ECDSA P-256/P-384 private key (PKCS#8 or SEC1 PEM) for this certificate")]
    BadKey(String),
}

/// The engine's DTLS certificate and key, with its fingerprints. The private key is zeroized on
/// drop and never printed.
pub struct DtlsIdentity {
    cert: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (RFC 5763 5: self-signed is the norm; the
    /// fingerprint in SDP is what authenticates it).
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        let cert = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| IdentityError::Generate)?;
        Ok(DtlsIdentity::from_der(cert))
    }

    /// A certificate and key from PEM files (the key as PKCS#8 `PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`). The key is checked by signing with it once.
    pub fn from_pem_files(cert_path: &str, key_path: &str) -> Result<DtlsIdentity, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        let read = |p: &str| {
            std::fs::read(p).map_err(|source| IdentityError::Read {
                path: p.to_string(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = Zeroizing::new(read(key_path)?);
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|_| IdentityError::NoCertificate(cert_path.to_string()))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| IdentityError::BadKey(key_path.to_string()))?;
        let identity = DtlsIdentity::from_der(dimpl::DtlsCertificate {
            certificate: cert.to_vec(),
            private_key: key.secret_der().to_vec(),
        });
        identity
            .self_check()
            .map_err(|()| IdentityError::BadKey(key_path.to_string()))?;
        Ok(identity)
    }

    fn from_der(cert: dimpl::DtlsCertificate) -> DtlsIdentity {
        let fingerprint = Fingerprint::of(HashAlg::Sha256, &cert.certificate);
        DtlsIdentity { cert, fingerprint }
    }

    /// Runs one in-memory handshake against itself: proves the key signs for the certificate.
    fn self_check(&self) -> Result<(), ()> {
        let ctx = DtlsContext::new(Arc::new(DtlsIdentity::from_der(self.cert.clone())), {
            DtlsOptions {
                retransmit_initial: Duration::from_millis(50),
                ..DtlsOptions::default()
            }
        })
        .map_err(|_| ())?;
        let fp = self.fingerprint.clone();
        let now = Instant::now();
        let mut c = ctx.session(DtlsRole::Client, fp.clone(), now);
        let mut s = ctx.session(DtlsRole::Server, fp, now);
        let r = run_in_memory(&mut *c, &mut *s, now, 64);
        if r.is_ok() { Ok(()) } else { Err(()) }
    }

    /// The certificate's sha-256 fingerprint, as SDP carries it.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate's fingerprint with another hash.
    pub fn fingerprint_with(&self, alg: HashAlg) -> Fingerprint {
        Fingerprint::of(alg, &self.cert.certificate)
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert.certificate
    }
}

impl Drop for DtlsIdentity {
    fn drop(&mut self) {
        self.cert.private_key.zeroize();
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Handshake timing: how long a handshake may take and how its flights are retransmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsOptions {
    /// The whole handshake's deadline, from the first ClientHello (or, for a server still
    /// waiting for one, from the stream's creation).
    pub handshake_timeout: Duration,
    /// First retransmission timeout of a flight (RFC 6347 4.2.4.1 suggests 1 s); it doubles
    /// after each retransmission, with +-25% jitter.
    pub retransmit_initial: Duration,
    /// Retransmissions per flight before the handshake fails.
    pub retransmit_count: usize,
    /// How long a server keeps its session after the handshake, to answer a client whose
    /// last flight it already took but whose answer was lost (RFC 6347 4.2.4); it is released
    /// earlier by the first authenticated SRTP packet from the peer. It lasts at least until
    /// the handshake's start plus `handshake_timeout`, while the client may still be retrying.
    pub linger: Duration,
    /// Largest DTLS datagram.
    pub mtu: usize,
}

impl Default for DtlsOptions {
    fn default() -> DtlsOptions {
        DtlsOptions {
            handshake_timeout: Duration::from_secs(20),
            retransmit_initial: Duration::from_secs(1),
            retransmit_count: 5,
            linger: Duration::from_secs(10),
            mtu: 1150,
        }
    }
}

/// The options were refused by the DTLS implementation.
#[derive(Debug, thiserror::Error)]
#[error("DTLS options: {0}")]
pub struct DtlsOptionsError(String);

/// Why a handshake failed: what an operator needs to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsFailure {
    /// No handshake completed within the deadline (silent or unreachable peer, or a path
    /// losing too much).
    Timeout,
    /// The peer's certificate does not match the fingerprint from signaling.
    FingerprintMismatch,
    /// The peer presented no certificate.
    NoCertificate,
    /// No SRTP protection profile in common (or the peer did not offer `use_srtp`).
    NoCommonProfile,
    /// No DTLS cipher suite, group or signature scheme in common.
    NoCommonCipherSuite,
    /// The peer sent a fatal alert (RFC 5246 7.2; the description code).
    PeerAlert(u8),
    /// The peer sent messages that break the protocol.
    Malformed,
    /// The peer's handshake failed a check (a bad signature or Finished, a version or cookie
    /// the protocol forbids).
    Protocol,
}

impl DtlsFailure {
    /// The reason as events and metrics name it.
    pub fn reason(self) -> &'static str {
        match self {
            DtlsFailure::Timeout => "timeout",
            DtlsFailure::FingerprintMismatch => "fingerprint_mismatch",
            DtlsFailure::NoCertificate => "no_certificate",
            DtlsFailure::NoCommonProfile => "no_common_profile",
            DtlsFailure::NoCommonCipherSuite => "no_common_cipher_suite",
            DtlsFailure::PeerAlert(_) => "peer_alert",
            DtlsFailure::Malformed => "malformed",
            DtlsFailure::Protocol => "protocol",
        }
    }

    /// Every reason, in metric order.
    pub const REASONS: [&'static str; 8] = [
        "timeout",
        "fingerprint_mismatch",
        "no_certificate",
        "no_common_profile",
        "no_common_cipher_suite",
        "peer_alert",
        "malformed",
        "protocol",
    ];

    /// This reason's place in [`DtlsFailure::REASONS`].
    pub fn index(self) -> usize {
        match self {
            DtlsFailure::Timeout => 0,
            DtlsFailure::FingerprintMismatch => 1,
            DtlsFailure::NoCertificate => 2,
            DtlsFailure::NoCommonProfile => 3,
            DtlsFailure::NoCommonCipherSuite => 4,
            DtlsFailure::PeerAlert(_) => 5,
            DtlsFailure::Malformed => 6,
            DtlsFailure::Protocol => 7,
        }
    }

    /// For a peer alert, the alert's name (RFC 5246 7.2).
    pub fn alert(self) -> Option<&'static str> {
        match self {
            DtlsFailure::PeerAlert(d) => Some(alert_name(d)),
            _ => None,
        }
    }

    fn from_dimpl(e: &dimpl::Error) -> DtlsFailure {
        use dimpl::{Error as E, SecurityError as S};
        match e {
            E::Timeout(_) => DtlsFailure::Timeout,
            E::SecurityError(S::FatalAlert { description }) => DtlsFailure::PeerAlert(*description),
            E::SecurityError(
                S::NoMutuallyAcceptableCipherSuite
                | S::NoCommonCipherSuite
                | S::NoCommonKeyExchangeGroup
                | S::UnsupportedKeyExchangeAlgorithm,
            ) => DtlsFailure::NoCommonCipherSuite,
            E::SecurityError(_) | E::CryptoError(_) | E::CertificateError(_) => {
                DtlsFailure::Protocol
            }
            E::ConnectionClosed => DtlsFailure::PeerAlert(0),
            _ => DtlsFailure::Malformed,
        }
    }
}

impl fmt::Display for DtlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsFailure::PeerAlert(d) => write!(f, "peer_alert ({})", alert_name(*d)),
            other => f.write_str(other.reason()),
        }
    }
}

/// The name of a TLS alert description (RFC 5246 7.2, RFC 8446 6).
pub fn alert_name(description: u8) -> &'static str {
    match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        _ => "unknown",
    }
}

/// What a handshake produced: the negotiated suite and the master key of each direction.
pub struct DtlsKeys {
    /// The negotiated SRTP protection profile as our suite.
    pub suite: Suite,
    /// The key we protect with (client_write for a client, RFC 5764 4.2).
    pub local: MasterKey,
    /// The key we unprotect with.
    pub remote: MasterKey,
}

impl fmt::Debug for DtlsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// What a session has for the caller.
#[derive(Debug)]
pub enum DtlsOutput<'a> {
    /// A datagram to send to the peer.
    Packet(&'a [u8]),
    /// The handshake completed and the peer's certificate matched: SRTP can start. Comes once.
    Established(DtlsKeys),
    /// The handshake failed; the session is finished. Comes once.
    Failed(DtlsFailure),
    /// Nothing more now: call `handle_timeout` at this instant. Always the last output of a
    /// poll cycle.
    Timeout(Instant),
}

/// One DTLS-SRTP handshake, driven by the worker that owns its stream.
pub trait DtlsSession: Send {
    /// Advances the session's clock to `now` (call before `handle_packet` at a new instant,
    /// and when the timer from [`DtlsOutput::Timeout`] is due). A failure is also reported by
    /// the next poll.
    fn handle_timeout(&mut self, now: Instant);
    /// Feeds one received DTLS datagram. A failure is reported by the next poll.
    fn handle_packet(&mut self, datagram: &[u8]);
    /// The next output; poll until [`DtlsOutput::Timeout`]. `buf` receives packets (at least
    /// the MTU).
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a>;
    /// Whether the handshake has finished (established or failed).
    fn is_finished(&self) -> bool;
    /// Datagrams dropped as malformed (RFC 6347 4.1.2.7: discarded, the handshake goes on).
    fn dropped(&self) -> u64;
}

/// What every session of an engine shares: its identity and the DTLS configuration.
pub struct DtlsContext {
    identity: Arc<DtlsIdentity>,
    config: Arc<dimpl::Config>,
    options: DtlsOptions,
}

impl fmt::Debug for DtlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsContext")
            .field("identity", &self.identity)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl DtlsContext {
    /// A context for `identity` with these timings.
    pub fn new(
        identity: Arc<DtlsIdentity>,
        options: DtlsOptions,
    ) -> Result<DtlsContext, DtlsOptionsError> {
        let config = dimpl::Config::builder()
            .mtu(options.mtu)
            .flight_start_rto(options.retransmit_initial)
            .flight_retries(options.retransmit_count)
            .handshake_timeout(options.handshake_timeout)
            .require_client_certificate(true)
            .build()
            .map_err(|e| DtlsOptionsError(e.to_string()))?;
        Ok(DtlsContext {
            identity,
            config: Arc::new(config),
            options,
        })
    }

    /// The engine's identity.
    pub fn identity(&self) -> &DtlsIdentity {
        &self.identity
    }

    /// The timings.
    pub fn options(&self) -> &DtlsOptions {
        &self.options
    }

    /// A new session in `role` that accepts only a peer certificate matching `remote`. A
    /// client sends its ClientHello on the first poll.
    pub fn session(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        now: Instant,
    ) -> Box<dyn DtlsSession> {
        let mut dtls =
            dimpl::Dtls::new_12(Arc::clone(&self.config), self.identity.cert.clone(), now);
        dtls.set_active(role == DtlsRole::Client);
        // dimpl must see the clock before the first packet.
        let failed = dtls
            .handle_timeout(now)
            .err()
            .map(|e| DtlsFailure::from_dimpl(&e));
        Box::new(DimplSession {
            dtls,
            role,
            remote,
            peer_cert_ok: None,
            keys: None,
            connected: false,
            dropped: 0,
            heard: false,
            state: match failed {
                Some(f) => State::Failing(f),
                None => State::Handshaking,
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// A failure to report on the next poll.
    Failing(DtlsFailure),
    /// Established was reported; the session keeps answering retransmissions.
    Established,
    /// Failed was reported.
    Failed,
}

/// The dimpl implementation of [`DtlsSession`].
struct DimplSession {
    dtls: dimpl::Dtls,
    role: DtlsRole,
    remote: Fingerprint,
    /// Whether the peer's certificate matched (None: not seen yet).
    peer_cert_ok: Option<bool>,
    keys: Option<(Suite, Zeroizing<Vec<u8>>)>,
    /// dimpl said Connected in this poll cycle.
    connected: bool,
    state: State,
    /// Malformed datagrams discarded.
    dropped: u64,
    /// The peer's first flight has come (a ClientHello to a server; a ServerHello or
    /// HelloVerifyRequest to a client).
    heard: bool,
}

/// Whether a datagram opens the peer's first flight: a handshake record of epoch 0 whose
/// message is a ClientHello (to a server) or a ServerHello or HelloVerifyRequest (to a
/// client). RFC 6347 4.1 record header (13 bytes), then the handshake header (12).
fn opens_first_flight(datagram: &[u8], role: DtlsRole) -> bool {
    const HANDSHAKE: u8 = 22;
    if datagram.len() < 13 + 12 || datagram[0] != HANDSHAKE || datagram[3..5] != [0, 0] {
        return false;
    }
    let record_len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
    let h = &datagram[13..];
    let msg = h[0];
    let len = u32::from_be_bytes([0, h[1], h[2], h[3]]);
    let offset = u32::from_be_bytes([0, h[6], h[7], h[8]]);
    // The smallest body: version, random and empty lengths (RFC 6347 4.2.1, 4.3.2).
    let least = match (role, msg) {
        (DtlsRole::Server, 1) | (DtlsRole::Client, 2) => 38,
        (DtlsRole::Client, 3) => 3,
        _ => return false,
    };
    record_len >= 12 && 13 + record_len <= datagram.len() && offset == 0 && len >= least
}

/// An unprotected fatal alert record (epoch 0), sent when we abort a handshake ourselves, so
/// that the peer learns why at once instead of timing out. Epoch 0 is the only epoch both
/// sides can read before the handshake completes (RFC 6347 4.1; the sequence number is past
/// any handshake record of ours).
fn fatal_alert_record(description: u8) -> [u8; 15] {
    [
        0x15,
        0xfe,
        0xfd, // alert, DTLS 1.2
        0x00,
        0x00, // epoch 0
        0x00,
        0x00,
        0x00,
        0x00,
        0x01,
        0x00, // sequence number 256
        0x00,
        0x02, // length
        0x02,
        description, // fatal
    ]
}

/// Alert description for a certificate that is not the one signalled (RFC 5246 7.2).
const ALERT_BAD_CERTIFICATE: u8 = 42;

impl DimplSession {
    /// The handshake completed: keys if the certificate matched and a profile was agreed.
    fn conclude(&mut self) -> Option<DtlsKeys> {
        if self.peer_cert_ok != Some(true) {
            self.fail(DtlsFailure::NoCertificate);
            return None;
        }
        let Some((suite, km)) = self.keys.take() else {
            self.fail(DtlsFailure::NoCommonProfile);
            return None;
        };
        match self.split_keys(suite, &km) {
            Some(keys) => {
                self.state = State::Established;
                Some(keys)
            }
            None => {
                self.fail(DtlsFailure::Protocol);
                None
            }
        }
    }

    fn fail(&mut self, f: DtlsFailure) {
        if matches!(self.state, State::Handshaking | State::Established) {
            self.state = State::Failing(f);
        }
    }

    /// Splits RFC 5764 4.2 keying material
    /// `client_key | server_key | client_salt | server_salt` into our two master keys.
    fn split_keys(&self, suite: Suite, km: &[u8]) -> Option<DtlsKeys> {
        let p = suite.params();
        let (k, s) = (p.master_key_len, p.master_salt_len);
        if km.len() != 2 * (k + s) {
            return None;
        }
        let client_key = &km[..k];
        let server_key = &km[k..2 * k];
        let client_salt = &km[2 * k..2 * k + s];
        let server_salt = &km[2 * k + s..];
        let client = MasterKey::from_parts(suite, client_key, client_salt).ok()?;
        let server = MasterKey::from_parts(suite, server_key, server_salt).ok()?;
        let (local, remote) = match self.role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        };
        Some(DtlsKeys {
            suite,
            local,
            remote,
        })
    }
}

/// What one dimpl poll produced, without the borrow of the buffer.
enum Step {
    Packet(usize, usize),
    Timeout(Instant),
    Again,
}

impl DtlsSession for DimplSession {
    fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Handshaking | State::Established)
            && let Err(e) = self.dtls.handle_timeout(now)
        {
            self.fail(DtlsFailure::from_dimpl(&e));
        }
    }

    fn handle_packet(&mut self, datagram: &[u8]) {
        // Before the peer's first flight, nothing else is fed to dimpl: a forged handshake
        // message of epoch 0 (say, a "Certificate" with message_seq 0) would take the first
        // message's sequence number, the real ClientHello would then be ignored as a
        // duplicate, and one datagram from anyone who can reach the port would stall the
        // handshake until its deadline.
        if !self.heard {
            if !opens_first_flight(datagram, self.role) {
                self.dropped += 1;
                return;
            }
            self.heard = true;
        }
        if matches!(self.state, State::Handshaking | State::Established)
            && let Err(e) = self.dtls.handle_packet(datagram)
        {
            match DtlsFailure::from_dimpl(&e) {
                // RFC 6347 4.1.2.7: invalid records are silently discarded; anyone who can
                // reach the port could otherwise end a handshake with one datagram.
                DtlsFailure::Malformed => self.dropped += 1,
                f => self.fail(f),
            }
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        loop {
            match self.state {
                State::Failing(f) => {
                    self.state = State::Failed;
                    return DtlsOutput::Failed(f);
                }
                State::Failed => return DtlsOutput::Timeout(far_future()),
                State::Handshaking | State::Established => {}
            }
            let base = buf.as_ptr() as usize;
            let step = match self.dtls.poll_output(buf) {
                dimpl::Output::Packet(p) => Step::Packet(p.as_ptr() as usize - base, p.len()),
                dimpl::Output::Timeout(t) => {
                    if self.connected && self.state == State::Handshaking {
                        if let Some(keys) = self.conclude() {
                            return DtlsOutput::Established(keys);
                        }
                        continue; // report the failure
                    }
                    Step::Timeout(t)
                }
                dimpl::Output::PeerCert(der) => {
                    let ok = self.remote.matches(der);
                    self.peer_cert_ok = Some(ok);
                    if !ok {
                        self.fail(DtlsFailure::FingerprintMismatch);
                        // Tell the peer (it reads epoch 0 until our ChangeCipherSpec).
                        let alert = fatal_alert_record(ALERT_BAD_CERTIFICATE);
                        buf[..alert.len()].copy_from_slice(&alert);
                        return DtlsOutput::Packet(&buf[..alert.len()]);
                    }
                    Step::Again
                }
                dimpl::Output::KeyingMaterial(km, profile) => {
                    let id = match profile {
                        dimpl::SrtpProfile::AES128_CM_SHA1_80 => 0x0001,
                        dimpl::SrtpProfile::AEAD_AES_128_GCM => 0x0007,
                        dimpl::SrtpProfile::AEAD_AES_256_GCM => 0x0008,
                        _ => 0,
                    };
                    if let Some(suite) = Suite::from_dtls_profile(id) {
                        self.keys = Some((suite, Zeroizing::new(km.to_vec())));
                    }
                    Step::Again
                }
                // Keying material follows Connected; both are judged at the end of the cycle.
                dimpl::Output::Connected => {
                    self.connected = true;
                    Step::Again
                }
                dimpl::Output::BufferTooSmall { .. } => {
                    self.fail(DtlsFailure::Protocol);
                    Step::Again
                }
                dimpl::Output::CloseNotify => {
                    if self.state == State::Handshaking {
                        self.fail(DtlsFailure::PeerAlert(0));
                    }
                    Step::Again
                }
                // Application data is not part of DTLS-SRTP; dropped.
                _ => Step::Again,
            };
            match step {
                Step::Packet(off, len) => return DtlsOutput::Packet(&buf[off..off + len]),
                Step::Timeout(t) => return DtlsOutput::Timeout(t),
                Step::Again => {}
            }
        }
    }

    fn is_finished(&self) -> bool {
        !matches!(self.state, State::Handshaking)
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// The result of [`run_in_memory`]: what each side ended with.
#[derive(Debug)]
pub struct InMemoryOutcome {
    /// The client's keys.
    pub client: DtlsKeys,
    /// The server's keys.
    pub server: DtlsKeys,
}

/// Runs a client and a server against each other in memory (no sockets, no loss), advancing
/// simulated time from `now` to each next timer when both are waiting. For tests, the
/// in-memory ceiling benchmark, and checking a loaded key. Gives up after `max_rounds`.
pub fn run_in_memory(
    client: &mut (dyn DtlsSession + 'static),
    server: &mut (dyn DtlsSession + 'static),
    mut now: Instant,
    max_rounds: usize,
) -> Result<InMemoryOutcome, (Option<DtlsFailure>, Option<DtlsFailure>)> {
    let mut buf = vec![0u8; 2048];
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let (mut ck, mut sk) = (None, None);
    let (mut cf, mut sf) = (None, None);
    for _ in 0..max_rounds {
        let mut next = far_future();
        for (sess, out, keys, fail) in [
            (&mut *client, &mut to_server, &mut ck, &mut cf),
            (&mut *server, &mut to_client, &mut sk, &mut sf),
        ] {
            loop {
                match sess.poll_output(&mut buf) {
                    DtlsOutput::Packet(p) => out.push(p.to_vec()),
                    DtlsOutput::Established(k) => *keys = Some(k),
                    DtlsOutput::Failed(f) => *fail = Some(f),
                    DtlsOutput::Timeout(t) => {
                        next = next.min(t);
                        break;
                    }
                }
            }
        }
        if ck.is_some() && sk.is_some() {
            break;
        }
        if (cf.is_some() || sf.is_some()) && to_server.is_empty() && to_client.is_empty() {
            break;
        }
        if to_server.is_empty() && to_client.is_empty() {
            now = now.max(next);
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
        for p in to_server.drain(..) {
            server.handle_packet(&p);
        }
        for p in to_client.drain(..) {
            client.handle_packet(&p);
        }
    }
    match (ck, sk) {
        (Some(client), Some(server)) => Ok(InMemoryOutcome { client, server }),
        _ => Err((cf, sf)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DtlsContext {
        DtlsContext::new(
            Arc::new(DtlsIdentity::generate().unwrap()),
            DtlsOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn fingerprint_parses_prints_and_checks_length() {
        let der = b"not really a certificate";
        let fp = Fingerprint::of(HashAlg::Sha256, der);
        let text = fp.to_string();
        assert!(text.starts_with("sha-256 "));
        assert_eq!(Fingerprint::parse(&text).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&text.to_lowercase()).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&text.replacen("sha-256", "SHA-256", 1)).unwrap(),
            fp
        );
        assert!(fp.matches(der));
        assert!(!fp.matches(b"another"));
        for alg in HashAlg::ALL {
            let f = Fingerprint::of(alg, der);
            assert_eq!(Fingerprint::parse(&f.to_string()).unwrap(), f);
            assert!(f.matches(der));
        }
        assert_eq!(Fingerprint::parse("sha-256"), Err(FingerprintError::Shape));
        assert_eq!(
            Fingerprint::parse("md5 AB:CD"),
            Err(FingerprintError::UnknownHash)
        );
        assert_eq!(
            Fingerprint::parse("sha-1 AB:CD"),
            Err(FingerprintError::Length {
                alg: "sha-1",
                expected: 20,
                actual: 2
            })
        );
        assert_eq!(
            Fingerprint::parse("sha-1 ABC:D"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-1 A:BC"),
            Err(FingerprintError::BadHex)
        );
        assert_eq!(
            Fingerprint::parse("sha-1 ZZ"),
            Err(FingerprintError::BadHex)
        );
    }

    #[test]
    fn handshake_in_memory_gives_mirrored_keys() {
        let a = ctx();
        let b = ctx();
        let now = Instant::now();
        let mut c = a.session(DtlsRole::Client, b.identity().fingerprint().clone(), now);
        let mut s = b.session(
            DtlsRole::Server,
            a.identity().fingerprint_with(HashAlg::Sha1),
            now,
        );
        let out = run_in_memory(&mut *c, &mut *s, now, 64).unwrap();
        // dimpl's server prefers AES-256-GCM among what its client offers.
        assert_eq!(out.client.suite, Suite::AeadAes256Gcm);
        assert_eq!(out.server.suite, out.client.suite);
        assert!(out.client.local.same_material(&out.server.remote));
        assert!(out.client.remote.same_material(&out.server.local));
        assert!(!out.client.local.same_material(&out.client.remote));
        assert!(c.is_finished() && s.is_finished());
    }

    #[test]
    fn wrong_fingerprint_fails_both_sides_with_reasons() {
        let a = ctx();
        let b = ctx();
        let now = Instant::now();
        // The client expects someone else's certificate.
        let other = Fingerprint::of(HashAlg::Sha256, b"someone else");
        let mut c = a.session(DtlsRole::Client, other, now);
        let mut s = b.session(DtlsRole::Server, a.identity().fingerprint().clone(), now);
        let (cf, sf) = run_in_memory(&mut *c, &mut *s, now, 64).unwrap_err();
        assert_eq!(cf, Some(DtlsFailure::FingerprintMismatch));
        // The server hears why from our alert rather than timing out.
        assert_eq!(sf, Some(DtlsFailure::PeerAlert(ALERT_BAD_CERTIFICATE)));
    }

    #[test]
    fn server_checks_the_client_certificate_too() {
        let a = ctx();
        let b = ctx();
        let now = Instant::now();
        let mut c = a.session(DtlsRole::Client, b.identity().fingerprint().clone(), now);
        let other = Fingerprint::of(HashAlg::Sha256, b"someone else");
        let mut s = b.session(DtlsRole::Server, other, now);
        let (_, sf) = run_in_memory(&mut *c, &mut *s, now, 64).unwrap_err();
        assert_eq!(sf, Some(DtlsFailure::FingerprintMismatch));
    }

    #[test]
    fn silent_peer_times_out() {
        let a = DtlsContext::new(
            Arc::new(DtlsIdentity::generate().unwrap()),
            DtlsOptions {
                handshake_timeout: Duration::from_secs(2),
                retransmit_initial: Duration::from_millis(100),
                retransmit_count: 20,
                ..DtlsOptions::default()
            },
        )
        .unwrap();
        let start = Instant::now();
        let mut c = a.session(
            DtlsRole::Client,
            Fingerprint::of(HashAlg::Sha256, b"x"),
            start,
        );
        let mut buf = [0u8; 2048];
        let mut now = start;
        let mut sent = 0;
        for _ in 0..100 {
            match c.poll_output(&mut buf) {
                DtlsOutput::Packet(_) => sent += 1,
                DtlsOutput::Failed(f) => {
                    assert_eq!(f, DtlsFailure::Timeout);
                    assert!(now - start >= Duration::from_secs(2));
                    assert!(sent >= 3, "retransmitted {sent}");
                    return;
                }
                DtlsOutput::Timeout(t) => {
                    now = t;
                    c.handle_timeout(now);
                }
                DtlsOutput::Established(_) => panic!("established with nobody"),
            }
        }
        panic!("no timeout");
    }

    /// RFC 6347 4.1.2.7: invalid records are silently discarded. Garbage from anyone who can
    /// reach the port must not end a handshake in progress: each junk datagram leaves the
    /// session handshaking, counted as dropped, and the handshake then completes.
    #[test]
    fn garbage_is_survived() {
        let (a, b) = (ctx(), ctx());
        let now = Instant::now();
        let mut server = a.session(DtlsRole::Server, b.identity().fingerprint().clone(), now);
        let mut client = b.session(DtlsRole::Client, a.identity().fingerprint().clone(), now);
        let mut buf = [0u8; 2048];
        // Truncated and malformed records, application data before the handshake, a record
        // of a later epoch, handshake messages that are not a ClientHello (the last, a
        // "Certificate" with message_seq 0, stalled dimpl's handshake for good: the real
        // ClientHello was then taken for a duplicate). A well-formed fatal alert from the
        // peer during the handshake is not junk: it ends the handshake, and the failure names
        // it.
        let junk: [&[u8]; 9] = [
            &[
                0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            &[
                0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0,
                4, 1, 2, 3, 4,
            ],
            &[
                0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 14, 11, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                2, 9, 9,
            ],
            &[],
            &[0x16],
            &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
            &[0x17; 40],
            &[0x15, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40],
            &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7, 0, 3, 1, 2, 3],
        ];
        for (n, j) in junk.iter().enumerate() {
            server.handle_packet(j);
            loop {
                match server.poll_output(&mut buf) {
                    DtlsOutput::Timeout(_) => break,
                    DtlsOutput::Failed(f) => panic!("junk {n} ended the handshake: {f}"),
                    DtlsOutput::Packet(_) | DtlsOutput::Established(_) => {}
                }
            }
            assert!(!server.is_finished(), "junk {n}");
            assert_eq!(server.dropped(), n as u64 + 1, "junk {n} counted");
        }
        // The real handshake still goes through.
        let (mut sk, mut ck) = (None, None);
        let mut drain = |from: &mut Box<dyn DtlsSession>, keys: &mut Option<DtlsKeys>| {
            let mut out = Vec::new();
            loop {
                match from.poll_output(&mut buf) {
                    DtlsOutput::Packet(p) => out.push(p.to_vec()),
                    DtlsOutput::Established(k) => *keys = Some(k),
                    DtlsOutput::Failed(f) => panic!("{f}"),
                    DtlsOutput::Timeout(_) => break,
                }
            }
            out
        };
        for _ in 0..20 {
            for p in drain(&mut client, &mut ck) {
                server.handle_packet(&p);
            }
            for p in drain(&mut server, &mut sk) {
                client.handle_packet(&p);
            }
            if sk.is_some() && ck.is_some() {
                break;
            }
        }
        assert!(
            sk.is_some() && ck.is_some(),
            "the handshake completes after the junk"
        );
    }

    #[test]
    fn alert_names() {
        assert_eq!(alert_name(42), "bad_certificate");
        assert_eq!(alert_name(40), "handshake_failure");
        assert_eq!(alert_name(255), "unknown");
        assert_eq!(
            DtlsFailure::PeerAlert(42).to_string(),
            "peer_alert (bad_certificate)"
        );
        for (k, r) in DtlsFailure::REASONS.iter().enumerate() {
            let f = [
                DtlsFailure::Timeout,
                DtlsFailure::FingerprintMismatch,
                DtlsFailure::NoCertificate,
                DtlsFailure::NoCommonProfile,
                DtlsFailure::NoCommonCipherSuite,
                DtlsFailure::PeerAlert(1),
                DtlsFailure::Malformed,
                DtlsFailure::Protocol,
            ][k];
            assert_eq!(f.reason(), *r);
            assert_eq!(f.index(), k);
        }
    }
}
