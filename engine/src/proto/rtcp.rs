//! RTCP packet headers (RFC 3550 6.4): the part the SRTP layer reads.

use super::rtp::HeaderError;

/// Length of the RTCP header SRTCP leaves in the clear: V/P/RC, PT, length, sender SSRC.
pub const HEADER_LEN: usize = 8;

/// The sender SSRC of the first packet of a compound RTCP packet, after checking the version.
pub fn sender_ssrc(packet: &[u8]) -> Result<u32, HeaderError> {
    if packet.len() < HEADER_LEN {
        return Err(HeaderError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(HeaderError::Version);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sender_ssrc() {
        let p = [0x81, 0xc8, 0x00, 0x0d, 0x4d, 0x61, 0x72, 0x73];
        assert_eq!(sender_ssrc(&p), Ok(0x4d61_7273));
        assert_eq!(sender_ssrc(&p[..7]), Err(HeaderError::TooShort));
        assert_eq!(sender_ssrc(&[0u8; 8]), Err(HeaderError::Version));
    }
}
