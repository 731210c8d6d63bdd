//! The file system through a real mount (needs root or fusermount3, and /dev/fuse).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use powercut::{Delays, Model, PowerCut};

struct Rig {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    backing: std::path::PathBuf,
    fs: PowerCut,
}

/// A mount over a fresh backing dir, or `None` (printed) where FUSE is unavailable and
/// not under `CI=true`, which must run it.
fn rig() -> Option<Rig> {
    let (b, m) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    match PowerCut::mount(b.path(), m.path(), Delays::default(), 1) {
        Ok(fs) => Some(Rig {
            backing: b.path().to_path_buf(),
            _dirs: (b, m),
            fs,
        }),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot mount FUSE: {e}");
            None
        }
        Err(e) => panic!("cannot mount FUSE under CI=true: {e}"),
    }
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn only_synced_data_and_synced_names_survive() {
    let Some(r) = rig() else { return };
    let mnt = r.fs.mountpoint().to_path_buf();
    let kept = open(&mnt.join("kept"), false).unwrap();
    sync_dir(&mnt);
    let lost = open(&mnt.join("lost"), false).unwrap();
    kept.write_all_at(b"synced", 0).unwrap();
    kept.sync_data().unwrap();
    kept.write_all_at(b"LOST", 0).unwrap();
    kept.set_len(100).unwrap();
    lost.write_all_at(b"x", 0).unwrap();
    lost.sync_all().unwrap(); // the file's data, but not its name
    let mut back = vec![0u8; 6];
    kept.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, b"LOSTed", "reads see unsynced writes");
    assert_eq!(kept.metadata().unwrap().len(), 100);
    let counts = r.fs.counts();
    assert_eq!(
        (counts.fdatasyncs, counts.fsyncs, counts.dir_syncs),
        (1, 1, 1)
    );
    assert_eq!(r.fs.file_syncs("kept"), 1);
    let report = r.fs.cut(Model::NoneSurvive, 7).unwrap();
    assert_eq!(report.names_lost, 1);
    let e = kept.write_all_at(b"after", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "frozen after the cut");
    assert_eq!(
        kept.sync_data().unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    drop((kept, lost));
    assert_eq!(std::fs::read(r.backing.join("kept")).unwrap(), b"synced");
    assert!(!r.backing.join("lost").exists(), "an unsynced name is lost");
    r.fs.unmount().unwrap();
}

#[test]
fn direct_io_goes_through_the_same_cache() {
    let Some(r) = rig() else { return };
    let mnt = r.fs.mountpoint().to_path_buf();
    let f = open(&mnt.join("d"), true).unwrap();
    sync_dir(&mnt);
    let page = vec![5u8; 4096];
    f.write_all_at(&page, 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(&[6u8; 4096], 4096).unwrap();
    r.fs.cut(Model::NoneSurvive, 1).unwrap();
    drop(f);
    assert_eq!(std::fs::read(r.backing.join("d")).unwrap(), page);
}

#[test]
fn fallocate_and_punch_are_volatile() {
    let Some(r) = rig() else { return };
    let mnt = r.fs.mountpoint().to_path_buf();
    let f = open(&mnt.join("f"), false).unwrap();
    sync_dir(&mnt);
    f.write_all_at(&[9u8; 8192], 0).unwrap();
    f.sync_data().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: plain syscalls on an open fd.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fallocate(fd, 0, 0, 65536) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 65536);
    let mut b = [1u8; 4];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 4], "the hole reads as zeros");
    r.fs.cut(Model::NoneSurvive, 1).unwrap();
    drop(f);
    assert_eq!(std::fs::read(r.backing.join("f")).unwrap(), vec![9u8; 8192]);
}

#[test]
fn unmount_aborts_a_connection_still_in_use_instead_of_hanging() {
    let Some(r) = rig() else { return };
    let f = open(&r.fs.mountpoint().join("held"), false).unwrap();
    let e =
        r.fs.unmount_within(std::time::Duration::from_millis(200))
            .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    let e = f.write_all_at(b"x", 0).unwrap_err();
    assert!(
        matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::ENOTCONN)),
        "{e}"
    );
}
