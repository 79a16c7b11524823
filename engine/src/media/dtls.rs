//! DTLS-SRTP on a leg: one handshake for RTP (or both, with rtcp-mux) and a second for RTCP on
//! its own port (RFC 5764 4.1), what gates media until the keys exist, and the figures the
//! `stats` command shows.
//!
//! The caller feeds a handshake what arrives ([`LegDtls::input`]) and its timer
//! ([`LegDtls::timer`]), then drains it ([`LegDtls::poll`]): datagrams go to the outbox, the
//! SRTP contexts come back once it is established (the leg installs them, see
//! `handshake.rs`), and the outcome with the timer it wants next. A client's session is dropped at once; a server's lingers until the
//! peer's first authenticated SRTP packet (or [`DtlsOptions::linger`]) so it can answer a client
//! whose last flight lost its reply. No media passes a leg whose component is not established.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Outbox, Port};
use crate::model::{Counters, DtlsComponentStats, DtlsLegStats, DtlsSpec, DtlsState};
use crate::proto::dtls::{
    DtlsBackend, DtlsContext, DtlsFailure, DtlsOptions, DtlsOutput, DtlsRole, DtlsSession,
    Fingerprint,
};
use crate::proto::srtp::{SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};

/// The worker's clock (its epoch: `now` values are ns since it) and the engine's handshake
/// timings, which every handshake runs by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DtlsClock {
    pub(crate) epoch: Instant,
    pub(crate) opts: DtlsOptions,
}

impl DtlsClock {
    /// The instant of a worker time.
    pub(crate) fn at(&self, now: u64) -> Instant {
        instant(self.epoch, now)
    }
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
    phase: Phase,
    /// When the stream asked for it (the deadline counts from here), ns.
    created_ns: u64,
    /// When the handshake began: the client's first flight, or the first datagram a server
    /// received, ns.
    started_ns: Option<u64>,
    /// How long it took, ns.
    took_ns: Option<u64>,
    suite: Option<Suite>,
    /// The peer's certificate (sha-256), once established.
    peer: Option<Fingerprint>,
    /// A datagram of the peer's reached the session.
    heard: bool,
    /// For a timeout, which flight was missing.
    stage: Option<&'static str>,
    /// The implementation that ran it.
    implementation: Option<DtlsBackend>,
    /// The timer armed for this component, ns (None: none pending).
    timer_at: Option<u64>,
    /// A server keeps its established session until then, ns.
    linger_until: Option<u64>,
}

impl Component {
    fn new(session: Box<dyn DtlsSession>, now: u64) -> Component {
        Component {
            session: Some(session),
            phase: Phase::Handshaking,
            created_ns: now,
            started_ns: None,
            took_ns: None,
            suite: None,
            peer: None,
            heard: false,
            stage: None,
            implementation: None,
            timer_at: None,
            linger_until: None,
        }
    }

    fn stats(&self) -> DtlsComponentStats {
        let (state, failure, alert) = match self.phase {
            Phase::Handshaking => (DtlsState::Handshaking, None, None),
            Phase::Established => (DtlsState::Established, None, None),
            Phase::Failed(f) => (DtlsState::Failed, Some(f.kind()), f.alert().map(Into::into)),
        };
        DtlsComponentStats {
            state,
            suite: self.suite,
            handshake_ms: self.took_ns.map(|n| n as f64 / 1e6),
            failure,
            alert,
            detail: self.stage.map(Into::into),
            peer_fingerprint: self.peer.as_ref().map(ToString::to_string),
            implementation: self
                .implementation
                .or_else(|| self.session.as_ref().and_then(|s| s.implementation())),
        }
    }
}

/// A leg's DTLS state.
pub(crate) struct LegDtls {
    role: DtlsRole,
    rtp: Component,
    /// The RTCP port's own handshake (no rtcp-mux).
    rtcp: Option<Component>,
    /// A server's sessions linger after success; the first authenticated packet ends that.
    lingering: bool,
}

/// A DTLS datagram held for a handshake not set up yet.
#[derive(Debug)]
pub(crate) struct EarlyDtls {
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
}

/// What a drained handshake did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// Still going (or already over): nothing to report.
    Quiet,
    /// Established: the keys are installed.
    Established { suite: Suite, took_ns: u64 },
    /// Failed: media stays blocked; for a timeout, which flight was missing.
    Failed(DtlsFailure, Option<&'static str>),
}

impl LegDtls {
    /// Fresh sessions for a leg (a second for its RTCP port), counted as started and held.
    pub(crate) fn new(
        ctx: &DtlsContext,
        spec: &DtlsSpec,
        rtcp_port: bool,
        at: Instant,
        now: u64,
        totals: &mut Counters,
    ) -> Box<LegDtls> {
        let role = spec.role;
        let component = || {
            let s = ctx.session_with(role, spec.fingerprint.clone(), spec.profiles.as_deref(), at);
            Component::new(s, now)
        };
        let rtp = component();
        let rtcp = rtcp_port.then(component);
        let leg = LegDtls {
            role,
            rtp,
            rtcp,
            lingering: false,
        };
        totals.dtls.sessions += leg.live();
        totals.dtls.started += leg.live();
        Box::new(leg)
    }

    /// Whether media of this kind may pass: its component is established.
    #[inline]
    pub(crate) fn open(&self, port: Port) -> bool {
        let c = match (&self.rtcp, port) {
            (Some(c), Port::Rtcp) => c,
            _ => &self.rtp,
        };
        c.phase == Phase::Established
    }

    fn component_mut(&mut self, port: Port) -> Option<&mut Component> {
        match port {
            Port::Rtcp => self.rtcp.as_mut(),
            Port::Rtp => Some(&mut self.rtp),
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

    /// Whether a server's established sessions are still kept to answer a retrying client.
    pub(crate) fn is_lingering(&self) -> bool {
        self.lingering
    }

    /// The RTCP port closes (rtcp-mux accepted): its handshake goes. Returns the sessions
    /// released.
    pub(crate) fn drop_rtcp(&mut self) -> u64 {
        self.rtcp
            .take()
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
            role: self.role,
            rtp: self.rtp.stats(),
            rtcp: self.rtcp.as_ref().map(Component::stats),
        }
    }
}

/// What a handshake's datagram found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// Fed to the session: drain it.
    Fed,
    /// The handshake is over (a peer's retransmission after it ended, or after a failure).
    Over,
    /// No handshake on that port.
    NoHandshake,
}

/// What a drained handshake produced besides its datagrams.
pub(crate) struct Drained {
    pub(crate) outcome: Outcome,
    /// The SRTP contexts, once established (the leg installs them).
    pub(crate) keys: Option<(SrtpOutbound, SrtpInbound)>,
    /// Datagrams it could not send (no peer yet, no send buffer).
    pub(crate) unsent: u64,
    /// The instant (ns) the handshake's timer must fire at, when earlier than the one armed.
    pub(crate) timer: Option<u64>,
}

impl LegDtls {
    /// Our role.
    pub(crate) fn role(&self) -> DtlsRole {
        self.role
    }

    /// A DTLS datagram (RFC 7983: first byte 20-63) for the handshake on `port`.
    pub(crate) fn input(&mut self, port: Port, datagram: &[u8], now: u64, at: Instant) -> Input {
        let Some(c) = self.component_mut(port) else {
            return Input::NoHandshake;
        };
        let Some(session) = c.session.as_mut() else {
            return Input::Over;
        };
        c.started_ns.get_or_insert(now);
        c.heard = true;
        session.handle_timeout(at);
        session.handle_packet(datagram);
        Input::Fed
    }

    /// The handshake's timer on `port` is due: the deadline, the end of a server's linger, or
    /// a retransmission. Returns the failure when the deadline passed; otherwise the caller
    /// drains the handshake ([`LegDtls::poll`]).
    pub(crate) fn timer(
        &mut self,
        port: Port,
        now: u64,
        clock: &DtlsClock,
        totals: &mut Counters,
    ) -> Option<(DtlsFailure, Option<&'static str>)> {
        let timeout = clock.opts.handshake_timeout.as_nanos() as u64;
        let role = self.role;
        let c = self.component_mut(port)?;
        // Only the latest (earliest) timer counts; older entries in the wheel are stale.
        match c.timer_at {
            Some(t) if t <= now => c.timer_at = None,
            _ => return None,
        }
        match c.phase {
            Phase::Handshaking if now >= c.created_ns + timeout => {
                let stage = timeout_stage(c, role, DtlsFailure::Timeout);
                c.stage = stage;
                return Some((fail(c, DtlsFailure::Timeout, totals), stage));
            }
            Phase::Established if c.linger_until.is_some_and(|l| l <= now) => {
                c.linger_until = None;
                if c.session.take().is_some() {
                    totals.dtls.release(1);
                }
                return None;
            }
            Phase::Failed(_) => return None,
            _ => {}
        }
        if let Some(s) = c.session.as_mut() {
            s.handle_timeout(clock.at(now));
        }
        None
    }

    /// Drains the handshake on `port`: its datagrams go to `out` towards `dest` (through
    /// `scratch`, at least the MTU), and once established its SRTP contexts come back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn poll(
        &mut self,
        port: Port,
        dest: Option<SocketAddr>,
        now: u64,
        clock: &DtlsClock,
        scratch: &mut [u8],
        out: &mut dyn Outbox,
        totals: &mut Counters,
    ) -> Drained {
        let linger = clock.opts.linger.as_nanos() as u64;
        let timeout = clock.opts.handshake_timeout.as_nanos() as u64;
        let role = self.role;
        let mut d = Drained {
            outcome: Outcome::Quiet,
            keys: None,
            unsent: 0,
            timer: None,
        };
        let Some(c) = self.component_mut(port) else {
            return d;
        };
        let Some(session) = c.session.as_mut() else {
            return d;
        };
        let mut result = None;
        let next = loop {
            match session.poll_output(scratch) {
                DtlsOutput::Packet(p) => {
                    match (dest, out.buffer()) {
                        (Some(to), Some(buf)) if p.len() <= buf.len() => {
                            buf[..p.len()].copy_from_slice(p);
                            out.send(port, p.len(), to);
                        }
                        _ => d.unsent += 1,
                    }
                    c.started_ns.get_or_insert(now);
                }
                DtlsOutput::Established(keys) => result = Some(Ok(keys)),
                DtlsOutput::Failed(f) => result = Some(Err(f)),
                DtlsOutput::Timeout(t) => {
                    break Some(t.saturating_duration_since(clock.epoch).as_nanos() as u64);
                }
            }
        };
        match result {
            Some(Ok(keys)) => {
                let suite = keys.suite;
                c.peer = Some(keys.peer);
                c.implementation = c.session.as_ref().and_then(|s| s.implementation());
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
                            totals.dtls.release(1);
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
                        totals.dtls.observe(took);
                        d.outcome = Outcome::Established {
                            suite,
                            took_ns: took,
                        };
                        d.keys = Some((tx, rx));
                    }
                    _ => d.outcome = Outcome::Failed(DtlsFailure::Protocol, None),
                }
            }
            Some(Err(f)) => {
                c.stage = timeout_stage(c, role, f);
                d.outcome = Outcome::Failed(f, c.stage);
            }
            None => {}
        }
        if let Outcome::Failed(f, _) = d.outcome {
            fail(c, f, totals);
            return d;
        }
        let want = match c.phase {
            Phase::Handshaking => {
                next.map_or(c.created_ns + timeout, |n| n.min(c.created_ns + timeout))
            }
            Phase::Established if c.session.is_some() => {
                let l = c.linger_until.unwrap_or(now);
                next.map_or(l, |n| n.min(l))
            }
            _ => return d,
        };
        if c.timer_at.is_none_or(|t| want < t) {
            c.timer_at = Some(want);
            d.timer = Some(want);
        }
        if role == DtlsRole::Server && matches!(d.outcome, Outcome::Established { .. }) {
            self.lingering = true;
        }
        d
    }
}

/// For a timeout, which flight was missing, in words: whether anything came from the peer.
fn timeout_stage(c: &Component, role: DtlsRole, f: DtlsFailure) -> Option<&'static str> {
    if f != DtlsFailure::Timeout {
        return None;
    }
    Some(match (role, c.heard) {
        (DtlsRole::Client, false) => {
            "no answer to our ClientHello: the peer is silent or unreachable, or every flight was lost"
        }
        (DtlsRole::Client, true) => {
            "the server answered, then its next flight never came: a later flight was lost"
        }
        (DtlsRole::Server, false) => {
            "no ClientHello came: the peer never started its handshake, or its first flight was lost"
        }
        (DtlsRole::Server, true) => {
            "the client's flights stopped mid-handshake: a later flight was lost"
        }
    })
}

/// Ends a handshake with a failure: the session goes, media stays blocked, the reason is
/// counted.
fn fail(c: &mut Component, f: DtlsFailure, totals: &mut Counters) -> DtlsFailure {
    if c.session.take().is_some() {
        totals.dtls.release(1);
    }
    c.phase = Phase::Failed(f);
    c.timer_at = None;
    totals.dtls.failed[f.index()] += 1;
    f
}

/// The engine instant of a worker time (ns since its epoch).
pub(crate) fn instant(epoch: Instant, now: u64) -> Instant {
    epoch + Duration::from_nanos(now)
}
