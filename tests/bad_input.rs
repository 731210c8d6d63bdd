//! Bad input: every call gets a clear error (or a harmless Ok) and the stored data stays
//! exactly as the reference model says, for `WriteBehindFile` on both engines (buffered
//! and direct), `FileHandle` (buffered and direct) and `MemoryHandle`.
//!
//! After each call the handle's whole contents and positions are compared with a
//! `MemoryHandle`-based model that got the same calls (see tests/common/model.rs).

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::loopfs::run;
use common::{
    append_via_buffer, assert_same, pattern, read_vec, skip_or_fail, small_block, snapshot,
    watchdog, write_via_buffer, Model,
};
use writebehind::{errno, Backend, Config, FileHandle, Handle, MemoryHandle, WriteBehindFile};

fn wb_configs() -> Vec<(&'static str, Config)> {
    let base = Config::default();
    vec![
        ("wb io_uring", base.clone().backend(Backend::IoUring)),
        (
            "wb io_uring direct",
            base.clone().backend(Backend::IoUring).direct_io(true),
        ),
        ("wb threads", base.clone().backend(Backend::Threads)),
        (
            "wb threads direct",
            base.backend(Backend::Threads).direct_io(true),
        ),
    ]
}

fn file_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("file", Config::default()),
        ("file direct", Config::default().direct_io(true)),
    ]
}

/// Calls `$body(name, &handle, alignment)` for every handle kind, each on a fresh file.
macro_rules! on_every_handle {
    ($body:expr) => {{
        let dir = common::tempdir();
        for (name, cfg) in wb_configs() {
            let h = WriteBehindFile::create(dir.path().join(name), &cfg).unwrap();
            let align = h.alignment();
            $body(name, &h, align);
            h.close().unwrap_or_else(|e| panic!("{name}: close: {e}"));
        }
        for (name, cfg) in file_configs() {
            let h = FileHandle::create(dir.path().join(name), &cfg).unwrap();
            let align = h.alignment();
            $body(name, &h, align);
            h.close().unwrap();
        }
        $body("memory", &MemoryHandle::new(), 1);
    }};
}

/// The handle shows exactly what the model holds.
#[track_caller]
fn assert_matches(what: &str, h: &impl Handle, m: &Model) {
    assert_eq!(
        snapshot(h),
        m.snapshot(),
        "{what}: contents differ from the model"
    );
}

// ------------------------------------------------------------------ ranges

/// Below the start and past the end (`EDOM`), `offset + len` overflowing `u64`
/// (`EINVAL`), `force_range` with start > stop (`EINVAL`): each error matches the model
/// and nothing changes.
#[test]
fn out_of_range_calls_fail_and_change_nothing() {
    on_every_handle!(out_of_range);
}

fn out_of_range(name: &str, h: &impl Handle, align: usize) {
    let mut m = Model::new();
    let u = small_block(align);
    let uu = u as u64;
    let data = pattern(1, 8 * u);
    assert_same("setup", h.write(0, &data), m.write(0, &data));
    assert_same("setup", h.truncate_start(2 * uu), m.truncate_start(2 * uu));
    let blk = pattern(2, u);
    let two = pattern(3, 2 * u);
    let top = u64::MAX / uu * uu; // the last aligned offset: top + u overflows
    macro_rules! step {
        ($call:expr, $got:expr, $want:expr $(,)?) => {{
            let got: io::Result<Vec<u8>> = $got;
            let want: io::Result<Vec<u8>> = $want;
            let what = format!("{name}: {}", $call);
            assert!(want.is_err(), "{what}: the model accepted it");
            assert_same(&what, got, want);
            assert_matches(&what, h, &m);
        }};
    }
    let unit = |r: io::Result<()>| r.map(|()| Vec::new());

    step!("read below the start", read_vec(h, uu, u), m.read(uu, u));
    step!(
        "read crossing the start",
        read_vec(h, uu, 2 * u),
        m.read(uu, 2 * u)
    );
    step!(
        "read crossing the end",
        read_vec(h, 7 * uu, 2 * u),
        m.read(7 * uu, 2 * u)
    );
    step!("read at the end", read_vec(h, 8 * uu, 1), m.read(8 * uu, 1));
    step!(
        "read far past the end",
        read_vec(h, 1 << 40, u),
        m.read(1 << 40, u)
    );
    step!(
        "read overflowing u64",
        read_vec(h, u64::MAX - 1, 4),
        m.read(u64::MAX - 1, 4)
    );
    step!(
        "read_buffer past the end",
        h.read_buffer(7 * uu, 2 * u).map(|b| b.to_vec()),
        m.read(7 * uu, 2 * u),
    );
    step!(
        "read_buffer below the start",
        h.read_buffer(0, u).map(|b| b.to_vec()),
        m.read(0, u),
    );
    step!(
        "read_buffer overflowing u64",
        h.read_buffer(u64::MAX, 2).map(|b| b.to_vec()),
        m.read(u64::MAX, 2),
    );
    step!(
        "write below the start",
        unit(h.write(uu, &blk)),
        unit(m.write(uu, &blk))
    );
    step!(
        "write crossing the start",
        unit(h.write(uu, &two)),
        unit(m.write(uu, &two))
    );
    step!(
        "write overflowing u64",
        unit(h.write(top, &two)),
        unit(m.write(top, &two)),
    );
    step!(
        "write at u64::MAX",
        unit(h.write(u64::MAX, &blk)),
        unit(m.write(u64::MAX, &blk)),
    );
    step!(
        "write_buffer below the start",
        unit(write_via_buffer(h, 0, &two)),
        unit(m.write(0, &two)),
    );
    step!(
        "write_buffer overflowing u64",
        unit(write_via_buffer(h, top, &two)),
        unit(m.write(top, &two)),
    );
    step!(
        "truncate_start past the end",
        unit(h.truncate_start(8 * uu + 1)),
        unit(m.truncate_start(8 * uu + 1)),
    );
    step!(
        "truncate_start to u64::MAX",
        unit(h.truncate_start(u64::MAX)),
        unit(m.truncate_start(u64::MAX)),
    );
    // The model has no force_range: the expected error is spelled out.
    step!(
        "force_range with start > stop",
        unit(h.force_range(10, 3)),
        Err(io::Error::from_raw_os_error(libc::EINVAL)),
    );
    // Zero-length calls outside the range are checked like any other.
    step!(
        "zero-length read below the start",
        read_vec(h, uu, 0),
        m.read(uu, 0),
    );
    step!(
        "zero-length read past the end",
        read_vec(h, 9 * uu, 0),
        m.read(9 * uu, 0),
    );
    step!(
        "zero-length write below the start",
        unit(h.write(0, &[])),
        unit(m.write(0, &[])),
    );
    step!(
        "zero-length write_buffer below the start",
        unit(write_via_buffer(h, 0, &[])),
        unit(m.write(0, &[])),
    );
    h.force().unwrap();
    assert_matches(&format!("{name}: after force"), h, &m);
}

/// Zero-length reads, writes, appends and buffers inside the range (and writes past the
/// end) are Ok and change nothing: not the contents, not the positions, and not a
/// buffered write that starts or lies at the same offset.
#[test]
fn zero_length_calls_are_ok_and_change_nothing() {
    on_every_handle!(zero_length);
}

fn zero_length(name: &str, h: &impl Handle, align: usize) {
    let mut m = Model::new();
    let u = small_block(align);
    let uu = u as u64;
    let data = pattern(4, 8 * u);
    assert_same("setup", h.write(0, &data), m.write(0, &data));
    assert_same("setup", h.truncate_start(uu), m.truncate_start(uu));
    let check = |call: &str, m: &Model| assert_matches(&format!("{name}: {call}"), h, m);
    for at in [uu, 2 * uu, 3 * uu + 1, 8 * uu] {
        h.read(at, &mut []).unwrap();
        assert_eq!(h.read_buffer(at, 0).unwrap().len(), 0);
        check("zero-length read", &m);
        // At the start of a buffered block, inside one, and at the end.
        h.write(at, &[]).unwrap();
        check(&format!("zero-length write at {at}"), &m);
        write_via_buffer(h, at, &[]).unwrap();
        check(&format!("zero-length write_buffer at {at}"), &m);
        drop(h.write_buffer(at, 0).unwrap()); // committed by drop
        check(&format!("zero-length write_buffer dropped at {at}"), &m);
    }
    h.write(1000 * uu, &[]).unwrap();
    check("zero-length write past the end", &m);
    assert_same("zero-length append", h.append(&[]), m.append(&[]));
    check("zero-length append", &m);
    assert_eq!(append_via_buffer(h, &[], false).unwrap(), 8 * uu);
    assert_eq!(append_via_buffer(h, &[], true).unwrap(), 8 * uu);
    check("zero-length append_buffer", &m);
    h.force_range(5 * uu, 5 * uu).unwrap();
    h.force().unwrap();
    check("force", &m);
}

/// A write the kernel can never perform, at an offset past `i64::MAX` (the largest file
/// offset), fails at the call with `EINVAL` on the file handles — not later, at
/// write-back, where it would fail the whole handle — and changes nothing. (The memory
/// handle has no such limit and reports the allocation it cannot make: `ENOMEM`.)
#[test]
fn writes_past_the_largest_file_offset_are_refused_at_the_call() {
    let dir = common::tempdir();
    let check = |name: &str, h: &dyn HandleProbe, memory: bool| {
        let want = if memory { libc::ENOMEM } else { libc::EINVAL };
        let blk = vec![7u8; 4096];
        let before = h.snap();
        for off in [1u64 << 63, u64::MAX - 8191] {
            let e = h.write_at_off(off, &blk).expect_err(name);
            assert_eq!(errno(&e), Some(want), "{name}: write at {off}: {e}");
            let e = h.write_buffer_at(off, &blk).expect_err(name);
            assert_eq!(errno(&e), Some(want), "{name}: write_buffer at {off}: {e}");
            assert_eq!(h.snap(), before, "{name}: changed");
        }
        h.force_all().unwrap_or_else(|e| {
            panic!("{name}: the handle is unusable after the refused write: {e}")
        });
        h.write_at_off(0, &blk).unwrap();
        h.force_all().unwrap();
    };
    for (name, cfg) in wb_configs() {
        let h = WriteBehindFile::create(dir.path().join(name), &cfg).unwrap();
        check(name, &h, false);
        h.close().unwrap();
    }
    for (name, cfg) in file_configs() {
        let h = FileHandle::create(dir.path().join(name), &cfg).unwrap();
        check(name, &h, false);
        h.close().unwrap();
    }
    check("memory", &MemoryHandle::new(), true);
}

/// Object-safe slice of `Handle` for the test above.
trait HandleProbe {
    fn write_at_off(&self, off: u64, data: &[u8]) -> io::Result<()>;
    fn write_buffer_at(&self, off: u64, data: &[u8]) -> io::Result<()>;
    fn force_all(&self) -> io::Result<()>;
    fn snap(&self) -> common::Snapshot;
}

impl<H: Handle> HandleProbe for H {
    fn write_at_off(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.write(off, data)
    }
    fn write_buffer_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        write_via_buffer(self, off, data)
    }
    fn force_all(&self) -> io::Result<()> {
        self.force()
    }
    fn snap(&self) -> common::Snapshot {
        snapshot(self)
    }
}

// ------------------------------------------------------------------ direct I/O alignment

/// Direct mode: misaligned offsets and lengths through every write path (`write`,
/// `write_buffer`, `append`, `append_buffer`, `FileExt::write_at`) fail with `EINVAL`
/// whose message names the alignment, and change nothing; an existing file whose length
/// is not aligned can be read and written at aligned offsets, but not appended to.
#[test]
fn misaligned_direct_writes_are_einval_naming_the_alignment() {
    let dir = common::tempdir();
    for (name, cfg) in wb_configs().into_iter().filter(|(_, c)| c.is_direct_io()) {
        let path = dir.path().join(name);
        let h = WriteBehindFile::create(&path, &cfg).unwrap();
        misaligned(name, &h, h.alignment());
        h.close().unwrap();
        unaligned_end(
            name,
            &path,
            |p| WriteBehindFile::open(p, &cfg),
            |h| h.alignment(),
        );
    }
    let cfg = Config::default().direct_io(true);
    let path = dir.path().join("file direct");
    let h = FileHandle::create(&path, &cfg).unwrap();
    misaligned("file direct", &h, h.alignment());
    h.close().unwrap();
    unaligned_end(
        "file direct",
        &path,
        |p| FileHandle::open(p, &cfg),
        |h| h.alignment(),
    );
}

fn misaligned<H: Handle + FileExt>(name: &str, h: &H, align: usize) {
    assert!(align > 1, "{name}: direct mode with alignment {align}");
    common::direct_misaligned(h, align); // write, write_buffer, append, memory alignment
    let before = snapshot(h);
    let einval = |call: &str, r: io::Result<()>| {
        let e = r.expect_err(call);
        assert_eq!(errno(&e), Some(libc::EINVAL), "{name}: {call}: {e}");
        assert!(
            e.to_string().contains(&format!("{align}-byte alignment")),
            "{name}: {call}: {e} does not name the alignment"
        );
        assert_eq!(snapshot(h), before, "{name}: {call} changed the handle");
    };
    let junk = vec![0x5A; 2 * align];
    einval(
        "append_buffer of a misaligned length",
        h.append_buffer(align + 1).map(drop),
    );
    einval(
        "write_buffer of a misaligned length",
        h.write_buffer(0, 100).map(drop),
    );
    einval(
        "write_buffer at a misaligned offset",
        h.write_buffer(3, align).map(drop),
    );
    einval(
        "write_at at a misaligned offset",
        h.write_at(&junk, 1).map(drop),
    );
    einval(
        "write_at of a misaligned length",
        h.write_at(&junk[..align + 7], 0).map(drop),
    );
    einval("append of one byte", h.append(&[1]).map(drop));
    h.force().unwrap();
    assert_eq!(snapshot(h), before, "{name}: after force");
}

/// An existing file of 1000 bytes (not a multiple of the alignment), opened direct.
fn unaligned_end<H: Handle>(
    name: &str,
    path: &Path,
    open: impl Fn(&Path) -> io::Result<H>,
    alignment: impl Fn(&H) -> usize,
) {
    let head = pattern(21, 1000);
    std::fs::write(path, &head).unwrap();
    let h = open(path).unwrap();
    let align = alignment(&h);
    assert_eq!(h.end_position(), 1000, "{name}");
    assert_eq!(
        read_vec(&h, 0, 1000).unwrap(),
        head,
        "{name}: read the unaligned tail"
    );
    let blk = pattern(22, align);
    for (call, r) in [
        ("append at an unaligned end", h.append(&blk).map(drop)),
        (
            "append_buffer at an unaligned end",
            h.append_buffer(align).map(drop),
        ),
    ] {
        let e = r.expect_err(call);
        assert_eq!(errno(&e), Some(libc::EINVAL), "{name}: {call}: {e}");
        assert!(
            e.to_string().contains(&align.to_string()),
            "{name}: {call}: {e}"
        );
        assert_eq!(h.end_position(), 1000, "{name}: {call} moved the end");
    }
    // Aligned writes still work, and extend the file to an aligned end.
    h.write(0, &blk).unwrap();
    h.write(4 * align as u64, &blk).unwrap();
    h.force().unwrap();
    let mut want = head.clone();
    want.resize(5 * align, 0);
    want[..align].copy_from_slice(&blk);
    want[4 * align..].copy_from_slice(&blk);
    assert_eq!(read_vec(&h, 0, 5 * align).unwrap(), want, "{name}");
    drop(h);
    assert_eq!(std::fs::read(path).unwrap(), want, "{name}: file");
}

// ------------------------------------------------------------------ open errors

fn bad_configs() -> Vec<(Config, &'static str)> {
    let d = Config::default;
    vec![
        (d().buffer_bytes(0), "buffer_bytes"),
        (d().buffer_bytes(usize::MAX), "buffer_bytes"),
        (d().max_blocks(0), "max_blocks"),
        (d().max_blocks(usize::MAX), "max_blocks"),
        (d().queue_depth(0), "queue_depth"),
        (d().queue_depth(u32::MAX), "queue_depth"),
        (d().ring_entries(0), "ring_entries"),
        (d().ring_entries(1).queue_depth(1), "ring_entries"),
        (d().ring_entries(100), "ring_entries"),
        (d().ring_entries(1 << 20), "ring_entries"),
        (d().queue_depth(256).ring_entries(128), "queue_depth"),
        (d().max_write_bytes(0), "max_write_bytes"),
        (d().max_write_bytes(usize::MAX), "max_write_bytes"),
        (d().max_dirty_age(Duration::ZERO), "max_dirty_age"),
        (d().max_dirty_age(Duration::MAX), "max_dirty_age"),
        (d().direct_io(true).buffer_bytes(0), "buffer_bytes"),
        (d().backend(Backend::Threads).queue_depth(0), "queue_depth"),
    ]
}

type Opener = (&'static str, fn(&Path, &Config) -> io::Result<()>);

fn openers() -> Vec<Opener> {
    vec![
        ("WriteBehindFile::create", |p, c| {
            WriteBehindFile::create(p, c).map(drop)
        }),
        ("WriteBehindFile::open", |p, c| {
            WriteBehindFile::open(p, c).map(drop)
        }),
        ("FileHandle::create", |p, c| {
            FileHandle::create(p, c).map(drop)
        }),
        ("FileHandle::open", |p, c| FileHandle::open(p, c).map(drop)),
    ]
}

/// A `Config` with a zero or absurd setting fails at open with `InvalidInput` naming the
/// setting, before the file is touched: a missing file is not created, an existing one
/// is not truncated.
#[test]
fn bad_config_is_invalid_input_and_touches_no_file() {
    let dir = common::tempdir();
    let existing = dir.path().join("existing");
    let precious = pattern(5, 10_000);
    std::fs::write(&existing, &precious).unwrap();
    let missing = dir.path().join("missing");
    for (cfg, setting) in bad_configs() {
        for (opener, open) in openers() {
            for path in [&existing, &missing] {
                let e = open(path, &cfg).expect_err(opener);
                let what = format!("{opener} {path:?} with bad {setting}");
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}");
                assert_eq!(errno(&e), Some(libc::EINVAL), "{what}: {e}");
                assert!(e.to_string().contains(setting), "{what}: {e}");
            }
            assert!(
                !missing.exists(),
                "{opener}: created the file despite the bad config"
            );
            assert_eq!(
                std::fs::read(&existing).unwrap(),
                precious,
                "{opener}: file touched"
            );
        }
    }
}

/// The smallest valid settings (a 1-byte budget, one block, queue depth 1, a two-entry
/// ring, 1-byte writes, a 1 ns dirty age) are honoured without deadlock: every write
/// bigger than the budget still goes through, one at a time, and the data is intact.
/// (A one-entry ring is refused by `Config::validate`: it cannot hold a write and its
/// linked fsync, and once made the submission thread spin forever.)
#[test]
fn tiny_valid_configs_work() {
    for backend in [Backend::IoUring, Backend::Threads] {
        for direct in [false, true] {
            watchdog("tiny config", 60, move || tiny(backend, direct));
        }
    }
}

fn tiny(backend: Backend, direct: bool) {
    let what = format!("{backend:?} direct {direct}");
    let cfg = Config::default()
        .backend(backend)
        .direct_io(direct)
        .buffer_bytes(1)
        .max_blocks(1)
        .queue_depth(1)
        .ring_entries(2)
        .max_write_bytes(1)
        .max_dirty_age(Duration::from_nanos(1));
    assert!(cfg.validate().is_ok());
    let dir = common::tempdir();
    let path = dir.path().join("tiny");
    let h = WriteBehindFile::create(&path, &cfg).unwrap_or_else(|e| panic!("{what}: {e}"));
    let align = h.alignment();
    let u = small_block(align);
    let mut m = Model::new();
    let mut rng = common::Rng::new(common::seed(&format!("tiny {what}")));
    for i in 0..200 {
        let len = u * rng.range(1, 3) as usize;
        let data = rng.bytes(len);
        if rng.chance(30) {
            assert_same(&what, h.append(&data), m.append(&data));
        } else {
            let off = rng.below(m.end() / u as u64 + 2) * u as u64;
            assert_same(&what, h.write(off, &data), m.write(off, &data));
        }
        if i % 50 == 0 {
            h.force().unwrap();
        }
    }
    assert_matches(&what, &h, &m);
    h.force().unwrap();
    h.close().unwrap();
    let h = WriteBehindFile::open(&path, &cfg).unwrap();
    assert_matches(&format!("{what}: reopened"), &h, &m);
    h.close().unwrap();
}

/// A path that is a directory: the OS error (`EISDIR`) comes back unchanged, as a raw
/// OS error, and the directory is left alone; a missing file or directory: `ENOENT`.
#[test]
fn directories_and_missing_paths_give_the_os_error_unchanged() {
    let dir = common::tempdir();
    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inside"), b"keep").unwrap();
    for direct in [false, true] {
        for backend in [Backend::Auto, Backend::IoUring, Backend::Threads] {
            let cfg = Config::default().direct_io(direct).backend(backend);
            for (opener, open) in openers() {
                let what = format!("{opener} ({backend:?}, direct {direct})");
                let e = open(&sub, &cfg).expect_err(&what);
                assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{what}: {e}");
                let e = open(&dir.path().join("no/such/dir/file"), &cfg).expect_err(&what);
                assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{what}: {e}");
                if opener.ends_with("open") {
                    let e = open(&dir.path().join("missing"), &cfg).expect_err(&what);
                    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{what}: {e}");
                }
            }
        }
    }
    assert!(sub.is_dir());
    assert_eq!(std::fs::read(sub.join("inside")).unwrap(), b"keep");
}

/// A tmpfs mounted at a temp dir, unmounted on drop.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root to mount a tmpfs".into());
        }
        let dir = common::tempdir();
        run(Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "wb-test-ro",
            dir.path().to_str().unwrap(),
        ]))?;
        Ok(TmpfsMount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_ro(&self) -> Result<(), String> {
        run(Command::new("mount").args(["-o", "remount,ro", self.path().to_str().unwrap()]))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("umount").arg(self.dir.path())) {
            eprintln!("umount failed ({e}); detaching lazily");
            let _ = run(Command::new("umount").arg("-l").arg(self.dir.path()));
        }
    }
}

/// A read-only filesystem: every open that needs write access fails with the OS error
/// (`EROFS`) unchanged, and the file is not touched.
#[test]
fn read_only_filesystem_gives_erofs_unchanged() {
    let what = "read-only filesystem";
    let mnt = match TmpfsMount::new() {
        Ok(m) => m,
        Err(reason) => return skip_or_fail(what, &reason),
    };
    let file = mnt.path().join("data");
    let precious = pattern(6, 5000);
    std::fs::write(&file, &precious).unwrap();
    if let Err(reason) = mnt.remount_ro() {
        return skip_or_fail(what, &reason);
    }
    for direct in [false, true] {
        for backend in [Backend::Auto, Backend::Threads] {
            let cfg = Config::default().direct_io(direct).backend(backend);
            for (opener, open) in openers() {
                let what = format!("{opener} ({backend:?}, direct {direct})");
                let e = open(&file, &cfg).expect_err(&what);
                assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
                if opener.ends_with("create") {
                    let e = open(&mnt.path().join("new"), &cfg).expect_err(&what);
                    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: new file: {e}");
                }
            }
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), precious, "the file changed");
    assert!(!mnt.path().join("new").exists());
}

/// A write past the filesystem's largest file size (but below 2^63) is something only
/// the kernel knows about: `FileHandle` gets `EFBIG` at the call; `WriteBehindFile`
/// acknowledges the write (it is buffered), and its write-back then fails with `EFBIG`,
/// which latches like any write error (see docs/durability.md) — `force` and `close`
/// report it, earlier forced data is intact, and the refused bytes stay readable.
#[test]
fn write_past_the_filesystem_limit_is_efbig() {
    let dir = common::tempdir();
    let far = 1u64 << 50; // 1 PiB: past ext4's 16 TiB limit
    let f = FileHandle::create(dir.path().join("file"), &Config::default()).unwrap();
    match f.write(far, &[1u8; 4096]) {
        Ok(()) => {
            return eprintln!("skipped: the filesystem under target/tmp accepts offset {far}")
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "FileHandle: {e}"),
    }
    assert_eq!(
        f.end_position(),
        0,
        "FileHandle: the refused write moved the end"
    );
    f.close().unwrap();
    for (name, cfg) in wb_configs() {
        let path = dir.path().join(name);
        let h = WriteBehindFile::create(&path, &cfg).unwrap();
        let blk = pattern(8, 4096);
        h.write(0, &blk).unwrap();
        h.force().unwrap();
        h.write(far, &blk).unwrap(); // buffered: nothing can refuse it yet
        let e = h.force().expect_err(name);
        assert_eq!(errno(&e), Some(libc::EFBIG), "{name}: force: {e}");
        assert_eq!(
            read_vec(&h, far, 4096).unwrap(),
            blk,
            "{name}: buffered bytes"
        );
        let e = h.write(4096, &blk).expect_err(name);
        assert_eq!(errno(&e), Some(libc::EFBIG), "{name}: write after: {e}");
        let e = h.close().expect_err(name);
        assert_eq!(errno(&e), Some(libc::EFBIG), "{name}: close: {e}");
        // A failed handle sends nothing more, not the trim of its preallocated space:
        // past the forced data the file holds only zeros.
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got[..4096], blk, "{name}: forced data");
        assert!(got[4096..].iter().all(|&b| b == 0), "{name}: past the data");
    }
}

// ------------------------------------------------------------------ a failed handle

/// A handle whose write-back failed (an injected `EIO`) refuses every write and force
/// with the latched errno and changes nothing, while reads (`read`, `read_buffer`,
/// `FileExt::read_at`) keep returning what the model holds, unwritten bytes included.
#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_handle_refuses_writes_and_forces_but_reads() {
    for (name, cfg) in wb_configs() {
        watchdog("failed handle", 30, move || failed_handle(name, cfg));
    }
}

#[cfg(feature = "fault-injection")]
fn failed_handle(name: &'static str, cfg: Config) {
    let faults = writebehind::fault::FaultInjector::new();
    let dir = common::tempdir();
    let h =
        WriteBehindFile::create(dir.path().join("f"), &cfg.fault_injector(faults.clone())).unwrap();
    let u = small_block(h.alignment());
    let uu = u as u64;
    let mut m = Model::new();
    let data = pattern(9, 8 * u);
    assert_same("setup", h.write(0, &data), m.write(0, &data));
    h.force().unwrap();
    faults.fail_all_writes_from(0, libc::EIO);
    let more = pattern(10, 8 * u);
    assert_same("setup", h.write(4 * uu, &more), m.write(4 * uu, &more));
    assert!(h.failure().is_none(), "{name}: failed before the fault");
    let e = h.force().expect_err(name);
    assert_eq!(errno(&e), Some(libc::EIO), "{name}: force: {e}");
    let latched = h.failure().expect("failure() after the latch");
    assert_eq!(latched.raw_os_error(), Some(libc::EIO), "{name}: failure()");

    let blk = pattern(11, u);
    let refused: Vec<(&str, io::Result<()>)> = vec![
        ("write", h.write(0, &blk)),
        ("write past the end", h.write(100 * uu, &blk)),
        ("append", h.append(&blk).map(drop)),
        ("write_buffer", h.write_buffer(uu, u).map(drop)),
        ("append_buffer", h.append_buffer(u).map(drop)),
        ("FileExt::write_at", h.write_at(&blk, 0).map(drop)),
        ("force", h.force()),
        ("force_range", h.force_range(0, uu)),
        ("empty force_range", h.force_range(uu, uu)),
        ("sync_all", h.sync_all()),
    ];
    for (call, r) in refused {
        let e = r.expect_err(call);
        assert_eq!(errno(&e), Some(libc::EIO), "{name}: {call}: {e}");
        assert_matches(&format!("{name}: after the refused {call}"), &h, &m);
    }
    // Reads of everything, through every read path.
    let all = m.read(0, 12 * u).unwrap();
    assert_eq!(read_vec(&h, 0, 12 * u).unwrap(), all, "{name}: read");
    assert_eq!(
        h.read_buffer(uu, 10 * u).unwrap()[..],
        all[u..11 * u],
        "{name}: read_buffer"
    );
    let mut buf = vec![0u8; 20 * u];
    assert_eq!(h.read_at(&mut buf, 0).unwrap(), 12 * u, "{name}: read_at");
    assert_eq!(buf[..12 * u], all[..], "{name}: read_at");
    // truncate_start only forgets bytes: it works on a failed handle as on the model.
    assert_same(
        "truncate_start",
        h.truncate_start(2 * uu),
        m.truncate_start(2 * uu),
    );
    assert_matches(&format!("{name}: after truncate_start"), &h, &m);
    let e = h.close().expect_err(name);
    assert_eq!(errno(&e), Some(libc::EIO), "{name}: close: {e}");
}

// ------------------------------------------------------------------ a dropped guard

/// A write guard whose range fell below the start before it was stored: `release`
/// returns `EDOM`; a dropped one cannot, so `Stats::dropped_buffer_failures` counts it
/// (and the handle keeps working: that failure latches nothing).
#[test]
fn a_dropped_guards_failure_is_counted_in_stats() {
    for (name, cfg) in wb_configs() {
        let dir = common::tempdir();
        let h = WriteBehindFile::create(dir.path().join("f"), &cfg).unwrap();
        let u = small_block(h.alignment());
        let released = h.append_buffer(u).unwrap();
        let dropped = h.append_buffer(u).unwrap();
        h.truncate_start(2 * u as u64).unwrap();
        let e = released.release().expect_err(name);
        assert_eq!(errno(&e), Some(libc::EDOM), "{name}: release: {e}");
        assert_eq!(h.stats().dropped_buffer_failures, 0, "{name}: release");
        drop(dropped);
        assert_eq!(h.stats().dropped_buffer_failures, 1, "{name}: drop");
        assert!(h.failure().is_none(), "{name}: the handle failed");
        h.write(2 * u as u64, &pattern(1, u)).unwrap();
        h.force().unwrap();
        assert_eq!(h.close().unwrap().dropped_buffer_failures, 1, "{name}");
    }
}
