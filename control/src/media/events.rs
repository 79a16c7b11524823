//! What the engine tells signaling without being asked: DTLS outcomes, and whether it is there
//! at all. A watcher thread keeps a connection of its own subscribed to them.

use std::path::Path;

use srtp_engine::ctl::client::CtlClient;
use srtp_engine::model::{Component, Event};
use srtp_engine::proto::dtls::{DtlsFailureReason, DtlsRole};
use srtp_engine::proto::srtp::Suite;

/// The outcome of a DTLS-SRTP handshake, as the engine reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum DtlsOutcome {
    /// Keys in place, the peer's certificate matched its fingerprint.
    Established {
        /// The SRTP profile.
        suite: Option<Suite>,
        /// From the first flight to the keys.
        handshake_ms: f64,
    },
    /// The handshake failed.
    Failed {
        /// The engine's reason.
        reason: DtlsFailureReason,
        /// The alert, for `peer_alert`.
        alert: Option<String>,
        /// For `timeout`, which flight was missing.
        detail: Option<String>,
        /// Our role.
        role: DtlsRole,
    },
}

impl DtlsOutcome {
    /// The engine's reason with its alert, verbatim: `peer_alert: handshake_failure`.
    pub fn reason(&self) -> Option<String> {
        match self {
            DtlsOutcome::Established { .. } => None,
            DtlsOutcome::Failed {
                reason,
                alert,
                detail,
                ..
            } => Some(match (alert, detail) {
                (Some(a), _) => format!("{reason}: {a}"),
                (None, Some(d)) => format!("{reason} ({d})"),
                (None, None) => reason.to_string(),
            }),
        }
    }
}

/// A DTLS event of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DtlsEvent {
    /// The engine's stream id.
    pub stream: u64,
    /// The RTCP port's own handshake (no rtcp-mux), not the one that decides the call.
    pub rtcp: bool,
    /// What happened.
    pub outcome: DtlsOutcome,
}

impl DtlsEvent {
    /// A `dtls_established` or `dtls_failed` event; None for any other.
    pub fn from_event(e: &Event) -> Option<DtlsEvent> {
        let (stream, component, outcome) = match e {
            Event::DtlsEstablished {
                stream,
                component,
                suite,
                handshake_ms,
                ..
            } => (
                *stream,
                *component,
                DtlsOutcome::Established {
                    suite: Some(*suite),
                    handshake_ms: *handshake_ms,
                },
            ),
            Event::DtlsFailed {
                stream,
                component,
                role,
                reason,
                alert,
                detail,
                ..
            } => (
                *stream,
                *component,
                DtlsOutcome::Failed {
                    reason: *reason,
                    alert: alert.as_deref().map(str::to_owned),
                    detail: detail.as_deref().map(str::to_owned),
                    role: *role,
                },
            ),
            _ => return None,
        };
        Some(DtlsEvent {
            stream,
            rtcp: component == Component::Rtcp,
            outcome,
        })
    }
}

/// What the engine watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A DTLS outcome.
    Dtls(DtlsEvent),
    /// The engine's control socket went away (the engine stopped or crashed): every stream of
    /// it is gone.
    Lost,
    /// An engine answers on the control socket again.
    Back,
}

/// The events signaling subscribes to.
pub fn dtls_subscription() -> Option<Vec<String>> {
    Some(vec!["dtls_established".into(), "dtls_failed".into()])
}

/// Watches an engine on a connection of its own, from a thread: its DTLS events, and when it
/// goes away and comes back (the thread reconnects while the engine restarts). Events come
/// out of the returned channel; the thread ends when the channel is dropped.
pub fn engine_events(path: &Path) -> tokio::sync::mpsc::UnboundedReceiver<EngineEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("engine-events".into())
        .spawn(move || {
            let mut was_up = true;
            while !tx.is_closed() {
                let client = CtlClient::connect(&path).and_then(|mut c| {
                    c.subscribe(dtls_subscription())?;
                    Ok(c)
                });
                let Ok(mut c) = client else {
                    if was_up && tx.send(EngineEvent::Lost).is_err() {
                        return;
                    }
                    was_up = false;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    continue;
                };
                if !was_up && tx.send(EngineEvent::Back).is_err() {
                    return;
                }
                was_up = true;
                loop {
                    match c.next_event(std::time::Duration::from_millis(500)) {
                        Ok(Some(e)) => {
                            if let Some(d) = DtlsEvent::from_event(&e.event)
                                && tx.send(EngineEvent::Dtls(d)).is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) if tx.is_closed() => return,
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no events from the engine: {e}");
    }
    rx
}
