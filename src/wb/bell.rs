//! Where blocking forcers sleep: one futex word for the whole handle, each forcer waiting
//! on one bit of a 32-bit mask (its waiter key modulo 32). A completed sync wakes every
//! forcer it served with one `FUTEX_WAKE_BITSET` syscall, instead of one `unpark` (one
//! `futex` syscall) each: the thread that completes the sync is then not preempted by
//! each forcer it wakes in turn, one wake-up preemption per follower.
//!
//! Protocol: a forcer takes a [`ticket`](Bell::ticket) while it holds the state lock
//! and decides to sleep, then [`wait`](Bell::wait)s with it after unlocking. Whoever
//! changes the state so that it must wake rings its bit after unlocking;
//! [`ring`](Bell::ring) moves the word on first, so a forcer that had not yet started
//! its wait does not start it. Two forcers whose keys agree modulo 32 share a bit: one
//! may wake for the other and look at the state for nothing (as a spurious `park`
//! return), never miss its own wake.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

#[derive(Default)]
pub(crate) struct Bell {
    word: AtomicU32,
}

/// The bit waiter `key` sleeps on.
pub(crate) fn bit(key: usize) -> u32 {
    1 << (key % 32)
}

impl Bell {
    /// The word's value now: read under the state lock, before deciding to wait.
    pub(crate) fn ticket(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    /// Sleeps on `bit` unless a ring came after `ticket`, until rung (or `until`, or a
    /// spurious wake-up): the caller looks at the state again either way.
    pub(crate) fn wait(&self, ticket: u32, bit: u32, until: Option<Instant>) {
        let deadline = until.map(|t| {
            let left = t.saturating_duration_since(Instant::now());
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `now` is a valid timespec to write to.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let nsec = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
            libc::timespec {
                tv_sec: now.tv_sec
                    + left.as_secs() as libc::time_t
                    + (nsec / 1_000_000_000) as libc::time_t,
                tv_nsec: (nsec % 1_000_000_000) as _,
            }
        });
        let ts = deadline
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` lives as long as `self`; `ts` is null or points to `deadline`,
        // alive until the call returns. FUTEX_WAIT_BITSET takes an absolute
        // CLOCK_MONOTONIC deadline. Any result (woken, EAGAIN, ETIMEDOUT, EINTR) sends
        // the caller back to the state.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                ticket,
                ts,
                std::ptr::null::<u32>(),
                bit,
            );
        }
    }

    /// Wakes every forcer sleeping on a bit of `bits` (called after the state lock is
    /// released).
    pub(crate) fn ring(&self, bits: u32) {
        if bits == 0 {
            return;
        }
        self.word.fetch_add(1, Ordering::Release);
        // SAFETY: `word` lives as long as `self`; FUTEX_WAKE_BITSET reads no pointer but
        // the word's address.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAKE_BITSET | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                bits,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn a_ring_between_ticket_and_wait_is_not_lost() {
        let bell = Bell::default();
        let ticket = bell.ticket();
        bell.ring(bit(3));
        // Would sleep forever if the ring were lost.
        bell.wait(ticket, bit(3), None);
    }

    #[test]
    fn a_ring_wakes_its_bits_only_and_a_deadline_ends_the_wait() {
        let bell = Arc::new(Bell::default());
        let ticket = bell.ticket();
        let sleeper = {
            let bell = bell.clone();
            thread::spawn(move || bell.wait(ticket, bit(1), None))
        };
        thread::sleep(Duration::from_millis(50));
        // Another bit: the word moves on, but the sleeper stays asleep.
        bell.ring(bit(2));
        thread::sleep(Duration::from_millis(50));
        assert!(!sleeper.is_finished(), "woken by another forcer's bit");
        bell.ring(bit(33)); // key 33 shares key 1's bit
        sleeper.join().unwrap();

        let began = Instant::now();
        bell.wait(
            bell.ticket(),
            bit(1),
            Some(began + Duration::from_millis(20)),
        );
        assert!(began.elapsed() >= Duration::from_millis(20));
    }
}
