//! What a stream reports: where it listens ([`StreamInfo`]) and what it counted and measured
//! ([`StreamStats`]). These are the control protocol's reply types, read by clients as they
//! are written by the engine.

use std::borrow::Cow;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::counters::DropCounts;
use super::stream::Mode;
use crate::proto::dtls::{DtlsBackend, DtlsFailureReason, DtlsRole};
use crate::proto::srtp::Suite;

/// Where a created leg listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegInfo {
    /// Local RTP address.
    pub local: SocketAddr,
    /// Local RTCP address (when not muxed).
    pub local_rtcp: Option<SocketAddr>,
}

/// A created stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Where a handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtlsState {
    /// Not finished: media waits.
    Handshaking,
    /// Done and the fingerprint matched: the SRTP keys are in place.
    Established,
    /// Failed: no media passes until the leg is given new DTLS parameters or keys.
    Failed,
}

impl DtlsState {
    /// `handshaking`, `established` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            DtlsState::Handshaking => "handshaking",
            DtlsState::Established => "established",
            DtlsState::Failed => "failed",
        }
    }
}

/// One handshake's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtlsComponentStats {
    /// Where it stands.
    pub state: DtlsState,
    /// The negotiated suite.
    pub suite: Option<Suite>,
    /// How long the handshake took, ms.
    pub handshake_ms: Option<f64>,
    /// Why it failed.
    pub failure: Option<DtlsFailureReason>,
    /// For a peer alert, its name.
    pub alert: Option<Cow<'static, str>>,
    /// For a timeout, which flight was missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'static, str>>,
    /// The sha-256 fingerprint of the certificate the peer presented (once established): the
    /// far end's own, or a middlebox's that terminated DTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_fingerprint: Option<String>,
    /// The implementation that ran the handshake (`dimpl` or `openssl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<DtlsBackend>,
}

/// A leg's DTLS figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtlsLegStats {
    /// Our role.
    pub role: DtlsRole,
    /// The RTP (or muxed) handshake.
    pub rtp: DtlsComponentStats,
    /// The RTCP port's handshake (no rtcp-mux).
    pub rtcp: Option<DtlsComponentStats>,
}

/// Per-leg counters and quality.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LegStats {
    /// Local RTP address.
    pub local: Option<SocketAddr>,
    /// Remote RTP address in use.
    pub remote: Option<SocketAddr>,
    /// SRTP suite received with (`null` for plain RTP).
    pub rx_suite: Option<Suite>,
    /// Suite sent with.
    pub tx_suite: Option<Suite>,
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
    /// SRTP/SRTCP authentication failures (`drops.auth_failed`).
    pub auth_failures: u64,
    /// SRTP/SRTCP replayed packets dropped (`drops.replayed`).
    pub replay_drops: u64,
    /// Datagrams that were not well-formed RTP/RTCP/SRTP (`drops.malformed`).
    pub malformed: u64,
    /// Datagrams from an address other than the signalled one, strict mode
    /// (`drops.wrong_source`).
    pub source_mismatch: u64,
    /// Other drops: DTLS/STUN on a leg without them, a handshake datagram after the
    /// handshake, a receive key at the end of its lifetime, an unknown SSRC or MKI, rollover
    /// trouble (`drops.not_carried + handshake_over + key_lifetime + srtp_other`).
    pub other_drops: u64,
    /// Media dropped because DTLS-SRTP has not set the keys up (handshaking) or failed
    /// (`drops.before_keys`).
    pub dtls_drops: u64,
    /// Datagrams that arrived while the leg waited for its keys (an offerer before the
    /// answer), dropped (`drops.before_answer`). The latest DTLS handshake datagram among
    /// them is also kept for the handshake the answer sets up.
    pub early_drops: u64,
    /// Plain RTCP where SRTCP belongs (the compound fills the datagram, no SRTCP index or
    /// tag), dropped: a peer that sends RTCP in the clear on an SRTP session, which RFC 3711
    /// 3.4 forbids (`drops.rtcp_unprotected`). Counted apart from `auth_failures`, which mean
    /// wrong keys or forgery.
    pub rtcp_unprotected: u64,
    /// Every datagram this leg received and did not use, by reason.
    pub drops: DropCounts,
    /// The RTP packets among `drops` (what a media balance counts).
    pub rtp_drops: DropCounts,
    /// Packets we could not send (no send buffer, protect failure, no remote, or for echo
    /// and relay an outgoing leg without its keys yet).
    pub tx_drops: u64,
    /// Times the remote address changed (learned from an authenticated packet).
    pub remote_changes: u64,
    /// The peer's SSRC (the latest seen).
    pub remote_ssrc: Option<u32>,
    /// The sequence number of the last RTP packet sent on this leg.
    pub last_seq_out: Option<u16>,
    /// The highest sequence number received from the peer's current SSRC (RFC 3550 A.1
    /// `max_seq`).
    pub highest_seq_in: Option<u16>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Stream id.
    pub id: u64,
    /// Mode.
    pub mode: Mode,
    /// Whether generation is paused.
    pub paused: bool,
    /// RTP packets generated.
    pub generated: u64,
    /// Pacing periods skipped because the worker fell far behind (or had no send buffer):
    /// never sent, so never loss.
    pub pacing_skips: u64,
    /// Per-leg figures.
    pub legs: Vec<LegStats>,
}
