//! Real SIP and SRTP peers from Debian's packages, for the interoperability tests: Kamailio
//! (a record-routing proxy and registrar), baresip (a phone, driven over its `ctrl_tcp`
//! module) and rtpengine (an SBC's media plane). `scripts/setup-debian` installs them without
//! starting any service; each test starts what it needs here, on loopback, on ports of its
//! own, with the configs kept in `configs/peers/`, and stops it by pid when the handle drops.
//!
//! A missing peer is a failed test, not a skipped one: the suite is about meeting them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_owned()
}

/// Panics, naming the package, when a peer's program is not installed.
pub fn need(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file());
    assert!(
        found,
        "{program} is not installed: run scripts/setup-debian (Debian package {package})"
    );
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named after `tag` and this process.
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("srtp-peers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started peer, stopped by pid (SIGTERM, then SIGKILL after 3 s) when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with its output going to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        // A group of its own: Kamailio forks workers that hold its sockets, and a registrar
        // killed for a test must take them all with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Daemon { name, child, log }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far (the last 8 KiB).
    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(8192);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        format!("--- {} log ---\n{}", self.name, &s[start..])
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`TERM`, `KILL`, ...) to it and the processes it started.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([
                format!("-{sig}"),
                "--".into(),
                format!("-{}", self.child.id()),
            ])
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal("TERM");
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("KILL");
        let _ = self.child.wait();
    }
}

/// Waits until a TCP listener answers at `addr`.
pub fn wait_tcp(addr: SocketAddr, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits until a SIP server answers an OPTIONS over UDP at `addr`.
pub fn wait_sip_udp(addr: SocketAddr, within: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let local = sock.local_addr().expect("bound");
    let end = Instant::now() + within;
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        let msg = format!(
            "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\nTo: <sip:{addr}>\r\n\
             Call-ID: probe{n}@{local}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = sock.send_to(msg.as_bytes(), addr);
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 ")
        {
            return true;
        }
    }
    false
}

/// A lab CA, a server certificate for 127.0.0.1 and its key, as `srtp-control pki` writes
/// them (PEM files in a directory).
#[derive(Clone, Debug)]
pub struct LabPki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (names localhost and 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl LabPki {
    /// The files `srtp-control pki --dir <dir>` wrote.
    pub fn in_dir(dir: &Path) -> LabPki {
        LabPki {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}

/// Kamailio as record-routing proxy and registrar (`configs/peers/kamailio.cfg`).
#[derive(Debug)]
pub struct Kamailio {
    /// The process.
    pub daemon: Daemon,
    /// SIP over UDP and TCP.
    pub sip: SocketAddr,
    /// SIP over TLS.
    pub tls: SocketAddr,
}

impl Kamailio {
    /// Starts it on `port` (UDP and TCP) and `port + 1` (TLS) with `pki`'s certificate,
    /// optionally with digest authentication of REGISTER (any user, this password) and with
    /// rtpengine anchoring the media (its control address).
    pub fn start(
        dir: &Scratch,
        port: u16,
        pki: &LabPki,
        auth: Option<&str>,
        rtpengine: Option<SocketAddr>,
    ) -> Kamailio {
        need("kamailio", "kamailio");
        let run = dir.join(&format!("kamailio-{port}"));
        std::fs::create_dir_all(&run).expect("run directory");
        let tls_cfg = run.join("tls.cfg");
        std::fs::write(
            &tls_cfg,
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
                 private_key = {}\ncertificate = {}\n\n[client:default]\nmethod = TLSv1.2+\n\
                 verify_certificate = yes\nrequire_certificate = yes\nca_list = {}\n",
                pki.key.display(),
                pki.cert.display(),
                pki.ca.display()
            ),
        )
        .expect("tls.cfg");
        let sip: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let tls: SocketAddr = format!("127.0.0.1:{}", port + 1).parse().expect("address");
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(repo_root().join("configs/peers/kamailio.cfg"))
            .args(["-DD", "-E", "-m", "48", "-M", "8", "-Y"])
            .arg(&run)
            .arg("-w")
            .arg(&run)
            .args(["-A", &format!("UDP_LISTEN=udp:{sip}")])
            .args(["-A", &format!("TCP_LISTEN=tcp:{sip}")])
            .args(["-A", &format!("TLS_LISTEN=tls:{tls}")])
            .args(["-A", &format!("TLS_CFG=\"{}\"", tls_cfg.display())]);
        if let Some(pw) = auth {
            cmd.args(["-A", "WITH_AUTH", "-A", &format!("AUTH_PASSWORD=\"{pw}\"")]);
        }
        if let Some(ng) = rtpengine {
            cmd.args([
                "-A",
                "WITH_RTPENGINE",
                "-A",
                &format!("RTPENGINE_SOCK=\"udp:{ng}\""),
            ]);
        }
        let daemon = Daemon::spawn("kamailio", cmd, run.join("kamailio.log"));
        let k = Kamailio { daemon, sip, tls };
        assert!(
            wait_sip_udp(sip, Duration::from_secs(10)) && wait_tcp(tls, Duration::from_secs(5)),
            "kamailio did not come up on {sip}\n{}",
            k.daemon.log()
        );
        k
    }
}

/// rtpengine, userspace only, as an SBC's media plane (`configs/peers/rtpengine.conf`).
#[derive(Debug)]
pub struct Rtpengine {
    /// The process.
    pub daemon: Daemon,
    /// Its ng control address (for Kamailio's rtpengine module).
    pub ng: SocketAddr,
}

impl Rtpengine {
    /// Starts it with its ng socket on `ng_port` and media ports in `ports`.
    pub fn start(dir: &Scratch, ng_port: u16, ports: (u16, u16)) -> Rtpengine {
        need("rtpengine", "rtpengine-daemon");
        let ng: SocketAddr = format!("127.0.0.1:{ng_port}").parse().expect("address");
        let mut cmd = Command::new("rtpengine");
        cmd.arg(format!(
            "--config-file={}",
            repo_root().join("configs/peers/rtpengine.conf").display()
        ))
        .args(["--config-section=rtpengine", "--foreground", "--log-stderr"])
        .arg(format!("--listen-ng={ng}"))
        .arg(format!("--port-min={}", ports.0))
        .arg(format!("--port-max={}", ports.1))
        .arg(format!("--pidfile={}", dir.join("rtpengine.pid").display()));
        let daemon = Daemon::spawn("rtpengine", cmd, dir.join("rtpengine.log"));
        let mut r = Rtpengine { daemon, ng };
        // The ng protocol answers a bencoded ping with pong.
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        let end = Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while Instant::now() < end && r.daemon.running() {
            let _ = sock.send_to(b"probe d7:command4:pinge", ng);
            let mut buf = [0u8; 256];
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("pong")
            {
                up = true;
                break;
            }
        }
        assert!(up, "rtpengine did not answer on {ng}\n{}", r.daemon.log());
        r
    }
}

/// baresip, headless, driven over `ctrl_tcp` (netstring-framed JSON commands and events).
#[derive(Debug)]
pub struct Baresip {
    /// The process.
    pub daemon: Daemon,
    /// Its SIP address.
    pub sip: SocketAddr,
    ctrl: TcpStream,
    buf: Vec<u8>,
    /// Every event and response seen, in order, as JSON text.
    pub seen: Vec<String>,
}

/// How a baresip account encrypts media (its `mediaenc` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEnc {
    /// SDES, mandatory (`srtp-mand`).
    Sdes,
    /// DTLS-SRTP (`dtls_srtp`).
    Dtls,
}

impl Baresip {
    /// Starts baresip as `user` on `sip_port` (UDP and TCP; TLS takes `sip_port + 1`), its
    /// control socket on `ctrl_port`, RTP
    /// in `rtp` ports; it answers calls by itself. `rtcp_mux` false: it answers without
    /// `a=rtcp-mux` (baresip's default, like many phones). `registrar`: register there.
    pub fn start(
        dir: &Scratch,
        user: &str,
        sip_port: u16,
        ctrl_port: u16,
        rtp: (u16, u16),
        enc: MediaEnc,
        registrar: Option<SocketAddr>,
    ) -> Baresip {
        need("baresip", "baresip-core");
        let conf = dir.join(&format!("baresip-{user}"));
        std::fs::create_dir_all(&conf).expect("config directory");
        let template = std::fs::read_to_string(repo_root().join("configs/peers/baresip.conf"))
            .expect("configs/peers/baresip.conf");
        let config = template
            .replace("@SIP_PORT@", &sip_port.to_string())
            .replace("@CTRL_PORT@", &ctrl_port.to_string())
            .replace("@RTP_PORTS@", &format!("{}-{}", rtp.0, rtp.1));
        std::fs::write(conf.join("config"), config).expect("config");
        let enc = match enc {
            MediaEnc::Sdes => "srtp-mand",
            MediaEnc::Dtls => "dtls_srtp",
        };
        let account = match registrar {
            Some(r) => format!(
                "<sip:{user}@{}:{}>;outbound=\"sip:{r}\";regint=300;mediaenc={enc};answermode=auto\n",
                r.ip(),
                r.port()
            ),
            None => format!(
                "<sip:{user}@127.0.0.1:{sip_port}>;regint=0;mediaenc={enc};answermode=auto\n"
            ),
        };
        std::fs::write(conf.join("accounts"), account).expect("accounts");
        std::fs::write(conf.join("contacts"), "").expect("contacts");
        let mut cmd = Command::new("baresip");
        cmd.arg("-f").arg(&conf).args(["-t", "300"]);
        let mut daemon = Daemon::spawn("baresip", cmd, dir.join(&format!("baresip-{user}.log")));
        let ctrl_addr: SocketAddr = format!("127.0.0.1:{ctrl_port}").parse().expect("address");
        let end = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(ctrl_addr) {
                break s;
            }
            assert!(
                Instant::now() < end && daemon.running(),
                "baresip's ctrl_tcp never listened on {ctrl_addr}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Baresip {
            daemon,
            sip: format!("127.0.0.1:{sip_port}").parse().expect("address"),
            ctrl,
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Sends a command (`dial`, `hangup`, `hold`, `resume`, ...) and returns its response.
    pub fn command(&mut self, command: &str, params: &str) -> String {
        let token = format!("t{}", self.seen.len());
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{}\",\"token\":\"{token}\"}}",
            params.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let frame = format!("{}:{json},", json.len());
        self.ctrl
            .write_all(frame.as_bytes())
            .expect("baresip control socket");
        let want = format!("\"token\":\"{token}\"");
        self.wait_for(
            |m| m.contains("\"response\":true") && m.contains(&want),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("baresip did not answer {command}\n{}", self.daemon.log()))
    }

    /// Waits until a message (event or response) matching `f` comes; returns it.
    pub fn wait_for(&mut self, f: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        let mut from = 0;
        loop {
            while from < self.seen.len() {
                if f(&self.seen[from]) {
                    return Some(self.seen[from].clone());
                }
                from += 1;
            }
            if Instant::now() >= end {
                return None;
            }
            self.read_some();
        }
    }

    /// Waits for an event of `kind` (`CALL_ESTABLISHED`, `CALL_CLOSED`, ...).
    pub fn wait_event(&mut self, kind: &str, within: Duration) -> Option<String> {
        let want = format!("\"type\":\"{kind}\"");
        self.wait_for(
            |m| m.contains("\"event\":true") && m.contains(&want),
            within,
        )
    }

    fn read_some(&mut self) {
        let mut chunk = [0u8; 8192];
        match self.ctrl.read(&mut chunk) {
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        // Netstrings: `<len>:<payload>,`.
        while let Some(colon) = self.buf.iter().position(|&b| b == b':') {
            let Some(len) = std::str::from_utf8(&self.buf[..colon])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                self.buf.clear();
                break;
            };
            if self.buf.len() < colon + 1 + len + 1 {
                break;
            }
            let msg = String::from_utf8_lossy(&self.buf[colon + 1..colon + 1 + len]).into_owned();
            self.buf.drain(..colon + 1 + len + 1);
            self.seen.push(msg);
        }
    }
}
