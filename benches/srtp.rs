//! SRTP protect and unprotect: srtp-engine beside libsrtp2 (Debian's build) in the same run,
//! for every suite, 160-byte and 1200-byte payloads. Criterion measures; at the end a table
//! gives the median ns/packet of each and the ratio.
//!
//! `cargo bench -p srtp-engine-benches --bench srtp` (add `-- --quick` for a shorter run,
//! or a filter such as `-- AES_CM_128_HMAC_SHA1_80` for one suite).
//!
//! Both sides do the same work per packet: copy the plaintext template into the buffer (as a
//! packet arriving from elsewhere would be), set the sequence number, protect. Unprotect runs
//! over packets protected beforehand, 1,024 per context, timing only the unprotect calls.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion};
use libsrtp2_ref::{Direction, Key, MAX_TRAILER, Session};
use srtp_engine::proto::srtp::{MasterKey, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};

const PAYLOADS: [usize; 2] = [160, 1200];
const POOL: usize = 1024;
const BUF: usize = 12 + 1200 + MAX_TRAILER;

fn material(suite: Suite) -> Vec<u8> {
    (0..suite.master_len()).map(|i| (i * 7 + 3) as u8).collect()
}

fn ours_tx(suite: Suite) -> SrtpOutbound {
    SrtpOutbound::new(SrtpPolicy::new(
        suite,
        MasterKey::new(suite, &material(suite)).unwrap(),
    ))
    .unwrap()
}

fn ours_rx(suite: Suite) -> SrtpInbound {
    SrtpInbound::new(SrtpPolicy::new(
        suite,
        MasterKey::new(suite, &material(suite)).unwrap(),
    ))
    .unwrap()
}

fn theirs(suite: Suite, direction: Direction) -> Session {
    let key = Key {
        key_and_salt: material(suite),
        mki: vec![],
    };
    Session::new(suite.sdp_name(), direction, &[key], 0).unwrap()
}

/// An RTP packet with a 12-byte header and `payload` bytes, in a buffer with trailer room.
fn template(payload: usize) -> ([u8; BUF], usize) {
    let mut buf = [0u8; BUF];
    buf[..12].copy_from_slice(&[
        0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xca, 0xfe, 0xba, 0xbe,
    ]);
    for (i, b) in buf[12..12 + payload].iter_mut().enumerate() {
        *b = i as u8;
    }
    (buf, 12 + payload)
}

/// `POOL` protected packets with consecutive sequence numbers.
fn protected_pool(suite: Suite, payload: usize) -> Vec<([u8; BUF], usize)> {
    let mut tx = ours_tx(suite);
    (0..POOL)
        .map(|i| {
            let (mut buf, len) = template(payload);
            buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let len = tx.protect_rtp(&mut buf, len).unwrap();
            (buf, len)
        })
        .collect()
}

/// Times `iters` unprotect calls over the pool, with a fresh receiver every `POOL` packets
/// (created untimed); `open` builds the receiver and returns the per-packet call.
fn time_unprotect<R>(
    iters: u64,
    pool: &[([u8; BUF], usize)],
    mut fresh: impl FnMut() -> R,
    mut unprotect: impl FnMut(&mut R, &mut [u8], usize),
) -> Duration {
    let mut work = pool.to_vec();
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(POOL);
        let mut rx = fresh();
        work[..n].copy_from_slice(&pool[..n]);
        let start = Instant::now();
        for (buf, len) in &mut work[..n] {
            unprotect(&mut rx, buf, *len);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn bench(c: &mut Criterion) {
    for suite in Suite::ALL {
        for payload in PAYLOADS {
            let mut group = c.benchmark_group(format!("protect_{suite}_{payload}"));
            let (plain, len) = template(payload);
            let mut buf = plain;
            let mut tx = ours_tx(suite);
            let mut seq = 0u16;
            group.bench_function(BenchmarkId::from_parameter("srtp-engine"), |b| {
                b.iter(|| {
                    buf[..len].copy_from_slice(&plain[..len]);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    black_box(tx.protect_rtp(&mut buf, len).unwrap())
                })
            });
            let mut theirs_tx = theirs(suite, Direction::Outbound);
            let mut seq = 0u16;
            group.bench_function(BenchmarkId::from_parameter("libsrtp2"), |b| {
                b.iter(|| {
                    buf[..len].copy_from_slice(&plain[..len]);
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    black_box(theirs_tx.protect_rtp_in(&mut buf, len).unwrap())
                })
            });
            if let Some(alg) = gcm_alg(suite) {
                // The ceiling: ring's AES-GCM alone on the same packet (nonce from the packet,
                // header as AAD, tag appended), without any SRTP state.
                let key = ring::aead::LessSafeKey::new(
                    ring::aead::UnboundKey::new(alg, &material(suite)[..alg.key_len()]).unwrap(),
                );
                let salt = [0x5au8; 12];
                let mut seq = 0u16;
                group.bench_function(BenchmarkId::from_parameter("ring-alone"), |b| {
                    b.iter(|| {
                        buf[..len].copy_from_slice(&plain[..len]);
                        buf[2..4].copy_from_slice(&seq.to_be_bytes());
                        seq = seq.wrapping_add(1);
                        let mut nonce = salt;
                        for (n, h) in nonce[2..6].iter_mut().zip(&buf[8..12]) {
                            *n ^= h;
                        }
                        nonce[10] ^= buf[2];
                        nonce[11] ^= buf[3];
                        let (header, rest) = buf.split_at_mut(12);
                        let tag = key
                            .seal_in_place_separate_tag(
                                ring::aead::Nonce::assume_unique_for_key(nonce),
                                ring::aead::Aad::from(&header[..]),
                                &mut rest[..len - 12],
                            )
                            .unwrap();
                        buf[len..len + 16].copy_from_slice(tag.as_ref());
                        black_box(len + 16)
                    })
                });
            }
            group.finish();

            let pool = protected_pool(suite, payload);
            let mut group = c.benchmark_group(format!("unprotect_{suite}_{payload}"));
            group.bench_function(BenchmarkId::from_parameter("srtp-engine"), |b| {
                b.iter_custom(|iters| {
                    time_unprotect(
                        iters,
                        &pool,
                        || ours_rx(suite),
                        |rx, buf, len| {
                            black_box(rx.unprotect_rtp(buf, len).unwrap());
                        },
                    )
                })
            });
            group.bench_function(BenchmarkId::from_parameter("libsrtp2"), |b| {
                b.iter_custom(|iters| {
                    time_unprotect(
                        iters,
                        &pool,
                        || theirs(suite, Direction::Inbound),
                        |rx, buf, len| {
                            black_box(rx.unprotect_rtp_in(buf, len).unwrap());
                        },
                    )
                })
            });
            group.finish();
        }
    }
}

fn gcm_alg(suite: Suite) -> Option<&'static ring::aead::Algorithm> {
    match suite {
        Suite::AeadAes128Gcm => Some(&ring::aead::AES_128_GCM),
        Suite::AeadAes256Gcm => Some(&ring::aead::AES_256_GCM),
        _ => None,
    }
}

/// Criterion's median estimate for one benchmark, in ns, if it ran in this run (criterion
/// keeps older results on disk: a filtered run must not print them as its own).
fn median_ns(dir: &std::path::Path, group: &str, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if written < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn print_table(dir: &std::path::Path, since: SystemTime) {
    println!();
    println!(
        "SRTP per-packet cost, median ns/packet (criterion), srtp-engine beside libsrtp2, this run's measurements only"
    );
    println!(
        "{:<26} {:>7} {:>10} {:>12} {:>10} {:>8} {:>11} {:>9}",
        "suite", "payload", "op", "srtp-engine", "libsrtp2", "speedup", "ring-alone", "overhead"
    );
    for suite in Suite::ALL {
        for payload in PAYLOADS {
            for op in ["protect", "unprotect"] {
                let group = format!("{op}_{suite}_{payload}");
                let (Some(ours), Some(theirs)) = (
                    median_ns(dir, &group, "srtp-engine", since),
                    median_ns(dir, &group, "libsrtp2", since),
                ) else {
                    continue;
                };
                let ceiling = median_ns(dir, &group, "ring-alone", since)
                    .map(|c| (format!("{c:.1}"), format!("{:+.1}", ours - c)))
                    .unwrap_or_default();
                println!(
                    "{:<26} {:>7} {:>10} {:>12.1} {:>10.1} {:>7.2}x {:>11} {:>9}",
                    suite.sdp_name(),
                    payload,
                    op,
                    ours,
                    theirs,
                    theirs / ours,
                    ceiling.0,
                    ceiling.1
                );
            }
        }
    }
}

fn main() {
    let since = SystemTime::now();
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    print_table(&dir, since);
}
