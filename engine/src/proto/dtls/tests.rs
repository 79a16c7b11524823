use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::srtp::Suite;

use super::session::ALERT_BAD_CERTIFICATE;
use super::*;

const BACKENDS: [DtlsBackend; 3] = [DtlsBackend::Auto, DtlsBackend::Openssl, DtlsBackend::Dimpl];

fn ctx_on(backend: DtlsBackend) -> DtlsContext {
    DtlsContext::new(
        Arc::new(DtlsIdentity::generate().unwrap()),
        DtlsOptions {
            backend,
            ..DtlsOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn fingerprint_parses_prints_and_checks_length() {
    let der = b"not really a certificate";
    let fp = Fingerprint::of(HashAlg::Sha256, der);
    let text = fp.to_string();
    assert!(text.starts_with("sha-256 "));
    assert_eq!(Fingerprint::parse(&text).unwrap(), fp);
    assert_eq!(Fingerprint::parse(&text.to_lowercase()).unwrap(), fp);
    assert_eq!(
        Fingerprint::parse(&text.replacen("sha-256", "SHA-256", 1)).unwrap(),
        fp
    );
    assert!(fp.matches(der));
    assert!(!fp.matches(b"another"));
    for alg in HashAlg::ALL {
        let f = Fingerprint::of(alg, der);
        assert_eq!(Fingerprint::parse(&f.to_string()).unwrap(), f);
        assert!(f.matches(der));
    }
    assert_eq!(Fingerprint::parse("sha-256"), Err(FingerprintError::Shape));
    assert_eq!(
        Fingerprint::parse("md5 AB:CD"),
        Err(FingerprintError::UnknownHash)
    );
    assert_eq!(
        Fingerprint::parse("sha-1 AB:CD"),
        Err(FingerprintError::Length {
            alg: "sha-1",
            expected: 20,
            actual: 2
        })
    );
    assert_eq!(
        Fingerprint::parse("sha-1 ABC:D"),
        Err(FingerprintError::BadHex)
    );
    assert_eq!(
        Fingerprint::parse("sha-1 A:BC"),
        Err(FingerprintError::BadHex)
    );
    assert_eq!(
        Fingerprint::parse("sha-1 ZZ"),
        Err(FingerprintError::BadHex)
    );
}

#[test]
fn handshake_in_memory_gives_mirrored_keys() {
    for backend in BACKENDS {
        mirrored_keys(ctx_on(backend), ctx_on(backend));
    }
    // RSA on one side, ECDSA on the other (OpenSSL).
    let rsa = DtlsContext::new(
        Arc::new(DtlsIdentity::generate_kind(KeyKind::Rsa).unwrap()),
        DtlsOptions::default(),
    )
    .unwrap();
    assert_eq!(rsa.identity().kind(), KeyKind::Rsa);
    mirrored_keys(rsa, ctx_on(DtlsBackend::Openssl));
}

fn mirrored_keys(a: DtlsContext, b: DtlsContext) {
    let now = Instant::now();
    let mut c = a.session(DtlsRole::Client, b.identity().fingerprint().clone(), now);
    let mut s = b.session(
        DtlsRole::Server,
        a.identity().fingerprint_with(HashAlg::Sha1),
        now,
    );
    let out = run_in_memory(&mut *c, &mut *s, now, 64).unwrap();
    // Both backends' servers pick AES-256-GCM, first in what the client offers.
    assert_eq!(out.client.suite, Suite::AeadAes256Gcm);
    assert_eq!(out.server.suite, out.client.suite);
    assert!(out.client.local.same_material(&out.server.remote));
    assert!(out.client.remote.same_material(&out.server.local));
    assert!(!out.client.local.same_material(&out.client.remote));
    assert!(c.is_finished() && s.is_finished());
}

#[test]
fn wrong_fingerprint_fails_both_sides_with_reasons() {
    for backend in BACKENDS {
        wrong_fingerprint(ctx_on(backend), ctx_on(backend));
    }
}

fn wrong_fingerprint(a: DtlsContext, b: DtlsContext) {
    let now = Instant::now();
    // The client expects someone else's certificate.
    let other = Fingerprint::of(HashAlg::Sha256, b"someone else");
    let mut c = a.session(DtlsRole::Client, other, now);
    let mut s = b.session(DtlsRole::Server, a.identity().fingerprint().clone(), now);
    let (cf, sf) = run_in_memory(&mut *c, &mut *s, now, 64).unwrap_err();
    assert_eq!(cf, Some(DtlsFailure::FingerprintMismatch));
    // The server hears why from our alert rather than timing out.
    assert_eq!(sf, Some(DtlsFailure::PeerAlert(ALERT_BAD_CERTIFICATE)));
}

#[test]
fn server_checks_the_client_certificate_too() {
    for backend in BACKENDS {
        server_checks(ctx_on(backend), ctx_on(backend));
    }
}

fn server_checks(a: DtlsContext, b: DtlsContext) {
    let now = Instant::now();
    let mut c = a.session(DtlsRole::Client, b.identity().fingerprint().clone(), now);
    let other = Fingerprint::of(HashAlg::Sha256, b"someone else");
    let mut s = b.session(DtlsRole::Server, other, now);
    let (_, sf) = run_in_memory(&mut *c, &mut *s, now, 64).unwrap_err();
    assert_eq!(sf, Some(DtlsFailure::FingerprintMismatch));
}

/// In real time: OpenSSL keeps its retransmission timer on the wall clock.
#[test]
fn silent_peer_times_out() {
    for backend in BACKENDS {
        silent_peer(backend);
    }
}

fn silent_peer(backend: DtlsBackend) {
    let a = DtlsContext::new(
        Arc::new(DtlsIdentity::generate().unwrap()),
        DtlsOptions {
            handshake_timeout: Duration::from_secs(2),
            retransmit_initial: Duration::from_millis(100),
            retransmit_max: Duration::from_millis(400),
            retransmit_count: 20,
            backend,
            ..DtlsOptions::default()
        },
    )
    .unwrap();
    let start = Instant::now();
    let mut c = a.session(
        DtlsRole::Client,
        Fingerprint::of(HashAlg::Sha256, b"x"),
        start,
    );
    let mut buf = [0u8; 2048];
    let mut now = start;
    let mut sent = 0;
    for _ in 0..100 {
        match c.poll_output(&mut buf) {
            DtlsOutput::Packet(_) => sent += 1,
            DtlsOutput::Failed(f) => {
                assert_eq!(f, DtlsFailure::Timeout);
                assert!(now - start >= Duration::from_secs(2));
                // 100, 200, 400, 400, ... ms: at least 5 in 2 s with the cap (3 without).
                let least = if backend == DtlsBackend::Openssl {
                    5
                } else {
                    3
                };
                assert!(sent >= least, "{backend:?}: sent {sent}");
                return;
            }
            DtlsOutput::Timeout(t) => {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
                now = t.max(Instant::now());
                c.handle_timeout(now);
            }
            DtlsOutput::Established(_) => panic!("established with nobody"),
        }
    }
    panic!("no timeout");
}

/// RFC 6347 4.1.2.7: invalid records are silently discarded. Garbage from anyone who can
/// reach the port must not end a handshake in progress: each junk datagram leaves the
/// session handshaking, counted as dropped, and the handshake then completes.
#[test]
fn garbage_is_survived() {
    for backend in BACKENDS {
        garbage(ctx_on(backend), ctx_on(backend));
    }
}

fn garbage(a: DtlsContext, b: DtlsContext) {
    let now = Instant::now();
    let mut server = a.session(DtlsRole::Server, b.identity().fingerprint().clone(), now);
    let mut client = b.session(DtlsRole::Client, a.identity().fingerprint().clone(), now);
    let mut buf = [0u8; 2048];
    // Truncated and malformed records, application data before the handshake, a record
    // of a later epoch, handshake messages that are not a ClientHello (the last, a
    // "Certificate" with message_seq 0, stalled dimpl's handshake for good: the real
    // ClientHello was then taken for a duplicate). A well-formed fatal alert from the
    // peer during the handshake is not junk: it ends the handshake, and the failure names
    // it.
    let junk: [&[u8]; 9] = [
        &[
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, 1,
            2, 3, 4,
        ],
        &[
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 14, 11, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2,
            9, 9,
        ],
        &[],
        &[0x16],
        &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        &[0x17; 40],
        &[0x15, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40],
        &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7, 0, 3, 1, 2, 3],
    ];
    for (n, j) in junk.iter().enumerate() {
        server.handle_packet(j);
        loop {
            match server.poll_output(&mut buf) {
                DtlsOutput::Timeout(_) => break,
                DtlsOutput::Failed(f) => panic!("junk {n} ended the handshake: {f}"),
                DtlsOutput::Packet(_) | DtlsOutput::Established(_) => {}
            }
        }
        assert!(!server.is_finished(), "junk {n}");
        assert_eq!(server.dropped(), n as u64 + 1, "junk {n} counted");
    }
    // The real handshake still goes through.
    let (mut sk, mut ck) = (None, None);
    let mut drain = |from: &mut Box<dyn DtlsSession>, keys: &mut Option<DtlsKeys>| {
        let mut out = Vec::new();
        loop {
            match from.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => out.push(p.to_vec()),
                DtlsOutput::Established(k) => *keys = Some(k),
                DtlsOutput::Failed(f) => panic!("{f}"),
                DtlsOutput::Timeout(_) => break,
            }
        }
        out
    };
    for _ in 0..20 {
        for p in drain(&mut client, &mut ck) {
            server.handle_packet(&p);
        }
        for p in drain(&mut server, &mut sk) {
            client.handle_packet(&p);
        }
        if sk.is_some() && ck.is_some() {
            break;
        }
    }
    assert!(
        sk.is_some() && ck.is_some(),
        "the handshake completes after the junk"
    );
}

/// The auto backend: two engines meet on dimpl; an RSA side (ours, or a client offering RSA
/// suites, as OpenSSL's does) runs on OpenSSL.
#[test]
fn auto_picks_dimpl_between_ecdsa_engines_and_openssl_for_others() {
    let run = |client: &DtlsContext, server: &DtlsContext| {
        let now = Instant::now();
        let mut c = client.session(
            DtlsRole::Client,
            server.identity().fingerprint().clone(),
            now,
        );
        let mut s = server.session(
            DtlsRole::Server,
            client.identity().fingerprint().clone(),
            now,
        );
        run_in_memory(&mut *c, &mut *s, now, 64).unwrap_or_else(|e| {
            panic!(
                "{:?} ({:?}) to {:?} ({:?}): {e:?}",
                client.options().backend,
                client.identity().kind(),
                server.options().backend,
                server.identity().kind()
            )
        });
        (c.implementation(), s.implementation())
    };
    let auto = || ctx_on(DtlsBackend::Auto);
    assert_eq!(
        run(&auto(), &auto()),
        (Some(DtlsBackend::Dimpl), Some(DtlsBackend::Dimpl))
    );
    // OpenSSL's ClientHello offers RSA suites: the auto server answers on OpenSSL.
    assert_eq!(
        run(&ctx_on(DtlsBackend::Openssl), &auto()),
        (Some(DtlsBackend::Openssl), Some(DtlsBackend::Openssl))
    );
    // An RSA server refuses dimpl's ECDSA-only ClientHello: the auto client tries again on
    // OpenSSL and completes.
    let rsa = DtlsContext::new(
        Arc::new(DtlsIdentity::generate_kind(KeyKind::Rsa).unwrap()),
        DtlsOptions {
            backend: DtlsBackend::Openssl,
            ..DtlsOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        run(&auto(), &rsa),
        (Some(DtlsBackend::Openssl), Some(DtlsBackend::Openssl))
    );
    // Our own RSA certificate: every session on OpenSSL.
    let rsa_auto = DtlsContext::new(
        Arc::new(DtlsIdentity::generate_kind(KeyKind::Rsa).unwrap()),
        DtlsOptions::default(),
    )
    .unwrap();
    assert_eq!(
        run(&rsa_auto, &auto()),
        (Some(DtlsBackend::Openssl), Some(DtlsBackend::Openssl))
    );
}

#[test]
fn alert_names() {
    assert_eq!(alert_name(42), "bad_certificate");
    assert_eq!(alert_name(40), "handshake_failure");
    assert_eq!(alert_name(255), "unknown");
    assert_eq!(
        DtlsFailure::PeerAlert(42).to_string(),
        "peer_alert (bad_certificate)"
    );
    for (k, r) in DtlsFailureReason::ALL.iter().enumerate() {
        let f = [
            DtlsFailure::Timeout,
            DtlsFailure::FingerprintMismatch,
            DtlsFailure::NoCertificate,
            DtlsFailure::NoCommonProfile,
            DtlsFailure::NoCommonCipherSuite,
            DtlsFailure::PeerAlert(1),
            DtlsFailure::Malformed,
            DtlsFailure::Protocol,
        ][k];
        assert_eq!(f.kind(), *r);
        assert_eq!(f.reason(), r.as_str());
        assert_eq!(f.index(), k);
    }
}
