//! The submission thread: the only user of the engine (and so of the ring).
//!
//! Each pass, under the state lock: apply the completions collected last time, ask the
//! planner what to send, and push it to the engine (pushing only fills SQEs or a queue).
//! Then, outside the lock, submit and wait for completions, a wake-up or the dirty-age
//! timer.

use std::sync::Arc;
use std::time::Instant;

use super::engine::{Completion, Engine};
use super::state::{Op, Push, State};
use super::Inner;

/// After this many consecutive engine failures the thread gives up (see `run`).
const MAX_ENGINE_ERRORS: u32 = 3;

pub(crate) fn run(inner: Arc<Inner>, mut engine: Box<dyn Engine>) {
    let mut completions: Vec<Completion> = Vec::new();
    let mut pushes: Vec<Push> = Vec::new();
    let mut engine_errors = 0;
    let mut pool_failed = false;
    let mut seen_seq = 0;
    loop {
        let timeout = {
            let mut st = inner.lock();
            let now = Instant::now();
            st.sleeping = false;
            for c in completions.drain(..) {
                st.complete(c.user_data as usize, c.result, &inner.limits, now);
            }
            st.plan(&inner.limits, now, inner.pool.waiting() > 0, &mut pushes);
            for p in pushes.drain(..) {
                push(&mut *engine, &mut st, p, &inner, now);
            }
            if let (Some(code), false) = (st.failed, pool_failed) {
                // Writers waiting for space would wait for a flush that will not come.
                inner.pool.fail(code);
                pool_failed = true;
            }
            if st.finished() {
                break;
            }
            st.sleeping = st.idle();
            let mut timeout = st.timeout(&inner.limits, now);
            // While writes keep coming, come back at least every dirty age: then a write
            // that finds no dirty data need not wake us to start the age clock (a
            // syscall and a thread switch per commit). Once a whole period passes with
            // no new write, sleep without a timer.
            let age = inner.limits.max_dirty_age;
            if std::mem::replace(&mut seen_seq, st.last_seq) != st.last_seq {
                timeout = Some(timeout.map_or(age, |t| t.min(age)));
            }
            st.timed_sleep = timeout.is_some_and(|t| t <= age);
            timeout
        };
        match engine.wait(timeout, &mut completions) {
            Ok(()) => engine_errors = 0,
            Err(e) => {
                let mut st = inner.lock();
                st.fail(e.raw_os_error().unwrap_or(libc::EIO));
                engine_errors += 1;
                if engine_errors >= MAX_ENGINE_ERRORS {
                    // The engine cannot report completions any more, so the kernel may
                    // still be reading buffers of in-flight writes: never free them.
                    log::error!("writebehind: I/O engine failed ({e}); stopping write-back");
                    st.leak_in_flight();
                    break;
                }
            }
        }
    }
    inner.pool.fail(libc::EBADF);
}

/// Hands one planned request to the engine. A request the engine refuses completes at
/// once with its error, so the state machine never waits for it.
fn push(engine: &mut dyn Engine, st: &mut State, p: Push, inner: &Inner, now: Instant) {
    let result = match p {
        Push::Write { op, linked_sync } => {
            let Op::Write(w) = st.op(op) else {
                unreachable!("write push names a write op")
            };
            let iov = w.iovecs();
            // SAFETY: the iovecs point into buffers the op holds (`Arc<PoolBuf>`), at bytes
            // below each buffer's filled length, which are never written while shared (an
            // extent grows only past it, and never while in flight: `pool.rs`); the op,
            // its iovec array and the buffers stay in the state until this request's
            // completion has been applied.
            unsafe {
                engine.push_write(
                    op as u64,
                    w.next_offset(),
                    iov.as_ptr(),
                    iov.len() as u32,
                    linked_sync.map(|s| s as u64),
                )
            }
            .map_err(|e| (op, linked_sync, e))
        }
        Push::Sync { op } => engine
            .push_sync(op as u64, st.sync_mode(op))
            .map_err(|e| (op, None, e)),
        Push::Size { op } => {
            let Op::Size(s) = st.op(op) else {
                unreachable!("size push names a size op")
            };
            engine
                .push_size(op as u64, s.change)
                .map_err(|e| (op, None, e))
        }
    };
    if let Err((op, linked, e)) = result {
        // A refused submission was never sent: a write is resubmitted (as after EAGAIN),
        // after a pause (see `State::timeout`).
        let code = match e.raw_os_error() {
            Some(libc::EBUSY | libc::EAGAIN) => -libc::EAGAIN,
            code => -code.unwrap_or(libc::EIO),
        };
        st.complete(op, code, &inner.limits, now);
        if let Some(sync) = linked {
            st.complete(sync, -libc::ECANCELED, &inner.limits, now);
        }
    }
}
