//! The small trait through which signaling asks for media, and its two implementations:
//! the engine over its control socket, and signaling-only (no media at all).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use srtp_engine::ctl::client::{ClientError, CtlClient};
use srtp_engine::proto::dtls::Fingerprint;
use srtp_engine::runtime::Engine;
use thiserror::Error;

use crate::sdp::{Direction, MediaCrypto, Negotiated};

/// Why media could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MediaError {
    /// The engine refused or could not be reached: its reason, verbatim.
    #[error("media engine: {0}")]
    Engine(String),
    /// The engine restarted since this stream was made: the stream is gone with it.
    #[error("the media engine restarted: this call's stream is gone")]
    EngineRestarted,
}

impl From<ClientError> for MediaError {
    fn from(e: ClientError) -> Self {
        MediaError::Engine(e.to_string())
    }
}

/// A stream, and the engine it lives in: after a reconnect to a restarted engine, streams of
/// the old one are refused locally, so that a new stream that reuses an old id is never
/// touched by a call that does not own it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// The engine's stream id.
    pub id: u64,
    /// Which connection to the engine made it (counts reconnects).
    pub generation: u32,
}

/// Local media addresses of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The engine's stream.
    pub stream: StreamRef,
    /// RTP address.
    pub rtp: SocketAddr,
    /// RTCP address, when the stream has an RTCP port.
    pub rtcp: Option<SocketAddr>,
    /// The engine's DTLS certificate fingerprint, for `a=fingerprint` (None without DTLS).
    pub fingerprint: Option<Fingerprint>,
}

/// What signaling needs from a media plane. Calls are short requests; an implementation may
/// block briefly, so callers run it off their async tasks.
pub trait MediaEngine: Send {
    /// An offerer's stream before the answer: ports allocated, nothing sent, and what arrives
    /// dropped (it cannot be authenticated, and must not teach the stream its peer) until
    /// [`MediaEngine::apply`] brings the answer. It always has an RTCP port: when we offer
    /// rtcp-mux and the answer declines it, RTCP needs a port of its own (RFC 5761 5.1.1).
    fn prepare(&mut self) -> Result<Allocation, MediaError>;
    /// An answerer's stream, whole.
    fn open(&mut self, n: &Negotiated) -> Result<Allocation, MediaError>;
    /// Brings a stream to a negotiation: the offerer's answer (`prev` None), or a later
    /// offer/answer (re-INVITE, UPDATE) that changed any of the peer's address, keys or DTLS
    /// fingerprint, rtcp-mux or direction (`prev` the negotiation in force).
    fn apply(
        &mut self,
        stream: StreamRef,
        n: &Negotiated,
        prev: Option<&Negotiated>,
    ) -> Result<(), MediaError>;
    /// A stream's statistics (the engine's `stats` shape).
    fn stats(&mut self, stream: StreamRef) -> Result<Value, MediaError>;
    /// Stops sending on a stream that goes on receiving: a hangup, before its BYE, so the
    /// peer gets nothing after it has closed its side (RFC 3261 15: media ends with the BYE).
    fn stop_sending(&mut self, stream: StreamRef) -> Result<(), MediaError>;
    /// Removes a stream, returning its final statistics.
    fn close(&mut self, stream: StreamRef) -> Result<Value, MediaError>;
    /// Times this client reconnected to a restarted engine.
    fn reconnects(&self) -> u64 {
        0
    }
}

/// The engine's `crypto` object for a negotiation.
pub fn engine_crypto(n: &Negotiated) -> Value {
    match &n.crypto {
        MediaCrypto::None => json!({"type": "none"}),
        MediaCrypto::Sdes { local, remote } => {
            let mut rx = remote.engine_keys();
            if let Some(w) = remote.wsh {
                rx["replay_window"] = w.clamp(64, 32768).into();
            }
            json!({"type": "sdes", "tx": local.engine_keys(), "rx": rx})
        }
        MediaCrypto::Dtls {
            role,
            remote_fingerprint,
            ..
        } => {
            json!({"type": "dtls", "role": role.name(), "fingerprint": remote_fingerprint.to_string()})
        }
    }
}

/// The engine's stream mode for our direction.
pub fn engine_mode(d: Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "send",
        Direction::RecvOnly | Direction::Inactive => "recv",
    }
}

/// The `update` that brings a stream from `prev` to `n` (everything, for an answer).
pub fn engine_update(n: &Negotiated, prev: Option<&Negotiated>, mode: Option<&str>) -> Value {
    let mut u = json!({});
    let changed = |f: &dyn Fn(&Negotiated) -> bool| prev.is_none_or(f);
    if changed(&|p| p.remote_rtp != n.remote_rtp) {
        u["remote"] = n.remote_rtp.to_string().into();
    }
    if n.rtcp_mux {
        if prev.is_none_or(|p| !p.rtcp_mux) {
            u["rtcp_mux"] = true.into();
        }
    } else if let Some(r) = n.remote_rtcp
        && changed(&|p| p.remote_rtcp != n.remote_rtcp)
    {
        u["remote_rtcp"] = r.to_string().into();
    }
    if changed(&|p| p.crypto != n.crypto) {
        u["crypto"] = engine_crypto(n);
    }
    if let Some(m) = mode
        && changed(&|p| engine_mode(p.direction) != m)
    {
        u["mode"] = m.into();
    }
    if prev.is_some_and(|p| p.codec != n.codec) {
        u["codec"] = json!({"name": n.codec.engine_name, "payload_type": n.codec.pt});
    }
    u
}

/// How [`EngineMedia`] reaches the engine.
enum Link {
    /// Over its control socket (reconnected after the engine restarts).
    Socket {
        path: PathBuf,
        client: Option<CtlClient>,
    },
    /// In this process: the same commands, checks and reply shapes, without a socket.
    Embedded(Arc<Engine>),
}

/// srtp-engine, over its control socket or embedded in this process.
pub struct EngineMedia {
    link: Link,
    fingerprint: Option<Fingerprint>,
    answer_mode: Option<&'static str>,
    generation: u32,
    reconnects: u64,
}

impl std::fmt::Debug for EngineMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMedia")
            .field("fingerprint", &self.fingerprint)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Connects and asks the engine for its DTLS fingerprint.
fn hello(path: &Path) -> Result<(CtlClient, Option<Fingerprint>), ClientError> {
    let mut client = CtlClient::connect(path)?;
    let hello = client.request("hello", json!({}))?;
    let fingerprint = hello["capabilities"]["dtls_fingerprint"]
        .as_str()
        .and_then(|f| Fingerprint::parse(f).ok());
    Ok((client, fingerprint))
}

impl EngineMedia {
    /// Connects and asks the engine what it can do.
    pub fn connect(path: &Path) -> Result<EngineMedia, MediaError> {
        let (client, fingerprint) = hello(path)?;
        Ok(EngineMedia {
            link: Link::Socket {
                path: path.to_owned(),
                client: Some(client),
            },
            fingerprint,
            answer_mode: None,
            generation: 0,
            reconnects: 0,
        })
    }

    /// An engine running in this process.
    pub fn embedded(engine: Arc<Engine>) -> EngineMedia {
        let fingerprint = Fingerprint::parse(&engine.dtls_fingerprint()).ok();
        EngineMedia {
            link: Link::Embedded(engine),
            fingerprint,
            answer_mode: None,
            generation: 0,
            reconnects: 0,
        }
    }

    /// Answered streams run in this engine mode (`echo`: reflect the caller's media) instead
    /// of the one the negotiated direction gives.
    pub fn answering_with(mut self, mode: &'static str) -> EngineMedia {
        self.answer_mode = Some(mode);
        self
    }

    /// A request. On the socket, a broken connection (the engine stopped or restarted) is
    /// reconnected once: a request that makes a new stream is then sent again; one about a
    /// stream is refused, since that stream died with the old engine.
    fn request(&mut self, cmd: &str, params: Value, stream: bool) -> Result<Value, MediaError> {
        let generation = self.generation;
        match &mut self.link {
            Link::Embedded(e) => srtp_engine::ctl::execute(e, cmd, params)
                .map_err(|e| MediaError::Engine(e.to_string())),
            Link::Socket { path, client } => {
                if let Some(c) = client {
                    match c.request(cmd, params.clone()) {
                        Err(ClientError::Io(_)) => *client = None,
                        r => return Ok(r?),
                    }
                }
                let (c, fingerprint) = hello(path).map_err(|e| {
                    MediaError::Engine(format!(
                        "{e} (is the engine running at {}?)",
                        path.display()
                    ))
                })?;
                *client = Some(c);
                self.fingerprint = fingerprint;
                self.generation = generation + 1;
                self.reconnects += 1;
                tracing::warn!(
                    "reconnected to the media engine at {} (reconnect {})",
                    path.display(),
                    self.reconnects
                );
                if stream {
                    return Err(MediaError::EngineRestarted);
                }
                match &mut self.link {
                    Link::Socket {
                        client: Some(c), ..
                    } => Ok(c.request(cmd, params)?),
                    _ => Err(MediaError::EngineRestarted),
                }
            }
        }
    }

    /// A request about an existing stream: refused locally when the stream belongs to an
    /// engine that is gone.
    fn stream_request(
        &mut self,
        s: StreamRef,
        cmd: &str,
        mut params: Value,
    ) -> Result<Value, MediaError> {
        if s.generation != self.generation {
            return Err(MediaError::EngineRestarted);
        }
        params["stream"] = s.id.into();
        self.request(cmd, params, true)
    }

    fn allocation(&self, v: &Value) -> Result<Allocation, MediaError> {
        let leg = &v["legs"][0];
        let addr = |k: &str| leg[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
        Ok(Allocation {
            stream: StreamRef {
                id: v["id"]
                    .as_u64()
                    .ok_or_else(|| MediaError::Engine(format!("create reply without id: {v}")))?,
                generation: self.generation,
            },
            rtp: addr("local").ok_or_else(|| {
                MediaError::Engine(format!("create reply without a local address: {v}"))
            })?,
            rtcp: addr("local_rtcp"),
            fingerprint: self.fingerprint.clone(),
        })
    }
}

impl MediaEngine for EngineMedia {
    fn prepare(&mut self) -> Result<Allocation, MediaError> {
        let v = self.request(
            "create",
            json!({"mode": "recv", "legs": [{"rtcp_mux": false, "crypto": {"type": "pending"}}]}),
            false,
        )?;
        self.allocation(&v)
    }

    fn open(&mut self, n: &Negotiated) -> Result<Allocation, MediaError> {
        let mut leg = json!({"remote": n.remote_rtp.to_string(), "rtcp_mux": n.rtcp_mux, "crypto": engine_crypto(n)});
        if let Some(r) = n.remote_rtcp {
            leg["remote_rtcp"] = r.to_string().into();
        }
        let v = self.request(
            "create",
            json!({"mode": self.answer_mode.unwrap_or(engine_mode(n.direction)),
                   "codec": {"name": n.codec.engine_name, "payload_type": n.codec.pt},
                   "legs": [leg]}),
            false,
        )?;
        self.allocation(&v)
    }

    fn apply(
        &mut self,
        stream: StreamRef,
        n: &Negotiated,
        prev: Option<&Negotiated>,
    ) -> Result<(), MediaError> {
        // An answerer that echoes keeps its mode whatever the direction says.
        let mode = match (self.answer_mode, prev) {
            (Some(_), Some(_)) => None,
            _ => Some(engine_mode(n.direction)),
        };
        let u = engine_update(n, prev, mode);
        if u.as_object().is_some_and(|o| !o.is_empty()) {
            self.stream_request(stream, "update", u)?;
        }
        Ok(())
    }

    fn stats(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        self.stream_request(stream, "stats", json!({}))
    }

    fn stop_sending(&mut self, stream: StreamRef) -> Result<(), MediaError> {
        self.stream_request(stream, "update", json!({"paused": true}))?;
        Ok(())
    }

    fn close(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        self.stream_request(stream, "delete", json!({}))
    }

    fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

/// No media: SDP carries a placeholder address (port 9, discard) and nothing is sent. For
/// signaling-only runs and tests of the signaling layer on its own.
#[derive(Debug)]
pub struct SignalingOnly {
    addr: IpAddr,
    next: u64,
    fingerprint: Option<Fingerprint>,
    applied: Vec<(u64, Value)>,
}

impl SignalingOnly {
    /// Media "at" `addr`, with a DTLS fingerprint to put in SDP if given.
    pub fn new(addr: IpAddr, fingerprint: Option<Fingerprint>) -> SignalingOnly {
        SignalingOnly {
            addr,
            next: 1,
            fingerprint,
            applied: Vec::new(),
        }
    }

    fn alloc(&mut self) -> Allocation {
        self.next += 1;
        Allocation {
            stream: StreamRef {
                id: self.next,
                generation: 0,
            },
            rtp: SocketAddr::new(self.addr, 9),
            rtcp: None,
            fingerprint: self.fingerprint.clone(),
        }
    }

    fn figures(&self, stream: StreamRef) -> Value {
        let updates: Vec<&Value> = self
            .applied
            .iter()
            .filter(|(s, _)| *s == stream.id)
            .map(|(_, u)| u)
            .collect();
        json!({"id": stream.id, "legs": [], "updates": updates})
    }
}

impl MediaEngine for SignalingOnly {
    fn prepare(&mut self) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    fn open(&mut self, _: &Negotiated) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    /// Records the update the engine would get (tests read it back from the stats'
    /// `updates`; at most a few per stream).
    fn apply(
        &mut self,
        stream: StreamRef,
        n: &Negotiated,
        prev: Option<&Negotiated>,
    ) -> Result<(), MediaError> {
        if self.applied.len() < 10_000 {
            let mut u = engine_update(n, prev, Some(engine_mode(n.direction)));
            if let Some(c) = u.get_mut("crypto") {
                // Only the kind: the keys stay out of anything a test may print.
                *c = c["type"].clone();
            }
            self.applied.push((stream.id, u));
        }
        Ok(())
    }
    fn stats(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        Ok(self.figures(stream))
    }
    fn stop_sending(&mut self, _: StreamRef) -> Result<(), MediaError> {
        Ok(())
    }
    fn close(&mut self, stream: StreamRef) -> Result<Value, MediaError> {
        let v = self.figures(stream);
        self.applied.retain(|(s, _)| *s != stream.id);
        Ok(v)
    }
}

/// The outcome of a DTLS-SRTP handshake, as the engine reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum DtlsOutcome {
    /// Keys in place, the peer's certificate matched its fingerprint.
    Established {
        /// The SRTP profile by its SDES name.
        suite: Option<String>,
        /// From the first flight to the keys.
        handshake_ms: f64,
    },
    /// The handshake failed.
    Failed {
        /// The engine's reason (`timeout`, `fingerprint_mismatch`, `peer_alert`, ...).
        reason: String,
        /// The alert, for `peer_alert`.
        alert: Option<String>,
        /// Our role.
        role: String,
    },
}

impl DtlsOutcome {
    /// The engine's reason with its alert, verbatim: `peer_alert: handshake_failure`.
    pub fn reason(&self) -> Option<String> {
        match self {
            DtlsOutcome::Established { .. } => None,
            DtlsOutcome::Failed { reason, alert, .. } => Some(match alert {
                Some(a) => format!("{reason}: {a}"),
                None => reason.clone(),
            }),
        }
    }
}

/// A DTLS event of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DtlsEvent {
    /// The engine's stream id.
    pub stream: u64,
    /// The RTCP port's own handshake (no rtcp-mux), not the one that decides the call.
    pub rtcp: bool,
    /// What happened.
    pub outcome: DtlsOutcome,
}

impl DtlsEvent {
    /// Reads a `dtls_established` or `dtls_failed` event line; None for any other.
    pub fn from_event(v: &Value) -> Option<DtlsEvent> {
        let stream = v["stream"].as_u64()?;
        let rtcp = v["component"].as_str() == Some("rtcp");
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let outcome = match v["event"].as_str()? {
            "dtls_established" => DtlsOutcome::Established {
                suite: text("suite"),
                handshake_ms: v["handshake_ms"].as_f64().unwrap_or(0.0),
            },
            "dtls_failed" => DtlsOutcome::Failed {
                reason: text("reason").unwrap_or_else(|| "protocol".into()),
                alert: text("alert"),
                role: text("role").unwrap_or_else(|| "?".into()),
            },
            _ => return None,
        };
        Some(DtlsEvent {
            stream,
            rtcp,
            outcome,
        })
    }
}

/// What the engine watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// A DTLS outcome.
    Dtls(DtlsEvent),
    /// The engine's control socket went away (the engine stopped or crashed): every stream of
    /// it is gone.
    Lost,
    /// An engine answers on the control socket again.
    Back,
}

/// Watches an engine on a connection of its own, from a thread: its DTLS events, and when it
/// goes away and comes back (the thread reconnects while the engine restarts). Events come
/// out of the returned channel; the thread ends when the channel is dropped.
pub fn engine_events(path: &Path) -> tokio::sync::mpsc::UnboundedReceiver<EngineEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("engine-events".into())
        .spawn(move || {
            let mut was_up = true;
            while !tx.is_closed() {
                let client = CtlClient::connect(&path).and_then(|mut c| {
                    c.request(
                        "subscribe",
                        json!({"events": ["dtls_established", "dtls_failed"]}),
                    )?;
                    Ok(c)
                });
                let Ok(mut c) = client else {
                    if was_up && tx.send(EngineEvent::Lost).is_err() {
                        return;
                    }
                    was_up = false;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    continue;
                };
                if !was_up && tx.send(EngineEvent::Back).is_err() {
                    return;
                }
                was_up = true;
                loop {
                    match c.next_event(std::time::Duration::from_millis(500)) {
                        Ok(Some(v)) => {
                            if let Some(e) = DtlsEvent::from_event(&v)
                                && tx.send(EngineEvent::Dtls(e)).is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) if tx.is_closed() => return,
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no events from the engine: {e}");
    }
    rx
}
