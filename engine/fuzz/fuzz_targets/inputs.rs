//! Fuzzes the engine's other parsers of untrusted input: a datagram's class (RFC 7983), its
//! RTP header and RTCP compound, a DTLS server's ClientHello peek, a control request line (and
//! the stream or update it describes), and the daemon's TOML config. Each must give a typed
//! answer for any bytes, never panic.
//!
//! Input: byte 0 picks the parser; the rest is its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_engine::config::Config;
use srtp_engine::ctl::protocol::{Request, parse_request};
use srtp_engine::proto::dtls::opens_client_hello;
use srtp_engine::proto::rtcp::parse_compound;
use srtp_engine::proto::rtp::RtpHeader;
use srtp_engine::proto::{PacketClass, classify};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            match classify(rest) {
                PacketClass::Rtp => {
                    if let Ok(h) = RtpHeader::parse(rest) {
                        assert!(h.len <= rest.len(), "the header fits in the datagram");
                    }
                }
                PacketClass::Rtcp => {
                    let _ = parse_compound(rest, Some(0x1234_5678));
                }
                _ => {}
            }
            let _ = opens_client_hello(rest);
        }
        1 => {
            let (_, r) = parse_request(rest);
            match r {
                Ok(Request::Create(c)) => {
                    let _ = c.into_spec();
                }
                Ok(Request::Update(u)) => {
                    let _ = u.into_update();
                }
                _ => {}
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(c) = Config::parse(text) {
                    let _ = c.check();
                }
            }
        }
    }
});
