//! Why calls fail, in the words of a troubleshooting guide: every cause a load run reports has
//! a stable name (for JSON and scripts), a category, a one-line title and what to check.

use crate::sip::transport::TransportError;
use crate::ua::CallError;

/// A failure cause as a report shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Stable name (`tls_expired`, `sdes_no_common_suite`, `dtls_fingerprint_mismatch`, ...).
    pub name: &'static str,
    /// `TLS`, `SDES`, `DTLS`, `SRTP`, `SDP`, `SIP`, `Timeout`, `Transport`, `Media`, `Local`.
    pub category: &'static str,
    /// What happened.
    pub title: &'static str,
    /// What to check.
    pub advice: &'static str,
}

const fn c(
    name: &'static str,
    category: &'static str,
    title: &'static str,
    advice: &'static str,
) -> Cause {
    Cause {
        name,
        category,
        title,
        advice,
    }
}

/// Every named cause.
pub const CAUSES: &[Cause] = &[
    c(
        "tls_expired",
        "TLS",
        "TLS: the server's certificate has expired",
        "Renew the SBC's certificate, or check the clocks of both machines.",
    ),
    c(
        "tls_not_yet_valid",
        "TLS",
        "TLS: the server's certificate is not valid yet",
        "Check the clocks of both machines.",
    ),
    c(
        "tls_unknown_ca",
        "TLS",
        "TLS: the server's certificate is not signed by a trusted CA",
        "Add the issuing CA with sip.tls_verify = \"<ca.pem>\", or install it in the system trust store.",
    ),
    c(
        "tls_name_mismatch",
        "TLS",
        "TLS: the server's certificate is for another name",
        "Call the name the certificate carries (the target URI's host), or reissue it with this name.",
    ),
    c(
        "tls_client_cert_rejected",
        "TLS",
        "TLS (mutual): the server rejected our client certificate",
        "Use a client certificate from the CA the server trusts (sip.tls_cert / sip.tls_key).",
    ),
    c(
        "tls_client_cert_refused",
        "TLS",
        "TLS (mutual): the server requires a client certificate",
        "Configure sip.tls_cert and sip.tls_key.",
    ),
    c(
        "tls_closed_after_handshake",
        "TLS",
        "TLS: the server closed the connection right after the handshake",
        "Under TLS 1.3 this is how a rejected client certificate often looks; check the server's log.",
    ),
    c(
        "tls_other",
        "TLS",
        "TLS: the handshake failed",
        "See the detail for the TLS alert.",
    ),
    c(
        "sdes_no_common_suite",
        "SDES",
        "SDES: no common crypto suite (488)",
        "Enable a suite both sides support (security.suites); AES_CM_128_HMAC_SHA1_80 is the one every SRTP device has.",
    ),
    c(
        "sdes_not_acceptable",
        "SDES",
        "SDES offer refused with 488 Not Acceptable Here",
        "Usually no common crypto suite or codec; the peer gave no Warning saying which.",
    ),
    c(
        "unencrypted_fallback_refused",
        "SDES",
        "The answer fell back to unencrypted RTP while SRTP is required",
        "The peer does not do SRTP on this trunk: enable SRTP there, or set security.srtp = \"offered\".",
    ),
    c(
        "plain_offer_srtp_required",
        "SDP",
        "A plain RTP offer to an answerer that requires SRTP",
        "Set security.srtp to offered or required on the caller.",
    ),
    c(
        "srtp_refused_by_policy",
        "SDP",
        "SRTP offered to an answerer whose SRTP policy is off",
        "Enable SRTP on the answerer, or call without it.",
    ),
    c(
        "dtls_fingerprint_mismatch",
        "DTLS",
        "DTLS-SRTP: the peer's certificate does not match the a=fingerprint in its SDP",
        "The SDP and the DTLS certificate come from different places (an SBC that rewrites one but not the other, or a stale certificate).",
    ),
    c(
        "dtls_timeout",
        "DTLS",
        "DTLS-SRTP: the handshake did not complete",
        "DTLS packets are not getting through (firewall, wrong media address), or both sides wait for the other (a=setup).",
    ),
    c(
        "dtls_no_common_profile",
        "DTLS",
        "DTLS-SRTP: no common SRTP protection profile",
        "Enable a common profile; SRTP_AES128_CM_SHA1_80 is the universal one.",
    ),
    c(
        "dtls_peer_alert",
        "DTLS",
        "DTLS-SRTP: the peer aborted the handshake with an alert",
        "See the alert's name in the detail; bad_certificate usually means the peer's check of our fingerprint failed.",
    ),
    c(
        "dtls_failed",
        "DTLS",
        "DTLS-SRTP: the handshake failed",
        "See the detail.",
    ),
    c(
        "bad_fingerprint",
        "DTLS",
        "DTLS-SRTP: the SDP's a=fingerprint is unreadable",
        "Check the peer's SDP.",
    ),
    c(
        "dtls_not_enabled",
        "DTLS",
        "DTLS-SRTP offered or answered but not enabled here",
        "Set security.method to dtls, dual or mixed.",
    ),
    c(
        "bad_setup",
        "DTLS",
        "DTLS-SRTP: the a=setup roles do not fit",
        "Check the peer's a=setup.",
    ),
    c(
        "srtp_auth_failures",
        "SRTP",
        "SRTP authentication failures: the two ends' keys or profiles disagree",
        "Check that the keys in a=crypto (or the DTLS exporter) are the ones the media is protected with, and that both ends use the same suite.",
    ),
    c(
        "no_media",
        "Media",
        "No media arrived during the call",
        "Check media addresses and ports (c= and m= lines), firewalls and NAT.",
    ),
    c(
        "no_common_codec",
        "SDP",
        "No common codec",
        "Enable a codec both sides support (security.codecs).",
    ),
    c(
        "no_audio",
        "SDP",
        "No usable audio stream in the SDP",
        "Check the peer's SDP.",
    ),
    c(
        "sdp_unreadable",
        "SDP",
        "Unreadable SDP",
        "Check the peer's SDP (the SIP log has it).",
    ),
    c(
        "bad_answer_crypto",
        "SDES",
        "The answer's a=crypto is not one we offered",
        "Check the peer's SDP.",
    ),
    c(
        "timeout",
        "Timeout",
        "No answer to the INVITE (timer B, 64*T1)",
        "The target is down, unreachable, or drops our requests; check the address and transport.",
    ),
    c(
        "transport",
        "Transport",
        "The connection could not be opened or broke",
        "Check the target's address, port and transport.",
    ),
    c(
        "bye_failed",
        "SIP",
        "The call's BYE got no answer or an error",
        "The peer lost the dialog or stopped answering; the media figures are those at hangup.",
    ),
    c(
        "auth",
        "SIP",
        "Digest authentication failed",
        "Check sip.auth (user:password) for the realm.",
    ),
    c(
        "sip_error",
        "SIP",
        "The call was refused with a SIP error",
        "See the status code.",
    ),
    c(
        "media",
        "Local",
        "The media engine refused the stream",
        "See the detail: ports exhausted (engine.port_min/max), or the open-file limit.",
    ),
    c("local", "Local", "A local error", "See the detail."),
];

/// The cause named `name`; unknown names (a SIP status such as `sip_503`) are described as
/// SIP errors.
pub fn describe(name: &str) -> Cause {
    CAUSES
        .iter()
        .find(|c| c.name == name)
        .copied()
        .unwrap_or_else(|| {
            let base = if name.starts_with("sip_") {
                "sip_error"
            } else if name.starts_with("tls_") {
                "tls_other"
            } else if name.starts_with("dtls_") {
                "dtls_failed"
            } else {
                "local"
            };
            describe(base)
        })
}

/// The cause of a refusal with status `code` and a Warning text. `sdes_offered` tells a bare
/// 488 to an SDES offer apart.
pub fn of_rejection(code: u16, warning: Option<&str>, sdes_offered: bool) -> String {
    if code != 488 {
        return format!("sip_{code}");
    }
    let w = warning.unwrap_or("").to_ascii_lowercase();
    if w.contains("suite") {
        "sdes_no_common_suite".into()
    } else if w.contains("codec") {
        "no_common_codec".into()
    } else if w.contains("policy is off") {
        "srtp_refused_by_policy".into()
    } else if w.contains("requires srtp") || w.contains("srtp required") {
        "plain_offer_srtp_required".into()
    } else if sdes_offered {
        "sdes_not_acceptable".into()
    } else {
        "sip_488".into()
    }
}

/// The cause of a failed call set-up. `sdes_offered` tells a bare 488 to an SDES offer apart.
pub fn of_call_error(e: &CallError, sdes_offered: bool) -> String {
    match e {
        CallError::Rejected { code, warning, .. } => {
            of_rejection(*code, warning.as_deref(), sdes_offered)
        }
        CallError::Transport(TransportError::Tls(_)) => e.cause(),
        CallError::Transport(_) => "transport".into(),
        CallError::Negotiation(n) => match n.cause() {
            "no_common_suite" => "sdes_no_common_suite".into(),
            other => other.into(),
        },
        CallError::Media(_) => "media".into(),
        _ => e.cause(),
    }
}

/// The cause of an engine `dtls_failed` event's reason.
pub fn of_dtls_reason(reason: &str) -> String {
    match reason {
        "fingerprint_mismatch" => "dtls_fingerprint_mismatch",
        "timeout" => "dtls_timeout",
        "no_common_profile" => "dtls_no_common_profile",
        "peer_alert" => "dtls_peer_alert",
        _ => "dtls_failed",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operations guide's troubleshooting table has every cause with its advice.
    #[test]
    fn the_operations_guide_lists_every_cause() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let doc = std::fs::read_to_string(path).unwrap();
        for c in CAUSES {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", c.name)))
                .unwrap_or_else(|| panic!("docs/operations.md has no row for {}", c.name));
            assert!(
                row.contains(&c.advice.replace('|', "\\|")),
                "docs/operations.md: {} has other advice than the report's",
                c.name
            );
        }
    }

    #[test]
    fn names_are_unique_and_every_produced_name_is_described() {
        let mut names: Vec<&str> = CAUSES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CAUSES.len());
        for r in [
            "fingerprint_mismatch",
            "timeout",
            "no_common_profile",
            "peer_alert",
            "x",
        ] {
            let n = of_dtls_reason(r);
            assert!(CAUSES.iter().any(|c| c.name == n), "{n}");
        }
        assert_eq!(describe("sip_503").name, "sip_error");
        assert_eq!(describe("tls_expired").category, "TLS");
        let rejected = |w: Option<&str>| CallError::Rejected {
            code: 488,
            reason: "Not Acceptable Here".into(),
            warning: w.map(str::to_owned),
        };
        assert_eq!(
            of_call_error(&rejected(Some("no common SRTP suite: ...")), true),
            "sdes_no_common_suite"
        );
        assert_eq!(of_call_error(&rejected(None), true), "sdes_not_acceptable");
        assert_eq!(of_call_error(&rejected(None), false), "sip_488");
    }
}
