//! What arrives at the core: timeouts, SIP messages (responses to our transactions, requests
//! in or out of dialogs), closed connections, failed sends, keepalive answers, and the
//! registration's progress.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Instant;

use super::model::CallError;
use crate::register::endpoint::{self};
use crate::sip::message::{Message, Method};
use crate::sip::token;
use crate::sip::transaction::TxState;
use crate::sip::transport::{Flow, TransportError};

use super::core::*;

impl UaCore {
    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, side, key))) = self.deadlines.pop() else {
                break;
            };
            match side {
                Side::Client => {
                    if let Some(c) = self.clients.get_mut(&key)
                        && c.armed == Some(at)
                    {
                        c.armed = None;
                        c.tx.handle_timeout(now);
                        self.drain_client(now, &key);
                    }
                }
                Side::Server => {
                    if let Some(s) = self.servers.get_mut(&key)
                        && s.armed == Some(at)
                    {
                        s.armed = None;
                        s.tx.handle_timeout(now);
                        self.drain_server(now, &key);
                    }
                }
            }
        }
        if let Some(r) = &mut self.registration
            && r.endpoint.poll_timeout().is_some_and(|t| t <= now)
        {
            r.endpoint.handle_timeout(now);
            self.drain_registration();
        }
        self.check_idle();
    }

    // ---- the transport ----------------------------------------------------------------

    /// A message came in on `flow`.
    pub fn handle_message(&mut self, now: Instant, msg: Message, flow: Flow) {
        if msg.is_request() {
            self.request(now, msg, flow);
        } else {
            self.response(now, msg, flow);
        }
        self.check_idle();
    }

    pub(super) fn response(&mut self, now: Instant, msg: Message, flow: Flow) {
        if let Some(r) = &mut self.registration
            && msg
                .call_id()
                .is_ok_and(|c| c.starts_with(r.endpoint.call_id_base()))
        {
            r.endpoint.handle_response(now, msg);
            self.drain_registration();
            return;
        }
        let Some(key) = msg.transaction_key() else {
            return;
        };
        if let Some(c) = self.clients.get_mut(&key) {
            if let Some(cid) = &c.call_id
                && let Some(call) = self.calls.get_mut(cid)
                && self.cfg.protocol.reliable()
            {
                call.flow = Some(flow);
            }
            c.tx.handle_response(msg, now);
            self.drain_client(now, &key);
        }
    }

    pub(super) fn request(&mut self, now: Instant, req: Message, flow: Flow) {
        if let Err(e) = req.validate() {
            // RFC 3261 8.2: answer 400 when we can, naming the problem.
            if req.top_via().is_ok() {
                let r = Message::response_to(&req, 400, &format!("Bad Request ({e})"), None);
                self.transmit(Destination::Flow(flow), r);
            }
            return;
        }
        let Some(key) = req.transaction_key() else {
            return;
        };
        let method = req.method().unwrap_or(Method::Ack);
        if method == Method::Ack {
            // An ACK for a non-2xx matches its INVITE's server transaction; an ACK for a 2xx
            // carries a new branch and is matched by dialog.
            let k = if self.servers.contains_key(&key) {
                Some(key)
            } else {
                req.call_id()
                    .ok()
                    .and_then(|cid| self.calls.get(cid))
                    .and_then(|c| c.invite_key.clone())
            };
            if let Some(k) = k
                && let Some(s) = self.servers.get_mut(&k)
            {
                s.tx.handle_request(req, now);
                self.drain_server(now, &k);
            }
            return;
        }
        if let Some(s) = self.servers.get_mut(&key) {
            // A retransmission: the transaction repeats its last response.
            s.tx.handle_request(req, now);
            self.drain_server(now, &key);
            return;
        }
        let call_id = req.call_id().ok().map(str::to_owned);
        self.server_transaction(now, &req, flow, &key, call_id.as_deref());
        let in_dialog = req.to().ok().and_then(|t| t.tag().map(str::to_owned));
        match (method, in_dialog) {
            (Method::Invite, None) => self.incoming_invite(now, req, flow, key),
            (Method::Cancel, _) => self.incoming_cancel(now, &req, &key),
            (Method::Options, None) => {
                let mut r = Message::response_to(&req, 200, "OK", Some(&token()));
                r.push("Allow", ALLOW).push("Accept", "application/sdp");
                self.respond(now, &key, r);
            }
            (_, Some(tag)) => self.in_dialog(now, req, flow, key, &tag),
            (_, None) => {
                let mut r = Message::response_to(&req, 405, "Method Not Allowed", Some(&token()));
                r.push("Allow", ALLOW);
                self.respond(now, &key, r);
            }
        }
    }

    /// A connection closed. Requests waiting on it fail; dialogs forget it (their next
    /// request opens a new one).
    pub fn handle_closed(&mut self, now: Instant, flow: Flow, error: Option<TransportError>) {
        for call in self.calls.values_mut() {
            if call.flow == Some(flow) {
                call.flow = None;
            }
        }
        let waiting: Vec<(TxKey, String)> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                matches!(&c.to, Destination::Hop { flow: Some(f), .. } if *f == flow)
                    || matches!(&c.to, Destination::Hop { addr, flow: None, .. } if *addr == flow.peer())
            })
            .filter(|(_, c)| matches!(c.tx.state(), TxState::Calling | TxState::Trying | TxState::Proceeding))
            .filter_map(|(k, c)| c.call_id.clone().map(|cid| (k.clone(), cid)))
            .collect();
        for (key, cid) in waiting {
            let e = error.clone().unwrap_or(TransportError::Closed(flow.peer()));
            self.clients.remove(&key);
            self.on_request_failed(now, &cid, &key, CallError::Transport(e));
        }
        if let Some(r) = &mut self.registration
            && let Some(i) = r
                .policy
                .registrars
                .iter()
                .position(|s| s.addr == flow.peer())
        {
            r.endpoint.handle_flow_failed(now, i);
            self.drain_registration();
        }
        self.check_idle();
    }

    /// A message for `addr` could not be sent (a connection or TLS handshake failed).
    pub fn handle_send_failed(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        msg: &Message,
        error: TransportError,
    ) {
        if let Some(r) = &mut self.registration
            && msg
                .call_id()
                .is_ok_and(|c| c.starts_with(r.endpoint.call_id_base()))
        {
            if let Some(i) =
                (0..r.policy.registrars.len()).find(|&i| r.policy.next_hop(i).0 == addr)
            {
                tracing::warn!("registrar {}: {error}", r.policy.registrars[i].name);
                r.endpoint.handle_flow_failed(now, i);
            }
            self.drain_registration();
            return;
        }
        if !msg.is_request() {
            return;
        }
        let Some(key) = msg.transaction_key() else {
            return;
        };
        if let Some(c) = self.clients.remove(&key)
            && let Some(cid) = c.call_id
        {
            self.on_request_failed(now, &cid, &key, CallError::Transport(error));
        }
        self.check_idle();
    }

    /// An RFC 5626 pong came on a connection.
    pub fn handle_pong(&mut self, now: Instant, flow: Flow) {
        if let Some(r) = &mut self.registration
            && let Some(i) = r
                .policy
                .registrars
                .iter()
                .position(|s| s.addr == flow.peer())
        {
            r.endpoint.handle_pong(now, i);
            self.drain_registration();
        }
    }

    /// A STUN Binding success arrived (a registration keepalive's answer).
    pub fn handle_stun(&mut self, now: Instant, id: &crate::sip::stun::TransactionId) {
        if let Some(r) = &mut self.registration {
            r.endpoint.handle_stun(now, id);
            self.drain_registration();
        }
    }

    /// Something that is not SIP arrived.
    pub fn handle_garbage(&mut self) {
        self.counters.garbage += 1;
    }

    pub(super) fn drain_registration(&mut self) {
        let Some(r) = &mut self.registration else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = r.endpoint.poll_transmit() {
            let (addr, name) = r.policy.next_hop(t.registrar);
            let to = Destination::Hop {
                flow: None,
                addr,
                server_name: name.to_owned(),
            };
            out.push(Transmit {
                to,
                payload: match t.payload {
                    endpoint::Payload::Sip(m) => Payload::Sip(m),
                    endpoint::Payload::Ping => Payload::Ping,
                    endpoint::Payload::Stun(id) => Payload::Stun(id),
                },
            });
        }
        let mut events = Vec::new();
        while let Some(e) = r.endpoint.poll_event() {
            events.push(e);
        }
        self.transmits.extend(out);
        for e in events {
            self.event(UaEvent::Registration(e));
        }
    }
}
