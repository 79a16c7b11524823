//! The media of a run: each stream's figures at its end ([`LegEnd`]), the quality each side
//! received ([`MediaTotals`]), and where every RTP packet went, per direction ([`Flow`]):
//! sent = received + lost in sequence + dropped before the answer + dropped before the keys +
//! rejected + undelivered at hangup + unaccounted, with each term measured on its own, so a
//! non-zero `unaccounted` is a finding, not a rounding.

use serde::Serialize;
use srtp_engine::model::{DropCounts, DropReason, StreamStats};
use srtp_engine::proto::srtp::Suite;

/// One stream's media at its end (the engine's final statistics of its first leg).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LegEnd {
    /// RTP packets sent.
    pub packets_sent: u64,
    /// The sequence number of the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq_out: Option<u16>,
    /// RTP packets received that authenticated, the first included.
    pub packets_in: u64,
    /// The highest sequence number received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_seq_in: Option<u16>,
    /// RTP packets received as RFC 3550 A.1 counts them (not the first, in probation).
    pub packets_received: u64,
    /// RTP packets expected (RFC 3550 A.3), from the second received to the highest.
    pub expected: u64,
    /// Gaps in that span (RFC 3550 A.3 loss, 0 when duplicates exceed it).
    pub lost: u64,
    /// RTP packets that reached the stream and were dropped, by reason.
    pub rtp_drops: DropCounts,
    /// Datagrams of any kind dropped, by reason.
    pub drops: DropCounts,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// E-model MOS.
    pub mos: f64,
    /// SRTP/SRTCP authentication failures.
    pub auth_failures: u64,
    /// Times the peer's address changed.
    pub remote_changes: u64,
    /// Packet periods the engine skipped because it fell behind its pacing (an overloaded
    /// generator: those packets were never sent, so they are not loss).
    pub pacing_skips: u64,
    /// Suite received with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_suite: Option<Suite>,
    /// The certificate its DTLS handshake shook hands with (sha-256), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_peer: Option<String>,
    /// The end of a call that was never set up here (a fork not chosen): it counts in the
    /// media balance, not in the quality figures.
    #[serde(skip)]
    pub released: bool,
}

impl LegEnd {
    /// From the engine's final statistics (None for a stream without a leg).
    pub fn of(s: &StreamStats) -> Option<LegEnd> {
        let l = s.legs.first()?;
        Some(LegEnd {
            packets_sent: l.packets_out,
            last_seq_out: l.last_seq_out,
            packets_in: l.packets_in,
            highest_seq_in: l.highest_seq_in,
            packets_received: l.received,
            expected: l.expected,
            lost: l.lost.max(0) as u64,
            rtp_drops: l.rtp_drops,
            drops: l.drops,
            jitter_ms: l.jitter_ms,
            mos: l.mos,
            auth_failures: l.auth_failures,
            remote_changes: l.remote_changes,
            pacing_skips: s.pacing_skips,
            rx_suite: l.rx_suite,
            dtls_peer: l.dtls.as_ref().and_then(|d| d.rtp.peer_fingerprint.clone()),
            released: false,
        })
    }
}

/// Where the RTP packets of one direction went. Every term but `unaccounted` is measured: the
/// sender counts what it sent, the receiver what it received and dropped (by reason) and the
/// gaps in the sequence numbers it saw, and the two sequence numbers at the end tell how many
/// left after the last one that arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Calls (or streams) whose two ends are both here.
    pub calls: u64,
    /// RTP packets the sending side put on the wire.
    pub sent: u64,
    /// RTP packets the receiving side took (authenticated and parsed).
    pub received: u64,
    /// Gaps in the sequence numbers between the first and the last packet received: lost on
    /// the way (or rejected in the middle of the call, which `rejected` counts too).
    pub lost_in_sequence: u64,
    /// Arrived while the receiver waited for the answer's keys (an offerer; RFC 3264 5.1 lets
    /// the answerer send as soon as it answers).
    pub dropped_before_answer: u64,
    /// Arrived before DTLS-SRTP set the receiver's keys up.
    pub dropped_before_keys: u64,
    /// Arrived and refused: authentication, replay, malformed, wrong source, other.
    pub rejected: u64,
    /// Sent after the last packet the receiver got: in flight or queued when the receiving
    /// stream closed. About one per call at 50 packets/s is normal; many more mean queues.
    pub undelivered_at_hangup: u64,
    /// Sent and in no other bucket (0 when every packet is explained; negative when a packet
    /// is counted twice, e.g. one rejected in the middle of a call is also a gap).
    pub unaccounted: i64,
}

impl Flow {
    /// One direction of one call: `from` sent, `to` received.
    pub fn between(from: &LegEnd, to: &LegEnd) -> Flow {
        Flow::of(&[from], from, &[to], to)
    }

    /// One direction with several ends on one side (a forked call: several answerers got the
    /// INVITE, and each may have sent media to the caller before one was chosen): what every
    /// sender sent, what every receiver took, and the tail between the two ends that carried
    /// the call (`from_main` to `to_main`).
    fn of(from: &[&LegEnd], from_main: &LegEnd, to: &[&LegEnd], to_main: &LegEnd) -> Flow {
        let drops = |r: DropReason| to.iter().map(|e| e.rtp_drops.get(r)).sum::<u64>();
        let before_answer = drops(DropReason::BeforeAnswer);
        let before_keys = drops(DropReason::BeforeKeys);
        let all_drops: u64 = to.iter().map(|e| e.rtp_drops.total()).sum();
        let tail = match (from_main.last_seq_out, to_main.highest_seq_in) {
            (Some(last), Some(high)) if to_main.packets_in > 0 => {
                // Sequence numbers wrap at 2^16; a gap of half of that is no tail.
                let t = last.wrapping_sub(high);
                u64::from(if t < 0x8000 { t } else { 0 })
            }
            _ => 0,
        };
        let mut f = Flow {
            calls: 1,
            sent: from.iter().map(|e| e.packets_sent).sum(),
            received: to.iter().map(|e| e.packets_in).sum(),
            lost_in_sequence: to.iter().map(|e| e.lost).sum(),
            dropped_before_answer: before_answer,
            dropped_before_keys: before_keys,
            rejected: all_drops - before_answer - before_keys,
            undelivered_at_hangup: tail,
            unaccounted: 0,
        };
        f.unaccounted = f.sent as i64 - f.explained() as i64;
        f
    }

    /// Both directions of a call between `caller` and the answerer ends that share its
    /// Call-ID (one, or several when a proxy forked the call). The end that carried the call
    /// is the one that took the most of the caller's packets.
    pub fn call(caller: &LegEnd, ends: &[&LegEnd]) -> Option<(Flow, Flow)> {
        let main = ends.iter().max_by_key(|e| e.packets_in)?;
        let up = Flow::of(&[caller], caller, ends, main);
        let down = Flow::of(ends, main, &[caller], caller);
        Some((up, down))
    }

    fn explained(&self) -> u64 {
        self.received
            + self.lost_in_sequence
            + self.dropped_before_answer
            + self.dropped_before_keys
            + self.rejected
            + self.undelivered_at_hangup
    }

    /// Adds another call's.
    pub fn add(&mut self, o: &Flow) {
        self.calls += o.calls;
        self.sent += o.sent;
        self.received += o.received;
        self.lost_in_sequence += o.lost_in_sequence;
        self.dropped_before_answer += o.dropped_before_answer;
        self.dropped_before_keys += o.dropped_before_keys;
        self.rejected += o.rejected;
        self.undelivered_at_hangup += o.undelivered_at_hangup;
        self.unaccounted += o.unaccounted;
    }

    /// Whether the buckets add up to what was sent.
    pub fn balances(&self) -> bool {
        self.sent as i64 == self.explained() as i64 + self.unaccounted && self.unaccounted == 0
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        let mut parts = vec![
            format!("{} sent", self.sent),
            format!("{} received", self.received),
            format!("{} lost in sequence", self.lost_in_sequence),
        ];
        for (n, what) in [
            (self.dropped_before_answer, "dropped before the answer"),
            (self.dropped_before_keys, "dropped before the keys"),
            (self.rejected, "rejected"),
            (self.undelivered_at_hangup, "undelivered at hangup"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.push(format!("unaccounted {}", self.unaccounted));
        parts.join(", ")
    }
}

/// The two directions of a run, over the calls whose two ends are both here.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Balance {
    /// What the callers sent to the answerers.
    pub to_answerers: Flow,
    /// What the answerers sent to the callers.
    pub to_callers: Flow,
    /// Calls with a figure from one end only (the other end is not ours, or changed the
    /// Call-ID, as a B2BUA does).
    pub calls_one_end: u64,
    /// Calls a proxy forked to several of our answerers, apart (and not judged): every end is
    /// counted, but what an answerer not chosen sent may reach the caller after its call
    /// ended, where no stream counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked: Option<(Flow, Flow)>,
}

/// Media totals of one receiving side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MediaTotals {
    /// Streams with figures.
    pub streams: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received (RFC 3550 A.1).
    pub packets_received: u64,
    /// RTP packets that authenticated, each stream's first included.
    pub packets_in: u64,
    /// RTP packets that arrived before the answer gave the keys, dropped (callers only: the
    /// answerer may send as soon as it answers, RFC 3264 5.1).
    pub early_drops: u64,
    /// Expected (RFC 3550).
    pub expected: u64,
    /// Lost (RFC 3550).
    pub lost: u64,
    /// Lost / expected, %.
    pub loss_percent: f64,
    /// Streams that lost any packet.
    pub streams_with_loss: u64,
    /// Mean jitter, ms.
    pub jitter_mean_ms: f64,
    /// Worst jitter, ms.
    pub jitter_max_ms: f64,
    /// Lowest MOS.
    pub mos_min: f64,
    /// Mean MOS.
    pub mos_mean: f64,
    /// Authentication failures.
    pub auth_failures: u64,
    /// Pacing periods skipped by the generator.
    pub pacing_skips: u64,
}

impl MediaTotals {
    /// Over these streams.
    pub fn of<'a>(figs: impl Iterator<Item = &'a LegEnd>) -> MediaTotals {
        let mut t = MediaTotals {
            mos_min: f64::INFINITY,
            ..MediaTotals::default()
        };
        let (mut jsum, mut msum) = (0.0, 0.0);
        for m in figs {
            t.streams += 1;
            t.packets_sent += m.packets_sent;
            t.packets_received += m.packets_received;
            t.packets_in += m.packets_in;
            t.early_drops += m.rtp_drops.get(DropReason::BeforeAnswer);
            t.expected += m.expected;
            t.lost += m.lost;
            t.streams_with_loss += u64::from(m.lost > 0);
            jsum += m.jitter_ms;
            t.jitter_max_ms = t.jitter_max_ms.max(m.jitter_ms);
            msum += m.mos;
            t.mos_min = t.mos_min.min(m.mos);
            t.auth_failures += m.auth_failures;
            t.pacing_skips += m.pacing_skips;
        }
        if t.streams > 0 {
            t.jitter_mean_ms = jsum / t.streams as f64;
            t.mos_mean = msum / t.streams as f64;
        } else {
            t.mos_min = 0.0;
        }
        if t.expected > 0 {
            t.loss_percent = 100.0 * t.lost as f64 / t.expected as f64;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(sent: u64, last_out: u16, inn: u64, first_in: u16, high_in: u16) -> LegEnd {
        // The receiver's RFC 3550 span starts at its second packet.
        let expected = u64::from(high_in.wrapping_sub(first_in));
        LegEnd {
            packets_sent: sent,
            last_seq_out: (sent > 0).then_some(last_out),
            packets_in: inn,
            highest_seq_in: (inn > 0).then_some(high_in),
            packets_received: inn.saturating_sub(1),
            expected,
            lost: expected - inn.saturating_sub(1),
            ..LegEnd::default()
        }
    }

    #[test]
    fn every_packet_of_a_direction_lands_in_one_bucket() {
        // The answerer sent 100 (seq 1000-1099); the caller dropped the first 4 before the
        // answer, then received 1004-1097 but for 2 gaps; 1098 and 1099 were in flight at
        // hangup.
        let answerer = end(100, 1099, 0, 0, 0);
        let mut caller = end(0, 0, 92, 1004, 1097);
        caller.rtp_drops.0[DropReason::BeforeAnswer as usize] = 4;
        let f = Flow::between(&answerer, &caller);
        assert_eq!(f.lost_in_sequence, 2);
        assert_eq!(f.undelivered_at_hangup, 2);
        assert_eq!(f.dropped_before_answer, 4);
        assert_eq!(f.unaccounted, 0, "{f:?}");
        assert!(f.balances());
        // One packet that no bucket explains (lost before the first that arrived) shows.
        caller.rtp_drops.0[DropReason::BeforeAnswer as usize] = 3;
        let f = Flow::between(&answerer, &caller);
        assert_eq!(f.unaccounted, 1);
        assert!(!f.balances());
        // Sequence numbers that wrap.
        let a = end(10, 3, 0, 0, 0);
        let b = end(0, 0, 9, 65530, 2);
        let f = Flow::between(&a, &b);
        assert_eq!(
            (f.lost_in_sequence, f.undelivered_at_hangup, f.unaccounted),
            (0, 1, 0)
        );
        // A forked call: a second answerer sent 3 packets the caller dropped before the
        // answer; the caller's media went to the first.
        let winner = end(50, 549, 40, 100, 139);
        let mut loser = end(3, 902, 0, 0, 0);
        loser.packets_in = 0;
        let mut caller = end(40, 139, 50, 500, 549);
        caller.rtp_drops.0[DropReason::BeforeAnswer as usize] = 3;
        let (up, down) = Flow::call(&caller, &[&winner, &loser]).unwrap();
        assert_eq!(
            (up.sent, up.received, up.unaccounted),
            (40, 40, 0),
            "{up:?}"
        );
        assert_eq!((down.sent, down.received), (53, 50), "{down:?}");
        assert_eq!(down.dropped_before_answer, 3);
        assert_eq!(down.unaccounted, 0, "{down:?}");
        let mut total = Flow::default();
        total.add(&f);
        total.add(&f);
        assert_eq!((total.calls, total.sent, total.received), (2, 20, 18));
        assert!(total.balances());
    }
}
