//! The [`DtlsSession`] on OpenSSL (libssl's DTLS 1.2 over in-memory datagram queues): RSA and
//! ECDSA certificates on both sides, the four SRTP profiles of RFC 5764 and RFC 7714, and a
//! retransmission timer that starts at `retransmit_initial` and doubles up to `retransmit_max`.
//!
//! The session is sans-IO like the rest: datagrams in, datagrams out, a deadline. OpenSSL
//! keeps its retransmission timer on the wall clock; the session reports it as an instant on
//! the caller's clock and enforces the handshake deadline and the retransmission count itself.
//!
//! Three calls go to libssl directly (the openssl crate does not wrap them): the DTLS timer
//! callback, `DTLSv1_get_timeout` and `DTLSv1_handle_timeout`.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::raw::{c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ex_data::Index;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef,
    SslSessionCacheMode, SslStream, SslVerifyMode,
};
use openssl::x509::{X509, X509VerifyResult};
use zeroize::Zeroizing;

use super::failure::DtlsFailure;
use super::fingerprint::{DtlsRole, Fingerprint, HashAlg};
use super::record::{opens_first_flight, split_keys};
use super::types::{DtlsBackend, DtlsKeys, DtlsOptions, DtlsOptionsError, DtlsOutput, DtlsSession};
use crate::proto::srtp::Suite;

/// ECDHE with ECDSA or RSA signatures, AEAD first; the CBC suites last, for older phones.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

/// OpenSSL's names of the SRTP profiles (RFC 5764 4.1.2, RFC 7714 14.2).
pub(super) fn profile_name(suite: Suite) -> Option<&'static str> {
    Some(match suite {
        Suite::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        Suite::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
        Suite::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        Suite::AesCm128HmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
        _ => return None,
    })
}

/// The `use_srtp` list for these suites, in preference order (None: none has a profile).
pub(super) fn profile_list(suites: &[Suite]) -> Option<String> {
    let names: Vec<&str> = suites.iter().filter_map(|s| profile_name(*s)).collect();
    (!names.is_empty()).then(|| names.join(":"))
}

/// The engine-wide part: one `SSL_CTX` with the engine's certificate and key.
pub(super) struct OpensslContext {
    ctx: SslContext,
    options: DtlsOptions,
    default_profiles: String,
}

/// The retransmission schedule a session's timer callback reads.
#[derive(Clone, Copy)]
struct Schedule {
    initial_us: c_uint,
    max_us: c_uint,
}

fn schedule_index() -> Index<Ssl, Schedule> {
    static INDEX: OnceLock<Index<Ssl, Schedule>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an SSL ex_data index"))
}

unsafe extern "C" {
    // OpenSSL 1.1.1+: the DTLS retransmission timer's next value, from the previous one (0
    // for the first).
    fn DTLS_set_timer_cb(
        s: *mut openssl_sys::SSL,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::SSL, c_uint) -> c_uint>,
    );
}

/// RFC 6347 4.2.4.1: start at the initial value and double, here up to the configured cap.
unsafe extern "C" fn next_timer(s: *mut openssl_sys::SSL, previous_us: c_uint) -> c_uint {
    // SAFETY: OpenSSL calls this with the live session it belongs to; the session owns its
    // ex_data for its whole life.
    let ssl = unsafe { SslRef::from_ptr(s) };
    let sched = ssl.ex_data(schedule_index()).copied().unwrap_or(Schedule {
        initial_us: 1_000_000,
        max_us: 60_000_000,
    });
    if previous_us == 0 {
        sched.initial_us
    } else {
        previous_us.saturating_mul(2).min(sched.max_us)
    }
}

fn micros(d: Duration) -> c_uint {
    d.as_micros().min(u128::from(c_uint::MAX)) as c_uint
}

impl OpensslContext {
    /// A context for this certificate and PKCS#8 (or traditional) DER key.
    pub(super) fn new(
        cert_der: &[u8],
        key_der: &[u8],
        options: DtlsOptions,
        profiles: &[Suite],
    ) -> Result<OpensslContext, DtlsOptionsError> {
        let e = |what: &str, err: openssl::error::ErrorStack| {
            DtlsOptionsError(format!("OpenSSL: {what}: {err}"))
        };
        let cert = X509::from_der(cert_der).map_err(|x| e("the certificate", x))?;
        let key: PKey<Private> = PKey::private_key_from_der(key_der).map_err(|_| {
            DtlsOptionsError("OpenSSL: the private key is not a DER key OpenSSL reads".into())
        })?;
        let mut b = SslContextBuilder::new(SslMethod::dtls()).map_err(|x| e("SSL_CTX", x))?;
        b.set_certificate(&cert)
            .map_err(|x| e("set the certificate", x))?;
        b.set_private_key(&key).map_err(|x| e("set the key", x))?;
        b.check_private_key().map_err(|_| {
            DtlsOptionsError("OpenSSL: the private key does not belong to the certificate".into())
        })?;
        b.set_cipher_list(CIPHERS)
            .map_err(|x| e("cipher list", x))?;
        let default_profiles = profile_list(profiles)
            .ok_or_else(|| DtlsOptionsError("no DTLS-SRTP profile to offer".into()))?;
        b.set_tlsext_use_srtp(&default_profiles)
            .map_err(|x| e("use_srtp", x))?;
        // Our datagrams are queues, not a socket OpenSSL could ask for its MTU.
        b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        // Every stream's handshake is a full one: no session is resumed, so none is cached
        // (a cache of tens of thousands costs memory and a periodic scan of all of them).
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        b.set_read_ahead(true);
        Ok(OpensslContext {
            ctx: b.build(),
            options,
            default_profiles,
        })
    }

    /// A session in `role` accepting only a peer certificate that matches `remote`; `profiles`
    /// restricts the SRTP profiles (None: the engine's list).
    pub(super) fn session(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<&[Suite]>,
        now: Instant,
    ) -> Box<dyn DtlsSession> {
        match self.build(role, remote, profiles, now) {
            Ok(s) => Box::new(s),
            Err(why) => {
                tracing::warn!("DTLS session could not be made: {why}");
                Box::new(FailedSession(Some(DtlsFailure::Protocol)))
            }
        }
    }

    fn build(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<&[Suite]>,
        now: Instant,
    ) -> Result<OpensslSession, openssl::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        let list = profiles.and_then(profile_list);
        if let Some(list) = &list
            && list != &self.default_profiles
        {
            ssl.set_tlsext_use_srtp(list)?;
        }
        ssl.set_mtu(self.options.mtu as u32)?;
        ssl.set_ex_data(
            schedule_index(),
            Schedule {
                initial_us: micros(self.options.retransmit_initial),
                max_us: micros(self.options.retransmit_max),
            },
        );
        // SAFETY: the session is alive; the callback is a plain function.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(next_timer)) };
        let mismatch = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&mismatch);
        let expected = remote.clone();
        let mode = match role {
            DtlsRole::Server => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            DtlsRole::Client => SslVerifyMode::PEER,
        };
        // Self-signed certificates are the norm (RFC 5763 5): the fingerprint from signaling is
        // what authenticates the peer, checked on the certificate it presents (depth 0).
        ssl.set_verify_callback(mode, move |_, x| {
            if x.error_depth() != 0 {
                return true;
            }
            let ok = x
                .current_cert()
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| expected.matches(&der));
            if !ok {
                seen.store(true, Ordering::Relaxed);
                // Said to the peer as bad_certificate (RFC 5246 7.2: "a certificate was
                // corrupt, contained signatures that did not verify correctly, etc.").
                // SAFETY: X509_V_ERR_CERT_REJECTED is a verification result OpenSSL defines.
                let rejected =
                    unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_CERT_REJECTED) };
                x.set_error(rejected);
            }
            ok
        });
        match role {
            DtlsRole::Client => ssl.set_connect_state(),
            DtlsRole::Server => ssl.set_accept_state(),
        }
        let stream = SslStream::new(ssl, Pipe::default())?;
        let mut s = OpensslSession {
            stream,
            role,
            remote,
            mismatch,
            heard: false,
            state: State::Handshaking,
            keys: None,
            now,
            deadline: now + self.options.handshake_timeout,
            retransmits: 0,
            retransmit_count: self.options.retransmit_count,
            dropped: 0,
        };
        if role == DtlsRole::Client {
            s.drive();
        }
        Ok(s)
    }
}

/// Datagrams in and out of one session.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// Keys to hand out on the next poll.
    Concluded,
    /// A failure to report on the next poll.
    Failing(DtlsFailure),
    /// Established was reported; the session answers retransmissions of the peer's last
    /// flight.
    Established,
    /// Failed was reported.
    Failed,
}

/// The OpenSSL implementation of [`DtlsSession`].
struct OpensslSession {
    stream: SslStream<Pipe>,
    role: DtlsRole,
    remote: Fingerprint,
    /// The verify callback saw a certificate that is not the signalled one.
    mismatch: Arc<AtomicBool>,
    /// The peer's first flight has come (see [`opens_first_flight`]).
    heard: bool,
    state: State,
    keys: Option<DtlsKeys>,
    /// The caller's clock, as last told.
    now: Instant,
    deadline: Instant,
    /// Retransmissions since the peer was last heard.
    retransmits: usize,
    retransmit_count: usize,
    dropped: u64,
}

/// `DTLS_CTRL_GET_TIMEOUT` and `DTLS_CTRL_HANDLE_TIMEOUT` (ssl.h; the macros
/// `DTLSv1_get_timeout` and `DTLSv1_handle_timeout`).
const DTLS_CTRL_GET_TIMEOUT: i32 = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: i32 = 74;

impl OpensslSession {
    fn ssl_ptr(&self) -> *mut openssl_sys::SSL {
        self.stream.ssl().as_ptr()
    }

    /// OpenSSL's retransmission timer: the time left, if one runs.
    fn timer_left(&self) -> Option<Duration> {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: a live SSL and a timeval-shaped out parameter, as DTLSv1_get_timeout takes.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.ssl_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                &mut tv as *mut libc::timeval as *mut c_void,
            )
        };
        (running == 1).then(|| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        })
    }

    fn fail(&mut self, f: DtlsFailure) {
        if matches!(
            self.state,
            State::Handshaking | State::Concluded | State::Established
        ) {
            self.state = State::Failing(f);
        }
    }

    /// Runs the handshake (or, once established, reads what the peer retransmits) until
    /// OpenSSL wants more input.
    fn drive(&mut self) {
        match self.state {
            State::Handshaking => match self.stream.do_handshake() {
                Ok(()) => self.conclude(),
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(e) => {
                    let f = self.classify(&e);
                    self.fail(f);
                }
            },
            State::Concluded | State::Established => {
                // Retransmissions of the peer's last flight are answered inside SSL_read;
                // application data has no place in DTLS-SRTP and is dropped.
                let mut sink = [0u8; 256];
                for _ in 0..64 {
                    match self.stream.ssl_read(&mut sink) {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
            State::Failing(_) | State::Failed => {}
        }
    }

    fn conclude(&mut self) {
        let ssl = self.stream.ssl();
        let der = ssl.peer_certificate().and_then(|c| c.to_der().ok());
        let peer = der
            .as_deref()
            .filter(|der| self.remote.matches(der))
            .map(|der| Fingerprint::of(HashAlg::Sha256, der));
        let Some(peer) = peer else {
            self.fail(if self.mismatch.load(Ordering::Relaxed) {
                DtlsFailure::FingerprintMismatch
            } else {
                DtlsFailure::NoCertificate
            });
            return;
        };
        let Some(suite) = ssl
            .selected_srtp_profile()
            .and_then(|p| u16::try_from(p.id().as_raw()).ok())
            .and_then(Suite::from_dtls_profile)
        else {
            self.fail(DtlsFailure::NoCommonProfile);
            return;
        };
        let p = suite.params();
        let (k, s) = (p.master_key_len, p.master_salt_len);
        let mut km = Zeroizing::new(vec![0u8; 2 * (k + s)]);
        if ssl
            .export_keying_material(&mut km, "EXTRACTOR-dtls_srtp", None)
            .is_err()
        {
            self.fail(DtlsFailure::Protocol);
            return;
        }
        match split_keys(self.role, suite, &km, peer) {
            Some(keys) => {
                self.keys = Some(keys);
                self.state = State::Concluded;
            }
            None => self.fail(DtlsFailure::Protocol),
        }
    }

    /// Why OpenSSL gave up, by the reasons on its error queue (ssl/ssl_err.h).
    fn classify(&self, e: &openssl::ssl::Error) -> DtlsFailure {
        if self.mismatch.load(Ordering::Relaxed) {
            return DtlsFailure::FingerprintMismatch;
        }
        const SSL_AD_REASON_OFFSET: i32 = 1000;
        const NO_SHARED_CIPHER: i32 = 193;
        const PEER_DID_NOT_RETURN_A_CERTIFICATE: i32 = 199;
        const NO_SHARED_SIGNATURE_ALGORITHMS: i32 = 376;
        const NO_SUITABLE_SIGNATURE_ALGORITHM: i32 = 368;
        const READ_TIMEOUT_EXPIRED: i32 = 312;
        for err in e.ssl_error().map(|s| s.errors()).unwrap_or_default() {
            let r = err.reason_code();
            match r {
                _ if (SSL_AD_REASON_OFFSET..SSL_AD_REASON_OFFSET + 256).contains(&r) => {
                    return DtlsFailure::PeerAlert((r - SSL_AD_REASON_OFFSET) as u8);
                }
                NO_SHARED_CIPHER
                | NO_SHARED_SIGNATURE_ALGORITHMS
                | NO_SUITABLE_SIGNATURE_ALGORITHM => return DtlsFailure::NoCommonCipherSuite,
                PEER_DID_NOT_RETURN_A_CERTIFICATE => return DtlsFailure::NoCertificate,
                READ_TIMEOUT_EXPIRED => return DtlsFailure::Timeout,
                _ => {}
            }
        }
        DtlsFailure::Protocol
    }
}

impl DtlsSession for OpensslSession {
    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.state != State::Handshaking {
            return;
        }
        if self.now >= self.deadline {
            self.fail(DtlsFailure::Timeout);
            return;
        }
        if self.timer_left() == Some(Duration::ZERO) {
            self.retransmits += 1;
            if self.retransmits > self.retransmit_count {
                self.fail(DtlsFailure::Timeout);
                return;
            }
            // SAFETY: a live SSL; DTLSv1_handle_timeout takes no argument.
            let r = unsafe {
                openssl_sys::SSL_ctrl(
                    self.ssl_ptr(),
                    DTLS_CTRL_HANDLE_TIMEOUT,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                self.fail(DtlsFailure::Timeout);
            }
        }
    }

    fn handle_packet(&mut self, datagram: &[u8]) {
        if matches!(self.state, State::Failing(_) | State::Failed) {
            return;
        }
        // Before the peer's first flight nothing else reaches OpenSSL: junk or a forged
        // message from anyone who can reach the port would end or stall the handshake. After
        // it, OpenSSL discards invalid records itself (RFC 6347 4.1.2.7); shorter than a
        // record header is dropped here.
        if !self.heard {
            if !opens_first_flight(datagram, self.role) {
                self.dropped += 1;
                return;
            }
            self.heard = true;
        }
        if datagram.len() < 13 {
            self.dropped += 1;
            return;
        }
        self.retransmits = 0;
        self.stream.get_mut().incoming.push_back(datagram.to_vec());
        self.drive();
        self.stream.get_mut().incoming.clear();
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(p) = self.stream.get_mut().outgoing.pop_front() {
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            return DtlsOutput::Packet(&buf[..n]);
        }
        match self.state {
            State::Failing(f) => {
                self.state = State::Failed;
                DtlsOutput::Failed(f)
            }
            State::Concluded => match self.keys.take() {
                Some(k) => {
                    self.state = State::Established;
                    DtlsOutput::Established(k)
                }
                None => {
                    self.state = State::Failed;
                    DtlsOutput::Failed(DtlsFailure::Protocol)
                }
            },
            State::Handshaking => {
                let at = match self.timer_left() {
                    Some(left) => (self.now + left).min(self.deadline),
                    None => self.deadline,
                };
                DtlsOutput::Timeout(at)
            }
            State::Established | State::Failed => DtlsOutput::Timeout(far_future(self.now)),
        }
    }

    fn is_finished(&self) -> bool {
        !matches!(self.state, State::Handshaking)
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn implementation(&self) -> Option<DtlsBackend> {
        Some(DtlsBackend::Openssl)
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400)
}

/// A session that could not be made: it reports its failure once.
struct FailedSession(Option<DtlsFailure>);

impl DtlsSession for FailedSession {
    fn handle_timeout(&mut self, _: Instant) {}
    fn handle_packet(&mut self, _: &[u8]) {}
    fn poll_output<'a>(&mut self, _: &'a mut [u8]) -> DtlsOutput<'a> {
        match self.0.take() {
            Some(f) => DtlsOutput::Failed(f),
            None => DtlsOutput::Timeout(far_future(Instant::now())),
        }
    }
    fn is_finished(&self) -> bool {
        true
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn implementation(&self) -> Option<DtlsBackend> {
        Some(DtlsBackend::Openssl)
    }
}
