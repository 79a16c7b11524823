//! What a registration run reports: the terminal summary, `report.json`, and the
//! Prometheus metrics it serves while it runs.

use serde::Serialize;
use srtp_engine::metrics::Exposition;

use super::fleet::{FleetSnapshot, FleetStats};

/// Registered endpoints at one second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Registered per registrar, and not registered.
    #[serde(flatten)]
    pub snapshot: FleetSnapshot,
}

/// What a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RegisterReport {
    /// Endpoints in the fleet.
    pub endpoints: usize,
    /// Transport.
    pub transport: &'static str,
    /// Registrar names in order.
    pub registrars: Vec<String>,
    /// The longest time from a registrar's death to its detection, as configured (ms).
    pub detection_budget_ms: Option<u64>,
    /// How long the run lasted (s).
    pub duration_s: f64,
    /// Registered per registrar at the end, before unregistering.
    pub end: FleetSnapshot,
    /// The fewest endpoints registered in any second after the initial ramp.
    pub min_registered_after_ramp: Option<usize>,
    /// Counters and timings.
    pub stats: FleetStats,
    /// Messages that matched no endpoint, and transport failures.
    pub garbage: u64,
    /// Per-second samples.
    pub samples: Vec<Sample>,
    /// Timings as a lab quotes them: min, median, p99 and max, ms.
    pub timings: Timings,
    /// Every threshold, judged.
    pub thresholds: Vec<Judged>,
    /// Whether every threshold held.
    pub pass: bool,
}

/// min, median, p99 and max of a set of durations (ms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// How many.
    pub count: usize,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub median: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Spread {
    /// The spread of `v`; `None` when empty.
    pub fn of(v: &[u64]) -> Option<Spread> {
        let mut v = v.to_vec();
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (!v.is_empty()).then(|| Spread {
            count: v.len(),
            min: v[0],
            median: at(0.5),
            p99: at(0.99),
            max: v[v.len() - 1],
        })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {} / median {} / p99 {} / max {} ms ({})",
            self.min, self.median, self.p99, self.max, self.count
        )
    }
}

/// The timings of a run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// New registrations (first, after failover or waiting).
    pub register: Option<Spread>,
    /// Detection: the first failed probe to the loss declared.
    pub detect: Option<Spread>,
    /// Failover: the outage seen (first failed probe) to registered on the next registrar.
    pub failover: Option<Spread>,
    /// Fallback: the registrar back (the first probe it answered) to registered there again
    /// with `Expires: 0` sent to the backup.
    pub fallback: Option<Spread>,
}

impl Timings {
    /// From the fleet's figures.
    pub fn of(s: &FleetStats) -> Timings {
        Timings {
            register: Spread::of(&s.register_ms),
            detect: Spread::of(&s.detect_ms),
            failover: Spread::of(&s.failover_ms),
            fallback: Spread::of(&s.fallback_ms),
        }
    }
}

/// One threshold, judged.
#[derive(Clone, Debug, Serialize)]
pub struct Judged {
    /// What is judged.
    pub name: &'static str,
    /// What was measured.
    pub value: String,
    /// The limit.
    pub limit: String,
    /// Whether it held.
    pub pass: bool,
}

/// Judges a run's figures against the fleet file's thresholds.
pub fn judge(
    t: &super::config::RegisterThresholds,
    endpoints: usize,
    end: &FleetSnapshot,
    budget_ms: Option<u64>,
    s: &FleetStats,
) -> Vec<Judged> {
    let mut out = Vec::new();
    let registered: usize = end.registered.iter().sum();
    let pct = 100.0 * registered as f64 / endpoints.max(1) as f64;
    out.push(Judged {
        name: "registered at the end",
        value: format!("{pct:.2}% ({registered} of {endpoints})"),
        limit: format!(">= {}%", t.registered_at_end_percent),
        pass: pct + 1e-9 >= t.registered_at_end_percent,
    });
    if let Some(m) = t.max_failovers {
        out.push(Judged {
            name: "failovers",
            value: s.failovers.to_string(),
            limit: format!("<= {m}"),
            pass: s.failovers <= m,
        });
    }
    if t.detection_within_budget
        && let Some(b) = budget_ms
    {
        let worst = s.detect_ms.iter().max().copied().unwrap_or(0);
        out.push(Judged {
            name: "detection within the budget",
            value: format!("worst {worst} ms"),
            limit: format!("<= {b} ms"),
            pass: worst <= b,
        });
    }
    for (name, limit, v) in [
        ("failover time", t.max_failover_ms, &s.failover_ms),
        ("fallback time", t.max_fallback_ms, &s.fallback_ms),
    ] {
        if let Some(m) = limit {
            let worst = v.iter().max().copied().unwrap_or(0);
            out.push(Judged {
                name,
                value: format!("worst {worst} ms ({} times)", v.len()),
                limit: format!("<= {m} ms"),
                pass: worst <= m,
            });
        }
    }
    if let Some(m) = t.max_errors {
        let n: u64 = s.errors.values().map(|e| e.count).sum();
        out.push(Judged {
            name: "connection, TLS and authentication errors",
            value: n.to_string(),
            limit: format!("<= {m}"),
            pass: n <= m,
        });
    }
    out
}

fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl RegisterReport {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let s = &self.stats;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "registration: {} endpoints over {} for {:.0} s",
            self.endpoints, self.transport, self.duration_s
        );
        for (i, name) in self.registrars.iter().enumerate() {
            let _ = writeln!(
                o,
                "  {name:<12} {:>7} registered at the end",
                self.end.registered[i]
            );
        }
        let _ = writeln!(o, "  {:<12} {:>7}", "unregistered", self.end.unregistered);
        if let Some(m) = self.min_registered_after_ramp {
            let _ = writeln!(o, "  fewest registered in any second after the ramp: {m}");
        }
        let dist = |v: &Option<Spread>| v.map_or("-".to_owned(), |s| s.to_string());
        let _ = writeln!(
            o,
            "  registrations {}  refreshes {}  refresh failures {}  lapsed {}  rejected {}",
            s.registrations,
            s.refreshes,
            s.refresh_failures,
            s.expirations,
            s.rejections.values().sum::<u64>()
        );
        let t = &self.timings;
        let _ = writeln!(o, "  time to register: {}", dist(&t.register));
        let _ = writeln!(
            o,
            "  keepalive failures {}  registrars lost {}  failovers {}  fallbacks {}  unregistered {}",
            s.keepalive_failures, s.losses, s.failovers, s.fallbacks, s.unregistrations
        );
        if let Some(b) = self.detection_budget_ms {
            let _ = writeln!(o, "  detection budget {b} ms");
        }
        let _ = writeln!(
            o,
            "  time to detect (first failed probe to loss): {}",
            dist(&t.detect)
        );
        let _ = writeln!(
            o,
            "  time to fail over (outage seen to registered on the next): {}",
            dist(&t.failover)
        );
        let _ = writeln!(
            o,
            "  time to fall back (registrar back to registered there, Expires: 0 to the backup): {}",
            dist(&t.fallback)
        );
        if !s.register_retransmits.is_empty() {
            let _ = writeln!(
                o,
                "  REGISTER retransmissions after (ms: count): {:?}",
                s.register_retransmits
            );
        }
        if !s.errors.is_empty() {
            let _ = writeln!(o, "errors by cause:");
            for (cause, e) in &s.errors {
                let _ = writeln!(o, "  {cause:<28} {:>7}  first: {}", e.count, e.first);
            }
        }
        let _ = writeln!(o, "thresholds:");
        for j in &self.thresholds {
            let _ = writeln!(
                o,
                "  {}  {:<44} {} (limit {})",
                if j.pass { "pass" } else { "FAIL" },
                j.name,
                j.value,
                j.limit
            );
        }
        let _ = writeln!(o, "result: {}", if self.pass { "PASS" } else { "FAIL" });
        o
    }
}

srtp_engine::declare_metrics! {
    /// Every registration metric, in exposition order.
    pub METRICS;
    REGISTERED: Gauge "srtp_control_registered_endpoints" ["registrar"]
        "Endpoints holding a live binding, per registrar.";
    UNREGISTERED: Gauge "srtp_control_unregistered_endpoints" []
        "Endpoints holding no live binding.";
    REGISTRATIONS: Counter "srtp_control_registrations_total" []
        "New registrations (first, after a failover, after waiting).";
    REFRESHES: Counter "srtp_control_registration_refreshes_total" []
        "Successful refreshes.";
    REFRESH_FAILURES: Counter "srtp_control_registration_refresh_failures_total" []
        "Refreshes that failed (no answer, 408, 5xx, 6xx, connection lost).";
    LAPSED: Counter "srtp_control_registration_lapses_total" []
        "Bindings whose lifetime ran out before a refresh succeeded.";
    KEEPALIVE_FAILURES: Counter "srtp_control_keepalive_failures_total" []
        "Keepalives (CRLF or OPTIONS) that went unanswered.";
    FAILOVERS: Counter "srtp_control_registrar_failovers_total" []
        "Moves to another registrar after one was declared lost.";
    FALLBACKS: Counter "srtp_control_registrar_fallbacks_total" []
        "Moves back to a higher-priority registrar.";
    REJECTIONS: Counter "srtp_control_registration_rejections_total" []
        "Registrations refused (4xx, credentials).";
    DETECT: Gauge "srtp_control_failure_detection_seconds" ["statistic"]
        "Time to detect a lost registrar so far (statistic: median or max).";
    RECOVER: Gauge "srtp_control_failover_recovery_seconds" ["statistic"]
        "Time from a loss to the registration elsewhere so far (statistic: median or max).";
}

/// Renders the fleet's metrics.
pub fn render_metrics(names: &[String], snap: &FleetSnapshot, s: &FleetStats) -> String {
    let mut o = Exposition::default();
    o.family(&REGISTERED);
    for (n, c) in names.iter().zip(&snap.registered) {
        o.sample(&REGISTERED, &[n], *c as f64);
    }
    o.one(&UNREGISTERED, snap.unregistered as f64);
    o.one(&REGISTRATIONS, s.registrations as f64);
    o.one(&REFRESHES, s.refreshes as f64);
    o.one(&REFRESH_FAILURES, s.refresh_failures as f64);
    o.one(&LAPSED, s.expirations as f64);
    o.one(&KEEPALIVE_FAILURES, s.keepalive_failures as f64);
    o.one(&FAILOVERS, s.failovers as f64);
    o.one(&FALLBACKS, s.fallbacks as f64);
    o.one(&REJECTIONS, s.rejections.values().sum::<u64>() as f64);
    for (m, v) in [(&DETECT, &s.detect_ms), (&RECOVER, &s.failover_ms)] {
        o.family(m);
        o.sample(m, &["median"], median(v).unwrap_or(0) as f64 / 1e3);
        o.sample(
            m,
            &["max"],
            v.iter().max().copied().unwrap_or(0) as f64 / 1e3,
        );
    }
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_documented_and_accepted_by_promtool() {
        let snap = FleetSnapshot {
            registered: vec![3, 1],
            unregistered: 1,
        };
        let stats = FleetStats {
            detect_ms: vec![2000, 2500],
            ..FleetStats::default()
        };
        let text = render_metrics(&["primary".into(), "backup".into()], &snap, &stats);
        let docs = include_str!("../../../docs/metrics.md");
        for m in METRICS {
            assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "{} not in docs",
                m.name
            );
            assert_eq!(
                m.kind == srtp_engine::metrics::Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
        assert!(text.contains("srtp_control_registered_endpoints{registrar=\"backup\"} 1"));
        assert!(text.contains("srtp_control_failure_detection_seconds{statistic=\"max\"} 2.5"));
        if let Err(said) = srtp_engine_tests::promtool_check_metrics(&text) {
            panic!("promtool: {said}");
        }
    }
}
