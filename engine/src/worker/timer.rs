//! A hashed timing wheel with 1 ms ticks: O(1) insert, due entries collected per tick, no
//! allocation once the slots have grown to their working size.
//!
//! Entries are not cancelled; each carries the owner's generation and the owner ignores stale
//! ones (a deleted stream's slot is reused with a new generation).

/// Wheel size in ticks (a power of two): entries further out wait for more rounds.
const SLOTS: usize = 4096;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Send the stream's next RTP packet(s).
    Pace,
    /// Send the stream's next RTCP report.
    Rtcp,
    /// A DTLS handshake's retransmission, deadline or linger timer (leg index; the RTCP port's
    /// handshake when `rtcp`).
    Dtls {
        /// Leg index.
        leg: u8,
        /// The RTCP port's handshake.
        rtcp: bool,
    },
}

/// One timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    /// The stream slot it belongs to.
    pub slot: u32,
    /// The stream's generation when it was set.
    pub gen_: u32,
    /// What to do.
    pub kind: TimerKind,
    at_tick: u64,
}

/// The wheel. Time is in ticks of 1 ms from the worker's epoch.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<TimerEntry>>,
    /// The next tick to process.
    now_tick: u64,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> TimerWheel {
        TimerWheel::new()
    }
}

impl TimerWheel {
    /// An empty wheel at tick 0.
    pub fn new() -> TimerWheel {
        TimerWheel {
            slots: vec![Vec::new(); SLOTS],
            now_tick: 0,
            len: 0,
        }
    }

    /// Timers pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets a timer for time `at_ns` (rounded up to the next tick; a time in the past fires at
    /// the next advance).
    pub fn insert(&mut self, at_ns: u64, slot: u32, gen_: u32, kind: TimerKind) {
        let tick = at_ns.div_ceil(1_000_000).max(self.now_tick);
        let idx = (tick as usize) & (SLOTS - 1);
        self.slots[idx].push(TimerEntry {
            slot,
            gen_,
            kind,
            at_tick: tick,
        });
        self.len += 1;
    }

    /// Moves time to `now_ns`, appending every due timer to `due` (in tick order, except
    /// after a stall longer than a turn of the wheel).
    pub fn advance(&mut self, now_ns: u64, due: &mut Vec<TimerEntry>) {
        let target = now_ns / 1_000_000;
        // After a long stall one turn visits every slot; fire all that are due by `target`.
        let from = self.now_tick.max((target + 1).saturating_sub(SLOTS as u64));
        let mut tick = from;
        while tick <= target {
            let slot = &mut self.slots[(tick as usize) & (SLOTS - 1)];
            let mut k = 0;
            while k < slot.len() {
                // The slot also holds timers whole turns later; they stay.
                if slot[k].at_tick <= tick {
                    due.push(slot.swap_remove(k));
                    self.len -= 1;
                } else {
                    k += 1;
                }
            }
            tick += 1;
        }
        self.now_tick = self.now_tick.max(target + 1);
    }

    /// Time (ns) of the next tick that holds a timer, looking at most `limit_ns` ahead; `None`
    /// when nothing is due that soon.
    pub fn next_deadline(&self, limit_ns: u64) -> Option<u64> {
        let ticks = (limit_ns / 1_000_000).min(SLOTS as u64);
        (0..ticks).map(|d| self.now_tick + d).find_map(|t| {
            self.slots[(t as usize) & (SLOTS - 1)]
                .iter()
                .any(|e| e.at_tick <= t)
                .then_some(t * 1_000_000)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_not_early() {
        let mut w = TimerWheel::new();
        w.insert(5_000_000, 1, 0, TimerKind::Pace);
        w.insert(3_500_000, 2, 0, TimerKind::Rtcp);
        w.insert(10_000_000_000, 3, 7, TimerKind::Pace); // 10 s: several rounds out
        let mut due = Vec::new();
        w.advance(3_000_000, &mut due);
        assert!(due.is_empty());
        w.advance(4_000_000, &mut due);
        assert_eq!(due.iter().map(|e| e.slot).collect::<Vec<_>>(), vec![2]);
        due.clear();
        w.advance(5_000_000, &mut due);
        assert_eq!(due[0].slot, 1);
        due.clear();
        assert_eq!(w.next_deadline(1_000_000_000), None);
        w.advance(9_999_000_000, &mut due);
        assert!(due.is_empty());
        w.advance(10_000_000_000, &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].slot, due[0].gen_), (3, 7));
        assert!(w.is_empty());
    }

    #[test]
    fn past_times_fire_on_the_next_advance_and_deadlines_are_found() {
        let mut w = TimerWheel::new();
        let mut due = Vec::new();
        w.advance(100_000_000, &mut due);
        w.insert(50_000_000, 9, 0, TimerKind::Pace);
        w.insert(120_000_000, 8, 0, TimerKind::Pace);
        assert_eq!(w.next_deadline(50_000_000), Some(101_000_000));
        w.advance(101_000_000, &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(w.next_deadline(50_000_000), Some(120_000_000));
        assert_eq!(w.next_deadline(10_000_000), None);
    }

    #[test]
    fn a_long_stall_fires_everything_due() {
        let mut w = TimerWheel::new();
        for i in 0..100u32 {
            w.insert(u64::from(i) * 7_000_000, i, 0, TimerKind::Pace);
        }
        let mut due = Vec::new();
        w.advance(60_000_000_000, &mut due); // 60 s later
        assert_eq!(due.len(), 100);
        assert!(w.is_empty());
    }
}
