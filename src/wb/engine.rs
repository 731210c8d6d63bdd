//! The seam between the write-back core and the thing that performs I/O.
//!
//! The submission thread owns one `Engine`. It pushes vectored writes and syncs, each
//! tagged with a `user_data` of its choosing, then calls [`Engine::wait`] to submit them
//! and collect completions. Engines: io_uring (`uring.rs`), background threads running
//! `pwritev`/`fdatasync` (`threads.rs`), and, for tests, a wrapper that rewrites
//! completions to inject faults (`fault.rs`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::SyncMode;
use crate::stats::BackendKind;

/// A user_data value engines may use internally; the core never passes it.
pub(crate) const RESERVED_USER_DATA: u64 = u64::MAX;

/// The outcome of one pushed request: bytes written (writes), 0 (syncs), or `-errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// Wakes the submission thread out of [`Engine::wait`]. Called by writers and forcers;
/// cheap, callable from any thread, and wake-ups may coalesce.
pub(crate) trait Waker: Send + Sync {
    fn wake(&self);
}

/// Performs the file I/O for one handle. Used by the submission thread only.
pub(crate) trait Engine: Send {
    /// Which engine this is, for `Stats`.
    fn kind(&self) -> BackendKind;

    /// A waker callers use to interrupt [`wait`](Engine::wait).
    fn waker(&self) -> Arc<dyn Waker>;

    /// Queues a write of the `iovcnt` buffers at `iov` to the file at `offset`.
    ///
    /// With `linked_sync = Some(ud)`, a sync (per the handle's `SyncMode`) tagged `ud`
    /// is queued to run only if this write completes in full; otherwise the sync
    /// completes with `-ECANCELED`. Both complete separately.
    ///
    /// # Safety
    /// The iovec array and every byte it points to must stay valid and unmodified until
    /// the completion of `user_data` has been returned by [`wait`](Engine::wait).
    unsafe fn push_write(
        &mut self,
        user_data: u64,
        offset: u64,
        iov: *const libc::iovec,
        iovcnt: u32,
        linked_sync: Option<u64>,
    ) -> io::Result<()>;

    /// Queues a sync of the whole file: `fdatasync` or `fsync` per `mode`. It covers the
    /// writes whose completions were returned before it was pushed.
    fn push_sync(&mut self, user_data: u64, mode: SyncMode) -> io::Result<()>;

    /// Submits everything pushed, then waits until at least one completion is available,
    /// a waker fires, or `timeout` passes (`None`: no timeout); appends every available
    /// completion to `out`. Returns early without completions on a wake-up or timeout.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()>;
}
