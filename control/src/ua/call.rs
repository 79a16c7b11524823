//! One call as the core keeps it: where it stands, its dialog, its negotiation and its
//! stream, and the media request it waits for.

use std::net::SocketAddr;
use std::time::Instant;

use super::dialog::Dialog;
use super::io::{Transmit, TxKey};
use super::model::{CallError, EndedBy};
use crate::media::{Allocation, StreamRef};
use crate::sdp::{AnswerPlan, Negotiated, Offer, Signaling, Verdict};
use crate::sip::message::Message;
use crate::sip::transport::Flow;
use crate::sip::uri::Uri;
use crate::sip::{rand_u32, token};

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Caller: waiting for the engine's stream to put in the offer.
    Preparing,
    /// Caller: INVITE sent, no final answer yet.
    Calling,
    /// Answerer: waiting for the engine before answering.
    Answering,
    /// Answerer: 2xx sent, waiting for the ACK.
    Accepted,
    /// The session is set up in SIP; the engine is taking the answer.
    Completing,
    /// Set up.
    Confirmed,
    /// Our BYE is out, or the stream is being closed.
    Ending,
}

/// What to do once an `Apply` succeeds.
#[derive(Clone, Debug)]
pub(crate) enum AfterApply {
    /// A caller's answer: report the call connected.
    Connected,
    /// An answerer's delayed offer, answered in the ACK: report it answered.
    Answered,
    /// A peer's re-offer (re-INVITE or UPDATE): answer it on this transaction.
    Reanswer {
        key: TxKey,
        request: Box<Message>,
        plan: Box<AnswerPlan>,
    },
    /// Our re-offer (in a 2xx to an empty re-INVITE), answered in the ACK.
    Reanswered,
}

/// What a media reply is for.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    Prepared(String),
    Opened(String),
    Applied {
        call_id: String,
        then: AfterApply,
        prev: Option<Box<Negotiated>>,
    },
    Closed {
        call_id: String,
    },
    /// The stream of a call that was never set up here (an answerer's, or one whose call was
    /// gone when its stream was made).
    Released {
        call_id: String,
    },
    Stats(u64),
    /// Nothing waits for it (stopping a stream's sending, closing an orphan).
    Ignored,
}

/// One call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) uac: bool,
    pub(crate) phase: Phase,
    pub(crate) started: Instant,
    pub(crate) local_tag: String,
    /// Caller: the target and the first hop for the INVITE.
    pub(crate) target: Option<Uri>,
    pub(crate) first_hop: Option<(SocketAddr, String)>,
    /// Caller: the INVITE as last sent (digest retry, CANCEL); answerer: the INVITE received.
    pub(crate) invite: Option<Message>,
    /// The INVITE transaction (client or server) whose 2xx or ACK we wait for.
    pub(crate) invite_key: Option<TxKey>,
    pub(crate) dialog: Option<Dialog>,
    /// The connection the dialog uses (TCP/TLS), preferred for its requests.
    pub(crate) flow: Option<Flow>,
    /// An offer of ours waiting for its answer.
    pub(crate) offer: Option<Offer>,
    /// The answerer's plan before its stream exists.
    pub(crate) plan: Option<AnswerPlan>,
    pub(crate) negotiated: Option<Negotiated>,
    pub(crate) alloc: Option<Allocation>,
    pub(crate) verdict: Option<Verdict>,
    pub(crate) signaling: Signaling,
    /// SDP `o=` session id and version.
    pub(crate) sdp_session: u64,
    pub(crate) sdp_version: u64,
    pub(crate) auth_tried: bool,
    /// Caller: a provisional response came (a CANCEL may be sent).
    pub(crate) provisional: bool,
    /// Give up the call as soon as that can be done (stopping).
    pub(crate) cancel: bool,
    /// End the call once it is confirmed (stopping, a hangup during set-up).
    pub(crate) hangup_wanted: Option<EndedBy>,
    /// Caller: the ACK sent for the 2xx, sent again for each retransmission of it.
    pub(crate) ack: Option<Transmit>,
    /// A re-offer in progress (its transaction key): a second one waits.
    pub(crate) reoffer: Option<TxKey>,
    /// Why it is ending, once it is.
    pub(crate) ending: Option<EndedBy>,
    pub(crate) bye: Option<Result<(), CallError>>,
    /// Reported connected (caller) or answered (answerer), or its failure reported.
    pub(crate) reported: bool,
    /// Its failure was reported: its end is not reported again.
    pub(crate) quiet_end: bool,
    /// Caller with a delayed offer: the ACK, waiting for the answer to put in it.
    pub(crate) plan_ack: Option<Transmit>,
}

impl Call {
    pub(crate) fn new(uac: bool, phase: Phase, now: Instant, signaling: Signaling) -> Call {
        Call {
            uac,
            phase,
            started: now,
            local_tag: token(),
            target: None,
            first_hop: None,
            invite: None,
            invite_key: None,
            dialog: None,
            flow: None,
            offer: None,
            plan: None,
            negotiated: None,
            alloc: None,
            verdict: None,
            signaling,
            sdp_session: u64::from(rand_u32()),
            sdp_version: 0,
            auth_tried: false,
            provisional: false,
            cancel: false,
            hangup_wanted: None,
            ack: None,
            reoffer: None,
            ending: None,
            bye: None,
            reported: false,
            quiet_end: false,
            plan_ack: None,
        }
    }

    pub(crate) fn stream(&self) -> Option<StreamRef> {
        self.alloc.as_ref().map(|a| a.stream)
    }

    /// The next SDP version of this session (RFC 3264 8: each new offer or answer).
    pub(crate) fn next_sdp(&mut self) -> (u64, u64) {
        self.sdp_version += 1;
        (self.sdp_session, self.sdp_version)
    }
}
