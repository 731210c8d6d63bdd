//! One (workload, backend) run from start to end: temporary file, pre-sizing, the timed
//! loop, the final force and close, CPU time; and the figures derived from them.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use writebehind::Stats;

use super::backends::Opened;
use super::cli::CellConfig;
use super::machine::Machine;
use super::redb::RedbFigures;
use super::scratch::{presize, ScratchFile};
use super::sys::CpuTime;
use super::workloads::{drive, Measured, ProgressFn};

/// Everything measured in one successful run.
#[derive(Clone, Debug)]
pub struct Figures {
    /// The engine in use: `io_uring`, `threads` or `pwrite`.
    pub engine: &'static str,
    /// The alignment the handle reported, when it reports one.
    pub alignment: Option<u64>,
    /// The timed loop.
    pub m: Measured,
    /// The `force` after the loop (makes every backend's data durable).
    pub final_force: Duration,
    /// `close` after that.
    pub close: Duration,
    /// CPU time of the process from after open to after close.
    pub cpu: CpuTime,
    /// The write-behind handle's statistics, from `close`.
    pub stats: Option<Stats>,
    /// The redb workload's own figures (`m.ops` then counts commits).
    pub redb: Option<RedbFigures>,
    /// `force` calls after the loop: one per file written.
    pub final_forces: u64,
    /// The most threads the process had during the run (io_uring's `iou-*` workers not
    /// counted), sampled by [`super::threads::Sampler`]; 0 until `run_all` sets it.
    pub threads_peak: usize,
}

impl Figures {
    /// Loop + final force + close: the time until everything written is on the device.
    pub fn total(&self) -> Duration {
        self.m.loop_time + self.drain()
    }

    /// Time from the last acknowledged write until the data was durable and the handle
    /// closed.
    pub fn drain(&self) -> Duration {
        self.final_force + self.close
    }

    /// Write operations (log: commits) per second over [`total`](Self::total).
    pub fn ops_per_s(&self) -> f64 {
        per_s(self.m.ops as f64, self.total())
    }

    /// Write operations per second during the loop only (the acknowledgement rate).
    pub fn loop_ops_per_s(&self) -> f64 {
        per_s(self.m.ops as f64, self.m.loop_time)
    }

    /// Requested megabytes (10^6 bytes) per second over [`total`](Self::total).
    pub fn mb_per_s(&self) -> f64 {
        per_s(self.m.bytes_requested as f64 / 1e6, self.total())
    }

    /// Bytes written to the file: the handle's count for writebehind (after coalescing),
    /// the requested bytes for the blocking handles (each write is a pwrite), what redb
    /// wrote for redb on its own file backend.
    pub fn bytes_written(&self) -> u64 {
        match (&self.stats, &self.redb) {
            (Some(s), _) => s.bytes_written,
            (None, Some(r)) => r.calls.write_bytes,
            (None, None) => self.m.bytes_requested,
        }
    }

    /// User + system CPU seconds per 10^9 requested bytes.
    pub fn cpu_s_per_gb(&self) -> f64 {
        let gb = self.m.bytes_requested as f64 / 1e9;
        if gb > 0.0 {
            (self.cpu.user + self.cpu.sys).as_secs_f64() / gb
        } else {
            0.0
        }
    }

    /// `fsync`/`fdatasync` calls: the handles' count for writebehind, one per `force`
    /// (loop and final, per file) for the blocking handles, one per `sync_data` in the loop for
    /// redb on its own file backend.
    pub fn fsyncs(&self) -> u64 {
        match (&self.stats, &self.redb) {
            (Some(s), _) => s.fsyncs,
            (None, Some(r)) => r.calls.syncs,
            (None, None) => self.m.forces + self.final_forces,
        }
    }
}

fn per_s(x: f64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        x / s
    } else {
        0.0
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct CellRun {
    pub cell: CellConfig,
    /// 1-based repetition number.
    pub repetition: u32,
    /// The figures, or the error that ended the run.
    pub outcome: Result<Figures, String>,
}

/// Runs one (workload, backend) in a fresh temporary file in `machine.dir`, which is
/// removed before returning (also on error). `open` opens the handle (the real backends
/// in production; a test handle in tests).
pub fn run_cell(
    cell: &CellConfig,
    machine: &Machine,
    progress: ProgressFn<'_>,
    open: &dyn Fn(&CellConfig, &Path, bool) -> io::Result<Opened>,
) -> io::Result<Figures> {
    let scratch = ScratchFile::create(&machine.dir)?;
    let presized = cell.workload.presized();
    if presized {
        presize(scratch.path(), cell.file_size, machine.dio_alignment)?;
    }
    let opened = open(cell, scratch.path(), presized)?;
    let engine = opened.engine();
    let alignment = opened.alignment();
    let buf_align = machine.dio_alignment.unwrap_or(1).max(4096) as usize;
    let cpu0 = CpuTime::now();
    let measured = drive(&[opened.handle()], None, cell, buf_align, progress).and_then(|m| {
        let t = Instant::now();
        opened.handle().force()?;
        Ok((m, t.elapsed()))
    });
    let figures = finish(
        measured,
        || Ok(opened.close()?.stats),
        cpu0,
        engine,
        alignment,
        1,
    );
    drop(scratch);
    figures
}

/// The end of a run after its timed loop and final force (`measured`): closes the
/// handles with `close` (also after a failed loop, whose own error is the one reported)
/// and gathers the figures; `final_forces` is the forces after the loop.
pub(super) fn finish(
    measured: io::Result<(Measured, Duration)>,
    close: impl FnOnce() -> io::Result<Option<Stats>>,
    cpu0: CpuTime,
    engine: &'static str,
    alignment: Option<u64>,
    final_forces: u64,
) -> io::Result<Figures> {
    let (m, final_force) = match measured {
        Ok(x) => x,
        Err(e) => {
            // Stop the handles' threads; the run's own error is the one to report.
            let _ = close();
            return Err(e);
        }
    };
    let t = Instant::now();
    let stats = close()?;
    let close = t.elapsed();
    let cpu = CpuTime::now().since(cpu0);
    Ok(Figures {
        engine,
        alignment,
        m,
        final_force,
        close,
        cpu,
        stats,
        redb: None,
        final_forces,
        threads_peak: 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::cli::{BackendName, Stop, Workload};
    use std::sync::Mutex;
    use writebehind::{Handle, ReadBuffer, WriteBuffer};

    /// A plain in-memory handle (the library's MemoryHandle may still be a stub), enough
    /// for the workloads: write, append, read, force. Counts forces.
    #[derive(Default)]
    pub struct TestHandle {
        data: Mutex<Vec<u8>>,
        pub forces: std::sync::atomic::AtomicU64,
        pub fail_after: Option<u64>,
        writes: std::sync::atomic::AtomicU64,
    }

    impl TestHandle {
        pub fn with_len(len: u64) -> TestHandle {
            TestHandle {
                data: Mutex::new(vec![0; len as usize]),
                ..Default::default()
            }
        }

        pub fn failing_after(n: u64) -> TestHandle {
            TestHandle {
                fail_after: Some(n),
                ..Default::default()
            }
        }

        fn count_write(&self) -> io::Result<()> {
            let n = self
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail_after.is_some_and(|f| n >= f) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        }
    }

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "not in the test handle")
    }

    impl Handle for TestHandle {
        fn start_position(&self) -> u64 {
            0
        }
        fn end_position(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.count_write()?;
            let mut d = self.data.lock().unwrap();
            let end = offset as usize + data.len();
            if d.len() < end {
                d.resize(end, 0);
            }
            d[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn append(&self, data: &[u8]) -> io::Result<u64> {
            self.count_write()?;
            let mut d = self.data.lock().unwrap();
            let at = d.len() as u64;
            d.extend_from_slice(data);
            Ok(at)
        }
        fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let d = self.data.lock().unwrap();
            let end = offset as usize + buf.len();
            if end > d.len() {
                return Err(io::Error::from_raw_os_error(libc::EDOM));
            }
            buf.copy_from_slice(&d[offset as usize..end]);
            Ok(())
        }
        fn write_buffer(&self, _: u64, _: usize) -> io::Result<WriteBuffer<'_>> {
            Err(unsupported())
        }
        fn append_buffer(&self, _: usize) -> io::Result<WriteBuffer<'_>> {
            Err(unsupported())
        }
        fn read_buffer(&self, _: u64, _: usize) -> io::Result<ReadBuffer<'_>> {
            Err(unsupported())
        }
        fn force(&self) -> io::Result<()> {
            self.forces
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        fn force_range(&self, _: u64, _: u64) -> io::Result<()> {
            self.force()
        }
        fn truncate_start(&self, _: u64) -> io::Result<()> {
            Err(unsupported())
        }
    }

    pub fn cell(workload: Workload, stop: Stop) -> CellConfig {
        CellConfig {
            workload,
            backend: BackendName::Pwrite,
            batch: 0,
            threads: if workload == Workload::Log { 4 } else { 2 },
            readers: if workload == Workload::Mixed { 2 } else { 0 },
            write_size: if workload == Workload::Log { 512 } else { 4096 },
            file_size: if workload == Workload::Log {
                0
            } else {
                1 << 20
            },
            stop,
            direct: false,
            force_every: match workload {
                Workload::Log => 1,
                Workload::Seq => 0,
                _ => 10,
            },
            buffer_bytes: None,
            preallocate: None,
            files: 1,
        }
    }

    /// A machine description for a temp dir without probing the kernel.
    pub fn machine(dir: &Path) -> Machine {
        Machine {
            kernel: "Linux test".into(),
            cpus: 2,
            dir: dir.to_path_buf(),
            filesystem: "testfs".into(),
            fs_magic: "0x0".into(),
            dio_alignment: None,
            alignment_source: "none".into(),
            free_bytes: 1 << 40,
        }
    }

    fn open_test(h: TestHandle) -> impl Fn(&CellConfig, &Path, bool) -> io::Result<Opened> {
        let slot = Mutex::new(Some(h));
        move |_, _, _| Ok(Opened::Test(Box::new(slot.lock().unwrap().take().unwrap())))
    }

    #[test]
    fn every_workload_counts_ops_forces_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path());
        // redb runs through bench::redb (tests/redb_workload.rs covers it).
        for w in Workload::ALL.into_iter().filter(|w| w.writes_blocks()) {
            let c = cell(w, Stop::Ops(1000));
            let f = run_cell(
                &c,
                &m,
                &|_| {},
                &open_test(TestHandle::with_len(c.file_size)),
            )
            .unwrap();
            assert_eq!(f.m.ops, 1000, "{w:?}");
            assert_eq!(f.m.ack.len(), 1000, "{w:?}");
            assert_eq!(f.m.bytes_requested, 1000 * c.write_size);
            let forces = match w {
                Workload::Log => 1000,
                Workload::Seq => 0,
                _ => 100, // 500 per thread, every 10th
            };
            assert_eq!(f.m.forces, forces, "{w:?}");
            assert_eq!(f.m.force.len(), forces);
            assert_eq!(f.fsyncs(), forces + 1, "loop forces plus the final one");
            assert_eq!(f.bytes_written(), f.m.bytes_requested);
            if w == Workload::Mixed {
                assert_eq!(f.m.reads, f.m.read.len());
            } else {
                assert_eq!(f.m.reads, 0);
            }
            assert!(f.total() >= f.m.loop_time);
            assert!(f.ops_per_s() > 0.0 && f.mb_per_s() > 0.0);
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "scratch left"
            );
        }
    }

    #[test]
    fn a_duration_run_stops_near_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let c = cell(Workload::Pages, Stop::Duration(Duration::from_millis(200)));
        let f = run_cell(
            &c,
            &machine(dir.path()),
            &|_| {},
            &open_test(TestHandle::with_len(1 << 20)),
        )
        .unwrap();
        assert!(
            f.m.loop_time >= Duration::from_millis(200),
            "{:?}",
            f.m.loop_time
        );
        assert!(
            f.m.loop_time < Duration::from_secs(2),
            "{:?}",
            f.m.loop_time
        );
        assert!(f.m.ops > 0);
    }

    #[test]
    fn a_failing_write_ends_the_run_with_its_error_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let c = cell(Workload::Log, Stop::Duration(Duration::from_secs(30)));
        let t = Instant::now();
        let e = run_cell(
            &c,
            &machine(dir.path()),
            &|_| {},
            &open_test(TestHandle::failing_after(50)),
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "other threads did not stop"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// The files workload forces exactly the files a writer wrote since its last force.
    #[test]
    fn files_writers_force_the_files_they_dirtied() {
        use std::sync::atomic::Ordering::SeqCst;
        let hs: Vec<TestHandle> = (0..3).map(|_| TestHandle::with_len(64 << 10)).collect();
        let refs: Vec<&dyn Handle> = hs.iter().map(|h| h as &dyn Handle).collect();
        let c = CellConfig {
            workload: Workload::Files,
            threads: 1,
            files: 3,
            file_size: 3 * (64 << 10),
            force_every: 1,
            ..cell(Workload::Pages, Stop::Ops(300))
        };
        let m = drive(&refs, None, &c, 4096, &|_| {}).unwrap();
        assert_eq!(m.ops, 300);
        assert_eq!(m.forces, 300, "one dirty file per write");
        for h in &hs {
            let (w, f) = (h.writes.load(SeqCst), h.forces.load(SeqCst));
            assert!(w > 50, "{w} writes: random files");
            assert_eq!(f, w, "forced after each of its writes, never otherwise");
        }
        let c = CellConfig {
            force_every: 4,
            ..c
        };
        let before: u64 = hs.iter().map(|h| h.forces.load(SeqCst)).sum();
        let m = drive(&refs, None, &c, 4096, &|_| {}).unwrap();
        let after: u64 = hs.iter().map(|h| h.forces.load(SeqCst)).sum();
        assert_eq!(after - before, m.forces);
        // 75 rounds, each forcing the 1 to 3 distinct files of its 4 writes.
        assert!((75..=225).contains(&m.forces), "{}", m.forces);
        assert_eq!(m.force.len(), m.forces);
    }

    #[test]
    fn presized_files_are_written_before_opening() {
        let dir = tempfile::tempdir().unwrap();
        let c = cell(Workload::Pages, Stop::Ops(10));
        let seen = Mutex::new(0u64);
        let open = |_: &CellConfig, p: &Path, existing: bool| {
            assert!(existing);
            *seen.lock().unwrap() = std::fs::metadata(p)?.len();
            Ok(Opened::Test(Box::new(TestHandle::with_len(1 << 20))))
        };
        run_cell(&c, &machine(dir.path()), &|_| {}, &open).unwrap();
        assert_eq!(*seen.lock().unwrap(), 1 << 20);
    }
}
