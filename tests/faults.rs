//! Fault injection at the completion layer (feature `fault-injection`), on both engines:
//! every completion fault docs/durability.md lists, driven through a real `WriteBehindFile`, with the outcome
//! checked against the contract in docs/durability.md.
//!
//! The injector rewrites a completion *after* the real I/O happened (see `src/wb/fault.rs`),
//! so "data intact" alone would not prove that a short write was resumed. The tests also
//! check the exact byte accounting (`stats.bytes_written` must equal what a correct resume
//! writes), and the error tests overwrite the file behind the handle's back to prove that
//! reads after a failure come from the handle's buffers.
//!
//! Every test body runs under a watchdog: a hang (a waiter never woken) fails the test
//! instead of blocking the suite.
#![cfg(feature = "fault-injection")]

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
use writebehind::fault::{Fault, FaultInjector, Mutation};
use writebehind::{errno, Backend, Config, Handle, WriteBehindFile};

const PAGE: usize = 4096;
const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Threads];
/// Separate runs of dirty pages that make the submitter, not a forcer, write them
/// (a forcer leads a commit of at most 16 runs, buffered; see docs/design.md).
const SCATTERED: u64 = 24;

/// A handle whose write-back starts only on `force`, backpressure or close (a dirty age
/// of an hour, a 1 MiB merge limit), so the tests know which completion a fault hits.
fn config(backend: Backend, direct: bool, faults: &FaultInjector) -> Config {
    Config::default()
        .backend(backend)
        .direct_io(direct)
        .max_write_bytes(1 << 20)
        .max_dirty_age(Duration::from_secs(3600))
        .fault_injector(faults.clone())
}

struct Case {
    _dir: tempfile::TempDir,
    path: PathBuf,
    h: WriteBehindFile,
    faults: FaultInjector,
    /// What the handle must show: every byte written so far.
    model: Vec<u8>,
}

impl Case {
    fn new(backend: Backend, direct: bool) -> Case {
        Case::with(backend, direct, |c| c)
    }

    fn with(backend: Backend, direct: bool, tweak: impl FnOnce(Config) -> Config) -> Case {
        let dir = common::tempdir();
        let path = dir.path().join("data");
        let faults = FaultInjector::new();
        let h = WriteBehindFile::create(&path, &tweak(config(backend, direct, &faults)))
            .unwrap_or_else(|e| panic!("create on {backend:?} (direct {direct}): {e}"));
        assert_eq!(
            h.stats().backend.name(),
            match backend {
                Backend::IoUring => "io_uring",
                _ => "threads",
            }
        );
        Case {
            _dir: dir,
            path,
            h,
            faults,
            model: Vec::new(),
        }
    }

    /// Writes pages `[first, first + n)` with contents depending on `version`.
    fn write_pages(&mut self, first: u64, n: u64, version: u64) -> io::Result<()> {
        let data = pages(first, n, version);
        let off = first * PAGE as u64;
        self.h.write(off, &data)?;
        let end = off as usize + data.len();
        if self.model.len() < end {
            self.model.resize(end, 0);
        }
        self.model[off as usize..end].copy_from_slice(&data);
        Ok(())
    }

    /// Everything the handle shows, `[0, end)`.
    fn contents(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.h.end_position() as usize];
        self.h.read(0, &mut buf).expect("read everything");
        buf
    }

    fn assert_shows_model(&self, when: &str) {
        assert_eq!(
            self.h.end_position(),
            self.model.len() as u64,
            "{when}: end"
        );
        assert!(self.contents() == self.model, "{when}: contents differ");
    }

    /// Closes the handle and returns the file's bytes.
    fn close(
        self,
    ) -> (
        io::Result<writebehind::Stats>,
        Vec<u8>,
        Vec<u8>,
        FaultInjector,
    ) {
        let r = self.h.close();
        let mut file = std::fs::read(&self.path).unwrap();
        // A failed handle sends nothing more, not the trim of the zeros it preallocated
        // past its end (docs/durability.md): only zeros may follow the data.
        let n = self.model.len();
        if r.is_err() && file.len() > n && file[n..].iter().all(|&b| b == 0) {
            file.truncate(n);
        }
        (r, file, self.model, self.faults)
    }
}

/// Deterministic contents of pages `[first, first + n)` at `version`.
fn pages(first: u64, n: u64, version: u64) -> Vec<u8> {
    (first..first + n)
        .flat_map(|p| common::pattern(p * 1_000_003 + version, PAGE))
        .collect()
}

#[track_caller]
fn assert_err<T: std::fmt::Debug>(what: &str, r: io::Result<T>, code: i32) {
    match r {
        Ok(v) => panic!("{what}: expected errno {code}, got Ok({v:?}) (a false Ok)"),
        Err(e) => assert_eq!(errno(&e), Some(code), "{what}: {e}"),
    }
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        thread::sleep(Duration::from_millis(1));
    }
}

fn label(backend: Backend, direct: bool) -> String {
    format!("{backend:?}{}", if direct { " direct" } else { "" })
}

/// What `stats.bytes_written` must be for one write of `len` bytes whose completions
/// report `shorts` (then the rest in full), when each resume starts at the first
/// unwritten byte aligned down to `align`.
fn bytes_written_with_resumes(len: u64, align: u64, shorts: &[u64]) -> u64 {
    let (mut done, mut reported) = (0, 0);
    for &s in shorts {
        let r = s.min(len - done);
        reported += r;
        done = (done + r) / align * align;
    }
    reported + (len - done)
}

// ------------------------------------------------------------------ short writes

/// Short completions are resumed from the first unwritten byte (aligned down in direct
/// mode) until the whole run is written; `force` returns Ok only then, and the file holds
/// every byte after close and reopen.
#[test]
fn short_writes_are_resumed_and_data_is_intact() {
    for backend in BACKENDS {
        for direct in [false, true] {
            watchdog("short writes", 30, move || short_writes(backend, direct));
        }
    }
}

fn short_writes(backend: Backend, direct: bool) {
    let what = label(backend, direct);
    let mut c = Case::new(backend, direct);
    let align = c.h.alignment() as u64;
    // 16 adjacent pages: one merged 64 KiB write.
    c.write_pages(0, 16, 1).unwrap();
    let shorts = [4096 + 100, 5000, 3 * 4096 + 1, 1];
    for (i, &s) in shorts.iter().enumerate() {
        c.faults
            .inject_write(i as u64, Fault::Short { bytes: s as u32 });
    }
    c.h.force()
        .unwrap_or_else(|e| panic!("{what}: force after short writes: {e}"));
    let st = c.h.stats();
    let injected = c.faults.injected();
    assert_eq!(injected.short_writes, shorts.len() as u64, "{what}");
    assert_eq!(
        st.short_writes,
        shorts.len() as u64,
        "{what}: stats.short_writes"
    );
    assert_eq!(
        c.faults.writes_seen(),
        shorts.len() as u64 + 1,
        "{what}: one completion per short write, then the rest"
    );
    assert_eq!(
        st.bytes_written,
        bytes_written_with_resumes(16 * PAGE as u64, align, &shorts),
        "{what}: resumes did not start at the first unwritten (aligned) byte"
    );
    assert!(st.fsyncs >= 1, "{what}: force returned without an fsync");
    c.assert_shows_model(&what);

    // A second round on top, resumed again, then close and reopen.
    c.write_pages(8, 16, 2).unwrap();
    c.faults.inject_write(0, Fault::Short { bytes: 8192 });
    c.h.force().unwrap();
    assert_eq!(c.h.stats().short_writes, shorts.len() as u64 + 1);
    let (r, file, model, _) = c.close();
    r.unwrap_or_else(|e| panic!("{what}: close: {e}"));
    assert!(file == model, "{what}: file after close differs");
}

/// A write whose completions never make progress (0 bytes, or in direct mode less than
/// one aligned block) is declared failed with EIO after a bounded number of resubmissions
/// instead of spinning forever; `force` and `close` report it.
#[test]
fn writes_that_never_progress_fail_with_eio() {
    for backend in BACKENDS {
        for direct in [false, true] {
            watchdog("no progress", 30, move || {
                let what = label(backend, direct);
                let mut c = Case::new(backend, direct);
                // Buffered: 0-byte results. Direct: 1 byte, which rounds down to no progress.
                let bytes = if direct { 1 } else { 0 };
                const FAULTS: u64 = 200;
                for i in 0..FAULTS {
                    c.faults.inject_write(i, Fault::Short { bytes });
                }
                c.write_pages(0, 4, 1).unwrap();
                assert_err(&what, c.h.force(), libc::EIO);
                let seen = c.faults.writes_seen();
                assert!(
                    (2..FAULTS).contains(&seen),
                    "{what}: {seen} write completions: it must give up before the faults run out"
                );
                c.assert_shows_model(&format!("{what}: buffered bytes after the failure"));
                let (r, ..) = c.close();
                assert_err(&format!("{what}: close"), r, libc::EIO);
            });
        }
    }
}

// ------------------------------------------------------------------ EAGAIN / EINTR

/// `EAGAIN`, `EINTR` and `ECANCELED` on a write completion are resubmitted (counted in
/// `stats.retries`); the data ends up intact and `force` succeeds.
#[test]
fn eagain_and_eintr_are_retried() {
    for backend in BACKENDS {
        for direct in [false, true] {
            watchdog("EAGAIN", 30, move || {
                let what = label(backend, direct);
                let mut c = Case::new(backend, direct);
                c.write_pages(0, 8, 1).unwrap();
                let errs = [libc::EAGAIN, libc::EINTR, libc::EAGAIN, libc::ECANCELED];
                for (i, &e) in errs.iter().enumerate() {
                    c.faults.inject_write(i as u64, Fault::Errno(e));
                }
                c.h.force().unwrap_or_else(|e| panic!("{what}: {e}"));
                let st = c.h.stats();
                assert_eq!(c.faults.injected().failed_writes, errs.len() as u64);
                assert_eq!(st.retries, errs.len() as u64, "{what}: stats.retries");
                assert_eq!(
                    st.bytes_written,
                    8 * PAGE as u64,
                    "{what}: the retried write was not rewritten in full"
                );
                c.assert_shows_model(&what);
                let (r, file, model, _) = c.close();
                r.unwrap();
                assert!(file == model, "{what}: file differs");
            });
        }
    }
}

/// A write push the engine refuses (io_uring's `EBUSY`/`EAGAIN` on submission) is put
/// back for resubmission after the planner ran; the submitter must come back for it on
/// its own: no completion is on its way and the forcer already sent its wake-up. Without
/// that the force below parks forever (the watchdog fails the test).
#[test]
fn refused_write_push_is_resubmitted_without_a_wake() {
    for backend in BACKENDS {
        for code in [libc::EAGAIN, libc::EBUSY] {
            watchdog("refused push", 30, move || {
                let what = format!("{} refused with {code}", label(backend, false));
                let mut c = Case::new(backend, false);
                // Scattered pages (more runs than a forcer writes itself): the engine
                // writes them.
                for p in 0..SCATTERED {
                    c.write_pages(2 * p, 1, 1).unwrap();
                }
                c.faults.refuse_write_push(0, code);
                c.faults.refuse_write_push(1, code);
                c.h.force().unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(c.faults.injected().refused_pushes, 2, "{what}");
                assert_eq!(c.h.stats().bytes_written, SCATTERED * PAGE as u64, "{what}");
                // A second force after the retries: served as usual.
                for p in 0..SCATTERED {
                    c.write_pages(2 * p + 1, 1, 2).unwrap();
                }
                c.faults.refuse_write_push(0, code);
                c.h.force()
                    .unwrap_or_else(|e| panic!("{what}: second force: {e}"));
                let (r, file, model, _) = c.close();
                r.unwrap();
                assert!(file == model, "{what}: file differs");
            });
        }
    }
}

// ------------------------------------------------------------------ write errors

/// `EIO`, `ENOSPC` and `EDQUOT` on a write latch the handle (fail-stop): the `force` that
/// covers the write returns the errno (never a false Ok), so do later writes, appends,
/// buffers, forces and `close`; nothing more is written or synced; reads keep returning
/// the unwritten bytes from the handle's buffers.
#[test]
fn write_errors_latch_and_reach_force_and_close() {
    let mut cases = Vec::new();
    for backend in BACKENDS {
        for code in [libc::EIO, libc::ENOSPC, libc::EDQUOT] {
            cases.push((backend, false, code));
        }
        cases.push((backend, true, libc::EIO));
        cases.push((backend, true, libc::ENOSPC));
    }
    for (backend, direct, code) in cases {
        watchdog("write error", 30, move || {
            write_error(backend, direct, code)
        });
    }
}

fn write_error(backend: Backend, direct: bool, code: i32) {
    let what = format!("{} errno {code}", label(backend, direct));
    let mut c = Case::new(backend, direct);
    c.write_pages(0, 8, 1).unwrap();
    c.h.force().unwrap();
    let durable = c.model.clone();

    // Rewrite half of it and extend it; the write-back of that run fails.
    c.write_pages(4, 8, 2).unwrap();
    c.faults.inject_write(0, Fault::Errno(code));
    assert_err(&format!("{what}: force"), c.h.force(), code);
    assert_eq!(c.faults.injected().failed_writes, 1, "{what}");
    let (writes, syncs) = (c.faults.writes_seen(), c.faults.syncs_seen());

    // The injector let the real write happen; make the file look as if it had not, so
    // what reads return must come from the handle's buffers.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&c.path)
        .unwrap();
    file.write_all_at(&vec![0xEE; 8 * PAGE], 4 * PAGE as u64)
        .unwrap();
    drop(file);
    c.assert_shows_model(&format!("{what}: reads after the failure"));
    let rb = c.h.read_buffer(5 * PAGE as u64, PAGE).unwrap();
    assert!(rb[..] == c.model[5 * PAGE..6 * PAGE], "{what}: read_buffer");
    drop(rb);

    // Every later write and force gets the latched errno and changes nothing.
    let page = vec![7u8; PAGE];
    let refused: Vec<(&str, io::Result<()>)> = vec![
        ("force again", c.h.force()),
        ("force_range", c.h.force_range(0, PAGE as u64)),
        ("empty force_range", c.h.force_range(9, 9)),
        ("sync_data", c.h.sync_data()),
        ("write", c.h.write(0, &page)),
        ("write past the end", c.h.write(64 * PAGE as u64, &page)),
        ("append", c.h.append(&page).map(drop)),
        ("write_buffer", c.h.write_buffer(0, PAGE).map(drop)),
        ("append_buffer", c.h.append_buffer(PAGE).map(drop)),
    ];
    for (call, r) in refused {
        assert_err(&format!("{what}: {call}"), r, code);
        c.assert_shows_model(&format!("{what}: after the refused {call}"));
    }
    // A failed handle sends nothing more: the failed write is not retried, and no fsync
    // runs (the kernel may have dropped the pages: fsyncgate).
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        c.faults.writes_seen(),
        writes,
        "{what}: wrote after failing"
    );
    assert_eq!(c.faults.syncs_seen(), syncs, "{what}: synced after failing");

    let faults = c.faults.clone();
    let (r, file, _, _) = c.close();
    assert_err(&format!("{what}: close"), r, code);
    assert_eq!(
        faults.writes_seen(),
        writes,
        "{what}: close wrote after failing"
    );
    assert_eq!(
        faults.syncs_seen(),
        syncs,
        "{what}: close synced after failing"
    );
    assert!(
        file[..4 * PAGE] == durable[..4 * PAGE],
        "{what}: data forced before the fault is damaged"
    );
}

/// A write error during background write-back (no force waiting) is latched too: the
/// next write, force and close return it.
#[test]
fn background_write_error_reaches_the_next_call() {
    for backend in BACKENDS {
        watchdog("background error", 30, move || {
            let what = label(backend, false);
            let mut c = Case::with(backend, false, |cfg| {
                cfg.max_dirty_age(Duration::from_millis(1))
            });
            c.faults.fail_all_writes_from(0, libc::EIO);
            c.write_pages(0, 2, 1).unwrap();
            let faults = c.faults.clone();
            eventually("the background write fails", || {
                faults.injected().failed_writes > 0
            });
            eventually("the next write reports it", || {
                match c.h.write(100 * PAGE as u64, &[1u8; 10]) {
                    Ok(()) => {
                        c.model.resize(100 * PAGE + 10, 0);
                        c.model[100 * PAGE..].fill(1);
                        false
                    }
                    Err(e) => {
                        assert_eq!(errno(&e), Some(libc::EIO), "{what}: {e}");
                        true
                    }
                }
            });
            assert_err(&format!("{what}: force"), c.h.force(), libc::EIO);
            c.assert_shows_model(&what);
            let (r, ..) = c.close();
            assert_err(&format!("{what}: close"), r, libc::EIO);
        });
    }
}

// ------------------------------------------------------------------ fsync errors

/// An fsync error reaches `force` and latches: the fsync is never retried (a second force
/// and `close` return the error without another sync), writes are refused, reads work.
/// Both a linked fsync (one run) and a standalone one (two runs) are failed.
#[test]
fn fsync_errors_latch_and_are_never_retried() {
    for backend in BACKENDS {
        for (linked, code) in [(true, libc::EIO), (false, libc::EIO), (true, libc::ENOSPC)] {
            watchdog("fsync error", 30, move || {
                fsync_error(backend, linked, code)
            });
        }
    }
}

fn fsync_error(backend: Backend, linked: bool, code: i32) {
    let what = format!("{} linked {linked} errno {code}", label(backend, false));
    let mut c = Case::new(backend, false);
    c.write_pages(0, 4, 1).unwrap();
    if !linked {
        c.write_pages(64, 4, 1).unwrap(); // a second, separate run: the sync stands alone
    }
    c.faults.inject_sync(0, code);
    assert_err(&format!("{what}: force"), c.h.force(), code);
    assert_eq!(c.faults.injected().failed_syncs, 1, "{what}");
    assert_eq!(c.faults.syncs_seen(), 1, "{what}");
    let writes = c.faults.writes_seen();

    assert_err(&format!("{what}: second force"), c.h.force(), code);
    assert_err(
        &format!("{what}: force_range"),
        c.h.force_range(0, 10),
        code,
    );
    assert_err(&format!("{what}: write"), c.h.write(0, &[1u8; 100]), code);
    c.assert_shows_model(&format!("{what}: reads after the failure"));
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        c.faults.syncs_seen(),
        1,
        "{what}: the failed fsync was retried"
    );
    let faults = c.faults.clone();
    let (r, ..) = c.close();
    assert_err(&format!("{what}: close"), r, code);
    assert_eq!(faults.syncs_seen(), 1, "{what}: close retried the fsync");
    assert_eq!(faults.writes_seen(), writes, "{what}: close wrote again");
}

// ------------------------------------------------------------------ ECANCELED

/// A short write on a single-run force cancels the fsync linked behind it (`ECANCELED`,
/// as an io_uring link chain does): `force` must not count that as durable. It returns Ok
/// only after the remainder was written and a fresh fsync succeeded.
#[test]
fn cancelled_linked_fsync_is_followed_by_a_fresh_one() {
    for backend in BACKENDS {
        for direct in [false, true] {
            watchdog("ECANCELED", 30, move || {
                let what = label(backend, direct);
                let mut c = Case::new(backend, direct);
                c.write_pages(0, 8, 1).unwrap();
                c.faults.inject_write(0, Fault::Short { bytes: 3 * 4096 });
                c.h.force().unwrap_or_else(|e| panic!("{what}: {e}"));
                let st = c.h.stats();
                let inj = c.faults.injected();
                assert_eq!(
                    inj.cancelled_syncs, 1,
                    "{what}: the linked sync was not cancelled"
                );
                assert_eq!(st.cancelled_fsyncs, 1, "{what}: stats.cancelled_fsyncs");
                assert_eq!(
                    c.faults.writes_seen(),
                    2,
                    "{what}: short write, then the rest"
                );
                assert_eq!(
                    c.faults.syncs_seen(),
                    1,
                    "{what}: a fresh fsync after the remainder"
                );
                assert_eq!(st.fsyncs, 1, "{what}: force returned on the cancelled sync");
                assert_eq!(st.bytes_written, 8 * PAGE as u64, "{what}");

                // The same with an EAGAIN on the linked write (the chain breaks too), and
                // then a failure of the fresh fsync, which must reach force.
                c.write_pages(8, 8, 1).unwrap();
                c.faults.inject_write(0, Fault::Errno(libc::EAGAIN));
                c.faults.inject_sync(0, libc::EIO);
                assert_err(
                    &format!("{what}: fresh fsync fails"),
                    c.h.force(),
                    libc::EIO,
                );
                assert_eq!(c.faults.injected().cancelled_syncs, 2, "{what}");
                assert_eq!(c.h.stats().cancelled_fsyncs, 2, "{what}");
                let (r, file, model, _) = c.close();
                assert_err(&format!("{what}: close"), r, libc::EIO);
                assert!(file == model, "{what}: the file lacks the resumed write");
            });
        }
    }
}

// ------------------------------------------------------------------ no waiter left behind

/// Many threads writing and forcing when write-back starts failing: every one of them
/// returns, with the errno, and every call after that fails too.
#[test]
fn many_forcers_all_get_the_error() {
    for backend in BACKENDS {
        for sync_fault in [false, true] {
            watchdog("many forcers", 60, move || {
                many_forcers(backend, sync_fault)
            });
        }
    }
}

fn many_forcers(backend: Backend, sync_fault: bool) {
    let what = format!("{} sync fault {sync_fault}", label(backend, false));
    let c = Case::with(backend, false, |cfg| {
        cfg.max_dirty_age(Duration::from_millis(1))
    });
    if sync_fault {
        c.faults.fail_all_syncs_from(5, libc::EIO);
    } else {
        c.faults.fail_all_writes_from(30, libc::EIO);
    }
    let h = Arc::new(c.h);
    const THREADS: u64 = 16;
    let start = Arc::new(Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (h, start) = (h.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut oks = 0u64;
                let err = loop {
                    let off = (t * 1000 + oks % 1000) * PAGE as u64;
                    let r = h.write(off, &pages(t, 1, oks)).and_then(|()| h.force());
                    match r {
                        Ok(()) => oks += 1,
                        Err(e) => break e,
                    }
                    assert!(oks < 100_000, "no error after {oks} forces");
                };
                // Latched: the next calls fail at once.
                let again = h.force().err().and_then(|e| errno(&e));
                let write = h.write(0, &[1]).err().and_then(|e| errno(&e));
                (errno(&err), again, write, oks)
            })
        })
        .collect();
    let mut total_ok = 0;
    for w in workers {
        let (first, again, write, oks) = w.join().unwrap();
        assert_eq!(first, Some(libc::EIO), "{what}: first error");
        assert_eq!(again, Some(libc::EIO), "{what}: force after the error");
        assert_eq!(write, Some(libc::EIO), "{what}: write after the error");
        total_ok += oks;
    }
    let h = Arc::into_inner(h).expect("all workers joined");
    assert_err(&format!("{what}: close"), h.close(), libc::EIO);
    eprintln!("{what}: {total_ok} forces succeeded before the fault");
}

/// A forcer that leads a commit runs the writes and the sync on its own thread; a sync
/// that fails there reaches every forcer waiting, whether it was in the leader's group or
/// waiting for the next, and latches. And a write fault on the leader's thread cancels
/// its sync (not durable) and latches too.
#[test]
fn a_failure_on_the_leaders_thread_reaches_every_follower() {
    for backend in BACKENDS {
        for sync_fault in [true, false] {
            watchdog("leader failure", 60, move || {
                leader_failure(backend, sync_fault)
            });
        }
    }
}

/// `Mutation::SkipSyncs` (the deliberate bug tests/power_loss.rs must catch) also skips
/// the sync a forcer runs on its own thread: a lone commit leads and no sync runs.
#[test]
fn skip_syncs_mutation_skips_a_leaders_sync_too() {
    for backend in BACKENDS {
        let c = Case::with(backend, false, |c| c.preallocate(0));
        c.faults.mutate(Mutation::SkipSyncs);
        for i in 0..3u8 {
            c.h.append(&[i; 512]).unwrap();
            c.h.force().unwrap();
        }
        let st = c.h.stats();
        assert_eq!(st.leader_syncs, 3, "{backend:?}: lone forcers lead");
        assert_eq!(
            c.faults.syncs_seen(),
            0,
            "{backend:?}: a sync ran (skipped syncs are not counted)"
        );
        c.h.close().unwrap();
    }
}

fn leader_failure(backend: Backend, sync_fault: bool) {
    let what = format!("{} sync fault {sync_fault}", label(backend, false));
    // No preallocation: appends crossing into a zero fill still in flight wait for it and
    // are then written by the engine, not led (see `barrier.rs`).
    let c = Case::with(backend, false, |c| c.preallocate(0));
    // A first commit led by this thread: nothing injected yet.
    c.h.append(&[1u8; 512]).unwrap();
    c.h.force().unwrap();
    assert_eq!(c.h.stats().leader_syncs, 1, "{what}: a lone forcer leads");
    let syncs_before = c.faults.syncs_seen();
    if sync_fault {
        c.faults.inject_sync(0, libc::EIO);
    } else {
        c.faults.inject_write(0, Fault::Errno(libc::EIO));
    }
    const THREADS: usize = 8;
    let h = Arc::new(c.h);
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (h, start) = (h.clone(), start.clone());
            thread::spawn(move || {
                h.append(&[t as u8; 512]).unwrap();
                start.wait();
                h.force().err().and_then(|e| errno(&e))
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), Some(libc::EIO), "{what}: a forcer");
    }
    let st = h.stats();
    // Every sync after the first ran on a forcer's thread (the engine synced nothing).
    assert!(st.leader_syncs >= 2, "{what}: no leader");
    let ran = c.faults.syncs_seen() - syncs_before;
    assert!(
        ran < st.leader_syncs,
        "{what}: {ran} syncs ran, {} of them by leaders",
        st.leader_syncs - 1
    );
    if !sync_fault {
        assert_eq!(c.faults.injected().cancelled_syncs, 1, "{what}");
        assert_eq!(ran, 0, "{what}: a sync ran after its write failed");
    }
    let h = Arc::into_inner(h).unwrap();
    assert_err(&format!("{what}: close"), h.close(), libc::EIO);
}

/// Writers blocked on backpressure (the block budget spent, write-back failing) are woken
/// with the errno instead of waiting for space that will never be freed.
#[test]
fn writers_blocked_on_backpressure_get_the_error() {
    for backend in BACKENDS {
        watchdog("backpressure", 30, move || {
            let what = label(backend, false);
            // 8 blocks, and a byte budget far above what 8 pages take, so write-back starts
            // only because a writer waits for space (or on force/close).
            let mut c = Case::with(backend, false, |cfg| {
                cfg.max_blocks(8).buffer_bytes(64 << 20)
            });
            c.faults.fail_all_writes_from(0, libc::EIO);
            for p in 0..8 {
                // 8 separate buffers: 5 pages are too many to pack into a shared one.
                c.write_pages(p * 6, 5, 1).unwrap();
            }
            let h = Arc::new(c.h);
            let blocked: Vec<_> = (0..3u64)
                .map(|t| {
                    let h = h.clone();
                    thread::spawn(move || {
                        let r = h.write((100 + t) * PAGE as u64, &pages(100 + t, 1, 1));
                        r.err().and_then(|e| errno(&e))
                    })
                })
                .collect();
            for b in blocked {
                assert_eq!(
                    b.join().unwrap(),
                    Some(libc::EIO),
                    "{what}: a blocked writer got no error"
                );
            }
            assert!(c.faults.injected().failed_writes >= 1, "{what}");
            // The 8 buffered pages are still readable; nothing else was stored.
            let mut all = vec![0u8; c.model.len()];
            h.read(0, &mut all).unwrap();
            assert!(all == c.model, "{what}: buffered pages lost");
            assert_eq!(h.end_position(), c.model.len() as u64, "{what}: end moved");
            let h = Arc::into_inner(h).unwrap();
            assert_err(&format!("{what}: close"), h.close(), libc::EIO);
        });
    }
}

/// Dropping a failed handle (instead of closing it) neither hangs nor panics.
#[test]
fn dropping_a_failed_handle_returns() {
    for backend in BACKENDS {
        watchdog("drop", 30, move || {
            let mut c = Case::new(backend, false);
            c.faults.fail_all_writes_from(0, libc::ENOSPC);
            c.write_pages(0, 3, 1).unwrap();
            assert_err("force", c.h.force(), libc::ENOSPC);
            drop(c); // prints the error to stderr, joins the submission thread
        });
    }
}
