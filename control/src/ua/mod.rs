//! A SIP user agent: places calls (UAC) and answers them (UAS) over one transport, with
//! offer/answer, dialogs through proxies, digest authentication, optional registration, and
//! media through [`crate::media::MediaEngine`].
//!
//! The parts, each with one job:
//! - [`dialog`]: RFC 3261 section 12: route sets, remote targets, CSeq, requests in a dialog;
//! - [`core`]: the sans-IO core. Time, messages, commands and media replies go in
//!   (`handle_*(now, ..)`); messages to send, media requests and events come out (`poll_*`),
//!   and [`UaCore::poll_timeout`] says when to come back. No sockets, no clock, no engine;
//! - [`driver`]: the tokio driver that carries the core's outputs out: the SIP transport, a
//!   thread of its own for the engine's blocking requests, and the handle, [`UserAgent`].

mod call;
pub mod core;
pub mod dialog;
pub mod driver;
mod inputs;
pub mod io;
mod model;
mod transactions;
mod uac;
mod uas;

pub use self::core::{UaCore, UaEvent};
pub use dialog::{Dialog, DialogError};
pub use driver::{CallOptions, ShutdownSummary, UserAgent};
pub use model::{CallError, CallInfo, Ended, EndedBy, RegisterConfig, UaConfig, UasEvent};
