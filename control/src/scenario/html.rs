//! `report.html`: one self-contained page (inline CSS and SVG, a few lines of script that only
//! check the page), readable offline and printable.

use std::fmt::Write as _;

use super::report::{Distribution, Report};

/// HTML-escapes text.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const W: f64 = 640.0;
const H: f64 = 220.0;
const ML: f64 = 56.0;
const MR: f64 = 12.0;
const MT: f64 = 28.0;
const MB: f64 = 34.0;
const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

/// A "nice" axis top at or above `v`.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&x| x >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_tick(v: f64) -> String {
    if v >= 1000.0 {
        let k = v / 1000.0;
        if k.fract().abs() < 1e-9 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn frame(o: &mut String, title: &str, ymax: f64, xmax: f64, xlabel: &str) {
    let _ = write!(
        o,
        r##"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{ML}" y="16" class="title">{t}</text>"##,
        t = esc(title)
    );
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    for k in 0..=4 {
        let y = MT + ph - ph * f64::from(k) / 4.0;
        let _ = write!(
            o,
            r##"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{v}</text>"##,
            x2 = ML + pw,
            tx = ML - 6.0,
            ty = y + 4.0,
            v = fmt_tick(ymax * f64::from(k) / 4.0)
        );
    }
    for k in 0..=5 {
        let x = ML + pw * f64::from(k) / 5.0;
        let _ = write!(
            o,
            r##"<text x="{x:.1}" y="{ty}" class="tick" text-anchor="{a}">{v}</text>"##,
            ty = MT + ph + 16.0,
            a = if k == 5 { "end" } else { "middle" },
            v = fmt_tick(xmax * f64::from(k) / 5.0)
        );
    }
    let _ = write!(
        o,
        r##"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{l}</text>"##,
        x = ML + pw / 2.0,
        y = H - 4.0,
        l = esc(xlabel)
    );
}

/// A line chart of series over x.
fn line_chart(title: &str, xs: &[f64], series: &[(&str, Vec<f64>)]) -> String {
    let mut o = String::new();
    let xmax = nice_max(xs.iter().copied().fold(0.0, f64::max));
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max),
    );
    frame(&mut o, title, ymax, xmax, "seconds");
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    for (k, (name, ys)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    ML + pw * x / xmax,
                    MT + ph - ph * (y / ymax).clamp(0.0, 1.0)
                )
            })
            .collect();
        let _ = write!(
            o,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/><text x="{lx:.1}" y="16" class="legend" fill="{color}">{n}</text>"##,
            pts.join(" "),
            lx = W - MR - 80.0 * series.len() as f64 + 80.0 * k as f64,
            n = esc(name)
        );
    }
    o.push_str("</svg>");
    o
}

/// A histogram of a distribution's bins.
fn histogram(title: &str, d: &Distribution) -> String {
    let mut o = String::new();
    if d.count == 0 {
        let _ = write!(
            o,
            r##"<svg class="chart" viewBox="0 0 {W} 60" width="{W}" height="60" role="img" aria-label="{t}"><text x="{ML}" y="16" class="title">{t}</text><text x="{ML}" y="40" class="tick">no samples in this run</text></svg>"##,
            t = esc(title)
        );
        return o;
    }
    let xmax = d.histogram.last().map_or(1.0, |b| b.0);
    let ymax = nice_max(d.histogram.iter().map(|b| b.1 as f64).fold(0.0, f64::max));
    frame(&mut o, title, ymax, xmax, "ms");
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let bw = pw / d.histogram.len() as f64;
    for (k, (_, n)) in d.histogram.iter().enumerate() {
        let h = ph * (*n as f64 / ymax);
        let _ = write!(
            o,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{n}</title></rect>"##,
            x = ML + bw * k as f64 + 1.0,
            y = MT + ph - h,
            w = (bw - 2.0).max(1.0),
            c = COLORS[0]
        );
    }
    o.push_str("</svg>");
    o
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>srtp-control report: {name}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1340px}}
h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:1.6em}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}
.pass{{color:#1a7f37;font-weight:bold}} .fail{{color:#c00;font-weight:bold}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}}
svg.chart{{border:1px solid #ddd;background:#fff}}
.title{{font-weight:bold;font-size:13px}} .tick{{font-size:11px;fill:#555}} .legend{{font-size:12px}}
.grid{{stroke:#eee}} pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}
</style></head><body>
<h1>srtp-control report: {name}</h1>
<p>Result: <span class="{cls}" id="result">{res}</span> &middot; started {start} &middot; {dur:.1} s &middot; {role} role, SIP over {tr}, {method} keying, media {mm}, engine {ek} ({eb}, {ew} workers)</p>
"##,
        name = esc(&r.name),
        cls = if r.pass { "pass" } else { "fail" },
        res = if r.pass { "PASS" } else { "FAIL" },
        start = esc(&r.started_utc),
        dur = r.duration_s,
        role = esc(&r.role),
        tr = esc(&r.transport),
        method = esc(&r.method),
        mm = esc(&r.media_mode),
        ek = esc(&r.engine.kind),
        eb = esc(&r.engine.backend),
        ew = r.engine.workers,
    );
    o.push_str(
        "<h2>Thresholds</h2><table><tr><th></th><th>what</th><th>measured</th><th>limit</th></tr>",
    );
    for t in &r.thresholds {
        let _ = write!(
            o,
            r##"<tr><td class="{c}">{p}</td><td>{n}</td><td>{v}</td><td>{l}</td></tr>"##,
            c = if t.pass { "pass" } else { "fail" },
            p = if t.pass { "pass" } else { "FAIL" },
            n = esc(t.name),
            v = esc(&t.value),
            l = esc(&t.limit)
        );
    }
    o.push_str("</table>");
    let c = &r.calls;
    let _ = write!(
        o,
        r##"<h2>Calls</h2><table>
<tr><th>attempted</th><td>{}</td></tr><tr><th>set up</th><td>{} ({:.2}%)</td></tr><tr><th>failed</th><td>{}</td></tr>
<tr><th>rate offered / achieved</th><td>{} / {} calls/s (worst start lag {:.1} ms)</td></tr><tr><th>peak concurrent</th><td>{}</td></tr>
<tr><th>setup time</th><td>p50 {:.1} ms, p90 {:.1}, p99 {:.1}, max {:.1}</td></tr>
<tr><th>DTLS handshake (callers)</th><td>{} handshakes, p50 {:.1} ms, p99 {:.1}, max {:.1}</td></tr>
<tr><th>answerer</th><td>answered {}, refused {}</td></tr></table>"##,
        c.attempted,
        c.setup_ok,
        c.setup_success_percent,
        c.failed,
        c.offered_rate,
        c.achieved_rate.map_or("-".into(), |x| format!("{x:.1}")),
        c.max_start_lag_ms,
        c.peak_active,
        r.setup_ms.p50,
        r.setup_ms.p90,
        r.setup_ms.p99,
        r.setup_ms.max,
        r.dtls_handshake_ms.count,
        r.dtls_handshake_ms.p50,
        r.dtls_handshake_ms.p99,
        r.dtls_handshake_ms.max,
        r.answered,
        r.refused.values().sum::<u64>(),
    );
    o.push_str("<h2>Media</h2><table><tr><th>side</th><th>streams</th><th>sent</th><th>received</th><th>lost</th><th>loss</th><th>jitter mean / max</th><th>MOS min / mean</th><th>auth failures</th><th>dropped before the answer</th></tr>");
    for (who, m) in [
        ("callers receive", &r.caller_media),
        ("answerer receives", &r.answerer_media),
    ] {
        let _ = write!(
            o,
            "<tr><td>{who}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}%</td><td>{:.2} / {:.2} ms</td><td>{:.2} / {:.2}</td><td>{}</td><td>{}</td></tr>",
            m.streams,
            m.packets_sent,
            m.packets_received,
            m.lost,
            m.loss_percent,
            m.jitter_mean_ms,
            m.jitter_max_ms,
            m.mos_min,
            m.mos_mean,
            m.auth_failures,
            m.early_drops
        );
    }
    o.push_str("</table>");
    if let Some((a, b)) = r.undelivered_at_hangup {
        let _ = write!(
            o,
            "<p>Undelivered at hangup (sent by one side, not received by the other before the call ended: in flight or queued): {a} to the callers, {b} to the answerer.</p>"
        );
    }
    let g = &r.generator;
    let pct = super::host::percent;
    let _ = write!(
        o,
        r##"<h2>This machine</h2><table>
<tr><th>CPU peak / mean</th><td>{} / {}</td></tr><tr><th>steal peak / mean</th><td>{} / {}</td></tr>
<tr><th>seconds saturated</th><td>{}</td></tr><tr><th>busiest engine worker</th><td>{}</td></tr>
<tr><th>local socket drops</th><td>{}</td></tr><tr><th>verdict</th><td class="{}">{}</td></tr></table>"##,
        pct(g.cpu_percent_peak),
        pct(g.cpu_percent_mean),
        pct(g.steal_percent_peak),
        pct(g.steal_percent_mean),
        g.seconds_saturated,
        pct(g.worker_busy_peak.map(|b| b * 100.0)),
        g.local_drops,
        if g.saturated { "fail" } else { "pass" },
        esc(&g.verdict),
    );
    o.push_str("<h2>Failures by cause</h2>");
    if r.failures.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str("<table><tr><th>calls</th><th>category</th><th>cause</th><th>what happened</th><th>what to check</th><th>example</th></tr>");
        for f in &r.failures {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.calls,
                esc(f.category),
                esc(&f.cause),
                esc(f.title),
                esc(f.advice),
                esc(&f.example)
            );
        }
        o.push_str("</table>");
    }
    let ts = &r.timeline;
    let xs: Vec<f64> = ts.iter().map(|s| s.t_s).collect();
    let per_s = |f: &dyn Fn(&super::report::Sample) -> u64| -> Vec<f64> {
        let mut prev = (0u64, 0.0f64);
        ts.iter()
            .map(|s| {
                let dt = (s.t_s - prev.1).max(1e-3);
                let v = f(s).saturating_sub(prev.0) as f64 / dt;
                prev = (f(s), s.t_s);
                v
            })
            .collect()
    };
    o.push_str(r#"<h2>Over time</h2><div class="charts">"#);
    o.push_str(&line_chart(
        "Call rate (calls/s)",
        &xs,
        &[
            ("attempted", per_s(&|s| s.attempted)),
            ("set up", per_s(&|s| s.setup_ok)),
            ("failed", per_s(&|s| s.failed)),
        ],
    ));
    o.push_str(&line_chart(
        "Active calls",
        &xs,
        &[("active", ts.iter().map(|s| s.active as f64).collect())],
    ));
    o.push_str(&line_chart(
        "Media throughput (engine packets/s)",
        &xs,
        &[
            ("received", ts.iter().map(|s| s.rx_pps).collect()),
            ("sent", ts.iter().map(|s| s.tx_pps).collect()),
        ],
    ));
    o.push_str(&line_chart(
        "Loss of calls ending each second (%)",
        &xs,
        &[("loss %", ts.iter().map(|s| s.loss_percent).collect())],
    ));
    o.push_str(&line_chart(
        "Jitter of calls ending each second (ms)",
        &xs,
        &[("jitter ms", ts.iter().map(|s| s.jitter_ms).collect())],
    ));
    o.push_str(&line_chart(
        "This machine: CPU busy and steal (%)",
        &xs,
        &[
            (
                "busy %",
                ts.iter().map(|s| s.cpu_percent.unwrap_or(0.0)).collect(),
            ),
            (
                "steal %",
                ts.iter().map(|s| s.steal_percent.unwrap_or(0.0)).collect(),
            ),
        ],
    ));
    o.push_str(&histogram(
        "Setup time histogram (INVITE to 200 OK)",
        &r.setup_ms,
    ));
    o.push_str(&histogram(
        "DTLS-SRTP handshake latency histogram (callers)",
        &r.dtls_handshake_ms,
    ));
    o.push_str("</div>");
    if !r.failed_logs.is_empty() {
        o.push_str("<h2>SIP messages of failed calls</h2>");
        for (cid, cause, msgs) in r.failed_logs.iter().take(20) {
            let _ = write!(
                o,
                "<details><summary><code>{}</code>: {}</summary><pre>{}</pre></details>",
                esc(cid),
                esc(cause),
                esc(&msgs.concat())
            );
        }
        if r.failed_logs.len() > 20 {
            let _ = write!(
                o,
                "<p>{} more in failed-calls.log.</p>",
                r.failed_logs.len() - 20
            );
        }
    }
    // The page checks itself: every chart drew something (a test reads data-charts).
    o.push_str(
        r#"<script>
document.body.dataset.charts = String(Array.from(document.querySelectorAll('svg.chart')).filter(s => s.getBBox().width > 0).length);
</script>
</body></html>
"#,
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_escaping() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2001.0), 2500.0);
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let svg = line_chart("t", &[0.0, 1.0, 2.0], &[("a", vec![1.0, 2.0, 3.0])]);
        assert!(svg.contains("<polyline") && svg.ends_with("</svg>"));
        let h = histogram("h", &Distribution::of(&[1.0, 2.0, 2.0, 9.0]));
        assert_eq!(h.matches("<rect").count(), 20);
    }
}
