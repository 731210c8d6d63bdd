//! The reference the suite compares handles against: `MemoryHandle`, cross-checked on every
//! call against `Shadow`, a dozen obvious lines over a `Vec` that nothing else shares. So
//! a bug in `MemoryHandle` fails the suite even where `MemoryHandle` is the handle under
//! test.

use std::io;

use writebehind::{errno, Handle, MemoryHandle};

use super::{append_via_buffer, assert_same, read_vec, snapshot, write_via_buffer, Snapshot};

/// The plainest possible model: byte `i` of the file is `bytes[i]`.
#[derive(Debug, Default)]
struct Shadow {
    start: u64,
    end: u64,
    bytes: Vec<u8>,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Shadow {
    fn write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        let stop = off
            .checked_add(data.len() as u64)
            .ok_or(err(libc::EINVAL))?;
        if off < self.start {
            return Err(err(libc::EDOM));
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.bytes.len() < stop as usize {
            self.bytes.resize(stop as usize, 0);
        }
        self.bytes[off as usize..stop as usize].copy_from_slice(data);
        self.end = self.end.max(stop);
        Ok(())
    }

    fn read(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let stop = off.checked_add(len as u64).ok_or(err(libc::EINVAL))?;
        if off < self.start || stop > self.end {
            return Err(err(libc::EDOM));
        }
        Ok((off..stop)
            .map(|i| self.bytes.get(i as usize).copied().unwrap_or(0))
            .collect())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len < self.start {
            return Err(err(libc::EDOM));
        }
        self.bytes.truncate(len as usize);
        self.end = len;
        Ok(())
    }

    fn truncate_start(&mut self, new_start: u64) -> io::Result<()> {
        if new_start > self.end {
            return Err(err(libc::EDOM));
        }
        self.start = self.start.max(new_start);
        Ok(())
    }
}

/// `MemoryHandle` and `Shadow` side by side; every call asserts they agree and returns the
/// common outcome.
#[derive(Debug, Default)]
pub struct Model {
    mem: MemoryHandle,
    shadow: Shadow,
}

impl Model {
    pub fn new() -> Self {
        Model::default()
    }

    fn agree<T: PartialEq + std::fmt::Debug + Clone>(
        what: &str,
        mem: io::Result<T>,
        shadow: io::Result<T>,
    ) -> io::Result<T> {
        let copy = match &shadow {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(err(errno(e).unwrap())),
        };
        assert_same(
            &format!("model self-check: MemoryHandle vs Shadow, {what}"),
            mem,
            shadow,
        );
        copy
    }

    pub fn start(&self) -> u64 {
        assert_eq!(
            self.mem.start_position(),
            self.shadow.start,
            "model self-check: start"
        );
        self.shadow.start
    }

    pub fn end(&self) -> u64 {
        assert_eq!(
            self.mem.end_position(),
            self.shadow.end,
            "model self-check: end"
        );
        self.shadow.end
    }

    /// Stores `data` at `off`: through `write` or `write_buffer` on the `MemoryHandle`,
    /// alternately, so both paths are cross-checked.
    pub fn write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        let mem = if data.len().is_multiple_of(2) {
            self.mem.write(off, data)
        } else {
            write_via_buffer(&self.mem, off, data)
        };
        Model::agree("write", mem, self.shadow.write(off, data))
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<u64> {
        let at = self.shadow.end;
        let mem = if data.len().is_multiple_of(2) {
            self.mem.append(data)
        } else {
            append_via_buffer(&self.mem, data, false)
        };
        let shadow = self.shadow.write(at, data).map(|()| at);
        Model::agree("append", mem, shadow)
    }

    pub fn read(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mem = if len.is_multiple_of(2) {
            read_vec(&self.mem, off, len)
        } else {
            self.mem.read_buffer(off, len).map(|b| b.to_vec())
        };
        Model::agree(
            &format!("read [{off}, +{len})"),
            mem,
            self.shadow.read(off, len),
        )
    }

    pub fn truncate_start(&mut self, new_start: u64) -> io::Result<()> {
        Model::agree(
            "truncate_start",
            self.mem.truncate_start(new_start),
            self.shadow.truncate_start(new_start),
        )
    }

    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        Model::agree("set_len", self.mem.set_len(len), self.shadow.set_len(len))
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = snapshot(&self.mem);
        let want = self.shadow.read(
            self.shadow.start,
            (self.shadow.end - self.shadow.start) as usize,
        );
        assert_eq!(s.bytes, want.unwrap(), "model self-check: whole contents");
        s
    }
}
