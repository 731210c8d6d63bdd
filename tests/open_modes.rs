//! Opening: the four `OpenMode`s on both file-backed handles, and the exclusive `flock`
//! every opener takes by default (a second handle, in this process or another, gets
//! `EWOULDBLOCK` and changes nothing; `Config::lock_file(false)` opts out).

mod common;

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::pattern;
use writebehind::{errno, Backend, Config, FileHandle, Handle, OpenMode, WriteBehindFile};

/// Held by every test of this file for its whole run. A `fork` (the `flock(1)` check
/// spawns a process) copies every descriptor of this process into the child until it
/// execs, the descriptors holding file locks included: a test that closed a handle and
/// reopened its file while another test forked would see `EWOULDBLOCK` from a lock the
/// child briefly shares.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens `path` as `mode` with one of the handle kinds and returns it as a `Handle`.
type Opener = fn(&Path, &Config, OpenMode) -> io::Result<Box<dyn Handle>>;

fn openers() -> Vec<(&'static str, Opener)> {
    vec![
        ("wb io_uring", |p, c, m| {
            let c = c.clone().backend(Backend::IoUring);
            Ok(Box::new(WriteBehindFile::open_with(p, &c, m)?))
        }),
        ("wb threads", |p, c, m| {
            let c = c.clone().backend(Backend::Threads);
            Ok(Box::new(WriteBehindFile::open_with(p, &c, m)?))
        }),
        ("file", |p, c, m| {
            Ok(Box::new(FileHandle::open_with(p, c, m)?))
        }),
    ]
}

/// What each mode does with a missing file and with an existing one.
#[test]
fn each_mode_creates_keeps_or_truncates_as_documented() {
    let _serial = serial();
    let cfg = Config::default();
    let old = pattern(1, 5000);
    for (name, open) in openers() {
        let dir = common::tempdir();
        let missing = dir.path().join("missing");
        let existing = dir.path().join("existing");
        let reset = || std::fs::write(&existing, &old).unwrap();

        let e = open(&missing, &cfg, OpenMode::Existing).err().expect(name);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{name}: {e}");
        assert!(!missing.exists(), "{name}: Existing created the file");
        reset();
        let h = open(&existing, &cfg, OpenMode::Existing).unwrap();
        assert_eq!(h.end_position(), 5000, "{name}: Existing kept the bytes");
        drop(h);

        let h = open(&missing, &cfg, OpenMode::CreateOrOpen).unwrap();
        assert_eq!(h.end_position(), 0, "{name}");
        drop(h);
        std::fs::remove_file(&missing).unwrap();
        let h = open(&existing, &cfg, OpenMode::CreateOrOpen).unwrap();
        assert_eq!(
            h.end_position(),
            5000,
            "{name}: CreateOrOpen kept the bytes"
        );
        drop(h);

        let h = open(&existing, &cfg, OpenMode::CreateOrTruncate).unwrap();
        assert_eq!(h.end_position(), 0, "{name}: CreateOrTruncate");
        drop(h);
        assert_eq!(std::fs::metadata(&existing).unwrap().len(), 0, "{name}");

        reset();
        let e = open(&existing, &cfg, OpenMode::CreateNew)
            .err()
            .expect(name);
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
        assert_eq!(errno(&e), Some(libc::EEXIST), "{name}");
        assert_eq!(std::fs::read(&existing).unwrap(), old, "{name}: touched");
        // A symlink is something that exists: refused, its target untouched.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&existing, &link).unwrap();
        let e = open(&link, &cfg, OpenMode::CreateNew).err().expect(name);
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
        assert_eq!(std::fs::read(&existing).unwrap(), old, "{name}: target");
        let h = open(&missing, &cfg, OpenMode::CreateNew).unwrap();
        h.write(0, b"new").unwrap();
        h.force().unwrap();
        drop(h);
        assert_eq!(std::fs::read(&missing).unwrap(), b"new", "{name}");
    }
}

/// Whether another process can take `flock(LOCK_EX|LOCK_NB)` on `path` now (flock(1),
/// util-linux).
fn another_process_can_lock(path: &Path) -> Option<bool> {
    let st = Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(path)
        .arg("true")
        .status()
        .ok()?;
    Some(st.success())
}

/// A second opener of a held file, with any handle kind and any mode, gets
/// `EWOULDBLOCK` and changes nothing (a truncating mode does not cut the holder's file);
/// another process cannot lock it either; once the holder is closed, opening works.
#[test]
fn a_second_opener_gets_ewouldblock_until_the_first_is_closed() {
    let _serial = serial();
    let cfg = Config::default();
    for (first, open_first) in openers() {
        let dir = common::tempdir();
        let path = dir.path().join("data");
        let data = pattern(2, 8192);
        let holder = open_first(&path, &cfg, OpenMode::CreateNew).unwrap();
        holder.write(0, &data).unwrap();
        holder.force().unwrap();
        for (second, open_second) in openers() {
            for mode in [
                OpenMode::Existing,
                OpenMode::CreateOrOpen,
                OpenMode::CreateOrTruncate,
            ] {
                let what = format!("{second} {mode} while {first} holds the file");
                let e = open_second(&path, &cfg, mode).err().expect(&what);
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{what}: {e}");
                assert_eq!(errno(&e), Some(libc::EWOULDBLOCK), "{what}");
            }
        }
        // The holder may keep zero-filled space past its end (`Config::preallocate`).
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk.len() >= data.len()
                && on_disk[..data.len()] == data[..]
                && on_disk[data.len()..].iter().all(|&b| b == 0),
            "{first}: file changed ({} bytes on disk)",
            on_disk.len()
        );
        match another_process_can_lock(&path) {
            Some(can) => assert!(!can, "{first}: another process could lock the file"),
            None => common::skip_or_fail("flock(1) check", "cannot run flock(1)"),
        }
        holder.force().unwrap();
        drop(holder);
        if let Some(can) = another_process_can_lock(&path) {
            assert!(can, "{first}: still locked after the handle was dropped");
        }
        let again = open_first(&path, &cfg, OpenMode::Existing).unwrap();
        assert_eq!(again.end_position(), 8192, "{first}");
    }
}

/// `close` releases the lock as dropping does.
#[test]
fn close_releases_the_lock() {
    let _serial = serial();
    let dir = common::tempdir();
    let path = dir.path().join("data");
    let cfg = Config::default();
    let h = WriteBehindFile::create(&path, &cfg).unwrap();
    h.close().unwrap();
    let f = FileHandle::open(&path, &cfg).unwrap();
    f.close().unwrap();
    WriteBehindFile::open(&path, &cfg).unwrap().close().unwrap();
}

/// With `lock_file(false)` on both sides, two handles open the same file (the caller's
/// own mechanism must then keep them apart); a locking opener still sees no lock.
#[test]
fn lock_file_false_opts_out() {
    let _serial = serial();
    let dir = common::tempdir();
    let path = dir.path().join("data");
    let off = Config::default().lock_file(false);
    assert!(!off.locks_file() && Config::default().locks_file());
    let a = WriteBehindFile::create(&path, &off).unwrap();
    let b = FileHandle::open(&path, &off).unwrap();
    let c = FileHandle::open(&path, &Config::default()).unwrap();
    let e = FileHandle::open(&path, &Config::default()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    drop((a, b, c));
}
