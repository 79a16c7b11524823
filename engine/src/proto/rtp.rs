//! RTP packet headers (RFC 3550 5.1): the part the SRTP layer reads.

/// Why a datagram is not a well-formed RTP or RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the fixed header.
    #[error("shorter than the fixed header")]
    TooShort,
    /// The version field is not 2.
    #[error("version is not 2")]
    Version,
    /// The CSRC list runs past the end of the packet.
    #[error("CSRC list runs past the packet")]
    CsrcOverrun,
    /// The header extension runs past the end of the packet.
    #[error("header extension runs past the packet")]
    ExtensionOverrun,
}

impl HeaderError {
    /// The reason as a static string, for `Copy` error types that carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderError::TooShort => "shorter than the fixed header",
            HeaderError::Version => "version is not 2",
            HeaderError::CsrcOverrun => "CSRC list runs past the packet",
            HeaderError::ExtensionOverrun => "header extension runs past the packet",
        }
    }
}

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// The fields of an RTP header that SRTP needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp, in the payload's clock rate.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Length of the header: fixed part, CSRC list and extension. The payload starts here.
    pub len: usize,
}

impl RtpHeader {
    /// Reads the header at the start of `packet`, checking that its CSRC list and extension
    /// fit inside `packet`.
    pub fn parse(packet: &[u8]) -> Result<RtpHeader, HeaderError> {
        if packet.len() < FIXED_HEADER_LEN {
            return Err(HeaderError::TooShort);
        }
        if packet[0] >> 6 != 2 {
            return Err(HeaderError::Version);
        }
        let csrc_count = usize::from(packet[0] & 0x0f);
        let mut len = FIXED_HEADER_LEN + 4 * csrc_count;
        if len > packet.len() {
            return Err(HeaderError::CsrcOverrun);
        }
        if packet[0] & 0x10 != 0 {
            if len + 4 > packet.len() {
                return Err(HeaderError::ExtensionOverrun);
            }
            let words = usize::from(u16::from_be_bytes([packet[len + 2], packet[len + 3]]));
            len += 4 + 4 * words;
            if len > packet.len() {
                return Err(HeaderError::ExtensionOverrun);
            }
        }
        Ok(RtpHeader {
            payload_type: packet[1] & 0x7f,
            marker: packet[1] & 0x80 != 0,
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            seq: u16::from_be_bytes([packet[2], packet[3]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            len,
        })
    }
}

/// Writes a fixed 12-byte RTP header (version 2, no padding, extension or CSRC) at the start of
/// `buf`, which must hold at least [`FIXED_HEADER_LEN`] bytes.
pub fn write_header(buf: &mut [u8], payload_type: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_csrc_and_extension_headers() {
        let mut p = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0xaa,
        ];
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!((h.seq, h.ssrc, h.len), (0x1234, 0xdeadbeef, 12));
        assert_eq!((h.payload_type, h.marker, h.timestamp), (0, false, 1));
        let mut w = [0u8; 12];
        write_header(&mut w, 0x60 | 0x80, true, 0x1234, 1, 0xdeadbeef);
        let h = RtpHeader::parse(&w).unwrap();
        assert_eq!(
            (h.payload_type, h.marker, h.seq, h.timestamp),
            (0x60, true, 0x1234, 1)
        );
        p[0] = 0x81; // one CSRC, missing
        assert_eq!(RtpHeader::parse(&p), Err(HeaderError::CsrcOverrun));
        p.extend_from_slice(&[0, 0, 0]);
        assert_eq!(RtpHeader::parse(&p).unwrap().len, 16);
        p[0] = 0x91; // and an extension header of 1 word
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3]);
        assert_eq!(RtpHeader::parse(&p), Err(HeaderError::ExtensionOverrun));
        p.push(4);
        assert_eq!(RtpHeader::parse(&p).unwrap().len, 24);
        p[0] = 0x40;
        assert_eq!(RtpHeader::parse(&p), Err(HeaderError::Version));
        assert_eq!(RtpHeader::parse(&p[..5]), Err(HeaderError::TooShort));
    }
}
