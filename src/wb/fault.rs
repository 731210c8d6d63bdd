//! Fault injection at the completion layer (feature `fault-injection`, for tests).
//!
//! A [`FaultInjector`] holds a plan shared between a test and the handle it configures;
//! the engine wrapper `FaultyEngine` rewrites the completions of the real engine by that
//! plan. Under the feature every engine is wrapped, and the wrapper keeps one plan per
//! file (by the file's slot, the high 32 bits of a request's `user_data`): a faulty file
//! can share an engine with healthy ones, whose requests pass through untouched. The real I/O always happens first and only its reported result changes, so a
//! faulted write is idempotent to retry (it rewrites bytes that are already there), and
//! a faulted sync really did sync (tests of error paths must not rely on the opposite).
//!
//! Realism: a write whose result becomes anything but its full length also turns its
//! linked sync (if any) into `-ECANCELED`, as the kernel cancels the rest of an `IO_LINK`
//! chain; a short write reports `min(bytes, real)` bytes; an errno replaces the result.
//!
//! Typical use: `let faults = FaultInjector::new();` put in the handle's `Config`, then
//! `faults.inject_write(0, Fault::Short { bytes: 512 })` (the next write reports 512 bytes),
//! `faults.inject_sync(0, libc::EIO)`, and check `faults.injected()` afterwards.
//!
//! [`Mutation`]s are deliberate bugs, not faults: a test switches one on to show that
//! it catches the bug (tests/power_loss.rs must fail with each). They are the exception
//! to "the real I/O always happens": [`Mutation::SkipSyncs`] performs no sync at all.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::engine::backend::{Completion, IoEngine, SizeChange, Target, Waker};
use crate::config::SyncMode;
use crate::stats::BackendKind;
use std::os::fd::RawFd;

/// What to do to one write completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Report at most `bytes` written (`min(bytes, real)`; a real error stays an error).
    Short {
        /// Bytes to report.
        bytes: u32,
    },
    /// Report `-errno` (a positive errno such as `libc::EIO`, `libc::ENOSPC`,
    /// `libc::EAGAIN`).
    Errno(i32),
}

/// A deliberate bug in the write-back engine, for proving that a test catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Every sync, linked behind a write, on its own or run by a leading forcer on its
    /// own thread, reports success at once without being performed (on either engine).
    SkipSyncs,
    /// A sync covers the writes *submitted* before it instead of those *completed*
    /// before it: the planner counts writes in flight as written, so a force waiter is
    /// served by a sync sent while its writes may still be on their way.
    SyncSubmitted,
}

/// How many faults were applied so far, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Write completions shortened by [`Fault::Short`] (only when that changed the result).
    pub short_writes: u64,
    /// Write completions replaced by an errno.
    pub failed_writes: u64,
    /// Sync completions replaced by an errno.
    pub failed_syncs: u64,
    /// Linked syncs turned into `-ECANCELED` because their write was faulted.
    pub cancelled_syncs: u64,
    /// Size changes (`ftruncate`, hole punches, zero fills) whose completion was
    /// replaced by an errno.
    pub failed_size_changes: u64,
    /// Write pushes the engine refused (see [`FaultInjector::refuse_write_push`]).
    pub refused_pushes: u64,
    /// Waits of the whole engine that failed (see [`FaultInjector::fail_engine_waits`]).
    pub failed_waits: u64,
}

impl Injected {
    /// All faults applied, of every kind.
    pub fn total(&self) -> u64 {
        self.short_writes
            + self.failed_writes
            + self.failed_syncs
            + self.cancelled_syncs
            + self.failed_size_changes
            + self.refused_pushes
            + self.failed_waits
    }
}

#[derive(Default)]
struct Plan {
    writes_seen: u64,
    syncs_seen: u64,
    sizes_seen: u64,
    size_faults: BTreeMap<u64, i32>,
    write_pushes_seen: u64,
    push_refusals: BTreeMap<u64, i32>,
    write_faults: BTreeMap<u64, Fault>,
    sync_faults: BTreeMap<u64, i32>,
    fail_writes_from: Option<(u64, i32)>,
    fail_syncs_from: Option<(u64, i32)>,
    /// Engine waits still to fail, and their errno.
    failing_waits: Option<(u64, i32)>,
    injected: Injected,
    skip_syncs: bool,
    sync_submitted: bool,
}

/// A test-controlled plan of faults for one or more handles, shared by clones.
///
/// Write and sync completions are numbered separately in the order the engine returns
/// them; `n` in the methods below counts from the next one (0 = the next completion).
/// Every write completion counts, resubmissions included. Sync completions count except
/// those the injector itself cancelled (a linked sync after a faulted write), so an
/// injected sync fault always lands on a sync that really ran.
///
/// Equality is identity: two injectors are equal when they share a plan.
#[derive(Clone, Default)]
pub struct FaultInjector {
    plan: Arc<Mutex<Plan>>,
}

impl FaultInjector {
    /// An injector with an empty plan (it changes nothing until told to).
    pub fn new() -> Self {
        Self::default()
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `fault` to the `n`-th write completion from now (0 = the next one).
    pub fn inject_write(&self, n: u64, fault: Fault) {
        let mut plan = self.plan();
        let at = plan.writes_seen.saturating_add(n);
        plan.write_faults.insert(at, fault);
    }

    /// Makes the `n`-th sync completion from now report `-errno`.
    pub fn inject_sync(&self, n: u64, errno: i32) {
        let mut plan = self.plan();
        let at = plan.syncs_seen.saturating_add(n);
        plan.sync_faults.insert(at, errno);
    }

    /// Makes the `n`-th size-change completion from now (`ftruncate` of `set_len`, hole
    /// punch of `truncate_start`) report `-errno`.
    pub fn inject_size_change(&self, n: u64, errno: i32) {
        let mut plan = self.plan();
        let at = plan.sizes_seen.saturating_add(n);
        plan.size_faults.insert(at, errno);
    }

    /// Size-change completions seen so far.
    pub fn size_changes_seen(&self) -> u64 {
        self.plan().sizes_seen
    }

    /// Makes the engine refuse the `n`-th write push from now (0 = the next one) with
    /// `errno`, as io_uring refuses a submission with `EBUSY`/`EAGAIN`: the write is not
    /// sent and produces no completion. Write pushes count resubmissions too.
    pub fn refuse_write_push(&self, n: u64, errno: i32) {
        let mut plan = self.plan();
        let at = plan.write_pushes_seen.saturating_add(n);
        plan.push_refusals.insert(at, errno);
    }

    /// Makes every write completion from the `n`-th from now on report `-errno`
    /// (a failing device). Individual [`inject_write`](Self::inject_write) faults win.
    pub fn fail_all_writes_from(&self, n: u64, errno: i32) {
        let mut plan = self.plan();
        plan.fail_writes_from = Some((plan.writes_seen.saturating_add(n), errno));
    }

    /// Makes every sync completion from the `n`-th from now on report `-errno`.
    pub fn fail_all_syncs_from(&self, n: u64, errno: i32) {
        let mut plan = self.plan();
        plan.fail_syncs_from = Some((plan.syncs_seen.saturating_add(n), errno));
    }

    /// Makes the next `count` waits of the *engine* this injector's file runs on fail
    /// with `errno` before submitting anything, as if `io_uring_enter` itself failed: an
    /// engine-wide failure, which fails every file on the engine, not only this one. The
    /// engine's thread gives up after a few failed waits in a row
    /// (`engine/pass.rs`). The thread may be asleep: wake it, by a write to any of its
    /// files, for the failure to happen. The plan acts only while this injector's file
    /// is on the engine: keep it open until the engine has stopped.
    pub fn fail_engine_waits(&self, count: u64, errno: i32) {
        self.plan().failing_waits = (count > 0).then_some((count, errno));
    }

    /// Switches `mutation` on (for handles opened from now on, for
    /// [`Mutation::SyncSubmitted`]). There is no way back: use a fresh injector.
    /// Skipped syncs do not count in [`syncs_seen`](Self::syncs_seen).
    pub fn mutate(&self, mutation: Mutation) {
        let mut plan = self.plan();
        match mutation {
            Mutation::SkipSyncs => plan.skip_syncs = true,
            Mutation::SyncSubmitted => plan.sync_submitted = true,
        }
    }

    /// Whether `mutation` is switched on.
    pub fn mutated(&self, mutation: Mutation) -> bool {
        let plan = self.plan();
        match mutation {
            Mutation::SkipSyncs => plan.skip_syncs,
            Mutation::SyncSubmitted => plan.sync_submitted,
        }
    }

    /// Drops every fault not applied yet; counters are kept.
    pub fn clear(&self) {
        let mut plan = self.plan();
        plan.write_faults.clear();
        plan.sync_faults.clear();
        plan.size_faults.clear();
        plan.push_refusals.clear();
        plan.fail_writes_from = None;
        plan.fail_syncs_from = None;
        plan.failing_waits = None;
    }

    /// The faults applied so far.
    pub fn injected(&self) -> Injected {
        self.plan().injected
    }

    /// Write completions seen so far (faulted or not).
    pub fn writes_seen(&self) -> u64 {
        self.plan().writes_seen
    }

    /// Sync completions seen so far (faulted or not; see the type docs).
    pub fn syncs_seen(&self) -> u64 {
        self.plan().syncs_seen
    }
}

impl PartialEq for FaultInjector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plan, &other.plan)
    }
}

impl Eq for FaultInjector {}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.plan();
        f.debug_struct("FaultInjector")
            .field("writes_seen", &plan.writes_seen)
            .field("syncs_seen", &plan.syncs_seen)
            .field("pending_write_faults", &plan.write_faults.len())
            .field("pending_sync_faults", &plan.sync_faults.len())
            .field("fail_writes_from", &plan.fail_writes_from)
            .field("fail_syncs_from", &plan.fail_syncs_from)
            .field("injected", &plan.injected)
            .finish()
    }
}

/// What the wrapper remembers about a request until its completion.
enum Tracked {
    /// `fake_sync`: the linked sync was not passed on ([`Mutation::SkipSyncs`]); the
    /// wrapper completes it after the write.
    Write {
        len: u64,
        linked_sync: Option<u64>,
        fake_sync: bool,
    },
    Sync {
        cancel: bool,
    },
    Size,
}

/// An [`IoEngine`] that rewrites the completions of another's requests, for each file
/// that has a [`FaultInjector`], by that injector's plan.
pub(crate) struct FaultyEngine {
    inner: Box<dyn IoEngine>,
    /// The injectors of the files that have one, by slot (`user_data >> 32`).
    injectors: HashMap<u64, FaultInjector>,
    /// Requests of files with an injector, by user_data, until their completion.
    tracked: HashMap<u64, Tracked>,
    /// Completions of syncs never performed ([`Mutation::SkipSyncs`]), for the next wait.
    fake: Vec<Completion>,
}

/// The slot of the file a request belongs to (see `engine/pass.rs`).
fn slot_of(user_data: u64) -> u64 {
    user_data >> 32
}

impl FaultyEngine {
    /// Wraps `inner`; no file has faults until [`IoEngine::set_faults`] says so.
    pub(crate) fn new(inner: Box<dyn IoEngine>) -> Self {
        FaultyEngine {
            inner,
            injectors: HashMap::new(),
            tracked: HashMap::new(),
            fake: Vec::new(),
        }
    }

    /// The injector of the file whose request is `user_data`, if it has one.
    fn injector(&self, user_data: u64) -> Option<FaultInjector> {
        self.injectors.get(&slot_of(user_data)).cloned()
    }

    fn rewrite(&mut self, plan: &mut Plan, c: &mut Completion) {
        match self.tracked.remove(&c.user_data) {
            Some(Tracked::Write {
                len,
                linked_sync,
                fake_sync,
            }) => {
                c.result = plan.write_result(c.result);
                let complete = c.result >= 0 && c.result as u64 == len;
                if let (true, Some(sync_ud)) = (fake_sync, linked_sync) {
                    let result = if complete { 0 } else { -libc::ECANCELED };
                    self.fake.push(Completion {
                        user_data: sync_ud,
                        result,
                    });
                } else if let (false, Some(sync_ud)) = (complete, linked_sync) {
                    if let Some(Tracked::Sync { cancel }) = self.tracked.get_mut(&sync_ud) {
                        *cancel = true;
                    }
                }
            }
            Some(Tracked::Sync { cancel: true }) => {
                let real = std::mem::replace(&mut c.result, -libc::ECANCELED);
                plan.injected.cancelled_syncs += u64::from(real != -libc::ECANCELED);
            }
            Some(Tracked::Sync { cancel: false }) => c.result = plan.sync_result(c.result),
            Some(Tracked::Size) => {
                let index = plan.sizes_seen;
                plan.sizes_seen += 1;
                if let Some(errno) = plan.size_faults.remove(&index) {
                    c.result = -errno;
                    plan.injected.failed_size_changes += 1;
                }
            }
            // Not pushed through this wrapper: leave it alone.
            None => {}
        }
    }
}

impl Plan {
    /// The next write completion's result, rewritten by the plan.
    fn write_result(&mut self, mut result: i32) -> i32 {
        let index = self.writes_seen;
        self.writes_seen += 1;
        let fault = self.write_faults.remove(&index).or_else(|| {
            self.fail_writes_from
                .and_then(|(from, errno)| (index >= from).then_some(Fault::Errno(errno)))
        });
        match fault {
            Some(Fault::Short { bytes }) if result >= 0 => {
                let short = result.min(i32::try_from(bytes).unwrap_or(i32::MAX));
                if short != result {
                    result = short;
                    self.injected.short_writes += 1;
                }
            }
            Some(Fault::Short { .. }) | None => {}
            Some(Fault::Errno(errno)) => {
                result = -errno;
                self.injected.failed_writes += 1;
            }
        }
        result
    }

    /// The next sync completion's result (of a sync that ran), rewritten by the plan.
    fn sync_result(&mut self, result: i32) -> i32 {
        let index = self.syncs_seen;
        self.syncs_seen += 1;
        let errno = self.sync_faults.remove(&index).or_else(|| {
            self.fail_syncs_from
                .and_then(|(from, errno)| (index >= from).then_some(errno))
        });
        match errno {
            Some(errno) => {
                self.injected.failed_syncs += 1;
                -errno
            }
            None => result,
        }
    }
}

impl FaultInjector {
    /// Rewrites the result of a write a forcer ran on its own thread (`lead.rs`), counted
    /// with the engine's write completions.
    pub(crate) fn caller_write(&self, result: i32) -> i32 {
        self.plan().write_result(result)
    }

    /// Runs `sync` for a forcer on its own thread and rewrites its result, counted with
    /// the engine's sync completions; under [`Mutation::SkipSyncs`] reports success
    /// without running it, as the engine wrapper does.
    pub(crate) fn caller_sync(&self, sync: impl FnOnce() -> i32) -> i32 {
        if self.plan().skip_syncs {
            return 0;
        }
        let real = sync();
        self.plan().sync_result(real)
    }

    /// Notes a sync a forcer did not run because the write before it was faulted (what
    /// a cancelled linked sync is for the engine).
    pub(crate) fn caller_sync_cancelled(&self) {
        self.plan().injected.cancelled_syncs += 1;
    }
}

impl IoEngine for FaultyEngine {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.inner.waker()
    }

    fn io_worker_cap(&self) -> u32 {
        self.inner.io_worker_cap()
    }

    fn enters(&self) -> super::engine::backend::Enters {
        self.inner.enters()
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
        let Some(injector) = self.injector(user_data) else {
            // SAFETY: forwarded unchanged under the same contract.
            return unsafe {
                self.inner
                    .push_write(user_data, target, offset, iov, iovcnt, linked_sync)
            };
        };
        {
            let mut plan = injector.plan();
            let index = plan.write_pushes_seen;
            plan.write_pushes_seen += 1;
            if let Some(errno) = plan.push_refusals.remove(&index) {
                plan.injected.refused_pushes += 1;
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let len = if iovcnt == 0 || iov.is_null() {
            0
        } else {
            // SAFETY: the caller guarantees `iov` points to `iovcnt` valid iovecs (this
            // method's contract, which is the inner engine's too).
            let iovs = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
            iovs.iter().map(|v| v.iov_len as u64).sum()
        };
        let fake_sync = linked_sync.is_some() && injector.plan().skip_syncs;
        let pass_on = if fake_sync { None } else { linked_sync };
        // SAFETY: forwarded unchanged (but for a skipped sync) under the same contract.
        unsafe {
            self.inner
                .push_write(user_data, target, offset, iov, iovcnt, pass_on)?
        };
        self.tracked.insert(
            user_data,
            Tracked::Write {
                len,
                linked_sync,
                fake_sync,
            },
        );
        if let (false, Some(sync_ud)) = (fake_sync, linked_sync) {
            self.tracked
                .insert(sync_ud, Tracked::Sync { cancel: false });
        }
        Ok(())
    }

    fn push_sync(&mut self, user_data: u64, fd: RawFd, mode: SyncMode) -> io::Result<()> {
        let Some(injector) = self.injector(user_data) else {
            return self.inner.push_sync(user_data, fd, mode);
        };
        if injector.plan().skip_syncs {
            self.fake.push(Completion {
                user_data,
                result: 0,
            });
            return Ok(());
        }
        self.inner.push_sync(user_data, fd, mode)?;
        self.tracked
            .insert(user_data, Tracked::Sync { cancel: false });
        Ok(())
    }

    fn push_size(&mut self, user_data: u64, fd: RawFd, change: SizeChange) -> io::Result<()> {
        self.inner.push_size(user_data, fd, change)?;
        if self.injectors.contains_key(&slot_of(user_data)) {
            self.tracked.insert(user_data, Tracked::Size);
        }
        Ok(())
    }

    fn set_faults(&mut self, slot: usize, injector: Option<FaultInjector>) {
        let slot = slot as u64;
        match injector {
            Some(injector) => {
                self.injectors.insert(slot, injector);
            }
            None => {
                // The file left with nothing in flight: no request of it is tracked.
                debug_assert!(self.tracked.keys().all(|&ud| slot_of(ud) != slot));
                self.injectors.remove(&slot);
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        for injector in self.injectors.values() {
            let mut plan = injector.plan();
            if let Some((count, errno)) = plan.failing_waits {
                plan.failing_waits = (count > 1).then_some((count - 1, errno));
                plan.injected.failed_waits += 1;
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let start = out.len();
        // Completions of skipped syncs are ready now: do not block for real ones.
        let timeout = if self.fake.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        self.inner.wait(timeout, out)?;
        for c in &mut out[start..] {
            if !self.tracked.contains_key(&c.user_data) {
                continue;
            }
            let Some(injector) = self.injector(c.user_data) else {
                continue;
            };
            self.rewrite(&mut injector.plan(), c);
        }
        // After the writes completed in this batch, as a linked sync would be.
        out.append(&mut self.fake);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Completes every request in full (writes: the iovecs' length; syncs: 0) on `wait`,
    /// writes before their linked sync, like a healthy device.
    #[derive(Default)]
    struct FakeEngine {
        queued: VecDeque<Completion>,
        /// Syncs pushed to this engine, linked or not (shared with the test).
        syncs: Arc<std::sync::atomic::AtomicU64>,
    }

    struct NoWake;
    impl Waker for NoWake {
        fn wake(&self) {}
    }

    impl IoEngine for FakeEngine {
        fn kind(&self) -> BackendKind {
            BackendKind::Threads
        }
        fn waker(&self) -> Arc<dyn Waker> {
            Arc::new(NoWake)
        }
        unsafe fn push_write(
            &mut self,
            user_data: u64,
            _target: Target,
            _offset: u64,
            iov: *const libc::iovec,
            iovcnt: u32,
            linked_sync: Option<u64>,
        ) -> io::Result<()> {
            // SAFETY: the tests pass valid iovec arrays.
            let iovs = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
            let len: usize = iovs.iter().map(|v| v.iov_len).sum();
            self.queued.push_back(Completion {
                user_data,
                result: len as i32,
            });
            if let Some(ud) = linked_sync {
                self.syncs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.queued.push_back(Completion {
                    user_data: ud,
                    result: 0,
                });
            }
            Ok(())
        }
        fn push_sync(&mut self, user_data: u64, _: RawFd, _: SyncMode) -> io::Result<()> {
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.queued.push_back(Completion {
                user_data,
                result: 0,
            });
            Ok(())
        }
        fn push_size(&mut self, user_data: u64, fd: RawFd, _: SizeChange) -> io::Result<()> {
            self.push_sync(user_data, fd, SyncMode::Data)
        }
        fn wait(&mut self, _: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
            out.extend(self.queued.drain(..));
            Ok(())
        }
    }

    /// The fake engine never uses descriptors.
    const TARGET: Target = Target {
        fd: -1,
        sync: SyncMode::Data,
    };

    struct Rig {
        engine: FaultyEngine,
        /// Syncs that reached the fake engine.
        syncs: Arc<std::sync::atomic::AtomicU64>,
        data: Vec<u8>,
        iov: [libc::iovec; 2],
    }

    impl Rig {
        fn new(faults: &FaultInjector) -> Self {
            let fake = FakeEngine::default();
            let syncs = fake.syncs.clone();
            let mut engine = FaultyEngine::new(Box::new(fake));
            // The rig's user_data values are small: all of slot 0.
            engine.set_faults(0, Some(faults.clone()));
            let mut rig = Rig {
                engine,
                syncs,
                data: vec![0u8; 8192],
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2],
            };
            for (i, v) in rig.iov.iter_mut().enumerate() {
                v.iov_base = rig.data[i * 4096..].as_mut_ptr().cast();
                v.iov_len = 4096;
            }
            rig
        }

        /// Pushes an 8 KiB write (two iovecs) and returns the completions of one wait.
        fn write(&mut self, ud: u64, linked_sync: Option<u64>) -> Vec<Completion> {
            // SAFETY: `iov` and `data` live in `self` and outlive the synchronous fake.
            unsafe {
                self.engine
                    .push_write(ud, TARGET, 0, self.iov.as_ptr(), 2, linked_sync)
                    .unwrap()
            };
            self.wait()
        }

        fn sync(&mut self, ud: u64) -> Vec<Completion> {
            self.engine.push_sync(ud, -1, SyncMode::Data).unwrap();
            self.wait()
        }

        fn wait(&mut self) -> Vec<Completion> {
            let mut out = Vec::new();
            self.engine.wait(None, &mut out).unwrap();
            out
        }
    }

    fn c(user_data: u64, result: i32) -> Completion {
        Completion { user_data, result }
    }

    #[test]
    fn no_plan_changes_nothing() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        assert_eq!(rig.write(1, Some(2)), [c(1, 8192), c(2, 0)]);
        assert_eq!(rig.sync(3), [c(3, 0)]);
        assert_eq!(faults.injected(), Injected::default());
        assert_eq!((faults.writes_seen(), faults.syncs_seen()), (1, 2));
    }

    #[test]
    fn short_write_cancels_its_linked_sync_only() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        faults.inject_write(1, Fault::Short { bytes: 4096 });
        assert_eq!(rig.write(1, Some(2)), [c(1, 8192), c(2, 0)]); // index 0: untouched
        assert_eq!(rig.write(3, Some(4)), [c(3, 4096), c(4, -libc::ECANCELED)]);
        assert_eq!(rig.write(5, Some(6)), [c(5, 8192), c(6, 0)]); // one-shot
        let inj = faults.injected();
        assert_eq!(
            (inj.short_writes, inj.cancelled_syncs, inj.total()),
            (1, 1, 2)
        );
        // A short fault larger than the real result changes nothing.
        faults.inject_write(0, Fault::Short { bytes: 100_000 });
        assert_eq!(rig.write(7, Some(8)), [c(7, 8192), c(8, 0)]);
        assert_eq!(faults.injected().total(), 2);
    }

    #[test]
    fn errno_write_fault_without_link_and_device_failure() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        faults.inject_write(0, Fault::Errno(libc::EAGAIN));
        assert_eq!(rig.write(1, None), [c(1, -libc::EAGAIN)]);
        assert_eq!(rig.write(2, None), [c(2, 8192)]); // the retry goes through
        faults.fail_all_writes_from(1, libc::EIO);
        assert_eq!(rig.write(3, Some(4)), [c(3, 8192), c(4, 0)]);
        for ud in [5, 7] {
            assert_eq!(
                rig.write(ud, Some(ud + 1)),
                [c(ud, -libc::EIO), c(ud + 1, -libc::ECANCELED)]
            );
        }
        assert_eq!(faults.injected().failed_writes, 3);
        assert_eq!(faults.injected().cancelled_syncs, 2);
        faults.clear();
        assert_eq!(rig.write(9, None), [c(9, 8192)]);
    }

    #[test]
    fn sync_faults_skip_syncs_the_injector_cancelled() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        faults.inject_write(0, Fault::Errno(libc::ENOSPC));
        faults.inject_sync(0, libc::EIO);
        // The linked sync is cancelled by the write fault and does not use up the EIO ...
        assert_eq!(
            rig.write(1, Some(2)),
            [c(1, -libc::ENOSPC), c(2, -libc::ECANCELED)]
        );
        // ... which lands on the next sync that really ran.
        assert_eq!(rig.sync(3), [c(3, -libc::EIO)]);
        assert_eq!(rig.sync(4), [c(4, 0)]);
        faults.inject_sync(0, libc::ECANCELED);
        assert_eq!(rig.write(5, Some(6)), [c(5, 8192), c(6, -libc::ECANCELED)]);
        faults.fail_all_syncs_from(0, libc::EIO);
        assert_eq!(rig.sync(7), [c(7, -libc::EIO)]);
        assert_eq!(rig.sync(8), [c(8, -libc::EIO)]);
        let inj = faults.injected();
        assert_eq!(
            (inj.failed_writes, inj.failed_syncs, inj.cancelled_syncs),
            (1, 4, 1)
        );
        assert_eq!(faults.syncs_seen(), 5);
    }

    #[test]
    fn skipped_syncs_complete_without_reaching_the_engine() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        assert_eq!(rig.sync(1), [c(1, 0)]);
        assert_eq!(rig.syncs.load(std::sync::atomic::Ordering::Relaxed), 1);
        faults.mutate(Mutation::SkipSyncs);
        assert!(faults.mutated(Mutation::SkipSyncs));
        assert!(!faults.mutated(Mutation::SyncSubmitted));
        assert_eq!(rig.sync(2), [c(2, 0)]);
        // A linked sync completes after its write, or is cancelled if the write fails.
        assert_eq!(rig.write(3, Some(4)), [c(3, 8192), c(4, 0)]);
        faults.inject_write(0, Fault::Errno(libc::EIO));
        assert_eq!(
            rig.write(5, Some(6)),
            [c(5, -libc::EIO), c(6, -libc::ECANCELED)]
        );
        assert_eq!(
            rig.syncs.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "no sync reached the engine after the mutation"
        );
    }

    #[test]
    fn only_the_files_with_an_injector_are_faulted() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        faults.fail_all_writes_from(0, libc::EIO);
        faults.fail_all_syncs_from(0, libc::EIO);
        // Slot 1 (a sibling without an injector) on the same wrapper: untouched, and
        // not counted in slot 0's plan.
        let other = 1u64 << 32;
        assert_eq!(
            rig.write(other | 1, Some(other | 2)),
            [c(other | 1, 8192), c(other | 2, 0)]
        );
        assert_eq!(rig.sync(other | 3), [c(other | 3, 0)]);
        assert_eq!((faults.writes_seen(), faults.syncs_seen()), (0, 0));
        assert_eq!(
            rig.write(1, Some(2)),
            [c(1, -libc::EIO), c(2, -libc::ECANCELED)]
        );
        // Slot 1 gets an injector of its own; slot 0 leaves and is faulted no more.
        let theirs = FaultInjector::new();
        theirs.inject_sync(0, libc::ENOSPC);
        rig.engine.set_faults(1, Some(theirs.clone()));
        rig.engine.set_faults(0, None);
        assert_eq!(rig.sync(other | 4), [c(other | 4, -libc::ENOSPC)]);
        assert_eq!(rig.sync(5), [c(5, 0)]);
        assert_eq!(theirs.injected().failed_syncs, 1);
        assert_eq!(faults.injected().failed_writes, 1);
    }

    #[test]
    fn engine_waits_fail_as_planned_then_recover() {
        let faults = FaultInjector::new();
        let mut rig = Rig::new(&faults);
        faults.fail_engine_waits(2, libc::ENXIO);
        let mut out = Vec::new();
        for _ in 0..2 {
            let e = rig.engine.wait(None, &mut out).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
        }
        assert!(out.is_empty());
        assert_eq!(rig.sync(1), [c(1, 0)]);
        assert_eq!(faults.injected().failed_waits, 2);
    }

    #[test]
    fn identity_equality_and_debug() {
        let a = FaultInjector::new();
        let b = a.clone();
        assert_eq!(a, b);
        assert_ne!(a, FaultInjector::new());
        a.inject_write(3, Fault::Short { bytes: 1 });
        assert!(format!("{b:?}").contains("pending_write_faults: 1"));
    }
}
