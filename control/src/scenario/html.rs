//! `report.html`: one self-contained page (inline CSS and SVG, a few lines of script that only
//! check the page), readable offline and printable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::report::{Balance, Distribution, Flow, Report};
use crate::charts::{STYLE, esc, line_chart};

/// Where every RTP packet of each direction went: the buckets add up to what was sent.
fn balance_table(b: &Balance) -> String {
    let mut o = String::from(
        "<h3>Where the RTP packets went</h3><p>Each direction of the calls whose two ends ran here: \
         every bucket is measured on its own (the sender counts what it sent, the receiver what it \
         took, dropped and missed in the sequence numbers), so <em>unaccounted</em> is what no \
         measurement explains.</p><table><tr><th></th><th>callers to answerers</th><th>answerers to callers</th></tr>",
    );
    type Row = (&'static str, fn(&Flow) -> i64);
    let rows: [Row; 9] = [
        ("calls", |f| f.calls as i64),
        ("sent", |f| f.sent as i64),
        ("received", |f| f.received as i64),
        ("lost in sequence", |f| f.lost_in_sequence as i64),
        ("dropped before the answer", |f| {
            f.dropped_before_answer as i64
        }),
        ("dropped before the keys", |f| f.dropped_before_keys as i64),
        (
            "rejected (authentication, replay, malformed, source)",
            |f| f.rejected as i64,
        ),
        ("undelivered at hangup", |f| f.undelivered_at_hangup as i64),
        ("unaccounted", |f| f.unaccounted),
    ];
    for (name, get) in rows {
        let (a, c) = (get(&b.to_answerers), get(&b.to_callers));
        let class = if name == "unaccounted" && (a != 0 || c != 0) {
            " class=\"fail\""
        } else {
            ""
        };
        let _ = write!(
            o,
            "<tr><th>{name}</th><td{class}>{a}</td><td{class}>{c}</td></tr>"
        );
    }
    o.push_str("</table>");
    if b.calls_one_end > 0 {
        let _ = write!(
            o,
            "<p>{} calls have figures from one end only and are not counted above.</p>",
            b.calls_one_end
        );
    }
    if let Some((up, down)) = &b.forked {
        let _ = write!(
            o,
            "<p>{} calls were forked to several of our answerers and are counted apart, not judged \
             (what an answerer not chosen sent may arrive after the call ended): to the answerers \
             {}; to the callers {}.</p>",
            up.calls,
            esc(&up.line()),
            esc(&down.line())
        );
    }
    o
}

fn histogram(title: &str, d: &Distribution) -> String {
    crate::charts::histogram(title, &d.histogram, "ms")
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>srtp-control report: {name}</title>
<style>
{STYLE}
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
            n = esc(&t.name),
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
    o.push_str("<h2>Media</h2><table><tr><th>side</th><th>streams</th><th>sent</th><th>received</th><th>lost</th><th>loss</th><th>jitter mean / max</th><th title='ITU-T G.107 E-model with random loss (burst ratio 1): the same loss in bursts scores lower'>MOS min / mean (E-model, random loss)</th><th>auth failures</th><th>dropped before the answer</th></tr>");
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
    if let Some(b) = &r.media_balance {
        o.push_str(&balance_table(b));
    }
    if let Some(p) = &r.dtls_path {
        let _ = write!(o, "<p>DTLS path: {}.</p>", esc(&p.line()));
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
    let per_s = |f: &dyn Fn(&super::sample::Sample) -> u64| -> Vec<f64> {
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

impl Report {
    /// Writes `report.json`, `report.html` and, if any call failed with messages,
    /// `failed-calls.log` into `dir`; returns the paths written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::new();
        let json = dir.join("report.json");
        std::fs::write(
            &json,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        out.push(json);
        let html = dir.join("report.html");
        std::fs::write(&html, render(self))?;
        out.push(html);
        if !self.failed_logs.is_empty() {
            let log = dir.join("failed-calls.log");
            let mut text = String::new();
            for (cid, cause, msgs) in &self.failed_logs {
                let _ = writeln!(text, "==== call {cid}: {cause} ====\n");
                for m in msgs {
                    text.push_str(m);
                }
            }
            std::fs::write(&log, text)?;
            out.push(log);
        }
        Ok(out)
    }
}
