//! Golden SDP offer/answer files: `golden/*.txt`, each a config line, an SDP from "equipment"
//! (an offer we answer, or an answer to our offer) and the expected outcome. Keys and tls-ids
//! are random, so they are written as `KEY` and `TLSID`; everything else must match exactly.
//!
//! `GOLDEN_UPDATE=1 cargo test -p srtp-control --test sdp_golden` rewrites the expectations
//! (review the diff before committing it).

use std::fmt::Write as _;
use std::path::Path;

use srtp_control::sdp::{
    Direction, LocalMedia, MediaCrypto, Negotiated, Offer, SecurityConfig, Session, Signaling,
    Verdict, negotiate::Codec, plan_answer,
};
use srtp_control::sip::transport::Protocol;
use srtp_engine::proto::dtls::Fingerprint;
use srtp_engine::proto::srtp::Suite;

const OUR_FP: &str = "sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9";

struct Case {
    role: String,
    cfg: SecurityConfig,
    tls: bool,
    sdp: String,
    expect: String,
}

fn parse_case(text: &str) -> Case {
    let mut cfg = SecurityConfig::default();
    let mut role = String::new();
    let mut tls = false;
    let config = text
        .lines()
        .find(|l| l.starts_with("config:"))
        .expect("config line");
    for kv in config["config:".len()..].split_whitespace() {
        let (k, v) = kv.split_once('=').expect("key=value");
        match k {
            "role" => role = v.to_owned(),
            "policy" => {
                cfg.policy = serde_json::from_value(serde_json::Value::String(v.into())).unwrap()
            }
            "method" => {
                cfg.method = serde_json::from_value(serde_json::Value::String(v.into())).unwrap()
            }
            "suites" => {
                cfg.suites = v
                    .split(',')
                    .map(|s| Suite::from_sdp_name(s).expect(s))
                    .collect()
            }
            "codecs" => cfg.codecs = v.split(',').map(|s| Codec::by_name(s).expect(s)).collect(),
            "mux" => cfg.rtcp_mux = v == "yes",
            "avpf" => cfg.avpf = v == "yes",
            "lifetime" => cfg.lifetime = Some(v.parse().unwrap()),
            "mki" => cfg.mki_len = Some(v.parse().unwrap()),
            "tls" => tls = v == "yes",
            _ => panic!("unknown config key {k}"),
        }
    }
    let sdp_start = text.find("--- sdp\n").expect("--- sdp") + 8;
    let exp_start = text.find("--- expect\n").expect("--- expect");
    Case {
        role,
        cfg,
        tls,
        sdp: text[sdp_start..exp_start].to_owned(),
        expect: text[exp_start + 11..].to_owned(),
    }
}

fn normalize(sdp: &str) -> String {
    let mut out = String::new();
    for line in sdp.lines() {
        let mut l = line.to_owned();
        while let Some(i) = l.find("inline:") {
            let end = l[i + 7..]
                .find(['|', ';', ' '])
                .map_or(l.len(), |e| i + 7 + e);
            l.replace_range(i..end, "in-line:KEY");
        }
        let l = l.replace("in-line:", "inline:");
        let l = if l.starts_with("a=tls-id:") {
            "a=tls-id:TLSID".to_owned()
        } else {
            l
        };
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Our media as the engine would allocate it: a port pair unless RTCP is muxed.
fn local(rtcp_mux: bool) -> LocalMedia {
    LocalMedia {
        rtp: "192.0.2.10:30000".parse().unwrap(),
        rtcp: (!rtcp_mux).then(|| "192.0.2.10:30001".parse().unwrap()),
        fingerprint: Some(Fingerprint::parse(OUR_FP).unwrap()),
        direction: Direction::SendRecv,
    }
}

fn summary(n: &Negotiated, tls: bool) -> String {
    let crypto = match &n.crypto {
        MediaCrypto::None => "none".to_owned(),
        MediaCrypto::Sdes { local, remote } => format!(
            "sdes tag={} suite={} remote_keys={} remote_mki={:?} remote_lifetime={:?}",
            local.tag,
            local.suite,
            remote.keys.len(),
            remote.keys[0].mki,
            remote.keys[0].lifetime
        ),
        MediaCrypto::Dtls {
            role,
            remote_fingerprint,
            remote_tls_id,
            ..
        } => format!(
            "dtls role={} remote_fingerprint={} remote_tls_id={}",
            role.name(),
            remote_fingerprint,
            remote_tls_id.as_deref().unwrap_or("-")
        ),
    };
    format!(
        "remote_rtp={} remote_rtcp={} rtcp_mux={} codec={}/{} direction={} proto={}\ncrypto: {crypto}\nverdict: {}\n",
        n.remote_rtp,
        n.remote_rtcp.map_or("-".into(), |a| a.to_string()),
        n.rtcp_mux,
        n.codec.engine_name,
        n.codec.pt,
        n.direction.as_str(),
        n.proto,
        Verdict::new(
            Signaling::caller(
                if tls { Protocol::Tls } else { Protocol::Udp },
                "192.0.2.10:5060".parse().unwrap(),
                false
            ),
            n
        )
    )
}

fn run(case: &Case) -> String {
    let mut out = String::new();
    match case.role.as_str() {
        "answerer" => {
            let offer = Session::parse(case.sdp.as_bytes()).expect("the offer parses");
            match plan_answer(&case.cfg, &offer, None) {
                Ok(plan) => {
                    let ans = plan
                        .answer_sdp(&local(plan.negotiated.rtcp_mux), 1, 1)
                        .unwrap();
                    writeln!(out, "answer:").unwrap();
                    out.push_str(&normalize(&ans.to_text()));
                    out.push_str(&summary(&plan.negotiated, case.tls));
                }
                Err(e) => {
                    let (code, reason) = e.sip_status();
                    writeln!(out, "reject: {code} {reason} ({}): {e}", e.cause()).unwrap();
                }
            }
        }
        "offerer" => {
            let offer = Offer::new(&case.cfg, &local(case.cfg.rtcp_mux), 1, 1, None).unwrap();
            writeln!(out, "offer:").unwrap();
            out.push_str(&normalize(&offer.sdp.to_text()));
            let answer = Session::parse(case.sdp.as_bytes()).expect("the answer parses");
            match offer.accept_answer(&answer) {
                Ok(n) => out.push_str(&summary(&n, case.tls)),
                Err(e) => writeln!(out, "fail: {}: {e}", e.cause()).unwrap(),
            }
        }
        r => panic!("unknown role {r}"),
    }
    out
}

#[test]
fn golden_offer_answer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("GOLDEN_UPDATE").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "golden cases missing");
    let mut failures = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let case = parse_case(&text);
        let got = run(&case);
        if update {
            let head = &text[..text.find("--- expect\n").unwrap() + 11];
            std::fs::write(&f, format!("{head}{got}")).unwrap();
        } else if got != case.expect {
            failures.push(format!(
                "{}:\n--- want\n{}--- got\n{got}",
                f.display(),
                case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
