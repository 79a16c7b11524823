//! A small registrar (RFC 3261 10.3), sans-IO: a request and the time go in, the response
//! comes out. It serves the tests and `srtp-control registrar`, a lab's stand-in for the
//! real thing: it shortens lifetimes to `max_expires` (as many servers do), answers 423 below
//! `min_expires`, challenges with digest when told to, removes bindings on Expires: 0, answers
//! OPTIONS, and counts what it saw per second so a test can see how evenly refreshes arrive.
//! It can be "down": it then answers nothing, as a dead server does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sip::auth::{Algorithm, Authorization, Challenge};
use crate::sip::message::{Message, Method};
use crate::sip::token;

/// Where the registrar's passwords come from.
pub type Passwords = Box<dyn Fn(&str) -> Option<String> + Send>;

/// Registrar settings.
pub struct RegistrarConfig {
    /// The longest lifetime granted, seconds (requests above are shortened).
    pub max_expires: u32,
    /// The shortest lifetime accepted (below: 423 with Min-Expires).
    pub min_expires: u32,
    /// Digest-challenge every REGISTER without valid credentials, in this realm.
    pub realm: Option<String>,
    /// The password of a user, for digest checks.
    pub passwords: Passwords,
}

impl std::fmt::Debug for RegistrarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarConfig")
            .field("max_expires", &self.max_expires)
            .field("min_expires", &self.min_expires)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            max_expires: 3600,
            min_expires: 60,
            realm: None,
            passwords: Box::new(|_| None),
        }
    }
}

#[derive(Debug)]
struct Binding {
    call_id: String,
    cseq: u32,
    expires_at: Instant,
}

/// What a registrar counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegistrarCounts {
    /// REGISTER requests that created a binding.
    pub registrations: u64,
    /// REGISTER requests that refreshed one.
    pub refreshes: u64,
    /// Bindings removed by Expires: 0.
    pub removals: u64,
    /// 401s sent.
    pub challenges: u64,
    /// Credentials that did not verify.
    pub auth_failures: u64,
    /// OPTIONS answered.
    pub options: u64,
    /// Requests ignored while down.
    pub ignored: u64,
}

/// The registrar.
#[derive(Debug)]
pub struct Registrar {
    cfg: RegistrarConfig,
    epoch: Instant,
    nonce: String,
    bindings: HashMap<String, Binding>,
    up: bool,
    counts: RegistrarCounts,
    /// Successful REGISTERs (new or refresh) per second since `epoch`.
    per_second: Vec<u32>,
}

impl Registrar {
    /// A registrar whose per-second counts start at `epoch`.
    pub fn new(cfg: RegistrarConfig, epoch: Instant) -> Registrar {
        Registrar {
            cfg,
            epoch,
            nonce: token(),
            bindings: HashMap::new(),
            up: true,
            counts: RegistrarCounts::default(),
            per_second: Vec::new(),
        }
    }

    /// Stops (`false`) or resumes (`true`) answering.
    pub fn set_up(&mut self, up: bool) {
        self.up = up;
    }

    /// Whether it answers.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Live bindings at `now`.
    pub fn bindings(&self, now: Instant) -> usize {
        self.bindings
            .values()
            .filter(|b| b.expires_at > now)
            .count()
    }

    /// Whether `user` holds a live binding at `now`.
    pub fn is_bound(&self, user: &str, now: Instant) -> bool {
        self.bindings.get(user).is_some_and(|b| b.expires_at > now)
    }

    /// The counters.
    pub fn counts(&self) -> &RegistrarCounts {
        &self.counts
    }

    /// Successful REGISTERs per second since the epoch.
    pub fn per_second(&self) -> &[u32] {
        &self.per_second
    }

    /// Answers a request, or nothing when down (or for an ACK, or a request too broken to
    /// answer).
    pub fn handle_request(&mut self, now: Instant, req: &Message) -> Option<Message> {
        if !self.up {
            self.counts.ignored += 1;
            return None;
        }
        if req.validate().is_err() {
            return Some(Message::response_to(req, 400, "Bad Request", None));
        }
        let method = req.method()?;
        let tag = Some("reg");
        match method {
            Method::Register => Some(self.register(now, req)),
            Method::Options => {
                self.counts.options += 1;
                let mut r = Message::response_to(req, 200, "OK", tag);
                r.push("Allow", "REGISTER, OPTIONS");
                Some(r)
            }
            Method::Ack => None,
            _ => {
                let mut r = Message::response_to(req, 405, "Method Not Allowed", tag);
                r.push("Allow", "REGISTER, OPTIONS");
                Some(r)
            }
        }
    }

    fn register(&mut self, now: Instant, req: &Message) -> Message {
        let tag = Some("reg");
        let Ok(to) = req.to() else {
            return Message::response_to(req, 400, "Bad To", tag);
        };
        let Some(user) = to.uri.user.clone() else {
            return Message::response_to(req, 404, "Not Found", tag);
        };
        if let Some(realm) = self.cfg.realm.clone() {
            let ok = req
                .header("Authorization")
                .and_then(|a| Authorization::parse(a).ok())
                .is_some_and(|a| {
                    a.nonce == self.nonce
                        && a.realm == realm
                        && (self.cfg.passwords)(&a.username)
                            .is_some_and(|p| a.verify(&p, "REGISTER"))
                });
            if !ok {
                if req.header("Authorization").is_some() {
                    self.counts.auth_failures += 1;
                }
                self.counts.challenges += 1;
                let mut r = Message::response_to(req, 401, "Unauthorized", tag);
                let ch = Challenge {
                    realm,
                    nonce: self.nonce.clone(),
                    opaque: None,
                    algorithm: Algorithm::Md5,
                    qop_auth: true,
                    stale: false,
                };
                r.push("WWW-Authenticate", ch.to_header());
                return r;
            }
        }
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let contact = req.contact();
        let asked = contact
            .as_ref()
            .and_then(|c| c.param("expires").flatten())
            .or(req.header("Expires"))
            .and_then(|e| e.trim().parse::<u32>().ok())
            .unwrap_or(3600);
        if asked == 0 {
            if self.bindings.remove(&user).is_some() {
                self.counts.removals += 1;
            }
            return Message::response_to(req, 200, "OK", tag);
        }
        if asked < self.cfg.min_expires {
            let mut r = Message::response_to(req, 423, "Interval Too Brief", tag);
            r.push("Min-Expires", self.cfg.min_expires.to_string());
            return r;
        }
        let granted = asked.min(self.cfg.max_expires);
        // RFC 3261 10.3 step 7: same Call-ID with a lower CSeq is out of order. The same CSeq
        // is a retransmission (its answer was lost): answered again, counted once.
        let same = self.bindings.get(&user).filter(|b| b.call_id == call_id);
        if same.is_some_and(|b| cseq < b.cseq) {
            return Message::response_to(req, 500, "Out of Order", tag);
        }
        let retransmission = same.is_some_and(|b| cseq == b.cseq);
        let refresh = same.is_some_and(|b| b.expires_at > now);
        if !retransmission {
            if refresh {
                self.counts.refreshes += 1;
            } else {
                self.counts.registrations += 1;
            }
        }
        self.bindings.insert(
            user,
            Binding {
                call_id,
                cseq,
                expires_at: now + Duration::from_secs(u64::from(granted)),
            },
        );
        if !retransmission {
            let s = now.saturating_duration_since(self.epoch).as_secs() as usize;
            if self.per_second.len() <= s {
                self.per_second.resize(s + 1, 0);
            }
            self.per_second[s] += 1;
        }
        let mut r = Message::response_to(req, 200, "OK", tag);
        if let Some(mut c) = contact {
            c.params.retain(|(n, _)| !n.eq_ignore_ascii_case("expires"));
            r.push("Contact", format!("{c};expires={granted}"));
        }
        r.push("Expires", granted.to_string());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    fn register(user: &str, cseq: u32, expires: u32) -> Message {
        let mut m = Message::request(Method::Register, Uri::new(None, "lab.test", None));
        m.push("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa")
            .push("From", format!("<sip:{user}@lab.test>;tag=1"))
            .push("To", format!("<sip:{user}@lab.test>"))
            .push("Call-ID", "c1")
            .push("CSeq", format!("{cseq} REGISTER"))
            .push("Contact", format!("<sip:{user}@127.0.0.1:5070>"))
            .push("Expires", expires.to_string());
        m
    }

    #[test]
    fn shortens_refuses_too_brief_and_removes() {
        let t0 = Instant::now();
        let mut r = Registrar::new(
            RegistrarConfig {
                max_expires: 120,
                ..RegistrarConfig::default()
            },
            t0,
        );
        let a = r.handle_request(t0, &register("a", 1, 3600)).unwrap();
        assert_eq!(a.code(), Some(200));
        assert_eq!(a.header("Expires"), Some("120"));
        assert!(a.header("Contact").unwrap().ends_with(";expires=120"));
        assert!(r.is_bound("a", t0 + Duration::from_secs(119)));
        assert!(!r.is_bound("a", t0 + Duration::from_secs(121)));
        let b = r.handle_request(t0, &register("a", 2, 10)).unwrap();
        assert_eq!((b.code(), b.header("Min-Expires")), (Some(423), Some("60")));
        let c = r.handle_request(t0, &register("a", 3, 0)).unwrap();
        assert_eq!(c.code(), Some(200));
        assert_eq!(r.bindings(t0), 0);
        r.set_up(false);
        assert!(r.handle_request(t0, &register("a", 4, 60)).is_none());
    }
}
