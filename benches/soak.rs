//! Soak: 2,000 SDES sendrecv streams (4,000 RTP flows) at 50 packets/s each way for 60 s,
//! between two engine processes on separate cores: a generator (sendrecv endpoints, core 0)
//! and an echo (core 1), both driven over their control sockets. At the end the endpoints
//! pause, the last echoes land, and every stream must have received every packet it sent, with
//! no loss and no authentication failure.
//!
//! Before the engines start, the same traffic runs for `--reference-seconds` (default 10)
//! through bare sockets, with no engine (see [`bare_reference`]): its CPU is this host's price
//! for the kernel's share of the soak on the day, measured in the same run, so that a failing
//! soak tells a slow host from a slow engine.
//!
//! Run: `cargo bench -p srtp-engine-benches --bench soak [-- --streams N --seconds S
//! --reference-seconds R]`. The bench starts itself twice as the two engine processes
//! (`--role engine`).

mod support;

use std::time::{Duration, Instant};

use srtp_engine::ctl::api::StreamApi;
use srtp_engine::ctl::protocol::{EngineStats, UpdateRequest};
use srtp_engine::runtime::thread_cpu_us;
use support::{Engines, SUITE, arg, child_or_list, echo_pairs};

fn cpu_s(stats: &EngineStats) -> (f64, f64) {
    stats.workers.first().map_or((0.0, 0.0), |w| {
        (w.cpu_user_us as f64 / 1e6, w.cpu_sys_us as f64 / 1e6)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if child_or_list(&args) {
        return;
    }
    let n: usize = arg(&args, "--streams", 2_000);
    let seconds: u64 = arg(&args, "--seconds", 60);
    let ref_seconds: u64 = arg(&args, "--reference-seconds", 10);
    let bare = (ref_seconds > 0).then(|| bare_reference(n, Duration::from_secs(ref_seconds)));
    let (engines, mut generator, mut echo) = Engines::start("soak", &[]);

    // Echo streams first (non-muxed RTCP: a port pair each), then the endpoints aimed at them.
    let t0 = Instant::now();
    let (ends, _) = echo_pairs(&mut generator, &mut echo, n);
    let ids: Vec<u64> = ends.iter().map(|s| s.id).collect();
    let (g0, e0) = (
        generator.engine_stats().unwrap(),
        echo.engine_stats().unwrap(),
    );
    println!(
        "# soak: {n} sendrecv streams (PCMU 20 ms, SRTP {SUITE}) against {n} echo streams, {seconds} s"
    );
    // One sample a second from both engines, so that a loss can be placed in time and on a
    // side: a second in which either socket layer dropped datagrams is printed at the end.
    let mut timeline = Vec::new();
    let mut last = (io_counts(&g0), io_counts(&e0));
    let start = Instant::now();
    for second in 1..=seconds {
        let due = start + Duration::from_secs(second);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = (
            io_counts(&generator.engine_stats().unwrap()),
            io_counts(&echo.engine_stats().unwrap()),
        );
        timeline.push((second, delta(now.0, last.0), delta(now.1, last.1)));
        last = now;
    }
    let (g1, e1) = (
        generator.engine_stats().unwrap(),
        echo.engine_stats().unwrap(),
    );
    let ran = t0.elapsed().as_secs_f64();
    for id in &ids {
        generator
            .update(UpdateRequest {
                paused: Some(true),
                ..UpdateRequest::of(*id)
            })
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let all = generator.all_streams().unwrap();
    let mut sent = 0u64;
    let mut got = 0u64;
    let mut short = 0usize;
    let mut lost = 0i64;
    let mut auth = 0u64;
    let mut worst_jitter = 0f64;
    let mut worst_mos = 5f64;
    for s in &all {
        let l = &s.legs[0];
        let (o, i) = (l.packets_out, l.packets_in);
        sent += o;
        got += i;
        if i != o {
            short += 1;
        }
        lost += l.lost;
        auth += l.auth_failures;
        worst_jitter = worst_jitter.max(l.jitter_ms);
        worst_mos = worst_mos.min(l.mos);
        if l.lost != 0 || l.mos < 4.0 {
            eprintln!("odd stream: {s:?}");
        }
    }
    let echo_auth = e1.auth_failures;
    let (gu0, gs0) = cpu_s(&g0);
    let (gu1, gs1) = cpu_s(&g1);
    let (eu0, es0) = cpu_s(&e0);
    let (eu1, es1) = cpu_s(&e1);
    let span = seconds as f64;
    println!("| figure | value |");
    println!("|---|---|");
    println!("| RTP packets sent by the endpoints | {sent} |");
    println!("| RTP packets echoed back and received | {got} |");
    println!("| rate each way | {:.0} packets/s |", sent as f64 / ran);
    println!("| streams that missed any packet | {short} of {n} |");
    println!("| RFC 3550 cumulative lost (sum) | {lost} |");
    println!("| auth failures (endpoints / echo) | {auth} / {echo_auth} |");
    println!("| worst jitter | {worst_jitter:.2} ms |");
    println!("| worst MOS | {worst_mos:.2} |");
    println!(
        "| generator CPU (core 0) | {:.1}% user, {:.1}% sys |",
        (gu1 - gu0) / span * 100.0,
        (gs1 - gs0) / span * 100.0
    );
    println!(
        "| echo CPU (core 1) | {:.1}% user, {:.1}% sys |",
        (eu1 - eu0) / span * 100.0,
        (es1 - es0) / span * 100.0
    );
    println!(
        "| receive ring overflows (generator / echo) | {} / {} |",
        io(&g1, "rx_no_buffer"),
        io(&e1, "rx_no_buffer")
    );
    for k in [
        "rx_packets",
        "tx_packets",
        "kernel_drops",
        "tx_no_buffer",
        "tx_errors",
        "rx_errors",
        "polls",
        "syscalls",
    ] {
        println!(
            "| io {k} (generator / echo) | {} / {} |",
            io(&g1, k),
            io(&e1, k)
        );
    }
    println!(
        "| send drops: stream counters (generator / echo) | {} / {} |",
        g1.tx_drops, e1.tx_drops
    );
    println!(
        "| worker busy ratio at the end (generator / echo) | {:.2} / {:.2} |",
        g1.workers.first().map_or(0.0, |w| w.busy_ratio),
        e1.workers.first().map_or(0.0, |w| w.busy_ratio)
    );
    if let Some(b) = &bare {
        println!(
            "| reference, bare sockets (same traffic, no engine, {ref_seconds} s): generator core | {:.1}% user, {:.1}% sys |",
            b.gen_cpu.0, b.gen_cpu.1
        );
        println!(
            "| reference, bare sockets: echo core | {:.1}% user, {:.1}% sys |",
            b.echo_cpu.0, b.echo_cpu.1
        );
        println!(
            "| reference, bare sockets: datagrams sent / echoed back | {} / {} |",
            b.sent, b.received
        );
        let ratio = |engine: f64, bare: (f64, f64)| engine / (bare.0 + bare.1).max(0.1);
        println!(
            "| engine CPU / bare-socket CPU (generator / echo) | {:.2} / {:.2} |",
            ratio((gu1 - gu0 + gs1 - gs0) / span * 100.0, b.gen_cpu),
            ratio((eu1 - eu0 + es1 - es0) / span * 100.0, b.echo_cpu)
        );
    }
    let pass = short == 0 && lost == 0 && auth == 0 && echo_auth == 0 && sent > 0;
    let troubled: Vec<_> = timeline
        .iter()
        .filter(|(_, g, e)| g[2] > 0 || e[2] > 0)
        .collect();
    if !troubled.is_empty() {
        println!();
        println!("seconds with socket drops (rx / tx / kernel drops, generator | echo):");
        for (t, g, e) in troubled {
            println!(
                "  t={t:>3}s  {:>7} / {:>7} / {:>6} | {:>7} / {:>7} / {:>6}",
                g[0], g[1], g[2], e[0], e[1], e[2]
            );
        }
    }
    println!("result: {}", if pass { "PASS (zero loss)" } else { "FAIL" });
    engines.stop();
    if !pass {
        std::process::exit(1);
    }
}

/// A worker's I/O packet counters: received, sent, dropped by the kernel at its sockets.
fn io_counts(stats: &EngineStats) -> [u64; 3] {
    ["rx_packets", "tx_packets", "kernel_drops"].map(|k| io(stats, k))
}

/// One of the first worker's I/O counters from `engine_stats`, by its name on the wire.
fn io(stats: &EngineStats, key: &str) -> u64 {
    let io = stats.workers.first().map(|w| w.io).unwrap_or_default();
    match key {
        "rx_packets" => io.rx_packets,
        "tx_packets" => io.tx_packets,
        "kernel_drops" => io.kernel_drops,
        "tx_no_buffer" => io.tx_no_buffer,
        "tx_errors" => io.tx_errors,
        "rx_errors" => io.rx_errors,
        "rx_no_buffer" => io.rx_no_buffer,
        "polls" => io.polls,
        "syscalls" => io.syscalls,
        _ => 0,
    }
}

fn delta(now: [u64; 3], before: [u64; 3]) -> [u64; 3] {
    core::array::from_fn(|i| now[i].saturating_sub(before[i]))
}

/// What the bare-socket reference measured: CPU per core in percent (user, sys) and the
/// datagrams that went out and came back.
struct Bare {
    gen_cpu: (f64, f64),
    echo_cpu: (f64, f64),
    sent: u64,
    received: u64,
}

/// This thread's CPU since `c0` (µs, taken at `t0`), percent of the wall time (user, sys).
fn cpu_percent(c0: (u64, u64), t0: Instant) -> (f64, f64) {
    let (c1, wall_us) = (thread_cpu_us(), t0.elapsed().as_secs_f64() * 1e6);
    let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / wall_us * 100.0;
    (pct(c1.0, c0.0), pct(c1.1, c0.1))
}

/// Pins this thread to `core` and registers `socks` for reading, token = index.
fn pinned_poll(core: usize, socks: &mut [mio::net::UdpSocket]) -> mio::Poll {
    let _ = srtp_engine::runtime::pin_to(core);
    let poll = mio::Poll::new().unwrap();
    for (k, s) in socks.iter_mut().enumerate() {
        poll.registry()
            .register(s, mio::Token(k), mio::Interest::READABLE)
            .unwrap();
    }
    poll
}

/// The soak's traffic with no engine: `n` pairs of connected loopback UDP sockets, one thread
/// on each core. The generator (core 0) sends one 182-byte datagram (an SRTP packet's size)
/// on each of its sockets every 20 ms, spread over the period in 1 ms slices, and reads what
/// comes back; the echo thread (core 1) returns every datagram it reads. Plain non-blocking
/// sockets, epoll (mio) and one `send` or `recv` per datagram: no crypto, no RTP, no
/// io_uring. The figure is what the kernel's loopback UDP path costs on this host today.
fn bare_reference(n: usize, span: Duration) -> Bare {
    use mio::Events;
    use mio::net::UdpSocket;
    const SLICES: usize = 20;
    let any = "127.0.0.1:0".parse().unwrap();
    let mut a: Vec<UdpSocket> = Vec::with_capacity(n);
    let mut b: Vec<UdpSocket> = Vec::with_capacity(n);
    for _ in 0..n {
        let (x, y) = (UdpSocket::bind(any).unwrap(), UdpSocket::bind(any).unwrap());
        x.connect(y.local_addr().unwrap()).unwrap();
        y.connect(x.local_addr().unwrap()).unwrap();
        a.push(x);
        b.push(y);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo_stop = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut poll = pinned_poll(1, &mut b);
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 2048];
        let c0 = thread_cpu_us();
        let t0 = Instant::now();
        while !echo_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(50)));
            for ev in &events {
                let s = &b[ev.token().0];
                while let Ok(len) = s.recv(&mut buf) {
                    let _ = s.send(&buf[..len]);
                }
            }
        }
        cpu_percent(c0, t0)
    });
    let generator = std::thread::spawn(move || {
        let mut poll = pinned_poll(0, &mut a);
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 2048];
        let payload = [0x80u8; 182];
        let (mut sent, mut received) = (0u64, 0u64);
        let slice = Duration::from_millis(1);
        let c0 = thread_cpu_us();
        let t0 = Instant::now();
        let mut next = t0;
        let mut k = 0usize;
        let mut read = |events: &Events, received: &mut u64| {
            for ev in events {
                while a[ev.token().0].recv(&mut buf).is_ok() {
                    *received += 1;
                }
            }
        };
        while t0.elapsed() < span {
            let now = Instant::now();
            if now >= next {
                // This slice's share of the streams: n / SLICES sockets, one datagram each.
                for _ in 0..n.div_ceil(SLICES) {
                    if a[k].send(&payload).is_ok() {
                        sent += 1;
                    }
                    k = (k + 1) % n;
                }
                next += slice;
                continue;
            }
            let _ = poll.poll(&mut events, Some(next - now));
            read(&events, &mut received);
        }
        let cpu = cpu_percent(c0, t0);
        // The last echoes land; then both threads stop.
        let end = Instant::now() + Duration::from_millis(300);
        while Instant::now() < end {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
            read(&events, &mut received);
        }
        (cpu, sent, received)
    });
    let (gen_cpu, sent, received) = generator.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let echo_cpu = echo.join().unwrap();
    Bare {
        gen_cpu,
        echo_cpu,
        sent,
        received,
    }
}
