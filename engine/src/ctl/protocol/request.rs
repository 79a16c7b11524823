//! Requests as they arrive, and their checks: serde checks the shape (unknown fields are
//! errors), then [`StreamRequest::into_spec`] checks the values and names the field at fault.
//! Keys are base64 `key || salt` as in SDES (RFC 4568); they live in [`Secret`] (zeroized on
//! drop, redacted in Debug) and never appear in a reply or a log.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::error::{CtlError, ErrorCode};
use crate::model::{
    Crypto, DtlsSpec, LegSpec, Mode, SocketModel, StreamSpec, StreamUpdate, WatchOverrides,
};
use crate::proto::dtls::Fingerprint;
use crate::proto::pacer::{Codec, CodecProfile};
use crate::proto::srtp::{MasterKey, SrtpPolicy, Suite};

/// A secret string from a request (a base64 key): zeroized on drop, never printed.
pub struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(|s| Secret(Zeroizing::new(s)))
    }
}

impl Secret {
    /// Wraps a secret (for clients building requests).
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// One master key of an SDES direction.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// base64 of `key || salt` (the SDES inline key).
    pub key: Secret,
    /// MKI value (needs `mki_len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mki: Option<u32>,
    /// MKI length in bytes, 1-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mki_len: Option<u8>,
    /// Master key lifetime in packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
}

impl KeyRequest {
    /// One master key, `key || salt`, with nothing else set.
    pub fn new(key_and_salt: &[u8]) -> KeyRequest {
        KeyRequest {
            key: Secret::new(base64::engine::general_purpose::STANDARD.encode(key_and_salt)),
            mki: None,
            mki_len: None,
            lifetime: None,
        }
    }
}

/// SDES crypto for one direction.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdesRequest {
    /// Suite name as in SDP (`AES_CM_128_HMAC_SHA1_80`, ...).
    pub suite: String,
    /// The master keys (one, or several with MKIs).
    pub keys: Vec<KeyRequest>,
    /// Replay window in packets (receive direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window: Option<u32>,
    /// Key derivation rate (0 or a power of two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdr: Option<u32>,
}

pub use crate::proto::dtls::DtlsRole;

/// A leg's crypto.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CryptoRequest {
    /// Plain RTP.
    #[default]
    None,
    /// SDES keys per direction.
    Sdes {
        /// What the leg sends.
        tx: SdesRequest,
        /// What the leg receives.
        rx: SdesRequest,
    },
    /// DTLS-SRTP keyed by a handshake on the media port (and on the RTCP port without
    /// rtcp-mux).
    Dtls {
        /// Our role: `client` (`a=setup:active`) or `server` (`a=setup:passive`).
        role: DtlsRole,
        /// The peer's certificate fingerprint from SDP (`sha-256 AB:CD:...`).
        fingerprint: String,
        /// The SRTP profiles this leg may negotiate, by suite name, in preference order
        /// (absent: every profile the engine has).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profiles: Option<Vec<String>>,
    },
    /// The keys come with a later `update` (an SDP offerer waiting for its answer): until
    /// then the leg sends nothing and drops what arrives (`early_drops`), without learning
    /// the peer's address from it. Only when creating a stream.
    Pending,
}

impl SdesRequest {
    /// One master key of `suite`, `key || salt`.
    pub fn with_key(suite: Suite, key_and_salt: &[u8]) -> SdesRequest {
        SdesRequest {
            suite: suite.sdp_name().to_owned(),
            keys: vec![KeyRequest::new(key_and_salt)],
            replay_window: None,
            kdr: None,
        }
    }
}

/// One leg of a stream request.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegRequest {
    /// Local IP (default: the engine's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    /// The peer's RTP address, `ip:port` (learned from media when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The peer's RTCP address when not muxed (default: RTP port + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_rtcp: Option<String>,
    /// RTP and RTCP on one port (RFC 5761). Default false (a second port for RTCP).
    #[serde(default)]
    pub rtcp_mux: bool,
    /// `per_stream` (default) or `shared`.
    #[serde(default)]
    pub socket: SocketModel,
    /// Drop media not from the signalled address (default: the engine's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_source: Option<bool>,
    /// The peer's SSRC (needed when several shared-port streams have one remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ssrc: Option<u32>,
    /// Crypto (default none).
    #[serde(default)]
    pub crypto: CryptoRequest,
}

/// What a stream sends.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecRequest {
    /// pcmu, pcma, g722, opus or video (default pcmu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RTP payload type (default: the codec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_type: Option<u8>,
    /// Packet time, ms (10-60; default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptime_ms: Option<u32>,
    /// Bit rate, bit/s (opus and video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
    /// Frames per second (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
}

/// A stream to create.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// send, recv, sendrecv, echo or relay.
    pub mode: Mode,
    /// One leg, two for relay.
    pub legs: Vec<LegRequest>,
    /// What it sends (default PCMU, 20 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<CodecRequest>,
    /// Mean RTCP interval, ms (0: no reports; default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_interval_ms: Option<u32>,
    /// Silence timeout for `media_silent`, ms (0: never; default from the engine config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u32>,
    /// Authentication failures per `auth_failures` event (0: never; default from the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failure_threshold: Option<u32>,
    /// `true`: created paused, sending no RTP until an `update` with `paused: false` (an SIP
    /// answerer waiting for the ACK of its 2xx). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

impl StreamRequest {
    /// A stream of `mode` with one leg and the defaults for the rest.
    pub fn new(mode: Mode, leg: LegRequest) -> StreamRequest {
        StreamRequest {
            mode,
            legs: vec![leg],
            codec: None,
            rtcp_interval_ms: None,
            silence_ms: None,
            auth_failure_threshold: None,
            paused: None,
        }
    }
}

fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, CtlError> {
    s.parse().map_err(|_| {
        CtlError::new(
            ErrorCode::BadAddress,
            format!(
                "{field}: {} is not an address (ip:port, [ipv6]:port)",
                super::error::shown(s)
            ),
        )
    })
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, CtlError> {
    s.parse().map_err(|_| {
        CtlError::new(
            ErrorCode::BadAddress,
            format!("{field}: {} is not an IP address", super::error::shown(s)),
        )
    })
}

impl SdesRequest {
    fn into_crypto(self, field: &str) -> Result<Crypto, CtlError> {
        let suite = Suite::from_sdp_name(&self.suite).ok_or_else(|| {
            let known: Vec<_> = Suite::ALL.iter().map(|s| s.sdp_name()).collect();
            CtlError::new(
                ErrorCode::UnknownSuite,
                format!(
                    "{field}.suite: {:?} is not a suite this engine supports ({})",
                    self.suite,
                    known.join(", ")
                ),
            )
        })?;
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let f = format!("{field}.keys[{i}]");
            let mut raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(k.key.expose().trim())
                    .map_err(|_| {
                        CtlError::new(ErrorCode::BadKey, format!("{f}.key: not valid base64"))
                    })?,
            );
            let key = MasterKey::new(suite, &raw);
            raw.zeroize();
            let mut key = key.map_err(|e| CtlError::from_srtp(&format!("{f}.key"), e))?;
            match (k.mki, k.mki_len) {
                (None, None) => {}
                (Some(v), Some(len @ 1..=4)) => {
                    let len = usize::from(len);
                    if len < 4 && u64::from(v) >> (8 * len) != 0 {
                        return Err(CtlError::new(
                            ErrorCode::BadKeyParams,
                            format!("{f}.mki: {v} does not fit in {len} bytes"),
                        ));
                    }
                    let bytes = v.to_be_bytes();
                    key = key
                        .with_mki(&bytes[4 - len..])
                        .map_err(|e| CtlError::from_srtp(&format!("{f}.mki"), e))?;
                }
                (Some(_), Some(len)) => {
                    return Err(CtlError::new(
                        ErrorCode::BadKeyParams,
                        format!("{f}.mki_len: {len} is outside 1-4"),
                    ));
                }
                _ => {
                    return Err(CtlError::new(
                        ErrorCode::BadKeyParams,
                        format!("{f}: mki and mki_len go together"),
                    ));
                }
            }
            if let Some(l) = k.lifetime {
                key = key
                    .with_lifetime(l)
                    .map_err(|e| CtlError::from_srtp(&format!("{f}.lifetime"), e))?;
            }
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let first = keys
            .next()
            .ok_or_else(|| CtlError::invalid(&format!("{field}.keys"), "at least one key"))?;
        let mut policy = SrtpPolicy::new(suite, first);
        for k in keys {
            policy = policy.with_key(k);
        }
        if let Some(w) = self.replay_window {
            policy = policy.with_replay_window(w);
        }
        if let Some(r) = self.kdr {
            policy = policy.with_key_derivation_rate(r);
        }
        let crypto = Crypto::Sdes(policy);
        // Check the whole policy now (window, rate, MKI consistency) so the error names the field.
        crypto.check().map_err(|e| CtlError::from_srtp(field, e))?;
        Ok(crypto)
    }
}

impl CryptoRequest {
    /// The crypto of both directions (tx, rx), or the DTLS-SRTP request that will key them.
    pub fn into_crypto(self, field: &str) -> Result<(Crypto, Crypto, Option<DtlsSpec>), CtlError> {
        match self {
            CryptoRequest::None | CryptoRequest::Pending => Ok((Crypto::None, Crypto::None, None)),
            CryptoRequest::Sdes { tx, rx } => Ok((
                tx.into_crypto(&format!("{field}.tx"))?,
                rx.into_crypto(&format!("{field}.rx"))?,
                None,
            )),
            CryptoRequest::Dtls {
                role,
                fingerprint,
                profiles,
            } => {
                let fingerprint = Fingerprint::parse(&fingerprint).map_err(|e| {
                    CtlError::new(
                        ErrorCode::BadFingerprint,
                        format!("{field}.fingerprint: {e}"),
                    )
                })?;
                let profiles = profiles
                    .map(|names| dtls_profiles(&format!("{field}.profiles"), &names))
                    .transpose()?;
                Ok((
                    Crypto::None,
                    Crypto::None,
                    Some(DtlsSpec {
                        role,
                        fingerprint,
                        profiles,
                    }),
                ))
            }
        }
    }
}

/// Suite names that each have a DTLS-SRTP profile (RFC 5764 4.1.2, RFC 7714 14.2), none twice.
fn dtls_profiles(field: &str, names: &[String]) -> Result<Vec<Suite>, CtlError> {
    if names.is_empty() || names.len() > 8 {
        return Err(CtlError::new(
            ErrorCode::UnknownSuite,
            format!("{field}: between 1 and 8 suite names"),
        ));
    }
    let mut out: Vec<Suite> = Vec::with_capacity(names.len());
    for n in names {
        let s = Suite::from_sdp_name(n)
            .filter(|s| s.dtls_profile().is_some())
            .ok_or_else(|| {
                CtlError::new(
                    ErrorCode::UnknownSuite,
                    format!(
                        "{field}: {} is not a suite with a DTLS-SRTP profile",
                        super::error::shown(n)
                    ),
                )
            })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

impl LegRequest {
    fn into_spec(self, field: &str) -> Result<LegSpec, CtlError> {
        let local_ip = self
            .local_ip
            .as_deref()
            .map(|s| parse_ip(&format!("{field}.local_ip"), s))
            .transpose()?;
        let remote = self
            .remote
            .as_deref()
            .map(|s| parse_addr(&format!("{field}.remote"), s))
            .transpose()?;
        let remote_rtcp = self
            .remote_rtcp
            .as_deref()
            .map(|s| parse_addr(&format!("{field}.remote_rtcp"), s))
            .transpose()?;
        if self.socket == SocketModel::Shared && !self.rtcp_mux {
            return Err(CtlError::invalid(
                &format!("{field}.rtcp_mux"),
                "a shared-port leg needs rtcp_mux: true",
            ));
        }
        let pending = matches!(self.crypto, CryptoRequest::Pending);
        let (tx, rx, dtls) = self.crypto.into_crypto(&format!("{field}.crypto"))?;
        Ok(LegSpec {
            local_ip,
            remote,
            remote_rtcp,
            rtcp_mux: self.rtcp_mux,
            socket: self.socket,
            strict_source: self.strict_source,
            remote_ssrc: self.remote_ssrc,
            tx,
            rx,
            dtls,
            pending,
        })
    }
}

impl CodecRequest {
    fn into_profile(self) -> Result<CodecProfile, CtlError> {
        let codec = match self.name.as_deref() {
            None => Codec::Pcmu,
            Some(n) => Codec::from_name(n).ok_or_else(|| {
                CtlError::invalid(
                    "codec.name",
                    format!(
                        "{} is not pcmu, pcma, g722, opus or video",
                        super::error::shown(n)
                    ),
                )
            })?,
        };
        let mut p = CodecProfile::default_for(codec);
        if let Some(v) = self.payload_type {
            p.payload_type = v;
        }
        if let Some(v) = self.ptime_ms {
            p.ptime_ms = v;
        }
        if let Some(v) = self.bitrate {
            p.bitrate = v;
        }
        if let Some(v) = self.fps {
            p.fps = v;
        }
        p.validate().map_err(|e| CtlError::invalid("codec", e))?;
        Ok(p)
    }
}

impl StreamRequest {
    /// Checks every value and builds the engine's spec (event thresholds the request leaves
    /// out come from the engine's config, applied by the worker).
    pub fn into_spec(self) -> Result<StreamSpec, CtlError> {
        let want = if self.mode == Mode::Relay { 2 } else { 1 };
        if self.legs.len() != want {
            return Err(CtlError::invalid(
                "legs",
                format!(
                    "{} takes {want} leg{}, got {}",
                    self.mode.name(),
                    if want == 1 { "" } else { "s" },
                    self.legs.len()
                ),
            ));
        }
        let codec = self.codec.unwrap_or_default().into_profile()?;
        let mut legs = Vec::with_capacity(want);
        for (i, l) in self.legs.into_iter().enumerate() {
            legs.push(l.into_spec(&format!("legs[{i}]"))?);
        }
        let mut spec = StreamSpec::new(self.mode, LegSpec::default());
        spec.legs = legs;
        spec.codec = codec;
        if let Some(ms) = self.rtcp_interval_ms {
            if ms != 0 && !(100..=600_000).contains(&ms) {
                return Err(CtlError::invalid(
                    "rtcp_interval_ms",
                    format!("{ms} is outside 100-600000 (or 0 for none)"),
                ));
            }
            spec.rtcp_interval_ms = ms;
        }
        spec.watch = WatchOverrides {
            silence_ms: self.silence_ms,
            auth_failure_threshold: self.auth_failure_threshold,
        };
        spec.paused = self.paused.unwrap_or(false);
        Ok(spec)
    }
}

/// `update`: what to change on a live stream (every field optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The stream.
    pub stream: u64,
    /// The leg the remote or crypto applies to (default 0).
    #[serde(default)]
    pub leg: usize,
    /// New remote address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// New crypto (a rekey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<CryptoRequest>,
    /// Pause or resume generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// New direction: send, recv or sendrecv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `true`: multiplex RTCP on the RTP port from now on and close the leg's RTCP port (an
    /// offerer whose rtcp-mux the answer accepted, RFC 5761 5.1.1). `false` changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_mux: Option<bool>,
    /// New peer RTCP address, for a leg with its own RTCP port (`a=rtcp`, RFC 3605).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_rtcp: Option<String>,
    /// Another codec (name, payload type, ...), as in `create`: a re-offer changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<CodecRequest>,
}

impl UpdateRequest {
    /// An update of `stream` that changes nothing yet.
    pub fn of(stream: u64) -> UpdateRequest {
        UpdateRequest {
            stream,
            ..UpdateRequest::default()
        }
    }

    /// Whether it would change nothing (no need to send it).
    pub fn changes_nothing(&self) -> bool {
        self.remote.is_none()
            && self.crypto.is_none()
            && self.paused.is_none()
            && self.mode.is_none()
            && self.rtcp_mux != Some(true)
            && self.remote_rtcp.is_none()
            && self.codec.is_none()
    }

    /// Checks the values and builds the engine's update.
    pub fn into_update(self) -> Result<(u64, StreamUpdate), CtlError> {
        let mut u = StreamUpdate::default();
        if let Some(r) = &self.remote {
            u.remote = Some((self.leg, parse_addr("remote", r)?));
        }
        if let Some(c) = self.crypto {
            if matches!(c, CryptoRequest::Pending) {
                return Err(CtlError::invalid(
                    "crypto.type",
                    "pending is only for creating a stream; an update brings the keys",
                ));
            }
            match c.into_crypto("crypto")? {
                (_, _, Some(d)) => u.dtls = Some((self.leg, d)),
                (tx, rx, None) => u.crypto = Some((self.leg, tx, rx)),
            }
        }
        if let Some(r) = &self.remote_rtcp {
            u.remote_rtcp = Some((self.leg, parse_addr("remote_rtcp", r)?));
        }
        if self.rtcp_mux == Some(true) {
            u.rtcp_mux = Some(self.leg);
        }
        if let Some(c) = self.codec {
            u.codec = Some(c.into_profile()?);
        }
        u.paused = self.paused;
        u.mode = self.mode;
        Ok((self.stream, u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(suite: Suite) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![7u8; suite.master_len()])
    }

    fn sdes(suite: &str, key: String) -> SdesRequest {
        SdesRequest {
            suite: suite.into(),
            keys: vec![KeyRequest {
                key: Secret::new(key),
                mki: None,
                mki_len: None,
                lifetime: None,
            }],
            replay_window: None,
            kdr: None,
        }
    }

    #[test]
    fn key_errors_have_their_codes_and_never_the_key() {
        let s = Suite::AesCm128HmacSha1_80;
        let ok = sdes(s.sdp_name(), key(s)).into_crypto("tx");
        assert!(matches!(ok, Ok(Crypto::Sdes(_))));
        let e = sdes("AES_CM_129", key(s)).into_crypto("tx").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownSuite);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 20]);
        let e = sdes(s.sdp_name(), short.clone())
            .into_crypto("tx")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadKeyLength);
        assert!(!e.message.contains(&short), "{}", e.message);
        let e = sdes(s.sdp_name(), "not base64 at all!".into())
            .into_crypto("tx")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadKey);
        assert!(!e.message.contains("not base64 at all!"));
        let mut r = sdes(s.sdp_name(), key(s));
        r.keys[0].mki = Some(300);
        r.keys[0].mki_len = Some(1);
        assert_eq!(
            r.into_crypto("tx").unwrap_err().code,
            ErrorCode::BadKeyParams
        );
        let mut r = sdes(s.sdp_name(), key(s));
        r.replay_window = Some(5);
        assert_eq!(
            r.into_crypto("rx").unwrap_err().code,
            ErrorCode::BadKeyParams
        );
    }

    #[test]
    fn stream_requests_are_checked_field_by_field() {
        let req: StreamRequest = serde_json::from_str(
            r#"{"mode":"relay","legs":[{"remote":"127.0.0.1:4000","rtcp_mux":true}]}"#,
        )
        .unwrap();
        let e = req.into_spec().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("legs"), "{}", e.message);
        let req: StreamRequest =
            serde_json::from_str(r#"{"mode":"echo","legs":[{"remote":"127.0.0.1"}]}"#).unwrap();
        let e = req.into_spec().unwrap_err();
        assert_eq!(e.code, ErrorCode::BadAddress);
        assert!(e.message.contains("legs[0].remote"), "{}", e.message);
        let req: StreamRequest = serde_json::from_str(
            r#"{"mode":"echo","legs":[{"crypto":{"type":"dtls","role":"client","fingerprint":"sha-256 00"}}]}"#,
        )
        .unwrap();
        let e = req.into_spec().unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFingerprint);
        assert!(
            e.message.contains("legs[0].crypto.fingerprint"),
            "{}",
            e.message
        );
        let fp = format!("sha-256 {}", vec!["AB"; 32].join(":"));
        let req: StreamRequest = serde_json::from_str(&format!(
            r#"{{"mode":"echo","legs":[{{"crypto":{{"type":"dtls","role":"server","fingerprint":"{fp}"}}}}]}}"#
        ))
        .unwrap();
        let spec = req.into_spec().unwrap();
        let d = spec.legs[0].dtls.as_ref().unwrap();
        assert_eq!(d.role, DtlsRole::Server);
        assert_eq!(d.fingerprint.to_string(), fp);
        let req: StreamRequest = serde_json::from_str(
            r#"{"mode":"send","legs":[{}],"codec":{"name":"pcmu","ptime_ms":70}}"#,
        )
        .unwrap();
        assert_eq!(
            req.into_spec().unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let req: StreamRequest = serde_json::from_str(
            r#"{"mode":"sendrecv","legs":[{"remote":"[::1]:5000"}],"silence_ms":0}"#,
        )
        .unwrap();
        let spec = req.into_spec().unwrap();
        assert_eq!(spec.watch.silence_ms, Some(0));
        assert!(
            serde_json::from_str::<StreamRequest>(r#"{"mode":"echo","legs":[],"colour":1}"#)
                .is_err()
        );
    }

    #[test]
    fn pending_keys_are_for_creating_only() {
        let req: StreamRequest = serde_json::from_str(
            r#"{"mode":"recv","legs":[{"rtcp_mux":true,"crypto":{"type":"pending"}}]}"#,
        )
        .unwrap();
        let spec = req.into_spec().unwrap();
        assert!(spec.legs[0].pending);
        assert!(matches!(spec.legs[0].rx, Crypto::None));
        let req: StreamRequest =
            serde_json::from_str(r#"{"mode":"recv","legs":[{"rtcp_mux":true}]}"#).unwrap();
        assert!(!req.into_spec().unwrap().legs[0].pending);
        let req: UpdateRequest =
            serde_json::from_str(r#"{"stream":1,"crypto":{"type":"pending"}}"#).unwrap();
        let e = req.into_update().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("crypto.type"), "{}", e.message);
    }
}
