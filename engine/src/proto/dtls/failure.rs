//! Why a handshake failed, in words an operator can act on, and the TLS alert names.

use std::fmt;

/// Why a handshake failed: what an operator needs to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsFailure {
    /// No handshake completed within the deadline (silent or unreachable peer, or a path
    /// losing too much).
    Timeout,
    /// The peer's certificate does not match the fingerprint from signaling.
    FingerprintMismatch,
    /// The peer presented no certificate.
    NoCertificate,
    /// No SRTP protection profile in common (or the peer did not offer `use_srtp`).
    NoCommonProfile,
    /// No DTLS cipher suite, group or signature scheme in common.
    NoCommonCipherSuite,
    /// The peer sent a fatal alert (RFC 5246 7.2; the description code).
    PeerAlert(u8),
    /// The peer sent messages that break the protocol.
    Malformed,
    /// The peer's handshake failed a check (a bad signature or Finished, a version or cookie
    /// the protocol forbids).
    Protocol,
}

/// A [`DtlsFailure`] without its detail: what events, replies and metrics carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtlsFailureReason {
    /// [`DtlsFailure::Timeout`].
    Timeout,
    /// [`DtlsFailure::FingerprintMismatch`].
    FingerprintMismatch,
    /// [`DtlsFailure::NoCertificate`].
    NoCertificate,
    /// [`DtlsFailure::NoCommonProfile`].
    NoCommonProfile,
    /// [`DtlsFailure::NoCommonCipherSuite`].
    NoCommonCipherSuite,
    /// [`DtlsFailure::PeerAlert`].
    PeerAlert,
    /// [`DtlsFailure::Malformed`].
    Malformed,
    /// [`DtlsFailure::Protocol`].
    Protocol,
}

impl DtlsFailureReason {
    /// Every reason, in metric order.
    pub const ALL: [DtlsFailureReason; 8] = [
        DtlsFailureReason::Timeout,
        DtlsFailureReason::FingerprintMismatch,
        DtlsFailureReason::NoCertificate,
        DtlsFailureReason::NoCommonProfile,
        DtlsFailureReason::NoCommonCipherSuite,
        DtlsFailureReason::PeerAlert,
        DtlsFailureReason::Malformed,
        DtlsFailureReason::Protocol,
    ];

    /// The reason as events and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DtlsFailureReason::Timeout => "timeout",
            DtlsFailureReason::FingerprintMismatch => "fingerprint_mismatch",
            DtlsFailureReason::NoCertificate => "no_certificate",
            DtlsFailureReason::NoCommonProfile => "no_common_profile",
            DtlsFailureReason::NoCommonCipherSuite => "no_common_cipher_suite",
            DtlsFailureReason::PeerAlert => "peer_alert",
            DtlsFailureReason::Malformed => "malformed",
            DtlsFailureReason::Protocol => "protocol",
        }
    }

    /// This reason's place in [`DtlsFailureReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DtlsFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DtlsFailure {
    /// The reason without its detail.
    pub fn kind(self) -> DtlsFailureReason {
        match self {
            DtlsFailure::Timeout => DtlsFailureReason::Timeout,
            DtlsFailure::FingerprintMismatch => DtlsFailureReason::FingerprintMismatch,
            DtlsFailure::NoCertificate => DtlsFailureReason::NoCertificate,
            DtlsFailure::NoCommonProfile => DtlsFailureReason::NoCommonProfile,
            DtlsFailure::NoCommonCipherSuite => DtlsFailureReason::NoCommonCipherSuite,
            DtlsFailure::PeerAlert(_) => DtlsFailureReason::PeerAlert,
            DtlsFailure::Malformed => DtlsFailureReason::Malformed,
            DtlsFailure::Protocol => DtlsFailureReason::Protocol,
        }
    }

    /// The reason as events and metrics name it.
    pub fn reason(self) -> &'static str {
        self.kind().as_str()
    }

    /// This reason's place in [`DtlsFailureReason::ALL`].
    pub fn index(self) -> usize {
        self.kind().index()
    }

    /// For a peer alert, the alert's name (RFC 5246 7.2).
    pub fn alert(self) -> Option<&'static str> {
        match self {
            DtlsFailure::PeerAlert(d) => Some(alert_name(d)),
            _ => None,
        }
    }
}

impl fmt::Display for DtlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsFailure::PeerAlert(d) => write!(f, "peer_alert ({})", alert_name(*d)),
            other => f.write_str(other.reason()),
        }
    }
}

/// The name of a TLS alert description (RFC 5246 7.2, RFC 8446 6).
pub fn alert_name(description: u8) -> &'static str {
    match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        _ => "unknown",
    }
}
