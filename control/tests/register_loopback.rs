//! Registration over real sockets on loopback: a fleet against two of our registrars, the
//! primary killed (it goes silent, as a dead host does) and brought back.

use std::sync::Mutex;
use std::time::Duration;

use srtp_control::register::RegistrarConfig;
use srtp_control::register::config::FleetConfig;
use srtp_control::register::report::RegisterReport;
use srtp_control::register::run::{Progress, RunControl, run};
use srtp_control::register::server::RegistrarServer;
use srtp_control::sip::tls::TlsSettings;
use srtp_control::sip::transport::Protocol;

/// One run at a time: each loads the two cores on its own.
static SERIAL: Mutex<()> = Mutex::new(());

struct Plan {
    protocol: Protocol,
    endpoints: usize,
    rate: f64,
    keepalive: &'static str,
    max_expires: u32,
    probe_s: u64,
    kill_at_s: f64,
    revive_at_s: f64,
    duration_s: f64,
}

struct Outcome {
    report: RegisterReport,
    kill_ms: u64,
    revive_ms: u64,
    primary_bindings_at_end: usize,
    backup_removals: u64,
}

fn fleet_run(plan: Plan) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let reg = || RegistrarConfig {
            max_expires: plan.max_expires,
            min_expires: 5,
            realm: Some("lab.test".into()),
            passwords: Box::new(|u: &str| u.strip_prefix("phone").map(|n| format!("pw{n}"))),
        };
        let lo = "127.0.0.1:0".parse().unwrap();
        let tls = TlsSettings::default();
        let primary = RegistrarServer::start(plan.protocol, lo, &tls, reg())
            .await
            .unwrap();
        let backup = RegistrarServer::start(plan.protocol, lo, &tls, reg())
            .await
            .unwrap();
        let text = format!(
            r#"
[sip]
transport = "{transport}"
[[registrars]]
name = "primary"
address = "{p}"
domain = "lab.test"
[[registrars]]
name = "backup"
address = "{b}"
domain = "lab.test"
[endpoints]
count = {n}
user = "phone{{n}}"
password = "pw{{n}}"
rate = {rate}
[keepalive]
{keepalive}
[failover]
detection = "fast"
failures = 2
probe_interval_s = {probe}
[run]
duration_s = {d}
"#,
            transport = plan.protocol.via().to_ascii_lowercase(),
            p = primary.local_addr(),
            b = backup.local_addr(),
            n = plan.endpoints,
            rate = plan.rate,
            keepalive = plan.keepalive,
            d = plan.duration_s,
            probe = plan.probe_s,
        );
        let cfg = FleetConfig::parse(&text).unwrap();
        let (mut kill_ms, mut revive_ms) = (0, 0);
        let (p2, killed, revived) = (primary.clone(), &mut kill_ms, &mut revive_ms);
        let report = run(&cfg, Progress::Off, RunControl::default(), |s, _| {
            if s.t_s >= plan.kill_at_s && *killed == 0 {
                *killed = (s.t_s * 1000.0) as u64;
                p2.set_up(false);
            }
            if s.t_s >= plan.revive_at_s && *revived == 0 {
                *revived = (s.t_s * 1000.0) as u64;
                p2.set_up(true);
            }
        })
        .await
        .unwrap();
        // Give the final Expires: 0 a moment to land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Outcome {
            report,
            kill_ms,
            revive_ms,
            primary_bindings_at_end: primary.bindings(),
            backup_removals: backup.counts().removals,
        }
    })
}

fn check(o: &Outcome, n: usize, probe_s: u64, label: &str) {
    let r = &o.report;
    print!("{label}:\n{}", r.summary());
    let st = &r.stats;
    // Before the kill: everyone registered with the primary, every second.
    let before: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.t_s > n as f64 / 1000.0 + 3.0 && s.t_s * 1000.0 < o.kill_ms as f64)
        .collect();
    assert!(!before.is_empty());
    for s in &before {
        assert_eq!(s.snapshot.registered[0], n, "at {:.1} s", s.t_s);
    }
    assert!(st.refreshes >= n as u64, "refreshed: {}", st.refreshes);
    // The kill: every endpoint fails over within the detection budget plus a registration.
    let budget = r.detection_budget_ms.unwrap();
    assert_eq!(
        (st.failovers, st.losses),
        (n as u64, n as u64),
        "one failover each, no spurious loss"
    );
    let last = st
        .transitions
        .iter()
        .filter(|t| t.kind == "failover")
        .map(|t| t.at_ms)
        .max()
        .unwrap();
    let slack = 1_000; // a registration round trip (two with the 401) on a loaded 2-core host
    println!(
        "{label}: killed at {} ms, last failover at +{} ms, budget {budget} ms",
        o.kill_ms,
        last - o.kill_ms
    );
    assert!(
        last <= o.kill_ms + budget + slack,
        "last failover {} ms after the kill; budget {budget} ms",
        last - o.kill_ms
    );
    // The return: every endpoint falls back within a probe interval, unregistering from the
    // backup.
    assert_eq!(st.fallbacks, n as u64);
    let last_back = st
        .transitions
        .iter()
        .filter(|t| t.kind == "fallback")
        .map(|t| t.at_ms)
        .max()
        .unwrap();
    println!(
        "{label}: revived at {} ms, last fallback at +{} ms",
        o.revive_ms,
        last_back - o.revive_ms
    );
    assert!(last_back <= o.revive_ms + probe_s * 1000 + slack);
    assert_eq!(r.end.registered[0], n, "all back on the primary at the end");
    assert_eq!(o.backup_removals, n as u64, "Expires: 0 to the backup");
    // Stopping unregisters everyone.
    assert_eq!(o.primary_bindings_at_end, 0);
    assert_eq!(r.garbage, 0);
}

/// 5,000 endpoints over UDP with OPTIONS keepalives and digest authentication.
#[test]
fn five_thousand_udp_endpoints_register_refresh_fail_over_and_fall_back() {
    let o = fleet_run(Plan {
        protocol: Protocol::Udp,
        endpoints: 5_000,
        rate: 1_000.0,
        // About 700 requests/s in a debug build: OPTIONS every 10 s, refreshes every 25 s.
        keepalive: "options_s = 10\ntimeout_s = 2",
        max_expires: 30,
        probe_s: 10,
        kill_at_s: 36.0,
        revive_at_s: 56.0,
        duration_s: 70.0,
    });
    check(&o, 5_000, 10, "UDP");
}

/// TCP with RFC 5626 CRLF keepalives: the dead primary stops answering pings.
#[test]
fn tcp_endpoints_detect_a_silent_registrar_by_crlf_keepalive() {
    let o = fleet_run(Plan {
        protocol: Protocol::Tcp,
        endpoints: 300,
        rate: 300.0,
        keepalive: "crlf_s = 3\ntimeout_s = 2",
        max_expires: 12,
        probe_s: 4,
        kill_at_s: 12.0,
        revive_at_s: 22.0,
        duration_s: 30.0,
    });
    check(&o, 300, 4, "TCP");
    assert!(
        o.report.stats.keepalive_failures >= 600,
        "two lost pongs each"
    );
}

/// `port_per_endpoint`: every endpoint registers from a UDP port of its own (an SBC that keys
/// on the source address sees one phone per endpoint), and its Contact and Via name that port.
#[test]
fn a_socket_per_endpoint_gives_each_its_own_source_port() {
    let registrar = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    registrar
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let at = registrar.local_addr().unwrap();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = registrar.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = srtp_control::sip::Message::parse(&buf[..n]) else {
                    continue;
                };
                let contact = req.contact().map(|c| c.uri.port).unwrap_or_default();
                seen.lock().unwrap().push((from.port(), contact));
                let mut ok = srtp_control::sip::Message::response_to(&req, 200, "OK", Some("r"));
                ok.push("Expires", "60");
                let _ = registrar.send_to(&ok.to_bytes(), from);
            }
        })
    };
    let cfg = FleetConfig::parse(&format!(
        "[sip]\nport_per_endpoint = true\n[[registrars]]\naddress = \"{at}\"\n\
         [endpoints]\ncount = 20\nrate = 100.0\n[run]\nduration_s = 1.5\n"
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(run(&cfg, Progress::Off, RunControl::default(), |_, _| {}))
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    assert!(report.pass, "{}", report.summary());
    let seen = seen.lock().unwrap();
    let mut ports: Vec<u16> = seen.iter().map(|s| s.0).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 20, "20 endpoints, 20 source ports: {seen:?}");
    assert!(
        seen.iter().all(|(from, contact)| Some(*from) == *contact),
        "each Contact names its own port: {seen:?}"
    );
}
