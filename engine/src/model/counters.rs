//! The engine's counters, each declared once: why a datagram was dropped ([`DropReason`], one
//! table from which the legs' and the engine's figures, the metrics and the reports are all
//! derived), the engine-wide totals a worker publishes ([`Counters`]) and the DTLS handshake
//! figures ([`DtlsCounters`]).

use serde::{Deserialize, Serialize};

use crate::proto::srtp::Suite;

/// Which engine-wide family a drop reason has always been counted in (the metrics
/// `srtp_engine_{auth_failures,replay_drops,malformed_drops,source_drops,other_drops}_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropFamily {
    /// SRTP/SRTCP authentication failures.
    Auth,
    /// Replays.
    Replay,
    /// Not well-formed.
    Malformed,
    /// For the source address.
    Source,
    /// Everything else.
    Other,
}

macro_rules! drop_reasons {
    ($($id:ident $name:literal $family:ident $help:literal;)*) => {
        /// Why a received datagram was not used. Each is counted once, into the leg's figures
        /// and the worker's totals together (see `media::Leg`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(
                #[doc = $help]
                $id,
            )*
        }

        impl DropReason {
            /// Every reason, in metric and report order.
            pub const ALL: [DropReason; [$(DropReason::$id),*].len()] = [$(DropReason::$id),*];
            /// How many reasons there are.
            pub const COUNT: usize = DropReason::ALL.len();

            /// The reason's name in replies, metrics (`reason` label) and reports.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$id => $name,)*
                }
            }

            /// What the reason means, for people (the metric's help and the reports).
            pub fn help(self) -> &'static str {
                match self {
                    $(DropReason::$id => $help,)*
                }
            }

            /// The engine-wide family it is also counted in.
            pub fn family(self) -> DropFamily {
                match self {
                    $(DropReason::$id => DropFamily::$family,)*
                }
            }
        }
    };
}

drop_reasons! {
    AuthFailed "auth_failed" Auth
        "SRTP/SRTCP authentication failed: wrong keys, or forgery.";
    Replayed "replayed" Replay
        "An SRTP/SRTCP packet already received (RFC 3711 3.3.2).";
    Malformed "malformed" Malformed
        "Not well-formed RTP, RTCP, SRTP or SRTCP.";
    WrongSource "wrong_source" Source
        "From an address other than the signalled one (strict source).";
    NoStream "no_stream" Source
        "On a shared port, from an address (and SSRC) no stream has.";
    BeforeAnswer "before_answer" Other
        "Arrived while the leg waited for its keys (an SDP offerer before the answer).";
    BeforeKeys "before_keys" Other
        "Media before DTLS-SRTP set the keys up (handshaking), or after it failed.";
    RtcpUnprotected "rtcp_unprotected" Other
        "Plain RTCP where SRTCP belongs (RFC 3711 3.4).";
    NotCarried "not_carried" Other
        "DTLS, STUN, ZRTP or TURN on a leg that does not carry it.";
    HandshakeOver "handshake_over" Other
        "A DTLS datagram after the leg's handshake ended (a peer's retransmission).";
    KeyLifetime "key_lifetime" Other
        "The receive key reached its lifetime (RFC 3711 9.2) and the leg was not rekeyed.";
    SrtpOther "srtp_other" Other
        "Other SRTP trouble: an unknown SSRC or MKI, rollover out of range.";
    Closed "closed" Other
        "Arrived on a socket whose stream was just deleted.";
}

/// Counts by [`DropReason`]. On the wire an object with every reason's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts(pub [u64; DropReason::COUNT]);

impl DropCounts {
    /// One more of `reason`.
    #[inline]
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// The count of `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// The sum over every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The sum over the reasons of one family.
    pub fn family(&self, f: DropFamily) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| r.family() == f)
            .map(|&r| self.get(r))
            .sum()
    }

    /// The sum over some reasons.
    pub fn sum(&self, reasons: &[DropReason]) -> u64 {
        reasons.iter().map(|&r| self.get(r)).sum()
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, o: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }

    /// Reason and count, in [`DropReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

impl Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(DropReason::COUNT))?;
        for (r, n) in self.iter() {
            m.serialize_entry(r.name(), &n)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for DropCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DropCounts, D::Error> {
        // Reasons this build does not know (a newer engine's) are skipped.
        let m = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
        let mut c = DropCounts::default();
        for (name, n) in m {
            if let Some(r) = DropReason::ALL.iter().find(|r| r.name() == name) {
                c.0[*r as usize] = n;
            }
        }
        Ok(c)
    }
}

/// Engine-wide counters, by suite index (0-5) or 6 for plain RTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// RTP+RTCP packets unprotected (or received plain), by suite.
    pub rx_packets: [u64; 7],
    /// Their bytes.
    pub rx_bytes: [u64; 7],
    /// RTP+RTCP packets protected (or sent plain), by suite.
    pub tx_packets: [u64; 7],
    /// Their bytes.
    pub tx_bytes: [u64; 7],
    /// Datagrams received and not used, by reason.
    pub drops: DropCounts,
    /// Packets that could not be sent (no buffer, protect failure, no remote).
    pub tx_drops: u64,
    /// Streams created.
    pub streams_created: u64,
    /// Streams deleted.
    pub streams_deleted: u64,
    /// Events dropped because nobody drained the event channel.
    pub events_dropped: u64,
    /// DTLS-SRTP handshakes.
    pub dtls: DtlsCounters,
}

impl Counters {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Counters) {
        for k in 0..7 {
            self.rx_packets[k] += o.rx_packets[k];
            self.rx_bytes[k] += o.rx_bytes[k];
            self.tx_packets[k] += o.tx_packets[k];
            self.tx_bytes[k] += o.tx_bytes[k];
        }
        self.drops.merge(&o.drops);
        self.tx_drops += o.tx_drops;
        self.streams_created += o.streams_created;
        self.streams_deleted += o.streams_deleted;
        self.events_dropped += o.events_dropped;
        self.dtls.add(&o.dtls);
    }
}

/// The per-suite counter index of a suite (6: plain RTP).
pub fn suite_index(s: Option<Suite>) -> usize {
    s.map_or(6, |s| s as usize)
}

/// The label of a per-suite counter index: the suite's SDP name, or `plain` for index 6.
pub fn suite_label(k: usize) -> &'static str {
    Suite::ALL.get(k).map_or("plain", |s| s.sdp_name())
}

/// Upper bounds of the handshake-duration histogram, seconds.
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Engine-wide DTLS counters (part of the worker's published counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtlsCounters {
    /// Handshakes started.
    pub started: u64,
    /// Handshakes established.
    pub established: u64,
    /// Handshakes failed, by [`crate::proto::dtls::DtlsFailureReason::ALL`].
    pub failed: [u64; 8],
    /// Sessions held now (handshaking or lingering).
    pub sessions: u64,
    /// Handshake durations: counts per [`HANDSHAKE_BUCKETS`] bucket (not cumulative) and the
    /// overflow.
    pub buckets: [u64; 13],
    /// Sum of handshake durations, ns.
    pub duration_sum_ns: u64,
}

impl DtlsCounters {
    /// Sessions no longer held.
    pub fn release(&mut self, n: u64) {
        self.sessions = self.sessions.saturating_sub(n);
    }

    /// One handshake established after `took_ns`.
    pub fn observe(&mut self, took_ns: u64) {
        let s = took_ns as f64 / 1e9;
        let k = HANDSHAKE_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(HANDSHAKE_BUCKETS.len());
        self.buckets[k] += 1;
        self.duration_sum_ns += took_ns;
        self.established += 1;
    }

    /// Adds another worker's counters.
    pub fn add(&mut self, o: &DtlsCounters) {
        self.started += o.started;
        self.established += o.established;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        self.sessions += o.sessions;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.duration_sum_ns += o.duration_sum_ns;
    }
}

/// Counters a backend keeps (plain integers; the worker publishes them in batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IoStats {
    /// System calls made by the backend (io_uring_enter, epoll_wait, recvmmsg, sendmmsg, ...).
    pub syscalls: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Datagrams handed to the kernel for sending.
    pub tx_packets: u64,
    /// Sends the kernel refused (full socket buffer, ICMP errors on connected sockets).
    pub tx_errors: u64,
    /// Sends dropped because every send buffer was in flight.
    pub tx_no_buffer: u64,
    /// Datagrams longer than a buffer (truncated by the kernel, dropped by us).
    pub rx_truncated: u64,
    /// Times receiving stopped because every receive buffer was in use (io_uring ENOBUFS; a
    /// full pool for epoll): the ring overflow figure.
    pub rx_no_buffer: u64,
    /// Receive errors reported by the kernel (e.g. ECONNREFUSED from an ICMP error).
    pub rx_errors: u64,
    /// Turns of the poll loop.
    pub polls: u64,
    /// Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL,
    /// learned from the next datagram that socket delivers).
    pub kernel_drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut c = DtlsCounters::default();
        c.observe(1_000_000); // 1 ms
        c.observe(2_000_000); // exactly 2 ms: the first bucket (le)
        c.observe(7_000_000);
        c.observe(60_000_000_000); // past the last bound
        assert_eq!(c.buckets[0], 2);
        assert_eq!(c.buckets[2], 1);
        assert_eq!(c.buckets[12], 1);
        assert_eq!(c.established, 4);
        assert_eq!(c.duration_sum_ns, 60_010_000_000);
    }

    #[test]
    fn drop_counts_travel_by_name_and_sum_by_family() {
        let mut c = DropCounts::default();
        c.add(DropReason::AuthFailed);
        c.add(DropReason::BeforeAnswer);
        c.add(DropReason::BeforeAnswer);
        c.add(DropReason::NoStream);
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["before_answer"], 2);
        assert_eq!(v.as_object().unwrap().len(), DropReason::COUNT);
        let back: DropCounts = serde_json::from_str(
            r#"{"auth_failed":1,"before_answer":2,"no_stream":1,"new_reason":9}"#,
        )
        .unwrap();
        assert_eq!(back, c);
        assert_eq!(c.family(DropFamily::Auth), 1);
        assert_eq!(c.family(DropFamily::Source), 1);
        assert_eq!(c.family(DropFamily::Other), 2);
        assert_eq!(c.total(), 4);
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
