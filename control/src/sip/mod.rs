//! SIP (RFC 3261): messages, URIs, digest authentication, transactions, transports and the
//! per-endpoint message log.

pub mod auth;
pub mod error;
pub mod headers;
mod incoming;
pub mod log;
pub mod message;
pub mod stun;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use message::{Message, Method, ParseError, StartLine};
pub use uri::{NameAddr, Uri};

use std::net::SocketAddr;

use transport::Protocol;

/// 32 random bits from the system generator.
pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator");
    u32::from_le_bytes(b)
}

/// 16 random hex digits: tags, Call-ID parts, branches, nonces.
pub fn token() -> String {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random number generator");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh top Via for a request sent from `local` (a new RFC 3261 branch, `rport` asked).
/// Over TCP and TLS it carries `alias` (RFC 5923): the next hop may send requests for our
/// address back on the connection this one came on, rather than open one to our listener (a
/// TLS client without a certificate of its own can take no connection).
pub fn via_header(protocol: Protocol, local: SocketAddr) -> String {
    format!(
        "SIP/2.0/{} {local};branch=z9hG4bK{};rport{}",
        protocol.via(),
        token(),
        if protocol.reliable() { ";alias" } else { "" }
    )
}
