//! How much of this machine a load run used: the kernel's CPU time counters (`/proc/stat`) and
//! the engine's own drops, judged into a verdict on whether the figures measure the device under
//! test or the load generator's limits.
//!
//! A load generator that runs out of CPU queues packets in its own socket buffers (jitter, low
//! MOS, late setup) and then drops them there (loss). Without this, a lab would blame the
//! equipment it tests. On a virtual machine the hypervisor's share (steal) can do the same.

use serde::Serialize;

use super::sample::Sample;

/// Cumulative CPU time of the whole machine in clock ticks, from `/proc/stat`'s `cpu` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// idle + iowait (an io_uring worker waiting for completions counts as iowait).
    pub idle: u64,
    /// Time the hypervisor ran something else while this machine wanted the CPU.
    pub steal: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat`; `None` where it is missing or unreadable.
    pub fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses the aggregate `cpu` line of `/proc/stat` text.
    pub fn parse(text: &str) -> Option<CpuTimes> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        if f.len() < 4 {
            return None;
        }
        Some(CpuTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        })
    }

    /// Shares of the interval from `earlier` to `self`, in percent of all CPU time: (busy,
    /// steal). `None` for an empty interval.
    pub fn since(&self, earlier: &CpuTimes) -> Option<(f64, f64)> {
        let busy = self.busy.saturating_sub(earlier.busy);
        let idle = self.idle.saturating_sub(earlier.idle);
        let steal = self.steal.saturating_sub(earlier.steal);
        let total = busy + idle + steal;
        (total > 0).then(|| {
            (
                100.0 * busy as f64 / total as f64,
                100.0 * steal as f64 / total as f64,
            )
        })
    }
}

/// A share in percent for reports, `-` when unknown.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}%"))
}

/// A second counts as saturated at or above this CPU share (busy + steal), percent.
pub const SATURATED_PERCENT: f64 = 95.0;
/// Steal at or above this mean share is worth a warning, percent.
pub const STEAL_WARNING_PERCENT: f64 = 5.0;

/// How the run used this machine, and what that means for its figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GeneratorHealth {
    /// Highest per-second CPU share of the whole machine (busy, without steal), percent.
    pub cpu_percent_peak: Option<f64>,
    /// Mean of the per-second shares, percent.
    pub cpu_percent_mean: Option<f64>,
    /// Seconds in which busy + steal, or one engine worker's share of its core, reached
    /// [`SATURATED_PERCENT`].
    pub seconds_saturated: u64,
    /// Highest per-second steal share, percent.
    pub steal_percent_peak: Option<f64>,
    /// Mean steal share, percent.
    pub steal_percent_mean: Option<f64>,
    /// Highest share of a second an engine worker spent working (0-1), when known.
    pub worker_busy_peak: Option<f64>,
    /// Datagrams the kernel dropped at the engine's own sockets (receive buffer full): loss
    /// that happened on this machine.
    pub local_drops: u64,
    /// Times the engine ran out of receive buffers (io_uring ENOBUFS).
    pub rx_no_buffer: u64,
    /// Whether the machine ran out of CPU or dropped packets itself.
    pub saturated: bool,
    /// The judgement in words.
    pub verdict: String,
}

impl GeneratorHealth {
    /// Judges the per-second samples and the engine's final drop counters.
    pub fn judge(samples: &[Sample], local_drops: u64, rx_no_buffer: u64) -> GeneratorHealth {
        let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_percent).collect();
        let steal: Vec<f64> = samples.iter().filter_map(|s| s.steal_percent).collect();
        let peak = |v: &[f64]| v.iter().copied().reduce(f64::max);
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let seconds_saturated = samples
            .iter()
            .filter(|s| {
                s.cpu_percent.unwrap_or(0.0) + s.steal_percent.unwrap_or(0.0) >= SATURATED_PERCENT
                    || s.worker_busy.unwrap_or(0.0) * 100.0 >= SATURATED_PERCENT
            })
            .count() as u64;
        let worker_busy_peak = samples
            .iter()
            .filter_map(|s| s.worker_busy)
            .reduce(f64::max);
        let mut h = GeneratorHealth {
            cpu_percent_peak: peak(&cpu),
            cpu_percent_mean: mean(&cpu),
            seconds_saturated,
            steal_percent_peak: peak(&steal),
            steal_percent_mean: mean(&steal),
            worker_busy_peak,
            local_drops,
            rx_no_buffer,
            saturated: false,
            verdict: String::new(),
        };
        let mut said = Vec::new();
        if local_drops > 0 {
            said.push(format!(
                "this machine's own sockets dropped {local_drops} packets (receive buffers full): \
                 that loss happened here, not in the equipment under test"
            ));
        }
        if seconds_saturated > 0 {
            said.push(format!(
                "this machine ran at its limit for {seconds_saturated} s (CPU busy + steal, or an \
                 engine worker's core, >= {SATURATED_PERCENT:.0}%): jitter, MOS and setup times \
                 include its own queuing"
            ));
        }
        if let Some(st) = h.steal_percent_mean.filter(|&s| s >= STEAL_WARNING_PERCENT) {
            said.push(format!(
                "the hypervisor took {st:.1}% of the CPU time on average (steal)"
            ));
        }
        h.saturated = local_drops > 0 || seconds_saturated > 0;
        h.verdict = if said.is_empty() {
            match h.cpu_percent_peak {
                Some(p) => format!("headroom: CPU peak {p:.0}%, no local drops"),
                None => "no local drops (CPU use unknown: no /proc/stat)".into(),
            }
        } else {
            let mut v = said.join("; ");
            if h.saturated {
                v.push_str(
                    "; lower the load or spread it over more machines before judging the equipment",
                );
            }
            v
        };
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str =
        "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1 2 3\n";
    const STAT_B: &str = "cpu  190 5 140 800 40 6 9 50 7 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n";

    fn sample(cpu: Option<f64>, steal: Option<f64>) -> Sample {
        Sample {
            cpu_percent: cpu,
            steal_percent: steal,
            ..Sample::default()
        }
    }

    #[test]
    fn proc_stat_parses_and_gives_shares() {
        let a = CpuTimes::parse(STAT_A).expect("parses");
        assert_eq!(
            a,
            CpuTimes {
                busy: 160,
                idle: 840,
                steal: 0
            }
        );
        let b = CpuTimes::parse(STAT_B).expect("parses");
        // busy +190, idle +0, steal +50 over 240 ticks.
        let (busy, steal) = b.since(&a).expect("interval");
        assert!((busy - 100.0 * 190.0 / 240.0).abs() < 1e-9, "{busy}");
        assert!((steal - 100.0 * 50.0 / 240.0).abs() < 1e-9, "{steal}");
        assert_eq!(a.since(&a), None);
        assert_eq!(CpuTimes::parse("cpu  1 2\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 x 3 4\n"), None);
        assert_eq!(CpuTimes::parse("intr 1\n"), None);
    }

    #[test]
    fn verdicts_name_what_limited_the_machine() {
        let calm = [sample(Some(40.0), Some(0.5)), sample(Some(55.0), Some(1.0))];
        let h = GeneratorHealth::judge(&calm, 0, 0);
        assert!(!h.saturated);
        assert_eq!(h.seconds_saturated, 0);
        assert_eq!(h.cpu_percent_peak, Some(55.0));
        assert!(
            h.verdict.starts_with("headroom: CPU peak 55%"),
            "{}",
            h.verdict
        );

        let busy = [
            sample(Some(90.0), Some(6.0)),
            sample(Some(99.0), Some(0.0)),
            sample(Some(60.0), Some(20.0)),
        ];
        let h = GeneratorHealth::judge(&busy, 0, 0);
        assert!(h.saturated);
        assert_eq!(h.seconds_saturated, 2);
        assert!(h.verdict.contains("limit for 2 s"), "{}", h.verdict);
        assert!(h.verdict.contains("8.7% of the CPU time"), "{}", h.verdict);

        let mut worker_bound = calm.clone();
        worker_bound[1].worker_busy = Some(0.97);
        let h = GeneratorHealth::judge(&worker_bound, 0, 0);
        assert!(h.saturated);
        assert_eq!(h.seconds_saturated, 1);
        assert_eq!(h.worker_busy_peak, Some(0.97));

        let h = GeneratorHealth::judge(&calm, 1234, 3);
        assert!(h.saturated);
        assert!(h.verdict.contains("dropped 1234 packets"), "{}", h.verdict);
        assert_eq!(h.rx_no_buffer, 3);

        let h = GeneratorHealth::judge(&[sample(None, None)], 0, 0);
        assert!(!h.saturated);
        assert!(h.verdict.contains("unknown"), "{}", h.verdict);
    }
}
