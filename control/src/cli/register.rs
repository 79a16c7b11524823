//! `srtp-control register` and `srtp-control registrar`: one registration, and a small
//! registrar for labs.

use std::net::SocketAddr;
use std::path::PathBuf;

use srtp_control::sip::tls::TlsSettings;
use srtp_control::sip::transport::Protocol;

pub(crate) async fn register(
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

pub(crate) async fn registrar(
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
