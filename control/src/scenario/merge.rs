//! `srtp-control merge`: the reports of the agents that shared a scenario, as one run.
//!
//! Each report carries its [`RunTotals`]: counts, sums and fixed-edge histograms, which add
//! up exactly. The merged run is judged by the same thresholds as one run would be. A table
//! per agent points at the one that misbehaved: its own verdict, its setup rate and top
//! failure cause, and what its machine said of itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::causes;
use super::totals::{Buckets, Check, RunTotals, judge};
use crate::charts::esc;

/// What merging reads of an agent's `report.json`.
#[derive(Deserialize)]
struct AgentReport {
    #[serde(default)]
    name: String,
    #[serde(default)]
    shard: Option<String>,
    totals: RunTotals,
    #[serde(default)]
    generator: Machine,
    #[serde(default)]
    pass: bool,
}

/// The report's "this machine" verdict.
#[derive(Default, Deserialize)]
struct Machine {
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    saturated: bool,
}

/// One agent's row.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    /// Its name: the report's directory (or file) name.
    pub name: String,
    /// Its shard (`I/N`), if it said.
    pub shard: Option<String>,
    /// Calls attempted.
    pub attempted: u64,
    /// Calls set up.
    pub setup_ok: u64,
    /// Media loss, percent.
    pub loss_percent: f64,
    /// Lowest MOS.
    pub mos_min: Option<f64>,
    /// SRTP authentication failures.
    pub auth_failures: u64,
    /// Its most frequent failure cause and how many calls it took.
    pub top_failure: Option<(String, u64)>,
    /// What its machine said of itself ("this machine").
    pub machine: String,
    /// Whether its machine ran out of CPU or dropped packets itself.
    pub saturated: bool,
    /// Whether its own thresholds held.
    pub pass: bool,
}

/// The merged run.
#[derive(Debug, Serialize)]
pub struct Merged {
    /// The scenario's name.
    pub name: String,
    /// Every agent.
    pub agents: Vec<Agent>,
    /// The sums.
    pub totals: RunTotals,
    /// The thresholds, judged over the whole run.
    pub thresholds: Vec<Check>,
    /// Whether every threshold holds.
    pub pass: bool,
    /// Agents that failed on their own or whose machine was saturated, in words.
    pub suspects: Vec<String>,
}

/// Reads the agents' reports (each a `report.json` or a directory holding one) and merges
/// them.
pub fn merge(paths: &[PathBuf]) -> Result<Merged, String> {
    if paths.is_empty() {
        return Err("no reports to merge".into());
    }
    let mut name = String::new();
    let mut totals: Option<RunTotals> = None;
    let mut agents = Vec::new();
    for p in paths {
        let file = if p.is_dir() {
            p.join("report.json")
        } else {
            p.clone()
        };
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let r: AgentReport = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a report with totals to merge ({e}); reports from before merging existed have none",
                file.display()
            )
        })?;
        let t = r.totals;
        let agent = agent_name(&file);
        match &mut totals {
            None => {
                name = r.name.clone();
                totals = Some(t.clone());
            }
            Some(sum) => {
                if serde_json::to_value(&sum.limits).ok() != serde_json::to_value(&t.limits).ok() {
                    return Err(format!(
                        "{agent}: its thresholds differ from the first report's; merge reports of one scenario"
                    ));
                }
                sum.merge(&t).map_err(|e| format!("{agent}: {e}"))?;
            }
        }
        let (loss_percent, _, _) = t.loss();
        agents.push(Agent {
            name: agent,
            shard: r.shard,
            attempted: t.attempted,
            setup_ok: t.setup_ok,
            loss_percent,
            mos_min: t.mos_min(),
            auth_failures: t.caller_media.auth_failures + t.answerer_media.auth_failures,
            top_failure: t
                .failures
                .iter()
                .max_by_key(|(c, n)| (**n, std::cmp::Reverse((*c).clone())))
                .map(|(c, n)| (c.clone(), *n)),
            machine: r.generator.verdict,
            saturated: r.generator.saturated,
            pass: r.pass,
        });
    }
    let totals = totals.unwrap_or_default();
    let thresholds = judge(&totals);
    let pass = thresholds.iter().all(|c| c.pass);
    let suspects = agents.iter().filter_map(suspect).collect();
    Ok(Merged {
        name,
        agents,
        totals,
        thresholds,
        pass,
        suspects,
    })
}

/// A report's agent name: its directory's name for `DIR/report.json`, else the file's stem.
fn agent_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("report");
    match (stem, file.parent().and_then(Path::file_name)) {
        ("report", Some(dir)) => dir.to_string_lossy().into_owned(),
        _ => stem.to_owned(),
    }
}

/// Why an agent deserves a look, if it does.
fn suspect(a: &Agent) -> Option<String> {
    let who = match &a.shard {
        Some(s) => format!("{} (shard {s})", a.name),
        None => a.name.clone(),
    };
    let mut why = Vec::new();
    if !a.pass {
        why.push(format!(
            "its own thresholds failed: {} of {} calls set up",
            a.setup_ok, a.attempted
        ));
    }
    if let Some((cause, n)) = &a.top_failure {
        let d = causes::describe(cause);
        why.push(format!(
            "{n} call(s) failed with {cause}: {} ({})",
            d.title, d.advice
        ));
    }
    if a.saturated {
        why.push(format!("its machine: {}", a.machine));
    }
    (!why.is_empty()).then(|| format!("{who}: {}", why.join("; ")))
}

/// Percentiles of a merged histogram, for the summary.
fn spread(b: &Buckets) -> String {
    if b.count == 0 {
        return "-".into();
    }
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} values; percentiles from merged buckets)",
        b.quantile(0.5),
        b.quantile(0.9),
        b.quantile(0.99),
        b.max,
        b.count
    )
}

impl Merged {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "srtp-control merge: {}, {} agents",
            self.name,
            self.agents.len()
        );
        let _ = writeln!(
            o,
            "  result            {}",
            if self.pass { "PASS" } else { "FAIL" }
        );
        let _ = writeln!(
            o,
            "  calls             {} attempted, {} set up ({:.2}%), {} failed; answered {}",
            t.attempted,
            t.setup_ok,
            t.setup_percent(),
            t.failed,
            t.answered
        );
        let _ = writeln!(o, "  setup time ms     {}", spread(&t.setup_ms));
        let _ = writeln!(o, "  DTLS handshake ms {}", spread(&t.dtls_ms));
        let (loss, lost, expected) = t.loss();
        let _ = writeln!(
            o,
            "  media             lost {lost} of {expected} expected ({loss:.4}%), MOS min {}, auth failures {}",
            t.mos_min().map_or("-".into(), |m| format!("{m:.2}")),
            t.caller_media.auth_failures + t.answerer_media.auth_failures
        );
        let _ = writeln!(o, "agents:");
        for a in &self.agents {
            let _ = writeln!(
                o,
                "  {:<16} {:<6} calls {:>6}  set up {:>6}  loss {:>7.4}%  MOS {:>5}  auth {:>4}  {}  machine: {}",
                a.name,
                a.shard.as_deref().unwrap_or("-"),
                a.attempted,
                a.setup_ok,
                a.loss_percent,
                a.mos_min.map_or("-".into(), |m| format!("{m:.2}")),
                a.auth_failures,
                if a.pass { "pass" } else { "FAIL" },
                a.machine
            );
        }
        if !t.failures.is_empty() {
            let _ = writeln!(o, "failures by cause:");
            for (cause, n) in &t.failures {
                let _ = writeln!(o, "  {n:>6}  {cause}: {}", causes::describe(cause).title);
            }
        }
        let _ = writeln!(o, "thresholds (the whole run):");
        for c in &self.thresholds {
            let _ = writeln!(
                o,
                "  {}  {:<30} {} (limit {})",
                if c.pass { "pass" } else { "FAIL" },
                c.name,
                c.value,
                c.limit
            );
        }
        for s in &self.suspects {
            let _ = writeln!(o, "look at {s}");
        }
        o
    }

    /// Writes `merged.json` and `merged.html` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join("merged.json");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&json, text)?;
        let html = dir.join("merged.html");
        std::fs::write(&html, self.html())?;
        Ok(vec![json, html])
    }

    fn html(&self) -> String {
        let mut rows = String::new();
        for a in &self.agents {
            let _ = write!(
                rows,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if a.pass { "pass" } else { "fail" },
                esc(&a.name),
                esc(a.shard.as_deref().unwrap_or("-")),
                a.attempted,
                a.setup_ok,
                a.loss_percent,
                a.mos_min.map_or("-".into(), |m| format!("{m:.2}")),
                a.auth_failures,
                esc(&a.machine)
            );
        }
        let mut checks = String::new();
        for c in &self.thresholds {
            let _ = write!(
                checks,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                if c.pass { "pass" } else { "fail" },
                esc(&c.name),
                esc(&c.value),
                esc(&c.limit)
            );
        }
        let suspects: String = self
            .suspects
            .iter()
            .map(|s| format!("<li>{}</li>", esc(s)))
            .collect();
        let bins = |b: &Buckets| -> Vec<(f64, u64)> {
            b.counts
                .iter()
                .enumerate()
                .map(|(i, &c)| (b.edges.get(i).copied().unwrap_or(b.max), c))
                .collect()
        };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}: merged</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:2px 8px}}tr.fail{{background:#fdd}}</style></head><body>\
             <h1>{name}: {n} agents, {verdict}</h1>\
             <h2>Thresholds over the whole run</h2><table><tr><th>check</th><th>value</th><th>limit</th></tr>{checks}</table>\
             <h2>Agents</h2><table><tr><th>agent</th><th>shard</th><th>calls</th><th>set up</th><th>loss</th><th>min MOS</th><th>auth failures</th><th>this machine</th></tr>{rows}</table>\
             <ul>{suspects}</ul>{setup}{dtls}</body></html>",
            name = esc(&self.name),
            n = self.agents.len(),
            verdict = if self.pass { "PASS" } else { "FAIL" },
            setup =
                crate::charts::histogram("Setup time (merged)", &bins(&self.totals.setup_ms), "ms"),
            dtls = crate::charts::histogram(
                "DTLS handshake (merged)",
                &bins(&self.totals.dtls_ms),
                "ms"
            ),
        )
    }
}
