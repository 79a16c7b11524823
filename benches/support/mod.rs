//! What the multi-process benches share: engine child processes on their own cores, driven
//! over their control sockets, and their memory read from /proc.

#![allow(dead_code)] // each bench uses its own part of this

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp_engine::ctl::client::CtlClient;
use srtp_engine::ctl::protocol::{
    CodecRequest, CryptoRequest, LegRequest, SdesRequest, StreamRequest,
};
use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::model::{Mode, StreamInfo};
use srtp_engine::proto::dtls::{DtlsBackend, DtlsOptions, KeyKind};
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::MediaOptions;
use srtp_engine::runtime::{DtlsSettings, Engine, EngineOptions};

/// The value after `name` in `args`, or `default`.
pub(crate) fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Child role: one engine with one worker on `--core`, ports `--port-min` to
/// `--port-min + --ports - 1`, serving `--socket` (and `/metrics` on `--metrics ADDR`), until
/// stdin closes. DTLS timings from `--dtls-linger-ms`, `--dtls-timeout-ms` and `--dtls-rto-ms`.
pub(crate) fn engine_role(args: &[String]) {
    let core: usize = arg(args, "--core", 0);
    let port_min: u16 = arg(args, "--port-min", 20_000);
    let ports: u16 = arg(args, "--ports", 10_000);
    let socket: String = arg(args, "--socket", String::new());
    let d = DtlsOptions::default();
    let dtls = DtlsOptions {
        linger: Duration::from_millis(arg(args, "--dtls-linger-ms", d.linger.as_millis() as u64)),
        handshake_timeout: Duration::from_millis(arg(
            args,
            "--dtls-timeout-ms",
            d.handshake_timeout.as_millis() as u64,
        )),
        retransmit_initial: Duration::from_millis(arg(
            args,
            "--dtls-rto-ms",
            d.retransmit_initial.as_millis() as u64,
        )),
        backend: match arg(args, "--dtls-backend", String::from("auto")).as_str() {
            "dimpl" => DtlsBackend::Dimpl,
            "openssl" => DtlsBackend::Openssl,
            _ => DtlsBackend::Auto,
        },
        ..d
    };
    let key = match arg(args, "--dtls-key", String::from("ecdsa")).as_str() {
        "rsa" => KeyKind::Rsa,
        _ => KeyKind::Ecdsa,
    };
    let engine = Arc::new(
        Engine::start(EngineOptions {
            workers: 1,
            cores: vec![core],
            media: MediaOptions {
                port_min,
                port_max: port_min + (ports - 1),
                ..MediaOptions::default()
            },
            dtls: DtlsSettings {
                options: dtls,
                key,
                ..DtlsSettings::default()
            },
            ..EngineOptions::default()
        })
        .expect("engine starts"),
    );
    let ctl = CtlServer::start(
        engine.clone(),
        CtlOptions {
            path: socket.into(),
            ..CtlOptions::default()
        },
    )
    .expect("control socket");
    let metrics: String = arg(args, "--metrics", String::new());
    let metrics = (!metrics.is_empty()).then(|| {
        srtp_engine::metrics::MetricsServer::start(
            metrics.parse().expect("--metrics ADDR"),
            engine.clone(),
            Some(ctl.counters()),
        )
        .expect("metrics endpoint")
    });
    // The parent closes our stdin to stop us.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    drop(metrics);
    ctl.stop();
    engine.shutdown();
}

/// Handles the bench harness's `--list` and the child `--role engine`; true when the caller
/// has nothing more to do.
pub(crate) fn child_or_list(args: &[String]) -> bool {
    if args.iter().any(|a| a == "--list") {
        return true;
    }
    if args.iter().any(|a| a == "--role") {
        engine_role(args);
        return true;
    }
    false
}

/// Starts this bench binary again as an engine process (see [`engine_role`]).
pub(crate) fn spawn_engine(core: usize, port_min: u16, socket: &Path, extra: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--role", "engine", "--core", &core.to_string()])
        .args(["--port-min", &port_min.to_string()])
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn an engine process")
}

/// The two engine processes of a generator/echo bench: the generator on core 0 (ports from
/// 20,000), the echo on core 1 (ports from 30,000).
pub(crate) struct Engines {
    generator: Child,
    echo: Child,
    /// The echo engine's control socket.
    pub(crate) echo_sock: std::path::PathBuf,
}

impl Engines {
    /// Starts both (`echo_extra`: more arguments for the echo engine) and connects to each:
    /// (the processes, the generator's client, the echo's client).
    pub(crate) fn start(name: &str, echo_extra: &[&str]) -> (Engines, CtlClient, CtlClient) {
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let gen_sock = dir.join(format!("srtp-{name}-gen-{pid}.sock"));
        let echo_sock = dir.join(format!("srtp-{name}-echo-{pid}.sock"));
        let generator = spawn_engine(0, 20_000, &gen_sock, &[]);
        let echo = spawn_engine(1, 30_000, &echo_sock, echo_extra);
        let (g, e) = (connect(&gen_sock), connect(&echo_sock));
        let engines = Engines {
            generator,
            echo,
            echo_sock,
        };
        (engines, g, e)
    }

    /// The echo engine's pid.
    pub(crate) fn echo_pid(&self) -> u32 {
        self.echo.id()
    }

    /// Stops both and waits for them.
    pub(crate) fn stop(mut self) {
        drop(self.generator.stdin.take());
        drop(self.echo.stdin.take());
        let _ = self.generator.wait();
        let _ = self.echo.wait();
    }
}

/// Connects to a child's control socket, waiting for it to appear.
pub(crate) fn connect(path: &Path) -> CtlClient {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match CtlClient::connect(path) {
            Ok(c) => return c,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// A process's resident memory now and at its peak, KiB (`VmRSS`, `VmHWM`).
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The suite of the soak-style streams.
pub(crate) const SUITE: Suite = Suite::AesCm128HmacSha1_80;

/// SDES crypto with keys numbered `tx` and `rx` (a stream's tx key is its peer's rx key).
pub(crate) fn sdes(tx: usize, rx: usize) -> CryptoRequest {
    let key = |k: usize| -> Vec<u8> {
        (0..30u8)
            .map(|i| i.wrapping_mul(31) ^ (k as u8) ^ ((k >> 8) as u8))
            .collect()
    };
    CryptoRequest::Sdes {
        tx: SdesRequest::with_key(SUITE, &key(tx)),
        rx: SdesRequest::with_key(SUITE, &key(rx)),
    }
}

/// `n` echo streams on `echo` (a port pair each, no remote: each learns its peer), then `n`
/// SDES sendrecv endpoints on `generator` aimed at them (PCMU 20 ms, RTCP every 5 s). Returns
/// (endpoints, echoes), in pairs.
pub(crate) fn echo_pairs(
    generator: &mut CtlClient,
    echo: &mut CtlClient,
    n: usize,
) -> (Vec<StreamInfo>, Vec<StreamInfo>) {
    let reqs = (0..n)
        .map(|k| {
            let mut r = StreamRequest::new(
                Mode::Echo,
                LegRequest {
                    crypto: sdes(10_000 + k, k),
                    ..LegRequest::default()
                },
            );
            r.silence_ms = Some(0);
            r
        })
        .collect();
    let echoes = echo.create_batch(reqs).unwrap();
    assert_eq!(echoes.failed, 0, "{:?}", echoes.streams.first());
    let echoes: Vec<StreamInfo> = echoes.streams.into_iter().map(Result::unwrap).collect();
    let reqs = echoes
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let leg = &e.legs[0];
            let mut r = StreamRequest::new(
                Mode::SendRecv,
                LegRequest {
                    remote: Some(leg.local.to_string()),
                    remote_rtcp: leg.local_rtcp.map(|a| a.to_string()),
                    crypto: sdes(k, 10_000 + k),
                    ..LegRequest::default()
                },
            );
            r.codec = Some(CodecRequest {
                name: Some("pcmu".into()),
                ptime_ms: Some(20),
                ..CodecRequest::default()
            });
            r.rtcp_interval_ms = Some(5000);
            r
        })
        .collect();
    let ends = generator.create_batch(reqs).unwrap();
    assert_eq!(ends.failed, 0, "{:?}", ends.streams.first());
    (
        ends.streams.into_iter().map(Result::unwrap).collect(),
        echoes,
    )
}
