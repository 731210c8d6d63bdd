//! `WriteBehindFile`: the write-behind handle.
//!
//! Callers copy their bytes into a pooled buffer (outside any shared lock), then install
//! it in the block index under the state lock and return. The submission thread
//! (`engine/pass.rs`) writes dirty blocks back through an [`engine::backend::IoEngine`] (io_uring or
//! threads) as merged vectored writes, and serves `force` waiters with shared fsyncs.
//! See docs/design.md for the whole picture.

mod barrier;
mod bell;
mod engine;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod force_future;
mod index;
mod lead;
mod pool;
#[cfg(test)]
mod ring_check;
mod state;

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::aligned::AlignedBuf;
use crate::buffer::{Bytes, CommitSink, ReadBuffer, WriteBuffer};
use crate::config::{Config, SyncMode};
use crate::error::{check_io_len, edom, os, os_msg, range_end};
use crate::fileio::{self, check_set_len, OpenMode};
use crate::handle::{self, Handle};
use crate::stats::{record, BackendKind, Stats};
use barrier::Barriers;
use bell::Bell;
pub use engine::Engine;
use engine::{FileWaker, Hub};
pub use force_future::ForceFuture;
use pool::{BufRef, Pool};
use state::{Limits, Next, Notify, State};

/// The write-behind handle: `write` returns after a memcpy into an aligned buffer; one
/// background submission thread writes dirty blocks back (merged, vectored, many in
/// flight) through io_uring — or, where io_uring is unavailable, through a thread
/// backend with the same contract — and `force` returns once the data is durable.
///
/// Share it between threads with `Arc`; every method takes `&self`.
///
/// # Durability
///
/// - `write`/`append`/a released [`WriteBuffer`] returning Ok means the bytes are in this
///   handle's memory and every later read sees them: **not** on disk, not even written.
///   Write-back starts on its own (a watermark of dirty bytes, [`Config::max_dirty_age`],
///   with direct I/O many scattered dirty blocks, a writer waiting for buffer space) and
///   on `force` and `close`.
/// - [`force`](Handle::force) returning Ok means every write that returned before the call
///   was written in full and then covered by an `fdatasync` (or `fsync`, per
///   [`Config::sync`]) that started after it completed. Concurrent forces share one sync
///   (group commit). A force is never satisfied by a sync that was cancelled or that
///   started before its writes completed.
/// - [`close`](WriteBehindFile::close) writes everything back but does **not** sync;
///   dropping the handle does the same and can only log an error. Force first.
/// - **Process crash**: every byte of every force that returned Ok is in the file (the
///   kernel's page cache outlives the process); unforced writes may be absent, present or
///   partly present. Opening the file again waits for direct I/O the dead process left
///   in flight, so nothing it sent lands after the successor starts.
/// - **Power loss**: a force that returned Ok is as durable as the file system's
///   `fdatasync`/`fsync` makes it; unforced writes may be lost or torn, in any order. No
///   directory is fsync'd: after creating a file, fsync its directory.
///
/// # The fail-stop latch
///
/// A write-back or sync that fails for good (`EIO`, `ENOSPC`, `EFBIG`, ...; short writes,
/// `EAGAIN`, `EINTR` and `ECANCELED` are retried first) latches its errno: every force
/// waiting then, every later write, force and `close` return it, and
/// [`failure`](Handle::failure) reports it. Nothing more is written or synced. Reads keep
/// working and return the buffered bytes, so they can be copied elsewhere; everything since
/// the last successful force must be treated as lost. A failed sync is never retried (the
/// kernel may have dropped the dirty pages). docs/durability.md lists every fault.
///
/// ```
/// use writebehind::{Config, Handle, WriteBehindFile};
/// # fn main() -> std::io::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let cfg = Config::default().buffer_bytes(8 << 20);
/// let file = WriteBehindFile::create(dir.path().join("data"), &cfg)?;
/// for page in 0..16u64 {
///     file.write(page * 4096, &[page as u8; 4096])?; // a memcpy, no syscall
/// }
/// file.force()?; // written and fdatasync'd
/// let mut buf = [0u8; 4096];
/// file.read(4096, &mut buf)?;
/// assert_eq!(buf[0], 1);
/// let stats = file.close()?;
/// assert!(stats.write_ops <= 16);
/// # Ok(())
/// # }
/// ```
pub struct WriteBehindFile {
    inner: Arc<Inner>,
    hub: Arc<Hub>,
    /// Disconnected when the engine's thread has let go of this file (after `close`).
    /// (In a mutex only to make the handle `Sync`; locked once, by `close`.)
    done: Option<Mutex<mpsc::Receiver<()>>>,
    /// The thread of a private engine (single-file constructors): `close` joins it.
    private: Option<JoinHandle<()>>,
    /// Holds the file's `flock` ([`Config::lock_file`]); dropped after the engine has
    /// let go of the file.
    _lock: Option<File>,
}

/// What callers and the submission thread share.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Where blocking forcers sleep (`bell.rs`).
    bell: Bell,
    pool: Arc<Pool>,
    file: Arc<File>,
    start: AtomicU64,
    end: AtomicU64,
    waker: FileWaker,
    limits: Limits,
    /// Direct-I/O alignment writes must respect; 1 when buffered.
    align: usize,
    direct: bool,
    /// The cap on one call's length ([`Config::max_io_bytes`]).
    max_io: usize,
    /// The size of an extent's buffer (0: writes never grow extents).
    chunk: usize,
    /// The size of a packing buffer (0: writes are never packed); writes of up to a
    /// quarter of it are packed.
    pack: usize,
    /// Where the last stored write ended: a write starting there continues it.
    last_end: AtomicU64,
    /// What `force` asks for (`Config::sync`).
    sync: SyncMode,
    #[cfg(feature = "fault-injection")]
    faults: Option<fault::FaultInjector>,
}

/// The largest buffer an extent grows to: 256 page writes per iovec.
const EXTENT_CHUNK: usize = 1 << 20;

/// The size of a packing buffer: 16 page writes share one pool reservation (its lock,
/// and the cache misses on a recycled buffer's header), while a buffer pinned by one
/// unwritten write holds back little of the budget.
const PACK_BYTES: usize = 64 << 10;

/// The clock reading that times this write's ack: taken for one write in
/// [`Stats::ACK_SAMPLE`] on each thread, so most writes never read the clock.
fn ack_clock() -> Option<Instant> {
    thread_local! {
        static COUNT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    COUNT.with(|c| {
        let n = c.get();
        c.set(if n + 1 >= Stats::ACK_SAMPLE { 0 } else { n + 1 });
        (n == 0).then(Instant::now)
    })
}

/// The end of `[offset, offset + len)` for a write: `EINVAL` when it overflows `u64` or
/// lies past `i64::MAX`, the largest offset a file can have. Checked at the call: the
/// kernel would refuse it only at write-back, after this call returned Ok, and that
/// failure would latch and stop the whole handle.
fn write_range_end(offset: u64, len: usize) -> io::Result<u64> {
    let end = range_end(offset, len)?;
    if end > i64::MAX as u64 {
        return Err(os_msg(
            libc::EINVAL,
            format!("write of {len} bytes at offset {offset} ends past the largest file offset (2^63 - 1)"),
        ));
    }
    Ok(end)
}

/// The state lock, held. Forcers whose waiters were answered while it was held are
/// woken when it is released, after the unlock: woken under the lock, they would run
/// into it and block a second time.
pub(crate) struct StateGuard<'a>(Option<MutexGuard<'a, State>>, &'a Bell);

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.0.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().expect("held until dropped")
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        thread_local! {
            /// This thread's empty vector for the wakes it sends (`State::take_wakes`).
            static WAKES: Cell<Vec<Notify>> = const { Cell::new(Vec::new()) };
        }
        let Some(mut st) = self.0.take() else { return };
        if !st.has_wakes() {
            return;
        }
        let mut wakes = WAKES.try_with(Cell::take).unwrap_or_default();
        st.take_wakes(&mut wakes);
        drop(st);
        let mut ring = 0;
        for w in wakes.drain(..) {
            w.wake(&mut ring);
        }
        self.1.ring(ring);
        let _ = WAKES.try_with(|c| c.set(wakes));
    }
}

impl Inner {
    fn lock(&self) -> StateGuard<'_> {
        StateGuard(
            Some(self.state.lock().unwrap_or_else(|p| p.into_inner())),
            &self.bell,
        )
    }

    fn check_aligned(&self, offset: u64, len: usize) -> io::Result<()> {
        let a = self.align as u64;
        if !offset.is_multiple_of(a) || !(len as u64).is_multiple_of(a) {
            return Err(os_msg(
                libc::EINVAL,
                format!(
                    "direct I/O requires {a}-byte alignment of offset and length (offset {offset}, length {len})"
                ),
            ));
        }
        Ok(())
    }

    /// A writer is about to wait for buffer space: let go of the packing buffer (else,
    /// with a budget of few buffers, it could hold the one a writer waits for) and wake
    /// the submitter to write back.
    fn space_wait(&self) {
        let released = self.lock().release_packing();
        drop(released);
        self.waker.wake();
    }

    /// A pooled buffer for `len` bytes, waiting for write-back to free space if needed.
    fn reserve(&self, len: usize) -> io::Result<(BufRef, Option<Duration>)> {
        self.pool.reserve(len, || self.space_wait())
    }

    /// Whether a write at `offset` looks sequential: it starts where the last write
    /// ended, or at the end. Only those try to grow an extent or get a chunk-sized
    /// buffer; random writes keep their exact-size buffers and one lock round.
    fn continues(&self, offset: u64) -> bool {
        offset == self.last_end.load(Ordering::Relaxed)
            || offset == self.end.load(Ordering::Acquire)
    }

    /// A buffer for a write of `len` bytes at `offset` (`None`: an append). A write that
    /// looks sequential and ends inside a chunk (`chunk` bytes, aligned in the file) gets
    /// a chunk-sized buffer that later writes can grow in place up to the chunk's end.
    fn reserve_for(
        &self,
        offset: Option<u64>,
        len: usize,
    ) -> io::Result<(BufRef, Option<Duration>)> {
        let chunk = self.chunk as u64;
        if chunk > 0 && offset.is_none_or(|o| self.continues(o)) {
            let off = offset.unwrap_or_else(|| self.end.load(Ordering::Acquire));
            let room = chunk - off % chunk;
            if (len as u64) < room {
                let wake = || self.space_wait();
                return self
                    .pool
                    .reserve_extent(len, self.chunk, room as usize, wake);
            }
        }
        self.reserve(len)
    }

    /// Where a write of `len` bytes goes (`offset`, or the end for `None`), checked
    /// against the start, the alignment and the largest offset.
    fn place(&self, st: &State, offset: Option<u64>, len: usize) -> io::Result<u64> {
        let off = match offset {
            Some(off) if off < st.start => return Err(edom()),
            Some(off) => off,
            None => {
                self.check_aligned(st.end, len)?;
                st.end
            }
        };
        write_range_end(off, len)?;
        Ok(off)
    }

    /// Stores `data` at `offset` (`None`: at the end, as an append) and returns where it
    /// went: into the buffer of the extent it continues when that has room
    /// (`State::extend`), else copied into a new buffer outside the lock and installed.
    ///
    /// A write that continues no extent and is small is packed instead: copied, under
    /// the lock, right after the previous packed write in the packing buffer, when that
    /// has room; else it starts a new packing buffer.
    fn store(&self, offset: Option<u64>, data: &[u8]) -> io::Result<u64> {
        let began = ack_clock();
        let sequential = self.chunk > 0 && offset.is_none_or(|o| self.continues(o));
        let packed = !sequential && data.len() <= self.pack / 4;
        if sequential || packed {
            let mut st = self.lock();
            st.check_failed()?;
            let off = self.place(&st, offset, data.len())?;
            let (mark, now) = (self.limits.watermark, Instant::now);
            let stored = if sequential {
                st.extend(off, data, mark, now)
            } else {
                st.pack(off, data, mark, now)
            };
            if let Some(wake) = stored {
                self.acked(st, off + data.len() as u64, began, wake);
                return Ok(off);
            }
        }
        let (mut buf, waited) = if packed {
            let wake = || self.space_wait();
            self.pool
                .reserve_extent(data.len(), self.pack, self.pack, wake)?
        } else {
            self.reserve_for(offset, data.len())?
        };
        buf.as_mut_slice().copy_from_slice(data);
        self.install(offset, buf, began, waited, packed)
    }

    /// Installs a filled buffer at `offset` (`None`: at the end, as an append) and returns
    /// where it went. `began`: when the call started, if its ack is timed. `packing`:
    /// the buffer becomes the packing buffer (see `store`).
    fn install(
        &self,
        offset: Option<u64>,
        buf: BufRef,
        began: Option<Instant>,
        waited: Option<Duration>,
        packing: bool,
    ) -> io::Result<u64> {
        let len = buf.as_slice().len();
        let mut st = self.lock();
        st.check_failed()?;
        let off = self.place(&st, offset, len)?;
        let wake = if packing {
            st.install_packing(off, buf, self.limits.watermark, Instant::now)
        } else {
            st.install(off, buf, self.limits.watermark, Instant::now)
        };
        if let Some(w) = waited {
            st.stats.backpressure_waits += 1;
            st.stats.backpressure_wait_ns += w.as_nanos() as u64;
        }
        self.acked(st, off + len as u64, began, wake);
        Ok(off)
    }

    /// The end of a stored write: publish the end, time the ack, wake the submitter.
    fn acked(&self, mut st: StateGuard<'_>, end: u64, began: Option<Instant>, wake: bool) {
        self.end.store(st.end, Ordering::Release);
        self.last_end.store(end, Ordering::Relaxed);
        if let Some(began) = began {
            record(
                &mut st.stats.write_ack_ns,
                began.elapsed().as_nanos() as u64,
            );
        }
        drop(st);
        if wake {
            self.waker.wake();
        }
    }

    /// Registers a waiter and waits for its result, leading a commit on this thread
    /// whenever the state machine says so (`State::next_step`).
    fn force(&self, range: Option<(u64, u64)>, mode: SyncMode) -> io::Result<()> {
        let began = Instant::now();
        let mut st = self.lock();
        st.check_failed()?;
        let Some(key) = st.add_waiter(range, mode, Notify::Bell(0)) else {
            return Ok(());
        };
        let bit = bell::bit(key);
        loop {
            if let Some(result) = st.take_result(key) {
                record(&mut st.stats.force_ns, began.elapsed().as_nanos() as u64);
                return result;
            }
            match st.next_step(&self.limits, Instant::now(), key, true) {
                Next::Lead(mut lead) => {
                    drop(st);
                    if lead.wake_submitter {
                        self.waker.wake();
                    }
                    let sync = lead::run(
                        &self.file,
                        &mut lead,
                        #[cfg(feature = "fault-injection")]
                        self.faults.as_ref(),
                    );
                    st = self.lock();
                    let wake = st.finish_lead(lead, sync, &self.limits, Instant::now());
                    if wake {
                        drop(st);
                        self.waker.wake();
                        st = self.lock();
                    }
                    continue;
                }
                Next::Wait(until) => {
                    let ticket = self.bell.ticket();
                    drop(st);
                    self.bell.wait(ticket, bit, Some(until));
                }
                Next::Park => {
                    let ticket = self.bell.ticket();
                    drop(st);
                    self.bell.wait(ticket, bit, None);
                }
                Next::WakeSubmitter => {
                    let wake = st.wants_wake(true);
                    let ticket = self.bell.ticket();
                    drop(st);
                    if wake {
                        self.waker.wake();
                    }
                    self.bell.wait(ticket, bit, None);
                }
            }
            st = self.lock();
        }
    }

    /// Reads `[offset, offset + buf.len())`: buffered blocks over whatever the file holds.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = range_end(offset, buf.len())?;
        let mut pieces = Vec::new();
        let mut covered = 0;
        let stale_from;
        {
            let st = self.lock();
            if offset < st.start || end > st.end {
                return Err(edom());
            }
            stale_from = st.barriers.stale_from();
            for (bs, b) in st.index.overlapping(offset, end) {
                let from = bs.max(offset);
                let to = (bs + b.len).min(end);
                covered += to - from;
                pieces.push((
                    from,
                    b.buf.shared(),
                    b.buf_off + (from - bs) as usize,
                    (to - from) as usize,
                ));
            }
        }
        // Copying outside the lock is safe: each piece lies below its buffer's filled
        // length as it was under the lock, and those bytes are never written again while
        // the buffer is shared (growing an extent writes only past the filled length;
        // `pool.rs`, `BufRef::append`).
        if covered < buf.len() as u64 {
            if self.direct {
                fileio::pread_direct(&self.file, self.align, buf, offset)?;
            } else {
                fileio::pread_zero_fill(&self.file, buf, offset)?;
            }
            // A `truncate_start` during the pread may have punched what it read: then
            // the read counts as after it. (The punch is issued after the start moved.)
            if self.start.load(Ordering::Acquire) > offset {
                return Err(edom());
            }
            // A shrink not yet performed: the file may still hold older bytes there.
            if stale_from < end {
                buf[stale_from.saturating_sub(offset) as usize..].fill(0);
            }
        }
        for (from, src, at, len) in pieces {
            let dst = (from - offset) as usize;
            buf[dst..dst + len].copy_from_slice(&src.as_slice()[at..at + len]);
        }
        Ok(())
    }
}

/// The buffer size of an extent: a chunk of [`EXTENT_CHUNK`], but no more than one write
/// (`max_write`) or a quarter of the budget, whole pages of the alignment; 0 (no extents)
/// when that leaves less than two pages.
fn extent_chunk(max_write: usize, budget: usize, align: usize) -> usize {
    let page = align.max(4096);
    let chunk = EXTENT_CHUNK.min(max_write).min(budget / 4) / page * page;
    if chunk < 2 * page {
        0
    } else {
        chunk
    }
}

/// The size of a packing buffer: [`PACK_BYTES`], but no more than a sixteenth of the
/// budget (so that buffers pinned by a few unwritten writes leave room for the rest),
/// whole pages of the alignment; 0 (no packing) when that leaves less than two pages.
fn pack_bytes(budget: usize, align: usize) -> usize {
    let page = align.max(4096);
    let pack = PACK_BYTES.min(budget / 16) / page * page;
    if pack < 2 * page {
        0
    } else {
        pack
    }
}

/// The default largest write of a buffered file. A buffered write is a copy into the page
/// cache that the kernel does not interrupt: at the device's 4 MiB it kept a CPU for a
/// millisecond or more, and it started only once 4 MiB were dirty, long after the first
/// of them left the cache. At 256 KiB buffered `seq` ran 1.8 to 7.8 times as fast in the
/// rounds measured, a sibling file's force p99 under such a flood fell 1.4 to 10 times, and
/// `log` took less CPU per commit (docs/benchmarks.md, "The largest buffered write").
const BUFFERED_MAX_WRITE: usize = 256 << 10;

impl Inner {
    /// The shared part of a new handle on `hub`'s engine; `cfg` is already valid.
    pub(crate) fn new(file: File, cfg: &Config, hub: &Hub) -> io::Result<Inner> {
        let file = Arc::new(file);
        let align = if cfg.direct_io {
            fileio::dio_alignment(&file).bytes
        } else {
            1
        };
        let max_write = cfg.max_write_bytes.unwrap_or_else(|| {
            let device = fileio::device_max_write(&file);
            if cfg.direct_io {
                device
            } else {
                device.min(BUFFERED_MAX_WRITE)
            }
        });
        let max_write = (max_write / align).max(1) * align;
        let len = fileio::file_len(&file)?;
        let block = fileio::fs_block_size(&file)?;
        let barriers = Barriers::new(
            block,
            cfg.punch_holes.then_some(block),
            cfg.preallocate as u64,
            len,
        )
        .direct(cfg.direct_io);
        let limits = Limits {
            queue_depth: cfg.queue_depth as usize,
            max_write_bytes: max_write as u64,
            // Start write-back once a full-size write is ready (or a quarter of the
            // budget, if that is smaller): big enough to merge, early enough to overlap.
            watermark: (max_write as u64).min(cfg.buffer_bytes as u64 / 4).max(1),
            max_dirty_age: cfg.max_dirty_age,
            align: align as u64,
            sync: cfg.sync,
        };
        #[allow(unused_mut)] // mutable only with fault injection
        let mut state = State::new(0, len, hub.kind, barriers);
        #[cfg(feature = "fault-injection")]
        if let Some(f) = &cfg.fault_injector {
            state.sync_submitted = f.mutated(fault::Mutation::SyncSubmitted);
        }
        Ok(Inner {
            state: Mutex::new(state),
            bell: Bell::default(),
            pool: Pool::join(&hub.budget, cfg.buffer_bytes, cfg.max_blocks, align),
            file,
            start: AtomicU64::new(0),
            end: AtomicU64::new(len),
            waker: hub.file_waker(),
            limits,
            align,
            direct: cfg.direct_io,
            max_io: cfg.max_io_bytes,
            chunk: extent_chunk(max_write, cfg.buffer_bytes, align),
            pack: pack_bytes(cfg.buffer_bytes, align),
            last_end: AtomicU64::new(len),
            sync: cfg.sync,
            #[cfg(feature = "fault-injection")]
            faults: cfg.fault_injector.clone(),
        })
    }
}

impl CommitSink for Inner {
    fn commit(&self, offset: u64, len: usize, buf: AlignedBuf) -> io::Result<()> {
        let buf = self.pool.adopt(buf, len);
        if len == 0 {
            // Nothing to store. (Installing an empty block would replace the block that
            // starts at `offset` in the index, losing its bytes.)
            return if offset < self.lock().start {
                Err(edom())
            } else {
                Ok(())
            };
        }
        self.install(Some(offset), buf, ack_clock(), None, false)
            .map(|_| ())
    }

    fn dropped_unstored(&self, _error: &io::Error) {
        self.lock().stats.dropped_buffer_failures += 1;
    }
}

impl WriteBehindFile {
    /// Opens an existing file for reading and writing; `end_position()` starts at its
    /// length. Errors from the OS (missing file, a directory, a read-only filesystem) come
    /// back unchanged; a bad [`Config`] gives `InvalidInput`.
    pub fn open(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::Existing)
    }

    /// Creates the file, or truncates it to length 0 if it exists
    /// ([`OpenMode::CreateOrTruncate`]).
    pub fn create(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::CreateOrTruncate)
    }

    /// Creates the file; fails with `EEXIST` if anything exists under `path`
    /// ([`OpenMode::CreateNew`]).
    pub fn create_new(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::CreateNew)
    }

    /// Opens `path` as `mode` says; see [`OpenMode`]. Takes an exclusive `flock` on the
    /// file unless [`Config::lock_file`] is off: a second handle on the same file, in this
    /// process or another, gets `EWOULDBLOCK` until this one is closed.
    ///
    /// # Errors
    ///
    /// The OS error unchanged (`ENOENT`, `EEXIST`, `EISDIR`, `EROFS`, ...); `EWOULDBLOCK`
    /// ([`io::ErrorKind::WouldBlock`]) when another handle holds the lock; `InvalidInput`
    /// for a bad `cfg` (checked before the file is touched); with
    /// [`Backend::IoUring`](crate::Backend::IoUring), the error of setting up the ring.
    pub fn open_with(path: impl AsRef<Path>, cfg: &Config, mode: OpenMode) -> io::Result<Self> {
        let opened = fileio::open(path.as_ref(), cfg, mode)?;
        let mut h = Self::start(opened.file, cfg)?;
        h._lock = opened.lock;
        Ok(h)
    }

    /// Runs `file` on a private engine of its own (whose thread `close` joins).
    pub(crate) fn start(file: File, cfg: &Config) -> io::Result<Self> {
        let (engine, thread) = Engine::spawn(&cfg.engine_config())?;
        let mut f = engine.attach(file, cfg)?;
        f.private = Some(thread);
        Ok(f)
    }

    pub(crate) fn new(inner: Arc<Inner>, hub: Arc<Hub>, done: mpsc::Receiver<()>) -> Self {
        WriteBehindFile {
            inner,
            hub,
            done: Some(Mutex::new(done)),
            private: None,
            _lock: None,
        }
    }

    /// Statistics so far (a copy). It copies the histograms (hundreds of KB) while holding
    /// the lock writers install their blocks under, so it delays them meanwhile: call it
    /// for monitoring, not once per operation.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.lock().stats.clone();
        self.engine_stats(&mut stats);
        stats
    }

    /// The engine-wide figures of `stats`.
    fn engine_stats(&self, stats: &mut Stats) {
        stats.engine_enters = self.hub.enters.load(Ordering::Relaxed);
        stats.engine_submits = self.hub.submits.load(Ordering::Relaxed);
        stats.io_worker_cap = self.hub.io_worker_cap;
    }

    /// The engine in use (io_uring, or threads where io_uring is unavailable).
    pub fn backend(&self) -> BackendKind {
        self.inner.lock().stats.backend
    }

    /// The alignment writes must respect: the direct-I/O alignment, or 1 when buffered.
    pub fn alignment(&self) -> usize {
        self.inner.align
    }

    /// [`force`](Handle::force) as a `Future`, for async code: it resolves with what
    /// `force` would return, once every write that returned before its first poll is
    /// durable. It needs no particular executor and never blocks the thread that polls
    /// it: the submission thread does the write-back and the sync, and async and
    /// blocking forcers share the same group commits. Dropping it before it resolves
    /// withdraws it (the writes stay buffered and are written back as usual).
    ///
    /// ```
    /// # use writebehind::{Config, Handle, WriteBehindFile};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     // A minimal executor: any runtime works.
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct T(std::thread::Thread);
    /// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
    /// #             return v;
    /// #         }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// # fn main() -> std::io::Result<()> {
    /// let dir = tempfile::tempdir()?;
    /// let file = WriteBehindFile::create(dir.path().join("log"), &Config::default())?;
    /// file.append(b"commit 1")?;
    /// block_on(file.force_async())?; // or `.await` inside async code
    /// # Ok(())
    /// # }
    /// ```
    pub fn force_async(&self) -> ForceFuture<'_> {
        ForceFuture::new(&self.inner, None)
    }

    /// [`force_range`](Handle::force_range) as a `Future`; see
    /// [`force_async`](Self::force_async). Errors as `force_range`'s (`EINVAL` when
    /// `start > stop`).
    pub fn force_range_async(&self, start: u64, stop: u64) -> ForceFuture<'_> {
        if start > stop {
            let e = os_msg(
                libc::EINVAL,
                format!("force_range: start {start} > stop {stop}"),
            );
            return ForceFuture::ready(&self.inner, Err(e));
        }
        if start == stop {
            return ForceFuture::ready(&self.inner, self.inner.lock().check_failed());
        }
        ForceFuture::new(&self.inner, Some((start, stop)))
    }

    /// Like [`force`](Handle::force), but with `fdatasync` whatever `Config::sync` says,
    /// as `std::fs::File::sync_data`.
    pub fn sync_data(&self) -> io::Result<()> {
        self.inner.force(None, SyncMode::Data)
    }

    /// Like [`force`](Handle::force), but with `fsync` (all metadata too) whatever
    /// `Config::sync` says, as `std::fs::File::sync_all`. An `fsync` is owed whenever
    /// the file may have changed since the last one, so this syncs even right after a
    /// `force` by `fdatasync` made every write durable; it returns at once only when
    /// nothing was written since the last `fsync`. Forcers of both kinds share group
    /// commits (a group with any `sync_all` in it gets an `fsync`).
    pub fn sync_all(&self) -> io::Result<()> {
        self.inner.force(None, SyncMode::All)
    }

    /// Writes back everything still buffered (without an fsync: `force` first for
    /// durability), stops the submission thread, releases the file's lock and returns the
    /// final statistics.
    ///
    /// # Errors
    ///
    /// The latched errno if any write or fsync failed (the handle's unwritten bytes are
    /// then gone with it: call `force` first to learn of a failure while they can still be
    /// read); `EIO` if the submission thread panicked.
    pub fn close(mut self) -> io::Result<Stats> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<Stats> {
        let Some(done) = self.done.take() else {
            return Err(os(libc::EBADF));
        };
        self.inner.lock().closing = true;
        self.inner.waker.wake();
        // Disconnects once the engine's thread has let go of the file.
        let _ = done.into_inner().map(|d| d.recv());
        if let Some(thread) = self.private.take() {
            if thread.join().is_err() {
                return Err(os_msg(libc::EIO, "writebehind: submission thread panicked"));
            }
        }
        let st = self.inner.lock();
        match st.failed {
            Some(code) => Err(os(code)),
            None => {
                let mut stats = st.stats.clone();
                drop(st);
                self.engine_stats(&mut stats);
                Ok(stats)
            }
        }
    }
}

impl Drop for WriteBehindFile {
    fn drop(&mut self) {
        if self.done.is_some() {
            if let Err(e) = self.shutdown() {
                log::error!("writebehind: closing on drop: {e}");
            }
        }
    }
}

impl std::fmt::Debug for WriteBehindFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehindFile")
            .field("start", &self.start_position())
            .field("end", &self.end_position())
            .field("align", &self.inner.align)
            .finish()
    }
}

impl Handle for WriteBehindFile {
    fn start_position(&self) -> u64 {
        self.inner.start.load(Ordering::Acquire)
    }

    fn end_position(&self) -> u64 {
        self.inner.end.load(Ordering::Acquire)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_io_len(data.len(), self.inner.max_io)?;
        range_end(offset, data.len())?;
        if offset < self.start_position() {
            return Err(edom());
        }
        if data.is_empty() {
            return Ok(());
        }
        write_range_end(offset, data.len())?;
        self.inner.check_aligned(offset, data.len())?;
        self.inner.store(Some(offset), data).map(|_| ())
    }

    fn append(&self, data: &[u8]) -> io::Result<u64> {
        check_io_len(data.len(), self.inner.max_io)?;
        if data.is_empty() {
            return Ok(self.end_position());
        }
        self.inner.check_aligned(0, data.len())?;
        self.inner.store(None, data)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_io_len(buf.len(), self.inner.max_io)?;
        range_end(offset, buf.len())?;
        if buf.is_empty() {
            // Checked like any read: EDOM outside [start, end].
            let st = self.inner.lock();
            return if offset < st.start || offset > st.end {
                Err(edom())
            } else {
                Ok(())
            };
        }
        self.inner.read_into(offset, buf)
    }

    fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.inner.max_io)?;
        range_end(offset, len)?;
        if len > 0 {
            write_range_end(offset, len)?;
            self.inner.check_aligned(offset, len)?;
        }
        if offset < self.start_position() {
            return Err(edom());
        }
        self.inner.lock().check_failed()?;
        let (buf, _) = self.inner.reserve(len)?;
        Ok(WriteBuffer::new(
            &*self.inner,
            offset,
            len,
            buf.into_reserved(),
        ))
    }

    fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.inner.max_io)?;
        self.inner.check_aligned(0, len)?;
        self.inner.lock().check_failed()?;
        let (buf, _) = self.inner.reserve(len)?;
        let offset = {
            let mut st = self.inner.lock();
            if len > 0 {
                self.inner.check_aligned(st.end, len)?;
            }
            let off = st.end;
            st.end = write_range_end(off, len)?;
            self.inner.end.store(st.end, Ordering::Release);
            off
        };
        Ok(WriteBuffer::new(
            &*self.inner,
            offset,
            len,
            buf.into_reserved(),
        ))
    }

    fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>> {
        check_io_len(len, self.inner.max_io)?;
        let end = range_end(offset, len)?;
        {
            let st = self.inner.lock();
            if offset < st.start || end > st.end {
                return Err(edom());
            }
            // Zero-copy when one buffered block holds the whole range.
            let whole = st
                .index
                .overlapping(offset, end)
                .next()
                .filter(|(bs, b)| *bs <= offset && bs + b.len >= end && len > 0)
                .map(|(bs, b)| (b.buf.shared(), b.buf_off + (offset - bs) as usize));
            if let Some((buf, at)) = whole {
                let shared: Arc<dyn Bytes> = buf;
                return Ok(ReadBuffer::shared(shared, at, len));
            }
        }
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| os_msg(libc::ENOMEM, format!("cannot allocate {len} bytes")))?;
        v.resize(len, 0);
        self.read(offset, &mut v)?;
        Ok(ReadBuffer::owned(v))
    }

    fn force(&self) -> io::Result<()> {
        self.inner.force(None, self.inner.sync)
    }

    fn force_range(&self, start: u64, stop: u64) -> io::Result<()> {
        if start > stop {
            return Err(os_msg(
                libc::EINVAL,
                format!("force_range: start {start} > stop {stop}"),
            ));
        }
        if start == stop {
            return self.inner.lock().check_failed();
        }
        self.inner.force(Some((start, stop)), self.inner.sync)
    }

    fn truncate_start(&self, new_start: u64) -> io::Result<()> {
        let mut st = self.inner.lock();
        if new_start > st.end {
            return Err(edom());
        }
        if new_start > st.start {
            let wake = st.truncate_start(new_start);
            self.inner.start.store(new_start, Ordering::Release);
            drop(st);
            if wake {
                self.inner.waker.wake();
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.inner.lock();
        st.check_failed()?;
        check_set_len(len, st.start, self.inner.align)?;
        let wake = st.set_len(len);
        self.inner.end.store(st.end, Ordering::Release);
        drop(st);
        if wake {
            self.inner.waker.wake();
        }
        Ok(())
    }

    fn failure(&self) -> Option<io::Error> {
        self.inner.lock().check_failed().err()
    }
}

impl FileExt for WriteBehindFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        handle::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        handle::write_at(self, buf, offset)
    }
}
