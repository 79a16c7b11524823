//! The `srtp-control` binary: load runs (`run`, `demo`), answer calls, place calls, make lab
//! certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod cli;

use cli::answer::answer;
use cli::call::place_calls;
use cli::endpoint::Endpoint;
use cli::register::{register, registrar};

use clap::{Parser, Subcommand};
use srtp_control::scenario::{Progress, Scenario};
use srtp_control::sip::uri::Uri;
use srtp_control::ua::CallOptions;

/// SIP/SDP signaling for srtp-engine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a load scenario (TOML; see configs/scenarios/): place calls at a rate, hold them,
    /// report. Exit code 0: every threshold held; 1: a threshold failed; 2: the run could
    /// not start.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        out: RunOutput,
        #[command(flatten)]
        split: RunSplit,
    },
    /// Merge the reports of agents that shared a scenario (`run --shard`): exact totals,
    /// merged histograms, the thresholds judged over the whole run, a row per agent and the
    /// agents to look at. Exit code 0: every threshold held; 1: one failed; 2: a report could
    /// not be read.
    Merge {
        /// The agents' `report.json` files (or their report directories).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write merged.json and merged.html here.
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
    /// A short loopback run on an embedded engine: 2,000 calls (SDES and DTLS-SRTP
    /// alternating) at 200 calls/s, held 3 s, caller and answerer on this machine.
    Demo {
        #[command(flatten)]
        out: RunOutput,
    },
    /// Answer incoming calls until stopped (or for --seconds), printing each call's verdict.
    /// SIGINT/SIGTERM ends every call with BYE first (a second signal exits at once). Exit
    /// code 0: every call was set up and ended cleanly; 1: a call was refused or failed, a
    /// handshake failed or a BYE went unanswered; 2: could not start.
    Answer {
        #[command(flatten)]
        ep: Endpoint,
        /// Stop after this many seconds (0: run until stopped).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        /// Hang up each answered call ourselves after this many milliseconds (0: leave the
        /// hangup to the caller).
        #[arg(long, default_value_t = 0)]
        hangup_after_ms: u64,
    },
    /// Place calls, hold them, print each verdict and media figures, hang up. Exit code 0:
    /// every call connected, carried media and ended with the far end's 200 to our BYE; 1:
    /// one did not (the cause is printed); 2: could not start.
    Call {
        #[command(flatten)]
        ep: Endpoint,
        /// Whom to call: sip:user@host:port (the host is the TLS server name).
        #[arg(long)]
        to: String,
        /// The address to send to, when the URI's host is not an IP address.
        #[arg(long)]
        via: Option<SocketAddr>,
        /// Number of calls, one after the other.
        #[arg(long, default_value_t = 1)]
        calls: u32,
        /// Hold time per call in milliseconds.
        #[arg(long, default_value_t = 1000)]
        hold_ms: u64,
        /// Send the INVITE without SDP (a delayed offer, as many trunks do): the peer offers
        /// in its 200, we answer in the ACK.
        #[arg(long)]
        delayed_offer: bool,
        /// The far end's engine certificate fingerprint (`sha-256 AB:...`, as its `hello`
        /// gives it; repeatable): after a DTLS-SRTP call, say whether DTLS went end to end or
        /// was terminated by a middlebox.
        #[arg(long)]
        far_end_fingerprint: Vec<String>,
    },
    /// Register a fleet of endpoints (TOML; see configs/register/) with an ordered list of
    /// registrars: refresh, keepalives, failover and fallback, metrics while it runs, a
    /// report at the end. Exit code 0: every endpoint was registered at the end; 1: some
    /// were not; 2: the run could not start.
    Register {
        /// The fleet file.
        fleet: PathBuf,
        /// Write report.json here (overrides run.report_dir).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Seconds to run, overriding run.duration_s (0: until interrupted).
        #[arg(long)]
        duration: Option<f64>,
        /// Serve Prometheus metrics on this address, overriding run.metrics.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Progress lines every second on stderr: lines or off.
        #[arg(long, default_value = "lines")]
        progress: String,
    },
    /// A small registrar for labs and tests: grants up to --max-expires, answers OPTIONS,
    /// optionally challenges with digest; runs until interrupted.
    Registrar {
        /// Transport and address to listen on: udp:127.0.0.1:5060, tcp:..., tls:...
        #[arg(long, default_value = "udp:127.0.0.1:5060")]
        listen: String,
        /// Longest lifetime granted, seconds.
        #[arg(long, default_value_t = 3600)]
        max_expires: u32,
        /// Shortest lifetime accepted (423 below), seconds.
        #[arg(long, default_value_t = 60)]
        min_expires: u32,
        /// Challenge REGISTERs in this realm (with --password).
        #[arg(long)]
        realm: Option<String>,
        /// Password pattern for every user: {user} is replaced by the user name, {n} by the
        /// digits it ends with.
        #[arg(long)]
        password: Option<String>,
        /// TLS certificate and key (PEM) for tls: listeners.
        #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
        tls: Option<Vec<PathBuf>>,
    },
    /// Write the man pages and the bash, zsh and fish completions into a directory (for
    /// packaging).
    #[command(hide = true)]
    Assets {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Write a lab CA and certificates for TLS tests (server, expired, client) to a directory.
    Pki {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Names for the server certificate.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        names: Vec<String>,
    },
}

/// One scenario across several agents.
#[derive(Debug, clap::Args)]
struct RunSplit {
    /// Run share I of N of the scenario (`0/4`): the calls whose number i has i % N == I, on
    /// the whole scenario's schedule. Without it, a scenario with `load.shards = N` (or
    /// --shards N) takes I from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// How many agents share the scenario (overrides load.shards).
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
    /// Start the calls at this time, so that agents started apart ramp together: Unix
    /// seconds or RFC 3339 (2026-12-06T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    start_at: Option<String>,
    /// Serve the run's live figures as Prometheus metrics (srtp_control_*) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// After the run, keep serving the metrics this many seconds (for a last scrape).
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    metrics_linger_s: f64,
    /// This agent's address: the embedded engine's media binds on it (the SDP names it) and
    /// SIP listens on it (overrides engine.local_ip and the IPs of sip.caller_listen and
    /// sip.answerer_listen). In a pod with host networking: the node's, $(POD_IP).
    #[arg(long, value_name = "IP")]
    node_ip: Option<std::net::IpAddr>,
}

impl RunSplit {
    /// Sets the scenario's shard and start time.
    fn apply(&self, s: &mut Scenario) -> Result<(), String> {
        use srtp_control::scenario::shard::{INDEX_VAR, Shard, parse_start_at};
        let count = self.shards.unwrap_or(s.load.shards);
        s.shard = match &self.shard {
            Some(text) => {
                let shard = Shard::parse(text).map_err(|e| e.to_string())?;
                if count > 1 && shard.count != count {
                    return Err(format!(
                        "--shard {shard}: the scenario is split in {count} (load.shards or --shards)"
                    ));
                }
                shard
            }
            None if count > 1 => Shard::from_index(std::env::var(INDEX_VAR).ok().as_deref(), count)
                .map_err(|e| e.to_string())?,
            None => Shard::default(),
        };
        s.metrics = self.metrics;
        if let Some(ip) = self.node_ip {
            s.engine.local_ip = ip;
            s.sip.caller_listen.set_ip(ip);
            s.sip.answerer_listen.set_ip(ip);
        }
        if !(0.0..=3600.0).contains(&self.metrics_linger_s) {
            return Err("--metrics-linger-s is 0 to 3600 seconds".into());
        }
        s.metrics_linger = std::time::Duration::from_secs_f64(self.metrics_linger_s);
        s.start_at = self
            .start_at
            .as_deref()
            .map(parse_start_at)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
struct RunOutput {
    /// Write report.json, report.html and failed-calls.log here (overrides report.dir; the
    /// demo's default is ./srtp-control-demo).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Progress display: auto (live on a terminal, lines otherwise), live, lines, off.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Number of calls, overriding the scenario.
    #[arg(long)]
    calls: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Assets { dir } = &cli.command {
        let cmd = <Cli as clap::CommandFactory>::command();
        return match srtp_engine::cli_assets::write(cmd, "srtp-control", dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("srtp-control: writing to {}: {e}", dir.display());
                ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // Load runs use several threads for signaling: the user agents block briefly on engine
    // requests, and in parallel they keep up with hundreds of calls per second. Those
    // threads run at nice 5, so that under CPU contention the engine's media workers (started
    // from this thread, at the usual priority) come first and the media figures stay true.
    let load = matches!(cli.command, Command::Run { .. } | Command::Demo { .. });
    let built = if load {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("signaling")
            .on_thread_start(|| {
                // SAFETY: setpriority on the calling thread (who = 0) only reads its arguments.
                #[allow(unsafe_code)]
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 5);
                }
            })
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("srtp-control: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("srtp-control: {e}");
            ExitCode::from(2)
        }
    }
}

async fn load_run(
    mut scenario: Scenario,
    out: RunOutput,
    default_dir: Option<PathBuf>,
) -> Result<bool, String> {
    let progress = match out.progress.as_str() {
        "auto" => Progress::auto(),
        "live" => Progress::Live,
        "lines" => Progress::Lines,
        "off" => Progress::Off,
        other => return Err(format!("--progress: {other:?} is auto, live, lines or off")),
    };
    if let Some(n) = out.calls {
        scenario.load.calls = n;
    }
    if let Some(d) = out.report_dir.or(default_dir) {
        scenario.report.dir = Some(d);
    }
    eprintln!("srtp-control: {}", scenario.name);
    let report = srtp_control::scenario::run(&scenario, progress)
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", report.summary());
    if let Some(dir) = &scenario.report.dir {
        let files = report
            .write(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        println!("reports: {}", names.join(", "));
    }
    Ok(report.pass)
}

async fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Run {
            scenario,
            out,
            split,
        } => {
            let mut s = Scenario::load(&scenario).map_err(|e| e.to_string())?;
            split.apply(&mut s)?;
            load_run(s, out, None).await
        }
        Command::Demo { out } => {
            load_run(
                Scenario::demo(),
                out,
                Some(PathBuf::from("srtp-control-demo")),
            )
            .await
        }
        Command::Register {
            fleet,
            report_dir,
            duration,
            metrics,
            progress,
        } => register(fleet, report_dir, duration, metrics, &progress).await,
        Command::Registrar {
            listen,
            max_expires,
            min_expires,
            realm,
            password,
            tls,
        } => registrar(listen, max_expires, min_expires, realm, password, tls).await,
        Command::Assets { .. } => Ok(true), // written before the runtime starts
        Command::Merge {
            reports,
            report_dir,
        } => {
            let m = srtp_control::scenario::merge::merge(&reports)?;
            print!("{}", m.summary());
            if let Some(dir) = report_dir {
                let files = m
                    .write(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                println!("reports: {}", names.join(", "));
            }
            Ok(m.pass)
        }
        Command::Pki { dir, names } => {
            use srtp_control::pki::{CertSpec, LabCa, write_pair};
            use srtp_control::pki::{check_private_dir, write_exclusive};
            use std::os::unix::fs::DirBuilderExt;
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| e.to_string())?;
            }
            check_private_dir(&dir).map_err(|e| format!("pki: {e}"))?;
            let ca = LabCa::new("srtp-control lab CA").map_err(|e| e.to_string())?;
            write_exclusive(&dir.join("ca.crt"), ca.cert_pem().as_bytes(), 0o644)
                .map_err(|e| e.to_string())?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            for (name, client, expired) in [
                ("server", false, false),
                ("expired", false, true),
                ("client", true, false),
            ] {
                let (c, k) = ca
                    .issue(&CertSpec {
                        names: &names,
                        client,
                        expired,
                    })
                    .map_err(|e| e.to_string())?;
                write_pair(&dir, name, &c, &k).map_err(|e| e.to_string())?;
            }
            println!(
                "wrote ca.crt, server.{{crt,key}}, expired.{{crt,key}}, client.{{crt,key}} to {}",
                dir.display()
            );
            Ok(true)
        }
        Command::Answer {
            ep,
            seconds,
            hangup_after_ms,
        } => answer(&ep, seconds, Duration::from_millis(hangup_after_ms)).await,
        Command::Call {
            ep,
            to,
            via,
            calls,
            hold_ms,
            delayed_offer,
            far_end_fingerprint,
        } => {
            let far_end = far_end_fingerprint
                .iter()
                .map(|f| {
                    srtp_engine::proto::dtls::Fingerprint::parse(f)
                        .map_err(|e| format!("--far-end-fingerprint: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let target = Uri::parse(&to).map_err(|e| format!("--to: {e}"))?;
            let peer = via
                .or_else(|| target.socket_addr())
                .ok_or("--to has a host name: give the address with --via")?;
            let opts = CallOptions {
                target,
                next_hop: peer,
                call_id: None,
                delayed_offer,
            };
            place_calls(&ep, opts, calls, Duration::from_millis(hold_ms), &far_end).await
        }
    }
}
