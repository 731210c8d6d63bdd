//! The log's file space: `truncate_start` punches holes below the new start, so a log
//! that appends at its end and truncates at its start keeps a bounded allocation; the
//! handle keeps zero-filled space ready past its end (preallocation) and trims it at
//! close; size changes (`set_len`'s ftruncate, punches, zero fills) that fail are counted
//! or latched.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use writebehind::{Config, Handle, WriteBehindFile};

/// The acceptance test of the concurrent stress: after appends, writes, `truncate_start`
/// and forces from many threads, then `close`, the file's allocated bytes are at most
/// twice the live range plus the 1 MiB preallocation window, and punching freed
/// something.
#[test]
fn concurrent_stress_keeps_the_allocation_near_the_live_range() {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    let window = 1 << 20;
    let cfg = Config::default().preallocate(window as usize);
    let h = Arc::new(WriteBehindFile::create(&path, &cfg).unwrap());
    let (_, threads, ops) = common::sizes();
    let seed = common::seed("file_space");
    common::concurrent_ops(&*h, 1, seed, threads, ops);
    // The stress truncates at random points; finish the way a log does, trimming to near
    // its end, so that most of the file lies below the start.
    let end = h.end_position();
    h.truncate_start(end - end / 8).unwrap();
    let live = h.end_position() - h.start_position();
    let h = Arc::into_inner(h).unwrap();
    let stats = h.close().unwrap();
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    eprintln!(
        "file {end} bytes, live {live}, allocated {allocated}, punched {}, refused {}",
        stats.bytes_punched, stats.punches_refused
    );
    assert!(stats.bytes_punched > 0, "nothing was punched");
    assert!(
        allocated <= 2 * (live + window),
        "allocated {allocated} bytes for a live range of {live} (seed {seed})"
    );
}

/// Appends land in zero-filled space inside the file's size: while open the file is
/// longer than the end (by at most the window), `close` trims it to the end, and a
/// reopened handle sees exactly the data.
#[test]
fn preallocated_space_is_kept_ahead_and_trimmed_at_close() {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    let window = 256 << 10;
    let cfg = Config::default().preallocate(window);
    let h = WriteBehindFile::create(&path, &cfg).unwrap();
    let mut model = Vec::new();
    let mut longer = 0;
    for i in 0..2000u32 {
        let rec = common::pattern(i as u64, 500);
        h.append(&rec).unwrap();
        model.extend_from_slice(&rec);
        if i % 50 == 49 {
            h.force().unwrap();
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= h.end_position() + 2 * window as u64, "{len}");
            longer += usize::from(len > h.end_position());
        }
    }
    assert!(
        longer > 20,
        "the file was longer than the end only {longer} of 40 times"
    );
    let stats = h.close().unwrap();
    assert!(
        stats.bytes_preallocated >= model.len() as u64,
        "{}",
        stats.bytes_preallocated
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), model.len() as u64);
    let h = WriteBehindFile::open(&path, &cfg).unwrap();
    assert_eq!(h.end_position(), model.len() as u64);
    assert_eq!(common::snapshot(&h).bytes, model);
    h.close().unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        model.len() as u64,
        "reopen wrote"
    );
}

/// Without punching the same log keeps everything allocated (so the test above measures
/// the punching, not the file system).
#[test]
fn without_punching_the_log_keeps_its_space() {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    let h = WriteBehindFile::create(&path, &Config::default().punch_holes(false)).unwrap();
    for _ in 0..64 {
        h.append(&[1u8; 64 << 10]).unwrap();
    }
    h.force().unwrap(); // written: truncate_start drops blocks still buffered
    h.truncate_start(h.end_position() - 4096).unwrap();
    let stats = h.close().unwrap();
    assert_eq!(stats.bytes_punched, 0);
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= 4 << 20);
}

#[cfg(feature = "fault-injection")]
mod faults {
    use super::*;
    use writebehind::fault::FaultInjector;

    /// Waits (up to 60 s) until `n` size changes took their injected fault.
    fn wait_for_failed_size_changes(faults: &FaultInjector, n: u64) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while faults.injected().failed_size_changes < n {
            assert!(
                std::time::Instant::now() < until,
                "the size change was never issued"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn open(faults: &FaultInjector) -> (tempfile::TempDir, WriteBehindFile) {
        let dir = common::tempdir();
        // No preallocation: its zero fills would take the injected faults first.
        let cfg = Config::default()
            .fault_injector(faults.clone())
            .preallocate(0);
        let h = WriteBehindFile::create(dir.path().join("f"), &cfg).unwrap();
        (dir, h)
    }

    /// A punch refused with EOPNOTSUPP or ENOSPC is counted; the handle carries on and
    /// loses nothing (after EOPNOTSUPP it stops punching).
    #[test]
    fn refused_punches_are_counted_and_lose_nothing() {
        for errno in [libc::ENOSPC, libc::EOPNOTSUPP] {
            let faults = FaultInjector::new();
            let (_d, h) = open(&faults);
            faults.inject_size_change(0, errno);
            h.write(0, &[3u8; 64 << 10]).unwrap();
            h.force().unwrap();
            h.truncate_start(32 << 10).unwrap();
            h.write(64 << 10, &[4u8; 8192]).unwrap();
            h.force().unwrap();
            // The punch is the submitter's (a force may lead its own commit past it): wait
            // for it, or the next truncate_start extends it instead of queueing another.
            wait_for_failed_size_changes(&faults, 1);
            h.truncate_start(48 << 10).unwrap();
            h.force().unwrap();
            let mut buf = vec![0u8; 16 << 10];
            h.read(48 << 10, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 3));
            let stats = h.close().unwrap();
            assert_eq!(faults.injected().failed_size_changes, 1, "errno {errno}");
            assert_eq!(stats.punches_refused, 1, "errno {errno}");
            if errno == libc::ENOSPC {
                assert!(stats.bytes_punched > 0, "punching stopped after ENOSPC");
            } else {
                assert_eq!(stats.bytes_punched, 0, "punching went on after EOPNOTSUPP");
            }
        }
    }

    /// A zero fill refused with ENOSPC or EOPNOTSUPP is counted and preallocation stops;
    /// nothing is lost and the file ends at the data after close. EIO latches.
    #[test]
    fn refused_zero_fills_are_counted_and_eio_latches() {
        for errno in [libc::ENOSPC, libc::EOPNOTSUPP, libc::EIO] {
            let faults = FaultInjector::new();
            let dir = common::tempdir();
            let path = dir.path().join("f");
            let cfg = Config::default().fault_injector(faults.clone());
            let h = WriteBehindFile::create(&path, &cfg).unwrap();
            faults.inject_size_change(0, errno); // the first zero fill
            let mut r = Ok(());
            for i in 0..100u64 {
                r = r.and_then(|()| h.append(&common::pattern(i, 4096)).map(drop));
                r = r.and_then(|()| h.force());
            }
            let end = h.end_position();
            if errno == libc::EIO {
                assert_eq!(common::err_of("appends and forces", r), libc::EIO);
                assert_eq!(common::err_of("close", h.close()), libc::EIO);
                continue;
            }
            r.unwrap();
            let stats = h.close().unwrap();
            assert_eq!(faults.injected().failed_size_changes, 1, "errno {errno}");
            assert_eq!(stats.prealloc_refused, 1, "errno {errno}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                end,
                "errno {errno}"
            );
            let got = std::fs::read(&path).unwrap();
            for i in 0..100u64 {
                let at = i as usize * 4096;
                assert_eq!(
                    got[at..at + 4096],
                    common::pattern(i, 4096),
                    "errno {errno}"
                );
            }
        }
    }

    /// EIO from a punch or a set_len's ftruncate latches like any I/O error.
    #[test]
    fn eio_from_a_size_change_latches() {
        for punch in [true, false] {
            let faults = FaultInjector::new();
            let (_d, h) = open(&faults);
            h.write(0, &[3u8; 64 << 10]).unwrap();
            h.force().unwrap();
            faults.inject_size_change(0, libc::EIO);
            if punch {
                h.truncate_start(32 << 10).unwrap();
                // A punch promises nothing about durability, so a force need not wait for
                // it (and may lead its own commit meanwhile): wait until it failed.
                wait_for_failed_size_changes(&faults, 1);
            } else {
                h.set_len(1000).unwrap();
            }
            if punch {
                // A punch changes no byte a force covers, so a force need not wait for
                // it: it runs in the background, and its EIO latches when it completes.
                let deadline = Instant::now() + Duration::from_secs(10);
                while h.failure().is_none() && Instant::now() < deadline {
                    let _ = h.force();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let r = h.force();
            assert_eq!(
                common::err_of("force after EIO", r),
                libc::EIO,
                "punch {punch}"
            );
            assert_eq!(common::err_of("close", h.close()), libc::EIO);
        }
    }
}
