//! Stream events: what a worker notices about its streams that a control client wants to hear
//! without polling (silence, authentication failures, a master key at the end of its
//! lifetime, DTLS outcomes).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::proto::dtls::{DtlsFailureReason, DtlsRole};
use crate::proto::srtp::Suite;

/// Which handshake of a leg: the RTP port's (or the only one, with rtcp-mux), or the RTCP
/// port's own (RFC 5764 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The RTP (or muxed) port.
    Rtp,
    /// The RTCP port.
    Rtcp,
}

impl Component {
    /// `rtp` or `rtcp`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Rtp => "rtp",
            Component::Rtcp => "rtcp",
        }
    }

    /// The component of a port.
    pub fn of(rtcp_port: bool) -> Component {
        if rtcp_port {
            Component::Rtcp
        } else {
            Component::Rtp
        }
    }
}

/// Which direction of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What the leg sends (protect).
    Tx,
    /// What the leg receives (unprotect).
    Rx,
}

/// Something a control client may want to know about a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// No media (RTP or RTCP that authenticated) arrived on a leg for the stream's silence
    /// timeout.
    MediaSilent {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// How long it has been silent, ms.
        silent_ms: u64,
    },
    /// Media arrived again on a leg reported silent.
    MediaResumed {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// How long it was silent (to within a sweep), ms.
        silent_ms: u64,
    },
    /// A leg's SRTP/SRTCP authentication failures reached the threshold since the previous
    /// event for that leg (at most one event per leg per sweep).
    AuthFailures {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// Failures so far.
        total: u64,
        /// Failures since the previous event for this leg.
        new: u64,
        /// The stream's threshold.
        threshold: u32,
    },
    /// A master key reached its lifetime (RFC 3711 9.2): packets in that direction are dropped
    /// until the stream is rekeyed.
    KeyLifetimeReached {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// The direction whose key expired.
        direction: Direction,
    },
    /// A DTLS-SRTP handshake completed and the peer's certificate matched its fingerprint:
    /// SRTP keys are in place and media flows.
    DtlsEstablished {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// `rtp` (or muxed), or `rtcp` for the RTCP port's own handshake.
        component: Component,
        /// Our role.
        role: DtlsRole,
        /// The negotiated protection profile, as its SDES suite name.
        suite: Suite,
        /// From the first flight (the client's ClientHello, or for a server the first
        /// datagram received) to completion, ms.
        handshake_ms: f64,
    },
    /// A DTLS-SRTP handshake failed: no media is accepted or sent on that leg until it is
    /// given new DTLS parameters (or SDES keys) with `update`.
    DtlsFailed {
        /// Stream id.
        stream: u64,
        /// Leg index.
        leg: usize,
        /// `rtp` or `rtcp`.
        component: Component,
        /// Our role.
        role: DtlsRole,
        /// Why.
        reason: DtlsFailureReason,
        /// For `peer_alert`, the alert's name (`bad_certificate`, `handshake_failure`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alert: Option<Cow<'static, str>>,
        /// For `timeout`, which flight was missing: nothing from the peer at all, or the peer
        /// answered and a later flight never came.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Cow<'static, str>>,
    },
    /// The engine is stopping: every stream goes with it. Sent to every subscriber, whatever
    /// its filter.
    EngineStopping {},
}

impl Event {
    /// The event's place in [`Event::NAMES`] (subscription filters are bit sets of it).
    pub fn index(&self) -> usize {
        match self {
            Event::MediaSilent { .. } => 0,
            Event::MediaResumed { .. } => 1,
            Event::AuthFailures { .. } => 2,
            Event::KeyLifetimeReached { .. } => 3,
            Event::DtlsEstablished { .. } => 4,
            Event::DtlsFailed { .. } => 5,
            Event::EngineStopping {} => 6,
        }
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        Event::NAMES
            .get(self.index())
            .copied()
            .unwrap_or("engine_stopping")
    }

    /// The stream the event is about (none for `engine_stopping`).
    pub fn stream(&self) -> Option<u64> {
        match self {
            Event::MediaSilent { stream, .. }
            | Event::MediaResumed { stream, .. }
            | Event::AuthFailures { stream, .. }
            | Event::KeyLifetimeReached { stream, .. }
            | Event::DtlsEstablished { stream, .. }
            | Event::DtlsFailed { stream, .. } => Some(*stream),
            Event::EngineStopping {} => None,
        }
    }

    /// Every event a client can subscribe to, by name, for `hello` and subscription filters
    /// (`engine_stopping` goes to every subscriber).
    pub const NAMES: [&'static str; 6] = [
        "media_silent",
        "media_resumed",
        "auth_failures",
        "key_lifetime_reached",
        "dtls_established",
        "dtls_failed",
    ];
}

/// An event with the time the control socket sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedEvent {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// When it was sent, ms since the Unix epoch.
    pub time_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_wire_tags_and_events_read_back() {
        let all = [
            Event::MediaSilent {
                stream: 1,
                leg: 0,
                silent_ms: 1,
            },
            Event::MediaResumed {
                stream: 1,
                leg: 0,
                silent_ms: 1,
            },
            Event::AuthFailures {
                stream: 1,
                leg: 0,
                total: 1,
                new: 1,
                threshold: 1,
            },
            Event::KeyLifetimeReached {
                stream: 1,
                leg: 0,
                direction: Direction::Rx,
            },
            Event::DtlsEstablished {
                stream: 1,
                leg: 0,
                component: Component::Rtp,
                role: DtlsRole::Client,
                suite: Suite::AeadAes128Gcm,
                handshake_ms: 3.5,
            },
            Event::DtlsFailed {
                stream: 1,
                leg: 0,
                component: Component::Rtcp,
                role: DtlsRole::Server,
                reason: DtlsFailureReason::PeerAlert,
                alert: Some("bad_certificate".into()),
                detail: None,
            },
            Event::EngineStopping {},
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            let timed = TimedEvent {
                event: e.clone(),
                time_ms: 7,
            };
            let v = serde_json::to_value(&timed).unwrap();
            assert_eq!(v["event"], e.name());
            assert_eq!(v["time_ms"], 7);
            let back: TimedEvent = serde_json::from_value(v).unwrap();
            assert_eq!(&back.event, e);
        }
    }
}
