//! One signaling endpoint's command-line options (`answer`, `call`, `register`) and what
//! they set up: the user agent's config and its media.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use srtp_control::media::{EngineEvent, EngineMedia, MediaEngine, SignalingOnly};
use srtp_control::register::address::RegistrarAddress;
use srtp_control::sdp::{Codec, KeyMethod, SrtpPolicy};
use srtp_control::sip::log::MessageLog;
use srtp_control::sip::tls::{TlsSettings, Verify};
use srtp_control::sip::transport::Protocol;
use srtp_control::ua::{RegisterConfig, UaConfig};
use srtp_engine::proto::srtp::Suite;

#[derive(Debug, clap::Args)]
pub(crate) struct Endpoint {
    /// Transport and address to listen on: udp:127.0.0.1:5060, tcp:..., tls:...
    #[arg(long, default_value = "udp:127.0.0.1:5060")]
    pub(crate) listen: String,
    /// Our user name.
    #[arg(long, default_value = "srtp-control")]
    pub(crate) user: String,
    /// The engine's control socket; without it, signaling only (no media).
    #[arg(long)]
    pub(crate) engine: Option<PathBuf>,
    /// SRTP policy: off, offered, required.
    #[arg(long, default_value = "required")]
    pub(crate) srtp: String,
    /// Keying method: sdes, dtls, dual.
    #[arg(long, default_value = "sdes")]
    pub(crate) method: String,
    /// Enabled suites in preference order (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) suites: Vec<String>,
    /// Codecs in preference order: pcmu, pcma, g722, opus.
    #[arg(long, value_delimiter = ',')]
    pub(crate) codecs: Vec<String>,
    /// Do not offer rtcp-mux.
    #[arg(long)]
    pub(crate) no_rtcp_mux: bool,
    /// TLS: verify the server with the system trust store (system), a CA file (a path), or
    /// not at all (skip: unsafe, logged).
    #[arg(long, default_value = "system")]
    pub(crate) verify: String,
    /// TLS certificate (PEM): ours as a server, and as a client for mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// As a TLS server, require client certificates from this CA (mutual TLS).
    #[arg(long)]
    pub(crate) client_ca: Option<PathBuf>,
    /// Digest credentials for challenges: user:password.
    #[arg(long)]
    pub(crate) auth: Option<String>,
    /// As answerer, challenge INVITEs: realm:password.
    #[arg(long)]
    pub(crate) challenge: Option<String>,
    /// Write every SIP message sent and received to this file (SDES keys redacted).
    #[arg(long)]
    pub(crate) sip_log: Option<PathBuf>,
    /// Register with this registrar (host:port, over --listen's transport) while running, so
    /// that calls to our address of record reach us; --auth answers its challenges.
    #[arg(long)]
    pub(crate) register: Option<String>,
    /// The domain of our address of record (sip:<user>@<domain>) when registering (default:
    /// the registrar's host).
    #[arg(long)]
    pub(crate) domain: Option<String>,
    /// Registration lifetime asked for, seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) expires: u32,
    /// SIP timer T1 in milliseconds (RFC 3261: 500; retransmissions start at T1, a request
    /// is given up after 64*T1).
    #[arg(long, default_value_t = 500)]
    pub(crate) t1_ms: u64,
}

pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    T::deserialize(v.into_deserializer())
        .map_err(|_: serde::de::value::Error| format!("bad --{what} '{v}'"))
}

/// What an endpoint runs with.
pub(crate) struct Setup {
    pub(crate) cfg: UaConfig,
    pub(crate) media: Box<dyn MediaEngine>,
    pub(crate) dtls: Option<tokio::sync::mpsc::UnboundedReceiver<EngineEvent>>,
}

pub(crate) fn config(ep: &Endpoint) -> Result<Setup, String> {
    let (proto, addr) = ep
        .listen
        .split_once(':')
        .ok_or("--listen is <udp|tcp|tls>:<ip>:<port>")?;
    let protocol = Protocol::parse(proto).ok_or_else(|| format!("unknown transport '{proto}'"))?;
    let listen: SocketAddr = addr
        .parse()
        .map_err(|_| format!("bad --listen address '{addr}'"))?;
    let mut cfg = UaConfig::new(&ep.user, protocol, listen);
    cfg.security.policy = parse_enum::<SrtpPolicy>("srtp", &ep.srtp)?;
    cfg.security.method = parse_enum::<KeyMethod>("method", &ep.method)?;
    if !ep.suites.is_empty() {
        cfg.security.suites = ep
            .suites
            .iter()
            .map(|s| Suite::from_sdp_name(s).ok_or_else(|| format!("unknown suite '{s}'")))
            .collect::<Result<_, _>>()?;
    }
    if !ep.codecs.is_empty() {
        cfg.security.codecs = ep
            .codecs
            .iter()
            .map(|c| Codec::by_name(c).ok_or_else(|| format!("unknown codec '{c}'")))
            .collect::<Result<_, _>>()?;
    }
    cfg.security.rtcp_mux = !ep.no_rtcp_mux;
    if !(10..=60_000).contains(&ep.t1_ms) {
        return Err(format!("--t1-ms {} is outside 10-60000", ep.t1_ms));
    }
    cfg.timers.t1 = Duration::from_millis(ep.t1_ms);
    cfg.tls = TlsSettings {
        verify: Verify::from_setting(&ep.verify),
        identity: ep.tls_cert.clone().zip(ep.tls_key.clone()),
        client_ca: ep.client_ca.clone(),
    };
    let split = |v: &str, what: &str| {
        v.split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| format!("--{what} is a:b"))
    };
    cfg.credentials = ep.auth.as_deref().map(|v| split(v, "auth")).transpose()?;
    cfg.challenge = ep
        .challenge
        .as_deref()
        .map(|v| split(v, "challenge"))
        .transpose()?;
    if let Some(p) = &ep.sip_log {
        cfg.log = MessageLog::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(address) = &ep.register {
        let spec = RegistrarAddress {
            name: address,
            address,
            domain: ep.domain.as_deref(),
            ..RegistrarAddress::default()
        }
        .spec(protocol)
        .map_err(|e| format!("--register: {e}"))?;
        cfg.register = Some(RegisterConfig {
            registrars: vec![spec],
            expires: ep.expires,
        });
    }
    let (media, dtls): (Box<dyn MediaEngine>, _) = match &ep.engine {
        Some(sock) => (
            Box::new(EngineMedia::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?),
            Some(srtp_control::media::engine_events(sock)),
        ),
        None => (Box::new(SignalingOnly::new(listen.ip(), None)), None),
    };
    Ok(Setup { cfg, media, dtls })
}
