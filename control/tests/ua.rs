//! Two user agents on loopback, signaling only (media is tested end to end with the engine
//! in the workspace's `tests/` crate): calls over UDP, TCP and TLS, digest authentication,
//! 488 for a required-SRTP offer to a plain answerer, and every TLS failure's own message.

use std::net::SocketAddr;
use std::path::PathBuf;

use srtp_control::media::SignalingOnly;
use srtp_control::pki::{CertSpec, LabCa, write_pair};
use srtp_control::sdp::{KeyMethod, SecurityLevel, SrtpPolicy};
use srtp_control::sip::tls::{TlsFailure, TlsSettings, Verify};
use srtp_control::sip::transport::{Protocol, TransportError};
use srtp_control::sip::uri::Uri;
use srtp_control::ua::{CallError, UaConfig, UasEvent, UserAgent};
use srtp_engine::proto::dtls::Fingerprint;

const FP: &str = "sha-256 E7:9C:1F:40:3A:B2:6D:08:55:C3:91:2E:7A:4F:B0:16:D8:63:0C:A9:25:EE:71:B4:48:9F:02:6A:D1:3C:85:F7";

fn any(p: Protocol) -> (Protocol, SocketAddr) {
    (p, "127.0.0.1:0".parse().unwrap())
}

fn media() -> Box<SignalingOnly> {
    Box::new(SignalingOnly::new(
        "127.0.0.1".parse().unwrap(),
        Some(Fingerprint::parse(FP).unwrap()),
    ))
}

async fn start(cfg: UaConfig) -> (UserAgent, tokio::sync::mpsc::UnboundedReceiver<UasEvent>) {
    UserAgent::start(cfg, media()).await.expect("bind")
}

fn target(ua: &UserAgent, host: &str) -> (Uri, SocketAddr) {
    let a = ua.local_addr();
    (Uri::new(Some("bob"), host, Some(a.port())), a)
}

struct Pki {
    dir: PathBuf,
    ca: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> (Pki, LabCa) {
        let dir =
            std::env::temp_dir().join(format!("srtp-control-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = LabCa::new(&format!("srtp-control lab CA {tag}")).unwrap();
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        (Pki { dir, ca: ca_path }, ca)
    }

    fn issue(&self, ca: &LabCa, name: &str, spec: CertSpec<'_>) -> (PathBuf, PathBuf) {
        let (c, k) = ca.issue(&spec).unwrap();
        write_pair(&self.dir, name, &c, &k).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn calls_connect_over_udp_tcp_and_tls() {
    let (pki, ca) = Pki::new("ok");
    let server = pki.issue(
        &ca,
        "server",
        CertSpec {
            names: &["localhost", "127.0.0.1"],
            client: false,
            expired: false,
        },
    );
    for proto in [Protocol::Udp, Protocol::Tcp, Protocol::Tls] {
        let (p, a) = any(proto);
        let mut bob_cfg = UaConfig::new("bob", p, a);
        bob_cfg.tls = TlsSettings {
            verify: Verify::System,
            identity: Some(server.clone()),
            client_ca: None,
        };
        let (bob, mut bob_events) = start(bob_cfg).await;
        let mut alice_cfg = UaConfig::new("alice", p, a);
        alice_cfg.tls = TlsSettings {
            verify: Verify::CaFile(pki.ca.clone()),
            identity: None,
            client_ca: None,
        };
        let (alice, _) = start(alice_cfg).await;
        let (uri, peer) = target(&bob, "localhost");
        let info = alice
            .call(uri, peer)
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: {e}"));
        let want = if proto == Protocol::Tls {
            SecurityLevel::Encrypted
        } else {
            SecurityLevel::None
        };
        assert_eq!(info.verdict.level(), want, "{proto:?}: {}", info.verdict);
        assert!(
            info.verdict
                .to_string()
                .contains("SRTP keyed by SDES, AES_CM_128_HMAC_SHA1_80 (tag 1)"),
            "{}",
            info.verdict
        );
        let Some(UasEvent::Answered(b)) = bob_events.recv().await else {
            panic!("bob saw no call")
        };
        assert_eq!(b.call_id, info.call_id);
        alice.hangup(&info.call_id).await.unwrap();
        let Some(UasEvent::Ended { call_id, .. }) = bob_events.recv().await else {
            panic!("bob saw no BYE")
        };
        assert_eq!(call_id, info.call_id);
        alice.stop();
        bob.stop();
    }
}

#[tokio::test]
async fn required_srtp_offer_to_plain_answerer_gets_488() {
    let (p, a) = any(Protocol::Udp);
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.security.policy = SrtpPolicy::Off;
    let (bob, mut bob_events) = start(bob_cfg).await;
    let (alice, _) = start(UaConfig::new("alice", p, a)).await;
    let (uri, peer) = target(&bob, "127.0.0.1");
    let err = alice.call(uri, peer).await.unwrap_err();
    match &err {
        CallError::Rejected {
            code: 488,
            warning: Some(w),
            ..
        } => {
            assert!(
                w.contains("SRTP offered (RTP/SAVP) but our SRTP policy is off"),
                "{w}"
            );
        }
        other => panic!("expected a 488 with a reason, got {other}"),
    }
    assert_eq!(err.cause(), "sip_488");
    assert!(matches!(
        bob_events.recv().await,
        Some(UasEvent::Refused { code: 488, .. })
    ));
}

#[tokio::test]
async fn no_common_suite_and_dtls_negotiated_in_sdp() {
    let (p, a) = any(Protocol::Tcp);
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.security.suites = vec![srtp_engine::proto::srtp::Suite::AeadAes256Gcm];
    let (bob, _) = start(bob_cfg).await;
    let mut alice_cfg = UaConfig::new("alice", p, a);
    alice_cfg.security.suites = vec![srtp_engine::proto::srtp::Suite::AesCm128HmacSha1_80];
    let (alice, _) = start(alice_cfg).await;
    let (uri, peer) = target(&bob, "127.0.0.1");
    let err = alice.call(uri.clone(), peer).await.unwrap_err();
    assert!(err.to_string().contains("488 Not Acceptable Here: no common SRTP crypto suite: offered AES_CM_128_HMAC_SHA1_80; we accept AEAD_AES_256_GCM"), "{err}");

    // DTLS-SRTP: the answerer takes the active role.
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.security.method = KeyMethod::Dual;
    let (bob, _) = start(bob_cfg).await;
    let mut alice_cfg = UaConfig::new("alice", p, a);
    alice_cfg.security.method = KeyMethod::Dtls;
    let (alice, _) = start(alice_cfg).await;
    let (uri, peer) = target(&bob, "127.0.0.1");
    let info = alice.call(uri, peer).await.unwrap();
    assert!(
        info.verdict
            .to_string()
            .contains("SRTP keyed by DTLS as server (sha-256 fingerprint"),
        "{}",
        info.verdict
    );
}

#[tokio::test]
async fn digest_authentication_md5_or_sha256() {
    use srtp_control::sip::auth::Algorithm;
    let (p, a) = any(Protocol::Udp);
    // Over the wire, each algorithm on its own and both (RFC 8760: SHA-256 is chosen when
    // offered): the answerer's SIP log shows which one the caller answered with.
    for (offered, want) in [
        (vec![Algorithm::Sha256], "SHA-256"),
        (vec![Algorithm::Md5], "MD5"),
        (vec![Algorithm::Md5, Algorithm::Sha256], "SHA-256"),
    ] {
        let log = std::env::temp_dir().join(format!(
            "srtp-control-digest-{}-{want}-{}.log",
            std::process::id(),
            offered.len()
        ));
        let mut bob_cfg = UaConfig::new("bob", p, a);
        bob_cfg.challenge = Some(("lab".into(), "s3cret".into()));
        bob_cfg.challenge_algorithms = offered.clone();
        bob_cfg.log = srtp_control::sip::log::MessageLog::create(&log).unwrap();
        let (bob, _) = start(bob_cfg).await;
        let mut alice_cfg = UaConfig::new("alice", p, a);
        alice_cfg.credentials = Some(("alice".into(), "s3cret".into()));
        let (alice, _) = start(alice_cfg).await;
        let (uri, peer) = target(&bob, "127.0.0.1");
        alice
            .call(uri.clone(), peer)
            .await
            .unwrap_or_else(|e| panic!("{offered:?}: {e}"));
        let text = std::fs::read_to_string(&log).unwrap();
        let auth: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Authorization:"))
            .collect();
        assert_eq!(auth.len(), 1, "{offered:?}: {text}");
        assert!(
            auth[0].contains(&format!("algorithm={want}")),
            "{offered:?}: {}",
            auth[0]
        );
        let _ = std::fs::remove_file(&log);
        alice.stop();
        bob.stop();
    }
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.challenge = Some(("lab".into(), "s3cret".into()));
    let (bob, _) = start(bob_cfg).await;
    let (uri, peer) = target(&bob, "127.0.0.1");
    let mut wrong = UaConfig::new("mallory", p, a);
    wrong.credentials = Some(("mallory".into(), "guess".into()));
    let (mallory, _) = start(wrong).await;
    let e = mallory.call(uri.clone(), peer).await.unwrap_err();
    assert!(
        matches!(e, CallError::Auth(ref m) if m == "credentials refused"),
        "{e}"
    );
    let (nobody, _) = start(UaConfig::new("nobody", p, a)).await;
    let e = nobody.call(uri, peer).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("challenged but no credentials configured"),
        "{e}"
    );
}

async fn tls_failure(server: TlsSettings, client: TlsSettings, host: &str) -> CallError {
    let (p, a) = any(Protocol::Tls);
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.tls = server;
    let (bob, _) = start(bob_cfg).await;
    let mut alice_cfg = UaConfig::new("alice", p, a);
    alice_cfg.tls = client;
    let (alice, _) = start(alice_cfg).await;
    let (uri, peer) = target(&bob, host);
    alice.call(uri, peer).await.unwrap_err()
}

#[tokio::test]
async fn each_tls_failure_has_its_own_message() {
    let (pki, ca) = Pki::new("fail");
    let good = pki.issue(
        &ca,
        "good",
        CertSpec {
            names: &["localhost"],
            client: false,
            expired: false,
        },
    );
    let expired = pki.issue(
        &ca,
        "expired",
        CertSpec {
            names: &["localhost"],
            client: false,
            expired: true,
        },
    );
    let client = pki.issue(
        &ca,
        "client",
        CertSpec {
            names: &["alice"],
            client: true,
            expired: false,
        },
    );
    let (other_pki, other_ca) = Pki::new("other");
    let stranger = other_pki.issue(
        &other_ca,
        "stranger",
        CertSpec {
            names: &["localhost"],
            client: false,
            expired: false,
        },
    );
    let stranger_client = other_pki.issue(
        &other_ca,
        "stranger-client",
        CertSpec {
            names: &["mallory"],
            client: true,
            expired: false,
        },
    );
    let srv = |id: &(PathBuf, PathBuf), client_ca: Option<PathBuf>| TlsSettings {
        verify: Verify::System,
        identity: Some(id.clone()),
        client_ca,
    };
    let cli = |identity: Option<(PathBuf, PathBuf)>| TlsSettings {
        verify: Verify::CaFile(pki.ca.clone()),
        identity,
        client_ca: None,
    };

    let tls = |e: CallError| match e {
        CallError::Transport(TransportError::Tls(t)) => t,
        other => panic!("expected a TLS failure, got {other}"),
    };

    let e = tls(tls_failure(srv(&expired, None), cli(None), "localhost").await);
    assert!(
        matches!(e, TlsFailure::Expired { not_after: Some(_) }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("TLS: the server certificate has expired (not valid after "),
        "{e}"
    );

    let e = tls(tls_failure(srv(&stranger, None), cli(None), "localhost").await);
    assert_eq!(e.cause(), "tls_unknown_ca");
    assert_eq!(
        e.to_string(),
        format!(
            "TLS: the server certificate is signed by an unknown authority (not in CA file {})",
            pki.ca.display()
        )
    );

    let e = tls(tls_failure(srv(&good, None), cli(None), "sbc.example.net").await);
    assert_eq!(
        e.to_string(),
        "TLS: the server certificate is for localhost, not for sbc.example.net"
    );

    let e = tls(tls_failure(srv(&good, Some(pki.ca.clone())), cli(None), "localhost").await);
    assert_eq!(e.cause(), "tls_client_cert_rejected", "{e}");
    assert_eq!(
        e.to_string(),
        "TLS: the server rejected our client certificate (certificate_required); no client certificate is configured"
    );

    let e = tls(tls_failure(
        srv(&good, Some(pki.ca.clone())),
        cli(Some(stranger_client)),
        "localhost",
    )
    .await);
    assert_eq!(e.cause(), "tls_client_cert_rejected", "{e}");
    assert!(
        e.to_string()
            .starts_with("TLS: the server rejected our client certificate ("),
        "{e}"
    );

    // With the right client certificate, mutual TLS connects.
    let (p, a) = any(Protocol::Tls);
    let mut bob_cfg = UaConfig::new("bob", p, a);
    bob_cfg.tls = srv(&good, Some(pki.ca.clone()));
    let (bob, _) = start(bob_cfg).await;
    let mut alice_cfg = UaConfig::new("alice", p, a);
    alice_cfg.tls = cli(Some(client));
    let (alice, _) = start(alice_cfg).await;
    let (uri, peer) = target(&bob, "localhost");
    alice.call(uri, peer).await.expect("mutual TLS call");

    // A server that closes right after the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls_acceptor(&good);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let s = acceptor.accept(tcp).await.unwrap();
        drop(s);
    });
    let mut alice_cfg = UaConfig::new("alice", p, a);
    alice_cfg.tls = cli(None);
    let (alice, _) = start(alice_cfg).await;
    let e = tls(alice
        .call(Uri::new(Some("bob"), "localhost", Some(addr.port())), addr)
        .await
        .unwrap_err());
    assert_eq!(
        e.to_string(),
        "TLS: the peer closed the connection right after the handshake"
    );
}

fn tokio_rustls_acceptor(id: &(PathBuf, PathBuf)) -> tokio_rustls::TlsAcceptor {
    let cfg = srtp_control::sip::tls::server_config(&TlsSettings {
        verify: Verify::System,
        identity: Some(id.clone()),
        client_ca: None,
    })
    .unwrap();
    tokio_rustls::TlsAcceptor::from(cfg)
}
