//! What a leg measures about the media it receives (RFC 3550 loss and jitter, the round trip
//! from RTCP, the E-model score) and the events a sweep draws from its counters (silence,
//! authentication failures, a key at the end of its lifetime).
//!
//! The packet path only counts and sets flags; a sweep every 250 ms turns them into events,
//! so a flood of bad packets costs no more than counting them.

use crate::model::{Direction, Event, WatchOptions};
use crate::proto::rtcp::{self, ReportBlock, RtcpSummary};
use crate::proto::rtp::RtpHeader;
use crate::proto::stats::{LossReport, ReceiveStats};

/// How often a worker looks for events.
pub(crate) const SWEEP_NS: u64 = 250_000_000;

/// Receive statistics of the peer's current SSRC and what RTCP taught.
#[derive(Debug, Clone, Default)]
pub(crate) struct Quality {
    recv: ReceiveStats,
    /// LSR of the last SR received and when (ns).
    last_sr: Option<(u32, u64)>,
    rtt_ns: Option<u64>,
}

impl Quality {
    /// Starts over (a new SSRC or a new remote: the old figures no longer tell).
    pub(crate) fn restart(&mut self) {
        self.recv = ReceiveStats::new();
    }

    pub(crate) fn on_rtp(&mut self, hdr: &RtpHeader, now: u64, clock: u32) {
        let arrival = ((u128::from(now) * u128::from(clock)) / 1_000_000_000) as u32;
        self.recv.on_packet(hdr.seq, hdr.timestamp, arrival);
    }

    /// An authenticated RTCP compound: its sender report for our next report's LSR/DLSR, and
    /// a report block about us for the round trip (when `ours`).
    pub(crate) fn on_rtcp(&mut self, s: &RtcpSummary, ours: bool, now: u64, ntp: u64) {
        if let Some(si) = s.sender_info {
            self.last_sr = Some((rtcp::ntp_middle(si.ntp), now));
        }
        if ours
            && let Some(block) = s.report
            && let Some(rtt) = rtcp::round_trip(&block, rtcp::ntp_middle(ntp))
        {
            self.rtt_ns = Some(rtt.as_nanos() as u64);
        }
    }

    /// The RFC 3550 figures so far (a statistics query: the report interval is not reset).
    pub(crate) fn figures(&mut self) -> LossReport {
        self.recv.report(false)
    }

    /// The receive statistics themselves.
    pub(crate) fn receive(&self) -> &ReceiveStats {
        &self.recv
    }

    /// The round trip from RTCP, ns.
    pub(crate) fn rtt_ns(&self) -> Option<u64> {
        self.rtt_ns
    }

    /// A report block about the peer's SSRC, once it has sent anything valid.
    pub(crate) fn report_block(&mut self, ssrc: u32, now: u64) -> Option<ReportBlock> {
        if !self.recv.is_valid() {
            return None;
        }
        let r = self.recv.report(true);
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(lsr, at)| {
            (lsr, (((now - at) as u128 * 65_536) / 1_000_000_000) as u32)
        });
        Some(ReportBlock {
            ssrc,
            fraction_lost: r.fraction_lost,
            cumulative_lost: r.lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            extended_max: r.extended_max,
            jitter: r.jitter,
            lsr,
            dlsr,
        })
    }
}

/// Per-leg watch state, updated by the sweep (the packet path only sets `lifetime_hit`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegWatch {
    /// Packets (RTP + RTCP) seen at the last sweep.
    seen: u64,
    /// When the leg last showed progress, ns on the worker clock.
    quiet_since: u64,
    /// Whether `media_silent` was sent and `media_resumed` not yet.
    silent: bool,
    /// Authentication failures covered by events so far.
    auth_reported: u64,
    /// Directions whose key reached its lifetime (bit 0: tx, bit 1: rx), set on the packet path.
    lifetime_hit: u8,
    /// Directions already reported.
    lifetime_reported: u8,
}

impl LegWatch {
    /// Fresh state for a leg created at `now`.
    pub(crate) fn new(now: u64) -> LegWatch {
        LegWatch {
            quiet_since: now,
            ..LegWatch::default()
        }
    }

    /// Notes that the key of `direction` reached its lifetime.
    pub(crate) fn lifetime(&mut self, direction: Direction) {
        self.lifetime_hit |= match direction {
            Direction::Tx => 1,
            Direction::Rx => 2,
        };
    }

    /// Restarts the silence clock (a new remote or keys: the old silence no longer tells).
    pub(crate) fn restart(&mut self, now: u64) {
        self.quiet_since = now;
        self.silent = false;
        self.lifetime_hit = 0;
        self.lifetime_reported = 0;
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sweep(
        &mut self,
        stream: u64,
        k: usize,
        seen: u64,
        auth_failures: u64,
        receives: bool,
        opts: WatchOptions,
        now: u64,
        mut emit: impl FnMut(Event),
    ) {
        if receives && opts.silence_ms > 0 {
            if seen != self.seen {
                if self.silent {
                    emit(Event::MediaResumed {
                        stream,
                        leg: k,
                        silent_ms: now.saturating_sub(self.quiet_since) / 1_000_000,
                    });
                    self.silent = false;
                }
                self.quiet_since = now;
            } else if !self.silent
                && now.saturating_sub(self.quiet_since) >= u64::from(opts.silence_ms) * 1_000_000
            {
                self.silent = true;
                emit(Event::MediaSilent {
                    stream,
                    leg: k,
                    silent_ms: now.saturating_sub(self.quiet_since) / 1_000_000,
                });
            }
        }
        self.seen = seen;
        let threshold = u64::from(opts.auth_failure_threshold);
        if threshold > 0 && auth_failures >= self.auth_reported + threshold {
            emit(Event::AuthFailures {
                stream,
                leg: k,
                total: auth_failures,
                new: auth_failures - self.auth_reported,
                threshold: opts.auth_failure_threshold,
            });
            self.auth_reported = auth_failures;
        }
        let fresh = self.lifetime_hit & !self.lifetime_reported;
        for (bit, direction) in [(1u8, Direction::Tx), (2u8, Direction::Rx)] {
            if fresh & bit != 0 {
                emit(Event::KeyLifetimeReached {
                    stream,
                    leg: k,
                    direction,
                });
            }
        }
        self.lifetime_reported |= fresh;
    }
}
