//! Huge lengths never abort, panic or wedge a handle, on every handle (`MemoryHandle`,
//! `FileHandle` buffered and direct, `WriteBehindFile` on both engines, buffered and
//! direct):
//!
//! - above the cap on one call's length (`Config::max_io_bytes`, default 1 GiB) every
//!   call fails at once with `EINVAL` and changes nothing;
//! - below it, a buffer the allocator cannot give fails with `ENOMEM` and changes nothing;
//! - each huge call is made twice (a leaked budget charge would make the second, or the
//!   next normal write, wait forever: every body runs under a watchdog), and a normal
//!   write, force and read work right after.

mod common;

use std::io;

use common::{pattern, read_vec, skip_or_fail, watchdog};
use writebehind::{
    errno, Backend, Config, FileHandle, Handle, MemoryHandle, WriteBehindFile, DEFAULT_MAX_IO_BYTES,
};

/// Every handle kind opened with `cfg` (plus its engine and `O_DIRECT` choices); calls
/// `body(name, handle, alignment)` on each, then closes it.
fn on_every_handle(cfg: Config, body: fn(&str, &dyn Handle, usize)) {
    let dir = common::tempdir();
    for backend in [Backend::IoUring, Backend::Threads] {
        for direct in [false, true] {
            let name = format!("wb {backend:?} direct {direct}");
            let c = cfg.clone().backend(backend).direct_io(direct);
            let h = WriteBehindFile::create(dir.path().join(&name), &c).unwrap();
            body(&name, &h, h.alignment());
            h.close().unwrap_or_else(|e| panic!("{name}: close: {e}"));
        }
    }
    for direct in [false, true] {
        let name = format!("file direct {direct}");
        let c = cfg.clone().direct_io(direct);
        let h = FileHandle::create(dir.path().join(&name), &c).unwrap();
        body(&name, &h, h.alignment());
        h.close().unwrap();
    }
    body(
        "memory",
        &MemoryHandle::with_max_io_bytes(cfg.io_len_cap()),
        1,
    );
}

/// `r` failed with `code` and the positions did not move.
#[track_caller]
fn refused<T>(what: &str, h: &dyn Handle, r: io::Result<T>, code: i32) {
    let (start, end) = (h.start_position(), h.end_position());
    match r {
        Ok(_) => panic!("{what}: succeeded"),
        Err(e) => assert_eq!(errno(&e), Some(code), "{what}: {e}"),
    }
    assert_eq!(
        (h.start_position(), h.end_position()),
        (start, end),
        "{what}"
    );
}

/// A normal write, force and read at `offset` still work.
#[track_caller]
fn still_works(what: &str, h: &dyn Handle, align: usize, offset: u64) {
    let blk = pattern(offset ^ 0x4B1D, 4096.max(align));
    h.write(offset, &blk)
        .unwrap_or_else(|e| panic!("{what}: write after: {e}"));
    h.force()
        .unwrap_or_else(|e| panic!("{what}: force after: {e}"));
    assert_eq!(
        read_vec(h, offset, blk.len()).unwrap(),
        blk,
        "{what}: read after"
    );
}

#[test]
fn calls_above_the_cap_fail_at_once_with_einval() {
    watchdog("above the cap", 120, || {
        on_every_handle(Config::default(), above_default_cap)
    });
}

fn above_default_cap(name: &str, h: &dyn Handle, align: usize) {
    still_works(name, h, align, 0);
    let huge = [
        1usize << 50,
        i64::MAX as usize - 8192,
        usize::MAX,
        DEFAULT_MAX_IO_BYTES + 1,
    ];
    for len in huge {
        for attempt in ["first", "second"] {
            let what = format!("{name}: {attempt} call of {len} bytes");
            refused(
                &format!("{what}: write_buffer"),
                h,
                h.write_buffer(0, len),
                libc::EINVAL,
            );
            refused(
                &format!("{what}: append_buffer"),
                h,
                h.append_buffer(len),
                libc::EINVAL,
            );
            refused(
                &format!("{what}: read_buffer"),
                h,
                h.read_buffer(0, len),
                libc::EINVAL,
            );
        }
        still_works(&format!("{name}: after {len} bytes"), h, align, 4096);
    }
}

/// `write`, `append` and `read` take the caller's slice, so the test lowers the cap to
/// make a slice longer than it.
#[test]
fn slices_longer_than_the_cap_fail_with_einval() {
    watchdog("slices above the cap", 120, || {
        on_every_handle(Config::default().max_io_bytes(1 << 20), above_small_cap)
    });
}

fn above_small_cap(name: &str, h: &dyn Handle, align: usize) {
    let cap = 1 << 20;
    let at_cap = pattern(7, cap);
    h.write(0, &at_cap)
        .unwrap_or_else(|e| panic!("{name}: a write of exactly the cap: {e}"));
    let over = vec![5u8; cap + align];
    for attempt in ["first", "second"] {
        let what = format!("{name}: {attempt}");
        refused(&format!("{what} write"), h, h.write(0, &over), libc::EINVAL);
        refused(&format!("{what} append"), h, h.append(&over), libc::EINVAL);
        let mut buf = vec![0u8; cap + align];
        refused(
            &format!("{what} read"),
            h,
            h.read(0, &mut buf),
            libc::EINVAL,
        );
        refused(
            &format!("{what} write_buffer"),
            h,
            h.write_buffer(0, cap + align),
            libc::EINVAL,
        );
    }
    assert_eq!(read_vec(h, 0, cap).unwrap(), at_cap, "{name}: data kept");
    still_works(name, h, align, cap as u64);
}

/// Below the cap (raised to 1 TiB here), a buffer of 1 TiB is more than the allocator
/// gives: `ENOMEM`, twice, then normal work. Linux's heuristic overcommit (mode 0) and
/// strict mode (2) refuse an allocation larger than RAM plus swap; mode 1 grants any, so
/// the test cannot run there.
#[test]
fn allocations_below_the_cap_fail_with_enomem() {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if mode.trim() == "1" {
        return skip_or_fail(
            "ENOMEM below the cap",
            "vm.overcommit_memory = 1 grants any allocation",
        );
    }
    watchdog("ENOMEM below the cap", 120, || {
        on_every_handle(Config::default().max_io_bytes(1 << 40), below_cap)
    });
}

fn below_cap(name: &str, h: &dyn Handle, align: usize) {
    let tib = 1usize << 40;
    still_works(name, h, align, 0);
    for attempt in ["first", "second"] {
        let what = format!("{name}: {attempt}");
        refused(
            &format!("{what} write_buffer"),
            h,
            h.write_buffer(0, tib),
            libc::ENOMEM,
        );
        refused(
            &format!("{what} append_buffer"),
            h,
            h.append_buffer(tib),
            libc::ENOMEM,
        );
    }
    still_works(&format!("{name}: after write buffers"), h, align, 4096);
    // A block at 1 TiB makes [0, 1 TiB] readable; a buffer for all of it is too much.
    let blk = pattern(3, 4096.max(align));
    match h.write(tib as u64, &blk) {
        Ok(()) => {
            for attempt in ["first", "second"] {
                refused(
                    &format!("{name}: {attempt} read_buffer of 1 TiB"),
                    h,
                    h.read_buffer(0, tib),
                    libc::ENOMEM,
                );
            }
            assert_eq!(read_vec(h, tib as u64, blk.len()).unwrap(), blk, "{name}");
        }
        // The memory handle would have to hold 1 TiB to store it.
        Err(e) => assert_eq!(errno(&e), Some(libc::ENOMEM), "{name}: write at 1 TiB: {e}"),
    }
    still_works(&format!("{name}: after read_buffer"), h, align, 8192);
}
