//! Streams: what the control layer asks for ([`StreamSpec`]), what it gets back
//! ([`StreamInfo`], [`StreamStats`]), and the per-stream state a worker keeps.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::io::SockId;
use crate::proto::pacer::{Codec, CodecProfile, RtpSource};
use crate::proto::srtp::{
    MasterKey, SrtpConfigError, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite,
};
use crate::proto::stats::{CodecImpairment, ReceiveStats, e_model};

use super::dtls::{DtlsLegStats, DtlsSpec, LegDtls, RtcpCrypto};
use super::event::{LegWatch, WatchOptions, WatchOverrides};

/// What a stream does with media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn generates(self) -> bool {
        matches!(self, Mode::Send | Mode::SendRecv)
    }

    /// Whether the stream sends its own RTCP reports. Echo does (receiver reports about what
    /// it reflects) rather than reflecting the peer's RTCP: a reflected sender report would
    /// come back as a report about the peer's own SSRC and make its round-trip time
    /// meaningless. Relay forwards RTCP between its legs instead, as an SBC does.
    pub(crate) fn reports(self) -> bool {
        matches!(self, Mode::Send | Mode::Recv | Mode::SendRecv | Mode::Echo)
    }
}

/// How a leg gets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
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

    fn suite(&self) -> Option<Suite> {
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

    fn policy(self) -> Option<SrtpPolicy> {
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
        }
    }
}

/// Why a stream request failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No stream with this id.
    #[error("no stream {0}")]
    NoSuchStream(u64),
    /// The request is inconsistent.
    #[error("invalid stream: {0}")]
    Invalid(&'static str),
    /// The codec profile is out of range.
    #[error("codec profile: {0}")]
    Profile(#[from] crate::proto::pacer::ProfileError),
    /// The local IP is not one the engine is configured with.
    #[error("local IP {0} is not configured (sockets.local_ips)")]
    UnknownLocalIp(IpAddr),
    /// No socket could be had.
    #[error(transparent)]
    Socket(#[from] crate::io::socket::SocketError),
    /// The backend refused the socket.
    #[error("I/O backend: {0}")]
    Io(#[from] std::io::Error),
    /// The keys or SRTP options are invalid.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpConfigError),
    /// Another stream already uses this remote address (and SSRC) on the shared port.
    #[error("remote {0} is already taken on the shared port (give remote_ssrc to share it)")]
    SharedRemoteTaken(SocketAddr),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The worker holds its maximum number of streams.
    #[error("worker full ({0} streams; streams.max_per_worker)")]
    WorkerFull(usize),
    /// DTLS-SRTP was asked for and the engine has no DTLS context.
    #[error("DTLS-SRTP is not configured in this engine")]
    DtlsUnavailable,
}

/// Where a created leg listens.
#[derive(Debug, Clone, Serialize)]
pub struct LegInfo {
    /// Local RTP address.
    pub local: SocketAddr,
    /// Local RTCP address (when not muxed).
    pub local_rtcp: Option<SocketAddr>,
}

/// A created stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Engine-wide stream id.
    pub id: u64,
    /// The worker that owns it.
    pub worker: usize,
    /// Its legs.
    pub legs: Vec<LegInfo>,
    /// The SSRC it sends (send and sendrecv).
    pub ssrc: Option<u32>,
    /// The engine's certificate fingerprint (`sha-256 AB:...`) when a leg uses DTLS-SRTP: what
    /// the signaling layer puts in `a=fingerprint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
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

/// Per-leg counters and quality.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LegStats {
    /// Local RTP address.
    pub local: Option<SocketAddr>,
    /// Remote RTP address in use.
    pub remote: Option<SocketAddr>,
    /// SRTP suite received / sent (`null` for plain RTP).
    pub rx_suite: Option<&'static str>,
    /// Suite sent.
    pub tx_suite: Option<&'static str>,
    /// RTP packets received that authenticated and parsed.
    pub packets_in: u64,
    /// Their bytes (as received, including SRTP overhead).
    pub bytes_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Their bytes (as sent).
    pub bytes_out: u64,
    /// RTCP packets received that authenticated.
    pub rtcp_in: u64,
    /// RTCP packets sent.
    pub rtcp_out: u64,
    /// SRTP/SRTCP authentication failures.
    pub auth_failures: u64,
    /// SRTP/SRTCP replayed packets dropped.
    pub replay_drops: u64,
    /// Datagrams that were not well-formed RTP/RTCP/SRTP.
    pub malformed: u64,
    /// Datagrams from an address other than the signalled one (strict mode).
    pub source_mismatch: u64,
    /// Other drops: unknown SSRC beyond the context's limit, ROC trouble, key lifetime
    /// reached, DTLS/STUN on a leg without them, no remote to send to.
    pub other_drops: u64,
    /// Media dropped because DTLS-SRTP has not set the keys up (handshaking) or failed.
    pub dtls_drops: u64,
    /// Datagrams that arrived while the leg waited for its keys (an offerer before the
    /// answer), dropped. The latest DTLS handshake datagram among them is also kept for the
    /// handshake the answer sets up.
    pub early_drops: u64,
    /// Plain RTCP where SRTCP belongs (the compound fills the datagram, no SRTCP index or
    /// tag), dropped: a peer that sends RTCP in the clear on an SRTP session, which RFC 3711
    /// 3.4 forbids. Counted apart from `auth_failures`, which mean wrong keys or forgery.
    pub rtcp_unprotected: u64,
    /// Packets we could not send (no send buffer, protect failure).
    pub tx_drops: u64,
    /// Times the remote address changed (learned from an authenticated packet).
    pub remote_changes: u64,
    /// The peer's SSRC (the latest seen).
    pub remote_ssrc: Option<u32>,
    /// RFC 3550 A.3: expected packets.
    pub expected: u64,
    /// RFC 3550 A.3: packets counted as received.
    pub received: u64,
    /// RFC 3550 A.3: cumulative lost.
    pub lost: i64,
    /// Loss in percent of expected.
    pub loss_percent: f64,
    /// Interarrival jitter in ms (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// Reordered packets.
    pub reordered: u64,
    /// Duplicates (plain RTP; SRTP duplicates are replay drops).
    pub duplicated: u64,
    /// Packets far behind the highest sequence number.
    pub late: u64,
    /// Round-trip time from RTCP (ms).
    pub rtt_ms: Option<f64>,
    /// E-model R factor.
    pub r_factor: f64,
    /// E-model MOS.
    pub mos: f64,
    /// DTLS-SRTP handshake state (legs keyed by DTLS only; boxed: every leg carries this
    /// struct, most without DTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls: Option<Box<DtlsLegStats>>,
}

/// A stream's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    /// Stream id.
    pub id: u64,
    /// Mode.
    pub mode: Mode,
    /// Whether generation is paused.
    pub paused: bool,
    /// RTP packets generated.
    pub generated: u64,
    /// Pacing periods skipped because the worker fell far behind.
    pub pacing_skips: u64,
    /// Per-leg figures.
    pub legs: Vec<LegStats>,
}

/// What a leg counts as packets pass: the per-packet part of [`LegStats`] (128 bytes of the
/// leg's struct instead of [`LegStats`]' 320; the rest is computed when statistics are asked
/// for).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegCounters {
    pub(crate) rx_suite: Option<Suite>,
    pub(crate) tx_suite: Option<Suite>,
    pub(crate) remote_ssrc: Option<u32>,
    pub(crate) packets_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) rtcp_in: u64,
    pub(crate) rtcp_out: u64,
    pub(crate) auth_failures: u64,
    pub(crate) replay_drops: u64,
    pub(crate) malformed: u64,
    pub(crate) source_mismatch: u64,
    pub(crate) other_drops: u64,
    pub(crate) dtls_drops: u64,
    pub(crate) early_drops: u64,
    pub(crate) rtcp_unprotected: u64,
    pub(crate) tx_drops: u64,
    pub(crate) remote_changes: u64,
}

/// The worker's state for one leg.
pub(crate) struct Leg {
    pub(crate) rtp_sock: SockId,
    pub(crate) rtcp_sock: Option<SockId>,
    pub(crate) shared: Option<usize>,
    pub(crate) local: SocketAddr,
    pub(crate) local_rtcp: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) remote_rtcp: Option<SocketAddr>,
    pub(crate) signalled: Option<SocketAddr>,
    pub(crate) connected: bool,
    pub(crate) strict: bool,
    /// Waiting for its keys ([`LegSpec::pending`]): nothing passes either way.
    pub(crate) pending: bool,
    pub(crate) remote_ssrc_key: Option<u32>,
    pub(crate) rx: Option<SrtpInbound>,
    pub(crate) tx: Option<SrtpOutbound>,
    pub(crate) counters: LegCounters,
    pub(crate) recv: ReceiveStats,
    /// LSR of the last SR received and when (ns).
    pub(crate) last_sr: Option<(u32, u64)>,
    pub(crate) rtt_ns: Option<u64>,
    /// Event state (silence, failures reported, key lifetime).
    pub(crate) watch: LegWatch,
    /// DTLS-SRTP state (None: SDES or plain).
    pub(crate) dtls: Option<Box<LegDtls>>,
    /// SRTCP contexts of an RTCP port keyed by its own DTLS handshake (no rtcp-mux).
    pub(crate) rtcp_crypto: Option<Box<RtcpCrypto>>,
    /// The last DTLS handshake datagram that reached this leg while it waited for its keys:
    /// an SDP offerer with `a=setup:actpass` gets the answerer's ClientHello before the answer
    /// (RFC 5763 5), and hands it to the handshake the answer sets up instead of waiting a
    /// retransmission (1 s) for it.
    pub(crate) early_dtls: Option<Box<EarlyDtls>>,
}

/// A DTLS datagram held for a handshake not set up yet.
#[derive(Debug)]
pub(crate) struct EarlyDtls {
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
}

impl Leg {
    pub(crate) fn new(
        spec_tx: Crypto,
        spec_rx: Crypto,
        local: SocketAddr,
    ) -> Result<Leg, SrtpConfigError> {
        let mut leg = Leg {
            rtp_sock: 0,
            rtcp_sock: None,
            shared: None,
            local,
            local_rtcp: None,
            remote: None,
            remote_rtcp: None,
            signalled: None,
            connected: false,
            strict: false,
            pending: false,
            remote_ssrc_key: None,
            rx: None,
            tx: None,
            counters: LegCounters::default(),
            recv: ReceiveStats::new(),
            last_sr: None,
            rtt_ns: None,
            watch: LegWatch::default(),
            dtls: None,
            rtcp_crypto: None,
            early_dtls: None,
        };
        leg.rekey(spec_tx, spec_rx)?;
        Ok(leg)
    }

    /// Sets the crypto of both directions (at creation, and for a rekey: counters stay). Both
    /// contexts are built before either is replaced, so a bad key changes nothing.
    pub(crate) fn rekey(&mut self, tx: Crypto, rx: Crypto) -> Result<(), SrtpConfigError> {
        let tx_suite = tx.suite();
        let rx_suite = rx.suite();
        let new_tx = tx.policy().map(SrtpOutbound::new).transpose()?;
        let new_rx = rx.policy().map(SrtpInbound::new).transpose()?;
        self.tx = new_tx;
        self.rx = new_rx;
        // SDES keys replace any DTLS keying.
        self.dtls = None;
        self.rtcp_crypto = None;
        self.counters.tx_suite = tx_suite;
        self.counters.rx_suite = rx_suite;
        Ok(())
    }

    /// Whether media of this kind may pass: always, unless the leg waits for its keys, or
    /// DTLS-SRTP has not (or could not) set them up.
    #[inline]
    pub(crate) fn media_open(&self, rtcp_port: bool) -> bool {
        !self.pending && self.dtls.as_ref().is_none_or(|d| d.open(rtcp_port))
    }

    /// The context that unprotects what arrives on this port.
    #[inline]
    pub(crate) fn rx_for(&mut self, rtcp_port: bool) -> Option<&mut SrtpInbound> {
        match (&mut self.rtcp_crypto, rtcp_port) {
            (Some(c), true) => Some(&mut c.rx),
            _ => self.rx.as_mut(),
        }
    }

    /// The context that protects RTCP this leg sends (on its RTCP port when it has one).
    #[inline]
    pub(crate) fn rtcp_tx(&mut self) -> Option<&mut SrtpOutbound> {
        match (&mut self.rtcp_crypto, self.rtcp_sock.is_some()) {
            (Some(c), true) => Some(&mut c.tx),
            _ => self.tx.as_mut(),
        }
    }

    /// Where RTCP goes: the RTCP socket and remote when not muxed.
    pub(crate) fn rtcp_target(&self) -> (SockId, Option<SocketAddr>) {
        match self.rtcp_sock {
            Some(s) => (s, self.remote_rtcp),
            None => (self.rtp_sock, self.remote),
        }
    }
}

/// The worker's state for one stream.
pub(crate) struct Stream {
    pub(crate) id: u64,
    pub(crate) mode: Mode,
    pub(crate) codec: CodecProfile,
    pub(crate) legs: Vec<Leg>,
    pub(crate) source: Option<RtpSource>,
    pub(crate) rtcp_interval_ns: u64,
    pub(crate) paused: bool,
    /// Our SSRC in reports when we do not send RTP.
    pub(crate) report_ssrc: u32,
    /// Whether a pacing timer is in the wheel (at most one at a time).
    pub(crate) pace_pending: bool,
    /// What the event sweep watches for.
    pub(crate) watch: WatchOptions,
}

impl Stream {
    pub(crate) fn generates(&self) -> bool {
        self.mode.generates() && !self.paused
    }

    /// Whether the stream expects media in (silence matters).
    pub(crate) fn receives(&self) -> bool {
        self.mode != Mode::Send
    }

    pub(crate) fn reports(&self) -> bool {
        self.mode.reports() && self.rtcp_interval_ns > 0
    }

    pub(crate) fn our_ssrc(&self) -> u32 {
        self.source
            .as_ref()
            .map_or(self.report_ssrc, RtpSource::ssrc)
    }

    pub(crate) fn stats(&mut self) -> StreamStats {
        let codec = self.codec;
        StreamStats {
            id: self.id,
            mode: self.mode,
            paused: self.paused,
            generated: self.source.as_ref().map_or(0, |s| s.packets),
            pacing_skips: self.source.as_ref().map_or(0, |s| s.skipped_periods),
            legs: self.legs.iter_mut().map(|l| leg_stats(l, &codec)).collect(),
        }
    }
}

fn leg_stats(leg: &mut Leg, codec: &CodecProfile) -> LegStats {
    let c = leg.counters;
    let mut s = LegStats {
        local: Some(leg.local),
        remote: leg.remote,
        rx_suite: c.rx_suite.map(Suite::sdp_name),
        tx_suite: c.tx_suite.map(Suite::sdp_name),
        packets_in: c.packets_in,
        bytes_in: c.bytes_in,
        packets_out: c.packets_out,
        bytes_out: c.bytes_out,
        rtcp_in: c.rtcp_in,
        rtcp_out: c.rtcp_out,
        auth_failures: c.auth_failures,
        replay_drops: c.replay_drops,
        malformed: c.malformed,
        source_mismatch: c.source_mismatch,
        other_drops: c.other_drops,
        dtls_drops: c.dtls_drops,
        early_drops: c.early_drops,
        rtcp_unprotected: c.rtcp_unprotected,
        tx_drops: c.tx_drops,
        remote_changes: c.remote_changes,
        remote_ssrc: c.remote_ssrc,
        ..LegStats::default()
    };
    let r = leg.recv.report(false);
    s.expected = r.expected;
    s.received = r.received;
    s.lost = r.lost;
    s.loss_percent = if r.expected == 0 {
        0.0
    } else {
        (r.lost.max(0) as f64) * 100.0 / r.expected as f64
    };
    s.jitter_ms = f64::from(r.jitter) * 1000.0 / f64::from(codec.clock_rate());
    s.reordered = leg.recv.reordered;
    s.duplicated = leg.recv.duplicated;
    s.late = leg.recv.late;
    s.rtt_ms = leg.rtt_ns.map(|n| n as f64 / 1e6);
    // Mouth-to-ear: half the RTT (when known), a jitter buffer of twice the jitter, and one
    // packet time of packetization.
    let delay = s.rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * s.jitter_ms + f64::from(codec.ptime_ms);
    let impairment = match codec.codec {
        Codec::Pcmu | Codec::Pcma => CodecImpairment::G711_PLC,
        Codec::G722 => CodecImpairment::G722,
        Codec::Opus | Codec::Video => CodecImpairment::OPUS_ESTIMATE,
    };
    let q = e_model(impairment, delay, s.loss_percent, 1.0);
    s.r_factor = q.r_factor;
    s.mos = q.mos;
    s.dtls = leg.dtls.as_ref().map(|d| Box::new(d.stats()));
    s
}
