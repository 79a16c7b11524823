//! A leg's side of its DTLS-SRTP handshakes: which port a datagram's handshake is on, where
//! its flights go, counting what cannot go, and installing the keys once it is established.

use std::time::Instant;

use super::dtls::{DtlsClock, Input, Outcome};
use super::leg::Leg;
use super::{Outbox, Port};
use crate::model::{Component, Counters, DropReason};
use crate::proto::dtls::{DtlsFailure, DtlsRole};

impl Leg {
    /// Our DTLS role, when the leg is keyed by DTLS-SRTP.
    pub(crate) fn dtls_role(&self) -> Option<DtlsRole> {
        self.dtls.as_ref().map(|d| d.role())
    }

    /// The handshake's port: the RTCP port's own only when the leg has one.
    fn handshake_port(&self, port: Port) -> Port {
        if port == Port::Rtcp && self.has_rtcp_port() {
            Port::Rtcp
        } else {
            Port::Rtp
        }
    }

    /// The component a handshake datagram on `port` belongs to.
    pub(crate) fn dtls_component(&self, port: Port) -> Component {
        Component::of(self.handshake_port(port) == Port::Rtcp)
    }

    /// A DTLS datagram (RFC 7983: first byte 20-63) for the handshake on `port`. Returns false
    /// (counted) when that handshake has no session any more (a peer's retransmission after
    /// it ended, or after a failure); then there is nothing to drain.
    pub(crate) fn dtls_input(
        &mut self,
        port: Port,
        datagram: &[u8],
        now: u64,
        at: Instant,
        totals: &mut Counters,
    ) -> bool {
        let port = self.handshake_port(port);
        let Some(d) = self.dtls.as_mut() else {
            return false;
        };
        match d.input(port, datagram, now, at) {
            Input::Fed => true,
            Input::Over => {
                self.drop_rx(DropReason::HandshakeOver, false, totals);
                false
            }
            Input::NoHandshake => false,
        }
    }

    /// A handshake's timer is due: the deadline, the end of a server's linger, or a
    /// retransmission. Returns the failure when the deadline passed; otherwise the caller
    /// drains the handshake ([`Leg::dtls_poll`]).
    pub(crate) fn dtls_timer(
        &mut self,
        port: Port,
        now: u64,
        clock: &DtlsClock,
        totals: &mut Counters,
    ) -> Option<(DtlsFailure, Option<&'static str>)> {
        self.dtls.as_mut()?.timer(port, now, clock, totals)
    }

    /// Drains the handshake on `port`: its datagrams go to `out` (through `scratch`, at least
    /// the MTU), the SRTP contexts are installed when it is established. Returns what happened
    /// and the instant (ns) the caller must call [`Leg::dtls_timer`] at, when that is earlier
    /// than the timer already armed.
    pub(crate) fn dtls_poll(
        &mut self,
        port: Port,
        now: u64,
        clock: &DtlsClock,
        scratch: &mut [u8],
        out: &mut dyn Outbox,
        totals: &mut Counters,
    ) -> (Outcome, Option<u64>) {
        let port = self.handshake_port(port);
        let dest = self.target(port);
        let Some(d) = self.dtls.as_mut() else {
            return (Outcome::Quiet, None);
        };
        let drained = d.poll(port, dest, now, clock, scratch, out, totals);
        for _ in 0..drained.unsent {
            self.drop_tx(totals);
        }
        if let (Outcome::Established { suite, .. }, Some((tx, rx))) =
            (drained.outcome, drained.keys)
        {
            self.install_dtls_keys(port, suite, tx, rx);
            self.watch.restart(now);
        }
        (drained.outcome, drained.timer)
    }
}
