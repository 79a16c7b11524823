//! Whether DTLS-SRTP went end to end or was terminated by a middlebox: the certificate our
//! engine shook hands with, against the far end's own. An SBC that terminates DTLS rewrites
//! `a=fingerprint` to its own certificate, so the fingerprint check passes either way; only
//! an end that knows the far end's certificate (both ends ours, or told) can tell.

use std::fmt;

use serde::Serialize;
use srtp_engine::proto::dtls::Fingerprint;

/// The verdict on one call's DTLS path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "path")]
pub enum DtlsPath {
    /// We shook hands with the far end's own certificate: DTLS passed through.
    EndToEnd,
    /// We shook hands with another certificate: something in between terminated DTLS.
    Terminated {
        /// The certificate we shook hands with (sha-256).
        seen: String,
    },
}

impl DtlsPath {
    /// Judges `peer` (the engine's `peer_fingerprint`) against the far end's certificates.
    /// None when no far end is known or the peer's fingerprint is not readable.
    pub fn judge(peer: &str, far_end: &[Fingerprint]) -> Option<DtlsPath> {
        if far_end.is_empty() {
            return None;
        }
        let seen = Fingerprint::parse(peer).ok()?;
        Some(if far_end.contains(&seen) {
            DtlsPath::EndToEnd
        } else {
            DtlsPath::Terminated {
                seen: peer.to_owned(),
            }
        })
    }

    /// Whether DTLS went end to end.
    pub fn end_to_end(&self) -> bool {
        matches!(self, DtlsPath::EndToEnd)
    }
}

impl fmt::Display for DtlsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsPath::EndToEnd => f.write_str("end to end (the far end's own certificate)"),
            DtlsPath::Terminated { seen } => write!(
                f,
                "terminated by a middlebox (we shook hands with {seen}, not the far end's certificate)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srtp_engine::proto::dtls::HashAlg;

    #[test]
    fn the_far_ends_certificate_or_another() {
        let far = Fingerprint::of(HashAlg::Sha256, b"far end");
        let sbc = Fingerprint::of(HashAlg::Sha256, b"sbc");
        let list = [far.clone()];
        assert_eq!(
            DtlsPath::judge(&far.to_string(), &list),
            Some(DtlsPath::EndToEnd)
        );
        let t = DtlsPath::judge(&sbc.to_string(), &list).unwrap();
        assert!(!t.end_to_end());
        assert!(t.to_string().contains(&sbc.to_string()), "{t}");
        assert_eq!(DtlsPath::judge(&far.to_string(), &[]), None);
        assert_eq!(DtlsPath::judge("not a fingerprint", &list), None);
    }
}
