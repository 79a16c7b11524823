//! SIP transactions (RFC 3261 17, with the Accepted state of RFC 6026) as sans-IO state
//! machines: time is an input, output is drained with `poll_event`, and `poll_timeout` says
//! when to call `handle_timeout` next.
//!
//! Timers, for T1 = 500 ms, T2 = 4 s, T4 = 5 s by default (RFC 3261 Table 4):
//! - client INVITE: A (retransmit, doubling; unreliable only), B (64*T1, give up while
//!   Calling), D (32 s unreliable, 0 reliable: absorb final-response retransmissions),
//!   M (64*T1, RFC 6026: absorb 2xx retransmissions, passed up for a fresh ACK);
//! - client non-INVITE: E (retransmit, doubling to T2; T2 once Proceeding), F (64*T1),
//!   K (T4 unreliable, 0 reliable);
//! - server INVITE: G (retransmit a non-2xx final, doubling to T2), H (64*T1, wait for ACK),
//!   I (T4 unreliable, 0 reliable), L (64*T1, RFC 6026); the 2xx is retransmitted here too
//!   (T1 doubling to T2, RFC 3261 13.3.1.4) until its ACK comes;
//! - server non-INVITE: J (64*T1 unreliable, 0 reliable).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::message::{Message, Method, StartLine};

/// The RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerValues {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Transaction states in protocol order (RFC 3261 17, RFC 6026).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// Client INVITE: request sent, nothing heard (`Calling`); non-INVITE: `Trying`.
    Calling,
    /// Client non-INVITE sent / server non-INVITE received, no response yet.
    Trying,
    /// A provisional response has been received (client) or sent (server).
    Proceeding,
    /// INVITE answered with a 2xx (RFC 6026).
    Accepted,
    /// A final response has been received (client) or sent (server).
    Completed,
    /// Server INVITE: the ACK for a non-2xx final came.
    Confirmed,
    /// Done; drop the transaction.
    Terminated,
}

/// What a transaction asks of its owner.
#[derive(Debug, PartialEq, Eq)]
pub enum TxEvent {
    /// Send this message on the transaction's transport and destination.
    Transmit(Message),
    /// Pass this message to the transaction user (a response for a client transaction; an
    /// ACK to a 2xx for a server INVITE transaction).
    Deliver(Message),
    /// Timer B, F or H fired (or L without an ACK): the request (or 2xx) got no answer.
    Timeout,
}

/// One retransmission as it happened, for reports (the backoff a lab wants to see).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmit {
    /// When it was sent.
    pub at: Instant,
    /// The interval waited since the previous send.
    pub interval: Duration,
}

#[derive(Debug)]
struct Timer {
    at: Instant,
    kind: TimerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// A or E (client), G or the 2xx retransmission (server).
    Retransmit,
    /// B, F (client); H (server).
    Deadline,
    /// D, K, M (client); I, J, L (server): end of the absorbing state.
    Linger,
}

/// A transaction's pending timers (a handful at most, so a small vector).
#[derive(Debug, Default)]
struct Timers(Vec<Timer>);

impl Timers {
    fn next(&self) -> Option<Instant> {
        self.0.iter().map(|t| t.at).min()
    }

    /// Removes and returns a timer due at `now`, if any.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let i = self.0.iter().position(|t| t.at <= now)?;
        Some(self.0.swap_remove(i))
    }

    fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.0.push(Timer { at, kind });
    }

    /// Cancels every timer and arms this one.
    fn only(&mut self, at: Instant, kind: TimerKind) {
        self.0.clear();
        self.arm(at, kind);
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A client transaction: INVITE or non-INVITE, chosen by the request's method.
#[derive(Debug)]
pub struct ClientTransaction {
    request: Message,
    invite: bool,
    reliable: bool,
    values: TimerValues,
    state: TxState,
    interval: Duration,
    last_send: Instant,
    ack: Option<Message>,
    timers: Timers,
    events: VecDeque<TxEvent>,
    retransmits: Vec<Retransmit>,
}

impl ClientTransaction {
    /// Starts a transaction: the request goes out at once (drain `poll_event`).
    /// `reliable` is true for TCP and TLS, where nothing is retransmitted.
    pub fn new(request: Message, reliable: bool, values: TimerValues, now: Instant) -> Self {
        let invite = matches!(
            request.start,
            StartLine::Request {
                method: Method::Invite,
                ..
            }
        );
        let mut timers = Timers::default();
        timers.arm(now + values.t1 * 64, TimerKind::Deadline);
        if !reliable {
            timers.arm(now + values.t1, TimerKind::Retransmit);
        }
        let mut events = VecDeque::with_capacity(2);
        events.push_back(TxEvent::Transmit(request.clone()));
        ClientTransaction {
            request,
            invite,
            reliable,
            values,
            state: if invite {
                TxState::Calling
            } else {
                TxState::Trying
            },
            interval: values.t1,
            last_send: now,
            ack: None,
            timers,
            events,
            retransmits: Vec::new(),
        }
    }

    /// The request this transaction carries.
    pub fn request(&self) -> &Message {
        &self.request
    }

    /// The current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// Every retransmission so far, with the interval used.
    pub fn retransmits(&self) -> &[Retransmit] {
        &self.retransmits
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A response matched to this transaction arrived.
    pub fn handle_response(&mut self, resp: Message, now: Instant) {
        let Some(code) = resp.code() else { return };
        match (self.state, code) {
            (TxState::Calling | TxState::Trying | TxState::Proceeding, 100..=199) => {
                if self.state != TxState::Proceeding {
                    self.state = TxState::Proceeding;
                    if self.invite {
                        // 17.1.1.2: retransmissions stop; Timer B no longer applies.
                        self.timers.clear();
                    } else {
                        // 17.1.2.2: in Proceeding, retransmit every T2 (after the pending one).
                        self.interval = self.values.t2;
                    }
                }
                self.events.push_back(TxEvent::Deliver(resp));
            }
            (TxState::Calling | TxState::Proceeding, 200..=299) if self.invite => {
                // RFC 6026: Accepted, Timer M; later 2xx retransmissions go up for a new ACK.
                self.enter(TxState::Accepted, now, self.values.t1 * 64);
                self.events.push_back(TxEvent::Deliver(resp));
            }
            (TxState::Accepted, 200..=299) => self.events.push_back(TxEvent::Deliver(resp)),
            (TxState::Calling | TxState::Proceeding, 300..=699) if self.invite => {
                let ack = ack_for_non_2xx(&self.request, &resp);
                self.events.push_back(TxEvent::Transmit(ack.clone()));
                self.ack = Some(ack);
                let d = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                self.enter(TxState::Completed, now, d);
                self.events.push_back(TxEvent::Deliver(resp));
            }
            (TxState::Completed, 300..=699) if self.invite => {
                // 17.1.1.2: a retransmitted final response gets the ACK again.
                if let Some(a) = &self.ack {
                    self.events.push_back(TxEvent::Transmit(a.clone()));
                }
            }
            (TxState::Trying | TxState::Proceeding, 200..=699) if !self.invite => {
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.values.t4
                };
                self.enter(TxState::Completed, now, k);
                self.events.push_back(TxEvent::Deliver(resp));
            }
            _ => {}
        }
        self.reap(now);
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.kind {
                TimerKind::Retransmit => {
                    if matches!(
                        self.state,
                        TxState::Calling | TxState::Trying | TxState::Proceeding
                    ) {
                        self.events
                            .push_back(TxEvent::Transmit(self.request.clone()));
                        self.retransmits.push(Retransmit {
                            at: now,
                            interval: now - self.last_send,
                        });
                        self.last_send = now;
                        self.interval = if self.invite {
                            self.interval * 2
                        } else if self.state == TxState::Proceeding {
                            self.values.t2
                        } else {
                            (self.interval * 2).min(self.values.t2)
                        };
                        self.timers.arm(t.at + self.interval, TimerKind::Retransmit);
                    }
                }
                TimerKind::Deadline => {
                    self.events.push_back(TxEvent::Timeout);
                    self.state = TxState::Terminated;
                    self.timers.clear();
                }
                TimerKind::Linger => self.state = TxState::Terminated,
            }
        }
    }

    fn enter(&mut self, state: TxState, now: Instant, linger: Duration) {
        self.state = state;
        self.timers.only(now + linger, TimerKind::Linger);
    }

    fn reap(&mut self, now: Instant) {
        if self
            .timers
            .0
            .iter()
            .any(|t| t.at <= now && t.kind == TimerKind::Linger)
        {
            self.handle_timeout(now);
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): same Request-URI, top Via
/// (so the same branch), From, Call-ID and Route as the INVITE; To from the response; CSeq
/// number of the INVITE with method ACK.
pub fn ack_for_non_2xx(invite: &Message, resp: &Message) -> Message {
    let uri = match &invite.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => unreachable!("a client transaction holds a request"),
    };
    let mut ack = Message::request(Method::Ack, uri);
    if let Some(v) = invite.header_values("Via").next() {
        ack.push("Via", v.to_owned());
    }
    for (name, src) in [
        ("Max-Forwards", invite),
        ("From", invite),
        ("To", resp),
        ("Call-ID", invite),
    ] {
        if let Some(v) = src.header(name) {
            ack.push(name, v.to_owned());
        }
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    ack.push("CSeq", format!("{seq} ACK"));
    for r in invite.headers.iter().filter(|h| h.name == "Route") {
        ack.push("Route", r.value.clone());
    }
    ack
}

/// A server transaction: INVITE or non-INVITE, chosen by the request's method.
#[derive(Debug)]
pub struct ServerTransaction {
    invite: bool,
    reliable: bool,
    values: TimerValues,
    state: TxState,
    last_response: Option<Message>,
    interval: Duration,
    acked: bool,
    timers: Timers,
    events: VecDeque<TxEvent>,
}

impl ServerTransaction {
    /// Starts a transaction for a received request. An INVITE is answered with 100 Trying at
    /// once (17.2.1: the TU may take longer than 200 ms).
    pub fn new(request: &Message, reliable: bool, values: TimerValues) -> Self {
        let invite = matches!(
            request.start,
            StartLine::Request {
                method: Method::Invite,
                ..
            }
        );
        let mut tx = ServerTransaction {
            invite,
            reliable,
            values,
            state: if invite {
                TxState::Proceeding
            } else {
                TxState::Trying
            },
            last_response: None,
            interval: values.t1,
            acked: false,
            timers: Timers::default(),
            events: VecDeque::new(),
        };
        if invite {
            let trying = Message::response_to(request, 100, "Trying", None);
            tx.last_response = Some(trying.clone());
            tx.events.push_back(TxEvent::Transmit(trying));
        }
        tx
    }

    /// The current state.
    pub fn state(&self) -> TxState {
        self.state
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The request again (a retransmission) or, for INVITE, its ACK.
    pub fn handle_request(&mut self, req: Message, now: Instant) {
        let is_ack = matches!(
            req.start,
            StartLine::Request {
                method: Method::Ack,
                ..
            }
        );
        if is_ack {
            match self.state {
                TxState::Completed if self.invite => {
                    self.state = TxState::Confirmed;
                    self.timers.clear();
                    let i = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.values.t4
                    };
                    self.timers.arm(now + i, TimerKind::Linger);
                    if i.is_zero() {
                        self.state = TxState::Terminated;
                        self.timers.clear();
                    }
                }
                TxState::Accepted if !self.acked => {
                    self.acked = true;
                    self.timers.0.retain(|t| t.kind == TimerKind::Linger);
                    self.events.push_back(TxEvent::Deliver(req));
                }
                _ => {}
            }
            return;
        }
        // A retransmitted request: repeat the last response (17.2.1, 17.2.2).
        if matches!(self.state, TxState::Proceeding | TxState::Completed)
            && let Some(r) = &self.last_response
        {
            self.events.push_back(TxEvent::Transmit(r.clone()));
        }
    }

    /// The TU responds.
    pub fn respond(&mut self, resp: Message, now: Instant) {
        let Some(code) = resp.code() else { return };
        match (self.state, code) {
            (TxState::Trying | TxState::Proceeding, 100..=199) => {
                self.state = TxState::Proceeding;
            }
            (TxState::Trying | TxState::Proceeding, 200..=299) if self.invite => {
                self.state = TxState::Accepted;
                self.timers
                    .only(now + self.values.t1 * 64, TimerKind::Linger);
                // 13.3.1.4: the 2xx is retransmitted (T1 doubling to T2) even on reliable
                // transports, since it is end to end; until the ACK comes.
                self.interval = self.values.t1;
                self.timers.arm(now + self.interval, TimerKind::Retransmit);
            }
            (TxState::Trying | TxState::Proceeding, 300..=699) if self.invite => {
                self.state = TxState::Completed;
                self.timers
                    .only(now + self.values.t1 * 64, TimerKind::Deadline);
                if !self.reliable {
                    self.interval = self.values.t1;
                    self.timers.arm(now + self.interval, TimerKind::Retransmit);
                }
            }
            (TxState::Trying | TxState::Proceeding, 200..=699) => {
                self.state = TxState::Completed;
                self.timers.clear();
                if self.reliable {
                    self.state = TxState::Terminated;
                } else {
                    self.timers
                        .arm(now + self.values.t1 * 64, TimerKind::Linger);
                }
            }
            _ => return,
        }
        self.last_response = Some(resp.clone());
        self.events.push_back(TxEvent::Transmit(resp));
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            match t.kind {
                TimerKind::Retransmit => {
                    let live = matches!(self.state, TxState::Completed)
                        || (self.state == TxState::Accepted && !self.acked);
                    if live && let Some(r) = &self.last_response {
                        self.events.push_back(TxEvent::Transmit(r.clone()));
                        self.interval = (self.interval * 2).min(self.values.t2);
                        self.timers.arm(t.at + self.interval, TimerKind::Retransmit);
                    }
                }
                TimerKind::Deadline => {
                    // Timer H: no ACK for our final response.
                    self.events.push_back(TxEvent::Timeout);
                    self.state = TxState::Terminated;
                    self.timers.clear();
                }
                TimerKind::Linger => {
                    if self.state == TxState::Accepted && !self.acked {
                        // 13.3.1.4: no ACK for the 2xx in 64*T1; the TU ends the session.
                        self.events.push_back(TxEvent::Timeout);
                    }
                    self.state = TxState::Terminated;
                    self.timers.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    fn request(method: Method) -> Message {
        let mut m = Message::request(method.clone(), Uri::parse("sip:bob@127.0.0.1").unwrap());
        m.push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtest")
            .push("From", "<sip:alice@127.0.0.1>;tag=a")
            .push("To", "<sip:bob@127.0.0.1>")
            .push("Call-ID", "c1")
            .push("CSeq", format!("1 {method}"))
            .push("Max-Forwards", "70");
        m
    }

    fn drain<T>(mut f: impl FnMut() -> Option<T>) -> Vec<T> {
        std::iter::from_fn(&mut f).collect()
    }

    fn transmits(events: &[TxEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, TxEvent::Transmit(_)))
            .count()
    }

    /// Runs the transaction's timers until `end`, returning (time offset, event) pairs.
    fn run_client(
        tx: &mut ClientTransaction,
        t0: Instant,
        end: Duration,
    ) -> Vec<(Duration, TxEvent)> {
        let mut out = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            if at > t0 + end {
                break;
            }
            tx.handle_timeout(at);
            for e in drain(|| tx.poll_event()) {
                out.push((at - t0, e));
            }
        }
        out
    }

    #[test]
    fn invite_over_udp_backs_off_and_times_out_with_timer_b() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(request(Method::Invite), false, TimerValues::default(), t0);
        assert_eq!(transmits(&drain(|| tx.poll_event())), 1);
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        let sends: Vec<_> = ev
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| t.as_millis())
            .collect();
        // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s (doubling, no T2 cap for INVITE).
        assert_eq!(sends, [500, 1500, 3500, 7500, 15500, 31500]);
        // Timer B: 64*T1 = 32 s.
        assert_eq!(
            ev.last().unwrap(),
            &(Duration::from_secs(32), TxEvent::Timeout)
        );
        assert_eq!(tx.state(), TxState::Terminated);
        let iv: Vec<_> = tx
            .retransmits()
            .iter()
            .map(|r| r.interval.as_millis())
            .collect();
        assert_eq!(iv, [500, 1000, 2000, 4000, 8000, 16000]);
    }

    #[test]
    fn non_invite_over_udp_caps_at_t2_and_uses_t2_when_proceeding() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(request(Method::Register), false, TimerValues::default(), t0);
        drain(|| tx.poll_event());
        let ev = run_client(&mut tx, t0, Duration::from_secs(40));
        let sends: Vec<_> = ev
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| t.as_millis())
            .collect();
        // Timer E: 0.5, 1.5, 3.5, 7.5, then every 4 s; Timer F at 32 s.
        assert_eq!(
            sends,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(ev.last().unwrap().1, TxEvent::Timeout);

        let mut tx =
            ClientTransaction::new(request(Method::Options), false, TimerValues::default(), t0);
        drain(|| tx.poll_event());
        let req = tx.request().clone();
        tx.handle_response(
            Message::response_to(&req, 100, "Trying", None),
            t0 + Duration::from_millis(100),
        );
        assert_eq!(tx.state(), TxState::Proceeding);
        let ev = run_client(&mut tx, t0, Duration::from_secs(10));
        let sends: Vec<_> = ev
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| t.as_millis())
            .collect();
        assert_eq!(sends, [500, 4500, 8500]);
        tx.handle_response(
            Message::response_to(&req, 200, "OK", Some("x")),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(tx.state(), TxState::Completed);
        assert!(
            matches!(&drain(|| tx.poll_event())[..], [TxEvent::Deliver(r)] if r.code() == Some(200))
        );
        let ev = run_client(&mut tx, t0, Duration::from_secs(60));
        assert!(ev.is_empty());
        // Timer K = T4 after the final response.
        assert_eq!(tx.state(), TxState::Terminated);
    }

    #[test]
    fn invite_non_2xx_is_acked_and_retransmissions_reacked() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(request(Method::Invite), false, TimerValues::default(), t0);
        drain(|| tx.poll_event());
        let req = tx.request().clone();
        let busy = Message::response_to(&req, 486, "Busy Here", Some("b"));
        tx.handle_response(busy.clone(), t0 + Duration::from_millis(50));
        let ev = drain(|| tx.poll_event());
        let TxEvent::Transmit(ack) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_eq!(
            ack.top_via().unwrap().branch.as_deref(),
            Some("z9hG4bKtest")
        );
        assert_eq!(ack.to().unwrap().tag(), Some("b"));
        assert!(matches!(&ev[1], TxEvent::Deliver(r) if r.code() == Some(486)));
        tx.handle_response(busy, t0 + Duration::from_secs(1));
        let ev = drain(|| tx.poll_event());
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], TxEvent::Transmit(a) if a.method() == Some(Method::Ack)));
        // Timer D: 32 s.
        tx.handle_timeout(t0 + Duration::from_secs(30));
        assert_eq!(tx.state(), TxState::Completed);
        tx.handle_timeout(t0 + Duration::from_millis(32_050));
        assert_eq!(tx.state(), TxState::Terminated);
    }

    #[test]
    fn invite_2xx_goes_to_accepted_and_passes_retransmissions_up() {
        let t0 = Instant::now();
        let mut tx =
            ClientTransaction::new(request(Method::Invite), true, TimerValues::default(), t0);
        drain(|| tx.poll_event());
        // Reliable: no Timer A.
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        let req = tx.request().clone();
        tx.handle_response(Message::response_to(&req, 180, "Ringing", Some("b")), t0);
        assert_eq!(tx.poll_timeout(), None, "Timer B stops once Proceeding");
        let ok = Message::response_to(&req, 200, "OK", Some("b"));
        tx.handle_response(ok.clone(), t0 + Duration::from_secs(60));
        tx.handle_response(ok, t0 + Duration::from_secs(61));
        let ev = drain(|| tx.poll_event());
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, TxEvent::Deliver(r) if r.code() == Some(200)))
                .count(),
            2
        );
        tx.handle_timeout(t0 + Duration::from_secs(60 + 32));
        assert_eq!(tx.state(), TxState::Terminated);
    }

    #[test]
    fn server_invite_retransmits_final_until_ack_then_lingers() {
        let t0 = Instant::now();
        let inv = request(Method::Invite);
        let mut tx = ServerTransaction::new(&inv, false, TimerValues::default());
        let ev = drain(|| tx.poll_event());
        assert!(matches!(&ev[0], TxEvent::Transmit(r) if r.code() == Some(100)));
        // A retransmitted INVITE gets the 100 again.
        tx.handle_request(inv.clone(), t0);
        assert_eq!(transmits(&drain(|| tx.poll_event())), 1);
        tx.respond(
            Message::response_to(&inv, 488, "Not Acceptable Here", Some("b")),
            t0,
        );
        assert_eq!(transmits(&drain(|| tx.poll_event())), 1);
        // Timer G: 0.5, 1.5, 3.5, 7.5, 11.5 s (capped at T2).
        let mut sends = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            if at > t0 + Duration::from_secs(12) {
                break;
            }
            tx.handle_timeout(at);
            for _ in drain(|| tx.poll_event()) {
                sends.push((at - t0).as_millis());
            }
        }
        assert_eq!(sends, [500, 1500, 3500, 7500, 11500]);
        let mut ack = request(Method::Ack);
        ack.set("CSeq", "1 ACK");
        tx.handle_request(ack, t0 + Duration::from_secs(12));
        assert_eq!(tx.state(), TxState::Confirmed);
        tx.handle_timeout(t0 + Duration::from_secs(12) + Duration::from_secs(5));
        assert_eq!(tx.state(), TxState::Terminated);

        // Without an ACK, Timer H fires at 64*T1.
        let mut tx = ServerTransaction::new(&inv, false, TimerValues::default());
        tx.respond(Message::response_to(&inv, 486, "Busy Here", Some("b")), t0);
        tx.handle_timeout(t0 + Duration::from_secs(32));
        assert!(drain(|| tx.poll_event()).contains(&TxEvent::Timeout));
    }

    #[test]
    fn server_2xx_retransmitted_until_ack_which_goes_up() {
        let t0 = Instant::now();
        let inv = request(Method::Invite);
        let mut tx = ServerTransaction::new(&inv, true, TimerValues::default());
        drain(|| tx.poll_event());
        tx.respond(Message::response_to(&inv, 200, "OK", Some("b")), t0);
        assert_eq!(transmits(&drain(|| tx.poll_event())), 1);
        tx.handle_timeout(t0 + Duration::from_millis(500));
        tx.handle_timeout(t0 + Duration::from_millis(1500));
        assert_eq!(transmits(&drain(|| tx.poll_event())), 2);
        let mut ack = request(Method::Ack);
        ack.set("CSeq", "1 ACK");
        tx.handle_request(ack, t0 + Duration::from_secs(2));
        assert!(matches!(
            &drain(|| tx.poll_event())[..],
            [TxEvent::Deliver(_)]
        ));
        tx.handle_timeout(t0 + Duration::from_secs(10));
        assert!(
            drain(|| tx.poll_event()).is_empty(),
            "no retransmission after the ACK"
        );
        tx.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(tx.state(), TxState::Terminated);
        assert!(drain(|| tx.poll_event()).is_empty());
    }

    #[test]
    fn server_non_invite_repeats_final_on_retransmission_then_timer_j() {
        let t0 = Instant::now();
        let reg = request(Method::Register);
        let mut tx = ServerTransaction::new(&reg, false, TimerValues::default());
        assert!(
            drain(|| tx.poll_event()).is_empty(),
            "no 100 for non-INVITE"
        );
        tx.handle_request(reg.clone(), t0);
        assert!(
            drain(|| tx.poll_event()).is_empty(),
            "nothing to repeat yet"
        );
        tx.respond(Message::response_to(&reg, 200, "OK", Some("r")), t0);
        drain(|| tx.poll_event());
        tx.handle_request(reg, t0 + Duration::from_secs(1));
        assert_eq!(transmits(&drain(|| tx.poll_event())), 1);
        tx.handle_timeout(t0 + Duration::from_secs(32));
        assert_eq!(tx.state(), TxState::Terminated);
    }
}
