//! Socket addresses in the kernel's layout, stored where the kernel can read them while a send
//! is in flight.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A `sockaddr_in` or `sockaddr_in6`, in a `sockaddr_in6`-sized slot.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RawAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_socket_addr())
    }
}

impl RawAddr {
    /// The empty address.
    pub fn zeroed() -> RawAddr {
        RawAddr {
            // SAFETY-free: an all-zero sockaddr_in6 is a valid value of the plain C struct.
            storage: libc::sockaddr_in6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                sin6_scope_id: 0,
            },
            len: 0,
        }
    }

    /// The kernel layout of `addr`.
    pub fn new(addr: SocketAddr) -> RawAddr {
        let mut raw = RawAddr::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                // sockaddr_in: family (2), port (2, network order), address (4), zero (8).
                let mut bytes = raw_bytes_mut(&mut raw.storage);
                bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
                bytes[4..8].copy_from_slice(&a.ip().octets());
                raw.len = 16;
            }
            SocketAddr::V6(a) => {
                raw.storage.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.storage.sin6_port = a.port().to_be();
                raw.storage.sin6_flowinfo = a.flowinfo();
                raw.storage.sin6_addr.s6_addr = a.ip().octets();
                raw.storage.sin6_scope_id = a.scope_id();
                raw.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        raw
    }

    /// Pointer for the kernel.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_in6).cast()
    }

    /// Length for the kernel.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// Whether no address is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Back to a `SocketAddr`.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        let bytes = raw_bytes(&self.storage);
        parse_sockaddr(&bytes[..self.len as usize])
    }
}

pub(super) fn raw_bytes(s: &libc::sockaddr_in6) -> [u8; 28] {
    let mut out = [0u8; 28];
    out[..2].copy_from_slice(&s.sin6_family.to_ne_bytes());
    out[2..4].copy_from_slice(&s.sin6_port.to_ne_bytes());
    out[4..8].copy_from_slice(&s.sin6_flowinfo.to_ne_bytes());
    out[8..24].copy_from_slice(&s.sin6_addr.s6_addr);
    out[24..28].copy_from_slice(&s.sin6_scope_id.to_ne_bytes());
    out
}

fn raw_bytes_mut(s: &mut libc::sockaddr_in6) -> RawView<'_> {
    RawView(s, raw_bytes(s))
}

/// A byte view of a `sockaddr_in6` that writes itself back on drop (keeps this module free of
/// unsafe pointer casts).
struct RawView<'a>(&'a mut libc::sockaddr_in6, [u8; 28]);

impl std::ops::Deref for RawView<'_> {
    type Target = [u8; 28];
    fn deref(&self) -> &[u8; 28] {
        &self.1
    }
}
impl std::ops::DerefMut for RawView<'_> {
    fn deref_mut(&mut self) -> &mut [u8; 28] {
        &mut self.1
    }
}
impl Drop for RawView<'_> {
    fn drop(&mut self) {
        let b = &self.1;
        self.0.sin6_family = u16::from_ne_bytes([b[0], b[1]]);
        self.0.sin6_port = u16::from_ne_bytes([b[2], b[3]]);
        self.0.sin6_flowinfo = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        self.0.sin6_addr.s6_addr.copy_from_slice(&b[8..24]);
        self.0.sin6_scope_id = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
    }
}

/// Parses a kernel `sockaddr_in`/`sockaddr_in6` from raw bytes (as a multishot recvmsg or
/// recvmmsg wrote it).
pub(super) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    if family == libc::AF_INET && b.len() >= 8 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 && b.len() >= 28 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let flow = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for a in ["127.0.0.1:5004", "[::1]:40000", "10.1.2.3:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            let raw = RawAddr::new(addr);
            assert_eq!(raw.to_socket_addr(), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[0, 0]), None);
        assert_eq!(RawAddr::zeroed().to_socket_addr(), None);
    }
}
