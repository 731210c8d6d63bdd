//! An idle handle costs nothing: after a force, after a background flush and after a
//! failure, the handle's threads sleep until woken (no timer), on both engines.
//!
//! Measured per thread from `/proc/self/task/<tid>/status` (voluntary context switches)
//! and `/proc/self/task/<tid>/schedstat` (nanoseconds on a CPU) over one idle second. A
//! thread that polls every 25 ms makes 40 switches in that second, so the bound of 2
//! catches it (`a_polling_thread_fails_the_check` shows the check itself works).
//!
//! The handle's threads are those that appear in `/proc/self/task` while it opens; the
//! cases run one at a time (a lock), so no other test's threads are mistaken for them.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use writebehind::{Backend, Config, Handle, WriteBehindFile};

const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Threads];
const MAX_SWITCHES: u64 = 2;
const MAX_CPU: Duration = Duration::from_millis(1);

/// One case at a time: thread discovery diffs the process's task list.
static SERIAL: Mutex<()> = Mutex::new(());

fn tasks() -> BTreeSet<u32> {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// (voluntary context switches, CPU time) of thread `tid` so far; `None` once it exited.
fn usage(tid: u32) -> Option<(u64, Duration)> {
    let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let switches = status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()?;
    let sched = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns = sched.split_whitespace().next()?.parse().ok()?;
    Some((switches, Duration::from_nanos(ns)))
}

fn name(tid: u32) -> String {
    fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What each thread in `tids` did over one idle second: (tid, name, switches, CPU).
fn idle_second(tids: &BTreeSet<u32>) -> Vec<(u32, String, u64, Duration)> {
    let before: Vec<_> = tids.iter().map(|&t| (t, usage(t))).collect();
    thread::sleep(Duration::from_secs(1));
    before
        .into_iter()
        .filter_map(|(t, b)| {
            let (s0, c0) = b?;
            let (s1, c1) = usage(t)?;
            Some((t, name(t), s1 - s0, c1 - c0))
        })
        .collect()
}

fn assert_idle(what: &str, tids: &BTreeSet<u32>) {
    let seen = idle_second(tids);
    assert!(!seen.is_empty(), "{what}: no thread of the handle found");
    for (tid, name, switches, cpu) in seen {
        eprintln!("{what}: thread {tid} ({name}): {switches} switches, {cpu:?} CPU");
        assert!(
            switches <= MAX_SWITCHES && cpu < MAX_CPU,
            "{what}: thread {tid} ({name}) was not idle: {switches} voluntary context \
             switches and {cpu:?} of CPU in one idle second"
        );
    }
}

fn config(backend: Backend) -> Config {
    // The default dirty age (5 ms): a background flush comes from its timer.
    Config::default().backend(backend)
}

/// Opens a handle with `cfg`, runs `setup` on it, lets it settle and checks its threads
/// over one idle second.
fn check(what: &str, cfg: Config, setup: impl FnOnce(&WriteBehindFile)) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let before = tasks();
    let h = WriteBehindFile::create(dir.path().join("data"), &cfg).unwrap();
    let mine: BTreeSet<u32> = tasks().difference(&before).copied().collect();
    assert!(
        mine.iter().any(|&t| name(t).starts_with("writebehind-sub")),
        "{what}: the submission thread was not found among {mine:?}"
    );
    setup(&h);
    // Let timers already due (the gather window, the dirty age) expire.
    thread::sleep(Duration::from_millis(50));
    assert_idle(what, &mine);
    drop(h);
}

#[test]
fn idle_after_force() {
    for backend in BACKENDS {
        check(&format!("{backend:?} after force"), config(backend), |h| {
            for i in 0..10u64 {
                h.append(&[i as u8; 512]).unwrap();
                h.force().unwrap();
            }
        });
    }
}

#[test]
fn idle_after_background_flush() {
    for backend in BACKENDS {
        check(&format!("{backend:?} after flush"), config(backend), |h| {
            h.write(0, &[7u8; 8192]).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while h.stats().bytes_written < 8192 {
                assert!(Instant::now() < deadline, "the dirty-age flush never came");
                thread::sleep(Duration::from_millis(1));
            }
        });
    }
}

#[cfg(feature = "fault-injection")]
#[test]
fn idle_after_failure() {
    use writebehind::fault::{Fault, FaultInjector};
    for backend in BACKENDS {
        let faults = FaultInjector::new();
        let cfg = config(backend).fault_injector(faults.clone());
        check(&format!("{backend:?} after failure"), cfg, |h| {
            h.write(0, &[1u8; 4096]).unwrap();
            h.force().unwrap();
            faults.inject_write(0, Fault::Errno(libc::EIO));
            h.write(0, &[2u8; 4096]).unwrap();
            assert!(h.force().is_err());
            // Dirty data stays buffered after the failure: it must not arm a timer.
            assert!(h.write(8192, &[3u8; 4096]).is_err());
        });
    }
}

/// The check itself: a thread waking every 25 ms fails it.
#[test]
fn a_polling_thread_fails_the_check() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = tasks();
    let poller = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(25));
            }
        })
    };
    thread::sleep(Duration::from_millis(10));
    let mine: BTreeSet<u32> = tasks().difference(&before).copied().collect();
    let r = std::panic::catch_unwind(|| assert_idle("25 ms poller", &mine));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
    assert!(
        r.is_err(),
        "a thread polling every 25 ms passed the idle check"
    );
}
