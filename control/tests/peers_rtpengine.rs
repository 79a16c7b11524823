//! rtpengine 10.5 (Debian) anchoring the media of calls through Kamailio, as an SBC does:
//! SDES is re-keyed by the SBC on each side, DTLS-SRTP is terminated by it on each side. Our
//! caller and answerer each see only the SBC's media address, carry media both ways with no
//! authentication failure, and end with BYE answered 200.
//!
//! Ports: Kamailio 5180 (UDP) and 5181 (TLS), rtpengine control 22300 and media
//! 43000-43999, our engine 40000-40999.

mod common;

use std::time::Duration;

use common::{Answerer, Node, call, figure, pki, text};
use srtp_engine_tests::peers::{Kamailio, LabPki, Rtpengine, Scratch};

/// The `m=` port of each SDP in a SIP log, in order.
fn media_ports(sip: &str) -> Vec<u16> {
    sip.lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn rtpengine_anchors_sdes_and_dtls_calls() {
    let dir = Scratch::new("rtpengine");
    pki(&dir.join("pki"));
    let lab = LabPki::in_dir(&dir.join("pki"));
    let rtpengine = Rtpengine::start(&dir, 22300, (43000, 43999));
    let kamailio = Kamailio::start(&dir, 5180, &lab, None, Some(rtpengine.ng));
    let node = Node::start("rtpengine", (40000, 40999));
    let proxy = kamailio.sip.to_string();
    let answer_log = dir.join("answer.sip");
    let mut bob = Answerer::start(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--user",
        "bob",
        "--engine",
        node.sock(),
        "--method",
        "dual",
        "--register",
        &proxy,
        "--sip-log",
        answer_log.to_str().unwrap(),
        "--seconds",
        "120",
    ]);
    bob.wait_line(|l| l.starts_with("registered"), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}\n{}", bob.output(), kamailio.daemon.log()));
    let sbc = 43000..=43999;
    // Both ends are on one engine: the far end's certificate is that engine's.
    let far_end = node.client().hello().unwrap().capabilities.dtls_fingerprint;
    for method in ["sdes", "dtls"] {
        let log = dir.join(&format!("caller-{method}.sip"));
        let o = call(&[
            "--listen",
            "udp:127.0.0.1:0",
            "--engine",
            node.sock(),
            "--to",
            "sip:bob@127.0.0.1",
            "--via",
            &proxy,
            "--method",
            method,
            "--hold-ms",
            "1500",
            "--sip-log",
            log.to_str().unwrap(),
            "--far-end-fingerprint",
            &far_end,
        ]);
        let out = text(&o);
        assert!(
            o.status.success(),
            "{method}: {out}\n{}\n{}",
            kamailio.daemon.log(),
            rtpengine.daemon.log()
        );
        assert!(figure(&out, "packets in") > 30, "{method}: {out}");
        assert!(figure(&out, " out ") > 30, "{method}: {out}");
        assert_eq!(figure(&out, "auth failures"), 0, "{method}: {out}");
        assert!(out.contains("BYE answered 200"), "{method}: {out}");
        // The caller saw the SBC's media address in the answer, never the answerer's.
        let sip = std::fs::read_to_string(&log).unwrap();
        let ports = media_ports(&sip);
        assert_eq!(ports.len(), 2, "our offer and the answer: {sip}");
        assert!(
            sbc.contains(&ports[1]),
            "{method}: answered from {}: {sip}",
            ports[1]
        );
        if method == "dtls" {
            assert!(out.contains("DTLS-SRTP established"), "{out}");
            // rtpengine terminated DTLS: we shook hands with its certificate.
            assert!(
                out.contains("DTLS path: terminated by a middlebox (we shook hands with sha-256 "),
                "{out}"
            );
            assert!(!out.contains(&format!("with {far_end},")), "{out}");
        }
    }
    // The answerer was offered by the SBC: its address, and for SDES every suite rtpengine
    // has (AES_192_CM_HMAC_SHA1_80 among them, which our caller does not offer): the keys
    // were made by the SBC, not passed through.
    let sip = std::fs::read_to_string(&answer_log).unwrap();
    for p in media_ports(&sip).iter().step_by(2) {
        assert!(sbc.contains(p), "offered from {p}: {sip}");
    }
    assert!(sip.contains("AES_192_CM_HMAC_SHA1_80"), "{sip}");
    assert!(
        sip.contains("UDP/TLS/RTP/SAVP"),
        "the DTLS call reached us as DTLS: {sip}"
    );
    assert!(node.wait_streams(0, Duration::from_secs(3)));
    let (code, rest) = bob.terminate();
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains("2 call(s) answered, 0 failure(s)"), "{rest}");
}

/// A load run through Kamailio and rtpengine with DTLS-SRTP: both ends are ours, so the run
/// knows the far end's certificate (its own engine's), and every call's report says DTLS was
/// terminated by a middlebox, naming the certificate rtpengine presented.
#[test]
fn a_load_run_through_rtpengine_reports_dtls_terminated_by_a_middlebox() {
    let dir = Scratch::new("rtpengine-run");
    pki(&dir.join("pki"));
    let lab = LabPki::in_dir(&dir.join("pki"));
    let rtpengine = Rtpengine::start(&dir, 22310, (45000, 45499));
    let kamailio = Kamailio::start(&dir, 5190, &lab, None, Some(rtpengine.ng));
    let scenario = dir.join("run.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "DTLS through rtpengine"
role = "both"
[engine]
workers = 1
pin = false
port_min = 46000
port_max = 46499
[sip]
target = "sip:answer@127.0.0.1"
proxy = "{proxy}"
agents = 1
[security]
method = "dtls"
[load]
calls = 10
rate = 5.0
hold_s = 1.0
[thresholds]
min_mos = 1.0
# rtpengine terminates DTLS on each side: what reaches it before its handshake with the
# other end is done is dropped there, and shows as unaccounted in the media balance.
max_unaccounted_packets = 100
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
    assert!(
        o.status.success(),
        "{out}\n{}\n{}",
        kamailio.daemon.log(),
        rtpengine.daemon.log()
    );
    assert!(out.contains("set up            10 (100.00%)"), "{out}");
    assert!(
        out.contains(
            "DTLS path         0 end to end (the far end's own certificate), 10 terminated by a middlebox (we shook hands with sha-256 "
        ),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report/report.json")).unwrap()).unwrap();
    assert_eq!(report["dtls_path"]["terminated"], 10, "{out}");
    assert_eq!(report["dtls_path"]["end_to_end"], 0, "{out}");
    let html = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    assert!(
        html.contains("terminated by a middlebox"),
        "the HTML says it too"
    );
}
