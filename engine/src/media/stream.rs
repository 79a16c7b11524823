//! A stream: its legs, its RTP source and its mode. What arrives on a leg goes through that
//! leg's receive path; echo sends it back out of the same leg, relay out of the other. What
//! the stream generates (paced RTP, RTCP reports) leaves through leg 0.

use std::net::SocketAddr;

use super::dtls::{DtlsClock, Outcome};
use super::leg::{Inbound, Leg};
use super::{Action, Learned, Outbox, Port};
use crate::model::{Component, Counters, Event, Mode, StreamStats, WatchOptions};
use crate::proto::dtls::DtlsFailure;
use crate::proto::pacer::{CodecProfile, RtpSource};
use crate::proto::rtcp::SenderInfo;

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
    /// Whether a pacing timer is armed (at most one at a time).
    pub(crate) pace_pending: bool,
    /// What the event sweep watches for.
    pub(crate) watch: WatchOptions,
}

/// What a handshake did, as an event for the stream's clients (none while it goes on).
pub(crate) fn dtls_event(
    stream: u64,
    leg: usize,
    component: Component,
    role: crate::proto::dtls::DtlsRole,
    outcome: Outcome,
) -> Option<Event> {
    match outcome {
        Outcome::Quiet => None,
        Outcome::Established { suite, took_ns } => Some(Event::DtlsEstablished {
            stream,
            leg,
            component,
            role,
            suite,
            handshake_ms: took_ns as f64 / 1e6,
        }),
        Outcome::Failed(f, detail) => Some(failed_event(stream, leg, component, role, f, detail)),
    }
}

fn failed_event(
    stream: u64,
    leg: usize,
    component: Component,
    role: crate::proto::dtls::DtlsRole,
    f: DtlsFailure,
    detail: Option<&'static str>,
) -> Event {
    tracing::debug!(stream, leg, component = component.name(), reason = %f, "DTLS handshake failed");
    Event::DtlsFailed {
        stream,
        leg,
        component,
        role,
        reason: f.kind(),
        alert: f.alert().map(Into::into),
        detail: detail.map(Into::into),
    }
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

    /// One datagram that arrived on leg `k`'s `port`, in place in `buf`: the leg's receive
    /// path, then for echo and relay the re-protect and the send decision.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_datagram(
        &mut self,
        k: usize,
        port: Port,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: u64,
        ntp: u64,
        totals: &mut Counters,
    ) -> (Action, Option<Learned>) {
        let ours = self.mode.reports().then(|| self.our_ssrc());
        let clock = self.codec.clock_rate();
        let mut learned = None;
        let Some(leg) = self.legs.get_mut(k) else {
            return (Action::Drop, None);
        };
        let inbound = leg.receive(
            port,
            from,
            buf,
            len,
            now,
            ntp,
            ours,
            clock,
            totals,
            &mut learned,
        );
        if let Some(l) = &mut learned {
            l.leg = k as u8;
        }
        let (is_rtcp, plain_len) = match inbound {
            Inbound::Drop => return (Action::Drop, learned),
            Inbound::Handshake => return (Action::Handshake, learned),
            Inbound::Media { rtcp, len } => (rtcp, len),
        };
        // Forward: echo back on this leg, relay out of the other.
        let out_k = match self.mode {
            Mode::Echo if !is_rtcp => k,
            Mode::Relay => 1 - k,
            _ => return (Action::Drop, learned),
        };
        match self.legs[out_k].protect_forwarded(is_rtcp, buf, plain_len, totals) {
            Some((port, len, to)) => (
                Action::Send {
                    leg: out_k as u8,
                    port,
                    len,
                    to,
                },
                learned,
            ),
            None => (Action::Drop, learned),
        }
    }

    /// Sends what is due of the stream's RTP at `now` out of leg 0; returns when the next
    /// packet is due. Until the leg can send (no keys, no peer), due packets go unsent and use
    /// no sequence number, so a receiver's loss counts only packets that left.
    pub(crate) fn pace(&mut self, now: u64, out: &mut dyn Outbox, totals: &mut Counters) -> u64 {
        let Some(source) = self.source.as_mut() else {
            return u64::MAX;
        };
        let leg = &mut self.legs[0];
        loop {
            if !leg.can_send_rtp() {
                if !source.skip_due(now) {
                    break;
                }
                continue;
            }
            let Some(buf) = out.buffer() else {
                // No send buffer: keep pace rather than burst later.
                if !source.skip_due(now) {
                    break;
                }
                leg.drop_tx(totals);
                continue;
            };
            let Some(len) = source.poll_packet(now, buf) else {
                break;
            };
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            leg.send_generated(out, len, seq, totals);
        }
        source.next_due()
    }

    /// Sends the stream's RTCP report out of leg 0 (`ntp`: the NTP time now).
    pub(crate) fn send_report(&mut self, now: u64, ntp: u64, cname: &[u8], out: &mut dyn Outbox) {
        let our_ssrc = self.our_ssrc();
        let sender = self
            .source
            .as_ref()
            .filter(|s| s.packets > 0)
            .map(|s| SenderInfo {
                ntp,
                rtp_ts: s.last_timestamp(),
                packets: s.packets as u32,
                octets: s.payload_bytes as u32,
            });
        self.legs[0].send_report(out, our_ssrc, sender, cname, now);
    }

    /// Drains leg `k`'s handshake on `port` into `out`; returns the event it makes and the
    /// timer (ns) to arm, if earlier than the one armed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dtls_poll(
        &mut self,
        k: usize,
        port: Port,
        now: u64,
        clock: &DtlsClock,
        scratch: &mut [u8],
        out: &mut dyn Outbox,
        totals: &mut Counters,
    ) -> (Option<Event>, Option<u64>) {
        let id = self.id;
        let Some(leg) = self.legs.get_mut(k) else {
            return (None, None);
        };
        let Some(role) = leg.dtls_role() else {
            return (None, None);
        };
        let component = leg.dtls_component(port);
        let (outcome, timer) = leg.dtls_poll(port, now, clock, scratch, out, totals);
        (dtls_event(id, k, component, role, outcome), timer)
    }

    /// A DTLS datagram for leg `k`'s handshake on `port`; true when the handshake must be
    /// drained. A peer learned from it comes back for the worker to connect to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dtls_datagram(
        &mut self,
        k: usize,
        port: Port,
        from: SocketAddr,
        datagram: &[u8],
        now: u64,
        clock: &DtlsClock,
        totals: &mut Counters,
    ) -> (bool, Option<Learned>) {
        let Some(leg) = self.legs.get_mut(k) else {
            return (false, None);
        };
        // Only a ClientHello teaches a server its peer: one datagram of junk from anyone
        // would otherwise take the leg (its socket connected to the sender) for good.
        let learned = crate::proto::dtls::opens_client_hello(datagram)
            .then(|| leg.learn_from_handshake(port, from))
            .flatten()
            .map(|mut l| {
                l.leg = k as u8;
                l
            });
        let go = leg.dtls_input(port, datagram, now, clock.at(now), totals);
        (go, learned)
    }

    /// Leg `k`'s handshake timer on `port` is due; a failure (the deadline) comes back as its
    /// event, else the handshake is to be drained.
    pub(crate) fn dtls_timer(
        &mut self,
        k: usize,
        port: Port,
        now: u64,
        clock: &DtlsClock,
        totals: &mut Counters,
    ) -> Option<Event> {
        let id = self.id;
        let leg = self.legs.get_mut(k)?;
        let role = leg.dtls_role()?;
        let component = leg.dtls_component(port);
        let (f, detail) = leg.dtls_timer(port, now, clock, totals)?;
        Some(failed_event(id, k, component, role, f, detail))
    }

    pub(crate) fn stats(&mut self) -> StreamStats {
        let codec = self.codec;
        StreamStats {
            id: self.id,
            mode: self.mode,
            paused: self.paused,
            generated: self.source.as_ref().map_or(0, |s| s.packets),
            pacing_skips: self.source.as_ref().map_or(0, |s| s.skipped_periods),
            legs: self.legs.iter_mut().map(|l| l.stats(&codec)).collect(),
        }
    }

    /// Turns what the packet path counted into events (silence, failures, key lifetime).
    pub(crate) fn sweep(&mut self, now: u64, mut emit: impl FnMut(Event)) {
        let receives = self.receives();
        for (k, leg) in self.legs.iter_mut().enumerate() {
            leg.sweep(self.id, k, receives, self.watch, now, &mut emit);
        }
    }
}
