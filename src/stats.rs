//! `Stats`: what a write-behind handle did, for tuning and for benchmarks.

use hdrhistogram::Histogram;

/// Which write-back engine a handle runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// One io_uring ring owned by the submission thread.
    IoUring,
    /// `pwritev`/`fdatasync` on background threads (io_uring unavailable or not chosen).
    Threads,
}

impl BackendKind {
    /// A short lowercase name: `"io_uring"` or `"threads"`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Threads => "threads",
        }
    }
}

/// Counters and latency histograms of a [`WriteBehindFile`](crate::WriteBehindFile),
/// from [`stats`](crate::WriteBehindFile::stats) on a live handle or from
/// [`close`](crate::WriteBehindFile::close). Latencies are in nanoseconds.
#[derive(Clone, Debug)]
pub struct Stats {
    /// The engine in use.
    pub backend: BackendKind,
    /// Bytes callers asked to write (`write`, `append`, buffers).
    pub bytes_requested: u64,
    /// Bytes written to the file (less than requested when rewrites were absorbed;
    /// more when short writes were resubmitted).
    pub bytes_written: u64,
    /// Write requests sent to the kernel (SQEs or `pwritev` calls), resubmissions included.
    pub write_ops: u64,
    /// Blocks merged into each write request.
    pub blocks_per_write: Histogram<u64>,
    /// `fsync`/`fdatasync` calls completed successfully.
    pub fsyncs: u64,
    /// `force`/`force_range` calls that were satisfied by an fsync (the group-commit
    /// ratio is `forces_served / fsyncs`).
    pub forces_served: u64,
    /// Syncs a forcer ran on its own thread, with the writes before them (leader of a
    /// group commit), rather than the submission thread on the engine; counted when
    /// started, successful or not.
    pub leader_syncs: u64,
    /// `force`/`force_range` calls that found every earlier write already durable.
    pub forces_immediate: u64,
    /// Times a writer waited for buffer space.
    pub backpressure_waits: u64,
    /// Total nanoseconds writers spent waiting for buffer space.
    pub backpressure_wait_ns: u64,
    /// Short writes whose remainder was resubmitted.
    pub short_writes: u64,
    /// Write completions with `EAGAIN`, `EINTR` or `ECANCELED` that were resubmitted.
    pub retries: u64,
    /// Linked fsyncs cancelled (`ECANCELED`) because the write before them fell short.
    pub cancelled_fsyncs: u64,
    /// Time from a write call's start to its return.
    pub write_ack_ns: Histogram<u64>,
    /// Time from submitting a write request to its completion.
    pub submit_to_complete_ns: Histogram<u64>,
    /// Time a `force`/`force_range` call took.
    pub force_ns: Histogram<u64>,
}

impl Stats {
    /// Empty statistics for a handle on `backend`.
    pub fn new(backend: BackendKind) -> Self {
        let hist = || Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
        Stats {
            backend,
            bytes_requested: 0,
            bytes_written: 0,
            write_ops: 0,
            blocks_per_write: Histogram::new_with_bounds(1, 1 << 20, 3).expect("valid bounds"),
            fsyncs: 0,
            forces_served: 0,
            leader_syncs: 0,
            forces_immediate: 0,
            backpressure_waits: 0,
            backpressure_wait_ns: 0,
            short_writes: 0,
            retries: 0,
            cancelled_fsyncs: 0,
            write_ack_ns: hist(),
            submit_to_complete_ns: hist(),
            force_ns: hist(),
        }
    }

    /// Average blocks per write request (the coalescing ratio); 0 before any write.
    pub fn coalescing(&self) -> f64 {
        if self.blocks_per_write.is_empty() {
            0.0
        } else {
            self.blocks_per_write.mean()
        }
    }
}

/// Records `value` (clamped into the histogram's range) without failing.
pub(crate) fn record(h: &mut Histogram<u64>, value: u64) {
    h.saturating_record(value.max(1));
}
