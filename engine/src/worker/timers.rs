//! What a worker does when a timer fires (pacing, RTCP reports, DTLS retransmissions and
//! deadlines) and how it drives a handshake: the media logic decides, the worker lends it the
//! sockets ([`LegOutbox`]) and arms the timers it asks for.

use std::net::SocketAddr;

use super::Worker;
use super::sockets::LegOutbox;
use super::wheel::TimerKind;
use crate::media::Port;
use crate::media::dtls::DtlsClock;
use crate::proto::dtls::DtlsOptions;

impl Worker {
    /// The clock and timings every handshake of this worker runs by.
    fn dtls_clock(&self) -> DtlsClock {
        DtlsClock {
            epoch: self.epoch,
            opts: self
                .cfg
                .media
                .dtls
                .as_ref()
                .map_or_else(DtlsOptions::default, |c| *c.options()),
        }
    }

    pub(super) fn fire_timers(&mut self, now: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for e in due.drain(..) {
            if self.gens.get(e.slot as usize) != Some(&e.gen_) {
                continue;
            }
            match e.kind {
                TimerKind::Pace => self.pace(e.slot, e.gen_, now),
                TimerKind::Rtcp => self.send_report(e.slot, e.gen_, now),
                TimerKind::Dtls { leg, rtcp } => {
                    self.dtls_timer(e.slot, usize::from(leg), Port::of(rtcp), now)
                }
            }
        }
        self.due = due;
    }

    fn pace(&mut self, slot: u32, gen_: u32, now: u64) {
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        s.stream.pace_pending = false;
        if !s.stream.generates() {
            return; // paused or switched to recv: the timer lapses until resumed
        }
        let mut out = LegOutbox {
            io: &mut *self.io,
            socks: s.socks[0],
        };
        let next = s.stream.pace(now, &mut out, &mut self.counters);
        s.stream.pace_pending = true;
        self.wheel.insert(next, slot, gen_, TimerKind::Pace);
    }

    fn send_report(&mut self, slot: u32, gen_: u32, now: u64) {
        let ntp = self.ntp_at(now);
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if !s.stream.reports() {
            return;
        }
        let mut out = LegOutbox {
            io: &mut *self.io,
            socks: s.socks[0],
        };
        s.stream
            .send_report(now, ntp, self.cfg.media.cname.as_bytes(), &mut out);
        let mean = s.stream.rtcp_interval_ns;
        let next = now + self.rtcp_delay(mean);
        self.wheel.insert(next, slot, gen_, TimerKind::Rtcp);
    }

    /// RFC 3550 6.3.1: the interval randomized to 0.5-1.5 times the mean.
    pub(super) fn rtcp_delay(&mut self, mean_ns: u64) -> u64 {
        mean_ns / 2 + self.rng.next_u64() % mean_ns.max(1)
    }

    /// Drains leg `k`'s handshake on `port`: sends its flights, reports its outcome, arms its
    /// timer.
    pub(super) fn dtls_drive(&mut self, slot: u32, k: usize, port: Port, now: u64) {
        let clock = self.dtls_clock();
        let gen_ = self.gens[slot as usize];
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let mut out = LegOutbox {
            io: &mut *self.io,
            socks: s.socks[k.min(1)],
        };
        let (event, timer) = s.stream.dtls_poll(
            k,
            port,
            now,
            &clock,
            &mut self.dtls_out,
            &mut out,
            &mut self.counters,
        );
        if let Some(at) = timer {
            let kind = TimerKind::Dtls {
                leg: k as u8,
                rtcp: port == Port::Rtcp,
            };
            self.wheel.insert(at, slot, gen_, kind);
        }
        if let Some(e) = event {
            self.emit(e);
        }
    }

    fn dtls_timer(&mut self, slot: u32, k: usize, port: Port, now: u64) {
        let clock = self.dtls_clock();
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        match s
            .stream
            .dtls_timer(k, port, now, &clock, &mut self.counters)
        {
            Some(failed) => self.emit(failed),
            None => self.dtls_drive(slot, k, port, now),
        }
    }

    /// A DTLS datagram copied into `dtls_in[..len]` for leg `k`'s handshake on `port`.
    pub(super) fn dtls_datagram(
        &mut self,
        slot: u32,
        k: usize,
        port: Port,
        from: SocketAddr,
        len: usize,
        now: u64,
    ) {
        let clock = self.dtls_clock();
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let (go, learned) = s.stream.dtls_datagram(
            k,
            port,
            from,
            &self.dtls_in[..len],
            now,
            &clock,
            &mut self.counters,
        );
        if let Some(l) = learned {
            self.learned(slot, l);
        }
        if go {
            self.dtls_drive(slot, k, port, now);
        }
    }
}
