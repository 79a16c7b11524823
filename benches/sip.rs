//! SIP and SDP parsing cost, against the budget of 1,000 calls per second on one core.
//!
//! A call's signaling is about 8 messages per side (INVITE, 100, 180, 200, ACK, BYE, 200,
//! plus one retransmission or challenge). The reference in the same run is a plain copy of
//! the same bytes (the floor any parser pays to own its input); the table prints ns per
//! message, the ratio to the copy, and the share of one core that parsing takes at
//! 1,000 calls/s.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use srtp_control::sdp::{SecurityConfig, Session, plan_answer};
use srtp_control::sip::Message;

const INVITE: &str = "INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK5f1c2a9e0b7d4c3a;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@127.0.0.1>;tag=8e2b1c0d9f3a4b5c\r\n\
To: <sip:bob@127.0.0.1:5070>\r\n\
Call-ID: 4f1a2b3c4d5e6f70@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5060>\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
User-Agent: srtp-control/0.1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 455\r\n\
\r\n\
v=0\r\n\
o=srtp-control 1 1 IN IP4 127.0.0.1\r\n\
s=srtp-control\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 36000 RTP/SAVP 0 8 9 111\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
a=crypto:3 AEAD_AES_128_GCM inline:AgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHQ==\r\n\
a=sendrecv\r\n";

fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut runs = Vec::new();
    for _ in 0..9 {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn bench(c: &mut Criterion) {
    let bytes = INVITE.as_bytes();
    assert_eq!(Message::parse(bytes).unwrap().body.len(), 455);
    let mut g = c.benchmark_group("sip");
    g.bench_function("copy (reference)", |b| {
        b.iter(|| black_box(black_box(bytes).to_vec()))
    });
    g.bench_function("parse INVITE", |b| {
        b.iter(|| black_box(Message::parse(black_box(bytes)).unwrap()))
    });
    let m = Message::parse(bytes).unwrap();
    g.bench_function("parse SDP + plan answer", |b| {
        b.iter(|| {
            let s = Session::parse(black_box(&m.body)).unwrap();
            black_box(plan_answer(&SecurityConfig::default(), &s, None).unwrap())
        })
    });
    g.finish();

    let copy = median_ns(|| {
        black_box(black_box(bytes).to_vec());
    });
    let sip = median_ns(|| {
        black_box(Message::parse(black_box(bytes)).unwrap());
    });
    let sdp = median_ns(|| {
        let s = Session::parse(black_box(&m.body)).unwrap();
        black_box(plan_answer(&SecurityConfig::default(), &s, None).unwrap());
    });
    // 8 SIP messages and one offer/answer per call per side, 1,000 calls/s.
    let share = (8.0 * sip + sdp) * 1000.0 / 1e9 * 100.0;
    println!(
        "\n| what ({} bytes) | ns (median of 9) | vs copy |",
        bytes.len()
    );
    println!("| --- | ---: | ---: |");
    println!("| copy of the bytes (reference) | {copy:.0} | 1.0x |");
    println!(
        "| SIP parse (INVITE with SDP) | {sip:.0} | {:.1}x |",
        sip / copy
    );
    println!(
        "| SDP parse + answer plan | {sdp:.0} | {:.1}x |",
        sdp / copy
    );
    println!(
        "share of one core at 1,000 calls/s (8 messages + 1 offer/answer per call): {share:.2}%"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
