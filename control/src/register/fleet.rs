//! A fleet of endpoints, still sans-IO: one timer heap over all of them, responses routed to
//! their endpoint by Call-ID, and every event folded into [`FleetStats`].
//!
//! Endpoint `i` of `n` sends its first REGISTER at `epoch + i / rate` and takes phase `i / n`
//! of every periodic interval (refresh, keepalive, probe), so thousands of endpoints refresh
//! evenly spread whatever burst registered them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::endpoint::{Endpoint, Event, Identity, Policy, Transmit};
use crate::sip::message::{Message, Method};

/// A state change of one endpoint, with when it happened (ms since the fleet's epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Endpoint user.
    pub user: String,
    /// `lost`, `failover` or `fallback`.
    pub kind: &'static str,
    /// Registrar index left (or lost).
    pub from: usize,
    /// Registrar index now used (same as `from` for `lost`).
    pub to: usize,
    /// Time to detect (`lost`), to re-register (`failover`, `fallback`), ms.
    pub ms: u64,
}

/// Most transitions kept in full (the counters keep counting past it).
const MAX_TRANSITIONS: usize = 100_000;

/// What a fleet counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetStats {
    /// New registrations (first, after failover or waiting).
    pub registrations: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_failures: u64,
    /// Unanswered keepalives.
    pub keepalive_failures: u64,
    /// Bindings that lapsed before a refresh succeeded.
    pub expirations: u64,
    /// Registrars declared lost.
    pub losses: u64,
    /// Moves to another registrar after a loss.
    pub failovers: u64,
    /// Moves back to a higher-priority registrar.
    pub fallbacks: u64,
    /// Expires: 0 answered.
    pub unregistrations: u64,
    /// Refusals by status code (0: a challenge we could not answer).
    pub rejections: BTreeMap<u16, u64>,
    /// Times every registrar failed in turn.
    pub exhausted: u64,
    /// REGISTER retransmission intervals used (ms, to the nearest 10 -> count).
    pub register_retransmits: BTreeMap<u64, u64>,
    /// OPTIONS retransmission intervals used (ms, to the nearest 10 -> count).
    pub options_retransmits: BTreeMap<u64, u64>,
    /// Time to register (ms), every new registration.
    pub register_ms: Vec<u64>,
    /// Time to detect a lost registrar (ms): from the first failed probe to the declaration.
    pub detect_ms: Vec<u64>,
    /// Failover, as a lab quotes it (ms): from the outage seen (the endpoint's first failed
    /// probe) to registered on the next registrar.
    pub failover_ms: Vec<u64>,
    /// From the loss declared to registered on the next registrar (ms).
    pub recover_ms: Vec<u64>,
    /// Fallback, as a lab quotes it (ms): from the registrar's return (the first of the
    /// fleet's probes it answered) to registered there again with `Expires: 0` sent to the
    /// backup left.
    pub fallback_ms: Vec<u64>,
    /// From the endpoint's own probe's answer to registered back (ms).
    pub fallback_probe_ms: Vec<u64>,
    /// Connection, TLS and authentication errors by cause, with the first one's words.
    pub errors: BTreeMap<String, ErrorCount>,
    /// Refresh intervals seen (ms -> count): how regular refreshes are.
    pub refresh_intervals: BTreeMap<u64, u64>,
    /// Successful refreshes per second since the epoch.
    pub refreshes_per_second: Vec<u32>,
    /// Losses, failovers and fallbacks one by one (the first 100,000).
    pub transitions: Vec<Transition>,
}

/// How often one cause of error happened, and what the first said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// Times seen.
    pub count: u64,
    /// The first one, in words (registrar and what went wrong).
    pub first: String,
}

/// Registered endpoints per registrar at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetSnapshot {
    /// Per registrar, in policy order.
    pub registered: Vec<usize>,
    /// Endpoints with no live binding.
    pub unregistered: usize,
}

/// The fleet.
#[derive(Debug)]
pub struct Fleet {
    policy: Arc<Policy>,
    endpoints: Vec<Endpoint>,
    routes: HashMap<String, usize>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    armed: Vec<Option<Instant>>,
    out: VecDeque<(usize, Transmit)>,
    stats: FleetStats,
    epoch: Instant,
    garbage: u64,
    rate: f64,
    /// Stopping: when it began and how many endpoints are stopped so far (at `rate`).
    stopping: Option<(Instant, usize)>,
    /// Per registrar: lost by some endpoint since it last answered, and when the first probe
    /// of the fleet found it back (the registrar's return, as near as probes can tell).
    down: Vec<bool>,
    back_at: Vec<Option<Instant>>,
}

impl Fleet {
    /// Endpoints for these identities, registering at `rate` per second from `epoch`.
    pub fn new(policy: Policy, ids: Vec<Identity>, epoch: Instant, rate: f64) -> Fleet {
        let n_registrars = policy.registrars.len();
        let policy = Arc::new(policy);
        let n = ids.len().max(1);
        let rate = if rate > 0.0 { rate } else { f64::INFINITY };
        let endpoints: Vec<Endpoint> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let start = epoch + Duration::from_secs_f64(i as f64 / rate);
                Endpoint::new(policy.clone(), id, start, epoch, i as f64 / n as f64)
            })
            .collect();
        let mut endpoints = endpoints;
        for (i, e) in endpoints.iter_mut().enumerate() {
            e.set_index(i as u32);
        }
        let routes = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.call_id_base().to_owned(), i))
            .collect();
        let mut f = Fleet {
            policy,
            armed: vec![None; endpoints.len()],
            endpoints,
            routes,
            heap: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: FleetStats::default(),
            epoch,
            garbage: 0,
            rate,
            stopping: None,
            down: vec![false; n_registrars],
            back_at: vec![None; n_registrars],
        };
        for i in 0..f.endpoints.len() {
            f.rearm(i);
        }
        f
    }

    /// The shared policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the fleet has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Gives endpoint `i` an address of its own (see [`Endpoint::set_local`]).
    pub fn set_local(&mut self, i: usize, local: std::net::SocketAddr) {
        self.endpoints[i].set_local(local);
    }

    /// The user of endpoint `i`.
    pub fn user(&self, i: usize) -> &str {
        self.endpoints[i].user()
    }

    /// The counters and timings so far.
    pub fn stats(&self) -> &FleetStats {
        &self.stats
    }

    /// Counts an error of `cause` (`tls_name_mismatch`, `connect_failed`, ...); returns
    /// whether it is the first of its cause (then say it).
    pub fn record_error(&mut self, cause: &str, words: impl FnOnce() -> String) -> bool {
        let e = self.stats.errors.entry(cause.to_owned()).or_default();
        e.count += 1;
        if e.count == 1 {
            e.first = words();
        }
        e.count == 1
    }

    /// Responses that matched no endpoint (or were requests: we serve none).
    pub fn garbage(&self) -> u64 {
        self.garbage
    }

    /// Registered endpoints per registrar at `now`.
    pub fn snapshot(&self, now: Instant) -> FleetSnapshot {
        let mut registered = vec![0; self.policy.registrars.len()];
        let mut unregistered = 0;
        for e in &self.endpoints {
            match e.registered_with(now) {
                Some(r) => registered[r] += 1,
                None => unregistered += 1,
            }
        }
        FleetSnapshot {
            registered,
            unregistered,
        }
    }

    /// The registrar endpoint `i` is registered with at `now`.
    pub fn registered_with(&self, i: usize, now: Instant) -> Option<usize> {
        self.endpoints[i].registered_with(now)
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.heap.peek().map(|Reverse((t, _))| *t);
        match (timers, self.next_stop()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_stop(&self) -> Option<Instant> {
        let (since, done) = self.stopping?;
        (done < self.endpoints.len())
            .then(|| since + Duration::from_secs_f64(done as f64 / self.rate))
    }

    /// The next message to send, and the endpoint it is from.
    pub fn poll_transmit(&mut self) -> Option<(usize, Transmit)> {
        self.out.pop_front()
    }

    /// Fires every endpoint timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.next_stop()
            && t <= now
        {
            let Some((_, done)) = &mut self.stopping else {
                break;
            };
            let i = *done;
            *done += 1;
            self.endpoints[i].stop(now);
            self.after(i, now);
        }
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.armed[i] != Some(t) {
                continue; // superseded
            }
            self.armed[i] = None;
            self.endpoints[i].handle_timeout(now);
            self.after(i, now);
        }
    }

    /// A message arrived from a registrar: a response goes to its endpoint (by Call-ID);
    /// anything else is counted as garbage.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        let i = if msg.is_request() {
            None
        } else {
            self.route(&msg)
        };
        let Some(i) = i else {
            self.garbage += 1;
            return;
        };
        self.endpoints[i].handle_response(now, msg);
        self.after(i, now);
    }

    fn route(&self, msg: &Message) -> Option<usize> {
        let call_id = msg.call_id().ok()?;
        let (base, _) = call_id.rsplit_once('-')?;
        self.routes.get(base).copied()
    }

    /// A CRLF pong came on endpoint `i`'s connection to `registrar`.
    pub fn handle_pong(&mut self, now: Instant, i: usize, registrar: usize) {
        if let Some(e) = self.endpoints.get_mut(i) {
            e.handle_pong(now, registrar);
            self.after(i, now);
        }
    }

    /// A STUN Binding success came: routed to its endpoint by the first 4 bytes of its
    /// transaction id (the endpoint's number).
    pub fn handle_stun(&mut self, now: Instant, id: &crate::sip::stun::TransactionId) {
        let i = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) as usize;
        if let Some(e) = self.endpoints.get_mut(i) {
            e.handle_stun(now, id);
            self.after(i, now);
        }
    }

    /// Endpoint `i`'s connection to `registrar` failed or closed.
    pub fn handle_flow_failed(&mut self, now: Instant, i: usize, registrar: usize) {
        if let Some(e) = self.endpoints.get_mut(i) {
            e.handle_flow_failed(now, registrar);
            self.after(i, now);
        }
    }

    /// Stops every endpoint, at the registration rate (a fleet that unregisters all at once
    /// is a storm): each unregisters from its registrar.
    pub fn stop(&mut self, now: Instant) {
        if self.stopping.is_none() {
            self.stopping = Some((now, 0));
            self.handle_timeout(now);
        }
    }

    /// How long stopping takes at the registration rate.
    pub fn stop_duration(&self) -> Duration {
        Duration::from_secs_f64(self.endpoints.len() as f64 / self.rate.min(1e9))
    }

    /// Whether every endpoint is stopped with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.stopping
            .is_some_and(|(_, done)| done == self.endpoints.len())
            && self.endpoints.iter().all(Endpoint::is_idle)
    }

    fn rearm(&mut self, i: usize) {
        let t = self.endpoints[i].poll_timeout();
        if t != self.armed[i] {
            self.armed[i] = t;
            if let Some(t) = t {
                self.heap.push(Reverse((t, i)));
            }
        }
    }

    fn after(&mut self, i: usize, now: Instant) {
        while let Some(t) = self.endpoints[i].poll_transmit() {
            self.out.push_back((i, t));
        }
        while let Some(ev) = self.endpoints[i].poll_event() {
            self.record(i, now, ev);
        }
        self.rearm(i);
    }

    fn record(&mut self, i: usize, now: Instant, ev: Event) {
        let ms = |d: Duration| d.as_millis() as u64;
        let at_ms = ms(now.saturating_duration_since(self.epoch));
        let s = &mut self.stats;
        let mut transition = |kind, from, to, d| {
            if s.transitions.len() < MAX_TRANSITIONS {
                s.transitions.push(Transition {
                    at_ms,
                    user: self.endpoints[i].user().to_owned(),
                    kind,
                    from,
                    to,
                    ms: d,
                });
            }
        };
        match ev {
            Event::Registered { took, .. } => {
                s.registrations += 1;
                s.register_ms.push(ms(took));
            }
            Event::Refreshed { interval, .. } => {
                s.refreshes += 1;
                *s.refresh_intervals.entry(ms(interval)).or_default() += 1;
                let sec = (at_ms / 1000) as usize;
                if s.refreshes_per_second.len() <= sec {
                    s.refreshes_per_second.resize(sec + 1, 0);
                }
                s.refreshes_per_second[sec] += 1;
            }
            Event::RefreshFailed { .. } => s.refresh_failures += 1,
            Event::KeepaliveFailed { .. } => s.keepalive_failures += 1,
            Event::Expired { .. } => s.expirations += 1,
            Event::Lost {
                registrar, detect, ..
            } => {
                s.losses += 1;
                s.detect_ms.push(ms(detect));
                transition("lost", registrar, registrar, ms(detect));
                self.down[registrar] = true;
                self.back_at[registrar] = None;
            }
            Event::FailedOver {
                from,
                to,
                recover,
                outage,
            } => {
                s.failovers += 1;
                s.failover_ms.push(ms(outage));
                s.recover_ms.push(ms(recover));
                transition("failover", from, to, ms(outage));
            }
            Event::ProbeAnswered { registrar } => {
                if self.down[registrar] && self.back_at[registrar].is_none() {
                    self.back_at[registrar] = Some(now);
                }
            }
            Event::FellBack { from, to, took } => {
                s.fallbacks += 1;
                let back = self.back_at[to].map_or(took, |b| now.saturating_duration_since(b));
                s.fallback_ms.push(ms(back));
                s.fallback_probe_ms.push(ms(took));
                transition("fallback", from, to, ms(back));
            }
            Event::Unregistered { .. } => s.unregistrations += 1,
            Event::Rejected {
                registrar,
                code,
                reason,
            } => {
                *s.rejections.entry(code).or_default() += 1;
                tracing::debug!(user = self.endpoints[i].user(), code, %reason, "registration refused");
                let cause = match (code, reason.as_str()) {
                    (_, "credentials refused") => "credentials_refused".to_owned(),
                    (0, _) => "challenge_unanswerable".to_owned(),
                    (c, _) => format!("refused_{c}"),
                };
                let user = self.endpoints[i].user().to_owned();
                let name = self.policy.registrars[registrar].name.clone();
                let e = s.errors.entry(cause).or_default();
                e.count += 1;
                if e.count == 1 {
                    e.first = if code == 0 {
                        format!("registrar {name}: {reason} (endpoint {user})")
                    } else {
                        format!("registrar {name} refused {user}: {code} {reason}")
                    };
                }
            }
            Event::Exhausted => s.exhausted += 1,
            Event::Retransmitted {
                method, interval, ..
            } => {
                let map = if method == Method::Register {
                    &mut s.register_retransmits
                } else {
                    &mut s.options_retransmits
                };
                // To the nearest 10 ms: timer wake-ups add a few ms of noise.
                let bucket = (ms(interval) + 5) / 10 * 10;
                *map.entry(bucket).or_default() += 1;
            }
        }
    }
}
