//! Whether the current registrar is alive and whether a better one is back: keepalives (CRLF,
//! STUN, OPTIONS), probes of higher-priority registrars, and counting failures to a loss.

use super::*;

impl Endpoint {
    pub(super) fn send_keepalive(&mut self, now: Instant) {
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

    pub(super) fn options_request(&mut self, at: usize) -> Message {
        let call_id = format!("{}-o", self.base);
        let mut m = self.request(Method::Options, at, call_id);
        m.push("Accept", "application/sdp");
        m
    }

    pub(super) fn send_probes(&mut self, now: Instant) {
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

    pub(super) fn probe_answered(&mut self, now: Instant, r: usize) {
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

    pub(super) fn keepalive_failed(&mut self, now: Instant, r: usize, sent: Instant, why: Failure) {
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
    pub(super) fn count_failure(&mut self, now: Instant, sent: Instant) {
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
