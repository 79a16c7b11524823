//! The answerer's side of a run: what it answered and refused, and each call's media at its
//! end, kept by Call-ID so the report can put the two ends of a call side by side.

use tokio::sync::mpsc;

use super::causes;
use super::media::LegEnd;
use super::state::{Dtls, Shared, lock};
use crate::register::endpoint::Event;
use crate::ua::UasEvent;

/// Folds the events of answerer agent `agent` into the tallies.
pub(super) async fn fold(mut rx: mpsc::UnboundedReceiver<UasEvent>, shared: Shared, agent: usize) {
    while let Some(e) = rx.recv().await {
        let mut s = lock(&shared);
        match e {
            UasEvent::Answered(_) => s.answered += 1,
            UasEvent::Refused { code, reason, .. } => {
                *s.refused
                    .entry(causes::of_rejection(code, Some(&reason), true))
                    .or_default() += 1;
            }
            UasEvent::Failed { error, .. } => {
                *s.refused.entry(error.cause()).or_default() += 1;
            }
            UasEvent::Registration(e) => match e {
                Event::Registered { .. } => {
                    s.registered.insert(agent);
                }
                Event::Rejected { code, reason, .. } => {
                    s.registration_problem = Some(if code == 0 {
                        format!("answerer {agent}: {reason}")
                    } else {
                        format!("answerer {agent}: the registrar answered {code} {reason}")
                    });
                }
                Event::Exhausted => {
                    s.registration_problem = Some(format!(
                        "answerer {agent}: no registrar answered its REGISTER"
                    ));
                }
                _ => {}
            },
            UasEvent::Updated { .. } | UasEvent::Dtls { .. } | UasEvent::Engine { .. } => {}
            UasEvent::Released { call_id, stats } => {
                // A fork not chosen, or a call that failed: what its stream sent counts.
                if let Some(mut m) = stats.as_ref().and_then(LegEnd::of) {
                    m.released = true;
                    s.answerer_media.entry(call_id).or_default().push(m);
                }
            }
            UasEvent::Ended { call_id, stats, .. } => {
                s.answerer_ended += 1;
                let Some(stats) = stats else { continue };
                if let Some(Dtls::Established(ms)) = s.dtls_seen.remove(&stats.id) {
                    s.answerer_dtls_ms.push(ms);
                }
                if let Some(m) = LegEnd::of(&stats) {
                    s.answerer_media.entry(call_id).or_default().push(m);
                }
            }
        }
    }
}
