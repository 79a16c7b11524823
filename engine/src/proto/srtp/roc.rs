//! Rollover counter and packet index estimation (RFC 3711 3.3.1 and Appendix A).
//!
//! An SRTP packet carries only the low 16 bits of its 48-bit index (the RTP sequence number);
//! the receiver guesses the upper 32 bits, the rollover counter (ROC), from the highest index
//! it has seen, choosing the index closest to it.

/// The index of an RTP packet: `ROC * 2^16 + SEQ` (RFC 3711 3.3.1).
pub fn packet_index(roc: u32, seq: u16) -> u64 {
    (u64::from(roc) << 16) | u64::from(seq)
}

/// The ROC part of a packet index.
pub fn roc_of(index: u64) -> u32 {
    (index >> 16) as u32
}

/// Estimates the index of a packet with sequence number `seq`, given the highest index
/// `highest` received so far (the receiver's `ROC` and `s_l`).
///
/// RFC 3711 Appendix A:
/// ```text
/// if (s_l < 32768)
///    if (SEQ - s_l > 32768) set v to (ROC-1) mod 2^32
///    else set v to ROC
/// else
///    if (s_l - 32768 > SEQ) set v to (ROC+1) mod 2^32
///    else set v to ROC
/// ```
/// Returns `None` when the guess would need a negative ROC (a packet from before the start of
/// the stream) or a ROC past 2^32 - 1 (the index space is exhausted).
pub fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = i64::from(roc_of(highest));
    let s_l = i64::from(highest as u16);
    let seq_i = i64::from(seq);
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 { roc - 1 } else { roc }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    if !(0..=i64::from(u32::MAX)).contains(&v) {
        return None;
    }
    Some(packet_index(v as u32, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrap_forward_and_back() {
        // Highest 65535 (ROC 0): seq 0 is the next packet, in ROC 1.
        assert_eq!(estimate_index(0xffff, 0), Some(0x1_0000));
        // Highest 0x1_0002 (ROC 1): a late 65534 belongs to ROC 0.
        assert_eq!(estimate_index(0x1_0002, 0xfffe), Some(0xfffe));
        // Plain in-order and reordered packets keep the ROC.
        assert_eq!(estimate_index(0x5_1234, 0x1235), Some(0x5_1235));
        assert_eq!(estimate_index(0x5_1234, 0x1200), Some(0x5_1200));
    }

    #[test]
    fn negative_roc_is_refused() {
        // ROC 0, s_l = 10: seq 40000 would be in ROC -1.
        assert_eq!(estimate_index(10, 40000), None);
        // The last ROC cannot roll over.
        assert_eq!(estimate_index(packet_index(u32::MAX, 0xffff), 0), None);
    }

    proptest! {
        /// Any index within 2^15 - 1 of the highest (either side) is recovered exactly from its
        /// 16-bit sequence number: the property reordering across a wrap relies on.
        #[test]
        fn recovers_nearby_indices(highest in 0u64..1 << 48, delta in -32767i64..=32767) {
            let index = highest as i64 + delta;
            prop_assume!((0..1 << 48).contains(&index));
            let index = index as u64;
            prop_assert_eq!(estimate_index(highest, index as u16), Some(index));
        }

        /// The estimate always carries the packet's own sequence number, and is within 2^15 of
        /// the highest index (the closest index with that sequence number).
        #[test]
        fn estimate_is_closest(highest in 0u64..1 << 48, seq: u16) {
            if let Some(est) = estimate_index(highest, seq) {
                prop_assert_eq!(est as u16, seq);
                prop_assert!((est as i64 - highest as i64).abs() <= 32768);
            }
        }
    }
}
