//! The per-leg media logic, sans-IO: a datagram goes in with the time, a decision comes out
//! ([`Action`]); what a leg sends of its own (paced RTP, RTCP reports, DTLS flights) goes
//! through an [`Outbox`] the caller lends it. No sockets, no threads, no clock: the worker
//! owns those and maps a leg's [`Port`]s to its sockets. Unit tests drive legs and streams in
//! simulated time.
//!
//! - [`leg`]: one leg's crypto, source latching and counters. Every drop is counted once, by
//!   [`DropReason`], into the leg's figures and the worker's totals together.
//! - [`dtls`]: a leg's DTLS-SRTP handshakes (RTP, and RTCP on its own port) and what gates
//!   media until their keys exist; `handshake.rs`: the leg's side of them (ports, flights,
//!   keys).
//! - [`quality`]: receive statistics, round trip, and the watch that turns counters into
//!   events; `figures.rs`: a leg's statistics and its sweep.
//! - [`stream`]: a stream's legs, its RTP source and its mode (echo and relay forward from one
//!   leg to the other).
//!
//! [`DropReason`]: crate::model::DropReason

pub(crate) mod dtls;
mod figures;
mod handshake;
pub(crate) mod leg;
pub(crate) mod quality;
pub(crate) mod stream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

/// Which of a leg's ports: RTP (or both, with rtcp-mux) or its own RTCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    Rtp,
    Rtcp,
}

impl Port {
    pub(crate) fn of(rtcp_port: bool) -> Port {
        if rtcp_port { Port::Rtcp } else { Port::Rtp }
    }
}

/// Where a leg's own datagrams go: send buffers and the send itself, lent by the caller (the
/// worker maps the port to a socket; tests keep the datagrams).
pub(crate) trait Outbox {
    /// A free send buffer, or `None` when every one is in use.
    fn buffer(&mut self) -> Option<&mut [u8]>;
    /// Sends the first `len` bytes of the buffer last handed out, from `port`, to `to`.
    fn send(&mut self, port: Port, len: usize, to: SocketAddr);
}

/// What to do with a received datagram once its stream has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing (consumed or dropped; counted either way).
    Drop,
    /// A DTLS datagram for the leg's handshake on this port: hand a copy to
    /// [`stream::Stream::dtls_datagram`].
    Handshake,
    /// Send the buffer, rewritten in place, out of leg `leg`'s `port` to `to`.
    Send {
        leg: u8,
        port: Port,
        len: usize,
        to: SocketAddr,
    },
}

/// A peer address a leg learned from an authenticated packet: the worker may connect the
/// port's socket to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learned {
    pub(crate) leg: u8,
    pub(crate) port: Port,
    pub(crate) peer: SocketAddr,
}
