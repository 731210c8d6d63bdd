//! Shared test helpers: the generic bodies of the conformance suite, the reference model,
//! a seeded RNG, temp dirs on a filesystem that supports `O_DIRECT`, and the
//! `conformance!` macro that instantiates the suite for one handle.
//!
//! Every body is generic over `H: Handle` and takes `align`: 1 for buffered handles, the
//! direct-I/O alignment otherwise; then every write offset and length is a multiple of it
//! (4-byte blocks become `align`-byte blocks), while reads stay arbitrary.
#![allow(dead_code)] // each test crate uses a different subset

pub mod child;
pub mod loopfs;
pub mod model;
pub mod rng;

use std::fmt::Debug;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use writebehind::{errno, Handle};

pub use model::Model;
pub use rng::Rng;

/// Instantiates the conformance suite for one handle, as a module of `#[test]`s.
///
/// ```ignore
/// conformance!(memory, align: 1, create: |_| Ok(MemoryHandle::new()));
/// conformance!(file_buffered, align: 1,
///     create: |p| FileHandle::create(p, &Config::default()),
///     open: |p| FileHandle::open(p, &Config::default()),
///     close: |h: FileHandle| h.close());
/// ```
/// `create` gets a fresh path in a temp dir (in-memory handles ignore it) and returns
/// `io::Result<impl Handle>`. With `open` (same path, existing file) and `close` (consumes
/// the handle, returns `io::Result<_>`), the file-backed cases are added too: reopen and
/// `FileExt`, which the handle must then implement.
#[macro_export]
macro_rules! conformance {
    ($name:ident, align: $align:expr, create: $create:expr
     $(, open: $open:expr, close: $close:expr)? $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common;

            /// A fresh handle on a fresh file (kept alive by the returned dir).
            fn fresh() -> (tempfile::TempDir, impl writebehind::Handle) {
                let dir = common::tempdir();
                let h = common::call($create, &dir.path().join("file"))
                    .expect(concat!(stringify!($name), ": create failed"));
                (dir, h)
            }

            fn align() -> usize {
                $align
            }

            fn seed(case: &str) -> u64 {
                common::seed(&format!("{}::{case}", stringify!($name)))
            }

            #[test]
            fn smoke() {
                let (_d, h) = fresh();
                common::smoke(&h, align());
            }

            #[test]
            fn edom_leaves_contents_unchanged() {
                let (_d, h) = fresh();
                common::edom_cases(&h, align());
            }

            #[test]
            fn overflow_and_bad_ranges_are_einval() {
                let (_d, h) = fresh();
                common::invalid_arguments(&h, align());
            }

            #[test]
            fn zero_length_calls() {
                let (_d, h) = fresh();
                common::zero_length(&h, align());
            }

            #[test]
            fn set_len_shrinks_and_grows_like_a_file() {
                let (_d, h) = fresh();
                common::set_len_cases(&h, align());
            }

            #[test]
            fn random_load_matches_model() {
                let (_d, h) = fresh();
                common::random_load(&h, align(), seed("random_load"));
            }

            #[test]
            fn concurrent_load() {
                let (_d, h) = fresh();
                common::concurrent_load(std::sync::Arc::new(h), align(), seed("concurrent_load"));
            }

            #[test]
            fn sequential_runs_match_model() {
                let (_d, h) = fresh();
                common::sequential(&h, align(), seed("sequential"));
            }

            #[test]
            fn overlapping_writes_match_model() {
                let (_d, h) = fresh();
                common::overlapping(&h, align(), seed("overlapping"));
            }

            $(
            #[test]
            fn reopen_reads_back() {
                let dir = common::tempdir();
                let path = dir.path().join("file");
                common::reopen(
                    &path,
                    |p| common::call($create, p),
                    |p| common::call($open, p),
                    $close,
                    align(),
                    seed("reopen"),
                );
            }

            #[test]
            fn file_ext_read_at_is_short_at_the_end() {
                let (dir, h) = fresh();
                drop(h);
                // Opened through `open` so the concrete type (with `FileExt`) is kept.
                let h = common::call($open, &dir.path().join("file")).expect("open");
                common::file_ext(&h, align());
            }
            )?
        }
    };
}

/// Calls `f(path)`; gives a closure passed to the macro its argument type.
pub fn call<H, F: FnOnce(&Path) -> io::Result<H>>(f: F, path: &Path) -> io::Result<H> {
    f(path)
}

// ---------------------------------------------------------------- environment

/// A temp dir under Cargo's target tmp dir: on the project's filesystem, which (unlike a
/// tmpfs `/tmp`) enforces `O_DIRECT` alignment.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wb-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temp dir under target/tmp")
}

/// Skips a test that needs something this machine may lack (root, a loop device, a
/// cgroup), printing why, or fails it under `CI=true`: CI must run it.
#[track_caller]
pub fn skip_or_fail(what: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: cannot run under CI=true: {reason}");
    }
    eprintln!("skipped {what}: {reason}");
}

/// Runs `f` on its own thread and fails the test if it does not finish within `secs`: a
/// caller left blocked (a waiter never woken, a wedged buffer budget) fails the test
/// instead of hanging the suite.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = thread::Builder::new()
        .name(format!("body: {what}"))
        .spawn(move || {
            let v = f();
            let _ = tx.send(());
            v
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s: a caller was left blocked")
        }
    }
}

/// Routes the library's `log` records to stderr, one line each (the library itself never
/// prints; test code may). Safe to call more than once.
pub fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            eprintln!("{}", record.args());
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// `WRITEBEHIND_STRESS=1` asks for the full-size loads.
pub fn stress() -> bool {
    std::env::var("WRITEBEHIND_STRESS").is_ok_and(|v| v == "1")
}

/// The seed for one case: `WRITEBEHIND_SEED` if set, else fresh from the clock. Printed
/// (the harness shows it when the test fails) so a failure can be repeated.
pub fn seed(case: &str) -> u64 {
    let seed = match std::env::var("WRITEBEHIND_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("WRITEBEHIND_SEED={s:?} is not a u64")),
        Err(_) => {
            static SALT: AtomicU64 = AtomicU64::new(0);
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let mut r = Rng::new(t.as_nanos() as u64 ^ SALT.fetch_add(1, Ordering::Relaxed));
            r.next() % 1_000_000_000
        }
    };
    eprintln!("{case}: seed {seed} (rerun with WRITEBEHIND_SEED={seed})");
    seed
}

/// Deterministic contents for a block: the same `seed` always gives the same bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

// ---------------------------------------------------------------- assertions

/// The errno of an error, or a panic naming `what` if the call succeeded.
#[track_caller]
pub fn err_of<T: Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => errno(&e).unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Asserts that `r` failed with `code`.
#[track_caller]
pub fn assert_errno<T: Debug>(what: &str, r: io::Result<T>, code: i32) {
    let got = err_of(what, r);
    assert_eq!(got, code, "{what}: errno {got}, expected {code}");
}

/// Asserts the handle and the model agree: both Ok with equal values, or the same errno.
#[track_caller]
pub fn assert_same<T: PartialEq + Debug>(what: &str, got: io::Result<T>, want: io::Result<T>) {
    match (got, want) {
        (Ok(g), Ok(w)) => {
            if g != w {
                panic!("{what}: handle and model differ{}", describe_diff(&g, &w));
            }
        }
        (Err(g), Err(w)) => assert_eq!(
            errno(&g),
            errno(&w),
            "{what}: handle failed with {g}, model with {w}"
        ),
        (g, w) => panic!("{what}: handle gave {g:?}, model {w:?}"),
    }
}

fn describe_diff<T: Debug>(g: &T, w: &T) -> String {
    let (g, w) = (format!("{g:?}"), format!("{w:?}"));
    let at = g.bytes().zip(w.bytes()).take_while(|(a, b)| a == b).count();
    let from = at.saturating_sub(40);
    format!(
        " (debug text from char {from}):\n handle: {}\n  model: {}",
        &g[from..g.len().min(at + 80)],
        &w[from..w.len().min(at + 80)]
    )
}

/// Everything a handle exposes: positions and the bytes of `[start, end)`.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub start: u64,
    pub end: u64,
    pub bytes: Vec<u8>,
}

pub fn snapshot(h: &impl Handle) -> Snapshot {
    let (start, end) = (h.start_position(), h.end_position());
    let mut bytes = vec![0; (end - start) as usize];
    h.read(start, &mut bytes).expect("read [start, end)");
    Snapshot { start, end, bytes }
}

/// Reads `[offset, offset + len)` into a new vector.
pub fn read_vec(h: &(impl Handle + ?Sized), offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0xEE; len];
    h.read(offset, &mut v)?;
    Ok(v)
}

/// Writes through `write_buffer`. The error may come from the call or from `release`.
pub fn write_via_buffer(h: &impl Handle, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut b = h.write_buffer(offset, data.len())?;
    assert_eq!(b.offset(), offset, "write_buffer offset");
    assert_eq!(b.len(), data.len(), "write_buffer length");
    assert!(b.iter().all(|&x| x == 0), "write_buffer starts zero-filled");
    b.copy_from_slice(data);
    b.release()
}

/// Appends through `append_buffer`; `drop` commits by dropping the guard instead of
/// `release`.
pub fn append_via_buffer(h: &impl Handle, data: &[u8], drop_it: bool) -> io::Result<u64> {
    let mut b = h.append_buffer(data.len())?;
    let at = b.offset();
    assert!(
        b.iter().all(|&x| x == 0),
        "append_buffer starts zero-filled"
    );
    b.copy_from_slice(data);
    if drop_it {
        drop(b);
    } else {
        b.release()?;
    }
    Ok(at)
}

/// The small block size: 4 bytes, or `align` for direct I/O.
pub fn small_block(align: usize) -> usize {
    if align == 1 {
        4
    } else {
        align
    }
}

/// The large block size: 4 KiB (or `align` if that is larger).
pub fn big_block(align: usize) -> usize {
    4096usize.max(align)
}

fn round_down(v: u64, unit: usize) -> u64 {
    v / unit as u64 * unit as u64
}

fn round_up(v: u64, unit: usize) -> u64 {
    v.div_ceil(unit as u64) * unit as u64
}

// ---------------------------------------------------------------- case 1: smoke

/// The smoke sequence (a few writes, appends, reads and a truncate, each checked), in units
/// of `u` (4 bytes, or `align`).
pub fn smoke(h: &impl Handle, align: usize) {
    let u = small_block(align);
    let uu = u as u64;
    let block = |first: u8| -> Vec<u8> { (0..u).map(|i| first.wrapping_add(i as u8)).collect() };
    let (a, b, c, d) = (block(b'a'), block(b'e'), block(b'i'), block(b'm'));

    assert_eq!(
        (h.start_position(), h.end_position()),
        (0, 0),
        "a new handle"
    );
    assert_eq!(
        h.append(&[]).unwrap(),
        0,
        "zero-length append on an empty handle"
    );
    assert_eq!(h.end_position(), 0);

    h.write(0, &a).unwrap();
    assert_eq!(read_vec(h, 0, u).unwrap(), a, "write at 0 / read back");

    let mut wb = h.write_buffer(uu, u).unwrap();
    assert_eq!(wb.offset(), uu);
    wb.copy_from_slice(&b);
    wb.release().unwrap();
    let rb = h.read_buffer(0, 2 * u).unwrap();
    assert_eq!(&rb[..u], &a[..], "read_buffer at 0");
    assert_eq!(&rb[u..], &b[..], "write_buffer at u");
    drop(rb);

    assert_eq!(h.append(&c).unwrap(), 2 * uu, "append lands at 2u");
    let mut ab = h.append_buffer(u).unwrap();
    assert_eq!(ab.offset(), 3 * uu, "append_buffer lands at 3u");
    assert_eq!(
        h.end_position(),
        4 * uu,
        "append_buffer reserves at the call"
    );
    ab.copy_from_slice(&d);
    drop(ab); // dropping the guard commits it

    h.truncate_start(2 * uu).unwrap();
    assert_eq!(h.start_position(), 2 * uu);
    assert_eq!(h.end_position(), 4 * uu);
    assert_eq!(
        read_vec(h, 2 * uu, u).unwrap(),
        c,
        "read at 2u after truncate"
    );
    assert_eq!(
        read_vec(h, 3 * uu, u).unwrap(),
        d,
        "read at 3u after truncate"
    );
    assert_eq!(
        &*h.read_buffer(2 * uu, 2 * u).unwrap(),
        [c, d].concat().as_slice()
    );
    assert_errno("read below the new start", read_vec(h, 0, u), libc::EDOM);
}

// ---------------------------------------------------------------- case 2: EDOM

/// Every EDOM case, each followed by a check that nothing changed.
pub fn edom_cases(h: &impl Handle, align: usize) {
    let u = small_block(align);
    let uu = u as u64;
    let data = pattern(7, 8 * u);
    h.write(0, &data).unwrap();
    h.truncate_start(2 * uu).unwrap();
    let before = snapshot(h);
    assert_eq!(before.bytes, data[2 * u..], "setup");
    let unchanged = |what: &str| assert_eq!(snapshot(h), before, "{what} changed the handle");
    let edom = |what: &str, r: io::Result<()>| {
        assert_errno(what, r, libc::EDOM);
        unchanged(what);
    };

    edom(
        "read crossing the end",
        read_vec(h, 6 * uu, 4 * u).map(drop),
    );
    edom("read at the end", read_vec(h, 8 * uu, 1).map(drop));
    edom("read far past the end", read_vec(h, 1000 * uu, u).map(drop));
    edom("read below the start", read_vec(h, uu, u).map(drop));
    edom("read crossing the start", read_vec(h, uu, 2 * u).map(drop));
    edom(
        "read one byte below the start",
        read_vec(h, 2 * uu - 1, 1).map(drop),
    );
    edom(
        "read_buffer crossing the end",
        h.read_buffer(7 * uu, 2 * u).map(drop),
    );
    edom("read_buffer below the start", h.read_buffer(0, u).map(drop));
    edom("write below the start", h.write(uu, &vec![0xAB; u]));
    edom("write crossing the start", h.write(uu, &vec![0xAB; 2 * u]));
    edom(
        "write_buffer below the start",
        write_via_buffer(h, uu, &vec![0xCD; 2 * u]),
    );
    edom("truncate_start past the end", h.truncate_start(8 * uu + 1));
    edom(
        "truncate_start far past the end",
        h.truncate_start(u64::MAX),
    );

    h.truncate_start(uu).unwrap();
    unchanged("truncate_start below the start");
    h.truncate_start(2 * uu).unwrap();
    unchanged("truncate_start at the start");

    // A reserved append range truncated away before its guard is released: the release
    // is a write below the start.
    let mut ab = h.append_buffer(u).unwrap();
    assert_eq!(ab.offset(), 8 * uu);
    ab.copy_from_slice(&vec![0xEF; u]);
    h.truncate_start(9 * uu).unwrap();
    assert_errno("release below the start", ab.release(), libc::EDOM);
    assert_eq!((h.start_position(), h.end_position()), (9 * uu, 9 * uu));
    assert_errno(
        "read of the truncated append",
        read_vec(h, 8 * uu, u),
        libc::EDOM,
    );
}

// ---------------------------------------------------------------- extra: EINVAL, zero length

/// `offset + len` overflowing `u64`, and `force_range` with start > stop: `EINVAL`, no change.
pub fn invalid_arguments(h: &impl Handle, align: usize) {
    let u = small_block(align);
    h.write(0, &pattern(3, 4 * u)).unwrap();
    let before = snapshot(h);
    let unchanged = |what: &str| assert_eq!(snapshot(h), before, "{what} changed the handle");
    let big = vec![1u8; u];
    let top = round_down(u64::MAX, u);

    assert_errno(
        "write overflowing u64",
        h.write(top, &[big.clone(), big.clone()].concat()),
        libc::EINVAL,
    );
    unchanged("write overflowing u64");
    assert_errno("write at u64::MAX", h.write(u64::MAX, &big), libc::EINVAL);
    unchanged("write at u64::MAX");
    assert_errno(
        "read overflowing u64",
        read_vec(h, u64::MAX - 1, 4),
        libc::EINVAL,
    );
    assert_errno(
        "read_buffer overflowing u64",
        h.read_buffer(u64::MAX, 2).map(drop),
        libc::EINVAL,
    );
    assert_errno(
        "write_buffer overflowing u64",
        write_via_buffer(h, top, &[big.clone(), big].concat()),
        libc::EINVAL,
    );
    unchanged("write_buffer overflowing u64");
    assert_errno(
        "force_range with start > stop",
        h.force_range(5, 3),
        libc::EINVAL,
    );
    unchanged("force_range");
    h.force_range(0, u64::MAX).unwrap();
    h.force_range(3, 3).unwrap();
}

/// Zero-length calls inside the valid range succeed and change nothing.
pub fn zero_length(h: &impl Handle, align: usize) {
    let u = small_block(align);
    let uu = u as u64;
    h.write(0, &pattern(5, 4 * u)).unwrap();
    h.truncate_start(uu).unwrap();
    let before = snapshot(h);
    let unchanged = |what: &str| assert_eq!(snapshot(h), before, "{what} changed the handle");

    for at in [uu, 2 * uu, 4 * uu] {
        h.read(at, &mut []).unwrap();
        assert_eq!(h.read_buffer(at, 0).unwrap().len(), 0);
        h.write(at, &[]).unwrap();
        unchanged("zero-length write inside");
    }
    h.write(100 * uu, &[]).unwrap();
    unchanged("zero-length write past the end");
    assert_eq!(
        h.append(&[]).unwrap(),
        4 * uu,
        "zero-length append returns the end"
    );
    unchanged("zero-length append");
    write_via_buffer(h, 4 * uu, &[]).unwrap();
    unchanged("zero-length write_buffer");
    assert_eq!(append_via_buffer(h, &[], false).unwrap(), 4 * uu);
    unchanged("zero-length append_buffer");
    h.force().unwrap();
}

// ---------------------------------------------------------------- case 3: random load

/// Operation counts: (single-thread ops, threads, ops per thread).
pub fn sizes() -> (usize, usize, usize) {
    if stress() {
        (500_000, 100, 500_000)
    } else {
        (8_000, 16, 1_000)
    }
}

/// A random write offset: mostly in `[start, end + 2 big)`, sometimes below the start.
fn pick_write_offset(rng: &mut Rng, m: &Model, unit: usize, big: usize) -> u64 {
    let (start, end) = (m.start(), m.end());
    if start >= unit as u64 && rng.chance(3) {
        return round_down(rng.below(start), unit);
    }
    let lo = round_up(start, unit);
    let hi = end + 2 * big as u64;
    round_down(rng.range(lo, hi), unit)
}

/// A random read range: mostly inside `[start, end)`, sometimes crossing either edge.
fn pick_read(rng: &mut Rng, m: &Model, big: usize) -> (u64, usize) {
    let (start, end) = (m.start(), m.end());
    let len = match rng.below(4) {
        0 => rng.range(1, 8) as usize,
        1 => rng.range(1, 2 * big as u64) as usize,
        _ => big,
    };
    let lo = start.saturating_sub(if rng.chance(5) { big as u64 } else { 0 });
    let hi = (end + if rng.chance(5) { big as u64 } else { 0 }).saturating_sub(len as u64);
    let off = if hi > lo { rng.range(lo, hi) } else { lo };
    (off, len)
}

/// Case 3: a seeded random single-thread load of small and 4 KiB blocks (writes,
/// write_buffer, appends, append_buffer, reads, read_buffer, force 1%, truncate 1%,
/// set_len 2%);
/// every outcome (bytes or errno) and the positions after every call match the model.
pub fn random_load(h: &impl Handle, align: usize, seed: u64) {
    let ops = sizes().0;
    random_ops(h, align, seed, ops);
}

/// The body of [`random_load`] with an explicit operation count.
pub fn random_ops(h: &impl Handle, align: usize, seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut m = Model::new();
    let (small, big) = (small_block(align), big_block(align));
    for i in 0..ops {
        let what = |op: &str| format!("op {i} ({op}), seed {seed}");
        let len = if rng.chance(50) { small } else { big };
        match rng.below(1020) {
            0..5 => h.force().unwrap(),
            // set_len: mostly inside [start, end + big), sometimes below the start (EDOM).
            1000..1020 => {
                let (start, end) = (m.start(), m.end());
                let len = if start >= small as u64 && rng.chance(10) {
                    round_down(rng.below(start), small)
                } else {
                    round_down(rng.range(start, end + big as u64 + 1), small)
                        .max(round_up(start, small))
                };
                assert_same(&what("set_len"), h.set_len(len), m.set_len(len));
            }
            5..10 => {
                let (a, b) = (rng.below(m.end() + 1), rng.below(m.end() + 1));
                h.force_range(a.min(b), a.max(b)).unwrap();
            }
            10..20 => {
                let target = if rng.chance(10) {
                    m.end() + 1 + rng.below(big as u64)
                } else {
                    m.start() + rng.below((m.end() - m.start()) / 4 + 1)
                };
                assert_same(
                    &what("truncate_start"),
                    h.truncate_start(target),
                    m.truncate_start(target),
                );
            }
            20..270 => {
                let off = pick_write_offset(&mut rng, &m, small, big);
                let data = rng.bytes(len);
                assert_same(&what("write"), h.write(off, &data), m.write(off, &data));
            }
            270..370 => {
                let off = pick_write_offset(&mut rng, &m, small, big);
                let data = rng.bytes(len);
                assert_same(
                    &what("write_buffer"),
                    write_via_buffer(h, off, &data),
                    m.write(off, &data),
                );
            }
            370..470 => {
                let data = rng.bytes(len);
                assert_same(&what("append"), h.append(&data), m.append(&data));
            }
            470..550 => {
                let data = rng.bytes(len);
                let drop_it = rng.chance(50);
                assert_same(
                    &what("append_buffer"),
                    append_via_buffer(h, &data, drop_it),
                    m.append(&data),
                );
            }
            550..800 => {
                let (off, len) = pick_read(&mut rng, &m, big);
                assert_same(&what("read"), read_vec(h, off, len), m.read(off, len));
            }
            _ => {
                let (off, len) = pick_read(&mut rng, &m, big);
                let got = h.read_buffer(off, len).map(|b| b.to_vec());
                assert_same(&what("read_buffer"), got, m.read(off, len));
            }
        }
        assert_eq!(
            (h.start_position(), h.end_position()),
            (m.start(), m.end()),
            "{}: positions (start, end)",
            what("after")
        );
        if i % 500 == 499 {
            assert_eq!(
                snapshot(h),
                m.snapshot(),
                "{}: whole contents",
                what("check")
            );
        }
    }
    assert_eq!(
        snapshot(h),
        m.snapshot(),
        "whole contents at the end, seed {seed}"
    );
    h.force().unwrap();
}

// ---------------------------------------------------------------- case 4: concurrent load

/// A block one thread owns: `[off, off + len)` holds `pattern(seed, len)`.
#[derive(Clone, Copy, Debug)]
struct Owned {
    off: u64,
    len: usize,
    seed: u64,
}

/// Case 4: `threads` threads on one `Arc` handle, each appending blocks it then owns,
/// rewriting and reading back only its own blocks, with force and truncate from any
/// thread. A read must return exactly the last bytes its owner wrote; the only error
/// accepted is `EDOM` for a block that is now below the start.
pub fn concurrent_load<H: Handle>(h: std::sync::Arc<H>, align: usize, seed: u64) {
    let (_, threads, ops) = sizes();
    concurrent_ops(&*h, align, seed, threads, ops);
}

/// The body of [`concurrent_load`] with explicit sizes.
pub fn concurrent_ops<H: Handle>(h: &H, align: usize, seed: u64, threads: usize, ops: usize) {
    let (small, big) = (small_block(align), big_block(align));
    let survivors: Vec<Vec<Owned>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                    let mut owned: Vec<Owned> = Vec::new();
                    let mut next_seed = (t as u64) << 40;
                    let mut fresh = || {
                        next_seed += 1;
                        next_seed
                    };
                    // EDOM is fine only if the block now lies (partly) below the start.
                    let gone = |what: &str, b: &Owned, e: io::Error| {
                        let start = h.start_position();
                        assert!(
                            errno(&e) == Some(libc::EDOM) && b.off < start,
                            "thread {t}: {what} of {b:?} failed with {e} (start {start}), seed {seed}"
                        );
                    };
                    for _ in 0..ops {
                        let len = if rng.chance(50) { small } else { big };
                        match rng.below(100) {
                            0 => {
                                if rng.chance(50) {
                                    h.force().unwrap();
                                } else if let Some(b) = owned.get(rng.below(owned.len().max(1) as u64) as usize) {
                                    h.force_range(b.off, b.off + b.len as u64).unwrap();
                                }
                            }
                            1 => {
                                let (start, end) = (h.start_position(), h.end_position());
                                h.truncate_start(start + (end - start) / 8).unwrap();
                            }
                            2..20 => {
                                let b_seed = fresh();
                                let off = h.append(&pattern(b_seed, len)).unwrap();
                                owned.push(Owned { off, len, seed: b_seed });
                            }
                            20..28 => {
                                let b_seed = fresh();
                                let drop_it = rng.chance(50);
                                let mut buf = h.append_buffer(len).unwrap();
                                let b = Owned { off: buf.offset(), len, seed: b_seed };
                                buf.copy_from_slice(&pattern(b_seed, len));
                                let r = if drop_it {
                                    drop(buf);
                                    Ok(())
                                } else {
                                    buf.release()
                                };
                                match r {
                                    Ok(()) => owned.push(b),
                                    // Reserved, then truncated away before the release.
                                    Err(e) => gone("append_buffer release", &b, e),
                                }
                            }
                            28..50 if !owned.is_empty() => {
                                let i = rng.below(owned.len() as u64) as usize;
                                let b_seed = fresh();
                                let data = pattern(b_seed, owned[i].len);
                                let r = if rng.chance(50) {
                                    h.write(owned[i].off, &data)
                                } else {
                                    write_via_buffer(h, owned[i].off, &data)
                                };
                                match r {
                                    Ok(()) => owned[i].seed = b_seed,
                                    Err(e) => gone("rewrite", &owned.swap_remove(i), e),
                                }
                            }
                            50.. if !owned.is_empty() => {
                                let i = rng.below(owned.len() as u64) as usize;
                                let b = owned[i];
                                let r = if rng.chance(50) {
                                    read_vec(h, b.off, b.len)
                                } else {
                                    h.read_buffer(b.off, b.len).map(|r| r.to_vec())
                                };
                                match r {
                                    Ok(got) => assert!(
                                        got == pattern(b.seed, b.len),
                                        "thread {t}: read of own block {b:?} returned wrong bytes, seed {seed}"
                                    ),
                                    Err(e) => {
                                        owned.swap_remove(i);
                                        gone("read", &b, e);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    owned
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // Quiescent now: every surviving block above the start holds its last bytes.
    let start = h.start_position();
    for b in survivors.iter().flatten().filter(|b| b.off >= start) {
        assert_eq!(
            read_vec(h, b.off, b.len).unwrap(),
            pattern(b.seed, b.len),
            "final check of {b:?}, seed {seed}"
        );
    }
    h.force().unwrap();
}

// ---------------------------------------------------------------- case 5: overlapping writes

/// Case 5: writes that partly overlap earlier ones (scripted, then random, with forces in
/// between so some bytes are on disk and some are not), reads spanning several of them;
/// every read matches the model.
/// Sequential runs (the pattern that grows extents in a write-behind handle): writes and
/// appends that continue where the last one ended, in pieces of one to a few units, mixed
/// with reads spanning the newest bytes and older ones (an extent's old and new bytes),
/// `force_range`s over older parts (sent while the run goes on growing), rewrites of
/// recent ranges (partial overlaps of a growing extent), shrinks into the run, and
/// `truncate_start`. Every call's outcome is compared with the model.
pub fn sequential(h: &impl Handle, align: usize, seed: u64) {
    let u = align.max(512);
    let mut m = Model::new();
    let mut rng = Rng::new(seed);
    let mut cursor = 0u64;
    let ops = if stress() { 200_000 } else { 6_000 };
    for i in 0..ops {
        let what = |op: &str| format!("op {i} ({op}), seed {seed}");
        let len = u * rng.range(1, 9) as usize;
        match rng.below(100) {
            0..45 => {
                let data = rng.bytes(len);
                assert_same(
                    &what("write at the cursor"),
                    h.write(cursor, &data),
                    m.write(cursor, &data),
                );
                cursor += len as u64;
            }
            45..65 => {
                let data = rng.bytes(len);
                let got = h.append(&data);
                let want = m.append(&data);
                let next = want.as_ref().ok().map(|off| off + len as u64);
                assert_same(&what("append"), got, want);
                if let Some(next) = next {
                    cursor = next;
                }
            }
            65..85 => {
                // A span ending at the newest byte, reaching back into older ones.
                let end = m.end();
                let back = (u * rng.range(1, 64) as usize) as u64;
                let off = end.saturating_sub(back).max(m.start());
                let n = (end - off) as usize;
                assert_same(
                    &what("read across the run"),
                    read_vec(h, off, n),
                    m.read(off, n),
                );
                let rb = h.read_buffer(off, n).map(|b| b.to_vec());
                assert_same(&what("read_buffer across the run"), rb, m.read(off, n));
            }
            85..90 => {
                let end = m.end();
                let a = end.saturating_sub((u * rng.range(1, 256) as usize) as u64);
                h.force_range(a, end.saturating_sub(u as u64).max(a))
                    .unwrap();
            }
            90..95 => {
                // Rewrite a recent range: a partial overlap of the growing extent.
                let end = m.end();
                let off = round_down(
                    end.saturating_sub((u * rng.range(1, 32) as usize) as u64),
                    u,
                )
                .max(round_up(m.start(), u));
                let data = rng.bytes(len);
                assert_same(&what("rewrite"), h.write(off, &data), m.write(off, &data));
                cursor = cursor.max(off + len as u64);
            }
            95..97 => {
                let end = m.end();
                let len = round_down(end.saturating_sub((u * rng.range(0, 8) as usize) as u64), u)
                    .max(round_up(m.start(), u));
                assert_same(&what("set_len"), h.set_len(len), m.set_len(len));
                cursor = len;
            }
            97 => {
                let target = m.start() + rng.below((m.end() - m.start()) / 8 + 1);
                assert_same(
                    &what("truncate_start"),
                    h.truncate_start(target),
                    m.truncate_start(target),
                );
            }
            _ => {
                // Jump the cursor: a new run starts elsewhere (inside the file).
                cursor = round_up(m.start() + rng.below(m.end() - m.start() + 1), u);
            }
        }
        if cursor < m.start() {
            cursor = round_up(m.start(), u);
        }
        assert_eq!(
            (h.start_position(), h.end_position()),
            (m.start(), m.end()),
            "{}",
            what("positions")
        );
    }
    h.force().unwrap();
    let n = (m.end() - m.start()) as usize;
    assert_same(
        "final read",
        read_vec(h, m.start(), n),
        m.read(m.start(), n),
    );
}

pub fn overlapping(h: &impl Handle, align: usize, seed: u64) {
    let u = align as u64; // byte-granular when buffered
    let mut m = Model::new();
    let mut rng = Rng::new(seed);
    let write = |h: &dyn Fn(u64, &[u8]) -> io::Result<()>,
                 m: &mut Model,
                 off: u64,
                 units: u64,
                 tag: u64| {
        let data = pattern(tag, (units * u) as usize);
        assert_same(
            &format!("write {tag} at {off}"),
            h(off * u, &data),
            m.write(off * u, &data),
        );
    };
    let w = |off: u64, d: &[u8]| h.write(off, d);
    let wb = |off: u64, d: &[u8]| write_via_buffer(h, off, d);
    let check = |m: &Model, what: &str| {
        let end = m.end();
        for (a, b) in [
            (0, end),
            (u, end - u),
            (3 * u, 17 * u),
            (9 * u, 10 * u),
            (end / 3, end / 2),
        ] {
            let len = b.saturating_sub(a) as usize;
            assert_same(
                &format!("{what}: read [{a}, {b})"),
                read_vec(h, a, len),
                m.read(a, len),
            );
            let rb = h.read_buffer(a, len).map(|r| r.to_vec());
            assert_same(
                &format!("{what}: read_buffer [{a}, {b})"),
                rb,
                m.read(a, len),
            );
        }
    };

    // Scripted, in units of `u`: A [0,10) B [5,15) tail overlap, C [3,4) inside A,
    // D [2,20) covering all, E [12,13) inside D, F [19,40) head overlap, G [0,1).
    write(&w, &mut m, 0, 10, 1);
    write(&wb, &mut m, 5, 10, 2);
    write(&w, &mut m, 3, 1, 3);
    check(&m, "after A B C");
    h.force().unwrap();
    write(&w, &mut m, 2, 18, 4);
    write(&wb, &mut m, 12, 1, 5);
    check(&m, "after D E");
    write(&w, &mut m, 19, 21, 6);
    h.force_range(0, 20 * u).unwrap();
    write(&w, &mut m, 0, 1, 7);
    check(&m, "after F G");

    // Random mixes of sizes at unit-granular offsets in a 32 KiB window.
    let window = (32 << 10) / u;
    let ops = if stress() { 50_000 } else { 1_000 };
    for i in 0..ops {
        let what = format!("op {i}, seed {seed}");
        match rng.below(100) {
            0..35 => {
                let units = match rng.below(3) {
                    0 => rng.range(1, 16),
                    1 => rng.range(1, 3) * 4096 / u,
                    _ => rng.range(1, 9000 / u),
                };
                let off = rng.below(window);
                let tag = rng.next();
                if rng.chance(30) {
                    write(&wb, &mut m, off, units, tag);
                } else {
                    write(&w, &mut m, off, units, tag);
                }
            }
            35..40 => {
                let n = rng.range(1, 3) as usize * u as usize;
                let data = rng.bytes(n);
                assert_same(&what, h.append(&data), m.append(&data));
            }
            40..45 => h.force().unwrap(),
            _ => {
                let end = m.end();
                let a = rng.below(end + 1);
                let len = rng.below(end - a + 1) as usize;
                assert_same(
                    &format!("{what}: read [{a}, +{len})"),
                    read_vec(h, a, len),
                    m.read(a, len),
                );
            }
        }
    }
    assert_eq!(snapshot(h), m.snapshot(), "whole contents, seed {seed}");
}

// ---------------------------------------------------------------- set_len

/// `set_len` as `std::fs::File::set_len`: bytes past a shrink never come back (not after
/// a force, not when the file grows again, not from a write in flight), growth reads as
/// zeros, a length below the start is `EDOM`, and writes after a shrink land.
pub fn set_len_cases(h: &impl Handle, align: usize) {
    let mut m = Model::new();
    let big = big_block(align);
    let unit = small_block(align) as u64;
    let mut rng = Rng::new(7);
    for i in 0..8u64 {
        let data = rng.bytes(big);
        assert_same(
            "write",
            h.write(i * big as u64, &data),
            m.write(i * big as u64, &data),
        );
    }
    h.force().unwrap(); // the bytes are in the file: a shrink must hide them there too
    let third = round_down(3 * big as u64 + 3 * unit, unit as usize);
    for (what, len) in [
        ("shrink", third),
        ("grow past the old bytes", 8 * big as u64),
        ("shrink to 0", 0),
        ("grow from 0", 2 * big as u64 + unit),
    ] {
        assert_same(what, h.set_len(len), m.set_len(len));
        assert_eq!(h.end_position(), len, "{what}: end_position");
        assert_eq!(snapshot(h), m.snapshot(), "{what}: contents");
        let data = rng.bytes(big);
        let at = round_down(len / 2, unit as usize);
        assert_same(
            "write after set_len",
            h.write(at, &data),
            m.write(at, &data),
        );
        assert_eq!(snapshot(h), m.snapshot(), "{what}: contents after a write");
        if len % 2 == 0 {
            h.force().unwrap();
        }
    }
    // Buffered, unforced bytes past a shrink are dropped too.
    let data = rng.bytes(big);
    let end = m.end();
    assert_same("append", h.append(&data), m.append(&data));
    assert_same("shrink over an append", h.set_len(end), m.set_len(end));
    assert_same(
        "grow",
        h.set_len(end + big as u64),
        m.set_len(end + big as u64),
    );
    assert_eq!(
        snapshot(h),
        m.snapshot(),
        "after dropping a buffered append"
    );
    h.force().unwrap();
    assert_eq!(snapshot(h), m.snapshot(), "after the force");
    // Below the start: EDOM, nothing changes.
    let start = round_down(m.end() / 2, unit as usize);
    assert_same(
        "truncate_start",
        h.truncate_start(start),
        m.truncate_start(start),
    );
    if start >= unit {
        assert_errno(
            "set_len below the start",
            h.set_len(start - unit),
            libc::EDOM,
        );
    }
    assert_eq!(h.end_position(), m.end(), "EDOM changed the end");
    assert_same("set_len to the start", h.set_len(start), m.set_len(start));
    assert_eq!(snapshot(h), m.snapshot(), "set_len to the start");
    if align > 1 {
        assert_errno("unaligned set_len", h.set_len(start + 1), libc::EINVAL);
    }
    h.force().unwrap();
}

// ---------------------------------------------------------------- case 6: reopen

/// Case 6: data written (holes, overwrites, appends), forced and closed is read back by a
/// fresh handle on the same file, with `end_position` equal to the file length; twice, the
/// second time appending to the reopened file.
pub fn reopen<H: Handle, T>(
    path: &Path,
    create: impl FnOnce(&Path) -> io::Result<H>,
    open: impl Fn(&Path) -> io::Result<H>,
    close: impl Fn(H) -> io::Result<T>,
    align: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut m = Model::new();
    let (small, big) = (small_block(align), big_block(align));
    let h = create(path).expect("create");
    for _ in 0..100 {
        let len = if rng.chance(50) { small } else { big };
        let data = rng.bytes(len);
        if rng.chance(10) {
            let len = round_down(rng.below(m.end() + 2 * big as u64), small);
            assert_same("set_len", h.set_len(len), m.set_len(len));
        } else if rng.chance(60) {
            let off = round_down(rng.below(m.end() + 4 * big as u64), small);
            assert_same("write", h.write(off, &data), m.write(off, &data));
        } else {
            assert_same("append", h.append(&data), m.append(&data));
        }
    }
    h.force().unwrap();
    close(h).expect("close");
    // The file's length is the end after a close; while open a write-behind handle may
    // keep zero-filled space past it (preallocation).
    let closed_length = |m: &Model, when: &str| {
        let len = std::fs::metadata(path).unwrap().len();
        assert_eq!(len, m.end(), "{when}: file length after close, seed {seed}");
    };
    closed_length(&m, "first close");
    let check = |h: &H, m: &Model, when: &str| {
        assert_eq!(
            h.end_position(),
            m.end(),
            "{when}: end_position == file length"
        );
        assert_eq!(h.start_position(), 0, "{when}: start after open");
        assert_eq!(snapshot(h), m.snapshot(), "{when}: contents, seed {seed}");
        let all = h.read_buffer(0, m.end() as usize).unwrap().to_vec();
        assert_eq!(all, m.snapshot().bytes, "{when}: read_buffer of everything");
    };

    let h = open(path).expect("reopen");
    check(&h, &m, "first reopen");
    // Appending to a reopened file continues at its length.
    for _ in 0..10 {
        let data = rng.bytes(big);
        assert_same("append after reopen", h.append(&data), m.append(&data));
    }
    let off = round_down(m.end() / 2, small);
    let data = rng.bytes(big);
    assert_same(
        "write after reopen",
        h.write(off, &data),
        m.write(off, &data),
    );
    h.force().unwrap();
    close(h).expect("second close");
    closed_length(&m, "second close");
    let h = open(path).expect("second reopen");
    check(&h, &m, "second reopen");
    close(h).expect("third close");
    closed_length(&m, "third close");
}

// ---------------------------------------------------------------- FileExt

/// `FileExt`: `read_at` is short at the end and 0 at or past it; `write_at` writes it all.
pub fn file_ext<H: Handle + FileExt>(h: &H, align: usize) {
    let u = small_block(align);
    let uu = u as u64;
    let data = pattern(11, 2 * u);
    assert_eq!(h.write_at(&data, 0).unwrap(), 2 * u);
    assert_eq!(h.end_position(), 2 * uu);
    let mut buf = vec![0u8; 3 * u];
    assert_eq!(h.read_at(&mut buf, uu).unwrap(), u, "short read at the end");
    assert_eq!(&buf[..u], &data[u..]);
    assert_eq!(h.read_at(&mut buf, 0).unwrap(), 2 * u);
    assert_eq!(&buf[..2 * u], &data[..]);
    assert_eq!(h.read_at(&mut buf, 2 * uu).unwrap(), 0, "read at the end");
    assert_eq!(h.read_at(&mut buf, 9 * uu).unwrap(), 0, "read past the end");
    assert_eq!(h.read_at(&mut [], 0).unwrap(), 0, "empty buffer");
    let mut exact = vec![0u8; u];
    h.read_exact_at(&mut exact, uu).unwrap();
    assert_eq!(exact, &data[u..]);
    h.truncate_start(uu).unwrap();
    assert_errno(
        "write_at below the start",
        h.write_at(&data[..u], 0),
        libc::EDOM,
    );
    assert_errno(
        "read_at below the start",
        h.read_at(&mut buf, 0),
        libc::EDOM,
    );
}

// ---------------------------------------------------------------- direct I/O

/// Direct mode: misaligned write offsets or lengths fail with `EINVAL` naming the
/// alignment and change nothing; an aligned write from a misaligned address works; reads
/// of any range work.
pub fn direct_misaligned(h: &impl Handle, align: usize) {
    assert!(align > 1, "direct_misaligned needs the handle's alignment");
    let data = pattern(13, 4 * align);
    h.write(0, &data).unwrap();
    let before = snapshot(h);
    let unchanged = |what: &str| assert_eq!(snapshot(h), before, "{what} changed the handle");
    let einval = |what: &str, r: io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(errno(&e), Some(libc::EINVAL), "{what}: {e}");
        assert!(
            e.to_string().contains(&align.to_string()),
            "{what}: message {e:?} does not name the {align}-byte alignment"
        );
        unchanged(what);
    };
    let junk = vec![0xAA; align];
    einval("write at a misaligned offset", h.write(1, &junk));
    einval("write of a misaligned length", h.write(0, &junk[..100]));
    einval(
        "write of a misaligned length past the end",
        h.write(4 * align as u64, &[1, 2, 3]),
    );
    einval(
        "write_buffer at a misaligned offset",
        write_via_buffer(h, 7, &junk),
    );
    einval(
        "append of a misaligned length",
        h.append(&junk[..100]).map(drop),
    );

    // Aligned offset and length, misaligned memory: must still work.
    let mut src = vec![0u8; 2 * align + 1];
    src[1..].copy_from_slice(&pattern(17, 2 * align));
    h.write(align as u64, &src[1..]).unwrap();
    let mut want = data.clone();
    want[align..3 * align].copy_from_slice(&src[1..]);
    assert_eq!(read_vec(h, 0, 4 * align).unwrap(), want);
    // Reads of any range.
    for (off, len) in [
        (3, 7),
        (align as u64 - 1, 2),
        (5, 3 * align + 2),
        (4 * align as u64 - 1, 1),
    ] {
        assert_eq!(
            read_vec(h, off, len).unwrap(),
            want[off as usize..off as usize + len]
        );
    }
}

/// Runs `open` until it stops failing with `EWOULDBLOCK`, for at most 5 s. Handles take an
/// exclusive `flock` on open, and tests that run in parallel spawn child processes: a
/// `fork` copies the parent's descriptors, the one holding a lock included, into the child
/// until it execs, so a file closed by the parent can still look locked for that moment.
/// Locking itself is tested in tests/open_modes.rs, without that race.
pub fn retry_would_block<T>(mut open: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open() {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => return r,
        }
    }
}
