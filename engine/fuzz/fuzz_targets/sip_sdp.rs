//! Fuzzes the signaling parsers with arbitrary bytes: SIP by datagram and by stream, the
//! header accessors a transaction uses, and SDP with offer/answer on whatever parses. Every
//! input must end in a typed error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_control::sdp::{CryptoAttr, SecurityConfig, Session, plan_answer};
use srtp_control::sip::Message;
use srtp_control::sip::auth::{Authorization, Challenge};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = m.validate();
        let _ = m.transaction_key();
        let _ = (m.from(), m.to(), m.contact(), m.cseq());
        let _ = m.to_bytes();
        if let Ok(s) = Session::parse(&m.body) {
            let _ = plan_answer(&SecurityConfig::default(), &s, None);
        }
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
