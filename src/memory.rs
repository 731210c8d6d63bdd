//! `MemoryHandle`: the in-memory reference model. (Stub: issue 2 helper fills it.)
use std::io;
use crate::buffer::{ReadBuffer, WriteBuffer};
use crate::handle::Handle;

/// Everything in memory; the reference model tests compare against.
#[derive(Debug, Default)]
pub struct MemoryHandle {}

impl MemoryHandle {
    /// An empty handle.
    pub fn new() -> Self {
        MemoryHandle {}
    }
}

impl Handle for MemoryHandle {
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
