//! The run's user agents: `sip.agents` answerers (each on its own port) and `sip.agents`
//! callers per keying method, configured from the scenario, and whom each caller calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use srtp_engine::model::Mode;

use super::config::{MediaMode, Method, Role, Scenario, ScenarioError, invalid};
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
    // Each shard's callers have a user name of their own.
    let user = match (answerer, s.shard.is_split()) {
        (true, _) => "answer".to_owned(),
        (false, false) => "caller".to_owned(),
        (false, true) => format!("caller-{}", s.shard.index),
    };
    let mut cfg = UaConfig::new(&user, protocol, listen);
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
    /// The URIs to call and the addresses to send to; call `i` goes to the `i % n`th.
    pub(super) targets: Arc<Vec<(Uri, SocketAddr)>>,
}

impl CallPlan {
    /// Whom call number `i` of the scenario goes to, when `shards` agents share it: the
    /// targets take turns along each agent's own calls, so that every agent reaches every
    /// target.
    pub(super) fn target(&self, i: u64, shards: u32) -> (Uri, SocketAddr) {
        let turn = i / u64::from(shards.max(1));
        self.targets[(turn % self.targets.len() as u64) as usize].clone()
    }
}

/// Whom the callers call, as (URI, address) pairs: each of the scenario's targets through its
/// proxy, or at its host (a name counts once per address it resolves to: a headless Service
/// of answerer agents); with no target, our own answerer at `answerer`.
async fn call_targets(
    s: &Scenario,
    protocol: Protocol,
    targets: &[Uri],
    answerer: Option<SocketAddr>,
) -> Result<Vec<(Uri, SocketAddr)>, RunError> {
    if targets.is_empty() {
        let at = answerer.ok_or_else(|| invalid("sip.target", "role caller needs a target"))?;
        let uri = Uri::new(Some("answer"), &at.ip().to_string(), Some(at.port()));
        return Ok(vec![(uri, at)]);
    }
    let default_port = if protocol == Protocol::Tls {
        5061
    } else {
        5060
    };
    let mut out = Vec::new();
    for t in targets {
        if let Some(p) = s.sip.proxy {
            out.push((t.clone(), p));
            continue;
        }
        if let Some(mut a) = t.socket_addr() {
            a.set_port(t.port.unwrap_or(default_port));
            out.push((t.clone(), a));
            continue;
        }
        let port = t.port.unwrap_or(default_port);
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), port))
            .await
            .map_err(|e| invalid("sip.target", format!("{}: {e}", t.host)))?
            .collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(invalid("sip.target", format!("{} has no address", t.host)).into());
        }
        out.extend(addrs.into_iter().map(|a| (t.clone(), a)));
    }
    Ok(out)
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
        let targets = s.targets()?;
        let shared_targets = if targets.is_empty() {
            None
        } else {
            Some(Arc::new(call_targets(s, protocol, &targets, None).await?))
        };
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
            let targets = match &shared_targets {
                Some(t) => t.clone(),
                None => {
                    let answerer = (!answerers.is_empty())
                        .then(|| answerers[k % answerers.len()].local_addr());
                    Arc::new(call_targets(s, protocol, &[], answerer).await?)
                }
            };
            plans.push(Arc::new(CallPlan {
                ua,
                method,
                log,
                targets,
            }));
        }
    }
    Ok(plans)
}
