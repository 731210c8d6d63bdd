//! Size changes as barriers in the write-back order: `set_len`'s `ftruncate` and the hole
//! punches of `truncate_start`.
//!
//! A size change affects a byte range: `[len, ∞)` for a truncate to `len` (what it cuts
//! or, growing, what a write could extend past before it runs), the punched range for a
//! punch. The state machine (`state.rs`) keeps two rules for every pending change:
//! - it is issued only when no write in flight overlaps its range (a write already sent
//!   cannot be taken back, so it is waited for);
//! - a dirty block overlapping its range is not sent until the change completed (the
//!   caller wrote it later, so it must land after the change).
//!
//! Writes that were buffered before a shrink and lie past the new end are dropped by the
//! caller's `set_len` itself (`Index::drop_from`), so every dirty block in a pending
//! truncate's range was written after it. Changes are issued one at a time, in the order
//! they were made. A truncate takes a sequence number like a write, so a force waits for
//! it to complete and for a later sync; a punch has none (freeing space below the start
//! promises nothing about durability).

use std::collections::VecDeque;
use std::time::Instant;

use super::engine::SizeChange;

/// A size change the engine is performing.
pub(crate) struct SizeOp {
    pub change: SizeChange,
    pub pushed_at: Instant,
}

struct Pending {
    change: SizeChange,
    seq: Option<u64>,
    in_flight: bool,
}

impl SizeChange {
    /// The byte range `[from, to)` the change affects.
    fn range(self) -> (u64, u64) {
        match self {
            SizeChange::Truncate(len) => (len, u64::MAX),
            SizeChange::Punch { offset, len } => (offset, offset + len),
        }
    }
}

/// The size changes not yet completed, oldest first (only the oldest can be in flight),
/// and where hole punching stands.
pub(crate) struct Barriers {
    queue: VecDeque<Pending>,
    /// The file-system block size punches are aligned to; `None`: punching is off.
    punch_align: Option<u64>,
    /// Everything below this was punched, or queued to be.
    punched_to: u64,
}

impl Barriers {
    pub(crate) fn new(punch_align: Option<u64>) -> Self {
        Barriers {
            queue: VecDeque::new(),
            punch_align: punch_align.filter(|&a| a > 0),
            punched_to: 0,
        }
    }

    /// Queues a truncate to `len`, taking write sequence number `seq`.
    pub(crate) fn truncate(&mut self, len: u64, seq: u64) {
        self.queue.push_back(Pending {
            change: SizeChange::Truncate(len),
            seq: Some(seq),
            in_flight: false,
        });
    }

    /// Queues a punch of the whole file-system blocks below `start` not punched yet;
    /// returns whether one was queued. A punch still waiting at the tail is extended
    /// instead, so frequent small `truncate_start`s cost one `fallocate`.
    pub(crate) fn punch_below(&mut self, start: u64) -> bool {
        let Some(align) = self.punch_align else {
            return false;
        };
        let to = start / align * align;
        if to <= self.punched_to {
            return false;
        }
        let from = self.punched_to;
        self.punched_to = to;
        if let Some(Pending {
            change: SizeChange::Punch { offset, len },
            in_flight: false,
            ..
        }) = self.queue.back_mut()
        {
            if *offset + *len == from {
                *len = to - *offset;
                return true;
            }
        }
        self.queue.push_back(Pending {
            change: SizeChange::Punch {
                offset: from,
                len: to - from,
            },
            seq: None,
            in_flight: false,
        });
        true
    }

    /// The file system refused to punch: stop trying.
    pub(crate) fn stop_punching(&mut self) {
        self.punch_align = None;
        self.queue
            .retain(|p| p.in_flight || !matches!(p.change, SizeChange::Punch { .. }));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.queue.front().is_some_and(|p| p.in_flight)
    }

    /// Whether a dirty block `[off, end)` must wait: it overlaps a pending change.
    pub(crate) fn holds(&self, off: u64, end: u64) -> bool {
        self.queue.iter().any(|p| {
            let (from, to) = p.change.range();
            off < to && from < end
        })
    }

    /// File bytes at or past this offset may be stale (a shrink has not completed yet), so
    /// reads must see zeros there wherever no buffered block covers them.
    pub(crate) fn stale_from(&self) -> u64 {
        self.queue
            .iter()
            .filter_map(|p| match p.change {
                SizeChange::Truncate(len) => Some(len),
                SizeChange::Punch { .. } => None,
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The oldest sequence number of a pending truncate.
    pub(crate) fn min_seq(&self) -> Option<u64> {
        self.queue.iter().filter_map(|p| p.seq).min()
    }

    /// The oldest change, if it is not in flight yet, with the range that must have no
    /// write in flight before it may be issued.
    pub(crate) fn next(&self) -> Option<(SizeChange, (u64, u64))> {
        let p = self.queue.front().filter(|p| !p.in_flight)?;
        Some((p.change, p.change.range()))
    }

    /// The oldest change was handed to the engine.
    pub(crate) fn issued(&mut self) {
        let head = self.queue.front_mut().expect("a change to issue");
        debug_assert!(!head.in_flight);
        head.in_flight = true;
    }

    /// The change in flight completed (whatever its result).
    pub(crate) fn completed(&mut self) -> SizeChange {
        let head = self.queue.pop_front().expect("a change in flight");
        debug_assert!(head.in_flight);
        head.change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punches_are_block_aligned_and_merge_while_queued() {
        let mut b = Barriers::new(Some(4096));
        assert!(!b.punch_below(4000), "less than a block");
        assert!(b.punch_below(10_000));
        assert!(b.punch_below(20_000));
        let (change, _) = b.next().unwrap();
        assert_eq!(
            change,
            SizeChange::Punch {
                offset: 0,
                len: 16384
            }
        );
        b.issued();
        assert!(b.punch_below(30_000));
        assert_eq!(b.completed(), change);
        assert_eq!(
            b.next().unwrap().0,
            SizeChange::Punch {
                offset: 16384,
                len: 28672 - 16384
            },
            "a punch in flight is not extended; the next starts where it ended"
        );
        b.stop_punching();
        assert!(b.is_empty() && !b.punch_below(1 << 20));
    }

    #[test]
    fn truncates_hold_writes_past_their_length_and_mask_stale_bytes() {
        let mut b = Barriers::new(None);
        assert_eq!(b.stale_from(), u64::MAX);
        b.truncate(1000, 7);
        b.truncate(500, 9);
        assert_eq!((b.stale_from(), b.min_seq()), (500, Some(7)));
        assert!(b.holds(400, 600) && !b.holds(0, 500));
        b.issued();
        b.completed();
        assert_eq!((b.stale_from(), b.min_seq()), (500, Some(9)));
    }
}
