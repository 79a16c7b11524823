//! The `srtp-engine` daemon: reads its config, starts one pinned worker per core and runs until
//! SIGTERM or SIGINT, then stops the workers, logs the final counters and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use srtp_engine::config::Config;
use srtp_engine::io::BackendKind;
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
}

fn list_suites() {
    for suite in Suite::ALL {
        let p = suite.params();
        let profile = p
            .dtls_profile
            .map_or_else(|| "-".to_string(), |id| format!("{id:#06x}"));
        println!(
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
    if let Err(e) = config.check() {
        eprintln!("srtp-engine: config: {e}");
        return ExitCode::from(2);
    }
    if cli.check_config {
        println!("config ok");
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
        Ok(e) => e,
        Err(e) => {
            eprintln!("srtp-engine: {e}");
            return ExitCode::FAILURE;
        }
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
    let fin = engine.shutdown();
    let t = &fin.totals;
    tracing::info!(
        rx_packets = t.rx_packets.iter().sum::<u64>(),
        tx_packets = t.tx_packets.iter().sum::<u64>(),
        auth_failures = t.auth_failures,
        replay_drops = t.replay_drops,
        malformed = t.malformed,
        streams_created = t.streams_created,
        "stopped"
    );
    ExitCode::SUCCESS
}
