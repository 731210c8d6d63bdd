//! The io_uring engine: one ring, owned and driven by the submission thread.
//!
//! Writes are `Writev` SQEs; a linked sync is an `Fsync` SQE chained with `IO_LINK` in the
//! same submission, so the kernel cancels it (`-ECANCELED`) when the write falls short or
//! fails. `IO_HARDLINK` and `CQE_SKIP_SUCCESS` are never used: the first would sync after a
//! failed write, the second suppresses the cancelled sync's CQE (measured on this kernel).
//!
//! Wake-ups: an eventfd with one `Read` SQE (user_data [`RESERVED_USER_DATA`]) kept armed on
//! it; a waker writes to the eventfd, the read completes and `wait` returns. The 8-byte read
//! target is heap memory owned by the engine and outlives the armed read (see `Drop`).

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::squeue::Flags;
use io_uring::types::{FsyncFlags, SubmitArgs, Timespec};
use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{
    Completion, Enters, IoEngine, SizeChange, Target, Waker, RESERVED_USER_DATA, ZEROS, ZEROS_LEN,
};
use crate::config::SyncMode;
use crate::error::{os, os_msg};
use crate::stats::BackendKind;
use std::os::fd::RawFd;

/// The ring-setup flags the kernel accepted, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingSetup {
    /// `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`.
    SingleIssuerDeferTaskrun,
    /// `COOP_TASKRUN` only.
    CoopTaskrun,
    /// No setup flags.
    Plain,
}

/// Wakes the submission thread by writing to the engine's eventfd.
///
/// `pending` makes wake-ups coalesce: only the first wake after the engine consumed the
/// previous one costs a `write(2)`; the rest are one atomic swap.
struct EventFdWaker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl EventFdWaker {
    fn new() -> io::Result<Self> {
        // Blocking on purpose (no EFD_NONBLOCK): io_uring honours O_NONBLOCK, and on kernels
        // where eventfd lacks FMODE_NOWAIT a read on a non-blocking eventfd completes at once
        // with -EAGAIN instead of waiting, which would turn the armed read into a busy loop.
        // A write to it cannot block in practice: it only blocks when the counter would pass
        // 2^64 - 2, and `pending` keeps it at a handful at most.
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFdWaker {
            fd,
            pending: AtomicBool::new(false),
        })
    }

    /// Adds 1 to the eventfd counter, ignoring errors (there is nothing a waker could do;
    /// EAGAIN would mean the counter is already non-zero, i.e. a wake-up is on its way).
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to a descriptor we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl Waker for EventFdWaker {
    fn wake(&self) {
        // AcqRel: the engine's Acquire swap that clears the flag then sees everything this
        // thread did before waking (e.g. queueing work).
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.signal();
        }
    }
}

/// The [`IoEngine`] on io_uring. See the module docs.
pub(crate) struct UringEngine {
    ring: IoUring,
    setup: RingSetup,
    waker: Arc<EventFdWaker>,
    /// Target of the armed eventfd read. Boxed for a stable address; the kernel writes it
    /// through a raw pointer from `UnsafeCell::get`, and Rust code never reads it.
    wake_buf: Box<UnsafeCell<u64>>,
    /// The eventfd read is pushed and its CQE has not been reaped.
    wake_armed: bool,
    /// A wake-up was consumed (by any reap) and not yet reported by `wait`.
    woke: bool,
    /// The eventfd read failed with this errno; reported by the next `wait`.
    wake_error: Option<i32>,
    /// User requests pushed whose CQE has not been reaped yet.
    in_flight: usize,
    /// User completions reaped outside `wait` (while making room in the SQ).
    pending: Vec<Completion>,
    /// Times the kernel flagged a CQ overflow (completions kept by NODROP, then flushed).
    cq_overflows: u64,
    /// The kernel has `IORING_OP_FTRUNCATE` (6.9) / `IORING_OP_FALLOCATE` (5.6); without
    /// them a size change runs as a blocking syscall on the submission thread.
    has_ftruncate: bool,
    has_fallocate: bool,
    /// The io-wq worker cap registered with the kernel (0: none could be set).
    io_worker_cap: u32,
    /// `io_uring_enter` calls so far.
    enters: Enters,
    /// User requests were pushed since the last enter.
    pushed: bool,
    /// How long a wait with several requests in flight waits for all of them before it
    /// settles for those that have completed (`EngineConfig::batch_wait`); `None` where
    /// the kernel lacks `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12) or batching is off.
    batch_wait: Option<Duration>,
}

/// The general timeout of a batched wait whose caller gave none: past the minimum wait,
/// the wait then goes on for any one completion (without a general timeout, the kernel
/// would end it when the minimum wait passes).
const FAR: Duration = Duration::from_secs(3600);

impl UringEngine {
    /// Sets up a ring of `entries` SQ entries (and a CQ twice as large) writing to `file`.
    ///
    /// Tries `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`, then `COOP_TASKRUN`, then no
    /// flags, stepping down only on `EINVAL`; other errors (`EPERM`, `ENOMEM`, ...) are
    /// returned unchanged.
    ///
    /// **Call this on the submission thread, and use and drop the engine there only.**
    /// With `SINGLE_ISSUER` (no `R_DISABLED`) the kernel binds the ring to the task that
    /// creates it; submitting or waiting from any other thread fails with `EEXIST`.
    ///
    /// `io_workers` caps io-wq (`IORING_REGISTER_IOWQ_MAX_WORKERS`, bounded and unbounded
    /// each); a kernel without that call (before 5.15) keeps its own limits, and
    /// [`io_worker_cap`](Self::io_worker_cap) then reports 0.
    pub(crate) fn new(entries: u32, io_workers: u32) -> io::Result<Self> {
        if entries == 0 {
            return Err(os_msg(
                libc::EINVAL,
                "io_uring ring entries must be at least 1",
            ));
        }
        let (ring, setup) = build_ring(entries)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(os_msg(
                libc::ENOSYS,
                "io_uring lacks IORING_FEAT_EXT_ARG (timed waits need Linux 5.11)",
            ));
        }
        let mut engine = UringEngine {
            ring,
            setup,
            waker: Arc::new(EventFdWaker::new()?),
            wake_buf: Box::new(UnsafeCell::new(0)),
            wake_armed: false,
            woke: false,
            wake_error: None,
            in_flight: 0,
            pending: Vec::new(),
            cq_overflows: 0,
            has_ftruncate: false,
            has_fallocate: false,
            io_worker_cap: 0,
            enters: Enters::default(),
            pushed: false,
            batch_wait: None,
        };
        engine = engine.batch_wait(crate::config::DEFAULT_BATCH_WAIT);
        let mut max = [io_workers, io_workers];
        if engine
            .ring
            .submitter()
            .register_iowq_max_workers(&mut max)
            .is_ok()
        {
            engine.io_worker_cap = io_workers;
        }
        let mut probe = Probe::new();
        if engine.ring.submitter().register_probe(&mut probe).is_ok() {
            engine.has_ftruncate = probe.is_supported(opcode::Ftruncate::CODE);
            engine.has_fallocate = probe.is_supported(opcode::Fallocate::CODE);
        }
        engine.arm_wake()?;
        Ok(engine)
    }

    /// Sets how long a wait for several requests waits for all of them (see
    /// `EngineConfig::batch_wait`): ignored where the kernel lacks a minimum wait.
    pub(crate) fn batch_wait(mut self, wait: Duration) -> Self {
        let usable = self.ring.params().is_feature_min_timeout() && !wait.is_zero();
        self.batch_wait = usable.then_some(wait);
        self
    }

    /// Which setup flags the kernel accepted.
    #[cfg(test)]
    pub(crate) fn setup(&self) -> RingSetup {
        self.setup
    }

    /// How often the completion queue overflowed (completions were kept and flushed).
    #[cfg(test)]
    pub(crate) fn cq_overflows(&self) -> u64 {
        self.cq_overflows
    }

    fn sync_entry(fd: RawFd, user_data: u64, mode: SyncMode) -> squeue::Entry {
        let flags = match mode {
            SyncMode::Data => FsyncFlags::DATASYNC,
            SyncMode::All => FsyncFlags::empty(),
        };
        opcode::Fsync::new(types::Fd(fd))
            .flags(flags)
            .build()
            .user_data(user_data)
    }

    /// Free SQ slots and entries waiting in the SQ (not yet submitted).
    fn sq_state(&mut self) -> (usize, usize) {
        let sq = self.ring.submission();
        (sq.capacity() - sq.len(), sq.len())
    }

    /// Whether at least one user request is inside the kernel, so that waiting for a CQE
    /// is sure to end. Conservative: counts every unsubmitted SQE as a user request.
    fn user_requests_in_kernel(&mut self) -> bool {
        let (_, unsubmitted) = self.sq_state();
        self.in_flight > unsubmitted
    }

    /// Pushes the eventfd read (making room first if the SQ is full).
    fn arm_wake(&mut self) -> io::Result<()> {
        self.make_room(1)?;
        let entry = opcode::Read::new(
            types::Fd(self.waker.fd.as_raw_fd()),
            self.wake_buf.get().cast::<u8>(),
            8,
        )
        .build()
        .user_data(RESERVED_USER_DATA);
        // SAFETY: the read targets `wake_buf`, heap memory this engine owns and frees only
        // after the read's CQE was reaped (or leaks, see Drop); the eventfd stays open
        // because the engine holds an Arc to the waker that owns it.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| os(libc::EBUSY))?;
        self.wake_armed = true;
        Ok(())
    }

    /// Submits the SQ and, with `want > 0`, waits for that many CQEs or `timeout`.
    /// With `want == 0` it still asks for events, which runs deferred task work and
    /// flushes overflowed CQEs, without blocking.
    fn enter(&mut self, want: u32, timeout: Option<Duration>) -> io::Result<usize> {
        let (_, unsubmitted) = self.sq_state();
        self.enters.all += 1;
        // Counts the enters that submit user requests (not only the wake-up read).
        self.enters.submitting += u64::from(std::mem::take(&mut self.pushed));
        let submitter = self.ring.submitter();
        match (want, timeout) {
            (0, _) => {
                let flags = io_uring::EnterFlags::GETEVENTS.bits();
                // SAFETY: plain io_uring_enter with no argument struct (a null pointer, as
                // the crate's own `submit_and_wait` passes).
                unsafe { submitter.enter::<libc::sigset_t>(unsubmitted as u32, 0, flags, None) }
            }
            (n, t) if n > 1 && self.batch_wait.is_some() => {
                let batch = self.batch_wait.unwrap_or_default();
                let ts = Timespec::from(t.unwrap_or(FAR));
                let args = SubmitArgs::new()
                    .timespec(&ts)
                    .min_wait_usec(batch.as_micros().min(u32::MAX as u128) as u32);
                submitter.submit_with_args(n as usize, &args)
            }
            (n, None) => submitter.submit_and_wait(n as usize),
            (n, Some(t)) => {
                let ts = Timespec::from(t);
                submitter.submit_with_args(n as usize, &SubmitArgs::new().timespec(&ts))
            }
        }
    }

    /// Waits for one CQE without submitting (for when submission itself is refused).
    fn wait_without_submit(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.enters.all += 1;
        let ts = Timespec::from(timeout.unwrap_or_default());
        let args = SubmitArgs::new().timespec(&ts);
        let mut flags = io_uring::EnterFlags::GETEVENTS;
        if timeout.is_some() {
            flags |= io_uring::EnterFlags::EXT_ARG;
        }
        // SAFETY: with EXT_ARG the argument is an io_uring_getevents_arg (SubmitArgs is a
        // transparent wrapper of it, as the crate's own submit_with_args passes); without
        // it no argument is passed.
        unsafe {
            if timeout.is_some() {
                self.ring.submitter().enter(0, 1, flags.bits(), Some(&args))
            } else {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 1, flags.bits(), None)
            }
        }
    }

    /// Moves every available CQE into `out` (user completions) or the wake-up state (the
    /// eventfd read), flushing overflowed CQEs until the kernel has none left.
    fn reap(&mut self, out: &mut Vec<Completion>) {
        loop {
            for cqe in self.ring.completion() {
                if cqe.user_data() == RESERVED_USER_DATA {
                    self.wake_armed = false;
                    self.woke = true;
                    let res = cqe.result();
                    if res < 0 && ![libc::EAGAIN, libc::EINTR, libc::ECANCELED].contains(&-res) {
                        self.wake_error = Some(-res);
                    }
                    // The read drained the eventfd before its CQE was posted, so clearing
                    // the flag now cannot strand a later wake (it will write again).
                    self.waker.pending.swap(false, Ordering::AcqRel);
                } else {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    out.push(Completion {
                        user_data: cqe.user_data(),
                        result: cqe.result(),
                    });
                }
            }
            if !self.ring.submission().cq_overflow() {
                return;
            }
            // NODROP kept completions that did not fit; an enter with GETEVENTS moves them
            // into the CQ, which now has room.
            self.cq_overflows += 1;
            match self.enter(0, None) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // EBUSY/EAGAIN: still reaped; anything else: leave the rest for the next
                // call rather than loop here.
                Err(_) => return,
            }
        }
    }

    /// Ensures `n` free SQ slots, submitting what is queued and reaping completions into
    /// `pending` when the SQ is full.
    fn make_room(&mut self, n: usize) -> io::Result<()> {
        let capacity = self.ring.submission().capacity();
        if n > capacity {
            // Submitting frees no slot beyond the capacity: waiting would spin forever.
            return Err(os_msg(
                libc::EINVAL,
                format!("io_uring: {n} entries needed at once, the ring has {capacity}"),
            ));
        }
        let mut stalls = 0u32;
        loop {
            let (free, _) = self.sq_state();
            if free >= n {
                return Ok(());
            }
            let res = self.enter(0, None);
            let mut pending = std::mem::take(&mut self.pending);
            let before = pending.len();
            self.reap(&mut pending);
            let reaped = pending.len() > before;
            self.pending = pending;
            let refused = match res {
                Ok(_) => None,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => None,
                    Some(code @ (libc::EBUSY | libc::EAGAIN)) => Some(code),
                    _ => return Err(e),
                },
            };
            let (free_now, _) = self.sq_state();
            let Some(refused) = refused else { continue };
            if free_now > free || reaped {
                continue;
            }
            // Submission refused and nothing reaped: wait for a CQE if one is sure to come
            // (never otherwise: liburing#281), else back off briefly, then give up.
            if self.user_requests_in_kernel() {
                match self.wait_without_submit(None) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {}
                    Err(e) => return Err(e),
                }
            } else {
                stalls += 1;
                if stalls > 100 {
                    return Err(os_msg(refused, "io_uring kept refusing submissions"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Builds the ring with the strongest setup flags the kernel accepts.
fn build_ring(entries: u32) -> io::Result<(IoUring, RingSetup)> {
    let cq = entries.saturating_mul(2);
    let mut last = os(libc::EINVAL);
    let attempts = [
        RingSetup::SingleIssuerDeferTaskrun,
        RingSetup::CoopTaskrun,
        RingSetup::Plain,
    ];
    for setup in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq);
        match setup {
            RingSetup::SingleIssuerDeferTaskrun => {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_coop_taskrun();
            }
            RingSetup::CoopTaskrun => {
                builder.setup_coop_taskrun();
            }
            RingSetup::Plain => {}
        }
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, setup)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("setup", &self.setup)
            .field("sq_entries", &self.ring.params().sq_entries())
            .field("cq_entries", &self.ring.params().cq_entries())
            .field("in_flight", &self.in_flight)
            .field("wake_armed", &self.wake_armed)
            .field("cq_overflows", &self.cq_overflows)
            .finish()
    }
}

impl IoEngine for UringEngine {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    fn io_worker_cap(&self) -> u32 {
        self.io_worker_cap
    }

    fn enters(&self) -> Enters {
        self.enters
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
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
        if user_data == RESERVED_USER_DATA || linked_sync == Some(RESERVED_USER_DATA) {
            return Err(os_msg(libc::EINVAL, "user_data u64::MAX is reserved"));
        }
        let needed = 1 + linked_sync.is_some() as usize;
        // Both SQEs of a chain must go in the same submission: a link does not span them.
        self.make_room(needed)?;
        let write = opcode::Writev::new(types::Fd(target.fd), iov, iovcnt)
            .offset(offset)
            .build()
            .user_data(user_data);
        let pushed = match linked_sync {
            None => {
                // SAFETY: the caller guarantees the iovecs and their buffers stay valid
                // until this write's completion is returned; the core keeps the fd open until this completes
                // and Drop waits for every in-flight request.
                unsafe { self.ring.submission().push(&write) }
            }
            Some(sync_ud) => {
                let chain = [
                    write.flags(Flags::IO_LINK),
                    Self::sync_entry(target.fd, sync_ud, target.sync),
                ];
                // SAFETY: as above; the fsync references no memory.
                unsafe { self.ring.submission().push_multiple(&chain) }
            }
        };
        pushed.map_err(|_| os(libc::EBUSY))?;
        self.in_flight += needed;
        self.pushed = true;
        Ok(())
    }

    fn push_sync(&mut self, user_data: u64, fd: RawFd, mode: SyncMode) -> io::Result<()> {
        if user_data == RESERVED_USER_DATA {
            return Err(os_msg(libc::EINVAL, "user_data u64::MAX is reserved"));
        }
        self.make_room(1)?;
        let entry = Self::sync_entry(fd, user_data, mode);
        // SAFETY: an fsync references no memory; the core keeps the fd open until this completes.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| os(libc::EBUSY))?;
        self.in_flight += 1;
        self.pushed = true;
        Ok(())
    }

    fn push_size(&mut self, user_data: u64, fd: RawFd, change: SizeChange) -> io::Result<()> {
        if user_data == RESERVED_USER_DATA {
            return Err(os_msg(libc::EINVAL, "user_data u64::MAX is reserved"));
        }
        let entry = match change {
            SizeChange::Truncate(len) if self.has_ftruncate => {
                opcode::Ftruncate::new(types::Fd(fd), len).build()
            }
            SizeChange::ZeroFill { offset, len } => {
                let len = (len as usize).min(ZEROS_LEN) as u32;
                opcode::Write::new(types::Fd(fd), ZEROS.0.as_ptr(), len)
                    .offset(offset)
                    .build()
            }
            SizeChange::Punch { offset, len } if self.has_fallocate => {
                opcode::Fallocate::new(types::Fd(fd), len)
                    .offset(offset)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build()
            }
            _ => {
                // An older kernel: run it here; `wait` returns the completion.
                let result = change.run_blocking(fd);
                self.pending.push(Completion { user_data, result });
                return Ok(());
            }
        };
        self.make_room(1)?;
        // SAFETY: ftruncate and fallocate reference no memory, a zero fill only the static
        // (never written) ZEROS; the core keeps the fd open until this completes.
        unsafe { self.ring.submission().push(&entry.user_data(user_data)) }
            .map_err(|_| os(libc::EBUSY))?;
        self.in_flight += 1;
        self.pushed = true;
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        if let Some(errno) = self.wake_error.take() {
            return Err(os_msg(
                errno,
                "io_uring: reading the wake-up eventfd failed",
            ));
        }
        // Never block without the wake-up read armed.
        if !self.wake_armed {
            self.arm_wake()?;
        }
        let start = out.len();
        out.append(&mut self.pending);
        let ready = out.len() > start || self.woke || !self.ring.completion().is_empty();
        // Not ready: wait for one completion or wake-up; with a batch wait, for every
        // request in flight, or for those that have completed when the batch wait ends.
        // A wake-up signalled and not yet read is sure to complete the armed read: it
        // counts too, or the batch would end one completion short. Never more than the
        // completion queue holds (the rest would wait in the overflow list).
        let want = match (ready, self.in_flight, self.batch_wait) {
            (true, _, _) => 0,
            (false, 0, _) | (false, _, None) => 1,
            (false, n, Some(_)) => {
                let wake = usize::from(self.waker.pending.load(Ordering::Acquire));
                (n + wake).min(self.ring.params().cq_entries() as usize)
            }
        };
        let res = self.enter(want as u32, timeout);
        let refused = match res {
            Ok(_) => false,
            Err(ref e) => match e.raw_os_error() {
                // Timed out or interrupted: return what there is; the caller loops.
                Some(libc::ETIME) | Some(libc::EINTR) => false,
                Some(libc::EBUSY) | Some(libc::EAGAIN) => true,
                _ => return res.map(|_| ()),
            },
        };
        let before = out.len();
        self.reap(out);
        if refused && out.len() == before && !self.woke && !ready {
            // Submission refused with nothing to reap. Wait only for a CQE that is sure
            // to come (liburing#281); otherwise back off a little and let the caller retry.
            if self.user_requests_in_kernel() {
                match self.wait_without_submit(timeout) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                        ) => {}
                    Err(e) => return Err(e),
                }
                self.reap(out);
            } else {
                let pause = Duration::from_millis(1);
                std::thread::sleep(timeout.map_or(pause, |t| t.min(pause)));
            }
        }
        self.woke = false;
        Ok(())
    }
}

impl Drop for UringEngine {
    /// Waits for every request still in flight (the core normally drains first; this is
    /// the safety net that keeps the kernel from touching freed memory), then completes
    /// the armed eventfd read by signalling it, before the ring and buffer are freed.
    fn drop(&mut self) {
        if self.wake_armed {
            self.waker.signal();
        }
        let mut scratch = Vec::new();
        let mut failures = 0;
        while self.in_flight > 0 || self.wake_armed {
            match self.enter(1, None) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR)) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    failures += 1;
                    if failures > 3 {
                        log::error!(
                            "writebehind: io_uring teardown could not wait for {} request(s): {e}",
                            self.in_flight
                        );
                        break;
                    }
                }
            }
            scratch.clear();
            self.reap(&mut scratch);
        }
        if self.wake_armed {
            // Its CQE never came: the kernel may still write the 8 bytes, so never free them.
            let buf = std::mem::replace(&mut self.wake_buf, Box::new(UnsafeCell::new(0)));
            Box::leak(buf);
        }
    }
}

/// Why io_uring cannot be used (see [`probe`]).
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// io_uring is missing or forbidden here (`EPERM`, `ENOSYS`, an opcode or feature the
    /// engine needs is absent): fall back to another engine.
    Unavailable(String),
    /// io_uring exists but setting it up failed (`ENOMEM`, `EMFILE`, ...): a real error.
    Failed(io::Error),
}

/// Checks that this process can set up a ring and that the kernel supports what the
/// engine needs: `Writev`, `Fsync` and `Read`, and timed waits (`EXT_ARG`).
///
/// `EPERM` (a seccomp filter, `kernel.io_uring_disabled`) and `ENOSYS` mean
/// [`ProbeError::Unavailable`], as do missing opcodes and an `IORING_REGISTER_PROBE` the
/// kernel rejects with `EINVAL` (older than 5.6); any other error is `Failed`.
pub(crate) fn probe() -> Result<(), ProbeError> {
    let ring = IoUring::new(4).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => ProbeError::Unavailable(
            "io_uring_setup: permission denied (seccomp filter or kernel.io_uring_disabled)".into(),
        ),
        Some(libc::ENOSYS) => {
            ProbeError::Unavailable("io_uring_setup: not implemented by this kernel".into())
        }
        _ => ProbeError::Failed(e),
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err(ProbeError::Unavailable(
            "kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11+)".into(),
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL | libc::EPERM | libc::ENOSYS) => {
                ProbeError::Unavailable(format!("IORING_REGISTER_PROBE failed: {e}"))
            }
            _ => ProbeError::Failed(e),
        })?;
    let needed = [
        ("WRITEV", opcode::Writev::CODE),
        ("FSYNC", opcode::Fsync::CODE),
        ("READ", opcode::Read::CODE),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Unavailable(format!(
            "kernel lacks io_uring opcode(s) {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::open::conformance as check;
    use super::*;
    use crate::wb::ring_check::ring_available;
    use std::collections::HashMap;
    use std::fs::File;

    fn make(entries: u32) -> impl Fn(Arc<File>) -> check::OnFile {
        move |file| check::OnFile::new(Box::new(UringEngine::new(entries, 4).unwrap()), file)
    }

    #[test]
    fn writes_and_syncs_land() {
        if !ring_available("writes_and_syncs_land") {
            return;
        }
        check::writes_and_syncs_land(&make(8));
    }

    #[test]
    fn size_changes_land() {
        check::size_changes_land(&make(8));
    }

    #[test]
    fn size_changes_without_the_opcodes_run_as_syscalls() {
        check::size_changes_land(&|file| {
            let mut e = UringEngine::new(8, 4).unwrap();
            assert!(
                e.has_ftruncate && e.has_fallocate,
                "this kernel (6.9+) has both"
            );
            e.has_ftruncate = false;
            e.has_fallocate = false;
            check::OnFile::new(Box::new(e), file)
        });
    }

    #[test]
    fn waker_interrupts_wait() {
        if !ring_available("waker_interrupts_wait") {
            return;
        }
        check::waker_interrupts_wait(&make(8));
    }

    #[test]
    fn timeout_returns_empty() {
        if !ring_available("timeout_returns_empty") {
            return;
        }
        check::timeout_returns_empty(&make(8));
    }

    #[test]
    fn misaligned_direct_write_cancels_sync() {
        if !ring_available("misaligned_direct_write_cancels_sync") {
            return;
        }
        check::misaligned_direct_write_cancels_sync(&make(8));
    }

    #[test]
    fn burst_completes_exactly_once() {
        if !ring_available("burst_completes_exactly_once") {
            return;
        }
        // 64 SQ entries: the SQ fills 17 times over while pushing.
        check::burst_completes_exactly_once(&make(64));
    }

    #[test]
    fn drop_finishes_in_flight() {
        if !ring_available("drop_finishes_in_flight") {
            return;
        }
        check::drop_finishes_in_flight(&make(4));
    }

    #[test]
    fn reserved_user_data_is_refused() {
        if !ring_available("reserved_user_data_is_refused") {
            return;
        }
        check::reserved_user_data_is_refused(&make(8));
    }

    #[test]
    fn strongest_setup_and_probe_on_this_kernel() {
        if !ring_available("strongest_setup_and_probe_on_this_kernel") {
            return;
        }
        // SINGLE_ISSUER|DEFER_TASKRUN is accepted on the kernels CI runs (6.1 and later;
        // README.md lists what each ring feature needs).
        let engine = UringEngine::new(16, 3).unwrap();
        // Linux 5.15 and later take an io-wq cap.
        assert_eq!(engine.io_worker_cap(), 3);
        assert_eq!(engine.setup(), RingSetup::SingleIssuerDeferTaskrun);
        let debug = format!("{engine:?}");
        assert!(debug.contains("SingleIssuerDeferTaskrun") && debug.contains("in_flight: 0"));
        assert!(engine.ring.params().cq_entries() >= 32);
        assert!(probe().is_ok(), "{:?}", probe());
        assert_eq!(
            UringEngine::new(0, 4).err().unwrap().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn another_thread_is_refused_with_eexist() {
        if !ring_available("another_thread_is_refused_with_eexist") {
            return;
        }
        // Why the engine must be created, used and dropped on the submission thread.
        let dir = tempfile::tempdir().unwrap();
        let file = check::file_in(dir.path(), false);
        let mut engine = UringEngine::new(8, 4).unwrap();
        let mut out = Vec::new();
        engine
            .wait(Some(Duration::from_millis(1)), &mut out)
            .unwrap();
        let engine = std::thread::spawn(move || {
            let r = engine
                .push_sync(1, file.as_raw_fd(), SyncMode::Data)
                .and_then(|()| {
                    let mut out = Vec::new();
                    engine.wait(Some(Duration::from_millis(1)), &mut out)
                });
            assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EEXIST));
            engine
        })
        .join()
        .unwrap();
        drop(engine); // back on the creating thread: drains the sync and the wake-up read
    }

    #[test]
    fn overflowed_completions_are_kept_and_delivered_once() {
        if !ring_available("overflowed_completions_are_kept_and_delivered_once") {
            return;
        }
        let mut engine = UringEngine::new(8, 4).unwrap();
        let cq = engine.ring.params().cq_entries() as u64;
        // Submit 4x the CQ size of NOPs without reaping, bypassing make_room's reaping.
        let total = cq * 4;
        let mut expected = HashMap::new();
        for ud in 0..total {
            if engine.ring.submission().is_full() {
                engine.ring.submit().unwrap();
            }
            let nop = opcode::Nop::new().build().user_data(ud);
            // SAFETY: a NOP references no memory.
            unsafe { engine.ring.submission().push(&nop).unwrap() };
            engine.in_flight += 1;
            expected.insert(ud, 0);
        }
        engine.ring.submit().unwrap();
        check::collect(&mut engine, &expected);
        assert!(engine.cq_overflows() > 0, "the CQ never overflowed");
        assert_eq!(engine.in_flight, 0);
    }
}
