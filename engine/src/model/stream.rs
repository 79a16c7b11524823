//! What a control client asks of a stream: its mode, legs, crypto and event thresholds
//! ([`StreamSpec`]), and later changes to it ([`StreamUpdate`]).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::proto::dtls::{DtlsRole, Fingerprint};
use crate::proto::pacer::{Codec, CodecProfile};
use crate::proto::srtp::{MasterKey, SrtpConfigError, SrtpPolicy, Suite};

/// What a stream does with media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Generate RTP at codec pace (and RTCP sender reports); ignore incoming RTP.
    Send,
    /// Sink: receive, unprotect and measure (and send RTCP receiver reports).
    Recv,
    /// An endpoint in a call: both of the above.
    #[serde(rename = "sendrecv")]
    SendRecv,
    /// Unprotect each RTP packet, re-protect it with the stream's own keys, send it back; RTCP
    /// is consumed and answered with the stream's own receiver reports.
    Echo,
    /// Two legs with independent crypto: what arrives on one is sent out of the other.
    Relay,
}

impl Mode {
    /// The name used in configs, replies and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Send => "send",
            Mode::Recv => "recv",
            Mode::SendRecv => "sendrecv",
            Mode::Echo => "echo",
            Mode::Relay => "relay",
        }
    }

    /// All modes, in metric order.
    pub const ALL: [Mode; 5] = [
        Mode::Send,
        Mode::Recv,
        Mode::SendRecv,
        Mode::Echo,
        Mode::Relay,
    ];

    /// The mode's place in [`Mode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the stream generates RTP (send and sendrecv).
    pub fn generates(self) -> bool {
        matches!(self, Mode::Send | Mode::SendRecv)
    }

    /// Whether the stream sends its own RTCP reports. Echo does (receiver reports about what
    /// it reflects) rather than reflecting the peer's RTCP: a reflected sender report would
    /// come back as a report about the peer's own SSRC and make its round-trip time
    /// meaningless. Relay forwards RTCP between its legs instead, as an SBC does.
    pub fn reports(self) -> bool {
        matches!(self, Mode::Send | Mode::Recv | Mode::SendRecv | Mode::Echo)
    }
}

/// How a leg gets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketModel {
    /// A socket (or an RTP/RTCP pair) of its own, connected to the peer once the peer is known.
    #[default]
    PerStream,
    /// The worker's shared port on the local IP: streams are told apart by remote address (and
    /// by SSRC when several streams share a remote address). RTCP must be muxed.
    Shared,
}

/// Crypto of one direction of a leg.
#[derive(Debug, Default)]
pub enum Crypto {
    /// Plain RTP/RTCP.
    #[default]
    None,
    /// SRTP/SRTCP with keys from SDES (RFC 4568): the suite, the master keys (several only
    /// with MKIs), the replay window and key derivation rate. Its Debug shows the suite and
    /// MKIs, never key material.
    Sdes(SrtpPolicy),
}

impl Crypto {
    /// SDES crypto with one master key from `key || salt`.
    pub fn sdes(suite: Suite, key_and_salt: &[u8]) -> Result<Crypto, SrtpConfigError> {
        Ok(Crypto::Sdes(SrtpPolicy::new(
            suite,
            MasterKey::new(suite, key_and_salt)?,
        )))
    }

    /// The suite, when SDES keys are given.
    pub fn suite(&self) -> Option<Suite> {
        match self {
            Crypto::None => None,
            Crypto::Sdes(p) => Some(p.suite()),
        }
    }

    /// Checks the keys and options as creating the stream would.
    pub fn check(&self) -> Result<(), SrtpConfigError> {
        match self {
            Crypto::None => Ok(()),
            Crypto::Sdes(p) => p.check(),
        }
    }

    /// The SRTP policy, when SDES keys are given.
    pub fn policy(self) -> Option<SrtpPolicy> {
        match self {
            Crypto::None => None,
            Crypto::Sdes(p) => Some(p),
        }
    }
}

/// One leg of a stream: a local socket, a peer, and the crypto of each direction.
#[derive(Debug, Default)]
pub struct LegSpec {
    /// Local IP to bind on (default: the first configured local IP).
    pub local_ip: Option<IpAddr>,
    /// The peer's RTP address as signalled (learned from the first authenticated packet
    /// when absent).
    pub remote: Option<SocketAddr>,
    /// The peer's RTCP address when RTCP is not muxed (default: RTP port + 1).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP on one port (RFC 5761).
    pub rtcp_mux: bool,
    /// Socket model.
    pub socket: SocketModel,
    /// Drop everything not from the signalled address (default from the engine config).
    pub strict_source: Option<bool>,
    /// The peer's SSRC, to tell apart streams that share a remote address on a shared port.
    pub remote_ssrc: Option<u32>,
    /// Crypto for what this leg sends.
    pub tx: Crypto,
    /// Crypto for what this leg receives.
    pub rx: Crypto,
    /// DTLS-SRTP instead of `tx`/`rx` (which must then be [`Crypto::None`]): the handshake
    /// runs on the leg's port(s) and keys both directions.
    pub dtls: Option<DtlsSpec>,
    /// The keys come with a later update (an SDP offerer waiting for its answer): until then
    /// the leg sends nothing, and drops what arrives (counted as `early_drops`) without
    /// learning the peer's address from it. `tx`/`rx` must be [`Crypto::None`].
    pub pending: bool,
}

/// A stream to create.
#[derive(Debug)]
pub struct StreamSpec {
    /// What the stream does.
    pub mode: Mode,
    /// One leg, or two for relay.
    pub legs: Vec<LegSpec>,
    /// What it sends (send and sendrecv) and how quality is scored.
    pub codec: CodecProfile,
    /// Mean RTCP report interval in ms (RFC 3550 6.3.1 randomizes it by 0.5-1.5); 0 disables
    /// reports.
    pub rtcp_interval_ms: u32,
    /// Silence and authentication-failure thresholds for events (unset: the engine's).
    pub watch: WatchOverrides,
    /// Created paused: no RTP until an update resumes it.
    pub paused: bool,
}

impl StreamSpec {
    /// A single-leg stream with PCMU and a 5 s RTCP interval.
    pub fn new(mode: Mode, leg: LegSpec) -> StreamSpec {
        StreamSpec {
            mode,
            legs: vec![leg],
            codec: CodecProfile::default_for(Codec::Pcmu),
            rtcp_interval_ms: 5000,
            watch: WatchOverrides::default(),
            paused: false,
        }
    }
}

/// A change to a live stream.
#[derive(Debug, Default)]
pub struct StreamUpdate {
    /// New remote address per leg (index, address).
    pub remote: Option<(usize, SocketAddr)>,
    /// New crypto for a leg (index, tx, rx): a rekey.
    pub crypto: Option<(usize, Crypto, Crypto)>,
    /// Pause (true) or resume (false) generation.
    pub paused: Option<bool>,
    /// New mode among send, recv and sendrecv (direction change, e.g. hold).
    pub mode: Option<Mode>,
    /// A new DTLS-SRTP handshake for a leg (index, spec), e.g. after a re-offer with a new
    /// fingerprint: media stops until it completes.
    pub dtls: Option<(usize, DtlsSpec)>,
    /// A leg (index) that multiplexes RTCP from now on: its RTCP port closes.
    pub rtcp_mux: Option<usize>,
    /// New peer RTCP address for a leg with its own RTCP port (index, address).
    pub remote_rtcp: Option<(usize, SocketAddr)>,
    /// Another codec (a re-offer picked it): the stream keeps its SSRC and sequence.
    pub codec: Option<CodecProfile>,
}

/// A leg's DTLS-SRTP request: our role and the peer's certificate fingerprint from SDP.
#[derive(Debug, Clone)]
pub struct DtlsSpec {
    /// Our role (`a=setup:active` is client).
    pub role: DtlsRole,
    /// The peer's certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// The SRTP profiles the handshake may negotiate, in preference order (None: the
    /// engine's).
    pub profiles: Option<Vec<Suite>>,
}

/// What a stream watches for (from its spec or the engine's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Silence timeout, ms (0: never report silence).
    pub silence_ms: u32,
    /// Authentication failures that make an event (0: never).
    pub auth_failure_threshold: u32,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            silence_ms: 5000,
            auth_failure_threshold: 10,
        }
    }
}

/// A stream's own thresholds; what it leaves out comes from the engine's [`WatchOptions`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOverrides {
    /// Silence timeout, ms (0: never).
    pub silence_ms: Option<u32>,
    /// Authentication failures per event (0: never).
    pub auth_failure_threshold: Option<u32>,
}

impl WatchOptions {
    /// These defaults with a stream's overrides applied.
    pub fn with(self, o: WatchOverrides) -> WatchOptions {
        WatchOptions {
            silence_ms: o.silence_ms.unwrap_or(self.silence_ms),
            auth_failure_threshold: o
                .auth_failure_threshold
                .unwrap_or(self.auth_failure_threshold),
        }
    }
}
