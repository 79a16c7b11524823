//! Engine memory per stream: RSS growth while one worker holds SDES streams
//! (AES_CM_128_HMAC_SHA1_80 both ways).
//!
//! - Held: 15,000 streams with a socket each and 50,000 on the shared-port model, keyed both
//!   ways and not sending (recv mode, RTCP off): what a call on hold, or one set up before
//!   its media starts, costs.
//! - Carrying media: 4,000 streams with a socket each, as 2,000 pairs calling each other
//!   (sendrecv, PCMU at 60 ms, RTCP every second; 67,000 packets/s, within one worker's
//!   reach): every stream then also holds its per-SSRC state (rollover counter, replay
//!   windows) and its SRTCP keys, both ways. 250 calls run first, for 4 s, so that the
//!   worker's own state is at its working size; the figure is the growth the other 1,750
//!   add.
//!
//! RSS is read from `/proc/self/status` before the streams are created and after; the freed
//! heap is returned to the kernel (`malloc_trim`) before each reading, so the figure is what
//! the streams hold, not what creating them passed through.
//!
//! Run: `cargo bench -p srtp-engine-benches --bench memory`.

use std::net::SocketAddr;
use std::time::Duration;

use srtp_engine::model::{Crypto, LegSpec, Mode, SocketModel, StreamSpec};
use srtp_engine::proto::pacer::{Codec, CodecProfile};
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::{Engine, EngineOptions};

const SUITE: Suite = Suite::AesCm128HmacSha1_80;

fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn key(k: usize, direction: u8) -> Vec<u8> {
    (0..30u8).map(|i| i ^ k as u8 ^ direction).collect()
}

fn crypto(k: usize, direction: u8) -> Crypto {
    Crypto::sdes(SUITE, &key(k, direction)).expect("a 30-byte key")
}

/// A held stream: keyed both ways, a distinct remote (the shared-port model tells streams
/// apart by it), not sending.
fn held(k: usize, model: SocketModel) -> StreamSpec {
    let remote = SocketAddr::new(
        std::net::IpAddr::from([127, 1, (k >> 16) as u8, (k >> 8) as u8]),
        10_000 + (k % 50_000) as u16,
    );
    let mut s = StreamSpec::new(
        Mode::Recv,
        LegSpec {
            remote: Some(remote),
            rtcp_mux: true,
            socket: model,
            tx: crypto(k, 0),
            rx: crypto(k, 0xff),
            ..LegSpec::default()
        },
    );
    s.rtcp_interval_ms = 0;
    s
}

/// One side of a call: sends with `tx`'s key, receives with `rx`'s.
fn calling(pair: usize, tx: u8, rx: u8, remote: Option<SocketAddr>) -> StreamSpec {
    let mut s = StreamSpec::new(
        Mode::SendRecv,
        LegSpec {
            remote,
            rtcp_mux: true,
            socket: SocketModel::PerStream,
            tx: crypto(pair, tx),
            rx: crypto(pair, rx),
            ..LegSpec::default()
        },
    );
    s.codec = CodecProfile {
        ptime_ms: 60,
        ..CodecProfile::default_for(Codec::Pcmu)
    };
    s.rtcp_interval_ms = 1000;
    s
}

fn start() -> Engine {
    Engine::start(EngineOptions {
        workers: 1,
        pin: false,
        ..EngineOptions::default()
    })
    .expect("engine starts")
}

fn report(label: &str, held: usize, wanted: usize, before: u64, after: u64) {
    let growth = after.saturating_sub(before);
    println!(
        "{label}: {held} of {wanted} SDES streams; RSS +{growth} KiB = {:.0} bytes per stream",
        growth as f64 * 1024.0 / held.max(1) as f64
    );
}

fn count_ok<T, E: std::fmt::Display>(results: Vec<Result<T, E>>) -> usize {
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        println!("first error: {e}");
    }
    results.iter().filter(|r| r.is_ok()).count()
}

/// Creates the calls of pairs `pairs` (two streams each); returns the streams created.
fn place_calls(engine: &Engine, pairs: std::ops::Range<usize>) -> usize {
    let callers = engine.create_streams(pairs.clone().map(|p| calling(p, 0, 0xff, None)).collect());
    let answers: Vec<StreamSpec> = callers
        .iter()
        .zip(pairs)
        .filter_map(|(r, p)| {
            r.as_ref()
                .ok()
                .map(|i| calling(p, 0xff, 0, Some(i.legs[0].local)))
        })
        .collect();
    count_ok(callers) + count_ok(engine.create_streams(answers))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for (label, model, n) in [
        ("held, socket per stream", SocketModel::PerStream, 15_000),
        ("held, shared port", SocketModel::Shared, 50_000),
    ] {
        let engine = start();
        let before = rss_kib();
        let ok = count_ok(engine.create_streams((0..n).map(|k| held(k, model)).collect()));
        std::thread::sleep(Duration::from_millis(300));
        report(label, ok, n, before, rss_kib());
        drop(engine);
    }

    // The worker's buffer pools are resident from its start; a first group of calls brings
    // the rest of the worker's fixed state (timer wheel slots, batch vectors) to its working
    // size, and the figure per stream is the growth the second group adds.
    let engine = start();
    let before = rss_kib();
    let first = place_calls(&engine, 0..250);
    std::thread::sleep(Duration::from_secs(4));
    let warm = rss_kib();
    let second = place_calls(&engine, 250..2_000);
    std::thread::sleep(Duration::from_secs(4));
    let after = rss_kib();
    let streams = engine.list_streams();
    let with_media = streams
        .iter()
        .filter(|s| s.legs[0].packets_in > 0 && s.legs[0].rtcp_in > 0)
        .count();
    let auth_failures: u64 = streams.iter().map(|s| s.legs[0].auth_failures).sum();
    report(
        "carrying media, socket per stream (2nd group of calls)",
        second,
        2 * 1_750,
        warm,
        after,
    );
    println!(
        "  all {} streams: RSS +{} KiB; {with_media} had received RTP and RTCP; \
         {auth_failures} authentication failures",
        first + second,
        after.saturating_sub(before)
    );
    drop(engine);
}
