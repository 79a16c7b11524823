//! The core's transaction plumbing: sending a request in a client transaction, answering in a
//! server transaction, and draining both into the call logic.

use std::time::Instant;

use super::model::CallError;
use crate::sip::message::{Message, Method, StartLine};
use crate::sip::transaction::{ClientTransaction, ServerTransaction, TxEvent, TxState};
use crate::sip::transport::Flow;

use super::core::*;

impl UaCore {
    /// Starts a client transaction for `req`.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        req: Message,
        to: Destination,
        call_id: Option<&str>,
    ) {
        let Some(key) = req.transaction_key() else {
            return;
        };
        let tx = ClientTransaction::new(req, self.cfg.protocol.reliable(), self.cfg.timers, now);
        self.clients.insert(
            key.clone(),
            ClientEntry {
                tx,
                to,
                call_id: call_id.map(str::to_owned),
                armed: None,
            },
        );
        self.drain_client(now, &key);
    }

    /// The destination of a client transaction (a CANCEL goes where its INVITE went).
    pub(crate) fn client_destination(&self, key: &TxKey) -> Option<Destination> {
        self.clients.get(key).map(|c| c.to.clone())
    }

    pub(super) fn drain_client(&mut self, now: Instant, key: &TxKey) {
        loop {
            let Some(entry) = self.clients.get_mut(key) else {
                return;
            };
            let Some(ev) = entry.tx.poll_event() else {
                break;
            };
            let to = entry.to.clone();
            let call_id = entry.call_id.clone();
            match ev {
                TxEvent::Transmit(m) => self.transmit(to, m),
                TxEvent::Deliver(resp) => {
                    if let Some(cid) = call_id {
                        self.on_response(now, &cid, key, resp);
                    }
                }
                TxEvent::Timeout => {
                    let t = self.cfg.timers.t1 * 64;
                    if let Some(cid) = call_id {
                        self.on_request_failed(now, &cid, key, CallError::Timeout(t));
                    }
                }
            }
        }
        match self.clients.get_mut(key) {
            Some(e) if e.tx.state() == TxState::Terminated => {
                self.clients.remove(key);
            }
            Some(e) => {
                let next = e.tx.poll_timeout();
                arm(&mut self.deadlines, &mut e.armed, next, Side::Client, key);
            }
            None => {}
        }
    }

    /// A request of ours failed (no answer, transport): the call it belongs to is told.
    pub(super) fn on_request_failed(
        &mut self,
        now: Instant,
        call_id: &str,
        key: &TxKey,
        e: CallError,
    ) {
        match key.1 {
            Method::Bye => self.close_call(call_id, Some(Err(e))),
            Method::Invite => {
                let reinvite = self
                    .calls
                    .get(call_id)
                    .is_some_and(|c| c.invite_key.as_ref() != Some(key));
                if !reinvite {
                    self.fail_call(call_id, e);
                }
            }
            _ => {}
        }
        let _ = now;
    }

    pub(super) fn on_response(&mut self, now: Instant, call_id: &str, key: &TxKey, resp: Message) {
        let code = resp.code().unwrap_or(0);
        match (&key.1, code) {
            (Method::Invite, _) => self.invite_response(now, call_id, key, resp),
            (Method::Bye, 200..=299) => self.close_call(call_id, Some(Ok(()))),
            (Method::Bye, 300..=699) => {
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } => reason.clone(),
                    StartLine::Request { .. } => String::new(),
                };
                self.close_call(call_id, Some(Err(CallError::ByeRefused { code, reason })));
            }
            _ => {}
        }
    }

    /// Starts (or continues) a server transaction for a request.
    pub(crate) fn server_transaction(
        &mut self,
        now: Instant,
        req: &Message,
        flow: Flow,
        key: &TxKey,
        call_id: Option<&str>,
    ) {
        let tx = ServerTransaction::new(req, self.cfg.protocol.reliable(), self.cfg.timers);
        self.servers.insert(
            key.clone(),
            ServerEntry {
                tx,
                flow,
                call_id: call_id.map(str::to_owned),
                armed: None,
            },
        );
        self.drain_server(now, key);
    }

    /// Whether a server transaction exists and is still waiting for our final response.
    pub(crate) fn server_open(&self, key: &TxKey) -> bool {
        self.servers
            .get(key)
            .is_some_and(|s| matches!(s.tx.state(), TxState::Trying | TxState::Proceeding))
    }

    pub(crate) fn respond(&mut self, now: Instant, key: &TxKey, resp: Message) {
        if let Some(s) = self.servers.get_mut(key) {
            s.tx.respond(resp, now);
        }
        self.drain_server(now, key);
    }

    pub(super) fn drain_server(&mut self, now: Instant, key: &TxKey) {
        loop {
            let Some(s) = self.servers.get_mut(key) else {
                return;
            };
            let Some(ev) = s.tx.poll_event() else { break };
            let flow = s.flow;
            let call_id = s.call_id.clone();
            match ev {
                TxEvent::Transmit(m) => self.transmit(Destination::Flow(flow), m),
                TxEvent::Deliver(ack) => {
                    if let Some(cid) = call_id {
                        self.on_ack(now, &cid, ack);
                    }
                }
                TxEvent::Timeout => {
                    if let Some(cid) = call_id {
                        self.on_no_ack(now, &cid, key);
                    }
                }
            }
        }
        match self.servers.get_mut(key) {
            Some(s) if s.tx.state() == TxState::Terminated => {
                self.servers.remove(key);
            }
            Some(s) => {
                let next = s.tx.poll_timeout();
                arm(&mut self.deadlines, &mut s.armed, next, Side::Server, key);
            }
            None => {}
        }
    }
}
