//! The seam between the write-back core and the thing that performs I/O.
//!
//! The submission thread owns one `IoEngine`, shared by every file of a
//! [`crate::Engine`]: each request names its file. It pushes vectored writes and syncs, each
//! tagged with a `user_data` of its choosing, then calls [`IoEngine::wait`] to submit them
//! and collect completions. Engines: io_uring (`uring.rs`), background threads running
//! `pwritev`/`fdatasync` (`threads.rs`), and, for tests, a wrapper that rewrites
//! completions to inject faults (`fault.rs`).

pub(crate) mod open;
pub(crate) mod threads;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::config::SyncMode;
use crate::stats::BackendKind;

/// A user_data value engines may use internally; the core never passes it.
pub(crate) const RESERVED_USER_DATA: u64 = u64::MAX;

/// The file a request goes to: its descriptor, and the sync a linked sync runs (the
/// file's `FileConfig::sync`). The core keeps the descriptor open until every request
/// pushed to it has completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub fd: RawFd,
    pub sync: SyncMode,
}

/// Counts of `io_uring_enter` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Enters {
    pub all: u64,
    /// Those that submitted at least one user request (not counting the engine's own
    /// wake-up read).
    pub submitting: u64,
}

/// The outcome of one pushed request: bytes written (writes), 0 (syncs), or `-errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// A change to the file's size or allocation, run by [`IoEngine::push_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SizeChange {
    /// `ftruncate(len)`.
    Truncate(u64),
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)` of `[offset, offset + len)`.
    Punch { offset: u64, len: u64 },
    /// A write of zeros over `[offset, offset + len)` (`len <= ZEROS_LEN`), from a static
    /// zeroed buffer: completes with the bytes written, like a write.
    ZeroFill { offset: u64, len: u64 },
}

/// The most bytes one [`SizeChange::ZeroFill`] writes.
pub(crate) const ZEROS_LEN: usize = 1 << 20;

/// Page-aligned zeros (in `.bss`: no pages until touched), aligned for direct I/O.
#[repr(C, align(4096))]
pub(crate) struct Zeros(pub [u8; ZEROS_LEN]);

/// What zero fills write from; never written to.
pub(crate) static ZEROS: Zeros = Zeros([0; ZEROS_LEN]);

impl SizeChange {
    /// Runs the change with a blocking syscall: 0 (a zero fill: bytes written) or
    /// `-errno` (`EINTR` retried).
    pub(crate) fn run_blocking(self, fd: std::os::fd::RawFd) -> i32 {
        loop {
            // SAFETY: plain syscalls on a descriptor the caller keeps open; a zero fill
            // reads at most ZEROS_LEN bytes of the immutable static ZEROS.
            let rc = unsafe {
                match self {
                    SizeChange::ZeroFill { offset, len } => {
                        let len = (len as usize).min(ZEROS_LEN);
                        let n =
                            libc::pwrite(fd, ZEROS.0.as_ptr().cast(), len, offset as libc::off_t);
                        if n >= 0 {
                            return n as i32;
                        }
                        -1
                    }
                    SizeChange::Truncate(len) => libc::ftruncate(fd, len as libc::off_t),
                    SizeChange::Punch { offset, len } => libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        offset as libc::off_t,
                        len as libc::off_t,
                    ),
                }
            };
            if rc == 0 {
                return 0;
            }
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno != libc::EINTR {
                return -errno;
            }
        }
    }
}

/// Wakes the submission thread out of [`IoEngine::wait`]. Called by writers and forcers;
/// cheap, callable from any thread, and wake-ups may coalesce.
pub(crate) trait Waker: Send + Sync {
    fn wake(&self);
}

/// Performs the file I/O for one handle. Used by the submission thread only.
pub(crate) trait IoEngine: Send {
    /// Which engine this is, for `Stats`.
    fn kind(&self) -> BackendKind;

    /// The cap on the kernel's own I/O workers in force (io_uring's io-wq), 0 if none.
    fn io_worker_cap(&self) -> u32 {
        0
    }

    /// Calls into the kernel that submitted or waited (`io_uring_enter`) so far, and how
    /// many of them submitted requests.
    fn enters(&self) -> Enters {
        Enters::default()
    }

    /// A waker callers use to interrupt [`wait`](IoEngine::wait).
    fn waker(&self) -> Arc<dyn Waker>;

    /// Rewrites the completions of the file in `slot` (the high 32 bits of its requests'
    /// `user_data`) by `injector`'s plan from now on, or stops (`None`, when the file
    /// leaves). Only the fault wrapper (`fault.rs`) does; with the feature on,
    /// `open::open_engine` wraps every engine in it.
    #[cfg(feature = "fault-injection")]
    fn set_faults(&mut self, _slot: usize, _injector: Option<crate::fault::FaultInjector>) {}

    /// Queues a write of the `iovcnt` buffers at `iov` to `target` at `offset`.
    ///
    /// With `linked_sync = Some(ud)`, a sync (per `target.sync`) tagged `ud`
    /// is queued to run only if this write completes in full; otherwise the sync
    /// completes with `-ECANCELED`. Both complete separately.
    ///
    /// # Safety
    /// The iovec array and every byte it points to must stay valid and unmodified until
    /// the completion of `user_data` has been returned by [`wait`](IoEngine::wait).
    unsafe fn push_write(
        &mut self,
        user_data: u64,
        target: Target,
        offset: u64,
        iov: *const libc::iovec,
        iovcnt: u32,
        linked_sync: Option<u64>,
    ) -> io::Result<()>;

    /// Queues a sync of the whole file `fd`: `fdatasync` or `fsync` per `mode`. It covers
    /// the writes whose completions were returned before it was pushed.
    fn push_sync(&mut self, user_data: u64, fd: RawFd, mode: SyncMode) -> io::Result<()>;

    /// Queues a size change tagged `user_data`; it completes with 0 or `-errno`. The core
    /// orders it against writes and syncs itself (it is pushed only when nothing that
    /// conflicts with it is in flight), so engines may run it concurrently with them.
    fn push_size(&mut self, user_data: u64, fd: RawFd, change: SizeChange) -> io::Result<()>;

    /// Submits everything pushed, then waits until at least one completion is available,
    /// a waker fires, or `timeout` passes (`None`: no timeout); appends every available
    /// completion to `out`. Returns early without completions on a wake-up or timeout.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()>;
}
