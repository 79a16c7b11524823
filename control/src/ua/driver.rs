//! The tokio driver of [`UaCore`]: one task owns the core and carries out what it asks. SIP
//! goes out on the transport (connections to next hops opened on demand and reused; a closed
//! one is reopened), media requests go to a thread of their own (the engine's control
//! socket blocks), and replies, messages, DTLS events and timers come back into the core.
//! [`UserAgent`] is the handle: commands in, results out through one-shot replies, and the
//! events nobody asked for (answered, refused, ended, re-offers) on a channel.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use srtp_engine::model::StreamStats;
use tokio::sync::{mpsc, oneshot};

use super::core::{
    Command, CoreCounters, Destination, MediaDone, MediaOp, MediaRequest, Payload, Transmit,
    UaCore, UaEvent,
};
use super::model::{CallError, CallInfo, Ended, UaConfig, UasEvent};
use crate::media::{DtlsOutcome, EngineEvent, MediaEngine, MediaError};
use crate::sdp::Verdict;
use crate::sip::message::Message;
use crate::sip::token;
use crate::sip::transport::{Flow, Protocol, SipTransport, TransportError, TransportEvent};
use crate::sip::uri::Uri;

/// How to place a call.
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Whom to call.
    pub target: Uri,
    /// Where to send the INVITE.
    pub next_hop: SocketAddr,
    /// A Call-ID of the caller's choosing (a load run names its calls), or a fresh one.
    pub call_id: Option<String>,
    /// INVITE without SDP (the peer offers in its 2xx, we answer in the ACK).
    pub delayed_offer: bool,
}

/// What a graceful stop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// The core's counters at the end (BYEs and CANCELs sent, INVITEs refused).
    pub counters: CoreCounters,
    /// Calls still alive when the stop gave up waiting (0 when it finished).
    pub calls_left: usize,
}

enum Cmd {
    Call {
        opts: CallOptions,
        call_id: String,
        reply: oneshot::Sender<Result<CallInfo, CallError>>,
    },
    Hangup {
        call_id: String,
        reply: oneshot::Sender<Ended>,
    },
    Stats {
        call_id: String,
        reply: oneshot::Sender<Result<Option<StreamStats>, CallError>>,
    },
    WaitEnd {
        call_id: String,
        reply: oneshot::Sender<Ended>,
    },
    Dtls {
        call_id: String,
        reply: oneshot::Sender<(DtlsOutcome, Verdict)>,
    },
    Shutdown {
        reply: oneshot::Sender<ShutdownSummary>,
    },
    Stop,
}

/// A handle on a running user agent.
#[derive(Clone, Debug)]
pub struct UserAgent {
    tx: mpsc::UnboundedSender<Cmd>,
    local: SocketAddr,
    reconnects: Arc<AtomicU64>,
}

impl UserAgent {
    /// Binds the transport and starts the agent. Events nobody asked for (calls answered,
    /// refused, ended by the peer, re-offers, DTLS outcomes of answered calls) come out of the
    /// returned channel.
    pub async fn start(
        cfg: UaConfig,
        media: Box<dyn MediaEngine>,
    ) -> Result<(UserAgent, mpsc::UnboundedReceiver<UasEvent>), TransportError> {
        UserAgent::start_with_events(cfg, media, None).await
    }

    /// [`UserAgent::start`] with the engine watcher's events (see
    /// [`crate::media::engine_events`]): DTLS outcomes update the verdict of the call they
    /// belong to, and an engine that goes away ends the calls whose streams went with it.
    pub async fn start_with_events(
        cfg: UaConfig,
        media: Box<dyn MediaEngine>,
        dtls: Option<mpsc::UnboundedReceiver<EngineEvent>>,
    ) -> Result<(UserAgent, mpsc::UnboundedReceiver<UasEvent>), TransportError> {
        let (transport, events) =
            SipTransport::bind(cfg.protocol, cfg.listen, &cfg.tls, cfg.log.clone()).await?;
        let local = transport.local_addr();
        let protocol = cfg.protocol;
        let core = UaCore::new(cfg, local, Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        let (utx, urx) = mpsc::unbounded_channel();
        let reconnects = Arc::new(AtomicU64::new(0));
        let (media_tx, media_rx) = media_thread(media, reconnects.clone());
        let driver = Driver {
            core,
            transport,
            protocol,
            conns: HashMap::new(),
            connecting: HashMap::new(),
            uas: utx,
            calls: HashMap::new(),
            hangups: HashMap::new(),
            end_waiters: HashMap::new(),
            ended: Bounded::default(),
            stats: HashMap::new(),
            next_token: 1,
            dtls_waiters: HashMap::new(),
            dtls_seen: Bounded::default(),
            shutdown: Vec::new(),
            media_tx,
        };
        tokio::spawn(driver.run(rx, events, media_rx, dtls));
        Ok((
            UserAgent {
                tx,
                local,
                reconnects,
            },
            urx,
        ))
    }

    /// The transport's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Times the media client reconnected to a restarted engine.
    pub fn engine_reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, CallError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)
    }

    /// Places a call to `target` via `peer` and waits until it connects or fails.
    pub async fn call(&self, target: Uri, peer: SocketAddr) -> Result<CallInfo, CallError> {
        self.call_as(target, peer, None).await
    }

    /// [`UserAgent::call`] with a Call-ID chosen by the caller, or a fresh one.
    pub async fn call_as(
        &self,
        target: Uri,
        peer: SocketAddr,
        call_id: Option<String>,
    ) -> Result<CallInfo, CallError> {
        self.call_with(CallOptions {
            target,
            next_hop: peer,
            call_id,
            delayed_offer: false,
        })
        .await
    }

    /// Places a call with every option.
    pub async fn call_with(&self, opts: CallOptions) -> Result<CallInfo, CallError> {
        let call_id = opts.call_id.clone().unwrap_or_else(|| self.new_call_id());
        self.ask(|reply| Cmd::Call {
            opts,
            call_id,
            reply,
        })
        .await?
    }

    /// A fresh Call-ID.
    pub fn new_call_id(&self) -> String {
        format!("{}@{}", token(), self.local.ip())
    }

    /// Ends a call with BYE (or returns how the peer ended it). `Ended::bye` says whether
    /// the far end confirmed; the stream's final statistics are in `Ended::stats`.
    pub async fn hangup(&self, call_id: &str) -> Result<Ended, CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::Hangup { call_id, reply }).await
    }

    /// Waits until a call of ours ends without our hangup (the peer's BYE, a failure); it
    /// is then over and [`UserAgent::hangup`] returns the same end.
    pub async fn ended(&self, call_id: &str) -> Result<Ended, CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::WaitEnd { call_id, reply }).await
    }

    /// A call's current media statistics.
    pub async fn media_stats(&self, call_id: &str) -> Result<Option<StreamStats>, CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::Stats { call_id, reply }).await?
    }

    /// Waits for the engine's DTLS outcome of one of our calls (needs the DTLS events, see
    /// [`UserAgent::start_with_events`]), with the verdict it makes.
    pub async fn dtls_outcome(&self, call_id: &str) -> Result<(DtlsOutcome, Verdict), CallError> {
        let call_id = call_id.to_owned();
        self.ask(|reply| Cmd::Dtls { call_id, reply }).await
    }

    /// A graceful stop: BYE for every call, CANCEL for unanswered ones, 503 for new INVITEs,
    /// the engine streams deleted, unregistered. Returns when that is done or after `within`;
    /// the agent stops either way.
    pub async fn shutdown(&self, within: Duration) -> ShutdownSummary {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown { reply }).is_err() {
            return ShutdownSummary::default();
        }
        let r = tokio::time::timeout(within, rx).await;
        self.stop();
        match r {
            Ok(Ok(s)) => s,
            _ => ShutdownSummary {
                calls_left: usize::MAX,
                ..ShutdownSummary::default()
            },
        }
    }

    /// Stops the agent at once (calls are not hung up).
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

/// A media reply with its request's id.
type MediaReply = (u64, Result<MediaDone, MediaError>);

/// Runs media requests on a thread of their own (the engine's client blocks).
fn media_thread(
    mut media: Box<dyn MediaEngine>,
    reconnects: Arc<AtomicU64>,
) -> (
    std::sync::mpsc::Sender<MediaRequest>,
    mpsc::UnboundedReceiver<MediaReply>,
) {
    let (req_tx, req_rx) = std::sync::mpsc::channel::<MediaRequest>();
    let (rep_tx, rep_rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("sip-media".into())
        .spawn(move || {
            while let Ok(r) = req_rx.recv() {
                let m = &mut *media;
                let result = match r.op {
                    MediaOp::Prepare => m.prepare().map(MediaDone::Allocated),
                    MediaOp::Open { n, held } => m.open(&n, held).map(MediaDone::Allocated),
                    MediaOp::Apply { stream, n, prev } => m
                        .apply(stream, &n, prev.as_deref())
                        .map(|()| MediaDone::Applied),
                    MediaOp::Sending(s, on) => m.sending(s, on).map(|()| MediaDone::Applied),
                    MediaOp::Stats(s) => m.stats(s).map(MediaDone::Stats),
                    MediaOp::Close(s) => m.close(s).map(MediaDone::Stats),
                };
                reconnects.store(m.reconnects(), Ordering::Relaxed);
                if rep_tx.send((r.id, result)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("could not start the media thread: {e}");
    }
    (req_tx, rep_rx)
}

/// A map that keeps at most a few thousand entries (the oldest go first): results of calls
/// nobody asked about must not accumulate.
struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    const LIMIT: usize = 4096;

    fn insert(&mut self, k: String, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > Self::LIMIT {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn take(&mut self, k: &str) -> Option<V> {
        let v = self.map.remove(k)?;
        self.order.retain(|o| o != k);
        Some(v)
    }
}

type ConnectResult = (SocketAddr, Result<Flow, TransportError>);

struct Driver {
    core: UaCore,
    transport: SipTransport,
    protocol: Protocol,
    /// Connections we opened, by the address they go to.
    conns: HashMap<SocketAddr, Flow>,
    /// Payloads waiting for a connection being opened.
    connecting: HashMap<SocketAddr, Vec<Payload>>,
    uas: mpsc::UnboundedSender<UasEvent>,
    calls: HashMap<String, oneshot::Sender<Result<CallInfo, CallError>>>,
    hangups: HashMap<String, oneshot::Sender<Ended>>,
    end_waiters: HashMap<String, oneshot::Sender<Ended>>,
    ended: Bounded<Ended>,
    stats: HashMap<u64, oneshot::Sender<Result<Option<StreamStats>, CallError>>>,
    next_token: u64,
    dtls_waiters: HashMap<String, oneshot::Sender<(DtlsOutcome, Verdict)>>,
    dtls_seen: Bounded<(DtlsOutcome, Verdict)>,
    shutdown: Vec<oneshot::Sender<ShutdownSummary>>,
    media_tx: std::sync::mpsc::Sender<MediaRequest>,
}

impl Driver {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<TransportEvent>,
        mut media: mpsc::UnboundedReceiver<MediaReply>,
        mut dtls: Option<mpsc::UnboundedReceiver<EngineEvent>>,
    ) {
        let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<ConnectResult>();
        loop {
            if self.flush(&conn_tx) {
                return;
            }
            let next = self.core.poll_timeout();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let dtls_next = async {
                match dtls.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = cmds.recv() => match c {
                    None | Some(Cmd::Stop) => return,
                    Some(c) => self.command(c),
                },
                e = events.recv() => match e {
                    None => return,
                    Some(e) => self.transport_event(e),
                },
                Some((id, r)) = media.recv() => self.core.handle_media(Instant::now(), id, r),
                d = dtls_next => match d {
                    Some(EngineEvent::Dtls(d)) => self.core.handle_dtls(Instant::now(), d),
                    Some(EngineEvent::Lost) => {
                        let _ = self.uas.send(UasEvent::Engine { up: false });
                        self.core.handle_engine_lost(Instant::now());
                    }
                    Some(EngineEvent::Back) => {
                        let _ = self.uas.send(UasEvent::Engine { up: true });
                    }
                    None => dtls = None,
                },
                Some((addr, r)) = conn_rx.recv() => self.connected(addr, r),
                () = sleep => self.core.handle_timeout(Instant::now()),
            }
        }
    }

    /// Carries out everything the core has queued. Returns true when the agent is done.
    fn flush(&mut self, conn_tx: &mpsc::UnboundedSender<ConnectResult>) -> bool {
        loop {
            let mut any = false;
            while let Some(t) = self.core.poll_transmit() {
                any = true;
                self.send(t, conn_tx);
            }
            while let Some(m) = self.core.poll_media() {
                any = true;
                if self.media_tx.send(m).is_err() {
                    tracing::error!("the media thread is gone");
                }
            }
            while let Some(e) = self.core.poll_event() {
                any = true;
                if self.route(e) {
                    return true;
                }
            }
            if !any {
                return false;
            }
        }
    }

    fn command(&mut self, c: Cmd) {
        let now = Instant::now();
        match c {
            Cmd::Call {
                opts,
                call_id,
                reply,
            } => {
                self.calls.insert(call_id.clone(), reply);
                self.core.handle_command(
                    now,
                    Command::Call {
                        call_id,
                        target: opts.target,
                        next_hop: opts.next_hop,
                        delayed_offer: opts.delayed_offer,
                    },
                );
            }
            Cmd::Hangup { call_id, reply } => {
                if let Some(e) = self.ended.take(&call_id) {
                    let _ = reply.send(e);
                    return;
                }
                self.hangups.insert(call_id.clone(), reply);
                self.core.handle_command(now, Command::Hangup { call_id });
            }
            Cmd::WaitEnd { call_id, reply } => {
                if let Some(e) = self.ended.map.get(&call_id) {
                    let _ = reply.send(e.clone());
                } else {
                    self.end_waiters.insert(call_id, reply);
                }
            }
            Cmd::Stats { call_id, reply } => {
                let token = self.next_token;
                self.next_token += 1;
                self.stats.insert(token, reply);
                self.core
                    .handle_command(now, Command::Stats { call_id, token });
            }
            Cmd::Dtls { call_id, reply } => match self.dtls_seen.take(&call_id) {
                Some(o) => {
                    let _ = reply.send(o);
                }
                None => {
                    self.dtls_waiters.insert(call_id, reply);
                }
            },
            Cmd::Shutdown { reply } => {
                self.shutdown.push(reply);
                self.core.handle_command(now, Command::Shutdown);
            }
            Cmd::Stop => {}
        }
    }

    /// Passes an event to whoever waits for it. Returns true when the agent is done.
    fn route(&mut self, e: UaEvent) -> bool {
        match e {
            UaEvent::Connected(info) => {
                if let Some(w) = self.calls.remove(&info.call_id) {
                    let _ = w.send(Ok(*info));
                }
            }
            UaEvent::CallFailed { call_id, error } => {
                if let Some(w) = self.calls.remove(&call_id) {
                    let _ = w.send(Err(error));
                }
            }
            UaEvent::Ended(e) => {
                self.dtls_waiters.remove(&e.call_id);
                self.dtls_seen.take(&e.call_id);
                if let Some(w) = self.end_waiters.remove(&e.call_id) {
                    let _ = w.send((*e).clone());
                }
                match self.hangups.remove(&e.call_id) {
                    Some(w) => {
                        let _ = w.send(*e);
                    }
                    None => self.ended.insert(e.call_id.clone(), *e),
                }
            }
            UaEvent::Dtls {
                call_id,
                outcome,
                verdict,
            } => match self.dtls_waiters.remove(&call_id) {
                Some(w) => {
                    let _ = w.send((outcome, *verdict));
                }
                None => self.dtls_seen.insert(call_id, (outcome, *verdict)),
            },
            UaEvent::Uas(u) => {
                // An answered call we hung up: its hangup waits for this end too.
                if let UasEvent::Ended {
                    call_id,
                    stats,
                    by,
                    bye,
                } = &u
                    && let Some(w) = self.hangups.remove(call_id)
                {
                    let _ = w.send(Ended {
                        call_id: call_id.clone(),
                        by: by.clone(),
                        stats: stats.clone(),
                        bye: bye.clone(),
                    });
                }
                let _ = self.uas.send(u);
            }
            UaEvent::Stats { token, result } => {
                if let Some(w) = self.stats.remove(&token) {
                    let _ = w.send(result);
                }
            }
            UaEvent::Registration(r) => {
                let _ = self.uas.send(UasEvent::Registration(r));
            }
            UaEvent::Idle => {
                let summary = ShutdownSummary {
                    counters: self.core.counters(),
                    calls_left: self.core.calls(),
                };
                for w in self.shutdown.drain(..) {
                    let _ = w.send(summary);
                }
                return true;
            }
        }
        false
    }

    fn transport_event(&mut self, e: TransportEvent) {
        let now = Instant::now();
        match e {
            TransportEvent::Message { msg, flow } => self.core.handle_message(now, *msg, flow),
            TransportEvent::Closed { flow, error } => {
                self.conns.retain(|_, f| *f != flow);
                self.core.handle_closed(now, flow, error);
            }
            TransportEvent::Pong { flow } => self.core.handle_pong(now, flow),
            TransportEvent::StunAnswer { id, .. } => self.core.handle_stun(now, &id),
            TransportEvent::Garbage { peer, error } => {
                tracing::debug!(%peer, "dropped a message that is not SIP: {error}");
                self.core.handle_garbage();
            }
        }
    }

    fn put(&self, flow: &Flow, p: &Payload) -> Result<(), TransportError> {
        match p {
            Payload::Sip(m) => self.transport.send(flow, m),
            Payload::Ping => self.transport.send_ping(flow),
            Payload::Stun(id) => self.transport.send_stun(flow, id),
        }
    }

    fn send(&mut self, t: Transmit, conn_tx: &mpsc::UnboundedSender<ConnectResult>) {
        match t.to {
            Destination::Flow(f) => {
                if let Err(e) = self.put(&f, &t.payload) {
                    tracing::debug!("response not sent: {e}");
                }
            }
            Destination::Hop {
                flow,
                addr,
                server_name,
            } => {
                if self.protocol == Protocol::Udp {
                    let _ = self.put(&Flow::Udp(addr), &t.payload);
                    return;
                }
                for f in flow.into_iter().chain(self.conns.get(&addr).copied()) {
                    if self.put(&f, &t.payload).is_ok() {
                        return;
                    }
                }
                self.conns.remove(&addr);
                if let Some(q) = self.connecting.get_mut(&addr) {
                    q.push(t.payload);
                    return;
                }
                self.connecting.insert(addr, vec![t.payload]);
                let transport = self.transport.clone();
                let tx = conn_tx.clone();
                tokio::spawn(async move {
                    let r = transport.connect(addr, &server_name).await;
                    let _ = tx.send((addr, r));
                });
            }
        }
    }

    fn connected(&mut self, addr: SocketAddr, r: Result<Flow, TransportError>) {
        let queued = self.connecting.remove(&addr).unwrap_or_default();
        match r {
            Ok(flow) => {
                self.conns.insert(addr, flow);
                for p in queued {
                    if let Err(e) = self.put(&flow, &p)
                        && let Payload::Sip(m) = &p
                    {
                        self.failed(addr, m, e);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%addr, "{e}");
                for p in queued {
                    if let Payload::Sip(m) = &p {
                        self.failed(addr, m, e.clone());
                    }
                }
            }
        }
    }

    fn failed(&mut self, addr: SocketAddr, m: &Message, e: TransportError) {
        self.core.handle_send_failed(Instant::now(), addr, m, e);
    }
}
