//! DTLS-SRTP setup capacity: two engine processes on this machine, one core each, set up
//! `--streams` (default 10,000) DTLS-SRTP streams: servers on one engine (core 1), clients on
//! the other (core 0), clients created at `--rate` per second (open loop, in batches every
//! 10 ms) over the control socket. Reported: end-to-end handshakes per second (first creation
//! to last completion), p50/p99/max handshake latency (client side, ClientHello to keys), the
//! engines' memory at the peak and after the sessions are released; and, in the same run, the
//! in-memory handshake rate of the DTLS library alone (the backend's session, client and server
//! on one core, no sockets) as the ceiling.
//!
//! Run: `cargo bench -p srtp-engine-benches --bench dtls [-- --streams N --rate R
//! --dtls-backend auto|openssl|dimpl --dtls-key ecdsa|rsa]`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use srtp_engine::ctl::protocol::{CryptoRequest, EngineStats, LegRequest, StreamRequest};
use srtp_engine::model::{Event, Mode};
use srtp_engine::proto::dtls::{
    DtlsBackend, DtlsContext, DtlsIdentity, DtlsOptions, DtlsRole, KeyKind, run_in_memory,
};
use support::{arg, child_or_list, connect, rss_kib, spawn_engine};

/// Handshakes per second of the DTLS library alone (the engine's session on `backend`, with
/// `key` certificates on both sides), client and server in one thread, in memory.
fn ceiling(seconds: f64, backend: DtlsBackend, key: KeyKind) -> (f64, usize) {
    let ctx = || {
        let id = Arc::new(DtlsIdentity::generate_kind(key).unwrap());
        let opts = DtlsOptions {
            backend,
            ..DtlsOptions::default()
        };
        DtlsContext::new(id, opts).unwrap()
    };
    let (a, b) = (ctx(), ctx());
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < seconds {
        let now = Instant::now();
        let mut c = a.session(DtlsRole::Client, b.identity().fingerprint().clone(), now);
        let mut s = b.session(DtlsRole::Server, a.identity().fingerprint().clone(), now);
        run_in_memory(&mut *c, &mut *s, now, 32).expect("in-memory handshake completes");
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k]
}

/// Collects DTLS events from a subscription until `want` outcomes or `limit`; each with the
/// time it arrived.
fn collect(
    mut c: srtp_engine::ctl::client::CtlClient,
    want: usize,
    limit: Duration,
) -> std::sync::mpsc::Receiver<(Instant, Event)> {
    let (tx, rx) = channel();
    c.subscribe(Some(vec!["dtls_established".into(), "dtls_failed".into()]))
        .unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + limit;
        let mut n = 0;
        while n < want && Instant::now() < end {
            if let Ok(Some(e)) = c.next_event(Duration::from_millis(100)) {
                n += 1;
                if tx.send((Instant::now(), e.event)).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if child_or_list(&args) {
        return;
    }
    let n: usize = arg(&args, "--streams", 10_000);
    // Offered rate: about 85% of what two cores of this machine sustain; past that, queues
    // build and latency climbs (2,500/s: all established, p99 ~400 ms; 2,100/s: p99 ~40 ms).
    let rate: f64 = arg(&args, "--rate", 2_100.0);
    let linger_ms: u64 = 2_000;
    let backend_name: String = arg(&args, "--dtls-backend", "auto".to_string());
    let key_name: String = arg(&args, "--dtls-key", "ecdsa".to_string());
    let backend = match backend_name.as_str() {
        "dimpl" => DtlsBackend::Dimpl,
        "openssl" => DtlsBackend::Openssl,
        _ => DtlsBackend::Auto,
    };
    let key = match key_name.as_str() {
        "rsa" => KeyKind::Rsa,
        _ => KeyKind::Ecdsa,
    };

    // The ceiling first, on a thread pinned to core 0, before the engines exist (the bench's
    // own threads and the engine processes it starts stay unpinned).
    let (ceil, ceil_n) = std::thread::spawn(move || {
        let _ = srtp_engine::runtime::pin_to(0);
        ceiling(3.0, backend, key)
    })
    .join()
    .unwrap();

    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let srv_sock: PathBuf = dir.join(format!("srtp-dtls-srv-{pid}.sock"));
    let cli_sock: PathBuf = dir.join(format!("srtp-dtls-cli-{pid}.sock"));
    let linger = linger_ms.to_string();
    let extra = [
        "--ports",
        "15000",
        "--dtls-linger-ms",
        linger.as_str(),
        "--dtls-backend",
        backend.as_str(),
        "--dtls-key",
        key_name.as_str(),
    ];
    let mut srv_proc = spawn_engine(1, 20_000, &srv_sock, &extra);
    let mut cli_proc = spawn_engine(0, 40_000, &cli_sock, &extra);
    let mut srv = connect(&srv_sock);
    let mut cli = connect(&cli_sock);
    let srv_fp = srv.hello().unwrap().capabilities.dtls_fingerprint;
    let cli_fp = cli.hello().unwrap().capabilities.dtls_fingerprint;
    // A DTLS leg of a quiet stream (no RTCP, no silence events), RTP and RTCP muxed.
    let dtls = |role, fingerprint: &str, remote: Option<&str>| {
        let mut r = StreamRequest::new(
            Mode::Recv,
            LegRequest {
                rtcp_mux: true,
                remote: remote.map(str::to_owned),
                crypto: CryptoRequest::Dtls {
                    role,
                    fingerprint: fingerprint.to_owned(),
                    profiles: None,
                },
                ..LegRequest::default()
            },
        );
        r.silence_ms = Some(0);
        r.rtcp_interval_ms = Some(0);
        r
    };
    let base = (rss_kib(srv_proc.id()).0, rss_kib(cli_proc.id()).0);

    // Servers: waiting for their ClientHello, no media (recv), RTP and RTCP muxed.
    let mut servers = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let reqs = chunk
            .iter()
            .map(|_| dtls(DtlsRole::Server, &cli_fp, None))
            .collect();
        let r = srv.create_batch(reqs).unwrap();
        assert_eq!(r.failed, 0, "{:?}", r.streams.first());
        for s in r.streams {
            servers.push(s.unwrap().legs[0].local.to_string());
        }
    }
    let limit = Duration::from_secs(120);
    let srv_events = collect(connect(&srv_sock), n, limit);
    let cli_events = collect(connect(&cli_sock), n, limit);

    // Clients at the offered rate, in batches every 10 ms.
    let per_batch = ((rate / 100.0).round() as usize).max(1);
    let t0 = Instant::now();
    for (b, chunk) in servers.chunks(per_batch).enumerate() {
        let due = t0 + Duration::from_secs_f64(b as f64 * per_batch as f64 / rate);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let reqs = chunk
            .iter()
            .map(|remote| dtls(DtlsRole::Client, &srv_fp, Some(remote)))
            .collect();
        let r = cli.create_batch(reqs).unwrap();
        assert_eq!(r.failed, 0, "{:?}", r.streams.first());
    }
    let created = t0.elapsed();

    let mut client_ms = Vec::with_capacity(n);
    let mut server_ms = Vec::with_capacity(n);
    let mut failures: Vec<Event> = Vec::new();
    let mut last = t0;
    for (rx, out) in [(&cli_events, &mut client_ms), (&srv_events, &mut server_ms)] {
        for _ in 0..n {
            let Ok((at, e)) = rx.recv_timeout(limit) else {
                break;
            };
            last = last.max(at);
            match e {
                Event::DtlsEstablished { handshake_ms, .. } => out.push(handshake_ms),
                other => failures.push(other),
            }
        }
    }
    let elapsed = (last - t0).as_secs_f64();
    let peak = (rss_kib(srv_proc.id()), rss_kib(cli_proc.id()));
    let srv_stats = srv.engine_stats().unwrap();
    let cli_stats = cli.engine_stats().unwrap();
    // Sessions linger on the server side (no media here to release them early): linger_ms
    // after the handshake, and at least until its start plus the handshake timeout, while the
    // client may still be retrying.
    let held = Duration::from_millis(linger_ms)
        .max(srtp_engine::proto::dtls::DtlsOptions::default().handshake_timeout);
    std::thread::sleep(held + Duration::from_millis(1_500));
    let after = (rss_kib(srv_proc.id()).0, rss_kib(cli_proc.id()).0);
    let srv_after = srv.engine_stats().unwrap();

    client_ms.sort_by(f64::total_cmp);
    server_ms.sort_by(f64::total_cmp);
    let e2e = client_ms.len() as f64 / elapsed;
    println!(
        "# DTLS-SRTP setup: {n} streams, two engine processes (servers core 1, clients core 0)"
    );
    println!(
        "# clients offered at {rate:.0}/s (created in {:.2} s)",
        created.as_secs_f64()
    );
    println!(
        "DTLS backend {}, {key_name} certificates on both sides",
        backend.as_str()
    );
    println!(
        "ceiling ({} alone, in memory, 1 core): {ceil:.0} handshakes/s ({ceil_n} in 3 s)",
        backend.as_str()
    );
    println!(
        "established: {} clients, {} servers; failures: {}",
        client_ms.len(),
        server_ms.len(),
        failures.len()
    );
    println!(
        "end-to-end: {elapsed:.2} s from first creation to last completion = {e2e:.0} handshakes/s ({:.0}% of the ceiling)",
        100.0 * e2e / ceil
    );
    println!(
        "latency client ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&client_ms, 0.5),
        percentile(&client_ms, 0.99),
        client_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "latency server ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&server_ms, 0.5),
        percentile(&server_ms, 0.99),
        server_ms.last().copied().unwrap_or(f64::NAN)
    );
    let kib = |x: u64| x as f64 / 1024.0;
    println!(
        "memory MiB (server engine / client engine): base {:.1} / {:.1}; peak {:.1} / {:.1}; at completion {:.1} / {:.1}; after release {:.1} / {:.1}",
        kib(base.0),
        kib(base.1),
        kib(peak.0.1),
        kib(peak.1.1),
        kib(peak.0.0),
        kib(peak.1.0),
        kib(after.0),
        kib(after.1)
    );
    println!(
        "per stream at peak, KiB: server {:.1}, client {:.1}",
        (peak.0.1 - base.0) as f64 / n as f64,
        (peak.1.1 - base.1) as f64 / n as f64
    );
    let sessions = |v: &EngineStats| v.dtls.sessions;
    println!(
        "DTLS sessions held: server {} at completion, {} after linger; client {}",
        sessions(&srv_stats),
        sessions(&srv_after),
        sessions(&cli_stats)
    );
    for f in failures.iter().take(5) {
        println!("failure: {f:?}");
    }
    drop(srv_proc.stdin.take());
    drop(cli_proc.stdin.take());
    let _ = srv_proc.wait();
    let _ = cli_proc.wait();
}
