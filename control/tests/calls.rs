//! The issue 6 bar, end to end: two `srtp-control` processes on loopback place and answer
//! calls over UDP, TCP and TLS with every SDES suite and with DTLS-SRTP negotiated in SDP,
//! media carried by a real srtp-engine (in this process, on its control socket); a
//! required-SRTP offer to a plain answerer fails with 488 and says why; an expired TLS
//! certificate is named as such.

mod common;

use common::{Answerer, Node, call, figure, pki, text};
use srtp_engine::proto::srtp::Suite;

fn engine(name: &str) -> Node {
    Node::start(name, (36000, 36999))
}

/// Starts `srtp-control answer` for two minutes; returns it and its port.
fn answerer(args: &[&str]) -> (Answerer, u16) {
    let mut a = args.to_vec();
    a.extend(["--seconds", "120"]);
    let ans = Answerer::start(&a);
    let port = ans.port;
    (ans, port)
}

#[test]
fn calls_with_every_suite_and_dtls_over_udp_tcp_and_tls() {
    let node = engine("all");
    let sock = node.sock();
    let dir = std::env::temp_dir().join(format!("srtp-control-calls-pki-{}", std::process::id()));
    pki(&dir);
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key, ca) = (d("server.crt"), d("server.key"), d("ca.crt"));
    for proto in ["udp", "tcp", "tls"] {
        let listen = format!("{proto}:127.0.0.1:0");
        let mut args = vec!["--listen", &listen, "--engine", sock, "--method", "dual"];
        if proto == "tls" {
            args.extend(["--tls-cert", &cert, "--tls-key", &key]);
        }
        let (bob, port) = answerer(&args);
        let to = format!("sip:bob@localhost:{port}");
        let via = format!("127.0.0.1:{port}");
        let listen = format!("{proto}:127.0.0.1:0");
        let base = [
            "--listen", &listen, "--engine", sock, "--to", &to, "--via", &via, "--verify", &ca,
        ];
        for suite in Suite::ALL {
            let mut a = base.to_vec();
            a.extend(["--suites", suite.sdp_name(), "--hold-ms", "400"]);
            let o = call(&a);
            let out = text(&o);
            assert!(o.status.success(), "{proto} {suite}: {out}");
            assert!(
                out.contains(&format!("SRTP keyed by SDES, {suite} (tag 1)")),
                "{proto} {suite}: {out}"
            );
            let level = if proto == "tls" {
                "security level: encrypted"
            } else {
                "security level: none"
            };
            assert!(out.contains(level), "{out}");
            assert!(
                figure(&out, "packets in") > 5,
                "{proto} {suite}: no media: {out}"
            );
            assert_eq!(figure(&out, "auth failures"), 0, "{out}");
            assert!(out.contains(&format!("rx {suite} tx {suite}")), "{out}");
        }
        // DTLS-SRTP negotiated in SDP: the answerer is the DTLS client. Both ends are on
        // one engine, so the far end's certificate is that engine's.
        let far_end = node.client().hello().unwrap().capabilities.dtls_fingerprint;
        let mut a = base.to_vec();
        a.extend(["--method", "dtls", "--hold-ms", "1600"]);
        a.extend(["--far-end-fingerprint", &far_end]);
        let o = call(&a);
        let out = text(&o);
        assert!(o.status.success(), "{proto} dtls: {out}");
        assert!(
            out.contains("SRTP keyed by DTLS as server (sha-256 fingerprint"),
            "{out}"
        );
        assert!(
            out.contains("DTLS established"),
            "{proto}: the handshake did not complete: {out}"
        );
        assert!(
            out.contains("DTLS path: end to end (the far end's own certificate)"),
            "{out}"
        );
        assert!(
            figure(&out, "packets in") > 5,
            "{proto} dtls: no media: {out}"
        );
        assert_eq!(figure(&out, "auth failures"), 0, "{out}");
        drop(bob);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn required_srtp_to_plain_answerer_fails_with_488_and_expired_tls_is_named() {
    let node = engine("fail");
    let sock = node.sock();
    let (bob, port) = answerer(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        sock,
        "--srtp",
        "off",
    ]);
    let to = format!("sip:bob@127.0.0.1:{port}");
    let o = call(&["--listen", "udp:127.0.0.1:0", "--engine", sock, "--to", &to]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("failed (sip_488): rejected with 488 Not Acceptable Here: SRTP offered (RTP/SAVP) but our SRTP policy is off"),
        "{out}"
    );
    drop(bob);

    let dir =
        std::env::temp_dir().join(format!("srtp-control-calls-expired-{}", std::process::id()));
    pki(&dir);
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key, ca) = (d("expired.crt"), d("expired.key"), d("ca.crt"));
    let (bob, port) = answerer(&[
        "--listen",
        "tls:127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let to = format!("sip:bob@localhost:{port}");
    let via = format!("127.0.0.1:{port}");
    let o = call(&[
        "--listen",
        "tls:127.0.0.1:0",
        "--to",
        &to,
        "--via",
        &via,
        "--verify",
        &ca,
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "failed (tls_expired): TLS: the server certificate has expired (not valid after "
        ),
        "{out}"
    );
    drop(bob);
    let _ = std::fs::remove_dir_all(&dir);
}
