//! Why bytes are not a SIP message, and the limits that say so: shared by the message parser
//! and the URI parser (each needs the other's input checked, not the other).

use thiserror::Error;

/// Largest message we accept (headers and body).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most header lines we accept in one message.
pub const MAX_HEADERS: usize = 256;

/// Why bytes are not a SIP message. Every variant is the peer's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The bytes are not UTF-8 where text is required.
    #[error("not UTF-8 text")]
    NotText,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line: {0}")]
    BadStartLine(&'static str),
    /// A header line is malformed.
    #[error("bad header: {0}")]
    BadHeader(&'static str),
    /// A URI is malformed.
    #[error("bad URI: {0}")]
    BadUri(&'static str),
    /// A mandatory header is missing (RFC 3261 8.1.1).
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    /// The message or its header count exceeds our limits.
    #[error("message too large (limit {MAX_MESSAGE_BYTES} bytes, {MAX_HEADERS} headers)")]
    TooLarge,
    /// Content-Length is not a number or disagrees with the bytes that came.
    #[error("bad Content-Length: {0}")]
    BadContentLength(&'static str),
    /// The header section never ended (no empty line).
    #[error("header section not terminated")]
    Unterminated,
}
