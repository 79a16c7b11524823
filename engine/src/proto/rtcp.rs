//! RTCP (RFC 3550 6.4): the header the SRTP layer reads, and sender/receiver reports with a
//! CNAME, built into caller buffers and parsed for round-trip time.

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

/// Packet type of a sender report.
pub const PT_SR: u8 = 0xc8;
/// Packet type of a receiver report.
pub const PT_RR: u8 = 0xc9;
/// Packet type of source description items.
pub const PT_SDES: u8 = 0xca;
/// Packet type of BYE.
pub const PT_BYE: u8 = 0xcb;

/// Whether a datagram that passed the RFC 7983 RTP/RTCP test is RTCP rather than RTP, by the
/// RFC 5761 4 rule: the second byte (marker and payload type) is in 192..=223.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

/// Whether a datagram is a whole plain RTCP compound: every packet version 2 with an RTCP
/// type, and their length fields add up to the datagram exactly. An SRTCP packet never does:
/// its SRTCP index and authentication tag follow the compound (RFC 3711 3.4), and with
/// encryption the length fields after the first are ciphertext. A peer that sends RTCP in the
/// clear on an SRTP session (baresip 1.0 sends its RTCP BYE so at hangup) is told apart from
/// one with the wrong keys by this, after authentication failed.
pub fn is_plain_compound(packet: &[u8]) -> bool {
    let mut off = 0;
    while off + HEADER_LEN <= packet.len() {
        let (b0, pt) = (packet[off], packet[off + 1]);
        if b0 >> 6 != 2 || !(192..=223).contains(&pt) {
            return false;
        }
        let words = u16::from_be_bytes([packet[off + 2], packet[off + 3]]);
        off += (usize::from(words) + 1) * 4;
    }
    off == packet.len() && !packet.is_empty()
}

/// The sender information of a sender report (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point.
    pub ntp: u64,
    /// RTP timestamp of the same instant.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// One reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost, 8-bit fixed point.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_max: u32,
    /// Interarrival jitter.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from the source.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What a compound RTCP packet told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcpSummary {
    /// Sender SSRC of the first packet.
    pub sender_ssrc: u32,
    /// The sender info, if the packet holds an SR.
    pub sender_info: Option<SenderInfo>,
    /// The first report block about `our_ssrc`, if any.
    pub report: Option<ReportBlock>,
    /// Whether a BYE was present.
    pub bye: bool,
}

/// Writes a compound RTCP packet: an SR (with `sender`) or an RR (without), with at most one
/// report block, then an SDES chunk with the CNAME (RFC 3550 6.1 requires one in every compound
/// packet). Returns the length, or `None` when `buf` is too small or the CNAME is longer than 255
/// bytes.
pub fn write_report(
    buf: &mut [u8],
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &[u8],
) -> Option<usize> {
    let rc = u8::from(block.is_some());
    let first_len = 8 + if sender.is_some() { 20 } else { 0 } + 24 * usize::from(rc);
    // SDES: header 4, SSRC 4, item 2 + cname, end 1, padded to 4.
    let sdes_len = (8 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let total = first_len + sdes_len;
    if cname.len() > 255 || buf.len() < total {
        return None;
    }
    let out = &mut buf[..total];
    out[0] = 0x80 | rc;
    out[1] = if sender.is_some() { PT_SR } else { PT_RR };
    out[2..4].copy_from_slice(&((first_len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let mut at = 8;
    if let Some(si) = sender {
        out[at..at + 8].copy_from_slice(&si.ntp.to_be_bytes());
        out[at + 8..at + 12].copy_from_slice(&si.rtp_ts.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&si.packets.to_be_bytes());
        out[at + 16..at + 20].copy_from_slice(&si.octets.to_be_bytes());
        at += 20;
    }
    if let Some(b) = block {
        out[at..at + 4].copy_from_slice(&b.ssrc.to_be_bytes());
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        out[at + 4..at + 8]
            .copy_from_slice(&(u32::from(b.fraction_lost) << 24 | lost).to_be_bytes());
        out[at + 8..at + 12].copy_from_slice(&b.extended_max.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&b.jitter.to_be_bytes());
        out[at + 16..at + 20].copy_from_slice(&b.lsr.to_be_bytes());
        out[at + 20..at + 24].copy_from_slice(&b.dlsr.to_be_bytes());
        at += 24;
    }
    let sdes = &mut out[at..];
    sdes.fill(0);
    sdes[0] = 0x81;
    sdes[1] = PT_SDES;
    sdes[2..4].copy_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
    sdes[4..8].copy_from_slice(&ssrc.to_be_bytes());
    sdes[8] = 1; // CNAME
    sdes[9] = cname.len() as u8;
    sdes[10..10 + cname.len()].copy_from_slice(cname);
    Some(total)
}

/// Walks a compound RTCP packet (already unprotected), collecting the sender info and the report
/// block about `our_ssrc`. Every length is checked against the packet.
pub fn parse_compound(packet: &[u8], our_ssrc: Option<u32>) -> Result<RtcpSummary, HeaderError> {
    let mut summary = RtcpSummary {
        sender_ssrc: sender_ssrc(packet)?,
        ..RtcpSummary::default()
    };
    let mut rest = packet;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(HeaderError::TooShort);
        }
        if rest[0] >> 6 != 2 {
            return Err(HeaderError::Version);
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(HeaderError::TooShort);
        }
        let pkt = &rest[..len];
        let count = usize::from(pkt[0] & 0x1f);
        match pkt[1] {
            PT_SR | PT_RR => {
                let mut at = 8;
                if pkt[1] == PT_SR {
                    if pkt.len() < 28 {
                        return Err(HeaderError::TooShort);
                    }
                    let be32 =
                        |i: usize| u32::from_be_bytes([pkt[i], pkt[i + 1], pkt[i + 2], pkt[i + 3]]);
                    summary.sender_info = Some(SenderInfo {
                        ntp: u64::from(be32(8)) << 32 | u64::from(be32(12)),
                        rtp_ts: be32(16),
                        packets: be32(20),
                        octets: be32(24),
                    });
                    at = 28;
                }
                if at + 24 * count > pkt.len() {
                    return Err(HeaderError::TooShort);
                }
                for b in pkt[at..at + 24 * count].chunks_exact(24) {
                    let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                    let ssrc = be32(0);
                    if summary.report.is_none() && our_ssrc.is_none_or(|s| s == ssrc) {
                        let lost24 = be32(4) & 0x00ff_ffff;
                        summary.report = Some(ReportBlock {
                            ssrc,
                            fraction_lost: b[4],
                            cumulative_lost: ((lost24 << 8) as i32) >> 8,
                            extended_max: be32(8),
                            jitter: be32(12),
                            lsr: be32(16),
                            dlsr: be32(20),
                        });
                    }
                }
            }
            PT_BYE => summary.bye = true,
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(summary)
}

/// Round-trip time from a report block (RFC 3550 6.4.1): `A - LSR - DLSR`, where `arrival_ntp`
/// is the middle 32 bits of our NTP clock when the report arrived. `None` when the block carries
/// no LSR or the result is negative (clock trouble at the peer).
pub fn round_trip(block: &ReportBlock, arrival_ntp_mid: u32) -> Option<std::time::Duration> {
    if block.lsr == 0 {
        return None;
    }
    let rtt = arrival_ntp_mid
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    if rtt > 0x8000_0000 {
        return None;
    }
    Some(std::time::Duration::from_nanos(
        u64::from(rtt) * 1_000_000_000 / 65_536,
    ))
}

/// The middle 32 bits of a 32.32 NTP timestamp, as LSR carries it.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::is_plain_compound;

    /// baresip 1.0's RTCP BYE at hangup, as captured: BYE ("Adjo") and SDES, in the clear.
    const PLAIN_BYE: &str = concat!(
        "81cb0003c47a74e90441646a6f000000",
        "81ca0008c47a74e901187369703a616c696365403132372e302e302e313a353230300000"
    );

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_plain_compound_is_told_from_srtcp() {
        let plain = hex(PLAIN_BYE);
        assert_eq!(plain.len(), 52);
        assert!(is_plain_compound(&plain));
        // The same with an SRTCP trailer (E=0: authenticated, not encrypted): not plain.
        let mut srtcp = plain.clone();
        srtcp.extend_from_slice(&[0, 0, 0, 1]);
        srtcp.extend_from_slice(&[0xaa; 10]);
        assert!(!is_plain_compound(&srtcp));
        // Truncated, or not RTCP at all.
        assert!(!is_plain_compound(&plain[..40]));
        assert!(!is_plain_compound(&[]));
        let mut rtp = plain.clone();
        rtp[1] = 0x00;
        assert!(!is_plain_compound(&rtp));
    }

    use super::*;

    #[test]
    fn sender_report_round_trip_and_rtt() {
        let mut buf = [0u8; 256];
        let si = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_ts: 160,
            packets: 10,
            octets: 1600,
        };
        let block = ReportBlock {
            ssrc: 0xaabb_ccdd,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_max: 0x1_0005,
            jitter: 42,
            lsr: 0x0304_0506,
            dlsr: 0x0000_8000, // 0.5 s
        };
        let len = write_report(&mut buf, 0x1111_2222, Some(si), Some(block), b"host@lab").unwrap();
        assert_eq!(len % 4, 0);
        assert!(is_rtcp(&buf[..len]));
        let s = parse_compound(&buf[..len], Some(0xaabb_ccdd)).unwrap();
        assert_eq!(s.sender_ssrc, 0x1111_2222);
        assert_eq!(s.sender_info, Some(si));
        assert_eq!(s.report, Some(block));
        // Arrival 0.75 s after LSR: RTT 0.25 s.
        let rtt = round_trip(&block, 0x0304_0506 + 0xc000).unwrap();
        assert_eq!(rtt.as_millis(), 250);
        assert_eq!(round_trip(&block, 0x0304_0506), None);
        // A receiver report about someone else has no block for us.
        let len = write_report(&mut buf, 1, None, Some(block), b"x").unwrap();
        assert_eq!(parse_compound(&buf[..len], Some(5)).unwrap().report, None);
        assert!(write_report(&mut buf[..19], 1, None, None, b"x").is_none());
    }

    #[test]
    fn hostile_compound_packets_are_errors_not_panics() {
        let mut buf = [0u8; 128];
        let len = write_report(&mut buf, 9, None, None, b"c").unwrap();
        for cut in 0..len {
            let _ = parse_compound(&buf[..cut], None);
        }
        buf[2] = 0xff; // length past the end
        assert_eq!(
            parse_compound(&buf[..len], None),
            Err(HeaderError::TooShort)
        );
        assert!(!is_rtcp(&[0x80, 0x00]));
    }

    #[test]
    fn reads_sender_ssrc() {
        let p = [0x81, 0xc8, 0x00, 0x0d, 0x4d, 0x61, 0x72, 0x73];
        assert_eq!(sender_ssrc(&p), Ok(0x4d61_7273));
        assert_eq!(sender_ssrc(&p[..7]), Err(HeaderError::TooShort));
        assert_eq!(sender_ssrc(&[0u8; 8]), Err(HeaderError::Version));
    }
}
