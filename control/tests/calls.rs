//! The issue 6 bar, end to end: two `srtp-control` processes on loopback place and answer
//! calls over UDP, TCP and TLS with every SDES suite and with DTLS-SRTP negotiated in SDP,
//! media carried by a real srtp-engine (in this process, on its control socket); a
//! required-SRTP offer to a plain answerer fails with 488 and says why; an expired TLS
//! certificate is named as such.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::{Engine, EngineOptions};
use srtp_engine::worker::MediaOptions;

const BIN: &str = env!("CARGO_BIN_EXE_srtp-control");

struct Node {
    _engine: Arc<Engine>,
    _ctl: CtlServer,
    path: PathBuf,
}

fn engine(name: &str) -> Node {
    let opts = EngineOptions {
        workers: 1,
        pin: false,
        media: MediaOptions {
            port_min: 36000,
            port_max: 36999,
            ..MediaOptions::default()
        },
        ..EngineOptions::default()
    };
    let path = std::env::temp_dir().join(format!(
        "srtp-control-calls-{}-{name}.sock",
        std::process::id()
    ));
    let engine = Arc::new(Engine::start(opts).expect("engine starts"));
    let ctl = CtlServer::start(
        engine.clone(),
        CtlOptions {
            path: path.clone(),
            ..CtlOptions::default()
        },
    )
    .expect("control socket");
    Node {
        _engine: engine,
        _ctl: ctl,
        path,
    }
}

/// Starts `srtp-control answer` and waits for its "listening on" line; returns the port.
fn answerer(args: &[&str]) -> (Child, u16) {
    let mut child = Command::new(BIN)
        .arg("answer")
        .args(args)
        .args(["--seconds", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn srtp-control answer");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (child, port)
}

fn call(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("call")
        .args(args)
        .output()
        .expect("run srtp-control call")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The number after `key` in a media line such as "media packets in 40 out 41, ...".
fn figure(out: &str, key: &str) -> u64 {
    let i = out
        .find(key)
        .unwrap_or_else(|| panic!("no '{key}' in {out}"))
        + key.len();
    out[i..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn pki(dir: &Path) {
    let o = Command::new(BIN)
        .args(["pki", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn calls_with_every_suite_and_dtls_over_udp_tcp_and_tls() {
    let node = engine("all");
    let sock = node.path.to_str().unwrap();
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
        let (mut bob, port) = answerer(&args);
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
            assert!(
                out.contains(&format!("rx \"{suite}\" tx \"{suite}\"")),
                "{out}"
            );
        }
        // DTLS-SRTP negotiated in SDP: the answerer is the DTLS client.
        let mut a = base.to_vec();
        a.extend(["--method", "dtls", "--hold-ms", "1600"]);
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
            figure(&out, "packets in") > 5,
            "{proto} dtls: no media: {out}"
        );
        assert_eq!(figure(&out, "auth failures"), 0, "{out}");
        bob.kill().unwrap();
        let _ = bob.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn required_srtp_to_plain_answerer_fails_with_488_and_expired_tls_is_named() {
    let node = engine("fail");
    let sock = node.path.to_str().unwrap();
    let (mut bob, port) = answerer(&[
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
    bob.kill().unwrap();
    let _ = bob.wait();

    let dir =
        std::env::temp_dir().join(format!("srtp-control-calls-expired-{}", std::process::id()));
    pki(&dir);
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key, ca) = (d("expired.crt"), d("expired.key"), d("ca.crt"));
    let (mut bob, port) = answerer(&[
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
    bob.kill().unwrap();
    let _ = bob.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
