//! The contract every handle implements.

use std::io;
use std::sync::Arc;

use crate::buffer::{ReadBuffer, WriteBuffer};

/// A byte-addressed file handle shared by many threads through `&self` (wrap it in an
/// `Arc`). Every implementation returns exactly the bytes a plain file would, for any
/// pattern of reads and writes; errors keep their errno (see [`crate::errno`]).
///
/// Positions: `start_position()` is the first byte still kept (it moves with
/// [`truncate_start`](Handle::truncate_start)), `end_position()` is one past the last byte
/// written. Accessing any byte below the start, or reading past the end, fails with `EDOM`
/// and changes nothing.
///
/// # Durability
///
/// - A write (`write`, `append`, a released or dropped [`WriteBuffer`]) that returned Ok
///   is seen by every later read. It is **not durable**: [`WriteBehindFile`] holds it in
///   memory until write-back, [`FileHandle`] in the page cache (with `O_DIRECT`, possibly
///   the device cache).
/// - [`force`](Handle::force) returning Ok means every write that returned before the
///   call is durable: written in full and covered by an `fdatasync` (or `fsync`, per
///   [`Config::sync`](crate::Config::sync)) that started after the write completed.
/// - **Process crash** (`SIGKILL`, panic, abort): every byte of every `force` that
///   returned Ok is in the file (the page cache outlives the process); any write not
///   forced may be absent, present or partly present. Opening the file again with a
///   file-backed handle first waits for direct I/O the dead process left in flight.
/// - **Power loss**: a `force` that returned Ok is as durable as the file system's
///   `fdatasync`/`fsync` and the device's cache flush make it; anything not forced may be
///   lost or torn, in any order. Nothing here fsyncs the parent directory: after creating
///   a file, fsync its directory for the file's name to survive a power loss.
///
/// # Errors and the fail-stop latch
///
/// Bad arguments are refused at the call and change nothing: `EDOM` outside
/// `[start, end)`, `EINVAL` when `offset + len` overflows (or a write would end past
/// `i64::MAX`), when a length exceeds the cap on one call
/// ([`Config::max_io_bytes`](crate::Config::max_io_bytes)), or for a misaligned `O_DIRECT`
/// write; `ENOMEM` when a buffer the call needs cannot be allocated. None of these fails
/// the handle.
///
/// A write or sync that fails in the background for good (`EIO`, `ENOSPC`, ...)
/// **latches** that errno in a [`WriteBehindFile`]: from then on every write, force and
/// `close` returns it (see [`failure`](Handle::failure)), nothing more is written or
/// synced, and reads keep returning the buffered bytes so they can be saved elsewhere.
/// Treat everything since the last successful force as lost. The blocking handles report
/// each OS error at its own call instead.
///
/// docs/durability.md lists every fault, its outcome and the test that checks it.
///
/// [`WriteBehindFile`]: crate::WriteBehindFile
/// [`FileHandle`]: crate::FileHandle
///
/// ```
/// use writebehind::{Handle, MemoryHandle};
/// let h = MemoryHandle::new();
/// h.write(0, b"hello").unwrap();
/// let at = h.append(b" world").unwrap();
/// assert_eq!(at, 5);
/// let mut buf = [0u8; 11];
/// h.read(0, &mut buf).unwrap();
/// assert_eq!(&buf, b"hello world");
/// h.force().unwrap();
/// ```
///
/// Methods added to this trait in later versions come with a default implementation
/// wherever one makes sense (as [`failure`](Handle::failure) does), so implementations
/// outside this crate keep compiling.
///
/// Code written against the contract also takes shared handles: `Handle` is implemented
/// for `&H`, `Arc<H>` and `Box<H>` (`H` may be `dyn Handle`).
///
/// ```
/// use std::sync::Arc;
/// use writebehind::{Handle, MemoryHandle};
/// fn log(h: impl Handle) -> std::io::Result<u64> {
///     h.append(b"record")
/// }
/// let shared = Arc::new(MemoryHandle::new());
/// assert_eq!(log(Arc::clone(&shared)).unwrap(), 0);
/// assert_eq!(log(&*shared).unwrap(), 6);
/// let boxed: Box<dyn Handle> = Box::new(MemoryHandle::new());
/// assert_eq!(log(&boxed).unwrap(), 0);
/// ```
pub trait Handle: Send + Sync {
    /// The first byte still kept; 0 for a new file.
    fn start_position(&self) -> u64;

    /// One past the last byte written; for an existing file opened again, its length.
    fn end_position(&self) -> u64;

    /// Writes `data` at `offset`. Once it returns, every read sees the data.
    ///
    /// # Errors
    ///
    /// `EDOM` when `offset < start_position()`; `EINVAL` when the range overflows or ends
    /// past `i64::MAX`, when `data` is longer than the cap on one call, or (with
    /// `O_DIRECT`) when `offset` or the length is misaligned; the latched error of a
    /// failed handle; for a blocking handle, the OS error of its `pwrite`. Nothing is
    /// stored when it fails.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Atomically reserves `[end, end + len)`, writes `data` there and returns `end`.
    ///
    /// # Errors
    ///
    /// As [`write`](Handle::write) (`EINVAL` also when the current end is misaligned
    /// for `O_DIRECT`). On failure nothing is reserved, except that a blocking handle
    /// whose `pwrite` failed leaves the reserved range as a hole that reads as zeros.
    fn append(&self, data: &[u8]) -> io::Result<u64>;

    /// Fills `buf` with the latest bytes of `[offset, offset + buf.len())`; holes never
    /// written read as zeros.
    ///
    /// # Errors
    ///
    /// `EDOM` when any part lies below the start or past the end; `EINVAL` when the range
    /// overflows or `buf` is longer than the cap on one call; `ENOMEM` when a bounce
    /// buffer cannot be allocated; the OS error of a `pread`. Works on a failed handle.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// A zero-filled buffer for `[offset, offset + len)`, stored when released or dropped.
    ///
    /// # Errors
    ///
    /// As [`write`](Handle::write) for the range, at the call; `ENOMEM` when the buffer
    /// cannot be allocated. [`WriteBuffer::release`] reports what storing returned.
    fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>>;

    /// Like [`write_buffer`](Handle::write_buffer) at a range reserved at the end.
    ///
    /// # Errors
    ///
    /// As [`append`](Handle::append), and `ENOMEM` when the buffer cannot be allocated;
    /// nothing is reserved when it fails.
    fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>>;

    /// The bytes of `[offset, offset + len)`, borrowed where they are already in memory.
    ///
    /// # Errors
    ///
    /// As [`read`](Handle::read); `ENOMEM` when a copy of `len` bytes cannot be
    /// allocated.
    fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>>;

    /// Returns once every write that returned before the call is durable (written and
    /// fsync'd or fdatasync'd).
    ///
    /// # Errors
    ///
    /// The errno of a failed write-back or sync (`EIO`, `ENOSPC`, ...), which latches in a
    /// [`WriteBehindFile`](crate::WriteBehindFile); after a failed force the data written
    /// since the last successful one must be treated as lost.
    fn force(&self) -> io::Result<()>;

    /// Like [`force`](Handle::force), for the bytes of `[start, stop)` only.
    ///
    /// # Errors
    ///
    /// `EINVAL` when `start > stop`; otherwise as [`force`](Handle::force).
    fn force_range(&self, start: u64, stop: u64) -> io::Result<()>;

    /// Moves the start to `new_start`: bytes below it are gone for reads and writes.
    /// `new_start <= start_position()` changes nothing.
    ///
    /// # Errors
    ///
    /// `EDOM` when `new_start > end_position()`. Works on a failed handle.
    fn truncate_start(&self, new_start: u64) -> io::Result<()>;

    /// The latched error if the handle has failed (see the fail-stop latch above), else
    /// `None`; it makes no call to the file. Once `Some`, every later write and force
    /// returns this errno. The default, for handles that report each error at its own
    /// call and never latch, is `None`.
    fn failure(&self) -> Option<io::Error> {
        None
    }

    /// Sets the end to `len`, as `std::fs::File::set_len` does: growing makes the new
    /// range read as zeros; shrinking discards every byte at or past `len`, and a later
    /// read or a growth never shows them again. Like a write, it is durable once a later
    /// [`force`](Handle::force) returns.
    ///
    /// `len < start_position()` fails with `EDOM` and changes nothing (the bytes below the
    /// start are gone, so no length can describe them). `len` past `i64::MAX`, or, with
    /// direct I/O, not a multiple of the alignment, fails with `EINVAL`.
    ///
    /// ```
    /// use writebehind::{Handle, MemoryHandle};
    /// let h = MemoryHandle::new();
    /// h.write(0, b"hello world").unwrap();
    /// h.set_len(5).unwrap();
    /// h.set_len(8).unwrap();
    /// let mut buf = [9u8; 8];
    /// h.read(0, &mut buf).unwrap();
    /// assert_eq!(&buf, b"hello\0\0\0");
    /// ```
    ///
    /// Every handle of this crate implements it; the default, for handles written
    /// elsewhere before it existed, fails with `EOPNOTSUPP` and changes nothing.
    fn set_len(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Err(crate::error::os_msg(
            libc::EOPNOTSUPP,
            "set_len is not implemented by this handle",
        ))
    }
}

macro_rules! forward_handle {
    () => {
        fn start_position(&self) -> u64 {
            (**self).start_position()
        }
        fn end_position(&self) -> u64 {
            (**self).end_position()
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            (**self).write(offset, data)
        }
        fn append(&self, data: &[u8]) -> io::Result<u64> {
            (**self).append(data)
        }
        fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            (**self).read(offset, buf)
        }
        fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>> {
            (**self).write_buffer(offset, len)
        }
        fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>> {
            (**self).append_buffer(len)
        }
        fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>> {
            (**self).read_buffer(offset, len)
        }
        fn force(&self) -> io::Result<()> {
            (**self).force()
        }
        fn force_range(&self, start: u64, stop: u64) -> io::Result<()> {
            (**self).force_range(start, stop)
        }
        fn truncate_start(&self, new_start: u64) -> io::Result<()> {
            (**self).truncate_start(new_start)
        }
        fn failure(&self) -> Option<io::Error> {
            (**self).failure()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            (**self).set_len(len)
        }
    };
}

impl<H: Handle + ?Sized> Handle for &H {
    forward_handle!();
}

impl<H: Handle + ?Sized> Handle for Arc<H> {
    forward_handle!();
}

impl<H: Handle + ?Sized> Handle for Box<H> {
    forward_handle!();
}

/// `FileExt::read_at` semantics on top of [`Handle::read`]: reads what there is up to the
/// end and returns how many bytes that was (0 at or past the end).
pub(crate) fn read_at(h: &impl Handle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let end = h.end_position();
    if offset >= end || buf.is_empty() {
        return Ok(0);
    }
    let n = buf.len().min((end - offset) as usize);
    h.read(offset, &mut buf[..n])?;
    Ok(n)
}

/// `FileExt::write_at` semantics on top of [`Handle::write`]: all or nothing.
pub(crate) fn write_at(h: &impl Handle, buf: &[u8], offset: u64) -> io::Result<usize> {
    h.write(offset, buf)?;
    Ok(buf.len())
}
