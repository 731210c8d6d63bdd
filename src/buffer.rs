//! The zero-copy guards returned by `write_buffer`, `append_buffer` and `read_buffer`.

use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::aligned::AlignedBuf;

/// Shared, immutable bytes a [`ReadBuffer`] can borrow without copying.
pub(crate) trait Bytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl Bytes for AlignedBuf {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Where a [`WriteBuffer`] puts its bytes when it is released.
pub(crate) trait CommitSink: Sync {
    /// Stores the first `len` bytes of `buf` at `offset`. Owns `buf` from now on.
    fn commit(&self, offset: u64, len: usize, buf: AlignedBuf) -> io::Result<()>;

    /// A guard was dropped and its `commit` failed with `error` (nobody else will see it):
    /// the handle may count it. The error is `EDOM`, `EINVAL` or an already-latched one,
    /// so it latches nothing new.
    fn dropped_unstored(&self, _error: &io::Error) {}
}

/// A writable view of `[offset, offset + len)`, returned by
/// [`Handle::write_buffer`](crate::Handle::write_buffer) and
/// [`Handle::append_buffer`](crate::Handle::append_buffer).
///
/// It starts zero-filled. Fill it through `DerefMut`; the whole range counts as written
/// when the guard is dropped, or when [`release`](WriteBuffer::release) is called.
///
/// # Errors
///
/// [`release`](WriteBuffer::release) returns what storing the bytes returned: `EDOM` when
/// [`truncate_start`](crate::Handle::truncate_start) moved the start past the guard's
/// offset meanwhile, the handle's latched error (see [`Handle`](crate::Handle)), or for
/// [`FileHandle`](crate::FileHandle) the error of its `pwrite`. A dropped guard cannot
/// return it: the failure goes to the `log` facade (level `warn`) and, on a
/// [`WriteBehindFile`](crate::WriteBehindFile), is counted in
/// [`Stats::dropped_buffer_failures`](crate::Stats::dropped_buffer_failures).
///
/// ```
/// use writebehind::{Handle, MemoryHandle};
/// let h = MemoryHandle::new();
/// let mut b = h.append_buffer(4).unwrap();
/// b.copy_from_slice(b"page");
/// assert_eq!(b.offset(), 0);
/// b.release().unwrap();
/// let mut out = [0u8; 4];
/// h.read(0, &mut out).unwrap();
/// assert_eq!(&out, b"page");
/// ```
pub struct WriteBuffer<'a> {
    offset: u64,
    len: usize,
    buf: Option<AlignedBuf>,
    sink: &'a dyn CommitSink,
}

impl<'a> WriteBuffer<'a> {
    /// A guard over `buf[..len]` (zeroed here) that commits to `sink` at `offset`.
    pub(crate) fn new(
        sink: &'a dyn CommitSink,
        offset: u64,
        len: usize,
        mut buf: AlignedBuf,
    ) -> Self {
        debug_assert!(buf.capacity() >= len);
        buf.as_mut_slice()[..len].fill(0);
        WriteBuffer {
            offset,
            len,
            buf: Some(buf),
            sink,
        }
    }

    /// The file offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Stores the bytes now and returns the outcome.
    pub fn release(mut self) -> io::Result<()> {
        self.commit()
    }

    fn commit(&mut self) -> io::Result<()> {
        match self.buf.take() {
            Some(buf) => self.sink.commit(self.offset, self.len, buf),
            None => Ok(()),
        }
    }
}

impl Deref for WriteBuffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.as_slice()[..self.len],
            None => &[],
        }
    }
}

impl DerefMut for WriteBuffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => &mut b.as_mut_slice()[..self.len],
            None => &mut [],
        }
    }
}

impl Drop for WriteBuffer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            log::warn!(
                "writebehind: dropped write buffer at offset {} ({} bytes) was not stored: {e}",
                self.offset,
                self.len
            );
            self.sink.dropped_unstored(&e);
        }
    }
}

impl std::fmt::Debug for WriteBuffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBuffer")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

enum ReadData {
    Owned(Vec<u8>),
    Shared {
        buf: Arc<dyn Bytes>,
        start: usize,
        len: usize,
    },
}

/// A read-only view of `[offset, offset + len)`, returned by
/// [`Handle::read_buffer`](crate::Handle::read_buffer).
///
/// Where the bytes already sit in one in-memory buffer it borrows that buffer (no copy);
/// otherwise it owns a copy. Either way it derefs to `&[u8]`.
///
/// ```
/// use writebehind::{Handle, MemoryHandle};
/// let h = MemoryHandle::new();
/// h.write(0, b"abcdef").unwrap();
/// assert_eq!(&*h.read_buffer(2, 3).unwrap(), b"cde");
/// ```
pub struct ReadBuffer<'a> {
    data: ReadData,
    _handle: PhantomData<&'a ()>,
}

impl ReadBuffer<'_> {
    /// A view that owns its bytes.
    pub(crate) fn owned(bytes: Vec<u8>) -> Self {
        ReadBuffer {
            data: ReadData::Owned(bytes),
            _handle: PhantomData,
        }
    }

    /// A view of `buf[start..start + len]`, kept alive by the reference count.
    pub(crate) fn shared(buf: Arc<dyn Bytes>, start: usize, len: usize) -> Self {
        debug_assert!(start + len <= buf.bytes().len());
        ReadBuffer {
            data: ReadData::Shared { buf, start, len },
            _handle: PhantomData,
        }
    }
}

impl Deref for ReadBuffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.data {
            ReadData::Owned(v) => v,
            ReadData::Shared { buf, start, len } => &buf.bytes()[*start..*start + *len],
        }
    }
}

impl std::fmt::Debug for ReadBuffer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuffer")
            .field("len", &self.len())
            .finish()
    }
}
