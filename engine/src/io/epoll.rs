//! The epoll fallback: mio for readiness (edge-triggered), `recvmmsg` to drain a ready socket
//! in one call, `sendmmsg` for each run of queued sends on one socket.
//!
//! Used where io_uring is refused (containers often block it) or when the config forces it.
//! Buffers are fixed pools, as in the io_uring backend, and a received datagram is sent on from
//! its own buffer.

#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::addr::{RawAddr, parse_sockaddr, raw_bytes};
use super::backend::{
    BUF_SIZE, BackendKind, DROP_CMSG_SPACE, DropTracker, Io, IoConfig, IoStats, RxMeta, SockId,
    rxq_ovfl,
};

/// Datagrams asked of one `recvmmsg` / sent by one `sendmmsg`.
const MMSG: usize = 32;

struct EpSock {
    sock: UdpSocket,
    ready: bool,
}

#[derive(Clone, Copy)]
enum BufRef {
    Rx(u32),
    Tx(u32),
}

#[derive(Clone, Copy)]
struct PendingSend {
    sock: SockId,
    buf: BufRef,
    len: usize,
    to: Option<SocketAddr>,
}

#[derive(Clone, Copy)]
struct RxEntry {
    meta: RxMeta,
    buf: u32,
    sent: bool,
}

/// The epoll backend. See the module docs.
pub struct EpollIo {
    poll: Poll,
    events: Events,
    socks: Vec<Option<EpSock>>,
    free_socks: Vec<u32>,
    /// Slots of removed sockets, free again after the next flush.
    released: Vec<u32>,
    ready: Vec<u32>,
    rx_mem: Vec<u8>,
    rx_free: Vec<u32>,
    batch: Vec<RxEntry>,
    tx_mem: Vec<u8>,
    tx_free: Vec<u32>,
    tx_current: Option<u32>,
    pending: Vec<PendingSend>,
    // recvmmsg / sendmmsg scratch, reused every call.
    names: Vec<libc::sockaddr_in6>,
    /// One control buffer per message, for the SO_RXQ_OVFL drop count (u64 for alignment).
    controls: Vec<[u64; DROP_CMSG_SPACE / 8]>,
    drops: DropTracker,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    send_addrs: Vec<RawAddr>,
    config: IoConfig,
    stats: IoStats,
}

fn zeroed_sockaddr_in6() -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6 (a plain C struct).
    unsafe { std::mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

impl EpollIo {
    /// Creates the epoll instance and the buffer pools.
    pub fn new(config: IoConfig) -> io::Result<EpollIo> {
        let rx = config.rx_buffers.clamp(64, 65_536);
        let tx = config.tx_buffers.clamp(16, 65_536);
        Ok(EpollIo {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            socks: Vec::new(),
            free_socks: Vec::new(),
            released: Vec::new(),
            ready: Vec::new(),
            rx_mem: vec![0; rx as usize * BUF_SIZE],
            rx_free: (0..rx).rev().collect(),
            batch: Vec::with_capacity(rx as usize),
            tx_mem: vec![0; tx as usize * BUF_SIZE],
            tx_free: (0..tx).rev().collect(),
            tx_current: None,
            pending: Vec::with_capacity(rx as usize + tx as usize),
            names: vec![zeroed_sockaddr_in6(); MMSG],
            controls: vec![[0; DROP_CMSG_SPACE / 8]; MMSG],
            drops: DropTracker::default(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                MMSG
            ],
            hdrs: vec![zeroed_mmsghdr(); MMSG],
            send_addrs: vec![RawAddr::zeroed(); MMSG],
            config,
            stats: IoStats::default(),
        })
    }

    fn buf_ptr(&mut self, b: BufRef) -> *mut u8 {
        match b {
            BufRef::Rx(i) => self.rx_mem[i as usize * BUF_SIZE..].as_mut_ptr(),
            BufRef::Tx(i) => self.tx_mem[i as usize * BUF_SIZE..].as_mut_ptr(),
        }
    }

    fn release(&mut self, b: BufRef) {
        match b {
            BufRef::Rx(i) => self.rx_free.push(i),
            BufRef::Tx(i) => self.tx_free.push(i),
        }
    }

    /// Sends everything queued: one `sendmmsg` per run of sends on the same socket.
    fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        while at < pending.len() {
            let sock = pending[at].sock;
            let mut n = 0;
            while at + n < pending.len() && n < MMSG && pending[at + n].sock == sock {
                let p = pending[at + n];
                let ptr = self.buf_ptr(p.buf);
                self.iovs[n] = libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: p.len,
                };
                let mut hdr = zeroed_mmsghdr();
                if let Some(to) = p.to {
                    self.send_addrs[n] = RawAddr::new(to);
                    hdr.msg_hdr.msg_name = self.send_addrs[n].as_ptr() as *mut libc::c_void;
                    hdr.msg_hdr.msg_namelen = self.send_addrs[n].len();
                }
                hdr.msg_hdr.msg_iov = &mut self.iovs[n];
                hdr.msg_hdr.msg_iovlen = 1;
                self.hdrs[n] = hdr;
                n += 1;
            }
            let fd = self
                .socks
                .get(sock as usize)
                .and_then(|s| s.as_ref())
                .map(|s| s.sock.as_raw_fd());
            let mut sent = 0;
            if let Some(fd) = fd {
                while sent < n {
                    self.stats.syscalls += 1;
                    // SAFETY: hdrs[sent..n] point at iovecs, buffers and addresses owned by
                    // self, all alive for the call.
                    let rc = unsafe {
                        libc::sendmmsg(
                            fd,
                            self.hdrs[sent..].as_mut_ptr(),
                            (n - sent) as u32,
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if rc <= 0 {
                        // The first unsent datagram failed (full buffer, ICMP error): count it
                        // and go on with the rest.
                        self.stats.tx_errors += 1;
                        sent += 1;
                    } else {
                        self.stats.tx_packets += rc as u64;
                        sent += rc as usize;
                    }
                }
            } else {
                self.stats.tx_errors += n as u64;
            }
            for p in &pending[at..at + n] {
                self.release(p.buf);
            }
            at += n;
        }
        self.pending = pending;
        self.pending.clear();
        self.free_socks.append(&mut self.released);
    }

    /// Reads what a ready socket holds (up to one `recvmmsg`); returns whether it may hold more.
    fn drain(&mut self, slot: u32) -> bool {
        let Some(fd) = self
            .socks
            .get(slot as usize)
            .and_then(|s| s.as_ref())
            .map(|s| s.sock.as_raw_fd())
        else {
            return false;
        };
        let want = MMSG.min(self.rx_free.len());
        if want == 0 {
            self.stats.rx_no_buffer += 1;
            return true;
        }
        let mut bufs = [0u32; MMSG];
        for (k, b) in bufs.iter_mut().enumerate().take(want) {
            *b = self.rx_free[self.rx_free.len() - 1 - k];
            let ptr = self.buf_ptr(BufRef::Rx(*b));
            self.iovs[k] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: BUF_SIZE,
            };
            let mut hdr = zeroed_mmsghdr();
            hdr.msg_hdr.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in6).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            hdr.msg_hdr.msg_iov = &mut self.iovs[k];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = self.controls[k].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = DROP_CMSG_SPACE;
            self.hdrs[k] = hdr;
        }
        self.stats.syscalls += 1;
        // SAFETY: hdrs[..want] point at our name slots and at free receive buffers of BUF_SIZE.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                want as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                self.stats.rx_errors += 1;
            }
            return false;
        }
        let got = rc as usize;
        // The buffers handed to the kernel were the last `want` of the free list, in order.
        let keep = self.rx_free.len() - got;
        self.rx_free.truncate(keep);
        for (k, &b) in bufs.iter().enumerate().take(got) {
            let hdr = &self.hdrs[k];
            let len = hdr.msg_len as usize;
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let namelen = (hdr.msg_hdr.msg_namelen as usize).min(28);
            let clen = hdr.msg_hdr.msg_controllen.min(DROP_CMSG_SPACE);
            if clen > 0 {
                let mut bytes = [0u8; DROP_CMSG_SPACE];
                for (i, w) in self.controls[k].iter().enumerate() {
                    bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
                }
                if let Some(total) = rxq_ovfl(&bytes[..clen]) {
                    self.stats.kernel_drops += self.drops.update(slot, total);
                }
            }
            let name = raw_bytes(&self.names[k]);
            let from = parse_sockaddr(&name[..namelen]);
            match (from, truncated) {
                (Some(from), false) => {
                    self.stats.rx_packets += 1;
                    self.batch.push(RxEntry {
                        meta: RxMeta {
                            sock: slot,
                            from,
                            len,
                        },
                        buf: b,
                        sent: false,
                    });
                }
                (_, true) => {
                    self.stats.rx_truncated += 1;
                    self.rx_free.push(b);
                }
                (None, false) => {
                    self.stats.rx_errors += 1;
                    self.rx_free.push(b);
                }
            }
        }
        got == want
    }
}

impl Io for EpollIo {
    fn kind(&self) -> BackendKind {
        BackendKind::Epoll
    }

    fn add_socket(&mut self, sock: UdpSocket) -> io::Result<SockId> {
        let slot = match self.free_socks.pop() {
            Some(s) => s,
            None => {
                if self.socks.len() as u32 >= self.config.max_sockets {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        "socket table full",
                    ));
                }
                self.socks.push(None);
                (self.socks.len() - 1) as u32
            }
        };
        self.stats.syscalls += 1;
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&sock.as_raw_fd()),
            Token(slot as usize),
            Interest::READABLE,
        ) {
            self.free_socks.push(slot);
            return Err(e);
        }
        self.socks[slot as usize] = Some(EpSock { sock, ready: true });
        self.drops.reset(slot);
        // Edge-triggered: datagrams that arrived before registration raise no event.
        self.ready.push(slot);
        Ok(slot)
    }

    fn remove_socket(&mut self, id: SockId) {
        if let Some(s) = self.socks.get_mut(id as usize).and_then(Option::take) {
            self.stats.syscalls += 1;
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&s.sock.as_raw_fd()));
            self.ready.retain(|&r| r != id);
            // Queued sends name their socket by slot: the slot is reused only after the next
            // flush, or a new socket there would carry the old stream's packets.
            self.released.push(id);
        }
    }

    fn connect(&mut self, id: SockId, peer: SocketAddr) -> io::Result<()> {
        let s = self
            .socks
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        self.stats.syscalls += 1;
        s.sock.connect(peer)
    }

    fn local_addr(&self, id: SockId) -> io::Result<SocketAddr> {
        self.socks
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?
            .sock
            .local_addr()
    }

    fn poll(&mut self, timeout: Duration) -> io::Result<()> {
        self.stats.polls += 1;
        self.flush();
        let wait = if self.ready.is_empty() {
            Some(timeout)
        } else {
            Some(Duration::ZERO)
        };
        self.stats.syscalls += 1;
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            let slot = ev.token().0 as u32;
            if let Some(Some(s)) = self.socks.get_mut(slot as usize)
                && !s.ready
            {
                s.ready = true;
                self.ready.push(slot);
            }
        }
        // One recvmmsg per ready socket per turn; sockets that may hold more stay ready.
        let ready = std::mem::take(&mut self.ready);
        let mut still = Vec::new();
        for &slot in &ready {
            if self.drain(slot) {
                still.push(slot);
            } else if let Some(Some(s)) = self.socks.get_mut(slot as usize) {
                s.ready = false;
            }
        }
        self.ready = ready;
        self.ready.clear();
        self.ready.extend_from_slice(&still);
        Ok(())
    }

    fn rx_count(&self) -> usize {
        self.batch.len()
    }

    fn rx_meta(&self, i: usize) -> RxMeta {
        self.batch[i].meta
    }

    fn rx_buf(&mut self, i: usize) -> &mut [u8] {
        let b = self.batch[i].buf as usize;
        &mut self.rx_mem[b * BUF_SIZE..(b + 1) * BUF_SIZE]
    }

    fn send_rx(&mut self, i: usize, sock: SockId, len: usize, to: Option<SocketAddr>) {
        let e = &mut self.batch[i];
        if e.sent {
            return;
        }
        e.sent = true;
        let buf = BufRef::Rx(e.buf);
        self.pending.push(PendingSend {
            sock,
            buf,
            len: len.min(BUF_SIZE),
            to,
        });
    }

    fn end_rx(&mut self) {
        for k in 0..self.batch.len() {
            let e = self.batch[k];
            if !e.sent {
                self.rx_free.push(e.buf);
            }
        }
        self.batch.clear();
    }

    fn tx_buf(&mut self) -> Option<&mut [u8]> {
        let slot = match self.tx_current {
            Some(s) => s,
            None => {
                if self.tx_free.is_empty() && !self.pending.is_empty() {
                    // Every send buffer is queued: send them now rather than drop packets.
                    self.flush();
                }
                let Some(s) = self.tx_free.pop() else {
                    self.stats.tx_no_buffer += 1;
                    return None;
                };
                self.tx_current = Some(s);
                s
            }
        } as usize;
        Some(&mut self.tx_mem[slot * BUF_SIZE..(slot + 1) * BUF_SIZE])
    }

    fn send_tx(&mut self, sock: SockId, len: usize, to: Option<SocketAddr>) {
        if let Some(s) = self.tx_current.take() {
            self.pending.push(PendingSend {
                sock,
                buf: BufRef::Tx(s),
                len: len.min(BUF_SIZE),
                to,
            });
        }
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
