//! The pinned worker: one thread, one I/O backend, its own sockets, streams and timer wheel.
//!
//! Each turn: wait for datagrams (submitting last turn's sends), run every datagram through its
//! stream in place (demultiplex, unprotect, statistics, re-protect, send on), give the batch's
//! buffers back, fire due timers (pacing, RTCP), take commands, and every 100 ms publish the
//! counters. Nothing on this path is shared with another thread: commands arrive on a channel
//! polled once per turn, and counters are published under a lock ten times a second.

pub mod dtls;
pub mod event;
pub mod stream;
pub mod timer;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::io::socket::{PortAllocator, SocketOptions};
use crate::io::{Io, IoStats, SockId};
use crate::proto::dtls::{DtlsContext, DtlsRole};
use crate::proto::pacer::{RtpSource, SplitMix64};
use crate::proto::rtcp::{self, ReportBlock, SenderInfo};
use crate::proto::rtp::RtpHeader;
use crate::proto::srtp::{SrtpError, Suite};
use crate::proto::{PacketClass, classify};
use event::{Direction, Event, LegWatch, WatchOptions};
use stream::{
    EarlyDtls, Leg, Mode, SocketModel, Stream, StreamError, StreamInfo, StreamSpec, StreamStats,
    StreamUpdate,
};

/// The DTLS record content type of handshake messages (ClientHello among them).
const DTLS_HANDSHAKE: u8 = 22;
use timer::{TimerEntry, TimerKind, TimerWheel};

/// How often a worker publishes its counters.
const PUBLISH_NS: u64 = 100_000_000;
/// Longest wait in one turn (bounds command latency on an idle worker).
const MAX_WAIT: Duration = Duration::from_millis(10);
/// Longest time one turn spends on commands: a batch of 10,000 creations is spread over many
/// turns so that media keeps flowing (and pacing keeps time) while it is served.
const COMMAND_BUDGET: Duration = Duration::from_millis(2);

/// A request to a worker. Replies travel on the channel inside.
pub enum Command {
    /// Create a stream with this id.
    Create(
        u64,
        Box<StreamSpec>,
        Sender<Result<StreamInfo, StreamError>>,
    ),
    /// Delete a stream, returning its final statistics.
    Delete(u64, Sender<Result<StreamStats, StreamError>>),
    /// A stream's statistics.
    Stats(u64, Sender<Result<StreamStats, StreamError>>),
    /// Every stream's statistics.
    List(Sender<Vec<StreamStats>>),
    /// Change a stream.
    Update(u64, Box<StreamUpdate>, Sender<Result<(), StreamError>>),
    /// Stop accepting streams, publish final counters and exit.
    Shutdown,
}

/// A worker's settings: its place among the workers and the media options they all share.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker index.
    pub index: usize,
    /// Number of workers (the port range is split between them).
    pub count: usize,
    /// Sockets and stream defaults.
    pub media: MediaOptions,
    /// Where events go (bounded; full means dropped and counted).
    pub events: SyncSender<Event>,
}

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

/// Engine-wide counters, by suite index (0-5) or 6 for plain RTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// RTP+RTCP packets unprotected (or received plain), by suite.
    pub rx_packets: [u64; 7],
    /// Their bytes.
    pub rx_bytes: [u64; 7],
    /// RTP+RTCP packets protected (or sent plain), by suite.
    pub tx_packets: [u64; 7],
    /// Their bytes.
    pub tx_bytes: [u64; 7],
    /// SRTP/SRTCP authentication failures.
    pub auth_failures: u64,
    /// Replayed packets dropped.
    pub replay_drops: u64,
    /// Malformed datagrams dropped.
    pub malformed: u64,
    /// Datagrams dropped for their source (strict mode) or for arriving on a shared port from
    /// no known stream.
    pub source_drops: u64,
    /// Other drops (see [`stream::LegStats::other_drops`]).
    pub other_drops: u64,
    /// Packets that could not be sent (no buffer, protect failure, no remote).
    pub tx_drops: u64,
    /// Streams created.
    pub streams_created: u64,
    /// Streams deleted.
    pub streams_deleted: u64,
    /// Events dropped because nobody drained the event channel.
    pub events_dropped: u64,
    /// DTLS-SRTP handshakes.
    pub dtls: dtls::DtlsCounters,
}

impl Counters {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Counters) {
        for k in 0..7 {
            self.rx_packets[k] += o.rx_packets[k];
            self.rx_bytes[k] += o.rx_bytes[k];
            self.tx_packets[k] += o.tx_packets[k];
            self.tx_bytes[k] += o.tx_bytes[k];
        }
        self.auth_failures += o.auth_failures;
        self.replay_drops += o.replay_drops;
        self.malformed += o.malformed;
        self.source_drops += o.source_drops;
        self.other_drops += o.other_drops;
        self.tx_drops += o.tx_drops;
        self.streams_created += o.streams_created;
        self.streams_deleted += o.streams_deleted;
        self.events_dropped += o.events_dropped;
        self.dtls.add(&o.dtls);
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
    /// Active streams by mode ([`Mode::ALL`] order).
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

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A small multiplicative hasher for the shared-port lookups (addresses and SSRCs are not
/// attacker-chosen keys in a way that matters: the table only holds signalled remotes).
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Who owns a socket.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Free,
    Leg {
        slot: u32,
        leg: u8,
        rtcp: bool,
    },
    Shared(usize),
    /// The worker's doorbell: a datagram here only wakes the loop (a command is queued).
    Doorbell,
}

struct SharedPort {
    ip: IpAddr,
    sock: SockId,
    local: SocketAddr,
    by_addr: FxMap<SocketAddr, (u32, u8)>,
    by_addr_ssrc: FxMap<(SocketAddr, u32), (u32, u8)>,
}

/// What to do with a received datagram after its stream saw it.
enum Action {
    Drop,
    /// A DTLS datagram for the leg's handshake.
    Dtls,
    Send {
        sock: SockId,
        len: usize,
        to: Option<SocketAddr>,
    },
}

/// The worker.
pub struct Worker {
    cfg: WorkerConfig,
    io: Box<dyn Io>,
    streams: Vec<Option<Stream>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    by_id: HashMap<u64, u32>,
    owners: Vec<Owner>,
    shared: Vec<SharedPort>,
    ports: Vec<PortAllocator>,
    wheel: TimerWheel,
    due: Vec<TimerEntry>,
    epoch: Instant,
    ntp_at_epoch: u64,
    rng: SplitMix64,
    counters: Counters,
    commands: Receiver<Command>,
    snapshot: Arc<Mutex<WorkerSnapshot>>,
    core: Option<usize>,
    accepting: bool,
    connects: Vec<(u32, u8, bool, SocketAddr)>,
    last_sweep: u64,
    /// The last turn stopped taking commands at its budget: do not wait in the next poll.
    more_commands: bool,
    /// A received DTLS datagram, copied out of the receive ring (handshakes only).
    dtls_in: Vec<u8>,
    /// Where a DTLS session writes a datagram to send.
    dtls_out: Vec<u8>,
    /// DTLS sessions held at most since the last heap trim.
    dtls_sessions_peak: u64,
    /// Doorbell datagrams received (wake-ups for commands; left out of the I/O figures).
    rings: u64,
}

fn suite_index(s: Option<Suite>) -> usize {
    s.map_or(6, |s| s as usize)
}

/// The label of a per-suite counter index: the suite's SDP name, or `plain` for index 6.
pub fn suite_label(k: usize) -> &'static str {
    Suite::ALL.get(k).map_or("plain", |s| s.sdp_name())
}

/// Checks a leg's DTLS request before anything changes: the engine has DTLS, the leg is not
/// also given SDES keys, and a client knows where to send its ClientHello.
fn check_dtls(
    media: &MediaOptions,
    d: &dtls::DtlsSpec,
    sdes_too: bool,
    remote: Option<SocketAddr>,
) -> Result<Arc<DtlsContext>, StreamError> {
    let ctx = media.dtls.clone().ok_or(StreamError::DtlsUnavailable)?;
    if sdes_too {
        return Err(StreamError::Invalid(
            "a leg takes DTLS-SRTP or SDES keys, not both",
        ));
    }
    if d.role == DtlsRole::Client && remote.is_none() {
        return Err(StreamError::Invalid(
            "a DTLS client needs the remote address to send its ClientHello to",
        ));
    }
    Ok(ctx)
}

/// NTP time (32.32) now.
fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
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

impl Worker {
    /// A worker on `io`, taking commands from `commands`, publishing into `snapshot`.
    pub fn new(
        cfg: WorkerConfig,
        io: Box<dyn Io>,
        commands: Receiver<Command>,
        snapshot: Arc<Mutex<WorkerSnapshot>>,
        core: Option<usize>,
        seed: u64,
    ) -> Worker {
        let ports = cfg
            .media
            .local_ips
            .iter()
            .map(|&ip| {
                PortAllocator::new(
                    ip,
                    cfg.media.port_min,
                    cfg.media.port_max,
                    cfg.index as u16,
                    cfg.count as u16,
                )
            })
            .collect();
        Worker {
            io,
            streams: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            owners: Vec::new(),
            shared: Vec::new(),
            ports,
            wheel: TimerWheel::new(),
            due: Vec::new(),
            epoch: Instant::now(),
            ntp_at_epoch: ntp_now(),
            rng: SplitMix64::new(seed),
            counters: Counters::default(),
            commands,
            snapshot,
            core,
            accepting: true,
            connects: Vec::new(),
            last_sweep: 0,
            more_commands: false,
            dtls_in: vec![0; crate::io::BUF_SIZE],
            dtls_out: vec![0; crate::io::BUF_SIZE],
            dtls_sessions_peak: 0,
            rings: 0,
            cfg,
        }
    }

    /// Registers the worker's doorbell: a UDP socket on loopback that the runtime sends a
    /// byte to after queueing a command, so that an idle worker takes it at once instead of
    /// at the end of its wait (up to 10 ms; three of them made every call setup 15-20 ms).
    pub fn with_doorbell(mut self, bell: std::net::UdpSocket) -> Worker {
        match self.io.add_socket(bell) {
            Ok(id) => self.set_owner(id, Owner::Doorbell),
            Err(e) => tracing::warn!(
                worker = self.cfg.index,
                "no doorbell ({e}): commands wait for the next turn"
            ),
        }
        self
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn ntp_at(&self, now_ns: u64) -> u64 {
        self.ntp_at_epoch + (((now_ns as u128) << 32) / 1_000_000_000) as u64
    }

    /// Runs until a shutdown command (or the command channel closing).
    pub fn run(mut self) {
        let mut last_publish = 0u64;
        let mut waited_ns = 0u64;
        loop {
            let now = self.now_ns();
            let wait = if self.more_commands {
                Duration::ZERO
            } else {
                self.wheel
                    .next_deadline(MAX_WAIT.as_nanos() as u64)
                    .map_or(MAX_WAIT, |d| Duration::from_nanos(d.saturating_sub(now)))
            };
            let before = Instant::now();
            if let Err(e) = self.io.poll(wait) {
                tracing::error!(worker = self.cfg.index, error = %e, "I/O backend failed; worker stops");
                break;
            }
            waited_ns += before.elapsed().as_nanos() as u64;
            let now = self.now_ns();
            let ntp = self.ntp_at(now);
            let n = self.io.rx_count();
            for i in 0..n {
                self.on_datagram(i, now, ntp);
            }
            self.io.end_rx();
            self.run_connects();
            self.fire_timers(now);
            if !self.take_commands() {
                break;
            }
            if now - last_publish >= PUBLISH_NS {
                let elapsed = now - last_publish;
                let busy = 1.0 - (waited_ns.min(elapsed) as f64 / elapsed.max(1) as f64);
                self.publish(busy, false);
                last_publish = now;
                waited_ns = 0;
            }
            if now - self.last_sweep >= event::SWEEP_NS {
                self.sweep_events(now);
                self.trim_after_release();
                self.last_sweep = now;
            }
        }
        // Final flush: submit what is queued, publish, close.
        let _ = self.io.poll(Duration::ZERO);
        self.publish(0.0, true);
    }

    fn publish(&mut self, busy: f64, stopped: bool) {
        let mut by_mode = [0u64; 5];
        for s in self.streams.iter().flatten() {
            by_mode[s.mode.index()] += 1;
        }
        let (user, sys) = thread_cpu_us();
        let snap = WorkerSnapshot {
            index: self.cfg.index,
            backend: self.io.kind().name(),
            core: self.core,
            io: {
                // The doorbell's rings are the worker's own wake-ups, not traffic.
                let mut io = self.io.stats();
                io.rx_packets = io.rx_packets.saturating_sub(self.rings);
                io
            },
            counters: self.counters,
            streams_by_mode: by_mode,
            busy_ratio: busy,
            cpu_user_us: user,
            cpu_sys_us: sys,
            timers: self.wheel.len(),
            stopped,
        };
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snap;
        }
    }

    /// After a wave of DTLS sessions is released (thousands of handshakes done), gives the
    /// freed memory back to the system: glibc keeps it in the worker's arena otherwise, and a
    /// lab reading RSS after setup would see the peak forever. Off the packet path, at most
    /// once per sweep.
    fn trim_after_release(&mut self) {
        let held = self.counters.dtls.sessions;
        self.dtls_sessions_peak = self.dtls_sessions_peak.max(held);
        if self.dtls_sessions_peak - held >= 1_000 {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free heap pages to the kernel.
            #[allow(unsafe_code)]
            unsafe {
                libc::malloc_trim(0);
            }
            self.dtls_sessions_peak = held;
        }
    }

    /// Turns what the packet path counted into events (silence, failures, key lifetime).
    fn sweep_events(&mut self, now: u64) {
        let tx = &self.cfg.events;
        let dropped = &mut self.counters.events_dropped;
        for s in self.streams.iter_mut().flatten() {
            let receives = s.receives();
            for (k, leg) in s.legs.iter_mut().enumerate() {
                event::sweep_leg(s.id, k, leg, receives, s.watch, now, |e| {
                    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                        tx.try_send(e)
                    {
                        *dropped += 1;
                    }
                });
            }
        }
    }

    /// Takes queued commands for up to [`COMMAND_BUDGET`]; returns false when the worker must
    /// stop.
    fn take_commands(&mut self) -> bool {
        let start = Instant::now();
        self.more_commands = false;
        loop {
            if start.elapsed() >= COMMAND_BUDGET {
                self.more_commands = true;
                return true;
            }
            let cmd = match self.commands.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            match cmd {
                Command::Create(id, spec, reply) => {
                    let r = if self.accepting {
                        self.create(id, *spec)
                    } else {
                        Err(StreamError::ShuttingDown)
                    };
                    if r.is_ok() {
                        self.counters.streams_created += 1;
                    }
                    let _ = reply.send(r);
                }
                Command::Delete(id, reply) => {
                    let _ = reply.send(self.delete(id));
                }
                Command::Stats(id, reply) => {
                    let r = self
                        .by_id
                        .get(&id)
                        .and_then(|&slot| self.streams[slot as usize].as_mut())
                        .map(Stream::stats)
                        .ok_or(StreamError::NoSuchStream(id));
                    let _ = reply.send(r);
                }
                Command::List(reply) => {
                    let all = self
                        .streams
                        .iter_mut()
                        .flatten()
                        .map(Stream::stats)
                        .collect();
                    let _ = reply.send(all);
                }
                Command::Update(id, update, reply) => {
                    let _ = reply.send(self.update(id, *update));
                }
                Command::Shutdown => {
                    self.accepting = false;
                    return false;
                }
            }
        }
    }

    fn create(&mut self, id: u64, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        let want_legs = if spec.mode == Mode::Relay { 2 } else { 1 };
        if spec.legs.len() != want_legs {
            return Err(StreamError::Invalid(if want_legs == 2 {
                "relay needs exactly two legs"
            } else {
                "this mode takes exactly one leg"
            }));
        }
        spec.codec.validate()?;
        if self.by_id.len() >= self.cfg.media.max_streams {
            return Err(StreamError::WorkerFull(self.cfg.media.max_streams));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.streams.push(None);
                self.gens.push(0);
                (self.streams.len() - 1) as u32
            }
        };
        let gen_ = self.gens[slot as usize];
        let mut legs = Vec::with_capacity(want_legs);
        let mut result = Ok(());
        let now = self.now_ns();
        for (k, mut leg_spec) in spec.legs.into_iter().enumerate() {
            let dtls_spec = match leg_spec.dtls.take() {
                None => None,
                Some(d) => match check_dtls(
                    &self.cfg.media,
                    &d,
                    !matches!(leg_spec.tx, stream::Crypto::None)
                        || !matches!(leg_spec.rx, stream::Crypto::None),
                    leg_spec.remote,
                ) {
                    Ok(ctx) => Some((ctx, d)),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
            };
            match self.open_leg(slot, k as u8, leg_spec) {
                Ok(mut l) => {
                    if let Some((ctx, d)) = dtls_spec {
                        l.dtls = Some(self.new_leg_dtls(&ctx, &d, l.rtcp_sock.is_some(), now));
                    }
                    legs.push(l)
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            for l in &legs {
                self.close_leg(l);
            }
            self.free.push(slot);
            return Err(e);
        }
        for l in &mut legs {
            l.watch = LegWatch::new(now);
        }
        let source = spec.mode.generates().then(|| {
            // Start within one period, spread so that many streams do not send in lockstep.
            let period = spec.codec.period_ns();
            let start = now + self.rng.next_u64() % period.max(1);
            RtpSource::new(spec.codec, start, &mut self.rng)
        });
        let report_ssrc = self.rng.next_u64() as u32;
        let mut stream = Stream {
            id,
            mode: spec.mode,
            codec: spec.codec,
            legs,
            source,
            rtcp_interval_ns: u64::from(spec.rtcp_interval_ms) * 1_000_000,
            paused: false,
            report_ssrc,
            pace_pending: false,
            watch: self.cfg.media.watch.with(spec.watch),
        };
        let mut info = StreamInfo {
            id,
            worker: self.cfg.index,
            legs: stream
                .legs
                .iter()
                .map(|l| stream::LegInfo {
                    local: l.local,
                    local_rtcp: l.local_rtcp,
                })
                .collect(),
            ssrc: stream.source.as_ref().map(RtpSource::ssrc),
            fingerprint: None,
        };
        let dtls_legs: Vec<(usize, bool)> = stream
            .legs
            .iter()
            .enumerate()
            .filter_map(|(k, l)| l.dtls.as_ref().map(|d| (k, d.rtcp.is_some())))
            .collect();
        if !dtls_legs.is_empty() {
            info.fingerprint = self
                .cfg
                .media
                .dtls
                .as_ref()
                .map(|c| c.identity().fingerprint().to_string());
        }
        if let Some(src) = &stream.source {
            self.wheel
                .insert(src.next_due(), slot, gen_, TimerKind::Pace);
            stream.pace_pending = true;
        }
        if stream.reports() {
            let first = now + self.rtcp_delay(stream.rtcp_interval_ns);
            self.wheel.insert(first, slot, gen_, TimerKind::Rtcp);
        }
        self.streams[slot as usize] = Some(stream);
        self.by_id.insert(id, slot);
        // A client sends its first flight now; a server arms its deadline.
        for (k, rtcp) in dtls_legs {
            self.dtls_drive(slot, k, false, now);
            if rtcp {
                self.dtls_drive(slot, k, true, now);
            }
        }
        Ok(info)
    }

    /// A leg's DTLS state with fresh sessions (one per port). The caller has checked that the
    /// engine has a DTLS context.
    fn new_leg_dtls(
        &mut self,
        ctx: &DtlsContext,
        d: &dtls::DtlsSpec,
        rtcp_port: bool,
        now: u64,
    ) -> Box<dtls::LegDtls> {
        let at = self.epoch + Duration::from_nanos(now);
        let component =
            || dtls::Component::new(ctx.session(d.role, d.fingerprint.clone(), at), now);
        let rtp = component();
        let rtcp = rtcp_port.then(component);
        let leg = dtls::LegDtls {
            role: d.role,
            rtp,
            rtcp,
            lingering: false,
        };
        self.counters.dtls.sessions += leg.live();
        self.counters.dtls.started += leg.live();
        Box::new(leg)
    }

    /// RFC 3550 6.3.1: the interval randomized to 0.5-1.5 times the mean.
    fn rtcp_delay(&mut self, mean_ns: u64) -> u64 {
        mean_ns / 2 + self.rng.next_u64() % mean_ns.max(1)
    }

    fn local_ip(&self, ip: Option<IpAddr>) -> Result<usize, StreamError> {
        match ip {
            None => Ok(0),
            Some(ip) => self
                .cfg
                .media
                .local_ips
                .iter()
                .position(|&l| l == ip)
                .ok_or(StreamError::UnknownLocalIp(ip)),
        }
    }

    fn set_owner(&mut self, sock: SockId, owner: Owner) {
        let i = sock as usize;
        if self.owners.len() <= i {
            self.owners.resize(i + 1, Owner::Free);
        }
        self.owners[i] = owner;
    }

    fn open_leg(&mut self, slot: u32, k: u8, spec: stream::LegSpec) -> Result<Leg, StreamError> {
        let ip_idx = self.local_ip(spec.local_ip)?;
        let strict = spec.strict_source.unwrap_or(self.cfg.media.strict_source);
        if strict && spec.remote.is_none() {
            return Err(StreamError::Invalid("strict_source needs a remote address"));
        }
        if spec.pending
            && (spec.dtls.is_some()
                || !matches!(spec.tx, stream::Crypto::None)
                || !matches!(spec.rx, stream::Crypto::None))
        {
            return Err(StreamError::Invalid(
                "a leg waiting for its keys (pending) has no crypto yet",
            ));
        }
        match spec.socket {
            SocketModel::Shared => {
                if !spec.rtcp_mux {
                    return Err(StreamError::Invalid("the shared-port model needs rtcp_mux"));
                }
                let Some(remote) = spec.remote else {
                    return Err(StreamError::Invalid(
                        "the shared-port model needs a remote address",
                    ));
                };
                let sp = self.shared_port(ip_idx)?;
                let key = (slot, k);
                let port = &mut self.shared[sp];
                match spec.remote_ssrc {
                    None => {
                        if port.by_addr.contains_key(&remote) {
                            return Err(StreamError::SharedRemoteTaken(remote));
                        }
                        port.by_addr.insert(remote, key);
                    }
                    Some(ssrc) => {
                        if port.by_addr_ssrc.contains_key(&(remote, ssrc)) {
                            return Err(StreamError::SharedRemoteTaken(remote));
                        }
                        port.by_addr_ssrc.insert((remote, ssrc), key);
                    }
                }
                let local = port.local;
                let sock = port.sock;
                let mut leg = match Leg::new(spec.tx, spec.rx, local) {
                    Ok(l) => l,
                    Err(e) => {
                        let port = &mut self.shared[sp];
                        match spec.remote_ssrc {
                            None => port.by_addr.remove(&remote),
                            Some(ssrc) => port.by_addr_ssrc.remove(&(remote, ssrc)),
                        };
                        return Err(e.into());
                    }
                };
                leg.rtp_sock = sock;
                leg.shared = Some(sp);
                leg.remote = Some(remote);
                leg.signalled = Some(remote);
                leg.strict = strict;
                leg.pending = spec.pending;
                leg.remote_ssrc_key = spec.remote_ssrc;
                Ok(leg)
            }
            SocketModel::PerStream => {
                let (rtp, rtcp) =
                    self.ports[ip_idx].bind(&self.cfg.media.socket, !spec.rtcp_mux)?;
                let local = rtp.local_addr()?;
                let local_rtcp = rtcp.as_ref().map(|s| s.local_addr()).transpose()?;
                let mut leg = Leg::new(spec.tx, spec.rx, local)?;
                leg.rtp_sock = self.io.add_socket(rtp)?;
                self.set_owner(
                    leg.rtp_sock,
                    Owner::Leg {
                        slot,
                        leg: k,
                        rtcp: false,
                    },
                );
                if let Some(rtcp) = rtcp {
                    match self.io.add_socket(rtcp) {
                        Ok(s) => {
                            leg.rtcp_sock = Some(s);
                            self.set_owner(
                                s,
                                Owner::Leg {
                                    slot,
                                    leg: k,
                                    rtcp: true,
                                },
                            );
                        }
                        Err(e) => {
                            self.close_leg(&leg);
                            return Err(e.into());
                        }
                    }
                }
                leg.local_rtcp = local_rtcp;
                leg.strict = strict;
                leg.pending = spec.pending;
                leg.remote = spec.remote;
                leg.signalled = spec.remote;
                leg.remote_rtcp = spec.remote_rtcp.or_else(|| {
                    spec.remote
                        .filter(|_| !spec.rtcp_mux)
                        .map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
                });
                if self.cfg.media.connect
                    && let Some(r) = spec.remote
                {
                    if self.io.connect(leg.rtp_sock, r).is_ok() {
                        leg.connected = true;
                    }
                    if let (Some(s), Some(rr)) = (leg.rtcp_sock, leg.remote_rtcp) {
                        let _ = self.io.connect(s, rr);
                    }
                }
                Ok(leg)
            }
        }
    }

    fn shared_port(&mut self, ip_idx: usize) -> Result<usize, StreamError> {
        let ip = self.cfg.media.local_ips[ip_idx];
        if let Some(k) = self.shared.iter().position(|p| p.ip == ip) {
            return Ok(k);
        }
        let (sock, _) = self.ports[ip_idx].bind(&self.cfg.media.socket, false)?;
        let local = sock.local_addr()?;
        let id = self.io.add_socket(sock)?;
        let k = self.shared.len();
        self.set_owner(id, Owner::Shared(k));
        self.shared.push(SharedPort {
            ip,
            sock: id,
            local,
            by_addr: FxMap::default(),
            by_addr_ssrc: FxMap::default(),
        });
        Ok(k)
    }

    fn close_leg(&mut self, leg: &Leg) {
        match leg.shared {
            Some(sp) => {
                let port = &mut self.shared[sp];
                if let Some(r) = leg.signalled {
                    match leg.remote_ssrc_key {
                        None => port.by_addr.remove(&r),
                        Some(ssrc) => port.by_addr_ssrc.remove(&(r, ssrc)),
                    };
                }
            }
            None => {
                self.io.remove_socket(leg.rtp_sock);
                self.set_owner(leg.rtp_sock, Owner::Free);
                if let Some(s) = leg.rtcp_sock {
                    self.io.remove_socket(s);
                    self.set_owner(s, Owner::Free);
                }
            }
        }
    }

    fn delete(&mut self, id: u64) -> Result<StreamStats, StreamError> {
        let slot = self
            .by_id
            .remove(&id)
            .ok_or(StreamError::NoSuchStream(id))?;
        let mut stream = self.streams[slot as usize]
            .take()
            .ok_or(StreamError::NoSuchStream(id))?;
        let stats = stream.stats();
        for leg in &stream.legs {
            self.close_leg(leg);
            let live = leg.dtls.as_ref().map_or(0, |d| d.live());
            self.counters.dtls.release(live);
        }
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.counters.streams_deleted += 1;
        Ok(stats)
    }

    fn update(&mut self, id: u64, u: StreamUpdate) -> Result<(), StreamError> {
        let slot = *self.by_id.get(&id).ok_or(StreamError::NoSuchStream(id))?;
        let gen_ = self.gens[slot as usize];
        let now = self.now_ns();
        let stream = self.streams[slot as usize]
            .as_mut()
            .ok_or(StreamError::NoSuchStream(id))?;
        if let Some(m) = u.mode {
            let ok = matches!(stream.mode, Mode::Send | Mode::Recv | Mode::SendRecv)
                && matches!(m, Mode::Send | Mode::Recv | Mode::SendRecv);
            if !ok {
                return Err(StreamError::Invalid(
                    "only send, recv and sendrecv switch between each other",
                ));
            }
        }
        if let Some((k, _)) = &u.remote {
            match stream.legs.get(*k) {
                None => return Err(StreamError::Invalid("no such leg")),
                Some(l) if l.shared.is_some() => {
                    return Err(StreamError::Invalid(
                        "a shared-port leg cannot change its remote; recreate it",
                    ));
                }
                Some(_) => {}
            }
        }
        for k in u
            .rtcp_mux
            .iter()
            .chain(u.remote_rtcp.as_ref().map(|(k, _)| k))
        {
            if stream.legs.get(*k).is_none() {
                return Err(StreamError::Invalid("no such leg"));
            }
        }
        if let Some((k, _)) = u.remote_rtcp
            && (stream.legs[k].rtcp_sock.is_none() || u.rtcp_mux == Some(k))
        {
            return Err(StreamError::Invalid(
                "remote_rtcp: the leg multiplexes RTCP on its RTP port (it has no RTCP port)",
            ));
        }
        let was_generating = stream.generates();
        let dtls_ctx = match &u.dtls {
            None => None,
            Some((k, d)) => {
                let leg = stream
                    .legs
                    .get(*k)
                    .ok_or(StreamError::Invalid("no such leg"))?;
                let new_remote = u.remote.filter(|(rk, _)| rk == k).map(|(_, r)| r);
                Some(check_dtls(
                    &self.cfg.media,
                    d,
                    u.crypto.as_ref().is_some_and(|(ck, _, _)| ck == k),
                    leg.remote.or(new_remote),
                )?)
            }
        };
        if let Some((k, tx, rx)) = u.crypto {
            let leg = stream
                .legs
                .get_mut(k)
                .ok_or(StreamError::Invalid("no such leg"))?;
            leg.rekey(tx, rx)?;
            leg.pending = false;
            leg.early_dtls = None;
            leg.watch.restart(now);
        }
        if let Some((k, remote)) = u.remote {
            let leg = &mut stream.legs[k];
            leg.watch.restart(now);
            leg.remote = Some(remote);
            leg.signalled = Some(remote);
            leg.recv = crate::proto::stats::ReceiveStats::new();
            if self.cfg.media.connect {
                leg.connected = self.io.connect(leg.rtp_sock, remote).is_ok();
            }
        }
        if let Some((k, rr)) = u.remote_rtcp {
            let leg = &mut stream.legs[k];
            leg.remote_rtcp = Some(rr);
            if self.cfg.media.connect
                && let Some(s) = leg.rtcp_sock
            {
                let _ = self.io.connect(s, rr);
            }
        }
        if let Some(k) = u.rtcp_mux {
            // RFC 5761 5.1.1: the answer accepted rtcp-mux, so RTCP moves to the RTP port and
            // the RTCP port is closed. Its own DTLS handshake, if any, goes with it.
            let leg = &mut stream.legs[k];
            if let Some(s) = leg.rtcp_sock.take() {
                self.io.remove_socket(s);
                // `set_owner` would borrow all of `self` while `stream` is held; the socket
                // was registered, so its entry exists.
                if let Some(o) = self.owners.get_mut(s as usize) {
                    *o = Owner::Free;
                }
                leg.local_rtcp = None;
                leg.remote_rtcp = None;
                leg.rtcp_crypto = None;
                if let Some(d) = leg.dtls.as_mut()
                    && let Some(c) = d.rtcp.take()
                {
                    self.counters.dtls.release(u64::from(c.session.is_some()));
                }
            }
        }
        if let Some(c) = u.codec {
            stream.codec = c;
            if let Some(src) = stream.source.as_mut() {
                src.set_profile(c);
            }
        }
        if let Some(p) = u.paused {
            stream.paused = p;
        }
        if let Some(m) = u.mode {
            stream.mode = m;
            if m.generates() && stream.source.is_none() {
                let start = now;
                stream.source = Some(RtpSource::new(stream.codec, start, &mut self.rng));
            }
        }
        // A generating stream keeps its pacing timer alive; a stream that stopped generating
        // lets it lapse (see `pace`). Arm a new one only when generation starts again and none
        // is pending, so a stream never has two.
        if stream.generates() && !was_generating && !stream.pace_pending {
            stream.pace_pending = true;
            self.wheel.insert(now, slot, gen_, TimerKind::Pace);
        }
        if let (Some((k, d)), Some(ctx)) = (u.dtls, dtls_ctx) {
            // A new handshake: media stops on this leg until it completes.
            let rtcp_port = stream.legs[k].rtcp_sock.is_some();
            let fresh = self.new_leg_dtls(&ctx, &d, rtcp_port, now);
            let Some(stream) = self.streams[slot as usize].as_mut() else {
                return Ok(());
            };
            let leg = &mut stream.legs[k];
            let old = leg.dtls.as_ref().map_or(0, |d| d.live());
            self.counters.dtls.release(old);
            leg.tx = None;
            leg.rx = None;
            leg.rtcp_crypto = None;
            leg.counters.tx_suite = None;
            leg.counters.rx_suite = None;
            leg.dtls = Some(fresh);
            leg.pending = false;
            leg.watch.restart(now);
            let early = leg.early_dtls.take();
            self.dtls_drive(slot, k, false, now);
            if rtcp_port {
                self.dtls_drive(slot, k, true, now);
            }
            // A ClientHello that came before this answer: the handshake starts now.
            if let Some(e) = early
                && d.role == DtlsRole::Server
            {
                let len = e.data.len().min(self.dtls_in.len());
                self.dtls_in[..len].copy_from_slice(&e.data[..len]);
                self.dtls_datagram(slot, k, false, e.from, len, now);
            }
        }
        Ok(())
    }

    fn fire_timers(&mut self, now: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for e in due.drain(..) {
            if self.gens.get(e.slot as usize) != Some(&e.gen_) {
                continue;
            }
            match e.kind {
                TimerKind::Pace => self.pace(e.slot, e.gen_, now),
                TimerKind::Rtcp => self.send_report(e.slot, e.gen_, now),
                TimerKind::Dtls { leg, rtcp } => {
                    self.dtls_timer(e.slot, usize::from(leg), rtcp, now)
                }
            }
        }
        self.due = due;
    }

    fn pace(&mut self, slot: u32, gen_: u32, now: u64) {
        let Some(stream) = self.streams[slot as usize].as_mut() else {
            return;
        };
        stream.pace_pending = false;
        if !stream.generates() {
            return; // paused or switched to recv: the timer lapses until resumed
        }
        let Some(source) = stream.source.as_mut() else {
            return;
        };
        let leg = &mut stream.legs[0];
        let suite = suite_index(leg.tx.as_ref().map(|t| t.suite()));
        // Until DTLS-SRTP has keys, generation keeps pace but nothing is sent.
        let open = leg.media_open(false);
        loop {
            if !open {
                if source.poll_packet(now, &mut self.dtls_out).is_none() {
                    break;
                }
                continue;
            }
            let Some(buf) = self.io.tx_buf() else {
                leg.counters.tx_drops += 1;
                self.counters.tx_drops += 1;
                // Skip this packet: keep pace rather than burst later.
                let mut scratch = [0u8; crate::io::BUF_SIZE];
                if source.poll_packet(now, &mut scratch).is_none() {
                    break;
                }
                continue;
            };
            let Some(len) = source.poll_packet(now, buf) else {
                break;
            };
            let len = match leg.tx.as_mut() {
                Some(tx) => match tx.protect_rtp(buf, len) {
                    Ok(l) => l,
                    Err(e) => {
                        note_tx_error(leg, e);
                        leg.counters.tx_drops += 1;
                        self.counters.tx_drops += 1;
                        continue;
                    }
                },
                None => len,
            };
            let to = if leg.connected { None } else { leg.remote };
            if to.is_none() && !leg.connected {
                leg.counters.other_drops += 1;
                self.counters.other_drops += 1;
                continue; // nowhere to send yet
            }
            self.io.send_tx(leg.rtp_sock, len, to);
            leg.counters.packets_out += 1;
            leg.counters.bytes_out += len as u64;
            self.counters.tx_packets[suite] += 1;
            self.counters.tx_bytes[suite] += len as u64;
        }
        let next = source.next_due();
        stream.pace_pending = true;
        self.wheel.insert(next, slot, gen_, TimerKind::Pace);
    }

    fn send_report(&mut self, slot: u32, gen_: u32, now: u64) {
        let ntp = self.ntp_at(now);
        let Some(stream) = self.streams[slot as usize].as_mut() else {
            return;
        };
        if !stream.reports() {
            return;
        }
        let our_ssrc = stream.our_ssrc();
        let sender = stream
            .source
            .as_ref()
            .filter(|s| s.packets > 0)
            .map(|s| SenderInfo {
                ntp,
                rtp_ts: s.last_timestamp(),
                packets: s.packets as u32,
                octets: s.payload_bytes as u32,
            });
        let interval = stream.rtcp_interval_ns;
        let leg = &mut stream.legs[0];
        let block = leg
            .remote_ssrc()
            .filter(|_| leg.recv.is_valid())
            .map(|ssrc| {
                let r = leg.recv.report(true);
                let (lsr, dlsr) = leg.last_sr.map_or((0, 0), |(lsr, at)| {
                    (lsr, (((now - at) as u128 * 65_536) / 1_000_000_000) as u32)
                });
                ReportBlock {
                    ssrc,
                    fraction_lost: r.fraction_lost,
                    cumulative_lost: r.lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                    extended_max: r.extended_max,
                    jitter: r.jitter,
                    lsr,
                    dlsr,
                }
            });
        let (sock, to) = leg.rtcp_target();
        let connected = leg.connected && leg.rtcp_sock.is_none();
        let open = leg.media_open(leg.rtcp_sock.is_some());
        // Nobody to report to until the peer is known (and the keys exist).
        if to.is_some()
            && open
            && let Some(buf) = self.io.tx_buf()
            && let Some(len) = rtcp::write_report(
                buf,
                our_ssrc,
                sender,
                block,
                self.cfg.media.cname.as_bytes(),
            )
        {
            let len = match leg.rtcp_tx() {
                Some(tx) => tx
                    .protect_rtcp(buf, len)
                    .map_err(|e| note_tx_error(leg, e))
                    .ok(),
                None => Some(len),
            };
            if let Some(len) = len {
                self.io
                    .send_tx(sock, len, if connected { None } else { to });
                leg.counters.rtcp_out += 1;
            }
        }
        let next = now + self.rtcp_delay(interval);
        self.wheel.insert(next, slot, gen_, TimerKind::Rtcp);
    }

    fn run_connects(&mut self) {
        let connects = std::mem::take(&mut self.connects);
        for &(slot, k, rtcp, peer) in &connects {
            let Some(stream) = self.streams.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some(leg) = stream.legs.get_mut(usize::from(k)) else {
                continue;
            };
            if rtcp {
                if let Some(s) = leg.rtcp_sock {
                    let _ = self.io.connect(s, peer);
                }
            } else if self.io.connect(leg.rtp_sock, peer).is_ok() {
                leg.connected = true;
            }
        }
        self.connects = connects;
        self.connects.clear();
    }

    /// One received datagram: find its stream, run it, act.
    fn on_datagram(&mut self, i: usize, now: u64, ntp: u64) {
        let meta = self.io.rx_meta(i);
        let owner = self
            .owners
            .get(meta.sock as usize)
            .copied()
            .unwrap_or(Owner::Free);
        let (slot, k, on_rtcp_port) = match owner {
            Owner::Leg { slot, leg, rtcp } => (slot, leg, rtcp),
            Owner::Shared(sp) => {
                let port = &self.shared[sp];
                let hit = port.by_addr.get(&meta.from).copied().or_else(|| {
                    let buf = self.io.rx_buf(i);
                    let ssrc = match classify(&buf[..meta.len]) {
                        PacketClass::Rtp => RtpHeader::parse(&buf[..meta.len]).ok().map(|h| h.ssrc),
                        PacketClass::Rtcp => rtcp::sender_ssrc(&buf[..meta.len]).ok(),
                        _ => None,
                    }?;
                    self.shared[sp]
                        .by_addr_ssrc
                        .get(&(meta.from, ssrc))
                        .copied()
                });
                match hit {
                    Some((slot, leg)) => (slot, leg, false),
                    None => {
                        self.counters.source_drops += 1;
                        return;
                    }
                }
            }
            Owner::Free => {
                self.counters.other_drops += 1;
                return;
            }
            Owner::Doorbell => {
                self.rings += 1;
                return;
            }
        };
        let Some(stream) = self.streams.get_mut(slot as usize).and_then(Option::as_mut) else {
            self.counters.other_drops += 1;
            return;
        };
        let buf = self.io.rx_buf(i);
        let (action, connect) = handle(
            stream,
            usize::from(k),
            on_rtcp_port,
            meta.from,
            buf,
            meta.len,
            now,
            ntp,
            &mut self.counters,
        );
        if let Some((leg, rtcp, peer)) = connect
            && self.cfg.media.connect
            && stream.legs[usize::from(leg)].shared.is_none()
        {
            self.connects.push((slot, leg, rtcp, peer));
        }
        match action {
            Action::Send { sock, len, to } => self.io.send_rx(i, sock, len, to),
            Action::Dtls => {
                let len = meta.len.min(self.dtls_in.len());
                self.dtls_in[..len].copy_from_slice(&self.io.rx_buf(i)[..len]);
                self.dtls_datagram(slot, usize::from(k), on_rtcp_port, meta.from, len, now);
            }
            Action::Drop => {}
        }
    }
}

impl Leg {
    fn remote_ssrc(&self) -> Option<u32> {
        self.counters.remote_ssrc
    }
}

/// A protect error: a key at the end of its lifetime becomes an event.
fn note_tx_error(leg: &mut Leg, e: SrtpError) {
    if e == SrtpError::LifetimeReached {
        leg.watch.lifetime(Direction::Tx);
    }
}

fn count_srtp_error(leg: &mut Leg, c: &mut Counters, e: SrtpError) {
    match e {
        SrtpError::AuthFailed => {
            leg.counters.auth_failures += 1;
            c.auth_failures += 1;
        }
        SrtpError::Replayed { .. } => {
            leg.counters.replay_drops += 1;
            c.replay_drops += 1;
        }
        SrtpError::TooShort { .. } | SrtpError::Malformed(_) => {
            leg.counters.malformed += 1;
            c.malformed += 1;
        }
        SrtpError::LifetimeReached => {
            leg.watch.lifetime(Direction::Rx);
            leg.counters.other_drops += 1;
            c.other_drops += 1;
        }
        _ => {
            leg.counters.other_drops += 1;
            c.other_drops += 1;
        }
    }
}

/// The per-packet path for one stream: demultiplex, source check, unprotect, statistics, and
/// for echo and relay the re-protect and the send decision. Runs in place on `buf`.
#[allow(clippy::too_many_arguments)]
fn handle(
    stream: &mut Stream,
    k: usize,
    on_rtcp_port: bool,
    from: SocketAddr,
    buf: &mut [u8],
    len: usize,
    now: u64,
    ntp: u64,
    c: &mut Counters,
) -> (Action, Option<(u8, bool, SocketAddr)>) {
    let mode = stream.mode;
    let clock = stream.codec.clock_rate();
    let ours = mode.reports().then(|| stream.our_ssrc());
    let class = classify(&buf[..len]);
    // DTLS on a DTLS leg goes to its handshake, after the same source check as media (on the
    // RTCP port, against the RTCP remote).
    let (is_rtcp, is_dtls) = match class {
        PacketClass::Rtp if !on_rtcp_port => (false, false),
        PacketClass::Rtcp | PacketClass::Rtp => (true, false),
        PacketClass::Dtls if stream.legs[k].dtls.is_some() => (on_rtcp_port, true),
        PacketClass::Dtls
            if !on_rtcp_port && stream.legs[k].pending && buf.first() == Some(&DTLS_HANDSHAKE) =>
        {
            // An offerer waiting for its answer: hold the latest handshake datagram (one per
            // leg, its buffer reused) for the DTLS the answer may bring.
            let leg = &mut stream.legs[k];
            leg.counters.early_drops += 1;
            c.other_drops += 1;
            let e = leg.early_dtls.get_or_insert_with(|| {
                Box::new(EarlyDtls {
                    from,
                    data: Vec::with_capacity(len),
                })
            });
            e.from = from;
            e.data.clear();
            e.data.extend_from_slice(&buf[..len]);
            return (Action::Drop, None);
        }
        PacketClass::Dtls | PacketClass::Stun | PacketClass::Zrtp | PacketClass::Turn => {
            // Not carried on this leg (no DTLS-SRTP here; STUN/ICE is not handled).
            let leg = &mut stream.legs[k];
            leg.counters.other_drops += 1;
            c.other_drops += 1;
            return (Action::Drop, None);
        }
        PacketClass::Unknown => {
            let leg = &mut stream.legs[k];
            leg.counters.malformed += 1;
            c.malformed += 1;
            return (Action::Drop, None);
        }
    };
    let leg = &mut stream.legs[k];
    if leg.pending {
        // An offerer before its answer: the keys (SDES) or the handshake (DTLS) to read this
        // are not known yet, and an unauthenticated packet must not teach us the peer.
        leg.counters.early_drops += 1;
        c.other_drops += 1;
        return (Action::Drop, None);
    }
    let expected_src = if is_rtcp && leg.rtcp_sock.is_some() {
        leg.remote_rtcp
    } else {
        leg.remote
    };
    if leg.strict && expected_src.is_some_and(|r| r != from) {
        leg.counters.source_mismatch += 1;
        c.source_drops += 1;
        return (Action::Drop, None);
    }
    if is_dtls {
        return (Action::Dtls, None);
    }
    if !leg.media_open(on_rtcp_port) {
        // DTLS-SRTP has not (or could not) set the keys up: nothing passes.
        leg.counters.dtls_drops += 1;
        c.other_drops += 1;
        return (Action::Drop, None);
    }
    let rx = leg.rx_for(on_rtcp_port);
    let rx_suite = suite_index(rx.as_ref().map(|r| r.suite()));
    // Read before unprotecting (a failed AEAD open may leave the buffer changed): plain RTCP
    // where SRTCP belongs is a peer's protocol fault, not wrong keys.
    let plain_rtcp = is_rtcp && rx.is_some() && rtcp::is_plain_compound(&buf[..len]);
    // Unprotect in place.
    let plain_len = match rx {
        Some(rx) => {
            let r = if is_rtcp {
                rx.unprotect_rtcp(buf, len)
            } else {
                rx.unprotect_rtp(buf, len)
            };
            match r {
                Ok(l) => l,
                Err(SrtpError::AuthFailed | SrtpError::Replayed { .. }) if plain_rtcp => {
                    leg.counters.rtcp_unprotected += 1;
                    c.other_drops += 1;
                    return (Action::Drop, None);
                }
                Err(e) => {
                    count_srtp_error(leg, c, e);
                    return (Action::Drop, None);
                }
            }
        }
        None => len,
    };
    c.rx_packets[rx_suite] += 1;
    c.rx_bytes[rx_suite] += len as u64;
    if let Some(d) = leg.dtls.as_mut()
        && d.lingering
    {
        // The peer protects with the keys: a server's session has nothing left to answer.
        c.dtls.release(d.release_lingering());
    }
    // The packet authenticated (or is well-formed plain RTP below): latch the source.
    let mut connect: Option<(u8, bool, SocketAddr)> = None;
    if is_rtcp {
        // Report blocks about us give the round trip (only streams that send reports ask).
        let Ok(summary) = rtcp::parse_compound(&buf[..plain_len], ours) else {
            leg.counters.malformed += 1;
            c.malformed += 1;
            return (Action::Drop, connect);
        };
        leg.counters.rtcp_in += 1;
        if leg.rtcp_sock.is_some() {
            if leg.remote_rtcp != Some(from) {
                leg.remote_rtcp = Some(from);
                connect = Some((k as u8, true, from));
            }
        } else if leg.remote != Some(from) {
            if leg.remote.is_some() {
                leg.counters.remote_changes += 1;
            }
            leg.remote = Some(from);
            connect = Some((k as u8, false, from));
        }
        if let Some(si) = summary.sender_info {
            leg.last_sr = Some((rtcp::ntp_middle(si.ntp), now));
        }
        if ours.is_some()
            && let Some(block) = summary.report
            && let Some(rtt) = rtcp::round_trip(&block, rtcp::ntp_middle(ntp))
        {
            leg.rtt_ns = Some(rtt.as_nanos() as u64);
        }
    } else {
        let hdr = match RtpHeader::parse(&buf[..plain_len]) {
            Ok(h) => h,
            Err(_) => {
                leg.counters.malformed += 1;
                c.malformed += 1;
                return (Action::Drop, connect);
            }
        };
        leg.counters.packets_in += 1;
        leg.counters.bytes_in += len as u64;
        if leg.counters.remote_ssrc != Some(hdr.ssrc) {
            if leg.counters.remote_ssrc.is_some() {
                leg.recv = crate::proto::stats::ReceiveStats::new();
            }
            leg.counters.remote_ssrc = Some(hdr.ssrc);
        }
        let arrival = ((u128::from(now) * u128::from(clock)) / 1_000_000_000) as u32;
        leg.recv.on_packet(hdr.seq, hdr.timestamp, arrival);
        if leg.remote != Some(from) {
            if leg.remote.is_some() {
                leg.counters.remote_changes += 1;
            }
            leg.remote = Some(from);
            if leg.shared.is_none() {
                connect = Some((k as u8, false, from));
            }
        }
    }
    // Forward: echo back on this leg, relay out of the other.
    let out_k = match mode {
        Mode::Echo if !is_rtcp => k,
        Mode::Relay => 1 - k,
        _ => return (Action::Drop, connect),
    };
    let out = &mut stream.legs[out_k];
    let out_rtcp_port = is_rtcp && out.rtcp_sock.is_some();
    if !out.media_open(out_rtcp_port) {
        if out.pending {
            out.counters.early_drops += 1;
        } else {
            out.counters.dtls_drops += 1;
        }
        c.other_drops += 1;
        return (Action::Drop, connect);
    }
    let out_tx = if is_rtcp {
        out.rtcp_tx()
    } else {
        out.tx.as_mut()
    };
    let out_suite = suite_index(out_tx.as_ref().map(|t| t.suite()));
    let out_len = match out_tx {
        Some(tx) => {
            let r = if is_rtcp {
                tx.protect_rtcp(buf, plain_len)
            } else {
                tx.protect_rtp(buf, plain_len)
            };
            match r {
                Ok(l) => l,
                Err(e) => {
                    note_tx_error(out, e);
                    out.counters.tx_drops += 1;
                    c.tx_drops += 1;
                    return (Action::Drop, connect);
                }
            }
        }
        None => plain_len,
    };
    let (sock, dest) = if is_rtcp {
        out.rtcp_target()
    } else {
        (out.rtp_sock, out.remote)
    };
    let Some(dest) = dest else {
        out.counters.tx_drops += 1;
        c.tx_drops += 1;
        return (Action::Drop, connect);
    };
    c.tx_packets[out_suite] += 1;
    c.tx_bytes[out_suite] += out_len as u64;
    if is_rtcp {
        out.counters.rtcp_out += 1;
    } else {
        out.counters.packets_out += 1;
        out.counters.bytes_out += out_len as u64;
    }
    // Until the socket is connected (at the end of the batch that taught us the peer), sends
    // carry the address.
    let connected = out.connected && (!is_rtcp || out.rtcp_sock.is_none());
    let to = if connected { None } else { Some(dest) };
    (
        Action::Send {
            sock,
            len: out_len,
            to,
        },
        connect,
    )
}
