//! The engine: starts the pinned workers and routes requests to the worker that owns a stream
//! (stream ids are sharded across workers: worker = id mod workers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::io::socket::raise_nofile_limit;
use crate::io::{BackendKind, IoConfig};
use crate::model::{
    Counters, Event, StreamError, StreamInfo, StreamSpec, StreamStats, StreamUpdate,
};
use crate::proto::dtls::{DtlsContext, DtlsIdentity, DtlsOptions, KeyKind};
use crate::worker::{Command, EVENT_CAPACITY, Worker, WorkerConfig};

pub use crate::worker::{MediaOptions, WorkerSnapshot, thread_cpu_us};

/// What the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Number of workers (0: one per online core).
    pub workers: usize,
    /// Cores to pin workers to, in order (empty: worker i on core i).
    pub cores: Vec<usize>,
    /// Skip pinning (tests that run several engines in one process).
    pub pin: bool,
    /// The backend to try first.
    pub backend: BackendKind,
    /// Fall back to epoll when io_uring is refused.
    pub fallback: bool,
    /// Backend tuning.
    pub io: IoConfig,
    /// Sockets, ports and stream defaults, shared by every worker.
    pub media: MediaOptions,
    /// The DTLS-SRTP certificate and handshake timings.
    pub dtls: DtlsSettings,
}

/// Where the engine's DTLS certificate comes from, and the handshake timings.
#[derive(Debug, Clone, Default)]
pub struct DtlsSettings {
    /// Certificate and private key PEM files (None: generate one at start).
    pub pem: Option<(String, String)>,
    /// An identity to use as is (wins over `pem`; tests and embedders share one this way).
    pub identity: Option<Arc<DtlsIdentity>>,
    /// The kind of key generated when neither is given.
    pub key: KeyKind,
    /// Timeouts, retransmission schedule, linger, MTU.
    pub options: DtlsOptions,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            workers: 0,
            cores: Vec::new(),
            pin: true,
            backend: BackendKind::IoUring,
            fallback: true,
            io: IoConfig::default(),
            media: MediaOptions::default(),
            dtls: DtlsSettings::default(),
        }
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A worker's backend could not be set up.
    #[error("worker {worker}: {source}")]
    Backend {
        /// Worker index.
        worker: usize,
        /// The error.
        source: std::io::Error,
    },
    /// Pinning failed.
    #[error("worker {worker}: cannot pin to core {core}: {source}")]
    Pin {
        /// Worker index.
        worker: usize,
        /// Core.
        core: usize,
        /// The error.
        source: std::io::Error,
    },
    /// The options are inconsistent.
    #[error("{0}")]
    Invalid(String),
}

struct WorkerHandle {
    tx: Sender<Command>,
    /// The worker's doorbell address (see [`Worker::with_doorbell`]).
    bell: Option<SocketAddr>,
    thread: Mutex<Option<JoinHandle<()>>>,
    snapshot: Arc<Mutex<WorkerSnapshot>>,
}

/// A running engine.
pub struct Engine {
    workers: Vec<WorkerHandle>,
    /// Rings the workers' doorbells.
    ringer: Option<std::net::UdpSocket>,
    next_id: AtomicU64,
    backend: BackendKind,
    fallback_reason: Option<String>,
    nofile: u64,
    events: Mutex<Option<Receiver<Event>>>,
    dtls: Arc<DtlsContext>,
}

/// Engine-wide figures: every worker's snapshot and their sum.
#[derive(Debug, Clone)]
pub struct EngineSnapshot {
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Summed counters.
    pub totals: Counters,
}

impl EngineSnapshot {
    /// Active streams by mode ([`crate::model::Mode::ALL`] order), over all workers.
    pub fn streams_by_mode(&self) -> [u64; 5] {
        let mut n = [0; 5];
        for w in &self.workers {
            for (t, x) in n.iter_mut().zip(w.streams_by_mode) {
                *t += x;
            }
        }
        n
    }
}

/// Pins the calling thread to `core`.
pub fn pin_to(core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for core < CPU_SETSIZE (checked);
    // sched_setaffinity(0) applies to the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "core out of range",
            ));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // The system RNG through ring (already a dependency); a clock-derived seed if it fails.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64;
    }
    u64::from_ne_bytes(b)
}

impl Engine {
    /// The engine's DTLS certificate fingerprint (`sha-256 AB:...`), for `a=fingerprint`.
    pub fn dtls_fingerprint(&self) -> String {
        self.dtls.identity().fingerprint().to_string()
    }

    /// The DTLS context every worker uses (identity and timings).
    pub fn dtls(&self) -> &DtlsContext {
        &self.dtls
    }

    /// Raises the open-file limit, starts the workers (each opens its backend on its own thread,
    /// pinned first) and waits until all are ready.
    pub fn start(mut opts: EngineOptions) -> Result<Engine, StartError> {
        if opts.media.local_ips.is_empty() {
            return Err(StartError::Invalid("no local IP configured".into()));
        }
        let identity = match (&opts.dtls.identity, &opts.dtls.pem) {
            (Some(i), _) => Arc::clone(i),
            (None, Some((cert, key))) => Arc::new(
                DtlsIdentity::from_pem_files(cert, key)
                    .map_err(|e| StartError::Invalid(format!("dtls: {e}")))?,
            ),
            (None, None) => Arc::new(
                DtlsIdentity::generate_kind(opts.dtls.key)
                    .map_err(|e| StartError::Invalid(format!("dtls: {e}")))?,
            ),
        };
        let dtls = Arc::new(
            DtlsContext::new(identity, opts.dtls.options)
                .map_err(|e| StartError::Invalid(e.to_string()))?,
        );
        opts.media.dtls = Some(Arc::clone(&dtls));
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = if opts.workers == 0 {
            online
        } else {
            opts.workers
        };
        let nofile = raise_nofile_limit().unwrap_or_else(|_| crate::io::socket::nofile_limit().0);
        let mut workers = Vec::with_capacity(n);
        let mut backend = opts.backend;
        let mut fallback_reason = None;
        let (events_tx, events_rx) = sync_channel(EVENT_CAPACITY);
        for index in 0..n {
            let core = opts
                .pin
                .then(|| opts.cores.get(index).copied().unwrap_or(index % online));
            let (tx, rx) = channel();
            let snapshot = Arc::new(Mutex::new(WorkerSnapshot {
                index,
                core,
                ..Default::default()
            }));
            let (ready_tx, ready_rx) = channel();
            let cfg = WorkerConfig {
                index,
                count: n,
                media: opts.media.clone(),
                events: events_tx.clone(),
            };
            let snap = snapshot.clone();
            let (kind, fallback, io_cfg) = (opts.backend, opts.fallback, opts.io);
            let seed = seed();
            let thread = std::thread::Builder::new()
                .name(format!("srtp-worker-{index}"))
                .spawn(move || {
                    if let Some(core) = core
                        && let Err(e) = pin_to(core)
                    {
                        let _ = ready_tx.send(Err(StartError::Pin {
                            worker: index,
                            core,
                            source: e,
                        }));
                        return;
                    }
                    // The doorbell: a datagram to it wakes the worker for a queued command.
                    let bell = std::net::UdpSocket::bind("127.0.0.1:0")
                        .and_then(|b| b.set_nonblocking(true).map(|()| b))
                        .ok();
                    let bell_addr = bell.as_ref().and_then(|b| b.local_addr().ok());
                    let io = match crate::io::open(kind, fallback, io_cfg) {
                        Ok((io, fell_back)) => {
                            let _ = ready_tx.send(Ok((
                                io.kind(),
                                fell_back.map(|e| e.to_string()),
                                bell_addr,
                            )));
                            io
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(StartError::Backend {
                                worker: index,
                                source: e,
                            }));
                            return;
                        }
                    };
                    let worker = Worker::new(cfg, io, rx, snap, core, seed);
                    match bell {
                        Some(b) => worker.with_doorbell(b).run(),
                        None => worker.run(),
                    }
                })
                .map_err(|e| StartError::Backend {
                    worker: index,
                    source: e,
                })?;
            let ready = ready_rx.recv().unwrap_or_else(|_| {
                Err(StartError::Invalid(format!("worker {index} died at start")))
            });
            let bell = match ready {
                Ok((kind, reason, bell)) => {
                    backend = kind;
                    if reason.is_some() {
                        fallback_reason = reason;
                    }
                    bell
                }
                Err(e) => {
                    let engine = Engine {
                        workers,
                        ringer: None,
                        next_id: AtomicU64::new(1),
                        backend,
                        fallback_reason,
                        nofile,
                        events: Mutex::new(None),
                        dtls: Arc::clone(&dtls),
                    };
                    engine.stop();
                    let _ = thread.join();
                    return Err(e);
                }
            };
            workers.push(WorkerHandle {
                tx,
                bell,
                thread: Mutex::new(Some(thread)),
                snapshot,
            });
        }
        match &fallback_reason {
            Some(r) => {
                tracing::warn!(backend = backend.name(), reason = %r, "io_uring refused; using the epoll fallback")
            }
            None => tracing::info!(backend = backend.name(), workers = n, "engine started"),
        }
        let ringer = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|r| r.set_nonblocking(true).map(|()| r))
            .ok();
        Ok(Engine {
            workers,
            ringer,
            next_id: AtomicU64::new(1),
            backend,
            fallback_reason,
            nofile,
            events: Mutex::new(Some(events_rx)),
            dtls,
        })
    }

    /// Takes the receiving end of the workers' event channel (once; later calls get `None`).
    /// Until someone takes and drains it, events beyond its capacity are dropped and counted
    /// in [`Counters::events_dropped`].
    pub fn take_events(&self) -> Option<Receiver<Event>> {
        self.events.lock().ok()?.take()
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Why io_uring was not used, when the engine fell back to epoll.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The open-file limit in force.
    pub fn nofile_limit(&self) -> u64 {
        self.nofile
    }

    /// Number of workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    fn worker_of(&self, id: u64) -> &WorkerHandle {
        &self.workers[(id % self.workers.len() as u64) as usize]
    }

    /// Wakes a worker for the command just queued (a lost ring costs at most one wait).
    fn ring(&self, w: &WorkerHandle) {
        if let (Some(r), Some(b)) = (&self.ringer, w.bell) {
            let _ = r.send_to(&[1], b);
        }
    }

    fn request<T>(&self, id: u64, make: impl FnOnce(Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = channel();
        let w = self.worker_of(id);
        w.tx.send(make(tx)).ok()?;
        self.ring(w);
        rx.recv().ok()
    }

    /// Creates a stream on the next worker (round robin by id).
    pub fn create_stream(&self, spec: StreamSpec) -> Result<StreamInfo, StreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.request(id, |tx| Command::Create(id, Box::new(spec), tx))
            .unwrap_or(Err(StreamError::ShuttingDown))
    }

    /// Sends one command per item to the worker that owns its id, all before awaiting any
    /// reply (so the workers serve them in parallel), then collects the replies in order.
    fn fan_out<I, T>(
        &self,
        items: impl IntoIterator<Item = (u64, I)>,
        make: impl Fn(u64, I, Sender<Result<T, StreamError>>) -> Command,
    ) -> Vec<Result<T, StreamError>> {
        let pending: Vec<_> = items
            .into_iter()
            .map(|(id, item)| {
                let (tx, rx) = channel();
                let sent = self.worker_of(id).tx.send(make(id, item, tx)).is_ok();
                (sent, rx)
            })
            .collect();
        for w in &self.workers {
            self.ring(w);
        }
        pending
            .into_iter()
            .map(|(sent, rx)| {
                if !sent {
                    return Err(StreamError::ShuttingDown);
                }
                rx.recv().unwrap_or(Err(StreamError::ShuttingDown))
            })
            .collect()
    }

    /// Creates many streams: all requests go out before any reply is awaited, so the workers
    /// create in parallel.
    pub fn create_streams(&self, specs: Vec<StreamSpec>) -> Vec<Result<StreamInfo, StreamError>> {
        let items = specs
            .into_iter()
            .map(|spec| (self.next_id.fetch_add(1, Ordering::Relaxed), spec));
        self.fan_out(items, |id, spec, tx| {
            Command::Create(id, Box::new(spec), tx)
        })
    }

    /// Deletes a stream and returns its final statistics.
    pub fn delete_stream(&self, id: u64) -> Result<StreamStats, StreamError> {
        self.request(id, |tx| Command::Delete(id, tx))
            .unwrap_or(Err(StreamError::ShuttingDown))
    }

    /// Deletes many streams: all requests go out before any reply is awaited.
    pub fn delete_streams(&self, ids: &[u64]) -> Vec<Result<StreamStats, StreamError>> {
        self.fan_out(ids.iter().map(|&id| (id, ())), |id, (), tx| {
            Command::Delete(id, tx)
        })
    }

    /// A stream's statistics.
    pub fn stream_stats(&self, id: u64) -> Result<StreamStats, StreamError> {
        self.request(id, |tx| Command::Stats(id, tx))
            .unwrap_or(Err(StreamError::ShuttingDown))
    }

    /// Changes a stream.
    pub fn update_stream(&self, id: u64, update: StreamUpdate) -> Result<(), StreamError> {
        self.request(id, |tx| Command::Update(id, Box::new(update), tx))
            .unwrap_or(Err(StreamError::ShuttingDown))
    }

    /// Every stream's id, in no order: one small reply per worker (8 bytes a stream).
    pub fn stream_ids(&self) -> Vec<u64> {
        let rxs: Vec<_> = self
            .workers
            .iter()
            .filter_map(|w| {
                let (tx, rx) = channel();
                let sent = w.tx.send(Command::Ids(tx)).ok().map(|_| rx);
                self.ring(w);
                sent
            })
            .collect();
        rxs.into_iter()
            .filter_map(|rx| rx.recv().ok())
            .flatten()
            .collect()
    }

    /// The statistics of the streams `ids` that still exist, in that order.
    pub fn streams_stats(&self, ids: &[u64]) -> Vec<StreamStats> {
        self.fan_out(ids.iter().map(|&id| (id, ())), |id, (), tx| {
            Command::Stats(id, tx)
        })
        .into_iter()
        .filter_map(Result::ok)
        .collect()
    }

    /// Every stream's statistics (a listing of every stream at once: for a page of them, take
    /// [`Engine::stream_ids`] and [`Engine::streams_stats`]).
    pub fn list_streams(&self) -> Vec<StreamStats> {
        self.streams_stats(&self.stream_ids())
    }

    /// The workers' last published figures (at most 100 ms old).
    pub fn snapshot(&self) -> EngineSnapshot {
        let workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .map(|w| w.snapshot.lock().map(|s| s.clone()).unwrap_or_default())
            .collect();
        let mut totals = Counters::default();
        for w in &workers {
            totals.add(&w.counters);
        }
        EngineSnapshot { workers, totals }
    }

    fn stop(&self) {
        for w in &self.workers {
            let _ = w.tx.send(Command::Shutdown);
            self.ring(w);
        }
        for w in &self.workers {
            let thread = w.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }

    /// Stops the workers (they refuse new streams and publish final counters first) and
    /// returns the final figures. Requests after this fail with
    /// [`StreamError::ShuttingDown`]; calling it again returns the same figures.
    pub fn shutdown(&self) -> EngineSnapshot {
        self.stop();
        self.snapshot()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
