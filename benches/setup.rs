//! Call setup time over UDP on loopback, as `srtp-control call` and `answer` see it: a caller
//! and an answerer (the control crate's user agents, in this process), each with its own
//! connection to an engine's control socket, place and answer calls one after the other. The
//! setup runs from the call command to the caller's stream taking the answer: three engine
//! requests (the caller's stream, the answerer's, the answer applied) around one INVITE and
//! its 200.
//!
//! The reference, in the same run: the same calls with signaling only (no engine), so the
//! difference is what the media side costs. An idle engine worker used to take a command only
//! at the end of its 10 ms wait, which made this 15-30 ms; a doorbell now wakes it.
//!
//! Run: `cargo bench -p srtp-engine-benches --bench setup [-- --calls N]` (default 300).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp_control::media::{EngineMedia, MediaEngine, SignalingOnly};
use srtp_control::sip::transport::Protocol;
use srtp_control::sip::uri::Uri;
use srtp_control::ua::{UaConfig, UserAgent};
use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::runtime::MediaOptions;
use srtp_engine::runtime::{Engine, EngineOptions};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Places `calls` calls between two agents with media from `media`; returns the setup times
/// in milliseconds, sorted.
async fn run(calls: usize, media: impl Fn() -> Box<dyn MediaEngine>) -> Vec<f64> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (bob, _events) = UserAgent::start(UaConfig::new("bob", Protocol::Udp, any), media())
        .await
        .expect("answerer");
    let (alice, _) = UserAgent::start(UaConfig::new("alice", Protocol::Udp, any), media())
        .await
        .expect("caller");
    let at = bob.local_addr();
    let target = Uri::new(Some("bob"), &at.ip().to_string(), Some(at.port()));
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        let info = alice.call(target.clone(), at).await.expect("a call");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let end = alice.hangup(&info.call_id).await.expect("hangup");
        assert!(matches!(end.bye, Some(Ok(()))), "BYE answered");
    }
    alice.stop();
    bob.stop();
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let mut calls = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--calls" {
            calls = args.next().and_then(|v| v.parse().ok()).unwrap_or(calls);
        }
    }
    let engine = Arc::new(
        Engine::start(EngineOptions {
            workers: 2,
            pin: false,
            media: MediaOptions {
                port_min: 44000,
                port_max: 45999,
                ..MediaOptions::default()
            },
            ..EngineOptions::default()
        })
        .expect("engine"),
    );
    let path = std::env::temp_dir().join(format!("srtp-bench-setup-{}.sock", std::process::id()));
    let ctl = CtlServer::start(
        engine.clone(),
        CtlOptions {
            path: path.clone(),
            ..CtlOptions::default()
        },
    )
    .expect("control socket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let with_engine = rt.block_on(run(calls, || {
        Box::new(EngineMedia::connect(&path).expect("engine client"))
    }));
    let reference = rt.block_on(run(calls, || {
        Box::new(SignalingOnly::new("127.0.0.1".parse().expect("ip"), None))
    }));
    ctl.stop();
    engine.shutdown();
    println!("call setup over UDP on loopback, {calls} calls one after the other (ms)");
    println!("| media | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, t) in [
        ("engine over its control socket", &with_engine),
        ("signaling only (reference)", &reference),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(t, 0.5),
            percentile(t, 0.9),
            percentile(t, 0.99),
            percentile(t, 1.0)
        );
    }
    println!(
        "engine / reference (medians): {:.2}x; media adds {:.2} ms",
        percentile(&with_engine, 0.5) / percentile(&reference, 0.5),
        percentile(&with_engine, 0.5) - percentile(&reference, 0.5)
    );
    std::thread::sleep(Duration::from_millis(10));
}
