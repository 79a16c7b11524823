//! Errors of the SRTP layer.
//!
//! [`SrtpError`] is per packet: `Copy`, never allocating, cheap to count. [`SrtpConfigError`]
//! is raised when a context is built from a policy and keys.

use super::suite::Suite;

/// Why one packet could not be protected or unprotected.
///
/// Faults caused by the peer or the network ([`SrtpError::is_peer_fault`]) are distinct from
/// local misuse (a buffer too small, a sender reusing an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The packet is shorter than its header plus the SRTP trailer (MKI, tag, SRTCP index).
    #[error("packet too short: {len} bytes, at least {min} needed")]
    TooShort {
        /// Bytes in the packet.
        len: usize,
        /// Bytes the packet needs at least.
        min: usize,
    },
    /// The packet is not RTP/RTCP version 2, or its header lengths do not fit the packet.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The caller's buffer has no room for the SRTP trailer (local misuse).
    #[error("buffer too small: {needed} bytes needed, {capacity} available")]
    BufferTooSmall {
        /// Bytes the protected packet needs.
        needed: usize,
        /// Bytes the buffer has.
        capacity: usize,
    },
    /// The authentication tag does not match: wrong keys, wrong suite, or a forged packet.
    #[error("authentication failed")]
    AuthFailed,
    /// The packet index was already received, or is older than the replay window.
    #[error("replayed packet (index {index})")]
    Replayed {
        /// The packet's index (SRTP: ROC || SEQ; SRTCP: SRTCP index).
        index: u64,
    },
    /// The rollover counter cannot be estimated: the sequence number lies so far behind the
    /// first packet of the stream that its ROC would be negative.
    #[error("rollover counter ambiguous: sequence number precedes the stream's start")]
    RocAmbiguous,
    /// The SSRC is not one this context accepts, or the context already tracks its maximum
    /// number of SSRCs.
    #[error("unknown SSRC {ssrc:#010x}")]
    UnknownSsrc {
        /// The packet's SSRC.
        ssrc: u32,
    },
    /// The packet's MKI names no master key of this context.
    #[error("unknown master key identifier")]
    UnknownMki,
    /// The master key has protected or unprotected as many packets as its lifetime allows
    /// (RFC 3711 9.2): a rekey is needed before more packets can pass.
    #[error("master key lifetime reached: rekey needed")]
    LifetimeReached,
    /// A sender tried to protect a packet index it had already protected: the keystream would
    /// be reused (local misuse).
    #[error("packet index {index} already protected: keystream reuse refused")]
    IndexReused {
        /// The index that was protected before.
        index: u64,
    },
}

impl SrtpError {
    /// True when the fault lies with the packet received (peer, network or attacker), false
    /// for local misuse and for a key that needs renewing.
    pub fn is_peer_fault(self) -> bool {
        !matches!(
            self,
            SrtpError::BufferTooSmall { .. }
                | SrtpError::IndexReused { .. }
                | SrtpError::LifetimeReached
        )
    }

    /// A short stable name for counters and logs (`auth_failed`, `replayed`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SrtpError::TooShort { .. } => "too_short",
            SrtpError::Malformed(_) => "malformed",
            SrtpError::BufferTooSmall { .. } => "buffer_too_small",
            SrtpError::AuthFailed => "auth_failed",
            SrtpError::Replayed { .. } => "replayed",
            SrtpError::RocAmbiguous => "roc_ambiguous",
            SrtpError::UnknownSsrc { .. } => "unknown_ssrc",
            SrtpError::UnknownMki => "unknown_mki",
            SrtpError::LifetimeReached => "lifetime_reached",
            SrtpError::IndexReused { .. } => "index_reused",
        }
    }
}

/// Why a policy or a master key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpConfigError {
    /// The key||salt material has the wrong length for the suite.
    #[error("{suite} needs {expected} bytes of key and salt, got {actual}")]
    KeyLength {
        /// The suite the key is for.
        suite: Suite,
        /// Bytes the suite needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// An MKI must be 1 to 4 bytes long.
    #[error("MKI length {0} out of range (1 to 4 bytes)")]
    MkiLength(usize),
    /// All master keys of a context must carry MKIs of one length.
    #[error("master keys carry MKIs of different lengths")]
    MkiLengthMismatch,
    /// Two master keys carry the same MKI.
    #[error("two master keys carry the same MKI")]
    DuplicateMki,
    /// More than one master key, but not every key has an MKI to tell them apart.
    #[error("several master keys need an MKI each")]
    MkiRequired,
    /// A master key is for a different suite than the policy.
    #[error("master key is for {key}, policy is for {policy}")]
    SuiteMismatch {
        /// The key's suite.
        key: Suite,
        /// The policy's suite.
        policy: Suite,
    },
    /// The master key lifetime must be at least one packet.
    #[error("master key lifetime must be at least 1 packet")]
    Lifetime,
    /// The replay window must hold between 64 and 32768 packets (RFC 3711 3.3.2 sets 64 as
    /// the minimum).
    #[error("replay window of {0} packets out of range (64 to 32768)")]
    ReplayWindow(u32),
    /// The key derivation rate must be 0 or a power of two up to 2^24 (RFC 3711 4.3.1).
    #[error("key derivation rate {0} is not 0 or a power of two up to 2^24")]
    KeyDerivationRate(u32),
    /// The index of the key to protect with names no master key.
    #[error("no master key at index {0}")]
    NoSuchKey(usize),
}
