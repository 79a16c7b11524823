//! Batched UDP I/O: an io_uring backend and an epoll fallback behind one small trait.
//!
//! A worker drives its backend in turns:
//! 1. [`Io::poll`] submits every send queued in the previous turn and waits (up to a timeout)
//!    for datagrams, collecting a batch of them;
//! 2. the worker reads each received datagram in place ([`Io::rx_buf`]), and may send it on,
//!    changed in place, with [`Io::send_rx`] (echo and relay: no copy), or build new packets in
//!    a send buffer ([`Io::tx_buf`] then [`Io::send_tx`]);
//! 3. [`Io::end_rx`] gives the batch's unsent buffers back.
//!
//! Nothing here allocates per packet: receive and send buffers are fixed pools made at start.
//! Each backend counts the system calls it makes, so benchmarks report syscalls per packet.

mod addr;
pub mod epoll;
pub mod socket;
pub mod uring;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

pub use addr::RawAddr;

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

/// Opens the backend `kind` asks for; with `fallback`, an io_uring that the kernel refuses
/// (a container's seccomp profile, `kernel.io_uring_disabled`) falls back to epoll. Returns the
/// backend and, on fallback, the io_uring error that caused it.
///
/// Call it on the thread that will drive the backend: the io_uring is created with
/// `SINGLE_ISSUER`, which ties it to its creating thread.
pub fn open(
    kind: BackendKind,
    fallback: bool,
    config: IoConfig,
) -> io::Result<(Box<dyn Io>, Option<io::Error>)> {
    match kind {
        BackendKind::IoUring => match uring::UringIo::new(config) {
            Ok(io) => Ok((Box::new(io), None)),
            Err(e) if fallback => Ok((Box::new(epoll::EpollIo::new(config)?), Some(e))),
            Err(e) => Err(e),
        },
        BackendKind::Epoll => Ok((Box::new(epoll::EpollIo::new(config)?), None)),
    }
}

#[cfg(test)]
mod tests {

    fn cmsg(level: i32, kind: i32, value: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&20usize.to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v.extend_from_slice(&[0; 4]); // padding to 8
        v
    }

    #[test]
    fn drop_counts_come_from_the_right_control_message() {
        let ovfl = cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 7);
        assert_eq!(rxq_ovfl(&ovfl), Some(7));
        // Another message first, then ours.
        let mut two = cmsg(libc::SOL_IP, libc::IP_TOS, 1);
        two.extend(cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 9));
        assert_eq!(rxq_ovfl(&two), Some(9));
        // Truncated, lying lengths, empty: no count, no panic.
        assert_eq!(rxq_ovfl(&ovfl[..10]), None);
        let mut liar = ovfl.clone();
        liar[..8].copy_from_slice(&4000usize.to_ne_bytes());
        assert_eq!(rxq_ovfl(&liar), None);
        let mut zero = ovfl.clone();
        zero[..8].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(rxq_ovfl(&zero), None);
        assert_eq!(rxq_ovfl(&[]), None);
        // Running totals become sums; a new socket starts again from zero.
        let mut t = DropTracker::default();
        t.reset(3);
        assert_eq!(t.update(3, 5), 5);
        assert_eq!(t.update(3, 12), 7);
        t.reset(3);
        assert_eq!(t.update(3, 2), 2);
        assert_eq!(t.update(99, 1), 0);
    }

    use super::*;
    use std::net::UdpSocket;
    use std::time::Instant;

    /// Both backends: receive from several peers, echo in place (send_rx) on unconnected and
    /// connected sockets, send generated packets (tx_buf), remove a socket.
    fn echo_round_trip(kind: BackendKind) {
        let (mut io, fell_back) = open(kind, false, IoConfig::default()).unwrap();
        assert!(fell_back.is_none());
        assert_eq!(io.kind(), kind);
        let opts = socket::SocketOptions::default();
        let mut ids = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..8 {
            let s = socket::bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
            ids.push(io.add_socket(s).unwrap());
            let p = UdpSocket::bind("127.0.0.1:0").unwrap();
            p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            peers.push(p);
        }
        // Connect the odd sockets to their peers.
        for k in (1..8).step_by(2) {
            io.connect(ids[k], peers[k].local_addr().unwrap()).unwrap();
        }
        for round in 0..3u8 {
            for (k, p) in peers.iter().enumerate() {
                let to = io.local_addr(ids[k]).unwrap();
                p.send_to(&[round, k as u8, 1, 2, 3], to).unwrap();
            }
            let mut seen = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            while seen < peers.len() && Instant::now() < deadline {
                io.poll(Duration::from_millis(10)).unwrap();
                for i in 0..io.rx_count() {
                    let m = io.rx_meta(i);
                    let k = ids.iter().position(|&id| id == m.sock).unwrap();
                    assert_eq!(m.from, peers[k].local_addr().unwrap());
                    let buf = io.rx_buf(i);
                    assert_eq!(&buf[..m.len], &[round, k as u8, 1, 2, 3]);
                    buf[m.len] = 0xee; // grow in place
                    let to = if k % 2 == 1 { None } else { Some(m.from) };
                    io.send_rx(i, m.sock, m.len + 1, to);
                    seen += 1;
                }
                io.end_rx();
            }
            assert_eq!(seen, peers.len());
            io.poll(Duration::ZERO).unwrap(); // submit the echoes
            for (k, p) in peers.iter().enumerate() {
                let mut b = [0u8; 64];
                let (n, from) = p.recv_from(&mut b).unwrap();
                assert_eq!(&b[..n], &[round, k as u8, 1, 2, 3, 0xee]);
                assert_eq!(from, io.local_addr(ids[k]).unwrap());
            }
        }
        // Generated packets.
        let buf = io.tx_buf().unwrap();
        buf[..4].copy_from_slice(b"ping");
        io.send_tx(ids[0], 4, Some(peers[0].local_addr().unwrap()));
        io.poll(Duration::ZERO).unwrap();
        let mut b = [0u8; 16];
        let (n, _) = peers[0].recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping");
        // A removed socket receives nothing more; the others still work.
        io.remove_socket(ids[2]);
        let st = io.stats();
        assert!(st.rx_packets >= 24 && st.tx_packets >= 25, "{st:?}");
        assert!(st.syscalls > 0);
    }

    #[test]
    fn io_uring_echo_round_trip() {
        echo_round_trip(BackendKind::IoUring);
    }

    #[test]
    fn epoll_echo_round_trip() {
        echo_round_trip(BackendKind::Epoll);
    }

    /// A send queued for a socket that is then removed, with a new socket added before the
    /// next submission, must never leave through the new socket: queued sends name their
    /// socket by slot, and reusing the slot at once carried a deleted stream's last packet to
    /// the next stream's peer (seen as single SRTP authentication failures in load runs).
    #[test]
    fn a_send_queued_before_removal_never_leaves_through_the_next_socket() {
        for kind in [BackendKind::IoUring, BackendKind::Epoll] {
            let (mut io, _) = open(kind, false, IoConfig::default()).unwrap();
            let opts = socket::SocketOptions::default();
            let old_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            let new_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            new_peer
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let a = io
                .add_socket(socket::bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap())
                .unwrap();
            io.connect(a, old_peer.local_addr().unwrap()).unwrap();
            let buf = io.tx_buf().unwrap();
            buf[..3].copy_from_slice(b"old");
            io.send_tx(a, 3, None);
            io.remove_socket(a);
            let b = io
                .add_socket(socket::bind_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap())
                .unwrap();
            io.connect(b, new_peer.local_addr().unwrap()).unwrap();
            io.poll(Duration::ZERO).unwrap();
            let buf = io.tx_buf().unwrap();
            buf[..3].copy_from_slice(b"new");
            io.send_tx(b, 3, None);
            io.poll(Duration::ZERO).unwrap();
            let mut got = [0u8; 16];
            let (n, _) = new_peer.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], b"new", "{kind:?}: the new socket's first packet");
            assert!(
                new_peer.recv_from(&mut got).is_err(),
                "{kind:?}: a second packet reached the new peer"
            );
        }
    }

    #[test]
    fn oversized_datagrams_are_counted_not_delivered() {
        for kind in [BackendKind::IoUring, BackendKind::Epoll] {
            let (mut io, _) = open(kind, false, IoConfig::default()).unwrap();
            let s = socket::bind_udp("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
            let id = io.add_socket(s).unwrap();
            let to = io.local_addr(id).unwrap();
            let p = UdpSocket::bind("127.0.0.1:0").unwrap();
            p.send_to(&[0x80; 4000], to).unwrap();
            p.send_to(&[0x80; 100], to).unwrap();
            let mut got = Vec::new();
            for _ in 0..50 {
                io.poll(Duration::from_millis(10)).unwrap();
                for i in 0..io.rx_count() {
                    got.push(io.rx_meta(i).len);
                }
                io.end_rx();
                if !got.is_empty() {
                    break;
                }
            }
            assert_eq!(got, vec![100], "{kind:?}");
            assert_eq!(io.stats().rx_truncated, 1, "{kind:?}");
        }
    }
}
