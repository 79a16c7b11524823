//! What a user agent is configured with ([`UaConfig`]) and what it reports about calls: how
//! one connected ([`CallInfo`]), how it ended ([`Ended`]), why it failed ([`CallError`]), and
//! the answerer's events ([`UasEvent`]).

use std::net::SocketAddr;
use std::time::Duration;

use srtp_engine::model::StreamStats;
use thiserror::Error;

use super::dialog::DialogError;

use crate::media::{DtlsOutcome, MediaError};
use crate::register::endpoint::RegistrarSpec;
use crate::sdp::{Negotiated, NegotiationError, SecurityConfig, Verdict};
use crate::sip::log::MessageLog;
use crate::sip::tls::TlsSettings;
use crate::sip::transaction::TimerValues;
use crate::sip::transport::{Protocol, TransportError};

/// Registering the agent's address so that calls reach it through a registrar (RFC 3261 10).
#[derive(Clone, Debug)]
pub struct RegisterConfig {
    /// The registrars, in order of preference (failover to the next one).
    pub registrars: Vec<RegistrarSpec>,
    /// Requested lifetime, seconds.
    pub expires: u32,
}

/// A user agent's settings.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// Our user part (`sip:<user>@<listen address>`).
    pub user: String,
    /// Signaling transport.
    pub protocol: Protocol,
    /// Listen address (port 0: any).
    pub listen: SocketAddr,
    /// TLS settings (for `Protocol::Tls`).
    pub tls: TlsSettings,
    /// SRTP policy, method, suites, codecs.
    pub security: SecurityConfig,
    /// Credentials to answer digest challenges with (user, password).
    pub credentials: Option<(String, String)>,
    /// As UAS: challenge INVITEs in this realm, accepting this password for any user.
    pub challenge: Option<(String, String)>,
    /// The digest algorithms our challenges offer, in order (RFC 8760: SHA-256 first, MD5
    /// for older peers).
    pub challenge_algorithms: Vec<crate::sip::auth::Algorithm>,
    /// Transaction timers.
    pub timers: TimerValues,
    /// The SIP message log.
    pub log: MessageLog,
    /// Register with these registrars while running.
    pub register: Option<RegisterConfig>,
}

impl UaConfig {
    /// Defaults for a user on a transport.
    pub fn new(user: &str, protocol: Protocol, listen: SocketAddr) -> UaConfig {
        UaConfig {
            user: user.to_owned(),
            protocol,
            listen,
            tls: TlsSettings::default(),
            security: SecurityConfig::default(),
            credentials: None,
            challenge: None,
            challenge_algorithms: vec![
                crate::sip::auth::Algorithm::Sha256,
                crate::sip::auth::Algorithm::Md5,
            ],
            timers: TimerValues::default(),
            log: MessageLog::off(),
            register: None,
        }
    }
}

/// Why a call (or its end) failed, by cause.
#[derive(Clone, Debug, Error)]
pub enum CallError {
    /// The transport failed (TLS failures keep their own message).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The peer answered with an error status.
    #[error("rejected with {code} {reason}{}", warning.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    Rejected {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// The Warning header's text, if any.
        warning: Option<String>,
    },
    /// No final response in time (Timer B or F).
    #[error("no answer (transaction timeout after {0:?})")]
    Timeout(Duration),
    /// Our BYE was answered with an error: the far end (or a proxy) did not end the call.
    #[error("BYE answered {code} {reason}: the far end did not confirm the hangup")]
    ByeRefused {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// Our side refused the answer's SDP (the call was ended with BYE).
    #[error("{0}")]
    Negotiation(#[from] NegotiationError),
    /// Media could not be set up, or the engine lost the stream.
    #[error("{0}")]
    Media(#[from] MediaError),
    /// The peer's 2xx could not make a dialog.
    #[error("{0}")]
    Dialog(#[from] DialogError),
    /// Digest authentication failed or could not be answered.
    #[error("authentication: {0}")]
    Auth(String),
    /// The call was cancelled before it was answered (by us, stopping).
    #[error("cancelled before it was answered")]
    Cancelled,
    /// The peer ended the call before it was set up.
    #[error("the peer ended the call before it was set up")]
    EndedEarly,
    /// No such call.
    #[error("no call {0}")]
    NoSuchCall(String),
    /// The user agent stopped.
    #[error("the user agent stopped")]
    Stopped,
}

impl CallError {
    /// A short stable name for reports.
    pub fn cause(&self) -> String {
        match self {
            CallError::Transport(TransportError::Tls(t)) => t.cause().to_owned(),
            CallError::Transport(_) => "transport".into(),
            CallError::Rejected { code, .. } => format!("sip_{code}"),
            CallError::Timeout(_) => "timeout".into(),
            CallError::ByeRefused { .. } => "bye_refused".into(),
            CallError::Negotiation(n) => n.cause().to_owned(),
            CallError::Media(MediaError::EngineRestarted) => "engine_restarted".into(),
            CallError::Media(_) => "media".into(),
            CallError::Dialog(_) => "dialog".into(),
            CallError::Auth(_) => "auth".into(),
            CallError::Cancelled => "cancelled".into(),
            CallError::EndedEarly => "ended_early".into(),
            CallError::NoSuchCall(_) => "no_such_call".into(),
            CallError::Stopped => "stopped".into(),
        }
    }
}

/// A call that connected.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// Call-ID.
    pub call_id: String,
    /// The engine's stream.
    pub stream: u64,
    /// What was negotiated.
    pub negotiated: Negotiated,
    /// The encryption verdict.
    pub verdict: Verdict,
    /// INVITE to 200 OK (to the ACK's answer for a delayed offer).
    pub setup: Duration,
}

/// Who or what ended a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// The peer's BYE.
    Peer,
    /// Our hangup.
    Hangup,
    /// We were stopping (SIGINT/SIGTERM).
    Shutdown,
    /// Our 2xx was never acknowledged (RFC 3261 13.3.1.4).
    NoAck,
    /// Something failed after the dialog was set up; why, in words.
    Failure(String),
}

/// The end of a call that was set up.
#[derive(Clone, Debug)]
pub struct Ended {
    /// Call-ID.
    pub call_id: String,
    /// Who ended it.
    pub by: EndedBy,
    /// The engine's final statistics of the stream (null without media).
    pub stats: Option<StreamStats>,
    /// Our BYE's outcome when we sent one (`None` when the peer ended the call).
    pub bye: Option<Result<(), CallError>>,
}

/// What the UAS side reports about calls it answered or refused.
#[derive(Clone, Debug)]
pub enum UasEvent {
    /// A call was answered.
    Answered(Box<CallInfo>),
    /// An INVITE was refused; the status and why.
    Refused {
        /// Call-ID.
        call_id: String,
        /// Status sent.
        code: u16,
        /// Why (negotiation error text).
        reason: String,
    },
    /// A call accepted with a 200 failed before it was confirmed (no answer in the ACK, the
    /// engine refused the answer's keys).
    Failed {
        /// Call-ID.
        call_id: String,
        /// What happened.
        error: CallError,
    },
    /// A re-INVITE or UPDATE changed the session; what changed, in words.
    Updated {
        /// Call-ID.
        call_id: String,
        /// What changed.
        change: String,
    },
    /// The engine reported the call's DTLS-SRTP handshake.
    Dtls {
        /// Call-ID.
        call_id: String,
        /// The outcome.
        outcome: DtlsOutcome,
        /// The verdict with it.
        verdict: Box<Verdict>,
    },
    /// A call ended (by the peer's BYE, our shutdown, no ACK); final media statistics.
    Ended {
        /// Call-ID.
        call_id: String,
        /// The engine's final statistics of the stream.
        stats: Option<StreamStats>,
        /// Who ended it.
        by: EndedBy,
        /// Our BYE's outcome when we sent one.
        bye: Option<Result<(), CallError>>,
    },
    /// The stream of a call that was never set up (cancelled, as a forking proxy does once
    /// another branch answered, or failed before its ACK) was closed: its final figures, so
    /// that what it sent is accounted for.
    Released {
        /// Call-ID.
        call_id: String,
        /// The engine's final statistics of the stream.
        stats: Option<StreamStats>,
    },
    /// Registration progress (with `UaConfig::register`).
    Registration(crate::register::endpoint::Event),
    /// The media engine went away (its streams with it: the calls that had them are ended)
    /// or came back.
    Engine {
        /// It answers again.
        up: bool,
    },
}
