//! Past one machine (issue 28), on one machine: two caller shards and two answerer agents, each
//! in a network namespace of its own with its own address on a bridge (four "nodes"), carry
//! 1,000 calls at 200 calls/s in total, SDES and DTLS-SRTP mixed. The callers call one name
//! that resolves to both answerers (as a headless Service's does), and each answerer must get
//! half of the calls. A real Prometheus (Debian's
//! `prometheus`) scrapes the four agents' `--metrics` with the shipped recording rules.
//!
//! The bar: every call set up with zero loss; the merged report's totals equal the sums of the
//! four reports exactly; Prometheus's sums after the run equal the merged totals; the merged
//! exit code follows the thresholds.
//!
//! Needs root (network namespaces). Addresses 10.211.X.0/24 with X from the pid; the bridge,
//! namespaces and Prometheus are removed at the end however the test ends.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The bridge, the namespaces on it, and the processes in them; all removed on drop.
struct Nodes {
    tag: String,
    subnet: String,
    spaces: Vec<String>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Nodes {
    /// A bridge with `names.len()` namespaces on it, the k-th at `.k+1`; this host at `.254`.
    fn new(names: &[&str]) -> Nodes {
        let pid = std::process::id();
        let tag = format!("{}", pid % 100_000);
        let subnet = format!("10.211.{}", pid % 250);
        let bridge = format!("sobr{tag}");
        let mut nodes = Nodes {
            tag,
            subnet,
            spaces: Vec::new(),
            children: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", nodes.subnet),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for (k, name) in names.iter().enumerate() {
            let ns = format!("so{}{name}", nodes.tag);
            let (host, inner) = (format!("{ns}h"), format!("{ns}n"));
            ip(&["netns", "add", &ns]);
            nodes.spaces.push(ns.clone());
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &host, "master", &bridge]);
            ip(&["link", "set", &host, "up"]);
            let addr = format!("{}/24", nodes.addr(k));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        nodes
    }

    /// The address of node `k`.
    fn addr(&self, k: usize) -> String {
        format!("{}.{}", self.subnet, k + 1)
    }

    /// Node `k`'s own /etc/hosts (`ip netns exec` mounts /etc/netns/NAME/hosts over it): how
    /// a name resolves to several answerers there, as a headless Service's does in a cluster.
    fn hosts(&self, k: usize, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.spaces[k]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// Starts `srtp-control` with `args` in node `k`'s namespace.
    fn spawn(&mut self, k: usize, args: &[String]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.spaces[k], common::BIN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        self.children.push(child);
        self.children.len() - 1
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.spaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("sobr{}", self.tag)])
            .status();
    }
}

/// A child process killed when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One instant query of Prometheus's HTTP API: the value of its single result.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let q: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut s = std::net::TcpStream::connect(prometheus).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn two_caller_shards_and_two_answerers_in_four_namespaces_add_up_everywhere() {
    let mut nodes = Nodes::new(&["c0", "c1", "a0", "a1"]);
    let dir = srtp_engine_tests::peers::Scratch::new("scale-out");
    let subnet = nodes.subnet.clone();
    let metrics = |k: usize| format!("{subnet}.{}:9700", k + 1);
    // The callers call one name, `answerers`, which resolves to both answerers' nodes.
    let hosts = format!(
        "127.0.0.1 localhost\n{} answerers\n{} answerers\n",
        nodes.addr(2),
        nodes.addr(3)
    );
    nodes.hosts(0, &hosts);
    nodes.hosts(1, &hosts);
    // Prometheus on this host, scraping the four agents every second with the shipped rules.
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/prometheus/recording.yml")
        .canonicalize()
        .unwrap();
    let prom_listen = format!("127.0.0.1:{}", 19_000 + std::process::id() % 1000);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: run\n    static_configs:\n      - targets: [\"{}\", \"{}\", \"{}\", \"{}\"]\n",
            rules.display(),
            metrics(0),
            metrics(1),
            metrics(2),
            metrics(3)
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/setup-debian installs it)"),
    );
    // Each agent: `run` of its scenario (the common part, then its own), with metrics on its
    // node's address and its report in `agent-NAME`.
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 4.0;
    let mut agents = Vec::new();
    for (k, name) in [(2, "a0"), (3, "a1"), (0, "c0"), (1, "c1")] {
        let at = nodes.addr(k);
        let (own, extra) = if name.starts_with('a') {
            // An answerer, for long enough to outlast the calls.
            (
                format!(
                    "role = \"answerer\"\n[sip]\nanswerer_listen = \"{at}:5060\"\nagents = 2\n\
                     [load]\nduration_s = 16.0\n"
                ),
                vec![],
            )
        } else {
            // A caller: shard k of one scenario, the two starting together in 4 s.
            (
                format!(
                    "role = \"caller\"\n[sip]\ncaller_listen = \"{at}:0\"\ntarget = \"sip:answer@answerers:5060\"\nagents = 2\n\
                     [load]\ncalls = 1000\nrate = 200.0\nhold_s = 1.0\nshards = 2\n"
                ),
                vec![
                    "--shard".to_owned(),
                    format!("{k}/2"),
                    "--start-at".into(),
                    format!("{start_at:.3}"),
                ],
            )
        };
        let scenario = dir.join(&format!("{name}.toml"));
        std::fs::write(
            &scenario,
            format!(
                "name = \"scale-out\"\n{own}\
                 [engine]\nworkers = 1\npin = false\nlocal_ip = \"{at}\"\n\
                 [security]\nmethod = \"mixed\"\n"
            ),
        )
        .unwrap();
        let mut args = vec![
            "run".to_owned(),
            scenario.display().to_string(),
            "--progress".into(),
            "off".into(),
            "--metrics".into(),
            metrics(k),
            "--metrics-linger-s".into(),
            "4".into(),
            "--report-dir".into(),
            dir.join(&format!("agent-{name}")).display().to_string(),
        ];
        args.extend(extra);
        agents.push((format!("agent-{name}"), nodes.spawn(k, &args)));
    }
    // Every agent ends by itself, exit code 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, i) in &agents {
        let child = &mut nodes.children[*i];
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{name} did not end");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let mut out = String::new();
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        assert!(status.success(), "{name}: {status}\n{out}\n{err}");
    }
    // The merged report.
    let names: Vec<&str> = agents.iter().map(|(n, _)| n.as_str()).collect();
    let out = Command::new(common::BIN)
        .arg("merge")
        .args(names.iter().map(|n| dir.join(n)))
        .arg("--report-dir")
        .arg(dir.join("merged"))
        .output()
        .unwrap();
    let said = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let merged: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("merged").join("merged.json")).unwrap(),
    )
    .unwrap();
    let m = &merged["totals"];
    let get = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap();
    // Every call set up, none lost, both keying methods.
    assert_eq!(get(m, &["attempted"]), 1000, "{said}");
    assert_eq!(get(m, &["setup_ok"]), 1000, "{said}");
    assert_eq!(
        get(m, &["caller_media", "lost"]) + get(m, &["answerer_media", "lost"]),
        0
    );
    assert_eq!(m["by_method"]["dtls"], serde_json::json!([500, 500]), "{m}");
    assert_eq!(m["by_method"]["sdes"], serde_json::json!([500, 500]), "{m}");
    // The merged totals are the sums of the four reports.
    let reports: Vec<Value> = names
        .iter()
        .map(|n| {
            serde_json::from_str(&std::fs::read_to_string(dir.join(n).join("report.json")).unwrap())
                .unwrap()
        })
        .collect();
    let paths: [&[&str]; 8] = [
        &["attempted"],
        &["setup_ok"],
        &["answered"],
        &["setup_ms", "count"],
        &["dtls_ms", "count"],
        &["caller_media", "expected"],
        &["answerer_media", "expected"],
        &["answerer_media", "streams"],
    ];
    for path in paths {
        let sum: u64 = reports.iter().map(|r| get(&r["totals"], path)).sum();
        assert_eq!(get(m, path), sum, "{path:?}");
    }
    assert_eq!(get(m, &["answered"]), 1000);
    // The name spread the calls: each answerer answered half.
    for (name, r) in names.iter().zip(&reports) {
        if name.starts_with("agent-a") {
            assert_eq!(get(&r["totals"], &["answered"]), 500, "{name}");
        }
    }
    // Prometheus's sums over the agents, after the run, equal the merged totals.
    let prom = |q: &str| {
        query(&prom_listen, &format!("max_over_time(({q})[2m:1s])"))
            .unwrap_or_else(|| panic!("Prometheus has no {q}"))
    };
    let expected_packets =
        get(m, &["caller_media", "expected"]) + get(m, &["answerer_media", "expected"]);
    for (q, want) in [
        (
            "job:srtp_control_calls_attempted:sum",
            get(m, &["attempted"]),
        ),
        ("job:srtp_control_calls_set_up:sum", get(m, &["setup_ok"])),
        ("job:srtp_control_calls_ended:sum", get(m, &["attempted"])),
        (
            "sum(job_side:srtp_control_media_expected_packets:sum)",
            expected_packets,
        ),
        (
            "job_le:srtp_control_call_setup_seconds_bucket:sum{le=\"+Inf\"}",
            get(m, &["setup_ms", "count"]),
        ),
        (
            "job_le:srtp_control_mos_bucket:sum{le=\"+Inf\"}",
            get(m, &["caller_media", "mos", "count"]) + get(m, &["answerer_media", "mos", "count"]),
        ),
    ] {
        assert_eq!(prom(q), want as f64, "{q}");
    }
    assert_eq!(
        prom("sum(job_side:srtp_control_media_lost_packets:sum)"),
        0.0
    );
}
