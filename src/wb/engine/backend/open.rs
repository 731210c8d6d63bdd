//! Choosing and building the [`IoEngine`] of an engine from its [`EngineConfig`].

use std::io;

use super::threads::ThreadsEngine;
use super::uring::{probe, ProbeError, UringEngine};
use super::IoEngine;
use crate::config::{Backend, EngineConfig};
use crate::error::{errno, os_msg};
#[cfg(feature = "fault-injection")]
use crate::wb::fault::FaultyEngine;

/// Builds the engine `cfg.backend` asks for:
/// - [`Backend::IoUring`]: the io_uring engine, or its setup error;
/// - [`Backend::Threads`]: the thread engine;
/// - [`Backend::Auto`]: io_uring if [`probe`] finds it usable; if io_uring is
///   *unavailable* (`EPERM`, `ENOSYS`, opcodes missing) it prints one line to stderr and
///   uses the thread engine; any other probe or setup error is returned.
///
/// With the `fault-injection` feature, the engine is wrapped so that the completions of
/// each file with a fault injector follow its plan (see [`IoEngine::set_faults`]).
///
/// **Call this on the submission thread**: the io_uring engine binds its ring to the
/// thread that creates it (`SINGLE_ISSUER`) and must be used and dropped there.
pub(crate) fn open_engine(cfg: &EngineConfig) -> io::Result<Box<dyn IoEngine>> {
    let engine = match cfg.backend {
        Backend::IoUring => uring(cfg)?,
        Backend::Threads => threads(cfg)?,
        Backend::Auto => match probe().map(|()| uring(cfg)) {
            Ok(Ok(engine)) => engine,
            Ok(Err(e)) if !unavailable(&e) => return Err(e),
            // The probe passed but this ring was refused as unavailable (e.g. a seccomp
            // filter installed after an earlier probe in a forked child): fall back too.
            Ok(Err(e)) => fall_back(cfg, &e.to_string())?,
            Err(ProbeError::Unavailable(reason)) => fall_back(cfg, &reason)?,
            Err(ProbeError::Failed(e)) => {
                let code = errno(&e).unwrap_or(libc::EIO);
                return Err(os_msg(code, format!("io_uring probe failed: {e}")));
            }
        },
    };
    #[cfg(feature = "fault-injection")]
    let engine = Box::new(FaultyEngine::new(engine));
    Ok(engine)
}

/// Worker threads for the thread engine: as many as writes may be in flight, at most 4
/// (this is a fallback; more threads mostly contend for the same device queue).
pub(crate) fn thread_workers(cfg: &EngineConfig) -> usize {
    cfg.queue_depth.clamp(1, 4) as usize
}

fn uring(cfg: &EngineConfig) -> io::Result<Box<dyn IoEngine>> {
    match UringEngine::new(cfg.ring_entries, cfg.io_worker_cap()) {
        Ok(engine) => Ok(Box::new(engine.batch_wait(cfg.batch_wait))),
        Err(e) => {
            let code = errno(&e).unwrap_or(libc::EIO);
            Err(os_msg(code, format!("io_uring setup failed: {e}")))
        }
    }
}

fn threads(cfg: &EngineConfig) -> io::Result<Box<dyn IoEngine>> {
    Ok(Box::new(ThreadsEngine::new(thread_workers(cfg))?))
}

fn fall_back(cfg: &EngineConfig, reason: &str) -> io::Result<Box<dyn IoEngine>> {
    log::warn!("writebehind: io_uring unavailable ({reason}); using the threads backend");
    threads(cfg)
}

/// Errors that mean "io_uring cannot be used here", as opposed to real failures.
fn unavailable(e: &io::Error) -> bool {
    matches!(errno(e), Some(libc::EPERM | libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::stats::BackendKind;
    use std::fs::File;
    use std::sync::Arc;

    fn open(cfg: &Config) -> io::Result<Box<dyn IoEngine>> {
        open_engine(&cfg.engine_config())
    }

    #[test]
    fn backends_map_to_engines() {
        if !crate::wb::ring_check::ring_available("backends_map_to_engines") {
            return;
        }
        let threads = open(&Config::default().backend(Backend::Threads)).unwrap();
        assert_eq!(threads.kind(), BackendKind::Threads);
        assert_eq!(thread_workers(&EngineConfig::default().queue_depth(1)), 1);
        assert_eq!(thread_workers(&EngineConfig::default().queue_depth(32)), 4);
        // io_uring is available (else the test skipped above): Auto and IoUring must
        // pick it, and the probe must agree.
        assert!(probe().is_ok(), "{:?}", probe());
        for backend in [Backend::IoUring, Backend::Auto] {
            let engine = open(&Config::default().backend(backend)).unwrap();
            assert_eq!(engine.kind(), BackendKind::IoUring, "{backend:?}");
        }
    }

    #[test]
    fn ring_setup_errors_keep_their_errno() {
        if !crate::wb::ring_check::ring_available("ring_setup_errors_keep_their_errno") {
            return;
        }
        // More entries than the kernel allows: a setup error, reported with its errno.
        let e = open(
            &Config::default()
                .backend(Backend::IoUring)
                .ring_entries(65_536),
        )
        .err()
        .expect("65536 ring entries must be refused");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{e}");
        assert!(e.to_string().contains("io_uring setup failed"), "{e}");
        assert!(!unavailable(&e));
        assert!(unavailable(&io::Error::from_raw_os_error(libc::EPERM)));
    }

    /// Makes `io_uring_setup` fail with `errno` in the calling thread only (seccomp
    /// filters without TSYNC are per thread); EPERM is what Docker's default profile does.
    fn deny_io_uring_to_this_thread(errno: i32) {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let mut filter = [
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: libc::SYS_io_uring_setup as u32,
            },
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | errno as u32,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: prctl with plain integers, then with a pointer to a valid BPF program
        // that lives across the call (the kernel copies it).
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            let rc = libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            );
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        }
    }

    #[test]
    fn auto_falls_back_only_when_io_uring_is_unavailable() {
        std::thread::spawn(|| {
            deny_io_uring_to_this_thread(libc::EPERM);
            match probe() {
                Err(ProbeError::Unavailable(reason)) => assert!(reason.contains("permission")),
                other => panic!("expected Unavailable, got {other:?}"),
            }
            let auto = open(&Config::default()).unwrap();
            assert_eq!(auto.kind(), BackendKind::Threads);
            let e = open(&Config::default().backend(Backend::IoUring))
                .err()
                .expect("io_uring must be refused");
            assert_eq!(errno(&e), Some(libc::EPERM), "{e}");
        })
        .join()
        .unwrap();
        // Any other setup error is a real error: reported, no silent fallback.
        std::thread::spawn(|| {
            deny_io_uring_to_this_thread(libc::ENOMEM);
            assert!(matches!(probe(), Err(ProbeError::Failed(_))));
            let e = open(&Config::default())
                .err()
                .expect("ENOMEM must be reported");
            assert_eq!(errno(&e), Some(libc::ENOMEM), "{e}");
            let threads = open(&Config::default().backend(Backend::Threads)).unwrap();
            assert_eq!(threads.kind(), BackendKind::Threads);
        })
        .join()
        .unwrap();
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn injector_wraps_the_engine() {
        use super::super::Completion;
        use crate::wb::fault::{Fault, FaultInjector};
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let faults = FaultInjector::new();
        faults.inject_write(0, Fault::Errno(libc::EIO));
        let cfg = EngineConfig::default().backend(Backend::Threads);
        let mut engine = open_engine(&cfg).unwrap();
        engine.set_faults(0, Some(faults.clone()));
        let mut engine = conformance::OnFile::new(engine, file);
        let out = engine.write_with_linked_sync(&[1u8; 512]);
        let expect = [
            Completion {
                user_data: 1,
                result: -libc::EIO,
            },
            Completion {
                user_data: 2,
                result: -libc::ECANCELED,
            },
        ];
        assert_eq!(out, expect);
        assert_eq!(faults.injected().failed_writes, 1);
    }
}

/// Checks every engine must pass, run by the tests of each engine against a real file.
#[cfg(test)]
pub(super) mod conformance {
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use std::os::fd::AsRawFd;

    use super::super::{IoEngine, SizeChange, Target, RESERVED_USER_DATA};
    use crate::aligned::AlignedBuf;
    use crate::config::SyncMode;

    /// Builds the engine under test for a file.
    pub(crate) type Make<'a> = &'a dyn Fn(Arc<File>) -> OnFile;

    /// An engine whose requests all go to one file (`fdatasync` for linked syncs): the
    /// engine calls of these tests, without naming the file each time.
    pub(crate) struct OnFile {
        pub engine: Box<dyn IoEngine>,
        pub file: Arc<File>,
    }

    impl OnFile {
        pub(crate) fn new(engine: Box<dyn IoEngine>, file: Arc<File>) -> Self {
            OnFile { engine, file }
        }

        fn target(&self) -> Target {
            Target {
                fd: self.file.as_raw_fd(),
                sync: SyncMode::Data,
            }
        }

        /// # Safety
        /// As [`IoEngine::push_write`].
        pub(crate) unsafe fn push_write(
            &mut self,
            user_data: u64,
            offset: u64,
            iov: *const libc::iovec,
            iovcnt: u32,
            linked_sync: Option<u64>,
        ) -> std::io::Result<()> {
            let target = self.target();
            // SAFETY: forwarded under the caller's guarantee.
            unsafe {
                self.engine
                    .push_write(user_data, target, offset, iov, iovcnt, linked_sync)
            }
        }

        /// Writes `data` at offset 0 (user_data 1) with a linked sync (user_data 2), and
        /// returns both completions.
        pub(crate) fn write_with_linked_sync(
            &mut self,
            data: &[u8],
        ) -> Vec<super::super::Completion> {
            let iov = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            // SAFETY: `iov` and `data` outlive the waits below, which return both
            // completions.
            unsafe { self.push_write(1, 0, &iov, 1, Some(2)).unwrap() };
            let mut out = Vec::new();
            while out.len() < 2 {
                self.wait(None, &mut out).unwrap();
            }
            out
        }

        pub(crate) fn push_sync(&mut self, user_data: u64, mode: SyncMode) -> std::io::Result<()> {
            self.engine
                .push_sync(user_data, self.file.as_raw_fd(), mode)
        }

        pub(crate) fn push_size(
            &mut self,
            user_data: u64,
            change: SizeChange,
        ) -> std::io::Result<()> {
            self.engine
                .push_size(user_data, self.file.as_raw_fd(), change)
        }
    }

    impl std::ops::Deref for OnFile {
        type Target = dyn IoEngine;
        fn deref(&self) -> &(dyn IoEngine + 'static) {
            &*self.engine
        }
    }

    impl std::ops::DerefMut for OnFile {
        fn deref_mut(&mut self) -> &mut (dyn IoEngine + 'static) {
            &mut *self.engine
        }
    }

    pub(crate) fn file_in(dir: &Path, direct: bool) -> Arc<File> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(true);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        Arc::new(opts.open(dir.join("data")).unwrap())
    }

    fn iov(buf: &[u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_ptr() as *mut _,
            iov_len: buf.len(),
        }
    }

    /// Waits until every user_data in `expected` completed, checking each arrives exactly
    /// once with the expected result; fails after 5 s instead of hanging.
    pub(crate) fn collect(engine: &mut dyn IoEngine, expected: &HashMap<u64, i32>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        while seen.len() < expected.len() {
            assert!(Instant::now() < deadline, "missing completions: {seen:?}");
            out.clear();
            engine
                .wait(Some(Duration::from_millis(200)), &mut out)
                .unwrap();
            for c in &out {
                let want = expected.get(&c.user_data);
                assert_eq!(want, Some(&c.result), "unexpected completion {c:?}");
                assert!(seen.insert(c.user_data, c.result).is_none(), "twice: {c:?}");
            }
        }
        // Nothing more arrives (no duplicates in a later batch).
        out.clear();
        engine
            .wait(Some(Duration::from_millis(20)), &mut out)
            .unwrap();
        assert!(out.is_empty(), "extra completions: {out:?}");
    }

    /// Vectored writes at offsets, one with a linked sync, then a plain sync; the file
    /// must hold exactly the model's bytes.
    pub(crate) fn writes_and_syncs_land(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(dir.path(), false);
        let mut engine = make(file);
        let a = vec![b'a'; 1000];
        let b = vec![b'b'; 3000];
        let c = vec![b'c'; 4096];
        let d = vec![b'd'; 17];
        let first = [iov(&a), iov(&b)]; // [0, 4000)
        let second = [iov(&c)]; // [8192, 12288)
        let third = [iov(&d), iov(&a), iov(&d)]; // [3990, 5024): overwrites the tail of a-b
                                                 // SAFETY: the iovecs and buffers outlive `collect`, which returns every completion.
        unsafe {
            engine.push_write(1, 0, first.as_ptr(), 2, None).unwrap();
            engine
                .push_write(2, 8192, second.as_ptr(), 1, Some(3))
                .unwrap();
        }
        let mut expected = HashMap::from([(1, 4000), (2, 4096), (3, 0)]);
        collect(&mut *engine, &expected);
        // Overlapping rewrite only after the first completed (the core's rule, too).
        // SAFETY: `third` and the buffers it points at outlive `collect` below, which
        // returns every completion.
        unsafe { engine.push_write(4, 3990, third.as_ptr(), 3, None).unwrap() };
        engine.push_sync(5, SyncMode::Data).unwrap(); // may run before or after write 4; both complete
        expected = HashMap::from([(4, 1034), (5, 0)]);
        collect(&mut *engine, &expected);
        engine.push_sync(6, SyncMode::Data).unwrap(); // covers everything above
        collect(&mut *engine, &HashMap::from([(6, 0)]));
        drop(engine);
        let mut model = vec![0u8; 12288];
        model[..1000].copy_from_slice(&a);
        model[1000..4000].copy_from_slice(&b);
        model[8192..].copy_from_slice(&c);
        model[3990..4007].copy_from_slice(&d);
        model[4007..5007].copy_from_slice(&a);
        model[5007..5024].copy_from_slice(&d);
        assert!(std::fs::read(dir.path().join("data")).unwrap() == model);
    }

    /// The waker ends an untimed wait promptly, from another thread; many wakes before a
    /// wait coalesce into (at most) one early return; a wake before the wait is not lost.
    pub(crate) fn waker_interrupts_wait(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = make(file_in(dir.path(), false));
        let waker = engine.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let woke_at = Instant::now();
            waker.wake();
            woke_at
        });
        let start = Instant::now();
        let mut out = Vec::new();
        engine.wait(None, &mut out).unwrap();
        let returned = Instant::now();
        let woke_at = t.join().unwrap();
        assert!(out.is_empty());
        assert!(returned >= woke_at, "returned before the wake");
        assert!(
            returned - woke_at < Duration::from_millis(500),
            "slow wake: {:?} (waited {:?})",
            returned - woke_at,
            returned - start
        );

        let waker = engine.waker();
        for _ in 0..1000 {
            waker.wake();
        }
        let start = Instant::now();
        let long = Some(Duration::from_secs(2)); // bounded, so a lost wake fails, not hangs
        engine.wait(long, &mut out).unwrap(); // pending wake: returns at once
        assert!(start.elapsed() < Duration::from_millis(500));
        // The 1000 wakes were one: the next wait runs to its timeout.
        let start = Instant::now();
        engine
            .wait(Some(Duration::from_millis(50)), &mut out)
            .unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(45),
            "{:?}",
            start.elapsed()
        );
        assert!(out.is_empty());
        // And wakes keep working after being consumed.
        waker.wake();
        let start = Instant::now();
        engine.wait(long, &mut out).unwrap();
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    /// A timed wait with nothing in flight returns Ok, empty, after the timeout.
    pub(crate) fn timeout_returns_empty(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = make(file_in(dir.path(), false));
        let mut out = Vec::new();
        for ms in [0, 30] {
            let start = Instant::now();
            engine
                .wait(Some(Duration::from_millis(ms)), &mut out)
                .unwrap();
            let took = start.elapsed();
            assert!(out.is_empty());
            assert!(took >= Duration::from_millis(ms), "{took:?}");
            assert!(took < Duration::from_millis(ms + 500), "{took:?}");
        }
    }

    /// O_DIRECT with a misaligned buffer: the write fails with EINVAL and its linked sync
    /// is cancelled; an aligned write then succeeds with its sync.
    pub(crate) fn misaligned_direct_write_cancels_sync(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true);
        opts.custom_flags(libc::O_DIRECT);
        if let Err(e) = opts.open(dir.path().join("probe")) {
            eprintln!("skipped: no O_DIRECT in {:?}: {e}", dir.path());
            return;
        }
        let mut engine = make(file_in(dir.path(), true));
        let buf = AlignedBuf::try_zeroed(8192, 4096).unwrap();
        let bad = [libc::iovec {
            iov_base: buf.as_ptr().wrapping_add(1) as *mut _,
            iov_len: 4096,
        }];
        let good = [iov(&buf.as_slice()[..4096])];
        // SAFETY: `buf` and the iovecs outlive `collect`, which returns every completion.
        unsafe {
            engine.push_write(1, 0, bad.as_ptr(), 1, Some(2)).unwrap();
        }
        let expected = HashMap::from([(1, -libc::EINVAL), (2, -libc::ECANCELED)]);
        collect(&mut *engine, &expected);
        // SAFETY: as above: `good` and `buf` outlive the `collect` that follows.
        unsafe {
            engine
                .push_write(3, 4096, good.as_ptr(), 1, Some(4))
                .unwrap()
        };
        collect(&mut *engine, &HashMap::from([(3, 4096), (4, 0)]));
    }

    /// 1000 requests (more than any ring in these tests holds) pushed before one wait:
    /// all complete exactly once and the file holds every write.
    pub(crate) fn burst_completes_exactly_once(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = make(file_in(dir.path(), false));
        const N: usize = 1000;
        let data: Vec<Vec<u8>> = (0..N).map(|i| vec![(i % 251) as u8; 512]).collect();
        let iovs: Vec<libc::iovec> = data.iter().map(|d| iov(d)).collect();
        let mut expected = HashMap::new();
        let mut ud = 0u64;
        for (i, v) in iovs.iter().enumerate() {
            let linked = (i % 10 == 0).then_some(ud + 1);
            // SAFETY: `data` and `iovs` outlive `collect`, which returns every completion.
            unsafe {
                engine
                    .push_write(ud, (i * 512) as u64, v, 1, linked)
                    .unwrap()
            };
            expected.insert(ud, 512);
            ud += 1;
            if linked.is_some() {
                expected.insert(ud, 0);
                ud += 1;
            }
            if i % 100 == 99 {
                engine.push_sync(ud, SyncMode::Data).unwrap();
                expected.insert(ud, 0);
                ud += 1;
            }
        }
        assert_eq!(expected.len(), N + N / 10 + N / 100);
        collect(&mut *engine, &expected);
        drop(engine);
        let got = std::fs::read(dir.path().join("data")).unwrap();
        assert_eq!(got.len(), N * 512);
        for (i, chunk) in got.chunks(512).enumerate() {
            assert!(chunk == data[i].as_slice(), "block {i}");
        }
    }

    /// Dropping an engine with requests pushed and never waited for still performs and
    /// finishes them (the safety net that keeps the kernel off freed memory).
    pub(crate) fn drop_finishes_in_flight(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = make(file_in(dir.path(), false));
        let data = vec![7u8; 64 << 10];
        let v = [iov(&data)];
        for i in 0..8u64 {
            // SAFETY: `data` and `v` outlive the engine, whose Drop waits for the writes.
            unsafe {
                engine
                    .push_write(i, i * (64 << 10), v.as_ptr(), 1, Some(100 + i))
                    .unwrap()
            };
        }
        let mut out = Vec::new();
        engine.wait(Some(Duration::ZERO), &mut out).unwrap(); // some may be submitted now
        drop(engine);
        let got = std::fs::read(dir.path().join("data")).unwrap();
        assert_eq!(got.len(), 8 << 16);
        assert!(got.iter().all(|&b| b == 7));
    }

    /// A truncate sets the length; a punch frees the blocks it covers, reads as zeros
    /// and keeps the length; a bad truncate completes with its errno.
    pub(crate) fn size_changes_land(make: Make) {
        use super::super::SizeChange;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(dir.path(), false);
        let mut engine = make(file.clone());
        let data = vec![5u8; 64 << 10];
        let v = [iov(&data)];
        // SAFETY: `data` and `v` outlive `collect`, which returns the write's completion.
        unsafe { engine.push_write(1, 0, v.as_ptr(), 1, None).unwrap() };
        collect(&mut *engine, &HashMap::from([(1, 64 << 10)]));
        let blocks = |f: &File| f.metadata().unwrap().blocks();
        let before = blocks(&file);
        engine
            .push_size(
                2,
                SizeChange::Punch {
                    offset: 0,
                    len: 32 << 10,
                },
            )
            .unwrap();
        collect(&mut *engine, &HashMap::from([(2, 0)]));
        assert!(blocks(&file) < before, "punch freed nothing");
        engine.push_size(3, SizeChange::Truncate(40_000)).unwrap();
        collect(&mut *engine, &HashMap::from([(3, 0)]));
        engine.push_size(4, SizeChange::Truncate(u64::MAX)).unwrap();
        collect(&mut *engine, &HashMap::from([(4, -libc::EINVAL)]));
        drop(engine);
        let got = std::fs::read(dir.path().join("data")).unwrap();
        assert_eq!(got.len(), 40_000);
        assert!(got[..32 << 10].iter().all(|&b| b == 0));
        assert!(got[32 << 10..].iter().all(|&b| b == 5));
    }

    /// The reserved user_data is refused with EINVAL and nothing is queued.
    pub(crate) fn reserved_user_data_is_refused(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = make(file_in(dir.path(), false));
        let data = [1u8; 8];
        let v = [iov(&data)];
        let err = |r: std::io::Result<()>| crate::errno(&r.unwrap_err());
        assert_eq!(
            err(engine.push_sync(RESERVED_USER_DATA, SyncMode::Data)),
            Some(libc::EINVAL)
        );
        // SAFETY: refused before anything is queued; `data` outlives the call anyway.
        unsafe {
            let r = engine.push_write(RESERVED_USER_DATA, 0, v.as_ptr(), 1, None);
            assert_eq!(err(r), Some(libc::EINVAL));
            let r = engine.push_write(1, 0, v.as_ptr(), 1, Some(RESERVED_USER_DATA));
            assert_eq!(err(r), Some(libc::EINVAL));
        }
        let mut out = Vec::new();
        engine
            .wait(Some(Duration::from_millis(10)), &mut out)
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
    }
}
