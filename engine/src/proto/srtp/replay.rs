//! The replay window (RFC 3711 3.3.2), for SRTP packet indices (48 bits) and SRTCP indices
//! (31 bits).
//!
//! The window is a ring of bits indexed by `index mod capacity`: moving forward clears only
//! the bits it passes, so an in-order packet costs a few word operations whatever the window
//! size. Checking and updating are separate steps because state may change only after the
//! packet has authenticated.

/// Smallest window RFC 3711 3.3.2 allows ("a minimum value of 64").
pub const MIN_WINDOW: u32 = 64;
/// Largest window this implementation accepts.
pub const MAX_WINDOW: u32 = 32768;
/// Default window: 128 packets, enough for audio and light video reordering.
pub const DEFAULT_WINDOW: u32 = 128;

/// A replay window over packet indices.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest index received so far.
    highest: u64,
    /// Packets accepted at most this far behind `highest` (exclusive).
    size: u32,
    /// Ring of `capacity` bits (a power of two, at least `size`): bit `i mod capacity` is set
    /// when index `i` in `highest - size < i <= highest` was received.
    bits: Bits,
}

/// The ring's words: inline up to the default 128-packet window (no allocation per SSRC for
/// audio), on the heap for the larger windows video asks for.
#[derive(Clone, Debug)]
enum Bits {
    Inline([u64; 2]),
    Heap(Box<[u64]>),
}

impl Bits {
    fn new(words: usize) -> Bits {
        if words <= 2 {
            Bits::Inline([0; 2])
        } else {
            Bits::Heap(vec![0u64; words].into_boxed_slice())
        }
    }

    #[inline]
    fn words(&self) -> &[u64] {
        match self {
            Bits::Inline(w) => w,
            Bits::Heap(w) => w,
        }
    }

    #[inline]
    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Bits::Inline(w) => w,
            Bits::Heap(w) => w,
        }
    }
}

/// Where an index falls relative to the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Newer than anything seen: accepting it moves the window.
    Ahead,
    /// Inside the window and not yet seen.
    InWindow,
    /// Seen before.
    Duplicate,
    /// Behind the window: too old to tell.
    TooOld,
}

impl ReplayCheck {
    /// True for indices that may be accepted.
    pub fn is_fresh(self) -> bool {
        matches!(self, ReplayCheck::Ahead | ReplayCheck::InWindow)
    }
}

impl ReplayWindow {
    /// A window of `size` packets whose first received index is `first`.
    ///
    /// `size` must lie in `MIN_WINDOW..=MAX_WINDOW` (the policy checks it).
    pub fn new(size: u32, first: u64) -> ReplayWindow {
        debug_assert!((MIN_WINDOW..=MAX_WINDOW).contains(&size));
        // At least two words, so that the ring spans a power of two of at least 128 bits.
        let words = (size as usize).next_power_of_two().div_ceil(64).max(2);
        let mut w = ReplayWindow {
            highest: first,
            size,
            bits: Bits::new(words),
        };
        w.set(first);
        w
    }

    /// The highest index received.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    fn capacity_mask(&self) -> u64 {
        (self.bits.words().len() as u64 * 64) - 1
    }

    fn set(&mut self, index: u64) {
        let bit = index & self.capacity_mask();
        self.bits.words_mut()[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// Clears the slots of indices `from..=to` (fewer than the capacity), a word at a time:
    /// the ring's length is a multiple of 64, so no run of bits straddles its end.
    fn clear_range(&mut self, from: u64, to: u64) {
        let mask = self.capacity_mask();
        let mut i = from;
        while i <= to {
            let bit = i & mask;
            let offset = bit % 64;
            let n = (64 - offset).min(to - i + 1);
            let run = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << offset
            };
            self.bits.words_mut()[(bit / 64) as usize] &= !run;
            i += n;
        }
    }

    fn is_set(&self, index: u64) -> bool {
        let bit = index & self.capacity_mask();
        self.bits.words()[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// Classifies `index` without changing the window.
    pub fn check(&self, index: u64) -> ReplayCheck {
        if index > self.highest {
            ReplayCheck::Ahead
        } else if self.highest - index >= u64::from(self.size) {
            ReplayCheck::TooOld
        } else if self.is_set(index) {
            ReplayCheck::Duplicate
        } else {
            ReplayCheck::InWindow
        }
    }

    /// Records `index` as received. Call only after [`ReplayWindow::check`] said it is fresh
    /// and the packet authenticated.
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let advance = index - self.highest;
            let capacity = self.capacity_mask() + 1;
            if advance >= capacity {
                self.bits.words_mut().fill(0);
            } else {
                // Clear the slots the window moves over; they held indices now too old.
                self.clear_range(self.highest + 1, index);
            }
            self.highest = index;
        }
        self.set(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The reference model: a set of every index received, and the RFC rule.
    struct Model {
        seen: BTreeSet<u64>,
        size: u64,
    }

    impl Model {
        fn check(&self, index: u64) -> ReplayCheck {
            let highest = *self.seen.last().unwrap();
            if index > highest {
                ReplayCheck::Ahead
            } else if highest - index >= self.size {
                ReplayCheck::TooOld
            } else if self.seen.contains(&index) {
                ReplayCheck::Duplicate
            } else {
                ReplayCheck::InWindow
            }
        }
    }

    #[test]
    fn duplicates_and_old_packets() {
        let mut w = ReplayWindow::new(128, 1000);
        assert_eq!(w.check(1000), ReplayCheck::Duplicate);
        assert_eq!(w.check(1001), ReplayCheck::Ahead);
        assert_eq!(w.check(999), ReplayCheck::InWindow);
        assert_eq!(w.check(873), ReplayCheck::InWindow);
        assert_eq!(w.check(872), ReplayCheck::TooOld);
        w.accept(999);
        assert_eq!(w.check(999), ReplayCheck::Duplicate);
        w.accept(5000);
        assert_eq!(w.check(999), ReplayCheck::TooOld);
        assert_eq!(w.check(4999), ReplayCheck::InWindow);
        assert_eq!(w.highest(), 5000);
    }

    #[test]
    fn large_window_for_video() {
        let mut w = ReplayWindow::new(1024, 0);
        for i in (1..2000).rev().step_by(3) {
            if w.check(i).is_fresh() {
                w.accept(i);
            }
        }
        assert_eq!(w.highest(), 1999);
        // Accepted: 1999 - 3k. 1999 - 1022 was never received and is inside the window.
        assert_eq!(w.check(1999 - 1023), ReplayCheck::Duplicate);
        assert_eq!(w.check(1999 - 1022), ReplayCheck::InWindow);
        assert_eq!(w.check(1999 - 1024), ReplayCheck::TooOld);
    }

    proptest! {
        /// Any sequence of arrivals (jumps, reordering, duplicates, very old indices) is
        /// classified exactly as the reference model classifies it, for every window size.
        #[test]
        fn matches_reference_model(
            size in prop::sample::select(vec![64u32, 100, 128, 1000, 1024, 4096]),
            first in 0u64..1 << 40,
            steps in prop::collection::vec(-3000i64..3000, 1..400),
        ) {
            let mut w = ReplayWindow::new(size, first);
            let mut m = Model { seen: BTreeSet::from([first]), size: u64::from(size) };
            let mut cursor = first as i64;
            for step in steps {
                cursor = (cursor + step).max(0);
                let index = cursor as u64;
                let expected = m.check(index);
                prop_assert_eq!(w.check(index), expected, "index {}", index);
                if expected.is_fresh() {
                    w.accept(index);
                    m.seen.insert(index);
                }
                prop_assert_eq!(w.highest(), *m.seen.last().unwrap());
            }
        }
    }
}
