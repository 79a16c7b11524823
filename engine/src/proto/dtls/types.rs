//! What the worker sees of a handshake: the [`DtlsSession`] trait, its outputs and keys, the
//! timings every session runs by, and the profiles a handshake can negotiate.

use std::fmt;
use std::time::{Duration, Instant};

use super::failure::DtlsFailure;
use super::fingerprint::Fingerprint;
use crate::proto::srtp::{MasterKey, Suite};

/// The suites a handshake can negotiate (RFC 5764 4.1.2, RFC 7714 14.2), in the order we
/// prefer them. The dimpl backend has no `AES_CM_128_HMAC_SHA1_32`.
pub const PROFILES: [Suite; 4] = [
    Suite::AeadAes256Gcm,
    Suite::AeadAes128Gcm,
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
];

/// Which DTLS implementation runs the handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsBackend {
    /// Per peer: dimpl for a peer that speaks only ECDSA, OpenSSL for any other. As a server,
    /// by the ClientHello (dimpl when it offers only ECDHE-ECDSA suites and a profile dimpl
    /// has); as a client, dimpl's ClientHello first and OpenSSL's when the peer refuses it
    /// (no cipher suite or profile in common). A stream restricted to some profiles, or an
    /// RSA certificate of ours, runs on OpenSSL.
    #[default]
    Auto,
    /// OpenSSL's libssl: RSA and ECDSA certificates on both sides, the four profiles, a capped
    /// retransmission timer. Meets any peer; about a third of dimpl's handshake rate.
    Openssl,
    /// dimpl (pure Rust): ECDSA certificates only, on both sides, and three profiles; its
    /// retransmission timer doubles without a cap. Peers with RSA certificates fail.
    Dimpl,
}

impl DtlsBackend {
    /// The name in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DtlsBackend::Auto => "auto",
            DtlsBackend::Openssl => "openssl",
            DtlsBackend::Dimpl => "dimpl",
        }
    }
}

/// The kind of key of the engine's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// ECDSA P-256 (or P-384 when loaded).
    #[default]
    Ecdsa,
    /// RSA (2048 bits when generated).
    Rsa,
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
    /// The most a retransmission timeout grows to (RFC 6347 4.2.4.1 doubles it; a cap keeps
    /// a handshake on a lossy path from waiting longer and longer). OpenSSL backend only.
    pub retransmit_max: Duration,
    /// Retransmissions per flight before the handshake fails.
    pub retransmit_count: usize,
    /// How long a server keeps its session after the handshake, to answer a client whose
    /// last flight it already took but whose answer was lost (RFC 6347 4.2.4); it is released
    /// earlier by the first authenticated SRTP packet from the peer. It lasts at least until
    /// the handshake's start plus `handshake_timeout`, while the client may still be retrying.
    pub linger: Duration,
    /// Largest DTLS datagram.
    pub mtu: usize,
    /// The implementation.
    pub backend: DtlsBackend,
}

impl Default for DtlsOptions {
    fn default() -> DtlsOptions {
        DtlsOptions {
            handshake_timeout: Duration::from_secs(20),
            retransmit_initial: Duration::from_secs(1),
            retransmit_max: Duration::from_secs(4),
            retransmit_count: 5,
            linger: Duration::from_secs(10),
            mtu: 1150,
            backend: DtlsBackend::Auto,
        }
    }
}

/// The options were refused by the DTLS implementation.
#[derive(Debug, thiserror::Error)]
#[error("DTLS options: {0}")]
pub struct DtlsOptionsError(pub(super) String);

/// What a handshake produced: the negotiated suite and the master key of each direction.
pub struct DtlsKeys {
    /// The negotiated SRTP protection profile as our suite.
    pub suite: Suite,
    /// The key we protect with (client_write for a client, RFC 5764 4.2).
    pub local: MasterKey,
    /// The key we unprotect with.
    pub remote: MasterKey,
    /// The sha-256 fingerprint of the certificate the peer presented (it matched the one from
    /// signaling; this says whose it is, e.g. an SBC's that terminated DTLS).
    pub peer: Fingerprint,
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
    /// The implementation running the handshake (None: not chosen yet).
    fn implementation(&self) -> Option<DtlsBackend>;
}
