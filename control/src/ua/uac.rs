//! The caller's side of [`UaCore`]: the INVITE (with an offer, or without one for a delayed
//! offer), digest retries, the 2xx that makes the dialog, its ACK, and CANCEL.

use std::net::SocketAddr;
use std::time::Instant;

use super::core::{
    ALLOW, AfterApply, Call, Destination, MediaOp, Pending, Phase, Transmit, UaCore, UaEvent,
    reason_phrase, user_agent, warning_text,
};
use super::dialog::Dialog;
use super::model::{CallError, CallInfo, EndedBy};
use crate::media::{Allocation, MediaError};
use crate::sdp::{Direction, LocalMedia, NegotiationError, Offer, Session, Signaling, plan_answer};
use crate::sip::auth::Challenge;
use crate::sip::message::{Message, Method, StartLine};
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::{token, via_header};

impl UaCore {
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        call_id: String,
        target: Uri,
        next_hop: SocketAddr,
        delayed_offer: bool,
    ) {
        if self.stopping || self.calls.contains_key(&call_id) {
            self.event(UaEvent::CallFailed {
                call_id,
                error: CallError::Stopped,
            });
            return;
        }
        let signaling = Signaling::caller(self.cfg.protocol, self.local, target.secure);
        let mut call = Call::new(true, Phase::Preparing, now, signaling);
        call.first_hop = Some((next_hop, target.host.clone()));
        call.target = Some(target);
        self.calls.insert(call_id.clone(), call);
        if delayed_offer {
            self.send_invite(now, &call_id, None);
        } else {
            self.media_request(MediaOp::Prepare, Pending::Prepared(call_id));
        }
    }

    /// The engine's stream for an offer of ours: the caller's INVITE, or the answerer's 2xx
    /// to an INVITE without SDP.
    pub(crate) fn on_prepared(
        &mut self,
        now: Instant,
        call_id: &str,
        r: Result<Allocation, MediaError>,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            if let Ok(a) = r {
                self.media_request(MediaOp::Close(a.stream), Pending::Ignored);
            }
            return;
        };
        let alloc = match r {
            Ok(a) => a,
            Err(e) => return self.fail_call(call_id, e.into()),
        };
        let cancelled = call.cancel;
        call.alloc = Some(alloc.clone());
        self.remember_stream(call_id, &alloc);
        if cancelled {
            return self.fail_call(call_id, CallError::Cancelled);
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let local = LocalMedia {
            rtp: alloc.rtp,
            rtcp: alloc.rtcp,
            fingerprint: alloc.fingerprint.clone(),
            direction: Direction::SendRecv,
        };
        let (session, version) = call.next_sdp();
        let offer = match Offer::new(&self.cfg.security, &local, session, version, None) {
            Ok(o) => o,
            Err(e) => return self.fail_call(call_id, e.into()),
        };
        let body = offer.sdp.to_text().into_bytes();
        call.offer = Some(offer);
        if call.uac {
            self.send_invite(now, call_id, Some(body));
        } else {
            self.answer_with_offer(now, call_id, body);
        }
    }

    fn send_invite(&mut self, now: Instant, call_id: &str, body: Option<Vec<u8>>) {
        let local = self.local;
        let contact = self.contact();
        let via = via_header(self.cfg.protocol, local);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some(target), Some((hop, name))) = (call.target.clone(), call.first_hop.clone())
        else {
            return;
        };
        let mut from = NameAddr::new(Uri::new(
            Some(&self.cfg.user),
            &local.ip().to_string(),
            None,
        ));
        from.set_param("tag", Some(&call.local_tag));
        let mut inv = Message::request(Method::Invite, target.clone());
        inv.push("Via", via)
            .push("Max-Forwards", "70")
            .push("From", from.to_string())
            .push("To", NameAddr::new(target).to_string())
            .push("Call-ID", call_id.to_owned())
            .push("CSeq", "1 INVITE")
            .push("Contact", contact)
            .push("Allow", ALLOW)
            .push("User-Agent", user_agent());
        if let Some(b) = body {
            inv.set_body("application/sdp", b);
        }
        call.phase = Phase::Calling;
        call.invite_key = inv.transaction_key();
        call.invite = Some(inv.clone());
        let to = Destination::Hop {
            flow: None,
            addr: hop,
            server_name: name,
        };
        self.send_request(now, inv, to, Some(call_id));
    }

    pub(crate) fn invite_response(
        &mut self,
        now: Instant,
        call_id: &str,
        key: &(String, Method),
        resp: Message,
    ) {
        let code = resp.code().unwrap_or(0);
        let Some(call) = self.calls.get_mut(call_id) else {
            // A 2xx for a call we gave up: acknowledge and end it (RFC 3261 13.2.2.4, 15).
            if (200..300).contains(&code) {
                self.stray_2xx(now, &resp);
            }
            return;
        };
        if call.invite_key.as_ref() != Some(key) {
            // A re-INVITE of ours: we send none.
            return;
        }
        match code {
            100..=199 => {
                call.provisional = true;
                if call.cancel {
                    self.send_cancel(now, call_id);
                }
            }
            200..=299 => self.invite_2xx(now, call_id, resp),
            401 | 407 => self.retry_with_auth(now, call_id, &resp),
            487 if call.cancel => self.fail_call(call_id, CallError::Cancelled),
            _ => {
                let error = CallError::Rejected {
                    code,
                    reason: reason_phrase(&resp),
                    warning: warning_text(&resp),
                };
                self.fail_call(call_id, error);
            }
        }
    }

    fn retry_with_auth(&mut self, now: Instant, call_id: &str, resp: &Message) {
        let via = via_header(self.cfg.protocol, self.local);
        let creds = self.cfg.credentials.clone();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some((user, pass)), false) = (creds, call.auth_tried) else {
            let why = if call.auth_tried {
                "credentials refused"
            } else {
                "challenged but no credentials configured"
            };
            return self.fail_call(call_id, CallError::Auth(why.into()));
        };
        let (hname, aname) = if resp.code() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let ch = match Challenge::pick(
            resp.headers
                .iter()
                .filter(|h| h.name == hname)
                .map(|h| h.value.as_str()),
        ) {
            Ok(c) => c,
            Err(e) => return self.fail_call(call_id, CallError::Auth(e.to_string())),
        };
        let Some(mut inv) = call.invite.clone() else {
            return;
        };
        let StartLine::Request { uri, .. } = &inv.start else {
            return;
        };
        let uri = uri.to_string();
        call.auth_tried = true;
        let seq = inv.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        let auth = ch.respond(&user, &pass, "INVITE", &uri, &token(), 1);
        inv.set("Via", via);
        inv.set("CSeq", format!("{seq} INVITE"));
        inv.set(aname_header(aname), auth);
        call.invite_key = inv.transaction_key();
        call.invite = Some(inv.clone());
        call.provisional = false;
        let Some((hop, name)) = call.first_hop.clone() else {
            return;
        };
        let to = Destination::Hop {
            flow: call.flow,
            addr: hop,
            server_name: name,
        };
        self.send_request(now, inv, to, Some(call_id));
    }

    fn invite_2xx(&mut self, now: Instant, call_id: &str, resp: Message) {
        let protocol = self.cfg.protocol;
        let local = self.local;
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let tag = resp.to().ok().and_then(|t| t.tag().map(str::to_owned));
        if let Some(d) = &call.dialog {
            if tag.as_deref() == Some(d.remote_tag.as_str()) {
                // A retransmission: the same ACK again (none yet while the engine takes a
                // delayed offer's answer: the 2xx keeps coming until it is ready).
                if let Some(t) = call.ack.clone() {
                    self.transmits_push(t);
                }
            } else {
                // A second 2xx from a forked INVITE: a dialog of its own, ended at once.
                self.stray_2xx(now, &resp);
            }
            return;
        }
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let dialog = match Dialog::as_uac(&invite, &resp) {
            Ok(d) => d,
            Err(e) => return self.fail_call(call_id, e.into()),
        };
        let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = dialog.ack(seq, protocol, local);
        call.dialog = Some(dialog);
        let Some(to) = self.hop(
            self.calls.get(call_id).expect("inserted above"),
            &ack.next_hop,
        ) else {
            return self.fail_call(call_id, CallError::Stopped);
        };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let ack_t = Transmit {
            to,
            payload: super::core::Payload::Sip(ack.msg),
        };
        if call.cancel {
            // Stopping: acknowledge, then end it.
            call.ack = Some(ack_t.clone());
            call.phase = Phase::Confirmed;
            self.transmits_push(ack_t);
            self.end_call(now, call_id, EndedBy::Shutdown);
            return self.fail_call_quietly(call_id, CallError::Cancelled);
        }
        match call.offer.take() {
            Some(offer) => {
                // Our offer's answer is in the 2xx.
                call.ack = Some(ack_t.clone());
                self.transmits_push(ack_t);
                let result = Session::parse(&resp.body)
                    .map_err(NegotiationError::from)
                    .and_then(|a| offer.accept_answer(&a));
                let Some(call) = self.calls.get_mut(call_id) else {
                    return;
                };
                match (result, call.stream()) {
                    (Ok(n), Some(stream)) => {
                        call.phase = Phase::Completing;
                        call.negotiated = Some(n.clone());
                        if n.rtcp_mux
                            && let Some(a) = call.alloc.as_mut()
                        {
                            a.rtcp = None;
                        }
                        self.media_request(
                            MediaOp::Apply {
                                stream,
                                n: Box::new(n),
                                prev: None,
                            },
                            Pending::Applied {
                                call_id: call_id.to_owned(),
                                then: AfterApply::Connected,
                                prev: None,
                            },
                        );
                    }
                    (Ok(_), None) => self.fail_call(call_id, CallError::Stopped),
                    (Err(e), _) => {
                        call.phase = Phase::Confirmed;
                        let text = e.to_string();
                        self.report_failure(call_id, e.into());
                        self.end_call(now, call_id, EndedBy::Failure(text));
                    }
                }
            }
            None => {
                // A delayed offer: the 2xx carries the peer's offer; the answer goes in the
                // ACK once the engine has the stream.
                let result = Session::parse(&resp.body)
                    .map_err(NegotiationError::from)
                    .and_then(|o| plan_answer(&self.cfg.security, &o, None));
                match result {
                    Ok(plan) => {
                        let n = plan.negotiated.clone();
                        call.plan = Some(plan);
                        call.phase = Phase::Completing;
                        call.negotiated = Some(n.clone());
                        call.ack = None;
                        call.invite = Some(invite);
                        self.pending_ack(call_id, ack_t);
                        self.media_request(
                            MediaOp::Open {
                                n: Box::new(n),
                                held: false,
                            },
                            Pending::Opened(call_id.to_owned()),
                        );
                    }
                    Err(e) => {
                        call.ack = Some(ack_t.clone());
                        call.phase = Phase::Confirmed;
                        self.transmits_push(ack_t);
                        let text = e.to_string();
                        self.report_failure(call_id, e.into());
                        self.end_call(now, call_id, EndedBy::Failure(text));
                    }
                }
            }
        }
    }

    /// Keeps a delayed offer's ACK (without its body yet) until the answer is written.
    fn pending_ack(&mut self, call_id: &str, ack: Transmit) {
        if let Some(call) = self.calls.get_mut(call_id) {
            call.ack = None;
            call.offer = None;
            call.plan_ack = Some(ack);
        }
    }

    /// The caller's stream for the offer in a 2xx is ready: the answer goes in the ACK.
    pub(crate) fn uac_opened(&mut self, now: Instant, call_id: &str, alloc: Allocation) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some(plan), Some(mut ack)) = (call.plan.take(), call.plan_ack.take()) else {
            return;
        };
        let local = LocalMedia {
            rtp: alloc.rtp,
            rtcp: alloc.rtcp,
            fingerprint: alloc.fingerprint.clone(),
            direction: Direction::SendRecv,
        };
        let (session, version) = call.next_sdp();
        match plan.answer_sdp(&local, session, version) {
            Ok(answer) => {
                if let super::core::Payload::Sip(m) = &mut ack.payload {
                    m.set_body("application/sdp", answer.to_text().into_bytes());
                }
                call.ack = Some(ack.clone());
                self.transmits_push(ack);
                self.connected(now, call_id);
            }
            Err(e) => {
                call.ack = Some(ack.clone());
                call.phase = Phase::Confirmed;
                self.transmits_push(ack);
                let text = e.to_string();
                self.report_failure(call_id, e.into());
                self.end_call(now, call_id, EndedBy::Failure(text));
            }
        }
    }

    /// The call is set up: report it (a hangup asked for meanwhile goes out now).
    pub(crate) fn connected(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.phase = Phase::Confirmed;
        let (Some(n), Some(stream)) = (call.negotiated.clone(), call.stream()) else {
            return;
        };
        let verdict = crate::sdp::Verdict::new(call.signaling.clone(), &n);
        call.verdict = Some(verdict.clone());
        call.reported = true;
        let info = CallInfo {
            call_id: call_id.to_owned(),
            stream: stream.id,
            negotiated: n,
            verdict,
            setup: super::core::setup_time(call, now),
        };
        let wanted = call.hangup_wanted.take();
        let uac = call.uac;
        self.event(if uac {
            UaEvent::Connected(Box::new(info))
        } else {
            UaEvent::Uas(super::UasEvent::Answered(Box::new(info)))
        });
        if let Some(by) = wanted {
            self.end_call(now, call_id, by);
        }
    }

    /// Reports a failure of a call that is then ended with BYE (the dialog exists).
    pub(crate) fn report_failure(&mut self, call_id: &str, error: CallError) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.reported {
            return;
        }
        call.reported = true;
        call.quiet_end = true;
        let uac = call.uac;
        self.event(if uac {
            UaEvent::CallFailed {
                call_id: call_id.to_owned(),
                error,
            }
        } else {
            UaEvent::Uas(super::UasEvent::Failed {
                call_id: call_id.to_owned(),
                error,
            })
        });
    }

    fn fail_call_quietly(&mut self, call_id: &str, error: CallError) {
        self.report_failure(call_id, error);
    }

    /// CANCEL for our INVITE (RFC 3261 9.1): the INVITE's Request-URI, top Via, Route, Call-ID,
    /// From, To and CSeq number, to the same place.
    pub(crate) fn send_cancel(&mut self, now: Instant, call_id: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let (Some(inv), Some(key)) = (call.invite.as_ref(), call.invite_key.as_ref()) else {
            return;
        };
        let Some(to) = self.client_destination(key) else {
            return;
        };
        let mut cancel = Message::request(
            Method::Cancel,
            match &inv.start {
                StartLine::Request { uri, .. } => uri.clone(),
                StartLine::Response { .. } => return,
            },
        );
        if let Some(v) = inv.header_values("Via").next() {
            cancel.push("Via", v.to_owned());
        }
        cancel.push("Max-Forwards", "70");
        for r in inv.header_values("Route") {
            cancel.push("Route", r.to_owned());
        }
        for h in ["From", "To", "Call-ID"] {
            if let Some(v) = inv.header(h) {
                cancel.push(static_name(h), v.to_owned());
            }
        }
        let seq = inv.cseq().map(|c| c.seq).unwrap_or(1);
        cancel.push("CSeq", format!("{seq} CANCEL"));
        self.counters.cancels_sent += 1;
        self.send_request(now, cancel, to, None);
    }

    /// A 2xx that belongs to no dialog of ours (a call given up, a forked second answer):
    /// acknowledged and ended with BYE at once (RFC 3261 13.2.2.4).
    fn stray_2xx(&mut self, now: Instant, resp: &Message) {
        let Ok(seq) = resp.cseq() else { return };
        // The dialog only needs our From, which the response carries.
        let mut inv = Message::request(Method::Invite, Uri::new(None, "invalid", None));
        for h in ["From", "Call-ID"] {
            if let Some(v) = resp.header(h) {
                inv.push(static_name(h), v.to_owned());
            }
        }
        inv.push("CSeq", format!("{} INVITE", seq.seq));
        let Ok(mut d) = Dialog::as_uac(&inv, resp) else {
            return;
        };
        let ack = d.ack(seq.seq, self.cfg.protocol, self.local);
        let bye = d.request(Method::Bye, self.cfg.protocol, self.local);
        let protocol = self.cfg.protocol;
        let hop = |u: &Uri| {
            super::dialog::next_hop_addr(u, protocol).map(|addr| Destination::Hop {
                flow: None,
                addr,
                server_name: u.host.clone(),
            })
        };
        if let Some(to) = hop(&ack.next_hop) {
            self.transmit(to, ack.msg);
        }
        if let Some(to) = hop(&bye.next_hop) {
            self.counters.byes_sent += 1;
            self.send_request(now, bye.msg, to, None);
        }
    }
}

fn aname_header(aname: &str) -> &'static str {
    if aname == "Authorization" {
        "Authorization"
    } else {
        "Proxy-Authorization"
    }
}

fn static_name(h: &str) -> &'static str {
    match h {
        "From" => "From",
        "To" => "To",
        _ => "Call-ID",
    }
}
