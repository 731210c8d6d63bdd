//! `--workload files`: many pre-sized files written at once, each writer forcing the files
//! it dirtied; `--workload flood`: file A (pre-sized) written sequentially while file B
//! (empty) takes appends and forces. The writebehind backends open every file on one
//! shared `Engine`; pwrite and pwrite-direct open a `FileHandle` per file.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use writebehind::{Engine, FileHandle, Handle, Stats, WriteBehindFile};

use super::backends::config;
use super::cli::{CellConfig, Workload};
use super::machine::Machine;
use super::run::{finish, Figures};
use super::scratch::{presize, ScratchFile};
use super::sys::CpuTime;
use super::workloads::{drive, ForceTogether, ProgressFn};

/// The open files of one run.
enum FileSet {
    /// One engine (its ring and threads) for all the files.
    Engine(Engine, Vec<WriteBehindFile>),
    Blocking(Vec<FileHandle>),
}

impl FileSet {
    fn open(cell: &CellConfig, scratch: &[ScratchFile]) -> io::Result<FileSet> {
        let cfg = config(cell);
        if cell.backend.is_writebehind() {
            let engine = Engine::new(&cfg.engine_config())?;
            let file_cfg = cfg.file_config();
            let files = scratch
                .iter()
                .map(|s| engine.open(s.path(), &file_cfg))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(FileSet::Engine(engine, files))
        } else {
            let files = scratch
                .iter()
                .map(|s| FileHandle::open(s.path(), &cfg))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(FileSet::Blocking(files))
        }
    }

    fn handles(&self) -> Vec<&dyn Handle> {
        match self {
            FileSet::Engine(_, fs) => fs.iter().map(|f| f as &dyn Handle).collect(),
            FileSet::Blocking(fs) => fs.iter().map(|f| f as &dyn Handle).collect(),
        }
    }

    /// How a writer forces the files it dirtied: together on the engine, one after the
    /// other (`None`) on blocking handles, as the code those replace does.
    fn together(&self) -> Option<&dyn ForceTogether> {
        match self {
            FileSet::Engine(_, fs) => Some(fs as &dyn ForceTogether),
            FileSet::Blocking(_) => None,
        }
    }

    fn engine_name(&self) -> &'static str {
        match self {
            FileSet::Engine(e, _) => e.backend().name(),
            FileSet::Blocking(_) => "pwrite",
        }
    }

    fn alignment(&self) -> Option<u64> {
        match self {
            FileSet::Engine(_, fs) => fs.first().map(|f| f.alignment() as u64),
            FileSet::Blocking(fs) => fs.first().map(|f| f.alignment() as u64),
        }
    }

    /// Closes every file (the first error wins, all are closed), then the engine; the
    /// writebehind files' statistics summed.
    fn close(self) -> io::Result<Option<Stats>> {
        let mut first_error = None;
        let mut total: Option<Stats> = None;
        match self {
            FileSet::Engine(engine, files) => {
                for f in files {
                    match f.close() {
                        Ok(s) => {
                            total = Some(match total {
                                None => s,
                                Some(t) => add(t, &s),
                            })
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                drop(engine);
            }
            FileSet::Blocking(files) => {
                for f in files {
                    if let Err(e) = f.close() {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// Wakes a thread parked in [`ForceTogether::force_together`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl ForceTogether for Vec<WriteBehindFile> {
    /// Polls every file's `force_async` future on this thread, parking between wakes: all
    /// the forces wait in the engine at once, so their syncs go out in the same passes.
    fn force_together(&self, files: &[usize], done: &mut dyn FnMut(usize)) -> io::Result<()> {
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut pending: Vec<(usize, _)> = files
            .iter()
            .map(|&f| self[f].force_async())
            .enumerate()
            .collect();
        let mut first_error = None;
        loop {
            pending.retain_mut(|(i, fut)| match Pin::new(fut).poll(&mut cx) {
                Poll::Ready(r) => {
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                    done(*i);
                    false
                }
                Poll::Pending => true,
            });
            if pending.is_empty() {
                return first_error.map_or(Ok(()), Err);
            }
            // A wake between the poll and here leaves the token: `park` returns at once.
            thread::park();
        }
    }
}

/// `t` plus the per-file counts of `s` that the report shows (the engine-wide ones,
/// such as `engine_enters`, are the same in every file and stay as they are).
fn add(mut t: Stats, s: &Stats) -> Stats {
    t.bytes_requested += s.bytes_requested;
    t.bytes_written += s.bytes_written;
    t.write_ops += s.write_ops;
    t.fsyncs += s.fsyncs;
    t.forces_served += s.forces_served;
    t.leader_syncs += s.leader_syncs;
    t.forces_immediate += s.forces_immediate;
    t.backpressure_waits += s.backpressure_waits;
    t.backpressure_wait_ns += s.backpressure_wait_ns;
    t.short_writes += s.short_writes;
    t.retries += s.retries;
    t.cancelled_fsyncs += s.cancelled_fsyncs;
    t.bytes_preallocated += s.bytes_preallocated;
    for (a, b) in [
        (&mut t.blocks_per_write, &s.blocks_per_write),
        (&mut t.write_ack_ns, &s.write_ack_ns),
        (&mut t.submit_to_complete_ns, &s.submit_to_complete_ns),
        (&mut t.force_ns, &s.force_ns),
        (
            &mut t.writes_in_flight_at_force,
            &s.writes_in_flight_at_force,
        ),
        (&mut t.queue_while_forcing, &s.queue_while_forcing),
    ] {
        let _ = a.add(b); // same bounds in every file's Stats
    }
    t
}

/// Runs one files cell on `cell.files` fresh temporary files in `machine.dir`, each
/// pre-sized to its share of `cell.file_size`; all are removed before returning.
pub fn run(cell: &CellConfig, machine: &Machine, progress: ProgressFn<'_>) -> io::Result<Figures> {
    let n = u64::from(cell.files.max(1));
    let flood = cell.workload == Workload::Flood;
    // flood: A gets the whole file size, B starts empty (it is appended to).
    let per_file = if flood {
        cell.file_size
    } else {
        cell.file_size / n
    };
    let scratch = (0..n)
        .map(|_| ScratchFile::create(&machine.dir))
        .collect::<io::Result<Vec<_>>>()?;
    for (i, s) in scratch.iter().enumerate() {
        let len = if flood && i == 1 { 0 } else { per_file };
        presize(s.path(), len, machine.dio_alignment)?;
    }
    let set = FileSet::open(cell, &scratch)?;
    let engine = set.engine_name();
    let alignment = set.alignment();
    let buf_align = machine.dio_alignment.unwrap_or(1).max(4096) as usize;
    let cpu0 = CpuTime::now();
    let handles = set.handles();
    let together = set.together().filter(|_| !flood);
    let measured = drive(&handles, together, cell, buf_align, progress).and_then(|m| {
        let t = Instant::now();
        for h in &handles {
            h.force()?;
        }
        Ok((m, t.elapsed()))
    });
    drop(handles);
    let figures = finish(measured, || set.close(), cpu0, engine, alignment, n);
    drop(scratch);
    figures
}

#[cfg(test)]
mod tests {
    use super::*;
    use writebehind::{EngineConfig, FileConfig};

    /// Every listed file is forced and reported once; the others are left alone.
    #[test]
    fn forcing_together_syncs_each_listed_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&EngineConfig::default()).unwrap();
        let files: Vec<WriteBehindFile> = (0..4)
            .map(|i| {
                let f = engine
                    .create(dir.path().join(format!("f{i}")), &FileConfig::default())
                    .unwrap();
                f.append(&[i as u8; 100]).unwrap();
                f
            })
            .collect();
        let mut done = Vec::new();
        files
            .force_together(&[0, 2, 3], &mut |i| done.push(i))
            .unwrap();
        done.sort_unstable();
        assert_eq!(done, [0, 1, 2]);
        let fsyncs: Vec<u64> = files
            .into_iter()
            .map(|f| f.close().unwrap().fsyncs)
            .collect();
        // One sync each for the forced files; `close` writes file 1 back without one.
        assert_eq!(fsyncs, [1, 0, 1, 1]);
    }
}
