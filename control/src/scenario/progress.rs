//! Progress while a run goes: a line per second (or every five seconds in logs), and the time
//! series the report plots, sampled from the tallies, the engine and this machine's CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::engine::{EngineLink, EngineTick};
use super::host::CpuTimes;
use super::sample::Sample;
use super::state::{Shared, lock};

/// How progress is shown while a run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// One line redrawn in place every second (a terminal).
    Live,
    /// A plain line every few seconds (logs, CI).
    Lines,
    /// Nothing.
    Off,
}

impl Progress {
    /// `Live` when standard error is a terminal, else `Lines`.
    pub fn auto() -> Progress {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Progress::Live
        } else {
            Progress::Lines
        }
    }
}

fn progress_line(p: &Sample, calls: u64) -> String {
    format!(
        "{:6.1}s  calls {:>6}/{}  set up {:>6}  failed {:>4}  active {:>5}  media {:>8.0} pkt/s  loss {:.3}%  MOS {}  cpu {}",
        p.t_s,
        p.attempted,
        if calls == 0 {
            "-".to_string()
        } else {
            calls.to_string()
        },
        p.setup_ok,
        p.failed,
        p.active,
        p.rx_pps,
        p.loss_percent,
        p.mos_min.map_or("-".into(), |m| format!("{m:.2}")),
        p.cpu_percent.map_or("-".into(), |c| match p.steal_percent {
            Some(st) if st >= 1.0 => format!("{c:.0}% (steal {st:.0}%)"),
            _ => format!("{c:.0}%"),
        }),
    )
}

/// What the sampler hands back when it stops: the time series, the engine link and its last
/// counters.
pub(super) type Sampled = (Vec<Sample>, Arc<EngineLink>, EngineTick);

/// Samples once a second until told to stop.
pub(super) fn start(
    link: Arc<EngineLink>,
    shared: Shared,
    calls: u64,
    progress: Progress,
    run_start: Instant,
) -> (oneshot::Sender<()>, JoinHandle<Sampled>) {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut ctl_client = link.stats_client();
    let task = async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        let mut t0 = link.tick(&mut ctl_client);
        let mut cpu0 = CpuTimes::read();
        let mut last = Instant::now();
        let mut lines_due = 0u32;
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stop_rx => true,
            };
            let now = Instant::now();
            let dt = (now - last).as_secs_f64().max(1e-3);
            last = now;
            let t1 = link.tick(&mut ctl_client);
            let cpu1 = CpuTimes::read();
            let shares = cpu1.zip(cpu0).and_then(|(b, a)| b.since(&a));
            cpu0 = cpu1;
            let sample = {
                let mut sh = lock(&shared);
                let w = std::mem::take(&mut sh.window);
                Sample {
                    t_s: (now - run_start).as_secs_f64(),
                    attempted: sh.attempted,
                    setup_ok: sh.setup_ok,
                    failed: sh.failed,
                    active: sh.active,
                    rx_pps: (t1.rx.saturating_sub(t0.rx)) as f64 / dt,
                    tx_pps: (t1.tx.saturating_sub(t0.tx)) as f64 / dt,
                    ended: w.ended,
                    loss_percent: if w.expected > 0 {
                        100.0 * w.lost as f64 / w.expected as f64
                    } else {
                        0.0
                    },
                    jitter_ms: if w.ended > 0 {
                        w.jitter_sum / w.ended as f64
                    } else {
                        0.0
                    },
                    mos_min: w.mos_min,
                    cpu_percent: shares.map(|s| s.0),
                    steal_percent: shares.map(|s| s.1),
                    worker_busy: t1.worker_busy(&t0, dt),
                    local_drops: t1.kernel_drops,
                }
            };
            t0 = t1;
            match progress {
                Progress::Live => eprint!("\r\x1b[2K{}", progress_line(&sample, calls)),
                Progress::Lines => {
                    if lines_due == 0 || stop {
                        eprintln!("{}", progress_line(&sample, calls));
                    }
                    lines_due = (lines_due + 1) % 5;
                }
                Progress::Off => {}
            }
            samples.push(sample);
            if stop {
                if progress == Progress::Live {
                    eprintln!();
                }
                return (samples, link, t0);
            }
        }
    };
    (stop_tx, tokio::spawn(task))
}
