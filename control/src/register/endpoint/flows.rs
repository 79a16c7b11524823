//! The registration flows of an endpoint: sending REGISTER (new, refresh, fallback,
//! unregister), its transactions, and what each answer means (granted, challenged, refused,
//! failed).

use super::*;

impl Endpoint {
    pub(super) fn start_tx(
        &mut self,
        now: Instant,
        registrar: usize,
        purpose: Purpose,
        req: Message,
    ) {
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
    pub(super) fn drain_tx(&mut self, i: usize) -> Option<Outcome> {
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
    pub(super) fn finish(&mut self, now: Instant, mut done: Vec<(usize, Outcome)>) {
        done.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        let finished: Vec<(Tx, Outcome)> = done
            .into_iter()
            .map(|(i, o)| (self.txs.swap_remove(i), o))
            .collect();
        for (tx, outcome) in finished.into_iter().rev() {
            self.on_outcome(now, tx, outcome);
        }
    }

    pub(super) fn on_outcome(&mut self, now: Instant, tx: Tx, outcome: Outcome) {
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
    pub(super) fn answered(&mut self, registrar: usize) {
        if self.current() == Some(registrar) {
            self.failures = 0;
            self.first_failure = None;
        }
    }

    pub(super) fn register(&mut self, now: Instant, at: usize, since: Instant, tried: usize) {
        self.phase = Phase::Registering { at, since, tried };
        self.keepalive_at = None;
        self.probe_at = None;
        self.ping = None;
        let req = self.register_request(at, self.requested);
        self.start_tx(now, at, Purpose::Register { since }, req);
    }

    pub(super) fn refresh(&mut self, now: Instant, at: usize) {
        if let Phase::Registered { refresh_at, .. } = &mut self.phase {
            *refresh_at = None;
        }
        let req = self.register_request(at, self.requested);
        self.start_tx(now, at, Purpose::Refresh, req);
    }

    pub(super) fn unregister(&mut self, now: Instant, at: usize) {
        let req = self.register_request(at, 0);
        self.start_tx(now, at, Purpose::Unregister, req);
    }

    /// Sends the same request again (after a challenge or a 423), keeping its purpose.
    pub(super) fn resend(&mut self, now: Instant, tx: &Tx) {
        let expires = if tx.purpose == Purpose::Unregister {
            0
        } else {
            self.requested
        };
        let req = self.register_request(tx.registrar, expires);
        self.start_tx(now, tx.registrar, tx.purpose, req);
    }

    pub(super) fn challenged(&mut self, now: Instant, tx: Tx, resp: &Message) {
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

    pub(super) fn rejected(&mut self, now: Instant, tx: &Tx, code: u16, reason: &str) {
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
    pub(super) fn granted(&self, resp: &Message) -> u32 {
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
    pub(super) fn refresh_time(&self, sent: Instant, granted: u32) -> Instant {
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

    pub(super) fn registered(&mut self, now: Instant, tx: &Tx, resp: &Message) {
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

    pub(super) fn enter_registered(&mut self, now: Instant, r: usize, sent: Instant, granted: u32) {
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

    pub(super) fn register_failed(&mut self, now: Instant, r: usize) {
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

    pub(super) fn schedule_refresh_retry(&mut self, now: Instant) {
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
}
