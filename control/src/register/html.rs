//! `report.html` of a registration run: one self-contained page (inline CSS and SVG) with the
//! verdict, the thresholds, endpoints registered per registrar over time, the failover and
//! fallback times as histograms, and the errors by cause.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::report::{RegisterReport, Spread};
use crate::charts::{STYLE, bins, esc, histogram, line_chart};

fn spread(s: &Option<Spread>) -> String {
    s.map_or("-".into(), |s| s.to_string())
}

/// The whole page.
pub fn render(r: &RegisterReport) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>srtp-control registration report</title>
<style>
{STYLE}
</style></head><body>
<h1>Registration: {n} endpoints over {tr}</h1>
<p>Result: <span class="{cls}" id="result">{res}</span> &middot; {dur:.0} s &middot; registrars in order: {regs}{budget}</p>
"##,
        n = r.endpoints,
        tr = esc(r.transport),
        cls = if r.pass { "pass" } else { "fail" },
        res = if r.pass { "PASS" } else { "FAIL" },
        dur = r.duration_s,
        regs = esc(&r.registrars.join(", ")),
        budget = r
            .detection_budget_ms
            .map(|b| format!(" &middot; detection budget {b} ms"))
            .unwrap_or_default(),
    );
    o.push_str(
        "<h2>Thresholds</h2><table><tr><th></th><th>what</th><th>measured</th><th>limit</th></tr>",
    );
    for j in &r.thresholds {
        let _ = write!(
            o,
            r#"<tr><td class="{c}">{p}</td><td>{n}</td><td>{v}</td><td>{l}</td></tr>"#,
            c = if j.pass { "pass" } else { "fail" },
            p = if j.pass { "pass" } else { "FAIL" },
            n = esc(j.name),
            v = esc(&j.value),
            l = esc(&j.limit)
        );
    }
    o.push_str("</table>");
    let xs: Vec<f64> = r.samples.iter().map(|s| s.t_s).collect();
    let mut series: Vec<(&str, Vec<f64>)> = r
        .registrars
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.as_str(),
                r.samples
                    .iter()
                    .map(|s| s.snapshot.registered.get(i).copied().unwrap_or(0) as f64)
                    .collect(),
            )
        })
        .collect();
    series.push((
        "none",
        r.samples
            .iter()
            .map(|s| s.snapshot.unregistered as f64)
            .collect(),
    ));
    let f = |v: &[u64]| bins(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let s = &r.stats;
    let _ = write!(
        o,
        r#"<h2>Over time</h2><div class="charts">{}</div>
<h2>Failover and fallback</h2>
<table><tr><th>timing</th><th>min / median / p99 / max (count)</th></tr>
<tr><td>to register</td><td>{}</td></tr>
<tr><td>to detect a loss (first failed probe to the loss)</td><td>{}</td></tr>
<tr><td>to fail over (outage seen to registered on the next)</td><td>{}</td></tr>
<tr><td>to fall back (registrar back to registered there, Expires: 0 to the backup)</td><td>{}</td></tr>
</table>
<div class="charts">{}{}</div>"#,
        line_chart("endpoints registered, per registrar", &xs, &series),
        esc(&spread(&r.timings.register)),
        esc(&spread(&r.timings.detect)),
        esc(&spread(&r.timings.failover)),
        esc(&spread(&r.timings.fallback)),
        histogram("failover time", &f(&s.failover_ms), "ms"),
        histogram("fallback time", &f(&s.fallback_ms), "ms"),
    );
    let _ = write!(
        o,
        "<h2>Counters</h2><table><tr><td>registrations</td><td>{}</td></tr><tr><td>refreshes</td><td>{}</td></tr>\
         <tr><td>refresh failures</td><td>{}</td></tr><tr><td>keepalive failures</td><td>{}</td></tr>\
         <tr><td>registrars lost</td><td>{}</td></tr><tr><td>failovers</td><td>{}</td></tr>\
         <tr><td>fallbacks</td><td>{}</td></tr><tr><td>unregistered (Expires: 0 answered)</td><td>{}</td></tr></table>",
        s.registrations,
        s.refreshes,
        s.refresh_failures,
        s.keepalive_failures,
        s.losses,
        s.failovers,
        s.fallbacks,
        s.unregistrations
    );
    if !s.errors.is_empty() {
        o.push_str("<h2>Errors by cause</h2><table><tr><th>cause</th><th>count</th><th>the first, in words</th></tr>");
        for (cause, e) in &s.errors {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(cause),
                e.count,
                esc(&e.first)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</body></html>\n");
    o
}

impl RegisterReport {
    /// Writes `report.json` and `report.html` into `dir`; returns the JSON's path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        std::fs::write(dir.join("report.html"), render(self))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::fleet::{ErrorCount, FleetSnapshot, FleetStats};
    use crate::register::report::{Judged, Sample, Timings};

    #[test]
    fn the_page_has_the_verdict_the_charts_and_the_errors() {
        let mut stats = FleetStats {
            failover_ms: vec![1200, 3400],
            fallback_ms: vec![200, 3500],
            ..FleetStats::default()
        };
        stats.errors.insert(
            "tls_name_mismatch".into(),
            ErrorCount {
                count: 3,
                first: "registrar primary: TLS: the server certificate is for <a>, not for b"
                    .into(),
            },
        );
        let r = RegisterReport {
            endpoints: 2,
            transport: "TLS",
            registrars: vec!["primary".into(), "backup".into()],
            detection_budget_ms: Some(9000),
            duration_s: 10.0,
            end: FleetSnapshot {
                registered: vec![2, 0],
                unregistered: 0,
            },
            min_registered_after_ramp: None,
            timings: Timings::of(&stats),
            thresholds: vec![Judged {
                name: "registered at the end",
                value: "100%".into(),
                limit: ">= 100%".into(),
                pass: true,
            }],
            pass: true,
            stats,
            garbage: 0,
            samples: vec![
                Sample {
                    t_s: 1.0,
                    snapshot: FleetSnapshot {
                        registered: vec![2, 0],
                        unregistered: 0,
                    },
                },
                Sample {
                    t_s: 2.0,
                    snapshot: FleetSnapshot {
                        registered: vec![0, 2],
                        unregistered: 0,
                    },
                },
            ],
        };
        let page = render(&r);
        assert!(page.contains(r#"id="result">PASS"#), "{page}");
        assert!(page.contains("endpoints registered, per registrar"));
        assert!(page.contains("<polyline"), "a line per registrar");
        assert!(
            page.contains("min 200 / median 3500 / p99 3500 / max 3500 ms (2)"),
            "{page}"
        );
        assert!(page.contains("tls_name_mismatch"));
        assert!(page.contains("&lt;a&gt;"), "escaped");
    }
}
