//! The few OS calls the benchmark makes itself: CPU time, the direct-I/O alignment, and
//! the Ctrl-C flag. Every `unsafe` block of the binary is here.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// User and system CPU time of the whole process (every thread, including the handle's
/// submission thread and io_uring workers), from `getrusage(RUSAGE_SELF)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTime {
    /// The process's CPU time so far (zero if `getrusage` fails, which it cannot with
    /// these arguments).
    pub fn now() -> CpuTime {
        // SAFETY: `rusage` is plain old data, so all-zero is a valid value; getrusage
        // only writes into the struct we own and pass by exclusive reference.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
                return CpuTime::default();
            }
            ru
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        CpuTime {
            user: tv(ru.ru_utime),
            sys: tv(ru.ru_stime),
        }
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

/// `statx(STATX_DIOALIGN)` of an open file: the larger of the memory and offset
/// alignments O_DIRECT needs, when the kernel and file system report them.
pub fn statx_dio_align(file: &File) -> Option<u64> {
    // SAFETY: `statx` is plain old data (all-zero is valid); the call only writes into
    // `stx`, which we own; the empty path with AT_EMPTY_PATH makes it describe the fd.
    let (rc, stx) = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        );
        (rc, stx)
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let align = u64::from(stx.stx_dio_mem_align.max(stx.stx_dio_offset_align));
    (align > 0).then_some(align)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes the first Ctrl-C (SIGINT) or SIGTERM set [`interrupted`] instead of killing the
/// process, so the running workload stops and the temporary file is removed. The
/// handler resets itself: a second signal kills as usual.
pub fn catch_interrupts() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESETHAND | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe,
        // and SA_RESTART keeps blocking calls of other threads from failing with EINTR.
        // Failure to install it only loses the clean-up on Ctrl-C.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Whether Ctrl-C or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
