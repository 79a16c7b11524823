//! The engine's metric families and their rendering from the workers' snapshots.

use std::sync::atomic::Ordering;

use super::exposition::Exposition;
use crate::ctl::CtlCounters;
use crate::model::DropFamily;
use crate::model::Mode;
use crate::model::counters::{HANDSHAKE_BUCKETS, suite_label};
use crate::proto::dtls::DtlsFailureReason;
use crate::runtime::EngineSnapshot;

crate::declare_metrics! {
    /// Every metric the engine exports, in exposition order.
    pub METRICS;
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
    DROPS: Counter "srtp_engine_drops_total" ["reason"]
        "Datagrams received and not used, by reason (auth_failed, replayed, malformed, wrong_source, no_stream, before_answer, before_keys, rtcp_unprotected, not_carried, handshake_over, key_lifetime, srtp_other, closed); the five families above are sums of these.";
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
        "Datagrams the kernel dropped at a socket: a full receive buffer, or a bad UDP checksum (SO_RXQ_OVFL; reported with the socket's next datagram).";
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
    o.one(&AUTH_FAILURES, t.drops.family(DropFamily::Auth) as f64);
    o.one(&REPLAY_DROPS, t.drops.family(DropFamily::Replay) as f64);
    o.one(
        &MALFORMED_DROPS,
        t.drops.family(DropFamily::Malformed) as f64,
    );
    o.one(&SOURCE_DROPS, t.drops.family(DropFamily::Source) as f64);
    o.one(&OTHER_DROPS, t.drops.family(DropFamily::Other) as f64);
    o.family(&DROPS);
    for (r, n) in t.drops.iter() {
        o.sample(&DROPS, &[r.name()], n as f64);
    }
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
    for (r, n) in DtlsFailureReason::ALL.iter().zip(d.failed) {
        o.sample(&DTLS_HANDSHAKES, &[r.as_str()], n as f64);
    }
    o.histogram(
        &DTLS_DURATION,
        &HANDSHAKE_BUCKETS,
        &d.buckets,
        d.duration_sum_ns as f64 / 1e9,
    );
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
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::Kind;

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
            workers: vec![crate::runtime::WorkerSnapshot::default()],
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
    }
}
