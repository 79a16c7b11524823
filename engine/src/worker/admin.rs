//! Stream administration in the worker: creating a stream (its sockets, its legs, its first
//! timers), changing it, and deleting it. Off the packet path, one command at a time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::sockets::{FxMap, LegSocks, Owner, SharedKey, SharedPort};
use super::wheel::TimerKind;
use super::{MediaOptions, Slot, Worker};
use crate::media::Port;
use crate::media::dtls::{LegDtls, instant};
use crate::media::leg::{Leg, LegInit};
use crate::media::stream::Stream;
use crate::model::{
    Crypto, DtlsSpec, LegInfo, LegSpec, Mode, SocketModel, StreamError, StreamInfo, StreamSpec,
    StreamStats, StreamUpdate,
};
use crate::proto::dtls::{DtlsContext, DtlsRole};
use crate::proto::pacer::RtpSource;

/// Checks a leg's DTLS request before anything changes: the engine has DTLS, the leg is not
/// also given SDES keys, and a client knows where to send its ClientHello.
fn check_dtls(
    media: &MediaOptions,
    d: &DtlsSpec,
    sdes_too: bool,
    remote: Option<SocketAddr>,
) -> Result<Arc<DtlsContext>, StreamError> {
    let ctx = media.dtls.clone().ok_or(StreamError::DtlsUnavailable)?;
    if sdes_too {
        return Err(StreamError::Invalid(
            "a leg takes DTLS-SRTP or SDES keys, not both",
        ));
    }
    if d.role == DtlsRole::Client && remote.is_none() {
        return Err(StreamError::Invalid(
            "a DTLS client needs the remote address to send its ClientHello to",
        ));
    }
    Ok(ctx)
}

fn has_keys(c: &Crypto) -> bool {
    !matches!(c, Crypto::None)
}

impl Worker {
    pub(super) fn create(&mut self, id: u64, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        let want_legs = if spec.mode == Mode::Relay { 2 } else { 1 };
        if spec.legs.len() != want_legs {
            return Err(StreamError::Invalid(if want_legs == 2 {
                "relay needs exactly two legs"
            } else {
                "this mode takes exactly one leg"
            }));
        }
        spec.codec.validate()?;
        if self.by_id.len() >= self.cfg.media.max_streams {
            return Err(StreamError::WorkerFull(self.cfg.media.max_streams));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let gen_ = self.gens[slot as usize];
        let now = self.now_ns();
        let mut legs = Vec::with_capacity(want_legs);
        let mut socks = [LegSocks::default(); 2];
        let mut dtls_legs = Vec::new();
        let mut result = Ok(());
        for (k, mut leg_spec) in spec.legs.into_iter().enumerate() {
            let dtls = match leg_spec.dtls.take() {
                None => None,
                Some(d) => match check_dtls(
                    &self.cfg.media,
                    &d,
                    has_keys(&leg_spec.tx) || has_keys(&leg_spec.rx),
                    leg_spec.remote,
                ) {
                    Ok(ctx) => Some((ctx, d)),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
            };
            match self.open_leg(slot, k as u8, leg_spec, now) {
                Ok((mut leg, s)) => {
                    if let Some((ctx, d)) = dtls {
                        let fresh = LegDtls::new(
                            &ctx,
                            &d,
                            leg.has_rtcp_port(),
                            instant(self.epoch, now),
                            now,
                            &mut self.counters,
                        );
                        leg.start_dtls(fresh, now);
                        dtls_legs.push((k, leg.has_rtcp_port()));
                    }
                    legs.push(leg);
                    socks[k] = s;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            for (leg, s) in legs.iter().zip(socks) {
                self.close_leg(s);
                self.counters.dtls.release(leg.dtls_live());
            }
            self.free.push(slot);
            return Err(e);
        }
        let source = spec.mode.generates().then(|| {
            // Start within one period, spread so that many streams do not send in lockstep.
            let period = spec.codec.period_ns();
            let start = now + self.rng.next_u64() % period.max(1);
            RtpSource::new(spec.codec, start, &mut self.rng)
        });
        let mut stream = Stream {
            id,
            mode: spec.mode,
            codec: spec.codec,
            legs,
            source,
            rtcp_interval_ns: u64::from(spec.rtcp_interval_ms) * 1_000_000,
            paused: spec.paused,
            report_ssrc: self.rng.next_u64() as u32,
            pace_pending: false,
            watch: self.cfg.media.watch.with(spec.watch),
        };
        let info = StreamInfo {
            id,
            worker: self.cfg.index,
            legs: stream
                .legs
                .iter()
                .map(|l| LegInfo {
                    local: l.local(),
                    local_rtcp: l.local_rtcp(),
                })
                .collect(),
            ssrc: stream.source.as_ref().map(RtpSource::ssrc),
            fingerprint: self
                .cfg
                .media
                .dtls
                .as_ref()
                .filter(|_| !dtls_legs.is_empty())
                .map(|c| c.identity().fingerprint().to_string()),
        };
        if let Some(src) = stream.source.as_ref().filter(|_| stream.generates()) {
            self.wheel
                .insert(src.next_due(), slot, gen_, TimerKind::Pace);
            stream.pace_pending = true;
        }
        if stream.reports() {
            let first = now + self.rtcp_delay(stream.rtcp_interval_ns);
            self.wheel.insert(first, slot, gen_, TimerKind::Rtcp);
        }
        self.slots[slot as usize] = Some(Slot { stream, socks });
        self.by_id.insert(id, slot);
        // A client sends its first flight now; a server arms its deadline.
        for (k, rtcp_port) in dtls_legs {
            self.dtls_drive(slot, k, Port::Rtp, now);
            if rtcp_port {
                self.dtls_drive(slot, k, Port::Rtcp, now);
            }
        }
        Ok(info)
    }

    fn local_ip(&self, ip: Option<IpAddr>) -> Result<usize, StreamError> {
        match ip {
            None => Ok(0),
            Some(ip) => self
                .cfg
                .media
                .local_ips
                .iter()
                .position(|&l| l == ip)
                .ok_or(StreamError::UnknownLocalIp(ip)),
        }
    }

    fn open_leg(
        &mut self,
        slot: u32,
        k: u8,
        spec: LegSpec,
        now: u64,
    ) -> Result<(Leg, LegSocks), StreamError> {
        let ip_idx = self.local_ip(spec.local_ip)?;
        let strict = spec.strict_source.unwrap_or(self.cfg.media.strict_source);
        if strict && spec.remote.is_none() {
            return Err(StreamError::Invalid("strict_source needs a remote address"));
        }
        if spec.pending && (spec.dtls.is_some() || has_keys(&spec.tx) || has_keys(&spec.rx)) {
            return Err(StreamError::Invalid(
                "a leg waiting for its keys (pending) has no crypto yet",
            ));
        }
        let init = |local, local_rtcp, shared| LegInit {
            local,
            local_rtcp,
            remote: spec.remote,
            remote_rtcp: spec.remote_rtcp,
            strict,
            shared,
            pending: spec.pending,
            tx: Crypto::None,
            rx: Crypto::None,
        };
        match spec.socket {
            SocketModel::Shared => {
                if !spec.rtcp_mux {
                    return Err(StreamError::Invalid("the shared-port model needs rtcp_mux"));
                }
                let Some(remote) = spec.remote else {
                    return Err(StreamError::Invalid(
                        "the shared-port model needs a remote address",
                    ));
                };
                let sp = self.shared_port(ip_idx)?;
                let key = SharedKey {
                    port: sp,
                    remote,
                    ssrc: spec.remote_ssrc,
                };
                let port = &mut self.shared[sp];
                let (local, sock) = (port.local, port.sock);
                let mut leg = Leg::new(init(local, None, true), now)?;
                leg.rekey(spec.tx, spec.rx)?;
                if !port.insert(key, (slot, k)) {
                    return Err(StreamError::SharedRemoteTaken(remote));
                }
                let socks = LegSocks {
                    rtp: sock,
                    rtcp: None,
                    shared: Some(key),
                    connected: false,
                };
                Ok((leg, socks))
            }
            SocketModel::PerStream => {
                let (rtp, rtcp) =
                    self.ports[ip_idx].bind(&self.cfg.media.socket, !spec.rtcp_mux)?;
                let local = rtp.local_addr()?;
                let local_rtcp = rtcp.as_ref().map(|s| s.local_addr()).transpose()?;
                let mut leg = Leg::new(init(local, local_rtcp, false), now)?;
                leg.rekey(spec.tx, spec.rx)?;
                let mut socks = LegSocks {
                    rtp: self.io.add_socket(rtp)?,
                    ..LegSocks::default()
                };
                let owner = |rtcp| Owner::Leg { slot, leg: k, rtcp };
                self.set_owner(socks.rtp, owner(false));
                if let Some(rtcp) = rtcp {
                    match self.io.add_socket(rtcp) {
                        Ok(s) => {
                            socks.rtcp = Some(s);
                            self.set_owner(s, owner(true));
                        }
                        Err(e) => {
                            self.close_leg(socks);
                            return Err(e.into());
                        }
                    }
                }
                if self.cfg.media.connect
                    && let Some(r) = spec.remote
                {
                    socks.connected = self.io.connect(socks.rtp, r).is_ok();
                    if let (Some(s), Some(rr)) = (socks.rtcp, leg.remote_rtcp()) {
                        let _ = self.io.connect(s, rr);
                    }
                }
                Ok((leg, socks))
            }
        }
    }

    fn shared_port(&mut self, ip_idx: usize) -> Result<usize, StreamError> {
        let ip = self.cfg.media.local_ips[ip_idx];
        if let Some(k) = self.shared.iter().position(|p| p.ip == ip) {
            return Ok(k);
        }
        let (sock, _) = self.ports[ip_idx].bind(&self.cfg.media.socket, false)?;
        let local = sock.local_addr()?;
        let id = self.io.add_socket(sock)?;
        let k = self.shared.len();
        self.set_owner(id, Owner::Shared(k));
        self.shared.push(SharedPort {
            ip,
            sock: id,
            local,
            by_addr: FxMap::default(),
            by_addr_ssrc: FxMap::default(),
        });
        Ok(k)
    }

    fn close_socket(&mut self, s: crate::io::SockId) {
        self.io.remove_socket(s);
        self.set_owner(s, Owner::Free);
    }

    fn close_leg(&mut self, socks: LegSocks) {
        match socks.shared {
            Some(key) => self.shared[key.port].remove(key),
            None => {
                self.close_socket(socks.rtp);
                if let Some(s) = socks.rtcp {
                    self.close_socket(s);
                }
            }
        }
    }

    pub(super) fn delete(&mut self, id: u64) -> Result<StreamStats, StreamError> {
        let slot = self
            .by_id
            .remove(&id)
            .ok_or(StreamError::NoSuchStream(id))?;
        let mut s = self.slots[slot as usize]
            .take()
            .ok_or(StreamError::NoSuchStream(id))?;
        let stats = s.stream.stats();
        for (leg, socks) in s.stream.legs.iter().zip(s.socks) {
            self.close_leg(socks);
            self.counters.dtls.release(leg.dtls_live());
        }
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.counters.streams_deleted += 1;
        Ok(stats)
    }

    /// Checks an update against the stream before anything changes.
    fn check_update(
        &self,
        slot: u32,
        u: &StreamUpdate,
    ) -> Result<Option<Arc<DtlsContext>>, StreamError> {
        let Some(s) = self.slots[slot as usize].as_ref() else {
            return Err(StreamError::Invalid("no such stream"));
        };
        let stream = &s.stream;
        if let Some(m) = u.mode {
            let ok = matches!(stream.mode, Mode::Send | Mode::Recv | Mode::SendRecv)
                && matches!(m, Mode::Send | Mode::Recv | Mode::SendRecv);
            if !ok {
                return Err(StreamError::Invalid(
                    "only send, recv and sendrecv switch between each other",
                ));
            }
        }
        let leg = |k: usize| {
            stream
                .legs
                .get(k)
                .ok_or(StreamError::Invalid("no such leg"))
        };
        if let Some((k, _)) = &u.remote
            && leg(*k)?.is_shared()
        {
            return Err(StreamError::Invalid(
                "a shared-port leg cannot change its remote; recreate it",
            ));
        }
        for &k in u
            .rtcp_mux
            .iter()
            .chain(u.remote_rtcp.as_ref().map(|(k, _)| k))
        {
            leg(k)?;
        }
        if let Some((k, _)) = u.remote_rtcp
            && (!stream.legs[k].has_rtcp_port() || u.rtcp_mux == Some(k))
        {
            return Err(StreamError::Invalid(
                "remote_rtcp: the leg multiplexes RTCP on its RTP port (it has no RTCP port)",
            ));
        }
        if let Some((k, _, _)) = &u.crypto {
            leg(*k)?;
        }
        match &u.dtls {
            None => Ok(None),
            Some((k, d)) => {
                let new_remote = u.remote.filter(|(rk, _)| rk == k).map(|(_, r)| r);
                let sdes_too = u.crypto.as_ref().is_some_and(|(ck, _, _)| ck == k);
                check_dtls(
                    &self.cfg.media,
                    d,
                    sdes_too,
                    leg(*k)?.remote().or(new_remote),
                )
                .map(Some)
            }
        }
    }

    pub(super) fn update(&mut self, id: u64, u: StreamUpdate) -> Result<(), StreamError> {
        let slot = *self.by_id.get(&id).ok_or(StreamError::NoSuchStream(id))?;
        let gen_ = self.gens[slot as usize];
        let now = self.now_ns();
        let dtls_ctx = self.check_update(slot, &u)?;
        let connect = self.cfg.media.connect;
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return Err(StreamError::NoSuchStream(id));
        };
        let was_generating = s.stream.generates();
        if let Some((k, tx, rx)) = u.crypto {
            let released = s.stream.legs[k].rekey_now(tx, rx, now)?;
            self.counters.dtls.release(released);
        }
        if let Some((k, remote)) = u.remote {
            s.stream.legs[k].set_remote(remote, now);
            if connect {
                s.socks[k].connected = self.io.connect(s.socks[k].rtp, remote).is_ok();
            }
        }
        if let Some((k, rr)) = u.remote_rtcp {
            s.stream.legs[k].set_remote_rtcp(rr);
            if connect && let Some(sock) = s.socks[k].rtcp {
                let _ = self.io.connect(sock, rr);
            }
        }
        let mut closed = None;
        if let Some(k) = u.rtcp_mux
            && let Some(sock) = s.socks[k].rtcp.take()
        {
            // RFC 5761 5.1.1: the answer accepted rtcp-mux, so RTCP moves to the RTP port and
            // the RTCP port is closed. Its own DTLS handshake, if any, goes with it.
            self.counters.dtls.release(s.stream.legs[k].mux_rtcp());
            closed = Some(sock);
        }
        if let Some(c) = u.codec {
            s.stream.codec = c;
            if let Some(src) = s.stream.source.as_mut() {
                src.set_profile(c);
            }
        }
        if let Some(p) = u.paused {
            s.stream.paused = p;
        }
        if let Some(m) = u.mode {
            s.stream.mode = m;
            if m.generates() && s.stream.source.is_none() {
                s.stream.source = Some(RtpSource::new(s.stream.codec, now, &mut self.rng));
            }
        }
        // A generating stream keeps its pacing timer alive; a stream that stopped generating
        // lets it lapse (see `pace`). Arm a new one only when generation starts again and none
        // is pending, so a stream never has two.
        if s.stream.generates() && !was_generating && !s.stream.pace_pending {
            s.stream.pace_pending = true;
            self.wheel.insert(now, slot, gen_, TimerKind::Pace);
        }
        if let Some(sock) = closed {
            self.close_socket(sock);
        }
        if let (Some((k, d)), Some(ctx)) = (u.dtls, dtls_ctx) {
            self.restart_dtls(slot, k, &ctx, &d, now);
        }
        Ok(())
    }

    /// A new handshake on leg `k` (a re-offer with a new fingerprint, or the answer to an
    /// offer that waited for it): media stops on the leg until it completes.
    fn restart_dtls(&mut self, slot: u32, k: usize, ctx: &DtlsContext, d: &DtlsSpec, now: u64) {
        let at = instant(self.epoch, now);
        let Some(s) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let leg = &mut s.stream.legs[k];
        let rtcp_port = leg.has_rtcp_port();
        let fresh = LegDtls::new(ctx, d, rtcp_port, at, now, &mut self.counters);
        let (old, early) = leg.start_dtls(fresh, now);
        self.counters.dtls.release(old);
        self.dtls_drive(slot, k, Port::Rtp, now);
        if rtcp_port {
            self.dtls_drive(slot, k, Port::Rtcp, now);
        }
        // A ClientHello that came before this answer: the handshake starts now.
        if let Some(e) = early
            && d.role == DtlsRole::Server
        {
            let len = e.data.len().min(self.dtls_in.len());
            self.dtls_in[..len].copy_from_slice(&e.data[..len]);
            self.dtls_datagram(slot, k, Port::Rtp, e.from, len, now);
        }
    }
}
