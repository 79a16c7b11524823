//! DTLS-SRTP interoperability with OpenSSL's command line (`openssl s_server` / `s_client`,
//! DTLS 1.2 with `-use_srtp`), in both roles, for every profile, with RSA and ECDSA
//! certificates on either side: the SRTP master keys our session derives must equal the keying
//! material OpenSSL exports (RFC 5764 4.2, label `EXTRACTOR-dtls_srtp`). Our side runs the
//! engine's sans-IO session over a real loopback UDP socket, with an identity loaded from
//! OpenSSL-made PEM files (SEC1 or PKCS#8 key), on each DTLS backend that can meet the peer.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use srtp_engine::proto::dtls::{
    DtlsBackend, DtlsContext, DtlsFailure, DtlsIdentity, DtlsKeys, DtlsOptions, DtlsOutput,
    DtlsRole, DtlsSession, Fingerprint,
};
use srtp_engine::proto::srtp::Suite;

const LABEL: &str = "EXTRACTOR-dtls_srtp";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kinds of certificate a peer (or we) may have.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    Ecdsa,
    Rsa,
}

/// A scratch directory with a certificate for OpenSSL (`peer`: PKCS#8 key) and one for us
/// (`ours`: a SEC1 key for ECDSA, PKCS#8 for RSA).
fn certs(test: &str, peer: Key, ours: Key) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("srtp-dtls-openssl-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let newkey: &[&str] = match peer {
        Key::Ecdsa => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        Key::Rsa => &["-newkey", "rsa:2048"],
    };
    let (key, pem) = (p("peer.key"), p("peer.pem"));
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-nodes", "-keyout", &key, "-out", &pem, "-days", "1", "-subj", "/CN=peer",
    ]);
    openssl(&args);
    match ours {
        Key::Ecdsa => openssl(&[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            &p("ours.key"),
        ]),
        Key::Rsa => openssl(&["genpkey", "-algorithm", "RSA", "-out", &p("ours.key")]),
    }
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &p("ours.key"),
        "-out",
        &p("ours.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=ours",
    ]);
    dir
}

fn fingerprint_of(pem: &Path) -> Fingerprint {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().split('=').nth(1).unwrap();
    Fingerprint::parse(&format!("sha-256 {hex}")).unwrap()
}

fn ctx(dir: &Path, backend: DtlsBackend) -> DtlsContext {
    let id = DtlsIdentity::from_pem_files(
        dir.join("ours.pem").to_str().unwrap(),
        dir.join("ours.key").to_str().unwrap(),
    )
    .expect("OpenSSL's SEC1 key and certificate load");
    assert_eq!(id.fingerprint(), &fingerprint_of(&dir.join("ours.pem")));
    DtlsContext::new(
        Arc::new(id),
        DtlsOptions {
            retransmit_initial: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(10),
            backend,
            ..DtlsOptions::default()
        },
    )
    .unwrap()
}

/// Every pairing of certificate kinds, with the backends that can meet it (dimpl: ECDSA on
/// both sides only), and the auto backend.
fn pairings() -> Vec<(Key, Key, DtlsBackend)> {
    let mut v = Vec::new();
    for peer in [Key::Ecdsa, Key::Rsa] {
        for ours in [Key::Ecdsa, Key::Rsa] {
            v.push((peer, ours, DtlsBackend::Openssl));
        }
    }
    v.push((Key::Ecdsa, Key::Ecdsa, DtlsBackend::Dimpl));
    // auto: dimpl's offer first as a client (an RSA server refuses it: OpenSSL's next), and
    // OpenSSL as a server for OpenSSL's ClientHello (it offers RSA suites).
    v.push((Key::Ecdsa, Key::Ecdsa, DtlsBackend::Auto));
    v.push((Key::Rsa, Key::Ecdsa, DtlsBackend::Auto));
    v
}

/// The profiles a backend negotiates.
fn profiles(backend: DtlsBackend) -> &'static [(&'static str, Suite)] {
    match backend {
        DtlsBackend::Openssl | DtlsBackend::Auto => &PROFILES,
        DtlsBackend::Dimpl => &PROFILES[..3],
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The hex after "Keying material:" in OpenSSL's output.
fn exported(rx: &Receiver<String>, limit: Duration) -> Vec<u8> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            if let Some(hex) = l.trim().strip_prefix("Keying material: ") {
                return (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
            }
            seen.push(l);
        }
    }
    panic!("OpenSSL printed no keying material: {seen:#?}");
}

/// Runs our session over `sock` until it is established or fails.
fn drive(
    s: &mut dyn DtlsSession,
    sock: &UdpSocket,
    mut peer: Option<SocketAddr>,
) -> Result<DtlsKeys, DtlsFailure> {
    let mut buf = [0u8; 2048];
    let mut rx = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        let wake = loop {
            match s.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => {
                    if let Some(to) = peer {
                        sock.send_to(p, to).unwrap();
                    }
                }
                DtlsOutput::Established(k) => return Ok(k),
                DtlsOutput::Failed(f) => return Err(f),
                DtlsOutput::Timeout(t) => break t,
            }
        };
        let wait = wake
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        sock.set_read_timeout(Some(wait)).unwrap();
        let now = Instant::now();
        match sock.recv_from(&mut rx) {
            Ok((n, from)) => {
                peer.get_or_insert(from);
                s.handle_timeout(Instant::now().max(now));
                s.handle_packet(&rx[..n]);
            }
            Err(_) => s.handle_timeout(Instant::now()),
        }
    }
    Err(DtlsFailure::Timeout)
}

/// Our keys against OpenSSL's export, split as RFC 5764 4.2 lays it out (client key, server
/// key, client salt, server salt): we write with our role's key and read with the other.
fn assert_keys(name: &str, role: DtlsRole, suite: Suite, keys: &DtlsKeys, km: &[u8]) {
    assert_eq!(keys.suite, suite, "{name}");
    let p = suite.params();
    let (k, s) = (p.master_key_len, p.master_salt_len);
    assert_eq!(km.len(), 2 * (k + s));
    let client = [&km[..k], &km[2 * k..2 * k + s]].concat();
    let server = [&km[k..2 * k], &km[2 * k + s..]].concat();
    let (ours, theirs) = match role {
        DtlsRole::Client => (client, server),
        DtlsRole::Server => (server, client),
    };
    assert!(
        keys.local.equals_material(&ours),
        "{name}: our write key is {role:?}_write"
    );
    assert!(
        keys.remote.equals_material(&theirs),
        "{name}: our read key is the peer's write key"
    );
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `openssl s_client` in DTLS 1.2 towards `port`, offering `profile`, presenting the peer
/// certificate, exporting `export_len` bytes of keying material when asked.
fn s_client(dir: &Path, port: u16, profile: &str, export_len: Option<usize>) -> Child {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-dtls1_2", "-use_srtp", profile])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(dir.join("peer.pem"))
        .arg("-key")
        .arg(dir.join("peer.key"));
    if let Some(len) = export_len {
        cmd.args(["-keymatexport", LABEL, "-keymatexportlen", &len.to_string()]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client starts")
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const PROFILES: [(&str, Suite); 4] = [
    ("SRTP_AES128_CM_SHA1_80", Suite::AesCm128HmacSha1_80),
    ("SRTP_AEAD_AES_128_GCM", Suite::AeadAes128Gcm),
    ("SRTP_AEAD_AES_256_GCM", Suite::AeadAes256Gcm),
    ("SRTP_AES128_CM_SHA1_32", Suite::AesCm128HmacSha1_32),
];

#[test]
fn we_are_client_to_openssl_s_server_every_profile() {
    for (peer, ours, backend) in pairings() {
        let dir = certs(&format!("client-{peer:?}-{ours:?}-{backend:?}"), peer, ours);
        client_to_s_server(&dir, backend);
    }
}

fn client_to_s_server(dir: &Path, backend: DtlsBackend) {
    let ctx = ctx(dir, backend);
    let peer_fp = fingerprint_of(&dir.join("peer.pem"));
    // An auto client offers dimpl's three profiles first (see `no_common_profile_is_named`
    // for the fourth: a stream restricted to it runs on OpenSSL).
    let list = match backend {
        DtlsBackend::Auto => &PROFILES[..3],
        b => profiles(b),
    };
    for &(name, suite) in list {
        let name = &format!("{name} ({backend:?}, {})", dir.display());
        let profile = name.split(' ').next().unwrap();
        let port = free_port();
        let len = (2 * suite.master_len()).to_string();
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-dtls1_2",
                "-naccept",
                "2",
                "-use_srtp",
                profile,
            ])
            .args(["-keymatexport", LABEL, "-keymatexportlen", &len])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(dir.join("peer.pem"))
            .arg("-key")
            .arg(dir.join("peer.key"))
            .args(["-verify", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let out = lines(&mut child);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // s_server needs a moment to bind; our retransmissions cover a ClientHello lost to that.
        std::thread::sleep(Duration::from_millis(300));
        let mut s = ctx.session(DtlsRole::Client, peer_fp.clone(), Instant::now());
        let keys = drive(&mut *s, &sock, Some(to)).unwrap_or_else(|f| panic!("{name}: {f}"));
        let km = exported(&out, Duration::from_secs(5));
        stop(child);
        assert_keys(name, DtlsRole::Client, suite, &keys, &km);
    }
}

#[test]
fn openssl_s_client_to_us_as_server_every_profile() {
    for (peer, ours, backend) in pairings() {
        let dir = certs(&format!("server-{peer:?}-{ours:?}-{backend:?}"), peer, ours);
        s_client_to_server(&dir, backend);
    }
}

fn s_client_to_server(dir: &Path, backend: DtlsBackend) {
    let ctx = ctx(dir, backend);
    let peer_fp = fingerprint_of(&dir.join("peer.pem"));
    for &(name, suite) in profiles(backend) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut child = s_client(dir, port, name, Some(2 * suite.master_len()));
        let name = &format!("{name} ({backend:?}, {})", dir.display());
        let out = lines(&mut child);
        let mut s = ctx.session(DtlsRole::Server, peer_fp.clone(), Instant::now());
        let keys = drive(&mut *s, &sock, None).unwrap_or_else(|f| panic!("{name}: {f}"));
        let km = exported(&out, Duration::from_secs(5));
        stop(child);
        assert_keys(name, DtlsRole::Server, suite, &keys, &km);
    }
}

#[test]
fn openssl_with_another_certificate_is_refused() {
    let dir = certs("mismatch", Key::Rsa, Key::Ecdsa);
    let ctx = ctx(&dir, DtlsBackend::Openssl);
    // We expect our own certificate's fingerprint, OpenSSL presents its own.
    let wrong = fingerprint_of(&dir.join("ours.pem"));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let child = s_client(&dir, port, "SRTP_AES128_CM_SHA1_80", None);
    let mut s = ctx.session(DtlsRole::Server, wrong, Instant::now());
    let r = drive(&mut *s, &sock, None);
    stop(child);
    assert_eq!(r.err(), Some(DtlsFailure::FingerprintMismatch));
}

#[test]
fn no_common_profile_is_named() {
    // OpenSSL offers only the 32-bit tag; this stream allows only AEAD_AES_256_GCM.
    let dir = certs("profile", Key::Ecdsa, Key::Ecdsa);
    let ctx = ctx(&dir, DtlsBackend::Openssl);
    let peer_fp = fingerprint_of(&dir.join("peer.pem"));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let child = s_client(&dir, port, "SRTP_AES128_CM_SHA1_32", None);
    let only = [Suite::AeadAes256Gcm];
    let mut s = ctx.session_with(DtlsRole::Server, peer_fp, Some(&only), Instant::now());
    let r = drive(&mut *s, &sock, None);
    stop(child);
    assert_eq!(r.err(), Some(DtlsFailure::NoCommonProfile));
}

#[test]
fn an_rsa_peer_and_the_dimpl_backend_fail_by_name() {
    // What issue 25 found with baresip: dimpl offers ECDHE-ECDSA only, and an RSA server has
    // no suite for it; the failure says so instead of a generic protocol error.
    let dir = certs("dimpl-rsa", Key::Rsa, Key::Ecdsa);
    let ctx = ctx(&dir, DtlsBackend::Dimpl);
    let peer_fp = fingerprint_of(&dir.join("peer.pem"));
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-dtls1_2", "-naccept", "1"])
        .args(["-use_srtp", "SRTP_AES128_CM_SHA1_80"])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(dir.join("peer.pem"))
        .arg("-key")
        .arg(dir.join("peer.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = ctx.session(DtlsRole::Client, peer_fp, Instant::now());
    let r = drive(&mut *s, &sock, Some(to));
    stop(child);
    assert_eq!(
        r.err(),
        Some(DtlsFailure::PeerAlert(40)),
        "handshake_failure"
    );
}
