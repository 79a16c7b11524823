//! Engine memory per stream: RSS growth while holding 15,000 SDES streams with a socket each and
//! 50,000 SDES streams on the shared-port model (idle: no media).
//!
//! Run: `cargo bench -p srtp-engine-benches --bench memory`.

use std::net::SocketAddr;

use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::{Engine, EngineOptions};
use srtp_engine::worker::stream::{Crypto, LegSpec, Mode, SocketModel, StreamSpec};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn spec(k: usize, model: SocketModel) -> StreamSpec {
    let suite = Suite::AesCm128HmacSha1_80;
    let key: Vec<u8> = (0..30u8).map(|i| i ^ k as u8).collect();
    let remote: SocketAddr = SocketAddr::from(([127, 0, 0, 2], 10_000 + (k % 50_000) as u16));
    let remote = SocketAddr::new(
        std::net::IpAddr::from([127, 1, (k >> 16) as u8, (k >> 8) as u8]),
        remote.port(),
    );
    let mut s = StreamSpec::new(
        Mode::SendRecv,
        LegSpec {
            remote: Some(remote),
            rtcp_mux: true,
            socket: model,
            tx: Crypto::sdes(suite, &key).unwrap(),
            rx: Crypto::sdes(suite, &key).unwrap(),
            ..LegSpec::default()
        },
    );
    s.rtcp_interval_ms = 0;
    s
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for (label, model, n) in [
        ("socket per stream", SocketModel::PerStream, 15_000),
        ("shared port", SocketModel::Shared, 50_000),
    ] {
        let engine = Engine::start(EngineOptions {
            workers: 1,
            pin: false,
            ..EngineOptions::default()
        })
        .unwrap();
        // Pause generation right away: this measures holding streams, not sending.
        let before = rss_kib();
        let created: Vec<_> = engine.create_streams((0..n).map(|k| spec(k, model)).collect());
        let ok = created.iter().filter(|r| r.is_ok()).count();
        if let Some(Err(e)) = created.iter().find(|r| r.is_err()) {
            println!("first error: {e}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = rss_kib();
        println!(
            "{label}: {ok} of {n} SDES sendrecv streams held; RSS +{} KiB = {:.0} bytes per stream",
            after - before,
            (after - before) as f64 * 1024.0 / ok.max(1) as f64
        );
        drop(engine);
    }
}
