//! Registration fleets against Kamailio 5.6 (Debian) as primary and backup registrars, with
//! digest authentication, on non-default ports, over UDP (STUN keepalives, a port per
//! endpoint, RFC 5626 instance ids), TCP and TLS (OPTIONS keepalives; the name checked
//! against the lab CA), the three fleets at once:
//! - 60 s without an outage: no failover (keepalives are addressed to the registrar itself,
//!   which answers them; they used to go to `sip:127.0.0.1`, which Kamailio on another port
//!   relays to 5060, and a fleet of 300 made 2,575 failovers with no registrar down);
//! - the primary killed (SIGKILL, workers and all): every endpoint on the backup within the
//!   detection budget;
//! - the primary back: every endpoint back on it within the probe interval plus 1 s, the
//!   backup unregistered; every threshold holds (exit code 0).
//!
//! And a TLS registrar whose certificate names another host: the mismatch is said with the
//! names, and the exit code is 1.
//!
//! Ports: Kamailio primary 5270 (UDP, TCP) and 5271 (TLS), backup 5280 and 5281; the
//! mismatched registrar 5290 and 5291.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, pki, text};
use srtp_control::register::config::FleetConfig;
use srtp_control::register::report::RegisterReport;
use srtp_control::register::run::{Progress, RunControl, run};
use srtp_engine_tests::peers::{Kamailio, LabPki, Scratch};

const ENDPOINTS: usize = 300;
const KILL_AT: Duration = Duration::from_secs(60);
const BACK_AT: Duration = Duration::from_secs(75);
const RUN_FOR: Duration = Duration::from_secs(98);
/// OPTIONS every 5 s, 2 s timeout, 2 failures, fast detection: a budget of 5 + 2 * 2 = 9 s.
const BUDGET_MS: u64 = 9_000;
const PROBE_S: u64 = 10;

/// The UDP fleet keeps alive with STUN (RFC 5626 4.4.2), from a port per endpoint, with RFC
/// 5626 instance ids; TCP and TLS with OPTIONS addressed to the registrar.
fn fleet(transport: &str, primary: &str, backup: &str, ca: &str) -> FleetConfig {
    let (keepalive, sip, registration) = if transport == "udp" {
        ("stun_s", "port_per_endpoint = true", "instance_id = true")
    } else {
        ("options_s", "", "")
    };
    FleetConfig::parse(&format!(
        r#"
[sip]
transport = "{transport}"
tls_verify = "{ca}"
{sip}
[[registrars]]
name = "primary"
address = "{primary}"
[[registrars]]
name = "backup"
address = "{backup}"
[endpoints]
count = {ENDPOINTS}
user = "{transport}{{n}}"
password = "secret"
rate = 200.0
[registration]
expires = 300
{registration}
[keepalive]
{keepalive} = 5.0
timeout_s = 2.0
[failover]
detection = "fast"
failures = 2
probe_interval_s = {PROBE_S}.0
retry_after_s = 5.0
[run]
duration_s = {}
[thresholds]
registered_at_end_percent = 100.0
detection_within_budget = true
max_fallback_ms = {}
"#,
        RUN_FOR.as_secs(),
        PROBE_S * 1000 + 1000
    ))
    .expect("the fleet file")
}

/// (seconds since start, registered per registrar, failovers so far) each second.
type Samples = Vec<(f64, Vec<usize>, u64)>;

#[test]
fn fleets_fail_over_and_fall_back_with_kamailio_over_udp_tcp_and_tls() {
    let dir = Scratch::new("kamailio-register");
    pki(&dir.join("pki"));
    let lab = LabPki::in_dir(&dir.join("pki"));
    let primary = Arc::new(Mutex::new(Some(Kamailio::start(
        &dir,
        5270,
        &lab,
        Some("secret"),
        None,
    ))));
    let backup = Kamailio::start(&dir, 5280, &lab, Some("secret"), None);
    let ca = lab.ca.to_str().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let killer = {
        let primary = primary.clone();
        let (dir_path, lab) = (dir.0.clone(), lab.clone());
        std::thread::spawn(move || {
            std::thread::sleep(KILL_AT.saturating_sub(start.elapsed()));
            if let Some(k) = primary.lock().unwrap().as_ref() {
                k.daemon.signal("KILL");
            }
            std::thread::sleep(BACK_AT.saturating_sub(start.elapsed()));
            let d = Scratch(dir_path);
            let k = Kamailio::start(&d, 5270, &lab, Some("secret"), None);
            std::mem::forget(d); // the outer Scratch removes the directory
            *primary.lock().unwrap() = Some(k);
        })
    };
    let (udp, tcp, tls) = rt.block_on(async {
        let one = |t: &'static str, p: &str, b: &str| {
            let cfg = fleet(t, p, b, &ca);
            async move {
                let mut samples: Samples = Vec::new();
                let report = run(&cfg, Progress::Off, RunControl::default(), |s, st| {
                    samples.push((s.t_s, s.snapshot.registered.clone(), st.failovers));
                })
                .await
                .expect("the run");
                (report, samples)
            }
        };
        tokio::join!(
            one("udp", "127.0.0.1:5270", "127.0.0.1:5280"),
            one("tcp", "127.0.0.1:5270", "127.0.0.1:5280"),
            one("tls", "127.0.0.1:5271", "127.0.0.1:5281"),
        )
    });
    killer.join().unwrap();
    for (name, (report, samples)) in [("udp", udp), ("tcp", tcp), ("tls", tls)] {
        check(name, &report, &samples, &backup);
    }
}

fn check(name: &str, r: &RegisterReport, samples: &Samples, backup: &Kamailio) {
    let summary = r.summary();
    eprintln!("--- {name} ---\n{summary}");
    let kill = KILL_AT.as_secs_f64();
    let back = BACK_AT.as_secs_f64();
    // No outage yet: everyone on the primary, and not one failover.
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.0 > 10.0 && s.0 < kill - 0.5)
        .collect();
    assert!(!before.is_empty(), "{name}: {summary}");
    for s in &before {
        assert_eq!(
            s.2, 0,
            "{name}: a failover with no outage at {:.0} s\n{summary}",
            s.0
        );
        assert_eq!(
            s.1[0], ENDPOINTS,
            "{name}: at {:.0} s: {:?}\n{summary}",
            s.0, s.1
        );
    }
    assert_eq!(r.detection_budget_ms, Some(BUDGET_MS));
    // The primary killed: all on the backup within the budget (samples are 1 s apart).
    let on_backup = samples
        .iter()
        .find(|s| s.0 > kill && s.1[1] == ENDPOINTS)
        .unwrap_or_else(|| {
            panic!(
                "{name}: never all on the backup\n{summary}\n{}",
                backup.daemon.log()
            )
        });
    assert!(
        on_backup.0 - kill <= BUDGET_MS as f64 / 1000.0 + 1.0,
        "{name}: all on the backup {:.1} s after the kill\n{summary}",
        on_backup.0 - kill
    );
    // The primary back: all on it within the probe interval plus 1 s (and Kamailio's start).
    let on_primary = samples
        .iter()
        .find(|s| s.0 > back && s.1[0] == ENDPOINTS)
        .unwrap_or_else(|| panic!("{name}: never all back on the primary\n{summary}"));
    assert!(
        on_primary.0 - back <= (PROBE_S + 1) as f64 + 2.0,
        "{name}: all back {:.1} s after the primary\n{summary}",
        on_primary.0 - back
    );
    let s = &r.stats;
    assert_eq!(s.failovers as usize, ENDPOINTS, "{name}: {summary}");
    assert_eq!(s.fallbacks as usize, ENDPOINTS, "{name}: {summary}");
    // Expires: 0 answered by the backup at each fallback, then by the primary at the end.
    assert_eq!(
        s.unregistrations as usize,
        2 * ENDPOINTS,
        "{name}: {summary}"
    );
    let fallback = r.timings.fallback.expect("fallback timings");
    assert!(fallback.max <= PROBE_S * 1000 + 1000, "{name}: {summary}");
    assert!(
        fallback.max > 0,
        "measured from the registrar's return: {summary}"
    );
    assert!(r.pass, "{name}: every threshold holds\n{summary}");
    assert!(summary.contains("result: PASS"), "{summary}");
}

#[test]
fn a_tls_registrar_with_another_name_is_named_and_fails_the_run() {
    let dir = Scratch::new("kamailio-wrong-name");
    let pki_dir = dir.join("pki");
    let o = std::process::Command::new(BIN)
        .args(["pki", "--names", "registrar.other.test", "--dir"])
        .arg(&pki_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let lab = LabPki::in_dir(&pki_dir);
    let _kamailio = Kamailio::start(&dir, 5290, &lab, None, None);
    let fleet = dir.join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "[sip]\ntransport = \"tls\"\ntls_verify = \"{}\"\n[[registrars]]\naddress = \"127.0.0.1:5291\"\n\
             [endpoints]\ncount = 5\nrate = 50.0\n[run]\nduration_s = 3\nreport_dir = \"{}\"\n",
            lab.ca.display(),
            dir.join("report").display()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(BIN)
        .args(["register", "--progress", "off"])
        .arg(&fleet)
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("tls_name_mismatch"), "{out}");
    assert!(
        out.contains("registrar.other.test"),
        "the names it has: {out}"
    );
    assert!(out.contains("127.0.0.1"), "the name we wanted: {out}");
    let report = std::fs::read_to_string(dir.join("report/report.json")).unwrap();
    assert!(report.contains("\"tls_name_mismatch\""), "{report}");
    let page = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    assert!(page.contains(r#"id="result">FAIL"#), "{page}");
    assert!(page.contains("tls_name_mismatch"), "{page}");
}
