//! What a registration run reports: the terminal summary, `report.json`, and the
//! Prometheus metrics it serves while it runs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use srtp_engine::metrics::{Exposition, Kind, Metric};

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
        let dist = |v: &[u64]| match (v.iter().min(), median(v), v.iter().max()) {
            (Some(a), Some(m), Some(b)) => format!("min {a} / median {m} / max {b} ms"),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "  registrations {}  refreshes {}  refresh failures {}  lapsed {}  rejected {}",
            s.registrations,
            s.refreshes,
            s.refresh_failures,
            s.expirations,
            s.rejections.values().sum::<u64>()
        );
        let _ = writeln!(o, "  time to register: {}", dist(&s.register_ms));
        let _ = writeln!(
            o,
            "  keepalive failures {}  registrars lost {}  failovers {}  fallbacks {}  unregistered {}",
            s.keepalive_failures, s.losses, s.failovers, s.fallbacks, s.unregistrations
        );
        if let Some(b) = self.detection_budget_ms {
            let _ = writeln!(o, "  detection budget {b} ms");
        }
        let _ = writeln!(o, "  time to detect: {}", dist(&s.detect_ms));
        let _ = writeln!(o, "  time to fail over: {}", dist(&s.failover_ms));
        let _ = writeln!(o, "  time to fall back: {}", dist(&s.fallback_ms));
        if !s.register_retransmits.is_empty() {
            let _ = writeln!(
                o,
                "  REGISTER retransmissions after (ms: count): {:?}",
                s.register_retransmits
            );
        }
        o
    }

    /// Writes `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

macro_rules! metric {
    ($id:ident, $kind:ident, $name:literal, [$($l:literal),*], $help:literal) => {
        const $id: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            help: $help,
            labels: &[$($l),*],
        };
    };
}

metric!(
    REGISTERED,
    Gauge,
    "srtp_control_registered_endpoints",
    ["registrar"],
    "Endpoints holding a live binding, per registrar."
);
metric!(
    UNREGISTERED,
    Gauge,
    "srtp_control_unregistered_endpoints",
    [],
    "Endpoints holding no live binding."
);
metric!(
    REGISTRATIONS,
    Counter,
    "srtp_control_registrations_total",
    [],
    "New registrations (first, after a failover, after waiting)."
);
metric!(
    REFRESHES,
    Counter,
    "srtp_control_registration_refreshes_total",
    [],
    "Successful refreshes."
);
metric!(
    REFRESH_FAILURES,
    Counter,
    "srtp_control_registration_refresh_failures_total",
    [],
    "Refreshes that failed (no answer, 408, 5xx, 6xx, connection lost)."
);
metric!(
    LAPSED,
    Counter,
    "srtp_control_registration_lapses_total",
    [],
    "Bindings whose lifetime ran out before a refresh succeeded."
);
metric!(
    KEEPALIVE_FAILURES,
    Counter,
    "srtp_control_keepalive_failures_total",
    [],
    "Keepalives (CRLF or OPTIONS) that went unanswered."
);
metric!(
    FAILOVERS,
    Counter,
    "srtp_control_registrar_failovers_total",
    [],
    "Moves to another registrar after one was declared lost."
);
metric!(
    FALLBACKS,
    Counter,
    "srtp_control_registrar_fallbacks_total",
    [],
    "Moves back to a higher-priority registrar."
);
metric!(
    REJECTIONS,
    Counter,
    "srtp_control_registration_rejections_total",
    [],
    "Registrations refused (4xx, credentials)."
);
metric!(
    DETECT,
    Gauge,
    "srtp_control_failure_detection_seconds",
    ["statistic"],
    "Time to detect a lost registrar so far (statistic: median or max)."
);
metric!(
    RECOVER,
    Gauge,
    "srtp_control_failover_recovery_seconds",
    ["statistic"],
    "Time from a loss to the registration elsewhere so far (statistic: median or max)."
);

/// Every registration metric, in exposition order.
pub const METRICS: &[&Metric] = &[
    &REGISTERED,
    &UNREGISTERED,
    &REGISTRATIONS,
    &REFRESHES,
    &REFRESH_FAILURES,
    &LAPSED,
    &KEEPALIVE_FAILURES,
    &FAILOVERS,
    &FALLBACKS,
    &REJECTIONS,
    &DETECT,
    &RECOVER,
];

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
                m.kind == Kind::Counter,
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
