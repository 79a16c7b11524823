//! A leg's figures: its counters as the `stats` command shows them, with the RFC 3550 loss and
//! jitter of what it receives and the E-model score over them; and its event sweep.

use super::leg::Leg;
use crate::model::{DropReason, Event, LegStats, WatchOptions};
use crate::proto::pacer::{Codec, CodecProfile};
use crate::proto::stats::{CodecImpairment, e_model};

impl Leg {
    /// The leg's figures: its counters, the RFC 3550 loss and jitter of what it receives, and
    /// the E-model score of `codec` over them.
    pub(crate) fn stats(&mut self, codec: &CodecProfile) -> LegStats {
        let c = self.counters;
        let d = &c.drops;
        let mut s = LegStats {
            local: Some(self.local()),
            remote: self.remote(),
            rx_suite: c.rx_suite,
            tx_suite: c.tx_suite,
            packets_in: c.packets_in,
            bytes_in: c.bytes_in,
            packets_out: c.packets_out,
            bytes_out: c.bytes_out,
            rtcp_in: c.rtcp_in,
            rtcp_out: c.rtcp_out,
            auth_failures: d.get(DropReason::AuthFailed),
            replay_drops: d.get(DropReason::Replayed),
            malformed: d.get(DropReason::Malformed),
            source_mismatch: d.get(DropReason::WrongSource),
            other_drops: d.sum(&[
                DropReason::NotCarried,
                DropReason::HandshakeOver,
                DropReason::KeyLifetime,
                DropReason::SrtpOther,
            ]),
            dtls_drops: d.get(DropReason::BeforeKeys),
            early_drops: d.get(DropReason::BeforeAnswer),
            rtcp_unprotected: d.get(DropReason::RtcpUnprotected),
            drops: c.drops,
            rtp_drops: c.rtp_drops,
            tx_drops: c.tx_drops,
            remote_changes: c.remote_changes,
            remote_ssrc: c.remote_ssrc,
            last_seq_out: c.last_seq_out,
            ..LegStats::default()
        };
        let q = &mut self.quality;
        let r = q.figures();
        s.highest_seq_in = q.receive().highest_seq();
        s.expected = r.expected;
        s.received = r.received;
        s.lost = r.lost;
        s.loss_percent = if r.expected == 0 {
            0.0
        } else {
            (r.lost.max(0) as f64) * 100.0 / r.expected as f64
        };
        s.jitter_ms = f64::from(r.jitter) * 1000.0 / f64::from(codec.clock_rate());
        s.reordered = q.receive().reordered;
        s.duplicated = q.receive().duplicated;
        s.late = q.receive().late;
        s.rtt_ms = q.rtt_ns().map(|n| n as f64 / 1e6);
        // Mouth-to-ear: half the RTT (when known), a jitter buffer of twice the jitter, and one
        // packet time of packetization.
        let delay = s.rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * s.jitter_ms + f64::from(codec.ptime_ms);
        let impairment = match codec.codec {
            Codec::Pcmu | Codec::Pcma => CodecImpairment::G711_PLC,
            Codec::G722 => CodecImpairment::G722,
            Codec::Opus | Codec::Video => CodecImpairment::OPUS_ESTIMATE,
        };
        let e = e_model(impairment, delay, s.loss_percent, 1.0);
        s.r_factor = e.r_factor;
        s.mos = e.mos;
        s.dtls = self.dtls.as_ref().map(|d| Box::new(d.stats()));
        s
    }

    /// Looks at the leg's counters and emits what changed since the last sweep.
    pub(crate) fn sweep(
        &mut self,
        stream: u64,
        k: usize,
        receives: bool,
        opts: WatchOptions,
        now: u64,
        emit: impl FnMut(Event),
    ) {
        let c = &self.counters;
        let seen = c.packets_in + c.rtcp_in;
        let auth = c.drops.get(DropReason::AuthFailed);
        self.watch
            .sweep(stream, k, seen, auth, receives, opts, now, emit);
    }
}
