//! Fuzzes SRTP and SRTCP unprotect with arbitrary datagrams: they must be refused with a typed
//! error (or, if genuinely valid, accepted), never panic, and never stop a legitimate stream.
//!
//! Input: byte 0 picks the suite, MKI use and RTP/RTCP; the rest is the datagram. A context that
//! has already accepted genuine traffic receives it, then a genuine packet must still pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_engine::proto::srtp::{MasterKey, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};

fn policy(suite: Suite, mki: bool) -> SrtpPolicy {
    let key = MasterKey::new(suite, &vec![0x5a; suite.master_len()]).unwrap();
    if mki {
        SrtpPolicy::new(suite, key.with_mki(&[1, 2, 3]).unwrap())
    } else {
        SrtpPolicy::new(suite, key)
    }
}

fn rtp(seq: u16, buf: &mut [u8]) -> usize {
    buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[12..52].fill(0x42);
    52
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let suite = Suite::ALL[usize::from(selector) % Suite::ALL.len()];
    let mki = selector & 0x40 != 0;
    let rtcp = selector & 0x80 != 0;
    let mut tx = SrtpOutbound::new(policy(suite, mki)).unwrap();
    let mut rx = SrtpInbound::new(policy(suite, mki)).unwrap();
    let mut buf = [0u8; 256];
    let len = rtp(100, &mut buf);
    let len = tx.protect_rtp(&mut buf, len).unwrap();
    rx.unprotect_rtp(&mut buf, len).unwrap();

    let mut input = datagram.to_vec();
    let len = input.len();
    let _ = if rtcp {
        rx.unprotect_rtcp(&mut input, len)
    } else {
        rx.unprotect_rtp(&mut input, len)
    };
    // Also a shorter length than the buffer, as a receive buffer would be.
    let _ = rx.unprotect_rtp(&mut input, len / 2);

    let len = rtp(101, &mut buf);
    let len = tx.protect_rtp(&mut buf, len).unwrap();
    assert!(rx.unprotect_rtp(&mut buf, len).is_ok(), "genuine packet refused after fuzz input");
});
