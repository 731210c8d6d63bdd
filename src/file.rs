//! `FileHandle`: the blocking baseline, `pread`/`pwrite` on the caller's thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aligned::AlignedBuf;
use crate::buffer::{CommitSink, ReadBuffer, WriteBuffer};
use crate::config::{Config, SyncMode};
use crate::error::{check_io_len, edom, os_msg, range_end};
use crate::fileio::{self, OpenMode};
use crate::handle::{self, Handle};

/// The blocking baseline: every call does its `pread`/`pwrite`/`fdatasync` on the calling
/// thread, so a write is in the page cache (or, with `O_DIRECT`, on the device) when it
/// returns, and [`force`](Handle::force) is one `fdatasync` (or `fsync`, per
/// [`Config::sync`]).
///
/// The start position lives only in memory: it is 0 after every open, and bytes below it
/// stay in the file (they are just no longer readable or writable through the handle).
///
/// With [`Config::direct_io`] the file is opened with `O_DIRECT`; writes must then start and
/// end on multiples of [`alignment`](FileHandle::alignment) (else `EINVAL`, nothing
/// written), while reads of any range work through an aligned bounce buffer.
///
/// # Durability
///
/// - A write returning Ok means the bytes are in the kernel's page cache (with `O_DIRECT`:
///   sent to the device, possibly still in its volatile cache). They survive a **process
///   crash** but not a **power loss**.
/// - [`force`](Handle::force) returning Ok means every write that returned before the call
///   survives a power loss as far as the file system's `fdatasync` (or `fsync`, per
///   [`Config::sync`]) and the device's cache flush guarantee it; anything not forced may
///   be lost or torn, in any order. No directory is fsync'd: after creating a file, fsync
///   its directory.
/// - `close` does not sync.
///
/// # Errors
///
/// Every OS error is reported at the call that met it, with its errno; nothing latches
/// ([`failure`](Handle::failure) is always `None`). After a failed `force`, treat every
/// write since the last successful one as lost: Linux may have dropped the dirty pages and
/// marked them clean, so a later `force` can succeed without them.
///
/// ```
/// use writebehind::{Config, FileHandle, Handle};
/// let dir = tempfile::tempdir().unwrap();
/// let f = FileHandle::create(dir.path().join("log"), &Config::default()).unwrap();
/// assert_eq!(f.append(b"record 1;").unwrap(), 0);
/// assert_eq!(f.append(b"record 2;").unwrap(), 9);
/// f.force().unwrap();
/// let mut buf = [0u8; 8];
/// f.read(9, &mut buf).unwrap();
/// assert_eq!(&buf, b"record 2");
/// f.close().unwrap();
/// ```
#[derive(Debug)]
pub struct FileHandle {
    file: File,
    sync: SyncMode,
    direct: bool,
    /// Direct-I/O alignment of offsets, lengths and memory; 1 without `O_DIRECT`.
    align: usize,
    /// The cap on one call's length ([`Config::max_io_bytes`]).
    max_io: usize,
    start: AtomicU64,
    /// Holds the file's `flock` ([`Config::lock_file`]) until the handle is dropped.
    _lock: Option<File>,
    /// `fetch_max` after a write, `compare_exchange` to reserve an append, `store` by
    /// `set_len`.
    end: AtomicU64,
}

impl FileHandle {
    /// Opens an existing file for reading and writing; `end_position()` starts at its
    /// length and `start_position()` at 0. Fails with the OS error (e.g. `ENOENT`) or, for
    /// an invalid `cfg`, `InvalidInput`.
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, Handle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("data");
    /// std::fs::write(&path, b"0123456789").unwrap();
    /// let f = FileHandle::open(&path, &Config::default()).unwrap();
    /// assert_eq!(f.end_position(), 10);
    /// assert!(FileHandle::open(dir.path().join("missing"), &Config::default()).is_err());
    /// ```
    pub fn open(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::Existing)
    }

    /// Creates the file, or truncates it to length 0 if it exists
    /// ([`OpenMode::CreateOrTruncate`]).
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, Handle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
    /// assert_eq!((f.start_position(), f.end_position()), (0, 0));
    /// ```
    pub fn create(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::CreateOrTruncate)
    }

    /// Creates the file; fails with `EEXIST` if anything exists under `path`
    /// ([`OpenMode::CreateNew`]).
    ///
    /// ```
    /// use writebehind::{Config, FileHandle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("data");
    /// FileHandle::create_new(&path, &Config::default()).unwrap().close().unwrap();
    /// let e = FileHandle::create_new(&path, &Config::default()).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    /// ```
    pub fn create_new(path: impl AsRef<Path>, cfg: &Config) -> io::Result<Self> {
        Self::open_with(path, cfg, OpenMode::CreateNew)
    }

    /// Opens `path` as `mode` says; see [`OpenMode`]. Every opener takes an exclusive
    /// `flock` unless [`Config::lock_file`] is off.
    ///
    /// # Errors
    ///
    /// The OS error unchanged (`ENOENT`, `EEXIST`, `EISDIR`, `EROFS`, ...); `EWOULDBLOCK`
    /// ([`io::ErrorKind::WouldBlock`]) when another handle holds the file's lock;
    /// `InvalidInput` for a bad `cfg` (checked before the file is touched).
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, OpenMode};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("data");
    /// let cfg = Config::default();
    /// let first = FileHandle::open_with(&path, &cfg, OpenMode::CreateOrOpen).unwrap();
    /// let e = FileHandle::open_with(&path, &cfg, OpenMode::CreateOrOpen).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    /// drop(first);
    /// FileHandle::open_with(&path, &cfg, OpenMode::Existing).unwrap();
    /// ```
    pub fn open_with(path: impl AsRef<Path>, cfg: &Config, mode: OpenMode) -> io::Result<Self> {
        let opened = fileio::open(path.as_ref(), cfg, mode)?;
        let mut h = Self::new(opened.file, cfg)?;
        h._lock = opened.lock;
        Ok(h)
    }

    fn new(file: File, cfg: &Config) -> io::Result<Self> {
        let end = fileio::file_len(&file)?;
        let direct = cfg.is_direct_io();
        let align = if direct {
            fileio::dio_alignment(&file).bytes
        } else {
            1
        };
        Ok(FileHandle {
            file,
            sync: cfg.sync_mode(),
            direct,
            align,
            max_io: cfg.io_len_cap(),
            start: AtomicU64::new(0),
            _lock: None,
            end: AtomicU64::new(end),
        })
    }

    /// The alignment that write offsets and lengths must respect: the file's direct-I/O
    /// alignment with `O_DIRECT`, else 1.
    ///
    /// ```
    /// use writebehind::{Config, FileHandle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
    /// assert_eq!(f.alignment(), 1);
    /// ```
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// Makes every write that returned before the call durable with `fdatasync`, as
    /// [`File::sync_data`] does, whatever [`Config::sync`] says.
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, Handle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
    /// f.write(0, b"page").unwrap();
    /// f.sync_data().unwrap();
    /// ```
    pub fn sync_data(&self) -> io::Result<()> {
        fileio::sync(&self.file, SyncMode::Data)
    }

    /// Like [`sync_data`](FileHandle::sync_data), but always `fsync` (all metadata too),
    /// as [`File::sync_all`] does, whatever [`Config::sync`] says.
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, Handle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
    /// f.write(0, b"page").unwrap();
    /// f.sync_all().unwrap();
    /// ```
    pub fn sync_all(&self) -> io::Result<()> {
        fileio::sync(&self.file, SyncMode::All)
    }

    /// Closes the file (releasing its lock) and returns the error `close(2)` reports, if
    /// any. Nothing is
    /// buffered in this handle, so there is nothing to write back; close does not fsync
    /// (call [`force`](Handle::force) first for durability). Dropping the handle closes it
    /// too, ignoring that error.
    ///
    /// ```
    /// use writebehind::{Config, FileHandle, Handle};
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
    /// f.write(0, b"page").unwrap();
    /// f.force().unwrap();
    /// f.close().unwrap();
    /// ```
    pub fn close(self) -> io::Result<()> {
        nix::unistd::close(self.file).map_err(io::Error::from)
    }

    /// `EINVAL` naming the alignment unless `offset` and `len` are multiples of it.
    fn check_aligned(&self, offset: u64, len: usize) -> io::Result<()> {
        let a = self.align;
        if offset.is_multiple_of(a as u64) && len.is_multiple_of(a) {
            return Ok(());
        }
        Err(os_msg(
            libc::EINVAL,
            format!("O_DIRECT write requires {a}-byte alignment (offset {offset}, length {len})"),
        ))
    }

    /// The checks and the `pwrite` of `write`, also used when a `WriteBuffer` is released.
    fn write_checked(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_io_len(data.len(), self.max_io)?;
        let stop = range_end(offset, data.len())?;
        if offset < self.start.load(Ordering::Acquire) {
            return Err(edom());
        }
        if data.is_empty() {
            return Ok(());
        }
        self.check_aligned(offset, data.len())?;
        self.pwrite(offset, data)?;
        self.end.fetch_max(stop, Ordering::AcqRel);
        Ok(())
    }

    /// `pwrite`s all of `data`, through an aligned copy when `O_DIRECT` needs one.
    fn pwrite(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if (data.as_ptr() as usize).is_multiple_of(self.align) {
            return fileio::pwrite_all(&self.file, data, offset);
        }
        let mut bounce = fileio::alloc_aligned(data.len(), self.align)?;
        bounce.as_mut_slice()[..data.len()].copy_from_slice(data);
        fileio::pwrite_all(&self.file, &bounce.as_slice()[..data.len()], offset)
    }

    /// Atomically moves the end by `len` and returns the old end.
    fn reserve(&self, len: usize) -> io::Result<u64> {
        check_io_len(len, self.max_io)?;
        let mut at = self.end.load(Ordering::Acquire);
        loop {
            let stop = range_end(at, len)?;
            if len > 0 {
                self.check_aligned(at, len)?;
            }
            match self
                .end
                .compare_exchange_weak(at, stop, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(at),
                Err(now) => at = now,
            }
        }
    }

    /// `EINVAL` on overflow, `EDOM` unless the range lies within `[start, end)`.
    fn check_read(&self, offset: u64, len: usize) -> io::Result<()> {
        check_io_len(len, self.max_io)?;
        let stop = range_end(offset, len)?;
        if offset < self.start.load(Ordering::Acquire) || stop > self.end.load(Ordering::Acquire) {
            return Err(edom());
        }
        Ok(())
    }

    fn pread(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.direct {
            fileio::pread_direct(&self.file, self.align, buf, offset)
        } else {
            fileio::pread_zero_fill(&self.file, buf, offset)
        }
    }
}

impl CommitSink for FileHandle {
    fn commit(&self, offset: u64, len: usize, buf: AlignedBuf) -> io::Result<()> {
        self.write_checked(offset, &buf.as_slice()[..len])
    }
}

impl Handle for FileHandle {
    fn start_position(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    fn end_position(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_checked(offset, data)
    }

    fn append(&self, data: &[u8]) -> io::Result<u64> {
        let at = self.reserve(data.len())?;
        if !data.is_empty() {
            // If this fails the reserved range stays a hole that reads as zeros.
            self.pwrite(at, data)?;
        }
        Ok(at)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_read(offset, buf.len())?;
        self.pread(offset, buf)
    }

    fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.max_io)?;
        range_end(offset, len)?;
        if offset < self.start_position() {
            return Err(edom());
        }
        if len > 0 {
            self.check_aligned(offset, len)?;
        }
        let buf = fileio::alloc_aligned(len, self.align.max(64))?;
        Ok(WriteBuffer::new(self, offset, len, buf))
    }

    fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.max_io)?;
        // Allocate first so a failure reserves nothing.
        let buf = fileio::alloc_aligned(len, self.align.max(64))?;
        let at = self.reserve(len)?;
        Ok(WriteBuffer::new(self, at, len, buf))
    }

    fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>> {
        self.check_read(offset, len)?;
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| os_msg(libc::ENOMEM, format!("cannot allocate {len} bytes")))?;
        v.resize(len, 0);
        self.pread(offset, &mut v)?;
        Ok(ReadBuffer::owned(v))
    }

    fn force(&self) -> io::Result<()> {
        fileio::sync(&self.file, self.sync)
    }

    fn force_range(&self, start: u64, stop: u64) -> io::Result<()> {
        fileio::check_force_range(start, stop)?;
        let stop = stop.min(self.end_position());
        if start >= stop {
            return Ok(()); // nothing was ever written there
        }
        if !self.direct {
            // Writes back just this range first, so the sync below has less to wait for
            // when other ranges are dirty too; the sync is what makes it durable.
            fileio::sync_range(&self.file, start, stop)?;
        }
        fileio::sync(&self.file, self.sync)
    }

    /// `ftruncate` on the caller's thread, then the end moves. Writes racing it past
    /// `len` land before or after it, as with a plain file.
    fn set_len(&self, len: u64) -> io::Result<()> {
        fileio::check_set_len(len, self.start_position(), self.align)?;
        self.file.set_len(len)?;
        self.end.store(len, Ordering::Release);
        Ok(())
    }

    fn truncate_start(&self, new_start: u64) -> io::Result<()> {
        if new_start > self.end_position() {
            return Err(edom());
        }
        self.start.fetch_max(new_start, Ordering::AcqRel);
        Ok(())
    }
}

/// `read_at`/`write_at` as on a [`File`]: a read that reaches the end returns the bytes
/// there are (0 at or past the end); a write is all or nothing.
///
/// ```
/// use std::os::unix::fs::FileExt;
/// use writebehind::{Config, FileHandle};
/// let dir = tempfile::tempdir().unwrap();
/// let f = FileHandle::create(dir.path().join("data"), &Config::default()).unwrap();
/// assert_eq!(f.write_at(b"hello", 0).unwrap(), 5);
/// let mut buf = [0u8; 8];
/// assert_eq!(f.read_at(&mut buf, 3).unwrap(), 2);
/// assert_eq!(&buf[..2], b"lo");
/// ```
impl FileExt for FileHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        handle::read_at(self, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        handle::write_at(self, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno;

    #[test]
    fn force_range_checks_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let f = FileHandle::create(dir.path().join("f"), &Config::default()).unwrap();
        f.write(0, &[1u8; 8192]).unwrap();
        f.force_range(0, 4096).unwrap();
        f.force_range(100, u64::MAX).unwrap();
        f.force_range(1 << 40, 1 << 41).unwrap();
        f.force_range(7, 7).unwrap();
        assert_eq!(errno(&f.force_range(5, 3).unwrap_err()), Some(libc::EINVAL));
    }

    #[test]
    fn bad_config_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileHandle::create(dir.path().join("f"), &Config::default().queue_depth(0))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(!dir.path().join("f").exists(), "nothing created");
    }

    #[test]
    fn direct_reads_of_a_file_with_an_unaligned_length() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = FileHandle::open(&path, &Config::default().direct_io(true)).unwrap();
        assert_eq!(f.end_position(), 1000);
        let mut buf = vec![0u8; 1000];
        f.read(0, &mut buf).unwrap();
        assert_eq!(buf, data);
        let mut tail = [0u8; 10];
        f.read(990, &mut tail).unwrap();
        assert_eq!(&tail[..], &data[990..]);
        // An aligned append needs an aligned end: refused, nothing reserved.
        let e = f.append(&vec![1u8; f.alignment()]).unwrap_err();
        assert_eq!(errno(&e), Some(libc::EINVAL));
        assert_eq!(f.end_position(), 1000);
    }

    #[test]
    fn reads_past_the_file_length_below_the_end_are_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let f = FileHandle::create(dir.path().join("f"), &Config::default()).unwrap();
        let b = f.append_buffer(10).unwrap(); // reserved, file still empty
        assert_eq!(f.end_position(), 10);
        assert_eq!(&*f.read_buffer(0, 10).unwrap(), &[0u8; 10]);
        drop(b);
    }
}
