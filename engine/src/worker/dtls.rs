//! DTLS-SRTP in the worker: a leg's handshake state (one component for RTP, a second for RTCP
//! on its own port, RFC 5764 4.1), what gates media until the keys exist, and the figures the
//! `stats` command and the metrics show.
//!
//! The worker drives each session (see `Worker::dtls_drive`): datagrams the RFC 7983
//! demultiplexer classes as DTLS go to the leg's session, its retransmission timer sits in the
//! worker's timer wheel, and once it is established the SRTP contexts are built from the
//! exported keys. A client's session is dropped at once; a server's lingers until the peer's
//! first authenticated SRTP packet (or [`DtlsOptions::linger`]) so it can answer a client whose
//! last flight lost its reply. No media passes a leg whose component is not established.
//!
//! [`DtlsOptions::linger`]: crate::proto::dtls::DtlsOptions::linger

use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Worker;
use super::event::Event;
use super::timer::TimerKind;
use crate::proto::dtls::{
    DtlsFailure, DtlsOptions, DtlsOutput, DtlsRole, DtlsSession, Fingerprint,
};
use crate::proto::srtp::{SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};

/// Upper bounds of the handshake-duration histogram, seconds.
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A leg's DTLS-SRTP request: our role and the peer's certificate fingerprint from SDP.
#[derive(Debug, Clone)]
pub struct DtlsSpec {
    /// Our role (`a=setup:active` is client).
    pub role: DtlsRole,
    /// The peer's certificate fingerprint.
    pub fingerprint: Fingerprint,
}

/// Where a handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Handshaking,
    Established,
    Failed(DtlsFailure),
}

/// One handshake (RTP, or RTCP on its own port).
pub(crate) struct Component {
    pub(crate) session: Option<Box<dyn DtlsSession>>,
    pub(crate) phase: Phase,
    /// When the stream asked for it (the deadline counts from here), ns.
    pub(crate) created_ns: u64,
    /// When the handshake began: the client's first flight, or the first datagram a server
    /// received, ns.
    pub(crate) started_ns: Option<u64>,
    /// How long it took, ns.
    pub(crate) took_ns: Option<u64>,
    pub(crate) suite: Option<Suite>,
    /// The timer in the wheel for this component, ns (None: none pending).
    pub(crate) timer_at: Option<u64>,
    /// A server keeps its established session until then, ns.
    pub(crate) linger_until: Option<u64>,
}

impl Component {
    pub(crate) fn new(session: Box<dyn DtlsSession>, now: u64) -> Component {
        Component {
            session: Some(session),
            phase: Phase::Handshaking,
            created_ns: now,
            started_ns: None,
            took_ns: None,
            suite: None,
            timer_at: None,
            linger_until: None,
        }
    }

    fn stats(&self) -> DtlsComponentStats {
        let (state, failure, alert) = match self.phase {
            Phase::Handshaking => ("handshaking", None, None),
            Phase::Established => ("established", None, None),
            Phase::Failed(f) => ("failed", Some(f.reason()), f.alert()),
        };
        DtlsComponentStats {
            state,
            suite: self.suite.map(Suite::sdp_name),
            handshake_ms: self.took_ns.map(|n| n as f64 / 1e6),
            failure,
            alert,
        }
    }
}

/// A leg's DTLS state.
pub(crate) struct LegDtls {
    pub(crate) role: DtlsRole,
    pub(crate) rtp: Component,
    /// The RTCP port's own handshake (no rtcp-mux).
    pub(crate) rtcp: Option<Component>,
    /// A server's sessions linger after success; the first authenticated packet ends that.
    pub(crate) lingering: bool,
}

impl LegDtls {
    /// Whether media of this kind may pass: its component is established.
    #[inline]
    pub(crate) fn open(&self, rtcp_port: bool) -> bool {
        let c = match (&self.rtcp, rtcp_port) {
            (Some(c), true) => c,
            _ => &self.rtp,
        };
        c.phase == Phase::Established
    }

    pub(crate) fn component_mut(&mut self, rtcp: bool) -> Option<&mut Component> {
        if rtcp {
            self.rtcp.as_mut()
        } else {
            Some(&mut self.rtp)
        }
    }

    /// Sessions still held (handshaking or lingering).
    pub(crate) fn live(&self) -> u64 {
        u64::from(self.rtp.session.is_some())
            + self
                .rtcp
                .as_ref()
                .map_or(0, |c| u64::from(c.session.is_some()))
    }

    /// Drops lingering sessions (the peer has proved it holds the keys). Returns how many.
    pub(crate) fn release_lingering(&mut self) -> u64 {
        self.lingering = false;
        let mut n = 0;
        for c in std::iter::once(&mut self.rtp).chain(self.rtcp.as_mut()) {
            if c.phase == Phase::Established && c.session.take().is_some() {
                c.linger_until = None;
                n += 1;
            }
        }
        n
    }

    pub(crate) fn stats(&self) -> DtlsLegStats {
        DtlsLegStats {
            role: self.role.name(),
            rtp: self.rtp.stats(),
            rtcp: self.rtcp.as_ref().map(Component::stats),
        }
    }
}

/// The SRTCP contexts of an RTCP port keyed by its own handshake.
pub(crate) struct RtcpCrypto {
    pub(crate) tx: SrtpOutbound,
    pub(crate) rx: SrtpInbound,
}

/// One handshake's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DtlsComponentStats {
    /// `handshaking`, `established` or `failed`.
    pub state: &'static str,
    /// The negotiated suite (SDP name).
    pub suite: Option<&'static str>,
    /// How long the handshake took, ms.
    pub handshake_ms: Option<f64>,
    /// Why it failed.
    pub failure: Option<&'static str>,
    /// For a peer alert, its name.
    pub alert: Option<&'static str>,
}

/// A leg's DTLS figures.
#[derive(Debug, Clone, Serialize)]
pub struct DtlsLegStats {
    /// `client` or `server`.
    pub role: &'static str,
    /// The RTP (or muxed) handshake.
    pub rtp: DtlsComponentStats,
    /// The RTCP port's handshake (no rtcp-mux).
    pub rtcp: Option<DtlsComponentStats>,
}

/// Engine-wide DTLS counters (part of the worker's published counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtlsCounters {
    /// Handshakes started.
    pub started: u64,
    /// Handshakes established.
    pub established: u64,
    /// Handshakes failed, by [`DtlsFailure::REASONS`].
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
    pub(crate) fn release(&mut self, n: u64) {
        self.sessions = self.sessions.saturating_sub(n);
    }

    pub(crate) fn observe(&mut self, took_ns: u64) {
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

/// Sends an event, counting it when the channel is full.
fn emit(events: &SyncSender<Event>, dropped: &mut u64, e: Event) {
    if events.try_send(e).is_err() {
        *dropped += 1;
    }
}

/// A leg's handshake (RTP, or the RTCP port's), if the stream, leg and component exist.
fn component(
    streams: &mut [Option<super::stream::Stream>],
    slot: u32,
    k: usize,
    rtcp: bool,
) -> Option<&mut Component> {
    streams
        .get_mut(slot as usize)?
        .as_mut()?
        .legs
        .get_mut(k)?
        .dtls
        .as_mut()?
        .component_mut(rtcp)
}

fn component_name(rtcp: bool) -> &'static str {
    if rtcp { "rtcp" } else { "rtp" }
}

impl Worker {
    /// The engine's handshake timings (a worker with DTLS legs always has a context).
    fn dtls_options(&self) -> DtlsOptions {
        self.cfg
            .media
            .dtls
            .as_ref()
            .map_or_else(DtlsOptions::default, |c| *c.options())
    }

    fn instant(&self, now: u64) -> Instant {
        self.epoch + Duration::from_nanos(now)
    }

    /// Drains a handshake's output: sends its datagrams, installs the SRTP contexts when it is
    /// established, reports success or failure, and arms its timer.
    pub(super) fn dtls_drive(&mut self, slot: u32, k: usize, rtcp: bool, now: u64) {
        let gen_ = self.gens[slot as usize];
        let opts = self.dtls_options();
        let linger = opts.linger.as_nanos() as u64;
        let timeout = opts.handshake_timeout.as_nanos() as u64;

        let Some(stream) = self.streams.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let stream_id = stream.id;
        let Some(leg) = stream.legs.get_mut(k) else {
            return;
        };
        let (sock, dest) = match (rtcp, leg.rtcp_sock) {
            (true, Some(s)) => (s, leg.remote_rtcp),
            _ => (leg.rtp_sock, leg.remote),
        };
        // A connected RTP socket sends without an address; the RTCP socket is told each time.
        let to = if !rtcp && leg.connected { None } else { dest };
        let Some(d) = leg.dtls.as_mut() else {
            return;
        };
        let role = d.role;
        let Some(c) = d.component_mut(rtcp) else {
            return;
        };
        let Some(session) = c.session.as_mut() else {
            return;
        };
        let mut outcome = None;
        let next = loop {
            match session.poll_output(&mut self.dtls_out) {
                DtlsOutput::Packet(p) => {
                    if dest.is_none() {
                        leg.counters.tx_drops += 1;
                        self.counters.tx_drops += 1;
                        continue;
                    }
                    match self.io.tx_buf() {
                        Some(buf) if p.len() <= buf.len() => {
                            buf[..p.len()].copy_from_slice(p);
                            self.io.send_tx(sock, p.len(), to);
                        }
                        _ => {
                            leg.counters.tx_drops += 1;
                            self.counters.tx_drops += 1;
                        }
                    }
                    c.started_ns.get_or_insert(now);
                }
                DtlsOutput::Established(keys) => outcome = Some(Ok(keys)),
                DtlsOutput::Failed(f) => outcome = Some(Err(f)),
                DtlsOutput::Timeout(t) => {
                    break Some(t.saturating_duration_since(self.epoch).as_nanos() as u64);
                }
            }
        };
        let c = match leg.dtls.as_mut().and_then(|d| d.component_mut(rtcp)) {
            Some(c) => c,
            None => return,
        };
        let mut event = None;
        let mut failure = None;
        match outcome {
            Some(Ok(keys)) => {
                let suite = keys.suite;
                let tx = SrtpOutbound::new(SrtpPolicy::new(suite, keys.local));
                let rx = SrtpInbound::new(SrtpPolicy::new(suite, keys.remote));
                match (tx, rx) {
                    (Ok(tx), Ok(rx)) => {
                        let took = now - c.started_ns.unwrap_or(c.created_ns);
                        c.phase = Phase::Established;
                        c.took_ns = Some(took);
                        c.suite = Some(suite);
                        if role == DtlsRole::Client {
                            c.session = None;
                            self.counters.dtls.release(1);
                        } else {
                            // Keep answering the client for as long as it may still be
                            // retrying: its deadline runs from its first ClientHello, which
                            // came before this handshake's start. A shorter linger strands a
                            // client whose answers were lost a few times in a row (its timer
                            // doubles: 1, 2, 4, 8 s) and reports a timeout the server did
                            // not cause (one handshake in 300 at 30% loss in the tests).
                            let start = c.started_ns.unwrap_or(c.created_ns);
                            c.linger_until = Some((now + linger).max(start + timeout));
                        }
                        self.counters.dtls.observe(took);
                        event = Some(Event::DtlsEstablished {
                            stream: stream_id,
                            leg: k,
                            component: component_name(rtcp),
                            role: role.name(),
                            suite: suite.sdp_name(),
                            handshake_ms: took as f64 / 1e6,
                        });
                        if let Some(d) = leg.dtls.as_mut() {
                            d.lingering |= role == DtlsRole::Server;
                        }
                        if rtcp && leg.rtcp_sock.is_some() {
                            leg.rtcp_crypto = Some(Box::new(RtcpCrypto { tx, rx }));
                        } else {
                            leg.tx = Some(tx);
                            leg.rx = Some(rx);
                            leg.counters.tx_suite = Some(suite);
                            leg.counters.rx_suite = Some(suite);
                        }
                        leg.watch.restart(now);
                    }
                    _ => failure = Some(DtlsFailure::Protocol),
                }
            }
            Some(Err(f)) => failure = Some(f),
            None => {}
        }
        if let Some(f) = failure {
            self.fail_component(slot, k, rtcp, f);
            return;
        }
        if let Some(e) = event {
            emit(&self.cfg.events, &mut self.counters.events_dropped, e);
        }
        // Re-borrow for the timer.
        let Some(c) = component(&mut self.streams, slot, k, rtcp) else {
            return;
        };
        let want = match c.phase {
            Phase::Handshaking => {
                next.map_or(c.created_ns + timeout, |n| n.min(c.created_ns + timeout))
            }
            Phase::Established if c.session.is_some() => {
                let l = c.linger_until.unwrap_or(now);
                next.map_or(l, |n| n.min(l))
            }
            _ => return,
        };
        if c.timer_at.is_none_or(|t| want < t) {
            c.timer_at = Some(want);
            self.wheel
                .insert(want, slot, gen_, TimerKind::Dtls { leg: k as u8, rtcp });
        }
    }

    /// Ends a handshake with a failure: the session goes, media stays blocked, the reason is
    /// counted and reported.
    fn fail_component(&mut self, slot: u32, k: usize, rtcp: bool, f: DtlsFailure) {
        let Some(stream) = self.streams.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let stream_id = stream.id;
        let Some(d) = stream.legs.get_mut(k).and_then(|l| l.dtls.as_mut()) else {
            return;
        };
        let role = d.role;
        let Some(c) = d.component_mut(rtcp) else {
            return;
        };
        if c.session.take().is_some() {
            self.counters.dtls.release(1);
        }
        c.phase = Phase::Failed(f);
        c.timer_at = None;
        self.counters.dtls.failed[f.index()] += 1;
        tracing::debug!(stream = stream_id, leg = k, component = component_name(rtcp), reason = %f, "DTLS handshake failed");
        emit(
            &self.cfg.events,
            &mut self.counters.events_dropped,
            Event::DtlsFailed {
                stream: stream_id,
                leg: k,
                component: component_name(rtcp),
                role: role.name(),
                reason: f.reason(),
                alert: f.alert(),
            },
        );
    }

    /// A handshake's timer: the deadline, the end of a server's linger, or a retransmission.
    pub(super) fn dtls_timer(&mut self, slot: u32, k: usize, rtcp: bool, now: u64) {
        let timeout = self.dtls_options().handshake_timeout.as_nanos() as u64;
        let at = self.instant(now);
        let Some(c) = component(&mut self.streams, slot, k, rtcp) else {
            return;
        };
        // Only the latest (earliest) timer counts; older entries in the wheel are stale.
        match c.timer_at {
            Some(t) if t <= now => c.timer_at = None,
            _ => return,
        }
        match c.phase {
            Phase::Handshaking if now >= c.created_ns + timeout => {
                self.fail_component(slot, k, rtcp, DtlsFailure::Timeout);
                return;
            }
            Phase::Established if c.linger_until.is_some_and(|l| l <= now) => {
                c.linger_until = None;
                if c.session.take().is_some() {
                    self.counters.dtls.release(1);
                }
                return;
            }
            Phase::Failed(_) => return,
            _ => {}
        }
        if let Some(s) = c.session.as_mut() {
            s.handle_timeout(at);
        }
        self.dtls_drive(slot, k, rtcp, now);
    }

    /// A DTLS datagram (RFC 7983: first byte 20-63) for a leg's handshake.
    pub(super) fn dtls_datagram(
        &mut self,
        slot: u32,
        k: usize,
        rtcp_port: bool,
        from: SocketAddr,
        len: usize,
        now: u64,
    ) {
        let at = self.instant(now);
        let connect = self.cfg.media.connect;
        let Some(leg) = self.streams[slot as usize]
            .as_mut()
            .and_then(|s| s.legs.get_mut(k))
        else {
            return;
        };
        let rtcp = rtcp_port && leg.rtcp_sock.is_some();
        // A server learns its peer from the first datagram when signaling gave none.
        if rtcp {
            leg.remote_rtcp.get_or_insert(from);
        } else if leg.remote.is_none() {
            leg.remote = Some(from);
            if leg.shared.is_none() && connect {
                self.connects.push((slot, k as u8, false, from));
            }
        }
        let Some(c) = leg.dtls.as_mut().and_then(|d| d.component_mut(rtcp)) else {
            return;
        };
        let Some(session) = c.session.as_mut() else {
            // After the handshake (a peer's retransmission) or after a failure.
            leg.counters.other_drops += 1;
            self.counters.other_drops += 1;
            return;
        };
        c.started_ns.get_or_insert(now);
        session.handle_timeout(at);
        session.handle_packet(&self.dtls_in[..len]);
        self.dtls_drive(slot, k, rtcp, now);
    }
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
}
