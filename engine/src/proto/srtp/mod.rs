//! SRTP and SRTCP (RFC 3711), with the AES-256 suites of RFC 6188 and the AES-GCM suites of
//! RFC 7714.
//!
//! - [`Suite`]: the suites, declared once in one table (SDP names, DTLS-SRTP profile ids, key,
//!   salt and tag lengths).
//! - [`MasterKey`]: key || salt with an optional MKI and lifetime; zeroized on drop, never
//!   printed.
//! - [`SrtpPolicy`] builds an [`SrtpOutbound`] (protect) or [`SrtpInbound`] (unprotect).
//!   Both work in place on the caller's buffer, estimate the rollover counter, keep a replay
//!   window per SSRC (128 packets by default, up to 32768) that changes only after a packet
//!   authenticates, select keys by MKI, honour key lifetimes and the key derivation rate.
//! - Every per-packet failure is an [`SrtpError`]: `Copy`, allocation-free, with a stable
//!   [`SrtpError::name`] for counters.
//!
//! ```
//! use srtp_engine::proto::srtp::{MasterKey, SrtpInbound, SrtpOutbound, SrtpPolicy, Suite};
//!
//! let suite = Suite::AesCm128HmacSha1_80;
//! let material = [7u8; 30]; // key || salt, as SDES inline: carries it
//! let mut tx = SrtpOutbound::new(SrtpPolicy::new(suite, MasterKey::new(suite, &material)?))?;
//! let mut rx = SrtpInbound::new(SrtpPolicy::new(suite, MasterKey::new(suite, &material)?))?;
//!
//! let mut buf = [0u8; 1500];
//! let rtp = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, b'h', b'i'];
//! buf[..rtp.len()].copy_from_slice(&rtp);
//! let len = tx.protect_rtp(&mut buf, rtp.len())?;
//! assert_eq!(len, rtp.len() + 10);
//! let len = rx.unprotect_rtp(&mut buf, len)?;
//! assert_eq!(&buf[..len], &rtp);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aes_ctr;
mod cipher;
mod context;
mod error;
mod kdf;
mod key;
pub mod replay;
pub mod roc;
mod suite;

pub use context::{BatchPacket, DEFAULT_MAX_SSRCS, SrtpInbound, SrtpOutbound, SrtpPolicy};
pub use error::{SrtpConfigError, SrtpError};
pub use key::{MAX_MKI_LEN, MasterKey};
pub use suite::{CipherKind, Suite, SuiteParams, UnknownSuite};

#[cfg(test)]
mod tests;
