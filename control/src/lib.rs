//! `srtp-control`: the signaling layer of srtp-engine.
//!
//! It speaks SIP (UDP, TCP, TLS) and SDP offer/answer, negotiates SRTP (SDES and DTLS-SRTP)
//! and drives the engine's media over its control socket, through the small [`media`] trait
//! so that signaling can be tested on its own.
//!
//! Layers, bottom up:
//! - [`sip`]: messages, URIs, digest authentication, transactions (sans-IO; time is an
//!   input), transports (UDP, TCP, TLS with rustls) and the message log;
//! - [`sdp`]: sessions, `a=crypto` (RFC 4568), `a=fingerprint`/`a=setup` (RFC 8842),
//!   offer/answer with an SRTP policy, and the encryption verdict of a call;
//! - [`ua`]: a user agent that places and answers calls over one transport;
//! - [`scenario`]: load runs (`srtp-control run`, `srtp-control demo`) and their reports.
//!
//! The repository's `docs/architecture.md` draws both daemons and their contracts.

mod charts;
pub mod config_file;
pub mod media;
pub mod pki;
pub mod register;
pub mod scenario;
pub mod sdp;
pub mod sip;
pub mod ua;
