//! UDP sockets for media: binding from a port range per local IP, buffer sizes, and the
//! process's open-file limit.

pub use crate::model::SocketError;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket options applied to every media socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_RCVBUF in bytes (0 keeps the kernel default).
    pub recv_buffer: usize,
    /// SO_SNDBUF in bytes (0 keeps the kernel default).
    pub send_buffer: usize,
}

/// Hands out ports of a range on one local IP, round robin, skipping ports in use.
///
/// Each worker owns its allocator over its own share of the range (worker `i` of `n` owns the
/// port pairs `2k, 2k+1` with `k % n == i`), so nothing is shared and an RTP/RTCP pair never
/// straddles two workers.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    first: u16,
    last: u16,
    offset: u16,
    step: u16,
    next: u16,
}

impl PortAllocator {
    /// Ports `first..=last` of share `offset` out of `step` shares.
    pub fn new(ip: IpAddr, first: u16, last: u16, offset: u16, step: u16) -> PortAllocator {
        let step = step.max(1);
        PortAllocator {
            ip,
            first,
            last: last.max(first),
            offset: offset % step,
            step,
            next: first,
        }
    }

    /// The local address ports are bound on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn owns(&self, port: u16) -> bool {
        (port / 2) % self.step == self.offset
    }

    /// Binds a socket on the next free port of the share. With `pair`, the port is even and
    /// the odd port above it is bound too (RTP and RTCP without rtcp-mux).
    pub fn bind(
        &mut self,
        opts: &SocketOptions,
        pair: bool,
    ) -> Result<(UdpSocket, Option<UdpSocket>), SocketError> {
        let span = u32::from(self.last - self.first) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= self.last {
                self.first
            } else {
                port + 1
            };
            if !self.owns(port) || (pair && (!port.is_multiple_of(2) || port >= self.last)) {
                continue;
            }
            match bind_udp(SocketAddr::new(self.ip, port), opts) {
                Ok(rtp) => {
                    if !pair {
                        return Ok((rtp, None));
                    }
                    match bind_udp(SocketAddr::new(self.ip, port + 1), opts) {
                        Ok(rtcp) => return Ok((rtp, Some(rtcp))),
                        Err(e) => self.classify(e)?,
                    }
                }
                Err(e) => self.classify(e)?,
            }
        }
        Err(SocketError::PortsExhausted {
            ip: self.ip,
            first: self.first,
            last: self.last,
        })
    }

    /// Port in use: try the next; anything else ends the search.
    fn classify(&self, e: io::Error) -> Result<(), SocketError> {
        match e.raw_os_error() {
            Some(libc::EADDRINUSE) | Some(libc::EACCES) => Ok(()),
            Some(libc::EMFILE) | Some(libc::ENFILE) => Err(SocketError::FileLimit {
                limit: nofile_limit().0,
            }),
            _ => Err(SocketError::Io {
                ip: self.ip,
                source: e,
            }),
        }
    }
}

/// Binds a non-blocking UDP socket with the options applied.
pub fn bind_udp(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpSocket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if opts.recv_buffer > 0 {
        sock.set_recv_buffer_size(opts.recv_buffer)?;
    }
    if opts.send_buffer > 0 {
        sock.set_send_buffer_size(opts.send_buffer)?;
    }
    count_drops(&sock)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Asks the kernel to report the datagrams it dropped at the socket (a full receive buffer,
/// a bad UDP checksum) with each datagram (`SO_RXQ_OVFL`): the backends add them up as
/// `kernel_drops`.
fn count_drops(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the stated size; the fd is open.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The open-file limit (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; RLIMIT_NOFILE is a valid resource.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return (0, 0);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit();
    if soft >= hard {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_ports_then_reports_exhaustion() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // A small range nobody else uses in tests: 4 ports, this allocator takes offset 0 of 1.
        let mut a = PortAllocator::new(ip, 47_100, 47_103, 0, 1);
        let opts = SocketOptions::default();
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a.bind(&opts, false).unwrap().0);
        }
        let ports: std::collections::BTreeSet<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 4);
        match a.bind(&opts, false) {
            Err(SocketError::PortsExhausted {
                first: 47_100,
                last: 47_103,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        drop(held);
        // Pairs: even RTP port, odd RTCP port.
        let mut a = PortAllocator::new(ip, 47_111, 47_120, 0, 1);
        let (rtp, rtcp) = a.bind(&opts, true).unwrap();
        let p = rtp.local_addr().unwrap().port();
        assert_eq!(p % 2, 0);
        assert_eq!(rtcp.unwrap().local_addr().unwrap().port(), p + 1);
    }

    #[test]
    fn workers_split_the_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let opts = SocketOptions::default();
        let mut w0 = PortAllocator::new(ip, 47_200, 47_209, 0, 2);
        let mut w1 = PortAllocator::new(ip, 47_200, 47_209, 1, 2);
        let p0 = w0
            .bind(&opts, false)
            .unwrap()
            .0
            .local_addr()
            .unwrap()
            .port();
        let p1 = w1
            .bind(&opts, false)
            .unwrap()
            .0
            .local_addr()
            .unwrap()
            .port();
        assert_ne!((p0 / 2) % 2, (p1 / 2) % 2);
    }

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let soft = raise_nofile_limit().unwrap();
        assert_eq!(soft, nofile_limit().1);
    }
}
