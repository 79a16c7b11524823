//! The stream operations a signaling layer needs, the same whether the engine is behind its
//! control socket ([`super::client::CtlClient`]) or runs in this process (`Arc<Engine>`, with
//! the data plane): the same request types, the same checks, the same errors.

use std::time::Duration;

use super::protocol::{CtlError, ErrorCode, StreamRequest, UpdateRequest, Updated};
use crate::model::{StreamInfo, StreamStats};

/// What went wrong on the client side, or the engine's error reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine sent something that is not a reply of the expected shape.
    #[error("control socket: unexpected line from the engine: {0}")]
    Protocol(String),
    /// The engine answered with an error.
    #[error("{0}")]
    Remote(CtlError),
    /// No reply or event in time.
    #[error("control socket: no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The engine's error code, when this is an error reply.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Create, change, read and delete streams.
pub trait StreamApi {
    /// `create`: the stream's id, ports and (for DTLS) the engine's fingerprint.
    fn create(&mut self, req: StreamRequest) -> Result<StreamInfo, ClientError>;
    /// `update`.
    fn update(&mut self, req: UpdateRequest) -> Result<Updated, ClientError>;
    /// `delete`: the stream's final statistics.
    fn delete(&mut self, stream: u64) -> Result<StreamStats, ClientError>;
    /// `stats`.
    fn stats(&mut self, stream: u64) -> Result<StreamStats, ClientError>;
}
