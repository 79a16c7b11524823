//! DTLS-SRTP between real engines over loopback: both roles, with and without rtcp-mux (a
//! second handshake on the RTCP port), media flowing after; a fingerprint mismatch failing with
//! that reason on both sides; a silent peer timing out; every handshake completing through a
//! shim that drops 30% of datagrams in both directions.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::sleep;
use std::time::{Duration, Instant};

use srtp_engine::io::BackendKind;
use srtp_engine::model::{Component, DtlsSpec, DtlsState, Event};
use srtp_engine::model::{LegSpec, Mode, StreamInfo, StreamSpec, StreamStats, StreamUpdate};
use srtp_engine::proto::dtls::DtlsFailureReason;
use srtp_engine::proto::dtls::{DtlsOptions, DtlsRole, Fingerprint, HashAlg};
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::{DtlsSettings, Engine, EngineOptions};

fn engine_with(backend: BackendKind, options: DtlsOptions) -> Engine {
    let opts = EngineOptions {
        workers: 1,
        pin: false,
        backend,
        fallback: false,
        dtls: DtlsSettings {
            options,
            ..DtlsSettings::default()
        },
        ..EngineOptions::default()
    };
    Engine::start(opts).expect("engine starts")
}

fn fast() -> DtlsOptions {
    DtlsOptions {
        retransmit_initial: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(10),
        ..DtlsOptions::default()
    }
}

fn fingerprint(e: &Engine) -> Fingerprint {
    Fingerprint::parse(&e.dtls_fingerprint()).unwrap()
}

fn dtls_leg(role: DtlsRole, fp: Fingerprint, remote: Option<SocketAddr>, mux: bool) -> LegSpec {
    LegSpec {
        remote,
        rtcp_mux: mux,
        dtls: Some(DtlsSpec {
            role,
            fingerprint: fp,
            profiles: None,
        }),
        ..LegSpec::default()
    }
}

/// A muxed DTLS server stream on `e` expecting `peer`'s certificate, its peer not yet known.
fn serve(e: &Engine, peer: &Engine) -> StreamInfo {
    e.create_stream(spec(dtls_leg(
        DtlsRole::Server,
        fingerprint(peer),
        None,
        true,
    )))
    .unwrap()
}

fn spec(leg: LegSpec) -> StreamSpec {
    let mut s = StreamSpec::new(Mode::SendRecv, leg);
    s.codec.ptime_ms = 10;
    s.rtcp_interval_ms = 200;
    s
}

/// Collects DTLS events until `n` of them arrived (or the limit).
fn dtls_events(rx: &Receiver<Event>, n: usize, limit: Duration) -> Vec<Event> {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(50))
            && matches!(e, Event::DtlsEstablished { .. } | Event::DtlsFailed { .. })
        {
            out.push(e);
        }
    }
    out
}

fn stats(e: &Engine, id: u64) -> StreamStats {
    e.stream_stats(id).unwrap()
}

/// One pair: `server_engine` answers, `client_engine` calls; media both ways after.
fn pair(backend: BackendKind, mux: bool, swap: bool) {
    let a = engine_with(backend, fast());
    let b = engine_with(backend, fast());
    let (server_engine, client_engine) = if swap { (&b, &a) } else { (&a, &b) };
    let sev = server_engine.take_events().unwrap();
    let cev = client_engine.take_events().unwrap();
    let s = server_engine
        .create_stream(spec(dtls_leg(
            DtlsRole::Server,
            fingerprint(client_engine),
            None,
            mux,
        )))
        .unwrap();
    assert_eq!(
        s.fingerprint.as_deref(),
        Some(server_engine.dtls_fingerprint().as_str())
    );
    let server_leg = &s.legs[0];
    let mut cleg = dtls_leg(
        DtlsRole::Client,
        fingerprint(server_engine),
        Some(server_leg.local),
        mux,
    );
    cleg.remote_rtcp = server_leg.local_rtcp;
    let c = client_engine.create_stream(spec(cleg)).unwrap();
    let want = if mux { 1 } else { 2 };
    for (name, rx, role) in [
        ("server", &sev, DtlsRole::Server),
        ("client", &cev, DtlsRole::Client),
    ] {
        let ev = dtls_events(rx, want, Duration::from_secs(10));
        assert_eq!(ev.len(), want, "{name}: {ev:?}");
        let mut components = Vec::new();
        for e in ev {
            match e {
                Event::DtlsEstablished {
                    role: r,
                    suite,
                    handshake_ms,
                    component,
                    ..
                } => {
                    assert_eq!(r, role);
                    // dimpl's server picks AES-256-GCM from dimpl's client offer.
                    assert_eq!(suite, Suite::AeadAes256Gcm);
                    assert!(
                        handshake_ms > 0.0 && handshake_ms < 5000.0,
                        "{handshake_ms}"
                    );
                    components.push(component);
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        components.sort_by_key(|c| c.name());
        let expect = if mux {
            vec![Component::Rtp]
        } else {
            vec![Component::Rtcp, Component::Rtp]
        };
        assert_eq!(components, expect);
    }
    // Media and RTCP flow both ways, every packet authenticates.
    sleep(Duration::from_millis(800));
    for (e, id) in [(server_engine, s.id), (client_engine, c.id)] {
        let st = stats(e, id);
        let l = &st.legs[0];
        assert!(l.packets_in > 30, "{l:?}");
        assert!(l.rtcp_in >= 1, "{l:?}");
        assert_eq!(l.auth_failures, 0);
        assert_eq!(l.rx_suite, Some(Suite::AeadAes256Gcm));
        let d = l.dtls.as_ref().unwrap();
        assert_eq!(d.rtp.state, DtlsState::Established);
        assert_eq!(
            d.rtcp.as_ref().map(|r| r.state),
            (!mux).then_some(DtlsState::Established)
        );
    }
    let snap = server_engine.snapshot();
    assert_eq!(snap.totals.dtls.established, want as u64);
    assert_eq!(snap.totals.dtls.started, want as u64);
    assert_eq!(snap.totals.dtls.failed.iter().sum::<u64>(), 0);
}

#[test]
fn engine_to_engine_muxed_both_roles() {
    pair(BackendKind::IoUring, true, false);
    pair(BackendKind::IoUring, true, true);
}

#[test]
fn engine_to_engine_separate_rtcp_port_two_handshakes() {
    pair(BackendKind::IoUring, false, false);
    pair(BackendKind::Epoll, false, true);
}

#[test]
fn fingerprint_mismatch_fails_with_that_reason_and_no_media_passes() {
    let a = engine_with(BackendKind::IoUring, fast());
    let b = engine_with(BackendKind::IoUring, fast());
    let aev = a.take_events().unwrap();
    let bev = b.take_events().unwrap();
    let s = serve(&a, &b);
    // The client expects a certificate other than the server's.
    let wrong = Fingerprint::of(HashAlg::Sha256, b"not the server's certificate");
    let c = b
        .create_stream(spec(dtls_leg(
            DtlsRole::Client,
            wrong,
            Some(s.legs[0].local),
            true,
        )))
        .unwrap();
    let ev = dtls_events(&bev, 1, Duration::from_secs(5));
    assert!(
        matches!(
            ev.as_slice(),
            [Event::DtlsFailed {
                reason: DtlsFailureReason::FingerprintMismatch,
                role: DtlsRole::Client,
                ..
            }]
        ),
        "{ev:?}"
    );
    // The server hears why from the client's alert.
    let ev = dtls_events(&aev, 1, Duration::from_secs(5));
    assert!(
        matches!(
            ev.as_slice(),
            [Event::DtlsFailed {
                reason: DtlsFailureReason::PeerAlert,
                alert: Some(a),
                ..
            }] if a == "bad_certificate"
        ),
        "{ev:?}"
    );
    sleep(Duration::from_millis(300));
    for (e, id) in [(&a, s.id), (&b, c.id)] {
        let l = &stats(e, id).legs[0];
        assert_eq!(l.packets_in, 0);
        assert_eq!(l.packets_out, 0, "nothing is sent without keys");
        assert_eq!(l.dtls.as_ref().unwrap().rtp.state, DtlsState::Failed);
    }
    let t = b.snapshot().totals.dtls;
    assert_eq!(t.failed[1], 1, "fingerprint_mismatch counted");
    assert_eq!(t.sessions, 0, "the failed session is released");
}

#[test]
fn silent_peer_times_out_with_that_reason() {
    let opts = DtlsOptions {
        retransmit_initial: Duration::from_millis(50),
        retransmit_count: 20,
        handshake_timeout: Duration::from_millis(1500),
        ..DtlsOptions::default()
    };
    let e = engine_with(BackendKind::IoUring, opts);
    let ev = e.take_events().unwrap();
    // A socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    let fp = Fingerprint::of(HashAlg::Sha256, b"x");
    e.create_stream(spec(dtls_leg(
        DtlsRole::Client,
        fp.clone(),
        Some(silent.local_addr().unwrap()),
        true,
    )))
    .unwrap();
    // A server whose client never comes times out too.
    e.create_stream(spec(dtls_leg(DtlsRole::Server, fp, None, true)))
        .unwrap();
    let got = dtls_events(&ev, 2, Duration::from_secs(5));
    assert_eq!(got.len(), 2, "{got:?}");
    for g in &got {
        // The timeout says which flight was missing: nothing came from the peer.
        let Event::DtlsFailed {
            reason: DtlsFailureReason::Timeout,
            role,
            detail: Some(detail),
            ..
        } = g
        else {
            panic!("{g:?}")
        };
        let want = match role {
            DtlsRole::Client => "no answer to our ClientHello",
            DtlsRole::Server => "no ClientHello came",
        };
        assert!(detail.starts_with(want), "{g:?}");
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // The client retransmitted into the void.
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while silent.recv(&mut buf).is_ok() {
        assert_eq!(buf[0], 0x16, "DTLS handshake records");
        n += 1;
    }
    assert!(n >= 3, "ClientHello retransmitted ({n})");
    sleep(Duration::from_millis(250)); // counters are published every 100 ms
    assert_eq!(e.snapshot().totals.dtls.failed[0], 2);
}

/// Two-socket UDP shim per pair: the client talks to `front`, the server sees `back`. Drops a
/// fixed share of datagrams in each direction from a seeded generator.
struct Shim {
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shim {
    /// For each server address, a front address to give the client.
    fn start(servers: Vec<SocketAddr>, loss: f64, seed: u64) -> (Shim, Vec<SocketAddr>) {
        let mut pairs = Vec::new();
        let mut fronts = Vec::new();
        for s in servers {
            let front = UdpSocket::bind("127.0.0.1:0").unwrap();
            let back = UdpSocket::bind("127.0.0.1:0").unwrap();
            front.set_nonblocking(true).unwrap();
            back.set_nonblocking(true).unwrap();
            fronts.push(front.local_addr().unwrap());
            pairs.push((front, back, s, None::<SocketAddr>));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let passed = Arc::new(AtomicU64::new(0));
        let (st, dr, pa) = (stop.clone(), dropped.clone(), passed.clone());
        let thread = std::thread::spawn(move || {
            let mut x = seed;
            let mut lose = move || {
                // xorshift64*
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                (r >> 11) as f64 / (1u64 << 53) as f64 <= loss
            };
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let mut idle = true;
                for (front, back, server, client) in pairs.iter_mut() {
                    while let Ok((n, from)) = front.recv_from(&mut buf) {
                        idle = false;
                        *client = Some(from);
                        if lose() {
                            dr.fetch_add(1, Ordering::Relaxed);
                        } else {
                            pa.fetch_add(1, Ordering::Relaxed);
                            let _ = back.send_to(&buf[..n], *server);
                        }
                    }
                    while let Ok((n, _)) = back.recv_from(&mut buf) {
                        idle = false;
                        if lose() {
                            dr.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(c) = *client {
                            pa.fetch_add(1, Ordering::Relaxed);
                            let _ = front.send_to(&buf[..n], c);
                        }
                    }
                }
                if idle {
                    sleep(Duration::from_micros(200));
                }
            }
        });
        (
            Shim {
                stop,
                dropped,
                passed,
                thread: Some(thread),
            },
            fronts,
        )
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An SDP offerer with `a=setup:actpass` prepares its stream before the answer, waiting for its
/// keys (`pending`); an active answerer's ClientHello reaches it first (RFC 5763 5). The engine
/// holds that datagram and starts the handshake when the answer's DTLS arrives, instead of
/// dropping it and waiting for the client's retransmission (1 s by default).
#[test]
fn an_offerers_early_client_hello_starts_the_handshake_the_answer_sets_up() {
    let a = engine_with(BackendKind::IoUring, DtlsOptions::default());
    let b = engine_with(BackendKind::IoUring, DtlsOptions::default());
    let bev = b.take_events().unwrap();
    let offerer = a
        .create_stream(spec(LegSpec {
            rtcp_mux: true,
            pending: true,
            ..LegSpec::default()
        }))
        .unwrap();
    let a_local = offerer.legs[0].local;
    let answerer = b
        .create_stream(spec(dtls_leg(
            DtlsRole::Client,
            fingerprint(&a),
            Some(a_local),
            true,
        )))
        .unwrap();
    // The answer takes a while to arrive: the ClientHello is already there.
    sleep(Duration::from_millis(150));
    a.update_stream(
        offerer.id,
        StreamUpdate {
            remote: Some((0, answerer.legs[0].local)),
            dtls: Some((
                0,
                DtlsSpec {
                    role: DtlsRole::Server,
                    fingerprint: fingerprint(&b),
                    profiles: None,
                },
            )),
            ..StreamUpdate::default()
        },
    )
    .unwrap();
    let ev = dtls_events(&bev, 1, Duration::from_secs(5));
    let took = ev.iter().find_map(|e| match e {
        Event::DtlsEstablished { handshake_ms, .. } => Some(*handshake_ms),
        _ => None,
    });
    let took = took.unwrap_or_else(|| panic!("{ev:?}"));
    // From the client's first ClientHello: the 150 ms wait plus the handshake, well before
    // its first retransmission (1 s, at least 750 ms with the timer's jitter).
    assert!(took < 700.0, "client handshake took {took} ms");
    sleep(Duration::from_millis(300));
    let l = &stats(&b, answerer.id).legs[0];
    assert!(l.packets_in > 0, "{l:?}");
    assert_eq!(l.auth_failures, 0);
}

#[test]
fn every_handshake_completes_through_30_percent_loss_both_ways() {
    // One CI run saw 19 of 20 clients established within 60 s, and 1 test in 15 failed the
    // same way after: a server dropped its session 10 s (the linger) after its handshake,
    // while its client, whose answers were lost a few times in a row, was still retrying on a
    // doubling timer. Servers now linger at least until the handshake timeout, and this test
    // passed 50 of 50. The retransmission timer still doubles without a cap (dimpl 0.9; RFC
    // 6347 4.2.4.1 allows doubling up to 60 s or more), so the limits leave room for a long
    // run of lost flights; a normal run takes a few seconds.
    let opts = DtlsOptions {
        retransmit_initial: Duration::from_millis(30),
        retransmit_count: 20,
        handshake_timeout: Duration::from_secs(120),
        ..DtlsOptions::default()
    };
    let a = engine_with(BackendKind::IoUring, opts);
    let b = engine_with(BackendKind::IoUring, opts);
    let aev = a.take_events().unwrap();
    let bev = b.take_events().unwrap();
    let n = 20;
    let servers: Vec<SocketAddr> = (0..n).map(|_| serve(&a, &b).legs[0].local).collect();
    let (shim, fronts) = Shim::start(servers, 0.30, 0x5eed_d715);
    let mut cids = Vec::new();
    for f in fronts {
        let c = b
            .create_stream(spec(dtls_leg(
                DtlsRole::Client,
                fingerprint(&a),
                Some(f),
                true,
            )))
            .unwrap();
        cids.push(c.id);
    }
    let server_ev = dtls_events(&aev, n, Duration::from_secs(120));
    let client_ev = dtls_events(&bev, n, Duration::from_secs(120));
    let ok = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::DtlsEstablished { .. }))
            .count()
    };
    assert_eq!(ok(&client_ev), n, "{client_ev:?}");
    assert_eq!(ok(&server_ev), n, "{server_ev:?}");
    let (dropped, passed) = (
        shim.dropped.load(Ordering::Relaxed),
        shim.passed.load(Ordering::Relaxed),
    );
    let share = dropped as f64 / (dropped + passed) as f64;
    assert!(
        (0.2..0.4).contains(&share),
        "the shim dropped {dropped} of {} datagrams",
        dropped + passed
    );
    // Media flows after, through the same loss (so only some of it).
    sleep(Duration::from_millis(500));
    for &id in &cids {
        let l = &stats(&b, id).legs[0];
        assert!(l.packets_in > 0, "{l:?}");
        assert_eq!(l.auth_failures, 0);
    }
    drop(shim);
}

/// Each of the four profiles, engine to engine, when both streams restrict the handshake to
/// it; an RSA certificate on one side; and no profile in common named as such.
#[test]
fn each_profile_engine_to_engine_when_restricted_per_stream() {
    use srtp_engine::proto::dtls::{DtlsIdentity, KeyKind};
    let a = engine_with(BackendKind::IoUring, fast());
    let b = Engine::start(EngineOptions {
        workers: 1,
        pin: false,
        fallback: false,
        dtls: DtlsSettings {
            identity: Some(Arc::new(DtlsIdentity::generate_kind(KeyKind::Rsa).unwrap())),
            options: fast(),
            ..DtlsSettings::default()
        },
        ..EngineOptions::default()
    })
    .unwrap();
    let (aev, bev) = (a.take_events().unwrap(), b.take_events().unwrap());
    let restricted = |role, fp, remote, only: &[Suite]| {
        let mut leg = dtls_leg(role, fp, remote, true);
        if let Some(d) = leg.dtls.as_mut() {
            d.profiles = Some(only.to_vec());
        }
        spec(leg)
    };
    for suite in [
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
    ] {
        let s = a
            .create_stream(restricted(
                DtlsRole::Server,
                fingerprint(&b),
                None,
                &[suite],
            ))
            .unwrap();
        let c = b
            .create_stream(restricted(
                DtlsRole::Client,
                fingerprint(&a),
                Some(s.legs[0].local),
                &[suite],
            ))
            .unwrap();
        for (name, rx) in [("server", &aev), ("client", &bev)] {
            let ev = dtls_events(rx, 1, Duration::from_secs(10));
            match ev.first() {
                Some(Event::DtlsEstablished { suite: got, .. }) => {
                    assert_eq!(*got, suite, "{name}")
                }
                other => panic!("{name} {suite:?}: {other:?}"),
            }
        }
        a.delete_stream(s.id).unwrap();
        b.delete_stream(c.id).unwrap();
    }
    // The server allows only AEAD_AES_256_GCM, the client offers only the 32-bit tag.
    let s = a
        .create_stream(restricted(
            DtlsRole::Server,
            fingerprint(&b),
            None,
            &[Suite::AeadAes256Gcm],
        ))
        .unwrap();
    b.create_stream(restricted(
        DtlsRole::Client,
        fingerprint(&a),
        Some(s.legs[0].local),
        &[Suite::AesCm128HmacSha1_32],
    ))
    .unwrap();
    let ev = dtls_events(&aev, 1, Duration::from_secs(10));
    match ev.first() {
        Some(Event::DtlsFailed { reason, .. }) => {
            assert_eq!(reason.as_str(), "no_common_profile", "{ev:?}")
        }
        other => panic!("{other:?}"),
    }
}

/// A DTLS server leg created without `remote` learns its peer from the ClientHello, not from
/// whatever arrives first: one datagram of junk from another address used to take the leg
/// (its socket connected to the sender), and the real client then timed out (issue 26).
#[test]
fn junk_before_the_client_hello_does_not_take_a_server_leg() {
    let a = engine_with(BackendKind::IoUring, fast());
    let b = engine_with(BackendKind::IoUring, fast());
    let (aev, bev) = (a.take_events().unwrap(), b.take_events().unwrap());
    let s = serve(&a, &b);
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in [
        &[0x16u8, 0xfe, 0xfd, 0, 0][..],
        &[0x17; 40],
        &[0x14, 0xfe, 0xfd, 0, 0, 0, 0],
    ] {
        junk.send_to(d, s.legs[0].local).unwrap();
    }
    sleep(Duration::from_millis(100));
    b.create_stream(spec(dtls_leg(
        DtlsRole::Client,
        fingerprint(&a),
        Some(s.legs[0].local),
        true,
    )))
    .unwrap();
    for (name, rx) in [("server", &aev), ("client", &bev)] {
        let ev = dtls_events(rx, 1, Duration::from_secs(5));
        assert!(
            matches!(ev.first(), Some(Event::DtlsEstablished { .. })),
            "{name}: {ev:?}"
        );
    }
    let learned = stats(&a, s.id).legs[0].remote;
    assert!(learned.is_some(), "the client was learned");
    assert_ne!(
        learned,
        Some(junk.local_addr().unwrap()),
        "not the junk's sender"
    );
}
