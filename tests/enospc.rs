//! A real `ENOSPC`: a 16 MiB ext4 image mounted through a loop device, filled through a
//! `WriteBehindFile` in forced rounds until the filesystem is full.
//!
//! Checks: the error that ends the rounds is `ENOSPC` (from `force`, or from a write once
//! the background write-back has latched it); `force`, writes and `close` keep returning
//! it; every byte written stays readable through the handle (unwritten ones from its
//! buffers); and after unmounting and mounting the image again, every round forced before
//! the fault reads back intact.
//!
//! Needs root, `mkfs.ext4` and loop devices. Where they are missing the test prints why
//! and passes, except under `CI=true`, where it fails: CI must run it.

mod common;

use std::path::Path;

use common::loopfs::LoopFs;
use common::pattern;
use writebehind::{errno, Backend, Config, Handle, WriteBehindFile};

const IMAGE_BYTES: u64 = 16 << 20;
const PAGE: usize = 4096;
/// Pages appended per forced round (256 KiB).
const ROUND_PAGES: u64 = 64;

/// The filesystem, or `None` after printing why it cannot be had (a failure under CI).
fn loop_fs(what: &str) -> Option<LoopFs> {
    common::loopfs::loop_fs(what, "ext4", IMAGE_BYTES)
}

fn page(n: u64) -> Vec<u8> {
    pattern(n.wrapping_mul(0x9E37_79B9) ^ 0xE05, PAGE)
}

#[track_caller]
fn assert_enospc<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Ok(v) => panic!("{what}: expected ENOSPC, got Ok({v:?})"),
        Err(e) => assert_eq!(errno(&e), Some(libc::ENOSPC), "{what}: {e}"),
    }
}

fn fill_until_enospc(backend: Backend, direct: bool) {
    let what = format!("ENOSPC {backend:?}{}", if direct { " direct" } else { "" });
    let Some(mut fs) = loop_fs(&what) else { return };
    let path = fs.mnt().join("data");
    let cfg = Config::default().backend(backend).direct_io(direct);
    let h = WriteBehindFile::create(&path, &cfg).unwrap();
    let max_rounds = 2 * IMAGE_BYTES / (ROUND_PAGES * PAGE as u64);
    let mut pages = 0u64; // pages appended (accepted by the handle)
    let mut forced_rounds = 0u64;
    let (err, from) = 'fill: loop {
        assert!(
            forced_rounds < max_rounds,
            "{what}: no error after writing twice the filesystem's size"
        );
        for _ in 0..ROUND_PAGES {
            match h.append(&page(pages)) {
                Ok(at) => assert_eq!(at, pages * PAGE as u64),
                Err(e) => break 'fill (e, "append"),
            }
            pages += 1;
        }
        match h.force() {
            Ok(()) => forced_rounds += 1,
            Err(e) => break (e, "force"),
        }
    };
    eprintln!(
        "{what}: {from} failed after {forced_rounds} forced rounds ({} KiB), {pages} pages \
         accepted: {err}",
        forced_rounds * ROUND_PAGES * PAGE as u64 / 1024
    );
    assert_eq!(errno(&err), Some(libc::ENOSPC), "{what}: {from}: {err}");
    assert!(forced_rounds > 0, "{what}: the very first round failed");

    // Latched: every later write and force fails with it; nothing changes.
    assert_enospc(&format!("{what}: force again"), h.force());
    assert_enospc(&format!("{what}: write"), h.write(0, &page(0)));
    assert_enospc(&format!("{what}: append"), h.append(&page(0)));
    assert_eq!(h.end_position(), pages * PAGE as u64, "{what}: end moved");
    // Every accepted page reads back through the handle, the unwritten ones included.
    let mut buf = vec![0u8; PAGE];
    for p in 0..pages {
        h.read(p * PAGE as u64, &mut buf).unwrap();
        assert!(
            buf == page(p),
            "{what}: page {p} reads back wrong after the fault"
        );
    }
    assert_enospc(&format!("{what}: close"), h.close());

    // Everything forced before the fault is on the filesystem, after a remount.
    fs.unmount().unwrap();
    fs.mount().unwrap();
    let file = std::fs::read(&path).unwrap();
    let forced = (forced_rounds * ROUND_PAGES) as usize;
    assert!(
        file.len() >= forced * PAGE,
        "{what}: the file has {} bytes, {} were forced",
        file.len(),
        forced * PAGE
    );
    for (p, got) in file.chunks(PAGE).take(forced).enumerate() {
        assert!(
            got == page(p as u64),
            "{what}: forced page {p} is damaged after remount"
        );
    }
    drop(fs);
    assert!(!Path::new(&path).exists(), "{what}: still mounted");
}

#[test]
fn enospc_on_a_full_ext4_io_uring() {
    fill_until_enospc(Backend::IoUring, false);
}

#[test]
fn enospc_on_a_full_ext4_threads() {
    fill_until_enospc(Backend::Threads, false);
}

#[test]
fn enospc_on_a_full_ext4_io_uring_direct() {
    fill_until_enospc(Backend::IoUring, true);
}

#[test]
fn enospc_on_a_full_ext4_threads_direct() {
    fill_until_enospc(Backend::Threads, true);
}
