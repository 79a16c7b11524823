//! `srtp-control register <fleet.toml>`: a fleet of endpoints registered over real sockets,
//! with progress lines, Prometheus metrics while it runs, and a report at the end.
//!
//! The fleet is the sans-IO [`Fleet`]; this module only carries its messages. Over UDP every
//! endpoint shares one socket (each has its own Contact and Call-IDs); over TCP and TLS every
//! endpoint opens its own connection to each registrar it talks to, as phones do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use srtp_engine::metrics::MetricsServer;
use tokio::sync::mpsc;

use super::config::{FleetConfig, secs};
use super::endpoint::Payload;
use super::fleet::{Fleet, FleetStats};
use super::report::{RegisterReport, Sample, Timings, judge, render_metrics};
use crate::config_file::{ConfigError as ScenarioError, invalid};
use crate::sip::log::MessageLog;
use crate::sip::tls::{TlsSettings, Verify};
use crate::sip::transport::{Flow, Protocol, SipTransport, TransportError, TransportEvent};

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
    let ids = cfg.identities()?;
    // A UDP socket per endpoint, when asked: an SBC that keys on the source address sees one
    // phone per endpoint. Their events share the first transport's channel.
    let mut own: Vec<SipTransport> = Vec::new();
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    if cfg.sip.port_per_endpoint {
        let tx = transport.events_sender();
        let ip = cfg.sip.listen.ip();
        for i in 0..ids.len() {
            let t = SipTransport::bind_into(
                protocol,
                SocketAddr::new(ip, 0),
                &tls,
                MessageLog::off(),
                tx.clone(),
            )
            .await?;
            by_port.insert(t.local_addr().port(), i);
            own.push(t);
        }
    }
    let sender = |i: usize| own.get(i).unwrap_or(&transport);
    let budget = policy.detection_budget();
    let names: Vec<String> = policy.registrars.iter().map(|r| r.name.clone()).collect();
    let hops: Vec<(SocketAddr, String)> = (0..policy.registrars.len())
        .map(|r| {
            let (a, n) = policy.next_hop(r);
            (a, n.to_owned())
        })
        .collect();
    let n = ids.len();
    let rate = cfg.endpoints.rate;
    let start = Instant::now();
    let mut fleet = Fleet::new(policy, ids, start, rate);
    for (i, t) in own.iter().enumerate() {
        fleet.set_local(i, t.local_addr());
    }
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
    let mut said = std::collections::BTreeSet::new();
    let mut stopping: Option<Instant> = None;
    let mut last_snapshot = fleet.snapshot(start);
    loop {
        say_new_errors(fleet.stats(), &mut said);
        // Carry out what the fleet asks.
        while let Some((i, t)) = fleet.poll_transmit() {
            let key = (i, t.registrar);
            if !protocol.reliable() {
                if let Payload::Sip(m) = &t.payload {
                    let _ = sender(i).send(&Flow::Udp(hops[t.registrar].0), m);
                } else if let Payload::Stun(id) = &t.payload {
                    let _ = sender(i).send_stun(&Flow::Udp(hops[t.registrar].0), id);
                }
                continue;
            }
            match flows.get_mut(&key) {
                Some(FlowState::Up(flow)) => {
                    let r = match &t.payload {
                        Payload::Sip(m) => transport.send(flow, m),
                        Payload::Ping => transport.send_ping(flow),
                        Payload::Stun(id) => transport.send_stun(flow, id),
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
                        // it is marked unreachable. Other requests are not ours to take. The
                        // answer leaves from the socket the request was for (our Contact).
                        if let Some(resp) = answer_request(&msg) {
                            let i = match &msg.start {
                                crate::sip::StartLine::Request { uri, .. } => uri
                                    .port
                                    .and_then(|p| by_port.get(&p).copied())
                                    .unwrap_or(usize::MAX),
                                crate::sip::StartLine::Response { .. } => usize::MAX,
                            };
                            let _ = sender(i).send(&flow, &resp);
                        }
                    }
                    TransportEvent::Message { msg, .. } => fleet.handle_message(now, *msg),
                    TransportEvent::Pong { flow: Flow::Stream { id, .. } } => {
                        if let Some(&(i, r)) = by_flow.get(&id) {
                            fleet.handle_pong(now, i, r);
                        }
                    }
                    TransportEvent::Closed { flow: Flow::Stream { id, .. }, error } => {
                        if let Some((i, r)) = by_flow.remove(&id) {
                            if let Some(e) = &error {
                                transport_error(&mut fleet, &names, r, e);
                            }
                            flows.remove(&(i, r));
                            fleet.handle_flow_failed(now, i, r);
                        }
                    }
                    TransportEvent::Garbage { .. } => garbage += 1,
                    TransportEvent::StunAnswer { id, .. } => fleet.handle_stun(now, &id),
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
                                    Payload::Stun(id) => transport.send_stun(&flow, id),
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
                        transport_error(&mut fleet, &names, key.1, &e);
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
                    let errors: Vec<String> =
                        s.errors.iter().map(|(c, e)| format!("{c} {}", e.count)).collect();
                    eprintln!(
                        "[{t_s:>5.0} s] registered: {}, none {} | refreshes {} failovers {} fallbacks {}{}",
                        per.join(", "),
                        sample.snapshot.unregistered,
                        s.refreshes,
                        s.failovers,
                        s.fallbacks,
                        if errors.is_empty() {
                            String::new()
                        } else {
                            format!(" | errors: {}", errors.join(", "))
                        }
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
    let stats = fleet.stats().clone();
    let budget_ms = budget.map(|b| b.as_millis() as u64);
    let thresholds = judge(&cfg.thresholds, n, &last_snapshot, budget_ms, &stats);
    Ok(RegisterReport {
        endpoints: n,
        transport: protocol.via(),
        registrars: names,
        detection_budget_ms: budget_ms,
        duration_s: start.elapsed().as_secs_f64(),
        end: last_snapshot,
        min_registered_after_ramp: min_after_ramp,
        timings: Timings::of(&stats),
        pass: thresholds.iter().all(|j| j.pass),
        thresholds,
        stats,
        garbage: garbage + fleet.garbage(),
        samples,
    })
}

/// A transport failure's cause and words (TLS failures keep their own: expired, unknown
/// authority, name mismatch with the names, client certificate rejected).
fn transport_cause(e: &TransportError) -> &'static str {
    match e {
        TransportError::Tls(t) => t.cause(),
        TransportError::Io { .. } => "connect_failed",
        TransportError::TlsConfig(_) => "tls_config",
        TransportError::Closed(_) => "connection_closed",
    }
}

/// Counts a transport failure with registrar `r` (said once per cause, by `say_new_errors`).
fn transport_error(fleet: &mut Fleet, names: &[String], r: usize, e: &TransportError) {
    fleet.record_error(transport_cause(e), || {
        format!("registrar {}: {e}", names[r])
    });
}

/// Says each cause of error the first time it is counted (rejections come from the fleet).
fn say_new_errors(stats: &FleetStats, said: &mut std::collections::BTreeSet<String>) {
    for (cause, e) in &stats.errors {
        if said.insert(cause.clone()) {
            eprintln!("error ({cause}): {}", e.first);
        }
    }
}
