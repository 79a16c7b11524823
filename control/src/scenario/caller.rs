//! One call, as the caller places it: INVITE, the DTLS-SRTP outcome (for a DTLS call), the
//! hold, the hangup, and the record of what happened, failures named by cause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::agents::CallPlan;
use super::causes;
use super::media::LegEnd;
use super::report::CallRecord;
use super::state::{Dtls, Shared, lock};
use crate::sdp::{KeyMethod, MediaCrypto};

/// What every call of a run shares.
#[derive(Clone)]
pub(super) struct CallPace {
    /// How long a call is held once set up.
    pub(super) hold: Duration,
    /// How long after the 200 OK a DTLS-SRTP outcome may take.
    pub(super) dtls_timeout: Duration,
    /// Failed calls whose SIP messages are kept.
    pub(super) log_limit: usize,
    /// When the run started.
    pub(super) run_start: Instant,
    /// Agents sharing the scenario.
    pub(super) shards: u32,
}

/// A failure: its cause's name and its own words.
type Failure = (String, String);

/// Places call `index` with `plan`'s user agent, and records it.
pub(super) async fn place_call(index: u64, plan: Arc<CallPlan>, pace: CallPace, shared: Shared) {
    let call_id = plan.ua.new_call_id();
    let started = Instant::now();
    {
        let mut s = lock(&shared);
        s.attempted += 1;
        s.active += 1;
        s.peak_active = s.peak_active.max(s.active);
        s.first_start.get_or_insert(started);
        s.last_start = Some(started);
    }
    let mut rec = CallRecord {
        index,
        call_id: call_id.clone(),
        method: match plan.method {
            KeyMethod::Sdes => "sdes",
            KeyMethod::Dtls => "dtls",
            KeyMethod::Dual => "dual",
        },
        start_s: (started - pace.run_start).as_secs_f64(),
        ..CallRecord::default()
    };
    let failure = call(&plan, &call_id, &pace, &shared, &mut rec).await;
    match failure {
        Some((cause, detail)) => {
            rec.cause = Some(cause);
            rec.detail = Some(detail);
            let keep = {
                let mut s = lock(&shared);
                s.failed_logs += 1;
                s.failed_logs <= pace.log_limit
            };
            rec.sip_log = if keep {
                plan.log.take_call(&call_id)
            } else {
                plan.log.forget_call(&call_id);
                Vec::new()
            };
        }
        None => plan.log.forget_call(&call_id),
    }
    lock(&shared).finish(rec);
}

/// The call itself; the first failure, if any.
async fn call(
    plan: &CallPlan,
    call_id: &str,
    pace: &CallPace,
    shared: &Shared,
    rec: &mut CallRecord,
) -> Option<Failure> {
    let ua = &plan.ua;
    let (target, peer) = plan.target(rec.index, pace.shards);
    let info = match ua.call_as(target, peer, Some(call_id.to_owned())).await {
        Err(e) => {
            return Some((
                causes::of_call_error(&e, plan.method != KeyMethod::Dtls),
                e.to_string(),
            ));
        }
        Ok(info) => info,
    };
    rec.setup_ms = Some(info.setup.as_secs_f64() * 1e3);
    let mut failure = None;
    if matches!(info.negotiated.crypto, MediaCrypto::Dtls { .. }) {
        match dtls_outcome(info.stream, pace.dtls_timeout, shared).await {
            Some(Dtls::Established(ms)) => rec.dtls_ms = Some(ms),
            Some(Dtls::Failed { cause, detail }) => failure = Some((cause, detail)),
            None => {
                failure = Some((
                    "dtls_timeout".into(),
                    format!(
                        "no DTLS-SRTP handshake result within {} ms of the 200 OK",
                        pace.dtls_timeout.as_millis()
                    ),
                ))
            }
        }
    }
    if failure.is_none() {
        lock(shared).setup_ok += 1;
        tokio::time::sleep(pace.hold).await;
    }
    let bye_failed = |e: &dyn std::fmt::Display| ("bye_failed".to_owned(), format!("BYE: {e}"));
    match ua.hangup(call_id).await {
        Ok(ended) => {
            rec.media = ended.stats.as_ref().and_then(LegEnd::of);
            if let Some(Err(e)) = &ended.bye {
                failure = failure.or_else(|| Some(bye_failed(e)));
            }
        }
        Err(e) => failure = failure.or_else(|| Some(bye_failed(&e))),
    }
    failure.or_else(|| media_failure(rec.media.as_ref(), pace.hold))
}

/// The DTLS-SRTP outcome of the call's stream, as the engine reports it (it may already have).
async fn dtls_outcome(stream: u64, timeout: Duration, shared: &Shared) -> Option<Dtls> {
    let rx = {
        let mut s = lock(shared);
        match s.dtls_seen.remove(&stream) {
            Some(d) => return Some(d),
            None => {
                let (tx, rx) = oneshot::channel();
                s.dtls_waiters.insert(stream, tx);
                rx
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, rx)
        .await
        .ok()
        .and_then(Result::ok);
    lock(shared).dtls_waiters.remove(&stream);
    outcome
}

/// A call that was set up and hung up can still have failed in its media.
fn media_failure(m: Option<&LegEnd>, hold: Duration) -> Option<Failure> {
    let m = m?;
    if m.auth_failures > 0 {
        return Some((
            "srtp_auth_failures".into(),
            format!(
                "{} SRTP/SRTCP packets failed authentication (rx suite {})",
                m.auth_failures,
                m.rx_suite.map_or("none", |s| s.sdp_name())
            ),
        ));
    }
    if m.packets_in == 0 && hold >= Duration::from_millis(500) {
        return Some((
            "no_media".into(),
            format!("no RTP received in {} ms", hold.as_millis()),
        ));
    }
    None
}
