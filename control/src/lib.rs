//! `srtp-control`: the signaling layer of srtp-engine.
//!
//! It will speak SIP (UDP, TCP, TLS) and SDP offer/answer, negotiate SRTP (SDES and DTLS-SRTP)
//! and drive the engine's media over its control socket. See `../shared/DESIGN.md` for the
//! shape it grows into. Nothing is here yet but this skeleton.
