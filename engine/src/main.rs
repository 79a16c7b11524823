//! The `srtp-engine` daemon: reads its config, starts one pinned worker per core, the control
//! socket and the metrics endpoint, and runs until SIGTERM or SIGINT; then it refuses new
//! streams, tells event subscribers, stops the workers, logs the final counters and exits 0.
//!
//! `srtp-engine ctl ...` is the operator's client for a running engine's control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use srtp_engine::config::Config;
use srtp_engine::ctl::CtlServer;
use srtp_engine::ctl::api::StreamApi;
use srtp_engine::ctl::client::{ClientError, CtlClient};
use srtp_engine::ctl::protocol::{EngineStats, StreamPage};
use srtp_engine::io::BackendKind;
use srtp_engine::metrics::MetricsServer;
use srtp_engine::model::DropReason;
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::Engine;

/// The srtp-engine data plane daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML); without it the built-in defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads (0: one per online core). Overrides engine.workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Cores to pin workers to, comma separated. Overrides engine.cores.
    #[arg(long, value_delimiter = ',')]
    cores: Option<Vec<usize>>,
    /// I/O backend: io_uring or epoll. Overrides io.backend.
    #[arg(long)]
    backend: Option<BackendKind>,
    /// First media port. Overrides sockets.port_min.
    #[arg(long)]
    port_min: Option<u16>,
    /// Last media port. Overrides sockets.port_max.
    #[arg(long)]
    port_max: Option<u16>,
    /// Log level. Overrides log.level.
    #[arg(long)]
    log_level: Option<String>,
    /// Check the config and exit.
    #[arg(long)]
    check_config: bool,
    /// List the SRTP suites and exit.
    #[arg(long)]
    list_suites: bool,
    /// Control socket path ("" for none). Overrides control.path.
    #[arg(long)]
    control: Option<String>,
    /// Prometheus endpoint address ("" for none). Overrides metrics.listen.
    #[arg(long)]
    metrics: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Prints to stdout, ignoring a closed pipe (`srtp-engine ctl streams | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running engine over its control socket.
    Ctl(CtlArgs),
    /// Write the man pages and the bash, zsh and fish completions into a directory (for
    /// packaging).
    #[command(hide = true)]
    Assets {
        /// Where to write them.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// The engine's control socket.
    #[arg(long, default_value = "/tmp/srtp-engine.sock")]
    socket: PathBuf,
    /// Print the raw JSON result instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(Debug, Subcommand)]
enum CtlAction {
    /// Protocol version and capabilities.
    Hello,
    /// Engine-wide figures.
    Stats,
    /// One line per stream.
    Streams {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One stream's statistics.
    Stream {
        /// Stream id.
        id: u64,
    },
    /// Delete a stream and print its final statistics.
    Delete {
        /// Stream id.
        id: u64,
    },
    /// Print events as they come (Ctrl-C stops).
    Events {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Send one request given as JSON (`{"cmd": ...}`; the id is added) and print the reply.
    Raw {
        /// The request.
        request: String,
    },
}

fn print_json<T: serde::Serialize>(v: &T) {
    say!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| e.to_string())
    );
}

fn print_engine_stats(v: &EngineStats) {
    let streams: u64 = v.streams.values().sum();
    say!(
        "backend {}  uptime {:.0} s  streams {streams}",
        v.backend,
        v.uptime_s
    );
    let parts: Vec<String> = v.streams.iter().map(|(k, n)| format!("{k} {n}")).collect();
    say!("  by mode: {}", parts.join(", "));
    let sum = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
    say!(
        "  packets in {}  out {}  bytes in {}  out {}",
        sum(&v.packets_in),
        sum(&v.packets_out),
        sum(&v.bytes_in),
        sum(&v.bytes_out)
    );
    let drops: Vec<String> = v
        .drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{} {n}", r.name()))
        .collect();
    say!(
        "  drops: {}  send {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        },
        v.tx_drops
    );
    for w in &v.workers {
        say!(
            "  worker {} core {}: {} streams, busy {:.0}%, cpu user {:.1} s sys {:.1} s, {} syscalls, rx overflows {}",
            w.index,
            w.core.map_or("-".into(), |c| c.to_string()),
            w.streams,
            w.busy_ratio * 100.0,
            w.cpu_user_us as f64 / 1e6,
            w.cpu_sys_us as f64 / 1e6,
            w.io.syscalls,
            w.io.rx_no_buffer
        );
    }
}

fn print_streams(v: &StreamPage) {
    say!(
        "{:>8} {:<8} {:<22} {:<22} {:>10} {:>10} {:>7} {:>8} {:>5} {:>6}",
        "id",
        "mode",
        "local",
        "remote",
        "pkts in",
        "pkts out",
        "loss%",
        "jitter",
        "MOS",
        "auth!"
    );
    let addr = |a: Option<std::net::SocketAddr>| a.map_or("-".into(), |a| a.to_string());
    for s in &v.streams {
        for (k, l) in s.legs.iter().enumerate() {
            let (id, mode) = if k == 0 {
                (s.id.to_string(), s.mode.name())
            } else {
                (String::new(), "")
            };
            say!(
                "{:>8} {:<8} {:<22} {:<22} {:>10} {:>10} {:>7.2} {:>6.1}ms {:>5.2} {:>6}",
                id,
                mode,
                addr(l.local),
                addr(l.remote),
                l.packets_in,
                l.packets_out,
                l.loss_percent,
                l.jitter_ms,
                l.mos,
                l.auth_failures
            );
        }
    }
    say!("{} of {} streams", v.streams.len(), v.total);
}

/// Runs one `ctl` action; what it prints on success.
fn ctl_action(client: &mut CtlClient, action: &CtlAction, json: bool) -> Result<(), ClientError> {
    match action {
        CtlAction::Hello => print_json(&client.hello()?),
        CtlAction::Stats => {
            let v = client.engine_stats()?;
            if json {
                print_json(&v);
            } else {
                print_engine_stats(&v);
            }
        }
        CtlAction::Streams { limit } => {
            let v = client.streams(0, *limit)?;
            if json {
                print_json(&v);
            } else {
                print_streams(&v);
            }
        }
        CtlAction::Stream { id } => print_json(&client.stats(*id)?),
        CtlAction::Delete { id } => print_json(&client.delete(*id)?),
        CtlAction::Raw { request } => {
            // The operator's line as written (its `id` replaced), through the engine's own
            // parser: what it answers is printed whole.
            let mut v: serde_json::Value = serde_json::from_str(request)
                .map_err(|e| ClientError::Protocol(format!("the request is not JSON: {e}")))?;
            let Some(o) = v.as_object_mut() else {
                return Err(ClientError::Protocol(
                    "the request must be a JSON object".into(),
                ));
            };
            o.insert("id".into(), 1.into());
            let reply = client.send_raw(v.to_string().as_bytes())?;
            print_json(&reply);
            if reply.get("ok") != Some(&serde_json::Value::Bool(true)) {
                return Err(ClientError::Protocol(
                    "the engine refused the request".into(),
                ));
            }
        }
        CtlAction::Events { count } => {
            client.subscribe(None)?;
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                if let Some(e) = client.next_event(Duration::from_secs(3600))? {
                    say!("{}", serde_json::to_string(&e).unwrap_or_default());
                    seen += 1;
                }
            }
        }
    }
    Ok(())
}

fn ctl(args: CtlArgs) -> ExitCode {
    let mut client = match CtlClient::connect(&args.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "srtp-engine ctl: cannot connect to {}: {e}",
                args.socket.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match ctl_action(&mut client, &args.action, args.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srtp-engine ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list_suites() {
    for suite in Suite::ALL {
        let p = suite.params();
        let profile = p
            .dtls_profile
            .map_or_else(|| "-".to_string(), |id| format!("{id:#06x}"));
        say!(
            "{:<26} dtls-profile {:<7} key||salt {} bytes, tag {}/{} bytes (rtp/rtcp)",
            p.sdp_name,
            profile,
            suite.master_len(),
            p.rtp_tag_len,
            p.rtcp_tag_len
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ctl(args)) => return ctl(args),
        Some(Command::Assets { dir }) => return write_assets(&dir),
        None => {}
    }
    if cli.list_suites {
        list_suites();
        return ExitCode::SUCCESS;
    }
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("srtp-engine: config: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(w) = cli.workers {
        config.engine.workers = w;
    }
    if let Some(c) = cli.cores {
        config.engine.cores = c;
    }
    if let Some(b) = cli.backend {
        config.io.backend = b;
    }
    if let Some(p) = cli.port_min {
        config.sockets.port_min = p;
    }
    if let Some(p) = cli.port_max {
        config.sockets.port_max = p;
    }
    if let Some(l) = cli.log_level {
        config.log.level = l;
    }
    if let Some(c) = cli.control {
        config.control.path = c;
    }
    if let Some(m) = cli.metrics {
        config.metrics.listen = m;
    }
    if let Err(e) = config.check() {
        eprintln!("srtp-engine: config: {e}");
        return ExitCode::from(2);
    }
    match config.check_host() {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("srtp-engine: config: warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("srtp-engine: config: {e}");
            return ExitCode::from(2);
        }
    }
    if cli.check_config {
        say!("config ok");
        return ExitCode::SUCCESS;
    }
    let level = config.log.level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("srtp-engine: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let engine = match Engine::start(config.engine_options()) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            eprintln!("srtp-engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = match config.ctl_options() {
        Some(opts) => match CtlServer::start(engine.clone(), opts) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("srtp-engine: control socket: {e}");
                engine.shutdown();
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let metrics = match config.metrics_listen() {
        Some(addr) => {
            match MetricsServer::start(
                addr,
                engine.clone(),
                control.as_ref().map(CtlServer::counters),
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    eprintln!("srtp-engine: metrics.listen {addr}: {e}");
                    engine.shutdown();
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    tracing::info!(
        workers = engine.worker_count(),
        backend = engine.backend().name(),
        nofile = engine.nofile_limit(),
        "srtp-engine running; SIGTERM or SIGINT stops it"
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping: no new streams, flushing statistics");
    if let Some(c) = &control {
        c.announce_stopping();
    }
    let fin = engine.shutdown();
    if let Some(c) = control {
        c.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    let t = &fin.totals;
    tracing::info!(
        rx_packets = t.rx_packets.iter().sum::<u64>(),
        tx_packets = t.tx_packets.iter().sum::<u64>(),
        auth_failures = t.drops.get(DropReason::AuthFailed),
        replay_drops = t.drops.get(DropReason::Replayed),
        malformed = t.drops.get(DropReason::Malformed),
        streams_created = t.streams_created,
        "stopped"
    );
    ExitCode::SUCCESS
}

/// Man pages and shell completions into `dir`.
fn write_assets(dir: &std::path::Path) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    match srtp_engine::cli_assets::write(cmd, "srtp-engine", dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srtp-engine: writing to {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}
