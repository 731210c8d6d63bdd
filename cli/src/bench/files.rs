//! `--workload files`: many pre-sized files written at once, each writer forcing the files
//! it dirtied; `--workload flood`: file A (pre-sized) written sequentially while file B
//! (empty) takes appends and forces. The writebehind backends open every file on one
//! shared `Engine`; pwrite and pwrite-direct open a `FileHandle` per file.

use std::io;
use std::time::Instant;

use writebehind::{Engine, FileHandle, Handle, Stats, WriteBehindFile};

use super::backends::config;
use super::cli::{CellConfig, Workload};
use super::machine::Machine;
use super::run::{finish, Figures};
use super::scratch::{presize, ScratchFile};
use super::sys::CpuTime;
use super::workloads::{drive, ProgressFn};

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
    let measured = drive(&handles, cell, buf_align, progress).and_then(|m| {
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
