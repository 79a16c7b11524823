//! The DTLS path of each call, when the far end's certificate is known (role `both`: our own
//! engine's; otherwise `security.far_end_fingerprints`): end to end, or terminated by a
//! middlebox, from the certificate each of our ends shook hands with.

use std::collections::HashMap;

use serde::Serialize;
use srtp_engine::proto::dtls::Fingerprint;

use super::media::LegEnd;
use crate::sdp::DtlsPath;

/// The run's DTLS paths.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PathTotals {
    /// Calls whose every end of ours shook hands with the far end's own certificate.
    pub end_to_end: u64,
    /// Calls where an end of ours shook hands with another certificate.
    pub terminated: u64,
    /// The certificates that were not the far end's (sha-256), at most 8.
    pub middlebox_certificates: Vec<String>,
}

impl PathTotals {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} end to end (the far end's own certificate), {} terminated by a middlebox",
            self.end_to_end, self.terminated
        );
        if let Some(c) = self.middlebox_certificates.first() {
            s.push_str(&format!(" (we shook hands with {c}"));
            if self.middlebox_certificates.len() > 1 {
                s.push_str(&format!(
                    " and {} more",
                    self.middlebox_certificates.len() - 1
                ));
            }
            s.push(')');
        }
        s
    }
}

/// Judges every DTLS call whose ends reported the certificate they shook hands with: the
/// caller's end (`calls`: Call-ID and the caller's end), and our answerer's when it is ours
/// and the call was not forked. Returns each call's path, in order, and the totals (None when
/// no far end is known or no call used DTLS).
pub(super) fn judge<'a>(
    calls: impl Iterator<Item = (&'a str, Option<&'a LegEnd>)>,
    answerer: &HashMap<String, Vec<LegEnd>>,
    far_end: &[Fingerprint],
) -> (Vec<Option<DtlsPath>>, Option<PathTotals>) {
    if far_end.is_empty() {
        return (Vec::new(), None);
    }
    let mut t = PathTotals::default();
    let mut any = false;
    let mut paths = Vec::new();
    for (call_id, media) in calls {
        let caller = media.and_then(|m| m.dtls_peer.as_deref());
        let callee = match answerer.get(call_id).map(Vec::as_slice) {
            Some([one]) => one.dtls_peer.as_deref(),
            _ => None,
        };
        let verdicts: Vec<DtlsPath> = [caller, callee]
            .into_iter()
            .flatten()
            .filter_map(|p| DtlsPath::judge(p, far_end))
            .collect();
        if verdicts.is_empty() {
            paths.push(None);
            continue;
        }
        any = true;
        let path = verdicts
            .iter()
            .find(|v| !v.end_to_end())
            .cloned()
            .unwrap_or(DtlsPath::EndToEnd);
        match &path {
            DtlsPath::EndToEnd => t.end_to_end += 1,
            DtlsPath::Terminated { seen } => {
                t.terminated += 1;
                if !t.middlebox_certificates.contains(seen) && t.middlebox_certificates.len() < 8 {
                    t.middlebox_certificates.push(seen.clone());
                }
            }
        }
        paths.push(Some(path));
    }
    (paths, any.then_some(t))
}
