//! A commit led by a forcer on its own thread: the syscalls of a [`Lead`] planned by
//! `State::next_step`, run outside the state lock. The writes go first; the sync runs
//! only if every write completed in full, as the engines' `IO_LINK` chain does. Results
//! pass through the fault injector like the engines' completions.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::engine::backend::threads::{pwritev_raw, sync_fd};
use super::state::Lead;
#[cfg(feature = "fault-injection")]
use crate::fault::FaultInjector;

/// Runs `lead` on the calling thread: each write's result goes to `lead.results`, in
/// order. Returns the sync's result (`None`: not run, a write fell short or failed).
pub(crate) fn run(
    file: &File,
    lead: &mut Lead,
    #[cfg(feature = "fault-injection")] faults: Option<&FaultInjector>,
) -> Option<i32> {
    let fd = file.as_raw_fd();
    let mut complete = true;
    for w in &lead.writes {
        // SAFETY: the iovecs point into buffers the write's op holds in the state, which
        // are immutable once shared and stay there until `State::finish_lead` applies
        // this result; `file` keeps the descriptor open.
        let real = unsafe { pwritev_raw(fd, w.iov, w.iovcnt as u32, w.offset) };
        #[cfg(feature = "fault-injection")]
        let res = faults.map_or(real, |f| f.caller_write(real));
        #[cfg(not(feature = "fault-injection"))]
        let res = real;
        let full = res >= 0 && res as u64 == w.len;
        #[cfg(feature = "fault-injection")]
        if let (false, true, Some(f)) = (full, real >= 0 && real as u64 == w.len, faults) {
            if complete {
                f.caller_sync_cancelled();
            }
        }
        complete &= full;
        lead.results.push(res);
    }
    complete.then(|| {
        #[cfg(feature = "fault-injection")]
        let res = match faults {
            Some(f) => f.caller_sync(|| sync_fd(fd, lead.mode)),
            None => sync_fd(fd, lead.mode),
        };
        #[cfg(not(feature = "fault-injection"))]
        let res = sync_fd(fd, lead.mode);
        res
    })
}
