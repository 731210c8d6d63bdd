//! Plain file I/O shared by the file-backed handles: opening, direct-I/O alignment
//! discovery, whole-buffer positioned reads and writes, and sync.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::aligned::{align_up, AlignedBuf};
use crate::config::{Config, SyncMode};
use crate::error::os_msg;

/// How a file-backed handle opens its path, as [`std::fs::OpenOptions`] would.
///
/// [`open`](crate::WriteBehindFile::open), [`create`](crate::WriteBehindFile::create) and
/// [`create_new`](crate::WriteBehindFile::create_new) are shorthands for
/// [`Existing`](OpenMode::Existing), [`CreateOrTruncate`](OpenMode::CreateOrTruncate) and
/// [`CreateNew`](OpenMode::CreateNew); `open_with` takes any mode.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OpenMode {
    /// The file must exist (else `ENOENT`); its bytes are kept. Like [`File::open`], but
    /// for reading and writing.
    #[default]
    Existing,
    /// Creates the file if it is missing, keeps its bytes if not
    /// (`OpenOptions::create(true)`).
    CreateOrOpen,
    /// Creates the file if it is missing, truncates it to length 0 if not, like
    /// [`File::create`]. With [`Config::lock_file`] (the default) the truncation happens
    /// only after the lock is taken, so it never cuts a file another handle holds.
    CreateOrTruncate,
    /// Creates the file; fails with `EEXIST` ([`io::ErrorKind::AlreadyExists`]) if
    /// anything exists under the path, a symlink included, like [`File::create_new`].
    CreateNew,
}

impl std::fmt::Display for OpenMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenMode::Existing => "existing",
            OpenMode::CreateOrOpen => "create-or-open",
            OpenMode::CreateOrTruncate => "create-or-truncate",
            OpenMode::CreateNew => "create-new",
        })
    }
}

/// An opened file and, with [`Config::lock_file`], the descriptor that holds its lock.
pub(crate) struct Opened {
    pub(crate) file: File,
    /// Holds the `flock`; closing it (dropping the handle) releases the lock.
    pub(crate) lock: Option<File>,
}

/// Opens `path` for reading and writing as `mode` says, with `O_DIRECT` when the config
/// asks for it; takes the exclusive lock ([`Config::lock_file`]); waits for direct I/O a
/// dead writer left in flight (see [`settle_direct_io`]); then truncates if `mode` says
/// so. The OS error comes back unchanged; a locked file gives `EWOULDBLOCK`.
pub(crate) fn open(path: &Path, cfg: &Config, mode: OpenMode) -> io::Result<Opened> {
    cfg.validate()?;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    match mode {
        OpenMode::Existing => {}
        OpenMode::CreateOrOpen | OpenMode::CreateOrTruncate => {
            opts.create(true);
        }
        OpenMode::CreateNew => {
            opts.create_new(true);
        }
    }
    if cfg.direct_io {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts.open(path)?;
    let lock = if cfg.lock_file {
        Some(lock_exclusive(&file, path)?)
    } else {
        None
    };
    settle_direct_io(&file)?;
    if mode == OpenMode::CreateOrTruncate {
        file.set_len(0)?;
    }
    Ok(Opened { file, lock })
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on a second, read-only open file description of
/// `file`'s inode and returns it: `EWOULDBLOCK` when another open file description holds
/// a lock (another handle, in this process or another).
///
/// Why a second description: a `flock` lives as long as the description it was taken on.
/// A killed process's io_uring requests keep its data file's description alive until they
/// complete (up to seconds), and a successor would find the file locked for that long;
/// the lock descriptor is closed the moment the process dies, and `open` then waits for
/// the dead writer's I/O itself ([`settle_direct_io`]).
fn lock_exclusive(file: &File, path: &Path) -> io::Result<File> {
    // The same inode even if `path` was renamed meanwhile; without /proc, the path again,
    // checked to be the same inode.
    let lock = match File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(f) => f,
        Err(_) => {
            let f = File::open(path)?;
            let (a, b) = (file.metadata()?, f.metadata()?);
            if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
                return Err(os_msg(
                    libc::EBUSY,
                    format!("{} was replaced while it was being opened", path.display()),
                ));
            }
            f
        }
    };
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(os_msg(
            libc::EWOULDBLOCK,
            format!(
                "{} is locked by another handle (see Config::lock_file)",
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Waits until no direct I/O is in flight on the file, however it was issued.
///
/// A process killed with io_uring direct writes in flight is reaped before they complete:
/// the ring is torn down in a kernel worker, and the writes land milliseconds (on a slow
/// device, seconds) later. A successor that reads or writes meanwhile sees bytes change
/// under it, or has its new bytes overwritten by the dead process's older ones
/// (docs/durability.md has the measurements). `fallocate` waits for the inode's direct
/// I/O to drain (`inode_dio_wait`, first thing on ext4 and, by its source, XFS);
/// `KEEP_SIZE` over the last byte keeps the length and allocates nothing unless that byte
/// is a hole. Its result is ignored: the wait comes before any failure, and a filesystem
/// without `fallocate` offers no other way to wait. (It does update the file's mtime.)
fn settle_direct_io(file: &File) -> io::Result<()> {
    let len = file_len(file)?;
    if len > 0 {
        let last = (len - 1) as libc::off_t;
        let _ = nix::fcntl::fallocate(
            file,
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            last,
            1,
        );
    }
    Ok(())
}

/// Where a [`DioAlignment`] came from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlignmentSource {
    /// `statx` with `STATX_DIOALIGN` (Linux 6.1+, on file systems that report it).
    Statx,
    /// The device's `logical_block_size` in sysfs.
    Sysfs,
    /// Neither was available: 512 bytes.
    Default,
}

impl AlignmentSource {
    /// A short lowercase name: `"statx"`, `"sysfs"` or `"default"`.
    pub fn name(self) -> &'static str {
        match self {
            AlignmentSource::Statx => "statx",
            AlignmentSource::Sysfs => "sysfs",
            AlignmentSource::Default => "default",
        }
    }
}

impl std::fmt::Display for AlignmentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The alignment direct I/O needs on a file, from [`dio_alignment`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DioAlignment {
    /// Bytes (a power of two) that memory addresses, file offsets and lengths of
    /// `O_DIRECT` I/O must be multiples of.
    pub bytes: usize,
    /// Where the value came from.
    pub source: AlignmentSource,
}

/// The direct-I/O alignment for `file` (memory, offset and length): `statx`'s
/// `STATX_DIOALIGN` (the larger of the memory and offset alignments) when the kernel and
/// file system report it, else the device's logical block size from sysfs, else 512.
/// The handles opened with [`Config::direct_io`] use this value.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let f = std::fs::File::create(dir.path().join("f")).unwrap();
/// let a = writebehind::dio_alignment(&f);
/// assert!(a.bytes.is_power_of_two());
/// ```
pub fn dio_alignment(file: &File) -> DioAlignment {
    let (bytes, source) = if let Some(a) = statx_dio_align(file).filter(|a| a.is_power_of_two()) {
        (a, AlignmentSource::Statx)
    } else if let Some(a) =
        sysfs_queue_value(file, "logical_block_size").filter(|a| a.is_power_of_two())
    {
        (a, AlignmentSource::Sysfs)
    } else {
        (512, AlignmentSource::Default)
    };
    DioAlignment { bytes, source }
}

/// The largest single write the device takes (`max_sectors_kb`), else 1 MiB.
pub(crate) fn device_max_write(file: &File) -> usize {
    sysfs_queue_value(file, "max_sectors_kb")
        .map(|kb| kb * 1024)
        .filter(|&b| b >= 4096)
        .unwrap_or(1 << 20)
}

fn statx_dio_align(file: &File) -> Option<usize> {
    // SAFETY: statx only writes into `stx`, a plain-old-data struct we own; the empty
    // path with AT_EMPTY_PATH makes it describe the open fd.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the path is a valid NUL-terminated C string.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let align = stx.stx_dio_mem_align.max(stx.stx_dio_offset_align) as usize;
    (align > 0).then_some(align)
}

/// A number from `/sys/dev/block/MAJ:MIN/queue/NAME` (or the parent device's queue, for
/// a partition) of the device holding `file`.
fn sysfs_queue_value(file: &File, name: &str) -> Option<usize> {
    let dev = file.metadata().ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    [
        format!("{base}/queue/{name}"),
        format!("{base}/../queue/{name}"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| s.trim().parse().ok())
}

/// Writes all of `data` at `offset`, retrying short writes and `EINTR`.
pub(crate) fn pwrite_all(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Reads `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros.
pub(crate) fn pread_zero_fill(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// [`pread_zero_fill`] for an `O_DIRECT` file: reads the aligned span around the range
/// into an aligned bounce buffer, then copies the requested bytes out. When the range and
/// `buf` are already aligned it reads straight into `buf`.
pub(crate) fn pread_direct(
    file: &File,
    align: usize,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let a = align as u64;
    if offset.is_multiple_of(a)
        && buf.len().is_multiple_of(align)
        && (buf.as_ptr() as usize).is_multiple_of(align)
    {
        return pread_direct_aligned(file, align, buf, offset);
    }
    let first = offset / a * a;
    let skip = (offset - first) as usize;
    let span = skip
        .checked_add(buf.len())
        .filter(|&n| n <= usize::MAX - align)
        .map(|n| align_up(n, align))
        .ok_or_else(|| {
            os_msg(
                libc::EINVAL,
                format!("read of {} bytes is too large", buf.len()),
            )
        })?;
    let mut bounce = alloc_aligned(span, align)?;
    pread_direct_aligned(file, align, bounce.as_mut_slice(), first)?;
    buf.copy_from_slice(&bounce.as_slice()[skip..skip + buf.len()]);
    Ok(())
}

/// Like [`pread_zero_fill`] for an aligned `buf` and `offset` on an `O_DIRECT` file. A
/// direct read only comes back short at the end of the file, and a count that is not a
/// multiple of `align` cannot be continued with `O_DIRECT` anyway, so it means EOF (a file
/// whose length is not aligned, e.g. written without `O_DIRECT`).
fn pread_direct_aligned(file: &File, align: usize, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if !done.is_multiple_of(align) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// A zeroed [`AlignedBuf`] of `len` bytes, or `ENOMEM` (never a panic or an abort) when
/// `len` is absurd or the memory is not there.
pub(crate) fn alloc_aligned(len: usize, align: usize) -> io::Result<AlignedBuf> {
    AlignedBuf::try_zeroed(len, align)
}

/// `EINVAL` unless `start <= stop`: the argument check every `force_range` shares.
pub(crate) fn check_force_range(start: u64, stop: u64) -> io::Result<()> {
    if start > stop {
        return Err(os_msg(
            libc::EINVAL,
            format!("force_range: start {start} is past stop {stop}"),
        ));
    }
    Ok(())
}

/// Starts write-back of the dirty pages of `[start, stop)` and waits for it
/// (`sync_file_range` with WAIT_BEFORE|WRITE|WAIT_AFTER). This does not flush the device
/// cache or the metadata: follow it with [`sync`] for durability.
pub(crate) fn sync_range(file: &File, start: u64, stop: u64) -> io::Result<()> {
    // The kernel takes signed offsets; nothing can live past i64::MAX anyway.
    let start = start.min(i64::MAX as u64) as i64;
    let stop = stop.min(i64::MAX as u64) as i64;
    if stop <= start {
        return Ok(());
    }
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    loop {
        // SAFETY: a plain syscall on an fd that `file` keeps open; no memory is passed.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), start, stop - start, flags) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `fdatasync` or `fsync`, per `mode`.
pub(crate) fn sync(file: &File, mode: SyncMode) -> io::Result<()> {
    match mode {
        SyncMode::Data => file.sync_data(),
        SyncMode::All => file.sync_all(),
    }
}

/// The file system's block size (`st_blksize`): the unit hole punches are aligned to.
pub(crate) fn fs_block_size(file: &File) -> io::Result<u64> {
    Ok(file.metadata()?.blksize().max(512))
}

/// The checks of `set_len(len)` on a handle whose start is `start`: `EDOM` below the
/// start, `EINVAL` past the largest file offset or, with direct I/O (`align > 1`), when
/// `len` is not a multiple of the alignment (appends could not continue from there).
pub(crate) fn check_set_len(len: u64, start: u64, align: usize) -> io::Result<()> {
    if len < start {
        return Err(crate::error::edom());
    }
    if len > i64::MAX as u64 {
        return Err(os_msg(
            libc::EINVAL,
            format!("set_len({len}) is past the largest file offset (2^63 - 1)"),
        ));
    }
    if !len.is_multiple_of(align as u64) {
        return Err(os_msg(
            libc::EINVAL,
            format!("set_len({len}): direct I/O requires a multiple of {align}"),
        ));
    }
    Ok(())
}

/// Length of the file now.
pub(crate) fn file_len(file: &File) -> io::Result<u64> {
    Ok(file.metadata()?.len())
}
