//! The `srtp-control` binary: load runs (`run`, `demo`), answer calls, place calls, make lab
//! certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use srtp_control::media::{DtlsOutcome, EngineEvent, EngineMedia, MediaEngine, SignalingOnly};
use srtp_control::register::address::RegistrarAddress;
use srtp_control::register::endpoint::Event as RegEvent;
use srtp_control::scenario::{Progress, Scenario};
use srtp_control::sdp::{Codec, KeyMethod, SrtpPolicy};
use srtp_control::sip::log::MessageLog;
use srtp_control::sip::tls::{TlsSettings, Verify};
use srtp_control::sip::transport::Protocol;
use srtp_control::sip::uri::Uri;
use srtp_control::ua::{
    CallOptions, EndedBy, RegisterConfig, ShutdownSummary, UaConfig, UasEvent, UserAgent,
};
use srtp_engine::model::{LegStats, StreamStats};
use srtp_engine::proto::srtp::Suite;

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

#[derive(Debug, clap::Args)]
struct Endpoint {
    /// Transport and address to listen on: udp:127.0.0.1:5060, tcp:..., tls:...
    #[arg(long, default_value = "udp:127.0.0.1:5060")]
    listen: String,
    /// Our user name.
    #[arg(long, default_value = "srtp-control")]
    user: String,
    /// The engine's control socket; without it, signaling only (no media).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// SRTP policy: off, offered, required.
    #[arg(long, default_value = "required")]
    srtp: String,
    /// Keying method: sdes, dtls, dual.
    #[arg(long, default_value = "sdes")]
    method: String,
    /// Enabled suites in preference order (default: all).
    #[arg(long, value_delimiter = ',')]
    suites: Vec<String>,
    /// Codecs in preference order: pcmu, pcma, g722, opus.
    #[arg(long, value_delimiter = ',')]
    codecs: Vec<String>,
    /// Do not offer rtcp-mux.
    #[arg(long)]
    no_rtcp_mux: bool,
    /// TLS: verify the server with the system trust store (system), a CA file (a path), or
    /// not at all (skip: unsafe, logged).
    #[arg(long, default_value = "system")]
    verify: String,
    /// TLS certificate (PEM): ours as a server, and as a client for mutual TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// As a TLS server, require client certificates from this CA (mutual TLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Digest credentials for challenges: user:password.
    #[arg(long)]
    auth: Option<String>,
    /// As answerer, challenge INVITEs: realm:password.
    #[arg(long)]
    challenge: Option<String>,
    /// Write every SIP message sent and received to this file (SDES keys redacted).
    #[arg(long)]
    sip_log: Option<PathBuf>,
    /// Register with this registrar (host:port, over --listen's transport) while running, so
    /// that calls to our address of record reach us; --auth answers its challenges.
    #[arg(long)]
    register: Option<String>,
    /// The domain of our address of record (sip:<user>@<domain>) when registering (default:
    /// the registrar's host).
    #[arg(long)]
    domain: Option<String>,
    /// Registration lifetime asked for, seconds.
    #[arg(long, default_value_t = 300)]
    expires: u32,
    /// SIP timer T1 in milliseconds (RFC 3261: 500; retransmissions start at T1, a request
    /// is given up after 64*T1).
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    T::deserialize(v.into_deserializer())
        .map_err(|_: serde::de::value::Error| format!("bad --{what} '{v}'"))
}

/// What an endpoint runs with.
struct Setup {
    cfg: UaConfig,
    media: Box<dyn MediaEngine>,
    dtls: Option<tokio::sync::mpsc::UnboundedReceiver<EngineEvent>>,
}

fn config(ep: &Endpoint) -> Result<Setup, String> {
    let (proto, addr) = ep
        .listen
        .split_once(':')
        .ok_or("--listen is <udp|tcp|tls>:<ip>:<port>")?;
    let protocol = Protocol::parse(proto).ok_or_else(|| format!("unknown transport '{proto}'"))?;
    let listen: SocketAddr = addr
        .parse()
        .map_err(|_| format!("bad --listen address '{addr}'"))?;
    let mut cfg = UaConfig::new(&ep.user, protocol, listen);
    cfg.security.policy = parse_enum::<SrtpPolicy>("srtp", &ep.srtp)?;
    cfg.security.method = parse_enum::<KeyMethod>("method", &ep.method)?;
    if !ep.suites.is_empty() {
        cfg.security.suites = ep
            .suites
            .iter()
            .map(|s| Suite::from_sdp_name(s).ok_or_else(|| format!("unknown suite '{s}'")))
            .collect::<Result<_, _>>()?;
    }
    if !ep.codecs.is_empty() {
        cfg.security.codecs = ep
            .codecs
            .iter()
            .map(|c| Codec::by_name(c).ok_or_else(|| format!("unknown codec '{c}'")))
            .collect::<Result<_, _>>()?;
    }
    cfg.security.rtcp_mux = !ep.no_rtcp_mux;
    if !(10..=60_000).contains(&ep.t1_ms) {
        return Err(format!("--t1-ms {} is outside 10-60000", ep.t1_ms));
    }
    cfg.timers.t1 = Duration::from_millis(ep.t1_ms);
    cfg.tls = TlsSettings {
        verify: Verify::from_setting(&ep.verify),
        identity: ep.tls_cert.clone().zip(ep.tls_key.clone()),
        client_ca: ep.client_ca.clone(),
    };
    let split = |v: &str, what: &str| {
        v.split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| format!("--{what} is a:b"))
    };
    cfg.credentials = ep.auth.as_deref().map(|v| split(v, "auth")).transpose()?;
    cfg.challenge = ep
        .challenge
        .as_deref()
        .map(|v| split(v, "challenge"))
        .transpose()?;
    if let Some(p) = &ep.sip_log {
        cfg.log = MessageLog::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(address) = &ep.register {
        let spec = RegistrarAddress {
            name: address,
            address,
            domain: ep.domain.as_deref(),
            ..RegistrarAddress::default()
        }
        .spec(protocol)
        .map_err(|e| format!("--register: {e}"))?;
        cfg.register = Some(RegisterConfig {
            registrars: vec![spec],
            expires: ep.expires,
        });
    }
    let (media, dtls): (Box<dyn MediaEngine>, _) = match &ep.engine {
        Some(sock) => (
            Box::new(EngineMedia::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?),
            Some(srtp_control::media::engine_events(sock)),
        ),
        None => (Box::new(SignalingOnly::new(listen.ip(), None)), None),
    };
    Ok(Setup { cfg, media, dtls })
}

/// SIGINT or SIGTERM. After the first, a second one exits at once.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("srtp-control: second signal, exiting now");
        std::process::exit(130);
    });
}

/// Waits for the registration's outcome (with `--register`); false when it failed.
async fn await_registration(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<UasEvent>,
    within: Duration,
) -> bool {
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                println!("registration: no answer from the registrar within {within:?}");
                return false;
            }
            ev = events.recv() => match ev {
                Some(UasEvent::Registration(e)) => {
                    if let Some(ok) = registration_line(&e) {
                        return ok;
                    }
                }
                Some(_) => {}
                None => return false,
            }
        }
    }
}

/// Prints a registration event worth a line; `Some(true)` registered, `Some(false)` refused.
fn registration_line(e: &RegEvent) -> Option<bool> {
    match e {
        RegEvent::Registered { granted, took, .. } => {
            println!(
                "registered (granted {granted} s) in {:.1} ms",
                took.as_secs_f64() * 1e3
            );
            Some(true)
        }
        RegEvent::Rejected { code, reason, .. } => {
            println!("registration refused: {code} {reason}");
            Some(false)
        }
        RegEvent::Exhausted => {
            println!("registration failed: the registrar did not answer");
            Some(false)
        }
        RegEvent::Unregistered { .. } => {
            println!("unregistered");
            None
        }
        RegEvent::Lost { .. } | RegEvent::Expired { .. } => {
            println!("registration lost: {e:?}");
            None
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Run { scenario, out } => {
            let s = Scenario::load(&scenario).map_err(|e| e.to_string())?;
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
        Command::Pki { dir, names } => {
            use srtp_control::pki::{CertSpec, LabCa, write_pair};
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let ca = LabCa::new("srtp-control lab CA").map_err(|e| e.to_string())?;
            std::fs::write(dir.join("ca.crt"), ca.cert_pem()).map_err(|e| e.to_string())?;
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
        } => {
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
            place_calls(&ep, opts, calls, Duration::from_millis(hold_ms)).await
        }
    }
}

/// How long a call waits for the engine's DTLS outcome after it connected.
const DTLS_WAIT: Duration = Duration::from_secs(12);

/// A graceful stop's summary line; false when it left something behind.
fn stopped_line(s: &ShutdownSummary, reconnects: u64) -> bool {
    let c = &s.counters;
    let mut line = format!(
        "stopped: {} BYE and {} CANCEL sent, {} INVITE refused while stopping",
        c.byes_sent, c.cancels_sent, c.refused_stopping
    );
    if reconnects > 0 {
        line.push_str(&format!("; reconnected to the engine {reconnects} time(s)"));
    }
    let clean = s.calls_left == 0;
    if !clean {
        line.push_str("; gave up waiting for the last calls to end");
    }
    println!("{line}");
    clean
}

async fn answer(ep: &Endpoint, seconds: u64, hangup_after: Duration) -> Result<bool, String> {
    let Setup { cfg, media, dtls } = config(ep)?;
    let registering = cfg.register.is_some();
    let (ua, mut events) = UserAgent::start_with_events(cfg, media, dtls)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "listening on {} {}",
        ep.listen.split(':').next().unwrap_or(""),
        ua.local_addr()
    );
    let mut ok = true;
    if registering && !await_registration(&mut events, Duration::from_secs(35)).await {
        ok = false;
    }
    let deadline = async {
        if seconds == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(seconds)).await
        }
    };
    tokio::pin!(deadline);
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut reconnects = 0;
    let (mut answered, mut failed) = (0u64, 0u64);
    loop {
        let ev = tokio::select! {
            () = &mut deadline => break,
            () = &mut signal => {
                println!("signal: ending every call");
                break;
            }
            ev = events.recv() => match ev {
                None => break,
                Some(ev) => ev,
            },
        };
        let r = ua.engine_reconnects();
        if r != reconnects {
            reconnects = r;
            println!("engine: reconnected to a restarted engine ({r} time(s))");
        }
        match ev {
            UasEvent::Answered(i) => {
                answered += 1;
                println!("answered {}: {}", i.call_id, i.verdict);
                if !hangup_after.is_zero() {
                    let ua = ua.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(hangup_after).await;
                        ua.hangup(&i.call_id).await
                    });
                }
            }
            UasEvent::Refused {
                call_id,
                code,
                reason,
            } => {
                failed += 1;
                println!("refused {call_id} with {code}: {reason}");
            }
            UasEvent::Failed { call_id, error } => {
                failed += 1;
                println!("call {call_id} failed ({}): {error}", error.cause());
            }
            UasEvent::Updated { call_id, change } => println!("updated {call_id}: {change}"),
            UasEvent::Dtls {
                call_id,
                outcome,
                verdict,
            } => match outcome.reason() {
                None => println!("DTLS-SRTP up on {call_id}: {verdict}"),
                Some(why) => {
                    failed += 1;
                    println!("DTLS-SRTP FAILED on {call_id}: {why}; hanging up");
                    let ua = ua.clone();
                    tokio::spawn(async move { ua.hangup(&call_id).await });
                }
            },
            UasEvent::Ended {
                call_id,
                stats,
                by,
                bye,
            } => {
                let (line, good) = end_line(&by, &stats, bye.as_ref());
                if !good {
                    failed += 1;
                }
                println!("ended {call_id}: {line}");
            }
            UasEvent::Registration(e) => {
                if registration_line(&e) == Some(false) {
                    ok = false;
                }
            }
            UasEvent::Engine { up: false } => {
                println!("engine: its control socket went away; calls with media are ended")
            }
            UasEvent::Engine { up: true } => println!("engine: answering again"),
        }
    }
    let summary = ua.shutdown(Duration::from_secs(10)).await;
    // Events of the stop itself (calls ended by our BYE, the unregistration).
    while let Ok(ev) = events.try_recv() {
        match ev {
            UasEvent::Ended {
                call_id,
                stats,
                by,
                bye,
            } => {
                let (line, good) = end_line(&by, &stats, bye.as_ref());
                if !good {
                    failed += 1;
                }
                println!("ended {call_id}: {line}");
            }
            UasEvent::Registration(e) => {
                registration_line(&e);
            }
            _ => {}
        }
    }
    let clean = stopped_line(&summary, ua.engine_reconnects());
    println!("{answered} call(s) answered, {failed} failure(s)");
    Ok(ok && clean && failed == 0)
}

/// A line for a call's end and whether it ended cleanly (the BYE answered 2xx, no
/// authentication failures).
fn end_line(
    by: &EndedBy,
    stats: &Option<StreamStats>,
    bye: Option<&Result<(), srtp_control::ua::CallError>>,
) -> (String, bool) {
    let mut good = true;
    let who = match by {
        EndedBy::Peer => "by the peer".to_owned(),
        EndedBy::Hangup => "by our hangup".to_owned(),
        EndedBy::Shutdown => "by our stop".to_owned(),
        EndedBy::NoAck => {
            good = false;
            "no ACK for our 200 OK".to_owned()
        }
        EndedBy::Failure(w) => {
            good = false;
            format!("after a failure: {w}")
        }
    };
    let bye = match bye {
        None => String::new(),
        Some(Ok(())) => ", BYE answered 200".to_owned(),
        Some(Err(e)) => {
            good = false;
            format!(", BYE FAILED: {e}")
        }
    };
    let auth = leg0(stats).map_or(0, |l| l.auth_failures);
    if auth > 0 {
        good = false;
    }
    (format!("{who}{bye}; {}", media_line(stats)), good)
}

async fn place_calls(
    ep: &Endpoint,
    opts: CallOptions,
    calls: u32,
    hold: Duration,
) -> Result<bool, String> {
    let Setup { cfg, media, dtls } = config(ep)?;
    let registering = cfg.register.is_some();
    let with_engine = ep.engine.is_some();
    let (ua, mut events) = UserAgent::start_with_events(cfg, media, dtls)
        .await
        .map_err(|e| e.to_string())?;
    let mut ok = true;
    if registering && !await_registration(&mut events, Duration::from_secs(35)).await {
        let s = ua.shutdown(Duration::from_secs(5)).await;
        stopped_line(&s, 0);
        return Ok(false);
    }
    // Events nobody waits for here (a re-INVITE from the peer) are printed as they come.
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                UasEvent::Updated { call_id, change } => {
                    println!("updated {call_id}: {change}")
                }
                UasEvent::Registration(e) => {
                    registration_line(&e);
                }
                _ => {}
            }
        }
    });
    let signal = stop_signal();
    tokio::pin!(signal);
    let mut done = 0;
    'calls: for n in 1..=calls {
        let r = tokio::select! {
            r = ua.call_with(opts.clone()) => r,
            () = &mut signal => break 'calls,
        };
        let info = match r {
            Ok(info) => info,
            Err(e) => {
                ok = false;
                println!("call {n} failed ({}): {e}", e.cause());
                continue;
            }
        };
        println!(
            "call {n} connected in {:.1} ms: {}",
            info.setup.as_secs_f64() * 1e3,
            info.verdict
        );
        if with_engine
            && matches!(
                info.verdict.media,
                srtp_control::sdp::MediaSecurity::Dtls { .. }
            )
        {
            let outcome = tokio::select! {
                o = tokio::time::timeout(DTLS_WAIT, ua.dtls_outcome(&info.call_id)) => o,
                () = &mut signal => break 'calls,
            };
            match outcome {
                Ok(Ok((DtlsOutcome::Established { .. }, v))) => {
                    println!("call {n} DTLS-SRTP established: {v}");
                }
                Ok(Ok((o, v))) => {
                    ok = false;
                    println!(
                        "call {n} DTLS-SRTP FAILED: {} (engine); {v}",
                        o.reason().unwrap_or_default()
                    );
                }
                Ok(Err(e)) => {
                    ok = false;
                    println!("call {n}: {e}");
                }
                Err(_) => {
                    ok = false;
                    println!("call {n} DTLS-SRTP FAILED: no handshake result within {DTLS_WAIT:?}");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(hold) => {}
            _ = ua.ended(&info.call_id) => {}
            () = &mut signal => {
                println!("signal: ending the call");
                let _ = ua.hangup(&info.call_id).await;
                break 'calls;
            }
        }
        match ua.hangup(&info.call_id).await {
            Ok(end) => {
                let (line, good) = end_line(&end.by, &end.stats, end.bye.as_ref());
                let silent = with_engine
                    && leg0(&end.stats).is_some_and(|l| l.packets_in == 0)
                    && hold >= Duration::from_millis(500);
                if good && !silent {
                    done += 1;
                } else {
                    ok = false;
                }
                println!("call {n} ended {line}");
                if silent {
                    println!(
                        "call {n} FAILED: no media received in {} ms",
                        hold.as_millis()
                    );
                }
            }
            Err(e) => {
                ok = false;
                println!("call {n} hangup failed: {e}");
            }
        }
    }
    let s = ua.shutdown(Duration::from_secs(10)).await;
    let clean = stopped_line(&s, ua.engine_reconnects());
    println!("{done} of {calls} call(s) completed");
    Ok(ok && clean && done == calls)
}

async fn register(
    fleet: PathBuf,
    report_dir: Option<PathBuf>,
    duration: Option<f64>,
    metrics: Option<SocketAddr>,
    progress: &str,
) -> Result<bool, String> {
    use srtp_control::register::config::FleetConfig;
    use srtp_control::register::run::{Progress, RunControl, run};
    let mut cfg = FleetConfig::load(&fleet).map_err(|e| e.to_string())?;
    if let Some(d) = duration {
        cfg.run.duration_s = d;
    }
    if let Some(m) = metrics {
        cfg.run.metrics = Some(m);
    }
    if let Some(d) = report_dir {
        cfg.run.report_dir = d;
    }
    let progress = match progress {
        "lines" => Progress::Lines,
        "off" => Progress::Off,
        other => return Err(format!("--progress: {other:?} is lines or off")),
    };
    let control = RunControl::default();
    let c2 = control.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: unregistering");
            c2.stop();
        }
    });
    if let Some(m) = cfg.run.metrics {
        eprintln!("metrics on http://{m}/metrics");
    }
    let report = run(&cfg, progress, control, |_, _| {})
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", report.summary());
    let path = report
        .write(&cfg.run.report_dir)
        .map_err(|e| format!("{}: {e}", cfg.run.report_dir.display()))?;
    println!("report: {}", path.display());
    Ok(report.pass)
}

async fn registrar(
    listen: String,
    max_expires: u32,
    min_expires: u32,
    realm: Option<String>,
    password: Option<String>,
    tls: Option<Vec<PathBuf>>,
) -> Result<bool, String> {
    use srtp_control::register::RegistrarConfig;
    use srtp_control::register::server::RegistrarServer;
    let (proto, addr) = listen
        .split_once(':')
        .ok_or("--listen: transport:address, e.g. udp:127.0.0.1:5060")?;
    let protocol = Protocol::parse(proto).ok_or("--listen: udp, tcp or tls")?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--listen: {addr:?} is not an address"))?;
    if realm.is_some() != password.is_some() {
        return Err("--realm and --password go together".into());
    }
    let pattern = password.unwrap_or_default();
    let cfg = RegistrarConfig {
        max_expires,
        min_expires,
        realm,
        passwords: Box::new(move |user: &str| {
            let digits = user.trim_start_matches(|c: char| !c.is_ascii_digit());
            Some(pattern.replace("{user}", user).replace("{n}", digits))
        }),
    };
    let tls = TlsSettings {
        identity: tls.map(|v| (v[0].clone(), v[1].clone())),
        ..TlsSettings::default()
    };
    let server = RegistrarServer::start(protocol, addr, &tls, cfg)
        .await
        .map_err(|e| e.to_string())?;
    println!("registrar on {proto} {}", server.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    println!("{} live bindings; {:?}", server.bindings(), server.counts());
    Ok(true)
}

/// The first leg of a stream's statistics.
fn leg0(stats: &Option<StreamStats>) -> Option<&LegStats> {
    stats.as_ref().and_then(|s| s.legs.first())
}

/// One line of media figures from the engine's stream statistics.
fn media_line(stats: &Option<StreamStats>) -> String {
    let Some(l) = leg0(stats) else {
        return "no media (signaling only)".into();
    };
    let suite = |s: Option<Suite>| s.map_or("none", Suite::sdp_name);
    let mut s = format!(
        "media packets in {} out {}, RTCP in {} out {}, lost {}, auth failures {}, rx {} tx {}",
        l.packets_in,
        l.packets_out,
        l.rtcp_in,
        l.rtcp_out,
        l.lost,
        l.auth_failures,
        suite(l.rx_suite),
        suite(l.tx_suite)
    );
    if l.rtcp_unprotected > 0 {
        s.push_str(&format!(
            ", {} RTCP packet(s) from the peer in the clear (not SRTCP: the peer breaks RFC 3711)",
            l.rtcp_unprotected
        ));
    }
    if let Some(d) = &l.dtls {
        s.push_str(&format!(", DTLS {}", d.rtp.state.name()));
        if let Some(suite) = d.rtp.suite {
            s.push_str(&format!(" ({})", suite.sdp_name()));
        }
    }
    s
}
