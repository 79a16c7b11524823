//! The small trait through which signaling asks for media, and its two implementations:
//! the engine (over its control socket, or in this process), and signaling-only (no media at
//! all). Requests to the engine are the control protocol's own types, keys in zeroizing
//! [`Secret`]s; replies are read as the engine's types.
//!
//! [`Secret`]: srtp_engine::ctl::protocol::Secret

mod events;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
#[cfg(feature = "embedded")]
use std::sync::Arc;

use srtp_engine::ctl::api::StreamApi;
use srtp_engine::ctl::client::{ClientError, CtlClient};
use srtp_engine::ctl::protocol::{
    CodecRequest, CryptoRequest, LegRequest, StreamRequest, UpdateRequest,
};
use srtp_engine::model::{Mode, StreamInfo, StreamStats};
use srtp_engine::proto::dtls::Fingerprint;
#[cfg(feature = "embedded")]
use srtp_engine::runtime::Engine;
use thiserror::Error;

pub use events::{DtlsEvent, DtlsOutcome, EngineEvent, dtls_subscription, engine_events};

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
    /// The engine is full for now (no free port, a full worker, out of file descriptors): a
    /// call can be tried again later.
    #[error("media engine full: {0}")]
    Full(String),
}

impl From<ClientError> for MediaError {
    fn from(e: ClientError) -> Self {
        use srtp_engine::ctl::protocol::ErrorCode;
        match e.code() {
            Some(ErrorCode::PortsExhausted | ErrorCode::WorkerFull | ErrorCode::FileLimit) => {
                MediaError::Full(e.to_string())
            }
            _ => MediaError::Engine(e.to_string()),
        }
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
    /// A stream for a negotiation made by the peer's offer, whole. `held`: it sends no RTP
    /// until [`MediaEngine::sending`] (an answerer's stream, before the ACK of its 2xx).
    fn open(&mut self, n: &Negotiated, held: bool) -> Result<Allocation, MediaError>;
    /// Brings a stream to a negotiation: the offerer's answer (`prev` None), or a later
    /// offer/answer (re-INVITE, UPDATE) that changed any of the peer's address, keys or DTLS
    /// fingerprint, rtcp-mux or direction (`prev` the negotiation in force).
    fn apply(
        &mut self,
        stream: StreamRef,
        n: &Negotiated,
        prev: Option<&Negotiated>,
    ) -> Result<(), MediaError>;
    /// A stream's statistics (None: no media plane).
    fn stats(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError>;
    /// Starts sending on a held stream (the ACK came), or stops sending on a stream that goes
    /// on receiving: a hangup, before its BYE, so the peer gets nothing after it has closed
    /// its side (RFC 3261 15: media ends with the BYE).
    fn sending(&mut self, stream: StreamRef, on: bool) -> Result<(), MediaError>;
    /// Removes a stream, returning its final statistics (None: no media plane).
    fn close(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError>;
    /// Times this client reconnected to a restarted engine.
    fn reconnects(&self) -> u64 {
        0
    }
}

/// The engine's crypto for a negotiation.
pub fn engine_crypto(n: &Negotiated) -> CryptoRequest {
    match &n.crypto {
        MediaCrypto::None => CryptoRequest::None,
        MediaCrypto::Sdes { local, remote } => {
            let mut tx = local.engine_keys();
            // A replay window is the receiving side's.
            tx.replay_window = None;
            CryptoRequest::Sdes {
                tx,
                rx: remote.engine_keys(),
            }
        }
        MediaCrypto::Dtls {
            role,
            remote_fingerprint,
            profiles,
            ..
        } => CryptoRequest::Dtls {
            role: *role,
            fingerprint: remote_fingerprint.to_string(),
            profiles: profiles
                .as_ref()
                .map(|p| p.iter().map(|s| s.sdp_name().to_owned()).collect()),
        },
    }
}

/// The engine's stream mode for our direction.
pub fn engine_mode(d: Direction) -> Mode {
    match d {
        Direction::SendRecv => Mode::SendRecv,
        Direction::SendOnly => Mode::Send,
        Direction::RecvOnly | Direction::Inactive => Mode::Recv,
    }
}

fn engine_codec(n: &Negotiated) -> CodecRequest {
    CodecRequest {
        name: Some(n.codec.engine_name.to_owned()),
        payload_type: Some(n.codec.pt),
        ..CodecRequest::default()
    }
}

/// The `update` of `stream` that brings it from `prev` to `n` (everything, for an answer).
pub fn engine_update(
    stream: u64,
    n: &Negotiated,
    prev: Option<&Negotiated>,
    mode: Option<Mode>,
) -> UpdateRequest {
    let mut u = UpdateRequest::of(stream);
    let changed = |f: &dyn Fn(&Negotiated) -> bool| prev.is_none_or(f);
    if changed(&|p| p.remote_rtp != n.remote_rtp) {
        u.remote = Some(n.remote_rtp.to_string());
    }
    if n.rtcp_mux {
        if prev.is_none_or(|p| !p.rtcp_mux) {
            u.rtcp_mux = Some(true);
        }
    } else if let Some(r) = n.remote_rtcp
        && changed(&|p| p.remote_rtcp != n.remote_rtcp)
    {
        u.remote_rtcp = Some(r.to_string());
    }
    if changed(&|p| p.crypto != n.crypto) {
        u.crypto = Some(engine_crypto(n));
    }
    if let Some(m) = mode
        && changed(&|p| engine_mode(p.direction) != m)
    {
        u.mode = Some(m);
    }
    if prev.is_some_and(|p| p.codec != n.codec) {
        u.codec = Some(engine_codec(n));
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
    /// In this process: the same requests, checks and replies, without a socket.
    #[cfg(feature = "embedded")]
    Embedded(Arc<Engine>),
}

/// srtp-engine, over its control socket or embedded in this process.
pub struct EngineMedia {
    link: Link,
    fingerprint: Option<Fingerprint>,
    answer_mode: Option<Mode>,
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
    let hello = client.hello()?;
    let fingerprint = Fingerprint::parse(&hello.capabilities.dtls_fingerprint).ok();
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
    #[cfg(feature = "embedded")]
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
    pub fn answering_with(mut self, mode: Mode) -> EngineMedia {
        self.answer_mode = Some(mode);
        self
    }

    /// A request (`call` builds and sends it). On the socket, a broken connection (the engine
    /// stopped or restarted) is reconnected once: a request that makes a new stream is then
    /// built and sent again; one about a stream is refused, since that stream died with the
    /// old engine.
    fn request<T>(
        &mut self,
        about_a_stream: bool,
        mut call: impl FnMut(&mut dyn StreamApi) -> Result<T, ClientError>,
    ) -> Result<T, MediaError> {
        let generation = self.generation;
        let (path, client) = match &mut self.link {
            #[cfg(feature = "embedded")]
            Link::Embedded(e) => return Ok(call(e)?),
            Link::Socket { path, client } => (path, client),
        };
        if let Some(c) = client {
            match call(c) {
                Err(ClientError::Io(_)) => *client = None,
                r => return Ok(r?),
            }
        }
        let (mut c, fingerprint) = hello(path).map_err(|e| {
            MediaError::Engine(format!(
                "{e} (is the engine running at {}?)",
                path.display()
            ))
        })?;
        let retried = (!about_a_stream).then(|| call(&mut c));
        *client = Some(c);
        self.fingerprint = fingerprint;
        self.generation = generation + 1;
        self.reconnects += 1;
        tracing::warn!(
            "reconnected to the media engine at {} (reconnect {})",
            path.display(),
            self.reconnects
        );
        match retried {
            Some(r) => Ok(r?),
            None => Err(MediaError::EngineRestarted),
        }
    }

    /// A request about an existing stream: refused locally when the stream belongs to an
    /// engine that is gone.
    fn stream_request<T>(
        &mut self,
        s: StreamRef,
        call: impl FnMut(&mut dyn StreamApi) -> Result<T, ClientError>,
    ) -> Result<T, MediaError> {
        if s.generation != self.generation {
            return Err(MediaError::EngineRestarted);
        }
        self.request(true, call)
    }

    fn allocation(&self, info: StreamInfo) -> Result<Allocation, MediaError> {
        let leg = info.legs.first().ok_or_else(|| {
            MediaError::Engine(format!("stream {} was created without a leg", info.id))
        })?;
        Ok(Allocation {
            stream: StreamRef {
                id: info.id,
                generation: self.generation,
            },
            rtp: leg.local,
            rtcp: leg.local_rtcp,
            fingerprint: self.fingerprint.clone(),
        })
    }
}

impl MediaEngine for EngineMedia {
    fn prepare(&mut self) -> Result<Allocation, MediaError> {
        let info = self.request(false, |api| {
            api.create(StreamRequest {
                mode: Mode::Recv,
                legs: vec![LegRequest {
                    rtcp_mux: false,
                    crypto: CryptoRequest::Pending,
                    ..LegRequest::default()
                }],
                codec: None,
                rtcp_interval_ms: None,
                silence_ms: None,
                auth_failure_threshold: None,
                paused: None,
            })
        })?;
        self.allocation(info)
    }

    fn open(&mut self, n: &Negotiated, held: bool) -> Result<Allocation, MediaError> {
        let mode = self.answer_mode.unwrap_or(engine_mode(n.direction));
        let info = self.request(false, |api| {
            api.create(StreamRequest {
                mode,
                legs: vec![LegRequest {
                    remote: Some(n.remote_rtp.to_string()),
                    remote_rtcp: n.remote_rtcp.map(|r| r.to_string()),
                    rtcp_mux: n.rtcp_mux,
                    crypto: engine_crypto(n),
                    ..LegRequest::default()
                }],
                codec: Some(engine_codec(n)),
                rtcp_interval_ms: None,
                silence_ms: None,
                auth_failure_threshold: None,
                paused: held.then_some(true),
            })
        })?;
        self.allocation(info)
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
        if engine_update(stream.id, n, prev, mode).changes_nothing() {
            return Ok(());
        }
        self.stream_request(stream, |api| {
            api.update(engine_update(stream.id, n, prev, mode))
        })?;
        Ok(())
    }

    fn stats(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        self.stream_request(stream, |api| api.stats(stream.id))
            .map(Some)
    }

    fn sending(&mut self, stream: StreamRef, on: bool) -> Result<(), MediaError> {
        self.stream_request(stream, |api| {
            api.update(UpdateRequest {
                paused: Some(!on),
                ..UpdateRequest::of(stream.id)
            })
        })?;
        Ok(())
    }

    fn close(&mut self, stream: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        self.stream_request(stream, |api| api.delete(stream.id))
            .map(Some)
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
}

impl SignalingOnly {
    /// Media "at" `addr`, with a DTLS fingerprint to put in SDP if given.
    pub fn new(addr: IpAddr, fingerprint: Option<Fingerprint>) -> SignalingOnly {
        SignalingOnly {
            addr,
            next: 1,
            fingerprint,
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
}

impl MediaEngine for SignalingOnly {
    fn prepare(&mut self) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    fn open(&mut self, _: &Negotiated, _: bool) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    fn apply(
        &mut self,
        _: StreamRef,
        _: &Negotiated,
        _: Option<&Negotiated>,
    ) -> Result<(), MediaError> {
        Ok(())
    }
    fn stats(&mut self, _: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        Ok(None)
    }
    fn sending(&mut self, _: StreamRef, _: bool) -> Result<(), MediaError> {
        Ok(())
    }
    fn close(&mut self, _: StreamRef) -> Result<Option<StreamStats>, MediaError> {
        Ok(None)
    }
}
