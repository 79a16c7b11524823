//! What a run's verdict is made of, in a form that adds up across agents: counts and sums,
//! and histograms with fixed bucket edges (so that two agents' histograms merge exactly,
//! where percentiles cannot). Each report carries its [`RunTotals`]; `srtp-control merge`
//! adds them and judges the thresholds with [`judge`], as one run does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::Thresholds;
use super::media::MediaTotals;

/// Bucket edges of the setup-time and DTLS handshake histograms, ms (upper bounds; one more
/// bucket above the last).
pub const MS_EDGES: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    32000.0,
];

/// Bucket edges of the MOS histogram.
pub const MOS_EDGES: [f64; 13] = [
    1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.1, 4.2, 4.3, 4.4, 4.5,
];

/// A histogram with fixed edges: counts per bucket, and the exact count, sum, min and max.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// Upper bounds of the buckets (the last bucket, above them, has none).
    pub edges: Vec<f64>,
    /// Values per bucket: `edges.len() + 1` of them.
    pub counts: Vec<u64>,
    /// Values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest (0 when there are none).
    pub min: f64,
    /// The largest (0 when there are none).
    pub max: f64,
}

impl Buckets {
    /// These values, in buckets with these edges.
    pub fn of(values: impl IntoIterator<Item = f64>, edges: &[f64]) -> Buckets {
        let mut b = Buckets {
            edges: edges.to_vec(),
            counts: vec![0; edges.len() + 1],
            ..Buckets::default()
        };
        for v in values {
            let i = edges.partition_point(|&e| e < v);
            b.counts[i] += 1;
            b.min = if b.count == 0 { v } else { b.min.min(v) };
            b.max = if b.count == 0 { v } else { b.max.max(v) };
            b.count += 1;
            b.sum += v;
        }
        b
    }

    /// Adds another histogram with the same edges.
    pub fn merge(&mut self, o: &Buckets) -> Result<(), String> {
        if o.count == 0 {
            return Ok(());
        }
        if self.count == 0 && self.counts.is_empty() {
            *self = o.clone();
            return Ok(());
        }
        if self.edges != o.edges || self.counts.len() != o.counts.len() {
            return Err("histograms with other bucket edges".into());
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.min = if self.count == 0 {
            o.min
        } else {
            self.min.min(o.min)
        };
        self.max = if self.count == 0 {
            o.max
        } else {
            self.max.max(o.max)
        };
        self.count += o.count;
        self.sum += o.sum;
        Ok(())
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The `p` quantile (0-1), interpolated within its bucket and kept within min and max.
    pub fn quantile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = (p * self.count as f64).ceil().max(1.0);
        let mut seen = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = c as f64;
            if c > 0.0 && seen + c >= rank {
                let lo = if i == 0 { self.min } else { self.edges[i - 1] };
                let hi = self.edges.get(i).copied().unwrap_or(self.max);
                let v = lo + (hi - lo) * (rank - seen) / c;
                return v.clamp(self.min, self.max);
            }
            seen += c;
        }
        self.max
    }
}

/// One receiving side's media, as sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaSums {
    /// Streams with figures.
    pub streams: u64,
    /// RTP packets expected (RFC 3550).
    pub expected: u64,
    /// Lost (RFC 3550).
    pub lost: u64,
    /// Authentication failures.
    pub auth_failures: u64,
    /// Pacing periods the generator skipped.
    pub pacing_skips: u64,
    /// Lowest MOS (of streams with figures).
    pub mos_min: f64,
    /// MOS of each stream.
    pub mos: Buckets,
}

impl MediaSums {
    /// From one side's totals and its streams' MOS values.
    pub fn of(m: &MediaTotals, mos: impl IntoIterator<Item = f64>) -> MediaSums {
        MediaSums {
            streams: m.streams,
            expected: m.expected,
            lost: m.lost,
            auth_failures: m.auth_failures,
            pacing_skips: m.pacing_skips,
            mos_min: m.mos_min,
            mos: Buckets::of(mos, &MOS_EDGES),
        }
    }

    fn merge(&mut self, o: &MediaSums) -> Result<(), String> {
        self.mos_min = match (self.streams, o.streams) {
            (0, _) => o.mos_min,
            (_, 0) => self.mos_min,
            _ => self.mos_min.min(o.mos_min),
        };
        self.streams += o.streams;
        self.expected += o.expected;
        self.lost += o.lost;
        self.auth_failures += o.auth_failures;
        self.pacing_skips += o.pacing_skips;
        self.mos.merge(&o.mos)
    }
}

/// Everything a run's thresholds judge, as figures that add up across agents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunTotals {
    /// The thresholds the run was judged by.
    pub limits: Thresholds,
    /// Whether it placed calls (the setup threshold applies).
    pub caller_role: bool,
    /// Calls attempted.
    pub attempted: u64,
    /// Calls set up.
    pub setup_ok: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Per keying method: (attempted, set up).
    pub by_method: BTreeMap<String, (u64, u64)>,
    /// Failed calls by cause.
    pub failures: BTreeMap<String, u64>,
    /// Calls our answerer answered.
    pub answered: u64,
    /// INVITE to 200 OK, ms.
    pub setup_ms: Buckets,
    /// The callers' DTLS-SRTP handshakes, ms.
    pub dtls_ms: Buckets,
    /// What the callers received.
    pub caller_media: MediaSums,
    /// What our answerer received.
    pub answerer_media: MediaSums,
    /// With both ends here: packets the media balance could not account for, (to the
    /// answerers, to the callers, calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaccounted: Option<(i64, i64, u64)>,
}

impl RunTotals {
    /// Adds another agent's totals.
    pub fn merge(&mut self, o: &RunTotals) -> Result<(), String> {
        self.caller_role |= o.caller_role;
        self.attempted += o.attempted;
        self.setup_ok += o.setup_ok;
        self.failed += o.failed;
        for (k, (a, s)) in &o.by_method {
            let e = self.by_method.entry(k.clone()).or_default();
            e.0 += a;
            e.1 += s;
        }
        for (k, n) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += n;
        }
        self.answered += o.answered;
        self.setup_ms.merge(&o.setup_ms)?;
        self.dtls_ms.merge(&o.dtls_ms)?;
        self.caller_media.merge(&o.caller_media)?;
        self.answerer_media.merge(&o.answerer_media)?;
        self.unaccounted = match (self.unaccounted, o.unaccounted) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1, a.2 + b.2)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    /// Setup success, percent of attempted.
    pub fn setup_percent(&self) -> f64 {
        if self.attempted > 0 {
            100.0 * self.setup_ok as f64 / self.attempted as f64
        } else {
            0.0
        }
    }

    /// Media loss over both sides: (percent, lost, expected).
    pub fn loss(&self) -> (f64, u64, u64) {
        let expected = self.caller_media.expected + self.answerer_media.expected;
        let lost = self.caller_media.lost + self.answerer_media.lost;
        let pct = if expected > 0 {
            100.0 * lost as f64 / expected as f64
        } else {
            0.0
        };
        (pct, lost, expected)
    }

    /// The lowest MOS of either side, if any stream had media.
    pub fn mos_min(&self) -> Option<f64> {
        [&self.caller_media, &self.answerer_media]
            .iter()
            .filter(|m| m.streams > 0)
            .map(|m| m.mos_min)
            .reduce(f64::min)
    }
}

/// A threshold, judged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// What.
    pub name: String,
    /// The limit, as written.
    pub limit: String,
    /// The measured value.
    pub value: String,
    /// Whether it holds.
    pub pass: bool,
}

/// Judges the thresholds of `t.limits` on `t`: one run's, or the sum of several agents'.
pub fn judge(t: &RunTotals) -> Vec<Check> {
    let l = &t.limits;
    let mut checks = Vec::new();
    let mut check = |name: &str, limit: String, value: String, pass: bool| {
        checks.push(Check {
            name: name.to_owned(),
            limit,
            value,
            pass,
        });
    };
    if t.caller_role {
        let pct = t.setup_percent();
        check(
            "setup success",
            format!(">= {}%", l.min_setup_success_percent),
            format!("{pct:.2}% ({} of {})", t.setup_ok, t.attempted),
            t.attempted > 0 && pct + 1e-9 >= l.min_setup_success_percent,
        );
    }
    let (loss, lost, expected) = t.loss();
    check(
        "media loss",
        format!("<= {}%", l.max_loss_percent),
        format!("{loss:.4}% ({lost} of {expected} packets)"),
        loss <= l.max_loss_percent + 1e-12,
    );
    let mos = t.mos_min();
    check(
        "lowest MOS",
        format!(">= {}", l.min_mos),
        mos.map_or("no media".into(), |m| format!("{m:.2}")),
        mos.is_none_or(|m| m + 1e-9 >= l.min_mos),
    );
    let auth = t.caller_media.auth_failures + t.answerer_media.auth_failures;
    check(
        "SRTP authentication failures",
        format!("<= {}", l.max_auth_failures),
        auth.to_string(),
        auth <= l.max_auth_failures,
    );
    let skips = t.caller_media.pacing_skips + t.answerer_media.pacing_skips;
    check(
        "generator kept pace",
        "0 periods skipped".into(),
        format!("{skips} periods skipped"),
        skips == 0,
    );
    if let Some((to_answerers, to_callers, calls)) = t.unaccounted {
        check(
            "media accounted for",
            format!("<= {} packets unaccounted", l.max_unaccounted_packets),
            format!("{to_answerers} to the answerers, {to_callers} to the callers ({calls} calls)"),
            to_answerers.unsigned_abs() + to_callers.unsigned_abs() <= l.max_unaccounted_packets,
        );
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_exactly_and_quantiles_stay_in_range() {
        let a: Vec<f64> = (1..=100).map(f64::from).collect();
        let b: Vec<f64> = (101..=300).map(f64::from).collect();
        let mut ha = Buckets::of(a.iter().copied(), &MS_EDGES);
        let hb = Buckets::of(b.iter().copied(), &MS_EDGES);
        let whole = Buckets::of(a.iter().chain(&b).copied(), &MS_EDGES);
        ha.merge(&hb).unwrap();
        assert_eq!(ha, whole);
        assert_eq!(ha.count, 300);
        assert_eq!((ha.min, ha.max), (1.0, 300.0));
        assert!((ha.mean() - 150.5).abs() < 1e-9);
        // The median lies in the (100, 200] bucket; the p99 in (200, 500], below the max.
        let p50 = ha.quantile(0.5);
        assert!((100.0..=200.0).contains(&p50), "{p50}");
        let p99 = ha.quantile(0.99);
        assert!((200.0..=300.0).contains(&p99), "{p99}");
        // An empty histogram merges as nothing; other edges are refused.
        let mut e = Buckets::default();
        e.merge(&whole).unwrap();
        assert_eq!(e, whole);
        let other = Buckets::of([1.0], &MOS_EDGES);
        assert!(e.merge(&other).is_err());
    }

    #[test]
    fn totals_add_up_and_thresholds_judge_the_sum() {
        let limits = Thresholds {
            min_setup_success_percent: 90.0,
            ..Thresholds::default()
        };
        let agent = |attempted: u64, ok: u64| RunTotals {
            limits: limits.clone(),
            caller_role: true,
            attempted,
            setup_ok: ok,
            failed: attempted - ok,
            failures: [("timeout".to_owned(), attempted - ok)].into(),
            setup_ms: Buckets::of((0..ok).map(|i| i as f64), &MS_EDGES),
            ..RunTotals::default()
        };
        let good = agent(50, 50);
        let bad = agent(50, 30);
        assert!(judge(&good).iter().all(|c| c.pass));
        let mut sum = good.clone();
        sum.merge(&bad).unwrap();
        assert_eq!((sum.attempted, sum.setup_ok, sum.failed), (100, 80, 20));
        assert_eq!(sum.failures["timeout"], 20);
        assert_eq!(sum.setup_ms.count, 80);
        let setup = &judge(&sum)[0];
        assert_eq!(setup.name, "setup success");
        assert!(!setup.pass, "{setup:?}");
        assert_eq!(setup.value, "80.00% (80 of 100)");
    }
}
