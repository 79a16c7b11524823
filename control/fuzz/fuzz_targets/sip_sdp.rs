//! Fuzzes the signaling parsers with arbitrary bytes: SIP by datagram and by stream, the
//! header accessors a transaction uses, SDP with offer/answer on whatever parses, and the user
//! agent's core taking whatever parses as a message from the network (a new request, a
//! request inside a dialog, a response), then a timer turn. Every input must end in a typed
//! error, a value or a response, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_control::sdp::{CryptoAttr, SecurityConfig, Session, plan_answer};
use srtp_control::sip::Message;
use srtp_control::sip::auth::{Authorization, Challenge};
use srtp_control::sip::transport::{Flow, Protocol};
use srtp_control::ua::UaConfig;
use srtp_control::ua::core::{MediaDone, UaCore};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = m.validate();
        let _ = m.transaction_key();
        let _ = (m.from(), m.to(), m.contact(), m.cseq());
        let _ = m.to_bytes();
        if let Ok(s) = Session::parse(&m.body) {
            let _ = plan_answer(&SecurityConfig::default(), &s, None);
        }
        let local = "127.0.0.1:5060".parse().expect("address");
        let now = std::time::Instant::now();
        let mut core = UaCore::new(UaConfig::new("fuzz", Protocol::Udp, local), local, now);
        let peer = Flow::Udp("127.0.0.2:5060".parse().expect("address"));
        core.handle_message(now, m.clone(), peer);
        // Answer its media requests as an engine would, then let it see the message again
        // (a retransmission) and a timer turn.
        while let Some(r) = core.poll_media() {
            core.handle_media(now, r.id, Ok(MediaDone::Applied));
        }
        core.handle_message(now, m, peer);
        core.handle_timeout(now + std::time::Duration::from_secs(40));
        while core.poll_transmit().is_some() || core.poll_event().is_some() {}
    }
    let _ = Message::parse_stream(data);
    if let Ok(s) = Session::parse(data) {
        let _ = plan_answer(&SecurityConfig::default(), &s, None);
        let _ = s.to_text();
    }
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = CryptoAttr::parse(t);
        let _ = Challenge::parse(t);
        let _ = Authorization::parse(t);
    }
});
