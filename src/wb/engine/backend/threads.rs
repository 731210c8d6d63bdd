//! The thread engine: the [`IoEngine`] contract on plain syscalls, for where io_uring is
//! unavailable. Worker threads take requests from a shared queue and run `pwritev`,
//! `fdatasync` or `fsync`; results are reported exactly like io_uring CQEs (bytes written,
//! 0, or `-errno`), short writes included: the core resubmits the rest.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Completion, IoEngine, SizeChange, Target, Waker, RESERVED_USER_DATA};
use crate::config::SyncMode;
use crate::error::os_msg;
use crate::stats::BackendKind;

/// The iovec array of a pushed write.
struct Iovecs {
    ptr: *const libc::iovec,
    count: u32,
}

// SAFETY: `push_write`'s contract makes the array and every buffer it points to valid and
// unmodified until the write's completion has been returned by `wait`, which happens only
// after the worker that uses the pointers has finished with them. The worker only reads.
unsafe impl Send for Iovecs {}

enum Request {
    Write {
        target: Target,
        offset: u64,
        iov: Iovecs,
        linked_sync: Option<u64>,
    },
    Sync(RawFd, SyncMode),
    Size(RawFd, SizeChange),
}

struct Tagged {
    user_data: u64,
    request: Request,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Tagged>,
    completions: Vec<Completion>,
    woken: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<Queue>,
    /// Workers wait here for requests.
    work: Condvar,
    /// The submission thread waits here for completions or a wake-up.
    done: Condvar,
    /// A wake-up is pending; later wakes cost one atomic swap (see `ThreadsWaker`).
    wake_pending: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; recover the state if something did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn complete(&self, user_data: u64, result: i32) {
        self.lock()
            .completions
            .push(Completion { user_data, result });
        self.done.notify_one();
    }

    /// Runs one request to completion, posting its completion(s).
    fn execute(&self, req: Tagged) {
        match req.request {
            Request::Sync(fd, mode) => self.complete(req.user_data, sync_fd(fd, mode)),
            Request::Size(fd, change) => {
                let res = change.run_blocking(fd);
                self.complete(req.user_data, res);
            }
            Request::Write {
                target,
                offset,
                iov,
                linked_sync,
            } => {
                // SAFETY: per push_write's contract (see `Iovecs`) the array is valid for
                // `count` elements until this request's completion is posted below.
                let iovs = unsafe { std::slice::from_raw_parts(iov.ptr, iov.count as usize) };
                let full: usize = iovs.iter().map(|v| v.iov_len).sum();
                let res = pwritev(target.fd, &iov, offset);
                self.complete(req.user_data, res);
                if let Some(sync_ud) = linked_sync {
                    // Like an IO_LINK chain: the sync runs only after a complete write.
                    let sync_res = if res >= 0 && res as usize == full {
                        sync_fd(target.fd, target.sync)
                    } else {
                        -libc::ECANCELED
                    };
                    self.complete(sync_ud, sync_res);
                }
            }
        }
    }
}

/// `fdatasync` or `fsync` (per `mode`) with EINTR retried; 0 or `-errno`. Also used by a
/// forcer that leads a commit on its own thread (`lead.rs`).
pub(crate) fn sync_fd(fd: i32, mode: SyncMode) -> i32 {
    loop {
        // SAFETY: plain syscalls on a descriptor the caller keeps open.
        let rc = unsafe {
            match mode {
                SyncMode::Data => libc::fdatasync(fd),
                SyncMode::All => libc::fsync(fd),
            }
        };
        if rc == 0 {
            return 0;
        }
        let errno = last_errno();
        // Only an interrupted call is retried, never a failed sync (fsyncgate).
        if errno != libc::EINTR {
            return -errno;
        }
    }
}

/// `pwritev` with EINTR retried; bytes written or `-errno`.
fn pwritev(fd: i32, iov: &Iovecs, offset: u64) -> i32 {
    // SAFETY: see `Iovecs`: the array and buffers are valid and unmodified until the
    // completion is posted, which happens after this call returns.
    unsafe { pwritev_raw(fd, iov.ptr, iov.count, offset) }
}

/// `pwritev` of `count` iovecs at `iov`, with EINTR retried; bytes written or `-errno`.
///
/// # Safety
/// `iov` must point to `count` iovecs whose buffers stay valid for the call.
pub(crate) unsafe fn pwritev_raw(fd: i32, iov: *const libc::iovec, count: u32, offset: u64) -> i32 {
    let Ok(off) = libc::off_t::try_from(offset) else {
        return -libc::EINVAL;
    };
    loop {
        // SAFETY: guaranteed by the caller (this function's contract).
        let n = unsafe { libc::pwritev(fd, iov, count as libc::c_int, off) };
        if n >= 0 {
            // The kernel caps one write at MAX_RW_COUNT (< 2^31), like an io_uring CQE.
            return i32::try_from(n).unwrap_or(i32::MAX);
        }
        let errno = last_errno();
        if errno != libc::EINTR {
            return -errno;
        }
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn worker(shared: Arc<Shared>) {
    let mut state = shared.lock();
    loop {
        if let Some(req) = state.requests.pop_front() {
            drop(state);
            shared.execute(req);
            state = shared.lock();
        } else if state.shutdown {
            return;
        } else {
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Interrupts [`ThreadsEngine::wait`]. Coalesces: while a wake-up is pending, further
/// wakes cost one atomic swap and take no lock.
struct ThreadsWaker(Arc<Shared>);

impl Waker for ThreadsWaker {
    fn wake(&self) {
        if !self.0.wake_pending.swap(true, Ordering::AcqRel) {
            self.0.lock().woken = true;
            self.0.done.notify_one();
        }
    }
}

/// The [`IoEngine`] on worker threads running `pwritev` and `fdatasync`/`fsync`.
pub(crate) struct ThreadsEngine {
    shared: Arc<Shared>,
    /// Pushed requests, handed to the workers by the next `wait`.
    staged: Vec<Tagged>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadsEngine {
    /// Starts `workers` threads (at least 1).
    pub(crate) fn new(workers: usize) -> io::Result<Self> {
        if workers == 0 || workers > 1024 {
            return Err(os_msg(
                libc::EINVAL,
                format!("thread engine workers {workers} must be in 1..=1024"),
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            wake_pending: AtomicBool::new(false),
        });
        let mut engine = ThreadsEngine {
            shared,
            staged: Vec::new(),
            workers: Vec::with_capacity(workers),
        };
        for i in 0..workers {
            let shared = engine.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("writebehind-io-{i}"))
                .spawn(move || worker(shared))?; // Drop joins those already started.
            engine.workers.push(handle);
        }
        Ok(engine)
    }

    fn stage(&mut self, user_data: u64, request: Request) -> io::Result<()> {
        if user_data == RESERVED_USER_DATA {
            return Err(os_msg(libc::EINVAL, "user_data u64::MAX is reserved"));
        }
        self.staged.push(Tagged { user_data, request });
        Ok(())
    }
}

impl IoEngine for ThreadsEngine {
    fn kind(&self) -> BackendKind {
        BackendKind::Threads
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(ThreadsWaker(self.shared.clone()))
    }

    unsafe fn push_write(
        &mut self,
        user_data: u64,
        target: Target,
        offset: u64,
        iov: *const libc::iovec,
        iovcnt: u32,
        linked_sync: Option<u64>,
    ) -> io::Result<()> {
        if linked_sync == Some(RESERVED_USER_DATA) {
            return Err(os_msg(libc::EINVAL, "user_data u64::MAX is reserved"));
        }
        let iov = Iovecs {
            ptr: iov,
            count: iovcnt,
        };
        self.stage(
            user_data,
            Request::Write {
                target,
                offset,
                iov,
                linked_sync,
            },
        )
    }

    fn push_sync(&mut self, user_data: u64, fd: RawFd, mode: SyncMode) -> io::Result<()> {
        self.stage(user_data, Request::Sync(fd, mode))
    }

    fn push_size(&mut self, user_data: u64, fd: RawFd, change: SizeChange) -> io::Result<()> {
        self.stage(user_data, Request::Size(fd, change))
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.shared.lock();
        if !self.staged.is_empty() {
            let n = self.staged.len();
            state.requests.extend(self.staged.drain(..));
            for _ in 0..n.min(self.workers.len()) {
                self.shared.work.notify_one();
            }
        }
        while state.completions.is_empty() && !state.woken {
            state = match (timeout, deadline) {
                (None, _) => self
                    .shared
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                (Some(_), Some(deadline)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    self.shared
                        .done
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                // A timeout too large to represent: wait without one.
                (Some(_), None) => self
                    .shared
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        out.append(&mut state.completions);
        if std::mem::take(&mut state.woken) {
            drop(state);
            // After consuming `woken`: a wake racing with this finds the flag still set and
            // skips, but its work is visible to the caller (Acquire), who looks next.
            self.shared.wake_pending.swap(false, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for ThreadsEngine {
    /// Lets the workers finish every request pushed so far (their memory must not be
    /// touched after the engine is gone), then stops and joins them.
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.requests.extend(self.staged.drain(..));
            state.shutdown = true;
        }
        self.shared.work.notify_all();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::open::conformance as check;
    use super::*;
    use std::fs::File;

    fn make(workers: usize) -> impl Fn(Arc<File>) -> check::OnFile {
        move |file| check::OnFile::new(Box::new(ThreadsEngine::new(workers).unwrap()), file)
    }

    #[test]
    fn writes_and_syncs_land() {
        check::writes_and_syncs_land(&make(1));
        check::writes_and_syncs_land(&make(4));
    }

    #[test]
    fn size_changes_land() {
        check::size_changes_land(&make(2));
    }

    #[test]
    fn waker_interrupts_wait() {
        check::waker_interrupts_wait(&make(2));
    }

    #[test]
    fn timeout_returns_empty() {
        check::timeout_returns_empty(&make(2));
    }

    #[test]
    fn misaligned_direct_write_cancels_sync() {
        check::misaligned_direct_write_cancels_sync(&make(2));
    }

    #[test]
    fn burst_completes_exactly_once() {
        check::burst_completes_exactly_once(&make(4));
    }

    #[test]
    fn drop_finishes_in_flight() {
        check::drop_finishes_in_flight(&make(2));
    }

    #[test]
    fn reserved_user_data_is_refused() {
        check::reserved_user_data_is_refused(&make(1));
    }

    #[test]
    fn full_sync_mode_and_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let file = check::file_in(dir.path(), false);
        for bad in [0, 1025] {
            let e = ThreadsEngine::new(bad).err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        let threads = ThreadsEngine::new(3).unwrap();
        assert_eq!(threads.workers.len(), 3);
        let mut engine = check::OnFile::new(Box::new(threads), file);
        assert_eq!(engine.kind(), BackendKind::Threads);
        engine.push_sync(9, SyncMode::Data).unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            engine.wait(None, &mut out).unwrap();
        }
        assert_eq!(
            out,
            [Completion {
                user_data: 9,
                result: 0
            }]
        );
    }

    #[test]
    fn pwritev_errors_come_back_as_negative_errno() {
        // A read-only descriptor: EBADF, and the linked sync is cancelled.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ro"), b"x").unwrap();
        let file = Arc::new(File::open(dir.path().join("ro")).unwrap());
        let mut engine = check::OnFile::new(Box::new(ThreadsEngine::new(1).unwrap()), file);
        let out = engine.write_with_linked_sync(&[0u8; 16]);
        let expect = [
            Completion {
                user_data: 1,
                result: -libc::EBADF,
            },
            Completion {
                user_data: 2,
                result: -libc::ECANCELED,
            },
        ];
        assert_eq!(out, expect);
    }
}
