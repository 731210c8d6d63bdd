//! The conformance suite: the `Handle` contract, checked the same way for every handle.
//! The bodies live in `tests/common/mod.rs`; `conformance!` instantiates them. A new
//! handle (or configuration) joins with one `conformance!` line, as the ones below do.
//!
//! Which case catches which mistake. Checked by breaking a handle on purpose and running
//! the suite: a `MemoryHandle::read` that ignores the start failed `smoke`, `edom_*`,
//! `concurrent_load` (a truncated block read back as zeros instead of EDOM) and
//! `random_load` for every handle whenever the seed reads below the start (the model's
//! MemoryHandle/Shadow self-check); in `FileHandle`, a
//! non-atomic append reservation failed only `concurrent_load`, a write below the start
//! that stored its bytes failed `edom_*`, `end_position() == 0` after open failed
//! `reopen_*`, no alignment check failed `file_direct_misaligned_*`, a read that ignores
//! the end failed `edom_*`, `overlapping_*` and `random_load`, and a `truncate_start` that
//! ignores the end failed `edom_*` and `random_load`. In general:
//! - `smoke`: append/append_buffer not landing at the old end (reservation not atomic or
//!   not at the call), `write_buffer`/`append_buffer` guards that lose their bytes on
//!   `release`/drop, reads that ignore the start after `truncate_start`.
//! - `edom_leaves_contents_unchanged`: a read that ignores `start_position` or
//!   `end_position`; a write below the start that stores part of its bytes (the Stasis
//!   "spooky" EDOM write); `truncate_start` that moves past the end or backwards; a
//!   released append buffer whose range was truncated away being stored anyway.
//! - `overflow_and_bad_ranges_are_einval`: `offset + len` wrapping around `u64` (reading
//!   or writing near offset 0 instead), a `force_range` that accepts start > stop.
//! - `zero_length_calls`: zero-length writes that move the end, zero-length appends that
//!   reserve, zero-length reads at the end that fail.
//! - `random_load_matches_model`: any divergence from a plain file under a long mixed
//!   load (stale bytes after a rewrite, holes that are not zero, lost appends, a truncate
//!   that drops live bytes, wrong positions); each call's outcome is compared.
//! - `concurrent_load`: races: appends that hand out overlapping ranges, reads that see
//!   torn or stale blocks, errors other than EDOM below the start under contention.
//! - `overlapping_writes_match_model`: block bookkeeping that assumes whole-block access
//!   (the Stasis block rule): partial overlaps and reads spanning several writes, before
//!   and after `force`.
//! - `sequential_runs_match_model`: a write-behind handle's extents (buffers that grow in
//!   place under sequential writes) going wrong: bytes appended to the wrong place in the
//!   buffer, a trimmed or cut block that keeps growing, a read across a grown extent's old
//!   and new bytes, rewrites and shrinks into a growing run.
//! - `reopen_reads_back`: data that `force` did not make it to the file, an
//!   `end_position` on open that is not the file length, appends after open that do not
//!   start at the file length.
//! - `file_ext_read_at_is_short_at_the_end`: `FileExt::read_at` failing with EDOM where a
//!   `File` returns the bytes up to the end (or 0).
//! - `file_direct_misaligned_writes_are_einval`: misaligned O_DIRECT writes that reach the
//!   kernel (EINVAL without the alignment in the message, or partial effects), aligned
//!   writes from a misaligned address failing, misaligned reads failing.
//!
//! Seeds are printed and taken from `WRITEBEHIND_SEED`; `WRITEBEHIND_STRESS=1` runs the
//! full-size loads (100 threads x 500,000 operations).

#[macro_use]
mod common;

use std::sync::OnceLock;

use writebehind::{
    Backend, Config, Engine, EngineConfig, FileHandle, MemoryHandle, WriteBehindFile,
};

fn direct() -> Config {
    Config::default().direct_io(true)
}

/// The direct-I/O alignment of a file in the suite's temp dir (asked once).
fn dio_align() -> usize {
    static ALIGN: OnceLock<usize> = OnceLock::new();
    *ALIGN.get_or_init(|| {
        let dir = common::tempdir();
        let h = FileHandle::create(dir.path().join("probe"), &direct())
            .expect("O_DIRECT open in target/tmp (the suite needs a filesystem that supports it)");
        h.alignment()
    })
}

conformance!(memory, align: 1, create: |_| Ok(MemoryHandle::new()));

conformance!(file_buffered, align: 1,
    create: |p| FileHandle::create(p, &Config::default()),
    open: |p| FileHandle::open(p, &Config::default()),
    close: FileHandle::close);

conformance!(file_direct, align: dio_align(),
    create: |p| FileHandle::create(p, &direct()),
    open: |p| FileHandle::open(p, &direct()),
    close: FileHandle::close);

// The write-behind handle, on both engines, buffered and direct, with roomy and with tiny
// budgets (8 blocks / 64 KiB: backpressure and copy-on-write all the time).
fn wb(direct_io: bool, small: bool, backend: Backend) -> Config {
    let cfg = Config::default().direct_io(direct_io).backend(backend);
    if small {
        cfg.max_blocks(8).buffer_bytes(64 << 10)
    } else {
        cfg
    }
}

macro_rules! wb_conformance {
    ($name:ident, $direct:expr, $small:expr, $backend:expr) => {
        conformance!($name, align: if $direct { dio_align() } else { 1 },
            create: |p| WriteBehindFile::create(p, &wb($direct, $small, $backend)),
            open: |p| WriteBehindFile::open(p, &wb($direct, $small, $backend)),
            close: WriteBehindFile::close);
    };
}

wb_conformance!(wb_uring_buffered, false, false, Backend::IoUring);
wb_conformance!(wb_uring_direct, true, false, Backend::IoUring);
wb_conformance!(wb_uring_small, false, true, Backend::IoUring);
wb_conformance!(wb_uring_direct_small, true, true, Backend::IoUring);
wb_conformance!(wb_threads_buffered, false, false, Backend::Threads);
wb_conformance!(wb_threads_direct_small, true, true, Backend::Threads);

// Files on a shared engine: every case below opens its files on one of two engines the
// whole test binary shares (io_uring, threads), so the cases' files run concurrently on
// one submission thread, each against its model.
fn shared(backend: Backend) -> &'static Engine {
    static URING: OnceLock<Engine> = OnceLock::new();
    static THREADS: OnceLock<Engine> = OnceLock::new();
    let cell = match backend {
        Backend::Threads => &THREADS,
        _ => &URING,
    };
    cell.get_or_init(|| Engine::new(&EngineConfig::default().backend(backend)).expect("engine"))
}

macro_rules! shared_conformance {
    ($name:ident, $direct:expr, $small:expr, $backend:expr) => {
        conformance!($name, align: if $direct { dio_align() } else { 1 },
            create: |p| shared($backend).create(p, &wb($direct, $small, $backend).file_config()),
            open: |p| shared($backend).open(p, &wb($direct, $small, $backend).file_config()),
            close: WriteBehindFile::close);
    };
}

shared_conformance!(engine_uring_buffered, false, false, Backend::IoUring);
shared_conformance!(engine_uring_direct_small, true, true, Backend::IoUring);
shared_conformance!(engine_threads_buffered, false, false, Backend::Threads);

#[test]
fn file_direct_misaligned_writes_are_einval() {
    let dir = common::tempdir();
    let h = FileHandle::create(dir.path().join("file"), &direct()).unwrap();
    assert!(h.alignment() > 1 && h.alignment().is_power_of_two());
    common::direct_misaligned(&h, h.alignment());
}
