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
mod backend;
pub mod epoll;
pub mod socket;
pub mod uring;

use std::io;

pub use addr::RawAddr;
pub use backend::{BUF_SIZE, BackendKind, Io, IoConfig, IoStats, RxMeta, SockId};

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
    use std::time::Duration;

    use super::backend::{DropTracker, rxq_ovfl};

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
