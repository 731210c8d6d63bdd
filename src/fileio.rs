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

/// Opens (or, with `create`, creates or truncates) `path` for reading and writing, with
/// `O_DIRECT` when the config asks for it, and waits for direct I/O a dead writer left in
/// flight (see [`settle_direct_io`]). The OS error comes back unchanged.
pub(crate) fn open(path: &Path, cfg: &Config, create: bool) -> io::Result<File> {
    cfg.validate()?;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if create {
        opts.create(true).truncate(true);
    }
    if cfg.direct_io {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts.open(path)?;
    settle_direct_io(&file)?;
    Ok(file)
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
        // SAFETY: fallocate takes no pointers; the descriptor is open for writing.
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, last, 1) };
    }
    Ok(())
}

/// The direct-I/O alignment for `file` (memory, offset and length): `statx`'s
/// `STATX_DIOALIGN` when the kernel and filesystem report it, else the device's logical
/// block size from sysfs, else 512.
pub(crate) fn dio_alignment(file: &File) -> usize {
    statx_dio_align(file)
        .or_else(|| sysfs_queue_value(file, "logical_block_size"))
        .filter(|a| a.is_power_of_two())
        .unwrap_or(512)
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
    let no_mem = || os_msg(libc::ENOMEM, format!("cannot allocate a {len}-byte buffer"));
    if len > isize::MAX as usize - align {
        return Err(no_mem());
    }
    // AlignedBuf aborts when the allocator fails; for large sizes ask a fallible allocator
    // first whether the memory can be had (small sizes cannot realistically fail).
    if len >= 64 << 20 {
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(len).map_err(|_| no_mem())?;
    }
    Ok(AlignedBuf::zeroed(len, align))
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
