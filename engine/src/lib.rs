//! srtp-engine: the data plane of a pair of daemons that carry tens of thousands of encrypted
//! RTP flows per machine.
//!
//! The crate is layered, each layer using only those above it in this list:
//! - [`proto`]: sans-IO protocol code (RTP/RTCP headers, SRTP/SRTCP, DTLS-SRTP, pacing,
//!   quality). No sockets, no threads, no clock; the per-packet functions work in place on
//!   caller buffers and never allocate.
//! - [`model`]: what a client asks of a stream and gets back, the events and the counters.
//! - [`ctl`]: the control protocol's types, a typed client, and (with the data plane) the
//!   control socket's server; [`metrics`]: the Prometheus exposition.
//! - With the `dataplane` feature (on by default): `io` (batched UDP I/O behind one trait:
//!   io_uring, and an epoll fallback), `media` (the per-leg media logic, sans-IO), the
//!   pinned workers that own sockets, streams and timers, [`runtime`] (starts them and routes
//!   requests to the one that owns a stream) and `config` (the daemon's TOML config).
//!
//! A client that only talks to an engine builds the crate with `default-features = false`
//! and links none of the data plane.
//!
//! The repository's `docs/architecture.md` has the per-packet path, the sans-IO contracts,
//! the registries (suites, metrics, commands, events) and how to add to each, and the test
//! layers.
#![deny(unsafe_code)]

#[cfg(feature = "cli-assets")]
pub mod cli_assets;
#[cfg(feature = "dataplane")]
pub mod config;
pub mod ctl;
#[cfg(feature = "dataplane")]
pub mod io;
#[cfg(feature = "dataplane")]
pub(crate) mod media;
pub mod metrics;
pub mod model;
pub mod proto;
#[cfg(feature = "dataplane")]
pub mod runtime;
#[cfg(feature = "dataplane")]
pub(crate) mod worker;
