//! Echo capacity: SRTP packets per second through one echo worker, io_uring against the epoll
//! fallback, SRTP against null crypto (the I/O ceiling), at 1,000 and 10,000 streams.
//!
//! Layout (2 cores): the echo engine's single worker is pinned to core 0; a load generator
//! thread, pinned to core 1, sends 172-byte RTP packets (160-byte payload; 182 bytes with the
//! AES_CM_128_HMAC_SHA1_80 tag) round robin over the streams at a set rate from 100 sockets,
//! with `sendmmsg` (64 packets a call), whatever the echo side's backend, so only the echo side
//! changes. It never reads the echoes (its small receive buffers let the kernel drop them):
//! loss is what the generator sent minus what the echo worker received and sent back.
//!
//! For each configuration the offered rate climbs a ladder of 10,000 pkt/s rungs, then 2,000
//! pkt/s rungs between the last one that held and the first that did not; each rung runs 2 s
//! and counts loss. Reported per configuration:
//! - the highest rate with zero loss (the echo worker's busy ratio tells whether the echo side
//!   or the generator was the limit), with the echo worker's CPU per echoed packet there, user
//!   and kernel (getrusage of the worker thread), and its system calls per packet (counted by
//!   the backend);
//! - the CPU per packet at the first rung, the same offered rate for every configuration, so
//!   that backends compare at equal load and not only each at its own limit.
//!
//! Run: `cargo bench -p srtp-engine-benches --bench echo`. Options after `--`:
//! - `--quick`: 1,000 streams only, 0.7 s rungs, no fine rungs;
//! - `--rounds N`: every configuration N times, interleaved, and the medians;
//! - `--from R`: the ladder starts at R packets/s, which is also the reference rate;
//!   `--to R` ends it there (`--from R --to R` holds one rate, e.g. to profile);
//! - `--step-ms MS`: the length of a rung; `--fine F`: the fine rungs (0: none);
//! - `--streams N`, `--backend io_uring|epoll`, `--crypto srtp|null`: one configuration.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_engine::io::socket::SocketOptions;
use srtp_engine::io::{BackendKind, IoConfig};
use srtp_engine::model::{Crypto, LegSpec, Mode, StreamSpec};
use srtp_engine::proto::rtp::write_header;
use srtp_engine::proto::srtp::{MasterKey, SrtpOutbound, SrtpPolicy, Suite};
use srtp_engine::runtime::{Engine, EngineOptions};
use srtp_engine::runtime::{MediaOptions, WorkerSnapshot};

const SUITE: Suite = Suite::AesCm128HmacSha1_80;
const GEN_SOCKETS: usize = 100;
const PAYLOAD: usize = 160;

fn key(k: usize, dir: u8) -> Vec<u8> {
    (0..30u8)
        .map(|i| i ^ (k as u8) ^ dir.wrapping_mul(31) ^ ((k >> 8) as u8).rotate_left(3))
        .collect()
}

struct GenStream {
    dest: libc::sockaddr_in,
    tx: Option<SrtpOutbound>,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

/// The load generator: `sendmmsg` of 64 packets (to 64 streams) per call from a few sockets,
/// paced by the clock. It never reads the echoes: its sockets have small receive buffers and
/// the kernel drops what comes back, so the generator stays cheaper per packet than the echo
/// worker and the echo worker is what saturates. Loss is counted at the echo worker: packets
/// sent by the generator minus packets the echo worker received and sent back.
struct Generator {
    socks: Vec<std::net::UdpSocket>,
    streams: Vec<GenStream>,
    /// Per socket, the next of its streams (stream k always sends from socket k % sockets, so
    /// that its echo stream, connected to that socket, accepts it).
    cursor: Vec<usize>,
    bufs: Vec<[u8; 256]>,
}

fn sockaddr_in(a: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = a else {
        panic!("IPv4 only")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

const MMSG: usize = 64;

impl Generator {
    fn new(dests: &[SocketAddr], srtp: bool) -> Generator {
        let socks = (0..GEN_SOCKETS)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let sock = socket2::SockRef::from(&s);
                sock.set_recv_buffer_size(4096).unwrap();
                sock.set_send_buffer_size(4 << 20).unwrap();
                s
            })
            .collect();
        let streams = dests
            .iter()
            .enumerate()
            .map(|(k, &dest)| GenStream {
                dest: sockaddr_in(dest),
                tx: srtp.then(|| {
                    SrtpOutbound::new(SrtpPolicy::new(
                        SUITE,
                        MasterKey::new(SUITE, &key(k, 0)).unwrap(),
                    ))
                    .unwrap()
                }),
                seq: (k as u16).wrapping_mul(7),
                ts: k as u32,
                ssrc: 0x1000_0000 + k as u32,
            })
            .collect();
        Generator {
            socks,
            streams,
            cursor: vec![0; GEN_SOCKETS],
            bufs: vec![[0u8; 256]; MMSG],
        }
    }

    /// Sends one batch of `n` packets on socket `sock`; returns how many the kernel took.
    fn send_batch(&mut self, sock: usize, n: usize) -> u64 {
        let mut iovs: [libc::iovec; MMSG] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MMSG];
        // SAFETY: zeroed mmsghdr is valid.
        #[allow(unsafe_code)]
        let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
        let count = self.streams.len();
        let per_sock = count.div_ceil(GEN_SOCKETS);
        for m in 0..n {
            let mut k = sock + GEN_SOCKETS * self.cursor[sock];
            if k >= count {
                self.cursor[sock] = 0;
                k = sock;
            }
            self.cursor[sock] = (self.cursor[sock] + 1) % per_sock;
            let s = &mut self.streams[k];
            let buf = &mut self.bufs[m];
            write_header(buf, 0, false, s.seq, s.ts, s.ssrc);
            s.seq = s.seq.wrapping_add(1);
            s.ts = s.ts.wrapping_add(160);
            let mut len = 12 + PAYLOAD;
            if let Some(tx) = s.tx.as_mut() {
                len = tx.protect_rtp(buf, len).expect("protect");
            }
            iovs[m] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: len,
            };
            hdrs[m].msg_hdr.msg_name = (&mut s.dest as *mut libc::sockaddr_in).cast();
            hdrs[m].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdrs[m].msg_hdr.msg_iov = &mut iovs[m];
            hdrs[m].msg_hdr.msg_iovlen = 1;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.socks[sock]);
        // SAFETY: hdrs[..n] point at live buffers, iovecs and addresses.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
        rc.max(0) as u64
    }

    /// Sends at `rate` packets/s for `dur`.
    fn run(&mut self, rate: u64, dur: Duration) -> u64 {
        let start = Instant::now();
        let end = start + dur;
        let mut sent = 0u64;
        let mut sock = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let target = (rate as u128 * (now - start).as_nanos() / 1_000_000_000) as u64;
            if sent >= target {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            let n = ((target - sent) as usize).min(MMSG);
            sent += self.send_batch(sock, n);
            sock = (sock + 1) % self.socks.len();
        }
        sent
    }
}

#[derive(Clone, Copy)]
struct Config {
    backend: BackendKind,
    srtp: bool,
    streams: usize,
}

/// The figures of one ladder step.
#[derive(Clone, Copy)]
struct Step {
    /// Packets/s the generator achieved (and the echo worker returned, with no loss).
    rate: u64,
    user_us: f64,
    sys_us: f64,
    /// User plus kernel: its own median over rounds (the sum of two medians is not the
    /// median of the sums).
    total_us: f64,
    syscalls: f64,
    /// Echo worker CPU / wall time.
    busy: f64,
}

impl Step {
    const ZERO: Step = Step {
        rate: 0,
        user_us: 0.0,
        sys_us: 0.0,
        total_us: 0.0,
        syscalls: 0.0,
        busy: 0.0,
    };

    /// Each figure's median over rounds, taken figure by figure (the rounds' CPU and rate
    /// medians may come from different rounds).
    fn median(steps: &[Step]) -> Step {
        let med = |f: &dyn Fn(&Step) -> f64| {
            let mut v: Vec<f64> = steps.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => 0.0,
                n if n % 2 == 1 => v[n / 2],
                n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            }
        };
        Step {
            rate: med(&|s| s.rate as f64) as u64,
            user_us: med(&|s| s.user_us),
            sys_us: med(&|s| s.sys_us),
            total_us: med(&|s| s.total_us),
            syscalls: med(&|s| s.syscalls),
            busy: med(&|s| s.busy),
        }
    }
}

fn snapshot(e: &Engine) -> WorkerSnapshot {
    e.snapshot().workers[0].clone()
}

fn measure(cfg: Config, ladder: &Ladder, step: Duration) -> Measure {
    let opts = EngineOptions {
        workers: 1,
        cores: vec![0],
        backend: cfg.backend,
        fallback: false,
        io: IoConfig {
            rx_buffers: 16_384,
            tx_buffers: 1024,
            ..IoConfig::default()
        },
        media: MediaOptions {
            socket: SocketOptions {
                recv_buffer: 256 << 10,
                send_buffer: 256 << 10,
            },
            ..MediaOptions::default()
        },
        ..EngineOptions::default()
    };
    let engine = Engine::start(opts).expect("echo engine");
    let specs = (0..cfg.streams)
        .map(|k| {
            let (tx, rx) = if cfg.srtp {
                (
                    Crypto::sdes(SUITE, &key(k, 1)).unwrap(),
                    Crypto::sdes(SUITE, &key(k, 0)).unwrap(),
                )
            } else {
                (Crypto::None, Crypto::None)
            };
            let mut s = StreamSpec::new(
                Mode::Echo,
                LegSpec {
                    rtcp_mux: true,
                    tx,
                    rx,
                    ..LegSpec::default()
                },
            );
            s.rtcp_interval_ms = 0;
            s
        })
        .collect();
    let dests: Vec<SocketAddr> = engine
        .create_streams(specs)
        .into_iter()
        .map(|r| r.expect("create").legs[0].local)
        .collect();
    let srtp = cfg.srtp;
    let (to_gen, gen_rx) = std::sync::mpsc::channel::<(u64, Duration)>();
    let (from_gen, results) = std::sync::mpsc::channel::<u64>();
    let gen_thread = std::thread::spawn(move || {
        srtp_engine::runtime::pin_to(1).expect("pin the generator to core 1");
        let mut g = Generator::new(&dests, srtp);
        // Warm up: every stream learns its peer (and connects) before measuring.
        g.run(
            (dests.len() as u64 * 20).max(20_000),
            Duration::from_millis(500),
        );
        while let Ok((rate, dur)) = gen_rx.recv() {
            let _ = from_gen.send(g.run(rate, dur));
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    // One rung: offer `rate` for `step`; its figures, and whether it held (no loss, and the
    // generator kept up).
    let rung = |rate: u64| -> (Step, bool) {
        let before = snapshot(&engine);
        to_gen.send((rate, step)).unwrap();
        let sent = results.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let after = snapshot(&engine);
        let echoed = after.io.tx_packets - before.io.tx_packets;
        let received = after.io.rx_packets - before.io.rx_packets;
        let lost = sent.saturating_sub(echoed.min(received));
        let pkts = received.max(1) as f64;
        let user = (after.cpu_user_us - before.cpu_user_us) as f64;
        let sys = (after.cpu_sys_us - before.cpu_sys_us) as f64;
        let st = Step {
            rate: sent * 1_000_000_000 / step.as_nanos() as u64,
            user_us: user / pkts,
            sys_us: sys / pkts,
            total_us: (user + sys) / pkts,
            syscalls: (after.io.syscalls - before.io.syscalls) as f64 / pkts,
            busy: (user + sys) / (step.as_micros() as f64 + 300_000.0),
        };
        eprintln!(
            "  {:>8} {:>4} {:>6} streams  offered {:>7}/s  sent {:>8}  lost {:>7}  echo cpu {:>5.1}%  {:.2}+{:.2} µs/pkt  {:.3} syscalls/pkt",
            cfg.backend.name(),
            if cfg.srtp { "srtp" } else { "null" },
            cfg.streams,
            rate,
            sent,
            lost,
            100.0 * st.busy,
            st.user_us,
            st.sys_us,
            st.syscalls
        );
        let held = lost == 0 && sent >= rate * step.as_millis() as u64 / 1000 * 95 / 100;
        (st, held)
    };
    let mut best: Option<(u64, Step)> = None;
    let mut reference = None;
    let mut failed_at = None;
    for &rate in &ladder.coarse {
        let (st, held) = rung(rate);
        reference.get_or_insert(st);
        if !held {
            failed_at = Some(rate);
            break;
        }
        best = Some((rate, st));
    }
    // The fine pass: between the last coarse rung that held and the one that did not.
    if let (Some((mut rate, _)), Some(fail)) = (best, failed_at) {
        while ladder.fine > 0 && rate + ladder.fine < fail {
            rate += ladder.fine;
            let (st, held) = rung(rate);
            if !held {
                break;
            }
            best = Some((rate, st));
        }
    }
    drop(to_gen);
    gen_thread.join().unwrap();
    drop(engine);
    Measure {
        best: best.map_or(Step::ZERO, |(_, st)| st),
        reference: reference.unwrap_or(Step::ZERO),
    }
}

/// The offered rates: the coarse rungs, then steps of `fine` between the last coarse rung that
/// held and the first that did not (0: no fine pass).
struct Ladder {
    coarse: Vec<u64>,
    fine: u64,
}

/// One configuration's figures in one round.
#[derive(Clone, Copy)]
struct Measure {
    /// At the highest rate with zero loss.
    best: Step,
    /// At the first rung (the same offered rate for every configuration), where CPU per packet
    /// compares like with like.
    reference: Step,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // cargo bench discovery
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let only_backend = value("--backend");
    let only_crypto = value("--crypto");
    let counts: Vec<usize> = match value("--streams") {
        Some(n) => vec![n.parse().expect("--streams N")],
        None if quick => vec![1000],
        None => vec![1000, 10_000],
    };
    let step = Duration::from_millis(
        value("--step-ms").map_or(if quick { 700 } else { 2_000 }, |v| {
            v.parse().expect("--step-ms MS")
        }),
    );
    let from: u64 = value("--from").map_or(10_000, |v| v.parse().expect("--from PKT_PER_S"));
    let to: u64 = value("--to").map_or(u64::MAX, |v| v.parse().expect("--to PKT_PER_S"));
    let rounds: usize = value("--rounds").map_or(1, |v| v.parse().expect("--rounds N"));
    let ladder = Ladder {
        coarse: (1..=40)
            .map(|k| k * 10_000)
            .filter(|&r| r >= from && r <= to)
            .collect(),
        fine: value("--fine").map_or(if quick { 0 } else { 2_000 }, |v| {
            v.parse().expect("--fine PKT_PER_S")
        }),
    };
    let reference_rate = ladder.coarse.first().copied().unwrap_or(0);
    let mut configs = Vec::new();
    for &streams in &counts {
        for backend in [BackendKind::IoUring, BackendKind::Epoll] {
            if only_backend.is_some_and(|b| b != backend.name()) {
                continue;
            }
            for srtp in [true, false] {
                if only_crypto.is_some_and(|c| c != if srtp { "srtp" } else { "null" }) {
                    continue;
                }
                configs.push(Config {
                    backend,
                    srtp,
                    streams,
                });
            }
        }
    }
    // Rounds interleave the configurations (each round measures every one once), so a slow
    // minute of the host falls on all of them alike; the table gives each one's median.
    let mut runs: Vec<Vec<Measure>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        if rounds > 1 {
            eprintln!("round {} of {rounds}", round + 1);
        }
        for (c, cfg) in configs.iter().enumerate() {
            runs[c].push(measure(*cfg, &ladder, step));
        }
    }
    let total = |m: &Step| m.total_us;
    if rounds > 1 {
        println!();
        println!(
            "Per round (zero-loss pkt/s and total CPU µs/pkt there; CPU µs/pkt at {reference_rate} pkt/s):"
        );
        for (cfg, measures) in configs.iter().zip(&runs) {
            let cells: Vec<String> = measures
                .iter()
                .map(|m| {
                    format!(
                        "{:>7} {:.2} {:.2}",
                        m.best.rate,
                        total(&m.best),
                        total(&m.reference)
                    )
                })
                .collect();
            println!(
                "{:>7} {:>9} {:>6} | {}",
                cfg.streams,
                cfg.backend.name(),
                if cfg.srtp { "srtp" } else { "null" },
                cells.join(" | ")
            );
        }
    }
    let rows: Vec<(Config, Measure)> = configs
        .iter()
        .zip(&runs)
        .map(|(cfg, measures)| {
            let best: Vec<Step> = measures.iter().map(|m| m.best).collect();
            let reference: Vec<Step> = measures.iter().map(|m| m.reference).collect();
            (
                *cfg,
                Measure {
                    best: Step::median(&best),
                    reference: Step::median(&reference),
                },
            )
        })
        .collect();
    println!();
    println!(
        "Echo capacity: one echo worker on core 0, generator on core 1, 172-byte RTP ({SUITE:?} for srtp)."
    );
    println!(
        "Figures at the highest offered rate with zero loss (rungs of 10,000 pkt/s, then {} pkt/s), \
         and CPU at the first rung, {reference_rate} pkt/s, the same offered load for every configuration{}.",
        ladder.fine,
        if rounds > 1 {
            format!("; each figure is the median of {rounds} rounds")
        } else {
            String::new()
        }
    );
    println!(
        "{:>7} {:>9} {:>6} | {:>12} {:>6} | {:>8} {:>8} {:>8} {:>12} | {:>13} | {:>12} {:>12}",
        "streams",
        "backend",
        "crypto",
        "pkt/s 0-loss",
        "busy",
        "user µs",
        "sys µs",
        "total µs",
        "syscalls/pkt",
        "pkt/s per core",
        "ref total µs",
        "ref syscalls"
    );
    for (c, m) in &rows {
        let (b, r) = (&m.best, &m.reference);
        println!(
            "{:>7} {:>9} {:>6} | {:>12} {:>5.0}% | {:>8.2} {:>8.2} {:>8.2} {:>12.3} | {:>13.0} | {:>12.2} {:>12.3}",
            c.streams,
            c.backend.name(),
            if c.srtp { "srtp" } else { "null" },
            b.rate,
            b.busy * 100.0,
            b.user_us,
            b.sys_us,
            total(b),
            b.syscalls,
            1e6 / total(b).max(1e-9),
            total(r),
            r.syscalls
        );
    }
    println!();
    for &streams in &counts {
        let find = |b: BackendKind, s: bool| {
            rows.iter()
                .find(|(c, _)| c.streams == streams && c.backend == b && c.srtp == s)
                .map(|(_, m)| *m)
        };
        if let (Some(us), Some(ep), Some(null)) = (
            find(BackendKind::IoUring, true),
            find(BackendKind::Epoll, true),
            find(BackendKind::IoUring, false),
        ) {
            let per_core = |m: &Step| 1e6 / total(m).max(1e-9);
            let (u, e, n) = (&us.best, &ep.best, &null.best);
            println!(
                "{streams} streams: io_uring/epoll: zero-loss rate {:.2}x, capacity per core {:.2}x, \
                 CPU per packet at {reference_rate} pkt/s {:.2}x, syscalls/pkt {:.3}x; \
                 io_uring SRTP/null: zero-loss rate {:.0}%, capacity per core {:.0}%; user share of SRTP CPU/pkt {:.0}%",
                u.rate as f64 / e.rate.max(1) as f64,
                per_core(u) / per_core(e),
                total(&us.reference) / total(&ep.reference).max(1e-9),
                u.syscalls / e.syscalls.max(1e-9),
                100.0 * u.rate as f64 / n.rate.max(1) as f64,
                100.0 * per_core(u) / per_core(n),
                100.0 * u.user_us / total(u).max(1e-9)
            );
        }
    }
}
