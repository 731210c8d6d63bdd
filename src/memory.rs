//! `MemoryHandle`: everything in memory, the reference model the tests compare against.

use std::io;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::aligned::AlignedBuf;
use crate::buffer::{CommitSink, ReadBuffer, WriteBuffer};
use crate::config::DEFAULT_MAX_IO_BYTES;
use crate::error::{check_io_len, edom, os_msg, range_end};
use crate::fileio::alloc_aligned;
use crate::handle::Handle;

/// Everything in memory; the reference model that tests compare other handles against.
///
/// One lock guards the bytes and both positions, so every call is atomic with respect to
/// every other. Bytes below the start are freed (lazily, once they make up half of the
/// storage). Zero-length calls still check their offset (a read needs
/// `start <= offset <= end`, a write `offset >= start`) and otherwise change nothing.
///
/// One call's length is capped like a file handle's (see
/// [`Config::max_io_bytes`](crate::Config::max_io_bytes); default
/// [`DEFAULT_MAX_IO_BYTES`], or [`with_max_io_bytes`](MemoryHandle::with_max_io_bytes)):
/// above it the call fails with `EINVAL`; memory it cannot get (a write far past the end,
/// a huge buffer) gives `ENOMEM`.
///
/// ```
/// use writebehind::{Handle, MemoryHandle};
/// let h = MemoryHandle::new();
/// h.write(4, b"data").unwrap();
/// let mut buf = [9u8; 8];
/// h.read(0, &mut buf).unwrap();
/// assert_eq!(&buf, b"\0\0\0\0data"); // the hole reads as zeros
/// h.truncate_start(4).unwrap();
/// assert_eq!(writebehind::errno(&h.read(0, &mut buf).unwrap_err()), Some(libc::EDOM));
/// ```
#[derive(Debug)]
pub struct MemoryHandle {
    state: RwLock<Contents>,
    max_io: usize,
}

impl Default for MemoryHandle {
    fn default() -> Self {
        MemoryHandle::with_max_io_bytes(DEFAULT_MAX_IO_BYTES)
    }
}

/// `bytes[i]` holds offset `base + i`; `base <= start`, and bytes past `bytes.len()` (up to
/// `end`) were never written and read as zeros.
#[derive(Debug, Default)]
struct Contents {
    base: u64,
    start: u64,
    end: u64,
    bytes: Vec<u8>,
}

impl Contents {
    /// `EINVAL` on overflow, `EDOM` unless `start <= offset` and `offset + len <= end`.
    fn check_read(&self, offset: u64, len: usize) -> io::Result<()> {
        let stop = range_end(offset, len)?;
        if offset < self.start || stop > self.end {
            return Err(edom());
        }
        Ok(())
    }

    fn copy_out(&self, offset: u64, buf: &mut [u8]) {
        // offset >= start >= base, and offset < end fits in memory because a write put it there.
        let from = (offset - self.base) as usize;
        let have = self.bytes.len().saturating_sub(from).min(buf.len());
        if have > 0 {
            buf[..have].copy_from_slice(&self.bytes[from..from + have]);
        }
        buf[have..].fill(0);
    }

    /// Stores `data` at `offset` (already checked: `offset >= start`, no overflow).
    fn store(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let too_big = || {
            os_msg(
                libc::ENOMEM,
                format!("memory handle cannot hold a write at offset {offset}"),
            )
        };
        let from = usize::try_from(offset - self.base).map_err(|_| too_big())?;
        let to = from.checked_add(data.len()).ok_or_else(too_big)?;
        if to > self.bytes.len() {
            // Fallible, so an absurd offset is an error rather than an abort.
            self.bytes
                .try_reserve(to - self.bytes.len())
                .map_err(|_| too_big())?;
            self.bytes.resize(to, 0);
        }
        self.bytes[from..to].copy_from_slice(data);
        self.end = self.end.max(offset + data.len() as u64);
        Ok(())
    }

    /// Reserves `[end, end + len)` and returns its offset.
    fn reserve(&mut self, len: usize) -> io::Result<u64> {
        let at = self.end;
        self.end = range_end(at, len)?;
        Ok(at)
    }
}

impl MemoryHandle {
    /// An empty handle: start and end at 0.
    ///
    /// ```
    /// use writebehind::{Handle, MemoryHandle};
    /// let h = MemoryHandle::new();
    /// assert_eq!((h.start_position(), h.end_position()), (0, 0));
    /// ```
    pub fn new() -> Self {
        MemoryHandle::default()
    }

    /// An empty handle whose calls may each ask for at most `max_io_bytes` bytes.
    ///
    /// ```
    /// use writebehind::{Handle, MemoryHandle};
    /// let h = MemoryHandle::with_max_io_bytes(4);
    /// h.write(0, b"four").unwrap();
    /// let e = h.write(0, b"fives").unwrap_err();
    /// assert_eq!(writebehind::errno(&e), Some(libc::EINVAL));
    /// ```
    pub fn with_max_io_bytes(max_io_bytes: usize) -> Self {
        MemoryHandle {
            state: RwLock::default(),
            max_io: max_io_bytes,
        }
    }

    fn state(&self) -> RwLockReadGuard<'_, Contents> {
        // A panic while holding the lock cannot leave Contents half-updated in a way that
        // breaks its invariants (store checks before it mutates), so poisoning is ignored.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, Contents> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The checks and the store of `write`, also used when a `WriteBuffer` is released.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_io_len(data.len(), self.max_io)?;
        range_end(offset, data.len())?;
        let mut s = self.state_mut();
        if offset < s.start {
            return Err(edom());
        }
        s.store(offset, data)
    }
}

impl CommitSink for MemoryHandle {
    fn commit(&self, offset: u64, len: usize, buf: AlignedBuf) -> io::Result<()> {
        self.write_at(offset, &buf.as_slice()[..len])
    }
}

impl Handle for MemoryHandle {
    fn start_position(&self) -> u64 {
        self.state().start
    }

    fn end_position(&self) -> u64 {
        self.state().end
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }

    fn append(&self, data: &[u8]) -> io::Result<u64> {
        check_io_len(data.len(), self.max_io)?;
        let mut s = self.state_mut();
        let at = s.end;
        range_end(at, data.len())?;
        s.store(at, data)?;
        Ok(at)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_io_len(buf.len(), self.max_io)?;
        let s = self.state();
        s.check_read(offset, buf.len())?;
        s.copy_out(offset, buf);
        Ok(())
    }

    fn write_buffer(&self, offset: u64, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.max_io)?;
        range_end(offset, len)?;
        if offset < self.start_position() {
            return Err(edom());
        }
        let buf = alloc_aligned(len, 64)?;
        Ok(WriteBuffer::new(self, offset, len, buf))
    }

    fn append_buffer(&self, len: usize) -> io::Result<WriteBuffer<'_>> {
        check_io_len(len, self.max_io)?;
        // Allocate first so a failure reserves nothing.
        let buf = alloc_aligned(len, 64)?;
        let at = self.state_mut().reserve(len)?;
        Ok(WriteBuffer::new(self, at, len, buf))
    }

    fn read_buffer(&self, offset: u64, len: usize) -> io::Result<ReadBuffer<'_>> {
        check_io_len(len, self.max_io)?;
        let s = self.state();
        s.check_read(offset, len)?;
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| os_msg(libc::ENOMEM, format!("cannot allocate {len} bytes")))?;
        v.resize(len, 0);
        s.copy_out(offset, &mut v);
        Ok(ReadBuffer::owned(v))
    }

    fn force(&self) -> io::Result<()> {
        Ok(())
    }

    fn force_range(&self, start: u64, stop: u64) -> io::Result<()> {
        crate::fileio::check_force_range(start, stop)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state_mut();
        crate::fileio::check_set_len(len, s.start, 1)?;
        // base <= start <= len, so this fits whatever `bytes` holds.
        let keep = len - s.base;
        if keep < s.bytes.len() as u64 {
            s.bytes.truncate(keep as usize);
        }
        s.end = len;
        Ok(())
    }

    fn truncate_start(&self, new_start: u64) -> io::Result<()> {
        let mut s = self.state_mut();
        if new_start > s.end {
            return Err(edom());
        }
        if new_start <= s.start {
            return Ok(());
        }
        s.start = new_start;
        // Free the dead prefix once it is at least half the storage: amortised O(1) per byte.
        let dead = ((new_start - s.base) as usize).min(s.bytes.len());
        if dead > 0 && dead >= s.bytes.len() / 2 {
            s.bytes.drain(..dead);
            s.base = new_start;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno;

    #[test]
    fn truncate_frees_and_keeps_the_rest() {
        let h = MemoryHandle::new();
        let data: Vec<u8> = (0..100u8).collect();
        h.write(0, &data).unwrap();
        h.truncate_start(60).unwrap();
        assert_eq!(h.state().base, 60, "dead prefix >= half: freed");
        assert_eq!(h.state().bytes.len(), 40);
        h.truncate_start(70).unwrap();
        assert_eq!(h.state().base, 60, "10 of 40 dead: kept for now");
        let mut b = [0u8; 30];
        h.read(70, &mut b).unwrap();
        assert_eq!(&b[..], &data[70..]);
        assert_eq!(
            errno(&h.read(69, &mut b[..1]).unwrap_err()),
            Some(libc::EDOM)
        );
        h.write(150, b"x").unwrap();
        let mut tail = [7u8; 81];
        h.read(70, &mut tail).unwrap();
        assert_eq!(&tail[..30], &data[70..]);
        assert!(tail[30..80].iter().all(|&x| x == 0));
        assert_eq!(tail[80], b'x');
    }

    #[test]
    fn absurd_sizes_are_errors_not_aborts() {
        let h = MemoryHandle::new();
        let e = h.write(u64::MAX / 2, b"x").unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENOMEM));
        assert_eq!(h.end_position(), 0);
        assert!(h.append_buffer(usize::MAX).is_err());
        assert_eq!(h.end_position(), 0);
    }

    #[test]
    fn append_buffer_reserves_at_the_call() {
        let h = MemoryHandle::new();
        let mut a = h.append_buffer(4).unwrap();
        assert_eq!(h.end_position(), 4);
        assert_eq!(h.append(b"next").unwrap(), 4);
        assert_eq!(&*h.read_buffer(0, 4).unwrap(), &[0; 4]);
        a.copy_from_slice(b"abcd");
        a.release().unwrap();
        assert_eq!(&*h.read_buffer(0, 8).unwrap(), b"abcdnext");
    }
}
