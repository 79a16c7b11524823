//! Why a stream request failed.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::proto::pacer::ProfileError;
use crate::proto::srtp::SrtpConfigError;

/// Why no socket could be had.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Every port of the range is in use on this address.
    #[error("no free port in {first}-{last} on {ip}")]
    PortsExhausted {
        /// The local address.
        ip: IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The process hit its open-file limit.
    #[error(
        "out of file descriptors: the open-file limit is {limit} (RLIMIT_NOFILE, raised to the hard limit at start); \
         use the shared-port socket model (socket = \"shared\") for more streams than that"
    )]
    FileLimit {
        /// The soft limit in force.
        limit: u64,
    },
    /// Another system error.
    #[error("socket on {ip}: {source}")]
    Io {
        /// The local address.
        ip: IpAddr,
        /// The error.
        source: io::Error,
    },
}

/// Why a stream request failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No stream with this id.
    #[error("no stream {0}")]
    NoSuchStream(u64),
    /// The request is inconsistent.
    #[error("invalid stream: {0}")]
    Invalid(&'static str),
    /// The codec profile is out of range.
    #[error("codec profile: {0}")]
    Profile(#[from] ProfileError),
    /// The local IP is not one the engine is configured with.
    #[error("local IP {0} is not configured (sockets.local_ips)")]
    UnknownLocalIp(IpAddr),
    /// No socket could be had.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The backend refused the socket.
    #[error("I/O backend: {0}")]
    Io(#[from] std::io::Error),
    /// The keys or SRTP options are invalid.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpConfigError),
    /// Another stream already uses this remote address (and SSRC) on the shared port.
    #[error("remote {0} is already taken on the shared port (give remote_ssrc to share it)")]
    SharedRemoteTaken(SocketAddr),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The worker holds its maximum number of streams.
    #[error("worker full ({0} streams; streams.max_per_worker)")]
    WorkerFull(usize),
    /// DTLS-SRTP was asked for and the engine has no DTLS context.
    #[error("DTLS-SRTP is not configured in this engine")]
    DtlsUnavailable,
}
