//! # writebehind
//!
//! A non-blocking write-behind file handle for storage engines on Linux. Writes are copied
//! into aligned in-memory buffers and acknowledged at once; one submission thread owns an
//! io_uring ring, writes dirty blocks back as merged vectored writes, and wakes
//! [`force`](Handle::force) callers when their data is durable (group commit).
//!
//! Every handle implements the same [`Handle`] contract:
//! - [`WriteBehindFile`]: the write-behind handle (io_uring, or a thread fallback).
//! - [`FileHandle`]: the blocking `pread`/`pwrite` baseline.
//! - [`MemoryHandle`]: everything in memory; the reference model.
//!
//! ```
//! use writebehind::{Config, Handle, WriteBehindFile};
//! let dir = tempfile::tempdir().unwrap();
//! let f = WriteBehindFile::create(dir.path().join("pages"), &Config::default()).unwrap();
//! f.write(0, &[7u8; 4096]).unwrap(); // returns after a memcpy
//! f.force().unwrap(); // durable
//! let stats = f.close().unwrap();
//! assert_eq!(stats.bytes_requested, 4096);
//! ```

mod aligned;
mod buffer;
mod config;
mod error;
mod file;
mod fileio;
mod handle;
mod huge;
mod memory;
#[cfg(feature = "redb")]
mod redb_backend;
mod stats;
mod wb;

pub use aligned::AlignedBuf;
pub use buffer::{ReadBuffer, WriteBuffer};
pub use config::{
    Backend, Config, EngineConfig, FileConfig, SyncMode, DEFAULT_BATCH_WAIT,
    DEFAULT_IO_WORKERS_PER_CPU, DEFAULT_MAX_IO_BYTES,
};
pub use error::{errno, OsError};
pub use file::FileHandle;
pub use fileio::{dio_alignment, AlignmentSource, DioAlignment, OpenMode};
pub use handle::Handle;
pub use memory::MemoryHandle;
pub use stats::{BackendKind, Stats};
pub use wb::{Engine, ForceFuture, WriteBehindFile};

/// The histogram crate whose types appear in [`Stats`], re-exported so that callers use
/// the same version.
pub use hdrhistogram;

/// Test-only fault injection at the completion layer (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub use wb::fault;
