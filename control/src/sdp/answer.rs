//! The answerer's side of offer/answer: the plan made from an offer ([`plan_answer`]) and the
//! answer SDP it writes.

use std::net::SocketAddr;

use srtp_engine::proto::dtls::{DtlsRole, Fingerprint};
use srtp_engine::proto::srtp::Suite;

use super::crypto::CryptoAttr;
use super::negotiate::*;
use super::session::{Direction, Media, Session};

/// The answerer's decisions, made before media is allocated.
#[derive(Clone, Debug)]
pub struct AnswerPlan {
    /// Index of the m-line we accept.
    pub index: usize,
    /// What to ask the engine for (the local side of crypto is ours already).
    pub negotiated: Negotiated,
    offer: Session,
}

/// Plans the answer to an offer. `prev` is the current negotiation on a re-offer: our key
/// and tls-id are kept when the peer keeps its own.
pub fn plan_answer(
    cfg: &SecurityConfig,
    offer: &Session,
    prev: Option<&Negotiated>,
) -> Result<AnswerPlan, NegotiationError> {
    let (index, m) = offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.port != 0 && m.kind.eq_ignore_ascii_case("audio"))
        .ok_or(NegotiationError::NoAudio)?;
    let addr = offer.media_addr(m).ok_or(NegotiationError::NoAudio)?;
    let codec = pick_codec(cfg, m)?;
    let class = classify(&m.proto).ok_or(NegotiationError::NoAudio)?;
    // Crypto lines: usable ones with a suite we enabled, in the offerer's order.
    let mut first_err = None;
    let mut offered_suites = Vec::new();
    let mut usable = None;
    for line in m.attrs("crypto") {
        match CryptoAttr::parse(line) {
            Ok(a) => {
                offered_suites.push(a.suite);
                if usable.is_none() && cfg.suites.contains(&a.suite) {
                    usable = Some(a);
                }
            }
            Err(e) => {
                // Keep the suite name for the message when only the key was wrong.
                if let Some(s) = line
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(Suite::from_sdp_name)
                {
                    offered_suites.push(s);
                }
                first_err.get_or_insert(e);
            }
        }
    }
    let has_crypto = m.has("crypto");
    let fingerprint = m.attrs("fingerprint").next().or_else(|| {
        offer
            .attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case("fingerprint"))
            .and_then(|a| a.value.as_deref())
    });
    let we_sdes = matches!(cfg.method, KeyMethod::Sdes | KeyMethod::Dual);
    let we_dtls = matches!(cfg.method, KeyMethod::Dtls | KeyMethod::Dual);

    let crypto = if cfg.policy == SrtpPolicy::Off {
        if class != ProtoClass::Plain {
            return Err(NegotiationError::SrtpRefusedByPolicy {
                proto: m.proto.clone(),
            });
        }
        MediaCrypto::None
    } else if let (true, Some(fp)) = (we_dtls, fingerprint) {
        dtls_answer(m, fp, prev, cfg.dtls_profiles())?
    } else if let (true, Some(remote)) = (we_sdes, usable) {
        let local = match prev.map(|p| &p.crypto) {
            Some(MediaCrypto::Sdes { local, remote: old })
                if old.suite == remote.suite && old.keys == remote.keys =>
            {
                CryptoAttr {
                    tag: remote.tag,
                    ..local.clone()
                }
            }
            _ => CryptoAttr {
                spelling: remote.spelling,
                ..CryptoAttr::generate(
                    remote.tag,
                    remote.suite,
                    cfg.lifetime,
                    cfg.mki_len.map(|l| (1, l)),
                )
            },
        };
        MediaCrypto::Sdes { local, remote }
    } else if class == ProtoClass::Dtls && fingerprint.is_none() {
        return Err(NegotiationError::BadFingerprint(
            "the offer has none".into(),
        ));
    } else if class == ProtoClass::Dtls && !we_dtls {
        return Err(NegotiationError::DtlsNotEnabled);
    } else if has_crypto && we_sdes {
        return Err(NegotiationError::NoCommonSuite {
            offered: suite_names(offered_suites.into_iter()),
            ours: suite_names(cfg.suites.iter().copied()),
            detail: first_err,
        });
    } else if class == ProtoClass::Plain && cfg.policy == SrtpPolicy::Offered {
        MediaCrypto::None
    } else if class == ProtoClass::Plain {
        return Err(NegotiationError::PlainOfferToRequired {
            proto: m.proto.clone(),
        });
    } else {
        // SAVP without anything we can use (e.g. a fingerprint while we do SDES only).
        return Err(if fingerprint.is_some() {
            NegotiationError::DtlsNotEnabled
        } else {
            NegotiationError::NoCommonSuite {
                offered: suite_names(offered_suites.into_iter()),
                ours: suite_names(cfg.suites.iter().copied()),
                detail: first_err,
            }
        });
    };
    let rtcp_mux = m.has("rtcp-mux");
    Ok(AnswerPlan {
        index,
        negotiated: Negotiated {
            remote_rtp: SocketAddr::new(addr, m.port),
            remote_rtcp: (!rtcp_mux).then(|| rtcp_addr(addr, m)),
            rtcp_mux,
            codec,
            direction: m.direction().answer(Direction::SendRecv),
            crypto,
            proto: m.proto.clone(),
        },
        offer: offer.clone(),
    })
}

fn dtls_answer(
    m: &Media,
    fp: &str,
    prev: Option<&Negotiated>,
    profiles: Option<Vec<Suite>>,
) -> Result<MediaCrypto, NegotiationError> {
    let remote_fingerprint =
        Fingerprint::parse(fp).map_err(|e| NegotiationError::BadFingerprint(e.to_string()))?;
    // RFC 5763 5: the answerer SHOULD be active when the offer is actpass.
    let role = match m
        .attrs("setup")
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("actpass") | Some("passive") => DtlsRole::Client,
        Some("active") => DtlsRole::Server,
        Some(other) => return Err(NegotiationError::BadSetup(format!("'{other}' in an offer"))),
    };
    let remote_tls_id = m.attrs("tls-id").next().map(str::to_owned);
    // RFC 8842 5.2: the same tls-id and fingerprint keep the association; anything new
    // means a new one (and so a new tls-id of ours).
    let local_tls_id = match prev.map(|p| &p.crypto) {
        Some(MediaCrypto::Dtls {
            local_tls_id,
            remote_tls_id: old,
            remote_fingerprint: old_fp,
            ..
        }) if old == &remote_tls_id && old_fp == &remote_fingerprint && remote_tls_id.is_some() => {
            local_tls_id.clone()
        }
        _ => random_tls_id(),
    };
    Ok(MediaCrypto::Dtls {
        role,
        remote_fingerprint,
        local_tls_id,
        remote_tls_id,
        profiles,
    })
}

fn pick_codec(cfg: &SecurityConfig, m: &Media) -> Result<Codec, NegotiationError> {
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let rtpmap = m.attrs("rtpmap").find_map(|v| {
            let (p, enc) = v.split_once(' ')?;
            (p == f).then(|| enc.trim().to_owned())
        });
        for c in &cfg.codecs {
            let ok = match &rtpmap {
                Some(enc) => {
                    let mut it = enc.split('/');
                    it.next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(c.encoding))
                        && it.next().and_then(|r| r.parse().ok()) == Some(c.clock)
                }
                // Static payload types need no rtpmap (RFC 3551).
                None => pt < 96 && pt == c.pt,
            };
            if ok {
                return Ok(Codec { pt, ..*c });
            }
        }
    }
    Err(NegotiationError::NoCommonCodec {
        offered: m.formats.join(" "),
    })
}

impl AnswerPlan {
    /// Whether the engine must run a DTLS handshake for this answer, and in which role.
    pub fn dtls_role(&self) -> Option<DtlsRole> {
        match &self.negotiated.crypto {
            MediaCrypto::Dtls { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// Writes the answer for our allocated media.
    pub fn answer_sdp(
        &self,
        local: &LocalMedia,
        session_id: u64,
        version: u64,
    ) -> Result<Session, NegotiationError> {
        let n = &self.negotiated;
        let mut media = Vec::with_capacity(self.offer.media.len());
        for (i, om) in self.offer.media.iter().enumerate() {
            if i != self.index {
                // RFC 3264 6: refuse other streams with port 0, same profile and formats.
                media.push(Media {
                    kind: om.kind.clone(),
                    port: 0,
                    proto: om.proto.clone(),
                    formats: om.formats.clone(),
                    connection: None,
                    other: Vec::new(),
                    attributes: Vec::new(),
                });
                continue;
            }
            let mut m = Media {
                kind: om.kind.clone(),
                port: local.rtp.port(),
                proto: om.proto.clone(),
                formats: vec![n.codec.pt.to_string()],
                connection: None,
                other: Vec::new(),
                attributes: Vec::new(),
            };
            m.push_attr("rtpmap", Some(n.codec.rtpmap()));
            if n.rtcp_mux {
                m.push_attr("rtcp-mux", None);
            } else if let Some(r) = local.rtcp {
                m.push_attr("rtcp", Some(r.port().to_string()));
            }
            match &n.crypto {
                MediaCrypto::None => {}
                MediaCrypto::Sdes { local: l, .. } => m.push_attr("crypto", Some(l.to_attr())),
                MediaCrypto::Dtls {
                    role, local_tls_id, ..
                } => {
                    let fp = local.fingerprint.as_ref().ok_or(NegotiationError::Local(
                        "DTLS answered but the engine reported no fingerprint",
                    ))?;
                    m.push_attr("fingerprint", Some(fp.to_string()));
                    let setup = if *role == DtlsRole::Client {
                        "active"
                    } else {
                        "passive"
                    };
                    m.push_attr("setup", Some(setup.into()));
                    m.push_attr("tls-id", Some(local_tls_id.clone()));
                }
            }
            m.push_attr(n.direction.as_str(), None);
            media.push(m);
        }
        Ok(Session::ours(local.rtp.ip(), session_id, version, media))
    }
}
