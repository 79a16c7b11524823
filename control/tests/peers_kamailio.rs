//! Calls through Kamailio 5.6 (Debian) as a record-routing proxy and registrar, over UDP, TCP
//! and TLS: `srtp-control answer` registers as bob, `srtp-control call` calls bob's address of
//! record through the proxy. One call is hung up by the caller, one by the answerer; both
//! BYEs cross the proxy by the route set and are answered 200, media flows both ways, and no
//! engine stream is left after the BYE.
//!
//! Ports: Kamailio 5170 (UDP, TCP) and 5171 (TLS); the engine's media 37000-37999.
//!
//! What a proxy taught us (issue 23): a caller that ignored Record-Route sent its ACK and BYE
//! past the proxy with the wrong Request-URI; Kamailio dropped the ACK and answered the BYE
//! 404, and the call still "ended" with exit code 0.

mod common;

use std::time::Duration;

use common::{Answerer, Node, call, figure, pki, text};
use srtp_engine_tests::peers::{Kamailio, LabPki, Scratch};

#[test]
fn calls_through_kamailio_hang_up_from_either_end_over_udp_tcp_and_tls() {
    let dir = Scratch::new("kamailio");
    pki(&dir.join("pki"));
    let lab = LabPki::in_dir(&dir.join("pki"));
    let kamailio = Kamailio::start(&dir, 5170, &lab, None, None);
    let node = Node::start("kamailio", (37000, 37999));
    let (ca, cert, key) = (
        lab.ca.to_str().unwrap(),
        lab.cert.to_str().unwrap(),
        lab.key.to_str().unwrap(),
    );
    for proto in ["udp", "tcp", "tls"] {
        let proxy = if proto == "tls" {
            kamailio.tls
        } else {
            kamailio.sip
        }
        .to_string();
        let listen = format!("{proto}:127.0.0.1:0");
        let log = dir.join(&format!("answerer-{proto}.sip"));
        let mut args = vec![
            "--listen",
            &listen,
            "--user",
            "bob",
            "--engine",
            node.sock(),
            "--register",
            &proxy,
            "--hangup-after-ms",
            "1500",
            "--sip-log",
            log.to_str().unwrap(),
            "--verify",
            ca,
        ];
        if proto == "tls" {
            args.extend(["--tls-cert", cert, "--tls-key", key]);
        }
        let mut bob = Answerer::start(&args);
        bob.wait_line(|l| l.starts_with("registered"), Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "{proto}: bob did not register: {}\n{}",
                    bob.output(),
                    kamailio.daemon.log()
                )
            });

        // The caller hangs up first (held 500 ms, the answerer would at 1.5 s).
        let base = [
            "--listen",
            &listen,
            "--engine",
            node.sock(),
            "--to",
            "sip:bob@127.0.0.1",
            "--via",
            &proxy,
            "--verify",
            ca,
        ];
        let mut a = base.to_vec();
        a.extend(["--hold-ms", "500"]);
        let o = call(&a);
        let out = text(&o);
        assert!(
            o.status.success(),
            "{proto}: {out}\n{}",
            kamailio.daemon.log()
        );
        assert!(
            out.contains("ended by our hangup, BYE answered 200"),
            "{proto}: {out}"
        );
        assert!(
            figure(&out, "packets in") > 10,
            "{proto}: no media in: {out}"
        );
        assert!(figure(&out, " out ") > 10, "{proto}: no media out: {out}");
        assert_eq!(figure(&out, "auth failures"), 0, "{out}");
        let ended = bob
            .wait_line(|l| l.starts_with("ended "), Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{proto}: bob never saw the BYE: {}", bob.output()));
        assert!(ended.contains("by the peer"), "{proto}: {ended}");
        assert!(figure(&ended, "packets in") > 10, "{proto}: {ended}");
        assert!(
            node.wait_streams(0, Duration::from_secs(3)),
            "{proto}: engine streams left after the BYE: {}",
            node.streams()
        );

        // Now the answerer hangs up (at 1.5 s) while the caller would hold for 4 s: its BYE
        // goes back through the proxy.
        let mut a = base.to_vec();
        a.extend(["--hold-ms", "4000"]);
        let o = call(&a);
        let out = text(&o);
        assert!(o.status.success(), "{proto}: {out}");
        assert!(out.contains("ended by the peer"), "{proto}: {out}");
        let ended = bob
            .wait_line(
                |l| l.starts_with("ended ") && l.contains("by our hangup"),
                Duration::from_secs(5),
            )
            .unwrap_or_else(|| panic!("{proto}: {}", bob.output()));
        assert!(ended.contains("BYE answered 200"), "{proto}: {ended}");
        assert!(
            node.wait_streams(0, Duration::from_secs(3)),
            "{proto}: streams left"
        );

        // The route set was followed: every in-dialog request of bob's went to the proxy with
        // a Route header, and the INVITE came through it.
        let sip = std::fs::read_to_string(&log).unwrap();
        assert!(
            sip.contains("Record-Route: <sip:127.0.0.1:517"),
            "{proto}: {sip}"
        );
        let (code, rest) = bob.terminate();
        assert_eq!(code, Some(0), "{proto}: {rest}");
        assert!(rest.contains("unregistered"), "{proto}: {rest}");
        assert!(
            rest.contains("2 call(s) answered, 0 failure(s)"),
            "{proto}: {rest}"
        );
    }
}

/// A load run through Kamailio: the answerer agents register (`[answerer] register`), the
/// callers call the address of record through the proxy (`sip.proxy`); every call is set up,
/// carries media and is hung up with its BYE answered.
#[test]
fn a_load_run_reaches_registered_answerers_through_kamailio() {
    let dir = Scratch::new("kamailio-run");
    pki(&dir.join("pki"));
    let lab = LabPki::in_dir(&dir.join("pki"));
    let kamailio = Kamailio::start(&dir, 5172, &lab, Some("secret"), None);
    let scenario = dir.join("run.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "through Kamailio"
role = "both"
[engine]
workers = 1
pin = false
port_min = 41500
port_max = 41999
[sip]
target = "sip:answer@127.0.0.1"
proxy = "{proxy}"
auth = "answer:secret"
agents = 2
[load]
calls = 20
rate = 10.0
hold_s = 1.0
[thresholds]
min_mos = 1.0
[answerer]
register = "{proxy}"
[report]
dir = "{report}"
"#,
            proxy = kamailio.sip,
            report = dir.join("report").display()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(common::BIN)
        .args(["run", "--progress", "off"])
        .arg(&scenario)
        .output()
        .unwrap();
    let out = text(&o);
    let failed = std::fs::read_to_string(dir.join("report/failed-calls.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "{out}\n--- failed calls ---\n{failed}\n{}",
        kamailio.daemon.log()
    );
    assert!(out.contains("result            PASS"), "{out}");
    assert!(out.contains("set up            20 (100.00%)"), "{out}");
    assert!(out.contains("(0 of "), "no packet lost: {out}");
    // Both agents registered the same address of record, so Kamailio forks each INVITE to
    // both: the second answer is acknowledged and ended at once, or cancelled. The media
    // balance counts such calls apart.
    assert!(out.contains("auth failures 0"), "{out}");
    assert!(out.contains("forked calls      "), "{out}");
    assert!(out.contains("pass  media accounted for"), "{out}");
}
