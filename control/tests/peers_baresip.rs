//! baresip 1.0 (Debian), a phone that is not us, with SDES: we call it and it calls us.
//!
//! - baresip answers without `a=rtcp-mux` (as many phones do): our offer kept an RTCP port
//!   (`a=rtcp`), so RTCP flows both ways on separate ports with no authentication failure.
//! - baresip puts our answerer on hold (a re-INVITE with `a=sendonly`): our stream goes to
//!   receive only and stops sending; its hangup ends our stream.
//!
//! - DTLS-SRTP (baresip's `dtls_srtp`, with its RSA certificate) both ways: we call it, it
//!   calls us; media both ways with no authentication failure.
//!
//! Ports: baresip SIP 5200, 5210, 5240 and 5250 (each also takes the next one for TLS),
//! ctrl_tcp 5300, 5310, 5340 and 5350, RTP 42000-42799; our engine 38000-38999 and
//! 37000-37999.

mod common;

use std::time::Duration;

use common::{Answerer, Node, call, figure, text};
use srtp_engine_tests::peers::{Baresip, MediaEnc, Scratch};

#[test]
fn we_call_baresip_and_rtcp_follows_its_declined_rtcp_mux() {
    let dir = Scratch::new("baresip-answers");
    let mut phone = Baresip::start(
        &dir,
        "alice",
        5200,
        5300,
        (42000, 42199),
        MediaEnc::Sdes,
        None,
    );
    let node = Node::start("baresip-answers", (38000, 38499));
    let log = dir.join("caller.sip");
    // RTCP goes every 5 s on average on both sides: 11 s holds at least one report each way.
    let o = call(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        node.sock(),
        "--to",
        "sip:alice@127.0.0.1:5200",
        "--hold-ms",
        "11000",
        "--sip-log",
        log.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", phone.daemon.log());
    let sip = std::fs::read_to_string(&log).unwrap();
    let answer = sip
        .split("200 Answering")
        .nth(1)
        .expect("baresip's 200 with its SDP");
    assert!(
        !answer.split("\n\n").next().unwrap_or("").is_empty() && !answer.contains("a=rtcp-mux"),
        "baresip declines rtcp-mux: {answer}"
    );
    assert!(
        sip.contains("a=rtcp:"),
        "our offer names its RTCP port: {sip}"
    );
    assert!(figure(&out, "packets in") > 100, "{out}");
    assert!(
        figure(&out, "RTCP in") >= 1,
        "baresip's RTCP reached our RTCP port: {out}"
    );
    let rtcp_out = out
        .split("RTCP in ")
        .nth(1)
        .and_then(|r| r.split(" out ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("RTCP out figure");
    assert!(rtcp_out >= 1, "our RTCP went out: {out}");
    assert_eq!(figure(&out, "auth failures"), 0, "{out}");
    assert!(out.contains("BYE answered 200"), "{out}");
    assert!(
        phone
            .wait_event("CALL_CLOSED", Duration::from_secs(5))
            .is_some(),
        "baresip saw our BYE"
    );
}

#[test]
fn baresip_calls_us_puts_us_on_hold_and_hangs_up() {
    let dir = Scratch::new("baresip-calls");
    let node = Node::start("baresip-calls", (38500, 38999));
    let mut bob = Answerer::start(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--user",
        "bob",
        "--engine",
        node.sock(),
        "--seconds",
        "60",
    ]);
    let mut phone = Baresip::start(
        &dir,
        "carol",
        5210,
        5310,
        (42200, 42399),
        MediaEnc::Sdes,
        None,
    );
    phone.command("dial", &format!("sip:bob@127.0.0.1:{}", bob.port));
    phone
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no call: {}\n{}", bob.output(), phone.daemon.log()));
    bob.wait_line(|l| l.starts_with("answered "), Duration::from_secs(5))
        .expect("bob answered");
    let ours = |node: &Node| {
        let s = node.stream_stats();
        assert_eq!(s.len(), 1, "one stream: {s:?}");
        let leg = &s[0].legs[0];
        (s[0].mode.name().to_owned(), leg.packets_out, leg.packets_in)
    };
    std::thread::sleep(Duration::from_millis(1000));
    let (mode, out0, in0) = ours(&node);
    assert_eq!(mode, "sendrecv");
    assert!(
        out0 > 20 && in0 > 20,
        "media both ways before the hold: {out0} {in0}"
    );

    phone.command("hold", "");
    let updated = bob
        .wait_line(|l| l.starts_with("updated "), Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "no re-INVITE applied: {}\n{}",
                bob.output(),
                phone.daemon.log()
            )
        });
    assert!(updated.contains("on hold by the peer"), "{updated}");
    std::thread::sleep(Duration::from_millis(200));
    let (mode, out1, _) = ours(&node);
    assert_eq!(mode, "recv", "the hold reached the engine");
    std::thread::sleep(Duration::from_millis(1000));
    let (_, out2, _) = ours(&node);
    assert_eq!(out1, out2, "we stopped sending while held");

    phone.command("hangup", "");
    let ended = bob
        .wait_line(|l| l.starts_with("ended "), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no BYE: {}", bob.output()));
    assert!(ended.contains("by the peer"), "{ended}");
    assert!(ended.contains("auth failures 0"), "{ended}");
    assert!(node.wait_streams(0, Duration::from_secs(3)), "stream left");
    let (code, rest) = bob.terminate();
    assert_eq!(code, Some(0), "{rest}");
}

#[test]
fn we_call_baresip_with_dtls_srtp_and_its_rsa_certificate() {
    let dir = Scratch::new("baresip-dtls-answers");
    let phone = Baresip::start(
        &dir,
        "dave",
        5240,
        5340,
        (42400, 42599),
        MediaEnc::Dtls,
        None,
    );
    let node = Node::start("baresip-dtls-answers", (37000, 37499));
    let log = dir.join("caller.sip");
    let o = call(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--engine",
        node.sock(),
        "--method",
        "dtls",
        "--to",
        "sip:dave@127.0.0.1:5240",
        "--hold-ms",
        "4000",
        "--sip-log",
        log.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", phone.daemon.log());
    let sip = std::fs::read_to_string(&log).unwrap();
    assert!(
        sip.contains("a=fingerprint:") && sip.contains("UDP/TLS/RTP/SAVP"),
        "baresip answered with DTLS-SRTP: {sip}"
    );
    assert!(out.contains("DTLS-SRTP established"), "{out}");
    assert!(figure(&out, "packets in") > 100, "{out}");
    assert_eq!(figure(&out, "auth failures"), 0, "{out}");
    assert!(out.contains("BYE answered 200"), "{out}");
}

#[test]
fn baresip_calls_us_with_dtls_srtp_and_media_flows_both_ways() {
    let dir = Scratch::new("baresip-dtls-calls");
    let node = Node::start("baresip-dtls-calls", (37500, 37999));
    let mut erin = Answerer::start(&[
        "--listen",
        "udp:127.0.0.1:0",
        "--user",
        "erin",
        "--engine",
        node.sock(),
        "--method",
        "dtls",
        "--seconds",
        "60",
    ]);
    let mut phone = Baresip::start(
        &dir,
        "frank",
        5250,
        5350,
        (42600, 42799),
        MediaEnc::Dtls,
        None,
    );
    phone.command("dial", &format!("sip:erin@127.0.0.1:{}", erin.port));
    phone
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no call: {}\n{}", erin.output(), phone.daemon.log()));
    erin.wait_line(|l| l.starts_with("answered "), Duration::from_secs(5))
        .expect("erin answered");
    // baresip starts its DTLS server only once the call is up: our first ClientHello can be
    // lost to that and go again after the first retransmission timeout (1 s).
    std::thread::sleep(Duration::from_millis(3000));
    let s = node.stream_stats();
    assert_eq!(s.len(), 1, "one stream: {s:?}");
    let leg = &s[0].legs[0];
    assert!(
        leg.dtls.as_ref().is_some_and(|d| d.rtp.suite.is_some()),
        "{leg:?}"
    );
    assert!(
        leg.packets_out > 50 && leg.received > 50,
        "media both ways over DTLS-SRTP keys: {leg:?}\n{}",
        phone.daemon.log()
    );
    assert_eq!(leg.auth_failures, 0, "{leg:?}");
    phone.command("hangup", "");
    let ended = erin
        .wait_line(|l| l.starts_with("ended "), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no BYE: {}", erin.output()));
    assert!(ended.contains("auth failures 0"), "{ended}");
    let (code, rest) = erin.terminate();
    assert_eq!(code, Some(0), "{rest}");
}
