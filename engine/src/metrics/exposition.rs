//! The text exposition format (version 0.0.4): families declared as [`Metric`]s, samples
//! written in order.

use std::fmt::Write as _;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets (`_bucket{le=...}`), `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug)]
pub struct Metric {
    /// Full name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Help text.
    pub help: &'static str,
    /// Label names.
    pub labels: &'static [&'static str],
}

/// A text exposition being written: families declared by [`Metric`], samples in order.
pub struct Exposition {
    buf: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition {
            buf: String::with_capacity(16 * 1024),
        }
    }
}

impl Exposition {
    /// The text written so far.
    pub fn finish(self) -> String {
        self.buf
    }

    /// Writes a family's `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, m: &Metric) {
        let _ = writeln!(self.buf, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(self.buf, "# TYPE {} {}", m.name, m.kind.as_str());
    }

    /// Writes one sample with these label values (in the order of `m.labels`).
    pub fn sample(&mut self, m: &Metric, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), m.labels.len(), "{}", m.name);
        self.buf.push_str(m.name);
        if !labels.is_empty() {
            self.buf.push('{');
            for (i, (k, v)) in m.labels.iter().zip(labels).enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                let _ = write!(self.buf, "{k}=\"{}\"", escape(v));
            }
            self.buf.push('}');
        }
        let _ = writeln!(self.buf, " {value}");
    }

    /// Writes one raw line (a histogram's buckets).
    pub fn line(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.buf.write_fmt(line);
        self.buf.push('\n');
    }

    /// Writes a histogram family: `counts[k]` values fell in bucket `k`, whose upper bound is
    /// `edges[k]` (the last count, beyond the edges, is the `+Inf` bucket), summing to `sum`.
    pub fn histogram(&mut self, m: &Metric, edges: &[f64], counts: &[u64], sum: f64) {
        self.family(m);
        let mut cumulative = 0;
        for (k, n) in counts.iter().enumerate() {
            cumulative += n;
            let le = edges.get(k).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(self.buf, "{}_bucket{{le=\"{le}\"}} {cumulative}", m.name);
        }
        let _ = writeln!(self.buf, "{}_sum {sum}", m.name);
        let _ = writeln!(self.buf, "{}_count {cumulative}", m.name);
    }

    /// Writes a family with its one unlabelled sample.
    pub fn one(&mut self, m: &Metric, value: f64) {
        self.family(m);
        self.sample(m, &[], value);
    }

    /// Writes a family with one sample per worker.
    #[cfg(feature = "dataplane")]
    pub(crate) fn per_worker(
        &mut self,
        m: &Metric,
        s: &crate::runtime::EngineSnapshot,
        f: impl Fn(&crate::runtime::WorkerSnapshot) -> f64,
    ) {
        self.family(m);
        for w in &s.workers {
            let idx = w.index.to_string();
            self.sample(m, &[&idx], f(w));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
