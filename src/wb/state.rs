//! The write-back state machine, guarded by the handle's one state lock.
//!
//! Callers install blocks and register force waiters; the submission thread asks
//! [`State::plan`] what to send and feeds completions to [`State::complete`]. Nothing
//! here touches a ring or a file, so the whole protocol is testable with fake
//! completions.
//!
//! Sequence numbers: every installed write gets the next `seq`. A block remembers the
//! oldest seq whose bytes it holds unwritten; a write op remembers the oldest of its
//! blocks. So "every write with seq < min_pending() has reached the file", and a sync
//! pushed at that moment makes them all durable.

use std::collections::BTreeMap;
use std::io;
use std::task::Waker;
use std::thread::Thread;
use std::time::{Duration, Instant};

use slab::Slab;

use super::barrier::{Barriers, SizeOp};
use super::engine::backend::SizeChange;
use super::index::Index;
use super::pool::BufRef;
use crate::config::SyncMode;
use crate::error::{duplicate, os};
use crate::stats::{record, BackendKind, Stats};

/// Most iovecs in one vectored write (Linux `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;
/// Resubmissions of one write that made no progress before it is declared failed.
const MAX_RETRIES: u32 = 64;
/// How long the submitter waits before pushing again a write the engine refused.
const RESUBMIT_PAUSE: Duration = Duration::from_millis(1);
/// Dirty blocks at which write-back of a direct file starts early, below the watermark
/// and before any force, when they could not go out as one lead anyway (see `eager`):
/// scattered pages then reach the device while the writer fills the rest, instead of all
/// at the force. Well above a lead's runs, so a commit small enough to lead is left to
/// its forcer.
pub(crate) const EAGER_BLOCKS: usize = 64;

/// Fixed settings the planner needs.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub queue_depth: usize,
    pub max_write_bytes: u64,
    pub watermark: u64,
    pub max_dirty_age: Duration,
    /// Direct-I/O alignment (short writes resume at a multiple of it); 1 when buffered.
    pub align: u64,
    /// The sync an engine links behind a write (`Config::sync`).
    pub sync: SyncMode,
}

/// A request the submission thread must hand to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Write {
        op: usize,
        linked_sync: Option<usize>,
    },
    Sync {
        op: usize,
    },
    /// A size change (see `barrier.rs`).
    Size {
        op: usize,
    },
}

/// Most separate runs of dirty blocks a forcer writes on its own thread (one `pwritev`
/// each, one after another); more, and the submitter writes them in parallel on the engine
/// instead. A buffered `pwritev` is a copy into the page cache, so a commit of a B-tree
/// engine (redb writes 6-11 separate ranges per commit) still leads; a direct one waits for
/// the device, so few are worth writing in series.
const LEAD_RUNS_BUFFERED: usize = 16;
/// [`LEAD_RUNS_BUFFERED`] with direct I/O.
const LEAD_RUNS_DIRECT: usize = 4;

/// What a forcer does next, from [`State::next_step`].
pub(crate) enum Next {
    /// Run this commit on the caller's thread, then [`State::finish_lead`].
    Lead(Lead),
    /// Park until this instant (the group-commit hold), then look again.
    Wait(Instant),
    /// Park: a completion will wake this forcer.
    Park,
    /// The submitter must write (too much dirty data, or a resubmission): wake it, park.
    WakeSubmitter,
}

/// A commit a forcer runs on its own thread: every dirty block (as vectored writes),
/// then one sync, only if every write completed in full (as an `IO_LINK` chain).
pub(crate) struct Lead {
    pub writes: Vec<LeadWrite>,
    /// What each write returned, in order (filled by `lead::run`).
    pub results: Vec<i32>,
    pub sync: usize,
    /// `fdatasync`, or `fsync` when a waiter served needs it.
    pub mode: SyncMode,
    /// Wake the submitter first: it has a size change to issue (a preallocation fill).
    pub wake_submitter: bool,
}

/// One write of a [`Lead`]. The iovecs point into buffers its op holds in the state
/// until [`State::finish_lead`] applies the result.
pub(crate) struct LeadWrite {
    op: usize,
    pub offset: u64,
    /// Bytes to write (the iovecs' total).
    pub len: u64,
    pub iov: *const libc::iovec,
    pub iovcnt: usize,
}

/// The pieces of buffers a write sends: (buffer, start in buffer, length).
type Segments = Vec<(BufRef, usize, usize)>;

/// The iovec array of a write in flight.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the iovecs point into pooled buffers (`BufRef`) owned by the same `WriteOp`, at
// bytes below the buffers' filled lengths, which are never written while shared (extents
// grow only past them), and the buffers are `Send + Sync`; the raw pointers carry no
// thread affinity.
unsafe impl Send for IoVecs {}

pub(crate) struct WriteOp {
    pub offset: u64,
    pub len: u64,
    done: u64,
    /// (buffer, start in buffer, length): keeps the memory alive until the completion.
    segs: Segments,
    /// The iovecs of what remains to write; stable while in flight.
    iov: IoVecs,
    seq: u64,
    retries: u32,
    pushed_at: Instant,
    /// Being written by a forcer on its own thread (a [`Lead`]), not by the engine.
    caller: bool,
}

impl WriteOp {
    /// The iovec array to submit.
    pub(crate) fn iovecs(&self) -> &[libc::iovec] {
        &self.iov.0
    }

    /// The file offset of the first unwritten byte.
    pub(crate) fn next_offset(&self) -> u64 {
        self.offset + self.done
    }

    fn rebuild_iovecs(&mut self) {
        self.iov.0.clear();
        let mut skip = self.done as usize;
        for (buf, start, len) in &self.segs {
            if skip >= *len {
                skip -= len;
                continue;
            }
            let bytes = &buf.as_slice()[start + skip..start + len];
            self.iov.0.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            skip = 0;
        }
    }
}

/// Vectors of finished ops and leads, empty, kept with their capacity (`State::spare`).
#[derive(Default)]
struct Spare {
    /// A run's `WriteOp::segs` and iovecs.
    runs: Vec<(Segments, Vec<libc::iovec>)>,
    lead_writes: Vec<LeadWrite>,
    lead_results: Vec<i32>,
    served: Vec<usize>,
}

impl Spare {
    /// Whether every vector kept is empty (what makes `Spare` `Send`).
    fn is_empty(&self) -> bool {
        self.runs.iter().all(|(s, i)| s.is_empty() && i.is_empty())
            && self.lead_writes.is_empty()
            && self.lead_results.is_empty()
            && self.served.is_empty()
    }
}

/// Runs kept in [`Spare`]: enough for the writes in flight of a usual pass.
const SPARE_RUNS: usize = 32;

// SAFETY: every vector in a `Spare` is empty (`State::recycle_run`, `finish_lead` and
// `next_step` clear them before they are kept), so no iovec or `LeadWrite` pointer is
// held; what moves between threads is only capacity.
unsafe impl Send for Spare {}

pub(crate) struct SyncOp {
    /// Every write with seq below this had completed when the sync was pushed (or will
    /// have, for a linked sync, if it runs at all).
    covers: u64,
    /// `fdatasync` or `fsync`.
    mode: SyncMode,
    /// `State::changes` when it was pushed: an `fsync` covers that many.
    changes: u64,
    pushed_at: Instant,
    /// Run by a forcer on its own thread (a [`Lead`]), not by the engine.
    caller: bool,
}

pub(crate) enum Op {
    Write(WriteOp),
    Sync(SyncOp),
    Size(SizeOp),
}

/// How a force waiter is woken: a parked thread, a blocking forcer asleep on the
/// handle's bell (`bell.rs`; its bit is set when the waiter is added), or an async
/// forcer's task.
#[derive(Clone)]
pub(crate) enum Notify {
    Thread(Thread),
    Bell(u32),
    Task(Waker),
}

impl Notify {
    /// Wakes the forcer, or adds its bit to `ring` for one bell ring of all. Called once
    /// the state lock is released (see [`State::take_wakes`]), so the forcer does not wake
    /// into a held lock.
    pub(crate) fn wake(&self, ring: &mut u32) {
        match self {
            Notify::Thread(t) => t.unpark(),
            Notify::Bell(bit) => *ring |= bit,
            Notify::Task(w) => w.wake_by_ref(),
        }
    }
}

impl From<Thread> for Notify {
    fn from(t: Thread) -> Self {
        Notify::Thread(t)
    }
}

impl From<Waker> for Notify {
    fn from(w: Waker) -> Self {
        Notify::Task(w)
    }
}

struct ForceWaiter {
    target: u64,
    range: Option<(u64, u64)>,
    /// `Data` is served by any successful sync; `All` only by an `fsync`.
    mode: SyncMode,
    notify: Notify,
    sync: Option<usize>,
    result: Option<io::Result<()>>,
}

/// Everything behind the state lock.
pub(crate) struct State {
    pub index: Index,
    ops: Slab<Op>,
    /// Write ops in flight by start offset (they never overlap) -> end.
    inflight: BTreeMap<u64, u64>,
    writes_inflight: usize,
    /// Of `writes_inflight`, those a leading forcer writes on its own thread.
    caller_writes: usize,
    sync_inflight: Option<usize>,
    resubmit: Vec<usize>,
    waiters: Slab<ForceWaiter>,
    /// The seq of the newest installed write.
    pub last_seq: u64,
    /// Every write with seq below this is durable.
    durable: u64,
    /// Changes to the file that an `fsync` (all metadata) must cover: write completions
    /// so far, plus one for whatever the file went through before this handle.
    changes: u64,
    /// The `changes` covered by the newest successful `fsync`: `sync_all` must sync
    /// while this is behind, even when every write is durable by `fdatasync`.
    fsynced: u64,
    /// The latched error (errno): writes and forces fail with it from now on.
    pub failed: Option<i32>,
    pub closing: bool,
    /// The submitter waits with nothing in flight: only a wake-up or its timer rouses it.
    pub sleeping: bool,
    /// The submitter's wait has a timer of at most `max_dirty_age`: new dirty data need
    /// not wake it, the timer comes back in time to start its age clock.
    pub timed_sleep: bool,
    /// Forcers to wake once the lock is released (`take_wakes`).
    to_wake: Vec<Notify>,
    /// Emptied vectors kept for reuse, so that a commit allocates no bookkeeping of its
    /// own (tests/no_alloc.rs): a run's buffers and iovecs, a lead's writes and
    /// results, and the waiters a lead serves.
    spare: Spare,
    /// A wake-up was sent and the submitter has not run since.
    pub wake_sent: bool,
    /// The packing buffer writes that continue no extent are copied into, side by side,
    /// while it has room (`pack`): one pool buffer for many small writes.
    packing: Option<BufRef>,
    dirty_since: Option<Instant>,
    /// When the last pass saw a forcer waiting, and the engine's writes in flight then
    /// (`sample_queue`).
    queue_sample: Option<(Instant, u64)>,
    /// The last `plan` left writes in flight on the engine: the completions applied
    /// before the next one ended a stream, not a quiet spell (see `eager`).
    streaming: bool,
    /// A write that brings the dirty blocks to `EAGER_BLOCKS` may wake the submitter
    /// (see `installed`).
    eager_armed: bool,
    cursor: u64,
    /// Group commit: forcers served by the last sync plus those already waiting for the
    /// next one, and until when the next sync may wait for that many to be ready.
    expected_group: usize,
    gather_until: Option<Instant>,
    /// When the forcer keeping the hold's deadline wakes to look (see `complete_sync`).
    watch_until: Instant,
    /// The forcer that keeps the group-commit hold's deadline (a timed wait); the
    /// others wait without a timer. Cleared when a sync starts.
    hold_watcher: Option<usize>,
    pub start: u64,
    pub end: u64,
    /// Size changes not yet completed (`set_len`, hole punches).
    pub barriers: Barriers,
    pub stats: Stats,
    /// `Mutation::SyncSubmitted` (a deliberate bug for tests): writes in flight count as
    /// written when planning a sync.
    #[cfg(feature = "fault-injection")]
    pub sync_submitted: bool,
}

impl State {
    pub(crate) fn new(start: u64, end: u64, backend: BackendKind, barriers: Barriers) -> Self {
        State {
            index: Index::default(),
            ops: Slab::new(),
            inflight: BTreeMap::new(),
            writes_inflight: 0,
            caller_writes: 0,
            sync_inflight: None,
            resubmit: Vec::new(),
            waiters: Slab::new(),
            last_seq: 0,
            durable: 1,
            changes: 1,
            fsynced: 0,
            failed: None,
            closing: false,
            sleeping: false,
            timed_sleep: false,
            to_wake: Vec::new(),
            spare: Spare::default(),
            wake_sent: false,
            packing: None,
            dirty_since: None,
            queue_sample: None,
            streaming: false,
            eager_armed: true,
            cursor: 0,
            expected_group: 1,
            gather_until: None,
            watch_until: Instant::now(),
            hold_watcher: None,
            start,
            end,
            barriers,
            stats: Stats::new(backend),
            #[cfg(feature = "fault-injection")]
            sync_submitted: false,
        }
    }

    /// Fails with the latched error, if any.
    pub(crate) fn check_failed(&self) -> io::Result<()> {
        match self.failed {
            Some(code) => Err(os(code)),
            None => Ok(()),
        }
    }

    /// Stores a write (already copied into `buf`) and says whether the submitter must be
    /// woken: when dirty data appears while it sleeps without a timer that comes back
    /// within the dirty age (to start its age clock), or when dirty bytes cross the
    /// watermark. `now` is called only when the age clock starts.
    pub(crate) fn install(
        &mut self,
        off: u64,
        buf: BufRef,
        watermark: u64,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        let len = buf.as_slice().len() as u64;
        self.last_seq += 1;
        self.index.insert(off, len, buf, self.last_seq);
        self.installed(off, len, watermark, now)
    }

    /// Stores a write that continues the dirty extent ending at `off` by copying it into
    /// that extent's buffer (`Index::try_extend`). `None` (nothing changed) when no such
    /// extent has room; otherwise whether to wake the submitter, as for `install`.
    pub(crate) fn extend(
        &mut self,
        off: u64,
        data: &[u8],
        watermark: u64,
        now: impl FnOnce() -> Instant,
    ) -> Option<bool> {
        // A dirty extent keeps its older unwritten seq; this write still gets its own
        // (the seq of its new block when the extent is in flight), so a force
        // registered after it targets it.
        if !self.index.try_extend(off, data, self.last_seq + 1) {
            return None;
        }
        self.last_seq += 1;
        self.stats.extended_writes += 1;
        Some(self.installed(off, data.len() as u64, watermark, now))
    }

    /// Stores a write by copying it into the packing buffer, right after its filled
    /// bytes, as a new block over that window: no pool buffer of its own. `None`
    /// (nothing changed) when there is no packing buffer with room for it; otherwise
    /// whether to wake the submitter, as for `install`.
    pub(crate) fn pack(
        &mut self,
        off: u64,
        data: &[u8],
        watermark: u64,
        now: impl FnOnce() -> Instant,
    ) -> Option<bool> {
        let buf = self.packing.as_ref().filter(|b| b.room() >= data.len())?;
        let at = buf.filled();
        // SAFETY: `&mut self` is the state lock, which serializes every append (extents
        // grow under it too); `room() >= data.len()`.
        unsafe { buf.append(data) };
        let buf = buf.clone();
        let len = data.len() as u64;
        self.last_seq += 1;
        self.index.insert_at(off, len, buf, at, self.last_seq);
        self.stats.packed_writes += 1;
        Some(self.installed(off, len, watermark, now))
    }

    /// Stops packing into the current packing buffer; returns the reference to drop
    /// after the lock is released (it may be the last one: the buffer returns to the
    /// pool).
    pub(crate) fn release_packing(&mut self) -> Option<BufRef> {
        self.packing.take()
    }

    /// [`install`](State::install) of a new packing buffer (holding this write, with
    /// room for more): later writes go into it by [`pack`](State::pack).
    pub(crate) fn install_packing(
        &mut self,
        off: u64,
        buf: BufRef,
        watermark: u64,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        self.packing = Some(buf.clone());
        self.install(off, buf, watermark, now)
    }

    /// What every way of storing a write (`install`, `extend`, `pack`) does after the
    /// index took `[off, off + len)`: the size-change barriers learn of the bytes (a
    /// zero fill of grown space must not land on them), then the end and the wake-up.
    fn installed(
        &mut self,
        off: u64,
        len: u64,
        watermark: u64,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        self.barriers.written(off, off + len);
        self.check_invariants();
        self.end = self.end.max(off + len);
        self.stats.bytes_requested += len;
        let first_dirty = self.dirty_since.is_none();
        if first_dirty {
            self.dirty_since = Some(now());
        }
        let age_clock = first_dirty && !self.timed_sleep;
        // Once as the dirty blocks reach `EAGER_BLOCKS`, then not again before a pass
        // saw fewer: a wake per write (or rewrite) while `plan` finds them fit for a
        // lead would cost a syscall each.
        let eager = self.eager_armed
            && self.barriers.is_direct()
            && self.index.dirty_count() >= EAGER_BLOCKS;
        self.eager_armed &= !eager;
        self.wants_wake(age_clock || eager || self.index.dirty_bytes() >= watermark)
    }

    /// Checks the block model's invariants after a transition (debug builds; the full
    /// walks only while the index and the ops are small): the index's own, and that no
    /// write in flight references bytes past its buffers' filled length (which an
    /// extent's growth may write).
    pub(crate) fn check_invariants(&self) {
        self.index.check_invariants();
        debug_assert!(self.spare.is_empty(), "a spare vector holds something");
        #[cfg(debug_assertions)]
        if self.ops.len() <= 256 {
            for (_, op) in &self.ops {
                if let Op::Write(w) = op {
                    for (buf, start, len) in &w.segs {
                        assert!(start + len <= buf.filled(), "op references unfilled bytes");
                    }
                }
            }
            if self.waiters.len() <= 256 {
                self.check_ledger();
            }
        }
    }

    /// The ops in flight and the force waiters against what sums them up (part of
    /// [`check_invariants`](State::check_invariants)): at most one write in flight per
    /// byte range, in-flight counts that match the ops, every waiter pending or decided,
    /// and no pending write older than what syncs made durable.
    #[cfg(debug_assertions)]
    fn check_ledger(&self) {
        let mut prev_end = 0;
        for (&start, &end) in &self.inflight {
            assert!(start >= prev_end, "writes in flight overlap at {start}");
            assert!(end > start, "empty write in flight at {start}");
            prev_end = end;
        }
        // (No allocation here: tests/no_alloc.rs counts a debug build's commits too.)
        let (mut writes, mut callers, mut syncs, mut sync) = (0, 0, 0, None);
        for (k, op) in &self.ops {
            match op {
                Op::Write(w) => {
                    writes += 1;
                    callers += usize::from(w.caller);
                    assert_eq!(
                        self.inflight.get(&w.offset),
                        Some(&(w.offset + w.len)),
                        "write op {k} is not the one in flight at {}",
                        w.offset
                    );
                }
                Op::Sync(_) => (syncs, sync) = (syncs + 1, Some(k)),
                Op::Size(_) => {}
            }
        }
        assert_eq!(writes, self.inflight.len(), "in-flight ranges vs write ops");
        assert_eq!(writes, self.writes_inflight, "writes_inflight vs write ops");
        assert_eq!(
            callers, self.caller_writes,
            "caller_writes vs leaders' write ops"
        );
        assert_eq!(
            (syncs, sync),
            (
                usize::from(self.sync_inflight.is_some()),
                self.sync_inflight
            ),
            "sync_inflight vs sync ops"
        );
        for &k in &self.resubmit {
            assert!(
                matches!(self.ops.get(k), Some(Op::Write(_))),
                "resubmission of op {k}, not a write in flight"
            );
        }
        for (k, w) in &self.waiters {
            if w.result.is_some() {
                continue;
            }
            assert!(
                self.failed.is_none(),
                "waiter {k} has no result on a failed handle"
            );
            if let Some(sync) = w.sync {
                assert_eq!(
                    self.sync_inflight,
                    Some(sync),
                    "waiter {k} waits for sync op {sync}, which is not in flight"
                );
            }
        }
        if let Some(k) = self.hold_watcher {
            assert!(self.waiters.contains(k), "hold watcher {k} is no waiter");
        }
        #[cfg(feature = "fault-injection")]
        let mutated = self.sync_submitted;
        #[cfg(not(feature = "fault-injection"))]
        let mutated = false;
        if self.failed.is_none() && !mutated {
            let oldest = self.min_pending(None, None);
            assert!(
                oldest >= self.durable,
                "seq {oldest} is still pending but below durable {}",
                self.durable
            );
        }
    }

    /// Registers a force waiter for writes up to now; `None` when already durable (and,
    /// for `SyncMode::All`, when no change happened since the last `fsync`).
    pub(crate) fn add_waiter(
        &mut self,
        range: Option<(u64, u64)>,
        mode: SyncMode,
        notify: impl Into<Notify>,
    ) -> Option<usize> {
        let synced = mode == SyncMode::Data || self.fsynced >= self.changes;
        if self.durable > self.last_seq && synced {
            self.stats.forces_immediate += 1;
            return None;
        }
        let engine_writes = (self.writes_inflight - self.caller_writes) as u64;
        self.stats
            .writes_in_flight_at_force
            .saturating_record(engine_writes);
        let entry = self.waiters.vacant_entry();
        let key = entry.key();
        let notify = match notify.into() {
            Notify::Bell(_) => Notify::Bell(super::bell::bit(key)),
            n => n,
        };
        entry.insert(ForceWaiter {
            target: self.last_seq,
            range,
            mode,
            notify,
            sync: None,
            result: None,
        });
        Some(key)
    }

    /// An async forcer polled again: keep its newest waker.
    pub(crate) fn set_waker(&mut self, key: usize, waker: &Waker) {
        if let Notify::Task(w) = &mut self.waiters[key].notify {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    /// Removes a waiter whose forcer gave up (a dropped future), result or not. If it
    /// may have been the one woken to lead the next group, the next waiter is woken in
    /// its place, so no wake is lost.
    pub(crate) fn withdraw(&mut self, key: usize) {
        self.waiters.remove(key);
        if self.hold_watcher == Some(key) {
            self.hold_watcher = None;
        }
        self.hand_on();
    }

    /// With no sync in flight, wakes the first forcer still waiting for one: it leads
    /// the next group, or hands it to the submitter.
    fn hand_on(&mut self) {
        if self.sync_inflight.is_some() || self.failed.is_some() {
            return;
        }
        if let Some((_, w)) = self
            .waiters
            .iter()
            .find(|(_, w)| w.sync.is_none() && w.result.is_none())
        {
            self.to_wake.push(w.notify.clone());
        }
    }

    /// The forcers whose waiters changed (a result, or their turn to lead) since the
    /// last call: the caller wakes them after releasing the lock.
    ///
    /// They are swapped into `into` (empty), which leaves its capacity here: waking
    /// allocates nothing in steady state.
    pub(crate) fn take_wakes(&mut self, into: &mut Vec<Notify>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.to_wake, into);
    }

    /// Whether some forcer is to be woken (`take_wakes`).
    pub(crate) fn has_wakes(&self) -> bool {
        !self.to_wake.is_empty()
    }

    /// The waiter's result once decided (removing the waiter).
    pub(crate) fn take_result(&mut self, key: usize) -> Option<io::Result<()>> {
        let r = self.waiters[key].result.take()?;
        self.waiters.remove(key);
        Some(r)
    }

    /// Whether a caller that just changed something must wake the submitter (and note
    /// that it will).
    pub(crate) fn wants_wake(&mut self, useful: bool) -> bool {
        if useful && self.sleeping && !self.wake_sent {
            self.wake_sent = true;
            return true;
        }
        false
    }

    /// Moves the start up, dropping blocks wholly below it unwritten, and queues a hole
    /// punch of the whole file-system blocks below it. Returns whether to wake the
    /// submitter.
    pub(crate) fn truncate_start(&mut self, new_start: u64) -> bool {
        self.start = new_start;
        self.index.drop_below(new_start);
        if self.index.dirty_count() == 0 {
            self.dirty_since = None;
        }
        let punch = self.barriers.punch_below(new_start);
        self.check_invariants();
        self.wants_wake(punch)
    }

    /// Sets the length to `len` (`len >= start`, checked by the caller): a shrink drops
    /// the buffered bytes past it; either way an `ftruncate` is queued behind the writes
    /// it affects (see `barrier.rs`). It takes a write sequence number, so the next force
    /// makes it durable. Returns whether to wake the submitter.
    pub(crate) fn set_len(&mut self, len: u64) -> bool {
        debug_assert!(len >= self.start);
        if len == self.end {
            return false;
        }
        if len < self.end {
            self.index.drop_from(len);
            if self.index.dirty_count() == 0 {
                self.dirty_since = None;
            }
        }
        self.last_seq += 1;
        self.barriers.truncate(len, Some(self.last_seq));
        if len > self.end {
            self.barriers.grow(self.end, len);
        }
        self.end = len;
        self.check_invariants();
        self.wants_wake(true)
    }

    pub(crate) fn op(&self, key: usize) -> &Op {
        &self.ops[key]
    }

    /// `fdatasync` or `fsync`, for sync op `key`.
    pub(crate) fn sync_mode(&self, key: usize) -> SyncMode {
        match &self.ops[key] {
            Op::Sync(s) => s.mode,
            Op::Write(_) | Op::Size(_) => unreachable!("not a sync op"),
        }
    }

    /// True once closing and nothing is left to do (or can be done).
    pub(crate) fn finished(&self) -> bool {
        self.closing
            && self.writes_inflight == 0
            && self.sync_inflight.is_none()
            && self.resubmit.is_empty()
            && !self.barriers.in_flight()
            && ((self.index.dirty_count() == 0 && self.barriers.is_empty())
                || self.failed.is_some())
            && !self.waiters.iter().any(|(_, w)| w.result.is_none())
    }

    /// Writes in flight in the engine, and whether dirty data waits: how much of the
    /// engine's queue depth the file uses and whether it wants a share of it.
    pub(crate) fn queue_use(&self) -> (usize, bool) {
        (
            self.writes_inflight - self.caller_writes,
            self.index.dirty_count() > 0,
        )
    }

    /// Nothing is in flight in the engine, so only a wake-up or the timer will rouse the
    /// submitter. (Requests a leading forcer runs on its own thread bring no completion.)
    pub(crate) fn idle(&self) -> bool {
        let engine_sync = self
            .sync_inflight
            .is_some_and(|k| matches!(&self.ops[k], Op::Sync(s) if !s.caller));
        self.writes_inflight == self.caller_writes
            && !engine_sync
            && self.resubmit.is_empty()
            && !self.barriers.in_flight()
    }

    /// How long the submitter may wait: until dirty data becomes too old, a sync held
    /// back to gather a larger group must go out, or a write the engine refused is tried
    /// again. `None` (sleep until woken) when nothing has a deadline: an idle handle
    /// costs no CPU. A gather deadline that has passed, or that no waiter needs, gives
    /// no timer (`plan` has already acted on it or has nothing to act on).
    pub(crate) fn timeout(&self, lim: &Limits, now: Instant) -> Option<Duration> {
        if self.failed.is_some() {
            return None;
        }
        if !self.resubmit.is_empty() {
            // The engine refused these pushes (EAGAIN/EBUSY) after `plan` drained the
            // list: nothing in flight will wake us, so come back for them.
            return Some(RESUBMIT_PAUSE);
        }
        let dirty = self
            .dirty_since
            .filter(|_| self.index.dirty_count() > 0)
            .map(|t| t + lim.max_dirty_age);
        let gather = self
            .gather_until
            .filter(|&t| t > now && self.has_unassigned_waiter());
        let deadline = match (dirty, gather) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        deadline.map(|t| {
            t.saturating_duration_since(now)
                .max(Duration::from_micros(20))
        })
    }

    /// Some forcer waits for a sync not yet sent.
    fn has_unassigned_waiter(&self) -> bool {
        self.waiters
            .iter()
            .any(|(_, w)| w.sync.is_none() && w.result.is_none())
    }

    fn overlaps_inflight(&self, off: u64, end: u64) -> bool {
        self.inflight
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > off)
    }

    /// The oldest write seq not yet in the file, among blocks and write ops overlapping
    /// `range` (everything for `None`) and pending size changes, ignoring op `exclude`;
    /// `u64::MAX` when none.
    fn min_pending(&self, range: Option<(u64, u64)>, exclude: Option<usize>) -> u64 {
        self.min_in_flight(range, exclude)
            .min(self.index.min_dirty_seq(range).unwrap_or(u64::MAX))
    }

    /// [`min_pending`](State::min_pending) without the dirty blocks: the oldest seq among
    /// write ops overlapping `range` (but `exclude`) and size changes not yet completed.
    fn min_in_flight(&self, range: Option<(u64, u64)>, exclude: Option<usize>) -> u64 {
        #[cfg(feature = "fault-injection")]
        if self.sync_submitted {
            return u64::MAX;
        }
        let ops = self.ops.iter().filter_map(|(k, op)| match op {
            Op::Write(w) if Some(k) != exclude => {
                let hit = range.is_none_or(|(s, e)| w.offset < e && s < w.offset + w.len);
                hit.then_some(w.seq)
            }
            _ => None,
        });
        ops.chain(self.barriers.min_seq()).min().unwrap_or(u64::MAX)
    }

    /// Decides what to submit now: resubmissions, merged runs of dirty blocks, and a sync
    /// for force waiters whose writes are (or, linked, will be) complete.
    pub(crate) fn plan(
        &mut self,
        lim: &Limits,
        now: Instant,
        space_waiters: bool,
        out: &mut Vec<Push>,
    ) {
        self.wake_sent = false;
        for op in std::mem::take(&mut self.resubmit) {
            if let Op::Write(w) = &mut self.ops[op] {
                w.pushed_at = now;
            }
            self.stats.write_ops += 1;
            out.push(Push::Write {
                op,
                linked_sync: None,
            });
        }
        if self.failed.is_some() {
            return;
        }
        let waiting = self.has_unassigned_waiter();
        let old = self
            .dirty_since
            .is_some_and(|t| now.duration_since(t) >= lim.max_dirty_age);
        let flush = self.closing
            || waiting
            || space_waiters
            || old
            || self.writes_inflight > 0
            || self.index.dirty_bytes() >= lim.watermark
            || self.eager(lim);
        let mut new_ops = 0;
        let mut last_new = None;
        if flush {
            // An extent that can still grow waits while writes stream (their completions
            // bring the submitter back), unless something needs it now: sent half
            // filled, it could not grow, and the next write would start a new buffer.
            let urgent = self.closing || waiting || space_waiters || old;
            new_ops = self.send_runs(lim, now, !urgent, &mut last_new, out);
            if new_ops == 0
                && !urgent
                && self.writes_inflight == 0
                && self.index.dirty_bytes() >= lim.watermark
            {
                // Only growing extents are left, and nothing in flight will bring the
                // submitter back: send them rather than be woken for nothing.
                new_ops = self.send_runs(lim, now, false, &mut last_new, out);
            }
            if self.index.dirty_count() == 0 {
                self.dirty_since = None;
            } else if old {
                // What is left is blocked behind in-flight writes or the queue depth; it
                // goes out as those complete.
                self.dirty_since = Some(now);
            }
        }
        self.plan_size_change(out);
        if waiting && self.sync_inflight.is_none() {
            let single_new = if new_ops == 1 { last_new } else { None };
            self.plan_sync(single_new, lim, now, out);
        }
        self.sample_queue(now);
        self.streaming = self.writes_inflight > self.caller_writes;
        self.eager_armed |= self.index.dirty_count() < EAGER_BLOCKS;
        self.check_invariants();
    }

    /// Counts the engine's writes in flight since the last pass for each microsecond
    /// that passed, while some forcer waited (`Stats::queue_while_forcing`).
    fn sample_queue(&mut self, now: Instant) {
        if let Some((since, writes)) = self.queue_sample.take() {
            let us = now.saturating_duration_since(since).as_micros() as u64;
            self.stats
                .queue_while_forcing
                .saturating_record_n(writes, us);
        }
        if self.waiters.iter().any(|(_, w)| w.result.is_none()) {
            self.queue_sample = Some((now, (self.writes_inflight - self.caller_writes) as u64));
        }
    }

    /// Whether to start write-back of a direct file early, with nothing in flight, below
    /// the watermark and before any force: many scattered dirty blocks, more than one
    /// lead could take. A force would hand them to this thread anyway, and then wait for
    /// all of them with the device idle until it came; sent now, the device writes them
    /// while the writer goes on (once writes are in flight each completion sends what is
    /// dirty). The same goes on when the last completions of a stream emptied the queue:
    /// what came meanwhile goes out too. A commit that fits a lead stays its forcer's,
    /// and an extent counts once however many writes grew it (sequential data still
    /// waits for the watermark, to merge). Buffered files are left alone: their write
    /// completes as a copy into the page cache, not device work (that waits for the
    /// sync), so starting it early only moves that copy into the writer's time
    /// (docs/benchmarks.md measured no gain).
    fn eager(&self, lim: &Limits) -> bool {
        self.barriers.is_direct()
            && (self.index.dirty_count() >= EAGER_BLOCKS || self.streaming)
            && !self.dirty_fits_a_lead(lim)
    }

    /// Sends runs of dirty blocks C-SCAN from the cursor, wrapping once (so no offset
    /// range starves), up to the queue depth; `hold_open` skips extents that can still
    /// grow. Returns how many writes it pushed (the last in `last_new`).
    fn send_runs(
        &mut self,
        lim: &Limits,
        now: Instant,
        hold_open: bool,
        last_new: &mut Option<usize>,
        out: &mut Vec<Push>,
    ) -> usize {
        let mut sent = 0;
        let cursor = self.cursor;
        for (from, until) in [(cursor, u64::MAX), (0, cursor)] {
            let mut pos = from;
            while self.writes_inflight < lim.queue_depth {
                let Some(start) = self.next_unblocked_dirty(pos, until, hold_open) else {
                    break;
                };
                let op = self.start_run(start, lim, now, hold_open);
                let Op::Write(w) = &self.ops[op] else {
                    unreachable!()
                };
                pos = w.offset + w.len;
                self.cursor = pos;
                sent += 1;
                *last_new = Some(op);
                out.push(Push::Write {
                    op,
                    linked_sync: None,
                });
            }
        }
        sent
    }

    /// Whether the dirty block at `start` may be sent now.
    fn sendable(&self, start: u64, len: u64, hold_open: bool) -> bool {
        let held = hold_open && self.index.open_extent(start);
        !held
            && !self.overlaps_inflight(start, start + len)
            && !self.barriers.holds(start, start + len)
    }

    fn next_unblocked_dirty(&self, from: u64, until: u64, hold_open: bool) -> Option<u64> {
        self.index
            .dirty_from(from)
            .take_while(|&s| s < until)
            .find(|&s| {
                let b = self.index.get(s).expect("dirty block");
                self.sendable(s, b.len, hold_open)
            })
    }

    /// Issues the oldest size change once no write in flight overlaps what it affects.
    fn plan_size_change(&mut self, out: &mut Vec<Push>) {
        if !self.closing {
            self.barriers.top_up(self.end);
        } else if self.index.dirty_count() == 0
            && self.writes_inflight == 0
            && self.resubmit.is_empty()
            && self.barriers.is_empty()
        {
            self.barriers.trim(self.end);
        }
        let Some((change, (from, to))) = self.barriers.next() else {
            return;
        };
        if self.overlaps_inflight(from, to) {
            return;
        }
        self.barriers.issued();
        let op = self.ops.insert(Op::Size(SizeOp { change }));
        out.push(Push::Size { op });
    }

    fn complete_size(&mut self, key: usize, result: i32) {
        // Any size change, even a failed one, changes metadata only an `fsync` covers.
        self.changes += 1;
        let Op::Size(op) = self.ops.remove(key) else {
            unreachable!()
        };
        let change = self.barriers.completed();
        debug_assert_eq!(change, op.change);
        match (change, -result) {
            (SizeChange::Truncate(_), 0) => self.stats.size_changes += 1,
            (SizeChange::Punch { len, .. }, 0) => self.stats.bytes_punched += len,
            // Punching only frees space below the start: where the file system cannot,
            // nothing is lost. EOPNOTSUPP will not change, so stop asking.
            (SizeChange::Punch { .. }, libc::EOPNOTSUPP) => {
                self.stats.punches_refused += 1;
                self.barriers.stop_punching();
            }
            (SizeChange::Punch { .. }, libc::ENOSPC) => self.stats.punches_refused += 1,
            (SizeChange::ZeroFill { offset, len }, n) if n <= 0 => {
                // Bytes written; a short fill is completed by the next top-up, and one
                // that wrote nothing ends preallocation.
                let written = (-n) as u64;
                self.stats.bytes_preallocated += written;
                if written == 0 {
                    self.barriers.stop_preallocating();
                } else if written < len {
                    self.barriers.filled_only_to(offset + written);
                }
            }
            // Preallocation only saves metadata updates: without it nothing is lost.
            (SizeChange::ZeroFill { .. }, libc::ENOSPC | libc::EOPNOTSUPP | libc::EDQUOT) => {
                self.stats.prealloc_refused += 1;
                self.barriers.stop_preallocating();
            }
            (_, code) => self.fail(if code > 0 { code } else { libc::EIO }),
        }
    }

    /// Sends the dirty block at `start` and the adjacent dirty blocks after it as one
    /// vectored write, up to the size and iovec limits.
    fn start_run(&mut self, start: u64, lim: &Limits, now: Instant, hold_open: bool) -> usize {
        let key = self.ops.vacant_key();
        let (mut segs, iov) = self.spare.runs.pop().unwrap_or_default();
        let mut seq = u64::MAX;
        let mut end = start;
        loop {
            let b = self.index.mark_flushing(end, key);
            segs.push((b.buf.clone(), b.buf_off, b.len as usize));
            seq = seq.min(b.seq);
            end += b.len;
            let Some(next_len) = self.index.dirty_at(end) else {
                break;
            };
            if end - start + next_len > lim.max_write_bytes
                || segs.len() >= IOV_MAX
                || !self.sendable(end, next_len, hold_open)
            {
                break;
            }
        }
        self.stats.write_ops += 1;
        record(&mut self.stats.blocks_per_write, segs.len() as u64);
        let mut w = WriteOp {
            offset: start,
            len: end - start,
            done: 0,
            segs,
            iov: IoVecs(iov),
            seq,
            retries: 0,
            pushed_at: now,
            caller: false,
        };
        w.rebuild_iovecs();
        self.inflight.insert(start, end);
        self.writes_inflight += 1;
        self.ops.insert(Op::Write(w))
    }

    /// Pushes one sync for every waiter it can serve: linked behind `single_new` (the
    /// only write sent this pass) when that write is what some waiter still needs.
    ///
    /// Group commit: the forcers a sync wakes come back with their next commit a few
    /// microseconds later, while those that arrived during the sync are already waiting.
    /// Sending the next sync at once for the latter splits the forcers into groups that
    /// take turns, each sync serving half of them. So after a sync completes, the next one
    /// waits (at most half a sync's time, 200 µs) until as many forcers are ready as the
    /// last sync served plus those that were waiting then.
    fn plan_sync(
        &mut self,
        single_new: Option<usize>,
        lim: &Limits,
        now: Instant,
        out: &mut Vec<Push>,
    ) {
        let ready = |st: &State, exclude: Option<usize>| -> Vec<usize> {
            st.waiters
                .iter()
                .filter(|(_, w)| w.sync.is_none() && w.result.is_none())
                .filter(|(_, w)| st.min_pending(w.range, exclude) > w.target)
                .map(|(k, _)| k)
                .collect()
        };
        let now_ready = ready(self, None);
        let needs_fsync =
            |st: &State, ws: &[usize]| ws.iter().any(|w| st.waiters[*w].mode == SyncMode::All);
        // A linked sync is the engine's (`Config::sync`): no link for a group that needs
        // an fsync the engine would not run.
        let single_new = single_new.filter(|_| {
            lim.sync == SyncMode::All || {
                let linked = ready(self, single_new);
                !needs_fsync(self, &linked)
            }
        });
        let (serve, link) = match single_new {
            Some(op) => {
                let linked = ready(self, Some(op));
                if linked.len() > now_ready.len() {
                    (linked, Some(op))
                } else {
                    (now_ready, None)
                }
            }
            None => (now_ready, None),
        };
        if serve.is_empty() {
            return;
        }
        if self.gather_until.is_some_and(|t| now < t) && serve.len() < self.expected_group {
            return;
        }
        self.gather_until = None;
        // Nothing pending means everything up to the newest write is in the file.
        let covers = self.min_pending(None, link).min(self.last_seq + 1);
        // A linked sync is the engine's, and runs after its write's completion.
        let mode = link.map(|_| lim.sync);
        let linked = u64::from(link.is_some());
        let key = self.start_sync(&serve, covers, mode, linked, now, false);
        match link {
            Some(op) => {
                let last = out
                    .iter_mut()
                    .rev()
                    .find(|p| matches!(p, Push::Write { op: o, .. } if *o == op));
                *last.expect("the linked write was pushed this pass") = Push::Write {
                    op,
                    linked_sync: Some(key),
                };
            }
            None => out.push(Push::Sync { op: key }),
        }
    }

    /// What a forcer does next (see [`Next`]): lead a commit on its own thread when it
    /// can, so that a lone committer pays for its write and sync and not for the hops to
    /// the submission thread and back.
    ///
    /// A forcer leads when no sync is in flight, every dirty block is small enough to
    /// write from here (at most `max_write_bytes` in at most [`LEAD_RUNS_BUFFERED`] runs, or
    /// [`LEAD_RUNS_DIRECT`] with direct I/O, none
    /// overlapping a write in flight or held back behind a pending size change) and some
    /// waiter needs nothing the engine is still writing and no size change still pending.
    /// So a lead keeps `barrier.rs`'s two rules as `plan` does: it never writes a block a
    /// size change holds back, and a size change waits for its writes (they are in
    /// `inflight`); its sync covers no size change not yet completed (`min_in_flight`).
    /// It takes every dirty block and one sync for every such waiter; later
    /// forcers join the next group. The group-commit hold of [`plan_sync`] applies here
    /// too: the group waits (until its deadline) for as many forcers as the last sync
    /// served plus those waiting then, and the forcer that completes it leads.
    ///
    /// [`plan_sync`]: State::plan_sync
    ///
    /// A forcer that cannot lead (`can_lead` false: an async forcer, which must not
    /// block its executor) gets [`Next::WakeSubmitter`] where it would lead or wait out
    /// the hold: the submitter serves it, with the same hold (its timer).
    pub(crate) fn next_step(
        &mut self,
        lim: &Limits,
        now: Instant,
        me: usize,
        can_lead: bool,
    ) -> Next {
        if self.failed.is_some() || self.closing || self.sync_inflight.is_some() {
            // A failure has already answered every waiter; a sync in flight hands on
            // (its completion serves the next group) when it completes.
            return Next::Park;
        }
        if !can_lead || !self.resubmit.is_empty() || !self.dirty_fits_a_lead(lim) {
            return Next::WakeSubmitter;
        }
        let mut served = std::mem::take(&mut self.spare.served);
        served.clear();
        served.extend(
            self.waiters
                .iter()
                .filter(|(_, w)| w.sync.is_none() && w.result.is_none())
                .filter(|(_, w)| self.min_in_flight(w.range, None) > w.target)
                .map(|(k, _)| k),
        );
        let lead = self.lead_for(&served, lim, now, me);
        served.clear();
        self.spare.served = served;
        lead
    }

    /// The rest of [`next_step`](State::next_step), for the forcers `served` that a sync
    /// now would serve.
    fn lead_for(&mut self, served: &[usize], lim: &Limits, now: Instant, me: usize) -> Next {
        if served.is_empty() {
            // Waiting for writes the engine has in flight, or a size change: their
            // completions serve us (a size change not issued yet needs the submitter).
            return if self.barriers.next().is_some() {
                Next::WakeSubmitter
            } else {
                Next::Park
            };
        }
        if let Some(until) = self.gather_until.filter(|&t| now < t) {
            if served.len() < self.expected_group {
                // One forcer keeps the deadline; the rest park until a sync serves them
                // (a timer each would wake them all for nothing when the group fills).
                let watcher = *self.hold_watcher.get_or_insert(me);
                return if watcher == me {
                    Next::Wait(until.max(self.watch_until))
                } else {
                    Next::Park
                };
            }
        }
        self.gather_until = None;
        // Every dirty block goes into this lead, so the sync covers everything but the
        // engine's writes in flight and the size changes not yet completed.
        let covers = self.min_in_flight(None, None).min(self.last_seq + 1);
        let mut writes = std::mem::take(&mut self.spare.lead_writes);
        // Each run takes the first dirty block left, so the next one lies past its start.
        let mut from = 0;
        loop {
            let Some(start) = self.index.dirty_from(from).next() else {
                break;
            };
            from = start;
            let op = self.start_run(start, lim, now, false);
            let Op::Write(w) = &mut self.ops[op] else {
                unreachable!()
            };
            w.caller = true;
            self.caller_writes += 1;
            writes.push(LeadWrite {
                op,
                offset: w.next_offset(),
                len: w.len - w.done,
                iov: w.iov.0.as_ptr(),
                iovcnt: w.iov.0.len(),
            });
        }
        self.dirty_since = None;
        let sync = self.start_sync(served, covers, None, writes.len() as u64, now, true);
        self.stats.leader_syncs += 1;
        let mode = self.sync_mode(sync);
        // Appends led from here never reach `plan`: keep the preallocation window ahead of
        // them (the submitter issues the fill while this lead runs; it lies past `end`, so
        // past every write of the lead).
        let top_up = self.barriers.top_up(self.end);
        let wake_submitter = self.wants_wake(top_up);
        Next::Lead(Lead {
            writes,
            results: std::mem::take(&mut self.spare.lead_results),
            sync,
            mode,
            wake_submitter,
        })
    }

    /// Records the sync in flight for waiters `serve` and returns its op. `mode`: `None`
    /// for an `fsync` if any of them needs one, else `fdatasync`. It runs after `linked`
    /// write completions still to come (each a change it covers).
    fn start_sync(
        &mut self,
        serve: &[usize],
        covers: u64,
        mode: Option<SyncMode>,
        linked: u64,
        now: Instant,
        caller: bool,
    ) -> usize {
        let mode = mode.unwrap_or({
            if serve.iter().any(|w| self.waiters[*w].mode == SyncMode::All) {
                SyncMode::All
            } else {
                SyncMode::Data
            }
        });
        let key = self.ops.insert(Op::Sync(SyncOp {
            covers,
            mode,
            changes: self.changes + linked,
            pushed_at: now,
            caller,
        }));
        for w in serve {
            self.waiters[*w].sync = Some(key);
        }
        self.sync_inflight = Some(key);
        self.hold_watcher = None;
        key
    }

    /// Every dirty block can go into one lead (see [`next_step`](State::next_step)).
    fn dirty_fits_a_lead(&self, lim: &Limits) -> bool {
        if self.index.dirty_bytes() > lim.max_write_bytes {
            return false;
        }
        let max_runs = if lim.align > 1 {
            LEAD_RUNS_DIRECT
        } else {
            LEAD_RUNS_BUFFERED
        };
        let mut runs = 0;
        let mut end = None;
        for s in self.index.dirty_from(0) {
            let len = self.index.get(s).expect("dirty block").len;
            // A block overlapping a pending size change waits for it (see `barrier.rs`).
            if self.overlaps_inflight(s, s + len) || self.barriers.holds(s, s + len) {
                return false;
            }
            if end != Some(s) {
                runs += 1;
                if runs > max_runs {
                    return false;
                }
            }
            end = Some(s + len);
        }
        true
    }

    /// Applies what a lead's syscalls returned (`lead.results[i]` for `lead.writes[i]`;
    /// the sync's result, or `None` when it did not run because a write fell short or
    /// failed). Wakes the forcers served, and hands on: the first forcer still waiting is
    /// woken to lead the next group. Returns whether the submitter must be woken (a write
    /// to resubmit).
    pub(crate) fn finish_lead(
        &mut self,
        mut lead: Lead,
        sync: Option<i32>,
        lim: &Limits,
        now: Instant,
    ) -> bool {
        debug_assert_eq!(lead.writes.len(), lead.results.len());
        for (w, &res) in lead.writes.iter().zip(&lead.results) {
            if let Op::Write(op) = &mut self.ops[w.op] {
                // Resubmitted, if at all, by the engine.
                op.caller = false;
            }
            self.caller_writes -= 1;
            self.complete(w.op, res, lim, now);
        }
        self.complete(lead.sync, sync.unwrap_or(-libc::ECANCELED), lim, now);
        lead.writes.clear();
        lead.results.clear();
        self.spare.lead_writes = lead.writes;
        self.spare.lead_results = lead.results;
        self.hand_on();
        // A size change may have waited for these writes; the submitter sleeps meanwhile
        // (a lead's requests bring it no completion).
        self.wants_wake(!self.resubmit.is_empty() || self.barriers.next().is_some())
    }

    /// Applies one completion. Returns true if the handle just failed.
    pub(crate) fn complete(&mut self, key: usize, result: i32, lim: &Limits, now: Instant) {
        match &self.ops[key] {
            Op::Write(_) => self.complete_write(key, result, lim, now),
            Op::Sync(_) => self.complete_sync(key, result, now),
            Op::Size(_) => self.complete_size(key, result),
        }
        self.check_invariants();
    }

    fn complete_write(&mut self, key: usize, result: i32, lim: &Limits, now: Instant) {
        // Even a failed write may have changed the file (part of it, its times).
        self.changes += 1;
        let Op::Write(w) = &mut self.ops[key] else {
            unreachable!()
        };
        let remaining = w.len - w.done;
        if result > 0 {
            self.stats.bytes_written += result as u64;
        }
        let retry = match result {
            r if r >= 0 && r as u64 >= remaining => {
                record(
                    &mut self.stats.submit_to_complete_ns,
                    now.duration_since(w.pushed_at).as_nanos() as u64,
                );
                let (off, end) = (w.offset, w.offset + w.len);
                self.index.complete(key, off, end);
                self.finish_write(key, off);
                return;
            }
            r if r > 0 => {
                // Resume at the first unwritten byte, aligned down for O_DIRECT. Only real
                // progress renews the retry budget: a direct write that keeps reporting
                // less than one aligned block would otherwise be resubmitted forever.
                let done = (w.done + r as u64) / lim.align * lim.align;
                if done > w.done {
                    w.retries = 0;
                }
                w.done = done;
                self.stats.short_writes += 1;
                true
            }
            0 => true,
            r if -r == libc::EAGAIN || -r == libc::EINTR || -r == libc::ECANCELED => {
                self.stats.retries += 1;
                true
            }
            _ => false,
        };
        if retry && w.retries < MAX_RETRIES {
            w.retries += 1;
            w.rebuild_iovecs();
            self.resubmit.push(key);
            return;
        }
        let code = if result < 0 { -result } else { libc::EIO };
        let (off, end) = (w.offset, w.offset + w.len);
        self.index.unflush(key, off, end);
        self.finish_write(key, off);
        self.fail(code);
    }

    fn finish_write(&mut self, key: usize, off: u64) {
        self.inflight.remove(&off);
        self.writes_inflight -= 1;
        if let Op::Write(w) = self.ops.remove(key) {
            self.recycle_run(w);
        }
    }

    /// Keeps a finished write's vectors for a later run (its buffers go back to the pool
    /// now, as they would when it is dropped).
    fn recycle_run(&mut self, w: WriteOp) {
        let WriteOp {
            mut segs,
            iov: IoVecs(mut iov),
            ..
        } = w;
        if self.spare.runs.len() < SPARE_RUNS {
            segs.clear();
            iov.clear();
            self.spare.runs.push((segs, iov));
        }
    }

    fn complete_sync(&mut self, key: usize, result: i32, now: Instant) {
        let Op::Sync(s) = self.ops.remove(key) else {
            unreachable!()
        };
        self.sync_inflight = None;
        let mine = |w: &ForceWaiter| w.sync == Some(key) && w.result.is_none();
        match result {
            0 => {
                self.durable = self.durable.max(s.covers);
                if s.mode == SyncMode::All {
                    self.fsynced = self.fsynced.max(s.changes);
                }
                self.stats.fsyncs += 1;
                let mut served = 0;
                for (_, w) in self.waiters.iter_mut().filter(|(_, w)| mine(w)) {
                    w.result = Some(Ok(()));
                    self.to_wake.push(w.notify.clone());
                    served += 1;
                }
                self.stats.forces_served += served as u64;
                let waiting = self
                    .waiters
                    .iter()
                    .filter(|(_, w)| w.result.is_none())
                    .count();
                self.expected_group = served + waiting;
                let took = now.saturating_duration_since(s.pushed_at);
                let linger = (took / 2).min(Duration::from_micros(200));
                self.gather_until = Some(now + linger);
                // The forcer keeping the deadline looks again only after the next sync
                // would have completed had the group filled in time (it is woken then
                // anyway, as one of its group): a timer due within that sync wakes it
                // for nothing, once per sync (at 8 committers, 1.42 context switches
                // per commit instead of about 1.3). A group that does not fill leads
                // at this later time, or as soon as another forcer arrives after
                // `gather_until`.
                self.watch_until = now + (took * 2).min(Duration::from_micros(400));
            }
            r if -r == libc::ECANCELED => {
                // The write before it fell short: not durable. Its waiters wait for the
                // next sync, after the remainder is written.
                self.stats.cancelled_fsyncs += 1;
                for (_, w) in self.waiters.iter_mut().filter(|(_, w)| mine(w)) {
                    w.sync = None;
                }
            }
            r => self.fail(if r < 0 { -r } else { libc::EIO }),
        }
    }

    /// Latches `code`: every waiter gets it now, and writes and forces from now on.
    /// A failed fsync is never retried (the kernel may have dropped the dirty pages).
    pub(crate) fn fail(&mut self, code: i32) {
        self.failed.get_or_insert(code);
        let err = os(self.failed.expect("just set"));
        for (_, w) in self.waiters.iter_mut().filter(|(_, w)| w.result.is_none()) {
            w.result = Some(Err(duplicate(&err)));
            w.sync = None;
            self.to_wake.push(w.notify.clone());
        }
    }

    /// Forgets every op in flight in the engine without freeing its buffers: the kernel
    /// may still read them and their completions will never be seen. Ops a leading forcer
    /// runs stay: it applies their results itself.
    pub(crate) fn leak_in_flight(&mut self) {
        let engine_ops: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, op)| match op {
                Op::Write(w) => !w.caller,
                Op::Sync(s) => !s.caller,
                Op::Size(_) => true,
            })
            .map(|(k, _)| k)
            .collect();
        for k in engine_ops {
            if let Op::Write(w) = &self.ops[k] {
                self.inflight.remove(&w.offset);
                self.writes_inflight -= 1;
            }
            if self.sync_inflight == Some(k) {
                self.sync_inflight = None;
            }
            std::mem::forget(self.ops.remove(k));
        }
        self.resubmit.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wb::pool::Pool;
    use std::sync::Arc;

    /// `lead` as `lead::run` leaves it: with what its writes returned.
    fn ran(mut lead: Lead, results: &[i32]) -> Lead {
        lead.results.extend_from_slice(results);
        lead
    }

    fn limits() -> Limits {
        Limits {
            queue_depth: 4,
            max_write_bytes: 1 << 20,
            watermark: 1 << 30,
            max_dirty_age: Duration::from_secs(3600),
            align: 1,
            sync: SyncMode::Data,
        }
    }

    struct Fixture {
        pool: Arc<Pool>,
        st: State,
        now: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                pool: Pool::new(1 << 24, 1 << 16, 1),
                st: State::new(
                    0,
                    0,
                    BackendKind::Threads,
                    Barriers::new(1, Some(4096), 0, 0),
                ),
                now: Instant::now(),
            }
        }
        fn write(&mut self, off: u64, len: usize, byte: u8) {
            let (mut b, _) = self.pool.reserve(len, || {}).unwrap();
            b.as_mut_slice().fill(byte);
            let now = self.now;
            self.st.install(off, b, u64::MAX, || now);
        }
        /// A sequential write: grows the dirty extent ending at `off` in place when it
        /// can, else installs a new extent buffer (64 KiB chunks). Returns whether it grew.
        fn write_seq(&mut self, off: u64, len: usize, byte: u8) -> bool {
            let now = self.now;
            let data = vec![byte; len];
            if self.st.extend(off, &data, u64::MAX, || now).is_some() {
                return true;
            }
            let room = 65536 - (off % 65536) as usize;
            let (mut b, _) = self
                .pool
                .reserve_extent(len, 65536, room.max(len), || {})
                .unwrap();
            b.as_mut_slice().fill(byte);
            self.st.install(off, b, u64::MAX, || now);
            false
        }
        /// A packed write: copied into the packing buffer when it has room (returns
        /// true), else installed as a new 16 KiB packing buffer.
        fn write_packed(&mut self, off: u64, len: usize, byte: u8) -> bool {
            let now = self.now;
            let data = vec![byte; len];
            if self.st.pack(off, &data, u64::MAX, || now).is_some() {
                return true;
            }
            let (mut b, _) = self.pool.reserve_extent(len, 16384, 16384, || {}).unwrap();
            b.as_mut_slice().fill(byte);
            self.st.install_packing(off, b, u64::MAX, || now);
            false
        }
        /// What a read of `[off, end)` sees in the index (`None` for bytes not buffered).
        fn buffered(&self, off: u64, end: u64) -> Vec<Option<u8>> {
            let mut out = vec![None; (end - off) as usize];
            for (bs, b) in self.st.index.overlapping(off, end) {
                let bytes = &b.buf.as_slice()[b.buf_off..b.buf_off + b.len as usize];
                for o in bs.max(off)..(bs + b.len).min(end) {
                    out[(o - off) as usize] = Some(bytes[(o - bs) as usize]);
                }
            }
            out
        }
        /// Plans and expects exactly one plain sync (and nothing else); returns its op.
        fn plan_one_sync(&mut self) -> usize {
            let pushes = self.plan();
            let [Push::Sync { op }] = pushes[..] else {
                panic!("expected one sync: {pushes:?}")
            };
            op
        }
        /// Plans and expects exactly one write with a linked sync; returns (write, sync).
        fn plan_one_linked_write(&mut self) -> (usize, usize) {
            let pushes = self.plan();
            let [Push::Write {
                op,
                linked_sync: Some(sync),
            }] = pushes[..]
            else {
                panic!("expected one write with a linked sync: {pushes:?}")
            };
            (op, sync)
        }
        fn plan(&mut self) -> Vec<Push> {
            let mut out = Vec::new();
            self.st.plan(&limits(), self.now, false, &mut out);
            out
        }
        fn bytes_of(&self, op: usize) -> Vec<u8> {
            let Op::Write(w) = self.st.op(op) else {
                panic!("not a write")
            };
            w.iovecs()
                .iter()
                // SAFETY (test): the iovecs point into buffers the op keeps alive.
                .flat_map(|v| {
                    unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) }
                        .to_vec()
                })
                .collect()
        }
        fn force(&mut self) -> usize {
            self.st
                .add_waiter(None, SyncMode::Data, std::thread::current())
                .expect("not yet durable")
        }
    }

    fn write_ops(pushes: &[Push]) -> Vec<usize> {
        pushes
            .iter()
            .filter_map(|p| match p {
                Push::Write { op, .. } => Some(*op),
                _ => None,
            })
            .collect()
    }

    /// `Mutation::SyncSubmitted`, the deliberate bug tests/power_loss.rs must catch: a
    /// force is served by a sync pushed while its writes are still in flight.
    #[cfg(feature = "fault-injection")]
    #[test]
    fn sync_submitted_mutation_serves_a_force_before_its_writes_complete() {
        let mut f = Fixture::new();
        f.st.sync_submitted = true;
        f.write(0, 4096, 1);
        f.write(100_000, 4096, 2);
        let w = f.force();
        let pushes = f.plan();
        assert_eq!(write_ops(&pushes).len(), 2, "{pushes:?}");
        let Some(&Push::Sync { op }) = pushes.last() else {
            panic!("no sync pushed with the writes: {pushes:?}")
        };
        f.st.complete(op, 0, &limits(), f.now);
        assert!(matches!(f.st.take_result(w), Some(Ok(()))));
    }

    #[test]
    fn adjacent_dirty_blocks_merge_into_one_vectored_write() {
        let mut f = Fixture::new();
        f.write(4096, 4096, 2);
        f.write(0, 4096, 1);
        f.write(8192, 4096, 3);
        f.write(20000, 10, 9);
        f.force();
        let pushes = f.plan();
        let ops = write_ops(&pushes);
        assert_eq!(ops.len(), 2, "{pushes:?}");
        let Op::Write(w) = f.st.op(ops[0]) else {
            panic!()
        };
        assert_eq!((w.offset, w.len, w.iovecs().len()), (0, 12288, 3));
        let bytes = f.bytes_of(ops[0]);
        assert!(bytes[..4096].iter().all(|&b| b == 1) && bytes[8192..].iter().all(|&b| b == 3));
        assert_eq!(f.st.stats.blocks_per_write.max(), 3);
    }

    #[test]
    fn an_extent_grows_in_place_and_goes_out_as_one_iovec() {
        let mut f = Fixture::new();
        assert!(!f.write_seq(0, 4096, 1));
        for page in 1..16u64 {
            assert!(
                f.write_seq(page * 4096, 4096, page as u8 + 1),
                "page {page}"
            );
        }
        assert_eq!(f.st.index.len(), 1, "one block for the extent");
        assert_eq!((f.st.stats.extended_writes, f.st.last_seq), (15, 16));
        let ops = write_ops(&f.plan_forced());
        let Op::Write(w) = f.st.op(ops[0]) else {
            panic!()
        };
        assert_eq!((ops.len(), w.len, w.iovecs().len()), (1, 65536, 1));
        let bytes = f.bytes_of(ops[0]);
        assert!((0..16).all(|p| bytes[p * 4096..(p + 1) * 4096]
            .iter()
            .all(|&b| b == p as u8 + 1)));
        // The chunk is full: the next write starts a new extent.
        assert!(!f.write_seq(65536, 4096, 9));
    }

    /// A write that continues an extent in flight goes into that extent's buffer, past
    /// the bytes in flight, as a new dirty block that later writes grow in place: a
    /// log's next commit group takes no new chunk. The bytes in flight never change.
    #[test]
    fn an_extent_in_flight_is_continued_in_its_buffer() {
        let mut f = Fixture::new();
        assert!(!f.write_seq(0, 4096, 1));
        assert!(f.write_seq(4096, 4096, 2));
        f.force();
        let ops = write_ops(&f.plan_forced());
        let first = ops[0];
        assert_eq!(ops.len(), 1);
        assert!(
            f.write_seq(8192, 4096, 3),
            "continued past the write in flight"
        );
        assert!(
            f.write_seq(12288, 4096, 4),
            "grew the continuation in place"
        );
        assert_eq!(f.st.index.len(), 2);
        let (a, b) = (f.st.index.get(0).unwrap(), f.st.index.get(8192).unwrap());
        assert_eq!(
            a.buf.as_slice().as_ptr(),
            b.buf.as_slice().as_ptr(),
            "one buffer"
        );
        assert_eq!((b.buf_off, b.len, b.flushing), (8192, 8192, None));
        assert_eq!(f.st.stats.extended_writes, 3);
        let sent = f.bytes_of(first);
        assert!(sent[..4096].iter().all(|&x| x == 1) && sent[4096..].iter().all(|&x| x == 2));
        let now = f.now;
        f.st.complete(first, 8192, &limits(), now);
        assert_eq!(
            f.pool.live_bytes(),
            65536,
            "the chunk lives on in the new block"
        );
        let ops = write_ops(&f.plan_forced());
        let Op::Write(w) = f.st.op(ops[0]) else {
            panic!()
        };
        assert_eq!((w.offset, w.len, w.iovecs().len()), (8192, 8192, 1));
        let sent = f.bytes_of(ops[0]);
        assert!(sent[..4096].iter().all(|&x| x == 3) && sent[4096..].iter().all(|&x| x == 4));
    }

    /// Packed writes share one buffer, each a block of its own with its own seq; one in
    /// flight keeps its bytes while later writes are packed after it and a rewrite of
    /// its range is copy-on-write; the buffer returns to the pool only once the last
    /// write in it completed and packing moved on.
    #[test]
    fn packed_writes_share_a_buffer_and_keep_bytes_in_flight() {
        let mut f = Fixture::new();
        assert!(!f.write_packed(40960, 4096, 1), "the first starts a buffer");
        assert!(f.write_packed(0, 4096, 2));
        assert!(f.write_packed(81920, 4096, 3));
        assert_eq!(f.st.stats.packed_writes, 2);
        assert_eq!((f.st.index.len(), f.st.last_seq), (3, 3));
        let shared = |f: &Fixture, a: u64, b: u64| {
            let (x, y) = (f.st.index.get(a).unwrap(), f.st.index.get(b).unwrap());
            std::ptr::eq(x.buf.as_slice().as_ptr(), y.buf.as_slice().as_ptr())
        };
        assert!(shared(&f, 0, 40960) && shared(&f, 0, 81920), "one buffer");
        let first = write_ops(&f.plan_forced());
        assert_eq!(first.len(), 3, "three separate ranges");
        let op_of = |f: &Fixture, off: u64| {
            *first
                .iter()
                .find(|&&op| matches!(f.st.op(op), Op::Write(w) if w.offset == off))
                .unwrap()
        };
        let zero = op_of(&f, 0);
        // In flight: the next write is packed right after (past every op's bytes)...
        assert!(f.write_packed(4096, 4096, 4));
        // ...which fills it (16 KiB): the rewrite of the range in flight, a new block
        // (copy-on-write), starts a new buffer.
        assert!(!f.write_packed(0, 4096, 5));
        assert_eq!(f.bytes_of(zero), vec![2; 4096], "in-flight bytes changed");
        let seen = f.buffered(0, 8192);
        assert!(seen[..4096].iter().all(|&b| b == Some(5)));
        assert!(seen[4096..].iter().all(|&b| b == Some(4)));
        assert_eq!(f.pool.live_bytes(), 2 * 16384);
        for op in first {
            f.st.complete(op, 4096, &limits(), f.now);
        }
        assert_eq!(
            f.pool.live_bytes(),
            2 * 16384,
            "pages 0 and 4096 still use it"
        );
        let rest = write_ops(&f.plan_forced());
        for op in rest {
            let Op::Write(w) = f.st.op(op) else { panic!() };
            let len = w.len as i32;
            f.st.complete(op, len, &limits(), f.now);
        }
        assert_eq!(f.st.index.len(), 0);
        assert_eq!(
            f.pool.live_bytes(),
            16384,
            "the first buffer returned; the packing one is held for the next write"
        );
        drop(f.st.release_packing());
        assert_eq!(f.pool.live_bytes(), 0);
    }

    #[test]
    fn an_extent_in_flight_is_continued_and_a_read_spans_old_and_new_bytes() {
        let mut f = Fixture::new();
        f.write_seq(0, 4096, 1);
        f.write_seq(4096, 4096, 2);
        let first = write_ops(&f.plan_forced())[0];
        // Its block is in flight and cannot grow: the next page goes past it in the
        // same buffer as a new block (bytes the iovec does not cover), which then grows.
        assert!(
            f.write_seq(8192, 4096, 3),
            "not continued in the buffer in flight"
        );
        assert!(f.write_seq(12288, 4096, 4));
        // A rewrite of the in-flight range is copy-on-write.
        f.write(4096, 100, 5);
        assert_eq!(
            f.bytes_of(first),
            [vec![1; 4096], vec![2; 4096]].concat(),
            "in-flight bytes changed"
        );
        let seen = f.buffered(0, 16384);
        let want = |o: usize| match o {
            0..4096 => 1,
            4096..4196 => 5,
            4196..8192 => 2,
            8192..12288 => 3,
            _ => 4,
        };
        assert!(
            (0..16384).all(|o| seen[o] == Some(want(o))),
            "a read across the old extent (in flight) and the new one"
        );
        // The new extent is dirty and grows while the old one is still in flight; the
        // rewrite waits for the first write (one write in flight per range).
        assert!(f.write_seq(16384, 4096, 6));
        let pushes = f.plan_forced();
        let second = write_ops(&pushes);
        assert_eq!(second.len(), 1, "{pushes:?}");
        let Op::Write(w) = f.st.op(second[0]) else {
            panic!()
        };
        assert_eq!((w.offset, w.len), (8192, 12288));
        f.st.complete(first, 8192, &limits(), f.now);
        f.st.complete(second[0], 12288, &limits(), f.now);
        let third = write_ops(&f.plan_forced());
        let Op::Write(w) = f.st.op(third[0]) else {
            panic!()
        };
        assert_eq!(
            (w.offset, w.len),
            (4096, 100),
            "the rewrite after the first write"
        );
    }

    #[test]
    fn a_force_waits_for_the_oldest_write_of_an_extent() {
        let mut f = Fixture::new();
        f.write_seq(0, 4096, 1);
        let w = f.force(); // covers seq 1
        f.write_seq(4096, 4096, 2); // grows the same extent: seq 2
        let w2 = f.force();
        let (op, sync) = f.plan_one_linked_write();
        assert_eq!(
            f.bytes_of(op).len(),
            8192,
            "the grown extent goes out whole"
        );
        f.st.complete(op, 8192, &limits(), f.now);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok() && f.st.take_result(w2).unwrap().is_ok());
        // Growth after a force does not make the force wait for it, but a later force
        // waits for the grown bytes.
        f.write_seq(8192, 4096, 3);
        let w3 = f.force();
        assert!(f.write_seq(12288, 4096, 4));
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, 8192, &limits(), f.now);
        assert!(f.st.take_result(w3).is_none(), "served before its sync");
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w3).unwrap().is_ok());
    }

    #[test]
    fn a_growing_extent_waits_while_writes_stream_and_goes_when_needed() {
        let mut f = Fixture::new();
        f.write(1 << 30, 4096, 9);
        let busy = write_ops(&f.plan_forced());
        f.write_seq(0, 4096, 1);
        // Streaming (a write in flight), nothing urgent: the extent may still grow.
        assert!(f.plan().is_empty(), "a growing extent was sent half full");
        assert!(f.write_seq(4096, 4096, 2));
        // A force needs it now.
        let w = f.force();
        let pushes = f.plan();
        let ops = write_ops(&pushes);
        assert_eq!(ops.len(), 1, "{pushes:?}");
        assert_eq!(f.bytes_of(ops[0]).len(), 8192);
        f.st.complete(busy[0], 4096, &limits(), f.now);
        f.st.complete(ops[0], 8192, &limits(), f.now);
        let sync = f.plan_one_sync();
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        // A full extent goes out while streaming; the one after it waits to grow.
        f.write(1 << 30, 4096, 9);
        let busy = write_ops(&f.plan_forced());
        for page in 16..17u64 {
            f.write_seq(page * 4096, 4096, 3);
        }
        for page in 17..33u64 {
            f.write_seq(page * 4096, 4096, 3);
        }
        let ops = write_ops(&f.plan());
        assert_eq!(ops.len(), 1);
        let Op::Write(wr) = f.st.op(ops[0]) else {
            panic!()
        };
        assert_eq!((wr.offset, wr.len), (65536, 65536), "the full chunk only");
        let _ = busy;
    }

    /// Scattered pages of a direct file below the watermark go out before any force once
    /// there are `EAGER_BLOCKS` of them: the writer that reaches that count wakes the
    /// idle submitter (once), whose plan sends them; completions then keep the queue
    /// full, and what came meanwhile goes out when the last of them empty it. A force
    /// finds them in flight. Fewer blocks, blocks that fit one lead, an extent of as
    /// many pages, and any of a buffered file all wait as before.
    #[test]
    fn scattered_pages_go_out_before_a_force_once_there_are_enough() {
        let lim = Limits {
            align: 512,
            ..limits()
        };
        let direct = || {
            let mut f = Fixture::new();
            f.st.barriers = Barriers::new(1, Some(4096), 0, 0).direct(true);
            // The submitter sleeps with its age timer (it served writes before).
            (f.st.sleeping, f.st.timed_sleep) = (true, true);
            f
        };
        let plan = |f: &mut Fixture, lim: &Limits| {
            let mut out = Vec::new();
            f.st.plan(lim, f.now, false, &mut out);
            out
        };
        // A page at `off`; returns whether the writer must wake the submitter.
        let page = |f: &mut Fixture, off: u64| {
            let (mut b, _) = f.pool.reserve(4096, || {}).unwrap();
            b.as_mut_slice().fill(off as u8);
            let now = f.now;
            f.st.install(off, b, u64::MAX, || now)
        };
        // Every other page: no two blocks adjacent, each its own run.
        let scattered = |i: u64| i * 8192;

        let mut f = direct();
        for i in 0..EAGER_BLOCKS as u64 - 1 {
            assert!(!page(&mut f, scattered(i)), "page {i} woke the submitter");
        }
        assert!(plan(&mut f, &lim).is_empty(), "sent below the eager count");
        f.st.sleeping = true;
        let last = scattered(EAGER_BLOCKS as u64);
        assert!(page(&mut f, last), "the eager count wakes it");
        assert!(!page(&mut f, scattered(1000)), "only once");
        let first = write_ops(&plan(&mut f, &lim));
        assert_eq!(first.len(), lim.queue_depth, "the queue filled");
        assert_eq!(f.st.index.dirty_count(), EAGER_BLOCKS + 1 - first.len());
        // The force finds them in flight; each completion sends more.
        f.force();
        let at_force = &f.st.stats.writes_in_flight_at_force;
        assert_eq!(at_force.max(), first.len() as u64);
        assert_eq!(write_ops(&plan(&mut f, &lim)).len(), 0, "the queue is full");
        f.now += Duration::from_micros(100);
        f.st.complete(first[0], 4096, &lim, f.now);
        assert_eq!(write_ops(&plan(&mut f, &lim)).len(), 1);
        // 100 µs at a full queue, seen by the pass after the force.
        let q = &f.st.stats.queue_while_forcing;
        assert_eq!((q.len(), q.max()), (100, lim.queue_depth as u64));

        // Pages that came while a stream was in flight go out when its last completions
        // empty the queue, unless they fit one lead (then the age timer or their forcer
        // sends them).
        let deep = Limits {
            queue_depth: 1024,
            ..lim.clone()
        };
        let mut f = direct();
        let mut sent = Vec::new();
        for (round, count) in [EAGER_BLOCKS as u64, 20, 3].into_iter().enumerate() {
            for i in 0..count {
                page(&mut f, ((round as u64) << 30) + scattered(i));
            }
            for op in sent.drain(..) {
                f.st.complete(op, 4096, &deep, f.now);
            }
            let out = plan(&mut f, &deep);
            sent = write_ops(&out);
            let want = if round == 2 { 0 } else { count as usize };
            assert_eq!(sent.len(), want, "round {round}: {out:?}");
        }
        assert_eq!(f.st.index.dirty_count(), 3, "fit for a lead, left to it");

        // As many blocks that fit one lead (adjacent pages, written backwards so that
        // none grows) wait for their forcer; the submitter, woken once for nothing, is
        // not woken again by rewrites or more of them.
        let mut f = direct();
        let top = 2 * EAGER_BLOCKS as u64;
        let woke = (top - EAGER_BLOCKS as u64..top)
            .rev()
            .filter(|&i| page(&mut f, i * 4096))
            .count();
        assert_eq!(woke, 1);
        assert!(
            plan(&mut f, &lim).is_empty(),
            "a commit that fits a lead was sent"
        );
        f.st.sleeping = true;
        assert!(!page(&mut f, (top - 1) * 4096), "a rewrite woke it again");
        for i in (0..EAGER_BLOCKS as u64).rev() {
            assert!(!page(&mut f, i * 4096), "page {i} woke it again");
        }
        assert!(
            plan(&mut f, &lim).is_empty(),
            "a commit that fits a lead was sent"
        );

        // So does an extent of as many pages (one block).
        let mut f = direct();
        for i in 0..4 * EAGER_BLOCKS as u64 {
            f.write_seq(i * 4096, 4096, 1);
        }
        assert!(f.st.index.dirty_count() < EAGER_BLOCKS);
        assert!(
            plan(&mut f, &lim).is_empty(),
            "sequential data was sent early"
        );

        // And scattered pages of a buffered file (a write there is a copy into the
        // page cache: the device works at the sync).
        let mut f = Fixture::new();
        (f.st.sleeping, f.st.timed_sleep) = (true, true);
        for i in 0..2 * EAGER_BLOCKS as u64 {
            assert!(!page(&mut f, scattered(i)), "page {i} woke the submitter");
        }
        assert!(
            f.plan().is_empty(),
            "a buffered file's pages were sent early"
        );
    }

    #[test]
    fn an_extent_grown_past_a_pending_shrink_waits_for_it() {
        let mut f = Fixture::new();
        f.write(8192, 4096, 1);
        let past = write_ops(&f.plan_forced()); // in flight past the new end
        f.write_seq(0, 2048, 2);
        f.st.set_len(4000); // waits for the write at 8192
                            // Growing the extent into the truncated range: written after the shrink.
        assert!(f.write_seq(2048, 4096, 3));
        let pushes = f.plan_forced();
        assert!(
            write_ops(&pushes).is_empty() && size_ops(&pushes).is_empty(),
            "{pushes:?}"
        );
        f.st.complete(past[0], 4096, &limits(), f.now);
        let pushes = f.plan_forced();
        assert_eq!(
            (size_ops(&pushes).len(), write_ops(&pushes).len()),
            (1, 0),
            "the ftruncate first: {pushes:?}"
        );
        f.st.complete(size_ops(&pushes)[0], 0, &limits(), f.now);
        let ops = write_ops(&f.plan_forced());
        assert_eq!(f.bytes_of(ops[0]).len(), 6144, "then the grown extent");
    }

    #[test]
    fn rewrite_in_flight_is_copy_on_write_and_waits_for_the_first_write() {
        let mut f = Fixture::new();
        f.write(0, 4096, 1);
        let w = f.force();
        let first = write_ops(&f.plan())[0];
        // Rewrite while in flight: the in-flight iovec still shows the old bytes.
        f.write(0, 4096, 2);
        assert!(
            f.bytes_of(first).iter().all(|&b| b == 1),
            "buffer in flight was modified"
        );
        let w2 = f.force();
        assert!(
            write_ops(&f.plan()).is_empty(),
            "a second write of the same range went out while the first is in flight"
        );
        f.st.complete(first, 4096, &limits(), f.now);
        let pushes = f.plan();
        let second = write_ops(&pushes);
        assert_eq!(
            second.len(),
            1,
            "the rewrite goes out after the first completes"
        );
        assert!(f.bytes_of(second[0]).iter().all(|&b| b == 2));
        // Neither force is satisfied: the first sync (if any) was not yet completed.
        assert!(f.st.take_result(w).is_none() && f.st.take_result(w2).is_none());
    }

    #[test]
    fn force_waits_for_completion_then_a_later_sync() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        f.write(1000, 100, 1);
        let w = f.force();
        let pushes = f.plan();
        let ops = write_ops(&pushes);
        assert_eq!(ops.len(), 2);
        assert!(
            !pushes.iter().any(|p| matches!(
                p,
                Push::Sync { .. }
                    | Push::Write {
                        linked_sync: Some(_),
                        ..
                    }
            )),
            "no sync before the writes complete: {pushes:?}"
        );
        f.st.complete(ops[0], 100, &limits(), f.now);
        assert!(
            !f.plan().iter().any(|p| matches!(p, Push::Sync { .. })),
            "one write still in flight"
        );
        f.st.complete(ops[1], 100, &limits(), f.now);
        let sync = f.plan_one_sync();
        assert!(
            f.st.take_result(w).is_none(),
            "woken before the sync completed"
        );
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        assert!(
            f.st.add_waiter(None, SyncMode::Data, std::thread::current())
                .is_none(),
            "nothing new to force"
        );
        // A later write needs a later sync: the first one does not cover it.
        f.write(0, 100, 2);
        assert!(
            f.st.add_waiter(None, SyncMode::Data, std::thread::current())
                .is_some(),
            "a new write counted as durable"
        );
    }

    #[test]
    fn next_sync_gathers_the_group_but_never_past_its_deadline() {
        let mut f = Fixture::new();
        f.write(0, 10, 1);
        let (a, b) = (f.force(), f.force());
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, 10, &limits(), f.now);
        f.write(10, 10, 2);
        let c = f.force(); // arrives while the sync runs
        f.now += Duration::from_micros(300);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(a).unwrap().is_ok() && f.st.take_result(b).unwrap().is_ok());
        // Two were served and one waits: the next sync waits for three, or the deadline.
        let pushes = f.plan();
        let [Push::Write {
            op: w2,
            linked_sync: None,
        }] = pushes[..]
        else {
            panic!("{pushes:?}")
        };
        f.st.complete(w2, 10, &limits(), f.now);
        assert!(f.plan().is_empty(), "sync sent before the group gathered");
        let timeout =
            f.st.timeout(&limits(), f.now)
                .expect("woken for the deadline");
        assert!(timeout <= Duration::from_micros(150), "{timeout:?}");
        f.now += timeout;
        let sync2 = f.plan_one_sync();
        f.st.complete(sync2, 0, &limits(), f.now);
        assert!(f.st.take_result(c).unwrap().is_ok());
    }

    #[test]
    fn a_forcer_leads_its_commit_and_hands_on_to_the_next() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        f.write(100, 100, 1);
        f.write(4096, 10, 1);
        let a = f.force();
        let a2 = f.force(); // another forcer of the same writes: one group
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, a, true) else {
            panic!("a forcer with little dirty data leads")
        };
        assert_eq!(lead.writes.len(), 2, "one write per run of dirty blocks");
        assert_eq!((lead.writes[0].offset, lead.writes[0].len), (0, 200));
        assert_eq!(
            f.st.index.dirty_count(),
            0,
            "the lead took every dirty block"
        );
        assert!(f.st.idle(), "a lead's requests bring no engine completion");
        // A write of the same range while the lead writes it is not sent by anybody.
        f.write(0, 100, 2);
        let b = f.force();
        assert!(matches!(
            f.st.next_step(&limits(), f.now, b, true),
            Next::Park
        ));
        assert!(
            write_ops(&f.plan()).is_empty(),
            "one write in flight per range"
        );
        let results = [200, 10];
        f.now += Duration::from_micros(300); // the sync took 300 us
        let wake =
            f.st.finish_lead(ran(lead, &results), Some(0), &limits(), f.now);
        assert!(!wake, "nothing for the submitter");
        assert!(f.st.take_result(a).unwrap().is_ok());
        assert!(f.st.take_result(a2).unwrap().is_ok());
        assert!(
            f.st.take_result(b).is_none(),
            "b's write came after the sync started"
        );
        // b is next: the group-commit hold (expected 3: two served, one waiting) until
        // half the sync's time (150 us), watched by b. b looks again only once a sync of a
        // full group would have completed (twice the sync's time, at most 400 us), so its
        // timer does not wake it in the middle of that sync.
        assert!(matches!(
            f.st.next_step(&limits(), f.now, b, true),
            Next::Wait(t) if t == f.now + Duration::from_micros(400)
        ));
        // ... which one forcer watches; others arriving meanwhile park without a timer.
        f.write(300, 10, 3);
        let c = f.force();
        assert!(matches!(
            f.st.next_step(&limits(), f.now, c, true),
            Next::Park
        ));
        // ... until the hold's deadline: a forcer looking after it leads what is ready.
        f.now += Duration::from_micros(200);
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, c, true) else {
            panic!("c leads after the hold")
        };
        assert_eq!(lead.writes.len(), 2, "b's and c's writes");
        f.st.finish_lead(ran(lead, &[100, 10]), Some(-libc::EIO), &limits(), f.now);
        for w in [b, c] {
            assert_eq!(
                f.st.take_result(w).unwrap().unwrap_err().raw_os_error(),
                Some(libc::EIO)
            );
        }
        assert!(
            f.st.check_failed().is_err(),
            "a leader's failed sync latches"
        );
    }

    #[test]
    fn a_lead_whose_write_falls_short_syncs_nothing_and_resubmits() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        let a = f.force();
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, a, true) else {
            panic!()
        };
        let op = lead.writes[0].op;
        f.st.sleeping = true;
        assert!(
            f.st.finish_lead(ran(lead, &[40]), None, &limits(), f.now),
            "wake to resubmit"
        );
        assert!(f.st.take_result(a).is_none(), "not durable");
        assert_eq!(f.st.stats.cancelled_fsyncs, 1);
        assert!(!f.st.idle(), "the rest is the engine's now");
        assert_eq!(
            f.plan(),
            vec![Push::Write {
                op,
                linked_sync: None
            }]
        );
        assert_eq!(
            f.bytes_of(op).len(),
            60,
            "resumed at the first unwritten byte"
        );
    }

    #[test]
    fn sync_all_owes_an_fsync_after_a_data_sync_and_groups_both_kinds() {
        let mut f = Fixture::new();
        let me = || std::thread::current();
        // Both kinds wait for one new write: no data sync linked behind it (the group
        // needs an fsync), then one fsync serves both.
        f.write(0, 10, 1);
        let data = f.force();
        let all = f.st.add_waiter(None, SyncMode::All, me()).unwrap();
        let pushes = f.plan();
        let [Push::Write {
            op,
            linked_sync: None,
        }] = pushes[..]
        else {
            panic!("{pushes:?}")
        };
        f.st.complete(op, 10, &limits(), f.now);
        let sync = f.plan_one_sync();
        assert_eq!(
            f.st.sync_mode(sync),
            SyncMode::All,
            "the group has a sync_all"
        );
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(all).unwrap().is_ok());
        assert!(
            f.st.take_result(data).unwrap().is_ok(),
            "served by the fsync"
        );
        assert!(
            f.st.add_waiter(None, SyncMode::All, me()).is_none(),
            "nothing changed since the fsync"
        );
        // A data force: a linked fdatasync.
        f.write(100, 10, 2);
        let w = f.force();
        let (op, sync) = f.plan_one_linked_write();
        assert_eq!(f.st.sync_mode(sync), SyncMode::Data);
        f.st.complete(op, 10, &limits(), f.now);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        assert!(f.st.add_waiter(None, SyncMode::Data, me()).is_none());
        // Every write is durable, but the file changed since the last fsync.
        let all = f.st.add_waiter(None, SyncMode::All, me());
        let all = all.expect("sync_all after a data sync must fsync");
        f.now += Duration::from_secs(1); // past the group hold
        let sync = f.plan_one_sync();
        assert_eq!(f.st.sync_mode(sync), SyncMode::All);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(all).unwrap().is_ok());
        assert!(f.st.add_waiter(None, SyncMode::All, me()).is_none());
    }

    #[test]
    fn no_timer_when_nothing_has_a_deadline() {
        let mut f = Fixture::new();
        assert_eq!(f.st.timeout(&limits(), f.now), None, "fresh handle");
        f.write(0, 10, 1);
        assert!(f.st.timeout(&limits(), f.now).is_some(), "dirty data ages");
        let w = f.force();
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, 10, &limits(), f.now);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        // The gather window is open, but nobody waits for a next sync.
        assert_eq!(
            f.st.timeout(&limits(), f.now),
            None,
            "gather with no waiter"
        );
        f.now += Duration::from_secs(1);
        assert!(f.plan().is_empty());
        assert_eq!(
            f.st.timeout(&limits(), f.now),
            None,
            "passed gather deadline"
        );
    }

    #[test]
    fn a_buffer_in_flight_is_not_reused_before_its_completion() {
        let mut f = Fixture::new();
        f.write(0, 4096, 1);
        let op = write_ops(&f.plan_forced())[0];
        let Op::Write(w) = f.st.op(op) else { panic!() };
        let in_flight = w.iovecs()[0].iov_base as *const u8;
        f.write(0, 4096, 2); // the index drops its reference; the op keeps the buffer
        let (other, _) = f.pool.reserve(4096, || {}).unwrap();
        assert_ne!(
            other.as_slice().as_ptr(),
            in_flight,
            "buffer reused while the kernel may read it"
        );
        drop(other);
        f.st.complete(op, 4096, &limits(), f.now);
        let (a, _) = f.pool.reserve(4096, || {}).unwrap();
        let (b, _) = f.pool.reserve(4096, || {}).unwrap();
        let reused = [a.as_slice().as_ptr(), b.as_slice().as_ptr()].contains(&in_flight);
        assert!(
            reused,
            "the buffer returns to the pool once its completion arrived"
        );
    }

    #[test]
    fn single_run_links_its_sync_and_a_short_write_cancels_it() {
        let mut f = Fixture::new();
        f.write(0, 8192, 1);
        let w = f.force();
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, 4096, &limits(), f.now); // short
        f.st.complete(sync, -libc::ECANCELED, &limits(), f.now);
        assert!(
            f.st.take_result(w).is_none(),
            "a cancelled fsync counted as success"
        );
        let pushes = f.plan();
        assert_eq!(
            pushes,
            vec![Push::Write {
                op,
                linked_sync: None
            }],
            "remainder resubmitted, no sync yet"
        );
        assert_eq!(
            f.bytes_of(op).len(),
            4096,
            "resumes at the first unwritten byte"
        );
        f.st.complete(op, 4096, &limits(), f.now);
        let sync2 = f.plan_one_sync();
        f.st.complete(sync2, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        assert_eq!(f.st.stats.short_writes, 1);
        assert_eq!(f.st.stats.cancelled_fsyncs, 1);
    }

    #[test]
    fn write_error_latches_keeps_blocks_and_fails_waiters() {
        let mut f = Fixture::new();
        f.write(0, 10, 7);
        let w = f.force();
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, -libc::EIO, &limits(), f.now);
        f.st.complete(sync, -libc::ECANCELED, &limits(), f.now);
        assert_eq!(
            f.st.take_result(w).unwrap().unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert_eq!(
            f.st.check_failed().unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert_eq!(
            f.st.index.dirty_count(),
            1,
            "unwritten data stays buffered and readable"
        );
        assert!(f.plan().is_empty(), "nothing is sent after a failure");
    }

    #[test]
    fn fsync_error_is_never_retried() {
        let mut f = Fixture::new();
        f.write(0, 10, 7);
        f.write(100, 10, 7);
        let w = f.force();
        for op in write_ops(&f.plan()) {
            f.st.complete(op, 10, &limits(), f.now);
        }
        let sync = f.plan_one_sync();
        f.st.complete(sync, -libc::EIO, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_err());
        f.force();
        assert!(f.plan().is_empty(), "a failed fsync was retried");
    }

    #[test]
    fn range_force_ignores_pending_writes_elsewhere() {
        let mut f = Fixture::new();
        f.write(0, 10, 1);
        f.write(1 << 20, 10, 1);
        let ops = write_ops(&f.plan_forced());
        f.st.complete(ops[0], 10, &limits(), f.now);
        let w =
            f.st.add_waiter(Some((0, 10)), SyncMode::Data, std::thread::current())
                .unwrap();
        let sync = f.plan_one_sync();
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
    }

    #[test]
    fn truncate_drops_unwritten_blocks_below_the_start() {
        let mut f = Fixture::new();
        f.write(0, 10, 1);
        f.write(10, 10, 1);
        f.write(15, 10, 1);
        f.st.truncate_start(12);
        assert_eq!(f.st.index.dirty_count(), 2);
        let ops = write_ops(&f.plan_forced());
        let Op::Write(w) = f.st.op(ops[0]) else {
            panic!()
        };
        assert_eq!(
            w.offset, 10,
            "the block partly below the start is still written"
        );
    }

    fn size_ops(pushes: &[Push]) -> Vec<usize> {
        pushes
            .iter()
            .filter_map(|p| match p {
                Push::Size { op } => Some(*op),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shrink_waits_for_writes_in_flight_past_it_and_holds_later_ones() {
        let mut f = Fixture::new();
        f.write(0, 4096, 1);
        f.write(8192, 4096, 2);
        let old = write_ops(&f.plan_forced());
        assert_eq!(old.len(), 2);
        f.write(20000, 100, 3); // dirty past the new end: dropped unwritten
        f.st.set_len(6000);
        assert_eq!(
            f.st.index.dirty_count(),
            0,
            "the dirty block past the end survived"
        );
        f.write(10000, 100, 4); // after the shrink, past it: must wait for the ftruncate
        let pushes = f.plan_forced();
        assert!(
            pushes.is_empty(),
            "ftruncate or a later write sent while a write past the end is in flight: {pushes:?}"
        );
        f.st.complete(old[0], 4096, &limits(), f.now);
        assert!(
            f.plan_forced().is_empty(),
            "the write at 8192 is still in flight"
        );
        f.st.complete(old[1], 4096, &limits(), f.now);
        let pushes = f.plan_forced();
        assert_eq!(
            (size_ops(&pushes).len(), write_ops(&pushes).len()),
            (1, 0),
            "{pushes:?}"
        );
        let Op::Size(op) = f.st.op(size_ops(&pushes)[0]) else {
            panic!()
        };
        assert_eq!(op.change, SizeChange::Truncate(6000));
        f.st.complete(size_ops(&pushes)[0], 0, &limits(), f.now);
        let later = write_ops(&f.plan_forced());
        assert_eq!(
            later.len(),
            1,
            "the later write goes out after the ftruncate"
        );
        assert_eq!(f.st.stats.size_changes, 1);
    }

    #[test]
    fn reads_see_zeros_past_a_pending_shrink() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        f.st.set_len(50);
        assert_eq!(f.st.barriers.stale_from(), 50);
        f.st.set_len(80);
        assert_eq!(
            f.st.barriers.stale_from(),
            50,
            "grown again, still not performed"
        );
        for op in size_ops(&f.plan_forced()) {
            f.st.complete(op, 0, &limits(), f.now);
        }
        let op = size_ops(&f.plan_forced())[0];
        f.st.complete(op, 0, &limits(), f.now);
        assert_eq!(f.st.barriers.stale_from(), u64::MAX);
    }

    #[test]
    fn force_after_a_lone_set_len_waits_for_it_and_a_later_sync() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        let w = f.force();
        let (op, sync) = f.plan_one_linked_write();
        f.st.complete(op, 100, &limits(), f.now);
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
        f.st.set_len(10);
        let w = f.force();
        let pushes = f.plan();
        let [Push::Size { op }] = pushes[..] else {
            panic!("expected the ftruncate alone first: {pushes:?}")
        };
        assert!(
            f.plan().is_empty(),
            "sync sent before the ftruncate completed"
        );
        f.st.complete(op, 0, &limits(), f.now);
        let sync = f.plan_one_sync();
        assert!(f.st.take_result(w).is_none());
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
    }

    #[test]
    fn punch_waits_for_writes_in_its_range_and_refusals_are_counted() {
        let mut f = Fixture::new();
        f.write(0, 8192, 1);
        f.write(8192, 8192, 2);
        let ops = write_ops(&f.plan_forced());
        f.st.truncate_start(9000);
        assert!(
            size_ops(&f.plan_forced()).is_empty(),
            "punch raced a write in flight"
        );
        for op in ops {
            f.st.complete(op, 16384, &limits(), f.now);
        }
        let punch = size_ops(&f.plan_forced());
        let Op::Size(op) = f.st.op(punch[0]) else {
            panic!()
        };
        assert_eq!(
            op.change,
            SizeChange::Punch {
                offset: 0,
                len: 8192
            }
        );
        f.st.complete(punch[0], -libc::EOPNOTSUPP, &limits(), f.now);
        assert_eq!((f.st.stats.punches_refused, f.st.failed), (1, None));
        f.st.truncate_start(20000.min(f.st.end));
        assert!(
            f.plan_forced().is_empty(),
            "punching goes on after EOPNOTSUPP"
        );
        // A failed ftruncate latches like any I/O error.
        f.st.set_len(20000);
        let t = size_ops(&f.plan_forced());
        f.st.complete(t[0], -libc::EIO, &limits(), f.now);
        assert_eq!(f.st.failed, Some(libc::EIO));
    }

    /// A lead keeps `barrier.rs`'s rules: a block held back behind a pending size change
    /// is never led (the forcer hands it to the submitter).
    #[test]
    fn a_lead_never_writes_a_block_held_behind_a_size_change() {
        let mut f = Fixture::new();
        f.write(0, 4096, 1);
        for op in write_ops(&f.plan_forced()) {
            f.st.complete(op, 4096, &limits(), f.now);
        }
        f.write(100, 10, 3);
        let early = f.force(); // could be served without the ftruncate
        f.st.set_len(2000);
        f.write(3000, 100, 2); // after the shrink, past it: waits for the ftruncate
        let w = f.force();
        assert!(
            matches!(
                f.st.next_step(&limits(), f.now, w, true),
                Next::WakeSubmitter
            ),
            "a lead would write a block the shrink holds back"
        );
        let pushes = f.plan();
        assert_eq!(
            (size_ops(&pushes).len(), write_ops(&pushes).len()),
            (1, 1),
            "{pushes:?}"
        );
        let write = write_ops(&pushes)[0];
        assert_eq!(f.bytes_of(write), vec![3; 10], "only the block at 100 goes");
        for p in pushes {
            match p {
                Push::Write { op, linked_sync } => {
                    f.st.complete(op, 10, &limits(), f.now);
                    if let Some(s) = linked_sync {
                        f.st.complete(s, 0, &limits(), f.now);
                    }
                }
                Push::Size { op } | Push::Sync { op } => f.st.complete(op, 0, &limits(), f.now),
            }
        }
        assert!(f.st.take_result(early).unwrap().is_ok());
        f.now += Duration::from_millis(1); // past the group-commit hold
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, w, true) else {
            panic!("the block is free once the ftruncate completed")
        };
        assert_eq!((lead.writes[0].offset, lead.writes[0].len), (3000, 100));
        f.st.finish_lead(ran(lead, &[100]), Some(0), &limits(), f.now);
        assert!(f.st.take_result(w).unwrap().is_ok());
    }

    /// A lead's sync covers no size change still pending: a forcer that came after a
    /// `set_len` is not served by it, one from before is.
    #[test]
    fn a_lead_sync_never_claims_a_pending_size_change() {
        let mut f = Fixture::new();
        f.write(0, 100, 1);
        let before = f.force();
        f.st.set_len(5000);
        let truncate_seq = f.st.last_seq;
        f.write(100, 100, 2); // below the new end: not held back
        let after = f.force();
        // Any forcer may lead the group it can serve: here, only `before`.
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, after, true) else {
            panic!("the forcer from before the set_len can be served: a lead")
        };
        assert_eq!((lead.writes[0].offset, lead.writes[0].len), (0, 200));
        f.st.finish_lead(ran(lead, &[200]), Some(0), &limits(), f.now);
        assert!(f.st.take_result(before).unwrap().is_ok());
        assert!(
            f.st.take_result(after).is_none(),
            "served past the ftruncate"
        );
        assert!(
            f.st.durable <= truncate_seq,
            "the lead's sync claimed the ftruncate"
        );
        assert!(matches!(
            f.st.next_step(&limits(), f.now, after, true),
            Next::WakeSubmitter
        ));
        let pushes = f.plan();
        let [Push::Size { op }] = pushes[..] else {
            panic!("expected the ftruncate alone: {pushes:?}")
        };
        f.st.complete(op, 0, &limits(), f.now);
        let sync = f.plan_one_sync();
        f.st.complete(sync, 0, &limits(), f.now);
        assert!(f.st.take_result(after).unwrap().is_ok());
    }

    /// A size change waits for a lead's writes in flight over its range, and the lead's
    /// end wakes the submitter to issue it.
    #[test]
    fn a_size_change_waits_for_a_lead_write_in_flight() {
        let mut f = Fixture::new();
        f.write(0, 4096, 1);
        let w = f.force();
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, w, true) else {
            panic!()
        };
        f.st.truncate_start(4096);
        assert!(
            size_ops(&f.plan_forced()).is_empty(),
            "punch raced the lead's write"
        );
        f.st.sleeping = true;
        assert!(
            f.st.finish_lead(ran(lead, &[4096]), Some(0), &limits(), f.now),
            "the submitter must be woken for the punch"
        );
        assert_eq!(size_ops(&f.plan_forced()).len(), 1);
    }

    /// Appends into the preallocated window still lead, while the zero fill that keeps
    /// the window ahead of them is in flight; the first lead asks the submitter for it.
    #[test]
    fn appends_into_preallocated_space_lead_while_a_fill_is_in_flight() {
        let mut f = Fixture::new();
        f.st.barriers = Barriers::new(1, Some(4096), 1 << 20, 0);
        f.write(0, 100, 1);
        let a = f.force();
        f.st.sleeping = true;
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, a, true) else {
            panic!("a small append leads")
        };
        assert!(lead.wake_submitter, "the window must be filled");
        f.st.finish_lead(ran(lead, &[100]), Some(0), &limits(), f.now);
        assert!(f.st.take_result(a).unwrap().is_ok());
        let fill = size_ops(&f.plan());
        let Op::Size(op) = f.st.op(fill[0]) else {
            panic!()
        };
        assert!(
            matches!(op.change, SizeChange::ZeroFill { offset: 4096, .. }),
            "{:?}",
            op.change
        );
        f.now += Duration::from_millis(1); // past the group-commit hold
        f.write(100, 100, 2);
        let b = f.force();
        let Next::Lead(lead) = f.st.next_step(&limits(), f.now, b, true) else {
            panic!("an append below the fill leads while the fill is in flight")
        };
        assert!(!lead.wake_submitter, "the window is being filled");
        f.st.finish_lead(ran(lead, &[100]), Some(0), &limits(), f.now);
        assert!(f.st.take_result(b).unwrap().is_ok());
        f.st.complete(fill[0], 0, &limits(), f.now);
        assert_eq!(f.st.failed, None);
    }

    /// Space a growing `set_len` added is zero-filled ahead of the writes into it, never
    /// over a byte written since the `set_len`, and a write into a fill still pending is
    /// sent only after it (`barrier.rs`).
    #[test]
    fn zero_fills_of_grown_space_never_land_on_later_writes() {
        zero_fills_skip_the_write(Fixture::write);
    }

    /// The same with the write packed into a shared buffer (`State::pack`): every way of
    /// storing a write tells the barriers.
    #[test]
    fn zero_fills_of_grown_space_never_land_on_packed_writes() {
        // The write's first half starts a packing buffer, its second half is packed.
        zero_fills_skip_the_write(|f: &mut Fixture, off, len, byte| {
            let half = len / 2;
            assert!(
                !f.write_packed(off, half, byte),
                "starts the packing buffer"
            );
            assert!(f.write_packed(off + half as u64, half, byte), "packed");
        });
    }

    fn zero_fills_skip_the_write(write: impl Fn(&mut Fixture, u64, usize, u8)) {
        const MB: u64 = 1 << 20;
        let mut f = Fixture::new();
        f.st.barriers = Barriers::new(1, Some(4096), MB, 0);
        f.st.set_len(8 * MB);
        write(&mut f, 4096, 4096, 1);
        // Runs every request until a fill of the grown space (below the end) is pending.
        let mut fills = Vec::new();
        let grown_fill = loop {
            let pushes = f.plan_forced();
            assert!(!pushes.is_empty(), "no fill of the grown space: {fills:?}");
            let mut found = None;
            for p in pushes {
                let Push::Size { op } = p else {
                    let (Push::Write { op, .. } | Push::Sync { op }) = p else {
                        unreachable!()
                    };
                    f.st.complete(op, 4096, &limits(), f.now);
                    continue;
                };
                let Op::Size(SizeOp { change }) = f.st.op(op) else {
                    unreachable!()
                };
                match *change {
                    SizeChange::ZeroFill { offset, len } if offset < 8 * MB => {
                        found = Some((op, offset, len));
                    }
                    SizeChange::ZeroFill { offset, len } => {
                        fills.push((offset, len));
                        f.st.complete(op, len as i32, &limits(), f.now);
                    }
                    _ => f.st.complete(op, 0, &limits(), f.now),
                }
            }
            if let Some(fill) = found {
                break fill;
            }
        };
        let (fill, offset, len) = grown_fill;
        assert_eq!(
            (offset, len),
            (8192, MB),
            "above the write, a window's worth"
        );
        // A write into the pending fill waits for it; one below it does not.
        f.write(16384, 4096, 2);
        f.write(0, 4096, 3);
        let sent: Vec<u64> = write_ops(&f.plan_forced())
            .into_iter()
            .map(|op| {
                let Op::Write(w) = f.st.op(op) else {
                    unreachable!()
                };
                w.offset
            })
            .collect();
        assert_eq!(sent, [0], "the write into the fill waits");
        f.st.complete(fill, len as i32, &limits(), f.now);
        assert!(f
            .plan()
            .iter()
            .any(|p| matches!(p, Push::Write { op, .. } if matches!(f.st.op(*op), Op::Write(w) if w.offset == 16384))));
        assert_eq!(f.st.failed, None);
    }

    impl Fixture {
        fn plan_forced(&mut self) -> Vec<Push> {
            let mut out = Vec::new();
            self.st.plan(&limits(), self.now, true, &mut out);
            out
        }
    }

    /// `check_invariants` catches each corruption below (debug builds, where it runs
    /// after every transition): a fixture with two separate dirty blocks, a write in
    /// flight for each, and a force waiting.
    #[cfg(debug_assertions)]
    mod invariants {
        use super::*;

        /// Two writes in flight ([0, 4096) and [8192, 12288)) and a waiter.
        fn busy() -> (Fixture, usize) {
            let mut f = Fixture::new();
            f.write(0, 4096, 1);
            f.write(8192, 4096, 2);
            let key = f.force();
            let writes = write_ops(&f.plan());
            assert_eq!(writes.len(), 2, "two runs in flight");
            f.st.check_invariants();
            (f, key)
        }

        #[test]
        #[should_panic(expected = "a spare vector holds something")]
        fn spare_vector_not_emptied() {
            let (mut f, _) = busy();
            f.st.spare.lead_results.push(0);
            f.st.check_invariants();
        }

        #[test]
        fn the_fixture_passes() {
            let (mut f, _) = busy();
            f.write(20000, 100, 3);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "blocks overlap at 2048")]
        fn overlapping_blocks() {
            let mut f = Fixture::new();
            f.write(0, 4096, 1);
            f.write(8192, 4096, 2);
            f.st.index.corrupt_move(8192, 2048);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "writes in flight overlap at 8192")]
        fn two_writes_in_flight_over_one_range() {
            let (mut f, _) = busy();
            f.st.inflight.insert(0, 10_000);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "is not the one in flight at 8192")]
        fn a_write_op_without_its_range() {
            let (mut f, _) = busy();
            f.st.inflight.remove(&8192);
            f.st.inflight.insert(8192, 8193);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "dirty block count")]
        fn a_block_sent_behind_the_dirty_counts_back() {
            let mut f = Fixture::new();
            f.write(0, 4096, 1);
            f.write(8192, 4096, 2);
            // Block 8192 is marked in flight without `mark_flushing`: the dirty count the
            // planner and `flush` rely on no longer matches the blocks.
            f.st.index.corrupt_flushing(8192, 7);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "by-seq heap top")]
        fn oldest_dirty_seq_not_the_blocks() {
            let mut f = Fixture::new();
            f.write(0, 4096, 1);
            f.write(8192, 4096, 2);
            // Block 8192 (seq 2) claims to be older than block 0 (seq 1): the heap's top,
            // the oldest pending seq, no longer matches the blocks.
            f.st.index.corrupt_seq(8192, 0);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "below durable")]
        fn oldest_pending_seq_older_than_durable() {
            let (mut f, _) = busy();
            f.st.durable = f.st.last_seq + 1;
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "writes_inflight vs write ops")]
        fn write_count_off() {
            let (mut f, _) = busy();
            f.st.writes_inflight += 1;
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "sync_inflight vs sync ops")]
        fn sync_in_flight_that_is_no_op() {
            let (mut f, _) = busy();
            f.st.sync_inflight = Some(999);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "caller_writes vs leaders' write ops")]
        fn caller_write_count_off() {
            let (mut f, _) = busy();
            f.st.caller_writes = 1;
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "which is not in flight")]
        fn waiter_on_a_sync_that_is_gone() {
            let (mut f, key) = busy();
            f.st.waiters[key].sync = Some(999);
            f.st.check_invariants();
        }

        #[test]
        #[should_panic(expected = "has no result on a failed handle")]
        fn waiter_left_without_a_result() {
            let (mut f, _) = busy();
            f.st.failed = Some(libc::EIO);
            f.st.check_invariants();
        }
    }
}
