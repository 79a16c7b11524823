//! A call's security verdict, in three parts a lab can check one by one:
//! - **signaling**: how each hop of the INVITE was carried, as far as this end can see it (the
//!   answerer reads every hop from the Via headers; the caller sees only its own first hop);
//! - **media keying**: SDES keys travel inside the SDP, so they are readable by every proxy
//!   and by the network on any hop without TLS; DTLS-SRTP keys never appear in signaling, but
//!   the certificate fingerprint that authenticates the peer is only as trustworthy as the
//!   signaling that carried it;
//! - **the phone-style level** (none, authenticated, encrypted), the one icon a handset shows.

use core::fmt;
use std::net::SocketAddr;

use srtp_engine::proto::dtls::DtlsRole;
use srtp_engine::proto::srtp::Suite;

use super::negotiate::{MediaCrypto, Negotiated};
use crate::sip::message::Message;
use crate::sip::transport::Protocol;

/// One hop of the signaling path: the transport it used and who sent on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// `UDP`, `TCP`, `TLS`, `WSS`, ... as in Via.
    pub transport: String,
    /// The sender (Via sent-by, or our own address).
    pub from: String,
}

impl Hop {
    fn encrypted(&self) -> bool {
        matches!(
            self.transport.as_str(),
            "TLS" | "WSS" | "SCTP-TLS" | "TLS-SCTP"
        )
    }
}

/// How a call's signaling was protected, hop by hop, as far as this end can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signaling {
    /// The hops seen, from the caller towards the answerer.
    pub hops: Vec<Hop>,
    /// More hops may follow that this end cannot see (the caller's view beyond its first hop).
    pub beyond_unseen: bool,
    /// A `sips:` Request-URI: RFC 3261 26.2.2 asks for TLS on every hop.
    pub sips: bool,
}

impl Signaling {
    /// The caller's view: its own hop to the first element (a proxy or the answerer).
    pub fn caller(protocol: Protocol, local: SocketAddr, sips: bool) -> Signaling {
        Signaling {
            hops: vec![Hop {
                transport: protocol.via().to_owned(),
                from: local.to_string(),
            }],
            beyond_unseen: true,
            sips,
        }
    }

    /// The answerer's view: each Via of the INVITE is a hop, the bottom one the caller's.
    pub fn answerer(invite: &Message, sips: bool) -> Signaling {
        let mut hops: Vec<Hop> = invite
            .header_values("Via")
            .filter_map(|v| crate::sip::message::parse_via(v).ok())
            .map(|v| Hop {
                from: match v.port {
                    Some(p) if v.host.contains(':') => format!("[{}]:{p}", v.host),
                    Some(p) => format!("{}:{p}", v.host),
                    None => v.host,
                },
                transport: v.transport,
            })
            .collect();
        hops.reverse();
        Signaling {
            hops,
            beyond_unseen: false,
            sips,
        }
    }

    /// Whether the first hop (ours, as caller; the caller's, as answerer) is TLS.
    pub fn first_hop_tls(&self) -> bool {
        self.hops.first().is_some_and(Hop::encrypted)
    }

    /// The hops seen without encryption.
    pub fn exposed(&self) -> impl Iterator<Item = &Hop> {
        self.hops.iter().filter(|h| !h.encrypted())
    }

    /// TLS on every hop: `Some(true)` when known, `Some(false)` when a hop is seen without,
    /// `None` when every hop seen has it but others are not visible.
    pub fn all_tls(&self) -> Option<bool> {
        if self.exposed().next().is_some() {
            Some(false)
        } else if self.beyond_unseen && !self.sips {
            None
        } else {
            Some(true)
        }
    }
}

impl fmt::Display for Signaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hop = |h: &Hop| {
            if h.encrypted() {
                format!("{} from {}", h.transport, h.from)
            } else {
                format!("{} from {} (unencrypted)", h.transport, h.from)
            }
        };
        if self.beyond_unseen {
            let h = self.hops.first().map(hop).unwrap_or_default();
            write!(f, "{h} on our hop")?;
            if self.sips {
                write!(f, "; sips: asks for TLS on every hop beyond")
            } else {
                write!(f, "; hops beyond it not visible")
            }
        } else {
            let all: Vec<String> = self.hops.iter().map(hop).collect();
            match self.all_tls() {
                Some(true) => write!(f, "TLS on all {} hop(s) seen: ", all.len())?,
                _ => write!(f, "{} hop(s) seen: ", all.len())?,
            }
            write!(f, "{}", all.join(", "))
        }
    }
}

/// How a DTLS-SRTP handshake went, once the engine says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtlsState {
    /// Not reported yet.
    Pending,
    /// The peer's certificate matched the fingerprint; the keys are in place.
    Established {
        /// The SRTP profile chosen.
        suite: Option<Suite>,
    },
    /// The handshake failed: the engine's reason (and alert), verbatim.
    Failed {
        /// `fingerprint_mismatch`, `timeout`, `peer_alert: handshake_failure`, ...
        reason: String,
    },
}

/// How a call's media was protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSecurity {
    /// Plain RTP.
    None,
    /// SDES.
    Sdes {
        /// The suite.
        suite: Suite,
        /// The `a=crypto` tag chosen.
        tag: u32,
    },
    /// DTLS-SRTP.
    Dtls {
        /// Our role.
        role: DtlsRole,
        /// The peer fingerprint's hash algorithm.
        hash: &'static str,
        /// The handshake's outcome.
        state: DtlsState,
    },
}

/// The security level phones show for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// Plain media, or SRTP whose SDES keys crossed a hop without TLS, or a failed handshake.
    None,
    /// TLS on our signaling hop, media unencrypted.
    Authenticated,
    /// SRTP whose keys crossed no hop in the clear that we can see: SDES over TLS, or DTLS.
    Encrypted,
}

/// The security verdict of a call, for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Signaling protection, hop by hop.
    pub signaling: Signaling,
    /// Media protection.
    pub media: MediaSecurity,
}

impl Verdict {
    /// The verdict for a negotiation over this signaling.
    pub fn new(signaling: Signaling, n: &Negotiated) -> Verdict {
        let media = match &n.crypto {
            MediaCrypto::None => MediaSecurity::None,
            MediaCrypto::Sdes { local, .. } => MediaSecurity::Sdes {
                suite: local.suite,
                tag: local.tag,
            },
            MediaCrypto::Dtls {
                role,
                remote_fingerprint,
                ..
            } => MediaSecurity::Dtls {
                role: *role,
                hash: remote_fingerprint.alg().name(),
                state: DtlsState::Pending,
            },
        };
        Verdict { signaling, media }
    }

    /// Records the engine's DTLS outcome.
    pub fn set_dtls(&mut self, outcome: DtlsState) {
        if let MediaSecurity::Dtls { state, .. } = &mut self.media {
            *state = outcome;
        }
    }

    /// The phone-style level.
    pub fn level(&self) -> SecurityLevel {
        let media_secure = match &self.media {
            MediaSecurity::None => false,
            MediaSecurity::Sdes { .. } => self.signaling.exposed().next().is_none(),
            MediaSecurity::Dtls { state, .. } => !matches!(state, DtlsState::Failed { .. }),
        };
        match (media_secure, self.signaling.first_hop_tls(), &self.media) {
            (true, _, _) => SecurityLevel::Encrypted,
            (false, true, MediaSecurity::None) => SecurityLevel::Authenticated,
            _ => SecurityLevel::None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signaling: {}; media: ", self.signaling)?;
        match &self.media {
            MediaSecurity::None => write!(f, "plain RTP (unencrypted)")?,
            MediaSecurity::Sdes { suite, tag } => {
                write!(f, "SRTP keyed by SDES, {suite} (tag {tag}): keys ")?;
                match self.signaling.all_tls() {
                    Some(false) => write!(f, "sent in the clear on a hop without TLS")?,
                    Some(true) => write!(f, "sent over TLS on every hop")?,
                    None => write!(f, "sent over TLS on our hop")?,
                }
                write!(f, ", readable by every proxy on the path")?;
            }
            MediaSecurity::Dtls { role, hash, state } => {
                write!(
                    f,
                    "SRTP keyed by DTLS as {} ({hash} fingerprint ",
                    role.name()
                )?;
                match state {
                    DtlsState::Pending => write!(f, "not yet checked")?,
                    DtlsState::Established { suite } => {
                        write!(f, "verified")?;
                        if let Some(s) = suite {
                            write!(f, ", {s}")?;
                        }
                    }
                    DtlsState::Failed { reason } => write!(f, "handshake FAILED: {reason}")?,
                }
                write!(f, "): keys never in signaling; the fingerprint ")?;
                match self.signaling.all_tls() {
                    Some(true) => write!(f, "came over TLS on every hop")?,
                    None => write!(f, "came over TLS on our hop, unknown beyond")?,
                    Some(false) => write!(
                        f,
                        "crossed a hop without TLS (a man in the middle could replace it)"
                    )?,
                }
            }
        }
        let level = match self.level() {
            SecurityLevel::Encrypted => "encrypted",
            SecurityLevel::Authenticated => "authenticated (signaling only)",
            SecurityLevel::None => "none",
        };
        write!(f, "; security level: {level}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Method;
    use crate::sip::uri::Uri;

    fn invite(vias: &[&str]) -> Message {
        let mut m = Message::request(Method::Invite, Uri::parse("sip:b@h").unwrap());
        for v in vias {
            m.push("Via", *v);
        }
        m
    }

    fn sdes() -> MediaSecurity {
        MediaSecurity::Sdes {
            suite: Suite::AesCm128HmacSha1_80,
            tag: 1,
        }
    }

    fn dtls(state: DtlsState) -> MediaSecurity {
        MediaSecurity::Dtls {
            role: DtlsRole::Client,
            hash: "sha-256",
            state,
        }
    }

    #[test]
    fn the_answerer_reads_every_hop_from_via() {
        let inv = invite(&[
            "SIP/2.0/TLS 127.0.0.9:5061;branch=z9hG4bK2",
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
        ]);
        let s = Signaling::answerer(&inv, false);
        assert_eq!(s.hops[0].from, "127.0.0.1:5070", "the caller first");
        assert!(!s.first_hop_tls());
        assert_eq!(s.all_tls(), Some(false));
        let v = Verdict {
            signaling: s,
            media: sdes(),
        };
        assert_eq!(v.level(), SecurityLevel::None, "SDES keys crossed UDP: {v}");
        assert!(v.to_string().contains("sent in the clear"), "{v}");
        assert!(
            v.to_string()
                .contains("UDP from 127.0.0.1:5070 (unencrypted)"),
            "{v}"
        );
    }

    #[test]
    fn dtls_over_udp_is_encrypted_but_unauthenticated() {
        let mut v = Verdict {
            signaling: Signaling::caller(Protocol::Udp, "127.0.0.1:5060".parse().unwrap(), false),
            media: dtls(DtlsState::Pending),
        };
        assert_eq!(v.level(), SecurityLevel::Encrypted, "{v}");
        assert!(v.to_string().contains("man in the middle"), "{v}");
        v.set_dtls(DtlsState::Failed {
            reason: "peer_alert: handshake_failure".into(),
        });
        assert_eq!(v.level(), SecurityLevel::None);
        assert!(
            v.to_string()
                .contains("FAILED: peer_alert: handshake_failure"),
            "{v}"
        );
    }

    #[test]
    fn tls_to_the_first_hop_is_not_called_end_to_end() {
        let v = Verdict {
            signaling: Signaling::caller(Protocol::Tls, "127.0.0.1:5061".parse().unwrap(), false),
            media: sdes(),
        };
        assert_eq!(v.level(), SecurityLevel::Encrypted);
        let t = v.to_string();
        assert!(t.contains("hops beyond it not visible"), "{t}");
        assert!(t.contains("sent over TLS on our hop"), "{t}");
        let plain = Verdict {
            media: MediaSecurity::None,
            ..v
        };
        assert_eq!(plain.level(), SecurityLevel::Authenticated);
        let all = Signaling::answerer(
            &invite(&[
                "SIP/2.0/TLS 127.0.0.9:5061;branch=z9hG4bK2",
                "SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK1",
            ]),
            false,
        );
        assert_eq!(all.all_tls(), Some(true));
        assert!(
            all.to_string().starts_with("TLS on all 2 hop(s) seen"),
            "{all}"
        );
    }
}
