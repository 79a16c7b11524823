//! Scenarios live in the test files beside this crate's Cargo.toml. The library holds what
//! the workspace's tests share: checks by outside tools that the test setup installs, and
//! the real peers ([`peers`]) the interoperability tests start.

pub mod peers;

use std::io::Write;
use std::process::{Command, Stdio};

/// Prometheus's own parser and linter on a text exposition: `promtool check metrics` (Debian
/// package `prometheus`, installed by scripts/setup-debian). `Err` carries what it said: a
/// parse error, or a lint finding (a missing HELP, a counter without `_total`, ...).
///
/// # Panics
/// When promtool is not installed: the tests that call this need it.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/setup-debian to install it)");
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    written.map_err(|e| format!("writing to promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// `promtool ARGS` run in `dir` (rule files name their neighbours relatively): `Err` carries
/// what it said when it failed, as `promtool check rules` or `test rules` do.
///
/// # Panics
/// When promtool is not installed.
pub fn promtool_in(dir: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (run scripts/setup-debian to install it)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::promtool_check_metrics;

    #[test]
    fn promtool_passes_good_text_and_names_what_is_wrong() {
        let good = "# HELP demo_packets_total Packets.\n# TYPE demo_packets_total counter\ndemo_packets_total 3\n";
        assert_eq!(promtool_check_metrics(good), Ok(()));
        let unlinted =
            "# HELP demo_packets Packets.\n# TYPE demo_packets counter\ndemo_packets 3\n";
        let said = promtool_check_metrics(unlinted).unwrap_err();
        assert!(said.contains("_total"), "{said}");
        let broken = "demo_packets_total{ 3\n";
        assert!(promtool_check_metrics(broken).is_err());
    }
}
