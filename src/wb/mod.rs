//! `WriteBehindFile`: the io_uring write-behind handle. (Stub: the core lands shortly.)
use std::io;
use std::path::Path;
use crate::buffer::{ReadBuffer, WriteBuffer};
use crate::config::Config;
use crate::handle::Handle;
use crate::stats::{BackendKind, Stats};

/// The write-behind handle.
#[derive(Debug)]
pub struct WriteBehindFile {}

impl WriteBehindFile {
    /// Opens an existing file; `end_position()` starts at its length.
    pub fn open(_path: impl AsRef<Path>, _cfg: &Config) -> io::Result<Self> { unimplemented!() }
    /// Creates (or truncates) a file.
    pub fn create(_path: impl AsRef<Path>, _cfg: &Config) -> io::Result<Self> { unimplemented!() }
    /// Statistics so far.
    pub fn stats(&self) -> Stats { unimplemented!() }
    /// The engine in use.
    pub fn backend(&self) -> BackendKind { unimplemented!() }
    /// The direct-I/O alignment writes must respect (1 when not in direct mode).
    pub fn alignment(&self) -> usize { unimplemented!() }
    /// Writes back everything buffered (no fsync), stops the submission thread and
    /// returns the final statistics, or the first error not yet reported.
    pub fn close(self) -> io::Result<Stats> { unimplemented!() }
}

impl Handle for WriteBehindFile {
    fn start_position(&self) -> u64 { unimplemented!() }
    fn end_position(&self) -> u64 { unimplemented!() }
    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> { unimplemented!() }
    fn append(&self, _data: &[u8]) -> io::Result<u64> { unimplemented!() }
    fn read(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<()> { unimplemented!() }
    fn write_buffer(&self, _offset: u64, _len: usize) -> io::Result<WriteBuffer<'_>> { unimplemented!() }
    fn append_buffer(&self, _len: usize) -> io::Result<WriteBuffer<'_>> { unimplemented!() }
    fn read_buffer(&self, _offset: u64, _len: usize) -> io::Result<ReadBuffer<'_>> { unimplemented!() }
    fn force(&self) -> io::Result<()> { unimplemented!() }
    fn force_range(&self, _start: u64, _stop: u64) -> io::Result<()> { unimplemented!() }
    fn truncate_start(&self, _new_start: u64) -> io::Result<()> { unimplemented!() }
}

mod engine;
mod engines;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod threads;
mod uring;
