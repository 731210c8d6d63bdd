//! The contract every handle implements.

use std::io;

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
pub trait Handle: Send + Sync {
    /// The first byte still kept; 0 for a new file.
    fn start_position(&self) -> u64;

    /// One past the last byte written; for an existing file opened again, its length.
    fn end_position(&self) -> u64;

    /// Writes `data` at `offset`. Once it returns, every read sees the data.
    /// `offset < start_position()` fails with `EDOM` and stores nothing.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Atomically reserves `[end, end + len)`, writes `data` there and returns `end`.
    fn append(&self, data: &[u8]) -> io::Result<u64>;

    /// Fills `buf` with the latest bytes of `[offset, offset + buf.len())`. Any part below
    /// the start or past the end fails with `EDOM`; holes never written read as zeros.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// A zero-filled buffer for `[offset, offset + len)`, stored when released or dropped.
    fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>>;

    /// Like [`write_buffer`](Handle::write_buffer) at a range reserved at the end.
    fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>>;

    /// The bytes of `[offset, offset + len)`, borrowed where they are already in memory.
    /// Same errors as [`read`](Handle::read).
    fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>>;

    /// Returns once every write that returned before the call is durable (written and
    /// fsync'd or fdatasync'd).
    fn force(&self) -> io::Result<()>;

    /// Like [`force`](Handle::force), for the bytes of `[start, stop)` only.
    fn force_range(&self, start: u64, stop: u64) -> io::Result<()>;

    /// Moves the start to `new_start`: bytes below it are gone for reads and writes.
    /// `new_start > end_position()` fails with `EDOM`; `new_start <= start_position()`
    /// changes nothing.
    fn truncate_start(&self, new_start: u64) -> io::Result<()>;

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
