//! The control socket: a Unix domain socket carrying newline-delimited JSON requests, replies
//! and events (`docs/control-protocol.md` is the reference).
//!
//! - [`protocol`]: every request, reply and event as a Rust type, shared by the engine and its
//!   clients.
//! - [`client`]: a typed blocking client; [`api`]: the stream operations, the same over the
//!   socket and on an engine in this process.
//! - With the data plane: the server (`CtlServer`), and the handler that runs each command
//!   against the engine.

pub mod api;
pub mod client;
#[cfg(feature = "dataplane")]
mod handler;
pub mod protocol;
#[cfg(feature = "dataplane")]
mod server;

#[cfg(feature = "dataplane")]
pub(crate) use server::group_id;
#[cfg(feature = "dataplane")]
pub use server::{CtlCounters, CtlOptions, CtlServer, CtlStartError};
