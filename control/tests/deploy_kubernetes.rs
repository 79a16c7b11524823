//! The Kubernetes manifests (`deploy/kubernetes/`) validate against the API schemas of a
//! current Kubernetes release (kubernetes-validate, offline, strict); they use only
//! `srtp-control` flags that exist; their scenario parses and its shards match the callers'
//! Job; and the README's "Scaling out" section names every manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use srtp_control::scenario::Scenario;

const BIN: &str = env!("CARGO_BIN_EXE_srtp-control");

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

/// kubernetes-validate: from the environment, PATH, or where scripts/setup-debian puts it.
fn validator() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return p.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    let venv = Path::new(&home).join(".local/share/srtp-engine/venv/bin/kubernetes-validate");
    if venv.exists() {
        return venv;
    }
    "kubernetes-validate".into()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new(validator())
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (scripts/setup-debian installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The block of `key: |` in a ConfigMap, unindented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("no {key}"));
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
    body.iter().map(|l| format!("{}\n", &l[4..])).collect()
}

#[test]
fn the_manifests_scenario_flags_and_readme_agree() {
    let scenario = std::fs::read_to_string(dir().join("scenario.yaml")).unwrap();
    let callers = std::fs::read_to_string(dir().join("callers.yaml")).unwrap();
    let caller = Scenario::parse(&block(&scenario, "caller.toml")).expect("caller.toml parses");
    Scenario::parse(&block(&scenario, "answerer.toml")).expect("answerer.toml parses");
    for key in ["completions", "parallelism"] {
        let n: u32 = callers
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("callers.yaml: no {key}"));
        assert_eq!(
            n, caller.load.shards,
            "callers.yaml {key} against load.shards"
        );
    }
    // Every flag the manifests give srtp-control is one it has.
    let help = |cmd: &str| {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (run, merge) = (help("run"), help("merge"));
    for f in manifests() {
        let text = std::fs::read_to_string(&f).unwrap();
        // `- --flag=value` list items of a container's args, and the merge Job's command line.
        for line in text.lines().map(str::trim) {
            let (known, words): (&str, Vec<&str>) = if line.contains("srtp-control merge") {
                (&merge, line.split_whitespace().collect())
            } else if let Some(arg) = line.strip_prefix("- ").filter(|a| a.starts_with("--")) {
                (&run, vec![arg])
            } else {
                continue;
            };
            for w in words {
                let flag = w.trim_start_matches('-').split('=').next().unwrap_or("");
                if w.starts_with('-') && !flag.is_empty() {
                    assert!(
                        known.contains(&format!("--{flag}")),
                        "{}: --{flag} is not a flag",
                        f.display()
                    );
                }
            }
        }
    }
    // The README's section names every manifest and the way to the merged report.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("## Scaling out")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Scaling out section");
    for f in manifests() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            section.contains(&name),
            "README's Scaling out misses {name}"
        );
    }
    for words in [
        "kubectl apply",
        "START_AT_VALUE",
        "srtp-merge",
        "recording.yml",
    ] {
        assert!(
            section.contains(words),
            "README's Scaling out misses {words}"
        );
    }
}
