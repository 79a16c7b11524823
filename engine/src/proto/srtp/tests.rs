//! Context-level tests: every suite end to end, and the state rules (ROC, replay, MKI,
//! lifetime, key derivation rate, SSRC admission) that the RFC vectors of the lower layers do
//! not reach.

use proptest::prelude::*;

use super::kdf::tests::hex;
use super::*;

fn key(suite: Suite, fill: u8) -> MasterKey {
    let material: Vec<u8> = (0..suite.master_len() as u8)
        .map(|i| i.wrapping_mul(31) ^ fill)
        .collect();
    MasterKey::new(suite, &material).unwrap()
}

fn pair(policy: impl Fn() -> SrtpPolicy) -> (SrtpOutbound, SrtpInbound) {
    (
        SrtpOutbound::new(policy()).unwrap(),
        SrtpInbound::new(policy()).unwrap(),
    )
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 0xc9, 0x00, 0x07];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x5a; 24]);
    p
}

fn protect(tx: &mut SrtpOutbound, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + 64, 0);
    let n = tx.protect_rtp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect(rx: &mut SrtpInbound, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = rx.unprotect_rtp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(tx: &mut SrtpOutbound, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + 64, 0);
    let n = tx.protect_rtcp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(rx: &mut SrtpInbound, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = rx.unprotect_rtcp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

/// The SRTP packet libsrtp2's own self-test (`srtp_validate`) checks, for
/// AES_CM_128_HMAC_SHA1_80 with the RFC 3711 B.3 master key: the end-to-end composition of the
/// B.2 keystream, B.3 derivation and the HMAC tag.
#[test]
fn aes_cm_128_packet_vector() {
    let suite = Suite::AesCm128HmacSha1_80;
    let material = hex("e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6");
    let policy = || SrtpPolicy::new(suite, MasterKey::new(suite, &material).unwrap());
    let (mut tx, mut rx) = pair(policy);
    let plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
    let wire = protect(&mut tx, &plain).unwrap();
    assert_eq!(
        wire,
        hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb")
    );
    assert_eq!(unprotect(&mut rx, &wire).unwrap(), plain);
}

#[test]
fn every_suite_round_trips_rtp_and_rtcp_across_a_wrap() {
    for suite in Suite::ALL {
        for mki in [&[][..], &[0xa5][..], &[1, 2, 3, 4][..]] {
            let policy = || {
                let k = key(suite, 0x11);
                let k = if mki.is_empty() {
                    k
                } else {
                    k.with_mki(mki).unwrap()
                };
                SrtpPolicy::new(suite, k)
            };
            let (mut tx, mut rx) = pair(policy);
            let p = suite.params();
            for i in 0..80u16 {
                let seq = 65500u16.wrapping_add(i);
                let plain = rtp(seq, 0xcafe_0001, 160);
                let wire = protect(&mut tx, &plain).unwrap();
                assert_eq!(
                    wire.len(),
                    plain.len() + mki.len() + p.rtp_tag_len,
                    "{suite}"
                );
                assert_ne!(
                    &wire[12..172],
                    &plain[12..],
                    "{suite}: payload not encrypted"
                );
                assert_eq!(
                    unprotect(&mut rx, &wire).unwrap(),
                    plain,
                    "{suite} seq {seq}"
                );

                let report = rtcp_rr(0xcafe_0001);
                let wire = protect_rtcp(&mut tx, &report).unwrap();
                assert_eq!(wire.len(), report.len() + 4 + mki.len() + p.rtcp_tag_len);
                assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), report, "{suite}");
            }
            assert_eq!(tx.roc(0xcafe_0001), Some(1), "{suite}");
            assert_eq!(rx.roc(0xcafe_0001), Some(1), "{suite}");
        }
    }
}

#[test]
fn tampering_anywhere_fails_authentication() {
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 3)));
        let wire = protect(&mut tx, &rtp(7, 9, 40)).unwrap();
        for at in [1, 5, 11, 12, 30, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x10;
            let e = unprotect(&mut rx, &bad).unwrap_err();
            assert_eq!(e, SrtpError::AuthFailed, "{suite} byte {at}");
        }
        let rtcp = protect_rtcp(&mut tx, &rtcp_rr(9)).unwrap();
        let mut bad = rtcp.clone();
        bad[10] ^= 1;
        assert_eq!(unprotect_rtcp(&mut rx, &bad), Err(SrtpError::AuthFailed));
        // The genuine packets still pass: failures changed no state.
        assert!(unprotect(&mut rx, &wire).is_ok());
        assert!(unprotect_rtcp(&mut rx, &rtcp).is_ok());
    }
}

#[test]
fn wrong_key_fails_authentication() {
    let suite = Suite::AeadAes128Gcm;
    let mut tx = SrtpOutbound::new(SrtpPolicy::new(suite, key(suite, 1))).unwrap();
    let mut rx = SrtpInbound::new(SrtpPolicy::new(suite, key(suite, 2))).unwrap();
    let wire = protect(&mut tx, &rtp(1, 1, 20)).unwrap();
    assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::AuthFailed));
    assert_eq!(
        rx.ssrc_count(),
        0,
        "a packet that failed must not create state"
    );
}

#[test]
fn replays_are_refused_and_forgeries_do_not_move_the_window() {
    let suite = Suite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 5)));
    let wires: Vec<_> = (0..300u16)
        .map(|s| protect(&mut tx, &rtp(s, 42, 10)).unwrap())
        .collect();
    // A forged packet far ahead must not advance the window.
    let mut forged = wires[299].clone();
    forged[20] ^= 1;
    unprotect(&mut rx, &wires[0]).unwrap();
    assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
    assert!(unprotect(&mut rx, &wires[1]).is_ok());
    assert_eq!(
        unprotect(&mut rx, &wires[1]),
        Err(SrtpError::Replayed { index: 1 })
    );
    for w in &wires[2..299] {
        unprotect(&mut rx, w).unwrap();
    }
    // 298 is the highest; 170 is 128 behind: too old.
    assert_eq!(
        unprotect(&mut rx, &wires[170]),
        Err(SrtpError::Replayed { index: 170 })
    );
    assert!(unprotect(&mut rx, &wires[299]).is_ok());
    // SRTCP too.
    let rtcp = protect_rtcp(&mut tx, &rtcp_rr(42)).unwrap();
    unprotect_rtcp(&mut rx, &rtcp).unwrap();
    assert_eq!(
        unprotect_rtcp(&mut rx, &rtcp),
        Err(SrtpError::Replayed { index: 0 })
    );
}

#[test]
fn reordering_across_the_wrap_and_large_windows() {
    let suite = Suite::AeadAes256Gcm;
    let policy = || SrtpPolicy::new(suite, key(suite, 9)).with_replay_window(1024);
    let (mut tx, mut rx) = pair(policy);
    let seqs: Vec<u16> = (0..1500u16).map(|i| 65000u16.wrapping_add(i)).collect();
    let wires: Vec<_> = seqs
        .iter()
        .map(|&s| protect(&mut tx, &rtp(s, 77, 30)).unwrap())
        .collect();
    // The first packet starts the stream (it fixes ROC 0); then blocks of 900 arrive
    // reversed: reordering by up to 899 packets, across the wrap.
    unprotect(&mut rx, &wires[0]).unwrap();
    for block in wires[1..].chunks(900) {
        for w in block.iter().rev() {
            unprotect(&mut rx, w).unwrap();
        }
    }
    assert_eq!(rx.roc(77), Some(1));
}

#[test]
fn protecting_an_index_twice_is_refused() {
    let suite = Suite::AesCm128HmacSha1_32;
    let mut tx = SrtpOutbound::new(SrtpPolicy::new(suite, key(suite, 1))).unwrap();
    protect(&mut tx, &rtp(10, 1, 10)).unwrap();
    assert_eq!(
        protect(&mut tx, &rtp(10, 1, 10)),
        Err(SrtpError::IndexReused { index: 10 })
    );
    assert!(
        protect(&mut tx, &rtp(9, 1, 10)).is_ok(),
        "older, unused index"
    );
}

#[test]
fn mki_selects_the_master_key() {
    let suite = Suite::AesCm256HmacSha1_80;
    let policy = || {
        SrtpPolicy::new(suite, key(suite, 1).with_mki(&[0, 1]).unwrap())
            .with_key(key(suite, 2).with_mki(&[0, 2]).unwrap())
    };
    let (mut tx, mut rx) = pair(policy);
    let a = protect(&mut tx, &rtp(1, 5, 50)).unwrap();
    tx.set_active_key(1).unwrap();
    let b = protect(&mut tx, &rtp(2, 5, 50)).unwrap();
    let mki_at = a.len() - 10 - 2;
    assert_eq!(&a[mki_at..mki_at + 2], &[0, 1]);
    assert_eq!(&b[mki_at..mki_at + 2], &[0, 2]);
    assert_eq!(unprotect(&mut rx, &b).unwrap(), rtp(2, 5, 50));
    assert_eq!(unprotect(&mut rx, &a).unwrap(), rtp(1, 5, 50));
    let c = protect(&mut tx, &rtp(3, 5, 50)).unwrap();
    let mut unknown = c.clone();
    unknown[mki_at + 1] = 9;
    assert_eq!(unprotect(&mut rx, &unknown), Err(SrtpError::UnknownMki));
    assert_eq!(tx.set_active_key(2), Err(SrtpConfigError::NoSuchKey(2)));
}

#[test]
fn policy_errors_are_typed() {
    let suite = Suite::AesCm128HmacSha1_80;
    let err = |p: SrtpPolicy| SrtpInbound::new(p).unwrap_err();
    assert_eq!(
        err(SrtpPolicy::new(suite, key(suite, 1)).with_key(key(suite, 2))),
        SrtpConfigError::MkiRequired
    );
    assert_eq!(
        err(
            SrtpPolicy::new(suite, key(suite, 1).with_mki(&[1]).unwrap())
                .with_key(key(suite, 2).with_mki(&[1, 2]).unwrap())
        ),
        SrtpConfigError::MkiLengthMismatch
    );
    assert_eq!(
        err(
            SrtpPolicy::new(suite, key(suite, 1).with_mki(&[1]).unwrap())
                .with_key(key(suite, 2).with_mki(&[1]).unwrap())
        ),
        SrtpConfigError::DuplicateMki
    );
    assert_eq!(
        err(SrtpPolicy::new(suite, key(suite, 1)).with_replay_window(32)),
        SrtpConfigError::ReplayWindow(32)
    );
    assert_eq!(
        err(SrtpPolicy::new(suite, key(suite, 1)).with_key_derivation_rate(48)),
        SrtpConfigError::KeyDerivationRate(48)
    );
    assert_eq!(
        err(SrtpPolicy::new(suite, key(Suite::AeadAes128Gcm, 1))),
        SrtpConfigError::SuiteMismatch {
            key: Suite::AeadAes128Gcm,
            policy: suite
        }
    );
}

#[test]
fn lifetime_reached_asks_for_a_rekey() {
    let suite = Suite::AeadAes128Gcm;
    let policy = || SrtpPolicy::new(suite, key(suite, 1).with_lifetime(3).unwrap());
    let (mut tx, mut rx) = pair(policy);
    let wires: Vec<_> = (0..3u16)
        .map(|s| protect(&mut tx, &rtp(s, 1, 8)).unwrap())
        .collect();
    assert_eq!(
        protect(&mut tx, &rtp(3, 1, 8)),
        Err(SrtpError::LifetimeReached)
    );
    for w in &wires {
        unprotect(&mut rx, w).unwrap();
    }
    let (mut tx2, _) = pair(policy);
    for s in 0..4u16 {
        let _ = protect(&mut tx2, &rtp(s, 1, 8));
    }
    let mut tx3 = SrtpOutbound::new(SrtpPolicy::new(suite, key(suite, 1))).unwrap();
    let extra = protect(&mut tx3, &rtp(3, 1, 8)).unwrap();
    assert_eq!(unprotect(&mut rx, &extra), Err(SrtpError::LifetimeReached));
    assert!(!SrtpError::LifetimeReached.is_peer_fault());
}

/// RFC 3711 4.3.1: with a key derivation rate, packets of index `i` use keys derived for
/// `r = i DIV kdr`. Packets below the rate use the r = 0 keys (as a rate of 0 does); later
/// ones use keys that a rate-0 receiver does not have.
#[test]
fn key_derivation_rate_rederives_session_keys() {
    let suite = Suite::AesCm128HmacSha1_80;
    let with_kdr = || SrtpPolicy::new(suite, key(suite, 4)).with_key_derivation_rate(16);
    let (mut tx, mut rx) = pair(with_kdr);
    let mut plain_rx = SrtpInbound::new(SrtpPolicy::new(suite, key(suite, 4))).unwrap();
    for seq in 0..64u16 {
        let wire = protect(&mut tx, &rtp(seq, 3, 20)).unwrap();
        let ours = unprotect(&mut rx, &wire);
        assert_eq!(ours.unwrap(), rtp(seq, 3, 20));
        let theirs = unprotect(&mut plain_rx, &wire);
        if seq < 16 {
            assert!(theirs.is_ok(), "seq {seq} uses r = 0 keys");
        } else {
            assert_eq!(theirs, Err(SrtpError::AuthFailed), "seq {seq}");
        }
    }
    // A late packet from an earlier r still authenticates after the keys moved on.
    let (mut tx, mut rx) = pair(with_kdr);
    let early = protect(&mut tx, &rtp(15, 3, 20)).unwrap();
    let late = protect(&mut tx, &rtp(16, 3, 20)).unwrap();
    unprotect(&mut rx, &late).unwrap();
    unprotect(&mut rx, &early).unwrap();
}

#[test]
fn ssrc_admission() {
    let suite = Suite::AesCm128HmacSha1_80;
    let (mut tx, _) = pair(|| SrtpPolicy::new(suite, key(suite, 1)));
    let mut rx =
        SrtpInbound::new(SrtpPolicy::new(suite, key(suite, 1)).with_ssrcs(&[1, 2])).unwrap();
    let w = protect(&mut tx, &rtp(1, 3, 8)).unwrap();
    assert_eq!(
        unprotect(&mut rx, &w),
        Err(SrtpError::UnknownSsrc { ssrc: 3 })
    );
    let mut small =
        SrtpOutbound::new(SrtpPolicy::new(suite, key(suite, 1)).with_max_ssrcs(2)).unwrap();
    protect(&mut small, &rtp(1, 1, 8)).unwrap();
    protect(&mut small, &rtp(1, 2, 8)).unwrap();
    assert_eq!(
        protect(&mut small, &rtp(1, 3, 8)),
        Err(SrtpError::UnknownSsrc { ssrc: 3 })
    );
}

#[test]
fn signalled_roc_and_ambiguous_roc() {
    let suite = Suite::AeadAes128Gcm;
    let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 1)));
    tx.set_roc(8, 7).unwrap();
    let wire = protect(&mut tx, &rtp(100, 8, 8)).unwrap();
    assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::AuthFailed));
    rx.set_roc(8, 7).unwrap();
    assert_eq!(unprotect(&mut rx, &wire).unwrap(), rtp(100, 8, 8));
    assert_eq!(rx.roc(8), Some(7));

    // ROC 0, highest seq 10: seq 40000 would need ROC -1.
    let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 1)));
    let early = protect(&mut tx, &rtp(40000, 8, 8)).unwrap();
    let mut tx2 = SrtpOutbound::new(SrtpPolicy::new(suite, key(suite, 1))).unwrap();
    unprotect(&mut rx, &protect(&mut tx2, &rtp(10, 8, 8)).unwrap()).unwrap();
    assert_eq!(unprotect(&mut rx, &early), Err(SrtpError::RocAmbiguous));
}

#[test]
fn short_malformed_and_small_buffers() {
    let suite = Suite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 1)));
    let mut buf = rtp(1, 1, 10);
    let len = buf.len();
    assert_eq!(
        tx.protect_rtp(&mut buf, len),
        Err(SrtpError::BufferTooSmall {
            needed: len + 10,
            capacity: len
        })
    );
    assert_eq!(
        rx.unprotect_rtp(&mut [0x80; 21], 21),
        Err(SrtpError::TooShort { len: 21, min: 22 })
    );
    let mut v1 = [0x40u8; 40];
    assert!(matches!(
        rx.unprotect_rtp(&mut v1, 40),
        Err(SrtpError::Malformed(_))
    ));
    // Sixteen CSRCs promised, none present.
    let mut csrc = [0u8; 40];
    csrc[0] = 0x8f;
    assert!(matches!(
        rx.unprotect_rtp(&mut csrc, 40),
        Err(SrtpError::Malformed(_))
    ));
    assert!(matches!(
        rx.unprotect_rtp(&mut [0u8; 4], 40),
        Err(SrtpError::BufferTooSmall { .. })
    ));
}

#[test]
fn batches_report_each_packet() {
    let suite = Suite::AeadAes128Gcm;
    let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 1)));
    let mut bufs: Vec<Vec<u8>> = (0..8u16)
        .map(|s| {
            let mut b = rtp(s, 4, 100);
            b.resize(200, 0);
            b
        })
        .collect();
    let mut batch: Vec<BatchPacket<'_>> =
        bufs.iter_mut().map(|b| BatchPacket::new(b, 112)).collect();
    assert_eq!(tx.protect_rtp_batch(&mut batch), 8);
    assert!(batch.iter().all(|p| p.len == 128 && p.result.is_ok()));
    batch[3].buf[40] ^= 1;
    assert_eq!(rx.unprotect_rtp_batch(&mut batch), 7);
    assert_eq!(batch[3].result, Err(SrtpError::AuthFailed));
    assert!(
        batch
            .iter()
            .enumerate()
            .all(|(i, p)| i == 3 || p.len == 112)
    );
}

#[test]
fn debug_output_shows_no_keys() {
    let suite = Suite::AesCm128HmacSha1_80;
    let tx = SrtpOutbound::new(SrtpPolicy::new(
        suite,
        MasterKey::new(suite, &[0x42; 30]).unwrap(),
    ))
    .unwrap();
    let shown = format!("{tx:?}");
    assert!(shown.contains("AesCm128HmacSha1_80"), "{shown}");
    assert!(!shown.contains("66"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hostile datagrams: any bytes, any length, never panic, never create state, and leave a
    /// legitimate stream working.
    #[test]
    fn arbitrary_datagrams_are_refused_cleanly(
        suite in prop::sample::select(Suite::ALL.to_vec()),
        junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40),
    ) {
        let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 8)));
        let first = protect(&mut tx, &rtp(1, 6, 30)).unwrap();
        unprotect(&mut rx, &first).unwrap();
        for mut j in junk {
            let len = j.len();
            prop_assert!(rx.unprotect_rtp(&mut j, len).is_err());
            prop_assert!(rx.unprotect_rtcp(&mut j, len).is_err());
        }
        prop_assert_eq!(rx.ssrc_count(), 1);
        let next = protect(&mut tx, &rtp(2, 6, 30)).unwrap();
        prop_assert_eq!(unprotect(&mut rx, &next).unwrap(), rtp(2, 6, 30));
    }

    /// Sender and receiver agree on every index for any arrival order within the window,
    /// including across sequence number wraps: the receiver's ROC follows the sender's.
    #[test]
    fn receiver_tracks_sender_under_reordering_and_loss(
        start in any::<u16>(),
        ops in prop::collection::vec((0usize..64, any::<bool>()), 100..600),
    ) {
        let suite = Suite::AesCm128HmacSha1_32;
        let (mut tx, mut rx) = pair(|| SrtpPolicy::new(suite, key(suite, 2)));
        // The first packet starts the stream.
        let first = protect(&mut tx, &rtp(start, 1, 12)).unwrap();
        prop_assert_eq!(unprotect(&mut rx, &first).unwrap(), rtp(start, 1, 12));
        let mut pending: std::collections::VecDeque<(u64, u16, Vec<u8>)> = Default::default();
        let mut deliver = |(_, s, wire): (u64, u16, Vec<u8>)| -> Result<(), TestCaseError> {
            // Every eighth packet is lost.
            if s & 7 != 7 {
                prop_assert_eq!(unprotect(&mut rx, &wire).unwrap(), rtp(s, 1, 12));
            }
            Ok(())
        };
        for (sent, (pick, hold)) in (1u64..).zip(ops) {
            let seq = start.wrapping_add(sent as u16);
            pending.push_back((sent, seq, protect(&mut tx, &rtp(seq, 1, 12)).unwrap()));
            if !hold || pending.len() > 48 {
                let p = pending.remove(pick % pending.len()).unwrap();
                deliver(p)?;
            }
            // Keep reordering inside the 128-packet window.
            while pending.front().is_some_and(|p| sent + 1 - p.0 > 120) {
                deliver(pending.pop_front().unwrap())?;
            }
        }
        for p in pending {
            deliver(p)?;
        }
    }
}
