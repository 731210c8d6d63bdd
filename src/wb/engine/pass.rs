//! The submission thread of an [`Engine`](super::Engine): the only user of its I/O
//! engine (and so of the ring), serving every file on its roster.
//!
//! Each pass, for each file in turn under that file's state lock: apply the completions
//! collected last time, ask the file's planner what to send, and push it to the I/O
//! engine (pushing only fills SQEs or a queue). Then, outside every lock, submit what all
//! files pushed in one call and wait for completions, a wake-up or the earliest timer of
//! any file. A request's `user_data` is its file's slot on the roster (high 32 bits) and
//! the op's key in that file's state (low 32 bits).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::backend::{Completion, IoEngine, Target};
use super::Hub;
use crate::wb::state::{Limits, Op, Push, State};
use crate::wb::Inner;
use std::os::fd::AsRawFd;

/// After this many consecutive engine failures the thread gives up (see `run`).
const MAX_ENGINE_ERRORS: u32 = 3;

/// Bytes of direct writes the engine keeps in flight, shared among its busy files, while
/// it serves more than one file. A direct write waits in the device's queue behind every
/// byte sent before it, so a file streaming merged writes (up to 4 MiB each) could
/// otherwise put the whole memory budget ahead of a sibling's 4 KiB commit.
const SHARED_DIRECT_BYTES: u64 = 16 << 20;

/// With [`SHARED_DIRECT_BYTES`], a file's share is cut into about this many writes (fewer,
/// larger writes cost less CPU; more keep the device busy).
const SHARED_DIRECT_WRITES: u64 = 8;

/// A file on the roster.
struct Slot {
    inner: Arc<Inner>,
    /// Dropped when the file leaves the roster: its `close` returns then.
    _done: mpsc::Sender<()>,
    /// Writers waiting for buffer space have been told of the file's failure.
    pool_failed: bool,
    /// The file's `last_seq` at the previous pass (see the age clock in `pass`).
    seen_seq: u64,
    /// When the file must be visited again without being woken (its timer).
    deadline: Option<Instant>,
    /// Its writes in flight in the engine, and whether it had dirty data, as of its
    /// last visit (see `Depth`).
    inflight: usize,
    busy: bool,
}

/// The roster: files by slot; a slot is reused only once its file left, which it does
/// only with nothing in flight, so a completion always finds the file that sent it.
#[derive(Default)]
struct Roster {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
}

impl Roster {
    /// Puts the file in a free slot; returns the slot.
    fn add(&mut self, inner: Arc<Inner>, done: mpsc::Sender<()>) -> usize {
        let seen_seq = inner.lock().last_seq;
        let slot = Slot {
            inner,
            _done: done,
            pool_failed: false,
            seen_seq,
            deadline: None,
            inflight: 0,
            busy: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// The engine's queue depth ([`EngineConfig::queue_depth`](crate::EngineConfig)), shared
/// among the files with dirty data or writes in flight: each may keep its fair part
/// (`depth / busy files`) in flight, and more while the engine has depth to spare. So one
/// file streaming writes cannot keep a sibling's writes out, and a file alone has the
/// whole depth. The total stays within `depth` plus what files below their fair part
/// add (at most `depth` more).
struct Depth {
    depth: usize,
    inflight: usize,
    busy: usize,
    /// The engine serves more than one file (this pass).
    shared: bool,
}

impl Depth {
    /// How many writes a file with `inflight` in flight may have after its part of this
    /// pass.
    fn allowed(&self, inflight: usize) -> usize {
        let fair = (self.depth / self.busy.max(1)).max(1);
        let spare = self.depth.saturating_sub(self.inflight);
        fair.max(inflight + spare)
    }

    /// Accounts for a file's use after its part of the pass (`was`: its slot's figures,
    /// updated).
    fn update(&mut self, was: (&mut usize, &mut bool), (inflight, dirty): (usize, bool)) {
        self.inflight = self.inflight - *was.0 + inflight;
        let busy = inflight > 0 || dirty;
        self.busy = self.busy + usize::from(busy) - usize::from(*was.1);
        (*was.0, *was.1) = (inflight, busy);
    }

    /// The limits the planner of a file with `inflight` writes in flight works within
    /// this pass (`None`: its own, `base`): its part of the depth and, for a direct file
    /// while the engine serves others, of [`SHARED_DIRECT_BYTES`], spent as at most its
    /// part of the depth in writes of a size that keeps their sum within it.
    fn limits(&self, inflight: usize, base: &Limits, direct: bool) -> Option<Limits> {
        let allowed = self.allowed(inflight).min(base.queue_depth);
        if !(direct && self.shared) {
            return (allowed < base.queue_depth).then(|| Limits {
                queue_depth: allowed,
                ..base.clone()
            });
        }
        // A sibling not counted busy (its forcers write its data themselves) still
        // wants the device: keep a part for it.
        let share = SHARED_DIRECT_BYTES / self.busy.max(2) as u64;
        let align = base.align.max(1);
        let parts = (allowed as u64).clamp(1, SHARED_DIRECT_WRITES);
        let size = (share / parts / align * align)
            .min(base.max_write_bytes)
            .max(align);
        let count = ((share / size) as usize).clamp(1, allowed);
        Some(Limits {
            queue_depth: count,
            max_write_bytes: size,
            ..base.clone()
        })
    }

    /// A slot left the roster.
    fn remove(&mut self, slot: &Slot) {
        self.inflight -= slot.inflight;
        self.busy -= usize::from(slot.busy);
    }
}

/// The user_data of op `key` of the file in `slot`.
fn user_data(slot: usize, key: usize) -> u64 {
    debug_assert!(key < 1 << 32 && slot < 1 << 31, "slot {slot} op {key}");
    ((slot as u64) << 32) | key as u64
}

pub(crate) fn run(hub: Arc<Hub>, mut io: Box<dyn IoEngine>) {
    let mut roster = Roster::default();
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(&hub, &mut *io, &mut roster)
    }));
    let (code, leak) = match served {
        Ok(None) => (None, false),
        Ok(Some(code)) => (Some(code), true),
        // A bug, not an I/O error: still, nobody may wait forever.
        Err(_) => (Some(libc::EIO), false),
    };
    let arrived = {
        let mut r = hub.lobby();
        r.stopped = Some(code.unwrap_or(libc::EBADF));
        std::mem::take(&mut r.arriving)
    };
    for a in arrived {
        roster.add(a.inner, a.done);
    }
    if !leak {
        // Lets the kernel finish whatever is in flight before buffers are freed.
        drop(io);
    }
    for slot in roster.slots.into_iter().flatten() {
        let inner = slot.inner;
        if let Some(code) = code {
            let mut st = inner.lock();
            st.fail(code);
            if leak {
                // The engine cannot report completions any more, so the kernel may
                // still be reading buffers of in-flight writes, or using the file's
                // descriptor: never free them.
                st.leak_in_flight();
                std::mem::forget(Arc::clone(&inner));
            }
        }
        inner.pool.fail(code.unwrap_or(libc::EBADF));
    }
}

/// Runs passes until the engine is dropped and its last file has left (`None`), or the
/// I/O engine failed for good (`Some(errno)`).
fn serve(hub: &Hub, io: &mut dyn IoEngine, roster: &mut Roster) -> Option<i32> {
    let mut completions: Vec<Completion> = Vec::new();
    let mut pushes: Vec<Push> = Vec::new();
    // (slot, index of its first completion), kept across passes for its capacity.
    let mut by_slot: Vec<(usize, usize)> = Vec::new();
    let mut engine_errors = 0;
    let mut depth = Depth {
        depth: hub.cfg.queue_depth as usize,
        inflight: 0,
        busy: 0,
        shared: false,
    };
    // Where the walk over the roster starts: it moves on every pass, so that no file
    // always gets the first pick of the engine's spare depth (round-robin).
    let mut first_slot = 0;
    loop {
        {
            let mut r = hub.lobby();
            for a in r.arriving.drain(..) {
                #[cfg(feature = "fault-injection")]
                let faults = a.inner.faults.clone();
                let _id = roster.add(a.inner, a.done);
                #[cfg(feature = "fault-injection")]
                if faults.is_some() {
                    io.set_faults(_id, faults);
                }
            }
            if roster.is_empty() && r.engine_gone {
                r.stopped = Some(libc::EBADF);
                return None;
            }
        }
        // Stable: a file's completions keep their order (a write before its linked sync).
        completions.sort_by_key(|c| c.user_data >> 32);
        let mut next = 0;
        let mut timeout: Option<Duration> = None;
        let now = Instant::now();
        let mut left = false;
        // A writer of some file waits for budget that other files may hold: visit them
        // all, so that each flushes what it has (see `Pool::space_wanted`).
        let space_wanted = hub.budget.waiting() > 0;
        depth.shared = roster.len() > 1;
        let n = roster.slots.len();
        first_slot = if n == 0 { 0 } else { (first_slot + 1) % n };
        // Completions by slot, found before the walk (which does not go in slot order).
        by_slot.clear();
        for (i, c) in completions.iter().enumerate() {
            let id = (c.user_data >> 32) as usize;
            match by_slot.last_mut() {
                Some((last, _)) if *last == id => {}
                _ => by_slot.push((id, i)),
            }
        }
        let completed = |id: usize| -> &[Completion] {
            match by_slot.binary_search_by_key(&id, |&(s, _)| s) {
                Ok(k) => {
                    let start = by_slot[k].1;
                    let end = by_slot.get(k + 1).map_or(completions.len(), |&(_, e)| e);
                    &completions[start..end]
                }
                Err(_) => &[],
            }
        };
        for id in (first_slot..n).chain(0..first_slot) {
            let entry = &mut roster.slots[id];
            let Some(slot) = entry else { continue };
            let mine = completed(id);
            next += mine.len();
            let due = slot.deadline.is_some_and(|d| d <= now);
            // Only files with something to do: woken, completions, or a timer due.
            if slot.inner.waker.take() || !mine.is_empty() || due || space_wanted {
                match pass(slot, id, mine, io, &mut pushes, now, &mut depth) {
                    After::Left => {
                        #[cfg(feature = "fault-injection")]
                        if slot.inner.faults.is_some() {
                            io.set_faults(id, None);
                        }
                        depth.remove(slot);
                        *entry = None;
                        roster.free.push(id);
                        left = true;
                        continue;
                    }
                    After::Wait(t) => slot.deadline = t.map(|t| now + t),
                }
            }
            if let Some(d) = slot.deadline {
                let t = d.saturating_duration_since(now);
                timeout = Some(timeout.map_or(t, |u| u.min(t)));
            }
        }
        debug_assert_eq!(next, completions.len(), "completions of unknown files");
        completions.clear();
        if left && roster.is_empty() {
            // Maybe the last file of a dropped engine: check before sleeping.
            continue;
        }
        match io.wait(timeout, &mut completions) {
            Ok(()) => engine_errors = 0,
            Err(e) => {
                let code = e.raw_os_error().unwrap_or(libc::EIO);
                for slot in roster.slots.iter().flatten() {
                    slot.inner.lock().fail(code);
                    slot.inner.waker.mark();
                }
                engine_errors += 1;
                if engine_errors >= MAX_ENGINE_ERRORS {
                    log::error!("writebehind: I/O engine failed ({e}); stopping write-back");
                    return Some(code);
                }
            }
        }
        let enters = io.enters();
        hub.enters.store(enters.all, Relaxed);
        hub.submits.store(enters.submitting, Relaxed);
    }
}

/// What a file needs after its part of a pass.
enum After {
    /// Closed and written back: it leaves the roster.
    Left,
    /// Come back within this long (`None`: when woken or a completion arrives).
    Wait(Option<Duration>),
}

/// One file's part of a pass: apply `mine` (its completions), plan, push.
fn pass(
    slot: &mut Slot,
    id: usize,
    mine: &[Completion],
    io: &mut dyn IoEngine,
    pushes: &mut Vec<Push>,
    now: Instant,
    depth: &mut Depth,
) -> After {
    let inner = &*slot.inner;
    let mut st = inner.lock();
    st.sleeping = false;
    for c in mine {
        st.complete(
            (c.user_data & 0xffff_ffff) as usize,
            c.result,
            &inner.limits,
            now,
        );
    }
    let limits = depth.limits(slot.inflight, &inner.limits, inner.direct);
    st.plan(
        limits.as_ref().unwrap_or(&inner.limits),
        now,
        inner.pool.space_wanted(),
        pushes,
    );
    let target = Target {
        fd: inner.file.as_raw_fd(),
        sync: inner.limits.sync,
    };
    for p in pushes.drain(..) {
        push(io, &mut st, p, id, target, inner, now);
    }
    if let (Some(code), false) = (st.failed, slot.pool_failed) {
        // Writers waiting for space would wait for a flush that will not come.
        inner.pool.fail(code);
        slot.pool_failed = true;
    }
    depth.update((&mut slot.inflight, &mut slot.busy), st.queue_use());
    if st.finished() {
        drop(st);
        inner.pool.fail(libc::EBADF);
        return After::Left;
    }
    st.sleeping = st.idle();
    let mut timeout = st.timeout(&inner.limits, now);
    // While writes keep coming, come back at least every dirty age: then a write that
    // finds no dirty data need not wake us to start the age clock (a syscall and a
    // thread switch per commit). Once a whole period passes with no new write, sleep
    // without a timer.
    let age = inner.limits.max_dirty_age;
    if std::mem::replace(&mut slot.seen_seq, st.last_seq) != st.last_seq {
        timeout = Some(timeout.map_or(age, |t| t.min(age)));
    }
    st.timed_sleep = timeout.is_some_and(|t| t <= age);
    After::Wait(timeout)
}

/// Hands one planned request to the I/O engine. A request the engine refuses completes
/// at once with its error, so the state machine never waits for it.
fn push(
    io: &mut dyn IoEngine,
    st: &mut State,
    p: Push,
    id: usize,
    target: Target,
    inner: &Inner,
    now: Instant,
) {
    let result = match p {
        Push::Write { op, linked_sync } => {
            let Op::Write(w) = st.op(op) else {
                unreachable!("write push names a write op")
            };
            let iov = w.iovecs();
            // SAFETY: the iovecs point into buffers the op holds (`Arc<PoolBuf>`), at bytes
            // below each buffer's filled length, which are never written while shared (an
            // extent grows only past it, and never while in flight: `pool.rs`); the op,
            // its iovec array and the buffers stay in the state until this request's
            // completion has been applied; the file stays open (its slot holds it) until
            // then too.
            unsafe {
                io.push_write(
                    user_data(id, op),
                    target,
                    w.next_offset(),
                    iov.as_ptr(),
                    iov.len() as u32,
                    linked_sync.map(|s| user_data(id, s)),
                )
            }
            .map_err(|e| (op, linked_sync, e))
        }
        Push::Sync { op } => io
            .push_sync(user_data(id, op), target.fd, st.sync_mode(op))
            .map_err(|e| (op, None, e)),
        Push::Size { op } => {
            let Op::Size(s) = st.op(op) else {
                unreachable!("size push names a size op")
            };
            io.push_size(user_data(id, op), target.fd, s.change)
                .map_err(|e| (op, None, e))
        }
    };
    if let Err((op, linked, e)) = result {
        // A refused submission was never sent: a write is resubmitted (as after EAGAIN),
        // after a pause (see `State::timeout`).
        let code = match e.raw_os_error() {
            Some(libc::EBUSY | libc::EAGAIN) => -libc::EAGAIN,
            code => -code.unwrap_or(libc::EIO),
        };
        st.complete(op, code, &inner.limits, now);
        if let Some(sync) = linked {
            st.complete(sync, -libc::ECANCELED, &inner.limits, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;

    fn base(align: u64) -> Limits {
        Limits {
            queue_depth: 128,
            max_write_bytes: 4 << 20,
            watermark: 1 << 20,
            max_dirty_age: Duration::from_millis(10),
            align,
            sync: SyncMode::Data,
        }
    }

    fn depth(busy: usize, inflight: usize, shared: bool) -> Depth {
        Depth {
            depth: 128,
            inflight,
            busy,
            shared,
        }
    }

    #[test]
    fn a_direct_file_beside_others_keeps_its_bytes_in_flight_within_its_share() {
        for busy in [0, 1, 2, 3, 16, 64, 1000] {
            for inflight in [0, 1, 8, 100] {
                let d = depth(busy, inflight, true);
                let lim = d.limits(inflight, &base(512), true).expect("capped");
                let share = SHARED_DIRECT_BYTES / busy.max(2) as u64;
                assert!(lim.queue_depth >= 1 && lim.max_write_bytes >= 512);
                assert_eq!(lim.max_write_bytes % 512, 0, "aligned");
                assert!(
                    lim.queue_depth as u64 * lim.max_write_bytes <= share.max(512),
                    "busy {busy}: {} writes of {} bytes exceed a share of {share}",
                    lim.queue_depth,
                    lim.max_write_bytes
                );
                assert!(
                    lim.queue_depth <= d.allowed(inflight),
                    "within its part of the depth"
                );
            }
        }
        // Alone with a sibling that writes its own data: half of the bytes, as 8 writes.
        let lim = depth(1, 0, true).limits(0, &base(512), true).unwrap();
        assert_eq!((lim.queue_depth, lim.max_write_bytes), (8, 1 << 20));
    }

    #[test]
    fn alone_or_buffered_only_the_depth_is_shared() {
        // Alone on its engine: its own limits.
        assert!(depth(1, 0, false).limits(0, &base(512), true).is_none());
        // Buffered, beside a file with dirty data: its part of the depth, full-size writes.
        let lim = depth(2, 128, true).limits(0, &base(1), false).unwrap();
        assert_eq!((lim.queue_depth, lim.max_write_bytes), (64, 4 << 20));
    }
}
