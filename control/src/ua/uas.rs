//! The answerer's side of [`UaCore`] (an INVITE with an offer, or without one: our offer in
//! the 2xx, the answer in the ACK), CANCEL, and what a peer sends inside a dialog in either
//! role: BYE, re-INVITE and UPDATE (hold, resume, new keys, a new DTLS fingerprint), applied
//! to the engine's stream before they are answered.

use std::time::Instant;

use super::core::{
    ALLOW, AfterApply, Call, MediaOp, Pending, Phase, TxKey, UaCore, UaEvent, user_agent,
};
use super::dialog::Dialog;
use super::model::{CallError, CallInfo, EndedBy, UasEvent};
use crate::media::{Allocation, MediaError};
use crate::sdp::{
    AnswerPlan, Direction, LocalMedia, MediaCrypto, Negotiated, NegotiationError, Offer, Session,
    Signaling, Verdict, plan_answer,
};
use crate::sip::auth::{Authorization, Challenge};
use crate::sip::message::{Message, Method};
use crate::sip::token;
use crate::sip::transport::Flow;

impl UaCore {
    /// A response to `req` with a Warning carrying `text` (RFC 3261 20.43, code 399).
    fn warned(
        &self,
        req: &Message,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        text: &str,
    ) -> Message {
        let mut r = Message::response_to(req, code, reason, tag);
        r.push(
            "Warning",
            format!("399 {} \"{}\"", self.local.ip(), text.replace('"', "'")),
        );
        r
    }

    pub(crate) fn incoming_invite(&mut self, now: Instant, req: Message, flow: Flow, key: TxKey) {
        let Ok(call_id) = req.call_id().map(str::to_owned) else {
            return;
        };
        if self.stopping {
            self.counters.refused_stopping += 1;
            let mut r = Message::response_to(&req, 503, "Service Unavailable", Some(&token()));
            r.push("Retry-After", "5");
            self.respond(now, &key, r);
            self.event(UaEvent::Uas(UasEvent::Refused {
                call_id,
                code: 503,
                reason: "stopping".into(),
            }));
            return;
        }
        if self.calls.contains_key(&call_id) {
            // The same Call-ID again without a To tag: a merged request (RFC 3261 8.2.2.2).
            let r = Message::response_to(&req, 482, "Loop Detected", Some(&token()));
            self.respond(now, &key, r);
            return;
        }
        if let Some((realm, password)) = self.cfg.challenge.clone() {
            let ok = req
                .header("Authorization")
                .and_then(|a| Authorization::parse(a).ok())
                .is_some_and(|a| a.realm == realm && a.verify(&password, "INVITE"));
            if !ok {
                let mut r = Message::response_to(&req, 401, "Unauthorized", Some(&token()));
                let nonce = token();
                for &algorithm in &self.cfg.challenge_algorithms {
                    let ch = Challenge {
                        realm: realm.clone(),
                        nonce: nonce.clone(),
                        opaque: None,
                        algorithm,
                        qop_auth: true,
                        stale: false,
                    };
                    r.push("WWW-Authenticate", ch.to_header());
                }
                self.respond(now, &key, r);
                return;
            }
        }
        let sips = matches!(&req.start, crate::sip::StartLine::Request { uri, .. } if uri.secure);
        let mut call = Call::new(
            false,
            Phase::Answering,
            now,
            Signaling::answerer(&req, sips),
        );
        call.invite_key = Some(key.clone());
        call.flow = Some(flow);
        if req.body.is_empty() {
            // A delayed offer: we offer in the 2xx, the peer answers in the ACK.
            call.invite = Some(req);
            self.calls.insert(call_id.clone(), call);
            self.media_request(MediaOp::Prepare, Pending::Prepared(call_id));
            return;
        }
        let plan = Session::parse(&req.body)
            .map_err(NegotiationError::from)
            .and_then(|offer| plan_answer(&self.cfg.security, &offer, None));
        match plan {
            Ok(plan) => {
                let n = plan.negotiated.clone();
                call.plan = Some(plan);
                call.negotiated = Some(n.clone());
                call.invite = Some(req);
                self.calls.insert(call_id.clone(), call);
                // Held until the ACK: an INVITE that is never acknowledged (or names someone
                // else's address) gets no media sent to the address in its SDP.
                let op = MediaOp::Open {
                    n: Box::new(n),
                    held: true,
                };
                self.media_request(op, Pending::Opened(call_id));
            }
            Err(e) => {
                let (code, reason) = e.sip_status();
                let r = self.warned(&req, code, reason, Some(&call.local_tag), &e.to_string());
                self.respond(now, &key, r);
                self.event(UaEvent::Uas(UasEvent::Refused {
                    call_id,
                    code,
                    reason: e.to_string(),
                }));
            }
        }
    }

    /// The engine's stream for an answer: the answerer's 2xx, or a caller's ACK to a 2xx
    /// that carried the offer.
    pub(crate) fn on_opened(
        &mut self,
        now: Instant,
        call_id: &str,
        r: Result<Allocation, MediaError>,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            // The call went (cancelled while its stream was made): close the stream and say
            // what it sent.
            if let Ok(a) = r {
                let then = Pending::Released {
                    call_id: call_id.to_owned(),
                };
                self.media_request(MediaOp::Close(a.stream), then);
            }
            return;
        };
        let alloc = match r {
            Ok(a) => a,
            Err(e) => {
                if call.uac {
                    // The 2xx is in: acknowledge without an answer and end the call.
                    call.phase = Phase::Confirmed;
                    if let Some(ack) = call.plan_ack.take() {
                        call.ack = Some(ack.clone());
                        self.transmits_push(ack);
                    }
                    let text = e.to_string();
                    self.report_failure(call_id, e.into());
                    self.end_call(now, call_id, EndedBy::Failure(text));
                } else if matches!(e, MediaError::Full(_)) {
                    // Overload is said as such (RFC 3261 21.5.4), with when to try again.
                    self.refuse(now, call_id, 503, "Service Unavailable", &e.to_string());
                } else {
                    self.refuse(now, call_id, 500, "Server Internal Error", &e.to_string());
                }
                return;
            }
        };
        call.alloc = Some(alloc.clone());
        self.remember_stream(call_id, &alloc);
        if self.calls.get(call_id).is_some_and(|c| c.uac) {
            return self.uac_opened(now, call_id, alloc);
        }
        if self.calls.get(call_id).is_some_and(|c| c.cancel) {
            return self.refuse(now, call_id, 503, "Service Unavailable", "stopping");
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(plan) = call.plan.take() else {
            return;
        };
        let (session, version) = call.next_sdp();
        let local = LocalMedia {
            rtp: alloc.rtp,
            rtcp: alloc.rtcp,
            fingerprint: alloc.fingerprint.clone(),
            direction: Direction::SendRecv,
        };
        match plan.answer_sdp(&local, session, version) {
            Ok(answer) => {
                self.accept(now, call_id, answer.to_text().into_bytes());
                self.answered(call_id, now);
            }
            Err(e) => self.refuse(now, call_id, 500, "Server Internal Error", &e.to_string()),
        }
    }

    /// Refuses an INVITE we had begun to answer (its stream is closed).
    fn refuse(&mut self, now: Instant, call_id: &str, code: u16, reason: &str, text: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if let (Some(inv), Some(key)) = (call.invite.clone(), call.invite_key.clone()) {
            let r = self.warned(&inv, code, reason, Some(&call.local_tag.clone()), text);
            let mut r = r;
            if code == 503 {
                r.push("Retry-After", "5");
            }
            self.respond(now, &key, r);
        }
        self.event(UaEvent::Uas(UasEvent::Refused {
            call_id: call_id.to_owned(),
            code,
            reason: text.to_owned(),
        }));
        self.drop_call(call_id);
    }

    /// Sends our 2xx with `sdp` (an answer, or a delayed offer's offer) and makes the dialog.
    fn accept(&mut self, now: Instant, call_id: &str, sdp: Vec<u8>) {
        let contact = self.contact();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some(inv), Some(key)) = (call.invite.clone(), call.invite_key.clone()) else {
            return;
        };
        let mut ok = Message::response_to(&inv, 200, "OK", Some(&call.local_tag));
        ok.push("Contact", contact)
            .push("Allow", ALLOW)
            .push("Server", user_agent());
        ok.set_body("application/sdp", sdp);
        match Dialog::as_uas(&inv, &call.local_tag) {
            Ok(d) => call.dialog = Some(d),
            Err(e) => {
                return self.refuse(now, call_id, 400, "Bad Request", &e.to_string());
            }
        }
        call.phase = Phase::Accepted;
        self.respond(now, &key, ok);
    }

    /// Reports an answered call (the answerer's counterpart of `connected`).
    fn answered(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let (Some(n), Some(stream)) = (call.negotiated.clone(), call.stream()) else {
            return;
        };
        let verdict = Verdict::new(call.signaling.clone(), &n);
        call.verdict = Some(verdict.clone());
        call.reported = true;
        let info = CallInfo {
            call_id: call_id.to_owned(),
            stream: stream.id,
            negotiated: n,
            verdict,
            setup: super::core::setup_time(call, now),
        };
        self.event(UaEvent::Uas(UasEvent::Answered(Box::new(info))));
    }

    /// The answerer's stream for a delayed offer is ready: our offer goes in the 2xx.
    pub(crate) fn answer_with_offer(&mut self, now: Instant, call_id: &str, sdp: Vec<u8>) {
        self.accept(now, call_id, sdp);
    }

    /// The ACK for one of our 2xx (the first INVITE's or a re-INVITE's).
    pub(crate) fn on_ack(&mut self, now: Instant, call_id: &str, ack: Message) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let offer = call.offer.take();
        match (call.phase, offer) {
            (Phase::Accepted, Some(offer)) => {
                // Our delayed-offer 2xx: the answer is in the ACK (RFC 3261 13.2.1).
                let result = if ack.body.is_empty() {
                    Err(CallError::Negotiation(NegotiationError::Sdp(
                        crate::sdp::SdpError::Structure("the ACK has no SDP body"),
                    )))
                } else {
                    Session::parse(&ack.body)
                        .map_err(NegotiationError::from)
                        .and_then(|a| offer.accept_answer(&a))
                        .map_err(CallError::from)
                };
                match (result, call.stream()) {
                    (Ok(n), Some(stream)) => {
                        call.phase = Phase::Completing;
                        self.apply(call_id, stream, n, None, AfterApply::Answered);
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        call.phase = Phase::Confirmed;
                        let text = format!("the ACK carried no usable answer: {e}");
                        self.report_failure(call_id, e);
                        self.end_call(now, call_id, EndedBy::Failure(text));
                    }
                }
            }
            (Phase::Accepted, None) => {
                call.phase = Phase::Confirmed;
                if let Some(s) = call.stream() {
                    self.media_request(MediaOp::Sending(s, true), Pending::Ignored);
                }
                let Some(call) = self.calls.get_mut(call_id) else {
                    return;
                };
                if let Some(by) = call.hangup_wanted.take() {
                    self.end_call(now, call_id, by);
                }
            }
            (Phase::Confirmed, Some(offer)) => {
                // Our offer in the 2xx to a re-INVITE without SDP.
                call.reoffer = None;
                let prev = call.negotiated.clone();
                let result = Session::parse(&ack.body)
                    .map_err(NegotiationError::from)
                    .and_then(|a| offer.accept_answer(&a));
                match (result, call.stream()) {
                    (Ok(n), Some(stream)) => {
                        call.negotiated = Some(n.clone());
                        self.apply(call_id, stream, n, prev, AfterApply::Reanswered);
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        tracing::warn!(call_id, "the ACK to our re-offer: {e}");
                    }
                }
            }
            (Phase::Confirmed, None) => {
                call.reoffer = None;
            }
            _ => {}
        }
    }

    /// Asks the engine to take a negotiation; `then` runs when it has.
    fn apply(
        &mut self,
        call_id: &str,
        stream: crate::media::StreamRef,
        n: Negotiated,
        prev: Option<Negotiated>,
        then: AfterApply,
    ) {
        if let Some(call) = self.calls.get_mut(call_id) {
            if n.rtcp_mux
                && let Some(a) = call.alloc.as_mut()
            {
                // The engine closes the RTCP port when rtcp-mux is agreed.
                a.rtcp = None;
            }
            if matches!(then, AfterApply::Answered) {
                call.negotiated = Some(n.clone());
            }
        }
        let prev = prev.map(Box::new);
        self.media_request(
            MediaOp::Apply {
                stream,
                n: Box::new(n),
                prev: prev.clone(),
            },
            Pending::Applied {
                call_id: call_id.to_owned(),
                then,
                prev,
            },
        );
    }

    /// Our 2xx was never acknowledged (64*T1): end the call, its media first (13.3.1.4).
    pub(crate) fn on_no_ack(&mut self, now: Instant, call_id: &str, key: &TxKey) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.invite_key.as_ref() != Some(key) || call.phase == Phase::Ending {
            return;
        }
        if !call.reported {
            let text = "no ACK for our 2xx".to_owned();
            self.report_failure(call_id, CallError::Timeout(self.cfg.timers.t1 * 64));
            self.end_call(now, call_id, EndedBy::Failure(text));
        } else {
            self.end_call(now, call_id, EndedBy::NoAck);
        }
    }

    pub(crate) fn incoming_cancel(&mut self, now: Instant, req: &Message, key: &TxKey) {
        let inv_key = (key.0.clone(), Method::Invite);
        let pending = self.server_open(&inv_key);
        let r = if pending {
            Message::response_to(req, 200, "OK", None)
        } else {
            Message::response_to(req, 481, "Call/Transaction Does Not Exist", None)
        };
        self.respond(now, key, r);
        if !pending {
            return;
        }
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let inv = self.calls.get(&call_id).and_then(|c| {
            (c.invite_key.as_ref() == Some(&inv_key))
                .then(|| c.invite.clone())
                .flatten()
                .map(|i| (i, c.local_tag.clone()))
        });
        if let Some((inv, tag)) = inv {
            // RFC 3261 9.2: the INVITE gets 487.
            let r = Message::response_to(&inv, 487, "Request Terminated", Some(&tag));
            self.respond(now, &inv_key, r);
            self.event(UaEvent::Uas(UasEvent::Refused {
                call_id: call_id.clone(),
                code: 487,
                reason:
                    "cancelled (by the caller, or by a forking proxy once another branch answered)"
                        .into(),
            }));
            self.drop_call(&call_id);
        }
    }

    /// A request inside a dialog (the To tag is ours).
    pub(crate) fn in_dialog(
        &mut self,
        now: Instant,
        req: Message,
        flow: Flow,
        key: TxKey,
        tag: &str,
    ) {
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let method = req.method().unwrap_or(Method::Ack);
        let known = self.calls.get_mut(&call_id).and_then(|c| {
            let d = c.dialog.as_mut()?;
            (d.local_tag == tag).then_some(c)
        });
        let Some(call) = known else {
            let r = Message::response_to(&req, 481, "Call/Transaction Does Not Exist", None);
            self.respond(now, &key, r);
            return;
        };
        if self.cfg.protocol.reliable() {
            call.flow = Some(flow);
        }
        if let Some(d) = call.dialog.as_mut()
            && let Err((code, reason)) = d.accept_request(&req)
        {
            let r = Message::response_to(&req, code, reason, None);
            self.respond(now, &key, r);
            return;
        }
        match method {
            Method::Bye => {
                let r = Message::response_to(&req, 200, "OK", None);
                self.respond(now, &key, r);
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return;
                };
                if call.phase == Phase::Ending {
                    // Our BYE crossed theirs; ours will be answered (or time out).
                    return;
                }
                if !call.reported {
                    self.report_failure(&call_id, CallError::EndedEarly);
                }
                self.close_call(&call_id, None);
            }
            Method::Invite | Method::Update => self.reoffer(now, &call_id, req, key, method),
            Method::Options | Method::Other(_) if method.as_str() != "PRACK" => {
                let mut r = Message::response_to(&req, 200, "OK", None);
                r.push("Allow", ALLOW);
                self.respond(now, &key, r);
            }
            _ => {
                let mut r = Message::response_to(&req, 405, "Method Not Allowed", None);
                r.push("Allow", ALLOW);
                self.respond(now, &key, r);
            }
        }
    }

    /// A re-INVITE or UPDATE: with an offer, it is applied to the stream and answered; a
    /// re-INVITE without one gets our offer (current keys kept) and its ACK the answer.
    fn reoffer(&mut self, now: Instant, call_id: &str, req: Message, key: TxKey, method: Method) {
        let contact = self.contact();
        let busy = self
            .calls
            .get(call_id)
            .and_then(|c| c.reoffer.clone())
            .is_some_and(|k| self.server_open(&k) || k.1 == Method::Invite);
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if busy || call.phase != Phase::Confirmed {
            // RFC 3261 14.2: an offer while one is pending gets 500 with Retry-After (a 491
            // would ask the peer to back off a glare we did not cause).
            let mut r = Message::response_to(&req, 500, "Server Internal Error", None);
            r.push("Retry-After", "1");
            self.respond(now, &key, r);
            return;
        }
        if req.body.is_empty() {
            if method == Method::Update {
                let mut r = Message::response_to(&req, 200, "OK", None);
                r.push("Contact", contact);
                self.respond(now, &key, r);
                return;
            }
            let (Some(alloc), prev) = (call.alloc.clone(), call.negotiated.clone()) else {
                return;
            };
            let local = LocalMedia {
                rtp: alloc.rtp,
                rtcp: alloc.rtcp,
                fingerprint: alloc.fingerprint.clone(),
                direction: Direction::SendRecv,
            };
            let (session, version) = call.next_sdp();
            match Offer::new(&self.cfg.security, &local, session, version, prev.as_ref()) {
                Ok(offer) => {
                    let body = offer.sdp.to_text().into_bytes();
                    call.offer = Some(offer);
                    call.invite_key = Some(key.clone());
                    call.reoffer = Some(key.clone());
                    let tag = call.local_tag.clone();
                    let mut ok = Message::response_to(&req, 200, "OK", Some(&tag));
                    ok.push("Contact", contact).push("Allow", ALLOW);
                    ok.set_body("application/sdp", body);
                    self.respond(now, &key, ok);
                }
                Err(e) => {
                    let r = self.warned(&req, 500, "Server Internal Error", None, &e.to_string());
                    self.respond(now, &key, r);
                }
            }
            return;
        }
        let prev = call.negotiated.clone();
        let plan = Session::parse(&req.body)
            .map_err(NegotiationError::from)
            .and_then(|offer| plan_answer(&self.cfg.security, &offer, prev.as_ref()));
        match (plan, call.stream()) {
            (Ok(plan), Some(stream)) => {
                if method == Method::Invite {
                    call.invite_key = Some(key.clone());
                }
                call.reoffer = Some(key.clone());
                let n = plan.negotiated.clone();
                self.apply(
                    call_id,
                    stream,
                    n,
                    prev,
                    AfterApply::Reanswer {
                        key,
                        request: Box::new(req),
                        plan: Box::new(plan),
                    },
                );
            }
            (Ok(_), None) => {
                let r = Message::response_to(&req, 500, "Server Internal Error", None);
                self.respond(now, &key, r);
            }
            (Err(e), _) => {
                let (code, reason) = e.sip_status();
                let r = self.warned(&req, code, reason, None, &e.to_string());
                self.respond(now, &key, r);
            }
        }
    }

    /// The engine took (or refused) a negotiation.
    pub(crate) fn on_applied(
        &mut self,
        now: Instant,
        call_id: &str,
        then: AfterApply,
        prev: Option<Box<Negotiated>>,
        r: Result<(), MediaError>,
    ) {
        if !self.calls.contains_key(call_id) {
            return;
        }
        match (then, r) {
            (AfterApply::Connected, Ok(())) => self.connected(now, call_id),
            (AfterApply::Answered, Ok(())) => {
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.phase = Phase::Confirmed;
                }
                self.answered(call_id, now);
                if let Some(by) = self
                    .calls
                    .get_mut(call_id)
                    .and_then(|c| c.hangup_wanted.take())
                {
                    self.end_call(now, call_id, by);
                }
            }
            (AfterApply::Connected | AfterApply::Answered, Err(e)) => {
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.phase = Phase::Confirmed;
                }
                let text = e.to_string();
                self.report_failure(call_id, e.into());
                self.end_call(now, call_id, EndedBy::Failure(text));
            }
            (AfterApply::Reanswer { key, request, plan }, Ok(())) => {
                self.reanswer(now, call_id, &key, &request, *plan, prev.map(|p| *p));
            }
            (AfterApply::Reanswer { key, request, .. }, Err(e)) => {
                let r = self.warned(&request, 500, "Server Internal Error", None, &e.to_string());
                self.respond(now, &key, r);
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.reoffer = None;
                }
                if e == MediaError::EngineRestarted {
                    self.end_call(now, call_id, EndedBy::Failure(e.to_string()));
                }
            }
            (AfterApply::Reanswered, r) => {
                let Some(call) = self.calls.get_mut(call_id) else {
                    return;
                };
                if let Err(e) = r {
                    tracing::warn!(call_id, "the engine refused the re-offer's answer: {e}");
                    return;
                }
                let change = match &call.negotiated {
                    Some(n) => describe_change(prev.as_deref(), n),
                    None => return,
                };
                self.event(UaEvent::Uas(UasEvent::Updated {
                    call_id: call_id.to_owned(),
                    change,
                }));
            }
        }
    }

    fn reanswer(
        &mut self,
        now: Instant,
        call_id: &str,
        key: &TxKey,
        request: &Message,
        plan: AnswerPlan,
        prev: Option<Negotiated>,
    ) {
        let contact = self.contact();
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        call.reoffer = None;
        let Some(alloc) = call.alloc.clone() else {
            return;
        };
        let local = LocalMedia {
            rtp: alloc.rtp,
            rtcp: alloc.rtcp,
            fingerprint: alloc.fingerprint.clone(),
            direction: Direction::SendRecv,
        };
        let (session, version) = call.next_sdp();
        let answer = match plan.answer_sdp(&local, session, version) {
            Ok(a) => a,
            Err(e) => {
                let r = self.warned(request, 500, "Server Internal Error", None, &e.to_string());
                self.respond(now, key, r);
                return;
            }
        };
        let n = plan.negotiated;
        let keys_kept = prev.as_ref().is_some_and(|p| p.crypto == n.crypto);
        let mut verdict = Verdict::new(call.signaling.clone(), &n);
        if keys_kept && let Some(old) = &call.verdict {
            verdict.media = old.media.clone();
        }
        call.verdict = Some(verdict);
        let change = describe_change(prev.as_ref(), &n);
        call.negotiated = Some(n);
        let tag = call.local_tag.clone();
        let mut ok = Message::response_to(request, 200, "OK", Some(&tag));
        ok.push("Contact", contact).push("Allow", ALLOW);
        ok.set_body("application/sdp", answer.to_text().into_bytes());
        self.respond(now, key, ok);
        self.event(UaEvent::Uas(UasEvent::Updated {
            call_id: call_id.to_owned(),
            change,
        }));
    }
}

/// What a re-offer changed, in words.
pub(crate) fn describe_change(prev: Option<&Negotiated>, n: &Negotiated) -> String {
    let Some(p) = prev else {
        return "session set up".into();
    };
    let mut what = Vec::new();
    if p.direction != n.direction {
        what.push(match n.direction {
            Direction::RecvOnly => "on hold by the peer: we receive only".to_owned(),
            Direction::Inactive => "inactive: no media either way".to_owned(),
            Direction::SendOnly => "we send only (the peer receives)".to_owned(),
            Direction::SendRecv => "resumed: media both ways".to_owned(),
        });
    }
    if p.remote_rtp != n.remote_rtp {
        what.push(format!("the peer's media moved to {}", n.remote_rtp));
    }
    if p.rtcp_mux != n.rtcp_mux {
        what.push(format!(
            "rtcp-mux {}",
            if n.rtcp_mux { "on" } else { "off" }
        ));
    }
    if p.crypto != n.crypto {
        what.push(match &n.crypto {
            MediaCrypto::None => "media now unencrypted".to_owned(),
            MediaCrypto::Sdes { remote, .. } => format!("new SDES keys ({})", remote.suite),
            MediaCrypto::Dtls { .. } => {
                "a new DTLS-SRTP association (fingerprint or tls-id changed)".to_owned()
            }
        });
    }
    if p.codec != n.codec {
        what.push(format!("codec {}", n.codec.engine_name));
    }
    if what.is_empty() {
        "no change".into()
    } else {
        what.join("; ")
    }
}
