//! Prometheus metrics: every metric declared once in [`METRICS`] (name, type, help, labels),
//! rendered in the text exposition format (version 0.0.4) from the workers' published
//! snapshots, and served on `/metrics` by a small HTTP/1.1 server on its own thread.
//!
//! A scrape reads the snapshots the workers publish every 100 ms (one short lock each) and never
//! asks a worker anything, so its cost does not grow with the number of streams and it cannot
//! stall a worker. There are no per-stream labels: per-stream detail is on the control socket.
//! `docs/metrics.md` lists every metric; a test keeps the two in step.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ctl::CtlCounters;
use crate::proto::dtls::DtlsFailure;
use crate::runtime::{Engine, EngineSnapshot};
use crate::worker::dtls::HANDSHAKE_BUCKETS;
use crate::worker::stream::Mode;
use crate::worker::suite_label;

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

macro_rules! metrics {
    ($($id:ident: $kind:ident $name:literal [$($l:literal),*] $help:literal;)*) => {
        $(
            #[allow(missing_docs)]
            pub const $id: Metric = Metric {
                name: $name,
                kind: Kind::$kind,
                help: $help,
                labels: &[$($l),*],
            };
        )*
        /// Every metric the engine exports, in exposition order.
        pub const METRICS: &[&Metric] = &[$(&$id),*];
    };
}

metrics! {
    BUILD_INFO: Gauge "srtp_engine_build_info" ["version"]
        "Always 1; the engine's version as a label.";
    START_TIME: Gauge "srtp_engine_start_time_seconds" []
        "When the engine started, seconds since the Unix epoch.";
    IO_BACKEND: Gauge "srtp_engine_io_backend_info" ["backend", "fallback"]
        "Always 1; the I/O backend in use, and whether it is the fallback because io_uring was refused.";
    WORKERS: Gauge "srtp_engine_workers" []
        "Worker threads.";
    PACKETS: Counter "srtp_engine_packets_total" ["direction", "suite"]
        "RTP and RTCP packets unprotected (direction in) or protected (direction out), by SRTP suite; suite plain for unencrypted RTP.";
    BYTES: Counter "srtp_engine_bytes_total" ["direction", "suite"]
        "Bytes of those packets as on the wire.";
    AUTH_FAILURES: Counter "srtp_engine_auth_failures_total" []
        "SRTP/SRTCP packets dropped because authentication failed.";
    REPLAY_DROPS: Counter "srtp_engine_replay_drops_total" []
        "SRTP/SRTCP packets dropped as replays.";
    MALFORMED_DROPS: Counter "srtp_engine_malformed_drops_total" []
        "Datagrams dropped because they were not well-formed RTP, RTCP, SRTP or SRTCP.";
    SOURCE_DROPS: Counter "srtp_engine_source_drops_total" []
        "Datagrams dropped for their source address (strict mode, or no stream on a shared port).";
    OTHER_DROPS: Counter "srtp_engine_other_drops_total" []
        "Datagrams dropped for other reasons (unknown SSRC or MKI, key lifetime reached, DTLS/STUN where none is expected, no remote, media reaching an offerer before its keys, plain RTCP where SRTCP belongs).";
    SEND_DROPS: Counter "srtp_engine_send_drops_total" []
        "Packets the engine could not send (no send buffer, protect failure, no remote).";
    STREAMS: Gauge "srtp_engine_streams" ["mode"]
        "Active streams by mode.";
    STREAMS_CREATED: Counter "srtp_engine_streams_created_total" []
        "Streams created.";
    STREAMS_DELETED: Counter "srtp_engine_streams_deleted_total" []
        "Streams deleted.";
    EVENTS_DROPPED: Counter "srtp_engine_events_dropped_total" []
        "Stream events dropped because no client drained them or a subscriber did not read.";
    WORKER_BUSY: Gauge "srtp_engine_worker_busy_ratio" ["worker"]
        "Share of the last publish interval a worker spent outside its wait (0-1).";
    WORKER_CPU: Counter "srtp_engine_worker_cpu_seconds_total" ["worker", "mode"]
        "CPU time of a worker thread, in user space or the kernel.";
    WORKER_TIMERS: Gauge "srtp_engine_worker_timers" ["worker"]
        "Timers pending in a worker's wheel (pacing and RTCP).";
    IO_SYSCALLS: Counter "srtp_engine_io_syscalls_total" ["worker"]
        "System calls made by a worker's I/O backend.";
    IO_DATAGRAMS: Counter "srtp_engine_io_datagrams_total" ["worker", "direction"]
        "Datagrams received from and handed to the kernel by a worker.";
    IO_RX_OVERFLOWS: Counter "srtp_engine_io_receive_buffer_overflows_total" ["worker"]
        "Times every receive buffer was in use (io_uring provided-buffer ring empty, or epoll pool full): the ring overflow figure.";
    IO_TX_OVERFLOWS: Counter "srtp_engine_io_send_buffer_overflows_total" ["worker"]
        "Packets dropped because every send buffer was in flight.";
    IO_TX_ERRORS: Counter "srtp_engine_io_send_errors_total" ["worker"]
        "Sends the kernel refused (full socket buffer, ICMP errors on connected sockets).";
    IO_RX_ERRORS: Counter "srtp_engine_io_receive_errors_total" ["worker"]
        "Receive errors reported by the kernel.";
    IO_RX_TRUNCATED: Counter "srtp_engine_io_receive_truncated_total" ["worker"]
        "Datagrams longer than a receive buffer, dropped.";
    IO_KERNEL_DROPS: Counter "srtp_engine_io_kernel_receive_drops_total" ["worker"]
        "Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL; reported with the socket's next datagram).";
    DTLS_HANDSHAKES: Counter "srtp_engine_dtls_handshakes_total" ["result"]
        "DTLS-SRTP handshakes by outcome: established, or the failure reason (timeout, fingerprint_mismatch, no_certificate, no_common_profile, no_common_cipher_suite, peer_alert, malformed, protocol).";
    DTLS_STARTED: Counter "srtp_engine_dtls_handshakes_started_total" []
        "DTLS-SRTP handshakes started (one per leg, and a second per leg with a separate RTCP port).";
    DTLS_DURATION: Histogram "srtp_engine_dtls_handshake_duration_seconds" []
        "Time from a handshake's first flight (a server: its first datagram) to its keys, for established handshakes.";
    DTLS_SESSIONS: Gauge "srtp_engine_dtls_sessions" []
        "DTLS sessions held: handshakes in progress and servers lingering to answer a lost last flight.";
    CONTROL_CONNECTIONS: Gauge "srtp_engine_control_connections" []
        "Open control socket connections.";
    CONTROL_REQUESTS: Counter "srtp_engine_control_requests_total" []
        "Control requests answered.";
    CONTROL_ERRORS: Counter "srtp_engine_control_errors_total" []
        "Control requests answered with an error.";
}

/// Everything a scrape shows, gathered before rendering.
pub struct Scrape<'a> {
    /// The workers' figures.
    pub snapshot: &'a EngineSnapshot,
    /// Backend name.
    pub backend: &'static str,
    /// Whether the backend is the epoll fallback.
    pub fallback: bool,
    /// Engine start, seconds since the epoch.
    pub start_time: f64,
    /// The control socket's counters, when it runs.
    pub control: Option<&'a CtlCounters>,
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

    /// Writes a family with its one unlabelled sample.
    pub fn one(&mut self, m: &Metric, value: f64) {
        self.family(m);
        self.sample(m, &[], value);
    }

    fn per_worker(
        &mut self,
        m: &Metric,
        s: &EngineSnapshot,
        f: impl Fn(&crate::worker::WorkerSnapshot) -> f64,
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

/// Renders the exposition text.
pub fn render(s: &Scrape<'_>) -> String {
    let mut o = Exposition::default();
    let snap = s.snapshot;
    let t = &snap.totals;
    o.family(&BUILD_INFO);
    o.sample(&BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1.0);
    o.one(&START_TIME, s.start_time);
    o.family(&IO_BACKEND);
    o.sample(
        &IO_BACKEND,
        &[s.backend, if s.fallback { "true" } else { "false" }],
        1.0,
    );
    o.one(&WORKERS, snap.workers.len() as f64);
    for (m, rx, tx) in [
        (&PACKETS, &t.rx_packets, &t.tx_packets),
        (&BYTES, &t.rx_bytes, &t.tx_bytes),
    ] {
        o.family(m);
        for (dir, v) in [("in", rx), ("out", tx)] {
            for (k, &x) in v.iter().enumerate() {
                o.sample(m, &[dir, suite_label(k)], x as f64);
            }
        }
    }
    o.one(&AUTH_FAILURES, t.auth_failures as f64);
    o.one(&REPLAY_DROPS, t.replay_drops as f64);
    o.one(&MALFORMED_DROPS, t.malformed as f64);
    o.one(&SOURCE_DROPS, t.source_drops as f64);
    o.one(&OTHER_DROPS, t.other_drops as f64);
    o.one(&SEND_DROPS, t.tx_drops as f64);
    o.family(&STREAMS);
    for (m, n) in Mode::ALL.iter().zip(snap.streams_by_mode()) {
        o.sample(&STREAMS, &[m.name()], n as f64);
    }
    o.one(&STREAMS_CREATED, t.streams_created as f64);
    o.one(&STREAMS_DELETED, t.streams_deleted as f64);
    let ctl_dropped = s
        .control
        .map_or(0, |c| c.events_dropped.load(Ordering::Relaxed));
    o.one(&EVENTS_DROPPED, (t.events_dropped + ctl_dropped) as f64);
    o.per_worker(&WORKER_BUSY, snap, |w| w.busy_ratio);
    o.family(&WORKER_CPU);
    for w in &snap.workers {
        let idx = w.index.to_string();
        o.sample(&WORKER_CPU, &[&idx, "user"], w.cpu_user_us as f64 / 1e6);
        o.sample(&WORKER_CPU, &[&idx, "system"], w.cpu_sys_us as f64 / 1e6);
    }
    o.per_worker(&WORKER_TIMERS, snap, |w| w.timers as f64);
    o.per_worker(&IO_SYSCALLS, snap, |w| w.io.syscalls as f64);
    o.family(&IO_DATAGRAMS);
    for w in &snap.workers {
        let idx = w.index.to_string();
        o.sample(&IO_DATAGRAMS, &[&idx, "in"], w.io.rx_packets as f64);
        o.sample(&IO_DATAGRAMS, &[&idx, "out"], w.io.tx_packets as f64);
    }
    o.per_worker(&IO_RX_OVERFLOWS, snap, |w| w.io.rx_no_buffer as f64);
    o.per_worker(&IO_TX_OVERFLOWS, snap, |w| w.io.tx_no_buffer as f64);
    o.per_worker(&IO_TX_ERRORS, snap, |w| w.io.tx_errors as f64);
    o.per_worker(&IO_RX_ERRORS, snap, |w| w.io.rx_errors as f64);
    o.per_worker(&IO_RX_TRUNCATED, snap, |w| w.io.rx_truncated as f64);
    o.per_worker(&IO_KERNEL_DROPS, snap, |w| w.io.kernel_drops as f64);
    let d = &t.dtls;
    o.one(&DTLS_STARTED, d.started as f64);
    o.family(&DTLS_HANDSHAKES);
    o.sample(&DTLS_HANDSHAKES, &["established"], d.established as f64);
    for (r, n) in DtlsFailure::REASONS.iter().zip(d.failed) {
        o.sample(&DTLS_HANDSHAKES, &[r], n as f64);
    }
    o.family(&DTLS_DURATION);
    let mut cumulative = 0;
    for (k, n) in d.buckets.iter().enumerate() {
        cumulative += n;
        let le = HANDSHAKE_BUCKETS
            .get(k)
            .map_or("+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(
            o.buf,
            "{}_bucket{{le=\"{le}\"}} {cumulative}",
            DTLS_DURATION.name
        );
    }
    let _ = writeln!(
        o.buf,
        "{}_sum {}",
        DTLS_DURATION.name,
        d.duration_sum_ns as f64 / 1e9
    );
    let _ = writeln!(o.buf, "{}_count {cumulative}", DTLS_DURATION.name);
    o.one(&DTLS_SESSIONS, d.sessions as f64);
    let load = |f: fn(&CtlCounters) -> u64| s.control.map_or(0.0, |c| f(c) as f64);
    o.one(
        &CONTROL_CONNECTIONS,
        load(|c| c.connections.load(Ordering::Relaxed) as u64),
    );
    o.one(
        &CONTROL_REQUESTS,
        load(|c| c.requests.load(Ordering::Relaxed)),
    );
    o.one(&CONTROL_ERRORS, load(|c| c.errors.load(Ordering::Relaxed)));
    o.buf
}

/// The `/metrics` endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Longest request head we read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request or read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

impl MetricsServer {
    /// Listens on `addr` and serves scrapes of `engine` (and of the control socket's counters).
    pub fn start(
        addr: SocketAddr,
        engine: Arc<Engine>,
        control: Option<Arc<CtlCounters>>,
    ) -> std::io::Result<MetricsServer> {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        MetricsServer::serve_pages(addr, move |path| {
            (path == "/metrics").then(|| {
                let snapshot = engine.snapshot();
                render(&Scrape {
                    snapshot: &snapshot,
                    backend: engine.backend().name(),
                    fallback: engine.fallback_reason().is_some(),
                    start_time,
                    control: control.as_deref(),
                })
            })
        })
    }

    /// Listens on `addr` and answers each `GET` with what `page` returns for its path (404
    /// for `None`), one connection at a time on its own thread: any exposition, such as
    /// `srtp-control`'s registration metrics.
    pub fn serve_pages(
        addr: SocketAddr,
        page: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("srtp-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let _ = serve(conn, &page);
                }
            })?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers one HTTP/1.x request: `GET` (or `HEAD`) of a path `page` knows, 404, 405 or 400.
fn serve(mut conn: TcpStream, page: impl FnOnce(&str) -> Option<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut conn, "431 Request Header Fields Too Large", "", false);
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut conn, "400 Bad Request", "bad request line\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return respond(&mut conn, "400 Bad Request", "HTTP/1.x only\n", false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut conn, "405 Method Not Allowed", "GET /metrics\n", false);
    }
    let path = target.split('?').next().unwrap_or("");
    match page(path) {
        Some(body) => respond(&mut conn, "200 OK", &body, head_only),
        None => respond(&mut conn, "404 Not Found", "try /metrics\n", head_only),
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(m.name.starts_with("srtp_engine_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(seen.insert(m.name), "{} declared twice", m.name);
        }
    }

    #[test]
    fn every_declared_metric_is_rendered() {
        let snap = EngineSnapshot {
            workers: vec![crate::worker::WorkerSnapshot::default()],
            totals: Default::default(),
        };
        let text = render(&Scrape {
            snapshot: &snap,
            backend: "epoll",
            fallback: true,
            start_time: 1.0,
            control: None,
        });
        for m in METRICS {
            assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
        }
        assert!(
            text.contains("srtp_engine_io_backend_info{backend=\"epoll\",fallback=\"true\"} 1")
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
