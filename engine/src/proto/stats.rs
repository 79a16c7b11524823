//! Receive-side quality statistics: RFC 3550 Appendix A.1 (sequence tracking), A.3 (loss),
//! A.8 (interarrival jitter), and an ITU-T G.107 E-model estimate of R and MOS.
//!
//! Sans-IO: arrival times are arguments (nanoseconds on any monotonic clock), never read here.

/// RFC 3550 A.1: packets in sequence before a source is valid.
const MIN_SEQUENTIAL: u32 = 2;
/// RFC 3550 A.1: a jump larger than this restarts the sequence after two in a row.
const MAX_DROPOUT: u32 = 3000;
/// RFC 3550 A.1: how far back a packet may be and still count as reordered, not a restart.
const MAX_MISORDER: u32 = 100;
/// RFC 3550 A.1: `RTP_SEQ_MOD`.
const SEQ_MOD: u32 = 1 << 16;
/// How many recent sequence numbers are remembered to tell duplicates from reordered packets.
const HISTORY: u64 = 128;

/// Per-source receive statistics, updated with every packet that authenticated.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    started: bool,
    /// Packets counted by A.1 (excludes probation packets, duplicates and restarts).
    received: u64,
    /// Bitmap of the last [`HISTORY`] extended sequence numbers; bit 0 is the highest seen.
    history: u128,
    /// Jitter in RTP timestamp units, scaled by 16 as in RFC 3550 A.8.
    jitter_q4: u64,
    last_transit: Option<i64>,
    expected_prior: u64,
    received_prior: u64,
    /// Packets that arrived with a lower sequence number than one already seen.
    pub reordered: u64,
    /// Packets whose sequence number was already received.
    pub duplicated: u64,
    /// Packets too far behind the highest to place (A.1's `MAX_MISORDER`, 100 packets).
    pub late: u64,
    /// Sequence restarts (a large jump confirmed by the next packet).
    pub restarts: u64,
}

/// A snapshot of the RFC 3550 figures for a report block or a statistics reply.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossReport {
    /// Packets expected: extended highest sequence number minus the base, plus one.
    pub expected: u64,
    /// Packets received (A.1's count).
    pub received: u64,
    /// Cumulative number of packets lost (A.3; negative when duplicates outnumber losses).
    pub lost: i64,
    /// Extended highest sequence number received.
    pub extended_max: u32,
    /// Fraction lost since the previous report, 8-bit fixed point (A.3).
    pub fraction_lost: u8,
    /// Interarrival jitter in RTP timestamp units (A.8).
    pub jitter: u32,
}

/// What [`ReceiveStats::on_packet`] made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In order (or the first packets of the source).
    InOrder,
    /// Older than the highest so far but new.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too far behind to place.
    Late,
    /// A jump the source has not confirmed yet (A.1 `bad_seq`); not counted.
    Jump,
}

impl ReceiveStats {
    /// Statistics for a new source.
    pub fn new() -> ReceiveStats {
        ReceiveStats::default()
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.history = 1;
    }

    fn extended(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Accounts one packet: RFC 3550 A.1 `update_seq`, then A.8 jitter for packets in
    /// sequence. `arrival_rtp` is the arrival time converted to the stream's RTP clock.
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival_rtp: u32) -> SeqVerdict {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let verdict = self.update_seq(seq);
        if matches!(verdict, SeqVerdict::InOrder | SeqVerdict::Reordered) {
            // A.8: transit time difference, in timestamp units, on a wrapping 32-bit clock.
            let transit = i64::from(arrival_rtp.wrapping_sub(rtp_ts) as i32);
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs();
                // J += (|D| - J) / 16, kept scaled by 16: Jq4 += |D| - Jq4 / 16 (rounded).
                self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
            }
            self.last_transit = Some(transit);
        }
        verdict
    }

    fn update_seq(&mut self, seq: u16) -> SeqVerdict {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            // A.1: the source is valid once MIN_SEQUENTIAL packets arrive in sequence.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                }
                return SeqVerdict::InOrder;
            }
            self.probation = MIN_SEQUENTIAL - 1;
            self.max_seq = seq;
            return SeqVerdict::InOrder;
        }
        if udelta == 0 {
            self.duplicated += 1;
            return SeqVerdict::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.history = if u64::from(udelta) >= HISTORY {
                0
            } else {
                self.history << udelta
            };
            self.history |= 1;
            self.max_seq = seq;
            self.received += 1;
            return SeqVerdict::InOrder;
        }
        if udelta <= SEQ_MOD - MAX_MISORDER {
            // A very large jump: restart only if the next packet confirms it.
            if u32::from(seq) == self.bad_seq {
                self.restarts += 1;
                self.init_seq(seq);
                self.received += 1;
                self.last_transit = None;
                return SeqVerdict::InOrder;
            }
            self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
            if udelta > SEQ_MOD / 2 {
                // Far behind the highest: a straggler, unless the source restarts (above).
                self.late += 1;
                return SeqVerdict::Late;
            }
            return SeqVerdict::Jump;
        }
        // Behind the highest: duplicate, reordered, or too late to place.
        let behind = u64::from(SEQ_MOD - udelta);
        if behind >= HISTORY {
            self.late += 1;
            return SeqVerdict::Late;
        }
        let bit = 1u128 << behind;
        if self.history & bit != 0 {
            self.duplicated += 1;
            return SeqVerdict::Duplicate;
        }
        self.history |= bit;
        self.reordered += 1;
        self.received += 1;
        SeqVerdict::Reordered
    }

    /// Interarrival jitter in RTP timestamp units (A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// The highest sequence number seen (RFC 3550 A.1 `max_seq`), once a packet has come.
    pub fn highest_seq(&self) -> Option<u16> {
        self.started.then_some(self.max_seq)
    }

    /// Whether the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// The A.3 figures. `interval` advances the "prior" counters used for the fraction lost,
    /// as a report block does; a statistics query passes `false`.
    pub fn report(&mut self, interval: bool) -> LossReport {
        if !self.is_valid() {
            return LossReport {
                jitter: self.jitter(),
                ..LossReport::default()
            };
        }
        let extended_max = self.extended();
        let expected = u64::from(extended_max.wrapping_sub(self.base_seq)) + 1;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.received - self.received_prior.min(self.received);
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        if interval {
            self.expected_prior = expected;
            self.received_prior = self.received;
        }
        LossReport {
            expected,
            received: self.received,
            lost,
            extended_max,
            fraction_lost,
            jitter: self.jitter(),
        }
    }
}

/// The E-model codec figures (ITU-T G.113 Appendix I): equipment impairment `Ie` and packet-loss
/// robustness `Bpl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet loss concealment (G.113 Table I.3: Ie 0, Bpl 25.1).
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.722 at 64 kbit/s, scored on the narrowband scale as G.711 with PLC (the E-model of
    /// G.107 is narrowband; G.107.1's wideband scale is not used here).
    pub const G722: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// An Opus-like variable-rate codec: no published G.113 figures; Ie 0 and a Bpl of 20 are an
    /// estimate, stated as such in reports.
    pub const OPUS_ESTIMATE: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 20.0 };
}

/// E-model result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityEstimate {
    /// Transmission rating factor R (0-100).
    pub r_factor: f64,
    /// Estimated mean opinion score (1.0-4.5), from R by G.107 Annex B.
    pub mos: f64,
}

/// G.107 E-model with the default values for everything but delay, loss and codec:
/// `R = Ro - Is - Id - Ie,eff + A` with `Ro - Is = 93.2` and `A = 0`.
///
/// - `one_way_delay_ms`: mouth-to-ear delay (network one way, jitter buffer, packetization).
///   `Id` uses the common simplification of G.107's delay terms for an echo-free path:
///   `Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`.
/// - `loss_percent`: packet loss probability Ppl in percent; `burst_ratio` BurstR (1 for random
///   loss).
pub fn e_model(
    codec: CodecImpairment,
    one_way_delay_ms: f64,
    loss_percent: f64,
    burst_ratio: f64,
) -> QualityEstimate {
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = loss_percent.clamp(0.0, 100.0);
    let burst = burst_ratio.max(1.0);
    let ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    QualityEstimate {
        r_factor: r,
        mos: mos_from_r(r),
    }
}

/// G.107 Annex B: MOS from R.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stats: &mut ReceiveStats, seqs: impl IntoIterator<Item = u16>) -> Vec<SeqVerdict> {
        seqs.into_iter()
            .map(|s| stats.on_packet(s, u32::from(s) * 160, u32::from(s) * 160))
            .collect()
    }

    #[test]
    fn in_order_stream_has_no_loss_across_the_wrap() {
        let mut s = ReceiveStats::new();
        let seqs: Vec<u16> = (0..1000u32).map(|i| (65000 + i) as u16).collect();
        feed(&mut s, seqs);
        let r = s.report(false);
        // The first packet is probation (A.1 counts from the packet that ends it).
        assert_eq!(r.lost, 0);
        assert_eq!(r.received, 999);
        assert_eq!(r.expected, 999);
        assert_eq!(r.extended_max, (1 << 16) + ((65000u32 + 999) & 0xffff));
        assert_eq!(r.jitter, 0);
    }

    #[test]
    fn loss_reordering_duplicates_and_late_packets() {
        let mut s = ReceiveStats::new();
        feed(&mut s, 0..10);
        // 10, 11 lost; 13 before 12; 12 twice; 14 ok.
        let v = feed(&mut s, [13, 12, 12, 14]);
        assert_eq!(
            v,
            [
                SeqVerdict::InOrder,
                SeqVerdict::Reordered,
                SeqVerdict::Duplicate,
                SeqVerdict::InOrder
            ]
        );
        feed(&mut s, 15..300);
        assert_eq!(feed(&mut s, [11]), [SeqVerdict::Late]);
        let r = s.report(true);
        assert_eq!(r.lost, 2); // 10 and 11 (11 arrived too late to count)
        assert_eq!((s.reordered, s.duplicated, s.late), (1, 1, 1));
        assert!(r.fraction_lost > 0);
        // A second report with nothing new reports no fraction lost.
        assert_eq!(s.report(true).fraction_lost, 0);
    }

    #[test]
    fn fraction_lost_is_eight_bit_fixed_point() {
        let mut s = ReceiveStats::new();
        feed(&mut s, 0..2);
        s.report(true);
        // Every other packet of 2..=100 received: 99 expected in the interval, 50 received.
        feed(&mut s, (2..102).step_by(2));
        let r = s.report(true);
        assert_eq!(r.fraction_lost, 126); // 49 of 99 lost: 49 * 256 / 99
        assert_eq!(r.lost, 49);
    }

    #[test]
    fn restart_after_a_confirmed_jump() {
        let mut s = ReceiveStats::new();
        feed(&mut s, 0..50);
        assert_eq!(feed(&mut s, [20000]), [SeqVerdict::Jump]);
        assert_eq!(feed(&mut s, [20001]), [SeqVerdict::InOrder]);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.report(false).lost, 0);
    }

    #[test]
    fn jitter_follows_a_constant_transit_swing() {
        // RFC 3550 A.8: alternating transit difference of 80 units converges to J = 80.
        let mut s = ReceiveStats::new();
        for i in 0..2000u32 {
            let ts = i * 160;
            let arrival = ts + if i % 2 == 0 { 0 } else { 80 };
            s.on_packet(i as u16, ts, arrival);
        }
        let j = s.jitter();
        assert!((78..=80).contains(&j), "jitter {j}");
    }

    #[test]
    fn e_model_reference_points() {
        // No loss, low delay: R = 93.2 - 0.024 * 20, MOS about 4.4.
        let q = e_model(CodecImpairment::G711_PLC, 20.0, 0.0, 1.0);
        assert!((q.r_factor - 92.72).abs() < 1e-9);
        assert!((q.mos - 4.40).abs() < 0.01, "{}", q.mos);
        // 5% random loss on G.711 with PLC: Ie,eff = 95 * 5 / 30.1 = 15.78.
        let q = e_model(CodecImpairment::G711_PLC, 0.0, 5.0, 1.0);
        assert!((q.r_factor - (93.2 - 95.0 * 5.0 / 30.1)).abs() < 1e-9);
        // Long delay costs more past 177.3 ms.
        let a = e_model(CodecImpairment::G711_PLC, 150.0, 0.0, 1.0).r_factor;
        let b = e_model(CodecImpairment::G711_PLC, 300.0, 0.0, 1.0).r_factor;
        assert!(a - b > 0.024 * 150.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
    }
}
