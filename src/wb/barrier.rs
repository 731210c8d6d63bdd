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
//! with one more `ftruncate`. Space a growing `set_len` added below the end is filled the
//! same way, ahead of the writes into it (see [`Grown`]).
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
    /// Space a `set_len` grew the file by that nothing has written or filled yet.
    grown: Option<Grown>,
}

/// The space a growing `set_len` added below the logical end, filled with zeros ahead of
/// the writes into it. `ftruncate` leaves a hole there, and the first write into a hole
/// allocates its blocks, which the next `fdatasync` must write back as metadata: every
/// commit of an engine that grows its file with `set_len` and then writes into the new
/// space (redb) would pay for it. Filled (and made durable by some earlier sync), those
/// writes are overwrites.
///
/// `[lo, hi)` has been neither written nor queued to be filled since the `set_len`: only
/// such bytes are ever filled, so a fill never lands on a caller's bytes (a write into the
/// range shrinks it at once, under the state lock; a write into a fill already queued
/// waits for the fill, as for any size change). Fills run from `lo` upwards, at most a
/// window ahead of `cursor`, the end of the last write into the filled space: redb fills
/// its new space from the bottom up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grown {
    lo: u64,
    hi: u64,
    cursor: u64,
}

impl Grown {
    /// A write of `[off, end)`: takes it out of `[lo, hi)`, keeping the larger side when
    /// it lands inside, and moves the cursor. A write more than `window` above `lo` is a
    /// jump, not the next page of a bottom-up fill: it moves `lo` past it but not the
    /// cursor, so a random writer into a large grown file does not get a fill after each
    /// write. `None` when nothing is left.
    fn written(mut self, off: u64, end: u64, window: u64) -> Option<Grown> {
        if off < self.lo && end > self.cursor && end <= self.lo {
            self.cursor = end;
        }
        if end > self.lo && off < self.hi {
            if off.saturating_sub(self.lo) >= self.hi.saturating_sub(end) {
                self.hi = off;
            } else {
                if off < self.lo + window {
                    self.cursor = end;
                }
                self.lo = end;
            }
        }
        (self.lo < self.hi).then_some(self)
    }
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
                grown: None,
            }),
        }
    }

    /// The file is open with `O_DIRECT`: truncates and zero fills become whole-file
    /// barriers (see `SizeChange::range`).
    pub(crate) fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// The file is open with `O_DIRECT`.
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Queues a truncate to `len`, taking write sequence number `seq` (`None`: a trim
    /// nobody waits for).
    pub(crate) fn truncate(&mut self, len: u64, seq: Option<u64>) {
        if let Some(w) = &mut self.window {
            w.filled_to = w.filled_to.min(len);
            let hi = len / w.align * w.align;
            w.grown = w
                .grown
                .map(|g| Grown {
                    hi: g.hi.min(hi),
                    ..g
                })
                .filter(|g| g.lo < g.hi);
        }
        self.queue.push_back(Pending {
            change: SizeChange::Truncate(len),
            seq,
            in_flight: false,
        });
    }

    /// A `set_len` grew the file from `old_end` to `len`, after its truncate was queued:
    /// the new space not filled yet is to be filled ahead of the writes into it (see
    /// [`Grown`]). Not with direct I/O, where a fill holds back every write.
    pub(crate) fn grow(&mut self, old_end: u64, len: u64) {
        let direct = self.direct;
        let Some(w) = self.window.as_mut().filter(|w| w.on && !direct) else {
            return;
        };
        let lo = align_up(old_end.max(w.filled_to.min(len)), w.align);
        let hi = len / w.align * w.align;
        if lo >= hi {
            return;
        }
        w.grown = match w.grown {
            // Contiguous with the space still to fill from an earlier growth.
            Some(g) if g.hi >= lo => Some(Grown { hi, ..g }),
            _ => Some(Grown { lo, hi, cursor: lo }),
        };
    }

    /// A caller's write of `[off, end)` was stored: no fill may land on it.
    pub(crate) fn written(&mut self, off: u64, end: u64) {
        if let Some(w) = &mut self.window {
            w.grown = w.grown.and_then(|g| g.written(off, end, w.size));
        }
    }

    /// Everything below `start` is gone: nothing to fill there.
    fn drop_below(&mut self, start: u64) {
        if let Some(w) = &mut self.window {
            w.grown = w.grown.and_then(|g| {
                let lo = g.lo.max(align_up(start, w.align));
                (lo < g.hi).then_some(Grown {
                    lo,
                    cursor: g.cursor.max(lo),
                    ..g
                })
            });
        }
    }

    /// Queues a zero fill when no fill is pending and either less than half the window
    /// is ready past `end`, or the writes into space a `set_len` grew came within half a
    /// window of its unfilled part (see [`Grown`]); returns whether it did.
    pub(crate) fn top_up(&mut self, end: u64) -> bool {
        if self
            .queue
            .iter()
            .any(|p| matches!(p.change, SizeChange::ZeroFill { .. }))
        {
            return false;
        }
        self.top_up_window(end) || self.top_up_grown()
    }

    /// The fill of [`top_up`](Self::top_up) below the end.
    fn top_up_grown(&mut self) -> bool {
        let Some(w) = self.window.as_mut().filter(|w| w.on) else {
            return false;
        };
        let Some(g) = w.grown.filter(|g| g.lo < g.cursor + w.size / 2) else {
            return false;
        };
        let to = g.hi.min(g.lo + w.size.clamp(w.align, ZEROS_LEN as u64));
        w.grown = (to < g.hi).then_some(Grown { lo: to, ..g });
        self.queue.push_back(Pending {
            change: SizeChange::ZeroFill {
                offset: g.lo,
                len: to - g.lo,
            },
            seq: None,
            in_flight: false,
        });
        true
    }

    /// The fill of [`top_up`](Self::top_up) past the end.
    fn top_up_window(&mut self, end: u64) -> bool {
        let Some(w) = self.window.as_mut().filter(|w| w.on) else {
            return false;
        };
        if end <= w.opened_len || w.filled_to >= end + w.size / 2 {
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

    /// A zero fill ended early: the file is filled up to `at` only. (For a fill below the
    /// end, of grown space, this lowers the window's mark below the end: the window is
    /// then filled again from the end, zeros over zeros, which costs a write and nothing
    /// else. The rest of that fill stays a hole.)
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
        self.drop_below(start);
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

    #[test]
    fn space_grown_by_set_len_is_filled_ahead_of_the_writes_and_never_over_them() {
        const MB: u64 = 1 << 20;
        let fill = |b: &Barriers| match b.next() {
            Some((SizeChange::ZeroFill { offset, len }, _)) => Some((offset, offset + len)),
            _ => None,
        };
        let done = |b: &mut Barriers| {
            b.issued();
            b.completed();
        };
        let mut b = Barriers::new(4096, None, MB, 0);
        // The file grows from 8 MiB to 16 MiB: the truncate first, then the new space.
        b.truncate(16 * MB, Some(1));
        b.grow(8 * MB, 16 * MB);
        assert!(b.top_up(16 * MB), "the window's fill comes first");
        assert_eq!(b.next().unwrap().0, SizeChange::Truncate(16 * MB));
        done(&mut b);
        assert_eq!(fill(&b), Some((16 * MB, 17 * MB)), "past the end");
        done(&mut b);
        assert!(b.top_up(16 * MB));
        assert_eq!(
            fill(&b),
            Some((8 * MB, 9 * MB)),
            "then the grown space, bottom up"
        );
        assert!(
            b.holds(8 * MB + 4096, 8 * MB + 8192),
            "a write into it waits"
        );
        done(&mut b);
        assert!(!b.top_up(16 * MB), "a window ahead of the writes");
        b.written(8 * MB + 600_000, 8 * MB + 604_096);
        assert!(b.top_up(16 * MB), "the writes came within half a window");
        assert_eq!(fill(&b), Some((9 * MB, 10 * MB)));
        done(&mut b);
        // A write into the unfilled space: only the larger side of it is filled later.
        b.written(10 * MB + 4096, 10 * MB + 8192);
        assert!(b.top_up(16 * MB));
        assert_eq!(fill(&b), Some((10 * MB + 8192, 11 * MB + 8192)));
        done(&mut b);
        b.written(15 * MB, 15 * MB + 4096);
        b.written(11 * MB + 8192, 11 * MB + 12288);
        assert!(b.top_up(16 * MB));
        assert_eq!(fill(&b), Some((11 * MB + 12288, 12 * MB + 12288)));
        done(&mut b);
        // A write far above the unfilled part's bottom is a jump: the space below it
        // stays a hole, and nothing is filled until the writes come near the new bottom.
        let mut r = Barriers::new(4096, None, MB, 0);
        r.truncate(64 * MB, Some(1));
        r.grow(0, 64 * MB);
        done(&mut r);
        assert!(r.top_up(64 * MB));
        done(&mut r); // the window past the end
        assert!(r.top_up(64 * MB));
        assert_eq!(
            fill(&r),
            Some((0, MB)),
            "the first window of the grown space"
        );
        done(&mut r);
        r.written(10 * MB, 10 * MB + 4096);
        assert!(!r.top_up(64 * MB), "no fill after a jump");
        r.written(10 * MB + 4096, 10 * MB + 8192);
        assert!(r.top_up(64 * MB), "the writes go on from the new bottom");
        assert_eq!(fill(&r), Some((10 * MB + 8192, 11 * MB + 8192)));
        // A shrink cuts what is left.
        b.truncate(13 * MB, Some(2));
        done(&mut b);
        assert!(b.top_up(13 * MB));
        assert_eq!(
            fill(&b),
            Some((13 * MB, 14 * MB)),
            "the window past the new end first"
        );
        done(&mut b);
        b.written(12 * MB, 12 * MB + 12288);
        assert!(b.top_up(13 * MB));
        assert_eq!(
            fill(&b),
            Some((12 * MB + 12288, 13 * MB)),
            "cut at the new end"
        );
        done(&mut b);
        assert!(!b.top_up(13 * MB), "the grown space is used up");
        // Growing again: from where the window's zeros end.
        b.truncate(20 * MB, Some(3));
        b.grow(13 * MB, 20 * MB);
        done(&mut b);
        assert!(b.top_up(20 * MB));
        done(&mut b);
        assert!(b.top_up(20 * MB));
        assert_eq!(fill(&b), Some((14 * MB, 15 * MB)));
        // Moving the start up drops the space below it; direct I/O never fills it.
        let mut c = Barriers::new(4096, Some(4096), MB, 0);
        c.truncate(4 * MB, Some(1));
        c.grow(0, 4 * MB);
        done(&mut c);
        assert!(c.punch_below(2 * MB));
        done(&mut c);
        assert!(c.top_up(4 * MB));
        done(&mut c);
        assert!(c.top_up(4 * MB));
        assert_eq!(fill(&c), Some((2 * MB, 3 * MB)), "from the start on");
        let mut d = Barriers::new(4096, None, MB, 0).direct(true);
        d.truncate(4 * MB, Some(1));
        d.grow(0, 4 * MB);
        done(&mut d);
        assert!(d.top_up(4 * MB));
        assert_eq!(fill(&d), Some((4 * MB, 5 * MB)));
        done(&mut d);
        assert!(!d.top_up(4 * MB));
    }
}
