//! A load run's report: the terminal summary, `report.json` (every figure), `report.html`
//! (self-contained: inline SVG plots, no script or font from the network) and
//! `failed-calls.log` (the SIP messages of failed calls, SDES keys redacted).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use std::collections::HashMap;

use serde::Serialize;

use super::causes;
use super::config::{Role, Scenario};
use super::host::GeneratorHealth;
pub use super::media::{Balance, Flow, LegEnd, MediaTotals};
pub use super::sample::Sample;
pub use super::totals::Check;
use super::totals::{Buckets, MS_EDGES, MediaSums, RunTotals, judge};

/// One call as the caller saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallRecord {
    /// Its place in the run (0-based).
    pub index: u64,
    /// Call-ID.
    pub call_id: String,
    /// `sdes`, `dtls` or `dual`.
    pub method: &'static str,
    /// When it started, seconds from the run's start.
    pub start_s: f64,
    /// INVITE to 200 OK, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<f64>,
    /// The caller's DTLS-SRTP handshake, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_ms: Option<f64>,
    /// Why it failed (a name from [`causes::CAUSES`] or `sip_<code>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The failure's own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The caller's media at hangup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<LegEnd>,
    /// With our answerer at the other end: what the caller sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_answerer: Option<Flow>,
    /// With our answerer at the other end: what it sent the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_caller: Option<Flow>,
    /// Whether DTLS went end to end (when the far end's certificate is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_path: Option<crate::sdp::DtlsPath>,
    /// SIP messages of a failed call (not in the JSON: in `failed-calls.log`).
    #[serde(skip)]
    pub sip_log: Vec<String>,
}

/// The engine's part.
#[derive(Clone, Debug, Serialize)]
pub struct EngineFigures {
    /// `embedded` or `socket <path>`.
    pub kind: String,
    /// I/O backend (embedded).
    pub backend: String,
    /// Workers (embedded).
    pub workers: usize,
    /// Packets the engine could not send (embedded).
    pub tx_drops: u64,
    /// Engine events dropped (embedded).
    pub events_dropped: u64,
    /// Datagrams the kernel dropped at the engine's sockets (receive buffers full).
    pub kernel_drops: u64,
    /// Times the engine ran out of receive buffers.
    pub rx_no_buffer: u64,
}

/// What the runner hands over.
#[derive(Debug)]
pub struct Gathered {
    /// Wall-clock start.
    pub started: SystemTime,
    /// Run length, s.
    pub duration_s: f64,
    /// Calls started.
    pub offered: u64,
    /// First to last call start, s.
    pub placing_s: Option<f64>,
    /// Worst delay of a call's start behind its schedule, ms.
    pub max_lag_ms: f64,
    /// Most calls at once.
    pub peak_active: u64,
    /// Every call.
    pub records: Vec<CallRecord>,
    /// Calls our answerer answered.
    pub answered: u64,
    /// Calls our answerer refused, by cause.
    pub refused: std::collections::HashMap<String, u64>,
    /// Our answerers' media per call, by Call-ID (several ends for a forked call).
    pub answerer_media: HashMap<String, Vec<LegEnd>>,
    /// The far end's certificates, to judge the DTLS path (empty: unknown).
    pub far_end: Vec<srtp_engine::proto::dtls::Fingerprint>,
    /// Our answerer's DTLS handshakes, ms.
    pub answerer_dtls_ms: Vec<f64>,
    /// The time series.
    pub samples: Vec<Sample>,
    /// The engine.
    pub engine: EngineFigures,
    /// Failed calls whose SIP messages were not kept.
    pub sip_logs_not_kept: u64,
}

/// A distribution of times.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Distribution {
    /// Samples.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// 20 equal bins from 0 to `max`: (upper edge, count).
    pub histogram: Vec<(f64, u64)>,
}

impl Distribution {
    /// Of these values.
    pub fn of(values: &[f64]) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let q = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let max = v[n - 1];
        let histogram = crate::charts::bins(&v);
        Distribution {
            count: n,
            min: v[0],
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max,
            mean: v.iter().sum::<f64>() / n as f64,
            histogram,
        }
    }
}

/// Calls, by cause.
#[derive(Clone, Debug, Serialize)]
pub struct FailureGroup {
    /// The cause's name.
    pub cause: String,
    /// Its category.
    pub category: &'static str,
    /// What happened.
    pub title: &'static str,
    /// What to check.
    pub advice: &'static str,
    /// How many calls.
    pub calls: u64,
    /// The first such call's own words.
    pub example: String,
    /// Up to 5 Call-IDs.
    pub call_ids: Vec<String>,
}

/// Call counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallFigures {
    /// Calls attempted.
    pub attempted: u64,
    /// Set up (SIP answered and, for DTLS-SRTP, the handshake done).
    pub setup_ok: u64,
    /// Failed, set-up or media.
    pub failed: u64,
    /// Set up / attempted, %.
    pub setup_success_percent: f64,
    /// Calls/s asked for.
    pub offered_rate: f64,
    /// Calls/s achieved once ramped up (from the first call started after the ramp to the
    /// last one).
    pub achieved_rate: Option<f64>,
    /// Worst delay of a call's start behind schedule, ms.
    pub max_start_lag_ms: f64,
    /// Most calls at once.
    pub peak_active: u64,
    /// Attempted and set up, by keying method.
    pub by_method: BTreeMap<String, (u64, u64)>,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Transport.
    pub transport: String,
    /// Keying method.
    pub method: String,
    /// Media mode.
    pub media_mode: String,
    /// This agent's share of a scenario split across agents (`I/N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// UTC start.
    pub started_utc: String,
    /// Length, s.
    pub duration_s: f64,
    /// Engine.
    pub engine: EngineFigures,
    /// Calls.
    pub calls: CallFigures,
    /// INVITE to 200 OK, ms.
    pub setup_ms: Distribution,
    /// The callers' DTLS-SRTP handshakes, ms.
    pub dtls_handshake_ms: Distribution,
    /// Our answerer's DTLS-SRTP handshakes, ms.
    pub answerer_dtls_handshake_ms: Distribution,
    /// How the run used this machine: whether the figures measure the equipment or the
    /// generator's own limits.
    pub generator: GeneratorHealth,
    /// What the callers received.
    pub caller_media: MediaTotals,
    /// What our answerer received.
    pub answerer_media: MediaTotals,
    /// With both ends of calls here: where every RTP packet of each direction went. The
    /// buckets add up to what was sent, call by call; `unaccounted` says by how much they do
    /// not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_balance: Option<Balance>,
    /// DTLS end to end or terminated by a middlebox (when the far end's certificate is
    /// known: role `both`, or `security.far_end_fingerprints`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_path: Option<super::path::PathTotals>,
    /// Calls our answerer answered.
    pub answered: u64,
    /// Calls our answerer refused, by cause.
    pub refused: BTreeMap<String, u64>,
    /// Failures by cause, most frequent first.
    pub failures: Vec<FailureGroup>,
    /// The thresholds, judged.
    pub thresholds: Vec<Check>,
    /// The figures they judge, in a form that adds up across agents (`srtp-control merge`).
    pub totals: RunTotals,
    /// Whether every threshold holds.
    pub pass: bool,
    /// Per second.
    pub timeline: Vec<Sample>,
    /// Every call (with `report.per_call`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub call_records: Vec<CallRecord>,
    /// Failed calls whose SIP messages were not kept.
    pub sip_logs_not_kept: u64,
    /// The SIP messages of failed calls (Call-ID, cause, messages), for `failed-calls.log`.
    #[serde(skip)]
    pub failed_logs: Vec<(String, String, Vec<String>)>,
}

impl Report {
    /// Builds the report and judges the thresholds.
    pub fn build(s: &Scenario, mut g: Gathered) -> Report {
        let balance = pair_ends(&mut g.records, &g.answerer_media);
        let (paths, dtls_path) = super::path::judge(
            g.records
                .iter()
                .map(|r| (r.call_id.as_str(), r.media.as_ref())),
            &g.answerer_media,
            &g.far_end,
        );
        for (r, p) in g.records.iter_mut().zip(paths) {
            r.dtls_path = p;
        }
        let attempted = g.records.len() as u64;
        let failed = g.records.iter().filter(|r| r.cause.is_some()).count() as u64;
        let by_method = by_method(&g.records);
        let setup_ok: u64 = by_method.values().map(|(_, ok)| ok).sum();
        let setup: Vec<f64> = g.records.iter().filter_map(|r| r.setup_ms).collect();
        let dtls: Vec<f64> = g.records.iter().filter_map(|r| r.dtls_ms).collect();
        let caller_media = MediaTotals::of(g.records.iter().filter_map(|r| r.media.as_ref()));
        let answerer_media =
            MediaTotals::of(g.answerer_media.values().flatten().filter(|e| !e.released));
        let mut groups: BTreeMap<String, FailureGroup> = BTreeMap::new();
        for r in &g.records {
            let Some(cause) = &r.cause else { continue };
            let d = causes::describe(cause);
            let e = groups.entry(cause.clone()).or_insert_with(|| FailureGroup {
                cause: cause.clone(),
                category: d.category,
                title: d.title,
                advice: d.advice,
                calls: 0,
                example: r.detail.clone().unwrap_or_default(),
                call_ids: Vec::new(),
            });
            e.calls += 1;
            if e.call_ids.len() < 5 {
                e.call_ids.push(r.call_id.clone());
            }
        }
        let mut failures: Vec<FailureGroup> = groups.into_values().collect();
        failures.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.cause.cmp(&b.cause)));
        let totals = RunTotals {
            limits: s.thresholds.clone(),
            caller_role: s.role != Role::Answerer,
            attempted,
            setup_ok,
            failed,
            by_method: by_method.clone(),
            failures: failures
                .iter()
                .map(|f| (f.cause.clone(), f.calls))
                .collect(),
            answered: g.answered,
            setup_ms: Buckets::of(setup.iter().copied(), &MS_EDGES),
            dtls_ms: Buckets::of(dtls.iter().copied(), &MS_EDGES),
            caller_media: MediaSums::of(
                &caller_media,
                g.records
                    .iter()
                    .filter_map(|r| r.media.as_ref())
                    .map(|m| m.mos),
            ),
            answerer_media: MediaSums::of(
                &answerer_media,
                g.answerer_media
                    .values()
                    .flatten()
                    .filter(|e| !e.released)
                    .map(|e| e.mos),
            ),
            unaccounted: balance.as_ref().map(|b| {
                (
                    b.to_answerers.unaccounted,
                    b.to_callers.unaccounted,
                    b.to_answerers.calls,
                )
            }),
        };
        let thresholds = judge(&totals);
        let pass = thresholds.iter().all(|c| c.pass);
        let failed_logs = g
            .records
            .iter()
            .filter(|r| r.cause.is_some() && !r.sip_log.is_empty())
            .map(|r| {
                (
                    r.call_id.clone(),
                    r.cause.clone().unwrap_or_default(),
                    r.sip_log.clone(),
                )
            })
            .collect();
        let started = g
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let generator =
            GeneratorHealth::judge(&g.samples, g.engine.kernel_drops, g.engine.rx_no_buffer);
        Report {
            name: s.name.clone(),
            role: format!("{:?}", s.role).to_lowercase(),
            transport: s.sip.transport.clone(),
            method: format!("{:?}", s.security.method).to_lowercase(),
            media_mode: format!("{:?}", s.media.mode).to_lowercase(),
            shard: s.shard.is_split().then(|| s.shard.to_string()),
            started_utc: format!("{}Z", crate::sip::log::utc(started)),
            duration_s: g.duration_s,
            engine: g.engine,
            calls: CallFigures {
                attempted,
                setup_ok,
                failed,
                setup_success_percent: totals.setup_percent(),
                offered_rate: s.load.rate / f64::from(s.shard.count),
                achieved_rate: achieved_rate(&g.records, s.load.ramp_up_s).or_else(|| {
                    g.placing_s
                        .map(|p| (g.offered.saturating_sub(1)) as f64 / p)
                }),
                max_start_lag_ms: g.max_lag_ms,
                peak_active: g.peak_active,
                by_method,
            },
            setup_ms: Distribution::of(&setup),
            dtls_handshake_ms: Distribution::of(&dtls),
            answerer_dtls_handshake_ms: Distribution::of(&g.answerer_dtls_ms),
            media_balance: (s.role == Role::Both).then_some(balance).flatten(),
            dtls_path,
            generator,
            caller_media,
            answerer_media,
            answered: g.answered,
            refused: g.refused.into_iter().collect(),
            failures,
            thresholds,
            totals,
            pass,
            timeline: g.samples,
            call_records: if s.report.per_call {
                g.records
            } else {
                Vec::new()
            },
            sip_logs_not_kept: g.sip_logs_not_kept,
            failed_logs,
        }
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let c = &self.calls;
        let _ = writeln!(o, "srtp-control run: {}", self.name);
        let _ = writeln!(
            o,
            "  result            {}",
            if self.pass { "PASS" } else { "FAIL" }
        );
        let _ = writeln!(
            o,
            "  setup             {} role, SIP over {}, {} keying, media {}, engine {} ({} {} workers), {:.1} s",
            self.role,
            self.transport,
            self.method,
            self.media_mode,
            self.engine.kind,
            self.engine.backend,
            self.engine.workers,
            self.duration_s
        );
        if let Some(shard) = &self.shard {
            let _ = writeln!(
                o,
                "  shard             {shard}: this agent's share of the scenario"
            );
        }
        if c.attempted > 0 {
            let _ = writeln!(
                o,
                "  calls             {} attempted at {} calls/s (achieved {}, worst start lag {:.1} ms), peak {} at once",
                c.attempted,
                c.offered_rate,
                c.achieved_rate.map_or("-".into(), |r| format!("{r:.1}/s")),
                c.max_start_lag_ms,
                c.peak_active
            );
            let methods: Vec<String> = c
                .by_method
                .iter()
                .map(|(m, (a, ok))| format!("{} {ok}/{a}", m.to_uppercase()))
                .collect();
            let _ = writeln!(
                o,
                "  set up            {} ({:.2}%): {}; failed {}",
                c.setup_ok,
                c.setup_success_percent,
                methods.join(", "),
                c.failed
            );
            let d = |x: &Distribution| {
                if x.count == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                        x.p50, x.p90, x.p99, x.max
                    )
                }
            };
            let _ = writeln!(o, "  setup time ms     {}", d(&self.setup_ms));
            if self.dtls_handshake_ms.count > 0 {
                let _ = writeln!(o, "  DTLS handshake ms {}", d(&self.dtls_handshake_ms));
            }
        }
        if self.answered > 0 || !self.refused.is_empty() {
            let refused: Vec<String> = self
                .refused
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                o,
                "  answerer          answered {}, refused {}",
                self.answered,
                if refused.is_empty() {
                    "0".into()
                } else {
                    refused.join(", ")
                }
            );
        }
        for (who, m) in [
            ("caller rx", &self.caller_media),
            ("answerer rx", &self.answerer_media),
        ] {
            if m.streams == 0 {
                continue;
            }
            let _ = writeln!(
                o,
                "  media {who:<11} {} streams: lost {} of {} expected ({:.4}%, {} streams), jitter {:.2} ms (max {:.2}), MOS min {:.2} mean {:.2}, auth failures {}",
                m.streams,
                m.lost,
                m.expected,
                m.loss_percent,
                m.streams_with_loss,
                m.jitter_mean_ms,
                m.jitter_max_ms,
                m.mos_min,
                m.mos_mean,
                m.auth_failures,
            );
        }
        let _ = writeln!(
            o,
            "  MOS               ITU-T G.107 E-model from loss, jitter and round-trip time, with random loss (burst ratio 1): the same loss in bursts scores lower"
        );
        if let Some(b) = &self.media_balance {
            let _ = writeln!(o, "  RTP to answerers  {}", b.to_answerers.line());
            let _ = writeln!(o, "  RTP to callers    {}", b.to_callers.line());
            if b.calls_one_end > 0 {
                let _ = writeln!(
                    o,
                    "                    {} calls have figures from one end only (not counted above)",
                    b.calls_one_end
                );
            }
            if let Some((up, down)) = &b.forked {
                let _ = writeln!(
                    o,
                    "  forked calls      {} forked to several of our answerers, apart and not judged: what an answerer not chosen sent may arrive after the call ended",
                    up.calls
                );
                let _ = writeln!(o, "    to answerers    {}", up.line());
                let _ = writeln!(o, "    to callers      {}", down.line());
            }
        }
        if let Some(p) = &self.dtls_path {
            let _ = writeln!(o, "  DTLS path         {}", p.line());
        }
        let g = &self.generator;
        let pct = super::host::percent;
        let _ = writeln!(
            o,
            "  this machine      CPU peak {} mean {}, steal peak {} mean {}, busiest worker {}, local socket drops {}",
            pct(g.cpu_percent_peak),
            pct(g.cpu_percent_mean),
            pct(g.steal_percent_peak),
            pct(g.steal_percent_mean),
            pct(g.worker_busy_peak.map(|b| b * 100.0)),
            g.local_drops,
        );
        let _ = writeln!(
            o,
            "  {}         {}",
            if g.saturated { "WARNING" } else { "       " },
            g.verdict
        );
        if !self.failures.is_empty() {
            let _ = writeln!(o, "failures by cause:");
            for f in &self.failures {
                let _ = writeln!(
                    o,
                    "  {:>6}  {:<9} {:<28} {}",
                    f.calls, f.category, f.cause, f.title
                );
                let _ = writeln!(o, "          check: {}", f.advice);
                let _ = writeln!(o, "          e.g.:  {}", f.example);
            }
        }
        let _ = writeln!(o, "thresholds:");
        for t in &self.thresholds {
            let _ = writeln!(
                o,
                "  {}  {:<30} {} (limit {})",
                if t.pass { "pass" } else { "FAIL" },
                t.name,
                t.value,
                t.limit
            );
        }
        o
    }
}

/// Calls per second from the first call started after the ramp to the last one (the rate the
/// run held once ramped up); None with fewer than two such calls.
fn achieved_rate(records: &[CallRecord], ramp_s: f64) -> Option<f64> {
    let starts = records.iter().map(|r| r.start_s).filter(|&t| t >= ramp_s);
    let (n, lo, hi) = starts.fold((0u64, f64::INFINITY, 0.0f64), |(n, lo, hi), t| {
        (n + 1, lo.min(t), hi.max(t))
    });
    (n >= 2 && hi > lo).then(|| (n - 1) as f64 / (hi - lo))
}

/// Puts the two ends of each call side by side (our answerer's by Call-ID), with each
/// direction's flow, and sums them. None when no call has both ends here.
fn pair_ends(
    records: &mut [CallRecord],
    answerer: &HashMap<String, Vec<LegEnd>>,
) -> Option<Balance> {
    let mut b = Balance::default();
    let mut paired = 0;
    for r in records.iter_mut() {
        let ends: Vec<&LegEnd> = answerer.get(&r.call_id).into_iter().flatten().collect();
        match r.media.as_ref().map(|c| Flow::call(c, &ends)) {
            Some(Some((up, down))) if ends.len() > 1 => {
                let f = b.forked.get_or_insert_with(Default::default);
                f.0.add(&up);
                f.1.add(&down);
                r.to_answerer = Some(up);
                r.to_caller = Some(down);
            }
            Some(Some((up, down))) => {
                b.to_answerers.add(&up);
                b.to_callers.add(&down);
                r.to_answerer = Some(up);
                r.to_caller = Some(down);
                paired += 1;
            }
            Some(None) => b.calls_one_end += 1,
            None => {}
        }
    }
    (paired > 0 || b.forked.is_some()).then_some(b)
}

/// Causes that mean the call never got set up (as opposed to media trouble after set-up).
/// Per keying method: (calls attempted, calls set up), of ended calls.
pub(super) fn by_method(records: &[CallRecord]) -> BTreeMap<String, (u64, u64)> {
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in records {
        let e = by.entry(r.method.to_owned()).or_default();
        e.0 += 1;
        e.1 += u64::from(r.setup_ms.is_some() && !r.cause.as_deref().is_some_and(is_setup_cause));
    }
    by
}

fn is_setup_cause(cause: &str) -> bool {
    !matches!(cause, "srtp_auth_failures" | "no_media" | "bye_failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_the_right_percentiles_and_bins() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Distribution::of(&v);
        assert_eq!(
            (d.count, d.min, d.p50, d.p90, d.p99, d.max),
            (100, 1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(d.histogram.iter().map(|b| b.1).sum::<u64>(), 100);
        assert_eq!(d.histogram[0], (5.0, 4));
        assert_eq!(d.histogram[19].1, 6);
        assert_eq!(Distribution::of(&[]).count, 0);
    }
}
