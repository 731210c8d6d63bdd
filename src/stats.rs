//! `Stats`: what a write-behind handle did, for tuning and for benchmarks.

use hdrhistogram::Histogram;

/// Which write-back engine a handle runs on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters and latency histograms of a [`WriteBehindFile`](crate::WriteBehindFile),
/// from [`stats`](crate::WriteBehindFile::stats) on a live handle or from
/// [`close`](crate::WriteBehindFile::close). Latencies are in nanoseconds.
///
/// New counters may be added in minor versions (`#[non_exhaustive]`): read fields, build
/// one with [`Stats::new`]. The histograms are [`hdrhistogram::Histogram`]s, re-exported
/// as [`writebehind::hdrhistogram`](crate::hdrhistogram): their type is part of this
/// crate's API, so a major version of hdrhistogram that changes it comes with a major
/// version of this crate.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
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
    /// [`WriteBuffer`](crate::WriteBuffer) guards dropped (not released) whose bytes were
    /// not stored: their range lay below the start by then, or the handle had failed.
    /// [`release`](crate::WriteBuffer::release) returns that error instead.
    pub dropped_buffer_failures: u64,
    /// `ftruncate`s completed: `set_len`, and the trim of preallocated space at `close`.
    pub size_changes: u64,
    /// Bytes below the start freed by punching holes (`truncate_start`).
    pub bytes_punched: u64,
    /// Hole punches the file system refused (`EOPNOTSUPP`, after which punching stops, or
    /// `ENOSPC`); the handle carries on without them.
    pub punches_refused: u64,
    /// Zero bytes written ahead of the end (preallocation; see `Config::preallocate`).
    pub bytes_preallocated: u64,
    /// Zero fills the file system refused (`ENOSPC`, `EOPNOTSUPP`, `EDQUOT`); after one
    /// the handle stops preallocating and carries on.
    pub prealloc_refused: u64,
    /// Writes stored in the buffer of the extent they continue: growing it in place when
    /// it is dirty (no new block), or as a new block right after it when it is being
    /// written (no new buffer). Counted in `bytes_requested` too.
    pub extended_writes: u64,
    /// Writes stored side by side in a shared packing buffer (copied right after the
    /// previous one's bytes; a block of their own, but no pool buffer of their own).
    /// Counted in `bytes_requested` too.
    pub packed_writes: u64,
    /// Time from a write call's start to its return, for a sample of writes: one in
    /// [`ACK_SAMPLE`](Stats::ACK_SAMPLE) per writing thread (the first, then every
    /// `ACK_SAMPLE`-th), so the clock is not read on the other writes' path.
    pub write_ack_ns: Histogram<u64>,
    /// Time from submitting a write request to its completion.
    pub submit_to_complete_ns: Histogram<u64>,
    /// Time a `force`/`force_range` call took.
    pub force_ns: Histogram<u64>,
    /// Writes of this handle in flight on the engine when a `force`/`force_range` began
    /// to wait (forces found already durable are not counted): how much of its data was
    /// already on its way to the device.
    pub writes_in_flight_at_force: Histogram<u64>,
    /// Writes of this handle in flight on the engine while a force waited, weighted by
    /// time: each value is counted once per microsecond it lasted, as seen by the
    /// submission thread at each of its passes. Its mean is the queue depth the handle
    /// kept while forcers waited (0 while a forcer writes its own commit).
    pub queue_while_forcing: Histogram<u64>,
    /// Calls into the kernel (`io_uring_enter`) by the submission thread of this
    /// handle's [`Engine`](crate::Engine), for all its files together, so far (0 on the
    /// thread backend).
    pub engine_enters: u64,
    /// Those of [`engine_enters`](Stats::engine_enters) that submitted write-back
    /// requests (writes, syncs, size changes).
    pub engine_submits: u64,
    /// The cap on io_uring's kernel workers (io-wq) of this handle's engine, 0 when none
    /// is set (thread backend, or a kernel before 5.15).
    pub io_worker_cap: u32,
}

impl Stats {
    /// One write in this many (per thread) is timed for
    /// [`write_ack_ns`](Stats::write_ack_ns).
    pub const ACK_SAMPLE: u32 = 64;

    /// Empty statistics for a handle on `backend`.
    pub fn new(backend: BackendKind) -> Self {
        // Two significant digits (1% resolution), auto-resizing from a few counters: an
        // idle handle's four histograms take 8 KiB, not the 1 MiB that three digits
        // bounded at an hour zero up front (1,000 open files on an Engine must stay
        // small). `record` clamps values to an hour.
        let hist = || Histogram::new(2).expect("valid precision");
        Stats {
            backend,
            bytes_requested: 0,
            bytes_written: 0,
            write_ops: 0,
            blocks_per_write: hist(),
            fsyncs: 0,
            forces_served: 0,
            leader_syncs: 0,
            forces_immediate: 0,
            backpressure_waits: 0,
            backpressure_wait_ns: 0,
            short_writes: 0,
            retries: 0,
            cancelled_fsyncs: 0,
            dropped_buffer_failures: 0,
            size_changes: 0,
            bytes_punched: 0,
            punches_refused: 0,
            bytes_preallocated: 0,
            prealloc_refused: 0,
            extended_writes: 0,
            packed_writes: 0,
            write_ack_ns: hist(),
            submit_to_complete_ns: hist(),
            force_ns: hist(),
            writes_in_flight_at_force: hist(),
            queue_while_forcing: hist(),
            engine_enters: 0,
            engine_submits: 0,
            io_worker_cap: 0,
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

/// The largest latency recorded: an hour.
const MAX_RECORDED_NS: u64 = 3_600_000_000_000;

/// Records `value` (clamped into the histogram's range) without failing.
pub(crate) fn record(h: &mut Histogram<u64>, value: u64) {
    h.saturating_record(value.clamp(1, MAX_RECORDED_NS));
}
