//! RTP generation at codec pace: codec profiles and a sans-IO packet source.
//!
//! The source never reads the clock: the worker asks [`RtpSource::next_due`] when to come back
//! and calls [`RtpSource::poll_packet`] with the current time, writing each packet into the
//! caller's buffer.

use super::rtp::{FIXED_HEADER_LEN, write_header};

/// Largest RTP payload the generator puts in one packet (video frames are split to fit).
pub const MAX_PAYLOAD: usize = 1200;

/// The media a profile imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 mu-law: 8 kHz, one byte per sample (160 B per 20 ms).
    Pcmu,
    /// G.711 A-law: as PCMU.
    Pcma,
    /// G.722 at 64 kbit/s: 8 bytes per ms; RTP clock 8000 Hz (RFC 3551 4.5.2).
    G722,
    /// Opus-like variable size around a target bit rate; RTP clock 48 kHz.
    Opus,
    /// Video: frames at a frame rate and bit rate, each split into packets of up to
    /// [`MAX_PAYLOAD`] bytes with the same timestamp, marker on the last; RTP clock 90 kHz.
    Video,
}

impl Codec {
    /// Parses the names used in configs and on the control socket.
    pub fn from_name(name: &str) -> Option<Codec> {
        Some(match name.to_ascii_lowercase().as_str() {
            "pcmu" => Codec::Pcmu,
            "pcma" => Codec::Pcma,
            "g722" => Codec::G722,
            "opus" => Codec::Opus,
            "video" => Codec::Video,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::G722 => "g722",
            Codec::Opus => "opus",
            Codec::Video => "video",
        }
    }
}

/// What and how fast a stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecProfile {
    /// The imitated codec.
    pub codec: Codec,
    /// RTP payload type (0-127).
    pub payload_type: u8,
    /// Packet time in ms (10-60) for audio; ignored for video.
    pub ptime_ms: u32,
    /// Bit rate of the payload for Opus and video, bits per second.
    pub bitrate: u32,
    /// Frames per second for video.
    pub fps: u32,
}

/// Why a profile is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// ptime outside 10-60 ms.
    #[error("ptime {0} ms is outside 10-60 ms")]
    Ptime(u32),
    /// Payload type above 127, or in the RTCP-conflicting range 72-76 (RFC 5761 4).
    #[error("payload type {0} is not usable (0-127, not 72-76)")]
    PayloadType(u8),
    /// Frame rate outside 1-120, or a bit rate that is zero or above 100 Mbit/s.
    #[error("video needs fps 1-120 and a bit rate of 1 bit/s to 100 Mbit/s")]
    Video,
}

impl CodecProfile {
    /// The usual profile of a codec: static payload types for G.711/G.722, 20 ms, Opus at
    /// 32 kbit/s on PT 111, video at 1 Mbit/s and 30 fps on PT 96.
    pub fn default_for(codec: Codec) -> CodecProfile {
        let (payload_type, bitrate) = match codec {
            Codec::Pcmu => (0, 64_000),
            Codec::Pcma => (8, 64_000),
            Codec::G722 => (9, 64_000),
            Codec::Opus => (111, 32_000),
            Codec::Video => (96, 1_000_000),
        };
        CodecProfile {
            codec,
            payload_type,
            ptime_ms: 20,
            bitrate,
            fps: 30,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.payload_type > 127 || (72..=76).contains(&self.payload_type) {
            return Err(ProfileError::PayloadType(self.payload_type));
        }
        if self.codec == Codec::Video {
            if !(1..=120).contains(&self.fps) || !(1..=100_000_000).contains(&self.bitrate) {
                return Err(ProfileError::Video);
            }
        } else if !(10..=60).contains(&self.ptime_ms) {
            return Err(ProfileError::Ptime(self.ptime_ms));
        }
        Ok(())
    }

    /// RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        match self.codec {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => 48_000,
            Codec::Video => 90_000,
        }
    }

    /// Time between packets (audio) or frames (video), in ns.
    pub fn period_ns(&self) -> u64 {
        match self.codec {
            Codec::Video => 1_000_000_000 / u64::from(self.fps.max(1)),
            _ => u64::from(self.ptime_ms) * 1_000_000,
        }
    }

    /// Timestamp increment per packet (audio) or frame (video).
    pub fn ts_step(&self) -> u32 {
        match self.codec {
            Codec::Video => 90_000 / self.fps.max(1),
            _ => self.clock_rate() / 1000 * self.ptime_ms,
        }
    }

    /// Mean payload bytes per period.
    pub fn mean_payload(&self) -> usize {
        match self.codec {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8 * self.ptime_ms as usize,
            Codec::Opus => (self.bitrate as usize / 8) * self.ptime_ms as usize / 1000,
            Codec::Video => self.bitrate as usize / 8 / self.fps.max(1) as usize,
        }
    }
}

/// Filler payload: a fixed pattern (receivers do not decode it).
static PATTERN: [u8; MAX_PAYLOAD] = {
    let mut p = [0u8; MAX_PAYLOAD];
    let mut i = 0;
    while i < MAX_PAYLOAD {
        p[i] = (i as u8).wrapping_mul(31).wrapping_add(7);
        i += 1;
    }
    p
};

/// A small deterministic generator (SplitMix64) for payload sizes and start values. Seeded by
/// the caller (the worker seeds it from the system RNG).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with this seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A paced RTP packet source for one SSRC.
#[derive(Debug, Clone)]
pub struct RtpSource {
    profile: CodecProfile,
    ssrc: u32,
    seq: u16,
    ts: u32,
    next_due_ns: u64,
    period_ns: u64,
    rng: SplitMix64,
    /// Bytes of the current video frame still to send.
    frame_left: usize,
    /// Packets sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub payload_bytes: u64,
    /// Periods skipped because the caller came back more than 50 periods late.
    pub skipped_periods: u64,
    /// Packets due while the caller could not send them (see [`RtpSource::skip_due`]).
    pub unsent: u64,
}

/// The highest random initial sequence number: 15 bits leave 32,768 packets (11 minutes at
/// 50 packets/s) before the first rollover.
pub const MAX_INITIAL_SEQ: u16 = 0x7fff;

impl RtpSource {
    /// A source that sends its first packet at `start_ns`, with random initial SSRC, sequence
    /// number and timestamp drawn from `rng` (RFC 3550 5.1 asks for random starting values).
    ///
    /// The sequence number starts below 32768, as libwebrtc's do: an SRTP receiver assumes
    /// ROC 0 for the first packet it sees (RFC 3711 3.3.1), and with SDES the offerer's
    /// receive key arrives with the SIP answer, after the answerer's first packets. A start
    /// near 65535 would wrap before a slow answer and leave that receiver failing
    /// authentication for the whole call (seen under load: one call in a thousand).
    pub fn new(profile: CodecProfile, start_ns: u64, rng: &mut SplitMix64) -> RtpSource {
        let r = rng.next_u64();
        RtpSource::with_start(
            profile,
            r as u32,
            ((r >> 32) as u16) & MAX_INITIAL_SEQ,
            rng.next_u64() as u32,
            start_ns,
            rng.next_u64(),
        )
    }

    /// A source with explicit starting values.
    pub fn with_start(
        profile: CodecProfile,
        ssrc: u32,
        seq: u16,
        ts: u32,
        start_ns: u64,
        seed: u64,
    ) -> RtpSource {
        RtpSource {
            profile,
            ssrc,
            seq,
            ts,
            next_due_ns: start_ns,
            period_ns: profile.period_ns(),
            rng: SplitMix64::new(seed),
            frame_left: 0,
            packets: 0,
            payload_bytes: 0,
            skipped_periods: 0,
            unsent: 0,
        }
    }

    /// The SSRC this source sends.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Switches to another codec profile mid-stream (a re-offer picked another codec): the
    /// SSRC, sequence numbers and timestamps go on (RFC 3550 5.1: the payload type may change
    /// within a stream), the pace is the new codec's from the next packet on.
    pub fn set_profile(&mut self, profile: CodecProfile) {
        self.profile = profile;
        self.period_ns = profile.period_ns();
        self.frame_left = 0;
    }

    /// The codec profile.
    pub fn profile(&self) -> &CodecProfile {
        &self.profile
    }

    /// The RTP timestamp of the last packet sent (for RTCP sender reports).
    pub fn last_timestamp(&self) -> u32 {
        self.ts.wrapping_sub(self.profile.ts_step())
    }

    /// When the next packet is due (ns on the caller's clock).
    pub fn next_due(&self) -> u64 {
        self.next_due_ns
    }

    /// Writes the next packet into `buf` if one is due at `now_ns`; returns its length. Call
    /// again until it returns `None` (a video frame is a burst of packets). `buf` must hold
    /// [`FIXED_HEADER_LEN`] + [`MAX_PAYLOAD`] bytes.
    pub fn poll_packet(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<usize> {
        if self.frame_left == 0 {
            if now_ns < self.next_due_ns {
                return None;
            }
            // Came back very late (a stalled worker): keep the clock, drop the backlog.
            let behind = (now_ns - self.next_due_ns) / self.period_ns;
            if behind > 50 {
                self.skipped_periods += behind;
                self.next_due_ns += behind * self.period_ns;
                self.ts = self
                    .ts
                    .wrapping_add(self.profile.ts_step().wrapping_mul(behind as u32));
            }
            self.frame_left = self.frame_size();
            self.next_due_ns += self.period_ns;
        }
        let payload = self.frame_left.min(MAX_PAYLOAD);
        self.frame_left -= payload;
        let last_of_frame = self.frame_left == 0;
        let marker = self.profile.codec == Codec::Video && last_of_frame;
        let len = FIXED_HEADER_LEN + payload;
        let out = buf.get_mut(..len)?;
        write_header(
            out,
            self.profile.payload_type,
            marker,
            self.seq,
            self.ts,
            self.ssrc,
        );
        out[FIXED_HEADER_LEN..].copy_from_slice(&PATTERN[..payload]);
        self.seq = self.seq.wrapping_add(1);
        if last_of_frame {
            self.ts = self.ts.wrapping_add(self.profile.ts_step());
        }
        self.packets += 1;
        self.payload_bytes += payload as u64;
        Some(len)
    }

    /// Lets the packet due at `now_ns` go unsent (the stream has no keys yet, no peer, or no
    /// send buffer): the clock and the timestamp move on, the sequence number does not, so a
    /// receiver sees no gap for a packet that never left. A video frame in progress is cut
    /// short. Returns false when nothing is due; counted in [`RtpSource::unsent`].
    pub fn skip_due(&mut self, now_ns: u64) -> bool {
        if self.frame_left == 0 {
            if now_ns < self.next_due_ns {
                return false;
            }
            self.next_due_ns += self.period_ns;
        }
        self.frame_left = 0;
        self.ts = self.ts.wrapping_add(self.profile.ts_step());
        self.unsent += 1;
        true
    }

    fn frame_size(&mut self) -> usize {
        let mean = self.profile.mean_payload().max(1);
        match self.profile.codec {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => mean.min(MAX_PAYLOAD),
            // Opus-like: 50% to 150% of the mean, capped at one packet.
            Codec::Opus => {
                (mean / 2 + (self.rng.next_u64() % mean as u64) as usize).clamp(1, MAX_PAYLOAD)
            }
            // Video: every 30th frame a key frame of 5x the mean, others 50%-110%.
            Codec::Video => {
                if self.packets == 0 || self.rng.next_u64().is_multiple_of(30) {
                    mean * 5
                } else {
                    mean / 2 + (self.rng.next_u64() % (mean as u64 * 6 / 10 + 1)) as usize
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtp::RtpHeader;

    fn run(profile: CodecProfile, ms: u64) -> (Vec<Vec<u8>>, RtpSource) {
        let mut rng = SplitMix64::new(42);
        let mut src = RtpSource::new(profile, 0, &mut rng);
        let mut out = Vec::new();
        let mut buf = [0u8; FIXED_HEADER_LEN + MAX_PAYLOAD];
        for now in (0..ms * 1_000_000).step_by(1_000_000) {
            while let Some(len) = src.poll_packet(now, &mut buf) {
                out.push(buf[..len].to_vec());
            }
        }
        (out, src)
    }

    #[test]
    fn pcmu_sends_160_bytes_every_20_ms() {
        let (pkts, src) = run(CodecProfile::default_for(Codec::Pcmu), 1000);
        assert_eq!(pkts.len(), 50);
        let first = RtpHeader::parse(&pkts[0]).unwrap();
        for (i, p) in pkts.iter().enumerate() {
            let h = RtpHeader::parse(p).unwrap();
            assert_eq!(p.len(), 12 + 160);
            assert_eq!(h.payload_type, 0);
            assert_eq!(h.seq, first.seq.wrapping_add(i as u16));
            assert_eq!(h.timestamp, first.timestamp.wrapping_add(160 * i as u32));
            assert_eq!(h.ssrc, src.ssrc());
        }
    }

    #[test]
    fn initial_sequence_numbers_are_random_below_32768() {
        let mut rng = SplitMix64::new(7);
        let mut buf = [0u8; FIXED_HEADER_LEN + MAX_PAYLOAD];
        let seqs: Vec<u16> = (0..2000)
            .map(|_| {
                let mut src = RtpSource::new(CodecProfile::default_for(Codec::Pcmu), 0, &mut rng);
                let len = src.poll_packet(0, &mut buf).expect("first packet is due");
                RtpHeader::parse(&buf[..len]).unwrap().seq
            })
            .collect();
        assert!(seqs.iter().all(|&s| s <= MAX_INITIAL_SEQ));
        // Spread over the whole 15-bit range, not stuck low.
        assert!(seqs.iter().any(|&s| s < 4096) && seqs.iter().any(|&s| s > 28672));
        let distinct: std::collections::BTreeSet<u16> = seqs.iter().copied().collect();
        assert!(distinct.len() > 1900, "{}", distinct.len());
    }

    #[test]
    fn ptime_and_clock_per_codec() {
        let mut p = CodecProfile::default_for(Codec::G722);
        p.ptime_ms = 30;
        let (pkts, _) = run(p, 300);
        assert_eq!(pkts.len(), 10);
        assert!(pkts.iter().all(|p| p.len() == 12 + 240));
        let (pkts, _) = run(CodecProfile::default_for(Codec::Opus), 1000);
        assert_eq!(pkts.len(), 50);
        let sizes: Vec<usize> = pkts.iter().map(|p| p.len() - 12).collect();
        assert!(sizes.iter().all(|&s| (40..=120).contains(&s)), "{sizes:?}");
        assert!(sizes.iter().any(|&s| s != sizes[0]), "Opus sizes vary");
        let h0 = RtpHeader::parse(&pkts[0]).unwrap();
        let h1 = RtpHeader::parse(&pkts[1]).unwrap();
        assert_eq!(h1.timestamp.wrapping_sub(h0.timestamp), 960);
    }

    #[test]
    fn video_frames_are_bursts_with_a_marker_on_the_last_packet() {
        let (pkts, src) = run(CodecProfile::default_for(Codec::Video), 1000);
        let hs: Vec<RtpHeader> = pkts.iter().map(|p| RtpHeader::parse(p).unwrap()).collect();
        let frames = hs.iter().filter(|h| h.marker).count();
        assert_eq!(frames, 30);
        assert!(pkts.iter().all(|p| p.len() <= 12 + MAX_PAYLOAD));
        // All packets of a frame share the timestamp; frames step by 3000.
        for w in hs.windows(2) {
            let step = w[1].timestamp.wrapping_sub(w[0].timestamp);
            assert_eq!(step, if w[0].marker { 3000 } else { 0 });
        }
        // About 1 Mbit/s (key frames make it vary).
        let bits = src.payload_bytes * 8;
        assert!((500_000..3_000_000).contains(&bits), "{bits}");
    }

    #[test]
    fn a_late_caller_catches_up_or_skips() {
        let mut rng = SplitMix64::new(1);
        let p = CodecProfile::default_for(Codec::Pcma);
        let mut src = RtpSource::new(p, 0, &mut rng);
        let mut buf = [0u8; 1300];
        // 100 ms late: five packets go out at once (the average rate holds).
        let mut n = 0;
        while src.poll_packet(100_000_000, &mut buf).is_some() {
            n += 1;
        }
        assert_eq!(n, 6);
        // 10 s late: the backlog is skipped, not sent.
        let mut n = 0;
        while src.poll_packet(10_100_000_000, &mut buf).is_some() {
            n += 1;
        }
        assert!(n <= 2, "{n}");
        assert!(src.skipped_periods > 400);
    }

    #[test]
    fn profile_validation() {
        let mut p = CodecProfile::default_for(Codec::Pcmu);
        p.ptime_ms = 5;
        assert_eq!(p.validate(), Err(ProfileError::Ptime(5)));
        p.ptime_ms = 20;
        p.payload_type = 72;
        assert_eq!(p.validate(), Err(ProfileError::PayloadType(72)));
        let mut v = CodecProfile::default_for(Codec::Video);
        v.fps = 0;
        assert_eq!(v.validate(), Err(ProfileError::Video));
        assert_eq!(Codec::from_name("PCMU"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("mp3"), None);
    }

    #[test]
    fn an_unsent_packet_keeps_the_sequence() {
        let p = CodecProfile::default_for(Codec::Pcmu);
        let mut src = RtpSource::with_start(p, 1, 100, 0, 0, 7);
        let mut buf = [0u8; FIXED_HEADER_LEN + MAX_PAYLOAD];
        assert!(src.poll_packet(0, &mut buf).is_some());
        let period = p.period_ns();
        assert!(!src.skip_due(period - 1), "nothing due yet");
        assert!(src.skip_due(period));
        assert!(!src.skip_due(period));
        let len = src.poll_packet(2 * period, &mut buf).unwrap();
        let h = crate::proto::rtp::RtpHeader::parse(&buf[..len]).unwrap();
        assert_eq!(h.seq, 101, "the skipped packet used no sequence number");
        assert_eq!(h.timestamp, 2 * p.ts_step(), "but its time went by");
        assert_eq!((src.packets, src.unsent), (2, 1));
    }
}
