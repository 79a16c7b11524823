//! The engine's two public faces under load:
//! - `create_batch` of 10,000 SDES streams over the control socket (JSON, base64 keys, one
//!   line), beside the same creation through the library call (`Engine::create_streams`) in
//!   the same run: the ratio is what the socket and the protocol cost.
//! - Scraping `/metrics` over HTTP while 50,000 idle shared-port streams are held, beside taking the
//!   workers' snapshot alone, and the workers' loop-turn rate during the scrapes compared with
//!   before them (a stalled worker would show there).
//!
//! Run: `cargo bench -p srtp-engine-benches --bench control [-- --quick]`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp_engine::ctl::client::CtlClient;
use srtp_engine::ctl::protocol::{CryptoRequest, LegRequest, SdesRequest, StreamRequest};
use srtp_engine::ctl::{CtlOptions, CtlServer};
use srtp_engine::metrics::MetricsServer;
use srtp_engine::model::{Crypto, LegSpec, Mode, SocketModel, StreamSpec};
use srtp_engine::proto::srtp::Suite;
use srtp_engine::runtime::{Engine, EngineOptions};

const SUITE: Suite = Suite::AesCm128HmacSha1_80;

fn key(k: usize) -> Vec<u8> {
    (0..30u8).map(|i| i ^ (k as u8)).collect()
}

/// A quiet stream request (no RTCP, no silence events).
fn quiet(mode: Mode, leg: LegRequest) -> StreamRequest {
    let mut r = StreamRequest::new(mode, leg);
    r.rtcp_interval_ms = Some(0);
    r.silence_ms = Some(0);
    r
}

fn request(k: usize) -> StreamRequest {
    quiet(
        Mode::Echo,
        LegRequest {
            rtcp_mux: true,
            crypto: CryptoRequest::Sdes {
                tx: SdesRequest::with_key(SUITE, &key(k)),
                rx: SdesRequest::with_key(SUITE, &key(k + 1)),
            },
            ..LegRequest::default()
        },
    )
}

fn spec(k: usize) -> StreamSpec {
    let mut s = StreamSpec::new(
        Mode::Echo,
        LegSpec {
            rtcp_mux: true,
            tx: Crypto::sdes(SUITE, &key(k)).unwrap(),
            rx: Crypto::sdes(SUITE, &key(k + 1)).unwrap(),
            ..LegSpec::default()
        },
    );
    s.rtcp_interval_ms = 0;
    s
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

fn start(workers: usize) -> (Arc<Engine>, CtlServer, std::path::PathBuf) {
    let engine = Arc::new(
        Engine::start(EngineOptions {
            workers,
            ..EngineOptions::default()
        })
        .unwrap(),
    );
    let path = std::env::temp_dir().join(format!("srtp-bench-ctl-{}.sock", std::process::id()));
    let ctl = CtlServer::start(
        engine.clone(),
        CtlOptions {
            path: path.clone(),
            ..CtlOptions::default()
        },
    )
    .unwrap();
    (engine, ctl, path)
}

fn scrape(addr: SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
    body.len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 2 } else { 5 };
    let n = 10_000;
    println!(
        "# create 10,000 SDES echo streams (socket each, rtcp-mux), 2 workers; {rounds} rounds"
    );
    let (engine, ctl, path) = start(2);
    let mut client = CtlClient::connect(&path).unwrap();
    let mut socket_s = Vec::new();
    let mut library_s = Vec::new();
    for _ in 0..rounds {
        // Over the socket: build the line, send it, parse the reply; then delete.
        let reqs: Vec<StreamRequest> = (0..n).map(request).collect();
        let t = Instant::now();
        let r = client.create_batch(reqs).unwrap();
        socket_s.push(t.elapsed().as_secs_f64());
        assert_eq!(r.created, n, "{:?}", r.streams.first());
        let ids: Vec<u64> = r.streams.iter().map(|s| s.as_ref().unwrap().id).collect();
        client.delete_batch(ids).unwrap();
        // The library call, same streams.
        let specs: Vec<StreamSpec> = (0..n).map(spec).collect();
        let t = Instant::now();
        let r = engine.create_streams(specs);
        library_s.push(t.elapsed().as_secs_f64());
        let ids: Vec<u64> = r.into_iter().map(|r| r.unwrap().id).collect();
        engine.delete_streams(&ids);
    }
    let (sock, lib) = (median(&mut socket_s), median(&mut library_s));
    println!("| path | median s | streams/s |");
    println!("|---|---|---|");
    println!(
        "| control socket create_batch | {sock:.3} | {:.0} |",
        n as f64 / sock
    );
    println!(
        "| Engine::create_streams (reference) | {lib:.3} | {:.0} |",
        n as f64 / lib
    );
    println!("socket / library time ratio: {:.2}", sock / lib);

    // 50,000 shared-port streams, idle, then scrapes.
    let held = 50_000;
    let mut made = 0;
    while made < held {
        let batch: Vec<StreamRequest> = (made..(made + 10_000).min(held))
            .map(|k| {
                quiet(
                    Mode::Recv,
                    LegRequest {
                        rtcp_mux: true,
                        socket: SocketModel::Shared,
                        remote: Some(format!(
                            "127.1.{}.{}:{}",
                            (k >> 8) & 255,
                            k & 255,
                            10_000 + k / 65_536
                        )),
                        ..LegRequest::default()
                    },
                )
            })
            .collect();
        let r = client.create_batch(batch).unwrap();
        assert_eq!(r.failed, 0, "{:?}", r.streams.first());
        made += r.created;
    }
    // Idle receivers (no generation, no RTCP): the scrapes compete with the workers' loop only.
    let m = MetricsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        Some(ctl.counters()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let turns = |e: &Engine| -> u64 { e.snapshot().workers.iter().map(|w| w.io.polls).sum() };
    let t0 = Instant::now();
    let p0 = turns(&engine);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rate = (turns(&engine) - p0) as f64 / t0.elapsed().as_secs_f64();
    let scrapes = if quick { 100 } else { 500 };
    let mut scrape_ms = Vec::with_capacity(scrapes);
    let mut snap_ms = Vec::with_capacity(scrapes);
    let mut size = 0;
    let t1 = Instant::now();
    let p1 = turns(&engine);
    for _ in 0..scrapes {
        let t = Instant::now();
        size = scrape(m.local_addr());
        scrape_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(engine.snapshot());
        snap_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let busy_rate = (turns(&engine) - p1) as f64 / t1.elapsed().as_secs_f64();
    let streams: u64 = engine.snapshot().streams_by_mode().iter().sum();
    println!();
    println!("# /metrics with {streams} shared-port streams held, {scrapes} scrapes back to back");
    println!("| what | median ms | p99 ms |");
    println!("|---|---|---|");
    println!(
        "| HTTP scrape ({size} bytes) | {:.3} | {:.3} |",
        median(&mut scrape_ms.clone()),
        pct(&mut scrape_ms, 0.99)
    );
    println!(
        "| Engine::snapshot alone (reference) | {:.4} | {:.4} |",
        median(&mut snap_ms.clone()),
        pct(&mut snap_ms, 0.99)
    );
    println!(
        "worker loop turns/s: {idle_rate:.0} before the scrapes, {busy_rate:.0} during (ratio {:.2})",
        busy_rate / idle_rate.max(1.0)
    );
    m.stop();
    ctl.stop();
    engine.shutdown();
}
