//! `srtp-control register <fleet.toml>`: a fleet of endpoints registered over real sockets,
//! with progress lines, Prometheus metrics while it runs, and a report at the end.
//!
//! The fleet is the sans-IO [`Fleet`]; this module only carries its messages. Over UDP every
//! endpoint shares one socket (each has its own Contact and Call-IDs); over TCP and TLS every
//! endpoint opens its own connection to each registrar it talks to, as phones do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use srtp_engine::metrics::{Exposition, Kind, Metric, MetricsServer};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::address::{RegistrarAddress, outbound_proxy};
use super::endpoint::{Detection, Identity, Payload, Policy};
use super::fleet::{Fleet, FleetSnapshot, FleetStats};
use crate::scenario::config::{ScenarioError, invalid, read_text};
use crate::sip::log::MessageLog;
use crate::sip::tls::{TlsSettings, Verify};
use crate::sip::transaction::TimerValues;
use crate::sip::transport::{Flow, Protocol, SipTransport, TransportError, TransportEvent};

/// A fleet file. Every key has a default except the registrars.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Signaling.
    pub sip: SipSection,
    /// Registrars in order of preference.
    pub registrars: Vec<RegistrarSection>,
    /// Who registers.
    pub endpoints: EndpointsSection,
    /// Lifetimes and refresh.
    pub registration: RegistrationSection,
    /// Keepalives.
    pub keepalive: KeepaliveSection,
    /// Failure detection and failover.
    pub failover: FailoverSection,
    /// How long, and where the report goes.
    pub run: RunSection,
}

/// `[sip]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Our address (port 0: any).
    pub listen: SocketAddr,
    /// T1, ms (retransmissions start at T1 and give up after 64*T1).
    pub t1_ms: u64,
    /// TLS server verification: `system`, `skip` or a CA file.
    pub tls_verify: String,
    /// Send every request through this proxy (`host:port`), whatever the registrar.
    pub outbound_proxy: Option<String>,
}

/// One `[[registrars]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSection {
    /// A name for the report (default: `registrar<N>`).
    #[serde(default)]
    pub name: String,
    /// `host:port` (a name, an IPv4 address, or an IPv6 address in brackets).
    pub address: String,
    /// The domain of the address of record, `host` or `host:port` (default: the host).
    #[serde(default)]
    pub domain: Option<String>,
    /// The Request-URI of REGISTER and of OPTIONS probes and keepalives (default:
    /// `sip:<host>:<port>`, the registrar itself).
    #[serde(default)]
    pub request_uri: Option<String>,
    /// The name its TLS certificate must carry (default: the host).
    #[serde(default)]
    pub tls_name: Option<String>,
}

/// `[endpoints]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsSection {
    /// How many endpoints (ignored with `csv`).
    pub count: usize,
    /// User pattern: `{n}` is the endpoint number from `first`, zero-padded to `width`.
    pub user: String,
    /// Password pattern (empty: no credentials).
    pub password: String,
    /// First number.
    pub first: u64,
    /// Digits of `{n}`.
    pub width: usize,
    /// A CSV file of `user,password` lines instead of the patterns.
    pub csv: Option<PathBuf>,
    /// New registrations per second at start.
    pub rate: f64,
}

/// `[registration]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSection {
    /// Requested lifetime, seconds.
    pub expires: u32,
    /// Refresh this many seconds before the granted lifetime ends.
    pub refresh_before_s: f64,
    /// Spread refreshes evenly over the refresh interval.
    pub spread_refreshes: bool,
}

/// `[keepalive]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveSection {
    /// CRLF ping interval on TCP/TLS, seconds (0: off).
    pub crlf_s: f64,
    /// OPTIONS ping interval, seconds (0: off).
    pub options_s: f64,
    /// How long a ping may wait for its answer, seconds.
    pub timeout_s: f64,
}

/// `[failover]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverSection {
    /// `fast` or `tolerant`.
    pub detection: Detection,
    /// Consecutive failures that declare a registrar lost.
    pub failures: u32,
    /// While on a backup, probe the higher-priority registrars this often, seconds.
    pub probe_interval_s: f64,
    /// After every registrar failed, wait this long, seconds.
    pub retry_after_s: f64,
}

/// `[run]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// How long to keep the fleet registered, seconds (0: until interrupted).
    pub duration_s: f64,
    /// Where `report.json` goes.
    pub report_dir: PathBuf,
    /// Serve Prometheus metrics here while running (empty: off).
    pub metrics: Option<SocketAddr>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            transport: "udp".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            t1_ms: 500,
            tls_verify: "system".into(),
            outbound_proxy: None,
        }
    }
}

impl Default for EndpointsSection {
    fn default() -> Self {
        EndpointsSection {
            count: 100,
            user: "phone{n}".into(),
            password: String::new(),
            first: 1,
            width: 5,
            csv: None,
            rate: 50.0,
        }
    }
}

impl Default for RegistrationSection {
    fn default() -> Self {
        RegistrationSection {
            expires: 3600,
            refresh_before_s: 5.0,
            spread_refreshes: true,
        }
    }
}

impl Default for KeepaliveSection {
    fn default() -> Self {
        KeepaliveSection {
            crlf_s: 0.0,
            options_s: 0.0,
            timeout_s: 10.0,
        }
    }
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            detection: Detection::Fast,
            failures: 2,
            probe_interval_s: 30.0,
            retry_after_s: 30.0,
        }
    }
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            duration_s: 60.0,
            report_dir: "srtp-control-register".into(),
            metrics: None,
        }
    }
}

fn secs(key: &'static str, v: f64) -> Result<Option<Duration>, ScenarioError> {
    if !v.is_finite() || !(0.0..=1e7).contains(&v) {
        return Err(invalid(key, format!("{v} is not a number of seconds")));
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

impl FleetConfig {
    /// Reads and checks a fleet file.
    pub fn load(path: &Path) -> Result<FleetConfig, ScenarioError> {
        FleetConfig::parse(&read_text(path)?)
    }

    /// Parses and checks fleet text.
    pub fn parse(text: &str) -> Result<FleetConfig, ScenarioError> {
        let c: FleetConfig =
            toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        c.policy(c.sip.listen)?;
        if c.endpoints.csv.is_none() {
            c.identities()?;
        }
        Ok(c)
    }

    /// The shared policy, with `local` as our address.
    pub fn policy(&self, local: SocketAddr) -> Result<Policy, ScenarioError> {
        let protocol = Protocol::parse(&self.sip.transport)
            .ok_or_else(|| invalid("sip.transport", "must be udp, tcp or tls"))?;
        if self.registrars.is_empty() {
            return Err(invalid(
                "registrars",
                "name at least one [[registrars]] with an address",
            ));
        }
        if !(1..=60_000).contains(&self.sip.t1_ms) {
            return Err(invalid("sip.t1_ms", "must be 1 to 60000"));
        }
        let registrars = self
            .registrars
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = if r.name.is_empty() {
                    format!("registrar{i}")
                } else {
                    r.name.clone()
                };
                RegistrarAddress {
                    name: &name,
                    address: &r.address,
                    domain: r.domain.as_deref(),
                    request_uri: r.request_uri.as_deref(),
                    tls_name: r.tls_name.as_deref(),
                }
                .spec(protocol)
                .map_err(|e| invalid("registrars", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut p = Policy::new(registrars, protocol, local);
        p.outbound = self
            .sip
            .outbound_proxy
            .as_deref()
            .map(|o| outbound_proxy(o, protocol))
            .transpose()
            .map_err(|e| invalid("sip.outbound_proxy", e))?;
        p.expires = self.registration.expires;
        if p.expires == 0 {
            return Err(invalid("registration.expires", "must be above 0"));
        }
        p.refresh_before = secs(
            "registration.refresh_before_s",
            self.registration.refresh_before_s,
        )?
        .unwrap_or_default();
        p.spread_refreshes = self.registration.spread_refreshes;
        p.timers = TimerValues {
            t1: Duration::from_millis(self.sip.t1_ms),
            ..TimerValues::default()
        };
        p.crlf_keepalive = secs("keepalive.crlf_s", self.keepalive.crlf_s)?;
        if p.crlf_keepalive.is_some() && !protocol.reliable() {
            return Err(invalid(
                "keepalive.crlf_s",
                "CRLF keepalives need tcp or tls; use keepalive.options_s over udp",
            ));
        }
        p.options_keepalive = secs("keepalive.options_s", self.keepalive.options_s)?;
        p.keepalive_timeout = secs("keepalive.timeout_s", self.keepalive.timeout_s)?
            .ok_or_else(|| invalid("keepalive.timeout_s", "must be above 0"))?;
        p.detection = self.failover.detection;
        p.failures = self.failover.failures;
        if p.failures == 0 {
            return Err(invalid("failover.failures", "must be at least 1"));
        }
        p.probe_interval = secs("failover.probe_interval_s", self.failover.probe_interval_s)?
            .ok_or_else(|| invalid("failover.probe_interval_s", "must be above 0"))?;
        p.retry_after = secs("failover.retry_after_s", self.failover.retry_after_s)?
            .ok_or_else(|| invalid("failover.retry_after_s", "must be above 0"))?;
        secs("run.duration_s", self.run.duration_s)?;
        if !(self.endpoints.rate.is_finite() && self.endpoints.rate > 0.0) {
            return Err(invalid("endpoints.rate", "must be above 0"));
        }
        Ok(p)
    }

    /// The endpoints, from the CSV file or the patterns.
    pub fn identities(&self) -> Result<Vec<Identity>, ScenarioError> {
        let e = &self.endpoints;
        let mut out = Vec::new();
        if let Some(path) = &e.csv {
            let text = Zeroizing::new(read_text(path)?);
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut f = line.split(',').map(str::trim);
                let user = f.next().unwrap_or_default();
                if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '@') {
                    return Err(invalid(
                        "endpoints.csv",
                        format!("line {}: not a user name", n + 1),
                    ));
                }
                let auth = f
                    .next()
                    .filter(|p| !p.is_empty())
                    .map(|p| (user.to_owned(), Zeroizing::new(p.to_owned())));
                out.push(Identity {
                    user: user.to_owned(),
                    auth,
                });
            }
            if out.is_empty() {
                return Err(invalid("endpoints.csv", "no endpoint in the file"));
            }
            return Ok(out);
        }
        if e.count == 0 || e.count > 1_000_000 {
            return Err(invalid("endpoints.count", "must be 1 to 1000000"));
        }
        if !e.user.contains("{n}") && e.count > 1 {
            return Err(invalid(
                "endpoints.user",
                "needs {n} so that each endpoint has its own user",
            ));
        }
        for i in 0..e.count as u64 {
            let n = format!("{:0w$}", e.first + i, w = e.width.min(20));
            let user = e.user.replace("{n}", &n);
            let auth = (!e.password.is_empty())
                .then(|| (user.clone(), Zeroizing::new(e.password.replace("{n}", &n))));
            out.push(Identity { user, auth });
        }
        Ok(out)
    }
}

/// Registered endpoints at one second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Registered per registrar, and not registered.
    #[serde(flatten)]
    pub snapshot: FleetSnapshot,
}

/// What a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RegisterReport {
    /// Endpoints in the fleet.
    pub endpoints: usize,
    /// Transport.
    pub transport: &'static str,
    /// Registrar names in order.
    pub registrars: Vec<String>,
    /// The longest time from a registrar's death to its detection, as configured (ms).
    pub detection_budget_ms: Option<u64>,
    /// How long the run lasted (s).
    pub duration_s: f64,
    /// Registered per registrar at the end, before unregistering.
    pub end: FleetSnapshot,
    /// The fewest endpoints registered in any second after the initial ramp.
    pub min_registered_after_ramp: Option<usize>,
    /// Counters and timings.
    pub stats: FleetStats,
    /// Messages that matched no endpoint, and transport failures.
    pub garbage: u64,
    /// Per-second samples.
    pub samples: Vec<Sample>,
}

fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl RegisterReport {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let s = &self.stats;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "registration: {} endpoints over {} for {:.0} s",
            self.endpoints, self.transport, self.duration_s
        );
        for (i, name) in self.registrars.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {name:<12} {:>7} registered at the end",
                self.end.registered[i]
            );
        }
        let _ = writeln!(o, "  {:<12} {:>7}", "unregistered", self.end.unregistered);
        if let Some(m) = self.min_registered_after_ramp {
            let _ = writeln!(o, "  fewest registered in any second after the ramp: {m}");
        }
        let dist = |v: &[u64]| match (v.iter().min(), median(v), v.iter().max()) {
            (Some(a), Some(m), Some(b)) => format!("min {a} / median {m} / max {b} ms"),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "  registrations {}  refreshes {}  refresh failures {}  lapsed {}  rejected {}",
            s.registrations,
            s.refreshes,
            s.refresh_failures,
            s.expirations,
            s.rejections.values().sum::<u64>()
        );
        let _ = writeln!(o, "  time to register: {}", dist(&s.register_ms));
        let _ = writeln!(
            o,
            "  keepalive failures {}  registrars lost {}  failovers {}  fallbacks {}  unregistered {}",
            s.keepalive_failures, s.losses, s.failovers, s.fallbacks, s.unregistrations
        );
        if let Some(b) = self.detection_budget_ms {
            let _ = writeln!(o, "  detection budget {b} ms");
        }
        let _ = writeln!(o, "  time to detect: {}", dist(&s.detect_ms));
        let _ = writeln!(o, "  time to fail over: {}", dist(&s.failover_ms));
        let _ = writeln!(o, "  time to fall back: {}", dist(&s.fallback_ms));
        if !s.register_retransmits.is_empty() {
            let _ = writeln!(
                o,
                "  REGISTER retransmissions after (ms: count): {:?}",
                s.register_retransmits
            );
        }
        o
    }

    /// Writes `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

macro_rules! metric {
    ($id:ident, $kind:ident, $name:literal, [$($l:literal),*], $help:literal) => {
        const $id: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            labels: &[$($l),*],
        };
    };
}

metric!(
    REGISTERED,
    Gauge,
    "srtp_control_registered_endpoints",
    ["registrar"],
    "Endpoints holding a live binding, per registrar."
);
metric!(
    UNREGISTERED,
    Gauge,
    "srtp_control_unregistered_endpoints",
    [],
    "Endpoints holding no live binding."
);
metric!(
    REGISTRATIONS,
    Counter,
    "srtp_control_registrations_total",
    [],
    "New registrations (first, after a failover, after waiting)."
);
metric!(
    REFRESHES,
    Counter,
    "srtp_control_registration_refreshes_total",
    [],
    "Successful refreshes."
);
metric!(
    REFRESH_FAILURES,
    Counter,
    "srtp_control_registration_refresh_failures_total",
    [],
    "Refreshes that failed (no answer, 408, 5xx, 6xx, connection lost)."
);
metric!(
    LAPSED,
    Counter,
    "srtp_control_registration_lapses_total",
    [],
    "Bindings whose lifetime ran out before a refresh succeeded."
);
metric!(
    KEEPALIVE_FAILURES,
    Counter,
    "srtp_control_keepalive_failures_total",
    [],
    "Keepalives (CRLF or OPTIONS) that went unanswered."
);
metric!(
    FAILOVERS,
    Counter,
    "srtp_control_registrar_failovers_total",
    [],
    "Moves to another registrar after one was declared lost."
);
metric!(
    FALLBACKS,
    Counter,
    "srtp_control_registrar_fallbacks_total",
    [],
    "Moves back to a higher-priority registrar."
);
metric!(
    REJECTIONS,
    Counter,
    "srtp_control_registration_rejections_total",
    [],
    "Registrations refused (4xx, credentials)."
);
metric!(
    DETECT,
    Gauge,
    "srtp_control_failure_detection_seconds",
    ["statistic"],
    "Time to detect a lost registrar so far (statistic: median or max)."
);
metric!(
    RECOVER,
    Gauge,
    "srtp_control_failover_recovery_seconds",
    ["statistic"],
    "Time from a loss to the registration elsewhere so far (statistic: median or max)."
);

/// Every registration metric, in exposition order.
pub const METRICS: &[&Metric] = &[
    &REGISTERED,
    &UNREGISTERED,
    &REGISTRATIONS,
    &REFRESHES,
    &REFRESH_FAILURES,
    &LAPSED,
    &KEEPALIVE_FAILURES,
    &FAILOVERS,
    &FALLBACKS,
    &REJECTIONS,
    &DETECT,
    &RECOVER,
];

/// Renders the fleet's metrics.
pub fn render_metrics(names: &[String], snap: &FleetSnapshot, s: &FleetStats) -> String {
    let mut o = Exposition::default();
    o.family(&REGISTERED);
    for (n, c) in names.iter().zip(&snap.registered) {
        o.sample(&REGISTERED, &[n], *c as f64);
    }
    o.one(&UNREGISTERED, snap.unregistered as f64);
    o.one(&REGISTRATIONS, s.registrations as f64);
    o.one(&REFRESHES, s.refreshes as f64);
    o.one(&REFRESH_FAILURES, s.refresh_failures as f64);
    o.one(&LAPSED, s.expirations as f64);
    o.one(&KEEPALIVE_FAILURES, s.keepalive_failures as f64);
    o.one(&FAILOVERS, s.failovers as f64);
    o.one(&FALLBACKS, s.fallbacks as f64);
    o.one(&REJECTIONS, s.rejections.values().sum::<u64>() as f64);
    for (m, v) in [(&DETECT, &s.detect_ms), (&RECOVER, &s.failover_ms)] {
        o.family(m);
        o.sample(m, &["median"], median(v).unwrap_or(0) as f64 / 1e3);
        o.sample(
            m,
            &["max"],
            v.iter().max().copied().unwrap_or(0) as f64 / 1e3,
        );
    }
    o.finish()
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RegisterRunError {
    /// The configuration.
    #[error("{0}")]
    Config(#[from] ScenarioError),
    /// The SIP transport.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The metrics listener.
    #[error("metrics listener: {0}")]
    Metrics(std::io::Error),
}

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A line every second on stderr.
    Lines,
    /// Nothing.
    Off,
}

/// Controls a run from outside: stop it early.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    stop: Arc<tokio::sync::Notify>,
}

impl RunControl {
    /// Ends the run (endpoints unregister, the report is built).
    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

/// What an endpoint answers to a request from a registrar: 200 to OPTIONS (a registrar's
/// qualify ping), 405 to anything else but ACK.
fn answer_request(req: &crate::sip::Message) -> Option<crate::sip::Message> {
    use crate::sip::Method;
    let tag = crate::sip::token();
    match req.method()? {
        Method::Ack => None,
        Method::Options => {
            let mut r = crate::sip::Message::response_to(req, 200, "OK", Some(&tag));
            r.push("Allow", "OPTIONS");
            Some(r)
        }
        _ => {
            let mut r =
                crate::sip::Message::response_to(req, 405, "Method Not Allowed", Some(&tag));
            r.push("Allow", "OPTIONS");
            Some(r)
        }
    }
}

enum FlowState {
    Connecting(Vec<Payload>),
    Up(Flow),
}

/// Runs a fleet until `cfg.run.duration_s` passes (or `control` stops it), then unregisters
/// every endpoint and reports. `on_sample` sees every per-second sample (tests use it to kill
/// registrars at chosen moments).
pub async fn run(
    cfg: &FleetConfig,
    progress: Progress,
    control: RunControl,
    mut on_sample: impl FnMut(&Sample, &FleetStats),
) -> Result<RegisterReport, RegisterRunError> {
    let protocol = Protocol::parse(&cfg.sip.transport)
        .ok_or_else(|| invalid("sip.transport", "must be udp, tcp or tls"))?;
    let tls = TlsSettings {
        verify: Verify::from_setting(&cfg.sip.tls_verify),
        ..TlsSettings::default()
    };
    let (transport, mut events) =
        SipTransport::bind(protocol, cfg.sip.listen, &tls, MessageLog::off()).await?;
    let policy = cfg.policy(transport.local_addr())?;
    let budget = policy.detection_budget();
    let names: Vec<String> = policy.registrars.iter().map(|r| r.name.clone()).collect();
    let hops: Vec<(SocketAddr, String)> = (0..policy.registrars.len())
        .map(|r| {
            let (a, n) = policy.next_hop(r);
            (a, n.to_owned())
        })
        .collect();
    let ids = cfg.identities()?;
    let n = ids.len();
    let rate = cfg.endpoints.rate;
    let start = Instant::now();
    let mut fleet = Fleet::new(policy, ids, start, rate);
    let ramp = Duration::from_secs_f64(n as f64 / rate) + Duration::from_secs(2);
    let scrape: Arc<Mutex<String>> = Arc::default();
    let _metrics = match cfg.run.metrics {
        Some(addr) => {
            let s = scrape.clone();
            Some(
                MetricsServer::serve_pages(addr, move |path| {
                    (path == "/metrics")
                        .then(|| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
                })
                .map_err(RegisterRunError::Metrics)?,
            )
        }
        None => None,
    };
    let duration = secs("run.duration_s", cfg.run.duration_s)?;
    let end = duration.map(|d| start + d);
    let mut flows: HashMap<(usize, usize), FlowState> = HashMap::new();
    let mut by_flow: HashMap<u64, (usize, usize)> = HashMap::new();
    let (conn_tx, mut conn_rx) =
        mpsc::unbounded_channel::<((usize, usize), Result<Flow, TransportError>)>();
    let mut samples = Vec::new();
    let mut min_after_ramp: Option<usize> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut garbage = 0u64;
    let mut stopping: Option<Instant> = None;
    let mut last_snapshot = fleet.snapshot(start);
    loop {
        // Carry out what the fleet asks.
        while let Some((i, t)) = fleet.poll_transmit() {
            let key = (i, t.registrar);
            if !protocol.reliable() {
                if let Payload::Sip(m) = &t.payload {
                    let _ = transport.send(&Flow::Udp(hops[t.registrar].0), m);
                }
                continue;
            }
            match flows.get_mut(&key) {
                Some(FlowState::Up(flow)) => {
                    let r = match &t.payload {
                        Payload::Sip(m) => transport.send(flow, m),
                        Payload::Ping => transport.send_ping(flow),
                    };
                    if r.is_err() {
                        if let Flow::Stream { id, .. } = flow {
                            by_flow.remove(id);
                        }
                        flows.remove(&key);
                        fleet.handle_flow_failed(Instant::now(), i, t.registrar);
                    }
                }
                Some(FlowState::Connecting(q)) => q.push(t.payload),
                None => {
                    flows.insert(key, FlowState::Connecting(vec![t.payload]));
                    let (tr, tx) = (transport.clone(), conn_tx.clone());
                    let (addr, name) = hops[t.registrar].clone();
                    tokio::spawn(async move {
                        let r = tr.connect(addr, &name).await;
                        let _ = tx.send((key, r));
                    });
                }
            }
        }
        if let Some(s) = stopping
            && (fleet.is_idle() || s.elapsed() > fleet.stop_duration() + Duration::from_secs(5))
        {
            break;
        }
        let next = fleet.poll_timeout();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let until_end = async {
            match (end, stopping) {
                (Some(e), None) => tokio::time::sleep_until(e.into()).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                match ev {
                    TransportEvent::Message { msg, flow } if msg.is_request() => {
                        // Registrars "qualify" contacts with OPTIONS: a phone answers 200, or
                        // it is marked unreachable. Other requests are not ours to take.
                        if let Some(resp) = answer_request(&msg) {
                            let _ = transport.send(&flow, &resp);
                        }
                    }
                    TransportEvent::Message { msg, .. } => fleet.handle_message(now, *msg),
                    TransportEvent::Pong { flow: Flow::Stream { id, .. } } => {
                        if let Some(&(i, r)) = by_flow.get(&id) {
                            fleet.handle_pong(now, i, r);
                        }
                    }
                    TransportEvent::Closed { flow: Flow::Stream { id, .. }, .. } => {
                        if let Some((i, r)) = by_flow.remove(&id) {
                            flows.remove(&(i, r));
                            fleet.handle_flow_failed(now, i, r);
                        }
                    }
                    TransportEvent::Garbage { .. } => garbage += 1,
                    TransportEvent::Pong { .. } | TransportEvent::Closed { .. } => {}
                }
            }
            Some((key, r)) = conn_rx.recv() => {
                let now = Instant::now();
                match r {
                    Ok(flow) => {
                        if let Some(FlowState::Connecting(q)) = flows.remove(&key) {
                            for p in q {
                                let _ = match &p {
                                    Payload::Sip(m) => transport.send(&flow, m),
                                    Payload::Ping => transport.send_ping(&flow),
                                };
                            }
                        }
                        if let Flow::Stream { id, .. } = flow {
                            by_flow.insert(id, key);
                        }
                        flows.insert(key, FlowState::Up(flow));
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = key.0, registrar = key.1, "connect failed: {e}");
                        flows.remove(&key);
                        fleet.handle_flow_failed(now, key.0, key.1);
                    }
                }
            }
            () = sleep => fleet.handle_timeout(Instant::now()),
            _ = tick.tick() => {
                let now = Instant::now();
                let snapshot = fleet.snapshot(now);
                let t_s = now.duration_since(start).as_secs_f64();
                if stopping.is_none() {
                    last_snapshot = snapshot.clone();
                    if now.duration_since(start) > ramp {
                        let reg: usize = snapshot.registered.iter().sum();
                        min_after_ramp = Some(min_after_ramp.map_or(reg, |m| m.min(reg)));
                    }
                }
                if cfg.run.metrics.is_some() {
                    *scrape.lock().unwrap_or_else(|p| p.into_inner()) =
                        render_metrics(&names, &snapshot, fleet.stats());
                }
                let sample = Sample { t_s, snapshot };
                if progress == Progress::Lines {
                    let per: Vec<String> = names
                        .iter()
                        .zip(&sample.snapshot.registered)
                        .map(|(n, c)| format!("{n} {c}"))
                        .collect();
                    let s = fleet.stats();
                    eprintln!(
                        "[{t_s:>5.0} s] registered: {}, none {} | refreshes {} failovers {} fallbacks {}",
                        per.join(", "),
                        sample.snapshot.unregistered,
                        s.refreshes,
                        s.failovers,
                        s.fallbacks
                    );
                }
                on_sample(&sample, fleet.stats());
                samples.push(sample);
            }
            () = until_end => {
                stopping = Some(Instant::now());
                last_snapshot = fleet.snapshot(Instant::now());
                fleet.stop(Instant::now());
            }
            () = control.stop.notified(), if stopping.is_none() => {
                stopping = Some(Instant::now());
                last_snapshot = fleet.snapshot(Instant::now());
                fleet.stop(Instant::now());
            }
        }
    }
    Ok(RegisterReport {
        endpoints: n,
        transport: protocol.via(),
        registrars: names,
        detection_budget_ms: budget.map(|b| b.as_millis() as u64),
        duration_s: start.elapsed().as_secs_f64(),
        end: last_snapshot,
        min_registered_after_ramp: min_after_ramp,
        stats: fleet.stats().clone(),
        garbage: garbage + fleet.garbage(),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fleet_files_name_the_key() {
        let base = "[[registrars]]\naddress = \"127.0.0.1:5060\"\n";
        assert!(FleetConfig::parse(base).is_ok());
        for (text, key) in [
            ("", "registrars"),
            ("[sip]\ntransport = \"sctp\"\n", "sip.transport"),
            ("[keepalive]\ncrlf_s = 30\n", "keepalive.crlf_s"),
            ("[failover]\nfailures = 0\n", "failover.failures"),
            ("[endpoints]\nuser = \"alice\"\n", "endpoints.user"),
            ("[endpoints]\nrate = -1\n", "endpoints.rate"),
            (
                "[registration]\nrefresh_before_s = -5\n",
                "registration.refresh_before_s",
            ),
        ] {
            let t = if key == "registrars" {
                text.to_owned()
            } else {
                format!("{base}{text}")
            };
            let e = FleetConfig::parse(&t).unwrap_err().to_string();
            assert!(e.contains(key), "{t:?}: {e}");
        }
        let e = FleetConfig::parse(&format!("{base}[failover]\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn patterns_number_users_and_passwords() {
        let c = FleetConfig::parse(
            "[[registrars]]\naddress = \"127.0.0.1:5060\"\n[endpoints]\ncount = 3\nuser = \"ep{n}\"\npassword = \"pw-{n}\"\nfirst = 9\nwidth = 3\n",
        )
        .unwrap();
        let ids = c.identities().unwrap();
        let users: Vec<_> = ids.iter().map(|i| i.user.as_str()).collect();
        assert_eq!(users, ["ep009", "ep010", "ep011"]);
        assert_eq!(ids[2].auth.as_ref().unwrap().1.as_str(), "pw-011");
    }

    #[test]
    fn every_metric_is_rendered_documented_and_accepted_by_promtool() {
        let snap = FleetSnapshot {
            registered: vec![3, 1],
            unregistered: 1,
        };
        let stats = FleetStats {
            detect_ms: vec![2000, 2500],
            ..FleetStats::default()
        };
        let text = render_metrics(&["primary".into(), "backup".into()], &snap, &stats);
        let docs = include_str!("../../../docs/metrics.md");
        for m in METRICS {
            assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "{} not in docs",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
        assert!(text.contains("srtp_control_registered_endpoints{registrar=\"backup\"} 1"));
        assert!(text.contains("srtp_control_failure_detection_seconds{statistic=\"max\"} 2.5"));
        if let Err(said) = srtp_engine_tests::promtool_check_metrics(&text) {
            panic!("promtool: {said}");
        }
    }

    #[test]
    fn a_csv_gives_users_and_passwords_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("srtp-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "# user,password\nalice,pa\n\nbob\n").unwrap();
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "alice,pa\nbad user,x\n").unwrap();
        let cfg = |p: &Path| {
            FleetConfig::parse(&format!(
                "[[registrars]]\naddress = \"127.0.0.1:5060\"\n[endpoints]\ncsv = {:?}\n",
                p.display().to_string()
            ))
            .unwrap()
        };
        let ids = cfg(&good).identities().unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].auth.as_ref().unwrap().1.as_str(), "pa");
        assert!(ids[1].auth.is_none());
        let e = cfg(&bad).identities().unwrap_err().to_string();
        assert!(e.contains("endpoints.csv") && e.contains("line 2"), "{e}");
        assert!(!e.contains("pa"), "no password in the error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_qualify_options_is_answered_and_other_requests_refused() {
        use crate::sip::{Message, Method, Uri};
        let req = |m: Method| {
            let mut r = Message::request(m.clone(), Uri::new(Some("phone1"), "127.0.0.1", None));
            r.push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq")
                .push("From", "<sip:registrar@lab.test>;tag=r")
                .push("To", "<sip:phone1@127.0.0.1>")
                .push("Call-ID", "q1")
                .push("CSeq", format!("1 {}", m.as_str()));
            r
        };
        assert_eq!(
            answer_request(&req(Method::Options)).unwrap().code(),
            Some(200)
        );
        assert_eq!(
            answer_request(&req(Method::Invite)).unwrap().code(),
            Some(405)
        );
        assert!(answer_request(&req(Method::Ack)).is_none());
    }

    #[test]
    fn the_example_fleet_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/register/failover.toml"
        );
        let c = FleetConfig::load(Path::new(path)).unwrap();
        let p = c.policy(c.sip.listen).unwrap();
        assert_eq!(p.registrars.len(), 2);
        assert_eq!(c.identities().unwrap().len(), 5000);
        assert_eq!(p.detection_budget(), Some(Duration::from_secs(28)));
    }
}
