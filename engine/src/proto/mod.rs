//! Sans-IO protocol code: no sockets, no threads, no clock. Everything here is a pure function
//! or a plain struct changed through `&mut`, tested with RFC vectors.

pub mod dtls;
pub mod pacer;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod stats;

/// What a datagram on a media port carries, by its first byte (RFC 7983 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// STUN (0-3).
    Stun,
    /// ZRTP (16-19).
    Zrtp,
    /// DTLS (20-63).
    Dtls,
    /// TURN channel data (64-79).
    Turn,
    /// RTP (128-191, second byte outside 192-223).
    Rtp,
    /// RTCP (128-191, second byte 192-223; RFC 5761 4).
    Rtcp,
    /// Anything else, including the empty datagram.
    Unknown,
}

/// Classifies a datagram (RFC 7983 7, with RFC 5761 4 for RTP against RTCP).
pub fn classify(packet: &[u8]) -> PacketClass {
    match packet.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(16..=19) => PacketClass::Zrtp,
        Some(20..=63) => PacketClass::Dtls,
        Some(64..=79) => PacketClass::Turn,
        Some(128..=191) if rtcp::is_rtcp(packet) => PacketClass::Rtcp,
        Some(128..=191) => PacketClass::Rtp,
        _ => PacketClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_demultiplexing() {
        assert_eq!(classify(&[0x00, 0x01]), PacketClass::Stun);
        assert_eq!(classify(&[0x16, 0xfe, 0xfd]), PacketClass::Dtls);
        assert_eq!(classify(&[0x80, 0x00]), PacketClass::Rtp);
        assert_eq!(classify(&[0x80, 0xe0]), PacketClass::Rtp); // marker + PT 96
        assert_eq!(classify(&[0x81, 0xc8]), PacketClass::Rtcp);
        assert_eq!(classify(&[0x41]), PacketClass::Turn);
        assert_eq!(classify(&[0x12]), PacketClass::Zrtp);
        assert_eq!(classify(&[]), PacketClass::Unknown);
        assert_eq!(classify(&[0xff]), PacketClass::Unknown);
    }
}
