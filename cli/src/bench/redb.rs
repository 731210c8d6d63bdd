//! The `redb` workload: one writer inserts 100-byte values into a redb table, `batch`
//! inserts per transaction, and commits each with redb's default durability (the commit
//! calls the backend's `sync_data` before it returns).
//!
//! redb runs on the backend the cell names: `WriteBehindFile` (io_uring or threads,
//! always buffered: redb writes headers of any length) or, for `pwrite`, redb's own
//! `FileBackend` (what redb users run today). Every backend is wrapped in [`Counted`],
//! which counts the calls redb makes to its storage and the time spent in them: where the
//! time of a commit goes.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend, TableDefinition};
use writebehind::{Stats, WriteBehindFile};

use super::backends::config;
use super::cli::{BackendName, CellConfig, Stop};
use super::machine::Machine;
use super::run::Figures;
use super::scratch::ScratchFile;
use super::sys::{self, CpuTime};
use super::workloads::{latency_histogram, Measured, ProgressFn};

/// Bytes per inserted value.
pub const VALUE_SIZE: u64 = 100;
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

/// One kind of backend call: how many, how long in all.
#[derive(Default, Debug)]
struct Tally {
    calls: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, since: Instant) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.ns.swap(0, Ordering::Relaxed),
        )
    }
}

/// The calls redb made to its storage backend.
#[derive(Default, Debug)]
struct Tallies {
    write: Tally,
    write_bytes: AtomicU64,
    sync: Tally,
    set_len: Tally,
    read: Tally,
    /// The time of each `sync_data`.
    sync_ns: Mutex<Option<Histogram<u64>>>,
}

/// What redb asked of its backend during a run, and how long it took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendCalls {
    pub writes: u64,
    pub write_ns: u64,
    pub write_bytes: u64,
    pub syncs: u64,
    pub sync_ns: u64,
    pub set_lens: u64,
    pub set_len_ns: u64,
    pub reads: u64,
    pub read_ns: u64,
}

impl Tallies {
    /// Everything counted so far, resetting the counts (the set-up's calls are dropped
    /// before the loop this way).
    fn take(&self) -> BackendCalls {
        let (writes, write_ns) = self.write.take();
        let (syncs, sync_ns) = self.sync.take();
        let (set_lens, set_len_ns) = self.set_len.take();
        let (reads, read_ns) = self.read.take();
        BackendCalls {
            writes,
            write_ns,
            write_bytes: self.write_bytes.swap(0, Ordering::Relaxed),
            syncs,
            sync_ns,
            set_lens,
            set_len_ns,
            reads,
            read_ns,
        }
    }

    fn lock_sync_histogram(&self) -> std::sync::MutexGuard<'_, Option<Histogram<u64>>> {
        self.sync_ns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A storage backend that counts redb's calls into `inner` and times them.
struct Counted<B> {
    inner: Arc<B>,
    tallies: Arc<Tallies>,
}

impl<B> fmt::Debug for Counted<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counted")
    }
}

impl<B: StorageBackend> StorageBackend for Counted<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.read(offset, out);
        self.tallies.read.add(t);
        r
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.set_len(len);
        self.tallies.set_len.add(t);
        r
    }

    fn sync_data(&self) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.sync_data();
        let ns = t.elapsed().as_nanos() as u64;
        self.tallies.sync.add(t);
        if let Some(h) = self.tallies.lock_sync_histogram().as_mut() {
            h.saturating_record(ns.max(1));
        }
        r
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.write(offset, data);
        self.tallies.write.add(t);
        self.tallies
            .write_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        r
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    // The locks redb takes at open: passed through, so that redb on its own file backend
    // behaves as `Database::create` does.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// The redb-specific figures of a run.
#[derive(Clone, Debug)]
pub struct RedbFigures {
    /// Inserts per commit.
    pub batch: u64,
    /// redb's calls to its backend during the timed loop.
    pub calls: BackendCalls,
    /// The time of each `sync_data` during the loop.
    pub sync: Histogram<u64>,
}

/// The database and what closing it needs.
struct Opened {
    db: Database,
    tallies: Arc<Tallies>,
    /// The write-behind handle, kept to be closed (for its `Stats`) after redb let go.
    writebehind: Option<Arc<WriteBehindFile>>,
    engine: &'static str,
}

/// The `io::Error` inside a redb error (errno kept), or the error as text.
fn redb_error(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        other => io::Error::other(format!("redb: {other}")),
    }
}

fn open(cell: &CellConfig, path: &Path) -> io::Result<Opened> {
    let tallies = Arc::new(Tallies::default());
    let builder = Database::builder();
    let (db, writebehind, engine) = match cell.backend {
        BackendName::Pwrite => {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let inner = Arc::new(FileBackend::new(file).map_err(redb_error)?);
            let counted = Counted {
                inner,
                tallies: tallies.clone(),
            };
            let db = builder.create_with_backend(counted).map_err(redb_error)?;
            (db, None, "pwrite")
        }
        BackendName::WriteBehind | BackendName::WriteBehindThreads => {
            let h = Arc::new(WriteBehindFile::open(path, &config(cell))?);
            let engine = h.backend().name();
            let counted = Counted {
                inner: h.clone(),
                tallies: tallies.clone(),
            };
            let db = builder.create_with_backend(counted).map_err(redb_error)?;
            (db, Some(h), engine)
        }
        BackendName::PwriteDirect => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "redb does not run on pwrite-direct (it writes headers of any length)",
            ))
        }
    };
    Ok(Opened {
        db,
        tallies,
        writebehind,
        engine,
    })
}

/// Runs one redb cell in a fresh temporary file in `machine.dir` (removed before
/// returning).
pub fn run(cell: &CellConfig, machine: &Machine, progress: ProgressFn<'_>) -> io::Result<Figures> {
    let scratch = ScratchFile::create(&machine.dir)?;
    let cpu0 = CpuTime::now();
    let opened = open(cell, scratch.path())?;
    opened.tallies.take(); // the creation's calls are not the loop's
    *opened.tallies.lock_sync_histogram() = Some(latency_histogram());
    let looped = commit_loop(&opened.db, cell, progress);
    let calls = opened.tallies.take();
    let sync = opened
        .tallies
        .lock_sync_histogram()
        .take()
        .unwrap_or_else(latency_histogram);
    // Closing: redb writes its shutdown header and calls the backend's close (a force);
    // then the write-behind handle is closed for its statistics.
    let t = Instant::now();
    let closed = opened.db.close().map_err(redb_error).and_then(|()| {
        opened
            .writebehind
            .map(|h| {
                Arc::into_inner(h)
                    .ok_or_else(|| io::Error::other("redb kept the handle after close"))?
                    .close()
            })
            .transpose()
    });
    let close = t.elapsed();
    let cpu = CpuTime::now().since(cpu0);
    let m = looped?; // the loop's error first: a failed close may follow from it
    let stats: Option<Stats> = closed?;
    drop(scratch);
    Ok(Figures {
        engine: opened.engine,
        alignment: None,
        m,
        final_force: Duration::ZERO,
        close,
        cpu,
        stats,
        redb: Some(RedbFigures {
            batch: cell.batch,
            calls,
            sync,
        }),
        final_forces: 0,
        threads_peak: 0,
    })
}

/// Commits until the cell's stop condition: `ops` counts commits; `ack` is the time in
/// `commit()`, `bytes_requested` the value bytes inserted.
fn commit_loop(db: &Database, cell: &CellConfig, progress: ProgressFn<'_>) -> io::Result<Measured> {
    let value = [0x5Au8; VALUE_SIZE as usize];
    let mut m = Measured::empty();
    let (quota, limit) = match cell.stop {
        Stop::Ops(n) => (Some(n), None),
        Stop::Duration(d) => (None, Some(d)),
    };
    let start = Instant::now();
    let mut shown = start;
    let mut key = 0u64;
    while quota.is_none_or(|q| m.ops < q) && !sys::interrupted() {
        let tx = db.begin_write().map_err(redb_error)?;
        {
            let mut t = tx.open_table(TABLE).map_err(redb_error)?;
            for _ in 0..cell.batch {
                key += 1;
                t.insert(key, value.as_slice()).map_err(redb_error)?;
            }
        }
        let t0 = Instant::now();
        tx.commit().map_err(redb_error)?;
        let now = Instant::now();
        m.ack
            .saturating_record(((now - t0).as_nanos() as u64).max(1));
        m.ops += 1;
        m.forces += 1;
        if now - shown > Duration::from_millis(100) {
            shown = now;
            progress(match (quota, limit) {
                (Some(q), _) => m.ops as f64 / q as f64,
                (_, Some(d)) => (now - start).as_secs_f64() / d.as_secs_f64(),
                _ => 0.0,
            });
        }
        if limit.is_some_and(|d| now - start >= d) {
            break;
        }
    }
    m.loop_time = start.elapsed();
    m.bytes_requested = m.ops * cell.batch * VALUE_SIZE;
    m.interrupted = sys::interrupted();
    Ok(m)
}
