//! `force_async`: a `Future` over the same force waiters as the blocking `force`.
//!
//! The waiter keeps the task's `Waker` where a blocking forcer keeps its thread, so both
//! kinds join the same group commits and are woken by the same completions. A future
//! never runs a commit itself (that would block its executor's thread for a write and a
//! sync): where a blocking forcer would lead, it hands the work to the submission
//! thread. No executor is needed or assumed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::state::Next;
use super::Inner;
use crate::stats::record;

/// The future of [`WriteBehindFile::force_async`](super::WriteBehindFile::force_async)
/// and [`force_range_async`](super::WriteBehindFile::force_range_async): resolves when
/// the writes it covers are durable, with the same result `force` would have returned.
///
/// Dropping it before it resolves withdraws its waiter; other forcers are unaffected.
#[must_use = "a future does nothing unless polled"]
pub struct ForceFuture<'a> {
    inner: &'a Inner,
    range: Option<(u64, u64)>,
    state: Stage,
}

enum Stage {
    /// Not polled yet: the waiter is registered on the first poll, so that the future
    /// covers the writes that returned before that poll (at the latest).
    Start,
    Waiting {
        key: usize,
        began: Instant,
    },
    /// Resolved at once (bad arguments) or already returned.
    Done(Option<io::Result<()>>),
}

impl<'a> ForceFuture<'a> {
    pub(super) fn new(inner: &'a Inner, range: Option<(u64, u64)>) -> Self {
        ForceFuture {
            inner,
            range,
            state: Stage::Start,
        }
    }

    pub(super) fn ready(inner: &'a Inner, result: io::Result<()>) -> Self {
        ForceFuture {
            inner,
            range: None,
            state: Stage::Done(Some(result)),
        }
    }
}

impl Future for ForceFuture<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let inner = this.inner;
        let (key, began) = match &mut this.state {
            Stage::Done(result) => {
                return Poll::Ready(result.take().unwrap_or_else(|| {
                    Err(crate::error::os_msg(
                        libc::EINVAL,
                        "ForceFuture polled after it resolved",
                    ))
                }))
            }
            Stage::Waiting { key, began } => (*key, *began),
            Stage::Start => {
                let mut st = inner.lock();
                if let Err(e) = st.check_failed() {
                    this.state = Stage::Done(None);
                    return Poll::Ready(Err(e));
                }
                let Some(key) = st.add_waiter(this.range, inner.sync, cx.waker().clone()) else {
                    this.state = Stage::Done(None);
                    return Poll::Ready(Ok(()));
                };
                let began = Instant::now();
                this.state = Stage::Waiting { key, began };
                (key, began)
            }
        };
        let mut st = inner.lock();
        if let Some(result) = st.take_result(key) {
            record(&mut st.stats.force_ns, began.elapsed().as_nanos() as u64);
            this.state = Stage::Done(None);
            return Poll::Ready(result);
        }
        st.set_waker(key, cx.waker());
        let wake = match st.next_step(&inner.limits, Instant::now(), key, false) {
            Next::Lead(_) | Next::Wait(_) => unreachable!("a future never leads"),
            Next::Park => false,
            Next::WakeSubmitter => st.wants_wake(true),
        };
        drop(st);
        if wake {
            inner.waker.wake();
        }
        Poll::Pending
    }
}

impl Drop for ForceFuture<'_> {
    fn drop(&mut self) {
        if let Stage::Waiting { key, .. } = self.state {
            self.inner.lock().withdraw(key);
        }
    }
}

impl std::fmt::Debug for ForceFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.state {
            Stage::Start => "start",
            Stage::Waiting { .. } => "waiting",
            Stage::Done(_) => "done",
        };
        f.debug_struct("ForceFuture")
            .field("range", &self.range)
            .field("stage", &stage)
            .finish()
    }
}
