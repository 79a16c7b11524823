//! The load runner: places calls at the scenario's rate (no drift: each call has its own
//! start time from the run's start), holds them, hangs up, and gathers what each call and the
//! engine saw into a [`Report`].
//!
//! One tokio task per call; the user agents are the signaling, the engine (embedded or over
//! its socket) the media. Engine events (DTLS established or failed) are matched to calls by
//! stream id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use srtp_engine::ctl::client::CtlClient;
use srtp_engine::runtime::{Engine, EngineOptions, EngineSnapshot};
use srtp_engine::worker::MediaOptions;
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::causes;
use super::config::{MediaMode, Method, Role, Scenario, ScenarioError};
use super::host::CpuTimes;
use super::report::{CallRecord, MediaFigures, Report, Sample};
use crate::media::{EngineMedia, MediaEngine, MediaError, StreamRef};
use crate::sdp::{KeyMethod, MediaCrypto};
use crate::sip::log::MessageLog;
use crate::sip::tls::{TlsSettings, Verify};
use crate::sip::transaction::TimerValues;
use crate::sip::transport::Protocol;
use crate::sip::uri::Uri;
use crate::ua::{UaConfig, UasEvent, UserAgent};

/// Why a run could not start (a run that starts always ends in a report).
#[derive(Debug, Error)]
pub enum RunError {
    /// The scenario is wrong.
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    /// The engine could not be started or reached.
    #[error("media engine: {0}")]
    Engine(String),
    /// A user agent could not bind its transport.
    #[error("signaling: {0}")]
    Signaling(String),
    /// Files (lab certificates, reports).
    #[error("{0}")]
    Io(String),
}

/// How progress is shown while a run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// One line redrawn in place every second (a terminal).
    Live,
    /// A plain line every few seconds (logs, CI).
    Lines,
    /// Nothing.
    Off,
}

impl Progress {
    /// `Live` when standard error is a terminal, else `Lines`.
    pub fn auto() -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Progress::Live
        } else {
            Progress::Lines
        }
    }
}

/// The outcome of a DTLS-SRTP handshake as the engine reported it.
#[derive(Clone, Debug)]
enum Dtls {
    Established(f64),
    Failed { cause: String, detail: String },
}

/// Per-second figures of calls that ended in that second.
#[derive(Default)]
struct Window {
    expected: u64,
    lost: u64,
    jitter_sum: f64,
    mos_min: Option<f64>,
    ended: u64,
}

#[derive(Default)]
struct Shared {
    attempted: u64,
    setup_ok: u64,
    failed: u64,
    active: u64,
    peak_active: u64,
    max_lag_ms: f64,
    first_start: Option<Instant>,
    last_start: Option<Instant>,
    records: Vec<CallRecord>,
    failed_logs: usize,
    dtls_waiters: HashMap<u64, oneshot::Sender<Dtls>>,
    dtls_seen: HashMap<u64, Dtls>,
    answerer_dtls_ms: Vec<f64>,
    answered: u64,
    refused: HashMap<String, u64>,
    answerer_media: Vec<MediaFigures>,
    window: Window,
}

impl Shared {
    fn finish(&mut self, rec: CallRecord) {
        self.active -= 1;
        if rec.cause.is_some() {
            self.failed += 1;
        }
        if let Some(m) = &rec.media {
            let w = &mut self.window;
            w.expected += m.expected;
            w.lost += m.lost;
            w.jitter_sum += m.jitter_ms;
            w.mos_min = Some(w.mos_min.map_or(m.mos, |x: f64| x.min(m.mos)));
            w.ended += 1;
        }
        self.records.push(rec);
    }

    fn dtls_event(&mut self, stream: u64, d: Dtls) {
        match self.dtls_waiters.remove(&stream) {
            Some(w) => {
                let _ = w.send(d);
            }
            None => {
                self.dtls_seen.insert(stream, d);
            }
        }
    }
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where media comes from.
enum EngineLink {
    Embedded(Arc<Engine>),
    Socket(PathBuf),
}

impl EngineLink {
    fn media(&self) -> Result<EngineMedia, RunError> {
        match self {
            EngineLink::Embedded(e) => Ok(EngineMedia::embedded(e.clone())),
            EngineLink::Socket(p) => EngineMedia::connect(p)
                .map_err(|e| RunError::Engine(format!("{}: {e}", p.display()))),
        }
    }

    /// The engine's counters so far.
    fn tick(&self, client: &mut Option<CtlClient>) -> EngineTick {
        match self {
            EngineLink::Embedded(e) => EngineTick::of(&e.snapshot()),
            EngineLink::Socket(_) => {
                let Some(c) = client else {
                    return EngineTick::default();
                };
                let v = c
                    .request("engine_stats", serde_json::json!({}))
                    .unwrap_or(Value::Null);
                let sum = |k: &str| -> u64 {
                    v["totals"][k]
                        .as_object()
                        .map(|o| o.values().filter_map(Value::as_u64).sum())
                        .or_else(|| v["totals"][k].as_u64())
                        .unwrap_or(0)
                };
                let workers = v["workers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let io =
                    |k: &str| -> u64 { workers.iter().filter_map(|w| w["io"][k].as_u64()).sum() };
                EngineTick {
                    rx: sum("rx_packets"),
                    tx: sum("tx_packets"),
                    kernel_drops: io("kernel_drops"),
                    rx_no_buffer: io("rx_no_buffer"),
                    worker_cpu_us: workers
                        .iter()
                        .map(|w| {
                            w["cpu_user_us"].as_u64().unwrap_or(0)
                                + w["cpu_sys_us"].as_u64().unwrap_or(0)
                        })
                        .collect(),
                }
            }
        }
    }
}

/// The engine's counters at one moment (totals since it started).
#[derive(Clone, Debug, Default)]
struct EngineTick {
    rx: u64,
    tx: u64,
    kernel_drops: u64,
    rx_no_buffer: u64,
    /// Each worker thread's CPU time (user + kernel), µs.
    worker_cpu_us: Vec<u64>,
}

impl EngineTick {
    /// From an embedded engine's snapshot.
    fn of(snap: &EngineSnapshot) -> EngineTick {
        let t = &snap.totals;
        EngineTick {
            rx: t.rx_packets.iter().sum(),
            tx: t.tx_packets.iter().sum(),
            kernel_drops: snap.workers.iter().map(|w| w.io.kernel_drops).sum(),
            rx_no_buffer: snap.workers.iter().map(|w| w.io.rx_no_buffer).sum(),
            worker_cpu_us: snap
                .workers
                .iter()
                .map(|w| w.cpu_user_us + w.cpu_sys_us)
                .collect(),
        }
    }

    /// The busiest worker's CPU share since `earlier`, `dt` seconds before (0-1).
    fn worker_busy(&self, earlier: &EngineTick, dt: f64) -> Option<f64> {
        self.worker_cpu_us
            .iter()
            .zip(&earlier.worker_cpu_us)
            .map(|(b, a)| (b.saturating_sub(*a) as f64 / 1e6 / dt).min(1.0))
            .reduce(f64::max)
    }
}

/// Starts the engine the scenario names: embedded unless `engine.socket` is set. Returns it
/// with a channel of its events (JSON, the control protocol's shape).
fn start_engine(s: &Scenario) -> Result<(EngineLink, mpsc::UnboundedReceiver<Value>), RunError> {
    let (tx, rx) = mpsc::unbounded_channel();
    match &s.engine.socket {
        None => {
            let opts = EngineOptions {
                workers: s.engine.workers,
                pin: s.engine.pin,
                media: MediaOptions {
                    port_min: s.engine.port_min,
                    port_max: s.engine.port_max,
                    ..MediaOptions::default()
                },
                ..EngineOptions::default()
            };
            let engine =
                Arc::new(Engine::start(opts).map_err(|e| RunError::Engine(e.to_string()))?);
            if let Some(events) = engine.take_events() {
                std::thread::Builder::new()
                    .name("run-events".into())
                    .spawn(move || {
                        while let Ok(e) = events.recv() {
                            let v = serde_json::to_value(&e).unwrap_or(Value::Null);
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(|e| RunError::Engine(e.to_string()))?;
            }
            Ok((EngineLink::Embedded(engine), rx))
        }
        Some(path) => {
            let mut c = CtlClient::connect(path)
                .map_err(|e| RunError::Engine(format!("{}: {e}", path.display())))?;
            c.request(
                "subscribe",
                serde_json::json!({"events": ["dtls_established", "dtls_failed"]}),
            )
            .map_err(|e| RunError::Engine(format!("{}: {e}", path.display())))?;
            std::thread::Builder::new()
                .name("run-events".into())
                .spawn(move || {
                    loop {
                        match c.next_event(Duration::from_millis(200)) {
                            Ok(Some(v)) => {
                                if tx.send(v).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                if tx.is_closed() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| RunError::Engine(e.to_string()))?;
            Ok((EngineLink::Socket(path.clone()), rx))
        }
    }
}

/// The answerer's deliberate faults, applied around its media engine.
struct Faulty {
    inner: Box<dyn MediaEngine>,
    fingerprint: Option<srtp_engine::proto::dtls::Fingerprint>,
    wrong_keys: bool,
}

impl Faulty {
    /// A wrong fingerprint in our SDP, when asked for.
    fn fake(&self, mut a: crate::media::Allocation) -> crate::media::Allocation {
        if let Some(f) = &self.fingerprint {
            a.fingerprint = Some(f.clone());
        }
        a
    }
}

impl MediaEngine for Faulty {
    fn prepare(&mut self) -> Result<crate::media::Allocation, MediaError> {
        self.inner.prepare().map(|a| self.fake(a))
    }
    fn apply(
        &mut self,
        stream: StreamRef,
        n: &crate::sdp::Negotiated,
        prev: Option<&crate::sdp::Negotiated>,
    ) -> Result<(), MediaError> {
        self.inner.apply(stream, n, prev)
    }
    fn open(&mut self, n: &crate::sdp::Negotiated) -> Result<crate::media::Allocation, MediaError> {
        let mut n = n.clone();
        if self.wrong_keys
            && let MediaCrypto::Sdes { local, .. } = &mut n.crypto
        {
            for k in &mut local.keys {
                if let Some(b) = k.key_salt.first_mut() {
                    *b ^= 0x5a;
                }
            }
        }
        self.inner.open(&n).map(|a| self.fake(a))
    }
    fn stats(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        self.inner.stats(stream)
    }
    fn stop_sending(&mut self, stream: StreamRef) -> Result<(), MediaError> {
        self.inner.stop_sending(stream)
    }
    fn close(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        self.inner.close(stream)
    }
}

fn random_fingerprint() -> srtp_engine::proto::dtls::Fingerprint {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator");
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02X}")).collect();
    srtp_engine::proto::dtls::Fingerprint::parse(&format!("sha-256 {}", hex.join(":")))
        .expect("a well-formed sha-256 fingerprint")
}

/// TLS material for a run on this machine: the scenario's, or a lab CA made for the run.
struct RunTls {
    caller: TlsSettings,
    answerer: TlsSettings,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_tls(s: &Scenario, protocol: Protocol) -> Result<RunTls, RunError> {
    let verify = Verify::from_setting(&s.sip.tls_verify);
    let mut caller = TlsSettings {
        verify,
        identity: s.sip.tls_cert.clone().zip(s.sip.tls_key.clone()),
        client_ca: None,
    };
    let mut answerer = TlsSettings {
        verify: caller.verify.clone(),
        identity: caller.identity.clone(),
        client_ca: s.sip.client_ca.clone(),
    };
    let lab = protocol == Protocol::Tls
        && s.role == Role::Both
        && (answerer.identity.is_none() || s.answerer.faults.expired_certificate);
    if !lab {
        return Ok(RunTls {
            caller,
            answerer,
            _dir: None,
        });
    }
    let io = |e: std::io::Error| RunError::Io(format!("lab certificates: {e}"));
    let dir = std::env::temp_dir().join(format!(
        "srtp-control-run-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let dir = TempDir(dir);
    let ca = crate::pki::LabCa::new("srtp-control run CA")
        .map_err(|e| RunError::Io(format!("lab CA: {e}")))?;
    let (cert, key) = ca
        .issue(&crate::pki::CertSpec {
            names: &["localhost", "127.0.0.1", "::1"],
            client: false,
            expired: s.answerer.faults.expired_certificate,
        })
        .map_err(|e| RunError::Io(format!("lab certificate: {e}")))?;
    let pair = crate::pki::write_pair(&dir.0, "server", &cert, &key).map_err(io)?;
    let ca_path = dir.0.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(io)?;
    answerer.identity = Some(pair);
    if s.sip.tls_verify == "system" {
        caller.verify = Verify::CaFile(ca_path);
    }
    Ok(RunTls {
        caller,
        answerer,
        _dir: Some(dir),
    })
}

/// User agent `k` of a side: its listen address (the side's, or the ports above it, or any
/// port), keying, TLS and timers.
fn agent_config(
    s: &Scenario,
    protocol: Protocol,
    k: usize,
    method: KeyMethod,
    tls: &TlsSettings,
    answerer: bool,
) -> Result<UaConfig, RunError> {
    let mut listen = if answerer {
        s.sip.answerer_listen
    } else {
        s.sip.caller_listen
    };
    if k > 0 && listen.port() != 0 {
        listen.set_port(listen.port().wrapping_add(k as u16));
    }
    let mut cfg = UaConfig::new(if answerer { "answer" } else { "caller" }, protocol, listen);
    cfg.security = s.security(method, answerer)?;
    cfg.tls = tls.clone();
    cfg.timers = timers(s);
    Ok(cfg)
}

fn timers(s: &Scenario) -> TimerValues {
    let t1 = Duration::from_millis(s.sip.t1_ms);
    let d = TimerValues::default();
    TimerValues {
        t1,
        t2: d.t2.max(t1),
        t4: d.t4,
    }
}

fn credentials(v: &Option<String>) -> Option<(String, String)> {
    v.as_deref()
        .and_then(|v| v.split_once(':'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
}

/// When call `i` (from 0) starts, from the run's start: `rate` calls/s, reached linearly over
/// `ramp` seconds (the integral of the rate, inverted).
pub fn start_offset(i: u64, rate: f64, ramp: f64) -> Duration {
    let i = i as f64;
    let ramp_calls = rate * ramp / 2.0;
    let t = if ramp > 0.0 && i < ramp_calls {
        (2.0 * ramp * i / rate).sqrt()
    } else {
        ramp + (i - ramp_calls) / rate
    };
    Duration::from_secs_f64(t.max(0.0))
}

/// A caller user agent and whom it calls.
struct CallPlan {
    ua: UserAgent,
    method: KeyMethod,
    log: MessageLog,
    target: Uri,
    peer: SocketAddr,
}

/// The URI to call and the address to send to: the scenario's target (through its proxy, or
/// at its host), else our own answerer.
fn call_target(
    s: &Scenario,
    protocol: Protocol,
    target: Option<Uri>,
    answerer: Option<SocketAddr>,
) -> Result<(Uri, SocketAddr), RunError> {
    let target = match (target, answerer) {
        (Some(t), _) => t,
        (None, Some(at)) => Uri::new(Some("answer"), &at.ip().to_string(), Some(at.port())),
        (None, None) => {
            return Err(ScenarioError::Invalid {
                key: "sip.target",
                why: "role caller needs a target".into(),
            }
            .into());
        }
    };
    let peer = match (s.sip.proxy, target.socket_addr(), answerer) {
        (Some(p), _, _) => p,
        (None, Some(mut a), _) => {
            if target.port.is_none() {
                a.set_port(if protocol == Protocol::Tls {
                    5061
                } else {
                    5060
                });
            }
            a
        }
        (None, None, Some(a)) => a,
        (None, None, None) => {
            return Err(ScenarioError::Invalid {
                key: "sip.proxy",
                why: format!(
                    "the target's host {:?} is a name: set sip.proxy to the address to send to",
                    target.host
                ),
            }
            .into());
        }
    };
    Ok((target, peer))
}

#[allow(clippy::too_many_arguments)]
async fn place_call(
    index: u64,
    plan: Arc<CallPlan>,
    hold: Duration,
    dtls_timeout: Duration,
    log_limit: usize,
    shared: SharedRef,
    run_start: Instant,
) {
    let ua = &plan.ua;
    let call_id = ua.new_call_id();
    let started = Instant::now();
    {
        let mut s = lock(&shared);
        s.attempted += 1;
        s.active += 1;
        s.peak_active = s.peak_active.max(s.active);
        s.first_start.get_or_insert(started);
        s.last_start = Some(started);
    }
    let mut rec = CallRecord {
        index,
        call_id: call_id.clone(),
        method: match plan.method {
            KeyMethod::Sdes => "sdes",
            KeyMethod::Dtls => "dtls",
            KeyMethod::Dual => "dual",
        },
        start_s: (started - run_start).as_secs_f64(),
        setup_ms: None,
        dtls_ms: None,
        cause: None,
        detail: None,
        media: None,
        sip_log: Vec::new(),
    };
    let mut failure: Option<(String, String)> = None;
    match ua
        .call_as(plan.target.clone(), plan.peer, Some(call_id.clone()))
        .await
    {
        Err(e) => {
            failure = Some((
                causes::of_call_error(&e, plan.method != KeyMethod::Dtls),
                e.to_string(),
            ));
        }
        Ok(info) => {
            rec.setup_ms = Some(info.setup.as_secs_f64() * 1e3);
            if matches!(info.negotiated.crypto, MediaCrypto::Dtls { .. }) {
                let rx = {
                    let mut s = lock(&shared);
                    match s.dtls_seen.remove(&info.stream) {
                        Some(d) => Err(d),
                        None => {
                            let (tx, rx) = oneshot::channel();
                            s.dtls_waiters.insert(info.stream, tx);
                            Ok(rx)
                        }
                    }
                };
                let outcome = match rx {
                    Err(d) => Some(d),
                    Ok(rx) => tokio::time::timeout(dtls_timeout, rx)
                        .await
                        .ok()
                        .and_then(Result::ok),
                };
                lock(&shared).dtls_waiters.remove(&info.stream);
                match outcome {
                    Some(Dtls::Established(ms)) => rec.dtls_ms = Some(ms),
                    Some(Dtls::Failed { cause, detail }) => failure = Some((cause, detail)),
                    None => {
                        failure = Some((
                            "dtls_timeout".into(),
                            format!(
                                "no DTLS-SRTP handshake result within {} ms of the 200 OK",
                                dtls_timeout.as_millis()
                            ),
                        ))
                    }
                }
            }
            if failure.is_none() {
                lock(&shared).setup_ok += 1;
                tokio::time::sleep(hold).await;
            }
            match ua.hangup(&call_id).await {
                Ok(ended) => {
                    rec.media = MediaFigures::from_stats(&ended.stats);
                    if let Some(Err(e)) = &ended.bye
                        && failure.is_none()
                    {
                        failure = Some(("bye_failed".into(), format!("BYE: {e}")));
                    }
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(("bye_failed".into(), format!("BYE: {e}")));
                    }
                }
            }
            if failure.is_none()
                && let Some(m) = &rec.media
            {
                if m.auth_failures > 0 {
                    failure = Some((
                        "srtp_auth_failures".into(),
                        format!(
                            "{} SRTP/SRTCP packets failed authentication (rx suite {})",
                            m.auth_failures,
                            m.rx_suite.as_deref().unwrap_or("none")
                        ),
                    ));
                } else if m.packets_in == 0 && hold >= Duration::from_millis(500) {
                    failure = Some((
                        "no_media".into(),
                        format!("no RTP received in {} ms", hold.as_millis()),
                    ));
                }
            }
        }
    }
    match failure {
        Some((cause, detail)) => {
            rec.cause = Some(cause);
            rec.detail = Some(detail);
            let keep = {
                let mut s = lock(&shared);
                s.failed_logs += 1;
                s.failed_logs <= log_limit
            };
            rec.sip_log = if keep {
                plan.log.take_call(&call_id)
            } else {
                plan.log.forget_call(&call_id);
                Vec::new()
            };
        }
        None => plan.log.forget_call(&call_id),
    }
    lock(&shared).finish(rec);
}

/// Folds engine events into the shared state (DTLS outcomes by stream).
async fn engine_events(mut rx: mpsc::UnboundedReceiver<Value>, shared: SharedRef) {
    while let Some(v) = rx.recv().await {
        let Some(stream) = v["stream"].as_u64() else {
            continue;
        };
        // The RTP (or muxed) component decides; an RTCP port's own handshake does not.
        if v["component"].as_str() == Some("rtcp") {
            continue;
        }
        match v["event"].as_str() {
            Some("dtls_established") => {
                let ms = v["handshake_ms"].as_f64().unwrap_or(0.0);
                lock(&shared).dtls_event(stream, Dtls::Established(ms));
            }
            Some("dtls_failed") => {
                let reason = v["reason"].as_str().unwrap_or("protocol");
                let mut detail = format!(
                    "DTLS-SRTP handshake failed as {}: {reason}",
                    v["role"].as_str().unwrap_or("?")
                );
                if let Some(a) = v["alert"].as_str() {
                    detail.push_str(&format!(" ({a})"));
                }
                lock(&shared).dtls_event(
                    stream,
                    Dtls::Failed {
                        cause: causes::of_dtls_reason(reason),
                        detail,
                    },
                );
            }
            _ => {}
        }
    }
}

/// Folds the answerer's events into the shared state.
async fn answerer_events(mut rx: mpsc::UnboundedReceiver<UasEvent>, shared: SharedRef) {
    while let Some(e) = rx.recv().await {
        let mut s = lock(&shared);
        match e {
            UasEvent::Answered(_) => s.answered += 1,
            UasEvent::Refused { code, reason, .. } => {
                *s.refused
                    .entry(causes::of_rejection(code, Some(&reason), true))
                    .or_default() += 1;
            }
            UasEvent::Failed { error, .. } => {
                *s.refused.entry(error.cause()).or_default() += 1;
            }
            UasEvent::Updated { .. }
            | UasEvent::Dtls { .. }
            | UasEvent::Registration(_)
            | UasEvent::Engine { .. } => {}
            UasEvent::Ended { stats, .. } => {
                if let Some(stream) = stats["id"].as_u64()
                    && let Some(Dtls::Established(ms)) = s.dtls_seen.remove(&stream)
                {
                    s.answerer_dtls_ms.push(ms);
                }
                if let Some(m) = MediaFigures::from_stats(&stats) {
                    s.answerer_media.push(m);
                }
            }
        }
    }
}

fn progress_line(p: &Sample, calls: u64) -> String {
    format!(
        "{:6.1}s  calls {:>6}/{}  set up {:>6}  failed {:>4}  active {:>5}  media {:>8.0} pkt/s  loss {:.3}%  MOS {}  cpu {}",
        p.t_s,
        p.attempted,
        if calls == 0 {
            "-".to_string()
        } else {
            calls.to_string()
        },
        p.setup_ok,
        p.failed,
        p.active,
        p.rx_pps,
        p.loss_percent,
        p.mos_min.map_or("-".into(), |m| format!("{m:.2}")),
        p.cpu_percent.map_or("-".into(), |c| match p.steal_percent {
            Some(st) if st >= 1.0 => format!("{c:.0}% (steal {st:.0}%)"),
            _ => format!("{c:.0}%"),
        }),
    )
}

/// Runs a scenario to its end and returns the report (thresholds already judged).
pub async fn run(s: &Scenario, progress: Progress) -> Result<Report, RunError> {
    let protocol = s.protocol()?;
    let wall_start = SystemTime::now();
    let (link, events) = start_engine(s)?;
    let tls = run_tls(s, protocol)?;
    let shared: SharedRef = Arc::new(Mutex::new(Shared::default()));
    tokio::spawn(engine_events(events, shared.clone()));
    let log_limit = s.report.failed_call_logs;

    // The answerers: `sip.agents` user agents, each on its own port (the first on
    // `sip.answerer_listen`, the others on the ports above it, or any port).
    let mut answerers = Vec::new();
    if s.role != Role::Caller {
        let method = match s.security.method {
            Method::Sdes => KeyMethod::Sdes,
            Method::Dtls => KeyMethod::Dtls,
            Method::Dual | Method::Mixed => KeyMethod::Dual,
        };
        for k in 0..s.sip.agents {
            let mut cfg = agent_config(s, protocol, k, method, &tls.answerer, true)?;
            let listen = cfg.listen;
            cfg.challenge = credentials(&s.sip.challenge);
            if let Some(address) = &s.answerer.register {
                let spec = crate::register::address::RegistrarAddress {
                    name: address,
                    address,
                    domain: s.answerer.domain.as_deref(),
                    ..Default::default()
                }
                .spec(protocol)
                .map_err(|why| ScenarioError::Invalid {
                    key: "answerer.register",
                    why,
                })?;
                cfg.user = s.answerer.user.clone();
                cfg.credentials = credentials(&s.sip.auth);
                cfg.register = Some(crate::ua::RegisterConfig {
                    registrars: vec![spec],
                    expires: s.answerer.expires,
                });
            }
            let mut media = link.media()?;
            if s.media.mode == MediaMode::Echo {
                media = media.answering_with("echo");
            }
            let f = &s.answerer.faults;
            let media: Box<dyn MediaEngine> = Box::new(Faulty {
                inner: Box::new(media),
                fingerprint: f.wrong_fingerprint.then(random_fingerprint),
                wrong_keys: f.wrong_keys,
            });
            let (ua, rx) = UserAgent::start(cfg, media)
                .await
                .map_err(|e| RunError::Signaling(format!("answerer on {listen}: {e}")))?;
            tokio::spawn(answerer_events(rx, shared.clone()));
            answerers.push(ua);
        }
    }

    // The callers: `sip.agents` user agents per keying method; call i goes to caller
    // i % n, which calls answerer i % n (when the answerers are ours).
    let mut plans = Vec::new();
    if s.role != Role::Answerer {
        let methods: &[KeyMethod] = match s.security.method {
            Method::Sdes => &[KeyMethod::Sdes],
            Method::Dtls => &[KeyMethod::Dtls],
            Method::Dual => &[KeyMethod::Dual],
            Method::Mixed => &[KeyMethod::Sdes, KeyMethod::Dtls],
        };
        let target = s.target()?;
        for k in 0..s.sip.agents * methods.len() {
            let method = methods[k % methods.len()];
            let mut cfg = agent_config(s, protocol, k, method, &tls.caller, false)?;
            let listen = cfg.listen;
            cfg.credentials = credentials(&s.sip.auth);
            cfg.log = MessageLog::off().per_call(s.load.max_concurrent as usize + log_limit + 64);
            let log = cfg.log.clone();
            let (ua, _uas) = UserAgent::start(cfg, Box::new(link.media()?))
                .await
                .map_err(|e| RunError::Signaling(format!("caller on {listen}: {e}")))?;
            let answerer =
                (!answerers.is_empty()).then(|| answerers[k % answerers.len()].local_addr());
            let (target, peer) = call_target(s, protocol, target.clone(), answerer)?;
            plans.push(Arc::new(CallPlan {
                ua,
                method,
                log,
                target,
                peer,
            }));
        }
    }

    // Progress and the time series, once a second.
    let mut ctl_client = match &link {
        EngineLink::Socket(p) => CtlClient::connect(p).ok(),
        EngineLink::Embedded(_) => None,
    };
    let run_start = Instant::now();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let sampler = {
        let shared = shared.clone();
        let calls = s.load.calls;
        async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            let mut t0 = link.tick(&mut ctl_client);
            let mut cpu0 = CpuTimes::read();
            let mut last = Instant::now();
            let mut lines_due = 0u32;
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stop_rx => true,
                };
                let now = Instant::now();
                let dt = (now - last).as_secs_f64().max(1e-3);
                last = now;
                let t1 = link.tick(&mut ctl_client);
                let cpu1 = CpuTimes::read();
                let shares = cpu1.zip(cpu0).and_then(|(b, a)| b.since(&a));
                cpu0 = cpu1;
                let sample = {
                    let mut sh = lock(&shared);
                    let w = std::mem::take(&mut sh.window);
                    Sample {
                        t_s: (now - run_start).as_secs_f64(),
                        attempted: sh.attempted,
                        setup_ok: sh.setup_ok,
                        failed: sh.failed,
                        active: sh.active,
                        rx_pps: (t1.rx.saturating_sub(t0.rx)) as f64 / dt,
                        tx_pps: (t1.tx.saturating_sub(t0.tx)) as f64 / dt,
                        ended: w.ended,
                        loss_percent: if w.expected > 0 {
                            100.0 * w.lost as f64 / w.expected as f64
                        } else {
                            0.0
                        },
                        jitter_ms: if w.ended > 0 {
                            w.jitter_sum / w.ended as f64
                        } else {
                            0.0
                        },
                        mos_min: w.mos_min,
                        cpu_percent: shares.map(|s| s.0),
                        steal_percent: shares.map(|s| s.1),
                        worker_busy: t1.worker_busy(&t0, dt),
                        local_drops: t1.kernel_drops,
                    }
                };
                t0 = t1;
                match progress {
                    Progress::Live => eprint!("\r\x1b[2K{}", progress_line(&sample, calls)),
                    Progress::Lines => {
                        if lines_due == 0 || stop {
                            eprintln!("{}", progress_line(&sample, calls));
                        }
                        lines_due = (lines_due + 1) % 5;
                    }
                    Progress::Off => {}
                }
                samples.push(sample);
                if stop {
                    if progress == Progress::Live {
                        eprintln!();
                    }
                    return (samples, link, t0);
                }
            }
        }
    };
    let sampler = tokio::spawn(sampler);

    // Place the calls.
    let mut offered = 0u64;
    if !plans.is_empty() {
        let sem = Arc::new(Semaphore::new(
            s.load.max_concurrent.min(Semaphore::MAX_PERMITS as u64) as usize,
        ));
        let hold = Duration::from_secs_f64(s.load.hold_s);
        let dtls_timeout = Duration::from_millis(s.security.dtls_timeout_ms);
        for i in 0u64.. {
            if s.load.calls > 0 && i >= s.load.calls {
                break;
            }
            let off = start_offset(i, s.load.rate, s.load.ramp_up_s);
            if s.load.duration_s > 0.0 && off.as_secs_f64() >= s.load.duration_s {
                break;
            }
            let at = run_start + off;
            tokio::time::sleep_until(at.into()).await;
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let lag = Instant::now().saturating_duration_since(at).as_secs_f64() * 1e3;
            {
                let mut sh = lock(&shared);
                sh.max_lag_ms = sh.max_lag_ms.max(lag);
            }
            offered += 1;
            let plan = plans[(i % plans.len() as u64) as usize].clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                place_call(i, plan, hold, dtls_timeout, log_limit, shared, run_start).await;
                drop(permit);
            });
        }
        // Every call ends (each is bounded by SIP timers, the DTLS timeout and its hold).
        let _ = sem
            .acquire_many(s.load.max_concurrent.min(Semaphore::MAX_PERMITS as u64) as u32)
            .await;
    } else {
        tokio::time::sleep(Duration::from_secs_f64(s.load.duration_s.max(1.0))).await;
    }
    let placing_s = {
        let sh = lock(&shared);
        match (sh.first_start, sh.last_start) {
            (Some(a), Some(b)) if b > a => Some((b - a).as_secs_f64()),
            _ => None,
        }
    };
    // Give the answerer a moment to see the last BYEs.
    if !answerers.is_empty() && s.role == Role::Both {
        for _ in 0..40 {
            let done = {
                let sh = lock(&shared);
                sh.answerer_media.len() as u64 >= sh.answered
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop_tx.send(());
    let (samples, link, last_tick) = sampler
        .await
        .map_err(|e| RunError::Engine(format!("progress task: {e}")))?;
    for p in &plans {
        p.ua.stop();
    }
    for a in &answerers {
        a.stop();
    }
    let engine_summary = match &link {
        EngineLink::Embedded(e) => {
            let snap = e.shutdown();
            let last = EngineTick::of(&snap);
            super::report::EngineFigures {
                kind: "embedded".into(),
                backend: e.backend().name().into(),
                workers: e.worker_count(),
                tx_drops: snap.totals.tx_drops,
                events_dropped: snap.totals.events_dropped,
                kernel_drops: last.kernel_drops,
                rx_no_buffer: last.rx_no_buffer,
            }
        }
        EngineLink::Socket(p) => super::report::EngineFigures {
            kind: format!("socket {}", p.display()),
            backend: String::new(),
            workers: 0,
            tx_drops: 0,
            events_dropped: 0,
            kernel_drops: last_tick.kernel_drops,
            rx_no_buffer: last_tick.rx_no_buffer,
        },
    };
    let sh = std::mem::take(&mut *lock(&shared));
    let not_kept: u64 = plans.iter().map(|p| p.log.calls_not_kept()).sum();
    Ok(Report::build(
        s,
        super::report::Gathered {
            started: wall_start,
            duration_s: run_start.elapsed().as_secs_f64(),
            offered,
            placing_s,
            max_lag_ms: sh.max_lag_ms,
            peak_active: sh.peak_active,
            records: sh.records,
            answered: sh.answered,
            refused: sh.refused,
            answerer_media: sh.answerer_media,
            answerer_dtls_ms: sh.answerer_dtls_ms,
            samples,
            engine: engine_summary,
            sip_logs_not_kept: not_kept,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_follow_the_rate_and_the_ramp() {
        // No ramp: call i at i / rate.
        assert_eq!(start_offset(0, 100.0, 0.0), Duration::ZERO);
        assert!((start_offset(250, 100.0, 0.0).as_secs_f64() - 2.5).abs() < 1e-9);
        // A 2 s ramp to 100/s places 100 calls in the ramp (the triangle's area), and the
        // rest at full rate after it.
        assert!((start_offset(100, 100.0, 2.0).as_secs_f64() - 2.0).abs() < 1e-9);
        assert!((start_offset(200, 100.0, 2.0).as_secs_f64() - 3.0).abs() < 1e-9);
        // Halfway through the ramp (t = 1 s) a quarter of its calls are placed.
        assert!((start_offset(25, 100.0, 2.0).as_secs_f64() - 1.0).abs() < 1e-9);
        // Monotonic.
        let mut prev = Duration::ZERO;
        for i in 0..1000 {
            let t = start_offset(i, 37.0, 3.3);
            assert!(t >= prev);
            prev = t;
        }
    }
}
