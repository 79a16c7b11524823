//! The run's user agents: `sip.agents` answerers (each on its own port) and `sip.agents`
//! callers per keying method, configured from the scenario, and whom each caller calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use srtp_engine::model::Mode;

use super::config::{MediaMode, Method, Role, Scenario, ScenarioError};
use super::engine::EngineLink;
use super::error::RunError;
use super::faults::{Faulty, random_fingerprint};
use super::state::Shared;
use super::tls::RunTls;
use crate::media::MediaEngine;
use crate::sdp::KeyMethod;
use crate::sip::log::MessageLog;
use crate::sip::tls::TlsSettings;
use crate::sip::transaction::TimerValues;
use crate::sip::transport::Protocol;
use crate::sip::uri::Uri;
use crate::ua::{UaConfig, UserAgent};

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

/// A caller user agent and whom it calls.
pub(super) struct CallPlan {
    pub(super) ua: UserAgent,
    pub(super) method: KeyMethod,
    pub(super) log: MessageLog,
    pub(super) target: Uri,
    pub(super) peer: SocketAddr,
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

/// The answerers, each with its events folded into the tallies.
pub(super) async fn start_answerers(
    s: &Scenario,
    protocol: Protocol,
    tls: &RunTls,
    link: &EngineLink,
    shared: &Shared,
) -> Result<Vec<UserAgent>, RunError> {
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
                media = media.answering_with(Mode::Echo);
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
            tokio::spawn(super::answerer::fold(rx, shared.clone(), k));
            answerers.push(ua);
        }
    }
    Ok(answerers)
}

/// The callers: call i goes to caller i % n, which calls answerer i % n (when the answerers
/// are ours).
pub(super) async fn start_callers(
    s: &Scenario,
    protocol: Protocol,
    tls: &RunTls,
    link: &EngineLink,
    answerers: &[UserAgent],
) -> Result<Vec<Arc<CallPlan>>, RunError> {
    let log_limit = s.report.failed_call_logs;
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
    Ok(plans)
}
