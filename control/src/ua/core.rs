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
use super::{CallError, CallInfo, Ended, EndedBy, UaConfig, UasEvent};
use crate::media::{Allocation, DtlsEvent, DtlsOutcome, MediaError, StreamRef};
use crate::register::endpoint::{self, Endpoint, Identity, Policy};
use crate::sdp::{AnswerPlan, DtlsState, Negotiated, Offer, Signaling, Verdict};
use crate::sip::message::{Message, Method, StartLine};
use crate::sip::transaction::{ClientTransaction, ServerTransaction, TxEvent, TxState};
use crate::sip::transport::{Flow, Protocol, TransportError};
use crate::sip::uri::Uri;
use crate::sip::{rand_u32, token};

/// A transaction's key: top Via branch and method.
pub(crate) type TxKey = (String, Method);

/// The methods we answer, for `Allow`.
pub(crate) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Back on the flow a request came in on (responses).
    Flow(Flow),
    /// To a next hop: on `flow` while that connection is open, else a datagram to (or a
    /// connection to) `addr`; TLS checks the certificate against `server_name`.
    Hop {
        /// A connection already used with this hop.
        flow: Option<Flow>,
        /// The hop's address.
        addr: SocketAddr,
        /// The name its TLS certificate must carry.
        server_name: String,
    },
}

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A SIP message.
    Sip(Message),
    /// An RFC 5626 CRLF ping (registration keepalive).
    Ping,
    /// A STUN Binding request over UDP (registration keepalive).
    Stun(crate::sip::stun::TransactionId),
}

/// A message for the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub to: Destination,
    /// What.
    pub payload: Payload,
}

/// Something to ask the media engine; answer with [`UaCore::handle_media`] and the same id.
#[derive(Clone, Debug)]
pub struct MediaRequest {
    /// The request's id.
    pub id: u64,
    /// What to do.
    pub op: MediaOp,
}

/// A media request (see [`crate::media::MediaEngine`] for each).
#[derive(Clone, Debug)]
pub enum MediaOp {
    /// An offerer's stream before the answer.
    Prepare,
    /// An answerer's stream.
    Open(Box<Negotiated>),
    /// Bring a stream to a negotiation (`prev`: the one in force).
    Apply {
        /// The stream.
        stream: StreamRef,
        /// The new negotiation.
        n: Box<Negotiated>,
        /// The one it replaces.
        prev: Option<Box<Negotiated>>,
    },
    /// Stop sending (a hangup, before its BYE).
    StopSending(StreamRef),
    /// Statistics.
    Stats(StreamRef),
    /// Remove the stream.
    Close(StreamRef),
}

/// A media reply.
#[derive(Clone, Debug)]
pub enum MediaDone {
    /// A stream was made.
    Allocated(Allocation),
    /// A change was applied (or sending stopped).
    Applied,
    /// Statistics (or the final ones of a closed stream).
    Stats(Option<StreamStats>),
}

/// What the owner asks of the core.
#[derive(Clone, Debug)]
pub enum Command {
    /// Place a call.
    Call {
        /// Its Call-ID.
        call_id: String,
        /// Whom to call (the Request-URI and To).
        target: Uri,
        /// Where to send the INVITE (an outbound proxy, or the target's address).
        next_hop: SocketAddr,
        /// Send the INVITE without SDP: the peer offers in its 2xx, we answer in the ACK.
        delayed_offer: bool,
    },
    /// End a call with BYE.
    Hangup {
        /// The call.
        call_id: String,
    },
    /// A call's media statistics; the answer comes as [`UaEvent::Stats`] with `token`.
    Stats {
        /// The call.
        call_id: String,
        /// Echoed in the answer.
        token: u64,
    },
    /// End everything: BYE for every call, CANCEL for unanswered ones, 503 for new ones,
    /// unregister; [`UaEvent::Idle`] when nothing is left.
    Shutdown,
}

/// What the core reports.
#[derive(Clone, Debug)]
pub enum UaEvent {
    /// One of our calls connected (media keyed as far as SDP goes).
    Connected(Box<CallInfo>),
    /// One of our calls failed before it connected.
    CallFailed {
        /// Call-ID.
        call_id: String,
        /// Why.
        error: CallError,
    },
    /// A call we placed that had connected is over.
    Ended(Box<Ended>),
    /// The answerer's side.
    Uas(UasEvent),
    /// A DTLS outcome of one of our calls.
    Dtls {
        /// Call-ID.
        call_id: String,
        /// The outcome.
        outcome: DtlsOutcome,
        /// The verdict with it.
        verdict: Box<Verdict>,
    },
    /// A [`Command::Stats`] answer.
    Stats {
        /// The command's token.
        token: u64,
        /// The statistics.
        result: Result<Option<StreamStats>, CallError>,
    },
    /// Registration progress.
    Registration(endpoint::Event),
    /// After [`Command::Shutdown`]: no call and no registration left.
    Idle,
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Caller: waiting for the engine's stream to put in the offer.
    Preparing,
    /// Caller: INVITE sent, no final answer yet.
    Calling,
    /// Answerer: waiting for the engine before answering.
    Answering,
    /// Answerer: 2xx sent, waiting for the ACK.
    Accepted,
    /// The session is set up in SIP; the engine is taking the answer.
    Completing,
    /// Set up.
    Confirmed,
    /// Our BYE is out, or the stream is being closed.
    Ending,
}

/// What to do once an `Apply` succeeds.
#[derive(Clone, Debug)]
pub(crate) enum AfterApply {
    /// A caller's answer: report the call connected.
    Connected,
    /// An answerer's delayed offer, answered in the ACK: report it answered.
    Answered,
    /// A peer's re-offer (re-INVITE or UPDATE): answer it on this transaction.
    Reanswer {
        key: TxKey,
        request: Box<Message>,
        plan: Box<AnswerPlan>,
    },
    /// Our re-offer (in a 2xx to an empty re-INVITE), answered in the ACK.
    Reanswered,
}

/// What a media reply is for.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    Prepared(String),
    Opened(String),
    Applied {
        call_id: String,
        then: AfterApply,
        prev: Option<Box<Negotiated>>,
    },
    Closed {
        call_id: String,
    },
    Stats(u64),
    /// Nothing waits for it (stopping a stream's sending, closing an orphan).
    Ignored,
}

/// One call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) uac: bool,
    pub(crate) phase: Phase,
    pub(crate) started: Instant,
    pub(crate) local_tag: String,
    /// Caller: the target and the first hop for the INVITE.
    pub(crate) target: Option<Uri>,
    pub(crate) first_hop: Option<(SocketAddr, String)>,
    /// Caller: the INVITE as last sent (digest retry, CANCEL); answerer: the INVITE received.
    pub(crate) invite: Option<Message>,
    /// The INVITE transaction (client or server) whose 2xx or ACK we wait for.
    pub(crate) invite_key: Option<TxKey>,
    pub(crate) dialog: Option<Dialog>,
    /// The connection the dialog uses (TCP/TLS), preferred for its requests.
    pub(crate) flow: Option<Flow>,
    /// An offer of ours waiting for its answer.
    pub(crate) offer: Option<Offer>,
    /// The answerer's plan before its stream exists.
    pub(crate) plan: Option<AnswerPlan>,
    pub(crate) negotiated: Option<Negotiated>,
    pub(crate) alloc: Option<Allocation>,
    pub(crate) verdict: Option<Verdict>,
    pub(crate) signaling: Signaling,
    /// SDP `o=` session id and version.
    pub(crate) sdp_session: u64,
    pub(crate) sdp_version: u64,
    pub(crate) auth_tried: bool,
    /// Caller: a provisional response came (a CANCEL may be sent).
    pub(crate) provisional: bool,
    /// Give up the call as soon as that can be done (stopping).
    pub(crate) cancel: bool,
    /// End the call once it is confirmed (stopping, a hangup during set-up).
    pub(crate) hangup_wanted: Option<EndedBy>,
    /// Caller: the ACK sent for the 2xx, sent again for each retransmission of it.
    pub(crate) ack: Option<Transmit>,
    /// A re-offer in progress (its transaction key): a second one waits.
    pub(crate) reoffer: Option<TxKey>,
    /// Why it is ending, once it is.
    pub(crate) ending: Option<EndedBy>,
    pub(crate) bye: Option<Result<(), CallError>>,
    /// Reported connected (caller) or answered (answerer), or its failure reported.
    pub(crate) reported: bool,
    /// Its failure was reported: its end is not reported again.
    pub(crate) quiet_end: bool,
    /// Caller with a delayed offer: the ACK, waiting for the answer to put in it.
    pub(crate) plan_ack: Option<Transmit>,
}

impl Call {
    pub(crate) fn new(uac: bool, phase: Phase, now: Instant, signaling: Signaling) -> Call {
        Call {
            uac,
            phase,
            started: now,
            local_tag: token(),
            target: None,
            first_hop: None,
            invite: None,
            invite_key: None,
            dialog: None,
            flow: None,
            offer: None,
            plan: None,
            negotiated: None,
            alloc: None,
            verdict: None,
            signaling,
            sdp_session: u64::from(rand_u32()),
            sdp_version: 0,
            auth_tried: false,
            provisional: false,
            cancel: false,
            hangup_wanted: None,
            ack: None,
            reoffer: None,
            ending: None,
            bye: None,
            reported: false,
            quiet_end: false,
            plan_ack: None,
        }
    }

    pub(crate) fn stream(&self) -> Option<StreamRef> {
        self.alloc.as_ref().map(|a| a.stream)
    }

    /// The next SDP version of this session (RFC 3264 8: each new offer or answer).
    pub(crate) fn next_sdp(&mut self) -> (u64, u64) {
        self.sdp_version += 1;
        (self.sdp_session, self.sdp_version)
    }
}

struct ClientEntry {
    tx: ClientTransaction,
    to: Destination,
    call_id: Option<String>,
    armed: Option<Instant>,
}

struct ServerEntry {
    tx: ServerTransaction,
    flow: Flow,
    call_id: Option<String>,
    armed: Option<Instant>,
}

/// Which transaction table a queued deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

/// Transaction deadlines, soonest first. An entry is live while it equals its transaction's
/// `armed`; entries left behind by a re-armed or removed transaction are skipped when they
/// come up, so each transaction costs O(log n) per change instead of a scan of every
/// transaction per turn (thousands are alive in a load run: RFC 6026 keeps INVITE
/// transactions 32 s after their 2xx).
type Deadlines = BinaryHeap<Reverse<(Instant, Side, TxKey)>>;

fn arm(
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
struct Registration {
    endpoint: Endpoint,
    policy: Arc<Policy>,
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
    by_stream: HashMap<u64, String>,
    clients: HashMap<TxKey, ClientEntry>,
    servers: HashMap<TxKey, ServerEntry>,
    deadlines: Deadlines,
    next_media: u64,
    pending: HashMap<u64, Pending>,
    transmits: VecDeque<Transmit>,
    media: VecDeque<MediaRequest>,
    events: VecDeque<UaEvent>,
    pub(crate) stopping: bool,
    idle_said: bool,
    registration: Option<Registration>,
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

    fn hangup(&mut self, now: Instant, call_id: &str) {
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

    fn shutdown(&mut self, now: Instant) {
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
            self.media_request(MediaOp::StopSending(s), Pending::Ignored);
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

    fn finish_call(&mut self, call_id: &str, stats: Option<StreamStats>) {
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
                self.media_request(MediaOp::Close(a.stream), Pending::Ignored);
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

    /// Starts a client transaction for `req`.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        req: Message,
        to: Destination,
        call_id: Option<&str>,
    ) {
        let Some(key) = req.transaction_key() else {
            return;
        };
        let tx = ClientTransaction::new(req, self.cfg.protocol.reliable(), self.cfg.timers, now);
        self.clients.insert(
            key.clone(),
            ClientEntry {
                tx,
                to,
                call_id: call_id.map(str::to_owned),
                armed: None,
            },
        );
        self.drain_client(now, &key);
    }

    /// The destination of a client transaction (a CANCEL goes where its INVITE went).
    pub(crate) fn client_destination(&self, key: &TxKey) -> Option<Destination> {
        self.clients.get(key).map(|c| c.to.clone())
    }

    fn drain_client(&mut self, now: Instant, key: &TxKey) {
        loop {
            let Some(entry) = self.clients.get_mut(key) else {
                return;
            };
            let Some(ev) = entry.tx.poll_event() else {
                break;
            };
            let to = entry.to.clone();
            let call_id = entry.call_id.clone();
            match ev {
                TxEvent::Transmit(m) => self.transmit(to, m),
                TxEvent::Deliver(resp) => {
                    if let Some(cid) = call_id {
                        self.on_response(now, &cid, key, resp);
                    }
                }
                TxEvent::Timeout => {
                    let t = self.cfg.timers.t1 * 64;
                    if let Some(cid) = call_id {
                        self.on_request_failed(now, &cid, key, CallError::Timeout(t));
                    }
                }
            }
        }
        match self.clients.get_mut(key) {
            Some(e) if e.tx.state() == TxState::Terminated => {
                self.clients.remove(key);
            }
            Some(e) => {
                let next = e.tx.poll_timeout();
                arm(&mut self.deadlines, &mut e.armed, next, Side::Client, key);
            }
            None => {}
        }
    }

    /// A request of ours failed (no answer, transport): the call it belongs to is told.
    fn on_request_failed(&mut self, now: Instant, call_id: &str, key: &TxKey, e: CallError) {
        match key.1 {
            Method::Bye => self.close_call(call_id, Some(Err(e))),
            Method::Invite => {
                let reinvite = self
                    .calls
                    .get(call_id)
                    .is_some_and(|c| c.invite_key.as_ref() != Some(key));
                if !reinvite {
                    self.fail_call(call_id, e);
                }
            }
            _ => {}
        }
        let _ = now;
    }

    fn on_response(&mut self, now: Instant, call_id: &str, key: &TxKey, resp: Message) {
        let code = resp.code().unwrap_or(0);
        match (&key.1, code) {
            (Method::Invite, _) => self.invite_response(now, call_id, key, resp),
            (Method::Bye, 200..=299) => self.close_call(call_id, Some(Ok(()))),
            (Method::Bye, 300..=699) => {
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } => reason.clone(),
                    StartLine::Request { .. } => String::new(),
                };
                self.close_call(call_id, Some(Err(CallError::ByeRefused { code, reason })));
            }
            _ => {}
        }
    }

    /// Starts (or continues) a server transaction for a request.
    pub(crate) fn server_transaction(
        &mut self,
        now: Instant,
        req: &Message,
        flow: Flow,
        key: &TxKey,
        call_id: Option<&str>,
    ) {
        let tx = ServerTransaction::new(req, self.cfg.protocol.reliable(), self.cfg.timers);
        self.servers.insert(
            key.clone(),
            ServerEntry {
                tx,
                flow,
                call_id: call_id.map(str::to_owned),
                armed: None,
            },
        );
        self.drain_server(now, key);
    }

    /// Whether a server transaction exists and is still waiting for our final response.
    pub(crate) fn server_open(&self, key: &TxKey) -> bool {
        self.servers
            .get(key)
            .is_some_and(|s| matches!(s.tx.state(), TxState::Trying | TxState::Proceeding))
    }

    pub(crate) fn respond(&mut self, now: Instant, key: &TxKey, resp: Message) {
        if let Some(s) = self.servers.get_mut(key) {
            s.tx.respond(resp, now);
        }
        self.drain_server(now, key);
    }

    fn drain_server(&mut self, now: Instant, key: &TxKey) {
        loop {
            let Some(s) = self.servers.get_mut(key) else {
                return;
            };
            let Some(ev) = s.tx.poll_event() else { break };
            let flow = s.flow;
            let call_id = s.call_id.clone();
            match ev {
                TxEvent::Transmit(m) => self.transmit(Destination::Flow(flow), m),
                TxEvent::Deliver(ack) => {
                    if let Some(cid) = call_id {
                        self.on_ack(now, &cid, ack);
                    }
                }
                TxEvent::Timeout => {
                    if let Some(cid) = call_id {
                        self.on_no_ack(now, &cid, key);
                    }
                }
            }
        }
        match self.servers.get_mut(key) {
            Some(s) if s.tx.state() == TxState::Terminated => {
                self.servers.remove(key);
            }
            Some(s) => {
                let next = s.tx.poll_timeout();
                arm(&mut self.deadlines, &mut s.armed, next, Side::Server, key);
            }
            None => {}
        }
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, side, key))) = self.deadlines.pop() else {
                break;
            };
            match side {
                Side::Client => {
                    if let Some(c) = self.clients.get_mut(&key)
                        && c.armed == Some(at)
                    {
                        c.armed = None;
                        c.tx.handle_timeout(now);
                        self.drain_client(now, &key);
                    }
                }
                Side::Server => {
                    if let Some(s) = self.servers.get_mut(&key)
                        && s.armed == Some(at)
                    {
                        s.armed = None;
                        s.tx.handle_timeout(now);
                        self.drain_server(now, &key);
                    }
                }
            }
        }
        if let Some(r) = &mut self.registration
            && r.endpoint.poll_timeout().is_some_and(|t| t <= now)
        {
            r.endpoint.handle_timeout(now);
            self.drain_registration();
        }
        self.check_idle();
    }

    // ---- the transport ----------------------------------------------------------------

    /// A message came in on `flow`.
    pub fn handle_message(&mut self, now: Instant, msg: Message, flow: Flow) {
        if msg.is_request() {
            self.request(now, msg, flow);
        } else {
            self.response(now, msg, flow);
        }
        self.check_idle();
    }

    fn response(&mut self, now: Instant, msg: Message, flow: Flow) {
        if let Some(r) = &mut self.registration
            && msg
                .call_id()
                .is_ok_and(|c| c.starts_with(r.endpoint.call_id_base()))
        {
            r.endpoint.handle_response(now, msg);
            self.drain_registration();
            return;
        }
        let Some(key) = msg.transaction_key() else {
            return;
        };
        if let Some(c) = self.clients.get_mut(&key) {
            if let Some(cid) = &c.call_id
                && let Some(call) = self.calls.get_mut(cid)
                && self.cfg.protocol.reliable()
            {
                call.flow = Some(flow);
            }
            c.tx.handle_response(msg, now);
            self.drain_client(now, &key);
        }
    }

    fn request(&mut self, now: Instant, req: Message, flow: Flow) {
        if let Err(e) = req.validate() {
            // RFC 3261 8.2: answer 400 when we can, naming the problem.
            if req.top_via().is_ok() {
                let r = Message::response_to(&req, 400, &format!("Bad Request ({e})"), None);
                self.transmit(Destination::Flow(flow), r);
            }
            return;
        }
        let Some(key) = req.transaction_key() else {
            return;
        };
        let method = req.method().unwrap_or(Method::Ack);
        if method == Method::Ack {
            // An ACK for a non-2xx matches its INVITE's server transaction; an ACK for a 2xx
            // carries a new branch and is matched by dialog.
            let k = if self.servers.contains_key(&key) {
                Some(key)
            } else {
                req.call_id()
                    .ok()
                    .and_then(|cid| self.calls.get(cid))
                    .and_then(|c| c.invite_key.clone())
            };
            if let Some(k) = k
                && let Some(s) = self.servers.get_mut(&k)
            {
                s.tx.handle_request(req, now);
                self.drain_server(now, &k);
            }
            return;
        }
        if let Some(s) = self.servers.get_mut(&key) {
            // A retransmission: the transaction repeats its last response.
            s.tx.handle_request(req, now);
            self.drain_server(now, &key);
            return;
        }
        let call_id = req.call_id().ok().map(str::to_owned);
        self.server_transaction(now, &req, flow, &key, call_id.as_deref());
        let in_dialog = req.to().ok().and_then(|t| t.tag().map(str::to_owned));
        match (method, in_dialog) {
            (Method::Invite, None) => self.incoming_invite(now, req, flow, key),
            (Method::Cancel, _) => self.incoming_cancel(now, &req, &key),
            (Method::Options, None) => {
                let mut r = Message::response_to(&req, 200, "OK", Some(&token()));
                r.push("Allow", ALLOW).push("Accept", "application/sdp");
                self.respond(now, &key, r);
            }
            (_, Some(tag)) => self.in_dialog(now, req, flow, key, &tag),
            (_, None) => {
                let mut r = Message::response_to(&req, 405, "Method Not Allowed", Some(&token()));
                r.push("Allow", ALLOW);
                self.respond(now, &key, r);
            }
        }
    }

    /// A connection closed. Requests waiting on it fail; dialogs forget it (their next
    /// request opens a new one).
    pub fn handle_closed(&mut self, now: Instant, flow: Flow, error: Option<TransportError>) {
        for call in self.calls.values_mut() {
            if call.flow == Some(flow) {
                call.flow = None;
            }
        }
        let waiting: Vec<(TxKey, String)> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                matches!(&c.to, Destination::Hop { flow: Some(f), .. } if *f == flow)
                    || matches!(&c.to, Destination::Hop { addr, flow: None, .. } if *addr == flow.peer())
            })
            .filter(|(_, c)| matches!(c.tx.state(), TxState::Calling | TxState::Trying | TxState::Proceeding))
            .filter_map(|(k, c)| c.call_id.clone().map(|cid| (k.clone(), cid)))
            .collect();
        for (key, cid) in waiting {
            let e = error.clone().unwrap_or(TransportError::Closed(flow.peer()));
            self.clients.remove(&key);
            self.on_request_failed(now, &cid, &key, CallError::Transport(e));
        }
        if let Some(r) = &mut self.registration
            && let Some(i) = r
                .policy
                .registrars
                .iter()
                .position(|s| s.addr == flow.peer())
        {
            r.endpoint.handle_flow_failed(now, i);
            self.drain_registration();
        }
        self.check_idle();
    }

    /// A message for `addr` could not be sent (a connection or TLS handshake failed).
    pub fn handle_send_failed(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        msg: &Message,
        error: TransportError,
    ) {
        if let Some(r) = &mut self.registration
            && msg
                .call_id()
                .is_ok_and(|c| c.starts_with(r.endpoint.call_id_base()))
        {
            if let Some(i) =
                (0..r.policy.registrars.len()).find(|&i| r.policy.next_hop(i).0 == addr)
            {
                tracing::warn!("registrar {}: {error}", r.policy.registrars[i].name);
                r.endpoint.handle_flow_failed(now, i);
            }
            self.drain_registration();
            return;
        }
        if !msg.is_request() {
            return;
        }
        let Some(key) = msg.transaction_key() else {
            return;
        };
        if let Some(c) = self.clients.remove(&key)
            && let Some(cid) = c.call_id
        {
            self.on_request_failed(now, &cid, &key, CallError::Transport(error));
        }
        self.check_idle();
    }

    /// An RFC 5626 pong came on a connection.
    pub fn handle_pong(&mut self, now: Instant, flow: Flow) {
        if let Some(r) = &mut self.registration
            && let Some(i) = r
                .policy
                .registrars
                .iter()
                .position(|s| s.addr == flow.peer())
        {
            r.endpoint.handle_pong(now, i);
            self.drain_registration();
        }
    }

    /// A STUN Binding success arrived (a registration keepalive's answer).
    pub fn handle_stun(&mut self, now: Instant, id: &crate::sip::stun::TransactionId) {
        if let Some(r) = &mut self.registration {
            r.endpoint.handle_stun(now, id);
            self.drain_registration();
        }
    }

    /// Something that is not SIP arrived.
    pub fn handle_garbage(&mut self) {
        self.counters.garbage += 1;
    }

    fn drain_registration(&mut self) {
        let Some(r) = &mut self.registration else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = r.endpoint.poll_transmit() {
            let (addr, name) = r.policy.next_hop(t.registrar);
            let to = Destination::Hop {
                flow: None,
                addr,
                server_name: name.to_owned(),
            };
            out.push(Transmit {
                to,
                payload: match t.payload {
                    endpoint::Payload::Sip(m) => Payload::Sip(m),
                    endpoint::Payload::Ping => Payload::Ping,
                    endpoint::Payload::Stun(id) => Payload::Stun(id),
                },
            });
        }
        let mut events = Vec::new();
        while let Some(e) = r.endpoint.poll_event() {
            events.push(e);
        }
        self.transmits.extend(out);
        for e in events {
            self.event(UaEvent::Registration(e));
        }
    }
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
