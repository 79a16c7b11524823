//! srtp-engine: the data plane of a pair of daemons that carry tens of thousands of encrypted
//! RTP flows per machine.
//!
//! The crate is layered as `../shared/DESIGN.md` draws it:
//! - [`proto`]: sans-IO protocol code (RTP/RTCP headers, SRTP/SRTCP). No sockets, no threads,
//!   no clock; the per-packet functions work in place on caller buffers and never allocate.
//!
//! The I/O backends, pinned workers, control socket and metrics build on it.
#![deny(unsafe_code)]

pub mod config;
pub mod io;
pub mod proto;
pub mod runtime;
pub mod worker;
