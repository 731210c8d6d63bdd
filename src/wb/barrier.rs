//! Size changes as barriers in the write-back order: `set_len`'s `ftruncate`, the hole
//! punches of `truncate_start`, and the zero fills that keep space ready past the end
//! (preallocation).
//!
//! Preallocation: appends that land inside the file's size, on blocks already allocated
//! and written, change no metadata, so neither they nor their `fdatasync` update the
//! inode. (Plain `fallocate` leaves unwritten extents whose conversion on the first write
//! is itself a metadata change, and `KEEP_SIZE` still changes the size on every append.)
//! So the handle writes zeros ahead of the logical end, `window` bytes at most, topping up
//! when less than half of it is left. A fill is a barrier like the others: a write into
//! its range made after it waits for it. `close` trims the file back to the logical end
//! with one more `ftruncate`.
//!
//! A size change affects a byte range: `[len, ∞)` for a truncate to `len` (what it cuts
//! or, growing, what a write could extend past before it runs), the punched range for a
//! punch. The state machine (`state.rs`) keeps two rules for every pending change, for
//! the submitter's writes and a forcer's lead (`lead.rs`) alike:
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

use super::engine::backend::{SizeChange, ZEROS_LEN};

/// A size change the engine is performing.
pub(crate) struct SizeOp {
    pub change: SizeChange,
}

struct Pending {
    change: SizeChange,
    seq: Option<u64>,
    in_flight: bool,
}

impl SizeChange {
    /// The byte range `[from, to)` the change affects. A truncate to the middle of a
    /// file-system block (`block`) zeroes the rest of that block through the page cache,
    /// so it affects the whole block. With direct I/O (`direct`) a size change affects the
    /// whole file: moving the end zeroes the partial blocks at the old and the new end
    /// through the page cache, and a direct write into such a block at the same time then
    /// fails to invalidate that page (seen here on ext4: "Page cache invalidation failure
    /// on direct I/O" in the kernel log, and `EIO` from the next fsync).
    fn range(self, block: u64, direct: bool) -> (u64, u64) {
        match self {
            SizeChange::Truncate(_) | SizeChange::ZeroFill { .. } if direct => (0, u64::MAX),
            SizeChange::Truncate(len) => (len / block * block, u64::MAX),
            SizeChange::Punch { offset, len } | SizeChange::ZeroFill { offset, len } => {
                (offset, offset + len)
            }
        }
    }
}

/// The preallocation window.
struct Window {
    /// Bytes of zero-filled space to keep past the logical end.
    size: u64,
    /// Zero fills start and end on multiples of this (the page size: every direct-I/O
    /// alignment divides it).
    align: u64,
    /// The file is zero-filled (or holds data) up to here, counting fills still queued.
    filled_to: u64,
    /// False once the file system refused a fill: no more fills, but `close` still trims.
    on: bool,
    /// The file's length at open: no fill until the end grows past it, so opening a file
    /// to read or rewrite it writes nothing.
    opened_len: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The size changes not yet completed, oldest first (only the oldest can be in flight),
/// and where hole punching stands.
pub(crate) struct Barriers {
    queue: VecDeque<Pending>,
    /// The file-system block size punches are aligned to; `None`: punching is off.
    punch_align: Option<u64>,
    /// Everything below this was punched, or queued to be.
    punched_to: u64,
    window: Option<Window>,
    /// The file system's block size.
    block: u64,
    /// The file is open with `O_DIRECT`.
    direct: bool,
}

impl Barriers {
    /// `block`: the file system's block size; punches are aligned to `punch_align`
    /// (`None`: no punching); `window`: bytes of zero-filled space to keep past the end
    /// (0: none); the file is `file_len` bytes long now.
    pub(crate) fn new(block: u64, punch_align: Option<u64>, window: u64, file_len: u64) -> Self {
        Barriers {
            block: block.max(1),
            direct: false,
            queue: VecDeque::new(),
            punch_align: punch_align.filter(|&a| a > 0),
            punched_to: 0,
            window: (window > 0).then_some(Window {
                size: window,
                align: 4096,
                filled_to: file_len,
                on: true,
                opened_len: file_len,
            }),
        }
    }

    /// The file is open with `O_DIRECT`: truncates and zero fills become whole-file
    /// barriers (see `SizeChange::range`).
    pub(crate) fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// Queues a truncate to `len`, taking write sequence number `seq` (`None`: a trim
    /// nobody waits for).
    pub(crate) fn truncate(&mut self, len: u64, seq: Option<u64>) {
        if let Some(w) = &mut self.window {
            w.filled_to = w.filled_to.min(len);
        }
        self.queue.push_back(Pending {
            change: SizeChange::Truncate(len),
            seq,
            in_flight: false,
        });
    }

    /// Queues a zero fill when less than half the window is ready past `end` and no fill
    /// is pending; returns whether it did.
    pub(crate) fn top_up(&mut self, end: u64) -> bool {
        let Some(w) = self.window.as_mut().filter(|w| w.on) else {
            return false;
        };
        if end <= w.opened_len
            || w.filled_to >= end + w.size / 2
            || self
                .queue
                .iter()
                .any(|p| matches!(p.change, SizeChange::ZeroFill { .. }))
        {
            return false;
        }
        let from = w.filled_to.max(align_up(end, w.align));
        let to = align_up(end + w.size, w.align).min(from + ZEROS_LEN as u64);
        if to <= from {
            return false;
        }
        w.filled_to = to;
        self.queue.push_back(Pending {
            change: SizeChange::ZeroFill {
                offset: from,
                len: to - from,
            },
            seq: None,
            in_flight: false,
        });
        true
    }

    /// A zero fill ended early: the file is filled up to `at` only.
    pub(crate) fn filled_only_to(&mut self, at: u64) {
        if let Some(w) = &mut self.window {
            w.filled_to = w.filled_to.min(at);
        }
    }

    /// The file system refused a zero fill: no more preallocation. How much of it was
    /// written is unknown, so `filled_to` keeps covering it and `close` trims it.
    pub(crate) fn stop_preallocating(&mut self) {
        if let Some(w) = &mut self.window {
            w.on = false;
        }
    }

    /// At close, once nothing else is pending: queues a truncate back to `end` if the
    /// file was filled past it, and ends preallocation; returns whether it did.
    pub(crate) fn trim(&mut self, end: u64) -> bool {
        let Some(w) = self.window.take() else {
            return false;
        };
        if w.filled_to <= end {
            return false;
        }
        self.truncate(end, None);
        true
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
            let (from, to) = p.change.range(self.block, self.direct);
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
                SizeChange::Punch { .. } | SizeChange::ZeroFill { .. } => None,
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
        Some((p.change, p.change.range(self.block, self.direct)))
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
        let mut b = Barriers::new(4096, Some(4096), 0, 0);
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
        let mut b = Barriers::new(100, None, 0, 0);
        assert_eq!(b.stale_from(), u64::MAX);
        b.truncate(1000, Some(7));
        b.truncate(500, Some(9));
        assert_eq!((b.stale_from(), b.min_seq()), (500, Some(7)));
        assert!(b.holds(400, 600) && !b.holds(0, 500));
        let mut blocks = Barriers::new(4096, None, 0, 0);
        blocks.truncate(1000, Some(1));
        assert_eq!(
            blocks.next().unwrap().1,
            (0, u64::MAX),
            "the new end's whole block"
        );
        let mut direct = Barriers::new(100, None, 0, 0).direct(true);
        direct.truncate(1000, Some(1));
        assert!(
            direct.holds(0, 1),
            "with direct I/O a truncate holds every write"
        );
        b.issued();
        b.completed();
        assert_eq!((b.stale_from(), b.min_seq()), (500, Some(9)));
    }

    #[test]
    fn the_window_is_topped_up_at_half_and_trimmed_at_close() {
        let mut b = Barriers::new(4096, None, 64 << 10, 1000);
        assert!(!b.top_up(1000), "not before the file grows");
        assert!(b.top_up(1001));
        assert!(!b.top_up(2000), "one fill at a time");
        let (fill, range) = b.next().unwrap();
        assert_eq!(
            fill,
            SizeChange::ZeroFill {
                offset: 4096,
                len: 65536
            },
            "from the end rounded up to a page, to end + window rounded up"
        );
        assert!(b.holds(5000, 5001) && !b.holds(0, 4096));
        assert_eq!(range, (4096, 69632));
        b.issued();
        b.completed();
        assert!(
            !b.top_up(30_000),
            "more than half the window is still ready"
        );
        assert!(b.top_up(40_000));
        b.issued();
        b.completed();
        b.truncate(10_000, Some(3));
        assert!(b.top_up(10_000), "a shrink cut the filled space");
        b.issued();
        b.completed();
        b.issued();
        b.completed();
        assert!(b.trim(12_000) && !b.is_empty());
        assert_eq!(b.next().unwrap().0, SizeChange::Truncate(12_000));
        assert_eq!(b.min_seq(), None, "nobody waits for the trim");
        b.issued();
        b.completed();
        assert!(
            !b.trim(12_000) && !b.top_up(12_000),
            "preallocation ends at close"
        );
    }
}
