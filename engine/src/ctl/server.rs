//! The control socket's server: connections, request lines, replies and events.
//!
//! Threads: one accepts connections; each connection has a reader (parses a line, runs the
//! request against the [`Engine`], queues the reply) and a writer (writes replies and events
//! in order); one hub thread drains the workers' event channel and hands each event to the
//! connections subscribed to it. None of them touches a media packet: a request reaches a
//! worker as a command on its channel, taken once per loop turn.
//!
//! Hostile input: lines are bounded ([`CtlOptions::max_line_bytes`]; longer ones are skipped
//! and answered with `line_too_long`), every failure is a typed reply on a connection that
//! stays usable, connections are bounded, and a subscriber that does not read has its events
//! dropped and counted rather than queued without end. Request bytes are zeroized once
//! handled (they may carry keys).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroize;

use super::handler;
use super::protocol::reply::ControlStats;
use super::protocol::{CtlError, ErrorCode, Request, Subscribed, parse_request, reply_line};
use crate::model::{Event, TimedEvent};
use crate::runtime::Engine;

/// Control socket settings (`[control]` in the config).
#[derive(Debug, Clone)]
pub struct CtlOptions {
    /// Socket path.
    pub path: PathBuf,
    /// Permission bits of the socket file (default 0o600: owner only).
    pub mode: u32,
    /// Group to give the socket to (with a mode such as 0o660), by name.
    pub group: Option<String>,
    /// Most connections at once.
    pub max_connections: usize,
    /// Longest request line, bytes.
    pub max_line_bytes: usize,
    /// Most streams in one `create_batch` or `delete_batch`.
    pub max_batch: usize,
    /// Events queued for one subscriber before further events to it are dropped.
    pub max_queued_events: usize,
    /// A connection that sends no request within this long of opening is closed: idle
    /// connections would otherwise hold `max_connections` against everyone else.
    pub first_request_timeout: std::time::Duration,
}

impl Default for CtlOptions {
    fn default() -> CtlOptions {
        CtlOptions {
            path: PathBuf::from("/tmp/srtp-engine.sock"),
            mode: 0o600,
            group: None,
            max_connections: 32,
            max_line_bytes: 16 << 20,
            max_batch: 20_000,
            max_queued_events: 10_000,
            first_request_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CtlStartError {
    /// Another process answers on the path.
    #[error("{0}: another engine is listening on this control socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0}: exists and is not a socket; remove it or choose control.path")]
    NotASocket(PathBuf),
    /// The group does not exist.
    #[error("control.group: no group named {0:?}")]
    NoSuchGroup(String),
    /// bind, chmod or chown failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Figures about the control socket itself (in `engine_stats` and the metrics).
#[derive(Debug, Default)]
pub struct CtlCounters {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Events delivered to subscribers.
    pub events_sent: AtomicU64,
    /// Events dropped because a subscriber did not read.
    pub events_dropped: AtomicU64,
    /// Connections closed because they sent no request in time.
    pub idle_closed: AtomicU64,
}

/// What a connection's writer sends: a reply, or an event shared by every subscriber.
enum Out {
    Reply(Vec<u8>),
    Event(Arc<[u8]>),
}

struct Subscriber {
    conn: u64,
    /// Bit i set: event `Event::NAMES[i]` wanted; bit 31: `engine_stopping`.
    filter: u32,
    out: Sender<Out>,
    queued: Arc<AtomicUsize>,
}

struct Shared {
    engine: Arc<Engine>,
    opts: CtlOptions,
    subscribers: Mutex<Vec<Subscriber>>,
    counters: Arc<CtlCounters>,
    stop: AtomicBool,
    started: Instant,
    conns: Mutex<HashMap<u64, UnixStream>>,
}

/// A running control socket server.
pub struct CtlServer {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// The listening socket, to wake the accept loop on stop even when the socket file is
    /// gone (a tmp cleaner, an operator): shutting a listener down ends a blocked `accept`.
    listener: Option<UnixListener>,
    hub: Option<JoinHandle<()>>,
}

const STOPPING_BIT: u32 = 1 << 31;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn bind(opts: &CtlOptions) -> Result<UnixListener, CtlStartError> {
    let path = &opts.path;
    let io = |source| CtlStartError::Io {
        path: path.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(CtlStartError::NotASocket(path.clone()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(CtlStartError::InUse(path.clone()));
        }
        // A stale socket from an engine that did not clean up.
        std::fs::remove_file(path).map_err(io)?;
    }
    let gid = match &opts.group {
        Some(g) => Some(group_id(g).ok_or_else(|| CtlStartError::NoSuchGroup(g.clone()))?),
        None => None,
    };
    // The file is created with the umask's permissions: narrow it for the bind so that nobody
    // else can connect before the chmod below (the umask is process-wide; this runs at start,
    // before any other thread creates files).
    let old = set_umask(0o177);
    let listener = UnixListener::bind(path);
    set_umask(old);
    let listener = listener.map_err(io)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.mode & 0o777))
        .map_err(io)?;
    Ok(listener)
}

#[allow(unsafe_code)]
fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask only swaps the process's file creation mask.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

#[allow(unsafe_code)]
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut grp: libc::group = {
        // SAFETY: `group` is plain data; getgrnam_r fills it.
        unsafe { std::mem::zeroed() }
    };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size; getgrnam_r writes the
    // entry's strings into `buf` and sets `result` to `&mut grp` on success.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

impl CtlServer {
    /// Opens the socket and starts serving `engine`. The server takes the engine's event
    /// channel (see [`Engine::take_events`]).
    pub fn start(engine: Arc<Engine>, opts: CtlOptions) -> Result<CtlServer, CtlStartError> {
        let listener = bind(&opts)?;
        let events = engine.take_events();
        let shared = Arc::new(Shared {
            engine,
            opts,
            subscribers: Mutex::new(Vec::new()),
            counters: Arc::default(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            conns: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        let waker = listener.try_clone().ok();
        let accept = std::thread::Builder::new()
            .name("srtp-ctl".into())
            .spawn(move || accept_loop(&s, listener))
            .map_err(|e| CtlStartError::Io {
                path: shared.opts.path.clone(),
                source: e,
            })?;
        let hub = match events {
            Some(rx) => {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name("srtp-ctl-events".into())
                    .spawn(move || event_hub(&s, rx))
                    .ok()
            }
            None => None,
        };
        tracing::info!(path = %shared.opts.path.display(), "control socket listening");
        Ok(CtlServer {
            shared,
            accept: Some(accept),
            listener: waker,
            hub,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.shared.opts.path
    }

    /// The server's own counters (shared with the metrics endpoint).
    pub fn counters(&self) -> Arc<CtlCounters> {
        self.shared.counters.clone()
    }

    /// Tells subscribers that the engine is stopping (before the workers stop).
    pub fn announce_stopping(&self) {
        let line = TimedEvent {
            event: Event::EngineStopping {},
            time_ms: unix_ms(),
        };
        broadcast(&self.shared, STOPPING_BIT, &line);
    }

    /// Stops accepting, closes every connection and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop: shut the listener down (which works when the socket file was
        // removed), and connect for good measure.
        if let Some(l) = self.listener.take() {
            let _ = socket2::SockRef::from(&l).shutdown(std::net::Shutdown::Both);
        }
        let _ = UnixStream::connect(&self.shared.opts.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.values() {
                // Readers stop; each writer drains what is queued (engine_stopping) and closes.
                let _ = c.shutdown(std::net::Shutdown::Read);
            }
        }
        if let Some(t) = self.hub.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.opts.path);
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: UnixListener) {
    let mut next_conn = 1u64;
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of descriptors, or an aborted connection: do not spin.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        let open = shared.counters.connections.load(Ordering::SeqCst);
        if open >= shared.opts.max_connections {
            let err = CtlError::new(
                ErrorCode::TooManyConnections,
                format!("{open} control connections are open (control.max_connections); closing"),
            );
            let mut s = stream;
            let _ = s.write_all(&reply_line::<()>(&Value::Null, Err(err)));
            continue;
        }
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("srtp-ctl-{conn}"))
            .spawn(move || {
                serve(&s, conn, stream);
                s.counters.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.counters.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads lines of at most `max` bytes; a longer line is consumed and reported as too long.
struct LineReader {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    skipping: bool,
}

enum Line {
    /// A complete line (without the newline) at `buf[range]`.
    Complete(std::ops::Range<usize>),
    TooLong,
    Eof,
}

impl LineReader {
    fn new(max: usize) -> LineReader {
        LineReader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            max,
            skipping: false,
        }
    }

    /// Forgets (and zeroizes) the bytes before `start`.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf[..self.start].zeroize();
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn next(&mut self, r: &mut impl Read) -> std::io::Result<Line> {
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start + scanned..];
            if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let end = self.start + scanned + pos;
                let line = self.start..end;
                self.start = end + 1;
                if self.skipping {
                    self.skipping = false;
                    return Ok(Line::TooLong);
                }
                if line.len() > self.max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            scanned = self.buf.len() - self.start;
            if scanned > self.max {
                // Too long: drop what we have and skip to the next newline.
                self.start = self.buf.len();
                self.compact();
                scanned = 0;
                self.skipping = true;
            } else {
                self.compact();
            }
            let old = self.buf.len();
            self.buf.resize(old + 64 * 1024, 0);
            let n = match r.read(&mut self.buf[old..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            if n == 0 && old == self.buf.len() {
                return Ok(Line::Eof);
            }
        }
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

fn serve(shared: &Arc<Shared>, conn: u64, stream: UnixStream) {
    let (Ok(mut read_half), Ok(write_half), Ok(registered)) =
        (stream.try_clone(), stream.try_clone(), stream.try_clone())
    else {
        return;
    };
    if let Ok(mut conns) = shared.conns.lock() {
        conns.insert(conn, registered);
    }
    let (out_tx, out_rx) = mpsc::channel::<Out>();
    let queued = Arc::new(AtomicUsize::new(0));
    // Bytes of replies written into the queue and not yet onto the socket: a client that
    // sends requests and never reads its replies is not read from either once this passes
    // MAX_UNSENT_REPLY_BYTES (back-pressure: its socket buffer fills, it blocks), instead of
    // the engine growing without bound.
    let unsent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (queued, unsent) = (queued.clone(), unsent.clone());
        std::thread::Builder::new()
            .name(format!("srtp-ctl-{conn}-w"))
            .spawn(move || write_loop(write_half, &out_rx, &queued, &unsent))
    };
    let Ok(writer) = writer else {
        return;
    };
    let mut lines = LineReader::new(shared.opts.max_line_bytes);
    let _ = read_half.set_read_timeout(Some(shared.opts.first_request_timeout));
    let mut heard = false;
    loop {
        while unsent.load(Ordering::Acquire) > MAX_UNSENT_REPLY_BYTES {
            if shared.stop.load(Ordering::SeqCst) || writer.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let reply = match lines.next(&mut read_half) {
            Ok(Line::Complete(range)) => {
                if !heard {
                    heard = true;
                    let _ = read_half.set_read_timeout(None);
                }
                let reply = handle_line(shared, conn, &lines.buf[range.clone()], &out_tx, &queued);
                lines.buf[range].zeroize();
                match reply {
                    Some(r) => r,
                    None => continue,
                }
            }
            Ok(Line::TooLong) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                reply_line::<()>(
                    &Value::Null,
                    Err(CtlError::new(
                        ErrorCode::LineTooLong,
                        format!(
                            "request longer than {} bytes (control.max_line_bytes); skipped",
                            shared.opts.max_line_bytes
                        ),
                    )),
                )
            }
            Ok(Line::Eof) => break,
            Err(e) => {
                if !heard
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                {
                    tracing::debug!(conn, "control connection sent nothing: closed");
                    shared.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        };
        unsent.fetch_add(reply.len(), Ordering::AcqRel);
        if out_tx.send(Out::Reply(reply)).is_err() {
            break;
        }
    }
    if let Ok(mut subs) = shared.subscribers.lock() {
        subs.retain(|s| s.conn != conn);
    }
    if let Ok(mut conns) = shared.conns.lock() {
        conns.remove(&conn);
    }
    drop(out_tx);
    let _ = writer.join();
}

/// Reply bytes one connection may have waiting to be written before its requests wait.
const MAX_UNSENT_REPLY_BYTES: usize = 1 << 20;

fn write_loop(mut w: UnixStream, rx: &Receiver<Out>, queued: &AtomicUsize, unsent: &AtomicUsize) {
    while let Ok(out) = rx.recv() {
        let ok = match out {
            Out::Reply(line) => {
                let ok = w.write_all(&line).is_ok();
                unsent.fetch_sub(line.len(), Ordering::AcqRel);
                ok
            }
            Out::Event(line) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                w.write_all(&line).is_ok()
            }
        };
        if !ok {
            break;
        }
    }
    let _ = w.shutdown(std::net::Shutdown::Both);
}

/// A reply's result, serialized once it is known.
fn result<T: Serialize>(r: Result<T, CtlError>) -> Result<Value, CtlError> {
    r.map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
}

/// Runs one request line and returns its reply; `None` for a blank line, which is not a
/// request.
fn handle_line(
    shared: &Arc<Shared>,
    conn: u64,
    line: &[u8],
    out: &Sender<Out>,
    queued: &Arc<AtomicUsize>,
) -> Option<Vec<u8>> {
    // Blank lines are allowed between requests (telnet, scripts).
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (id, request) = parse_request(line);
    let r = request.and_then(|req| run(shared, conn, req, out, queued));
    if r.is_err() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    Some(reply_line(&id, r))
}

fn run(
    shared: &Arc<Shared>,
    conn: u64,
    req: Request,
    out: &Sender<Out>,
    queued: &Arc<AtomicUsize>,
) -> Result<Value, CtlError> {
    let engine = &shared.engine;
    let opts = &shared.opts;
    let check_batch = |n: usize| {
        if n > opts.max_batch {
            return Err(CtlError::new(
                ErrorCode::BatchTooLarge,
                format!(
                    "{n} streams in one batch; at most {} (control.max_batch)",
                    opts.max_batch
                ),
            ));
        }
        Ok(())
    };
    match req {
        Request::Hello {} => result(Ok(handler::hello(
            engine,
            opts.max_line_bytes,
            opts.max_batch,
        ))),
        Request::Create(r) => result(handler::create(engine, r)),
        Request::Update(r) => result(handler::update(engine, r)),
        Request::Delete { stream } => result(handler::delete(engine, stream)),
        Request::Stats { stream } => result(handler::stats(engine, stream)),
        Request::CreateBatch { streams } => {
            check_batch(streams.len())?;
            result(Ok(handler::create_batch(engine, streams)))
        }
        Request::DeleteBatch { streams } => {
            check_batch(streams.len())?;
            result(Ok(handler::delete_batch(engine, &streams)))
        }
        Request::Streams { offset, limit } => result(Ok(handler::streams(engine, offset, limit))),
        Request::EngineStats {} => {
            let c = &shared.counters;
            let control = ControlStats {
                connections: c.connections.load(Ordering::Relaxed),
                requests: c.requests.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                events_sent: c.events_sent.load(Ordering::Relaxed),
            };
            result(Ok(handler::engine_stats(
                engine,
                &engine.snapshot(),
                shared.started.elapsed().as_secs_f64(),
                control,
                c.events_dropped.load(Ordering::Relaxed),
            )))
        }
        Request::Subscribe { events } => {
            let mut filter = STOPPING_BIT;
            let names: Vec<String> = match events {
                None => {
                    filter |= (1 << Event::NAMES.len()) - 1;
                    Event::NAMES.iter().map(|s| (*s).to_string()).collect()
                }
                Some(list) => {
                    for name in &list {
                        let bit = Event::NAMES.iter().position(|n| n == name).ok_or_else(|| {
                            CtlError::new(
                                ErrorCode::InvalidArgument,
                                format!(
                                    "events: {} is not an event ({})",
                                    super::protocol::shown(name),
                                    Event::NAMES.join(", ")
                                ),
                            )
                        })?;
                        filter |= 1 << bit;
                    }
                    list
                }
            };
            let mut subs = shared
                .subscribers
                .lock()
                .map_err(|_| CtlError::new(ErrorCode::Io, "subscriber table poisoned"))?;
            subs.retain(|s| s.conn != conn);
            subs.push(Subscriber {
                conn,
                filter,
                out: out.clone(),
                queued: queued.clone(),
            });
            result(Ok(Subscribed { events: names }))
        }
        Request::Unsubscribe {} => {
            if let Ok(mut subs) = shared.subscribers.lock() {
                subs.retain(|s| s.conn != conn);
            }
            Ok(Value::Object(serde_json::Map::new()))
        }
    }
}

fn broadcast(shared: &Shared, bit: u32, event: &TimedEvent) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    let line: Arc<[u8]> = line.into();
    let Ok(subs) = shared.subscribers.lock() else {
        return;
    };
    for s in subs.iter().filter(|s| s.filter & bit != 0) {
        if s.queued.load(Ordering::Relaxed) >= shared.opts.max_queued_events {
            shared
                .counters
                .events_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        s.queued.fetch_add(1, Ordering::Relaxed);
        if s.out.send(Out::Event(line.clone())).is_ok() {
            shared.counters.events_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            s.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn event_hub(shared: &Shared, rx: Receiver<Event>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let ev = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let bit = 1u32 << ev.index();
        let timed = TimedEvent {
            event: ev,
            time_ms: unix_ms(),
        };
        broadcast(shared, bit, &timed);
    }
}
