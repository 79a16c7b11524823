//! A SIP user agent: places calls (UAC) and answers them (UAS) over one transport, with
//! offer/answer, digest authentication and media through [`MediaEngine`].
//!
//! One task owns every transaction, dialog and the media client; handles talk to it over a
//! channel. Transactions are the sans-IO machines of [`crate::sip::transaction`]; this loop
//! feeds them messages and time and carries out what they ask.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::media::{MediaEngine, MediaError};
use crate::sdp::{
    LocalMedia, Negotiated, NegotiationError, Offer, SecurityConfig, Session, Verdict, plan_answer,
};
use crate::sip::auth::{Authorization, Challenge};
use crate::sip::log::MessageLog;
use crate::sip::message::{Message, Method, StartLine};
use crate::sip::tls::TlsSettings;
use crate::sip::transaction::{
    ClientTransaction, ServerTransaction, TimerValues, TxEvent, TxState,
};
use crate::sip::transport::{Flow, Protocol, SipTransport, TransportError, TransportEvent};
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::{rand_u32, token, via_header};

/// A user agent's settings.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// Our user part (`sip:<user>@<listen address>`).
    pub user: String,
    /// Signaling transport.
    pub protocol: Protocol,
    /// Listen address (port 0: any).
    pub listen: SocketAddr,
    /// TLS settings (for `Protocol::Tls`).
    pub tls: TlsSettings,
    /// SRTP policy, method, suites, codecs.
    pub security: SecurityConfig,
    /// Credentials to answer digest challenges with (user, password).
    pub credentials: Option<(String, String)>,
    /// As UAS: challenge INVITEs in this realm, accepting this password for any user.
    pub challenge: Option<(String, String)>,
    /// Transaction timers.
    pub timers: TimerValues,
    /// The SIP message log.
    pub log: MessageLog,
}

impl UaConfig {
    /// Defaults for a user on a transport.
    pub fn new(user: &str, protocol: Protocol, listen: SocketAddr) -> UaConfig {
        UaConfig {
            user: user.to_owned(),
            protocol,
            listen,
            tls: TlsSettings::default(),
            security: SecurityConfig::default(),
            credentials: None,
            challenge: None,
            timers: TimerValues::default(),
            log: MessageLog::off(),
        }
    }
}

/// Why a call failed, by cause.
#[derive(Debug, Error)]
pub enum CallError {
    /// The transport failed (TLS failures keep their own message).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The peer answered with an error status.
    #[error("rejected with {code} {reason}{}", warning.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    Rejected {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// The Warning header's text, if any.
        warning: Option<String>,
    },
    /// No final response in time (Timer B).
    #[error("no answer (transaction timeout after {0:?})")]
    Timeout(Duration),
    /// Our side refused the answer's SDP (the call was ended with BYE).
    #[error("{0}")]
    Negotiation(#[from] NegotiationError),
    /// Media could not be set up.
    #[error("{0}")]
    Media(#[from] MediaError),
    /// Digest authentication failed or could not be answered.
    #[error("authentication: {0}")]
    Auth(String),
    /// No such call.
    #[error("no call {0}")]
    NoSuchCall(String),
    /// The user agent stopped.
    #[error("the user agent stopped")]
    Stopped,
}

impl CallError {
    /// A short stable name for reports.
    pub fn cause(&self) -> String {
        match self {
            CallError::Transport(TransportError::Tls(t)) => t.cause().to_owned(),
            CallError::Transport(_) => "transport".into(),
            CallError::Rejected { code, .. } => format!("sip_{code}"),
            CallError::Timeout(_) => "timeout".into(),
            CallError::Negotiation(n) => n.cause().to_owned(),
            CallError::Media(_) => "media".into(),
            CallError::Auth(_) => "auth".into(),
            CallError::NoSuchCall(_) => "no_such_call".into(),
            CallError::Stopped => "stopped".into(),
        }
    }
}

/// A call that connected.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// Call-ID.
    pub call_id: String,
    /// The engine's stream.
    pub stream: u64,
    /// What was negotiated.
    pub negotiated: Negotiated,
    /// The encryption verdict.
    pub verdict: Verdict,
    /// INVITE to 200 OK.
    pub setup: Duration,
}

/// What the UAS side reports about calls it answered or refused.
#[derive(Clone, Debug)]
pub enum UasEvent {
    /// A call was answered.
    Answered(Box<CallInfo>),
    /// An INVITE was refused; the status and why.
    Refused {
        /// Call-ID.
        call_id: String,
        /// Status sent.
        code: u16,
        /// Why (negotiation error text).
        reason: String,
    },
    /// A call ended by BYE from the peer; final media statistics.
    Ended {
        /// Call-ID.
        call_id: String,
        /// The engine's final statistics of the stream.
        stats: Value,
    },
}

enum Cmd {
    Call {
        target: Uri,
        peer: SocketAddr,
        call_id: Option<String>,
        reply: oneshot::Sender<Result<CallInfo, CallError>>,
    },
    Hangup {
        call_id: String,
        reply: oneshot::Sender<Result<Value, CallError>>,
    },
    Stats {
        call_id: String,
        reply: oneshot::Sender<Result<Value, CallError>>,
    },
    Stop,
}

/// A handle on a running user agent.
#[derive(Clone, Debug)]
pub struct UserAgent {
    tx: mpsc::UnboundedSender<Cmd>,
    local: SocketAddr,
}

impl UserAgent {
    /// Binds the transport and starts the agent's task. UAS events (answered, refused, ended
    /// calls) come out of the returned channel.
    pub async fn start(
        cfg: UaConfig,
        media: Box<dyn MediaEngine>,
    ) -> Result<(UserAgent, mpsc::UnboundedReceiver<UasEvent>), TransportError> {
        let (transport, events) =
            SipTransport::bind(cfg.protocol, cfg.listen, &cfg.tls, cfg.log.clone()).await?;
        let local = transport.local_addr();
        let (tx, rx) = mpsc::unbounded_channel();
        let (utx, urx) = mpsc::unbounded_channel();
        let core = Core {
            cfg,
            transport,
            media,
            clients: HashMap::new(),
            servers: HashMap::new(),
            calls: HashMap::new(),
            uas_events: utx,
            session_id: u64::from(rand_u32()),
            garbage: 0,
            deadlines: BinaryHeap::new(),
        };
        tokio::spawn(core.run(rx, events));
        Ok((UserAgent { tx, local }, urx))
    }

    /// The transport's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends a command and waits for its reply.
    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, CallError>>) -> Cmd,
    ) -> Result<T, CallError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)?
    }

    /// Places a call to `target` via `peer` and waits until it connects or fails.
    pub async fn call(&self, target: Uri, peer: SocketAddr) -> Result<CallInfo, CallError> {
        self.call_as(target, peer, None).await
    }

    /// [`UserAgent::call`] with a Call-ID chosen by the caller (a load run names its calls so
    /// that a failed one's SIP messages can be found), or a fresh one.
    pub async fn call_as(
        &self,
        target: Uri,
        peer: SocketAddr,
        call_id: Option<String>,
    ) -> Result<CallInfo, CallError> {
        self.ask(|reply| Cmd::Call {
            target,
            peer,
            call_id,
            reply,
        })
        .await
    }

    /// A fresh Call-ID for [`UserAgent::call_as`].
    pub fn new_call_id(&self) -> String {
        format!("{}@{}", token(), self.local.ip())
    }

    /// Ends a call with BYE; returns the stream's final statistics.
    pub async fn hangup(&self, call_id: &str) -> Result<Value, CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::Hangup { call_id, reply }).await
    }

    /// A call's current media statistics.
    pub async fn media_stats(&self, call_id: &str) -> Result<Value, CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::Stats { call_id, reply }).await
    }

    /// Stops the agent (calls are not hung up).
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

type TxKey = (String, Method);

struct ClientEntry {
    tx: ClientTransaction,
    flow: Flow,
    call_id: String,
    /// The deadline queued in [`Core::deadlines`] for this transaction.
    armed: Option<Instant>,
}

struct ServerEntry {
    tx: ServerTransaction,
    flow: Flow,
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
/// transaction per loop turn (thousands are alive in a load run: RFC 6026 keeps INVITE
/// transactions 32 s after their 2xx).
type Deadlines = BinaryHeap<Reverse<(Instant, Side, TxKey)>>;

/// Whether a popped deadline `at` is the transaction's live one (then it is consumed);
/// stale entries of re-armed transactions are not.
fn take_due(armed: &mut Option<Instant>, at: Instant) -> bool {
    let live = *armed == Some(at);
    if live {
        *armed = None;
    }
    live
}

/// Queues a transaction's next deadline unless it is already the one queued.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    Calling,
    Confirmed,
    Ending,
}

struct Call {
    state: CallState,
    flow: Flow,
    local_tag: String,
    local_uri: NameAddr,
    remote_uri: NameAddr,
    remote_target: Uri,
    cseq: u32,
    invite: Option<Message>,
    invite_tx: Option<TxKey>,
    offer: Option<Offer>,
    negotiated: Option<Negotiated>,
    stream: Option<u64>,
    started: Instant,
    auth_tried: bool,
    waiter: Option<oneshot::Sender<Result<CallInfo, CallError>>>,
    bye_waiter: Option<oneshot::Sender<Result<Value, CallError>>>,
}

struct Core {
    cfg: UaConfig,
    transport: SipTransport,
    media: Box<dyn MediaEngine>,
    clients: HashMap<TxKey, ClientEntry>,
    servers: HashMap<TxKey, ServerEntry>,
    calls: HashMap<String, Call>,
    uas_events: mpsc::UnboundedSender<UasEvent>,
    session_id: u64,
    garbage: u64,
    deadlines: Deadlines,
}

impl Core {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<TransportEvent>,
    ) {
        loop {
            let next = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = cmds.recv() => match c {
                    None | Some(Cmd::Stop) => return,
                    Some(c) => self.command(c).await,
                },
                e = events.recv() => match e {
                    None => return,
                    Some(e) => self.transport_event(e),
                },
                () = sleep => {}
            }
            self.fire_timers(Instant::now());
        }
    }

    fn fire_timers(&mut self, now: Instant) {
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
                        && take_due(&mut c.armed, at)
                    {
                        c.tx.handle_timeout(now);
                        self.drain_client(&key);
                    }
                }
                Side::Server => {
                    if let Some(s) = self.servers.get_mut(&key)
                        && take_due(&mut s.armed, at)
                    {
                        s.tx.handle_timeout(now);
                        self.drain_server(&key);
                    }
                }
            }
        }
    }

    /// A Via with a fresh branch (RFC 3261 8.1.1.7: the magic cookie, then randomness).
    fn via(&self) -> String {
        via_header(self.cfg.protocol, self.transport.local_addr())
    }

    fn contact(&self) -> String {
        let a = self.transport.local_addr();
        let mut u = Uri::new(Some(&self.cfg.user), &a.ip().to_string(), Some(a.port()));
        if self.cfg.protocol != Protocol::Udp {
            u.set_param(
                "transport",
                Some(&self.cfg.protocol.via().to_ascii_lowercase()),
            );
        }
        format!("<{u}>")
    }

    async fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Call {
                target,
                peer,
                call_id,
                reply,
            } => {
                // Failures are reported to the caller through `reply`.
                let _ = self.start_call(target, peer, call_id, reply).await;
            }
            Cmd::Hangup { call_id, reply } => self.hangup(&call_id, reply),
            Cmd::Stats { call_id, reply } => {
                let r = match self.calls.get(&call_id).and_then(|c| c.stream) {
                    Some(s) => self.media.stats(s).map_err(CallError::from),
                    None => Err(CallError::NoSuchCall(call_id)),
                };
                let _ = reply.send(r);
            }
            Cmd::Stop => {}
        }
    }

    async fn start_call(
        &mut self,
        target: Uri,
        peer: SocketAddr,
        call_id: Option<String>,
        reply: oneshot::Sender<Result<CallInfo, CallError>>,
    ) -> Result<(), ()> {
        let started = Instant::now();
        let server_name = target.host.clone();
        let flow = match self.transport.connect(peer, &server_name).await {
            Ok(f) => f,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return Err(());
            }
        };
        let alloc = match self.media.prepare(self.cfg.security.rtcp_mux) {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return Err(());
            }
        };
        let local = LocalMedia {
            rtp: alloc.rtp,
            rtcp: alloc.rtcp,
            fingerprint: self.media.fingerprint(),
            direction: crate::sdp::Direction::SendRecv,
        };
        self.session_id += 1;
        let offer = match Offer::new(&self.cfg.security, &local, self.session_id, 1, None) {
            Ok(o) => o,
            Err(e) => {
                let _ = self.media.close(alloc.stream);
                let _ = reply.send(Err(e.into()));
                return Err(());
            }
        };
        let call_id =
            call_id.unwrap_or_else(|| format!("{}@{}", token(), self.transport.local_addr().ip()));
        let la = self.transport.local_addr();
        let mut local_uri =
            NameAddr::new(Uri::new(Some(&self.cfg.user), &la.ip().to_string(), None));
        let local_tag = token();
        local_uri.set_param("tag", Some(&local_tag));
        let remote_uri = NameAddr::new(target.clone());
        let mut inv = Message::request(Method::Invite, target.clone());
        inv.push("Via", self.via())
            .push("Max-Forwards", "70")
            .push("From", local_uri.to_string())
            .push("To", remote_uri.to_string())
            .push("Call-ID", call_id.clone())
            .push("CSeq", "1 INVITE")
            .push("Contact", self.contact())
            .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
            .push(
                "User-Agent",
                concat!("srtp-control/", env!("CARGO_PKG_VERSION")),
            );
        inv.set_body("application/sdp", offer.sdp.to_text().into_bytes());
        let call = Call {
            state: CallState::Calling,
            flow,
            local_tag,
            local_uri,
            remote_uri,
            remote_target: target,
            cseq: 1,
            invite: Some(inv.clone()),
            invite_tx: None,
            offer: Some(offer),
            negotiated: None,
            stream: Some(alloc.stream),
            started,
            auth_tried: false,
            waiter: Some(reply),
            bye_waiter: None,
        };
        self.calls.insert(call_id.clone(), call);
        self.send_request(inv, flow, &call_id);
        Ok(())
    }

    fn send_request(&mut self, req: Message, flow: Flow, call_id: &str) {
        let Some(key) = req.transaction_key() else {
            return;
        };
        let tx = ClientTransaction::new(
            req,
            self.cfg.protocol.reliable(),
            self.cfg.timers,
            Instant::now(),
        );
        if key.1 == Method::Invite
            && let Some(c) = self.calls.get_mut(call_id)
        {
            c.invite_tx = Some(key.clone());
        }
        self.clients.insert(
            key.clone(),
            ClientEntry {
                tx,
                flow,
                call_id: call_id.to_owned(),
                armed: None,
            },
        );
        self.drain_client(&key);
    }

    fn drain_client(&mut self, key: &TxKey) {
        loop {
            let Some(entry) = self.clients.get_mut(key) else {
                return;
            };
            let Some(ev) = entry.tx.poll_event() else {
                break;
            };
            let flow = entry.flow;
            let call_id = entry.call_id.clone();
            match ev {
                TxEvent::Transmit(m) => {
                    if let Err(e) = self.transport.send(&flow, &m) {
                        self.fail_call(&call_id, CallError::Transport(e));
                    }
                }
                TxEvent::Deliver(resp) => self.client_response(&call_id, key, resp),
                TxEvent::Timeout => {
                    let t = self.cfg.timers.t1 * 64;
                    if key.1 == Method::Bye {
                        self.finish_bye(&call_id, Err(CallError::Timeout(t)));
                    } else {
                        self.fail_call(&call_id, CallError::Timeout(t));
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

    fn client_response(&mut self, call_id: &str, key: &TxKey, resp: Message) {
        let code = resp.code().unwrap_or(0);
        match (&key.1, code) {
            (Method::Invite, 100..=199) => {}
            (Method::Invite, 200..=299) => self.invite_ok(call_id, resp),
            (Method::Invite, 401 | 407) => self.retry_with_auth(call_id, &resp),
            (Method::Invite, _) => {
                let warning = resp.header("Warning").map(|w| {
                    // `399 host "text"`: keep the text.
                    w.split_once('"')
                        .map_or(w, |(_, t)| t.trim_end_matches('"'))
                        .to_owned()
                });
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } => reason.clone(),
                    StartLine::Request { .. } => String::new(),
                };
                self.fail_call(
                    call_id,
                    CallError::Rejected {
                        code,
                        reason,
                        warning,
                    },
                );
            }
            (Method::Bye, 200..=699) => {
                let stats = self.release_media(call_id);
                self.finish_bye(call_id, Ok(stats));
            }
            _ => {}
        }
    }

    fn retry_with_auth(&mut self, call_id: &str, resp: &Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some((user, pass)), false) = (self.cfg.credentials.clone(), call.auth_tried) else {
            let why = if call.auth_tried {
                "credentials refused"
            } else {
                "challenged but no credentials configured"
            };
            self.fail_call(call_id, CallError::Auth(why.into()));
            return;
        };
        let (hname, aname) = if resp.code() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let ch = match Challenge::pick(
            resp.headers
                .iter()
                .filter(|h| h.name == hname)
                .map(|h| h.value.as_str()),
        ) {
            Ok(c) => c,
            Err(e) => {
                self.fail_call(call_id, CallError::Auth(e.to_string()));
                return;
            }
        };
        let Some(mut inv) = call.invite.clone() else {
            return;
        };
        let via = via_header(self.cfg.protocol, self.transport.local_addr());
        call.auth_tried = true;
        call.cseq += 1;
        let uri = match &inv.start {
            StartLine::Request { uri, .. } => uri.to_string(),
            StartLine::Response { .. } => return,
        };
        let auth = ch.respond(&user, &pass, "INVITE", &uri, &token(), 1);
        inv.set("Via", via);
        inv.set("CSeq", format!("{} INVITE", call.cseq));
        inv.set(
            if aname == "Authorization" {
                "Authorization"
            } else {
                "Proxy-Authorization"
            },
            auth,
        );
        call.invite = Some(inv.clone());
        let flow = call.flow;
        self.send_request(inv, flow, call_id);
    }

    fn invite_ok(&mut self, call_id: &str, resp: Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        // The ACK for a 2xx is its own transaction-less request (RFC 3261 13.2.2.4),
        // sent for the first 2xx and again for each retransmission.
        if let Ok(to) = resp.to() {
            call.remote_uri = to;
        }
        if let Some(c) = resp.contact() {
            call.remote_target = c.uri;
        }
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(call.cseq);
        let mut ack = Message::request(Method::Ack, call.remote_target.clone());
        let via = via_header(self.cfg.protocol, self.transport.local_addr());
        ack.push("Via", via)
            .push("Max-Forwards", "70")
            .push("From", call.local_uri.to_string())
            .push("To", call.remote_uri.to_string())
            .push("Call-ID", call_id.to_owned())
            .push("CSeq", format!("{seq} ACK"));
        let flow = call.flow;
        let first = call.state == CallState::Calling;
        let _ = self.transport.send(&flow, &ack);
        if !first {
            return;
        }
        let result = (|| -> Result<CallInfo, CallError> {
            let answer = Session::parse(&resp.body).map_err(NegotiationError::from)?;
            let offer = call.offer.as_ref().ok_or(CallError::Stopped)?;
            let n = offer.accept_answer(&answer)?;
            let stream = call.stream.ok_or(CallError::Stopped)?;
            self.media.complete(stream, &n)?;
            Ok(CallInfo {
                call_id: call_id.to_owned(),
                stream,
                verdict: Verdict::new(self.cfg.protocol == Protocol::Tls, &n),
                negotiated: n,
                setup: call.started.elapsed(),
            })
        })();
        match result {
            Ok(info) => {
                call.state = CallState::Confirmed;
                call.negotiated = Some(info.negotiated.clone());
                if let Some(w) = call.waiter.take() {
                    let _ = w.send(Ok(info));
                }
            }
            Err(e) => {
                // The dialog exists: end it with BYE, then report.
                call.state = CallState::Confirmed;
                let w = call.waiter.take();
                self.send_bye(call_id);
                if let Some(w) = w {
                    let _ = w.send(Err(e));
                }
            }
        }
    }

    fn fail_call(&mut self, call_id: &str, e: CallError) {
        let Some(mut call) = self.calls.remove(call_id) else {
            return;
        };
        if let Some(s) = call.stream.take() {
            let _ = self.media.close(s);
        }
        if let Some(w) = call.waiter.take() {
            let _ = w.send(Err(e));
        } else if let Some(w) = call.bye_waiter.take() {
            let _ = w.send(Err(e));
        }
        self.clients.retain(|_, c| c.call_id != call_id);
    }

    fn release_media(&mut self, call_id: &str) -> Value {
        let stream = self.calls.get_mut(call_id).and_then(|c| c.stream.take());
        match stream {
            Some(s) => self.media.close(s).unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    fn finish_bye(&mut self, call_id: &str, r: Result<Value, CallError>) {
        if let Some(mut call) = self.calls.remove(call_id) {
            if let Some(s) = call.stream.take() {
                let _ = self.media.close(s);
            }
            if let Some(w) = call.bye_waiter.take() {
                let _ = w.send(r);
            }
        }
    }

    fn send_bye(&mut self, call_id: &str) {
        let local_addr = self.transport.local_addr();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.state = CallState::Ending;
        call.cseq += 1;
        let mut bye = Message::request(Method::Bye, call.remote_target.clone());
        bye.push("Via", via_header(self.cfg.protocol, local_addr))
            .push("Max-Forwards", "70")
            .push("From", call.local_uri.to_string())
            .push("To", call.remote_uri.to_string())
            .push("Call-ID", call_id.to_owned())
            .push("CSeq", format!("{} BYE", call.cseq));
        let flow = call.flow;
        self.send_request(bye, flow, call_id);
    }

    fn hangup(&mut self, call_id: &str, reply: oneshot::Sender<Result<Value, CallError>>) {
        match self.calls.get_mut(call_id) {
            Some(c) if c.state == CallState::Confirmed => {
                c.bye_waiter = Some(reply);
                // Hanging up ends our media now; the stream goes on receiving until the BYE is
                // answered, so what the peer sent before it saw the BYE still arrives.
                if let Some(s) = c.stream
                    && let Err(e) = self.media.stop_sending(s)
                {
                    tracing::debug!(call_id, "could not stop media before BYE: {e}");
                }
                self.send_bye(call_id);
            }
            _ => {
                let _ = reply.send(Err(CallError::NoSuchCall(call_id.to_owned())));
            }
        }
    }

    fn transport_event(&mut self, e: TransportEvent) {
        match e {
            TransportEvent::Message { msg, flow } => {
                if msg.is_request() {
                    self.request(*msg, flow);
                } else if let Some(key) = msg.transaction_key()
                    && let Some(c) = self.clients.get_mut(&key)
                {
                    c.tx.handle_response(*msg, Instant::now());
                    self.drain_client(&key);
                }
            }
            TransportEvent::Closed { flow, error } => {
                // Every call on this connection fails with the connection's error.
                let ids: Vec<String> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.flow == flow)
                    .map(|(k, _)| k.clone())
                    .collect();
                for id in ids {
                    let e = error.clone().unwrap_or(TransportError::Closed(flow.peer()));
                    self.fail_call(&id, CallError::Transport(e));
                }
            }
            TransportEvent::Pong { .. } => {}
            TransportEvent::Garbage { peer, error } => {
                self.garbage += 1;
                tracing::debug!(%peer, "dropped a message that is not SIP: {error}");
            }
        }
    }

    fn request(&mut self, req: Message, flow: Flow) {
        if let Err(e) = req.validate() {
            // RFC 3261 8.2: answer 400 when we can, naming the problem.
            if req.top_via().is_ok() {
                let r = Message::response_to(&req, 400, &format!("Bad Request ({e})"), None);
                let _ = self.transport.send(&flow, &r);
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
            if let Some(s) = self.servers.get_mut(&key) {
                s.tx.handle_request(req, Instant::now());
                self.drain_server(&key);
            } else if let Ok(cid) = req.call_id() {
                let inv = self.calls.get(cid).and_then(|c| c.invite_tx.clone());
                if let Some(k) = inv
                    && let Some(s) = self.servers.get_mut(&k)
                {
                    s.tx.handle_request(req, Instant::now());
                    self.drain_server(&k);
                }
            }
            return;
        }
        if let Some(s) = self.servers.get_mut(&key) {
            s.tx.handle_request(req, Instant::now());
            self.drain_server(&key);
            return;
        }
        let tx = ServerTransaction::new(&req, self.cfg.protocol.reliable(), self.cfg.timers);
        self.servers.insert(
            key.clone(),
            ServerEntry {
                tx,
                flow,
                armed: None,
            },
        );
        self.drain_server(&key);
        match method {
            Method::Invite => self.incoming_invite(req, flow, key),
            Method::Bye => self.incoming_bye(&req, &key),
            Method::Options => {
                let mut r = Message::response_to(&req, 200, "OK", Some(&token()));
                r.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
                self.respond(&key, r);
            }
            Method::Cancel => self.incoming_cancel(&req, &key),
            _ => {
                let mut r = Message::response_to(&req, 405, "Method Not Allowed", Some(&token()));
                r.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
                self.respond(&key, r);
            }
        }
    }

    fn respond(&mut self, key: &TxKey, resp: Message) {
        if let Some(s) = self.servers.get_mut(key) {
            s.tx.respond(resp, Instant::now());
        }
        self.drain_server(key);
    }

    fn drain_server(&mut self, key: &TxKey) {
        loop {
            let Some(s) = self.servers.get_mut(key) else {
                return;
            };
            let Some(ev) = s.tx.poll_event() else { break };
            let flow = s.flow;
            match ev {
                TxEvent::Transmit(m) => {
                    let _ = self.transport.send(&flow, &m);
                }
                TxEvent::Deliver(ack) => {
                    if let Ok(cid) = ack.call_id()
                        && let Some(c) = self.calls.get_mut(cid)
                        && c.state == CallState::Calling
                    {
                        c.state = CallState::Confirmed;
                    }
                }
                TxEvent::Timeout => {
                    // No ACK for our 2xx (or final response): end the call (13.3.1.4).
                    let cid = self
                        .calls
                        .iter()
                        .find(|(_, c)| c.invite_tx.as_ref() == Some(key))
                        .map(|(k, _)| k.clone());
                    if let Some(cid) = cid {
                        if self.calls.get(&cid).is_some_and(|c| c.stream.is_some()) {
                            self.send_bye(&cid);
                        } else {
                            self.calls.remove(&cid);
                        }
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

    fn incoming_invite(&mut self, req: Message, flow: Flow, key: TxKey) {
        let Ok(call_id) = req.call_id().map(str::to_owned) else {
            return;
        };
        if let Ok(to) = req.to()
            && to.tag().is_some()
        {
            // A re-INVITE: answered with the current negotiation, keeping keys when the
            // peer keeps its own.
            self.reinvite(req, &key, &call_id);
            return;
        }
        if let Some((realm, password)) = self.cfg.challenge.clone() {
            let ok = req
                .header("Authorization")
                .and_then(|a| Authorization::parse(a).ok())
                .is_some_and(|a| a.realm == realm && a.verify(&password, "INVITE"));
            if !ok {
                let mut r = Message::response_to(&req, 401, "Unauthorized", Some(&token()));
                let ch = Challenge {
                    realm,
                    nonce: token(),
                    opaque: None,
                    algorithm: crate::sip::auth::Algorithm::Sha256,
                    qop_auth: true,
                    stale: false,
                };
                r.push("WWW-Authenticate", ch.to_header());
                let md5 = Challenge {
                    algorithm: crate::sip::auth::Algorithm::Md5,
                    ..ch
                };
                r.push("WWW-Authenticate", md5.to_header());
                self.respond(&key, r);
                return;
            }
        }
        let started = Instant::now();
        let local_tag = token();
        let result = (|| -> Result<(CallInfo, Message), (u16, String, String)> {
            let offer = Session::parse(&req.body).map_err(|e| {
                let e = NegotiationError::from(e);
                (400, "Bad Request".to_owned(), e.to_string())
            })?;
            let plan = plan_answer(&self.cfg.security, &offer, None).map_err(|e| {
                let (c, r) = e.sip_status();
                (c, r.to_owned(), e.to_string())
            })?;
            let alloc = self
                .media
                .open(&plan.negotiated)
                .map_err(|e| (500, "Server Internal Error".to_owned(), e.to_string()))?;
            let local = LocalMedia {
                rtp: alloc.rtp,
                rtcp: alloc.rtcp,
                fingerprint: self.media.fingerprint(),
                direction: crate::sdp::Direction::SendRecv,
            };
            self.session_id += 1;
            let answer = plan.answer_sdp(&local, self.session_id, 1).map_err(|e| {
                let _ = self.media.close(alloc.stream);
                (500, "Server Internal Error".to_owned(), e.to_string())
            })?;
            let mut ok = Message::response_to(&req, 200, "OK", Some(&local_tag));
            ok.push("Contact", self.contact())
                .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS");
            ok.set_body("application/sdp", answer.to_text().into_bytes());
            Ok((
                CallInfo {
                    call_id: call_id.clone(),
                    stream: alloc.stream,
                    verdict: Verdict::new(self.cfg.protocol == Protocol::Tls, &plan.negotiated),
                    negotiated: plan.negotiated,
                    setup: started.elapsed(),
                },
                ok,
            ))
        })();
        match result {
            Ok((info, ok)) => {
                let mut local_uri = req
                    .to()
                    .unwrap_or_else(|_| NameAddr::new(Uri::new(None, "invalid", None)));
                local_uri.set_param("tag", Some(&local_tag));
                let remote_uri = req
                    .from()
                    .unwrap_or_else(|_| NameAddr::new(Uri::new(None, "invalid", None)));
                let remote_target = req
                    .contact()
                    .map(|c| c.uri)
                    .unwrap_or_else(|| remote_uri.uri.clone());
                let ringing = Message::response_to(&req, 180, "Ringing", Some(&local_tag));
                let call = Call {
                    state: CallState::Calling,
                    flow,
                    local_tag,
                    local_uri,
                    remote_uri,
                    remote_target,
                    cseq: 0,
                    invite: None,
                    invite_tx: Some(key.clone()),
                    offer: None,
                    negotiated: Some(info.negotiated.clone()),
                    stream: Some(info.stream),
                    started,
                    auth_tried: false,
                    waiter: None,
                    bye_waiter: None,
                };
                self.calls.insert(call_id, call);
                self.respond(&key, ringing);
                self.respond(&key, ok);
                let _ = self.uas_events.send(UasEvent::Answered(Box::new(info)));
            }
            Err((code, reason, text)) => {
                let mut r = Message::response_to(&req, code, &reason, Some(&local_tag));
                let host = self.transport.local_addr().ip();
                r.push(
                    "Warning",
                    format!("399 {host} \"{}\"", text.replace('"', "'")),
                );
                self.respond(&key, r);
                let _ = self.uas_events.send(UasEvent::Refused {
                    call_id,
                    code,
                    reason: text,
                });
            }
        }
    }

    fn reinvite(&mut self, req: Message, key: &TxKey, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            let r = Message::response_to(&req, 481, "Call/Transaction Does Not Exist", None);
            self.respond(key, r);
            return;
        };
        let prev = call.negotiated.clone();
        let result = Session::parse(&req.body)
            .map_err(NegotiationError::from)
            .and_then(|offer| plan_answer(&self.cfg.security, &offer, prev.as_ref()));
        let resp = match (result, call.stream) {
            (Ok(plan), Some(stream)) => {
                let same_keys = prev.as_ref().map(|p| &p.crypto) == Some(&plan.negotiated.crypto);
                let r = if same_keys {
                    Ok(())
                } else {
                    self.media.complete(stream, &plan.negotiated)
                };
                match r {
                    Ok(()) => {
                        let stats = self.media.stats(stream).unwrap_or(Value::Null);
                        let leg = &stats["legs"][0];
                        let rtp = leg["local"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(self.transport.local_addr());
                        let local = LocalMedia {
                            rtp,
                            rtcp: None,
                            fingerprint: self.media.fingerprint(),
                            direction: crate::sdp::Direction::SendRecv,
                        };
                        self.session_id += 1;
                        match plan.answer_sdp(&local, self.session_id, 2) {
                            Ok(ans) => {
                                if let Some(c) = self.calls.get_mut(call_id) {
                                    c.negotiated = Some(plan.negotiated.clone());
                                }
                                let local_tag = self
                                    .calls
                                    .get(call_id)
                                    .map(|c| c.local_tag.clone())
                                    .unwrap_or_default();
                                let mut ok =
                                    Message::response_to(&req, 200, "OK", Some(&local_tag));
                                ok.push("Contact", self.contact());
                                ok.set_body("application/sdp", ans.to_text().into_bytes());
                                ok
                            }
                            Err(e) => Message::response_to(&req, 500, &e.to_string(), None),
                        }
                    }
                    Err(e) => Message::response_to(
                        &req,
                        500,
                        &format!("Server Internal Error ({e})"),
                        None,
                    ),
                }
            }
            (Err(e), _) => {
                let (c, r) = e.sip_status();
                let mut m = Message::response_to(&req, c, r, None);
                m.push(
                    "Warning",
                    format!(
                        "399 {} \"{}\"",
                        self.transport.local_addr().ip(),
                        e.to_string().replace('"', "'")
                    ),
                );
                m
            }
            (Ok(_), None) => {
                Message::response_to(&req, 500, "Server Internal Error (no media)", None)
            }
        };
        self.respond(key, resp);
    }

    fn incoming_bye(&mut self, req: &Message, key: &TxKey) {
        let cid = req.call_id().unwrap_or_default().to_owned();
        if self.calls.contains_key(&cid) {
            let stats = self.release_media(&cid);
            let mut call = self.calls.remove(&cid);
            let r = Message::response_to(req, 200, "OK", None);
            self.respond(key, r);
            if let Some(c) = call.as_mut()
                && let Some(w) = c.waiter.take()
            {
                let _ = w.send(Err(CallError::Rejected {
                    code: 0,
                    reason: "BYE before the call connected".into(),
                    warning: None,
                }));
            }
            let _ = self.uas_events.send(UasEvent::Ended {
                call_id: cid,
                stats,
            });
        } else {
            let r = Message::response_to(req, 481, "Call/Transaction Does Not Exist", None);
            self.respond(key, r);
        }
    }

    fn incoming_cancel(&mut self, req: &Message, key: &TxKey) {
        let inv_key = (key.0.clone(), Method::Invite);
        let pending = self
            .servers
            .get(&inv_key)
            .is_some_and(|s| s.tx.state() == TxState::Proceeding);
        let r = Message::response_to(
            req,
            if pending { 200 } else { 481 },
            if pending {
                "OK"
            } else {
                "Call/Transaction Does Not Exist"
            },
            None,
        );
        self.respond(key, r);
        if pending {
            let cid = req.call_id().unwrap_or_default().to_owned();
            let _ = self.release_media(&cid);
            self.calls.remove(&cid);
            // RFC 3261 9.2: the INVITE gets 487.
            let mut inv = req.clone();
            inv.start = StartLine::Request {
                method: Method::Invite,
                uri: Uri::new(None, "invalid", None),
            };
            inv.set(
                "CSeq",
                format!("{} INVITE", req.cseq().map(|c| c.seq).unwrap_or(1)),
            );
            let r = Message::response_to(&inv, 487, "Request Terminated", Some(&token()));
            self.respond(&inv_key, r);
        }
    }
}
