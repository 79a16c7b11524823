//! Why a request failed: a stable code for programs ([`ErrorCode`]) and a message for people
//! that never contains key material ([`CtlError`]).

use serde::{Deserialize, Serialize};

use crate::model::{SocketError, StreamError};
use crate::proto::srtp::SrtpConfigError;

/// Why a request failed: a stable code (for programs) and a message (for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON.
    ParseError,
    /// The line is longer than the server accepts; it was skipped.
    LineTooLong,
    /// JSON, but not a request of the right shape (missing `id` or `cmd`, unknown or missing
    /// field, wrong type).
    BadRequest,
    /// No such command.
    UnknownCommand,
    /// A value is out of range or inconsistent (the message names the field).
    InvalidArgument,
    /// An SRTP suite name the engine does not know.
    UnknownSuite,
    /// A key that is not base64.
    BadKey,
    /// A key of the wrong length for its suite.
    BadKeyLength,
    /// An MKI, lifetime, replay window or key derivation rate out of range.
    BadKeyParams,
    /// An address that does not parse.
    BadAddress,
    /// A local IP the engine is not configured with.
    UnknownLocalIp,
    /// No stream with that id.
    NoSuchStream,
    /// No free port in the configured range.
    PortsExhausted,
    /// Out of file descriptors (the message names the limit and the shared-port model).
    FileLimit,
    /// The worker holds its maximum number of streams.
    WorkerFull,
    /// The remote (and SSRC) is taken on the shared port.
    RemoteTaken,
    /// DTLS-SRTP is not available in this engine (no DTLS context).
    DtlsUnsupported,
    /// A DTLS fingerprint is not `<hash> <AB:CD:...>` with a supported hash and the right
    /// length.
    BadFingerprint,
    /// More streams in one batch than the server accepts.
    BatchTooLarge,
    /// Too many control connections.
    TooManyConnections,
    /// The engine is stopping.
    ShuttingDown,
    /// A socket or backend error.
    Io,
    /// A code this build does not know (a newer engine's). The engine never sends it.
    Other,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::ParseError,
        ErrorCode::LineTooLong,
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::InvalidArgument,
        ErrorCode::UnknownSuite,
        ErrorCode::BadKey,
        ErrorCode::BadKeyLength,
        ErrorCode::BadKeyParams,
        ErrorCode::BadAddress,
        ErrorCode::UnknownLocalIp,
        ErrorCode::NoSuchStream,
        ErrorCode::PortsExhausted,
        ErrorCode::FileLimit,
        ErrorCode::WorkerFull,
        ErrorCode::RemoteTaken,
        ErrorCode::DtlsUnsupported,
        ErrorCode::BadFingerprint,
        ErrorCode::BatchTooLarge,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
        ErrorCode::Io,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse_error",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::UnknownSuite => "unknown_suite",
            ErrorCode::BadKey => "bad_key",
            ErrorCode::BadKeyLength => "bad_key_length",
            ErrorCode::BadKeyParams => "bad_key_params",
            ErrorCode::BadAddress => "bad_address",
            ErrorCode::UnknownLocalIp => "unknown_local_ip",
            ErrorCode::NoSuchStream => "no_such_stream",
            ErrorCode::PortsExhausted => "ports_exhausted",
            ErrorCode::FileLimit => "file_limit",
            ErrorCode::WorkerFull => "worker_full",
            ErrorCode::RemoteTaken => "remote_taken",
            ErrorCode::DtlsUnsupported => "dtls_unsupported",
            ErrorCode::BadFingerprint => "bad_fingerprint",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Io => "io",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(ErrorCode::Other))
    }
}

/// A failed request: its code and a message that never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlError {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl CtlError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CtlError {
        CtlError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: &str, what: impl std::fmt::Display) -> CtlError {
        CtlError::new(ErrorCode::InvalidArgument, format!("{field}: {what}"))
    }

    /// A serde shape error, with every quoted value removed: a misplaced key must not come
    /// back in the message.
    pub(crate) fn shape(e: &serde_json::Error) -> CtlError {
        CtlError::new(ErrorCode::BadRequest, redact_quoted(&e.to_string()))
    }

    /// A stream request that failed in a worker.
    pub fn from_stream(e: &StreamError) -> CtlError {
        let code = match e {
            StreamError::NoSuchStream(_) => ErrorCode::NoSuchStream,
            StreamError::Invalid(_) | StreamError::Profile(_) => ErrorCode::InvalidArgument,
            StreamError::UnknownLocalIp(_) => ErrorCode::UnknownLocalIp,
            StreamError::Socket(SocketError::PortsExhausted { .. }) => ErrorCode::PortsExhausted,
            StreamError::Socket(SocketError::FileLimit { .. }) => ErrorCode::FileLimit,
            StreamError::Socket(SocketError::Io { .. }) | StreamError::Io(_) => ErrorCode::Io,
            StreamError::Srtp(e) => return CtlError::from_srtp("crypto", *e),
            StreamError::SharedRemoteTaken(_) => ErrorCode::RemoteTaken,
            StreamError::ShuttingDown => ErrorCode::ShuttingDown,
            StreamError::WorkerFull(_) => ErrorCode::WorkerFull,
            StreamError::DtlsUnavailable => ErrorCode::DtlsUnsupported,
        };
        CtlError::new(code, e.to_string())
    }

    pub(crate) fn from_srtp(field: &str, e: SrtpConfigError) -> CtlError {
        let code = match e {
            SrtpConfigError::KeyLength { .. } | SrtpConfigError::SuiteMismatch { .. } => {
                ErrorCode::BadKeyLength
            }
            _ => ErrorCode::BadKeyParams,
        };
        CtlError::new(code, format!("{field}: {e}"))
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for CtlError {}

/// A value from a request as an error may show it: short names, addresses and numbers as they
/// are (they help the client see its mistake), anything longer or with other characters
/// (a key in the wrong field: base64 is at least 40 characters and has `+`, `/`, `=`) only by
/// its length.
pub fn shown(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_.:-[]".contains(c);
    if value.len() <= 24 && value.chars().all(safe) {
        format!("{value:?}")
    } else {
        format!(
            "a value of {} characters (not shown)",
            value.chars().count()
        )
    }
}

/// Replaces every value quoted in a message (`"..."`, or serde's `` `...` ``) that [`shown`]
/// would not show by `…`: a misplaced key never comes back, a misspelt name does.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(['"', '`']) {
        let q = rest.as_bytes()[i] as char;
        out.push_str(&rest[..=i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find(q) else {
            // An unterminated quote: nothing after it is shown.
            out.push('…');
            return out;
        };
        let value = &after[..j];
        if shown(value).starts_with('"') {
            out.push_str(value);
        } else {
            out.push('…');
        }
        out.push(q);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_every_value_that_could_be_a_key() {
        let key = "WVNfX19jb250cm9sX19zZWNyZXRfX19rZXlfX19fXw==";
        assert_eq!(
            redact_quoted(&format!("invalid type: string \"{key}\", expected u32")),
            "invalid type: string \"…\", expected u32"
        );
        // serde's backticks, as in an unknown variant: the key goes, the choices stay.
        assert_eq!(
            redact_quoted(&format!(
                "unknown variant `{key}`, expected one of `send`, `recv`"
            )),
            "unknown variant `…`, expected one of `send`, `recv`"
        );
        assert_eq!(
            redact_quoted("unknown variant `sendrecvx`, expected `send`"),
            "unknown variant `sendrecvx`, expected `send`"
        );
        assert_eq!(redact_quoted("cut \"abc+def"), "cut \"…");
        assert_eq!(redact_quoted("no quotes"), "no quotes");
        assert_eq!(shown("127.0.0.1:5004"), "\"127.0.0.1:5004\"");
        assert_eq!(shown(key), "a value of 44 characters (not shown)");
    }
}
