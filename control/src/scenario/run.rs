//! The load runner: places calls at the scenario's rate (no drift: each call has its own
//! start time from the run's start), holds them, hangs up, and gathers what each call and the
//! engine saw into a [`Report`].
//!
//! One tokio task per call (`caller.rs`); the user agents (`agents.rs`) are the signaling,
//! the engine (`engine.rs`) the media. Engine events (DTLS established or failed) are matched
//! to calls by stream id; the answerer's end of each call (`answerer.rs`) by Call-ID.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use super::agents::{CallPlan, start_answerers, start_callers};
use super::caller::{CallPace, place_call};
use super::config::{Role, Scenario};
use super::engine::{fold_events, start_engine};
use super::error::RunError;
use super::progress::{self, Progress};
use super::report::{Gathered, Report};
use super::state::{Shared, Tally, lock};
use super::tls::run_tls;
use crate::ua::UserAgent;

/// Runs a scenario to its end and returns the report (thresholds already judged).
pub async fn run(s: &Scenario, progress: Progress) -> Result<Report, RunError> {
    let protocol = s.protocol()?;
    let wall_start = SystemTime::now();
    let (link, events) = start_engine(s)?;
    let link = Arc::new(link);
    let tls = run_tls(s, protocol)?;
    let shared: Shared = Arc::new(Mutex::new(Tally::default()));
    // Whose certificate the far end presents: ours when both ends are here.
    let mut far_end = s.far_end()?;
    if s.role == Role::Both {
        far_end.extend(link.fingerprint());
    }
    tokio::spawn(fold_events(events, shared.clone()));
    let metrics = s
        .metrics
        .map(|addr| {
            super::live::serve(addr, shared.clone(), s.name.clone(), s.shard.to_string())
                .map_err(|e| RunError::Signaling(format!("run metrics on {addr}: {e}")))
        })
        .transpose()?;
    let answerers = start_answerers(s, protocol, &tls, &link, &shared).await?;
    if s.answerer.register.is_some()
        && !answerers.is_empty()
        && let Err(e) = registered(s, answerers.len(), &shared).await
    {
        for a in &answerers {
            a.stop();
        }
        return Err(e);
    }
    let plans = start_callers(s, protocol, &tls, &link, &answerers).await?;
    // Agents that share a scenario start their calls together.
    if let Some(at) = s.start_at {
        let wait = super::shard::wait_until(at, SystemTime::now());
        if wait.is_zero() && !plans.is_empty() {
            tracing::warn!("--start-at has passed: calls start now, behind the other agents");
        }
        tokio::time::sleep(wait).await;
    }
    let run_start = Instant::now();
    let (stop_sampler, sampler) = progress::start(
        link.clone(),
        shared.clone(),
        s.shard.share(s.load.calls),
        progress,
        run_start,
    );
    let offered = place_calls(s, &plans, &shared, run_start).await;
    let placing_s = {
        let sh = lock(&shared);
        match (sh.first_start, sh.last_start) {
            (Some(a), Some(b)) if b > a => Some((b - a).as_secs_f64()),
            _ => None,
        }
    };
    if s.role == Role::Both {
        answerers_done(&answerers, &shared).await;
    }
    let _ = stop_sampler.send(());
    let (samples, link, last_tick) = sampler
        .await
        .map_err(|e| RunError::Engine(format!("progress task: {e}")))?;
    for p in &plans {
        p.ua.stop();
    }
    for a in &answerers {
        a.stop();
    }
    let engine = link.finish(&last_tick);
    if let Some(m) = metrics {
        // Every call has ended: the figures are final. Prometheus gets a last look.
        tokio::time::sleep(s.metrics_linger).await;
        drop(m);
    }
    let sh = std::mem::take(&mut *lock(&shared));
    Ok(Report::build(
        s,
        Gathered {
            started: wall_start,
            duration_s: run_start.elapsed().as_secs_f64(),
            offered,
            placing_s,
            max_lag_ms: sh.max_lag_ms,
            peak_active: sh.peak_active,
            records: sh.records,
            answered: sh.answered,
            refused: sh.refused,
            answerer_media: sh.answerer_media,
            far_end,
            answerer_dtls_ms: sh.answerer_dtls_ms,
            samples,
            engine,
            sip_logs_not_kept: plans.iter().map(|p| p.log.calls_not_kept()).sum(),
        },
    ))
}

/// Waits until every answerer is registered (`answerer.register`) before the first call: a
/// call placed before would find no binding, or a half-made one, at the registrar. Gives up,
/// with the reason in words, when a registrar refuses one or none answers, or after twice a
/// REGISTER transaction's time (2 * 64 * T1).
async fn registered(s: &Scenario, agents: usize, shared: &Shared) -> Result<(), RunError> {
    // The endpoint itself gives up on a REGISTER after 64 * T1 (timer F) and says so; this
    // wait is a backstop behind it, not a race with it.
    let limit = Duration::from_millis(2 * 64 * s.sip.t1_ms);
    let start = Instant::now();
    loop {
        let (done, problem) = {
            let sh = lock(shared);
            (sh.registered.len(), sh.registration_problem.clone())
        };
        if done >= agents {
            tracing::info!(
                "{agents} answerer(s) registered in {} ms",
                start.elapsed().as_millis()
            );
            return Ok(());
        }
        if problem.is_some() || start.elapsed() >= limit {
            return Err(RunError::Signaling(format!(
                "the answerers did not register within {} s ({done} of {agents} registered{})",
                limit.as_secs(),
                problem.map(|p| format!("; {p}")).unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When call `i` (from 0) starts, from the run's start: `rate` calls/s, reached linearly over
/// `ramp` seconds (the integral of the rate, inverted).
pub fn start_offset(i: u64, rate: f64, ramp: f64) -> Duration {
    let i = i as f64;
    let ramp_calls = rate * ramp / 2.0;
    let t = if ramp > 0.0 && i < ramp_calls {
        (2.0 * ramp * i / rate).sqrt()
    } else {
        ramp + (i - ramp_calls) / rate
    };
    Duration::from_secs_f64(t.max(0.0))
}

/// Places the scenario's calls on schedule (this shard's: call `i` when the shard owns it, at
/// the time the whole scenario gives it), at most `load.max_concurrent` at once, and waits
/// until every one has ended. Returns how many were started.
async fn place_calls(
    s: &Scenario,
    plans: &[Arc<CallPlan>],
    shared: &Shared,
    run_start: Instant,
) -> u64 {
    if plans.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(s.load.duration_s.max(1.0))).await;
        return 0;
    }
    let permits = s.load.max_concurrent.min(Semaphore::MAX_PERMITS as u64);
    let sem = Arc::new(Semaphore::new(permits as usize));
    let pace = CallPace {
        hold: Duration::from_secs_f64(s.load.hold_s),
        dtls_timeout: Duration::from_millis(s.security.dtls_timeout_ms),
        log_limit: s.report.failed_call_logs,
        run_start,
        shards: s.shard.count,
    };
    let mut offered = 0;
    for i in 0u64.. {
        if s.load.calls > 0 && i >= s.load.calls {
            break;
        }
        let off = start_offset(i, s.load.rate, s.load.ramp_up_s);
        if s.load.duration_s > 0.0 && off.as_secs_f64() >= s.load.duration_s {
            break;
        }
        if !s.shard.owns(i) {
            continue;
        }
        let at = run_start + off;
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let lag = Instant::now().saturating_duration_since(at).as_secs_f64() * 1e3;
        {
            let mut sh = lock(shared);
            sh.max_lag_ms = sh.max_lag_ms.max(lag);
        }
        // By this agent's own count, so that a shard's calls use every user agent (and with
        // `mixed`, alternate keying) whatever the shard's stride through the call numbers.
        let plan = plans[(offered % plans.len() as u64) as usize].clone();
        offered += 1;
        let (shared, pace) = (shared.clone(), pace.clone());
        tokio::spawn(async move {
            place_call(i, plan, pace, shared).await;
            drop(permit);
        });
    }
    // Every call ends (each is bounded by SIP timers, the DTLS timeout and its hold).
    let _ = sem.acquire_many(permits as u32).await;
    offered
}

/// Gives our answerers a moment (at most 2 s) to see the last BYEs and report their ends.
async fn answerers_done(answerers: &[UserAgent], shared: &Shared) {
    if answerers.is_empty() {
        return;
    }
    for _ in 0..40 {
        let done = {
            let sh = lock(shared);
            sh.answerer_ended >= sh.answered
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_follow_the_rate_and_the_ramp() {
        // No ramp: call i at i / rate.
        assert_eq!(start_offset(0, 100.0, 0.0), Duration::ZERO);
        assert!((start_offset(250, 100.0, 0.0).as_secs_f64() - 2.5).abs() < 1e-9);
        // A 2 s ramp to 100/s places 100 calls in the ramp (the triangle's area), and the
        // rest at full rate after it.
        assert!((start_offset(100, 100.0, 2.0).as_secs_f64() - 2.0).abs() < 1e-9);
        assert!((start_offset(200, 100.0, 2.0).as_secs_f64() - 3.0).abs() < 1e-9);
        // Halfway through the ramp (t = 1 s) a quarter of its calls are placed.
        assert!((start_offset(25, 100.0, 2.0).as_secs_f64() - 1.0).abs() < 1e-9);
        // Monotonic.
        let mut prev = Duration::ZERO;
        for i in 0..1000 {
            let t = start_offset(i, 37.0, 3.3);
            assert!(t >= prev);
            prev = t;
        }
    }
}
