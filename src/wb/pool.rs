//! The buffer pool: aligned buffers recycled by size class, and the memory budget that
//! makes writers wait (backpressure) instead of growing without bound.
//!
//! Lock order: the handle's state lock may be held while taking the pool lock (a buffer
//! dropped under the state lock returns here), never the other way round.
//!
//! Writers that must wait queue up in arrival order, and only the first in line is woken
//! when space may have appeared. Waking every waiter on every freed buffer (a condvar's
//! `notify_all`) made 100 writers on a budget of 8 buffers spend their time in the
//! scheduler; waking one waiter of many sizes at random could wake one whose buffer does
//! not fit while another's would, and leave that one asleep for good.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::aligned::AlignedBuf;
use crate::buffer::Bytes;
use crate::error::os;

/// Size class of a buffer holding `len` bytes: (capacity, alignment). Pages and larger
/// are 4 KiB-aligned multiples of 4 KiB; smaller records get a power of two (at least
/// `min_align`, the direct-I/O alignment in direct mode), naturally aligned.
fn class(len: usize, min_align: usize) -> (usize, usize) {
    if len >= 4096 {
        (len.div_ceil(4096) * 4096, 4096)
    } else {
        let cap = len.max(min_align).max(64).next_power_of_two();
        (cap, cap)
    }
}

struct PoolState {
    /// Unused buffers by capacity, each held only here (ready for `Arc::get_mut`).
    free: HashMap<usize, Vec<Arc<PoolBuf>>>,
    free_bytes: usize,
    live_bytes: usize,
    live_count: usize,
    /// Set when the handle failed or closed: waiting writers give up with this errno.
    failed: Option<i32>,
    /// Writers waiting for space, first come first served.
    queue: VecDeque<SpaceWaiter>,
    next_ticket: u64,
}

/// A writer waiting for a buffer of `cap` bytes.
struct SpaceWaiter {
    ticket: u64,
    cap: usize,
    thread: Thread,
}

/// Aligned buffers with a budget of `max_bytes` and `max_buffers` live at once.
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    /// The queue's length, readable without the lock.
    waiting: AtomicUsize,
    max_bytes: usize,
    max_buffers: usize,
    min_align: usize,
}

impl Pool {
    pub(crate) fn new(max_bytes: usize, max_buffers: usize, min_align: usize) -> Arc<Self> {
        Arc::new(Pool {
            state: Mutex::new(PoolState {
                free: HashMap::new(),
                free_bytes: 0,
                live_bytes: 0,
                live_count: 0,
                failed: None,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            waiting: AtomicUsize::new(0),
            max_bytes,
            max_buffers,
            min_align,
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writers currently waiting for space: the submitter flushes urgently while > 0.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Bytes held by live buffers.
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> usize {
        self.lock().live_bytes
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
        let mut st = self.lock();
        // Set once queued: (when, ticket).
        let mut waited: Option<(Instant, u64)> = None;
        let mut on_wait = Some(on_wait);
        loop {
            if let Some(code) = st.failed {
                if let Some((_, ticket)) = waited {
                    st.queue.retain(|w| w.ticket != ticket);
                    self.waiting.store(st.queue.len(), Ordering::Release);
                }
                return Err(os(code));
            }
            // First come, first served: nobody overtakes a writer already waiting.
            let first = st.queue.front().map(|w| w.ticket) == waited.map(|(_, t)| t);
            if first && self.fits(&st, cap) {
                if waited.is_some() {
                    st.queue.pop_front();
                    self.waiting.store(st.queue.len(), Ordering::Release);
                }
                break;
            }
            if waited.is_none() {
                let ticket = st.next_ticket;
                st.next_ticket += 1;
                st.queue.push_back(SpaceWaiter {
                    ticket,
                    cap,
                    thread: thread::current(),
                });
                self.waiting.store(st.queue.len(), Ordering::Release);
                waited = Some((Instant::now(), ticket));
                if let Some(f) = on_wait.take() {
                    drop(st);
                    f();
                    st = self.lock();
                    continue;
                }
            }
            // An unpark between the unlock and the park is kept: park returns at once.
            drop(st);
            thread::park();
            st = self.lock();
        }
        st.live_bytes += cap;
        st.live_count += 1;
        // What was freed may be enough for the next in line too.
        self.wake_first(&st);
        let mut shared = match st.free.get_mut(&cap).and_then(Vec::pop) {
            Some(b) => {
                st.free_bytes -= cap;
                drop(st);
                b
            }
            None => {
                // Keep live + cached memory within the budget: drop cached buffers of
                // other sizes before allocating a new one.
                while st.free_bytes > 0 && st.live_bytes + st.free_bytes > self.max_bytes {
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
                    pool: Arc::clone(self),
                })
            }
        };
        let b = Arc::get_mut(&mut shared).expect("free buffers are held only by the pool");
        *b.filled.get_mut() = len;
        b.limit = len;
        b.live = true;
        Ok((BufRef(Some(shared)), waited.map(|(t, _)| t.elapsed())))
    }

    /// Takes back ownership of a buffer given out by [`BufRef::into_reserved`].
    pub(crate) fn adopt(self: &Arc<Self>, buf: AlignedBuf, len: usize) -> BufRef {
        BufRef(Some(Arc::new(PoolBuf {
            buf,
            filled: AtomicUsize::new(len),
            limit: len,
            live: true,
            pool: Arc::clone(self),
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
        let mut st = self.lock();
        st.live_bytes -= cap;
        st.live_count -= 1;
        // A closed or failed pool caches nothing: cached buffers point back at the pool,
        // and that cycle must end when the handle does.
        if st.failed.is_none() && st.live_bytes + st.free_bytes + cap <= self.max_bytes {
            st.free.entry(cap).or_default().push(shared);
            st.free_bytes += cap;
        }
        self.wake_first(&st);
    }

    /// Accounts for a live buffer freed outright (its last holder was a reader).
    fn forget_live(&self, cap: usize) {
        let mut st = self.lock();
        st.live_bytes -= cap;
        st.live_count -= 1;
        self.wake_first(&st);
    }

    /// Whether a buffer of `cap` bytes fits the budget now. A request larger than the
    /// whole budget fits when nothing else is live, so it cannot wait forever.
    fn fits(&self, st: &PoolState, cap: usize) -> bool {
        st.live_count == 0
            || (st.live_count < self.max_buffers && st.live_bytes + cap <= self.max_bytes)
    }

    /// Wakes the first waiter if its buffer fits now. Called whenever space is freed and
    /// after each grant, so a waiter that fits is never left asleep.
    fn wake_first(&self, st: &PoolState) {
        if let Some(w) = st.queue.front() {
            if self.fits(st, w.cap) {
                w.thread.unpark();
            }
        }
    }

    /// From now on `reserve` fails with `code`; waiting writers wake up and get it. The
    /// cached buffers are freed.
    pub(crate) fn fail(&self, code: i32) {
        let mut st = self.lock();
        st.failed.get_or_insert(code);
        let cached = std::mem::take(&mut st.free);
        st.free_bytes = 0;
        for w in &st.queue {
            w.thread.unpark();
        }
        drop(st);
        drop(cached);
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
    pool: Arc<Pool>,
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
        if self.live {
            self.pool.forget_live(self.buf.capacity());
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
                let pool = Arc::clone(&shared.pool);
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
}
