//! SIP (RFC 3261): messages, URIs, digest authentication, transactions, transports and the
//! per-endpoint message log.

pub mod auth;
pub mod log;
pub mod message;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use message::{Message, Method, ParseError, StartLine};
pub use uri::{NameAddr, Uri};
