//! What goes in and out of the user agent's core: messages to send and where ([`Transmit`]),
//! requests to the media engine and their answers ([`MediaRequest`], [`MediaDone`]), the
//! owner's commands ([`Command`]) and what the core reports ([`UaEvent`]).

use std::net::SocketAddr;

use srtp_engine::model::StreamStats;

use super::model::{CallError, CallInfo, Ended, UasEvent};
use crate::media::{Allocation, DtlsOutcome, StreamRef};
use crate::register::endpoint::{self};
use crate::sdp::{Negotiated, Verdict};
use crate::sip::message::{Message, Method};
use crate::sip::transport::Flow;
use crate::sip::uri::Uri;

/// A transaction's key: top Via branch and method.
pub(crate) type TxKey = (String, Method);

/// The methods we answer, for `Allow`.
pub(crate) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Back on the flow a request came in on (responses).
    Flow(Flow),
    /// To a next hop: on `flow` while that connection is open, else a datagram to (or a
    /// connection to) `addr`; TLS checks the certificate against `server_name`.
    Hop {
        /// A connection already used with this hop.
        flow: Option<Flow>,
        /// The hop's address.
        addr: SocketAddr,
        /// The name its TLS certificate must carry.
        server_name: String,
    },
}

/// What to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A SIP message.
    Sip(Message),
    /// An RFC 5626 CRLF ping (registration keepalive).
    Ping,
    /// A STUN Binding request over UDP (registration keepalive).
    Stun(crate::sip::stun::TransactionId),
}

/// A message for the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub to: Destination,
    /// What.
    pub payload: Payload,
}

/// Something to ask the media engine; answer with [`UaCore::handle_media`](super::core::UaCore::handle_media)(super::core::UaCore::handle_media) and the same id.
#[derive(Clone, Debug)]
pub struct MediaRequest {
    /// The request's id.
    pub id: u64,
    /// What to do.
    pub op: MediaOp,
}

/// A media request (see [`crate::media::MediaEngine`] for each).
#[derive(Clone, Debug)]
pub enum MediaOp {
    /// An offerer's stream before the answer.
    Prepare,
    /// A stream for a negotiation made by the peer's offer: the answerer's (`held`: it sends
    /// no RTP until [`MediaOp::Sending`] after the ACK), or a delayed offerer's at its ACK.
    Open {
        /// The negotiation.
        n: Box<Negotiated>,
        /// Created sending nothing.
        held: bool,
    },
    /// Bring a stream to a negotiation (`prev`: the one in force).
    Apply {
        /// The stream.
        stream: StreamRef,
        /// The new negotiation.
        n: Box<Negotiated>,
        /// The one it replaces.
        prev: Option<Box<Negotiated>>,
    },
    /// Start (`true`: the ACK came) or stop (`false`: a hangup, before its BYE) sending.
    Sending(StreamRef, bool),
    /// Statistics.
    Stats(StreamRef),
    /// Remove the stream.
    Close(StreamRef),
}

/// A media reply.
#[derive(Clone, Debug)]
pub enum MediaDone {
    /// A stream was made.
    Allocated(Allocation),
    /// A change was applied (or sending stopped).
    Applied,
    /// Statistics (or the final ones of a closed stream).
    Stats(Option<StreamStats>),
}

/// What the owner asks of the core.
#[derive(Clone, Debug)]
pub enum Command {
    /// Place a call.
    Call {
        /// Its Call-ID.
        call_id: String,
        /// Whom to call (the Request-URI and To).
        target: Uri,
        /// Where to send the INVITE (an outbound proxy, or the target's address).
        next_hop: SocketAddr,
        /// Send the INVITE without SDP: the peer offers in its 2xx, we answer in the ACK.
        delayed_offer: bool,
    },
    /// End a call with BYE.
    Hangup {
        /// The call.
        call_id: String,
    },
    /// A call's media statistics; the answer comes as [`UaEvent::Stats`] with `token`.
    Stats {
        /// The call.
        call_id: String,
        /// Echoed in the answer.
        token: u64,
    },
    /// End everything: BYE for every call, CANCEL for unanswered ones, 503 for new ones,
    /// unregister; [`UaEvent::Idle`] when nothing is left.
    Shutdown,
}

/// What the core reports.
#[derive(Clone, Debug)]
pub enum UaEvent {
    /// One of our calls connected (media keyed as far as SDP goes).
    Connected(Box<CallInfo>),
    /// One of our calls failed before it connected.
    CallFailed {
        /// Call-ID.
        call_id: String,
        /// Why.
        error: CallError,
    },
    /// A call we placed that had connected is over.
    Ended(Box<Ended>),
    /// The answerer's side.
    Uas(UasEvent),
    /// A DTLS outcome of one of our calls.
    Dtls {
        /// Call-ID.
        call_id: String,
        /// The outcome.
        outcome: DtlsOutcome,
        /// The verdict with it.
        verdict: Box<Verdict>,
    },
    /// A [`Command::Stats`] answer.
    Stats {
        /// The command's token.
        token: u64,
        /// The statistics.
        result: Result<Option<StreamStats>, CallError>,
    },
    /// Registration progress.
    Registration(endpoint::Event),
    /// After [`Command::Shutdown`]: no call and no registration left.
    Idle,
}
