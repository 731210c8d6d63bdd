//! The buffer pool: aligned buffers recycled by size class, and the memory budget that
//! makes writers wait (backpressure) instead of growing without bound.
//!
//! One [`Budget`] per engine holds the bytes all its files share, and the free lists
//! (a buffer's alignment follows from its size class, so any file can reuse any cached
//! buffer). Each file's [`Pool`] is its account in that budget: its live bytes and
//! buffers, its own caps, its error latch and its waiting writers.
//!
//! The sharing rule. Each file with writers (live buffers or writers waiting) has a
//! minimum share of `budget / SHARE_DIVISOR` bytes: a request that keeps its file within
//! its share is granted as soon as the engine's total allows it, whoever else waits.
//! What lies beyond the shares is first come, first served across the engine, and a
//! request for it must leave the unused shares of the other files with writers free. So
//! a file flooding writes can hold the budget only until it writes back; then its
//! sibling's share is kept out of its reach. Live bytes never exceed the budget, except
//! by one request that could never fit beside the others' shares: it is granted when its
//! file holds nothing, it is first in line, and no file holds more than its share.
//!
//! Lock order: the handle's state lock may be held while taking the budget lock (a buffer
//! dropped under the state lock returns here), never the other way round.
//!
//! Writers that must wait queue up per file in arrival order, and only a file's first in
//! line is woken when space may have appeared. Waking every waiter on every freed buffer
//! (a condvar's `notify_all`) made 100 writers on a budget of 8 buffers spend their time
//! in the scheduler; waking one waiter of many sizes at random could wake one whose
//! buffer does not fit while another's would, and leave that one asleep for good.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::aligned::AlignedBuf;
use crate::buffer::Bytes;
use crate::error::os;

/// Each file with writers is guaranteed `1 / SHARE_DIVISOR` of its engine's budget.
pub(crate) const SHARE_DIVISOR: usize = 16;

/// Size class of a buffer holding `len` bytes: (capacity, alignment). Pages and larger
/// are 4 KiB-aligned multiples of 4 KiB; smaller records get a power of two (at least
/// `min_align`, the direct-I/O alignment in direct mode), naturally aligned. The
/// alignment depends on the capacity only, so a cached buffer suits every file.
fn class(len: usize, min_align: usize) -> (usize, usize) {
    if len >= 4096 {
        (len.div_ceil(4096) * 4096, 4096)
    } else {
        let cap = len.max(min_align).max(64).next_power_of_two();
        (cap, cap)
    }
}

/// An engine's memory budget, shared by its files' pools.
pub(crate) struct Budget {
    state: Mutex<BudgetState>,
    /// Writers waiting in any file, readable without the lock.
    waiting: AtomicUsize,
    max_bytes: usize,
    /// The minimum share of each file with writers.
    share: usize,
}

struct BudgetState {
    /// Unused buffers by capacity, each held only here (ready for `Arc::get_mut`).
    free: HashMap<usize, Vec<Arc<PoolBuf>>>,
    free_bytes: usize,
    live_bytes: usize,
    /// The most `live_bytes` has been (for tests of the bound).
    peak_bytes: usize,
    /// Over the files with writers: what they hold below their share, still kept for
    /// them (`Account::unused_share`), and what they hold above it (`Account::over`).
    unused_shares: usize,
    over_bytes: usize,
    /// Accounts by file id; an id is reused once its pool is gone.
    files: Vec<Option<Account>>,
    free_ids: Vec<usize>,
    /// Files with waiting writers, in the arrival order of each one's first in line.
    queue: VecDeque<usize>,
    next_ticket: u64,
}

/// One file's part of the budget.
struct Account {
    live_bytes: usize,
    live_count: usize,
    /// The file's own caps ([`Config::buffer_bytes`](crate::Config::buffer_bytes) within
    /// the engine's budget, and `max_blocks`).
    max_bytes: usize,
    max_buffers: usize,
    /// Set when the file failed or closed: its waiting writers give up with this errno.
    failed: Option<i32>,
    /// Writers waiting for space, first come first served.
    waiters: VecDeque<SpaceWaiter>,
}

/// A writer waiting for a buffer of `cap` bytes.
struct SpaceWaiter {
    ticket: u64,
    cap: usize,
    thread: Thread,
}

/// Whether a request fits now, and if not, whose limit stops it.
#[derive(PartialEq, Eq)]
enum Fit {
    Now,
    /// The file's own caps: it waits for its own write-back.
    FileFull,
    /// The engine's budget.
    EngineFull,
}

impl Account {
    fn has_writers(&self) -> bool {
        self.live_count > 0 || !self.waiters.is_empty()
    }

    /// The part of its share the file does not use yet, kept for it while it has writers.
    fn unused_share(&self, share: usize) -> usize {
        if self.has_writers() {
            share.saturating_sub(self.live_bytes)
        } else {
            0
        }
    }

    fn over(&self, share: usize) -> usize {
        self.live_bytes.saturating_sub(share)
    }

    /// Whether the file's own caps allow `cap` more bytes. A request larger than the
    /// file's cap fits when the file holds nothing else, so it cannot wait forever.
    fn admits(&self, cap: usize) -> bool {
        self.live_count == 0
            || (self.live_count < self.max_buffers && self.live_bytes + cap <= self.max_bytes)
    }
}

impl BudgetState {
    fn account(&self, id: usize) -> &Account {
        self.files[id]
            .as_ref()
            .expect("a pool's account lives as long as the pool")
    }

    /// Changes file `id`'s account by `f`, keeping the engine-wide sums in step.
    fn update<R>(&mut self, id: usize, share: usize, f: impl FnOnce(&mut Account) -> R) -> R {
        let a = self.files[id]
            .as_mut()
            .expect("a pool's account lives as long as the pool");
        let (unused, over) = (a.unused_share(share), a.over(share));
        let r = f(a);
        self.unused_shares = self.unused_shares - unused + a.unused_share(share);
        self.over_bytes = self.over_bytes - over + a.over(share);
        r
    }

    /// Puts file `id` in the queue at its first waiter's place (or out, if none).
    fn requeue(&mut self, id: usize) {
        self.queue.retain(|&f| f != id);
        let Some(t) = self.account(id).waiters.front().map(|w| w.ticket) else {
            return;
        };
        let head = |f: usize| self.account(f).waiters.front().map_or(0, |w| w.ticket);
        let at = self
            .queue
            .iter()
            .position(|&f| head(f) > t)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, id);
    }
}

impl BudgetState {
    /// Debug builds, while the engine has at most 64 files (the walk visits them all):
    /// the sums `update` keeps agree with the accounts, the waiting count with the
    /// waiters, and the queue holds each file with waiters once, by its first's arrival.
    fn check_invariants(&self, share: usize, waiting: usize) {
        if !cfg!(debug_assertions) || self.files.len() > 64 {
            return;
        }
        let accounts = || self.files.iter().flatten();
        let sum = |f: &dyn Fn(&Account) -> usize| accounts().map(f).sum::<usize>();
        assert_eq!(sum(&|a| a.live_bytes), self.live_bytes, "live bytes");
        assert_eq!(sum(&|a| a.unused_share(share)), self.unused_shares);
        assert_eq!(sum(&|a| a.over(share)), self.over_bytes);
        assert_eq!(sum(&|a| a.waiters.len()), waiting, "waiting writers");
        let with_waiters = accounts().filter(|a| !a.waiters.is_empty()).count();
        assert_eq!(
            self.queue.len(),
            with_waiters,
            "each waiting file queued once"
        );
        let heads: Vec<u64> = self
            .queue
            .iter()
            .map(|&f| {
                self.account(f)
                    .waiters
                    .front()
                    .expect("queued: waits")
                    .ticket
            })
            .collect();
        assert!(heads.windows(2).all(|w| w[0] < w[1]), "queue by arrival");
    }
}

impl Budget {
    pub(crate) fn new(max_bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            state: Mutex::new(BudgetState {
                free: HashMap::new(),
                free_bytes: 0,
                live_bytes: 0,
                peak_bytes: 0,
                unused_shares: 0,
                over_bytes: 0,
                files: Vec::new(),
                free_ids: Vec::new(),
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            waiting: AtomicUsize::new(0),
            max_bytes,
            share: max_bytes / SHARE_DIVISOR,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writers of any file waiting for space: every file flushes urgently while > 0.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Bytes held by live buffers of all files.
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> usize {
        self.lock().live_bytes
    }

    /// The most bytes live at once so far.
    #[cfg(test)]
    pub(crate) fn peak_bytes(&self) -> usize {
        self.lock().peak_bytes
    }

    /// Whether file `id`'s request of `cap` bytes fits now. `over_ahead`: a writer ahead
    /// of it waits for the part beyond the shares (which is first come, first served).
    fn fits(&self, st: &BudgetState, id: usize, cap: usize, over_ahead: bool) -> Fit {
        let a = st.account(id);
        if !a.admits(cap) {
            return Fit::FileFull;
        }
        let engine_fits = if a.live_bytes + cap <= self.share {
            // Within its share: only the total counts.
            st.live_bytes + cap <= self.max_bytes
        } else {
            let others = st.unused_shares - a.unused_share(self.share);
            !over_ahead
                && (st.live_bytes + cap + others <= self.max_bytes
                    || (a.live_count == 0 && st.over_bytes == 0))
        };
        if engine_fits {
            Fit::Now
        } else {
            Fit::EngineFull
        }
    }

    /// Whether a file's first in line waits for the part beyond the shares.
    fn wants_shared_part(&self, a: &Account, cap: usize) -> bool {
        a.failed.is_none() && a.live_bytes + cap > self.share && a.admits(cap)
    }

    /// Whether a file queued before `id` (all queued files, if `id` is not queued) has
    /// its first in line waiting for the part beyond the shares.
    fn over_ahead(&self, st: &BudgetState, id: usize) -> bool {
        st.queue.iter().take_while(|&&f| f != id).any(|&f| {
            let a = st.account(f);
            a.waiters
                .front()
                .is_some_and(|w| self.wants_shared_part(a, w.cap))
        })
    }

    /// Wakes every file's first in line whose buffer fits now. Called whenever space is
    /// freed, a share is let go, and after each grant, so a waiter that fits is never
    /// left asleep.
    fn wake(&self, st: &BudgetState) {
        // Every change of the budget ends here: check it.
        st.check_invariants(self.share, self.waiting());
        let mut over_ahead = false;
        for &id in &st.queue {
            let a = st.account(id);
            let Some(w) = a.waiters.front() else { continue };
            if a.failed.is_none() && self.fits(st, id, w.cap, over_ahead) == Fit::Now {
                w.thread.unpark();
            }
            over_ahead |= self.wants_shared_part(a, w.cap);
        }
    }
}

/// One file's account in its engine's [`Budget`]: it hands out the file's buffers.
pub(crate) struct Pool {
    budget: Arc<Budget>,
    id: usize,
    /// The file's waiting writers, readable without the lock.
    waiting: AtomicUsize,
    min_align: usize,
}

impl Pool {
    /// A pool with a budget of its own: `max_bytes` and `max_buffers` live at once.
    #[cfg(test)]
    pub(crate) fn new(max_bytes: usize, max_buffers: usize, min_align: usize) -> Arc<Self> {
        Self::join(&Budget::new(max_bytes), max_bytes, max_buffers, min_align)
    }

    /// A file's pool in `budget`, capped at `max_bytes` and `max_buffers` live at once.
    pub(crate) fn join(
        budget: &Arc<Budget>,
        max_bytes: usize,
        max_buffers: usize,
        min_align: usize,
    ) -> Arc<Self> {
        let account = Account {
            live_bytes: 0,
            live_count: 0,
            max_bytes: max_bytes.min(budget.max_bytes),
            max_buffers,
            failed: None,
            waiters: VecDeque::new(),
        };
        let mut st = budget.lock();
        let id = match st.free_ids.pop() {
            Some(id) => {
                st.files[id] = Some(account);
                id
            }
            None => {
                st.files.push(Some(account));
                st.files.len() - 1
            }
        };
        drop(st);
        Arc::new(Pool {
            budget: Arc::clone(budget),
            id,
            waiting: AtomicUsize::new(0),
            min_align,
        })
    }

    /// Writers waiting for space, of this file or of any other on the engine: the
    /// submitter flushes urgently while this is true.
    pub(crate) fn space_wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 || self.budget.waiting() > 0
    }

    /// Writers of this file waiting for space.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Bytes held by this file's live buffers.
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> usize {
        self.budget.lock().account(self.id).live_bytes
    }

    /// A buffer for `len` bytes, waiting while the budget is spent. `on_wait` runs once
    /// before the first wait (to wake the submitter). Returns the buffer and how long it
    /// waited. A request larger than the whole budget is granted when nothing else is
    /// live, so it cannot wait forever. Recycled buffers cost no allocation.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        len: usize,
        on_wait: impl FnOnce(),
    ) -> io::Result<(BufRef, Option<Duration>)> {
        self.reserve_growable(len, len, on_wait)
    }

    /// As [`reserve`](Pool::reserve), but the buffer can hold `cap` bytes (charged in
    /// full) and may later grow by [`BufRef::append`] up to `limit` bytes (`len <= limit
    /// <= cap`): the buffer of an extent.
    pub(crate) fn reserve_extent(
        self: &Arc<Self>,
        len: usize,
        cap: usize,
        limit: usize,
        on_wait: impl FnOnce(),
    ) -> io::Result<(BufRef, Option<Duration>)> {
        debug_assert!(len <= limit && limit <= cap);
        let (b, waited) = self.reserve_growable(len, cap, on_wait)?;
        let mut b = b;
        let pb = Arc::get_mut(b.0.as_mut().expect("held")).expect("not yet shared");
        pb.limit = limit.min(pb.buf.capacity());
        Ok((b, waited))
    }

    fn reserve_growable(
        self: &Arc<Self>,
        len: usize,
        cap: usize,
        on_wait: impl FnOnce(),
    ) -> io::Result<(BufRef, Option<Duration>)> {
        let (cap, align) = class(len.max(cap), self.min_align);
        let budget = &*self.budget;
        let share = budget.share;
        let mut st = budget.lock();
        // Set once queued: (when, ticket).
        let mut waited: Option<(Instant, u64)> = None;
        let mut on_wait = Some(on_wait);
        loop {
            let a = st.account(self.id);
            if let Some(code) = a.failed {
                if let Some((_, ticket)) = waited {
                    self.leave(&mut st, ticket);
                    budget.wake(&st);
                }
                return Err(os(code));
            }
            // First come, first served within the file: nobody overtakes a writer of the
            // same file already waiting.
            let first = a.waiters.front().map(|w| w.ticket) == waited.map(|(_, t)| t);
            if first && budget.fits(&st, self.id, cap, budget.over_ahead(&st, self.id)) == Fit::Now
            {
                if let Some((_, ticket)) = waited {
                    self.leave(&mut st, ticket);
                }
                break;
            }
            if waited.is_none() {
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                let queued = st.update(self.id, share, |a| {
                    a.waiters.push_back(SpaceWaiter {
                        ticket,
                        cap,
                        thread: thread::current(),
                    });
                    a.waiters.len()
                });
                if queued == 1 {
                    st.queue.push_back(self.id);
                }
                self.waiting.store(queued, Ordering::Release);
                budget.waiting.fetch_add(1, Ordering::AcqRel);
                waited = Some((Instant::now(), ticket));
                if let Some(f) = on_wait.take() {
                    drop(st);
                    f();
                    st = budget.lock();
                    continue;
                }
            }
            // An unpark between the unlock and the park is kept: park returns at once.
            drop(st);
            thread::park();
            st = budget.lock();
        }
        st.update(self.id, share, |a| {
            a.live_bytes += cap;
            a.live_count += 1;
        });
        st.live_bytes += cap;
        st.peak_bytes = st.peak_bytes.max(st.live_bytes);
        // What was freed may be enough for the next in line too.
        budget.wake(&st);
        let mut shared = match st.free.get_mut(&cap).and_then(Vec::pop) {
            Some(b) => {
                st.free_bytes -= cap;
                drop(st);
                b
            }
            None => {
                // Keep live + cached memory within the budget: drop cached buffers of
                // other sizes before allocating a new one.
                while st.free_bytes > 0 && st.live_bytes + st.free_bytes > budget.max_bytes {
                    let (&c, list) = st
                        .free
                        .iter_mut()
                        .find(|(_, v)| !v.is_empty())
                        .expect("free_bytes > 0 means some list is non-empty");
                    list.pop();
                    st.free_bytes -= c;
                }
                drop(st);
                let buf = match AlignedBuf::try_zeroed(cap, align) {
                    Ok(buf) => buf,
                    Err(e) => {
                        // Give the charge back, or the budget stays spent for good.
                        self.forget_live(cap);
                        return Err(e);
                    }
                };
                Arc::new(PoolBuf {
                    buf,
                    filled: AtomicUsize::new(0),
                    limit: 0,
                    live: false,
                    pool: None,
                })
            }
        };
        let b = Arc::get_mut(&mut shared).expect("free buffers are held only by the pool");
        *b.filled.get_mut() = len;
        b.limit = len;
        b.live = true;
        b.pool = Some(Arc::clone(self));
        Ok((BufRef(Some(shared)), waited.map(|(t, _)| t.elapsed())))
    }

    /// Takes this file's waiter `ticket` out of the line (granted or given up).
    fn leave(&self, st: &mut BudgetState, ticket: u64) {
        let left = st.update(self.id, self.budget.share, |a| {
            a.waiters.retain(|w| w.ticket != ticket);
            a.waiters.len()
        });
        st.requeue(self.id);
        self.waiting.store(left, Ordering::Release);
        self.budget.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes back ownership of a buffer given out by [`BufRef::into_reserved`].
    pub(crate) fn adopt(self: &Arc<Self>, buf: AlignedBuf, len: usize) -> BufRef {
        BufRef(Some(Arc::new(PoolBuf {
            buf,
            filled: AtomicUsize::new(len),
            limit: len,
            live: true,
            pool: Some(Arc::clone(self)),
        })))
    }

    /// Returns a buffer nobody else holds to the free list (or frees it if the cache is
    /// full).
    fn recycle(&self, mut shared: Arc<PoolBuf>) {
        let Some(b) = Arc::get_mut(&mut shared) else {
            return;
        };
        let cap = b.buf.capacity();
        b.live = false;
        // Cached buffers belong to no file: a cached buffer pointing back at its pool
        // would keep the pool alive after its file is gone. (The caller holds the pool,
        // so this is not the last reference: no pool is dropped under the lock.)
        let owner = b.pool.take();
        let budget = &*self.budget;
        let mut st = budget.lock();
        self.give_back(&mut st, cap);
        if st.live_bytes + st.free_bytes + cap <= budget.max_bytes {
            st.free.entry(cap).or_default().push(shared);
            st.free_bytes += cap;
        }
        budget.wake(&st);
        drop(st);
        drop(owner);
    }

    /// Accounts for a live buffer freed outright (its last holder was a reader).
    fn forget_live(&self, cap: usize) {
        let mut st = self.budget.lock();
        self.give_back(&mut st, cap);
        self.budget.wake(&st);
    }

    fn give_back(&self, st: &mut BudgetState, cap: usize) {
        st.update(self.id, self.budget.share, |a| {
            a.live_bytes -= cap;
            a.live_count -= 1;
        });
        st.live_bytes -= cap;
    }

    /// From now on `reserve` fails with `code`; this file's waiting writers wake up and
    /// get it. The other files of the engine are not touched.
    pub(crate) fn fail(&self, code: i32) {
        let mut st = self.budget.lock();
        st.update(self.id, self.budget.share, |a| {
            a.failed.get_or_insert(code);
            for w in &a.waiters {
                w.thread.unpark();
            }
        });
        // Its first in line no longer holds the shared part's line.
        self.budget.wake(&st);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        let share = self.budget.share;
        st.update(self.id, share, |a| {
            debug_assert!(a.live_count == 0 && a.waiters.is_empty());
            a.live_count = 0;
            a.live_bytes = 0;
            a.waiters.clear();
        });
        st.files[self.id] = None;
        st.free_ids.push(self.id);
        st.queue.retain(|&f| f != self.id);
        self.budget.wake(&st);
    }
}

/// A pooled buffer holding `filled` meaningful bytes.
///
/// Once shared, its first `filled` bytes are never written again, which is what lets the
/// kernel, readers and the index all look at them at once without a lock. The buffer of
/// an extent may still grow: [`BufRef::append`] writes bytes past `filled` (up to
/// `limit`), which nobody references, and only then moves `filled` past them.
pub(crate) struct PoolBuf {
    buf: AlignedBuf,
    /// Meaningful bytes; only grows while the buffer is shared (reset on reuse).
    filled: AtomicUsize,
    /// How far `append` may fill it (at most the capacity).
    limit: usize,
    /// Counted in the pool's live budget (false while on the free list).
    live: bool,
    /// The file it is charged to (`None` while on the free list).
    pool: Option<Arc<Pool>>,
}

impl PoolBuf {
    /// The meaningful bytes (as filled now).
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.buf.prefix(self.filled.load(Ordering::Acquire))
    }
}

impl Bytes for PoolBuf {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let (true, Some(pool)) = (self.live, &self.pool) {
            pool.forget_live(self.buf.capacity());
        }
    }
}

/// The index's and the write ops' reference to a pooled buffer. Dropping the last
/// `BufRef` returns the buffer to the pool, allocation and all, so the steady-state write
/// path allocates nothing. (A reader's plain `Arc` may outlive every `BufRef`; then the
/// buffer is freed, not recycled.)
#[derive(Clone)]
pub(crate) struct BufRef(Option<Arc<PoolBuf>>);

impl BufRef {
    fn get(&self) -> &Arc<PoolBuf> {
        self.0
            .as_ref()
            .expect("a BufRef holds its buffer until dropped")
    }

    /// The meaningful bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.get().as_slice()
    }

    /// The bytes, mutably: only before the buffer has been shared.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let b =
            Arc::get_mut(self.0.as_mut().expect("held")).expect("written only before it is shared");
        let len = *b.filled.get_mut();
        &mut b.buf.as_mut_slice()[..len]
    }

    /// Meaningful bytes so far.
    pub(crate) fn filled(&self) -> usize {
        self.get().filled.load(Ordering::Acquire)
    }

    /// Bytes `append` may still add.
    pub(crate) fn room(&self) -> usize {
        let b = self.get();
        b.limit - b.filled.load(Ordering::Acquire)
    }

    /// Copies `data` right after the filled bytes and counts them as filled.
    ///
    /// # Safety
    ///
    /// Appends to one buffer must not run concurrently: the caller holds the lock that
    /// serializes them (the handle's state lock, as `&mut Index`). `data.len() <= room()`.
    pub(crate) unsafe fn append(&self, data: &[u8]) {
        let b = self.get();
        let at = b.filled.load(Ordering::Acquire);
        assert!(data.len() <= b.limit - at, "append past the buffer's limit");
        // SAFETY: `[at, at + len)` lies past `filled`. Every reference to this buffer's
        // bytes — index blocks, write ops' iovecs, readers' slices (`as_slice`, which
        // takes only the filled prefix) — was taken when `filled` was at most `at` (it
        // never shrinks while shared), so none covers these bytes; and appends are
        // serialized by the caller, so no one else writes them.
        unsafe { b.buf.write_at_shared(at, data) };
        // Release: whoever sees the new length sees the bytes.
        b.filled.store(at + data.len(), Ordering::Release);
    }

    /// A reference for a reader (zero-copy `ReadBuffer`).
    pub(crate) fn shared(&self) -> Arc<PoolBuf> {
        Arc::clone(self.get())
    }

    /// Hands the raw buffer out (to a `WriteBuffer` guard) while it stays counted as
    /// live; give it back with [`Pool::adopt`].
    pub(crate) fn into_reserved(mut self) -> AlignedBuf {
        let mut shared = self.0.take().expect("held");
        let b = Arc::get_mut(&mut shared).expect("reserved buffers are not shared");
        b.live = false;
        std::mem::replace(&mut b.buf, AlignedBuf::empty())
    }
}

impl Drop for BufRef {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            if Arc::strong_count(&shared) == 1 {
                let pool = Arc::clone(shared.pool.as_ref().expect("live buffers have a pool"));
                pool.recycle(shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn classes_are_aligned_and_big_enough() {
        assert_eq!(class(4, 1), (64, 64));
        assert_eq!(class(512, 512), (512, 512));
        assert_eq!(class(100, 512), (512, 512));
        assert_eq!(class(4096, 512), (4096, 4096));
        assert_eq!(class(4097, 1), (8192, 4096));
    }

    #[test]
    fn a_failed_allocation_gives_its_charge_back() {
        // A request larger than the budget is granted when alone; one the allocator
        // cannot serve must fail with ENOMEM and leave the budget as it was.
        let pool = Pool::new(8192, 100, 1);
        for _ in 0..2 {
            let e = pool
                .reserve(isize::MAX as usize - 8192, || {})
                .err()
                .unwrap();
            assert_eq!(e.raw_os_error().or(crate::errno(&e)), Some(libc::ENOMEM));
            assert_eq!(pool.live_bytes(), 0);
        }
        let (a, w) = pool.reserve(4096, || {}).unwrap();
        assert!(w.is_none(), "nothing waits after the failure");
        drop(a);
    }

    #[test]
    fn buffers_are_recycled_and_budget_enforced() {
        let pool = Pool::new(8192, 100, 1);
        let (a, w) = pool.reserve(4096, || {}).unwrap();
        assert!(w.is_none());
        let ptr = a.as_slice().as_ptr();
        drop(a);
        let (b, _) = pool.reserve(4096, || {}).unwrap();
        assert_eq!(b.as_slice().as_ptr(), ptr, "a returned buffer is reused");
        let (c, _) = pool.reserve(4096, || {}).unwrap();
        assert_eq!(pool.live_bytes(), 8192);
        // The budget is spent: a third reservation waits until one is returned.
        let p2 = Arc::clone(&pool);
        let t = thread::spawn(move || p2.reserve(4096, || {}).map(|(_, w)| w.is_some()));
        while pool.waiting() == 0 {
            thread::yield_now();
        }
        drop(b);
        assert!(t.join().unwrap().unwrap(), "the third writer waited");
        drop(c);
    }

    #[test]
    fn oversized_request_granted_when_alone_and_failure_wakes_waiters() {
        let pool = Pool::new(4096, 1, 1);
        let (big, _) = pool.reserve(1 << 20, || {}).unwrap();
        let p2 = Arc::clone(&pool);
        let t = thread::spawn(move || p2.reserve(16, || {}).err().and_then(|e| e.raw_os_error()));
        while pool.waiting() == 0 {
            thread::yield_now();
        }
        pool.fail(libc::EIO);
        assert_eq!(t.join().unwrap(), Some(libc::EIO));
        drop(big);
    }

    /// Spawns a writer that reserves `len` bytes, records `name` and holds the buffer
    /// until told to drop it; returns once it is queued (it must have to wait).
    fn queued_writer(
        pool: &Arc<Pool>,
        len: usize,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
        let (p, o) = (Arc::clone(pool), Arc::clone(order));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let before = pool.waiting();
        let t = thread::spawn(move || {
            let (b, waited) = p.reserve(len, || {}).unwrap();
            assert!(waited.is_some(), "{name} waited");
            o.lock().unwrap().push(name);
            let _ = rx.recv();
            drop(b);
        });
        while pool.waiting() == before {
            thread::yield_now();
        }
        (t, tx)
    }

    #[test]
    fn waiters_are_served_in_arrival_order_and_none_is_left_asleep() {
        let pool = Pool::new(8192, 2, 1);
        let (a, _) = pool.reserve(4096, || {}).unwrap();
        let (b, _) = pool.reserve(4096, || {}).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        // A big request first, then a small one that would fit sooner: it waits its turn.
        let (big, big_go) = queued_writer(&pool, 8192, "big", &order);
        let (small, small_go) = queued_writer(&pool, 64, "small", &order);
        drop(a);
        thread::sleep(Duration::from_millis(20));
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody overtakes the first in line"
        );
        drop(b); // now the big one fits; the small one waits for it
        while order.lock().unwrap().is_empty() {
            thread::yield_now();
        }
        big_go.send(()).unwrap();
        big.join().unwrap();
        small_go.send(()).unwrap();
        small.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["big", "small"]);
        assert_eq!(pool.waiting(), 0);
        assert_eq!(pool.live_bytes(), 0);
    }

    #[test]
    fn many_writers_on_a_tiny_budget_all_finish() {
        let pool = Pool::new(3 * 4096, 3, 1);
        let threads: Vec<_> = (0..32)
            .map(|t| {
                let p = Arc::clone(&pool);
                thread::spawn(move || {
                    for i in 0..500 {
                        let len = if (t + i) % 3 == 0 {
                            64
                        } else {
                            4096 << (i % 2)
                        };
                        let (b, _) = p.reserve(len, || {}).unwrap();
                        thread::yield_now();
                        drop(b);
                    }
                })
            })
            .collect();
        // A lost wake-up would hang the test: fail it instead.
        let (done_tx, done) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for t in threads {
                t.join().unwrap();
            }
            done_tx.send(()).unwrap();
        });
        done.recv_timeout(Duration::from_secs(60))
            .expect("every writer finished within 60 s");
        assert_eq!((pool.waiting(), pool.live_bytes()), (0, 0));
    }

    /// Two files on one budget of 32 pages (a share is 2 pages).
    fn two_files() -> (Arc<Budget>, Arc<Pool>, Arc<Pool>) {
        let budget = Budget::new(32 * 4096);
        let a = Pool::join(&budget, usize::MAX, 1 << 20, 1);
        let b = Pool::join(&budget, usize::MAX, 1 << 20, 1);
        (budget, a, b)
    }

    /// A writer of one page, waiting: its result arrives on the channel.
    struct Waiting(std::sync::mpsc::Receiver<io::Result<BufRef>>);

    impl Waiting {
        /// Its result; fails the test (instead of hanging it) after 10 s.
        fn join(self) -> thread::Result<io::Result<BufRef>> {
            Ok(self
                .0
                .recv_timeout(Duration::from_secs(10))
                .expect("the waiting writer was answered within 10 s"))
        }
    }

    /// Spawns a writer of `pool` for one page that must wait; returns once it is queued.
    fn waiting_page(pool: &Arc<Pool>) -> Waiting {
        let p = Arc::clone(pool);
        let before = pool.waiting();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || tx.send(p.reserve(4096, || {}).map(|(b, _)| b)));
        let start = Instant::now();
        while pool.waiting() == before {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the writer must wait"
            );
            thread::yield_now();
        }
        Waiting(rx)
    }

    #[test]
    fn a_flooding_file_leaves_a_siblings_share_free() {
        let (budget, a, b) = two_files();
        let (b1, _) = b.reserve(4096, || {}).unwrap();
        // A takes all it can: the budget less B's share (B holds one page of its two).
        let mut held = Vec::new();
        while budget.live_bytes() + 4096 + 4096 <= 32 * 4096 {
            held.push(a.reserve(4096, || {}).unwrap().0);
        }
        assert_eq!(held.len(), 30);
        let a_waits = waiting_page(&a);
        // A's writer is first in line, yet B's second page (within its share) is granted
        // at once: a plain first-come queue would make it wait behind A.
        let (b2, w) = b.reserve(4096, || {}).unwrap();
        assert!(w.is_none(), "B's share was kept free");
        assert_eq!(budget.live_bytes(), 32 * 4096);
        // Beyond its share B queues behind A (first come, first served).
        let b_waits = waiting_page(&b);
        drop(held.pop());
        let a3 = a_waits.join().unwrap().unwrap();
        assert_eq!(b.waiting(), 1, "B's third page waits its turn");
        drop(held.pop());
        let b3 = b_waits.join().unwrap().unwrap();
        assert!(budget.peak_bytes() <= 32 * 4096);
        drop((held, a3, b1, b2, b3));
        assert_eq!((budget.live_bytes(), budget.waiting()), (0, 0));
    }

    #[test]
    fn freed_space_goes_to_a_siblings_share_before_the_flooder() {
        let (budget, a, b) = two_files();
        // B has no writer yet: A may take the whole budget.
        let mut held: Vec<_> = (0..32).map(|_| a.reserve(4096, || {}).unwrap().0).collect();
        let a_waits = waiting_page(&a);
        let b_waits = waiting_page(&b);
        // A's writer came first, but B's is within its share: the freed page is B's.
        drop(held.pop());
        let b1 = b_waits.join().unwrap().unwrap();
        assert_eq!(a.waiting(), 1, "A waits until B's share is out of the way");
        drop(held.pop());
        // B holds one page of its two: A may not take the one kept for B.
        thread::sleep(Duration::from_millis(20));
        assert_eq!(a.waiting(), 1, "the page kept for B is not A's");
        drop(b1); // B has no writer any more: nothing is kept for it
        let a1 = a_waits.join().unwrap().unwrap();
        assert!(budget.peak_bytes() <= 32 * 4096);
        drop((held, a1));
        assert_eq!((budget.live_bytes(), budget.waiting()), (0, 0));
    }

    #[test]
    fn a_failed_file_wakes_only_its_own_writers() {
        let (budget, a, b) = two_files();
        let held: Vec<_> = (0..32).map(|_| a.reserve(4096, || {}).unwrap().0).collect();
        let a_waits = waiting_page(&a);
        let b_waits = waiting_page(&b);
        a.fail(libc::EIO);
        let e = a_waits.join().unwrap().err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        thread::sleep(Duration::from_millis(20));
        assert_eq!(b.waiting(), 1, "B's writer still waits for space, unfailed");
        assert_eq!(budget.waiting(), 1);
        drop(held); // A's write-back ends: B's writer goes on
        let b1 = b_waits.join().unwrap().unwrap();
        assert!(a.reserve(64, || {}).is_err(), "A stays failed");
        drop(b.reserve(4096, || {}).unwrap());
        drop(b1);
        assert_eq!((budget.live_bytes(), budget.waiting()), (0, 0));
    }

    #[test]
    fn an_oversized_request_waits_for_the_shared_part_to_empty() {
        let (budget, a, b) = two_files();
        let (b1, _) = b.reserve(4096, || {}).unwrap();
        let (a1, _) = a.reserve(8 * 4096, || {}).unwrap();
        // B's request for more than the budget waits while A holds more than its share
        // (and queues behind nobody: it is first in line)...
        let p = Arc::clone(&b);
        let big = thread::spawn(move || p.reserve(64 * 4096, || {}).map(|(b, _)| b));
        while b.waiting() == 0 {
            thread::yield_now();
        }
        drop(b1);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(b.waiting(), 1, "no file holds more than its share yet");
        // ...and is granted once B holds nothing and nobody is over their share.
        drop(a1);
        let big = big.join().unwrap().unwrap();
        assert_eq!(budget.peak_bytes(), 64 * 4096);
        drop(big);
    }

    /// Runs `files` pools on one budget, each with `writers` threads reserving buffers of
    /// `sizes` (cycled) and handing them to a write-back thread that frees them a moment
    /// later, until every writer has done `rounds`; fails instead of hanging.
    fn flood(budget: usize, files: usize, writers: usize, sizes: &[usize], rounds: usize) {
        let budget = Budget::new(budget);
        let pools: Vec<_> = (0..files)
            .map(|_| Pool::join(&budget, usize::MAX, 1 << 20, 1))
            .collect();
        let (tx, rx) = std::sync::mpsc::channel::<BufRef>();
        let writeback = thread::spawn(move || {
            while let Ok(b) = rx.recv() {
                thread::sleep(Duration::from_micros(50));
                drop(b);
                while rx.try_recv().is_ok() {}
            }
        });
        let mut threads = Vec::new();
        for (f, pool) in pools.iter().enumerate() {
            for w in 0..writers {
                let (p, tx, sizes) = (Arc::clone(pool), tx.clone(), sizes.to_vec());
                threads.push(thread::spawn(move || {
                    for i in 0..rounds {
                        let len = sizes[(f + w + i) % sizes.len()];
                        let (b, _) = p.reserve(len, || {}).unwrap();
                        tx.send(b).unwrap();
                    }
                }));
            }
        }
        drop(tx);
        let (done_tx, done) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for t in threads {
                t.join().unwrap();
            }
            writeback.join().unwrap();
            done_tx.send(()).unwrap();
        });
        done.recv_timeout(Duration::from_secs(60))
            .expect("every writer finished within 60 s");
        assert!(budget.peak_bytes() <= budget.max_bytes, "the budget held");
        assert_eq!((budget.waiting(), budget.live_bytes()), (0, 0));
    }

    #[test]
    fn a_flooding_file_cannot_stop_a_siblings_writer() {
        // File 0 floods with 8 writers of large buffers; file 1 has one writer of pages:
        // it must finish too (a lost wake-up or a starved share would hang: the watchdog
        // fails the test instead).
        let budget = Budget::new(64 * 4096);
        let flooder = Pool::join(&budget, usize::MAX, 1 << 20, 1);
        let sibling = Pool::join(&budget, usize::MAX, 1 << 20, 1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<BufRef>();
        let writeback = thread::spawn(move || {
            while let Ok(b) = rx.recv() {
                thread::sleep(Duration::from_micros(200));
                drop(b);
            }
        });
        let floods: Vec<_> = (0..8)
            .map(|_| {
                let (p, tx, stop) = (Arc::clone(&flooder), tx.clone(), Arc::clone(&stop));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (b, _) = p.reserve(16 * 4096, || {}).unwrap();
                        tx.send(b).unwrap();
                    }
                })
            })
            .collect();
        let (p, tx2) = (Arc::clone(&sibling), tx.clone());
        let (done_tx, done) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for _ in 0..200 {
                let (b, _) = p.reserve(4096, || {}).unwrap();
                tx2.send(b).unwrap();
            }
            done_tx.send(()).unwrap();
        });
        done.recv_timeout(Duration::from_secs(60))
            .expect("the sibling's writer finished within 60 s");
        stop.store(true, Ordering::Relaxed);
        drop(tx);
        for t in floods {
            t.join().unwrap();
        }
        writeback.join().unwrap();
        assert!(budget.peak_bytes() <= 64 * 4096, "the budget held");
        assert_eq!((budget.waiting(), budget.live_bytes()), (0, 0));
    }

    #[test]
    fn many_files_on_a_small_budget_stay_within_it() {
        // Shares of 1 KiB, requests within and beyond them, 4 files of 4 writers.
        flood(16 * 4096, 4, 4, &[64, 512, 4096, 3 * 4096], 300);
    }
}
