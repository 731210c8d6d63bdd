//! The workload threads: what each writer and reader does to the handle, and the
//! per-thread latency histograms they record (merged at the end).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use writebehind::Handle;

use super::cli::{CellConfig, Stop, Workload};
use super::scratch::filled;
use super::sys;

/// A latency histogram in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// What the workload threads did during the timed loop.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Write operations acknowledged (for log: records appended and forced, i.e. commits).
    pub ops: u64,
    /// Bytes passed to `write`/`append`.
    pub bytes_requested: u64,
    /// `force` calls made inside the loop.
    pub forces: u64,
    /// Write acknowledgement latency: time in `write`/`append`.
    pub ack: Histogram<u64>,
    /// Time in `force` inside the loop.
    pub force: Histogram<u64>,
    /// Reads done by the mixed workload's readers.
    pub reads: u64,
    /// Read latency.
    pub read: Histogram<u64>,
    /// From the start signal to the last writer's last operation.
    pub loop_time: Duration,
    /// The loop stopped early because of Ctrl-C.
    pub interrupted: bool,
}

impl Measured {
    /// Nothing measured yet.
    pub fn empty() -> Measured {
        Measured {
            ops: 0,
            bytes_requested: 0,
            forces: 0,
            ack: latency_histogram(),
            force: latency_histogram(),
            reads: 0,
            read: latency_histogram(),
            loop_time: Duration::ZERO,
            interrupted: false,
        }
    }
}

/// What the main thread shows while the loop runs: the fraction done.
pub type ProgressFn<'a> = &'a dyn Fn(f64);

/// State shared by the threads of one run.
struct Shared {
    ready: Barrier,
    go: Barrier,
    deadline: OnceLock<Instant>,
    abort: AtomicBool,
    first_error: Mutex<Option<io::Error>>,
    writers_left: AtomicUsize,
    done_ops: AtomicU64,
    seq_cursor: AtomicU64,
    main: Thread,
}

impl Shared {
    fn fail(&self, e: io::Error) {
        self.abort.store(true, Ordering::SeqCst);
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    fn stopping(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || sys::interrupted()
    }
}

/// A small, fast PRNG (SplitMix64) so offsets cost nothing next to the I/O.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Splits `total` operations over `threads` as evenly as possible.
pub fn split_ops(total: u64, threads: u32) -> Vec<u64> {
    let t = u64::from(threads);
    (0..t)
        .map(|i| total / t + u64::from(i < total % t))
        .collect()
}

struct WriterOut {
    ops: u64,
    forces: u64,
    ack: Histogram<u64>,
    force: Histogram<u64>,
    end: Instant,
}

impl WriterOut {
    fn new() -> WriterOut {
        WriterOut {
            ops: 0,
            forces: 0,
            ack: latency_histogram(),
            force: latency_histogram(),
            // Before the start: a thread that never sets it does not move the loop's end.
            end: Instant::now(),
        }
    }
}

impl Shared {
    /// Waits with every thread for the start; returns the deadline.
    fn start(&self) -> Instant {
        self.ready.wait();
        self.go.wait();
        *self.deadline.get().expect("set before the go barrier")
    }
}

struct ReaderOut {
    reads: u64,
    read: Histogram<u64>,
}

/// Forces several files of a run at once: the files workload on one `Engine`, whose
/// `force_async` futures let one writer's forces go to the kernel together.
pub trait ForceTogether: Sync {
    /// Forces the run's file `f` for every `f` of `files` (indexes into the handles
    /// `drive` was given), calling `done(i)` when the force of `files[i]` has returned.
    /// The first error is returned once all have.
    fn force_together(&self, files: &[usize], done: &mut dyn FnMut(usize)) -> io::Result<()>;
}

/// Runs `cell`'s workload on `hs` (one handle; the files workload: one per file) until its
/// stop condition, with writer threads (and reader threads for mixed), and returns the
/// merged measurements. `align` is the alignment of
/// the buffers handed to the handle. `together`: how a files writer forces the files it
/// dirtied, when not one after the other. The first error of any thread stops all of them
/// and is returned.
pub fn drive(
    hs: &[&dyn Handle],
    together: Option<&dyn ForceTogether>,
    cell: &CellConfig,
    align: usize,
    progress: ProgressFn<'_>,
) -> io::Result<Measured> {
    if hs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no file to write",
        ));
    }
    let writers = cell.threads as usize;
    let readers = cell.readers as usize;
    let shared = Shared {
        ready: Barrier::new(writers + readers + 1),
        go: Barrier::new(writers + readers + 1),
        deadline: OnceLock::new(),
        abort: AtomicBool::new(false),
        first_error: Mutex::new(None),
        writers_left: AtomicUsize::new(writers),
        done_ops: AtomicU64::new(0),
        seq_cursor: AtomicU64::new(0),
        main: thread::current(),
    };
    let flood = cell.workload == Workload::Flood;
    let quotas: Vec<Option<u64>> = match cell.stop {
        // flood: A's writer does every op; B's committer runs while A writes.
        Stop::Ops(n) if flood => vec![Some(n), None],
        Stop::Ops(n) => split_ops(n, cell.threads).into_iter().map(Some).collect(),
        Stop::Duration(_) => vec![None; writers],
    };
    let sh = &shared;
    let (start, writer_outs, reader_outs) = thread::scope(|s| {
        let ws: Vec<_> = quotas
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                thread::Builder::new()
                    .name(format!("bench-w{i}"))
                    .spawn_scoped(s, move || {
                        let out = if flood && i == 1 {
                            committer(sh, hs[1], align)
                        } else {
                            writer(sh, hs, together, cell, q, i as u64, align)
                        };
                        if sh.writers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                            sh.main.unpark();
                        }
                        out.map_err(|e| sh.fail(e)).ok()
                    })
                    .expect("spawning a benchmark thread")
            })
            .collect();
        let rs: Vec<_> = (0..readers)
            .map(|i| {
                thread::Builder::new()
                    .name(format!("bench-r{i}"))
                    .spawn_scoped(s, move || {
                        reader(sh, hs[0], cell, i as u64, align)
                            .map_err(|e| sh.fail(e))
                            .ok()
                    })
                    .expect("spawning a benchmark thread")
            })
            .collect();
        sh.ready.wait();
        let start = Instant::now();
        let limit = match cell.stop {
            Stop::Duration(d) => d,
            Stop::Ops(_) => Duration::from_secs(365 * 86_400),
        };
        sh.deadline.set(start + limit).expect("deadline set once");
        sh.go.wait();
        while sh.writers_left.load(Ordering::SeqCst) > 0 {
            thread::park_timeout(Duration::from_millis(100));
            progress(match cell.stop {
                Stop::Duration(d) => start.elapsed().as_secs_f64() / d.as_secs_f64(),
                Stop::Ops(n) => sh.done_ops.load(Ordering::Relaxed) as f64 / n as f64,
            });
        }
        let w: Vec<Option<WriterOut>> = ws.into_iter().map(|t| join(t.join())).collect();
        let r: Vec<Option<ReaderOut>> = rs.into_iter().map(|t| join(t.join())).collect();
        (start, w, r)
    });
    if let Some(e) = shared
        .first_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(e);
    }
    let mut m = Measured::empty();
    let mut end = start;
    for w in writer_outs.into_iter().flatten() {
        m.ops += w.ops;
        m.forces += w.forces;
        m.ack.add(&w.ack).expect("same histogram bounds");
        m.force.add(&w.force).expect("same histogram bounds");
        end = end.max(w.end);
    }
    for r in reader_outs.into_iter().flatten() {
        m.reads += r.reads;
        m.read.add(&r.read).expect("same histogram bounds");
    }
    m.bytes_requested = m.ops * cell.write_size;
    m.loop_time = end - start;
    m.interrupted = sys::interrupted();
    Ok(m)
}

/// A thread's result, or its panic carried on to the caller.
fn join<T>(r: thread::Result<T>) -> T {
    r.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn writer(
    sh: &Shared,
    hs: &[&dyn Handle],
    together: Option<&dyn ForceTogether>,
    cell: &CellConfig,
    quota: Option<u64>,
    id: u64,
    align: usize,
) -> io::Result<WriterOut> {
    let ws = cell.write_size;
    let mut block = filled(ws as usize, align, 0xA0 ^ id as u8)?;
    let mut rng = Rng::new(0x5EED ^ (id << 32));
    // flood: this is A's writer, of hs[0] only.
    let files = if cell.workload == Workload::Flood {
        1
    } else {
        hs.len() as u64
    };
    // Blocks per file (the files workload splits the file size over its files).
    let blocks = (cell.file_size / files / ws).max(1);
    let span = blocks * ws;
    let h = hs[0];
    // The files this writer wrote since its last force: the ones it forces.
    let mut dirty = vec![false; hs.len()];
    let mut out = WriterOut::new();
    let deadline = sh.start();
    let mut unreported = 0u64;
    loop {
        if quota.is_some_and(|q| out.ops >= q) || sh.stopping() {
            break;
        }
        // A different first word in every write, so no layer can skip identical data.
        let stamp = (out.ops ^ (id << 48)).to_le_bytes();
        let n = stamp.len().min(block.as_slice().len());
        block.as_mut_slice()[..n].copy_from_slice(&stamp[..n]);
        let data = block.as_slice();
        let file = if cell.workload == Workload::Files {
            rng.below(files) as usize
        } else {
            0
        };
        dirty[file] = true;
        let t0 = Instant::now();
        match cell.workload {
            Workload::Pages | Workload::Mixed => h.write(rng.below(blocks) * ws, data)?,
            Workload::Files => hs[file].write(rng.below(blocks) * ws, data)?,
            Workload::Seq | Workload::Flood => {
                h.write(sh.seq_cursor.fetch_add(ws, Ordering::Relaxed) % span, data)?
            }
            Workload::Log => {
                h.append(data)?;
            }
            Workload::Redb => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the redb workload runs through redb (bench::redb), not drive",
                ))
            }
        }
        let mut now = Instant::now();
        record(&mut out.ack, now - t0);
        out.ops += 1;
        if cell.force_every > 0 && out.ops.is_multiple_of(cell.force_every) {
            // One `force` per dirtied file, each its own sample: its time, or with
            // `together` the time until it returned since all of them began.
            if let Some(all) = together {
                let files: Vec<usize> = (0..dirty.len()).filter(|&f| dirty[f]).collect();
                dirty.fill(false);
                let t1 = now;
                all.force_together(&files, &mut |_| {
                    record(&mut out.force, t1.elapsed());
                    out.forces += 1;
                })?;
                now = Instant::now();
            } else {
                // No allocation here: `log` forces after every append.
                for (f, d) in dirty.iter_mut().enumerate().filter(|(_, d)| **d) {
                    *d = false;
                    let t1 = now;
                    hs[f].force()?;
                    now = Instant::now();
                    record(&mut out.force, now - t1);
                    out.forces += 1;
                }
            }
        }
        out.end = now;
        unreported += 1;
        if unreported == 256 {
            sh.done_ops.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
        if quota.is_none() && now >= deadline {
            break;
        }
    }
    sh.done_ops.fetch_add(unreported, Ordering::Relaxed);
    Ok(out)
}

/// The flood workload's file B: appends one aligned page and forces it, in a loop, until
/// A's writer is done (or the deadline); each force is a sample of `force`. Its appends
/// count in no other figure.
fn committer(sh: &Shared, h: &dyn Handle, align: usize) -> io::Result<WriterOut> {
    let mut page = filled(align, align, 0xB0)?;
    // Its `end` stays before the start: A's writer alone sets the loop's end.
    let mut out = WriterOut::new();
    let deadline = sh.start();
    // A's writer is the other one of `writers_left`.
    while sh.writers_left.load(Ordering::SeqCst) > 1 && !sh.stopping() {
        let stamp = out.forces.to_le_bytes();
        page.as_mut_slice()[..stamp.len()].copy_from_slice(&stamp);
        h.append(page.as_slice())?;
        let t0 = Instant::now();
        h.force()?;
        let now = Instant::now();
        record(&mut out.force, now - t0);
        out.forces += 1;
        if now >= deadline {
            break;
        }
    }
    Ok(out)
}

fn reader(
    sh: &Shared,
    h: &dyn Handle,
    cell: &CellConfig,
    id: u64,
    align: usize,
) -> io::Result<ReaderOut> {
    let ws = cell.write_size;
    let mut block = filled(ws as usize, align, 0)?;
    let mut rng = Rng::new(0xBEEF ^ (id << 32));
    let blocks = (cell.file_size / ws).max(1);
    let mut out = ReaderOut {
        reads: 0,
        read: latency_histogram(),
    };
    sh.ready.wait();
    sh.go.wait();
    while sh.writers_left.load(Ordering::Relaxed) > 0 && !sh.stopping() {
        let off = rng.below(blocks) * ws;
        let t0 = Instant::now();
        h.read(off, block.as_mut_slice())?;
        record(&mut out.read, t0.elapsed());
        out.reads += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_split_evenly_and_completely() {
        assert_eq!(split_ops(10, 3), [4, 3, 3]);
        assert_eq!(split_ops(2, 4), [1, 1, 0, 0]);
        assert_eq!(split_ops(8, 8).iter().sum::<u64>(), 8);
    }

    #[test]
    fn rng_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
