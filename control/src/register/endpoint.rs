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

use zeroize::Zeroizing;

use crate::sip::auth::Challenge;
use crate::sip::message::{Message, Method};
use crate::sip::transaction::{ClientTransaction, TimerValues, TxEvent};
use crate::sip::transport::Protocol;
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::{token, via_header};

/// A registrar to register with: the four things a phone is configured with are kept apart
/// (the domain of its address of record, the registrar's address, the name its TLS
/// certificate must carry, and an outbound proxy in [`Policy::outbound`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarSpec {
    /// A name for reports (`primary`, `backup`, a host name).
    pub name: String,
    /// The registrar's address.
    pub addr: SocketAddr,
    /// The domain of our address of record: From and To are `sip:<user>@<domain>` (a host,
    /// with a port only when one was given).
    pub domain: Uri,
    /// The Request-URI of REGISTER, and of the OPTIONS probes and keepalives: the registrar
    /// itself with its port, so that it takes them as its own (a proxy on port 5070 relays a
    /// request for `sip:127.0.0.1`, which means port 5060, elsewhere).
    pub request_uri: Uri,
    /// The name its TLS certificate must carry.
    pub tls_name: String,
}

impl RegistrarSpec {
    /// A registrar at `addr`, known as `host` (a name, or the address's IP), with the
    /// defaults: the domain is `host`, the Request-URI `sip:<host>:<port>` (no port when it is
    /// the transport's default), the TLS name `host`.
    pub fn at(name: &str, host: &str, addr: SocketAddr, protocol: Protocol) -> RegistrarSpec {
        let default_port = if protocol == Protocol::Tls {
            5061
        } else {
            5060
        };
        let port = (addr.port() != default_port).then_some(addr.port());
        let mut request_uri = Uri::new(None, host, port);
        if protocol != Protocol::Udp {
            request_uri.set_param("transport", Some(&protocol.via().to_ascii_lowercase()));
        }
        RegistrarSpec {
            name: name.to_owned(),
            addr,
            domain: Uri::new(None, host, None),
            request_uri,
            tls_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        }
    }

    /// The address of record of `user` (or of the domain alone).
    pub fn aor(&self, user: Option<&str>) -> Uri {
        Uri::new(user, &self.domain.host, self.domain.port)
    }
}

/// A proxy every request goes through (RFC 3261 8.1.2: a pre-loaded Route with `lr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundProxy {
    /// Its address.
    pub addr: SocketAddr,
    /// The Route our requests carry: `sip:<host>:<port>;lr`.
    pub route: Uri,
    /// The name its TLS certificate must carry.
    pub tls_name: String,
}

/// How quickly a registrar that stops answering is declared lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detection {
    /// After a failed keepalive or refresh, probe again at once; declare the registrar lost
    /// after `failures` consecutive failures.
    Fast,
    /// Keep the normal keepalive interval after a failure, so `failures` failures span several
    /// intervals: a lossy network does not cause failovers.
    Tolerant,
}

/// The settings every endpoint of a fleet shares.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Registrars in order of preference (the first is the primary).
    pub registrars: Vec<RegistrarSpec>,
    /// Signaling transport.
    pub protocol: Protocol,
    /// Our address, for Via and Contact.
    pub local: SocketAddr,
    /// Requested registration lifetime, seconds (3600).
    pub expires: u32,
    /// Refresh this long before the granted lifetime ends (5 s).
    pub refresh_before: Duration,
    /// Spread refreshes: the first refresh after a registration may come early, to land on the
    /// endpoint's phase of the refresh interval.
    pub spread_refreshes: bool,
    /// Transaction timers (T1 sets the retransmission start and the 64*T1 give-up).
    pub timers: TimerValues,
    /// CRLF ping interval on TCP/TLS (RFC 5626 4.4.1); `None`: no CRLF keepalive.
    pub crlf_keepalive: Option<Duration>,
    /// OPTIONS ping interval on any transport; `None`: no OPTIONS keepalive.
    pub options_keepalive: Option<Duration>,
    /// STUN keepalive interval over UDP (RFC 5626 4.4.2); `None`: none.
    pub stun_keepalive: Option<Duration>,
    /// How long a keepalive may wait for its pong or response (10 s, RFC 5626 4.4.1).
    pub keepalive_timeout: Duration,
    /// Failure detection mode.
    pub detection: Detection,
    /// Consecutive failures that declare a registrar lost.
    pub failures: u32,
    /// While on a backup, how often to probe the higher-priority registrars.
    pub probe_interval: Duration,
    /// After every registrar failed (or a registrar refused us), wait this long to start over.
    pub retry_after: Duration,
    /// A proxy every request goes through, whatever the registrar.
    pub outbound: Option<OutboundProxy>,
    /// RFC 5626 outbound: Contacts carry `+sip.instance` (a URN per endpoint) and `reg-id`.
    pub instance_id: bool,
}

impl Policy {
    /// Defaults for these registrars: Expires 3600, refresh 5 s early, spread refreshes, RFC
    /// 3261 timers, no keepalive, fast detection after 2 failures, probes every 30 s, retry
    /// after 30 s.
    pub fn new(registrars: Vec<RegistrarSpec>, protocol: Protocol, local: SocketAddr) -> Policy {
        Policy {
            registrars,
            protocol,
            local,
            expires: 3600,
            refresh_before: Duration::from_secs(5),
            spread_refreshes: true,
            timers: TimerValues::default(),
            crlf_keepalive: None,
            options_keepalive: None,
            stun_keepalive: None,
            keepalive_timeout: Duration::from_secs(10),
            detection: Detection::Fast,
            failures: 2,
            probe_interval: Duration::from_secs(30),
            retry_after: Duration::from_secs(30),
            outbound: None,
            instance_id: false,
        }
    }

    /// Where requests for `registrar` go, and the TLS name to verify there: the outbound
    /// proxy when there is one, else the registrar.
    pub fn next_hop(&self, registrar: usize) -> (SocketAddr, &str) {
        match &self.outbound {
            Some(o) => (o.addr, &o.tls_name),
            None => {
                let r = &self.registrars[registrar];
                (r.addr, &r.tls_name)
            }
        }
    }

    /// The keepalive in use: CRLF on reliable transports and STUN over UDP when configured,
    /// else OPTIONS.
    pub fn keepalive(&self) -> Option<(KeepaliveKind, Duration)> {
        let reliable = self.protocol.reliable();
        match (
            self.crlf_keepalive,
            self.stun_keepalive,
            self.options_keepalive,
        ) {
            (Some(k), _, _) if reliable => Some((KeepaliveKind::Crlf, k)),
            (_, Some(k), _) if !reliable => Some((KeepaliveKind::Stun, k)),
            (_, _, Some(k)) => Some((KeepaliveKind::Options, k)),
            _ => None,
        }
    }

    /// The longest time from a registrar's death to its declaration as lost, when keepalives
    /// run (`None` otherwise: detection then rides on refreshes). With interval K, timeout P and
    /// N failures: fast mode sends its first probe within K and then N probes back to back
    /// (K + N*P); tolerant mode needs N probes K apart (N*K + P).
    pub fn detection_budget(&self) -> Option<Duration> {
        let (_, k) = self.keepalive()?;
        let p = self.keepalive_timeout;
        let n = self.failures.max(1);
        Some(match self.detection {
            Detection::Fast => k + p * n,
            Detection::Tolerant => k * n + p,
        })
    }
}

/// Which keepalive an endpoint sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveKind {
    /// RFC 5626 double-CRLF ping, single-CRLF pong.
    Crlf,
    /// RFC 5626 4.4.2: a STUN Binding request over UDP, answered by the registrar.
    Stun,
    /// An OPTIONS request; any response proves the registrar alive.
    Options,
}

/// Who an endpoint is.
pub struct Identity {
    /// User part of the address of record (and of the Contact).
    pub user: String,
    /// Digest credentials: user name and password (zeroized on drop).
    pub auth: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("auth_user", &self.auth.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

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

    fn start_tx(&mut self, now: Instant, registrar: usize, purpose: Purpose, req: Message) {
        let branch = req
            .top_via()
            .ok()
            .and_then(|v| v.branch)
            .unwrap_or_default();
        let authed_nonce = req
            .header("Authorization")
            .and_then(|a| crate::sip::auth::Authorization::parse(a).ok())
            .map(|a| a.nonce);
        let deadline = matches!(purpose, Purpose::Keepalive | Purpose::Probe)
            .then(|| now + self.policy.keepalive_timeout);
        let mut tx = ClientTransaction::new(
            req,
            self.policy.protocol.reliable(),
            self.policy.timers,
            now,
        );
        while let Some(ev) = tx.poll_event() {
            if let TxEvent::Transmit(m) = ev {
                self.out.push_back(Transmit {
                    registrar,
                    payload: Payload::Sip(m),
                });
            }
        }
        self.txs.push(Tx {
            registrar,
            purpose,
            tx,
            branch,
            sent: now,
            authed_nonce,
            deadline,
            retransmits_seen: 0,
        });
    }

    /// Drains a transaction's events: sends go out, retransmissions are reported, and a final
    /// response or a timeout is returned.
    fn drain_tx(&mut self, i: usize) -> Option<Outcome> {
        let t = &mut self.txs[i];
        let mut outcome = None;
        while let Some(ev) = t.tx.poll_event() {
            match ev {
                TxEvent::Transmit(m) => self.out.push_back(Transmit {
                    registrar: t.registrar,
                    payload: Payload::Sip(m),
                }),
                TxEvent::Deliver(r) if r.code().is_some_and(|c| c >= 200) => {
                    outcome = Some(Outcome::Answered(r));
                }
                TxEvent::Deliver(_) => {}
                TxEvent::Timeout => outcome = Some(Outcome::Failed(Failure::Timeout)),
            }
        }
        let method = if t.purpose == Purpose::Keepalive || t.purpose == Purpose::Probe {
            Method::Options
        } else {
            Method::Register
        };
        for r in &t.tx.retransmits()[t.retransmits_seen..] {
            self.events.push_back(Event::Retransmitted {
                registrar: t.registrar,
                method: method.clone(),
                interval: r.interval,
            });
        }
        t.retransmits_seen = t.tx.retransmits().len();
        outcome
    }

    /// Removes the finished transactions and acts on their outcomes.
    fn finish(&mut self, now: Instant, mut done: Vec<(usize, Outcome)>) {
        done.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        let finished: Vec<(Tx, Outcome)> = done
            .into_iter()
            .map(|(i, o)| (self.txs.swap_remove(i), o))
            .collect();
        for (tx, outcome) in finished.into_iter().rev() {
            self.on_outcome(now, tx, outcome);
        }
    }

    fn on_outcome(&mut self, now: Instant, tx: Tx, outcome: Outcome) {
        let r = tx.registrar;
        let failure = match outcome {
            Outcome::Failed(f) => f,
            Outcome::Answered(resp) => {
                let code = resp.code().unwrap_or(500);
                match tx.purpose {
                    Purpose::Keepalive => {
                        // Any answer proves the registrar alive (even 405).
                        self.answered(r);
                        return;
                    }
                    Purpose::Probe => {
                        self.probe_answered(now, r);
                        return;
                    }
                    Purpose::Unregister => {
                        if (200..300).contains(&code) {
                            self.events.push_back(Event::Unregistered { registrar: r });
                        }
                        return;
                    }
                    Purpose::Register { .. } | Purpose::Refresh | Purpose::Fallback { .. } => {}
                }
                match code {
                    200..=299 => {
                        self.answered(r);
                        self.registered(now, &tx, &resp);
                        return;
                    }
                    401 | 407 => {
                        self.challenged(now, tx, &resp);
                        return;
                    }
                    423 => {
                        let min = resp
                            .header("Min-Expires")
                            .and_then(|v| v.trim().parse::<u32>().ok());
                        match min {
                            Some(m) if m > self.requested => {
                                self.requested = m;
                                self.resend(now, &tx);
                            }
                            _ => self.rejected(now, &tx, code, "423 without a usable Min-Expires"),
                        }
                        return;
                    }
                    408 | 500..=699 => Failure::Status(code),
                    _ => {
                        let reason = match &resp.start {
                            crate::sip::StartLine::Response { reason, .. } => reason.clone(),
                            crate::sip::StartLine::Request { .. } => String::new(),
                        };
                        self.rejected(now, &tx, code, &reason);
                        return;
                    }
                }
            }
        };
        match tx.purpose {
            Purpose::Register { .. } => self.register_failed(now, r),
            Purpose::Refresh => {
                self.events.push_back(Event::RefreshFailed {
                    registrar: r,
                    why: failure,
                });
                if self.current() == Some(r) {
                    self.count_failure(now, tx.sent);
                    if self.current() == Some(r) {
                        self.schedule_refresh_retry(now);
                    }
                }
            }
            Purpose::Keepalive => self.keepalive_failed(now, r, tx.sent, failure),
            Purpose::Fallback { .. } | Purpose::Probe | Purpose::Unregister => {}
        }
    }

    /// Any answer from `registrar`: consecutive failures reset.
    fn answered(&mut self, registrar: usize) {
        if self.current() == Some(registrar) {
            self.failures = 0;
            self.first_failure = None;
        }
    }

    fn register(&mut self, now: Instant, at: usize, since: Instant, tried: usize) {
        self.phase = Phase::Registering { at, since, tried };
        self.keepalive_at = None;
        self.probe_at = None;
        self.ping = None;
        let req = self.register_request(at, self.requested);
        self.start_tx(now, at, Purpose::Register { since }, req);
    }

    fn refresh(&mut self, now: Instant, at: usize) {
        if let Phase::Registered { refresh_at, .. } = &mut self.phase {
            *refresh_at = None;
        }
        let req = self.register_request(at, self.requested);
        self.start_tx(now, at, Purpose::Refresh, req);
    }

    fn unregister(&mut self, now: Instant, at: usize) {
        let req = self.register_request(at, 0);
        self.start_tx(now, at, Purpose::Unregister, req);
    }

    /// Sends the same request again (after a challenge or a 423), keeping its purpose.
    fn resend(&mut self, now: Instant, tx: &Tx) {
        let expires = if tx.purpose == Purpose::Unregister {
            0
        } else {
            self.requested
        };
        let req = self.register_request(tx.registrar, expires);
        self.start_tx(now, tx.registrar, tx.purpose, req);
    }

    fn challenged(&mut self, now: Instant, tx: Tx, resp: &Message) {
        let r = tx.registrar;
        let hname = if resp.code() == Some(407) {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        // Not `header_values`: a challenge's parameters are comma-separated.
        let ch = Challenge::pick(
            resp.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(hname))
                .map(|h| h.value.as_str()),
        );
        match (ch, &self.id.auth) {
            (Ok(ch), Some(_)) if tx.authed_nonce.as_ref() != Some(&ch.nonce) || ch.stale => {
                self.challenges[r] = Some((ch, 0));
                self.resend(now, &tx);
            }
            (Ok(_), Some(_)) => {
                self.rejected(now, &tx, resp.code().unwrap_or(401), "credentials refused")
            }
            (Ok(_), None) => self.rejected(now, &tx, 0, "challenged but no credentials configured"),
            (Err(e), _) => self.rejected(now, &tx, 0, &format!("unusable challenge: {e}")),
        }
    }

    fn rejected(&mut self, now: Instant, tx: &Tx, code: u16, reason: &str) {
        self.events.push_back(Event::Rejected {
            registrar: tx.registrar,
            code,
            reason: reason.to_owned(),
        });
        match tx.purpose {
            Purpose::Register { .. } | Purpose::Refresh => {
                // A refusal is not a dead registrar: wait and try it again.
                self.phase = Phase::Waiting {
                    until: now + self.policy.retry_after,
                    at: tx.registrar,
                };
                self.keepalive_at = None;
                self.probe_at = None;
                self.ping = None;
            }
            Purpose::Fallback { .. }
            | Purpose::Unregister
            | Purpose::Keepalive
            | Purpose::Probe => {}
        }
    }

    /// The lifetime granted for our Contact: its `expires` parameter, else the Expires
    /// header, else what we asked for.
    fn granted(&self, resp: &Message) -> u32 {
        let ours = self.contact_uri();
        for v in resp.header_values("Contact") {
            let Ok(na) = NameAddr::parse(v) else { continue };
            if na.uri.user == ours.user
                && na.uri.host == ours.host
                && na.uri.port == ours.port
                && let Some(Some(e)) = na.param("expires")
                && let Ok(e) = e.trim().parse()
            {
                return e;
            }
        }
        resp.header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(self.requested)
    }

    /// When to refresh a registration sent at `sent` and granted `granted` seconds.
    fn refresh_time(&self, sent: Instant, granted: u32) -> Instant {
        let life = Duration::from_secs(u64::from(granted));
        let before = self.policy.refresh_before;
        let interval = if life > before * 2 {
            life - before
        } else {
            life / 2
        };
        let due = sent + interval;
        if !self.policy.spread_refreshes || interval < Duration::from_secs(2) {
            return due;
        }
        // Land on our phase of the interval: never later than due, and not sooner than a
        // tenth of the interval (so a burst does not refresh again at once). Once on the
        // phase, every refresh is exactly one interval after the previous; a phase that falls
        // in the first tenth is reached at the next refresh.
        let earliest = sent + interval / 10;
        let t = aligned(self.epoch, self.phase_frac, interval, earliest);
        if t > due { t - interval } else { t }.max(earliest)
    }

    fn registered(&mut self, now: Instant, tx: &Tx, resp: &Message) {
        let r = tx.registrar;
        let granted = self.granted(resp);
        if granted == 0 {
            self.rejected(now, tx, 200, "registrar granted a lifetime of 0");
            return;
        }
        let expires_at = tx.sent + Duration::from_secs(u64::from(granted));
        match (tx.purpose, self.phase) {
            (Purpose::Refresh, Phase::Registered { at, last_sent, .. }) if at == r => {
                self.phase = Phase::Registered {
                    at,
                    expires_at,
                    refresh_at: Some(self.refresh_time(tx.sent, granted)),
                    last_sent: tx.sent,
                    expired: false,
                };
                self.events.push_back(Event::Refreshed {
                    registrar: r,
                    granted,
                    interval: tx.sent - last_sent,
                });
            }
            (Purpose::Register { since }, Phase::Registering { at, .. }) if at == r => {
                self.enter_registered(now, r, tx.sent, granted);
                self.events.push_back(Event::Registered {
                    registrar: r,
                    granted,
                    took: now - since,
                });
                if let Some((from, lost_at, seen)) = self.lost.take()
                    && from != r
                {
                    self.events.push_back(Event::FailedOver {
                        from,
                        to: r,
                        recover: now - lost_at,
                        outage: now - seen,
                    });
                }
            }
            (Purpose::Fallback { since }, Phase::Registered { at: old, .. }) if r < old => {
                // Make before break: registered at the better registrar, now leave the backup.
                self.txs
                    .retain(|t| !(t.registrar == old && t.purpose != Purpose::Unregister));
                self.unregister(now, old);
                self.enter_registered(now, r, tx.sent, granted);
                self.events.push_back(Event::FellBack {
                    from: old,
                    to: r,
                    took: now - since,
                });
            }
            _ => {
                // A late answer for a registration we no longer want (we moved on): release it.
                if self.current() != Some(r) {
                    self.unregister(now, r);
                }
            }
        }
    }

    fn enter_registered(&mut self, now: Instant, r: usize, sent: Instant, granted: u32) {
        self.phase = Phase::Registered {
            at: r,
            expires_at: sent + Duration::from_secs(u64::from(granted)),
            refresh_at: Some(self.refresh_time(sent, granted)),
            last_sent: sent,
            expired: false,
        };
        self.failures = 0;
        self.first_failure = None;
        self.ping = None;
        self.keepalive_at = self
            .policy
            .keepalive()
            .map(|(_, k)| aligned(self.epoch, self.phase_frac, k, now + k / 10));
        self.probe_at = (r > 0).then(|| {
            let p = self.policy.probe_interval;
            aligned(self.epoch, self.phase_frac, p, now + p / 10)
        });
    }

    fn register_failed(&mut self, now: Instant, r: usize) {
        let Phase::Registering { at, since, tried } = self.phase else {
            return;
        };
        if at != r {
            return;
        }
        let n = self.policy.registrars.len();
        if tried < n {
            self.register(now, (at + 1) % n, since, tried + 1);
        } else {
            self.events.push_back(Event::Exhausted);
            self.phase = Phase::Waiting {
                until: now + self.policy.retry_after,
                at: 0,
            };
        }
    }

    fn schedule_refresh_retry(&mut self, now: Instant) {
        let retry = match self.policy.detection {
            Detection::Fast => now,
            Detection::Tolerant => {
                let left = match self.phase {
                    Phase::Registered { expires_at, .. } => {
                        expires_at.saturating_duration_since(now)
                    }
                    _ => Duration::ZERO,
                };
                now + (left / 2)
                    .min(self.policy.retry_after)
                    .max(Duration::from_secs(1))
            }
        };
        if let Phase::Registered { refresh_at, .. } = &mut self.phase {
            *refresh_at = Some(retry);
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        let Some((kind, k)) = self.policy.keepalive() else {
            self.keepalive_at = None;
            return;
        };
        self.keepalive_at = Some(now + k);
        let Some(at) = self.current() else { return };
        let in_flight =
            self.ping.is_some() || self.txs.iter().any(|t| t.purpose == Purpose::Keepalive);
        if in_flight {
            return;
        }
        match kind {
            KeepaliveKind::Crlf => {
                self.ping = Some((at, now, now + self.policy.keepalive_timeout));
                self.out.push_back(Transmit {
                    registrar: at,
                    payload: Payload::Ping,
                });
            }
            KeepaliveKind::Stun => {
                let mut id = [0u8; 12];
                id[..4].copy_from_slice(&self.index.to_be_bytes());
                id[4..]
                    .copy_from_slice(&u64::from_str_radix(&token(), 16).unwrap_or(0).to_be_bytes());
                self.stun_id = Some(id);
                self.ping = Some((at, now, now + self.policy.keepalive_timeout));
                self.out.push_back(Transmit {
                    registrar: at,
                    payload: Payload::Stun(id),
                });
            }
            KeepaliveKind::Options => {
                let req = self.options_request(at);
                self.start_tx(now, at, Purpose::Keepalive, req);
            }
        }
    }

    fn options_request(&mut self, at: usize) -> Message {
        let call_id = format!("{}-o", self.base);
        let mut m = self.request(Method::Options, at, call_id);
        m.push("Accept", "application/sdp");
        m
    }

    fn send_probes(&mut self, now: Instant) {
        let Some(at) = self.current() else {
            self.probe_at = None;
            return;
        };
        self.probe_at = (at > 0).then(|| now + self.policy.probe_interval);
        let busy = self
            .txs
            .iter()
            .any(|t| matches!(t.purpose, Purpose::Probe | Purpose::Fallback { .. }));
        if busy {
            return;
        }
        for r in 0..at {
            let req = self.options_request(r);
            self.start_tx(now, r, Purpose::Probe, req);
        }
    }

    fn probe_answered(&mut self, now: Instant, r: usize) {
        let Some(at) = self.current() else { return };
        if r >= at
            || self
                .txs
                .iter()
                .any(|t| matches!(t.purpose, Purpose::Fallback { .. }))
        {
            return;
        }
        self.events.push_back(Event::ProbeAnswered { registrar: r });
        // The best registrar that answered wins: drop the probes of worse ones.
        self.txs
            .retain(|t| t.purpose != Purpose::Probe || t.registrar < r);
        let req = self.register_request(r, self.requested);
        self.start_tx(now, r, Purpose::Fallback { since: now }, req);
    }

    fn keepalive_failed(&mut self, now: Instant, r: usize, sent: Instant, why: Failure) {
        if self.current() != Some(r) {
            return;
        }
        self.events
            .push_back(Event::KeepaliveFailed { registrar: r, why });
        self.count_failure(now, sent);
        if self.current() == Some(r) && self.policy.detection == Detection::Fast {
            // Probe again at once rather than after a full interval.
            let k = self.keepalive_at;
            self.send_keepalive(now);
            self.keepalive_at = k;
        }
    }

    /// One more consecutive failure of the current registrar, whose failed probe was sent at
    /// `sent`; at the limit, the registrar is lost and the next one is tried.
    fn count_failure(&mut self, now: Instant, sent: Instant) {
        let Some(at) = self.current() else { return };
        self.failures += 1;
        let first = *self.first_failure.get_or_insert(sent);
        if self.failures < self.policy.failures.max(1) {
            return;
        }
        self.events.push_back(Event::Lost {
            registrar: at,
            detect: now.saturating_duration_since(first),
            failures: self.failures,
        });
        self.txs
            .retain(|t| t.registrar != at && t.purpose != Purpose::Probe);
        self.lost = Some((at, now, first));
        let n = self.policy.registrars.len();
        self.register(now, (at + 1) % n, now, 1);
    }
}

#[derive(Debug)]
enum Outcome {
    Answered(Message),
    Failed(Failure),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(n: usize) -> Arc<Policy> {
        let regs = (0..n)
            .map(|i| {
                let mut r = RegistrarSpec::at(
                    &format!("r{i}"),
                    "127.0.0.1",
                    format!("127.0.0.1:{}", 5060 + i).parse().unwrap(),
                    Protocol::Udp,
                );
                r.domain = Uri::new(None, "example.test", None);
                r
            })
            .collect();
        let mut p = Policy::new(regs, Protocol::Udp, "127.0.0.1:5070".parse().unwrap());
        p.options_keepalive = Some(Duration::from_secs(10));
        p.keepalive_timeout = Duration::from_secs(2);
        Arc::new(p)
    }

    fn ok(req: &Message, expires: Option<u32>) -> Message {
        let mut r = Message::response_to(req, 200, "OK", Some("x"));
        if let Some(e) = expires {
            r.push("Expires", e.to_string());
        }
        r
    }

    fn sent(e: &mut Endpoint) -> Vec<(usize, Message)> {
        let mut v = Vec::new();
        while let Some(t) = e.poll_transmit() {
            if let Payload::Sip(m) = t.payload {
                v.push((t.registrar, m));
            }
        }
        v
    }

    fn endpoint(p: Arc<Policy>, t0: Instant) -> Endpoint {
        Endpoint::new(
            p,
            Identity {
                user: "alice".into(),
                auth: None,
            },
            t0,
            t0,
            0.0,
        )
    }

    #[test]
    fn a_shortened_grant_refreshes_at_expiry_minus_the_delta() {
        let t0 = Instant::now();
        let mut p = (*policy(1)).clone();
        p.spread_refreshes = false;
        p.options_keepalive = None;
        let mut e = endpoint(Arc::new(p), t0);
        e.handle_timeout(t0);
        let (_, reg) = sent(&mut e).pop().unwrap();
        assert_eq!(reg.header("Expires"), Some("3600"));
        e.handle_response(t0, ok(&reg, Some(120)));
        assert!(matches!(
            e.poll_event(),
            Some(Event::Registered { granted: 120, .. })
        ));
        assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(115)));
        let t1 = t0 + Duration::from_secs(115);
        e.handle_timeout(t1);
        let (_, refresh) = sent(&mut e).pop().unwrap();
        assert_eq!(refresh.call_id().unwrap(), reg.call_id().unwrap());
        assert!(refresh.cseq().unwrap().seq > reg.cseq().unwrap().seq);
        e.handle_response(t1, ok(&refresh, Some(120)));
        assert_eq!(
            e.poll_event(),
            Some(Event::Refreshed {
                registrar: 0,
                granted: 120,
                interval: Duration::from_secs(115)
            })
        );
        assert_eq!(e.registered_with(t1), Some(0));
    }

    /// RFC 5626: with instance ids, the Contact carries `+sip.instance` (a version 4 UUID URN)
    /// and a `reg-id` per registrar; the Request-URI and To are the registrar and the address of
    /// record.
    #[test]
    fn instance_ids_and_addressing_in_the_register() {
        let t0 = Instant::now();
        let mut p = (*policy(2)).clone();
        p.instance_id = true;
        let mut e = endpoint(Arc::new(p), t0);
        e.handle_timeout(t0);
        let (_, reg) = sent(&mut e).pop().unwrap();
        let contact = reg.header("Contact").unwrap();
        let uuid = contact
            .split("urn:uuid:")
            .nth(1)
            .and_then(|r| r.split('>').next())
            .unwrap();
        assert_eq!(uuid.len(), 36, "{contact}");
        assert_eq!(uuid.as_bytes()[14], b'4', "version 4: {uuid}");
        assert!(contact.ends_with(";reg-id=1"), "{contact}");
        assert_eq!(reg.header("Supported"), Some("outbound, path"));
        match &reg.start {
            crate::sip::StartLine::Request { uri, .. } => {
                assert_eq!(
                    uri.to_string(),
                    "sip:127.0.0.1",
                    "the registrar on port 5060"
                )
            }
            _ => unreachable!(),
        }
        assert!(reg.to().unwrap().uri.to_string().ends_with("@example.test"));
    }

    #[test]
    fn udp_retransmissions_back_off_from_t1_to_t2() {
        let t0 = Instant::now();
        let mut e = endpoint(policy(2), t0);
        e.handle_timeout(t0);
        assert_eq!(sent(&mut e).len(), 1);
        let mut t = t0;
        let mut intervals = Vec::new();
        while let Some(next) = e.poll_timeout() {
            if next > t0 + Duration::from_secs(31) {
                break;
            }
            t = next;
            e.handle_timeout(t);
            while let Some(ev) = e.poll_event() {
                if let Event::Retransmitted { interval, .. } = ev {
                    intervals.push(interval.as_millis());
                }
            }
        }
        assert_eq!(&intervals[..5], &[500, 1000, 2000, 4000, 4000]);
        let _ = t;
    }

    #[test]
    fn keepalive_loss_fails_over_and_a_probe_answer_falls_back() {
        let t0 = Instant::now();
        let mut e = endpoint(policy(2), t0);
        e.handle_timeout(t0);
        let (_, reg) = sent(&mut e).pop().unwrap();
        e.handle_response(t0, ok(&reg, Some(600)));
        while e.poll_event().is_some() {}
        // The primary goes silent: keepalives time out, twice, back to back (fast).
        let mut t = t0;
        let mut to_backup = None;
        for _ in 0..20 {
            t = e.poll_timeout().unwrap();
            e.handle_timeout(t);
            for (r, m) in sent(&mut e) {
                if r == 1 && m.method() == Some(Method::Register) {
                    to_backup = Some(m);
                }
            }
            if to_backup.is_some() {
                break;
            }
        }
        let mut lost = None;
        while let Some(ev) = e.poll_event() {
            if let Event::Lost {
                detect, failures, ..
            } = ev
            {
                lost = Some((detect, failures));
            }
        }
        let (detect, failures) = lost.expect("primary declared lost");
        assert_eq!(failures, 2);
        assert_eq!(detect, Duration::from_secs(4), "two 2 s keepalive timeouts");
        assert!(t - t0 <= policy(2).detection_budget().unwrap());
        e.handle_response(t, ok(&to_backup.unwrap(), Some(600)));
        let evs: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
        assert!(
            evs.iter()
                .any(|ev| matches!(ev, Event::FailedOver { from: 0, to: 1, .. })),
            "{evs:?}"
        );
        assert_eq!(e.registered_with(t), Some(1));
        // Within a probe interval, the primary is probed; it answers, we move back and
        // unregister from the backup.
        let mut probe = None;
        for _ in 0..20 {
            t = e.poll_timeout().unwrap();
            e.handle_timeout(t);
            for (r, m) in sent(&mut e) {
                if r == 0 && m.method() == Some(Method::Options) {
                    probe = Some(m);
                } else if r == 1 && m.method() == Some(Method::Options) {
                    // Keepalives to the backup are answered.
                    e.handle_response(t, ok(&m, None));
                }
            }
            if probe.is_some() {
                break;
            }
        }
        e.handle_response(t, ok(&probe.unwrap(), None));
        let (r, reg0) = sent(&mut e).pop().unwrap();
        assert_eq!((r, reg0.method()), (0, Some(Method::Register)));
        e.handle_response(t, ok(&reg0, Some(600)));
        let out = sent(&mut e);
        assert!(
            out.iter()
                .any(|(r, m)| *r == 1 && m.header("Expires") == Some("0")),
            "Expires: 0 to the backup"
        );
        assert_eq!(e.registered_with(t), Some(0));
        assert!(
            std::iter::from_fn(|| e.poll_event())
                .any(|ev| matches!(ev, Event::FellBack { from: 1, to: 0, .. }))
        );
    }

    #[test]
    fn a_challenge_is_answered_once_and_a_second_refusal_is_reported() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(
            policy(1),
            Identity {
                user: "bob".into(),
                auth: Some(("bob".into(), Zeroizing::new("pw".into()))),
            },
            t0,
            t0,
            0.0,
        );
        e.handle_timeout(t0);
        let (_, mut req) = sent(&mut e).pop().unwrap();
        // The first challenge is answered, and so is a new nonce (the registrar restarted and
        // forgot ours)...
        for nonce in ["n1", "n2"] {
            let mut c = Message::response_to(&req, 401, "Unauthorized", Some("x"));
            c.push(
                "WWW-Authenticate",
                format!("Digest realm=\"r\", nonce=\"{nonce}\""),
            );
            e.handle_response(t0, c);
            req = sent(&mut e).pop().unwrap().1;
            let auth = req.header("Authorization").unwrap();
            assert!(
                auth.contains("username=\"bob\"") && auth.contains(nonce),
                "{auth}"
            );
        }
        // ...but a refusal of the nonce we just answered means the credentials are wrong.
        let mut c = Message::response_to(&req, 401, "Unauthorized", Some("x"));
        c.push("WWW-Authenticate", "Digest realm=\"r\", nonce=\"n2\"");
        e.handle_response(t0, c);
        assert!(matches!(
            e.poll_event(),
            Some(Event::Rejected { code: 401, .. })
        ));
        assert!(sent(&mut e).is_empty());
        assert_eq!(
            format!("{:?}", e.id).find("pw"),
            None,
            "no password in Debug"
        );
    }

    #[test]
    fn aligned_lands_on_the_phase() {
        let t0 = Instant::now();
        let p = Duration::from_secs(100);
        let a = aligned(t0, 0.25, p, t0 + Duration::from_secs(30));
        assert_eq!(a, t0 + Duration::from_secs(125));
        let a = aligned(t0, 0.25, p, t0 + Duration::from_secs(10));
        assert_eq!(a, t0 + Duration::from_secs(25));
    }
}
