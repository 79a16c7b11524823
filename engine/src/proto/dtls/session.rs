//! The context that builds a [`DtlsSession`] on the configured backend (OpenSSL, or the dimpl
//! crate, whose implementation is here), and the engine's certificate and key
//! ([`DtlsIdentity`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::{Zeroize, Zeroizing};

use super::auto::{AutoSession, SessionMaker};
use super::failure::DtlsFailure;
use super::fingerprint::{DtlsRole, Fingerprint, HashAlg};
use super::libssl::OpensslContext;
use super::record::{opens_first_flight, split_keys};
use super::types::{
    DtlsBackend, DtlsKeys, DtlsOptions, DtlsOptionsError, DtlsOutput, DtlsSession, KeyKind,
    PROFILES,
};
use crate::proto::srtp::Suite;

/// What every session of an engine shares: its identity and the DTLS configuration.
pub struct DtlsContext {
    engines: Arc<Engines>,
    options: DtlsOptions,
}

/// The implementations a context can make sessions with, and the identity they present.
struct Engines {
    identity: Arc<DtlsIdentity>,
    openssl: Option<OpensslContext>,
    dimpl: Option<Arc<dimpl::Config>>,
    backend: DtlsBackend,
}

impl SessionMaker for Engines {
    fn dimpl(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        now: Instant,
    ) -> Option<Box<dyn DtlsSession>> {
        let config = self.dimpl.as_ref()?;
        Some(dimpl_session(config, &self.identity, role, remote, now))
    }

    fn openssl(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<&[Suite]>,
        now: Instant,
    ) -> Option<Box<dyn DtlsSession>> {
        Some(self.openssl.as_ref()?.session(role, remote, profiles, now))
    }

    fn has_dimpl(&self) -> bool {
        self.dimpl.is_some()
    }
}

impl fmt::Debug for DtlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsContext")
            .field("identity", &self.engines.identity)
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
        let backend = options.backend;
        let openssl = match backend {
            DtlsBackend::Openssl | DtlsBackend::Auto => Some(OpensslContext::new(
                &identity.cert.certificate,
                &identity.cert.private_key,
                options,
                &PROFILES,
            )?),
            DtlsBackend::Dimpl => None,
        };
        let dimpl_usable = identity.kind == KeyKind::Ecdsa;
        if backend == DtlsBackend::Dimpl && !dimpl_usable {
            return Err(DtlsOptionsError(
                "the dimpl DTLS backend signs with ECDSA keys only; use the openssl or auto \
                 backend with an RSA certificate"
                    .into(),
            ));
        }
        let dimpl = match backend {
            DtlsBackend::Dimpl | DtlsBackend::Auto if dimpl_usable => {
                let config = dimpl::Config::builder()
                    .mtu(options.mtu)
                    .flight_start_rto(options.retransmit_initial)
                    .flight_retries(options.retransmit_count)
                    .handshake_timeout(options.handshake_timeout)
                    .require_client_certificate(true)
                    .build()
                    .map_err(|e| DtlsOptionsError(e.to_string()))?;
                Some(Arc::new(config))
            }
            _ => None,
        };
        Ok(DtlsContext {
            engines: Arc::new(Engines {
                identity,
                openssl,
                dimpl,
                backend,
            }),
            options,
        })
    }

    /// The engine's identity.
    pub fn identity(&self) -> &DtlsIdentity {
        &self.engines.identity
    }

    /// The SRTP profiles the engine negotiates, in our preference order.
    pub fn profiles(&self) -> &'static [Suite] {
        match self.engines.openssl {
            Some(_) => &PROFILES,
            // dimpl 0.9 has no AES_CM_128_HMAC_SHA1_32.
            None => &PROFILES[..3],
        }
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
        self.session_with(role, remote, None, now)
    }

    /// A session whose SRTP profiles are restricted to `profiles` (in preference order; None:
    /// every profile the backend has). The dimpl backend always offers its three; the auto
    /// backend runs a restricted session on OpenSSL.
    pub fn session_with(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<&[Suite]>,
        now: Instant,
    ) -> Box<dyn DtlsSession> {
        let e = &self.engines;
        let made = match (e.backend, role) {
            (DtlsBackend::Dimpl, _) => e.dimpl(role, remote, now),
            (DtlsBackend::Openssl, DtlsRole::Client) => e.openssl(role, remote, profiles, now),
            // auto in both roles; an OpenSSL server, so that it can wait past a refused
            // ClientHello.
            _ => Some(AutoSession::start(
                Arc::clone(&self.engines) as Arc<dyn SessionMaker>,
                role,
                remote,
                profiles.map(<[Suite]>::to_vec),
                now,
                now + self.options.handshake_timeout,
            )),
        };
        made.expect("the context holds the backend it was made for")
    }
}

/// A dimpl session for `identity`.
fn dimpl_session(
    config: &Arc<dimpl::Config>,
    identity: &DtlsIdentity,
    role: DtlsRole,
    remote: Fingerprint,
    now: Instant,
) -> Box<dyn DtlsSession> {
    let mut dtls = dimpl::Dtls::new_12(Arc::clone(config), identity.cert.clone(), now);
    dtls.set_active(role == DtlsRole::Client);
    // dimpl must see the clock before the first packet.
    let failed = dtls
        .handle_timeout(now)
        .err()
        .map(|e| failure_from_dimpl(&e));
    Box::new(DimplSession {
        dtls,
        role,
        remote,
        peer_cert_ok: None,
        peer_fp: None,
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
    /// Its sha-256 fingerprint.
    peer_fp: Option<Fingerprint>,
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
pub(super) const ALERT_BAD_CERTIFICATE: u8 = 42;

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
        let Some(peer) = self.peer_fp.take() else {
            self.fail(DtlsFailure::NoCertificate);
            return None;
        };
        match split_keys(self.role, suite, &km, peer) {
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
            self.fail(failure_from_dimpl(&e));
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
            match failure_from_dimpl(&e) {
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
                    self.peer_fp = Some(Fingerprint::of(HashAlg::Sha256, der));
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

    fn implementation(&self) -> Option<DtlsBackend> {
        Some(DtlsBackend::Dimpl)
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

fn failure_from_dimpl(e: &dimpl::Error) -> DtlsFailure {
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
        E::SecurityError(_) | E::CryptoError(_) | E::CertificateError(_) => DtlsFailure::Protocol,
        E::ConnectionClosed => DtlsFailure::PeerAlert(0),
        _ => DtlsFailure::Malformed,
    }
}

/// Why the engine's certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Generating the key or certificate failed.
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
    /// The key is not an ECDSA (P-256, P-384) or RSA key in PEM (PKCS#8, SEC1 or PKCS#1),
    /// or does not belong to the certificate. (The key's bytes never appear in this message.)
    #[error(
        "{0}: not an ECDSA or RSA private key (PKCS#8, SEC1 or PKCS#1 PEM) for this certificate"
    )]
    BadKey(String),
}

/// The engine's DTLS certificate and key, with its fingerprints. The private key is zeroized on
/// drop and never printed.
pub struct DtlsIdentity {
    pub(super) cert: dimpl::DtlsCertificate,
    pub(super) kind: KeyKind,
    fingerprint: Fingerprint,
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (RFC 5763 5: self-signed is the norm; the
    /// fingerprint in SDP is what authenticates it).
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        DtlsIdentity::generate_kind(KeyKind::Ecdsa)
    }

    /// A fresh self-signed certificate with this kind of key (RSA: 2048 bits, SHA-256).
    pub fn generate_kind(kind: KeyKind) -> Result<DtlsIdentity, IdentityError> {
        let cert = match kind {
            KeyKind::Ecdsa => dimpl::certificate::generate_self_signed_certificate()
                .map_err(|_| IdentityError::Generate)?,
            KeyKind::Rsa => generate_rsa().map_err(|_| IdentityError::Generate)?,
        };
        DtlsIdentity::from_der(cert).map_err(|()| IdentityError::Generate)
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
        let bad = || IdentityError::BadKey(key_path.to_string());
        let identity = DtlsIdentity::from_der(dimpl::DtlsCertificate {
            certificate: cert.to_vec(),
            private_key: key.secret_der().to_vec(),
        })
        .map_err(|()| bad())?;
        identity.self_check().map_err(|()| bad())?;
        Ok(identity)
    }

    /// From DER; the key's kind is read from it.
    fn from_der(cert: dimpl::DtlsCertificate) -> Result<DtlsIdentity, ()> {
        let key = openssl::pkey::PKey::private_key_from_der(&cert.private_key).map_err(|_| ())?;
        let kind = match key.id() {
            openssl::pkey::Id::RSA => KeyKind::Rsa,
            openssl::pkey::Id::EC => KeyKind::Ecdsa,
            _ => return Err(()),
        };
        let fingerprint = Fingerprint::of(HashAlg::Sha256, &cert.certificate);
        Ok(DtlsIdentity {
            cert,
            kind,
            fingerprint,
        })
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Runs one in-memory handshake against itself (OpenSSL, which takes either kind of key):
    /// proves the key signs for the certificate.
    fn self_check(&self) -> Result<(), ()> {
        let copy = DtlsIdentity {
            cert: self.cert.clone(),
            kind: self.kind,
            fingerprint: self.fingerprint.clone(),
        };
        let ctx = DtlsContext::new(Arc::new(copy), {
            DtlsOptions {
                retransmit_initial: Duration::from_millis(50),
                backend: DtlsBackend::Openssl,
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

/// A self-signed RSA 2048 certificate (SHA-256), 30 days valid from yesterday, as DER.
fn generate_rsa() -> Result<dimpl::DtlsCertificate, openssl::error::ErrorStack> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "srtp-engine")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (from, until) = (
        Asn1Time::from_unix(now - 86_400)?,
        Asn1Time::from_unix(now + 30 * 86_400)?,
    );
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(dimpl::DtlsCertificate {
        certificate: b.build().to_der()?,
        private_key: key.private_key_to_pkcs8()?,
    })
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
