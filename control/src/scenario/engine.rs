//! The run's media engine: embedded in this process (the default) or reached over its control
//! socket (`engine.socket`), its events, and its counters for the progress lines.

use std::path::PathBuf;
#[cfg(feature = "embedded")]
use std::sync::Arc;
use std::time::Duration;

use srtp_engine::ctl::client::CtlClient;
use srtp_engine::ctl::protocol::EngineStats;
use srtp_engine::model::{Component, Event};
use srtp_engine::proto::dtls::Fingerprint;
#[cfg(feature = "embedded")]
use srtp_engine::runtime::{Engine, EngineOptions, EngineSnapshot, MediaOptions};
use tokio::sync::mpsc;

use super::causes;
use super::config::Scenario;
use super::error::RunError;
use super::report::EngineFigures;
use super::state::{Dtls, Shared, lock};
use crate::media::{EngineMedia, dtls_subscription};

/// Where media comes from.
pub(super) enum EngineLink {
    #[cfg(feature = "embedded")]
    Embedded(Arc<Engine>),
    Socket(PathBuf),
}

impl EngineLink {
    /// A media engine client for one user agent.
    pub(super) fn media(&self) -> Result<EngineMedia, RunError> {
        match self {
            #[cfg(feature = "embedded")]
            EngineLink::Embedded(e) => Ok(EngineMedia::embedded(e.clone())),
            EngineLink::Socket(p) => EngineMedia::connect(p)
                .map_err(|e| RunError::Engine(format!("{}: {e}", p.display()))),
        }
    }

    /// The engine's DTLS certificate fingerprint.
    pub(super) fn fingerprint(&self) -> Option<Fingerprint> {
        let text = match self {
            #[cfg(feature = "embedded")]
            EngineLink::Embedded(e) => e.dtls_fingerprint(),
            EngineLink::Socket(p) => {
                CtlClient::connect(p)
                    .ok()?
                    .hello()
                    .ok()?
                    .capabilities
                    .dtls_fingerprint
            }
        };
        Fingerprint::parse(&text).ok()
    }

    /// The engine's counters so far.
    pub(super) fn tick(&self, client: &mut Option<CtlClient>) -> EngineTick {
        match self {
            #[cfg(feature = "embedded")]
            EngineLink::Embedded(e) => EngineTick::of_snapshot(&e.snapshot()),
            EngineLink::Socket(_) => client
                .as_mut()
                .and_then(|c| c.engine_stats().ok())
                .map_or_else(EngineTick::default, |s| EngineTick::of_stats(&s)),
        }
    }

    /// A client for the progress figures (socket engines only).
    pub(super) fn stats_client(&self) -> Option<CtlClient> {
        match self {
            #[cfg(feature = "embedded")]
            EngineLink::Embedded(_) => None,
            EngineLink::Socket(p) => CtlClient::connect(p).ok(),
        }
    }

    /// Stops an embedded engine and sums up the engine's part of the report.
    pub(super) fn finish(&self, last: &EngineTick) -> EngineFigures {
        match self {
            #[cfg(feature = "embedded")]
            EngineLink::Embedded(e) => {
                let snap = e.shutdown();
                let last = EngineTick::of_snapshot(&snap);
                EngineFigures {
                    kind: "embedded".into(),
                    backend: e.backend().name().into(),
                    workers: e.worker_count(),
                    tx_drops: snap.totals.tx_drops,
                    events_dropped: snap.totals.events_dropped,
                    kernel_drops: last.kernel_drops,
                    rx_no_buffer: last.rx_no_buffer,
                }
            }
            EngineLink::Socket(p) => EngineFigures {
                kind: format!("socket {}", p.display()),
                backend: last.backend.clone(),
                workers: last.worker_cpu_us.len(),
                tx_drops: last.tx_drops,
                events_dropped: last.events_dropped,
                kernel_drops: last.kernel_drops,
                rx_no_buffer: last.rx_no_buffer,
            },
        }
    }
}

/// The engine's counters at one moment (totals since it started).
#[derive(Clone, Debug, Default)]
pub(super) struct EngineTick {
    pub(super) rx: u64,
    pub(super) tx: u64,
    pub(super) kernel_drops: u64,
    pub(super) rx_no_buffer: u64,
    pub(super) tx_drops: u64,
    pub(super) events_dropped: u64,
    pub(super) backend: String,
    /// Each worker thread's CPU time (user + kernel), µs.
    pub(super) worker_cpu_us: Vec<u64>,
}

impl EngineTick {
    #[cfg(feature = "embedded")]
    fn of_snapshot(snap: &EngineSnapshot) -> EngineTick {
        let t = &snap.totals;
        EngineTick {
            rx: t.rx_packets.iter().sum(),
            tx: t.tx_packets.iter().sum(),
            kernel_drops: snap.workers.iter().map(|w| w.io.kernel_drops).sum(),
            rx_no_buffer: snap.workers.iter().map(|w| w.io.rx_no_buffer).sum(),
            tx_drops: t.tx_drops,
            events_dropped: t.events_dropped,
            backend: snap
                .workers
                .first()
                .map_or_else(String::new, |w| w.backend.to_owned()),
            worker_cpu_us: snap
                .workers
                .iter()
                .map(|w| w.cpu_user_us + w.cpu_sys_us)
                .collect(),
        }
    }

    fn of_stats(s: &EngineStats) -> EngineTick {
        EngineTick {
            rx: s.packets(false),
            tx: s.packets(true),
            kernel_drops: s.workers.iter().map(|w| w.io.kernel_drops).sum(),
            rx_no_buffer: s.workers.iter().map(|w| w.io.rx_no_buffer).sum(),
            tx_drops: s.tx_drops,
            events_dropped: s.events_dropped,
            backend: s.backend.clone(),
            worker_cpu_us: s
                .workers
                .iter()
                .map(|w| w.cpu_user_us + w.cpu_sys_us)
                .collect(),
        }
    }

    /// The busiest worker's CPU share since `earlier`, `dt` seconds before (0-1).
    pub(super) fn worker_busy(&self, earlier: &EngineTick, dt: f64) -> Option<f64> {
        self.worker_cpu_us
            .iter()
            .zip(&earlier.worker_cpu_us)
            .map(|(b, a)| (b.saturating_sub(*a) as f64 / 1e6 / dt).min(1.0))
            .reduce(f64::max)
    }
}

/// Starts the engine the scenario names: embedded unless `engine.socket` is set. Returns it
/// with a channel of its events.
pub(super) fn start_engine(
    s: &Scenario,
) -> Result<(EngineLink, mpsc::UnboundedReceiver<Event>), RunError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("run-events".into())
            .spawn(f)
            .map(|_| ())
            .map_err(|e| RunError::Engine(e.to_string()))
    };
    match &s.engine.socket {
        #[cfg(feature = "embedded")]
        None => {
            let opts = EngineOptions {
                workers: s.engine.workers,
                pin: s.engine.pin,
                media: MediaOptions {
                    port_min: s.engine.port_min,
                    port_max: s.engine.port_max,
                    local_ips: vec![s.engine.local_ip],
                    ..MediaOptions::default()
                },
                ..EngineOptions::default()
            };
            let engine =
                Arc::new(Engine::start(opts).map_err(|e| RunError::Engine(e.to_string()))?);
            if let Some(events) = engine.take_events() {
                spawn(Box::new(move || {
                    while let Ok(e) = events.recv() {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                }))?;
            }
            Ok((EngineLink::Embedded(engine), rx))
        }
        #[cfg(not(feature = "embedded"))]
        None => Err(RunError::Engine(
            "this srtp-control is built without an embedded engine: set engine.socket to a \
             running srtp-engine's control socket"
                .into(),
        )),
        Some(path) => {
            let at = |e| RunError::Engine(format!("{}: {e}", path.display()));
            let mut c = CtlClient::connect(path).map_err(at)?;
            c.subscribe(dtls_subscription()).map_err(at)?;
            spawn(Box::new(move || {
                loop {
                    match c.next_event(Duration::from_millis(200)) {
                        Ok(Some(e)) => {
                            if tx.send(e.event).is_err() {
                                return;
                            }
                        }
                        Ok(None) if tx.is_closed() => return,
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            }))?;
            Ok((EngineLink::Socket(path.clone()), rx))
        }
    }
}

/// Folds engine events into the tallies (DTLS outcomes by stream).
pub(super) async fn fold_events(mut rx: mpsc::UnboundedReceiver<Event>, shared: Shared) {
    while let Some(e) = rx.recv().await {
        match e {
            // The RTP (or muxed) component decides; an RTCP port's own handshake does not.
            Event::DtlsEstablished {
                stream,
                component: Component::Rtp,
                handshake_ms,
                ..
            } => lock(&shared).dtls_event(stream, Dtls::Established(handshake_ms)),
            Event::DtlsFailed {
                stream,
                component: Component::Rtp,
                role,
                reason,
                alert,
                detail: stage,
                ..
            } => {
                let mut detail = format!("DTLS-SRTP handshake failed as {}: {reason}", role.name());
                if let Some(a) = alert.or(stage) {
                    detail.push_str(&format!(" ({a})"));
                }
                lock(&shared).dtls_event(
                    stream,
                    Dtls::Failed {
                        cause: causes::of_dtls_reason(reason.as_str()),
                        detail,
                    },
                );
            }
            _ => {}
        }
    }
}
