//! One endpoint's registration (RFC 3261 10) against an ordered list of registrars, as a
//! sans-IO state machine: time is an input (`handle_*(now, ..)`), messages to send come out of
//! [`Endpoint::poll_transmit`], what happened out of [`Endpoint::poll_event`], and
//! [`Endpoint::poll_timeout`] says when to call [`Endpoint::handle_timeout`] next.
//!
//! What it does, as a phone in the field does:
//! - REGISTER with the requested Expires; the registrar's answer (the `expires` parameter of our
//!   Contact, else the Expires header) is honoured, and a 423 raises the request to Min-Expires.
//!   Digest challenges are answered (the challenge is kept, so refreshes carry credentials).
//! - Refresh at expiry minus `refresh_before`, counted from when the REGISTER was sent (so a
//!   120 s grant refreshes every 115 s exactly). The first refresh after any new registration may
//!   come early, to land on the endpoint's phase of the refresh interval: a fleet registered in a
//!   burst (a start-up, a failover) still refreshes evenly spread.
//! - Over UDP, requests are retransmitted by the RFC 3261 non-INVITE transaction (T1 doubling to
//!   T2, given up after 64*T1); every retransmission is reported with the interval used.
//! - Keepalives to the current registrar: RFC 5626 CRLF ping/pong on TCP/TLS, and/or OPTIONS
//!   pings on any transport; an answer must come within `keepalive_timeout`.
//! - Failure detection: a keepalive or refresh that goes unanswered (or a 5xx/6xx/408, or a
//!   broken connection) is a failure. `fast` probes again at once after a failure and declares
//!   the registrar lost after `failures` consecutive ones; `tolerant` keeps its normal interval,
//!   so the same count spans several intervals (for lossy networks).
//! - On loss, register with the next registrar in order (then the next, then wait
//!   `retry_after` and start over). While on a backup, probe each higher-priority registrar
//!   with OPTIONS every `probe_interval`; when one answers, register there first and then send
//!   REGISTER with Expires: 0 to the backup being left (it is reachable). The registrar left on a
//!   failure is not unregistered: it is not answering.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sip::auth::Challenge;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::{ClientTransaction, TxEvent};
use crate::sip::transport::Protocol;
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::{token, via_header};

mod flows;
mod liveness;
mod policy;
#[cfg(test)]
mod tests;

pub use policy::{Detection, Identity, KeepaliveKind, OutboundProxy, Policy, RegistrarSpec};

/// Something to send to a registrar.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Index of the registrar in the policy.
    pub registrar: usize,
    /// What to send.
    pub payload: Payload,
}

/// A message, or a keepalive ping.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// A SIP request.
    Sip(Message),
    /// An RFC 5626 CRLF ping (`\r\n\r\n`) on the connection to the registrar.
    Ping,
    /// A STUN Binding request with this transaction id (RFC 5626 4.4.2).
    Stun(crate::sip::stun::TransactionId),
}

/// Why a request to a registrar failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No final answer in time (64*T1, or the keepalive timeout).
    Timeout,
    /// A final status that says the registrar cannot serve us now (408, 5xx, 6xx).
    Status(u16),
    /// The connection to it failed or closed.
    FlowFailed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("no answer"),
            Failure::Status(c) => write!(f, "status {c}"),
            Failure::FlowFailed => f.write_str("connection failed"),
        }
    }
}

/// What happened, for reports and metrics. Durations are measured on the endpoint's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new registration (first, after a failover, or after waiting), `took` from the first
    /// REGISTER of the attempt to its 2xx (digest round included).
    Registered {
        /// Registrar index.
        registrar: usize,
        /// Granted lifetime, seconds.
        granted: u32,
        /// Time to register.
        took: Duration,
    },
    /// A refresh succeeded; `interval` since the previous refresh (or registration) was sent.
    Refreshed {
        /// Registrar index.
        registrar: usize,
        /// Granted lifetime, seconds.
        granted: u32,
        /// Time between the two REGISTERs.
        interval: Duration,
    },
    /// A refresh failed.
    RefreshFailed {
        /// Registrar index.
        registrar: usize,
        /// How.
        why: Failure,
    },
    /// A keepalive went unanswered.
    KeepaliveFailed {
        /// Registrar index.
        registrar: usize,
        /// How.
        why: Failure,
    },
    /// The binding's lifetime ran out before a refresh succeeded.
    Expired {
        /// Registrar index.
        registrar: usize,
    },
    /// The registrar was declared lost; `detect` runs from the first of the failed probes
    /// being sent to the declaration.
    Lost {
        /// Registrar index.
        registrar: usize,
        /// Time to detect.
        detect: Duration,
        /// Consecutive failures counted.
        failures: u32,
    },
    /// Registered with another registrar after losing one; `recover` runs from the loss to
    /// the new registration, `outage` from the outage seen (the first failed probe) to it.
    FailedOver {
        /// The registrar lost.
        from: usize,
        /// The registrar now used.
        to: usize,
        /// Time to re-register after the loss was declared.
        recover: Duration,
        /// Time from the first failed probe to the registration elsewhere.
        outage: Duration,
    },
    /// A higher-priority registrar answered a probe of ours (it is back).
    ProbeAnswered {
        /// The registrar that answered.
        registrar: usize,
    },
    /// A higher-priority registrar answered a probe and we moved back to it; `took` runs
    /// from the probe's answer to the registration there.
    FellBack {
        /// The backup left.
        from: usize,
        /// The registrar now used.
        to: usize,
        /// Time to re-register.
        took: Duration,
    },
    /// Our REGISTER with Expires: 0 was answered.
    Unregistered {
        /// Registrar index.
        registrar: usize,
    },
    /// The registrar refused us (a 4xx other than a digest challenge, or credentials refused).
    Rejected {
        /// Registrar index.
        registrar: usize,
        /// Status code (0: we could not answer its challenge).
        code: u16,
        /// Reason phrase or what went wrong.
        reason: String,
    },
    /// Every registrar failed in turn; the endpoint waits `retry_after`.
    Exhausted,
    /// A request was retransmitted (UDP), after waiting `interval`.
    Retransmitted {
        /// Registrar index.
        registrar: usize,
        /// REGISTER or OPTIONS.
        method: Method,
        /// The wait since the previous send.
        interval: Duration,
    },
}

/// Where the endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started; the first REGISTER goes at `start`.
    Idle { start: Instant },
    /// A new registration is in flight with `at`; `tried` registrars tried in this round.
    Registering {
        at: usize,
        since: Instant,
        tried: usize,
    },
    /// Registered with `at` until `expires_at`.
    Registered {
        at: usize,
        expires_at: Instant,
        /// When to refresh; `None` while a refresh is in flight.
        refresh_at: Option<Instant>,
        /// When the last REGISTER that succeeded (or the registration) was sent.
        last_sent: Instant,
        expired: bool,
    },
    /// Nothing works; start over at `at` when `until` comes.
    Waiting { until: Instant, at: usize },
    /// Stopped by the owner (an unregistration may still be in flight).
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A new registration (the attempt began at `since`).
    Register { since: Instant },
    /// A refresh of the current registration.
    Refresh,
    /// Registering with a higher-priority registrar while still registered with a backup.
    Fallback { since: Instant },
    /// Expires: 0.
    Unregister,
    /// OPTIONS keepalive to the current registrar.
    Keepalive,
    /// OPTIONS probe of a higher-priority registrar.
    Probe,
}

#[derive(Debug)]
struct Tx {
    registrar: usize,
    purpose: Purpose,
    tx: ClientTransaction,
    branch: String,
    sent: Instant,
    /// The nonce this request answered, if it carried credentials (a 401 with the same nonce
    /// means refused; a new nonce means the server forgot ours, e.g. after a restart).
    authed_nonce: Option<String>,
    /// Our own deadline (keepalives and probes), shorter than the transaction's 64*T1.
    deadline: Option<Instant>,
    retransmits_seen: usize,
}

/// One endpoint's registration state.
#[derive(Debug)]
pub struct Endpoint {
    policy: Arc<Policy>,
    id: Identity,
    /// Random per endpoint: Call-IDs are `<base>-r<registrar>` (REGISTER, one per registrar as
    /// RFC 3261 10.2.4 asks) and `<base>-o` (OPTIONS).
    base: String,
    /// The RFC 5626 instance id (a UUID), when the policy asks for one.
    instance: String,
    /// Our own address, when this endpoint has a socket of its own (else the policy's).
    local: Option<SocketAddr>,
    from_tag: String,
    cseq: u32,
    requested: u32,
    phase: Phase,
    txs: Vec<Tx>,
    /// A CRLF or STUN ping in flight: registrar, when sent, deadline.
    ping: Option<(usize, Instant, Instant)>,
    /// The STUN transaction id of the ping in flight.
    stun_id: Option<crate::sip::stun::TransactionId>,
    /// This endpoint's number in its fleet: the first bytes of its STUN transaction ids, by
    /// which the fleet routes the answers.
    index: u32,
    keepalive_at: Option<Instant>,
    probe_at: Option<Instant>,
    failures: u32,
    first_failure: Option<Instant>,
    /// The registrar lost, when, and when its outage was first seen (the first failed probe
    /// was sent), until the next registration (for `FailedOver`).
    lost: Option<(usize, Instant, Instant)>,
    challenges: Vec<Option<(Challenge, u32)>>,
    /// The fleet's epoch and this endpoint's phase in [0, 1), to spread periodic work.
    epoch: Instant,
    phase_frac: f64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

/// A random (version 4) UUID, for `+sip.instance` (RFC 5626 4.1, RFC 4122).
fn uuid() -> String {
    let t = format!("{}{}", token(), token());
    let b = t.as_bytes();
    let s = |a: usize, z: usize| std::str::from_utf8(&b[a..z]).unwrap_or("0");
    format!(
        "{}-{}-4{}-{}{}-{}",
        s(0, 8),
        s(8, 12),
        s(13, 16),
        ["8", "9", "a", "b"][usize::from(b[16] % 4)],
        s(17, 20),
        s(20, 32)
    )
}

/// The earliest time at or after `after` that sits at `frac` of a `period` counted from
/// `epoch`.
fn aligned(epoch: Instant, frac: f64, period: Duration, after: Instant) -> Instant {
    if period.is_zero() {
        return after;
    }
    let p = period.as_secs_f64();
    let since = after.saturating_duration_since(epoch).as_secs_f64();
    let offset = frac * p;
    let cycles = ((since - offset) / p).ceil().max(0.0);
    let t = epoch + Duration::from_secs_f64(cycles * p + offset);
    if t < after { t + period } else { t }
}

impl Endpoint {
    /// An endpoint that sends its first REGISTER to the primary at `start`. `epoch` and
    /// `phase` (in [0, 1)) place its periodic work (refreshes, keepalives, probes) within
    /// each period, so that a fleet spreads it evenly.
    pub fn new(
        policy: Arc<Policy>,
        id: Identity,
        start: Instant,
        epoch: Instant,
        phase: f64,
    ) -> Endpoint {
        let n = policy.registrars.len();
        Endpoint {
            requested: policy.expires,
            policy,
            id,
            base: token(),
            instance: uuid(),
            local: None,
            stun_id: None,
            index: 0,
            from_tag: token(),
            cseq: 0,
            phase: Phase::Idle { start },
            txs: Vec::new(),
            ping: None,
            keepalive_at: None,
            probe_at: None,
            failures: 0,
            first_failure: None,
            lost: None,
            challenges: vec![None; n],
            epoch,
            phase_frac: phase.clamp(0.0, 0.999_999),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Sets this endpoint's number in its fleet (the first 4 bytes of its STUN ids).
    pub fn set_index(&mut self, index: u32) {
        self.index = index;
    }

    /// A STUN Binding success arrived with transaction id `id`.
    pub fn handle_stun(&mut self, now: Instant, id: &crate::sip::stun::TransactionId) {
        if self.stun_id.as_ref() == Some(id) {
            self.stun_id = None;
            if let Some((r, _, _)) = self.ping {
                self.handle_pong(now, r);
            }
        }
    }

    /// Gives this endpoint an address of its own (its own UDP socket: an SBC that keys on the
    /// source address sees one phone per endpoint).
    pub fn set_local(&mut self, local: SocketAddr) {
        self.local = Some(local);
    }

    fn local(&self) -> SocketAddr {
        self.local.unwrap_or(self.policy.local)
    }

    /// The user part.
    pub fn user(&self) -> &str {
        &self.id.user
    }

    /// The Call-ID prefix this endpoint uses (a fleet routes responses by it).
    pub fn call_id_base(&self) -> &str {
        &self.base
    }

    /// The registrar this endpoint holds a live binding with at `now`.
    pub fn registered_with(&self, now: Instant) -> Option<usize> {
        match self.phase {
            Phase::Registered {
                at,
                expires_at,
                expired: false,
                ..
            } if now < expires_at => Some(at),
            _ => None,
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Idle { start } => Some(start),
            Phase::Registered {
                expires_at,
                refresh_at,
                expired,
                ..
            } => match (refresh_at, expired) {
                (Some(r), false) => Some(r.min(expires_at)),
                (Some(r), true) => Some(r),
                (None, false) => Some(expires_at),
                (None, true) => None,
            },
            Phase::Waiting { until, .. } => Some(until),
            Phase::Registering { .. } | Phase::Stopped => None,
        };
        let txs = self
            .txs
            .iter()
            .filter_map(|t| match (t.tx.poll_timeout(), t.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
            .min();
        [
            phase,
            txs,
            self.ping.map(|p| p.2),
            self.keepalive_at,
            self.probe_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Transactions first: their outcomes may change the phase.
        let mut done = Vec::new();
        for i in 0..self.txs.len() {
            if self.txs[i].tx.poll_timeout().is_some_and(|t| t <= now) {
                self.txs[i].tx.handle_timeout(now);
            }
            if let Some(outcome) = self.drain_tx(i) {
                done.push((i, outcome));
            } else if self.txs[i].deadline.is_some_and(|d| d <= now) {
                done.push((i, Outcome::Failed(Failure::Timeout)));
            }
        }
        self.finish(now, done);
        if let Some((r, sent, deadline)) = self.ping
            && deadline <= now
        {
            self.ping = None;
            self.keepalive_failed(now, r, sent, Failure::Timeout);
        }
        match self.phase {
            Phase::Idle { start } if start <= now => self.register(now, 0, now, 1),
            Phase::Waiting { until, at } if until <= now => self.register(now, at, now, 1),
            Phase::Registered {
                at,
                expires_at,
                refresh_at,
                expired,
                ..
            } => {
                if !expired && expires_at <= now {
                    if let Phase::Registered { expired, .. } = &mut self.phase {
                        *expired = true;
                    }
                    self.events.push_back(Event::Expired { registrar: at });
                }
                if refresh_at.is_some_and(|r| r <= now) {
                    self.refresh(now, at);
                }
            }
            _ => {}
        }
        if self.keepalive_at.is_some_and(|k| k <= now) {
            self.send_keepalive(now);
        }
        if self.probe_at.is_some_and(|p| p <= now) {
            self.send_probes(now);
        }
    }

    /// A response arrived for this endpoint (a fleet routes by Call-ID); matched to its
    /// transaction by the top Via branch. Anything unmatched is ignored.
    pub fn handle_response(&mut self, now: Instant, resp: Message) {
        let Some(branch) = resp.top_via().ok().and_then(|v| v.branch) else {
            return;
        };
        let Some(i) = self.txs.iter().position(|t| t.branch == branch) else {
            return;
        };
        self.txs[i].tx.handle_response(resp, now);
        if let Some(outcome) = self.drain_tx(i) {
            self.finish(now, vec![(i, outcome)]);
        }
    }

    /// A CRLF pong arrived on the connection to `registrar`.
    pub fn handle_pong(&mut self, _now: Instant, registrar: usize) {
        if self.ping.is_some_and(|p| p.0 == registrar) {
            self.ping = None;
            self.answered(registrar);
        }
    }

    /// The connection to `registrar` failed or closed: what was in flight on it failed.
    pub fn handle_flow_failed(&mut self, now: Instant, registrar: usize) {
        if !self.policy.protocol.reliable() {
            return;
        }
        let done: Vec<_> = (0..self.txs.len())
            .filter(|&i| self.txs[i].registrar == registrar)
            .map(|i| (i, Outcome::Failed(Failure::FlowFailed)))
            .collect();
        let had_ping = self.ping.take_if(|p| p.0 == registrar);
        self.finish(now, done);
        if let Some((r, sent, _)) = had_ping {
            self.keepalive_failed(now, r, sent, Failure::FlowFailed);
        }
    }

    /// Stops: unregisters from the current registrar (Expires: 0) and does nothing more.
    pub fn stop(&mut self, now: Instant) {
        if let Phase::Registered { at, .. } = self.phase {
            self.unregister(now, at);
        }
        self.txs.retain(|t| t.purpose == Purpose::Unregister);
        self.phase = Phase::Stopped;
        self.ping = None;
        self.keepalive_at = None;
        self.probe_at = None;
    }

    /// Whether nothing is left in flight after [`Endpoint::stop`].
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Stopped && self.txs.is_empty()
    }

    fn current(&self) -> Option<usize> {
        match self.phase {
            Phase::Registered { at, .. } => Some(at),
            _ => None,
        }
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    fn contact_uri(&self) -> Uri {
        let a = self.local();
        let mut u = Uri::new(Some(&self.id.user), &a.ip().to_string(), Some(a.port()));
        if self.policy.protocol != Protocol::Udp {
            u.set_param(
                "transport",
                Some(&self.policy.protocol.via().to_ascii_lowercase()),
            );
        }
        u
    }

    fn request(&mut self, method: Method, registrar: usize, call_id: String) -> Message {
        let spec = &self.policy.registrars[registrar];
        let mut from = NameAddr::new(spec.aor(Some(&self.id.user)));
        from.set_param("tag", Some(&self.from_tag));
        let to = if method == Method::Register {
            NameAddr::new(spec.aor(Some(&self.id.user)))
        } else {
            NameAddr::new(spec.request_uri.clone())
        };
        let uri = spec.request_uri.clone();
        let cseq = self.next_cseq();
        let mut m = Message::request(method.clone(), uri);
        m.push("Via", via_header(self.policy.protocol, self.local()))
            .push("Max-Forwards", "70");
        if let Some(o) = &self.policy.outbound {
            m.push("Route", format!("<{}>", o.route));
        }
        m.push("From", from.to_string())
            .push("To", to.to_string())
            .push("Call-ID", call_id)
            .push("CSeq", format!("{cseq} {}", method.as_str()));
        m
    }

    fn register_request(&mut self, registrar: usize, expires: u32) -> Message {
        let call_id = format!("{}-r{registrar}", self.base);
        let mut m = self.request(Method::Register, registrar, call_id);
        let mut contact = format!("<{}>", self.contact_uri());
        if self.policy.instance_id {
            // RFC 5626 4.1: one instance URN per device, a reg-id per flow (per registrar).
            contact.push_str(&format!(
                ";+sip.instance=\"<urn:uuid:{}>\";reg-id={}",
                self.instance,
                registrar + 1
            ));
            m.push("Supported", "outbound, path");
        }
        m.push("Contact", contact)
            .push("Expires", expires.to_string())
            .push(
                "User-Agent",
                concat!("srtp-control/", env!("CARGO_PKG_VERSION")),
            );
        if let Some((user, pass)) = &self.id.auth
            && let Some((ch, nc)) = &mut self.challenges[registrar]
        {
            *nc += 1;
            let uri = self.policy.registrars[registrar].request_uri.to_string();
            let v = ch.respond(user, pass, "REGISTER", &uri, &token(), *nc);
            m.push("Authorization", v);
        }
        m
    }
}

#[derive(Debug)]
enum Outcome {
    Answered(Message),
    Failed(Failure),
}
