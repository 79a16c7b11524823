//! The user agent's core, sans-IO (as `register/endpoint.rs` and the transactions are): the
//! owner calls `handle_*(now, ..)` with commands, received messages, media replies and engine
//! events, then drains [`UaCore::poll_transmit`], [`UaCore::poll_media`] and
//! [`UaCore::poll_event`], and calls [`UaCore::handle_timeout`] when
//! [`UaCore::poll_timeout`] comes. The core never reads the clock, never blocks and never
//! touches a socket or the engine.
//!
//! Media requests are answered asynchronously ([`UaCore::handle_media`] with the request's
//! id), so the engine's blocking control socket stays off the signaling task.
//!
//! The caller's side lives in `uac.rs`, the answerer's (and requests inside a dialog) in
//! `uas.rs`; this file holds the state, the transaction plumbing and the shutdown.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp_engine::model::StreamStats;

use super::dialog::{Dialog, next_hop_addr};
use super::model::{CallError, Ended, EndedBy, UaConfig, UasEvent};
use crate::media::{Allocation, DtlsEvent, DtlsOutcome, MediaError};
use crate::register::endpoint::{Endpoint, Identity, Policy};
use crate::sdp::DtlsState;
use crate::sip::message::{Message, Method, StartLine};
use crate::sip::transaction::{ClientTransaction, ServerTransaction};
use crate::sip::transport::{Flow, Protocol};
use crate::sip::uri::Uri;

pub(crate) use super::call::{AfterApply, Call, Pending, Phase};
pub(crate) use super::io::{ALLOW, TxKey};
pub use super::io::{
    Command, Destination, MediaDone, MediaOp, MediaRequest, Payload, Transmit, UaEvent,
};

pub(super) struct ClientEntry {
    pub(super) tx: ClientTransaction,
    pub(super) to: Destination,
    pub(super) call_id: Option<String>,
    pub(super) armed: Option<Instant>,
}

pub(super) struct ServerEntry {
    pub(super) tx: ServerTransaction,
    pub(super) flow: Flow,
    pub(super) call_id: Option<String>,
    pub(super) armed: Option<Instant>,
}

/// Which transaction table a queued deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Side {
    Client,
    Server,
}

/// Transaction deadlines, soonest first. An entry is live while it equals its transaction's
/// `armed`; entries left behind by a re-armed or removed transaction are skipped when they
/// come up, so each transaction costs O(log n) per change instead of a scan of every
/// transaction per turn (thousands are alive in a load run: RFC 6026 keeps INVITE
/// transactions 32 s after their 2xx).
pub(super) type Deadlines = BinaryHeap<Reverse<(Instant, Side, TxKey)>>;

pub(super) fn arm(
    deadlines: &mut Deadlines,
    armed: &mut Option<Instant>,
    next: Option<Instant>,
    side: Side,
    key: &TxKey,
) {
    if let Some(at) = next
        && next != *armed
    {
        *armed = next;
        deadlines.push(Reverse((at, side, key.clone())));
    }
}

/// Registration with the agent's registrars.
pub(super) struct Registration {
    pub(super) endpoint: Endpoint,
    pub(super) policy: Arc<Policy>,
}

/// Counters for the owner's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Datagrams or stream bytes that were not SIP.
    pub garbage: u64,
    /// INVITEs refused with 503 while stopping.
    pub refused_stopping: u64,
    /// BYEs we sent.
    pub byes_sent: u64,
    /// CANCELs we sent.
    pub cancels_sent: u64,
}

/// The sans-IO user agent.
pub struct UaCore {
    pub(crate) cfg: UaConfig,
    pub(crate) local: SocketAddr,
    pub(crate) calls: HashMap<String, Call>,
    pub(super) by_stream: HashMap<u64, String>,
    pub(super) clients: HashMap<TxKey, ClientEntry>,
    pub(super) servers: HashMap<TxKey, ServerEntry>,
    pub(super) deadlines: Deadlines,
    pub(super) next_media: u64,
    pub(super) pending: HashMap<u64, Pending>,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) media: VecDeque<MediaRequest>,
    pub(super) events: VecDeque<UaEvent>,
    pub(crate) stopping: bool,
    pub(super) idle_said: bool,
    pub(super) registration: Option<Registration>,
    pub(crate) counters: CoreCounters,
}

impl std::fmt::Debug for UaCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaCore")
            .field("local", &self.local)
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl UaCore {
    /// A core for an agent whose transport is bound at `local`.
    pub fn new(cfg: UaConfig, local: SocketAddr, now: Instant) -> UaCore {
        let registration = cfg.register.as_ref().map(|r| {
            let mut policy = Policy::new(r.registrars.clone(), cfg.protocol, local);
            policy.expires = r.expires;
            policy.timers = cfg.timers;
            policy.spread_refreshes = false;
            let policy = Arc::new(policy);
            let id = Identity {
                user: cfg.user.clone(),
                auth: cfg
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.clone(), zeroize::Zeroizing::new(p.clone()))),
            };
            Registration {
                endpoint: Endpoint::new(policy.clone(), id, now, now, 0.0),
                policy,
            }
        });
        let mut core = UaCore {
            cfg,
            local,
            calls: HashMap::new(),
            by_stream: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_media: 1,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            media: VecDeque::new(),
            events: VecDeque::new(),
            stopping: false,
            idle_said: false,
            registration,
            counters: CoreCounters::default(),
        };
        core.drain_registration();
        core
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next media request.
    pub fn poll_media(&mut self) -> Option<MediaRequest> {
        self.media.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// When [`UaCore::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
        let reg = self
            .registration
            .as_ref()
            .and_then(|r| r.endpoint.poll_timeout());
        match (tx, reg) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Calls alive now.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// A call's dialog, once it has one.
    pub fn dialog(&self, call_id: &str) -> Option<&Dialog> {
        self.calls.get(call_id)?.dialog.as_ref()
    }

    /// The counters.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// Whether the agent holds a registration now.
    pub fn registered(&self, now: Instant) -> Option<String> {
        let r = self.registration.as_ref()?;
        let i = r.endpoint.registered_with(now)?;
        Some(r.policy.registrars[i].name.clone())
    }

    pub(crate) fn event(&mut self, e: UaEvent) {
        self.events.push_back(e);
    }

    pub(crate) fn transmits_push(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    pub(crate) fn transmit(&mut self, to: Destination, msg: Message) {
        self.transmits.push_back(Transmit {
            to,
            payload: Payload::Sip(msg),
        });
    }

    pub(crate) fn media_request(&mut self, op: MediaOp, then: Pending) {
        let id = self.next_media;
        self.next_media += 1;
        self.pending.insert(id, then);
        self.media.push_back(MediaRequest { id, op });
    }

    /// The Contact of our requests and 2xx responses.
    pub(crate) fn contact(&self) -> String {
        let a = self.local;
        let mut u = Uri::new(Some(&self.cfg.user), &a.ip().to_string(), Some(a.port()));
        if self.cfg.protocol != Protocol::Udp {
            u.set_param(
                "transport",
                Some(&self.cfg.protocol.via().to_ascii_lowercase()),
            );
        }
        format!("<{u}>")
    }

    /// Where a request inside a call's dialog goes: its connection while open, else the
    /// next hop's address (or, for a host name, the hop the call began with).
    pub(crate) fn hop(&self, call: &Call, next_hop: &Uri) -> Option<Destination> {
        let addr = next_hop_addr(next_hop, self.cfg.protocol)
            .or(call.first_hop.as_ref().map(|h| h.0))
            .or(call.flow.map(|f| f.peer()))?;
        Some(Destination::Hop {
            flow: call.flow.filter(|_| self.cfg.protocol.reliable()),
            addr,
            server_name: next_hop.host.clone(),
        })
    }

    // ---- commands --------------------------------------------------------------------

    /// A command from the owner.
    pub fn handle_command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Call {
                call_id,
                target,
                next_hop,
                delayed_offer,
            } => self.start_call(now, call_id, target, next_hop, delayed_offer),
            Command::Hangup { call_id } => self.hangup(now, &call_id),
            Command::Stats { call_id, token } => {
                match self.calls.get(&call_id).and_then(Call::stream) {
                    Some(s) => self.media_request(MediaOp::Stats(s), Pending::Stats(token)),
                    None => self.event(UaEvent::Stats {
                        token,
                        result: Err(CallError::NoSuchCall(call_id)),
                    }),
                }
            }
            Command::Shutdown => self.shutdown(now),
        }
        self.check_idle();
    }

    pub(super) fn hangup(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            self.event(UaEvent::Ended(Box::new(Ended {
                call_id: call_id.to_owned(),
                by: EndedBy::Hangup,
                stats: None,
                bye: Some(Err(CallError::NoSuchCall(call_id.to_owned()))),
            })));
            return;
        };
        match call.phase {
            Phase::Confirmed => self.end_call(now, call_id, EndedBy::Hangup),
            Phase::Ending => {}
            Phase::Completing | Phase::Accepted => call.hangup_wanted = Some(EndedBy::Hangup),
            Phase::Preparing | Phase::Calling | Phase::Answering => {
                call.cancel = true;
                call.hangup_wanted = Some(EndedBy::Hangup);
                if call.phase == Phase::Calling && call.provisional {
                    self.send_cancel(now, call_id);
                }
            }
        }
    }

    pub(super) fn shutdown(&mut self, now: Instant) {
        self.stopping = true;
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            match call.phase {
                Phase::Confirmed => self.end_call(now, &id, EndedBy::Shutdown),
                Phase::Ending => {}
                Phase::Completing | Phase::Accepted => {
                    call.hangup_wanted = Some(EndedBy::Shutdown);
                }
                Phase::Preparing | Phase::Answering => call.cancel = true,
                Phase::Calling => {
                    call.cancel = true;
                    if call.provisional {
                        self.send_cancel(now, &id);
                    }
                }
            }
        }
        if let Some(r) = &mut self.registration {
            r.endpoint.stop(now);
        }
        self.drain_registration();
    }

    pub(crate) fn check_idle(&mut self) {
        let registered = self
            .registration
            .as_ref()
            .is_some_and(|r| !r.endpoint.is_idle());
        if self.stopping
            && !self.idle_said
            && self.calls.is_empty()
            && !registered
            && self.pending.values().all(|p| matches!(p, Pending::Ignored))
        {
            self.idle_said = true;
            self.event(UaEvent::Idle);
        }
    }

    // ---- the end of a call ----------------------------------------------------------

    /// Ends a set-up call with BYE (its media stops sending first); the stream is closed
    /// when the BYE is answered.
    pub(crate) fn end_call(&mut self, now: Instant, call_id: &str, by: EndedBy) {
        let protocol = self.cfg.protocol;
        let local = self.local;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        call.phase = Phase::Ending;
        call.ending = Some(by);
        let stream = call.stream();
        let routed = call
            .dialog
            .as_mut()
            .map(|d| d.request(Method::Bye, protocol, local));
        if let Some(s) = stream {
            self.media_request(MediaOp::Sending(s, false), Pending::Ignored);
        }
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        match routed.and_then(|r| self.hop(call, &r.next_hop).map(|to| (r.msg, to))) {
            Some((mut bye, to)) => {
                bye.push("User-Agent", user_agent());
                self.counters.byes_sent += 1;
                self.send_request(now, bye, to, Some(call_id));
            }
            None => self.close_call(call_id, None),
        }
    }

    /// Closes a call's stream (its final statistics come with [`Ended`]) and forgets it.
    pub(crate) fn close_call(&mut self, call_id: &str, bye: Option<Result<(), CallError>>) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.phase = Phase::Ending;
        if bye.is_some() {
            call.bye = bye;
        }
        if call.ending.is_none() {
            call.ending = Some(EndedBy::Peer);
        }
        match call.alloc.take() {
            Some(a) => {
                self.by_stream.remove(&a.stream.id);
                self.media_request(
                    MediaOp::Close(a.stream),
                    Pending::Closed {
                        call_id: call_id.to_owned(),
                    },
                );
            }
            None => self.finish_call(call_id, None),
        }
    }

    pub(super) fn finish_call(&mut self, call_id: &str, stats: Option<StreamStats>) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        self.clients.retain(|_, c| {
            c.call_id.as_deref() != Some(call_id) || c.tx.request().method() == Some(Method::Bye)
        });
        let ended = Ended {
            call_id: call_id.to_owned(),
            by: call.ending.unwrap_or(EndedBy::Peer),
            stats,
            bye: call.bye,
        };
        if !call.reported || call.quiet_end {
            // A call that never connected ends as a failure (reported where it failed).
            return;
        }
        if call.uac {
            self.event(UaEvent::Ended(Box::new(ended)));
        } else {
            self.event(UaEvent::Uas(UasEvent::Ended {
                call_id: ended.call_id,
                stats: ended.stats,
                by: ended.by,
                bye: ended.bye,
            }));
        }
    }

    /// A call that had not been set up is over: its stream closed, nothing reported (the
    /// failure was).
    pub(crate) fn drop_call(&mut self, call_id: &str) {
        if let Some(mut call) = self.calls.remove(call_id) {
            if let Some(a) = call.alloc.take() {
                self.by_stream.remove(&a.stream.id);
                let then = if call.uac {
                    Pending::Ignored
                } else {
                    Pending::Released {
                        call_id: call_id.to_owned(),
                    }
                };
                self.media_request(MediaOp::Close(a.stream), then);
            }
            self.clients
                .retain(|_, c| c.call_id.as_deref() != Some(call_id));
        }
    }

    pub(crate) fn fail_call(&mut self, call_id: &str, error: CallError) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.uac && !call.reported {
            self.event(UaEvent::CallFailed {
                call_id: call_id.to_owned(),
                error,
            });
        } else if !call.uac && !call.reported {
            self.event(UaEvent::Uas(UasEvent::Failed {
                call_id: call_id.to_owned(),
                error,
            }));
        }
        self.drop_call(call_id);
    }

    pub(crate) fn remember_stream(&mut self, call_id: &str, a: &Allocation) {
        self.by_stream.insert(a.stream.id, call_id.to_owned());
    }

    // ---- media replies ----------------------------------------------------------------

    /// The engine's answer to a [`MediaRequest`].
    pub fn handle_media(&mut self, now: Instant, id: u64, result: Result<MediaDone, MediaError>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        match p {
            Pending::Prepared(call_id) => {
                let r = result.and_then(|d| match d {
                    MediaDone::Allocated(a) => Ok(a),
                    _ => Err(MediaError::Engine("create gave no stream".into())),
                });
                self.on_prepared(now, &call_id, r);
            }
            Pending::Opened(call_id) => {
                let r = result.and_then(|d| match d {
                    MediaDone::Allocated(a) => Ok(a),
                    _ => Err(MediaError::Engine("create gave no stream".into())),
                });
                self.on_opened(now, &call_id, r);
            }
            Pending::Applied {
                call_id,
                then,
                prev,
            } => self.on_applied(now, &call_id, then, prev, result.map(|_| ())),
            Pending::Closed { call_id } => {
                let stats = match result {
                    Ok(MediaDone::Stats(v)) => v,
                    _ => None,
                };
                self.finish_call(&call_id, stats);
            }
            Pending::Released { call_id } => {
                if let Ok(MediaDone::Stats(stats)) = result {
                    self.event(UaEvent::Uas(UasEvent::Released { call_id, stats }));
                }
            }
            Pending::Stats(token) => self.event(UaEvent::Stats {
                token,
                result: match result {
                    Ok(MediaDone::Stats(v)) => Ok(v),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e.into()),
                },
            }),
            Pending::Ignored => {
                if let Err(e) = result {
                    tracing::debug!("media request {id}: {e}");
                }
            }
        }
        self.check_idle();
    }

    /// The media engine went away: every stream went with it. Calls that had one are ended
    /// by name (BYE; set-up ones fail), rather than left up with no media.
    pub fn handle_engine_lost(&mut self, now: Instant) {
        self.by_stream.clear();
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.alloc.take().is_none() {
                continue;
            }
            let why = "the media engine went away: this call's stream is gone".to_owned();
            match call.phase {
                Phase::Confirmed => self.end_call(now, &id, EndedBy::Failure(why)),
                Phase::Ending => {}
                Phase::Accepted | Phase::Completing => {
                    call.hangup_wanted = Some(EndedBy::Failure(why));
                }
                Phase::Preparing | Phase::Calling | Phase::Answering => {
                    call.cancel = true;
                    self.fail_call(&id, CallError::Media(MediaError::EngineRestarted));
                }
            }
        }
        self.check_idle();
    }

    /// An engine event: a DTLS outcome updates its call's verdict.
    pub fn handle_dtls(&mut self, _now: Instant, e: DtlsEvent) {
        if e.rtcp {
            return;
        }
        let Some(call_id) = self.by_stream.get(&e.stream).cloned() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(v) = call.verdict.as_mut() else {
            return;
        };
        v.set_dtls(match &e.outcome {
            DtlsOutcome::Established { suite, .. } => DtlsState::Established { suite: *suite },
            DtlsOutcome::Failed { .. } => DtlsState::Failed {
                reason: e.outcome.reason().unwrap_or_default(),
            },
        });
        let verdict = Box::new(v.clone());
        let uac = call.uac;
        self.event(if uac {
            UaEvent::Dtls {
                call_id,
                outcome: e.outcome,
                verdict,
            }
        } else {
            UaEvent::Uas(UasEvent::Dtls {
                call_id,
                outcome: e.outcome,
                verdict,
            })
        });
    }

    // ---- transactions -----------------------------------------------------------------
}

/// Our `User-Agent` and `Server` value.
pub(crate) fn user_agent() -> &'static str {
    concat!("srtp-control/", env!("CARGO_PKG_VERSION"))
}

/// The text of a response's Warning (`399 host "text"`), if any.
pub(crate) fn warning_text(resp: &Message) -> Option<String> {
    resp.header("Warning").map(|w| {
        w.split_once('"')
            .map_or(w, |(_, t)| t.trim_end_matches('"'))
            .to_owned()
    })
}

/// A response's reason phrase.
pub(crate) fn reason_phrase(resp: &Message) -> String {
    match &resp.start {
        StartLine::Response { reason, .. } => reason.clone(),
        StartLine::Request { .. } => String::new(),
    }
}

/// How long after the 2xx an answerer's call may wait for the engine to take the ACK's
/// answer before the setup is counted.
pub(crate) fn setup_time(call: &Call, now: Instant) -> Duration {
    now.saturating_duration_since(call.started)
}
