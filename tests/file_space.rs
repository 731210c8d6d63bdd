//! The log's file space: `truncate_start` punches holes below the new start, so a log
//! that appends at its end and truncates at its start keeps a bounded allocation; size
//! changes (`set_len`'s ftruncate, the punches) that fail are counted or latched.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use writebehind::{Config, Handle, WriteBehindFile};

/// The acceptance test of the concurrent stress: after appends, writes, `truncate_start`
/// and forces from many threads, then `close`, the file's allocated bytes are at most
/// twice the live range plus a 1 MiB allowance (this handle has no preallocation window
/// yet; the allowance is the window the acceptance test names), and punching freed
/// something.
#[test]
fn concurrent_stress_keeps_the_allocation_near_the_live_range() {
    let dir = common::tempdir();
    let path = dir.path().join("log");
    let h = Arc::new(WriteBehindFile::create(&path, &Config::default()).unwrap());
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
    let window = 1 << 20;
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
    h.truncate_start(h.end_position() - 4096).unwrap();
    let stats = h.close().unwrap();
    assert_eq!(stats.bytes_punched, 0);
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= 4 << 20);
}

#[cfg(feature = "fault-injection")]
mod faults {
    use super::*;
    use writebehind::fault::FaultInjector;

    fn open(faults: &FaultInjector) -> (tempfile::TempDir, WriteBehindFile) {
        let dir = common::tempdir();
        let cfg = Config::default().fault_injector(faults.clone());
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
            h.force().unwrap(); // the punch went out before or with this pass
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
            } else {
                h.set_len(1000).unwrap();
            }
            let r = h.force();
            let r = if punch {
                r.and_then(|()| {
                    h.write(70_000, b"x")?;
                    h.force()
                })
            } else {
                r
            };
            assert_eq!(
                common::err_of("force after EIO", r),
                libc::EIO,
                "punch {punch}"
            );
            assert_eq!(common::err_of("close", h.close()), libc::EIO);
        }
    }
}
