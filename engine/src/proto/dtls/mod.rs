//! DTLS-SRTP (RFC 5764): the handshake that keys SRTP, sans-IO.
//!
//! The worker owns one [`DtlsSession`] per leg (two without rtcp-mux: RFC 5764 4.1 keys RTCP on
//! its own port with its own handshake) and drives it with `handle_timeout(now)`,
//! `handle_packet(datagram)` and [`DtlsSession::poll_output`] until a [`DtlsOutput::Timeout`]
//! comes out, like every sans-IO protocol here. What the worker needs from a session is the
//! small [`DtlsSession`] trait; [`DtlsContext::session`] builds the one implementation, on the
//! dimpl crate (DTLS 1.2, aws-lc-rs crypto).
//!
//! The session checks the peer's certificate against the fingerprint from SDP (RFC 8122 5;
//! RFC 5763 5: "the certificate presented during the DTLS handshake MUST match the fingerprint
//! exchanged via the signaling path"), and on success hands out the two SRTP master keys from
//! the exported keying material (RFC 5764 4.2), already split by role.
//!
//! Known limits of the implementation (dimpl 0.9): ECDSA certificates only; no
//! `SRTP_AES128_CM_HMAC_SHA1_32` or `SRTP_NULL_*` profiles; as a client it offers all three of
//! `SRTP_AEAD_AES_256_GCM`, `SRTP_AEAD_AES_128_GCM`, `SRTP_AES128_CM_HMAC_SHA1_80`, and as a
//! server it picks among the client's offer in that order.

#[cfg(feature = "dataplane")]
mod auto;
mod failure;
mod fingerprint;
#[cfg(feature = "dataplane")]
mod libssl;
#[cfg(feature = "dataplane")]
mod record;
#[cfg(feature = "dataplane")]
mod session;
#[cfg(all(test, feature = "dataplane"))]
mod tests;
mod types;

pub use failure::{DtlsFailure, DtlsFailureReason, alert_name};
pub use fingerprint::{DtlsRole, Fingerprint, FingerprintError, HashAlg};
#[cfg(feature = "dataplane")]
pub use record::opens_client_hello;
#[cfg(feature = "dataplane")]
pub use session::{DtlsContext, DtlsIdentity, IdentityError, InMemoryOutcome, run_in_memory};
pub use types::{
    DtlsBackend, DtlsKeys, DtlsOptions, DtlsOptionsError, DtlsOutput, DtlsSession, KeyKind,
    PROFILES,
};
