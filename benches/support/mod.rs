//! What the multi-process benches share: engine child processes on their own cores, driven
//! over their control sockets, and their memory read from /proc.

#![allow(dead_code)] // each bench uses its own part of this

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp_engine::ctl::client::CtlClient;
use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::proto::dtls::{DtlsBackend, DtlsOptions, KeyKind};
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
/// `--port-min + --ports - 1`, serving `--socket`, until stdin closes. DTLS timings from
/// `--dtls-linger-ms`, `--dtls-timeout-ms` and `--dtls-rto-ms`.
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
    // The parent closes our stdin to stop us.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
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
