//! What the worker knows of sockets that the media logic does not: which stream and leg owns
//! each socket, the shared ports and the streams found on them, and how a leg's ports map to
//! sockets when it sends ([`LegOutbox`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};

use crate::io::{Io, SockId};
use crate::media::{Outbox, Port};

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A small multiplicative hasher for the shared-port lookups (addresses and SSRCs are not
/// attacker-chosen keys in a way that matters: the table only holds signalled remotes).
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Who owns a socket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    Free,
    Leg {
        slot: u32,
        leg: u8,
        rtcp: bool,
    },
    Shared(usize),
    /// The worker's doorbell: a datagram here only wakes the loop (a command is queued).
    Doorbell,
}

/// A shared port: one socket on a local IP, the streams on it found by remote address (and
/// SSRC when several share one).
pub(crate) struct SharedPort {
    pub(crate) ip: IpAddr,
    pub(crate) sock: SockId,
    pub(crate) local: SocketAddr,
    pub(crate) by_addr: FxMap<SocketAddr, (u32, u8)>,
    pub(crate) by_addr_ssrc: FxMap<(SocketAddr, u32), (u32, u8)>,
}

impl SharedPort {
    /// Files a leg under its remote (and SSRC); false when another has it.
    pub(crate) fn insert(&mut self, key: SharedKey, at: (u32, u8)) -> bool {
        match key.ssrc {
            None => {
                if self.by_addr.contains_key(&key.remote) {
                    return false;
                }
                self.by_addr.insert(key.remote, at);
            }
            Some(ssrc) => {
                if self.by_addr_ssrc.contains_key(&(key.remote, ssrc)) {
                    return false;
                }
                self.by_addr_ssrc.insert((key.remote, ssrc), at);
            }
        }
        true
    }

    pub(crate) fn remove(&mut self, key: SharedKey) {
        match key.ssrc {
            None => self.by_addr.remove(&key.remote),
            Some(ssrc) => self.by_addr_ssrc.remove(&(key.remote, ssrc)),
        };
    }
}

/// How a leg is found on a shared port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedKey {
    pub(crate) port: usize,
    pub(crate) remote: SocketAddr,
    pub(crate) ssrc: Option<u32>,
}

/// A leg's sockets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegSocks {
    pub(crate) rtp: SockId,
    pub(crate) rtcp: Option<SockId>,
    /// On a shared port: which, and the key it is found by.
    pub(crate) shared: Option<SharedKey>,
    /// The RTP socket is connected to the peer (sends carry no address).
    pub(crate) connected: bool,
}

impl LegSocks {
    /// The socket a port sends from, and the address a send must carry.
    pub(crate) fn route(&self, port: Port, to: SocketAddr) -> (SockId, Option<SocketAddr>) {
        match (port, self.rtcp) {
            (Port::Rtcp, Some(s)) => (s, Some(to)),
            _ => (self.rtp, if self.connected { None } else { Some(to) }),
        }
    }
}

/// A leg's outbox on the worker's backend.
pub(crate) struct LegOutbox<'a> {
    pub(crate) io: &'a mut dyn Io,
    pub(crate) socks: LegSocks,
}

impl Outbox for LegOutbox<'_> {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        self.io.tx_buf()
    }

    fn send(&mut self, port: Port, len: usize, to: SocketAddr) {
        let (sock, to) = self.socks.route(port, to);
        self.io.send_tx(sock, len, to);
    }
}
