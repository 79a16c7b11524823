//! What a backend is to the worker: the [`Io`] trait, its buffers and counters, and the
//! drop figures the kernel gives per socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// A socket's handle inside a backend (an index into its socket table).
pub type SockId = u32;

/// Size of every receive and send buffer. Datagrams longer than the room left after the
/// backend's own header are truncated by the kernel and counted in [`IoStats::rx_truncated`].
pub const BUF_SIZE: usize = 2048;

/// Which backend a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// io_uring: multishot receive with a provided-buffer ring, batched send SQEs.
    IoUring,
    /// epoll (mio) with recvmmsg/sendmmsg.
    Epoll,
}

impl BackendKind {
    /// The name used in configs, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    /// Parses the name [`BackendKind::name`] gives.
    fn from_str(s: &str) -> Result<BackendKind, String> {
        [BackendKind::IoUring, BackendKind::Epoll]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?} is not io_uring or epoll"))
    }
}

pub use crate::model::IoStats;

/// Room for one `SO_RXQ_OVFL` control message (CMSG_SPACE(4) on 64-bit Linux).
pub(crate) const DROP_CMSG_SPACE: usize = 24;

/// The `SO_RXQ_OVFL` drop count in a received control buffer: the socket's total drops when the
/// datagram was queued. The kernel adds it only once the count is non-zero.
pub(crate) fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    const HDR: usize = 16; // cmsg_len (8), cmsg_level (4), cmsg_type (4)
    let mut at = 0;
    while control.len() >= at + HDR {
        let len = usize::from_ne_bytes(control[at..at + 8].try_into().ok()?);
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + 12..at + 16].try_into().ok()?);
        if len < HDR || at + len > control.len() {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL && len >= HDR + 4 {
            return Some(u32::from_ne_bytes(
                control[at + HDR..at + HDR + 4].try_into().ok()?,
            ));
        }
        at += len.div_ceil(8) * 8;
    }
    None
}

/// Each socket's last reported drop count, to turn the kernel's running totals into a sum.
#[derive(Debug, Default)]
pub(crate) struct DropTracker {
    last: Vec<u32>,
}

impl DropTracker {
    /// A new socket in `slot` starts from zero.
    pub(crate) fn reset(&mut self, slot: SockId) {
        let i = slot as usize;
        if self.last.len() <= i {
            self.last.resize(i + 1, 0);
        }
        self.last[i] = 0;
    }

    /// New drops on `slot` given the total the kernel reported.
    pub(crate) fn update(&mut self, slot: SockId, total: u32) -> u64 {
        let Some(last) = self.last.get_mut(slot as usize) else {
            return 0;
        };
        let new = total.wrapping_sub(*last);
        *last = total;
        u64::from(new)
    }
}

/// Tuning shared by both backends.
#[derive(Debug, Clone, Copy)]
pub struct IoConfig {
    /// Receive buffers in the pool (io_uring: rounded up to a power of two, at most 32768).
    pub rx_buffers: u32,
    /// Send buffers in the pool.
    pub tx_buffers: u32,
    /// Most sockets the backend will hold (io_uring registers a file table this large).
    pub max_sockets: u32,
    /// Completions to wait for before a wait returns (io_uring) ...
    pub wait_batch: u32,
    /// ... but only for this long (µs); after it, one completion ends the wait. 0 disables
    /// batch waiting (return on the first completion).
    pub batch_wait_us: u32,
}

impl Default for IoConfig {
    fn default() -> IoConfig {
        IoConfig {
            rx_buffers: 4096,
            tx_buffers: 4096,
            max_sockets: 65_536,
            wait_batch: 16,
            batch_wait_us: 200,
        }
    }
}

/// One received datagram of the current batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// The socket it arrived on.
    pub sock: SockId,
    /// Its source address.
    pub from: SocketAddr,
    /// Its length in the buffer.
    pub len: usize,
}

/// The batch I/O interface the worker runs on. See the module docs for the calling order.
pub trait Io {
    /// The backend's kind.
    fn kind(&self) -> BackendKind;
    /// Takes ownership of a bound, non-blocking UDP socket and starts receiving on it.
    fn add_socket(&mut self, sock: UdpSocket) -> io::Result<SockId>;
    /// Stops receiving on a socket and closes it. Datagrams already collected stay valid until
    /// [`Io::end_rx`].
    fn remove_socket(&mut self, id: SockId);
    /// Connects a socket to its peer: the kernel then filters other sources, and sends carry no
    /// address.
    fn connect(&mut self, id: SockId, peer: SocketAddr) -> io::Result<()>;
    /// The socket's local address.
    fn local_addr(&self, id: SockId) -> io::Result<SocketAddr>;
    /// Submits queued sends, then waits up to `timeout` for datagrams and collects a batch.
    fn poll(&mut self, timeout: Duration) -> io::Result<()>;
    /// Datagrams in the current batch.
    fn rx_count(&self) -> usize;
    /// Where datagram `i` of the batch came from and how long it is.
    fn rx_meta(&self, i: usize) -> RxMeta;
    /// Datagram `i`'s buffer: the datagram is at the start, followed by free room (up to the
    /// buffer's end) for in-place growth such as an SRTP tag.
    fn rx_buf(&mut self, i: usize) -> &mut [u8];
    /// Sends the first `len` bytes of datagram `i`'s buffer on `sock` (to `to`, or to the
    /// connected peer when `None`). The buffer goes back to the pool once the kernel is done.
    /// Each datagram may be sent at most once.
    fn send_rx(&mut self, i: usize, sock: SockId, len: usize, to: Option<SocketAddr>);
    /// Gives the unsent buffers of the batch back to the pool.
    fn end_rx(&mut self);
    /// A free send buffer to build a packet in, or `None` when all are in flight (counted).
    fn tx_buf(&mut self) -> Option<&mut [u8]>;
    /// Queues the buffer last returned by [`Io::tx_buf`]: its first `len` bytes, on `sock`.
    fn send_tx(&mut self, sock: SockId, len: usize, to: Option<SocketAddr>);
    /// The backend's counters.
    fn stats(&self) -> IoStats;
}
