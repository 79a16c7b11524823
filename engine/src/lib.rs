//! srtp-engine: the data plane of a pair of daemons that carry tens of thousands of encrypted
//! RTP flows per machine.
//!
//! The crate is layered as `../shared/DESIGN.md` draws it:
//! - [`proto`]: sans-IO protocol code (RTP/RTCP headers, SRTP/SRTCP). No sockets, no threads,
//!   no clock; the per-packet functions work in place on caller buffers and never allocate.
//!
//! - [`io`]: batched UDP I/O behind one trait: io_uring, and an epoll fallback.
//! - [`worker`]: the pinned loop that owns sockets, streams and timers; [`runtime`] starts the
//!   workers and routes requests to the one that owns a stream.
//! - [`ctl`]: the control socket (newline-delimited JSON, `docs/control-protocol.md`) and a
//!   client for it; [`metrics`]: the Prometheus endpoint (`docs/metrics.md`).
//! - [`config`]: the daemon's TOML config.
#![deny(unsafe_code)]

pub mod config;
pub mod ctl;
pub mod io;
pub mod metrics;
pub mod proto;
pub mod runtime;
pub mod worker;
