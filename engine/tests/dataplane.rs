//! The data plane over real loopback sockets, for both I/O backends: sender to receiver with
//! exact counts, echo round trips, relay SRTP<->RTP, induced loss and reordering, strict source,
//! and a garbage flood that must not disturb live streams.

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use srtp_engine::io::BackendKind;
use srtp_engine::model::{Crypto, LegSpec, Mode, SocketModel, StreamSpec, StreamStats};
use srtp_engine::proto::pacer::{Codec, CodecProfile};
use srtp_engine::proto::rtp::write_header;
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::MediaOptions;
use srtp_engine::runtime::{Engine, EngineOptions};

const SUITE: Suite = Suite::AesCm128HmacSha1_80;

fn engine(backend: BackendKind) -> Engine {
    engine_with(backend, true)
}

fn engine_with(backend: BackendKind, connect: bool) -> Engine {
    engine_on(
        backend,
        connect,
        MediaOptions::default().port_min,
        MediaOptions::default().port_max,
    )
}

/// An engine on a port range of its own (a test that checks a port is released must not
/// see another test's engine take it).
fn engine_on(backend: BackendKind, connect: bool, port_min: u16, port_max: u16) -> Engine {
    let opts = EngineOptions {
        workers: 1,
        pin: false,
        backend,
        fallback: false,
        media: MediaOptions {
            connect,
            port_min,
            port_max,
            ..MediaOptions::default()
        },
        ..EngineOptions::default()
    };
    let e = Engine::start(opts).expect("engine starts");
    assert_eq!(e.backend(), backend);
    e
}

fn key(n: u8) -> Vec<u8> {
    (0..30).map(|i| i ^ n).collect()
}

fn sdes(n: u8) -> Crypto {
    Crypto::sdes(SUITE, &key(n)).unwrap()
}

fn leg(remote: Option<SocketAddr>, tx: Crypto, rx: Crypto) -> LegSpec {
    LegSpec {
        remote,
        rtcp_mux: true,
        tx,
        rx,
        ..LegSpec::default()
    }
}

/// Waits until `f` holds or `limit` passes.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    f()
}

fn stats(e: &Engine, id: u64) -> StreamStats {
    e.stream_stats(id).unwrap()
}

/// Stops a sender's generation so its counters settle.
fn pause(e: &Engine, id: u64) {
    let update = srtp_engine::model::StreamUpdate {
        paused: Some(true),
        ..Default::default()
    };
    e.update_stream(id, update).unwrap();
}

/// N SRTP senders on one engine to N receivers on another; then pause the senders and check
/// that every packet sent arrived, authenticated, with loss 0.
fn sender_to_receiver(backend: BackendKind) {
    let rx_engine = engine(backend);
    let tx_engine = engine(backend);
    let n = 40;
    let mut pairs = Vec::new();
    for k in 0..n {
        let r = rx_engine
            .create_stream(StreamSpec::new(
                Mode::Recv,
                leg(None, Crypto::None, sdes(k)),
            ))
            .unwrap();
        let mut spec = StreamSpec::new(
            Mode::Send,
            leg(Some(r.legs[0].local), sdes(k), Crypto::None),
        );
        spec.codec.ptime_ms = 10;
        spec.rtcp_interval_ms = 500;
        let s = tx_engine.create_stream(spec).unwrap();
        pairs.push((s.id, r.id));
    }
    sleep(Duration::from_millis(1500));
    for &(s, _) in &pairs {
        pause(&tx_engine, s);
    }
    sleep(Duration::from_millis(200));
    for &(s, r) in &pairs {
        let sent = stats(&tx_engine, s);
        let got = stats(&rx_engine, r);
        let (out, inn) = (&sent.legs[0], &got.legs[0]);
        assert!(out.packets_out >= 100, "sender sent {}", out.packets_out);
        assert_eq!(
            inn.packets_in, out.packets_out,
            "every packet arrives ({backend:?})"
        );
        assert_eq!(inn.bytes_in, out.bytes_out);
        assert_eq!(inn.lost, 0);
        assert_eq!(inn.auth_failures + inn.replay_drops + inn.malformed, 0);
        assert_eq!(inn.rx_suite, Some(Suite::AesCm128HmacSha1_80));
        assert!(inn.rtcp_in >= 1, "sender reports arrive");
        assert!(inn.mos > 4.3, "MOS {}", inn.mos);
    }
    let snap = tx_engine.snapshot();
    assert_eq!(snap.workers[0].backend, backend.name());
}

/// sendrecv endpoints on one engine, echo streams on another: everything comes back, RTCP
/// gives a round-trip time.
fn echo_round_trip(backend: BackendKind) {
    let echo = engine(backend);
    let ends = engine(backend);
    let mut pairs = Vec::new();
    for k in 0..20u8 {
        // Echo: receives with the endpoint's key (k), answers with its own (k + 100).
        let mut echo_spec = StreamSpec::new(Mode::Echo, leg(None, sdes(k + 100), sdes(k)));
        echo_spec.rtcp_interval_ms = 300;
        let e = echo.create_stream(echo_spec).unwrap();
        let mut spec = StreamSpec::new(
            Mode::SendRecv,
            leg(Some(e.legs[0].local), sdes(k), sdes(k + 100)),
        );
        spec.rtcp_interval_ms = 300;
        let s = ends.create_stream(spec).unwrap();
        pairs.push((s.id, e.id));
    }
    sleep(Duration::from_millis(1500));
    for &(s, _) in &pairs {
        pause(&ends, s);
    }
    sleep(Duration::from_millis(300));
    for &(s, e) in &pairs {
        let end = stats(&ends, s);
        let l = &end.legs[0];
        assert!(l.packets_out >= 50);
        assert_eq!(l.packets_in, l.packets_out, "all echoed back ({backend:?})");
        assert_eq!(l.lost, 0);
        assert_eq!(l.auth_failures, 0);
        assert!(l.rtt_ms.is_some_and(|r| r < 50.0), "rtt {:?}", l.rtt_ms);
        let ec = stats(&echo, e);
        assert_eq!(ec.legs[0].packets_in, l.packets_out);
        assert_eq!(ec.legs[0].packets_out, l.packets_out);
    }
}

/// SRTP in on leg 0, plain RTP out on leg 1 (and back).
fn relay_srtp_to_rtp(backend: BackendKind) {
    let relay = engine(backend);
    let ends = engine(backend);
    // Plain receiver first, so the relay knows where leg 1 goes.
    let plain_rx = ends
        .create_stream(StreamSpec::new(
            Mode::Recv,
            leg(None, Crypto::None, Crypto::None),
        ))
        .unwrap();
    let spec = StreamSpec {
        mode: Mode::Relay,
        legs: vec![
            leg(None, sdes(1), sdes(2)),
            leg(Some(plain_rx.legs[0].local), Crypto::None, Crypto::None),
        ],
        codec: CodecProfile::default_for(Codec::Pcma),
        rtcp_interval_ms: 0,
        watch: Default::default(),
        paused: false,
    };
    let r = relay.create_stream(spec).unwrap();
    let mut send = StreamSpec::new(
        Mode::Send,
        leg(Some(r.legs[0].local), sdes(2), Crypto::None),
    );
    send.codec = CodecProfile::default_for(Codec::Pcma);
    send.rtcp_interval_ms = 0;
    let s = ends.create_stream(send).unwrap();
    sleep(Duration::from_millis(1000));
    pause(&ends, s.id);
    sleep(Duration::from_millis(200));
    let sent = stats(&ends, s.id).legs[0].packets_out;
    let got = stats(&ends, plain_rx.id);
    assert!(sent >= 40);
    assert_eq!(
        got.legs[0].packets_in, sent,
        "relayed as plain RTP ({backend:?})"
    );
    assert_eq!(got.legs[0].lost, 0);
    assert_eq!(got.legs[0].bytes_in, sent * (12 + 160), "SRTP tag removed");
    let rs = stats(&relay, r.id);
    assert_eq!(rs.legs[0].packets_in, sent);
    assert_eq!(rs.legs[1].packets_out, sent);
}

/// Hand-made RTP with gaps, reordering and a duplicate to a plain receiver.
fn loss_and_reordering(backend: BackendKind) {
    let e = engine(backend);
    let r = e
        .create_stream(StreamSpec::new(
            Mode::Recv,
            leg(None, Crypto::None, Crypto::None),
        ))
        .unwrap();
    let to = r.legs[0].local;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut order: Vec<u16> = (1000..1200).collect();
    // Lose 5 (1010..1015), swap 1050/1051, duplicate 1100.
    order.retain(|s| !(1010..1015).contains(s));
    let a = order.iter().position(|&s| s == 1050).unwrap();
    order.swap(a, a + 1);
    let d = order.iter().position(|&s| s == 1100).unwrap();
    order.insert(d, 1100);
    let mut buf = [0u8; 172];
    for &seq in &order {
        write_header(&mut buf, 0, false, seq, u32::from(seq) * 160, 0xabcd);
        sock.send_to(&buf, to).unwrap();
        sleep(Duration::from_micros(200));
    }
    assert!(wait_until(Duration::from_secs(3), || stats(&e, r.id).legs
        [0]
    .packets_in
        == order.len() as u64));
    let l = stats(&e, r.id).legs[0].clone();
    assert_eq!(l.lost, 5, "{l:?}");
    assert_eq!(l.reordered, 1);
    assert_eq!(l.duplicated, 1);
    assert_eq!(l.remote_ssrc, Some(0xabcd));
    assert!(l.mos < 4.4, "loss lowers the MOS: {}", l.mos);
}

/// Garbage, truncated, replayed and foreign-SSRC datagrams at live ports while SRTP streams
/// flow: every legitimate packet still arrives; the garbage is counted.
fn garbage_flood(backend: BackendKind) {
    // Unconnected receivers, so that every datagram reaches the engine rather than being
    // filtered by the kernel.
    let rx_engine = engine_with(backend, false);
    let tx_engine = engine(backend);
    let mut pairs = Vec::new();
    for k in 0..10u8 {
        let r = rx_engine
            .create_stream(StreamSpec::new(
                Mode::Recv,
                leg(None, Crypto::None, sdes(k)),
            ))
            .unwrap();
        let mut spec = StreamSpec::new(
            Mode::Send,
            leg(Some(r.legs[0].local), sdes(k), Crypto::None),
        );
        spec.rtcp_interval_ms = 0;
        let s = tx_engine.create_stream(spec).unwrap();
        pairs.push((s.id, r.id, r.legs[0].local));
    }
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let end = Instant::now() + Duration::from_millis(1200);
    let mut sent_garbage = 0u64;
    while Instant::now() < end {
        for &(_, _, to) in &pairs {
            let len = (next() % 300) as usize;
            let mut g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match next() % 4 {
                0 if len > 12 => g[0] = 0x80, // RTP-looking, bad tag
                1 if len > 1 => g[..2].copy_from_slice(&[0x81, 0xc8]), // RTCP-looking
                2 => g.truncate(3),
                _ => {}
            }
            let _ = attacker.send_to(&g, to);
            sent_garbage += 1;
        }
        sleep(Duration::from_micros(500));
    }
    for &(s, _, _) in &pairs {
        pause(&tx_engine, s);
    }
    sleep(Duration::from_millis(200));
    let mut dropped = 0;
    for &(s, r, _) in &pairs {
        let sent = stats(&tx_engine, s).legs[0].packets_out;
        let got = stats(&rx_engine, r).legs[0].clone();
        assert!(sent >= 40);
        assert_eq!(
            got.packets_in, sent,
            "no legitimate packet lost ({backend:?})"
        );
        assert_eq!(got.lost, 0);
        dropped += got.auth_failures + got.malformed + got.other_drops + got.replay_drops;
    }
    assert!(sent_garbage > 1000);
    assert!(
        dropped >= sent_garbage * 9 / 10,
        "garbage counted: {dropped} of {sent_garbage}"
    );
}

/// Strict source: a signalled address only; others are counted and dropped. Non-strict: the
/// address latches only after authentication (RTP bleed protection).
fn strict_source_and_latching(backend: BackendKind) {
    // Unconnected sockets: with `connect` the kernel would drop the other source before the
    // engine saw it, and the engine's own check would never run.
    let e = engine_with(backend, false);
    let good = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bad = UdpSocket::bind("127.0.0.1:0").unwrap();
    let strict = e
        .create_stream(StreamSpec::new(
            Mode::Recv,
            LegSpec {
                remote: Some(good.local_addr().unwrap()),
                rtcp_mux: true,
                strict_source: Some(true),
                ..LegSpec::default()
            },
        ))
        .unwrap();
    let mut buf = [0u8; 172];
    for seq in 0..10u16 {
        write_header(&mut buf, 0, false, seq, 0, 7);
        good.send_to(&buf, strict.legs[0].local).unwrap();
        bad.send_to(&buf, strict.legs[0].local).unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || stats(&e, strict.id)
        .legs[0]
        .packets_in
        == 10));
    assert!(wait_until(Duration::from_secs(2), || stats(&e, strict.id)
        .legs[0]
        .source_mismatch
        == 10));
    let l = stats(&e, strict.id).legs[0].clone();
    assert_eq!(
        (l.packets_in, l.source_mismatch),
        (10, 10),
        "every packet from the wrong source dropped by the engine and counted ({backend:?})"
    );

    // SRTP, no signalled address: forged packets from `bad` do not move the stream.
    let open = e
        .create_stream(StreamSpec::new(
            Mode::Recv,
            leg(None, Crypto::None, sdes(9)),
        ))
        .unwrap();
    for seq in 0..10u16 {
        write_header(&mut buf, 0, false, seq, 0, 7);
        bad.send_to(&buf[..40], open.legs[0].local).unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || stats(&e, open.id)
        .legs[0]
        .auth_failures
        == 10));
    assert_eq!(
        stats(&e, open.id).legs[0].remote,
        None,
        "unauthenticated packets teach nothing"
    );
}

/// The shared-port model: many streams on one socket, told apart by remote address.
fn shared_port(backend: BackendKind) {
    let e = engine(backend);
    let peers: Vec<UdpSocket> = (0..5)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ids: Vec<_> = peers
        .iter()
        .map(|p| {
            e.create_stream(StreamSpec::new(
                Mode::Echo,
                LegSpec {
                    remote: Some(p.local_addr().unwrap()),
                    rtcp_mux: true,
                    socket: SocketModel::Shared,
                    ..LegSpec::default()
                },
            ))
            .unwrap()
        })
        .collect();
    let port = ids[0].legs[0].local;
    assert!(
        ids.iter().all(|i| i.legs[0].local == port),
        "one shared port"
    );
    let mut buf = [0u8; 172];
    for (k, p) in peers.iter().enumerate() {
        write_header(&mut buf, 0, false, k as u16, 0, k as u32);
        p.send_to(&buf, port).unwrap();
    }
    for (k, p) in peers.iter().enumerate() {
        p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 256];
        let (n, from) = p.recv_from(&mut b).unwrap();
        assert_eq!((n, from), (172, port));
        assert_eq!(u32::from_be_bytes([b[8], b[9], b[10], b[11]]), k as u32);
        assert_eq!(stats(&e, ids[k].id).legs[0].packets_in, 1);
    }
    // An unknown sender on the shared port is counted, not delivered.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&buf, port).unwrap();
    assert!(wait_until(Duration::from_secs(2), || e
        .snapshot()
        .totals
        .drops
        .get(srtp_engine::model::DropReason::NoStream)
        >= 1));
}

/// A receiver with a tiny socket buffer, flooded from two threads: the kernel drops some
/// datagrams, and every datagram sent is either received or counted as a kernel drop
/// (SO_RXQ_OVFL), exactly.
fn kernel_drops_are_counted(backend: BackendKind) {
    let opts = EngineOptions {
        workers: 1,
        pin: false,
        backend,
        fallback: false,
        media: MediaOptions {
            connect: false,
            socket: srtp_engine::io::socket::SocketOptions {
                recv_buffer: 1, // the kernel's minimum: a few datagrams
                send_buffer: 0,
            },
            ..MediaOptions::default()
        },
        ..EngineOptions::default()
    };
    let e = Engine::start(opts).unwrap();
    let mut spec = StreamSpec::new(Mode::Recv, leg(None, Crypto::None, Crypto::None));
    spec.rtcp_interval_ms = 0;
    let to = e.create_stream(spec).unwrap().legs[0].local;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let per_thread = 20_000u32;
    let senders: Vec<_> = (0..2u32)
        .map(|t| {
            let s = sock.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 172];
                let mut sent = 0u64;
                for i in 0..per_thread {
                    let seq = (t * per_thread + i) as u16;
                    write_header(&mut buf, 0, false, seq, u32::from(seq) * 160, 0x1234);
                    if s.send_to(&buf, to).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let mut sent: u64 = senders.into_iter().map(|h| h.join().unwrap()).sum();
    // One more, slowly: it carries the socket's final drop count.
    sleep(Duration::from_millis(200));
    let mut buf = [0u8; 172];
    write_header(&mut buf, 0, false, 1, 160, 0x1234);
    sock.send_to(&buf, to).unwrap();
    sent += 1;
    let mut seen = (0, 0);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let io = e.snapshot().workers[0].io;
            seen = (io.rx_packets, io.kernel_drops);
            io.rx_packets + io.kernel_drops == sent
        }),
        "sent {sent}, received {} + kernel drops {} ({backend:?})",
        seen.0,
        seen.1
    );
    assert!(
        seen.1 > 0,
        "the flood must overflow the socket ({backend:?})"
    );
}

/// An SDES offerer prepares its stream before the answer (`pending`: no keys yet), and the
/// answerer may send as soon as it answers (RFC 3264 5.1). What arrives early cannot be
/// authenticated: it is counted and dropped, and it must not teach the offerer its peer (an
/// earlier version latched the answerer's address from such a packet as if it were plain RTP,
/// then sent it a plain RTCP report that failed authentication there). Once the answer's
/// keys arrive, media flows both ways with no failure anywhere.
fn offerer_before_its_answer(backend: BackendKind) {
    use srtp_engine::model::StreamUpdate;
    let offerer_engine = engine(backend);
    let answerer_engine = engine(backend);
    let mut spec = StreamSpec::new(
        Mode::Recv,
        LegSpec {
            rtcp_mux: true,
            pending: true,
            ..LegSpec::default()
        },
    );
    spec.rtcp_interval_ms = 100;
    let offerer = offerer_engine.create_stream(spec).unwrap();
    let mut spec = StreamSpec::new(
        Mode::SendRecv,
        leg(Some(offerer.legs[0].local), sdes(2), sdes(1)),
    );
    spec.rtcp_interval_ms = 100;
    let answerer = answerer_engine.create_stream(spec).unwrap();
    // The answer is slow to arrive; the answerer's media and reports are already there.
    sleep(Duration::from_millis(400));
    let o = stats(&offerer_engine, offerer.id).legs[0].clone();
    assert!(o.early_drops >= 10, "early media counted: {o:?}");
    assert_eq!(o.packets_in, 0, "nothing accepted before the keys: {o:?}");
    assert_eq!(o.remote, None, "no peer learned from unauthenticated media");
    assert_eq!((o.packets_out, o.rtcp_out), (0, 0), "nothing sent: {o:?}");
    let a = stats(&answerer_engine, answerer.id).legs[0].clone();
    assert!(a.packets_out >= 10, "{a:?}");
    assert_eq!(
        (a.packets_in, a.rtcp_in, a.auth_failures),
        (0, 0, 0),
        "{a:?}"
    );
    offerer_engine
        .update_stream(
            offerer.id,
            StreamUpdate {
                remote: Some((0, answerer.legs[0].local)),
                crypto: Some((0, sdes(1), sdes(2))),
                mode: Some(Mode::SendRecv),
                ..StreamUpdate::default()
            },
        )
        .unwrap();
    let flowing = || {
        let o = stats(&offerer_engine, offerer.id).legs[0].clone();
        let a = stats(&answerer_engine, answerer.id).legs[0].clone();
        o.packets_in >= 10 && a.packets_in >= 10 && o.rtcp_in > 0 && a.rtcp_in > 0
    };
    assert!(
        wait_until(Duration::from_secs(3), flowing),
        "media flows after the answer"
    );
    let o = stats(&offerer_engine, offerer.id).legs[0].clone();
    let a = stats(&answerer_engine, answerer.id).legs[0].clone();
    assert_eq!((o.auth_failures, a.auth_failures), (0, 0), "{o:?} {a:?}");
    assert_eq!(o.lost, 0, "{o:?}");
}

/// An offerer that offers rtcp-mux keeps an RTCP port until the answer says (RFC 5761 5.1.1):
/// when the answer accepts, `rtcp_mux` in the update moves RTCP onto the RTP port and closes
/// the RTCP port; when it declines, RTCP stays on its own ports both ways, sent to the
/// answer's `remote_rtcp`.
fn offerer_follows_the_answer_on_rtcp_mux(backend: BackendKind) {
    use srtp_engine::model::StreamUpdate;
    let base = match backend {
        BackendKind::IoUring => 19_000,
        BackendKind::Epoll => 19_200,
    };
    let offerer_engine = engine_on(backend, true, base, base + 199);
    let answerer_engine = engine(backend);
    let pending = || {
        let mut spec = StreamSpec::new(
            Mode::Recv,
            LegSpec {
                rtcp_mux: false,
                pending: true,
                ..LegSpec::default()
            },
        );
        spec.rtcp_interval_ms = 100;
        offerer_engine.create_stream(spec).unwrap()
    };
    let flowing = |o: u64, a: u64| {
        wait_until(Duration::from_secs(3), || {
            let o = stats(&offerer_engine, o).legs[0].clone();
            let a = stats(&answerer_engine, a).legs[0].clone();
            o.packets_in >= 10 && a.packets_in >= 10 && o.rtcp_in >= 2 && a.rtcp_in >= 2
        })
    };

    // Accepted: the answerer multiplexes.
    let offer = pending();
    let (o_rtp, o_rtcp) = (offer.legs[0].local, offer.legs[0].local_rtcp.unwrap());
    let mut spec = StreamSpec::new(Mode::SendRecv, leg(Some(o_rtp), sdes(2), sdes(1)));
    spec.rtcp_interval_ms = 100;
    let muxed = answerer_engine.create_stream(spec).unwrap();
    offerer_engine
        .update_stream(
            offer.id,
            StreamUpdate {
                remote: Some((0, muxed.legs[0].local)),
                crypto: Some((0, sdes(1), sdes(2))),
                mode: Some(Mode::SendRecv),
                rtcp_mux: Some(0),
                ..StreamUpdate::default()
            },
        )
        .unwrap();
    assert!(
        flowing(offer.id, muxed.id),
        "RTCP muxed both ways ({backend:?})"
    );
    // The RTCP port is closed: it can be bound again.
    let rebound = UdpSocket::bind(o_rtcp);
    assert!(
        rebound.is_ok(),
        "the offerer's RTCP port {o_rtcp} was released: {rebound:?}"
    );
    let err = offerer_engine
        .update_stream(
            offer.id,
            StreamUpdate {
                remote_rtcp: Some((0, o_rtcp)),
                ..StreamUpdate::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("no RTCP port"), "{err}");

    // Declined: the answerer has an RTCP port of its own and says where (a=rtcp).
    let offer = pending();
    let (o_rtp, o_rtcp) = (offer.legs[0].local, offer.legs[0].local_rtcp.unwrap());
    let mut spec = StreamSpec::new(
        Mode::SendRecv,
        LegSpec {
            remote: Some(o_rtp),
            remote_rtcp: Some(o_rtcp),
            rtcp_mux: false,
            tx: sdes(2),
            rx: sdes(1),
            ..LegSpec::default()
        },
    );
    spec.rtcp_interval_ms = 100;
    let split = answerer_engine.create_stream(spec).unwrap();
    let a_rtcp = split.legs[0].local_rtcp.unwrap();
    offerer_engine
        .update_stream(
            offer.id,
            StreamUpdate {
                remote: Some((0, split.legs[0].local)),
                remote_rtcp: Some((0, a_rtcp)),
                crypto: Some((0, sdes(1), sdes(2))),
                mode: Some(Mode::SendRecv),
                ..StreamUpdate::default()
            },
        )
        .unwrap();
    assert!(
        flowing(offer.id, split.id),
        "RTCP on its own ports both ways ({backend:?})"
    );
    assert!(UdpSocket::bind(o_rtcp).is_err(), "the RTCP port stays open");
    // The RTCP destination follows `remote_rtcp`.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    offerer_engine
        .update_stream(
            offer.id,
            StreamUpdate {
                remote_rtcp: Some((0, sink.local_addr().unwrap())),
                ..StreamUpdate::default()
            },
        )
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = sink
        .recv_from(&mut buf)
        .expect("an SRTCP report at the new address");
    assert_eq!(from, o_rtcp, "sent from the RTCP port");
    assert!((200..=204).contains(&buf[1]), "an RTCP report, {n} bytes");
    for (e, id) in [(&offerer_engine, offer.id), (&answerer_engine, split.id)] {
        let l = stats(e, id).legs[0].clone();
        assert_eq!(l.auth_failures, 0, "{l:?}");
    }
}

macro_rules! both_backends {
    ($($name:ident),*) => {
        mod io_uring {
            $(#[test] fn $name() { super::$name(super::BackendKind::IoUring) })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name(super::BackendKind::Epoll) })*
        }
    };
}

both_backends!(
    sender_to_receiver,
    echo_round_trip,
    relay_srtp_to_rtp,
    loss_and_reordering,
    garbage_flood,
    strict_source_and_latching,
    shared_port,
    kernel_drops_are_counted,
    offerer_before_its_answer,
    offerer_follows_the_answer_on_rtcp_mux
);

#[test]
fn bad_requests_are_typed_errors() {
    let e = engine(BackendKind::IoUring);
    let two_legs = StreamSpec {
        mode: Mode::Echo,
        legs: vec![LegSpec::default(), LegSpec::default()],
        codec: CodecProfile::default_for(Codec::Pcmu),
        rtcp_interval_ms: 0,
        watch: Default::default(),
        paused: false,
    };
    assert!(e.create_stream(two_legs).is_err());
    let bad_ip = LegSpec {
        local_ip: Some("10.9.9.9".parse().unwrap()),
        ..LegSpec::default()
    };
    let err = e
        .create_stream(StreamSpec::new(Mode::Recv, bad_ip))
        .unwrap_err();
    assert!(err.to_string().contains("10.9.9.9"), "{err}");
    let mut spec = StreamSpec::new(Mode::Send, LegSpec::default());
    spec.codec.ptime_ms = 500;
    assert!(
        e.create_stream(spec)
            .unwrap_err()
            .to_string()
            .contains("ptime")
    );
    let keyed_and_pending = LegSpec {
        pending: true,
        rx: sdes(1),
        ..LegSpec::default()
    };
    assert!(
        e.create_stream(StreamSpec::new(Mode::Recv, keyed_and_pending))
            .unwrap_err()
            .to_string()
            .contains("pending")
    );
    assert!(e.stream_stats(999_999).is_err());
    assert!(e.delete_stream(999_999).is_err());
    let ok = e
        .create_stream(StreamSpec::new(Mode::Recv, LegSpec::default()))
        .unwrap();
    let fin = e.delete_stream(ok.id).unwrap();
    assert_eq!(fin.id, ok.id);
    assert!(e.stream_stats(ok.id).is_err());
}

/// Pausing and resuming (and other updates) never leave a stream with two pacing timers: the
/// rate stays that of the codec.
#[test]
fn updates_keep_the_codec_rate() {
    use srtp_engine::model::StreamUpdate;
    let e = engine(BackendKind::IoUring);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut spec = StreamSpec::new(
        Mode::Send,
        leg(Some(sink.local_addr().unwrap()), Crypto::None, Crypto::None),
    );
    spec.rtcp_interval_ms = 0;
    let s = e.create_stream(spec).unwrap();
    for paused in [true, false, true, false] {
        e.update_stream(
            s.id,
            StreamUpdate {
                paused: Some(paused),
                ..Default::default()
            },
        )
        .unwrap();
    }
    e.update_stream(
        s.id,
        StreamUpdate {
            remote: Some((0, sink.local_addr().unwrap())),
            ..Default::default()
        },
    )
    .unwrap();
    let start = stats(&e, s.id).legs[0].packets_out;
    sleep(Duration::from_millis(1000));
    let sent = stats(&e, s.id).legs[0].packets_out - start;
    // 20 ms ptime: 50 packets per second, driven by exactly one pacing timer.
    assert!((40..=60).contains(&sent), "{sent} packets in 1 s");
    assert_eq!(e.snapshot().workers[0].timers, 1);
}

/// A re-offer that picks another codec reaches the stream: the payload type and the pace
/// change, the SSRC and the sequence numbers go on (RFC 3550 5.1).
#[test]
fn a_codec_change_keeps_the_rtp_stream() {
    use srtp_engine::model::StreamUpdate;
    let e = engine(BackendKind::IoUring);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut spec = StreamSpec::new(
        Mode::Send,
        leg(Some(sink.local_addr().unwrap()), Crypto::None, Crypto::None),
    );
    spec.rtcp_interval_ms = 0;
    let s = e.create_stream(spec).unwrap();
    let mut buf = [0u8; 1500];
    let next = |buf: &mut [u8]| {
        let n = sink.recv(buf).expect("a packet");
        let h = srtp_engine::proto::rtp::RtpHeader::parse(&buf[..n]).unwrap();
        (h.payload_type, h.ssrc, h.seq, n)
    };
    let (pt, ssrc, _, len) = next(&mut buf);
    assert_eq!((pt, len), (0, 172), "PCMU, 20 ms");
    let mut g722 = CodecProfile::default_for(Codec::G722);
    g722.ptime_ms = 40;
    e.update_stream(
        s.id,
        StreamUpdate {
            codec: Some(g722),
            ..Default::default()
        },
    )
    .unwrap();
    // Packets already queued may still be PCMU; then G.722 at 40 ms (320 bytes of payload).
    let mut last_seq = None;
    let mut switched = None;
    for _ in 0..20 {
        let (pt, s2, seq, len) = next(&mut buf);
        assert_eq!(s2, ssrc, "the same SSRC");
        if let Some(l) = last_seq {
            assert_eq!(seq, u16::wrapping_add(l, 1), "no gap in sequence");
        }
        last_seq = Some(seq);
        if pt == 9 {
            switched = Some(len);
            break;
        }
    }
    assert_eq!(switched, Some(12 + 320), "G.722 at 40 ms");
}
