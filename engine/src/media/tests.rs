//! Legs and streams driven in simulated time, with no sockets: datagrams go in by hand and
//! come out of a test outbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::dtls::{DtlsClock, LegDtls, instant};
use super::leg::{Leg, LegInit};
use super::stream::Stream;
use super::{Action, Outbox, Port};
use crate::model::counters::suite_index;
use crate::model::{Counters, Crypto, DropReason, Event, Mode, WatchOptions};
use crate::proto::dtls::{DtlsContext, DtlsIdentity, DtlsOptions, DtlsRole};
use crate::proto::pacer::{Codec, CodecProfile, RtpSource};
use crate::proto::rtp::write_header;
use crate::proto::srtp::{MasterKey, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};

const SUITE: Suite = Suite::AesCm128HmacSha1_80;
const PERIOD: u64 = 20_000_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn key(b: u8) -> Vec<u8> {
    vec![b; SUITE.master_len()]
}

fn sdes(b: u8) -> Crypto {
    Crypto::sdes(SUITE, &key(b)).unwrap()
}

fn policy(b: u8) -> SrtpPolicy {
    SrtpPolicy::new(SUITE, MasterKey::new(SUITE, &key(b)).unwrap())
}

/// A datagram buffer with room for the SRTP tag.
fn rtp(seq: u16, ssrc: u32) -> (Vec<u8>, usize) {
    let mut b = vec![0u8; crate::io::BUF_SIZE];
    write_header(&mut b, 0, false, seq, u32::from(seq) * 160, ssrc);
    for (i, x) in b[12..172].iter_mut().enumerate() {
        *x = i as u8;
    }
    (b, 172)
}

fn init(remote: Option<SocketAddr>, tx: Crypto, rx: Crypto) -> LegInit {
    LegInit {
        local: addr(4000),
        local_rtcp: None,
        remote,
        remote_rtcp: None,
        strict: false,
        shared: false,
        pending: false,
        tx,
        rx,
    }
}

fn stream(mode: Mode, legs: Vec<Leg>, source: Option<RtpSource>) -> Stream {
    Stream {
        id: 1,
        mode,
        codec: CodecProfile::default_for(Codec::Pcmu),
        legs,
        source,
        rtcp_interval_ns: 0,
        paused: false,
        report_ssrc: 99,
        pace_pending: false,
        watch: WatchOptions::default(),
    }
}

/// An outbox that keeps what is sent, with a budget of free buffers.
struct Wire {
    buf: Vec<u8>,
    free: usize,
    sent: Vec<(Port, Vec<u8>, SocketAddr)>,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            buf: vec![0; crate::io::BUF_SIZE],
            free: usize::MAX,
            sent: Vec::new(),
        }
    }
}

impl Outbox for Wire {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        (self.free > 0).then_some(&mut self.buf[..])
    }

    fn send(&mut self, port: Port, len: usize, to: SocketAddr) {
        self.sent.push((port, self.buf[..len].to_vec(), to));
        self.free = self.free.saturating_sub(1);
    }
}

#[test]
fn echo_reflects_under_its_own_keys_and_counts_each_packet_once() {
    let peer = addr(5000);
    let leg = Leg::new(init(Some(peer), sdes(2), sdes(1)), 0).unwrap();
    let mut s = stream(Mode::Echo, vec![leg], None);
    let mut totals = Counters::default();
    let mut sender = SrtpOutbound::new(policy(1)).unwrap();
    let mut back = SrtpInbound::new(policy(2)).unwrap();
    let (mut b, len) = rtp(10, 0xabc);
    let plain = b[..len].to_vec();
    let len = sender.protect_rtp(&mut b, len).unwrap();
    let (action, learned) = s.on_datagram(0, Port::Rtp, peer, &mut b, len, PERIOD, 0, &mut totals);
    let Action::Send {
        leg: 0,
        port: Port::Rtp,
        len: out,
        to,
    } = action
    else {
        panic!("{action:?}");
    };
    assert_eq!(to, peer);
    assert_eq!(learned, None, "the signalled peer sent it");
    let n = back.unprotect_rtp(&mut b, out).unwrap();
    assert_eq!(&b[..n], &plain[..]);
    let st = s.stats();
    let l = &st.legs[0];
    assert_eq!((l.packets_in, l.packets_out), (1, 1));
    assert_eq!((l.last_seq_out, l.highest_seq_in), (Some(10), Some(10)));
    assert_eq!(l.drops.total(), 0);
    let k = suite_index(Some(SUITE));
    assert_eq!((totals.rx_packets[k], totals.tx_packets[k]), (1, 1));
}

#[test]
fn every_drop_is_counted_once_by_reason_in_the_leg_and_the_totals() {
    let peer = addr(5000);
    let mut li = init(Some(peer), Crypto::None, Crypto::None);
    li.pending = true;
    li.strict = true;
    let leg = Leg::new(li, 0).unwrap();
    let mut s = stream(Mode::Recv, vec![leg], None);
    let mut totals = Counters::default();
    let feed = |s: &mut Stream, totals: &mut Counters, b: &mut [u8], len, from| {
        s.on_datagram(0, Port::Rtp, from, b, len, PERIOD, 0, totals)
            .0
    };
    // Before the answer: RTP and RTCP are dropped, and only the RTP one is RTP.
    let (mut b, len) = rtp(1, 7);
    assert_eq!(feed(&mut s, &mut totals, &mut b, len, peer), Action::Drop);
    let mut rr = [0x81u8, 201, 0, 1, 0, 0, 0, 7];
    assert_eq!(feed(&mut s, &mut totals, &mut rr, 8, peer), Action::Drop);
    // Keys arrive; one packet under the wrong key, one from a stranger, one well-formed.
    s.legs[0].rekey_now(Crypto::None, sdes(1), PERIOD).unwrap();
    let mut wrong = SrtpOutbound::new(policy(9)).unwrap();
    let (mut b, len) = rtp(2, 7);
    let len = wrong.protect_rtp(&mut b, len).unwrap();
    assert_eq!(feed(&mut s, &mut totals, &mut b, len, peer), Action::Drop);
    let mut right = SrtpOutbound::new(policy(1)).unwrap();
    let (mut b, len) = rtp(3, 7);
    let len = right.protect_rtp(&mut b, len).unwrap();
    assert_eq!(
        feed(&mut s, &mut totals, &mut b, len, addr(6666)),
        Action::Drop
    );
    let (mut b, len) = rtp(4, 7);
    let len = right.protect_rtp(&mut b, len).unwrap();
    assert_eq!(
        feed(&mut s, &mut totals, &mut b, len, peer),
        Action::Drop,
        "recv consumes"
    );
    let mut junk = [0xffu8; 3];
    feed(&mut s, &mut totals, &mut junk, 3, peer);

    let l = s.stats().legs.remove(0);
    assert_eq!(l.packets_in, 1);
    assert_eq!(l.drops.get(DropReason::BeforeAnswer), 2);
    assert_eq!(l.rtp_drops.get(DropReason::BeforeAnswer), 1);
    assert_eq!(l.drops.get(DropReason::AuthFailed), 1);
    assert_eq!(l.drops.get(DropReason::WrongSource), 1);
    assert_eq!(l.drops.get(DropReason::Malformed), 1);
    assert_eq!(l.rtp_drops.total(), 3, "early, auth, source");
    // The legacy fields are the same counts.
    assert_eq!(
        (
            l.early_drops,
            l.auth_failures,
            l.source_mismatch,
            l.malformed
        ),
        (2, 1, 1, 1)
    );
    // One leg: the totals are exactly its drops.
    assert_eq!(totals.drops, l.drops);
}

#[test]
fn paced_packets_use_no_sequence_number_until_they_can_leave() {
    let peer = addr(5000);
    let mut li = init(Some(peer), Crypto::None, Crypto::None);
    li.pending = true;
    let leg = Leg::new(li, 0).unwrap();
    let profile = CodecProfile::default_for(Codec::Pcmu);
    let source = RtpSource::with_start(profile, 0x1234, 100, 0, 0, 1);
    let mut s = stream(Mode::SendRecv, vec![leg], Some(source));
    let mut totals = Counters::default();
    let mut wire = Wire::new();
    // Five periods before the answer: nothing leaves.
    for t in 0..5 {
        s.pace(t * PERIOD, &mut wire, &mut totals);
    }
    assert!(wire.sent.is_empty());
    s.legs[0]
        .rekey_now(Crypto::None, Crypto::None, 5 * PERIOD)
        .unwrap();
    s.pace(5 * PERIOD, &mut wire, &mut totals);
    // No send buffer for one period: the packet is not sent, and uses no number.
    wire.free = 0;
    s.pace(6 * PERIOD, &mut wire, &mut totals);
    wire.free = usize::MAX;
    s.pace(7 * PERIOD, &mut wire, &mut totals);
    let seqs: Vec<u16> = wire
        .sent
        .iter()
        .map(|(_, d, _)| u16::from_be_bytes([d[2], d[3]]))
        .collect();
    assert_eq!(seqs, [100, 101]);
    let st = s.stats();
    assert_eq!(st.legs[0].packets_out, 2);
    assert_eq!(st.legs[0].tx_drops, 1);
    assert_eq!(st.legs[0].last_seq_out, Some(101));
    assert_eq!(s.source.as_ref().unwrap().unsent, 6);
    // A receiver of what left sees no loss.
    let mut rx = stream(
        Mode::Recv,
        vec![Leg::new(init(None, Crypto::None, Crypto::None), 0).unwrap()],
        None,
    );
    for (_, mut d, _) in wire.sent {
        let len = d.len();
        rx.on_datagram(0, Port::Rtp, peer, &mut d, len, 0, 0, &mut totals);
    }
    let l = rx.stats().legs.remove(0);
    assert_eq!((l.packets_in, l.lost), (2, 0));
}

#[test]
fn relay_forwards_between_legs_with_independent_crypto() {
    let a = addr(5000);
    let b = addr(6000);
    let leg0 = Leg::new(init(Some(a), sdes(3), sdes(1)), 0).unwrap();
    let mut li = init(Some(b), Crypto::None, Crypto::None);
    li.local_rtcp = Some(addr(4001));
    let leg1 = Leg::new(li, 0).unwrap();
    let mut s = stream(Mode::Relay, vec![leg0, leg1], None);
    let mut totals = Counters::default();
    let mut sender = SrtpOutbound::new(policy(1)).unwrap();
    let (mut p, len) = rtp(7, 5);
    let plain = p[..len].to_vec();
    let len = sender.protect_rtp(&mut p, len).unwrap();
    let (action, _) = s.on_datagram(0, Port::Rtp, a, &mut p, len, PERIOD, 0, &mut totals);
    assert_eq!(
        action,
        Action::Send {
            leg: 1,
            port: Port::Rtp,
            len: plain.len(),
            to: b
        }
    );
    assert_eq!(&p[..plain.len()], &plain[..], "SRTP in, plain RTP out");
    // RTCP goes out of the other leg's RTCP port, to the peer's RTP port + 1.
    let mut rr = vec![0u8; 256];
    rr[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 5]);
    let len = sender.protect_rtcp(&mut rr, 8).unwrap();
    let (action, _) = s.on_datagram(0, Port::Rtp, a, &mut rr, len, PERIOD, 0, &mut totals);
    assert_eq!(
        action,
        Action::Send {
            leg: 1,
            port: Port::Rtcp,
            len: 8,
            to: addr(6001)
        }
    );
    // An outgoing leg still waiting for its keys: counted as a send drop on it.
    let mut li = init(Some(b), Crypto::None, Crypto::None);
    li.pending = true;
    s.legs[1] = Leg::new(li, 0).unwrap();
    let (mut p, len) = rtp(8, 5);
    let len = sender.protect_rtp(&mut p, len).unwrap();
    let (action, _) = s.on_datagram(0, Port::Rtp, a, &mut p, len, PERIOD, 0, &mut totals);
    assert_eq!(action, Action::Drop);
    assert_eq!(s.stats().legs[1].tx_drops, 1);
}

fn clock(epoch: Instant) -> DtlsClock {
    DtlsClock {
        epoch,
        opts: DtlsOptions::default(),
    }
}

/// Drains a stream's handshake into a wire.
fn drain(
    s: &mut Stream,
    now: u64,
    epoch: Instant,
    totals: &mut Counters,
    events: &mut Vec<Event>,
) -> Vec<Vec<u8>> {
    let mut wire = Wire::new();
    let mut scratch = vec![0u8; crate::io::BUF_SIZE];
    let (e, _) = s.dtls_poll(
        0,
        Port::Rtp,
        now,
        &clock(epoch),
        &mut scratch,
        &mut wire,
        totals,
    );
    events.extend(e);
    wire.sent.into_iter().map(|(_, d, _)| d).collect()
}

#[test]
fn a_dtls_handshake_keys_both_legs_in_simulated_time() {
    let epoch = Instant::now();
    let (ca, cb) = (addr(5000), addr(6000));
    let ids = [
        Arc::new(DtlsIdentity::generate().unwrap()),
        Arc::new(DtlsIdentity::generate().unwrap()),
    ];
    let ctx: Vec<DtlsContext> = ids
        .iter()
        .map(|i| DtlsContext::new(i.clone(), DtlsOptions::default()).unwrap())
        .collect();
    let mut totals = [Counters::default(), Counters::default()];
    let mut side = |k: usize, role, remote| {
        let mut leg = Leg::new(init(Some(remote), Crypto::None, Crypto::None), 0).unwrap();
        let peer_fp = ids[1 - k].fingerprint().clone();
        let spec = crate::model::DtlsSpec {
            role,
            fingerprint: peer_fp,
            profiles: None,
        };
        let d = LegDtls::new(&ctx[k], &spec, false, instant(epoch, 0), 0, &mut totals[k]);
        leg.start_dtls(d, 0);
        let source = RtpSource::with_start(
            CodecProfile::default_for(Codec::Pcmu),
            9 + k as u32,
            1,
            0,
            0,
            1,
        );
        stream(Mode::SendRecv, vec![leg], Some(source))
    };
    let mut client = side(0, DtlsRole::Client, cb);
    let mut server = side(1, DtlsRole::Server, ca);
    let mut events = Vec::new();
    let mut to_server = drain(&mut client, 0, epoch, &mut totals[0], &mut events);
    assert!(!to_server.is_empty(), "the client's first flight");
    let mut now = 0;
    for _ in 0..20 {
        now += 1_000_000;
        let mut to_client = Vec::new();
        for mut d in to_server.drain(..) {
            let len = d.len();
            let (a, _) = server.on_datagram(0, Port::Rtp, ca, &mut d, len, now, 0, &mut totals[1]);
            assert_eq!(a, Action::Handshake);
            let (go, _) = server.dtls_datagram(
                0,
                Port::Rtp,
                ca,
                &d[..len],
                now,
                &clock(epoch),
                &mut totals[1],
            );
            if go {
                to_client.extend(drain(&mut server, now, epoch, &mut totals[1], &mut events));
            }
        }
        for mut d in to_client {
            let len = d.len();
            let (a, _) = client.on_datagram(0, Port::Rtp, cb, &mut d, len, now, 0, &mut totals[0]);
            assert_eq!(a, Action::Handshake);
            let (go, _) = client.dtls_datagram(
                0,
                Port::Rtp,
                cb,
                &d[..len],
                now,
                &clock(epoch),
                &mut totals[0],
            );
            if go {
                to_server.extend(drain(&mut client, now, epoch, &mut totals[0], &mut events));
            }
        }
        if to_server.is_empty() {
            break;
        }
    }
    let established: Vec<DtlsRole> = events
        .iter()
        .filter_map(|e| match e {
            Event::DtlsEstablished { role, .. } => Some(*role),
            _ => None,
        })
        .collect();
    assert_eq!(established.len(), 2, "{events:?}");
    assert_eq!(
        totals[0].dtls.sessions, 0,
        "a client's session goes at once"
    );
    assert_eq!(totals[1].dtls.sessions, 1, "a server's lingers");
    // Media under the exported keys: the server's session goes with the first packet.
    let mut wire = Wire::new();
    client.pace(now, &mut wire, &mut totals[0]);
    let (_, mut d, to) = wire.sent.remove(0);
    assert_eq!(to, cb);
    let len = d.len();
    let (a, _) = server.on_datagram(0, Port::Rtp, ca, &mut d, len, now, 0, &mut totals[1]);
    assert_eq!(a, Action::Drop, "sendrecv consumes");
    assert_eq!(server.stats().legs[0].packets_in, 1);
    assert_eq!(totals[1].dtls.sessions, 0);
    assert_eq!(
        (totals[0].dtls.established, totals[1].dtls.established),
        (1, 1)
    );
}
