//! A hashed timing wheel with 1 ms ticks: O(1) insert, due entries collected per tick, no
//! allocation once the wheel has grown to its working size.
//!
//! Each slot is a linked list through one shared pool of entries, so the wheel's memory
//! follows the number of timers (32 bytes each). With a vector per slot it followed the
//! number of slots times the most entries any slot ever held: 4,096 slots that each grew to
//! the timers of one millisecond, about 2.9 KB per sending stream at 60 ms packets (the
//! memory benchmark found it).
//!
//! Entries are not cancelled; each carries the owner's generation and the owner ignores stale
//! ones (a deleted stream's slot is reused with a new generation).

/// Wheel size in ticks (a power of two): entries further out wait for more rounds.
const SLOTS: usize = 4096;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
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
pub(crate) struct TimerEntry {
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
pub(crate) struct TimerWheel {
    /// First node of each slot's list, or [`NIL`].
    heads: Box<[u32]>,
    /// The entries, linked per slot; free ones are linked from `free`.
    nodes: Vec<Node>,
    free: u32,
    /// The next tick to process.
    now_tick: u64,
    len: usize,
}

/// End of a list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    entry: TimerEntry,
    next: u32,
}

impl Default for TimerWheel {
    fn default() -> TimerWheel {
        TimerWheel::new()
    }
}

impl TimerWheel {
    /// An empty wheel at tick 0.
    pub(crate) fn new() -> TimerWheel {
        TimerWheel {
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
            free: NIL,
            now_tick: 0,
            len: 0,
        }
    }

    /// Timers pending.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets a timer for time `at_ns` (rounded up to the next tick; a time in the past fires at
    /// the next advance).
    pub(crate) fn insert(&mut self, at_ns: u64, slot: u32, gen_: u32, kind: TimerKind) {
        let tick = at_ns.div_ceil(1_000_000).max(self.now_tick);
        let head = &mut self.heads[(tick as usize) & (SLOTS - 1)];
        let node = Node {
            entry: TimerEntry {
                slot,
                gen_,
                kind,
                at_tick: tick,
            },
            next: *head,
        };
        let index = if self.free == NIL {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let index = self.free;
            self.free = self.nodes[index as usize].next;
            self.nodes[index as usize] = node;
            index
        };
        *head = index;
        self.len += 1;
    }

    /// Moves time to `now_ns`, appending every due timer to `due` (in tick order, except
    /// after a stall longer than a turn of the wheel).
    pub(crate) fn advance(&mut self, now_ns: u64, due: &mut Vec<TimerEntry>) {
        let target = now_ns / 1_000_000;
        let from = self.now_tick.max((target + 1).saturating_sub(SLOTS as u64));
        let mut tick = from;
        while tick <= target {
            let slot = (tick as usize) & (SLOTS - 1);
            let mut prev = NIL;
            let mut at = self.heads[slot];
            while at != NIL {
                let node = self.nodes[at as usize];
                if node.entry.at_tick <= tick {
                    due.push(node.entry);
                    if prev == NIL {
                        self.heads[slot] = node.next;
                    } else {
                        self.nodes[prev as usize].next = node.next;
                    }
                    self.nodes[at as usize].next = self.free;
                    self.free = at;
                    self.len -= 1;
                } else {
                    prev = at;
                }
                at = node.next;
            }
            tick += 1;
        }
        self.now_tick = self.now_tick.max(target + 1);
    }

    /// Time (ns) of the next tick that holds a timer, looking at most `limit_ns` ahead; `None`
    /// when nothing is due that soon.
    pub(crate) fn next_deadline(&self, limit_ns: u64) -> Option<u64> {
        let ticks = (limit_ns / 1_000_000).min(SLOTS as u64);
        (0..ticks).map(|d| self.now_tick + d).find_map(|t| {
            let mut at = self.heads[(t as usize) & (SLOTS - 1)];
            while at != NIL {
                let node = &self.nodes[at as usize];
                if node.entry.at_tick <= t {
                    return Some(t * 1_000_000);
                }
                at = node.next;
            }
            None
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

    /// The wheel's memory follows the timers pending, not the slots: 2,000 pacing timers
    /// (every 20 ms) turning the wheel twice leave a pool of 2,000 entries, where a vector per
    /// slot had grown every one of the 4,096 slots to a millisecond's worth of timers.
    #[test]
    fn memory_follows_the_timers_pending() {
        let mut w = TimerWheel::new();
        for k in 0..2_000u32 {
            w.insert(u64::from(k % 20) * 1_000_000, k, 0, TimerKind::Pace);
        }
        let mut due = Vec::new();
        let mut fired = 0;
        for tick in 0..(2 * SLOTS as u64) {
            due.clear();
            w.advance(tick * 1_000_000, &mut due);
            fired += due.len();
            for e in &due {
                w.insert((tick + 20) * 1_000_000, e.slot, e.gen_, e.kind);
            }
        }
        assert_eq!(w.len(), 2_000);
        assert_eq!(fired, 2_000 * 2 * SLOTS / 20);
        assert_eq!(w.nodes.len(), 2_000);
    }
}
