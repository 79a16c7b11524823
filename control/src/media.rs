//! The small trait through which signaling asks for media, and its two implementations:
//! the engine over its control socket, and signaling-only (no media at all).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use srtp_engine::ctl::client::{ClientError, CtlClient};
use srtp_engine::proto::dtls::Fingerprint;
use srtp_engine::runtime::Engine;
use thiserror::Error;

use crate::sdp::{Direction, MediaCrypto, Negotiated};

/// Why media could not be set up.
#[derive(Debug, Error)]
pub enum MediaError {
    /// The engine refused or could not be reached.
    #[error("media engine: {0}")]
    Engine(String),
}

impl From<ClientError> for MediaError {
    fn from(e: ClientError) -> Self {
        MediaError::Engine(e.to_string())
    }
}

/// Local media addresses of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The engine's stream id.
    pub stream: u64,
    /// RTP address.
    pub rtp: SocketAddr,
    /// RTCP address without rtcp-mux.
    pub rtcp: Option<SocketAddr>,
}

/// What signaling needs from a media plane. Calls are short requests; an implementation may
/// block briefly.
pub trait MediaEngine: Send {
    /// The DTLS certificate fingerprint for `a=fingerprint`, if DTLS-SRTP is available.
    fn fingerprint(&self) -> Option<Fingerprint>;
    /// An offerer's stream before the answer: ports allocated, nothing sent, and what arrives
    /// dropped (it cannot be authenticated, and must not teach the stream its peer) until
    /// [`MediaEngine::complete`] brings the keys.
    fn prepare(&mut self, rtcp_mux: bool) -> Result<Allocation, MediaError>;
    /// The offerer's stream once the answer is in: peer, keys, direction.
    fn complete(&mut self, stream: u64, n: &Negotiated) -> Result<(), MediaError>;
    /// An answerer's stream, whole.
    fn open(&mut self, n: &Negotiated) -> Result<Allocation, MediaError>;
    /// A stream's statistics (the engine's `stats` shape).
    fn stats(&mut self, stream: u64) -> Result<Value, MediaError>;
    /// Stops sending on a stream that goes on receiving: a hangup, before its BYE, so the
    /// peer gets nothing after it has closed its side (RFC 3261 15: media ends with the BYE).
    fn stop_sending(&mut self, stream: u64) -> Result<(), MediaError>;
    /// Removes a stream, returning its final statistics.
    fn close(&mut self, stream: u64) -> Result<Value, MediaError>;
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

/// How [`EngineMedia`] reaches the engine.
enum Link {
    /// Over its control socket.
    Socket(CtlClient),
    /// In this process: the same commands, checks and reply shapes, without a socket.
    Embedded(Arc<Engine>),
}

/// srtp-engine, over its control socket or embedded in this process.
pub struct EngineMedia {
    link: Link,
    fingerprint: Option<Fingerprint>,
    answer_mode: Option<&'static str>,
}

impl std::fmt::Debug for EngineMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMedia")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl EngineMedia {
    /// Connects and asks the engine what it can do.
    pub fn connect(path: &Path) -> Result<EngineMedia, MediaError> {
        let mut client = CtlClient::connect(path)?;
        let hello = client.request("hello", json!({}))?;
        let fingerprint = hello["capabilities"]["dtls_fingerprint"]
            .as_str()
            .and_then(|f| Fingerprint::parse(f).ok());
        Ok(EngineMedia {
            link: Link::Socket(client),
            fingerprint,
            answer_mode: None,
        })
    }

    /// An engine running in this process.
    pub fn embedded(engine: Arc<Engine>) -> EngineMedia {
        let fingerprint = Fingerprint::parse(&engine.dtls_fingerprint()).ok();
        EngineMedia {
            link: Link::Embedded(engine),
            fingerprint,
            answer_mode: None,
        }
    }

    /// Answered streams run in this engine mode (`echo`: reflect the caller's media) instead
    /// of the one the negotiated direction gives.
    pub fn answering_with(mut self, mode: &'static str) -> EngineMedia {
        self.answer_mode = Some(mode);
        self
    }

    fn request(&mut self, cmd: &str, params: Value) -> Result<Value, MediaError> {
        match &mut self.link {
            Link::Socket(c) => Ok(c.request(cmd, params)?),
            Link::Embedded(e) => srtp_engine::ctl::execute(e, cmd, params)
                .map_err(|e| MediaError::Engine(e.to_string())),
        }
    }

    fn allocation(v: &Value) -> Result<Allocation, MediaError> {
        let leg = &v["legs"][0];
        let addr = |k: &str| leg[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
        Ok(Allocation {
            stream: v["id"]
                .as_u64()
                .ok_or_else(|| MediaError::Engine(format!("create reply without id: {v}")))?,
            rtp: addr("local").ok_or_else(|| {
                MediaError::Engine(format!("create reply without a local address: {v}"))
            })?,
            rtcp: addr("local_rtcp"),
        })
    }
}

impl MediaEngine for EngineMedia {
    fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint.clone()
    }

    fn prepare(&mut self, rtcp_mux: bool) -> Result<Allocation, MediaError> {
        let v = self.request(
            "create",
            json!({"mode": "recv", "legs": [{"rtcp_mux": rtcp_mux, "crypto": {"type": "pending"}}]}),
        )?;
        EngineMedia::allocation(&v)
    }

    fn complete(&mut self, stream: u64, n: &Negotiated) -> Result<(), MediaError> {
        self.request(
            "update",
            json!({"stream": stream, "remote": n.remote_rtp.to_string(), "crypto": engine_crypto(n),
                   "mode": engine_mode(n.direction)}),
        )?;
        Ok(())
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
        )?;
        EngineMedia::allocation(&v)
    }

    fn stats(&mut self, stream: u64) -> Result<Value, MediaError> {
        self.request("stats", json!({"stream": stream}))
    }

    fn stop_sending(&mut self, stream: u64) -> Result<(), MediaError> {
        self.request("update", json!({"stream": stream, "paused": true}))?;
        Ok(())
    }

    fn close(&mut self, stream: u64) -> Result<Value, MediaError> {
        self.request("delete", json!({"stream": stream}))
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
            stream: self.next,
            rtp: SocketAddr::new(self.addr, 9),
            rtcp: None,
        }
    }
}

impl MediaEngine for SignalingOnly {
    fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint.clone()
    }
    fn prepare(&mut self, _: bool) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    fn complete(&mut self, _: u64, _: &Negotiated) -> Result<(), MediaError> {
        Ok(())
    }
    fn open(&mut self, _: &Negotiated) -> Result<Allocation, MediaError> {
        Ok(self.alloc())
    }
    fn stats(&mut self, stream: u64) -> Result<Value, MediaError> {
        Ok(json!({"id": stream, "legs": []}))
    }
    fn stop_sending(&mut self, _: u64) -> Result<(), MediaError> {
        Ok(())
    }
    fn close(&mut self, stream: u64) -> Result<Value, MediaError> {
        Ok(json!({"id": stream, "legs": []}))
    }
}
