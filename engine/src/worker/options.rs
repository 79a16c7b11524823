//! What every worker is started with ([`MediaOptions`]) and what it publishes
//! ([`WorkerSnapshot`]), and the clocks it reads.

use std::net::IpAddr;
use std::sync::Arc;

use crate::io::IoStats;
use crate::io::socket::SocketOptions;
use crate::model::{Counters, WatchOptions};
use crate::proto::dtls::DtlsContext;

/// Media options every worker shares: sockets, ports, stream defaults.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Local IPs streams may bind on (the first is the default).
    pub local_ips: Vec<IpAddr>,
    /// First port of the range.
    pub port_min: u16,
    /// Last port of the range.
    pub port_max: u16,
    /// Socket buffer sizes.
    pub socket: SocketOptions,
    /// Connect per-stream sockets to their peer once known.
    pub connect: bool,
    /// Default strict-source mode.
    pub strict_source: bool,
    /// Most streams one worker holds.
    pub max_streams: usize,
    /// CNAME in RTCP reports.
    pub cname: String,
    /// Default event thresholds for streams.
    pub watch: WatchOptions,
    /// DTLS-SRTP: the engine's certificate and handshake timings (None: DTLS legs are
    /// refused; [`crate::runtime::Engine::start`] always sets one).
    pub dtls: Option<Arc<DtlsContext>>,
}

impl Default for MediaOptions {
    fn default() -> MediaOptions {
        MediaOptions {
            local_ips: vec![IpAddr::from([127, 0, 0, 1])],
            port_min: 20_000,
            port_max: 59_999,
            socket: SocketOptions::default(),
            connect: true,
            strict_source: false,
            max_streams: 100_000,
            cname: "srtp-engine".into(),
            watch: WatchOptions::default(),
            dtls: None,
        }
    }
}

/// What a worker publishes every 100 ms.
#[derive(Debug, Clone, Default)]
pub struct WorkerSnapshot {
    /// Worker index.
    pub index: usize,
    /// Backend name.
    pub backend: &'static str,
    /// The core it is pinned to.
    pub core: Option<usize>,
    /// Backend counters.
    pub io: IoStats,
    /// Packet counters.
    pub counters: Counters,
    /// Active streams by mode ([`crate::model::Mode::ALL`] order).
    pub streams_by_mode: [u64; 5],
    /// Share of wall time spent outside the wait, over the last interval (0-1).
    pub busy_ratio: f64,
    /// Thread CPU time in user space, µs.
    pub cpu_user_us: u64,
    /// Thread CPU time in the kernel, µs.
    pub cpu_sys_us: u64,
    /// Timers pending in the worker's wheel (pacing and RTCP; about one of each per stream).
    pub timers: usize,
    /// Set once the worker has exited.
    pub stopped: bool,
}

/// NTP time (32.32) now.
pub(crate) fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800; // 1900 to 1970
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// The calling thread's CPU time so far, µs (user, sys), from `getrusage(RUSAGE_THREAD)`:
/// what workers publish as `cpu_user_us` / `cpu_sys_us`.
pub fn thread_cpu_us() -> (u64, u64) {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_THREAD is valid on Linux.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
            return (0, 0);
        }
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}
