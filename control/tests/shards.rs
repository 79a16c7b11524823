//! One scenario across several agents (issue 28): two caller shards (`run --shard I/2`), each
//! with its own engine, start together (`--start-at`) and call two answerer agents named in
//! `sip.targets`. Together they are the scenario: every call number used once, the calls
//! split evenly between the shards and between the answerers, SDES and DTLS-SRTP mixed.
//!
//! Ports: engines' media 41250-41449; SIP on ephemeral ports.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Answerer, Node};
use serde_json::Value;

#[test]
fn two_caller_shards_are_the_scenario_between_two_answerers() {
    let answer_nodes = [
        Node::start("shard-answer-a", (41250, 41299)),
        Node::start("shard-answer-b", (41300, 41349)),
    ];
    let mut answerers: Vec<Answerer> = answer_nodes
        .iter()
        .map(|n| Answerer::on(n, "60", &["--method", "dual"]))
        .collect();
    let targets: Vec<String> = answerers
        .iter()
        .map(|a| format!("\"sip:answer@127.0.0.1:{}\"", a.port))
        .collect();
    let caller_nodes = [
        Node::start("shard-call-0", (41350, 41399)),
        Node::start("shard-call-1", (41400, 41449)),
    ];
    let dir = srtp_engine_tests::peers::Scratch::new("shards");
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 4.0;
    let shards: Vec<_> = caller_nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let scenario = dir.join(&format!("shard-{i}.toml"));
            std::fs::write(
                &scenario,
                format!(
                    "name = \"sharded\"\nrole = \"caller\"\n\
                     [engine]\nsocket = \"{}\"\n\
                     [sip]\ntargets = [{}]\nagents = 2\n\
                     [security]\nmethod = \"mixed\"\n\
                     [load]\ncalls = 40\nrate = 40.0\nhold_s = 0.5\nshards = 2\n\
                     [report]\nper_call = true\n",
                    node.sock(),
                    targets.join(", ")
                ),
            )
            .unwrap();
            let report = dir.join(&format!("report-{i}"));
            let t0 = std::time::Instant::now();
            let child = std::process::Command::new(common::BIN)
                .arg("run")
                .arg(&scenario)
                .args(["--progress", "off", "--start-at", &format!("{start_at:.3}")])
                .arg("--report-dir")
                .arg(&report)
                // The shard's index as a Kubernetes Indexed Job gives it.
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("srtp-control run");
            (child, report, t0)
        })
        .collect();
    let mut reports = Vec::new();
    let mut indexes = Vec::new();
    let mut waited = Vec::new();
    for (i, (child, report, t0)) in shards.into_iter().enumerate() {
        let out = child.wait_with_output().expect("srtp-control run");
        waited.push(t0.elapsed());
        let text = common::text(&out);
        assert!(out.status.success(), "shard {i}: {text}");
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(r["shard"], format!("{i}/2"), "{text}");
        assert_eq!(r["calls"]["attempted"], 20, "{text}");
        for rec in r["call_records"].as_array().unwrap() {
            let n = rec["index"].as_u64().unwrap();
            assert_eq!(n % 2, i as u64, "shard {i} placed call {n}");
            indexes.push(n);
        }
        reports.push(r);
    }
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        (0..40).collect::<Vec<u64>>(),
        "every call number once"
    );
    // Both shards waited for the common start, then placed their first call at once (call
    // 1, shard 1's first, is due 25 ms after call 0 at 40 calls/s).
    for (i, r) in reports.iter().enumerate() {
        let first = r["call_records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["start_s"].as_f64().unwrap())
            .fold(f64::MAX, f64::min);
        assert!(first < 0.2, "shard {i}: first call at {first} s");
    }
    // Without the common start each would have ended in about 2 s.
    assert!(
        waited.iter().all(|w| *w >= Duration::from_millis(3500)),
        "the shards did not wait for --start-at: {waited:?}"
    );
    // Each answerer got half of the calls, from both shards, with both keying methods.
    for a in &mut answerers {
        assert!(
            a.wait_count(|l| l.starts_with("answered "), 20, Duration::from_secs(5)),
            "{}",
            a.output()
        );
        let out = a.output();
        assert_eq!(
            out.lines().filter(|l| l.starts_with("answered ")).count(),
            20,
            "{out}"
        );
    }
    let set_up: u64 = reports
        .iter()
        .map(|r| r["calls"]["setup_ok"].as_u64().unwrap())
        .sum();
    assert_eq!(set_up, 40);
    // The merged report's totals are the sums of the agents' reports, exactly.
    let (code, out, merged) = merge(&dir, &["report-0", "report-1"]);
    assert_eq!(code, Some(0), "{out}");
    let m = &merged["totals"];
    let sum = |path: &[&str]| -> u64 {
        reports
            .iter()
            .map(|r| {
                path.iter()
                    .fold(&r["totals"], |v, k| &v[*k])
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    for path in [
        &["attempted"][..],
        &["setup_ok"],
        &["failed"],
        &["setup_ms", "count"],
        &["dtls_ms", "count"],
        &["caller_media", "expected"],
        &["caller_media", "lost"],
        &["caller_media", "streams"],
        &["caller_media", "mos", "count"],
    ] {
        let merged_value = path.iter().fold(m, |v, k| &v[*k]).as_u64().unwrap();
        assert_eq!(merged_value, sum(path), "{path:?}");
    }
    assert_eq!(m["attempted"], 40);
    assert!(m["dtls_ms"]["count"].as_u64().unwrap() >= 20, "{m}");
    for b in 0..m["setup_ms"]["counts"].as_array().unwrap().len() {
        let per: u64 = reports
            .iter()
            .map(|r| r["totals"]["setup_ms"]["counts"][b].as_u64().unwrap())
            .sum();
        assert_eq!(m["setup_ms"]["counts"][b].as_u64().unwrap(), per);
    }
    assert_eq!(merged["agents"].as_array().unwrap().len(), 2);
    assert!(out.contains("result            PASS"), "{out}");
    assert!(dir.join("merged").join("merged.html").exists());
}

/// `srtp-control merge` over reports in `dir`: (exit code, output, merged.json).
fn merge(
    dir: &srtp_engine_tests::peers::Scratch,
    reports: &[&str],
) -> (Option<i32>, String, Value) {
    let out = std::process::Command::new(common::BIN)
        .arg("merge")
        .args(reports.iter().map(|r| dir.join(r)))
        .arg("--report-dir")
        .arg(dir.join("merged"))
        .output()
        .unwrap();
    let merged: Value = std::fs::read_to_string(dir.join("merged").join("merged.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out.status.code(), common::text(&out), merged)
}

/// A shard whose answerer cannot be reached fails the merged run, and the merged report names
/// that agent and why, while the other agent passes.
#[test]
fn a_shard_whose_answerer_is_unreachable_fails_the_merge_and_is_named() {
    let answer_node = Node::start("shard-answer-ok", (41450, 41474));
    let answerer = Answerer::on(&answer_node, "60", &[]);
    // Nobody listens on this port.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dir = srtp_engine_tests::peers::Scratch::new("shards-dead");
    for (i, port) in [(0, answerer.port), (1, dead_port)] {
        let scenario = dir.join(&format!("shard-{i}.toml"));
        std::fs::write(
            &scenario,
            format!(
                "name = \"sharded\"\nrole = \"caller\"\n\
                 [engine]\nport_min = {}\nport_max = {}\nworkers = 1\npin = false\n\
                 [sip]\ntarget = \"sip:answer@127.0.0.1:{port}\"\nt1_ms = 20\nagents = 1\n\
                 [load]\ncalls = 10\nrate = 50.0\nhold_s = 0.3\n",
                41475 + i * 12,
                41486 + i * 12
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::BIN)
            .arg("run")
            .arg(&scenario)
            .args(["--progress", "off", "--shard", &format!("{i}/2")])
            .arg("--report-dir")
            .arg(dir.join(&format!("agent-{i}")))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(i),
            "shard {i} exits {i}: {}",
            common::text(&out)
        );
    }
    let (code, out, merged) = merge(&dir, &["agent-0", "agent-1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("result            FAIL"), "{out}");
    let named = out
        .lines()
        .find(|l| l.starts_with("look at agent-1"))
        .unwrap_or_else(|| panic!("the failing agent is not named: {out}"));
    assert!(
        named.contains("agent-1 (shard 1/2)") && named.contains("timeout"),
        "{named}"
    );
    // The passing agent is named only if its own machine was saturated (a busy test host).
    if let Some(l) = out.lines().find(|l| l.starts_with("look at agent-0")) {
        assert!(!l.contains("failed"), "{l}");
    }
    assert_eq!(merged["totals"]["attempted"], 10);
    assert_eq!(merged["totals"]["setup_ok"], 5);
    eprintln!("{out}");
}
