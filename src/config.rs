//! `Config`: the settings shared by every file-backed handle.

use std::io;
use std::time::Duration;

use crate::error::os_msg;

/// What `force` asks the kernel for.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SyncMode {
    /// `fdatasync`: data and the metadata needed to read it back (the default).
    #[default]
    Data,
    /// `fsync`: data and all metadata.
    All,
}

/// Which engine performs the write-back of a [`WriteBehindFile`](crate::WriteBehindFile).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// io_uring when the kernel allows it (probed when the engine starts), else
    /// [`Backend::Threads`].
    #[default]
    Auto,
    /// io_uring only; open fails if it is unavailable.
    IoUring,
    /// `pwritev`/`fdatasync` on background threads: same contract, no io_uring.
    Threads,
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Data => "fdatasync",
            SyncMode::All => "fsync",
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Threads => "threads",
        })
    }
}

/// Settings for opening a file-backed handle: the settings of an [`EngineConfig`] and a
/// [`FileConfig`] together, for handles with an engine of their own. A builder: start from `Config::default()`
/// and chain setters. Values are checked when a handle is opened; nonsense (zero sizes,
/// a queue deeper than the ring, a non-power-of-two ring) fails with `InvalidInput`.
///
/// ```
/// use writebehind::{Config, SyncMode};
/// let cfg = Config::default()
///     .direct_io(true)
///     .sync(SyncMode::All)
///     .buffer_bytes(16 << 20)
///     .queue_depth(16);
/// assert!(cfg.validate().is_ok());
/// assert!(Config::default().buffer_bytes(0).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) direct_io: bool,
    pub(crate) sync: SyncMode,
    pub(crate) backend: Backend,
    pub(crate) buffer_bytes: usize,
    pub(crate) max_blocks: usize,
    pub(crate) queue_depth: u32,
    pub(crate) max_write_bytes: Option<usize>,
    pub(crate) max_dirty_age: Duration,
    pub(crate) ring_entries: u32,
    pub(crate) io_workers: Option<u32>,
    pub(crate) max_io_bytes: usize,
    pub(crate) lock_file: bool,
    pub(crate) punch_holes: bool,
    pub(crate) preallocate: usize,
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_injector: Option<crate::fault::FaultInjector>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            direct_io: false,
            sync: SyncMode::Data,
            backend: Backend::Auto,
            buffer_bytes: 64 << 20,
            max_blocks: 65_536,
            queue_depth: 128,
            max_write_bytes: None,
            max_dirty_age: Duration::from_millis(5),
            ring_entries: 256,
            io_workers: None,
            max_io_bytes: DEFAULT_MAX_IO_BYTES,
            lock_file: true,
            punch_holes: true,
            preallocate: 1 << 20,
            #[cfg(feature = "fault-injection")]
            fault_injector: None,
        }
    }
}

/// The most bytes any single budget may be set to (1 TiB): larger is surely a mistake.
const MAX_BYTES: usize = 1 << 40;

/// The default cap on one call's length, [`Config::max_io_bytes`]: 1 GiB.
pub const DEFAULT_MAX_IO_BYTES: usize = 1 << 30;

impl Config {
    /// Open with `O_DIRECT` (default `false`). Writes must then be aligned to the file's
    /// direct-I/O alignment.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// `fdatasync` or `fsync` for `force` (default [`SyncMode::Data`]).
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }

    /// The write-back engine (default [`Backend::Auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Most bytes of buffers held in memory before writers wait (default 64 MiB): the
    /// budget of the file's private engine ([`EngineConfig::buffer_bytes`]), and the
    /// file's cap within an engine's budget when split by
    /// [`file_config`](Config::file_config) ([`FileConfig::buffer_bytes`]).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Most buffers held at once before writers wait (default 65,536). A buffer holds one
    /// write, or several: a sequential run grown in place, or small scattered writes
    /// packed side by side (docs/design.md, "Extents" and "Packing").
    pub fn max_blocks(mut self, blocks: usize) -> Self {
        self.max_blocks = blocks;
        self
    }

    /// Most writes in flight at once (default 128: on this project's virtio disk the
    /// `pages --direct` workload ran 1.6–1.8× faster at 128 than at 32, and 64 in between;
    /// docs/benchmarks.md).
    pub fn queue_depth(mut self, depth: u32) -> Self {
        self.queue_depth = depth;
        self
    }

    /// Largest single merged write (default: the device's `max_sectors_kb`, else 1 MiB;
    /// for a buffered file at most 256 KiB). It also bounds an extent's chunk and the
    /// dirty bytes that start write-back.
    pub fn max_write_bytes(mut self, bytes: usize) -> Self {
        self.max_write_bytes = Some(bytes);
        self
    }

    /// Longest a dirty block waits before write-back starts on its own (default 5 ms).
    pub fn max_dirty_age(mut self, age: Duration) -> Self {
        self.max_dirty_age = age;
        self
    }

    /// Submission-queue entries of the io_uring ring, a power of two of at least 2: a
    /// write and the fsync linked behind it are queued together (default 256, room for
    /// the default queue depth and the syncs and size changes beside it).
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// The most bytes one call may read or write (default 1 GiB, at most 1 TiB): `write`,
    /// `append`, `read` and the three buffer calls fail at once with `EINVAL` when their
    /// length is larger, before anything is allocated or reserved, and the handle goes on
    /// working. Below the cap, a buffer the handle must allocate for the call that the
    /// allocator refuses gives `ENOMEM`, never an abort. On a [`WriteBehindFile`] a write
    /// larger than [`buffer_bytes`](Config::buffer_bytes) still works: it waits until it
    /// is the only buffer held.
    ///
    /// [`WriteBehindFile`]: crate::WriteBehindFile
    pub fn max_io_bytes(mut self, bytes: usize) -> Self {
        self.max_io_bytes = bytes;
        self
    }

    /// Whether opening takes an exclusive advisory lock (`flock(LOCK_EX|LOCK_NB)`) on the
    /// file (default `true`). Two handles writing one file would overwrite each other's
    /// bytes unnoticed (each buffers and orders only its own writes), so a second open of
    /// a locked file, by this process or another, fails with `EWOULDBLOCK`
    /// ([`io::ErrorKind::WouldBlock`]). The lock ends when the handle is closed or dropped
    /// (or its process dies). `false` opens without locking, for files another mechanism
    /// already protects.
    pub fn lock_file(mut self, on: bool) -> Self {
        self.lock_file = on;
        self
    }

    /// Whether `truncate_start` of a [`WriteBehindFile`](crate::WriteBehindFile) frees the
    /// file-system blocks wholly below the new start by punching holes (default `true`;
    /// where the file system cannot, it stops trying and counts it in
    /// [`Stats::punches_refused`](crate::Stats::punches_refused)).
    pub fn punch_holes(mut self, on: bool) -> Self {
        self.punch_holes = on;
        self
    }

    /// Bytes of zero-filled space a [`WriteBehindFile`](crate::WriteBehindFile) keeps
    /// written past its end (default 1 MiB; 0 turns it off), so that appends land inside
    /// the file's size on allocated blocks and their syncs update no metadata. The file is
    /// longer than `end_position` while open; `close` trims it back. After a crash the file
    /// may end with up to this many zero bytes past the last write, which a reopened
    /// handle counts in its `end_position`. The zeros are written once per byte of file,
    /// so for large sequential writes it roughly doubles the bytes written: set 0 there.
    /// Space a growing [`set_len`](crate::Handle::set_len) adds is zero-filled the same
    /// way (this many bytes ahead of the writes into it, never over them; not with direct
    /// I/O), so that an engine that grows its file and then writes into the new space
    /// (redb) overwrites allocated blocks.
    pub fn preallocate(mut self, bytes: usize) -> Self {
        self.preallocate = bytes;
        self
    }

    /// Test hook (feature `fault-injection`): completions of the handle's requests are
    /// rewritten according to `injector`'s plan (those of other files on the same engine
    /// are not).
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, injector: crate::fault::FaultInjector) -> Self {
        self.fault_injector = Some(injector);
        self
    }

    /// Whether `O_DIRECT` is requested.
    pub fn is_direct_io(&self) -> bool {
        self.direct_io
    }

    /// The sync mode used by `force`.
    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// The requested backend.
    pub fn backend_choice(&self) -> Backend {
        self.backend
    }

    /// The cap on one call's length (see [`max_io_bytes`](Config::max_io_bytes)).
    pub fn io_len_cap(&self) -> usize {
        self.max_io_bytes
    }

    /// Whether opening locks the file (see [`lock_file`](Config::lock_file)).
    pub fn locks_file(&self) -> bool {
        self.lock_file
    }

    /// Checks every setting; the error (`InvalidInput`) names the first bad one.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(os_msg(libc::EINVAL, format!("invalid Config: {what}")));
        if self.buffer_bytes == 0 || self.buffer_bytes > MAX_BYTES {
            return bad(format!(
                "buffer_bytes {} must be in 1..=1 TiB",
                self.buffer_bytes
            ));
        }
        if self.max_blocks == 0 || self.max_blocks > 1 << 32 {
            return bad(format!(
                "max_blocks {} must be in 1..=2^32",
                self.max_blocks
            ));
        }
        if self.queue_depth == 0 || self.queue_depth > 4096 {
            return bad(format!(
                "queue_depth {} must be in 1..=4096",
                self.queue_depth
            ));
        }
        if !self.ring_entries.is_power_of_two() || !(2..=32_768).contains(&self.ring_entries) {
            return bad(format!(
                "ring_entries {} must be a power of two from 2 to 32768",
                self.ring_entries
            ));
        }
        if self.queue_depth > self.ring_entries {
            return bad(format!(
                "queue_depth {} exceeds ring_entries {}",
                self.queue_depth, self.ring_entries
            ));
        }
        if self.max_io_bytes == 0 || self.max_io_bytes > MAX_BYTES {
            return bad(format!(
                "max_io_bytes {} must be in 1..=1 TiB",
                self.max_io_bytes
            ));
        }
        if let Some(w) = self.max_write_bytes {
            if w == 0 || w > 1 << 30 {
                return bad(format!("max_write_bytes {w} must be in 1..=1 GiB"));
            }
        }
        if self.preallocate > MAX_BYTES {
            return bad(format!(
                "preallocate {} must be at most 1 TiB",
                self.preallocate
            ));
        }
        if self.io_workers == Some(0) {
            return bad("io_workers must be at least 1".into());
        }
        if self.max_dirty_age.is_zero() || self.max_dirty_age > Duration::from_secs(3600) {
            return bad(format!(
                "max_dirty_age {:?} must be between 1 ns and 1 hour",
                self.max_dirty_age
            ));
        }
        Ok(())
    }
}

/// Settings of an [`Engine`](crate::Engine): what its files share. A builder like
/// [`Config`]; checked when the engine starts (`InvalidInput` for nonsense).
///
/// ```
/// use writebehind::{Backend, EngineConfig};
/// let cfg = EngineConfig::default().backend(Backend::Threads).queue_depth(32);
/// assert!(cfg.validate().is_ok());
/// assert!(EngineConfig::default().ring_entries(100).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub(crate) backend: Backend,
    pub(crate) buffer_bytes: usize,
    pub(crate) queue_depth: u32,
    pub(crate) ring_entries: u32,
    pub(crate) io_workers: Option<u32>,
    pub(crate) batch_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Config::default().engine_config()
    }
}

/// The most io_uring workers (io-wq) per CPU an engine allows by default.
pub const DEFAULT_IO_WORKERS_PER_CPU: u32 = 4;

/// How long an engine's thread waits for a batch of completions by default (see
/// [`EngineConfig::batch_wait`]): zero, off. A window long enough to batch 16 fsyncs
/// here (1-3 ms) also holds back the refill of a busy queue and every wake-up while
/// writes are in flight: `pages --direct` ran 4-25% slower with 3 ms
/// (docs/benchmarks.md).
pub const DEFAULT_BATCH_WAIT: Duration = Duration::ZERO;

impl EngineConfig {
    /// The I/O backend (default [`Backend::Auto`]; probed once per engine).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Most bytes of buffers the engine's files hold in memory together before writers
    /// wait (default 64 MiB). Each file with writers (buffers held or writers waiting)
    /// has a minimum share of 1/16 of it: a write that keeps its file within that share
    /// waits only for the total, never behind other files' writers. The rest is first
    /// come, first served, and taking from it leaves the other files' unused shares free,
    /// so a file that floods writes cannot starve another. The total stays within the
    /// budget, except by one request that cannot fit beside the others' shares (such as
    /// one larger than the budget): it is granted when its file holds nothing, it is first
    /// in line and no file holds more than its share. docs/design.md has the details.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Writes in flight the engine aims for (default 128; see [`Config::queue_depth`]),
    /// shared among the files with dirty data: each may keep `depth / such files` in
    /// flight, and up to the whole depth while the engine has depth to spare. A file
    /// alone has it all.
    pub fn queue_depth(mut self, depth: u32) -> Self {
        self.queue_depth = depth;
        self
    }

    /// Submission-queue entries of the engine's ring (default 256; see
    /// [`Config::ring_entries`]).
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// The most io_uring kernel workers (io-wq, threads named `iou-wrk-*`) the ring may
    /// start, bounded and unbounded each (`IORING_REGISTER_IOWQ_MAX_WORKERS`, Linux 5.15;
    /// ignored where the kernel lacks it). Default: [`DEFAULT_IO_WORKERS_PER_CPU`] per
    /// CPU. Without a cap io-wq can grow to a worker per file with punted work.
    pub fn io_workers(mut self, workers: u32) -> Self {
        self.io_workers = Some(workers);
        self
    }

    /// How long the engine's thread, with several requests in flight, waits for all of
    /// them before it takes those that have completed (io_uring on Linux 6.12+, the
    /// `min_wait_usec` of `IORING_FEAT_MIN_TIMEOUT`; ignored elsewhere). Completions
    /// that come close together are then reaped by one `io_uring_enter`: 16 forces on 16
    /// files submitted together cost 2 enters, not one per completion. A lone request
    /// is waited for alone, so its completion is never delayed; but while several are in
    /// flight, a wake-up (a new write or force on any file) may wait up to this long for
    /// the thread. Default [`DEFAULT_BATCH_WAIT`] (off); 0 turns batching off; at most 1 s.
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// The io-wq cap this configuration asks for (see [`io_workers`](Self::io_workers)).
    pub fn io_worker_cap(&self) -> u32 {
        self.io_workers.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            DEFAULT_IO_WORKERS_PER_CPU * cpus
        })
    }

    /// Checks every setting; the error (`InvalidInput`) names the first bad one.
    pub fn validate(&self) -> io::Result<()> {
        if self.io_workers == Some(0) {
            return Err(os_msg(
                libc::EINVAL,
                "invalid EngineConfig: io_workers must be at least 1",
            ));
        }
        if self.batch_wait > Duration::from_secs(1) {
            return Err(os_msg(
                libc::EINVAL,
                format!(
                    "invalid EngineConfig: batch_wait {:?} must be at most 1 s",
                    self.batch_wait
                ),
            ));
        }
        Config::assemble(self, &FileConfig::default()).validate()
    }
}

/// Settings of one file on an [`Engine`](crate::Engine): a builder like [`Config`], whose
/// setters of the same names it mirrors. The memory budget is the engine's
/// ([`EngineConfig::buffer_bytes`]); `buffer_bytes` and `max_blocks` here cap this file's
/// part of it.
///
/// ```
/// use writebehind::{FileConfig, SyncMode};
/// let cfg = FileConfig::default().sync(SyncMode::All).buffer_bytes(1 << 20);
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub(crate) direct_io: bool,
    pub(crate) sync: SyncMode,
    /// The file's cap within the engine's budget (`None`: the whole budget).
    pub(crate) buffer_bytes: Option<usize>,
    pub(crate) max_blocks: usize,
    pub(crate) max_write_bytes: Option<usize>,
    pub(crate) max_dirty_age: Duration,
    pub(crate) max_io_bytes: usize,
    pub(crate) lock_file: bool,
    pub(crate) punch_holes: bool,
    pub(crate) preallocate: usize,
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_injector: Option<crate::fault::FaultInjector>,
}

impl Default for FileConfig {
    /// No cap of its own on the engine's budget; the rest as [`Config::default`].
    fn default() -> Self {
        FileConfig {
            buffer_bytes: None,
            ..Config::default().file_config()
        }
    }
}

impl FileConfig {
    /// See [`Config::direct_io`].
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// See [`Config::sync`].
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }

    /// The most bytes of the engine's budget ([`EngineConfig::buffer_bytes`]) this file
    /// may hold (default: no cap of its own, the whole budget). A cap larger than the
    /// budget is the budget.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = Some(bytes);
        self
    }

    /// See [`Config::max_blocks`].
    pub fn max_blocks(mut self, blocks: usize) -> Self {
        self.max_blocks = blocks;
        self
    }

    /// See [`Config::max_write_bytes`].
    pub fn max_write_bytes(mut self, bytes: usize) -> Self {
        self.max_write_bytes = Some(bytes);
        self
    }

    /// See [`Config::max_dirty_age`].
    pub fn max_dirty_age(mut self, age: Duration) -> Self {
        self.max_dirty_age = age;
        self
    }

    /// See [`Config::max_io_bytes`].
    pub fn max_io_bytes(mut self, bytes: usize) -> Self {
        self.max_io_bytes = bytes;
        self
    }

    /// See [`Config::lock_file`].
    pub fn lock_file(mut self, on: bool) -> Self {
        self.lock_file = on;
        self
    }

    /// See [`Config::punch_holes`].
    pub fn punch_holes(mut self, on: bool) -> Self {
        self.punch_holes = on;
        self
    }

    /// See [`Config::preallocate`].
    pub fn preallocate(mut self, bytes: usize) -> Self {
        self.preallocate = bytes;
        self
    }

    /// Test hook (feature `fault-injection`): see [`Config::fault_injector`]. Only this
    /// file's requests are rewritten; its siblings on the engine are untouched.
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, injector: crate::fault::FaultInjector) -> Self {
        self.fault_injector = Some(injector);
        self
    }

    /// Checks every setting; the error (`InvalidInput`) names the first bad one.
    pub fn validate(&self) -> io::Result<()> {
        Config::assemble(&EngineConfig::default(), self).validate()
    }
}

impl Config {
    /// The engine settings of this configuration.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            backend: self.backend,
            buffer_bytes: self.buffer_bytes,
            queue_depth: self.queue_depth,
            ring_entries: self.ring_entries,
            io_workers: self.io_workers,
            batch_wait: DEFAULT_BATCH_WAIT,
        }
    }

    /// The file settings of this configuration; its `buffer_bytes` becomes the file's cap
    /// ([`FileConfig::buffer_bytes`]).
    pub fn file_config(&self) -> FileConfig {
        FileConfig {
            direct_io: self.direct_io,
            sync: self.sync,
            buffer_bytes: Some(self.buffer_bytes),
            max_blocks: self.max_blocks,
            max_write_bytes: self.max_write_bytes,
            max_dirty_age: self.max_dirty_age,
            max_io_bytes: self.max_io_bytes,
            lock_file: self.lock_file,
            punch_holes: self.punch_holes,
            preallocate: self.preallocate,
            #[cfg(feature = "fault-injection")]
            fault_injector: self.fault_injector.clone(),
        }
    }

    /// Engine and file settings as one `Config`, whose `buffer_bytes` is the file's cap
    /// within the engine's budget (an out-of-range cap is kept, for `validate` to refuse).
    pub(crate) fn assemble(e: &EngineConfig, f: &FileConfig) -> Config {
        let buffer_bytes = match f.buffer_bytes {
            Some(b) if (1..=MAX_BYTES).contains(&b) => b.min(e.buffer_bytes),
            Some(b) => b,
            None => e.buffer_bytes,
        };
        Config {
            direct_io: f.direct_io,
            sync: f.sync,
            backend: e.backend,
            buffer_bytes,
            max_blocks: f.max_blocks,
            queue_depth: e.queue_depth,
            max_write_bytes: f.max_write_bytes,
            max_dirty_age: f.max_dirty_age,
            ring_entries: e.ring_entries,
            io_workers: e.io_workers,
            max_io_bytes: f.max_io_bytes,
            lock_file: f.lock_file,
            punch_holes: f.punch_holes,
            preallocate: f.preallocate,
            #[cfg(feature = "fault-injection")]
            fault_injector: f.fault_injector.clone(),
        }
    }

    /// The io-wq cap of [`EngineConfig::io_workers`], for the single-file constructors.
    pub fn io_workers(mut self, workers: u32) -> Self {
        self.io_workers = Some(workers);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_not() {
        assert!(Config::default().validate().is_ok());
        let engine = EngineConfig::default();
        assert_eq!(engine.batch_wait, DEFAULT_BATCH_WAIT);
        for ok in [Duration::ZERO, Duration::from_secs(1)] {
            assert!(engine.clone().batch_wait(ok).validate().is_ok(), "{ok:?}");
        }
        let e = engine
            .batch_wait(Duration::from_millis(1001))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("batch_wait"), "{e}");
        for bad in [
            Config::default().buffer_bytes(0),
            Config::default().max_blocks(0),
            Config::default().queue_depth(0),
            Config::default().ring_entries(100),
            Config::default().ring_entries(1).queue_depth(1),
            Config::default().queue_depth(512).ring_entries(256),
            Config::default().max_write_bytes(0),
            Config::default().max_dirty_age(Duration::ZERO),
            Config::default().buffer_bytes(usize::MAX),
            Config::default().max_io_bytes(0),
            Config::default().max_io_bytes((1 << 40) + 1),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
