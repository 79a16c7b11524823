//! Self-contained report pages: inline SVG charts (lines over time, histograms) and the
//! style, shared by the load-run report and the registration report.

use std::fmt::Write as _;

/// HTML-escapes text.
pub(crate) fn esc(s: &str) -> String {
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

/// A line chart of series over x (seconds).
pub(crate) fn line_chart(title: &str, xs: &[f64], series: &[(&str, Vec<f64>)]) -> String {
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

/// A histogram: bins of (upper edge, count) over `xlabel`.
pub(crate) fn histogram(title: &str, bins: &[(f64, u64)], xlabel: &str) -> String {
    let mut o = String::new();
    if bins.iter().all(|b| b.1 == 0) {
        let _ = write!(
            o,
            r##"<svg class="chart" viewBox="0 0 {W} 60" width="{W}" height="60" role="img" aria-label="{t}"><text x="{ML}" y="16" class="title">{t}</text><text x="{ML}" y="40" class="tick">no samples in this run</text></svg>"##,
            t = esc(title)
        );
        return o;
    }
    let xmax = bins.last().map_or(1.0, |b| b.0);
    let ymax = nice_max(bins.iter().map(|b| b.1 as f64).fold(0.0, f64::max));
    frame(&mut o, title, ymax, xmax, xlabel);
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let bw = pw / bins.len() as f64;
    for (k, (_, n)) in bins.iter().enumerate() {
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

/// 20 equal bins from 0 to the largest value: (upper edge, count).
pub(crate) fn bins(values: &[f64]) -> Vec<(f64, u64)> {
    let max = values.iter().copied().fold(0.0, f64::max);
    let width = if max > 0.0 { max / 20.0 } else { 1.0 };
    let mut out: Vec<(f64, u64)> = (1..=20).map(|k| (width * k as f64, 0)).collect();
    for x in values {
        let k = ((x / width) as usize).min(19);
        out[k].1 += 1;
    }
    out
}

/// The page's style sheet.
pub(crate) const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1340px}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.pass{color:#1a7f37;font-weight:bold} .fail{color:#c00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #ddd;background:#fff}
.title{font-weight:bold;font-size:13px} .tick{font-size:11px;fill:#555} .legend{font-size:12px}
.grid{stroke:#eee} pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::report::Distribution;

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
        let h = histogram(
            "h",
            &Distribution::of(&[1.0, 2.0, 2.0, 9.0]).histogram,
            "ms",
        );
        assert_eq!(h.matches("<rect").count(), 20);
    }
}
