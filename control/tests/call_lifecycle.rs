//! `srtp-control answer` and `call` over their whole life, with real engines: the first UDP
//! request leaves at once (not at its retransmission), a delayed offer is answered in the ACK,
//! SIGTERM ends every call with BYE and leaves no engine stream, a restarted engine is
//! reconnected, and a BYE nobody answers makes the exit code non-zero.
//!
//! Ports: engines' media 39000-39999 and 41000-41499; SIP on ephemeral ports.

mod common;

use std::time::Duration;

use common::{Answerer, Node, call, call_spawn, figure, text};

/// The first request of an agent over UDP was dropped (the socket was not yet writable in
/// tokio's eyes and the error ignored): every call connected only at the retransmission,
/// T1 later. Each INVITE must now arrive once.
#[test]
fn every_invite_arrives_once_over_udp() {
    let node = Node::start("first-invite", (39000, 39099));
    let dir = srtp_engine_tests::peers::Scratch::new("first-invite");
    let log = dir.join("answer.sip");
    let bob = Answerer::on(&node, "60", &["--sip-log", log.to_str().unwrap()]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    for _ in 0..3 {
        let o = call(&[
            "--listen",
            "udp:127.0.0.1:0",
            "--engine",
            node.sock(),
            "--to",
            &to,
            "--calls",
            "2",
            "--hold-ms",
            "100",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let sip = std::fs::read_to_string(&log).unwrap();
    let invites = sip.lines().filter(|l| l.starts_with("INVITE sip:")).count();
    assert_eq!(
        invites, 6,
        "6 calls, 6 INVITEs received (no retransmission)"
    );
    let (code, out) = bob.terminate();
    assert_eq!(code, Some(0), "{out}");
}

/// An INVITE without SDP (how many trunks call): the answerer offers in its 200, the caller
/// answers in the ACK, and the media starts from that answer, with SDES and with DTLS-SRTP.
#[test]
fn a_delayed_offer_is_answered_in_the_ack() {
    let node = Node::start("delayed", (39200, 39399));
    let bob = Answerer::on(&node, "60", &["--method", "dual"]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    for method in ["sdes", "dtls"] {
        let o = call(&[
            "--listen",
            "udp:127.0.0.1:0",
            "--engine",
            node.sock(),
            "--to",
            &to,
            "--method",
            method,
            "--delayed-offer",
            "--hold-ms",
            "1500",
        ]);
        let out = text(&o);
        assert!(o.status.success(), "{method}: {out}");
        assert!(figure(&out, "packets in") > 20, "{method}: {out}");
        assert!(figure(&out, " out ") > 20, "{method}: {out}");
        assert_eq!(figure(&out, "auth failures"), 0, "{method}: {out}");
        if method == "dtls" {
            // Bob offered actpass; as the answerer in the ACK we are the DTLS client.
            assert!(out.contains("DTLS-SRTP established"), "{out}");
            assert!(out.contains("SRTP keyed by DTLS as client"), "{out}");
        } else {
            assert!(out.contains("SRTP keyed by SDES"), "{out}");
        }
    }
    assert!(node.wait_streams(0, Duration::from_secs(3)));
}

/// SIGTERM to `answer` mid-call: a BYE for every call, answered; no engine stream left; exit
/// code 0. The callers see their calls ended by the peer.
#[test]
fn sigterm_ends_every_call_with_bye() {
    let theirs = Node::start("sigterm-callers", (39400, 39599));
    let ours = Node::start("sigterm-answerer", (39600, 39799));
    let mut bob = Answerer::on(&ours, "60", &[]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    let callers: Vec<_> = (0..2)
        .map(|_| {
            call_spawn(&[
                "--listen",
                "udp:127.0.0.1:0",
                "--engine",
                theirs.sock(),
                "--to",
                &to,
                "--hold-ms",
                "30000",
            ])
        })
        .collect();
    assert!(
        bob.wait_count(|l| l.starts_with("answered"), 2, Duration::from_secs(5)),
        "{}",
        bob.output()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ours.streams(), 2);
    let (code, out) = bob.terminate();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.matches("by our stop, BYE answered 200").count(),
        2,
        "{out}"
    );
    assert!(out.contains("stopped: 2 BYE and 0 CANCEL sent"), "{out}");
    assert!(ours.wait_streams(0, Duration::from_secs(2)), "streams left");
    for c in callers {
        let o = c.wait_with_output().unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("ended by the peer"), "{t}");
    }
    assert!(theirs.wait_streams(0, Duration::from_secs(2)));
}

/// The engine `answer` talks to goes away under a live call and comes back: the live call is
/// ended by name with a BYE (its stream is gone), and the next call reconnects to the new
/// engine (the answerer says so) instead of being refused with 500 for ever.
#[test]
fn a_restarted_engine_is_reconnected() {
    let theirs = Node::start("restart-caller", (39800, 39899));
    let ours = Node::start("restart-answerer", (39900, 39949));
    let mut bob = Answerer::on(&ours, "60", &[]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    let args = |hold: &'static str| {
        vec![
            "--listen".to_owned(),
            "udp:127.0.0.1:0".into(),
            "--engine".into(),
            theirs.sock().into(),
            "--to".into(),
            to.clone(),
            "--hold-ms".into(),
            hold.into(),
        ]
    };
    let live = {
        let a = args("20000");
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        call_spawn(&a)
    };
    bob.wait_line(|l| l.starts_with("answered"), Duration::from_secs(5))
        .expect("answered");
    // Media flows both ways for a moment before the engine goes.
    std::thread::sleep(Duration::from_millis(500));
    let path = ours.stop();
    let ended = bob
        .wait_line(|l| l.starts_with("ended "), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the live call was not ended: {}", bob.output()));
    assert!(
        ended.contains("the media engine went away") && ended.contains("BYE answered 200"),
        "{ended}"
    );
    let o = live.wait_with_output().unwrap();
    assert!(text(&o).contains("ended by the peer"), "{}", text(&o));
    let ours = Node::at(&path, (39950, 39999));
    bob.wait_line(|l| l.contains("answering again"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", bob.output()));
    let a = args("600");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = call(&a);
    let out = text(&o);
    assert!(
        o.status.success(),
        "after the restart: {out}\n{}",
        bob.output()
    );
    assert!(figure(&out, "packets in") > 10, "{out}");
    let line = bob
        .wait_line(|l| l.contains("reconnected"), Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{}", bob.output()));
    assert!(line.contains("1 time"), "{line}");
    assert!(ours.wait_streams(0, Duration::from_secs(2)));
    let (code, out) = bob.terminate();
    // The call the engine took with it counts as a failure.
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 call(s) answered, 1 failure(s)"), "{out}");
}

/// A BYE nobody answers (the answerer is gone) is a failure: the caller says so and exits 1.
#[test]
fn an_unanswered_bye_is_a_failure() {
    let node = Node::start("lost-bye", (39100, 39199));
    let bob = Answerer::start(&["--listen", "udp:127.0.0.1:0", "--seconds", "60"]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    let caller = call_spawn(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        node.sock(),
        "--to",
        &to,
        "--hold-ms",
        "1000",
        "--t1-ms",
        "20",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    drop(bob); // SIGKILL: no BYE, no answer to ours.
    let o = caller.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("BYE FAILED: no answer (transaction timeout after 1.28s)"),
        "{out}"
    );
    assert!(out.contains("0 of 1 call(s) completed"), "{out}");
}

/// An answerer whose engine has no free port says so with 503 and Retry-After (RFC 3261
/// 21.5.4), not 500: an INVITE flood that exhausts the ports is overload, and the caller can
/// tell (issue 26).
#[test]
fn an_answerer_out_of_ports_answers_503_with_retry_after() {
    // One port: one call's stream (rtcp-mux) takes it.
    let full = Node::start("full-answerer", (41200, 41200));
    let caller = Node::start("full-caller", (41210, 41249));
    let mut bob = Answerer::on(&full, "30", &["--user", "bob"]);
    let to = format!("sip:bob@127.0.0.1:{}", bob.port);
    let first = call_spawn(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        caller.sock(),
        "--to",
        &to,
        "--hold-ms",
        "3000",
    ]);
    bob.wait_line(|l| l.starts_with("answered "), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{}", bob.output()));
    let log = std::env::temp_dir().join(format!("srtp-503-{}.sip", std::process::id()));
    let o = call(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        caller.sock(),
        "--to",
        &to,
        "--sip-log",
        log.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("503 Service Unavailable"), "{out}");
    let sip = std::fs::read_to_string(&log).unwrap();
    assert!(sip.contains("Retry-After: 5"), "{sip}");
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "the first call went on: {}", text(&o));
    let _ = std::fs::remove_file(&log);
}

/// A TLS client that connects and never finishes its handshake is closed after 10 s, and the
/// answerer says so in those words (issue 26: stalled clients stayed, and each was logged as
/// "closed right after the handshake").
#[test]
fn a_stalled_tls_client_is_closed_with_its_cause() {
    let dir = std::env::temp_dir().join(format!("srtp-stalled-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::pki(&dir);
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key) = (d("server.crt"), d("server.key"));
    let (out, err) = (dir.join("answer.out"), dir.join("answer.err"));
    let mut child = std::process::Command::new(common::BIN)
        .args(["answer", "--listen", "tls:127.0.0.1:0", "--tls-cert", &cert])
        .args(["--tls-key", &key, "--seconds", "30"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let port = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            let t = std::fs::read_to_string(&out).ok()?;
            t.lines()
                .find_map(|l| l.strip_prefix("listening on tls 127.0.0.1:"))
                .and_then(|p| p.trim().parse::<u16>().ok())
        })
        .expect("the answerer listens");
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = std::io::Read::read(&mut stalled, &mut b).unwrap_or(0);
    let waited = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(n, 0, "closed by the answerer");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
    assert!(
        log.contains("did not complete its handshake within 10s: closed"),
        "{log}"
    );
    assert!(!log.contains("right after the handshake"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An INVITE that is never acknowledged gets no media: the answerer's stream is held until
/// the ACK (issue 26: one 516-byte INVITE, never ACKed, made the engine send 3,212 packets to
/// the address in its SDP, which may be anyone's). When the ACK comes, the media starts.
#[test]
fn an_invite_never_acknowledged_gets_no_media() {
    use std::net::UdpSocket;
    let node = Node::start("held-answerer", (41000, 41049));
    let bob = Answerer::on(&node, "30", &["--srtp", "offered"]);
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (me, media) = (sip.local_addr().unwrap(), victim.local_addr().unwrap());
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n",
        media.port()
    );
    let head = |method: &str, cseq: &str, to_tag: &str| {
        format!(
            "{method} sip:bob@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-held-{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:mallory@127.0.0.1>;tag=m1\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\n\
             Call-ID: held-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: <sip:mallory@{me}>\r\n",
            port = bob.port
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", "1", ""),
        sdp.len()
    );
    sip.send_to(invite.as_bytes(), ("127.0.0.1", bob.port))
        .unwrap();
    // The 200 (and its retransmissions, unanswered).
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = vec![0u8; 4096];
    let mut said = String::new();
    let ok = loop {
        let Ok(n) = sip.recv(&mut b) else {
            panic!("no 200: {said}");
        };
        let m = String::from_utf8_lossy(&b[..n]).into_owned();
        if m.starts_with("SIP/2.0 200") {
            break m;
        }
        said += &m;
    };
    let to_tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split_once(";tag="))
        .map(|(_, t)| format!(";tag={}", t.trim()))
        .expect("a To tag");
    // RTP (payload type 0) that reaches the address in the SDP within `for_`.
    let rtp_within = |for_: Duration| {
        victim
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let t0 = std::time::Instant::now();
        let mut n = 0;
        let mut d = [0u8; 2048];
        while t0.elapsed() < for_ {
            if let Ok(len) = victim.recv(&mut d)
                && len >= 12
                && d[1] & 0x7f == 0
            {
                n += 1;
            }
        }
        n
    };
    let before_ack = rtp_within(Duration::from_secs(2));
    assert_eq!(before_ack, 0, "RTP sent before the ACK");
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("ACK", "1", &to_tag).replace("held-1\r\n", "held-ack\r\n")
    );
    sip.send_to(ack.as_bytes(), ("127.0.0.1", bob.port))
        .unwrap();
    let after_ack = rtp_within(Duration::from_secs(1));
    assert!(
        after_ack >= 20,
        "{after_ack} RTP packets in the second after the ACK"
    );
    drop(bob);
}

/// At its file limit, an answerer flooded with idle TCP connections neither spins nor locks
/// out a caller that speaks (issue 26: with `ulimit -n 1024` and 1,100 idle connections the
/// accept loop ran at 100% CPU and legitimate calls timed out). Its connection limit stays
/// below the file limit, and at the limit the oldest connection that never sent a message
/// makes room.
#[test]
fn an_idle_connection_flood_at_the_file_limit_locks_no_caller_out() {
    let node = Node::start("nofile", (41100, 41199));
    let dir = srtp_engine_tests::peers::Scratch::new("nofile");
    let out = dir.join("answer.out");
    let err = dir.join("answer.err");
    let mut answerer = std::process::Command::new("prlimit")
        .args(["--nofile=256:256", common::BIN, "answer"])
        .args(["--listen", "tcp:127.0.0.1:0", "--engine", node.sock()])
        .args(["--seconds", "30"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("prlimit (util-linux)");
    let port = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            let t = std::fs::read_to_string(&out).ok()?;
            t.lines()
                .find_map(|l| l.strip_prefix("listening on tcp 127.0.0.1:"))
                .and_then(|p| p.trim().parse::<u16>().ok())
        })
        .expect("the answerer listens");
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // CPU over 2 s of the flood: an accept loop spinning at the limit would take all of it.
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let c0 = cpu(answerer.id());
    std::thread::sleep(Duration::from_secs(2));
    let busy = (cpu(answerer.id()) - c0) / 2.0;
    let to = format!("sip:bob@127.0.0.1:{port};transport=tcp");
    let o = call(&[
        "--listen",
        "tcp:127.0.0.1:0",
        "--engine",
        node.sock(),
        "--to",
        &to,
        "--hold-ms",
        "200",
    ]);
    let _ = answerer.kill();
    let _ = answerer.wait();
    drop(idle);
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(o.status.success(), "{}\nanswerer: {log}", text(&o));
    assert!(
        busy < 0.5,
        "the answerer used {:.0}% CPU under the idle flood",
        busy * 100.0
    );
    assert!(
        log.contains("closed the oldest that never sent a message"),
        "{log}"
    );
}
