//! SDP offer/answer (RFC 3264) with SRTP: the policy (off, offered, required), the keying
//! method (SDES per RFC 4568, DTLS-SRTP per RFC 5763/5764/8842, or a dual offer carrying
//! both), codecs, rtcp-mux (RFC 5761), `a=rtcp` (RFC 3605) and directions.
//!
//! The offerer builds an [`Offer`] around media it has already allocated and later reads the
//! answer with [`Offer::accept_answer`]. The answerer first makes an [`AnswerPlan`](super::answer::AnswerPlan) from the
//! offer (every decision, so it can ask the engine for the right stream), then writes the
//! answer with [`AnswerPlan::answer_sdp`](super::answer::AnswerPlan::answer_sdp). Both end in a [`Negotiated`]: what the engine needs.

use std::net::{IpAddr, SocketAddr};

use srtp_engine::proto::dtls::{DtlsRole, Fingerprint};
use srtp_engine::proto::srtp::Suite;
use thiserror::Error;

use super::crypto::{CryptoAttr, CryptoAttrError};
use super::session::{Direction, Media, SdpError, Session};

/// Whether media must, may or must not be encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SrtpPolicy {
    /// Plain RTP only; an SRTP-only offer is refused with 488.
    Off,
    /// Offer SRTP, fall back to RTP when the answer carries no crypto; accept either.
    Offered,
    /// SRTP or no call: never fall back.
    Required,
}

/// How SRTP keys are agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMethod {
    /// SDES `a=crypto` keys in the SDP (RFC 4568).
    Sdes,
    /// A DTLS handshake on the media path, pinned by `a=fingerprint` (RFC 5763).
    Dtls,
    /// Both on one m-line; the answerer picks (as answerer: accept either, preferring DTLS).
    Dual,
}

/// An audio codec we can send (the engine's codec profiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    /// The engine's codec name.
    pub engine_name: &'static str,
    /// The rtpmap encoding name.
    pub encoding: &'static str,
    /// RTP clock rate.
    pub clock: u32,
    /// Channels, when the rtpmap names them.
    pub channels: Option<u8>,
    /// The payload type we offer (static, or our dynamic choice).
    pub pt: u8,
}

/// The audio codecs, in our default preference order.
pub const CODECS: &[Codec] = &[
    Codec {
        engine_name: "pcmu",
        encoding: "PCMU",
        clock: 8000,
        channels: None,
        pt: 0,
    },
    Codec {
        engine_name: "pcma",
        encoding: "PCMA",
        clock: 8000,
        channels: None,
        pt: 8,
    },
    Codec {
        engine_name: "g722",
        encoding: "G722",
        clock: 8000,
        channels: None,
        pt: 9,
    },
    Codec {
        engine_name: "opus",
        encoding: "opus",
        clock: 48000,
        channels: Some(2),
        pt: 111,
    },
];

impl Codec {
    /// Looks a codec up by the engine's name.
    pub fn by_name(name: &str) -> Option<Codec> {
        CODECS
            .iter()
            .copied()
            .find(|c| c.engine_name.eq_ignore_ascii_case(name))
    }

    pub(super) fn rtpmap(&self) -> String {
        match self.channels {
            Some(ch) => format!("{} {}/{}/{ch}", self.pt, self.encoding, self.clock),
            None => format!("{} {}/{}", self.pt, self.encoding, self.clock),
        }
    }
}

/// Our security settings for one endpoint.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Policy.
    pub policy: SrtpPolicy,
    /// Method offered (and, as answerer, accepted).
    pub method: KeyMethod,
    /// Suites enabled, in preference order (offered with tags 1, 2, ...).
    pub suites: Vec<Suite>,
    /// Key lifetime to put in our `a=crypto` keys.
    pub lifetime: Option<u64>,
    /// MKI length (1-4 bytes) for our keys; MKI value 1.
    pub mki_len: Option<u8>,
    /// Offer the AVPF profile (RTP/SAVPF, UDP/TLS/RTP/SAVPF).
    pub avpf: bool,
    /// Offer rtcp-mux.
    pub rtcp_mux: bool,
    /// Our codecs in preference order.
    pub codecs: Vec<Codec>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            policy: SrtpPolicy::Required,
            method: KeyMethod::Sdes,
            suites: srtp_engine::proto::srtp::Suite::ALL.to_vec(),
            lifetime: None,
            mki_len: None,
            avpf: false,
            rtcp_mux: true,
            codecs: CODECS.to_vec(),
        }
    }
}

/// Media we have allocated (the engine's local addresses) and what we want from it.
#[derive(Clone, Debug)]
pub struct LocalMedia {
    /// RTP address.
    pub rtp: SocketAddr,
    /// RTCP address without rtcp-mux.
    pub rtcp: Option<SocketAddr>,
    /// Our DTLS certificate fingerprint (the engine's), for DTLS offers and answers.
    pub fingerprint: Option<Fingerprint>,
    /// Our direction.
    pub direction: Direction,
}

/// How the media of a call is keyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaCrypto {
    /// Plain RTP.
    None,
    /// SDES: our `a=crypto` (what we send with) and the peer's (what we receive with).
    Sdes {
        /// Our attribute (tag, suite, our key).
        local: CryptoAttr,
        /// The peer's attribute (its key).
        remote: CryptoAttr,
    },
    /// DTLS-SRTP.
    Dtls {
        /// Our handshake role (`a=setup:active` is the client).
        role: DtlsRole,
        /// The peer's certificate fingerprint.
        remote_fingerprint: Fingerprint,
        /// Our `a=tls-id` (RFC 8842).
        local_tls_id: String,
        /// The peer's `a=tls-id`, if it sent one.
        remote_tls_id: Option<String>,
        /// The SRTP profiles the handshake may negotiate (None: the engine's), from the
        /// configured suites.
        profiles: Option<Vec<Suite>>,
    },
}

/// The outcome of offer/answer: what the engine is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's RTP address.
    pub remote_rtp: SocketAddr,
    /// The peer's RTCP address (None with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port.
    pub rtcp_mux: bool,
    /// The codec, with the payload type the peer uses for it.
    pub codec: Codec,
    /// Our direction.
    pub direction: Direction,
    /// The keying.
    pub crypto: MediaCrypto,
    /// The profile string of the negotiated m-line (`RTP/SAVP`, ...).
    pub proto: String,
}

/// Why offer/answer failed. Each names the cause in the words of a troubleshooting guide.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// The SDP could not be read.
    #[error("unreadable SDP: {0}")]
    Sdp(#[from] SdpError),
    /// No audio m-line (or it was rejected with port 0).
    #[error("no usable audio stream in the SDP")]
    NoAudio,
    /// No codec in common.
    #[error("no common codec (offered payload types: {offered})")]
    NoCommonCodec {
        /// The offered formats.
        offered: String,
    },
    /// SDES offered but no suite in common (or every line unusable).
    #[error("no common SRTP crypto suite: offered {offered}; we accept {ours}{}", detail.map(|d| format!(" (first unusable line: {d})")).unwrap_or_default())]
    NoCommonSuite {
        /// Suites the peer offered.
        offered: String,
        /// Suites we have enabled.
        ours: String,
        /// Why the first unusable line was refused, if any line was refused for its content.
        detail: Option<CryptoAttrError>,
    },
    /// Policy requires SRTP and the offer has no crypto at all.
    #[error("SRTP required but the offer is plain RTP ({proto}, no a=crypto or a=fingerprint)")]
    PlainOfferToRequired {
        /// The offer's profile.
        proto: String,
    },
    /// Policy requires SRTP and the answer fell back to plain RTP.
    #[error("SRTP required but the answer is unencrypted ({proto}, no a=crypto or a=fingerprint)")]
    PlainAnswerToRequired {
        /// The answer's profile.
        proto: String,
    },
    /// Policy is off and the peer insists on SRTP.
    #[error("SRTP offered ({proto}) but our SRTP policy is off")]
    SrtpRefusedByPolicy {
        /// The offer's profile.
        proto: String,
    },
    /// A DTLS-SRTP offer or answer without a usable `a=fingerprint`.
    #[error("DTLS-SRTP without a usable a=fingerprint: {0}")]
    BadFingerprint(String),
    /// DTLS offered but we do not do DTLS (method SDES only).
    #[error("DTLS-SRTP offered but this endpoint only does SDES")]
    DtlsNotEnabled,
    /// An `a=setup` value that cannot be answered (e.g. `actpass` in an answer, or
    /// `holdconn`).
    #[error("bad a=setup: {0}")]
    BadSetup(String),
    /// The answer's `a=crypto` is not one we offered, or is malformed.
    #[error("the answer's a=crypto does not match our offer: {0}")]
    BadAnswerCrypto(String),
    /// Our own side lacks something (e.g. the engine gave no DTLS fingerprint).
    #[error("local configuration: {0}")]
    Local(&'static str),
}

impl NegotiationError {
    /// The SIP status an answerer sends for this failure.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            NegotiationError::Sdp(_) => (400, "Bad Request"),
            NegotiationError::Local(_) => (500, "Server Internal Error"),
            _ => (488, "Not Acceptable Here"),
        }
    }

    /// A short stable name for reports and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            NegotiationError::Sdp(_) => "sdp_unreadable",
            NegotiationError::NoAudio => "no_audio",
            NegotiationError::NoCommonCodec { .. } => "no_common_codec",
            NegotiationError::NoCommonSuite { .. } => "no_common_suite",
            NegotiationError::PlainOfferToRequired { .. } => "plain_offer_srtp_required",
            NegotiationError::PlainAnswerToRequired { .. } => "unencrypted_fallback_refused",
            NegotiationError::SrtpRefusedByPolicy { .. } => "srtp_refused_by_policy",
            NegotiationError::BadFingerprint(_) => "bad_fingerprint",
            NegotiationError::DtlsNotEnabled => "dtls_not_enabled",
            NegotiationError::BadSetup(_) => "bad_setup",
            NegotiationError::BadAnswerCrypto(_) => "bad_answer_crypto",
            NegotiationError::Local(_) => "local",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProtoClass {
    Plain,
    Savp,
    Dtls,
}

pub(super) fn classify(proto: &str) -> Option<ProtoClass> {
    match proto.to_ascii_uppercase().as_str() {
        "RTP/AVP" | "RTP/AVPF" => Some(ProtoClass::Plain),
        "RTP/SAVP" | "RTP/SAVPF" => Some(ProtoClass::Savp),
        "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF" => Some(ProtoClass::Dtls),
        _ => None,
    }
}

pub(super) fn suite_names(suites: impl Iterator<Item = Suite>) -> String {
    let v: Vec<&str> = suites.map(Suite::sdp_name).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A random `a=tls-id` (RFC 8842 5: at least 120 bits of randomness, base64 chars).
pub fn random_tls_id() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator");
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

/// An offer we sent, kept to read its answer.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The SDP.
    pub sdp: Session,
    crypto: Vec<CryptoAttr>,
    dtls: Option<String>,
    dtls_profiles: Option<Vec<Suite>>,
    codecs: Vec<Codec>,
    rtcp_mux: bool,
    policy: SrtpPolicy,
}

impl SecurityConfig {
    /// The DTLS-SRTP profiles of the configured suites, in their order, when the suites are
    /// not every suite (None: the engine chooses among all of its profiles).
    pub fn dtls_profiles(&self) -> Option<Vec<Suite>> {
        if self.suites == Suite::ALL {
            return None;
        }
        let v: Vec<Suite> = self
            .suites
            .iter()
            .copied()
            .filter(|s| s.dtls_profile().is_some())
            .collect();
        (!v.is_empty()).then_some(v)
    }
}

impl Offer {
    /// Builds an offer for our allocated media. `keep` carries the keys of a previous
    /// negotiation to keep them on a re-offer (None: fresh keys).
    pub fn new(
        cfg: &SecurityConfig,
        local: &LocalMedia,
        session_id: u64,
        version: u64,
        keep: Option<&Negotiated>,
    ) -> Result<Offer, NegotiationError> {
        let f = if cfg.avpf { "F" } else { "" };
        let sdes = cfg.policy != SrtpPolicy::Off
            && matches!(cfg.method, KeyMethod::Sdes | KeyMethod::Dual);
        let dtls = cfg.policy != SrtpPolicy::Off
            && matches!(cfg.method, KeyMethod::Dtls | KeyMethod::Dual);
        let proto = match (cfg.policy, cfg.method) {
            (SrtpPolicy::Off, _) => format!("RTP/AVP{f}"),
            // Best-effort SRTP: plain profile with keys, so a plain answerer can still
            // answer (RFC 4568 is silent; this is what deployed equipment does).
            (SrtpPolicy::Offered, KeyMethod::Sdes | KeyMethod::Dual) => format!("RTP/AVP{f}"),
            (SrtpPolicy::Required, KeyMethod::Sdes | KeyMethod::Dual) => format!("RTP/SAVP{f}"),
            (_, KeyMethod::Dtls) => format!("UDP/TLS/RTP/SAVP{f}"),
        };
        let mut m = Media {
            kind: "audio".into(),
            port: local.rtp.port(),
            proto,
            formats: cfg.codecs.iter().map(|c| c.pt.to_string()).collect(),
            connection: None,
            other: Vec::new(),
            attributes: Vec::new(),
        };
        for c in &cfg.codecs {
            m.push_attr("rtpmap", Some(c.rtpmap()));
        }
        // RFC 5761 5.1.1: an offer of rtcp-mux keeps an RTCP port to fall back to, named by
        // `a=rtcp` (RFC 3605) when we have one.
        if let Some(r) = local.rtcp {
            m.push_attr("rtcp", Some(r.port().to_string()));
        }
        if cfg.rtcp_mux {
            m.push_attr("rtcp-mux", None);
        }
        let mut crypto = Vec::new();
        if sdes {
            let kept = match keep.map(|n| &n.crypto) {
                Some(MediaCrypto::Sdes { local, .. }) => Some(local),
                _ => None,
            };
            for (i, &s) in cfg.suites.iter().enumerate() {
                let tag = i as u32 + 1;
                let a = match kept {
                    Some(k) if k.suite == s => CryptoAttr { tag, ..k.clone() },
                    _ => CryptoAttr::generate(tag, s, cfg.lifetime, cfg.mki_len.map(|l| (1, l))),
                };
                m.push_attr("crypto", Some(a.to_attr()));
                crypto.push(a);
            }
        }
        let mut tls_id = None;
        if dtls {
            let fp = local.fingerprint.as_ref().ok_or(NegotiationError::Local(
                "DTLS offered but the engine reported no fingerprint",
            ))?;
            m.push_attr("fingerprint", Some(fp.to_string()));
            m.push_attr("setup", Some("actpass".into()));
            let id = match keep.map(|n| &n.crypto) {
                Some(MediaCrypto::Dtls { local_tls_id, .. }) => local_tls_id.clone(),
                _ => random_tls_id(),
            };
            m.push_attr("tls-id", Some(id.clone()));
            tls_id = Some(id);
        }
        m.push_attr(local.direction.as_str(), None);
        let sdp = Session::ours(local.rtp.ip(), session_id, version, vec![m]);
        Ok(Offer {
            sdp,
            crypto,
            dtls: tls_id,
            dtls_profiles: cfg.dtls_profiles(),
            codecs: cfg.codecs.clone(),
            rtcp_mux: cfg.rtcp_mux,
            policy: cfg.policy,
        })
    }

    /// Reads the answer.
    pub fn accept_answer(&self, answer: &Session) -> Result<Negotiated, NegotiationError> {
        let m = answer.media.first().ok_or(NegotiationError::NoAudio)?;
        if m.port == 0 || !m.kind.eq_ignore_ascii_case("audio") {
            return Err(NegotiationError::NoAudio);
        }
        let addr = answer.media_addr(m).ok_or(NegotiationError::NoAudio)?;
        let codec = m
            .formats
            .iter()
            .find_map(|f| self.codecs.iter().find(|c| c.pt.to_string() == *f).copied())
            .ok_or_else(|| NegotiationError::NoCommonCodec {
                offered: m.formats.join(" "),
            })?;
        let class = classify(&m.proto);
        let answer_crypto: Vec<&str> = m.attrs("crypto").collect();
        let crypto = if let Some(line) = answer_crypto.first() {
            if answer_crypto.len() > 1 {
                return Err(NegotiationError::BadAnswerCrypto(
                    "more than one a=crypto in the answer".into(),
                ));
            }
            let remote = CryptoAttr::parse(line)
                .map_err(|e| NegotiationError::BadAnswerCrypto(e.to_string()))?;
            let local = self
                .crypto
                .iter()
                .find(|c| c.tag == remote.tag)
                .ok_or_else(|| {
                    NegotiationError::BadAnswerCrypto(format!("tag {} was not offered", remote.tag))
                })?;
            if local.suite != remote.suite {
                return Err(NegotiationError::BadAnswerCrypto(format!(
                    "tag {} offered {} but answered {}",
                    remote.tag, local.suite, remote.suite
                )));
            }
            MediaCrypto::Sdes {
                local: local.clone(),
                remote,
            }
        } else if let Some(fp) = m.attrs("fingerprint").next().or_else(|| {
            answer
                .attributes
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case("fingerprint"))
                .and_then(|a| a.value.as_deref())
        }) {
            let local_tls_id = self.dtls.clone().ok_or(NegotiationError::BadAnswerCrypto(
                "a=fingerprint answered but DTLS was not offered".into(),
            ))?;
            let remote_fingerprint = Fingerprint::parse(fp)
                .map_err(|e| NegotiationError::BadFingerprint(e.to_string()))?;
            // RFC 4145 4.1: without a=setup the answerer is active.
            let role = match m
                .attrs("setup")
                .next()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("active") => DtlsRole::Server,
                Some("passive") => DtlsRole::Client,
                Some(other) => {
                    return Err(NegotiationError::BadSetup(format!(
                        "'{other}' in an answer (must be active or passive)"
                    )));
                }
            };
            MediaCrypto::Dtls {
                role,
                remote_fingerprint,
                local_tls_id,
                remote_tls_id: m.attrs("tls-id").next().map(str::to_owned),
                profiles: self.dtls_profiles.clone(),
            }
        } else {
            if class != Some(ProtoClass::Plain) && self.policy == SrtpPolicy::Required {
                return Err(NegotiationError::BadAnswerCrypto(format!(
                    "{} answer without a=crypto or a=fingerprint",
                    m.proto
                )));
            }
            if self.policy == SrtpPolicy::Required {
                return Err(NegotiationError::PlainAnswerToRequired {
                    proto: m.proto.clone(),
                });
            }
            MediaCrypto::None
        };
        let rtcp_mux = self.rtcp_mux && m.has("rtcp-mux");
        Ok(Negotiated {
            remote_rtp: SocketAddr::new(addr, m.port),
            remote_rtcp: (!rtcp_mux).then(|| rtcp_addr(addr, m)),
            rtcp_mux,
            codec,
            direction: m
                .direction()
                .answer(Direction::SendRecv)
                .narrowest(self.sdp.media[0].direction()),
            crypto,
            proto: m.proto.clone(),
        })
    }
}

pub(super) fn rtcp_addr(addr: IpAddr, m: &Media) -> SocketAddr {
    // RFC 3605: `a=rtcp:<port> [IN IP4 <addr>]`; else RTP port + 1.
    if let Some(v) = m.attrs("rtcp").next() {
        let mut p = v.split_ascii_whitespace();
        if let Some(Ok(port)) = p.next().map(str::parse::<u16>) {
            let a = p.nth(2).and_then(|a| a.parse().ok()).unwrap_or(addr);
            return SocketAddr::new(a, port);
        }
    }
    SocketAddr::new(addr, m.port.wrapping_add(1))
}
