//! The pinned worker: one thread, one I/O backend, its own sockets, streams and timer wheel.
//!
//! Each turn: wait for datagrams (submitting last turn's sends), run every datagram through its
//! stream in place ([`crate::media`] decides; the worker only finds the stream and acts), give
//! the batch's buffers back, fire due timers (pacing, RTCP, DTLS), take commands, and every
//! 100 ms publish the counters. Nothing on this path is shared with another thread: commands
//! arrive on a channel polled once per turn, and counters are published under a lock ten
//! times a second. Stream administration (create, update, delete) is in `admin.rs`; sockets
//! and their owners in `sockets.rs`.

mod admin;
mod options;
mod sockets;
mod timers;
pub(crate) mod wheel;

pub use options::{MediaOptions, WorkerSnapshot, thread_cpu_us};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::io::socket::PortAllocator;
use crate::io::{Io, SockId};
use crate::media::stream::Stream;
use crate::media::{Action, Learned, Port};
use crate::model::{
    Counters, DropReason, Event, StreamError, StreamInfo, StreamSpec, StreamStats, StreamUpdate,
};
use crate::proto::pacer::SplitMix64;
use crate::proto::rtcp;
use crate::proto::rtp::RtpHeader;
use crate::proto::{PacketClass, classify};
use options::ntp_now;
use sockets::{LegSocks, Owner, SharedPort};
use wheel::{TimerEntry, TimerWheel};

/// How often a worker publishes its counters.
const PUBLISH_NS: u64 = 100_000_000;
/// Longest wait in one turn (bounds command latency on an idle worker).
const MAX_WAIT: Duration = Duration::from_millis(10);
/// Longest time one turn spends on commands: a batch of 10,000 creations is spread over many
/// turns so that media keeps flowing (and pacing keeps time) while it is served.
const COMMAND_BUDGET: Duration = Duration::from_millis(2);
/// Capacity of each worker's event channel.
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// A request to a worker. Replies travel on the channel inside.
pub(crate) enum Command {
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
    /// Every stream's id.
    Ids(Sender<Vec<u64>>),
    /// Change a stream.
    Update(u64, Box<StreamUpdate>, Sender<Result<(), StreamError>>),
    /// Stop accepting streams, publish final counters and exit.
    Shutdown,
}

/// A worker's settings: its place among the workers and the media options they all share.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// Worker index.
    pub(crate) index: usize,
    /// Number of workers (the port range is split between them).
    pub(crate) count: usize,
    /// Sockets and stream defaults.
    pub(crate) media: MediaOptions,
    /// Where events go (bounded; full means dropped and counted).
    pub(crate) events: SyncSender<Event>,
}

/// A stream and its legs' sockets.
struct Slot {
    stream: Stream,
    socks: [LegSocks; 2],
}

/// The worker.
pub(crate) struct Worker {
    cfg: WorkerConfig,
    io: Box<dyn Io>,
    slots: Vec<Option<Slot>>,
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
    connects: Vec<Learned>,
    connect_slots: Vec<u32>,
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

impl Worker {
    /// A worker on `io`, taking commands from `commands`, publishing into `snapshot`.
    pub(crate) fn new(
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
            slots: Vec::new(),
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
            connect_slots: Vec::new(),
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
    pub(crate) fn with_doorbell(mut self, bell: std::net::UdpSocket) -> Worker {
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

    fn set_owner(&mut self, sock: SockId, owner: Owner) {
        let i = sock as usize;
        if self.owners.len() <= i {
            self.owners.resize(i + 1, Owner::Free);
        }
        self.owners[i] = owner;
    }

    /// Sends an event, counting it when nobody drains the channel.
    fn emit(&mut self, e: Event) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.cfg.events.try_send(e)
        {
            self.counters.events_dropped += 1;
        }
    }

    /// Runs until a shutdown command (or the command channel closing).
    pub(crate) fn run(mut self) {
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
            if now - self.last_sweep >= crate::media::quality::SWEEP_NS {
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
        for s in self.slots.iter().flatten() {
            by_mode[s.stream.mode.index()] += 1;
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
        for s in self.slots.iter_mut().flatten() {
            s.stream.sweep(now, |e| {
                if tx.try_send(e).is_err() {
                    *dropped += 1;
                }
            });
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
                        .and_then(|&slot| self.slots[slot as usize].as_mut())
                        .map(|s| s.stream.stats())
                        .ok_or(StreamError::NoSuchStream(id));
                    let _ = reply.send(r);
                }
                Command::Ids(reply) => {
                    let _ = reply.send(self.by_id.keys().copied().collect());
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

    /// A peer learned from an authenticated packet: its socket is connected at the end of the
    /// batch (a connect is a syscall; one per learning, not per packet).
    fn learned(&mut self, slot: u32, l: Learned) {
        if self.cfg.media.connect {
            self.connects.push(l);
            self.connect_slots.push(slot);
        }
    }

    fn run_connects(&mut self) {
        for (l, slot) in self.connects.drain(..).zip(self.connect_slots.drain(..)) {
            let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some(socks) = s.socks.get_mut(usize::from(l.leg)) else {
                continue;
            };
            if socks.shared.is_some() {
                continue;
            }
            match (l.port, socks.rtcp) {
                (Port::Rtcp, Some(rtcp)) => {
                    let _ = self.io.connect(rtcp, l.peer);
                }
                (Port::Rtcp, None) => {}
                (Port::Rtp, _) => {
                    if self.io.connect(socks.rtp, l.peer).is_ok() {
                        socks.connected = true;
                    }
                }
            }
        }
    }

    /// Finds the stream a datagram on a shared port belongs to: by source address, else by
    /// source and SSRC.
    fn shared_lookup(
        &mut self,
        sp: usize,
        i: usize,
        from: SocketAddr,
        len: usize,
    ) -> Option<(u32, u8)> {
        let port = &self.shared[sp];
        if let Some(&hit) = port.by_addr.get(&from) {
            return Some(hit);
        }
        let buf = self.io.rx_buf(i);
        let ssrc = match classify(&buf[..len]) {
            PacketClass::Rtp => RtpHeader::parse(&buf[..len]).ok().map(|h| h.ssrc),
            PacketClass::Rtcp => rtcp::sender_ssrc(&buf[..len]).ok(),
            _ => None,
        }?;
        self.shared[sp].by_addr_ssrc.get(&(from, ssrc)).copied()
    }

    /// One received datagram: find its stream, run it, act.
    fn on_datagram(&mut self, i: usize, now: u64, ntp: u64) {
        let meta = self.io.rx_meta(i);
        let owner = self
            .owners
            .get(meta.sock as usize)
            .copied()
            .unwrap_or(Owner::Free);
        let (slot, k, port) = match owner {
            Owner::Leg { slot, leg, rtcp } => (slot, leg, Port::of(rtcp)),
            Owner::Shared(sp) => match self.shared_lookup(sp, i, meta.from, meta.len) {
                Some((slot, leg)) => (slot, leg, Port::Rtp),
                None => {
                    self.counters.drops.add(DropReason::NoStream);
                    return;
                }
            },
            Owner::Free => {
                self.counters.drops.add(DropReason::Closed);
                return;
            }
            Owner::Doorbell => {
                self.rings += 1;
                return;
            }
        };
        let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            self.counters.drops.add(DropReason::Closed);
            return;
        };
        let buf = self.io.rx_buf(i);
        let (action, learned) = s.stream.on_datagram(
            usize::from(k),
            port,
            meta.from,
            buf,
            meta.len,
            now,
            ntp,
            &mut self.counters,
        );
        match action {
            Action::Send { leg, port, len, to } => {
                let (sock, to) = s.socks[usize::from(leg).min(1)].route(port, to);
                self.io.send_rx(i, sock, len, to);
            }
            Action::Handshake => {
                let len = meta.len.min(self.dtls_in.len());
                self.dtls_in[..len].copy_from_slice(&self.io.rx_buf(i)[..len]);
                self.dtls_datagram(slot, usize::from(k), port, meta.from, len, now);
            }
            Action::Drop => {}
        }
        if let Some(l) = learned {
            self.learned(slot, l);
        }
    }
}
