//! The few OS calls the benchmark makes itself: CPU time and the Ctrl-C flag. The one
//! `unsafe` block of the binary (installing the signal handler) is here.

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
        use nix::sys::resource::{getrusage, UsageWho};
        use nix::sys::time::TimeValLike;
        let Ok(ru) = getrusage(UsageWho::RUSAGE_SELF) else {
            return CpuTime::default();
        };
        let tv =
            |t: nix::sys::time::TimeVal| Duration::from_micros(t.num_microseconds().max(0) as u64);
        CpuTime {
            user: tv(ru.user_time()),
            sys: tv(ru.system_time()),
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
