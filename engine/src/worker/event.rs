//! Stream events: what a worker notices about its streams that a control client wants to hear
//! without polling (silence, authentication failures, a master key at the end of its lifetime).
//!
//! The packet path only counts and sets flags; a sweep every 250 ms turns them into
//! events, so a flood of bad packets costs no more than counting them. Events travel on a
//! bounded channel: when nobody drains it, they are dropped and counted, never queued without
//! end.

use serde::Serialize;

use super::stream::Leg;

/// How often a worker looks for events.
pub(crate) const SWEEP_NS: u64 = 250_000_000;

/// Capacity of each worker's event channel.
pub(crate) const CHANNEL_CAPACITY: usize = 4096;

/// Which direction of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What the leg sends (protect).
    Tx,
    /// What the leg receives (unprotect).
    Rx,
}

/// Something a control client may want to know about a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        component: &'static str,
        /// Our role, `client` or `server`.
        role: &'static str,
        /// The negotiated protection profile, as its SDES suite name.
        suite: &'static str,
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
        component: &'static str,
        /// Our role.
        role: &'static str,
        /// `timeout`, `fingerprint_mismatch`, `no_certificate`, `no_common_profile`,
        /// `no_common_cipher_suite`, `peer_alert`, `malformed` or `protocol`.
        reason: &'static str,
        /// For `peer_alert`, the alert's name (`bad_certificate`, `handshake_failure`, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        alert: Option<&'static str>,
    },
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
        }
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        Event::NAMES[self.index()]
    }

    /// Every event name, for `hello` and subscription filters.
    pub const NAMES: [&'static str; 6] = [
        "media_silent",
        "media_resumed",
        "auth_failures",
        "key_lifetime_reached",
        "dtls_established",
        "dtls_failed",
    ];
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
    pub(crate) fn with(self, o: WatchOverrides) -> WatchOptions {
        WatchOptions {
            silence_ms: o.silence_ms.unwrap_or(self.silence_ms),
            auth_failure_threshold: o
                .auth_failure_threshold
                .unwrap_or(self.auth_failure_threshold),
        }
    }
}

/// Per-leg watch state, updated by the sweep (the packet path only sets `lifetime_hit`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegWatch {
    /// Packets (RTP + RTCP) seen at the last sweep.
    seen: u64,
    /// When the leg last showed progress, ns on the worker clock.
    quiet_since: u64,
    /// Whether `media_silent` was sent and `media_resumed` not yet.
    silent: bool,
    /// Authentication failures covered by events so far.
    auth_reported: u64,
    /// Directions whose key reached its lifetime (bit 0: tx, bit 1: rx), set on the packet path.
    pub(crate) lifetime_hit: u8,
    /// Directions already reported.
    lifetime_reported: u8,
}

impl LegWatch {
    /// Fresh state for a leg created at `now`.
    pub(crate) fn new(now: u64) -> LegWatch {
        LegWatch {
            quiet_since: now,
            ..LegWatch::default()
        }
    }

    /// Notes that the key of `direction` reached its lifetime.
    pub(crate) fn lifetime(&mut self, direction: Direction) {
        self.lifetime_hit |= match direction {
            Direction::Tx => 1,
            Direction::Rx => 2,
        };
    }

    /// Restarts the silence clock (a new remote or keys: the old silence no longer tells).
    pub(crate) fn restart(&mut self, now: u64) {
        self.quiet_since = now;
        self.silent = false;
        self.lifetime_hit = 0;
        self.lifetime_reported = 0;
    }
}

/// Looks at one leg and emits what changed since the last sweep.
pub(crate) fn sweep_leg(
    stream: u64,
    k: usize,
    leg: &mut Leg,
    receives: bool,
    opts: WatchOptions,
    now: u64,
    mut emit: impl FnMut(Event),
) {
    let c = &leg.counters;
    let w = &mut leg.watch;
    let seen = c.packets_in + c.rtcp_in;
    if receives && opts.silence_ms > 0 {
        if seen != w.seen {
            if w.silent {
                emit(Event::MediaResumed {
                    stream,
                    leg: k,
                    silent_ms: now.saturating_sub(w.quiet_since) / 1_000_000,
                });
                w.silent = false;
            }
            w.quiet_since = now;
        } else if !w.silent
            && now.saturating_sub(w.quiet_since) >= u64::from(opts.silence_ms) * 1_000_000
        {
            w.silent = true;
            emit(Event::MediaSilent {
                stream,
                leg: k,
                silent_ms: now.saturating_sub(w.quiet_since) / 1_000_000,
            });
        }
    }
    w.seen = seen;
    let threshold = u64::from(opts.auth_failure_threshold);
    if threshold > 0 && c.auth_failures >= w.auth_reported + threshold {
        emit(Event::AuthFailures {
            stream,
            leg: k,
            total: c.auth_failures,
            new: c.auth_failures - w.auth_reported,
            threshold: opts.auth_failure_threshold,
        });
        w.auth_reported = c.auth_failures;
    }
    let fresh = w.lifetime_hit & !w.lifetime_reported;
    for (bit, direction) in [(1u8, Direction::Tx), (2u8, Direction::Rx)] {
        if fresh & bit != 0 {
            emit(Event::KeyLifetimeReached {
                stream,
                leg: k,
                direction,
            });
        }
    }
    w.lifetime_reported |= fresh;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_wire_tags() {
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
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            let v = serde_json::to_value(e).unwrap();
            assert_eq!(v["event"], e.name());
        }
    }
}
