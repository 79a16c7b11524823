//! The `auto` backend: one [`DtlsSession`] that runs on dimpl when the peer speaks only ECDSA
//! and on OpenSSL otherwise, so that engines meet each other at dimpl's speed and any other
//! peer (an RSA phone, an SBC) still completes.
//!
//! - As a server, the choice waits for the peer's ClientHello: dimpl when every cipher suite
//!   it offers is one dimpl serves (ECDHE-ECDSA with AES-GCM or ChaCha20) and it offers a
//!   profile dimpl has; OpenSSL for anything else, or a ClientHello too fragmented to read. A
//!   client that offers RSA suites may hold an RSA certificate, which only OpenSSL verifies.
//! - As a client, dimpl's ClientHello (ECDSA suites only, three profiles) goes first; when the
//!   peer refuses it (a `handshake_failure` or `insufficient_security` alert, no common cipher
//!   suite), OpenSSL's goes next, within the same deadline. A server with only
//!   `AES_CM_128_HMAC_SHA1_32` completes without a profile (`no_common_profile`): a stream
//!   restricted to profiles runs on OpenSSL from the start.
//!
//! Every server session on OpenSSL goes through here too (with dimpl out of the choice): a
//! ClientHello refused for its cipher suites or profiles (an `auto` client's first offer to an
//! RSA server of ours) is answered with the alert and the session waits for the next
//! ClientHello, a few times, instead of failing the stream.

use std::sync::Arc;
use std::time::Instant;

use super::failure::DtlsFailure;
use super::fingerprint::{DtlsRole, Fingerprint};
use super::record::opens_first_flight;
use super::types::{DtlsBackend, DtlsKeys, DtlsOutput, DtlsSession};
use crate::proto::srtp::Suite;

/// TLS cipher suites dimpl 0.9 serves in DTLS 1.2: ECDHE_ECDSA with AES_128_GCM_SHA256,
/// AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256.
const DIMPL_SUITES: [u16; 3] = [0xC02B, 0xC02C, 0xCCA9];
/// Signalling values that are no cipher suite: the renegotiation SCSV and the fallback SCSV.
const SCSV: [u16; 2] = [0x00FF, 0x5600];
/// DTLS-SRTP profiles dimpl has (RFC 5764 4.1.2, RFC 7714 14.2).
const DIMPL_PROFILES: [u16; 3] = [0x0001, 0x0007, 0x0008];

/// Whether a ClientHello (the whole first datagram) is one dimpl can serve: see the module.
pub(super) fn dimpl_serves(datagram: &[u8]) -> bool {
    read_client_hello(datagram).unwrap_or(false)
}

fn read_client_hello(d: &[u8]) -> Option<bool> {
    // RFC 6347 4.1 record header (13), 4.2.2 handshake header (12).
    let h = d.get(13..25)?;
    let length = u32::from_be_bytes([0, h[1], h[2], h[3]]);
    let frag_len = u32::from_be_bytes([0, h[9], h[10], h[11]]);
    if h[0] != 1 || frag_len != length {
        return None;
    }
    let body = d.get(25..25 + length as usize)?;
    let mut r = Reader(body);
    r.skip(2 + 32)?; // client_version, random
    let n = usize::from(r.u8()?);
    r.skip(n)?; // session_id
    let n = usize::from(r.u8()?);
    r.skip(n)?; // cookie
    let suites = r.vec16()?;
    let mut any = false;
    for s in suites
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
    {
        // GREASE values (RFC 8701) are 0x?A?A.
        let grease = s & 0x0F0F == 0x0A0A && s >> 12 == (s >> 4) & 0xF;
        if SCSV.contains(&s) || grease {
            continue;
        }
        if !DIMPL_SUITES.contains(&s) {
            return Some(false);
        }
        any = true;
    }
    let n = usize::from(r.u8()?);
    r.skip(n)?; // compression methods
    let mut ext = Reader(r.vec16()?);
    let mut profile = false;
    while let (Some(kind), Some(len)) = (ext.u16(), ext.u16()) {
        let data = ext.take(usize::from(len))?;
        if kind == 14 {
            // use_srtp: a list of 2-byte profiles, then the MKI.
            let mut u = Reader(data);
            let list = u.vec16()?;
            profile = list
                .chunks_exact(2)
                .any(|c| DIMPL_PROFILES.contains(&u16::from_be_bytes([c[0], c[1]])));
        }
    }
    Some(any && profile)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 2-byte length (RFC 5246 4.3).
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// A fatal alert record of epoch 0 (RFC 6347 4.1, RFC 5246 7.2) that refuses an offer:
/// `handshake_failure` or `insufficient_security`.
fn refusal(d: &[u8]) -> Option<DtlsFailure> {
    let is_alert = d.len() >= 15 && d[0] == 21 && d[3..5] == [0, 0] && d[11..13] == [0, 2];
    (is_alert && d[13] == 2 && matches!(d[14], 40 | 71)).then_some(DtlsFailure::PeerAlert(d[14]))
}

/// What a client's refusal looks like when it is about the implementation, not the peer's
/// certificate or the path: worth a second ClientHello from OpenSSL.
fn another_implementation_may_do(f: DtlsFailure) -> bool {
    // Not a missing profile: that shows only once the handshake has completed without one,
    // and a server holds its association then (a stream restricted to profiles runs on
    // OpenSSL from the start).
    matches!(
        f,
        DtlsFailure::PeerAlert(40 | 71) | DtlsFailure::NoCommonCipherSuite
    )
}

/// What makes the sessions an auto session chooses between (the context's implementations).
pub(super) trait SessionMaker: Send + Sync {
    /// A dimpl session, if dimpl is there (an ECDSA identity).
    fn dimpl(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        now: Instant,
    ) -> Option<Box<dyn DtlsSession>>;
    /// An OpenSSL session, if OpenSSL is there.
    fn openssl(
        &self,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<&[Suite]>,
        now: Instant,
    ) -> Option<Box<dyn DtlsSession>>;
    /// Whether dimpl is there.
    fn has_dimpl(&self) -> bool;
}

/// One output of the inner session, owned (no borrow of the buffer kept).
enum Got {
    Packet(usize, usize),
    Established(DtlsKeys),
    Failed(DtlsFailure),
    Timeout(Instant),
}

/// The auto session: see the module.
pub(super) struct AutoSession {
    engines: Arc<dyn SessionMaker>,
    role: DtlsRole,
    remote: Fingerprint,
    /// The stream's profile restriction (OpenSSL only).
    profiles: Option<Vec<Suite>>,
    /// dimpl may run the handshake.
    use_dimpl: bool,
    /// Server: ClientHellos refused and waited past.
    restarts: u8,
    inner: Option<Box<dyn DtlsSession>>,
    /// The client went over to OpenSSL.
    fell_back: bool,
    /// The client heard the server's first flight.
    heard: bool,
    now: Instant,
    deadline: Instant,
    /// Junk before a server's first ClientHello.
    dropped: u64,
    failing: Option<DtlsFailure>,
    failed: bool,
}

impl AutoSession {
    pub(super) fn start(
        engines: Arc<dyn SessionMaker>,
        role: DtlsRole,
        remote: Fingerprint,
        profiles: Option<Vec<Suite>>,
        now: Instant,
        deadline: Instant,
    ) -> Box<dyn DtlsSession> {
        let use_dimpl = engines.has_dimpl() && profiles.is_none();
        let inner = match role {
            DtlsRole::Client if use_dimpl => engines.dimpl(role, remote.clone(), now),
            DtlsRole::Client => engines.openssl(role, remote.clone(), profiles.as_deref(), now),
            DtlsRole::Server => None,
        };
        Box::new(AutoSession {
            engines,
            role,
            remote,
            profiles,
            use_dimpl,
            restarts: 0,
            inner,
            fell_back: false,
            heard: false,
            now,
            deadline,
            dropped: 0,
            failing: None,
            failed: false,
        })
    }

    /// The peer refused dimpl's offer (an RSA-only server, or a profile dimpl lacks):
    /// OpenSSL's ClientHello offers both kinds and all four profiles.
    fn fall_back(&mut self, f: DtlsFailure) {
        self.fell_back = true;
        tracing::debug!("DTLS: the peer refused dimpl's ClientHello ({f}); OpenSSL next");
        self.inner = self.openssl();
        if self.inner.is_none() {
            self.failing = Some(f);
        }
    }

    fn openssl(&self) -> Option<Box<dyn DtlsSession>> {
        self.engines.openssl(
            self.role,
            self.remote.clone(),
            self.profiles.as_deref(),
            self.now,
        )
    }
}

impl DtlsSession for AutoSession {
    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        match &mut self.inner {
            Some(s) => s.handle_timeout(now),
            None if self.now >= self.deadline && !self.failed => {
                self.failing = Some(DtlsFailure::Timeout);
            }
            None => {}
        }
    }

    fn handle_packet(&mut self, datagram: &[u8]) {
        if self.inner.is_none() && !self.failed {
            if !opens_first_flight(datagram, DtlsRole::Server) {
                self.dropped += 1;
                return;
            }
            let dimpl = self.use_dimpl && dimpl_serves(datagram);
            let remote = self.remote.clone();
            self.inner = if dimpl {
                self.engines.dimpl(DtlsRole::Server, remote, self.now)
            } else {
                self.openssl()
            };
            if self.inner.is_none() {
                self.failing = Some(DtlsFailure::Protocol);
                return;
            }
        }
        if self.role == DtlsRole::Client && self.use_dimpl && !self.fell_back && !self.heard {
            // An RSA-only server refuses dimpl's ClientHello with a fatal alert before any
            // flight of its own; dimpl's session, rightly, takes nothing but a first flight
            // then. The alert is read here and OpenSSL offers next.
            if let Some(f) = refusal(datagram) {
                self.fall_back(f);
                return;
            }
            self.heard = opens_first_flight(datagram, DtlsRole::Client);
        }
        if let Some(s) = &mut self.inner {
            s.handle_packet(datagram);
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        loop {
            if let Some(f) = self.failing.take() {
                self.failed = true;
                return DtlsOutput::Failed(f);
            }
            let Some(s) = &mut self.inner else {
                return DtlsOutput::Timeout(self.deadline);
            };
            let base = buf.as_ptr() as usize;
            let got = match s.poll_output(buf) {
                DtlsOutput::Packet(p) => Got::Packet(p.as_ptr() as usize - base, p.len()),
                DtlsOutput::Established(k) => Got::Established(k),
                DtlsOutput::Failed(f) => Got::Failed(f),
                DtlsOutput::Timeout(t) => Got::Timeout(t),
            };
            match got {
                Got::Packet(off, len) => return DtlsOutput::Packet(&buf[off..off + len]),
                Got::Established(k) => return DtlsOutput::Established(k),
                Got::Timeout(t) => return DtlsOutput::Timeout(t.min(self.deadline)),
                Got::Failed(f)
                    if self.role == DtlsRole::Server
                        && self.restarts < 3
                        && self.now < self.deadline
                        && f == DtlsFailure::NoCommonCipherSuite =>
                {
                    // The alert went out with the refusal; the peer may offer again.
                    self.restarts += 1;
                    self.inner = None;
                }
                Got::Failed(f)
                    if self.role == DtlsRole::Client
                        && self.use_dimpl
                        && !self.fell_back
                        && self.now < self.deadline
                        && another_implementation_may_do(f) =>
                {
                    self.fall_back(f);
                }
                Got::Failed(f) => {
                    self.failed = true;
                    return DtlsOutput::Failed(f);
                }
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.failed || self.inner.as_ref().is_some_and(|s| s.is_finished())
    }

    fn dropped(&self) -> u64 {
        self.dropped + self.inner.as_ref().map_or(0, |s| s.dropped())
    }

    fn implementation(&self) -> Option<DtlsBackend> {
        self.inner.as_ref().and_then(|s| s.implementation())
    }
}
