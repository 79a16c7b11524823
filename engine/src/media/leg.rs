//! One leg: its ports' addresses, the crypto of each direction, source latching, and what it
//! counts. The receive path ([`Leg::receive`]) runs in place on the datagram; the send side
//! protects in place ([`Leg::protect_forwarded`], [`Leg::send_generated`]).

use std::net::SocketAddr;

use super::dtls::{EarlyDtls, LegDtls};
use super::quality::{LegWatch, Quality};
use super::{Learned, Outbox, Port};
use crate::model::counters::suite_index;
use crate::model::{Counters, Crypto, Direction, DropCounts, DropReason};
use crate::proto::rtcp;
use crate::proto::rtp::RtpHeader;
use crate::proto::srtp::{SrtpConfigError, SrtpError, SrtpInbound, SrtpOutbound, Suite};
use crate::proto::{PacketClass, classify};

/// The DTLS record content type of handshake messages (ClientHello among them).
const DTLS_HANDSHAKE: u8 = 22;

/// What a leg counts as packets pass (the per-packet part of [`crate::model::LegStats`]; the
/// rest is computed when statistics are asked for).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegCounters {
    pub(crate) rx_suite: Option<Suite>,
    pub(crate) tx_suite: Option<Suite>,
    pub(crate) remote_ssrc: Option<u32>,
    pub(crate) last_seq_out: Option<u16>,
    pub(crate) packets_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) rtcp_in: u64,
    pub(crate) rtcp_out: u64,
    pub(crate) drops: DropCounts,
    pub(crate) rtp_drops: DropCounts,
    pub(crate) tx_drops: u64,
    pub(crate) remote_changes: u64,
}

/// How a leg starts: the addresses the worker bound and signaling gave, and its crypto.
pub(crate) struct LegInit {
    pub(crate) local: SocketAddr,
    /// Its own RTCP port (no rtcp-mux).
    pub(crate) local_rtcp: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    /// The peer's RTCP address (default for a leg with an RTCP port: RTP port + 1).
    pub(crate) remote_rtcp: Option<SocketAddr>,
    pub(crate) strict: bool,
    /// On a shared port: the remote is how the leg is found, so it never changes.
    pub(crate) shared: bool,
    pub(crate) pending: bool,
    pub(crate) tx: Crypto,
    pub(crate) rx: Crypto,
}

/// What the receive path made of a datagram on this leg.
pub(crate) enum Inbound {
    /// Dropped (counted) or consumed.
    Drop,
    /// DTLS for the leg's handshake.
    Handshake,
    /// Authenticated media, unprotected in place to `len` bytes.
    Media { rtcp: bool, len: usize },
}

/// The worker's state for one leg.
pub(crate) struct Leg {
    local: SocketAddr,
    local_rtcp: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    strict: bool,
    shared: bool,
    /// Waiting for its keys: nothing passes either way.
    pending: bool,
    rx: Option<SrtpInbound>,
    tx: Option<SrtpOutbound>,
    pub(super) counters: LegCounters,
    pub(super) quality: Quality,
    pub(super) watch: LegWatch,
    /// DTLS-SRTP state (None: SDES or plain).
    pub(super) dtls: Option<Box<LegDtls>>,
    /// SRTCP contexts of an RTCP port keyed by its own DTLS handshake (no rtcp-mux).
    pub(super) rtcp_crypto: Option<Box<RtcpCrypto>>,
    /// The last DTLS handshake datagram that reached this leg while it waited for its keys:
    /// an SDP offerer with `a=setup:actpass` gets the answerer's ClientHello before the answer
    /// (RFC 5763 5), and hands it to the handshake the answer sets up instead of waiting a
    /// retransmission (1 s) for it.
    early_dtls: Option<Box<EarlyDtls>>,
}

/// The SRTCP contexts of an RTCP port keyed by its own handshake.
pub(crate) struct RtcpCrypto {
    pub(crate) tx: SrtpOutbound,
    pub(crate) rx: SrtpInbound,
}

impl Leg {
    pub(crate) fn new(init: LegInit, now: u64) -> Result<Leg, SrtpConfigError> {
        let remote_rtcp = init.remote_rtcp.or_else(|| {
            init.remote
                .filter(|_| init.local_rtcp.is_some())
                .map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
        });
        let mut leg = Leg {
            local: init.local,
            local_rtcp: init.local_rtcp,
            remote: init.remote,
            remote_rtcp,
            strict: init.strict,
            shared: init.shared,
            pending: init.pending,
            rx: None,
            tx: None,
            counters: LegCounters::default(),
            quality: Quality::default(),
            watch: LegWatch::new(now),
            dtls: None,
            rtcp_crypto: None,
            early_dtls: None,
        };
        leg.rekey(init.tx, init.rx)?;
        Ok(leg)
    }

    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn local_rtcp(&self) -> Option<SocketAddr> {
        self.local_rtcp
    }

    /// Whether RTCP has a port of its own.
    pub(crate) fn has_rtcp_port(&self) -> bool {
        self.local_rtcp.is_some()
    }

    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    pub(crate) fn remote_rtcp(&self) -> Option<SocketAddr> {
        self.remote_rtcp
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// Counts a received datagram this leg does not use: once, by reason, into the leg's
    /// figures (and its RTP figures when it was RTP) and the worker's totals.
    #[inline]
    pub(crate) fn drop_rx(&mut self, reason: DropReason, rtp: bool, totals: &mut Counters) {
        self.counters.drops.add(reason);
        if rtp {
            self.counters.rtp_drops.add(reason);
        }
        totals.drops.add(reason);
    }

    /// Counts a packet this leg could not send.
    #[inline]
    pub(crate) fn drop_tx(&mut self, totals: &mut Counters) {
        self.counters.tx_drops += 1;
        totals.tx_drops += 1;
    }

    /// Sets the crypto of both directions (at creation, and for a rekey: counters stay). Both
    /// contexts are built before either is replaced, so a bad key changes nothing. SDES keys
    /// replace any DTLS keying, and end a wait for keys.
    pub(crate) fn rekey(&mut self, tx: Crypto, rx: Crypto) -> Result<u64, SrtpConfigError> {
        let tx_suite = tx.suite();
        let rx_suite = rx.suite();
        let new_tx = tx.policy().map(SrtpOutbound::new).transpose()?;
        let new_rx = rx.policy().map(SrtpInbound::new).transpose()?;
        self.tx = new_tx;
        self.rx = new_rx;
        let released = self.dtls.take().map_or(0, |d| d.live());
        self.rtcp_crypto = None;
        self.early_dtls = None;
        self.counters.tx_suite = tx_suite;
        self.counters.rx_suite = rx_suite;
        Ok(released)
    }

    /// New keys from an update: the wait for them is over and the silence clock restarts.
    /// Returns the DTLS sessions released.
    pub(crate) fn rekey_now(
        &mut self,
        tx: Crypto,
        rx: Crypto,
        now: u64,
    ) -> Result<u64, SrtpConfigError> {
        let released = self.rekey(tx, rx)?;
        self.pending = false;
        self.watch.restart(now);
        Ok(released)
    }

    /// A new remote from signaling: the old quality figures no longer tell.
    pub(crate) fn set_remote(&mut self, remote: SocketAddr, now: u64) {
        self.watch.restart(now);
        self.remote = Some(remote);
        self.quality.restart();
    }

    pub(crate) fn set_remote_rtcp(&mut self, remote: SocketAddr) {
        self.remote_rtcp = Some(remote);
    }

    /// RFC 5761 5.1.1: the answer accepted rtcp-mux, so RTCP moves to the RTP port and the
    /// RTCP port closes, with its own DTLS handshake if any. Returns the DTLS sessions released.
    pub(crate) fn mux_rtcp(&mut self) -> u64 {
        self.local_rtcp = None;
        self.remote_rtcp = None;
        self.rtcp_crypto = None;
        self.dtls.as_mut().map_or(0, |d| d.drop_rtcp())
    }

    /// Starts a fresh DTLS-SRTP handshake on this leg: media stops until it completes. Returns
    /// the sessions the old handshake held and a handshake datagram that arrived before it.
    pub(crate) fn start_dtls(&mut self, dtls: Box<LegDtls>, now: u64) -> (u64, Option<EarlyDtls>) {
        let old = self.dtls.replace(dtls).map_or(0, |d| d.live());
        self.tx = None;
        self.rx = None;
        self.rtcp_crypto = None;
        self.counters.tx_suite = None;
        self.counters.rx_suite = None;
        self.pending = false;
        self.watch.restart(now);
        (old, self.early_dtls.take().map(|e| *e))
    }

    /// DTLS sessions this leg holds (handshaking or lingering).
    pub(crate) fn dtls_live(&self) -> u64 {
        self.dtls.as_ref().map_or(0, |d| d.live())
    }

    /// Whether media of this kind may pass: always, unless the leg waits for its keys, or
    /// DTLS-SRTP has not (or could not) set them up.
    #[inline]
    pub(crate) fn media_open(&self, port: Port) -> bool {
        !self.pending && self.dtls.as_ref().is_none_or(|d| d.open(port))
    }

    /// The context that unprotects what arrives on this port.
    #[inline]
    fn rx_for(&mut self, port: Port) -> Option<&mut SrtpInbound> {
        match (&mut self.rtcp_crypto, port) {
            (Some(c), Port::Rtcp) => Some(&mut c.rx),
            _ => self.rx.as_mut(),
        }
    }

    /// The context that protects RTCP this leg sends (on its RTCP port when it has one).
    #[inline]
    fn rtcp_tx(&mut self) -> Option<&mut SrtpOutbound> {
        match (&mut self.rtcp_crypto, self.local_rtcp.is_some()) {
            (Some(c), true) => Some(&mut c.tx),
            _ => self.tx.as_mut(),
        }
    }

    /// Where RTCP goes: its own port and the peer's RTCP address when not muxed.
    pub(crate) fn rtcp_target(&self) -> (Port, Option<SocketAddr>) {
        if self.local_rtcp.is_some() {
            (Port::Rtcp, self.remote_rtcp)
        } else {
            (Port::Rtp, self.remote)
        }
    }

    /// Where DTLS on `port` goes.
    pub(crate) fn target(&self, port: Port) -> Option<SocketAddr> {
        match port {
            Port::Rtcp if self.local_rtcp.is_some() => self.remote_rtcp,
            _ => self.remote,
        }
    }

    /// A server learns its peer from the first handshake datagram when signaling gave none.
    pub(crate) fn learn_from_handshake(&mut self, port: Port, from: SocketAddr) -> Option<Learned> {
        if port == Port::Rtcp && self.local_rtcp.is_some() {
            self.remote_rtcp.get_or_insert(from);
            None
        } else if self.remote.is_none() {
            self.remote = Some(from);
            (!self.shared).then_some(Learned {
                leg: 0,
                port: Port::Rtp,
                peer: from,
            })
        } else {
            None
        }
    }

    /// A protect error: a key at the end of its lifetime becomes an event.
    fn note_tx_error(&mut self, e: SrtpError) {
        if e == SrtpError::LifetimeReached {
            self.watch.lifetime(Direction::Tx);
        }
    }

    fn drop_srtp_error(&mut self, e: SrtpError, rtp: bool, totals: &mut Counters) {
        let reason = match e {
            SrtpError::AuthFailed => DropReason::AuthFailed,
            SrtpError::Replayed { .. } => DropReason::Replayed,
            SrtpError::TooShort { .. } | SrtpError::Malformed(_) => DropReason::Malformed,
            SrtpError::LifetimeReached => {
                self.watch.lifetime(Direction::Rx);
                DropReason::KeyLifetime
            }
            _ => DropReason::SrtpOther,
        };
        self.drop_rx(reason, rtp, totals);
    }

    /// The receive path: demultiplex (RFC 7983), source check, unprotect in place, statistics,
    /// and source latching. `ours` is the stream's SSRC when it reads report blocks about
    /// itself; `clock` its RTP clock rate. A peer address learned on a per-stream socket comes
    /// back in `learned` (leg index left 0: the stream sets it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &mut self,
        port: Port,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: u64,
        ntp: u64,
        ours: Option<u32>,
        clock: u32,
        totals: &mut Counters,
        learned: &mut Option<Learned>,
    ) -> Inbound {
        let class = classify(&buf[..len]);
        let on_rtcp_port = port == Port::Rtcp;
        // DTLS on a DTLS leg goes to its handshake, after the same source check as media (on
        // the RTCP port, against the RTCP remote).
        let (is_rtcp, is_dtls) = match class {
            PacketClass::Rtp if !on_rtcp_port => (false, false),
            PacketClass::Rtcp | PacketClass::Rtp => (true, false),
            PacketClass::Dtls if self.dtls.is_some() => (on_rtcp_port, true),
            PacketClass::Dtls
                if !on_rtcp_port && self.pending && buf.first() == Some(&DTLS_HANDSHAKE) =>
            {
                // An offerer waiting for its answer: hold the latest handshake datagram (one
                // per leg, its buffer reused) for the DTLS the answer may bring.
                self.drop_rx(DropReason::BeforeAnswer, false, totals);
                let e = self.early_dtls.get_or_insert_with(|| {
                    Box::new(EarlyDtls {
                        from,
                        data: Vec::with_capacity(len),
                    })
                });
                e.from = from;
                e.data.clear();
                e.data.extend_from_slice(&buf[..len]);
                return Inbound::Drop;
            }
            PacketClass::Dtls | PacketClass::Stun | PacketClass::Zrtp | PacketClass::Turn => {
                // Not carried on this leg (no DTLS-SRTP here; STUN/ICE is not handled).
                self.drop_rx(DropReason::NotCarried, false, totals);
                return Inbound::Drop;
            }
            PacketClass::Unknown => {
                self.drop_rx(DropReason::Malformed, false, totals);
                return Inbound::Drop;
            }
        };
        let rtp = !is_rtcp && !is_dtls;
        if self.pending {
            // An offerer before its answer: the keys (SDES) or the handshake (DTLS) to read
            // this are not known yet, and an unauthenticated packet must not teach us the peer.
            self.drop_rx(DropReason::BeforeAnswer, rtp, totals);
            return Inbound::Drop;
        }
        let expected_src = if is_rtcp && self.local_rtcp.is_some() {
            self.remote_rtcp
        } else {
            self.remote
        };
        if self.strict && expected_src.is_some_and(|r| r != from) {
            self.drop_rx(DropReason::WrongSource, rtp, totals);
            return Inbound::Drop;
        }
        if is_dtls {
            return Inbound::Handshake;
        }
        if !self.media_open(port) {
            // DTLS-SRTP has not (or could not) set the keys up: nothing passes.
            self.drop_rx(DropReason::BeforeKeys, rtp, totals);
            return Inbound::Drop;
        }
        let rx = self.rx_for(port);
        let rx_suite = suite_index(rx.as_ref().map(|r| r.suite()));
        // Read before unprotecting (a failed AEAD open may leave the buffer changed): plain
        // RTCP where SRTCP belongs is a peer's protocol fault, not wrong keys.
        let plain_rtcp = is_rtcp && rx.is_some() && rtcp::is_plain_compound(&buf[..len]);
        let plain_len = match rx {
            Some(rx) => {
                let r = if is_rtcp {
                    rx.unprotect_rtcp(buf, len)
                } else {
                    rx.unprotect_rtp(buf, len)
                };
                match r {
                    Ok(l) => l,
                    Err(SrtpError::AuthFailed | SrtpError::Replayed { .. }) if plain_rtcp => {
                        self.drop_rx(DropReason::RtcpUnprotected, false, totals);
                        return Inbound::Drop;
                    }
                    Err(e) => {
                        self.drop_srtp_error(e, rtp, totals);
                        return Inbound::Drop;
                    }
                }
            }
            None => len,
        };
        totals.rx_packets[rx_suite] += 1;
        totals.rx_bytes[rx_suite] += len as u64;
        if let Some(d) = self.dtls.as_mut()
            && d.is_lingering()
        {
            // The peer protects with the keys: a server's session has nothing left to answer.
            totals.dtls.release(d.release_lingering());
        }
        // The packet authenticated (or is well-formed plain RTP below): latch the source.
        if is_rtcp {
            // Report blocks about us give the round trip (only streams that send reports ask).
            let Ok(summary) = rtcp::parse_compound(&buf[..plain_len], ours) else {
                self.drop_rx(DropReason::Malformed, false, totals);
                return Inbound::Drop;
            };
            self.counters.rtcp_in += 1;
            if self.local_rtcp.is_some() {
                if self.remote_rtcp != Some(from) {
                    self.remote_rtcp = Some(from);
                    *learned = Some(Learned {
                        leg: 0,
                        port: Port::Rtcp,
                        peer: from,
                    });
                }
            } else if self.remote != Some(from) {
                self.latch(from, learned);
            }
            self.quality.on_rtcp(&summary, ours.is_some(), now, ntp);
        } else {
            let hdr = match RtpHeader::parse(&buf[..plain_len]) {
                Ok(h) => h,
                Err(_) => {
                    self.drop_rx(DropReason::Malformed, true, totals);
                    return Inbound::Drop;
                }
            };
            self.counters.packets_in += 1;
            self.counters.bytes_in += len as u64;
            if self.counters.remote_ssrc != Some(hdr.ssrc) {
                if self.counters.remote_ssrc.is_some() {
                    self.quality.restart();
                }
                self.counters.remote_ssrc = Some(hdr.ssrc);
            }
            self.quality.on_rtp(&hdr, now, clock);
            if self.remote != Some(from) {
                self.latch(from, learned);
            }
        }
        Inbound::Media {
            rtcp: is_rtcp,
            len: plain_len,
        }
    }

    /// The peer's RTP address changed (or became known) with an authenticated packet.
    fn latch(&mut self, from: SocketAddr, learned: &mut Option<Learned>) {
        if self.remote.is_some() {
            self.counters.remote_changes += 1;
        }
        self.remote = Some(from);
        if !self.shared {
            *learned = Some(Learned {
                leg: 0,
                port: Port::Rtp,
                peer: from,
            });
        }
    }

    /// Protects a forwarded packet in place (`len` bytes of plain RTP or RTCP) for this leg to
    /// send: echo sends it back out of the leg it came in on, relay out of the other. Returns
    /// the port, the protected length and where to, or `None` (counted) when it cannot go.
    pub(crate) fn protect_forwarded(
        &mut self,
        is_rtcp: bool,
        buf: &mut [u8],
        len: usize,
        totals: &mut Counters,
    ) -> Option<(Port, usize, SocketAddr)> {
        let out_port = if is_rtcp && self.local_rtcp.is_some() {
            Port::Rtcp
        } else {
            Port::Rtp
        };
        if !self.media_open(out_port) {
            // The outgoing leg waits for its answer or its handshake.
            self.drop_tx(totals);
            return None;
        }
        let tx = if is_rtcp {
            self.rtcp_tx()
        } else {
            self.tx.as_mut()
        };
        let suite = suite_index(tx.as_ref().map(|t| t.suite()));
        let out_len = match tx {
            Some(tx) => {
                let r = if is_rtcp {
                    tx.protect_rtcp(buf, len)
                } else {
                    tx.protect_rtp(buf, len)
                };
                match r {
                    Ok(l) => l,
                    Err(e) => {
                        self.note_tx_error(e);
                        self.drop_tx(totals);
                        return None;
                    }
                }
            }
            None => len,
        };
        let dest = if is_rtcp {
            self.rtcp_target().1
        } else {
            self.remote
        };
        let Some(dest) = dest else {
            self.drop_tx(totals);
            return None;
        };
        totals.tx_packets[suite] += 1;
        totals.tx_bytes[suite] += out_len as u64;
        if is_rtcp {
            self.counters.rtcp_out += 1;
        } else {
            self.counters.packets_out += 1;
            self.counters.bytes_out += out_len as u64;
            self.counters.last_seq_out = Some(u16::from_be_bytes([buf[2], buf[3]]));
        }
        Some((out_port, out_len, dest))
    }

    /// Whether generated RTP can go out now: the keys exist and the peer is known.
    pub(crate) fn can_send_rtp(&self) -> bool {
        self.media_open(Port::Rtp) && self.remote.is_some()
    }

    /// Protects and sends one generated RTP packet of `len` bytes already written into the
    /// outbox's current buffer.
    pub(crate) fn send_generated(
        &mut self,
        out: &mut dyn Outbox,
        len: usize,
        seq: u16,
        totals: &mut Counters,
    ) {
        let suite = suite_index(self.tx.as_ref().map(|t| t.suite()));
        let Some(to) = self.remote else {
            self.drop_tx(totals);
            return;
        };
        let len = match (self.tx.as_mut(), out.buffer()) {
            (Some(tx), Some(buf)) => match tx.protect_rtp(buf, len) {
                Ok(l) => l,
                Err(e) => {
                    self.note_tx_error(e);
                    self.drop_tx(totals);
                    return;
                }
            },
            (None, Some(_)) => len,
            (_, None) => {
                self.drop_tx(totals);
                return;
            }
        };
        out.send(Port::Rtp, len, to);
        self.counters.packets_out += 1;
        self.counters.bytes_out += len as u64;
        self.counters.last_seq_out = Some(seq);
        totals.tx_packets[suite] += 1;
        totals.tx_bytes[suite] += len as u64;
    }

    /// Writes, protects and sends an RTCP report (sender info when the stream sends, a report
    /// block about the peer when it has heard one). Nothing goes before the peer and the keys
    /// are known.
    pub(crate) fn send_report(
        &mut self,
        out: &mut dyn Outbox,
        our_ssrc: u32,
        sender: Option<rtcp::SenderInfo>,
        cname: &[u8],
        now: u64,
    ) {
        let block = self
            .counters
            .remote_ssrc
            .and_then(|ssrc| self.quality.report_block(ssrc, now));
        let (port, to) = self.rtcp_target();
        let Some(to) = to else { return };
        if !self.media_open(port) {
            return;
        }
        let Some(buf) = out.buffer() else { return };
        let Some(len) = rtcp::write_report(buf, our_ssrc, sender, block, cname) else {
            return;
        };
        let len = match self.rtcp_tx() {
            Some(tx) => match tx.protect_rtcp(buf, len) {
                Ok(l) => l,
                Err(e) => {
                    self.note_tx_error(e);
                    return;
                }
            },
            None => len,
        };
        out.send(port, len, to);
        self.counters.rtcp_out += 1;
    }

    /// Keys from a handshake: for the RTP port (or both, muxed), or the RTCP port's own.
    pub(crate) fn install_dtls_keys(
        &mut self,
        port: Port,
        suite: Suite,
        tx: SrtpOutbound,
        rx: SrtpInbound,
    ) {
        if port == Port::Rtcp && self.local_rtcp.is_some() {
            self.rtcp_crypto = Some(Box::new(RtcpCrypto { tx, rx }));
        } else {
            self.tx = Some(tx);
            self.rx = Some(rx);
            self.counters.tx_suite = Some(suite);
            self.counters.rx_suite = Some(suite);
        }
    }
}
